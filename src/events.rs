//! The event log's rules: what a valid event is, how idempotent appends
//! decide between "new" and "already have it", and the JSON an event is shown as.
//! Pure functions; the API wires them to requests and the writer.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::clock;
use crate::ids;
use crate::names::{is_reserved_type, is_valid_tenant, is_valid_type_name, RESERVED_PREFIXES};
use crate::store::log::{IndexKeys, NewEventRow};
use crate::store::records::{EventRecord, EventSource};
use crate::store::{StoreError, WriteTxn};

pub const ID_PREFIX: &str = "evt_";
pub const MAX_KEY_BYTES: usize = 255;
/// Deeper `data` is refused: receivers' JSON parsers (webhook consumers,
/// warehouses) commonly stop at 100–128 levels, some with a crash.
pub const MAX_DATA_DEPTH: usize = 64;
/// Payload versions run from 1 to this.
pub const MAX_DATA_VERSION: u32 = 999;
/// Versions one event may carry at once (and one catalogued type define).
pub const MAX_DATA_VERSIONS: usize = 20;

/// Why an event (or a field of it) was refused. Each maps to a stable API code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Not JSON at all.
    Json(String),
    /// JSON, but not the shape of an event (missing or unknown field, wrong type).
    Shape(String),
    /// A field whose value breaks a rule.
    Field {
        field: &'static str,
        message: String,
    },
}

fn field(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid::Field {
        field,
        message: message.into(),
    }
}

/// Classifies a serde_json failure: syntax errors are bad JSON, data errors
/// are a wrong shape.
pub fn json_error(e: &serde_json::Error) -> Invalid {
    match e.classify() {
        serde_json::error::Category::Data => Invalid::Shape(e.to_string()),
        _ => Invalid::Json(e.to_string()),
    }
}

/// Deserializes a request body that must be a JSON object. serde fills a
/// struct from an array too, in field order (`["invoice.paid"]` would be an
/// event), which no client means and the API does not document.
pub fn from_json_object<'a, T: Deserialize<'a>>(json: &'a [u8]) -> Result<T, Invalid> {
    let first = json
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(&b'{') {
        // Text that is not JSON at all keeps its own error.
        serde_json::from_slice::<serde::de::IgnoredAny>(json).map_err(|e| json_error(&e))?;
        return Err(Invalid::Shape("the body must be a JSON object".to_owned()));
    }
    serde_json::from_slice(json).map_err(|e| json_error(&e))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventInput<'a> {
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    data_versions: Option<BTreeMap<String, &'a RawValue>>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    occurred_at: Option<String>,
}

/// A field that may be left out but not sent as `null`: `null` would
/// otherwise read as left out, and a broken field must be refused.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// An event that passed validation and is ready for the writer.
pub type NewEvent = NewEventRow;

/// A type an API client may post: well formed and outside Herald's own
/// prefixes, so that no client can pose as Herald.
pub fn validate_type_name(name: &str) -> Result<(), Invalid> {
    if !is_valid_type_name(name) {
        return Err(field(
            "type",
            "must be 1 to 128 characters of letters, digits, '_', '.' or '-'",
        ));
    }
    if is_reserved_type(name) {
        return Err(field(
            "type",
            format!(
                "types under {} are Herald's own events",
                RESERVED_PREFIXES.map(|p| format!("`{p}`")).join(", ")
            ),
        ));
    }
    Ok(())
}

pub fn validate_tenant(tenant: &str) -> Result<(), Invalid> {
    if is_valid_tenant(tenant) {
        Ok(())
    } else {
        Err(field(
            "tenant",
            "must be 1 to 128 characters of letters, digits, '_', '.', ':' or '-'",
        ))
    }
}

/// A payload version as JSON names it: "1" to "999", without leading zeros.
pub fn parse_version(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 3 || text.starts_with('0') {
        return None;
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse()
        .ok()
        .filter(|v| (1..=MAX_DATA_VERSION).contains(v))
}

/// An event's data (or one version of it) as stored: a JSON object no
/// deeper than receivers' parsers go.
fn object_text(name: &'static str, raw: &RawValue) -> Result<String, Invalid> {
    if !nesting_within(raw.get().as_bytes(), MAX_DATA_DEPTH) {
        return Err(field(
            name,
            format!("nests deeper than {MAX_DATA_DEPTH} levels"),
        ));
    }
    if !raw.get().starts_with('{') {
        return Err(field(name, "must be a JSON object"));
    }
    Ok(raw.get().to_owned())
}

/// The data an event carries: its newest version with that version's
/// number, and the older ones ascending. `data` alone is version 1.
type Versions = (String, u32, Vec<(u32, String)>);

fn versions_of(input: &EventInput<'_>) -> Result<Versions, Invalid> {
    let Some(map) = &input.data_versions else {
        let data = match input.data {
            None => "{}".to_owned(),
            Some(raw) if raw.get() == "null" => "{}".to_owned(),
            Some(raw) => object_text("data", raw)?,
        };
        return Ok((data, 1, Vec::new()));
    };
    if input.data.is_some() {
        return Err(field(
            "data_versions",
            "send either `data` (version 1) or `data_versions`, not both",
        ));
    }
    if map.is_empty() || map.len() > MAX_DATA_VERSIONS {
        return Err(field(
            "data_versions",
            format!("must carry 1 to {MAX_DATA_VERSIONS} versions"),
        ));
    }
    let mut versions = Vec::with_capacity(map.len());
    for (name, raw) in map {
        let version = parse_version(name).ok_or_else(|| {
            let shown: String = name.chars().take(16).collect();
            field(
                "data_versions",
                format!("`{shown}` is not a version: use \"1\" to \"{MAX_DATA_VERSION}\""),
            )
        })?;
        versions.push((version, object_text("data_versions", raw)?));
    }
    versions.sort_by_key(|(v, _)| *v);
    let (newest, data) = versions.pop().expect("at least one version");
    Ok((data, newest, versions))
}

/// An event as a client posted it.
pub struct Posted {
    pub event: NewEvent,
    /// It carried `data_versions` rather than `data`: where errors about
    /// its data point.
    pub versioned: bool,
}

impl Posted {
    /// A JSON pointer into the request to version `version` of the data.
    pub fn data_pointer(&self, version: u32) -> String {
        if self.versioned {
            format!("/data_versions/{version}")
        } else {
            "/data".to_owned()
        }
    }
}

/// Parses and validates one event from its JSON text.
pub fn parse_event(json: &[u8]) -> Result<NewEvent, Invalid> {
    parse_posted(json).map(|posted| posted.event)
}

/// As [`parse_event`], saying how the event carried its data.
pub fn parse_posted(json: &[u8]) -> Result<Posted, Invalid> {
    let input: EventInput = from_json_object(json)?;
    validate_type_name(&input.event_type)?;
    if let Some(t) = &input.tenant {
        validate_tenant(t)?;
    }
    if let Some(key) = &input.idempotency_key {
        if key.is_empty() || key.len() > MAX_KEY_BYTES || key.chars().any(char::is_control) {
            return Err(field(
                "idempotency_key",
                format!("must be 1 to {MAX_KEY_BYTES} bytes without control characters"),
            ));
        }
    }
    let occurred_at_ms = match &input.occurred_at {
        None => None,
        Some(text) => Some(clock::parse_rfc3339(text).ok_or_else(|| {
            field(
                "occurred_at",
                "must be an RFC 3339 timestamp such as 2026-11-22T10:00:00Z, after 1970",
            )
        })?),
    };
    let versioned = input.data_versions.is_some();
    let (data, data_version, older_versions) = versions_of(&input)?;
    let fingerprint = fingerprint(
        &input.event_type,
        (&data, data_version, &older_versions),
        occurred_at_ms,
    );
    let EventInput {
        event_type,
        tenant,
        idempotency_key,
        ..
    } = input;
    let event = NewEvent {
        occurred_at_ms,
        data,
        data_version,
        older_versions,
        fingerprint,
        nonce: ids::new_id() as u16,
        index: IndexKeys::of(&event_type, tenant.as_deref()),
        event_type,
        tenant,
        idempotency_key,
        source: EventSource::Api,
    };
    Ok(Posted { event, versioned })
}

/// Whether valid JSON text nests arrays and objects at most `max` deep.
/// A byte scan, since serde_json skips raw values without a depth limit.
fn nesting_within(json: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// Hash of what a client sent: a repeated key with the same fingerprint
/// is the same event. An event with version 1 data only hashes as events
/// did before versions, so keys stored then still match their retries.
fn fingerprint(
    event_type: &str,
    (data, data_version, older): (&str, u32, &[(u32, String)]),
    occurred_at_ms: Option<i64>,
) -> u64 {
    let mut h = Sha256::new();
    h.update(event_type.as_bytes());
    h.update([0]);
    if data_version == 1 && older.is_empty() {
        h.update(data.as_bytes());
        h.update([0]);
    } else {
        // 0xff never occurs in JSON text: no single-version event hashes alike.
        h.update([0xff]);
        for (version, text) in older
            .iter()
            .map(|(v, d)| (*v, d.as_str()))
            .chain([(data_version, data)])
        {
            h.update(version.to_be_bytes());
            h.update(text.as_bytes());
            h.update([0]);
        }
    }
    h.update(occurred_at_ms.map_or([0xff; 8], i64::to_be_bytes));
    let digest = h.finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("sha256 has 32 bytes"))
}

/// An event Herald itself records (`endpoint.disabled`, `delivery.failing`…)
/// so that it reaches the log and, through it, subscribed endpoints.
pub fn system_event(event_type: &str, tenant: Option<&str>, data: serde_json::Value) -> NewEvent {
    let data = data.to_string();
    NewEventRow {
        fingerprint: fingerprint(event_type, (&data, 1, &[]), None),
        data_version: 1,
        older_versions: Vec::new(),
        nonce: ids::new_id() as u16,
        index: IndexKeys::of(event_type, tenant),
        event_type: event_type.to_owned(),
        tenant: tenant.map(str::to_owned),
        idempotency_key: None,
        occurred_at_ms: None,
        data,
        source: EventSource::Herald,
    }
}

/// What became of one event of an append.
#[derive(Debug, Clone)]
pub struct Appended {
    /// False when the idempotency key named an event already in the log.
    pub created: bool,
    pub seq: u64,
    pub record: EventRecord,
}

/// An append refused as a whole; nothing of it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyConflict {
    pub index: usize,
    pub key: String,
}

/// Events to append in one go, with duplicate idempotency keys inside the
/// batch already resolved. Built by the request handler, so the hashing
/// happens on the I/O threads rather than in the single writer.
pub struct AppendBatch {
    events: Vec<NewEvent>,
    /// For each event, the first earlier event of the batch with the same
    /// (tenant, key), if any.
    same_key_as: Vec<Option<usize>>,
}

impl AppendBatch {
    pub fn new(events: Vec<NewEvent>) -> Result<AppendBatch, KeyConflict> {
        let mut first_with_key: HashMap<(Option<&str>, &str), usize> = HashMap::new();
        let mut same_key_as = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            let earlier = event.idempotency_key.as_deref().and_then(|key| {
                match first_with_key.entry((event.tenant.as_deref(), key)) {
                    Entry::Occupied(first) => Some(*first.get()),
                    Entry::Vacant(slot) => {
                        slot.insert(index);
                        None
                    }
                }
            });
            if let Some(first) = earlier {
                if events[first].fingerprint != event.fingerprint {
                    return Err(KeyConflict {
                        index,
                        key: event.idempotency_key.clone().unwrap_or_default(),
                    });
                }
            }
            same_key_as.push(earlier);
        }
        Ok(AppendBatch {
            events,
            same_key_as,
        })
    }

    pub fn one(event: NewEvent) -> AppendBatch {
        AppendBatch {
            events: vec![event],
            same_key_as: vec![None],
        }
    }
}

/// What an append does with one event of a batch, decided before anything
/// is written so that a conflict refuses the whole batch.
pub enum Plan {
    Create,
    /// Same key as an event already stored at this seq.
    Stored(u64),
    /// Same key as an earlier event of this same batch.
    EarlierInBatch(usize),
}

impl AppendBatch {
    /// Decides each event's fate; `stored_key` answers what a (tenant, key)
    /// already names: (seq, request fingerprint). Both backends append
    /// through this, so they agree on what a repeat and a conflict are.
    pub fn plan<E>(
        &self,
        mut stored_key: impl FnMut(Option<&str>, &str) -> Result<Option<(u64, u64)>, E>,
    ) -> Result<Result<Vec<Plan>, KeyConflict>, E> {
        let mut plans = Vec::with_capacity(self.events.len());
        for (index, (event, earlier)) in self.events.iter().zip(&self.same_key_as).enumerate() {
            let plan = match (earlier, event.idempotency_key.as_deref()) {
                (Some(first), _) => match plans[*first] {
                    Plan::Stored(seq) => Plan::Stored(seq),
                    _ => Plan::EarlierInBatch(*first),
                },
                (None, None) => Plan::Create,
                (None, Some(key)) => match stored_key(event.tenant.as_deref(), key)? {
                    Some((_, fp)) if fp != event.fingerprint => {
                        return Ok(Err(KeyConflict {
                            index,
                            key: key.to_owned(),
                        }))
                    }
                    Some((seq, _)) => Plan::Stored(seq),
                    None => Plan::Create,
                },
            };
            plans.push(plan);
        }
        Ok(Ok(plans))
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The (tenant, key) of every keyed event, for looking them up at once.
    pub fn keys(&self) -> impl Iterator<Item = (&str, &str)> {
        self.events.iter().filter_map(|e| {
            e.idempotency_key
                .as_deref()
                .map(|k| (e.tenant.as_deref().unwrap_or(""), k))
        })
    }

    pub fn events(&self) -> &[NewEvent] {
        &self.events
    }
}

/// Appends a batch in order inside the writer's transaction. Idempotency
/// keys are resolved first, so a conflict refuses the whole batch before
/// anything is written.
pub fn append(
    txn: &mut WriteTxn<'_>,
    batch: AppendBatch,
) -> Result<Result<Vec<Appended>, KeyConflict>, StoreError> {
    let plans = match batch.plan(|tenant, key| txn.idempotency_key(tenant, key))? {
        Ok(plans) => plans,
        Err(conflict) => return Ok(Err(conflict)),
    };
    let now = clock::now_ms();
    let mut out: Vec<Appended> = Vec::with_capacity(plans.len());
    for (event, plan) in batch.events.into_iter().zip(plans) {
        let appended = match plan {
            Plan::Create => {
                let (seq, record) = txn.append_event(event, now)?;
                Appended {
                    created: true,
                    seq,
                    record,
                }
            }
            Plan::Stored(seq) => Appended {
                created: false,
                seq,
                record: txn.keyed_event(seq)?,
            },
            Plan::EarlierInBatch(i) => Appended {
                created: false,
                ..out[i].clone()
            },
        };
        out.push(appended);
    }
    Ok(Ok(out))
}

/// Writes an event as the API shows it. `data` is inserted verbatim: it was
/// validated JSON when it arrived.
pub fn write_json(out: &mut String, seq: u64, record: &EventRecord) {
    use std::fmt::Write;
    let _ = write!(
        out,
        r#"{{"id":"{}","seq":{seq},"type":"#,
        ids::format(ID_PREFIX, record.id)
    );
    write_json_string(out, &record.event_type);
    let _ = write!(out, r#","source":"{}","tenant":"#, record.source.as_str());
    write_json_option(out, record.tenant.as_deref());
    out.push_str(r#","idempotency_key":"#);
    write_json_option(out, record.idempotency_key.as_deref());
    out.push_str(r#","occurred_at":""#);
    clock::write_rfc3339(out, record.occurred_at_ms);
    out.push_str(r#"","received_at":""#);
    clock::write_rfc3339(out, record.received_at_ms);
    out.push_str(r#"","data":"#);
    out.push_str(&record.data);
    let _ = write!(out, r#","data_version":{}"#, record.data_version);
    if !record.older_versions.is_empty() {
        out.push_str(r#","data_versions":{"#);
        for (version, data) in &record.older_versions {
            let _ = write!(out, r#""{version}":{data},"#);
        }
        let _ = write!(out, r#""{}":{}}}"#, record.data_version, record.data);
    }
    out.push('}');
}

/// `text` as a JSON string. Names and keys rarely need escaping, so the
/// usual case is copied as it is instead of going through an allocation.
pub fn write_json_string(out: &mut String, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(text).expect("strings always serialise"));
    }
}

fn write_json_option(out: &mut String, text: Option<&str>) {
    match text {
        Some(text) => write_json_string(out, text),
        None => out.push_str("null"),
    }
}

pub fn to_json(seq: u64, record: &EventRecord) -> String {
    let older: usize = record.older_versions.iter().map(|(_, d)| d.len() + 8).sum();
    let mut out = String::with_capacity(256 + 2 * record.data.len() + older);
    write_json(&mut out, seq, record);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_event() {
        let e = parse_event(
            br#"{"type":"invoice.paid","tenant":"acme","data":{"a":[1,2]},"idempotency_key":"k","occurred_at":"2026-11-22T10:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(e.event_type, "invoice.paid");
        assert_eq!(e.tenant.as_deref(), Some("acme"));
        assert_eq!(e.data, r#"{"a":[1,2]}"#);
        assert_eq!(
            e.occurred_at_ms,
            clock::parse_rfc3339("2026-11-22T10:00:00Z")
        );
    }

    #[test]
    fn classifies_bad_input() {
        let cases: &[(&[u8], &str)] = &[
            (b"{", "json"),
            (b"not json", "json"),
            (b"[]", "shape"),
            (br#"{"data":{}}"#, "shape"),
            (br#"{"type":"a","extra":1}"#, "shape"),
            (br#"{"type":5}"#, "shape"),
            (br#"{"type":"a b"}"#, "type"),
            (br#"{"type":"a","tenant":""}"#, "tenant"),
            (br#"{"type":"a","data":[1]}"#, "data"),
            (br#"{"type":"a","data":"x"}"#, "data"),
            (br#"{"type":"a","occurred_at":"tuesday"}"#, "occurred_at"),
            (br#"{"type":"a","idempotency_key":""}"#, "idempotency_key"),
            (br#"{"type":"email.bounced"}"#, "type"),
            (br#"{"type":"delivery.exhausted"}"#, "type"),
            (br#"{"type":"endpoint.disabled"}"#, "type"),
            (br#"{"type":"herald.test"}"#, "type"),
            (
                br#"{"type":"a","data":{},"data_versions":{"1":{}}}"#,
                "data_versions",
            ),
            (br#"{"type":"a","data_versions":{}}"#, "data_versions"),
            (br#"{"type":"a","data_versions":{"0":{}}}"#, "data_versions"),
            (
                br#"{"type":"a","data_versions":{"01":{}}}"#,
                "data_versions",
            ),
            (
                br#"{"type":"a","data_versions":{"1000":{}}}"#,
                "data_versions",
            ),
            (
                br#"{"type":"a","data_versions":{"v2":{}}}"#,
                "data_versions",
            ),
            (br#"{"type":"a","data_versions":{"2":[]}}"#, "data_versions"),
            (
                br#"{"type":"a","data_versions":{"2":null}}"#,
                "data_versions",
            ),
            (br#"{"type":"a","data_versions":[{}]}"#, "shape"),
            (br#"{"type":"a","data_versions":null}"#, "shape"),
            (br#"["a"]"#, "shape"),
            (br#" ["a", "acme"]"#, "shape"),
            (b"[1,", "json"),
        ];
        for (input, want) in cases {
            let got = match parse_event(input).unwrap_err() {
                Invalid::Json(_) => "json",
                Invalid::Shape(_) => "shape",
                Invalid::Field { field, .. } => field,
            };
            assert_eq!(&got, want, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn data_versions_are_sorted_by_number_and_the_newest_is_the_data() {
        let posted = parse_posted(
            br#"{"type":"a","data_versions":{"10":{"v":10},"2":{"v":2},"9":{"v":9}}}"#,
        )
        .unwrap();
        assert!(posted.versioned);
        assert_eq!(posted.data_pointer(9), "/data_versions/9");
        let e = posted.event;
        assert_eq!((e.data.as_str(), e.data_version), (r#"{"v":10}"#, 10));
        assert_eq!(
            e.older_versions,
            vec![(2, r#"{"v":2}"#.to_owned()), (9, r#"{"v":9}"#.to_owned())]
        );
        let plain = parse_posted(br#"{"type":"a","data":{"v":1}}"#).unwrap();
        assert!(!plain.versioned);
        assert_eq!(plain.data_pointer(1), "/data");
        assert_eq!(plain.event.data_version, 1);
        // Version 1 alone is the same event however it was sent.
        let as_map = parse_event(br#"{"type":"a","data_versions":{"1":{"v":1}}}"#).unwrap();
        assert_eq!(as_map.fingerprint, plain.event.fingerprint);
    }

    #[test]
    fn nesting_is_counted_outside_strings_only() {
        assert!(nesting_within(br#"{"a":[{"b":1}]}"#, 3));
        assert!(!nesting_within(br#"{"a":[{"b":1}]}"#, 2));
        assert!(nesting_within(br#"{"a":"[[[[{{{{\"[["}"#, 1));
        let deep = format!(
            r#"{{"type":"a","data":{}{}}}"#,
            "[".repeat(65),
            "]".repeat(65)
        );
        assert!(matches!(
            parse_event(deep.as_bytes()),
            Err(Invalid::Field { field: "data", .. })
        ));
    }

    #[test]
    fn fingerprint_ignores_nothing_the_caller_chose() {
        let one = |data: &str| (data.to_owned(), 1, Vec::new());
        let fp = |t: &str, (d, v, o): &(String, u32, Vec<(u32, String)>), at| {
            fingerprint(t, (d, *v, o), at)
        };
        let base = fp("a", &one("{}"), None);
        assert_eq!(base, fp("a", &one("{}"), None));
        assert_ne!(base, fp("b", &one("{}"), None));
        assert_ne!(base, fp("a", &one("{\"x\":1}"), None));
        assert_ne!(base, fp("a", &one("{}"), Some(0)));
        let two = ("{}".to_owned(), 2, vec![(1, "{}".to_owned())]);
        assert_ne!(base, fp("a", &two, None));
        assert_ne!(base, fp("a", &("{}".to_owned(), 2, Vec::new()), None));
        let other = ("{}".to_owned(), 3, vec![(1, "{}".to_owned())]);
        assert_ne!(fp("a", &two, None), fp("a", &other, None));
    }

    #[test]
    fn event_json_is_valid_and_escapes_strings() {
        let record = EventRecord {
            id: 7,
            event_type: "a.b".into(),
            tenant: None,
            idempotency_key: Some("quote\"and\\slash".into()),
            occurred_at_ms: 0,
            received_at_ms: 1,
            data: r#"{"n":2}"#.into(),
            source: EventSource::Tracking,
            data_version: 2,
            older_versions: vec![(1, r#"{"n":1}"#.into())],
        };
        let v: serde_json::Value = serde_json::from_str(&to_json(3, &record)).unwrap();
        assert_eq!(v["seq"], 3);
        assert_eq!(v["source"], "tracking");
        assert_eq!(v["tenant"], serde_json::Value::Null);
        assert_eq!(v["idempotency_key"], "quote\"and\\slash");
        assert_eq!(v["data"]["n"], 2);
        assert_eq!(v["data_version"], 2);
        assert_eq!(
            v["data_versions"],
            serde_json::json!({"1": {"n": 1}, "2": {"n": 2}})
        );
        assert_eq!(v["received_at"], "1970-01-01T00:00:00.001Z");
    }
}
