//! Every table in the file, with its key and value. Opening the file,
//! the schema check and backups all read [`for_each_table`], so a table
//! added here is created, checked and copied without another list to keep.

use redb::{Key, TableDefinition, Value};

use super::{ReadTxn, StoreError};

// The file itself.

/// `schema_version` → the layout's version (u32, little-endian), checked
/// at every open; `secret.NAME` → 32 random bytes kept with the data so what
/// they sign survives restarts and restores (unsubscribe links).
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

// The event log.

/// seq → encoded `EventRecord`. Sequence numbers are dense and start at 1.
pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

/// (tenant or "", idempotency key) → (seq, request fingerprint). Keyed by the
/// names themselves, not a hash: merged keys that sort together (time or
/// counter prefixes) then share leaves. New keys reach it in bulk through
/// `recent_keys`.
pub const EVENT_KEYS: TableDefinition<(&str, &str), (u64, u64)> =
    TableDefinition::new("event_keys");

/// seq → (tenant or "", idempotency key, request fingerprint) for keyed
/// events not yet merged into `event_keys`. Emptied by every merge.
pub const RECENT_EVENT_KEYS: TableDefinition<u64, (&str, &str, u64)> =
    TableDefinition::new("recent_event_keys");

/// hash(type) << 64 | seq → (): pages of one event type without scanning the log.
pub const EVENTS_BY_TYPE: TableDefinition<u128, ()> = TableDefinition::new("events_by_type");

/// hash(tenant) << 64 | seq → (): pages of one tenant without scanning the log.
pub const EVENTS_BY_TENANT: TableDefinition<u128, ()> = TableDefinition::new("events_by_tenant");

// The durable schedule of webhook deliveries and mail.

/// (queue, key, due Unix ms, job id) → (): every webhook delivery and mail
/// message still to be attempted, exactly once. The key is the endpoint id
/// (webhooks) or the stream's `stream_key` (mail), so each key's jobs can be
/// read in due order without reading anyone else's: the scheduler holds
/// only a window of each in memory. A row stays while its attempt is in
/// flight, so a crash means a retry, never a loss.
pub const DUE: TableDefinition<(u8, u128, u64, u64), ()> = TableDefinition::new("due");

// Webhooks.

/// endpoint id → encoded `EndpointRecord`.
pub const ENDPOINTS: TableDefinition<u128, &[u8]> = TableDefinition::new("endpoints");

/// delivery id → encoded `DeliveryRecord`. Ids are dense and start at 1.
pub const DELIVERIES: TableDefinition<u64, &[u8]> = TableDefinition::new("deliveries");

/// (endpoint id, delivery id) → (): an endpoint's deliveries, oldest first.
pub const DELIVERIES_BY_ENDPOINT: TableDefinition<(u128, u64), ()> =
    TableDefinition::new("deliveries_by_endpoint");

/// (event seq, delivery id) → (): an event's deliveries.
pub const DELIVERIES_BY_EVENT: TableDefinition<(u64, u64), ()> =
    TableDefinition::new("deliveries_by_event");

/// (status code, delivery id) → (): the deliveries in one status, oldest
/// first, so that a status filter (dead letters) seeks instead of scanning.
/// Codes: `delivery_status_code`.
pub const DELIVERIES_BY_STATUS: TableDefinition<(u8, u64), ()> =
    TableDefinition::new("deliveries_by_status");

/// (endpoint id, status code, delivery id) → (): one endpoint's deliveries in
/// one status, oldest first.
pub const DELIVERIES_BY_ENDPOINT_STATUS: TableDefinition<(u128, u8, u64), ()> =
    TableDefinition::new("deliveries_by_endpoint_status");

/// (endpoint id, status code) → how many of its deliveries are in that
/// status: exact counts without reading the deliveries.
pub const ENDPOINT_DELIVERY_COUNTS: TableDefinition<(u128, u8), u64> =
    TableDefinition::new("endpoint_delivery_counts");

/// (endpoint id, Unix minute) → encoded `AttemptTally`: what the endpoint's
/// attempts in that minute answered, and how fast. Rows older than a day are
/// dropped by the retention pass: stats look back one day.
pub const ENDPOINT_ATTEMPTS: TableDefinition<(u128, i64), &[u8]> =
    TableDefinition::new("endpoint_attempts");

/// endpoint id → encoded `EndpointStreakRecord`: its failed attempts in a
/// row and its owner's last alert day. No row: nothing to remember.
pub const ENDPOINT_STREAKS: TableDefinition<u128, &[u8]> = TableDefinition::new("endpoint_streaks");

// Mail.

/// message id → encoded `EmailRecord`. Ids are dense and start at 1.
pub const EMAILS: TableDefinition<u64, &[u8]> = TableDefinition::new("emails");

/// (recipient, message id) → (): a recipient's messages without a scan.
pub const EMAILS_BY_TO: TableDefinition<(&str, u64), ()> = TableDefinition::new("emails_by_to");

/// (tenant, message id) → (): a tenant's messages, so its pages are full or
/// final however many other tenants' messages lie between. Messages without
/// a tenant have no row.
pub const EMAILS_BY_TENANT: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("emails_by_tenant");

/// (tenant, recipient, message id) → (): a tenant's messages to one address.
pub const EMAILS_BY_TENANT_TO: TableDefinition<(&str, &str, u64), ()> =
    TableDefinition::new("emails_by_tenant_to");

/// (status code, message id) → (): the messages in one status, oldest first.
/// Codes: `email_status_code`.
pub const EMAILS_BY_STATUS: TableDefinition<(u8, u64), ()> =
    TableDefinition::new("emails_by_status");

/// (stream, status code, message id) → (): one stream's messages in one status.
pub const EMAILS_BY_STREAM_STATUS: TableDefinition<(&str, u8, u64), ()> =
    TableDefinition::new("emails_by_stream_status");

/// idempotency key → (first message id, message count, request fingerprint).
/// One request's messages get consecutive ids. A tenant's keys are stored
/// as `tenant NUL key` (keys hold no control characters), so tenants never
/// see each other's keys and keys without a tenant keep their old form.
pub const EMAIL_KEYS: TableDefinition<&str, (u64, u32, u64)> = TableDefinition::new("email_keys");

/// (address, stream or "" for every stream) → encoded `SuppressionRecord`.
pub const SUPPRESSIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("suppressions");

/// (tenant, address, stream or "" for every stream) → encoded
/// `SuppressionRecord`: each tenant's own list, checked only for its
/// messages. Bounces and complaints go to the global `suppressions`.
pub const TENANT_SUPPRESSIONS: TableDefinition<(&str, &str, &str), &[u8]> =
    TableDefinition::new("tenant_suppressions");

/// address → encoded `SoftBounceRecord`: the days it soft-bounced on,
/// within `mail.soft_bounce_window`, since its last delivery.
pub const SOFT_BOUNCE_DAYS: TableDefinition<&str, &[u8]> = TableDefinition::new("soft_bounce_days");

/// The provider's message id from an accepting 250 reply → message id: how
/// feedback that echoes no header of ours finds its message.
pub const PROVIDER_MESSAGE_IDS: TableDefinition<&str, u64> =
    TableDefinition::new("provider_message_ids");

// ESP feedback and the streams' reputation.

/// feedback id → encoded `FeedbackRecord`. Ids are dense and start at 1.
pub const FEEDBACK: TableDefinition<u64, &[u8]> = TableDefinition::new("feedback");

/// (provider, provider's event id) → feedback id: an event is applied once.
pub const FEEDBACK_SEEN: TableDefinition<(&str, &str), u64> = TableDefinition::new("feedback_seen");

/// feedback id → (): events no message of ours matched.
pub const FEEDBACK_UNMATCHED: TableDefinition<u64, ()> = TableDefinition::new("feedback_unmatched");

/// (message id, feedback id) → (): a message's feedback, for its timeline.
pub const FEEDBACK_BY_EMAIL: TableDefinition<(u64, u64), ()> =
    TableDefinition::new("feedback_by_email");

/// (provider, token) → when it was spent (Unix ms): single-use values a
/// provider's signature covers (Mailgun's token). Rows older than the
/// timestamp tolerance are pruned: a request that old is refused anyway.
pub const REPLAY_TOKENS: TableDefinition<(&str, &str), i64> = TableDefinition::new("replay_tokens");

/// stream → encoded `StreamStateRecord`.
pub const STREAM_STATES: TableDefinition<&str, &[u8]> = TableDefinition::new("stream_states");

/// (stream, start of a 5-minute bucket in Unix ms) → (messages sent, hard
/// bounces, complaints) in it: the 24-hour window. Pruned after a day.
pub const STREAM_TALLY: TableDefinition<(&str, i64), (u32, u32, u32)> =
    TableDefinition::new("stream_tally");

/// (stream, message id) → what became of it (0 sent, 1 hard bounce, 2
/// complaint): the stream's last 1,000 sends.
pub const STREAM_SENDS: TableDefinition<(&str, u64), u8> = TableDefinition::new("stream_sends");

// Tracking.

/// hash(source, messageId) → (seq, received Unix ms). Fixed-width keys:
/// message ids are random, and short keys keep those random inserts cheap.
pub const TRACK_KEYS: TableDefinition<u128, (u64, i64)> = TableDefinition::new("track_keys");

/// seq → (message key or 0, person, received Unix ms) for tracked calls not
/// yet merged. Emptied by every merge.
pub const RECENT_TRACKED: TableDefinition<u64, (u128, u64, i64)> =
    TableDefinition::new("recent_tracked");

/// (received Unix ms, seq) → hash(source, messageId), 0 when Herald made the
/// id up: every tracked call in arrival order, for retention and for
/// expiring deduplication keys.
pub const TRACKED: TableDefinition<(i64, u64), u128> = TableDefinition::new("tracked");

/// (person, seq) → (): a person's calls. A person is the hash of `u:USERID`
/// or `a:ANONYMOUSID`, and of the tenant for calls of a tenant's source
/// (see `person_hash`).
pub const TRACK_BY_PERSON: TableDefinition<(u64, u64), ()> =
    TableDefinition::new("track_by_person");

/// (event type key, timestamp ms, seq) → person: one event name's calls in
/// time order, which stats, funnels and attribution scan by range. The key
/// is the type hash, mixed with the tenant for a tenant's calls
/// (`tracked_type_key`), so each tenant's calls are a range of their own.
pub const TRACK_BY_EVENT: TableDefinition<(u64, i64, u64), u64> =
    TableDefinition::new("track_by_event");

/// (person, timestamp ms, seq) → (utm source, medium, name).
pub const TOUCHES: TableDefinition<(u64, i64, u64), (&str, &str, &str)> =
    TableDefinition::new("touches");

/// userId → encoded `ProfileRecord`, for sources bound to no tenant.
pub const PROFILES: TableDefinition<&str, &[u8]> = TableDefinition::new("profiles");

/// (tenant, userId) → encoded `ProfileRecord`: users of a tenant's sources.
pub const TENANT_PROFILES: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("tenant_profiles");

/// person → the person (`u:USERID`) it belongs to: anonymous ids seen with a
/// userId, and ids an alias retired.
pub const PERSON_LINKS: TableDefinition<u64, u64> = TableDefinition::new("person_links");

/// "dedup_expired_to" → (received ms, seq) up to which keys were expired.
pub const TRACK_META: TableDefinition<&str, (i64, u64)> = TableDefinition::new("track_meta");

// Access.

/// key id → encoded `ApiKeyRecord`: API keys created through the API. Only
/// a hash of each key is kept; the daemon loads them all at start.
pub const API_KEYS: TableDefinition<u128, &[u8]> = TableDefinition::new("api_keys");

// The event catalog.

/// event type name → encoded `EventTypeRecord`: the types, their payload
/// versions, schemas and samples, shared by every tenant. The daemon keeps
/// them compiled in memory; ingest never reads this table.
pub const EVENT_TYPES: TableDefinition<&str, &[u8]> = TableDefinition::new("event_types");

/// Something done to every table of the file in turn.
pub(crate) trait TableVisitor {
    fn visit<K: Key + 'static, V: Value + 'static>(
        &mut self,
        table: TableDefinition<K, V>,
    ) -> Result<(), StoreError>;
}

/// Calls `visitor` with every table of the current schema.
pub(crate) fn for_each_table(visitor: &mut impl TableVisitor) -> Result<(), StoreError> {
    visitor.visit(META)?;
    visitor.visit(EVENTS)?;
    visitor.visit(EVENT_KEYS)?;
    visitor.visit(RECENT_EVENT_KEYS)?;
    visitor.visit(EVENTS_BY_TYPE)?;
    visitor.visit(EVENTS_BY_TENANT)?;
    visitor.visit(DUE)?;
    visitor.visit(ENDPOINTS)?;
    visitor.visit(DELIVERIES)?;
    visitor.visit(DELIVERIES_BY_ENDPOINT)?;
    visitor.visit(DELIVERIES_BY_EVENT)?;
    visitor.visit(DELIVERIES_BY_STATUS)?;
    visitor.visit(DELIVERIES_BY_ENDPOINT_STATUS)?;
    visitor.visit(ENDPOINT_DELIVERY_COUNTS)?;
    visitor.visit(ENDPOINT_ATTEMPTS)?;
    visitor.visit(ENDPOINT_STREAKS)?;
    visitor.visit(EMAILS)?;
    visitor.visit(EMAILS_BY_TO)?;
    visitor.visit(EMAILS_BY_TENANT)?;
    visitor.visit(EMAILS_BY_TENANT_TO)?;

    visitor.visit(EMAILS_BY_STATUS)?;
    visitor.visit(EMAILS_BY_STREAM_STATUS)?;
    visitor.visit(EMAIL_KEYS)?;
    visitor.visit(SUPPRESSIONS)?;
    visitor.visit(TENANT_SUPPRESSIONS)?;
    visitor.visit(SOFT_BOUNCE_DAYS)?;
    visitor.visit(PROVIDER_MESSAGE_IDS)?;
    visitor.visit(FEEDBACK)?;
    visitor.visit(FEEDBACK_SEEN)?;
    visitor.visit(FEEDBACK_UNMATCHED)?;
    visitor.visit(FEEDBACK_BY_EMAIL)?;
    visitor.visit(REPLAY_TOKENS)?;
    visitor.visit(STREAM_STATES)?;
    visitor.visit(STREAM_TALLY)?;
    visitor.visit(STREAM_SENDS)?;
    visitor.visit(TRACK_KEYS)?;
    visitor.visit(RECENT_TRACKED)?;
    visitor.visit(TRACKED)?;
    visitor.visit(TRACK_BY_PERSON)?;
    visitor.visit(TRACK_BY_EVENT)?;
    visitor.visit(TOUCHES)?;
    visitor.visit(PROFILES)?;
    visitor.visit(TENANT_PROFILES)?;
    visitor.visit(PERSON_LINKS)?;
    visitor.visit(TRACK_META)?;
    visitor.visit(API_KEYS)?;
    visitor.visit(EVENT_TYPES)?;
    Ok(())
}

/// The names of every table, in `for_each_table` order.
pub fn table_names() -> Vec<String> {
    struct Names(Vec<String>);
    impl TableVisitor for Names {
        fn visit<K: Key + 'static, V: Value + 'static>(
            &mut self,
            table: TableDefinition<K, V>,
        ) -> Result<(), StoreError> {
            use redb::TableHandle;
            self.0.push(table.name().to_owned());
            Ok(())
        }
    }
    let mut names = Names(Vec::new());
    for_each_table(&mut names).expect("listing names cannot fail");
    names.0
}

impl ReadTxn {
    /// The names of the tables the file holds, for the schema check.
    pub fn table_names(&self) -> Result<Vec<String>, StoreError> {
        use redb::TableHandle;
        Ok(self
            .txn
            .list_tables()?
            .map(|t| t.name().to_owned())
            .collect())
    }
}
