//! Benchmark: list 10,000 and 100,000 tasks through `BatchClient` and the emulator with
//! `$select`, and print tasks/s and the client process's peak RSS (`VmHWM`).
//!
//! Run: `cargo run --release -p batch-triage-batch-client --example bench_list_tasks`.
//!
//! The emulator runs in a child process (this binary re-run with `--serve`), so the RSS printed
//! is the client's alone: it should stay flat from 10k to 100k tasks, because pages are streamed
//! and dropped, never collected.

extern crate batch_triage_batch_client as batch_client;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use batch_client::{BatchApi, BatchClient, BatchConfig, Deadline, ListOptions, Secret};
use futures::TryStreamExt;

const SIZES: [u64; 2] = [10_000, 100_000];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if args.get(1).map(String::as_str) == Some("--serve") {
        runtime.block_on(serve());
    } else {
        runtime.block_on(bench(&args[0]));
    }
}

/// Child: serve an emulator with one job per size, print the address, run until stdin closes.
async fn serve() {
    let jobs: Vec<_> = SIZES
        .iter()
        .map(|n| {
            serde_json::json!({
                "job": {"id": format!("bulk-{n}"), "poolInfo": {"poolId": "pool-1"}},
                "generateTasks": [{"count": n, "idPrefix": "t-", "failEvery": 100,
                    "task": {"state": "completed", "commandLine": "python work.py --shard 17",
                             "executionInfo": {"exitCode": 0, "result": "success", "retryCount": 0, "requeueCount": 0},
                             "nodeInfo": {"poolId": "pool-1", "nodeId": "tvm-1"}}}]
            })
        })
        .collect();
    let scenario =
        batch_emulator::Scenario::from_json_str(&serde_json::json!({ "jobs": jobs }).to_string())
            .expect("scenario");
    let emulator = batch_emulator::Emulator::new(scenario).expect("emulator");
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
}

/// Peak resident set size of this process, in KiB.
fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

async fn bench(program: &str) {
    let mut child = Command::new(program)
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the emulator child");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("child stdout"))
        .read_line(&mut line)
        .expect("read the emulator address");
    let base = line.trim().to_owned();

    let config = BatchConfig::shared_key(
        &base,
        batch_emulator::WELL_KNOWN_ACCOUNT_NAME,
        Secret::new(batch_emulator::WELL_KNOWN_ACCOUNT_KEY),
    )
    .expect("config");
    let client = BatchClient::new(config).expect("client");
    let options = ListOptions {
        select: Some("id,state,executionInfo".into()),
        ..ListOptions::default()
    };
    // Warm up the connection and the emulator's first page.
    let _ = client
        .list_tasks(
            "bulk-10000",
            &ListOptions {
                max_results: Some(1),
                ..options.clone()
            },
            Deadline::after(Duration::from_secs(60)),
        )
        .try_next()
        .await
        .expect("warm-up");
    println!(
        "{:>8} {:>12} {:>10} {:>12}",
        "tasks", "tasks/s", "pages", "VmHWM KiB"
    );
    for n in SIZES {
        let started = Instant::now();
        let mut pages = client.list_tasks(
            &format!("bulk-{n}"),
            &options,
            Deadline::after(Duration::from_secs(600)),
        );
        let (mut tasks, mut page_count, mut failed) = (0u64, 0u64, 0u64);
        while let Some(page) = pages.try_next().await.expect("list") {
            page_count += 1;
            for task in page.value {
                tasks += 1;
                if task.execution_info.and_then(|e| e.result)
                    == Some(diagnosis::wire::TaskResult::Failure)
                {
                    failed += 1;
                }
            }
        }
        let elapsed = started.elapsed();
        assert_eq!(tasks, n, "every task listed once");
        assert_eq!(failed, n / 100);
        println!(
            "{tasks:>8} {:>12.0} {page_count:>10} {:>12}",
            tasks as f64 / elapsed.as_secs_f64(),
            vm_hwm_kib()
        );
    }
    drop(child.stdin.take());
    let _ = child.wait();
}
