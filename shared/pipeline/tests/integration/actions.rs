//! Job actions against the Batch emulator over HTTP on 127.0.0.1, with state in a local-directory
//! store. Assertions about what reached Batch read the emulator's request log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use artifact_store::{ArtifactStore, LocalDirStore};
use async_trait::async_trait;
use batch_client::{
    ActionOutcome, BatchApi, BatchClient, BatchConfig, BatchError, Deadline, DownloadOptions,
    FileDownload, FileInfo, FileListOptions, FileRef, GetOptions, ListOptions, PageStream,
    RetryPolicy, Secret, TerminateJobOptions,
};
use batch_emulator::{Emulator, RequestRecord, Scenario};
use diagnosis::policy::{PlanContext, Policy, plan};
use diagnosis::wire::{
    BatchJob, BatchTask, DisableTasks, JobState, NodeFile, PrepReleaseStatus, TaskCountsResult,
};
use diagnosis::{Diagnosis, Subject};
use pipeline::actions::{ActionRequest, JobActions};
use pipeline::audit::{AuditDecision, AuditRecord};
use test_kit::flaky_store::{FlakyStore, StoreOp};
use time::OffsetDateTime;
use time::macros::datetime;

use crate::grouping::oom;

const T0: OffsetDateTime = datetime!(2026-11-20 10:00:00 UTC);
const ACCOUNT: &str = "devbatch1";
const KEY: &str =
    "mjKm6b5f7cz+1Z87ZQTzqewMgLsXqKvuJqfrLzWEpg27VruihOB6mXgex29Mi/scsRrX5vb19ODbFU0ZvQTWRg==";
const JOBS: [&str; 4] = ["etl", "j2", "j3", "j4"];

/// Four active jobs of 40 completed tasks each, every fourth failed (10 of 40 = 25%).
fn scenario() -> Scenario {
    let jobs: Vec<serde_json::Value> = JOBS
        .iter()
        .map(|id| {
            serde_json::json!({
                "job": {"id": id, "poolInfo": {"poolId": "pool-1"}},
                "generateTasks": [{"count": 40, "idPrefix": "t-", "failEvery": 4,
                    "task": {"state": "completed", "commandLine": "python train.py",
                             "executionInfo": {"exitCode": 0, "result": "success", "retryCount": 0, "requeueCount": 0}}}]
            })
        })
        .collect();
    let json =
        serde_json::json!({"pools": [{"id": "pool-1", "nodes": [{"id": "tvm-1"}]}], "jobs": jobs});
    Scenario::from_json_str(&json.to_string()).unwrap()
}

struct Running {
    emulator: Emulator,
    client: Arc<BatchClient>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

async fn start() -> Running {
    let emulator = Emulator::new(scenario()).unwrap();
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
    let mut config = BatchConfig::shared_key(&base, ACCOUNT, Secret::new(KEY)).unwrap();
    config.retry = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    };
    Running {
        emulator,
        client: Arc::new(BatchClient::new(config).unwrap()),
        _shutdown: tx,
    }
}

fn store() -> (tempfile::TempDir, Arc<dyn ArtifactStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDirStore::new(dir.path()).unwrap());
    (dir, store)
}

fn policy(actions: &str, rule_action: &str) -> Policy {
    Policy::parse(&format!(
        r#"
[actions]
{actions}

[[rules]]
name = "kill-oom"
match = {{ exit_meaning = "oom_or_sigkill" }}
action = {rule_action}
"#
    ))
    .unwrap_or_else(|e| panic!("{e}"))
}

const LIVE: &str = "enabled = true\ndry_run = false\nmax_per_hour = 10";

fn diagnosis(job: &str) -> Diagnosis {
    let mut d = oom(job, "t-3", "f");
    d.subject = Subject {
        account: Some(ACCOUNT.into()),
        ..d.subject
    };
    d
}

async fn act(
    actions: &JobActions,
    p: &Policy,
    d: &Diagnosis,
    failed_with_class: Option<u64>,
    now: OffsetDateTime,
) -> AuditRecord {
    let planned = plan(d, p, now, &PlanContext::default());
    let action = planned.action.expect("the rule asks for an action");
    actions
        .execute(
            ActionRequest {
                diagnosis: d,
                policy: p,
                plan: &action,
                failed_with_class,
            },
            now,
        )
        .await
        .unwrap()
}

fn posts(emulator: &Emulator) -> Vec<RequestRecord> {
    emulator
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect()
}

async fn job_state(run: &Running, job: &str) -> Option<JobState> {
    let deadline = Deadline::after(Duration::from_secs(30));
    run.client
        .get_job(job, &GetOptions::default(), deadline)
        .await
        .unwrap()
        .state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_happens_once_under_duplicates_and_uses_if_match() {
    let run = start().await;
    let (_dir, store) = store();
    let p = policy(LIVE, r#"{ kind = "terminate" }"#);
    let d = diagnosis("etl");
    // Two instances (two store handles on one directory) get the same failure at once.
    let other: Arc<dyn ArtifactStore> = Arc::new(LocalDirStore::new(_dir.path()).unwrap());
    let a = JobActions::new(store.clone(), run.client.clone(), Duration::from_secs(30));
    let b = JobActions::new(other, run.client.clone(), Duration::from_secs(30));
    let (x, y) = tokio::join!(act(&a, &p, &d, None, T0), act(&b, &p, &d, None, T0));
    let third = act(&a, &p, &d, None, T0 + Duration::from_secs(60)).await;

    let decisions = [x.decision, y.decision, third.decision];
    assert_eq!(
        decisions
            .iter()
            .filter(|d| **d == AuditDecision::Applied)
            .count(),
        1,
        "{x:#?}\n{y:#?}\n{third:#?}"
    );
    assert_eq!(
        decisions
            .iter()
            .filter(|d| **d == AuditDecision::Skipped)
            .count(),
        2
    );
    assert!(third.reason.starts_with("already done"), "{third:#?}");

    let posts = posts(&run.emulator);
    assert_eq!(posts.len(), 1, "{posts:#?}");
    assert!(posts[0].path_and_query.starts_with("/jobs/etl/terminate"));
    let applied = [&x, &y]
        .into_iter()
        .find(|r| r.decision == AuditDecision::Applied)
        .unwrap();
    assert_eq!(
        posts[0].if_match, applied.etag,
        "the action is conditional on the ETag read"
    );
    assert_eq!(
        applied.action_reason,
        "batch-triage rule \"kill-oom\": task t-3 failed with task.exit_code"
    );
    run.emulator.settle();
    assert_eq!(job_state(&run, "etl").await, Some(JobState::Completed));
    // Every decision is audited.
    assert_eq!(a.audit_log().all().await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_happens_once_across_instances_on_azurite() {
    let run = start().await;
    let azurite = artifact_store::testing::Azurite::start();
    let p = policy(LIVE, r#"{ kind = "disable", disable_tasks = "terminate" }"#);
    let d = diagnosis("j2");
    let handles: Vec<JobActions> = futures::future::join_all((0..3).map(|_| async {
        let store: Arc<dyn ArtifactStore> = Arc::new(azurite.store("triage").await);
        JobActions::new(store, run.client.clone(), Duration::from_secs(30))
    }))
    .await;
    let records = futures::future::join_all(handles.iter().map(|h| act(h, &p, &d, None, T0))).await;
    let applied = records
        .iter()
        .filter(|r| r.decision == AuditDecision::Applied)
        .count();
    assert_eq!(applied, 1, "{records:#?}");
    let posts = posts(&run.emulator);
    assert_eq!(posts.len(), 1, "{posts:#?}");
    assert!(posts[0].path_and_query.starts_with("/jobs/j2/disable"));
    assert_eq!(handles[0].audit_log().all().await.unwrap().len(), 3);
}

/// Delegates to the real client, but lets "a person" change the job right after our first read.
struct Meddler {
    inner: Arc<BatchClient>,
    emulator: Emulator,
    re_enable: bool,
    done: AtomicBool,
}

#[async_trait]
impl BatchApi for Meddler {
    async fn get_task(
        &self,
        job_id: &str,
        task_id: &str,
        options: &GetOptions,
        deadline: Deadline,
    ) -> Result<BatchTask, BatchError> {
        self.inner
            .get_task(job_id, task_id, options, deadline)
            .await
    }
    fn list_tasks(
        &self,
        job_id: &str,
        options: &ListOptions,
        deadline: Deadline,
    ) -> PageStream<BatchTask> {
        self.inner.list_tasks(job_id, options, deadline)
    }
    async fn get_job(
        &self,
        job_id: &str,
        options: &GetOptions,
        deadline: Deadline,
    ) -> Result<BatchJob, BatchError> {
        let job = self.inner.get_job(job_id, options, deadline).await?;
        if !self.done.swap(true, Ordering::SeqCst) {
            self.inner
                .disable_job(job_id, DisableTasks::Wait, None, deadline)
                .await?;
            self.emulator.settle();
            if self.re_enable {
                self.inner.enable_job(job_id, None, deadline).await?;
                self.emulator.settle();
            }
        }
        Ok(job)
    }
    fn list_jobs(&self, options: &ListOptions, deadline: Deadline) -> PageStream<BatchJob> {
        self.inner.list_jobs(options, deadline)
    }
    fn list_prep_release_status(
        &self,
        job_id: &str,
        options: &ListOptions,
        deadline: Deadline,
    ) -> PageStream<PrepReleaseStatus> {
        self.inner
            .list_prep_release_status(job_id, options, deadline)
    }
    async fn get_task_counts(
        &self,
        job_id: &str,
        deadline: Deadline,
    ) -> Result<TaskCountsResult, BatchError> {
        self.inner.get_task_counts(job_id, deadline).await
    }
    fn list_task_files(
        &self,
        job_id: &str,
        task_id: &str,
        options: &FileListOptions,
        deadline: Deadline,
    ) -> PageStream<NodeFile> {
        self.inner
            .list_task_files(job_id, task_id, options, deadline)
    }
    fn list_node_files(
        &self,
        pool_id: &str,
        node_id: &str,
        options: &FileListOptions,
        deadline: Deadline,
    ) -> PageStream<NodeFile> {
        self.inner
            .list_node_files(pool_id, node_id, options, deadline)
    }
    async fn file_properties(
        &self,
        file: &FileRef,
        deadline: Deadline,
    ) -> Result<FileInfo, BatchError> {
        self.inner.file_properties(file, deadline).await
    }
    async fn download_file(
        &self,
        file: &FileRef,
        options: &DownloadOptions,
        deadline: Deadline,
    ) -> Result<FileDownload, BatchError> {
        self.inner.download_file(file, options, deadline).await
    }
    async fn terminate_job(
        &self,
        job_id: &str,
        options: &TerminateJobOptions,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError> {
        self.inner.terminate_job(job_id, options, deadline).await
    }
    async fn disable_job(
        &self,
        job_id: &str,
        disable_tasks: DisableTasks,
        if_match: Option<&str>,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError> {
        self.inner
            .disable_job(job_id, disable_tasks, if_match, deadline)
            .await
    }
    async fn enable_job(
        &self,
        job_id: &str,
        if_match: Option<&str>,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError> {
        self.inner.enable_job(job_id, if_match, deadline).await
    }
    async fn terminate_task(
        &self,
        job_id: &str,
        task_id: &str,
        if_match: Option<&str>,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError> {
        self.inner
            .terminate_task(job_id, task_id, if_match, deadline)
            .await
    }
    fn check_url(&self, url: &str) -> Result<url::Url, BatchError> {
        self.inner.check_url(url)
    }
    fn list_pools(
        &self,
        options: &ListOptions,
        deadline: Deadline,
    ) -> PageStream<diagnosis::wire::BatchPool> {
        self.inner.list_pools(options, deadline)
    }
    async fn get_pool(
        &self,
        pool_id: &str,
        options: &GetOptions,
        deadline: Deadline,
    ) -> Result<diagnosis::wire::BatchPool, BatchError> {
        self.inner.get_pool(pool_id, options, deadline).await
    }
    fn list_nodes(
        &self,
        pool_id: &str,
        options: &ListOptions,
        deadline: Deadline,
    ) -> PageStream<diagnosis::wire::ComputeNode> {
        self.inner.list_nodes(pool_id, options, deadline)
    }
    async fn get_node(
        &self,
        pool_id: &str,
        node_id: &str,
        options: &GetOptions,
        deadline: Deadline,
    ) -> Result<diagnosis::wire::ComputeNode, BatchError> {
        self.inner
            .get_node(pool_id, node_id, options, deadline)
            .await
    }
    fn list_pool_node_counts(
        &self,
        options: &ListOptions,
        deadline: Deadline,
    ) -> PageStream<diagnosis::wire::PoolNodeCounts> {
        self.inner.list_pool_node_counts(options, deadline)
    }
    async fn upload_node_logs(
        &self,
        pool_id: &str,
        node_id: &str,
        options: &batch_client::UploadLogsOptions,
        deadline: Deadline,
    ) -> Result<batch_client::UploadLogsResult, BatchError> {
        self.inner
            .upload_node_logs(pool_id, node_id, options, deadline)
            .await
    }
    async fn remove_nodes(
        &self,
        pool_id: &str,
        node_ids: &[String],
        options: &batch_client::RemoveNodesOptions,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError> {
        self.inner
            .remove_nodes(pool_id, node_ids, options, deadline)
            .await
    }
    async fn reimage_node(
        &self,
        pool_id: &str,
        node_id: &str,
        option: batch_client::NodeDeallocation,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError> {
        self.inner
            .reimage_node(pool_id, node_id, option, deadline)
            .await
    }
}

fn meddler(run: &Running, re_enable: bool) -> Arc<Meddler> {
    Arc::new(Meddler {
        inner: run.client.clone(),
        emulator: run.emulator.clone(),
        re_enable,
        done: AtomicBool::new(false),
    })
}

#[tokio::test]
async fn a_job_changed_after_the_read_is_re_read_and_re_evaluated() {
    let run = start().await;
    let (_dir, store) = store();
    let p = policy(LIVE, r#"{ kind = "terminate" }"#);
    let actions = JobActions::new(store, meddler(&run, true), Duration::from_secs(30));
    let record = act(&actions, &p, &diagnosis("etl"), None, T0).await;

    // The first terminate carried the stale ETag and got 412; the job was read again, found
    // still active, and the second terminate carried the new ETag.
    let terminates: Vec<RequestRecord> = posts(&run.emulator)
        .into_iter()
        .filter(|r| r.path_and_query.starts_with("/jobs/etl/terminate"))
        .collect();
    assert_eq!(terminates.len(), 2, "{terminates:#?}");
    assert_eq!(terminates[0].status, 412);
    assert_eq!(terminates[1].status, 202);
    assert!(
        terminates.iter().all(|r| r.if_match.is_some()),
        "never forced without If-Match"
    );
    assert_ne!(terminates[0].if_match, terminates[1].if_match);
    assert_eq!(record.decision, AuditDecision::Applied, "{record:#?}");
    assert_eq!(record.etag, terminates[1].if_match);
}

#[tokio::test]
async fn a_job_a_person_disabled_meanwhile_is_left_alone() {
    let run = start().await;
    let (_dir, store) = store();
    let p = policy(LIVE, r#"{ kind = "terminate" }"#);
    let actions = JobActions::new(store.clone(), meddler(&run, false), Duration::from_secs(30));
    let record = act(&actions, &p, &diagnosis("etl"), None, T0).await;
    assert_eq!(record.decision, AuditDecision::Skipped, "{record:#?}");
    assert!(
        record
            .reason
            .contains("the job is disabled (it changed since it was first read)"),
        "{record:#?}"
    );
    let terminates: Vec<RequestRecord> = posts(&run.emulator)
        .into_iter()
        .filter(|r| r.path_and_query.starts_with("/jobs/etl/terminate"))
        .collect();
    assert_eq!(terminates.len(), 1);
    assert_eq!(terminates[0].status, 412);
    assert_eq!(job_state(&run, "etl").await, Some(JobState::Disabled));
    // The once-marker was given back, so a later, legitimate decision is not blocked.
    let key = JobActions::once_key(ACCOUNT, "etl", "terminate").unwrap();
    assert!(store.head(&key).await.unwrap().is_none());
}

#[tokio::test]
async fn the_hourly_budget_skips_and_audits_the_next_action() {
    let run = start().await;
    let (_dir, store) = store();
    let p = policy(
        "enabled = true\ndry_run = false\nmax_per_hour = 2",
        r#"{ kind = "disable", disable_tasks = "requeue" }"#,
    );
    let actions = JobActions::new(store.clone(), run.client.clone(), Duration::from_secs(30));
    let mut records = Vec::new();
    for (i, job) in ["etl", "j2", "j3"].iter().enumerate() {
        records.push(
            act(
                &actions,
                &p,
                &diagnosis(job),
                None,
                T0 + Duration::from_secs(60 * i as u64),
            )
            .await,
        );
    }
    assert_eq!(records[0].decision, AuditDecision::Applied);
    assert_eq!(records[1].decision, AuditDecision::Applied);
    assert_eq!(records[2].decision, AuditDecision::Skipped);
    assert_eq!(
        records[2].reason,
        "hourly action budget exhausted (2 per hour)"
    );
    let disables = posts(&run.emulator);
    assert_eq!(disables.len(), 2);
    assert!(
        disables
            .iter()
            .all(|r| r.path_and_query.starts_with("/jobs/etl/disable")
                || r.path_and_query.starts_with("/jobs/j2/disable"))
    );
    assert_eq!(job_state(&run, "j3").await, Some(JobState::Active));
    // The next hour has a fresh budget, and the skipped job was not marked done.
    let next_hour = act(
        &actions,
        &p,
        &diagnosis("j3"),
        None,
        T0 + Duration::from_secs(3600),
    )
    .await;
    assert_eq!(next_hour.decision, AuditDecision::Applied, "{next_hour:#?}");
    assert_eq!(next_hour.disable_tasks.as_deref(), Some("requeue"));
    let audit = actions.audit_log().all().await.unwrap();
    assert_eq!(audit.len(), 4);
    assert!(
        store
            .head(&JobActions::budget_key(ACCOUNT, T0).unwrap())
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn dry_run_sends_nothing_to_batch_but_is_audited() {
    let run = start().await;
    let (_dir, store) = store();
    let actions = JobActions::new(store, run.client.clone(), Duration::from_secs(30));
    // Globally dry (the default), and a dry rule under live actions.
    for p in [
        policy(
            "enabled = true\nmax_per_hour = 5",
            r#"{ kind = "terminate" }"#,
        ),
        policy(LIVE, r#"{ kind = "terminate", dry_run = true }"#),
    ] {
        let record = act(&actions, &p, &diagnosis("etl"), None, T0).await;
        assert_eq!(record.decision, AuditDecision::DryRun, "{record:#?}");
        assert!(record.dry_run);
        assert!(record.etag.is_some());
        assert!(
            record
                .reason
                .starts_with("dry run: would terminate job etl with If-Match")
        );
    }
    assert!(posts(&run.emulator).is_empty());
    assert_eq!(actions.audit_log().all().await.unwrap().len(), 2);
    assert_eq!(job_state(&run, "etl").await, Some(JobState::Active));
}

#[tokio::test]
async fn actions_need_the_global_and_the_rule_opt_in() {
    let run = start().await;
    let (_dir, store) = store();
    let actions = JobActions::new(store, run.client.clone(), Duration::from_secs(30));
    // Globally off: skipped and audited, and Batch is not even asked.
    let off = policy("enabled = false", r#"{ kind = "terminate" }"#);
    let record = act(&actions, &off, &diagnosis("etl"), None, T0).await;
    assert_eq!(record.decision, AuditDecision::Skipped);
    assert!(record.reason.contains("not enabled globally"));
    assert!(run.emulator.requests().is_empty());
    // A rule without an action plans none.
    let no_rule_action = Policy::parse(
        "[actions]\nenabled = true\nmax_per_hour = 1\n[[rules]]\nname = \"notify-only\"\n",
    )
    .unwrap();
    assert!(
        plan(
            &diagnosis("etl"),
            &no_rule_action,
            T0,
            &PlanContext::default()
        )
        .action
        .is_none()
    );
    // A plan whose rule no longer asks for the action (the policy changed) is skipped.
    let live = policy(LIVE, r#"{ kind = "terminate" }"#);
    let stale_plan = plan(&diagnosis("etl"), &live, T0, &PlanContext::default())
        .action
        .unwrap();
    let changed = policy(LIVE, r#"{ kind = "disable", disable_tasks = "wait" }"#);
    let record = actions
        .execute(
            ActionRequest {
                diagnosis: &diagnosis("etl"),
                policy: &changed,
                plan: &stale_plan,
                failed_with_class: None,
            },
            T0,
        )
        .await
        .unwrap();
    assert_eq!(record.decision, AuditDecision::Skipped);
    assert!(posts(&run.emulator).is_empty());
}

#[tokio::test]
async fn thresholds_use_fresh_task_counts() {
    let run = start().await;
    let (_dir, store) = store();
    let actions = JobActions::new(store, run.client.clone(), Duration::from_secs(30));
    // 10 of 40 tasks failed (25%).
    let high = policy(LIVE, r#"{ kind = "terminate", min_failed_percent = 30 }"#);
    let record = act(&actions, &high, &diagnosis("etl"), None, T0).await;
    assert_eq!(record.decision, AuditDecision::Skipped);
    assert_eq!(
        record.reason,
        "threshold not met: 10 of 40 tasks failed (any class) = 25.0%, below min_failed_percent = 30"
    );
    // The caller's count of failures with this class is preferred.
    let count = policy(
        LIVE,
        r#"{ kind = "terminate", min_failed_tasks = 5, min_failed_percent = 10 }"#,
    );
    let record = act(&actions, &count, &diagnosis("etl"), Some(4), T0).await;
    assert_eq!(record.decision, AuditDecision::Skipped);
    assert!(
        record
            .reason
            .contains("4 tasks failed with task.exit_code, fewer than min_failed_tasks = 5"),
        "{record:#?}"
    );
    assert!(posts(&run.emulator).is_empty());
    let record = act(&actions, &count, &diagnosis("etl"), Some(7), T0).await;
    assert_eq!(record.decision, AuditDecision::Applied, "{record:#?}");
    assert!(
        record
            .threshold
            .starts_with("7 tasks failed with task.exit_code (min 5); 7 of 40 tasks"),
        "{record:#?}"
    );
    assert_eq!(
        record.action_reason,
        "batch-triage rule \"kill-oom\": 7 tasks failed with task.exit_code"
    );
    let terminate = &posts(&run.emulator)[0];
    assert_eq!(
        terminate.path_and_query.split('?').next(),
        Some("/jobs/etl/terminate")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_instances_share_one_budget() {
    let run = start().await;
    let (dir, _) = store();
    let p = policy(
        "enabled = true\ndry_run = false\nmax_per_hour = 2",
        r#"{ kind = "terminate" }"#,
    );
    // Four instances, each acting on a different job at the same time: two fit in the budget.
    let handles: Vec<JobActions> = (0..4)
        .map(|_| {
            let store: Arc<dyn ArtifactStore> = Arc::new(LocalDirStore::new(dir.path()).unwrap());
            JobActions::new(store, run.client.clone(), Duration::from_secs(30))
        })
        .collect();
    let diagnoses: Vec<Diagnosis> = JOBS.iter().map(|job| diagnosis(job)).collect();
    let records = futures::future::join_all(
        handles
            .iter()
            .zip(&diagnoses)
            .map(|(h, d)| act(h, &p, d, None, T0)),
    )
    .await;
    let applied = records
        .iter()
        .filter(|r| r.decision == AuditDecision::Applied)
        .count();
    let skipped: Vec<&AuditRecord> = records
        .iter()
        .filter(|r| r.decision == AuditDecision::Skipped)
        .collect();
    assert_eq!(applied, 2, "{records:#?}");
    assert_eq!(skipped.len(), 2);
    assert!(
        skipped
            .iter()
            .all(|r| r.reason == "hourly action budget exhausted (2 per hour)")
    );
    assert_eq!(posts(&run.emulator).len(), 2);
}

/// A store that fails chosen steps once, over a local directory.
fn flaky_store() -> (tempfile::TempDir, Arc<FlakyStore>) {
    let (dir, inner) = store();
    (dir, Arc::new(FlakyStore::new(inner)))
}

async fn try_act(
    actions: &JobActions,
    p: &Policy,
    d: &Diagnosis,
    now: OffsetDateTime,
) -> Result<AuditRecord, pipeline::actions::ActionError> {
    let planned = plan(d, p, now, &PlanContext::default());
    let action = planned.action.expect("the rule asks for an action");
    actions
        .execute(
            ActionRequest {
                diagnosis: d,
                policy: p,
                plan: &action,
                failed_with_class: None,
            },
            now,
        )
        .await
}

async fn marker_exists(store: &FlakyStore, job: &str) -> bool {
    store
        .head(&JobActions::once_key(ACCOUNT, job, "terminate").unwrap())
        .await
        .unwrap()
        .is_some()
}

/// A transient store failure at a step after the once-marker is claimed, but before the action
/// is sent, gives the marker back and is audited; the next run takes the action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_after_the_claim_gives_the_marker_back_and_the_next_run_acts() {
    for (op, prefix) in [
        (StoreOp::Get, "actions/budget/"),
        (StoreOp::Put, "actions/budget/"),
    ] {
        let run = start().await;
        let (_dir, store) = flaky_store();
        let p = policy(LIVE, r#"{ kind = "terminate" }"#);
        let d = diagnosis("etl");
        let actions = JobActions::new(store.clone(), run.client.clone(), Duration::from_secs(30));
        store.fail_once(op, prefix);

        let first = try_act(&actions, &p, &d, T0).await;
        assert!(first.is_err(), "{op:?} {prefix}: {first:?}");
        assert!(!store.still_armed(), "the failure was injected");
        assert!(
            !marker_exists(&store, "etl").await,
            "{op:?} {prefix}: the marker was given back"
        );
        assert!(posts(&run.emulator).is_empty(), "nothing was sent");
        let audit = actions.audit_log().all().await.unwrap();
        assert_eq!(audit.len(), 1, "{audit:#?}");
        assert_eq!(audit[0].decision, AuditDecision::Failed);
        assert!(
            audit[0].reason.contains("injected") && audit[0].reason.contains("tries again"),
            "{:?}",
            audit[0].reason
        );

        let second = act(&actions, &p, &d, None, T0 + Duration::from_secs(60)).await;
        assert_eq!(
            second.decision,
            AuditDecision::Applied,
            "{op:?}: {second:#?}"
        );
        assert_eq!(posts(&run.emulator).len(), 1);
        assert!(
            marker_exists(&store, "etl").await,
            "kept: the action took effect"
        );
        assert_eq!(actions.audit_log().all().await.unwrap().len(), 2);
    }
}

/// When the marker cannot be given back either, the failure is audited, and the next run
/// recognises the marker as one whose decision did not take effect, removes it and acts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_that_could_not_be_given_back_is_removed_by_the_next_run() {
    let run = start().await;
    let (_dir, store) = flaky_store();
    let p = policy(LIVE, r#"{ kind = "terminate" }"#);
    let d = diagnosis("etl");
    let actions = JobActions::new(store.clone(), run.client.clone(), Duration::from_secs(30));
    store.fail_once(StoreOp::Put, "actions/budget/");
    store.fail_once(StoreOp::Delete, "actions/once/");

    let first = try_act(&actions, &p, &d, T0).await;
    assert!(first.is_err(), "{first:?}");
    assert!(!store.still_armed());
    assert!(marker_exists(&store, "etl").await, "the release failed");
    let audit = actions.audit_log().all().await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].decision, AuditDecision::Failed);
    assert!(
        audit[0].reason.contains("could not be given back"),
        "{:?}",
        audit[0].reason
    );

    let second = act(&actions, &p, &d, None, T0 + Duration::from_secs(60)).await;
    assert_eq!(second.decision, AuditDecision::Applied, "{second:#?}");
    assert_eq!(posts(&run.emulator).len(), 1);
    let third = act(&actions, &p, &d, None, T0 + Duration::from_secs(120)).await;
    assert_eq!(third.decision, AuditDecision::Skipped);
    assert!(third.reason.starts_with("already done"), "{third:#?}");
    assert_eq!(posts(&run.emulator).len(), 1, "never twice");
    assert_eq!(actions.audit_log().all().await.unwrap().len(), 3);
}

/// A failed audit write after the action keeps the marker (the action took effect), and the next
/// run audits "already done" instead of acting again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_that_took_effect_keeps_its_marker_when_the_audit_write_fails() {
    let run = start().await;
    let (_dir, store) = flaky_store();
    let p = policy(LIVE, r#"{ kind = "terminate" }"#);
    let d = diagnosis("etl");
    let actions = JobActions::new(store.clone(), run.client.clone(), Duration::from_secs(30));
    store.fail_once(StoreOp::Put, "audit/");

    let first = try_act(&actions, &p, &d, T0).await;
    assert!(first.is_err(), "{first:?}");
    assert_eq!(posts(&run.emulator).len(), 1, "the action was sent");
    assert!(marker_exists(&store, "etl").await);

    let second = act(&actions, &p, &d, None, T0 + Duration::from_secs(60)).await;
    assert_eq!(second.decision, AuditDecision::Skipped);
    assert!(second.reason.starts_with("already done"), "{second:#?}");
    assert_eq!(posts(&run.emulator).len(), 1, "never twice");
    let audit = actions.audit_log().all().await.unwrap();
    assert!(!audit.is_empty(), "the terminal outcome is audited");
}

/// A skip after the claim (budget exhausted) gives the marker back and is audited, so the job
/// is acted on once the budget has room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skip_after_the_claim_gives_the_marker_back() {
    let run = start().await;
    let (_dir, store) = flaky_store();
    let p = policy(
        "enabled = true\ndry_run = false\nmax_per_hour = 1",
        r#"{ kind = "terminate" }"#,
    );
    let actions = JobActions::new(store.clone(), run.client.clone(), Duration::from_secs(30));
    let first = act(&actions, &p, &diagnosis("etl"), None, T0).await;
    assert_eq!(first.decision, AuditDecision::Applied);
    let skipped = act(&actions, &p, &diagnosis("j2"), None, T0).await;
    assert_eq!(skipped.decision, AuditDecision::Skipped);
    assert!(!marker_exists(&store, "j2").await);
    let later = act(
        &actions,
        &p,
        &diagnosis("j2"),
        None,
        T0 + Duration::from_secs(3600),
    )
    .await;
    assert_eq!(later.decision, AuditDecision::Applied, "{later:#?}");
    assert_eq!(actions.audit_log().all().await.unwrap().len(), 3);
}

#[tokio::test]
async fn each_account_has_its_own_hourly_budget() {
    let run = start().await;
    let (_dir, store) = store();
    let p = policy(
        "enabled = true\ndry_run = false\nmax_per_hour = 1",
        r#"{ kind = "disable", disable_tasks = "requeue" }"#,
    );
    // In a deployment each account has its own actions over its own client; the store (and so
    // the budgets) is shared. The emulator stands in for both accounts here.
    let actions = JobActions::new(store.clone(), run.client.clone(), Duration::from_secs(30));
    let first = act(&actions, &p, &diagnosis("etl"), None, T0).await;
    let spent = act(&actions, &p, &diagnosis("j2"), None, T0).await;
    let mut other = diagnosis("j3");
    other.subject.account = Some("devbatch2".into());
    let second_account = act(&actions, &p, &other, None, T0).await;
    assert_eq!(first.decision, AuditDecision::Applied);
    assert_eq!(spent.decision, AuditDecision::Skipped, "{spent:#?}");
    assert_eq!(
        second_account.decision,
        AuditDecision::Applied,
        "a storm in one account does not spend another's budget: {second_account:#?}"
    );
    for account in [ACCOUNT, "devbatch2"] {
        let key = JobActions::budget_key(account, T0).unwrap();
        assert!(store.head(&key).await.unwrap().is_some(), "{key}");
    }
}
