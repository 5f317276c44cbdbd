//! `herald backup` against a daemon that keeps taking writes.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

const BACKUP_TIMEOUT: Duration = Duration::from_secs(60);

fn backup_cmd(out: &std::path::Path, addr: std::net::SocketAddr) -> std::process::Command {
    let mut cmd = herald();
    cmd.arg("backup")
        .arg("--out")
        .arg(out)
        .arg("--url")
        .arg(format!("http://{addr}"));
    cmd
}

#[test]
fn backup_under_write_load_is_a_consistent_prefix_of_the_log() {
    let d = Daemon::start("");
    let addr = d.addr;
    let seed: Vec<Value> = (0..50)
        .map(|i| json!({"type": "seed", "tenant": "acme", "idempotency_key": format!("seed-{i}")}))
        .collect();
    let resp = post_json(addr, "/v1/events/batch", &json!({ "events": seed }));
    assert_eq!(resp.status, 200, "{}", resp.text());

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (acked, stop) = (acked.clone(), stop.clone());
            std::thread::spawn(move || {
                // Bounded in case the stop flag is never set (a failed assert).
                for i in 0..20_000 {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let e = create(
                        addr,
                        &json!({"type": "load", "tenant": format!("w{w}"), "idempotency_key": format!("w{w}-{i}")}),
                    );
                    acked.lock().unwrap().push(e["id"].as_str().unwrap().to_owned());
                }
            })
        })
        .collect();
    assert!(
        wait_until(deadline(Duration::from_secs(60)), || acked
            .lock()
            .unwrap()
            .len()
            >= 100),
        "the writers made no progress"
    );

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("copy.redb");
    let acked_before: Vec<String> = acked.lock().unwrap().clone();
    let result = run_with_deadline(&mut backup_cmd(&out, addr), BACKUP_TIMEOUT);
    let acked_during = acked.lock().unwrap().len();
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().expect("writer thread");
    }
    let stdout = String::from_utf8_lossy(&result.stdout).into_owned();
    assert!(
        result.status.success(),
        "backup failed: {}{}",
        stdout,
        String::from_utf8_lossy(&result.stderr)
    );
    let bytes = std::fs::metadata(&out).unwrap().len();
    let prefix = format!("{}: {bytes} bytes, ", out.display());
    let events: usize = stdout
        .strip_prefix(&prefix)
        .and_then(|s| s.strip_suffix(" events, schema version 3\n"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {stdout:?}"));
    assert!(
        !dir.path().join("copy.redb.partial").exists(),
        "the partial download was left behind"
    );

    let live = list_all(addr, "", &[]);
    assert!(live.len() >= 50 + acked_during);

    let restored_dir = tempfile::tempdir().unwrap();
    std::fs::copy(&out, restored_dir.path().join("herald.redb")).unwrap();
    let restored = Daemon::start(&format!(
        "[storage]\ndata_dir = {}\n",
        toml_str(restored_dir.path())
    ));
    let copy = list_all(restored.addr, "", &[]);
    assert_eq!(
        copy.len(),
        events,
        "the count printed is the count restored"
    );
    assert!(
        copy.len() >= 50 + acked_before.len(),
        "the backup misses writes acknowledged before it started"
    );
    assert!(copy.len() <= live.len());
    assert!(
        copy == live[..copy.len()],
        "the backup is not a prefix of the log"
    );
    let copied: HashSet<&str> = copy.iter().map(|e| e["id"].as_str().unwrap()).collect();
    for id in &acked_before {
        assert!(
            copied.contains(id.as_str()),
            "{id} acknowledged before the backup"
        );
    }

    // The idempotency keys came along: a retry on the restored copy is
    // recognised, and new events continue the sequence.
    let last = copy.last().unwrap();
    let retry = json!({
        "type": last["type"], "tenant": last["tenant"], "idempotency_key": last["idempotency_key"]
    });
    let resp = post_json(restored.addr, "/v1/events", &retry);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["id"], last["id"]);
    let next = create(restored.addr, &json!({"type": "after.restore"}));
    assert_eq!(next["seq"], copy.len() as u64 + 1);
}

#[test]
fn backup_refuses_to_overwrite_an_existing_file() {
    let d = Daemon::start("");
    create(d.addr, &json!({"type": "a"}));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exists.redb");
    std::fs::write(&out, b"precious").unwrap();
    let result = run_with_deadline(&mut backup_cmd(&out, d.addr), BACKUP_TIMEOUT);
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["exists.redb"]);
}

#[test]
fn backup_of_a_keyed_daemon_needs_the_key() {
    let key = "backup-key-0123456789";
    let d = Daemon::start(&format!("[server]\napi_keys = [\"{key}\"]\n"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b.redb");
    let refused = run_with_deadline(&mut backup_cmd(&out, d.addr), BACKUP_TIMEOUT);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!out.exists());

    let done = run_with_deadline(
        backup_cmd(&out, d.addr).args(["--api-key", key]),
        BACKUP_TIMEOUT,
    );
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(String::from_utf8_lossy(&done.stdout).contains(" 0 events, schema version 3"));
}
