//! An SMTP sink on loopback: enough ESMTP (PIPELINING, 8BITMIME, SIZE) for
//! lettre, a thread per connection, every read bounded in length and time.
//! It answers 250 to every message and logs when each arrived and the
//! `X-Herald-Id` it carried, so a bench can check exactly-once delivery.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::report::micros;

/// Longer than any line RFC 5321 allows (1,000 bytes with CRLF), so only a
/// broken client reaches it.
const MAX_LINE: usize = 4096;
/// Advertised as SIZE and enforced; far above what the bench sends.
const MAX_MESSAGE: usize = 4 << 20;
/// A connection idle this long is closed; lettre notices at its next NOOP
/// and reconnects, and a client stuck mid-message cannot hold a thread.
const SINK_READ_TIMEOUT: Duration = Duration::from_secs(60);
const SINK_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// One message the sink answered 250 to.
pub struct Arrival {
    pub at: Instant,
    /// The `X-Herald-Id` header's value, when there was one.
    pub id: Option<String>,
}

#[derive(Default)]
pub struct SinkLog {
    pub arrivals: Vec<Arrival>,
    pub distinct: HashSet<String>,
    /// From sending 354 to reading the terminating `.`, per message: the
    /// client's share of a transaction, which for a small message over
    /// loopback should be a fraction of a millisecond.
    pub data_us: Vec<u32>,
}

#[derive(Default)]
pub struct SinkShared {
    pub log: Mutex<SinkLog>,
    /// Changes whenever a message arrives, so waiters can spot a stall
    /// without taking the lock.
    pub messages: AtomicU64,
    pub connections: AtomicU64,
    pub commands: AtomicU64,
    pub noops: AtomicU64,
    /// Commands refused (out of sequence, unknown) and sessions ended by an
    /// error: either means the sink and the daemon disagree about SMTP.
    pub errors: AtomicU64,
    pub first_error: Mutex<Option<String>>,
    stop: AtomicBool,
}

impl SinkShared {
    fn error(&self, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.first_error.lock().unwrap().get_or_insert(message);
    }

    pub fn distinct(&self) -> usize {
        self.log.lock().unwrap().distinct.len()
    }
}

pub struct Sink {
    pub addr: SocketAddr,
    pub shared: Arc<SinkShared>,
    accept: Option<JoinHandle<()>>,
}

impl Sink {
    /// Listens on an ephemeral loopback port; a thread per connection,
    /// since the daemon holds at most `workers` of them.
    pub fn start() -> std::io::Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(SinkShared::default());
        let accepting = shared.clone();
        let accept = std::thread::Builder::new()
            .name("smtp-sink".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if accepting.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(stream) = stream else {
                        // Out of descriptors, most likely: let some close.
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let shared = accepting.clone();
                    let spawned = std::thread::Builder::new()
                        .name("smtp-sink-conn".into())
                        .spawn(move || {
                            shared.connections.fetch_add(1, Ordering::Relaxed);
                            if let Err(e) = session(stream, &shared) {
                                shared.error(e);
                            }
                        });
                    if let Err(e) = spawned {
                        accepting.error(format!("spawning a session thread: {e}"));
                    }
                }
            })?;
        Ok(Sink {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Wakes the blocking accept so it sees the flag.
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Reads one line, CRLF included, of at most `MAX_LINE` bytes; false at a
/// clean end of stream.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<bool> {
    line.clear();
    let n = reader
        .by_ref()
        .take(MAX_LINE as u64)
        .read_until(b'\n', line)?;
    if n == 0 {
        return Ok(false);
    }
    if !line.ends_with(b"\n") {
        let what = if n == MAX_LINE {
            format!("a line longer than {MAX_LINE} bytes")
        } else {
            "the connection closed mid-line".to_owned()
        };
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, what));
    }
    Ok(true)
}

/// Queues a reply; sends what is queued only once every command the client
/// pipelined has been read, so a pipelined group costs one write.
fn reply(
    writer: &mut BufWriter<std::net::TcpStream>,
    pending_input: bool,
    text: &[u8],
) -> Result<(), String> {
    writer
        .write_all(text)
        .map_err(|e| format!("writing: {e}"))?;
    if !pending_input {
        writer.flush().map_err(|e| format!("writing: {e}"))?;
    }
    Ok(())
}

/// One SMTP session: enough ESMTP for lettre, with every read bounded in
/// length and time.
fn session(stream: std::net::TcpStream, sink: &SinkShared) -> Result<(), String> {
    let setup = |e: std::io::Error| format!("setting up a session: {e}");
    stream.set_nodelay(true).map_err(setup)?;
    stream
        .set_read_timeout(Some(SINK_READ_TIMEOUT))
        .map_err(setup)?;
    stream
        .set_write_timeout(Some(SINK_WRITE_TIMEOUT))
        .map_err(setup)?;
    let mut reader = BufReader::with_capacity(64 * 1024, stream.try_clone().map_err(setup)?);
    let mut writer = BufWriter::with_capacity(4096, stream);
    reply(&mut writer, false, b"220 herald-bench-sink ESMTP\r\n")?;
    let mut line = Vec::with_capacity(1024);
    let mut mail_from = false;
    let mut recipients = 0usize;
    loop {
        match read_line(&mut reader, &mut line) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) if is_timeout(&e) => {
                // An idle pooled connection, not an error.
                let _ = reply(&mut writer, false, b"421 4.4.2 Idle timeout\r\n");
                return Ok(());
            }
            Err(e) => return Err(format!("reading a command: {e}")),
        }
        if sink.stop.load(Ordering::Relaxed) {
            let _ = reply(&mut writer, false, b"421 4.3.2 Shutting down\r\n");
            return Ok(());
        }
        sink.commands.fetch_add(1, Ordering::Relaxed);
        let command = String::from_utf8_lossy(&line);
        let command = command.trim_end();
        let verb = command
            .split_once(' ')
            .map_or(command, |(v, _)| v)
            .to_ascii_uppercase();
        let pending = !reader.buffer().is_empty();
        match verb.as_str() {
            "EHLO" => reply(
                &mut writer,
                pending,
                format!(
                    "250-herald-bench-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE {MAX_MESSAGE}\r\n"
                )
                .as_bytes(),
            )?,
            "HELO" => reply(&mut writer, pending, b"250 herald-bench-sink\r\n")?,
            "MAIL" if mail_from => {
                sink.error(format!("MAIL inside a transaction: {command}"));
                reply(&mut writer, pending, b"503 5.5.1 Nested MAIL command\r\n")?;
            }
            "MAIL" if command.to_ascii_uppercase().starts_with("MAIL FROM:") => {
                mail_from = true;
                reply(&mut writer, pending, b"250 2.1.0 Ok\r\n")?;
            }
            "RCPT" if !mail_from => {
                sink.error(format!("RCPT before MAIL: {command}"));
                reply(&mut writer, pending, b"503 5.5.1 Need MAIL command\r\n")?;
            }
            "RCPT" if command.to_ascii_uppercase().starts_with("RCPT TO:") => {
                recipients += 1;
                reply(&mut writer, pending, b"250 2.1.5 Ok\r\n")?;
            }
            "DATA" if recipients == 0 => {
                sink.error("DATA without a recipient".to_owned());
                reply(&mut writer, pending, b"503 5.5.1 Need RCPT command\r\n")?;
            }
            "DATA" => {
                reply(
                    &mut writer,
                    false,
                    b"354 End data with <CR><LF>.<CR><LF>\r\n",
                )?;
                let data_started = Instant::now();
                let id = read_message(&mut reader, &mut line)?;
                let at = Instant::now();
                let n = {
                    let mut log = sink.log.lock().unwrap();
                    if let Some(id) = &id {
                        log.distinct.insert(id.clone());
                    }
                    log.data_us.push(micros(at - data_started));
                    log.arrivals.push(Arrival { at, id });
                    log.arrivals.len()
                };
                sink.messages.fetch_add(1, Ordering::Relaxed);
                mail_from = false;
                recipients = 0;
                let pending = !reader.buffer().is_empty();
                reply(
                    &mut writer,
                    pending,
                    format!("250 2.0.0 Ok: queued as {n}\r\n").as_bytes(),
                )?;
            }
            "RSET" => {
                mail_from = false;
                recipients = 0;
                reply(&mut writer, pending, b"250 2.0.0 Ok\r\n")?;
            }
            "NOOP" => {
                sink.noops.fetch_add(1, Ordering::Relaxed);
                reply(&mut writer, pending, b"250 2.0.0 Ok\r\n")?;
            }
            "QUIT" => {
                reply(&mut writer, false, b"221 2.0.0 Bye\r\n")?;
                return Ok(());
            }
            _ => {
                let shown: String = command.chars().take(80).collect();
                sink.error(format!("unrecognised command: {shown}"));
                reply(
                    &mut writer,
                    pending,
                    b"502 5.5.2 Error: command not recognized\r\n",
                )?;
            }
        }
    }
}

/// Reads a message up to its lone `.` line; the `X-Herald-Id` header's
/// value when the header block has one.
fn read_message(
    reader: &mut BufReader<std::net::TcpStream>,
    line: &mut Vec<u8>,
) -> Result<Option<String>, String> {
    const HEADER: &[u8] = b"x-herald-id:";
    let mut id = None;
    let mut in_headers = true;
    let mut size = 0usize;
    loop {
        match read_line(reader, line) {
            Ok(true) => {}
            Ok(false) => return Err("the connection closed inside DATA".to_owned()),
            Err(e) => return Err(format!("reading DATA: {e}")),
        }
        if line.as_slice() == b".\r\n" {
            return Ok(id);
        }
        size += line.len();
        if size > MAX_MESSAGE {
            return Err(format!("a message larger than {MAX_MESSAGE} bytes"));
        }
        if in_headers {
            if line.as_slice() == b"\r\n" {
                in_headers = false;
            } else if line.len() > HEADER.len() && line[..HEADER.len()].eq_ignore_ascii_case(HEADER)
            {
                id = Some(
                    String::from_utf8_lossy(&line[HEADER.len()..])
                        .trim()
                        .to_owned(),
                );
            }
        }
    }
}
