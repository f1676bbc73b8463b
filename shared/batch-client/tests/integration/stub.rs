//! A tiny local HTTP server (axum on 127.0.0.1:0) that records every request and answers with
//! scripted replies, for behaviour the emulator cannot be asked for (redirects, exact headers).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use batch_client::{BatchAuth, BatchClient, BatchConfig, RetryPolicy, Secret};
use bytes::Bytes;
use futures::StreamExt;
use std::time::Duration;

/// The emulator's well-known key (public test material, not a secret).
pub(crate) const KEY: &str =
    "mjKm6b5f7cz+1Z87ZQTzqewMgLsXqKvuJqfrLzWEpg27VruihOB6mXgex29Mi/scsRrX5vb19ODbFU0ZvQTWRg==";
pub(crate) const ACCOUNT: &str = "devbatch1";

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: String,
    /// Path and query exactly as sent.
    pub(crate) target: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Bytes,
}

impl Seen {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A scripted reply.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Bytes,
    /// Send only this many bytes of `body`, then break the connection (Content-Length still
    /// announces the whole body).
    pub(crate) cut_after: Option<usize>,
}

impl Reply {
    pub(crate) fn json(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![
                ("content-type", "application/json".to_owned()),
                ("request-id", format!("req-{status}")),
            ],
            body: Bytes::from(body.to_owned()),
            cut_after: None,
        }
    }

    pub(crate) fn status(status: u16) -> Self {
        Self::json(status, "")
    }

    pub(crate) fn with(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    pub(crate) fn error(status: u16, code: &str, message: &str) -> Self {
        let body = serde_json::json!({
            "odata.metadata": "https://x/$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element",
            "code": code,
            "message": {"lang": "en-US", "value": format!("{message}\nRequestId:body-id\nTime:2026-01-01T00:00:00.0000000Z")},
        });
        Self::json(status, &body.to_string())
    }

    pub(crate) fn file(body: &[u8], last_modified: &str) -> Self {
        Self {
            status: 200,
            headers: vec![
                ("content-type", "application/octet-stream".to_owned()),
                ("last-modified", last_modified.to_owned()),
                ("ocp-batch-file-isdirectory", "False".to_owned()),
            ],
            body: Bytes::copy_from_slice(body),
            cut_after: None,
        }
    }
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    script: Mutex<VecDeque<Reply>>,
}

/// A running stub server.
pub(crate) struct Stub {
    pub(crate) base: String,
    shared: Arc<Shared>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl Stub {
    pub(crate) async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Self {
            base,
            shared,
            _shutdown: tx,
        }
    }

    /// Queues replies, answered in order; when the queue is empty the answer is 200 `{"value":[]}`.
    pub(crate) fn push(&self, reply: Reply) -> &Self {
        self.shared.script.lock().unwrap().push_back(reply);
        self
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// A Shared Key client for this stub with fast retries.
    pub(crate) fn client(&self) -> BatchClient {
        BatchClient::new(self.config()).unwrap()
    }

    pub(crate) fn config(&self) -> BatchConfig {
        let mut config = BatchConfig::new(
            &self.base,
            BatchAuth::SharedKey {
                account: ACCOUNT.to_owned(),
                key: Secret::new(KEY),
            },
        )
        .unwrap();
        config.retry = RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        };
        config
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    shared.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        target: parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_default(),
        headers: header_pairs(&parts.headers),
        body,
    });
    let reply = shared
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| Reply::json(200, r#"{"value":[]}"#));
    let mut builder = Response::builder().status(StatusCode::from_u16(reply.status).unwrap());
    for (name, value) in &reply.headers {
        builder = builder.header(*name, value);
    }
    let body = match reply.cut_after {
        None => Body::from(reply.body),
        Some(cut) => {
            builder = builder.header("content-length", reply.body.len());
            let first = reply.body.slice(..cut);
            // The error comes a moment after the bytes, so that hyper flushes the headers and
            // the first bytes before it drops the connection (a drop mid-body, not before it).
            let stream = futures::stream::iter([Ok::<Bytes, std::io::Error>(first)]).chain(
                futures::stream::once(async {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    Err(std::io::Error::other("connection cut by the stub"))
                }),
            );
            Body::from_stream(stream)
        }
    };
    builder.body(body).unwrap()
}

fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect()
}
