//! Managed identity as on Azure Functions: `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` point at the
//! App Service identity endpoint. The process environment cannot be changed safely inside a test,
//! so the `list_jobs` example runs as a child process with that environment, against a mock
//! identity endpoint and an emulator that accepts only the token the mock hands out.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use batch_emulator::{Emulator, Scenario};

const TOKEN: &str = "mi-token-from-the-mock-identity-endpoint";
const IDENTITY_HEADER: &str = "identity-header-secret";

/// The path of an example binary of this crate, built first if `cargo test` did not (it does not
/// when a single test target is selected).
fn example(name: &str) -> PathBuf {
    // Test binaries live in target/<profile>/deps; examples are built beside them.
    let deps = std::env::current_exe().expect("test binary path");
    let path = deps
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("examples")
        .join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "batch-triage-batch-client",
                "--example",
                name,
            ])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the {name} example failed");
    }
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn managed_identity_tokens_reach_batch() {
    // The mock identity endpoint records what it was asked.
    type Seen = Arc<Mutex<Vec<(Option<String>, Option<String>, Option<String>)>>>;
    let seen: Seen = Arc::default();
    let identity = axum::Router::new()
        .route(
            "/msi/token",
            get(|State(seen): State<Seen>, headers: HeaderMap, Query(q): Query<std::collections::HashMap<String, String>>| async move {
                let header = headers.get("x-identity-header").and_then(|v| v.to_str().ok()).map(str::to_owned);
                seen.lock().unwrap().push((header.clone(), q.get("resource").cloned(), q.get("api-version").cloned()));
                if header.as_deref() != Some(IDENTITY_HEADER) {
                    return (StatusCode::BAD_REQUEST, "missing X-IDENTITY-HEADER".to_owned());
                }
                let expires = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
                let body = serde_json::json!({"access_token": TOKEN, "expires_on": expires.to_string(),
                    "resource": "https://batch.core.windows.net/", "token_type": "Bearer"});
                (StatusCode::OK, body.to_string())
            }),
        )
        .with_state(seen.clone());
    let identity_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let identity_addr = identity_listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(identity_listener, identity).await });

    // An account that refuses Shared Key and accepts only the managed identity's token.
    let scenario = Scenario::from_json_str(
        &serde_json::json!({
            "auth": {"sharedKey": false, "bearerTokens": [TOKEN]},
            "pools": [{"id": "p", "nodes": [{"id": "n"}]}],
            "jobs": [{"job": {"id": "from-managed-identity", "poolInfo": {"poolId": "p"}}}]
        })
        .to_string(),
    )
    .unwrap();
    let emulator = Emulator::new(scenario).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let batch_addr = listener.local_addr().unwrap();
    tokio::spawn(batch_emulator::serve(
        listener,
        emulator.clone(),
        std::future::pending(),
    ));

    let output = tokio::task::spawn_blocking(move || {
        Command::new(example("list_jobs"))
            .env_remove("AZURE_BATCH_ACCESS_KEY")
            .env_remove("AZURE_CLIENT_ID")
            .env_remove("AZURE_CLIENT_SECRET")
            .env("AZURE_BATCH_ENDPOINT", format!("http://{batch_addr}"))
            .env("AZURE_BATCH_ACCOUNT", "devbatch1")
            .env(
                "IDENTITY_ENDPOINT",
                format!("http://{identity_addr}/msi/token"),
            )
            .env("IDENTITY_HEADER", IDENTITY_HEADER)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "list_jobs failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("from-managed-identity"), "{stdout}");

    let seen = seen.lock().unwrap().clone();
    assert!(
        !seen.is_empty(),
        "the identity endpoint was asked for a token"
    );
    let (header, resource, api_version) = &seen[0];
    assert_eq!(header.as_deref(), Some(IDENTITY_HEADER));
    assert_eq!(
        resource.as_deref(),
        Some("https://batch.core.windows.net/"),
        "the Batch resource, from scope https://batch.core.windows.net//.default"
    );
    assert_eq!(api_version.as_deref(), Some("2019-08-01"));
    let authed = emulator
        .requests()
        .iter()
        .filter(|r| r.path_and_query.starts_with("/jobs") && r.status == 200)
        .count();
    assert!(authed >= 1, "Batch was called with the token");
    assert!(
        !stderr.contains(TOKEN) && !stdout.contains(TOKEN),
        "the token never reaches output"
    );
}

/// The developer tools credential, as on a laptop: with no key and no managed identity, the token
/// comes from the Azure CLI (`az account get-access-token`). A stand-in `az` on PATH answers the
/// way the real one does, and records the scope it was asked for.
#[tokio::test(flavor = "multi_thread")]
async fn developer_tools_tokens_come_from_the_azure_cli() {
    const CLI_TOKEN: &str = "token-from-the-azure-cli";
    let bin_dir = tempfile::tempdir().unwrap();
    let asked = bin_dir.path().join("asked.txt");
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let script = format!(
        "#!/bin/sh\necho \"$@\" > '{}'\necho '{{\"accessToken\": \"{CLI_TOKEN}\", \"expiresOn\": \"2099-01-01 00:00:00.000000\", \"expires_on\": {expires}, \"tokenType\": \"Bearer\"}}'\n",
        asked.display()
    );
    let az = bin_dir.path().join("az");
    std::fs::write(&az, script).unwrap();
    std::fs::set_permissions(&az, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let scenario = Scenario::from_json_str(
        &serde_json::json!({
            "auth": {"sharedKey": false, "bearerTokens": [CLI_TOKEN]},
            "pools": [{"id": "p", "nodes": [{"id": "n"}]}],
            "jobs": [{"job": {"id": "from-the-azure-cli", "poolInfo": {"poolId": "p"}}}]
        })
        .to_string(),
    )
    .unwrap();
    let emulator = Emulator::new(scenario).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let batch_addr = listener.local_addr().unwrap();
    tokio::spawn(batch_emulator::serve(
        listener,
        emulator,
        std::future::pending(),
    ));

    let path = format!(
        "{}:{}",
        bin_dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new(example("list_jobs"))
            .env_remove("AZURE_BATCH_ACCESS_KEY")
            .env_remove("IDENTITY_ENDPOINT")
            .env_remove("IDENTITY_HEADER")
            .env_remove("AZURE_CLIENT_SECRET")
            .env("PATH", path)
            .env("AZURE_BATCH_ENDPOINT", format!("http://{batch_addr}"))
            .env("AZURE_BATCH_ACCOUNT", "devbatch1")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "list_jobs failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("from-the-azure-cli"), "{stdout}");
    let asked = std::fs::read_to_string(asked).unwrap();
    assert!(
        asked.contains("get-access-token")
            && asked.contains("https://batch.core.windows.net//.default"),
        "az was asked: {asked}"
    );
}
