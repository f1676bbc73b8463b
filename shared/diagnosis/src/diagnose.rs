//! Turning Batch facts into a [`Diagnosis`]. Total and pure: every input gives a diagnosis (at
//! worst `*.unknown`), nothing here reads a clock, a file or the network.
//!
//! Tasks are diagnosed here; jobs in `diagnose/job.rs`, the special tasks on nodes (job
//! preparation and release, start tasks) in `diagnose/special.rs`, pools in `diagnose/pool.rs`
//! and nodes in `diagnose/node.rs`.

mod job;
mod node;
mod pool;
mod special;

use std::time::Duration;

use crate::classes::{
    ExitMeaning, FailureClass, advice_for_code, exit_code_hex, is_pre_processing_class,
    task_class_for_code,
};
use crate::fingerprint::fingerprint;
use crate::hints::{command_line_shell_hint, stderr_hints};
use crate::policy::format_duration;
use crate::redact::redact;
use crate::report::{Detail, Diagnosis, Failure, Impact, Subject};
use crate::wire::{
    BatchJob, BatchTask, DependencyAction, ExitConditions, ExitOptions, FailureInfo, JobAction,
    OnTaskFailure, TaskCounts, TaskExecutionInfo, TaskResult, TaskState, Timestamp,
    account_from_url,
};
pub use job::diagnose_job;
use job::job_pool_id;
pub use node::diagnose_node;
pub use pool::{DEFAULT_DELETE_STUCK_AFTER, diagnose_pool, diagnose_pool_event};
pub use special::{diagnose_prep_release, diagnose_special_task_event, prep_failed_nodes};

/// Everything known besides the subject itself. All optional: the more there is, the sharper the
/// diagnosis.
#[derive(Debug, Clone, Copy, Default)]
pub struct Evidence<'a> {
    /// The account, when the caller knows it better than the payload (a configured account).
    pub account: Option<&'a str>,
    /// The task's job: gives `onTaskFailure` for the impact replay and the prep task's id.
    pub job: Option<&'a BatchJob>,
    /// The job id, when the payload does not say (a prep-status list, a bare task).
    pub job_id: Option<&'a str>,
    /// The tail of the task's stderr, already captured: sharpens hints and the fingerprint.
    pub stderr_tail: Option<&'a str>,
    /// Nodes on which the job preparation task has failed.
    pub prep_failed_nodes: &'a [String],
    /// The job's task counts.
    pub task_counts: Option<TaskCounts>,
    /// The current time, for "stuck" decisions. Passed in: the core reads no clock.
    pub now: Option<Timestamp>,
    /// How long a job may stay active without progress before it counts as stuck.
    pub stuck_after: Option<Duration>,
    /// The pool of a node, when its body does not say (a node list read with `$select`).
    pub pool_id: Option<&'a str>,
    /// How many active jobs wait on the pool being diagnosed: a pool that failed to grow, has no
    /// node and has jobs waiting is critical. `None` when unknown.
    pub pool_active_jobs: Option<u32>,
    /// How long a pool may stay `deleting` before it counts as stuck; `None` means
    /// [`DEFAULT_DELETE_STUCK_AFTER`]. Needs `now`.
    pub delete_stuck_after: Option<Duration>,
}

/// Diagnoses one task.
pub fn diagnose_task(task: &BatchTask, evidence: &Evidence<'_>) -> Diagnosis {
    let exec = task.execution_info.as_ref();
    let failure_info = exec.and_then(TaskExecutionInfo::failure);
    let exit_code = exec.and_then(|e| e.exit_code);
    let retry_count = exec.map_or(0, |e| e.retry_count);
    let requeue_count = exec.map_or(0, |e| e.requeue_count);
    let node_id = task.node_info.as_ref().and_then(|n| n.node_id.clone());
    let code = failure_info.and_then(|f| f.code.as_deref());
    let completed = is_completed(task);

    let class = classify_task(task, evidence, completed);
    let subject = task_subject(task, evidence, retry_count, node_id.clone());
    let who = task_label(&subject);
    let exit_meaning = exit_code.filter(|c| *c != 0).map(ExitMeaning::of);
    let facts = TaskFacts {
        code,
        exit_code,
        exit_meaning,
        retry_count,
        requeue_count,
        node_id: node_id.as_deref(),
    };
    let (summary, mut cause) = task_summary(task, class, &who, &facts, evidence);
    // Batch's own words, whenever it gave some: they often name the file, image or container.
    if let Some(message) = failure_info.and_then(|f| f.message.as_deref()) {
        cause.push_str(&format!(" Batch says: \"{}\"", redact(message.trim())));
    }

    let impact = completed.then(|| replay_exit_conditions(task, class, exit_code, evidence.job));
    let hints = task_hints(
        task,
        class,
        code,
        exit_meaning,
        impact.as_ref(),
        evidence,
        retry_count,
    );
    Diagnosis {
        fingerprint: fingerprint(
            class,
            code,
            exit_code,
            failure_info.and_then(|f| f.message.as_deref()),
            evidence.stderr_tail,
        ),
        subject,
        class,
        severity: class.severity(),
        summary,
        cause,
        hints,
        exit_code,
        exit_code_hex: exit_code.and_then(exit_code_hex),
        exit_meaning,
        failure: failure_info.map(failure_of),
        impact,
        logs: task_logs(class),
    }
}

/// What a task's execution info says, read once for the summary.
struct TaskFacts<'a> {
    code: Option<&'a str>,
    exit_code: Option<i32>,
    exit_meaning: Option<ExitMeaning>,
    retry_count: i32,
    requeue_count: i32,
    node_id: Option<&'a str>,
}

/// Who the task is: the account, job and pool from the evidence when it knows them, else from the
/// task's URL (and the job for the pool).
fn task_subject(
    task: &BatchTask,
    evidence: &Evidence<'_>,
    retry_count: i32,
    node_id: Option<String>,
) -> Subject {
    Subject {
        account: evidence
            .account
            .map(str::to_ascii_lowercase)
            .or_else(|| task.url.as_deref().and_then(account_from_url)),
        job_id: evidence
            .job_id
            .map(str::to_owned)
            .or_else(|| task.url.as_deref().and_then(job_id_from_url))
            .or_else(|| evidence.job.and_then(|j| j.id.clone())),
        task_id: task.id.clone(),
        attempt: Some(retry_count),
        pool_id: task
            .node_info
            .as_ref()
            .and_then(|n| n.pool_id.clone())
            .or_else(|| evidence.job.and_then(job_pool_id)),
        node_id,
    }
}

/// The summary line and the cause of a task's diagnosis, by class.
fn task_summary(
    task: &BatchTask,
    class: FailureClass,
    who: &str,
    facts: &TaskFacts<'_>,
    evidence: &Evidence<'_>,
) -> (String, String) {
    let TaskFacts {
        code,
        exit_code,
        exit_meaning,
        retry_count,
        requeue_count,
        node_id,
    } = *facts;
    match class {
        FailureClass::TaskSucceeded => (format!("{who} succeeded."), "The task completed with exit code 0.".to_owned()),
        FailureClass::TaskFlaky => (
            format!("{who} succeeded after {retry_count} {}.", plural(retry_count, "retry", "retries")),
            format!("The task failed {retry_count} {} before an attempt succeeded. The logs of the failed attempts were overwritten on the node.", plural(retry_count, "time", "times")),
        ),
        FailureClass::TaskExitCode => {
            let code_text = exit_code.map_or_else(|| "a non-zero exit code".to_owned(), describe_exit_code);
            (
                format!("{who} failed with {code_text}."),
                match (exit_code, exit_meaning) {
                    (Some(c), Some(meaning)) if meaning != ExitMeaning::Application => {
                        format!("The program exited with {c}: {}.", meaning.meaning())
                    }
                    (Some(c), _) => format!("The program exited with {c}, a code of the application's own; stderr.txt usually says why."),
                    (None, _) => "Batch reports a non-zero exit without the code.".to_owned(),
                },
            )
        }
        FailureClass::TaskTimeout => {
            let limit = task_wall_clock_limit(task).map(prose_duration).unwrap_or_default();
            let ran = run_time(task).map(prose_duration).unwrap_or_default();
            (
                format!("{who} was killed at its maxWallClockTime of {limit}."),
                format!("The task ran for {ran}, reaching constraints.maxWallClockTime ({limit}); Batch ended it (TaskEnded){}.", exit_code.map_or_else(String::new, |c| format!(" with {}", describe_exit_code(c)))),
            )
        }
        FailureClass::TaskTerminated => (
            format!("{who} was terminated before it finished."),
            "Batch ended the task (TaskEnded) because someone called Terminate Task, the job was terminated, or the job was disabled with disableTasks=terminate.".to_owned(),
        ),
        FailureClass::TaskPrepBlocked => {
            let node = node_id.or_else(|| evidence.prep_failed_nodes.first().map(String::as_str));
            (
                format!("{who} cannot run: the job preparation task failed{}.", node.map_or_else(String::new, |n| format!(" on node {n}"))),
                "When the job preparation task fails on a node, the job's tasks cannot run there: they go back to active and wait for another node. If no node can run the preparation task, the job is stuck.".to_owned(),
            )
        }
        FailureClass::TaskRequeued => (
            format!("{who} was requeued ({requeue_count} {}).", plural(requeue_count, "time", "times")),
            "Batch put the task back in the queue: the node was preempted (Spot/low-priority), removed by a resize or autoscale, or recovered by the service, or the job was disabled with requeue. This is not a failure of the task.".to_owned(),
        ),
        FailureClass::TaskInProgress => {
            let state = task.state.as_ref().map_or("in progress", |s| s.as_str());
            (
                format!("{who} is {state}."),
                if retry_count > 0 {
                    format!("The task has not completed yet; Batch is on retry {retry_count} after earlier failures.")
                } else {
                    "The task has not completed yet.".to_owned()
                },
            )
        }
        FailureClass::TaskCommandLaunch | FailureClass::TaskResourceFiles | FailureClass::TaskOutputUpload | FailureClass::TaskContainer => {
            let what = match class {
                FailureClass::TaskCommandLaunch => "could not launch its command line",
                FailureClass::TaskResourceFiles => "could not get its inputs onto the node",
                FailureClass::TaskOutputUpload => "could not upload its output files",
                _ => "could not set up its container",
            };
            (
                format!("{who} {what}{}.", code.map_or_else(String::new, |c| format!(" ({c})"))),
                code.and_then(advice_for_code).map_or_else(|| class.meaning().to_owned(), |(cause, _)| cause.to_owned()),
            )
        }
        _ => (
            format!("{who} failed{}.", code.map_or_else(String::new, |c| format!(" with {c}"))),
            if task
                .execution_info
                .as_ref()
                .and_then(TaskExecutionInfo::failure)
                .and_then(|f| f.message.as_deref())
                .is_some()
            {
                "batch-triage does not recognise this failure; Batch's own message follows.".to_owned()
            } else {
                "batch-triage does not recognise this failure, and Batch gave no message with it."
                    .to_owned()
            },
        ),
    }
}

/// The task's files worth reading (and preserving) for a diagnosis of this class.
fn task_logs(class: FailureClass) -> Vec<String> {
    match class {
        FailureClass::TaskSucceeded | FailureClass::TaskInProgress | FailureClass::TaskRequeued => {
            Vec::new()
        }
        FailureClass::TaskOutputUpload => [
            "stdout.txt",
            "stderr.txt",
            "fileuploadout.txt",
            "fileuploaderr.txt",
        ]
        .map(String::from)
        .to_vec(),
        _ => ["stdout.txt", "stderr.txt"].map(String::from).to_vec(),
    }
}

fn is_completed(task: &BatchTask) -> bool {
    match &task.state {
        Some(state) => *state == TaskState::Completed,
        // A `$select` without `state`: judge by what only completed tasks have.
        None => task
            .execution_info
            .as_ref()
            .is_some_and(|e| e.end_time.is_some() || e.result.is_some() || e.exit_code.is_some()),
    }
}

fn classify_task(task: &BatchTask, evidence: &Evidence<'_>, completed: bool) -> FailureClass {
    let exec = task.execution_info.as_ref();
    let failure_code = exec
        .and_then(TaskExecutionInfo::failure)
        .and_then(|f| f.code.as_deref());
    let exit_code = exec.and_then(|e| e.exit_code);
    let code_class = failure_code.and_then(task_class_for_code);

    if !completed {
        let node = task.node_info.as_ref().and_then(|n| n.node_id.as_deref());
        let waiting = matches!(
            task.state,
            Some(TaskState::Active | TaskState::Preparing) | None
        );
        let prep_failed_here = match node {
            Some(node) => evidence.prep_failed_nodes.iter().any(|n| n == node),
            None => !evidence.prep_failed_nodes.is_empty(),
        };
        if code_class == Some(FailureClass::TaskPrepBlocked) || (waiting && prep_failed_here) {
            return FailureClass::TaskPrepBlocked;
        }
        if exec.is_some_and(|e| e.requeue_count > 0) && waiting {
            return FailureClass::TaskRequeued;
        }
        return code_class.unwrap_or(FailureClass::TaskInProgress);
    }

    let result = exec.and_then(|e| e.result.as_ref());
    let failed = result == Some(&TaskResult::Failure)
        || failure_code.is_some()
        || exit_code.is_some_and(|c| c != 0);
    if !failed {
        let succeeded = result == Some(&TaskResult::Success) || exit_code == Some(0);
        return match (succeeded, exec.map_or(0, |e| e.retry_count)) {
            (true, 0) => FailureClass::TaskSucceeded,
            (true, _) => FailureClass::TaskFlaky,
            (false, _) => FailureClass::TaskUnknown,
        };
    }
    match code_class {
        Some(FailureClass::TaskTerminated) => {
            if ran_into_wall_clock(task) {
                FailureClass::TaskTimeout
            } else {
                FailureClass::TaskTerminated
            }
        }
        Some(class) => class,
        None if exit_code.is_some_and(|c| c != 0) => FailureClass::TaskExitCode,
        None => FailureClass::TaskUnknown,
    }
}

/// The task's finite maxWallClockTime, if it has one.
fn task_wall_clock_limit(task: &BatchTask) -> Option<Duration> {
    task.constraints.as_ref()?.max_wall_clock_time?.finite()
}

/// How long the (last attempt of the) task ran.
fn run_time(task: &BatchTask) -> Option<Duration> {
    let exec = task.execution_info.as_ref()?;
    let ran = exec.end_time?.0 - exec.start_time?.0;
    Duration::try_from(ran).ok()
}

/// A `TaskEnded` failure is a timeout when endTime − startTime ≥ a finite maxWallClockTime
/// (docs/failure-classes.md).
fn ran_into_wall_clock(task: &BatchTask) -> bool {
    matches!((task_wall_clock_limit(task), run_time(task)), (Some(limit), Some(ran)) if ran >= limit)
}

/// Replays Batch's `exitConditions` for how this task ended (docs/failure-classes.md; the
/// shapes are in docs/batch-facts.md).
fn replay_exit_conditions(
    task: &BatchTask,
    class: FailureClass,
    exit_code: Option<i32>,
    job: Option<&BatchJob>,
) -> Impact {
    let empty = ExitConditions::default();
    let conditions = task.exit_conditions.as_ref().unwrap_or(&empty);
    let succeeded = matches!(class, FailureClass::TaskSucceeded | FailureClass::TaskFlaky);
    let by_exit_code = exit_code.and_then(|code| {
        conditions
            .exit_codes
            .iter()
            .find(|m| m.code == code)
            .map(|m| &m.exit_options)
            .or_else(|| {
                conditions
                    .exit_code_ranges
                    .iter()
                    .find(|r| r.start <= code && code <= r.end)
                    .map(|r| &r.exit_options)
            })
    });
    // An exit-code match wins over fileUploadError; pre-processing errors have no exit code.
    let by_kind = || match class {
        FailureClass::TaskOutputUpload => conditions.file_upload_error.as_ref(),
        c if is_pre_processing_class(c) && exit_code.is_none() => {
            conditions.pre_processing_error.as_ref()
        }
        _ => None,
    };
    // `default` covers failures only: exit code 0 must be listed explicitly.
    let default = if succeeded {
        None
    } else {
        conditions.default_options.as_ref()
    };
    let matched: Option<&ExitOptions> = by_exit_code.or_else(by_kind).or(default);
    let job_action = matched
        .and_then(|o| o.job_action.clone())
        .unwrap_or(if succeeded {
            JobAction::None
        } else {
            JobAction::Terminate
        });
    let dependency_action =
        matched
            .and_then(|o| o.dependency_action.clone())
            .unwrap_or(if succeeded {
                DependencyAction::Satisfy
            } else {
                DependencyAction::Block
            });
    Impact {
        job_action: job_action.as_str().to_owned(),
        job_action_honoured: job
            .map(|j| j.on_task_failure == Some(OnTaskFailure::PerformExitOptionsJobAction)),
        dependency_action: dependency_action.as_str().to_owned(),
    }
}

fn task_hints(
    task: &BatchTask,
    class: FailureClass,
    code: Option<&str>,
    exit_meaning: Option<ExitMeaning>,
    impact: Option<&Impact>,
    evidence: &Evidence<'_>,
    retry_count: i32,
) -> Vec<String> {
    let mut hints = Vec::new();
    if class.is_failure() || class == FailureClass::TaskFlaky {
        if let Some((_, advice)) = code.and_then(advice_for_code) {
            hints.push(advice.to_owned());
        }
        if let Some(hint) = exit_meaning.and_then(ExitMeaning::hint) {
            hints.push(hint.to_owned());
        }
        if let Some(hint) = task
            .command_line
            .as_deref()
            .and_then(command_line_shell_hint)
        {
            hints.push(hint);
        }
    }
    match class {
        FailureClass::TaskExitCode if exit_meaning == Some(ExitMeaning::Application) => {
            hints.push("The exit code is the application's own: the reason is in stderr.txt (and stdout.txt) of the task.".to_owned());
        }
        FailureClass::TaskTimeout => hints.push(
            "Raise constraints.maxWallClockTime if the work legitimately takes longer, or split it into smaller tasks; if the task usually finishes in time, look in stdout.txt for where it stalled.".to_owned(),
        ),
        FailureClass::TaskTerminated => {
            let reason = evidence.job.and_then(|j| j.execution_info.as_ref()).and_then(|e| e.terminate_reason.as_deref());
            hints.push(match reason {
                Some(reason) => format!("The job was terminated with reason \"{}\": that, not the task, ended it.", redact(reason)),
                None => "Check the Azure activity log (or whoever automates the job) for a Terminate Task, Terminate Job or Disable Job call at the task's end time.".to_owned(),
            });
        }
        FailureClass::TaskOutputUpload if code.and_then(advice_for_code).is_none() => hints.push(
            "fileuploaderr.txt in the task directory has the real upload error; the application itself may have succeeded.".to_owned(),
        ),
        FailureClass::TaskPrepBlocked => hints.push(prep_logs_hint(evidence, task.node_info.as_ref().and_then(|n| n.node_id.as_deref()), None)),
        FailureClass::TaskRequeued => hints.push(
            "Requeues are expected on Spot/low-priority nodes. If they are frequent, use dedicated nodes for long tasks or make tasks checkpoint; tasks must be safe to run twice.".to_owned(),
        ),
        FailureClass::TaskFlaky => hints.push(
            "Intermittent failures often come from transient network or storage errors, or from running out of memory on busy nodes; batch-triage keeps each failed attempt's logs only if it sees the failure, so send it the diagnostic events.".to_owned(),
        ),
        FailureClass::TaskUnknown => hints.push(
            "Read stderr.txt of the task; if this code should have a class of its own, it is one line in batch-triage's code table.".to_owned(),
        ),
        _ => {}
    }
    if class.is_failure() {
        if let Some(tail) = evidence.stderr_tail {
            hints.extend(stderr_hints(tail));
        }
        let max_retries = task
            .constraints
            .as_ref()
            .and_then(|c| c.max_task_retry_count);
        if class == FailureClass::TaskExitCode && retry_count > 0 {
            hints.push(format!(
                "Batch retried the task {retry_count} {} and every attempt failed{}, so the failure is deterministic rather than transient.",
                plural(retry_count, "time", "times"),
                max_retries.map_or_else(String::new, |m| format!(" (maxTaskRetryCount {m})"))
            ));
        }
    }
    if let Some(impact) = impact {
        if impact.job_action != "none" {
            match impact.job_action_honoured {
                Some(true) => hints.push(format!(
                    "This ending makes Batch {} the job (exitConditions jobAction, honoured because the job's onTaskFailure is performexitoptionsjobaction).",
                    impact.job_action
                )),
                Some(false) if !matches!(class, FailureClass::TaskSucceeded | FailureClass::TaskFlaky) => hints.push(format!(
                    "exitConditions ask to {} the job, but the job's onTaskFailure is noaction, so Batch ignores it and the job keeps running.",
                    impact.job_action
                )),
                _ => {}
            }
        }
        if impact.dependency_action == "block" && class.is_failure() {
            hints.push(
                "Tasks that depend on this one will not run (dependencyAction block).".to_owned(),
            );
        }
    }
    dedup(hints)
}

fn prep_logs_hint(evidence: &Evidence<'_>, node: Option<&str>, task_root: Option<&str>) -> String {
    let job = evidence
        .job_id
        .map(str::to_owned)
        .or_else(|| evidence.job.and_then(|j| j.id.clone()));
    let prep_id = evidence
        .job
        .and_then(|j| j.job_preparation_task.as_ref())
        .and_then(|p| p.id.clone())
        .unwrap_or_else(|| "jobpreparation".to_owned());
    let job_text = job.as_deref().unwrap_or("{jobId}");
    let dir = task_root.map_or_else(
        || format!("workitems/{job_text}/job-1/{prep_id}"),
        str::to_owned,
    );
    let (on_node, preserved) = match node {
        Some(node) => (
            format!("on node {node}"),
            format!("{{account}}/{job_text}/_jobprep/{node}/"),
        ),
        // Schedule-fail events do not name the node; the job's prep/release status does.
        None => (
            "on the node where it failed (the job's preparation/release status names it)"
                .to_owned(),
            format!("{{account}}/{job_text}/_jobprep/{{nodeId}}/"),
        ),
    };
    format!(
        "The preparation task's stdout.txt and stderr.txt are under {dir}/ {on_node}; batch-triage preserves them to {preserved}. Fix the preparation task, then reimage the affected nodes (or let the job end) so tasks can run there again."
    )
}

fn failure_of(info: &FailureInfo) -> Failure {
    Failure {
        category: info.category.as_ref().map(|c| c.as_str().to_owned()),
        code: info.code.clone(),
        message: info.message.as_deref().map(redact),
        details: info
            .details
            .iter()
            .map(|d| Detail {
                name: d.name.clone(),
                value: d.value.as_deref().map(redact),
            })
            .collect(),
    }
}

/// The job id in a task URL: `…/jobs/{jobId}/tasks/{taskId}`.
pub fn job_id_from_url(url: &str) -> Option<String> {
    let path = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = path.split(['?', '#']).next()?;
    let mut segments = path.split('/');
    while let Some(segment) = segments.next() {
        if segment == "jobs" {
            return segments.next().filter(|s| !s.is_empty()).map(str::to_owned);
        }
    }
    None
}

fn task_label(subject: &Subject) -> String {
    let task = subject.task_id.as_deref().unwrap_or("(unnamed)");
    match &subject.job_id {
        Some(job) => format!("Task {task} of job {job}"),
        None => format!("Task {task}"),
    }
}

fn describe_exit_code(code: i32) -> String {
    let meaning = ExitMeaning::of(code);
    // Small negative codes are signal numbers (-9); hex only helps for NTSTATUS/HRESULT values.
    let hex = exit_code_hex(code).filter(|_| code < -255);
    match (hex, meaning) {
        (_, ExitMeaning::Application) if code >= 0 => format!("exit code {code}"),
        (Some(hex), ExitMeaning::Application) => format!("exit code {code} ({hex})"),
        (Some(hex), meaning) => format!("exit code {code} ({hex}: {})", meaning.short()),
        (None, meaning) => format!("exit code {code} ({})", meaning.short()),
    }
}

/// A duration in a diagnosis, in the one format the policy uses too (`1h30m`), to the second:
/// a task's milliseconds say nothing to a person reading why it failed.
fn prose_duration(duration: Duration) -> String {
    format_duration(Duration::from_secs(duration.as_secs()))
}

fn plural(n: i32, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

fn dedup(hints: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    hints
        .into_iter()
        .filter(|h| seen.insert(h.clone()))
        .collect()
}
