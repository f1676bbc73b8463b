//! Sending: one [`BatchClient::request`] owns headers, auth, retries (the shared
//! [`RetryPolicy`](foundation::RetryPolicy)), error mapping and logging, so every operation gets
//! them the same way; `attempt` is one HTTP exchange. Also the helpers every operation shares:
//! JSON decoding, paging, and job/task actions.

use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use diagnosis::wire::ListPage;
use foundation::{Deadline, RetryDecision, parse_retry_after};
use futures::StreamExt;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use crate::api::{ActionOutcome, PageStream};
use crate::client::{Authenticator, BatchClient};
use crate::error::{BatchError, ErrorInfo};

/// The `Content-Type` of request bodies (docs/batch-facts.md: Batch wants `odata=minimalmetadata`).
const JSON_BODY: &str = "application/json; odata=minimalmetadata";

/// Largest error body read (the rest is dropped).
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// How a reply's body is consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Read the whole body (bounded) as JSON, within the attempt, so a dropped connection while
    /// reading it is retried like any other.
    Json,
    /// No useful body (202/204 actions): read and drop it.
    Empty,
    /// HEAD: headers only.
    Headers,
    /// Leave the body unread for the caller to stream (downloads).
    Stream,
}

/// One logical call: what `request` sends, possibly several times.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    /// Operation name for logs and errors.
    pub(crate) op: &'static str,
    /// The verb.
    pub(crate) method: Method,
    /// The full URL; always same-origin with the endpoint (built by us or checked).
    pub(crate) url: Url,
    /// Extra headers (`If-Match`, `ocp-range`, `If-Unmodified-Since`).
    pub(crate) headers: HeaderMap,
    /// JSON body, if any.
    pub(crate) body: Option<Bytes>,
}

impl Call {
    pub(crate) fn new(op: &'static str, method: Method, url: Url) -> Self {
        Self {
            op,
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
        }
    }
}

/// A successful reply.
pub(crate) struct Reply {
    /// Response headers.
    pub(crate) headers: HeaderMap,
    /// The body, for [`Expect::Json`].
    pub(crate) body: Bytes,
    /// The unread response, for [`Expect::Stream`].
    pub(crate) response: Option<reqwest::Response>,
}

impl BatchClient {
    /// Sends a call, retrying what is worth retrying within the deadline, and maps failures to
    /// [`BatchError`]. Every attempt is logged with the service's `request-id`.
    pub(crate) async fn request(
        &self,
        call: &Call,
        expect: Expect,
        deadline: Deadline,
    ) -> Result<Reply, BatchError> {
        let client_request_id = uuid::Uuid::new_v4().to_string();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let result = if deadline.is_past() {
                Err(BatchError::transient(call.op, "deadline reached"))
            } else {
                self.attempt(call, expect, &client_request_id, deadline)
                    .await
            };
            let elapsed_ms = started.elapsed().as_millis() as u64;
            let mut error = match result {
                Ok((reply, status, request_id)) => {
                    tracing::debug!(
                        operation = call.op,
                        method = %call.method,
                        path = %call.url.path(),
                        status = status.as_u16(),
                        request_id = %request_id.as_deref().unwrap_or("-"),
                        client_request_id = %client_request_id,
                        attempt,
                        elapsed_ms,
                        "batch request succeeded"
                    );
                    return Ok(reply);
                }
                Err(error) => error,
            };
            let info = error.info_mut();
            info.attempts = attempt;
            info.client_request_id = Some(client_request_id.clone());
            let wait = {
                let mut rng = rand::rng();
                self.inner
                    .retry
                    .decide(attempt, &error, deadline.remaining(), &mut rng)
            };
            let info = error.info();
            match wait {
                RetryDecision::RetryAfter(wait) => {
                    tracing::warn!(
                        operation = call.op,
                        method = %call.method,
                        path = %call.url.path(),
                        status = info.status,
                        code = info.code.as_deref(),
                        request_id = %info.request_id.as_deref().unwrap_or("-"),
                        client_request_id = %client_request_id,
                        attempt,
                        elapsed_ms,
                        wait_ms = wait.as_millis() as u64,
                        error = %error,
                        "batch request failed; retrying"
                    );
                    tokio::time::sleep(wait).await;
                }
                RetryDecision::GiveUp | RetryDecision::OutOfTime => {
                    tracing::info!(
                        operation = call.op,
                        method = %call.method,
                        path = %call.url.path(),
                        status = info.status,
                        code = info.code.as_deref(),
                        request_id = %info.request_id.as_deref().unwrap_or("-"),
                        client_request_id = %client_request_id,
                        attempt,
                        elapsed_ms,
                        error = %error,
                        "batch request failed"
                    );
                    return Err(error);
                }
            }
        }
    }

    /// The headers of one attempt: the call's own, a fresh `ocp-date`, the ids, the content
    /// headers and the authorization (signed over exactly these headers, or a bearer token).
    async fn attempt_headers(
        &self,
        call: &Call,
        expect: Expect,
        client_request_id: &str,
        deadline: Deadline,
    ) -> Result<HeaderMap, BatchError> {
        let op = call.op;
        let mut headers = call.headers.clone();
        let date = httpdate::fmt_http_date(SystemTime::now());
        headers.insert(
            HeaderName::from_static("ocp-date"),
            header_value(op, &date)?,
        );
        headers.insert(
            HeaderName::from_static("client-request-id"),
            header_value(op, client_request_id)?,
        );
        let accept = if expect == Expect::Stream {
            "application/octet-stream, application/json"
        } else {
            "application/json"
        };
        headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
        if let Some(body) = &call.body {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_BODY));
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        } else if !matches!(call.method, Method::GET | Method::HEAD) {
            // Sent explicitly so that what is signed ("0", as Python signs it) is what is sent.
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        let authorization = match &self.inner.auth {
            Authenticator::SharedKey(key) => {
                key.authorization(call.method.as_str(), &call.url, &headers)
            }
            Authenticator::Token(source) => {
                format!("Bearer {}", source.token(op, deadline).await?.expose())
            }
        };
        let mut authorization = header_value(op, &authorization)?;
        authorization.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, authorization);
        Ok(headers)
    }

    /// One HTTP attempt.
    async fn attempt(
        &self,
        call: &Call,
        expect: Expect,
        client_request_id: &str,
        deadline: Deadline,
    ) -> Result<(Reply, StatusCode, Option<String>), BatchError> {
        let op = call.op;
        let headers = self
            .attempt_headers(call, expect, client_request_id, deadline)
            .await?;

        let mut builder = self
            .http(op)?
            .request(call.method.clone(), call.url.clone())
            .headers(headers);
        if let Some(body) = &call.body {
            builder = builder.body(body.clone());
        } else if !matches!(call.method, Method::GET | Method::HEAD) {
            builder = builder.body(Bytes::new());
        }
        let attempt_deadline = deadline.capped(self.inner.attempt_timeout);
        if expect == Expect::Stream {
            // The body is read later by the download stream, bounded by the call's deadline.
            builder = builder.timeout(deadline.remaining());
        }
        let response = match tokio::time::timeout_at(attempt_deadline, builder.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return Err(transport_error(op, &error)),
            Err(_) => return Err(timed_out(op, deadline)),
        };
        let status = response.status();
        let request_id = response
            .headers()
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if !status.is_success() {
            let retry_after = parse_retry_after(response.headers(), SystemTime::now());
            let body = tokio::time::timeout_at(
                attempt_deadline,
                read_body(op, response, MAX_ERROR_BYTES, true),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .map(|(_, body)| body)
            .unwrap_or_default();
            let info = ErrorInfo::from_response(
                op,
                status.as_u16(),
                &body,
                request_id.clone(),
                Some(client_request_id.to_owned()),
            );
            return Err(BatchError::from_status(info, retry_after));
        }
        let reply = match expect {
            Expect::Stream => Reply {
                headers: response.headers().clone(),
                body: Bytes::new(),
                response: Some(response),
            },
            Expect::Headers => Reply {
                headers: response.headers().clone(),
                body: Bytes::new(),
                response: None,
            },
            Expect::Json | Expect::Empty => {
                let limit = if expect == Expect::Json {
                    self.inner.max_json_bytes
                } else {
                    MAX_ERROR_BYTES
                };
                let read = read_body(op, response, limit, expect == Expect::Empty);
                match tokio::time::timeout_at(attempt_deadline, read).await {
                    Ok(Ok((headers, body))) => Reply {
                        headers,
                        body,
                        response: None,
                    },
                    Ok(Err(mut error)) => {
                        let info = error.info_mut();
                        info.request_id = request_id.clone();
                        info.status = Some(status.as_u16());
                        return Err(error);
                    }
                    Err(_) => return Err(timed_out(op, deadline)),
                }
            }
        };
        Ok((reply, status, request_id))
    }

    /// Sends a GET and decodes the JSON reply.
    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        op: &'static str,
        url: Url,
        deadline: Deadline,
    ) -> Result<T, BatchError> {
        let reply = self
            .request(&Call::new(op, Method::GET, url), Expect::Json, deadline)
            .await?;
        decode(op, &reply)
    }

    /// A list operation as a stream of pages, following `odata.nextLink` (checked same-origin)
    /// lazily. A 409 whose code is in `empty_codes` on the first page means "nothing to list".
    pub(crate) fn pages<T>(
        &self,
        op: &'static str,
        first: Result<Url, BatchError>,
        deadline: Deadline,
        empty_codes: &'static [&'static str],
    ) -> PageStream<T>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let first = match first {
            Ok(url) => url,
            Err(error) => return futures::stream::once(async move { Err(error) }).boxed(),
        };
        let state = (self.clone(), Some(Ok(first)), None::<Url>);
        futures::stream::try_unfold(state, move |(client, next, previous)| async move {
            // A bad next link is reported only after the page that carried it was yielded.
            let url = match next {
                None => return Ok(None),
                Some(Err(error)) => return Err(error),
                Some(Ok(url)) => url,
            };
            if previous.as_ref() == Some(&url) {
                return Err(BatchError::other(
                    op,
                    "odata.nextLink points back to the same page",
                ));
            }
            let call = Call::new(op, Method::GET, url.clone());
            let reply = match client.request(&call, Expect::Json, deadline).await {
                Ok(reply) => reply,
                Err(BatchError::Conflict(info))
                    if previous.is_none()
                        && info
                            .code
                            .as_deref()
                            .is_some_and(|code| empty_codes.contains(&code)) =>
                {
                    tracing::debug!(
                        operation = op,
                        code = info.code.as_deref(),
                        "nothing to list"
                    );
                    return Ok(None);
                }
                Err(error) => return Err(error),
            };
            let page: ListPage<T> = decode(op, &reply)?;
            let next = match page.next_link.as_deref().map(str::trim) {
                Some(link) if !link.is_empty() => Some(client.checked_url(op, link)),
                _ => None,
            };
            Ok(Some((page, (client, next, Some(url)))))
        })
        .boxed()
    }

    /// Sends a job or task action; a 409 whose code is in `done_codes` means the target is
    /// already in (or past) the requested state.
    pub(crate) async fn action(
        &self,
        mut call: Call,
        if_match: Option<&str>,
        done_codes: &[&str],
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError> {
        if let Some(etag) = if_match {
            call.headers
                .insert(header::IF_MATCH, header_value(call.op, etag)?);
        }
        match self.request(&call, Expect::Empty, deadline).await {
            Ok(_) => Ok(ActionOutcome::Accepted),
            Err(BatchError::Conflict(info))
                if info
                    .code
                    .as_deref()
                    .is_some_and(|code| done_codes.contains(&code)) =>
            {
                let code = info.code.unwrap_or_default();
                tracing::info!(operation = call.op, code = %code, "already in the requested state");
                Ok(ActionOutcome::AlreadyInState { code })
            }
            Err(error) => Err(error),
        }
    }
}

/// Decodes a JSON reply; the error names the position, not the content (which may be a secret).
fn decode<T: DeserializeOwned>(op: &'static str, reply: &Reply) -> Result<T, BatchError> {
    serde_json::from_slice(&reply.body).map_err(|e| {
        let mut error = BatchError::other(
            op,
            format!(
                "unreadable JSON response ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ),
        );
        error.info_mut().request_id = request_id_of(&reply.headers);
        error
    })
}

/// The service's `request-id` header.
fn request_id_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get("request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Reads a body up to `limit` bytes. Over the limit: an error, or (with `truncate`) the first
/// `limit` bytes.
async fn read_body(
    op: &'static str,
    mut response: reqwest::Response,
    limit: usize,
    truncate: bool,
) -> Result<(HeaderMap, Bytes), BatchError> {
    let headers = std::mem::take(response.headers_mut());
    let mut body = BytesMut::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    if truncate {
                        let room = limit - body.len();
                        body.extend_from_slice(&chunk[..room]);
                        return Ok((headers, body.freeze()));
                    }
                    return Err(BatchError::other(
                        op,
                        format!("response body larger than {limit} bytes"),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok((headers, body.freeze())),
            Err(error) => return Err(transport_error(op, &error)),
        }
    }
}

/// Maps a reqwest failure: a request that could not be built is ours to fix; anything on the
/// wire (connect, reset, timeout, truncated body) is transient. The URL is left out.
pub(crate) fn transport_error(op: &'static str, error: &reqwest::Error) -> BatchError {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    if error.is_builder() {
        BatchError::other(op, message)
    } else {
        BatchError::transient(op, message)
    }
}

/// The error for an attempt cut short by the attempt timeout or the deadline.
fn timed_out(op: &'static str, deadline: Deadline) -> BatchError {
    if deadline.is_past() {
        BatchError::transient(op, "deadline reached")
    } else {
        BatchError::transient(op, "attempt timed out")
    }
}

/// A header value from text we built or a caller gave (an ETag); invalid text is a bad argument.
pub(crate) fn header_value(op: &'static str, text: &str) -> Result<HeaderValue, BatchError> {
    HeaderValue::from_str(text)
        .map_err(|_| BatchError::bad_argument(op, "a header value holds invalid characters"))
}
