//! batch-triage's stateful side: the parts of "execute" that must be right across
//! several function instances at once.
//!
//! # Layout
//! - [`grouping`]: alert groups kept in the artifact store, updated by compare-and-swap, with a
//!   create-only marker per notification so no alert is ever sent twice.
//! - [`actions`]: guarded job actions (disable/terminate): global and per-rule opt-in, dry-run,
//!   thresholds, an hourly budget, once per (account, job, action), `If-Match` on the job's ETag.
//! - [`audit`]: a record in the store of every job or node action taken or skipped, and why.
//! - `guard` (crate-private): what every guarded action shares: hourly budgets spent
//!   all-or-nothing by compare-and-swap, the once-marker taken, kept or given back (and one
//!   that could not be given back removed by the next run), the dry-run marker, and the single
//!   exit that audits the decision.
//! - [`node_actions`]: guarded node actions (remove with requeue, reimage), after the node
//!   agent's logs are kept, never the last healthy node of a working pool, budgeted per hour and
//!   per pool, once per node and incident.
//! - [`pool_sweep`]: the timer's look at pools and nodes: node counts first, one filtered node
//!   list per pool with something to look at, within the deadline.
//! - [`history`]: one small record per failed subject, keyed by hour, account and class, so a
//!   report counts from a listing and reads only what it shows.
//! - [`triage`]: the pipeline itself: payload → subjects re-read from the configured account →
//!   diagnosis → plan → preserved logs, grouped alerts, job actions, with a report per subject.
//! - [`silences`]: silences kept in the store (added at the CLI, shared by every instance),
//!   read with the policy's, and the count of what each muted.
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
mod guard;
pub mod history;
pub mod node_actions;
pub mod parking;
pub mod pool_sweep;
pub mod settings;
pub mod silences;
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

/// An account's name as one segment of a store key: Batch account names are 3 to 24 lower-case
/// letters and digits, kept as they are so the store reads well; anything else (a name given in
/// code, or hostile text) is digested, so a key never depends on untrusted text.
pub fn account_segment(account: &str) -> String {
    if !account.is_empty() && account.bytes().all(|b| b.is_ascii_alphanumeric()) {
        account.to_ascii_lowercase()
    } else {
        digest(account)
    }
}
