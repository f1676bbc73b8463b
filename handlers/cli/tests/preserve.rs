//! `batch-triage preserve` end to end: the `emulator` subcommand in one process, `preserve` in
//! another, files checked against what the emulator serves.

use std::process::Command;
use std::time::Duration;

use batch_client::{
    BatchApi, BatchClient, BatchConfig, Deadline, DownloadOptions, FileRef, Secret,
};
use futures::StreamExt;
use test_kit::start_emulator;

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_batch-triage"));
    for var in [
        "AZURE_BATCH_ENDPOINT",
        "AZURE_BATCH_ACCOUNT",
        "AZURE_BATCH_ACCESS_KEY",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn served(address: &str, file: FileRef) -> Vec<u8> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let config = BatchConfig::shared_key(
            address,
            batch_emulator::WELL_KNOWN_ACCOUNT_NAME,
            Secret::new(batch_emulator::WELL_KNOWN_ACCOUNT_KEY),
        )
        .unwrap();
        let client = BatchClient::new(config).unwrap();
        let deadline = Deadline::after(Duration::from_secs(30));
        let mut download = client
            .download_file(&file, &DownloadOptions::default(), deadline)
            .await
            .unwrap();
        let mut bytes = Vec::new();
        while let Some(chunk) = download.next().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        bytes
    })
}

#[test]
fn preserve_one_task_and_prep_output_into_a_directory() {
    let (_emulator, address) = start_emulator(env!("CARGO_BIN_EXE_batch-triage"), None);
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().to_str().unwrap();
    let out = bin()
        .args([
            "preserve",
            "--account-url",
            &address,
            "--job",
            "prep",
            "--to",
            to,
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let folders = json.as_array().unwrap();
    let prefixes: Vec<_> = folders
        .iter()
        .map(|f| f["prefix"].as_str().unwrap())
        .collect();
    for expected in [
        "devbatch1/prep/_jobprep/tvm-01",
        "devbatch1/prep/_jobrelease/tvm-02",
    ] {
        assert!(prefixes.contains(&expected), "{prefixes:?}");
    }
    let prep = dir.path().join("devbatch1/prep/_jobprep/tvm-01");
    assert!(prep.join("manifest.json").is_file());

    // One task, text output, files identical to what the emulator serves.
    let out = bin()
        .args([
            "preserve",
            "--account-url",
            &address,
            "--job",
            "etl",
            "--task",
            "oom",
            "--to",
            to,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("task oom: preserved, 2 file(s) → "),
        "{text}"
    );
    let folder = dir.path().join("devbatch1/etl/oom/attempt-0");
    for name in ["stdout.txt", "stderr.txt"] {
        let copied = std::fs::read(folder.join(name)).unwrap();
        assert_eq!(
            copied,
            served(&address, FileRef::task("etl", "oom", name)),
            "{name}"
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["files"].as_array().unwrap().len(), 2);
    assert!(folder.join("diagnosis.json").is_file());

    // Again: nothing to copy.
    let out = bin()
        .args([
            "preserve",
            "--account-url",
            &address,
            "--job",
            "etl",
            "--task",
            "oom",
            "--to",
            to,
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("task oom: already preserved")
    );
}

#[test]
fn preserve_errors_say_what_to_do() {
    let out = bin()
        .args(["preserve", "--job", "etl", "--to", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("--account-url") && err.contains("AZURE_BATCH_ENDPOINT"),
        "{err}"
    );

    let out = bin().args(["preserve", "--job", "etl"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("--to"));

    let (_emulator, address) = start_emulator(env!("CARGO_BIN_EXE_batch-triage"), None);
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args([
            "preserve",
            "--account-url",
            &address,
            "--job",
            "no-such-job",
            "--to",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("cannot read job \"no-such-job\"") && err.contains("JobNotFound"),
        "{err}"
    );
}

#[test]
fn preserve_to_a_store_that_refuses_connections_fails_plainly_without_retrying() {
    let (_emulator, address) = start_emulator(env!("CARGO_BIN_EXE_batch-triage"), None);
    // A loopback port with nothing listening on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = format!(
        "UseDevelopmentStorage=true;BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;Container=logs"
    );
    let out = bin()
        .args([
            "preserve",
            "--account-url",
            &address,
            "--job",
            "etl",
            "--task",
            "oom",
            "--to-blob",
            &store,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("preserving task oom") && err.contains("connection refused"),
        "{err}"
    );
    assert!(
        !err.contains("retry"),
        "a refused connection was retried: {err}"
    );
    assert!(!err.contains("sig="), "{err}");
}
