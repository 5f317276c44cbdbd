//! From an HTTP request to calls ready for the log: write-key
//! authentication, gzip, size limits, the batch envelope; and the writer
//! operation that deduplicates on `messageId` and appends with every index.

use std::io::Read;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hyper::header::{AUTHORIZATION, CONTENT_ENCODING};
use hyper::HeaderMap;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::segment::{self, Call, Tracked};
use super::settings::TrackingSettings;
use super::txn::TrackTxn;
use crate::ids;
use crate::store::log::{IndexKeys, NewEventRow};
use crate::store::records::{EventSource, ProfileRecord};
use crate::store::tracking::{message_key, person_of, tracked_type_key, PersonKind, TrackedRow};
use crate::store::StoreError;

/// A refused request; nothing of it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Unauthorized,
    TooLarge(String),
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Refusal {
    Refusal::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// The write key from `Authorization` (Basic with the key as user, with or
/// without the colon; or Bearer), if the request carries one.
pub fn header_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = String::from_utf8(STANDARD.decode(rest).ok()?).ok()?;
        let user = decoded.split_once(':').map_or(decoded.as_str(), |(u, _)| u);
        Some(user.to_owned())
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(rest.to_owned())
    } else {
        None
    }
}

/// Inflates a gzip body, refusing more than `limit` bytes of output: a
/// small compressed body must not become a large allocation.
pub fn decode_body(headers: &HeaderMap, body: &[u8], limit: usize) -> Result<Vec<u8>, Refusal> {
    let encoding = headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(body.to_vec()),
        Some("gzip") | Some("x-gzip") => {
            let mut out = Vec::with_capacity(body.len() * 4);
            flate2::read::MultiGzDecoder::new(body)
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| invalid("body", format!("not valid gzip: {e}")))?;
            if out.len() > limit {
                return Err(Refusal::TooLarge(format!(
                    "the decompressed body exceeds {limit} bytes"
                )));
            }
            Ok(out)
        }
        Some(other) => Err(invalid(
            "content-encoding",
            format!("`{other}` is not supported; send gzip or nothing"),
        )),
    }
}

/// A call validated on the request's thread, with its stored JSON already
/// serialised so the writer only copies bytes.
pub struct Prepared {
    /// The call without its body, which is already in `data`: dropping a
    /// parsed JSON tree is work the writer thread should not do.
    pub tracked: Tracked,
    pub data: String,
    pub person: u64,
    /// `message_key`, or 0 when Herald made the messageId up.
    pub message_key: u128,
    /// Identify's traits (top level over `context.traits`).
    pub traits: Option<Map<String, Value>>,
    /// The tenant of the source, whose users the call's ids name.
    pub tenant: Option<String>,
    /// The log's index keys: the type's hash and the tenant's.
    pub index: IndexKeys,
    /// `tracked_type_key` of the tenant and the type's hash.
    pub type_key: u64,
}

/// Identify traits: some clients (rudder-sdk) send them only in
/// `context.traits`; top-level traits win where both name a key.
fn identify_traits(t: &Tracked) -> Option<Map<String, Value>> {
    if t.call != Call::Identify {
        return None;
    }
    let mut merged = Map::new();
    let nested = t.body.get("context").and_then(|c| c.get("traits"));
    for source in [nested, t.body.get("traits")] {
        if let Some(Value::Object(traits)) = source {
            merged.extend(traits.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    (!merged.is_empty()).then_some(merged)
}

/// Parses a request body for `call` (`None`: `/v1/batch`) into calls of
/// `source`. Returns the body's `writeKey`, if any, for authentication.
pub struct Parsed {
    pub body_key: Option<String>,
    pub items: Vec<Map<String, Value>>,
    pub shared: Map<String, Value>,
}

#[derive(serde::Deserialize)]
struct BatchEnvelope<'a> {
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

pub fn parse(
    call: Option<Call>,
    body: &[u8],
    limits: &TrackingSettings,
) -> Result<Parsed, Refusal> {
    let json_error = |e: serde_json::Error| invalid("body", format!("not a JSON object: {e}"));
    match call {
        Some(_) => {
            if body.len() > limits.max_event_bytes {
                return Err(Refusal::TooLarge(format!(
                    "a call may be at most {} bytes",
                    limits.max_event_bytes
                )));
            }
            let mut item: Map<String, Value> = serde_json::from_slice(body).map_err(json_error)?;
            let body_key = match item.remove("writeKey") {
                Some(Value::String(k)) => Some(k),
                _ => None,
            };
            Ok(Parsed {
                body_key,
                items: vec![item],
                shared: Map::new(),
            })
        }
        None => {
            let envelope: BatchEnvelope<'_> = serde_json::from_slice(body)
                .map_err(|e| invalid("batch", format!("expected {{\"batch\": [...]}}: {e}")))?;
            if envelope.batch.len() > limits.max_batch_events {
                return Err(Refusal::TooLarge(format!(
                    "a batch may hold at most {} calls",
                    limits.max_batch_events
                )));
            }
            let mut shared = envelope.rest;
            let body_key = match shared.remove("writeKey") {
                Some(Value::String(k)) => Some(k),
                _ => None,
            };
            let mut items = Vec::with_capacity(envelope.batch.len());
            for (i, raw) in envelope.batch.iter().enumerate() {
                if raw.get().len() > limits.max_event_bytes {
                    return Err(Refusal::TooLarge(format!(
                        "batch[{i}] exceeds {} bytes",
                        limits.max_event_bytes
                    )));
                }
                let item: Map<String, Value> = serde_json::from_str(raw.get())
                    .map_err(|_| invalid(format!("batch[{i}]"), "must be an object"))?;
                items.push(item);
            }
            Ok(Parsed {
                body_key,
                items,
                shared,
            })
        }
    }
}

/// Validates every call of `source` (bound to `tenant`, if any); one bad
/// call refuses the request.
pub fn prepare(
    call: Option<Call>,
    parsed: Parsed,
    source: &str,
    tenant: Option<&str>,
    received_at_ms: i64,
) -> Result<Vec<Prepared>, Refusal> {
    let batch_sent_at = parsed.shared.get("sentAt").cloned();
    let mut out = Vec::with_capacity(parsed.items.len());
    for (i, mut item) in parsed.items.into_iter().enumerate() {
        segment::merge_shared(&mut item, &parsed.shared);
        let mut tracked = segment::validate(
            item,
            call,
            batch_sent_at.as_ref(),
            source,
            received_at_ms,
            || format!("herald-{}", uuid::Uuid::from_u128(ids::new_id())),
        )
        .map_err(|r| {
            let field = if call.is_none() {
                format!("batch[{i}].{}", r.field)
            } else {
                r.field.to_owned()
            };
            invalid(field, r.message)
        })?;
        let person = person_of(
            tenant,
            tracked.user_id.as_deref(),
            tracked.anonymous_id.as_deref(),
        )
        .unwrap_or_default();
        let index = IndexKeys::of(&tracked.event_type, tenant);
        let traits = identify_traits(&tracked);
        let body = std::mem::take(&mut tracked.body);
        // Into a buffer: `Value`'s `Display` writes each piece through a
        // formatter adapter, which showed in profiles of batched ingest.
        let data = serde_json::to_string(&body).expect("a JSON map always serialises");
        let message_key = if tracked.message_id_given {
            message_key(source, &tracked.message_id)
        } else {
            0
        };
        out.push(Prepared {
            tracked,
            data,
            person,
            message_key,
            traits,
            tenant: tenant.map(str::to_owned),
            index,
            type_key: tracked_type_key(tenant, index.type_hash),
        });
    }
    Ok(out)
}

/// What became of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub seq: u64,
    /// The `messageId` was seen within the window: nothing new was written.
    pub duplicate: bool,
}

/// Appends `calls` in order, skipping `messageId`s seen (per source) since
/// `not_before_ms`, with every index and identity change, in the caller's
/// transaction (the redb writer's, or one on PostgreSQL).
pub fn append<T: TrackTxn + ?Sized>(
    txn: &mut T,
    calls: Vec<Prepared>,
    not_before_ms: i64,
    now_ms: i64,
) -> Result<Vec<Stored>, StoreError> {
    let mut out = Vec::with_capacity(calls.len());
    for call in calls {
        let t = &call.tracked;
        if call.message_key != 0 {
            if let Some(seq) = txn.tracked_message(call.message_key, not_before_ms)? {
                out.push(Stored {
                    seq,
                    duplicate: true,
                });
                continue;
            }
        }
        let row = NewEventRow {
            event_type: t.event_type.clone(),
            tenant: call.tenant,
            idempotency_key: None,
            occurred_at_ms: Some(t.timestamp_ms),
            data: call.data,
            data_version: 1,
            older_versions: Vec::new(),
            source: EventSource::Tracking,
            fingerprint: 0,
            nonce: ids::new_id() as u16,
            index: call.index,
        };
        let (seq, record) = txn.append_event(row, now_ms)?;
        let campaign = t
            .campaign
            .as_ref()
            .map(|c| (c.source.as_str(), c.medium.as_str(), c.name.as_str()));
        txn.index_tracked(&TrackedRow {
            seq,
            received_ms: record.received_at_ms,
            message_key: call.message_key,
            person: call.person,
            type_key: call.type_key,
            timestamp_ms: t.timestamp_ms,
            campaign,
        })?;
        let tenant = record.tenant.as_deref();
        update_identity(txn, t, tenant, call.traits, record.received_at_ms)?;
        out.push(Stored {
            seq,
            duplicate: false,
        });
    }
    Ok(out)
}

/// Identify merges traits into the profile; identify or any call with both
/// ids, and alias, link the other id to the userId, among `tenant`'s users.
fn update_identity<T: TrackTxn + ?Sized>(
    tables: &mut T,
    t: &Tracked,
    tenant: Option<&str>,
    traits: Option<Map<String, Value>>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let Some(user_id) = t.user_id.as_deref() else {
        return Ok(());
    };
    let linked = match t.call {
        Call::Alias => t.previous_id.as_deref(),
        _ => t.anonymous_id.as_deref(),
    };
    let newly_linked = match linked {
        Some(other) => {
            let kinds: &[PersonKind] = match t.call {
                Call::Alias => &[PersonKind::Anonymous, PersonKind::User],
                _ => &[PersonKind::Anonymous],
            };
            tables.link(tenant, other, user_id, kinds)?
        }
        None => false,
    };
    if !newly_linked && traits.is_none() && t.call != Call::Identify {
        return Ok(());
    }
    let mut profile = tables.profile(tenant, user_id)?.unwrap_or(ProfileRecord {
        traits: "{}".to_owned(),
        linked_ids: Vec::new(),
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
    });
    if let Some(new) = traits {
        let mut merged: Map<String, Value> =
            serde_json::from_str(&profile.traits).unwrap_or_default();
        merged.extend(new);
        profile.traits = Value::Object(merged).to_string();
    }
    if let Some(other) = linked.filter(|o| *o != user_id) {
        if !profile.linked_ids.iter().any(|l| l == other) {
            profile.linked_ids.push(other.to_owned());
        }
    }
    profile.updated_at_ms = now_ms;
    tables.put_profile(tenant, user_id, &profile)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tracking::{validate_tracking, TrackingSection};
    use crate::store::recent_tracked::GENERATION;
    use crate::store::tracking::{person_hash, PersonKind};
    use crate::store::{Store, Writer};

    const USERS: usize = 100;

    fn batch(range: std::ops::Range<usize>) -> Vec<u8> {
        let items: Vec<Value> = range
            .map(|i| {
                serde_json::json!({"type": "track", "userId": format!("u{}", i % USERS),
                                   "event": "e", "messageId": format!("m{i}")})
            })
            .collect();
        serde_json::json!({ "batch": items })
            .to_string()
            .into_bytes()
    }

    fn send(writer: &Writer, rt: &tokio::runtime::Runtime, total: usize) -> Vec<Stored> {
        let limits = validate_tracking(TrackingSection {
            max_batch_events: 1000,
            ..TrackingSection::default()
        })
        .unwrap();
        let mut out = Vec::new();
        for start in (0..total).step_by(1000) {
            let body = batch(start..(start + 1000).min(total));
            let parsed = parse(None, &body, &limits).unwrap();
            let calls = prepare(None, parsed, "src", None, crate::clock::now_ms()).unwrap();
            let stored = rt
                .block_on(writer.write(move |txn| append(txn, calls, 0, crate::clock::now_ms())))
                .unwrap();
            out.extend(stored);
        }
        out
    }

    #[test]
    fn held_rows_dedupe_and_are_found_before_and_after_a_merge_and_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.redb");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Generations swept whole, one part swept and calls still held.
        let total = 3 * GENERATION + GENERATION / 2;
        let store = Store::open(&path).unwrap();
        let (writer, thread) = Writer::start(&store, 16, 16, Default::default()).unwrap();
        let first = send(&writer, &rt, total);
        assert!(first.iter().all(|s| !s.duplicate));
        let seqs: Vec<u64> = first.iter().map(|s| s.seq).collect();
        let again = send(&writer, &rt, total);
        assert!(again.iter().all(|s| s.duplicate));
        assert_eq!(again.iter().map(|s| s.seq).collect::<Vec<_>>(), seqs);

        let user0 = person_hash(None, PersonKind::User, "u0");
        let expected: Vec<u64> = seqs.iter().copied().step_by(USERS).collect();
        let found = store
            .read()
            .unwrap()
            .person_seqs(user0, 0, usize::MAX)
            .unwrap();
        assert_eq!(found, expected, "merged and held rows together");
        thread.stop();
        drop((writer, store));

        let store = Store::open(&path).unwrap();
        let (writer, thread) = Writer::start(&store, 16, 16, Default::default()).unwrap();
        let after_restart = send(&writer, &rt, total);
        assert!(after_restart.iter().all(|s| s.duplicate));
        let found = store
            .read()
            .unwrap()
            .person_seqs(user0, 0, usize::MAX)
            .unwrap();
        assert_eq!(found, expected);
        // Paging continues across the merged and the held rows.
        let tail = store
            .read()
            .unwrap()
            .person_seqs(user0, expected[3], 2)
            .unwrap();
        assert_eq!(tail, expected[4..6]);
        thread.stop();
    }

    #[test]
    fn an_anonymous_id_links_as_anonymous_only_and_an_alias_links_both() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("herald.redb")).unwrap();
        let (writer, thread) = Writer::start(&store, 16, 16, Default::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let limits = validate_tracking(TrackingSection::default()).unwrap();
        let body = serde_json::json!({"batch": [
            {"type": "track", "userId": "1001", "event": "e"},
            {"type": "identify", "userId": "7", "anonymousId": "1001"},
            {"type": "alias", "previousId": "old", "userId": "7"},
        ]})
        .to_string();
        let calls = prepare(
            None,
            parse(None, body.as_bytes(), &limits).unwrap(),
            "s",
            None,
            0,
        )
        .unwrap();
        rt.block_on(writer.write(move |txn| append(txn, calls, 0, crate::clock::now_ms())))
            .unwrap();
        let links = store.read().unwrap().person_links().unwrap();
        let user7 = person_hash(None, PersonKind::User, "7");
        assert_eq!(
            links.get(&person_hash(None, PersonKind::Anonymous, "1001")),
            Some(&user7)
        );
        assert_eq!(
            links.get(&person_hash(None, PersonKind::User, "1001")),
            None,
            "user 1001 stays itself"
        );
        assert_eq!(
            links.get(&person_hash(None, PersonKind::Anonymous, "old")),
            Some(&user7)
        );
        assert_eq!(
            links.get(&person_hash(None, PersonKind::User, "old")),
            Some(&user7)
        );
        thread.stop();
    }
}
