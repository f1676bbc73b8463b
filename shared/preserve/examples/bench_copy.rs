//! Copy benchmark (not a test): a generated `stdout.txt` of 100 MiB and 2 GiB, streamed from the
//! Batch emulator to Azurite and to a local directory, each copy in a child process whose peak
//! RSS (`VmHWM`) is reported; then the same copies with the obvious Python path (azure-batch
//! `get_task_file` streaming into azure-storage-blob `upload_blob`) for a speed ratio.
//!
//! ```text
//! cargo run --release -p batch-triage-preserve --example bench_copy
//! ```
//!
//! The emulator runs in this (parent) process, Azurite in its own; only the copy is measured.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use artifact_store::{ArtifactStore, BlobStore, LocalDirStore};
use batch_client::{BatchApi, BatchClient, BatchConfig, Deadline, Secret};
use batch_emulator::{Emulator, Scenario, WELL_KNOWN_ACCOUNT_KEY, WELL_KNOWN_ACCOUNT_NAME};
use preserve::PreserveOptions;

const SIZES: [(&str, u64); 2] = [("s100m", 100 << 20), ("s2g", 2 << 30)];

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn client(endpoint: &str) -> BatchClient {
    let config = BatchConfig::shared_key(
        endpoint,
        WELL_KNOWN_ACCOUNT_NAME,
        Secret::new(WELL_KNOWN_ACCOUNT_KEY),
    )
    .expect("config");
    BatchClient::new(config).expect("client")
}

/// The measured part: one `preserve_task` in this process.
fn child(endpoint: &str, task: &str, kind: &str, target: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (bytes, secs) = runtime.block_on(async {
        let api = client(endpoint);
        let store: Arc<dyn ArtifactStore> = match kind {
            "local" => Arc::new(LocalDirStore::new(target).expect("local store")),
            _ => {
                let mut store = BlobStore::from_spec(target).expect("blob store");
                if let Some(mib) = std::env::var("BENCH_BLOCK_MIB")
                    .ok()
                    .and_then(|v| v.parse::<usize>().ok())
                {
                    store = store.with_block_size(mib << 20);
                }
                if let Some(n) = std::env::var("BENCH_CONCURRENCY")
                    .ok()
                    .and_then(|v| v.parse::<usize>().ok())
                {
                    store = store.with_concurrency(n);
                }
                Arc::new(store)
            }
        };
        let deadline = Deadline::after(Duration::from_secs(3600));
        let t = api
            .get_task("bench", task, &Default::default(), deadline)
            .await
            .expect("task");
        let evidence = diagnosis::diagnose::Evidence {
            account: Some(WELL_KNOWN_ACCOUNT_NAME),
            job_id: Some("bench"),
            ..Default::default()
        };
        let diagnosis = diagnosis::diagnose_task(&t, &evidence);
        let options = PreserveOptions {
            max_file_bytes: 4 << 30,
            ..Default::default()
        };
        let started = Instant::now();
        let report = preserve::preserve_task(&api, &*store, &diagnosis, &options, deadline)
            .await
            .expect("preserve");
        assert!(report.complete, "{report:?}");
        (report.bytes_copied, started.elapsed().as_secs_f64())
    });
    println!("RESULT {bytes} {secs} {}", vm_hwm_kib());
}

const PYTHON: &str = r#"
import sys, time
from azure.batch import BatchClient
from azure.core.credentials import AzureNamedKeyCredential
from azure.storage.blob import BlobServiceClient
endpoint, account, key, task, conn, container = sys.argv[1:7]
batch = BatchClient(endpoint, AzureNamedKeyCredential(account, key))
blobs = BlobServiceClient.from_connection_string(conn).get_container_client(container)
start = time.monotonic()
stream = batch.download_task_file("bench", task, "stdout.txt")
blobs.upload_blob(f"python/{task}/stdout.txt", stream, overwrite=True)
print("RESULT", time.monotonic() - start)
"#;

fn python() -> std::path::PathBuf {
    match std::env::var_os("BATCH_TRIAGE_PYTHON") {
        Some(p) if !p.is_empty() => p.into(),
        _ => std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"),
    }
}

fn result_line(out: &std::process::Output) -> Vec<String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT"))
        .unwrap_or_else(|| {
            panic!(
                "no result: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    line.split_whitespace().skip(1).map(str::to_owned).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child(&args[2], &args[3], &args[4], &args[5]);
        return;
    }
    let tasks: Vec<_> = SIZES
        .iter()
        .map(|(id, bytes)| {
            serde_json::json!({
                "task": {"id": id, "state": "completed", "commandLine": "bench",
                         "nodeInfo": {"poolId": "p", "nodeId": "n1"},
                         "executionInfo": {"exitCode": 1, "result": "failure", "retryCount": 0,
                            "failureInfo": {"category": "usererror", "code": "FailureExitCode"}}},
                "files": {"stdout.txt": {"generate": {"bytes": bytes, "seed": 7, "tail": "Killed\n"}},
                          "stderr.txt": "boom\n"}
            })
        })
        .collect();
    let scenario = serde_json::json!({
        "pools": [{"id": "p", "nodes": [{"id": "n1"}]}],
        "jobs": [{"job": {"id": "bench", "poolInfo": {"poolId": "p"}}, "tasks": tasks}]
    });
    let scenario = Scenario::from_json_str(&scenario.to_string()).expect("scenario");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let emulator = Emulator::new(scenario).expect("emulator");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    runtime.spawn(batch_emulator::serve(
        listener,
        emulator,
        std::future::pending::<()>(),
    ));
    let azurite = artifact_store::testing::Azurite::start();
    runtime.block_on(async { azurite.store("bench").await });
    let connection_string = azurite.connection_string("bench");
    let python_connection = format!(
        "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};BlobEndpoint={};",
        artifact_store::DEVSTORE_ACCOUNT,
        artifact_store::DEVSTORE_KEY,
        azurite.blob_endpoint()
    );
    let exe = std::env::current_exe().expect("current exe");
    println!("emulator {endpoint}, Azurite {}", azurite.blob_endpoint());
    println!(
        "{:<8} {:<7} {:>12} {:>9} {:>10} {:>11}",
        "file", "target", "bytes", "secs", "MiB/s", "VmHWM MiB"
    );
    let mut ours_blob = Vec::new();
    for (task, _) in SIZES {
        for kind in ["azurite", "local"] {
            let only = std::env::var("BENCH_ONLY").unwrap_or_default();
            if !only.is_empty() && !only.split(',').any(|o| o == format!("{task}:{kind}")) {
                continue;
            }
            let dir = tempfile::tempdir().expect("tempdir");
            let target = match kind {
                "local" => dir.path().to_str().expect("utf-8 temp dir").to_owned(),
                _ => connection_string.clone(),
            };
            // A fresh copy each time: a different container prefix is not needed, the attempt
            // folder is per task and each task is copied once per target.
            let out = Command::new(&exe)
                .args(["--child", &endpoint, task, kind, &target])
                .output()
                .expect("run the child");
            let r = result_line(&out);
            let bytes: f64 = r[0].parse().expect("bytes");
            let secs: f64 = r[1].parse().expect("secs");
            let hwm: f64 = r[2].parse::<f64>().expect("hwm") / 1024.0;
            println!(
                "{task:<8} {kind:<7} {bytes:>12} {secs:>9.2} {:>10.1} {hwm:>11.1}",
                bytes / secs / 1048576.0
            );
            if kind == "azurite" {
                ours_blob.push((task, bytes, secs));
            }
        }
    }
    println!(
        "\nPython (azure-batch get_task_file → azure-storage-blob upload_blob), emulator → Azurite:"
    );
    if std::env::var_os("BENCH_NO_PYTHON").is_some() {
        return;
    }
    for (task, bytes, ours) in ours_blob {
        let out = Command::new(python())
            .args([
                "-c",
                PYTHON,
                &endpoint,
                WELL_KNOWN_ACCOUNT_NAME,
                WELL_KNOWN_ACCOUNT_KEY,
                task,
            ])
            .args([&python_connection, "bench"])
            .output()
            .expect("run python");
        let secs: f64 = result_line(&out)[0].parse().expect("secs");
        println!(
            "{task:<8} python  {bytes:>12} {secs:>9.2} {:>10.1}   ours is {:.1}x faster",
            bytes / secs / 1048576.0,
            secs / ours
        );
    }
}
