//! The operations of [`BatchApi`] on [`BatchClient`]: each checks its ids, builds the URL under
//! the endpoint and hands a [`Call`] to `request`; the 409 codes that mean "already done" or
//! "nothing to list" are named here.

use async_trait::async_trait;
use bytes::Bytes;
use diagnosis::wire::{
    BatchJob, BatchPool, BatchTask, ComputeNode, DisableTasks, NodeFile, PoolNodeCounts,
    PrepReleaseStatus, TaskCountsResult,
};
use foundation::Deadline;
use reqwest::Method;
use reqwest::header::HeaderMap;
use url::Url;

use crate::api::{
    ActionOutcome, BatchApi, DownloadOptions, FileDownload, FileInfo, FileListOptions, FileRef,
    GetOptions, ListOptions, NodeDeallocation, PageStream, RemoveNodesOptions, TerminateJobOptions,
    UploadLogsOptions, UploadLogsResult,
};
use crate::client::{BatchClient, check_id};
use crate::error::BatchError;
use crate::request::{Call, Expect};

/// The options of a list operation, as query parameters.
pub(crate) trait ListQuery {
    /// `maxresults`, when asked for.
    fn max_results(&self) -> Option<u32>;
    /// The query parameters; `max_results` is the text of [`ListQuery::max_results`].
    fn query<'a>(&'a self, max_results: &'a str) -> Vec<(&'a str, &'a str)>;
}

impl ListQuery for ListOptions {
    fn max_results(&self) -> Option<u32> {
        self.max_results
    }

    fn query<'a>(&'a self, max_results: &'a str) -> Vec<(&'a str, &'a str)> {
        let mut query = Vec::new();
        if let Some(filter) = self.filter.as_deref() {
            query.push(("$filter", filter));
        }
        if let Some(select) = self.select.as_deref() {
            query.push(("$select", select));
        }
        if let Some(expand) = self.expand.as_deref() {
            query.push(("$expand", expand));
        }
        if self.max_results.is_some() {
            query.push(("maxresults", max_results));
        }
        query
    }
}

impl ListQuery for FileListOptions {
    fn max_results(&self) -> Option<u32> {
        self.max_results
    }

    fn query<'a>(&'a self, max_results: &'a str) -> Vec<(&'a str, &'a str)> {
        let mut query = Vec::new();
        if self.recursive {
            query.push(("recursive", "true"));
        }
        if let Some(filter) = self.filter.as_deref() {
            query.push(("$filter", filter));
        }
        if self.max_results.is_some() {
            query.push(("maxresults", max_results));
        }
        query
    }
}

impl BatchClient {
    /// A list operation: every `(what, id)` of `ids` checked, then the pages of `segments`
    /// (under the endpoint, with `options` as the query) streamed. `empty_codes` are the 409
    /// codes that mean there is nothing to list.
    pub(crate) fn list<T>(
        &self,
        op: &'static str,
        ids: &[(&str, &str)],
        segments: &[&str],
        options: &impl ListQuery,
        deadline: Deadline,
        empty_codes: &'static [&'static str],
    ) -> PageStream<T>
    where
        T: serde::de::DeserializeOwned + Send + 'static,
    {
        let max = options
            .max_results()
            .map(|n| n.to_string())
            .unwrap_or_default();
        let url = ids
            .iter()
            .try_for_each(|(what, id)| check_id(op, what, id))
            .and_then(|()| self.url(op, segments, &options.query(&max)));
        self.pages(op, url, deadline, empty_codes)
    }
}

/// Query parameters of a get operation.
pub(crate) fn get_query(options: &GetOptions) -> Vec<(&str, &str)> {
    let mut query = Vec::new();
    if let Some(select) = options.select.as_deref() {
        query.push(("$select", select));
    }
    if let Some(expand) = options.expand.as_deref() {
        query.push(("$expand", expand));
    }
    query
}

/// File properties from response headers. For a GET, `Content-Length` is the length of what is
/// being sent; the caller adds the range start.
pub(crate) fn file_info(headers: &HeaderMap) -> FileInfo {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    FileInfo {
        size: text("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        last_modified: text("last-modified"),
        etag: text("etag"),
        is_directory: text("ocp-batch-file-isdirectory")
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        creation_time: text("ocp-creation-time"),
        file_mode: text("ocp-batch-file-mode"),
        content_type: text("content-type"),
    }
}

/// 409 codes meaning Terminate Job has nothing left to do.
const TERMINATE_JOB_DONE: &[&str] = &["JobCompleted", "JobBeingTerminated"];
/// 409 codes meaning Disable Job has nothing left to do (the job is disabled, being disabled, or
/// no longer active at all).
const DISABLE_JOB_DONE: &[&str] = &[
    "JobDisabled",
    "JobBeingDisabled",
    "JobNotActive",
    "JobCompleted",
    "JobBeingTerminated",
];
/// 409 codes meaning Enable Job has nothing left to do. The service's code for enabling an
/// already-active job is not documented; these are the spellings it is known or expected to use.
const ENABLE_JOB_DONE: &[&str] = &["JobEnabled", "JobNotDisabled", "JobActive"];
/// 409 codes meaning Terminate Task has nothing left to do.
const TERMINATE_TASK_DONE: &[&str] = &["TaskCompleted"];
/// 409 codes meaning a job has no prep/release task, so its status list is empty.
const NO_PREP_TASK: &[&str] = &[
    "JobPreparationTaskNotSpecified",
    "JobReleaseTaskNotSpecified",
];

#[async_trait]
impl BatchApi for BatchClient {
    async fn get_task(
        &self,
        job_id: &str,
        task_id: &str,
        options: &GetOptions,
        deadline: Deadline,
    ) -> Result<BatchTask, BatchError> {
        const OP: &str = "get_task";
        check_id(OP, "job id", job_id)?;
        check_id(OP, "task id", task_id)?;
        let url = self.url(OP, &["jobs", job_id, "tasks", task_id], &get_query(options))?;
        self.get_json(OP, url, deadline).await
    }

    fn list_tasks(
        &self,
        job_id: &str,
        options: &ListOptions,
        deadline: Deadline,
    ) -> PageStream<BatchTask> {
        let ids = [("job id", job_id)];
        let segments = ["jobs", job_id, "tasks"];
        self.list("list_tasks", &ids, &segments, options, deadline, &[])
    }

    async fn get_job(
        &self,
        job_id: &str,
        options: &GetOptions,
        deadline: Deadline,
    ) -> Result<BatchJob, BatchError> {
        const OP: &str = "get_job";
        check_id(OP, "job id", job_id)?;
        let url = self.url(OP, &["jobs", job_id], &get_query(options))?;
        self.get_json(OP, url, deadline).await
    }

    fn list_jobs(&self, options: &ListOptions, deadline: Deadline) -> PageStream<BatchJob> {
        self.list("list_jobs", &[], &["jobs"], options, deadline, &[])
    }

    fn list_prep_release_status(
        &self,
        job_id: &str,
        options: &ListOptions,
        deadline: Deadline,
    ) -> PageStream<PrepReleaseStatus> {
        let ids = [("job id", job_id)];
        let segments = ["jobs", job_id, "jobpreparationandreleasetaskstatus"];
        let op = "list_prep_release_status";
        self.list(op, &ids, &segments, options, deadline, NO_PREP_TASK)
    }

    async fn get_task_counts(
        &self,
        job_id: &str,
        deadline: Deadline,
    ) -> Result<TaskCountsResult, BatchError> {
        const OP: &str = "get_task_counts";
        check_id(OP, "job id", job_id)?;
        let url = self.url(OP, &["jobs", job_id, "taskcounts"], &[])?;
        self.get_json(OP, url, deadline).await
    }

    fn list_task_files(
        &self,
        job_id: &str,
        task_id: &str,
        options: &FileListOptions,
        deadline: Deadline,
    ) -> PageStream<NodeFile> {
        let ids = [("job id", job_id), ("task id", task_id)];
        let segments = ["jobs", job_id, "tasks", task_id, "files"];
        self.list("list_task_files", &ids, &segments, options, deadline, &[])
    }

    fn list_node_files(
        &self,
        pool_id: &str,
        node_id: &str,
        options: &FileListOptions,
        deadline: Deadline,
    ) -> PageStream<NodeFile> {
        let ids = [("pool id", pool_id), ("node id", node_id)];
        let segments = ["pools", pool_id, "nodes", node_id, "files"];
        self.list("list_node_files", &ids, &segments, options, deadline, &[])
    }

    async fn file_properties(
        &self,
        file: &FileRef,
        deadline: Deadline,
    ) -> Result<FileInfo, BatchError> {
        const OP: &str = "file_properties";
        let url = self.file_url(OP, file)?;
        let reply = self
            .request(&Call::new(OP, Method::HEAD, url), Expect::Headers, deadline)
            .await?;
        Ok(file_info(&reply.headers))
    }

    async fn download_file(
        &self,
        file: &FileRef,
        options: &DownloadOptions,
        deadline: Deadline,
    ) -> Result<FileDownload, BatchError> {
        const OP: &str = "download_file";
        let url = self.file_url(OP, file)?;
        crate::download::start(self.clone(), OP, url, options, deadline).await
    }

    async fn terminate_job(
        &self,
        job_id: &str,
        options: &TerminateJobOptions,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError> {
        const OP: &str = "terminate_job";
        check_id(OP, "job id", job_id)?;
        let query: &[(&str, &str)] = if options.force {
            &[("force", "true")]
        } else {
            &[]
        };
        let url = self.url(OP, &["jobs", job_id, "terminate"], query)?;
        let mut call = Call::new(OP, Method::POST, url);
        if let Some(reason) = &options.reason {
            let body = serde_json::json!({ "terminateReason": reason });
            call.body = Some(Bytes::from(body.to_string()));
        }
        self.action(
            call,
            options.if_match.as_deref(),
            TERMINATE_JOB_DONE,
            deadline,
        )
        .await
    }

    async fn disable_job(
        &self,
        job_id: &str,
        disable_tasks: DisableTasks,
        if_match: Option<&str>,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError> {
        const OP: &str = "disable_job";
        check_id(OP, "job id", job_id)?;
        let url = self.url(OP, &["jobs", job_id, "disable"], &[])?;
        let mut call = Call::new(OP, Method::POST, url);
        let body = serde_json::json!({ "disableTasks": disable_tasks.as_str() });
        call.body = Some(Bytes::from(body.to_string()));
        self.action(call, if_match, DISABLE_JOB_DONE, deadline)
            .await
    }

    async fn enable_job(
        &self,
        job_id: &str,
        if_match: Option<&str>,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError> {
        const OP: &str = "enable_job";
        check_id(OP, "job id", job_id)?;
        let url = self.url(OP, &["jobs", job_id, "enable"], &[])?;
        let call = Call::new(OP, Method::POST, url);
        self.action(call, if_match, ENABLE_JOB_DONE, deadline).await
    }

    async fn terminate_task(
        &self,
        job_id: &str,
        task_id: &str,
        if_match: Option<&str>,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError> {
        const OP: &str = "terminate_task";
        check_id(OP, "job id", job_id)?;
        check_id(OP, "task id", task_id)?;
        let url = self.url(OP, &["jobs", job_id, "tasks", task_id, "terminate"], &[])?;
        let call = Call::new(OP, Method::POST, url);
        self.action(call, if_match, TERMINATE_TASK_DONE, deadline)
            .await
    }

    fn check_url(&self, url: &str) -> Result<Url, BatchError> {
        self.checked_url("check_url", url)
    }

    fn list_pools(&self, options: &ListOptions, deadline: Deadline) -> PageStream<BatchPool> {
        self.op_list_pools(options, deadline)
    }

    async fn get_pool(
        &self,
        pool_id: &str,
        options: &GetOptions,
        deadline: Deadline,
    ) -> Result<BatchPool, BatchError> {
        self.op_get_pool(pool_id, options, deadline).await
    }

    fn list_nodes(
        &self,
        pool_id: &str,
        options: &ListOptions,
        deadline: Deadline,
    ) -> PageStream<ComputeNode> {
        self.op_list_nodes(pool_id, options, deadline)
    }

    async fn get_node(
        &self,
        pool_id: &str,
        node_id: &str,
        options: &GetOptions,
        deadline: Deadline,
    ) -> Result<ComputeNode, BatchError> {
        self.op_get_node(pool_id, node_id, options, deadline).await
    }

    fn list_pool_node_counts(
        &self,
        options: &ListOptions,
        deadline: Deadline,
    ) -> PageStream<PoolNodeCounts> {
        self.op_list_pool_node_counts(options, deadline)
    }

    async fn upload_node_logs(
        &self,
        pool_id: &str,
        node_id: &str,
        options: &UploadLogsOptions,
        deadline: Deadline,
    ) -> Result<UploadLogsResult, BatchError> {
        self.op_upload_node_logs(pool_id, node_id, options, deadline)
            .await
    }

    async fn remove_nodes(
        &self,
        pool_id: &str,
        node_ids: &[String],
        options: &RemoveNodesOptions,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError> {
        self.op_remove_nodes(pool_id, node_ids, options, deadline)
            .await
    }

    async fn reimage_node(
        &self,
        pool_id: &str,
        node_id: &str,
        option: NodeDeallocation,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError> {
        self.op_reimage_node(pool_id, node_id, option, deadline)
            .await
    }
}
