//! Teams: the payload the receiver gets is a valid Adaptive Card 1.4 in the Workflows envelope,
//! fits in 28 KB whatever the content, is retried on throttling and never redirected, and, rendered by Microsoft's
//! Adaptive Cards renderer with markdown on, shows untrusted text as text.

use notify::{NotifyError, Secret};

use crate::support::{
    Receiver, deadline, local_egress, logs, python_check, sample_alert, support_file,
};

fn card_of(body: &[u8]) -> serde_json::Value {
    let envelope: serde_json::Value = serde_json::from_slice(body).expect("valid JSON");
    envelope["attachments"][0]["content"].clone()
}

#[tokio::test]
async fn card_is_received_valid_and_complete() {
    logs();
    let receiver = Receiver::start(vec![]).await;
    let alert = sample_alert();
    let delivery = notify::teams::send(
        &local_egress(),
        &Secret::new(receiver.url.clone()),
        &alert,
        deadline(),
    )
    .await
    .unwrap();
    assert_eq!((delivery.status, delivery.attempts), (202, 1));
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.header("content-type"), Some("application/json"));
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("payload.json");
    std::fs::write(&payload, &request.body).unwrap();
    python_check(&[
        "schema".as_ref(),
        support_file("adaptive-card.schema.json").as_os_str(),
        payload.as_os_str(),
    ]);
    let text = String::from_utf8(request.body.clone()).unwrap();
    for fact in [
        "genomics",
        "t-17",
        "task.exit_code",
        "ERROR",
        "137",
        "4,812 tasks, same cause",
        "t-912",
        "oom-critical",
        "monospace",
        "Killed",
        "stderr.txt",
        "portal.azure.com/#resource/subscriptions/sub-1/resourceGroups/rg%201/providers/Microsoft.Batch/batchAccounts/acct/jobs/genomics",
        "dependent tasks",
    ] {
        assert!(text.contains(fact), "card lacks {fact}: {text}");
    }
    for secret in ["SASSECRETSIG123", "LINKSECRET", "TOPSECRETSIG"] {
        assert!(!text.contains(secret), "card leaks {secret}");
    }
    let card = card_of(&request.body);
    assert_eq!(card["version"], "1.4");
    assert_eq!(card["type"], "AdaptiveCard");
}

#[tokio::test]
async fn huge_content_fits_in_28_kb_and_stays_valid() {
    let mut alert = sample_alert();
    // 1 MB of stderr with multi-byte characters and characters JSON must escape.
    let line = "é€😀 \"quoted\" \\ \t\u{1} error at step 12345\n";
    alert.stderr_tail = Some(line.repeat(1_048_576 / line.len() + 1) + "LAST LINE");
    alert.diagnosis.hints = (0..500)
        .map(|i| format!("hint {i}: {}", "🙂\"".repeat(400)))
        .collect();
    alert.diagnosis.cause = "\u{2}".repeat(100_000);
    alert.group.examples = (0..10_000).map(|i| format!("task-{i}")).collect();
    let payload = notify::teams::render(&alert);
    assert!(
        payload.len() <= notify::teams::MAX_PAYLOAD_BYTES,
        "{} bytes",
        payload.len()
    );
    let text = std::str::from_utf8(&payload).expect("valid UTF-8");
    assert!(text.contains("LAST LINE"), "the stderr tail keeps its end");
    assert!(text.contains("task.exit_code"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.json");
    std::fs::write(&path, &payload).unwrap();
    python_check(&[
        "schema".as_ref(),
        support_file("adaptive-card.schema.json").as_os_str(),
        path.as_os_str(),
    ]);
    // Same through the wire.
    let receiver = Receiver::start(vec![]).await;
    notify::teams::send(
        &local_egress(),
        &Secret::new(receiver.url.clone()),
        &alert,
        deadline(),
    )
    .await
    .unwrap();
    assert!(receiver.requests()[0].body.len() <= 28_000);
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_honouring_retry_after() {
    let receiver = Receiver::start(vec![
        (429, vec![("retry-after", "1".into())]),
        (500, vec![]),
        (202, vec![]),
    ])
    .await;
    let started = std::time::Instant::now();
    let delivery = notify::teams::send(
        &local_egress(),
        &Secret::new(receiver.url.clone()),
        &sample_alert(),
        deadline(),
    )
    .await
    .unwrap();
    assert_eq!(delivery.attempts, 3);
    assert_eq!(receiver.requests().len(), 3);
    // The Retry-After of one second was waited out (not a timing assertion on speed).
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    let bodies: Vec<_> = receiver.requests().into_iter().map(|r| r.body).collect();
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "every attempt sends the same payload"
    );
}

#[tokio::test]
async fn gives_up_with_a_retryable_error_and_stops_on_client_errors() {
    let receiver = Receiver::start(vec![(503, vec![]); 10]).await;
    let error = notify::teams::send(
        &local_egress(),
        &Secret::new(receiver.url.clone()),
        &sample_alert(),
        deadline(),
    )
    .await
    .unwrap_err();
    assert!(error.is_retryable(), "{error}");
    assert!(
        matches!(error, NotifyError::Status { status: 503, .. }),
        "{error:?}"
    );
    assert_eq!(receiver.requests().len(), 4, "max_attempts");

    let receiver = Receiver::start(vec![(400, vec![])]).await;
    let error = notify::teams::send(
        &local_egress(),
        &Secret::new(receiver.url.clone()),
        &sample_alert(),
        deadline(),
    )
    .await
    .unwrap_err();
    assert!(!error.is_retryable());
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn a_retry_after_beyond_the_deadline_ends_early() {
    let receiver = Receiver::start(vec![(429, vec![("retry-after", "3600".into())])]).await;
    let error = notify::teams::send(
        &local_egress(),
        &Secret::new(receiver.url.clone()),
        &sample_alert(),
        notify::Deadline::after(std::time::Duration::from_secs(20)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, NotifyError::DeadlineExceeded { attempts: 1, .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let target = Receiver::start(vec![]).await;
    let receiver = Receiver::start(vec![(307, vec![("location", target.url.clone())])]).await;
    let error = notify::teams::send(
        &local_egress(),
        &Secret::new(receiver.url.clone()),
        &sample_alert(),
        deadline(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, NotifyError::Redirected { status: 307 }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert_eq!(receiver.requests().len(), 1);
    assert!(
        target.requests().is_empty(),
        "the redirect target was never contacted"
    );
}

#[tokio::test]
async fn posts_to_one_host_are_paced_under_four_per_second() {
    let receiver = Receiver::start(vec![]).await;
    let egress = local_egress();
    let url = Secret::new(receiver.url.clone());
    let alert = sample_alert();
    let started = std::time::Instant::now();
    for _ in 0..5 {
        notify::teams::send(&egress.clone(), &url, &alert, deadline())
            .await
            .unwrap();
    }
    assert_eq!(receiver.requests().len(), 5);
    // Five paced posts need at least four intervals (a lower bound, not a speed assertion).
    assert!(started.elapsed() >= notify::teams::TEAMS_INTERVAL * 4);
}

/// Text that is markup in every form Teams' markdown knows, plus HTML.
const HOSTILE: [&str; 5] = [
    "[click me](https://evil.example)",
    "**bold**",
    "<script>alert(1)</script>",
    "![img](https://evil.example/x.png)",
    "see https://evil.example now",
];

/// Renders a card (or a Workflows envelope) with Microsoft's Adaptive Cards renderer, markdown on
/// as in Teams (`tests/node/render-card.js`), and returns the HTML. Asserts the renderer reported
/// no parse or validation error.
fn render_html(card: &[u8]) -> String {
    let node_modules = std::env::var_os("BATCH_TRIAGE_NODE_MODULES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/node/node_modules")
        });
    assert!(
        node_modules.join("adaptivecards").is_dir() && node_modules.join("jsdom").is_dir(),
        "the Adaptive Cards renderer is missing from {}: run scripts/setup-test-deps (or set BATCH_TRIAGE_NODE_MODULES)",
        node_modules.display()
    );
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/node/render-card.js");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("card.json");
    std::fs::write(&input, card).unwrap();
    let output = std::process::Command::new("node")
        .arg(&script)
        .arg(&input)
        .env("NODE_PATH", &node_modules)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run node (needed to render cards; install Node.js 20+): {e}")
        });
    assert!(
        output.status.success(),
        "render-card.js failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let rendered: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("render-card.js prints JSON");
    assert_eq!(rendered["errors"], serde_json::json!([]), "renderer errors");
    let html = rendered["html"].as_str().expect("html").to_owned();
    assert!(html.contains("ac-adaptiveCard"), "nothing rendered: {html}");
    html
}

/// The HTML a browser would show `text` as, when it is text.
fn html_escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[test]
fn renderer_shows_untrusted_text_as_text() {
    let hostile = HOSTILE.join(" | ");
    let mut alert = sample_alert();
    alert.diagnosis.subject.task_id = Some(format!("task {hostile}"));
    alert.diagnosis.subject.job_id = Some(format!("job {hostile}"));
    alert.diagnosis.summary = format!("summary {hostile}");
    alert.diagnosis.cause = format!("cause {hostile}");
    alert.diagnosis.hints = vec![format!("hint {hostile}")];
    alert.stderr_tail = Some(format!("stderr {hostile}\nKilled\n"));
    alert.group.examples = vec![format!("example {hostile}")];
    let html = render_html(&notify::teams::render(&alert));
    for markup in ["<a ", "<a>", "<strong", "<em>", "<img", "<script"] {
        assert!(!html.contains(markup), "the card rendered {markup}: {html}");
    }
    for text in HOSTILE {
        let shown = html_escaped(text);
        let times = html.matches(&shown).count();
        // Task id, job id, summary, cause, hint, stderr: each shows the text, literally.
        assert!(
            times >= 6,
            "{shown} shown {times} times, not as text: {html}"
        );
    }
}

/// The control: the same text in a plain markdown TextBlock does become markup, so the renderer
/// really processes markdown and the test above can fail.
#[test]
fn renderer_turns_the_same_text_in_a_text_block_into_markup() {
    let card = serde_json::json!({
        "type": "AdaptiveCard", "version": "1.4",
        "body": [{"type": "TextBlock", "text": HOSTILE.join(" | "), "wrap": true}]
    });
    let html = render_html(card.to_string().as_bytes());
    for markup in [
        "<a href=\"https://evil.example\"",
        "<strong>bold</strong>",
        "<img src=\"https://evil.example/x.png\"",
    ] {
        assert!(html.contains(markup), "no {markup} in {html}");
    }
}
