//! A failed commit: every request queued for the writer is answered at once
//! and the daemon exits non-zero, well before its shutdown grace, so its
//! supervisor restarts it in seconds.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

/// The database may grow to this size; then every write that would grow it
/// fails (EFBIG), as on a full disk.
const FILE_SIZE_LIMIT: u64 = 8 << 20;
/// Far beyond how long the test waits for the exit: a daemon that waited
/// for requests nobody will answer could not exit in time.
const SHUTDOWN_GRACE: &str = "600s";
/// How long the test waits for the exit; a fraction of `SHUTDOWN_GRACE`.
const EXIT_WAIT: Duration = Duration::from_secs(120);

/// Longer than `EXIT_WAIT`: a client never gives up first, so a request
/// nobody answers keeps the daemon from exiting.
const CLIENT_PATIENCE: Duration = Duration::from_secs(300);

/// Posts `event` on a connection of its own and waits for the answer:
/// its status and error code.
fn post_and_wait(addr: std::net::SocketAddr, event: &Value) -> std::io::Result<(u16, String)> {
    let body = event.to_string();
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(CLIENT_PATIENCE))?;
    write!(
        stream,
        "POST /v1/events HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("closed without an answer"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))?;
    let code = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    Ok((status, code))
}

fn listening_addr(line: &str) -> Option<std::net::SocketAddr> {
    let v: Value = serde_json::from_str(line).ok()?;
    (v["message"] == "listening").then(|| v["addr"].as_str()?.parse().ok())?
}

#[test]
fn a_failed_commit_answers_every_queued_request_and_the_daemon_exits_before_its_grace() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = write_config(
        dir.path(),
        // One operation per commit: when one fails, the other clients'
        // writes are still queued behind it.
        &format!(
            "[server]\nshutdown_grace = \"{SHUTDOWN_GRACE}\"\n\
             [storage]\nmax_commit_batch = 1\n"
        ),
    );
    let mut cmd = herald();
    cmd.arg("serve").arg("--config").arg(&config);
    // SAFETY: between fork and exec only async-signal-safe calls are made:
    // setrlimit(2) and signal(2) on the child itself.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: FILE_SIZE_LIMIT,
                rlim_max: FILE_SIZE_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Past the limit a write fails with EFBIG instead of killing
            // the process; an ignored signal stays ignored across exec.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut daemon = Spawned::spawn(&mut cmd, Arc::default());
    let addr = daemon
        .wait_for_line(deadline(STARTUP), listening_addr)
        .unwrap_or_else(|end| panic!("no listening line ({end:?}):\n{:?}", daemon.logs()));

    let statuses = Arc::new(Mutex::new(Vec::<(u16, String)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let padding = "x".repeat(16 * 1024);
    let clients: Vec<_> = (0..32)
        .map(|client| {
            let (statuses, stop, padding) = (statuses.clone(), stop.clone(), padding.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let event = json!({"type": "fill.disk", "idempotency_key": format!("{client}-{i}"),
                                       "data": {"padding": padding}});
                    match post_and_wait(addr, &event) {
                        Ok((status, code)) => {
                            statuses.lock().unwrap().push((status, code));
                            if status != 201 {
                                return;
                            }
                        }
                        // Refused, or closed unread, once the daemon stopped
                        // accepting.
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();

    let exit = daemon.wait_exit(EXIT_WAIT);
    stop.store(true, Ordering::SeqCst);
    let Some(status) = exit else {
        daemon.kill();
        panic!(
            "the daemon still ran {EXIT_WAIT:?} after the failure began:\n{}",
            daemon.logs().join("\n")
        );
    };
    for client in clients {
        client.join().expect("client thread");
    }
    let logs = daemon.logs().join("\n");
    // The daemon exits only once its graceful shutdown is over, and that
    // waits for every request a handler took: exiting before the grace
    // means each of them was answered.
    assert!(
        !status.success(),
        "a storage failure exits non-zero: {status:?}"
    );
    let statuses = statuses.lock().unwrap();
    let refused = statuses.iter().filter(|(s, _)| *s == 503).count();
    assert!(refused > 0, "no write was refused:\n{logs}");
    for (status, code) in statuses.iter() {
        assert!(
            *status == 201 || (*status == 503 && code == "unavailable"),
            "unexpected answer {status} {code}"
        );
    }
    assert!(
        logs.contains("storage failed"),
        "the log says why it stopped:\n{logs}"
    );
}
