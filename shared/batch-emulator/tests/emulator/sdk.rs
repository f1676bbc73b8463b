//! The official Python SDK against the emulator.
//!
//! Runs `tests/sdk_check.py` with the workspace venv's Python (`BATCH_TRIAGE_PYTHON`, default
//! `<workspace>/.venv/bin/python`, made by `scripts/setup-test-deps`). A missing venv fails the
//! test with instructions instead of skipping it.

use std::path::PathBuf;

use batch_emulator::{NodeActionKind, WELL_KNOWN_ACCOUNT_KEY, WELL_KNOWN_ACCOUNT_NAME};

use crate::common::Server;

fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("BATCH_TRIAGE_PYTHON") {
        return PathBuf::from(path);
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    workspace.join(".venv/bin/python")
}

#[tokio::test]
async fn official_python_sdk_works_against_the_emulator() {
    let python = python();
    let probe = tokio::process::Command::new(&python)
        .args(["-c", "import azure.batch"])
        .output()
        .await;
    match probe {
        Ok(output) if output.status.success() => {}
        other => panic!(
            "cannot import azure.batch with {} ({other:?}); run scripts/setup-test-deps to create the venv, \
             or set BATCH_TRIAGE_PYTHON to a python with azure-batch==15.1.0",
            python.display()
        ),
    }
    let server = Server::builtin().await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk_check.py");
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .args([
            &server.base,
            WELL_KNOWN_ACCOUNT_NAME,
            WELL_KNOWN_ACCOUNT_KEY,
        ])
        .output()
        .await
        .expect("run sdk_check.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("sdk_check: OK"),
        "sdk_check.py failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}\nrequests:\n{:#?}",
        output.status,
        server
            .emulator
            .requests()
            .iter()
            .filter(|r| r.status >= 400)
            .collect::<Vec<_>>()
    );
    // The SDK signed with Shared Key, used the api-version it defaults to, and read ranges.
    let log = server.emulator.requests();
    assert!(
        log.iter()
            .all(|r| r.path_and_query.contains("api-version=2025-06-01"))
    );
    assert!(
        log.iter()
            .any(|r| r.ocp_range.as_deref() == Some("bytes=0-4"))
    );
    assert!(
        log.iter()
            .filter(|r| r.status < 400)
            .all(|r| r.auth_scheme.as_deref() == Some("SharedKey"))
    );
    // The SDK's node actions were carried out, and its agent log upload answered.
    let actions: Vec<_> = server
        .emulator
        .node_actions()
        .into_iter()
        .map(|a| (a.kind, a.node_id, a.option))
        .collect();
    assert_eq!(
        actions,
        [
            (
                NodeActionKind::Remove,
                "tvm-1695681911_1-20261204t080000z".to_owned(),
                "requeue".to_owned()
            ),
            (
                NodeActionKind::Reimage,
                "tvm-1695681911_5-20261204t080000z".to_owned(),
                "requeue".to_owned()
            ),
        ]
    );
    let uploads = server.emulator.agent_log_uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(
        uploads[0].identity_reference.as_deref(),
        Some("/subscriptions/s/uami")
    );
}
