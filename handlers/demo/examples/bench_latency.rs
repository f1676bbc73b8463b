//! Latency benchmark (not a test): how long from a failure record reaching the handler until
//! the Teams card and the email are delivered.
//!
//! ```text
//! cargo run --release -p batch-triage-demo --example bench_latency
//! ```
//!
//! Everything runs in this process on 127.0.0.1: the Batch emulator (one job per sample, each
//! with one failed task and its `stdout.txt`/`stderr.txt` on a node), a local-directory store,
//! the demo's loopback receivers (the Teams Workflows recorder and the SMTP sink), and the
//! pipeline with a policy that sends every task failure to Teams and by email. Each sample is
//! one `TaskFailEvent` record in the Event Hubs body shape, given to the pipeline as the
//! handler gives it; the clock starts when the record is handed over and stops when the
//! receiver has the message (the receivers are polled every 100 µs). With `group_wait` 0 both
//! are delivered before the invocation returns, so both figures are the invocation's time.
//!
//! - `group_wait = "0s"`: samples one after another; the alert goes out within the
//!   invocation (re-read the task, copy both logs, diagnose, deliver).
//! - the default `group_wait` (30 s): the alert waits in its group and the timer sends it. The
//!   samples are spread over `BENCH_SPREAD_MS` (default 10,000 ms) and the timer's flush of due
//!   groups runs every `BENCH_FLUSH_MS` (default 1,000 ms) here, instead of the deployed
//!   schedule (every 5 minutes), so the figure is group_wait plus at most one flush interval:
//!   deployed, add up to one schedule interval.
//!
//! Settings: `BENCH_SAMPLES` (default 200 with `group_wait` 0), `BENCH_GROUPED_SAMPLES` (default
//! 40), `BENCH_SPREAD_MS`, `BENCH_FLUSH_MS`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use batch_client::{BatchClient, BatchConfig, Deadline, Secret};
use batch_emulator::{Emulator, Scenario, WELL_KNOWN_ACCOUNT_KEY, WELL_KNOWN_ACCOUNT_NAME};
use batch_triage_demo::receivers::{self, Channel, Inbox};
use diagnosis::policy::Policy;
use notify::{Allowlist, Egress, ReceiverConfig, RetryPolicy};
use pipeline::triage::{Triage, TriageConfig};
use serde_json::{Value, json};
use time::OffsetDateTime;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn job_id(sample: usize) -> String {
    format!("lat-{sample:05}")
}

/// One job per sample, so each failure is its own alert group.
fn scenario(samples: usize) -> Scenario {
    let jobs: Vec<Value> = (0..samples)
        .map(|k| {
            json!({"job": {"id": job_id(k), "poolInfo": {"poolId": "pool-1"}, "creationTime": "now-1h"},
                "tasks": [{"task": {"id": "train", "state": "completed", "commandLine": "python3 train.py",
                    "executionInfo": {"startTime": "now-10m", "endTime": "now-1m", "exitCode": 137,
                        "result": "failure", "retryCount": 0, "requeueCount": 0,
                        "failureInfo": {"category": "usererror", "code": "FailureExitCode"}},
                    "nodeInfo": {"poolId": "pool-1", "nodeId": format!("tvm-{:02}", k % 4)}},
                  "files": {"stdout.txt": {"generate": {"bytes": 2048, "seed": k, "tail": "epoch 3\n"}},
                            "stderr.txt": "Killed\n"}}]})
        })
        .collect();
    let nodes: Vec<Value> = (0..4)
        .map(|n| json!({"id": format!("tvm-{n:02}")}))
        .collect();
    let scenario = json!({"pools": [{"id": "pool-1", "nodes": nodes}], "jobs": jobs});
    Scenario::from_json_str(&scenario.to_string()).expect("scenario")
}

fn fail_record(sample: usize) -> Vec<u8> {
    json!({"records": [{
        "time": "2026-12-05T03:00:00.0000000Z",
        "resourceId": format!("/SUBSCRIPTIONS/0/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.BATCH/BATCHACCOUNTS/{}/",
            WELL_KNOWN_ACCOUNT_NAME.to_uppercase()),
        "category": "ServiceLog", "operationName": "TaskFailEvent", "operationVersion": "2017-06-01",
        "properties": {"jobId": job_id(sample), "id": "train", "taskType": "User",
            "executionInfo": {"exitCode": 137, "retryCount": 0, "requeueCount": 0, "result": "Failure"}}
    }]})
    .to_string()
    .into_bytes()
}

fn triage(
    batch_url: &str,
    store: &str,
    group_wait: Option<&str>,
    teams_url: &str,
    smtp_port: u16,
) -> Triage {
    // One group per job, so each sample is its own alert; the default group_wait when none.
    let wait = group_wait.map_or_else(String::new, |wait| format!("group_wait = \"{wait}\"\n"));
    let grouping = format!(
        "[grouping]\ngroup_by = [\"account\", \"job\", \"class\", \"fingerprint\"]\n{wait}"
    );
    let policy = Policy::parse(&format!(
        r#"{grouping}
[[receivers]]
name = "teams"
kind = "teams"
url_env = "TEAMS_URL"

[[receivers]]
name = "mail"
kind = "email"
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
from = "batch-triage <batch-triage@localhost>"
to = ["oncall@example.com"]

[[rules]]
name = "task-failures"
match = {{ class = "task.*" }}
receivers = ["teams", "mail"]
"#
    ))
    .expect("policy");
    let receivers = policy
        .receivers
        .iter()
        .map(|r| {
            let receiver = ReceiverConfig::from_policy(r)
                .expect("receiver")
                .resolve(|name| (name == "TEAMS_URL").then(|| teams_url.to_owned()))
                .expect("resolved");
            (r.name.clone(), receiver)
        })
        .collect::<BTreeMap<_, _>>();
    let batch = BatchClient::new(
        BatchConfig::shared_key(
            batch_url,
            WELL_KNOWN_ACCOUNT_NAME,
            Secret::new(WELL_KNOWN_ACCOUNT_KEY),
        )
        .expect("config"),
    )
    .expect("client");
    Triage::new(
        TriageConfig {
            account: WELL_KNOWN_ACCOUNT_NAME.to_owned(),
            preserve: preserve::PreserveOptions::default(),
            action_call_timeout: Duration::from_secs(30),
        },
        Arc::new(batch),
        artifact_store::open(store).expect("store"),
        Arc::new(policy),
        receivers,
        Egress::new(
            Allowlist::default().allow_loopback(),
            RetryPolicy::standard(),
        )
        .expect("egress"),
    )
}

/// When the Teams card and the email naming `sample`'s job have both arrived.
async fn delivered(inbox: &Inbox, sample: usize, started: Instant) -> (f64, f64) {
    let needle = job_id(sample);
    let (mut teams, mut email) = (None, None);
    loop {
        if teams.is_none() || email.is_none() {
            for message in inbox.messages() {
                if !String::from_utf8_lossy(&message.body).contains(&needle) {
                    continue;
                }
                let at = started.elapsed().as_secs_f64() * 1000.0;
                match message.channel {
                    Channel::Teams => teams = teams.or(Some(at)),
                    Channel::Email => email = email.or(Some(at)),
                    Channel::Webhook | Channel::PagerDuty | Channel::Slack => {}
                }
            }
        }
        if let (Some(teams), Some(email)) = (teams, email) {
            return (teams, email);
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{needle} never arrived"
        );
        tokio::time::sleep(Duration::from_micros(100)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(label: &str, mut teams: Vec<f64>, mut email: Vec<f64>) {
    teams.sort_by(f64::total_cmp);
    email.sort_by(f64::total_cmp);
    println!(
        "| {label} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
        teams.len(),
        percentile(&teams, 50.0),
        percentile(&teams, 99.0),
        percentile(&email, 50.0),
        percentile(&email, 99.0),
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let samples = env_number("BENCH_SAMPLES", 200);
    let grouped = env_number("BENCH_GROUPED_SAMPLES", 40);
    let spread = Duration::from_millis(env_number("BENCH_SPREAD_MS", 10_000) as u64);
    let flush_every = Duration::from_millis(env_number("BENCH_FLUSH_MS", 1_000) as u64);
    let emulator = Emulator::new(scenario(samples + grouped)).expect("emulator");
    let batch_url = test_kit_free_emulator(emulator).await;
    let receivers = receivers::start().await.expect("receivers");
    println!(
        "| group_wait | samples | Teams p50 ms | Teams p99 ms | email p50 ms | email p99 ms |"
    );
    println!("|---|---|---|---|---|---|");

    let store = tempfile::tempdir().expect("store");
    let now_wait = triage(
        &batch_url,
        store.path().to_str().expect("utf-8"),
        Some("0s"),
        &receivers.teams_url,
        receivers.smtp_port,
    );
    let (mut teams, mut email) = (Vec::new(), Vec::new());
    for sample in 0..samples {
        let started = Instant::now();
        let report = now_wait
            .handle_payload(
                &fail_record(sample),
                OffsetDateTime::now_utc(),
                Deadline::after(Duration::from_secs(60)),
            )
            .await
            .expect("handled");
        assert!(!report.should_retry(), "sample {sample} asked for a retry");
        let (t, e) = delivered(&receivers.inbox, sample, started).await;
        teams.push(t);
        email.push(e);
    }
    summary("0 s, one record at a time", teams, email);

    // The default group_wait: the alert waits in its group; a flusher stands in for the timer.
    let store = tempfile::tempdir().expect("store");
    let waiting = Arc::new(triage(
        &batch_url,
        store.path().to_str().expect("utf-8"),
        None,
        &receivers.teams_url,
        receivers.smtp_port,
    ));
    let flusher = {
        let waiting = waiting.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(flush_every).await;
                let _ = waiting
                    .flush_due(
                        OffsetDateTime::now_utc(),
                        Deadline::after(Duration::from_secs(60)),
                    )
                    .await;
            }
        })
    };
    let inbox = receivers.inbox.clone();
    let runs: Vec<_> = (samples..samples + grouped)
        .map(|sample| {
            let waiting = waiting.clone();
            let inbox = inbox.clone();
            let offset = spread.mul_f64((sample - samples) as f64 / grouped.max(1) as f64);
            tokio::spawn(async move {
                tokio::time::sleep(offset).await;
                let started = Instant::now();
                let report = waiting
                    .handle_payload(
                        &fail_record(sample),
                        OffsetDateTime::now_utc(),
                        Deadline::after(Duration::from_secs(60)),
                    )
                    .await
                    .expect("handled");
                assert!(!report.should_retry(), "sample {sample} asked for a retry");
                delivered(&inbox, sample, started).await
            })
        })
        .collect();
    let (mut teams, mut email) = (Vec::new(), Vec::new());
    for run in runs {
        let (t, e) = run.await.expect("sample");
        teams.push(t);
        email.push(e);
    }
    flusher.abort();
    summary(
        &format!(
            "30 s (default), flushed every {} ms",
            flush_every.as_millis()
        ),
        teams,
        email,
    );
}

/// The emulator on a free loopback port, in this process.
async fn test_kit_free_emulator(emulator: Emulator) -> String {
    let listener = batch_emulator::bind_local(0).await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(batch_emulator::serve(
        listener,
        emulator,
        std::future::pending(),
    ));
    url
}
