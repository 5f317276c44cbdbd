//! Generated bad input against the real daemon: hundreds of mutations of
//! valid bodies for every route that takes one, and of query strings for
//! every list. Each answer must be a 4xx with a JSON error; nothing may
//! change; the daemon must stay ready and never panic.
//!
//! Mutations are invalid by construction (a prefix of a JSON object, a byte
//! that is not UTF-8, a field of a type it never takes…), so a 2xx is a
//! bug, not luck. The generator is seeded: `HERALD_FUZZ_SEED=N` replays a
//! run, and a failure names its seed and case.

mod bodies;
mod queries;
mod segment;

use std::io::Write;
use std::net::SocketAddr;

use serde_json::{json, Value};

use crate::support::*;

/// SplitMix64: tiny, seedable, and good enough to pick mutations.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `HERALD_FUZZ_SEED` when set, else from `default`, so a
    /// run is reproducible either way.
    pub fn seeded(default: u64) -> (Rng, u64) {
        let seed = std::env::var("HERALD_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default);
        (Rng(seed), seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo) as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len())]
    }
}

/// One request to send and what made it.
pub struct Case {
    pub what: String,
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Sends `case` and checks that the answer is a JSON 4xx error.
pub fn assert_refused(addr: SocketAddr, seed: u64, index: usize, case: &Case) {
    let headers: Vec<(&str, &str)> = case
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let resp = try_request(addr, case.method, &case.path, &headers, &case.body)
        .unwrap_or_else(|e| panic!("{}: no answer: {e}", describe(seed, index, case)));
    let context = || {
        format!(
            "{}\n answered {} {}",
            describe(seed, index, case),
            resp.status,
            resp.text().chars().take(300).collect::<String>()
        )
    };
    assert!((400..500).contains(&resp.status), "{}", context());
    assert_eq!(
        resp.header("content-type"),
        Some("application/json"),
        "{}",
        context()
    );
    let body: Value =
        serde_json::from_slice(&resp.body).unwrap_or_else(|_| panic!("{}", context()));
    assert!(body["error"]["code"].is_string(), "{}", context());
}

fn describe(seed: u64, index: usize, case: &Case) -> String {
    let shown: String = String::from_utf8_lossy(&case.body)
        .chars()
        .take(300)
        .collect();
    format!(
        "seed {seed} case {index} ({}): {} {} {:?} body {shown:?}",
        case.what, case.method, case.path, case.headers
    )
}

/// Everything a refused request could have changed, as the API shows it.
pub fn snapshot(addr: SocketAddr) -> Vec<(String, Value)> {
    [
        "/v1/events?limit=1000",
        "/v1/endpoints",
        "/v1/deliveries?limit=1000",
        "/v1/emails?limit=1000",
        "/v1/suppressions?limit=1000",
        "/v1/keys",
        "/v1/event-types",
    ]
    .into_iter()
    .filter_map(|path| {
        let resp = get(addr, path);
        // On PostgreSQL, state that is not served there (keys, the
        // catalog) cannot be changed by any request either.
        if postgres_backend() && resp.status == 501 {
            assert_eq!(
                resp.json()["error"]["code"],
                "not_on_this_backend",
                "{path}"
            );
            return None;
        }
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        Some((path.to_owned(), resp.json()))
    })
    .collect()
}

/// The daemon still answers and never panicked.
pub fn assert_healthy(daemon: &Daemon) {
    let ready = get(daemon.addr, "/readyz");
    assert_eq!(ready.status, 200, "{}", ready.text());
    let panics: Vec<String> = daemon
        .logs()
        .into_iter()
        .filter(|l| l.contains("panicked"))
        .collect();
    assert!(
        panics.is_empty(),
        "the daemon panicked:\n{}",
        panics.join("\n")
    );
}

/// Where a mutation may put a value: a path of object keys and array
/// indexes into the body.
pub type FieldPath = &'static [&'static str];

/// A route that takes a body, with what is known to break it.
pub struct Route {
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub valid: Value,
    /// Values each field may never take.
    pub broken: Vec<(FieldPath, Vec<Value>)>,
    /// Fields whose absence alone refuses the body.
    pub required: Vec<FieldPath>,
    /// Objects that refuse a field they do not know.
    pub closed_objects: Vec<FieldPath>,
    /// Whether a body not sent as `application/json` is refused.
    pub checks_content_type: bool,
    /// The largest body the route reads.
    pub max_body: usize,
}

pub fn json_headers() -> Vec<(String, String)> {
    vec![("Content-Type".into(), "application/json".into())]
}

fn at<'a>(value: &'a mut Value, path: &[&str]) -> &'a mut Value {
    path.iter()
        .fold(value, |v, key| match key.parse::<usize>() {
            Ok(i) => &mut v[i],
            Err(_) => &mut v[*key],
        })
}

/// `[[…]]` or `{"a":{…}}`, `levels` deep, as text: a `Value` that deep
/// would overflow this thread's stack when dropped.
pub fn deep(levels: usize, objects: bool) -> String {
    if objects {
        format!("{}1{}", r#"{"a":"#.repeat(levels), "}".repeat(levels))
    } else {
        format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
    }
}

/// JSON text no parser may accept, whatever route it reaches.
fn broken_bytes(rng: &mut Rng, text: &[u8]) -> (String, Vec<u8>) {
    let mut bytes = text.to_vec();
    match rng.range(0, 4) {
        0 => {
            // A strict prefix of an object is never JSON (the empty body is
            // left out: some routes take it as "no options").
            let cut = rng.range(1, bytes.len());
            bytes.truncate(cut);
            (format!("truncated at {cut}"), bytes)
        }
        1 => {
            let at = rng.range(0, bytes.len() + 1);
            let bad = *rng.pick(&[&[0xff][..], &[0xc3], &[0x80], &[0xed, 0xa0, 0x80]]);
            bytes.splice(at..at, bad.iter().copied());
            (format!("invalid UTF-8 at {at}"), bytes)
        }
        2 => {
            // Control characters other than JSON's whitespace are invalid
            // inside strings and out.
            let at = rng.range(0, bytes.len() + 1);
            let byte = *rng.pick(&[0x00u8, 0x01, 0x08, 0x0b, 0x0c, 0x1b, 0x1f]);
            bytes.insert(at, byte);
            (format!("control byte {byte:#x} at {at}"), bytes)
        }
        _ => {
            let top = *rng.pick(&["[]", "\"text\"", "42", "null", "true", "[{}]", "1e999"]);
            (format!("top-level {top}"), top.as_bytes().to_vec())
        }
    }
}

/// One invalid body for `route`, with a description of the mutation.
pub fn mutate(rng: &mut Rng, route: &Route) -> Case {
    let mut body = route.valid.clone();
    let mut headers = route.headers.clone();
    let what = loop {
        match rng.range(0, 9) {
            0 => {
                let (what, bytes) = broken_bytes(rng, body.to_string().as_bytes());
                return finish(route, what, headers, bytes);
            }
            1 if !route.broken.is_empty() => {
                let (path, bads) = rng.pick(&route.broken);
                let bad = rng.pick(bads).clone();
                let what = format!("{path:?} = {}", short(&bad));
                *at(&mut body, path) = bad;
                break what;
            }
            2 if !route.closed_objects.is_empty() => {
                let path = *rng.pick(&route.closed_objects);
                let name = format!("zz_unknown_{}", rng.next() % 1000);
                let value = rng
                    .pick(&[json!(1), json!("x"), json!(null), json!({})])
                    .clone();
                at(&mut body, path)[&name] = value;
                break format!("unknown field {path:?}.{name}");
            }
            3 if !route.required.is_empty() => {
                let path = *rng.pick(&route.required);
                let (last, parent) = path.split_last().expect("paths are not empty");
                if let Some(object) = at(&mut body, parent).as_object_mut() {
                    object.remove(*last);
                }
                break format!("without {path:?}");
            }
            4 => {
                // Whitespace keeps the JSON valid: only the size is wrong.
                let over = route.max_body + rng.range(1, 4096);
                let mut bytes = body.to_string().into_bytes();
                bytes.resize(over, b' ');
                return finish(route, format!("{over} bytes"), headers, bytes);
            }
            5 if !route.broken.is_empty() => {
                let (path, _) = rng.pick(&route.broken);
                let levels = rng.range(200, 5000);
                *at(&mut body, path) = json!("@@DEEP@@");
                let text = body.to_string().replacen(
                    "\"@@DEEP@@\"",
                    &deep(levels, rng.next() % 2 == 0),
                    1,
                );
                let what = format!("{path:?} nested {levels} deep");
                return finish(route, what, headers, text.into_bytes());
            }
            6 if route.checks_content_type => {
                let kind = *rng.pick(&[
                    "text/plain",
                    "application/x-www-form-urlencoded",
                    "multipart/form-data; boundary=x",
                    "application/jsonx",
                    "",
                ]);
                headers.retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
                if !kind.is_empty() {
                    headers.push(("Content-Type".into(), kind.into()));
                }
                break format!("content type {kind:?}");
            }
            7 if route.closed_objects.contains(&&[][..]) => {
                // A repeated key: serde refuses it for a struct.
                let text = body.to_string();
                let first = route.valid.as_object().and_then(|o| o.iter().next());
                if let Some((key, value)) = first {
                    let bytes = format!("{{\"{key}\":{value},{}", &text[1..]).into_bytes();
                    return finish(route, format!("`{key}` twice"), headers, bytes);
                }
            }
            _ => {}
        }
    };
    finish(route, what, headers, body.to_string().into_bytes())
}

/// The case that sends `body` with `headers` to `route`.
pub fn finish(route: &Route, what: String, headers: Vec<(String, String)>, body: Vec<u8>) -> Case {
    Case {
        what,
        method: route.method,
        path: route.path.clone(),
        headers,
        body,
    }
}

fn short(v: &Value) -> String {
    v.to_string().chars().take(60).collect()
}

/// Wrong-typed values for a field that takes a string.
pub fn not_strings() -> Vec<Value> {
    vec![
        json!(42),
        json!(-1.5e300),
        json!(18_446_744_073_709_551_615u64),
        json!(true),
        json!([]),
        json!({}),
        json!(["a"]),
        json!({"a": "b"}),
    ]
}

/// Wrong-typed values for a field that takes an object.
pub fn not_objects() -> Vec<Value> {
    vec![
        json!(42),
        json!("text"),
        json!(true),
        json!([1, 2]),
        json!(""),
    ]
}

/// Wrong-typed values for a field that takes a small unsigned number.
pub fn not_numbers() -> Vec<Value> {
    vec![
        json!("5"),
        json!(-1),
        json!(1.5),
        json!(true),
        json!([]),
        json!({}),
        json!(1e300),
        json!(u64::MAX),
    ]
}

/// Strings no text field should take: NUL, CR/LF, ANSI escapes.
pub fn control_strings() -> Vec<Value> {
    vec![
        json!("a\u{0}b"),
        json!("a\r\nBcc: x@example.com"),
        json!("\u{1b}[31m"),
        json!("\n"),
    ]
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}
