//! Deleting what has aged out, a bounded slice per write operation: settled
//! deliveries, log events nothing depends on any more, the bodies of settled
//! messages, and attempt tallies older than stats look back.

use redb::ReadableTable;

use super::codec::encode;
use super::log::{index_key, tenant_hash, type_hash};
use super::records::{DeliveryRecord, DeliveryStatus, EmailRecord, EventRecord};
use super::tables::{EMAILS, META};
use super::webhooks::delivery_status_code;
use super::{StoreError, WriteTxn};

/// How far one slice of a sweep got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sweep {
    /// Rows deleted (or bodies emptied) by this slice.
    pub removed: usize,
    /// Where the next slice continues; `None`: the sweep reached rows too
    /// young to go, or the end.
    pub next_after: Option<u64>,
}

/// `meta` key: every message up to this id is settled and has no body
/// older than the horizon left, so sweeps start after it.
pub(crate) const BODIES_PURGED_TO: &str = "mail_bodies_purged_to";

/// When a settled delivery settled: its last attempt, or its creation when
/// it was never attempted (its endpoint was deleted first).
pub(crate) fn settled_at(record: &DeliveryRecord) -> i64 {
    record
        .attempts
        .last()
        .map_or(record.created_at_ms, |a| a.at_ms)
}

/// What a sweep of settled deliveries, reading them in id order, does
/// with one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    Delete,
    Keep,
    /// Ids follow creation: from this one on nothing settled early enough.
    Stop,
}

/// A delivery goes once it is settled (nothing scheduled) and settled
/// before `before_ms`.
pub(crate) fn settled_delivery_fate(record: &DeliveryRecord, before_ms: i64) -> Fate {
    if record.created_at_ms >= before_ms {
        Fate::Stop
    } else if record.status != DeliveryStatus::Pending
        && record.next_attempt_ms.is_none()
        && settled_at(record) < before_ms
    {
        Fate::Delete
    } else {
        Fate::Keep
    }
}

/// What one slice of the mail-body sweep decides about the messages it
/// read.
#[derive(Debug, Default)]
pub(crate) struct BodySlice {
    /// Messages whose text and HTML go, as they are to be written.
    pub emptied: Vec<(u64, EmailRecord)>,
    /// Every message up to this id is settled and has no body left once
    /// `emptied` is written: later sweeps start after it.
    pub purged_to: u64,
    /// Where the next slice continues, if the sweep has more.
    pub next_after: Option<u64>,
}

/// Decides a slice of the mail-body sweep over `rows`: the messages after
/// `after.max(purged_to)` in id order, at most `budget`. A message queued
/// before `before_ms` loses its body once settled (nothing scheduled); one
/// still to be attempted keeps it, and the mark stops below it.
pub(crate) fn plan_body_slice(
    rows: Vec<(u64, EmailRecord)>,
    purged_to: u64,
    after: u64,
    before_ms: i64,
    budget: usize,
) -> BodySlice {
    let examined = rows.len();
    let last = rows.last().map(|(id, _)| *id);
    let mut slice = BodySlice {
        purged_to,
        ..BodySlice::default()
    };
    let mut settled_so_far = after <= purged_to;
    let mut reached_young = false;
    for (id, mut record) in rows {
        if record.created_at_ms >= before_ms {
            reached_young = true;
            break;
        }
        if record.next_attempt_ms.is_some() {
            settled_so_far = false;
            continue;
        }
        if !record.text.is_empty() || record.html.is_some() {
            record.text = String::new();
            record.html = None;
            slice.emptied.push((id, record));
        }
        if settled_so_far {
            slice.purged_to = id;
        }
    }
    if !reached_young && examined == budget {
        slice.next_after = last;
    }
    slice
}

impl WriteTxn<'_> {
    /// Deletes deliveries in `status` (succeeded or failed) that settled
    /// before `before_ms`, examining at most `budget` after id `after`. The
    /// newest delivery stays whatever its age: ids resume from it.
    pub(crate) fn sweep_settled_deliveries(
        &mut self,
        status: DeliveryStatus,
        before_ms: i64,
        after: u64,
        budget: usize,
    ) -> Result<Sweep, StoreError> {
        if status == DeliveryStatus::Pending {
            return Ok(Sweep::default());
        }
        let code = delivery_status_code(status);
        let last_id = self.memory.hooks.next_delivery_id.saturating_sub(1);
        let tables = self.tables()?;
        let ids: Vec<u64> = tables
            .by_status
            .range((code, after.saturating_add(1))..=(code, u64::MAX))?
            .take(budget)
            .map(|r| r.map(|(k, _)| k.value().1))
            .collect::<Result<_, _>>()?;
        let mut sweep = Sweep::default();
        for &id in &ids {
            let tables = self.tables()?;
            let Some(record) = super::get_record::<u64, DeliveryRecord>(&tables.deliveries, id)?
            else {
                continue;
            };
            match settled_delivery_fate(&record, before_ms) {
                Fate::Stop => return Ok(sweep),
                Fate::Keep => {}
                Fate::Delete => {
                    if id != last_id && self.remove_settled_delivery(id)?.is_some() {
                        sweep.removed += 1;
                    }
                }
            }
        }
        if ids.len() == budget {
            sweep.next_after = ids.last().copied();
        }
        Ok(sweep)
    }

    /// Deletes log events received before `before_ms` with their index rows
    /// and idempotency keys, examining at most `budget` after seq `after`.
    /// An event stays while anything may still need it: a delivery pending
    /// or failed (a dead letter can be retried), a tracked call (tracking
    /// retention owns those), a key not yet merged, or the log's last seq.
    pub(crate) fn sweep_events(
        &mut self,
        before_ms: i64,
        after: u64,
        budget: usize,
    ) -> Result<Sweep, StoreError> {
        let mut rows: Vec<(u64, EventRecord)> = Vec::new();
        for row in self.events.range(after.saturating_add(1)..)?.take(budget) {
            let (seq, bytes) = row?;
            rows.push((seq.value(), super::codec::decode(bytes.value())?));
        }
        let mut sweep = Sweep::default();
        for (seq, event) in &rows {
            let seq = *seq;
            // received_at never goes backwards along the log.
            if event.received_at_ms >= before_ms {
                return Ok(sweep);
            }
            if self.is_last_event(seq)
                || self.is_tracked_call(event.received_at_ms, seq)?
                || self.has_unsettled_delivery(seq)?
            {
                continue;
            }
            let tenant = event.tenant.as_deref().unwrap_or("");
            if let Some(key) = event.idempotency_key.as_deref() {
                // A held key is forgotten only by its merge; deleting its
                // event first would leave it naming nothing.
                if self.memory.recent_keys.get(tenant, key).is_some() {
                    continue;
                }
                let names_this = self
                    .event_keys
                    .get((tenant, key))?
                    .is_some_and(|v| v.value().0 == seq);
                if names_this {
                    self.event_keys.remove((tenant, key))?;
                }
            }
            self.events.remove(seq)?;
            self.events_by_type
                .remove(index_key(type_hash(&event.event_type), seq))?;
            if let Some(tenant) = event.tenant.as_deref() {
                self.events_by_tenant
                    .remove(index_key(tenant_hash(tenant), seq))?;
            }
            sweep.removed += 1;
        }
        if rows.len() == budget {
            sweep.next_after = rows.last().map(|(seq, _)| *seq);
        }
        Ok(sweep)
    }

    /// Whether a delivery of the event at `seq` is pending or failed.
    fn has_unsettled_delivery(&mut self, seq: u64) -> Result<bool, StoreError> {
        let tables = self.tables()?;
        for row in tables.by_event.range((seq, 0)..=(seq, u64::MAX))? {
            let id = row?.0.value().1;
            let status =
                super::get_record::<u64, DeliveryRecord>(&tables.deliveries, id)?.map(|d| d.status);
            if status.is_some_and(|s| s != DeliveryStatus::Succeeded) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Empties the text and HTML of settled messages queued before
    /// `before_ms`, examining at most `budget` after id `after` (or after
    /// where earlier sweeps left every message settled and purged).
    pub(crate) fn sweep_mail_bodies(
        &mut self,
        before_ms: i64,
        after: u64,
        budget: usize,
    ) -> Result<Sweep, StoreError> {
        let mut meta = self.txn.open_table(META)?;
        let purged_to = meta
            .get(BODIES_PURGED_TO)?
            .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
            .map_or(0, u64::from_le_bytes);
        let mut emails = self.txn.open_table(EMAILS)?;
        let mut rows: Vec<(u64, EmailRecord)> = Vec::new();
        for row in emails
            .range(after.max(purged_to).saturating_add(1)..)?
            .take(budget)
        {
            let (id, bytes) = row?;
            rows.push((id.value(), super::codec::decode(bytes.value())?));
        }
        let slice = plan_body_slice(rows, purged_to, after, before_ms, budget);
        for (id, record) in &slice.emptied {
            emails.insert(*id, encode(record).as_slice())?;
        }
        if slice.purged_to > purged_to {
            meta.insert(BODIES_PURGED_TO, slice.purged_to.to_le_bytes().as_slice())?;
        }
        Ok(Sweep {
            removed: slice.emptied.len(),
            next_after: slice.next_after,
        })
    }

    /// Deletes attempt tallies of minutes before `before_minute`, at most
    /// `budget` rows, seeking endpoint by endpoint from `from_endpoint`.
    /// Answers the rows deleted and the endpoint to go on from, if any.
    pub(crate) fn sweep_attempt_tallies(
        &mut self,
        before_minute: i64,
        from_endpoint: u128,
        budget: usize,
    ) -> Result<(usize, Option<u128>), StoreError> {
        let tables = self.tables()?;
        let mut removed = 0;
        let mut from = from_endpoint;
        loop {
            let first = tables
                .attempts
                .range((from, i64::MIN)..)?
                .next()
                .transpose()?
                .map(|(k, _)| k.value());
            let Some((endpoint, _)) = first else {
                return Ok((removed, None));
            };
            let old: Vec<(u128, i64)> = tables
                .attempts
                .range((endpoint, i64::MIN)..(endpoint, before_minute))?
                .take(budget - removed)
                .map(|r| r.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()?;
            for key in &old {
                tables.attempts.remove(*key)?;
            }
            removed += old.len();
            if removed == budget {
                return Ok((removed, Some(endpoint)));
            }
            match endpoint.checked_add(1) {
                Some(next) => from = next,
                None => return Ok((removed, None)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::{AttemptRecord, EmailStatus};

    fn delivery(status: DeliveryStatus, created: i64, attempts: &[i64]) -> DeliveryRecord {
        DeliveryRecord {
            endpoint_id: 1,
            event_seq: 1,
            event_id: 1,
            event_type: "t".into(),
            status,
            attempts: attempts
                .iter()
                .map(|&at_ms| AttemptRecord {
                    at_ms,
                    status_code: 200,
                    error: None,
                    failure: None,
                    latency_ms: 1,
                    response: String::new(),
                    manual: false,
                })
                .collect(),
            next_attempt_ms: None,
            created_at_ms: created,
            schedule_from: 0,
        }
    }

    #[test]
    fn a_delivery_goes_once_settled_long_enough_ago() {
        use DeliveryStatus::*;
        assert_eq!(
            settled_delivery_fate(&delivery(Succeeded, 10, &[20]), 100),
            Fate::Delete
        );
        // Created early, settled late (a retry, a recover): not yet.
        assert_eq!(
            settled_delivery_fate(&delivery(Failed, 10, &[20, 150]), 100),
            Fate::Keep
        );
        // Never attempted: its creation is when it settled.
        assert_eq!(
            settled_delivery_fate(&delivery(Failed, 10, &[]), 100),
            Fate::Delete
        );
        let mut scheduled = delivery(Failed, 10, &[20]);
        scheduled.next_attempt_ms = Some(30);
        assert_eq!(settled_delivery_fate(&scheduled, 100), Fate::Keep);
        assert_eq!(
            settled_delivery_fate(&delivery(Pending, 10, &[]), 100),
            Fate::Keep
        );
        assert_eq!(
            settled_delivery_fate(&delivery(Succeeded, 100, &[101]), 100),
            Fate::Stop
        );
    }

    fn message(created: i64, next_attempt_ms: Option<i64>) -> EmailRecord {
        EmailRecord {
            stream: "s".into(),
            tenant: None,
            from: "a@example.com".into(),
            to: "b@example.net".into(),
            reply_to: None,
            subject: "s".into(),
            text: "body".into(),
            html: Some("<p>body</p>".into()),
            headers: Vec::new(),
            tags: Vec::new(),
            message_id: "<m@example.com>".into(),
            created_at_ms: created,
            status: if next_attempt_ms.is_some() {
                EmailStatus::Deferred
            } else {
                EmailStatus::Sent
            },
            attempts: Vec::new(),
            next_attempt_ms,
            smtp_response: None,
            flagged: false,
        }
    }

    #[test]
    fn bodies_go_only_once_settled_and_the_mark_stops_below_an_unsettled_message() {
        let rows = vec![
            (1, message(10, None)),
            (2, message(10, Some(500))),
            (3, message(10, None)),
            (4, message(200, None)),
        ];
        let slice = plan_body_slice(rows, 0, 0, 100, 1_000);
        let emptied: Vec<u64> = slice.emptied.iter().map(|(id, _)| *id).collect();
        assert_eq!(emptied, [1, 3]);
        assert!(slice
            .emptied
            .iter()
            .all(|(_, r)| r.text.is_empty() && r.html.is_none() && r.subject == "s"));
        assert_eq!(slice.purged_to, 1, "message 2 is still to be attempted");
        assert_eq!(slice.next_after, None, "message 4 is too young");

        // A full slice goes on after its last message; past the mark, a
        // slice that starts after an unsettled message leaves the mark.
        let rows = vec![(5, message(10, None)), (6, message(10, None))];
        let slice = plan_body_slice(rows.clone(), 4, 4, 100, 2);
        assert_eq!((slice.purged_to, slice.next_after), (6, Some(6)));
        let slice = plan_body_slice(rows, 1, 4, 100, 2);
        assert_eq!((slice.purged_to, slice.next_after), (1, Some(6)));
    }
}
