//! Batch REST bodies (docs/batch-facts.md): the subset of `BatchTask`, `BatchJob`, prep/release status,
//! files, task counts and error bodies that triage reads.
//!
//! Every field is optional or defaulted: Batch omits what it has not set, `$select` trims bodies,
//! and a missing field must never make a payload unreadable. Unknown fields are ignored.

use serde::{Deserialize, Serialize};

use super::lenient::{IsoDuration, Timestamp, int, one_or_many, wire_enum};

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
    /// State of a job preparation or release task on one node.
    PrepTaskState { Running => "running", Completed => "completed" }
}

wire_enum! {
    /// `disableTasks` of Disable Job: what happens to the job's running tasks.
    DisableTasks { Requeue => "requeue", Terminate => "terminate", Wait => "wait" }
}

/// A `{name, value}` pair (`NameValuePair`), as in `failureInfo.details` and job metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameValue {
    /// The name.
    #[serde(default)]
    pub name: Option<String>,
    /// The value.
    #[serde(default)]
    pub value: Option<String>,
}

/// `failureInfo` of a task, or `schedulingError` of a job or a diagnostic event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureInfo {
    /// `usererror` or `servererror`.
    #[serde(default)]
    pub category: Option<ErrorCategory>,
    /// The failure code, e.g. `FailureExitCode`. An open set: see the classification tables.
    #[serde(default, deserialize_with = "super::lenient::non_empty_string")]
    pub code: Option<String>,
    /// Human text from Batch.
    #[serde(default, deserialize_with = "super::lenient::non_empty_string")]
    pub message: Option<String>,
    /// Extra details. The legacy docs shape `values: {name, value}` is accepted too.
    #[serde(default, alias = "values", deserialize_with = "one_or_many")]
    pub details: Vec<NameValue>,
}

/// `containerInfo` of a task execution.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInfo {
    /// The container id.
    #[serde(default)]
    pub container_id: Option<String>,
    /// Docker's `status` of the container.
    #[serde(default)]
    pub state: Option<String>,
    /// Docker's `error` of the container.
    #[serde(default)]
    pub error: Option<String>,
}

/// `executionInfo` of a task (`BatchTaskExecutionInfo`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskExecutionInfo {
    /// When the (last attempt of the) task started running.
    #[serde(default)]
    pub start_time: Option<Timestamp>,
    /// When the task completed.
    #[serde(default)]
    pub end_time: Option<Timestamp>,
    /// The exit code; absent when the task failed before it ran.
    #[serde(default, deserialize_with = "int::opt_i32")]
    pub exit_code: Option<i32>,
    /// Container details, for container tasks.
    #[serde(default)]
    pub container_info: Option<ContainerInfo>,
    /// Set only on a completed task that failed.
    #[serde(default)]
    pub failure_info: Option<FailureInfo>,
    /// Where API versions before 2017 put the same facts as `failureInfo` (same shape). Read
    /// through [`TaskExecutionInfo::failure`], which prefers `failureInfo`.
    #[serde(default)]
    pub scheduling_error: Option<FailureInfo>,
    /// Retries of the task application by Batch (non-zero exits only).
    #[serde(default, deserialize_with = "int::i32_or_zero")]
    pub retry_count: i32,
    /// When the last retry started.
    #[serde(default)]
    pub last_retry_time: Option<Timestamp>,
    /// Requeues by the service (pool shrink, job disable with requeue).
    #[serde(default, deserialize_with = "int::i32_or_zero")]
    pub requeue_count: i32,
    /// When the last requeue happened.
    #[serde(default)]
    pub last_requeue_time: Option<Timestamp>,
    /// `success` or `failure`, once completed.
    #[serde(default)]
    pub result: Option<TaskResult>,
}

impl TaskExecutionInfo {
    /// Why the task failed, as Batch reports it: `failureInfo`, or on a task of the pre-2017 API,
    /// which has no `failureInfo`, its `schedulingError`. An entry with neither a code nor a
    /// message says nothing and counts as absent.
    pub fn failure(&self) -> Option<&FailureInfo> {
        self.failure_info.as_ref().or_else(|| {
            self.scheduling_error
                .as_ref()
                .filter(|f| f.code.is_some() || f.message.is_some())
        })
    }
}

/// `nodeInfo` of a task (`BatchNodeInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// The affinity id of the node.
    #[serde(default)]
    pub affinity_id: Option<String>,
    /// URL of the node. Untrusted: never fetched unless it is same-origin with the account.
    #[serde(default)]
    pub node_url: Option<String>,
    /// The pool.
    #[serde(default)]
    pub pool_id: Option<String>,
    /// The node.
    #[serde(default, deserialize_with = "super::lenient::non_empty_string")]
    pub node_id: Option<String>,
    /// The task's directory on the node, relative to the node root.
    #[serde(default)]
    pub task_root_directory: Option<String>,
    /// URL of that directory. Untrusted, like `node_url`.
    #[serde(default)]
    pub task_root_directory_url: Option<String>,
}

/// `ExitOptions`: what Batch does when a task ends in a given way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitOptions {
    /// What happens to the job (only honoured under `onTaskFailure: performexitoptionsjobaction`).
    #[serde(default)]
    pub job_action: Option<JobAction>,
    /// Whether dependent tasks may run.
    #[serde(default)]
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
#[serde(rename_all = "camelCase")]
pub struct ExitConditions {
    /// Exact exit codes.
    #[serde(default)]
    pub exit_codes: Vec<ExitCodeMapping>,
    /// Inclusive ranges of exit codes.
    #[serde(default)]
    pub exit_code_ranges: Vec<ExitCodeRangeMapping>,
    /// When the task could not start (resource files, command launch, container).
    #[serde(default)]
    pub pre_processing_error: Option<ExitOptions>,
    /// When output files could not be uploaded.
    #[serde(default)]
    pub file_upload_error: Option<ExitOptions>,
    /// Everything not listed above (except exit code 0).
    #[serde(default, rename = "default")]
    pub default_options: Option<ExitOptions>,
}

/// `constraints` of a task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskConstraints {
    /// Longest a task may run, counted from when it starts.
    #[serde(default)]
    pub max_wall_clock_time: Option<IsoDuration>,
    /// How long the task directory is kept after the task completes (default 7 days).
    #[serde(default)]
    pub retention_time: Option<IsoDuration>,
    /// Retries allowed; -1 is unlimited.
    #[serde(default, deserialize_with = "int::opt_i32")]
    pub max_task_retry_count: Option<i32>,
}

/// A resource file the task downloads before it runs. Only the fields used in hints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceFile {
    /// Where the file lands, relative to the working directory.
    #[serde(default)]
    pub file_path: Option<String>,
    /// `httpUrl` source. May hold a SAS token: never echoed unredacted.
    #[serde(default)]
    pub http_url: Option<String>,
    /// `storageContainerUrl` source. May hold a SAS token.
    #[serde(default)]
    pub storage_container_url: Option<String>,
    /// `autoStorageContainerName` source.
    #[serde(default)]
    pub auto_storage_container_name: Option<String>,
}

/// An output file the task uploads when it ends. Only the fields used in hints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputFile {
    /// Glob relative to the working directory, e.g. `../std*.txt`.
    #[serde(default)]
    pub file_pattern: Option<String>,
}

/// `containerSettings` of a task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSettings {
    /// The image.
    #[serde(default)]
    pub image_name: Option<String>,
}

/// A Batch task (`BatchTask`), from Get Task, List Tasks, or built from a diagnostic event.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchTask {
    /// Task id.
    #[serde(default)]
    pub id: Option<String>,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// URL of the task; names the account and job.
    #[serde(default)]
    pub url: Option<String>,
    /// ETag.
    #[serde(default)]
    pub e_tag: Option<String>,
    /// When the task was added.
    #[serde(default)]
    pub creation_time: Option<Timestamp>,
    /// Current state.
    #[serde(default)]
    pub state: Option<TaskState>,
    /// When the state last changed.
    #[serde(default)]
    pub state_transition_time: Option<Timestamp>,
    /// State before that.
    #[serde(default)]
    pub previous_state: Option<TaskState>,
    /// The command line. May hold secrets: only ever inspected, never echoed.
    #[serde(default)]
    pub command_line: Option<String>,
    /// Rules for what Batch does on each kind of exit.
    #[serde(default)]
    pub exit_conditions: Option<ExitConditions>,
    /// Resource files.
    #[serde(default)]
    pub resource_files: Vec<ResourceFile>,
    /// Output files.
    #[serde(default)]
    pub output_files: Vec<OutputFile>,
    /// Container settings, for container tasks.
    #[serde(default)]
    pub container_settings: Option<ContainerSettings>,
    /// Constraints.
    #[serde(default)]
    pub constraints: Option<TaskConstraints>,
    /// Slots the task takes.
    #[serde(default, deserialize_with = "int::opt_i32")]
    pub required_slots: Option<i32>,
    /// What happened when it ran.
    #[serde(default)]
    pub execution_info: Option<TaskExecutionInfo>,
    /// Where it ran.
    #[serde(default)]
    pub node_info: Option<NodeInfo>,
}

/// `jobPreparationTask` / `jobReleaseTask` of a job. Only the fields used in diagnosis.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpecialTask {
    /// Task id (default `jobpreparation` / `jobrelease`).
    #[serde(default)]
    pub id: Option<String>,
    /// The command line. Only inspected, never echoed.
    #[serde(default)]
    pub command_line: Option<String>,
    /// Prep only: whether tasks wait for the prep task to succeed (default true).
    #[serde(default)]
    pub wait_for_success: Option<bool>,
}

/// `constraints` of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobConstraints {
    /// Longest the job may run, counted from its creation.
    #[serde(default)]
    pub max_wall_clock_time: Option<IsoDuration>,
    /// Default retry count of the job's tasks.
    #[serde(default, deserialize_with = "int::opt_i32")]
    pub max_task_retry_count: Option<i32>,
}

/// `poolInfo` of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolInfo {
    /// The pool, unless the job uses an auto pool.
    #[serde(default)]
    pub pool_id: Option<String>,
}

/// `executionInfo` of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobExecutionInfo {
    /// When the job started.
    #[serde(default)]
    pub start_time: Option<Timestamp>,
    /// When it completed.
    #[serde(default)]
    pub end_time: Option<Timestamp>,
    /// The pool it runs on.
    #[serde(default)]
    pub pool_id: Option<String>,
    /// Why it could not be scheduled, if so.
    #[serde(default)]
    pub scheduling_error: Option<FailureInfo>,
    /// Why it ended (`MaxWallClockTimeExpiry`, `TaskFailed`, `UserTerminate`, or any user text).
    #[serde(default)]
    pub terminate_reason: Option<String>,
}

/// A Batch job (`BatchJob`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchJob {
    /// Job id.
    #[serde(default)]
    pub id: Option<String>,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// URL of the job; names the account.
    #[serde(default)]
    pub url: Option<String>,
    /// ETag, for `If-Match` on job actions.
    #[serde(default)]
    pub e_tag: Option<String>,
    /// When the job was created.
    #[serde(default)]
    pub creation_time: Option<Timestamp>,
    /// Current state.
    #[serde(default)]
    pub state: Option<JobState>,
    /// When the state last changed.
    #[serde(default)]
    pub state_transition_time: Option<Timestamp>,
    /// State before that.
    #[serde(default)]
    pub previous_state: Option<JobState>,
    /// Constraints.
    #[serde(default)]
    pub constraints: Option<JobConstraints>,
    /// The job preparation task, if any.
    #[serde(default)]
    pub job_preparation_task: Option<JobSpecialTask>,
    /// The job release task, if any.
    #[serde(default)]
    pub job_release_task: Option<JobSpecialTask>,
    /// The pool.
    #[serde(default)]
    pub pool_info: Option<PoolInfo>,
    /// What happens when all tasks complete.
    #[serde(default)]
    pub on_all_tasks_complete: Option<OnAllTasksComplete>,
    /// Whether tasks' `exitOptions.jobAction` is honoured.
    #[serde(default)]
    pub on_task_failure: Option<OnTaskFailure>,
    /// Execution details.
    #[serde(default)]
    pub execution_info: Option<JobExecutionInfo>,
}

/// Execution of the job preparation or release task on one node.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrepTaskExecutionInfo {
    /// When it started.
    #[serde(default)]
    pub start_time: Option<Timestamp>,
    /// When it ended.
    #[serde(default)]
    pub end_time: Option<Timestamp>,
    /// `running` or `completed`.
    #[serde(default)]
    pub state: Option<PrepTaskState>,
    /// Its directory on the node: where its stdout/stderr are.
    #[serde(default)]
    pub task_root_directory: Option<String>,
    /// URL of that directory. Untrusted.
    #[serde(default)]
    pub task_root_directory_url: Option<String>,
    /// Exit code, when it ran.
    #[serde(default, deserialize_with = "int::opt_i32")]
    pub exit_code: Option<i32>,
    /// Container details.
    #[serde(default)]
    pub container_info: Option<ContainerInfo>,
    /// Set when it failed.
    #[serde(default)]
    pub failure_info: Option<FailureInfo>,
    /// Retries (prep only; release has none).
    #[serde(default, deserialize_with = "int::i32_or_zero")]
    pub retry_count: i32,
    /// `success` or `failure`.
    #[serde(default)]
    pub result: Option<TaskResult>,
}

/// One entry of List Job Preparation and Release Task Status: one node.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrepReleaseStatus {
    /// The pool.
    #[serde(default)]
    pub pool_id: Option<String>,
    /// The node (possibly since removed from the pool).
    #[serde(default)]
    pub node_id: Option<String>,
    /// URL of the node. Untrusted.
    #[serde(default)]
    pub node_url: Option<String>,
    /// The job preparation task on that node.
    #[serde(default)]
    pub job_preparation_task_execution_info: Option<PrepTaskExecutionInfo>,
    /// The job release task on that node.
    #[serde(default)]
    pub job_release_task_execution_info: Option<PrepTaskExecutionInfo>,
}

/// `properties` of a task or node file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileProperties {
    /// When the file was created.
    #[serde(default)]
    pub creation_time: Option<Timestamp>,
    /// When it was last written.
    #[serde(default)]
    pub last_modified: Option<Timestamp>,
    /// Size in bytes (a JSON string in new API versions, a number in old ones).
    #[serde(default, deserialize_with = "int::opt_i64")]
    pub content_length: Option<i64>,
    /// Content type.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Octal file mode (Linux).
    #[serde(default)]
    pub file_mode: Option<String>,
}

/// One entry of List Task Files / List Node Files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeFile {
    /// Path relative to the task (or node) directory; `\` or `/` separated.
    #[serde(default)]
    pub name: Option<String>,
    /// URL of the file. Untrusted.
    #[serde(default)]
    pub url: Option<String>,
    /// Whether it is a directory.
    #[serde(default)]
    pub is_directory: Option<bool>,
    /// Size and times.
    #[serde(default)]
    pub properties: Option<FileProperties>,
}

/// Counts by task state (`taskCounts` of Get Job Task Counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskCounts {
    /// Active (queued) tasks.
    #[serde(default, deserialize_with = "int::i32_or_zero")]
    pub active: i32,
    /// Running tasks.
    #[serde(default, deserialize_with = "int::i32_or_zero")]
    pub running: i32,
    /// Completed tasks.
    #[serde(default, deserialize_with = "int::i32_or_zero")]
    pub completed: i32,
    /// Completed with result `success`.
    #[serde(default, deserialize_with = "int::i32_or_zero")]
    pub succeeded: i32,
    /// Completed with result `failure`.
    #[serde(default, deserialize_with = "int::i32_or_zero")]
    pub failed: i32,
}

/// The body of Get Job Task Counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskCountsResult {
    /// Counts of tasks.
    #[serde(default)]
    pub task_counts: TaskCounts,
    /// Counts of task slots, same shape.
    #[serde(default)]
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
pub struct ErrorDetail {
    /// The key.
    #[serde(default)]
    pub key: Option<String>,
    /// The value.
    #[serde(default)]
    pub value: Option<String>,
}

/// A Batch REST error body: top-level `code`, `message{lang,value}`, `values[{key,value}]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct BatchErrorBody {
    /// The error code, e.g. `TaskCompleted`.
    #[serde(default)]
    pub code: Option<String>,
    /// The message.
    #[serde(default)]
    pub message: Option<ErrorMessage>,
    /// Details.
    #[serde(default, deserialize_with = "one_or_many")]
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
