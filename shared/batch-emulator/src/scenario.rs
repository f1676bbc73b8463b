//! The scenario file: what the emulated Batch account contains when it starts.
//!
//! See the crate docs for the format. Parsing is strict (unknown fields are errors, with the
//! JSON path of the offending field) so a typo in a scenario does not silently change a test.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::clock;
use crate::faults::FaultRule;

/// Name of the well-known development account, used when a scenario names none.
pub const WELL_KNOWN_ACCOUNT_NAME: &str = "devbatch1";

/// Key of the well-known development account (public on purpose: it only opens the emulator).
pub const WELL_KNOWN_ACCOUNT_KEY: &str =
    "mjKm6b5f7cz+1Z87ZQTzqewMgLsXqKvuJqfrLzWEpg27VruihOB6mXgex29Mi/scsRrX5vb19ODbFU0ZvQTWRg==";

/// Largest number of tasks one `generateTasks` entry may create, so a typo cannot exhaust memory.
const MAX_GENERATED_TASKS: u64 = 1_000_000;

/// Largest number of nodes one `generateNodes` entry may create.
const MAX_GENERATED_NODES: u64 = 100_000;

/// Everything the emulator starts with. Build one with [`Scenario::from_json_str`],
/// [`Scenario::from_json_file`] or [`Scenario::builtin`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    /// Free text saying what the scenario demonstrates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Account name and key for Shared Key auth; the well-known account when absent.
    #[serde(default)]
    pub account: AccountConfig,
    /// Which credentials are accepted.
    #[serde(default)]
    pub auth: AuthConfig,
    /// How fast job state transitions (terminating → completed, …) complete.
    #[serde(default)]
    pub transitions: TransitionConfig,
    /// The emulator's base URL for `url` fields; taken from the request's `Host` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Pools and their nodes. Nodes named by tasks or prep/release status are created
    /// automatically; declare them here to give them a state or node-level files.
    #[serde(default)]
    pub pools: Vec<PoolSpec>,
    /// Jobs with their tasks, files and prep/release status.
    #[serde(default)]
    pub jobs: Vec<JobSpec>,
    /// Faults active from the start.
    #[serde(default)]
    pub faults: Vec<FaultRule>,
    /// How `uploadbatchservicelogs` delivers the node agent's logs.
    #[serde(default)]
    pub agent_logs: AgentLogsConfig,
}

/// How the emulator answers `uploadbatchservicelogs`: Batch uploads asynchronously, so the
/// files arrive a little after the 200.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentLogsConfig {
    /// Milliseconds between the answer and the files' arrival (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_millis: Option<u64>,
}

/// The Batch account the emulator pretends to be.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccountConfig {
    /// Account name, the `<AccountName>` of `SharedKey <AccountName>:<signature>`.
    pub name: String,
    /// Base64 account key. Never logged: [`fmt::Debug`] prints it redacted.
    pub key: String,
}

impl Default for AccountConfig {
    fn default() -> Self {
        Self {
            name: WELL_KNOWN_ACCOUNT_NAME.to_owned(),
            key: WELL_KNOWN_ACCOUNT_KEY.to_owned(),
        }
    }
}

impl fmt::Debug for AccountConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountConfig")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Which credentials the emulator accepts.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthConfig {
    /// When false, every request is accepted unsigned (handy for `curl` in a demo).
    #[serde(default = "yes")]
    pub required: bool,
    /// When false, Shared Key is refused, like an account whose `allowedAuthenticationModes`
    /// lacks `SharedKey`.
    #[serde(default = "yes")]
    pub shared_key: bool,
    /// Bearer tokens accepted as `Authorization: Bearer <token>` (stand-ins for Entra tokens).
    /// Never logged: [`fmt::Debug`] prints only how many there are.
    #[serde(default)]
    pub bearer_tokens: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            required: true,
            shared_key: true,
            bearer_tokens: Vec::new(),
        }
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("required", &self.required)
            .field("shared_key", &self.shared_key)
            .field("bearer_tokens", &self.bearer_tokens.len())
            .finish()
    }
}

fn yes() -> bool {
    true
}

/// When an asynchronous job state change (terminate, disable, enable) completes. Whichever
/// condition is met first wins; with neither set, the default is one read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransitionConfig {
    /// Reads of the job (GET, or a list that returns it) that still see the intermediate state
    /// (`terminating`, `disabling`, `enabling`); 0 completes on the first read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_reads: Option<u32>,
    /// Milliseconds after the action at which the change completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_millis: Option<u64>,
}

/// A pool and the nodes the scenario wants to describe.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolSpec {
    /// Pool id.
    pub id: String,
    /// The pool in the wire shape of `GET /pools/{id}` (`state`, `allocationState`,
    /// `resizeErrors`, `autoScaleRun`, `vmSize`, node counts, `startTask`, …). `id`, `eTag`,
    /// `lastModified`, the times, the node counts (from the nodes) and a VM configuration are
    /// filled in when absent.
    #[serde(default)]
    pub pool: Map<String, Value>,
    /// Nodes of the pool.
    #[serde(default)]
    pub nodes: Vec<NodeSpec>,
    /// Bulk nodes made from a template (for sweep benchmarks over thousands of nodes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generate_nodes: Vec<NodeGenerator>,
}

/// Many nodes from one template: ids are `idPrefix` followed by a zero-padded index.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeGenerator {
    /// How many nodes.
    pub count: u64,
    /// Id prefix, e.g. `tvm-` gives `tvm-00000`, `tvm-00001`, ….
    pub id_prefix: String,
    /// Node JSON copied into every generated node (its `id` is replaced).
    #[serde(default)]
    pub node: Map<String, Value>,
    /// Every n-th node (index % n == n-1) is made `unusable` with a `DiskFull` error, so a sweep
    /// has something to find among many nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unusable_every: Option<u64>,
}

/// A compute node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    /// Node id (`tvm-…`).
    pub id: String,
    /// Whether the node's files can be read.
    #[serde(default)]
    pub state: NodeState,
    /// The node in the wire shape of `GET /pools/{pool}/nodes/{id}` (`state`, `errors`,
    /// `startTask`, `startTaskInfo`, `isDedicated`, …). `id`, `state` (`idle`, or `leavingpool`
    /// for a `notReady` node), the times, `vmSize` and `nodeAgentInfo` are filled in when absent.
    #[serde(default)]
    pub node: Map<String, Value>,
    /// Files at paths relative to the node root (e.g. `startup/stdout.txt`).
    #[serde(default)]
    pub files: BTreeMap<String, FileSpec>,
}

/// What a node lets file requests do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NodeState {
    /// Files can be read.
    #[default]
    Available,
    /// The node is leaving or unusable: file requests get 409 `NodeNotReady`.
    NotReady,
    /// The node was removed from the pool: file requests get 404 `NodeNotFound`.
    Removed,
}

/// A job, its tasks and its prep/release status.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobSpec {
    /// The job in the wire shape of `GET /jobs/{id}`. `id` is required; `url`, `eTag`,
    /// `lastModified` and other bookkeeping fields are filled in when absent.
    pub job: Map<String, Value>,
    /// The job's tasks.
    #[serde(default)]
    pub tasks: Vec<TaskSpec>,
    /// Bulk tasks made from a template (for paging and sweep tests).
    #[serde(default)]
    pub generate_tasks: Vec<TaskGenerator>,
    /// Rows of `GET /jobs/{id}/jobpreparationandreleasetaskstatus`, one per node.
    #[serde(default)]
    pub preparation_and_release_status: Vec<PrepReleaseSpec>,
}

/// A task and its files.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskSpec {
    /// The task in the wire shape of `GET /jobs/{job}/tasks/{id}`. `id` is required.
    pub task: Map<String, Value>,
    /// Files relative to the task directory (`stdout.txt`, `wd/result.json`). They live on
    /// the node named by `nodeInfo`, under its `taskRootDirectory`.
    #[serde(default)]
    pub files: BTreeMap<String, FileSpec>,
    /// Whether the files can still be read.
    #[serde(default)]
    pub files_state: FilesState,
}

/// Whether a task's files are still on the node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FilesState {
    /// Readable (subject to task and node state).
    #[default]
    Available,
    /// Retention expired: 409 `TaskFilesUnavailable`.
    Expired,
    /// Cleaned up: 409 `TaskFilesCleanedup`.
    CleanedUp,
}

/// Many tasks from one template: ids are `idPrefix` followed by a zero-padded index.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskGenerator {
    /// How many tasks.
    pub count: u64,
    /// Id prefix, e.g. `bulk-` gives `bulk-00000`, `bulk-00001`, ….
    pub id_prefix: String,
    /// Task JSON copied into every generated task (its `id` is replaced).
    #[serde(default)]
    pub task: Map<String, Value>,
    /// Every n-th task (index % n == n-1) is made a failure with exit code 1, so sweeps have
    /// something to find among many tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_every: Option<u64>,
}

/// One node's row of the prep/release status, with the files of those tasks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrepReleaseSpec {
    /// The row in the wire shape (`poolId`, `nodeId`, `jobPreparationTaskExecutionInfo`,
    /// `jobReleaseTaskExecutionInfo`); `nodeUrl`, `taskRootDirectory` and the URLs are filled in.
    pub status: Map<String, Value>,
    /// Files of the job preparation task, relative to its `taskRootDirectory` on the node.
    #[serde(default)]
    pub preparation_files: BTreeMap<String, FileSpec>,
    /// Files of the job release task, relative to its `taskRootDirectory` on the node.
    #[serde(default)]
    pub release_files: BTreeMap<String, FileSpec>,
}

/// A file: a plain string is its text; an object can generate content and set properties.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct FileSpec {
    /// Where the bytes come from.
    pub content: FileContentSpec,
    /// `creationTime` (RFC 3339 or relative such as `now-5m`); defaults to the task's start.
    pub creation_time: Option<String>,
    /// `lastModified` (RFC 3339 or relative); defaults to the task's end.
    pub last_modified: Option<String>,
    /// `contentType`; `application/octet-stream` when absent, as Batch reports.
    pub content_type: Option<String>,
    /// `fileMode` (octal, Linux nodes only), e.g. `0o100644`.
    pub file_mode: Option<String>,
}

/// Where a file's bytes come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FileContentSpec {
    /// UTF-8 text.
    Text(String),
    /// Binary content, base64 in the scenario file.
    Base64(String),
    /// Deterministic generated text of any size, never held in memory.
    Generate(GenerateSpec),
}

/// Generated content: log-like text lines derived from `seed`, ending with `tail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenerateSpec {
    /// Total size in bytes, `tail` included.
    pub bytes: u64,
    /// Seed: the same seed gives the same bytes.
    #[serde(default)]
    pub seed: u64,
    /// Text the file ends with (e.g. a traceback), so its last lines are realistic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<String>,
}

impl FileSpec {
    /// A text file with default properties.
    pub fn text(text: &str) -> Self {
        Self {
            content: FileContentSpec::Text(text.to_owned()),
            creation_time: None,
            last_modified: None,
            content_type: None,
            file_mode: None,
        }
    }
}

/// The object form of a file in the scenario JSON.
#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileObject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    generate: Option<GenerateSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    creation_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_modified: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file_mode: Option<String>,
}

impl TryFrom<Value> for FileSpec {
    type Error = String;

    fn try_from(value: Value) -> Result<Self, String> {
        let object: FileObject = match value {
            Value::String(text) => return Ok(FileSpec::text(&text)),
            Value::Object(_) => serde_json::from_value(value).map_err(|e| e.to_string())?,
            _ => return Err("a file is a string (its text) or an object".to_owned()),
        };
        let content = match (object.text, object.base64, object.generate) {
            (Some(text), None, None) => FileContentSpec::Text(text),
            (None, Some(b64), None) => FileContentSpec::Base64(b64),
            (None, None, Some(generate)) => FileContentSpec::Generate(generate),
            (None, None, None) => FileContentSpec::Text(String::new()),
            _ => return Err("a file has at most one of text, base64 and generate".to_owned()),
        };
        Ok(FileSpec {
            content,
            creation_time: object.creation_time,
            last_modified: object.last_modified,
            content_type: object.content_type,
            file_mode: object.file_mode,
        })
    }
}

impl From<FileSpec> for Value {
    fn from(spec: FileSpec) -> Value {
        let mut object = FileObject {
            text: None,
            base64: None,
            generate: None,
            creation_time: spec.creation_time,
            last_modified: spec.last_modified,
            content_type: spec.content_type,
            file_mode: spec.file_mode,
        };
        match spec.content {
            FileContentSpec::Text(text) => object.text = Some(text),
            FileContentSpec::Base64(b64) => object.base64 = Some(b64),
            FileContentSpec::Generate(generate) => object.generate = Some(generate),
        }
        serde_json::to_value(object).unwrap_or(Value::Null)
    }
}

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The JSON is malformed or does not fit the format; `path` is the JSON path of the field.
    #[error("invalid scenario JSON at {path}: {message}")]
    Json {
        /// JSON path of the offending field (`jobs[2].tasks[0].files`).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The JSON fits the format but is inconsistent (duplicate ids, missing node, …).
    #[error("invalid scenario: {0}")]
    Invalid(String),
}

impl Scenario {
    /// Parses a scenario from JSON text and checks it.
    pub fn from_json_str(text: &str) -> Result<Self, ScenarioError> {
        let deserializer = &mut serde_json::Deserializer::from_str(text);
        let scenario: Scenario =
            serde_path_to_error::deserialize(deserializer).map_err(|error| {
                ScenarioError::Json {
                    path: error.path().to_string(),
                    message: error.inner().to_string(),
                }
            })?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Reads and parses a scenario file.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self, ScenarioError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_json_str(&text)
    }

    /// The built-in demo scenario: every failure class of docs/failure-classes.md (see the crate docs).
    pub fn builtin() -> Self {
        // The file is part of the crate and covered by a test, so it always parses.
        Self::from_json_str(crate::BUILTIN_SCENARIO_JSON).unwrap_or_default()
    }

    /// Checks what serde cannot: ids present and unique, files placeable, keys decodable.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let invalid = |message: String| Err(ScenarioError::Invalid(message));
        if self.account.name.is_empty() {
            return invalid("account.name is empty".to_owned());
        }
        if base64::engine::general_purpose::STANDARD
            .decode(&self.account.key)
            .is_err()
        {
            return invalid("account.key is not valid base64".to_owned());
        }
        for rule in &self.faults {
            rule.validate().map_err(ScenarioError::Invalid)?;
        }
        let mut pool_ids = std::collections::BTreeSet::new();
        for pool in &self.pools {
            if !pool_ids.insert(pool.id.to_lowercase()) {
                return invalid(format!("pool {:?} is declared twice", pool.id));
            }
            check_times(
                &Value::Object(pool.pool.clone()),
                &format!("pool {}", pool.id),
            )?;
            check_node_generators(pool)?;
            let mut node_ids = std::collections::BTreeSet::new();
            for node in &pool.nodes {
                if !node_ids.insert(node.id.to_lowercase()) {
                    return invalid(format!(
                        "node {:?} is declared twice in pool {:?}",
                        node.id, pool.id
                    ));
                }
                let where_ = format!("node {}/{}", pool.id, node.id);
                check_files(&node.files, &where_)?;
                check_times(&Value::Object(node.node.clone()), &where_)?;
            }
        }
        let mut job_ids = std::collections::BTreeSet::new();
        for (index, spec) in self.jobs.iter().enumerate() {
            let Some(job_id) = spec.job.get("id").and_then(Value::as_str) else {
                return invalid(format!("jobs[{index}].job has no string \"id\""));
            };
            if !valid_id(job_id) {
                return invalid(format!("job id {job_id:?} is not a valid Batch id"));
            }
            if !job_ids.insert(job_id.to_lowercase()) {
                return invalid(format!("job {job_id:?} is declared twice"));
            }
            check_times(&Value::Object(spec.job.clone()), &format!("job {job_id}"))?;
            let mut task_ids = std::collections::BTreeSet::new();
            for (task_index, task) in spec.tasks.iter().enumerate() {
                let Some(task_id) = task.task.get("id").and_then(Value::as_str) else {
                    return invalid(format!(
                        "job {job_id:?} tasks[{task_index}].task has no string \"id\""
                    ));
                };
                if !valid_id(task_id) {
                    return invalid(format!("task id {task_id:?} is not a valid Batch id"));
                }
                if !task_ids.insert(task_id.to_lowercase()) {
                    return invalid(format!(
                        "task {task_id:?} of job {job_id:?} is declared twice"
                    ));
                }
                let where_ = format!("task {job_id}/{task_id}");
                check_times(&Value::Object(task.task.clone()), &where_)?;
                check_files(&task.files, &where_)?;
                let has_node = task
                    .task
                    .get("nodeInfo")
                    .and_then(|n| n.get("nodeId"))
                    .and_then(Value::as_str)
                    .is_some();
                if !task.files.is_empty() && !has_node {
                    return invalid(format!(
                        "{where_} has files but no nodeInfo.poolId/nodeId to hold them"
                    ));
                }
            }
            for generator in &spec.generate_tasks {
                if generator.count > MAX_GENERATED_TASKS {
                    return invalid(format!(
                        "job {job_id:?} generates {} tasks; the limit is {MAX_GENERATED_TASKS}",
                        generator.count
                    ));
                }
                if generator.fail_every == Some(0) {
                    return invalid(format!("job {job_id:?}: failEvery must be at least 1"));
                }
                if !valid_id(&format!("{}0", generator.id_prefix)) {
                    return invalid(format!(
                        "job {job_id:?}: idPrefix {:?} does not make valid ids",
                        generator.id_prefix
                    ));
                }
            }
            let has_prep = spec.job.contains_key("jobPreparationTask")
                || spec.job.contains_key("jobReleaseTask");
            if !spec.preparation_and_release_status.is_empty() && !has_prep {
                return invalid(format!(
                    "job {job_id:?} has preparationAndReleaseStatus but no jobPreparationTask or jobReleaseTask"
                ));
            }
            for row in &spec.preparation_and_release_status {
                let pool = row.status.get("poolId").and_then(Value::as_str);
                let node = row.status.get("nodeId").and_then(Value::as_str);
                if pool.is_none() || node.is_none() {
                    return invalid(format!(
                        "job {job_id:?}: every preparationAndReleaseStatus row needs poolId and nodeId"
                    ));
                }
                let where_ = format!("prep/release status of job {job_id}");
                check_times(&Value::Object(row.status.clone()), &where_)?;
                check_files(&row.preparation_files, &where_)?;
                check_files(&row.release_files, &where_)?;
            }
        }
        Ok(())
    }
}

/// Checks a pool's `generateNodes`: bounded, and making valid ids.
fn check_node_generators(pool: &PoolSpec) -> Result<(), ScenarioError> {
    let invalid = |message: String| Err(ScenarioError::Invalid(message));
    for generator in &pool.generate_nodes {
        if generator.count > MAX_GENERATED_NODES {
            return invalid(format!(
                "pool {:?} generates {} nodes; the limit is {MAX_GENERATED_NODES}",
                pool.id, generator.count
            ));
        }
        if generator.unusable_every == Some(0) {
            return invalid(format!(
                "pool {:?}: unusableEvery must be at least 1",
                pool.id
            ));
        }
        if !valid_id(&format!("{}0", generator.id_prefix)) {
            return invalid(format!(
                "pool {:?}: idPrefix {:?} does not make valid ids",
                pool.id, generator.id_prefix
            ));
        }
    }
    Ok(())
}

/// Batch ids: letters, digits, hyphens and underscores, 1..=64 characters.
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Rejects strings that look like relative times but do not parse, wherever they are.
fn check_times(value: &Value, where_: &str) -> Result<(), ScenarioError> {
    match value {
        Value::String(text) if clock::looks_relative(text) => {
            if clock::resolve_relative(text, time::OffsetDateTime::now_utc()).is_none() {
                return Err(ScenarioError::Invalid(format!(
                    "{where_}: {text:?} is not a valid relative time (use now, now-5m, now+1h30m, …)"
                )));
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|v| check_times(v, where_)),
        Value::Object(map) => map.values().try_for_each(|v| check_times(v, where_)),
        _ => Ok(()),
    }
}

/// Checks file paths and contents.
fn check_files(files: &BTreeMap<String, FileSpec>, where_: &str) -> Result<(), ScenarioError> {
    for (path, spec) in files {
        if crate::files::normalize_path(path).is_none() {
            return Err(ScenarioError::Invalid(format!(
                "{where_}: file path {path:?} is empty or contains . or .. segments"
            )));
        }
        match &spec.content {
            FileContentSpec::Base64(b64) => {
                if base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .is_err()
                {
                    return Err(ScenarioError::Invalid(format!(
                        "{where_}: file {path:?} has invalid base64"
                    )));
                }
            }
            FileContentSpec::Generate(generate) => {
                let tail = generate.tail.as_deref().map_or(0, str::len) as u64;
                if tail > generate.bytes {
                    return Err(ScenarioError::Invalid(format!(
                        "{where_}: file {path:?} has a tail longer than its {} bytes",
                        generate.bytes
                    )));
                }
            }
            FileContentSpec::Text(_) => {}
        }
        for time in [&spec.creation_time, &spec.last_modified]
            .into_iter()
            .flatten()
        {
            let now = time::OffsetDateTime::now_utc();
            if clock::resolve_relative(time, now).is_none() && clock::parse_time(time).is_none() {
                return Err(ScenarioError::Invalid(format!(
                    "{where_}: file {path:?} has time {time:?}, which is neither RFC 3339 nor relative"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_parses() {
        let scenario = Scenario::from_json_str(crate::BUILTIN_SCENARIO_JSON).unwrap();
        assert!(scenario.jobs.len() >= 8);
    }

    #[test]
    fn errors_name_the_field() {
        let error =
            Scenario::from_json_str(r#"{"jobs": [{"job": {"id": "a"}, "taks": []}]}"#).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("jobs[0]"), "{text}");
        assert!(text.contains("taks"), "{text}");
    }

    #[test]
    fn inconsistent_scenarios_are_refused() {
        let dup = r#"{"jobs": [{"job": {"id": "a"}}, {"job": {"id": "A"}}]}"#;
        assert!(matches!(
            Scenario::from_json_str(dup),
            Err(ScenarioError::Invalid(_))
        ));
        let homeless = r#"{"jobs": [{"job": {"id": "a"}, "tasks": [{"task": {"id": "t"}, "files": {"stdout.txt": "x"}}]}]}"#;
        assert!(Scenario::from_json_str(homeless).is_err());
        let bad_time = r#"{"jobs": [{"job": {"id": "a", "creationTime": "now-5q"}}]}"#;
        assert!(Scenario::from_json_str(bad_time).is_err());
        let bad_path =
            r#"{"pools": [{"id": "p", "nodes": [{"id": "n", "files": {"../x": "y"}}]}]}"#;
        assert!(Scenario::from_json_str(bad_path).is_err());
    }

    #[test]
    fn files_accept_both_forms() {
        let spec: FileSpec = serde_json::from_str(r#""hello""#).unwrap();
        assert_eq!(spec.content, FileContentSpec::Text("hello".into()));
        let spec: FileSpec = serde_json::from_str(
            r#"{"generate": {"bytes": 10, "seed": 1}, "fileMode": "0o100644"}"#,
        )
        .unwrap();
        assert!(matches!(spec.content, FileContentSpec::Generate(_)));
        assert!(serde_json::from_str::<FileSpec>(r#"{"text": "a", "base64": "YQ=="}"#).is_err());
        assert!(serde_json::from_str::<FileSpec>("3").is_err());
    }

    #[test]
    fn debug_redacts_secrets() {
        let scenario = Scenario {
            auth: AuthConfig {
                bearer_tokens: vec!["secret-token".into()],
                ..AuthConfig::default()
            },
            ..Scenario::default()
        };
        let text = format!("{scenario:?}");
        assert!(!text.contains(WELL_KNOWN_ACCOUNT_KEY));
        assert!(!text.contains("secret-token"));
    }
}
