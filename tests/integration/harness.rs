//! What the fault and secret tests share: the Batch emulator on loopback, a webhook receiver that
//! records (and can refuse) deliveries, a fault-injecting HTTP proxy for Blob Storage, the
//! pipeline wired to them, and the workspace's binaries.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use artifact_store::ArtifactStore;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use batch_client::{
    BatchApi, BatchClient, BatchConfig, Deadline, DownloadOptions, FileRef, Secret,
};
use batch_emulator::{Emulator, Scenario, WELL_KNOWN_ACCOUNT_KEY, WELL_KNOWN_ACCOUNT_NAME};
use diagnosis::policy::Policy;
use futures::StreamExt;
use notify::{Allowlist, Egress, ReceiverConfig, RetryPolicy};
use pipeline::triage::{Triage, TriageConfig};
use preserve::PreserveOptions;
use sha2::{Digest, Sha256};

/// The emulator, served on a loopback port for the test's lifetime.
pub(crate) struct Batch {
    pub(crate) emulator: Emulator,
    pub(crate) url: String,
}

pub(crate) async fn batch(scenario: Scenario) -> Batch {
    let emulator = Emulator::new(scenario).unwrap();
    let url = test_kit::serve_emulator(emulator.clone()).await;
    Batch { emulator, url }
}

/// The built-in scenario with etl/big-log's generated stdout resized to `bytes`.
pub(crate) fn scenario_with_big_log(bytes: u64) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/batch-emulator/scenarios/builtin.json");
    let mut scenario: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut resized = false;
    for job in scenario["jobs"].as_array_mut().unwrap() {
        for task in job["tasks"].as_array_mut().into_iter().flatten() {
            if task["task"]["id"] == "big-log" {
                task["files"]["stdout.txt"]["generate"]["bytes"] = bytes.into();
                resized = true;
            }
        }
    }
    assert!(
        resized,
        "the built-in scenario has no etl/big-log task any more"
    );
    Scenario::from_json_str(&scenario.to_string()).unwrap()
}

pub(crate) fn batch_client(url: &str) -> Arc<BatchClient> {
    batch_client_with(url, RetryPolicy::standard())
}

pub(crate) fn batch_client_with(url: &str, retry: RetryPolicy) -> Arc<BatchClient> {
    let mut config = BatchConfig::shared_key(
        url,
        WELL_KNOWN_ACCOUNT_NAME,
        Secret::new(WELL_KNOWN_ACCOUNT_KEY),
    )
    .unwrap();
    config.retry = retry;
    Arc::new(BatchClient::new(config).unwrap())
}

/// Size and sha256 of a task file as the emulator serves it, read through the Batch client.
pub(crate) async fn emulator_file(url: &str, job: &str, task: &str, path: &str) -> (u64, String) {
    let client = batch_client(url);
    let file = FileRef::Task {
        job_id: job.to_owned(),
        task_id: task.to_owned(),
        path: path.to_owned(),
    };
    let mut download = client
        .download_file(&file, &DownloadOptions::default(), deadline())
        .await
        .unwrap();
    let mut hash = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = download.next().await {
        let chunk = chunk.unwrap();
        size += chunk.len() as u64;
        hash.update(&chunk);
    }
    (size, hex::encode(hash.finalize()))
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub(crate) fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(120))
}

/// A webhook receiver: answers 503 (with `Retry-After: 0`) while `refuse` is above zero,
/// counting down, then records each body and answers 204.
#[derive(Clone)]
pub(crate) struct Receiver {
    pub(crate) url: String,
    pub(crate) received: Arc<Mutex<Vec<String>>>,
    pub(crate) attempts: Arc<AtomicUsize>,
    pub(crate) refuse: Arc<AtomicUsize>,
}

pub(crate) async fn receiver(refuse_first: usize) -> Receiver {
    let receiver = Receiver {
        url: String::new(),
        received: Arc::default(),
        attempts: Arc::default(),
        refuse: Arc::new(AtomicUsize::new(refuse_first)),
    };
    async fn hook(State(r): State<Receiver>, body: String) -> Response {
        r.attempts.fetch_add(1, Ordering::SeqCst);
        let refused = r
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if refused {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [("Retry-After", "0")],
                "down for maintenance",
            )
                .into_response();
        }
        r.received.lock().unwrap().push(body);
        StatusCode::NO_CONTENT.into_response()
    }
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { url, ..receiver }
}

impl Receiver {
    pub(crate) fn bodies(&self) -> Vec<serde_json::Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|b| serde_json::from_str(b).unwrap())
            .collect()
    }
}

/// A policy sending every task failure to the webhook `hook` (HOOK_URL, HOOK_SECRET), grouped
/// per cause, without waiting. `extra` is appended.
pub(crate) fn hook_policy(extra: &str) -> String {
    format!(
        r#"
[grouping]
group_by = ["account", "job", "class", "fingerprint"]
group_wait = "0s"

[[receivers]]
name = "hook"
kind = "webhook"
url_env = "HOOK_URL"
secret_env = "HOOK_SECRET"

{extra}

[[rules]]
name = "all-task-failures"
match = {{ class = "task.*" }}
receivers = ["hook"]
"#
    )
}

/// The pipeline over `batch_url` and `store`, with `policy` whose receivers resolve from `env`;
/// `retry` is for notifications (the Batch client retries as in production).
pub(crate) fn triage(
    batch_url: &str,
    store: Arc<dyn ArtifactStore>,
    policy: &str,
    env: &BTreeMap<&str, String>,
    retry: RetryPolicy,
) -> Triage {
    triage_with(batch_client(batch_url), store, policy, env, retry)
}

/// [`triage`] over a given Batch client.
pub(crate) fn triage_with(
    batch: Arc<BatchClient>,
    store: Arc<dyn ArtifactStore>,
    policy: &str,
    env: &BTreeMap<&str, String>,
    retry: RetryPolicy,
) -> Triage {
    let policy = Policy::parse(policy).unwrap();
    let receivers = policy
        .receivers
        .iter()
        .map(|r| {
            let receiver = ReceiverConfig::from_policy(r)
                .unwrap()
                .resolve(|name| env.get(name).cloned())
                .unwrap();
            (r.name.clone(), receiver)
        })
        .collect();
    let egress = Egress::new(Allowlist::default().allow_loopback(), retry).unwrap();
    Triage::new(
        TriageConfig {
            account: WELL_KNOWN_ACCOUNT_NAME.to_owned(),
            preserve: PreserveOptions {
                max_file_bytes: 64 << 20,
                ..PreserveOptions::default()
            },
            action_call_timeout: Duration::from_secs(30),
        },
        batch,
        store,
        Arc::new(policy),
        receivers,
        egress,
    )
}

/// A retry policy quick enough for tests: 3 attempts, 10 ms doubling.
pub(crate) fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
    }
}

/// An Event Hubs records batch with one `TaskFailEvent` for `job`/`task` of the well-known account.
pub(crate) fn fail_record(job: &str, task: &str) -> String {
    serde_json::json!({"records": [{
        "time": "2026-11-27T10:05:01.1234567Z",
        "resourceId": "/SUBSCRIPTIONS/0/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.BATCH/BATCHACCOUNTS/DEVBATCH1/",
        "category": "ServiceLog", "operationName": "TaskFailEvent", "operationVersion": "2017-06-01",
        "properties": {"jobId": job, "id": task, "taskType": "User", "executionInfo": {"exitCode": 137, "retryCount": 0, "requeueCount": 0, "result": "Failure"}}
    }]})
    .to_string()
}

/// How the blob proxy misbehaves: of every `period` requests (counted from 1), request number
/// `fail_before` answers 503 without reaching the upstream, and number `fail_after` reaches the
/// upstream (the write happens) but answers 500, as a gateway timing out after the fact would.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlobFaults {
    pub(crate) period: usize,
    pub(crate) fail_before: usize,
    pub(crate) fail_after: usize,
}

/// A reverse proxy on loopback in front of `upstream` (Azurite) that fails requests by
/// [`BlobFaults`].
#[derive(Clone)]
pub(crate) struct FaultyProxy {
    pub(crate) url: String,
    pub(crate) requests: Arc<AtomicUsize>,
    pub(crate) failed: Arc<AtomicUsize>,
    pub(crate) enabled: Arc<std::sync::atomic::AtomicBool>,
    upstream: String,
    faults: BlobFaults,
    client: reqwest::Client,
}

pub(crate) async fn faulty_proxy(upstream: &str, faults: BlobFaults) -> FaultyProxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = FaultyProxy {
        url: format!("http://{}", listener.local_addr().unwrap()),
        requests: Arc::default(),
        failed: Arc::default(),
        enabled: Arc::new(true.into()),
        upstream: upstream.trim_end_matches('/').to_owned(),
        faults,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    };
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(proxy.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    proxy
}

fn storage_error(status: StatusCode, code: &str) -> Response {
    (
        status,
        [("Content-Type", "application/xml"), ("x-ms-error-code", code)],
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>"
        ),
    )
        .into_response()
}

async fn forward(State(proxy): State<FaultyProxy>, request: Request) -> Response {
    let n = proxy.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let faults = proxy.faults;
    let slot = (n - 1) % faults.period + 1;
    let enabled = proxy.enabled.load(Ordering::SeqCst);
    if enabled && slot == faults.fail_before {
        proxy.failed.fetch_add(1, Ordering::SeqCst);
        return storage_error(StatusCode::SERVICE_UNAVAILABLE, "ServerBusy");
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut upstream = proxy
        .client
        .request(parts.method.clone(), format!("{}{path}", proxy.upstream))
        .body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            upstream = upstream.header(name, value);
        }
    }
    let response = match upstream.send().await {
        Ok(response) => response,
        Err(_) => return storage_error(StatusCode::BAD_GATEWAY, "ProxyError"),
    };
    if enabled && slot == faults.fail_after {
        proxy.failed.fetch_add(1, Ordering::SeqCst);
        return storage_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError");
    }
    let mut builder = Response::builder().status(response.status().as_u16());
    for (name, value) in response.headers() {
        if name != "transfer-encoding" && name != "connection" {
            builder = builder.header(name, value);
        }
    }
    let bytes = response.bytes().await.unwrap_or_default();
    builder.body(Body::from(bytes)).unwrap()
}

/// A binary of the workspace (`batch-triage`, `batch-triage-functions`), from the target
/// directory this test binary runs from. `cargo test --workspace` (scripts/test) builds them
/// before any test runs; a run of this package alone needs `cargo build` first.
pub(crate) fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/integration-HASH → target/debug/NAME
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build -p batch-triage-cli -p batch-triage-azure-functions` \
         (scripts/test builds it)",
        path.display()
    );
    path
}

/// Every file under `dir`, with its bytes.
pub(crate) fn files_under(dir: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out
}
