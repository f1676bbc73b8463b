//! The emulated account's live state: jobs, tasks, prep/release rows and nodes with files.
//!
//! Built once from a [`Scenario`] (relative times resolved, bookkeeping fields filled in), then
//! changed by job and task actions. Ids are case-insensitive in Batch, so maps are keyed by the
//! lower-cased id while the JSON keeps the id as written. URLs are not stored: they are added
//! when rendering, from the base URL of the request being answered.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::clock::{self, EtagClock};
use crate::error::ApiError;
use crate::files::{Content, FileEntry, NodeFiles, normalize_path};
use crate::scenario::{
    FileContentSpec, FileSpec, FilesState, JobSpec, NodeState, PrepReleaseSpec, Scenario,
    ScenarioError, TaskGenerator, TransitionConfig,
};

mod json_map;
mod pool_controls;
mod pools;

use json_map::{default_field, object_at, resolve_map, str_at};
pub use pools::{AgentLogUpload, NodeAction, NodeActionKind};
pub(crate) use pools::{Deallocation, MAX_REMOVE_NODES, Pool};

/// How Batch renders an infinite duration (.NET `TimeSpan.MaxValue`).
const INFINITE: &str = "P10675199DT2H48M5.4775807S";

/// A job and everything under it.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    /// The job JSON without `url`.
    pub(crate) json: Map<String, Value>,
    /// Tasks by lower-cased id.
    pub(crate) tasks: BTreeMap<String, Task>,
    /// Prep/release rows by lower-cased `pool/node`.
    pub(crate) prep_release: BTreeMap<String, Map<String, Value>>,
    /// An asynchronous state change in progress.
    pending: Option<Pending>,
}

/// A task.
#[derive(Debug, Clone)]
pub(crate) struct Task {
    /// The task JSON without URLs.
    pub(crate) json: Map<String, Value>,
    /// Whether its files are still there.
    pub(crate) files_state: FilesState,
}

/// A compute node.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// Whether file requests work.
    pub(crate) state: NodeState,
    /// Its files.
    pub(crate) files: NodeFiles,
    /// The node JSON without `url`.
    pub(crate) json: Map<String, Value>,
    /// A reimage in progress.
    pending: Option<pools::Countdown>,
}

/// A job state change that completes later (terminating → completed, …).
#[derive(Debug, Clone)]
struct Pending {
    /// What the change ends in.
    target: PendingTarget,
    /// Reads that still see the intermediate state.
    reads_left: u32,
    /// When it completes regardless of reads.
    due: Option<OffsetDateTime>,
}

#[derive(Debug, Clone)]
enum PendingTarget {
    Terminate { reason: String },
    Disable { mode: DisableMode },
    Enable,
}

/// What happens to running tasks when a job is disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DisableMode {
    /// Back to active, `requeueCount` + 1.
    Requeue,
    /// Completed with `TaskEnded`.
    Terminate,
    /// Left running.
    Wait,
}

impl DisableMode {
    /// Parses the `disableTasks` value (case-insensitive).
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "requeue" => Some(Self::Requeue),
            "terminate" => Some(Self::Terminate),
            "wait" => Some(Self::Wait),
            _ => None,
        }
    }
}

/// The whole account.
#[derive(Debug)]
pub(crate) struct State {
    /// Jobs by lower-cased id.
    pub(crate) jobs: BTreeMap<String, Job>,
    /// Nodes by lower-cased `(pool, node)`.
    pub(crate) nodes: BTreeMap<(String, String), Node>,
    /// Pools by lower-cased id.
    pub(crate) pools: BTreeMap<String, Pool>,
    /// Node actions carried out (remove, reimage), oldest first.
    pub(crate) node_actions: Vec<NodeAction>,
    /// Agent log uploads requested, oldest first.
    pub(crate) agent_log_uploads: Vec<AgentLogUpload>,
    /// ETag source.
    etags: EtagClock,
    /// When transitions complete.
    transitions: TransitionConfig,
}

/// Lower-cased map key for an id.
pub(crate) fn key(id: &str) -> String {
    id.to_lowercase()
}

impl State {
    /// Builds the live state from a checked scenario at time `now`.
    pub(crate) fn build(scenario: &Scenario, now: OffsetDateTime) -> Result<Self, ScenarioError> {
        let mut state = State {
            jobs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            pools: BTreeMap::new(),
            node_actions: Vec::new(),
            agent_log_uploads: Vec::new(),
            etags: EtagClock::default(),
            transitions: scenario.transitions.clone(),
        };
        for pool in &scenario.pools {
            let entry = state.ensure_pool(&pool.id);
            entry.json = resolve_map(pool.pool.clone(), now);
            default_field(&mut entry.json, "id", Value::String(pool.id.clone()));
            for node in &pool.nodes {
                let entry = state.node_entry(&pool.id, &node.id);
                entry.state = node.state;
                entry.json = resolve_map(node.node.clone(), now);
                default_field(&mut entry.json, "id", Value::String(node.id.clone()));
                for (path, spec) in &node.files {
                    let (created, modified) = (now, now);
                    let file = file_entry(spec, now, created, modified)?;
                    if let Some(path) = normalize_path(path) {
                        entry.files.insert(path, file);
                    }
                }
            }
            for generator in &pool.generate_nodes {
                state.generate_nodes(&pool.id, generator, now);
            }
        }
        for spec in &scenario.jobs {
            state.add_job(spec, now)?;
        }
        state.fill_pool_and_node_defaults(now);
        Ok(state)
    }

    /// Adds a scenario job: its tasks (listed and generated) and its prep/release rows, with the
    /// files they put on nodes.
    fn add_job(&mut self, spec: &JobSpec, now: OffsetDateTime) -> Result<(), ScenarioError> {
        let mut json = resolve_map(spec.job.clone(), now);
        let job_id = json
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        self.fill_job_defaults(&mut json, now);
        if let Some(pool) = str_at(&json, &["poolInfo", "poolId"]).map(str::to_owned) {
            self.ensure_pool(&pool);
        }
        let mut job = Job {
            json,
            tasks: BTreeMap::new(),
            prep_release: BTreeMap::new(),
            pending: None,
        };
        for task_spec in &spec.tasks {
            let mut task = resolve_map(task_spec.task.clone(), now);
            self.fill_task_defaults(&job_id, &mut task, now);
            self.place_task_files(&task, &task_spec.files, now)?;
            let task_id = str_at(&task, &["id"]).unwrap_or_default().to_owned();
            job.tasks.insert(
                key(&task_id),
                Task {
                    json: task,
                    files_state: task_spec.files_state,
                },
            );
        }
        for generator in &spec.generate_tasks {
            self.generate_tasks(&mut job, &job_id, generator, now);
        }
        for row_spec in &spec.preparation_and_release_status {
            self.add_prep_release_row(&mut job, &job_id, row_spec, now)?;
        }
        self.jobs.insert(key(&job_id), job);
        Ok(())
    }

    /// Adds a generator's tasks to `job`: `count` copies of its template, every `fail_every`-th
    /// one failed.
    fn generate_tasks(
        &mut self,
        job: &mut Job,
        job_id: &str,
        generator: &TaskGenerator,
        now: OffsetDateTime,
    ) {
        let width = generator.count.saturating_sub(1).to_string().len().max(5);
        let template = resolve_map(generator.task.clone(), now);
        for index in 0..generator.count {
            let mut task = template.clone();
            let task_id = format!("{}{index:0width$}", generator.id_prefix);
            task.insert("id".into(), Value::String(task_id.clone()));
            if generator.fail_every.is_some_and(|n| index % n == n - 1) {
                make_failure(&mut task);
            }
            self.fill_task_defaults(job_id, &mut task, now);
            job.tasks.insert(
                key(&task_id),
                Task {
                    json: task,
                    files_state: FilesState::Available,
                },
            );
        }
    }

    /// Adds one prep/release row to `job`, and the files its preparation and release tasks left
    /// on the node.
    fn add_prep_release_row(
        &mut self,
        job: &mut Job,
        job_id: &str,
        row_spec: &PrepReleaseSpec,
        now: OffsetDateTime,
    ) -> Result<(), ScenarioError> {
        let mut row = resolve_map(row_spec.status.clone(), now);
        let pool = str_at(&row, &["poolId"]).unwrap_or_default().to_owned();
        let node = str_at(&row, &["nodeId"]).unwrap_or_default().to_owned();
        let prep_id = str_at(&job.json, &["jobPreparationTask", "id"]).unwrap_or("jobpreparation");
        let release_id = str_at(&job.json, &["jobReleaseTask", "id"]).unwrap_or("jobrelease");
        for (section, task_id, files) in [
            (
                "jobPreparationTaskExecutionInfo",
                prep_id.to_owned(),
                &row_spec.preparation_files,
            ),
            (
                "jobReleaseTaskExecutionInfo",
                release_id.to_owned(),
                &row_spec.release_files,
            ),
        ] {
            if !row.contains_key(section) && files.is_empty() {
                continue;
            }
            let info = object_at(&mut row, section);
            default_field(
                info,
                "taskRootDirectory",
                Value::String(format!("workitems/{job_id}/job-1/{task_id}")),
            );
            if section == "jobPreparationTaskExecutionInfo" {
                default_field(info, "retryCount", json!(0));
            }
            let root = str_at(info, &["taskRootDirectory"]).unwrap_or_default();
            let root = normalize_path(root).unwrap_or_default();
            let created = str_at(info, &["startTime"])
                .and_then(clock::parse_time)
                .unwrap_or(now);
            let modified = str_at(info, &["endTime"])
                .and_then(clock::parse_time)
                .unwrap_or(now);
            let entry = self.node_entry(&pool, &node);
            for (path, spec) in files {
                let file = file_entry(spec, now, created, modified)?;
                if let Some(path) = normalize_path(path) {
                    entry.files.insert(join(&root, &path), file);
                }
            }
        }
        self.node_entry(&pool, &node);
        job.prep_release
            .insert(format!("{}/{}", key(&pool), key(&node)), row);
        Ok(())
    }

    /// The node, created (available, no files) when the scenario did not declare it.
    fn node_entry(&mut self, pool: &str, node: &str) -> &mut Node {
        self.ensure_pool(pool);
        self.nodes
            .entry((key(pool), key(node)))
            .or_insert_with(|| Node {
                state: NodeState::Available,
                files: NodeFiles::default(),
                json: json_map::id_map(node),
                pending: None,
            })
    }

    fn fill_job_defaults(&mut self, json: &mut Map<String, Value>, now: OffsetDateTime) {
        let created = clock::format_time(now - time::Duration::hours(1));
        default_field(json, "creationTime", Value::String(created));
        let created = json["creationTime"].clone();
        default_field(json, "state", json!("active"));
        default_field(json, "stateTransitionTime", created.clone());
        let last = json["stateTransitionTime"].clone();
        default_field(json, "lastModified", last);
        default_field(json, "eTag", Value::String(self.etags.next(now)));
        default_field(json, "priority", json!(0));
        default_field(json, "maxParallelTasks", json!(-1));
        default_field(json, "allowTaskPreemption", json!(false));
        default_field(json, "usesTaskDependencies", json!(false));
        let constraints = object_at(json, "constraints");
        default_field(constraints, "maxWallClockTime", json!(INFINITE));
        default_field(constraints, "maxTaskRetryCount", json!(0));
        let pool = str_at(json, &["poolInfo", "poolId"]).map(str::to_owned);
        let execution = object_at(json, "executionInfo");
        default_field(execution, "startTime", created);
        if let Some(pool) = pool {
            default_field(execution, "poolId", Value::String(pool));
        }
        default_field(json, "onAllTasksComplete", json!("noaction"));
        default_field(json, "onTaskFailure", json!("noaction"));
    }

    fn fill_task_defaults(
        &mut self,
        job_id: &str,
        json: &mut Map<String, Value>,
        now: OffsetDateTime,
    ) {
        let task_id = str_at(json, &["id"]).unwrap_or_default().to_owned();
        let created = clock::format_time(now - time::Duration::hours(1));
        default_field(json, "creationTime", Value::String(created));
        let created = json["creationTime"].clone();
        default_field(json, "state", json!("active"));
        default_field(json, "stateTransitionTime", created);
        let last = json["stateTransitionTime"].clone();
        default_field(json, "lastModified", last);
        default_field(json, "eTag", Value::String(self.etags.next(now)));
        default_field(
            json,
            "userIdentity",
            json!({"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}}),
        );
        let constraints = object_at(json, "constraints");
        default_field(constraints, "maxWallClockTime", json!(INFINITE));
        default_field(constraints, "retentionTime", json!("P7D"));
        default_field(constraints, "maxTaskRetryCount", json!(0));
        default_field(json, "requiredSlots", json!(1));
        let execution = object_at(json, "executionInfo");
        default_field(execution, "retryCount", json!(0));
        default_field(execution, "requeueCount", json!(0));
        if let Some(node) = json.get_mut("nodeInfo").and_then(Value::as_object_mut) {
            if let Some(node_id) = node
                .get("nodeId")
                .and_then(Value::as_str)
                .map(str::to_owned)
            {
                default_field(node, "affinityId", Value::String(format!("TVM:{node_id}")));
                default_field(
                    node,
                    "taskRootDirectory",
                    Value::String(format!("workitems/{job_id}/job-1/{task_id}")),
                );
            }
        }
    }

    fn place_task_files(
        &mut self,
        task: &Map<String, Value>,
        files: &BTreeMap<String, FileSpec>,
        now: OffsetDateTime,
    ) -> Result<(), ScenarioError> {
        let (Some(pool), Some(node)) = (
            str_at(task, &["nodeInfo", "poolId"]),
            str_at(task, &["nodeInfo", "nodeId"]),
        ) else {
            return Ok(());
        };
        let root = str_at(task, &["nodeInfo", "taskRootDirectory"])
            .and_then(normalize_path)
            .unwrap_or_default();
        let created = str_at(task, &["executionInfo", "startTime"])
            .or_else(|| str_at(task, &["creationTime"]))
            .and_then(clock::parse_time)
            .unwrap_or(now);
        let modified = str_at(task, &["executionInfo", "endTime"])
            .and_then(clock::parse_time)
            .unwrap_or(now);
        let entry = self.node_entry(pool, node);
        for (path, spec) in files {
            let file = file_entry(spec, now, created, modified)?;
            if let Some(path) = normalize_path(path) {
                entry.files.insert(join(&root, &path), file);
            }
        }
        Ok(())
    }

    /// Finds a job, completing a due transition first. `read` says whether this access counts
    /// as a read of the job for `afterReads`.
    pub(crate) fn job_mut(
        &mut self,
        job_id: &str,
        now: OffsetDateTime,
        read: bool,
    ) -> Result<&mut Job, ApiError> {
        let job = self
            .jobs
            .get_mut(&key(job_id))
            .ok_or_else(ApiError::job_not_found)?;
        advance(job, &mut self.etags, now, read);
        Ok(job)
    }

    /// Counts a read of every job in `ids` (a list that returned them).
    pub(crate) fn observe_jobs(&mut self, keys: &[String], now: OffsetDateTime) {
        for job_key in keys {
            if let Some(job) = self.jobs.get_mut(job_key) {
                advance(job, &mut self.etags, now, true);
            }
        }
    }

    /// Completes due transitions of all jobs without counting reads.
    pub(crate) fn tick(&mut self, now: OffsetDateTime) {
        for job in self.jobs.values_mut() {
            advance(job, &mut self.etags, now, false);
        }
    }

    /// Completes every pending transition now.
    pub(crate) fn settle(&mut self, now: OffsetDateTime) {
        for job in self.jobs.values_mut() {
            if let Some(pending) = job.pending.take() {
                complete(job, pending.target, &mut self.etags, now);
            }
        }
        self.settle_pools(now);
    }

    fn start(
        &mut self,
        job_id: &str,
        target: PendingTarget,
        intermediate: &str,
        now: OffsetDateTime,
    ) {
        let reads_left = match (self.transitions.after_reads, self.transitions.after_millis) {
            (Some(reads), _) => reads,
            (None, Some(_)) => u32::MAX,
            (None, None) => 1,
        };
        let due = self.transitions.after_millis.map(|ms| {
            now + time::Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX / 2))
        });
        let etag = self.etags.next(now);
        if let Some(job) = self.jobs.get_mut(&key(job_id)) {
            set_state(&mut job.json, intermediate, now, etag);
            job.pending = Some(Pending {
                target,
                reads_left,
                due,
            });
        }
    }

    /// Terminate Job: active/disabling/disabled/enabling → terminating → completed.
    pub(crate) fn terminate_job(
        &mut self,
        job_id: &str,
        reason: String,
        now: OffsetDateTime,
    ) -> Result<(), ApiError> {
        let job = self.job_mut(job_id, now, false)?;
        match job_state(job) {
            "completed" => return Err(ApiError::job_completed()),
            "terminating" => return Err(ApiError::job_being_terminated()),
            "deleting" => return Err(job_being_deleted()),
            _ => {}
        }
        self.start(
            job_id,
            PendingTarget::Terminate { reason },
            "terminating",
            now,
        );
        Ok(())
    }

    /// Disable Job: active → disabling → disabled; already disabling/disabled is accepted.
    pub(crate) fn disable_job(
        &mut self,
        job_id: &str,
        mode: DisableMode,
        now: OffsetDateTime,
    ) -> Result<(), ApiError> {
        let job = self.job_mut(job_id, now, false)?;
        match job_state(job) {
            "active" => {}
            "disabling" | "disabled" => return Ok(()),
            "completed" => return Err(ApiError::job_completed()),
            "terminating" => return Err(ApiError::job_being_terminated()),
            "deleting" => return Err(job_being_deleted()),
            _ => return Err(ApiError::job_not_active()),
        }
        self.start(job_id, PendingTarget::Disable { mode }, "disabling", now);
        Ok(())
    }

    /// Enable Job: disabled/disabling → enabling → active; already active/enabling is accepted.
    pub(crate) fn enable_job(&mut self, job_id: &str, now: OffsetDateTime) -> Result<(), ApiError> {
        let job = self.job_mut(job_id, now, false)?;
        match job_state(job) {
            "disabled" | "disabling" => {}
            "active" | "enabling" => return Ok(()),
            "completed" => return Err(ApiError::job_completed()),
            "terminating" => return Err(ApiError::job_being_terminated()),
            "deleting" => return Err(job_being_deleted()),
            _ => return Err(ApiError::job_not_active()),
        }
        self.start(job_id, PendingTarget::Enable, "enabling", now);
        Ok(())
    }

    /// Terminate Task: anything but completed → completed with `TaskEnded`.
    pub(crate) fn terminate_task(
        &mut self,
        job_id: &str,
        task_id: &str,
        now: OffsetDateTime,
    ) -> Result<(), ApiError> {
        let etag = self.etags.next(now);
        let job = self.job_mut(job_id, now, false)?;
        let task = job
            .tasks
            .get_mut(&key(task_id))
            .ok_or_else(ApiError::task_not_found)?;
        if str_at(&task.json, &["state"]) == Some("completed") {
            return Err(ApiError::task_completed());
        }
        end_task(&mut task.json, now, etag);
        Ok(())
    }

    /// The node named, or the error a file request gets for it.
    pub(crate) fn readable_node(&self, pool: &str, node: &str) -> Result<&Node, ApiError> {
        let Some(found) = self.nodes.get(&(key(pool), key(node))) else {
            return Err(if self.pools.contains_key(&key(pool)) {
                ApiError::node_not_found()
            } else {
                ApiError::pool_not_found()
            });
        };
        match found.state {
            NodeState::Available => Ok(found),
            NodeState::NotReady => Err(ApiError::node_not_ready()),
            NodeState::Removed => Err(ApiError::node_not_found()),
        }
    }

    /// Where a task's files are: its node and its root directory on the node, or `None` when
    /// the task never ran anywhere. Errors are what Batch answers for unreadable task files.
    pub(crate) fn task_files(
        &mut self,
        job_id: &str,
        task_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<(&Node, String)>, ApiError> {
        let job = self.job_mut(job_id, now, false)?;
        let task = job
            .tasks
            .get(&key(task_id))
            .ok_or_else(ApiError::task_not_found)?;
        if str_at(&task.json, &["state"]) == Some("active") {
            return Err(ApiError::files_of_active_task());
        }
        match task.files_state {
            FilesState::Available => {}
            FilesState::Expired => return Err(ApiError::task_files_unavailable()),
            FilesState::CleanedUp => return Err(ApiError::task_files_cleaned_up()),
        }
        let (Some(pool), Some(node)) = (
            str_at(&task.json, &["nodeInfo", "poolId"]).map(str::to_owned),
            str_at(&task.json, &["nodeInfo", "nodeId"]).map(str::to_owned),
        ) else {
            return Ok(None);
        };
        let root = str_at(&task.json, &["nodeInfo", "taskRootDirectory"])
            .and_then(normalize_path)
            .unwrap_or_default();
        let node = self.readable_node(&pool, &node)?;
        Ok(Some((node, root)))
    }

    /// Marks a node removed; returns false when it does not exist.
    pub(crate) fn set_node_state(&mut self, pool: &str, node: &str, state: NodeState) -> bool {
        match self.nodes.get_mut(&(key(pool), key(node))) {
            Some(found) => {
                found.state = state;
                true
            }
            None => false,
        }
    }
}

fn job_being_deleted() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::CONFLICT,
        "JobBeingDeleted",
        "The specified job has been marked for deletion and is being garbage collected.",
    )
}

fn job_state(job: &Job) -> &str {
    str_at(&job.json, &["state"]).unwrap_or("active")
}

/// Completes the pending change if it is due.
fn advance(job: &mut Job, etags: &mut EtagClock, now: OffsetDateTime, read: bool) {
    let Some(pending) = job.pending.as_mut() else {
        return;
    };
    let due = pending.due.is_some_and(|d| now >= d) || (read && pending.reads_left == 0);
    if due {
        if let Some(pending) = job.pending.take() {
            complete(job, pending.target, etags, now);
        }
    } else if read {
        pending.reads_left -= 1;
    }
}

fn complete(job: &mut Job, target: PendingTarget, etags: &mut EtagClock, now: OffsetDateTime) {
    let etag = etags.next(now);
    match target {
        PendingTarget::Terminate { reason } => {
            set_state(&mut job.json, "completed", now, etag);
            let execution = object_at(&mut job.json, "executionInfo");
            execution.insert("endTime".into(), Value::String(clock::format_time(now)));
            execution.insert("terminateReason".into(), Value::String(reason));
            for task in job.tasks.values_mut() {
                if matches!(
                    str_at(&task.json, &["state"]),
                    Some("running" | "preparing")
                ) {
                    let etag = etags.next(now);
                    end_task(&mut task.json, now, etag);
                }
            }
        }
        PendingTarget::Disable { mode } => {
            set_state(&mut job.json, "disabled", now, etag);
            for task in job.tasks.values_mut() {
                if !matches!(
                    str_at(&task.json, &["state"]),
                    Some("running" | "preparing")
                ) {
                    continue;
                }
                let etag = etags.next(now);
                match mode {
                    DisableMode::Wait => {}
                    DisableMode::Terminate => end_task(&mut task.json, now, etag),
                    DisableMode::Requeue => requeue_task(&mut task.json, now, etag),
                }
            }
        }
        PendingTarget::Enable => set_state(&mut job.json, "active", now, etag),
    }
}

/// Moves a job or task to `state`, keeping the previous state and bumping ETag and times.
fn set_state(json: &mut Map<String, Value>, state: &str, now: OffsetDateTime, etag: String) {
    let stamp = Value::String(clock::format_time(now));
    if let Some(old) = json.get("state").cloned() {
        json.insert("previousState".into(), old);
        if let Some(old_time) = json.get("stateTransitionTime").cloned() {
            json.insert("previousStateTransitionTime".into(), old_time);
        }
    }
    json.insert("state".into(), Value::String(state.to_owned()));
    json.insert("stateTransitionTime".into(), stamp.clone());
    json.insert("lastModified".into(), stamp);
    json.insert("eTag".into(), Value::String(etag));
}

/// Completes a task as terminated (`TaskEnded`).
fn end_task(json: &mut Map<String, Value>, now: OffsetDateTime, etag: String) {
    set_state(json, "completed", now, etag);
    let execution = object_at(json, "executionInfo");
    execution.insert("endTime".into(), Value::String(clock::format_time(now)));
    execution.insert("result".into(), json!("failure"));
    execution.insert(
        "failureInfo".into(),
        json!({"category": "usererror", "code": "TaskEnded", "message": "Task was ended by user request"}),
    );
}

/// Puts a task back in the queue (`active`), counting the requeue.
fn requeue_task(json: &mut Map<String, Value>, now: OffsetDateTime, etag: String) {
    set_state(json, "active", now, etag);
    let execution = object_at(json, "executionInfo");
    let count = execution
        .get("requeueCount")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    execution.insert("requeueCount".into(), json!(count + 1));
    execution.insert(
        "lastRequeueTime".into(),
        Value::String(clock::format_time(now)),
    );
}

/// Turns a generated task into a completed failure with exit code 1.
fn make_failure(task: &mut Map<String, Value>) {
    task.insert("state".into(), json!("completed"));
    let execution = object_at(task, "executionInfo");
    execution.insert("exitCode".into(), json!(1));
    execution.insert("result".into(), json!("failure"));
    execution.insert(
        "failureInfo".into(),
        json!({"category": "usererror", "code": "FailureExitCode",
               "message": "The task exited with an exit code representing a failure"}),
    );
}

fn join(root: &str, path: &str) -> String {
    if root.is_empty() {
        path.to_owned()
    } else {
        format!("{root}/{path}")
    }
}

/// Turns a scenario file into a node file; relative times resolve against `now`.
fn file_entry(
    spec: &FileSpec,
    now: OffsetDateTime,
    default_created: OffsetDateTime,
    default_modified: OffsetDateTime,
) -> Result<FileEntry, ScenarioError> {
    let time = |text: &Option<String>, default: OffsetDateTime| {
        text.as_deref()
            .and_then(|t| clock::resolve_relative(t, now).or_else(|| clock::parse_time(t)))
            .unwrap_or(default)
    };
    let content = match &spec.content {
        FileContentSpec::Text(text) => Content::Inline(Bytes::from(text.clone().into_bytes())),
        FileContentSpec::Base64(b64) => Content::Inline(Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| ScenarioError::Invalid("a file has invalid base64".to_owned()))?,
        )),
        FileContentSpec::Generate(generate) => Content::Generated {
            size: generate.bytes,
            seed: generate.seed,
            tail: Bytes::from(generate.tail.clone().unwrap_or_default().into_bytes()),
        },
    };
    Ok(FileEntry {
        content,
        creation_time: time(&spec.creation_time, default_created),
        last_modified: time(&spec.last_modified, default_modified),
        content_type: spec
            .content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".to_owned()),
        file_mode: spec.file_mode.clone(),
    })
}
