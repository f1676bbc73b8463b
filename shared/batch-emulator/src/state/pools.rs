//! Pools and compute nodes: their wire JSON filled in, pool node counts, and the node actions
//! (remove, reimage) with the intermediate states a client can watch: a removed node is
//! `leavingpool` while its pool is `resizing`, a reimaged node is `reimaging`. Like job
//! transitions, they complete after `afterReads` reads of the pool or node (default 1), or
//! `afterMillis`, or at [`State::settle`].

use serde_json::{Map, Value, json};
use time::{Duration, OffsetDateTime};

use super::json_map::{default_field, id_map, str_at};
use super::{Node, State, end_task, key, requeue_task};
use crate::clock;
use crate::error::ApiError;
use crate::files::NodeFiles;
use crate::scenario::{NodeGenerator, NodeState, TransitionConfig};

/// Node agent version the emulator reports (a real release of the Batch node agent).
const AGENT_VERSION: &str = "1.11.16";

/// Largest `nodeList` of one Remove Nodes request (the service's limit).
pub(crate) const MAX_REMOVE_NODES: usize = 100;

/// A pool.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    /// The pool JSON without `url`.
    pub(crate) json: Map<String, Value>,
    /// A node removal in progress (the pool is `resizing` meanwhile).
    removing: Option<Removal>,
}

#[derive(Debug, Clone)]
struct Removal {
    /// Lower-cased ids of the nodes leaving.
    nodes: Vec<String>,
    countdown: Countdown,
}

/// When an intermediate state ends: after `reads_left` more reads, or at `due`.
#[derive(Debug, Clone)]
pub(super) struct Countdown {
    reads_left: u32,
    due: Option<OffsetDateTime>,
}

impl Countdown {
    fn start(transitions: &TransitionConfig, now: OffsetDateTime) -> Self {
        let reads_left = match (transitions.after_reads, transitions.after_millis) {
            (Some(reads), _) => reads,
            (None, Some(_)) => u32::MAX,
            (None, None) => 1,
        };
        let due = transitions
            .after_millis
            .map(|ms| now + Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX / 2)));
        Self { reads_left, due }
    }

    /// Whether the intermediate state is over; `read` counts one read of it.
    fn advance(&mut self, now: OffsetDateTime, read: bool) -> bool {
        let done = self.due.is_some_and(|due| now >= due) || (read && self.reads_left == 0);
        if !done && read {
            self.reads_left = self.reads_left.saturating_sub(1);
        }
        done
    }
}

/// Which node action was carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum NodeActionKind {
    /// `POST /pools/{pool}/removenodes`.
    Remove,
    /// `POST /pools/{pool}/nodes/{node}/reimage`.
    Reimage,
}

/// A node action the emulator carried out, so tests can assert what was done.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAction {
    /// The pool, as the request named it.
    pub pool_id: String,
    /// The node, as the request named it.
    pub node_id: String,
    /// Remove or reimage.
    pub kind: NodeActionKind,
    /// `nodeDeallocationOption` / `nodeReimageOption`, lower-cased (`requeue` by default).
    pub option: String,
}

/// An `uploadbatchservicelogs` request the emulator answered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentLogUpload {
    /// The pool.
    pub pool_id: String,
    /// The node.
    pub node_id: String,
    /// The `virtualDirectoryName` answered.
    pub virtual_directory_name: String,
    /// The `numberOfFilesUploaded` answered.
    pub number_of_files_uploaded: u32,
    /// Where the files go: the container URL **without its query** (the SAS never leaves the
    /// request), or the `file://` URL.
    pub destination: String,
    /// `identityReference.resourceId`, when given.
    pub identity_reference: Option<String>,
}

/// What a node's running tasks become when it is removed or reimaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deallocation {
    /// Back to `active`, `requeueCount` + 1.
    Requeue,
    /// Completed with `TaskEnded`.
    Terminate,
    /// Left to finish (`taskcompletion`, `retaineddata`).
    Wait,
}

impl Deallocation {
    /// Parses `nodeDeallocationOption` / `nodeReimageOption` (case-insensitive).
    pub(crate) fn parse(text: &str) -> Option<(Self, String)> {
        let lower = text.to_ascii_lowercase();
        let option = match lower.as_str() {
            "requeue" => Self::Requeue,
            "terminate" => Self::Terminate,
            "taskcompletion" | "retaineddata" => Self::Wait,
            _ => return None,
        };
        Some((option, lower))
    }
}

pub(super) fn now_text(now: OffsetDateTime) -> Value {
    Value::String(clock::format_time(now))
}

/// Moves a node to `state` (nodes have no ETag).
fn set_node_state(json: &mut Map<String, Value>, state: &str, now: OffsetDateTime) {
    json.insert("state".into(), Value::String(state.to_owned()));
    json.insert("stateTransitionTime".into(), now_text(now));
}

fn lower_state(json: &Map<String, Value>) -> String {
    str_at(json, &["state"])
        .unwrap_or("idle")
        .to_ascii_lowercase()
}

fn is_dedicated(node: &Node) -> bool {
    node.json
        .get("isDedicated")
        .and_then(Value::as_bool)
        .unwrap_or(true)
}

impl State {
    /// The pool, created (with only its id) when the scenario did not declare it.
    pub(super) fn ensure_pool(&mut self, id: &str) -> &mut Pool {
        self.pools.entry(key(id)).or_insert_with(|| Pool {
            json: id_map(id),
            removing: None,
        })
    }

    /// Adds a generator's nodes to a pool: `count` copies of its template, every
    /// `unusable_every`-th one `unusable` with `DiskFull`.
    pub(super) fn generate_nodes(
        &mut self,
        pool_id: &str,
        generator: &NodeGenerator,
        now: OffsetDateTime,
    ) {
        let width = generator.count.saturating_sub(1).to_string().len().max(5);
        let template = super::json_map::resolve_map(generator.node.clone(), now);
        for index in 0..generator.count {
            let node_id = format!("{}{index:0width$}", generator.id_prefix);
            let mut json = template.clone();
            json.insert("id".into(), Value::String(node_id.clone()));
            if generator.unusable_every.is_some_and(|n| index % n == n - 1) {
                json.insert("state".into(), json!("unusable"));
                json.insert(
                    "errors".into(),
                    json!([{"code": "DiskFull", "message": "There is not enough space on the disk of the node.",
                            "errorDetails": [{"name": "Message", "value": "The temporary disk is full"}]}]),
                );
            }
            self.node_entry(pool_id, &node_id).json = json;
        }
    }

    /// Fills in what the scenario left out of pools and nodes, once every node is known.
    pub(super) fn fill_pool_and_node_defaults(&mut self, now: OffsetDateTime) {
        let created = now_text(now - Duration::days(1));
        for pool in self.pools.values_mut() {
            let json = &mut pool.json;
            default_field(json, "creationTime", created.clone());
            default_field(json, "state", json!("active"));
            default_field(json, "stateTransitionTime", created.clone());
            default_field(json, "allocationState", json!("steady"));
            default_field(json, "allocationStateTransitionTime", created.clone());
            default_field(json, "lastModified", created.clone());
            default_field(json, "eTag", Value::String(self.etags.next(now)));
            default_field(json, "vmSize", json!("standard_d2s_v3"));
            default_field(json, "resizeTimeout", json!("PT15M"));
            default_field(json, "enableAutoScale", json!(false));
            default_field(json, "enableInterNodeCommunication", json!(false));
            default_field(json, "taskSlotsPerNode", json!(1));
            default_field(
                json,
                "taskSchedulingPolicy",
                json!({"nodeFillType": "spread"}),
            );
            default_field(
                json,
                "virtualMachineConfiguration",
                json!({
                    "imageReference": {"publisher": "Canonical", "offer": "0001-com-ubuntu-server-focal",
                                       "sku": "20_04-lts", "version": "latest"},
                    "nodeAgentSKUId": "batch.node.ubuntu 20.04"
                }),
            );
        }
        for (index, ((pool_key, _), node)) in self.nodes.iter_mut().enumerate() {
            fill_node(node, self.pools.get(pool_key).map(|p| &p.json), index, now);
        }
        let keys: Vec<String> = self.pools.keys().cloned().collect();
        for pool_key in keys {
            let (dedicated, low) = self.live_counts(&pool_key);
            if let Some(pool) = self.pools.get_mut(&pool_key) {
                default_field(&mut pool.json, "currentDedicatedNodes", json!(dedicated));
                default_field(&mut pool.json, "currentLowPriorityNodes", json!(low));
                let current = pool.json["currentDedicatedNodes"].clone();
                default_field(&mut pool.json, "targetDedicatedNodes", current);
                let current = pool.json["currentLowPriorityNodes"].clone();
                default_field(&mut pool.json, "targetLowPriorityNodes", current);
            }
        }
    }

    /// Dedicated and Spot/low-priority nodes still in the pool.
    pub(super) fn live_counts(&self, pool_key: &str) -> (u64, u64) {
        let mut counts = (0, 0);
        for node in self.pool_nodes(pool_key) {
            if is_dedicated(node.1) {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
        counts
    }

    /// The nodes still in a pool (not removed), by lower-cased id.
    pub(crate) fn pool_nodes<'a>(
        &'a self,
        pool_key: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Node)> + 'a {
        self.nodes
            .range((pool_key.to_owned(), String::new())..)
            .take_while(move |((pool, _), _)| pool == pool_key)
            .filter(|(_, node)| node.state != NodeState::Removed)
            .map(|((_, node_key), node)| (node_key.as_str(), node))
    }

    /// Completes due removals and reimages; `read_pool` counts a read of that pool and its
    /// nodes.
    pub(crate) fn tick_pools(&mut self, now: OffsetDateTime, read_pool: Option<&str>) {
        let read_key = read_pool.map(key);
        let keys: Vec<String> = self.pools.keys().cloned().collect();
        for pool_key in keys {
            let read = read_key.as_deref() == Some(pool_key.as_str());
            self.advance_pool(&pool_key, now, read);
        }
        for ((pool_key, _), node) in &mut self.nodes {
            let read = read_key.as_deref() == Some(pool_key.as_str());
            if node.pending.as_mut().is_some_and(|c| c.advance(now, read)) {
                node.pending = None;
                finish_reimage(node, now);
            }
        }
    }

    fn advance_pool(&mut self, pool_key: &str, now: OffsetDateTime, read: bool) {
        let Some(pool) = self.pools.get_mut(pool_key) else {
            return;
        };
        let done = pool
            .removing
            .as_mut()
            .is_some_and(|removal| removal.countdown.advance(now, read));
        if !done {
            return;
        }
        let Some(removal) = pool.removing.take() else {
            return;
        };
        pool.json.insert("allocationState".into(), json!("steady"));
        pool.json
            .insert("allocationStateTransitionTime".into(), now_text(now));
        for node_key in removal.nodes {
            if let Some(node) = self.nodes.get_mut(&(pool_key.to_owned(), node_key)) {
                node.state = NodeState::Removed;
                node.files = NodeFiles::default();
            }
        }
        let (dedicated, low) = self.live_counts(pool_key);
        if let Some(pool) = self.pools.get_mut(pool_key) {
            pool.json
                .insert("currentDedicatedNodes".into(), json!(dedicated));
            pool.json
                .insert("currentLowPriorityNodes".into(), json!(low));
        }
    }

    /// Completes every removal and reimage now.
    pub(super) fn settle_pools(&mut self, now: OffsetDateTime) {
        for pool in self.pools.values_mut() {
            if let Some(removal) = pool.removing.as_mut() {
                removal.countdown.due = Some(now);
            }
        }
        for node in self.nodes.values_mut() {
            if let Some(countdown) = node.pending.as_mut() {
                countdown.due = Some(now);
            }
        }
        self.tick_pools(now, None);
    }

    /// The pool named (a read of it), or 404 `PoolNotFound`.
    pub(crate) fn read_pool(
        &mut self,
        pool_id: &str,
        now: OffsetDateTime,
    ) -> Result<&Pool, ApiError> {
        if !self.pools.contains_key(&key(pool_id)) {
            return Err(ApiError::pool_not_found());
        }
        self.tick_pools(now, Some(pool_id));
        self.pools
            .get(&key(pool_id))
            .ok_or_else(ApiError::pool_not_found)
    }

    /// The node named (a read of it and its pool), or 404 `PoolNotFound` / `NodeNotFound`.
    pub(crate) fn read_node(
        &mut self,
        pool_id: &str,
        node_id: &str,
        now: OffsetDateTime,
    ) -> Result<&Node, ApiError> {
        self.read_pool(pool_id, now)?;
        self.nodes
            .get(&(key(pool_id), key(node_id)))
            .filter(|node| node.state != NodeState::Removed)
            .ok_or_else(ApiError::node_not_found)
    }

    /// Remove Nodes: the nodes go `leavingpool` and the pool `resizing`; their running tasks
    /// follow `option`; they are gone once the removal completes. All or nothing.
    pub(crate) fn remove_nodes(
        &mut self,
        pool_id: &str,
        node_ids: &[String],
        option: (Deallocation, String),
        now: OffsetDateTime,
    ) -> Result<(), ApiError> {
        let pool_key = key(pool_id);
        self.tick_pools(now, None);
        let pool = self
            .pools
            .get(&pool_key)
            .ok_or_else(ApiError::pool_not_found)?;
        check_pool_writable(pool)?;
        if pool.removing.is_some() || lower_state_of(&pool.json, "allocationState") != "steady" {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "PoolBeingResized",
                "The specified pool is being resized; nodes can be removed only from a pool whose allocation state is steady.",
            ));
        }
        for node_id in node_ids {
            let found = self
                .nodes
                .get(&(pool_key.clone(), key(node_id)))
                .filter(|node| node.state != NodeState::Removed);
            if found.is_none() {
                return Err(ApiError::node_not_found());
            }
        }
        let mut leaving = Vec::new();
        let (mut dedicated, mut low) = (0i64, 0i64);
        for node_id in node_ids {
            let node_key = key(node_id);
            if leaving.contains(&node_key) {
                continue;
            }
            self.release_tasks(pool_id, node_id, option.0, now);
            if let Some(node) = self.nodes.get_mut(&(pool_key.clone(), node_key.clone())) {
                set_node_state(&mut node.json, "leavingpool", now);
                node.json
                    .insert("schedulingState".into(), json!("disabled"));
                node.state = NodeState::NotReady;
                node.pending = None;
                if is_dedicated(node) {
                    dedicated += 1;
                } else {
                    low += 1;
                }
            }
            self.node_actions.push(NodeAction {
                pool_id: pool_id.to_owned(),
                node_id: node_id.clone(),
                kind: NodeActionKind::Remove,
                option: option.1.clone(),
            });
            leaving.push(node_key);
        }
        let etag = self.etags.next(now);
        let countdown = Countdown::start(&self.transitions, now);
        if let Some(pool) = self.pools.get_mut(&pool_key) {
            for (field, removed) in [
                ("targetDedicatedNodes", dedicated),
                ("targetLowPriorityNodes", low),
            ] {
                let target = pool.json.get(field).and_then(Value::as_i64).unwrap_or(0);
                pool.json
                    .insert(field.into(), json!((target - removed).max(0)));
            }
            pool.json
                .insert("allocationState".into(), json!("resizing"));
            pool.json
                .insert("allocationStateTransitionTime".into(), now_text(now));
            pool.json.insert("lastModified".into(), now_text(now));
            pool.json.insert("eTag".into(), Value::String(etag));
            pool.removing = Some(Removal {
                nodes: leaving,
                countdown,
            });
        }
        Ok(())
    }

    /// Reimage Node: the node goes `reimaging`, then `idle` with a fresh disk and no errors.
    pub(crate) fn reimage_node(
        &mut self,
        pool_id: &str,
        node_id: &str,
        option: (Deallocation, String),
        now: OffsetDateTime,
    ) -> Result<(), ApiError> {
        self.tick_pools(now, None);
        let pool = self
            .pools
            .get(&key(pool_id))
            .ok_or_else(ApiError::pool_not_found)?;
        check_pool_writable(pool)?;
        let node = self
            .nodes
            .get(&(key(pool_id), key(node_id)))
            .filter(|node| node.state != NodeState::Removed)
            .ok_or_else(ApiError::node_not_found)?;
        match lower_state(&node.json).as_str() {
            "reimaging" => {
                return Err(ApiError::new(
                    axum::http::StatusCode::CONFLICT,
                    "NodeBeingReimaged",
                    "The specified node is already being reimaged.",
                ));
            }
            "leavingpool" => {
                return Err(ApiError::new(
                    axum::http::StatusCode::CONFLICT,
                    "OperationInvalidForCurrentState",
                    "The specified node is leaving the pool.",
                ));
            }
            _ => {}
        }
        self.release_tasks(pool_id, node_id, option.0, now);
        let countdown = Countdown::start(&self.transitions, now);
        if let Some(node) = self.nodes.get_mut(&(key(pool_id), key(node_id))) {
            set_node_state(&mut node.json, "reimaging", now);
            node.state = NodeState::NotReady;
            node.pending = Some(countdown);
        }
        self.node_actions.push(NodeAction {
            pool_id: pool_id.to_owned(),
            node_id: node_id.to_owned(),
            kind: NodeActionKind::Reimage,
            option: option.1,
        });
        Ok(())
    }

    /// What the tasks running on a node become when it leaves or is reimaged.
    fn release_tasks(
        &mut self,
        pool_id: &str,
        node_id: &str,
        option: Deallocation,
        now: OffsetDateTime,
    ) {
        if option == Deallocation::Wait {
            return;
        }
        for job in self.jobs.values_mut() {
            for task in job.tasks.values_mut() {
                let on_node = str_at(&task.json, &["nodeInfo", "poolId"])
                    .is_some_and(|p| p.eq_ignore_ascii_case(pool_id))
                    && str_at(&task.json, &["nodeInfo", "nodeId"])
                        .is_some_and(|n| n.eq_ignore_ascii_case(node_id));
                let running = matches!(
                    str_at(&task.json, &["state"]),
                    Some("running" | "preparing")
                );
                if !(on_node && running) {
                    continue;
                }
                let etag = self.etags.next(now);
                match option {
                    Deallocation::Terminate => end_task(&mut task.json, now, etag),
                    Deallocation::Requeue | Deallocation::Wait => {
                        requeue_task(&mut task.json, now, etag);
                    }
                }
            }
        }
    }

    /// `GET /nodecounts` rows: per pool, its nodes by state, dedicated and Spot/low-priority.
    pub(crate) fn node_counts(&self) -> Vec<(String, Map<String, Value>)> {
        self.pools
            .iter()
            .map(|(pool_key, pool)| {
                let mut dedicated = empty_counts();
                let mut low = empty_counts();
                for (_, node) in self.pool_nodes(pool_key) {
                    let counts = if is_dedicated(node) {
                        &mut dedicated
                    } else {
                        &mut low
                    };
                    bump(counts, &lower_state(&node.json));
                }
                let mut row = Map::new();
                row.insert(
                    "poolId".into(),
                    pool.json.get("id").cloned().unwrap_or(Value::Null),
                );
                row.insert("dedicated".into(), Value::Object(dedicated));
                row.insert("lowPriority".into(), Value::Object(low));
                (pool_key.clone(), row)
            })
            .collect()
    }
}

/// The node-count keys, as Batch spells them, by lower-cased node state.
const COUNT_KEYS: [(&str, &str); 16] = [
    ("creating", "creating"),
    ("idle", "idle"),
    ("offline", "offline"),
    ("preempted", "preempted"),
    ("rebooting", "rebooting"),
    ("reimaging", "reimaging"),
    ("running", "running"),
    ("starting", "starting"),
    ("starttaskfailed", "startTaskFailed"),
    ("leavingpool", "leavingPool"),
    ("unknown", "unknown"),
    ("unusable", "unusable"),
    ("waitingforstarttask", "waitingForStartTask"),
    ("deallocated", "deallocated"),
    ("deallocating", "deallocating"),
    ("upgradingos", "upgradingOS"),
];

fn empty_counts() -> Map<String, Value> {
    let mut counts: Map<String, Value> = COUNT_KEYS
        .iter()
        .map(|(_, name)| ((*name).to_owned(), json!(0)))
        .collect();
    counts.insert("total".into(), json!(0));
    counts
}

fn bump(counts: &mut Map<String, Value>, state: &str) {
    let names = COUNT_KEYS
        .iter()
        .filter(|(lower, _)| *lower == state)
        .map(|(_, name)| *name)
        .chain(std::iter::once("total"));
    for name in names {
        let value = counts.get(name).and_then(Value::as_u64).unwrap_or(0);
        counts.insert(name.to_owned(), json!(value + 1));
    }
}

fn lower_state_of(json: &Map<String, Value>, field: &str) -> String {
    str_at(json, &[field])
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// A deleting pool refuses changes with 409 `PoolBeingDeleted`.
fn check_pool_writable(pool: &Pool) -> Result<(), ApiError> {
    if lower_state_of(&pool.json, "state") == "deleting" {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "PoolBeingDeleted",
            "The specified pool has been marked for deletion and is being reclaimed.",
        ));
    }
    Ok(())
}

/// Fills in a node's JSON; `index` varies its IP address.
pub(super) fn fill_node(
    node: &mut Node,
    pool: Option<&Map<String, Value>>,
    index: usize,
    now: OffsetDateTime,
) {
    let default_state = match node.state {
        NodeState::NotReady => "leavingpool",
        NodeState::Available | NodeState::Removed => "idle",
    };
    let json = &mut node.json;
    let id = str_at(json, &["id"]).unwrap_or_default().to_owned();
    let allocated = now_text(now - Duration::hours(2));
    let booted = now_text(now - Duration::minutes(110));
    default_field(json, "state", json!(default_state));
    default_field(json, "schedulingState", json!("enabled"));
    default_field(
        json,
        "stateTransitionTime",
        now_text(now - Duration::minutes(100)),
    );
    // Batch leaves `lastBootTime` out for a node it lost contact with.
    if lower_state(json) != "unusable" {
        default_field(json, "lastBootTime", booted);
    }
    default_field(json, "allocationTime", allocated.clone());
    default_field(
        json,
        "ipAddress",
        json!(format!("10.0.{}.{}", index / 250, 4 + index % 250)),
    );
    default_field(json, "affinityId", json!(format!("TVM:{id}")));
    let vm_size = pool
        .and_then(|p| p.get("vmSize"))
        .cloned()
        .unwrap_or_else(|| json!("standard_d2s_v3"));
    default_field(json, "vmSize", vm_size);
    default_field(json, "totalTasksRun", json!(0));
    default_field(json, "totalTasksSucceeded", json!(0));
    default_field(json, "runningTasksCount", json!(0));
    default_field(json, "isDedicated", json!(true));
    if let Some(start_task) = pool.and_then(|p| p.get("startTask")) {
        default_field(json, "startTask", start_task.clone());
    }
    let start_ran = !matches!(
        lower_state(json).as_str(),
        "creating" | "starting" | "waitingforstarttask" | "starttaskfailed"
    );
    if json.contains_key("startTask") && start_ran {
        default_field(
            json,
            "startTaskInfo",
            succeeded_start_task(now - Duration::minutes(105)),
        );
    }
    default_field(
        json,
        "nodeAgentInfo",
        json!({"version": AGENT_VERSION, "lastUpdateTime": allocated}),
    );
}

fn succeeded_start_task(start: OffsetDateTime) -> Value {
    json!({
        "state": "completed",
        "startTime": clock::format_time(start),
        "endTime": clock::format_time(start + Duration::seconds(20)),
        "exitCode": 0,
        "retryCount": 0,
        "result": "success"
    })
}

/// A reimaged node: `idle`, no errors, a fresh disk, its start task run again.
pub(super) fn finish_reimage(node: &mut Node, now: OffsetDateTime) {
    set_node_state(&mut node.json, "idle", now);
    node.json.remove("errors");
    node.json.insert("lastBootTime".into(), now_text(now));
    node.json.insert("runningTasksCount".into(), json!(0));
    if node.json.contains_key("startTask") {
        node.json
            .insert("startTaskInfo".into(), succeeded_start_task(now));
    } else {
        node.json.remove("startTaskInfo");
    }
    node.files = NodeFiles::default();
    node.state = NodeState::Available;
}
