//! End-to-end burst benchmark (not a test): 10,000 Batch diagnostic-log records (by default
//! every one a `TaskFailEvent`; see `BENCH_STREAM`) in Event Hubs batches of 100, POSTed to the
//! release `batch-triage-functions` exactly as the Functions host sends them, with a few
//! invocations in flight.
//!
//! ```text
//! cargo build --release -p batch-triage-azure-functions --bins --examples
//! cargo run --release -p batch-triage-azure-functions --example bench_burst
//! ```
//!
//! Three processes, so each one's CPU time can be told apart:
//! - the Batch emulator (this binary re-run with `--emulator`), holding the failed tasks (10,000
//!   by default) over four jobs (exit codes 137, 1, 139, 2 with matching stderr), each with a small `stdout.txt`
//!   (2 KiB, generated) and `stderr.txt`;
//! - the handler, with the host's environment, a local-directory store (a fresh temporary
//!   directory per run) or, with `BENCH_STORE=blob`, a container on Azurite (a fresh Azurite
//!   per run, in memory, reached through a counting proxy: see `support/blob_counter.rs`), and a
//!   policy with a webhook receiver (the default grouping: alerts wait 30 s, so the burst records
//!   them in the grouping state);
//! - this driver: it builds the invocation bodies up front (not timed), serves the webhook, and
//!   POSTs the batches with `in flight` concurrent invocations, as the host does with one batch
//!   per Event Hubs partition.
//!
//! Every event is real work: the handler re-reads its task from the emulator, diagnoses it,
//! copies both log files to the store (manifest last) and records the alert grouping. After each
//! run the driver checks that every task has a `manifest.json` in the store and that every
//! subject's outcome is `Done`.
//!
//! Settings: `BENCH_EVENTS` (default 10000), `BENCH_BATCH` (records per invocation, default 100),
//! `BENCH_RECORDS_PER_EVENT` (records per Event Hubs event body, default 1; Azure Monitor may put
//! several in one), `BENCH_STREAM` (`fail-events`, the default: every record a `TaskFailEvent`
//! of its own task; `lifecycle`: each task's `TaskStartEvent`, `TaskCompleteEvent` and, if it
//! failed, `TaskFailEvent`, as a real log has them — see [`Stream`]), `BENCH_FAILED_PERCENT`
//! (with `lifecycle`: the share of tasks that fail, default 100),
//! `BENCH_IN_FLIGHT` (comma-separated, default `1,2,4`), `BENCH_STORE` (`dir`, the default, or
//! `blob`: Azurite, from `BATCH_TRIAGE_AZURITE` or `tests/node`, and the Blob requests per
//! failed task by kind, as the proxy in front of Azurite counted them), `BENCH_STORE_DIR` (where the temporary
//! store directories go; default the system temp dir), `BENCH_KEEP_STORES=1` (leave them for the
//! caller to remove: see [`RunResult`]), `BENCH_HANDLER` (default
//! `batch-triage-functions` beside this example's directory), `BENCH_PERF=1` (record the handler
//! with `perf record -g` during the last run, into `target/bench-burst.perf.data`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use batch_emulator::{Emulator, Scenario, WELL_KNOWN_ACCOUNT_KEY, WELL_KNOWN_ACCOUNT_NAME};
use serde_json::{Value, json};

mod support;
use support::{handler, percentile, status_kib};
#[path = "support/blob_counter.rs"]
mod blob_counter;
use blob_counter::{BlobCounter, Kind};

const JOBS: [(&str, i64, &str); 4] = [
    (
        "burst-train",
        137,
        "/bin/bash: line 1:  4182 Killed                  python3 train.py --shard 7\n",
    ),
    (
        "burst-etl",
        1,
        "Traceback (most recent call last):\n  File \"etl.py\", line 42, in <module>\n    \
         rows = load(path)\nFileNotFoundError: [Errno 2] No such file or directory: 'in/part-7.csv'\n",
    ),
    (
        "burst-render",
        139,
        "render: frame 1207\nSegmentation fault (core dumped)\n",
    ),
    ("burst-report", 2, "usage: report.py [-h] --date DATE\n"),
];

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Task `k` of the burst: its job and id. Consecutive events alternate jobs, as a busy account's
/// log stream would.
fn task_of(k: usize) -> (usize, String) {
    (k % JOBS.len(), format!("t-{:05}", k / JOBS.len()))
}

/// What the burst's records are (`BENCH_STREAM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    /// `fail-events` (the default): every record a `TaskFailEvent` of a task of its own, so every
    /// record is a failure to re-read, diagnose and copy. A real log cannot carry this much
    /// work: every failed attempt also has its `TaskStartEvent` and `TaskCompleteEvent`.
    FailEvents,
    /// `lifecycle`: the shape of a real log. Each task has its `TaskStartEvent`, its
    /// `TaskCompleteEvent` and, when it failed, its `TaskFailEvent`; `BENCH_FAILED_PERCENT` of
    /// the tasks fail (default 100: the worst a real log can be).
    Lifecycle { failed_percent: usize },
}

impl Stream {
    fn from_env() -> Stream {
        match std::env::var("BENCH_STREAM").as_deref() {
            Ok("lifecycle") => Stream::Lifecycle {
                failed_percent: env_number("BENCH_FAILED_PERCENT", 100).min(100),
            },
            Ok("fail-events") | Err(_) => Stream::FailEvents,
            Ok(other) => panic!("BENCH_STREAM={other:?}: expected fail-events or lifecycle"),
        }
    }

    fn describe(self) -> String {
        match self {
            Stream::FailEvents => "TaskFailEvent records, each of its own task".to_owned(),
            Stream::Lifecycle { failed_percent } => format!(
                "records of task lifecycles (TaskStartEvent, TaskCompleteEvent and, for the \
                 {failed_percent}% of tasks that fail, TaskFailEvent)"
            ),
        }
    }
}

/// The first `events` records of `stream`, and how many distinct failed tasks they are about.
/// Failed tasks are numbered for [`task_of`] (the emulator's scenario holds them); tasks that
/// succeeded are not read, so the scenario does not need them.
fn records(events: usize, stream: Stream) -> (Vec<Value>, usize) {
    let mut out = Vec::with_capacity(events);
    let mut failed = 0;
    match stream {
        Stream::FailEvents => {
            out.extend((0..events).map(fail_record));
            failed = events;
        }
        Stream::Lifecycle { failed_percent } => {
            let mut task = 0;
            while out.len() < events {
                // Failing tasks are spread evenly among the others.
                let fails = (task + 1) * failed_percent / 100 > task * failed_percent / 100;
                let (job, ..) = JOBS[task % JOBS.len()];
                if fails {
                    let (_, id) = task_of(failed);
                    let failure = fail_record(failed);
                    out.push(lifecycle_record(
                        "TaskStartEvent",
                        job,
                        &id,
                        json!({"retryCount": 0}),
                    ));
                    let mut complete = failure.clone();
                    complete["operationName"] = json!("TaskCompleteEvent");
                    out.push(complete);
                    out.push(failure);
                    failed += 1;
                } else {
                    let id = format!("ok-{task:05}");
                    out.push(lifecycle_record(
                        "TaskStartEvent",
                        job,
                        &id,
                        json!({"retryCount": 0}),
                    ));
                    out.push(lifecycle_record(
                        "TaskCompleteEvent",
                        job,
                        &id,
                        json!({"startTime": "2026-11-27T09:05:01.000Z",
                            "endTime": "2026-11-27T10:05:00.000Z", "exitCode": 0,
                            "retryCount": 0, "requeueCount": 0, "result": "Success"}),
                    ));
                }
                task += 1;
            }
            out.truncate(events);
            // A failed task whose records were cut after its start is not about a failure yet.
            let mut about_failures: Vec<(&str, &str)> = out
                .iter()
                .filter(|r| r["operationName"] != "TaskStartEvent")
                .filter_map(|r| {
                    let properties = &r["properties"];
                    Some((properties["jobId"].as_str()?, properties["id"].as_str()?))
                })
                .filter(|(_, id)| id.starts_with("t-"))
                .collect();
            about_failures.sort_unstable();
            about_failures.dedup();
            failed = about_failures.len();
        }
    }
    (out, failed)
}

/// A `TaskStartEvent` or a successful `TaskCompleteEvent` (shapes of the corpus's
/// `events/TaskStartEvent.2017-04-20.json` and `TaskCompleteEvent.2017-04-20.json`).
fn lifecycle_record(operation: &str, job: &str, id: &str, execution: Value) -> Value {
    json!({
        "time": "2026-11-27T10:05:01.1234567Z",
        "resourceId": "/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000000/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.BATCH/BATCHACCOUNTS/DEVBATCH1/",
        "category": "ServiceLog",
        "operationName": operation,
        "operationVersion": "2017-06-01",
        "properties": {
            "jobId": job, "id": id, "taskType": "User", "systemTaskVersion": 0,
            "nodeInfo": {"poolId": "pool-1", "nodeId": "tvm-00"},
            "multiInstanceSettings": {"numberOfInstances": 1},
            "constraints": {"maxTaskRetryCount": 0},
            "executionInfo": execution
        }
    })
}

fn scenario(events: usize) -> Scenario {
    let mut jobs: Vec<Value> = JOBS
        .iter()
        .map(|(id, ..)| json!({"job": {"id": id, "poolInfo": {"poolId": "pool-1"}, "creationTime": "now-3h"}, "tasks": []}))
        .collect();
    for k in 0..events {
        let (j, id) = task_of(k);
        let (_, exit_code, stderr) = JOBS[j];
        let task = json!({
            "task": {
                "id": id, "state": "completed", "creationTime": "now-2h",
                "commandLine": format!("/bin/bash -c 'python3 work.py --shard {k}'"),
                "stateTransitionTime": "now-10m", "lastModified": "now-10m",
                "executionInfo": {
                    "startTime": "now-1h", "endTime": "now-10m", "exitCode": exit_code,
                    "result": "failure", "retryCount": 0, "requeueCount": 0,
                    "failureInfo": {"category": "usererror", "code": "FailureExitCode",
                        "message": "The task exited with an exit code representing a failure"}
                },
                "nodeInfo": {"poolId": "pool-1", "nodeId": format!("tvm-{:02}", k % 8)}
            },
            "files": {
                "stdout.txt": {"generate": {"bytes": 2048, "seed": k, "tail": "exiting\n"}},
                "stderr.txt": stderr
            }
        });
        jobs[j]["tasks"].as_array_mut().expect("tasks").push(task);
    }
    let nodes: Vec<Value> = (0..8)
        .map(|n| json!({"id": format!("tvm-{n:02}")}))
        .collect();
    let scenario = json!({"pools": [{"id": "pool-1", "nodes": nodes}], "jobs": jobs});
    Scenario::from_json_str(&scenario.to_string()).expect("scenario")
}

/// One diagnostic-log record as Azure Monitor sends Batch's `TaskFailEvent` to Event Hubs: the
/// resource-log envelope around the event body, whose shape is the corpus's
/// `events/TaskFailEvent.2026-02-05.json`.
fn fail_record(k: usize) -> Value {
    let (j, id) = task_of(k);
    let (job, exit_code, _) = JOBS[j];
    json!({
        "time": "2026-11-27T10:05:01.1234567Z",
        "resourceId": "/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000000/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.BATCH/BATCHACCOUNTS/DEVBATCH1/",
        "category": "ServiceLog",
        "operationName": "TaskFailEvent",
        "operationVersion": "2017-06-01",
        "properties": {
            "jobId": job, "id": id, "taskType": "User", "systemTaskVersion": 0, "requiredSlots": 1,
            "nodeInfo": {"poolId": "pool-1", "nodeId": format!("tvm-{:02}", k % 8)},
            "multiInstanceSettings": {"numberOfInstances": 1},
            "constraints": {"maxTaskRetryCount": 0},
            "executionInfo": {
                "startTime": "2026-11-27T09:05:01.000Z", "endTime": "2026-11-27T10:05:00.000Z",
                "exitCode": exit_code, "retryCount": 0, "requeueCount": 0, "result": "Failure",
                "schedulingError": {"category": "UserError", "code": "FailureExitCode",
                    "message": "The task exited with an exit code representing a failure", "details": []}
            }
        }
    })
}

/// The host's invocation body for one batch (cardinality many, dataType string): `Data.events`
/// is one string holding a JSON array of the event bodies as strings (docs/delivery.md), and
/// the metadata arrays are JSON text too.
fn invocation(
    batch: usize,
    first: usize,
    records: &[Value],
    per_event: usize,
    partitions: usize,
) -> String {
    let bodies: Vec<String> = records
        .chunks(per_event)
        .map(|chunk| json!({ "records": chunk }).to_string())
        .collect();
    let n = bodies.len();
    // Event Hubs numbers events, not records: one sequence number per body.
    let events = first..first + n;
    let sequence: Vec<usize> = events.clone().collect();
    let offsets: Vec<String> = events.clone().map(|k| (k * 1024).to_string()).collect();
    let enqueued: Vec<&str> = vec!["2026-11-27T10:05:02.123"; n];
    let system: Vec<Value> = events
        .clone()
        .map(|k| {
            json!({"x-opt-sequence-number": k, "x-opt-offset": (k * 1024).to_string(),
            "x-opt-enqueued-time": "2026-11-27T10:05:02.123Z", "SequenceNumber": k,
            "Offset": (k * 1024).to_string(), "PartitionKey": null,
            "EnqueuedTimeUtc": "2026-11-27T10:05:02.123Z"})
        })
        .collect();
    json!({
        "Data": {"events": serde_json::to_string(&bodies).expect("events")},
        "Metadata": {
            "PartitionContext": {"FullyQualifiedNamespace": "bench.servicebus.windows.net",
                "EventHubName": "batch-logs", "ConsumerGroup": "$Default",
                "PartitionId": (batch % partitions).to_string()},
            "PartitionKeyArray": text(&vec![Value::Null; n]),
            "OffsetArray": text(&offsets),
            "SequenceNumberArray": text(&sequence),
            "EnqueuedTimeUtcArray": text(&enqueued),
            "PropertiesArray": text(&vec![json!({}); n]),
            "SystemPropertiesArray": text(&system),
            "sys": {"MethodName": "TaskEvents", "UtcNow": "2026-11-27T10:05:03.0000000Z",
                "RandGuid": format!("00000000-0000-0000-0000-{batch:012}")}
        }
    })
    .to_string()
}

/// JSON text of a metadata array (the host sends those arrays as strings).
fn text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("metadata")
}

/// Child: serve the burst scenario, print the address, run until stdin closes.
fn serve_emulator(events: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let emulator =
            Emulator::new(scenario(records(events, Stream::from_env()).1)).expect("emulator");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("http://{}", listener.local_addr().expect("address"));
        let stdin_closed = async {
            let _ = tokio::task::spawn_blocking(|| {
                let mut sink = String::new();
                let _ = std::io::stdin().read_line(&mut sink);
            })
            .await;
        };
        batch_emulator::serve(listener, emulator, stdin_closed)
            .await
            .expect("serve");
    });
}

/// User and system CPU time of a process, in seconds.
fn cpu_seconds(pid: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name, in USER_HZ
    // (100 on Linux) ticks.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 100.0
    };
    (ticks(11), ticks(12))
}

fn cpu_since(pid: &str, before: (f64, f64)) -> (f64, f64) {
    let now = cpu_seconds(pid);
    (now.0 - before.0, now.1 - before.1)
}

fn count_manifests(dir: &Path) -> usize {
    let mut count = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "manifest.json") {
                count += 1;
            }
        }
    }
    count
}

/// The container the handler's Blob store uses.
const CONTAINER: &str = "burst";

/// Where one run's handler keeps its store (`BENCH_STORE`).
enum Store {
    /// `dir`: a fresh temporary directory.
    Dir(tempfile::TempDir),
    /// `blob`: a fresh Azurite with the container, read directly by the driver, and the
    /// counting proxy the handler reaches it through.
    Blob(Box<BlobParts>),
}

/// The parts of a Blob store run.
struct BlobParts {
    azurite: artifact_store::testing::Azurite,
    direct: artifact_store::BlobStore,
    counter: BlobCounter,
}

impl Store {
    async fn new() -> Store {
        match std::env::var("BENCH_STORE").as_deref() {
            Ok("blob") => {
                let azurite = artifact_store::testing::Azurite::start();
                let direct = azurite.store(CONTAINER).await;
                let counter = BlobCounter::start(&azurite.blob_endpoint());
                Store::Blob(Box::new(BlobParts {
                    azurite,
                    direct,
                    counter,
                }))
            }
            Ok("dir") | Err(_) => Store::Dir(
                match std::env::var_os("BENCH_STORE_DIR") {
                    Some(dir) => tempfile::tempdir_in(dir),
                    None => tempfile::tempdir(),
                }
                .expect("temp store"),
            ),
            Ok(other) => panic!("BENCH_STORE={other:?}: expected dir or blob"),
        }
    }

    fn describe() -> &'static str {
        match std::env::var("BENCH_STORE").as_deref() {
            Ok("blob") => "store on Blob Storage (Azurite, in memory, a fresh one per run)",
            _ => "local-directory store",
        }
    }

    /// The handler's `BATCH_TRIAGE_STORE`: the directory, or a connection string whose Blob
    /// endpoint is the proxy's.
    fn setting(&self) -> std::ffi::OsString {
        match self {
            Store::Dir(dir) => dir.path().into(),
            Store::Blob(parts) => format!(
                "UseDevelopmentStorage=true;BlobEndpoint={};Container={CONTAINER}",
                parts.counter.endpoint
            )
            .into(),
        }
    }

    fn azurite_pid(&self) -> Option<u32> {
        match self {
            Store::Dir(_) => None,
            Store::Blob(parts) => Some(parts.azurite.pid()),
        }
    }

    /// The Blob requests counted since the last call (`None` with a directory).
    fn take_blob_requests(&self) -> Option<BTreeMap<Kind, usize>> {
        match self {
            Store::Dir(_) => None,
            Store::Blob(parts) => Some(parts.counter.take()),
        }
    }

    async fn count_manifests(&self) -> usize {
        use artifact_store::ArtifactStore as _;
        match self {
            Store::Dir(dir) => count_manifests(dir.path()),
            Store::Blob(parts) => parts
                .direct
                .list("")
                .await
                .expect("list the container")
                .iter()
                .filter(|o| o.key.as_str().ends_with("/manifest.json"))
                .count(),
        }
    }

    /// What the run keeps until its result is dropped: see [`RunResult::_store`]. Azurite is
    /// stopped at once, so its memory does not weigh on the next run.
    fn keep_if_asked(self) -> Option<Store> {
        match self {
            Store::Dir(dir) if std::env::var("BENCH_KEEP_STORES").is_ok_and(|v| v == "1") => {
                let _ = dir.keep();
                None
            }
            Store::Dir(dir) => Some(Store::Dir(dir)),
            Store::Blob(_) => None,
        }
    }
}

struct Handler {
    child: Child,
    port: u16,
}

impl Drop for Handler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_handler(
    batch_url: &str,
    store: &std::ffi::OsStr,
    policy: &Path,
    hook_url: &str,
) -> Handler {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(handler())
        .env_clear()
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("AZURE_BATCH_ENDPOINT", batch_url)
        .env("AZURE_BATCH_ACCOUNT", WELL_KNOWN_ACCOUNT_NAME)
        .env("AZURE_BATCH_ACCESS_KEY", WELL_KNOWN_ACCOUNT_KEY)
        .env("BATCH_TRIAGE_STORE", store)
        .env("BATCH_TRIAGE_POLICY", policy)
        .env("BATCH_TRIAGE_ALLOW_LOOPBACK", "true")
        .env("HOOK_URL", hook_url)
        .env("HOOK_SECRET", "bench-hook-secret")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the handler");
    let handler = Handler { child, port };
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if client
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .is_ok()
        {
            return handler;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the handler never answered GET /");
}

struct RunResult {
    in_flight: usize,
    secs: f64,
    latencies_ms: Vec<f64>,
    handler_cpu: (f64, f64),
    emulator_cpu: (f64, f64),
    driver_cpu: (f64, f64),
    handler_hwm_kib: u64,
    manifests: usize,
    /// Batch requests per event by kind, from the emulator's log.
    requests: Vec<(String, f64)>,
    /// With `BENCH_STORE=blob`: the requests that reached Azurite, by kind, and Azurite's CPU.
    blob: Option<(BTreeMap<Kind, usize>, (f64, f64))>,
    /// Removed after the last run: removing 50,000 files is slow on a `discard` mount and would
    /// load the disk under the next run. With `BENCH_KEEP_STORES=1`, not removed at all (`None`):
    /// on ext4 without a journal, inodes freed in the last minutes are skipped when new ones are
    /// allocated, so a run right after a large removal pays for it. `scripts/bench` keeps the
    /// stores and removes them once every benchmark has run.
    _store: Option<Store>,
    done: usize,
    not_done: Vec<String>,
}

/// The Batch requests the handler made, per event, by method, path shape and status. The log
/// keeps the last 100,000 requests, so the events are counted as the task GETs in it (one per
/// event).
fn request_mix(records: &[Value]) -> Vec<(String, f64)> {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    let mut task_gets = 0usize;
    for record in records {
        let method = record["method"].as_str().unwrap_or("?");
        let path = record["pathAndQuery"].as_str().unwrap_or("");
        let path = path.split('?').next().unwrap_or("");
        let mut shape = Vec::new();
        let mut previous = "";
        for segment in path.split('/').filter(|s| !s.is_empty()) {
            shape.push(
                if matches!(previous, "jobs" | "tasks" | "pools" | "nodes") {
                    "{id}"
                } else {
                    segment
                },
            );
            previous = segment;
        }
        let shape = format!(
            "{method} /{} → {}",
            shape.join("/"),
            record["status"].as_u64().unwrap_or(0)
        );
        if shape == "GET /jobs/{id}/tasks/{id} → 200" {
            task_gets += 1;
        }
        *counts.entry(shape).or_default() += 1;
    }
    let mut mix: Vec<(String, f64)> = counts
        .into_iter()
        .map(|(k, n)| (k, n as f64 / task_gets.max(1) as f64))
        .collect();
    mix.sort_by(|a, b| b.1.total_cmp(&a.1));
    mix
}

#[allow(clippy::too_many_arguments)]
async fn run(
    bodies: Arc<Vec<String>>,
    in_flight: usize,
    batch_url: &str,
    emulator_pid: u32,
    policy: &Path,
    hook_url: &str,
    perf: bool,
) -> RunResult {
    let store = Store::new().await;
    let handler = start_handler(batch_url, &store.setting(), policy, hook_url).await;
    let pid = handler.child.id().to_string();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(in_flight)
        .timeout(Duration::from_secs(600))
        .build()
        .expect("client");
    let url = format!("http://127.0.0.1:{}/TaskEvents", handler.port);
    let mut perf_child = perf.then(|| {
        Command::new("perf")
            .args([
                "record",
                "-g",
                "-F",
                "499",
                "-o",
                "target/bench-burst.perf.data",
                "-p",
            ])
            .arg(&pid)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("perf record")
    });
    let (handler_cpu0, emulator_cpu0, driver_cpu0) = (
        cpu_seconds(&pid),
        cpu_seconds(&emulator_pid.to_string()),
        cpu_seconds("self"),
    );
    let azurite_cpu0 = store.azurite_pid().map(|p| cpu_seconds(&p.to_string()));
    // What the handler did at start (none so far) is not the burst's.
    store.take_blob_requests();
    client
        .delete(format!("{batch_url}/_emulator/requests"))
        .send()
        .await
        .expect("clear the emulator's request log");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..in_flight {
        let (bodies, next, client, url) =
            (bodies.clone(), next.clone(), client.clone(), url.clone());
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .header("Content-Type", "application/json; charset=utf-8")
                    .header(
                        "X-Azure-Functions-InvocationId",
                        format!("7a3b1c52-0000-0000-0000-{i:012}"),
                    )
                    .header("X-Azure-Functions-HostVersion", "4.1040.300.0")
                    .header("User-Agent", "Azure-Functions-Host/4.1040.300.0")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("POST /TaskEvents");
                let status = response.status().as_u16();
                let text = response.text().await.expect("response body");
                let ms = sent.elapsed().as_secs_f64() * 1e3;
                out.push((ms, status, text));
            }
            out
        }));
    }
    let mut results = Vec::new();
    for worker in workers {
        results.extend(worker.await.expect("worker"));
    }
    let secs = started.elapsed().as_secs_f64();
    let handler_cpu = cpu_since(&pid, handler_cpu0);
    let emulator_cpu = cpu_since(&emulator_pid.to_string(), emulator_cpu0);
    let driver_cpu = cpu_since("self", driver_cpu0);
    let blob = store.take_blob_requests().map(|requests| {
        let azurite_cpu = match (store.azurite_pid(), azurite_cpu0) {
            (Some(pid), Some(before)) => cpu_since(&pid.to_string(), before),
            _ => (0.0, 0.0),
        };
        (requests, azurite_cpu)
    });
    if let Some(p) = perf_child.as_mut() {
        // SIGINT makes perf write its file and exit.
        let _ = Command::new("kill")
            .args(["-INT", &p.id().to_string()])
            .status();
        let _ = p.wait();
    }
    let handler_hwm_kib = status_kib(handler.child.id(), "VmHWM:");
    let requests: Vec<Value> = client
        .get(format!("{batch_url}/_emulator/requests"))
        .send()
        .await
        .expect("the emulator's request log")
        .json()
        .await
        .expect("request log JSON");
    let (mut done, mut not_done) = (0, Vec::new());
    let mut latencies_ms = Vec::new();
    for (ms, status, text) in results {
        latencies_ms.push(ms);
        if status != 200 {
            not_done.push(format!("HTTP {status}"));
            continue;
        }
        let response: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        for line in response["Logs"].as_array().into_iter().flatten() {
            let line = line.as_str().unwrap_or_default();
            if line.contains(" — Done") {
                done += 1;
            } else if not_done.len() < 5 {
                not_done.push(line.to_owned());
            }
        }
    }
    drop(handler);
    latencies_ms.sort_by(f64::total_cmp);
    RunResult {
        in_flight,
        secs,
        latencies_ms,
        handler_cpu,
        emulator_cpu,
        driver_cpu,
        handler_hwm_kib,
        manifests: store.count_manifests().await,
        requests: request_mix(&requests),
        blob,
        _store: store.keep_if_asked(),
        done,
        not_done,
    }
}

/// The Blob requests of a run per failed task: by operation, then by operation, answer and key.
fn print_blob_requests(requests: &BTreeMap<Kind, usize>, failed: usize, in_flight: usize) {
    let per_task = |n: usize| n as f64 / failed.max(1) as f64;
    let total: usize = requests.values().sum();
    println!(
        "Blob requests per failed task (in flight {in_flight}, counted by the proxy in front of \
         Azurite): {:.2}",
        per_task(total)
    );
    let mut by_operation: BTreeMap<&str, usize> = BTreeMap::new();
    for (kind, n) in requests {
        *by_operation.entry(kind.operation.as_str()).or_default() += n;
    }
    let mut by_operation: Vec<_> = by_operation.into_iter().collect();
    by_operation.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
    for (operation, n) in by_operation {
        println!("  {:>6.2}  {operation}", per_task(n));
    }
    println!("by operation, answer and key:");
    let mut detail: Vec<_> = requests.iter().collect();
    detail.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    for (kind, n) in detail {
        println!(
            "  {:>6.2}  {} → {}  {}",
            per_task(*n),
            kind.operation,
            kind.status,
            kind.key_shape
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let events = env_number("BENCH_EVENTS", 10_000);
    if args.get(1).map(String::as_str) == Some("--emulator") {
        serve_emulator(events);
        return;
    }
    let per_batch = env_number("BENCH_BATCH", 100).max(1);
    let per_event = env_number("BENCH_RECORDS_PER_EVENT", 1).max(1);
    let in_flights: Vec<usize> = std::env::var("BENCH_IN_FLIGHT")
        .unwrap_or_else(|_| "1,2,4".to_owned())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .filter(|&n| n > 0)
        .collect();
    let perf = std::env::var("BENCH_PERF").is_ok_and(|v| v == "1");
    let stream = Stream::from_env();
    let (all_records, failed) = records(events, stream);

    let mut emulator = Command::new(std::env::current_exe().expect("current exe"))
        .arg("--emulator")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the emulator child");
    let mut line = String::new();
    BufReader::new(emulator.stdout.take().expect("emulator stdout"))
        .read_line(&mut line)
        .expect("read the emulator address");
    let batch_url = line.trim().to_owned();

    let partitions = in_flights.iter().copied().max().unwrap_or(1);
    let bodies: Vec<String> = (0..events.div_ceil(per_batch))
        .map(|b| {
            let range = b * per_batch..((b + 1) * per_batch).min(events);
            invocation(b, range.start, &all_records[range], per_event, partitions)
        })
        .collect();
    let body_bytes: usize = bodies.iter().map(String::len).sum();
    let bodies = Arc::new(bodies);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mut policy = tempfile::NamedTempFile::new().expect("policy file");
    std::io::Write::write_all(
        &mut policy,
        br#"
[[receivers]]
name = "oncall"
kind = "webhook"
url_env = "HOOK_URL"
secret_env = "HOOK_SECRET"

[[rules]]
name = "every failure"
match = { class = "*" }
receivers = ["oncall"]
"#,
    )
    .expect("policy");
    let hooks = Arc::new(AtomicUsize::new(0));
    let hook_url = runtime.block_on(async {
        let counter = hooks.clone();
        let sink = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                counter.fetch_add(1, Ordering::Relaxed);
                async { axum::http::StatusCode::NO_CONTENT }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, sink).await });
        url
    });

    println!(
        "burst: {events} {}, about {failed} failed tasks; {} invocations of {per_batch} records \
         ({per_event} per event body; {:.1} MiB of bodies), emulator {batch_url} (own process), \
         {}",
        stream.describe(),
        bodies.len(),
        body_bytes as f64 / 1048576.0,
        Store::describe()
    );
    let mut rows = Vec::new();
    let mut unfinished = Vec::new();
    for (i, &in_flight) in in_flights.iter().enumerate() {
        let last = i + 1 == in_flights.len();
        let r = runtime.block_on(run(
            bodies.clone(),
            in_flight,
            &batch_url,
            emulator.id(),
            policy.path(),
            &hook_url,
            perf && last,
        ));
        println!(
            "  in flight {}: {:.2} s, {:.0} events/s, subjects done {} (failed tasks {failed}), manifests {}/{failed}{}{}",
            r.in_flight,
            r.secs,
            events as f64 / r.secs,
            r.done,
            r.manifests,
            r.blob
                .as_ref()
                .map_or(String::new(), |(requests, _)| format!(
                    ", Blob requests {:.2} per failed task",
                    requests.values().sum::<usize>() as f64 / failed.max(1) as f64
                )),
            if r.not_done.is_empty() {
                String::new()
            } else {
                format!("; NOT done (first few): {:?}", r.not_done)
            }
        );
        // Checked once every run has its figures (a run that misses some is still measured),
        // and then the benchmark fails.
        if r.manifests != failed {
            unfinished.push(format!(
                "in flight {}: {} of {failed} failed tasks' logs preserved",
                r.in_flight, r.manifests
            ));
        }
        // A failed task whose completion and failure events fall in two batches is triaged in
        // both (the second finds its logs preserved and its alert counted).
        if r.done < failed {
            unfinished.push(format!(
                "in flight {}: {} of {failed} failures triaged: {:?}",
                r.in_flight, r.done, r.not_done
            ));
        }
        rows.push(r);
    }
    drop(emulator.stdin.take());
    let _ = emulator.wait();

    println!();
    println!(
        "| in flight | events/s | batch p50 ms | batch p99 ms | handler CPU s user + sys (ms per event) | emulator CPU s | driver CPU s | handler VmHWM MiB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let (user, sys) = r.handler_cpu;
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {user:.2} + {sys:.2} ({:.2}) | {:.2} | {:.2} | {:.1} |",
            r.in_flight,
            events as f64 / r.secs,
            percentile(&r.latencies_ms, 50.0),
            percentile(&r.latencies_ms, 99.0),
            (user + sys) / events as f64 * 1000.0,
            r.emulator_cpu.0 + r.emulator_cpu.1,
            r.driver_cpu.0 + r.driver_cpu.1,
            r.handler_hwm_kib as f64 / 1024.0
        );
    }
    if let Some(r) = rows.last() {
        let total: f64 = r.requests.iter().map(|(_, n)| n).sum();
        println!(
            "Batch requests per task read (in flight {}, from the emulator's log): {total:.1}",
            r.in_flight
        );
        for (shape, n) in &r.requests {
            println!("  {n:>6.2}  {shape}");
        }
    }
    if let Some(r) = rows.last()
        && let Some((requests, _)) = &r.blob
    {
        print_blob_requests(requests, failed, r.in_flight);
    }
    for r in rows.iter() {
        if let Some((_, (user, sys))) = r.blob {
            println!(
                "Azurite CPU at {} in flight: {user:.2} s user + {sys:.2} s sys",
                r.in_flight
            );
        }
    }
    println!(
        "alerts received by the webhook: {}",
        hooks.load(Ordering::Relaxed)
    );
    if let Some(r) = rows.iter().find(|r| r.in_flight == 4).or(rows.last()) {
        let rate = events as f64 / r.secs;
        println!(
            "goal ≥ 2,000 events/s on {} cores at {} in flight: {} ({rate:.0} events/s)",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            r.in_flight,
            if rate >= 2000.0 { "met" } else { "NOT met" }
        );
    }
    if !unfinished.is_empty() {
        eprintln!("FAILED: not everything was done");
        for problem in &unfinished {
            eprintln!("  {problem}");
        }
        std::process::exit(1);
    }
}
