//! A minimal keep-alive HTTP/1.1 client: requests as bytes, one exchange at
//! a time on a connection, answers with a `Content-Length`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

const MAX_HEAD_BYTES: usize = 16 * 1024;

pub type Connection = BufStream<TcpStream>;

pub async fn connect(addr: SocketAddr) -> std::io::Result<Connection> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(BufStream::new(stream))
}

/// A POST of a JSON body; `headers` are extra header lines, each ending in
/// CRLF, or empty.
pub fn post(addr: SocketAddr, path: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub fn get(addr: SocketAddr, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes()
}

/// One request and its answer on a keep-alive connection: the body on 2xx,
/// the status and body otherwise. A hand-rolled HTTP/1.1 client, like
/// wrk's, so that the load generator sharing the machine's cores takes as
/// little of them as it can; it understands the `Content-Length` answers
/// both Herald and the ceiling send.
pub async fn exchange(stream: &mut Connection, request: &[u8]) -> Result<Vec<u8>, String> {
    stream.write_all(request).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream
            .read_until(b'\n', &mut head)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before an answer".to_owned());
        }
        if head.len() > MAX_HEAD_BYTES {
            return Err("answer head too large".to_owned());
        }
    }
    let head = String::from_utf8_lossy(&head);
    let status = head
        .get(9..12)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let length = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .ok_or_else(|| format!("no Content-Length in {head:?}"))?;
    let mut body = vec![0; length];
    stream
        .read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
    }
}

/// `exchange` with a deadline, so a wedged server ends a scenario with a
/// failure instead of hanging the run. A connection that timed out is in
/// an unknown state: drop it.
pub async fn exchange_within(
    stream: &mut Connection,
    request: &[u8],
    limit: Duration,
) -> Result<Vec<u8>, String> {
    tokio::time::timeout(limit, exchange(stream, request))
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {limit:?}")))
}

/// POSTs a JSON body with a deadline; the answer's body on 2xx.
pub async fn post_json(
    stream: &mut Connection,
    addr: SocketAddr,
    path: &str,
    body: &str,
    limit: Duration,
) -> Result<Vec<u8>, String> {
    exchange_within(stream, &post(addr, path, "", body), limit).await
}

/// GETs a JSON answer with a deadline.
pub async fn get_json(
    stream: &mut Connection,
    addr: SocketAddr,
    path: &str,
    limit: Duration,
) -> Result<serde_json::Value, String> {
    let answer = exchange_within(stream, &get(addr, path), limit).await?;
    serde_json::from_slice(&answer).map_err(|e| format!("{path}: {e}"))
}
