//! What bad input is told: where, and what is wrong.

use batch_triage_diagnosis::PayloadError;
use batch_triage_diagnosis::payload::read_slice;

fn read_error(text: &str) -> PayloadError {
    read_slice(text.as_bytes(), &mut |_| {}).expect_err("expected an error")
}

#[test]
fn a_wrong_field_type_names_the_path_and_position() {
    let text = "{\"value\": [\n  {\"id\": \"t1\", \"commandLine\": \"x\"},\n  {\"id\": \"t2\", \"commandLine\": \"x\", \"executionInfo\": {\"exitCode\": \"abc\"}}\n]}";
    match read_error(text) {
        PayloadError::Shape {
            path,
            line,
            column,
            message,
        } => {
            assert_eq!(path, "value[1].executionInfo.exitCode");
            assert_eq!(line, Some(3));
            assert!(column.is_some_and(|c| c > 40), "column {column:?}");
            assert!(message.contains("\"abc\""), "{message}");
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
}

#[test]
fn errors_inside_nested_event_data_are_located_in_the_whole_input() {
    let text = "[\n {\"eventType\": \"x\", \"subject\": \"s\",\n  \"data\": {\"jobId\": \"j\", \"id\": \"t\", \"taskType\": \"User\", \"executionInfo\": {\"retryCount\": true}}}\n]";
    match read_error(text) {
        PayloadError::Shape { path, line, .. } => {
            assert_eq!(path, "[0].data.executionInfo.retryCount");
            assert_eq!(line, Some(3));
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
}

#[test]
fn timestamps_and_durations_that_are_not_are_refused_with_the_path() {
    let err = read_error(
        r#"{"id": "t", "commandLine": "x", "executionInfo": {"startTime": "yesterday", "retryCount": 0}}"#,
    );
    assert!(err.to_string().contains("executionInfo.startTime"), "{err}");
    assert!(err.to_string().contains("yesterday"), "{err}");
    let err = read_error(
        r#"{"id": "t", "commandLine": "x", "constraints": {"maxWallClockTime": "an hour"}}"#,
    );
    assert!(
        err.to_string().contains("constraints.maxWallClockTime"),
        "{err}"
    );
}

#[test]
fn input_that_is_not_a_payload_says_so() {
    let err = read_error(r#"{"name": "Alice", "age": 3}"#);
    assert!(matches!(err, PayloadError::Unrecognised { .. }), "{err:?}");
    assert!(err.to_string().contains("keys age, name"), "{err}");
    assert!(matches!(
        read_error("42"),
        PayloadError::Unrecognised { .. }
    ));
    assert!(matches!(read_error("   \n"), PayloadError::Empty));
    assert!(matches!(
        read_error("{\"value\": [1, 2]}"),
        PayloadError::Unrecognised { .. }
    ));
    assert!(matches!(
        read_error("{\"eventType\": \"x\", \"subject\": \"s\"}"),
        PayloadError::Unrecognised { .. }
    ));
}

#[test]
fn invalid_json_and_invalid_utf8() {
    match read_error("{\"id\": \"t\",\n \"state\" \"completed\"}") {
        PayloadError::Syntax { line, column, .. } => assert_eq!((line, column), (2, 10)),
        other => panic!("{other:?}"),
    }
    let err = read_slice(b"{\"id\": \"\xff\"}", &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("not UTF-8"), "{err}");
}

#[test]
fn deeply_nested_envelopes_are_refused_not_followed() {
    let mut text = r#"{"jobId": "j", "id": "t", "taskType": "User"}"#.to_owned();
    for _ in 0..10 {
        text = format!(r#"{{"specversion": "1.0", "data": {text}}}"#);
    }
    let err = read_error(&text);
    assert!(err.to_string().contains("nested too deep"), "{err}");
}
