//! The demo's alert receivers, all on 127.0.0.1 and all in this process: an HTTP recorder that
//! stands in for the Teams Workflows trigger, a generic webhook, PagerDuty's Events API and a
//! Slack incoming webhook, and a minimal SMTP sink.
//! The pipeline delivers to them through its real delivery path (allowlist, retries, signing,
//! SMTP), so what they record is exactly what Teams, a mail server or a SIEM would receive.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Which receiver got a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The Teams Workflows trigger (an Adaptive Card in the `message` envelope).
    Teams,
    /// The signed generic webhook (the diagnosis JSON).
    Webhook,
    /// SMTP (a MIME message).
    Email,
    /// PagerDuty's Events API v2 (a `trigger` or `resolve` event).
    PagerDuty,
    /// A Slack incoming webhook (Block Kit).
    Slack,
}

impl Channel {
    /// The receiver's name in the demo policy.
    pub fn receiver_name(self) -> &'static str {
        match self {
            Self::Teams => "ops-teams",
            Self::Webhook => "siem",
            Self::Email => "ops-mail",
            Self::PagerDuty => "oncall",
            Self::Slack => "ops-slack",
        }
    }

    /// The file name prefix and extension under `alerts/`.
    pub fn file_name(self, number: usize) -> String {
        match self {
            Self::Teams => format!("teams-{number:03}.json"),
            Self::Webhook => format!("webhook-{number:03}.json"),
            Self::Email => format!("email-{number:03}.eml"),
            Self::PagerDuty => format!("pagerduty-{number:03}.json"),
            Self::Slack => format!("slack-{number:03}.json"),
        }
    }
}

/// One message as a receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Who got it.
    pub channel: Channel,
    /// The body as sent: JSON for Teams and the webhook, the whole MIME message for email.
    pub body: Vec<u8>,
    /// The webhook's `X-Batch-Triage-Signature` header, to show the message was signed.
    pub signature: Option<String>,
}

/// Everything received so far, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Inbox(Arc<Mutex<Vec<Received>>>);

impl Inbox {
    fn push(&self, message: Received) {
        // A poisoned lock only means another receiver task panicked; the messages are still
        // valid, so keep recording.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(message);
    }

    /// A copy of what arrived.
    pub fn messages(&self) -> Vec<Received> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The running receivers; they stop when this is dropped.
pub struct Receivers {
    /// The Teams Workflows trigger URL to put in the policy's environment.
    pub teams_url: String,
    /// The generic webhook URL.
    pub webhook_url: String,
    /// PagerDuty's enqueue URL (not secret: the routing key is).
    pub pagerduty_url: String,
    /// The Slack incoming webhook URL.
    pub slack_url: String,
    /// The SMTP sink's port on 127.0.0.1.
    pub smtp_port: u16,
    /// What they received.
    pub inbox: Inbox,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Receivers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A mail larger than this is refused, so a misbehaving client cannot fill memory.
const MAX_MAIL_BYTES: usize = 8 << 20;

/// Starts the HTTP recorder and the SMTP sink on free loopback ports.
pub async fn start() -> std::io::Result<Receivers> {
    let inbox = Inbox::default();
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let http_addr: SocketAddr = http.local_addr()?;
    let router = axum::Router::new()
        .route(
            "/teams",
            post(|State(inbox): State<Inbox>, body: axum::body::Bytes| async move {
                inbox.push(Received {
                    channel: Channel::Teams,
                    body: body.to_vec(),
                    signature: None,
                });
                // What a Workflows trigger answers.
                StatusCode::ACCEPTED
            }),
        )
        .route(
            "/webhook",
            post(
                |State(inbox): State<Inbox>, headers: HeaderMap, body: axum::body::Bytes| async move {
                    let signature = headers
                        .get("x-batch-triage-signature")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    inbox.push(Received {
                        channel: Channel::Webhook,
                        body: body.to_vec(),
                        signature,
                    });
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .route(
            "/pagerduty/v2/enqueue",
            post(|State(inbox): State<Inbox>, body: axum::body::Bytes| async move {
                inbox.push(Received {
                    channel: Channel::PagerDuty,
                    body: body.to_vec(),
                    signature: None,
                });
                // What the Events API answers once the event is queued.
                (
                    StatusCode::ACCEPTED,
                    r#"{"status":"success","message":"Event processed"}"#,
                )
            }),
        )
        .route(
            "/slack",
            post(|State(inbox): State<Inbox>, body: axum::body::Bytes| async move {
                inbox.push(Received {
                    channel: Channel::Slack,
                    body: body.to_vec(),
                    signature: None,
                });
                // What an incoming webhook answers.
                (StatusCode::OK, "ok")
            }),
        )
        .with_state(inbox.clone());
    let http_task = tokio::spawn(async move {
        let _ = axum::serve(http, router).await;
    });

    let smtp = TcpListener::bind("127.0.0.1:0").await?;
    let smtp_port = smtp.local_addr()?.port();
    let smtp_inbox = inbox.clone();
    let smtp_task = tokio::spawn(async move {
        while let Ok((stream, _)) = smtp.accept().await {
            let inbox = smtp_inbox.clone();
            tokio::spawn(async move {
                // A broken session loses one mail; lettre reports it and the pipeline keeps the
                // alert in its outbox, which the demo's report shows.
                let _ = smtp_session(stream, &inbox).await;
            });
        }
    });

    Ok(Receivers {
        teams_url: format!("http://{http_addr}/teams"),
        webhook_url: format!("http://{http_addr}/webhook"),
        pagerduty_url: format!("http://{http_addr}/pagerduty/v2/enqueue"),
        slack_url: format!("http://{http_addr}/slack"),
        smtp_port,
        inbox,
        tasks: vec![http_task, smtp_task],
    })
}

/// One SMTP session (RFC 5321), just enough for a client that sends one message per connection:
/// greeting, EHLO, MAIL, RCPT, DATA (with dot-unstuffing), QUIT. No TLS: plain SMTP is allowed
/// to loopback only, and that is where this listens.
async fn smtp_session(stream: TcpStream, inbox: &Inbox) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    write.write_all(b"220 batch-triage-demo ESMTP\r\n").await?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let command = String::from_utf8_lossy(&line).trim().to_ascii_uppercase();
        let verb = command.split_whitespace().next().unwrap_or_default();
        match verb {
            "EHLO" | "HELO" => write.write_all(b"250 batch-triage-demo\r\n").await?,
            "MAIL" | "RCPT" | "RSET" | "NOOP" => write.write_all(b"250 OK\r\n").await?,
            "DATA" => {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                match read_data(&mut reader).await? {
                    Some(mail) => {
                        inbox.push(Received {
                            channel: Channel::Email,
                            body: mail,
                            signature: None,
                        });
                        write.write_all(b"250 OK: queued\r\n").await?;
                    }
                    None => {
                        write.write_all(b"552 Message too large\r\n").await?;
                    }
                }
            }
            "QUIT" => {
                write.write_all(b"221 Bye\r\n").await?;
                return Ok(());
            }
            _ => write.write_all(b"502 Command not implemented\r\n").await?,
        }
    }
}

/// Reads a DATA section up to the lone `.` line, undoing dot-stuffing. `None` when it is larger
/// than [`MAX_MAIL_BYTES`] (the rest is still read, so the session stays in step).
async fn read_data(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut mail = Vec::new();
    let mut too_large = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok((!too_large).then_some(mail));
        }
        let content = line.strip_prefix(b".").unwrap_or(&line);
        if mail.len() + content.len() > MAX_MAIL_BYTES {
            too_large = true;
        } else {
            mail.extend_from_slice(content);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn expect_reply(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>, code: &str) {
        let mut reply = String::new();
        reader.read_line(&mut reply).await.unwrap();
        assert!(reply.starts_with(code), "expected {code}, got {reply:?}");
    }

    #[tokio::test]
    async fn the_smtp_sink_records_one_message_and_undoes_dot_stuffing() {
        let receivers = start().await.unwrap();
        let stream = TcpStream::connect(("127.0.0.1", receivers.smtp_port))
            .await
            .unwrap();
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        expect_reply(&mut reader, "220").await;
        for (command, code) in [
            ("EHLO test\r\n", "250"),
            ("MAIL FROM:<a@example.com>\r\n", "250"),
            ("RCPT TO:<b@example.com>\r\n", "250"),
            ("DATA\r\n", "354"),
            ("Subject: hi\r\n\r\n..leading dot\r\n.\r\n", "250"),
            ("VRFY someone\r\n", "502"),
            ("QUIT\r\n", "221"),
        ] {
            write.write_all(command.as_bytes()).await.unwrap();
            expect_reply(&mut reader, code).await;
        }
        let messages = receivers.inbox.messages();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].channel, Channel::Email);
        assert_eq!(messages[0].body, b"Subject: hi\r\n\r\n.leading dot\r\n");
    }
}
