//! A webhook endpoint that never answers: a port nothing listens on, so
//! every delivery to it stays pending and the backlog grows as a bench
//! needs.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use super::http::{connect, post_json};

/// Appended to the shared bench config: loopback must be allowed
/// explicitly and over plain HTTP, or the endpoint would be refused
/// instead of left dead.
pub const CONFIG: &str = r#"
[webhooks]
allow_networks = ["127.0.0.1/32"]
require_https = false
"#;

/// A loopback port that was free a moment ago and has no listener now.
pub fn closed_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Creates an endpoint at `dead` on the daemon at `daemon`; its id.
pub async fn create(
    daemon: SocketAddr,
    dead: SocketAddr,
    timeout: Duration,
) -> Result<String, String> {
    let mut conn = connect(daemon).await.map_err(|e| e.to_string())?;
    let body = format!(r#"{{"url":"http://{dead}/hook"}}"#);
    let answer = post_json(&mut conn, daemon, "/v1/endpoints", &body, timeout).await?;
    let created: serde_json::Value =
        serde_json::from_slice(&answer).map_err(|e| format!("the 201's body: {e}"))?;
    created["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no id in {created}"))
}
