//! Bad query strings on every list route (and on the one write route that
//! takes a query): unknown and repeated names, malformed cursors, ids,
//! limits, times, durations and names.

use super::*;

const CASES: usize = 600;

/// A list route: a valid parameter to mix in, and what breaks each of its
/// parameters.
struct ListRoute {
    method: &'static str,
    path: &'static str,
    valid: &'static [&'static str],
    broken: Vec<(&'static str, Vec<String>)>,
}

fn owned(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn limits() -> Vec<String> {
    owned(&[
        "0",
        "1001",
        "-1",
        "abc",
        "1e3",
        "99999999999999999999",
        "",
        " 5",
        "5 ",
    ])
}

fn times() -> Vec<String> {
    owned(&[
        "yesterday",
        "2026-13-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "",
        &"9".repeat(80),
    ])
}

/// The event log's bounds are strict RFC 3339; tracking queries also take
/// a time without an offset, as Segment clients send it.
fn strict_times() -> Vec<String> {
    let mut list = times();
    list.extend(owned(&["2026-01-01T00:00:00", "2026-01-01 00:00:00"]));
    list
}

fn cursors() -> Vec<String> {
    owned(&[
        "!!!",
        "AQAAAAAAAAAC=",
        "AgAAAAAAAAAC",
        "AQAAAAAAAA",
        "",
        "evt_00000000000000000000000000",
        "%",
    ])
}

fn delivery_ids() -> Vec<String> {
    owned(&[
        "dlv_",
        "dlv_+00000000000002a",
        "dlv_0000000000000000",
        "msg_000000000000002a",
        "x",
    ])
}

fn routes() -> Vec<ListRoute> {
    let names = owned(&[
        "a*",
        " lead",
        "trail ",
        "a\nb",
        "a\u{0}b",
        "",
        &"x".repeat(129),
    ]);
    vec![
        ListRoute {
            method: "GET",
            path: "/v1/events",
            valid: &["limit=10", "type=fuzz.ok"],
            broken: vec![
                ("after", cursors()),
                ("limit", limits()),
                ("since", strict_times()),
                ("until", strict_times()),
                ("type", names.clone()),
                ("tenant", owned(&["a b", "", "ü"])),
            ],
        },
        ListRoute {
            method: "GET",
            path: "/v1/deliveries",
            valid: &["limit=10", "status=failed"],
            broken: vec![
                (
                    "endpoint",
                    owned(&[
                        "ep_",
                        "ep_zzzzzzzzzzzzzzzzzzzzzzzzzz",
                        "evt_00000000000000000000000000",
                    ]),
                ),
                ("event", owned(&["evt_", "ep_00000000000000000000000000"])),
                ("status", owned(&["done", "", "FAILED"])),
                ("after", delivery_ids()),
                ("limit", limits()),
            ],
        },
        ListRoute {
            method: "GET",
            path: "/v1/dead-letters",
            valid: &["limit=10"],
            broken: vec![
                ("status", owned(&["failed"])),
                ("after", delivery_ids()),
                ("limit", limits()),
            ],
        },
        ListRoute {
            method: "GET",
            path: "/v1/emails",
            valid: &["limit=10", "stream=transactional"],
            broken: vec![
                ("to", owned(&["nobody", "a\r\n@example.com", ""])),
                ("status", owned(&["done", ""])),
                (
                    "after",
                    owned(&["msg_", "msg_+00000000000002a", "dlv_000000000000002a"]),
                ),
                ("limit", limits()),
            ],
        },
        ListRoute {
            method: "GET",
            path: "/v1/suppressions",
            valid: &["limit=10"],
            broken: vec![
                ("reason", owned(&["bored", ""])),
                ("after", owned(&["!!!", "%%%", "bm8tbmV3bGluZQ", "_w"])),
                ("limit", limits()),
            ],
        },
        ListRoute {
            method: "GET",
            path: "/v1/endpoints",
            valid: &["tenant=acme"],
            broken: Vec::new(),
        },
        ListRoute {
            method: "GET",
            path: "/v1/users/u_1/events",
            valid: &["limit=10"],
            broken: vec![
                (
                    "after",
                    owned(&["abc", "-1", "1.5", "", "99999999999999999999"]),
                ),
                ("limit", limits()),
            ],
        },
        ListRoute {
            method: "GET",
            path: "/v1/stats/events",
            valid: &["event=Signed%20Up"],
            broken: vec![
                ("interval", owned(&["week", "", "HOUR"])),
                ("since", times()),
                ("until", times()),
            ],
        },
        ListRoute {
            method: "GET",
            path: "/v1/funnels",
            valid: &["steps=A,B"],
            broken: vec![
                (
                    "within",
                    owned(&["soon", "-1d", "", "99999999999999999999999d", "1e9y"]),
                ),
                ("since", times()),
                ("until", times()),
            ],
        },
        ListRoute {
            method: "GET",
            path: "/v1/attribution",
            valid: &["event=Subscribed"],
            broken: vec![
                ("model", owned(&["linear", ""])),
                ("since", times()),
                ("until", times()),
            ],
        },
        ListRoute {
            method: "GET",
            path: "/v1/events/export",
            valid: &["since=2026-01-01T00:00:00Z"],
            broken: vec![("until", times())],
        },
        ListRoute {
            method: "DELETE",
            path: "/v1/suppressions/nobody%40example.com",
            valid: &["stream=transactional"],
            broken: Vec::new(),
        },
    ]
}

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Queries wrong as a whole, whatever the route: these need no table.
fn whole_query_breakage(rng: &mut Rng, route: &ListRoute) -> (String, String) {
    let valid = route.valid[0];
    match rng.range(0, 3) {
        0 => {
            let name = *rng.pick(&["typo", "LIMIT", "after[]", "%FF", "a%00b", ""]);
            (
                format!("unknown name {name:?}"),
                format!("{valid}&{name}=1"),
            )
        }
        1 => (format!("{valid} twice"), format!("{valid}&{valid}")),
        _ => {
            // Required parameters left out, or fixed ranges broken.
            let query = match route.path {
                "/v1/stats/events" => "interval=day",
                "/v1/funnels" => *rng.pick(&[
                    "within=14d",
                    "steps=A",
                    "steps=A,,B",
                    "steps=A,B,C,D,E,F,G,H,I,J,K",
                    "steps=A,B&since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z",
                ]),
                "/v1/attribution" => "model=first_touch",
                "/v1/events/export" => "since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z",
                _ => return (format!("{valid} twice"), format!("{valid}&{valid}")),
            };
            (format!("query {query}"), query.to_owned())
        }
    }
}

#[test]
fn malformed_query_strings_are_refused_with_json_errors() {
    let daemon = Daemon::start("");
    let addr = daemon.addr;
    let before = snapshot(addr);
    let routes = routes();
    let (mut rng, seed) = Rng::seeded(0x5eed_0003);
    for index in 0..CASES {
        let route = rng.pick(&routes);
        let (what, query) = if route.broken.is_empty() || rng.next() % 3 == 0 {
            whole_query_breakage(&mut rng, route)
        } else {
            let (name, values) = rng.pick(&route.broken);
            let value = rng.pick(values);
            let mut parts = vec![format!("{name}={}", encode(value))];
            if rng.next() % 2 == 0 {
                parts.push(rng.pick(route.valid).to_string());
            }
            if rng.next() % 2 == 0 {
                parts.reverse();
            }
            (format!("{name} = {value:?}"), parts.join("&"))
        };
        let case = Case {
            what,
            method: route.method,
            path: format!("{}?{query}", route.path),
            headers: Vec::new(),
            body: Vec::new(),
        };
        assert_refused(addr, seed, index, &case);
    }
    assert_eq!(snapshot(addr), before);
    assert_healthy(&daemon);
}
