//! What a 2xx promises: the event survives kill -9 and a graceful stop, and
//! retrying with the same idempotency key never makes a second copy.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

/// The event a client sends for `key`; deterministic so a retry is the
/// same content.
fn keyed_event(key: &str) -> Value {
    json!({"type": "durable.test", "idempotency_key": key, "data": {"key": key}})
}

#[derive(Default)]
struct Outcomes {
    /// key → id of every request answered 2xx.
    acked: Mutex<Vec<(String, String)>>,
    /// Keys whose request got no answer: the daemon died under it.
    in_flight: Mutex<Vec<String>>,
    acked_count: AtomicUsize,
    stop: AtomicBool,
}

/// Posts keyed events from `threads` threads until told to stop or until a
/// request fails (the daemon went away).
fn start_posting(
    addr: std::net::SocketAddr,
    threads: usize,
    per_thread: usize,
    outcomes: &Arc<Outcomes>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..threads)
        .map(|t| {
            let outcomes = outcomes.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    if outcomes.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let key = format!("k-{t}-{i}");
                    match try_post_json(addr, "/v1/events", &keyed_event(&key)) {
                        Ok(resp) if resp.status == 201 => {
                            let id = resp.json()["id"].as_str().unwrap().to_owned();
                            outcomes.acked.lock().unwrap().push((key, id));
                            outcomes.acked_count.fetch_add(1, Ordering::SeqCst);
                        }
                        // A shutting-down daemon may answer 503: not acknowledged.
                        Ok(resp) if resp.status == 503 => {
                            outcomes.in_flight.lock().unwrap().push(key);
                            return;
                        }
                        Ok(resp) => panic!("{key}: unexpected {}: {}", resp.status, resp.text()),
                        Err(_) => {
                            outcomes.in_flight.lock().unwrap().push(key);
                            return;
                        }
                    }
                }
            })
        })
        .collect()
}

fn join_all(threads: Vec<std::thread::JoinHandle<()>>) {
    for t in threads {
        t.join().expect("client thread");
    }
}

/// Waits until at least `n` writes were acknowledged.
fn wait_for_acks(outcomes: &Outcomes, n: usize) {
    assert!(
        wait_until(deadline(Duration::from_secs(60)), || {
            outcomes.acked_count.load(Ordering::SeqCst) >= n
        }),
        "only {} of {n} writes acknowledged in time",
        outcomes.acked_count.load(Ordering::SeqCst)
    );
}

/// Every acknowledged event is readable by id with its key, and the log
/// holds each key at most once.
fn assert_acked_present_once(addr: std::net::SocketAddr, acked: &[(String, String)]) -> Vec<Value> {
    for (key, id) in acked {
        let resp = get(addr, &format!("/v1/events/{id}"));
        assert_eq!(resp.status, 200, "acknowledged {key} ({id}) is gone");
        assert_eq!(resp.json()["idempotency_key"], key.as_str());
    }
    let listed = list_all(addr, "", &[]);
    let mut seen = HashMap::new();
    for e in &listed {
        let key = e["idempotency_key"].as_str().unwrap().to_owned();
        if let Some(other) = seen.insert(key.clone(), e["id"].clone()) {
            panic!("key {key} appears twice: {other} and {}", e["id"]);
        }
    }
    let ids: HashSet<_> = listed.iter().map(|e| e["id"].as_str().unwrap()).collect();
    for (key, id) in acked {
        assert!(
            ids.contains(id.as_str()),
            "{key} ({id}) missing from the listing"
        );
    }
    listed
}

#[test]
fn acknowledged_events_survive_kill_9_and_retries_never_duplicate() {
    let mut d = Daemon::start("");
    let outcomes = Arc::new(Outcomes::default());
    let threads = start_posting(d.addr, 8, 2000, &outcomes);
    wait_for_acks(&outcomes, 400);
    d.kill9();
    outcomes.stop.store(true, Ordering::SeqCst);
    join_all(threads);
    let acked = outcomes.acked.lock().unwrap().clone();
    let in_flight = outcomes.in_flight.lock().unwrap().clone();

    d.restart();
    assert_acked_present_once(d.addr, &acked);

    // Clients retry whatever they are unsure about, and may well retry what
    // was acknowledged too: none of it may add a copy.
    for (key, id) in &acked {
        let resp = post_json(d.addr, "/v1/events", &keyed_event(key));
        assert_eq!(resp.status, 200, "{key}: {}", resp.text());
        assert_eq!(resp.json()["id"], id.as_str(), "{key}");
    }
    for key in &in_flight {
        let resp = post_json(d.addr, "/v1/events", &keyed_event(key));
        assert!(
            resp.status == 200 || resp.status == 201,
            "{key}: {}",
            resp.text()
        );
    }
    let listed = assert_acked_present_once(d.addr, &acked);
    let keys: HashSet<_> = listed
        .iter()
        .map(|e| e["idempotency_key"].as_str().unwrap().to_owned())
        .collect();
    let sent: HashSet<_> = acked
        .iter()
        .map(|(k, _)| k.clone())
        .chain(in_flight.iter().cloned())
        .collect();
    assert_eq!(keys, sent, "after the retries every key is in the log once");
}

#[test]
fn sigterm_while_clients_post_exits_0_and_keeps_every_acknowledged_event() {
    let mut d = Daemon::start("");
    let outcomes = Arc::new(Outcomes::default());
    let threads = start_posting(d.addr, 4, 2000, &outcomes);
    wait_for_acks(&outcomes, 100);
    let status = d.sigterm();
    outcomes.stop.store(true, Ordering::SeqCst);
    join_all(threads);
    assert_eq!(status.code(), Some(0), "logs:\n{}", d.logs().join("\n"));
    assert!(
        d.has_logged("stopped"),
        "the daemon never reached `stopped`"
    );
    if !postgres_backend() {
        assert!(d.data_dir().join("herald.redb").is_file());
    }

    let acked = outcomes.acked.lock().unwrap().clone();
    d.restart();
    assert_acked_present_once(d.addr, &acked);
}

/// Reads from `stream` until `buf` holds a blank line (the end of a
/// response head), or panics at EOF.
fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> String {
    let mut chunk = [0u8; 4096];
    // Bounded: heads are small, and the read timeout ends each read.
    for _ in 0..1000 {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            return head;
        }
        let n = stream.read(&mut chunk).expect("reading a response head");
        assert!(n > 0, "connection closed before a response head");
        buf.extend_from_slice(&chunk[..n]);
    }
    panic!("no response head in {} bytes", buf.len());
}

#[test]
fn sigterm_lets_a_request_in_flight_finish() {
    let mut d = Daemon::start("");
    let body = keyed_event("in-flight").to_string();
    let (first, rest) = body.as_bytes().split_at(10);
    let mut stream = TcpStream::connect(d.addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    // `100 Continue` comes back once the handler starts reading the body:
    // proof that the request is in flight before the signal.
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        d.addr,
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let interim = read_head(&mut stream, &mut buf);
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    stream.write_all(first).unwrap();

    d.send_sigterm();
    let mut died = None;
    let draining = wait_until(deadline(SHUTDOWN), || {
        died = d.exited();
        died.is_some() || d.has_logged("stopped accepting; waiting for in-flight requests")
    });
    assert!(
        died.is_none(),
        "SIGTERM ended the daemon ({:?}) instead of draining the request in flight; \
         was the signal handler installed yet? log:\n{}",
        died,
        d.logs().join("\n")
    );
    assert!(
        draining,
        "no sign of shutdown in the log:\n{}",
        d.logs().join("\n")
    );
    stream.write_all(rest).unwrap();
    let final_head = read_head(&mut stream, &mut buf);
    assert!(final_head.starts_with("HTTP/1.1 201"), "{final_head}");
    let mut tail = Vec::new();
    let _ = stream.read_to_end(&mut tail);
    buf.extend_from_slice(&tail);
    let created: Value = serde_json::from_slice(&buf).expect("the 201 carries the event");

    let status = d.wait_exit();
    assert_eq!(status.code(), Some(0));
    d.restart();
    let resp = get(
        d.addr,
        &format!("/v1/events/{}", created["id"].as_str().unwrap()),
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json(), created);
}

#[test]
fn a_database_from_a_newer_schema_is_refused_and_left_alone() {
    const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let file = data.join("herald.redb");
    {
        let db = redb::Database::create(&file).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert("schema_version", 999u32.to_le_bytes().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }

    let out = run_with_deadline(
        herald()
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(&data),
        STARTUP,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a newer file:\n{stderr}");
    assert!(stderr.contains("newer"), "{stderr}");
    assert!(stderr.contains("999"), "{stderr}");

    use redb::ReadableDatabase;
    let db = redb::Database::open(&file).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    let version = meta.get("schema_version").unwrap().unwrap();
    assert_eq!(
        version.value(),
        999u32.to_le_bytes(),
        "the file was rewritten"
    );
}

/// Reads `fd` one byte at a time until `marker` has gone by, so that as
/// little as possible of what the daemon wrote is consumed.
fn read_until_marker(fd: &OwnedFd, marker: &[u8], until: Instant) -> Vec<u8> {
    let mut seen = Vec::new();
    // Bounded: the marker is in the daemon's second line.
    for _ in 0..64 * 1024 {
        if seen.ends_with(marker) {
            return seen;
        }
        let left = until.saturating_duration_since(Instant::now()).as_millis();
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, left.min(i32::MAX as u128) as i32) };
        assert!(
            ready > 0,
            "no {marker:?} in time; got {:?}",
            String::from_utf8_lossy(&seen)
        );
        let mut byte = 0u8;
        // SAFETY: reads at most one byte into a live local.
        let n = unsafe { libc::read(fd.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
        assert!(
            n == 1,
            "stderr ended early: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.push(byte);
    }
    panic!("no {marker:?} in 64 KiB of log");
}

/// The daemon announces `listening` (then tells systemd it is ready); a
/// SIGTERM from then on must be a graceful stop with exit status 0.
///
/// To hold the daemon at exactly that moment, its stderr is a one-page
/// pipe and its data directory path is long enough that the `listening`
/// line (which names the database file) does not fit: the daemon is then
/// blocked writing that line until the test drains the pipe.
#[test]
fn sigterm_right_after_listening_is_announced_is_a_graceful_stop() {
    let root = tempfile::tempdir().unwrap();
    let mut data = root.path().to_path_buf();
    // PATH_MAX is 4096 with the NUL; `/herald.redb` must still fit.
    while data.as_os_str().len() < 3800 {
        data.push("d".repeat(200));
    }
    let fill = 4060 - data.as_os_str().len();
    data.push("e".repeat(fill));

    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array on success.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just created and are owned only here.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a descriptor we own.
    let size = unsafe { libc::fcntl(read_end.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    assert_eq!(
        size,
        4096,
        "cannot shrink the pipe: {}",
        std::io::Error::last_os_error()
    );

    let mut child = {
        let mut cmd = herald();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::from(write_end));
        cmd.spawn().expect("spawning herald serve")
        // `cmd` is dropped here, closing the test's copy of the write end.
    };
    let guard = KillOnDrop(&mut child);
    let until = deadline(STARTUP);
    let mut log = read_until_marker(&read_end, b" listening ", until);

    let pid = libc::pid_t::try_from(guard.0.id()).unwrap();
    // SAFETY: kill(2) on our own child, not reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);

    // Drain the rest so the daemon can carry on logging and shut down.
    let mut rest = Vec::new();
    let mut file = std::fs::File::from(read_end);
    let drained = std::thread::spawn(move || {
        let _ = file.read_to_end(&mut rest);
        rest
    });
    let mut status = None;
    let exited = wait_until(deadline(SHUTDOWN), || {
        status = guard.0.try_wait().expect("polling herald");
        status.is_some()
    });
    drop(guard);
    assert!(exited, "herald did not exit after SIGTERM");
    log.extend(drained.join().unwrap());
    // The 4 KiB path would drown the message.
    let log = String::from_utf8_lossy(&log).replace(data.to_str().unwrap(), "<DATA>");
    let status = status.unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{status}: a SIGTERM after `listening` killed the daemon instead of stopping it; log:\n{log}"
    );
    assert!(log.contains("SIGTERM: shutting down"), "{log}");
}

struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
