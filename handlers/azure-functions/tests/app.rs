//! The custom handler's router in process (`tower::ServiceExt::oneshot`), in front of the Batch
//! emulator, a local-directory store and a webhook receiver: the routes, the retry-or-acknowledge
//! verdicts and the limits. `host.rs` drives the binary as the Functions host does.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use batch_emulator::{Fault, FaultRule};
use batch_triage_azure_functions::app::{AppState, BODY_LIMIT, app};
use pipeline::settings::Settings;
use serde_json::{Value, json};
use test_kit::Backends;
use tower::ServiceExt;

async fn state() -> (AppState, Backends) {
    let backends = Backends::start().await;
    let triage = Settings::from_env(|name| backends.setting(name))
        .unwrap()
        .build()
        .unwrap();
    let state = AppState {
        triage: Arc::new(triage),
        budget: Duration::from_secs(30),
    };
    (state, backends)
}

async fn call(state: &AppState, request: Request<Body>) -> (StatusCode, Value) {
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    (status, body)
}

async fn invoke(state: &AppState, function: &str, body: &Value) -> (StatusCode, Value) {
    let request = Request::post(format!("/{function}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    call(state, request).await
}

/// An Event Hubs invocation (dataType string, cardinality many) of one body, on a first
/// attempt of five retries.
fn event_hubs(body: &str) -> Value {
    event_hubs_at(body, 0, 5)
}

/// The same at retry `retry` of `max`.
fn event_hubs_at(body: &str, retry: i64, max: i64) -> Value {
    json!({"Data": {"events": serde_json::to_string(&[body]).unwrap()},
        "Metadata": {"sys": {"MethodName": "TaskEvents"},
            "PartitionContext": {"EventHubName": "batch-logs", "PartitionId": "0"},
            "SequenceNumberArray": "[41]",
            "RetryContext": {"RetryCount": retry, "MaxRetryCount": max}}})
}

fn task_failed(job: &str, task: &str) -> String {
    json!({"records": [{
        "resourceId": "/SUBSCRIPTIONS/0/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.BATCH/BATCHACCOUNTS/DEVBATCH1/",
        "category": "ServiceLog", "operationName": "TaskFailEvent",
        "properties": {"jobId": job, "id": task, "taskType": "User",
            "executionInfo": {"exitCode": 137, "retryCount": 0, "requeueCount": 0, "result": "Failure"}}
    }]})
    .to_string()
}

#[tokio::test]
async fn readiness_answers_and_unknown_routes_and_methods_are_refused() {
    let (state, _backends) = state().await;
    let (status, body) = call(&state, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "batch-triage ready");
    let (status, _) = invoke(&state, "NoSuchFunction", &json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(
        &state,
        Request::get("/TaskEvents").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_task_failure_is_alerted_once_however_often_it_is_delivered() {
    let (state, backends) = state().await;
    let invocation = event_hubs(&task_failed("etl", "oom"));
    for _ in 0..3 {
        let (status, body) = invoke(&state, "TaskEvents", &invocation).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["Logs"].to_string().contains("oom"), "{body}");
    }
    assert_eq!(backends.hook.len(), 1, "three deliveries, one alert");
    let alert = &backends.hook.alerts()[0];
    assert_eq!(alert["diagnosis"]["subject"]["taskId"], "oom", "{alert}");
}

#[tokio::test]
async fn a_transient_batch_failure_is_500_so_the_host_retries() {
    let (state, backends) = state().await;
    backends
        .emulator
        .add_fault(FaultRule::new(Fault::InternalError).path_prefix("/jobs/etl/tasks/oom"));
    let (status, _) = invoke(
        &state,
        "TaskEvents",
        &event_hubs(&task_failed("etl", "oom")),
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        backends.hook.is_empty(),
        "nothing is alerted before the task is read"
    );
}

#[tokio::test]
async fn only_the_last_attempt_parks_and_forever_never_does() {
    let (state, backends) = state().await;
    backends
        .emulator
        .add_fault(FaultRule::new(Fault::InternalError).path_prefix("/jobs/etl/tasks/oom"));
    let parked = || {
        backends
            .stored_files()
            .into_iter()
            .filter(|f| f.starts_with("parked/"))
            .collect::<Vec<_>>()
    };
    for (retry, max) in [(4, 5), (9, -1)] {
        let (status, _) = invoke(
            &state,
            "TaskEvents",
            &event_hubs_at(&task_failed("etl", "oom"), retry, max),
        )
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{retry}/{max}");
        assert!(parked().is_empty(), "{retry}/{max}");
    }
    let (status, body) = invoke(
        &state,
        "TaskEvents",
        &event_hubs_at(&task_failed("etl", "oom"), 5, 5),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        parked(),
        ["parked/eventhubs/batch-logs/0/00000000000000000041.json"]
    );
    // Without a retry policy the first failure is the last: parked too, by its hash.
    let no_policy = json!({"Data": {"events": serde_json::to_string(&[task_failed("etl", "sigkill").replace("137", "9")]).unwrap()}});
    backends
        .emulator
        .add_fault(FaultRule::new(Fault::InternalError).path_prefix("/jobs/etl/tasks/sigkill"));
    let (status, body) = invoke(&state, "TaskEvents", &no_policy).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(parked().len(), 2, "{:?}", parked());
    assert!(backends.hook.is_empty());
}

#[tokio::test]
async fn poison_input_is_acknowledged_with_a_log_never_retried() {
    let (state, backends) = state().await;
    for (invocation, says) in [
        (json!("not an envelope"), "not the host's JSON envelope"),
        (json!({"Data": {"events": 5}}), "ignored"),
        (event_hubs("{\"records\": ["), "unreadable payload"),
        (event_hubs("{\"records\": [{}, {}]}"), ""),
    ] {
        let (status, body) = invoke(&state, "TaskEvents", &invocation).await;
        assert_eq!(status, StatusCode::OK, "{invocation}: {body}");
        assert!(
            body["Logs"].to_string().contains(says),
            "{invocation}: {body}"
        );
    }
    // Another account's event is refused without a Batch read.
    let forged = task_failed("etl", "oom").replace("DEVBATCH1", "SOMEONEELSE");
    let before = backends.emulator.requests().len();
    let (status, body) = invoke(&state, "TaskEvents", &event_hubs(&forged)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["Logs"].to_string().contains("Refused"), "{body}");
    assert_eq!(backends.emulator.requests().len(), before);
    assert!(backends.hook.is_empty());
}

/// The body is read up to the limit and no further. (A declared `Content-Length` over the limit
/// is not refused before reading: the host is the only caller, on loopback.)
#[tokio::test]
async fn an_invocation_over_the_limit_is_413() {
    static MIB: [u8; 1 << 20] = [b' '; 1 << 20];
    let (state, _backends) = state().await;
    let chunks = (BODY_LIMIT >> 20) + 1;
    let request = Request::post("/TaskEvents")
        .body(Body::from_stream(futures::stream::iter((0..chunks).map(
            |_| Ok::<_, std::io::Error>(axum::body::Bytes::from_static(&MIB)),
        ))))
        .unwrap();
    let (status, body) = call(&state, request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
}

#[tokio::test]
async fn diagnose_answers_through_the_http_output_binding() {
    let (state, _backends) = state().await;
    let request = |body: &str| {
        json!({"Data": {"req": {"Url": "https://app.azurewebsites.net/api/Diagnose", "Method": "POST",
            "Query": {}, "Headers": {"Content-Type": ["application/json"]}, "Params": {},
            "Body": body, "Identities": []}}, "Metadata": {"sys": {}}})
    };
    for (body, expected) in [
        (r#"{"jobId":"etl","taskId":"oom"}"#, 200),
        (r#"{"jobId":"no-such-job","taskId":"x"}"#, 404),
        (r#"{"taskId":"x"}"#, 400),
        ("not json", 400),
    ] {
        let (status, response) = invoke(&state, "Diagnose", &request(body)).await;
        assert_eq!(status, StatusCode::OK, "{response}");
        let res = &response["Outputs"]["res"];
        assert_eq!(res["statusCode"], expected, "{body}: {response}");
    }
}

#[tokio::test]
async fn two_accounts_from_the_app_settings_each_read_with_their_own_key() {
    let backends = Backends::start_two_accounts().await;
    let triage = Settings::from_env(|name| backends.setting(name))
        .unwrap()
        .build()
        .unwrap();
    let state = AppState {
        triage: Arc::new(triage),
        budget: Duration::from_secs(30),
    };
    let record = |account: &str| task_failed("etl", "oom").replace("DEVBATCH1", account);
    let invocation = json!({"Data": {"events": serde_json::to_string(&[
            record("DEVBATCH1"), record("DEVBATCH2"), record("DEVBATCH3")]).unwrap()},
        "Metadata": {"sys": {"MethodName": "TaskEvents"}}});
    let (status, body) = invoke(&state, "TaskEvents", &invocation).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let logs = body["Logs"].to_string();
    assert!(logs.contains("devbatch3/etl/oom"), "{logs}");
    assert!(logs.contains("not a configured account"), "{logs}");
    assert_eq!(backends.hook.len(), 2, "one alert per configured account");
    let second = &backends.second.as_ref().unwrap().emulator;
    assert!(second.requests().iter().all(|r| r.status < 400));
    assert!(!second.requests().is_empty());

    // Diagnose picks its account by name; an account not configured is 404, before any request.
    let request = |body: &str| {
        json!({"Data": {"req": {"Url": "https://app.azurewebsites.net/api/Diagnose", "Method": "POST",
            "Query": {}, "Headers": {"Content-Type": ["application/json"]}, "Params": {},
            "Body": body, "Identities": []}}, "Metadata": {"sys": {}}})
    };
    second.clear_requests();
    let (_, response) = invoke(
        &state,
        "Diagnose",
        &request(r#"{"jobId":"etl","taskId":"oom","account":"DevBatch2"}"#),
    )
    .await;
    assert_eq!(response["Outputs"]["res"]["statusCode"], 200, "{response}");
    assert!(
        !second.requests().is_empty(),
        "read from the second account"
    );
    let (_, response) = invoke(
        &state,
        "Diagnose",
        &request(r#"{"jobId":"etl","taskId":"oom","account":"devbatch3"}"#),
    )
    .await;
    assert_eq!(response["Outputs"]["res"]["statusCode"], 404, "{response}");

    // The timer sweeps both.
    let (status, body) = invoke(&state, "Sweep", &json!({"Data": {}, "Metadata": {}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let logs = body["Logs"].to_string();
    assert!(logs.contains("account devbatch1:"), "{logs}");
    assert!(logs.contains("account devbatch2:"), "{logs}");
}
