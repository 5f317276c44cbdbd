//! `GET /v1/openapi.json` kept true: the document the daemon serves is
//! valid OpenAPI 3.1 (openapi-spec-validator), describes exactly the
//! router's rows, and real answers of nearly every route, successes and
//! refusals alike, match the schema it gives for their route and status
//! (jsonschema, draft 2020-12), checked by tests/openapi_check.py.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use crate::mail::smtp::{Script, SmtpSink};
use crate::support::*;
use crate::webhooks::receiver::Receiver;

const SETTLE: Duration = Duration::from_secs(30);

const ADMIN: &str = "openapi-admin-0123456789abcdef";
const ACME_READ: &str = "openapi-acme-read-0123456789ab";
const WRITE_KEY: &str = "wk_web_0123456789abcdef";

fn config(sink: &SmtpSink) -> String {
    format!(
        r#"
[server]
api_keys = ["{ADMIN}"]

[[server.keys]]
key = "{ACME_READ}"
role = "read"
tenant = "acme"

[webhooks]
allow_networks = ["127.0.0.1/32"]
require_https = false

[[tracking.sources]]
name = "web"
write_key = "{WRITE_KEY}"

[mail.streams.transactional]
from_domains = ["example.com"]
relay = "smtp://127.0.0.1:{}"
"#,
        sink.port
    )
}

/// Makes real requests and keeps each answer with the route row it is for.
struct Recorder {
    addr: SocketAddr,
    answers: Vec<Value>,
}

impl Recorder {
    /// `template` is the row's path (`"*"`: no row serves the request).
    fn call(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Response {
        let bearer = key.map(|k| format!("Bearer {k}"));
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(bearer) = &bearer {
            headers.push(("Authorization", bearer));
        }
        let bytes = body.map(Value::to_string).unwrap_or_default();
        if body.is_some() {
            headers.push(JSON);
        }
        let resp = request(self.addr, method, path, &headers, bytes.as_bytes());
        self.keep(method, template, &resp);
        resp
    }

    fn admin(&mut self, method: &str, template: &str, path: &str, body: Option<&Value>) -> Value {
        let resp = self.call(method, template, path, Some(ADMIN), body);
        assert!(
            (200..300).contains(&resp.status),
            "{method} {path}: {} {}",
            resp.status,
            resp.text()
        );
        let is_json = resp
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json"));
        if is_json && !resp.text().is_empty() {
            resp.json()
        } else {
            Value::Null
        }
    }

    fn keep(&mut self, method: &str, template: &str, resp: &Response) {
        let content_type = resp.header("content-type").unwrap_or_default().to_owned();
        let body = if content_type.starts_with("application/json") && !resp.text().is_empty() {
            resp.json()
        } else if resp.text().is_empty() {
            Value::Null
        } else {
            json!("(not JSON)")
        };
        self.answers.push(json!({
            "path": template,
            "method": method.to_ascii_lowercase(),
            "status": resp.status,
            "content_type": content_type,
            "body": body,
        }));
    }
}

#[test]
fn the_document_is_valid_describes_every_route_and_real_answers_match_it() {
    let sink = SmtpSink::start(&Script::always("250"), None);
    let receiver = Receiver::always(204);
    let d = Daemon::start(&config(&sink));
    let mut r = Recorder {
        addr: d.addr,
        answers: Vec::new(),
    };

    let document = r.admin("GET", "/v1/openapi.json", "/v1/openapi.json", None);
    let documented: BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("a path item")
                .keys()
                .map(move |method| (method.to_ascii_uppercase(), path.clone()))
        })
        .collect();
    let rows: BTreeSet<(String, String)> = herald::api::routes::ROUTES
        .iter()
        .map(|row| (row.method.as_str().to_owned(), row.path.to_owned()))
        .collect();
    assert_eq!(
        documented, rows,
        "the document describes exactly the router's rows"
    );
    let keyless = r.call("GET", "/v1/openapi.json", "/v1/openapi.json", None, None);
    assert_eq!(keyless.status, 401);

    // Probes and the public-facing routes.
    for probe in ["/healthz", "/readyz"] {
        let resp = r.call("GET", probe, probe, None, None);
        assert_eq!(resp.status, 200, "{probe}: {}", resp.text());
    }
    // HEAD is left out: this client reads a body by its Content-Length.
    for method in ["GET", "POST"] {
        let resp = r.call(method, "/u/{token}", "/u/not-a-token", None, None);
        assert_eq!(resp.status, 404, "{method}");
    }
    let feedback = r.call(
        "POST",
        "/feedback/{provider}",
        "/feedback/ses",
        None,
        Some(&json!({})),
    );
    assert_eq!(
        feedback.status,
        404,
        "SES is not configured: {}",
        feedback.text()
    );

    // Events.
    let event = json!({"type": "invoice.paid", "tenant": "acme", "data": {"amount": 1}, "idempotency_key": "k1"});
    let created = r.admin("POST", "/v1/events", "/v1/events", Some(&event));
    let event_id = s(&created["id"]).to_owned();
    r.admin("POST", "/v1/events", "/v1/events", Some(&event));
    let mut changed = event.clone();
    changed["data"] = json!({"amount": 2});
    assert_eq!(
        r.call(
            "POST",
            "/v1/events",
            "/v1/events",
            Some(ADMIN),
            Some(&changed)
        )
        .status,
        409
    );
    assert_eq!(
        r.call(
            "POST",
            "/v1/events",
            "/v1/events",
            Some(ADMIN),
            Some(&json!({"type": "bad type"}))
        )
        .status,
        422
    );
    let mut raw = r.call("POST", "/v1/events", "/v1/events", Some(ADMIN), None);
    assert_eq!(raw.status, 415);
    raw = request(
        d.addr,
        "POST",
        "/v1/events",
        &[("Authorization", &format!("Bearer {ADMIN}")), JSON],
        b"{",
    );
    r.keep("POST", "/v1/events", &raw);
    assert_eq!(raw.status, 400);
    r.admin(
        "POST",
        "/v1/events/batch",
        "/v1/events/batch",
        Some(&json!({"events": [{"type": "a.b"}, {"type": "a.c"}]})),
    );
    r.admin("GET", "/v1/events", "/v1/events?limit=2", None);
    assert_eq!(
        r.call("GET", "/v1/events", "/v1/events?nope=1", Some(ADMIN), None)
            .status,
        400
    );
    r.admin(
        "GET",
        "/v1/events/{id}",
        &format!("/v1/events/{event_id}"),
        None,
    );
    assert_eq!(
        r.call(
            "GET",
            "/v1/events/{id}",
            "/v1/events/evt_nope",
            Some(ADMIN),
            None
        )
        .status,
        404
    );
    assert_eq!(
        r.call("GET", "/v1/events/{id}", "/v1/events/evt_nope", None, None)
            .status,
        401
    );
    assert_eq!(
        r.call("GET", "*", "/v1/events/batch", Some(ADMIN), None)
            .status,
        405
    );
    assert_eq!(
        r.call("GET", "*", "/v1/nothing-here", Some(ADMIN), None)
            .status,
        404
    );

    // Tracking.
    let track = json!({"writeKey": WRITE_KEY, "userId": "u_1", "event": "Signed Up", "messageId": "m1",
                       "context": {"campaign": {"source": "news", "medium": "email", "name": "launch"}}});
    let resp = r.call("POST", "/v1/track", "/v1/track", None, Some(&track));
    assert_eq!(resp.status, 200, "track: {}", resp.text());
    for call in ["identify", "page", "screen"] {
        let body =
            json!({"writeKey": WRITE_KEY, "userId": "u_1", "messageId": format!("m_{call}")});
        let resp = r.call(
            "POST",
            &format!("/v1/{call}"),
            &format!("/v1/{call}"),
            None,
            Some(&body),
        );
        assert_eq!(resp.status, 200, "{call}: {}", resp.text());
    }
    let group = json!({"writeKey": WRITE_KEY, "userId": "u_1", "groupId": "g_1"});
    let resp = r.call("POST", "/v1/group", "/v1/group", None, Some(&group));
    assert_eq!(resp.status, 200, "group: {}", resp.text());
    let alias = json!({"writeKey": WRITE_KEY, "userId": "u_1", "previousId": "anon_1"});
    let resp = r.call("POST", "/v1/alias", "/v1/alias", None, Some(&alias));
    assert_eq!(resp.status, 200, "alias: {}", resp.text());
    let batch = json!({"writeKey": WRITE_KEY, "batch": [{"type": "track", "userId": "u_1", "event": "Paid"}]});
    let resp = r.call("POST", "/v1/batch", "/v1/batch", None, Some(&batch));
    assert_eq!(resp.status, 200, "batch: {}", resp.text());
    assert_eq!(
        r.call(
            "POST",
            "/v1/track",
            "/v1/track",
            None,
            Some(&json!({"userId": "u"}))
        )
        .status,
        401
    );
    let bad_call = json!({"writeKey": WRITE_KEY, "userId": "u_1"});
    assert_eq!(
        r.call("POST", "/v1/track", "/v1/track", None, Some(&bad_call))
            .status,
        400
    );
    r.admin("GET", "/v1/users/{id}", "/v1/users/u_1", None);
    r.admin(
        "GET",
        "/v1/users/{id}/events",
        "/v1/users/u_1/events?limit=10",
        None,
    );
    r.admin(
        "GET",
        "/v1/stats/events",
        "/v1/stats/events?event=Signed%20Up",
        None,
    );
    r.admin(
        "GET",
        "/v1/funnels",
        "/v1/funnels?steps=Signed%20Up,Paid&within=14d",
        None,
    );
    r.admin(
        "GET",
        "/v1/attribution",
        "/v1/attribution?event=Paid&model=first_touch",
        None,
    );
    let export = r.call(
        "GET",
        "/v1/events/export",
        "/v1/events/export",
        Some(ADMIN),
        None,
    );
    assert_eq!(export.status, 200, "{}", export.text());

    // Endpoints and deliveries.
    let endpoint_body = json!({"url": receiver.url("/hook"), "event_types": ["invoice.*"], "headers": {"x-token": "t"}});
    let endpoint = r.admin(
        "POST",
        "/v1/endpoints",
        "/v1/endpoints",
        Some(&endpoint_body),
    );
    let ep = s(&endpoint["id"]).to_owned();
    let ep_path = |tail: &str| format!("/v1/endpoints/{ep}{tail}");
    assert_eq!(
        r.call(
            "POST",
            "/v1/endpoints",
            "/v1/endpoints",
            Some(ADMIN),
            Some(&json!({"url": "ftp://x"}))
        )
        .status,
        422
    );
    r.admin("GET", "/v1/endpoints", "/v1/endpoints", None);
    r.admin("GET", "/v1/endpoints/{id}", &ep_path(""), None);
    r.admin(
        "PATCH",
        "/v1/endpoints/{id}",
        &ep_path(""),
        Some(&json!({"description": "billing"})),
    );
    r.admin(
        "GET",
        "/v1/endpoints/{id}/secret",
        &ep_path("/secret"),
        None,
    );
    r.admin(
        "POST",
        "/v1/endpoints/{id}/rotate-secret",
        &ep_path("/rotate-secret"),
        Some(&json!({"grace_secs": 60})),
    );
    r.admin("POST", "/v1/endpoints/{id}/test", &ep_path("/test"), None);
    r.admin(
        "POST",
        "/v1/endpoints/{id}/disable",
        &ep_path("/disable"),
        None,
    );
    r.admin(
        "POST",
        "/v1/endpoints/{id}/enable",
        &ep_path("/enable"),
        None,
    );
    assert_eq!(
        r.call(
            "GET",
            "/v1/endpoints/{id}",
            "/v1/endpoints/ep_nope",
            Some(ADMIN),
            None
        )
        .status,
        404
    );
    let since = json!({"since": "2020-01-01T00:00:00Z"});
    r.admin(
        "POST",
        "/v1/endpoints/{id}/replay",
        &ep_path("/replay"),
        Some(&since),
    );
    r.admin(
        "POST",
        "/v1/endpoints/{id}/recover",
        &ep_path("/recover"),
        Some(&since),
    );
    receiver.wait_for_requests(2, deadline(SETTLE));
    let mut deliveries = Value::Null;
    let delivered = wait_until(deadline(SETTLE), || {
        deliveries = r.admin(
            "GET",
            "/v1/deliveries",
            &format!("/v1/deliveries?endpoint={ep}"),
            None,
        );
        deliveries["deliveries"]
            .as_array()
            .is_some_and(|list| !list.is_empty() && list.iter().all(|d| d["status"] == "succeeded"))
    });
    assert!(delivered, "{deliveries}");
    let delivery = s(&deliveries["deliveries"][0]["id"]).to_owned();
    r.admin(
        "GET",
        "/v1/deliveries/{id}",
        &format!("/v1/deliveries/{delivery}"),
        None,
    );
    r.admin(
        "POST",
        "/v1/deliveries/{id}/retry",
        &format!("/v1/deliveries/{delivery}/retry"),
        None,
    );
    r.admin("GET", "/v1/dead-letters", "/v1/dead-letters", None);
    r.admin("GET", "/v1/endpoints/{id}/stats", &ep_path("/stats"), None);

    // The event catalog: a type with a schema, an event it refuses, and a
    // pinned endpoint's field in the endpoint's answer.
    let invoice_type = "/v1/event-types/invoice.paid";
    let definition = json!({"description": "An invoice was paid.", "versions": {
        "1": {"schema": {"type": "object", "required": ["amount"],
                         "properties": {"amount": {"type": "integer"}}},
              "sample": {"amount": 4200}}}});
    r.admin(
        "PUT",
        "/v1/event-types/{name}",
        invoice_type,
        Some(&definition),
    );
    r.admin(
        "PUT",
        "/v1/event-types/{name}",
        invoice_type,
        Some(&definition),
    );
    assert_eq!(
        r.call(
            "PUT",
            "/v1/event-types/{name}",
            invoice_type,
            Some(ADMIN),
            Some(&json!({"versions": {"1": {"schema": {"type": "nonsense"}, "sample": {}}}}))
        )
        .status,
        400
    );
    r.admin("GET", "/v1/event-types", "/v1/event-types", None);
    r.admin("GET", "/v1/event-types/{name}", invoice_type, None);
    assert_eq!(
        r.call(
            "POST",
            "/v1/events",
            "/v1/events",
            Some(ADMIN),
            Some(&json!({"type": "invoice.paid", "data": {"amount": "lots"}}))
        )
        .status,
        422
    );
    r.admin("DELETE", "/v1/event-types/{name}", invoice_type, None);
    assert_eq!(
        r.call(
            "GET",
            "/v1/event-types/{name}",
            invoice_type,
            Some(ADMIN),
            None
        )
        .status,
        404
    );

    // Mail, suppressions, feedback and streams.
    let mail = json!({"from": "no-reply@example.com", "to": ["ann@example.net"], "subject": "Hi",
                      "text": "Hello.", "idempotency_key": "mail-1", "tags": {"kind": "receipt"}});
    let queued = r.admin("POST", "/v1/emails", "/v1/emails", Some(&mail));
    r.admin("POST", "/v1/emails", "/v1/emails", Some(&mail));
    let mut no_text = mail.clone();
    no_text["text"] = Value::Null;
    no_text["idempotency_key"] = json!("mail-2");
    assert_eq!(
        r.call(
            "POST",
            "/v1/emails",
            "/v1/emails",
            Some(ADMIN),
            Some(&no_text)
        )
        .status,
        422
    );
    sink.wait_for_messages(1, deadline(SETTLE));
    let message = s(&queued["messages"][0]["id"]).to_owned();
    let mut shown = Value::Null;
    let sent = wait_until(deadline(SETTLE), || {
        shown = r.admin(
            "GET",
            "/v1/emails/{id}",
            &format!("/v1/emails/{message}"),
            None,
        );
        shown["status"] == "sent"
    });
    assert!(sent, "{shown}");
    r.admin("GET", "/v1/emails", "/v1/emails?limit=5", None);
    let address = "/v1/suppressions/cy%40example.net";
    r.admin(
        "PUT",
        "/v1/suppressions/{address}",
        address,
        Some(&json!({"reason": "manual"})),
    );
    r.admin("PUT", "/v1/suppressions/{address}", address, None);
    r.admin("GET", "/v1/suppressions", "/v1/suppressions", None);
    r.admin("DELETE", "/v1/suppressions/{address}", address, None);
    assert_eq!(
        r.call(
            "DELETE",
            "/v1/suppressions/{address}",
            address,
            Some(ADMIN),
            None
        )
        .status,
        404
    );
    r.admin("GET", "/v1/feedback", "/v1/feedback?matched=false", None);
    r.admin("GET", "/v1/streams", "/v1/streams", None);
    r.admin(
        "GET",
        "/v1/streams/{name}/health",
        "/v1/streams/transactional/health",
        None,
    );
    r.admin(
        "POST",
        "/v1/streams/{name}/pause",
        "/v1/streams/transactional/pause",
        None,
    );
    r.admin(
        "POST",
        "/v1/streams/{name}/resume",
        "/v1/streams/transactional/resume",
        None,
    );
    assert_eq!(
        r.call("GET", "/v1/streams", "/v1/streams", Some(ACME_READ), None)
            .status,
        403
    );
    assert_eq!(
        r.call(
            "GET",
            "/v1/streams/{name}/health",
            "/v1/streams/nope/health",
            Some(ADMIN),
            None
        )
        .status,
        404
    );

    // Keys, storage, backup, metrics.
    let key = r.admin(
        "POST",
        "/v1/keys",
        "/v1/keys",
        Some(&json!({"role": "read", "tenant": "acme"})),
    );
    r.admin("GET", "/v1/keys", "/v1/keys", None);
    r.admin(
        "DELETE",
        "/v1/keys/{id}",
        &format!("/v1/keys/{}", s(&key["id"])),
        None,
    );
    assert_eq!(
        r.call(
            "POST",
            "/v1/keys",
            "/v1/keys",
            Some(ADMIN),
            Some(&json!({"role": "owner"}))
        )
        .status,
        422
    );
    assert_eq!(
        r.call("GET", "/v1/keys", "/v1/keys", Some(ACME_READ), None)
            .status,
        403
    );
    r.admin("GET", "/v1/admin/storage", "/v1/admin/storage", None);
    let backup = r.call(
        "GET",
        "/v1/admin/backup",
        "/v1/admin/backup",
        Some(ADMIN),
        None,
    );
    if postgres_backend() {
        // The database is backed up by its own tools, not through a node.
        assert_eq!(
            (backup.status, backup.code()),
            (501, "not_on_this_backend".into())
        );
    } else {
        assert_eq!(backup.status, 200);
    }
    let metrics = r.call("GET", "/metrics", "/metrics", Some(ADMIN), None);
    assert_eq!(metrics.status, 200);
    portal_routes(&mut r, &receiver);
    dashboard_routes(&mut r);
    r.admin("DELETE", "/v1/endpoints/{id}", &ep_path(""), None);

    let exercised: BTreeSet<(String, String)> = r
        .answers
        .iter()
        .map(|a| {
            (
                s(&a["method"]).to_ascii_uppercase(),
                s(&a["path"]).to_owned(),
            )
        })
        .filter(|(_, path)| path != "*")
        .chain([("HEAD".to_owned(), "/u/{token}".to_owned())])
        .collect();
    let missed: Vec<_> = rows.difference(&exercised).collect();
    assert!(missed.is_empty(), "routes no request exercised: {missed:?}");

    let input = json!({"document": document, "answers": r.answers});
    let out = run_python("openapi_check.py", &[], input.to_string().as_bytes());
    assert!(
        out.status.success(),
        "answers the document does not describe:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_schema_that_disagrees_with_an_answer_is_caught() {
    // The checker itself must be able to fail: a document whose event
    // schema wants `seq` to be a string refuses a real event.
    let d = Daemon::start("");
    let created = post_json(d.addr, "/v1/events", &json!({"type": "a.b"}));
    assert_eq!(created.status, 201);
    let mut document = get(d.addr, "/v1/openapi.json").json();
    document["components"]["schemas"]["Event"]["properties"]["seq"] = json!({"type": "string"});
    let answers = json!([{
        "path": "/v1/events", "method": "post", "status": 201,
        "content_type": "application/json", "body": created.json(),
    }, {
        "path": "/v1/events", "method": "post", "status": 299,
        "content_type": "application/json", "body": {},
    }]);
    let input = json!({"document": document, "answers": answers});
    let out = run_python("openapi_check.py", &[], input.to_string().as_bytes());
    assert!(!out.status.success());
    let problems = String::from_utf8_lossy(&out.stdout);
    assert!(problems.contains("seq"), "{problems}");
    assert!(problems.contains("299 is not documented"), "{problems}");
}

/// The customer portal's routes, called as its page does: with the link's
/// token in the path and no API key.
/// The dashboard's page, assets and session, and the overview its
/// script reads with the session's cookie and CSRF token.
fn dashboard_routes(r: &mut Recorder) {
    let page = r.call("GET", "/admin", "/admin", None, None);
    assert_eq!(page.status, 200, "{}", page.text());
    let script = r.call(
        "GET",
        "/admin/assets/{name}",
        "/admin/assets/app.js",
        None,
        None,
    );
    assert_eq!(script.status, 200);
    let etag = script.header("etag").expect("an ETag").to_owned();
    let unchanged = request(
        r.addr,
        "GET",
        "/admin/assets/app.js",
        &[("If-None-Match", &etag)],
        b"",
    );
    r.keep("GET", "/admin/assets/{name}", &unchanged);
    assert_eq!(unchanged.status, 304);
    let signed_in = r.call(
        "POST",
        "/admin/session",
        "/admin/session",
        None,
        Some(&json!({ "key": ADMIN })),
    );
    assert_eq!(signed_in.status, 200, "{}", signed_in.text());
    let csrf = s(&signed_in.json()["csrf_token"]).to_owned();
    let cookie = signed_in
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let wrong = r.call(
        "POST",
        "/admin/session",
        "/admin/session",
        None,
        Some(&json!({"key": "not-a-key-of-this-daemon"})),
    );
    assert_eq!(wrong.status, 401);
    let session = [("Cookie", cookie.as_str()), ("X-CSRF-Token", csrf.as_str())];
    let overview = request(r.addr, "GET", "/v1/admin/overview", &session, b"");
    assert_eq!(overview.status, 200, "{}", overview.text());
    r.keep("GET", "/v1/admin/overview", &overview);
    let out = request(r.addr, "POST", "/admin/logout", &session, b"");
    assert_eq!(out.status, 204, "{}", out.text());
    r.keep("POST", "/admin/logout", &out);
}

fn portal_routes(r: &mut Recorder, receiver: &Receiver) {
    let link = r.admin(
        "POST",
        "/v1/portal-links",
        "/v1/portal-links",
        Some(&json!({"tenant": "acme", "ttl_secs": 600})),
    );
    let token = s(&link["url"]).rsplit('/').next().unwrap().to_owned();
    let addr = r.addr;
    let mut portal = |method: &str, template: &str, rest: &str, body: Option<&Value>| {
        let path = format!("/portal/{token}{rest}");
        let resp = r.call(method, template, &path, None, body);
        assert!(
            (200..300).contains(&resp.status),
            "{method} {path}: {} {}",
            resp.status,
            resp.text()
        );
        if resp.text().is_empty()
            || !resp
                .header("content-type")
                .unwrap_or_default()
                .starts_with("application/json")
        {
            Value::Null
        } else {
            resp.json()
        }
    };
    portal("GET", "/portal/{token}", "", None);
    portal("GET", "/portal/{token}/api/session", "/api/session", None);
    portal(
        "GET",
        "/portal/{token}/api/event-types",
        "/api/event-types",
        None,
    );
    let body = json!({"url": receiver.url("/portal"), "event_types": ["portal.*"]});
    let created = portal(
        "POST",
        "/portal/{token}/api/endpoints",
        "/api/endpoints",
        Some(&body),
    );
    let ep = format!("/api/endpoints/{}", s(&created["id"]));
    let at = |tail: &str| format!("{ep}{tail}");
    portal(
        "GET",
        "/portal/{token}/api/endpoints",
        "/api/endpoints",
        None,
    );
    portal("GET", "/portal/{token}/api/endpoints/{id}", &at(""), None);
    portal(
        "PATCH",
        "/portal/{token}/api/endpoints/{id}",
        &at(""),
        Some(&json!({"description": "from the portal"})),
    );
    portal(
        "GET",
        "/portal/{token}/api/endpoints/{id}/stats",
        &at("/stats"),
        None,
    );
    portal(
        "GET",
        "/portal/{token}/api/endpoints/{id}/secret",
        &at("/secret"),
        None,
    );
    portal(
        "POST",
        "/portal/{token}/api/endpoints/{id}/rotate-secret",
        &at("/rotate-secret"),
        Some(&json!({})),
    );
    portal(
        "POST",
        "/portal/{token}/api/endpoints/{id}/test",
        &at("/test"),
        None,
    );
    portal(
        "POST",
        "/portal/{token}/api/endpoints/{id}/disable",
        &at("/disable"),
        None,
    );
    portal(
        "POST",
        "/portal/{token}/api/endpoints/{id}/enable",
        &at("/enable"),
        None,
    );
    let event = json!({"type": "portal.opened", "tenant": "acme"});
    let resp = request(
        addr,
        "POST",
        "/v1/events",
        &[("Authorization", &format!("Bearer {ADMIN}")), JSON],
        event.to_string().as_bytes(),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    let listed = format!("/api/deliveries?endpoint={}", s(&created["id"]));
    let mut page = Value::Null;
    let delivered = wait_until(deadline(SETTLE), || {
        page = portal("GET", "/portal/{token}/api/deliveries", &listed, None);
        page["deliveries"][0]["status"] == "succeeded"
    });
    assert!(
        delivered,
        "the portal endpoint's delivery did not succeed: {page}"
    );
    let delivery = format!("/api/deliveries/{}", s(&page["deliveries"][0]["id"]));
    portal(
        "GET",
        "/portal/{token}/api/deliveries/{id}",
        &delivery,
        None,
    );
    portal(
        "POST",
        "/portal/{token}/api/deliveries/{id}/retry",
        &format!("{delivery}/retry"),
        None,
    );
    for (asset, template) in [
        ("/portal-assets/portal.js", "/portal-assets/portal.js"),
        ("/portal-assets/portal.css", "/portal-assets/portal.css"),
    ] {
        let resp = r.call("GET", template, asset, None, None);
        assert_eq!(resp.status, 200, "{asset}");
    }
}
