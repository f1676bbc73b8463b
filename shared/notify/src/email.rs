//! Email: one rendering ([`render`]: subject, plain text and HTML carrying the same facts) and two
//! transports, SMTP through lettre ([`send_smtp`]) and the Azure Communication Services email
//! REST API with HMAC-SHA256 auth ([`send_acs`]).
//!
//! Threading: the `Message-ID` is `<{idempotency key}@batch-triage>`; repeats and the resolved
//! notice carry `In-Reply-To`/`References` pointing at the group's first notice, so mail clients
//! show a group's life as one thread.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use batch_client::{Deadline, Secret};
use hmac::{Hmac, Mac};
use lettre::message::{Mailbox, MultiPart, header};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::alert::{Alert, AlertState};
use crate::config::{AcsAuth, AcsTarget, SmtpTarget, SmtpTls};
use crate::egress::{Delivery, Egress, backoff};
use crate::error::NotifyError;
use crate::text::{keep_end, keep_start};

/// The ACS email API version we speak.
pub const ACS_API_VERSION: &str = "2023-03-31";

/// The domain part of generated `Message-ID`s.
const MESSAGE_ID_DOMAIN: &str = "batch-triage";

/// Longest stderr tail put in an email; the full log is linked.
const EMAIL_STDERR_BYTES: usize = 16 * 1024;

/// A rendered email, transport-independent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailMessage {
    /// E.g. `[CRITICAL] job.prep_failed: job genomics (3 nodes)`.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body: the same facts, every value escaped.
    pub html: String,
    /// `<key@batch-triage>`, from the idempotency key, so a resent message is recognisably the same.
    pub message_id: String,
    /// The group's first notice, for `In-Reply-To`/`References` (repeats and resolved notices).
    pub in_reply_to: Option<String>,
}

/// Renders an alert as an email.
pub fn render(alert: &Alert) -> EmailMessage {
    let d = &alert.diagnosis;
    let tag = match alert.state {
        AlertState::Resolved => "RESOLVED".to_owned(),
        _ => d.severity.as_str().to_uppercase(),
    };
    let repeat = if alert.state == AlertState::Repeat {
        " (still failing)"
    } else {
        ""
    };
    let subject = keep_start(
        &diagnosis::inert::one_line(&format!(
            "[{tag}] {}: {}{repeat}",
            d.class.as_str(),
            alert.headline()
        ))
        .replace(['\u{240d}', '\u{240a}'], " "),
        250,
    );
    let summary = diagnosis::redact::redact(&d.summary);
    let cause = diagnosis::redact::redact(&d.cause);
    let hints: Vec<String> = d
        .hints
        .iter()
        .map(|h| diagnosis::redact::redact(h))
        .collect();
    let tail = alert
        .safe_stderr_tail()
        .map(|t| keep_end(&t, EMAIL_STDERR_BYTES));
    let facts = alert.facts();
    let logs: Vec<&str> = alert
        .links
        .logs
        .iter()
        .map(|l| diagnosis::redact::strip_query(l))
        .collect();
    let portal = alert.safe_portal();

    // The plain-text body shows untrusted text as text: control and bidi characters become
    // visible marks, so a mail client's terminal-like view cannot be driven by the task's output.
    let inert = diagnosis::inert::multi_line;
    let line = diagnosis::inert::one_line;
    let mut text = format!("{}\n\n", inert(&summary));
    for (label, value) in &facts {
        text.push_str(&format!("{label}: {}\n", line(value)));
    }
    if !cause.is_empty() {
        text.push_str(&format!("\nCause:\n{}\n", inert(&cause)));
    }
    if !hints.is_empty() {
        text.push_str("\nWhat to do:\n");
        for hint in &hints {
            text.push_str(&format!("- {}\n", inert(hint)));
        }
    }
    if let Some(tail) = &tail {
        text.push_str(&format!("\nstderr (tail, redacted):\n{}\n", inert(tail)));
    }
    if !logs.is_empty() {
        text.push_str("\nPreserved logs:\n");
        for log in &logs {
            text.push_str(&format!("- {}\n", line(log)));
        }
    }
    if let Some(portal) = &portal {
        text.push_str(&format!("\nAzure portal: {}\n", line(portal)));
    }
    text.push_str(&format!(
        "\n-- \nbatch-triage · group {} · alert {}\n",
        line(&alert.group.key),
        line(&alert.idempotency_key())
    ));

    let html = html_body(&HtmlBody {
        summary: &summary,
        facts: &facts,
        cause: &cause,
        hints: &hints,
        tail: tail.as_deref(),
        logs: &logs,
        portal: portal.as_deref(),
        group: &alert.group.key,
        alert_id: &alert.idempotency_key(),
    });

    let in_reply_to = (alert.state != AlertState::Firing || alert.sequence > 0)
        .then(|| format!("<{}@{MESSAGE_ID_DOMAIN}>", alert.thread_key()));
    EmailMessage {
        subject,
        text,
        html,
        message_id: format!("<{}@{MESSAGE_ID_DOMAIN}>", alert.idempotency_key()),
        in_reply_to,
    }
}

/// What the HTML body shows, already redacted.
struct HtmlBody<'a> {
    summary: &'a str,
    facts: &'a [(&'static str, String)],
    cause: &'a str,
    hints: &'a [String],
    tail: Option<&'a str>,
    logs: &'a [&'a str],
    portal: Option<&'a str>,
    group: &'a str,
    alert_id: &'a str,
}

/// The HTML body. `maud` escapes every interpolated value at compile time, so no untrusted text
/// can become markup; only `https://` links become anchors.
fn html_body(b: &HtmlBody<'_>) -> String {
    use maud::{DOCTYPE, html};
    html! {
        (DOCTYPE)
        html {
            head { meta charset="utf-8"; }
            body style="font-family:Segoe UI,Arial,sans-serif" {
                p { strong { (b.summary) } }
                table {
                    @for (label, value) in b.facts {
                        tr { th align="left" valign="top" { (label) } td { (value) } }
                    }
                }
                @if !b.cause.is_empty() {
                    h3 { "Cause" }
                    p { (b.cause) }
                }
                @if !b.hints.is_empty() {
                    h3 { "What to do" }
                    ul { @for hint in b.hints { li { (hint) } } }
                }
                @if let Some(tail) = b.tail {
                    h3 { "stderr (tail, redacted)" }
                    pre { (tail) }
                }
                @if !b.logs.is_empty() {
                    h3 { "Preserved logs" }
                    ul {
                        @for log in b.logs {
                            @if log.starts_with("https://") {
                                li { a href=(log) { (log) } }
                            } @else {
                                li { (log) }
                            }
                        }
                    }
                }
                @if let Some(portal) = b.portal.filter(|p| p.starts_with("https://")) {
                    p { a href=(portal) { "Open the job in the Azure portal" } }
                }
                hr;
                p style="color:#666" { "batch-triage · group " (b.group) " · alert " (b.alert_id) }
            }
        }
    }
    .into_string()
}

/// Builds the MIME message (multipart/alternative, text then HTML).
fn mime_message(target: &SmtpTarget, email: &EmailMessage) -> Result<Message, NotifyError> {
    let mailbox = |text: &str| {
        text.parse::<Mailbox>()
            .map_err(|e| NotifyError::Config(format!("bad email address {text:?}: {e}")))
    };
    let mut builder = Message::builder()
        .from(mailbox(&target.from)?)
        .subject(email.subject.clone())
        .message_id(Some(email.message_id.clone()))
        .date_now()
        .header(header::MIME_VERSION_1_0);
    for to in &target.to {
        builder = builder.to(mailbox(to)?);
    }
    if let Some(parent) = &email.in_reply_to {
        builder = builder
            .in_reply_to(parent.clone())
            .references(parent.clone());
    }
    builder
        .multipart(MultiPart::alternative_plain_html(
            email.text.clone(),
            email.html.clone(),
        ))
        .map_err(|e| NotifyError::Config(format!("email message: {e}")))
}

/// Sends the alert by SMTP, retrying transient failures (4xx replies, connection problems)
/// within `deadline`. STARTTLS is required when configured (never opportunistic); plain SMTP
/// is only allowed to a loopback host.
pub async fn send_smtp(
    target: &SmtpTarget,
    alert: &Alert,
    deadline: Deadline,
) -> Result<Delivery, NotifyError> {
    let message = mime_message(target, &render(alert))?;
    let smtp_error = |e: lettre::transport::smtp::Error| NotifyError::Smtp {
        transient: !e.is_permanent(),
        message: e.to_string(),
    };
    // With a `ca_file`, the certificate is checked against the system roots plus that CA.
    let tls_parameters = |pem: &[u8]| -> Result<TlsParameters, NotifyError> {
        let certificate =
            Certificate::from_pem(pem).map_err(|e| NotifyError::Config(format!("ca_file: {e}")))?;
        TlsParameters::builder(target.host.clone())
            .add_root_certificate(certificate)
            .build_rustls()
            .map_err(|e| NotifyError::Config(format!("TLS settings: {e}")))
    };
    let builder = match (target.tls, &target.extra_root_pem) {
        (SmtpTls::Starttls, Some(pem)) => {
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&target.host)
                .tls(Tls::Required(tls_parameters(pem)?))
        }
        (SmtpTls::Implicit, Some(pem)) => {
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&target.host)
                .tls(Tls::Wrapper(tls_parameters(pem)?))
        }
        (SmtpTls::Starttls, None) => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&target.host)
                .map_err(smtp_error)?
        }
        (SmtpTls::Implicit, None) => {
            AsyncSmtpTransport::<Tokio1Executor>::relay(&target.host).map_err(smtp_error)?
        }
        (SmtpTls::None, _) => {
            let loopback = target.host == "localhost"
                || target
                    .host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(NotifyError::Config(
                    "tls = \"none\" is only allowed to a loopback SMTP host".into(),
                ));
            }
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&target.host)
        }
    };
    let mut builder = builder.port(target.port);
    if let Some((user, password)) = &target.credentials {
        builder = builder.credentials(Credentials::new(
            user.expose().to_owned(),
            password.expose().to_owned(),
        ));
    }
    let policy = crate::RetryPolicy::standard();
    // A Send RNG: this future is awaited on multi-threaded runtimes (rand::rng() is not Send).
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let transport = builder.clone().timeout(Some(deadline.remaining())).build();
        let error = match tokio::time::timeout_at(
            deadline.instant(),
            transport.send(message.clone()),
        )
        .await
        {
            Ok(Ok(_response)) => {
                tracing::info!(host = %target.host, attempt, "email delivered by smtp");
                return Ok(Delivery {
                    status: 250,
                    attempts: attempt,
                    operation_location: None,
                });
            }
            Ok(Err(e)) => smtp_error(e),
            Err(_) => NotifyError::Smtp {
                message: "timed out at the deadline".into(),
                transient: true,
            },
        };
        let retryable = error.is_retryable();
        tracing::warn!(host = %target.host, attempt, retryable, error = %error, "smtp attempt failed");
        if !retryable || attempt >= policy.max_attempts {
            return Err(error);
        }
        let wait = backoff(&policy, attempt - 1, &mut rng);
        if wait >= deadline.remaining() {
            return Err(NotifyError::DeadlineExceeded {
                attempts: attempt,
                last: Box::new(error),
            });
        }
        tokio::time::sleep(wait).await;
    }
}

/// The ACS `emails:send` request body.
pub fn acs_body(target: &AcsTarget, email: &EmailMessage) -> Vec<u8> {
    let to: Vec<_> = target.to.iter().map(|a| json!({"address": a})).collect();
    serde_json::to_vec(&json!({
        "senderAddress": target.sender,
        "recipients": {"to": to},
        "content": {"subject": email.subject, "plainText": email.text, "html": email.html},
        "userEngagementTrackingDisabled": true,
    }))
    .unwrap_or_default()
}

/// The HMAC-SHA256 headers ACS expects: `(x-ms-date, x-ms-content-sha256, Authorization)`.
///
/// The string to sign is `"{VERB}\n{path?query}\n{date};{host};{content hash}"`, signed with the
/// base64-decoded access key; `host` is the `Host` header value (with a port when non-default).
pub fn acs_sign(
    key: &Secret,
    method: &str,
    url: &url::Url,
    date: &str,
    body: &[u8],
) -> Result<(String, String, String), NotifyError> {
    let key = BASE64
        .decode(key.expose().trim())
        .map_err(|_| NotifyError::Config("the ACS access key is not valid base64".into()))?;
    let hash = BASE64.encode(Sha256::digest(body));
    let host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let path_and_query = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let to_sign = format!("{method}\n{path_and_query}\n{date};{host};{hash}");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key)
        .map_err(|_| NotifyError::Config("the ACS access key is unusable".into()))?;
    mac.update(to_sign.as_bytes());
    let signature = BASE64.encode(mac.finalize().into_bytes());
    Ok((
        date.to_owned(),
        hash,
        format!(
            "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature={signature}"
        ),
    ))
}

/// The Entra scope for ACS.
pub const ACS_SCOPE: &str = "https://communication.azure.com/.default";

/// Sends the alert through ACS email. The `Operation-Id` header is the alert's idempotency key,
/// so a retry (ours or the caller's, later) names the same operation and is not sent twice. A
/// 202 answer is success; its `Operation-Location` (where to poll the outcome) is returned.
/// With a key, every attempt is signed afresh (HMAC-SHA256); with Entra, one bearer token is
/// fetched for the send.
pub async fn send_acs(
    egress: &Egress,
    target: &AcsTarget,
    alert: &Alert,
    deadline: Deadline,
) -> Result<Delivery, NotifyError> {
    let url_text = format!(
        "{}/emails:send?api-version={ACS_API_VERSION}",
        target.endpoint
    );
    let url = url::Url::parse(&url_text)
        .map_err(|e| NotifyError::Config(format!("ACS endpoint: {e}")))?;
    egress.allowlist().check(&url)?;
    let auth = match &target.auth {
        AcsAuth::Key(key) => {
            // Fail on a bad key before any request.
            acs_sign(key, "POST", &url, "probe", b"")?;
            Ok(key.clone())
        }
        AcsAuth::Entra(credential) => {
            let fetch = credential.get_token(&[ACS_SCOPE], None);
            match tokio::time::timeout_at(deadline.instant(), fetch).await {
                Ok(Ok(token)) => Err(Secret::new(token.token.secret().to_owned())),
                Ok(Err(error)) => {
                    use azure_core::error::ErrorKind;
                    let transient = match error.kind() {
                        ErrorKind::Io => true,
                        ErrorKind::HttpResponse { status, .. } => {
                            crate::error::is_retryable_status(u16::from(*status))
                        }
                        _ => false,
                    };
                    let message = format!("cannot get an Entra token for ACS: {error}");
                    return Err(if transient {
                        NotifyError::Transport(message)
                    } else {
                        NotifyError::Config(message)
                    });
                }
                Err(_) => {
                    return Err(NotifyError::Transport(
                        "deadline reached while fetching an Entra token".into(),
                    ));
                }
            }
        }
    };
    let body = bytes::Bytes::from(acs_body(target, &render(alert)));
    let operation_id = alert.idempotency_key();
    let signed_url = url.clone();
    let build = move |request: reqwest::RequestBuilder| {
        let request = request
            .header("content-type", "application/json")
            .header("operation-id", operation_id.as_str())
            .body(body.clone());
        match &auth {
            Ok(key) => {
                let date = httpdate::fmt_http_date(std::time::SystemTime::now());
                match acs_sign(key, "POST", &signed_url, &date, &body) {
                    Ok((date, hash, authorization)) => request
                        .header("x-ms-date", date)
                        .header("x-ms-content-sha256", hash)
                        .header("authorization", authorization),
                    Err(_) => request,
                }
            }
            Err(token) => request.bearer_auth(token.expose()),
        }
    };
    egress.post(&Secret::new(url_text), &build, deadline).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Links;

    const HOSTILE: &str =
        "<script>alert(1)</script><b>x</b>\"' onload=\"y\" &amp; \u{1b}[2J\u{7}\u{202e}rtl\r";

    fn hostile_alert() -> Alert {
        let diagnosis = diagnosis::Diagnosis {
            subject: diagnosis::Subject {
                account: Some("acct".into()),
                job_id: Some(HOSTILE.into()),
                task_id: Some(HOSTILE.into()),
                attempt: Some(1),
                pool_id: Some(HOSTILE.into()),
                node_id: None,
            },
            class: diagnosis::FailureClass::parse("task.exit_code").unwrap(),
            severity: diagnosis::Severity::Error,
            summary: HOSTILE.into(),
            cause: HOSTILE.into(),
            hints: vec![HOSTILE.into()],
            exit_code: Some(1),
            exit_code_hex: None,
            exit_meaning: None,
            failure: None,
            impact: None,
            logs: vec![],
            fingerprint: "fp".into(),
        };
        let mut alert = Alert::single(diagnosis);
        alert.stderr_tail = Some(format!("line one\n{HOSTILE}\nlast"));
        alert.links = Links::new(
            [
                HOSTILE,
                "javascript:alert(1)",
                "https://x.blob.core.windows.net/l/stderr.txt",
            ],
            Some("javascript:alert(2)".into()),
        );
        alert
    }

    #[test]
    fn untrusted_text_is_escaped_in_html() {
        let email = render(&hostile_alert());
        let html = &email.html;
        for markup in ["<script", "<b>", "onload=\"", "href=\"javascript"] {
            assert!(!html.contains(markup), "{markup} in {html}");
        }
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(
            html.contains("&amp;amp;"),
            "the entity is shown, not decoded: {html}"
        );
        // Only the https link is an anchor (and the portal link is not: not https).
        assert_eq!(html.matches("<a ").count(), 1, "{html}");
        assert!(html.contains("<a href=\"https://x.blob.core.windows.net/l/stderr.txt\">"));
    }

    #[test]
    fn the_text_body_and_subject_carry_no_control_characters() {
        let email = render(&hostile_alert());
        assert!(
            !email
                .text
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t'),
            "{:?}",
            email.text
        );
        assert!(!email.text.contains('\u{202e}'));
        assert!(email.text.contains("␛[2J␇<U+202E>rtl␍"), "{}", email.text);
        assert!(email.text.contains("line one\n"), "stderr keeps its lines");
        assert!(
            !email.subject.chars().any(char::is_control),
            "{:?}",
            email.subject
        );
    }
}
