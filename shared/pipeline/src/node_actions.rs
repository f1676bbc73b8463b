//! Guarded node actions: remove (with `requeue`) or reimage a node because a rule says so,
//! after its agent logs were kept, without ever emptying a pool that is working or running
//! away. The same shape as job actions (`actions.rs`): every decision is audited, a once-marker
//! per node and incident, budgets by compare-and-swap.
//!
//! The guards, in the order they are checked (each skip is audited with its reason):
//! 1. node actions are switched on globally (`[node_actions] enabled`, with `max_per_hour`) and
//!    the rule in force asks for this action;
//! 2. the action was not already taken for this (account, pool, node, incident, action):
//!    `node-actions/once/…`;
//! 3. the node agent's logs are settled (kept, or recorded as unavailable): otherwise the
//!    decision is **deferred**, not audited, and made again on the next sweep;
//! 4. the node, read fresh, still exists and is still in the trouble the rule is about;
//! 5. it is not the last healthy (`idle` or `running`) node of a pool with running tasks
//!    (fresh `/nodecounts`);
//! 6. dry run (global or per rule) stops here: audited, nothing sent to Batch;
//! 7. the once-marker is created with `IfAbsent` (only one instance goes on);
//! 8. the hourly budget in all and the pool's hourly budget have room (compare-and-swap each);
//! 9. Remove Nodes or Reimage Node is sent with `nodeDeallocationOption = requeue`.
//!
//! A marker is given back when the action did not take effect, so a later sweep may try again.

use std::sync::Arc;
use std::time::Duration;

use artifact_store::{ArtifactStore, Condition, ObjectKey, StoreError};
use batch_client::{
    ActionOutcome, BatchApi, Deadline, GetOptions, ListOptions, NodeDeallocation,
    RemoveNodesOptions, items,
};
use bytes::Bytes;
use diagnosis::Diagnosis;
use diagnosis::policy::{
    NODE_START_TASK_FAILED, NODE_UNUSABLE, NodeActionKind, NodeActionPlan, Policy,
};
use diagnosis::wire::{ComputeNode, NodeState, PoolNodeCounts, TaskResult};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::audit::{AuditDecision, AuditLog, AuditRecord};
use crate::digest;

/// Compare-and-swap attempts on a budget object.
const MAX_BUDGET_ATTEMPTS: u32 = 64;

/// Why a node action could not even be audited (the store failed): the caller retries later.
#[derive(Debug, thiserror::Error)]
pub enum NodeActionError {
    /// The artifact store failed (marker, budget or audit record).
    #[error("node action store: {0}")]
    Store(#[from] StoreError),
    /// Another instance changed a budget on every try.
    #[error("the node action budget {key} kept changing; gave up")]
    BudgetContended {
        /// The budget object's key.
        key: String,
    },
}

/// What became of a planned node action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeActionOutcome {
    /// Decided (taken, dry run, skipped or failed): the audit record says which.
    Decided(Box<AuditRecord>),
    /// Not decided yet: the node agent's logs are still on their way (or another instance is
    /// deciding).
    Deferred(String),
    /// Decided by an earlier run for this incident (taken, or a dry run audited): nothing new.
    AlreadyDecided(String),
}

impl NodeActionOutcome {
    /// One line for a subject report.
    pub fn describe(&self) -> String {
        match self {
            Self::Decided(record) => format!("{:?}: {}", record.decision, record.reason),
            Self::Deferred(reason) => format!("deferred: {reason}"),
            Self::AlreadyDecided(reason) => format!("already decided: {reason}"),
        }
    }
}

/// One planned node action to carry out.
#[derive(Debug, Clone, Copy)]
pub struct NodeActionRequest<'a> {
    /// The diagnosis that triggered it (account, pool, node, class).
    pub diagnosis: &'a Diagnosis,
    /// The policy in force (the switches and budgets are re-read from it).
    pub policy: &'a Policy,
    /// What [`diagnosis::policy::plan`] asked for.
    pub plan: &'a NodeActionPlan,
    /// The incident on the node (the same one its agent logs are kept for).
    pub incident: &'a str,
    /// Whether the node agent's logs are settled (kept, or recorded as unavailable).
    pub agent_logs_settled: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Budget {
    count: u32,
    max: u32,
    actions: Vec<String>,
}

/// Applies planned node actions through a [`BatchApi`], with markers, budgets and audit
/// records in an [`ArtifactStore`].
#[derive(Clone)]
pub struct NodeActions {
    store: Arc<dyn ArtifactStore>,
    batch: Arc<dyn BatchApi>,
    audit: AuditLog,
    call_timeout: Duration,
}

impl std::fmt::Debug for NodeActions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeActions")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

fn hour(now: OffsetDateTime) -> String {
    crate::history::hour_segment(now)
}

/// Whether the node, as read now, is still in the trouble `class` is about.
fn still_in_trouble(class: &str, node: &ComputeNode) -> bool {
    match class {
        NODE_UNUSABLE => node.state == Some(NodeState::Unusable),
        NODE_START_TASK_FAILED => {
            node.state == Some(NodeState::StartTaskFailed)
                || node
                    .start_task_info
                    .as_ref()
                    .is_some_and(|info| info.result == Some(TaskResult::Failure))
        }
        _ => false,
    }
}

fn healthy(node: &ComputeNode) -> bool {
    matches!(node.state, Some(NodeState::Idle | NodeState::Running))
}

/// `(healthy nodes, nodes running tasks)` of a pool, dedicated and low-priority.
fn health(counts: &PoolNodeCounts) -> (i64, i64) {
    [counts.dedicated, counts.low_priority]
        .iter()
        .flatten()
        .fold((0, 0), |(healthy, running), c| {
            (
                healthy + i64::from(c.idle.max(0)) + i64::from(c.running.max(0)),
                running + i64::from(c.running.max(0)),
            )
        })
}

impl NodeActions {
    /// Node actions on `batch`, state in `store`; each Batch call gets `call_timeout`.
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

    /// The once-marker key of (account, pool, node, incident, action).
    pub fn once_key(
        account: &str,
        pool_id: &str,
        node_id: &str,
        incident: &str,
        action: &str,
    ) -> Result<ObjectKey, StoreError> {
        ObjectKey::new(format!(
            "node-actions/once/{}.json",
            digest(&format!(
                "{account}\n{pool_id}\n{node_id}\n{incident}\n{action}"
            ))
        ))
    }

    /// The budget key of the clock hour containing `now`, in all (`pool = None`) or per pool.
    pub fn budget_key(
        now: OffsetDateTime,
        account: &str,
        pool: Option<&str>,
    ) -> Result<ObjectKey, StoreError> {
        match pool {
            None => ObjectKey::new(format!(
                "node-actions/budget/{}/{}.json",
                crate::account_segment(account),
                hour(now)
            )),
            Some(pool) => ObjectKey::new(format!(
                "node-actions/budget/{}/{}.json",
                hour(now),
                digest(&format!("{account}\n{pool}"))
            )),
        }
    }

    fn deadline(&self) -> Deadline {
        Deadline::after(self.call_timeout)
    }

    fn new_record(request: NodeActionRequest<'_>, now: OffsetDateTime) -> AuditRecord {
        let subject = &request.diagnosis.subject;
        AuditRecord {
            id: AuditLog::new_id(now),
            time: AuditLog::timestamp(now),
            rule: request.plan.rule.clone(),
            account: subject.account.clone().unwrap_or_else(|| "-".to_owned()),
            job_id: String::new(),
            action: format!("node.{}", request.plan.kind.as_str()),
            disable_tasks: None,
            decision: AuditDecision::Skipped,
            reason: String::new(),
            action_reason: request.plan.reason.clone(),
            terminate_reason: None,
            etag: None,
            outcome: None,
            threshold: "no threshold".to_owned(),
            dry_run: request.policy.node_actions.dry_run || request.plan.dry_run,
            pool_id: subject.pool_id.clone(),
            node_id: subject.node_id.clone(),
        }
    }

    /// Carries out, declines or defers one planned node action. Every decision ends in exactly
    /// one audit record; a deferral writes none.
    pub async fn execute(
        &self,
        request: NodeActionRequest<'_>,
        now: OffsetDateTime,
    ) -> Result<NodeActionOutcome, NodeActionError> {
        let mut record = Self::new_record(request, now);
        let (Some(pool_id), Some(node_id)) = (record.pool_id.clone(), record.node_id.clone())
        else {
            record.reason = "the diagnosis names no pool and node".to_owned();
            self.audit.write(now, &record).await?;
            return Ok(NodeActionOutcome::Decided(Box::new(record)));
        };
        if let Err(reason) = guards(request) {
            record.reason = reason;
            self.audit.write(now, &record).await?;
            return Ok(NodeActionOutcome::Decided(Box::new(record)));
        }
        let once = Self::once_key(
            &record.account,
            &pool_id,
            &node_id,
            request.incident,
            &record.action,
        )?;
        if self.store.head(&once).await?.is_some() {
            // Already decided for this incident: nothing new to audit.
            return Ok(NodeActionOutcome::AlreadyDecided(format!(
                "{} of node {node_id} was taken for this incident",
                record.action
            )));
        }
        if !request.agent_logs_settled {
            return Ok(NodeActionOutcome::Deferred(
                "waiting for the node agent's logs to be kept (or recorded unavailable)".into(),
            ));
        }
        if let Some(reason) = self.fresh_checks(request, &pool_id, &node_id).await {
            record.reason = reason;
            self.audit.write(now, &record).await?;
            return Ok(NodeActionOutcome::Decided(Box::new(record)));
        }
        if record.dry_run {
            // Once per incident too: the sweep sees the same node every run, and one dry-run
            // record says all there is to say. (Its own marker, so going live later still acts.)
            let dry = ObjectKey::new(once.as_str().replacen("/once/", "/dry-run/", 1))?;
            let marker = Bytes::from(record.id.clone().into_bytes());
            match self.store.put(&dry, marker, Condition::IfAbsent).await {
                Ok(_) => {}
                Err(StoreError::ConditionFailed { .. }) => {
                    return Ok(NodeActionOutcome::AlreadyDecided(format!(
                        "a dry run for this incident: would {} node {node_id}",
                        request.plan.kind.as_str()
                    )));
                }
                Err(error) => return Err(error.into()),
            }
            record.decision = AuditDecision::DryRun;
            record.reason = format!(
                "dry run: would {} node {node_id} of pool {pool_id} (nodeDeallocationOption=requeue); nothing was sent to Batch",
                request.plan.kind.as_str()
            );
            self.audit.write(now, &record).await?;
            return Ok(NodeActionOutcome::Decided(Box::new(record)));
        }
        let marker = Bytes::from(
            serde_json::to_vec(&serde_json::json!({
                "account": record.account, "poolId": pool_id, "nodeId": node_id,
                "incident": request.incident, "action": record.action, "auditId": record.id,
            }))
            .unwrap_or_default(),
        );
        let claim = match self.store.put(&once, marker, Condition::IfAbsent).await {
            Ok(etag) => etag,
            Err(StoreError::ConditionFailed { .. }) => {
                return Ok(NodeActionOutcome::Deferred(
                    "another instance is taking this node action".into(),
                ));
            }
            Err(error) => return Err(error.into()),
        };
        let result = self
            .spend_and_act(request, &pool_id, &node_id, now, &mut record)
            .await;
        let took_effect = matches!(
            record.decision,
            AuditDecision::Applied | AuditDecision::AlreadyInState
        );
        if !took_effect || result.is_err() {
            // Given back, so a later sweep may decide again.
            let _ = self.store.delete(&once, Condition::IfMatch(claim)).await;
        }
        result?;
        self.audit.write(now, &record).await?;
        Ok(NodeActionOutcome::Decided(Box::new(record)))
    }

    /// Guards 4 and 5: `Some(reason)` when the node, read now, must not be touched.
    async fn fresh_checks(
        &self,
        request: NodeActionRequest<'_>,
        pool_id: &str,
        node_id: &str,
    ) -> Option<String> {
        let node = match self
            .batch
            .get_node(pool_id, node_id, &GetOptions::default(), self.deadline())
            .await
        {
            Ok(node) => node,
            Err(error) if error.is_not_found() => {
                return Some(format!("node {node_id} no longer exists"));
            }
            Err(error) => return Some(format!("could not read the node: {error}")),
        };
        let class = request.diagnosis.class.as_str();
        if !still_in_trouble(class, &node) {
            let state = node.state.as_ref().map_or("unknown", NodeState::as_str);
            return Some(format!("node {node_id} is {state} now, no longer {class}"));
        }
        if healthy(&node) {
            let options = ListOptions {
                filter: Some(format!("poolId eq '{}'", pool_id.replace('\'', "''"))),
                ..ListOptions::default()
            };
            let counts: Result<Vec<PoolNodeCounts>, _> =
                items(self.batch.list_pool_node_counts(&options, self.deadline()))
                    .try_collect()
                    .await;
            let Ok(counts) = counts else {
                return Some(
                    "the pool's node counts could not be read, so the last healthy node cannot be ruled out".into(),
                );
            };
            let (healthy, running) = counts
                .iter()
                .filter(|c| c.pool_id.as_deref() == Some(pool_id))
                .map(health)
                .fold((0, 0), |(h, r), (h2, r2)| (h + h2, r + r2));
            if healthy <= 1 && running > 0 {
                return Some(format!(
                    "node {node_id} is the last healthy node of pool {pool_id}, which has running tasks"
                ));
            }
        }
        None
    }

    /// Takes one from each budget, then sends the action.
    async fn spend_and_act(
        &self,
        request: NodeActionRequest<'_>,
        pool_id: &str,
        node_id: &str,
        now: OffsetDateTime,
        record: &mut AuditRecord,
    ) -> Result<(), NodeActionError> {
        let policy = &request.policy.node_actions;
        let total = Self::budget_key(now, &record.account, None)?;
        let per_pool = Self::budget_key(now, &record.account, Some(pool_id))?;
        let max_total = policy.max_per_hour.unwrap_or(0);
        if !self.spend(&total, max_total, &record.id, true).await? {
            record.reason = format!("hourly node action budget exhausted ({max_total} per hour)");
            return Ok(());
        }
        if !self
            .spend(&per_pool, policy.max_per_pool_per_hour, &record.id, true)
            .await?
        {
            // The total was taken for nothing: give it back.
            self.spend(&total, max_total, &record.id, false).await?;
            record.reason = format!(
                "hourly node action budget of pool {pool_id} exhausted ({} per hour)",
                policy.max_per_pool_per_hour
            );
            return Ok(());
        }
        let sent = match request.plan.kind {
            NodeActionKind::Remove => {
                self.batch
                    .remove_nodes(
                        pool_id,
                        &[node_id.to_owned()],
                        &RemoveNodesOptions {
                            deallocation: NodeDeallocation::Requeue,
                            if_match: None,
                        },
                        self.deadline(),
                    )
                    .await
            }
            NodeActionKind::Reimage => {
                self.batch
                    .reimage_node(pool_id, node_id, NodeDeallocation::Requeue, self.deadline())
                    .await
            }
        };
        match sent {
            Ok(ActionOutcome::AlreadyInState { code }) => {
                record.decision = AuditDecision::AlreadyInState;
                record.reason = format!("Batch says the node is already being handled ({code})");
                record.outcome = Some(code);
            }
            Ok(_) => {
                record.decision = AuditDecision::Applied;
                record.reason = format!(
                    "{} node {node_id} of pool {pool_id} with nodeDeallocationOption=requeue",
                    request.plan.kind.as_str()
                );
                record.outcome = Some("accepted".to_owned());
            }
            Err(error) => {
                record.decision = AuditDecision::Failed;
                record.reason = "Batch refused or failed the node action".to_owned();
                record.outcome = Some(error.to_string());
                // Not spent after all.
                self.spend(&per_pool, policy.max_per_pool_per_hour, &record.id, false)
                    .await?;
                self.spend(&total, max_total, &record.id, false).await?;
            }
        }
        Ok(())
    }

    /// Takes (`take`) or gives back one unit of the budget at `key`; `false` when taking finds
    /// it full.
    async fn spend(
        &self,
        key: &ObjectKey,
        max: u32,
        audit_id: &str,
        take: bool,
    ) -> Result<bool, NodeActionError> {
        for _ in 0..MAX_BUDGET_ATTEMPTS {
            let current = self.store.get(key).await?;
            let mut budget: Budget = current
                .as_ref()
                .and_then(|v| serde_json::from_slice(&v.bytes).ok())
                .unwrap_or_default();
            budget.max = max;
            if take {
                if budget.count >= max {
                    return Ok(false);
                }
                budget.count += 1;
                budget.actions.push(audit_id.to_owned());
            } else {
                let Some(at) = budget.actions.iter().position(|a| a == audit_id) else {
                    return Ok(true);
                };
                budget.actions.remove(at);
                budget.count = budget.count.saturating_sub(1);
            }
            let body = Bytes::from(serde_json::to_vec(&budget).unwrap_or_default());
            let condition = match &current {
                Some(v) => Condition::IfMatch(v.etag.clone()),
                None => Condition::IfAbsent,
            };
            match self.store.put(key, body, condition).await {
                Ok(_) => return Ok(true),
                Err(StoreError::ConditionFailed { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(NodeActionError::BudgetContended {
            key: key.to_string(),
        })
    }
}

/// Guard 1: the switch, the budget and the rule in force.
fn guards(request: NodeActionRequest<'_>) -> Result<(), String> {
    let config = &request.policy.node_actions;
    if !config.enabled {
        return Err(
            "node actions are not enabled globally ([node_actions] enabled = false)".into(),
        );
    }
    if config.max_per_hour.is_none() {
        return Err("no hourly budget is set ([node_actions] max_per_hour)".into());
    }
    let rule = request
        .policy
        .rules
        .iter()
        .find(|r| r.name == request.plan.rule);
    match rule.and_then(|r| r.node_action) {
        Some(action) if action.kind == request.plan.kind => Ok(()),
        _ => Err(format!(
            "rule {:?} in force does not ask to {} the node",
            request.plan.rule,
            request.plan.kind.as_str()
        )),
    }
}
