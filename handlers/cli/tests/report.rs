//! `batch-triage report` from a store that the pipeline filled: a `sweep` (another process) over
//! the emulator's failures with a silence in force, then the report's JSON and page.

use std::process::{Command, Output};

use serde_json::Value;
use test_kit::Backends;

fn cli(backends: &Backends, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_batch-triage"))
        .args(args)
        .env_clear()
        .envs(backends.settings())
        .env("USER", "alice")
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_shows_what_a_sweep_stored_alerted_and_muted() {
    let backends = Backends::start().await;
    let out_dir = tempfile::tempdir().unwrap();
    let (backends, report, html, alerts) = tokio::task::spawn_blocking(move || {
        ok(&cli(
            &backends,
            &[
                "silence",
                "add",
                "--match",
                "job=etl",
                "--match",
                "exit_meaning=oom_or_sigkill",
                "--for",
                "1h",
                "--comment",
                "known oom",
            ],
        ));
        ok(&cli(
            &backends,
            &["sweep", "--once", "--since", "1d", "--output", "json"],
        ));
        let out = out_dir.path().to_str().unwrap().to_owned();
        let report: Value = serde_json::from_str(&ok(&cli(
            &backends,
            &["report", "--since", "2h", "--output", "json", "--out", &out],
        )))
        .unwrap();
        let html = std::fs::read_to_string(out_dir.path().join("report.html")).unwrap();
        let alerts = backends.hook.len();
        (backends, report, html, alerts)
    })
    .await
    .unwrap();
    assert!(alerts > 0, "the sweep alerted");
    let total = report["totalFailures"].as_u64().unwrap();
    assert!(total >= 3, "{report}");
    let exit = report["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["class"] == "task.exit_code")
        .expect("exit-code failures");
    let oom = exit["failures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["subject"] == "devbatch1/etl/oom")
        .expect("the oom task is shown");
    assert!(oom["mutedBy"].as_str().unwrap().starts_with("s-"), "{oom}");
    assert!(!oom["diagnosis"]["cause"].as_str().unwrap().is_empty());
    assert!(!oom["preserved"].as_array().unwrap().is_empty());
    assert!(
        report["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["job"] == "etl")
    );
    let sent: u64 = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["sends"].as_u64().unwrap())
        .sum();
    assert_eq!(
        sent as usize, alerts,
        "every alert the receiver got is counted"
    );
    // Both of etl's OOM-or-SIGKILL tasks (oom, sigkill) were muted, each counted once.
    let muted = report["muted"].as_array().unwrap();
    assert_eq!(
        report["silences"][0]["muted"],
        muted.len(),
        "{}",
        report["silences"]
    );
    assert!(
        muted.iter().any(|m| m["subject"] == "devbatch1/etl/oom"),
        "{muted:?}"
    );
    assert!(
        muted
            .iter()
            .all(|m| m["subject"].as_str().unwrap().starts_with("devbatch1/etl/"))
    );
    // The page: the same facts, and nothing it would fetch.
    assert!(html.contains("devbatch1/etl/oom") && html.contains("known oom"));
    assert!(!html.contains("<script") && !html.contains(" src=\""));
    drop(backends);

    // The errors people meet.
    let out = Command::new(env!("CARGO_BIN_EXE_batch-triage"))
        .args(["report"])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BATCH_TRIAGE_STORE"));
}
