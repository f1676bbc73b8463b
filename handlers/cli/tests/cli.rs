//! The `batch-triage` binary as a person or a script uses it: real processes, real files.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_batch-triage"));
    cmd.env("NO_COLOR", "1");
    cmd
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("the binary runs")
}

fn json_diagnoses(output: &Output) -> Vec<serde_json::Value> {
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str::<Vec<serde_json::Value>>(&text)
        .unwrap_or_else(|e| panic!("stdout is not a JSON array ({e}):\n{text}"))
}

#[test]
fn json_output_is_one_array_across_files() {
    let tasks = repo("examples/payloads/render-tasks.json");
    let prep = repo("examples/payloads/genomics-prep-status.json");
    let out = run(&[
        "diagnose",
        "--output",
        "json",
        tasks.to_str().unwrap(),
        prep.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let diagnoses = json_diagnoses(&out);
    // 8 tasks plus the one node whose prep task failed.
    assert_eq!(diagnoses.len(), 9);
    assert_eq!(diagnoses[0]["class"], "task.exit_code");
    assert_eq!(diagnoses[0]["exitMeaning"], "oom_or_sigkill");
    assert_eq!(diagnoses[8]["class"], "job.prep_failed");
    for d in &diagnoses {
        for field in [
            "subject",
            "class",
            "severity",
            "summary",
            "cause",
            "hints",
            "exitCode",
            "exitCodeHex",
            "exitMeaning",
            "failure",
            "impact",
            "logs",
            "fingerprint",
        ] {
            assert!(
                d.get(field).is_some(),
                "field {field} missing (absent facts are null, not missing): {d}"
            );
        }
    }
}

#[test]
fn job_evidence_decides_whether_job_action_is_honoured() {
    let tasks = repo("examples/payloads/render-tasks.json");
    let job = repo("examples/payloads/render-job.json");
    let without = json_diagnoses(&run(&[
        "diagnose",
        "--output",
        "json",
        tasks.to_str().unwrap(),
    ]));
    let with = json_diagnoses(&run(&[
        "diagnose",
        "--output",
        "json",
        "--job",
        job.to_str().unwrap(),
        tasks.to_str().unwrap(),
    ]));
    assert_eq!(
        without[0]["impact"]["jobActionHonoured"],
        serde_json::Value::Null
    );
    assert_eq!(with[0]["impact"]["jobActionHonoured"], true);
}

#[test]
fn prep_status_evidence_marks_waiting_tasks_prep_blocked() {
    let dir = tempfile::tempdir().unwrap();
    let task = dir.path().join("task.json");
    std::fs::copy(
        repo("shared/diagnosis/test_data/active-on-prep-failed-node.json"),
        &task,
    )
    .unwrap();
    let prep = repo("examples/payloads/genomics-prep-status.json");
    let plain = json_diagnoses(&run(&[
        "diagnose",
        "--output",
        "json",
        task.to_str().unwrap(),
    ]));
    assert_eq!(plain[0]["class"], "task.in_progress");
    let with = json_diagnoses(&run(&[
        "diagnose",
        "--output",
        "json",
        "--prep-status",
        prep.to_str().unwrap(),
        task.to_str().unwrap(),
    ]));
    assert_eq!(with[0]["class"], "task.prep_blocked");
    assert_eq!(with[0]["severity"], "critical");
}

#[test]
fn text_output_reads_like_a_report() {
    let out = run(&[
        "diagnose",
        repo("examples/payloads/eventhub-records.json")
            .to_str()
            .unwrap(),
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("task.exit_code  Task train-17 of job render failed with exit code 137"),
        "{text}"
    );
    assert!(
        text.contains("PoolResizeCompleteEvent of pool gpu-pool: no failure"),
        "{text}"
    );
    assert!(
        text.contains("7 diagnoses (1 critical, 3 error, 3 info)"),
        "{text}"
    );
    assert!(
        !text.contains("\x1b["),
        "no colour when NO_COLOR is set or stdout is not a terminal"
    );
}

#[test]
fn pool_and_node_bodies_lists_and_events_are_diagnosed() {
    let files = [
        "tests/corpus/real-payloads/18-msdocs-support-pool-allocation-failed-provider-error-json.json",
        "tests/corpus/real-payloads/21-msdocs-support-node-unusable-diskfull.json",
        "shared/diagnosis/test_data/pool-resize-lowpri-quota-list.json",
        "shared/diagnosis/test_data/node-unusable-diskfull-list.json",
        "shared/diagnosis/test_data/pool-events-resize-and-autoscale.json",
        "shared/diagnosis/test_data/pool-delete-stuck.json",
        "shared/diagnosis/test_data/node-start-task-failed-no-wait.json",
    ];
    let paths: Vec<String> = files
        .iter()
        .map(|f| repo(f).to_str().unwrap().to_owned())
        .collect();
    let mut args = vec!["diagnose", "--output", "json"];
    args.extend(paths.iter().map(String::as_str));
    let out = run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let classes: Vec<String> = json_diagnoses(&out)
        .iter()
        .map(|d| d["class"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        classes,
        [
            "pool.resize_failed",
            "node.unusable",
            "pool.resize_failed",
            "pool.resize_failed",
            "node.unusable",
            "node.unusable",
            "pool.resize_failed",
            "pool.autoscale_failed",
            // The pool has been deleting since 2026-12-04, measured against the clock now.
            "pool.delete_stuck",
            "node.start_task_failed",
        ]
    );

    // A pool with two problems shows both, and text output names them and what was healthy.
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool.json");
    std::fs::write(
        &pool,
        r#"{"value": [{"id": "p", "url": "https://acct.westeurope.batch.azure.com/pools/p",
            "resizeErrors": [{"code": "AllocationTimedout", "message": "timed out \u001b[2J<b>bold</b>"}],
            "enableAutoScale": true,
            "autoScaleRun": {"error": {"code": "AutoScalingFormulaEvaluationError", "message": "bad"}}},
           {"id": "q", "url": "https://acct.westeurope.batch.azure.com/pools/q", "state": "active"}]}"#,
    )
    .unwrap();
    let out = run(&["diagnose", pool.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("pool.resize_failed"), "{text}");
    assert!(text.contains("pool.autoscale_failed"), "{text}");
    assert!(
        text.contains("pool q: no resize, autoscale or delete failure"),
        "{text}"
    );
    assert!(text.contains("a List Pools response"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "control characters are made inert: {text}"
    );
}

#[test]
fn stdin_is_read_with_a_dash() {
    let mut child = bin()
        .args(["diagnose", "--output", "json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let payload = std::fs::read(repo("examples/payloads/nightly-job.json")).unwrap();
    child.stdin.take().unwrap().write_all(&payload).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(json_diagnoses(&out)[0]["class"], "job.timeout");
}

#[test]
fn unreadable_input_gets_one_clear_line_and_the_rest_is_still_diagnosed() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"id\": \"t\",\n \"state\" \"completed\"}").unwrap();
    let good = repo("examples/payloads/nightly-job.json");
    let out = run(&[
        "diagnose",
        "--output",
        "json",
        bad.to_str().unwrap(),
        good.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line, no backtrace: {stderr}"
    );
    assert!(stderr.contains("bad.json: not valid JSON"), "{stderr}");
    assert!(stderr.contains("line 2, column 10"), "{stderr}");
    assert_eq!(
        json_diagnoses(&out).len(),
        1,
        "the good file is still diagnosed and the array stays valid"
    );
}

#[test]
fn errors_for_missing_files_directories_and_non_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let missing = run(&["diagnose", dir.path().join("nope.json").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.json: cannot open"));
    let directory = run(&["diagnose", dir.path().to_str().unwrap()]);
    assert_eq!(directory.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&directory.stderr).contains("is a directory"));
    let other = dir.path().join("other.json");
    std::fs::write(&other, r#"{"name": "not batch"}"#).unwrap();
    let not_batch = run(&["diagnose", other.to_str().unwrap()]);
    assert_eq!(not_batch.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&not_batch.stderr)
            .contains("not a Batch payload batch-triage recognises")
    );
    let bad_job = run(&[
        "diagnose",
        "--job",
        other.to_str().unwrap(),
        other.to_str().unwrap(),
    ]);
    assert_eq!(
        bad_job.status.code(),
        Some(2),
        "a bad --job is a usage error"
    );
    assert!(String::from_utf8_lossy(&bad_job.stderr).starts_with("batch-triage: --job"));
    let usage = run(&["diagnose"]);
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn help_has_examples() {
    let out = run(&["diagnose", "--help"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("Examples:") && text.contains("--prep-status"),
        "{text}"
    );
}

/// `batch-triage emulator` as a newcomer runs it: start it, read the address it prints, and list
/// the built-in scenario's jobs with the well-known account through our client.
#[test]
fn the_emulator_subcommand_serves_the_builtin_scenario() {
    use batch_client::{BatchApi, BatchClient, BatchConfig, Deadline, ListOptions, Secret, items};
    use futures::TryStreamExt;

    // The stdout is kept open until the end of the test (a separate test covers a closed one).
    let (_emulator, address, stdout) =
        test_kit::spawn_announced(bin().args(["emulator", "--port", "0"]));

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let jobs: Vec<String> = runtime.block_on(async {
        let config = BatchConfig::shared_key(
            &address,
            batch_emulator::WELL_KNOWN_ACCOUNT_NAME,
            Secret::new(batch_emulator::WELL_KNOWN_ACCOUNT_KEY),
        )
        .unwrap();
        let client = BatchClient::new(config).unwrap();
        let pages = client.list_jobs(
            &ListOptions::default(),
            Deadline::after(std::time::Duration::from_secs(30)),
        );
        items(pages)
            .map_ok(|j| j.id.unwrap_or_default())
            .try_collect()
            .await
            .unwrap()
    });
    for expected in ["etl", "prep-fail", "nightly", "failfast"] {
        assert!(
            jobs.iter().any(|j| j == expected),
            "job {expected} missing from {jobs:?}"
        );
    }
    drop(stdout);
}

/// Whoever starts the emulator may stop reading its output; the server keeps serving.
#[test]
fn the_emulator_survives_a_closed_stdout() {
    use std::io::{BufRead, BufReader};

    let mut child = bin()
        .args(["emulator", "--port", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    let address = first_line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .trim_start_matches("http://")
        .to_owned();
    // The reader is gone; give the server time to write the rest of its banner into the closed pipe.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let alive = child.try_wait().unwrap().is_none();
    let connects = std::net::TcpStream::connect(&address).is_ok();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        alive && connects,
        "the emulator died when its stdout closed"
    );
}
