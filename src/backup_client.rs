//! `herald backup`: downloads a consistent copy from the running daemon
//! (redb allows one open per file, so the daemon takes the snapshot), checks
//! that it opens as a Herald database, and only then moves it into place.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api_client::{ApiClient, ClientError, DownloadTimeouts};
use crate::store::Store;

/// The daemon writes the whole copy before its answer starts: a large
/// file takes minutes (24 s for a million events).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Once streaming, a pause this long means the daemon or the link is stuck.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} already exists; choose another path or remove it first")]
    Exists(PathBuf),
    #[error(transparent)]
    Api(ClientError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the copy does not open as a Herald database: {0}")]
    Invalid(String),
}

pub struct Downloaded {
    pub bytes: u64,
    pub events: u64,
    pub schema_version: u32,
}

pub fn run(client: &mut ApiClient, out: &Path) -> Result<Downloaded, BackupError> {
    if out.exists() {
        return Err(BackupError::Exists(out.to_owned()));
    }
    let partial = partial_path(out);
    let result = download(client, &partial);
    let bytes = match result {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    let checked = verify(&partial);
    let (events, schema_version) = match checked {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    let write_err = |source| BackupError::Write {
        path: out.to_owned(),
        source,
    };
    std::fs::rename(&partial, out).map_err(write_err)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(write_err)?;
    }
    Ok(Downloaded {
        bytes,
        events,
        schema_version,
    })
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

fn download(client: &mut ApiClient, partial: &Path) -> Result<u64, BackupError> {
    let write_err = |source| BackupError::Write {
        path: partial.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(partial)
        .map_err(write_err)?;
    let timeouts = DownloadTimeouts {
        head: HEAD_TIMEOUT,
        idle: IDLE_TIMEOUT,
    };
    let got = client
        .download("/v1/admin/backup", &mut file, timeouts)
        .map_err(|e| match e {
            ClientError::Write(source) => write_err(source),
            other => BackupError::Api(other),
        })?;
    file.sync_all().map_err(write_err)?;
    Ok(got)
}

/// Opens the copy the way the daemon would and counts its events.
fn verify(path: &Path) -> Result<(u64, u32), BackupError> {
    let invalid = |e: &dyn std::fmt::Display| BackupError::Invalid(e.to_string());
    let store = Store::open(path).map_err(|e| invalid(&e))?;
    let events = store
        .read()
        .and_then(|t| t.event_count())
        .map_err(|e| invalid(&e))?;
    Ok((events, crate::store::SCHEMA_VERSION))
}
