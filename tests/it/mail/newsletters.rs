//! Bulk streams: DKIM signatures checked by dkimpy, List-Unsubscribe
//! headers, and one-click unsubscribe on the public listener.

use serde_json::{json, Value};

use super::smtp::{make_pki, verify_dkim, Script, SmtpSink};
use super::{email, emails, message, send_one, suppressions, MAIL, SETTLE};
use crate::support::*;

/// A stream that signs with d=example.com for mail from news.example.com and
/// carries one-click unsubscribe links.
fn news_config(sink: &SmtpSink, dkim_key: &std::path::Path, public: &str) -> String {
    format!(
        "{public}\n{MAIL}\n[mail.streams.news]\nfrom_domains = [\"news.example.com\"]\nrelay = \"smtp://127.0.0.1:{}\"\n\
         dkim_selector = \"s1\"\ndkim_key_file = {}\ndkim_domain = \"example.com\"\nunsubscribe = true\n\
         unsubscribe_mailto = \"unsub@example.com\"\n",
        sink.port,
        toml_str(dkim_key)
    )
}

fn newsletter(to: &str) -> Value {
    json!({
        "stream": "news",
        "from": "Acme News <news@news.example.com>",
        "to": to,
        "subject": "Spring issue",
        "text": "Plain words for plain readers.",
        "html": "<p>Rich words for <b>rich</b> readers.</p>",
    })
}

/// The token in `<BASE/u/TOKEN>` of a List-Unsubscribe header.
pub(crate) fn unsubscribe_token(list_unsubscribe: &str, base: &str) -> String {
    let start = format!("<{base}/u/");
    let from = list_unsubscribe
        .find(&start)
        .unwrap_or_else(|| panic!("no {start}...> in {list_unsubscribe:?}"))
        + start.len();
    let len = list_unsubscribe[from..]
        .find('>')
        .unwrap_or_else(|| panic!("unterminated link in {list_unsubscribe:?}"));
    list_unsubscribe[from..from + len].to_owned()
}

#[test]
fn a_signed_multipart_newsletter_verifies_and_carries_one_click_unsubscribe() {
    let pki = make_pki();
    let sink = SmtpSink::start(&Script::always("250"), None);
    let base = "https://mail.example.com";
    let d = Daemon::start(&news_config(
        &sink,
        &pki.dkim_key,
        &format!("[public]\nurl = \"{base}\"\n"),
    ));
    let id = send_one(d.addr, &newsletter("reader@example.net"));
    let got = sink.wait_for_id(&id, deadline(SETTLE));

    let tags = verify_dkim(&got.raw, &pki.dkim_txt, "s1", "example.com")
        .unwrap_or_else(|why| panic!("dkimpy rejects the signature: {why}\n{}", got.text()));
    assert_eq!(tags["d"], "example.com", "{tags}");
    assert_eq!(tags["s"], "s1", "{tags}");
    assert_eq!(tags["a"], "rsa-sha256", "{tags}");
    assert_eq!(tags["c"], "relaxed/relaxed", "{tags}");
    let signed: Vec<String> = s(&tags["h"])
        .split(':')
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    for h in ["from", "subject"] {
        assert!(signed.iter().any(|x| x == h), "{h} is signed: {signed:?}");
    }

    let e = email(d.addr, &id);
    assert_eq!(got.header("X-Herald-Id"), Some(id.as_str()));
    let message_id = got.header("Message-ID").expect("Message-ID");
    assert!(
        message_id.starts_with('<') && message_id.ends_with("@news.example.com>"),
        "Message-ID in the From domain: {message_id}"
    );
    assert_eq!(e["message_id"], message_id);

    let list_unsubscribe = got.header("List-Unsubscribe").expect("List-Unsubscribe");
    let token = unsubscribe_token(list_unsubscribe, base);
    assert!(
        !token.is_empty() && !token.contains(['/', '?', ' ']),
        "{token:?}"
    );
    assert!(
        list_unsubscribe.contains("<mailto:unsub@example.com"),
        "{list_unsubscribe}"
    );
    assert_eq!(
        got.header("List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );

    let content_type = got.header("Content-Type").unwrap_or_default();
    assert!(
        content_type.starts_with("multipart/alternative"),
        "text + html: {content_type}"
    );
    let body = String::from_utf8_lossy(got.body()).to_ascii_lowercase();
    let plain = body
        .find("content-type: text/plain")
        .expect("a text/plain part");
    let html = body
        .find("content-type: text/html")
        .expect("a text/html part");
    assert!(plain < html, "the richer part comes last (RFC 2046 5.1.4)");
}

#[test]
fn one_click_headers_are_covered_by_the_dkim_signature() {
    // RFC 8058 section 4: List-Unsubscribe and List-Unsubscribe-Post must be
    // signed, or a mailbox provider ignores one-click (and a relay could add a
    // link of its own).
    let pki = make_pki();
    let sink = SmtpSink::start(&Script::always("250"), None);
    let d = Daemon::start(&news_config(
        &sink,
        &pki.dkim_key,
        "[public]\nurl = \"https://mail.example.com\"\n",
    ));
    let id = send_one(d.addr, &newsletter("reader@example.net"));
    let got = sink.wait_for_id(&id, deadline(SETTLE));
    let tags = verify_dkim(&got.raw, &pki.dkim_txt, "s1", "example.com")
        .unwrap_or_else(|why| panic!("dkimpy rejects the signature: {why}"));
    let signed: Vec<String> = s(&tags["h"])
        .split(':')
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    for h in ["list-unsubscribe", "list-unsubscribe-post"] {
        assert!(signed.iter().any(|x| x == h), "{h} is signed: {signed:?}");
    }
}

/// The token with the character at `at` (from the start, or from the end when
/// negative) changed to another of its class: once in what is likely the
/// payload, once in what is likely the MAC.
fn altered(token: &str, at: isize) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let mut i = if at < 0 {
        chars.len().saturating_sub(at.unsigned_abs())
    } else {
        at.unsigned_abs().min(chars.len() - 1)
    };
    while i > 0 && !chars[i].is_ascii_alphanumeric() {
        i -= 1;
    }
    chars[i] = match chars[i] {
        'z' => 'y',
        'Z' => 'Y',
        '9' => '8',
        c => char::from(c as u8 + 1),
    };
    chars.into_iter().collect()
}

const ONE_CLICK: &[u8] = b"List-Unsubscribe=One-Click";

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

#[test]
fn one_click_unsubscribe_on_the_public_listener() {
    let sink = SmtpSink::start(&Script::always("250"), None);
    let base = "https://mail.example.com";
    let pki = make_pki();
    let mut toml = news_config(
        &sink,
        &pki.dkim_key,
        &format!("[public]\nurl = \"{base}\"\nlisten = \"127.0.0.1:0\"\n"),
    );
    toml.push_str(&format!(
        "\n[mail.streams.transactional]\nrelay = \"smtp://127.0.0.1:{}\"\n",
        sink.port
    ));
    let d = Daemon::start(&toml);
    let public = d.logged_addr("public listening");
    assert_ne!(public, d.addr);
    let reader = "reader@example.net";
    let id = send_one(d.addr, &newsletter(reader));
    let got = sink.wait_for_id(&id, deadline(SETTLE));
    let token = unsubscribe_token(
        got.header("List-Unsubscribe").expect("List-Unsubscribe"),
        base,
    );
    let path = format!("/u/{token}");

    // Link scanners fetch with GET: that must change nothing.
    let page = get(public, &path);
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(
        page.header("Content-Type")
            .unwrap_or_default()
            .starts_with("text/html"),
        "{:?}",
        page.headers
    );
    assert!(
        page.text().to_ascii_lowercase().contains("post"),
        "a form that posts: {}",
        page.text()
    );
    assert!(suppressions(d.addr, "").is_empty());

    // A forged token is refused and changes nothing.
    for at in [2, -5] {
        let forged = format!("/u/{}", altered(&token, at));
        assert_ne!(forged, path);
        for method in ["GET", "POST"] {
            let resp = request(public, method, &forged, &[FORM], ONE_CLICK);
            assert!(
                resp.status == 404 || resp.status == 400,
                "{method} {forged}: {} {}",
                resp.status,
                resp.text()
            );
        }
    }
    assert!(suppressions(d.addr, "").is_empty());

    // The private API is not on the public listener.
    for (method, p) in [
        ("GET", "/v1/emails"),
        ("POST", "/v1/emails"),
        ("GET", "/v1/suppressions"),
        ("GET", "/v1/events"),
    ] {
        let resp = request(public, method, p, &[JSON], b"{}");
        assert_eq!(
            resp.status,
            404,
            "{method} {p} on the public listener: {}",
            resp.text()
        );
    }

    // Mailbox providers post urlencoded or multipart (RFC 8058 section 3.1);
    // the second post finds the address already suppressed.
    let multipart = b"--b0\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--b0--\r\n";
    let bodies = [
        (FORM.1, ONE_CLICK),
        ("multipart/form-data; boundary=b0", &multipart[..]),
    ];
    for (round, (content_type, body)) in bodies.into_iter().enumerate() {
        let resp = request(
            public,
            "POST",
            &path,
            &[("Content-Type", content_type)],
            body,
        );
        assert_eq!(resp.status, 200, "round {round}: {}", resp.text());
        assert!(
            resp.header("Location").is_none(),
            "no redirect: {:?}",
            resp.headers
        );
        let list = suppressions(d.addr, "");
        assert_eq!(list.len(), 1, "round {round}: {list:?}");
        assert_eq!(list[0]["address"], reader);
        assert_eq!(list[0]["stream"], "news");
        assert_eq!(list[0]["reason"], "unsubscribe");
    }
    let unsubscribed = list_all(d.addr, "type=email.unsubscribed", &[]);
    assert_eq!(unsubscribed.len(), 1, "{unsubscribed:?}");

    let refused = post_json(d.addr, "/v1/emails", &newsletter(reader));
    assert_eq!(refused.status, 422, "{}", refused.text());
    assert_eq!(refused.code(), "recipient_suppressed");
    assert_eq!(refused.json()["error"]["reason"], "unsubscribe");
    // Only that stream: receipts still reach the reader.
    let receipt = send_one(d.addr, &message(reader));
    sink.wait_for_id(&receipt, deadline(SETTLE));
    let news = emails(d.addr, "?stream=news");
    let receipts = emails(d.addr, "?stream=transactional");
    assert_eq!(
        (news.len(), receipts.len()),
        (1, 1),
        "{news:?} {receipts:?}"
    );
    assert_eq!(news[0]["id"], id);
    assert_eq!(receipts[0]["id"], receipt);
}

#[test]
fn a_reader_unsubscribes_by_following_the_link_in_a_browser() {
    let sink = SmtpSink::start(&Script::always("250"), None);
    let pki = make_pki();
    // The links name the public listener itself, so a browser here can
    // follow them.
    let base = format!("http://127.0.0.1:{}", unused_port());
    let d = Daemon::start(&news_config(
        &sink,
        &pki.dkim_key,
        &format!(
            "[public]\nurl = \"{base}\"\nlisten = \"{}\"\n",
            base.trim_start_matches("http://")
        ),
    ));
    let reader = "browser-reader@example.net";
    let id = send_one(d.addr, &newsletter(reader));
    let got = sink.wait_for_id(&id, deadline(SETTLE));
    let token = unsubscribe_token(
        got.header("List-Unsubscribe").expect("List-Unsubscribe"),
        &base,
    );

    let browser = Browser::start(900, 700);
    browser.goto(&format!("{base}/u/{token}"));
    browser.wait_for_text(reader);
    assert!(
        suppressions(d.addr, "").is_empty(),
        "opening the page changes nothing"
    );
    browser.find("form button[type=submit]").click();
    browser.wait_for_text("Unsubscribed");
    let listed = suppressions(d.addr, "");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["address"], reader, "{listed:?}");
    browser.screenshot("unsubscribed");
}
