//! The function binary as Lambda runs it: a Runtime API on loopback hands it events
//! (`GET /2018-06-01/runtime/invocation/next`, with the request id, deadline, function ARN and
//! trace id headers) and records what it posts back (`…/{id}/response`, `…/{id}/error`,
//! `/runtime/init/error`). Behind the function: the Batch emulator, a local-directory store and a
//! webhook receiver standing in for the alert destination. The events are the platform's shapes,
//! from `tests/events/`.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use batch_emulator::{Fault, FaultRule};
use serde_json::{Value, json};
use test_kit::Backends;
use tokio::sync::{mpsc, oneshot};

/// The webhook key the function is configured with.
const KEY: &str = "lambda-test-key-0123456789abcdef";

/// What the function posted back for one invocation.
#[derive(Debug)]
enum Outcome {
    /// `POST …/response`: the handler's return value.
    Response(Value),
    /// `POST …/error`: the `errorType` and `errorMessage` it reported.
    Error { error_type: String, message: String },
}

impl Outcome {
    fn response(self) -> Value {
        match self {
            Outcome::Response(value) => value,
            Outcome::Error {
                error_type,
                message,
            } => panic!("the invocation failed: {error_type}: {message}"),
        }
    }

    fn error(self) -> (String, String) {
        match self {
            Outcome::Error {
                error_type,
                message,
            } => (error_type, message),
            Outcome::Response(value) => panic!("the invocation succeeded: {value}"),
        }
    }
}

struct Queued {
    id: String,
    /// Raw bytes, so a test can hand the function something that is not JSON at all.
    body: Vec<u8>,
    deadline: SystemTime,
}

/// A `/runtime/init/error` report: the `Lambda-Runtime-Function-Error-Type` header and the body.
type InitError = (Option<String>, Value);

#[derive(Clone, Default)]
struct RuntimeState {
    queue: Arc<tokio::sync::Mutex<Option<mpsc::UnboundedReceiver<Queued>>>>,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Outcome>>>>,
    init_errors: Arc<Mutex<Vec<InitError>>>,
}

/// The mock Runtime API.
struct RuntimeApi {
    address: String,
    sender: mpsc::UnboundedSender<Queued>,
    state: RuntimeState,
    next_id: Mutex<u64>,
}

impl RuntimeApi {
    async fn start() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let state = RuntimeState::default();
        *state.queue.lock().await = Some(receiver);
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            address,
            sender,
            state,
            next_id: Mutex::new(0),
        }
    }

    /// Queues one invocation and waits for the function's answer.
    async fn invoke_raw(&self, body: Vec<u8>, timeout: Duration) -> Outcome {
        let id = {
            let mut next = self.next_id.lock().unwrap();
            *next += 1;
            format!("8476a536-e9f4-11e8-9739-{:012}", *next)
        };
        let (done, answer) = oneshot::channel();
        self.state.waiting.lock().unwrap().insert(id.clone(), done);
        self.sender
            .send(Queued {
                id: id.clone(),
                body,
                deadline: SystemTime::now() + timeout,
            })
            .unwrap();
        // A little past Lambda's deadline: the function must have answered by then.
        tokio::time::timeout(timeout + Duration::from_secs(5), answer)
            .await
            .unwrap_or_else(|_| panic!("invocation {id} got no answer"))
            .unwrap()
    }

    async fn invoke(&self, event: &Value) -> Outcome {
        self.invoke_with_timeout(event, Duration::from_secs(60))
            .await
    }

    async fn invoke_with_timeout(&self, event: &Value, timeout: Duration) -> Outcome {
        self.invoke_raw(event.to_string().into_bytes(), timeout)
            .await
    }
}

async fn next(State(state): State<RuntimeState>) -> Response {
    // Long poll, as the real API does: the function waits here between invocations.
    let queued = {
        let mut queue = state.queue.lock().await;
        queue.as_mut().unwrap().recv().await
    };
    let Some(queued) = queued else {
        return StatusCode::GONE.into_response();
    };
    let deadline_ms = queued
        .deadline
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    (
        [
            ("Content-Type", "application/json".to_owned()),
            ("Lambda-Runtime-Aws-Request-Id", queued.id),
            ("Lambda-Runtime-Deadline-Ms", deadline_ms.to_string()),
            (
                "Lambda-Runtime-Invoked-Function-Arn",
                "arn:aws:lambda:eu-west-1:123456789012:function:batch-triage".to_owned(),
            ),
            (
                "Lambda-Runtime-Trace-Id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
                    .to_owned(),
            ),
        ],
        queued.body,
    )
        .into_response()
}

fn finish(state: &RuntimeState, id: &str, outcome: Outcome) -> StatusCode {
    match state.waiting.lock().unwrap().remove(id) {
        Some(waiter) => {
            let _ = waiter.send(outcome);
            StatusCode::ACCEPTED
        }
        // The real API refuses an answer for an invocation it does not know (or twice).
        None => StatusCode::BAD_REQUEST,
    }
}

async fn response(
    State(state): State<RuntimeState>,
    UrlPath(id): UrlPath<String>,
    body: String,
) -> StatusCode {
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    finish(&state, &id, Outcome::Response(value))
}

async fn error(
    State(state): State<RuntimeState>,
    UrlPath(id): UrlPath<String>,
    body: String,
) -> StatusCode {
    let value: Value = serde_json::from_str(&body).unwrap_or_default();
    let outcome = Outcome::Error {
        error_type: value["errorType"].as_str().unwrap_or_default().to_owned(),
        message: value["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    };
    finish(&state, &id, outcome)
}

async fn init_error(
    State(state): State<RuntimeState>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let error_type = headers
        .get("Lambda-Runtime-Function-Error-Type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state
        .init_errors
        .lock()
        .unwrap()
        .push((error_type, serde_json::from_str(&body).unwrap_or_default()));
    StatusCode::ACCEPTED
}

/// Everything one test runs: the function, its Runtime API, and what stands behind it.
struct Function {
    child: Child,
    runtime: RuntimeApi,
    backends: Backends,
    output: tempfile::NamedTempFile,
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Function {
    /// Everything the function printed (its logs).
    fn output(&self) -> String {
        std::fs::read_to_string(self.output.path()).unwrap()
    }

    fn alerts(&self) -> Vec<Value> {
        self.backends.hook.alerts()
    }

    fn alerted_tasks(&self) -> Vec<String> {
        let mut tasks: Vec<String> = self
            .alerts()
            .iter()
            .map(|alert| {
                alert["diagnosis"]["subject"]["taskId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        tasks.sort();
        tasks
    }

    fn preserved(&self, task: &str) -> bool {
        self.backends
            .store
            .path()
            .join(format!("devbatch1/etl/{task}/attempt-0/manifest.json"))
            .exists()
    }

    fn still_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

/// Starts the function with the settings a deployment has; `adjust` may change them.
async fn start_with(adjust: impl FnOnce(&mut HashMap<&'static str, String>)) -> Function {
    start_on(Backends::start().await, adjust).await
}

/// Starts the function over `backends`.
async fn start_on(
    backends: Backends,
    adjust: impl FnOnce(&mut HashMap<&'static str, String>),
) -> Function {
    let runtime = RuntimeApi::start().await;

    let mut env: HashMap<&'static str, String> = HashMap::from([
        // What Lambda sets.
        ("AWS_LAMBDA_RUNTIME_API", runtime.address.clone()),
        ("AWS_LAMBDA_FUNCTION_NAME", "batch-triage".to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512".to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/11/27/[$LATEST]0123456789abcdef".to_owned(),
        ),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            "/aws/lambda/batch-triage".to_owned(),
        ),
        // The most verbose logging there is: even so, the key must not be printed.
        ("AWS_LAMBDA_LOG_LEVEL", "TRACE".to_owned()),
        // The function's own settings.
        ("BATCH_TRIAGE_WEBHOOK_KEY", KEY.to_owned()),
    ]);
    env.extend(backends.settings());
    adjust(&mut env);
    let output = tempfile::NamedTempFile::new().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_batch-triage-lambda"))
        .env_clear()
        .envs(&env)
        .stdout(Stdio::from(output.reopen().unwrap()))
        .stderr(Stdio::from(output.reopen().unwrap()))
        .spawn()
        .unwrap();
    Function {
        child,
        runtime,
        backends,
        output,
    }
}

async fn start() -> Function {
    start_with(|_| {}).await
}

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/events")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A Function URL request (payload format 2.0) presenting `key` in the query string.
fn with_query_key(mut event: Value, key: Option<&str>) -> Value {
    let query = key.map(|k| format!("key={k}")).unwrap_or_default();
    event["rawQueryString"] = json!(query);
    event["queryStringParameters"] = match key {
        Some(k) => json!({ "key": k }),
        None => Value::Null,
    };
    event
}

/// An Event Grid delivery of a custom "task failed" event, as the webhook receives it.
fn event_grid_delivery(task: &str, event_id: &str, delivery_count: u32) -> Value {
    let mut event = with_query_key(fixture("function-url-event-grid.json"), Some(KEY));
    let body = json!([{
        "id": event_id,
        "topic": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.EventGrid/topics/batch-task-events",
        "subject": format!("jobs/etl/tasks/{task}"),
        "eventType": "Contoso.Batch.TaskFailed",
        "eventTime": "2026-11-27T17:05:01.1234567Z",
        "data": {"jobId": "etl", "taskId": task},
        "dataVersion": "1.0",
        "metadataVersion": "1"
    }]);
    event["body"] = json!(body.to_string());
    event["headers"]["aeg-delivery-count"] = json!(delivery_count.to_string());
    event
}

fn status(response: &Value) -> u64 {
    response["statusCode"].as_u64().unwrap()
}

fn body(response: &Value) -> Value {
    let text = response["body"].as_str().unwrap();
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_schedule_sweeps_and_writes_the_cursor() {
    let function = start().await;
    let response = function
        .runtime
        .invoke(&fixture("eventbridge-scheduled.json"))
        .await
        .response();
    let lines = response["tick"].to_string();
    assert!(lines.contains("swept"), "{response}");
    assert!(lines.contains("outbox"), "{response}");
    // The sweep found the built-in scenario's recent failures without any event.
    assert!(
        lines.contains("devbatch1/etl/oom: task.exit_code"),
        "{response}"
    );
    assert!(
        function
            .backends
            .store
            .path()
            .join("sweep/cursor.json")
            .exists(),
        "the cursor is written when a sweep completes"
    );
    assert!(function.preserved("oom"));
    assert!(function.alerted_tasks().contains(&"oom".to_owned()));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_schedule_sweeps_every_account_of_the_settings_each_with_its_cursor() {
    let function = start_on(Backends::start_two_accounts().await, |_| {}).await;
    let response = function
        .runtime
        .invoke(&fixture("eventbridge-scheduled.json"))
        .await
        .response();
    let lines = response["tick"].to_string();
    for account in ["devbatch1", "devbatch2"] {
        assert!(
            lines.contains(&format!("account {account}: ")),
            "{response}"
        );
        assert!(
            lines.contains(&format!("{account}/etl/oom: task.exit_code")),
            "{response}"
        );
        let cursor = format!("sweep/accounts/{account}/cursor.json");
        assert!(
            function.backends.store.path().join(&cursor).exists(),
            "{cursor}"
        );
    }
    // A direct invocation names its account; one not configured is refused, not retried.
    let diagnoses = function
        .runtime
        .invoke(&json!({"jobId": "etl", "taskId": "oom", "account": "DevBatch2"}))
        .await
        .response();
    assert_eq!(
        diagnoses[0]["subject"]["account"], "devbatch2",
        "{diagnoses}"
    );
    let (error_type, message) = function
        .runtime
        .invoke(&json!({"jobId": "etl", "account": "devbatch3"}))
        .await
        .error();
    assert_eq!(error_type, "NonRetryable", "{message}");
    assert!(message.contains("not a configured account"), "{message}");
    // Each account was read with its own key: the second emulator refused no signature (its
    // scenario's files that are gone answer 404 or 409, as Batch does).
    let second = &function.backends.second.as_ref().unwrap().emulator;
    let requests = second.requests();
    assert!(!requests.is_empty());
    assert!(
        requests.iter().all(|r| r.status != 401 && r.status != 403),
        "{requests:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_grid_delivery_preserves_the_logs_and_alerts_once_however_often_it_comes() {
    let function = start().await;
    let first = function
        .runtime
        .invoke(&event_grid_delivery("oom", "e-oom", 0))
        .await
        .response();
    assert_eq!(status(&first), 200, "{first}");
    assert!(
        body(&first)["subjects"][0]
            .as_str()
            .unwrap()
            .starts_with("devbatch1/etl/oom: task.exit_code"),
        "{first}"
    );
    assert!(function.preserved("oom"));
    assert_eq!(function.alerted_tasks(), ["oom"]);

    // Redeliveries and a second failure's events, interleaved and out of order, 100 in all.
    for n in 0..100u32 {
        let delivery = if n % 3 == 1 {
            event_grid_delivery("sigkill", "e-sigkill", n)
        } else {
            event_grid_delivery("oom", "e-oom", n)
        };
        let response = function.runtime.invoke(&delivery).await.response();
        assert_eq!(status(&response), 200, "delivery {n}: {response}");
    }
    assert!(function.preserved("sigkill"));
    assert_eq!(
        function.alerted_tasks(),
        ["oom", "sigkill"],
        "one alert per failure, whatever the deliveries"
    );
    let oom_manifests = std::fs::read_dir(function.backends.store.path().join("devbatch1/etl/oom"))
        .unwrap()
        .count();
    assert_eq!(oom_manifests, 1, "one preserved copy (attempt-0)");
}

#[tokio::test(flavor = "multi_thread")]
async fn cloud_events_through_api_gateway_with_the_key_in_a_header() {
    let function = start().await;
    let mut event = fixture("apigw-rest-cloudevents-batch.json");
    event["headers"]["x-batch-triage-key"] = json!(KEY);
    event["multiValueHeaders"]["x-batch-triage-key"] = json!([KEY]);
    let response = function.runtime.invoke(&event).await.response();
    assert_eq!(status(&response), 200, "{response}");
    // A REST API takes only the 1.0 response fields.
    assert!(response.get("cookies").is_none(), "{response}");
    assert!(function.preserved("py-error"));
    assert_eq!(function.alerted_tasks(), ["py-error"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_grid_handshakes_are_answered() {
    let function = start().await;
    let validation = with_query_key(
        fixture("function-url-subscription-validation.json"),
        Some(KEY),
    );
    let response = function.runtime.invoke(&validation).await.response();
    assert_eq!(status(&response), 200, "{response}");
    assert_eq!(
        body(&response),
        json!({"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"})
    );
    // A 2.0 response says it has no cookies (local emulators insist on the field).
    assert_eq!(response["cookies"], json!([]), "{response}");

    let preflight = with_query_key(fixture("function-url-cloudevents-options.json"), Some(KEY));
    let response = function.runtime.invoke(&preflight).await.response();
    assert_eq!(status(&response), 200, "{response}");
    assert_eq!(
        response["headers"]["webhook-allowed-origin"],
        "eventgrid.azure.net"
    );
    assert_eq!(response["headers"]["webhook-allowed-rate"], "*");
    assert!(function.alerts().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_or_missing_key_is_401_and_nothing_is_processed() {
    let mut function = start().await;
    function.backends.emulator.clear_requests();
    let wrong = "not-the-key-but-just-as-long!";
    for key in [Some(wrong), None] {
        for event in [
            event_grid_delivery("oom", "e-oom", 0),
            fixture("function-url-subscription-validation.json"),
            fixture("function-url-cloudevents-options.json"),
        ] {
            let event = with_query_key(event, key);
            let response = function.runtime.invoke(&event).await.response();
            assert_eq!(status(&response), 401, "{response}");
            assert!(!response.to_string().contains("512d38b6"), "{response}");
            assert!(response["headers"].get("webhook-allowed-origin").is_none());
        }
    }
    assert!(
        function.backends.emulator.requests().is_empty(),
        "nothing was fetched from Batch"
    );
    assert!(!function.backends.store.path().join("devbatch1").exists());
    assert!(function.alerts().is_empty());

    // The right key works on the same running function, and no key reached the logs, even at
    // TRACE level where lambda_runtime would print whole events.
    let response = function
        .runtime
        .invoke(&event_grid_delivery("oom", "e-oom", 1))
        .await
        .response();
    assert_eq!(status(&response), 200, "{response}");
    assert!(function.still_running());
    let output = function.output();
    assert!(output.contains("webhook request answered"), "{output}");
    assert!(!output.contains(KEY), "the key was logged:\n{output}");
    assert!(!output.contains(wrong), "a presented key was logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_direct_invocation_diagnoses_and_errors_say_whether_to_retry() {
    let mut function = start().await;
    let diagnoses = function
        .runtime
        .invoke(&fixture("direct-diagnose.json"))
        .await
        .response();
    assert_eq!(diagnoses[0]["class"], "task.exit_code", "{diagnoses}");
    assert_eq!(diagnoses[0]["subject"]["taskId"], "oom", "{diagnoses}");

    let (error_type, message) = function
        .runtime
        .invoke(&json!({"jobId": "no-such-job", "taskId": "x"}))
        .await
        .error();
    assert_eq!(error_type, "NonRetryable", "{message}");
    assert!(message.contains("not found"), "{message}");
    // Kept in the store before Lambda was told, so no dead-letter queue is needed.
    let kept = function.backends.store.path().join("poisoned/lambda");
    let files: Vec<_> = std::fs::read_dir(&kept).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "{kept:?}");
    let record: Value = serde_json::from_slice(&std::fs::read(files[0].path()).unwrap()).unwrap();
    assert_eq!(record["source"], "lambda");
    assert!(
        record["payload"].as_str().unwrap().contains("no-such-job"),
        "{record}"
    );
    assert!(
        record["reason"].as_str().unwrap().contains("not found"),
        "{record}"
    );

    // Garbage of every kind fails the one invocation, and the runtime carries on.
    for garbage in [
        json!({"hello": "world"}),
        json!("a string"),
        json!([1, 2, 3]),
        json!({"jobId": 42}),
    ] {
        let (error_type, message) = function.runtime.invoke(&garbage).await.error();
        assert_eq!(error_type, "NonRetryable", "{garbage}: {message}");
    }
    assert_eq!(
        std::fs::read_dir(&kept).unwrap().count(),
        5,
        "every NonRetryable payload is kept once"
    );
    // Not even JSON: lambda_runtime refuses it before the handler runs.
    let outcome = function
        .runtime
        .invoke_raw(b"\x00\x01 not json".to_vec(), Duration::from_secs(30))
        .await;
    let (error_type, _) = outcome.error();
    assert!(!error_type.is_empty());

    assert!(function.still_running());
    let again = function
        .runtime
        .invoke(&json!({"jobId": "etl"}))
        .await
        .response();
    assert!(again.is_array(), "{again}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throttled_batch_account_is_retryable_everywhere() {
    let function = start().await;
    function
        .backends
        .emulator
        .add_fault(FaultRule::new(Fault::Throttle {
            retry_after_seconds: 1,
        }));
    // Lambda's deadline, not the 240 s budget, bounds the retries.
    let short = Duration::from_secs(6);

    let (error_type, message) = function
        .runtime
        .invoke_with_timeout(&fixture("direct-diagnose.json"), short)
        .await
        .error();
    assert_eq!(error_type, "Retryable", "{message}");
    assert!(!message.contains(batch_emulator::WELL_KNOWN_ACCOUNT_KEY));

    // A busy server (503 ServerBusy) is transient too.
    function
        .backends
        .emulator
        .set_faults(vec![FaultRule::new(Fault::ServerBusy {
            retry_after_seconds: Some(1),
        })]);
    let (error_type, message) = function
        .runtime
        .invoke_with_timeout(&fixture("direct-diagnose.json"), short)
        .await
        .error();
    assert_eq!(error_type, "Retryable", "{message}");

    let (error_type, message) = function
        .runtime
        .invoke_with_timeout(&fixture("eventbridge-scheduled.json"), short)
        .await
        .error();
    assert_eq!(error_type, "Retryable", "{message}");

    let response = function
        .runtime
        .invoke_with_timeout(&event_grid_delivery("oom", "e-oom", 0), short)
        .await
        .response();
    assert_eq!(
        status(&response),
        503,
        "Event Grid must redeliver: {response}"
    );
    assert!(function.alerts().is_empty());

    // Once Batch recovers, the redelivery does the work.
    function.backends.emulator.clear_faults();
    let response = function
        .runtime
        .invoke(&event_grid_delivery("oom", "e-oom", 1))
        .await
        .response();
    assert_eq!(status(&response), 200, "{response}");
    assert_eq!(function.alerted_tasks(), ["oom"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_configuration_is_reported_as_an_init_error() {
    for (setting, value, named) in [
        ("BATCH_TRIAGE_STORE", None, "BATCH_TRIAGE_STORE"),
        (
            "BATCH_TRIAGE_WEBHOOK_KEY",
            Some("short-secret"),
            "BATCH_TRIAGE_WEBHOOK_KEY",
        ),
    ] {
        let mut function = start_with(|env| match value {
            Some(value) => {
                env.insert(setting, value.to_owned());
            }
            None => {
                env.remove(setting);
            }
        })
        .await;
        let status = tokio::task::spawn_blocking(move || {
            let status = function.child.wait().unwrap();
            (status, function)
        })
        .await
        .unwrap();
        let (exit, function) = status;
        assert!(!exit.success(), "the process must stop");
        let errors = function.runtime.state.init_errors.lock().unwrap().clone();
        assert_eq!(errors.len(), 1, "{errors:?}");
        let (header, body) = &errors[0];
        assert_eq!(header.as_deref(), Some("Runtime.InitError"));
        assert_eq!(body["errorType"], "NonRetryable", "{body}");
        let message = body["errorMessage"].as_str().unwrap();
        assert!(message.contains(named), "{message}");
        assert!(!message.contains("short-secret"), "{message}");
        assert!(!function.output().contains("short-secret"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_webhook_key_http_is_refused_and_the_rest_works() {
    let function = start_with(|env| {
        env.remove("BATCH_TRIAGE_WEBHOOK_KEY");
    })
    .await;
    // 503, so Event Grid keeps the delivery until the setting is fixed.
    let response = function
        .runtime
        .invoke(&event_grid_delivery("oom", "e-oom", 0))
        .await
        .response();
    assert_eq!(status(&response), 503, "{response}");
    assert!(
        body(&response)["error"]
            .as_str()
            .unwrap()
            .contains("BATCH_TRIAGE_WEBHOOK_KEY")
    );
    assert!(!function.backends.store.path().join("devbatch1").exists());
    // A present-but-empty query key does not open the door either.
    let response = function
        .runtime
        .invoke(&with_query_key(
            fixture("function-url-subscription-validation.json"),
            Some(""),
        ))
        .await
        .response();
    assert_eq!(status(&response), 503, "{response}");

    let diagnoses = function
        .runtime
        .invoke(&fixture("direct-diagnose.json"))
        .await
        .response();
    assert_eq!(diagnoses[0]["class"], "task.exit_code", "{diagnoses}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_delivery_is_400_so_event_grid_drops_it() {
    let function = start().await;
    for poison in [
        // Not JSON: the gate refuses it.
        "[{\"id\": \"1\", \"eventType\": ".to_owned(),
        // JSON, but no Batch payload the pipeline recognises.
        json!([{"id": "1", "eventType": "Contoso.Batch.TaskFailed", "subject": "s",
            "eventTime": "2026-11-27T17:05:01Z", "data": "not an object"}])
        .to_string(),
    ] {
        let mut event = event_grid_delivery("oom", "e-oom", 0);
        event["body"] = json!(poison);
        let response = function.runtime.invoke(&event).await.response();
        assert_eq!(status(&response), 400, "{poison}: {response}");
    }
    assert!(!function.backends.store.path().join("devbatch1").exists());
    assert!(function.alerts().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_report_is_served_on_the_function_url_behind_the_key() {
    let function = start().await;
    let delivered = function
        .runtime
        .invoke(&event_grid_delivery("oom", "e-oom", 0))
        .await
        .response();
    assert_eq!(status(&delivered), 200, "{delivered}");
    let get = |query: &str| {
        let mut event = fixture("function-url-event-grid.json");
        event["rawPath"] = json!("/report");
        event["requestContext"]["http"]["method"] = json!("GET");
        event["requestContext"]["http"]["path"] = json!("/report");
        event["rawQueryString"] = json!(query);
        event["body"] = Value::Null;
        event["isBase64Encoded"] = json!(false);
        event
    };
    let refused = function.runtime.invoke(&get("since=1h")).await.response();
    assert_eq!(status(&refused), 401, "{refused}");
    let page = function
        .runtime
        .invoke(&get(&format!("since=2h&key={KEY}")))
        .await
        .response();
    assert_eq!(status(&page), 200, "{page}");
    assert_eq!(page["headers"]["content-type"], "text/html; charset=utf-8");
    assert!(
        page["headers"]["content-security-policy"]
            .as_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );
    let html = page["body"].as_str().unwrap();
    assert!(html.contains("devbatch1/etl/oom"), "{html}");
    let json = function
        .runtime
        .invoke(&get(&format!("format=json&key={KEY}")))
        .await
        .response();
    assert_eq!(body(&json)["totalFailures"], 1, "{json}");
    let bad = function
        .runtime
        .invoke(&get(&format!("since=soon&key={KEY}")))
        .await
        .response();
    assert_eq!(status(&bad), 400, "{bad}");
}
