//! The event the ingest benches post: the same invoice the ceiling's wrk
//! scripts send, alone or in batches, each with an idempotency key of its
//! own series.

use std::net::SocketAddr;

use super::http;
use super::load::Conversation;

/// One connection's events, each with an idempotency key of its own series.
pub struct Poster {
    pub addr: SocketAddr,
    pub events_per_request: usize,
    pub key_prefix: String,
    /// Events sent so far: the key series' next number.
    pub sent: u64,
}

impl Conversation for Poster {
    async fn next_request(&mut self) -> Option<Vec<u8>> {
        let path = if self.events_per_request == 1 {
            "/v1/events"
        } else {
            "/v1/events/batch"
        };
        let body = request_body(&self.key_prefix, &mut self.sent, self.events_per_request);
        Some(http::post(self.addr, path, "", &body))
    }
}

/// The same invoice event the ceiling's wrk scripts send, each with an
/// idempotency key unique to this run, connection and request.
fn request_body(prefix: &str, sent: &mut u64, events: usize) -> String {
    let mut one = |out: &mut String| {
        *sent += 1;
        out.push_str(&format!(
            r#"{{"type":"invoice.paid","tenant":"acme","data":{{"invoice":"in_1NzQ8x2eZvKYlo2C","amount":4200,"currency":"eur","customer":"cus_9s6XKzkNRiz8i3","lines":[{{"sku":"pro-monthly","qty":1}}],"paid_at":"2026-11-22T10:00:00Z"}},"idempotency_key":"{prefix}-{sent}"}}"#
        ));
    };
    let mut body = String::with_capacity(320 * events + 16);
    if events == 1 {
        one(&mut body);
    } else {
        body.push_str(r#"{"events":["#);
        for i in 0..events {
            if i > 0 {
                body.push(',');
            }
            one(&mut body);
        }
        body.push_str("]}");
    }
    body
}
