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

use std::sync::Arc;
use std::time::Duration;

use artifact_store::{ArtifactStore, Condition, ETag, ObjectKey, StoreError};
use batch_client::{
    ActionOutcome, BatchApi, BatchError, Deadline, GetOptions, TerminateJobOptions,
};
use bytes::Bytes;
use diagnosis::Diagnosis;
use diagnosis::policy::{
    ActionKind, ActionPlan, Policy, Threshold, action_reason, evaluate_threshold, terminate_reason,
};
use diagnosis::wire::JobState;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::audit::{AuditDecision, AuditLog, AuditRecord};
use crate::digest;

/// How many times a job is re-read after a 412 before giving up for now.
pub const MAX_PRECONDITION_ROUNDS: u32 = 3;
/// Compare-and-swap attempts on the budget object.
const MAX_BUDGET_ATTEMPTS: u32 = 64;

/// Why an action could not even be audited (the store or Batch failed in a way the caller should
/// retry later). Guards that stop an action are not errors: they are audited decisions.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The artifact store failed (marker, budget or audit record).
    #[error("job action store: {0}")]
    Store(#[from] StoreError),
    /// Another instance changed the budget on every try.
    #[error("the action budget {key} kept changing; gave up")]
    BudgetContended {
        /// The budget object's key.
        key: String,
    },
}

/// The stored hourly budget.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Budget {
    count: u32,
    max: u32,
    /// The audit ids of the actions counted, for people.
    actions: Vec<String>,
}

/// The once-per-(account, job, action) marker.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OnceMarker<'a> {
    account: &'a str,
    job_id: &'a str,
    action: &'a str,
    rule: &'a str,
    audit_id: &'a str,
    /// Where the decision that created the marker is audited, so a later run can tell a marker
    /// whose action took effect from one that could not be given back.
    audit_key: &'a str,
}

/// What a later run reads back from a marker (older markers have no `auditKey`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredMarker {
    audit_key: Option<String>,
}

/// The once-marker this decision created, with the version to give back.
#[derive(Debug)]
struct Claim {
    key: ObjectKey,
    etag: ETag,
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

impl AuditDecision {
    /// Whether the action reached Batch and the job is now in the state asked for.
    fn took_effect(self) -> bool {
        matches!(self, AuditDecision::Applied | AuditDecision::AlreadyInState)
    }
}

impl AuditRecord {
    fn skip(&mut self, reason: String) {
        self.decision = AuditDecision::Skipped;
        self.reason = reason;
    }

    fn fail(&mut self, reason: String) {
        self.decision = AuditDecision::Failed;
        self.reason = reason;
    }
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
    AuditRecord {
        id: AuditLog::new_id(now),
        time: AuditLog::timestamp(now),
        rule: plan.rule.clone(),
        account: subject.account.clone().unwrap_or_else(|| "-".to_owned()),
        job_id: subject.job_id.clone().unwrap_or_default(),
        action: plan.kind.as_str().to_owned(),
        disable_tasks: match &plan.kind {
            ActionKind::Disable(tasks) => Some(tasks.as_str().to_owned()),
            _ => None,
        },
        decision: AuditDecision::Skipped,
        reason: String::new(),
        action_reason: reason,
        terminate_reason: match plan.kind {
            ActionKind::Terminate => Some(terminate),
            _ => None,
        },
        etag: None,
        outcome: None,
        threshold: plan.threshold.describe().to_owned(),
        dry_run: request.policy.actions.dry_run || plan.dry_run,
        pool_id: None,
        node_id: None,
    }
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
#[derive(Clone)]
pub struct JobActions {
    store: Arc<dyn ArtifactStore>,
    batch: Arc<dyn BatchApi>,
    audit: AuditLog,
    call_timeout: Duration,
}

impl std::fmt::Debug for JobActions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobActions")
            .field("store", &self.store)
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
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
    /// Actions on `batch`, state in `store`; each Batch call gets `call_timeout`.
    pub fn new(
        store: Arc<dyn ArtifactStore>,
        batch: Arc<dyn BatchApi>,
        call_timeout: Duration,
    ) -> Self {
        Self {
            audit: AuditLog::new(store.clone()),
            store,
            batch,
            call_timeout,
        }
    }

    /// The audit log the records go to.
    pub fn audit_log(&self) -> &AuditLog {
        &self.audit
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
    /// once-marker, its only way out is `settle`, which keeps the marker when the
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
                let once = Self::once_key(&record.account, &record.job_id, &record.action)?;
                if let Some(reason) = self.already_done(&once, &record).await? {
                    record.skip(reason);
                } else {
                    let mut claim = None;
                    let result = self
                        .rounds(request, &guards, &once, now, &mut claim, &mut record)
                        .await;
                    return self.settle(claim, result, record, now).await;
                }
            }
        }
        self.audit.write(now, &record).await?;
        Ok(record)
    }

    /// `Some(reason)` when the action was already taken for this (account, job, action).
    ///
    /// A marker whose decision was audited as not having taken effect is a claim that could not
    /// be given back (the store failed at the time): it is removed, and this decision goes on.
    async fn already_done(
        &self,
        once: &ObjectKey,
        record: &AuditRecord,
    ) -> Result<Option<String>, ActionError> {
        let Some(marker) = self.store.get(once).await? else {
            return Ok(None);
        };
        let earlier = match serde_json::from_slice::<StoredMarker>(&marker.bytes)
            .ok()
            .and_then(|m| m.audit_key)
            .and_then(|key| ObjectKey::new(key).ok())
        {
            Some(key) => self.store.get(&key).await?,
            None => None,
        };
        let earlier: Option<AuditRecord> =
            earlier.and_then(|v| serde_json::from_slice(&v.bytes).ok());
        if let Some(earlier) = earlier
            && !earlier.decision.took_effect()
        {
            tracing::warn!(job_id = ?record.job_id, audit_id = %earlier.id, "removing a once-marker its decision could not give back");
            match self
                .store
                .delete(once, Condition::IfMatch(marker.etag))
                .await
            {
                Ok(()) => return Ok(None),
                // Someone else removed or replaced it meanwhile: theirs to settle.
                Err(StoreError::ConditionFailed { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(Some(format!(
            "already done: {} of job {} was taken before (once per account, job and action)",
            record.action, record.job_id
        )))
    }

    /// Read-check-act rounds: a 412 on the action means the job changed, so it is read again
    /// and every guard re-evaluated, at most [`MAX_PRECONDITION_ROUNDS`] times.
    async fn rounds(
        &self,
        request: ActionRequest<'_>,
        guards: &Guards<'_>,
        once: &ObjectKey,
        now: OffsetDateTime,
        claim: &mut Option<Claim>,
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
        claim: &mut Option<Claim>,
        record: &mut AuditRecord,
    ) -> Result<Round, ActionError> {
        let plan = request.plan;
        let job_id = record.job_id.clone();
        // Read the job fresh: its state and the ETag the action will be conditional on.
        let job = match self
            .batch
            .get_job(&job_id, &GetOptions::default(), self.deadline())
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
            match self.claim(once, record, now).await? {
                Some(claimed) => *claim = Some(claimed),
                None => {
                    return Ok(Round::Skip(
                        "already done: another instance took this action for this job".into(),
                    ));
                }
            }
            if !self
                .spend_budget(now, guards.budget, &record.account, &record.id)
                .await?
            {
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
                    .terminate_job(job_id, &options, self.deadline())
                    .await
            }
            ActionKind::Disable(tasks) => {
                self.batch
                    .disable_job(job_id, tasks.clone(), Some(etag), self.deadline())
                    .await
            }
            ActionKind::None => Ok(ActionOutcome::AlreadyInState {
                code: "none".into(),
            }),
        }
    }

    /// Creates the once-marker (`IfAbsent`). `None` when another instance holds it.
    async fn claim(
        &self,
        once: &ObjectKey,
        record: &AuditRecord,
        now: OffsetDateTime,
    ) -> Result<Option<Claim>, ActionError> {
        let audit_key = AuditLog::key(now, &record.id)?;
        let marker = OnceMarker {
            account: &record.account,
            job_id: &record.job_id,
            action: &record.action,
            rule: &record.rule,
            audit_id: &record.id,
            audit_key: audit_key.as_str(),
        };
        let body = Bytes::from(serde_json::to_vec(&marker).unwrap_or_default());
        match self.store.put(once, body, Condition::IfAbsent).await {
            Ok(etag) => Ok(Some(Claim {
                key: once.clone(),
                etag,
            })),
            Err(StoreError::ConditionFailed { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// The single exit of a decision that may hold the once-marker: the marker is kept when the
    /// action took effect and given back otherwise, and the decision is audited either way. A
    /// failure (`result` or the release) is audited as such, best effort, and returned so the
    /// caller retries; a marker that could not be given back is then removed by the next run
    /// (see [`JobActions::already_done`]).
    async fn settle(
        &self,
        claim: Option<Claim>,
        result: Result<(), ActionError>,
        mut record: AuditRecord,
        now: OffsetDateTime,
    ) -> Result<AuditRecord, ActionError> {
        let took_effect = result.is_ok() && record.decision.took_effect();
        let released = match claim {
            Some(claim) if !took_effect => self.release(claim).await,
            _ => Ok(()),
        };
        let error = match (result, released) {
            (Ok(()), Ok(())) => {
                self.audit.write(now, &record).await?;
                return Ok(record);
            }
            (Err(error), Ok(())) => {
                record.fail(format!(
                    "not done: {error}; the once-marker was given back, so a later run tries again"
                ));
                error
            }
            (_, Err(error)) => {
                record.fail(format!(
                    "not done, and the once-marker could not be given back ({error}); the next run removes it and tries again"
                ));
                error
            }
        };
        if let Err(audit_error) = self.audit.write(now, &record).await {
            tracing::warn!(job_id = ?record.job_id, error = %audit_error, "a failed job action could not be audited");
        }
        Err(error)
    }

    fn deadline(&self) -> Deadline {
        Deadline::after(self.call_timeout)
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
        let counts = match self.batch.get_task_counts(job_id, self.deadline()).await {
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

    /// Gives the once-marker back (the action did not happen).
    async fn release(&self, claim: Claim) -> Result<(), ActionError> {
        match self
            .store
            .delete(&claim.key, Condition::IfMatch(claim.etag))
            .await
        {
            Ok(()) | Err(StoreError::ConditionFailed { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Takes one unit of the account's budget for the hour; `false` when it is used up.
    async fn spend_budget(
        &self,
        now: OffsetDateTime,
        max: u32,
        account: &str,
        audit_id: &str,
    ) -> Result<bool, ActionError> {
        let key = Self::budget_key(account, now)?;
        for _ in 0..MAX_BUDGET_ATTEMPTS {
            let current = self.store.get(&key).await?;
            let (mut budget, condition) = match &current {
                None => (Budget::default(), Condition::IfAbsent),
                Some(v) => (
                    // An unreadable budget counts as used up: never act on a guess.
                    serde_json::from_slice(&v.bytes).unwrap_or(Budget {
                        count: u32::MAX,
                        ..Budget::default()
                    }),
                    Condition::IfMatch(v.etag.clone()),
                ),
            };
            if budget.count >= max {
                return Ok(false);
            }
            budget.count += 1;
            budget.max = max;
            budget.actions.push(audit_id.to_owned());
            let body = Bytes::from(serde_json::to_vec(&budget).unwrap_or_default());
            match self.store.put(&key, body, condition).await {
                Ok(_) => return Ok(true),
                Err(StoreError::ConditionFailed { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(ActionError::BudgetContended {
            key: key.to_string(),
        })
    }
}
