//! When a pool's or a node's failure state is over, told at the cost the pool sweep already
//! paid: the sweep lists every pool (`$select`ed) and the nodes in trouble of the pools that may
//! hold some, so it knows which pools exist, where each stands, and which groups the pools and
//! nodes in trouble fall in now ([`PoolsSeen`]). A group that still gets a failure is not over,
//! whatever its example says (a group of 200 unusable nodes is not over because one of them
//! left). For the others:
//!
//! - a pool that could not resize (`pool.resize_failed`) is over when it holds its target:
//!   allocation `steady`, no `resizeErrors`, as many dedicated and low-priority nodes as it
//!   wants; one whose autoscale evaluation failed (`pool.autoscale_failed`) when, besides, its
//!   last evaluation succeeded (or autoscale was switched off); any of them, and a stuck deletion
//!   (`pool.delete_stuck`), when the pool is gone. None of this costs a request;
//! - a node is over when it is `idle` or `running` with no errors and, for `node.unusable`, no
//!   failed start task, for `node.start_task_failed`, a start task that succeeded (a node that
//!   shows no start task at all proves nothing); or when it is gone from the pool. That costs one
//!   point read of the group's node (`$select`ed), made only once the group no longer gets
//!   failures, or none when its pool is gone.
//!
//! Without a complete pool sweep of every account in the same tick (another instance held a
//! lease, a sweep stopped at its deadline, a node list failed) pool and node groups are left
//! for the next tick.

use std::collections::{HashMap, HashSet};

use batch_client::{BatchError, Deadline, GetOptions};
use diagnosis::FailureClass;
use diagnosis::wire::{AllocationState, BatchPool, ComputeNode, NodeState, PoolState, TaskResult};

use super::Triage;
use super::resolve::Resolvable;

/// What a point read of a node returns: enough to tell whether it recovered.
pub const NODE_RECOVERY_SELECT: &str = "id,state,errors,startTaskInfo";

/// What complete pool sweeps saw (one per account), for telling which pool and node groups are
/// over (module docs). Accounts and pool ids are compared as Azure and Batch compare them,
/// ignoring ASCII case.
#[derive(Debug, Clone, Default)]
pub struct PoolsSeen {
    /// (account, pool id), lower case → where the pool stands.
    pools: HashMap<(String, String), PoolNow>,
    firing: HashSet<String>,
}

/// Where one pool stands, from the sweep's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolNow {
    /// The targets (dedicated, low-priority) when the pool holds them: `steady`, no resize
    /// error, current equal to target, not being deleted.
    pub at_target: Option<(i64, i64)>,
    /// The last autoscale evaluation succeeded, or autoscale is off.
    pub autoscale_ok: bool,
}

impl PoolNow {
    /// Where `pool` stands.
    pub fn of(pool: &BatchPool) -> Self {
        let wide = |n: Option<i32>| i64::from(n.unwrap_or(0));
        let targets = (
            wide(pool.target_dedicated_nodes),
            wide(pool.target_low_priority_nodes),
        );
        let current = (
            wide(pool.current_dedicated_nodes),
            wide(pool.current_low_priority_nodes),
        );
        let held = pool.allocation_state == Some(AllocationState::Steady)
            && pool.state != Some(PoolState::Deleting)
            && pool.resize_errors().next().is_none()
            && current == targets;
        let autoscale_ok = pool.enable_auto_scale == Some(false)
            || (pool.auto_scale_run.is_some() && pool.auto_scale_error().is_none());
        Self {
            at_target: held.then_some(targets),
            autoscale_ok,
        }
    }
}

impl PoolsSeen {
    /// Notes a pool the sweep of `account` listed.
    pub fn saw_pool(&mut self, account: &str, pool_id: &str, pool: &BatchPool) {
        self.pools.insert(
            (account.to_ascii_lowercase(), pool_id.to_ascii_lowercase()),
            PoolNow::of(pool),
        );
    }

    /// Adds what another account's complete sweep saw.
    pub fn merge(&mut self, other: PoolsSeen) {
        self.pools.extend(other.pools);
        self.firing.extend(other.firing);
    }

    /// Notes the groups a pool or node in trouble falls in now.
    pub fn still_failing(&mut self, group_keys: impl IntoIterator<Item = String>) {
        self.firing.extend(group_keys);
    }

    /// Whether a pool or node in trouble fell in the group during the sweep.
    pub fn is_failing(&self, group_key: &str) -> bool {
        self.firing.contains(group_key)
    }

    /// The pool of `account` as its sweep saw it; `None` when it was not listed (gone).
    pub fn pool(&self, account: &str, pool_id: &str) -> Option<&PoolNow> {
        self.pools
            .get(&(account.to_ascii_lowercase(), pool_id.to_ascii_lowercase()))
    }
}

/// Why a pool's failure state of `class` is over, from where the pool stands (`None`: gone);
/// `None` while it lasts.
pub fn pool_ended(class: FailureClass, pool: Option<&PoolNow>) -> Option<String> {
    let Some(pool) = pool else {
        return Some("the pool no longer exists".to_owned());
    };
    let reached = |(dedicated, low): (i64, i64)| {
        format!("the pool reached its target of {dedicated} dedicated and {low} low-priority nodes")
    };
    match class {
        FailureClass::PoolResizeFailed => pool.at_target.map(reached),
        FailureClass::PoolAutoScaleFailed if pool.autoscale_ok => pool
            .at_target
            .map(|t| format!("its autoscale evaluation succeeds again and {}", reached(t))),
        _ => None,
    }
}

/// Why a node's failure state of `class` is over, from a read of it (`None`: gone from the
/// pool); `None` while it lasts (still in trouble, or rebooting, reimaging, leaving, …).
pub fn node_ended(class: FailureClass, node: Option<&ComputeNode>) -> Option<String> {
    let Some(node) = node else {
        return Some("the node was removed from the pool".to_owned());
    };
    let state = node.state.as_ref()?;
    let start = node
        .start_task_info
        .as_ref()
        .and_then(|i| i.result.as_ref());
    let start_ok = match class {
        // The failure was the start task's: only its success says it is over.
        FailureClass::NodeStartTaskFailed => start == Some(&TaskResult::Success),
        _ => start != Some(&TaskResult::Failure),
    };
    let healthy = matches!(state, NodeState::Idle | NodeState::Running)
        && node.errors().next().is_none()
        && start_ok;
    healthy.then(|| match class {
        FailureClass::NodeStartTaskFailed => format!(
            "the node's start task succeeded; it is {} with no errors",
            state.as_str()
        ),
        _ => format!("the node recovered: {} with no errors", state.as_str()),
    })
}

impl Resolvable {
    /// A pool or node state, told from the pool sweep's sight ([`PoolsSeen`]).
    pub fn needs_pool_sweep(&self) -> bool {
        matches!(self, Self::Pool { .. } | Self::Node { .. })
    }
}

impl Triage {
    /// Whether a pool or node state has ended, and why (module docs); `None` while it lasts.
    pub(super) async fn pool_or_node_ended(
        &self,
        resolvable: &Resolvable,
        seen: &PoolsSeen,
        deadline: Deadline,
    ) -> Result<Option<String>, BatchError> {
        match resolvable {
            Resolvable::Pool { pool, class } => {
                Ok(pool_ended(*class, seen.pool(&self.config.account, pool)))
            }
            Resolvable::Node { pool, node, class } => {
                if seen.pool(&self.config.account, pool).is_none() {
                    return Ok(Some("the node's pool no longer exists".to_owned()));
                }
                let options = GetOptions {
                    select: Some(NODE_RECOVERY_SELECT.to_owned()),
                    ..GetOptions::default()
                };
                match self.batch.get_node(pool, node, &options, deadline).await {
                    Ok(found) => Ok(node_ended(*class, Some(&found))),
                    Err(error) if error.is_not_found() => Ok(node_ended(*class, None)),
                    Err(error) => Err(error),
                }
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(json: serde_json::Value) -> PoolNow {
        PoolNow::of(&serde_json::from_value::<BatchPool>(json).unwrap())
    }

    fn node(json: serde_json::Value) -> ComputeNode {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_pool_that_could_not_resize_ends_at_its_target_or_when_gone() {
        let resize = FailureClass::PoolResizeFailed;
        let failed = pool(serde_json::json!({"id": "p", "allocationState": "steady",
            "currentDedicatedNodes": 0, "targetDedicatedNodes": 8,
            "resizeErrors": [{"code": "AccountCoreQuotaReached", "message": "quota"}]}));
        assert_eq!(pool_ended(resize, Some(&failed)), None);
        // Errors cleared but still growing: not yet.
        let resizing = pool(serde_json::json!({"id": "p", "allocationState": "resizing",
            "currentDedicatedNodes": 3, "targetDedicatedNodes": 8}));
        assert_eq!(pool_ended(resize, Some(&resizing)), None);
        // Steady short of the low-priority target: not yet.
        let short = pool(serde_json::json!({"id": "p", "allocationState": "steady",
            "currentDedicatedNodes": 8, "targetDedicatedNodes": 8,
            "currentLowPriorityNodes": 1, "targetLowPriorityNodes": 2}));
        assert_eq!(pool_ended(resize, Some(&short)), None);
        let held = pool(serde_json::json!({"id": "p", "allocationState": "steady",
            "currentDedicatedNodes": 8, "targetDedicatedNodes": 8,
            "currentLowPriorityNodes": 2, "targetLowPriorityNodes": 2, "resizeErrors": []}));
        assert_eq!(
            pool_ended(resize, Some(&held)).as_deref(),
            Some("the pool reached its target of 8 dedicated and 2 low-priority nodes")
        );
        // A pool being deleted holds nothing.
        let deleting = pool(serde_json::json!({"id": "p", "state": "deleting",
            "allocationState": "steady", "currentDedicatedNodes": 0, "targetDedicatedNodes": 0}));
        assert_eq!(pool_ended(resize, Some(&deleting)), None);
        assert!(pool_ended(resize, None).is_some());
    }

    #[test]
    fn autoscale_ends_when_it_evaluates_again_and_the_pool_holds_its_target() {
        let autoscale = FailureClass::PoolAutoScaleFailed;
        let failing = pool(serde_json::json!({"id": "p", "enableAutoScale": true,
            "allocationState": "steady", "currentDedicatedNodes": 2, "targetDedicatedNodes": 2,
            "autoScaleRun": {"timestamp": "2026-12-05T03:00:00Z",
                "error": {"code": "InsufficientSampleData", "message": "x"}}}));
        assert_eq!(pool_ended(autoscale, Some(&failing)), None);
        let evaluated = pool(serde_json::json!({"id": "p", "enableAutoScale": true,
            "allocationState": "steady", "currentDedicatedNodes": 2, "targetDedicatedNodes": 2,
            "autoScaleRun": {"timestamp": "2026-12-05T03:05:00Z", "results": "$TargetDedicatedNodes=2"}}));
        assert!(pool_ended(autoscale, Some(&evaluated)).is_some());
        let growing = pool(serde_json::json!({"id": "p", "enableAutoScale": true,
            "allocationState": "resizing", "currentDedicatedNodes": 0, "targetDedicatedNodes": 2,
            "autoScaleRun": {"timestamp": "2026-12-05T03:05:00Z"}}));
        assert_eq!(pool_ended(autoscale, Some(&growing)), None);
        let off = pool(serde_json::json!({"id": "p", "enableAutoScale": false,
            "allocationState": "steady", "currentDedicatedNodes": 2, "targetDedicatedNodes": 2}));
        assert!(pool_ended(autoscale, Some(&off)).is_some());
    }

    #[test]
    fn a_stuck_deletion_ends_only_when_the_pool_is_gone() {
        let stuck = pool(serde_json::json!({"id": "p", "state": "deleting",
            "allocationState": "steady"}));
        assert_eq!(
            pool_ended(FailureClass::PoolDeleteStuck, Some(&stuck)),
            None
        );
        let steady = pool(serde_json::json!({"id": "p", "allocationState": "steady"}));
        assert_eq!(
            pool_ended(FailureClass::PoolDeleteStuck, Some(&steady)),
            None
        );
        assert_eq!(
            pool_ended(FailureClass::PoolDeleteStuck, None).as_deref(),
            Some("the pool no longer exists")
        );
    }

    #[test]
    fn a_node_ends_when_healthy_without_errors_or_gone() {
        let unusable_class = FailureClass::NodeUnusable;
        let ended = |n: serde_json::Value| node_ended(unusable_class, Some(&node(n)));
        let unusable = serde_json::json!({"id": "n", "state": "unusable",
            "errors": [{"code": "DiskFull", "message": "full"}]});
        assert_eq!(ended(unusable), None);
        let idle_with_errors = serde_json::json!({"id": "n", "state": "idle",
            "errors": [{"code": "DiskFull", "message": "full"}]});
        assert_eq!(ended(idle_with_errors), None);
        let idle_start_failed = serde_json::json!({"id": "n", "state": "idle",
            "startTaskInfo": {"state": "completed", "result": "failure", "exitCode": 1}});
        assert_eq!(ended(idle_start_failed), None);
        for passing in [
            "reimaging",
            "rebooting",
            "leavingpool",
            "offline",
            "unknown",
        ] {
            assert_eq!(
                ended(serde_json::json!({"id": "n", "state": passing})),
                None,
                "{passing}"
            );
        }
        assert_eq!(ended(serde_json::json!({"id": "n"})), None);
        let running = serde_json::json!({"id": "n", "state": "running",
            "startTaskInfo": {"state": "completed", "result": "success", "exitCode": 0}});
        assert_eq!(
            ended(running).as_deref(),
            Some("the node recovered: running with no errors")
        );
        assert_eq!(
            ended(serde_json::json!({"id": "n", "state": "idle"})).as_deref(),
            Some("the node recovered: idle with no errors")
        );
        assert_eq!(
            node_ended(unusable_class, None).as_deref(),
            Some("the node was removed from the pool")
        );
    }

    #[test]
    fn a_failed_start_task_ends_only_with_one_that_succeeded() {
        let class = FailureClass::NodeStartTaskFailed;
        let ended = |n: serde_json::Value| node_ended(class, Some(&node(n)));
        // Idle without start task info proves nothing about the start task.
        assert_eq!(ended(serde_json::json!({"id": "n", "state": "idle"})), None);
        let failed = serde_json::json!({"id": "n", "state": "idle",
            "startTaskInfo": {"state": "completed", "result": "failure", "exitCode": 100}});
        assert_eq!(ended(failed), None);
        let stuck = serde_json::json!({"id": "n", "state": "starttaskfailed",
            "startTaskInfo": {"state": "completed", "result": "failure", "exitCode": 100}});
        assert_eq!(ended(stuck), None);
        let rerun = serde_json::json!({"id": "n", "state": "idle",
            "startTaskInfo": {"state": "completed", "result": "success", "exitCode": 0}});
        assert_eq!(
            ended(rerun).as_deref(),
            Some("the node's start task succeeded; it is idle with no errors")
        );
        assert!(node_ended(class, None).is_some());
    }

    #[test]
    fn pools_are_known_ignoring_case_and_groups_by_key() {
        let mut seen = PoolsSeen::default();
        let listed: BatchPool =
            serde_json::from_value(serde_json::json!({"id": "Workers"})).unwrap();
        seen.saw_pool("Acct1", "Workers", &listed);
        assert!(seen.pool("acct1", "workers").is_some());
        assert!(seen.pool("acct1", "other").is_none());
        assert!(
            seen.pool("acct2", "workers").is_none(),
            "another account's pool"
        );
        seen.still_failing(["g1".to_owned()]);
        assert!(seen.is_failing("g1"));
        assert!(!seen.is_failing("g2"));
        let mut other = PoolsSeen::default();
        other.saw_pool("acct2", "workers", &listed);
        other.still_failing(["g2".to_owned()]);
        seen.merge(other);
        assert!(seen.pool("acct2", "workers").is_some());
        assert!(seen.is_failing("g1") && seen.is_failing("g2"));
    }
}
