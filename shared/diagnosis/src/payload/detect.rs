//! Which payload kind a fragment is, told from its keys without building it.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::PayloadKind;
use crate::wire::PoolEventKind;

/// The kinds [`detect`] tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    SpecExample,
    Records,
    Record,
    CloudEvent,
    EventGridEvent,
    List(Option<Element>),
    Array,
    /// A document that is one item, with no envelope around it.
    Single(Single),
}

/// The shapes that are one item each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Single {
    TaskCounts,
    BatchError,
    SpecialTaskEvent,
    TaskEvent,
    TaskReference,
    PoolEvent(PoolEventKind),
    /// A pool event body triage does not read (resize start): skipped, not refused.
    SkippedPoolEvent(&'static str),
    Element(Element),
}

/// What a list page holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Element {
    Task,
    Job,
    PrepReleaseStatus,
    File,
    Pool,
    Node,
    PoolNodeCounts,
}

/// Decides what a fragment is from its keys, without building it: values stay raw, and only the
/// first element of a list is looked into.
pub(super) fn detect(raw: &RawValue) -> Result<Shape, String> {
    let text = raw.get().trim_start();
    if text.starts_with('[') {
        return Ok(Shape::Array);
    }
    if !text.starts_with('{') {
        let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        return Err(format!(
            "expected a JSON object or array, found {}",
            json_type(&value)
        ));
    }
    let map: BTreeMap<String, &RawValue> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let has = |key: &str| map.contains_key(key);
    let is_array = |key: &str| {
        map.get(key)
            .is_some_and(|v| v.get().trim_start().starts_with('['))
    };
    if has("responses") && (has("operationId") || has("parameters")) {
        return Ok(Shape::SpecExample);
    }
    if is_array("records") {
        return Ok(Shape::Records);
    }
    if has("operationName") && (has("properties") || has("category") || has("resourceId")) {
        return Ok(Shape::Record);
    }
    if has("specversion") {
        return Ok(Shape::CloudEvent);
    }
    if has("eventType") && (has("data") || has("subject")) {
        return Ok(Shape::EventGridEvent);
    }
    if let Some(list) = map.get("value").filter(|_| is_array("value")) {
        return Ok(Shape::List(match first_element(list)? {
            None => None,
            Some(first) => Some(
                first
                    .as_object()
                    .and_then(element_of)
                    .ok_or_else(|| format!("a list whose items are not {LIST_ITEMS}"))?,
            ),
        }));
    }
    if has("taskCounts") || has("taskSlotCounts") {
        return Ok(Shape::Single(Single::TaskCounts));
    }
    if let Some(single) = pool_event_body(&has) {
        return Ok(Shape::Single(single));
    }
    if has("code") && has("message") && !has("id") {
        return Ok(Shape::Single(Single::BatchError));
    }
    if has("taskName") && has("taskType") {
        return Ok(Shape::Single(Single::SpecialTaskEvent));
    }
    if has("jobId") && (has("id") || has("taskType"))
        || (has("schedulingError") && !has("executionInfo") && !has("id"))
    {
        return Ok(Shape::Single(Single::TaskEvent));
    }
    if has("jobId")
        && map
            .keys()
            .all(|k| matches!(k.as_str(), "jobId" | "taskId" | "accountUrl"))
    {
        return Ok(Shape::Single(Single::TaskReference));
    }
    // A single object: small, so building it to look at nested keys costs nothing.
    let object: Map<String, Value> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if let Some(element) = element_of(&object) {
        return Ok(Shape::Single(Single::Element(element)));
    }
    let keys: Vec<&str> = map.keys().take(6).map(String::as_str).collect();
    Err(if keys.is_empty() {
        "an empty object".to_owned()
    } else {
        format!("an object with keys {}", keys.join(", "))
    })
}

/// What list pages may hold, for messages.
pub(super) const LIST_ITEMS: &str =
    "tasks, jobs, prep/release statuses, files, pools, nodes or pool node counts";

/// A bare pool event body, told from the keys only those bodies have: `resultCode` (resize
/// complete; `result` with `resizeError` in the 2017 shape), `nodeDeallocationOption` alone
/// (resize start), `formula` (autoscale).
fn pool_event_body(has: &dyn Fn(&str) -> bool) -> Option<Single> {
    if has("url") || has("allocationState") {
        return None;
    }
    if has("resultCode") || (has("result") && has("resizeError")) {
        return Some(Single::PoolEvent(PoolEventKind::ResizeComplete));
    }
    if has("nodeDeallocationOption") && has("id") {
        return Some(Single::SkippedPoolEvent("PoolResizeStartEvent"));
    }
    if has("formula") && (has("results") || has("error") || has("timestamp")) {
        return Some(Single::PoolEvent(PoolEventKind::AutoScale));
    }
    None
}

/// The first element of a JSON array, built; the rest is skipped without being built.
fn first_element(list: &RawValue) -> Result<Option<Value>, String> {
    struct First;
    impl<'de> Visitor<'de> for First {
        type Value = Option<Value>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let first = seq.next_element::<Value>()?;
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(first)
        }
    }
    let mut de = serde_json::Deserializer::from_str(list.get());
    serde::Deserializer::deserialize_seq(&mut de, First).map_err(|e| e.to_string())
}

// Keys that only one kind of object has, checked in `element_of` in this order.
const TASK_KEYS: &[&str] = &[
    "commandLine",
    "exitConditions",
    "nodeInfo",
    "requiredSlots",
    "multiInstanceSettings",
    "resourceFiles",
    "outputFiles",
    "dependsOn",
    "affinityInfo",
];
const JOB_KEYS: &[&str] = &[
    "poolInfo",
    "onTaskFailure",
    "onAllTasksComplete",
    "jobPreparationTask",
    "jobReleaseTask",
    "jobManagerTask",
    "priority",
    "usesTaskDependencies",
    "maxParallelTasks",
];
// Nodes before pools: both have `vmSize` and `startTask`, only nodes have these.
const NODE_KEYS: &[&str] = &[
    "startTaskInfo",
    "nodeAgentInfo",
    "isDedicated",
    "schedulingState",
    "lastBootTime",
    "allocationTime",
    "totalTasksRun",
    "totalTasksSucceeded",
    "runningTasksCount",
    "runningTaskSlotsCount",
    "recentTasks",
    "ipAddress",
    "affinityId",
    "virtualMachineInfo",
    "endpointConfiguration",
    "errors",
];
const POOL_KEYS: &[&str] = &[
    "allocationState",
    "allocationStateTransitionTime",
    "resizeErrors",
    "resizeError",
    "resizeTimeout",
    "autoScaleRun",
    "autoScaleFormula",
    "enableAutoScale",
    "currentDedicatedNodes",
    "targetDedicatedNodes",
    "currentLowPriorityNodes",
    "targetLowPriorityNodes",
    "currentDedicated",
    "targetDedicated",
    "taskSlotsPerNode",
    "maxTasksPerNode",
    "enableInterNodeCommunication",
    "cloudServiceConfiguration",
    "virtualMachineConfiguration",
];

pub(super) fn element_of(map: &Map<String, Value>) -> Option<Element> {
    let has = |key: &str| map.contains_key(key);
    if has("jobPreparationTaskExecutionInfo") || has("jobReleaseTaskExecutionInfo") {
        return Some(Element::PrepReleaseStatus);
    }
    if has("isDirectory") || (has("name") && has("properties") && !has("id")) {
        return Some(Element::File);
    }
    if has("poolId") && (has("dedicated") || has("lowPriority")) {
        return Some(Element::PoolNodeCounts);
    }
    if let Some(url) = map.get("url").and_then(Value::as_str) {
        let path = url.split(['?', '#']).next().unwrap_or_default();
        if path.contains("/pools/") && !path.contains("/files/") {
            return Some(if path.contains("/nodes/") {
                Element::Node
            } else {
                Element::Pool
            });
        }
        if path.contains("/tasks/") && !path.contains("/files/") {
            return Some(Element::Task);
        }
        if path.contains("/jobs/") && !path.contains("/tasks/") {
            return Some(Element::Job);
        }
    }
    if TASK_KEYS.iter().any(|k| has(k)) {
        return Some(Element::Task);
    }
    if JOB_KEYS.iter().any(|k| has(k)) {
        return Some(Element::Job);
    }
    let node_only_state = map.get("state").and_then(Value::as_str).is_some_and(|s| {
        !matches!(
            crate::wire::NodeState::from_wire(s),
            crate::wire::NodeState::Running | crate::wire::NodeState::Other(_)
        )
    });
    if NODE_KEYS.iter().any(|k| has(k)) || node_only_state {
        return Some(Element::Node);
    }
    if POOL_KEYS.iter().any(|k| has(k)) {
        return Some(Element::Pool);
    }
    let exec = map.get("executionInfo").and_then(Value::as_object)?;
    if exec.contains_key("retryCount")
        || exec.contains_key("exitCode")
        || exec.contains_key("failureInfo")
    {
        return Some(Element::Task);
    }
    if exec.contains_key("terminateReason")
        || exec.contains_key("poolId")
        || exec.contains_key("schedulingError")
    {
        return Some(Element::Job);
    }
    None
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What a payload that is one `element` on its own is.
pub(super) fn element_kind(element: Element) -> PayloadKind {
    match element {
        Element::Task => PayloadKind::Task,
        Element::Job => PayloadKind::Job,
        Element::PrepReleaseStatus => PayloadKind::PrepReleaseStatus,
        // One file entry and a list of them read alike.
        Element::File => PayloadKind::FileList,
        Element::Pool => PayloadKind::Pool,
        Element::Node => PayloadKind::Node,
        Element::PoolNodeCounts => PayloadKind::PoolNodeCounts,
    }
}

pub(super) fn list_kind(element: Element) -> PayloadKind {
    match element {
        Element::Task => PayloadKind::TaskList,
        Element::Job => PayloadKind::JobList,
        Element::PrepReleaseStatus => PayloadKind::PrepReleaseStatusList,
        Element::File => PayloadKind::FileList,
        Element::Pool => PayloadKind::PoolList,
        Element::Node => PayloadKind::NodeList,
        Element::PoolNodeCounts => PayloadKind::PoolNodeCountsList,
    }
}
