//! The one structured line the handler logs per invocation, as the Functions host captures it
//! from stdout into Application Insights: the invocation id, the function, the status the host
//! sees, the counts by outcome and the duration. The alert rules and README.md's "Monitoring"
//! queries parse these lines, so their shape is tested on the binary itself, with the default
//! log settings (no RUST_LOG).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use test_kit::{Backends, free_port};

const INVOCATION: &str = "7a3b1c52-1111-2222-3333-444455556666";

async fn post(port: u16, function: &str, invocation_id: &str, body: String) -> u16 {
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/{function}"))
        .header("Content-Type", "application/json; charset=utf-8")
        .header("X-Azure-Functions-InvocationId", invocation_id)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The `key=value` fields of the line that logged `invocation_id`.
fn fields_of<'a>(lines: &'a str, invocation_id: &str) -> Vec<(&'a str, &'a str)> {
    let needle = format!("invocation_id={invocation_id} ");
    let line = lines
        .lines()
        .find(|l| l.contains("batch_triage::invocation") && l.contains(&needle))
        .unwrap_or_else(|| panic!("no invocation line for {invocation_id} in:\n{lines}"));
    line.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .collect()
}

fn field<'a>(fields: &[(&'a str, &'a str)], key: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {key} in {fields:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_invocation_logs_one_line_with_its_id_function_outcomes_and_duration() {
    let backends = Backends::start().await;
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_batch-triage-functions"))
        .env_clear()
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .envs(backends.settings())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..200 {
        if client
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .is_ok()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the handler never answered GET /");

    // One failed task of the built-in account, and a record from another account.
    let record = |account: &str, task: &str| {
        json!({"records": [{
            "time": "2026-11-27T10:05:01.1234567Z",
            "resourceId": format!("/SUBSCRIPTIONS/0/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.BATCH/BATCHACCOUNTS/{account}/"),
            "category": "ServiceLog", "operationName": "TaskFailEvent", "operationVersion": "2017-06-01",
            "properties": {"jobId": "etl", "id": task, "taskType": "User",
                           "executionInfo": {"exitCode": 137, "retryCount": 0, "requeueCount": 0, "result": "Failure"}}
        }]})
        .to_string()
    };
    let events = serde_json::to_string(&vec![
        record("DEVBATCH1", "oom"),
        record("SOMEONEELSE", "oom"),
    ])
    .unwrap();
    let body = json!({"Data": {"events": events}, "Metadata": {"sys": {}}}).to_string();
    assert_eq!(post(port, "TaskEvents", INVOCATION, body).await, 200);
    // Poison input, and an invocation id that tries to start a line of its own.
    let forged = "a b=c";
    assert_eq!(
        post(port, "TaskEvents", forged, "not an envelope".to_owned()).await,
        200
    );
    let timer = json!({"Data": {"timer": {"IsPastDue": false}}, "Metadata": {}}).to_string();
    let sweep_id = "0f0e0d0c-aaaa-bbbb-cccc-000000000001";
    assert_eq!(post(port, "Sweep", sweep_id, timer).await, 200);
    // Readiness polls are not invocations.
    client
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap();

    let _ = child.kill();
    let _ = child.wait();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();

    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("batch_triage::invocation"))
        .collect();
    assert_eq!(lines.len(), 3, "one line per invocation:\n{stdout}");

    let task_events = fields_of(&stdout, INVOCATION);
    assert_eq!(field(&task_events, "function"), "TaskEvents");
    assert_eq!(field(&task_events, "status"), "200");
    assert_eq!(field(&task_events, "done"), "1", "{task_events:?}");
    assert_eq!(field(&task_events, "refused"), "1", "{task_events:?}");
    assert_eq!(field(&task_events, "failed_retryable"), "0");
    assert_eq!(field(&task_events, "unreadable"), "0");
    assert_eq!(field(&task_events, "parked"), "0", "{task_events:?}");
    assert!(field(&task_events, "duration_ms").parse::<u64>().is_ok());

    let poison = fields_of(&stdout, "invalid");
    assert_eq!(field(&poison, "function"), "TaskEvents");
    assert_eq!(field(&poison, "unreadable"), "1");
    assert!(
        !stdout.contains("a b=c"),
        "the forged id is not echoed:\n{stdout}"
    );

    let sweep = fields_of(&stdout, sweep_id);
    assert_eq!(field(&sweep, "function"), "Sweep");
    assert_eq!(field(&sweep, "status"), "200");
    assert!(
        field(&sweep, "done").parse::<usize>().unwrap() >= 1,
        "the sweep finds the built-in account's failures: {sweep:?}"
    );
    // The parking area's counts are in the Sweep's line too.
    for count in ["parked", "drained", "poisoned", "dead_lettered"] {
        assert_eq!(field(&sweep, count), "0", "{count}: {sweep:?}");
    }
}
