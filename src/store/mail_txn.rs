//! What the mail rules (queueing, attempts, suppressions, the reputation
//! guard, ESP feedback) read and change, as one trait: the redb writer's
//! transaction implements it here, the PostgreSQL backend's transaction in
//! `pg::mail_txn`, so both backends run the same rules, written once.

use super::due::Queue;
use super::log::NewEventRow;
use super::mail::Blocking;
use super::records::{
    EmailRecord, FeedbackRecord, SoftBounceRecord, StreamStateRecord, SuppressionRecord,
};
use super::streams::{SendOutcome, Windows};
use super::{StoreError, WriteTxn};

pub trait MailTxn {
    fn next_email_id(&mut self) -> Result<u64, StoreError>;
    fn email(&mut self, id: u64) -> Result<Option<EmailRecord>, StoreError>;
    /// Stores `record` as message `id`; `previous_due` is when it was due
    /// before this change (`None`: not scheduled), `is_new` for a message
    /// being queued.
    fn put_email(
        &mut self,
        id: u64,
        record: &EmailRecord,
        previous_due: Option<i64>,
        is_new: bool,
    ) -> Result<(), StoreError>;
    /// (first id, count, request fingerprint) of an earlier request.
    fn email_key(
        &mut self,
        tenant: Option<&str>,
        key: &str,
    ) -> Result<Option<(u64, u32, u64)>, StoreError>;
    fn put_email_key(
        &mut self,
        tenant: Option<&str>,
        key: &str,
        first_id: u64,
        count: u32,
        fingerprint: u64,
    ) -> Result<(), StoreError>;
    fn suppression_for(
        &mut self,
        tenant: Option<&str>,
        address: &str,
        stream: &str,
    ) -> Result<Option<Blocking>, StoreError>;
    fn put_suppression(
        &mut self,
        list: Option<&str>,
        address: &str,
        stream: &str,
        record: &SuppressionRecord,
    ) -> Result<bool, StoreError>;
    fn stored_suppression(
        &mut self,
        list: Option<&str>,
        address: &str,
        stream: &str,
    ) -> Result<Option<SuppressionRecord>, StoreError>;
    fn delete_suppression(
        &mut self,
        list: Option<&str>,
        address: &str,
        stream: &str,
    ) -> Result<bool, StoreError>;
    fn soft_bounce_days(&mut self, address: &str) -> Result<SoftBounceRecord, StoreError>;
    fn put_soft_bounce_days(
        &mut self,
        address: &str,
        record: &SoftBounceRecord,
    ) -> Result<(), StoreError>;
    fn put_provider_message_id(&mut self, provider_id: &str, id: u64) -> Result<(), StoreError>;
    fn email_by_provider_id(&mut self, provider_id: &str) -> Result<Option<u64>, StoreError>;
    fn stream_state(&mut self, stream: &str) -> Result<StreamStateRecord, StoreError>;
    fn put_stream_state(
        &mut self,
        stream: &str,
        state: &StreamStateRecord,
    ) -> Result<(), StoreError>;
    fn tally_stream(
        &mut self,
        stream: &str,
        at_ms: i64,
        outcome: SendOutcome,
    ) -> Result<(), StoreError>;
    fn add_stream_send(&mut self, stream: &str, id: u64) -> Result<(), StoreError>;
    fn mark_stream_send(
        &mut self,
        stream: &str,
        id: u64,
        outcome: SendOutcome,
    ) -> Result<(), StoreError>;
    fn stream_windows(&mut self, stream: &str, now_ms: i64) -> Result<Windows, StoreError>;
    /// A stream's state changed in a way whoever releases its mail must hear
    /// (paused, resumed, a warm-up held back).
    fn mail_gates_changed(&mut self);
    /// Appends one of Herald's own events with its deliveries, none to
    /// `exclude`.
    fn append_system_event(
        &mut self,
        row: NewEventRow,
        now_ms: i64,
        exclude: Option<u128>,
    ) -> Result<(), StoreError>;
    /// False when `token` of `provider` was spent already (a replayed
    /// feedback request).
    fn spend_replay_token(
        &mut self,
        provider: &str,
        token: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// The feedback id an event of `provider` with `event_id` was stored
    /// as, if it was.
    fn feedback_seen(&mut self, provider: &str, event_id: &str) -> Result<Option<u64>, StoreError>;
    fn add_feedback(&mut self, record: &FeedbackRecord) -> Result<u64, StoreError>;
}

impl MailTxn for WriteTxn<'_> {
    fn next_email_id(&mut self) -> Result<u64, StoreError> {
        WriteTxn::next_email_id(self)
    }
    fn email(&mut self, id: u64) -> Result<Option<EmailRecord>, StoreError> {
        WriteTxn::email(self, id)
    }
    fn put_email(
        &mut self,
        id: u64,
        record: &EmailRecord,
        previous_due: Option<i64>,
        is_new: bool,
    ) -> Result<(), StoreError> {
        WriteTxn::put_email(self, id, record, previous_due, is_new)
    }
    fn email_key(
        &mut self,
        tenant: Option<&str>,
        key: &str,
    ) -> Result<Option<(u64, u32, u64)>, StoreError> {
        WriteTxn::email_key(self, tenant, key)
    }
    fn put_email_key(
        &mut self,
        tenant: Option<&str>,
        key: &str,
        first_id: u64,
        count: u32,
        fingerprint: u64,
    ) -> Result<(), StoreError> {
        WriteTxn::put_email_key(self, tenant, key, first_id, count, fingerprint)
    }
    fn suppression_for(
        &mut self,
        tenant: Option<&str>,
        address: &str,
        stream: &str,
    ) -> Result<Option<Blocking>, StoreError> {
        WriteTxn::suppression_for(self, tenant, address, stream)
    }
    fn put_suppression(
        &mut self,
        list: Option<&str>,
        address: &str,
        stream: &str,
        record: &SuppressionRecord,
    ) -> Result<bool, StoreError> {
        WriteTxn::put_suppression(self, list, address, stream, record)
    }
    fn stored_suppression(
        &mut self,
        list: Option<&str>,
        address: &str,
        stream: &str,
    ) -> Result<Option<SuppressionRecord>, StoreError> {
        WriteTxn::stored_suppression(self, list, address, stream)
    }
    fn delete_suppression(
        &mut self,
        list: Option<&str>,
        address: &str,
        stream: &str,
    ) -> Result<bool, StoreError> {
        WriteTxn::delete_suppression(self, list, address, stream)
    }
    fn soft_bounce_days(&mut self, address: &str) -> Result<SoftBounceRecord, StoreError> {
        WriteTxn::soft_bounce_days(self, address)
    }
    fn put_soft_bounce_days(
        &mut self,
        address: &str,
        record: &SoftBounceRecord,
    ) -> Result<(), StoreError> {
        WriteTxn::put_soft_bounce_days(self, address, record)
    }
    fn put_provider_message_id(&mut self, provider_id: &str, id: u64) -> Result<(), StoreError> {
        WriteTxn::put_provider_message_id(self, provider_id, id)
    }
    fn email_by_provider_id(&mut self, provider_id: &str) -> Result<Option<u64>, StoreError> {
        WriteTxn::email_by_provider_id(self, provider_id)
    }
    fn stream_state(&mut self, stream: &str) -> Result<StreamStateRecord, StoreError> {
        WriteTxn::stream_state(self, stream)
    }
    fn put_stream_state(
        &mut self,
        stream: &str,
        state: &StreamStateRecord,
    ) -> Result<(), StoreError> {
        WriteTxn::put_stream_state(self, stream, state)
    }
    fn tally_stream(
        &mut self,
        stream: &str,
        at_ms: i64,
        outcome: SendOutcome,
    ) -> Result<(), StoreError> {
        WriteTxn::tally_stream(self, stream, at_ms, outcome)
    }
    fn add_stream_send(&mut self, stream: &str, id: u64) -> Result<(), StoreError> {
        WriteTxn::add_stream_send(self, stream, id)
    }
    fn mark_stream_send(
        &mut self,
        stream: &str,
        id: u64,
        outcome: SendOutcome,
    ) -> Result<(), StoreError> {
        WriteTxn::mark_stream_send(self, stream, id, outcome)
    }
    fn stream_windows(&mut self, stream: &str, now_ms: i64) -> Result<Windows, StoreError> {
        WriteTxn::stream_windows(self, stream, now_ms)
    }
    fn mail_gates_changed(&mut self) {
        self.keys_changed(Queue::Mail);
    }
    fn append_system_event(
        &mut self,
        row: NewEventRow,
        now_ms: i64,
        exclude: Option<u128>,
    ) -> Result<(), StoreError> {
        WriteTxn::append_system_event(self, row, now_ms, exclude).map(drop)
    }
    fn spend_replay_token(
        &mut self,
        provider: &str,
        token: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        WriteTxn::spend_replay_token(self, provider, token, now_ms)
    }
    fn feedback_seen(&mut self, provider: &str, event_id: &str) -> Result<Option<u64>, StoreError> {
        WriteTxn::feedback_seen(self, provider, event_id)
    }
    fn add_feedback(&mut self, record: &FeedbackRecord) -> Result<u64, StoreError> {
        WriteTxn::add_feedback(self, record)
    }
}
