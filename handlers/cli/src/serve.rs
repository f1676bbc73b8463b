//! `batch-triage serve`: the pipeline behind a plain HTTP server, for users without the Functions
//! host. Event Grid (or anything that can POST) delivers to it directly; every route but the
//! readiness probe needs the shared key, checked by `pipeline::webhook`.
//!
//! Verdicts follow Event Grid's retry rules (`docs/delivery.md`): 2xx acknowledges, 400 and 401 are
//! never retried (unreadable input, a stranger), 503 asks for a redelivery (a transient failure;
//! every effect is idempotent, so a redelivery repeats nothing).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use batch_client::Deadline;
use pipeline::settings::Settings;
use pipeline::sweep::SweepOptions;
use pipeline::triage::{Triage, TriageError};
use pipeline::webhook::{self, Gate, WebhookKey};
use serde_json::{Value, json};
use time::OffsetDateTime;

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
  POST /api/events     Event Grid or CloudEvents webhook; answers both validation handshakes
  POST /api/records    diagnostic-log records, e.g. what an Event Hubs consumer forwards
  POST /api/sweep      one timer tick: sweep, due alert groups, outbox
  POST /api/diagnose   {\"jobId\": \"…\", \"taskId\": \"…\"} → the diagnosis JSON, no side effects

Every /api route needs BATCH_TRIAGE_WEBHOOK_KEY, as ?key=… or the x-batch-triage-key header.
Give Event Grid the endpoint URL with ?key=…: it sends the URL on the handshakes too.
Event Grid only delivers to https: put serve behind a TLS-terminating proxy.

Settings (environment): AZURE_BATCH_ENDPOINT, AZURE_BATCH_ACCOUNT, AZURE_BATCH_ACCESS_KEY (or
Entra ID without it), BATCH_TRIAGE_STORE, BATCH_TRIAGE_POLICY, BATCH_TRIAGE_ALLOW_HOSTS,
BATCH_TRIAGE_INVOCATION_SECONDS, BATCH_TRIAGE_MAX_FILE_MIB, BATCH_TRIAGE_WEBHOOK_KEY.";

/// The largest request body accepted (413 beyond it, which Event Grid does not retry). An Event
/// Grid delivery is at most 1 MB; a forwarded Event Hubs batch can be larger.
const BODY_LIMIT: usize = 32 << 20;

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
        // The first line is the address, so a script or a test can read the port it got.
        println!("batch-triage serve listening on http://{address}");
        let state = AppState {
            triage: Arc::new(triage),
            key,
            budget,
        };
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let server = axum::serve(listener, app(state)).with_graceful_shutdown(async move {
            shutdown_signal().await;
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
    Router::new()
        .route("/", get(|| async { "batch-triage ready\n" }))
        .route("/api/events", any(events))
        .route("/api/records", post(records))
        .route("/api/sweep", post(sweep))
        .route("/api/diagnose", post(diagnose))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
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

/// Checks the key of a route that is not a webhook (no handshakes): the 401 to send, if any.
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
    body: Bytes,
) -> Response {
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
            run_payload(&state, "/api/events", payload).await
        }
    }
}

fn reason(response: &webhook::Response) -> String {
    serde_json::from_slice::<Value>(&response.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn records(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = refusal(&state, "/api/records", &headers, query.as_deref()) {
        return refused;
    }
    run_payload(&state, "/api/records", body).await
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
async fn run_payload(state: &AppState, route: &str, payload: Bytes) -> Response {
    let triage = state.triage.clone();
    let deadline = Deadline::after(state.budget);
    let work = async move {
        triage
            .handle_payload(&payload, OffsetDateTime::now_utc(), deadline)
            .await
    };
    let Some(result) = detached(work).await else {
        return stopped();
    };
    match result {
        Ok(report) => {
            let lines = report.lines();
            for line in &lines {
                eprintln!("batch-triage serve: {route}: {}", inert(line));
            }
            if report.should_retry() {
                json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"status": "retry", "subjects": lines}),
                )
            } else {
                json_response(
                    StatusCode::OK,
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
                StatusCode::BAD_REQUEST,
                json!({"error": format!("unreadable payload: {error}")}),
            )
        }
    }
}

async fn sweep(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refusal(&state, "/api/sweep", &headers, query.as_deref()) {
        return refused;
    }
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
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": error.to_string()}),
            )
        }
    }
}

async fn diagnose(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = refusal(&state, "/api/diagnose", &headers, query.as_deref()) {
        return refused;
    }
    let usage = "send a JSON body {\"jobId\": \"…\", \"taskId\": \"…\"} (taskId optional)";
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
    match state
        .triage
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
        Err(error) if error.is_not_found() => {
            json_response(StatusCode::NOT_FOUND, json!({"error": error.to_string()}))
        }
        Err(error) if error.is_retryable() => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": error.to_string()}),
        ),
        Err(error) => json_response(StatusCode::BAD_GATEWAY, json!({"error": error.to_string()})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_parameter_is_percent_decoded_and_found_among_others() {
        assert_eq!(
            key_param(Some("a=1&key=abc%2Fdef&b=2")).as_deref(),
            Some("abc/def")
        );
        assert_eq!(key_param(Some("keys=abc")), None);
        assert_eq!(key_param(None), None);
    }
}
