//! Where a pipeline result becomes what Lambda and its callers act on.
//!
//! - HTTP invocations (Event Grid through a Function URL or API Gateway) always *succeed* as
//!   Lambda invocations and carry their verdict in the status code, because a failed invocation
//!   reaches the caller as a bare 502: 2xx acknowledges, 400 marks a poison delivery (Event Grid
//!   does not retry it), 401 a wrong key, 503 a transient failure (Event Grid retries it).
//! - Every other invocation reports a failure as an error whose `errorType` is `Retryable` or
//!   `NonRetryable`, so asynchronous invocations, EventBridge and the person reading the logs can
//!   tell a throttled Batch account from a typo in a job id.

use std::collections::BTreeMap;

use batch_client::BatchError;
use lambda_runtime::Diagnostic;
use pipeline::Verdict;
use pipeline::triage::{RunReport, TriageError};
use pipeline::webhook::Response;
use serde::Serialize;
use serde_json::json;

use crate::event::PayloadFormat;

/// The `errorType` of a transient failure: the same invocation may succeed later.
pub const RETRYABLE: &str = "Retryable";
/// The `errorType` of a failure a retry cannot fix: bad input, a job that does not exist, a
/// refused credential.
pub const NON_RETRYABLE: &str = "NonRetryable";

/// A failed non-HTTP invocation. The message never holds a secret: it comes from the pipeline's
/// errors (which redact) or from this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvocationError {
    /// Whether retrying the same invocation may succeed.
    pub retryable: bool,
    /// What went wrong.
    pub message: String,
}

impl InvocationError {
    /// A failure worth retrying.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            message: message.into(),
        }
    }

    /// A failure no retry can fix.
    pub fn non_retryable(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            message: message.into(),
        }
    }

    /// A failed Batch call: retryable when Batch throttled or failed transiently (the
    /// pipeline's [`Verdict`] decides).
    pub fn from_batch(error: &BatchError) -> Self {
        let verdict = Verdict::of_batch_error(error);
        Self {
            retryable: verdict.is_retry(),
            message: error.to_string(),
        }
    }

    /// The `errorType` Lambda records.
    pub fn error_type(&self) -> &'static str {
        if self.retryable {
            RETRYABLE
        } else {
            NON_RETRYABLE
        }
    }
}

impl From<InvocationError> for Diagnostic {
    fn from(error: InvocationError) -> Self {
        Diagnostic {
            error_type: error.error_type().to_owned(),
            error_message: error.message,
        }
    }
}

/// The response object a Function URL or API Gateway (both payload formats) turns into HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpResponse {
    /// The status code.
    pub status_code: u16,
    /// Response headers.
    pub headers: BTreeMap<String, String>,
    /// The body, as text.
    pub body: String,
    /// Always false: bodies are JSON text.
    pub is_base64_encoded: bool,
    /// Payload format 2.0 only (absent for REST APIs, which take no such field). Always empty;
    /// sent because `cargo lambda watch` refuses a 2.0 response without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookies: Option<Vec<String>>,
}

impl HttpResponse {
    /// A JSON response.
    pub fn json(status_code: u16, body: &serde_json::Value) -> Self {
        Self {
            status_code,
            headers: BTreeMap::from([("content-type".to_owned(), "application/json".to_owned())]),
            body: body.to_string(),
            is_base64_encoded: false,
            cookies: None,
        }
    }

    /// The response in the request's payload format.
    pub fn for_format(mut self, format: PayloadFormat) -> Self {
        self.cookies = match format {
            PayloadFormat::V1 => None,
            PayloadFormat::V2 => Some(Vec::new()),
        };
        self
    }
}

impl From<Response> for HttpResponse {
    fn from(response: Response) -> Self {
        Self {
            status_code: response.status,
            headers: response
                .headers
                .into_iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value))
                .collect(),
            // The gate's bodies are JSON it wrote itself, so always UTF-8.
            body: String::from_utf8_lossy(&response.body).into_owned(),
            is_base64_encoded: false,
            cookies: None,
        }
    }
}

/// The answer to a delivery the pipeline ran: the pipeline's [`Verdict`] as a status code (503
/// when a subject failed in a way a retry may fix, 400 for a payload that cannot be read, 200
/// otherwise).
pub fn delivery_response(result: &Result<RunReport, TriageError>) -> HttpResponse {
    let verdict = Verdict::of_payload(result);
    let status = verdict.http_status();
    match (result, verdict) {
        // The lines name Batch endpoints and request ids: the handler logs them; the caller is
        // told only that it may retry.
        (Ok(_), verdict @ Verdict::Retry { .. }) => {
            let mut body = verdict.public_body();
            body["retry"] = json!(true);
            HttpResponse::json(status, &body)
        }
        (Ok(report), _) => HttpResponse::json(
            status,
            &json!({"subjects": report.lines(), "ignoredItems": report.ignored_items}),
        ),
        (Err(error), _) => HttpResponse::json(status, &json!({"error": error.to_string()})),
    }
}

#[cfg(test)]
mod tests {
    use pipeline::triage::{Outcome, SubjectReport};

    use super::*;

    fn report(outcome: Outcome) -> RunReport {
        let mut subject = SubjectReport {
            subject: "devbatch1/etl/oom".to_owned(),
            class: None,
            preserved: Vec::new(),
            already_preserved: false,
            notified: Vec::new(),
            outboxed: Vec::new(),
            waiting: 0,
            action: None,
            outcome: Outcome::Done,
        };
        subject.outcome = outcome;
        RunReport {
            subjects: vec![subject],
            ignored_items: 0,
        }
    }

    fn body(response: &HttpResponse) -> serde_json::Value {
        serde_json::from_str(&response.body).unwrap()
    }

    #[test]
    fn a_transient_failure_asks_event_grid_to_retry() {
        let response = delivery_response(&Ok(report(Outcome::Failed {
            reason: "throttled: get task https://devbatch1.westeurope.batch.azure.com (client-request-id 42)".to_owned(),
            retryable: true,
        })));
        assert_eq!(response.status_code, 503);
        assert_eq!(body(&response)["retry"], true);
        assert!(
            !response.body.contains("batch.azure.com"),
            "{}",
            response.body
        );
        assert!(
            !response.body.contains("client-request-id"),
            "{}",
            response.body
        );
    }

    #[test]
    fn a_permanent_failure_or_success_is_acknowledged() {
        for outcome in [
            Outcome::Done,
            Outcome::Skipped("gone".to_owned()),
            Outcome::Refused("other account".to_owned()),
            Outcome::Failed {
                reason: "bad request".to_owned(),
                retryable: false,
            },
        ] {
            let response = delivery_response(&Ok(report(outcome.clone())));
            assert_eq!(response.status_code, 200, "{outcome:?}");
            assert!(
                body(&response)["subjects"][0]
                    .as_str()
                    .unwrap()
                    .starts_with("devbatch1/etl/oom")
            );
        }
    }

    #[test]
    fn an_unreadable_payload_is_400() {
        let error = diagnosis_error();
        let response = delivery_response(&Err(error));
        assert_eq!(response.status_code, 400);
        assert!(
            body(&response)["error"]
                .as_str()
                .unwrap()
                .contains("unreadable")
        );
    }

    fn diagnosis_error() -> TriageError {
        // A real PayloadError, from the real reader.
        let mut sink = |_item: diagnosis::Item| {};
        let error = diagnosis::payload::read_slice(b"{\"records\": [", &mut sink).unwrap_err();
        TriageError::Payload(error)
    }

    #[test]
    fn the_error_type_is_what_lambda_records() {
        let diagnostic: Diagnostic = InvocationError::retryable("throttled").into();
        assert_eq!(diagnostic.error_type, "Retryable");
        assert_eq!(diagnostic.error_message, "throttled");
        let diagnostic: Diagnostic = InvocationError::non_retryable("no such job").into();
        assert_eq!(diagnostic.error_type, "NonRetryable");
    }

    #[test]
    fn the_response_object_has_the_platform_field_names() {
        let value = serde_json::to_value(HttpResponse::json(200, &json!({"a": 1}))).unwrap();
        assert_eq!(value["statusCode"], 200);
        assert_eq!(value["isBase64Encoded"], false);
        assert_eq!(value["headers"]["content-type"], "application/json");
        assert_eq!(value["body"], "{\"a\":1}");
        assert!(value.get("cookies").is_none(), "{value}");
        let v1 =
            serde_json::to_value(HttpResponse::json(200, &json!({})).for_format(PayloadFormat::V1))
                .unwrap();
        assert!(
            v1.get("cookies").is_none(),
            "REST APIs take no cookies: {v1}"
        );
        let v2 =
            serde_json::to_value(HttpResponse::json(200, &json!({})).for_format(PayloadFormat::V2))
                .unwrap();
        assert_eq!(v2["cookies"], json!([]));
    }

    #[test]
    fn gate_responses_keep_their_headers() {
        let response: HttpResponse = Response::error(401, "wrong key").into();
        assert_eq!(response.status_code, 401);
        assert_eq!(response.headers["content-type"], "application/json");
        assert!(response.body.contains("wrong key"));
    }
}
