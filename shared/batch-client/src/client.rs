//! The reqwest-based [`BatchClient`]: one private [`BatchClient::request`] owns URL checks,
//! headers, auth, retries, error mapping and logging, in one place; the operations are thin
//! wrappers that build a [`Call`] and decode the reply.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use diagnosis::wire::{
    BatchJob, BatchTask, DisableTasks, ListPage, NodeFile, PrepReleaseStatus, TaskCountsResult,
};
use futures::StreamExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use crate::api::{
    ActionOutcome, BatchApi, DownloadOptions, FileDownload, FileInfo, FileListOptions, FileRef,
    GetOptions, ListOptions, PageStream, TerminateJobOptions,
};
use crate::config::{BatchAuth, BatchConfig, parse_endpoint};
use crate::error::{BatchError, ConfigError, ErrorInfo};
use crate::retry::{Deadline, RetryPolicy, parse_retry_after};
use crate::shared_key::SharedKeyCredential;
use crate::token::TokenSource;

/// Characters percent-encoded in a path parameter: everything but the RFC 3986 unreserved set,
/// exactly as Python's `quote(value, safe="")` in the official SDK (so `/` and `\` in a file path
/// become `%2F` and `%5C`).
const PATH_PARAM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The `Content-Type` of request bodies (`docs/batch-facts.md`, REST shapes).
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
    fn new(op: &'static str, method: Method, url: Url) -> Self {
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

/// How requests are authenticated, ready to use.
enum Authenticator {
    /// Shared Key signing.
    SharedKey(SharedKeyCredential),
    /// Entra bearer tokens.
    Token(TokenSource),
}

/// How the HTTP client is built, kept until the first request builds it.
struct HttpSettings {
    connect_timeout: Duration,
    read_timeout: Duration,
    /// Ignore proxies from the environment (a loopback endpoint).
    no_proxy: bool,
}

impl HttpSettings {
    fn build(&self) -> Result<reqwest::Client, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_gzip()
            .no_brotli()
            .no_deflate()
            .no_zstd()
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.read_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("batch-triage/", env!("CARGO_PKG_VERSION")));
        if self.no_proxy {
            // A proxy from the environment must not swallow the loopback emulator's traffic.
            builder = builder.no_proxy();
        }
        builder.build()
    }
}

/// Shared state behind the cheap-to-clone client.
struct Inner {
    /// The HTTP client (rustls, no redirects, no decompression), built by the first request:
    /// building it loads the system's TLS roots, most of a handler's start-up time, and the
    /// Functions host waits for the handler's start before the first invocation.
    http: std::sync::OnceLock<reqwest::Client>,
    /// What the HTTP client is built from.
    http_settings: HttpSettings,
    /// The account endpoint: the only origin ever contacted.
    endpoint: Url,
    /// Auth.
    auth: Authenticator,
    /// `api-version`.
    api_version: String,
    /// Retry policy.
    retry: RetryPolicy,
    /// Bound of one non-streaming attempt.
    attempt_timeout: Duration,
    /// Largest JSON body read.
    max_json_bytes: usize,
}

/// The Azure Batch REST client. Cloning is cheap (one `Arc`); build it once per process.
#[derive(Clone)]
pub struct BatchClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for BatchClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match &self.inner.auth {
            Authenticator::SharedKey(key) => format!("SharedKey({})", key.account()),
            Authenticator::Token(_) => "Entra".to_owned(),
        };
        f.debug_struct("BatchClient")
            .field("endpoint", &self.inner.endpoint.as_str())
            .field("auth", &auth)
            .field("api_version", &self.inner.api_version)
            .field("retry", &self.inner.retry)
            .finish()
    }
}

impl BatchClient {
    /// Builds a client. Fails on an unacceptable endpoint, a key that is not base64, or an Entra
    /// credential that cannot be created.
    pub fn new(config: BatchConfig) -> Result<Self, ConfigError> {
        let endpoint = parse_endpoint(config.endpoint.as_str())?;
        let auth = match &config.auth {
            BatchAuth::SharedKey { account, key } => {
                Authenticator::SharedKey(SharedKeyCredential::new(account, key)?)
            }
            BatchAuth::Entra(entra) => Authenticator::Token(TokenSource::new(entra)?),
        };
        if config.api_version.trim().is_empty() {
            return Err(ConfigError::Invalid {
                name: "api_version",
                reason: "empty".to_owned(),
            });
        }
        if config.retry.max_attempts == 0 {
            return Err(ConfigError::Invalid {
                name: "retry.max_attempts",
                reason: "must be at least 1".to_owned(),
            });
        }
        let http_settings = HttpSettings {
            connect_timeout: config.attempt_timeout.min(Duration::from_secs(30)),
            read_timeout: config.read_timeout,
            no_proxy: endpoint.host_str().is_some_and(is_loopback_host),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                http: std::sync::OnceLock::new(),
                http_settings,
                endpoint,
                auth,
                api_version: config.api_version,
                retry: config.retry,
                attempt_timeout: config.attempt_timeout,
                max_json_bytes: config.max_json_bytes,
            }),
        })
    }

    /// The configured endpoint.
    pub fn endpoint(&self) -> &Url {
        &self.inner.endpoint
    }

    /// The HTTP client, built on first use. A build failure (no TLS roots on the machine) is
    /// not transient: retrying cannot install certificates.
    fn http(&self, op: &'static str) -> Result<&reqwest::Client, BatchError> {
        if let Some(client) = self.inner.http.get() {
            return Ok(client);
        }
        let client = self
            .inner
            .http_settings
            .build()
            .map_err(|e| BatchError::other(op, format!("cannot build the HTTP client: {e}")))?;
        // Two first requests at once may both build one; either is fine, one is kept.
        Ok(self.inner.http.get_or_init(|| client))
    }

    /// Builds a URL under the endpoint from path parameters (each percent-encoded as one
    /// segment) and query parameters; `api-version` comes first.
    pub(crate) fn url(
        &self,
        op: &'static str,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Url, BatchError> {
        let mut path = self.inner.endpoint.path().trim_end_matches('/').to_owned();
        for segment in segments {
            path.push('/');
            path.extend(utf8_percent_encode(segment, PATH_PARAM));
        }
        let mut url = self.inner.endpoint.clone();
        url.set_path(&path);
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("api-version", &self.inner.api_version);
            for (name, value) in query {
                pairs.append_pair(name, value);
            }
        }
        // A segment can never climb out of the endpoint: ids are checked, and `/` is encoded.
        if url.origin() != self.inner.endpoint.origin() {
            return Err(BatchError::refused(op, "built URL left the endpoint"));
        }
        Ok(url)
    }

    /// Checks that a URL from a payload is same-origin (scheme, host, port) with the endpoint,
    /// carries no credentials, and adds `api-version` if it lacks one. The error names only the
    /// origins, never the path or query (which may hold a SAS).
    pub(crate) fn checked_url(&self, op: &'static str, text: &str) -> Result<Url, BatchError> {
        let mut url = Url::parse(text.trim())
            .map_err(|e| BatchError::refused(op, format!("not an absolute URL ({e})")))?;
        let expected = self.inner.endpoint.origin();
        if url.origin() != expected || !url.username().is_empty() || url.password().is_some() {
            return Err(BatchError::refused(
                op,
                format!(
                    "{} is not the configured Batch endpoint {}",
                    url.origin().ascii_serialization(),
                    expected.ascii_serialization()
                ),
            ));
        }
        url.set_fragment(None);
        if !url.query_pairs().any(|(name, _)| name == "api-version") {
            url.query_pairs_mut()
                .append_pair("api-version", &self.inner.api_version);
        }
        Ok(url)
    }

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
                Some(wait) => {
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
                None => {
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

    /// One HTTP attempt.
    async fn attempt(
        &self,
        call: &Call,
        expect: Expect,
        client_request_id: &str,
        deadline: Deadline,
    ) -> Result<(Reply, StatusCode, Option<String>), BatchError> {
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
    async fn get_json<T: DeserializeOwned>(
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

    /// The URL of a file reference.
    pub(crate) fn file_url(&self, op: &'static str, file: &FileRef) -> Result<Url, BatchError> {
        match file {
            FileRef::Task {
                job_id,
                task_id,
                path,
            } => {
                check_id(op, "job id", job_id)?;
                check_id(op, "task id", task_id)?;
                check_id(op, "file path", path)?;
                self.url(op, &["jobs", job_id, "tasks", task_id, "files", path], &[])
            }
            FileRef::Node {
                pool_id,
                node_id,
                path,
            } => {
                check_id(op, "pool id", pool_id)?;
                check_id(op, "node id", node_id)?;
                check_id(op, "file path", path)?;
                self.url(
                    op,
                    &["pools", pool_id, "nodes", node_id, "files", path],
                    &[],
                )
            }
            FileRef::Url(text) => self.checked_url(op, text),
        }
    }

    /// Sends a job or task action; a 409 whose code is in `done_codes` means the target is
    /// already in (or past) the requested state.
    async fn action(
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
fn header_value(op: &'static str, text: &str) -> Result<HeaderValue, BatchError> {
    HeaderValue::from_str(text)
        .map_err(|_| BatchError::bad_argument(op, "a header value holds invalid characters"))
}

/// Refuses ids and paths that are empty or would be read as `.`/`..` path segments.
pub(crate) fn check_id(op: &'static str, what: &str, value: &str) -> Result<(), BatchError> {
    if value.is_empty() || value == "." || value == ".." || value.len() > 4096 {
        return Err(BatchError::bad_argument(op, format!("invalid {what}")));
    }
    Ok(())
}

/// Whether a host string names the loopback interface.
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Query parameters of a list operation.
fn list_query<'a>(options: &'a ListOptions, max_results: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut query = Vec::new();
    if let Some(filter) = options.filter.as_deref() {
        query.push(("$filter", filter));
    }
    if let Some(select) = options.select.as_deref() {
        query.push(("$select", select));
    }
    if let Some(expand) = options.expand.as_deref() {
        query.push(("$expand", expand));
    }
    if options.max_results.is_some() {
        query.push(("maxresults", max_results));
    }
    query
}

/// Query parameters of a get operation.
fn get_query(options: &GetOptions) -> Vec<(&str, &str)> {
    let mut query = Vec::new();
    if let Some(select) = options.select.as_deref() {
        query.push(("$select", select));
    }
    if let Some(expand) = options.expand.as_deref() {
        query.push(("$expand", expand));
    }
    query
}

/// File properties from response headers. For a GET, `Content-Length` is the length of what is
/// being sent; the caller adds the range start.
pub(crate) fn file_info(headers: &HeaderMap) -> FileInfo {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    FileInfo {
        size: text("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        last_modified: text("last-modified"),
        etag: text("etag"),
        is_directory: text("ocp-batch-file-isdirectory")
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        creation_time: text("ocp-creation-time"),
        file_mode: text("ocp-batch-file-mode"),
        content_type: text("content-type"),
    }
}

/// 409 codes meaning Terminate Job has nothing left to do.
const TERMINATE_JOB_DONE: &[&str] = &["JobCompleted", "JobBeingTerminated"];
/// 409 codes meaning Disable Job has nothing left to do (the job is disabled, being disabled, or
/// no longer active at all).
const DISABLE_JOB_DONE: &[&str] = &[
    "JobDisabled",
    "JobBeingDisabled",
    "JobNotActive",
    "JobCompleted",
    "JobBeingTerminated",
];
/// 409 codes meaning Enable Job has nothing left to do. The service's code for enabling an
/// already-active job is not documented; these are the spellings it is known or expected to use.
const ENABLE_JOB_DONE: &[&str] = &["JobEnabled", "JobNotDisabled", "JobActive"];
/// 409 codes meaning Terminate Task has nothing left to do.
const TERMINATE_TASK_DONE: &[&str] = &["TaskCompleted"];
/// 409 codes meaning a job has no prep/release task, so its status list is empty.
const NO_PREP_TASK: &[&str] = &[
    "JobPreparationTaskNotSpecified",
    "JobReleaseTaskNotSpecified",
];

#[async_trait]
impl BatchApi for BatchClient {
    async fn get_task(
        &self,
        job_id: &str,
        task_id: &str,
        options: &GetOptions,
        deadline: Deadline,
    ) -> Result<BatchTask, BatchError> {
        const OP: &str = "get_task";
        check_id(OP, "job id", job_id)?;
        check_id(OP, "task id", task_id)?;
        let url = self.url(OP, &["jobs", job_id, "tasks", task_id], &get_query(options))?;
        self.get_json(OP, url, deadline).await
    }

    fn list_tasks(
        &self,
        job_id: &str,
        options: &ListOptions,
        deadline: Deadline,
    ) -> PageStream<BatchTask> {
        const OP: &str = "list_tasks";
        let max = options
            .max_results
            .map(|n| n.to_string())
            .unwrap_or_default();
        let url = check_id(OP, "job id", job_id)
            .and_then(|()| self.url(OP, &["jobs", job_id, "tasks"], &list_query(options, &max)));
        self.pages(OP, url, deadline, &[])
    }

    async fn get_job(
        &self,
        job_id: &str,
        options: &GetOptions,
        deadline: Deadline,
    ) -> Result<BatchJob, BatchError> {
        const OP: &str = "get_job";
        check_id(OP, "job id", job_id)?;
        let url = self.url(OP, &["jobs", job_id], &get_query(options))?;
        self.get_json(OP, url, deadline).await
    }

    fn list_jobs(&self, options: &ListOptions, deadline: Deadline) -> PageStream<BatchJob> {
        const OP: &str = "list_jobs";
        let max = options
            .max_results
            .map(|n| n.to_string())
            .unwrap_or_default();
        let url = self.url(OP, &["jobs"], &list_query(options, &max));
        self.pages(OP, url, deadline, &[])
    }

    fn list_prep_release_status(
        &self,
        job_id: &str,
        options: &ListOptions,
        deadline: Deadline,
    ) -> PageStream<PrepReleaseStatus> {
        const OP: &str = "list_prep_release_status";
        let max = options
            .max_results
            .map(|n| n.to_string())
            .unwrap_or_default();
        let url = check_id(OP, "job id", job_id).and_then(|()| {
            self.url(
                OP,
                &["jobs", job_id, "jobpreparationandreleasetaskstatus"],
                &list_query(options, &max),
            )
        });
        self.pages(OP, url, deadline, NO_PREP_TASK)
    }

    async fn get_task_counts(
        &self,
        job_id: &str,
        deadline: Deadline,
    ) -> Result<TaskCountsResult, BatchError> {
        const OP: &str = "get_task_counts";
        check_id(OP, "job id", job_id)?;
        let url = self.url(OP, &["jobs", job_id, "taskcounts"], &[])?;
        self.get_json(OP, url, deadline).await
    }

    fn list_task_files(
        &self,
        job_id: &str,
        task_id: &str,
        options: &FileListOptions,
        deadline: Deadline,
    ) -> PageStream<NodeFile> {
        const OP: &str = "list_task_files";
        let max = options
            .max_results
            .map(|n| n.to_string())
            .unwrap_or_default();
        let url = check_id(OP, "job id", job_id)
            .and_then(|()| check_id(OP, "task id", task_id))
            .and_then(|()| {
                self.url(
                    OP,
                    &["jobs", job_id, "tasks", task_id, "files"],
                    &file_list_query(options, &max),
                )
            });
        self.pages(OP, url, deadline, &[])
    }

    fn list_node_files(
        &self,
        pool_id: &str,
        node_id: &str,
        options: &FileListOptions,
        deadline: Deadline,
    ) -> PageStream<NodeFile> {
        const OP: &str = "list_node_files";
        let max = options
            .max_results
            .map(|n| n.to_string())
            .unwrap_or_default();
        let url = check_id(OP, "pool id", pool_id)
            .and_then(|()| check_id(OP, "node id", node_id))
            .and_then(|()| {
                self.url(
                    OP,
                    &["pools", pool_id, "nodes", node_id, "files"],
                    &file_list_query(options, &max),
                )
            });
        self.pages(OP, url, deadline, &[])
    }

    async fn file_properties(
        &self,
        file: &FileRef,
        deadline: Deadline,
    ) -> Result<FileInfo, BatchError> {
        const OP: &str = "file_properties";
        let url = self.file_url(OP, file)?;
        let reply = self
            .request(&Call::new(OP, Method::HEAD, url), Expect::Headers, deadline)
            .await?;
        Ok(file_info(&reply.headers))
    }

    async fn download_file(
        &self,
        file: &FileRef,
        options: &DownloadOptions,
        deadline: Deadline,
    ) -> Result<FileDownload, BatchError> {
        const OP: &str = "download_file";
        let url = self.file_url(OP, file)?;
        crate::download::start(self.clone(), OP, url, options, deadline).await
    }

    async fn terminate_job(
        &self,
        job_id: &str,
        options: &TerminateJobOptions,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError> {
        const OP: &str = "terminate_job";
        check_id(OP, "job id", job_id)?;
        let query: &[(&str, &str)] = if options.force {
            &[("force", "true")]
        } else {
            &[]
        };
        let url = self.url(OP, &["jobs", job_id, "terminate"], query)?;
        let mut call = Call::new(OP, Method::POST, url);
        if let Some(reason) = &options.reason {
            let body = serde_json::json!({ "terminateReason": reason });
            call.body = Some(Bytes::from(body.to_string()));
        }
        self.action(
            call,
            options.if_match.as_deref(),
            TERMINATE_JOB_DONE,
            deadline,
        )
        .await
    }

    async fn disable_job(
        &self,
        job_id: &str,
        disable_tasks: DisableTasks,
        if_match: Option<&str>,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError> {
        const OP: &str = "disable_job";
        check_id(OP, "job id", job_id)?;
        let url = self.url(OP, &["jobs", job_id, "disable"], &[])?;
        let mut call = Call::new(OP, Method::POST, url);
        let body = serde_json::json!({ "disableTasks": disable_tasks.as_str() });
        call.body = Some(Bytes::from(body.to_string()));
        self.action(call, if_match, DISABLE_JOB_DONE, deadline)
            .await
    }

    async fn enable_job(
        &self,
        job_id: &str,
        if_match: Option<&str>,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError> {
        const OP: &str = "enable_job";
        check_id(OP, "job id", job_id)?;
        let url = self.url(OP, &["jobs", job_id, "enable"], &[])?;
        let call = Call::new(OP, Method::POST, url);
        self.action(call, if_match, ENABLE_JOB_DONE, deadline).await
    }

    async fn terminate_task(
        &self,
        job_id: &str,
        task_id: &str,
        if_match: Option<&str>,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError> {
        const OP: &str = "terminate_task";
        check_id(OP, "job id", job_id)?;
        check_id(OP, "task id", task_id)?;
        let url = self.url(OP, &["jobs", job_id, "tasks", task_id, "terminate"], &[])?;
        let call = Call::new(OP, Method::POST, url);
        self.action(call, if_match, TERMINATE_TASK_DONE, deadline)
            .await
    }

    fn check_url(&self, url: &str) -> Result<Url, BatchError> {
        self.checked_url("check_url", url)
    }
}

/// Query parameters of a file listing.
fn file_list_query<'a>(
    options: &'a FileListOptions,
    max_results: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let mut query = Vec::new();
    if options.recursive {
        query.push(("recursive", "true"));
    }
    if let Some(filter) = options.filter.as_deref() {
        query.push(("$filter", filter));
    }
    if options.max_results.is_some() {
        query.push(("maxresults", max_results));
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BatchApi, GetOptions};
    use crate::config::BatchConfig;
    use crate::secret::Secret;

    /// Building the client reads no TLS roots; the first request builds the HTTP client once.
    #[tokio::test]
    async fn the_http_client_is_built_by_the_first_request_not_at_start() {
        // Nothing listens on port 9 of the loopback (discard): the request fails fast.
        let config = BatchConfig::shared_key(
            "http://127.0.0.1:9",
            "acct",
            Secret::new("c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ=="),
        )
        .unwrap();
        let client = BatchClient::new(config).unwrap();
        assert!(client.inner.http.get().is_none(), "no HTTP client at start");

        let error = client
            .get_job(
                "job",
                &GetOptions::default(),
                Deadline::after(Duration::from_secs(2)),
            )
            .await
            .expect_err("nothing listens");
        assert!(!error.is_not_found(), "a transport failure: {error}");
        let first = client.inner.http.get().expect("built by the first request") as *const _;
        let _ = client
            .get_job(
                "job",
                &GetOptions::default(),
                Deadline::after(Duration::from_secs(2)),
            )
            .await;
        assert_eq!(
            client.inner.http.get().map(|c| c as *const _),
            Some(first),
            "built once, then reused"
        );
    }
}
