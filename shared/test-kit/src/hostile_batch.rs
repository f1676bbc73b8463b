//! A Batch endpoint gone wrong, for attack-minded tests: it answers with whatever ids the test
//! gives it (`.`, `..`, an empty id, ids longer than any store allows), which the emulator refuses
//! to hold. It serves the shapes the Batch client reads (the emulator's: an `odata.metadata`, a
//! `value` list, Batch's error body, `application/json;odata=minimalmetadata`), with `url`s on its
//! own origin, so the client's same-origin checks pass. It accepts any signature: the client signs
//! every request with Shared Key, and checking it is the emulator's job, not this double's.
//!
//! Answered: list jobs, get job, list a job's tasks (the `$filter` is ignored: every task given is
//! listed), get task, list a task's files (none), the job's prep/release status (none), and a
//! 404 in Batch's error shape for everything else (task counts, a file). Every request path is
//! recorded, so a test can assert that nothing was fetched for a refused subject.

use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

const ODATA_JSON: &str = "application/json;odata=minimalmetadata";

/// One job and the tasks the double lists for it.
#[derive(Clone, Debug)]
pub struct HostileJob {
    /// The job's id, as hostile as the test likes.
    pub id: String,
    /// Its tasks' ids; each is listed as a failed task (exit code 1, ended now).
    pub tasks: Vec<String>,
}

#[derive(Default)]
struct Shared {
    base: String,
    jobs: Vec<HostileJob>,
    paths: Vec<String>,
}

/// The double, served on a loopback port for the rest of the test.
#[derive(Clone)]
pub struct HostileBatch {
    /// Its base URL, for `BatchConfig::shared_key`.
    pub url: String,
    shared: Arc<Mutex<Shared>>,
}

impl HostileBatch {
    /// Serves `jobs` (all active) on a free loopback port.
    pub async fn start(jobs: Vec<HostileJob>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the hostile Batch double");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let shared = Arc::new(Mutex::new(Shared {
            base: url.clone(),
            jobs,
            paths: Vec::new(),
        }));
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        HostileBatch { url, shared }
    }

    /// The paths (with their query) requested so far, in order, percent-encoded as sent.
    pub fn paths(&self) -> Vec<String> {
        self.shared.lock().expect("double lock").paths.clone()
    }
}

async fn answer(State(shared): State<Arc<Mutex<Shared>>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let mut shared = shared.lock().expect("double lock");
    shared.paths.push(
        request
            .uri()
            .path_and_query()
            .map_or(path.clone(), |p| p.to_string()),
    );
    // Segments as the client sent them, decoded, so ids compare as given.
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let base = shared.base.clone();
    let find = |id: &str| shared.jobs.iter().find(|j| j.id == id);
    let body = match segments.as_slice() {
        ["jobs"] => list(
            &base,
            "jobs",
            shared.jobs.iter().map(|j| job(&base, &j.id)).collect(),
        ),
        ["jobs", id] => match find(id) {
            Some(j) => job(&base, &j.id),
            None => return not_found(&base, "JobNotFound"),
        },
        ["jobs", id, "tasks"] => match find(id) {
            Some(j) => list(
                &base,
                "tasks",
                j.tasks.iter().map(|t| task(&base, &j.id, t)).collect(),
            ),
            None => return not_found(&base, "JobNotFound"),
        },
        ["jobs", id, "tasks", task_id] => match find(id) {
            Some(j) if j.tasks.iter().any(|t| t == task_id) => task(&base, &j.id, task_id),
            _ => return not_found(&base, "TaskNotFound"),
        },
        ["jobs", _, "tasks", _, "files"] => list(&base, "files", Vec::new()),
        ["jobs", _, "jobpreparationandreleasetaskstatus"] => {
            list(&base, "jobpreparationandreleasetaskstatuslist", Vec::new())
        }
        _ => return not_found(&base, "ResourceNotFound"),
    };
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ODATA_JSON));
    response
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn list(base: &str, metadata: &str, value: Vec<Value>) -> Value {
    json!({"odata.metadata": format!("{base}/$metadata#{metadata}"), "value": value})
}

fn now() -> String {
    "2026-11-27T10:05:01.1234567Z".to_owned()
}

fn job(base: &str, id: &str) -> Value {
    json!({
        "id": id,
        "url": format!("{base}/jobs/{id}"),
        "eTag": "0x8D0000000000001",
        "state": "active",
        "stateTransitionTime": now(),
        "creationTime": now(),
        "poolInfo": {"poolId": "pool"},
        "executionInfo": {"startTime": now(), "poolId": "pool"},
    })
}

fn task(base: &str, job_id: &str, id: &str) -> Value {
    json!({
        "id": id,
        "url": format!("{base}/jobs/{job_id}/tasks/{id}"),
        "eTag": "0x8D0000000000002",
        "state": "completed",
        "stateTransitionTime": now(),
        "creationTime": now(),
        "commandLine": "/bin/sh -c 'exit 1'",
        "executionInfo": {
            "startTime": now(),
            "endTime": now(),
            "exitCode": 1,
            "retryCount": 0,
            "requeueCount": 0,
            "result": "failure",
        },
        "nodeInfo": {"poolId": "pool", "nodeId": "tvm-1", "nodeUrl": format!("{base}/pools/pool/nodes/tvm-1")},
    })
}

fn not_found(base: &str, code: &str) -> Response {
    let body = json!({
        "odata.metadata": format!("{base}/$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element"),
        "code": code,
        "message": {"lang": "en-US", "value": "The specified resource does not exist (hostile Batch double)."},
    });
    let mut response = (StatusCode::NOT_FOUND, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ODATA_JSON));
    response
}
