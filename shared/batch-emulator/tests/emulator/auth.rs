//! Shared Key and bearer authentication, and the failure bodies.

use batch_emulator::{Scenario, WELL_KNOWN_ACCOUNT_KEY};
use reqwest::Method;

use crate::common::{API, Server, expect_error};

const OTHER_KEY: &str = "c2VjcmV0LWtleS10aGF0LWlzLW5vdC10aGUtYWNjb3VudC1rZXk=";

#[tokio::test]
async fn wrong_key_gets_authentication_failed_with_detail() {
    let server = Server::builtin().await;
    let response = server
        .request(Method::GET, &format!("/jobs?{API}"))
        .key(OTHER_KEY)
        .send()
        .await;
    let body = expect_error(response, 403, "AuthenticationFailed").await;
    assert_eq!(body["values"][0]["key"], "AuthenticationErrorDetail");
    let detail = body["values"][0]["value"].as_str().unwrap();
    assert!(
        detail.contains("Server used following string to sign: 'GET\n"),
        "{detail}"
    );
    assert!(
        detail.contains("/devbatch1/jobs\napi-version:2025-06-01"),
        "{detail}"
    );
    let text = body.to_string();
    assert!(!text.contains(WELL_KNOWN_ACCOUNT_KEY));
    assert!(!text.contains(OTHER_KEY));
    let log = server.emulator.requests();
    assert_eq!(log[0].status, 403);
    assert_eq!(log[0].auth_scheme, None);
}

#[tokio::test]
async fn signed_requests_with_bodies_and_odd_params_pass() {
    let server = Server::builtin().await;
    // timeOut keeps its casing in the signature (Python SDK style); ocp-range is signed as an
    // ocp- header; a body's Content-Type and Content-Length are signed as sent.
    let response = server
        .request(
            Method::GET,
            &format!("/jobs/etl/tasks/oom/files/stderr.txt?{API}&timeOut=30"),
        )
        .header("ocp-range", "bytes=0-3")
        .send()
        .await;
    assert_eq!(response.status(), 200);
    let response = server
        .request(Method::POST, &format!("/jobs/ingest/disable?{API}"))
        .json(&serde_json::json!({"disableTasks": "wait"}))
        .send()
        .await;
    assert_eq!(response.status(), 202);
}

#[tokio::test]
async fn missing_or_stale_credentials_are_refused() {
    let server = Server::builtin().await;
    let body = expect_error(
        server
            .request(Method::GET, &format!("/jobs?{API}"))
            .unsigned()
            .send()
            .await,
        403,
        "AuthenticationFailed",
    )
    .await;
    assert!(
        body["values"][0]["value"]
            .as_str()
            .unwrap()
            .contains("no Authorization")
    );

    let stale = httpdate::fmt_http_date(
        std::time::SystemTime::now() - std::time::Duration::from_secs(16 * 60),
    );
    let body = expect_error(
        server
            .request(Method::GET, &format!("/jobs?{API}"))
            .header("ocp-date", &stale)
            .send()
            .await,
        403,
        "AuthenticationFailed",
    )
    .await;
    assert!(
        body["values"][0]["value"]
            .as_str()
            .unwrap()
            .contains("too old")
    );

    // A signature over a different path does not authorize this one.
    let url = reqwest::Url::parse(&format!("{}/jobs/etl?{API}", server.base)).unwrap();
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let headers = vec![("ocp-date".to_owned(), date.clone())];
    let signature = crate::common::sign(WELL_KNOWN_ACCOUNT_KEY, &Method::GET, &url, &headers);
    let response = server
        .request(Method::GET, &format!("/jobs/nightly?{API}"))
        .unsigned()
        .header("ocp-date", &date)
        .header("authorization", &format!("SharedKey devbatch1:{signature}"))
        .send()
        .await;
    expect_error(response, 403, "AuthenticationFailed").await;
}

#[tokio::test]
async fn bearer_tokens_when_configured() {
    let mut scenario = Scenario::builtin();
    scenario.auth.bearer_tokens = vec!["dev-token".into()];
    let server = Server::start(scenario).await;
    let response = server
        .request(Method::GET, &format!("/jobs?{API}"))
        .unsigned()
        .header("authorization", "Bearer dev-token")
        .send()
        .await;
    assert_eq!(response.status(), 200);
    let body = expect_error(
        server
            .request(Method::GET, &format!("/jobs?{API}"))
            .unsigned()
            .header("authorization", "Bearer wrong-token")
            .send()
            .await,
        401,
        "InvalidAuthenticationToken",
    )
    .await;
    assert!(!body.to_string().contains("wrong-token"));
    assert_eq!(
        server.emulator.requests()[0].auth_scheme.as_deref(),
        Some("Bearer")
    );

    // Without configured tokens, bearer auth is refused.
    let plain = Server::builtin().await;
    expect_error(
        plain
            .request(Method::GET, &format!("/jobs?{API}"))
            .unsigned()
            .header("authorization", "Bearer dev-token")
            .send()
            .await,
        401,
        "InvalidAuthenticationToken",
    )
    .await;
}
