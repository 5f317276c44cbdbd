//! An endpoint owner's alert on PostgreSQL: the streak the alert reads,
//! kept in the endpoint's row, and the alert queued as mail in the
//! transaction that saw its cause (`webhooks::owner_alert` composes it, as
//! on redb).

use tokio_postgres::Transaction;

use super::mail_txn;
use super::PgError;
use crate::store::records::{EndpointRecord, EndpointStreakRecord, FailureSummary};
use crate::webhooks::owner_alert::{self, OwnerAlerts};
use crate::webhooks::policy::OwnerAlert;

/// The columns of `herald_endpoints` that `streak` reads, in this order.
pub const STREAK_COLUMNS: &str = "failed_attempts, announced, alerted_day, last_failure";

/// The streak in the four `STREAK_COLUMNS` of `row` from `first` on. A
/// latest failure that no longer reads is left out of the alert rather
/// than failing the attempt's record.
pub fn streak(row: &tokio_postgres::Row, first: usize) -> EndpointStreakRecord {
    let last_failure: Option<&str> = row.get(first + 3);
    EndpointStreakRecord {
        failed_attempts: row.get::<_, i32>(first).max(0) as u32,
        announced: row.get(first + 1),
        alerted_day: row.get(first + 2),
        last_failure: last_failure.and_then(|text| serde_json::from_str(text).ok()),
    }
}

/// `last_failure` as its column holds it.
pub fn last_failure_column(last_failure: Option<&FailureSummary>) -> Option<String> {
    last_failure.and_then(|summary| serde_json::to_string(summary).ok())
}

/// Alerts `endpoint`'s owner about `cause` inside `txn`, unless it has no
/// owner or was alerted today; `streak.alerted_day` says which day to
/// store. The caller holds the endpoint's row lock, which every writer of
/// that row takes before the head lock the mail takes.
pub fn alert(
    txn: &Transaction<'_>,
    alerts: &OwnerAlerts,
    endpoint: &EndpointRecord,
    streak: &mut EndpointStreakRecord,
    cause: OwnerAlert,
    now_ms: i64,
) -> Result<(), PgError> {
    if endpoint.owner_email.is_none() {
        return Ok(());
    }
    mail_txn::within(txn, |mail| {
        owner_alert::alert(mail, alerts, endpoint, streak, cause, now_ms)
    })
    .map_err(|e| PgError::Mail(e.to_string()))
}
