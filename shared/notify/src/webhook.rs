//! The generic webhook: the alert as JSON, signed so receivers can check it came from us and is
//! fresh.
//!
//! # Headers
//! - `X-Batch-Triage-Id`: the alert's idempotency key (dedupe on it).
//! - `X-Batch-Triage-Timestamp`: Unix seconds when this attempt was signed.
//! - `X-Batch-Triage-Signature: sha256=<hex>`: HMAC-SHA256 with the shared secret over
//!   `"{timestamp}.{body}"` (the exact body bytes).
//!
//! # Verifying (receiver side)
//! 1. Read the raw body bytes before parsing.
//! 2. Reject if `|now - timestamp| > 300` seconds (replay window).
//! 3. Compute `hex(HMAC_SHA256(secret, timestamp + "." + body))` and compare with the part after
//!    `sha256=` in constant time (Python: `hmac.compare_digest`).
//! 4. Drop repeats of an `X-Batch-Triage-Id` you already processed.
//!
//! ```python
//! import hmac, hashlib, time
//! def verify(secret: bytes, headers, body: bytes) -> bool:
//!     ts = headers["X-Batch-Triage-Timestamp"]
//!     if abs(time.time() - int(ts)) > 300:
//!         return False
//!     mac = hmac.new(secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
//!     return hmac.compare_digest("sha256=" + mac, headers["X-Batch-Triage-Signature"])
//! ```
//!
//! # Body
//! `{"version": 1, "id", "state", "sequence", "rule", "group": {key, count, examples,
//! previousCount?, firstSeen?, lastSeen?, escalation?}, "previousCount" (the count the group's
//! previous message announced, or null), "escalation" (why its severity was raised, or null),
//! "links": {logs, portal}, "stderrTail", "diagnosis": {…docs/diagnosis-json.md…}}`.

use foundation::{Deadline, Secret};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::alert::Alert;
use crate::egress::{Delivery, Egress};
use crate::error::NotifyError;

/// Longest stderr tail put in the JSON body.
const WEBHOOK_STDERR_BYTES: usize = 64 * 1024;

/// The JSON body for an alert.
pub fn body(alert: &Alert) -> Vec<u8> {
    let links = json!({
        "logs": alert.links.logs.iter().map(|l| diagnosis::redact::strip_query(l)).collect::<Vec<_>>(),
        "portal": alert.safe_portal(),
    });
    serde_json::to_vec(&json!({
        "version": 1,
        "id": alert.idempotency_key(),
        "state": alert.state,
        "sequence": alert.sequence,
        "rule": alert.rule,
        "group": alert.group,
        "previousCount": alert.group.previous_count,
        "escalation": alert.group.escalation,
        "links": links,
        "stderrTail": alert.safe_stderr_tail().map(|t| crate::text::keep_end(&t, WEBHOOK_STDERR_BYTES)),
        "diagnosis": alert.diagnosis,
    }))
    .unwrap_or_default()
}

/// The signature header value: `sha256=` + hex HMAC-SHA256 over `"{timestamp}.{body}"`.
pub fn signature(secret: &Secret, timestamp: u64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Posts the signed alert, retrying within `deadline`; each attempt is signed afresh with its
/// own timestamp.
pub async fn send(
    egress: &Egress,
    url: &Secret,
    secret: &Secret,
    alert: &Alert,
    deadline: Deadline,
) -> Result<Delivery, NotifyError> {
    let body = bytes::Bytes::from(body(alert));
    let id = alert.idempotency_key();
    let secret = secret.clone();
    let build = move |request: reqwest::RequestBuilder| {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        request
            .header("content-type", "application/json")
            .header("x-batch-triage-id", id.as_str())
            .header("x-batch-triage-timestamp", timestamp.to_string())
            .header(
                "x-batch-triage-signature",
                signature(&secret, timestamp, &body),
            )
            .body(body.clone())
    };
    egress.post(url, &build, deadline).await
}
