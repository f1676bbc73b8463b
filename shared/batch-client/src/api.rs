//! The capability trait the pipeline depends on, and the small types of its signatures.
//!
//! Handlers hold an `Arc<dyn BatchApi>`; tests of the pipeline can implement the trait with
//! canned data, and [`crate::BatchClient`] is the real implementation.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use diagnosis::wire::{
    BatchJob, BatchPool, BatchTask, ComputeNode, DisableTasks, ListPage, NodeFile, PoolNodeCounts,
    PrepReleaseStatus, TaskCountsResult,
};
use foundation::{Deadline, Secret};
use futures::stream::{BoxStream, Stream, StreamExt, TryStreamExt};
use url::Url;

use crate::error::BatchError;

/// A list operation as a stream of pages (at most `maxresults` items each, 1000 by default),
/// fetched one at a time as the stream is polled, so memory does not grow with the list.
pub type PageStream<T> = BoxStream<'static, Result<ListPage<T>, BatchError>>;

/// Flattens a [`PageStream`] into a stream of items.
pub fn items<T: Send + 'static>(pages: PageStream<T>) -> BoxStream<'static, Result<T, BatchError>> {
    pages
        .map_ok(|page| futures::stream::iter(page.value.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
}

/// `$select` / `$expand` of a get operation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetOptions {
    /// `$select`: the properties to return (comma-separated), to keep bodies small.
    pub select: Option<String>,
    /// `$expand`: e.g. `stats`.
    pub expand: Option<String>,
}

/// OData options of a list operation (`$filter`, `$select`, `$expand`, `maxresults`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// `$filter`, e.g. `state eq 'completed' and executionInfo/result eq 'failure'`.
    pub filter: Option<String>,
    /// `$select`: the properties to return (comma-separated).
    pub select: Option<String>,
    /// `$expand`.
    pub expand: Option<String>,
    /// `maxresults`: items per page (1..=1000; the service default is 1000).
    pub max_results: Option<u32>,
}

/// Options of List Task Files / List Node Files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileListOptions {
    /// List the whole tree, not only the top directory.
    pub recursive: bool,
    /// `$filter`; Batch supports only `startswith(name,'…')` here.
    pub filter: Option<String>,
    /// `maxresults`.
    pub max_results: Option<u32>,
}

/// A file on a compute node, named by task or by node, or by a URL taken from a payload (a file
/// listing's `url`, a prep task's `taskRootDirectoryUrl` + name). URLs are checked same-origin
/// with the configured endpoint before any request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRef {
    /// A file of a task, relative to the task directory (`stdout.txt`, `wd/out.log`).
    Task {
        /// The job.
        job_id: String,
        /// The task.
        task_id: String,
        /// Path relative to the task directory; `/` or `\` separated.
        path: String,
    },
    /// A file of a node, relative to the node root (e.g. a job prep task's `stdout.txt`).
    Node {
        /// The pool.
        pool_id: String,
        /// The node.
        node_id: String,
        /// Path relative to the node root.
        path: String,
    },
    /// An absolute file URL from a payload. Untrusted until checked.
    Url(String),
}

impl FileRef {
    /// A task file.
    pub fn task(job_id: &str, task_id: &str, path: &str) -> Self {
        Self::Task {
            job_id: job_id.to_owned(),
            task_id: task_id.to_owned(),
            path: path.to_owned(),
        }
    }

    /// A node file.
    pub fn node(pool_id: &str, node_id: &str, path: &str) -> Self {
        Self::Node {
            pool_id: pool_id.to_owned(),
            node_id: node_id.to_owned(),
            path: path.to_owned(),
        }
    }
}

/// File properties from the headers of a HEAD or GET on a file (docs/batch-facts.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileInfo {
    /// Size in bytes of the whole file.
    pub size: u64,
    /// `Last-Modified`, verbatim (RFC 1123); compared verbatim to detect a changed file.
    pub last_modified: Option<String>,
    /// `ETag`, verbatim.
    pub etag: Option<String>,
    /// `ocp-batch-file-isdirectory`.
    pub is_directory: bool,
    /// `ocp-creation-time`, verbatim.
    pub creation_time: Option<String>,
    /// `ocp-batch-file-mode` (octal, Linux).
    pub file_mode: Option<String>,
    /// `Content-Type`.
    pub content_type: Option<String>,
}

impl FileInfo {
    /// What a HEAD would say about a file of a listing: the size from `contentLength`, the times
    /// as HTTP dates (whole seconds, the form of `Last-Modified`), so a `FileInfo` from a listing
    /// and one from a GET of the same file compare equal. `None` without a usable size; a time
    /// an HTTP date cannot hold (before 1970, after 9999) is left out.
    pub fn from_listing(file: &NodeFile) -> Option<Self> {
        let properties = file.properties.as_ref()?;
        let http_date = |t: &diagnosis::wire::Timestamp| {
            (1970..=9999)
                .contains(&t.0.year())
                .then(|| httpdate::fmt_http_date(std::time::SystemTime::from(t.0)))
        };
        Some(FileInfo {
            size: u64::try_from(properties.content_length?).ok()?,
            last_modified: properties.last_modified.as_ref().and_then(http_date),
            etag: None,
            is_directory: false,
            creation_time: properties.creation_time.as_ref().and_then(http_date),
            file_mode: properties.file_mode.clone(),
            content_type: properties.content_type.clone(),
        })
    }

    /// `Last-Modified` parsed, if it is a valid HTTP date.
    pub fn last_modified_time(&self) -> Option<std::time::SystemTime> {
        httpdate::parse_http_date(self.last_modified.as_deref()?).ok()
    }
}

/// How a download starts and how hard it tries to finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadOptions {
    /// First byte to fetch (to continue a copy an earlier process began).
    pub offset: u64,
    /// How many times a connection dropped mid-body is resumed from the byte reached.
    pub max_resumes: u32,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        Self {
            offset: 0,
            max_resumes: 5,
        }
    }
}

/// A file being downloaded: its properties, and its bytes as a stream of chunks.
///
/// The stream resumes by itself after a dropped connection (up to
/// [`DownloadOptions::max_resumes`] times, within the deadline), re-requesting with `ocp-range`
/// from the byte reached; if the file changed in between (Last-Modified, ETag or size) it ends
/// with [`BatchError::FileChanged`] rather than splicing two versions.
pub struct FileDownload {
    /// Properties of the file as first seen; `info.size` is the whole file's size.
    pub info: FileInfo,
    /// The offset of the first byte the stream yields.
    pub offset: u64,
    /// The chunks.
    pub(crate) chunks: BoxStream<'static, Result<Bytes, BatchError>>,
}

impl std::fmt::Debug for FileDownload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileDownload")
            .field("info", &self.info)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl Stream for FileDownload {
    type Item = Result<Bytes, BatchError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.chunks.poll_next_unpin(cx)
    }
}

/// Options of Terminate Job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TerminateJobOptions {
    /// `terminateReason` (the service default is `UserTerminate`).
    pub reason: Option<String>,
    /// `force=true`: terminate even if nodes have not finished processing the termination.
    pub force: bool,
    /// Only act if the job's ETag still matches (so an automated action never races a person).
    pub if_match: Option<String>,
}

/// The `$filter` of List Nodes that finds the nodes in trouble in one request per pool:
/// `unusable`, `starttaskfailed`, and nodes whose start task failed without `waitForSuccess`
/// (they stay `idle`). Node errors cannot be filtered on (docs/batch-facts.md).
pub const NODES_IN_TROUBLE_FILTER: &str =
    "state eq 'unusable' or state eq 'starttaskfailed' or startTaskInfo/result eq 'failure'";

/// The `$select` that goes with [`NODES_IN_TROUBLE_FILTER`]: what a diagnosis of a node reads.
pub const NODES_IN_TROUBLE_SELECT: &str = "id,url,state,stateTransitionTime,lastBootTime,allocationTime,vmSize,isDedicated,runningTasksCount,errors,startTask,startTaskInfo,nodeAgentInfo";

/// What happens to the tasks running on a node that is removed or reimaged
/// (`nodeDeallocationOption` / `nodeReimageOption`; Batch's default is `requeue`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NodeDeallocation {
    /// Stop them and put them back in the queue, to run on another node.
    #[default]
    Requeue,
    /// Stop them; they complete with a failure.
    Terminate,
    /// Let them finish first.
    TaskCompletion,
    /// Let them finish and wait for their retention time to expire.
    RetainedData,
}

impl NodeDeallocation {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requeue => "requeue",
            Self::Terminate => "terminate",
            Self::TaskCompletion => "taskcompletion",
            Self::RetainedData => "retaineddata",
        }
    }
}

/// Where Batch uploads a node agent's logs (Upload Batch Service Logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadLogsOptions {
    /// The Blob container URL: with a SAS granting write permission, or without one when
    /// `identity_resource_id` names an identity that may write there. A secret: it never reaches
    /// a log line or an error.
    pub container_url: Secret,
    /// Files holding a message from this time on are uploaded (whole).
    pub start_time: time::OffsetDateTime,
    /// Up to this time; everything after `start_time` when absent.
    pub end_time: Option<time::OffsetDateTime>,
    /// `identityReference.resourceId`: the ARM id of a user-assigned identity of the pool with
    /// write access to the container, instead of a SAS.
    pub identity_resource_id: Option<String>,
}

/// Batch's answer to Upload Batch Service Logs. The upload itself is asynchronous: the files
/// arrive under `{container}/{virtual_directory_name}/` afterwards.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct UploadLogsResult {
    /// The directory in the container the files go to (`{pool}/{node}/{unique id}`).
    pub virtual_directory_name: String,
    /// How many files will be uploaded.
    pub number_of_files_uploaded: u32,
}

/// Options of Remove Nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoveNodesOptions {
    /// What happens to the tasks running on the nodes.
    pub deallocation: NodeDeallocation,
    /// Only act if the pool's ETag still matches.
    pub if_match: Option<String>,
}

/// The result of a job or task action that did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ActionOutcome {
    /// The service accepted the action (202/204).
    Accepted,
    /// The job or task was already in (or past) the requested state; the service's 409 `code`
    /// says how (`JobCompleted`, `JobDisabled`, `TaskCompleted`, …). Success for an idempotent
    /// caller.
    AlreadyInState {
        /// The 409 code.
        code: String,
    },
}

/// The Batch operations the pipeline needs. Every call takes the [`Deadline`] it must finish by.
#[async_trait]
pub trait BatchApi: Send + Sync {
    /// Get Task.
    async fn get_task(
        &self,
        job_id: &str,
        task_id: &str,
        options: &GetOptions,
        deadline: Deadline,
    ) -> Result<BatchTask, BatchError>;

    /// List Tasks of a job, page by page.
    fn list_tasks(
        &self,
        job_id: &str,
        options: &ListOptions,
        deadline: Deadline,
    ) -> PageStream<BatchTask>;

    /// Get Job.
    async fn get_job(
        &self,
        job_id: &str,
        options: &GetOptions,
        deadline: Deadline,
    ) -> Result<BatchJob, BatchError>;

    /// List Jobs, page by page.
    fn list_jobs(&self, options: &ListOptions, deadline: Deadline) -> PageStream<BatchJob>;

    /// List Job Preparation and Release Task Status. A job without a prep task (409
    /// `JobPreparationTaskNotSpecified`) gives an empty stream, not an error.
    fn list_prep_release_status(
        &self,
        job_id: &str,
        options: &ListOptions,
        deadline: Deadline,
    ) -> PageStream<PrepReleaseStatus>;

    /// Get Job Task Counts.
    async fn get_task_counts(
        &self,
        job_id: &str,
        deadline: Deadline,
    ) -> Result<TaskCountsResult, BatchError>;

    /// List the files of a task.
    fn list_task_files(
        &self,
        job_id: &str,
        task_id: &str,
        options: &FileListOptions,
        deadline: Deadline,
    ) -> PageStream<NodeFile>;

    /// List the files of a node.
    fn list_node_files(
        &self,
        pool_id: &str,
        node_id: &str,
        options: &FileListOptions,
        deadline: Deadline,
    ) -> PageStream<NodeFile>;

    /// HEAD a task or node file: size, Last-Modified, ETag, is-directory.
    async fn file_properties(
        &self,
        file: &FileRef,
        deadline: Deadline,
    ) -> Result<FileInfo, BatchError>;

    /// Download a task or node file as a resumable stream (see [`FileDownload`]).
    async fn download_file(
        &self,
        file: &FileRef,
        options: &DownloadOptions,
        deadline: Deadline,
    ) -> Result<FileDownload, BatchError>;

    /// Terminate Job. Already completed or terminating → [`ActionOutcome::AlreadyInState`].
    async fn terminate_job(
        &self,
        job_id: &str,
        options: &TerminateJobOptions,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError>;

    /// Disable Job (`disableTasks` says what happens to running tasks). Already disabled or not
    /// active → [`ActionOutcome::AlreadyInState`].
    async fn disable_job(
        &self,
        job_id: &str,
        disable_tasks: DisableTasks,
        if_match: Option<&str>,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError>;

    /// Enable Job.
    async fn enable_job(
        &self,
        job_id: &str,
        if_match: Option<&str>,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError>;

    /// Terminate Task. Already completed → [`ActionOutcome::AlreadyInState`].
    async fn terminate_task(
        &self,
        job_id: &str,
        task_id: &str,
        if_match: Option<&str>,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError>;

    /// Checks that a URL from a payload (an event's account URL, a `nodeUrl`) is same-origin with
    /// the configured endpoint; [`BatchError::Refused`] otherwise.
    fn check_url(&self, url: &str) -> Result<Url, BatchError>;

    /// List Pools, page by page.
    fn list_pools(&self, options: &ListOptions, deadline: Deadline) -> PageStream<BatchPool>;

    /// Get Pool.
    async fn get_pool(
        &self,
        pool_id: &str,
        options: &GetOptions,
        deadline: Deadline,
    ) -> Result<BatchPool, BatchError>;

    /// List the nodes of a pool, page by page (e.g. with [`NODES_IN_TROUBLE_FILTER`] and
    /// [`NODES_IN_TROUBLE_SELECT`]).
    fn list_nodes(
        &self,
        pool_id: &str,
        options: &ListOptions,
        deadline: Deadline,
    ) -> PageStream<ComputeNode>;

    /// Get Node.
    async fn get_node(
        &self,
        pool_id: &str,
        node_id: &str,
        options: &GetOptions,
        deadline: Deadline,
    ) -> Result<ComputeNode, BatchError>;

    /// List Pool Node Counts (`/nodecounts`), page by page: at most 10 pools a page, and
    /// `maxresults` above 10 is refused by the service. The only filter is `poolId eq '…'`.
    /// The counts may lag behind the nodes.
    fn list_pool_node_counts(
        &self,
        options: &ListOptions,
        deadline: Deadline,
    ) -> PageStream<PoolNodeCounts>;

    /// Upload Batch Service Logs: asks Batch to upload the node agent's logs into a container.
    /// A node that is gone is [`BatchError::NotFound`] (`NodeNotFound`). The container URL never
    /// appears in a log line or in the error.
    async fn upload_node_logs(
        &self,
        pool_id: &str,
        node_id: &str,
        options: &UploadLogsOptions,
        deadline: Deadline,
    ) -> Result<UploadLogsResult, BatchError>;

    /// Remove Nodes (at most 100). A single node that is already gone (404 `NodeNotFound`), a
    /// pool being deleted (409 `PoolBeingDeleted`), or a pool resizing because these very nodes
    /// are already leaving (409 `PoolBeingResized`, each node then read: `leavingpool` or gone;
    /// e.g. a retry whose first answer was lost) is [`ActionOutcome::AlreadyInState`]. A pool
    /// resizing for another reason stays a [`BatchError::Conflict`]: retry later.
    async fn remove_nodes(
        &self,
        pool_id: &str,
        node_ids: &[String],
        options: &RemoveNodesOptions,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError>;

    /// Reimage Node. A node already being reimaged (409 `NodeBeingReimaged`) is
    /// [`ActionOutcome::AlreadyInState`]; a node that is gone is [`BatchError::NotFound`].
    async fn reimage_node(
        &self,
        pool_id: &str,
        node_id: &str,
        option: NodeDeallocation,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError>;
}

#[cfg(test)]
mod tests {
    use super::FileInfo;
    use diagnosis::wire::NodeFile;

    fn node_file(name: &str, properties: serde_json::Value) -> NodeFile {
        serde_json::from_value(serde_json::json!({
            "name": name,
            "url": format!("https://account.region.batch.azure.com/jobs/j/tasks/t/files/{name}"),
            "isDirectory": false,
            "properties": properties,
        }))
        .unwrap()
    }

    #[test]
    fn a_listed_file_reads_as_a_head_would() {
        // The shapes of the corpus (Tasks_ListTaskFiles 2026-10-01, FileListFromTask 2022).
        let listed = node_file(
            "startup\\ProcessEnv.cmd",
            serde_json::json!({
                "creationTime": "2025-09-19T21:56:17.679195Z",
                "lastModified": "2025-09-19T21:56:17.679195Z",
                "contentLength": "1813",
                "contentType": "application/octet-stream"
            }),
        );
        let info = FileInfo::from_listing(&listed).unwrap();
        assert_eq!(info.size, 1813);
        assert!(!info.is_directory);
        // The GET's `Last-Modified` of the same file: whole seconds, HTTP date.
        assert_eq!(
            info.last_modified.as_deref(),
            Some("Fri, 19 Sep 2025 21:56:17 GMT")
        );
        assert!(info.last_modified_time().is_some());
        assert_eq!(
            info.content_type.as_deref(),
            Some("application/octet-stream")
        );
        let old = node_file(
            "stderr.txt",
            serde_json::json!({"lastModified": "2022-08-26T21:56:17.5590855Z", "contentLength": 0}),
        );
        assert_eq!(FileInfo::from_listing(&old).map(|i| i.size), Some(0));
        // A time an HTTP date cannot hold is left out, never a panic.
        let ancient = node_file(
            "stdout.txt",
            serde_json::json!({"lastModified": "1960-01-01T00:00:00Z", "contentLength": 5}),
        );
        let info = FileInfo::from_listing(&ancient).unwrap();
        assert_eq!((info.size, info.last_modified), (5, None));
        // No usable size: the caller falls back to a HEAD.
        let sizeless = node_file(
            "stdout.txt",
            serde_json::json!({"lastModified": "2022-08-26T21:56:17Z"}),
        );
        assert_eq!(FileInfo::from_listing(&sizeless), None);
        let negative = node_file("stdout.txt", serde_json::json!({"contentLength": "-1"}));
        assert_eq!(FileInfo::from_listing(&negative), None);
    }
}
