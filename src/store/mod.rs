//! The store owns the one redb file: its tables, the schema version, the
//! record codec and the single writer thread. Nothing outside this module
//! touches redb; callers get typed read and write transactions.

pub mod backup;
pub mod codec;
pub mod event_log;
#[cfg(test)]
mod fault;
pub mod mail;
pub mod recent_keys;
pub mod recent_tracked;
pub mod tracking;
pub mod webhooks;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

pub use event_log::{EventCursor, EventFilter};
pub use writer::{SubmitError, Writer};

/// Bumped when a table's key or value layout changes. A file whose version is
/// newer than this binary's is refused instead of misread.
pub const SCHEMA_VERSION: u32 = 1;

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// seq → encoded `EventRecord`. Sequence numbers are dense and start at 1.
pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// (tenant or "", idempotency key) → (seq, request fingerprint). Keyed by the
/// names themselves, not a hash: merged keys that sort together (time or
/// counter prefixes) then share leaves. New keys reach it in bulk through
/// `recent_keys`.
pub(crate) const EVENT_KEYS: TableDefinition<(&str, &str), (u64, u64)> =
    TableDefinition::new("event_keys");
/// hash(type) << 64 | seq → (): pages of one event type without scanning the log.
pub(crate) const EVENTS_BY_TYPE: TableDefinition<u128, ()> = TableDefinition::new("events_by_type");
/// hash(tenant) << 64 | seq → (): pages of one tenant without scanning the log.
pub(crate) const EVENTS_BY_TENANT: TableDefinition<u128, ()> =
    TableDefinition::new("events_by_tenant");

const SCHEMA_KEY: &str = "schema_version";
/// Page cache for opens outside the daemon (backup checks, tests).
const DEFAULT_CACHE_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open database {path}: {source}")]
    Database { path: PathBuf, source: redb::Error },
    #[error(
        "database {path} has schema version {found}, newer than this binary's {supported}; \
         run a herald release that supports it"
    )]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("database {path} is damaged: {detail}")]
    Damaged { path: PathBuf, detail: String },
}

/// A storage failure during a transaction. Callers answer 503: nothing of the
/// failed transaction was committed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Redb(#[from] redb::Error),
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
}

macro_rules! redb_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Redb(e.into())
            }
        }
    )*};
}
redb_error_from!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError
);

/// Shared handle to the open database. Cloning is cheap; the file closes when
/// the last clone is dropped.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
}

impl Store {
    /// Opens (or creates) the database file, creating its directory, checking
    /// the schema version and making sure every table exists.
    pub fn open(path: &Path) -> Result<Store, OpenError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// As `open`, with `cache_bytes` of redb page cache.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Store, OpenError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OpenError::DataDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let db_err = |source: redb::Error| OpenError::Database {
            path: path.to_owned(),
            source,
        };
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| db_err(e.into()))?;
        Self::prepare(db, path)
    }

    /// Opens a database on a custom backend (tests inject I/O faults this way).
    #[cfg(test)]
    pub(crate) fn open_on(
        backend: impl redb::StorageBackend,
        path: &Path,
    ) -> Result<Store, OpenError> {
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(|e| OpenError::Database {
                path: path.to_owned(),
                source: e.into(),
            })?;
        Self::prepare(db, path)
    }

    fn prepare(db: Database, path: &Path) -> Result<Store, OpenError> {
        let db_err = |source: redb::Error| OpenError::Database {
            path: path.to_owned(),
            source,
        };
        let store = Store { db: Arc::new(db) };
        store.prepare_schema().map_err(|e| match e {
            PrepareError::Newer(found) => OpenError::NewerSchema {
                path: path.to_owned(),
                found,
                supported: SCHEMA_VERSION,
            },
            PrepareError::Damaged(detail) => OpenError::Damaged {
                path: path.to_owned(),
                detail,
            },
            PrepareError::Redb(e) => db_err(e),
        })?;
        Ok(store)
    }

    fn prepare_schema(&self) -> Result<(), PrepareError> {
        let txn = self.db.begin_write().map_err(redb::Error::from)?;
        {
            let mut meta = txn.open_table(META).map_err(redb::Error::from)?;
            let found = meta
                .get(SCHEMA_KEY)
                .map_err(redb::Error::from)?
                .map(|v| v.value().to_vec());
            match found {
                None => {
                    meta.insert(SCHEMA_KEY, SCHEMA_VERSION.to_le_bytes().as_slice())
                        .map_err(redb::Error::from)?;
                }
                Some(bytes) => {
                    let bytes: [u8; 4] = bytes.as_slice().try_into().map_err(|_| {
                        PrepareError::Damaged(format!(
                            "meta.{SCHEMA_KEY} holds {} bytes, expected 4",
                            bytes.len()
                        ))
                    })?;
                    let found = u32::from_le_bytes(bytes);
                    if found > SCHEMA_VERSION {
                        return Err(PrepareError::Newer(found));
                    }
                    // Older versions would be migrated here, inside this
                    // transaction; version 1 is the first.
                }
            }
            // Creating every table up front lets readers open them without
            // racing the first write.
            txn.open_table(EVENTS).map_err(redb::Error::from)?;
            txn.open_table(EVENT_KEYS).map_err(redb::Error::from)?;
            txn.open_table(recent_keys::RECENT_EVENT_KEYS)
                .map_err(redb::Error::from)?;
            txn.open_table(EVENTS_BY_TYPE).map_err(redb::Error::from)?;
            txn.open_table(EVENTS_BY_TENANT)
                .map_err(redb::Error::from)?;
            txn.open_table(webhooks::ENDPOINTS)
                .map_err(redb::Error::from)?;
            txn.open_table(webhooks::DELIVERIES)
                .map_err(redb::Error::from)?;
            txn.open_table(webhooks::DELIVERIES_DUE)
                .map_err(redb::Error::from)?;
            txn.open_table(webhooks::DELIVERIES_BY_ENDPOINT)
                .map_err(redb::Error::from)?;
            txn.open_table(webhooks::DELIVERIES_BY_EVENT)
                .map_err(redb::Error::from)?;
            mail::create_tables(&txn).map_err(redb::Error::from)?;
            tracking::create_tables(&txn).map_err(redb::Error::from)?;
            txn.open_table(recent_tracked::RECENT_TRACKED)
                .map_err(redb::Error::from)?;
        }
        txn.commit().map_err(redb::Error::from)?;
        Ok(())
    }

    /// A consistent snapshot for queries. It never waits for the writer.
    pub fn read(&self) -> Result<ReadTxn, StoreError> {
        Ok(ReadTxn {
            txn: self.db.begin_read()?,
        })
    }

    /// Whether a read transaction can be opened: the readiness probe.
    pub fn is_readable(&self) -> bool {
        match self.db.begin_read() {
            Ok(txn) => txn.open_table(META).is_ok(),
            Err(_) => false,
        }
    }

    /// A 32-byte secret kept in the file (created on first use), so that
    /// what it signs stays valid across restarts and travels with backups.
    pub fn persistent_secret(&self, name: &str) -> Result<[u8; 32], StoreError> {
        let key = format!("secret.{name}");
        {
            let txn = self.db.begin_read()?;
            let meta = txn.open_table(META)?;
            if let Some(bytes) = meta.get(key.as_str())? {
                if let Ok(secret) = <[u8; 32]>::try_from(bytes.value()) {
                    return Ok(secret);
                }
            }
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|e| StoreError::Redb(redb::Error::Io(std::io::Error::other(e.to_string()))))?;
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(key.as_str(), secret.as_slice())?;
        }
        txn.commit()?;
        Ok(secret)
    }

    pub(crate) fn database(&self) -> &Database {
        &self.db
    }
}

enum PrepareError {
    Newer(u32),
    Damaged(String),
    Redb(redb::Error),
}

impl From<redb::Error> for PrepareError {
    fn from(e: redb::Error) -> Self {
        PrepareError::Redb(e)
    }
}

/// A read-only snapshot of the whole file.
pub struct ReadTxn {
    txn: redb::ReadTransaction,
}

/// The tables of one write transaction, opened once per group commit and
/// handed to every operation in it.
pub struct WriteTxn<'txn> {
    pub(crate) events: redb::Table<'txn, u64, &'static [u8]>,
    pub(crate) event_keys: redb::Table<'txn, (&'static str, &'static str), (u64, u64)>,
    pub(crate) recent_event_keys: redb::Table<'txn, u64, (&'static str, &'static str, u64)>,
    pub(crate) recent_keys: &'txn mut recent_keys::RecentKeys,
    pub(crate) recent_tracked: &'txn mut recent_tracked::RecentTracked,
    /// Opened on first use: most commits touch no webhook table, and each
    /// table opened in a write transaction costs that commit time.
    pub(crate) hook_tables: Option<webhooks::HookTables<'txn>>,
    pub(crate) txn: &'txn redb::WriteTransaction,
    pub(crate) hooks: &'txn mut webhooks::HookState,
    pub(crate) events_by_type: redb::Table<'txn, u128, ()>,
    pub(crate) events_by_tenant: redb::Table<'txn, u128, ()>,
    pub(crate) log: &'txn mut event_log::LogState,
}

impl<'txn> WriteTxn<'txn> {
    fn open(
        txn: &'txn redb::WriteTransaction,
        log: &'txn mut event_log::LogState,
        recent_keys: &'txn mut recent_keys::RecentKeys,
        recent_tracked: &'txn mut recent_tracked::RecentTracked,
        hooks: &'txn mut webhooks::HookState,
    ) -> Result<Self, StoreError> {
        Ok(WriteTxn {
            events: txn.open_table(EVENTS)?,
            event_keys: txn.open_table(EVENT_KEYS)?,
            recent_event_keys: txn.open_table(recent_keys::RECENT_EVENT_KEYS)?,
            recent_keys,
            recent_tracked,
            hook_tables: None,
            txn,
            hooks,
            events_by_type: txn.open_table(EVENTS_BY_TYPE)?,
            events_by_tenant: txn.open_table(EVENTS_BY_TENANT)?,
            log,
        })
    }
}

/// Rows one page may examine beyond those it returns, so that a filter
/// matching nothing cannot make one request scan a whole table.
pub(crate) const EXAMINE_BUDGET: usize = 10_000;

/// A page of (id, record) and where the next page starts, if there may be one.
type IdPage<R> = (Vec<(u64, R)>, Option<u64>);

/// Records looked up by the ids `ids` yields (ascending, after `after`):
/// at most `limit` that pass `wanted`, and where the next page starts when
/// there may be one.
fn page_by_ids<R: codec::Record>(
    ids: impl Iterator<Item = Result<u64, StoreError>>,
    records: &impl ReadableTable<u64, &'static [u8]>,
    after: u64,
    limit: usize,
    wanted: impl Fn(&R) -> bool,
) -> Result<IdPage<R>, StoreError> {
    let mut page = Vec::new();
    let mut last = after;
    for (examined, id) in ids.enumerate() {
        let id = id?;
        if examined == limit + EXAMINE_BUDGET {
            return Ok((page, Some(last)));
        }
        let Some(record) = get_record::<u64, R>(records, id)? else {
            continue;
        };
        if !wanted(&record) {
            last = id;
            continue;
        }
        if page.len() == limit {
            return Ok((page, Some(last)));
        }
        last = id;
        page.push((id, record));
    }
    Ok((page, None))
}

/// The record stored under `key`, decoded.
fn get_record<'k, K: redb::Key + 'static, R: codec::Record>(
    table: &impl ReadableTable<K, &'static [u8]>,
    key: impl std::borrow::Borrow<K::SelfType<'k>>,
) -> Result<Option<R>, StoreError> {
    match table.get(key)? {
        Some(bytes) => Ok(Some(codec::decode(bytes.value())?)),
        None => Ok(None),
    }
}

/// The last entry of a table keyed by u64, used to resume counters at start.
fn last_u64_key<V: redb::Value + 'static>(
    table: &impl ReadableTable<u64, V>,
) -> Result<Option<u64>, StoreError> {
    Ok(table.last()?.map(|(k, _)| k.value()))
}
