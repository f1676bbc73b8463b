use serde_json::{Value, json};

use super::*;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/events/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn http(event: &Value) -> HttpRequest {
    match classify(event) {
        Invocation::Http(_, Ok(request)) => request,
        other => panic!("not a usable HTTP request: {other:?}"),
    }
}

fn unknown(event: &Value) -> String {
    match classify(event) {
        Invocation::Unknown(reason) => reason,
        other => panic!("classified as {other:?}"),
    }
}

#[test]
fn an_eventbridge_schedule_is_the_timer() {
    assert_eq!(
        classify(&fixture("eventbridge-scheduled.json")),
        Invocation::Schedule
    );
}

#[test]
fn another_eventbridge_event_is_not_the_timer() {
    let mut event = fixture("eventbridge-scheduled.json");
    event["detail-type"] = json!("EC2 Instance State-change Notification");
    assert!(unknown(&event).contains("detail-type"));
}

#[test]
fn a_function_url_request_is_normalised() {
    let request = http(&fixture("function-url-event-grid.json"));
    assert_eq!(request.method, "POST");
    assert_eq!(request.key_param.as_deref(), Some("REPLACED-BY-THE-TEST"));
    assert!(
        request
            .header_pairs()
            .contains(&("aeg-event-type", "Notification"))
    );
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body[0]["data"]["taskId"], "oom");
}

#[test]
fn the_query_key_is_percent_decoded_and_picked_among_other_parameters() {
    let mut event = fixture("function-url-event-grid.json");
    event["rawQueryString"] = json!("code=x&key=abc%2Fdef%3D&key=second");
    assert_eq!(http(&event).key_param.as_deref(), Some("abc/def="));
    event["rawQueryString"] = json!("");
    assert_eq!(http(&event).key_param, None);
}

#[test]
fn the_payload_format_is_told_apart() {
    for (name, format) in [
        ("function-url-event-grid.json", PayloadFormat::V2),
        ("apigw-rest-cloudevents-batch.json", PayloadFormat::V1),
    ] {
        let Invocation::Http(found, _) = classify(&fixture(name)) else {
            panic!("{name} is not an HTTP request");
        };
        assert_eq!(found, format, "{name}");
    }
}

#[test]
fn an_options_preflight_has_no_body() {
    let request = http(&fixture("function-url-cloudevents-options.json"));
    assert_eq!(request.method, "OPTIONS");
    assert!(request.body.is_empty());
    assert!(
        request
            .header_pairs()
            .contains(&("webhook-request-origin", "eventgrid.azure.net"))
    );
}

#[test]
fn a_rest_api_request_with_a_base64_body_and_header_names_in_any_case() {
    let request = http(&fixture("apigw-rest-cloudevents-batch.json"));
    assert_eq!(request.method, "POST");
    assert_eq!(request.key_param, None);
    // multiValueHeaders win over headers, and names are lower-cased for the gate.
    assert!(
        request
            .header_pairs()
            .contains(&("x-batch-triage-key", "REPLACED-BY-THE-TEST"))
    );
    assert!(
        request
            .header_pairs()
            .iter()
            .any(|(name, _)| *name == "content-type")
    );
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body[0]["specversion"], "1.0");
}

#[test]
fn a_rest_api_query_key_comes_from_either_parameter_map() {
    let mut event = fixture("apigw-rest-cloudevents-batch.json");
    event["queryStringParameters"] = json!({"key": "single"});
    assert_eq!(http(&event).key_param.as_deref(), Some("single"));
    event["multiValueQueryStringParameters"] = json!({"key": ["multi"]});
    assert_eq!(http(&event).key_param.as_deref(), Some("multi"));
}

#[test]
fn a_request_whose_parts_are_unusable_is_a_400_not_a_crash() {
    let mut event = fixture("apigw-rest-cloudevents-batch.json");
    event["body"] = json!("%%% not base64");
    let Invocation::Http(_, Err(reason)) = classify(&event) else {
        panic!("expected a bad request");
    };
    assert!(reason.contains("base64"), "{reason}");

    let mut event = fixture("function-url-event-grid.json");
    event["headers"] = json!({"x-batch-triage-key": 5});
    let Invocation::Http(_, Err(reason)) = classify(&event) else {
        panic!("expected a bad request");
    };
    assert!(reason.contains("x-batch-triage-key"), "{reason}");
}

#[test]
fn a_direct_invocation_names_a_job_and_maybe_a_task() {
    assert_eq!(
        classify(&fixture("direct-diagnose.json")),
        Invocation::Diagnose {
            job_id: "etl".to_owned(),
            task_id: Some("oom".to_owned()),
            account: None,
        }
    );
    assert_eq!(
        classify(&json!({"jobId": "etl", "taskId": null})),
        Invocation::Diagnose {
            job_id: "etl".to_owned(),
            task_id: None,
            account: None,
        }
    );
    assert_eq!(
        classify(&json!({"jobId": "etl", "account": "devbatch2"})),
        Invocation::Diagnose {
            job_id: "etl".to_owned(),
            task_id: None,
            account: Some("devbatch2".to_owned()),
        }
    );
    assert!(unknown(&json!({"jobId": "etl", "account": 2})).contains("account"));
    assert!(unknown(&json!({"jobId": ""})).contains("jobId"));
    assert!(unknown(&json!({"jobId": 7})).contains("jobId"));
    assert!(unknown(&json!({"jobId": "etl", "taskId": ["a"]})).contains("taskId"));
}

#[test]
fn anything_else_is_unknown_and_the_reason_carries_no_values() {
    let reason = unknown(&json!({"password": "hunter2-do-not-echo", "other": 1}));
    assert!(reason.contains("password"), "{reason}");
    assert!(!reason.contains("hunter2"), "{reason}");
    assert!(unknown(&json!("a string")).contains("string"));
    assert!(unknown(&json!([1, 2])).contains("array"));
    assert!(unknown(&json!(null)).contains("null"));
    // Field names are listed, but not without bound.
    let many: serde_json::Map<String, Value> =
        (0..50).map(|i| (format!("f{i:02}"), json!(i))).collect();
    let reason = unknown(&Value::Object(many));
    assert!(reason.contains('…') && !reason.contains("f49"), "{reason}");
}
