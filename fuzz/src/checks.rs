//! The properties every fuzz target checks. This file is also compiled into the workspace's
//! proptest campaign (`tests/integration/fuzz_props.rs`, which CI runs), so the two state the
//! same properties. It must stay free of libFuzzer: `super::protocol` is the Functions handler's
//! `protocol.rs`, included by path in both places.
//!
//! The properties, beyond "does not panic":
//! - every item a payload yields can be diagnosed, and the diagnosis serialises to JSON;
//! - a syntax error names a line and column inside the input;
//! - a shape error names a field path or a position;
//! - reading through a `Read` in small pieces gives what reading the bytes at once gives;
//! - a policy error names a line and column inside the file, and a parsed policy plans.

use std::io::Read;

use diagnosis::payload::{PayloadError, read_payload, read_slice};
use diagnosis::policy::{PlanContext, Policy, plan};
use diagnosis::{Evidence, Item, diagnose_item};

/// How many lines `bytes` has (a position's line can be one past the last newline).
fn line_count(bytes: &[u8]) -> usize {
    bytes.iter().filter(|b| **b == b'\n').count() + 1
}

/// Checks what an error says about where it is; `lines` (of the input) bounds the line number.
pub fn check_error(error: &PayloadError, lines: usize) {
    let message = error.to_string();
    assert!(!message.is_empty(), "an empty error message: {error:?}");
    match error {
        PayloadError::Syntax { line, column, .. } => {
            assert!(
                *line >= 1 && *line <= lines,
                "syntax error at line {line} of {lines}: {error:?}"
            );
            assert!(*column >= 1, "syntax error at column {column}: {error:?}");
        }
        PayloadError::Shape {
            path, line, column, ..
        } => {
            assert!(
                !path.is_empty() || line.is_some(),
                "a shape error with neither a path nor a position: {error:?}"
            );
            if let Some(line) = line {
                assert!(
                    *line >= 1 && *line <= lines,
                    "shape error at line {line} of {lines}: {error:?}"
                );
            }
            if let Some(column) = column {
                assert!(*column >= 1, "shape error at column {column}: {error:?}");
            }
        }
        PayloadError::Unrecognised { reason, .. } => {
            assert!(!reason.is_empty(), "unrecognised, but no reason: {error:?}");
        }
        PayloadError::Empty | PayloadError::Io(_) => {}
    }
}

/// Diagnoses one item the way the pipeline and the CLI do, and renders the result.
pub fn diagnose(item: &Item) {
    let evidence = Evidence {
        stderr_tail: Some("Traceback (most recent call last):\nMemoryError\nKilled"),
        ..Evidence::default()
    };
    if let Some(diagnosis) = diagnose_item(item, &evidence) {
        let json = serde_json::to_string(&diagnosis).expect("a diagnosis always serialises");
        assert!(json.starts_with('{'));
        let _ = diagnosis::redact::redact(&diagnosis.summary);
    }
}

/// A payload held in memory: `read_slice`, every item diagnosed, errors checked.
pub fn payload_slice(data: &[u8]) {
    let mut items = 0usize;
    match read_slice(data, &mut |item| {
        items += 1;
        diagnose(&item);
    }) {
        Ok(kind) => assert!(!kind.describe().is_empty()),
        Err(error) => check_error(&error, line_count(data)),
    }
}

/// A reader that hands out at most `chunk` bytes per call, like a socket or a pipe.
pub struct Trickle<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl<'a> Trickle<'a> {
    /// Reads `data` `chunk` bytes (at least 1) at a time.
    pub fn new(data: &'a [u8], chunk: usize) -> Self {
        Self {
            data,
            chunk: chunk.max(1),
        }
    }
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.chunk.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// A read size that varies with the input (1..=61 bytes) without spending input bytes on it, so
/// the seeds stay valid documents.
fn chunk_size(data: &[u8]) -> usize {
    data.len() % 61 + 1
}

/// The same input through `read_payload` in small reads must give the same verdict and the same
/// number of items as `read_slice`.
pub fn payload_reader(data: &[u8]) {
    let mut from_reader = 0usize;
    let read = read_payload(Trickle::new(data, chunk_size(data)), &mut |item| {
        from_reader += 1;
        diagnose(&item);
    });
    let mut from_slice = 0usize;
    let sliced = read_slice(data, &mut |_| from_slice += 1);
    match (&read, &sliced) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "the reader and the slice disagree on the kind");
            assert_eq!(from_reader, from_slice, "the reader and the slice disagree");
        }
        (Err(a), Err(b)) => {
            check_error(a, line_count(data));
            assert_eq!(a.to_string(), b.to_string(), "different errors");
        }
        _ => panic!("read_payload said {read:?} but read_slice said {sliced:?}"),
    }
}

/// Enough leading whitespace that `read_payload` streams the document instead of reading it
/// whole: this exercises the byte scanner that cuts list elements and records out of a bounded
/// buffer.
pub const STREAM_PADDING: usize = diagnosis::payload::IN_MEMORY_LIMIT + 1;

/// The streaming path: `data` after [`STREAM_PADDING`] spaces. Whatever the scanner accepts,
/// every element is diagnosed; whatever it refuses has a position.
pub fn payload_stream(data: &[u8]) {
    let padding = std::io::repeat(b' ').take(STREAM_PADDING as u64);
    let reader = padding.chain(Trickle::new(data, chunk_size(data) * 64));
    let mut items = 0usize;
    match read_payload(reader, &mut |item| {
        items += 1;
        diagnose(&item);
    }) {
        Ok(kind) => assert!(!kind.describe().is_empty()),
        Err(error) => check_error(&error, line_count(data)),
    }
}

/// Wraps `data` in each envelope a trigger delivers, so the fuzzer starts inside them: an Event
/// Grid event, a CloudEvent (JSON `data` and `data_base64`), a batch of each, and a records batch.
pub fn envelopes(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let encoded = serde_json::to_string(text).expect("a string serialises");
    let wrapped = [
        format!(
            r#"{{"id":"1","eventType":"Microsoft.Batch.TaskFailed","subject":"jobs/etl/tasks/t1","eventTime":"2026-11-27T10:00:00Z","dataVersion":"1","data":{text}}}"#
        ),
        format!(r#"[{{"id":"1","eventType":"x","subject":"s","data":{text}}}]"#),
        format!(
            r#"{{"specversion":"1.0","id":"1","source":"/batch","type":"Microsoft.Batch.TaskFailed","datacontenttype":"application/json","data":{text}}}"#
        ),
        format!(r#"[{{"specversion":"1.0","id":"1","source":"s","type":"t","data":{encoded}}}]"#),
        format!(
            r#"{{"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":{encoded}}}"#
        ),
        format!(r#"{{"records":[{text}]}}"#),
    ];
    for doc in wrapped {
        payload_slice(doc.as_bytes());
    }
}

/// Wraps `data` as REST bodies: a list page element, a task's `executionInfo`, a job, a prep
/// status, and a REST-spec example response.
pub fn rest_bodies(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let wrapped = [
        format!(
            r#"{{"value":[{text}],"odata.nextLink":"https://a.b.batch.azure.com/jobs?$skiptoken=x"}}"#
        ),
        format!(
            r#"{{"id":"t1","url":"https://a.b.batch.azure.com/jobs/j/tasks/t1","state":"completed","executionInfo":{text}}}"#
        ),
        format!(
            r#"{{"id":"j","url":"https://a.b.batch.azure.com/jobs/j","state":"active","executionInfo":{text}}}"#
        ),
        format!(
            r#"{{"value":[{{"poolId":"p","nodeId":"n","jobPreparationTaskExecutionInfo":{text}}}]}}"#
        ),
        format!(r#"{{"parameters":{{}},"responses":{{"200":{{"body":{text}}}}}}}"#),
        format!(r#"{{"odata.metadata":"m","code":"TaskNotFound","message":{text}}}"#),
    ];
    for doc in wrapped {
        payload_slice(doc.as_bytes());
    }
    payload_slice(data);
}

/// A policy file: parse errors have positions inside the file; a parsed policy plans.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Policy::parse(text) {
        Ok(policy) => {
            let task = serde_json::json!({"id": "t1", "state": "completed",
                "executionInfo": {"exitCode": 137, "result": "failure", "retryCount": 0, "requeueCount": 0,
                    "failureInfo": {"category": "UserError", "code": "FailureExitCode", "message": "m"}}});
            let mut diagnoses = Vec::new();
            read_slice(task.to_string().as_bytes(), &mut |item| {
                diagnoses.extend(diagnose_item(&item, &Evidence::default()));
            })
            .expect("the sample task parses");
            let now = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
            for diagnosis in &diagnoses {
                let _ = plan(
                    diagnosis,
                    &policy,
                    now,
                    &PlanContext {
                        stderr_tail: Some("Killed"),
                        ..PlanContext::default()
                    },
                );
            }
        }
        Err(errors) => {
            assert!(!errors.errors.is_empty(), "an error list with no error");
            let lines = line_count(data);
            for error in &errors.errors {
                assert!(
                    error.line >= 1 && error.line <= lines && error.column >= 1,
                    "policy error at {}:{} in a {lines}-line file: {error}",
                    error.line,
                    error.column
                );
                assert!(!error.message.is_empty());
            }
        }
    }
}

/// An invocation body from the Functions host: every decoder, then each decoded event through
/// the payload reader, as the handler does.
pub fn functions_protocol(data: &[u8]) {
    let Ok(request) = serde_json::from_slice::<super::protocol::InvokeRequest>(data) else {
        return;
    };
    let _ = request.retry_count();
    for name in request.data.keys() {
        let _ = request.binding(name);
    }
    for binding in ["events", "event", "req", "timer"] {
        if let Ok(bodies) = super::protocol::event_hub_bodies(&request, binding) {
            for body in bodies {
                payload_slice(body.as_bytes());
            }
        }
        if let Ok(event) = super::protocol::event_grid_event(&request, binding) {
            payload_slice(event.as_bytes());
        }
        if let Ok(http) = super::protocol::http_request(&request, binding) {
            if let Some(body) = http.json_body() {
                payload_slice(body.to_string().as_bytes());
            }
        }
        let _ = super::protocol::timer_info(&request, binding);
    }
}
