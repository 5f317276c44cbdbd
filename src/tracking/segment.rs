//! The Segment HTTP Tracking API's messages: which calls are valid, how a
//! batch's shared `context` merges into its items, and how timestamps are
//! corrected for client clock skew. Pure functions over parsed JSON.

use serde_json::{Map, Value};

use crate::clock;

pub const MAX_MESSAGE_ID_CHARS: usize = 100;
/// Events further in the future than this are refused: a wrong clock, not
/// a scheduled fact.
pub const MAX_FUTURE_MS: i64 = 24 * 3600 * 1000;
const MAX_ID_CHARS: usize = 256;
const MAX_EVENT_NAME_CHARS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Identify,
    Track,
    Page,
    Screen,
    Group,
    Alias,
}

impl Call {
    pub fn parse(name: &str) -> Option<Call> {
        Some(match name {
            "identify" => Call::Identify,
            "track" => Call::Track,
            "page" => Call::Page,
            "screen" => Call::Screen,
            "group" => Call::Group,
            "alias" => Call::Alias,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Call::Identify => "identify",
            Call::Track => "track",
            Call::Page => "page",
            Call::Screen => "screen",
            Call::Group => "group",
            Call::Alias => "alias",
        }
    }
}

/// Why one message was refused; `field` names the offending key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub field: &'static str,
    pub message: String,
}

fn refuse(field: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        field,
        message: message.into(),
    }
}

/// A validated call, ready for the log.
#[derive(Debug, Clone)]
pub struct Tracked {
    pub call: Call,
    /// The log's event type: the event name for `track`, the call otherwise.
    pub event_type: String,
    pub message_id: String,
    /// False when Herald made the id up: such a call cannot be deduplicated.
    pub message_id_given: bool,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// `alias`: the id being linked to `user_id`.
    pub previous_id: Option<String>,
    pub timestamp_ms: i64,
    /// UTM fields from `context.campaign`, when any is set.
    pub campaign: Option<Campaign>,
    /// The whole message as stored: what was sent plus `receivedAt`,
    /// `timestamp`, `messageId` and `source`.
    pub body: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Campaign {
    pub source: String,
    pub medium: String,
    pub name: String,
}

/// Segment ids are strings, but clients send numbers too.
fn id_field(body: &Map<String, Value>, key: &'static str) -> Result<Option<String>, Refused> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => {
            if s.chars().count() > MAX_ID_CHARS || s.chars().any(char::is_control) {
                Err(refuse(
                    key,
                    format!("must be at most {MAX_ID_CHARS} characters without control characters"),
                ))
            } else {
                Ok(Some(s.clone()))
            }
        }
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(refuse(key, "must be a string")),
    }
}

/// The person a stored call of `tenant` was indexed under (see `validate`).
pub fn stored_person(tenant: Option<&str>, data: &str) -> Option<u64> {
    let body: Map<String, Value> = serde_json::from_str(data).ok()?;
    let user_id = id_field(&body, "userId").ok()?;
    let anonymous_id = id_field(&body, "anonymousId").ok()?;
    crate::store::tracking::person_of(tenant, user_id.as_deref(), anonymous_id.as_deref())
}

/// RFC 3339, or ISO 8601 without an offset (taken as UTC), as some clients
/// send.
pub fn parse_time(text: &str) -> Option<i64> {
    clock::parse_rfc3339(text).or_else(|| {
        let has_offset = text.ends_with('Z')
            || text
                .rsplit_once('T')
                .is_some_and(|(_, t)| t.contains('+') || t.contains('-'));
        (!has_offset)
            .then(|| clock::parse_rfc3339(&format!("{text}Z")))
            .flatten()
    })
}

fn time_field(body: &Map<String, Value>, key: &'static str) -> Result<Option<i64>, Refused> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_time(s)
            .map(Some)
            .ok_or_else(|| refuse(key, "is not an ISO 8601 timestamp")),
        Some(_) => Err(refuse(key, "must be an ISO 8601 string")),
    }
}

fn object_field(body: &Map<String, Value>, key: &'static str) -> Result<(), Refused> {
    match body.get(key) {
        None | Some(Value::Null) | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(refuse(key, "must be an object")),
    }
}

fn campaign_of(body: &Map<String, Value>) -> Option<Campaign> {
    let campaign = body.get("context")?.get("campaign")?.as_object()?;
    let text = |k: &str| {
        campaign
            .get(k)
            .and_then(Value::as_str)
            // Control characters carry no campaign and a NUL would not fit
            // a PostgreSQL text column: dropped on both backends alike.
            .map(|s| {
                s.chars()
                    .filter(|c| !c.is_control())
                    .take(200)
                    .collect::<String>()
            })
            .unwrap_or_default()
    };
    let c = Campaign {
        source: text("source"),
        medium: text("medium"),
        name: text("name"),
    };
    (c != Campaign::default()).then_some(c)
}

/// Merges a batch's top-level `context` and `integrations` into an item;
/// the item's own keys win.
pub fn merge_shared(item: &mut Map<String, Value>, shared: &Map<String, Value>) {
    for key in ["context", "integrations"] {
        let Some(Value::Object(outer)) = shared.get(key) else {
            continue;
        };
        match item.get_mut(key) {
            Some(Value::Object(inner)) => {
                for (k, v) in outer {
                    inner.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            None | Some(Value::Null) => {
                item.insert(key.to_owned(), Value::Object(outer.clone()));
            }
            Some(_) => {}
        }
    }
}

/// Validates one call and computes its timestamps. `call` is fixed by the
/// route, or `None` for a batch item, which names its own `type`.
/// `sent_at_ms` is the batch's `sentAt` when the item has none.
pub fn validate(
    mut body: Map<String, Value>,
    call: Option<Call>,
    batch_sent_at: Option<&Value>,
    source: &str,
    received_at_ms: i64,
    new_message_id: impl FnOnce() -> String,
) -> Result<Tracked, Refused> {
    let call = match call {
        Some(c) => c,
        None => match body.get("type") {
            Some(Value::String(t)) => Call::parse(t).ok_or_else(|| {
                refuse(
                    "type",
                    "must be identify, track, page, screen, group or alias",
                )
            })?,
            _ => return Err(refuse("type", "is required in a batch item")),
        },
    };
    body.insert("type".into(), call.name().into());
    if let (None, Some(sent_at)) = (body.get("sentAt"), batch_sent_at) {
        body.insert("sentAt".into(), sent_at.clone());
    }
    // Authentication happened at the request; the key is not data.
    body.remove("writeKey");

    let user_id = id_field(&body, "userId")?;
    let anonymous_id = id_field(&body, "anonymousId")?;
    let mut previous_id = None;
    match call {
        Call::Alias => {
            previous_id = id_field(&body, "previousId")?;
            if previous_id.is_none() {
                return Err(refuse("previousId", "alias needs previousId"));
            }
            if user_id.is_none() {
                return Err(refuse("userId", "alias needs userId"));
            }
        }
        _ if user_id.is_none() && anonymous_id.is_none() => {
            return Err(refuse("userId", "every call needs userId or anonymousId"));
        }
        _ => {}
    }
    let event_type = match call {
        Call::Track => match body.get("event") {
            Some(Value::String(e)) if !e.trim().is_empty() => {
                if e.chars().count() > MAX_EVENT_NAME_CHARS || e.chars().any(char::is_control) {
                    return Err(refuse(
                        "event",
                        format!("must be at most {MAX_EVENT_NAME_CHARS} characters without control characters"),
                    ));
                }
                e.clone()
            }
            _ => return Err(refuse("event", "track needs an event name")),
        },
        Call::Group => {
            if id_field(&body, "groupId")?.is_none() {
                return Err(refuse("groupId", "group needs groupId"));
            }
            call.name().to_owned()
        }
        _ => call.name().to_owned(),
    };
    for key in ["properties", "traits", "context", "integrations"] {
        object_field(&body, key)?;
    }

    let (message_id, message_id_given) = match body.get("messageId") {
        None | Some(Value::Null) => (new_message_id(), false),
        Some(Value::String(id)) if !id.is_empty() => {
            if id.chars().count() > MAX_MESSAGE_ID_CHARS || id.chars().any(char::is_control) {
                return Err(refuse(
                    "messageId",
                    format!("must be at most {MAX_MESSAGE_ID_CHARS} characters"),
                ));
            }
            (id.clone(), true)
        }
        Some(_) => return Err(refuse("messageId", "must be a non-empty string")),
    };

    // `timestamp` given by a server-side library is the original time.
    let original = match time_field(&body, "originalTimestamp")? {
        Some(t) => Some(t),
        None => time_field(&body, "timestamp")?,
    };
    let sent_at = time_field(&body, "sentAt")?;
    let timestamp_ms = match (original, sent_at) {
        (Some(original), Some(sent)) => received_at_ms - (sent - original),
        (Some(original), None) => original,
        (None, _) => received_at_ms,
    };
    if timestamp_ms > received_at_ms + MAX_FUTURE_MS {
        return Err(refuse("timestamp", "is more than 24 hours in the future"));
    }
    if timestamp_ms < 0 {
        return Err(refuse("timestamp", "is before 1970"));
    }
    if let Some(original) = original {
        body.insert(
            "originalTimestamp".into(),
            clock::format_rfc3339(original).into(),
        );
    }
    body.insert(
        "timestamp".into(),
        clock::format_rfc3339(timestamp_ms).into(),
    );
    body.insert(
        "receivedAt".into(),
        clock::format_rfc3339(received_at_ms).into(),
    );
    body.insert("messageId".into(), message_id.clone().into());
    body.insert("source".into(), source.into());
    let campaign = campaign_of(&body);
    Ok(Tracked {
        call,
        event_type,
        message_id,
        message_id_given,
        user_id,
        anonymous_id,
        previous_id,
        timestamp_ms,
        campaign,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    const NOW: i64 = 1_800_000_000_000;

    fn check(v: Value, call: Option<Call>) -> Result<Tracked, Refused> {
        validate(obj(v), call, None, "web", NOW, || "gen-1".into())
    }

    #[test]
    fn each_call_has_its_required_fields() {
        assert!(check(
            json!({"userId": "u1", "event": "Signed Up"}),
            Some(Call::Track)
        )
        .is_ok());
        let cases = [
            (json!({"event": "x"}), Some(Call::Track), "userId"),
            (json!({"userId": "u1"}), Some(Call::Track), "event"),
            (
                json!({"userId": "u1", "event": ""}),
                Some(Call::Track),
                "event",
            ),
            (json!({"anonymousId": "a"}), Some(Call::Group), "groupId"),
            (json!({"userId": "u1"}), Some(Call::Alias), "previousId"),
            (json!({"previousId": "a"}), Some(Call::Alias), "userId"),
            (json!({"userId": "u1"}), None, "type"),
            (json!({"userId": "u1", "type": "jump"}), None, "type"),
            (
                json!({"userId": "u1", "messageId": "x".repeat(101)}),
                Some(Call::Page),
                "messageId",
            ),
            (json!({"userId": ["u1"]}), Some(Call::Page), "userId"),
            (
                json!({"userId": "u1", "properties": 3}),
                Some(Call::Page),
                "properties",
            ),
            (
                json!({"userId": "u1", "timestamp": "soon"}),
                Some(Call::Page),
                "timestamp",
            ),
        ];
        for (body, call, field) in cases {
            let err = check(body.clone(), call).unwrap_err();
            assert_eq!(err.field, field, "{body}");
        }
        let alias = check(
            json!({"previousId": "anon-1", "userId": "u1"}),
            Some(Call::Alias),
        )
        .unwrap();
        assert_eq!(alias.previous_id.as_deref(), Some("anon-1"));
        let numeric = check(json!({"userId": 42}), Some(Call::Identify)).unwrap();
        assert_eq!(numeric.user_id.as_deref(), Some("42"));
    }

    #[test]
    fn clock_skew_is_corrected_with_sent_at() {
        // The client's clock is 10 minutes fast: it sent 2 s after the call.
        let t = check(
            json!({"userId": "u", "event": "e", "timestamp": "2027-01-15T08:10:00Z",
                   "sentAt": "2027-01-15T08:10:02Z"}),
            Some(Call::Track),
        )
        .unwrap();
        assert_eq!(t.timestamp_ms, NOW - 2000);
        assert_eq!(t.body["originalTimestamp"], "2027-01-15T08:10:00.000Z");
        assert_eq!(t.body["receivedAt"], clock::format_rfc3339(NOW));
        // Without sentAt the given time stands.
        let t = check(
            json!({"userId": "u", "timestamp": "2026-01-01T00:00:00"}),
            Some(Call::Page),
        )
        .unwrap();
        assert_eq!(
            clock::format_rfc3339(t.timestamp_ms),
            "2026-01-01T00:00:00.000Z"
        );
        // Without either, the time of receipt.
        let t = check(json!({"userId": "u"}), Some(Call::Page)).unwrap();
        assert_eq!(t.timestamp_ms, NOW);
        let future = clock::format_rfc3339(NOW + MAX_FUTURE_MS + 60_000);
        let err = check(
            json!({"userId": "u", "timestamp": future}),
            Some(Call::Page),
        )
        .unwrap_err();
        assert_eq!(err.field, "timestamp");
    }

    #[test]
    fn batch_context_merges_under_the_item() {
        let mut item = obj(json!({"context": {"ip": "1.2.3.4"}}));
        let shared = obj(
            json!({"context": {"ip": "9.9.9.9", "library": {"name": "x"}},
                                 "integrations": {"All": true}}),
        );
        merge_shared(&mut item, &shared);
        assert_eq!(item["context"]["ip"], "1.2.3.4");
        assert_eq!(item["context"]["library"]["name"], "x");
        assert_eq!(item["integrations"]["All"], true);
    }

    #[test]
    fn message_ids_and_campaigns() {
        let t = check(
            json!({"userId": "u", "context": {"campaign": {"source": "google", "medium": "cpc"}}}),
            Some(Call::Page),
        )
        .unwrap();
        assert_eq!(
            (t.message_id.as_str(), t.message_id_given),
            ("gen-1", false)
        );
        let c = t.campaign.unwrap();
        assert_eq!(
            (c.source.as_str(), c.medium.as_str(), c.name.as_str()),
            ("google", "cpc", "")
        );
        let t = check(json!({"userId": "u", "messageId": "m-1"}), Some(Call::Page)).unwrap();
        assert_eq!((t.message_id.as_str(), t.message_id_given), ("m-1", true));
        assert!(t.body.get("writeKey").is_none());
    }
}
