//! Integration tests against real receivers on 127.0.0.1: an axum HTTP recorder (Teams, webhook,
//! ACS), a real aiosmtpd SMTP server, and independent Python checks (schema, signatures).
//!
//! - `teams`: card schema, the 28 KB budget, throttling, redirects, hostile text through the real
//!   Adaptive Cards renderer (node).
//! - `webhook`: signature verified in Python, allowlist and private-address refusals.
//! - `acs`: the ACS HMAC verified in Python, `Operation-Id` stable across a retry.
//! - `smtp`: mail received by aiosmtpd, headers and both bodies; refused SMTP hosts never connected to.
//! - `pagerduty`: Events API v2 shape checked by the receiver, trigger/resolve on one
//!   `dedup_key`, retries, the allowlist, the routing key kept secret.
//! - `slack`: Block Kit shape and limits checked by the receiver, hostile text inert, retries.
//! - `outbox`: undelivered alerts kept in a local artifact store, drained later.
//! - `secrets`: secrets never in Debug, errors or logs.
//! - `retry_after`: every form of a requested wait is honoured (`x-ms-retry-after-ms`, fractional).

extern crate batch_triage_notify as notify;

mod support;

mod acs;
mod outbox;
mod pagerduty;
mod retry_after;
mod secrets;
mod slack;
mod smtp;
mod teams;
mod webhook;
