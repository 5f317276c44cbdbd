//! The reference verifier: tests/verify_webhook.py, which checks a webhook
//! with the `standardwebhooks` library from PyPI (installed by tests/run).

use serde_json::{json, Value};

use super::receiver::Recorded;
use crate::support::run_python;

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
    let output = run_python("verify_webhook.py", &[], case.to_string().as_bytes());
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
