//! The HTTP front: [`router`], [`serve`], and the per-request pipeline.
//!
//! Every Batch request goes through the same steps, in the order the service applies them:
//! `api-version` present → authentication → injected faults → body read (size-limited) →
//! routing → the operation. Whatever the outcome, the response gets `request-id`, the echoed
//! `client-request-id` when asked for, and a line in the request log. Paths under
//! `/_emulator/` are the admin API instead (no auth, no faults, not logged).

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use percent_encoding::percent_decode_str;
use serde_json::Value;
use time::OffsetDateTime;

use crate::auth::{self, SignedRequest};
use crate::clock;
use crate::emulator::Emulator;
use crate::error::ApiError;
use crate::faults::Fault;
use crate::log::RequestRecord;
use crate::{admin, api, route};

/// Largest request body accepted; Batch action bodies are tiny.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// The JSON content type Batch answers with.
pub(crate) const ODATA_JSON: &str = "application/json;odata=minimalmetadata";

/// The emulator as an axum router (mount it, or call it with `tower::ServiceExt::oneshot`).
pub fn router(emulator: Emulator) -> Router {
    Router::new().fallback(entry).with_state(emulator)
}

/// Serves the emulator on `listener` until `shutdown` completes.
///
/// Bind the listener to `127.0.0.1` (see [`crate::bind_local`]): the admin API is not
/// authenticated.
pub async fn serve(
    listener: tokio::net::TcpListener,
    emulator: Emulator,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(emulator))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn entry(State(emulator): State<Emulator>, request: Request) -> Response {
    handle(&emulator, request).await
}

/// Query parameters, decoded, in order.
#[derive(Debug, Default, Clone)]
pub(crate) struct Query {
    /// `(name, value)` pairs as sent, decoded.
    pub(crate) pairs: Vec<(String, String)>,
}

impl Query {
    fn parse(raw: Option<&str>) -> Self {
        Self {
            pairs: url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        }
    }

    /// The first value of a parameter, name compared case-insensitively.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What every operation needs to know about its request.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// Our `request-id` for this request.
    pub(crate) request_id: String,
    /// Base URL for `url` fields (`http://127.0.0.1:port`).
    pub(crate) base: String,
    /// The clock reading for this request.
    pub(crate) now: OffsetDateTime,
    /// Method.
    pub(crate) method: Method,
    /// Path as sent.
    pub(crate) raw_path: String,
    /// Decoded query.
    pub(crate) query: Query,
    /// Request headers.
    pub(crate) headers: HeaderMap,
}

/// Facts gathered while processing, for the log.
#[derive(Debug, Default)]
struct Meta {
    auth_scheme: Option<&'static str>,
    fault: Option<&'static str>,
    drop_after: Option<u64>,
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Runs one request through the pipeline.
pub(crate) async fn handle(emulator: &Emulator, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let raw_path = parts.uri.path().to_owned();
    let raw_query = parts.uri.query().map(str::to_owned);
    if raw_path == "/_emulator" || raw_path.starts_with("/_emulator/") {
        return admin::handle(emulator, &parts.method, &raw_path, body).await;
    }
    let host = header_str(&parts.headers, "host");
    let ctx = Ctx {
        request_id: uuid::Uuid::new_v4().to_string(),
        base: emulator.base_url_for(host),
        now: OffsetDateTime::now_utc(),
        method: parts.method.clone(),
        raw_path: raw_path.clone(),
        query: Query::parse(raw_query.as_deref()),
        headers: parts.headers.clone(),
    };
    let mut meta = Meta::default();
    let result = process(emulator, &ctx, raw_query.as_deref(), body, &mut meta).await;
    let mut response = result.unwrap_or_else(|error| error_response(&ctx, &error));
    decorate(&ctx, &mut response);
    let status = response.status().as_u16();
    if let Some(after) = meta.drop_after {
        response = drop_after(response, after);
    }
    let path_and_query = match &raw_query {
        Some(query) => format!("{raw_path}?{query}"),
        None => raw_path,
    };
    let header = |name: &str| header_str(&ctx.headers, name).map(str::to_owned);
    emulator.record(RequestRecord {
        method: ctx.method.to_string(),
        path_and_query,
        status,
        request_id: ctx.request_id.clone(),
        client_request_id: header("client-request-id"),
        ocp_range: header("ocp-range"),
        range: header("range"),
        if_match: header("if-match"),
        if_none_match: header("if-none-match"),
        auth_scheme: meta.auth_scheme.map(str::to_owned),
        fault: meta.fault.map(str::to_owned),
    });
    tracing::debug!(
        method = %ctx.method,
        path = %ctx.raw_path,
        status,
        request_id = %ctx.request_id,
        fault = meta.fault,
        "batch emulator request"
    );
    response
}

async fn process(
    emulator: &Emulator,
    ctx: &Ctx,
    raw_query: Option<&str>,
    body: Body,
    meta: &mut Meta,
) -> Result<Response, ApiError> {
    check_api_version(&ctx.query)?;
    let scheme = auth::authenticate(
        emulator.auth(),
        &SignedRequest {
            method: &ctx.method,
            raw_path: &ctx.raw_path,
            raw_query,
            headers: &ctx.headers,
        },
        ctx.now,
    )?;
    meta.auth_scheme = Some(scheme.name());
    let decoded = percent_decode_str(&ctx.raw_path).decode_utf8_lossy();
    if let Some(fault) = emulator.check_faults(ctx.method.as_str(), &ctx.raw_path, &decoded) {
        meta.fault = Some(fault.name());
        match fault {
            Fault::Delay { millis } => tokio::time::sleep(Duration::from_millis(millis)).await,
            Fault::DropConnection { after_bytes } => meta.drop_after = Some(after_bytes),
            other => {
                if let Some(error) = other.as_error() {
                    return Err(error);
                }
            }
        }
    }
    check_timeout(&ctx.query)?;
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::body_too_large(MAX_BODY))?;
    let route = route::parse(&ctx.raw_path)?;
    if !route.methods().contains(&ctx.method.as_str()) {
        return Err(ApiError::unsupported_verb(ctx.method.as_str()));
    }
    api::dispatch(emulator, ctx, route, body)
}

/// `api-version` must be present and look like a Batch version (`2025-06-01`,
/// `2024-07-01.20.0`).
fn check_api_version(query: &Query) -> Result<(), ApiError> {
    let Some(version) = query.get("api-version").filter(|v| !v.is_empty()) else {
        return Err(ApiError::missing_query_parameter("api-version"));
    };
    let (date, suffix) = version.split_once('.').unwrap_or((version, ""));
    let date_ok = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    let suffix_ok = suffix.is_empty()
        || suffix.split_once('.').is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        });
    if date_ok && suffix_ok {
        Ok(())
    } else {
        Err(ApiError::unsupported_version(version))
    }
}

/// `timeOut` (any casing) must be an integer when present.
fn check_timeout(query: &Query) -> Result<(), ApiError> {
    match query.get("timeout") {
        Some(value) if value.parse::<i32>().is_err() => Err(ApiError::invalid_query_parameter(
            "timeOut",
            value,
            "The value must be an integer number of seconds.",
        )),
        _ => Ok(()),
    }
}

/// A JSON response with Batch's content type and an exact `Content-Length`.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Body::from(bytes.clone()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ODATA_JSON));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    response
}

/// A body-less response (202, 204, 304).
pub(crate) fn empty_response(status: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

/// Sets a header from text that may contain characters a header cannot; such text is dropped.
pub(crate) fn set_header(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

fn error_response(ctx: &Ctx, error: &ApiError) -> Response {
    let body = error.render(&ctx.base, &ctx.request_id, &clock::format_time(ctx.now));
    let mut response = json_response(error.status, &body);
    if let Some(seconds) = error.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// Adds the headers every Batch response carries.
fn decorate(ctx: &Ctx, response: &mut Response) {
    set_header(response, "request-id", &ctx.request_id);
    response
        .headers_mut()
        .insert("DataServiceVersion", HeaderValue::from_static("3.0"));
    let echo = header_str(&ctx.headers, "return-client-request-id")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if echo {
        if let Some(id) = header_str(&ctx.headers, "client-request-id") {
            set_header(response, "client-request-id", id);
        }
    }
}

/// Lets `after` body bytes through, then fails the body stream, which makes hyper abort the
/// connection mid-body (the client sees fewer bytes than `Content-Length`).
fn drop_after(response: Response, after: u64) -> Response {
    let (parts, body) = response.into_parts();
    let mut remaining = after;
    let stream = body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        if remaining == 0 {
            return Err(std::io::Error::other("emulator fault: connection dropped"));
        }
        let len = chunk.len() as u64;
        if len <= remaining {
            remaining -= len;
            return Ok(chunk);
        }
        let keep = usize::try_from(remaining).unwrap_or(chunk.len());
        remaining = 0;
        Ok::<Bytes, std::io::Error>(chunk.slice(..keep))
    });
    // Stop after the cut, pause briefly so hyper flushes the head and the bytes already
    // written (an error in the same poll would discard them), then fail the body; an explicit
    // error after the last chunk covers bodies that end exactly at the cut.
    let stream = stream
        .take_while(|item| futures::future::ready(item.is_ok()))
        .chain(futures::stream::once(async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err(std::io::Error::other("emulator fault: connection dropped"))
        }));
    Response::from_parts(parts, Body::from_stream(stream))
}
