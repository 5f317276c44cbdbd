//! Dashboard sign-ins: a session cookie bound to the API key that signed
//! in, and the CSRF token every request carrying that cookie must repeat
//! in a header. On redb they are kept in memory, so a restart signs
//! everyone out; on PostgreSQL in the database every node shares.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hyper::header::{HeaderMap, COOKIE};

use super::auth::{key_hash, KeyHash};
use super::error::ApiError;
use crate::pg::sessions::{PgSessions, SessionRow};

pub const COOKIE_NAME: &str = "herald_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Live sessions at most. Signing in needs an admin key, so only an admin
/// can fill this; at the cap the session closest to expiry gives way.
pub const MAX_SESSIONS: usize = 1024;

struct Session {
    csrf: String,
    /// The key that signed in: the session grants what it grants now, and
    /// nothing once it is revoked.
    key: KeyHash,
    expires: Instant,
}

/// A new session's cookie value and CSRF token.
pub struct Started {
    pub token: String,
    pub csrf: String,
}

/// Sessions of one process.
pub struct MemorySessions {
    ttl: Duration,
    /// By the SHA-256 of the cookie value, so this map holds no usable
    /// cookie.
    live: Mutex<HashMap<KeyHash, Session>>,
}

/// Where the sessions live. An enum, as the other stores with a redb and a
/// PostgreSQL side (`EventLog`, `MailStore`, `KeyStore`): the two are
/// known here, their methods are async without boxing, and every rule
/// about tokens and the CSRF header is written once, in `Sessions`, over
/// both. On redb one process serves, so memory is enough; on PostgreSQL
/// several nodes behind a load balancer must all know a session one of
/// them started, and all forget one that any of them ended.
enum SessionStore {
    Memory(MemorySessions),
    Postgres(PgSessions),
}

/// Dashboard sessions on either backend, under one set of rules.
pub struct Sessions {
    ttl: Duration,
    store: SessionStore,
}

fn random_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        tracing::error!(error = %e, "the operating system's random source failed");
        ApiError::unavailable("no session could be made; see the server log")
    })?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The `herald_session` value among the request's cookies.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE_NAME).then_some(value.trim())
        })
}

fn csrf_header(headers: &HeaderMap) -> Option<&str> {
    headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok())
}

fn session_unknown() -> ApiError {
    let mut e = ApiError::unauthorized();
    e.message = "the dashboard session is unknown or has expired; sign in again".into();
    e
}

fn csrf_refused() -> ApiError {
    ApiError::new(
        hyper::StatusCode::FORBIDDEN,
        "csrf",
        format!("a request with the session cookie must carry its `{CSRF_HEADER}` header"),
    )
}

fn new_session() -> Result<Started, ApiError> {
    Ok(Started {
        token: random_token()?,
        csrf: random_token()?,
    })
}

fn store_failed(e: crate::pg::PgError) -> ApiError {
    tracing::error!(error = %e, "session query failed");
    ApiError::unavailable("the dashboard's sessions could not be reached; see the server log")
}

impl Sessions {
    /// Sessions kept in this process (redb).
    pub fn in_memory(ttl: Duration) -> Self {
        Sessions {
            ttl,
            store: SessionStore::Memory(MemorySessions::new(ttl)),
        }
    }

    /// Sessions kept in the database every node shares (PostgreSQL).
    pub fn shared(pg: PgSessions, ttl: Duration) -> Self {
        Sessions {
            ttl,
            store: SessionStore::Postgres(pg),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A session for the key hashing to `key`. At the cap of
    /// `MAX_SESSIONS` live ones, the session closest to expiry gives way.
    pub async fn start(&self, key: KeyHash) -> Result<Started, ApiError> {
        match &self.store {
            SessionStore::Memory(memory) => memory.start(key, Instant::now()),
            SessionStore::Postgres(pg) => {
                let started = new_session()?;
                let row = SessionRow {
                    key_hash: key,
                    csrf: started.csrf.clone(),
                };
                pg.start(&key_hash(&started.token), &row, self.ttl, MAX_SESSIONS)
                    .await
                    .map_err(store_failed)?;
                Ok(started)
            }
        }
    }

    /// Ends the session of `token`; whether there was one.
    pub async fn end(&self, token: &str) -> Result<bool, ApiError> {
        match &self.store {
            SessionStore::Memory(memory) => Ok(memory.end(token)),
            SessionStore::Postgres(pg) => pg.end(&key_hash(token)).await.map_err(store_failed),
        }
    }

    /// The key and CSRF token of a live session (the page carries the
    /// token; requests must repeat it).
    pub async fn find(&self, token: &str) -> Result<Option<(KeyHash, String)>, ApiError> {
        match &self.store {
            SessionStore::Memory(memory) => Ok(memory.find(token, Instant::now())),
            SessionStore::Postgres(pg) => Ok(pg
                .find(&key_hash(token))
                .await
                .map_err(store_failed)?
                .map(|row| (row.key_hash, row.csrf))),
        }
    }

    /// The key a request's session cookie `token` speaks for, once the
    /// request repeats the session's CSRF token: 401 for a session that is
    /// unknown or expired, 403 `csrf` for a missing or wrong header.
    pub async fn verify(&self, token: &str, headers: &HeaderMap) -> Result<KeyHash, ApiError> {
        let (key, csrf) = self.find(token).await?.ok_or_else(session_unknown)?;
        check_csrf(headers, &csrf)?;
        Ok(key)
    }
}

/// Whether `headers` repeat the session's CSRF token.
fn check_csrf(headers: &HeaderMap, csrf: &str) -> Result<(), ApiError> {
    match csrf_header(headers) {
        Some(sent) if crate::constant_time::eq(sent.as_bytes(), csrf.as_bytes()) => Ok(()),
        _ => Err(csrf_refused()),
    }
}

impl MemorySessions {
    pub fn new(ttl: Duration) -> Self {
        MemorySessions {
            ttl,
            live: Mutex::default(),
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<KeyHash, Session>> {
        // Entries are inserted and removed whole; a panic elsewhere cannot
        // leave one half-written.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A session for the key hashing to `key`.
    pub fn start(&self, key: KeyHash, now: Instant) -> Result<Started, ApiError> {
        let started = new_session()?;
        let mut live = self.live();
        live.retain(|_, s| s.expires > now);
        if live.len() >= MAX_SESSIONS {
            let soonest = live
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| *id);
            if let Some(id) = soonest {
                live.remove(&id);
            }
        }
        live.insert(
            key_hash(&started.token),
            Session {
                csrf: started.csrf.clone(),
                key,
                expires: now + self.ttl,
            },
        );
        Ok(started)
    }

    /// Ends the session of `token`; whether there was one.
    pub fn end(&self, token: &str) -> bool {
        self.live().remove(&key_hash(token)).is_some()
    }

    /// The key and CSRF token of a live session (the page carries the
    /// token; requests must repeat it).
    pub fn find(&self, token: &str, now: Instant) -> Option<(KeyHash, String)> {
        let id = key_hash(token);
        let mut live = self.live();
        match live.get(&id) {
            Some(s) if s.expires > now => Some((s.key, s.csrf.clone())),
            Some(_) => {
                live.remove(&id);
                None
            }
            None => None,
        }
    }

    /// As `Sessions::verify`, at `now`.
    pub fn verify(
        &self,
        token: &str,
        headers: &HeaderMap,
        now: Instant,
    ) -> Result<KeyHash, ApiError> {
        let (key, csrf) = self.find(token, now).ok_or_else(session_unknown)?;
        check_csrf(headers, &csrf)?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(cookie: &str, csrf: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(cookie).unwrap());
        if let Some(csrf) = csrf {
            h.insert(CSRF_HEADER, HeaderValue::from_str(csrf).unwrap());
        }
        h
    }

    #[test]
    fn a_session_needs_its_csrf_token_and_ends_at_its_ttl_or_logout() {
        let sessions = MemorySessions::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let key = key_hash("admin-key");
        let s = sessions.start(key, t0).unwrap();
        let cookie_line = format!("theme=dark; {COOKIE_NAME}={}", s.token);
        let with = headers(&cookie_line, Some(&s.csrf));
        assert_eq!(cookie(&with), Some(s.token.as_str()));
        assert_eq!(sessions.verify(&s.token, &with, t0).unwrap(), key);
        let without = headers(&cookie_line, None);
        assert_eq!(
            sessions.verify(&s.token, &without, t0).unwrap_err().code,
            "csrf"
        );
        let wrong = headers(&cookie_line, Some("x"));
        assert_eq!(
            sessions.verify(&s.token, &wrong, t0).unwrap_err().status,
            403
        );
        assert_eq!(
            sessions.verify("forged", &with, t0).unwrap_err().status,
            401
        );
        let later = t0 + Duration::from_secs(61);
        assert_eq!(
            sessions.verify(&s.token, &with, later).unwrap_err().status,
            401
        );
        let s2 = sessions.start(key, t0).unwrap();
        assert!(sessions.end(&s2.token));
        assert!(sessions.find(&s2.token, t0).is_none());
    }

    #[test]
    fn at_the_cap_the_session_closest_to_expiry_gives_way() {
        let sessions = MemorySessions::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let first = sessions.start(key_hash("k"), t0).unwrap();
        for i in 1..MAX_SESSIONS {
            sessions
                .start(key_hash("k"), t0 + Duration::from_millis(i as u64))
                .unwrap();
        }
        let newest = sessions
            .start(key_hash("k"), t0 + Duration::from_secs(1))
            .unwrap();
        assert_eq!(sessions.live().len(), MAX_SESSIONS);
        assert!(sessions.find(&first.token, t0).is_none());
        assert!(sessions.find(&newest.token, t0).is_some());
    }
}
