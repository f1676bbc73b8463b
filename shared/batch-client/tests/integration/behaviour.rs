//! Client behaviour against the recording stub: retries, error mapping, SSRF refusals, redirects,
//! resumed downloads, idempotent actions, Entra tokens and redaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use batch_client::{
    ActionOutcome, BatchApi, BatchAuth, BatchClient, BatchConfig, BatchError, Deadline,
    DownloadOptions, EntraAuth, FileRef, GetOptions, ListOptions, RetryPolicy,
};
use futures::TryStreamExt;

use crate::stub::{KEY, Reply, Stub};

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(60))
}

const LAST_MODIFIED: &str = "Tue, 03 Dec 2024 10:00:00 GMT";

#[tokio::test]
async fn throttling_is_retried_with_the_same_client_request_id() {
    let stub = Stub::start().await;
    stub.push(Reply::error(429, "TooManyRequests", "slow down").with("retry-after", "0"));
    stub.push(Reply::error(503, "ServerBusy", "busy"));
    stub.push(Reply::error(500, "OperationTimedOut", "timed out"));
    stub.push(Reply::json(200, r#"{"id":"t1","state":"completed"}"#));
    let task = stub
        .client()
        .get_task("j", "t1", &GetOptions::default(), deadline())
        .await
        .unwrap();
    assert_eq!(task.id.as_deref(), Some("t1"));
    let seen = stub.seen();
    assert_eq!(seen.len(), 4);
    let ids: Vec<_> = seen
        .iter()
        .map(|s| s.header("client-request-id").unwrap())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]));
    assert!(uuid::Uuid::parse_str(ids[0]).is_ok() && !ids[0].contains('{'));
    // Each attempt is signed afresh (its own ocp-date and signature).
    assert!(seen.iter().all(|s| s.header("authorization").is_some()));
}

#[tokio::test]
async fn retries_stop_at_max_attempts_and_report_them() {
    let stub = Stub::start().await;
    for _ in 0..10 {
        stub.push(Reply::error(500, "InternalError", "boom"));
    }
    let error = stub
        .client()
        .get_job("j", &GetOptions::default(), deadline())
        .await
        .unwrap_err();
    assert!(matches!(error, BatchError::Transient(_)), "{error:?}");
    assert!(error.is_retryable());
    assert_eq!(error.info().attempts, 4);
    assert_eq!(error.code(), Some("InternalError"));
    assert_eq!(error.request_id(), Some("req-500"));
    assert_eq!(stub.seen().len(), 4);
}

#[tokio::test]
async fn a_retry_after_beyond_the_deadline_is_not_waited_for() {
    let stub = Stub::start().await;
    stub.push(Reply::error(429, "TooManyRequests", "slow down").with("retry-after", "120"));
    let error = stub
        .client()
        .get_task_counts("j", Deadline::after(Duration::from_secs(30)))
        .await
        .unwrap_err();
    assert_eq!(error.retry_after(), Some(Duration::from_secs(120)));
    assert!(matches!(error, BatchError::Throttled { .. }));
    assert_eq!(stub.seen().len(), 1);
}

#[tokio::test]
async fn state_and_auth_errors_are_not_retried_and_are_typed() {
    let stub = Stub::start().await;
    let client = stub.client();
    stub.push(Reply::error(
        404,
        "TaskNotFound",
        "The specified task does not exist.",
    ));
    let error = client
        .get_task("j", "nope", &GetOptions::default(), deadline())
        .await
        .unwrap_err();
    assert!(error.is_not_found());
    assert_eq!(error.code(), Some("TaskNotFound"));
    assert_eq!(error.info().message, "The specified task does not exist.");
    assert_eq!(error.status(), Some(404));
    assert!(error.client_request_id().is_some());

    stub.push(Reply::error(
        403,
        "AuthenticationFailed",
        "Server failed to authenticate the request.",
    ));
    let error = client
        .get_job("j", &GetOptions::default(), deadline())
        .await
        .unwrap_err();
    assert!(matches!(error, BatchError::Auth(_)));
    assert!(!error.is_retryable());

    stub.push(Reply::error(
        412,
        "ConditionNotMet",
        "The condition specified was not met.",
    ));
    let error = client
        .enable_job("j", Some("\"etag\""), deadline())
        .await
        .unwrap_err();
    assert!(matches!(error, BatchError::PreconditionFailed(_)));
    assert_eq!(stub.seen().len(), 3);
    assert_eq!(stub.seen()[2].header("if-match"), Some("\"etag\""));
}

#[tokio::test]
async fn actions_on_finished_jobs_and_tasks_are_already_in_state() {
    let stub = Stub::start().await;
    let client = stub.client();
    stub.push(Reply::error(
        409,
        "JobCompleted",
        "The specified job is already in a completed state.",
    ));
    let outcome = client
        .terminate_job("j", &Default::default(), deadline())
        .await
        .unwrap();
    assert_eq!(
        outcome,
        ActionOutcome::AlreadyInState {
            code: "JobCompleted".into()
        }
    );
    stub.push(Reply::error(
        409,
        "TaskCompleted",
        "The specified task is already in a completed state.",
    ));
    let outcome = client
        .terminate_task("j", "t", None, deadline())
        .await
        .unwrap();
    assert_eq!(
        outcome,
        ActionOutcome::AlreadyInState {
            code: "TaskCompleted".into()
        }
    );
    stub.push(Reply::error(
        409,
        "JobDisabled",
        "The specified job is disabled.",
    ));
    let outcome = client
        .disable_job("j", diagnosis::wire::DisableTasks::Wait, None, deadline())
        .await
        .unwrap();
    assert_eq!(
        outcome,
        ActionOutcome::AlreadyInState {
            code: "JobDisabled".into()
        }
    );
    // Another conflict stays an error.
    stub.push(Reply::error(
        409,
        "JobBeingDeleted",
        "The specified job is being deleted.",
    ));
    let error = client
        .terminate_task("j", "t", None, deadline())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("JobBeingDeleted"));
    stub.push(Reply::status(202));
    assert_eq!(
        client.enable_job("j", None, deadline()).await.unwrap(),
        ActionOutcome::Accepted
    );
}

#[tokio::test]
async fn prep_status_without_a_prep_task_is_empty() {
    let stub = Stub::start().await;
    stub.push(Reply::error(
        409,
        "JobPreparationTaskNotSpecified",
        "The specified job does not have a job preparation task.",
    ));
    let pages: Vec<_> = stub
        .client()
        .list_prep_release_status("j", &ListOptions::default(), deadline())
        .try_collect()
        .await
        .unwrap();
    assert!(pages.is_empty());
    assert_eq!(stub.seen().len(), 1);
}

#[tokio::test]
async fn next_links_to_another_origin_are_refused_before_any_request() {
    let stub = Stub::start().await;
    let client = stub.client();
    let port: u16 = stub.base.rsplit(':').next().unwrap().parse().unwrap();
    let hostile = [
        "https://evil.example/jobs?api-version=1".to_owned(),
        format!("http://127.0.0.1:{}/jobs", port.wrapping_add(1)),
        format!("https://127.0.0.1:{port}/jobs"),
        format!("http://localhost:{port}/jobs"),
        format!("http://user@127.0.0.1:{port}/jobs"),
        "/jobs?relative=1".to_owned(),
        "http://127.0.0.1.evil.example/".to_owned(),
    ];
    for link in &hostile {
        stub.push(Reply::json(
            200,
            &serde_json::json!({"value": [{"id": "a"}], "odata.nextLink": link}).to_string(),
        ));
        let mut pages = client.list_jobs(&ListOptions::default(), deadline());
        assert!(pages.try_next().await.unwrap().is_some());
        let error = pages.try_next().await.unwrap_err();
        assert!(matches!(error, BatchError::Refused(_)), "{link}: {error:?}");
        assert!(!error.to_string().contains("api-version=1"), "{error}");
    }
    // One request per list: the hostile links were never fetched.
    assert_eq!(stub.seen().len(), hostile.len());
    for link in &hostile {
        let error = client
            .file_properties(&FileRef::Url(link.clone()), deadline())
            .await
            .unwrap_err();
        assert!(matches!(error, BatchError::Refused(_)));
        assert!(client.check_url(link).is_err());
    }
    assert_eq!(stub.seen().len(), hostile.len());
    // Same origin is accepted, and api-version is added.
    let url = client
        .check_url(&format!("{}/jobs/j/tasks/t/files/stdout.txt", stub.base))
        .unwrap();
    assert_eq!(url.query(), Some("api-version=2025-06-01"));
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let stub = Stub::start().await;
    stub.push(Reply::status(302).with("location", "https://evil.example/steal"));
    let error = stub
        .client()
        .get_job("j", &GetOptions::default(), deadline())
        .await
        .unwrap_err();
    assert!(matches!(error, BatchError::Other(_)), "{error:?}");
    assert_eq!(error.status(), Some(302));
    assert_eq!(stub.seen().len(), 1);
}

#[tokio::test]
async fn bad_ids_are_refused_locally() {
    let stub = Stub::start().await;
    let client = stub.client();
    for (job, task) in [("", "t"), ("..", "t"), ("j", "."), ("j", "")] {
        let error = client
            .get_task(job, task, &GetOptions::default(), deadline())
            .await
            .unwrap_err();
        assert!(matches!(error, BatchError::BadRequest(_)), "{job}/{task}");
    }
    let error = client
        .list_tasks("..", &ListOptions::default(), deadline())
        .try_next()
        .await
        .unwrap_err();
    assert!(matches!(error, BatchError::BadRequest(_)));
    assert!(stub.seen().is_empty());
}

#[tokio::test]
async fn a_dropped_download_resumes_from_the_byte_reached() {
    let stub = Stub::start().await;
    let content: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut first = Reply::file(&content, LAST_MODIFIED);
    first.cut_after = Some(40_000);
    stub.push(first);
    stub.push(
        Reply::file(&content[40_000..], LAST_MODIFIED)
            .with("content-range", "bytes 40000-99999/100000"),
    );
    let download = stub
        .client()
        .download_file(
            &FileRef::task("j", "t", "stdout.txt"),
            &DownloadOptions::default(),
            deadline(),
        )
        .await
        .unwrap();
    assert_eq!(download.info.size, 100_000);
    let chunks: Vec<_> = download.try_collect().await.unwrap();
    assert_eq!(chunks.concat(), content);
    let seen = stub.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header("ocp-range"), None);
    assert_eq!(seen[1].header("ocp-range"), Some("bytes=40000-"));
    assert_eq!(seen[1].header("if-unmodified-since"), Some(LAST_MODIFIED));
}

#[tokio::test]
async fn a_range_the_service_ignores_is_skipped_not_duplicated() {
    let stub = Stub::start().await;
    let content: Vec<u8> = (0..1000u32).map(|i| (i % 7) as u8).collect();
    let mut first = Reply::file(&content, LAST_MODIFIED);
    first.cut_after = Some(300);
    stub.push(first);
    stub.push(Reply::file(&content, LAST_MODIFIED));
    let download = stub
        .client()
        .download_file(
            &FileRef::node("p", "n", "x.log"),
            &DownloadOptions::default(),
            deadline(),
        )
        .await
        .unwrap();
    let chunks: Vec<_> = download.try_collect().await.unwrap();
    assert_eq!(chunks.concat(), content);
}

#[tokio::test]
async fn a_file_that_changed_underneath_is_not_spliced() {
    let stub = Stub::start().await;
    let content = vec![7u8; 1000];
    let mut first = Reply::file(&content, LAST_MODIFIED);
    first.cut_after = Some(500);
    stub.push(first);
    stub.push(Reply::file(&[8u8; 700], "Tue, 03 Dec 2024 10:05:00 GMT"));
    let download = stub
        .client()
        .download_file(
            &FileRef::task("j", "t", "stderr.txt"),
            &DownloadOptions::default(),
            deadline(),
        )
        .await
        .unwrap();
    let error = download.try_collect::<Vec<_>>().await.unwrap_err();
    assert!(matches!(error, BatchError::FileChanged(_)), "{error:?}");

    // A 412 on the conditional resume means the same.
    let mut first = Reply::file(&content, LAST_MODIFIED);
    first.cut_after = Some(500);
    stub.push(first);
    stub.push(Reply::error(412, "ConditionNotMet", "modified"));
    let download = stub
        .client()
        .download_file(
            &FileRef::task("j", "t", "stderr.txt"),
            &DownloadOptions::default(),
            deadline(),
        )
        .await
        .unwrap();
    let error = download.try_collect::<Vec<_>>().await.unwrap_err();
    assert!(matches!(error, BatchError::FileChanged(_)), "{error:?}");
}

#[tokio::test]
async fn resumes_are_bounded() {
    let stub = Stub::start().await;
    let content = vec![1u8; 1000];
    for _ in 0..3 {
        let mut reply = Reply::file(&content, LAST_MODIFIED);
        reply.cut_after = Some(0);
        stub.push(reply);
    }
    let options = DownloadOptions {
        offset: 0,
        max_resumes: 2,
    };
    let download = stub
        .client()
        .download_file(&FileRef::task("j", "t", "stdout.txt"), &options, deadline())
        .await
        .unwrap();
    let error = download.try_collect::<Vec<_>>().await.unwrap_err();
    assert!(matches!(error, BatchError::Transient(_)), "{error:?}");
    assert!(error.to_string().contains("after 2 resumes"), "{error}");
    assert_eq!(stub.seen().len(), 3);
}

#[tokio::test]
async fn keys_never_appear_in_debug_output() {
    let stub = Stub::start().await;
    let config = stub.config();
    let client = stub.client();
    for text in [
        format!("{config:?}"),
        format!("{client:?}"),
        format!("{:?}", config.auth),
    ] {
        assert!(!text.contains(KEY), "{text}");
        assert!(!text.contains(&KEY[..20]), "{text}");
    }
}

/// A credential that hands out numbered tokens and counts requests.
#[derive(Debug)]
struct FakeCredential {
    calls: AtomicUsize,
    lifetime: Duration,
}

#[async_trait]
impl TokenCredential for FakeCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        assert_eq!(scopes, ["https://batch.core.windows.net//.default"]);
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(AccessToken::new(
            format!("token-{n}"),
            time::OffsetDateTime::now_utc() + self.lifetime,
        ))
    }
}

fn entra_client(stub: &Stub, credential: Arc<FakeCredential>) -> BatchClient {
    let mut config = BatchConfig::new(
        &stub.base,
        BatchAuth::Entra(EntraAuth::Credential(credential)),
    )
    .unwrap();
    config.retry = RetryPolicy::none();
    BatchClient::new(config).unwrap()
}

#[tokio::test]
async fn entra_tokens_are_sent_as_bearer_and_cached_until_near_expiry() {
    let stub = Stub::start().await;
    let long = Arc::new(FakeCredential {
        calls: AtomicUsize::new(0),
        lifetime: Duration::from_secs(3600),
    });
    let client = entra_client(&stub, long.clone());
    for _ in 0..3 {
        client
            .get_task_counts("j", deadline())
            .await
            .unwrap_or_default();
    }
    assert_eq!(long.calls.load(Ordering::SeqCst), 1);
    let seen = stub.seen();
    assert!(
        seen.iter()
            .all(|s| s.header("authorization") == Some("Bearer token-0"))
    );
    assert!(!format!("{client:?}").contains("token-0"));

    // A token about to expire is replaced before use.
    let short = Arc::new(FakeCredential {
        calls: AtomicUsize::new(0),
        lifetime: Duration::from_secs(60),
    });
    let client = entra_client(&stub, short.clone());
    for _ in 0..2 {
        client
            .get_task_counts("j", deadline())
            .await
            .unwrap_or_default();
    }
    assert_eq!(short.calls.load(Ordering::SeqCst), 2);
}

/// A log sink for the secrets test.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs one global subscriber for the whole test binary, writing into a shared buffer.
/// (A scoped subscriber races with tests on other threads over tracing's callsite cache.)
fn captured_logs() -> Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = Captured::default();
            let sink = captured.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || sink.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in this test binary");
            captured
        })
        .clone()
}

#[tokio::test]
async fn logs_carry_request_ids_but_never_keys_or_tokens() {
    let captured = captured_logs();
    let stub = Stub::start().await;
    stub.push(Reply::error(429, "TooManyRequests", "slow down").with("retry-after", "0"));
    stub.push(Reply::json(200, r#"{"id":"j"}"#));
    stub.push(Reply::error(404, "JobNotFound", "no such job"));
    let client = stub.client();
    client
        .get_job("j", &GetOptions::default(), deadline())
        .await
        .unwrap();
    client
        .get_job("gone", &GetOptions::default(), deadline())
        .await
        .unwrap_err();
    let bearer = Arc::new(FakeCredential {
        calls: AtomicUsize::new(0),
        lifetime: Duration::from_secs(3600),
    });
    entra_client(&stub, bearer)
        .get_task_counts("j", deadline())
        .await
        .unwrap_or_default();

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("request_id=req-429"), "{logs}");
    assert!(logs.contains("retrying"), "{logs}");
    assert!(
        logs.contains("code=\"JobNotFound\"") || logs.contains("code=JobNotFound"),
        "{logs}"
    );
    let signatures: Vec<_> = stub
        .seen()
        .iter()
        .filter_map(|s| s.header("authorization").map(str::to_owned))
        .collect();
    assert!(!logs.contains(KEY) && !logs.contains(&KEY[..16]));
    for signature in signatures {
        let secret_part = signature.rsplit([':', ' ']).next().unwrap().to_owned();
        assert!(
            !logs.contains(&secret_part),
            "a credential leaked into the logs: {logs}"
        );
    }
    assert!(!logs.contains("token-0"));
}
