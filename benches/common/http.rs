//! A minimal keep-alive HTTP/1.1 client: one exchange at a time on a
//! connection, answers with a `Content-Length`.

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

const MAX_HEAD_BYTES: usize = 16 * 1024;

pub async fn connect(addr: SocketAddr) -> std::io::Result<BufStream<TcpStream>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(BufStream::new(stream))
}

/// One request and its answer on a keep-alive connection. A hand-rolled
/// HTTP/1.1 client, like wrk's, so that the load generator sharing the
/// machine's cores takes as little of them as it can; it understands the
/// `Content-Length` answers both Herald and the ceiling send.
pub async fn exchange(
    stream: &mut BufStream<TcpStream>,
    request: &[u8],
) -> Result<Vec<u8>, String> {
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

/// POSTs a JSON body on a keep-alive connection; the answer's body on 2xx.
pub async fn post_json(
    stream: &mut BufStream<TcpStream>,
    addr: SocketAddr,
    path: &str,
    body: &str,
) -> Result<Vec<u8>, String> {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    exchange(stream, request.as_bytes()).await
}
