//! Enabling and disabling an endpoint on PostgreSQL, with the owner's
//! alert that an operator's disable calls for, in one transaction.

use deadpool_postgres::Pool;

use super::owner_alerts;
use super::webhooks::{bump_version, id_bytes};
use super::PgError;
use crate::clock;
use crate::store::codec;
use crate::store::records::EndpointRecord;
use crate::webhooks::ledger::switch_enabled;
use crate::webhooks::owner_alert::OwnerAlerts;
use crate::webhooks::policy::OwnerAlert;

/// Enables or disables endpoint `id` (`ledger::switch_enabled`);
/// disabling an enabled one alerts its owner when `alerts` is given.
/// `None` when there is no such endpoint or `visible` says no.
pub async fn set_enabled(
    pool: &Pool,
    id: u128,
    visible: impl FnOnce(&EndpointRecord) -> bool,
    enabled: bool,
    alerts: Option<&OwnerAlerts>,
) -> Result<Option<EndpointRecord>, PgError> {
    let mut client = pool.get().await?;
    let txn = client.transaction().await?;
    let key = id_bytes(id);
    let Some(row) = txn
        .query_opt(
            &format!(
                "SELECT record, {} FROM herald_endpoints WHERE id = $1 FOR UPDATE",
                owner_alerts::STREAK_COLUMNS
            ),
            &[&key],
        )
        .await?
    else {
        return Ok(None);
    };
    let mut endpoint: EndpointRecord = codec::decode(row.get::<_, &[u8]>(0))?;
    if !visible(&endpoint) {
        return Ok(None);
    }
    let now = clock::now_ms();
    let newly_disabled = switch_enabled(&mut endpoint, enabled, now);
    txn.execute(
        "UPDATE herald_endpoints SET enabled = $2, record = $3 WHERE id = $1",
        &[&key, &endpoint.enabled, &codec::encode(&endpoint)],
    )
    .await?;
    bump_version(&txn).await?;
    // The version row before the head lock the alert's mail takes, as
    // an attempt's record takes them.
    if let (Some(alerts), true) = (alerts, newly_disabled) {
        let mut streak = owner_alerts::streak(&row, 1);
        let cause = OwnerAlert::Disabled;
        owner_alerts::alert(&txn, alerts, &endpoint, &mut streak, cause, now)?;
        txn.execute(
            "UPDATE herald_endpoints SET alerted_day = $2 WHERE id = $1",
            &[&key, &streak.alerted_day],
        )
        .await?;
    }
    txn.commit().await?;
    Ok(Some(endpoint))
}
