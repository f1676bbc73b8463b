//! What the pipeline says about each subject and each payload.

use batch_client::BatchError;
use diagnosis::FailureClass;
use diagnosis::payload::PayloadError;

use super::subject::Copied;

/// What became of one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Diagnosed, and the planned effects ran (or were already done).
    Done,
    /// Not processed on purpose (a pool event, a task that no longer exists).
    Skipped(String),
    /// Refused: the payload named an account or URL that is not configured.
    Refused(String),
    /// Failed; `retryable` says whether running the payload again may succeed.
    Failed {
        /// What went wrong (no secrets).
        reason: String,
        /// Whether a retry may succeed (throttling, a network error, a store race).
        retryable: bool,
    },
}

/// The report of one subject.
#[derive(Debug, Clone)]
pub struct SubjectReport {
    /// `account/job[/task]`, `account/job/_jobprep/node`, `account/job/_jobrelease/node` or
    /// `account/_pools/pool/node/_starttask`.
    pub subject: String,
    /// The diagnosis's class, when it got that far.
    pub class: Option<FailureClass>,
    /// Where the logs went (a store link or key prefix).
    pub preserved: Vec<String>,
    /// True when every preserved folder was already complete: a duplicate.
    pub already_preserved: bool,
    /// Receivers an alert was delivered to now.
    pub notified: Vec<String>,
    /// Receivers whose alert failed and went to the outbox.
    pub outboxed: Vec<String>,
    /// Alerts waiting for their group (`group_wait`); the sweep sends them.
    pub waiting: usize,
    /// The job or node action decision, when a rule asked for one.
    pub action: Option<String>,
    /// Where the node agent's logs stand (`requested`, `uploading`, `complete`, `incomplete`,
    /// `node_gone`, `unavailable`), when they were asked for.
    pub agent_logs: Option<String>,
    /// The silence that muted this subject's alert, if one did (policy `policy:N` or a store id).
    pub muted_by: Option<String>,
    /// What happened.
    pub outcome: Outcome,
}

impl SubjectReport {
    /// Records a copy: where its folders went, whether all were duplicates, and a retry when a
    /// file was left unfinished. Returns the stderr tail that sharpens the diagnosis.
    pub(super) fn record_preserved(&mut self, copied: Copied) -> Option<String> {
        self.already_preserved =
            !copied.folders.is_empty() && copied.folders.iter().all(|p| p.already_preserved);
        self.preserved.extend(
            copied
                .folders
                .iter()
                .map(|p| p.link.clone().unwrap_or(p.prefix.clone())),
        );
        if let Some(incomplete) = copied.folders.iter().find(|p| !p.complete) {
            self.outcome = incomplete_copy(incomplete);
        }
        copied.tail
    }

    /// A report for `subject` with nothing done yet (outcome `Done`, no effects).
    pub fn new(subject: String) -> Self {
        Self {
            subject,
            class: None,
            preserved: Vec::new(),
            already_preserved: false,
            notified: Vec::new(),
            outboxed: Vec::new(),
            waiting: 0,
            action: None,
            agent_logs: None,
            muted_by: None,
            outcome: Outcome::Done,
        }
    }
}

/// The report of one payload.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// One entry per distinct subject, in payload order.
    pub subjects: Vec<SubjectReport>,
    /// Items that are about nothing to triage (pool events, file entries, error bodies).
    pub ignored_items: usize,
}

impl RunReport {
    /// Whether the platform should deliver the payload again: some subject failed in a way a
    /// retry may fix. Everything already done is idempotent, so a retry repeats nothing.
    pub fn should_retry(&self) -> bool {
        self.subjects.iter().any(|s| {
            matches!(
                s.outcome,
                Outcome::Failed {
                    retryable: true,
                    ..
                }
            )
        })
    }
}

/// A payload that cannot be triaged at all.
#[derive(Debug, thiserror::Error)]
pub enum TriageError {
    /// The payload is not readable: a poison message, to log and acknowledge, never to retry.
    #[error("unreadable payload: {0}")]
    Payload(#[from] PayloadError),
}

/// A copy that left a file unfinished (it failed transiently): no manifest was written, and the
/// node may not keep the file for long, so the payload must come again. Alerts and actions still
/// ran (they are idempotent); the retry finishes the copy.
fn incomplete_copy(preserved: &preserve::PreserveReport) -> Outcome {
    let failed: Vec<String> = preserved
        .files
        .iter()
        .filter_map(|f| match &f.outcome {
            preserve::FileOutcome::Failed { error } => Some(format!("{}: {error}", f.name)),
            _ => None,
        })
        .collect();
    Outcome::Failed {
        reason: format!(
            "logs not completely preserved ({}); run again to finish the copy",
            if failed.is_empty() {
                "a file failed".to_owned()
            } else {
                failed.join("; ")
            }
        ),
        retryable: true,
    }
}

pub(crate) fn batch_failure(error: &BatchError) -> Outcome {
    Outcome::Failed {
        reason: error.to_string(),
        retryable: error.is_retryable(),
    }
}
