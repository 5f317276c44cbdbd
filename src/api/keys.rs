//! `/v1/keys`: API keys an admin creates, lists and revokes. A key is shown
//! once, in the answer that creates it; the file keeps only its hash.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::access::Role;
use super::auth::{is_unscoped_admin, key_hash, ApiKeys, Configured};
use super::error::ApiError;
use super::http::{json, query_params, read_body, require_json, Resp};
use super::read_store;
use crate::clock;
use crate::events;
use crate::ids;
use crate::names;
use crate::pg::keys::PgKeys;
use crate::store::keys::KeyChange;
use crate::store::records::ApiKeyRecord;
use crate::store::{Store, Writer};

pub const ID_PREFIX: &str = "key_";
/// Prefix of every generated key, so one found in a log or a repository is
/// recognisable as Herald's.
const KEY_PREFIX: &str = "hk_";
const KEY_RANDOM_BYTES: usize = 32;
const MAX_BODY: usize = 16 * 1024;
const MAX_DESCRIPTION_LEN: usize = 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyInput {
    role: Option<String>,
    tenant: Option<String>,
    description: Option<String>,
}

fn key_not_found(id: &str) -> ApiError {
    let shown: String = id.chars().take(64).collect();
    ApiError::not_found("key_not_found", format!("no API key has id `{shown}`"))
}

fn key_json(id: u128, record: &ApiKeyRecord) -> Value {
    json!({
        "id": ids::format(ID_PREFIX, id),
        "role": record.role,
        "tenant": record.tenant,
        "description": record.description,
        "created_at": clock::format_rfc3339(record.created_at_ms),
    })
}

/// A new key: `hk_` and 32 random bytes in hex.
fn generate_key() -> Result<String, ApiError> {
    let mut random = [0u8; KEY_RANDOM_BYTES];
    getrandom::fill(&mut random).map_err(|e| {
        tracing::error!(error = %e, "no randomness for an API key");
        ApiError::unavailable("no key could be generated; see the server log")
    })?;
    let mut key = String::with_capacity(KEY_PREFIX.len() + 2 * KEY_RANDOM_BYTES);
    key.push_str(KEY_PREFIX);
    for b in random {
        key.push_str(&format!("{b:02x}"));
    }
    Ok(key)
}

fn parse_input(body: &[u8]) -> Result<(Role, Option<String>, String), ApiError> {
    let input: KeyInput = events::from_json_object(body)?;
    let role = match input.role.as_deref() {
        None => return Err(ApiError::invalid_field("role", "is required")),
        Some(text) => Role::parse(text)
            .ok_or_else(|| ApiError::invalid_field("role", "must be `admin`, `write` or `read`"))?,
    };
    if let Some(tenant) = &input.tenant {
        if !names::is_valid_tenant(tenant) {
            return Err(ApiError::invalid_field(
                "tenant",
                "must match ^[A-Za-z0-9_.:-]{1,128}$",
            ));
        }
    }
    let description = input.description.unwrap_or_default();
    if description.len() > MAX_DESCRIPTION_LEN || description.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            "description",
            format!("at most {MAX_DESCRIPTION_LEN} bytes without control characters"),
        ));
    }
    Ok((role, input.tenant, description))
}

/// Why a change to the keys was refused.
enum Refusal {
    /// The change would leave keys in place but none that may manage them.
    NoAdminLeft,
    NotFound,
}

/// What the key routes need, whichever backend keeps the keys.
pub struct KeysApi {
    pub store: KeyStore,
    /// The keys requests are checked against, changed after each commit.
    pub live: Arc<ApiKeys>,
    pub body_timeout: Duration,
}

/// Where stored keys live.
#[derive(Clone)]
pub enum KeyStore {
    Embedded { store: Store, writer: Writer },
    Postgres(PgKeys),
}

impl KeyStore {
    async fn list(&self) -> Result<Vec<(u128, ApiKeyRecord)>, ApiError> {
        match self {
            KeyStore::Embedded { store, .. } => read_store(store, |txn| txn.api_keys()).await,
            KeyStore::Postgres(pg) => pg.all().await.map(|(_, keys)| keys).map_err(query_failed),
        }
    }

    /// The change made and, on PostgreSQL, the keys' version it made.
    async fn change<F>(
        &self,
        decide: F,
    ) -> Result<Result<(KeyChange, Option<i64>), Refusal>, ApiError>
    where
        F: FnOnce(&[(u128, ApiKeyRecord)]) -> Result<KeyChange, Refusal> + Send + 'static,
    {
        match self {
            KeyStore::Embedded { writer, .. } => Ok(writer
                .write(move |txn| txn.change_api_keys(decide))
                .await?
                .map(|change| (change, None))),
            KeyStore::Postgres(pg) => Ok(pg
                .change(decide)
                .await
                .map_err(|e| ApiError::not_acknowledged(&e))?
                .map(|(change, version)| (change, Some(version)))),
        }
    }
}

fn query_failed(e: crate::pg::PgError) -> ApiError {
    tracing::error!(error = %e, "query failed");
    ApiError::unavailable("the query failed; see the server log")
}

/// Runs a change to the stored keys and, once it is committed, applies it
/// to the keys in memory. A task of its own: a client that hangs up after
/// the commit cannot leave a revoked key working.
async fn change_keys<F>(api: &KeysApi, decide: F) -> Result<Result<(), Refusal>, ApiError>
where
    F: FnOnce(&[(u128, ApiKeyRecord)]) -> Result<KeyChange, Refusal> + Send + 'static,
{
    let (store, live) = (api.store.clone(), api.live.clone());
    let task = tokio::spawn(async move {
        let outcome = store.change(decide).await?;
        Ok::<_, ApiError>(outcome.map(|(change, version)| {
            // The version first: a reload of an older snapshot that is
            // under way then cannot undo this change.
            if let Some(version) = version {
                live.note_version(version);
            }
            match change {
                KeyChange::Put(_, record) => live.insert(&record),
                KeyChange::Remove(_, record) => live.remove(&record.key_hash),
            }
        }))
    });
    task.await
        .map_err(|_| ApiError::unavailable("the change to the keys was interrupted"))?
}

fn no_admin_left(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "no_admin_key_left",
        format!(
            "{what} would leave API keys in place but no admin key for every tenant, \
             and nobody could manage keys any more; create one first"
        ),
    )
}

pub async fn create(api: &KeysApi, req: Request<Incoming>) -> Result<Resp, ApiError> {
    require_json(req.headers())?;
    let (parts, body) = req.into_parts();
    let body = read_body(body, &parts.headers, MAX_BODY, api.body_timeout).await?;
    let (role, tenant, description) = parse_input(&body)?;
    let key = generate_key()?;
    let id = ids::new_id();
    let record = ApiKeyRecord {
        key_hash: key_hash(&key),
        role: role.as_str().to_owned(),
        tenant,
        description,
        created_at_ms: clock::now_ms(),
    };
    let stored = record.clone();
    let configured = api.live.configured();
    let outcome = change_keys(api, move |existing| {
        let after = existing.iter().map(|(_, r)| r).chain([&stored]);
        if !leaves_an_admin(configured, after) {
            return Err(Refusal::NoAdminLeft);
        }
        Ok(KeyChange::Put(id, stored))
    })
    .await?;
    if outcome.is_err() {
        return Err(
            no_admin_left("a first key that is not an admin key for every tenant")
                .with_field("role"),
        );
    }
    let mut answer = key_json(id, &record);
    answer["key"] = key.into();
    Ok(json(StatusCode::CREATED, answer.to_string()))
}

pub async fn list(api: &KeysApi, req: Request<Incoming>) -> Result<Resp, ApiError> {
    query_params(req.uri().query(), &[])?;
    let keys = api.store.list().await?;
    let list: Vec<Value> = keys.iter().map(|(id, r)| key_json(*id, r)).collect();
    Ok(json(StatusCode::OK, json!({ "keys": list }).to_string()))
}

pub async fn revoke(api: &KeysApi, id: &str) -> Result<Resp, ApiError> {
    let key = ids::parse(ID_PREFIX, id).ok_or_else(|| key_not_found(id))?;
    let configured = api.live.configured();
    let outcome = change_keys(api, move |all| {
        let Some((_, revoked)) = all.iter().find(|(k, _)| *k == key) else {
            return Err(Refusal::NotFound);
        };
        let remaining = all.iter().filter(|(k, _)| *k != key).map(|(_, r)| r);
        if !leaves_an_admin(configured, remaining) {
            return Err(Refusal::NoAdminLeft);
        }
        Ok(KeyChange::Remove(key, revoked.clone()))
    })
    .await?;
    match outcome {
        Ok(()) => Ok(json(StatusCode::NO_CONTENT, "")),
        Err(Refusal::NotFound) => Err(key_not_found(id)),
        Err(Refusal::NoAdminLeft) => Err(no_admin_left("revoking the last admin key")),
    }
}

/// Whether the configured keys and `remaining` stored ones either are no
/// keys at all (a keyless loopback API) or include an admin key for every
/// tenant.
fn leaves_an_admin<'a>(
    configured: Configured,
    remaining: impl Iterator<Item = &'a ApiKeyRecord>,
) -> bool {
    let mut any = configured.any;
    let mut admin = configured.unscoped_admin;
    for record in remaining {
        any = true;
        admin |= is_unscoped_admin(record);
    }
    !any || admin
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(role: &str, tenant: Option<&str>) -> ApiKeyRecord {
        ApiKeyRecord {
            key_hash: [0; 32],
            role: role.into(),
            tenant: tenant.map(Into::into),
            description: String::new(),
            created_at_ms: 0,
        }
    }

    #[test]
    fn generated_keys_are_long_random_and_prefixed() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert!(a.starts_with("hk_") && a.len() == 3 + 64, "{a}");
        assert!(a[3..].bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn input_is_checked_field_by_field() {
        let field = |body: &str| parse_input(body.as_bytes()).unwrap_err().field;
        assert_eq!(field(r#"{}"#).as_deref(), Some("role"));
        assert_eq!(field(r#"{"role":"root"}"#).as_deref(), Some("role"));
        assert_eq!(
            field(r#"{"role":"read","tenant":"a b"}"#).as_deref(),
            Some("tenant")
        );
        assert_eq!(
            field(r#"{"role":"read","description":"a\nb"}"#).as_deref(),
            Some("description")
        );
        assert_eq!(parse_input(b"{\"role\":1}").unwrap_err().status, 400);
        let (role, tenant, description) =
            parse_input(br#"{"role":"write","tenant":"acme","description":"ci"}"#).unwrap();
        assert_eq!(
            (role, tenant.as_deref(), description.as_str()),
            (Role::Write, Some("acme"), "ci")
        );
    }

    #[test]
    fn a_change_may_leave_no_key_or_an_admin_but_not_keys_without_one() {
        let none = Configured {
            any: false,
            unscoped_admin: false,
        };
        let scoped_only = Configured {
            any: true,
            unscoped_admin: false,
        };
        let reader = record("read", Some("acme"));
        let tenant_admin = record("admin", Some("acme"));
        let admin = record("admin", None);
        assert!(leaves_an_admin(none, [].iter()));
        assert!(!leaves_an_admin(none, [&reader].into_iter()));
        assert!(!leaves_an_admin(none, [&tenant_admin].into_iter()));
        assert!(leaves_an_admin(none, [&reader, &admin].into_iter()));
        assert!(!leaves_an_admin(scoped_only, [].iter()));
        assert!(leaves_an_admin(
            Configured {
                any: true,
                unscoped_admin: true
            },
            [&reader].into_iter()
        ));
    }
}
