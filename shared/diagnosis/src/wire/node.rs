//! Compute nodes (`docs/batch-facts.md`): the REST `BatchNode` body from Get Node or List Nodes.
//!
//! Lenient like the rest of [`crate::wire`]. Note that node errors carry `errorDetails` where
//! pool errors carry `values`; [`FailureInfo`] reads both spellings.

use serde::Deserialize;

use super::lenient::{Timestamp, int, one_or_many, wire_enum};
use super::pool::StartTaskSettings;
use super::rest::{FailureInfo, SpecialTaskExecutionInfo, SpecialTaskState};

wire_enum! {
    /// `BatchNodeState`.
    NodeState {
        Idle => "idle", Rebooting => "rebooting", Reimaging => "reimaging", Running => "running",
        Unusable => "unusable", Creating => "creating", Starting => "starting",
        WaitingForStartTask => "waitingforstarttask", StartTaskFailed => "starttaskfailed",
        Unknown => "unknown", LeavingPool => "leavingpool", Offline => "offline",
        Preempted => "preempted", UpgradingOs => "upgradingos", Deallocated => "deallocated",
        Deallocating => "deallocating",
    }
}

wire_enum! {
    /// `SchedulingState` of a node: whether it takes new tasks.
    SchedulingState { Enabled => "enabled", Disabled => "disabled" }
}

/// One `errors` entry of a node (`BatchNodeError`), e.g. `DiskFull`: the shape of a
/// [`FailureInfo`], its details spelled `errorDetails` (or `values`).
pub type NodeError = FailureInfo;

/// `startTaskInfo` of a node: the shape of a job preparation task's execution.
pub type StartTaskInfo = SpecialTaskExecutionInfo;

/// `BatchStartTaskState`: `running` or `completed`, as for the job preparation task.
pub type StartTaskState = SpecialTaskState;

/// `nodeAgentInfo` of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NodeAgentInfo {
    /// The agent's version.
    pub version: Option<String>,
    /// When it was last updated.
    pub last_update_time: Option<Timestamp>,
}

/// A compute node (`BatchNode`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ComputeNode {
    /// Node id.
    pub id: Option<String>,
    /// URL of the node; names the account and the pool.
    pub url: Option<String>,
    /// Its state.
    pub state: Option<NodeState>,
    /// Whether it takes new tasks.
    pub scheduling_state: Option<SchedulingState>,
    /// When `state` last changed.
    pub state_transition_time: Option<Timestamp>,
    /// When it last booted (may be absent when unusable).
    pub last_boot_time: Option<Timestamp>,
    /// When it joined the pool.
    pub allocation_time: Option<Timestamp>,
    /// The VM size.
    pub vm_size: Option<String>,
    /// Tasks completed on it.
    #[serde(deserialize_with = "int::opt_i64")]
    pub total_tasks_run: Option<i64>,
    /// Tasks running on it now.
    #[serde(deserialize_with = "int::opt_i32")]
    pub running_tasks_count: Option<i32>,
    /// `false` for a Spot/low-priority node.
    pub is_dedicated: Option<bool>,
    /// What is wrong with it: set on an `unusable` node, except when Batch lost contact.
    #[serde(deserialize_with = "one_or_many")]
    pub errors: Vec<NodeError>,
    /// The pool's start task, as this node runs it.
    pub start_task: Option<StartTaskSettings>,
    /// How the start task went.
    pub start_task_info: Option<StartTaskInfo>,
    /// The node agent.
    pub node_agent_info: Option<NodeAgentInfo>,
}

impl ComputeNode {
    /// The pool, read from the node's URL (`…/pools/{pool}/nodes/{node}`).
    pub fn pool_id(&self) -> Option<String> {
        let path = self.url.as_deref()?.split(['?', '#']).next()?;
        let mut parts = path.split('/');
        while let Some(part) = parts.next() {
            if part.eq_ignore_ascii_case("pools") {
                let pool = parts.next().filter(|p| !p.is_empty())?;
                return Some(percent_decode(pool));
            }
        }
        None
    }

    /// Errors that say something.
    pub fn errors(&self) -> impl Iterator<Item = &NodeError> {
        self.errors.iter().filter(|e| e.is_set())
    }
}

/// `%XX` sequences decoded (pool ids are plain, but a URL may still escape them); anything that
/// is not valid stays as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_id_comes_from_the_url() {
        let node = ComputeNode {
            url: Some("https://acct.westeurope.batch.azure.com/pools/my%20pool/nodes/tvm-1".into()),
            ..ComputeNode::default()
        };
        assert_eq!(node.pool_id().as_deref(), Some("my pool"));
        let node = ComputeNode {
            url: Some("https://acct.westeurope.batch.azure.com/pools/".into()),
            ..ComputeNode::default()
        };
        assert_eq!(node.pool_id(), None);
        assert_eq!(ComputeNode::default().pool_id(), None);
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("a%zz"), "a%zz");
    }
}
