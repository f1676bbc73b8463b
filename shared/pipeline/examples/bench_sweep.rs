//! Sweep benchmark (not a test): what one timer tick costs Batch on a busy account.
//!
//! ```text
//! cargo run --release -p batch-triage-pipeline --example bench_sweep
//! ```
//!
//! The driver holds the Batch emulator in process (so it reads the request log directly) with
//! an account of `BENCH_JOBS` active jobs (default `200,2000`: one account per size, to show how
//! memory follows the number of jobs), each with `BENCH_TASKS_PER_JOB` tasks (default 50, so
//! 100,000 tasks at 2,000 jobs): all completed, one in 25 failed three hours ago (old failures
//! the counts already hold), and one job in `BENCH_PREP_EVERY` (default 20) with a job
//! preparation task. `BENCH_NEW_FAILURES` jobs (default 10) also hold a running task on a node
//! with a `stdout.txt` and a `stderr.txt`.
//!
//! Each tick runs in a child process (this binary re-run with `--tick`), so its peak memory
//! (VmHWM) is the tick's alone; the children share one local-directory store, where the sweep
//! keeps its cursor and what it saw. Per account size:
//! 1. **first tick**: no cursor, nothing seen yet;
//! 2. the driver terminates the running tasks through the Batch API: `BENCH_NEW_FAILURES` new
//!    failures (`TaskEnded`), each with its logs on the node;
//! 3. **10 new failures**: the tick that must find, preserve and alert them;
//! 4. **quiet tick**: nothing changed.
//!
//! For each it prints the Batch requests of the tick (from the emulator's request log, by
//! kind), the tick's wall time and its VmHWM, and checks that the new failures were found,
//! once: the quiet tick finds none.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use batch_client::{BatchApi, BatchClient, BatchConfig, Deadline, Secret};
use batch_emulator::{Emulator, Scenario, WELL_KNOWN_ACCOUNT_KEY, WELL_KNOWN_ACCOUNT_NAME};
use diagnosis::policy::Policy;
use notify::{Allowlist, Egress, RetryPolicy};
use pipeline::sweep::SweepOptions;
use pipeline::triage::{Outcome, Triage, TriageConfig};
use serde_json::{Value, json};
use time::OffsetDateTime;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The account: `jobs` jobs of `tasks_per_job` completed tasks, `new_failures` of them with a
/// running task that the driver will end.
fn scenario(jobs: usize, tasks_per_job: usize, prep_every: usize, new_failures: usize) -> Scenario {
    let done = json!({
        "state": "completed", "creationTime": "now-4h", "stateTransitionTime": "now-3h",
        "executionInfo": {"startTime": "now-4h", "endTime": "now-3h", "exitCode": 0,
            "result": "success", "retryCount": 0, "requeueCount": 0}
    });
    let jobs: Vec<Value> = (0..jobs)
        .map(|j| {
            let id = format!("job-{j:05}");
            let mut job = json!({"id": id, "poolInfo": {"poolId": "pool-1"}, "creationTime": "now-5h"});
            let mut spec = json!({"job": job.clone(), "tasks": [], "generateTasks": [{
                "count": tasks_per_job, "idPrefix": "t-", "failEvery": 25, "task": done.clone()
            }]});
            if prep_every > 0 && j % prep_every == 0 {
                job["jobPreparationTask"] = json!({"commandLine": "/bin/sh -c 'apt-get install -y jq'"});
                spec["job"] = job;
                spec["preparationAndReleaseStatus"] = json!([{"status": {
                    "poolId": "pool-1", "nodeId": "tvm-00",
                    "jobPreparationTaskExecutionInfo": {"state": "completed", "startTime": "now-5h",
                        "endTime": "now-5h", "exitCode": 0, "result": "success", "retryCount": 0}
                }}]);
            }
            if j < new_failures {
                spec["tasks"] = json!([{
                    "task": {"id": "runs", "state": "running", "creationTime": "now-20m",
                        "commandLine": "/bin/bash -c 'python3 work.py'",
                        "executionInfo": {"startTime": "now-20m", "retryCount": 0, "requeueCount": 0},
                        "nodeInfo": {"poolId": "pool-1", "nodeId": format!("tvm-{:02}", j % 8)}},
                    "files": {"stdout.txt": {"generate": {"bytes": 2048, "seed": j, "tail": "step 9\n"}},
                              "stderr.txt": "Traceback (most recent call last):\nKeyboardInterrupt\n"}
                }]);
            }
            spec
        })
        .collect();
    let nodes: Vec<Value> = (0..8)
        .map(|n| json!({"id": format!("tvm-{n:02}")}))
        .collect();
    let scenario = json!({"pools": [{"id": "pool-1", "nodes": nodes}], "jobs": jobs});
    Scenario::from_json_str(&scenario.to_string()).expect("scenario")
}

fn client(batch_url: &str) -> BatchClient {
    BatchClient::new(
        BatchConfig::shared_key(
            batch_url,
            WELL_KNOWN_ACCOUNT_NAME,
            Secret::new(WELL_KNOWN_ACCOUNT_KEY),
        )
        .expect("config"),
    )
    .expect("client")
}

/// Child: one tick against `batch_url` with the store in `store_dir`; prints one JSON line.
fn tick(batch_url: &str, store_dir: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = artifact_store::open(store_dir).expect("store");
        let egress = Egress::new(
            Allowlist::default().allow_loopback(),
            RetryPolicy::standard(),
        )
        .expect("egress");
        let triage = Triage::new(
            TriageConfig {
                account: WELL_KNOWN_ACCOUNT_NAME.to_owned(),
                preserve: preserve::PreserveOptions::default(),
                action_call_timeout: Duration::from_secs(30),
            },
            Arc::new(client(batch_url)),
            store,
            Arc::new(Policy::default()),
            BTreeMap::new(),
            egress,
        );
        let started = Instant::now();
        let report = triage
            .tick(
                OffsetDateTime::now_utc(),
                Deadline::after(Duration::from_secs(600)),
                &SweepOptions::default(),
            )
            .await
            .expect("tick");
        let elapsed = started.elapsed();
        let failures: Vec<&str> = report
            .sweep
            .subjects
            .iter()
            .filter(|s| s.class.is_some_and(|c| c.is_failure()))
            .map(|s| s.subject.as_str())
            .collect();
        let not_done = report
            .sweep
            .subjects
            .iter()
            .filter(|s| !matches!(s.outcome, Outcome::Done))
            .count();
        let line = json!({
            "ms": elapsed.as_secs_f64() * 1000.0,
            "vmhwm_kib": status_kib("VmHWM"),
            "completed": report.sweep.completed,
            "jobs_examined": report.sweep.jobs_examined,
            "failures": failures,
            "not_done": not_done,
        });
        println!("{line}");
    });
}

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// What a request was, for the per-kind counts.
fn kind(path_and_query: &str) -> &'static str {
    let path = path_and_query.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["jobs"] => "list jobs",
        ["jobs", _] => "get job",
        ["jobs", _, "taskcounts"] => "task counts",
        ["jobs", _, "tasks"] => "list tasks",
        ["jobs", _, "jobpreparationandreleasetaskstatus"] => "prep/release status",
        ["jobs", _, "tasks", _] => "get task",
        ["jobs", _, "tasks", _, "files"] => "list task files",
        ["jobs", _, "tasks", _, "files", ..] => "get task file",
        _ => "other",
    }
}

fn run_tick(batch_url: &str, store_dir: &str, emulator: &Emulator) -> (Value, usize, String) {
    emulator.clear_requests();
    let output = Command::new(std::env::current_exe().expect("current exe"))
        .args(["--tick", batch_url, store_dir])
        .stderr(Stdio::inherit())
        .output()
        .expect("run the tick child");
    assert!(output.status.success(), "the tick failed");
    let line = output
        .stdout
        .as_slice()
        .lines()
        .last()
        .expect("a line")
        .expect("utf-8");
    let result: Value = serde_json::from_str(&line).expect("the tick's JSON");
    let requests = emulator.requests();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for request in &requests {
        *kinds.entry(kind(&request.path_and_query)).or_default() += 1;
    }
    let mix = kinds
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    (result, requests.len(), mix)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--tick") {
        tick(&args[2], &args[3]);
        return;
    }
    let sizes: Vec<usize> = std::env::var("BENCH_JOBS")
        .unwrap_or_else(|_| "200,2000".to_owned())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let tasks_per_job = env_number("BENCH_TASKS_PER_JOB", 50);
    let prep_every = env_number("BENCH_PREP_EVERY", 20);
    let new_failures = env_number("BENCH_NEW_FAILURES", 10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "| jobs (tasks) | tick | Batch requests | per job | by kind | failures found | time ms | tick VmHWM MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for jobs in sizes {
        let new_failures = new_failures.min(jobs);
        let emulator = Emulator::new(scenario(jobs, tasks_per_job, prep_every, new_failures))
            .expect("emulator");
        let batch_url = runtime.block_on(test_kit::serve_emulator(emulator.clone()));
        let store = tempfile::tempdir().expect("store dir");
        let store_dir = store.path().to_str().expect("utf-8 path").to_owned();
        let row = |label: &str, expect_failures: Option<usize>| {
            let (result, requests, mix) = run_tick(&batch_url, &store_dir, &emulator);
            let failures = result["failures"].as_array().map_or(0, Vec::len);
            if let Some(expected) = expect_failures {
                assert_eq!(failures, expected, "{label}: failures found: {result}");
            }
            assert_eq!(result["not_done"], 0, "{label}: {result}");
            assert_eq!(result["completed"], true, "{label}: {result}");
            println!(
                "| {jobs} ({}) | {label} | {requests} | {:.2} | {mix} | {failures} | {:.0} | {:.1} |",
                jobs * tasks_per_job + new_failures,
                requests as f64 / jobs as f64,
                result["ms"].as_f64().unwrap_or_default(),
                result["vmhwm_kib"].as_f64().unwrap_or_default() / 1024.0,
            );
        };
        row("first", None);
        let batch = client(&batch_url);
        runtime.block_on(async {
            for j in 0..new_failures {
                batch
                    .terminate_task(
                        &format!("job-{j:05}"),
                        "runs",
                        None,
                        Deadline::after(Duration::from_secs(30)),
                    )
                    .await
                    .expect("terminate a running task");
            }
        });
        row(&format!("{new_failures} new failures"), Some(new_failures));
        // Nothing changed: no failed task is listed, so none is found again.
        row("quiet", Some(0));
    }
}
