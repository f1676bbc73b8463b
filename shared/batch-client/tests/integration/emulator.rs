//! Every operation against the Batch emulator (`batch_emulator`), over real HTTP on 127.0.0.1.
//! Assertions about retries read the emulator's request log, never the wall clock.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use batch_client::{
    ActionOutcome, BatchApi, BatchAuth, BatchClient, BatchConfig, BatchError, Deadline,
    DownloadOptions, EntraAuth, FileListOptions, FileRef, GetOptions, ListOptions, RetryPolicy,
    Secret, TerminateJobOptions, items,
};
use batch_emulator::{Emulator, Fault, FaultRule, Scenario};
use diagnosis::wire::{DisableTasks, JobState, TaskResult, TaskState};
use futures::{StreamExt, TryStreamExt};

use crate::stub::{ACCOUNT, KEY};

/// Tasks in the bulk job: more than ten pages of 1000.
pub(crate) const BULK_TASKS: usize = 10_500;

/// A scenario with the shapes every operation needs.
pub(crate) fn scenario(bulk_tasks: usize) -> Scenario {
    let json = serde_json::json!({
        "auth": {"bearerTokens": ["entra-token-for-tests"]},
        "pools": [{"id": "pool-1", "nodes": [
            {"id": "tvm-1", "files": {"startup/stdout.txt": "start task output\n"}},
            {"id": "tvm-2"}
        ]}],
        "jobs": [
            {
                "job": {"id": "etl", "poolInfo": {"poolId": "pool-1"},
                        "jobPreparationTask": {"id": "jobpreparation", "commandLine": "/bin/sh -c prep.sh"}},
                "tasks": [
                    {
                        "task": {"id": "oom", "state": "completed", "commandLine": "python train.py",
                                 "executionInfo": {"exitCode": 137, "result": "failure", "retryCount": 0, "requeueCount": 0,
                                                   "failureInfo": {"category": "usererror", "code": "FailureExitCode"}},
                                 "nodeInfo": {"poolId": "pool-1", "nodeId": "tvm-1"}},
                        "files": {
                            "stdout.txt": "epoch 1\nepoch 2\n",
                            "stderr.txt": {"generate": {"bytes": 3_000_000, "seed": 7, "tail": "Killed\n"}},
                            "wd/out dir/result.json": "{\"ok\": false}"
                        }
                    },
                    {
                        "task": {"id": "running", "state": "running", "commandLine": "sleep 1000",
                                 "executionInfo": {"retryCount": 0, "requeueCount": 0},
                                 "nodeInfo": {"poolId": "pool-1", "nodeId": "tvm-2"}}
                    }
                ],
                "preparationAndReleaseStatus": [{
                    "status": {"poolId": "pool-1", "nodeId": "tvm-1",
                               "jobPreparationTaskExecutionInfo": {"state": "completed", "exitCode": 1,
                                   "result": "failure", "retryCount": 0, "startTime": "2026-01-01T00:00:00Z"}},
                    "preparationFiles": {"stdout.txt": "prep output\n", "stderr.txt": "prep failed\n"}
                }]
            },
            {"job": {"id": "noprep", "poolInfo": {"poolId": "pool-1"}}},
            {
                "job": {"id": "bulk", "poolInfo": {"poolId": "pool-1"}},
                "generateTasks": [{"count": bulk_tasks, "idPrefix": "t-",
                    "task": {"state": "completed", "commandLine": "echo hi",
                             "executionInfo": {"exitCode": 0, "result": "success", "retryCount": 0, "requeueCount": 0}},
                    "failEvery": 100}]
            }
        ]
    });
    Scenario::from_json_str(&json.to_string()).expect("the test scenario is valid")
}

/// A running emulator and a client for it.
pub(crate) struct Running {
    pub(crate) emulator: Emulator,
    pub(crate) base: String,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl Running {
    pub(crate) async fn start(scenario: Scenario) -> Self {
        let emulator = Emulator::new(scenario).expect("emulator");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = emulator.clone();
        tokio::spawn(async move {
            let _ = batch_emulator::serve(listener, served, async move {
                let _ = rx.await;
            })
            .await;
        });
        Self {
            emulator,
            base,
            _shutdown: tx,
        }
    }

    pub(crate) fn config_with_key(&self, key: &str) -> BatchConfig {
        let mut config = BatchConfig::shared_key(&self.base, ACCOUNT, Secret::new(key)).unwrap();
        config.retry = RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
        };
        config
    }

    pub(crate) fn client(&self) -> BatchClient {
        BatchClient::new(self.config_with_key(KEY)).unwrap()
    }
}

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(120))
}

#[tokio::test]
async fn get_and_list_tasks_and_jobs() {
    let run = Running::start(scenario(5)).await;
    let client = run.client();
    let task = client
        .get_task("etl", "oom", &GetOptions::default(), deadline())
        .await
        .unwrap();
    assert_eq!(task.state, Some(TaskState::Completed));
    let info = task.execution_info.unwrap();
    assert_eq!(info.exit_code, Some(137));
    assert_eq!(info.result, Some(TaskResult::Failure));
    assert_eq!(task.node_info.unwrap().node_id.as_deref(), Some("tvm-1"));

    let select = GetOptions {
        select: Some("id,state".into()),
        expand: None,
    };
    let slim = client
        .get_task("etl", "oom", &select, deadline())
        .await
        .unwrap();
    assert_eq!(slim.id.as_deref(), Some("oom"));
    assert!(slim.command_line.is_none(), "$select trims the body");

    let filter = ListOptions {
        filter: Some("state eq 'completed' and executionInfo/result eq 'failure'".into()),
        ..ListOptions::default()
    };
    let failed: Vec<_> = items(client.list_tasks("etl", &filter, deadline()))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].id.as_deref(), Some("oom"));

    let job = client
        .get_job("etl", &GetOptions::default(), deadline())
        .await
        .unwrap();
    assert_eq!(job.state, Some(JobState::Active));
    assert!(job.e_tag.is_some());
    let jobs: Vec<_> = items(client.list_jobs(&ListOptions::default(), deadline()))
        .try_collect()
        .await
        .unwrap();
    let mut ids: Vec<_> = jobs.iter().filter_map(|j| j.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["bulk", "etl", "noprep"]);

    let counts = client.get_task_counts("bulk", deadline()).await.unwrap();
    assert_eq!(counts.task_counts.completed, 5);

    let error = client
        .get_task("etl", "missing", &GetOptions::default(), deadline())
        .await
        .unwrap_err();
    assert!(error.is_not_found());
    assert_eq!(error.code(), Some("TaskNotFound"));
    assert!(error.request_id().is_some());
    let error = client
        .get_job("nope", &GetOptions::default(), deadline())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("JobNotFound"));
}

#[tokio::test]
async fn paging_streams_more_than_ten_thousand_tasks() {
    let run = Running::start(scenario(BULK_TASKS)).await;
    // Through the trait object the pipeline holds.
    let client: Arc<dyn BatchApi> = Arc::new(run.client());
    // The fourth page is throttled once (Retry-After: 1 s); the stream retries it transparently.
    run.emulator.set_faults(vec![
        FaultRule::new(Fault::Throttle {
            retry_after_seconds: 1,
        })
        .path_prefix("/jobs/bulk/tasks")
        .skip(3)
        .times(1),
    ]);
    let options = ListOptions {
        select: Some("id,state,executionInfo".into()),
        ..ListOptions::default()
    };
    let mut pages = client.list_tasks("bulk", &options, deadline());
    let mut total = 0;
    let mut page_count = 0;
    let mut failures = 0;
    let mut seen = std::collections::HashSet::new();
    while let Some(page) = pages.try_next().await.unwrap() {
        page_count += 1;
        assert!(page.value.len() <= 1000);
        for task in page.value {
            total += 1;
            if task.execution_info.and_then(|e| e.result) == Some(TaskResult::Failure) {
                failures += 1;
            }
            assert!(seen.insert(task.id.unwrap()), "a task was listed twice");
        }
    }
    assert_eq!(total, BULK_TASKS);
    assert_eq!(failures, BULK_TASKS / 100);
    assert_eq!(page_count, BULK_TASKS.div_ceil(1000));
    // One request per page, each following the previous page's nextLink, plus the retry.
    let log = run.emulator.requests();
    assert_eq!(log.len(), page_count + 1);
    assert_eq!(log[3].status, 429);
    assert_eq!(log[3].fault.as_deref(), Some("throttle"));
    assert_eq!(log[4].status, 200);
    assert_eq!(
        log[3].path_and_query, log[4].path_and_query,
        "the same page is asked again"
    );
    assert_eq!(log[3].client_request_id, log[4].client_request_id);
    assert!(
        log[1..]
            .iter()
            .all(|r| r.path_and_query.contains("skiptoken")),
        "{:?}",
        log[1]
    );

    // maxresults is passed through.
    let small = ListOptions {
        max_results: Some(7),
        ..ListOptions::default()
    };
    let first = client
        .list_tasks("bulk", &small, deadline())
        .try_next()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.value.len(), 7);
    assert!(first.next_link.is_some());
}

#[tokio::test]
async fn prep_release_status_and_its_absence() {
    let run = Running::start(scenario(1)).await;
    let client = run.client();
    let rows: Vec<_> =
        items(client.list_prep_release_status("etl", &ListOptions::default(), deadline()))
            .try_collect()
            .await
            .unwrap();
    assert_eq!(rows.len(), 1);
    let prep = rows[0]
        .job_preparation_task_execution_info
        .as_ref()
        .unwrap();
    assert_eq!(prep.exit_code, Some(1));
    // The row's URLs point at the emulator and pass the same-origin check.
    let dir_url = prep.task_root_directory_url.as_deref().unwrap();
    client.check_url(dir_url).unwrap();
    let stdout = client
        .download_file(
            &FileRef::Url(format!("{dir_url}/stdout.txt")),
            &DownloadOptions::default(),
            deadline(),
        )
        .await
        .unwrap();
    let bytes: Vec<_> = stdout.try_collect().await.unwrap();
    assert_eq!(bytes.concat(), b"prep output\n");

    // A job without a prep task: 409 JobPreparationTaskNotSpecified becomes an empty list.
    let none: Vec<_> = client
        .list_prep_release_status("noprep", &ListOptions::default(), deadline())
        .try_collect()
        .await
        .unwrap();
    assert!(none.is_empty());
    let log = run.emulator.requests();
    assert_eq!(log.last().unwrap().status, 409);
}

#[tokio::test]
async fn files_list_head_and_download() {
    let run = Running::start(scenario(1)).await;
    let client = run.client();
    let listed: Vec<_> = items(client.list_task_files(
        "etl",
        "oom",
        &FileListOptions {
            recursive: true,
            ..FileListOptions::default()
        },
        deadline(),
    ))
    .try_collect()
    .await
    .unwrap();
    let names: Vec<_> = listed.iter().filter_map(|f| f.name.as_deref()).collect();
    assert!(
        names.contains(&"stdout.txt") && names.contains(&"stderr.txt"),
        "{names:?}"
    );
    let stderr = listed
        .iter()
        .find(|f| f.name.as_deref() == Some("stderr.txt"))
        .unwrap();
    assert_eq!(
        stderr.properties.as_ref().unwrap().content_length,
        Some(3_000_000)
    );

    let filtered: Vec<_> = items(client.list_task_files(
        "etl",
        "oom",
        &FileListOptions {
            recursive: true,
            filter: Some("startswith(name,'std')".into()),
            max_results: None,
        },
        deadline(),
    ))
    .try_collect()
    .await
    .unwrap();
    assert!(
        filtered
            .iter()
            .all(|f| f.name.as_deref().unwrap().starts_with("std"))
    );

    let node_files: Vec<_> = items(client.list_node_files(
        "pool-1",
        "tvm-1",
        &FileListOptions {
            recursive: true,
            ..FileListOptions::default()
        },
        deadline(),
    ))
    .try_collect()
    .await
    .unwrap();
    assert!(
        node_files
            .iter()
            .any(|f| f.name.as_deref() == Some("startup/stdout.txt"))
    );

    let head = client
        .file_properties(&FileRef::task("etl", "oom", "stderr.txt"), deadline())
        .await
        .unwrap();
    assert_eq!(head.size, 3_000_000);
    assert!(!head.is_directory);
    assert!(head.last_modified_time().is_some());
    assert!(head.etag.is_some());
    let node_head = client
        .file_properties(
            &FileRef::node("pool-1", "tvm-1", "startup/stdout.txt"),
            deadline(),
        )
        .await
        .unwrap();
    assert_eq!(node_head.size, "start task output\n".len() as u64);

    let nested = client
        .download_file(
            &FileRef::task("etl", "oom", "wd/out dir/result.json"),
            &DownloadOptions::default(),
            deadline(),
        )
        .await
        .unwrap();
    let bytes: Vec<_> = nested.try_collect().await.unwrap();
    assert_eq!(bytes.concat(), b"{\"ok\": false}");

    let partial = client
        .download_file(
            &FileRef::node("pool-1", "tvm-1", "startup/stdout.txt"),
            &DownloadOptions {
                offset: 6,
                ..DownloadOptions::default()
            },
            deadline(),
        )
        .await
        .unwrap();
    assert_eq!(partial.info.size, 18);
    let bytes: Vec<_> = partial.try_collect().await.unwrap();
    assert_eq!(bytes.concat(), b"task output\n");
    assert_eq!(
        run.emulator.requests().last().unwrap().ocp_range.as_deref(),
        Some("bytes=6-")
    );

    let missing = client
        .file_properties(&FileRef::task("etl", "oom", "nope.txt"), deadline())
        .await
        .unwrap_err();
    assert!(missing.is_not_found());
}

/// Reads a whole download.
async fn read_all(client: &BatchClient, file: &FileRef) -> Result<Vec<u8>, BatchError> {
    let download = client
        .download_file(file, &DownloadOptions::default(), deadline())
        .await?;
    let mut out = Vec::new();
    let mut chunks = download;
    while let Some(chunk) = chunks.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

#[tokio::test]
async fn a_dropped_download_resumes_byte_identical() {
    let run = Running::start(scenario(1)).await;
    let client = run.client();
    let file = FileRef::task("etl", "oom", "stderr.txt");
    let reference = read_all(&client, &file).await.unwrap();
    assert_eq!(reference.len(), 3_000_000);
    assert!(reference.ends_with(b"Killed\n"));

    run.emulator.clear_requests();
    run.emulator.set_faults(vec![
        FaultRule::new(Fault::DropConnection {
            after_bytes: 1_000_000,
        })
        .path_contains("/files/stderr.txt")
        .times(1),
        FaultRule::new(Fault::DropConnection {
            after_bytes: 700_000,
        })
        .path_contains("/files/stderr.txt")
        .times(1),
    ]);
    let resumed = read_all(&client, &file).await.unwrap();
    assert!(resumed == reference, "the resumed copy differs");
    let log = run.emulator.requests();
    let ranges: Vec<_> = log.iter().map(|r| r.ocp_range.clone()).collect();
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(log[0].fault.as_deref(), Some("dropConnection"));
    assert_eq!(ranges[0], None);
    // Each resume starts at the byte actually received: at most what the emulator sent before
    // the drop (bytes still in flight when the connection is reset are lost, and re-fetched).
    let offset = |range: &Option<String>| -> u64 {
        let text = range.as_deref().unwrap();
        text.strip_prefix("bytes=")
            .unwrap()
            .strip_suffix('-')
            .unwrap()
            .parse()
            .unwrap()
    };
    let (first, second) = (offset(&ranges[1]), offset(&ranges[2]));
    assert!(first > 0 && first <= 1_000_000, "{first}");
    assert!(second > first && second <= first + 700_000, "{second}");
}

#[tokio::test]
async fn throttling_is_retried_and_retry_after_is_honoured() {
    let run = Running::start(scenario(1)).await;
    let client = run.client();
    run.emulator.set_faults(vec![
        FaultRule::new(Fault::Throttle {
            retry_after_seconds: 1,
        })
        .path_prefix("/jobs/etl/tasks/oom")
        .method("GET")
        .times(1),
        FaultRule::new(Fault::ServerBusy {
            retry_after_seconds: None,
        })
        .path_prefix("/jobs/etl/tasks/oom")
        .method("GET")
        .times(1),
        FaultRule::new(Fault::OperationTimedOut)
            .path_prefix("/jobs/etl/tasks/oom")
            .method("GET")
            .times(1),
    ]);
    let task = client
        .get_task("etl", "oom", &GetOptions::default(), deadline())
        .await
        .unwrap();
    assert_eq!(task.id.as_deref(), Some("oom"));
    let log = run.emulator.requests();
    let statuses: Vec<_> = log.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 503, 500, 200]);
    let ids: Vec<_> = log
        .iter()
        .map(|r| r.client_request_id.clone().unwrap())
        .collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one logical call, one client-request-id"
    );

    // A Retry-After past the deadline is not waited for: the caller gets Throttled at once.
    run.emulator.clear_requests();
    run.emulator.set_faults(vec![
        FaultRule::new(Fault::Throttle {
            retry_after_seconds: 600,
        })
        .times(1),
    ]);
    let error = client
        .get_job(
            "etl",
            &GetOptions::default(),
            Deadline::after(Duration::from_secs(30)),
        )
        .await
        .unwrap_err();
    assert_eq!(error.retry_after(), Some(Duration::from_secs(600)));
    assert_eq!(run.emulator.requests().len(), 1);

    // Persistent 500s stop after max_attempts.
    run.emulator.clear_requests();
    run.emulator
        .set_faults(vec![FaultRule::new(Fault::InternalError)]);
    let error = client.get_task_counts("etl", deadline()).await.unwrap_err();
    assert!(error.is_retryable());
    assert_eq!(error.code(), Some("InternalError"));
    assert_eq!(run.emulator.requests().len(), 4);
}

#[tokio::test]
async fn node_removed_and_file_state_errors_are_typed() {
    let run = Running::start(scenario(1)).await;
    let client = run.client();
    assert!(run.emulator.remove_node("pool-1", "tvm-1"));
    let error = read_all(&client, &FileRef::task("etl", "oom", "stdout.txt"))
        .await
        .unwrap_err();
    assert!(error.is_not_found(), "{error:?}");
    assert_eq!(error.code(), Some("NodeNotFound"));
    // Not retried: one request.
    assert_eq!(run.emulator.requests().len(), 1);
}

#[tokio::test]
async fn job_actions_are_idempotent() {
    let run = Running::start(scenario(1)).await;
    let client = run.client();
    let job = client
        .get_job("etl", &GetOptions::default(), deadline())
        .await
        .unwrap();
    let etag = job.e_tag.unwrap();

    // A stale ETag is refused.
    let error = client
        .disable_job(
            "etl",
            DisableTasks::Requeue,
            Some("\"0xSTALE\""),
            deadline(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, BatchError::PreconditionFailed(_)),
        "{error:?}"
    );

    let outcome = client
        .disable_job("etl", DisableTasks::Requeue, Some(&etag), deadline())
        .await
        .unwrap();
    assert_eq!(outcome, ActionOutcome::Accepted);
    run.emulator.settle();
    let job = client
        .get_job("etl", &GetOptions::default(), deadline())
        .await
        .unwrap();
    assert_eq!(job.state, Some(JobState::Disabled));
    let again = client
        .disable_job("etl", DisableTasks::Requeue, None, deadline())
        .await
        .unwrap();
    assert!(matches!(
        again,
        ActionOutcome::Accepted | ActionOutcome::AlreadyInState { .. }
    ));

    assert_eq!(
        client.enable_job("etl", None, deadline()).await.unwrap(),
        ActionOutcome::Accepted
    );
    run.emulator.settle();

    let terminate = TerminateJobOptions {
        reason: Some("batch-triage: prep failed".into()),
        force: true,
        if_match: None,
    };
    assert_eq!(
        client
            .terminate_job("etl", &terminate, deadline())
            .await
            .unwrap(),
        ActionOutcome::Accepted
    );
    // Terminating, then completed: both are "already in that state".
    let outcome = client
        .terminate_job("etl", &terminate, deadline())
        .await
        .unwrap();
    assert_eq!(
        outcome,
        ActionOutcome::AlreadyInState {
            code: "JobBeingTerminated".into()
        }
    );
    run.emulator.settle();
    let job = client
        .get_job("etl", &GetOptions::default(), deadline())
        .await
        .unwrap();
    assert_eq!(job.state, Some(JobState::Completed));
    assert_eq!(
        job.execution_info.unwrap().terminate_reason.as_deref(),
        Some("batch-triage: prep failed")
    );
    let outcome = client
        .terminate_job("etl", &terminate, deadline())
        .await
        .unwrap();
    assert_eq!(
        outcome,
        ActionOutcome::AlreadyInState {
            code: "JobCompleted".into()
        }
    );
    let outcome = client
        .disable_job("etl", DisableTasks::Wait, None, deadline())
        .await
        .unwrap();
    assert_eq!(
        outcome,
        ActionOutcome::AlreadyInState {
            code: "JobCompleted".into()
        }
    );

    // Terminate Task: running → terminated; a second time → TaskCompleted.
    let run2 = Running::start(scenario(1)).await;
    let client = run2.client();
    assert_eq!(
        client
            .terminate_task("etl", "running", None, deadline())
            .await
            .unwrap(),
        ActionOutcome::Accepted
    );
    let task = client
        .get_task("etl", "running", &GetOptions::default(), deadline())
        .await
        .unwrap();
    assert_eq!(task.state, Some(TaskState::Completed));
    assert_eq!(
        client
            .terminate_task("etl", "running", None, deadline())
            .await
            .unwrap(),
        ActionOutcome::AlreadyInState {
            code: "TaskCompleted".into()
        }
    );
    let log = run2.emulator.requests();
    assert!(
        log.iter()
            .all(|r| r.auth_scheme.as_deref() == Some("SharedKey"))
    );
}

#[tokio::test]
async fn a_wrong_key_is_a_typed_auth_error() {
    let run = Running::start(scenario(1)).await;
    let wrong =
        BatchClient::new(run.config_with_key("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="))
            .unwrap();
    let error = wrong
        .get_job("etl", &GetOptions::default(), deadline())
        .await
        .unwrap_err();
    assert!(matches!(error, BatchError::Auth(_)), "{error:?}");
    assert_eq!(error.status(), Some(403));
    assert_eq!(error.code(), Some("AuthenticationFailed"));
    assert!(!error.is_retryable());
    assert_eq!(
        run.emulator.requests().len(),
        1,
        "auth errors are not retried"
    );
}

#[tokio::test]
async fn ssrf_urls_from_payloads_are_refused_before_any_request() {
    let run = Running::start(scenario(1)).await;
    let client = run.client();
    let task = client
        .get_task("etl", "oom", &GetOptions::default(), deadline())
        .await
        .unwrap();
    // The task's own URL is same-origin.
    client.check_url(task.url.as_deref().unwrap()).unwrap();
    run.emulator.clear_requests();
    for url in [
        "https://attacker.example/jobs/etl/tasks/oom/files/stdout.txt",
        "http://169.254.169.254/metadata/identity/oauth2/token",
        "http://127.0.0.1:1/jobs/etl/tasks/oom/files/stdout.txt",
        "file:///etc/passwd",
    ] {
        let error = client
            .download_file(
                &FileRef::Url(url.to_owned()),
                &DownloadOptions::default(),
                deadline(),
            )
            .await
            .unwrap_err();
        assert!(matches!(error, BatchError::Refused(_)), "{url}: {error:?}");
        assert!(client.check_url(url).is_err());
    }
    assert!(run.emulator.requests().is_empty());
}

/// Hands out the token the scenario accepts.
#[derive(Debug)]
struct StaticToken(&'static str);

#[async_trait]
impl TokenCredential for StaticToken {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        Ok(AccessToken::new(
            self.0.to_owned(),
            time::OffsetDateTime::now_utc() + Duration::from_secs(3600),
        ))
    }
}

#[tokio::test]
async fn entra_bearer_tokens_are_accepted_and_bad_ones_refused() {
    let run = Running::start(scenario(1)).await;
    let entra = |token: &'static str| {
        let mut config = BatchConfig::new(
            &run.base,
            BatchAuth::Entra(EntraAuth::Credential(Arc::new(StaticToken(token)))),
        )
        .unwrap();
        config.retry = RetryPolicy::none();
        BatchClient::new(config).unwrap()
    };
    let job = entra("entra-token-for-tests")
        .get_job("etl", &GetOptions::default(), deadline())
        .await
        .unwrap();
    assert_eq!(job.id.as_deref(), Some("etl"));
    assert_eq!(
        run.emulator.requests()[0].auth_scheme.as_deref(),
        Some("Bearer")
    );
    let error = entra("forged")
        .get_job("etl", &GetOptions::default(), deadline())
        .await
        .unwrap_err();
    assert!(matches!(error, BatchError::Auth(_)), "{error:?}");
}
