//! The reference verifier: tests/verify_webhook.py, which checks a webhook
//! with the `standardwebhooks` library from PyPI (installed by tests/run).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

use super::receiver::Recorded;
use crate::support::python;

/// What `standardwebhooks.Webhook(secret).verify(body, headers)` says about
/// the request: `Ok` or the library's reason.
pub fn reference_verify(secret: &str, request: &Recorded) -> Result<(), String> {
    let headers: serde_json::Map<String, Value> =
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
            .iter()
            .map(|h| (h.to_string(), Value::String(request.header(h).to_owned())))
            .collect();
    let case = json!({
        "secret": secret,
        "headers": headers,
        "body": String::from_utf8(request.body.clone()).expect("UTF-8 body"),
    });
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/verify_webhook.py");
    let mut child = Command::new(python())
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the Python verifier");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(case.to_string().as_bytes())
        .unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the Python verifier did not finish within 60 s")
        .expect("waiting for the Python verifier");
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        assert!(
            stderr.contains("verification failed"),
            "the verifier itself failed ({}): {stderr}",
            output.status
        );
        Err(stderr)
    }
}
