//! Dashboard sessions on PostgreSQL (`herald_sessions`): what the nodes
//! behind one load balancer share, so a session one node started is
//! accepted by every node and a sign-out on one ends it on all. The rules
//! (tokens, the CSRF check, which key still grants) are `api::sessions`';
//! this is only where the rows live. Expiry is by the database's clock.

use std::time::Duration;

use deadpool_postgres::Pool;

use super::PgError;

/// Serializes sign-ins across nodes, so the count checked against the cap
/// is still the count when the new row goes in. Any constant no other tool
/// on the database is likely to use (the migrations take the one before).
const SIGN_IN_LOCK: i64 = 0x6865_7261_6c64_0002;

/// A live session's row: the hash of the key that signed in, and the CSRF
/// token requests must repeat.
pub struct SessionRow {
    pub key_hash: [u8; 32],
    pub csrf: String,
}

#[derive(Clone)]
pub struct PgSessions {
    pool: Pool,
}

impl PgSessions {
    pub fn new(pool: Pool) -> PgSessions {
        PgSessions { pool }
    }

    /// Stores a session under `token_hash` for `ttl`. Expired sessions go
    /// first; then, while `cap` are live, those closest to expiry give way.
    /// So the table never holds more than `cap` rows after a sign-in, and
    /// needs no sweep of its own.
    pub async fn start(
        &self,
        token_hash: &[u8; 32],
        session: &SessionRow,
        ttl: Duration,
        cap: usize,
    ) -> Result<(), PgError> {
        let mut client = self.pool.get().await?;
        let txn = client.transaction().await?;
        txn.execute("SELECT pg_advisory_xact_lock($1)", &[&SIGN_IN_LOCK])
            .await?;
        txn.execute("DELETE FROM herald_sessions WHERE expires_at <= now()", &[])
            .await?;
        let live: i64 = txn
            .query_one("SELECT count(*) FROM herald_sessions", &[])
            .await?
            .get(0);
        let over = live - cap as i64 + 1;
        if over > 0 {
            txn.execute(
                "DELETE FROM herald_sessions WHERE token_hash IN \
                 (SELECT token_hash FROM herald_sessions ORDER BY expires_at LIMIT $1)",
                &[&over],
            )
            .await?;
        }
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        txn.execute(
            "INSERT INTO herald_sessions (token_hash, key_hash, csrf, expires_at) \
             VALUES ($1, $2, $3, now() + $4::bigint * interval '1 millisecond')",
            &[
                &token_hash.as_slice(),
                &session.key_hash.as_slice(),
                &session.csrf,
                &ttl_ms,
            ],
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// The session stored under `token_hash`, if it has not expired; an
    /// expired one is deleted on the way.
    pub async fn find(&self, token_hash: &[u8; 32]) -> Result<Option<SessionRow>, PgError> {
        let client = self.pool.get().await?;
        let Some(row) = client
            .query_opt(
                "SELECT key_hash, csrf, expires_at > now() FROM herald_sessions \
                 WHERE token_hash = $1",
                &[&token_hash.as_slice()],
            )
            .await?
        else {
            return Ok(None);
        };
        if !row.get::<_, bool>(2) {
            client
                .execute(
                    "DELETE FROM herald_sessions WHERE token_hash = $1 AND expires_at <= now()",
                    &[&token_hash.as_slice()],
                )
                .await?;
            return Ok(None);
        }
        let key_hash = <[u8; 32]>::try_from(row.get::<_, &[u8]>(0))
            .map_err(|_| PgError::Damaged("a session's key hash is not 32 bytes".into()))?;
        Ok(Some(SessionRow {
            key_hash,
            csrf: row.get(1),
        }))
    }

    /// Ends the session stored under `token_hash`; whether there was one.
    pub async fn end(&self, token_hash: &[u8; 32]) -> Result<bool, PgError> {
        let client = self.pool.get().await?;
        let deleted = client
            .execute(
                "DELETE FROM herald_sessions WHERE token_hash = $1",
                &[&token_hash.as_slice()],
            )
            .await?;
        Ok(deleted > 0)
    }
}
