//! `batch-triage serve`: the pipeline behind a plain HTTP server, for users without the Functions
//! host. Event Grid (or anything that can POST) delivers to it directly; every route but the
//! readiness probe needs the shared key, checked by `pipeline::webhook`.
//!
//! Verdicts follow Event Grid's retry rules (`docs/delivery.md`): 2xx acknowledges, 400 and 401 are
//! never retried (unreadable input, a stranger), 503 asks for a redelivery (a transient failure;
//! every effect is idempotent, so a redelivery repeats nothing).

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use batch_client::Deadline;
use futures::StreamExt;
use pipeline::Verdict;
use pipeline::settings::Settings;
use pipeline::sweep::SweepOptions;
use pipeline::triage::{Triage, TriageError};
use pipeline::webhook::{self, Gate, WebhookKey};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::render::inert;

pub(crate) const EXAMPLES: &str = "\
Examples:
  # Against the local emulator (`batch-triage emulator --port 8089` in another terminal):
  export AZURE_BATCH_ENDPOINT=http://127.0.0.1:8089 AZURE_BATCH_ACCOUNT=devbatch1
  export AZURE_BATCH_ACCESS_KEY='<the emulator's well-known key, see the README>'
  export BATCH_TRIAGE_STORE=./preserved BATCH_TRIAGE_WEBHOOK_KEY=$(openssl rand -hex 32)
  batch-triage serve --listen 127.0.0.1:8080

  # Deliver an Event Grid event, run the sweep, diagnose a task:
  curl -X POST \"http://127.0.0.1:8080/api/events?key=$BATCH_TRIAGE_WEBHOOK_KEY\" -d @event.json
  curl -X POST -H \"x-batch-triage-key: $BATCH_TRIAGE_WEBHOOK_KEY\" http://127.0.0.1:8080/api/sweep
  curl -X POST -H \"x-batch-triage-key: $BATCH_TRIAGE_WEBHOOK_KEY\" \\
       -d '{\"jobId\": \"etl\", \"taskId\": \"oom\"}' http://127.0.0.1:8080/api/diagnose

Routes:
  GET  /               readiness (no key)
  GET  /report         the store's report page (?since=24h&account=…&format=json)
  POST /api/events     Event Grid or CloudEvents webhook; answers both validation handshakes
  POST /api/records    diagnostic-log records, e.g. what an Event Hubs consumer forwards
  POST /api/sweep      one timer tick: sweep, due alert groups, outbox
  POST /api/diagnose   {\"jobId\": \"…\", \"taskId\": \"…\"} → the diagnosis JSON, no side effects

Every /api route and /report need BATCH_TRIAGE_WEBHOOK_KEY, as ?key=… or the
x-batch-triage-key header.
Give Event Grid the endpoint URL with ?key=…: it sends the URL on the handshakes too.
Event Grid only delivers to https: put serve behind a TLS-terminating proxy.

Settings (environment): AZURE_BATCH_ENDPOINT, AZURE_BATCH_ACCOUNT, AZURE_BATCH_ACCESS_KEY (or
Entra ID without it), BATCH_TRIAGE_STORE, BATCH_TRIAGE_POLICY, BATCH_TRIAGE_ALLOW_HOSTS,
BATCH_TRIAGE_INVOCATION_SECONDS, BATCH_TRIAGE_MAX_FILE_MIB, BATCH_TRIAGE_WEBHOOK_KEY.";

/// The largest request body accepted (413 beyond it, which Event Grid does not retry). An Event
/// Grid delivery is at most 1 MB; a forwarded Event Hubs batch can be larger.
const BODY_LIMIT: usize = 32 << 20;

/// The most requests worked at once; beyond it a request is refused with 503 and Retry-After
/// (Event Grid and any sane forwarder retry it) instead of queueing without bound.
const MAX_IN_FLIGHT: usize = 32;

/// The most request-body bytes held at once, over all requests. Bodies are read whole (the
/// pipeline parses them in place, one element at a time), so this, not the request count, bounds
/// the memory of a burst of large batches: two 32 MiB bodies at once, a third waits its turn.
const BODY_BUDGET: usize = 64 << 20;

/// The unit of [`BODY_BUDGET`]'s permits.
const BUDGET_UNIT: usize = 1 << 10;

/// What a refused request is told to wait before trying again, in seconds.
const RETRY_AFTER_SECONDS: u32 = 5;

/// How long a shutdown waits for requests in flight before giving up on them; they are
/// redelivered, and idempotent.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The address to listen on; port 0 picks a free port (printed on the first line).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
}

#[derive(Clone)]
struct AppState {
    triage: Arc<Triage>,
    key: WebhookKey,
    budget: Duration,
    /// One permit per request being worked ([`MAX_IN_FLIGHT`]).
    in_flight: Arc<Semaphore>,
    /// One permit per [`BUDGET_UNIT`] of request body held ([`BODY_BUDGET`]).
    body_budget: Arc<Semaphore>,
}

impl AppState {
    fn new(triage: Triage, key: WebhookKey, budget: Duration) -> Self {
        Self {
            triage: Arc::new(triage),
            key,
            budget,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            body_budget: Arc::new(Semaphore::new(BODY_BUDGET / BUDGET_UNIT)),
        }
    }
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let env = |name: &str| std::env::var(name).ok();
    // The key first: without it nothing would be served, so say so before anything else.
    let key = WebhookKey::from_env(env)?;
    let settings = Settings::from_env(env).context("reading the settings")?;
    let budget = settings.invocation_budget;
    let triage = settings.build().context("building the pipeline")?;
    init_logging();
    crate::runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let address = listener.local_addr()?;
        // Listened to before the address is printed: whoever reads it may signal at once.
        let stop = listen_for_shutdown();
        // The first line is the address, so a script or a test can read the port it got. Best
        // effort: the server keeps serving if whoever started it stopped reading.
        let mut stdout = std::io::stdout();
        let _ = writeln!(stdout, "batch-triage serve listening on http://{address}")
            .and_then(|()| stdout.flush());
        let state = AppState::new(triage, key, budget);
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let server = axum::serve(listener, app(state)).with_graceful_shutdown(async move {
            stop.await;
            eprintln!("batch-triage serve: stopping; finishing the requests in flight");
            let _ = stop_tx.send(true);
        });
        let mut server = tokio::spawn(std::future::IntoFuture::into_future(server));
        tokio::select! {
            joined = &mut server => joined??,
            // The grace period starts at the signal; a request still running after it is
            // dropped (its sender retries, and every effect is idempotent).
            _ = stop_rx.changed() => {
                if let Ok(joined) = tokio::time::timeout(SHUTDOWN_GRACE, server).await {
                    joined??;
                } else {
                    eprintln!(
                        "batch-triage serve: requests still running after {}s were dropped",
                        SHUTDOWN_GRACE.as_secs()
                    );
                }
            }
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn init_logging() {
    // The pipeline logs through `tracing`; warnings by default, RUST_LOG for more. Libraries
    // never log secrets, and this binary never logs a request's URL or headers.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// [`shutdown_signal`], with the handlers installed now rather than at the first poll: a signal
/// that arrives in between would otherwise kill the process instead of stopping it cleanly.
fn listen_for_shutdown() -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt()).ok();
        let terminate = signal(SignalKind::terminate()).ok();
        async fn received(signal: Option<Signal>) {
            match signal {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        async move {
            tokio::select! {
                () = received(interrupt) => {},
                () = received(terminate) => {},
            }
        }
    }
    #[cfg(not(unix))]
    shutdown_signal()
}

/// Ctrl-C, or SIGTERM (what a service manager or a container runtime sends).
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/events", any(events))
        .route("/api/records", post(records))
        .route("/api/sweep", post(sweep))
        .route("/api/diagnose", post(diagnose))
        .route("/report", get(report_page))
        // Layers run outside in: the key is checked first, then a place is taken, and only then
        // is the body read (by the handler). A stranger's body is never read.
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), limit))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ));
    Router::new()
        .route("/", get(|| async { "batch-triage ready\n" }))
        .merge(api)
        .with_state(state)
}

/// Refuses a request without the key before its body is read: the 401 goes out while a
/// stranger is still sending, and the connection is closed rather than drained.
async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.uri().path().to_owned();
    if let Some(mut refused) = refusal(&state, &route, request.headers(), request.uri().query()) {
        refused
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return refused;
    }
    next.run(request).await
}

/// Takes one of the [`MAX_IN_FLIGHT`] places for the request's lifetime, or answers 503.
async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Ok(_place) = state.in_flight.clone().try_acquire_owned() else {
        eprintln!(
            "batch-triage serve: {} refused: {MAX_IN_FLIGHT} requests in flight",
            request.uri().path()
        );
        return busy("too many requests in flight");
    };
    next.run(request).await
}

/// 503 with Retry-After: a load the sender should bring back later.
fn busy(why: &str) -> Response {
    let mut response = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": format!("{why}; try again in {RETRY_AFTER_SECONDS}s")}),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    response
}

/// A request body read whole, up to [`BODY_LIMIT`], with its share of [`BODY_BUDGET`] held until
/// it is dropped. A declared length is checked before anything is read, and the buffer is sized
/// once: read by chunks into a growing buffer, a 32 MiB body would briefly cost twice that.
struct Payload {
    bytes: Bytes,
    /// Given back when the body is dropped.
    budget: Option<OwnedSemaphorePermit>,
}

impl FromRequest<AppState> for Payload {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let too_large = || {
            json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": format!("the body is larger than {} MiB", BODY_LIMIT >> 20)}),
            )
        };
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|n| n > BODY_LIMIT) {
            return Err(too_large());
        }
        let budget = &state.body_budget;
        let units = |bytes: usize| u32::try_from(bytes.div_ceil(BUDGET_UNIT)).unwrap_or(u32::MAX);
        let mut held: Option<OwnedSemaphorePermit> = None;
        // Holds budget for `bytes` in all; false when the budget is spent.
        let reserve = |bytes: usize, held: &mut Option<OwnedSemaphorePermit>| {
            let have = held.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
            let want = units(bytes) as usize;
            if want <= have {
                return true;
            }
            let more = u32::try_from(want - have).unwrap_or(u32::MAX);
            let Ok(permit) = budget.clone().try_acquire_many_owned(more) else {
                return false;
            };
            match held {
                Some(held) => held.merge(permit),
                None => *held = Some(permit),
            }
            true
        };
        let spent = || busy("the server holds as many request bodies as it may");
        let mut buffer = Vec::new();
        if let Some(declared) = declared {
            if !reserve(declared, &mut held) {
                return Err(spent());
            }
            buffer.reserve_exact(declared);
        }
        let mut chunks = request.into_body().into_data_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|error| {
                json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"error": format!("reading the body failed: {error}")}),
                )
            })?;
            let length = buffer.len() + chunk.len();
            if length > BODY_LIMIT {
                return Err(too_large());
            }
            if !reserve(length, &mut held) {
                return Err(spent());
            }
            buffer.extend_from_slice(&chunk);
        }
        Ok(Self {
            bytes: Bytes::from(buffer),
            budget: held,
        })
    }
}

/// The `key` query parameter, percent-decoded.
fn key_param(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(name, _)| name == "key")
        .map(|(_, value)| value.into_owned())
}

/// Headers as text pairs; values that are not text cannot hold a key or an origin.
fn header_pairs(headers: &HeaderMap) -> Vec<(&str, &str)> {
    headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
        .collect()
}

fn to_response(response: webhook::Response) -> Response {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut out = (status, response.body).into_response();
    for (name, value) in response.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name),
            HeaderValue::try_from(value.as_str()),
        ) {
            out.headers_mut().insert(name, value);
        }
    }
    out
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Checks the key of a request, before its body is read: the 401 to send, if any. (The webhook's
/// handshakes carry the key too: Event Grid is given the URL with `?key=…`.)
fn refusal(
    state: &AppState,
    route: &str,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Option<Response> {
    let key = key_param(query);
    let refused = state
        .key
        .authorize(&header_pairs(headers), key.as_deref())
        .err()?;
    eprintln!(
        "batch-triage serve: {route} refused: {}",
        inert(&reason(&refused))
    );
    Some(to_response(refused))
}

async fn events(
    State(state): State<AppState>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    payload: Payload,
) -> Response {
    let Payload {
        bytes: body,
        budget,
    } = payload;
    let key = key_param(query.as_deref());
    let pairs = header_pairs(&headers);
    let request = webhook::Request {
        method: method.as_str(),
        headers: &pairs,
        key_param: key.as_deref(),
        body: &body,
    };
    match state.key.gate(&request) {
        Gate::Respond(response) => {
            if response.status == 401 {
                eprintln!(
                    "batch-triage serve: /api/events refused: {}",
                    inert(&reason(&response))
                );
            }
            to_response(response)
        }
        Gate::Deliver(payload) => {
            // The gate delivers the body itself; a copy only if that ever changes.
            let payload = if payload.as_ptr() == body.as_ptr() && payload.len() == body.len() {
                body.clone()
            } else {
                Bytes::copy_from_slice(payload)
            };
            run_payload(&state, "/api/events", payload, budget).await
        }
    }
}

fn reason(response: &webhook::Response) -> String {
    serde_json::from_slice::<Value>(&response.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn records(State(state): State<AppState>, payload: Payload) -> Response {
    run_payload(&state, "/api/records", payload.bytes, payload.budget).await
}

/// Runs `work` on its own task, so it finishes even when the caller hangs up: Event Grid stops
/// waiting after 30 s, and a copy or a sweep cut off there would never complete (a sweep would
/// also keep its lease). `None` if the task itself failed, which is reported as transient.
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> Option<T> {
    match tokio::spawn(work).await {
        Ok(value) => Some(value),
        Err(error) => {
            eprintln!(
                "batch-triage serve: a request's work stopped: {}",
                inert(&error.to_string())
            );
            None
        }
    }
}

fn stopped() -> Response {
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": "the work stopped unexpectedly; try again"}),
    )
}

/// Runs one payload and answers with the verdict: 200 done, 400 unreadable (never retried),
/// 503 transient (retried; nothing done twice).
async fn run_payload(
    state: &AppState,
    route: &str,
    payload: Bytes,
    budget: Option<OwnedSemaphorePermit>,
) -> Response {
    let triage = state.triage.clone();
    let deadline = Deadline::after(state.budget);
    let work = async move {
        let report = triage
            .handle_payload(&payload, OffsetDateTime::now_utc(), deadline)
            .await;
        // The body's share of the budget is given back with the body, when the work is done.
        drop((payload, budget));
        report
    };
    let Some(result) = detached(work).await else {
        return stopped();
    };
    let verdict = Verdict::of_payload(&result);
    let status =
        StatusCode::from_u16(verdict.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match result {
        Ok(report) => {
            let lines = report.lines();
            for line in &lines {
                eprintln!("batch-triage serve: {route}: {}", inert(line));
            }
            if verdict.is_retry() {
                // The lines name Batch endpoints and request ids: they stay in the log above.
                let mut body = verdict.public_body();
                body["status"] = json!("retry");
                json_response(status, body)
            } else {
                json_response(
                    status,
                    json!({"status": "done", "subjects": lines, "ignoredItems": report.ignored_items}),
                )
            }
        }
        Err(TriageError::Payload(error)) => {
            eprintln!(
                "batch-triage serve: {route}: unreadable payload acknowledged: {}",
                inert(&error.to_string())
            );
            json_response(
                status,
                json!({"error": format!("unreadable payload: {error}")}),
            )
        }
    }
}

async fn sweep(State(state): State<AppState>) -> Response {
    let triage = state.triage.clone();
    let deadline = Deadline::after(state.budget);
    let work = async move {
        triage
            .tick(
                OffsetDateTime::now_utc(),
                deadline,
                &SweepOptions::default(),
            )
            .await
    };
    let Some(result) = detached(work).await else {
        return stopped();
    };
    match result {
        Ok(report) => {
            let lines = report.lines();
            for line in &lines {
                eprintln!("batch-triage serve: /api/sweep: {}", inert(line));
            }
            json_response(
                StatusCode::OK,
                json!({"status": "done", "completed": report.sweep.completed, "lines": lines}),
            )
        }
        Err(error) => {
            eprintln!(
                "batch-triage serve: /api/sweep failed (retry later): {}",
                inert(&error.to_string())
            );
            // The log line above has the error; the answer says only what kind it was.
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "the sweep could not finish: Batch or the store is unavailable; retry later", "retryable": true}),
            )
        }
    }
}

/// `GET /report?since=6h&account=…&format=json`: the store's report, as the page (with a
/// policy that lets nothing load) or JSON.
async fn report_page(State(state): State<AppState>, uri: axum::http::Uri) -> Response {
    let query = match report::parse_query(uri.query(), OffsetDateTime::now_utc()) {
        Ok(query) => query,
        Err(error) => return json_response(StatusCode::BAD_REQUEST, json!({"error": error})),
    };
    let store = state.triage.store();
    let Some(built) = detached(async move { report::build(store, &query.options).await }).await
    else {
        return stopped();
    };
    match built {
        Ok(built) if query.json => json_response(StatusCode::OK, json!(built)),
        Ok(built) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    report::CONTENT_SECURITY_POLICY,
                ),
                (header::CACHE_CONTROL, "no-store"),
            ],
            built.html(),
        )
            .into_response(),
        Err(error) => {
            eprintln!(
                "batch-triage serve: /report failed (retry later): {}",
                inert(&error.to_string())
            );
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": error.to_string()}),
            )
        }
    }
}

async fn diagnose(State(state): State<AppState>, payload: Payload) -> Response {
    let body = payload.bytes;
    let usage = "send a JSON body {\"jobId\": \"…\", \"taskId\": \"…\", \"account\": \"…\"} (taskId and account optional)";
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return json_response(StatusCode::BAD_REQUEST, json!({"error": usage}));
    };
    let Some(job_id) = request
        .get("jobId")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty())
    else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": format!("jobId is required: {usage}")}),
        );
    };
    let task_id = request.get("taskId").and_then(Value::as_str);
    // `account` picks one of the deployment's accounts; without it, the first.
    let triage = match request.get("account").and_then(Value::as_str) {
        None => state.triage.as_ref(),
        Some(name) => match state.triage.account(name) {
            Some(triage) => triage,
            None => {
                return json_response(
                    StatusCode::NOT_FOUND,
                    json!({"error": "account is not a configured account"}),
                );
            }
        },
    };
    match triage
        .diagnose(job_id, task_id, Deadline::after(state.budget))
        .await
    {
        Ok(diagnoses) => match serde_json::to_value(diagnoses) {
            Ok(body) => json_response(StatusCode::OK, body),
            Err(error) => json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": error.to_string()}),
            ),
        },
        Err(error) => {
            // The error names the Batch endpoint and the request id: the log keeps them, the
            // caller is told only what kind of failure it was.
            eprintln!(
                "batch-triage serve: /api/diagnose failed: {}",
                inert(&error.to_string())
            );
            let verdict = Verdict::of_batch_error(&error);
            json_response(
                StatusCode::from_u16(verdict.http_status()).unwrap_or(StatusCode::BAD_GATEWAY),
                verdict.public_body(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    //! The router in process (`tower::ServiceExt::oneshot`), in front of the emulator: routes,
    //! the key, the limits and the error answers. `tests/serve.rs` drives the binary.

    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::body::Body;
    use axum::http::Request as HttpRequest;
    use test_kit::Backends;
    use tower::ServiceExt;

    use super::*;

    const KEY: &str = "in-process-key-0123456789abcdef";

    async fn state() -> (AppState, Backends) {
        let backends = Backends::start().await;
        let triage = Settings::from_env(|name| backends.setting(name))
            .unwrap()
            .build()
            .unwrap();
        let state = AppState::new(
            triage,
            WebhookKey::new(KEY).unwrap(),
            Duration::from_secs(30),
        );
        (state, backends)
    }

    async fn send(state: &AppState, request: HttpRequest<Body>) -> (StatusCode, HeaderMap, Value) {
        let response = app(state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        (status, headers, body)
    }

    fn post(uri: &str, key: Option<&str>, body: impl Into<Body>) -> HttpRequest<Body> {
        let mut request = HttpRequest::post(uri);
        if let Some(key) = key {
            request = request.header("x-batch-triage-key", key);
        }
        request.body(body.into()).unwrap()
    }

    /// A body that records whether anyone read it, and then fails the read (as a stranger's
    /// connection that never finishes would, eventually), so reading it cannot pass unseen.
    fn watched_body(read: Arc<AtomicBool>) -> Body {
        Body::from_stream(futures::stream::poll_fn(move |_| {
            read.store(true, Ordering::SeqCst);
            std::task::Poll::Ready(Some(Err::<Bytes, _>(std::io::Error::other("never ends"))))
        }))
    }

    #[test]
    fn the_key_parameter_is_percent_decoded_and_found_among_others() {
        assert_eq!(
            key_param(Some("a=1&key=abc%2Fdef&b=2")).as_deref(),
            Some("abc/def")
        );
        assert_eq!(key_param(Some("keys=abc")), None);
        assert_eq!(key_param(None), None);
    }

    #[tokio::test]
    async fn readiness_needs_no_key_and_unknown_routes_are_404() {
        let (state, _backends) = state().await;
        let (status, _, body) =
            send(&state, HttpRequest::get("/").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, Value::String("batch-triage ready\n".to_owned()));
        let (status, _, _) = send(&state, post("/api/nothing", Some(KEY), "{}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _) = send(
            &state,
            HttpRequest::get("/api/records")
                .header("x-batch-triage-key", KEY)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn a_stranger_is_refused_before_a_byte_of_the_body_is_read() {
        let (state, _backends) = state().await;
        for route in ["/api/records", "/api/events", "/api/diagnose", "/api/sweep"] {
            for key in [None, Some("wrong-key")] {
                let read = Arc::new(AtomicBool::new(false));
                let (status, _, body) =
                    send(&state, post(route, key, watched_body(read.clone()))).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{route} {key:?}: {body}");
                assert!(
                    !read.load(Ordering::SeqCst),
                    "{route} {key:?}: the body was read"
                );
                assert!(!body.to_string().contains(KEY), "{body}");
            }
        }
        // The key in the query also opens the door.
        let request = post(
            &format!("/api/records?key={KEY}"),
            None,
            r#"{"records":[{}]}"#,
        );
        let (status, _, body) = send(&state, request).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["ignoredItems"], 1, "{body}");
    }

    #[tokio::test]
    async fn a_million_empty_records_are_acknowledged_as_ignored() {
        let (state, backends) = state().await;
        let records = 1_000_000;
        let mut body = String::with_capacity(records * 3 + 16);
        body.push_str("{\"records\":[{}");
        for _ in 1..records {
            body.push_str(",{}");
        }
        body.push_str("]}");
        let (status, _, answer) = send(&state, post("/api/records", Some(KEY), body)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["status"], "done");
        assert_eq!(answer["ignoredItems"], records);
        assert_eq!(answer["subjects"], json!([]));
        assert!(backends.hook.is_empty());
    }

    #[tokio::test]
    async fn unreadable_bodies_are_400_and_oversize_ones_413_unread() {
        let (state, _backends) = state().await;
        let (status, _, body) =
            send(&state, post("/api/records", Some(KEY), "{\"records\": [1,")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("unreadable payload"),
            "{body}"
        );

        let (status, _, body) = send(&state, post("/api/diagnose", Some(KEY), "not json")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (status, _, body) = send(
            &state,
            post("/api/diagnose", Some(KEY), r#"{"taskId":"t"}"#),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("jobId is required"),
            "{body}"
        );
        let (status, _, body) = send(
            &state,
            post(
                "/api/diagnose",
                Some(KEY),
                r#"{"jobId":"no-such-job","taskId":"t"}"#,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

        let read = Arc::new(AtomicBool::new(false));
        let mut request = post("/api/records", Some(KEY), watched_body(read.clone()));
        request
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(BODY_LIMIT + 1));
        let (status, _, body) = send(&state, request).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert!(!read.load(Ordering::SeqCst), "the oversize body was read");
    }

    #[tokio::test]
    async fn a_full_server_answers_503_with_retry_after() {
        let (state, _backends) = state().await;
        // Every place taken: a request is turned away at once, body unread.
        let places = state
            .in_flight
            .clone()
            .acquire_many_owned(MAX_IN_FLIGHT as u32)
            .await
            .unwrap();
        let read = Arc::new(AtomicBool::new(false));
        let (status, headers, body) = send(
            &state,
            post("/api/records", Some(KEY), watched_body(read.clone())),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(
            headers[header::RETRY_AFTER],
            RETRY_AFTER_SECONDS.to_string()
        );
        assert!(!read.load(Ordering::SeqCst));
        drop(places);

        // The body budget spent by others: a body that does not fit is refused, one that does
        // is worked, and the budget is whole again after each.
        let all = (BODY_BUDGET / BUDGET_UNIT) as u32;
        let others = state
            .body_budget
            .clone()
            .acquire_many_owned(all - 1)
            .await
            .unwrap();
        let big = format!("{{\"records\":[{}]}}", vec!["{}"; 1000].join(","));
        let (status, headers, body) = send(&state, post("/api/records", Some(KEY), big)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(
            headers[header::RETRY_AFTER],
            RETRY_AFTER_SECONDS.to_string()
        );
        let (status, _, body) = send(
            &state,
            post("/api/records", Some(KEY), r#"{"records":[{}]}"#),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        drop(others);
        assert_eq!(state.body_budget.available_permits(), all as usize);
        assert_eq!(state.in_flight.available_permits(), MAX_IN_FLIGHT);
    }
}
