//! `batch-triage demo`: the whole product on one machine, with no Azure account. It starts the
//! Batch emulator with the built-in scenario (plus `scenario.json` beside this file) and a
//! second account, runs the real pipeline against them with a local-directory store, feeds it
//! events the way Event Hubs, Event Grid and CloudEvents deliver them, adds an operator's
//! silence to the store (as `batch-triage silence add` does), runs the timer's ticks, and
//! records what loopback Teams, webhook, SMTP, PagerDuty and Slack receivers got. Then it
//! writes `report.html` (the store's report page from `batch-triage-report`, with the demo's
//! sections) and its JSON twin. The CLI's `demo` subcommand parses arguments and prints the
//! summary; the rest is here, so each part can be tested in process.
//!
//! # Layout
//! - [`scenario`]: the emulator's scenario and the demo's policy.
//! - [`run`]: preparing the directory, building the pipeline from settings, and the triggers.
//! - `feed`: the trigger payloads.
//! - `receivers`: the loopback Teams/webhook recorder and the SMTP sink.
//! - [`subject`]: the pipeline's subject labels, typed.
//! - [`report`]: collecting what happened into findings, and `report.json` / `report.html`
//!   (drawn by `batch-triage-report`).

mod error;
mod feed;
pub mod receivers;
pub mod report;
pub mod run;
pub mod scenario;
pub mod subject;

pub use error::DemoError;
pub use report::Report;
pub use run::{DemoOutcome, MARKER, Run, prepare_out_dir, run_demo};
pub use subject::SubjectKey;

/// Log files larger than this are recorded as skipped, not copied: the scenario's `etl/big-log`
/// has a 2 GiB stdout, and copying it would turn a seconds-long demo into a minute-long one.
pub const DEMO_MAX_FILE_BYTES: u64 = 16 << 20;
