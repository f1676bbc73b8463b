//! A loopback Batch file endpoint that lists whatever file names a test gives it, and serves
//! their content: `wd/x` beside `wd/x\y`, `wd/..`, names that differ only by a separator. The
//! emulator refuses such names (a real Linux node does not: `\` is an ordinary character there),
//! so the preservation tests that attack with them talk to this double instead.
//!
//! It answers, for any job and task (the account and its key are not checked):
//! - `GET /jobs/{job}/tasks/{task}/files` (List Task Files, one page, `recursive` ignored);
//! - `GET` and `HEAD /jobs/{job}/tasks/{task}/files/{path}` (the file, or a Batch
//!   `FileNotFound` error body).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

/// The files' time, as Batch lists it and as `Last-Modified` says it.
const LAST_MODIFIED_RFC3339: &str = "2025-01-02T03:04:05Z";
const LAST_MODIFIED_HTTP: &str = "Thu, 02 Jan 2025 03:04:05 GMT";

/// A running double: its base URL (an account URL for `BatchConfig`) and the file paths it was
/// asked for.
pub struct HostileFiles {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl HostileFiles {
    /// The decoded file paths of every GET and HEAD of a file so far, in order (`GET wd/x\y`).
    pub fn file_requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[derive(Clone)]
struct Files {
    content: Arc<BTreeMap<String, Vec<u8>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

/// Serves `files` (task-relative name, content) on a free loopback port for the rest of the test.
pub async fn serve_hostile_files(files: &[(&str, &[u8])]) -> HostileFiles {
    let content: BTreeMap<String, Vec<u8>> = files
        .iter()
        .map(|(name, bytes)| ((*name).to_owned(), bytes.to_vec()))
        .collect();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let state = Files {
        content: Arc::new(content),
        requests: requests.clone(),
    };
    let app = axum::Router::new()
        .route("/jobs/{job}/tasks/{task}/files", get(list))
        .route(
            "/jobs/{job}/tasks/{task}/files/{*path}",
            get(file).head(file),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port for the hostile file double");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    HostileFiles { url, requests }
}

async fn list(State(files): State<Files>, Path((job, task)): Path<(String, String)>) -> Response {
    let value: Vec<_> = files
        .content
        .iter()
        .map(|(name, bytes)| {
            json!({
                "name": name,
                "url": format!("https://account.region.batch.azure.com/jobs/{job}/tasks/{task}/files/{name}"),
                "isDirectory": false,
                "properties": {
                    "contentLength": bytes.len(),
                    "lastModified": LAST_MODIFIED_RFC3339,
                    "creationTime": LAST_MODIFIED_RFC3339,
                    "contentType": "application/octet-stream",
                },
            })
        })
        .collect();
    axum::Json(json!({ "value": value })).into_response()
}

async fn file(
    State(files): State<Files>,
    method: Method,
    Path((_job, _task, path)): Path<(String, String, String)>,
) -> Response {
    files
        .requests
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(format!("{method} {path}"));
    let Some(bytes) = files.content.get(&path) else {
        let body = json!({
            "odata.metadata": "https://account.region.batch.azure.com/$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element",
            "code": "FileNotFound",
            "message": {"lang": "en-US", "value": "The specified file does not exist."},
        });
        return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        header::LAST_MODIFIED,
        HeaderValue::from_static(LAST_MODIFIED_HTTP),
    );
    headers.insert(
        "ocp-batch-file-isdirectory",
        HeaderValue::from_static("False"),
    );
    // axum leaves the body out of a HEAD answer and keeps its length.
    (StatusCode::OK, headers, bytes.clone()).into_response()
}
