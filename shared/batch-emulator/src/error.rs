//! Batch error responses: the real body shape (docs/batch-facts.md) and the codes the emulator uses.
//!
//! An [`ApiError`] is plain data; [`ApiError::render`] turns it into the wire body
//! `{"odata.metadata", "code", "message": {"lang", "value"}, "values": [{"key", "value"}]}`, with
//! `\nRequestId:…\nTime:…` appended to the message exactly as the service does.

use axum::http::StatusCode;
use serde_json::{Value, json};

/// One Batch REST error, before it is rendered for a particular request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    /// HTTP status of the response.
    pub(crate) status: StatusCode,
    /// The Batch error code (`JobNotFound`, `AuthenticationFailed`, …).
    pub(crate) code: String,
    /// The human message, without the RequestId/Time suffix.
    pub(crate) message: String,
    /// Extra `values[{key,value}]` entries.
    pub(crate) values: Vec<(String, String)>,
    /// `Retry-After` seconds for throttling responses.
    pub(crate) retry_after: Option<u64>,
}

impl ApiError {
    /// An error with no extra values.
    pub(crate) fn new(status: StatusCode, code: &str, message: &str) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.to_owned(),
            values: Vec::new(),
            retry_after: None,
        }
    }

    /// Adds one `values` entry.
    pub(crate) fn with_value(mut self, key: &str, value: impl Into<String>) -> Self {
        self.values.push((key.to_owned(), value.into()));
        self
    }

    /// Sets `Retry-After`.
    pub(crate) fn with_retry_after(mut self, seconds: Option<u64>) -> Self {
        self.retry_after = seconds;
        self
    }

    /// The wire body for this error.
    pub(crate) fn render(&self, base_url: &str, request_id: &str, time: &str) -> Value {
        let mut body = json!({
            "odata.metadata": format!(
                "{base_url}/$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element"
            ),
            "code": self.code,
            "message": {
                "lang": "en-US",
                "value": format!("{}\nRequestId:{request_id}\nTime:{time}", self.message),
            },
        });
        if !self.values.is_empty() {
            body["values"] = self
                .values
                .iter()
                .map(|(key, value)| json!({"key": key, "value": value}))
                .collect();
        }
        body
    }

    pub(crate) fn job_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "JobNotFound",
            "The specified job does not exist.",
        )
    }

    pub(crate) fn task_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "TaskNotFound",
            "The specified task does not exist.",
        )
    }

    pub(crate) fn pool_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "PoolNotFound",
            "The specified pool does not exist.",
        )
    }

    pub(crate) fn node_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NodeNotFound",
            "The specified node does not exist.",
        )
    }

    pub(crate) fn node_not_ready() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "NodeNotReady",
            "Node is not able to perform the requested operations in its current state.",
        )
    }

    pub(crate) fn file_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "FileNotFound",
            "The specified file does not exist.",
        )
    }

    pub(crate) fn task_files_unavailable() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "TaskFilesUnavailable",
            "The files of the specified task are not available: the task retention time has expired.",
        )
    }

    pub(crate) fn task_files_cleaned_up() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "TaskFilesCleanedup",
            "The files of the specified task have been cleaned up from the node.",
        )
    }

    pub(crate) fn files_of_active_task() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "OperationInvalidForCurrentState",
            "The files of the specified task cannot be accessed as the task state is still active",
        )
    }

    pub(crate) fn job_completed() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "JobCompleted",
            "The specified job is already in a completed state.",
        )
    }

    pub(crate) fn job_being_terminated() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "JobBeingTerminated",
            "The specified job is being terminated.",
        )
    }

    pub(crate) fn job_not_active() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "JobNotActive",
            "The specified job is not in an active state.",
        )
    }

    pub(crate) fn task_completed() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "TaskCompleted",
            "The specified task is already in a completed state.",
        )
    }

    pub(crate) fn prep_not_specified() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "JobPreparationTaskNotSpecified",
            "The specified job does not have a job preparation task.",
        )
    }

    pub(crate) fn condition_not_met() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "ConditionNotMet",
            "The condition specified using HTTP conditional header(s) is not met.",
        )
    }

    pub(crate) fn missing_query_parameter(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "MissingRequiredQueryParameter",
            "A query parameter that's mandatory for this request is not specified.",
        )
        .with_value("QueryParameterName", name)
    }

    pub(crate) fn invalid_query_parameter(name: &str, value: &str, reason: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidQueryParameterValue",
            "Value for one of the query parameters specified in the request URI is invalid.",
        )
        .with_value("QueryParameterName", name)
        .with_value("QueryParameterValue", truncate(value, 512))
        .with_value("Reason", reason)
    }

    pub(crate) fn unsupported_version(value: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "UnsupportedRequestVersion",
            "The specified api-version is not supported.",
        )
        .with_value("QueryParameterName", "api-version")
        .with_value("QueryParameterValue", truncate(value, 128))
    }

    pub(crate) fn invalid_header(name: &str, value: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidHeaderValue",
            "The value for one of the HTTP headers is not in the correct format.",
        )
        .with_value("HeaderName", name)
        .with_value("HeaderValue", truncate(value, 256))
    }

    pub(crate) fn invalid_range(len: u64) -> Self {
        Self::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "InvalidRange",
            "The range specified is invalid for the current size of the resource.",
        )
        .with_value("ContentLength", len.to_string())
    }

    pub(crate) fn invalid_uri() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidUri",
            "The requested URI does not represent any resource on the server.",
        )
    }

    pub(crate) fn resource_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "The specified resource does not exist.",
        )
    }

    pub(crate) fn unsupported_verb(method: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UnsupportedHttpVerb",
            "The resource doesn't support specified Http Verb.",
        )
        .with_value("HttpVerb", truncate(method, 32))
    }

    pub(crate) fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestBodyTooLarge",
            "The request body is too large and exceeds the maximum permissible limit.",
        )
        .with_value("MaxLimit", limit.to_string())
    }

    pub(crate) fn invalid_body(reason: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestBody",
            "The specified Request Body is not syntactically valid.",
        )
        .with_value("Reason", reason)
    }

    pub(crate) fn missing_property(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "MissingRequiredProperty",
            "A required property was not specified in the request body.",
        )
        .with_value("PropertyName", name)
    }

    pub(crate) fn invalid_property(name: &str, value: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidPropertyValue",
            "The value provided for one of the properties in the request body is invalid.",
        )
        .with_value("PropertyName", name)
        .with_value("PropertyValue", truncate(value, 256))
    }

    pub(crate) fn authentication_failed(detail: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "AuthenticationFailed",
            "Server failed to authenticate the request. Make sure the value of Authorization header is correctly formed including the signature.",
        )
        .with_value("AuthenticationErrorDetail", detail)
    }

    pub(crate) fn invalid_token(detail: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "The access token is missing or invalid.",
        )
        .with_value("AuthenticationErrorDetail", detail)
    }

    pub(crate) fn too_many_requests(retry_after: u64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "Request failed as server encountered too many requests. Please try again.",
        )
        .with_retry_after(Some(retry_after))
    }

    pub(crate) fn server_busy(retry_after: Option<u64>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServerBusy",
            "The server is currently unable to receive requests. Please retry your request.",
        )
        .with_retry_after(retry_after)
    }

    pub(crate) fn operation_timed_out() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "OperationTimedOut",
            "The operation could not be completed within the permitted time.",
        )
    }

    pub(crate) fn internal_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "The server encountered an internal error. Please retry the request.",
        )
    }
}

/// Cuts hostile input that is echoed back in error values to a bounded length.
fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}
