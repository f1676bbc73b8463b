//! A counting proxy in front of Azurite, for the burst benchmark's Blob mode (`BENCH_STORE=blob`).
//! The handler's store is pointed at the proxy, which forwards every request to Azurite
//! unchanged and counts it by operation, condition, answer and key shape: the figures are what
//! reached Azurite, not what the store meant to send. (Included with `#[path]` by
//! `bench_burst.rs` only, so the other example sharing `support/` does not carry it.)
//!
//! The proxy runs on a thread and runtime of its own; its CPU time is the driver's.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;

/// One kind of request: the Blob operation with its condition, Azurite's status, and the shape
/// of the key it was about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Kind {
    pub(crate) operation: String,
    pub(crate) status: u16,
    pub(crate) key_shape: String,
}

type Counts = Arc<Mutex<BTreeMap<Kind, usize>>>;

/// The running proxy: where to point the store, and what went through so far.
pub(crate) struct BlobCounter {
    /// `http://127.0.0.1:PORT/devstoreaccount1`: Azurite's endpoint, through the proxy.
    pub(crate) endpoint: String,
    counts: Counts,
    /// Dropped with the counter: the proxy's thread then ends (and drops its runtime there,
    /// outside any async context).
    _stop: tokio::sync::oneshot::Sender<()>,
}

struct Upstream {
    /// `http://127.0.0.1:PORT` of Azurite.
    origin: String,
    client: reqwest::Client,
    counts: Counts,
}

impl BlobCounter {
    /// A proxy to the Azurite at `azurite_endpoint` (`http://127.0.0.1:PORT/devstoreaccount1`).
    pub(crate) fn start(azurite_endpoint: &str) -> BlobCounter {
        let url = url_parts(azurite_endpoint);
        let counts: Counts = Arc::default();
        let upstream = Arc::new(Upstream {
            origin: url.0,
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .expect("the proxy's client"),
            counts: counts.clone(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let address = listener.local_addr().expect("the proxy's address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the proxy's runtime");
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("the proxy's listener");
                let app = axum::Router::new().fallback(forward).with_state(upstream);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        BlobCounter {
            endpoint: format!("http://{address}{}", url.1),
            counts,
            _stop: stop,
        }
    }

    /// The requests counted since the last call, and a fresh count.
    pub(crate) fn take(&self) -> BTreeMap<Kind, usize> {
        std::mem::take(
            &mut *self
                .counts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// `(origin, path)` of an endpoint URL (`http://127.0.0.1:PORT/devstoreaccount1`).
fn url_parts(endpoint: &str) -> (String, String) {
    let rest = endpoint
        .strip_prefix("http://")
        .expect("Azurite's endpoint is plain http");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    (
        format!("http://{host}"),
        format!("/{}", path.trim_end_matches('/')),
    )
}

async fn forward(State(upstream): State<Arc<Upstream>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let operation = operation(&parts.method, parts.uri.query(), &parts.headers);
    let key_shape = key_shape(parts.uri.path(), parts.uri.query());
    let body = axum::body::to_bytes(body, 256 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let mut outgoing = upstream
        .client
        .request(
            parts.method.clone(),
            format!("{}{path_and_query}", upstream.origin),
        )
        .body(body);
    for (name, value) in &parts.headers {
        if !matches!(
            name.as_str(),
            "host" | "connection" | "content-length" | "transfer-encoding"
        ) {
            outgoing = outgoing.header(name, value);
        }
    }
    let (status, headers, bytes) = match outgoing.send().await {
        Ok(response) => {
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = response.bytes().await.unwrap_or_default();
            (status, headers, bytes)
        }
        Err(_) => (
            StatusCode::BAD_GATEWAY,
            HeaderMap::new(),
            Default::default(),
        ),
    };
    *upstream
        .counts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(Kind {
            operation,
            status: status.as_u16(),
            key_shape,
        })
        .or_default() += 1;
    let mut response = Response::builder().status(status);
    for (name, value) in &headers {
        if !matches!(
            name.as_str(),
            "connection" | "content-length" | "transfer-encoding"
        ) {
            response = response.header(name, value);
        }
    }
    response
        .body(Body::from(bytes))
        .expect("a response from Azurite's parts")
}

fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// The Blob operation a request is, with the condition it carries.
fn operation(method: &Method, query: Option<&str>, headers: &HeaderMap) -> String {
    let condition = if headers
        .get("if-none-match")
        .is_some_and(|v| v.as_bytes() == b"*")
    {
        ", create-only (If-None-Match: *)"
    } else if headers.contains_key("if-match") {
        ", compare-and-swap (If-Match)"
    } else {
        ""
    };
    let comp = query_value(query, "comp");
    let container = query_value(query, "restype") == Some("container");
    let name = match (method.as_str(), comp, container) {
        ("PUT", None, false) => "Put Blob",
        ("PUT", Some("block"), _) => "Put Block",
        ("PUT", Some("blocklist"), _) => "Put Block List",
        ("GET", Some("list"), _) => "List Blobs",
        ("GET", None, false) => "Get Blob",
        ("HEAD", None, false) => "Get Blob Properties (HEAD)",
        ("DELETE", None, false) => "Delete Blob",
        ("PUT", None, true) => "Create Container",
        (method, comp, _) => {
            return format!("{method} comp={}{condition}", comp.unwrap_or("-"));
        }
    };
    format!("{name}{condition}")
}

/// The shape of the key a request is about (`/devstoreaccount1/CONTAINER/KEY`), or of a
/// listing's prefix: a task folder's file keeps its name (`{task folder}/manifest.json`), a
/// state key its first segment (`groups/…`).
fn key_shape(path: &str, query: Option<&str>) -> String {
    // Only the separators matter for the shape; other escapes stay as they came.
    let decoded = |s: &str| s.replace("%2F", "/").replace("%2f", "/");
    let key = match query_value(query, "prefix") {
        Some(prefix) => format!("{}*", decoded(prefix)),
        None => path.splitn(4, '/').nth(3).map(decoded).unwrap_or_default(),
    };
    let segments: Vec<&str> = key.split('/').collect();
    if let Some(at) = segments.iter().position(|s| s.starts_with("attempt-")) {
        return format!("{{task folder}}/{}", segments[at + 1..].join("/"));
    }
    match segments.as_slice() {
        [] | [""] => "(container)".to_owned(),
        [only] => (*only).to_owned(),
        [first, ..] => format!("{first}/…"),
    }
}
