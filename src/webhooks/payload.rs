//! The JSON body a webhook carries, per payload version.

use crate::clock;
use crate::events::ID_PREFIX as EVENT_ID_PREFIX;
use crate::ids;
use crate::store::records::EventRecord;

/// The payload version of `event_type` an endpoint with `pins` receives,
/// among the versions an event (or a catalogued type) carries, ascending:
/// the pinned one; failing that the newest below it, so a receiver never
/// sees a version newer than it moved to while an older one is there;
/// failing that the oldest. Unpinned, the newest.
pub fn version_for(pins: &[(String, u32)], event_type: &str, carried: &[u32]) -> u32 {
    let newest = carried.iter().copied().max().unwrap_or(1);
    let Some(pin) = pins
        .iter()
        .find(|(pinned, _)| pinned == event_type)
        .map(|(_, version)| *version)
    else {
        return newest;
    };
    carried
        .iter()
        .copied()
        .filter(|v| *v <= pin)
        .max()
        .or_else(|| carried.iter().copied().min())
        .unwrap_or(newest)
}

/// The body an endpoint pinned by `pins` receives for `event`.
pub fn for_endpoint(seq: u64, event: &EventRecord, pins: &[(String, u32)]) -> String {
    let carried: Vec<u32> = event.versions().collect();
    let version = version_for(pins, &event.event_type, &carried);
    match event.data_in(version) {
        Some(data) => v1(seq, event, version, data),
        None => v1(seq, event, event.data_version, &event.data),
    }
}

/// Version 1: `{"id","type","source","version","data_version","seq",
/// "timestamp","tenant","data"}`. `timestamp` is when the event occurred;
/// `seq` its position in the log, so receivers can order what arrives out
/// of order; `source` lets a receiver that takes tracked calls tell them
/// from server events of the same name; `data_version` says which payload
/// version `data` is in (`version` is the envelope's own).
pub fn v1(seq: u64, event: &EventRecord, data_version: u32, data: &str) -> String {
    let mut out = String::with_capacity(180 + data.len());
    out.push_str(r#"{"id":""#);
    out.push_str(&ids::format(EVENT_ID_PREFIX, event.id));
    out.push_str(r#"","type":"#);
    push_json_string(&mut out, &event.event_type);
    out.push_str(r#","source":""#);
    out.push_str(event.source.as_str());
    out.push_str(r#"","version":1,"data_version":"#);
    out.push_str(&data_version.to_string());
    out.push_str(r#","seq":"#);
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
    out.push_str(data);
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
            data_version: 1,
            older_versions: Vec::new(),
        };
        let body: serde_json::Value = serde_json::from_str(&for_endpoint(42, &event, &[])).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "id": ids::format(EVENT_ID_PREFIX, 7),
                "type": "invoice.paid",
                "source": "api",
                "version": 1,
                "data_version": 1,
                "seq": 42,
                "timestamp": "2023-11-14T22:13:20.000Z",
                "tenant": "acme",
                "data": {"amount": 4200},
            })
        );
    }

    #[test]
    fn an_endpoint_gets_its_pinned_version_else_the_newest() {
        let pins = vec![("a".to_owned(), 2)];
        assert_eq!(version_for(&pins, "a", &[1, 2, 3]), 2);
        assert_eq!(version_for(&pins, "b", &[1, 2, 3]), 3);
        assert_eq!(version_for(&[], "a", &[1, 2, 3]), 3);
        // Not carried: the newest below the pin, else the oldest.
        assert_eq!(version_for(&pins, "a", &[1, 3]), 1);
        assert_eq!(version_for(&pins, "a", &[3, 4]), 3);
        assert_eq!(version_for(&pins, "a", &[1]), 1);

        let event = EventRecord {
            id: 1,
            event_type: "a".into(),
            tenant: None,
            idempotency_key: None,
            occurred_at_ms: 0,
            received_at_ms: 0,
            data: r#"{"v":3}"#.into(),
            source: EventSource::Api,
            data_version: 3,
            older_versions: vec![(1, r#"{"v":1}"#.into()), (2, r#"{"v":2}"#.into())],
        };
        let body = |pins: &[(String, u32)]| -> serde_json::Value {
            serde_json::from_str(&for_endpoint(1, &event, pins)).unwrap()
        };
        let pinned = body(&pins);
        assert_eq!(
            (pinned["data_version"].clone(), pinned["data"]["v"].clone()),
            (2.into(), 2.into())
        );
        let newest = body(&[]);
        assert_eq!(
            (newest["data_version"].clone(), newest["data"]["v"].clone()),
            (3.into(), 3.into())
        );
    }
}
