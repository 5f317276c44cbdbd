//! The store owns the one redb file: its tables, the schema version, the
//! record codec and the single writer thread. Nothing outside this module
//! touches redb or a transaction's insides; callers get typed read and
//! write transactions whose methods are the operations the domain needs.

pub mod attempt_tally;
pub mod backup;
pub mod catalog;
pub mod codec;
pub mod due;
pub mod endpoint_deliveries;
#[cfg(test)]
mod fault;
pub mod feedback;
pub mod keys;
pub mod log;
pub mod mail;
pub mod mail_export;
pub mod mail_txn;
pub mod overview;
pub(crate) mod recent_keys;
pub(crate) mod recent_tracked;
pub mod records;
pub mod retention;
mod schema;
pub mod streams;
pub mod tables;
pub mod tracking;
pub mod tracking_export;
pub mod usage;
pub mod webhooks;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable};

pub use due::{DueChange, Queue, ScheduleNote};
pub use log::{EventCursor, EventFilter};
pub use schema::SCHEMA_VERSION;
pub use writer::{SubmitError, Writer};

use tables::{EVENTS, EVENTS_BY_TENANT, EVENTS_BY_TYPE, EVENT_KEYS, META, RECENT_EVENT_KEYS};

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
    Database { path: PathBuf, source: StoreError },
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
    /// A file beside the database (a backup, randomness for a secret).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The PostgreSQL backend's database, running the same rules.
    #[error("{0}")]
    Database(String),
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
    redb::DatabaseError,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::SetDurabilityError,
    redb::CompactionError
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
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| OpenError::Database {
                path: path.to_owned(),
                source: e.into(),
            })?;
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
        schema::prepare(&db).map_err(|e| match e {
            schema::PrepareError::Newer(found) => OpenError::NewerSchema {
                path: path.to_owned(),
                found,
                supported: SCHEMA_VERSION,
            },
            schema::PrepareError::Damaged(detail) => OpenError::Damaged {
                path: path.to_owned(),
                detail,
            },
            schema::PrepareError::Store(source) => OpenError::Database {
                path: path.to_owned(),
                source,
            },
        })?;
        Ok(Store { db: Arc::new(db) })
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
        getrandom::fill(&mut secret).map_err(|e| std::io::Error::other(e.to_string()))?;
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(key.as_str(), secret.as_slice())?;
        }
        txn.commit()?;
        Ok(secret)
    }

    fn database(&self) -> &Database {
        &self.db
    }
}

/// A read-only snapshot of the whole file.
pub struct ReadTxn {
    txn: redb::ReadTransaction,
}

/// The tables of one write transaction, opened once per group commit and
/// handed to every operation in it, with the writer's memory of the file.
pub struct WriteTxn<'txn> {
    events: redb::Table<'txn, u64, &'static [u8]>,
    event_keys: redb::Table<'txn, (&'static str, &'static str), (u64, u64)>,
    recent_event_keys: redb::Table<'txn, u64, (&'static str, &'static str, u64)>,
    events_by_type: redb::Table<'txn, u128, ()>,
    events_by_tenant: redb::Table<'txn, u128, ()>,
    /// Opened on first use: most commits touch no webhook table, and each
    /// table opened in a write transaction costs that commit time.
    hook_tables: Option<webhooks::HookTables<'txn>>,
    /// Opened on first use, like `hook_tables`.
    due: Option<redb::Table<'txn, (u8, u128, u64, u64), ()>>,
    /// Opened on first use, like `hook_tables`.
    track_tables: Option<tracking::TrackTables<'txn>>,
    txn: &'txn redb::WriteTransaction,
    memory: &'txn mut writer::WriterMemory,
}

impl<'txn> WriteTxn<'txn> {
    fn open(
        txn: &'txn redb::WriteTransaction,
        memory: &'txn mut writer::WriterMemory,
    ) -> Result<Self, StoreError> {
        Ok(WriteTxn {
            events: txn.open_table(EVENTS)?,
            event_keys: txn.open_table(EVENT_KEYS)?,
            recent_event_keys: txn.open_table(RECENT_EVENT_KEYS)?,
            events_by_type: txn.open_table(EVENTS_BY_TYPE)?,
            events_by_tenant: txn.open_table(EVENTS_BY_TENANT)?,
            hook_tables: None,
            due: None,
            track_tables: None,
            txn,
            memory,
        })
    }
}

impl WriteTxn<'_> {
    /// The held idempotency keys' sweep, one slice: after the group's own
    /// operations, so their keys count toward the slice.
    fn sweep_held_keys(&mut self) -> Result<(), StoreError> {
        let next_seq = self.memory.log.next_seq;
        self.memory.recent_keys.sweep_step(
            recent_keys::SweepTables {
                event_keys: &mut self.event_keys,
                journal: &mut self.recent_event_keys,
            },
            next_seq,
        )
    }
}

/// SHA-256 over a domain byte and length-prefixed parts: the hashes that
/// stand for names in keys (people, message ids, streams). Each use has its
/// own domain, and the values are part of the file format.
fn digest(domain: u8, parts: &[&str]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update([domain]);
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

/// Rows one page may examine beyond those it returns, so that a filter
/// matching nothing cannot make one request scan a whole table.
const EXAMINE_BUDGET: usize = 10_000;

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
