//! Shared test fixtures: a sample alert, a recording HTTP receiver, the Python helpers and a
//! log capture.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use notify::{Alert, AlertState, Allowlist, Egress, Group, Links, RetryPolicy};

/// A task that was OOM-killed, with a SAS token in its stderr.
pub(crate) fn sample_alert() -> Alert {
    let json = br#"{"id": "t-17", "url": "https://acct.westeurope.batch.azure.com/jobs/genomics/tasks/t-17",
      "state": "completed", "commandLine": "python train.py --big",
      "executionInfo": {"exitCode": 137, "result": "failure", "retryCount": 2, "requeueCount": 0,
        "failureInfo": {"category": "UserError", "code": "FailureExitCode", "message": "The task exited with an exit code representing a failure"}},
      "nodeInfo": {"poolId": "gpu-pool", "nodeId": "tvmps_abc"}}"#;
    let mut diagnoses = Vec::new();
    diagnosis::payload::read_slice(json, &mut |item| {
        diagnoses.extend(diagnosis::diagnose_item(
            &item,
            &diagnosis::Evidence::default(),
        ));
    })
    .expect("sample task parses");
    let diagnosis = diagnoses.remove(0);
    Alert {
        group: Group {
            key: format!("acct/genomics/{}", diagnosis.fingerprint),
            count: 4812,
            examples: vec!["t-17".into(), "t-18".into(), "t-912".into()],
            ..Group::default()
        },
        stderr_tail: Some(
            "Traceback (most recent call last):\n  File \"train.py\", line 9\nMemoryError <&> \"q\"\n\
             downloading https://acct.blob.core.windows.net/in/x.bin?sv=2024&sig=SASSECRETSIG123\nKilled\n"
                .into(),
        ),
        links: Links::new(
            [
                "https://logs.blob.core.windows.net/batch-triage/genomics/t-17/stderr.txt?sv=2024&sig=LINKSECRET",
                "genomics/t-17/stdout.txt",
            ],
            Some(notify::alert::portal_job_url("sub-1", "rg 1", "acct", "genomics")),
        ),
        rule: Some("oom-critical".into()),
        state: AlertState::Firing,
        sequence: 0,
        diagnosis,
    }
}

/// An egress for 127.0.0.1 receivers with quick retries.
pub(crate) fn local_egress() -> Egress {
    Egress::new(Allowlist::new([]).allow_loopback(), quick_policy()).unwrap()
}

/// 4 attempts, 10 ms doubling: retries without slow tests.
pub(crate) fn quick_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    }
}

/// A deadline far enough away for any test.
pub(crate) fn deadline() -> notify::Deadline {
    notify::Deadline::after(Duration::from_secs(30))
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) method: String,
    pub(crate) path_and_query: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Recorded {
    /// A header as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Writes the request as JSON for `check.py`.
    pub(crate) fn to_file(&self, dir: &tempfile::TempDir, name: &str) -> PathBuf {
        use base64::Engine as _;
        let headers: serde_json::Map<String, serde_json::Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().into()))
            .collect();
        let json = serde_json::json!({
            "method": self.method,
            "path_and_query": self.path_and_query,
            "headers": headers,
            "body_b64": base64::engine::general_purpose::STANDARD.encode(&self.body),
        });
        let path = dir.path().join(name);
        std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
        path
    }
}

/// A canned answer: status and headers.
pub(crate) type Answer = (u16, Vec<(&'static str, String)>);

/// An HTTP receiver on 127.0.0.1 that records every request and answers from a script (then 202).
pub(crate) struct Receiver {
    pub(crate) url: String,
    pub(crate) requests: Arc<Mutex<Vec<Recorded>>>,
}

impl Receiver {
    pub(crate) async fn start(answers: Vec<Answer>) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
        let recorded = Arc::clone(&requests);
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let recorded = Arc::clone(&recorded);
                let answers = Arc::clone(&answers);
                async move {
                    recorded.lock().unwrap().push(Recorded {
                        method: method.to_string(),
                        path_and_query: uri
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default(),
                        headers,
                        body: body.to_vec(),
                    });
                    let (status, headers) =
                        answers.lock().unwrap().pop_front().unwrap_or((202, vec![]));
                    let mut response: Response =
                        StatusCode::from_u16(status).unwrap().into_response();
                    for (name, value) in headers {
                        response.headers_mut().insert(name, value.parse().unwrap());
                    }
                    response
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url: format!(
                "http://{addr}/workflows/abc/triggers/manual/paths/invoke?api-version=1&sig=TOPSECRETSIG"
            ),
            requests,
        }
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

/// The test Python: `BATCH_TRIAGE_PYTHON` or the workspace `.venv`. Missing = failure.
pub(crate) fn python() -> PathBuf {
    let path = std::env::var_os("BATCH_TRIAGE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")
        });
    assert!(
        path.exists(),
        "the test Python {} is missing: run scripts/setup-test-deps (or set BATCH_TRIAGE_PYTHON)",
        path.display()
    );
    path
}

/// Path of a file in `tests/support`.
pub(crate) fn support_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(name)
}

/// Runs `check.py` and asserts it says OK.
pub(crate) fn python_check(args: &[&std::ffi::OsStr]) {
    let output = std::process::Command::new(python())
        .arg(support_file("check.py"))
        .args(args)
        .output()
        .expect("run check.py");
    assert!(
        output.status.success(),
        "check.py {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Everything every test logged (one global subscriber, installed once).
pub(crate) fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&buffer);
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("trace")
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&writer)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        buffer
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Secret strings planted in fixtures; none may leave through logs, errors or Debug.
pub(crate) const SECRETS: &[&str] = &[
    "TOPSECRETSIG",
    "SASSECRETSIG123",
    "LINKSECRET",
    "hook-key-s3cr3t",
    "smtp-pa55word",
];
