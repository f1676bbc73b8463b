//! The report from the store: what the pipeline recorded over a window (failures by class, job
//! and hour, each shown failure's cause, hints and preserved logs, the alert groups, the outbox,
//! the job actions taken or skipped, the silences and what they muted), gathered with bounded
//! work and rendered as JSON ([`StoreReport`] serialises) or as one self-contained HTML page
//! ([`StoreReport::html`]: inline CSS, no script, no request to anywhere, every value escaped).
//! A page that shows more than the store (the demo's) is this page with sections of its own
//! ([`StoreReport::html_with`], drawn with the helpers of [`page`]).
//!
//! Bounded: failures are counted from key listings of the failure index
//! ([`pipeline::history`]), never by reading every record; only [`Limits::per_class`] records
//! per class, [`Limits::jobs`] jobs and a fixed number of groups, outbox entries, audit records
//! and muted alerts are read. A store with 100,000 failures gives a report of the same size as
//! one with 1,000.
#![deny(missing_docs)]

mod gather;
mod html;
pub mod page;

use diagnosis::Diagnosis;
use pipeline::audit::AuditRecord;
use pipeline::history::FailureRecord;
use pipeline::silences::{ListedSilence, MutedAlert};
use serde::Serialize;

pub use gather::{Limits, ReportError, ReportOptions, build};

/// Everything the report shows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreReport {
    /// When it was built (RFC 3339).
    pub generated: String,
    /// The window's start (RFC 3339).
    pub since: String,
    /// The account filter, if any.
    pub account: Option<String>,
    /// Distinct failed subjects in the window.
    pub total_failures: u64,
    /// Per class, most failures first, each with its newest failures.
    pub classes: Vec<ClassSection>,
    /// The jobs with the most failures.
    pub jobs: Vec<JobCount>,
    /// Failures per hour, oldest first.
    pub timeline: Vec<HourCount>,
    /// Alert groups seen in the window.
    pub groups: Vec<GroupRow>,
    /// Groups the store holds in all (read: at most [`Limits::groups`]).
    pub groups_total: usize,
    /// Alerts waiting in the outbox for a retry.
    pub outbox: Vec<OutboxRow>,
    /// Entries in the outbox in all.
    pub outbox_total: usize,
    /// Entries moved aside as undeliverable.
    pub dead_letters: usize,
    /// Platform deliveries parked for the next sweep (an Event Hubs batch at its last retry,
    /// an Event Grid dead letter taken in).
    pub parked: usize,
    /// Deliveries kept as poison under `poisoned/` (alerted once as `delivery.unprocessable`).
    pub poisoned: usize,
    /// Job actions taken or skipped, newest first.
    pub actions: Vec<AuditRecord>,
    /// Audit records in the window's days in all.
    pub actions_total: usize,
    /// Silences in force during the window, with their counts.
    pub silences: Vec<ListedSilence>,
    /// Some alerts they muted.
    pub muted: Vec<MutedAlert>,
    /// What was cut to keep the report bounded, in words (empty when nothing was).
    pub truncated: Vec<String>,
}

/// One class's failures.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassSection {
    /// The class name.
    pub class: String,
    /// Its severity.
    pub severity: String,
    /// Distinct failed subjects with it.
    pub count: u64,
    /// The newest of them (at most [`Limits::per_class`]).
    pub failures: Vec<FailureRecord>,
}

/// A job and its count.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobCount {
    /// The account.
    pub account: String,
    /// The job id (from one of its records).
    pub job: String,
    /// Distinct failed subjects.
    pub count: u64,
}

/// An hour and its count.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HourCount {
    /// `2026-12-05T03`.
    pub hour: String,
    /// Distinct failed subjects first seen that hour.
    pub count: u64,
}

/// An alert group.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupRow {
    /// The receiver.
    pub receiver: String,
    /// The rule.
    pub rule: String,
    /// The group's key.
    pub group_key: String,
    /// Alerts folded in.
    pub count: u64,
    /// Notifications sent.
    pub sends: u64,
    /// When one is due, if waiting (RFC 3339).
    pub waiting_until: Option<String>,
    /// Last seen (RFC 3339).
    pub last_seen: String,
    /// The first alert's diagnosis.
    pub example: Diagnosis,
}

/// An alert in the outbox.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxRow {
    /// The receiver.
    pub receiver: String,
    /// What the alert is about.
    pub headline: String,
    /// Why its last delivery failed.
    pub last_error: String,
}

/// The `Content-Security-Policy` every handler serves the page with: nothing may load, only the
/// inline style applies (the page has no script, and untrusted text in it is escaped anyway).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What an HTTP request asks for: `?since=6h&account=prod&format=json` (all optional).
#[derive(Debug, Clone)]
pub struct ReportQuery {
    /// The report's options (the window, the account, `now`).
    pub options: ReportOptions,
    /// JSON rather than the page.
    pub json: bool,
}

/// Reads a report request's query string (the `key` parameter, checked by the handler, is
/// ignored here). Errors say which parameter is wrong, for a 400.
pub fn parse_query(query: Option<&str>, now: time::OffsetDateTime) -> Result<ReportQuery, String> {
    parse_params(
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .map(|(name, value)| (name.into_owned(), value.into_owned())),
        now,
    )
}

/// As [`parse_query`], from parameters already decoded (the Functions host's `Query` map, a
/// Lambda event's `queryStringParameters`).
pub fn parse_params(
    params: impl IntoIterator<Item = (String, String)>,
    now: time::OffsetDateTime,
) -> Result<ReportQuery, String> {
    let mut options = ReportOptions {
        since: std::time::Duration::from_secs(24 * 3600),
        account: None,
        now,
        limits: Limits::default(),
    };
    let mut json = false;
    for (name, value) in params {
        match name.as_str() {
            "since" => {
                options.since =
                    diagnosis::policy::parse_duration(&value).map_err(|e| format!("since: {e}"))?;
            }
            "account" if !value.is_empty() => options.account = Some(value),
            "format" => match value.as_str() {
                "json" => json = true,
                "html" => json = false,
                _ => return Err("format: html or json".to_owned()),
            },
            _ => {}
        }
    }
    Ok(ReportQuery { options, json })
}
