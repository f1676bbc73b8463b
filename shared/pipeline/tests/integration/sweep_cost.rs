//! The sweep's cost follows what changed: one filtered job listing, task counts per job, failed
//! tasks listed only where the failed count rose, prep/release status only where there is such
//! a task; and whatever goes wrong (counts unreadable, a list cut, throttling), no failure is
//! lost and the cursor stays clean.

use std::sync::Arc;
use std::time::Duration;

use artifact_store::ArtifactStore;
use batch_client::{BatchApi, BatchClient, BatchConfig, Deadline, Secret};
use batch_emulator::{
    Emulator, Fault, FaultRule, RequestRecord, Scenario, WELL_KNOWN_ACCOUNT_KEY,
    WELL_KNOWN_ACCOUNT_NAME,
};
use pipeline::sweep::{SweepOptions, SweepReport};
use pipeline::triage::Triage;
use serde_json::{Value, json};
use test_kit::{Recorder, serve_emulator};
use time::OffsetDateTime;

use crate::triage::{deadline, pipeline_over};

struct World {
    triage: Triage,
    emulator: Emulator,
    batch: BatchClient,
    store: Arc<dyn ArtifactStore>,
    hook: Recorder,
    _dir: tempfile::TempDir,
}

/// Jobs that hold only old news (`quiet-*`: successes and a failure three hours old), `busy`
/// with a running task that a test ends, `prepped` with a job preparation task, and `ended`,
/// which completed a day ago and must not even be looked at.
fn scenario() -> Scenario {
    let old_failure = json!({"task": {"id": "old", "state": "completed",
        "executionInfo": {"startTime": "now-4h", "endTime": "now-3h", "exitCode": 1, "result": "failure",
            "failureInfo": {"category": "usererror", "code": "FailureExitCode"}}}});
    let success = json!({"task": {"id": "ok", "state": "completed",
        "executionInfo": {"startTime": "now-4h", "endTime": "now-3h", "exitCode": 0, "result": "success"}}});
    let job =
        |id: &str| json!({"id": id, "poolInfo": {"poolId": "pool-1"}, "creationTime": "now-5h"});
    let mut jobs: Vec<Value> = (1..=3)
        .map(|n| json!({"job": job(&format!("quiet-{n}")), "tasks": [old_failure, success]}))
        .collect();
    jobs.push(json!({"job": job("busy"), "tasks": [old_failure, {
        "task": {"id": "runs", "state": "running", "commandLine": "python3 work.py",
            "executionInfo": {"startTime": "now-20m"},
            "nodeInfo": {"poolId": "pool-1", "nodeId": "tvm-01"}},
        "files": {"stdout.txt": "step 9\n", "stderr.txt": "KeyboardInterrupt\n"}}]}));
    let mut prepped = job("prepped");
    prepped["jobPreparationTask"] = json!({"commandLine": "/bin/sh -c true"});
    jobs.push(json!({"job": prepped, "tasks": [success],
        "preparationAndReleaseStatus": [{"status": {"poolId": "pool-1", "nodeId": "tvm-01",
            "jobPreparationTaskExecutionInfo": {"state": "completed", "startTime": "now-5h",
                "endTime": "now-5h", "exitCode": 0, "result": "success"}}}]}));
    let mut ended = job("ended");
    ended["state"] = json!("completed");
    ended["executionInfo"] =
        json!({"startTime": "now-2d", "endTime": "now-1d", "terminateReason": "AllTasksComplete"});
    jobs.push(json!({"job": ended, "tasks": [old_failure]}));
    let scenario = json!({"pools": [{"id": "pool-1", "nodes": [{"id": "tvm-01"}]}], "jobs": jobs});
    Scenario::from_json_str(&scenario.to_string()).unwrap()
}

async fn world() -> World {
    let emulator = Emulator::new(scenario()).unwrap();
    let batch_url = serve_emulator(emulator.clone()).await;
    let (triage, store, hook, dir) = pipeline_over(&batch_url).await;
    let batch = BatchClient::new(
        BatchConfig::shared_key(
            &batch_url,
            WELL_KNOWN_ACCOUNT_NAME,
            Secret::new(WELL_KNOWN_ACCOUNT_KEY),
        )
        .unwrap(),
    )
    .unwrap();
    World {
        triage,
        emulator,
        batch,
        store,
        hook,
        _dir: dir,
    }
}

impl World {
    async fn sweep(&self) -> SweepReport {
        self.sweep_within(deadline()).await
    }

    async fn sweep_within(&self, deadline: Deadline) -> SweepReport {
        self.emulator.clear_requests();
        self.triage
            .sweep(
                OffsetDateTime::now_utc(),
                deadline,
                &SweepOptions::default(),
            )
            .await
            .unwrap()
    }

    /// The running task of `busy` ends: a new failure, with its logs on the node.
    async fn fail_busy_task(&self) {
        self.batch
            .terminate_task("busy", "runs", None, deadline())
            .await
            .unwrap();
    }

    /// Requests since the last sweep began whose path (without the query) matches.
    fn requests(&self, matches: impl Fn(&str) -> bool) -> Vec<RequestRecord> {
        self.emulator
            .requests()
            .into_iter()
            .filter(|r| matches(r.path_and_query.split('?').next().unwrap_or_default()))
            .collect()
    }

    fn count(&self, matches: impl Fn(&str) -> bool) -> usize {
        self.requests(matches).len()
    }

    async fn seen_records(&self) -> usize {
        self.store.list("sweep/seen/").await.unwrap().len()
    }
}

fn failures(report: &SweepReport) -> Vec<&str> {
    report
        .subjects
        .iter()
        .filter(|s| s.class.is_some_and(|c| c.is_failure()))
        .map(|s| s.subject.as_str())
        .collect()
}

fn is_list_tasks(path: &str) -> bool {
    path.starts_with("/jobs/") && path.ends_with("/tasks")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_run_reads_task_counts_and_lists_failed_tasks_only_where_the_count_rose() {
    let world = world().await;
    let first = world.sweep().await;
    assert!(first.completed, "{first:#?}");
    // One listing, filtered on the server: the job that ended a day ago is not even asked about.
    let listings = world.requests(|p| p == "/jobs");
    assert_eq!(listings.len(), 1);
    let query = listings[0].path_and_query.split_once('?').unwrap().1;
    let filter = url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "$filter")
        .map(|(_, value)| value.into_owned())
        .unwrap();
    assert!(
        filter.starts_with("state eq 'active' or ")
            && filter.contains(" or executionInfo/endTime ge datetime'"),
        "{filter}"
    );
    assert_eq!(world.count(|p| p.starts_with("/jobs/ended")), 0);
    assert_eq!(first.jobs_examined, 5);
    // Never seen: every job's failed tasks are listed once; none is read again (the listing
    // carries what its diagnosis needs); prep/release status only where there is such a task.
    assert_eq!(first.failed_task_lists, 5);
    assert_eq!(world.count(is_list_tasks), 5);
    assert_eq!(world.count(|p| p.ends_with("/taskcounts")), 5);
    let job_gets = world.count(|p| p.starts_with("/jobs/") && p.matches('/').count() == 2);
    assert_eq!(job_gets, 0, "no job is read again after the listing");
    assert_eq!(
        world
            .requests(|p| p.ends_with("/jobpreparationandreleasetaskstatus"))
            .iter()
            .map(|r| r.path_and_query.split('?').next().unwrap().to_owned())
            .collect::<Vec<_>>(),
        ["/jobs/prepped/jobpreparationandreleasetaskstatus"]
    );
    assert_eq!(
        world.seen_records().await,
        5,
        "one record per job looked at"
    );

    // Nothing changed: counts, the one prep status, the listing; nothing else.
    let quiet = world.sweep().await;
    assert!(quiet.completed && failures(&quiet).is_empty(), "{quiet:#?}");
    assert_eq!(quiet.failed_task_lists, 0);
    assert_eq!(world.emulator.requests().len(), 1 + 5 + 1);

    // One task fails: only its job's failed tasks are listed, and it is found and alerted.
    world.fail_busy_task().await;
    let alerts_before = world.hook.len();
    let changed = world.sweep().await;
    assert!(changed.completed, "{changed:#?}");
    assert_eq!(failures(&changed), ["devbatch1/busy/runs"]);
    assert_eq!(changed.failed_task_lists, 1);
    assert_eq!(
        world.requests(is_list_tasks)[0]
            .path_and_query
            .split('?')
            .next(),
        Some("/jobs/busy/tasks")
    );
    assert_eq!(world.hook.len(), alerts_before + 1);

    // And it is not listed again by the next quiet run.
    let after = world.sweep().await;
    assert!(
        after.completed && after.failed_task_lists == 0,
        "{after:#?}"
    );
    assert_eq!(world.seen_records().await, 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_counts_cannot_be_read_has_its_failed_tasks_listed() {
    let world = world().await;
    assert!(world.sweep().await.completed);
    world.fail_busy_task().await;
    world.emulator.add_fault(
        FaultRule::new(Fault::Error {
            status: 403,
            code: "AuthorizationFailure".to_owned(),
            message: "not this one".to_owned(),
            retry_after_seconds: None,
        })
        .path_prefix("/jobs/busy/taskcounts"),
    );
    let report = world.sweep().await;
    assert!(report.completed, "{report:#?}");
    assert_eq!(failures(&report), ["devbatch1/busy/runs"]);
    assert_eq!(report.failed_task_lists, 1, "only the job without counts");
    // Its record was not moved (no counts to keep), so it is listed again next time; the
    // failure is already handled and not alerted twice.
    let alerts = world.hook.len();
    world.emulator.clear_faults();
    let next = world.sweep().await;
    assert_eq!(next.failed_task_lists, 1);
    assert_eq!(world.hook.len(), alerts);
    let last = world.sweep().await;
    assert_eq!(last.failed_task_lists, 0, "{last:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_task_list_cut_short_leaves_the_cursor_and_the_next_run_finds_the_failure() {
    let world = world().await;
    assert!(world.sweep().await.completed);
    world.fail_busy_task().await;
    world.emulator.add_fault(
        FaultRule::new(Fault::Error {
            status: 400,
            code: "InvalidQueryParameterValue".to_owned(),
            message: "broken".to_owned(),
            retry_after_seconds: None,
        })
        .method("GET")
        .path_prefix("/jobs/busy/tasks")
        .times(1),
    );
    let cut = world.sweep().await;
    assert!(!cut.completed, "{cut:#?}");
    assert!(failures(&cut).is_empty());
    let next = world.sweep().await;
    assert_eq!(next.since, cut.since, "the cursor did not move");
    assert!(next.completed, "{next:#?}");
    assert_eq!(failures(&next), ["devbatch1/busy/runs"]);
    assert_eq!(next.failed_task_lists, 1, "its count still looked risen");
    let after = world.sweep().await;
    assert!(after.since > next.since && after.failed_task_lists == 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_with_half_its_requests_throttled_finishes_or_leaves_a_clean_cursor() {
    // Retries at once: the run can finish within its deadline.
    throttled_half(0, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_cut_by_its_deadline_while_throttled_leaves_a_clean_cursor() {
    // A second's wait per throttle and one second of work before the reserve: the run is cut.
    throttled_half(1, Duration::from_secs(6)).await;
}

/// Half of every request throttled (`Retry-After: retry_after`), within `within`: the run
/// finishes with the failure found, or stops with the cursor where it was and the next run
/// finds it; either way it is alerted once.
async fn throttled_half(retry_after: u64, within: Duration) {
    let world = world().await;
    assert!(world.sweep().await.completed);
    world.fail_busy_task().await;
    world.emulator.add_fault(
        FaultRule::new(Fault::Throttle {
            retry_after_seconds: retry_after,
        })
        .rate(0.5),
    );
    let throttled = world.sweep_within(Deadline::after(within)).await;
    let throttles = world
        .emulator
        .requests()
        .iter()
        .filter(|r| r.fault.as_deref() == Some("throttle"))
        .count();
    assert!(throttles > 0, "the emulator throttled");
    world.emulator.clear_faults();
    let mut found: Vec<String> = failures(&throttled)
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let next = world.sweep().await;
    if throttled.completed {
        assert!(failures(&throttled).contains(&"devbatch1/busy/runs"));
        assert!(next.since > throttled.since);
    } else {
        assert_eq!(
            next.since, throttled.since,
            "an unfinished run keeps the cursor"
        );
    }
    assert!(next.completed, "{next:#?}");
    found.extend(failures(&next).iter().map(|s| (*s).to_owned()));
    assert!(
        found.iter().any(|s| s == "devbatch1/busy/runs"),
        "the failure was found: {found:?}"
    );
    let alerts: Vec<Value> = world.hook.alerts();
    let for_busy = alerts
        .iter()
        .filter(|a| a.to_string().contains("runs"))
        .count();
    assert_eq!(for_busy, 1, "alerted once: {alerts:#?}");
}
