//! The event catalog: types stored with checked schemas and samples,
//! shared by every tenant but changed only by keys without one, and events
//! of a catalogued type validated on ingest, refused whole when they do
//! not fit.

use serde_json::{json, Value};

use super::WEBHOOKS;
use crate::support::*;
use crate::tenancy::{call, config as tenancy_config, expect, ACME, ADMIN};

const INVOICE_V1: &str = r#"{"type": "object", "required": ["amount"],
    "properties": {"amount": {"type": "integer", "minimum": 0}}}"#;
const INVOICE_V2: &str = r#"{"type": "object", "required": ["cents", "currency"],
    "properties": {"cents": {"type": "integer"}, "currency": {"enum": ["EUR", "USD"]}}}"#;

/// `invoice.paid` in two versions, each with a schema and a sample.
fn invoice_type() -> Value {
    json!({
        "description": "An invoice was paid",
        "versions": {
            "1": {"schema": serde_json::from_str::<Value>(INVOICE_V1).unwrap(),
                  "sample": {"amount": 4200}},
            "2": {"schema": serde_json::from_str::<Value>(INVOICE_V2).unwrap(),
                  "sample": {"cents": 4200, "currency": "EUR"}},
        },
    })
}

fn put(addr: std::net::SocketAddr, name: &str, body: &Value) -> Response {
    request(
        addr,
        "PUT",
        &format!("/v1/event-types/{name}"),
        &[JSON],
        body.to_string().as_bytes(),
    )
}

#[test]
fn types_are_stored_with_checked_schemas_and_only_keys_without_a_tenant_change_them() {
    let d = Daemon::start(&tenancy_config());
    let path = "/v1/event-types/invoice.paid";
    let created = expect(d.addr, ADMIN, "PUT", path, Some(&invoice_type()), 201);
    assert_eq!(created["name"], "invoice.paid");
    assert_eq!(created["deprecated"], false);
    assert_eq!(created["versions"]["2"]["sample"]["currency"], "EUR");
    assert_eq!(
        created["versions"]["1"]["schema"]["required"],
        json!(["amount"])
    );

    let mut deprecated = invoice_type();
    deprecated["deprecated"] = true.into();
    let replaced = expect(d.addr, ADMIN, "PUT", path, Some(&deprecated), 200);
    assert_eq!(replaced["deprecated"], true);
    assert_eq!(replaced["created_at"], created["created_at"]);

    // Every tenant reads the shared catalog; none may change it.
    let listed = expect(d.addr, ACME.read, "GET", "/v1/event-types", None, 200);
    assert_eq!(listed["event_types"], json!([replaced.clone()]));
    assert_eq!(expect(d.addr, ACME.write, "GET", path, None, 200), replaced);
    for key in [ACME.write, ACME.read] {
        let resp = call(d.addr, key, "PUT", path, Some(&invoice_type()));
        assert_eq!(
            (resp.status, resp.code()),
            (403, "forbidden".into()),
            "{}",
            resp.text()
        );
        let resp = call(d.addr, key, "DELETE", path, None);
        assert_eq!(resp.status, 403, "{}", resp.text());
    }
    let resp = call(
        d.addr,
        ACME.write,
        "PUT",
        "/v1/event-types/acme.only",
        Some(&invoice_type()),
    );
    assert_eq!(resp.status, 403, "{}", resp.text());

    // Refused definitions name the problem and change nothing.
    let cases = [
        (
            json!({"versions": {"1": {"schema": {"type": "integer-ish"}, "sample": {}}}}),
            400,
            "invalid_schema",
            "/versions/1/schema",
        ),
        (
            json!({"versions": {"1": {"schema": {"$ref": "https://schemas.example/x.json"},
                "sample": {}}}}),
            400,
            "invalid_schema",
            "/versions/1/schema",
        ),
        (
            json!({"versions": {"1": {"schema": serde_json::from_str::<Value>(INVOICE_V1).unwrap(),
                "sample": {"amount": -1}}}}),
            400,
            "sample_mismatch",
            "/versions/1/sample/amount",
        ),
        (
            json!({"versions": {"x": {"sample": {}}}}),
            422,
            "invalid_field",
            "versions",
        ),
        (
            json!({"versions": {"1": {"sample": {}}}, "color": "red"}),
            400,
            "invalid_body",
            "",
        ),
    ];
    for (body, status, code, field) in cases {
        let resp = call(d.addr, ADMIN, "PUT", path, Some(&body));
        assert_eq!(
            (resp.status, resp.code()),
            (status, code.to_owned()),
            "{body}: {}",
            resp.text()
        );
        if !field.is_empty() {
            let error = &resp.json()["error"];
            assert!(s(&error["field"]).starts_with(field), "{body}: {error}");
        }
    }
    assert_eq!(expect(d.addr, ADMIN, "GET", path, None, 200), replaced);
    let resp = call(
        d.addr,
        ADMIN,
        "PUT",
        "/v1/event-types/email.sent",
        Some(&invoice_type()),
    );
    assert_eq!(
        (resp.status, resp.code()),
        (422, "invalid_field".into()),
        "{}",
        resp.text()
    );

    expect(d.addr, ADMIN, "DELETE", path, None, 204);
    let resp = call(d.addr, ADMIN, "GET", path, None);
    assert_eq!(
        (resp.status, resp.code()),
        (404, "event_type_not_found".into())
    );
    let resp = call(d.addr, ADMIN, "DELETE", path, None);
    assert_eq!(resp.status, 404);
    assert_eq!(
        expect(d.addr, ACME.read, "GET", "/v1/event-types", None, 200)["event_types"],
        json!([])
    );
}

/// The answer's error field, after checking status and code.
fn refused(resp: &Response, status: u16, code: &str) -> Value {
    assert_eq!(
        (resp.status, resp.code()),
        (status, code.to_owned()),
        "{}",
        resp.text()
    );
    resp.json()["error"].clone()
}

#[test]
fn events_of_a_catalogued_type_are_validated_on_ingest_and_refused_whole() {
    let mut d = Daemon::start(WEBHOOKS);
    assert_eq!(put(d.addr, "invoice.paid", &invoice_type()).status, 201);
    create(
        d.addr,
        &json!({"type": "invoice.paid", "data": {"amount": 1}}),
    );
    create(
        d.addr,
        &json!({"type": "invoice.paid",
                "data_versions": {"1": {"amount": 1}, "2": {"cents": 100, "currency": "USD"}}}),
    );
    // Types outside the catalog are not checked.
    create(
        d.addr,
        &json!({"type": "invoice.voided", "data": {"amount": "any"}}),
    );
    let before = count_events(d.addr);

    let resp = post_json(
        d.addr,
        "/v1/events",
        &json!({"type": "invoice.paid", "data": {"amount": "lots"}}),
    );
    let error = refused(&resp, 422, "schema_mismatch");
    assert_eq!(error["field"], "/data/amount");
    assert!(!s(&error["message"]).contains("lots"), "{error}");
    let resp = post_json(
        d.addr,
        "/v1/events",
        &json!({"type": "invoice.paid",
                "data_versions": {"1": {"amount": 1}, "2": {"cents": 1, "currency": "GBP"}}}),
    );
    assert_eq!(
        refused(&resp, 422, "schema_mismatch")["field"],
        "/data_versions/2/currency"
    );
    let resp = post_json(d.addr, "/v1/events", &json!({"type": "invoice.paid"}));
    assert_eq!(refused(&resp, 422, "schema_mismatch")["field"], "/data");

    let batch = json!({"events": [
        {"type": "invoice.paid", "data": {"amount": 2}},
        {"type": "other"},
        {"type": "invoice.paid", "data": {"amount": -5}},
    ]});
    let resp = post_json(d.addr, "/v1/events/batch", &batch);
    let error = refused(&resp, 422, "schema_mismatch");
    assert_eq!(error["field"], "/events/2/data/amount");
    assert!(s(&error["message"]).starts_with("events[2]"), "{error}");
    assert_eq!(
        count_events(d.addr),
        before,
        "nothing of a refused request is written"
    );

    // The catalog is kept across restarts, and a removed type stops checking.
    assert!(d.sigterm().success());
    d.restart();
    let bad = json!({"type": "invoice.paid", "data": {"amount": "lots"}});
    assert_eq!(post_json(d.addr, "/v1/events", &bad).status, 422);
    assert_eq!(
        request(d.addr, "DELETE", "/v1/event-types/invoice.paid", &[], b"").status,
        204
    );
    create(d.addr, &bad);
    assert_eq!(count_events(d.addr), before + 1);
}
