//! Guarded job actions: disable or terminate a job because a rule
//! says so, without ever racing a person or running away.
//!
//! The guards, in the order they are checked (each skip is audited with its reason):
//! 1. actions are switched on globally (`[actions] enabled`) and the rule has an action;
//! 2. the action was not already done for this (account, job, action): `actions/once/…`;
//! 3. the job, read fresh, is still `active`;
//! 4. the rule's thresholds hold with fresh task counts (Get Job Task Counts);
//! 5. dry run (global or per rule) stops here: audited, nothing sent to Batch;
//! 6. the once-marker is created with `IfAbsent` (only one instance goes on);
//! 7. the hourly budget (`actions/budget/{yyyy-mm-ddThh}.json`, compare-and-swap) has room;
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

    /// The budget key of the clock hour containing `now`.
    pub fn budget_key(now: OffsetDateTime) -> Result<ObjectKey, StoreError> {
        let now = now.to_offset(time::UtcOffset::UTC);
        ObjectKey::new(format!(
            "actions/budget/{:04}-{:02}-{:02}T{:02}.json",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour()
        ))
    }

    /// Carries out (or declines) one planned action, and returns the audit record written.
    pub async fn execute(
        &self,
        request: ActionRequest<'_>,
        now: OffsetDateTime,
    ) -> Result<AuditRecord, ActionError> {
        let plan = request.plan;
        let subject = &request.diagnosis.subject;
        let account = subject.account.clone().unwrap_or_else(|| "-".to_owned());
        // The reasons name the count the executor was given, which may be fresher than the
        // plan's.
        let (reason, terminate) = match request.failed_with_class {
            Some(n) => (
                action_reason(&plan.rule, request.diagnosis, Some(n)),
                terminate_reason(&plan.rule, request.diagnosis, Some(n)),
            ),
            None => (plan.reason.clone(), plan.terminate_reason.clone()),
        };
        let mut record = AuditRecord {
            id: AuditLog::new_id(now),
            time: AuditLog::timestamp(now),
            rule: plan.rule.clone(),
            account: account.clone(),
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
        };
        self.decide(request, now, &mut record).await?;
        self.audit.write(now, &record).await?;
        Ok(record)
    }

    /// Runs the guards and the action, filling in `record`.
    async fn decide(
        &self,
        request: ActionRequest<'_>,
        now: OffsetDateTime,
        record: &mut AuditRecord,
    ) -> Result<(), ActionError> {
        let plan = request.plan;
        let skip = |record: &mut AuditRecord, reason: String| {
            record.decision = AuditDecision::Skipped;
            record.reason = reason;
        };
        if !request.policy.actions.enabled {
            skip(
                record,
                "job actions are not enabled globally ([actions] enabled = false)".into(),
            );
            return Ok(());
        }
        let Some(rule) = request.policy.rules.iter().find(|r| r.name == plan.rule) else {
            skip(
                record,
                format!("rule {:?} is not in the policy in force", plan.rule),
            );
            return Ok(());
        };
        if rule.action.kind == ActionKind::None || rule.action.kind != plan.kind {
            skip(
                record,
                format!("rule {:?} does not ask for {}", plan.rule, plan.kind),
            );
            return Ok(());
        }
        let Some(budget) = request.policy.actions.max_per_hour else {
            skip(
                record,
                "no hourly budget is set ([actions] max_per_hour)".into(),
            );
            return Ok(());
        };
        if record.job_id.is_empty() {
            skip(record, "the diagnosis names no job".into());
            return Ok(());
        }
        let job_id = record.job_id.clone();
        let once = Self::once_key(&record.account, &job_id, plan.kind.as_str())?;
        if self.store.head(&once).await?.is_some() {
            skip(
                record,
                format!(
                    "already done: {} of job {job_id} was taken before (once per account, job and action)",
                    plan.kind.as_str()
                ),
            );
            return Ok(());
        }
        let mut claimed: Option<ETag> = None;
        for round in 0..MAX_PRECONDITION_ROUNDS {
            // Read the job fresh: its state and the ETag the action will be conditional on.
            let job = match self
                .batch
                .get_job(&job_id, &GetOptions::default(), self.deadline())
                .await
            {
                Ok(job) => job,
                Err(error) => {
                    self.release(&once, claimed.take()).await?;
                    skip(record, format!("could not read the job: {error}"));
                    return Ok(());
                }
            };
            record.etag = job.e_tag.clone();
            let state = job.state.clone();
            if state != Some(JobState::Active) {
                self.release(&once, claimed.take()).await?;
                let state = state.as_ref().map_or("unknown", JobState::as_str);
                let changed = if round > 0 {
                    " (it changed since it was first read)"
                } else {
                    ""
                };
                skip(
                    record,
                    format!("the job is {state}{changed}; actions only apply to active jobs"),
                );
                return Ok(());
            }
            let Some(etag) = job.e_tag.clone() else {
                self.release(&once, claimed.take()).await?;
                skip(
                    record,
                    "the job has no ETag, so the action could not be made conditional".into(),
                );
                return Ok(());
            };
            let threshold = self.threshold(request, rule).await;
            record.threshold = threshold.describe().to_owned();
            if !threshold.allows() {
                self.release(&once, claimed.take()).await?;
                skip(
                    record,
                    format!("threshold not met: {}", threshold.describe()),
                );
                return Ok(());
            }
            if record.dry_run {
                record.decision = AuditDecision::DryRun;
                record.reason = format!(
                    "dry run: would {} job {job_id} with If-Match {etag}; nothing was sent to Batch",
                    plan.kind
                );
                return Ok(());
            }
            if claimed.is_none() {
                let marker = OnceMarker {
                    account: &record.account,
                    job_id: &job_id,
                    action: plan.kind.as_str(),
                    rule: &plan.rule,
                    audit_id: &record.id,
                };
                let body = Bytes::from(serde_json::to_vec(&marker).unwrap_or_default());
                match self.store.put(&once, body, Condition::IfAbsent).await {
                    Ok(marker_etag) => claimed = Some(marker_etag),
                    Err(StoreError::ConditionFailed { .. }) => {
                        skip(
                            record,
                            "already done: another instance took this action for this job".into(),
                        );
                        return Ok(());
                    }
                    Err(error) => return Err(error.into()),
                }
                if !self.spend_budget(now, budget, &record.id).await? {
                    self.release(&once, claimed.take()).await?;
                    skip(
                        record,
                        format!("hourly action budget exhausted ({budget} per hour)"),
                    );
                    return Ok(());
                }
            }
            let result = match &plan.kind {
                ActionKind::Terminate => {
                    let options = TerminateJobOptions {
                        reason: record.terminate_reason.clone(),
                        force: false,
                        if_match: Some(etag.clone()),
                    };
                    self.batch
                        .terminate_job(&job_id, &options, self.deadline())
                        .await
                }
                ActionKind::Disable(tasks) => {
                    self.batch
                        .disable_job(&job_id, tasks.clone(), Some(&etag), self.deadline())
                        .await
                }
                ActionKind::None => Ok(ActionOutcome::AlreadyInState {
                    code: "none".into(),
                }),
            };
            match result {
                Ok(ActionOutcome::Accepted) => {
                    record.decision = AuditDecision::Applied;
                    record.outcome = Some("accepted".into());
                    record.reason = format!("{} sent with If-Match {etag} and accepted", plan.kind);
                    return Ok(());
                }
                Ok(ActionOutcome::AlreadyInState { code }) => {
                    record.decision = AuditDecision::AlreadyInState;
                    record.reason = format!("Batch says the job is already in that state ({code})");
                    record.outcome = Some(code);
                    return Ok(());
                }
                Ok(other) => {
                    record.decision = AuditDecision::Applied;
                    record.outcome = Some(format!("{other:?}"));
                    record.reason = format!("{} sent with If-Match {etag}", plan.kind);
                    return Ok(());
                }
                Err(BatchError::PreconditionFailed(_)) => {
                    // Someone changed the job since we read it: read it again and re-evaluate
                    // every guard; the marker and budget stay ours for this decision.
                    tracing::info!(job_id = ?job_id, etag = %etag, "job changed before the action (412); re-evaluating");
                    record.outcome = Some("412 ConditionNotMet".into());
                    continue;
                }
                Err(error) => {
                    self.release(&once, claimed.take()).await?;
                    record.decision = AuditDecision::Failed;
                    record.outcome = Some(error.to_string());
                    record.reason = format!(
                        "Batch refused or failed the {}: {error}",
                        plan.kind.as_str()
                    );
                    return Ok(());
                }
            }
        }
        self.release(&once, claimed.take()).await?;
        skip(
            record,
            format!("the job kept changing (412 on {MAX_PRECONDITION_ROUNDS} reads); not acting"),
        );
        Ok(())
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

    /// Gives the once-marker back (the action did not happen), if this decision created it.
    async fn release(&self, once: &ObjectKey, claimed: Option<ETag>) -> Result<(), ActionError> {
        if let Some(etag) = claimed {
            match self.store.delete(once, Condition::IfMatch(etag)).await {
                Ok(()) | Err(StoreError::ConditionFailed { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    /// Takes one unit of the hour's budget; `false` when it is used up.
    async fn spend_budget(
        &self,
        now: OffsetDateTime,
        max: u32,
        audit_id: &str,
    ) -> Result<bool, ActionError> {
        let key = Self::budget_key(now)?;
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
