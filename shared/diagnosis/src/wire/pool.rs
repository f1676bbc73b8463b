//! Pools (`docs/batch-facts.md`): the REST `BatchPool` body (current and pre-2017 shapes), pool
//! node counts, and the pool diagnostic-log events triage reads (`PoolResizeCompleteEvent`,
//! `PoolAutoScaleEvent`).
//!
//! Lenient like the rest of [`crate::wire`]: every field is optional or defaulted, unknown fields
//! are ignored, enums are case-insensitive and keep unknown values.

use serde::de::{Deserializer, IgnoredAny};
use serde::{Deserialize, Serialize};

use super::lenient::{IsoDuration, Timestamp, int, non_empty_string, one_or_many, wire_enum};
use super::rest::FailureInfo;

wire_enum! {
    /// `BatchPoolState`. There is no "delete failed": a stuck delete stays `deleting`.
    PoolState { Active => "active", Deleting => "deleting", Upgrading => "upgrading" }
}

wire_enum! {
    /// `AllocationState` of a pool.
    AllocationState { Steady => "steady", Resizing => "resizing", Stopping => "stopping" }
}

/// A pool error: an entry of `resizeErrors`, or `autoScaleRun.error`: the shape of a
/// [`FailureInfo`], its details spelled `values`. The cause of an `AllocationFailed` is in them
/// (`Reason`, `Provider Error Json`, `Provider Error Json Truncated`).
pub type ResizeError = FailureInfo;

/// `autoScaleRun.error`: the same shape as a resize error.
pub type AutoScaleRunError = FailureInfo;

/// `autoScaleRun` of a pool: the last evaluation of its autoscale formula.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AutoScaleRun {
    /// When the formula was last evaluated.
    pub timestamp: Option<Timestamp>,
    /// The final variable values, `$TargetDedicatedNodes=2;…`.
    pub results: Option<String>,
    /// Why the evaluation failed, if it did.
    pub error: Option<AutoScaleRunError>,
}

/// `startTask` of a pool or node: only what diagnosis reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct StartTaskSettings {
    /// Whether the node waits for the start task before taking tasks (default true). With
    /// `false`, a failed start task leaves the node `idle`.
    pub wait_for_success: Option<bool>,
    /// Retries allowed; -1 is unlimited.
    #[serde(deserialize_with = "int::opt_i32")]
    pub max_task_retry_count: Option<i32>,
}

/// A pool (`BatchPool`), from Get Pool or List Pools. Before the 2017 API versions the node
/// counts were `currentDedicated`/`targetDedicated` and the error a single `resizeError`; both
/// are read into the current fields.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct BatchPool {
    /// Pool id.
    pub id: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// URL of the pool; names the account.
    pub url: Option<String>,
    /// ETag.
    pub e_tag: Option<String>,
    /// When the pool was created.
    pub creation_time: Option<Timestamp>,
    /// `active` or `deleting`.
    pub state: Option<PoolState>,
    /// When `state` last changed: how long a delete has been going on.
    pub state_transition_time: Option<Timestamp>,
    /// `steady`, `resizing` or `stopping`.
    pub allocation_state: Option<AllocationState>,
    /// When `allocationState` last changed.
    pub allocation_state_transition_time: Option<Timestamp>,
    /// The VM size of every node.
    pub vm_size: Option<String>,
    /// How long a manual resize may take (default 15 minutes).
    pub resize_timeout: Option<IsoDuration>,
    /// Dedicated nodes now.
    #[serde(alias = "currentDedicated", deserialize_with = "int::opt_i32")]
    pub current_dedicated_nodes: Option<i32>,
    /// Dedicated nodes wanted.
    #[serde(alias = "targetDedicated", deserialize_with = "int::opt_i32")]
    pub target_dedicated_nodes: Option<i32>,
    /// Spot/low-priority nodes now, preempted ones included.
    #[serde(deserialize_with = "int::opt_i32")]
    pub current_low_priority_nodes: Option<i32>,
    /// Spot/low-priority nodes wanted.
    #[serde(deserialize_with = "int::opt_i32")]
    pub target_low_priority_nodes: Option<i32>,
    /// Whether the size follows an autoscale formula.
    pub enable_auto_scale: Option<bool>,
    /// Whether an autoscale formula is set. The formula itself is the user's text and is not
    /// kept.
    #[serde(rename = "autoScaleFormula", deserialize_with = "present")]
    pub has_auto_scale_formula: bool,
    /// How often the formula is evaluated.
    pub auto_scale_evaluation_interval: Option<IsoDuration>,
    /// Errors of the last resize; set only when it had errors and the pool is `steady`. The
    /// pre-2017 singular `resizeError` object is read here too.
    #[serde(alias = "resizeError", deserialize_with = "one_or_many")]
    pub resize_errors: Vec<ResizeError>,
    /// The last autoscale evaluation; present only with `enableAutoScale`.
    pub auto_scale_run: Option<AutoScaleRun>,
    /// The start task every node runs.
    pub start_task: Option<StartTaskSettings>,
}

impl BatchPool {
    /// Nodes now, dedicated and low-priority, when Batch said either.
    pub fn current_nodes(&self) -> Option<i64> {
        sum(
            self.current_dedicated_nodes,
            self.current_low_priority_nodes,
        )
    }

    /// Nodes wanted, dedicated and low-priority, when Batch said either.
    pub fn target_nodes(&self) -> Option<i64> {
        sum(self.target_dedicated_nodes, self.target_low_priority_nodes)
    }

    /// Resize errors that say something.
    pub fn resize_errors(&self) -> impl Iterator<Item = &ResizeError> {
        self.resize_errors.iter().filter(|e| e.is_set())
    }

    /// The autoscale error, when the last evaluation failed.
    pub fn auto_scale_error(&self) -> Option<&AutoScaleRunError> {
        self.auto_scale_run
            .as_ref()
            .and_then(|r| r.error.as_ref())
            .filter(|e| e.is_set())
    }
}

fn sum(a: Option<i32>, b: Option<i32>) -> Option<i64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(i64::from(a.unwrap_or(0)) + i64::from(b.unwrap_or(0))),
    }
}

/// `true` for any value but `null`, `""` and absence: a field whose presence is what counts.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Presence {
        Text(String),
        Other(IgnoredAny),
    }
    Ok(match Option::<Presence>::deserialize(d)? {
        None => false,
        Some(Presence::Text(text)) => !text.trim().is_empty(),
        Some(Presence::Other(_)) => true,
    })
}

/// Node counts by state, for the dedicated or the low-priority nodes of one pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NodeCounts {
    /// `creating`.
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub creating: i32,
    /// `idle`.
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub idle: i32,
    /// `offline`.
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub offline: i32,
    /// `preempted`.
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub preempted: i32,
    /// `rebooting`.
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub rebooting: i32,
    /// `reimaging`.
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub reimaging: i32,
    /// `running`.
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub running: i32,
    /// `starting`.
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub starting: i32,
    /// `starttaskfailed`.
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub start_task_failed: i32,
    /// `leavingpool`.
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub leaving_pool: i32,
    /// `unknown` (Batch lost contact).
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub unknown: i32,
    /// `unusable`.
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub unusable: i32,
    /// `waitingforstarttask`.
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub waiting_for_start_task: i32,
    /// `deallocated`.
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub deallocated: i32,
    /// `deallocating`.
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub deallocating: i32,
    /// `upgradingos`.
    #[serde(
        rename = "upgradingOS",
        alias = "upgradingOs",
        deserialize_with = "int::i32_or_zero"
    )]
    pub upgrading_os: i32,
    /// All nodes.
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub total: i32,
}

impl NodeCounts {
    /// Nodes in a state worth a closer look: `unusable` or `starttaskfailed`. (A node whose
    /// start task failed without `waitForSuccess` is `idle` and not counted: see
    /// [`PoolNodeCounts::worth_listing`].)
    pub fn in_trouble(&self) -> i64 {
        i64::from(self.unusable.max(0)) + i64::from(self.start_task_failed.max(0))
    }
}

/// One item of List Pool Node Counts (`/nodecounts`). The counts may lag behind the nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PoolNodeCounts {
    /// The pool.
    pub pool_id: Option<String>,
    /// Dedicated nodes.
    pub dedicated: Option<NodeCounts>,
    /// Spot/low-priority nodes.
    pub low_priority: Option<NodeCounts>,
}

impl PoolNodeCounts {
    /// Nodes `unusable` or `starttaskfailed`, dedicated and low-priority.
    pub fn in_trouble(&self) -> i64 {
        [self.dedicated, self.low_priority]
            .iter()
            .flatten()
            .map(NodeCounts::in_trouble)
            .sum()
    }

    /// Whether listing the pool's nodes may find something: nodes in trouble, or any node at
    /// all when `start_task_may_not_wait` (a start task without `waitForSuccess` fails on an
    /// `idle` node, which counts do not tell apart).
    pub fn worth_listing(&self, start_task_may_not_wait: bool) -> bool {
        let total: i64 = [self.dedicated, self.low_priority]
            .iter()
            .flatten()
            .map(|c| i64::from(c.total.max(0)))
            .sum();
        self.in_trouble() > 0 || (start_task_may_not_wait && total > 0)
    }
}

/// The pool events triage reads from diagnostic logs. Other pool events are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolEventKind {
    /// `PoolResizeCompleteEvent`: a resize ended, with `resultCode`.
    ResizeComplete,
    /// `PoolAutoScaleEvent`: the autoscale formula was evaluated, maybe with an error.
    AutoScale,
}

impl PoolEventKind {
    /// Maps an `operationName`, ignoring case.
    pub fn from_operation_name(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("PoolResizeCompleteEvent") {
            Some(Self::ResizeComplete)
        } else if name.eq_ignore_ascii_case("PoolAutoScaleEvent") {
            Some(Self::AutoScale)
        } else {
            None
        }
    }

    /// The `operationName` Batch uses.
    pub fn operation_name(self) -> &'static str {
        match self {
            Self::ResizeComplete => "PoolResizeCompleteEvent",
            Self::AutoScale => "PoolAutoScaleEvent",
        }
    }
}

/// Body of `PoolResizeCompleteEvent` or `PoolAutoScaleEvent` (the fields of the other kind stay
/// absent). Times may be `2019-08-22 20:50:59.522`. The 2017 resize shape
/// (`currentDedicated`, `targetDedicated`, `result`, `resizeError`) is read too.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PoolEventBody {
    /// The pool.
    pub id: Option<String>,
    /// Resize: what happens to tasks of removed nodes (`invalid` when growing).
    pub node_deallocation_option: Option<String>,
    /// Resize: dedicated nodes at the end.
    #[serde(alias = "currentDedicated", deserialize_with = "int::opt_i32")]
    pub current_dedicated_nodes: Option<i32>,
    /// Resize: dedicated nodes wanted.
    #[serde(alias = "targetDedicated", deserialize_with = "int::opt_i32")]
    pub target_dedicated_nodes: Option<i32>,
    /// Resize: low-priority nodes at the end.
    #[serde(deserialize_with = "int::opt_i32")]
    pub current_low_priority_nodes: Option<i32>,
    /// Resize: low-priority nodes wanted.
    #[serde(deserialize_with = "int::opt_i32")]
    pub target_low_priority_nodes: Option<i32>,
    /// Whether the pool autoscales.
    pub enable_auto_scale: Option<bool>,
    /// Whether it is an auto pool.
    pub is_auto_pool: Option<bool>,
    /// Resize: when it started.
    pub start_time: Option<Timestamp>,
    /// Resize: when it ended.
    pub end_time: Option<Timestamp>,
    /// Resize: `Success`, or a resize error code.
    #[serde(alias = "result", deserialize_with = "non_empty_string")]
    pub result_code: Option<String>,
    /// Resize: Batch's text.
    #[serde(deserialize_with = "non_empty_string")]
    pub result_message: Option<String>,
    /// Resize, 2017 shape: the error object.
    pub resize_error: Option<ResizeError>,
    /// Autoscale: when the formula was evaluated.
    pub timestamp: Option<Timestamp>,
    /// Autoscale: whether the event carries the formula (the user's text is not kept).
    #[serde(rename = "formula", deserialize_with = "present")]
    pub has_formula: bool,
    /// Autoscale: the final variable values.
    pub results: Option<String>,
    /// Autoscale: why the evaluation failed.
    pub error: Option<AutoScaleRunError>,
}

impl PoolEventBody {
    /// The resize's error, when its `resultCode` is not `Success`: the 2017 `resizeError`
    /// object, or one built from `resultCode` and `resultMessage`.
    pub fn resize_failure(&self) -> Option<ResizeError> {
        if let Some(error) = self.resize_error.as_ref().filter(|e| e.is_set()) {
            return Some(error.clone());
        }
        let code = self.result_code.as_deref()?;
        if code.eq_ignore_ascii_case("success") || code.eq_ignore_ascii_case("succeeded") {
            return None;
        }
        Some(ResizeError {
            code: Some(code.to_owned()),
            message: self.result_message.clone(),
            ..ResizeError::default()
        })
    }

    /// The autoscale error, when the evaluation failed.
    pub fn auto_scale_failure(&self) -> Option<&AutoScaleRunError> {
        self.error.as_ref().filter(|e| e.is_set())
    }
}
