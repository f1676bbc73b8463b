//! Integration tests against real receivers on 127.0.0.1: an axum HTTP recorder (Teams, webhook,
//! ACS), a real aiosmtpd SMTP server, and independent Python checks (schema, signatures).
//!
//! - `teams`: card schema, the 28 KB budget, throttling, redirects, hostile text through the real
//!   Adaptive Cards renderer (node).
//! - `webhook`: signature verified in Python, allowlist and private-address refusals.
//! - `acs`: the ACS HMAC verified in Python, `Operation-Id` stable across a retry.
//! - `smtp`: mail received by aiosmtpd, headers and both bodies; refused SMTP hosts never connected to.
//! - `outbox`: undelivered alerts kept in a local artifact store, drained later.
//! - `secrets`: secrets never in Debug, errors or logs.
//! - `retry_after`: every form of a requested wait is honoured (`x-ms-retry-after-ms`, fractional).

extern crate batch_triage_notify as notify;

mod support;

mod acs;
mod outbox;
mod retry_after;
mod secrets;
mod smtp;
mod teams;
mod webhook;
