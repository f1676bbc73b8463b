//! The diagnosis JSON (docs/diagnosis-json.md): what `diagnose --output json` prints and what lands as
//! `diagnosis.json` beside preserved logs. Field names are camelCase like Batch's own; absent
//! facts are `null`, never invented.

use serde::{Deserialize, Serialize};

use crate::classes::{ExitMeaning, FailureClass, Severity};

/// What a diagnosis is about: a task attempt, a job, or a job's prep/release task on a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    /// The Batch account name (lower-case).
    pub account: Option<String>,
    /// The job.
    pub job_id: Option<String>,
    /// The task; `null` for job and node subjects.
    pub task_id: Option<String>,
    /// The attempt: the task's (or prep task's) `retryCount`.
    pub attempt: Option<i32>,
    /// The pool.
    pub pool_id: Option<String>,
    /// The node.
    pub node_id: Option<String>,
}

/// A failure as Batch reported it (`failureInfo` or `schedulingError`), with secrets redacted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// `usererror` or `servererror`.
    pub category: Option<String>,
    /// The Batch code.
    pub code: Option<String>,
    /// Batch's message.
    pub message: Option<String>,
    /// Batch's details.
    pub details: Vec<Detail>,
}

/// One `{name, value}` detail of a failure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detail {
    /// The name.
    pub name: Option<String>,
    /// The value (redacted).
    pub value: Option<String>,
}

/// What Batch itself does about this task's ending: the replay of its `exitConditions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Impact {
    /// `none`, `disable` or `terminate`.
    pub job_action: String,
    /// Whether Batch carries out `jobAction`: only under the job's
    /// `onTaskFailure: performexitoptionsjobaction`. `null` when the job is not known.
    pub job_action_honoured: Option<bool>,
    /// `satisfy` (dependent tasks may run) or `block`.
    pub dependency_action: String,
}

/// The diagnosis of one subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnosis {
    /// What it is about.
    pub subject: Subject,
    /// The failure class.
    pub class: FailureClass,
    /// How urgent it is (follows from the class).
    pub severity: Severity,
    /// One line for a human.
    pub summary: String,
    /// What happened and why, in a few sentences.
    pub cause: String,
    /// What to do, most specific first.
    pub hints: Vec<String>,
    /// The exit code, when the process ran.
    pub exit_code: Option<i32>,
    /// The exit code in hex, for negative (Windows NTSTATUS/HRESULT) codes.
    pub exit_code_hex: Option<String>,
    /// What the exit code usually means.
    pub exit_meaning: Option<ExitMeaning>,
    /// The failure as Batch reported it.
    pub failure: Option<Failure>,
    /// What Batch does about it (tasks only).
    pub impact: Option<Impact>,
    /// Log files worth keeping, relative to the task's directory.
    pub logs: Vec<String>,
    /// Groups diagnoses with the same cause across tasks (ids, numbers and times parameterised).
    pub fingerprint: String,
}
