//! The handler binary as the Functions host runs it: app settings in the environment, a random
//! port, readiness polled on `GET /`, and invocation bodies exactly as docs/delivery.md documents them.
//! Behind it: the Batch emulator, a local-directory store and a webhook receiver, all on loopback.

use std::process::{Command, Stdio};
use std::time::Duration;

use artifact_store::ArtifactStore;
use serde_json::{Value, json};
use test_kit::{Backends, KillOnDrop, free_port};

struct Host {
    _child: KillOnDrop,
    port: u16,
    backends: Backends,
}

async fn start() -> Host {
    start_with(Vec::new()).await
}

/// Starts the handler with the backends' settings, `overrides` replacing some of them.
async fn start_with(overrides: Vec<(&'static str, String)>) -> Host {
    spawn(Backends::start().await, overrides).await
}

/// Starts the handler binary over `backends` and waits until it answers.
async fn spawn(backends: Backends, overrides: Vec<(&'static str, String)>) -> Host {
    let port = free_port();
    let child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_batch-triage-functions"))
            .env_clear()
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .envs(backends.settings())
            .envs(overrides)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let host = Host {
        _child: child,
        port,
        backends,
    };
    // Readiness as the host polls it: any HTTP answer on GET /.
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .is_ok()
        {
            return host;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the handler never answered GET /");
}

async fn invoke(host: &Host, function: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/{function}", host.port))
        .header("Content-Type", "application/json; charset=utf-8")
        .header(
            "X-Azure-Functions-InvocationId",
            "7a3b1c52-0000-0000-0000-000000000000",
        )
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

fn records(job: &str, task: &str) -> String {
    json!({"records": [{
        "time": "2026-11-27T10:05:01.1234567Z",
        "resourceId": "/SUBSCRIPTIONS/0/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.BATCH/BATCHACCOUNTS/DEVBATCH1/",
        "category": "ServiceLog", "operationName": "TaskFailEvent", "operationVersion": "2017-06-01",
        "properties": {"jobId": job, "id": task, "taskType": "User", "executionInfo": {"exitCode": 137, "retryCount": 0, "requeueCount": 0, "result": "Failure"}}
    }]})
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn task_events_from_event_hubs_are_preserved_and_alerted_once() {
    let host = start().await;
    // dataType string, cardinality many: one string holding an array of event bodies.
    let events = serde_json::to_string(&vec![records("etl", "oom")]).unwrap();
    let body = json!({"Data": {"events": events}, "Metadata": {
        "PartitionContext": {"EventHubName": "batch-logs", "ConsumerGroup": "$Default", "PartitionId": "0"},
        "SequenceNumberArray": "[17]", "sys": {"MethodName": "TaskEvents", "UtcNow": "2026-11-27T10:05:02Z", "RandGuid": "x"}}});
    for _ in 0..5 {
        let (status, response) = invoke(&host, "TaskEvents", &body).await;
        assert_eq!(status, 200, "{response}");
        assert!(
            response["Logs"].as_array().is_some_and(|l| !l.is_empty()),
            "{response}"
        );
    }
    assert!(
        host.backends
            .store
            .path()
            .join("devbatch1/etl/oom/attempt-0/manifest.json")
            .exists(),
        "logs preserved"
    );
    assert_eq!(host.backends.hook.len(), 1, "five deliveries, one alert");
}

/// An Event Hubs invocation as the host builds it at retry `retry` of `max`: the bodies as one
/// string holding a JSON array of strings (`dataType: string`), `PartitionContext` an object,
/// `SequenceNumberArray` a string, `RetryContext` an object with the exception's message.
fn event_hubs_invocation(bodies: &[String], first_sequence: i64, retry: u32, max: u32) -> Value {
    let sequences: Vec<i64> = (0..bodies.len() as i64)
        .map(|i| first_sequence + i)
        .collect();
    json!({"Data": {"events": serde_json::to_string(bodies).unwrap()}, "Metadata": {
        "PartitionContext": {"FullyQualifiedNamespace": "ns.servicebus.windows.net", "EventHubName": "insights-logs-servicelog",
            "ConsumerGroup": "$Default", "PartitionId": "1", "IsCheckpointingAfterInvocation": true},
        "SequenceNumberArray": serde_json::to_string(&sequences).unwrap(),
        "OffsetArray": "[\"4294967296\"]",
        "EnqueuedTimeUtcArray": "[\"2026-12-05T03:00:00.123\"]",
        "RetryContext": {"RetryCount": retry, "MaxRetryCount": max,
            "Exception": {"Message": "Exception while executing function: Functions.TaskEvents"}},
        "sys": {"MethodName": "TaskEvents", "UtcNow": "2026-12-05T03:00:01Z", "RandGuid": "5b0d"}}})
}

/// Issue 18's promise, end to end through the binary: at its last retry, with Batch unreachable,
/// a `TaskEvents` batch is parked and acknowledged (the host would checkpoint it anyway); a
/// later `Sweep`, with Batch back, works it: the logs are kept and the alert is sent once.
#[tokio::test(flavor = "multi_thread")]
async fn the_last_retry_parks_the_batch_and_the_next_sweep_works_it() {
    // Batch unreachable: nothing listens on its port. A short budget, so the client's retries
    // end within the test.
    let unreachable = format!("http://127.0.0.1:{}", free_port());
    let host = start_with(vec![
        ("AZURE_BATCH_ENDPOINT", unreachable),
        ("BATCH_TRIAGE_INVOCATION_SECONDS", "4".to_owned()),
    ])
    .await;
    let bodies = vec![records("etl", "oom")];

    // An earlier attempt fails, so the host retries it.
    let (status, _) = invoke(
        &host,
        "TaskEvents",
        &event_hubs_invocation(&bodies, 17, 2, 5),
    )
    .await;
    assert_eq!(status, 500, "not the last attempt: the host retries");
    let parked = host.backends.store.path().join("parked");
    assert!(!parked.exists(), "nothing parked before the last attempt");

    // The last attempt: acknowledged, and parked under partition and sequence number.
    let last = event_hubs_invocation(&bodies, 17, 5, 5);
    for _ in 0..2 {
        let (status, response) = invoke(&host, "TaskEvents", &last).await;
        assert_eq!(status, 200, "{response}");
        assert!(
            response["Logs"].to_string().contains("parked"),
            "{response}"
        );
    }
    let parked_file = parked.join("eventhubs/insights-logs-servicelog/1/00000000000000000017.json");
    assert!(parked_file.exists(), "{:?}", host.backends.stored_files());
    assert_eq!(
        host.backends
            .stored_files()
            .iter()
            .filter(|f| f.starts_with("parked/"))
            .count(),
        1,
        "a replay of the last attempt parks nothing twice"
    );
    let record: Value = serde_json::from_slice(&std::fs::read(&parked_file).unwrap()).unwrap();
    assert_eq!(record["source"], "eventhubs");
    assert!(
        record["reason"].as_str().unwrap().contains("retry 5"),
        "{record}"
    );
    assert!(host.backends.hook.is_empty());

    // Batch is back (the instance restarted with it reachable); the timer fires.
    let Host { backends, .. } = host;
    let host = spawn(backends, Vec::new()).await;
    let parked_file = host
        .backends
        .store
        .path()
        .join("parked/eventhubs/insights-logs-servicelog/1/00000000000000000017.json");
    assert!(parked_file.exists(), "parked across the restart");
    let timer = json!({"Data": {"timer": {"Schedule": {"AdjustForDST": true}, "ScheduleStatus": null, "IsPastDue": false}},
        "Metadata": {"sys": {"MethodName": "Sweep"}}});
    let (status, response) = invoke(&host, "Sweep", &timer).await;
    assert_eq!(status, 200, "{response}");
    assert!(
        response["Logs"]
            .to_string()
            .contains("parked deliveries: 1 drained"),
        "{response}"
    );
    assert!(!parked_file.exists(), "drained");
    assert!(
        host.backends
            .store
            .path()
            .join("devbatch1/etl/oom/attempt-0/manifest.json")
            .exists(),
        "the task's logs are kept"
    );
    let oom_alerts = host
        .backends
        .hook
        .alerts()
        .iter()
        .filter(|a| a["diagnosis"]["subject"]["taskId"] == "oom")
        .count();
    assert_eq!(oom_alerts, 1, "alerted once");
    let (_, again) = invoke(&host, "Sweep", &timer).await;
    assert!(!again["Logs"].to_string().contains("drained"), "{again}");
}

#[tokio::test(flavor = "multi_thread")]
async fn event_grid_events_and_cloud_events() {
    let host = start().await;
    let event = json!({"id": "e1", "topic": "/subscriptions/0/resourceGroups/rg/providers/Microsoft.EventGrid/topics/t",
        "subject": "jobs/etl/tasks/sigkill", "eventType": "Contoso.Batch.TaskFailed", "eventTime": "2026-11-27T10:00:00Z",
        "data": {"jobId": "etl", "taskId": "sigkill"}, "dataVersion": "1.0", "metadataVersion": "1"});
    // The extension binds the whole event as indented text, encoded twice by the host.
    let data = serde_json::to_string(&serde_json::to_string_pretty(&event).unwrap()).unwrap();
    let (status, _) = invoke(
        &host,
        "TaskEventGrid",
        &json!({"Data": {"event": data}, "Metadata": {"data": event["data"], "sys": {}}}),
    )
    .await;
    assert_eq!(status, 200);
    let cloud = json!({"specversion": "1.0", "id": "c1", "source": "/batch-triage", "type": "Contoso.Batch.TaskFailed",
        "data": {"jobId": "etl", "taskId": "py-error"}});
    let (status, _) = invoke(
        &host,
        "TaskEventGrid",
        &json!({"Data": {"event": cloud}, "Metadata": {}}),
    )
    .await;
    assert_eq!(status, 200);
    let classes: Vec<String> = host
        .backends
        .hook
        .alerts()
        .iter()
        .map(|alert| {
            alert["diagnosis"]["subject"]["taskId"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(
        classes.contains(&"sigkill".to_owned()) && classes.contains(&"py-error".to_owned()),
        "{classes:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_input_is_acknowledged_not_retried() {
    let host = start().await;
    for body in [
        json!("not an envelope"),
        json!({"Data": {"events": 5}}),
        json!({"Data": {"events": ["{\"records\": ["]}}),
    ] {
        let (status, response) = invoke(&host, "TaskEvents", &body).await;
        assert_eq!(
            status, 200,
            "poison input must not be retried forever: {response}"
        );
    }
    // A forged event naming another account is refused and acknowledged.
    let forged = records("etl", "oom").replace("DEVBATCH1", "SOMEONEELSE");
    let events = serde_json::to_string(&vec![forged]).unwrap();
    let (status, response) =
        invoke(&host, "TaskEvents", &json!({"Data": {"events": events}})).await;
    assert_eq!(status, 200);
    assert!(
        response["Logs"].to_string().contains("Refused"),
        "{response}"
    );
    assert!(host.backends.hook.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn diagnose_over_http_and_the_timer() {
    let host = start().await;
    let request = |body: &str| {
        json!({"Data": {"req": {"Url": "https://app.azurewebsites.net/api/Diagnose", "Method": "POST",
        "Query": {}, "Headers": {"Content-Type": ["application/json"]}, "Params": {}, "Body": body, "Identities": []}}, "Metadata": {"sys": {}}})
    };
    let (status, response) = invoke(
        &host,
        "Diagnose",
        &request(r#"{"jobId":"etl","taskId":"oom"}"#),
    )
    .await;
    assert_eq!(status, 200);
    let res = &response["Outputs"]["res"];
    assert_eq!(res["statusCode"], 200, "{response}");
    let diagnoses: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    assert_eq!(diagnoses[0]["class"], "task.exit_code");
    let (_, response) = invoke(
        &host,
        "Diagnose",
        &request(r#"{"jobId":"no-such-job","taskId":"x"}"#),
    )
    .await;
    assert_eq!(response["Outputs"]["res"]["statusCode"], 404, "{response}");
    let (_, response) = invoke(&host, "Diagnose", &request("not json")).await;
    assert_eq!(response["Outputs"]["res"]["statusCode"], 400, "{response}");
    // What the host sends for an octet-stream body: base64. JSON only, and the answer says so.
    let (_, response) = invoke(&host, "Diagnose", &request("eyJqb2JJZCI6ImV0bCJ9")).await;
    assert_eq!(response["Outputs"]["res"]["statusCode"], 400, "{response}");
    let said = response["Outputs"]["res"]["body"]
        .as_str()
        .unwrap_or_default();
    assert!(
        said.contains("application/json") && said.contains("base64"),
        "{said}"
    );
    let timer = json!({"Data": {"timer": {"Schedule": {"AdjustForDST": true}, "ScheduleStatus": null, "IsPastDue": false}},
        "Metadata": {"sys": {"MethodName": "Sweep"}}});
    let (status, response) = invoke(&host, "Sweep", &timer).await;
    assert_eq!(status, 200, "{response}");
    let logs = response["Logs"].to_string();
    assert!(
        logs.contains("outbox") && logs.contains("swept"),
        "{response}"
    );
    // The sweep found the built-in scenario's recent failures without any event.
    assert!(
        logs.contains("devbatch1/etl/oom: task.exit_code"),
        "{response}"
    );
}

/// The whole path on real parts: Event Hubs batches through the handler binary, logs to Blob
/// Storage (Azurite), alerts to a receiver, a job action on the emulator. The same events come
/// 100 times, reordered, some in one batch: one copy, one alert per cause, one action.
#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_reordered_deliveries_give_one_blob_copy_one_alert_one_action() {
    let azurite = artifact_store::testing::Azurite::start();
    let blobs = azurite.store("logs").await;
    let mut policy = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(
        &mut policy,
        br#"
[grouping]
group_wait = "0s"

[actions]
enabled = true
dry_run = false
max_per_hour = 10

[[receivers]]
name = "hook"
kind = "webhook"
url_env = "HOOK_URL"
secret_env = "HOOK_SECRET"

[[rules]]
name = "stop-etl"
match = { class = "task.exit_code", job = "etl" }
receivers = ["hook"]
action = { kind = "disable", disable_tasks = "wait" }
"#,
    )
    .unwrap();
    let host = start_with(vec![
        ("BATCH_TRIAGE_STORE", azurite.connection_string("logs")),
        (
            "BATCH_TRIAGE_POLICY",
            policy.path().to_str().unwrap().to_owned(),
        ),
    ])
    .await;
    let invocation = |bodies: Vec<String>| {
        json!({"Data": {"events": serde_json::to_string(&bodies).unwrap()}, "Metadata": {
            "PartitionContext": {"EventHubName": "batch-logs", "ConsumerGroup": "batch-triage", "PartitionId": "0"},
            "sys": {"MethodName": "TaskEvents", "UtcNow": "2026-11-27T10:05:02Z", "RandGuid": "x"}}})
    };
    for i in 0..100 {
        // Reordered: sigkill first on odd rounds; every tenth round both arrive in one batch.
        let (first, second) = if i % 2 == 1 {
            ("sigkill", "oom")
        } else {
            ("oom", "sigkill")
        };
        let batches = if i % 10 == 0 {
            vec![vec![records("etl", first), records("etl", second)]]
        } else {
            vec![vec![records("etl", first)], vec![records("etl", second)]]
        };
        for batch in batches {
            let (status, response) = invoke(&host, "TaskEvents", &invocation(batch)).await;
            assert_eq!(status, 200, "round {i}: {response}");
        }
    }
    for task in ["oom", "sigkill"] {
        let manifest = blobs
            .get(
                &artifact_store::ObjectKey::new(format!(
                    "devbatch1/etl/{task}/attempt-0/manifest.json"
                ))
                .unwrap(),
            )
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{task}: the manifest is in Blob Storage"));
        let manifest: Value = serde_json::from_slice(&manifest.bytes).unwrap();
        assert!(
            manifest["files"].as_array().is_some_and(|f| !f.is_empty()),
            "{manifest}"
        );
    }
    let emulator = &host.backends.emulator;
    let stdout_reads = emulator
        .requests()
        .iter()
        .filter(|r| {
            r.method == "GET"
                && r.path_and_query
                    .starts_with("/jobs/etl/tasks/oom/files/stdout.txt")
        })
        .count();
    assert_eq!(stdout_reads, 1, "the log was copied once");
    let alerted: std::collections::BTreeSet<String> = host
        .backends
        .hook
        .alerts()
        .iter()
        .map(|a| {
            a["diagnosis"]["subject"]["taskId"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        alerted.iter().map(String::as_str).collect::<Vec<_>>(),
        ["oom", "sigkill"],
        "one alert per cause"
    );
    assert_eq!(host.backends.hook.len(), alerted.len(), "no alert twice");
    let disables = emulator
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path_and_query.starts_with("/jobs/etl/disable"))
        .count();
    assert_eq!(disables, 1, "the job was disabled once");
}
