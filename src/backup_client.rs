//! `herald backup`: downloads a consistent copy from the running daemon
//! (redb allows one open per file, so the daemon takes the snapshot), checks
//! that it opens as a Herald database, and only then moves it into place.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;

use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} already exists; choose another path or remove it first")]
    Exists(PathBuf),
    #[error("`{0}` is not a URL like http://127.0.0.1:8425")]
    BadUrl(String),
    #[error("cannot reach the daemon at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("HTTP exchange with the daemon failed: {0}")]
    Http(String),
    #[error("the daemon refused the backup ({status}): {body}")]
    Refused { status: u16, body: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the download was cut short: got {got} of {expected} bytes")]
    Truncated { got: u64, expected: u64 },
    #[error("the copy does not open as a Herald database: {0}")]
    Invalid(String),
}

pub struct Downloaded {
    pub bytes: u64,
    pub events: u64,
    pub schema_version: u32,
}

/// `http://host:port` → `host:port`. Only plain HTTP: the API is local.
fn authority(url: &str) -> Result<String, BackupError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| BackupError::BadUrl(url.to_owned()))?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(BackupError::BadUrl(url.to_owned()));
    }
    Ok(authority.to_owned())
}

pub fn run(url: &str, api_key: Option<&str>, out: &Path) -> Result<Downloaded, BackupError> {
    if out.exists() {
        return Err(BackupError::Exists(out.to_owned()));
    }
    let authority = authority(url)?;
    let partial = partial_path(out);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BackupError::Http(e.to_string()))?;
    let result = runtime.block_on(download(&authority, api_key, &partial));
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

async fn download(
    authority: &str,
    api_key: Option<&str>,
    partial: &Path,
) -> Result<u64, BackupError> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|source| BackupError::Connect {
            addr: authority.to_owned(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| BackupError::Http(e.to_string()))?;
    tokio::spawn(conn);
    let mut req = Request::get("/v1/admin/backup").header(HOST, authority);
    if let Some(key) = api_key {
        req = req.header(AUTHORIZATION, format!("Bearer {key}"));
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| BackupError::Http(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| BackupError::Http(e.to_string()))?;
    let status = resp.status();
    let expected = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = resp.into_body();
    if !status.is_success() {
        let text = body
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        return Err(BackupError::Refused {
            status: status.as_u16(),
            body: text.chars().take(500).collect(),
        });
    }
    let write_err = |source| BackupError::Write {
        path: partial.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(partial)
        .map_err(write_err)?;
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BackupError::Http(e.to_string()))?;
        if let Some(data) = frame.data_ref() {
            file.write_all(data).map_err(write_err)?;
            got += data.len() as u64;
        }
    }
    file.sync_all().map_err(write_err)?;
    match expected {
        Some(expected) if expected != got => Err(BackupError::Truncated { got, expected }),
        _ => Ok(got),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_plain_http_authorities() {
        assert_eq!(
            authority("http://127.0.0.1:8425").unwrap(),
            "127.0.0.1:8425"
        );
        assert_eq!(authority("http://localhost:1/").unwrap(), "localhost:1");
        for bad in [
            "https://x:1",
            "127.0.0.1:8425",
            "http://",
            "http://h:1/path",
        ] {
            assert!(authority(bad).is_err(), "{bad}");
        }
    }
}
