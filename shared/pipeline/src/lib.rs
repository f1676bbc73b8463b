//! batch-triage's stateful side: the parts of "execute" that must be right across
//! several function instances at once.
//!
//! # Layout
//! - [`grouping`]: alert groups kept in the artifact store, updated by compare-and-swap, with a
//!   create-only marker per notification so no alert is ever sent twice.
//! - [`actions`]: guarded job actions (disable/terminate): global and per-rule opt-in, dry-run,
//!   thresholds, an hourly budget, once per (account, job, action), `If-Match` on the job's ETag.
//! - [`audit`]: a record in the store of every job action taken or skipped, and why.
//! - [`triage`]: the pipeline itself: payload → subjects re-read from the configured account →
//!   diagnosis → plan → preserved logs, grouped alerts, job actions, with a report per subject.
//! - [`sweep`]: the timer's safety net: failed tasks since a cursor, ended and stuck jobs, prep
//!   failures, under a lease, within a deadline.
//! - [`sweep_accounts`]: the sweep of a deployment that watches several accounts: a cursor and
//!   a lease each, swept concurrently within a fair share of the deadline.
//! - [`tick`]: the timer's whole job (sweep, due alert groups, outbox) in one call.
//! - [`settings`]: the configuration every handler reads from its environment, and the pipeline
//!   built from it.
//! - [`verdict`]: what a result means to the platform (acknowledge, retry, poison, not found),
//!   said once for every handler to render.
//! - [`webhook`]: the gate in front of an Event Grid webhook, whatever serves the HTTP: the
//!   shared key, the validation and CloudEvents handshakes, then the payload for the pipeline.
//!
//! Time is always an argument (`now`), so tests inject it.
#![deny(missing_docs)]

pub mod actions;
pub mod audit;
pub mod grouping;
pub mod parking;
pub mod settings;
pub mod sweep;
pub mod sweep_accounts;
pub mod tick;
pub mod triage;
pub mod verdict;
pub mod webhook;

pub use verdict::Verdict;

/// A short, key-safe digest of a string (first 32 hex digits of its SHA-256), used to name store
/// objects after values that may contain any character.
pub(crate) fn digest(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(text.as_bytes())[..16])
}
