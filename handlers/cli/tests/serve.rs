//! `batch-triage serve` end to end: the binary with its settings in the environment, in front of
//! the Batch emulator, a local-directory store and a webhook receiver, all on loopback; requests
//! shaped as Event Grid sends them (`docs/delivery.md`).

use std::process::Command;

use serde_json::{Value, json};
use test_kit::{Backends, KillOnDrop, spawn_announced};

const KEY: &str = "serve-test-key-0123456789abcdef";

struct Server {
    child: KillOnDrop,
    base: String,
    backends: Backends,
    /// The server's stderr (its log).
    log: tempfile::NamedTempFile,
}

impl Server {
    fn alerts(&self) -> Vec<Value> {
        self.backends.hook.alerts()
    }

    /// Every file under the store, relative to it.
    fn stored(&self) -> Vec<String> {
        self.backends.stored_files()
    }
}

async fn start() -> Server {
    serve(Backends::start().await).await
}

async fn serve(backends: Backends) -> Server {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_batch-triage"));
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_clear()
        .envs(backends.settings())
        .env("BATCH_TRIAGE_WEBHOOK_KEY", KEY)
        .env("RUST_LOG", "debug")
        .stderr(log.reopen().unwrap());
    let (child, base, _) = tokio::task::spawn_blocking(move || spawn_announced(&mut command))
        .await
        .unwrap();
    Server {
        child,
        base,
        backends,
        log,
    }
}

fn event_grid(job: &str, task: &str, id: &str) -> Value {
    json!([{"id": id, "topic": "/subscriptions/0/resourceGroups/rg/providers/Microsoft.EventGrid/topics/t",
        "subject": format!("jobs/{job}/tasks/{task}"), "eventType": "Contoso.Batch.TaskFailed",
        "eventTime": "2026-11-27T10:00:00Z", "data": {"jobId": job, "taskId": task},
        "dataVersion": "1.0", "metadataVersion": "1"}])
}

async fn post_events(server: &Server, key: Option<&str>, body: &Value) -> (u16, Value) {
    let url = match key {
        Some(key) => format!("{}/api/events?key={key}", server.base),
        None => format!("{}/api/events", server.base),
    };
    let response = reqwest::Client::new()
        .post(url)
        .header("aeg-event-type", "Notification")
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn post_with_header(server: &Server, path: &str, body: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", server.base))
        .header("x-batch-triage-key", KEY)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_both_validation_handshakes_only_with_the_key() {
    let server = start().await;
    assert_eq!(
        reqwest::get(format!("{}/", server.base))
            .await
            .unwrap()
            .status(),
        200,
        "readiness needs no key"
    );
    let validation = json!([{"id": "v1", "topic": "/subscriptions/0/x", "subject": "",
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "eventTime": "2026-11-27T10:00:00Z",
        "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
                 "validationUrl": "https://rp-eastus2.eventgrid.azure.net/validate?id=1"},
        "dataVersion": "2", "metadataVersion": "1"}]);
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/api/events?key={KEY}", server.base))
        .header("aeg-event-type", "SubscriptionValidation")
        .body(validation.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"})
    );

    let response = client
        .post(format!(
            "{}/api/events?key=wrong-key-wrong-key",
            server.base
        ))
        .header("aeg-event-type", "SubscriptionValidation")
        .body(validation.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(!response.text().await.unwrap().contains("512d38b6"));

    // CloudEvents abuse protection.
    let response = client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/events?key={KEY}", server.base),
        )
        .header("WebHook-Request-Origin", "eventgrid.azure.net")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["webhook-allowed-origin"],
        "eventgrid.azure.net"
    );
    assert_eq!(response.headers()["webhook-allowed-rate"], "*");
    let response = client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/events", server.base),
        )
        .header("WebHook-Request-Origin", "eventgrid.azure.net")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(!response.headers().contains_key("webhook-allowed-origin"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_wrong_key_is_401_and_nothing_is_preserved() {
    let server = start().await;
    let event = event_grid("etl", "oom", "e1");
    let (status, body) = post_events(&server, None, &event).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = post_events(&server, Some("not-the-right-key-at-all"), &event).await;
    assert_eq!(status, 401, "{body}");
    for path in ["/api/records", "/api/sweep", "/api/diagnose"] {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", server.base))
            .header("x-batch-triage-key", "not-the-right-key-at-all")
            .body(r#"{"jobId": "etl", "taskId": "oom"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path}");
    }
    assert!(server.stored().is_empty(), "{:?}", server.stored());
    assert!(server.alerts().is_empty());

    // The refusals are logged, and no key is, wrong or right, even at debug level.
    let (status, _) = post_events(&server, Some(KEY), &event).await;
    assert_eq!(status, 200);
    let log = std::fs::read_to_string(server.log.path()).unwrap();
    for route in ["/api/events", "/api/records", "/api/sweep", "/api/diagnose"] {
        assert!(
            log.contains(&format!("{route} refused: wrong key")),
            "{log}"
        );
    }
    assert!(!log.contains(KEY), "the key leaked into the log:\n{log}");
    assert!(!log.contains("not-the-right-key-at-all"), "{log}");
    assert!(
        !log.contains("hook-secret-value"),
        "a receiver secret leaked:\n{log}"
    );
    assert!(
        !log.contains(batch_emulator::WELL_KNOWN_ACCOUNT_KEY),
        "the account key leaked:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_task_event_is_preserved_and_alerted_once_across_duplicates() {
    let server = start().await;
    let event = event_grid("etl", "oom", "e1");
    let (status, body) = post_events(&server, Some(KEY), &event).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["subjects"][0]
            .as_str()
            .unwrap()
            .contains("devbatch1/etl/oom: task.exit_code"),
        "{body}"
    );
    assert!(
        server
            .backends
            .store
            .path()
            .join("devbatch1/etl/oom/attempt-0/manifest.json")
            .is_file(),
        "{:?}",
        server.stored()
    );
    let stderr = std::fs::read_to_string(
        server
            .backends
            .store
            .path()
            .join("devbatch1/etl/oom/attempt-0/stderr.txt"),
    )
    .unwrap();
    assert!(!stderr.is_empty());

    // Event Grid delivers at least once: 20 more copies, at once, alert nobody again.
    let deliveries = (0..20).map(|_| post_events(&server, Some(KEY), &event));
    for (status, body) in futures::future::join_all(deliveries).await {
        assert_eq!(status, 200, "{body}");
    }
    let alerts = server.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["diagnosis"]["subject"]["taskId"], "oom");
}

#[tokio::test(flavor = "multi_thread")]
async fn records_unreadable_bodies_sweep_and_diagnose() {
    let server = start().await;
    let records = json!({"records": [{
        "time": "2026-11-27T10:05:01.1234567Z",
        "resourceId": "/SUBSCRIPTIONS/0/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.BATCH/BATCHACCOUNTS/DEVBATCH1/",
        "category": "ServiceLog", "operationName": "TaskFailEvent", "operationVersion": "2017-06-01",
        "properties": {"jobId": "etl", "id": "sigkill", "taskType": "User",
            "executionInfo": {"exitCode": -9, "retryCount": 0, "requeueCount": 0, "result": "Failure"}}}]});
    let (status, body) = post_with_header(&server, "/api/records", &records.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        server
            .backends
            .store
            .path()
            .join("devbatch1/etl/sigkill/attempt-0/manifest.json")
            .is_file()
    );

    // Unreadable input is 400, which Event Grid never retries.
    let (status, body) = post_with_header(&server, "/api/records", "{\"records\": [").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post_with_header(&server, "/api/events", "not json").await;
    assert_eq!(status, 400, "{body}");

    let (status, body) = post_with_header(&server, "/api/sweep", "").await;
    assert_eq!(status, 200, "{body}");
    let lines = body["lines"].to_string();
    assert!(
        lines.contains("swept") && lines.contains("outbox"),
        "{body}"
    );
    assert!(
        lines.contains("devbatch1/etl/oom: task.exit_code"),
        "{body}"
    );

    let (status, body) = post_with_header(
        &server,
        "/api/diagnose",
        r#"{"jobId": "etl", "taskId": "oom"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["class"], "task.exit_code");
    assert_eq!(body[0]["exitMeaning"], "oom_or_sigkill");
    let (status, body) =
        post_with_header(&server, "/api/diagnose", r#"{"jobId": "no-such-job"}"#).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = post_with_header(&server, "/api/diagnose", r#"{"taskId": "x"}"#).await;
    assert_eq!(status, 400, "{body}");
}

#[test]
fn refuses_to_start_without_the_key_and_says_what_to_set() {
    let out = Command::new(env!("CARGO_BIN_EXE_batch-triage"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_clear()
        .env("AZURE_BATCH_ENDPOINT", "http://127.0.0.1:9")
        .env("BATCH_TRIAGE_STORE", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("BATCH_TRIAGE_WEBHOOK_KEY is not set"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "it must not have started listening");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_server_cleanly() {
    let mut server = start().await;
    let pid = server.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                return Some(status);
            }
            if started.elapsed() > std::time::Duration::from_secs(20) {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    assert_eq!(exit.and_then(|s| s.code()), Some(0), "graceful exit");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transient_batch_failure_is_503_and_the_redelivery_alerts_once() {
    use batch_emulator::{Fault, FaultRule};
    let server = start().await;
    // Batch answers 500 for this task until the fault is lifted; the client's retries run out.
    server
        .backends
        .emulator
        .add_fault(FaultRule::new(Fault::InternalError).path_prefix("/jobs/etl/tasks/sigkill"));
    let event = event_grid("etl", "sigkill", "e-transient");
    let (status, body) = post_events(&server, Some(KEY), &event).await;
    assert_eq!(status, 503, "Event Grid must redeliver: {body}");
    assert_eq!(body["status"], "retry", "{body}");
    assert_eq!(body["retryable"], true, "{body}");
    // The Batch endpoint and the request ids stay in the log.
    for internal in ["127.0.0.1", "request-id", "/jobs/etl"] {
        assert!(!body.to_string().contains(internal), "{internal}: {body}");
    }
    assert!(server.alerts().is_empty());

    server.backends.emulator.set_faults(Vec::new());
    let (status, body) = post_events(&server, Some(KEY), &event).await;
    assert_eq!(status, 200, "{body}");
    let alerts = server.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["diagnosis"]["subject"]["taskId"], "sigkill");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_cloud_event_is_delivered_like_an_event_grid_event() {
    let server = start().await;
    let cloud_event = json!({"specversion": "1.0", "id": "c1", "source": "/batch-triage",
        "type": "Contoso.Batch.TaskFailed", "data": {"jobId": "etl", "taskId": "py-error"}});
    let response = reqwest::Client::new()
        .post(format!("{}/api/events?key={KEY}", server.base))
        .header(
            "Content-Type",
            "application/cloudevents+json; charset=utf-8",
        )
        .body(cloud_event.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let alerts = server.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["diagnosis"]["subject"]["taskId"], "py-error");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_the_limit_is_413_and_not_read() {
    let server = start().await;
    let body = vec![b' '; 33 << 20];
    let response = reqwest::Client::new()
        .post(format!("{}/api/events?key={KEY}", server.base))
        .body(body)
        .send()
        .await;
    match response {
        Ok(response) => assert_eq!(response.status(), 413),
        // The server answers from the Content-Length and may close the connection before the
        // client has finished sending; the client then sees the reset, not the 413.
        Err(error) => assert!(error.is_request() || error.is_body(), "{error}"),
    }
    assert!(server.stored().is_empty());
    // It still serves.
    let (status, body) = post_events(&server, Some(KEY), &event_grid("etl", "oom", "e1")).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_work_finishes_when_the_sender_stops_waiting() {
    use batch_emulator::{Fault, FaultRule};
    let server = start().await;
    // Batch is slow to answer for this task: the sender gives up first, as Event Grid does
    // after 30 s. The work must carry on, or a large copy would never finish.
    server.backends.emulator.add_fault(
        FaultRule::new(Fault::Delay { millis: 3000 })
            .path_prefix("/jobs/etl/tasks/exit-127")
            .times(1),
    );
    let gave_up = reqwest::Client::new()
        .post(format!("{}/api/events?key={KEY}", server.base))
        .timeout(std::time::Duration::from_millis(500))
        .body(event_grid("etl", "exit-127", "e-slow").to_string())
        .send()
        .await;
    assert!(gave_up.is_err_and(|e| e.is_timeout()));
    let started = std::time::Instant::now();
    while server.alerts().is_empty() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the work stopped with the sender"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        server.alerts()[0]["diagnosis"]["subject"]["taskId"],
        "exit-127"
    );
}

/// A stranger announces a 1 GiB body and sends a little of it: the 401 comes back while the
/// client is still sending, so the server never read (or held) the body before checking the key.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_key_is_refused_before_the_body_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = start().await;
    let address = server.base.trim_start_matches("http://").to_owned();
    for target in [
        "/api/records?key=wrong",
        "/api/events?key=wrong",
        "/api/records",
    ] {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "POST {target} HTTP/1.1\r\nHost: {address}\r\nx-batch-triage-key: also-wrong\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"records\": [",
            1u64 << 30
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&[b' '; 64 << 10]).await.unwrap();
        // 1 GiB minus 64 KiB is still to come; the answer is read now.
        let mut answer = vec![0; 4096];
        let n = stream.read(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 401"), "{target}: {answer}");
        assert!(!answer.contains(KEY), "{answer}");
    }
    assert!(server.stored().is_empty());
}

#[tokio::test]
async fn two_accounts_from_the_environment_each_read_with_their_own_key() {
    let server = serve(Backends::start_two_accounts().await).await;
    let record = |account: &str| {
        json!({
            "time": "2026-11-27T10:05:01.1234567Z",
            "resourceId": format!("/SUBSCRIPTIONS/0/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.BATCH/BATCHACCOUNTS/{account}/"),
            "category": "ServiceLog", "operationName": "TaskFailEvent", "operationVersion": "2017-06-01",
            "properties": {"jobId": "etl", "id": "sigkill", "taskType": "User",
                "executionInfo": {"exitCode": -9, "retryCount": 0, "requeueCount": 0, "result": "Failure"}}})
    };
    let records =
        json!({"records": [record("DEVBATCH1"), record("DEVBATCH2"), record("DEVBATCH3")]});
    let (status, body) = post_with_header(&server, "/api/records", &records.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let stored = server.stored();
    for account in ["devbatch1", "devbatch2"] {
        let manifest = format!("{account}/etl/sigkill/attempt-0/manifest.json");
        assert!(stored.contains(&manifest), "{stored:#?}");
    }
    assert!(
        !stored.iter().any(|f| f.starts_with("devbatch3")),
        "{stored:#?}"
    );
    assert_eq!(server.alerts().len(), 2, "one alert per watched account");

    let (status, body) = post_with_header(
        &server,
        "/api/diagnose",
        r#"{"jobId": "etl", "taskId": "oom", "account": "devbatch2"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["subject"]["account"], "devbatch2", "{body}");
    let (status, body) = post_with_header(
        &server,
        "/api/diagnose",
        r#"{"jobId": "etl", "account": "devbatch3"}"#,
    )
    .await;
    assert_eq!(status, 404, "{body}");

    let (status, body) = post_with_header(&server, "/api/sweep", "").await;
    assert_eq!(status, 200, "{body}");
    let lines = body["lines"].to_string();
    assert!(lines.contains("account devbatch2:"), "{body}");
    assert!(
        lines.contains("devbatch2/etl/oom: task.exit_code"),
        "{body}"
    );
}
