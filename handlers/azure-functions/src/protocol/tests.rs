//! The protocol against the payload shapes documented in docs/delivery.md (captured from the host's
//! source and from real invocations where they exist).

use serde_json::{Value, json};

use super::*;

fn request(body: &str) -> InvokeRequest {
    serde_json::from_str(body).expect("a valid invocation body")
}

#[test]
fn strings_encoded_twice_are_unwrapped() {
    // A queue message "aaaaa" as the host sends it.
    assert_eq!(decode_binding(&json!("\"aaaaa\"")), json!("aaaaa"));
    assert_eq!(decode_binding(&json!("{\"a\":1}")), json!({"a": 1}));
    assert_eq!(decode_binding(&json!("\"{\\\"a\\\":1}\"")), json!({"a": 1}));
    // Text that is not JSON, and bare numbers, stay as they are.
    assert_eq!(decode_binding(&json!("hello")), json!("hello"));
    assert_eq!(decode_binding(&json!("17")), json!("17"));
    assert_eq!(decode_binding(&json!("{not json")), json!("{not json"));
}

#[test]
fn event_hub_batches_in_every_encoding() {
    let record =
        r#"{"records":[{"operationName":"TaskFailEvent","properties":{"jobId":"j","id":"t"}}]}"#;
    // dataType string: one string holding an array of strings.
    let as_strings = serde_json::to_string(&vec![record, record]).unwrap();
    let body =
        json!({"Data": {"events": as_strings}, "Metadata": {"sys": {"MethodName": "TaskEvents"}}});
    let bodies = event_hub_bodies(&request(&body.to_string()), "events").unwrap();
    assert_eq!(bodies, vec![record.to_owned(), record.to_owned()]);
    // That string encoded once more, as the host does for .NET strings.
    let twice = json!({"Data": {"events": serde_json::to_string(&as_strings).unwrap()}});
    assert_eq!(
        event_hub_bodies(&request(&twice.to_string()), "events")
            .unwrap()
            .len(),
        2
    );
    // No dataType: an array of objects.
    let objects = json!({"Data": {"events": [serde_json::from_str::<Value>(record).unwrap()]}});
    let bodies = event_hub_bodies(&request(&objects.to_string()), "events").unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&bodies[0]).unwrap(),
        serde_json::from_str::<Value>(record).unwrap()
    );
    // One element encoded once more (leading white space and all) is unwrapped; a plain record
    // body is handed on byte for byte, never re-serialised.
    let spaced = format!("{record}  ");
    let inner_twice = json!({"Data": {"events": [
        format!(" {}", serde_json::to_string(record).unwrap()),
        spaced.clone(),
    ]}});
    assert_eq!(
        event_hub_bodies(&request(&inner_twice.to_string()), "events").unwrap(),
        vec![record.to_owned(), spaced]
    );
    // A body that is not JSON is handed on as it is, for the payload reader to report.
    let odd = json!({"Data": {"events": ["not json at all", "\"unterminated"]}});
    assert_eq!(
        event_hub_bodies(&request(&odd.to_string()), "events").unwrap(),
        vec!["not json at all", "\"unterminated"]
    );
}

#[test]
fn event_hub_errors_are_typed() {
    let missing = event_hub_bodies(&request(r#"{"Data": {}}"#), "events").unwrap_err();
    assert_eq!(
        missing,
        ProtocolError::MissingBinding {
            name: "events".to_owned()
        }
    );
    let number = event_hub_bodies(&request(r#"{"Data": {"events": 5}}"#), "events").unwrap_err();
    assert!(number.to_string().contains("a number"), "{number}");
}

#[test]
fn event_grid_events_as_the_extension_binds_them() {
    // The whole event, indented by the extension, then encoded twice.
    let event = json!({"id": "1", "eventType": "Contoso.Batch.TaskFailed", "subject": "jobs/j/tasks/t",
        "data": {"jobId": "j", "taskId": "t"}, "dataVersion": "1.0"});
    let indented = serde_json::to_string_pretty(&event)
        .unwrap()
        .replace('\n', "\r\n");
    let body = json!({"Data": {"event": serde_json::to_string(&indented).unwrap()},
        "Metadata": {"data": {"jobId": "j", "taskId": "t"}, "sys": {}}});
    let text = event_grid_event(&request(&body.to_string()), "event").unwrap();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), event);
    let cloud = json!({"Data": {"event": {"specversion": "1.0", "id": "c", "source": "/s", "type": "t", "data": {}}}});
    assert!(
        event_grid_event(&request(&cloud.to_string()), "event")
            .unwrap()
            .contains("specversion")
    );
    let bad = json!({"Data": {"event": "plain text"}});
    assert!(event_grid_event(&request(&bad.to_string()), "event").is_err());
}

#[test]
fn timer_info_with_and_without_schedule_status() {
    let body = r#"{"Data": {"timer": {"Schedule": {"AdjustForDST": true},
        "ScheduleStatus": {"Last": "2016-10-04T10:15:00+00:00", "Next": "2016-10-04T10:20:00+00:00", "LastUpdated": "2016-10-04T10:16:00+00:00"},
        "IsPastDue": true}}, "Metadata": {"sys": {"MethodName": "Sweep", "UtcNow": "2022-07-05T11:40:07.4850616Z"}}}"#;
    let timer = timer_info(&request(body), "timer");
    assert!(timer.is_past_due);
    assert_eq!(
        timer.schedule_status.unwrap().next.as_deref(),
        Some("2016-10-04T10:20:00+00:00")
    );
    let unmonitored = timer_info(
        &request(r#"{"Data": {"timer": {"ScheduleStatus": null, "IsPastDue": false}}}"#),
        "timer",
    );
    assert_eq!(unmonitored, TimerInfo::default());
    // A timer invocation without the binding still sweeps.
    assert_eq!(
        timer_info(&request(r#"{"Data": {}}"#), "timer"),
        TimerInfo::default()
    );
}

#[test]
fn http_requests_with_query_as_object_or_string() {
    let body = r#"{"Data": {"req": {"Url": "https://app.azurewebsites.net/api/Diagnose?x=1", "Method": "POST",
        "Query": {"x": "1"}, "Headers": {"Content-Type": ["application/json"]}, "Params": {},
        "Body": "{\"jobId\":\"render\",\"taskId\":\"t1\"}", "Identities": []}}, "Metadata": {"sys": {}}}"#;
    let req = http_request(&request(body), "req").unwrap();
    assert_eq!(req.method, "POST");
    assert_eq!(req.query.get("x"), Some(&json!("1")));
    assert_eq!(
        req.json_body(),
        Some(json!({"jobId": "render", "taskId": "t1"}))
    );
    let docs_form =
        r#"{"Data": {"req": {"Url": "u", "Method": "POST", "Query": "{}", "Headers": {}}}}"#;
    let req = http_request(&request(docs_form), "req").unwrap();
    assert!(req.query.is_empty());
    assert_eq!(req.json_body(), None, "no body");
    assert!(http_request(&request(r#"{"Data": {"req": 3}}"#), "req").is_err());
}

#[test]
fn responses_have_the_host_shape() {
    let response = InvokeResponse::http(
        404,
        &json!({"error": "no such job"}),
        vec!["looked up job".to_owned()],
    );
    let value = serde_json::to_value(&response).unwrap();
    assert_eq!(value["Outputs"]["res"]["statusCode"], 404);
    assert_eq!(
        value["Outputs"]["res"]["body"],
        "{\"error\":\"no such job\"}"
    );
    assert_eq!(value["Logs"][0], "looked up job");
    assert_eq!(value["ReturnValue"], Value::Null);
    let retry = request(
        r#"{"Data": {}, "Metadata": {"RetryContext": {"RetryCount": 2, "MaxRetryCount": 5}}}"#,
    );
    assert_eq!(retry.retry_count(), 2);
    assert_eq!(request(r#"{"Data": {}}"#).retry_count(), 0);
}

#[test]
fn function_definitions_use_the_documented_binding_names() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("functions");
    for (function, binding, kind) in [
        ("TaskEvents", "events", "eventHubTrigger"),
        ("TaskEvents2", "events", "eventHubTrigger"),
        ("TaskEvents3", "events", "eventHubTrigger"),
        ("TaskEvents4", "events", "eventHubTrigger"),
        ("TaskEventGrid", "event", "eventGridTrigger"),
        ("Sweep", "timer", "timerTrigger"),
        ("Diagnose", "req", "httpTrigger"),
    ] {
        let text = std::fs::read_to_string(dir.join(function).join("function.json")).unwrap();
        let definition: Value = serde_json::from_str(&text).unwrap();
        let trigger = &definition["bindings"][0];
        assert_eq!(trigger["name"], binding, "{function}");
        assert_eq!(trigger["type"], kind, "{function}");
    }
    let events: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("TaskEvents/function.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(events["bindings"][0]["cardinality"], "many");
    assert_eq!(events["bindings"][0]["dataType"], "string");
    assert_eq!(
        events["retry"]["strategy"], "exponentialBackoff",
        "Event Hubs checkpoints failed batches: a retry policy is the only second chance"
    );
}

#[test]
fn an_event_hub_invocation_decodes_into_diagnosable_bodies() {
    // The example batch of diagnostic records, as the host delivers two events of it.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/payloads/eventhub-records.json");
    let record_batch: Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let compact = record_batch.to_string();
    let events = serde_json::to_string(&vec![compact.clone(), compact]).unwrap();
    let body = json!({"Data": {"events": events}, "Metadata": {
        "PartitionContext": {"EventHubName": "batch-logs", "PartitionId": "0"},
        "SequenceNumberArray": "[17,18]", "sys": {"MethodName": "TaskEvents"}}});
    let bodies = event_hub_bodies(&request(&body.to_string()), "events").unwrap();
    assert_eq!(bodies.len(), 2);
    let mut diagnoses = Vec::new();
    for body in &bodies {
        diagnosis::payload::read_slice(body.as_bytes(), &mut |item| {
            diagnoses.extend(diagnosis::diagnose_item(
                &item,
                &diagnosis::Evidence::default(),
            ));
        })
        .unwrap();
    }
    assert_eq!(diagnoses.len(), 14, "7 diagnoses per event body");
    assert_eq!(diagnoses[0].class.as_str(), "task.exit_code");
    assert_eq!(diagnoses[0].subject.account.as_deref(), Some("contoso"));
}

#[test]
fn the_last_attempt_is_when_the_retries_are_used_up_or_there_is_no_policy() {
    let at = |context: &str| {
        request(&format!(
            r#"{{"Data": {{}}, "Metadata": {{"RetryContext": {context}}}}}"#
        ))
    };
    assert!(!at(r#"{"RetryCount": 0, "MaxRetryCount": 5}"#).is_last_attempt());
    assert!(!at(r#"{"RetryCount": 4, "MaxRetryCount": 5}"#).is_last_attempt());
    assert!(at(r#"{"RetryCount": 5, "MaxRetryCount": 5}"#).is_last_attempt());
    // Encoded twice, as the host does with strings.
    assert!(at(r#""{\"RetryCount\": \"5\", \"MaxRetryCount\": \"5\"}""#).is_last_attempt());
    // -1 retries forever.
    assert!(!at(r#"{"RetryCount": 500, "MaxRetryCount": -1}"#).is_last_attempt());
    // No counts, or no policy at all: assume the worst, so nothing is lost.
    assert!(at(r#"{"Exception": null}"#).is_last_attempt());
    assert!(request(r#"{"Data": {}}"#).is_last_attempt());
}

#[test]
fn event_hub_positions_come_from_the_partition_context_and_sequence_numbers() {
    let positions = request(
        r#"{"Data": {}, "Metadata": {
            "PartitionContext": {"EventHubName": "insights-logs-servicelog", "PartitionId": "3", "ConsumerGroup": "$Default"},
            "SequenceNumberArray": "[17,18]"}}"#,
    )
    .event_hub_positions()
    .unwrap();
    assert_eq!(positions.hub, "insights-logs-servicelog");
    assert_eq!(positions.partition, "3");
    assert_eq!(positions.sequences, [17, 18]);
    // Numbers as strings, and the whole array encoded twice.
    let strings = request(
        r#"{"Data": {}, "Metadata": {"PartitionContext": {"EventHubName": "h", "PartitionId": 0},
            "SequenceNumberArray": "\"[\\\"7\\\"]\""}}"#,
    )
    .event_hub_positions()
    .unwrap();
    assert_eq!(
        (strings.partition.as_str(), strings.sequences.as_slice()),
        ("0", &[7][..])
    );
    for broken in [
        r#"{"Data": {}, "Metadata": {"SequenceNumberArray": "[1]"}}"#,
        r#"{"Data": {}, "Metadata": {"PartitionContext": {"EventHubName": "h", "PartitionId": "0"}}}"#,
        r#"{"Data": {}, "Metadata": {"PartitionContext": {"EventHubName": "h", "PartitionId": "0"}, "SequenceNumberArray": "[1, \"x\"]"}}"#,
        r#"{"Data": {}, "Metadata": {"PartitionContext": {"PartitionId": "0"}, "SequenceNumberArray": "[1]"}}"#,
    ] {
        assert_eq!(request(broken).event_hub_positions(), None, "{broken}");
    }
}
