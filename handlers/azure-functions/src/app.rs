//! The routes the Functions host calls, one per function, and where a pipeline result becomes a
//! platform verdict: a transient failure answers 500 so the host (Event Hubs retry policy, Event
//! Grid redelivery) tries again; unreadable input is logged and acknowledged, never retried
//! forever, because retrying cannot make it readable. On the last attempt of an Event Hubs
//! batch, after which the host checkpoints it whatever the answer, the batch is parked in the
//! store and acknowledged instead; the next `Sweep` works it (`pipeline::parking`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use batch_client::Deadline;
use pipeline::Verdict;
use pipeline::parking::{ParkKey, ParkedDelivery, retry_reasons};
use pipeline::triage::{Outcome, RunReport, SubjectReport, Triage};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::protocol::{
    EventHubPositions, InvokeRequest, InvokeResponse, event_grid_event, event_hub_bodies,
    http_request, timer_info,
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
        // The Event Hubs triggers of the accounts' other regions (infra/README.md, "Several
        // accounts"): the same work, from another namespace.
        .route("/TaskEvents2", post(task_events))
        .route("/TaskEvents3", post(task_events))
        .route("/TaskEvents4", post(task_events))
        .route("/TaskEventGrid", post(task_event_grid))
        .route("/Sweep", post(sweep))
        .route("/Diagnose", post(diagnose))
        .route("/Report", post(report_page))
        .route_layer(middleware::from_fn(log_invocation))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// The host's invocation id header.
const INVOCATION_ID: &str = "x-azure-functions-invocationid";

/// What became of an invocation's subjects, counted by outcome, for its summary line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutcomeCounts {
    /// Diagnosed, and the planned effects ran (or were already done).
    pub done: usize,
    /// Not processed on purpose.
    pub skipped: usize,
    /// Refused: another account or origin.
    pub refused: usize,
    /// Failed in a way a retry may fix.
    pub failed_retryable: usize,
    /// Failed for good.
    pub failed: usize,
    /// Items about nothing to triage.
    pub ignored: usize,
    /// Payloads that could not be read at all (acknowledged).
    pub unreadable: usize,
    /// `TaskEvents`: bodies parked on the last attempt. `Sweep`: parked deliveries still
    /// waiting after its drain.
    pub parked: usize,
    /// `Sweep`: parked deliveries worked and removed.
    pub drained: usize,
    /// `Sweep`: deliveries declared poison (kept, alerted once).
    pub poisoned: usize,
    /// `Sweep`: dead-lettered Event Grid events taken into the parking area.
    pub dead_lettered: usize,
}

impl OutcomeCounts {
    /// Counts the outcomes of `subjects`.
    pub fn of(subjects: &[SubjectReport]) -> Self {
        let mut counts = Self::default();
        for subject in subjects {
            match subject.outcome {
                Outcome::Done => counts.done += 1,
                Outcome::Skipped(_) => counts.skipped += 1,
                Outcome::Refused(_) => counts.refused += 1,
                Outcome::Failed {
                    retryable: true, ..
                } => counts.failed_retryable += 1,
                Outcome::Failed { .. } => counts.failed += 1,
            }
        }
        counts
    }
}

/// The counts of an invocation whose body could not be read at all.
const UNREADABLE: OutcomeCounts = OutcomeCounts {
    done: 0,
    skipped: 0,
    refused: 0,
    failed_retryable: 0,
    failed: 0,
    ignored: 0,
    unreadable: 1,
    parked: 0,
    drained: 0,
    poisoned: 0,
    dead_lettered: 0,
};

/// Attaches an invocation's counts to its response, for [`log_invocation`].
fn counted(mut response: Response, counts: OutcomeCounts) -> Response {
    response.extensions_mut().insert(counts);
    response
}

/// The host's invocation id as it may appear in a log line: a GUID's characters only, so a
/// forged header cannot write a line of its own.
fn loggable_id(value: Option<&str>) -> &str {
    match value {
        Some(id)
            if !id.is_empty()
                && id.len() <= 64
                && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
        {
            id
        }
        Some(_) => "invalid",
        None => "none",
    }
}

/// Wraps every function route: one structured line per invocation, after it ran, with the
/// invocation id, the function, the status the host sees (500 = retry), the counts by outcome
/// and the duration. Application Insights keeps it in `traces`; README.md ("Monitoring") has
/// the queries.
async fn log_invocation(request: Request, next: Next) -> Response {
    let started = Instant::now();
    // A route layer runs only for a matched route, so the path is one of the routes above.
    let function = request.uri().path().trim_start_matches('/').to_owned();
    let invocation_id = loggable_id(
        request
            .headers()
            .get(INVOCATION_ID)
            .and_then(|v| v.to_str().ok()),
    )
    .to_owned();
    let response = next.run(request).await;
    if function.is_empty() {
        return response; // readiness (`GET /`), not an invocation
    }
    let counts = response
        .extensions()
        .get::<OutcomeCounts>()
        .copied()
        .unwrap_or_default();
    tracing::info!(
        target: "batch_triage::invocation",
        invocation_id = %invocation_id,
        function = %function,
        status = response.status().as_u16(),
        done = counts.done,
        skipped = counts.skipped,
        refused = counts.refused,
        failed_retryable = counts.failed_retryable,
        failed = counts.failed,
        ignored = counts.ignored,
        unreadable = counts.unreadable,
        parked = counts.parked,
        drained = counts.drained,
        poisoned = counts.poisoned,
        dead_lettered = counts.dead_lettered,
        duration_ms = started.elapsed().as_millis() as u64,
        "invocation"
    );
    response
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

/// Runs an invocation's payloads through the pipeline together and decides the verdict. With
/// `last_attempt`, a run that wants a retry parks its readable payloads and is acknowledged,
/// because the host will not deliver them again (see the module docs).
async fn run_payloads(
    state: &AppState,
    payloads: Vec<String>,
    last_attempt: Option<LastAttempt>,
) -> Response {
    let (report, unreadable) = state
        .triage
        .handle_payloads(
            &payloads,
            OffsetDateTime::now_utc(),
            Deadline::after(state.budget),
        )
        .await;
    let mut counts = OutcomeCounts {
        ignored: report.ignored_items,
        unreadable: unreadable.len(),
        ..OutcomeCounts::of(&report.subjects)
    };
    let mut logs = report.lines();
    for (_, error) in &unreadable {
        tracing::error!(error = %error, "unreadable payload acknowledged");
        logs.push(format!("ignored an unreadable payload: {error}"));
    }
    if !Verdict::of_run(&report).is_retry() {
        return counted(ok(logs), counts);
    }
    let Some(last_attempt) = last_attempt else {
        return counted(retry(logs), counts);
    };
    let unreadable: Vec<usize> = unreadable.iter().map(|(index, _)| *index).collect();
    match park(state, &payloads, &unreadable, &report, &last_attempt).await {
        Ok(parked) => {
            tracing::warn!(
                parked,
                "last attempt failed; its payloads are parked for the next Sweep"
            );
            logs.push(format!(
                "the last attempt failed: {parked} payloads parked in the store; the next Sweep \
                 works them"
            ));
            counts.parked = parked;
            counted(ok(logs), counts)
        }
        Err(error) => {
            // Nothing else can keep them: the host checkpoints after this answer either way.
            tracing::error!(error = %error, "last attempt failed and its payloads could not be parked; they may be lost");
            counted(retry(logs), counts)
        }
    }
}

/// What a last attempt needs to park its payloads.
struct LastAttempt {
    /// Where the host had the events, when its metadata says.
    positions: Option<EventHubPositions>,
    /// The attempt, for the record.
    retry_count: u32,
}

/// Parks the readable payloads of a failed last attempt, each under its partition and sequence
/// number (or its hash, when the metadata does not give them), so a replay parks nothing twice.
/// Payloads already done are parked too: working them again finds every effect done.
async fn park(
    state: &AppState,
    payloads: &[String],
    unreadable: &[usize],
    report: &RunReport,
    last_attempt: &LastAttempt,
) -> Result<usize, pipeline::parking::StoreError> {
    let now = OffsetDateTime::now_utc();
    let reason = format!(
        "the last attempt (retry {}) failed: {}",
        last_attempt.retry_count,
        retry_reasons(report)
    );
    let positions = last_attempt
        .positions
        .as_ref()
        .filter(|p| p.sequences.len() == payloads.len());
    let mut parked = 0;
    for (index, payload) in payloads.iter().enumerate() {
        if unreadable.contains(&index) {
            continue;
        }
        let (key, origin) = match positions {
            Some(p) => (
                ParkKey::event_hubs(&p.hub, &p.partition, p.sequences[index]),
                format!(
                    "event hub {:?}, partition {:?}, sequence number {}",
                    p.hub, p.partition, p.sequences[index]
                ),
            ),
            None => (
                ParkKey::by_content("eventhubs", payload.as_bytes()),
                "an Event Hubs event without position metadata".to_owned(),
            ),
        };
        let delivery =
            ParkedDelivery::new("eventhubs", origin, reason.clone(), payload.clone(), now);
        state.triage.park(&key, &delivery).await?;
        parked += 1;
    }
    Ok(parked)
}

async fn task_events(State(state): State<AppState>, body: String) -> Response {
    let request = match envelope(&body) {
        Ok(request) => request,
        Err(log) => return counted(ok(vec![log]), UNREADABLE),
    };
    let last_attempt = request.is_last_attempt().then(|| LastAttempt {
        positions: request.event_hub_positions(),
        retry_count: request.retry_count(),
    });
    match event_hub_bodies(&request, "events") {
        Ok(bodies) => run_payloads(&state, bodies, last_attempt).await,
        Err(error) => counted(ok(vec![format!("ignored: {error}")]), UNREADABLE),
    }
}

async fn task_event_grid(State(state): State<AppState>, body: String) -> Response {
    let request = match envelope(&body) {
        Ok(request) => request,
        Err(log) => return counted(ok(vec![log]), UNREADABLE),
    };
    match event_grid_event(&request, "event") {
        // Event Grid retries for a day and then dead-letters: nothing to park here.
        Ok(event) => run_payloads(&state, vec![event], None).await,
        Err(error) => counted(ok(vec![format!("ignored: {error}")]), UNREADABLE),
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
            let counts = OutcomeCounts {
                parked: report.parked.still_parked + report.parked.left_for_next_tick,
                drained: report.parked.drained,
                poisoned: report.parked.poisoned,
                dead_lettered: report.parked.dead_lettered,
                ..OutcomeCounts::of(&report.sweep.subjects)
            };
            counted(ok(logs), counts)
        }
        Err(error) => retry(vec![error.to_string()]),
    }
}

/// The `Report` HTTP function (function-key auth, checked by the host): the store's report
/// page, or JSON with `?format=json`.
async fn report_page(State(state): State<AppState>, body: String) -> Response {
    let answer = |response: InvokeResponse| (StatusCode::OK, axum::Json(response)).into_response();
    let request = match envelope(&body) {
        Ok(request) => request,
        Err(log) => return ok(vec![log]),
    };
    let params: Vec<(String, String)> = http_request(&request, "req")
        .map(|r| {
            r.query
                .into_iter()
                .filter_map(|(name, value)| value.as_str().map(|v| (name, v.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let query = match report::parse_params(params, time::OffsetDateTime::now_utc()) {
        Ok(query) => query,
        Err(error) => {
            return answer(InvokeResponse::http(
                400,
                &json!({"error": error}),
                Vec::new(),
            ));
        }
    };
    match report::build(state.triage.store(), &query.options).await {
        Ok(built) if query.json => answer(InvokeResponse::http(
            200,
            &serde_json::to_value(&built).unwrap_or(Value::Null),
            Vec::new(),
        )),
        Ok(built) => answer(InvokeResponse::http_text(
            200,
            built.html(),
            &[
                ("Content-Type", "text/html; charset=utf-8"),
                ("Content-Security-Policy", report::CONTENT_SECURITY_POLICY),
                ("Cache-Control", "no-store"),
            ],
        )),
        Err(error) => answer(InvokeResponse::http(
            503,
            &json!({"error": error.to_string()}),
            vec![format!("report failed (retry later): {error}")],
        )),
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
            json!({"error": "send a JSON body {\"jobId\": \"…\", \"taskId\": \"…\", \"account\": \"…\"} (taskId and account optional) with Content-Type: application/json; other content types reach the function base64-encoded and are not read"}),
        );
    };
    let Some(job_id) = query.get("jobId").and_then(Value::as_str) else {
        return http(400, json!({"error": "jobId is required"}));
    };
    let task_id = query.get("taskId").and_then(Value::as_str);
    // `account` picks one of the deployment's accounts; without it, the first.
    let triage = match query.get("account").and_then(Value::as_str) {
        None => state.triage.as_ref(),
        Some(name) => match state.triage.account(name) {
            Some(triage) => triage,
            None => return http(404, json!({"error": "account is not a configured account"})),
        },
    };
    match triage
        .diagnose(job_id, task_id, Deadline::after(state.budget))
        .await
    {
        Ok(diagnoses) => http(200, serde_json::to_value(diagnoses).unwrap_or(Value::Null)),
        Err(error) => {
            // The error names the Batch endpoint and the request id: the log keeps them, the
            // caller is told only what kind of failure it was.
            tracing::warn!(error = %error, "Diagnose failed");
            let verdict = Verdict::of_batch_error(&error);
            http(verdict.http_status(), verdict.public_body())
        }
    }
}
