//! Diagnosing the special tasks that run on nodes rather than in a job's queue: job preparation
//! and release (from a job's prep/release status list or their events) and a pool's start task.

use super::{Evidence, dedup, describe_exit_code, failure_of, prep_logs_hint};
use crate::classes::{ExitMeaning, FailureClass, advice_for_code, exit_code_hex};
use crate::fingerprint::fingerprint;
use crate::hints::stderr_hints;
use crate::redact::redact;
use crate::report::{Diagnosis, Subject};
use crate::wire::{
    FailureInfo, PrepReleaseStatus, PrepTaskExecutionInfo, PrepTaskState, SpecialTaskEventBody,
    SpecialTaskType, TaskResult,
};

/// Diagnoses one node of a job preparation/release status list: a diagnosis when its prep or
/// release task failed there, none when both succeeded (or have not finished).
pub fn diagnose_prep_release(
    status: &PrepReleaseStatus,
    evidence: &Evidence<'_>,
) -> Option<Diagnosis> {
    let prep = status
        .job_preparation_task_execution_info
        .as_ref()
        .filter(|e| special_failed(e));
    let release = status
        .job_release_task_execution_info
        .as_ref()
        .filter(|e| special_failed(e));
    let (class, exec) = match (prep, release) {
        (Some(prep), _) => (FailureClass::JobPrepFailed, prep),
        (None, Some(release)) => (FailureClass::JobReleaseFailed, release),
        (None, None) => return None,
    };
    let mut diagnosis = special_task_diagnosis(
        class,
        SpecialFacts {
            exit_code: exec.exit_code,
            failure: exec.failure_info.as_ref(),
            attempt: Some(exec.retry_count),
            node_id: status.node_id.clone(),
            pool_id: status.pool_id.clone(),
            task_root: exec.task_root_directory.as_deref(),
        },
        evidence,
    );
    if prep.is_some() && release.is_some() {
        diagnosis
            .hints
            .push("The job release task failed on this node too.".to_owned());
    }
    Some(diagnosis)
}

/// The nodes on which the job preparation task failed, from a prep/release status list: the
/// evidence that makes waiting tasks `task.prep_blocked` and an active job `job.stuck`.
pub fn prep_failed_nodes<'a>(
    statuses: impl IntoIterator<Item = &'a PrepReleaseStatus>,
) -> Vec<String> {
    statuses
        .into_iter()
        .filter(|s| {
            s.job_preparation_task_execution_info
                .as_ref()
                .is_some_and(special_failed)
        })
        .filter_map(|s| s.node_id.clone())
        .collect()
}

fn special_failed(exec: &PrepTaskExecutionInfo) -> bool {
    exec.result == Some(TaskResult::Failure)
        || exec.failure_info.is_some()
        || (exec.state == Some(PrepTaskState::Completed) && exec.exit_code.is_some_and(|c| c != 0))
}

/// Diagnoses a special-task event (job preparation, job release or start task on a node): a
/// diagnosis when it failed, none when it succeeded.
pub fn diagnose_special_task_event(
    event: &SpecialTaskEventBody,
    evidence: &Evidence<'_>,
) -> Option<Diagnosis> {
    let exec = event.execution_info.as_ref()?;
    let failure = exec
        .scheduling_error
        .as_ref()
        .filter(|f| f.code.is_some() || f.message.is_some());
    let failed = exec.result == Some(TaskResult::Failure)
        || failure.is_some()
        || exec.exit_code.is_some_and(|c| c != 0);
    if !failed {
        return None;
    }
    let class = match event.special_type() {
        SpecialTaskType::JobPreparation => FailureClass::JobPrepFailed,
        SpecialTaskType::JobRelease => FailureClass::JobReleaseFailed,
        SpecialTaskType::StartTask => FailureClass::NodeStartTaskFailed,
        SpecialTaskType::Other => return None,
    };
    let job_id = event.job_id.as_deref().or(evidence.job_id);
    let evidence = Evidence {
        job_id,
        ..*evidence
    };
    let node = event.node_info.as_ref();
    Some(special_task_diagnosis(
        class,
        SpecialFacts {
            exit_code: exec.exit_code,
            failure,
            attempt: None,
            node_id: node.and_then(|n| n.node_id.clone()),
            pool_id: node.and_then(|n| n.pool_id.clone()),
            task_root: None,
        },
        &evidence,
    ))
}

pub(super) struct SpecialFacts<'a> {
    pub(super) exit_code: Option<i32>,
    pub(super) failure: Option<&'a FailureInfo>,
    pub(super) attempt: Option<i32>,
    pub(super) node_id: Option<String>,
    pub(super) pool_id: Option<String>,
    pub(super) task_root: Option<&'a str>,
}

pub(super) fn special_task_diagnosis(
    class: FailureClass,
    facts: SpecialFacts<'_>,
    evidence: &Evidence<'_>,
) -> Diagnosis {
    let job_id = evidence
        .job_id
        .map(str::to_owned)
        .or_else(|| evidence.job.and_then(|j| j.id.clone()));
    let node = facts.node_id.as_deref().unwrap_or("(unknown node)");
    let code = facts.failure.and_then(|f| f.code.as_deref());
    let exit_meaning = facts.exit_code.filter(|c| *c != 0).map(ExitMeaning::of);
    let how = match (facts.exit_code, code) {
        (Some(c), _) if c != 0 => format!(" with {}", describe_exit_code(c)),
        (_, Some(code)) => format!(" ({code})"),
        _ => String::new(),
    };
    let job_text = job_id.as_deref().unwrap_or("{jobId}");
    let of_job = job_id
        .as_deref()
        .map_or_else(String::new, |j| format!(" of job {j}"));
    let mut hints = Vec::new();
    let (summary, mut cause) = match class {
        FailureClass::JobPrepFailed => {
            hints.push(prep_logs_hint(
                evidence,
                facts.node_id.as_deref(),
                facts.task_root,
            ));
            (
                format!("Job preparation task{of_job} failed on node {node}{how}; the job may be stuck."),
                "The job preparation task runs on each node before any of the job's tasks. It failed here, so (with waitForSuccess, the default) the job's tasks will not run on this node until it is reimaged: they go back to active, and if no other node can run them the job is stuck.".to_owned(),
            )
        }
        FailureClass::JobReleaseFailed => {
            let dir = facts.task_root.map_or_else(
                || format!("workitems/{job_text}/job-1/jobrelease"),
                str::to_owned,
            );
            hints.push(format!("The release task's stdout.txt and stderr.txt are under {dir}/ on node {node}; batch-triage preserves them to {{account}}/{job_text}/_jobrelease/{node}/. Release tasks get at most 15 minutes (maxWallClockTime)."));
            (
                format!("Job release task{of_job} failed on node {node}{how}."),
                "The job release task runs on each node when the job ends, to clean up. It failed here; the job's results are not affected, but the node may be left with data or processes behind.".to_owned(),
            )
        }
        _ => {
            hints.push("The start task's stdout.txt and stderr.txt are under startup/ on the node. With waitForSuccess the node is unusable until the start task succeeds (node state starttaskfailed); fix it and reboot or reimage the node.".to_owned());
            (
                format!("Start task failed on node {node}{how}."),
                "The pool's start task failed on this node, so the node may not run tasks."
                    .to_owned(),
            )
        }
    };
    if let Some(message) = facts.failure.and_then(|f| f.message.as_deref()) {
        cause.push_str(&format!(" Batch says: \"{}\"", redact(message.trim())));
    }
    if let Some((_, advice)) = code.and_then(advice_for_code) {
        hints.push(advice.to_owned());
    }
    if let Some(hint) = exit_meaning.and_then(ExitMeaning::hint) {
        hints.push(hint.to_owned());
    }
    if let Some(tail) = evidence.stderr_tail {
        hints.extend(stderr_hints(tail));
    }
    Diagnosis {
        fingerprint: fingerprint(
            class,
            code,
            facts.exit_code,
            facts.failure.and_then(|f| f.message.as_deref()),
            evidence.stderr_tail,
        ),
        subject: Subject {
            account: evidence.account.map(str::to_ascii_lowercase),
            job_id,
            task_id: None,
            attempt: facts.attempt,
            pool_id: facts.pool_id,
            node_id: facts.node_id,
        },
        class,
        severity: class.severity(),
        summary,
        cause,
        hints: dedup(hints),
        exit_code: facts.exit_code,
        exit_code_hex: facts.exit_code.and_then(exit_code_hex),
        exit_meaning,
        failure: facts.failure.map(failure_of),
        impact: None,
        logs: ["stdout.txt", "stderr.txt"].map(String::from).to_vec(),
    }
}
