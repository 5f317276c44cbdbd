//! Mutated Segment calls: every call type and `/v1/batch`, with bad JSON,
//! wrong types, missing ids, oversized and gzip bodies (bombs, garbage,
//! cut-off streams) and bad write keys.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use super::*;

const WRITE_KEY: &str = "wk_fuzz_0123456789abcdef";

const CONFIG: &str = r#"
[tracking]
max_event_bytes = 4096
max_batch_bytes = 16384
[[tracking.sources]]
name = "web"
write_key = "wk_fuzz_0123456789abcdef"
"#;

const CASES_PER_ROUTE: usize = 200;

fn auth() -> (String, String) {
    (
        "Authorization".into(),
        format!("Basic {}", STANDARD.encode(format!("{WRITE_KEY}:"))),
    )
}

fn item(call: &str) -> Value {
    let mut v = json!({"userId": "u_1", "messageId": "m-1",
                       "timestamp": "2026-11-22T10:00:00Z", "sentAt": "2026-11-22T10:00:01Z",
                       "properties": {"plan": "pro"}, "traits": {"email": "a@example.com"},
                       "context": {"campaign": {"source": "google"}}});
    match call {
        "track" => v["event"] = json!("Signed Up"),
        "group" => v["groupId"] = json!("g_1"),
        "alias" => v["previousId"] = json!("a_1"),
        _ => {}
    }
    v
}

/// What breaks one call, under `prefix` (a batch item's path).
fn call_breakage(call: &str, prefix: FieldPath) -> (Vec<(FieldPath, Vec<Value>)>, Vec<FieldPath>) {
    let path = |field: &'static str| -> FieldPath {
        let mut p = prefix.to_vec();
        p.push(field);
        Box::leak(p.into_boxed_slice())
    };
    let ids = vec![
        json!(true),
        json!([]),
        json!({}),
        json!(["u"]),
        json!("u\u{0}"),
    ];
    let mut broken = vec![
        (path("userId"), ids.clone()),
        (
            path("messageId"),
            plus(
                vec![json!(42), json!(true), json!([]), json!({}), json!("")],
                vec![json!("m".repeat(101)), json!("m\n")],
            ),
        ),
        (
            path("timestamp"),
            vec![
                json!("soon"),
                json!(42),
                json!("2999-01-01T00:00:00Z"),
                json!("1969-01-01T00:00:00Z"),
            ],
        ),
        (path("sentAt"), vec![json!("later"), json!(1), json!({})]),
        (path("properties"), not_objects()),
        (path("traits"), not_objects()),
        (path("context"), not_objects()),
        (path("integrations"), not_objects()),
    ];
    let mut required = vec![path("userId")];
    match call {
        "track" => {
            broken.push((
                path("event"),
                plus(
                    not_strings(),
                    vec![json!(" "), json!("e\r\n"), json!("e".repeat(129))],
                ),
            ));
            required.push(path("event"));
        }
        "group" => {
            broken.push((path("groupId"), ids.clone()));
            required.push(path("groupId"));
        }
        "alias" => {
            broken.push((path("previousId"), ids));
            required.push(path("previousId"));
        }
        _ => {}
    }
    (broken, required)
}

fn plus(mut a: Vec<Value>, b: Vec<Value>) -> Vec<Value> {
    a.extend(b);
    a
}

fn routes() -> Vec<Route> {
    let mut out = Vec::new();
    for call in ["identify", "track", "page", "screen", "group", "alias"] {
        let (broken, required) = call_breakage(call, &[]);
        out.push(Route {
            method: "POST",
            path: format!("/v1/{call}"),
            headers: vec![auth()],
            valid: item(call),
            broken,
            required,
            closed_objects: Vec::new(),
            checks_content_type: false,
            max_body: 4096,
        });
    }
    let mut first = item("track");
    first["type"] = json!("track");
    let (mut broken, mut required) = call_breakage("track", &["batch", "0"]);
    broken.push((
        &["batch"],
        vec![json!(42), json!("x"), json!({}), json!(null)],
    ));
    broken.push((&["batch", "0"], not_objects()));
    broken.push((
        &["batch", "0", "type"],
        plus(not_strings(), vec![json!("jump"), json!("")]),
    ));
    required.push(&["batch"]);
    required.push(&["batch", "0", "type"]);
    out.push(Route {
        method: "POST",
        path: "/v1/batch".into(),
        headers: vec![auth()],
        valid: json!({"batch": [first], "context": {"library": {"name": "fuzz"}}}),
        broken,
        required,
        closed_objects: Vec::new(),
        checks_content_type: false,
        max_body: 16384,
    });
    out
}

/// Encoding and authentication mutations, which only these routes have.
fn transport_case(rng: &mut Rng, route: &Route) -> Case {
    let valid = route.valid.to_string().into_bytes();
    let mut headers = route.headers.clone();
    let gzip_header = ("Content-Encoding".to_owned(), "gzip".to_owned());
    let (what, body) = match rng.range(0, 6) {
        0 => {
            // A bomb: a valid start, then up to a megabyte of spaces, packed
            // into less than the body limit.
            let mut text = valid.clone();
            text.pop();
            text.resize(rng.range(64 << 10, 1 << 20), b' ');
            text.push(b'}');
            headers.push(gzip_header);
            ("a gzip bomb".to_owned(), gzip(&text))
        }
        1 => {
            let len = rng.range(1, 512);
            let garbage: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            headers.push(gzip_header);
            (format!("{len} bytes that are not gzip"), garbage)
        }
        2 => {
            let mut packed = gzip(&valid);
            let cut = rng.range(1, packed.len());
            packed.truncate(cut);
            headers.push(gzip_header);
            (format!("a gzip stream cut at {cut}"), packed)
        }
        3 => {
            let cut = rng.range(1, valid.len());
            headers.push(gzip_header);
            (format!("gzip of a body cut at {cut}"), gzip(&valid[..cut]))
        }
        4 => {
            let encoding = *rng.pick(&["br", "deflate", "compress", "gzip, br"]);
            headers.push(("Content-Encoding".into(), encoding.into()));
            (format!("content encoding {encoding}"), valid)
        }
        _ => {
            let key = *rng.pick(&[
                "Basic d3JvbmdfMDEyMzQ1Njc4OWFiY2RlZjo=",
                "Basic !!!",
                "Bearer wk_fuzz_0123456789abcdeX",
                "Bearer ",
                "Digest x",
            ]);
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case("authorization"));
            headers.push(("Authorization".into(), key.into()));
            (format!("authorization {key}"), valid)
        }
    };
    finish(route, what, headers, body)
}

#[test]
fn mutated_segment_calls_are_refused_with_json_errors_and_store_nothing() {
    let daemon = Daemon::start(CONFIG);
    let addr = daemon.addr;
    let before = snapshot(addr);
    let (mut rng, seed) = Rng::seeded(0x5eed_0002);
    let mut index = 0;
    for route in routes() {
        for i in 0..CASES_PER_ROUTE {
            let case = if i % 4 == 3 {
                transport_case(&mut rng, &route)
            } else {
                mutate(&mut rng, &route)
            };
            assert_refused(addr, seed, index, &case);
            index += 1;
        }
    }
    assert_eq!(snapshot(addr), before, "a refused call was stored");
    assert_healthy(&daemon);
}
