//! The trigger payloads the demo feeds the pipeline, shaped as the platforms deliver them: a
//! Batch diagnostic-log batch as Event Hubs hands it to a function (`{"records": [...]}` with
//! `TaskFailEvent` / `TaskCompleteEvent` records and a failed start task's `SpecialTaskEvent`,
//! shapes from the Batch docs' event pages), an Event Grid delivery (an array of
//! EventGridEvents) and a CloudEvents batch. Task event bodies are built from the emulator's own
//! view of each task, as Batch builds them from its own; the pipeline treats them as hints and
//! re-reads every task before it acts. A start task has no object to re-read, so its event is
//! the diagnosis's source, and the node's `startup/` files are what the pipeline reads back.

use batch_emulator::Emulator;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Tasks announced by diagnostic-log records (job, task, event). `flaky` succeeded after
/// retries, so only its `TaskCompleteEvent` tells of it: the sweep looks for failures.
pub(crate) const EVENT_HUBS_TASKS: &[(&str, &str, &str)] = &[
    ("etl", "oom", "TaskFailEvent"),
    ("etl", "sigkill", "TaskFailEvent"),
    ("etl", "no-shell", "TaskFailEvent"),
    ("etl", "flaky", "TaskCompleteEvent"),
    ("render", "dll-missing", "TaskFailEvent"),
    ("render", "timeout", "TaskFailEvent"),
    ("ingest", "bad-image", "TaskFailEvent"),
];

/// A pool's start task that failed on a node, announced by a `SpecialTaskEvent` record. Batch
/// keeps no task object for a start task, so the record's times and exit code are the facts;
/// the node's `startup/` files are in `scenario.json`.
#[derive(Debug)]
pub(crate) struct StartTaskFailure {
    pub(crate) pool: &'static str,
    pub(crate) node: &'static str,
    /// apt-get's exit code when a package cannot be installed.
    pub(crate) exit_code: i32,
    /// How long before the delivery it started and ended.
    pub(crate) started_ago: time::Duration,
    pub(crate) ended_ago: time::Duration,
}

impl StartTaskFailure {
    /// When it started and ended, for a delivery at `now`.
    pub(crate) fn times(&self, now: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
        (now - self.started_ago, now - self.ended_ago)
    }
}

/// Start tasks announced in the Event Hubs batch.
pub(crate) const START_TASK_FAILURES: &[StartTaskFailure] = &[StartTaskFailure {
    pool: "linux",
    node: "tvm-05",
    exit_code: 100,
    started_ago: time::Duration::minutes(52),
    ended_ago: time::Duration::minutes(51),
}];

/// The resource id of the emulated account, as diagnostic-log records carry it (upper case).
fn resource_id(account: &str) -> String {
    format!(
        "/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000000/RESOURCEGROUPS/BATCH-DEMO/PROVIDERS/MICROSOFT.BATCH/BATCHACCOUNTS/{}/",
        account.to_ascii_uppercase()
    )
}

/// A REST timestamp in the form Batch events use: `2019-08-22 20:50:59.522`.
fn event_time(rest: Option<&Value>) -> Option<String> {
    let parsed = OffsetDateTime::parse(rest?.as_str()?, &Rfc3339).ok()?;
    event_time_of(parsed)
}

/// A time in the form Batch events use.
fn event_time_of(t: OffsetDateTime) -> Option<String> {
    let format = time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]"
    );
    t.format(&format).ok()
}

/// The body of the special-task event for a failed start task: the job is empty, and there is
/// no retry count (the shape of Batch's "Special task" event).
fn start_task_event_body(failure: &StartTaskFailure, now: OffsetDateTime) -> Value {
    let (start, end) = failure.times(now);
    json!({
        "jobId": "",
        "taskName": "starttask",
        "taskType": "StartTask",
        "nodeInfo": {"poolId": failure.pool, "nodeId": failure.node},
        "executionInfo": {
            "startTime": event_time_of(start),
            "endTime": event_time_of(end),
            "exitCode": failure.exit_code,
            "result": "failure",
            "schedulingError": {"details": []},
        },
    })
}

/// The body of a task event (`TaskFailEvent`, `TaskCompleteEvent`) for a task as the REST API
/// shows it: events name the failure `schedulingError`, and the REST API `failureInfo`.
fn task_event_body(job_id: &str, task: &Value) -> Value {
    let exec = &task["executionInfo"];
    let failure = exec.get("failureInfo").map(|f| {
        json!({
            "category": if f["category"] == "servererror" { "ServerError" } else { "UserError" },
            "code": f["code"],
            "message": f["message"],
            "details": f.get("details").cloned().unwrap_or_else(|| json!([])),
        })
    });
    let mut execution = json!({
        "startTime": event_time(exec.get("startTime")),
        "endTime": event_time(exec.get("endTime")),
        "retryCount": exec["retryCount"],
        "requeueCount": exec["requeueCount"],
        "result": if exec["result"] == "failure" { "Failure" } else { "Success" },
    });
    if let Some(code) = exec.get("exitCode") {
        execution["exitCode"] = code.clone();
    }
    if let Some(failure) = failure {
        execution["schedulingError"] = failure;
    }
    json!({
        "jobId": job_id,
        "id": task["id"],
        "taskType": "User",
        "systemTaskVersion": 0,
        "requiredSlots": 1,
        "nodeInfo": {"poolId": task["nodeInfo"]["poolId"], "nodeId": task["nodeInfo"]["nodeId"]},
        "multiInstanceSettings": {"numberOfInstances": 1},
        "constraints": {"maxTaskRetryCount": task["constraints"]["maxTaskRetryCount"]},
        "executionInfo": execution,
    })
}

/// `body` (an Event Hubs body of records) with one more record for each of two other accounts:
/// the `etl/oom` failure of `second`, a watched account's emulator, and the same failure in
/// `unwatched`, an account the deployment does not watch, which the pipeline refuses.
pub(crate) fn with_other_accounts(
    body: &[u8],
    second: &Emulator,
    second_account: &str,
    unwatched: &str,
    now: OffsetDateTime,
) -> Vec<u8> {
    let Ok(mut batch) = serde_json::from_slice::<Value>(body) else {
        return body.to_vec();
    };
    let time = now.format(&Rfc3339).unwrap_or_default();
    let Some(task) = second.task("etl", "oom") else {
        return body.to_vec();
    };
    if let Some(records) = batch["records"].as_array_mut() {
        for account in [second_account, unwatched] {
            records.push(json!({
                "Tenant": "65298bc2729a4c93b11c00ad7e660501",
                "time": time,
                "resourceId": resource_id(account),
                "category": "ServiceLog",
                "operationName": "TaskFailEvent",
                "operationVersion": "2017-06-01",
                "properties": task_event_body("etl", &task),
            }));
        }
    }
    serde_json::to_vec(&batch).unwrap_or_else(|_| body.to_vec())
}

/// The Event Hubs body: one diagnostic-log record per entry of [`EVENT_HUBS_TASKS`], one
/// `SpecialTaskEvent` per entry of [`START_TASK_FAILURES`], plus a pool event, which the
/// pipeline skips by design.
pub(crate) fn event_hubs_body(emulator: &Emulator, account: &str, now: OffsetDateTime) -> Vec<u8> {
    let time = now.format(&Rfc3339).unwrap_or_default();
    let mut records: Vec<Value> = EVENT_HUBS_TASKS
        .iter()
        .filter_map(|(job, task, operation)| {
            let task = emulator.task(job, task)?;
            Some(json!({
                "Tenant": "65298bc2729a4c93b11c00ad7e660501",
                "time": time,
                "resourceId": resource_id(account),
                "category": "ServiceLog",
                "operationName": operation,
                "operationVersion": "2017-06-01",
                "properties": task_event_body(job, &task),
            }))
        })
        .collect();
    records.extend(START_TASK_FAILURES.iter().map(|failure| {
        json!({
            "Tenant": "65298bc2729a4c93b11c00ad7e660501",
            "time": time,
            "resourceId": resource_id(account),
            "category": "ServiceLog",
            "operationName": "SpecialTaskEvent",
            "operationVersion": "2017-06-01",
            "properties": start_task_event_body(failure, now),
        })
    }));
    records.push(json!({
        "Tenant": "65298bc2729a4c93b11c00ad7e660501",
        "time": time,
        "resourceId": resource_id(account),
        "category": "ServiceLog",
        "operationName": "PoolResizeCompleteEvent",
        "operationVersion": "2017-06-01",
        "properties": {"id": "linux", "nodeDeallocationOption": "Requeue", "currentDedicatedNodes": 4,
                       "targetDedicatedNodes": 4, "currentLowPriorityNodes": 0, "targetLowPriorityNodes": 0,
                       "enableAutoScale": false, "isAutoPool": false, "resultCode": "Success",
                       "resultMessage": "The operation succeeded"},
    }));
    serde_json::to_vec_pretty(&json!({ "records": records })).unwrap_or_default()
}

/// An Event Grid delivery from a custom topic a forwarder publishes to: one event carrying a
/// task event body, one carrying only a reference for the pipeline to look up.
pub(crate) fn event_grid_body(
    emulator: &Emulator,
    batch_url: &str,
    now: OffsetDateTime,
) -> Vec<u8> {
    let time = now.format(&Rfc3339).unwrap_or_default();
    let topic = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/batch-demo/providers/Microsoft.EventGrid/topics/batch-triage";
    let mut events = Vec::new();
    if let Some(task) = emulator.task("ingest", "upload-fail") {
        events.push(json!({
            "id": "demo-eg-1", "topic": topic, "subject": "jobs/ingest/tasks/upload-fail",
            "eventType": "Contoso.Batch.TaskFailed", "eventTime": time,
            "dataVersion": "1.0", "metadataVersion": "1",
            "data": task_event_body("ingest", &task),
        }));
    }
    events.push(json!({
        "id": "demo-eg-2", "topic": topic, "subject": "jobs/ingest/tasks/blob-denied",
        "eventType": "Contoso.Batch.TaskFailed", "eventTime": time,
        "dataVersion": "1.0", "metadataVersion": "1",
        "data": {"accountUrl": batch_url, "jobId": "ingest", "taskId": "blob-denied"},
    }));
    // A forwarder replaying a nine-day-old event: the task's retention has expired, so its
    // logs are gone and the manifest says so.
    events.push(json!({
        "id": "demo-eg-3", "topic": topic, "subject": "jobs/etl/tasks/old-fail",
        "eventType": "Contoso.Batch.TaskFailed", "eventTime": time,
        "dataVersion": "1.0", "metadataVersion": "1",
        "data": {"accountUrl": batch_url, "jobId": "etl", "taskId": "old-fail"},
    }));
    serde_json::to_vec_pretty(&Value::Array(events)).unwrap_or_default()
}

/// Event Grid's dead-letter container as the demo's sweep finds it: `(key, blob)` pairs. One
/// blob as Event Grid writes it (the delivery's events in one JSON array, each with Event Grid's
/// dead-letter fields), about a failure the events above already handled; and one cut short,
/// which cannot be read and is kept as poison.
pub(crate) fn dead_letter_blobs(batch_url: &str, now: OffsetDateTime) -> Vec<(String, Vec<u8>)> {
    let time = now.format(&Rfc3339).unwrap_or_default();
    let events = json!([{
        "id": "demo-eg-dead-1",
        "topic": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/batch-demo/providers/Microsoft.EventGrid/topics/batch-triage",
        "subject": "jobs/ingest/tasks/blob-denied",
        "eventType": "Contoso.Batch.TaskFailed", "eventTime": time,
        "dataVersion": "1.0", "metadataVersion": "1",
        "data": {"accountUrl": batch_url, "jobId": "ingest", "taskId": "blob-denied"},
        "deadLetterReason": "MaxDeliveryAttemptsExceeded", "deliveryAttempts": 30,
        "lastDeliveryOutcome": "Probation", "publishTime": time, "lastDeliveryAttemptTime": time
    }]);
    let blob = serde_json::to_vec_pretty(&events).unwrap_or_default();
    let cut_short = blob[..blob.len() / 3].to_vec();
    let folder = "BATCH-TRIAGE/BATCH-TRIAGE/2026/12/5/10";
    vec![
        (
            format!("{folder}/4d1c2a57-6f0b-4c39-9f2e-0a8d3b6e5c11.json"),
            blob,
        ),
        (
            format!("{folder}/9b7e0c3d-2a41-4e8f-b6d5-7c1f3e2a9d04.json"),
            cut_short,
        ),
    ]
}

/// A CloudEvents 1.0 batch: a reference to a task that waits on a node whose job preparation
/// failed (only an event about it, or a person asking, leads to it: it has not failed), and the
/// task whose stderr holds HTML.
pub(crate) fn cloud_events_body(batch_url: &str, now: OffsetDateTime) -> Vec<u8> {
    let time = now.format(&Rfc3339).unwrap_or_default();
    let event = |id: &str, job: &str, task: &str| {
        json!({
            "specversion": "1.0", "id": id, "source": "/batch-triage/demo-forwarder",
            "type": "Contoso.Batch.TaskAttention", "subject": format!("jobs/{job}/tasks/{task}"),
            "time": time, "datacontenttype": "application/json",
            "data": {"accountUrl": batch_url, "jobId": job, "taskId": task},
        })
    };
    serde_json::to_vec_pretty(&json!([
        event("demo-ce-1", "prep-fail", "t1"),
        event("demo-ce-2", "webapp", "render-pages"),
    ]))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use diagnosis::Item;
    use diagnosis::payload::read_slice;

    use super::*;

    fn emulator() -> Emulator {
        Emulator::new(crate::scenario::demo_scenario().unwrap()).unwrap()
    }

    fn items(payload: &[u8]) -> Vec<Item> {
        let mut items = Vec::new();
        read_slice(payload, &mut |item| items.push(item)).unwrap();
        items
    }

    #[test]
    fn the_event_hubs_batch_announces_each_task_the_start_task_and_a_pool_event() {
        let now = OffsetDateTime::now_utc();
        let body = event_hubs_body(&emulator(), "devbatch1", now);
        let value: Value = serde_json::from_slice(&body).unwrap();
        let records = value["records"].as_array().unwrap();
        assert_eq!(
            records.len(),
            EVENT_HUBS_TASKS.len() + START_TASK_FAILURES.len() + 1,
            "every task is in the emulator, so none is left out"
        );
        for record in records {
            assert!(
                record["resourceId"]
                    .as_str()
                    .unwrap()
                    .ends_with("/BATCHACCOUNTS/DEVBATCH1/"),
                "records name the account as diagnostic logs do"
            );
        }
        let items = items(&body);
        let task_events = items
            .iter()
            .filter(|i| matches!(i, Item::TaskEvent { account: Some(a), .. } if a == "devbatch1"))
            .count();
        assert_eq!(task_events, EVENT_HUBS_TASKS.len());
        let start_task = items
            .iter()
            .find_map(|i| match i {
                Item::SpecialTaskEvent { body, .. } => Some(body),
                _ => None,
            })
            .expect("the start task's SpecialTaskEvent is read as one");
        let evidence = diagnosis::Evidence {
            account: Some("devbatch1"),
            ..diagnosis::Evidence::default()
        };
        let diagnosis = diagnosis::diagnose_special_task_event(start_task, &evidence)
            .expect("a failed start task is diagnosed from its event");
        assert_eq!(
            diagnosis.class,
            diagnosis::FailureClass::NodeStartTaskFailed
        );
        assert_eq!(diagnosis.subject.node_id.as_deref(), Some("tvm-05"));
    }

    #[test]
    fn the_event_grid_and_cloudevents_deliveries_carry_a_body_and_references() {
        let now = OffsetDateTime::now_utc();
        let url = "http://127.0.0.1:1";
        let items = items(&event_grid_body(&emulator(), url, now));
        let references: Vec<String> = items
            .iter()
            .filter_map(|i| match i {
                Item::TaskReference(r) => Some(format!("{:?}/{:?}", r.job_id, r.task_id)),
                _ => None,
            })
            .collect();
        assert_eq!(references.len(), 2, "{references:?}");
        assert_eq!(
            items
                .iter()
                .filter(|i| matches!(i, Item::TaskEvent { .. }))
                .count(),
            1,
            "upload-fail comes with its event body"
        );
        let items = items_of_cloud_events(url, now);
        assert_eq!(items, 2, "two task references");
    }

    fn items_of_cloud_events(url: &str, now: OffsetDateTime) -> usize {
        items(&cloud_events_body(url, now))
            .iter()
            .filter(|i| matches!(i, Item::TaskReference(_)))
            .count()
    }

    #[test]
    fn a_start_task_ran_before_the_delivery() {
        let now = OffsetDateTime::now_utc();
        for failure in START_TASK_FAILURES {
            let (start, end) = failure.times(now);
            assert!(start < end && end < now, "{failure:?}");
        }
    }
}
