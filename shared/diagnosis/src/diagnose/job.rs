//! Diagnosing a job: its scheduling error, how it ended, or whether it is stuck.

use std::time::Duration;

use super::{Evidence, dedup, failure_of, plural, prep_logs_hint, prose_duration};
use crate::classes::{FailureClass, JOB_SCHEDULING_ADVICE};
use crate::fingerprint::fingerprint;
use crate::redact::redact;
use crate::report::{Diagnosis, Subject};
use crate::wire::{BatchJob, FailureInfo, JobState, Timestamp, account_from_url};

/// Diagnoses a job.
pub fn diagnose_job(job: &BatchJob, evidence: &Evidence<'_>) -> Diagnosis {
    let exec = job.execution_info.as_ref();
    let scheduling_error = exec
        .and_then(|e| e.scheduling_error.as_ref())
        .filter(|s| s.code.is_some() || s.message.is_some());
    let terminate_reason = exec
        .and_then(|e| e.terminate_reason.as_deref())
        .filter(|r| !r.trim().is_empty());
    let class = classify_job(job, evidence, scheduling_error.is_some(), terminate_reason);

    let job_id = job
        .id
        .clone()
        .or_else(|| evidence.job_id.map(str::to_owned));
    let subject = Subject {
        account: evidence
            .account
            .map(str::to_ascii_lowercase)
            .or_else(|| job.url.as_deref().and_then(account_from_url)),
        job_id: job_id.clone(),
        task_id: None,
        attempt: None,
        pool_id: job_pool_id(job),
        node_id: None,
    };
    let who = format!("Job {}", job_id.as_deref().unwrap_or("(unnamed)"));
    let (summary, cause, hints) = job_summary(
        job,
        class,
        &who,
        scheduling_error,
        terminate_reason,
        evidence,
    );
    let message = scheduling_error
        .and_then(|s| s.message.as_deref())
        .or(terminate_reason);
    Diagnosis {
        fingerprint: fingerprint(
            class,
            scheduling_error.and_then(|s| s.code.as_deref()),
            None,
            message,
            None,
        ),
        subject,
        class,
        severity: class.severity(),
        summary,
        cause,
        hints: dedup(hints),
        exit_code: None,
        exit_code_hex: None,
        exit_meaning: None,
        failure: scheduling_error.map(failure_of),
        impact: None,
        logs: Vec::new(),
    }
}

/// The class of a job, from its scheduling error, its state and terminate reason, and (for an
/// active job) whether it is stuck.
fn classify_job(
    job: &BatchJob,
    evidence: &Evidence<'_>,
    has_scheduling_error: bool,
    terminate_reason: Option<&str>,
) -> FailureClass {
    let state = job.state.as_ref();
    if has_scheduling_error {
        FailureClass::JobSchedulingError
    } else if state == Some(&JobState::Completed) || (state.is_none() && terminate_reason.is_some())
    {
        match terminate_reason {
            Some(r) if r.eq_ignore_ascii_case("MaxWallClockTimeExpiry") => FailureClass::JobTimeout,
            Some(r) if r.eq_ignore_ascii_case("TaskFailed") => FailureClass::JobTerminatedByTask,
            Some(r)
                if r.eq_ignore_ascii_case("AllTasksComplete")
                    || r.eq_ignore_ascii_case("JMComplete") =>
            {
                FailureClass::JobCompleted
            }
            None => FailureClass::JobCompleted,
            Some(_) => FailureClass::JobTerminated,
        }
    } else if matches!(
        state,
        Some(
            JobState::Active
                | JobState::Disabling
                | JobState::Disabled
                | JobState::Enabling
                | JobState::Terminating
                | JobState::Deleting
        )
    ) {
        if job_is_stuck(job, evidence) {
            FailureClass::JobStuck
        } else {
            FailureClass::JobInProgress
        }
    } else {
        FailureClass::JobUnknown
    }
}

/// The summary line, the cause and the hints of a job's diagnosis, by class.
fn job_summary(
    job: &BatchJob,
    class: FailureClass,
    who: &str,
    scheduling_error: Option<&FailureInfo>,
    terminate_reason: Option<&str>,
    evidence: &Evidence<'_>,
) -> (String, String, Vec<String>) {
    let limit = job
        .constraints
        .as_ref()
        .and_then(|c| c.max_wall_clock_time)
        .and_then(|d| d.finite());
    let state = job.state.as_ref();
    let mut hints = Vec::new();
    let (summary, cause) = match class {
        FailureClass::JobSchedulingError => {
            let code = scheduling_error.and_then(|s| s.code.as_deref());
            if let Some((_, advice)) = code.and_then(|c| {
                JOB_SCHEDULING_ADVICE
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(c))
            }) {
                hints.push((*advice).to_owned());
            }
            (
                format!(
                    "{who} could not be scheduled{}.",
                    code.map_or_else(String::new, |c| format!(" ({c})"))
                ),
                format!(
                    "Batch could not schedule the job's tasks{}",
                    scheduling_error
                        .and_then(|s| s.message.as_deref())
                        .map_or_else(|| ".".to_owned(), |m| format!(": \"{}\"", redact(m.trim())))
                ),
            )
        }
        FailureClass::JobTimeout => {
            hints.push("Raise the job's constraints.maxWallClockTime, or find the tasks that kept it running (long queues, stuck or retrying tasks).".to_owned());
            (
                format!("{who} was terminated at its maxWallClockTime{}.", limit.map_or_else(String::new, |l| format!(" of {}", prose_duration(l)))),
                "The job ran longer than its constraints.maxWallClockTime, so Batch terminated it (terminateReason MaxWallClockTimeExpiry) and ended its running tasks.".to_owned(),
            )
        }
        FailureClass::JobTerminatedByTask => {
            hints.push("Find the failed task: its exitConditions set jobAction terminate. List the job's tasks with $filter=executionInfo/result eq 'failure' (batch-triage sweep does this).".to_owned());
            (
                format!("{who} was terminated by a failed task."),
                "A task failed and its exitConditions (jobAction terminate, under onTaskFailure performexitoptionsjobaction) made Batch terminate the job (terminateReason TaskFailed).".to_owned(),
            )
        }
        FailureClass::JobTerminated => {
            hints.push("The terminate reason was given by whoever terminated the job; the Azure activity log names the caller.".to_owned());
            (
                format!(
                    "{who} was terminated (\"{}\").",
                    redact(terminate_reason.unwrap_or_default())
                ),
                format!(
                    "The job was terminated with reason \"{}\".",
                    redact(terminate_reason.unwrap_or_default())
                ),
            )
        }
        FailureClass::JobCompleted => (
            format!("{who} completed."),
            format!(
                "The job completed{}.",
                terminate_reason.map_or_else(String::new, |r| format!(" ({r})"))
            ),
        ),
        FailureClass::JobStuck => {
            if !evidence.prep_failed_nodes.is_empty() {
                hints.push(prep_logs_hint(
                    evidence,
                    evidence.prep_failed_nodes.first().map(String::as_str),
                    None,
                ));
            }
            hints.push("To stop the pool cycling, disable the job (disableTasks requeue) while you fix it, then enable it again.".to_owned());
            let why = stuck_cause(job, evidence);
            (
                format!("{who} is stuck: its tasks are not progressing."),
                why,
            )
        }
        FailureClass::JobInProgress => {
            let state = state.map_or("active", |s| s.as_str());
            (
                format!("{who} is {state}."),
                format!("The job is {state}; nothing indicates a problem."),
            )
        }
        _ => (
            format!(
                "{who} is in state {}.",
                state.map_or("(unknown)", |s| s.as_str())
            ),
            "batch-triage does not recognise this job state.".to_owned(),
        ),
    };
    (summary, cause, hints)
}

/// Why a stuck job is stuck: the nodes where its preparation task failed, or how long it has been
/// active without progress.
fn stuck_cause(job: &BatchJob, evidence: &Evidence<'_>) -> String {
    if evidence.prep_failed_nodes.is_empty() {
        match (evidence.now, job_active_since(job), evidence.stuck_after) {
            (Some(now), Some(since), Some(after)) => format!(
                "The job has been active for {} (more than {}) without its tasks making progress.",
                prose_duration(Duration::try_from(now.0 - since.0).unwrap_or_default()),
                prose_duration(after)
            ),
            _ => "The job is active but its tasks are not making progress.".to_owned(),
        }
    } else {
        format!(
            "The job preparation task failed on {} {}; tasks assigned there go back to active, and no node is running them.",
            evidence.prep_failed_nodes.len(),
            plural(evidence.prep_failed_nodes.len() as i32, "node", "nodes")
        )
    }
}

pub(super) fn job_pool_id(job: &BatchJob) -> Option<String> {
    job.execution_info
        .as_ref()
        .and_then(|e| e.pool_id.clone())
        .or_else(|| job.pool_info.as_ref().and_then(|p| p.pool_id.clone()))
}

fn job_active_since(job: &BatchJob) -> Option<Timestamp> {
    job.execution_info
        .as_ref()
        .and_then(|e| e.start_time)
        .or(job.creation_time)
}

/// Stuck: active, with tasks waiting and none running, while job prep fails somewhere; or
/// active past the caller's threshold without progress.
fn job_is_stuck(job: &BatchJob, evidence: &Evidence<'_>) -> bool {
    if job.state != Some(JobState::Active) {
        return false;
    }
    let not_progressing = evidence
        .task_counts
        .is_none_or(|c| c.running == 0 && c.active > 0);
    if !evidence.prep_failed_nodes.is_empty() && not_progressing {
        return true;
    }
    match (evidence.now, job_active_since(job), evidence.stuck_after) {
        (Some(now), Some(since), Some(after)) => {
            let active_for = Duration::try_from(now.0 - since.0).unwrap_or_default();
            active_for >= after
                && evidence
                    .task_counts
                    .is_some_and(|c| c.running == 0 && c.active > 0)
        }
        _ => false,
    }
}
