//! The JSON body a webhook carries, per payload version.

use crate::clock;
use crate::events::ID_PREFIX as EVENT_ID_PREFIX;
use crate::ids;
use crate::store::records::EventRecord;

/// Version 1: `{"id","type","source","version","seq","timestamp","tenant","data"}`.
/// `timestamp` is when the event occurred; `seq` its position in the log, so
/// receivers can order what arrives out of order; `source` lets a receiver
/// that takes tracked calls tell them from server events of the same name.
pub fn v1(seq: u64, event: &EventRecord) -> String {
    let mut out = String::with_capacity(160 + event.data.len());
    out.push_str(r#"{"id":""#);
    out.push_str(&ids::format(EVENT_ID_PREFIX, event.id));
    out.push_str(r#"","type":"#);
    push_json_string(&mut out, &event.event_type);
    out.push_str(r#","source":""#);
    out.push_str(event.source.as_str());
    out.push_str(r#"","version":1,"seq":"#);
    out.push_str(&seq.to_string());
    out.push_str(r#","timestamp":""#);
    out.push_str(&clock::format_rfc3339(event.occurred_at_ms));
    out.push_str(r#"","tenant":"#);
    match &event.tenant {
        Some(t) => push_json_string(&mut out, t),
        None => out.push_str("null"),
    }
    out.push_str(r#","data":"#);
    // Stored as the JSON text the client sent, already validated.
    out.push_str(&event.data);
    out.push('}');
    out
}

fn push_json_string(out: &mut String, text: &str) {
    out.push_str(&serde_json::Value::from(text).to_string());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::EventSource;

    #[test]
    fn v1_is_the_documented_shape() {
        let event = EventRecord {
            id: 7,
            event_type: "invoice.paid".into(),
            tenant: Some("acme".into()),
            idempotency_key: None,
            occurred_at_ms: 1_700_000_000_000,
            received_at_ms: 1_700_000_000_001,
            data: r#"{"amount":4200}"#.into(),
            source: EventSource::Api,
        };
        let body: serde_json::Value = serde_json::from_str(&v1(42, &event)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "id": ids::format(EVENT_ID_PREFIX, 7),
                "type": "invoice.paid",
                "source": "api",
                "version": 1,
                "seq": 42,
                "timestamp": "2023-11-14T22:13:20.000Z",
                "tenant": "acme",
                "data": {"amount": 4200},
            })
        );
    }
}
