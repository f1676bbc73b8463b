//! The README's local try-out, checked: cargo-lambda's Runtime API (`cargo lambda watch
//! --only-lambda-apis`, from the PyPI wheel pinned in `tests/requirements.txt`) serves the
//! function binary, and the function is invoked the way `cargo lambda invoke` and cargo-lambda's
//! Function URL emulation call it. cargo-lambda differs from Lambda in two ways this guards: its
//! `Lambda-Runtime-Deadline-Ms` is `600000` (not a Unix time), and it refuses a payload format 2.0
//! response without `cookies`.
//!
//! cargo-lambda is found through `BATCH_TRIAGE_CARGO_LAMBDA`, else beside the test Python
//! (`BATCH_TRIAGE_PYTHON`, else `<workspace>/.venv/bin/`); `scripts/setup-test-deps` installs it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const KEY: &str = "cargo-lambda-test-key-0123456789";

/// Stops a child process when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cargo_lambda() -> PathBuf {
    if let Some(path) = std::env::var_os("BATCH_TRIAGE_CARGO_LAMBDA") {
        return path.into();
    }
    let python = std::env::var_os("BATCH_TRIAGE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate_dir().join("../../.venv/bin/python"));
    let path = python
        .parent()
        .expect("the Python path has a directory")
        .join("cargo-lambda");
    assert!(
        path.exists(),
        "{} does not exist. Run scripts/setup-test-deps, or set BATCH_TRIAGE_CARGO_LAMBDA.",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for_port(port: u16) {
    for _ in 0..300 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cargo lambda watch never listened on {port}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_function_runs_under_cargo_lambda_watch() {
    let emulator = batch_emulator::Emulator::builtin();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let batch_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(batch_emulator::serve(
        listener,
        emulator,
        std::future::pending(),
    ));
    let store = tempfile::tempdir().unwrap();

    // The Runtime API only: the test runs the binary it already built, so cargo-lambda starts
    // no nested build. `--disable-cors` lets OPTIONS reach the function.
    let port = free_port();
    let logs = tempfile::NamedTempFile::new().unwrap();
    let _watch = Running(
        Command::new(cargo_lambda())
            .args(["lambda", "watch", "--only-lambda-apis", "--disable-cors"])
            .args(["-A", "127.0.0.1", "-P", &port.to_string()])
            .arg("--manifest-path")
            .arg(crate_dir().join("Cargo.toml"))
            .current_dir(crate_dir())
            .stdout(Stdio::from(logs.reopen().unwrap()))
            .stderr(Stdio::from(logs.reopen().unwrap()))
            .spawn()
            .unwrap(),
    );
    wait_for_port(port).await;

    let function_logs = tempfile::NamedTempFile::new().unwrap();
    let _function = Running(
        Command::new(env!("CARGO_BIN_EXE_batch-triage-lambda"))
            .env_clear()
            // What cargo-lambda prints for --only-lambda-apis.
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{port}/.rt"),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", "_")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "4096")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AZURE_BATCH_ENDPOINT", &batch_url)
            .env(
                "AZURE_BATCH_ACCOUNT",
                batch_emulator::WELL_KNOWN_ACCOUNT_NAME,
            )
            .env(
                "AZURE_BATCH_ACCESS_KEY",
                batch_emulator::WELL_KNOWN_ACCOUNT_KEY,
            )
            .env("BATCH_TRIAGE_STORE", store.path())
            .env("BATCH_TRIAGE_MAX_FILE_MIB", "16")
            .env("BATCH_TRIAGE_WEBHOOK_KEY", KEY)
            .stdout(Stdio::from(function_logs.reopen().unwrap()))
            .stderr(Stdio::from(function_logs.reopen().unwrap()))
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let context = || {
        format!(
            "cargo-lambda:\n{}\nfunction:\n{}",
            std::fs::read_to_string(logs.path()).unwrap_or_default(),
            std::fs::read_to_string(function_logs.path()).unwrap_or_default()
        )
    };

    // `cargo lambda invoke _ --data-file tests/events/direct-diagnose.json`.
    let event = std::fs::read(crate_dir().join("tests/events/direct-diagnose.json")).unwrap();
    let response = client
        .post(format!("{base}/2015-03-31/functions/_/invocations"))
        .body(event)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{status}: {text}\n{}", context());
    let diagnoses: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(diagnoses[0]["class"], "task.exit_code", "{text}");

    // The Function URL emulation, as Event Grid would call it.
    let delivery = json!([{
        "id": "1", "eventType": "Contoso.Batch.TaskFailed", "subject": "jobs/etl/tasks/oom",
        "eventTime": "2026-11-27T17:05:01Z", "dataVersion": "1.0",
        "data": {"jobId": "etl", "taskId": "oom"}
    }]);
    let url = format!("{base}/lambda-url/_/");
    let response = client
        .post(&url)
        .query(&[("key", KEY)])
        .json(&delivery)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "{text}\n{}", context());
    assert!(
        store
            .path()
            .join("devbatch1/etl/oom/attempt-0/manifest.json")
            .exists(),
        "{text}"
    );

    let response = client
        .post(&url)
        .query(&[("key", "not-the-key-but-just-as-long!")])
        .json(&delivery)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);

    let response = client
        .request(reqwest::Method::OPTIONS, &url)
        .query(&[("key", KEY)])
        .header("WebHook-Request-Origin", "eventgrid.azure.net")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "{}", context());
    assert_eq!(
        response
            .headers()
            .get("webhook-allowed-origin")
            .and_then(|v| v.to_str().ok()),
        Some("eventgrid.azure.net")
    );
}
