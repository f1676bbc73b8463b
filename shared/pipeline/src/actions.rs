//! Guarded job actions (ARCHITECTURE.md, "Every effect happens once"): disable or terminate a
//! job because a rule says so, without ever racing a person or running away.
//!
//! The guards, in the order they are checked (each skip is audited with its reason):
//! 1. actions are switched on globally (`[actions] enabled`) and the rule has an action;
//! 2. the action was not already done for this (account, job, action): `actions/once/…`;
//! 3. the job, read fresh, is still `active`;
//! 4. the rule's thresholds hold with fresh task counts (Get Job Task Counts);
//! 5. dry run (global or per rule) stops here: audited, nothing sent to Batch;
//! 6. the once-marker is created with `IfAbsent` (only one instance goes on);
//! 7. the account's hourly budget (`actions/budget/{account}/{yyyy-mm-ddThh}.json`,
//!    compare-and-swap) has room: each account of a deployment has its own, so a storm in one
//!    account cannot spend another's;
//! 8. the action is sent with `If-Match` on the ETag read in step 3. A 412 means someone changed
//!    the job: it is read again and every guard re-evaluated, never retried blindly.
//!
//! The budget, the once-marker and the audit record are the mechanism every guarded action
//! shares (`guard.rs`); what is here reads the job and talks to Batch.

use std::sync::Arc;
use std::time::Duration;

use artifact_store::{ArtifactStore, ObjectKey, StoreError};
use batch_client::{ActionOutcome, BatchApi, BatchError, GetOptions, TerminateJobOptions};
use diagnosis::Diagnosis;
use diagnosis::policy::{
    ActionKind, ActionPlan, Policy, Threshold, action_reason, evaluate_threshold, terminate_reason,
};
use diagnosis::wire::JobState;
use serde::Serialize;
use time::OffsetDateTime;

use crate::audit::{AuditDecision, AuditLog, AuditRecord};
use crate::digest;
use crate::guard::{ActionGuard, BatchCalls, Budget, GuardError, OnceClaim, Spend};

/// How many times a job is re-read after a 412 before giving up for now.
pub const MAX_PRECONDITION_ROUNDS: u32 = 3;

/// Why an action could not even be audited (the store or Batch failed in a way the caller should
/// retry later). Guards that stop an action are not errors: they are audited decisions.
/// The store failed (marker, budget or audit record), or another instance changed a budget on
/// every try.
#[derive(Debug, thiserror::Error)]
#[error("job action {0}")]
pub struct ActionError(#[from] GuardError);

/// What the once-marker of (account, job, action) says of its subject (its JSON stays as it
/// was: the guard appends the audit id and key).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct JobMarker<'a> {
    account: &'a str,
    job_id: &'a str,
    action: &'a str,
    rule: &'a str,
}

/// What the pure guards let through: the rule in force and the hourly budget.
struct Guards<'a> {
    rule: &'a diagnosis::policy::Rule,
    budget: u32,
}

/// How one read-check-act round ended.
enum Round {
    /// Decided: acted, dry run, or Batch refused (the record says which).
    Done,
    /// A guard stopped the action, for this reason.
    Skip(String),
    /// The action got a 412: the job changed since it was read.
    ChangedMeanwhile,
}

/// The record of a decision not made yet (`Skipped`, no reason).
fn new_record(request: ActionRequest<'_>, now: OffsetDateTime) -> AuditRecord {
    let plan = request.plan;
    let subject = &request.diagnosis.subject;
    // The reasons name the count the executor was given, which may be fresher than the plan's.
    let (reason, terminate) = match request.failed_with_class {
        Some(n) => (
            action_reason(&plan.rule, request.diagnosis, Some(n)),
            terminate_reason(&plan.rule, request.diagnosis, Some(n)),
        ),
        None => (plan.reason.clone(), plan.terminate_reason.clone()),
    };
    let dry_run = request.policy.actions.dry_run || plan.dry_run;
    let mut record = AuditRecord::pending(
        now,
        subject,
        &plan.rule,
        plan.kind.as_str().to_owned(),
        reason,
        dry_run,
    );
    record.job_id = subject.job_id.clone().unwrap_or_default();
    record.disable_tasks = match &plan.kind {
        ActionKind::Disable(tasks) => Some(tasks.as_str().to_owned()),
        _ => None,
    };
    record.terminate_reason = match plan.kind {
        ActionKind::Terminate => Some(terminate),
        _ => None,
    };
    record.threshold = plan.threshold.describe().to_owned();
    record
}

/// The guards that need no I/O, in order: the global switch, the rule in force asking for this
/// action, an hourly budget, a job to act on. `Err` says why the action is skipped.
fn guards<'a>(request: ActionRequest<'a>, record: &AuditRecord) -> Result<Guards<'a>, String> {
    let plan = request.plan;
    if !request.policy.actions.enabled {
        return Err("job actions are not enabled globally ([actions] enabled = false)".into());
    }
    let Some(rule) = request.policy.rules.iter().find(|r| r.name == plan.rule) else {
        return Err(format!(
            "rule {:?} is not in the policy in force",
            plan.rule
        ));
    };
    if rule.action.kind == ActionKind::None || rule.action.kind != plan.kind {
        return Err(format!(
            "rule {:?} does not ask for {}",
            plan.rule, plan.kind
        ));
    }
    let Some(budget) = request.policy.actions.max_per_hour else {
        return Err("no hourly budget is set ([actions] max_per_hour)".into());
    };
    if record.job_id.is_empty() {
        return Err("the diagnosis names no job".into());
    }
    Ok(Guards { rule, budget })
}

/// Applies planned job actions through a [`BatchApi`], keeping markers, budget and audit
/// records in an [`ArtifactStore`].
#[derive(Debug, Clone)]
pub struct JobActions {
    guard: ActionGuard,
    batch: BatchCalls,
}

/// One planned action to carry out.
#[derive(Debug, Clone, Copy)]
pub struct ActionRequest<'a> {
    /// The diagnosis that triggered it (account, job, class).
    pub diagnosis: &'a Diagnosis,
    /// The policy in force (the rule's thresholds and the global switches are re-read from it).
    pub policy: &'a Policy,
    /// What [`diagnosis::policy::plan`] asked for.
    pub plan: &'a ActionPlan,
    /// How many of the job's tasks failed with the diagnosis's class, when the caller counted.
    pub failed_with_class: Option<u64>,
}

impl JobActions {
    /// Actions on `batch`, state in `store`; each Batch call gets `timeout`.
    pub fn new(store: Arc<dyn ArtifactStore>, batch: Arc<dyn BatchApi>, timeout: Duration) -> Self {
        let (guard, batch) = (ActionGuard::new(store), BatchCalls::new(batch, timeout));
        Self { guard, batch }
    }

    /// The audit log the records go to.
    pub fn audit_log(&self) -> &AuditLog {
        self.guard.audit_log()
    }

    /// The once-marker key of (account, job, action).
    pub fn once_key(account: &str, job_id: &str, action: &str) -> Result<ObjectKey, StoreError> {
        ObjectKey::new(format!(
            "actions/once/{}.json",
            digest(&format!("{account}\n{job_id}\n{action}"))
        ))
    }

    /// The budget key of `account` for the clock hour containing `now`.
    pub fn budget_key(account: &str, now: OffsetDateTime) -> Result<ObjectKey, StoreError> {
        ObjectKey::new(format!(
            "actions/budget/{}/{}.json",
            crate::account_segment(account),
            crate::history::hour_segment(now)
        ))
    }

    /// Carries out (or declines) one planned action, and returns the audit record written.
    ///
    /// Every decision ends in exactly one audit record. Once this decision has created the
    /// once-marker, its only way out is the guard's `settle`, which keeps the marker when the
    /// action took effect and gives it back otherwise, whatever failed in between.
    pub async fn execute(
        &self,
        request: ActionRequest<'_>,
        now: OffsetDateTime,
    ) -> Result<AuditRecord, ActionError> {
        let mut record = new_record(request, now);
        match guards(request, &record) {
            Err(reason) => record.skip(reason),
            Ok(guards) => {
                let once = Self::once_key(&record.account, &record.job_id, &record.action)
                    .map_err(GuardError::from)?;
                // A marker its decision could not give back is removed here, and this one goes on.
                if self.guard.marker_held(&once).await? {
                    record.skip(format!(
                        "already done: {} of job {} was taken before (once per account, job and action)",
                        record.action, record.job_id
                    ));
                } else {
                    let mut claim = None;
                    let result = self
                        .rounds(request, &guards, &once, now, &mut claim, &mut record)
                        .await;
                    return self.guard.settle(claim, result, record, now).await;
                }
            }
        }
        self.guard.audit(now, &record).await?;
        Ok(record)
    }

    /// Read-check-act rounds: a 412 on the action means the job changed, so it is read again
    /// and every guard re-evaluated, at most [`MAX_PRECONDITION_ROUNDS`] times.
    async fn rounds(
        &self,
        request: ActionRequest<'_>,
        guards: &Guards<'_>,
        once: &ObjectKey,
        now: OffsetDateTime,
        claim: &mut Option<OnceClaim>,
        record: &mut AuditRecord,
    ) -> Result<(), ActionError> {
        for round in 0..MAX_PRECONDITION_ROUNDS {
            match self
                .round(request, guards, once, round, now, claim, record)
                .await?
            {
                Round::Done => return Ok(()),
                Round::Skip(reason) => {
                    record.skip(reason);
                    return Ok(());
                }
                Round::ChangedMeanwhile => continue,
            }
        }
        record.skip(format!(
            "the job kept changing (412 on {MAX_PRECONDITION_ROUNDS} reads); not acting"
        ));
        Ok(())
    }

    /// One round: read the job fresh, check it, claim the marker and the budget (first round
    /// only), then send the action conditional on the ETag just read.
    #[allow(clippy::too_many_arguments)]
    async fn round(
        &self,
        request: ActionRequest<'_>,
        guards: &Guards<'_>,
        once: &ObjectKey,
        round: u32,
        now: OffsetDateTime,
        claim: &mut Option<OnceClaim>,
        record: &mut AuditRecord,
    ) -> Result<Round, ActionError> {
        let plan = request.plan;
        let job_id = record.job_id.clone();
        // Read the job fresh: its state and the ETag the action will be conditional on.
        let job = match self
            .batch
            .api()
            .get_job(&job_id, &GetOptions::default(), self.batch.deadline())
            .await
        {
            Ok(job) => job,
            Err(error) => return Ok(Round::Skip(format!("could not read the job: {error}"))),
        };
        record.etag = job.e_tag.clone();
        if job.state != Some(JobState::Active) {
            let state = job.state.as_ref().map_or("unknown", JobState::as_str);
            let changed = if round > 0 {
                " (it changed since it was first read)"
            } else {
                ""
            };
            return Ok(Round::Skip(format!(
                "the job is {state}{changed}; actions only apply to active jobs"
            )));
        }
        let Some(etag) = job.e_tag.clone() else {
            return Ok(Round::Skip(
                "the job has no ETag, so the action could not be made conditional".into(),
            ));
        };
        let threshold = self.threshold(request, guards.rule).await;
        record.threshold = threshold.describe().to_owned();
        if !threshold.allows() {
            return Ok(Round::Skip(format!(
                "threshold not met: {}",
                threshold.describe()
            )));
        }
        if record.dry_run {
            record.decision = AuditDecision::DryRun;
            record.reason = format!(
                "dry run: would {} job {job_id} with If-Match {etag}; nothing was sent to Batch",
                plan.kind
            );
            return Ok(Round::Done);
        }
        if claim.is_none() {
            let marker = JobMarker {
                account: &record.account,
                job_id: &record.job_id,
                action: &record.action,
                rule: &record.rule,
            };
            match self.guard.take_once(once, &marker, record, now).await? {
                Some(claimed) => *claim = Some(claimed),
                None => {
                    return Ok(Round::Skip(
                        "already done: another instance took this action for this job".into(),
                    ));
                }
            }
            let budget = Budget {
                key: Self::budget_key(&record.account, now).map_err(GuardError::from)?,
                max: guards.budget,
            };
            if let Spend::Exhausted(_) = self.guard.spend(&[budget], &record.id).await? {
                return Ok(Round::Skip(format!(
                    "hourly action budget exhausted ({} per hour)",
                    guards.budget
                )));
            }
        }
        let result = self.send(&plan.kind, &job_id, &etag, record).await;
        match result {
            Ok(ActionOutcome::Accepted) => {
                record.decision = AuditDecision::Applied;
                record.outcome = Some("accepted".into());
                record.reason = format!("{} sent with If-Match {etag} and accepted", plan.kind);
            }
            Ok(ActionOutcome::AlreadyInState { code }) => {
                record.decision = AuditDecision::AlreadyInState;
                record.reason = format!("Batch says the job is already in that state ({code})");
                record.outcome = Some(code);
            }
            Ok(other) => {
                record.decision = AuditDecision::Applied;
                record.outcome = Some(format!("{other:?}"));
                record.reason = format!("{} sent with If-Match {etag}", plan.kind);
            }
            Err(BatchError::PreconditionFailed(_)) => {
                // Someone changed the job since we read it: read it again and re-evaluate every
                // guard; the marker and budget stay ours for this decision.
                tracing::info!(job_id = ?job_id, etag = %etag, "job changed before the action (412); re-evaluating");
                record.outcome = Some("412 ConditionNotMet".into());
                return Ok(Round::ChangedMeanwhile);
            }
            Err(error) => {
                record.decision = AuditDecision::Failed;
                record.outcome = Some(error.to_string());
                record.reason = format!(
                    "Batch refused or failed the {}: {error}",
                    plan.kind.as_str()
                );
            }
        }
        Ok(Round::Done)
    }

    /// Sends the action to Batch, conditional on `etag`.
    async fn send(
        &self,
        kind: &ActionKind,
        job_id: &str,
        etag: &str,
        record: &AuditRecord,
    ) -> Result<ActionOutcome, BatchError> {
        match kind {
            ActionKind::Terminate => {
                let options = TerminateJobOptions {
                    reason: record.terminate_reason.clone(),
                    force: false,
                    if_match: Some(etag.to_owned()),
                };
                self.batch
                    .api()
                    .terminate_job(job_id, &options, self.batch.deadline())
                    .await
            }
            ActionKind::Disable(tasks) => {
                self.batch
                    .api()
                    .disable_job(job_id, tasks.clone(), Some(etag), self.batch.deadline())
                    .await
            }
            ActionKind::None => Ok(ActionOutcome::AlreadyInState {
                code: "none".into(),
            }),
        }
    }

    /// The rule's thresholds with fresh counts (fetched only when the rule has thresholds).
    async fn threshold(
        &self,
        request: ActionRequest<'_>,
        rule: &diagnosis::policy::Rule,
    ) -> Threshold {
        if rule.action.min_failed_tasks.is_none() && rule.action.min_failed_percent.is_none() {
            return Threshold::NotSet;
        }
        let job_id = request
            .diagnosis
            .subject
            .job_id
            .as_deref()
            .unwrap_or_default();
        let counts = match self
            .batch
            .api()
            .get_task_counts(job_id, self.batch.deadline())
            .await
        {
            Ok(counts) => Some(counts.task_counts),
            Err(error) => {
                tracing::warn!(job_id = ?job_id, error = %error, "task counts unavailable for a threshold");
                None
            }
        };
        evaluate_threshold(
            &rule.action,
            request.diagnosis.class,
            counts.as_ref(),
            request.failed_with_class,
        )
    }
}
