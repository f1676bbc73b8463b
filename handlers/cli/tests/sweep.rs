//! `batch-triage sweep` against the Batch emulator (the `emulator` subcommand in another process)
//! and a local-directory store: what a first sweep finds, that a second one does nothing again,
//! the repeating mode stopped by a signal, and the errors people meet first.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use test_kit::{KillOnDrop, start_emulator};

/// The CLI with the settings of a sweep over `address` into `store`, and nothing else.
fn sweep(address: &str, store: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_batch-triage"));
    cmd.arg("sweep")
        .env_clear()
        .env("AZURE_BATCH_ENDPOINT", address)
        .env(
            "AZURE_BATCH_ACCOUNT",
            batch_emulator::WELL_KNOWN_ACCOUNT_NAME,
        )
        .env(
            "AZURE_BATCH_ACCESS_KEY",
            batch_emulator::WELL_KNOWN_ACCOUNT_KEY,
        )
        .env("BATCH_TRIAGE_STORE", store)
        // The built-in scenario has a 2 GiB stdout: capped, it is recorded as skipped.
        .env("BATCH_TRIAGE_MAX_FILE_MIB", "16");
    cmd
}

fn json_lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn subject<'a>(tick: &'a Value, name: &str) -> &'a Value {
    tick["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subject"] == name)
        .unwrap_or_else(|| panic!("{name} not in {tick}"))
}

#[test]
fn a_first_sweep_finds_and_preserves_failures_and_a_second_does_nothing_again() {
    let (_emulator, address) = start_emulator(env!("CARGO_BIN_EXE_batch-triage"), None);
    let store = tempfile::tempdir().unwrap();
    let out = sweep(&address, store.path())
        .args(["--once", "--since", "1d", "--output", "json"])
        .output()
        .unwrap();
    let ticks = json_lines(&out);
    assert_eq!(ticks.len(), 1, "--once sweeps once");
    let first = &ticks[0];
    assert_eq!(first["completed"], true, "{first}");
    assert_eq!(first["skippedBusy"], false);
    assert!(first["jobsExamined"].as_u64().unwrap() >= 5, "{first}");
    let oom = subject(first, "devbatch1/etl/oom");
    assert_eq!(oom["class"], "task.exit_code");
    assert_eq!(oom["outcome"]["status"], "done");
    assert_eq!(oom["alreadyPreserved"], false);
    assert!(
        store
            .path()
            .join("devbatch1/etl/oom/attempt-0/manifest.json")
            .is_file()
    );
    // --since 1d set where the store's first sweep started.
    let since = time::OffsetDateTime::parse(
        first["since"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let age = time::OffsetDateTime::now_utc() - since;
    assert!(
        age > time::Duration::hours(23) && age < time::Duration::hours(25),
        "{age}"
    );
    // Nothing on stderr: no spinner when stderr is not a terminal.
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without --since, the second sweep starts from the cursor the first one left.
    let out = sweep(&address, store.path())
        .args(["--once", "--output", "json"])
        .output()
        .unwrap();
    let second = &json_lines(&out)[0];
    let cursor_start = time::OffsetDateTime::parse(
        second["since"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let age = time::OffsetDateTime::now_utc() - cursor_start;
    assert!(age < time::Duration::minutes(10), "from the cursor: {age}");
    assert!(
        !second["subjects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["subject"] == "devbatch1/etl/oom"),
        "the failure before the cursor is not looked at again: {second}"
    );

    // With --since, it looks back that far whatever the cursor says, and what was handled
    // already is not handled again.
    let out = sweep(&address, store.path())
        .args(["--once", "--since", "1d", "--output", "json"])
        .output()
        .unwrap();
    let third = &json_lines(&out)[0];
    let since = time::OffsetDateTime::parse(
        third["since"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let age = time::OffsetDateTime::now_utc() - since;
    assert!(
        age > time::Duration::hours(23) && age < time::Duration::hours(25),
        "{age}"
    );
    let oom = third["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subject"] == "devbatch1/etl/oom")
        .expect("--since looked past the cursor");
    assert_eq!(oom["alreadyPreserved"], true, "{oom}");
    for s in third["subjects"].as_array().unwrap() {
        if !s["preserved"].as_array().unwrap().is_empty() {
            assert_eq!(s["alreadyPreserved"], true, "{s}");
        }
    }
}

#[test]
fn text_output_is_one_line_per_finding() {
    let (_emulator, address) = start_emulator(env!("CARGO_BIN_EXE_batch-triage"), None);
    let store = tempfile::tempdir().unwrap();
    let out = sweep(&address, store.path())
        .args(["--once", "--since", "1d"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for expected in [
        "swept ",
        "devbatch1/etl/oom: task.exit_code",
        "grouped alerts sent: 0",
        "outbox: 0 delivered",
    ] {
        assert!(text.contains(expected), "{expected:?} missing:\n{text}");
    }
}

#[cfg(unix)]
#[test]
fn without_once_it_repeats_until_interrupted() {
    let (_emulator, address) = start_emulator(env!("CARGO_BIN_EXE_batch-triage"), None);
    let store = tempfile::tempdir().unwrap();
    let mut child = KillOnDrop(
        sweep(&address, store.path())
            .args(["--every", "1s", "--output", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let second: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["completed"], true, "{first}");
    assert_eq!(second["completed"], true, "{second}");
    let status = Command::new("kill")
        .args(["-INT", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still running after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(exit.code(), Some(0));
}

#[test]
fn a_bad_duration_is_a_usage_error_with_examples() {
    let out = Command::new(env!("CARGO_BIN_EXE_batch-triage"))
        .args(["sweep", "--once", "--since", "2 hours"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("e.g. 90s, 5m, 2h"), "{stderr}");
}

#[test]
fn missing_settings_are_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_batch-triage"))
        .args(["sweep", "--once"])
        .env_clear()
        .env("AZURE_BATCH_ENDPOINT", "http://127.0.0.1:9")
        .env("AZURE_BATCH_ACCOUNT", "devbatch1")
        .env(
            "AZURE_BATCH_ACCESS_KEY",
            batch_emulator::WELL_KNOWN_ACCOUNT_KEY,
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("BATCH_TRIAGE_STORE is not set"), "{stderr}");
}

#[test]
fn an_unreachable_account_fails_the_sweep_with_status_1() {
    // Nothing listens on port 9 of loopback: the sweep cannot list jobs, reports it, and asks
    // to be run again.
    let store = tempfile::tempdir().unwrap();
    let out = sweep("http://127.0.0.1:9", store.path())
        .args(["--once", "--output", "json"])
        .env("BATCH_TRIAGE_INVOCATION_SECONDS", "10")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(line["error"].as_str().unwrap().contains("sweep"), "{line}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the next sweep tries again"), "{stderr}");
}
