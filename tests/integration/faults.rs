//! Reliability end to end: the pipeline and the CLI under the faults production has — Batch
//! throttling storms, Blob Storage 5xx, a receiver that is down, a process killed mid-copy, and
//! duplicate, reordered and concurrent deliveries. In each: nothing lost and nothing doubled.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use artifact_store::{ArtifactStore, ObjectKey};
use batch_client::Deadline;
use batch_emulator::{Fault, FaultRule, Scenario};
use pipeline::sweep::SweepOptions;
use pipeline::triage::{Outcome, RunReport, Triage};
use time::OffsetDateTime;

use crate::harness::{self, BlobFaults, Receiver};

const FAILED_ETL_TASKS: [&str; 4] = ["oom", "sigkill", "py-error", "exit-127"];

fn hook_env(receiver: &Receiver) -> BTreeMap<&'static str, String> {
    [
        ("HOOK_URL", receiver.url.clone()),
        ("HOOK_SECRET", "hook-secret".to_owned()),
    ]
    .into()
}

async fn manifest(store: &dyn ArtifactStore, job: &str, task: &str) -> Option<serde_json::Value> {
    let key = ObjectKey::new(format!("devbatch1/{job}/{task}/attempt-0/manifest.json")).unwrap();
    let bytes = store.get(&key).await.unwrap()?;
    Some(serde_json::from_slice(&bytes.bytes).unwrap())
}

/// Runs `payload` until the report asks for no retry (at most `runs` times), as a host's retry
/// policy would redeliver it; returns the reports.
async fn until_done(triage: &Triage, payload: &str, runs: usize) -> Vec<RunReport> {
    let mut reports = Vec::new();
    for _ in 0..runs {
        let report = triage
            .handle_payload(
                payload.as_bytes(),
                OffsetDateTime::now_utc(),
                harness::deadline(),
            )
            .await
            .unwrap();
        let retry = report.should_retry();
        reports.push(report);
        if !retry {
            return reports;
        }
    }
    panic!("still asking for a retry after {runs} runs: {reports:#?}");
}

/// Each preserved file of `task` has the bytes and sha256 the emulator serves, and the manifest
/// lists exactly the files the store holds under the task's prefix.
async fn assert_preserved_exactly(
    store: &dyn ArtifactStore,
    batch_url: &str,
    job: &str,
    task: &str,
) {
    let manifest = manifest(store, job, task)
        .await
        .unwrap_or_else(|| panic!("{job}/{task}: no manifest"));
    let prefix = format!("devbatch1/{job}/{task}/attempt-0/");
    let mut listed: BTreeSet<String> = store
        .list(&prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key.as_str().trim_start_matches(&prefix).to_owned())
        .collect();
    // Resume records of an interrupted copy (preserve's `.progress/`) are bookkeeping, not logs.
    listed.retain(|name| !name.starts_with(".progress/"));
    assert!(listed.remove("manifest.json"));
    assert!(listed.remove("diagnosis.json"), "{job}/{task}: {listed:?}");
    let files = manifest["files"].as_array().unwrap();
    let in_manifest: BTreeSet<String> = files
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        listed, in_manifest,
        "{job}/{task}: the store holds exactly the files the manifest lists"
    );
    assert!(!in_manifest.is_empty(), "{job}/{task}: nothing copied");
    for file in files {
        let name = file["name"].as_str().unwrap();
        let stored = store
            .get(&ObjectKey::new(format!("{prefix}{name}")).unwrap())
            .await
            .unwrap()
            .unwrap()
            .bytes;
        let (size, sha) = harness::emulator_file(batch_url, job, task, name).await;
        assert_eq!(stored.len() as u64, size, "{job}/{task}/{name}: truncated");
        assert_eq!(file["bytes"].as_u64(), Some(size), "{job}/{task}/{name}");
        assert_eq!(harness::sha256_hex(&stored), sha, "{job}/{task}/{name}");
        assert_eq!(
            file["sha256"].as_str(),
            Some(sha.as_str()),
            "{job}/{task}/{name}"
        );
    }
}

fn alerts_per_task(receiver: &Receiver) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for body in receiver.bodies() {
        // A grouped alert names its first example; each body is one alert.
        let task = body["diagnosis"]["subject"]["taskId"]
            .as_str()
            .unwrap_or("?")
            .to_owned();
        *counts.entry(task).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throttling_storm_ends_done_or_retried_and_loses_nothing() {
    let batch = harness::batch(Scenario::builtin()).await;
    // Every other request is throttled (12 times), a third of file reads get ServerBusy, and two
    // 429s ask for a full second.
    batch.emulator.set_faults(vec![
        FaultRule::new(Fault::Throttle {
            retry_after_seconds: 0,
        })
        .rate(0.5)
        .times(12),
        FaultRule::new(Fault::ServerBusy {
            retry_after_seconds: Some(0),
        })
        .path_contains("/files/")
        .rate(0.34)
        .times(10),
        FaultRule::new(Fault::Throttle {
            retry_after_seconds: 1,
        })
        .skip(5)
        .times(2),
    ]);
    let receiver = harness::receiver(0).await;
    let dir = tempfile::tempdir().unwrap();
    let store = artifact_store::open(dir.path().to_str().unwrap()).unwrap();
    // Enough attempts that the storm is absorbed within the deadline; a file whose attempts run
    // out is the next test's case.
    let triage = harness::triage_with(
        harness::batch_client_with(
            &batch.url,
            batch_client::RetryPolicy {
                max_attempts: 12,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(200),
            },
        ),
        store.clone(),
        &harness::hook_policy(""),
        &hook_env(&receiver),
        harness::quick_retries(),
    );
    let records: Vec<serde_json::Value> = FAILED_ETL_TASKS
        .iter()
        .map(|t| {
            serde_json::from_str::<serde_json::Value>(&harness::fail_record("etl", t)).unwrap()
                    ["records"][0]
                    .clone()
        })
        .collect();
    let payload = serde_json::json!({ "records": records }).to_string();
    let reports = until_done(&triage, &payload, 6).await;
    let storm = batch.emulator.faults()[0].fired;
    assert_eq!(storm, 12, "the storm happened: every throttle fired");
    let last = reports.last().unwrap();
    for subject in &last.subjects {
        assert_eq!(subject.outcome, Outcome::Done, "{subject:#?}");
    }
    for task in FAILED_ETL_TASKS {
        if manifest(store.as_ref(), "etl", task).await.is_none() {
            panic!(
                "etl/{task} was lost: no manifest, although the last run asked for no retry.\n\
                 store: {:#?}\nreports: {reports:#?}",
                store
                    .list("devbatch1/etl/")
                    .await
                    .unwrap()
                    .iter()
                    .map(|o| o.key.as_str().to_owned())
                    .collect::<Vec<_>>()
            );
        }
        assert_preserved_exactly(store.as_ref(), &batch.url, "etl", task).await;
    }
    let alerts = alerts_per_task(&receiver);
    assert_eq!(
        alerts.values().sum::<usize>(),
        alerts.len(),
        "one alert per cause, none twice: {alerts:?}"
    );
    assert!(alerts.contains_key("oom"), "{alerts:?}");
}

/// When a log file's copy fails transiently (here: throttled more times than the client
/// retries), no manifest is written and the subject is a retryable failure, so the platform
/// delivers the event again rather than acknowledging it while the logs may vanish with the node.
#[tokio::test(flavor = "multi_thread")]
async fn a_log_file_whose_copy_keeps_failing_is_a_retry_not_done() {
    let batch = harness::batch(Scenario::builtin()).await;
    batch.emulator.set_faults(vec![
        FaultRule::new(Fault::Throttle {
            retry_after_seconds: 0,
        })
        .path_prefix("/jobs/etl/tasks/py-error/files/stdout.txt")
        .times(50),
    ]);
    let receiver = harness::receiver(0).await;
    let dir = tempfile::tempdir().unwrap();
    let store = artifact_store::open(dir.path().to_str().unwrap()).unwrap();
    let triage = harness::triage(
        &batch.url,
        store.clone(),
        &harness::hook_policy(""),
        &hook_env(&receiver),
        harness::quick_retries(),
    );
    let payload = harness::fail_record("etl", "py-error");
    let report = triage
        .handle_payload(
            payload.as_bytes(),
            OffsetDateTime::now_utc(),
            harness::deadline(),
        )
        .await
        .unwrap();
    assert!(
        manifest(store.as_ref(), "etl", "py-error").await.is_none(),
        "the copy failed, so there is no manifest"
    );
    assert!(
        report.should_retry(),
        "stdout.txt was not copied, yet the event would be acknowledged: {report:#?}"
    );
    batch.emulator.clear_faults();
    until_done(&triage, &payload, 2).await;
    assert_preserved_exactly(store.as_ref(), &batch.url, "etl", "py-error").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_past_the_deadline_is_a_retry_and_the_redelivery_completes() {
    let batch = harness::batch(Scenario::builtin()).await;
    batch
        .emulator
        .set_faults(vec![FaultRule::new(Fault::Throttle {
            retry_after_seconds: 5,
        })]);
    let receiver = harness::receiver(0).await;
    let dir = tempfile::tempdir().unwrap();
    let store = artifact_store::open(dir.path().to_str().unwrap()).unwrap();
    let triage = harness::triage(
        &batch.url,
        store.clone(),
        &harness::hook_policy(""),
        &hook_env(&receiver),
        harness::quick_retries(),
    );
    let payload = harness::fail_record("etl", "oom");
    let report = triage
        .handle_payload(
            payload.as_bytes(),
            OffsetDateTime::now_utc(),
            Deadline::after(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    assert!(
        report.should_retry(),
        "throttled past the deadline: {report:#?}"
    );
    assert!(receiver.bodies().is_empty(), "nothing alerted yet");
    assert!(manifest(store.as_ref(), "etl", "oom").await.is_none());

    batch.emulator.clear_faults();
    let reports = until_done(&triage, &payload, 2).await;
    assert_eq!(reports.len(), 1, "{reports:#?}");
    assert_preserved_exactly(store.as_ref(), &batch.url, "etl", "oom").await;
    assert_eq!(
        alerts_per_task(&receiver),
        BTreeMap::from([("oom".to_owned(), 1)])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn blob_5xx_during_preservation_end_in_complete_blobs_and_exact_manifests() {
    let azurite = artifact_store::testing::Azurite::start();
    // Direct access, to check what really landed.
    let direct = azurite.store("logs").await;
    // Of every 4 requests, the 2nd answers 503 before reaching Azurite and the 4th reaches it and
    // then answers 500.
    let proxy = harness::faulty_proxy(
        &format!("http://127.0.0.1:{}", azurite.port()),
        BlobFaults {
            period: 4,
            fail_before: 2,
            fail_after: 4,
        },
    )
    .await;
    let spec = format!(
        "UseDevelopmentStorage=true;BlobEndpoint={}/devstoreaccount1;Container=logs",
        proxy.url
    );
    let store = artifact_store::open(&spec).unwrap();
    // big-log at 9 MiB: several 4 MiB blocks, so a block list is staged and committed.
    let batch = harness::batch(harness::scenario_with_big_log(9 << 20)).await;
    let receiver = harness::receiver(0).await;
    let triage = harness::triage(
        &batch.url,
        store.clone(),
        &harness::hook_policy(""),
        &hook_env(&receiver),
        harness::quick_retries(),
    );
    for task in ["big-log", "oom", "py-error"] {
        let reports = until_done(&triage, &harness::fail_record("etl", task), 12).await;
        let last = reports.last().unwrap();
        assert_eq!(last.subjects[0].outcome, Outcome::Done, "{last:#?}");
    }
    let failed = proxy.failed.load(std::sync::atomic::Ordering::SeqCst);
    assert!(failed >= 10, "the proxy failed requests ({failed})");
    for task in ["big-log", "oom", "py-error"] {
        assert_preserved_exactly(&direct, &batch.url, "etl", task).await;
    }
    let alerts = alerts_per_task(&receiver);
    assert_eq!(
        alerts.values().sum::<usize>(),
        alerts.len(),
        "one alert per cause: {alerts:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alert_to_a_receiver_that_is_down_goes_to_the_outbox_and_is_delivered_once() {
    let batch = harness::batch(Scenario::builtin()).await;
    // Down for the whole first delivery (3 attempts) and the first two attempts of the next.
    let receiver = harness::receiver(5).await;
    let dir = tempfile::tempdir().unwrap();
    let store = artifact_store::open(dir.path().to_str().unwrap()).unwrap();
    let triage = harness::triage(
        &batch.url,
        store.clone(),
        &harness::hook_policy(""),
        &hook_env(&receiver),
        harness::quick_retries(),
    );
    let payload = harness::fail_record("etl", "oom");
    let report = triage
        .handle_payload(
            payload.as_bytes(),
            OffsetDateTime::now_utc(),
            harness::deadline(),
        )
        .await
        .unwrap();
    let subject = &report.subjects[0];
    assert_eq!(subject.outboxed, vec!["hook"], "{subject:#?}");
    assert!(subject.notified.is_empty());
    assert!(
        !report.should_retry(),
        "an outboxed alert is not lost: no retry needed"
    );
    assert_eq!(
        receiver.attempts.load(std::sync::atomic::Ordering::SeqCst),
        3
    );
    let pending = notify::Outbox::new(store.clone()).pending().await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");

    // A duplicate delivery meanwhile queues nothing more.
    triage
        .handle_payload(
            payload.as_bytes(),
            OffsetDateTime::now_utc(),
            harness::deadline(),
        )
        .await
        .unwrap();
    assert_eq!(
        notify::Outbox::new(store.clone())
            .pending()
            .await
            .unwrap()
            .len(),
        1
    );

    // The timer's ticks: the first delivers (after two more refusals), the second finds nothing.
    for _ in 0..2 {
        triage
            .tick(
                OffsetDateTime::now_utc(),
                harness::deadline(),
                &SweepOptions::default(),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        alerts_per_task(&receiver).get("oom"),
        Some(&1),
        "delivered exactly once: {:?}",
        receiver.bodies()
    );
    assert!(
        notify::Outbox::new(store.clone())
            .pending()
            .await
            .unwrap()
            .is_empty(),
        "the outbox is empty once delivered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_reordered_concurrent_deliveries_give_one_copy_one_alert_one_action() {
    let batch = harness::batch(Scenario::builtin()).await;
    let receiver = harness::receiver(0).await;
    let dir = tempfile::tempdir().unwrap();
    let store = artifact_store::open(dir.path().to_str().unwrap()).unwrap();
    let policy = harness::hook_policy(
        r#"
[actions]
enabled = true
dry_run = false
max_per_hour = 10

[[rules]]
name = "stop-etl"
match = { class = "task.exit_code", job = "etl" }
receivers = ["hook"]
action = { kind = "disable", disable_tasks = "wait" }
"#,
    );
    let triage = Arc::new(harness::triage(
        &batch.url,
        store.clone(),
        &policy,
        &hook_env(&receiver),
        harness::quick_retries(),
    ));
    let shuffled = |tasks: &[&str], seed: u64| {
        let mut deliveries: Vec<String> = (0..100 * tasks.len())
            .map(|i| harness::fail_record("etl", tasks[i % tasks.len()]))
            .collect();
        let mut state = seed;
        for i in (1..deliveries.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            deliveries.swap(i, (state % (i as u64 + 1)) as usize);
        }
        deliveries
    };
    let deliver = |payloads: Vec<String>| {
        let triage = triage.clone();
        tokio::spawn(async move {
            let mut reports = Vec::new();
            for payload in payloads {
                reports.push(
                    triage
                        .handle_payload(
                            payload.as_bytes(),
                            OffsetDateTime::now_utc(),
                            harness::deadline(),
                        )
                        .await
                        .unwrap(),
                );
            }
            reports
        })
    };
    let log_reads = |task: &str| {
        batch
            .emulator
            .requests()
            .iter()
            .filter(|r| {
                r.method == "GET"
                    && (r
                        .path_and_query
                        .starts_with(&format!("/jobs/etl/tasks/{task}/files/stdout.txt"))
                        || r.path_and_query
                            .starts_with(&format!("/jobs/etl/tasks/{task}/files/stderr.txt")))
            })
            .count()
    };

    // One instance: 3 events × 100 copies, shuffled with a fixed seed. The logs are read once.
    let sequential = ["oom", "sigkill", "py-error"];
    for report in deliver(shuffled(&sequential, 0x2545_f491_4f6c_dd1d))
        .await
        .unwrap()
    {
        assert!(!report.should_retry(), "{report:#?}");
    }
    for task in sequential {
        assert_eq!(
            log_reads(task),
            2,
            "{task}: stdout and stderr read once each"
        );
    }

    // Eight instances at once (the Functions host scales out): 100 copies of a new event,
    // shuffled among copies of the old ones.
    let concurrent = ["exit-127", "oom", "sigkill"];
    let deliveries = shuffled(&concurrent, 0x9e37_79b9_7f4a_7c15);
    let instances: Vec<_> = deliveries
        .chunks(deliveries.len().div_ceil(8))
        .map(|chunk| deliver(chunk.to_vec()))
        .collect();
    for instance in futures::future::join_all(instances).await {
        for report in instance.unwrap() {
            assert!(!report.should_retry(), "{report:#?}");
        }
    }
    for task in ["oom", "sigkill", "py-error", "exit-127"] {
        assert_preserved_exactly(store.as_ref(), &batch.url, "etl", task).await;
    }
    for task in sequential {
        // Two more reads each: assert_preserved_exactly's own check against the emulator.
        assert_eq!(
            log_reads(task),
            4,
            "{task}: never read again by the pipeline"
        );
    }
    // Instances racing on a new event may each read the logs before one publishes the copy;
    // the store keeps one copy (checked above). Report the redundant reads, do not hide them.
    eprintln!(
        "exit-127: {} log reads by 8 concurrent instances (2 per full copy, +2 by the check)",
        log_reads("exit-127")
    );
    let alerts = alerts_per_task(&receiver);
    assert_eq!(
        alerts.values().sum::<usize>(),
        alerts.len(),
        "one alert per cause, none twice: {alerts:?}"
    );
    assert!(!alerts.is_empty());
    let disables = batch
        .emulator
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path_and_query.starts_with("/jobs/etl/disable"))
        .count();
    assert_eq!(disables, 1, "the job was disabled once");
    assert_eq!(
        batch.emulator.job("etl").unwrap()["state"],
        "disabled",
        "the action took effect"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_killed_mid_file_completes_on_the_rerun() {
    let size: u64 = 256 << 20;
    let batch = harness::batch(harness::scenario_with_big_log(size)).await;
    let dir = tempfile::tempdir().unwrap();
    let preserve = |dir: &std::path::Path| {
        std::process::Command::new(harness::binary("batch-triage"))
            .args(["preserve", "--account-url", &batch.url])
            .args(["--job", "etl", "--task", "big-log", "--to"])
            .arg(dir)
            .env_remove("AZURE_BATCH_ACCESS_KEY")
            .env_remove("AZURE_BATCH_ENDPOINT")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut child = preserve(dir.path());
    // Kill it once some megabytes of stdout.txt are staged, long before the end.
    let started = std::time::Instant::now();
    let killed_at = loop {
        let staged: u64 = harness::files_under(&dir.path().join(".artifact-store"))
            .iter()
            .map(|(_, b)| b.len() as u64)
            .sum();
        if staged >= 8 << 20 {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            break staged;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the copy ended ({status}) before it could be killed");
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(killed_at < size, "killed mid-copy");
    let stdout = dir
        .path()
        .join("devbatch1/etl/big-log/attempt-0/stdout.txt");
    assert!(
        !dir.path()
            .join("devbatch1/etl/big-log/attempt-0/manifest.json")
            .exists(),
        "no manifest for an interrupted copy"
    );
    if let Ok(meta) = std::fs::metadata(&stdout) {
        assert_eq!(meta.len(), size, "a published file is never truncated");
    }

    let output = preserve(dir.path()).wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (emulator_size, emulator_sha) =
        harness::emulator_file(&batch.url, "etl", "big-log", "stdout.txt").await;
    let preserved = std::fs::read(&stdout).unwrap();
    assert_eq!(preserved.len() as u64, emulator_size);
    assert_eq!(harness::sha256_hex(&preserved), emulator_sha);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            dir.path()
                .join("devbatch1/etl/big-log/attempt-0/manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let entry = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "stdout.txt")
        .unwrap();
    assert_eq!(entry["sha256"].as_str(), Some(emulator_sha.as_str()));
    let leftover: u64 = harness::files_under(&dir.path().join(".artifact-store"))
        .iter()
        .map(|(_, b)| b.len() as u64)
        .sum();
    eprintln!("after the rerun: {leftover} bytes of temp files left by the killed process");
    assert_eq!(entry["bytes"].as_u64(), Some(size));
}
