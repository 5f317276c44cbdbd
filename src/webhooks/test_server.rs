//! A raw HTTP/1.1 server on 127.0.0.1 for the client's unit tests, whose
//! answer depends on the path: `/ok`, `/fail`, `/redirect`, `/throttle`,
//! `/slow`, `/big`, anything else 404.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::target::{parse, Target};

const BIG_BODY: usize = 1 << 20;

/// A raw HTTP/1.1 server on 127.0.0.1 whose answer depends on the path.
pub struct TestServer {
    pub port: u16,
    connections: Arc<AtomicUsize>,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (counted, recorded) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_connection(stream, recorded.clone()));
            }
        });
        TestServer {
            port,
            connections,
            requests,
        }
    }

    pub fn target(&self, path: &str) -> Target {
        parse(&format!("http://127.0.0.1:{}{path}", self.port), false).unwrap()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn last_request(&self) -> String {
        self.requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }
}

async fn serve_connection(mut stream: TcpStream, requests: Arc<Mutex<Vec<String>>>) {
    let mut buffer = Vec::new();
    loop {
        let head_end = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        let content_length = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        while buffer.len() < head_end + content_length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let body =
            String::from_utf8_lossy(&buffer[head_end..head_end + content_length]).into_owned();
        buffer.drain(..head_end + content_length);
        let path = head
            .split_whitespace()
            .nth(1)
            .and_then(|target| target.split('?').next())
            .unwrap_or("/")
            .to_owned();
        requests.lock().unwrap().push(format!("{head}{body}"));
        let written = match path.as_str() {
            "/ok" => {
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
                    .await
            }
            "/fail" => {
                stream
                    .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\nboom")
                    .await
            }
            "/redirect" => {
                stream
                    .write_all(b"HTTP/1.1 302 Found\r\nlocation: /ok\r\ncontent-length: 0\r\n\r\n")
                    .await
            }
            "/throttle" => {
                stream
                    .write_all(b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 120\r\ncontent-length: 0\r\n\r\n")
                    .await
            }
            "/slow" => {
                tokio::time::sleep(Duration::from_secs(10)).await;
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await
            }
            "/big" => {
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG_BODY}\r\n\r\n");
                let mut result = stream.write_all(head.as_bytes()).await;
                let chunk = vec![b'x'; 64 * 1024];
                for _ in 0..BIG_BODY / chunk.len() {
                    if result.is_err() {
                        break;
                    }
                    result = stream.write_all(&chunk).await;
                }
                result
            }
            _ => {
                stream
                    .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    .await
            }
        };
        if written.is_err() {
            return;
        }
    }
}
