//! The guarded-action mechanism job actions (`actions.rs`) and node actions (`node_actions.rs`)
//! share, so that "every effect happens once, within a budget, and is audited" is written once:
//!
//! - **budgets**: hourly counters kept in the store, one key or several, spent all-or-nothing,
//!   each by compare-and-swap so instances sharing the store never spend more than the budget;
//! - **the once-marker**: taken create-only (`IfAbsent`) before the action is sent, kept when
//!   the action took effect, given back otherwise; a marker that could not be given back is
//!   recognised by the next run (its audited decision did not take effect) and removed;
//! - **the dry-run marker**: a create-only marker beside the once-marker, so a dry run that a
//!   sweep sees every few minutes is audited once;
//! - **the audit record**: one per decision ([`AuditLog`]), written at the single exit.
//!
//! What reads Batch to decide (job state, node state, the last healthy node of a pool) and the
//! Batch calls themselves stay with each kind of action.

use std::sync::Arc;
use std::time::Duration;

use artifact_store::{ArtifactStore, Condition, ETag, ObjectKey, StoreError};
use batch_client::{BatchApi, Deadline};
use bytes::Bytes;
use diagnosis::Subject;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::audit::{AuditDecision, AuditLog, AuditRecord};

/// Compare-and-swap attempts on one budget object before giving up.
const MAX_BUDGET_ATTEMPTS: u32 = 64;

/// Why the mechanism could not do its part; each kind of action wraps it in its own error,
/// whose message names the kind (`job action store: …`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum GuardError {
    /// The artifact store failed (marker, budget or audit record).
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Another instance changed a budget on every try.
    #[error("budget {key} kept changing; gave up")]
    BudgetContended {
        /// The budget object's key.
        key: String,
    },
}

/// One hourly budget: where its counter is kept and how many actions it allows.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    pub(crate) key: ObjectKey,
    pub(crate) max: u32,
}

/// How spending a set of budgets ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) enum Spend {
    /// One unit of every budget is now this decision's.
    Spent,
    /// The budget at this index was used up; nothing is spent.
    Exhausted(usize),
}

/// The stored counter of a budget (its JSON is read by existing deployments: keep it as is).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredBudget {
    count: u32,
    max: u32,
    /// The audit ids of the actions counted, for people (and to give one back).
    actions: Vec<String>,
}

/// The once-marker's body: what the action is about, then the decision that took it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OnceMarker<'a, S: Serialize> {
    #[serde(flatten)]
    subject: &'a S,
    audit_id: &'a str,
    /// Where the decision that took the marker is audited, so a later run can tell a marker
    /// whose action took effect from one that could not be given back.
    audit_key: &'a str,
}

/// What a later run reads back from a marker (older markers have no `auditKey`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredMarker {
    audit_key: Option<String>,
}

/// A once-marker this decision took, with the version to give back.
#[derive(Debug)]
pub(crate) struct OnceClaim {
    key: ObjectKey,
    etag: ETag,
}

impl AuditDecision {
    /// Whether the action reached Batch and the subject is now in the state asked for.
    pub(crate) fn took_effect(self) -> bool {
        matches!(self, AuditDecision::Applied | AuditDecision::AlreadyInState)
    }
}

impl AuditRecord {
    /// A decision not made yet (`Skipped`, no reason) about an action on `subject`, with no
    /// job, pool or node named: the caller fills in what its kind of action has.
    pub(crate) fn pending(
        now: OffsetDateTime,
        subject: &Subject,
        rule: &str,
        action: String,
        action_reason: String,
        dry_run: bool,
    ) -> Self {
        AuditRecord {
            id: AuditLog::new_id(now),
            time: AuditLog::timestamp(now),
            rule: rule.to_owned(),
            account: subject.account.clone().unwrap_or_else(|| "-".to_owned()),
            job_id: String::new(),
            action,
            disable_tasks: None,
            decision: AuditDecision::Skipped,
            reason: String::new(),
            action_reason,
            terminate_reason: None,
            etag: None,
            outcome: None,
            threshold: "no threshold".to_owned(),
            dry_run,
            pool_id: None,
            node_id: None,
        }
    }

    /// Marks the decision skipped by a guard, for `reason`.
    pub(crate) fn skip(&mut self, reason: String) {
        self.decision = AuditDecision::Skipped;
        self.reason = reason;
    }

    /// Marks the decision failed, for `reason`.
    pub(crate) fn fail(&mut self, reason: String) {
        self.decision = AuditDecision::Failed;
        self.reason = reason;
    }
}

/// Batch as an action sees it: the API, and the timeout each call gets.
#[derive(Clone)]
pub(crate) struct BatchCalls {
    api: Arc<dyn BatchApi>,
    call_timeout: Duration,
}

impl std::fmt::Debug for BatchCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchCalls")
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

impl BatchCalls {
    /// Calls to `api`, each within `call_timeout`.
    pub(crate) fn new(api: Arc<dyn BatchApi>, call_timeout: Duration) -> Self {
        Self { api, call_timeout }
    }

    /// The API.
    pub(crate) fn api(&self) -> &dyn BatchApi {
        self.api.as_ref()
    }

    /// The deadline of a call starting now.
    pub(crate) fn deadline(&self) -> Deadline {
        Deadline::after(self.call_timeout)
    }
}

/// Budgets, markers and audit records of guarded actions, kept in one [`ArtifactStore`].
#[derive(Debug, Clone)]
pub(crate) struct ActionGuard {
    store: Arc<dyn ArtifactStore>,
    audit: AuditLog,
}

impl ActionGuard {
    /// Budgets, markers and audit records in `store`.
    pub(crate) fn new(store: Arc<dyn ArtifactStore>) -> Self {
        Self {
            audit: AuditLog::new(store.clone()),
            store,
        }
    }

    /// The audit log the records go to.
    pub(crate) fn audit_log(&self) -> &AuditLog {
        &self.audit
    }

    /// Writes the record of a decision that holds no marker.
    pub(crate) async fn audit(
        &self,
        now: OffsetDateTime,
        record: &AuditRecord,
    ) -> Result<(), GuardError> {
        self.audit.write(now, record).await?;
        Ok(())
    }

    /// Whether the once-marker at `once` stands for a decision that took the action (or is
    /// taking it now).
    ///
    /// A marker whose decision was audited as not having taken effect is a claim that could not
    /// be given back (the store failed at the time): it is removed, and `false` returned.
    pub(crate) async fn marker_held(&self, once: &ObjectKey) -> Result<bool, GuardError> {
        let Some(marker) = self.store.get(once).await? else {
            return Ok(false);
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
            tracing::warn!(marker = %once, audit_id = %earlier.id, "removing a once-marker its decision could not give back");
            match self
                .store
                .delete(once, Condition::IfMatch(marker.etag))
                .await
            {
                Ok(()) => return Ok(false),
                // Someone else removed or replaced it meanwhile: theirs to settle.
                Err(StoreError::ConditionFailed { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(true)
    }

    /// Takes the once-marker at `once` (create-only) for `record`'s decision; its body is
    /// `subject`'s fields, then the audit id and key. `None` when another decision holds it.
    pub(crate) async fn take_once<S: Serialize>(
        &self,
        once: &ObjectKey,
        subject: &S,
        record: &AuditRecord,
        now: OffsetDateTime,
    ) -> Result<Option<OnceClaim>, GuardError> {
        let audit_key = AuditLog::key(now, &record.id)?;
        let marker = OnceMarker {
            subject,
            audit_id: &record.id,
            audit_key: audit_key.as_str(),
        };
        let body = serde_json::to_vec(&marker).map_err(|e| StoreError::Other {
            message: format!("cannot encode a once-marker: {e}"),
        })?;
        match self
            .store
            .put(once, Bytes::from(body), Condition::IfAbsent)
            .await
        {
            Ok(etag) => Ok(Some(OnceClaim {
                key: once.clone(),
                etag,
            })),
            Err(StoreError::ConditionFailed { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Gives the once-marker back (the action did not happen).
    async fn give_back(&self, claim: OnceClaim) -> Result<(), GuardError> {
        match self
            .store
            .delete(&claim.key, Condition::IfMatch(claim.etag))
            .await
        {
            Ok(()) | Err(StoreError::ConditionFailed { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// The single exit of a decision that may hold the once-marker: the marker is kept when the
    /// action took effect and given back otherwise, and the decision is audited either way. A
    /// failure (`result` or the give-back) is audited as such, best effort, and returned so the
    /// caller retries; a marker that could not be given back is then removed by the next run
    /// (see [`ActionGuard::marker_held`]).
    pub(crate) async fn settle<E: From<GuardError> + std::fmt::Display>(
        &self,
        claim: Option<OnceClaim>,
        result: Result<(), E>,
        mut record: AuditRecord,
        now: OffsetDateTime,
    ) -> Result<AuditRecord, E> {
        let took_effect = result.is_ok() && record.decision.took_effect();
        let given_back = match claim {
            Some(claim) if !took_effect => self.give_back(claim).await,
            _ => Ok(()),
        };
        let error = match (result, given_back) {
            (Ok(()), Ok(())) => {
                self.audit(now, &record).await?;
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
                E::from(error)
            }
        };
        if let Err(audit_error) = self.audit.write(now, &record).await {
            tracing::warn!(action = %record.action, audit_id = %record.id, error = %audit_error, "a failed action could not be audited");
        }
        Err(error)
    }

    /// Audits a dry-run `record` once per once-marker key: `false` (and nothing written) when
    /// an earlier dry run for the same marker was audited. The dry-run marker is its own, so
    /// going live later still acts.
    pub(crate) async fn audit_dry_run_once(
        &self,
        once: &ObjectKey,
        record: &AuditRecord,
        now: OffsetDateTime,
    ) -> Result<bool, GuardError> {
        let dry = ObjectKey::new(once.as_str().replacen("/once/", "/dry-run/", 1))?;
        let marker = Bytes::from(record.id.clone().into_bytes());
        match self.store.put(&dry, marker, Condition::IfAbsent).await {
            Ok(_) => {}
            Err(StoreError::ConditionFailed { .. }) => return Ok(false),
            Err(error) => return Err(error.into()),
        }
        self.audit(now, record).await?;
        Ok(true)
    }

    /// Takes one unit of every budget for the action audited as `audit_id`, all or nothing:
    /// when one is used up, the units already taken are given back.
    pub(crate) async fn spend(
        &self,
        budgets: &[Budget],
        audit_id: &str,
    ) -> Result<Spend, GuardError> {
        for (at, budget) in budgets.iter().enumerate() {
            match self.change(budget, audit_id, true).await {
                Ok(true) => {}
                Ok(false) => {
                    self.give_back_budgets(&budgets[..at], audit_id).await?;
                    return Ok(Spend::Exhausted(at));
                }
                Err(error) => {
                    // Best effort: the caller retries, and a unit lost here only delays.
                    if let Err(give_back) = self.give_back_budgets(&budgets[..at], audit_id).await {
                        tracing::warn!(audit_id = %audit_id, error = %give_back, "a budget unit could not be given back");
                    }
                    return Err(error);
                }
            }
        }
        Ok(Spend::Spent)
    }

    /// Gives back the unit of each budget `audit_id` took (none taken: nothing to do).
    pub(crate) async fn give_back_budgets(
        &self,
        budgets: &[Budget],
        audit_id: &str,
    ) -> Result<(), GuardError> {
        for budget in budgets.iter().rev() {
            self.change(budget, audit_id, false).await?;
        }
        Ok(())
    }

    /// Takes (`take`) or gives back one unit of `budget` by compare-and-swap; `false` when
    /// taking finds it used up.
    async fn change(
        &self,
        budget: &Budget,
        audit_id: &str,
        take: bool,
    ) -> Result<bool, GuardError> {
        for _ in 0..MAX_BUDGET_ATTEMPTS {
            let current = self.store.get(&budget.key).await?;
            let (mut stored, condition) = match &current {
                None => (StoredBudget::default(), Condition::IfAbsent),
                Some(v) => (
                    // An unreadable budget counts as used up: never act on a guess.
                    serde_json::from_slice(&v.bytes).unwrap_or(StoredBudget {
                        count: u32::MAX,
                        ..StoredBudget::default()
                    }),
                    Condition::IfMatch(v.etag.clone()),
                ),
            };
            if take {
                if stored.count >= budget.max {
                    return Ok(false);
                }
                stored.count += 1;
                stored.actions.push(audit_id.to_owned());
            } else {
                let Some(at) = stored.actions.iter().position(|a| a == audit_id) else {
                    return Ok(true);
                };
                stored.actions.remove(at);
                stored.count = stored.count.saturating_sub(1);
            }
            stored.max = budget.max;
            let body = serde_json::to_vec(&stored).map_err(|e| StoreError::Other {
                message: format!("cannot encode a budget: {e}"),
            })?;
            match self
                .store
                .put(&budget.key, Bytes::from(body), condition)
                .await
            {
                Ok(_) => return Ok(true),
                Err(StoreError::ConditionFailed { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(GuardError::BudgetContended {
            key: budget.key.to_string(),
        })
    }
}

#[cfg(test)]
mod tests;
