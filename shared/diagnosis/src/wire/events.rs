//! Batch diagnostic-log events (`docs/batch-facts.md`) and the envelopes that carry them: the Azure
//! Monitor record (alone, or in the `{records:[…]}` batch Event Hubs delivers), Event Grid events
//! and CloudEvents.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::lenient::{IsoDuration, Timestamp, int};
use super::rest::{
    BatchTask, FailureInfo, NodeInfo, TaskConstraints, TaskExecutionInfo, TaskResult, TaskState,
};

/// One Azure Monitor resource-log record (one line of a `PT1H.json` blob, or one element of the
/// `records` array on Event Hubs).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DiagnosticRecord<'a> {
    /// When the record was written.
    pub time: Option<String>,
    /// `/SUBSCRIPTIONS/…/PROVIDERS/MICROSOFT.BATCH/BATCHACCOUNTS/{account}/`.
    #[serde(alias = "ResourceId")]
    pub resource_id: Option<String>,
    /// `ServiceLog` for the events triage reads.
    #[serde(alias = "Category")]
    pub category: Option<String>,
    /// The event name: `TaskFailEvent`, `PoolResizeCompleteEvent`, …
    #[serde(alias = "OperationName")]
    pub operation_name: Option<String>,
    /// The event body, read according to `operation_name`.
    #[serde(alias = "Properties", borrow)]
    pub properties: Option<&'a RawValue>,
}

impl DiagnosticRecord<'_> {
    /// The Batch account named by `resourceId`, lower-cased.
    pub fn account(&self) -> Option<String> {
        account_from_resource_id(self.resource_id.as_deref()?)
    }
}

/// The account name at the end of an ARM resource id of a Batch account.
pub fn account_from_resource_id(resource_id: &str) -> Option<String> {
    let mut parts = resource_id.split('/').filter(|p| !p.is_empty());
    while let Some(part) = parts.next() {
        if part.eq_ignore_ascii_case("batchAccounts") {
            return parts.next().map(str::to_ascii_lowercase);
        }
    }
    None
}

/// The event names triage knows. Anything else is about pools or nodes and is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEventKind {
    /// `TaskStartEvent`: a task (or a retry of it) started.
    Start,
    /// `TaskCompleteEvent`: a task completed, whatever its exit code.
    Complete,
    /// `TaskFailEvent`: a task completed with a failure (sent besides `TaskCompleteEvent`).
    Fail,
    /// `TaskRequeueEvent`: a task was put back in the queue.
    Requeue,
    /// `TaskScheduleFailEvent`: a task could not be scheduled yet (e.g. its job prep failed).
    ScheduleFail,
}

impl TaskEventKind {
    /// Maps an `operationName`, ignoring case.
    pub fn from_operation_name(name: &str) -> Option<Self> {
        let known = [
            ("TaskStartEvent", Self::Start),
            ("TaskCompleteEvent", Self::Complete),
            ("TaskFailEvent", Self::Fail),
            ("TaskRequeueEvent", Self::Requeue),
            ("TaskScheduleFailEvent", Self::ScheduleFail),
        ];
        known
            .iter()
            .find(|(wire, _)| wire.eq_ignore_ascii_case(name))
            .map(|(_, kind)| *kind)
    }

    /// The `operationName` Batch uses.
    pub fn operation_name(self) -> &'static str {
        match self {
            Self::Start => "TaskStartEvent",
            Self::Complete => "TaskCompleteEvent",
            Self::Fail => "TaskFailEvent",
            Self::Requeue => "TaskRequeueEvent",
            Self::ScheduleFail => "TaskScheduleFailEvent",
        }
    }
}

/// `operationName` of the special-task event (job preparation, job release, start task).
pub fn is_special_task_operation(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.contains("specialtask")
        || lower == "jobpreparationtaskevent"
        || lower == "jobreleasetaskevent"
}

/// `executionInfo` of a task event. Failure info is called `schedulingError` in events.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TaskEventExecution {
    /// When the task started.
    pub start_time: Option<Timestamp>,
    /// When it ended.
    pub end_time: Option<Timestamp>,
    /// Exit code; null if it failed before it ran.
    #[serde(deserialize_with = "int::opt_i32")]
    pub exit_code: Option<i32>,
    /// Retries so far.
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub retry_count: i32,
    /// Requeues so far.
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub requeue_count: i32,
    /// `Success` / `Failure` (either casing).
    pub result: Option<TaskResult>,
    /// The failure, in events (empty strings mean none).
    pub scheduling_error: Option<FailureInfo>,
}

/// `constraints` of a task event.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TaskEventConstraints {
    /// Retries allowed.
    #[serde(deserialize_with = "int::opt_i32")]
    pub max_task_retry_count: Option<i32>,
    /// Not in the documented event body, but accepted if a forwarder adds it.
    pub max_wall_clock_time: Option<IsoDuration>,
}

/// Body of `TaskStartEvent`, `TaskCompleteEvent`, `TaskFailEvent`, `TaskRequeueEvent` and
/// `TaskScheduleFailEvent`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TaskEventBody {
    /// The job.
    pub job_id: Option<String>,
    /// The task.
    pub id: Option<String>,
    /// `User` or `JobManager`.
    pub task_type: Option<String>,
    /// Where it ran (`nodeId` is `" "` in schedule-fail events).
    pub node_info: Option<NodeInfo>,
    /// Constraints.
    pub constraints: Option<TaskEventConstraints>,
    /// Execution (absent in schedule-fail events).
    pub execution_info: Option<TaskEventExecution>,
    /// Top-level scheduling error of `TaskScheduleFailEvent`.
    pub scheduling_error: Option<FailureInfo>,
}

impl TaskEventBody {
    /// Whether an event of `kind` with this body may be about a failure, so that re-reading the
    /// task is worth a Batch request. Most of an account's events are starts and successful
    /// completions; they say nothing failed:
    /// - a start never does (the start of a retry follows the `TaskFailEvent` of the attempt
    ///   before it, which is looked at);
    /// - a completion with exit code 0, result success (or none), no scheduling error and no
    ///   retry does not (Batch counts every nonzero exit code as a failure and sends
    ///   `TaskFailEvent` too). A success after retries is looked at: it is `task.flaky`.
    ///
    /// Everything else is looked at, including a completion without execution info. Skipping a
    /// forged success hides nothing: the real failure's events and the sweep still find it.
    pub fn may_report_failure(&self, kind: TaskEventKind) -> bool {
        let scheduling_error = |e: Option<&FailureInfo>| e.is_some_and(|e| e.code.is_some());
        match kind {
            TaskEventKind::Start => false,
            TaskEventKind::Complete => {
                let succeeded = self.execution_info.as_ref().is_some_and(|e| {
                    e.exit_code == Some(0)
                        && e.retry_count == 0
                        && e.result
                            .as_ref()
                            .is_none_or(|r| matches!(r, TaskResult::Success))
                        && !scheduling_error(e.scheduling_error.as_ref())
                });
                !succeeded || scheduling_error(self.scheduling_error.as_ref())
            }
            TaskEventKind::Fail | TaskEventKind::Requeue | TaskEventKind::ScheduleFail => true,
        }
    }
}

/// Which event a bare body (without its record's `operationName`) is.
pub fn infer_event_kind(body: &TaskEventBody) -> TaskEventKind {
    let Some(exec) = &body.execution_info else {
        return TaskEventKind::ScheduleFail;
    };
    if exec.end_time.is_none() && exec.exit_code.is_none() && exec.result.is_none() {
        return TaskEventKind::Start;
    }
    let failed = exec.result == Some(TaskResult::Failure)
        || exec.exit_code.is_some_and(|c| c != 0)
        || exec
            .scheduling_error
            .as_ref()
            .is_some_and(|e| e.code.is_some());
    if failed {
        TaskEventKind::Fail
    } else {
        TaskEventKind::Complete
    }
}

/// The task an event describes, as far as the event tells (`docs/batch-facts.md`): the event's
/// `schedulingError` becomes `failureInfo`, and the state follows from the event.
pub fn task_from_event(kind: TaskEventKind, body: &TaskEventBody) -> BatchTask {
    let exec = body.execution_info.clone().unwrap_or_default();
    let failure: Option<FailureInfo> = exec
        .scheduling_error
        .clone()
        .or_else(|| body.scheduling_error.clone())
        .filter(|f| f.code.is_some() || f.message.is_some());
    let state = match kind {
        TaskEventKind::Start => TaskState::Running,
        TaskEventKind::Complete | TaskEventKind::Fail => TaskState::Completed,
        TaskEventKind::Requeue | TaskEventKind::ScheduleFail => TaskState::Active,
    };
    let result = exec.result.clone().or(match kind {
        TaskEventKind::Fail => Some(TaskResult::Failure),
        TaskEventKind::Complete if exec.exit_code == Some(0) && failure.is_none() => {
            Some(TaskResult::Success)
        }
        _ => None,
    });
    BatchTask {
        id: body.id.clone(),
        state: Some(state),
        node_info: body.node_info.clone(),
        constraints: body.constraints.as_ref().map(|c| TaskConstraints {
            max_wall_clock_time: c.max_wall_clock_time,
            retention_time: None,
            max_task_retry_count: c.max_task_retry_count,
        }),
        execution_info: Some(TaskExecutionInfo {
            start_time: exec.start_time,
            end_time: exec.end_time,
            exit_code: exec.exit_code,
            failure_info: failure,
            retry_count: exec.retry_count,
            requeue_count: match kind {
                // A requeue event is itself a requeue, even if the count was read before it.
                TaskEventKind::Requeue => exec.requeue_count.max(1),
                _ => exec.requeue_count,
            },
            result,
            ..TaskExecutionInfo::default()
        }),
        ..BatchTask::default()
    }
}

/// `executionInfo` of the special-task event.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SpecialTaskExecution {
    /// When it started.
    pub start_time: Option<Timestamp>,
    /// When it ended.
    pub end_time: Option<Timestamp>,
    /// Exit code.
    #[serde(deserialize_with = "int::opt_i32")]
    pub exit_code: Option<i32>,
    /// `success` / `failure`.
    pub result: Option<TaskResult>,
    /// The failure (empty strings mean none).
    pub scheduling_error: Option<FailureInfo>,
}

/// Body of the special-task event: a job preparation, job release or start task on one node.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SpecialTaskEventBody {
    /// The job (empty for a start task).
    #[serde(deserialize_with = "super::lenient::non_empty_string")]
    pub job_id: Option<String>,
    /// The task's name.
    pub task_name: Option<String>,
    /// `JobPrep`, `JobRelease`, `StartTask`, …
    pub task_type: Option<String>,
    /// Where it ran.
    pub node_info: Option<NodeInfo>,
    /// What happened.
    pub execution_info: Option<SpecialTaskExecution>,
}

/// Which special task a special-task event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialTaskType {
    /// The job preparation task.
    JobPreparation,
    /// The job release task.
    JobRelease,
    /// The pool's start task.
    StartTask,
    /// A type this version does not know.
    Other,
}

impl SpecialTaskEventBody {
    /// Reads `taskType` (`JobPrep`, `JobPreparation`, `JobRelease`, `StartTask`, any casing).
    pub fn special_type(&self) -> SpecialTaskType {
        let t = self
            .task_type
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if t.starts_with("jobprep") {
            SpecialTaskType::JobPreparation
        } else if t.starts_with("jobrelease") {
            SpecialTaskType::JobRelease
        } else if t.starts_with("starttask") || t == "start" {
            SpecialTaskType::StartTask
        } else {
            SpecialTaskType::Other
        }
    }
}

/// `data` of an Event Grid or CloudEvents event that only points at a task or job:
/// `{accountUrl?, jobId, taskId?}`, as custom topics and forwarders publish it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskReference {
    /// The Batch account URL, if the publisher named one. Untrusted: checked against the
    /// configured accounts before anything is fetched.
    #[serde(default)]
    pub account_url: Option<String>,
    /// The job.
    pub job_id: String,
    /// The task, or none for the job itself.
    #[serde(default)]
    pub task_id: Option<String>,
}

/// An Event Grid event (Event Grid schema).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EventGridEvent<'a> {
    /// Event id.
    pub id: Option<String>,
    /// Topic resource id.
    pub topic: Option<String>,
    /// Publisher-defined subject.
    pub subject: Option<String>,
    /// Publisher-defined type.
    pub event_type: Option<String>,
    /// The payload: any Batch payload kind, borrowed from the input.
    #[serde(borrow)]
    pub data: Option<&'a RawValue>,
}

/// A CloudEvents 1.0 event (structured JSON mode).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CloudEvent<'a> {
    /// Always `1.0`.
    pub specversion: Option<String>,
    /// Event id.
    pub id: Option<String>,
    /// Source URI.
    pub source: Option<String>,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Subject.
    pub subject: Option<String>,
    /// The payload: any Batch payload kind, borrowed from the input.
    #[serde(borrow)]
    pub data: Option<&'a RawValue>,
    /// Base64 payload; triage only reads JSON `data`.
    pub data_base64: Option<String>,
}
