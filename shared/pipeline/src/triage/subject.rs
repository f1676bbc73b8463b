//! Working one subject, whatever its kind (a task, a job, a prep/release node, a start task):
//! re-read it and diagnose it, then run the one sequence every kind shares
//! ([`Triage::preserve_and_act`]): preserve the logs, sharpen the diagnosis with the stderr tail
//! (keeping the first fingerprint), plan, act.

use std::time::Duration;

use batch_client::{BatchError, Deadline, GetOptions, ListOptions, items};
use diagnosis::policy::{Plan, PlanContext, plan};
use diagnosis::wire::{
    BatchJob, BatchTask, PrepReleaseStatus, SpecialTaskEventBody, TaskCounts, TaskState,
};
use diagnosis::{
    Diagnosis, Evidence, FailureClass, diagnose_job, diagnose_prep_release, diagnose_task,
    prep_failed_nodes,
};
use futures::TryStreamExt;
use preserve::{
    JobRef, NodeRef, PreserveError, PreserveOptions, PreserveReport, preserve_prep_release,
    preserve_start_task, preserve_task,
};
use time::OffsetDateTime;

use super::alert::{PendingAlert, Worked};
use super::refuse::StoredIds;
use super::targets::{Target, target_label};
use super::{JobCache, Outcome, SubjectReport, Triage, batch_failure};
use crate::actions::ActionRequest;

/// What a subject's copy produced: the folders written and the stderr tail, if one was read.
pub(super) struct Copied {
    pub(super) folders: Vec<PreserveReport>,
    pub(super) tail: Option<String>,
}

/// What differs between kinds of subject in the one sequence: how their logs are copied, how
/// the stderr tail sharpens their diagnosis, and whether the plan is made again with it.
trait Logs {
    /// Names the copy in a failed subject's report.
    const WHAT: &'static str;
    /// Whether the plan is made again with the sharpened diagnosis and the tail (stderr rules).
    const REPLANS_WITH_TAIL: bool;

    /// Copies the subject's logs into the store.
    async fn preserve(
        &self,
        triage: &Triage,
        diagnosis: &Diagnosis,
        plan: &Plan,
        deadline: Deadline,
    ) -> Result<Copied, PreserveError>;

    /// The diagnosis made again with the stderr tail, when the kind has one.
    fn sharpen(&self, tail: &str) -> Option<Diagnosis>;
}

/// A task: its own files, the policy's extra globs, and a tail that sharpens hints and rules.
struct TaskLogs<'a> {
    task: &'a BatchTask,
    evidence: Evidence<'a>,
}

impl Logs for TaskLogs<'_> {
    const WHAT: &'static str = "preserving logs";
    const REPLANS_WITH_TAIL: bool = true;

    async fn preserve(
        &self,
        triage: &Triage,
        diagnosis: &Diagnosis,
        plan: &Plan,
        deadline: Deadline,
    ) -> Result<Copied, PreserveError> {
        let options = PreserveOptions {
            extra_globs: plan.preserve.iter().map(|g| g.glob.clone()).collect(),
            ..triage.config.preserve.clone()
        };
        let report = preserve_task(
            triage.batch.as_ref(),
            triage.store.as_ref(),
            diagnosis,
            &options,
            deadline,
        )
        .await?;
        Ok(Copied {
            tail: report.stderr_tail.clone(),
            folders: vec![report],
        })
    }

    fn sharpen(&self, tail: &str) -> Option<Diagnosis> {
        Some(diagnose_task(
            self.task,
            &Evidence {
                stderr_tail: Some(tail),
                ..self.evidence
            },
        ))
    }
}

/// A prep/release task on one node: its folders, and no tail in the alert.
struct PrepReleaseLogs<'a> {
    job_id: &'a str,
    status: &'a PrepReleaseStatus,
}

impl Logs for PrepReleaseLogs<'_> {
    const WHAT: &'static str = "preserving prep/release logs";
    const REPLANS_WITH_TAIL: bool = false;

    async fn preserve(
        &self,
        triage: &Triage,
        diagnosis: &Diagnosis,
        _: &Plan,
        deadline: Deadline,
    ) -> Result<Copied, PreserveError> {
        let job = JobRef {
            account: &triage.config.account,
            job_id: self.job_id,
        };
        let folders = preserve_prep_release(
            triage.batch.as_ref(),
            triage.store.as_ref(),
            job,
            self.status,
            Some(diagnosis),
            &triage.config.preserve,
            deadline,
        )
        .await?;
        Ok(Copied {
            folders,
            tail: None,
        })
    }

    fn sharpen(&self, _: &str) -> Option<Diagnosis> {
        None
    }
}

/// A pool's start task on one node: what the node still holds under `startup/`.
struct StartTaskLogs<'a> {
    pool_id: &'a str,
    node_id: &'a str,
    event: &'a SpecialTaskEventBody,
    evidence: Evidence<'a>,
}

impl Logs for StartTaskLogs<'_> {
    const WHAT: &'static str = "preserving start task logs";
    const REPLANS_WITH_TAIL: bool = false;

    async fn preserve(
        &self,
        triage: &Triage,
        diagnosis: &Diagnosis,
        _: &Plan,
        deadline: Deadline,
    ) -> Result<Copied, PreserveError> {
        let node = NodeRef {
            account: &triage.config.account,
            pool_id: self.pool_id,
            node_id: self.node_id,
        };
        let report = preserve_start_task(
            triage.batch.as_ref(),
            triage.store.as_ref(),
            node,
            Some(diagnosis),
            &triage.config.preserve,
            deadline,
        )
        .await?;
        Ok(Copied {
            tail: report.stderr_tail.clone(),
            folders: vec![report],
        })
    }

    fn sharpen(&self, tail: &str) -> Option<Diagnosis> {
        diagnosis::diagnose_special_task_event(
            self.event,
            &Evidence {
                stderr_tail: Some(tail),
                ..self.evidence
            },
        )
    }
}

/// A job: it has no logs of its own (its tasks and nodes are subjects of their own).
struct NoLogs;

impl Logs for NoLogs {
    const WHAT: &'static str = "preserving logs";
    const REPLANS_WITH_TAIL: bool = false;

    async fn preserve(
        &self,
        _: &Triage,
        _: &Diagnosis,
        _: &Plan,
        _: Deadline,
    ) -> Result<Copied, PreserveError> {
        Ok(Copied {
            folders: Vec::new(),
            tail: None,
        })
    }

    fn sharpen(&self, _: &str) -> Option<Diagnosis> {
        None
    }
}

impl Triage {
    pub(super) async fn process(
        &self,
        target: &Target,
        jobs: &JobCache,
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> Vec<Worked> {
        let ids = StoredIds::of_target(&self.config.account, target);
        if let Some(problem) = ids.problem() {
            return vec![
                self.refuse_unstorable(&ids, problem, None, now, deadline)
                    .await,
            ];
        }
        let label = format!("{}/{}", self.config.account, target_label(target));
        let result = match target {
            Target::Task { job, task } => self
                .process_task(job, task, jobs, now, deadline)
                .await
                .map(|r| vec![r]),
            Target::Job { job } => self.process_job(job, jobs, now, None, deadline).await,
            Target::StartTask { pool, node, event } => self
                .process_start_task(pool, node, &event.0, now, deadline)
                .await
                .map(|r| vec![r]),
            Target::Pool { pool } => self
                .process_pool(pool, now, deadline)
                .await
                .map(|r| vec![r]),
            Target::Node { pool, node } => self
                .process_node(pool, node, now, deadline)
                .await
                .map(|r| vec![r]),
        };
        result.unwrap_or_else(|outcome| {
            let mut report = SubjectReport::new(label);
            report.outcome = outcome;
            vec![report.into()]
        })
    }

    async fn process_task(
        &self,
        job_id: &str,
        task_id: &str,
        jobs: &JobCache,
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> Result<Worked, Outcome> {
        let task: BatchTask = match self
            .batch
            .get_task(job_id, task_id, &GetOptions::default(), deadline)
            .await
        {
            Ok(task) => task,
            Err(error) if error.is_not_found() => {
                return Err(Outcome::Skipped(format!(
                    "task {job_id}/{task_id} no longer exists"
                )));
            }
            Err(error) => return Err(batch_failure(&error)),
        };
        self.triage_task(job_id, task, jobs, now, deadline).await
    }

    /// Diagnoses and executes one task already read from Batch (by a GET, or by the sweep's
    /// filtered list).
    pub(crate) async fn triage_task(
        &self,
        job_id: &str,
        task: BatchTask,
        jobs: &JobCache,
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> Result<Worked, Outcome> {
        let task_id = task.id.clone().unwrap_or_default();
        // A listed task (the sweep) was not checked before it was read. What the listing says
        // is diagnosed and shown (with no job read: the job id may be what cannot be sent); a
        // task that did not fail has nothing to keep and is not refused.
        let ids = StoredIds::task(&self.config.account, job_id, &task_id);
        if let Some(problem) = ids.problem() {
            let evidence = Evidence {
                account: Some(&self.config.account),
                job_id: Some(job_id),
                ..Evidence::default()
            };
            let seen = self.redacted(diagnose_task(&task, &evidence));
            if !seen.class.is_failure() {
                let mut report = SubjectReport::new(ids.label());
                report.class = Some(seen.class);
                return Ok(report.into());
            }
            return Ok(self
                .refuse_unstorable(&ids, problem, Some(seen), now, deadline)
                .await);
        }
        let job = jobs
            .get(self.batch.as_ref(), job_id, deadline)
            .await
            .map_err(|e| batch_failure(&e))?;
        let waiting = matches!(task.state, Some(TaskState::Active | TaskState::Preparing));
        let statuses = if waiting {
            self.prep_statuses(job_id, deadline)
                .await
                .map_err(|e| batch_failure(&e))?
        } else {
            Vec::new()
        };
        let failed_nodes = prep_failed_nodes(&statuses);
        let evidence = Evidence {
            account: Some(&self.config.account),
            job: job.as_ref(),
            job_id: Some(job_id),
            prep_failed_nodes: &failed_nodes,
            ..Evidence::default()
        };
        let first = self.redacted(diagnose_task(&task, &evidence));
        let mut report = SubjectReport::new(format!("{}/{job_id}/{task_id}", self.config.account));
        report.class = Some(first.class);
        if !first.class.is_failure() {
            return Ok(report.into());
        }
        let logs = TaskLogs {
            task: &task,
            evidence,
        };
        Ok(self
            .preserve_and_act(&logs, first, report, now, deadline)
            .await)
    }

    pub(crate) async fn process_job(
        &self,
        job_id: &str,
        jobs: &JobCache,
        now: OffsetDateTime,
        stuck_after: Option<Duration>,
        deadline: Deadline,
    ) -> Result<Vec<Worked>, Outcome> {
        let Some(job) = jobs
            .get(self.batch.as_ref(), job_id, deadline)
            .await
            .map_err(|e| batch_failure(&e))?
        else {
            return Err(Outcome::Skipped(format!("job {job_id} no longer exists")));
        };
        let counts = self
            .batch
            .get_task_counts(job_id, deadline)
            .await
            .ok()
            .map(|c| c.task_counts);
        self.work_job(job_id, &job, counts, now, stuck_after, deadline)
            .await
    }

    /// Diagnoses a job already read, with its task counts when they could be read: the job
    /// itself, then each node whose preparation or release task failed. The preparation and
    /// release status is read only for a job that has one of those tasks: Batch answers 409
    /// for any other, so asking would cost a request and tell nothing.
    pub(crate) async fn work_job(
        &self,
        job_id: &str,
        job: &BatchJob,
        counts: Option<TaskCounts>,
        now: OffsetDateTime,
        stuck_after: Option<Duration>,
        deadline: Deadline,
    ) -> Result<Vec<Worked>, Outcome> {
        let statuses = if job.job_preparation_task.is_some() || job.job_release_task.is_some() {
            self.prep_statuses(job_id, deadline)
                .await
                .map_err(|e| batch_failure(&e))?
        } else {
            Vec::new()
        };
        let failed_nodes = prep_failed_nodes(&statuses);
        let evidence = Evidence {
            account: Some(&self.config.account),
            job: Some(job),
            job_id: Some(job_id),
            prep_failed_nodes: &failed_nodes,
            task_counts: counts,
            now: Some(diagnosis::wire::Timestamp(now)),
            stuck_after,
            ..Evidence::default()
        };
        let mut reports = Vec::new();
        let diagnosis = diagnose_job(job, &evidence);
        let mut report = SubjectReport::new(format!("{}/{job_id}", self.config.account));
        report.class = Some(diagnosis.class);
        if diagnosis.class.is_failure() {
            reports.push(
                self.preserve_and_act(&NoLogs, diagnosis, report, now, deadline)
                    .await,
            );
        } else {
            reports.push(report.into());
        }
        for status in &statuses {
            let Some(node_diagnosis) = diagnose_prep_release(status, &evidence) else {
                continue;
            };
            let node = status.node_id.clone().unwrap_or_default();
            let ids = StoredIds::prep_release(&self.config.account, job_id, &node);
            if let Some(problem) = ids.problem() {
                reports.push(
                    self.refuse_unstorable(&ids, problem, Some(node_diagnosis), now, deadline)
                        .await,
                );
                continue;
            }
            // The label names the folder the logs go to (docs/preserved-layout.md): a release
            // task's output is under `_jobrelease/`, not `_jobprep/`.
            let folder = if node_diagnosis.class == FailureClass::JobReleaseFailed {
                "_jobrelease"
            } else {
                "_jobprep"
            };
            let report =
                SubjectReport::new(format!("{}/{job_id}/{folder}/{node}", self.config.account));
            let logs = PrepReleaseLogs { job_id, status };
            reports.push(
                self.preserve_and_act(&logs, node_diagnosis, report, now, deadline)
                    .await,
            );
        }
        Ok(reports)
    }

    /// A pool's start task failed on a node: diagnose from the event, preserve what the node
    /// still holds under `startup/`, and alert. There is no job to act on.
    async fn process_start_task(
        &self,
        pool_id: &str,
        node_id: &str,
        event: &SpecialTaskEventBody,
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> Result<Worked, Outcome> {
        let evidence = Evidence {
            account: Some(&self.config.account),
            ..Evidence::default()
        };
        let Some(diagnosis) = diagnosis::diagnose_special_task_event(event, &evidence) else {
            return Err(Outcome::Skipped(format!(
                "the start task on {pool_id}/{node_id} did not fail"
            )));
        };
        let report = SubjectReport::new(format!(
            "{}/_pools/{pool_id}/{node_id}/_starttask",
            self.config.account
        ));
        let logs = StartTaskLogs {
            pool_id,
            node_id,
            event,
            evidence,
        };
        Ok(self
            .preserve_and_act(&logs, diagnosis, report, now, deadline)
            .await)
    }

    /// The sequence every subject runs once diagnosed: plan, preserve the logs the plan asks
    /// for, sharpen the diagnosis with the stderr tail, plan again (for the kinds whose rules
    /// read the tail), act. A failed copy is recorded in `report` and does not stop the alert
    /// or the action: one failing effect must not hide another.
    async fn preserve_and_act<L: Logs>(
        &self,
        logs: &L,
        first: Diagnosis,
        mut report: SubjectReport,
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> Worked {
        let first = self.redacted(first);
        report.class = Some(first.class);
        let policy = self.planning_policy(now).await;
        let first_plan = plan(&first, &policy, now, &PlanContext::default());
        let mut tail = None;
        if first_plan.preserve_logs {
            match logs.preserve(self, &first, &first_plan, deadline).await {
                Ok(copied) => {
                    tail = report
                        .record_preserved(copied)
                        .map(|t| self.redacted_tail(&t))
                }
                Err(error) => {
                    report.outcome = Outcome::Failed {
                        reason: format!("{}: {error}", L::WHAT),
                        retryable: true,
                    };
                }
            }
        }
        // The tail exists only in the run that copied the logs; a redelivery finds them already
        // preserved and has none. Grouping must see the same fingerprint on every delivery, so it
        // is the one computed without the tail; the tail still sharpens the hints and the alert.
        let diagnosis = match tail.as_deref().and_then(|tail| logs.sharpen(tail)) {
            Some(mut sharper) => {
                sharper.fingerprint = first.fingerprint.clone();
                sharper
            }
            None => first,
        };
        let plan = if L::REPLANS_WITH_TAIL {
            plan(
                &diagnosis,
                &policy,
                now,
                &PlanContext {
                    stderr_tail: tail.as_deref(),
                    ..PlanContext::default()
                },
            )
        } else {
            first_plan
        };
        // A task Batch failed itself (`servererror`): the node agent's logs, once per task
        // attempt, when a rule asks (nodes themselves get theirs from the pool sweep).
        if plan.keep_agent_logs
            && let (Some(job), Some(task)) = (
                diagnosis.subject.job_id.as_deref(),
                diagnosis.subject.task_id.as_deref(),
            )
        {
            let attempt = diagnosis.subject.attempt.unwrap_or(0);
            let incident = format!(
                "task-{}",
                crate::digest(&format!("{job}\n{task}\n{attempt}"))
            );
            let since = now - time::Duration::hours(1);
            self.keep_node_agent_logs(&diagnosis, &plan, &incident, since, &mut report, deadline)
                .await;
        }
        let links = report.preserved.clone();
        self.act(diagnosis, plan, tail, links, now, report).await
    }

    pub(super) async fn prep_statuses(
        &self,
        job_id: &str,
        deadline: Deadline,
    ) -> Result<Vec<PrepReleaseStatus>, BatchError> {
        items(
            self.batch
                .list_prep_release_status(job_id, &ListOptions::default(), deadline),
        )
        .try_collect()
        .await
    }

    /// The job action a diagnosis asks for, now; its alert is returned to be grouped with the
    /// other subjects' ([`Triage::alert`]). A failed action is recorded in `report` and does not
    /// stop the alert: one failing effect must not hide another.
    async fn act(
        &self,
        diagnosis: Diagnosis,
        plan: Plan,
        tail: Option<String>,
        links: Vec<String>,
        now: OffsetDateTime,
        mut report: SubjectReport,
    ) -> Worked {
        // Whatever path led here, what is alerted carries no configured secret.
        let diagnosis = self.redacted(diagnosis);
        let tail = tail.map(|t| self.redacted_tail(&t));
        if let Some(action) = &plan.action {
            let request = ActionRequest {
                diagnosis: &diagnosis,
                policy: &self.policy,
                plan: action,
                failed_with_class: None,
            };
            match self.actions.execute(request, now).await {
                Ok(record) => {
                    report.action = Some(format!("{:?}: {}", record.decision, record.reason))
                }
                Err(error) => {
                    report.outcome = Outcome::Failed {
                        reason: format!("job action: {error}"),
                        retryable: true,
                    }
                }
            }
        }
        self.record_for_report(&mut report, &diagnosis, &plan, now)
            .await;
        let alert = (!plan.receivers.is_empty()).then_some(PendingAlert {
            diagnosis,
            plan,
            tail,
            links,
            incident: None,
        });
        Worked {
            report,
            alert,
            firing: Vec::new(),
        }
    }
}
