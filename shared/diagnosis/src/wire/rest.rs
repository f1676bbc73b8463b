//! Batch REST bodies (`docs/batch-facts.md`): the subset of `BatchTask`, `BatchJob`,
//! prep/release status, files, task counts and error bodies that triage reads.
//!
//! Every field is optional or defaulted: Batch omits what it has not set, `$select` trims bodies,
//! and a missing field must never make a payload unreadable. Unknown fields are ignored. So the
//! structs say `#[serde(default)]` once, rather than each field: a missing field takes the value
//! of the struct's derived `Default` (none, empty, 0), also in the array form serde accepts for a
//! struct, where a field-by-field `Option` would make a short array an error.

use serde::{Deserialize, Serialize};

use super::lenient::{
    IsoDuration, Timestamp, int, non_empty_string, one_or_many, tolerant, tolerant_list, wire_enum,
};

wire_enum! {
    /// `BatchTaskState`.
    TaskState { Active => "active", Preparing => "preparing", Running => "running", Completed => "completed" }
}

wire_enum! {
    /// `BatchJobState`.
    JobState {
        Active => "active", Disabling => "disabling", Disabled => "disabled", Enabling => "enabling",
        Terminating => "terminating", Completed => "completed", Deleting => "deleting",
    }
}

wire_enum! {
    /// `BatchTaskExecutionResult`. Note the spec's doc string says "failed"; the value is `failure`.
    TaskResult { Success => "success", Failure => "failure" }
}

wire_enum! {
    /// `ErrorCategory` of a failure or scheduling error.
    ErrorCategory { UserError => "usererror", ServerError => "servererror" }
}

wire_enum! {
    /// `BatchJobAction` of an `ExitOptions`.
    JobAction { None => "none", Disable => "disable", Terminate => "terminate" }
}

wire_enum! {
    /// `DependencyAction` of an `ExitOptions`.
    DependencyAction { Satisfy => "satisfy", Block => "block" }
}

wire_enum! {
    /// `BatchTaskFailureMode`: what the job does when a task fails. Read-only after creation.
    OnTaskFailure { NoAction => "noaction", PerformExitOptionsJobAction => "performexitoptionsjobaction" }
}

wire_enum! {
    /// `BatchAllTasksCompleteMode`.
    OnAllTasksComplete { NoAction => "noaction", TerminateJob => "terminatejob" }
}

wire_enum! {
    /// State of a special task (job preparation, job release or start task) on one node.
    SpecialTaskState { Running => "running", Completed => "completed" }
}

/// State of a job preparation or release task on one node.
pub type PrepTaskState = SpecialTaskState;

wire_enum! {
    /// `disableTasks` of Disable Job: what happens to the job's running tasks.
    DisableTasks { Requeue => "requeue", Terminate => "terminate", Wait => "wait" }
}

/// A `{name, value}` pair (`NameValuePair`), as in `failureInfo.details` and job metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NameValue {
    /// The name.
    pub name: Option<String>,
    /// The value.
    pub value: Option<String>,
}

/// Why something failed, as Batch says it: `failureInfo` of a task or a special task,
/// `schedulingError` of a job or a diagnostic event, an `errors` entry of a node
/// (`BatchNodeError`), a pool's `resizeErrors` entry or its `autoScaleRun.error`. One shape
/// everywhere: a code, a message, and name-value details.
///
/// The details are `details` on a failure, `errorDetails` on a node error and `values` on a pool
/// error and in the legacy docs shape; each spelling is read wherever it appears, `values` first,
/// then `errorDetails`, then `details`. Keys only some of these objects carry (`category`, two of
/// the three detail spellings) are read tolerantly: an ill-formed one reads as absent, so a key
/// that one of them never read cannot make it unreadable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "FailureInfoWire")]
pub struct FailureInfo {
    /// `usererror` or `servererror`.
    pub category: Option<ErrorCategory>,
    /// The failure code, e.g. `FailureExitCode`. An open set: see the classification tables.
    pub code: Option<String>,
    /// Human text from Batch.
    pub message: Option<String>,
    /// Extra details, e.g. `Reason` and `Provider Error Json` of an `AllocationFailed`.
    pub details: Vec<NameValue>,
}

impl FailureInfo {
    /// The first detail called `name` (case-insensitive, surrounding spaces ignored).
    pub fn detail(&self, name: &str) -> Option<&str> {
        self.details
            .iter()
            .find(|v| {
                v.name
                    .as_deref()
                    .is_some_and(|n| n.trim().eq_ignore_ascii_case(name))
            })
            .and_then(|v| v.value.as_deref())
    }

    /// Whether it says something (a code or a message).
    pub fn is_set(&self) -> bool {
        self.code.is_some() || self.message.is_some()
    }
}

/// [`FailureInfo`] as it arrives, with each spelling of the details apart.
#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct FailureInfoWire {
    #[serde(deserialize_with = "tolerant")]
    category: Option<ErrorCategory>,
    #[serde(deserialize_with = "non_empty_string")]
    code: Option<String>,
    #[serde(deserialize_with = "non_empty_string")]
    message: Option<String>,
    #[serde(deserialize_with = "tolerant_list")]
    values: Option<Vec<NameValue>>,
    #[serde(deserialize_with = "tolerant_list")]
    error_details: Option<Vec<NameValue>>,
    #[serde(deserialize_with = "tolerant_list")]
    details: Option<Vec<NameValue>>,
}

impl From<FailureInfoWire> for FailureInfo {
    fn from(wire: FailureInfoWire) -> Self {
        Self {
            category: wire.category,
            code: wire.code,
            message: wire.message,
            details: wire
                .values
                .or(wire.error_details)
                .or(wire.details)
                .unwrap_or_default(),
        }
    }
}

/// `containerInfo` of a task execution.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ContainerInfo {
    /// The container id.
    pub container_id: Option<String>,
    /// Docker's `status` of the container.
    pub state: Option<String>,
    /// Docker's `error` of the container.
    pub error: Option<String>,
}

/// `executionInfo` of a task (`BatchTaskExecutionInfo`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TaskExecutionInfo {
    /// When the (last attempt of the) task started running.
    pub start_time: Option<Timestamp>,
    /// When the task completed.
    pub end_time: Option<Timestamp>,
    /// The exit code; absent when the task failed before it ran.
    #[serde(deserialize_with = "int::opt_i32")]
    pub exit_code: Option<i32>,
    /// Container details, for container tasks.
    pub container_info: Option<ContainerInfo>,
    /// Set only on a completed task that failed.
    pub failure_info: Option<FailureInfo>,
    /// Where API versions before 2017 put the same facts as `failureInfo` (same shape). Read
    /// through [`TaskExecutionInfo::failure`], which prefers `failureInfo`.
    pub scheduling_error: Option<FailureInfo>,
    /// Retries of the task application by Batch (non-zero exits only).
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub retry_count: i32,
    /// When the last retry started.
    pub last_retry_time: Option<Timestamp>,
    /// Requeues by the service (pool shrink, job disable with requeue).
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub requeue_count: i32,
    /// When the last requeue happened.
    pub last_requeue_time: Option<Timestamp>,
    /// `success` or `failure`, once completed.
    pub result: Option<TaskResult>,
}

impl TaskExecutionInfo {
    /// Why the task failed, as Batch reports it: `failureInfo`, or on a task of the pre-2017 API,
    /// which has no `failureInfo`, its `schedulingError`. An entry with neither a code nor a
    /// message says nothing and counts as absent.
    pub fn failure(&self) -> Option<&FailureInfo> {
        self.failure_info
            .as_ref()
            .or_else(|| self.scheduling_error.as_ref().filter(|f| f.is_set()))
    }
}

/// `nodeInfo` of a task (`BatchNodeInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NodeInfo {
    /// The affinity id of the node.
    pub affinity_id: Option<String>,
    /// URL of the node. Untrusted: never fetched unless it is same-origin with the account.
    pub node_url: Option<String>,
    /// The pool.
    pub pool_id: Option<String>,
    /// The node.
    #[serde(deserialize_with = "non_empty_string")]
    pub node_id: Option<String>,
    /// The task's directory on the node, relative to the node root.
    pub task_root_directory: Option<String>,
    /// URL of that directory. Untrusted, like `node_url`.
    pub task_root_directory_url: Option<String>,
}

/// `ExitOptions`: what Batch does when a task ends in a given way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ExitOptions {
    /// What happens to the job (only honoured under `onTaskFailure: performexitoptionsjobaction`).
    pub job_action: Option<JobAction>,
    /// Whether dependent tasks may run.
    pub dependency_action: Option<DependencyAction>,
}

/// One `exitCodes` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitCodeMapping {
    /// The exit code.
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub code: i32,
    /// What to do for it.
    #[serde(default)]
    pub exit_options: ExitOptions,
}

/// One `exitCodeRanges` entry; both ends inclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitCodeRangeMapping {
    /// First code of the range.
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub start: i32,
    /// Last code of the range (inclusive).
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub end: i32,
    /// What to do for it.
    #[serde(default)]
    pub exit_options: ExitOptions,
}

/// `exitConditions` of a task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ExitConditions {
    /// Exact exit codes.
    pub exit_codes: Vec<ExitCodeMapping>,
    /// Inclusive ranges of exit codes.
    pub exit_code_ranges: Vec<ExitCodeRangeMapping>,
    /// When the task could not start (resource files, command launch, container).
    pub pre_processing_error: Option<ExitOptions>,
    /// When output files could not be uploaded.
    pub file_upload_error: Option<ExitOptions>,
    /// Everything not listed above (except exit code 0).
    #[serde(rename = "default")]
    pub default_options: Option<ExitOptions>,
}

/// `constraints` of a task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TaskConstraints {
    /// Longest a task may run, counted from when it starts.
    pub max_wall_clock_time: Option<IsoDuration>,
    /// How long the task directory is kept after the task completes (default 7 days).
    pub retention_time: Option<IsoDuration>,
    /// Retries allowed; -1 is unlimited.
    #[serde(deserialize_with = "int::opt_i32")]
    pub max_task_retry_count: Option<i32>,
}

/// A resource file the task downloads before it runs. Only the fields used in hints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ResourceFile {
    /// Where the file lands, relative to the working directory.
    pub file_path: Option<String>,
    /// `httpUrl` source. May hold a SAS token: never echoed unredacted.
    pub http_url: Option<String>,
    /// `storageContainerUrl` source. May hold a SAS token.
    pub storage_container_url: Option<String>,
    /// `autoStorageContainerName` source.
    pub auto_storage_container_name: Option<String>,
}

/// An output file the task uploads when it ends. Only the fields used in hints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OutputFile {
    /// Glob relative to the working directory, e.g. `../std*.txt`.
    pub file_pattern: Option<String>,
}

/// `containerSettings` of a task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ContainerSettings {
    /// The image.
    pub image_name: Option<String>,
}

/// A Batch task (`BatchTask`), from Get Task, List Tasks, or built from a diagnostic event.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct BatchTask {
    /// Task id.
    pub id: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// URL of the task; names the account and job.
    pub url: Option<String>,
    /// ETag.
    pub e_tag: Option<String>,
    /// When the task was added.
    pub creation_time: Option<Timestamp>,
    /// Current state.
    pub state: Option<TaskState>,
    /// When the state last changed.
    pub state_transition_time: Option<Timestamp>,
    /// State before that.
    pub previous_state: Option<TaskState>,
    /// The command line. May hold secrets: only ever inspected, never echoed.
    pub command_line: Option<String>,
    /// Rules for what Batch does on each kind of exit.
    pub exit_conditions: Option<ExitConditions>,
    /// Resource files.
    pub resource_files: Vec<ResourceFile>,
    /// Output files.
    pub output_files: Vec<OutputFile>,
    /// Container settings, for container tasks.
    pub container_settings: Option<ContainerSettings>,
    /// Constraints.
    pub constraints: Option<TaskConstraints>,
    /// Slots the task takes.
    #[serde(deserialize_with = "int::opt_i32")]
    pub required_slots: Option<i32>,
    /// What happened when it ran.
    pub execution_info: Option<TaskExecutionInfo>,
    /// Where it ran.
    pub node_info: Option<NodeInfo>,
}

/// `jobPreparationTask` / `jobReleaseTask` of a job. Only the fields used in diagnosis.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct JobSpecialTask {
    /// Task id (default `jobpreparation` / `jobrelease`).
    pub id: Option<String>,
    /// The command line. Only inspected, never echoed.
    pub command_line: Option<String>,
    /// Prep only: whether tasks wait for the prep task to succeed (default true).
    pub wait_for_success: Option<bool>,
}

/// `constraints` of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct JobConstraints {
    /// Longest the job may run, counted from its creation.
    pub max_wall_clock_time: Option<IsoDuration>,
    /// Default retry count of the job's tasks.
    #[serde(deserialize_with = "int::opt_i32")]
    pub max_task_retry_count: Option<i32>,
}

/// `poolInfo` of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PoolInfo {
    /// The pool, unless the job uses an auto pool.
    pub pool_id: Option<String>,
}

/// `executionInfo` of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct JobExecutionInfo {
    /// When the job started.
    pub start_time: Option<Timestamp>,
    /// When it completed.
    pub end_time: Option<Timestamp>,
    /// The pool it runs on.
    pub pool_id: Option<String>,
    /// Why it could not be scheduled, if so.
    pub scheduling_error: Option<FailureInfo>,
    /// Why it ended (`MaxWallClockTimeExpiry`, `TaskFailed`, `UserTerminate`, or any user text).
    pub terminate_reason: Option<String>,
}

/// A Batch job (`BatchJob`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct BatchJob {
    /// Job id.
    pub id: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// URL of the job; names the account.
    pub url: Option<String>,
    /// ETag, for `If-Match` on job actions.
    pub e_tag: Option<String>,
    /// When the job was created.
    pub creation_time: Option<Timestamp>,
    /// Current state.
    pub state: Option<JobState>,
    /// When the state last changed.
    pub state_transition_time: Option<Timestamp>,
    /// State before that.
    pub previous_state: Option<JobState>,
    /// Constraints.
    pub constraints: Option<JobConstraints>,
    /// The job preparation task, if any.
    pub job_preparation_task: Option<JobSpecialTask>,
    /// The job release task, if any.
    pub job_release_task: Option<JobSpecialTask>,
    /// The pool.
    pub pool_info: Option<PoolInfo>,
    /// What happens when all tasks complete.
    pub on_all_tasks_complete: Option<OnAllTasksComplete>,
    /// Whether tasks' `exitOptions.jobAction` is honoured.
    pub on_task_failure: Option<OnTaskFailure>,
    /// Execution details.
    pub execution_info: Option<JobExecutionInfo>,
}

/// Execution of a special task on one node: a job preparation or release task
/// (`jobPreparationTaskExecutionInfo`, `jobReleaseTaskExecutionInfo`), or a node's start task
/// (`startTaskInfo`). The fields only some of them carry are read tolerantly (see
/// [`FailureInfo`]).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SpecialTaskExecutionInfo {
    /// When the (last attempt of the) task started.
    pub start_time: Option<Timestamp>,
    /// When it ended.
    pub end_time: Option<Timestamp>,
    /// `running` or `completed`.
    pub state: Option<SpecialTaskState>,
    /// Prep and release: its directory on the node, where its stdout/stderr are.
    #[serde(deserialize_with = "tolerant")]
    pub task_root_directory: Option<String>,
    /// Prep and release: URL of that directory. Untrusted.
    #[serde(deserialize_with = "tolerant")]
    pub task_root_directory_url: Option<String>,
    /// Exit code; absent when it failed before it ran.
    #[serde(deserialize_with = "int::opt_i32")]
    pub exit_code: Option<i32>,
    /// Container details, for a container task.
    pub container_info: Option<ContainerInfo>,
    /// Set when it failed.
    pub failure_info: Option<FailureInfo>,
    /// Retries so far (release has none).
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub retry_count: i32,
    /// Start task: when the last retry started.
    #[serde(deserialize_with = "tolerant")]
    pub last_retry_time: Option<Timestamp>,
    /// `success` or `failure`.
    pub result: Option<TaskResult>,
}

/// Execution of the job preparation or release task on one node.
pub type PrepTaskExecutionInfo = SpecialTaskExecutionInfo;

/// One entry of List Job Preparation and Release Task Status: one node.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PrepReleaseStatus {
    /// The pool.
    pub pool_id: Option<String>,
    /// The node (possibly since removed from the pool).
    pub node_id: Option<String>,
    /// URL of the node. Untrusted.
    pub node_url: Option<String>,
    /// The job preparation task on that node.
    pub job_preparation_task_execution_info: Option<PrepTaskExecutionInfo>,
    /// The job release task on that node.
    pub job_release_task_execution_info: Option<PrepTaskExecutionInfo>,
}

/// `properties` of a task or node file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FileProperties {
    /// When the file was created.
    pub creation_time: Option<Timestamp>,
    /// When it was last written.
    pub last_modified: Option<Timestamp>,
    /// Size in bytes (a JSON string in new API versions, a number in old ones).
    #[serde(deserialize_with = "int::opt_i64")]
    pub content_length: Option<i64>,
    /// Content type.
    pub content_type: Option<String>,
    /// Octal file mode (Linux).
    pub file_mode: Option<String>,
}

/// One entry of List Task Files / List Node Files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NodeFile {
    /// Path relative to the task (or node) directory; `\` or `/` separated.
    pub name: Option<String>,
    /// URL of the file. Untrusted.
    pub url: Option<String>,
    /// Whether it is a directory.
    pub is_directory: Option<bool>,
    /// Size and times.
    pub properties: Option<FileProperties>,
}

/// Counts by task state (`taskCounts` of Get Job Task Counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TaskCounts {
    /// Active (queued) tasks.
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub active: i32,
    /// Running tasks.
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub running: i32,
    /// Completed tasks.
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub completed: i32,
    /// Completed with result `success`.
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub succeeded: i32,
    /// Completed with result `failure`.
    #[serde(deserialize_with = "int::i32_or_zero")]
    pub failed: i32,
}

/// The body of Get Job Task Counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TaskCountsResult {
    /// Counts of tasks.
    pub task_counts: TaskCounts,
    /// Counts of task slots, same shape.
    pub task_slot_counts: TaskCounts,
}

/// `message` of an error body: `{lang, value}` (the spec), or a bare string (seen from proxies).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "MessageWire")]
pub struct ErrorMessage {
    /// Language tag.
    pub lang: Option<String>,
    /// The text; ends with `\nRequestId:…\nTime:…`.
    pub value: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum MessageWire {
    Text(String),
    Object {
        #[serde(default)]
        lang: Option<String>,
        #[serde(default)]
        value: Option<String>,
    },
}

impl From<MessageWire> for ErrorMessage {
    fn from(wire: MessageWire) -> Self {
        match wire {
            MessageWire::Text(value) => Self {
                lang: None,
                value: Some(value),
            },
            MessageWire::Object { lang, value } => Self { lang, value },
        }
    }
}

/// A `{key, value}` pair of an error body (`BatchErrorDetail`; note `key`, not `name`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ErrorDetail {
    /// The key.
    pub key: Option<String>,
    /// The value.
    pub value: Option<String>,
}

/// A Batch REST error body: top-level `code`, `message{lang,value}`, `values[{key,value}]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct BatchErrorBody {
    /// The error code, e.g. `TaskCompleted`.
    pub code: Option<String>,
    /// The message.
    pub message: Option<ErrorMessage>,
    /// Details.
    #[serde(deserialize_with = "one_or_many")]
    pub values: Vec<ErrorDetail>,
}

impl BatchErrorBody {
    /// The message without the `RequestId:`/`Time:` lines Batch appends.
    pub fn message_text(&self) -> Option<&str> {
        let text = self.message.as_ref()?.value.as_deref()?;
        let end = text.find("\nRequestId:").unwrap_or(text.len());
        Some(text[..end].trim_end())
    }

    /// The request id embedded in the message, if any.
    pub fn request_id(&self) -> Option<&str> {
        let text = self.message.as_ref()?.value.as_deref()?;
        let start = text.find("RequestId:")? + "RequestId:".len();
        let rest = &text[start..];
        Some(rest[..rest.find('\n').unwrap_or(rest.len())].trim())
    }
}

/// A page of a list operation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ListPage<T> {
    /// The items.
    #[serde(default = "Vec::new")]
    pub value: Vec<T>,
    /// Absolute URL of the next page (with `$skiptoken`), if there is one.
    #[serde(default, rename = "odata.nextLink")]
    pub next_link: Option<String>,
}

/// The account name in a Batch URL: the first label of
/// `https://{account}.{region}.batch.azure.com/…`, lower-cased. `None` if the text is not such a
/// URL (emulator and custom endpoints give the first host label too).
pub fn account_from_url(url: &str) -> Option<String> {
    let after_scheme = url.split_once("://")?.1;
    let host = after_scheme.split(['/', '?', '#']).next()?;
    let host = host.rsplit('@').next()?;
    let host = host.split(':').next()?;
    let label = host.split('.').next()?;
    if label.is_empty() || label.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(label.to_ascii_lowercase())
}
