//! Errors, classified by what the caller will do about them (retry, fix the request, or report a missing thing).
//!
//! Every [`BatchError`] carries an [`ErrorInfo`]: the HTTP status, the Batch error code, the
//! message without its `RequestId:`/`Time:` lines, and both request ids, so that a log line or a
//! support ticket has what Microsoft asks for. Keys and tokens never appear in any of it.

use std::fmt;
use std::time::Duration;

use diagnosis::wire::{BatchErrorBody, ErrorDetail};

/// What went wrong with one Batch call, and the ids to find it again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorInfo {
    /// The HTTP status, when the service answered at all.
    pub status: Option<u16>,
    /// The Batch error code (`TaskNotFound`, `JobCompleted`, …), when the body had one.
    pub code: Option<String>,
    /// Human text: the service's message without the `RequestId:`/`Time:` lines, or ours.
    pub message: String,
    /// The service's `request-id` header: Microsoft support asks for it.
    pub request_id: Option<String>,
    /// The `client-request-id` this client sent, to find the call in our own logs.
    pub client_request_id: Option<String>,
    /// The `values[{key, value}]` of the error body (e.g. `AuthenticationErrorDetail`).
    pub details: Vec<ErrorDetail>,
    /// The operation that failed (`get_task`, `list_tasks`, …), for logs.
    pub operation: &'static str,
    /// How many HTTP attempts were made before giving up (0 when refused before sending).
    pub attempts: u32,
}

impl ErrorInfo {
    /// An error the client raises itself, before or without a response.
    pub(crate) fn local(operation: &'static str, message: impl Into<String>) -> Self {
        Self {
            operation,
            message: message.into(),
            ..Self::default()
        }
    }

    /// An error built from a Batch error body (or what was read of it).
    pub(crate) fn from_response(
        operation: &'static str,
        status: u16,
        body: &[u8],
        request_id: Option<String>,
        client_request_id: Option<String>,
    ) -> Self {
        let parsed: Option<BatchErrorBody> = serde_json::from_slice(body).ok();
        let (code, message, details, body_request_id) = match &parsed {
            Some(body) => (
                body.code.clone().filter(|code| !code.is_empty()),
                body.message_text().map(str::to_owned),
                body.values.clone(),
                body.request_id().map(str::to_owned),
            ),
            None => (None, None, Vec::new(), None),
        };
        let message = message.unwrap_or_else(|| fallback_message(status, body));
        Self {
            status: Some(status),
            code,
            message,
            request_id: request_id.or(body_request_id),
            client_request_id,
            details,
            operation,
            attempts: 0,
        }
    }
}

/// A message for an error response that has no Batch error body (a proxy page, an empty body).
fn fallback_message(status: u16, body: &[u8]) -> String {
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|status| status.canonical_reason())
        .unwrap_or("unexpected status");
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    if text.trim().is_empty() {
        format!("HTTP {status} {reason}")
    } else {
        format!("HTTP {status} {reason}: {}", text.trim())
    }
}

impl fmt::Display for ErrorInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.operation, self.message)?;
        let mut extras = Vec::new();
        if let Some(status) = self.status {
            extras.push(format!("status {status}"));
        }
        if let Some(code) = &self.code {
            extras.push(format!("code {code}"));
        }
        if let Some(id) = &self.request_id {
            extras.push(format!("request-id {id}"));
        }
        if let Some(id) = &self.client_request_id {
            extras.push(format!("client-request-id {id}"));
        }
        if self.attempts > 1 {
            extras.push(format!("after {} attempts", self.attempts));
        }
        if !extras.is_empty() {
            write!(f, " ({})", extras.join(", "))?;
        }
        Ok(())
    }
}

/// A failed Batch call, by what the caller can do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// 404: the job, task, node or file does not exist (`code` says which).
    #[error("not found: {0}")]
    NotFound(Box<ErrorInfo>),
    /// 409: the resource is in a state that forbids the call (`TaskCompleted`, `JobCompleted`,
    /// `OperationInvalidForCurrentState`, …). Not retried.
    #[error("conflict: {0}")]
    Conflict(Box<ErrorInfo>),
    /// 412: an `If-Match` ETag no longer matches, so someone else changed the job first.
    #[error("precondition failed: {0}")]
    PreconditionFailed(Box<ErrorInfo>),
    /// 429, or 503 `ServerBusy`: retry after `retry_after` (retries ran out or the deadline is too
    /// close to wait).
    #[error("throttled: {info}")]
    Throttled {
        /// The details.
        info: Box<ErrorInfo>,
        /// How long the service asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// 5xx, a timeout, a dropped connection or the deadline reached: worth retrying later.
    #[error("transient failure: {0}")]
    Transient(Box<ErrorInfo>),
    /// 401/403: bad key, expired token, missing role (`AuthenticationFailed`,
    /// `InsufficientAccountPermissions`), or no token could be obtained.
    #[error("authentication or authorization failed: {0}")]
    Auth(Box<ErrorInfo>),
    /// 400/413/416, or an argument this client refuses to send (an empty id, `..`).
    #[error("bad request: {0}")]
    BadRequest(Box<ErrorInfo>),
    /// Refused by this client before any request: a URL that is not same-origin with the
    /// configured account endpoint (SSRF guard).
    #[error("refused: {0}")]
    Refused(Box<ErrorInfo>),
    /// A resumed download found the file changed (Last-Modified, ETag or size) since it started:
    /// the bytes already read belong to another version. Start again from byte 0.
    #[error("file changed during download: {0}")]
    FileChanged(Box<ErrorInfo>),
    /// Anything else: an unexpected status, a redirect (never followed), an unreadable body.
    #[error("{0}")]
    Other(Box<ErrorInfo>),
}

impl BatchError {
    /// The details every variant carries.
    pub fn info(&self) -> &ErrorInfo {
        match self {
            Self::NotFound(info)
            | Self::Conflict(info)
            | Self::PreconditionFailed(info)
            | Self::Throttled { info, .. }
            | Self::Transient(info)
            | Self::Auth(info)
            | Self::BadRequest(info)
            | Self::Refused(info)
            | Self::FileChanged(info)
            | Self::Other(info) => info,
        }
    }

    pub(crate) fn info_mut(&mut self) -> &mut ErrorInfo {
        match self {
            Self::NotFound(info)
            | Self::Conflict(info)
            | Self::PreconditionFailed(info)
            | Self::Throttled { info, .. }
            | Self::Transient(info)
            | Self::Auth(info)
            | Self::BadRequest(info)
            | Self::Refused(info)
            | Self::FileChanged(info)
            | Self::Other(info) => info,
        }
    }

    /// The Batch error code, e.g. `TaskCompleted`.
    pub fn code(&self) -> Option<&str> {
        self.info().code.as_deref()
    }

    /// The HTTP status, if the service answered.
    pub fn status(&self) -> Option<u16> {
        self.info().status
    }

    /// The service's `request-id`.
    pub fn request_id(&self) -> Option<&str> {
        self.info().request_id.as_deref()
    }

    /// The `client-request-id` this client sent.
    pub fn client_request_id(&self) -> Option<&str> {
        self.info().client_request_id.as_deref()
    }

    /// Whether trying again later may succeed (throttling and transient failures). Handlers turn
    /// this into a platform verdict: a 5xx to the Functions host, `Retryable` on Lambda.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Throttled { .. } | Self::Transient(_))
    }

    /// How long the service asked us to wait, for a throttled call.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the thing asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_))
    }

    pub(crate) fn refused(operation: &'static str, message: impl Into<String>) -> Self {
        Self::Refused(Box::new(ErrorInfo::local(operation, message)))
    }

    pub(crate) fn bad_argument(operation: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest(Box::new(ErrorInfo::local(operation, message)))
    }

    pub(crate) fn transient(operation: &'static str, message: impl Into<String>) -> Self {
        Self::Transient(Box::new(ErrorInfo::local(operation, message)))
    }

    pub(crate) fn other(operation: &'static str, message: impl Into<String>) -> Self {
        Self::Other(Box::new(ErrorInfo::local(operation, message)))
    }

    /// Classifies an error response by status and code.
    pub(crate) fn from_status(info: ErrorInfo, retry_after: Option<Duration>) -> Self {
        let info = Box::new(info);
        let status = info.status.unwrap_or(0);
        match status {
            400 | 413 | 414 | 416 | 422 => Self::BadRequest(info),
            401 | 403 => Self::Auth(info),
            404 => Self::NotFound(info),
            409 => Self::Conflict(info),
            412 => Self::PreconditionFailed(info),
            429 => Self::Throttled { info, retry_after },
            503 if retry_after.is_some() || info.code.as_deref() == Some("ServerBusy") => {
                Self::Throttled { info, retry_after }
            }
            408 | 500..=599 => Self::Transient(info),
            _ => Self::Other(info),
        }
    }
}

/// A problem with the configuration, found when the client is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required setting is missing (e.g. `AZURE_BATCH_ENDPOINT`).
    #[error("missing setting {0}")]
    Missing(&'static str),
    /// The endpoint is not an acceptable Batch account URL.
    #[error("invalid endpoint: {0}")]
    InvalidEndpoint(String),
    /// The account key is not base64.
    #[error("the account key is not valid base64")]
    InvalidKey,
    /// Another invalid setting.
    #[error("invalid setting {name}: {reason}")]
    Invalid {
        /// Which setting.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// The Entra credential could not be created.
    #[error("cannot create the Entra credential: {0}")]
    Credential(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

/// The retry policy (in `foundation`) reads the same classification the handlers do.
impl foundation::Retryable for BatchError {
    fn is_retryable(&self) -> bool {
        BatchError::is_retryable(self)
    }

    fn retry_after(&self) -> Option<Duration> {
        BatchError::retry_after(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TASK_COMPLETED: &str = r#"{
      "odata.metadata":"https://a.uksouth.batch.azure.com/$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element",
      "code":"TaskCompleted",
      "message":{"lang":"en-US","value":"The specified task is already in a completed state.\nRequestId:c4f5fc32-356d-47c2-a2c2-789081828db5\nTime:2023-03-09T11:47:41.9926741Z"}}"#;

    fn classify(status: u16, body: &str, retry_after: Option<Duration>) -> BatchError {
        let info = ErrorInfo::from_response("op", status, body.as_bytes(), None, Some("c".into()));
        BatchError::from_status(info, retry_after)
    }

    #[test]
    fn real_conflict_body_maps_to_conflict_with_code_and_stripped_message() {
        let error = classify(409, TASK_COMPLETED, None);
        assert!(matches!(error, BatchError::Conflict(_)));
        assert_eq!(error.code(), Some("TaskCompleted"));
        assert_eq!(
            error.info().message,
            "The specified task is already in a completed state."
        );
        // The request id comes from the body when the header is missing.
        assert_eq!(
            error.request_id(),
            Some("c4f5fc32-356d-47c2-a2c2-789081828db5")
        );
        assert_eq!(error.client_request_id(), Some("c"));
        assert!(!error.is_retryable());
        assert!(!error.to_string().contains("RequestId:"));
    }

    #[test]
    fn corpus_error_bodies_parse() {
        // Error bodies the service really sent, quoted in public issues and answers.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/test_data/errors");
        let cases = [
            (
                "BatchError.TooManyRequests.429.nextflow-2688.json",
                429,
                "TooManyRequests",
            ),
            (
                "BatchError.TaskCompleted.409.nf-tower-385.json",
                409,
                "TaskCompleted",
            ),
            (
                "BatchError.MissingRequiredQueryParameter.400.stackoverflow.json",
                400,
                "MissingRequiredQueryParameter",
            ),
        ];
        for (file, status, code) in cases {
            let Ok(body) = std::fs::read(format!("{dir}/{file}")) else {
                panic!("corpus file {file} missing under {dir}");
            };
            let info = ErrorInfo::from_response("op", status, &body, None, None);
            assert_eq!(info.code.as_deref(), Some(code), "{file}");
            assert!(
                !info.message.contains("RequestId:"),
                "{file}: {}",
                info.message
            );
        }
    }

    #[test]
    fn statuses_map_to_variants() {
        assert!(matches!(classify(404, "{}", None), BatchError::NotFound(_)));
        assert!(matches!(classify(401, "", None), BatchError::Auth(_)));
        assert!(matches!(classify(403, "", None), BatchError::Auth(_)));
        assert!(matches!(
            classify(412, "", None),
            BatchError::PreconditionFailed(_)
        ));
        assert!(matches!(classify(400, "", None), BatchError::BadRequest(_)));
        assert!(matches!(classify(416, "", None), BatchError::BadRequest(_)));
        assert!(matches!(classify(500, "", None), BatchError::Transient(_)));
        assert!(matches!(classify(302, "", None), BatchError::Other(_)));
        let throttled = classify(429, "", Some(Duration::from_secs(3)));
        assert_eq!(throttled.retry_after(), Some(Duration::from_secs(3)));
        assert!(throttled.is_retryable());
        let busy = classify(503, r#"{"code":"ServerBusy"}"#, None);
        assert!(matches!(busy, BatchError::Throttled { .. }));
        let unavailable = classify(503, "", None);
        assert!(matches!(unavailable, BatchError::Transient(_)));
        assert!(unavailable.is_retryable());
    }

    #[test]
    fn non_json_body_gives_a_short_message() {
        let error = classify(502, "<html>\n<body>Bad gateway</body></html>", None);
        assert!(
            error
                .info()
                .message
                .starts_with("HTTP 502 Bad Gateway: <html>")
        );
        let hostile = "x".repeat(10_000);
        assert!(classify(500, &hostile, None).info().message.len() < 300);
    }
}
