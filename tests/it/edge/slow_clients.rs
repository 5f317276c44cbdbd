//! Slow clients (slowloris): connections that never finish their request
//! head cannot keep a new client out, on the private or the public
//! listener, even from the same address; and trickling bytes does not
//! extend the header deadline.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::support::*;

/// More than every limit configured below, so each would be exhausted if
/// slow connections held what they take today.
const SLOW_PER_LISTENER: usize = 40;

/// A connection that sends the start of a request head and then nothing.
fn open_slow(addr: SocketAddr, head: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connecting a slow client");
    stream
        .write_all(head.as_bytes())
        .expect("sending a partial head");
    stream
}

/// What a slow connection saw from the server: nothing yet, or the close.
/// Bytes from the server would mean a request was served.
fn server_sent_nothing(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            ErrorKind::WouldBlock | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
        ),
    }
}

/// Whether `GET /healthz` on a fresh connection is answered 200.
fn healthz_answers(addr: SocketAddr) -> bool {
    try_request(addr, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200)
}

#[test]
fn slow_clients_on_both_listeners_do_not_keep_a_new_client_from_the_same_address_out() {
    // A header deadline long enough that, were slow connections to hold a
    // slot until it passed, every slot would stay taken for the test.
    let daemon = Daemon::start(
        "[server]\nmax_connections = 4\nmax_idle_connections = 16\n\
         max_connections_per_peer = 24\nheader_timeout = \"300s\"\n\
         [public]\nlisten = \"127.0.0.1:0\"\n",
    );
    let public = daemon.logged_addr("public listening");
    let mut slow = Vec::new();
    for _ in 0..SLOW_PER_LISTENER {
        slow.push(open_slow(
            daemon.addr,
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n",
        ));
        slow.push(open_slow(public, "POST /u/token HTTP/1.1\r\nHost: x\r\n"));
    }

    for addr in [daemon.addr, public] {
        assert!(
            wait_until(deadline(STARTUP), || healthz_answers(addr)),
            "a new client on {addr} was not answered while slow clients held connections"
        );
    }
    for (i, stream) in slow.iter_mut().enumerate() {
        assert!(
            server_sent_nothing(stream),
            "slow connection {i} got an answer"
        );
    }
    assert_eq!(count_events(daemon.addr), 0, "slow clients wrote nothing");
}

#[test]
fn trickling_header_bytes_does_not_extend_the_header_deadline() {
    let daemon = Daemon::start("[server]\nheader_timeout = \"2s\"\n");
    let mut stream = TcpStream::connect(daemon.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        .unwrap();
    let mut closed = false;
    let mut sent_after_head = 0usize;
    let mut answer = Vec::new();
    // One byte every read timeout: far more often than the deadline, so a
    // deadline reset by each byte would never pass.
    wait_until(deadline(STARTUP), || {
        if stream.write_all(b"a").is_err() {
            closed = true;
            return true;
        }
        sent_after_head += 1;
        let mut buf = [0u8; 256];
        match stream.read(&mut buf) {
            Ok(0) => closed = true,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => closed = true,
        }
        closed
    });
    assert!(
        closed,
        "still open after {sent_after_head} trickled bytes and a 2 s header deadline"
    );
    assert!(
        answer.is_empty(),
        "no request was served: {:?}",
        String::from_utf8_lossy(&answer)
    );
}
