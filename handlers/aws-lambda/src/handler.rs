//! One invocation, start to end: classify the event, run the pipeline within the time Lambda
//! gives, and turn the result into a response or a typed error (`verdict`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use batch_client::Deadline;
use pipeline::parking::{ParkKey, ParkedDelivery};
use pipeline::sweep::SweepOptions;
use pipeline::triage::Triage;
use pipeline::webhook::{Gate, KEY_SETTING, Request, WebhookKey};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::event::{HttpRequest, Invocation, classify};
use crate::verdict::{HttpResponse, InvocationError, delivery_response};

/// Time kept back from Lambda's deadline, so the function answers (and releases the sweep's
/// lease) before Lambda stops it.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// What every invocation shares; built once per execution environment.
pub struct Handler {
    triage: Arc<Triage>,
    webhook_key: Option<WebhookKey>,
    budget: Duration,
}

impl Handler {
    /// A handler over `triage`. `budget` (`BATCH_TRIAGE_INVOCATION_SECONDS`) caps each
    /// invocation below Lambda's own deadline.
    pub fn new(triage: Arc<Triage>, webhook_key: Option<WebhookKey>, budget: Duration) -> Self {
        if webhook_key.is_none() {
            tracing::warn!(
                "{KEY_SETTING} is not set: HTTP requests (the Event Grid webhook) will be refused"
            );
        }
        Self {
            triage,
            webhook_key,
            budget,
        }
    }

    /// Handles one event. `lambda_deadline` is when Lambda stops the invocation (`None` when
    /// unknown, e.g. a test context).
    pub async fn handle(
        &self,
        event: &Value,
        lambda_deadline: Option<SystemTime>,
    ) -> Result<Value, InvocationError> {
        let deadline =
            Deadline::after(work_budget(self.budget, lambda_deadline, SystemTime::now()));
        let result = self.dispatch(event, deadline).await;
        if let Err(error) = &result
            && !error.retryable
        {
            self.keep_unprocessable(event, error).await;
        }
        result
    }

    /// Keeps a payload no retry can help in the store (`poisoned/lambda/…`) before Lambda is
    /// told, so it survives even without an on-failure destination or dead-letter queue. A
    /// store failure is logged: the error still goes back to Lambda.
    async fn keep_unprocessable(&self, event: &Value, error: &InvocationError) {
        let payload = event.to_string();
        let key = ParkKey::by_content("lambda", payload.as_bytes());
        let delivery = ParkedDelivery::new(
            "lambda",
            "a Lambda invocation answered NonRetryable",
            error.message.clone(),
            payload,
            OffsetDateTime::now_utc(),
        );
        match self.triage.keep_unprocessable(&key, &delivery).await {
            Ok(()) => {
                tracing::warn!(key = %key.as_str(), "NonRetryable payload kept under poisoned/")
            }
            Err(store_error) => {
                tracing::error!(error = %store_error, "NonRetryable payload could not be kept")
            }
        }
    }

    async fn dispatch(&self, event: &Value, deadline: Deadline) -> Result<Value, InvocationError> {
        match classify(event) {
            Invocation::Schedule => self.tick(deadline).await,
            Invocation::Http(format, request) => {
                let response = match request {
                    Ok(request) if is_report(&request) => self.report(&request).await,
                    Ok(request) => self.webhook(&request, deadline).await,
                    Err(reason) => {
                        tracing::warn!(%reason, "unusable HTTP request answered 400");
                        HttpResponse::json(400, &json!({"error": reason}))
                    }
                }
                .for_format(format);
                tracing::info!(status = response.status_code, "webhook request answered");
                Ok(serde_json::to_value(response).unwrap_or(Value::Null))
            }
            Invocation::Diagnose {
                job_id,
                task_id,
                account,
            } => {
                self.diagnose(&job_id, task_id.as_deref(), account.as_deref(), deadline)
                    .await
            }
            Invocation::Unknown(reason) => {
                tracing::error!(%reason, "unrecognised invocation");
                Err(InvocationError::non_retryable(reason))
            }
        }
    }

    async fn tick(&self, deadline: Deadline) -> Result<Value, InvocationError> {
        let report = self
            .triage
            .tick(
                OffsetDateTime::now_utc(),
                deadline,
                &SweepOptions::default(),
            )
            .await
            // Every tick failure is the store or Batch being unavailable; what ran before it is
            // idempotent, so the next schedule (or EventBridge's retry) simply runs it again.
            .map_err(|error| InvocationError::retryable(format!("tick: {error}")))?;
        let lines = report.lines();
        for line in &lines {
            tracing::info!(?line, "tick");
        }
        Ok(json!({ "tick": lines }))
    }

    /// `GET …/report?since=6h&format=json` on the Function URL, behind the webhook's key: the
    /// store's report page (with a policy that lets nothing load) or JSON.
    async fn report(&self, request: &HttpRequest) -> HttpResponse {
        let Some(key) = &self.webhook_key else {
            return HttpResponse::json(
                503,
                &json!({"error": format!("the report is not configured: set {KEY_SETTING}")}),
            );
        };
        if let Err(refused) = key.authorize(&request.header_pairs(), request.key_param.as_deref()) {
            tracing::warn!("report request without the right key refused");
            return refused.into();
        }
        let query = match report::parse_params(request.query.clone(), OffsetDateTime::now_utc()) {
            Ok(query) => query,
            Err(error) => return HttpResponse::json(400, &json!({"error": error})),
        };
        match report::build(self.triage.store(), &query.options).await {
            Ok(built) if query.json => {
                HttpResponse::json(200, &serde_json::to_value(&built).unwrap_or(Value::Null))
            }
            Ok(built) => HttpResponse::page(200, built.html(), report::CONTENT_SECURITY_POLICY),
            Err(error) => {
                tracing::warn!(%error, "report failed");
                HttpResponse::json(503, &json!({"error": error.to_string()}))
            }
        }
    }

    async fn webhook(&self, request: &HttpRequest, deadline: Deadline) -> HttpResponse {
        let Some(key) = &self.webhook_key else {
            // 503, not 401: Event Grid keeps retrying for a day, so deliveries survive until
            // the setting is fixed.
            return HttpResponse::json(
                503,
                &json!({"error": format!("the webhook is not configured: set {KEY_SETTING}")}),
            );
        };
        let headers = request.header_pairs();
        let gate_request = Request {
            method: &request.method,
            headers: &headers,
            key_param: request.key_param.as_deref(),
            body: &request.body,
        };
        match key.gate(&gate_request) {
            Gate::Respond(response) => {
                if response.status == 401 {
                    tracing::warn!("webhook request without the right key refused");
                }
                response.into()
            }
            Gate::Deliver(payload) => {
                let result = self
                    .triage
                    .handle_payload(payload, OffsetDateTime::now_utc(), deadline)
                    .await;
                match &result {
                    Ok(report) => {
                        for line in report.lines() {
                            tracing::info!(%line, "delivery");
                        }
                    }
                    Err(error) => tracing::warn!(%error, "unreadable delivery answered 400"),
                }
                delivery_response(&result)
            }
        }
    }

    async fn diagnose(
        &self,
        job_id: &str,
        task_id: Option<&str>,
        account: Option<&str>,
        deadline: Deadline,
    ) -> Result<Value, InvocationError> {
        // `account` picks one of the deployment's accounts; without it, the first.
        let triage = match account {
            None => self.triage.as_ref(),
            Some(name) => self.triage.account(name).ok_or_else(|| {
                InvocationError::non_retryable("account is not a configured account")
            })?,
        };
        let diagnoses = triage
            .diagnose(job_id, task_id, deadline)
            .await
            .map_err(|error| {
                tracing::warn!(%error, job_id, task_id, "diagnose failed");
                InvocationError::from_batch(&error)
            })?;
        serde_json::to_value(diagnoses).map_err(|error| {
            InvocationError::non_retryable(format!("the diagnosis cannot be serialised: {error}"))
        })
    }
}

/// Whether a request asks for the report: `GET` on a path ending in `/report`.
fn is_report(request: &HttpRequest) -> bool {
    request.method == "GET" && request.path.trim_end_matches('/').ends_with("/report")
}

/// Lambda never runs an invocation longer than this, so a deadline further in the past than
/// this was not set by Lambda.
const LAMBDA_MAX_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// How long an invocation may work: the configured budget, or less when Lambda's deadline is
/// nearer (minus [`DEADLINE_MARGIN`]). A deadline just past leaves no time at all, and the
/// pipeline then reports a transient failure instead of being cut off mid-write.
///
/// A deadline long past is not a deadline: local Runtime API emulators send a duration or zero
/// in `Lambda-Runtime-Deadline-Ms` instead of a Unix time (`cargo lambda watch` sends `600000`),
/// which would otherwise leave every local invocation with no time.
pub fn work_budget(
    budget: Duration,
    lambda_deadline: Option<SystemTime>,
    now: SystemTime,
) -> Duration {
    match lambda_deadline {
        Some(deadline) if deadline + LAMBDA_MAX_TIMEOUT >= now => {
            let remaining = deadline.duration_since(now).unwrap_or(Duration::ZERO);
            budget.min(remaining.saturating_sub(DEADLINE_MARGIN))
        }
        _ => budget,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_capped_by_lambdas_deadline_less_a_margin() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let budget = Duration::from_secs(240);
        assert_eq!(work_budget(budget, None, now), budget);
        assert_eq!(
            work_budget(budget, Some(now + Duration::from_secs(900)), now),
            budget
        );
        assert_eq!(
            work_budget(budget, Some(now + Duration::from_secs(30)), now),
            Duration::from_secs(28)
        );
        assert_eq!(
            work_budget(budget, Some(now + Duration::from_secs(1)), now),
            Duration::ZERO
        );
        assert_eq!(
            work_budget(budget, Some(now - Duration::from_secs(5)), now),
            Duration::ZERO
        );
    }

    #[test]
    fn a_deadline_no_lambda_would_set_is_ignored() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let budget = Duration::from_secs(240);
        // What `cargo lambda watch` sends: 600000 "ms since the epoch", i.e. 1970.
        let local_emulator = SystemTime::UNIX_EPOCH + Duration::from_millis(600_000);
        assert_eq!(work_budget(budget, Some(local_emulator), now), budget);
        assert_eq!(
            work_budget(budget, Some(now - Duration::from_secs(3600)), now),
            budget
        );
    }
}
