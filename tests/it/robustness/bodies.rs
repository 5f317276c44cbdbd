//! Mutated bodies for the API's own routes: events, batches, endpoints
//! (create, patch, rotate, recover, replay), emails and suppressions.

use serde_json::{json, Value};

use super::*;

/// Small limits, so that oversized bodies stay cheap to send.
const CONFIG: &str = r#"
[events]
max_event_bytes = 8192
max_request_bytes = 32768
[mail]
max_message_bytes = 4096
[mail.streams.transactional]
from_domains = ["example.com"]
"#;

const CASES_PER_ROUTE: usize = 250;

fn valid_event() -> Value {
    json!({"type": "fuzz.ok", "tenant": "acme", "data": {"n": 1},
           "idempotency_key": "k1", "occurred_at": "2026-11-22T10:00:00Z"})
}

fn strings(list: &[&str]) -> Vec<Value> {
    list.iter().map(|s| json!(s)).collect()
}

fn plus(mut a: Vec<Value>, b: Vec<Value>) -> Vec<Value> {
    a.extend(b);
    a
}

fn event_breakage(prefix: FieldPath) -> Vec<(FieldPath, Vec<Value>)> {
    // Leaked once per route: field paths are 'static so routes stay plain data.
    let path = |field: &'static str| -> FieldPath {
        let mut p = prefix.to_vec();
        p.push(field);
        Box::leak(p.into_boxed_slice())
    };
    vec![
        (
            path("type"),
            plus(
                plus(not_strings(), control_strings()),
                strings(&["", "a b", &"x".repeat(129), "a*", "é"]),
            ),
        ),
        (
            path("tenant"),
            plus(
                plus(not_strings(), control_strings()),
                strings(&["", "a b"]),
            ),
        ),
        (path("data"), not_objects()),
        (
            path("idempotency_key"),
            plus(
                plus(not_strings(), control_strings()),
                strings(&["", &"k".repeat(256)]),
            ),
        ),
        (
            path("occurred_at"),
            plus(
                not_strings(),
                strings(&[
                    "tuesday",
                    "1969-12-31T23:59:59Z",
                    "2026-13-01T00:00:00Z",
                    "",
                ]),
            ),
        ),
    ]
}

fn endpoint_breakage() -> Vec<(FieldPath, Vec<Value>)> {
    vec![
        (
            &["url"],
            plus(
                not_strings(),
                strings(&[
                    "ftp://hooks.example.com/",
                    "http://hooks.example.com/",
                    "https://user:pw@hooks.example.com/",
                    "https://hooks example.com/",
                    "https://hooks.example.com/#frag",
                    "https://hooks.example.com\\@evil.example/",
                    "not a url",
                    "",
                ]),
            ),
        ),
        (&["tenant"], plus(not_strings(), strings(&["", "a b"]))),
        (
            &["event_types"],
            vec![
                json!(42),
                json!("invoice.paid"),
                json!({}),
                json!([" padded"]),
                json!([42]),
                json!(["user*"]),
                json!(["a\nb"]),
            ],
        ),
        (
            &["description"],
            plus(not_strings(), strings(&[&"d".repeat(1025)])),
        ),
        (
            &["headers"],
            plus(
                not_objects(),
                vec![
                    json!({"webhook-signature": "v1,forged"}),
                    json!({"x-a": "a\r\nb"}),
                    json!({"x a": "v"}),
                    json!({"x-a": 1}),
                ],
            ),
        ),
        (&["rate_limit_per_sec"], plus(not_numbers(), vec![json!(0)])),
        (
            &["timeout_secs"],
            plus(not_numbers(), vec![json!(0), json!(31)]),
        ),
        (
            &["secret"],
            plus(not_strings(), strings(&["nope", "whsec_!!!", "whsec_"])),
        ),
        (
            &["payload_version"],
            plus(not_numbers(), vec![json!(0), json!(2)]),
        ),
    ]
}

fn routes(endpoint_id: &str) -> Vec<Route> {
    let json_route = |method, path: String, valid: Value, max_body| Route {
        method,
        path,
        headers: json_headers(),
        valid,
        broken: Vec::new(),
        required: Vec::new(),
        closed_objects: vec![&[]],
        checks_content_type: true,
        max_body,
    };
    let since_breakage = || -> Vec<(FieldPath, Vec<Value>)> {
        vec![(&["since"], plus(not_strings(), strings(&["yesterday", ""])))]
    };
    let mut events = json_route("POST", "/v1/events".into(), valid_event(), 8192);
    events.broken = event_breakage(&[]);
    events.required = vec![&["type"]];

    let mut batch = json_route(
        "POST",
        "/v1/events/batch".into(),
        json!({"events": [valid_event()]}),
        32768,
    );
    batch.broken = event_breakage(&["events", "0"]);
    batch.broken.push((
        &["events"],
        vec![json!(42), json!("x"), json!({}), json!([])],
    ));
    // An event given as its values alone, in field order.
    batch.broken.push((
        &["events", "0"],
        vec![
            json!(["fuzz.ok"]),
            json!(["fuzz.ok", "acme"]),
            json!("fuzz.ok"),
            json!(null),
        ],
    ));
    batch.required = vec![&["events"], &["events", "0", "type"]];
    batch.closed_objects = vec![&[], &["events", "0"]];

    let mut create = json_route(
        "POST",
        "/v1/endpoints".into(),
        json!({"url": "https://hooks.example.com/in", "tenant": "acme",
               "event_types": ["fuzz.never"], "description": "d", "headers": {"x-token": "t"},
               "rate_limit_per_sec": 10, "timeout_secs": 5,
               "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "payload_version": 1}),
        64 * 1024,
    );
    create.broken = endpoint_breakage();
    create.required = vec![&["url"]];

    let endpoint = format!("/v1/endpoints/{endpoint_id}");
    let mut patch = json_route(
        "PATCH",
        endpoint.clone(),
        json!({"description": "patched"}),
        64 * 1024,
    );
    patch.broken = endpoint_breakage();

    let mut rotate = json_route(
        "POST",
        format!("{endpoint}/rotate-secret"),
        json!({"grace_secs": 60}),
        64 * 1024,
    );
    rotate.broken = vec![
        (&["grace_secs"], plus(not_numbers(), vec![json!(604_801)])),
        (&["secret"], plus(not_strings(), strings(&["nope"]))),
    ];

    let mut recover = json_route(
        "POST",
        format!("{endpoint}/recover"),
        json!({"since": "2026-01-01T00:00:00Z"}),
        64 * 1024,
    );
    recover.broken = since_breakage();
    recover.required = vec![&["since"]];
    let mut replay = json_route(
        "POST",
        format!("{endpoint}/replay"),
        json!({"since": "2026-01-01T00:00:00Z"}),
        64 * 1024,
    );
    replay.broken = since_breakage();
    replay.required = vec![&["since"]];

    let mut email = json_route(
        "POST",
        "/v1/emails".into(),
        json!({"stream": "transactional", "from": "Acme <no-reply@example.com>",
               "to": ["bob@example.net"], "reply_to": "help@example.com", "subject": "Hi",
               "text": "hello", "html": "<p>hello</p>", "headers": {"X-Campaign": "c1"},
               "tags": {"kind": "reset"}, "idempotency_key": "reset-1"}),
        2 * 4096 + 256 * 1024,
    );
    email.broken = vec![
        (&["stream"], plus(not_strings(), strings(&["nope"]))),
        (
            &["from"],
            plus(
                plus(not_strings(), control_strings()),
                strings(&["nobody", "x@other.example"]),
            ),
        ),
        (
            &["to"],
            vec![
                json!(42),
                json!(true),
                json!({}),
                json!([]),
                json!([42]),
                json!(["nobody"]),
                json!("a@b"),
            ],
        ),
        (&["reply_to"], plus(not_strings(), strings(&["nobody"]))),
        (
            &["subject"],
            plus(
                plus(not_strings(), control_strings()),
                strings(&[&"s".repeat(999)]),
            ),
        ),
        (&["text"], plus(not_strings(), strings(&["", " \r\n"]))),
        (&["html"], not_strings()),
        (
            &["headers"],
            plus(
                not_objects(),
                vec![
                    json!({"Message-ID": "<forged@example.com>"}),
                    json!({"X-A": "a\r\nb"}),
                    json!({"X A": "v"}),
                    json!({"X-A": 1}),
                ],
            ),
        ),
        (
            &["tags"],
            plus(not_objects(), vec![json!({"": "v"}), json!({"k": 1})]),
        ),
        (
            &["idempotency_key"],
            plus(plus(not_strings(), control_strings()), strings(&[""])),
        ),
    ];
    email.required = vec![&["from"], &["to"], &["text"]];

    let mut suppression = json_route(
        "PUT",
        "/v1/suppressions/fuzz%40example.com".into(),
        json!({"reason": "manual", "stream": "transactional"}),
        16 * 1024,
    );
    suppression.broken = vec![
        (&["reason"], plus(not_strings(), strings(&["nope", ""]))),
        (&["stream"], plus(not_strings(), strings(&["nope"]))),
    ];

    let mut key = json_route(
        "POST",
        "/v1/keys".into(),
        json!({"role": "admin", "tenant": "acme", "description": "fuzz"}),
        16 * 1024,
    );
    key.broken = vec![
        (&["role"], plus(not_strings(), strings(&["root", ""]))),
        (&["tenant"], plus(not_strings(), strings(&["a b", ""]))),
        (&["description"], not_strings()),
    ];
    key.required = vec![&["role"]];

    let mut event_type = json_route(
        "PUT",
        "/v1/event-types/fuzz.type".into(),
        json!({"description": "d", "deprecated": false, "versions": {
            "1": {"schema": {"type": "object", "required": ["n"]}, "sample": {"n": 1}}}}),
        1024 * 1024,
    );
    // Paths through a version's name would read as array indexes here:
    // broken versions are whole `versions` objects.
    event_type.broken = vec![
        (&["description"], not_strings()),
        (
            &["deprecated"],
            vec![json!(1), json!("yes"), json!([]), json!({})],
        ),
        (
            &["versions"],
            vec![
                json!(42),
                json!("x"),
                json!({}),
                json!([]),
                json!({"1": {"sample": 1}}),
                json!({"1": {"sample": []}}),
                json!({"1": {"schema": {"type": "object"}}}),
                json!({"1": {"schema": "x", "sample": {}}}),
                json!({"1": {"schema": {"type": "integer-ish"}, "sample": {}}}),
                json!({"1": {"schema": {"required": ["n"]}, "sample": {}}}),
                json!({"1": {"sample": {}, "zz_unknown": 1}}),
                json!({"0": {"sample": {}}}),
            ],
        ),
    ];
    event_type.required = vec![&["versions"]];

    vec![
        events,
        batch,
        event_type,
        key,
        create,
        patch,
        rotate,
        recover,
        replay,
        email,
        suppression,
    ]
}

#[test]
fn mutated_bodies_are_refused_with_json_errors_and_change_nothing() {
    let daemon = Daemon::start(CONFIG);
    let addr = daemon.addr;
    // Something for the id routes to find; it subscribes to nothing posted.
    let created = post_json(
        addr,
        "/v1/endpoints",
        &json!({"url": "https://hooks.example.com/in", "event_types": ["fuzz.never"]}),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let endpoint_id = created.json()["id"].as_str().unwrap().to_owned();
    create(addr, &json!({"type": "fuzz.seen", "data": {"n": 0}}));
    let before = snapshot(addr);

    let (mut rng, seed) = Rng::seeded(0x5eed_0001);
    let mut index = 0;
    for route in routes(&endpoint_id) {
        for _ in 0..CASES_PER_ROUTE {
            assert_refused(addr, seed, index, &mutate(&mut rng, &route));
            index += 1;
        }
        // The body's values without their names: serde would fill a struct
        // from an array, in field order.
        let values: Vec<Value> = route.valid.as_object().unwrap().values().cloned().collect();
        let as_array = Case {
            what: "the body as an array".into(),
            method: route.method,
            path: route.path.clone(),
            headers: route.headers.clone(),
            body: Value::Array(values).to_string().into_bytes(),
        };
        assert_refused(addr, seed, index, &as_array);
        index += 1;
    }
    for bad in [
        "not-an-address",
        "%zz",
        "%FF%FE%40example.com",
        "a%0d%0a%40example.com",
        "a%00%40example.com",
        "%40%40",
    ] {
        let case = Case {
            what: "a bad address in the path".into(),
            method: "PUT",
            path: format!("/v1/suppressions/{bad}"),
            headers: json_headers(),
            body: br#"{"reason":"manual"}"#.to_vec(),
        };
        assert_refused(addr, seed, index, &case);
        index += 1;
    }

    assert_eq!(
        snapshot(addr),
        before,
        "a refused request changed something"
    );
    assert_healthy(&daemon);
}
