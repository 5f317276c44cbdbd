//! Which grant a request's API key carries: keys from the config, compared
//! in constant time, then keys created through the API, found by hash in
//! memory so that authenticating never reads the file.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use hyper::header::HeaderMap;
use sha2::{Digest, Sha256};

use super::access::{Access, Role};
use super::error::ApiError;
use super::http::bearer;
use crate::config::KeySetting;
use crate::store::records::ApiKeyRecord;

/// What a stored key is known by: the SHA-256 of the key.
pub type KeyHash = [u8; 32];

pub fn key_hash(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// What the configured keys allow, which decisions about stored keys need.
#[derive(Debug, Clone, Copy)]
pub struct Configured {
    /// Any key at all is configured: the API is closed to keyless callers.
    pub any: bool,
    /// One of them is an admin key for every tenant.
    pub unscoped_admin: bool,
}

/// The grant of a stored key, or `None` if its role is not one this
/// binary knows (then the key grants nothing).
pub fn stored_access(record: &ApiKeyRecord) -> Option<Access> {
    Some(Access {
        role: Role::parse(&record.role)?,
        tenant: record.tenant.clone(),
    })
}

/// Whether a key grants everything: key management needs one to remain.
pub fn is_unscoped_admin(record: &ApiKeyRecord) -> bool {
    record.role == Role::Admin.as_str() && record.tenant.is_none()
}

pub struct ApiKeys {
    /// Configured keys by hash: comparing fixed-length digests keeps a
    /// key's length out of the time a comparison takes.
    configured: Vec<(KeyHash, Access)>,
    /// Stored keys by hash. Changed only after the commit that created or
    /// deleted the key.
    stored: RwLock<HashMap<KeyHash, Access>>,
    /// On PostgreSQL, the latest change to the stored keys applied here.
    version: AtomicI64,
}

impl ApiKeys {
    pub fn new(configured: &[KeySetting], stored: &[(u128, ApiKeyRecord)]) -> Self {
        let keys = ApiKeys {
            configured: configured
                .iter()
                .map(|k| {
                    let access = Access {
                        role: k.role,
                        tenant: k.tenant.clone(),
                    };
                    (key_hash(&k.key), access)
                })
                .collect(),
            stored: RwLock::default(),
            version: AtomicI64::new(0),
        };
        for (_, record) in stored {
            keys.insert(record);
        }
        keys
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<KeyHash, Access>> {
        // The map is replaced entry by entry; a panic elsewhere cannot leave
        // one half-written.
        self.stored.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<KeyHash, Access>> {
        self.stored.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn configured(&self) -> Configured {
        Configured {
            any: !self.configured.is_empty(),
            unscoped_admin: self
                .configured
                .iter()
                .any(|(_, a)| a.role == Role::Admin && a.tenant.is_none()),
        }
    }

    /// No key exists, configured or stored: every (loopback) caller is admin.
    pub fn is_open(&self) -> bool {
        self.configured.is_empty() && self.read().is_empty()
    }

    /// A stored key, once its creation is committed.
    pub fn insert(&self, record: &ApiKeyRecord) {
        match stored_access(record) {
            Some(access) => {
                self.write().insert(record.key_hash, access);
            }
            None => {
                tracing::warn!(role = %record.role, "a stored API key has an unknown role; it grants nothing")
            }
        }
    }

    /// Records that the stored keys in memory include every change up to
    /// `version` (PostgreSQL's count of key changes).
    pub fn note_version(&self, version: i64) {
        self.version.fetch_max(version, Ordering::SeqCst);
    }

    /// Replaces every stored key with `stored`, read at `version`, unless
    /// this node already applied a later change of its own: another node
    /// changed them, and an older snapshot must not undo a newer change.
    pub fn replace_stored_at(&self, version: i64, stored: &[(u128, ApiKeyRecord)]) {
        let fresh: HashMap<KeyHash, Access> = stored
            .iter()
            .filter_map(|(_, record)| Some((record.key_hash, stored_access(record)?)))
            .collect();
        let mut keys = self.write();
        if version >= self.version.load(Ordering::SeqCst) {
            *keys = fresh;
            self.note_version(version);
        }
    }

    /// Forgets a stored key, once its deletion is committed.
    pub fn remove(&self, hash: &KeyHash) {
        self.write().remove(hash);
    }

    /// The grant of the key `headers` present. While no key exists at all
    /// (loopback only), every caller is an admin.
    pub fn check(&self, headers: &HeaderMap) -> Result<Access, ApiError> {
        if self.is_open() {
            return Ok(Access::admin());
        }
        let presented = key_hash(bearer(headers).ok_or_else(ApiError::unauthorized)?);
        self.grant_of_hash(&presented)
            .ok_or_else(ApiError::unauthorized)
    }

    /// The grant of the key whose SHA-256 is `presented`, if it exists.
    pub fn grant_of_hash(&self, presented: &KeyHash) -> Option<Access> {
        // Every configured key is compared, so the time taken does not tell
        // which (or whether an early one) matched.
        let mut granted = None;
        for (key, access) in &self.configured {
            if crate::constant_time::eq(key, presented) {
                granted = Some(access);
            }
        }
        if let Some(access) = granted {
            return Some(access.clone());
        }
        // A lookup by hash tells an observer nothing about the key's bytes.
        self.read().get(presented).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::{HeaderValue, AUTHORIZATION};

    fn with(keys: &ApiKeys, value: &'static str) -> Result<Access, ApiError> {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static(value));
        keys.check(&h)
    }

    fn stored(key: &str, role: &str, tenant: Option<&str>) -> ApiKeyRecord {
        ApiKeyRecord {
            key_hash: key_hash(key),
            role: role.into(),
            tenant: tenant.map(Into::into),
            description: String::new(),
            created_at_ms: 0,
        }
    }

    #[test]
    fn configured_keys_must_match_exactly_and_grant_their_scope() {
        let admin = KeySetting {
            key: "secret-key-0123456789".into(),
            role: Role::Admin,
            tenant: None,
        };
        let reader = KeySetting {
            key: "acme-reader-0123456789abcdef".into(),
            role: Role::Read,
            tenant: Some("acme".into()),
        };
        let keys = ApiKeys::new(&[admin, reader], &[]);
        assert!(keys.check(&HeaderMap::new()).is_err());
        assert_eq!(
            with(&keys, "Bearer secret-key-0123456789").unwrap(),
            Access::admin()
        );
        assert_eq!(
            with(&keys, "Bearer acme-reader-0123456789abcdef").unwrap(),
            Access {
                role: Role::Read,
                tenant: Some("acme".into())
            }
        );
        assert!(with(&keys, "Bearer secret-key-012345678").is_err());
        assert!(with(&keys, "Basic secret-key-0123456789").is_err());
        assert!(ApiKeys::new(&[], &[]).check(&HeaderMap::new()).is_ok());
    }

    #[test]
    fn stored_keys_close_a_keyless_api_and_grant_their_scope_until_removed() {
        let keys = ApiKeys::new(&[], &[]);
        assert!(keys.is_open());
        let record = stored("hk_stored_key_0123456789abcdef", "write", Some("acme"));
        keys.insert(&record);
        assert!(!keys.is_open());
        assert_eq!(keys.check(&HeaderMap::new()).unwrap_err().status, 401);
        assert_eq!(
            with(&keys, "Bearer hk_stored_key_0123456789abcdef").unwrap(),
            Access {
                role: Role::Write,
                tenant: Some("acme".into())
            }
        );
        assert!(with(&keys, "Bearer hk_stored_key_0123456789abcdeF").is_err());
        keys.remove(&record.key_hash);
        assert!(keys.is_open());
    }

    #[test]
    fn a_stored_key_of_an_unknown_role_grants_nothing() {
        let keys = ApiKeys::new(
            &[],
            &[
                (1, stored("hk_owner_0123456789abcdef", "admin", None)),
                (2, stored("hk_future_0123456789abcdef", "auditor", None)),
            ],
        );
        assert!(with(&keys, "Bearer hk_owner_0123456789abcdef").is_ok());
        assert_eq!(
            with(&keys, "Bearer hk_future_0123456789abcdef")
                .unwrap_err()
                .status,
            401
        );
    }
}
