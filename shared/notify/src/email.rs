//! Email: one rendering ([`render`]: subject, plain text and HTML carrying the same facts) and two
//! transports, SMTP through lettre ([`send_smtp`]) and the Azure Communication Services email
//! REST API with HMAC-SHA256 auth ([`send_acs`]).
//!
//! Threading: the `Message-ID` is `<{idempotency key}@batch-triage>`; repeats and the resolved
//! notice carry `In-Reply-To`/`References` pointing at the group's first notice, so mail clients
//! show a group's life as one thread.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use foundation::{Deadline, Secret};
use hmac::{Hmac, Mac};
use lettre::Message;
use lettre::address::Envelope;
use lettre::message::{Mailbox, MultiPart, header};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::alert::{Alert, AlertState};
use crate::config::{AcsAuth, AcsTarget, SmtpTarget, SmtpTls};
use crate::egress::{Allowlist, Delivery, Egress, parse_host};
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
    let logs: Vec<&str> = alert.safe_logs().collect();
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
    // Built from sanitised, single-quoted values (`silence_command`): safe to paste in a shell.
    let mute = (alert.state != AlertState::Resolved)
        .then(|| diagnosis::policy::silence_command(&alert.diagnosis));
    if let Some(mute) = &mute {
        text.push_str(&format!("\nTo mute this group:\n  {}\n", line(mute)));
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
        mute: mute.as_deref(),
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
    /// The `batch-triage silence add` command that mutes this group.
    mute: Option<&'a str>,
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
                @if let Some(mute) = b.mute {
                    h3 { "Mute this group" }
                    pre { code { (mute) } }
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

/// How an SMTP connection is protected, ready to use.
enum Protection {
    /// No TLS (loopback only).
    Plain,
    /// STARTTLS, required (never opportunistic: no credentials or mail over plain text).
    StartTls(TlsParameters),
    /// TLS from the first byte.
    Implicit(TlsParameters),
}

/// Checks an SMTP destination as configured, before any connection: plain SMTP only to a
/// loopback host, and the host on the allowlist like any other destination (an IP literal must
/// be listed, loopback needs the loopback opt-in).
pub fn check_smtp_destination(
    allowlist: &Allowlist,
    host: &str,
    tls: SmtpTls,
) -> Result<(), NotifyError> {
    if tls == SmtpTls::None {
        let loopback = match parse_host(host)? {
            url::Host::Ipv4(ip) => ip.is_loopback(),
            url::Host::Ipv6(ip) => ip.is_loopback(),
            url::Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        };
        if !loopback {
            return Err(NotifyError::Config(
                "tls = \"none\" is only allowed to a loopback SMTP host".into(),
            ));
        }
    }
    allowlist.check_host(host)
}

/// Sends the alert by SMTP, retrying transient failures (4xx replies, connection problems)
/// within `deadline`, with the egress's retry policy.
///
/// The server obeys the egress allowlist like an HTTP receiver: the host is checked before
/// anything else, then every attempt resolves it, keeps only the addresses the allowlist
/// accepts, and connects to exactly those (so a name cannot be re-resolved to a private address
/// between the check and the connection). STARTTLS is required when configured (never
/// opportunistic), and the certificate is checked against the configured host name; plain SMTP
/// is only allowed to a loopback host.
pub async fn send_smtp(
    egress: &Egress,
    target: &SmtpTarget,
    alert: &Alert,
    deadline: Deadline,
) -> Result<Delivery, NotifyError> {
    check_smtp_destination(egress.allowlist(), &target.host, target.tls)?;
    let message = mime_message(target, &render(alert))?;
    let protection = smtp_protection(target)?;
    let envelope = message.envelope();
    let bytes = message.formatted();
    let hello = ClientId::default();
    egress
        .with_retries(&target.host, deadline, || {
            smtp_attempt(
                egress,
                target,
                &protection,
                &hello,
                envelope,
                &bytes,
                deadline,
            )
        })
        .await
}

/// The TLS settings of an SMTP target. With a `ca_file`, the certificate is checked against
/// the system roots plus that CA.
fn smtp_protection(target: &SmtpTarget) -> Result<Protection, NotifyError> {
    if target.tls == SmtpTls::None {
        return Ok(Protection::Plain);
    }
    // The certificate must name the host as configured, not the address connected to.
    let server_name = match parse_host(&target.host)? {
        url::Host::Domain(name) => name,
        url::Host::Ipv4(ip) => ip.to_string(),
        url::Host::Ipv6(ip) => ip.to_string(),
    };
    let mut builder = TlsParameters::builder(server_name);
    if let Some(pem) = &target.extra_root_pem {
        let certificate =
            Certificate::from_pem(pem).map_err(|e| NotifyError::Config(format!("ca_file: {e}")))?;
        builder = builder.add_root_certificate(certificate);
    }
    let parameters = builder
        .build_rustls()
        .map_err(|e| NotifyError::Config(format!("TLS settings: {e}")))?;
    Ok(match target.tls {
        SmtpTls::Implicit => Protection::Implicit(parameters),
        _ => Protection::StartTls(parameters),
    })
}

/// One SMTP session: vetted addresses, connect (TLS first if implicit), STARTTLS, AUTH, the
/// message, QUIT.
async fn smtp_attempt(
    egress: &Egress,
    target: &SmtpTarget,
    protection: &Protection,
    hello: &ClientId,
    envelope: &Envelope,
    bytes: &[u8],
    deadline: Deadline,
) -> Result<Delivery, NotifyError> {
    let smtp_error = |e: lettre::transport::smtp::Error| NotifyError::Smtp {
        transient: !e.is_permanent(),
        message: e.to_string(),
    };
    let addresses = egress
        .allowlist()
        .vetted_addresses(&target.host, target.port)
        .await?;
    if matches!(protection, Protection::Plain) && addresses.iter().any(|a| !a.ip().is_loopback()) {
        return Err(NotifyError::Config(
            "tls = \"none\" is only allowed to a loopback SMTP host".into(),
        ));
    }
    let implicit = match protection {
        Protection::Implicit(parameters) => Some(parameters.clone()),
        _ => None,
    };
    let mut connection = AsyncSmtpConnection::connect_tokio1(
        addresses.as_slice(),
        Some(deadline.remaining()),
        hello,
        implicit,
        None,
    )
    .await
    .map_err(smtp_error)?;
    if let Protection::StartTls(parameters) = protection {
        connection
            .starttls(parameters.clone(), hello)
            .await
            .map_err(smtp_error)?;
    }
    if let Some((user, password)) = &target.credentials {
        let credentials = Credentials::new(user.expose().to_owned(), password.expose().to_owned());
        connection
            .auth(DEFAULT_MECHANISMS, &credentials)
            .await
            .map_err(smtp_error)?;
    }
    connection.send(envelope, bytes).await.map_err(smtp_error)?;
    // QUIT and close, as lettre's own transport does after a send; the mail is accepted already.
    connection.abort().await;
    Ok(Delivery {
        status: 250,
        attempts: 0,
        operation_location: None,
    })
}

/// The `emails:send` URL of an ACS endpoint.
fn acs_url(endpoint: &str) -> Result<url::Url, NotifyError> {
    let text = format!(
        "{}/emails:send?api-version={ACS_API_VERSION}",
        endpoint.trim().trim_end_matches('/')
    );
    url::Url::parse(&text).map_err(|e| NotifyError::Config(format!("ACS endpoint: {e}")))
}

/// Checks an ACS endpoint as configured, before any connection: a valid `https` URL whose host
/// is on the allowlist (the default allowlist has `*.communication.azure.com`).
pub fn check_acs_destination(allowlist: &Allowlist, endpoint: &str) -> Result<(), NotifyError> {
    allowlist.check(&acs_url(endpoint)?)
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
    let url = acs_url(&target.endpoint)?;
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
    egress
        .post(&Secret::new(url.as_str()), &build, deadline)
        .await
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
        alert.group.first_seen = Some(HOSTILE.into());
        alert.group.last_seen = Some("2026-11-20T10:00:00Z".into());
        alert.group.escalation = Some(HOSTILE.into());
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
    fn the_email_ends_with_a_safe_command_that_mutes_the_group() {
        let email = render(&hostile_alert());
        let command = diagnosis::policy::silence_command(&hostile_alert().diagnosis);
        assert!(
            command.starts_with("batch-triage silence add --match 'account=acct' --match 'job=")
        );
        // No hostile character survives into the command: no markup, quote, control or bidi.
        assert!(
            !command.contains(['<', '>', '"', '\u{1b}', '\u{7}', '\u{202e}', '\r']),
            "{command}"
        );
        // The text body's last section before the signature is the command, verbatim.
        let before_signature = email.text.split("\n-- \n").next().unwrap();
        assert!(
            before_signature
                .trim_end()
                .ends_with(&format!("To mute this group:\n  {command}")),
            "{}",
            email.text
        );
        // In HTML, as escaped text in a <pre>, last before the footer.
        let escaped = command.replace('&', "&amp;").replace('\'', "&#39;");
        let at = email.html.find("Mute this group").expect("the section");
        assert!(email.html[at..].contains("<pre><code>"), "{}", email.html);
        assert!(
            email.html[at..].contains(&escaped) || email.html[at..].contains(&command),
            "{}",
            email.html
        );
        assert!(email.html[at..].find("<hr>").is_some());
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

    #[test]
    fn a_growing_group_says_now_and_was_in_the_same_thread() {
        let mut first = hostile_alert();
        first.diagnosis.subject.job_id = Some("genomics".into());
        let first_email = render(&first);
        assert!(first_email.in_reply_to.is_none());
        let mut grown = first.clone();
        grown.group.count = 5000;
        grown.group.previous_count = Some(1);
        grown.sequence = 1;
        let email = render(&grown);
        assert!(
            email
                .subject
                .contains("job genomics (now 5,000 tasks, was 1)"),
            "{}",
            email.subject
        );
        assert!(
            email
                .text
                .contains("Affected: now 5,000 tasks (was 1), same cause")
        );
        assert!(email.html.contains("now 5,000 tasks (was 1), same cause"));
        // The same thread: the reply names the first notice's Message-ID.
        assert_eq!(email.in_reply_to.as_ref(), Some(&first_email.message_id));
        assert_ne!(email.message_id, first_email.message_id);
        // A count that did not grow is not called growth.
        grown.group.previous_count = Some(5000);
        assert!(!render(&grown).text.contains("was 5,000"));
    }
}
