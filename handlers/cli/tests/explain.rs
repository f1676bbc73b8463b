//! `batch-triage explain` against the Batch emulator (the `emulator` subcommand in another
//! process, its built-in scenario): what it says about a failed task, a job whose preparation
//! task failed, a task whose node is gone, and what it says when it cannot read anything.

use std::process::{Command, Output};

use serde_json::Value;
use test_kit::start_emulator;

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_batch-triage"));
    for var in [
        "AZURE_BATCH_ENDPOINT",
        "AZURE_BATCH_ACCOUNT",
        "AZURE_BATCH_ACCESS_KEY",
        "NO_COLOR",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn explain(address: &str, args: &[&str]) -> Output {
    bin()
        .args(["explain", "--account-url", address])
        .args(args)
        .output()
        .unwrap()
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_failed_task_with_its_meaning_impact_and_stderr_tail() {
    let (_emulator, address) = start_emulator(env!("CARGO_BIN_EXE_batch-triage"), None);
    let out = explain(&address, &["--job", "etl", "--task", "oom"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for expected in [
        "task.exit_code",
        "exit code: 137 (oom_or_sigkill",
        "impact: jobAction terminate, not honoured",
        "stderr.txt (",
        "Killed",
        "python3 train.py",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    assert!(
        !text.contains("\x1b["),
        "no colour when stdout is not a terminal"
    );

    let json = json_of(&explain(
        &address,
        &["--job", "etl", "--task", "oom", "--output", "json"],
    ));
    assert_eq!(json["jobId"], "etl");
    assert_eq!(json["taskId"], "oom");
    assert_eq!(json["diagnoses"][0]["class"], "task.exit_code");
    assert_eq!(json["diagnoses"][0]["exitMeaning"], "oom_or_sigkill");
    assert_eq!(json["diagnoses"][0]["impact"]["jobAction"], "terminate");
    assert_eq!(json["stderrTail"]["available"], true);
    assert_eq!(json["stderrTail"]["from"], 0);
    assert!(
        json["stderrTail"]["text"]
            .as_str()
            .unwrap()
            .contains("Killed")
    );
}

#[test]
fn a_job_whose_preparation_task_failed() {
    let (_emulator, address) = start_emulator(env!("CARGO_BIN_EXE_batch-triage"), None);
    let json = json_of(&explain(
        &address,
        &["--job", "prep-fail", "--output", "json"],
    ));
    let classes: Vec<&str> = json["diagnoses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["class"].as_str().unwrap())
        .collect();
    assert!(classes.contains(&"job.prep_failed"), "{classes:?}");
    assert!(classes.contains(&"job.stuck"), "{classes:?}");
    let nodes = json["prepRelease"].as_array().unwrap();
    let tvm03 = nodes
        .iter()
        .find(|n| n["nodeId"] == "tvm-03")
        .unwrap_or_else(|| panic!("{nodes:?}"));
    assert_eq!(tvm03["jobPreparation"]["exitCode"], 100);
    assert_eq!(tvm03["jobPreparation"]["result"], "failure");
    assert_eq!(json["stderrTail"], Value::Null, "no task, no stderr");

    let out = explain(&address, &["--job", "prep-fail"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("tvm-03 (linux): prep completed, failure, exit code 100"),
        "{text}"
    );
}

#[test]
fn a_job_lists_its_failed_tasks_up_to_the_limit() {
    let (_emulator, address) = start_emulator(env!("CARGO_BIN_EXE_batch-triage"), None);
    let json = json_of(&explain(
        &address,
        &["--job", "etl", "--max-tasks", "2", "--output", "json"],
    ));
    assert_eq!(json["diagnoses"][0]["subject"]["jobId"], "etl");
    assert_eq!(json["failedTasks"].as_array().unwrap().len(), 2);
    assert_eq!(json["moreFailedTasks"], true);
    assert_eq!(json["prepRelease"], Value::Null, "etl has no prep task");
}

#[test]
fn a_task_whose_node_is_gone_says_so() {
    let (_emulator, address) = start_emulator(env!("CARGO_BIN_EXE_batch-triage"), None);
    let json = json_of(&explain(
        &address,
        &["--job", "lost-node", "--task", "t1", "--output", "json"],
    ));
    assert_eq!(json["diagnoses"][0]["class"], "task.exit_code");
    assert_eq!(json["stderrTail"]["available"], false);
    let reason = json["stderrTail"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("NodeNotFound") && reason.contains("gone"),
        "{reason}"
    );
}

#[test]
fn an_unknown_job_or_task_is_a_clear_error_with_status_2() {
    let (_emulator, address) = start_emulator(env!("CARGO_BIN_EXE_batch-triage"), None);
    let out = explain(&address, &["--job", "no-such-job"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("job \"no-such-job\" does not exist") && stderr.contains("JobNotFound"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    let out = explain(&address, &["--job", "etl", "--task", "no-such-task"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("task \"no-such-task\" of job \"etl\" does not exist"),
        "{stderr}"
    );
}

#[test]
fn a_wrong_key_says_what_to_check_and_never_echoes_the_key() {
    let (_emulator, address) = start_emulator(env!("CARGO_BIN_EXE_batch-triage"), None);
    let key = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=";
    let out = bin()
        .args(["explain", "--account-url", &address, "--job", "etl"])
        .env("AZURE_BATCH_ACCOUNT", "devbatch1")
        .env("AZURE_BATCH_ACCESS_KEY", key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refused the Shared Key"), "{stderr}");
    assert!(!stderr.contains(key), "{stderr}");
}

#[test]
fn no_key_and_no_entra_credential_says_what_to_set() {
    // No key, no managed identity, no client secret, and no `az`/`azd` on PATH: the Entra
    // credential fails before any request, so nothing leaves the machine.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_batch-triage"))
        .args([
            "explain",
            "--account-url",
            "https://nosuchaccount.westeurope.batch.azure.com",
            "--job",
            "etl",
        ])
        .env_clear()
        .env("PATH", empty.path())
        .env("HOME", empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "set AZURE_BATCH_ACCESS_KEY",
        "az login",
        "AZURE_CLIENT_SECRET",
    ] {
        assert!(stderr.contains(expected), "{expected:?} missing: {stderr}");
    }
}

#[test]
fn no_account_url_says_what_to_pass() {
    let out = bin().args(["explain", "--job", "etl"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--account-url") && stderr.contains("AZURE_BATCH_ENDPOINT"),
        "{stderr}"
    );
}

#[test]
fn a_large_stderr_is_read_from_its_end_only_and_redacted() {
    // One task whose stderr.txt is 64 MiB, generated by the emulator; its last line carries a
    // SAS signature that must not be printed.
    let scenario = serde_json::json!({
        "pools": [{"id": "linux", "nodes": [{"id": "tvm-01"}]}],
        "jobs": [{
            "job": {"id": "big", "poolInfo": {"poolId": "linux"}, "creationTime": "now-1h"},
            "tasks": [{
                "task": {"id": "noisy", "state": "completed", "creationTime": "now-1h",
                    "commandLine": "/bin/bash -c 'python3 noisy.py'",
                    "executionInfo": {"retryCount": 0, "requeueCount": 0, "startTime": "now-50m",
                        "endTime": "now-10m", "exitCode": 1, "result": "failure",
                        "failureInfo": {"category": "usererror", "code": "FailureExitCode",
                            "message": "The task exited with an exit code representing a failure"}},
                    "nodeInfo": {"poolId": "linux", "nodeId": "tvm-01"}},
                "files": {"stderr.txt": {"generate": {"bytes": 64 << 20, "seed": 3,
                    "tail": "upload to https://st.blob.core.windows.net/c/x?sv=2024-01-01&sig=c2VjcmV0LXNpZw%3D%3D failed\nRuntimeError: the last line\n"}}}
            }]
        }]
    });
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), scenario.to_string()).unwrap();
    let (_emulator, address) =
        start_emulator(env!("CARGO_BIN_EXE_batch-triage"), Some(file.path()));
    let json = json_of(&explain(
        &address,
        &["--job", "big", "--task", "noisy", "--output", "json"],
    ));
    let tail = &json["stderrTail"];
    assert_eq!(tail["fileSize"], 64 << 20);
    assert_eq!(tail["from"], (64 << 20) - 8192);
    let text = tail["text"].as_str().unwrap();
    assert!(text.len() <= 8192, "{}", text.len());
    assert!(text.ends_with("RuntimeError: the last line\n"), "{text}");
    assert!(
        !text.contains("c2VjcmV0LXNpZw"),
        "the SAS signature leaked: {text}"
    );
}

/// A task whose failure message and stderr carry terminal control sequences: `explain`'s text shows them as
/// visible marks (nothing clears the screen, rings, overwrites a line or reverses the text), and
/// its JSON keeps them exactly, escaped as JSON does.
#[test]
fn control_sequences_from_the_task_do_not_reach_the_terminal() {
    let stderr = "step 1\r\u{1b}[2J\u{1b}]0;pwned\u{7}\u{202e}gnp.exe\nTraceback: boom\n";
    let scenario = serde_json::json!({
        "pools": [{"id": "linux", "nodes": [{"id": "tvm-01"}]}],
        "jobs": [{
            "job": {"id": "esc", "poolInfo": {"poolId": "linux"}, "creationTime": "now-1h"},
            "tasks": [{
                "task": {"id": "t1", "state": "completed", "creationTime": "now-1h",
                    "commandLine": "/bin/bash -c 'python3 x.py'",
                    "executionInfo": {"retryCount": 0, "requeueCount": 0, "startTime": "now-50m",
                        "endTime": "now-10m", "exitCode": 1, "result": "failure",
                        "failureInfo": {"category": "usererror", "code": "FailureExitCode",
                            "message": "exit \u{1b}[31mred\u{1b}[0m\r\nforged line"}},
                    "nodeInfo": {"poolId": "linux", "nodeId": "tvm-01"}},
                "files": {"stderr.txt": stderr}
            }]
        }]
    });
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), scenario.to_string()).unwrap();
    let (_emulator, address) =
        start_emulator(env!("CARGO_BIN_EXE_batch-triage"), Some(file.path()));

    let out = explain(&address, &["--job", "esc", "--task", "t1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "a control character reached the terminal: {text:?}"
    );
    assert!(!text.contains('\u{202e}'), "{text:?}");
    assert!(
        text.contains("step 1␍␛[2J␛]0;pwned␇<U+202E>gnp.exe"),
        "{text}"
    );
    assert!(text.contains("  Traceback: boom"), "lines are kept: {text}");
    assert!(
        !text.lines().any(|l| l.starts_with("forged line")),
        "{text}"
    );

    let json = json_of(&explain(
        &address,
        &["--job", "esc", "--task", "t1", "--output", "json"],
    ));
    assert_eq!(
        json["stderrTail"]["text"], stderr,
        "JSON keeps the text exactly"
    );
}
