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
//! The budgets, the markers and the audit record are the mechanism every guarded action shares
//! (`guard.rs`); what is here reads the node and its pool and talks to Batch.

use std::sync::Arc;
use std::time::Duration;

use artifact_store::{ArtifactStore, ObjectKey, StoreError};
use batch_client::{
    ActionOutcome, BatchApi, GetOptions, ListOptions, NodeDeallocation, RemoveNodesOptions, items,
};
use diagnosis::Diagnosis;
use diagnosis::policy::{
    NODE_START_TASK_FAILED, NODE_UNUSABLE, NodeActionKind, NodeActionPlan, Policy,
};
use diagnosis::wire::{ComputeNode, NodeState, PoolNodeCounts, TaskResult};
use futures::TryStreamExt;
use time::OffsetDateTime;

use crate::audit::{AuditDecision, AuditRecord};
use crate::digest;
use crate::guard::{ActionGuard, BatchCalls, Budget, GuardError, Spend};

/// Why a node action could not even be audited (the store failed): the caller retries later.
/// The store failed (marker, budget or audit record), or another instance changed a budget on
/// every try.
#[derive(Debug, thiserror::Error)]
#[error("node action {0}")]
pub struct NodeActionError(#[from] GuardError);

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

/// Applies planned node actions through a [`BatchApi`], with markers, budgets and audit
/// records in an [`ArtifactStore`].
#[derive(Debug, Clone)]
pub struct NodeActions {
    guard: ActionGuard,
    batch: BatchCalls,
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
    /// Node actions on `batch`, state in `store`; each Batch call gets `timeout`.
    pub fn new(store: Arc<dyn ArtifactStore>, batch: Arc<dyn BatchApi>, timeout: Duration) -> Self {
        let (guard, batch) = (ActionGuard::new(store), BatchCalls::new(batch, timeout));
        Self { guard, batch }
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
                crate::history::hour_segment(now)
            )),
            Some(pool) => ObjectKey::new(format!(
                "node-actions/budget/{}/{}.json",
                crate::history::hour_segment(now),
                digest(&format!("{account}\n{pool}"))
            )),
        }
    }

    fn new_record(request: NodeActionRequest<'_>, now: OffsetDateTime) -> AuditRecord {
        let subject = &request.diagnosis.subject;
        let mut record = AuditRecord::pending(
            now,
            subject,
            &request.plan.rule,
            format!("node.{}", request.plan.kind.as_str()),
            request.plan.reason.clone(),
            request.policy.node_actions.dry_run || request.plan.dry_run,
        );
        record.pool_id = subject.pool_id.clone();
        record.node_id = subject.node_id.clone();
        record
    }

    /// Carries out, declines or defers one planned node action. Every decision ends in exactly
    /// one audit record; a deferral writes none. Once this decision has taken the once-marker,
    /// its only way out is the guard's `settle`, which keeps the marker when the action took
    /// effect and gives it back otherwise.
    pub async fn execute(
        &self,
        request: NodeActionRequest<'_>,
        now: OffsetDateTime,
    ) -> Result<NodeActionOutcome, NodeActionError> {
        let mut record = Self::new_record(request, now);
        let (Some(pool_id), Some(node_id)) = (record.pool_id.clone(), record.node_id.clone())
        else {
            record.reason = "the diagnosis names no pool and node".to_owned();
            return self.decided(record, now).await;
        };
        if let Err(reason) = guards(request) {
            record.reason = reason;
            return self.decided(record, now).await;
        }
        let once = Self::once_key(
            &record.account,
            &pool_id,
            &node_id,
            request.incident,
            &record.action,
        )
        .map_err(GuardError::from)?;
        // A marker its decision could not give back is removed here, and this one goes on.
        if self.guard.marker_held(&once).await? {
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
            return self.decided(record, now).await;
        }
        if record.dry_run {
            // Once per incident too: the sweep sees the same node every run, and one dry-run
            // record says all there is to say.
            record.decision = AuditDecision::DryRun;
            record.reason = format!(
                "dry run: would {} node {node_id} of pool {pool_id} (nodeDeallocationOption=requeue); nothing was sent to Batch",
                request.plan.kind.as_str()
            );
            if !self.guard.audit_dry_run_once(&once, &record, now).await? {
                return Ok(NodeActionOutcome::AlreadyDecided(format!(
                    "a dry run for this incident: would {} node {node_id}",
                    request.plan.kind.as_str()
                )));
            }
            return Ok(NodeActionOutcome::Decided(Box::new(record)));
        }
        let marker = serde_json::json!({
            "account": record.account, "poolId": pool_id, "nodeId": node_id,
            "incident": request.incident, "action": record.action,
        });
        let Some(claim) = self.guard.take_once(&once, &marker, &record, now).await? else {
            return Ok(NodeActionOutcome::Deferred(
                "another instance is taking this node action".into(),
            ));
        };
        let result = self
            .spend_and_act(request, &pool_id, &node_id, now, &mut record)
            .await;
        let record = self.guard.settle(Some(claim), result, record, now).await?;
        Ok(NodeActionOutcome::Decided(Box::new(record)))
    }

    /// Audits a decision that holds no marker.
    async fn decided(
        &self,
        record: AuditRecord,
        now: OffsetDateTime,
    ) -> Result<NodeActionOutcome, NodeActionError> {
        self.guard.audit(now, &record).await?;
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
            .api()
            .get_node(
                pool_id,
                node_id,
                &GetOptions::default(),
                self.batch.deadline(),
            )
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
            let counts: Result<Vec<PoolNodeCounts>, _> = items(
                self.batch
                    .api()
                    .list_pool_node_counts(&options, self.batch.deadline()),
            )
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

    /// Takes one from each budget (in all, and the pool's), then sends the action; the budgets
    /// are given back when Batch refuses it.
    async fn spend_and_act(
        &self,
        request: NodeActionRequest<'_>,
        pool_id: &str,
        node_id: &str,
        now: OffsetDateTime,
        record: &mut AuditRecord,
    ) -> Result<(), NodeActionError> {
        let policy = &request.policy.node_actions;
        let max_total = policy.max_per_hour.unwrap_or(0);
        let budgets = [
            Budget {
                key: Self::budget_key(now, &record.account, None).map_err(GuardError::from)?,
                max: max_total,
            },
            Budget {
                key: Self::budget_key(now, &record.account, Some(pool_id))
                    .map_err(GuardError::from)?,
                max: policy.max_per_pool_per_hour,
            },
        ];
        match self.guard.spend(&budgets, &record.id).await? {
            Spend::Spent => {}
            Spend::Exhausted(0) => {
                record.reason =
                    format!("hourly node action budget exhausted ({max_total} per hour)");
                return Ok(());
            }
            Spend::Exhausted(_) => {
                record.reason = format!(
                    "hourly node action budget of pool {pool_id} exhausted ({} per hour)",
                    policy.max_per_pool_per_hour
                );
                return Ok(());
            }
        }
        match self.send(request.plan.kind, pool_id, node_id).await {
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
                self.guard.give_back_budgets(&budgets, &record.id).await?;
            }
        }
        Ok(())
    }

    /// Sends Remove Nodes or Reimage Node, with `nodeDeallocationOption = requeue`.
    async fn send(
        &self,
        kind: NodeActionKind,
        pool_id: &str,
        node_id: &str,
    ) -> Result<ActionOutcome, batch_client::BatchError> {
        match kind {
            NodeActionKind::Remove => {
                let options = RemoveNodesOptions {
                    deallocation: NodeDeallocation::Requeue,
                    if_match: None,
                };
                self.batch
                    .api()
                    .remove_nodes(
                        pool_id,
                        &[node_id.to_owned()],
                        &options,
                        self.batch.deadline(),
                    )
                    .await
            }
            NodeActionKind::Reimage => {
                self.batch
                    .api()
                    .reimage_node(
                        pool_id,
                        node_id,
                        NodeDeallocation::Requeue,
                        self.batch.deadline(),
                    )
                    .await
            }
        }
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
