//! Where a `herald migrate` run stands, as each of its chunks checks: the
//! log head and the import row, locked in the order nodes lock them.

use tokio_postgres::Transaction;

use super::PgError;
use crate::store::StoreError;

/// Why a pass over the webhook or mail tables stopped.
pub enum Halt {
    Pg(PgError),
    Read(StoreError),
    /// Another run or a node wrote to the database meanwhile.
    Refused(String),
}

impl From<PgError> for Halt {
    fn from(e: PgError) -> Self {
        Halt::Pg(e)
    }
}

impl From<StoreError> for Halt {
    fn from(e: StoreError) -> Self {
        Halt::Read(e)
    }
}

/// The log head and the import row, locked for the transaction.
pub struct Held {
    pub last_received_ms: i64,
    /// Whether the import row exists.
    pub imported: bool,
}

/// Locks the log head, then the import row, and checks that both stand
/// where this run left them: `expected` is the seq the import reached
/// (`None`: no import began). `Err(reason)` if another run or a node
/// changed the database since.
pub async fn hold(
    txn: &Transaction<'_>,
    expected: Option<u64>,
) -> Result<Result<Held, String>, PgError> {
    // Locked in the order nodes' committers lock the head: no deadlock.
    let head = txn
        .query_one(
            "SELECT next_seq, last_received_ms FROM herald_log_head WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await?;
    let next_seq: i64 = head.get(0);
    let through: Option<i64> = txn
        .query_opt(
            "SELECT copied_through_seq FROM herald_import WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await?
        .map(|row| row.get(0));
    if through.map(|t| t as u64) != expected || next_seq != as_i64(expected.unwrap_or(0))? + 1 {
        return Ok(Err(format!(
            "the database changed during the copy (the log continues at seq {next_seq}, \
             the import stands at {}): another `herald migrate` or a node wrote to it",
            through.map_or("nothing".to_owned(), |t| format!("seq {t}"))
        )));
    }
    Ok(Ok(Held {
        last_received_ms: head.get(1),
        imported: through.is_some(),
    }))
}

pub fn as_i64(n: u64) -> Result<i64, PgError> {
    i64::try_from(n).map_err(|_| PgError::Damaged(format!("{n} does not fit a bigint")))
}
