//! Mail, suppressions and tracked users of two tenants, each with a read
//! and a write key, beside an unscoped admin key: every route and id of one
//! tenant probed with the other's keys is refused (404 by id, 403 when
//! naming the other tenant, lists without the other's objects) and changes
//! nothing, as the admin key sees before and after. Mail goes through a real
//! SMTP sink and its events to real webhook receivers.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde_json::{json, Value};

use crate::mail::newsletters::unsubscribe_token;
use crate::mail::smtp::{Script, SmtpSink};
use crate::support::*;
use crate::webhooks::receiver::Receiver;

use super::{ACME, ADMIN, GLOBEX, SETTLE};

const ACME_WRITE: &str = ACME.write;
const ACME_READ: &str = ACME.read;
const GLOBEX_WRITE: &str = GLOBEX.write;
const GLOBEX_READ: &str = GLOBEX.read;
const ACME_SOURCE: &str = "wk_acme_0123456789abcdef";
const GLOBEX_SOURCE: &str = "wk_globex_0123456789abcdef";

/// The suite's keys and webhooks, two tenant-bound tracking sources, and
/// `extra` (more sections).
fn config(extra: &str) -> String {
    format!(
        r#"{}
[[tracking.sources]]
name = "acme-web"
write_key = "{ACME_SOURCE}"
tenant = "acme"

[[tracking.sources]]
name = "globex-web"
write_key = "{GLOBEX_SOURCE}"
tenant = "globex"
{extra}"#,
        super::config()
    )
}

/// A client holding one API key.
#[derive(Clone, Copy)]
struct Client {
    addr: SocketAddr,
    key: &'static str,
}

impl Client {
    fn new(addr: SocketAddr, key: &'static str) -> Client {
        Client { addr, key }
    }

    fn call(self, method: &str, path: &str, body: Option<&Value>) -> Response {
        super::call(self.addr, self.key, method, path, body)
    }

    fn get(self, path: &str) -> Response {
        self.call("GET", path, None)
    }

    /// Every item under `key` of a listing, following its cursor.
    fn list(self, path: &str, key: &str) -> Vec<Value> {
        let auth = format!("Bearer {}", self.key);
        list_pages(self.addr, path, key, 100, &[("Authorization", &auth)])
    }
}

fn expect(resp: &Response, status: u16, code: &str, what: &str) {
    assert_eq!(resp.status, status, "{what}: {}", resp.text());
    assert_eq!(resp.code(), code, "{what}: {}", resp.text());
}

fn message(to: &str) -> Value {
    json!({"from": "Shop <no-reply@example.com>", "to": to, "subject": "Receipt",
           "text": "Thanks for your order."})
}

/// `body` with one more field.
fn with(mut body: Value, field: &str, value: &str) -> Value {
    body[field] = value.into();
    body
}

/// Queues `body` with `client`, expecting 202; the one message's id.
fn send(client: Client, body: &Value) -> String {
    let resp = client.call("POST", "/v1/emails", Some(body));
    assert_eq!(resp.status, 202, "POST /v1/emails {body}: {}", resp.text());
    let messages = resp.json()["messages"].as_array().unwrap().clone();
    assert_eq!(messages.len(), 1, "{messages:?}");
    s(&messages[0]["id"]).to_owned()
}

fn ids(items: &[Value]) -> BTreeSet<String> {
    items.iter().map(|i| s(&i["id"]).to_owned()).collect()
}

/// Waits until the message is sent, through the admin key.
fn sent(admin: Client, id: &str) -> Value {
    let mut last = Value::Null;
    let done = wait_until(deadline(SETTLE), || {
        last = admin.get(&format!("/v1/emails/{id}")).json();
        last["status"] == "sent"
    });
    assert!(done, "{id} was not sent: {last}");
    last
}

/// Everything the admin key sees of mail and the log, to compare before
/// and after the probes.
fn mail_state(admin: Client) -> Vec<Vec<Value>> {
    vec![
        admin.list("/v1/emails", "emails"),
        admin.list("/v1/suppressions", "suppressions"),
        admin.list("/v1/suppressions?tenant=acme", "suppressions"),
        admin.list("/v1/suppressions?tenant=globex", "suppressions"),
        admin.list("/v1/events", "events"),
    ]
}

fn endpoint(admin: Client, url: &str, tenant: &str, types: &[&str]) -> String {
    let resp = admin.call(
        "POST",
        "/v1/endpoints",
        Some(&json!({"url": url, "tenant": tenant, "event_types": types})),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    s(&resp.json()["id"]).to_owned()
}

/// (event type, message id) of every delivery made for an endpoint.
fn deliveries(admin: Client, endpoint: &str) -> BTreeSet<(String, String)> {
    admin
        .list(&format!("/v1/deliveries?endpoint={endpoint}"), "deliveries")
        .iter()
        .map(|d| {
            let event = admin
                .get(&format!("/v1/events/{}", s(&d["event_id"])))
                .json();
            (
                s(&d["event_type"]).to_owned(),
                event["data"]["message_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect()
}

#[test]
fn emails_and_their_events_stay_within_their_tenant() {
    let sink = SmtpSink::start(&Script::always("250"), None);
    let acme_hook = Receiver::always(204);
    let globex_hook = Receiver::always(204);
    let d = Daemon::start(&config(&format!(
        "\n[mail.streams.transactional]\nrelay = \"smtp://127.0.0.1:{}\"\n",
        sink.port
    )));
    let admin = Client::new(d.addr, ADMIN);
    let acme = Client::new(d.addr, ACME_WRITE);
    let acme_read = Client::new(d.addr, ACME_READ);
    let globex = Client::new(d.addr, GLOBEX_WRITE);
    let globex_read = Client::new(d.addr, GLOBEX_READ);
    let acme_ep = endpoint(admin, &acme_hook.url("/"), "acme", &["email.*"]);
    let globex_ep = endpoint(admin, &globex_hook.url("/"), "globex", &["email.*"]);

    // A tenant key's message is its tenant's without saying so.
    let acme_msg = send(acme, &message("bob@example.net"));
    let globex_msg = send(
        globex,
        &with(message("carol@example.net"), "tenant", "globex"),
    );
    let acme_sent = sent(admin, &acme_msg);
    assert_eq!(acme_sent["tenant"], "acme", "{acme_sent}");
    assert_eq!(sent(admin, &globex_msg)["tenant"], "globex");
    sink.wait_for_id(&acme_msg, deadline(SETTLE));
    sink.wait_for_id(&globex_msg, deadline(SETTLE));

    // Each endpoint got its tenant's mail events and nothing of the other's.
    let expected = |id: &str| -> BTreeSet<(String, String)> {
        ["email.queued", "email.sent"]
            .iter()
            .map(|t| (t.to_string(), id.to_owned()))
            .collect()
    };
    assert_eq!(deliveries(admin, &acme_ep), expected(&acme_msg));
    assert_eq!(deliveries(admin, &globex_ep), expected(&globex_msg));
    for (hook, tenant, id) in [
        (&acme_hook, "acme", &acme_msg),
        (&globex_hook, "globex", &globex_msg),
    ] {
        for r in hook.wait_for_requests(2, deadline(SETTLE)) {
            let body = r.json();
            assert_eq!(body["tenant"], tenant, "{body}");
            assert_eq!(&body["data"]["message_id"], id.as_str(), "{body}");
        }
    }

    let before = mail_state(admin);
    for other in [globex, globex_read] {
        expect(
            &other.get(&format!("/v1/emails/{acme_msg}")),
            404,
            "email_not_found",
            "another tenant's message by id",
        );
        let listed = other.list("/v1/emails", "emails");
        assert_eq!(ids(&listed), BTreeSet::from([globex_msg.clone()]));
        assert!(other
            .list("/v1/emails?to=bob@example.net", "emails")
            .is_empty());
        expect(
            &other.get("/v1/emails?tenant=acme"),
            403,
            "forbidden",
            "a list naming another tenant",
        );
        expect(
            &other.get("/v1/emails?tenant=acme&to=bob@example.net"),
            403,
            "forbidden",
            "a filtered list naming another tenant",
        );
    }
    // Sending for another tenant, or with a read key, is forbidden.
    expect(
        &globex.call(
            "POST",
            "/v1/emails",
            Some(&with(message("bob@example.net"), "tenant", "acme")),
        ),
        403,
        "forbidden",
        "a send for another tenant",
    );
    expect(
        &acme_read.call("POST", "/v1/emails", Some(&message("bob@example.net"))),
        403,
        "forbidden",
        "a send with a read key",
    );
    expect(
        &admin.call(
            "POST",
            "/v1/emails",
            Some(&with(message("bob@example.net"), "tenant", "not a tenant")),
        ),
        422,
        "invalid_field",
        "a malformed tenant",
    );
    assert_eq!(mail_state(admin), before, "the probes changed something");

    // The admin key sees both and can narrow to one; the owner sees its own.
    assert_eq!(
        ids(&admin.list("/v1/emails", "emails")),
        BTreeSet::from([acme_msg.clone(), globex_msg.clone()])
    );
    assert_eq!(
        ids(&admin.list("/v1/emails?tenant=acme", "emails")),
        BTreeSet::from([acme_msg.clone()])
    );
    assert_eq!(
        ids(&acme_read.list("/v1/emails?to=bob@example.net", "emails")),
        BTreeSet::from([acme_msg.clone()])
    );
    assert_eq!(acme_read.get(&format!("/v1/emails/{acme_msg}")).status, 200);
}

/// The same idempotency key in two tenants names two requests.
#[test]
fn idempotency_keys_of_emails_are_per_tenant() {
    let d = Daemon::start(&config(""));
    let acme = Client::new(d.addr, ACME_WRITE);
    let globex = Client::new(d.addr, GLOBEX_WRITE);
    let body = with(message("bob@example.net"), "idempotency_key", "receipt-1");
    let first = send(acme, &body);
    let other = send(globex, &body);
    assert_ne!(first, other);
    let again = acme.call("POST", "/v1/emails", Some(&body));
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["messages"][0]["id"], first.as_str());
}

fn suppressed_addresses(client: Client, query: &str) -> BTreeSet<String> {
    client
        .list(&format!("/v1/suppressions{query}"), "suppressions")
        .iter()
        .map(|e| s(&e["address"]).to_owned())
        .collect()
}

#[test]
fn a_tenant_has_its_own_suppression_list_and_the_global_one_covers_everyone() {
    // Without a relay, mail goes to the outbox: sends are accepted or not.
    let d = Daemon::start(&config(""));
    let admin = Client::new(d.addr, ADMIN);
    let acme = Client::new(d.addr, ACME_WRITE);
    let acme_read = Client::new(d.addr, ACME_READ);
    let globex = Client::new(d.addr, GLOBEX_WRITE);
    let globex_read = Client::new(d.addr, GLOBEX_READ);

    let put = acme.call(
        "PUT",
        "/v1/suppressions/dave@example.net",
        Some(&json!({"reason": "manual"})),
    );
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(put.json()["tenant"], "acme");
    let global = admin.call("PUT", "/v1/suppressions/eve@example.net", None);
    assert_eq!(global.status, 201, "{}", global.text());
    assert_eq!(global.json()["tenant"], Value::Null);

    // Acme's entry blocks acme's sends only; the global one blocks both.
    let refused = acme.call("POST", "/v1/emails", Some(&message("dave@example.net")));
    expect(
        &refused,
        422,
        "recipient_suppressed",
        "acme to its suppressed address",
    );
    // Written to the outbox before the state is compared below.
    sent(admin, &send(globex, &message("dave@example.net")));
    for client in [acme, globex] {
        let resp = client.call("POST", "/v1/emails", Some(&message("eve@example.net")));
        expect(
            &resp,
            422,
            "recipient_suppressed",
            "to a globally suppressed address",
        );
    }

    let acme_list = BTreeSet::from(["dave@example.net".to_owned()]);
    assert_eq!(suppressed_addresses(acme_read, ""), acme_list);
    assert_eq!(suppressed_addresses(admin, "?tenant=acme"), acme_list);
    assert_eq!(
        suppressed_addresses(admin, ""),
        BTreeSet::from(["eve@example.net".to_owned()])
    );

    let before = mail_state(admin);
    for other in [globex, globex_read] {
        assert!(suppressed_addresses(other, "").is_empty());
        expect(
            &other.get("/v1/suppressions?tenant=acme"),
            403,
            "forbidden",
            "another tenant's list",
        );
    }
    // Globex cannot reach acme's entry: its own list has none, and naming
    // acme's is forbidden.
    expect(
        &globex.call("DELETE", "/v1/suppressions/dave@example.net", None),
        404,
        "suppression_not_found",
        "deleting from its own list what only another tenant's holds",
    );
    for method in ["PUT", "DELETE"] {
        expect(
            &globex.call(
                method,
                "/v1/suppressions/dave@example.net?tenant=acme",
                None,
            ),
            403,
            "forbidden",
            "changing another tenant's list",
        );
        // A read key changes no list.
        for reader in [acme_read, globex_read] {
            expect(
                &reader.call(method, "/v1/suppressions/dave@example.net", None),
                403,
                "forbidden",
                "a read key's change",
            );
        }
    }
    // No tenant key removes a global entry.
    for tenant in [acme, globex] {
        expect(
            &tenant.call("DELETE", "/v1/suppressions/eve@example.net", None),
            404,
            "suppression_not_found",
            "a tenant key deleting a global entry",
        );
    }
    expect(
        &admin.get("/v1/suppressions?tenant=not%20a%20tenant"),
        400,
        "invalid_query",
        "a malformed tenant",
    );
    assert_eq!(mail_state(admin), before, "the probes changed something");

    // The owner removes its entry; the admin names a tenant to act on its list.
    let gone = acme.call("DELETE", "/v1/suppressions/dave@example.net", None);
    assert_eq!(gone.status, 204, "{}", gone.text());
    send(acme, &message("dave@example.net"));
    let put = admin.call(
        "PUT",
        "/v1/suppressions/frank@example.net?tenant=globex",
        Some(&json!({"stream": "transactional"})),
    );
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(put.json()["tenant"], "globex");
    let refused = globex.call("POST", "/v1/emails", Some(&message("frank@example.net")));
    expect(
        &refused,
        422,
        "recipient_suppressed",
        "globex to its suppressed address",
    );
    send(acme, &message("frank@example.net"));
}

fn track(addr: SocketAddr, write_key: &str, batch: Value) {
    let auth = format!("Bearer {write_key}");
    let resp = request(
        addr,
        "POST",
        "/v1/batch",
        &[JSON, ("Authorization", &auth)],
        json!({ "batch": batch }).to_string().as_bytes(),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
}

/// Users, counts, funnels, attribution and the export as one key sees them.
fn tracking_view(client: Client) -> Vec<Value> {
    let mut seen = Vec::new();
    for path in [
        "/v1/users/user_1",
        "/v1/users/user_1/events",
        "/v1/users/only_acme",
        "/v1/stats/events?event=Signed%20Up",
        "/v1/stats/events?event=Subscribed",
        "/v1/funnels?steps=Signed%20Up,Subscribed",
        "/v1/attribution?event=Subscribed",
    ] {
        let resp = client.get(path);
        let mut body = if resp.status == 200 {
            resp.json()
        } else {
            json!({"status": resp.status, "code": resp.code()})
        };
        // Funnels report how long they took.
        if let Some(o) = body.as_object_mut() {
            o.remove("took_ms");
            o.remove("until");
            o.remove("since");
        }
        seen.push(body);
    }
    let export = client.get("/v1/events/export");
    assert_eq!(export.status, 200, "{}", export.text());
    seen.push(json!(export.text()));
    seen
}

#[test]
fn tracked_users_and_calls_of_a_tenant_source_stay_within_it() {
    let acme_hook = Receiver::always(204);
    let globex_hook = Receiver::always(204);
    let d = Daemon::start(&config(""));
    let admin = Client::new(d.addr, ADMIN);
    let acme = Client::new(d.addr, ACME_READ);
    let globex = Client::new(d.addr, GLOBEX_READ);
    // Both endpoints take tracked calls, so only the tenant keeps them apart.
    let takes_tracking = |url: String, tenant: &str| {
        let resp = admin.call(
            "POST",
            "/v1/endpoints",
            Some(&json!({"url": url, "tenant": tenant, "sources": ["api", "tracking"]})),
        );
        assert_eq!(resp.status, 201, "{}", resp.text());
        s(&resp.json()["id"]).to_owned()
    };
    takes_tracking(acme_hook.url("/"), "acme");
    let globex_ep = takes_tracking(globex_hook.url("/"), "globex");

    // The same user id in both tenants: two people.
    track(
        d.addr,
        ACME_SOURCE,
        json!([
            {"type": "identify", "userId": "user_1", "traits": {"plan": "pro"}},
            {"type": "track", "userId": "user_1", "event": "Signed Up",
             "context": {"campaign": {"source": "acme-ads"}}},
            {"type": "identify", "userId": "only_acme", "anonymousId": "anon_1"},
        ]),
    );
    track(
        d.addr,
        GLOBEX_SOURCE,
        json!([
            {"type": "identify", "userId": "user_1", "traits": {"plan": "free"}},
            {"type": "track", "userId": "user_1", "event": "Signed Up"},
            {"type": "track", "userId": "user_1", "event": "Subscribed"},
        ]),
    );

    // Each tracked call is stored for its source's tenant.
    let acme_events = admin.list("/v1/events?tenant=acme", "events");
    assert_eq!(acme_events.len(), 3, "{acme_events:?}");
    assert_eq!(admin.list("/v1/events?tenant=globex", "events").len(), 3);

    // Acme's endpoint gets acme's calls, as tracked calls of acme.
    acme_hook.wait_for_requests(3, deadline(SETTLE));
    for r in acme_hook.requests() {
        let body = r.json();
        assert_eq!(
            (&body["tenant"], &body["source"]),
            (&json!("acme"), &json!("tracking"))
        );
    }

    // Globex's endpoint got none of acme's calls: its own three and a
    // globex event posted after them are all fan-out made for it.
    let marker = admin.call(
        "POST",
        "/v1/events",
        Some(&json!({"type": "marker", "tenant": "globex"})),
    );
    assert_eq!(marker.status, 201, "{}", marker.text());
    globex_hook.wait_for_requests(4, deadline(SETTLE));
    let made = admin.list(
        &format!("/v1/deliveries?endpoint={globex_ep}"),
        "deliveries",
    );
    let acme_ids = ids(&acme_events);
    assert!(
        made.iter().all(|d| !acme_ids.contains(s(&d["event_id"]))),
        "{made:?}"
    );
    assert!(made.iter().any(|d| d["event_id"] == marker.json()["id"]));
    for r in globex_hook.requests() {
        assert_ne!(r.json()["tenant"], "acme", "{}", r.json());
    }

    let user = |client: Client| client.get("/v1/users/user_1").json();
    let acme_user = user(acme);
    assert_eq!(acme_user["traits"], json!({"plan": "pro"}));
    assert_eq!(acme_user["event_count"], 2);
    let globex_user = user(globex);
    assert_eq!(globex_user["traits"], json!({"plan": "free"}));
    assert_eq!(globex_user["event_count"], 3);
    let events = globex.get("/v1/users/user_1/events").json();
    let events = events["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e["tenant"] == "globex"), "{events:?}");

    // Counts, funnels and attribution of one tenant count its calls only.
    let total = |client: Client, event: &str| {
        client
            .get(&format!("/v1/stats/events?event={event}"))
            .json()["total"]
            .clone()
    };
    assert_eq!(total(acme, "Signed%20Up"), 1);
    assert_eq!(total(acme, "Subscribed"), 0);
    assert_eq!(total(globex, "Subscribed"), 1);
    let funnel = |client: Client| -> Vec<Value> {
        let body = client
            .get("/v1/funnels?steps=Signed%20Up,Subscribed")
            .json();
        body["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["count"].clone())
            .collect()
    };
    assert_eq!(funnel(acme), [json!(1), json!(0)]);
    assert_eq!(funnel(globex), [json!(1), json!(1)]);
    let conversions = |client: Client| client.get("/v1/attribution?event=Subscribed").json();
    assert_eq!(conversions(acme)["conversions"], 0);
    assert_eq!(conversions(globex)["conversions"], 1);
    let exported = globex.get("/v1/events/export").text();
    let lines: Vec<Value> = exported
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{exported}");
    assert!(lines.iter().all(|e| e["tenant"] == "globex"), "{exported}");

    // Acme's own user does not exist for globex; naming acme is forbidden.
    assert_eq!(acme.get("/v1/users/only_acme").status, 200);
    let before = tracking_view(admin);
    let acme_view = tracking_view(acme);
    for other in [globex, Client::new(d.addr, GLOBEX_WRITE)] {
        expect(
            &other.get("/v1/users/only_acme"),
            404,
            "user_not_found",
            "another tenant's user",
        );
        for path in [
            "/v1/users/user_1?tenant=acme",
            "/v1/users/user_1/events?tenant=acme",
            "/v1/stats/events?event=Subscribed&tenant=acme",
            "/v1/funnels?steps=Signed%20Up,Subscribed&tenant=acme",
            "/v1/attribution?event=Subscribed&tenant=acme",
            "/v1/events/export?tenant=acme",
        ] {
            expect(&other.get(path), 403, "forbidden", path);
        }
    }
    assert_eq!(tracking_view(admin), before, "the probes changed something");
    assert_eq!(tracking_view(acme), acme_view);

    // The admin key names the tenant whose users it means; without one it
    // means sources bound to none, which have no user_1 here.
    expect(
        &admin.get("/v1/users/user_1"),
        404,
        "user_not_found",
        "no tenant",
    );
    let named = admin.get("/v1/users/user_1?tenant=acme").json();
    assert_eq!(named["traits"], json!({"plan": "pro"}));
}

/// A one-click unsubscribe from one tenant's mail goes on that tenant's
/// list and is told to that tenant only: another tenant's mail to the same
/// address on the same stream is neither blocked nor revealed.
#[test]
fn a_one_click_unsubscribe_goes_on_the_list_of_the_messages_tenant() {
    let sink = SmtpSink::start(&Script::always("250"), None);
    let acme_hook = Receiver::always(204);
    let globex_hook = Receiver::always(204);
    let base = "https://mail.example.com";
    let d = Daemon::start(&config(&format!(
        "\n[public]\nurl = \"{base}\"\nlisten = \"127.0.0.1:0\"\n\
         \n[mail.streams.marketing]\nrelay = \"smtp://127.0.0.1:{}\"\n",
        sink.port
    )));
    let public = d.logged_addr("public listening");
    let admin = Client::new(d.addr, ADMIN);
    let acme = Client::new(d.addr, ACME_WRITE);
    let globex = Client::new(d.addr, GLOBEX_WRITE);
    let globex_read = Client::new(d.addr, GLOBEX_READ);
    let acme_ep = endpoint(admin, &acme_hook.url("/"), "acme", &["email.*"]);
    let globex_ep = endpoint(admin, &globex_hook.url("/"), "globex", &["email.*"]);
    let reader = "x@example.com";
    let newsletter = with(message(reader), "stream", "marketing");

    let globex_msg = send(globex, &newsletter);
    let got = sink.wait_for_id(&globex_msg, deadline(SETTLE));
    let token = unsubscribe_token(
        got.header("List-Unsubscribe").expect("List-Unsubscribe"),
        base,
    );
    let resp = request(
        public,
        "POST",
        &format!("/u/{token}"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"List-Unsubscribe=One-Click",
    );
    assert_eq!(resp.status, 200, "{}", resp.text());

    // Globex's list holds the address for that stream; the global one not.
    let entries = globex_read.list("/v1/suppressions", "suppressions");
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert_eq!(
        (&entry["address"], &entry["stream"], &entry["reason"]),
        (&json!(reader), &json!("marketing"), &json!("unsubscribe")),
        "{entry}"
    );
    assert_eq!(entry["tenant"], "globex", "{entry}");
    assert!(suppressed_addresses(admin, "").is_empty());
    expect(
        &globex.call("POST", "/v1/emails", Some(&newsletter)),
        422,
        "recipient_suppressed",
        "globex to the address that left its list",
    );

    // Acme still mails the address on that stream.
    let acme_msg = send(acme, &newsletter);
    sent(admin, &acme_msg);
    sink.wait_for_id(&acme_msg, deadline(SETTLE));

    // Deliveries are made with their event: globex's endpoint got the
    // unsubscribe, acme's only its own message's events.
    let events_of = |id: &str, more: &[&str]| -> BTreeSet<(String, String)> {
        ["email.queued", "email.sent"]
            .iter()
            .map(|t| (t.to_string(), id.to_owned()))
            .chain(more.iter().map(|t| (t.to_string(), String::new())))
            .collect()
    };
    assert_eq!(
        deliveries(admin, &globex_ep),
        events_of(&globex_msg, &["email.suppressed", "email.unsubscribed"])
    );
    assert_eq!(deliveries(admin, &acme_ep), events_of(&acme_msg, &[]));
    let told = globex_hook.wait_for_requests(4, deadline(SETTLE));
    let unsubscribed: Vec<Value> = told
        .iter()
        .map(|r| r.json())
        .filter(|b| b["type"] == "email.unsubscribed")
        .collect();
    assert_eq!(unsubscribed.len(), 1, "{unsubscribed:?}");
    assert_eq!(unsubscribed[0]["tenant"], "globex", "{}", unsubscribed[0]);
    assert_eq!(unsubscribed[0]["data"]["address"], reader);
    for r in acme_hook.wait_for_requests(2, deadline(SETTLE)) {
        let body = r.json();
        assert_eq!(body["tenant"], "acme", "{body}");
        assert_eq!(&body["data"]["message_id"], acme_msg.as_str(), "{body}");
    }
}
