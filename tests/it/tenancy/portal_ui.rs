//! The customer portal in headless Chromium: a customer opens the link,
//! adds an endpoint pointing at a real receiver, sends a test, reveals the
//! secret and follows a delivery to its attempts, on a laptop and a phone.

use serde_json::{json, Value};

use super::portal::{link, portal_config};
use super::{expect, ACME, ADMIN, SETTLE};
use crate::support::*;
use crate::webhooks::receiver::Receiver;

/// The delivery list once its latest load is drawn.
const LOADED: &str = "#delivery-list[aria-busy='false']";

/// A description that would run script if the page put it in as markup.
const HOSTILE: &str = "<img src=x onerror=\"document.title='owned'\">";

#[test]
fn a_customer_adds_an_endpoint_sends_a_test_and_sees_the_delivery() {
    let receiver = Receiver::always(200);
    let d = Daemon::start(&portal_config());
    let public = d.logged_addr("public listening");
    let token = link(d.addr, ACME.name);
    // One endpoint already there, with text that must stay text.
    expect(
        d.addr,
        ACME.write,
        "POST",
        "/v1/endpoints",
        Some(&json!({"url": "http://127.0.0.1:9/old", "description": HOSTILE})),
        201,
    );

    let browser = Browser::start(1280, 900);
    browser.goto(&format!("http://{public}/portal/{token}"));
    browser.find("body[data-ready='true']");
    browser.wait_for_text(ACME.name);
    browser.wait_for_text(HOSTILE);
    let injected = browser.script(
        "return document.querySelectorAll('img').length + ':' + document.title;",
        json!([]),
    );
    assert_eq!(injected, "0:Webhooks", "a value was read as markup");

    browser.find("#add-endpoint").click();
    let url = receiver.url("/hooks");
    browser
        .find("#endpoint-form input[name=url]")
        .send_keys(&url);
    browser
        .find("#endpoint-form input[name=description]")
        .send_keys("Billing");
    browser
        .find("#endpoint-form input[name=event_types]")
        .send_keys("invoice.*, user.created");
    browser.find("#save-endpoint").click();
    browser.wait_for_text("Endpoint created");
    browser.wait_for_count("li.endpoint", 2);

    let listed = expect(d.addr, ADMIN, "GET", "/v1/endpoints", None, 200);
    let created: Vec<&Value> = listed["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["url"] == url.as_str())
        .collect();
    assert_eq!(created.len(), 1, "{listed}");
    let endpoint = created[0];
    assert_eq!(endpoint["tenant"], ACME.name);
    assert_eq!(endpoint["description"], "Billing");
    assert_eq!(
        endpoint["event_types"],
        json!(["invoice.*", "user.created"])
    );
    let id = s(&endpoint["id"]).to_owned();
    let card = format!("li.endpoint[data-id='{id}']");

    // The secret shown on creation is the endpoint's.
    let secret = expect(
        d.addr,
        ADMIN,
        "GET",
        &format!("/v1/endpoints/{id}/secret"),
        None,
        200,
    );
    assert_eq!(
        browser.find(&format!("{card} .secret-value")).text(),
        s(&secret["secret"])
    );

    browser.find(&format!("{card} .send-test")).click();
    browser.wait_for_text("Test: HTTP 200");
    let tests: Vec<_> = receiver
        .requests()
        .into_iter()
        .filter(|r| r.json()["type"] == "herald.test")
        .collect();
    assert_eq!(tests.len(), 1, "the test reached the receiver once");
    assert_eq!(tests[0].path, "/hooks");

    // A real event becomes a delivery the page lists with its attempts.
    let event = expect(
        d.addr,
        ACME.write,
        "POST",
        "/v1/events",
        Some(&json!({"type": "invoice.paid", "data": {"amount": 4200}})),
        201,
    );
    let arrived = wait_until(deadline(SETTLE), || {
        receiver
            .requests()
            .iter()
            .any(|r| r.json()["id"] == event["id"])
    });
    assert!(arrived, "the event reached the receiver");
    browser.script(
        "const f = document.getElementById('filter-endpoint'); f.value = arguments[0]; \
         f.dispatchEvent(new Event('change'));",
        json!([id]),
    );
    let settled = wait_until(deadline(SETTLE), || {
        let listed = expect(
            d.addr,
            ADMIN,
            "GET",
            &format!("/v1/deliveries?endpoint={id}"),
            None,
            200,
        );
        listed["deliveries"][0]["status"] == "succeeded"
    });
    assert!(settled, "the delivery did not succeed");
    // The list says when its latest load is drawn: rows opened before
    // that would be drawn over.
    browser.find("#refresh-deliveries").click();
    browser.find(&format!("{LOADED} li.delivery .badge.good"));
    // Health follows the delivery once the page reads it again.
    browser.wait_for_text("1 succeeded");
    let rows = browser.wait_for_count("li.delivery", 1);
    assert_eq!(rows.len(), 1, "only this endpoint's delivery is listed");
    browser.wait_for_text("invoice.paid");
    browser.find("li.delivery .show-attempts").click();
    let attempt = browser.find("li.delivery .attempts li");
    assert!(attempt.text().contains("HTTP 200"), "{}", attempt.text());
    // The endpoint that refuses connections is reported failing.
    browser.wait_for_text("Failing");

    // Rotating asks for a confirmation, then shows the new secret.
    let rotate = browser.find(&format!("{card} .rotate"));
    rotate.click();
    assert_eq!(rotate.text(), "Confirm: rotate now");
    rotate.click();
    browser.wait_for_text("New secret issued");
    let rotated = expect(
        d.addr,
        ADMIN,
        "GET",
        &format!("/v1/endpoints/{id}/secret"),
        None,
        200,
    );
    assert_ne!(rotated, secret);
    assert_eq!(
        browser.find(&format!("{card} .secret-value")).text(),
        s(&rotated["secret"])
    );

    // Tall enough to hold endpoints, deliveries and the catalog at once.
    browser.set_window_size(1280, 1700);
    browser.script("window.scrollTo(0, 0);", json!([]));
    let laptop = browser.screenshot("portal");
    assert!(is_png(&laptop), "{}", laptop.display());

    browser.set_window_size(390, 2000);
    browser.find(&format!("{card} .send-test"));
    let fits = browser.script(
        "return document.documentElement.scrollWidth <= window.innerWidth;",
        json!([]),
    );
    assert_eq!(fits, true, "the page scrolls sideways on a phone");
    let phone = browser.screenshot("portal-phone");
    assert!(is_png(&phone), "{}", phone.display());

    // The failing endpoint's dead letter, retried from the page: a second
    // attempt, made by hand, appears under it.
    let old = listed["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == "http://127.0.0.1:9/old")
        .expect("the first endpoint");
    browser.script(
        "const f = document.getElementById('filter-endpoint'); f.value = arguments[0]; \
         f.dispatchEvent(new Event('change'));",
        json!([s(&old["id"])]),
    );
    browser
        .find(&format!("{LOADED} li.delivery .retry"))
        .click();
    browser.wait_for_count("li.delivery .attempts li", 2);
    let dead = expect(
        d.addr,
        ADMIN,
        "GET",
        &format!("/v1/deliveries?endpoint={}", s(&old["id"])),
        None,
        200,
    );
    let attempts = &dead["deliveries"][0]["attempts"];
    assert_eq!(attempts.as_array().map(Vec::len), Some(2), "{dead}");
    assert_eq!(attempts[1]["trigger"], "manual");
}

fn is_png(path: &std::path::Path) -> bool {
    std::fs::read(path)
        .is_ok_and(|bytes| bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 1000)
}
