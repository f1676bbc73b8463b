//! The routes the Functions host calls, one per function, and where a pipeline result becomes a
//! platform verdict: a transient failure answers 500 so the host (Event Hubs retry policy, Event
//! Grid redelivery) tries again; unreadable input is logged and acknowledged, never retried
//! forever, because retrying cannot make it readable.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use batch_client::Deadline;
use pipeline::Verdict;
use pipeline::triage::Triage;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::protocol::{
    InvokeRequest, InvokeResponse, event_grid_event, event_hub_bodies, http_request, timer_info,
};

/// The largest invocation accepted: an Event Hubs batch of 100 events of 1 MB, with room.
pub const BODY_LIMIT: usize = 128 << 20;

/// What the routes share.
#[derive(Clone)]
pub struct AppState {
    /// The pipeline.
    pub triage: Arc<Triage>,
    /// How long one invocation may work (below the function timeout, so it ends cleanly).
    pub budget: Duration,
}

/// The custom handler's routes.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { "batch-triage ready" }))
        .route("/TaskEvents", post(task_events))
        .route("/TaskEventGrid", post(task_event_grid))
        .route("/Sweep", post(sweep))
        .route("/Diagnose", post(diagnose))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Reads the host's JSON envelope. A body that is not one is logged; the caller acknowledges it
/// with the returned log line.
fn envelope(body: &str) -> Result<InvokeRequest, String> {
    serde_json::from_str(body).map_err(|error| {
        tracing::error!(error = %error, "invocation body is not the Functions envelope; acknowledged");
        format!("ignored: the invocation body is not the host's JSON envelope ({error})")
    })
}

fn ok(logs: Vec<String>) -> Response {
    (StatusCode::OK, axum::Json(InvokeResponse::logs(logs))).into_response()
}

fn retry(logs: Vec<String>) -> Response {
    // The host ignores the body of a failed invocation; the logs go to the worker log instead.
    for line in &logs {
        tracing::warn!(%line, "invocation failed; the host will retry");
    }
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}

/// Runs an invocation's payloads through the pipeline together and decides the verdict.
async fn run_payloads(state: &AppState, payloads: Vec<String>) -> Response {
    let (report, unreadable) = state
        .triage
        .handle_payloads(
            &payloads,
            OffsetDateTime::now_utc(),
            Deadline::after(state.budget),
        )
        .await;
    let mut logs = report.lines();
    for error in unreadable {
        tracing::error!(error = %error, "unreadable payload acknowledged");
        logs.push(format!("ignored an unreadable payload: {error}"));
    }
    // The host retries a failed invocation; anything else is acknowledged.
    if Verdict::of_run(&report).is_retry() {
        retry(logs)
    } else {
        ok(logs)
    }
}

async fn task_events(State(state): State<AppState>, body: String) -> Response {
    let request = match envelope(&body) {
        Ok(request) => request,
        Err(log) => return ok(vec![log]),
    };
    match event_hub_bodies(&request, "events") {
        Ok(bodies) => run_payloads(&state, bodies).await,
        Err(error) => ok(vec![format!("ignored: {error}")]),
    }
}

async fn task_event_grid(State(state): State<AppState>, body: String) -> Response {
    let request = match envelope(&body) {
        Ok(request) => request,
        Err(log) => return ok(vec![log]),
    };
    match event_grid_event(&request, "event") {
        Ok(event) => run_payloads(&state, vec![event]).await,
        Err(error) => ok(vec![format!("ignored: {error}")]),
    }
}

async fn sweep(State(state): State<AppState>, body: String) -> Response {
    let request = envelope(&body).unwrap_or_default();
    let timer = timer_info(&request, "timer");
    let mut logs = vec![format!("sweep (past due: {})", timer.is_past_due)];
    match state
        .triage
        .tick(
            OffsetDateTime::now_utc(),
            Deadline::after(state.budget),
            &pipeline::sweep::SweepOptions::default(),
        )
        .await
    {
        Ok(report) => {
            logs.extend(report.lines());
            ok(logs)
        }
        Err(error) => retry(vec![error.to_string()]),
    }
}

async fn diagnose(State(state): State<AppState>, body: String) -> Response {
    let http = |status: u16, body: Value| {
        (
            StatusCode::OK,
            axum::Json(InvokeResponse::http(status, &body, Vec::new())),
        )
            .into_response()
    };
    let request = match envelope(&body) {
        Ok(request) => request,
        Err(log) => return ok(vec![log]),
    };
    let Some(query) = http_request(&request, "req")
        .ok()
        .and_then(|r| r.json_body())
    else {
        return http(
            400,
            json!({"error": "send a JSON body {\"jobId\": \"…\", \"taskId\": \"…\"} (taskId optional)"}),
        );
    };
    let Some(job_id) = query.get("jobId").and_then(Value::as_str) else {
        return http(400, json!({"error": "jobId is required"}));
    };
    let task_id = query.get("taskId").and_then(Value::as_str);
    match state
        .triage
        .diagnose(job_id, task_id, Deadline::after(state.budget))
        .await
    {
        Ok(diagnoses) => http(200, serde_json::to_value(diagnoses).unwrap_or(Value::Null)),
        Err(error) => http(
            Verdict::of_batch_error(&error).http_status(),
            json!({"error": error.to_string()}),
        ),
    }
}
