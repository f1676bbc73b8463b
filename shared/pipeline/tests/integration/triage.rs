//! The whole pipeline on real parts: the Batch emulator's built-in scenario, a local-directory
//! store, and a local webhook receiver that records what it gets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use artifact_store::{ArtifactStore, ObjectKey};
use batch_client::Deadline;
use batch_emulator::{Emulator, Scenario};
use diagnosis::policy::Policy;
use pipeline::triage::{Outcome, Triage, TriageError};
use preserve::PreserveOptions;
use test_kit::{Recorder, serve_emulator};
use time::OffsetDateTime;

/// Everything a test needs, kept alive for its duration.
pub(crate) struct World {
    pub(crate) triage: Triage,
    pub(crate) emulator: Emulator,
    pub(crate) store: Arc<dyn ArtifactStore>,
    pub(crate) hook: Recorder,
    pub(crate) _dir: tempfile::TempDir,
}

pub(crate) async fn world() -> World {
    let emulator = Emulator::new(Scenario::builtin()).unwrap();
    let batch_url = serve_emulator(emulator.clone()).await;
    let (triage, store, hook, dir) = pipeline_over(&batch_url).await;
    World {
        triage,
        emulator,
        store,
        hook,
        _dir: dir,
    }
}

/// The pipeline over the Batch endpoint at `batch_url` (account devbatch1), a fresh local store
/// and a recording `hook` receiver every `task.*` failure goes to, ungrouped.
pub(crate) async fn pipeline_over(
    batch_url: &str,
) -> (Triage, Arc<dyn ArtifactStore>, Recorder, tempfile::TempDir) {
    pipeline_waiting(batch_url, "0s", None).await
}

/// [`pipeline_over`] on `store` (the returned directory is unused).
pub(crate) async fn pipeline_on(
    batch_url: &str,
    store: Arc<dyn ArtifactStore>,
) -> (Triage, Recorder) {
    let (triage, _, hook, _) = pipeline_waiting(batch_url, "0s", Some(store)).await;
    (triage, hook)
}

/// As [`pipeline_over`], with alerts waiting a minute for their group.
pub(crate) async fn pipeline_with_group_wait(
    batch_url: &str,
) -> (Triage, Arc<dyn ArtifactStore>, Recorder, tempfile::TempDir) {
    pipeline_waiting(batch_url, "1m", None).await
}

async fn pipeline_waiting(
    batch_url: &str,
    group_wait: &str,
    store: Option<Arc<dyn ArtifactStore>>,
) -> (Triage, Arc<dyn ArtifactStore>, Recorder, tempfile::TempDir) {
    let hook = Recorder::start().await;
    let hook_url = hook.url.clone();

    let policy = Policy::parse(
        &r#"
[grouping]
group_by = ["account", "job", "class", "fingerprint"]
group_wait = "0s"

[[receivers]]
name = "hook"
kind = "webhook"
url_env = "HOOK_URL"
secret_env = "HOOK_SECRET"

[[rules]]
name = "all-task-failures"
match = { class = "task.*" }
receivers = ["hook"]

[[rules]]
name = "deliveries-kept-as-poison"
match = { class = "delivery.*" }
receivers = ["hook"]
"#
        .replace(
            "group_wait = \"0s\"",
            &format!("group_wait = \"{group_wait}\""),
        ),
    )
    .unwrap();
    let env: BTreeMap<&str, String> = [
        ("HOOK_URL", hook_url),
        ("HOOK_SECRET", "test-secret".to_owned()),
    ]
    .into();
    let dir = tempfile::tempdir().unwrap();
    let store =
        store.unwrap_or_else(|| artifact_store::open(dir.path().to_str().unwrap()).unwrap());
    // The built-in scenario has a 2 GiB stdout; a cap records it as skipped.
    let preserve = PreserveOptions {
        max_file_bytes: 16 << 20,
        ..PreserveOptions::default()
    };
    let triage = crate::support::single_account(batch_url, store.clone(), policy, &env, preserve);
    (triage, store, hook, dir)
}

pub(crate) fn fail_record(account: &str, job: &str, task: &str) -> String {
    serde_json::json!({"records": [{
        "time": "2026-11-27T10:05:01.1234567Z",
        "resourceId": format!("/SUBSCRIPTIONS/0/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.BATCH/BATCHACCOUNTS/{}/", account.to_uppercase()),
        "category": "ServiceLog", "operationName": "TaskFailEvent", "operationVersion": "2017-06-01",
        "properties": {"jobId": job, "id": task, "taskType": "User", "executionInfo": {"exitCode": 137, "retryCount": 0, "requeueCount": 0, "result": "Failure"}}
    }]})
    .to_string()
}

pub(crate) fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_event_is_preserved_diagnosed_and_alerted() {
    let world = world().await;
    let report = world
        .triage
        .handle_payload(
            fail_record("devbatch1", "etl", "oom").as_bytes(),
            OffsetDateTime::now_utc(),
            deadline(),
        )
        .await
        .unwrap();
    assert_eq!(report.subjects.len(), 1, "{report:#?}");
    let subject = &report.subjects[0];
    assert_eq!(subject.outcome, Outcome::Done, "{subject:#?}");
    assert_eq!(subject.class.map(|c| c.as_str()), Some("task.exit_code"));
    assert_eq!(subject.notified, vec!["hook"]);
    assert!(!subject.preserved.is_empty());
    let manifest = world
        .store
        .get(&ObjectKey::new("devbatch1/etl/oom/attempt-0/manifest.json").unwrap())
        .await
        .unwrap();
    assert!(manifest.is_some(), "the manifest is written");
    let diagnosis = world
        .store
        .get(&ObjectKey::new("devbatch1/etl/oom/attempt-0/diagnosis.json").unwrap())
        .await
        .unwrap();
    assert!(diagnosis.is_some(), "diagnosis.json sits beside the logs");
    let upload_log_gets = world
        .emulator
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path_and_query.contains("/files/fileupload"))
        .count();
    assert_eq!(
        upload_log_gets, 0,
        "absent fileupload*.txt (no outputFiles) are not in the listing: no request at all"
    );
    let received = world.hook.bodies();
    assert_eq!(received.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&received[0]).unwrap();
    assert_eq!(body["diagnosis"]["class"], "task.exit_code");
    assert_eq!(body["diagnosis"]["exitMeaning"], "oom_or_sigkill");
    assert!(
        body["stderrTail"]
            .as_str()
            .is_some_and(|t| t.contains("Killed")),
        "the alert carries the stderr tail: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_events_delivered_100_times_give_one_copy_and_one_alert() {
    let world = world().await;
    let payload = fail_record("devbatch1", "etl", "oom");
    let other = fail_record("devbatch1", "etl", "sigkill");
    let now = OffsetDateTime::now_utc();
    for i in 0..100 {
        // Reordered: the other task's event comes first every third delivery.
        if i % 3 == 0 {
            world
                .triage
                .handle_payload(other.as_bytes(), now, deadline())
                .await
                .unwrap();
        }
        let report = world
            .triage
            .handle_payload(payload.as_bytes(), now, deadline())
            .await
            .unwrap();
        assert!(!report.should_retry(), "{report:#?}");
        if i > 0 {
            assert!(
                report.subjects[0].already_preserved,
                "delivery {i} copied again"
            );
            assert!(
                report.subjects[0].notified.is_empty(),
                "delivery {i} alerted again"
            );
        }
    }
    let received = world.hook.len();
    assert_eq!(
        received, 2,
        "one alert per cause (oom, sigkill), whatever the duplicates"
    );
    let file_reads = world
        .emulator
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path_and_query.starts_with("/jobs/etl/tasks/oom/files/"))
        .count();
    assert!(
        file_reads <= 4,
        "the files were copied once ({file_reads} file reads)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn events_naming_other_accounts_are_refused_before_any_fetch() {
    let world = world().await;
    let report = world
        .triage
        .handle_payload(
            fail_record("someoneelse", "etl", "oom").as_bytes(),
            OffsetDateTime::now_utc(),
            deadline(),
        )
        .await
        .unwrap();
    assert!(
        matches!(report.subjects[0].outcome, Outcome::Refused(_)),
        "{report:#?}"
    );
    assert!(!report.should_retry(), "a forged event is not retried");
    let reference = serde_json::json!({"eventType": "x", "subject": "s",
        "data": {"accountUrl": "https://attacker.example.com/?sig=SECRET", "jobId": "etl", "taskId": "oom"}});
    let report = world
        .triage
        .handle_payload(
            reference.to_string().as_bytes(),
            OffsetDateTime::now_utc(),
            deadline(),
        )
        .await
        .unwrap();
    match &report.subjects[0].outcome {
        Outcome::Refused(reason) => assert!(!reason.contains("SECRET"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!report.subjects[0].subject.contains("SECRET"));
    assert!(
        world
            .emulator
            .requests()
            .iter()
            .all(|r| !r.path_and_query.contains("/tasks/oom")),
        "nothing was fetched for a refused event"
    );
    assert!(world.hook.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn unreadable_payloads_are_poison_not_retries() {
    let world = world().await;
    let error = world
        .triage
        .handle_payload(b"{\"records\": [", OffsetDateTime::now_utc(), deadline())
        .await
        .unwrap_err();
    assert!(matches!(error, TriageError::Payload(_)), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn diagnose_on_demand_has_no_effects() {
    let world = world().await;
    let diagnoses = world
        .triage
        .diagnose("prep-fail", None, deadline())
        .await
        .unwrap();
    assert!(
        diagnoses
            .iter()
            .any(|d| d.class.as_str() == "job.prep_failed"),
        "{diagnoses:#?}"
    );
    assert!(world.hook.is_empty());
    assert!(
        world.store.list("").await.unwrap().is_empty(),
        "nothing written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sweep_finds_failures_without_events_and_repeats_nothing() {
    use pipeline::sweep::SweepOptions;
    let world = world().await;
    let now = OffsetDateTime::now_utc();
    // The built-in scenario's failures ended between 12 minutes and 2 hours ago.
    let options = SweepOptions {
        first_lookback: Duration::from_secs(3 * 3600),
        ..SweepOptions::default()
    };
    let first = world.triage.sweep(now, deadline(), &options).await.unwrap();
    assert!(first.completed && !first.skipped_busy, "{first:#?}");
    let classes: Vec<&str> = first
        .subjects
        .iter()
        .filter_map(|s| s.class.map(|c| c.as_str()))
        .collect();
    for expected in [
        "task.exit_code",
        "task.command_launch",
        "task.timeout",
        "job.timeout",
        "job.terminated_by_task",
        "job.scheduling_error",
        "job.prep_failed",
    ] {
        assert!(
            classes.contains(&expected),
            "the sweep missed {expected}: {classes:?}"
        );
    }
    assert!(
        world
            .store
            .get(&ObjectKey::new("devbatch1/etl/oom/attempt-0/manifest.json").unwrap())
            .await
            .unwrap()
            .is_some(),
        "failed tasks found by the sweep are preserved"
    );
    let task_gets = world
        .emulator
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path_and_query.contains("/tasks/oom?"))
        .count();
    assert_eq!(
        task_gets, 0,
        "the sweep lists failed tasks; it does not GET them one by one"
    );
    let alerts = world.hook.len();
    assert!(alerts > 0);

    // The next run starts from the cursor: nothing new, nothing sent again.
    let second = world
        .triage
        .sweep(now + time::Duration::minutes(5), deadline(), &options)
        .await
        .unwrap();
    assert!(second.completed);
    assert!(
        second.since > first.since,
        "the cursor advanced: {} then {}",
        first.since,
        second.since
    );
    assert_eq!(
        world.hook.len(),
        alerts,
        "a second sweep alerts nobody again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn overlapping_sweeps_do_not_both_run() {
    use pipeline::sweep::SweepOptions;
    let world = world().await;
    let now = OffsetDateTime::now_utc();
    // Another instance holds an unexpired lease.
    let lease = serde_json::json!({"expires": (now + time::Duration::minutes(10)).format(&time::format_description::well_known::Rfc3339).unwrap()});
    world
        .store
        .put(
            &ObjectKey::new("sweep/lease.json").unwrap(),
            lease.to_string().into(),
            artifact_store::Condition::IfAbsent,
        )
        .await
        .unwrap();
    let report = world
        .triage
        .sweep(now, deadline(), &SweepOptions::default())
        .await
        .unwrap();
    assert!(
        report.skipped_busy && report.subjects.is_empty(),
        "{report:#?}"
    );
    // Once it has expired, the next run takes it over.
    let later = world
        .triage
        .sweep(
            now + time::Duration::minutes(11),
            deadline(),
            &SweepOptions::default(),
        )
        .await
        .unwrap();
    assert!(!later.skipped_busy && later.completed);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_of_many_subjects_is_worked_concurrently_reading_each_job_once() {
    let world = world().await;
    // One Event Hubs body with the failed tasks of two jobs, each task twice, shuffled.
    let tasks = [
        ("etl", "oom"),
        ("ingest", "blob-denied"),
        ("etl", "sigkill"),
        ("etl", "py-error"),
        ("ingest", "upload-fail"),
        ("etl", "no-shell"),
        ("etl", "exit-127"),
        ("ingest", "bad-image"),
    ];
    let records: Vec<serde_json::Value> = tasks
        .iter()
        .chain(tasks.iter().rev())
        .map(|(job, task)| {
            let one: serde_json::Value =
                serde_json::from_str(&fail_record("devbatch1", job, task)).unwrap();
            one["records"][0].clone()
        })
        .collect();
    let payload = serde_json::json!({ "records": records }).to_string();
    world.emulator.clear_requests();
    // Every task read is slowed down: done one after another, the reads alone would take
    // 8 × 400 ms. Finishing sooner is only possible if they overlap.
    let delay = Duration::from_millis(400);
    world.emulator.add_fault(
        serde_json::from_value(serde_json::json!({
            "method": "GET",
            "pathContains": "/tasks/",
            "fault": {"kind": "delay", "millis": delay.as_millis() as u64},
        }))
        .unwrap(),
    );
    let started = std::time::Instant::now();
    let report = world
        .triage
        .handle_payload(payload.as_bytes(), OffsetDateTime::now_utc(), deadline())
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed < delay * tasks.len() as u32,
        "the subjects were worked one after another ({elapsed:?})"
    );
    let subjects: Vec<&str> = report.subjects.iter().map(|s| s.subject.as_str()).collect();
    let expected: Vec<String> = tasks
        .iter()
        .map(|(job, task)| format!("devbatch1/{job}/{task}"))
        .collect();
    assert_eq!(
        subjects, expected,
        "one report per distinct subject, in payload order"
    );
    assert!(
        report.subjects.iter().all(|s| s.outcome == Outcome::Done),
        "{report:#?}"
    );
    let job_reads = |job: &str| {
        world
            .emulator
            .requests()
            .iter()
            .filter(|r| {
                r.method == "GET"
                    && (r.path_and_query == format!("/jobs/{job}")
                        || r.path_and_query.starts_with(&format!("/jobs/{job}?")))
            })
            .count()
    };
    assert_eq!(
        job_reads("etl"),
        1,
        "concurrent subjects of one job share one read"
    );
    assert_eq!(job_reads("ingest"), 1);
}

fn start_task_record(pool: &str, node: &str) -> String {
    serde_json::json!({"records": [{
        "time": "2026-11-27T10:05:01.1234567Z",
        "resourceId": "/SUBSCRIPTIONS/0/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.BATCH/BATCHACCOUNTS/DEVBATCH1/",
        "category": "ServiceLog", "operationName": "SpecialTaskEvent", "operationVersion": "2017-06-01",
        "properties": {"jobId": "", "taskName": "starttask", "taskType": "StartTask",
            "nodeInfo": {"poolId": pool, "nodeId": node},
            "executionInfo": {"startTime": "2026-11-27T10:04:00Z", "endTime": "2026-11-27T10:04:40Z",
                "exitCode": 100, "result": "failure", "schedulingError": {"details": []}}}
    }]})
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_start_task_is_diagnosed_and_its_node_logs_preserved_once() {
    let world = world().await;
    let payload = start_task_record("linux", "tvm-01");
    let now = OffsetDateTime::now_utc();
    let first = world
        .triage
        .handle_payload(payload.as_bytes(), now, deadline())
        .await
        .unwrap();
    assert_eq!(first.subjects.len(), 1, "{first:#?}");
    let subject = &first.subjects[0];
    assert_eq!(subject.subject, "devbatch1/_pools/linux/tvm-01/_starttask");
    assert_eq!(subject.outcome, Outcome::Done, "{subject:#?}");
    assert_eq!(
        subject.class.map(|c| c.as_str()),
        Some("node.start_task_failed")
    );
    assert!(!subject.already_preserved);
    let prefix = "devbatch1/_pools/linux/tvm-01/_starttask";
    let stdout = world
        .store
        .get(&ObjectKey::new(format!("{prefix}/stdout.txt")).unwrap())
        .await
        .unwrap()
        .expect("the node's startup/stdout.txt is kept");
    assert_eq!(
        &stdout.bytes[..],
        b"start task: mounted /mnt/batch/tasks/shared\n"
    );
    let manifest = world
        .store
        .get(&ObjectKey::new(format!("{prefix}/manifest.json")).unwrap())
        .await
        .unwrap()
        .expect("the manifest is written last");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.bytes).unwrap();
    assert_eq!(manifest["kind"], "starttask");
    assert_eq!(manifest["nodeId"], "tvm-01");
    let diagnosis = world
        .store
        .get(&ObjectKey::new(format!("{prefix}/diagnosis.json")).unwrap())
        .await
        .unwrap()
        .expect("diagnosis.json sits beside the logs");
    let diagnosis: serde_json::Value = serde_json::from_slice(&diagnosis.bytes).unwrap();
    assert_eq!(diagnosis["class"], "node.start_task_failed");

    // Delivered again: nothing is copied twice.
    world.emulator.clear_requests();
    let again = world
        .triage
        .handle_payload(payload.as_bytes(), now, deadline())
        .await
        .unwrap();
    assert!(again.subjects[0].already_preserved, "{again:#?}");
    assert!(
        !world
            .emulator
            .requests()
            .iter()
            .any(|r| r.path_and_query.contains("/files/")),
        "a duplicate reads no node file"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_start_task_on_a_removed_node_records_its_logs_as_gone() {
    let world = world().await;
    let report = world
        .triage
        .handle_payload(
            start_task_record("linux", "tvm-04").as_bytes(),
            OffsetDateTime::now_utc(),
            deadline(),
        )
        .await
        .unwrap();
    assert_eq!(report.subjects[0].outcome, Outcome::Done, "{report:#?}");
    let manifest = world
        .store
        .get(&ObjectKey::new("devbatch1/_pools/linux/tvm-04/_starttask/manifest.json").unwrap())
        .await
        .unwrap()
        .expect("a manifest records what was gone");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.bytes).unwrap();
    assert_eq!(
        manifest["files"].as_array().map(Vec::len),
        Some(0),
        "{manifest}"
    );
    assert_eq!(manifest["missing"][0]["code"], "NodeNotFound", "{manifest}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_hubs_batch_is_triaged_together_and_a_poison_body_is_left_out() {
    let world = world().await;
    let bodies = vec![
        fail_record("devbatch1", "etl", "oom"),
        "{ not json".to_owned(),
        fail_record("devbatch1", "etl", "sigkill"),
        fail_record("devbatch1", "etl", "oom"),
    ];
    world.emulator.clear_requests();
    let (report, unreadable) = world
        .triage
        .handle_payloads(&bodies, OffsetDateTime::now_utc(), deadline())
        .await;
    assert_eq!(unreadable.len(), 1, "{unreadable:?}");
    assert!(matches!(unreadable[0], (1, TriageError::Payload(_))));
    let subjects: Vec<&str> = report.subjects.iter().map(|s| s.subject.as_str()).collect();
    assert_eq!(
        subjects,
        ["devbatch1/etl/oom", "devbatch1/etl/sigkill"],
        "one subject per distinct task across the batch"
    );
    assert!(!report.should_retry(), "{report:#?}");
    let job_reads = world
        .emulator
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path_and_query.starts_with("/jobs/etl?"))
        .count();
    assert_eq!(job_reads, 1, "the batch shares one read of the job");
    assert_eq!(world.hook.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subject_whose_alert_group_cannot_be_written_is_retried_and_nothing_is_lost() {
    let world = world().await;
    // A file where the groups directory belongs: every group write fails.
    let blocker = world._dir.path().join("groups");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let payload = serde_json::json!({"records": [
        serde_json::from_str::<serde_json::Value>(&fail_record("devbatch1", "etl", "oom")).unwrap()["records"][0],
        serde_json::from_str::<serde_json::Value>(&fail_record("devbatch1", "etl", "sigkill")).unwrap()["records"][0],
    ]})
    .to_string();
    let report = world
        .triage
        .handle_payload(payload.as_bytes(), OffsetDateTime::now_utc(), deadline())
        .await
        .unwrap();
    assert_eq!(report.subjects.len(), 2, "{report:#?}");
    for subject in &report.subjects {
        match &subject.outcome {
            Outcome::Failed { reason, retryable } => {
                assert!(*retryable, "{subject:#?}");
                assert!(reason.starts_with("alert grouping"), "{reason}");
            }
            other => panic!("expected a retryable failure, got {other:?}"),
        }
        assert!(!subject.preserved.is_empty(), "the logs were kept anyway");
    }
    assert!(report.should_retry());
    assert_eq!(world.hook.len(), 0);

    // The store recovers; the redelivery alerts once per cause and copies nothing again.
    std::fs::remove_file(&blocker).unwrap();
    let again = world
        .triage
        .handle_payload(payload.as_bytes(), OffsetDateTime::now_utc(), deadline())
        .await
        .unwrap();
    assert!(
        again
            .subjects
            .iter()
            .all(|s| s.outcome == Outcome::Done && s.already_preserved),
        "{again:#?}"
    );
    assert!(!again.should_retry());
    assert_eq!(world.hook.len(), 2, "one alert per cause");
}

#[tokio::test(flavor = "multi_thread")]
async fn starts_and_successful_completions_cost_no_batch_request() {
    let world = world().await;
    let record = |operation: &str, task: &str, execution: serde_json::Value| {
        serde_json::json!({
            "time": "2026-11-27T10:05:01.1234567Z",
            "resourceId": "/SUBSCRIPTIONS/0/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.BATCH/BATCHACCOUNTS/DEVBATCH1/",
            "category": "ServiceLog", "operationName": operation, "operationVersion": "2017-06-01",
            "properties": {"jobId": "etl", "id": task, "taskType": "User", "executionInfo": execution}
        })
    };
    let payload = serde_json::json!({"records": [
        record("TaskStartEvent", "ok-1", serde_json::json!({"retryCount": 0})),
        record("TaskCompleteEvent", "ok-1", serde_json::json!({"exitCode": 0, "result": "Success", "retryCount": 0, "requeueCount": 0})),
        // A failed completion is looked at even without its TaskFailEvent (events may be lost).
        record("TaskCompleteEvent", "oom", serde_json::json!({"exitCode": 137, "result": "Failure", "retryCount": 0, "requeueCount": 0})),
    ]})
    .to_string();
    world.emulator.clear_requests();
    let report = world
        .triage
        .handle_payload(payload.as_bytes(), OffsetDateTime::now_utc(), deadline())
        .await
        .unwrap();
    assert_eq!(report.ignored_items, 2, "{report:#?}");
    let subjects: Vec<&str> = report.subjects.iter().map(|s| s.subject.as_str()).collect();
    assert_eq!(subjects, ["devbatch1/etl/oom"]);
    assert_eq!(report.subjects[0].outcome, Outcome::Done);
    let about_ok: Vec<String> = world
        .emulator
        .requests()
        .iter()
        .filter(|r| r.path_and_query.contains("/ok-1"))
        .map(|r| format!("{} {}", r.method, r.path_and_query))
        .collect();
    assert!(about_ok.is_empty(), "{about_ok:?}");
}

/// One record of a batch made by [`fail_record`].
fn record_of(batch: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(batch).unwrap();
    value["records"][0].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_repeating_two_subjects_a_hundred_thousand_times_reports_two() {
    // Duplicates are dropped as the batch is read, refusals included: memory and the report
    // follow the distinct subjects, not the records.
    let world = world().await;
    let ours = record_of(&fail_record("devbatch1", "etl", "oom"));
    let theirs = record_of(&fail_record("someoneelse", "etl", "oom"));
    let mut records = Vec::with_capacity(100_000);
    for i in 0..100_000 {
        records.push(if i % 2 == 0 { &ours } else { &theirs }.as_str());
    }
    let payload = format!("{{\"records\": [{}, {{}}]}}", records.join(","));
    let report = world
        .triage
        .handle_payload(payload.as_bytes(), OffsetDateTime::now_utc(), deadline())
        .await
        .unwrap();
    assert_eq!(report.subjects.len(), 2, "{:#?}", report.subjects);
    assert!(
        matches!(report.subjects[1].outcome, Outcome::Refused(_)),
        "{report:#?}"
    );
    assert_eq!(report.ignored_items, 1, "the empty record");
    assert_eq!(world.hook.len(), 1);
}
