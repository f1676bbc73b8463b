//! Emulator controls that end a pool's or a node's trouble, so a test or the demo can show what
//! follows (a resolved message): a pool whose resize failed grows to its target, an autoscale
//! formula evaluates again, a node recovers, a pool is deleted. Batch has no such operations;
//! these stand for what the service or an operator does outside the API.

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::pools::{fill_node, now_text};
use super::{State, key};
use crate::clock;
use crate::scenario::NodeState;

impl State {
    /// The node, unless it is unknown or removed.
    fn live_node_mut(&mut self, pool_id: &str, node_id: &str) -> Option<&mut super::Node> {
        self.nodes
            .get_mut(&(key(pool_id), key(node_id)))
            .filter(|node| node.state != NodeState::Removed)
    }

    /// The pool's resize completes: idle nodes are added until it holds its target of dedicated
    /// and low-priority nodes, its `resizeErrors` are gone and its allocation state is `steady`.
    /// False when the pool is unknown.
    pub(crate) fn finish_pool_resize(&mut self, pool_id: &str, now: OffsetDateTime) -> bool {
        let pool_key = key(pool_id);
        let Some(pool) = self.pools.get(&pool_key) else {
            return false;
        };
        let pool_json = pool.json.clone();
        let target = |field: &str| pool_json.get(field).and_then(Value::as_u64).unwrap_or(0);
        let wanted = (
            target("targetDedicatedNodes"),
            target("targetLowPriorityNodes"),
        );
        let (mut dedicated, mut low) = self.live_counts(&pool_key);
        let mut index = 0usize;
        while dedicated < wanted.0 || low < wanted.1 {
            let node_id = format!("tvm-grown-{index:04}");
            index += 1;
            if self.nodes.contains_key(&(pool_key.clone(), key(&node_id))) {
                continue;
            }
            let is_dedicated = dedicated < wanted.0;
            let node = self.node_entry(pool_id, &node_id);
            node.json.insert("state".into(), json!("idle"));
            node.json
                .insert("stateTransitionTime".into(), now_text(now));
            node.json.insert("isDedicated".into(), json!(is_dedicated));
            fill_node(node, Some(&pool_json), index, now);
            if is_dedicated {
                dedicated += 1;
            } else {
                low += 1;
            }
        }
        let etag = self.etags.next(now);
        let Some(pool) = self.pools.get_mut(&pool_key) else {
            return false;
        };
        pool.json.remove("resizeErrors");
        pool.json.insert("allocationState".into(), json!("steady"));
        pool.json
            .insert("allocationStateTransitionTime".into(), now_text(now));
        pool.json
            .insert("currentDedicatedNodes".into(), json!(dedicated));
        pool.json
            .insert("currentLowPriorityNodes".into(), json!(low));
        pool.json.insert("lastModified".into(), now_text(now));
        pool.json.insert("eTag".into(), Value::String(etag));
        true
    }

    /// The pool's autoscale formula evaluates without error now (`autoScaleRun` has a fresh
    /// timestamp, the targets as its results, no `error`). False when the pool is unknown.
    pub(crate) fn succeed_autoscale(&mut self, pool_id: &str, now: OffsetDateTime) -> bool {
        let Some(pool) = self.pools.get_mut(&key(pool_id)) else {
            return false;
        };
        let target = |field: &str| pool.json.get(field).and_then(Value::as_u64).unwrap_or(0);
        let results = format!(
            "$TargetDedicatedNodes={};$TargetLowPriorityNodes={};$NodeDeallocationOption=requeue",
            target("targetDedicatedNodes"),
            target("targetLowPriorityNodes")
        );
        pool.json.insert(
            "autoScaleRun".into(),
            json!({"timestamp": clock::format_time(now), "results": results}),
        );
        true
    }

    /// The node recovers: `idle`, no errors, its start task (if the pool has one) succeeded.
    /// Its files stay. False when the node is unknown or removed.
    pub(crate) fn recover_node(
        &mut self,
        pool_id: &str,
        node_id: &str,
        now: OffsetDateTime,
    ) -> bool {
        let Some(node) = self.live_node_mut(pool_id, node_id) else {
            return false;
        };
        node.json.insert("state".into(), json!("idle"));
        node.json
            .insert("stateTransitionTime".into(), now_text(now));
        node.json.insert("schedulingState".into(), json!("enabled"));
        node.json.remove("errors");
        node.json.insert("lastBootTime".into(), now_text(now));
        if node.json.contains_key("startTask") {
            node.json.insert(
                "startTaskInfo".into(),
                json!({"state": "completed", "startTime": clock::format_time(now),
                       "endTime": clock::format_time(now), "exitCode": 0, "retryCount": 0,
                       "result": "success"}),
            );
        }
        node.state = NodeState::Available;
        node.pending = None;
        true
    }

    /// The node breaks (again): `unusable` from `now`, with one error `code`. False when the
    /// node is unknown or removed.
    pub(crate) fn make_node_unusable(
        &mut self,
        pool_id: &str,
        node_id: &str,
        code: &str,
        now: OffsetDateTime,
    ) -> bool {
        let Some(node) = self.live_node_mut(pool_id, node_id) else {
            return false;
        };
        node.json.insert("state".into(), json!("unusable"));
        node.json
            .insert("stateTransitionTime".into(), now_text(now));
        node.json.insert(
            "errors".into(),
            json!([{"code": code, "message": format!("The node became unusable: {code}.")}]),
        );
        true
    }

    /// The pool's deletion completes: it and its nodes are gone (404 `PoolNotFound`). False
    /// when the pool is unknown.
    pub(crate) fn delete_pool(&mut self, pool_id: &str) -> bool {
        let pool_key = key(pool_id);
        if self.pools.remove(&pool_key).is_none() {
            return false;
        }
        self.nodes.retain(|(pool, _), _| *pool != pool_key);
        true
    }
}
