//! Peak memory of `batch-triage serve` under hostile record batches: the release binary, spawned
//! in front of the Batch emulator, is sent a 31.5 MB `/api/records` body of 11 million empty
//! records `{}`, then (a fresh server) three of them at once. The figure is the server's VmHWM
//! (peak resident set, from `/proc/<pid>/status`) after the requests were answered.
//!
//! Knobs: `BENCH_CLI` (the `batch-triage` binary; default: `target/release/batch-triage` beside
//! this example), `BENCH_RECORDS` (default 11,000,000), `BENCH_CONCURRENT` (default 3).
//!
//! `cargo build --release -p batch-triage-cli --bins --examples && target/release/examples/bench_serve_memory`

use std::path::PathBuf;
use std::process::{Command, Stdio};

use test_kit::{Backends, KillOnDrop, spawn_announced};

const KEY: &str = "bench-serve-memory-key-0123456789";

fn cli() -> PathBuf {
    if let Some(p) = std::env::var_os("BENCH_CLI").filter(|p| !p.is_empty()) {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    let path = exe
        .parent()
        .and_then(|examples| examples.parent())
        .expect("target directory")
        .join("batch-triage");
    assert!(
        path.exists(),
        "{} is missing: cargo build --release -p batch-triage-cli --bins",
        path.display()
    );
    path
}

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`), 0 if unreadable.
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

struct Server {
    child: KillOnDrop,
    base: String,
}

fn start(backends: &Backends) -> Server {
    let mut command = Command::new(cli());
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_clear()
        .envs(backends.settings())
        .env("BATCH_TRIAGE_WEBHOOK_KEY", KEY)
        .stderr(Stdio::null());
    let (child, base, _) = spawn_announced(&mut command);
    Server { child, base }
}

fn empty_records(records: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(records * 3 + 16);
    body.extend_from_slice(b"{\"records\":[{}");
    for _ in 1..records {
        body.extend_from_slice(b",{}");
    }
    body.extend_from_slice(b"]}");
    body
}

/// Sends `concurrent` copies of `body` at once; the statuses, and the server's VmHWM after.
async fn round(server: &Server, body: &[u8], concurrent: usize) -> (Vec<u16>, u64) {
    let client = reqwest::Client::new();
    let sends = (0..concurrent).map(|_| {
        client
            .post(format!("{}/api/records", server.base))
            .header("x-batch-triage-key", KEY)
            .body(body.to_vec())
            .send()
    });
    let mut statuses = Vec::new();
    for response in futures::future::join_all(sends).await {
        statuses.push(response.map_or(0, |r| r.status().as_u16()));
    }
    (statuses, status_kib(server.child.id(), "VmHWM:"))
}

#[tokio::main]
async fn main() {
    let records = knob("BENCH_RECORDS", 11_000_000);
    let concurrent = knob("BENCH_CONCURRENT", 3);
    let backends = Backends::start().await;
    let body = empty_records(records);
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "body: {records} empty records, {:.1} MB",
        body.len() as f64 / 1e6
    );
    for n in [1, concurrent] {
        let server = start(&backends);
        let idle = status_kib(server.child.id(), "VmHWM:");
        let (statuses, peak) = round(&server, &body, n).await;
        println!(
            "{n} at once: statuses {statuses:?}; serve peak RSS (VmHWM) {:.1} MiB (idle {:.1} MiB)",
            mib(peak),
            mib(idle)
        );
    }
}
