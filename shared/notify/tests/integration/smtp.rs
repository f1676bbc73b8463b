//! SMTP: a real aiosmtpd server receives the mail; headers and both bodies are checked. The SMTP
//! server obeys the allowlist like any receiver: refused destinations are never connected to.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

use artifact_store::testing::TestPki;
use notify::config::{ReceiverConfig, Target};
use notify::{AlertState, NotifyError};

use crate::support::{deadline, python, quick_policy, sample_alert, support_file};

/// aiosmtpd running for one test; stopped (stdin closed, then killed) on drop.
struct SmtpServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl SmtpServer {
    fn start(auth: Option<(&str, &str)>) -> Self {
        Self::start_with(auth, None)
    }

    /// With `tls` = (`"starttls"` or `"implicit"`, certificate, key).
    fn start_with(
        auth: Option<(&str, &str)>,
        tls: Option<(&str, &std::path::Path, &std::path::Path)>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(python());
        command.arg(support_file("smtp_server.py")).arg(dir.path());
        if let Some((mode, cert, key)) = tls {
            command
                .env("SMTP_TLS", mode)
                .env("SMTP_CERT", cert)
                .env("SMTP_KEY", key);
        }
        if let Some((user, password)) = auth {
            command.args([user, password]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start aiosmtpd");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("READY ")
            .unwrap_or_else(|| {
                panic!(
                    "smtp_server.py did not start (is aiosmtpd installed in the venv?): {line:?}"
                )
            })
            .parse()
            .unwrap();
        Self { child, port, dir }
    }

    fn messages(&self) -> Vec<(String, serde_json::Value)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "eml") {
                let meta = std::fs::read(path.with_extension("json")).unwrap();
                out.push((
                    String::from_utf8(std::fs::read(&path).unwrap()).unwrap(),
                    serde_json::from_slice(&meta).unwrap(),
                ));
            }
        }
        out
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn receiver(port: u16, auth: bool) -> notify::Receiver {
    let mut toml = format!(
        "name = \"mail\"\nkind = \"email\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         from = \"batch-triage <alerts@contoso.com>\"\nto = [\"oncall@contoso.com\", \"Ops <ops@contoso.com>\"]\n"
    );
    if auth {
        toml.push_str("username_env = \"SMTP_USER\"\npassword_env = \"SMTP_PASS\"\n");
    }
    let config: ReceiverConfig = serde_json::from_value(toml_to_json(&toml)).unwrap();
    config
        .resolve(|var| match var {
            "SMTP_USER" => Some("alerts".into()),
            "SMTP_PASS" => Some("smtp-pa55word".into()),
            _ => None,
        })
        .unwrap()
}

/// A tiny `key = value` TOML subset reader, enough for the flat receiver tables above, so the
/// test does not need a TOML crate.
fn toml_to_json(text: &str) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (key, value) = line.split_once(" = ").unwrap();
        let value = value.trim();
        let value: serde_json::Value = if value.starts_with('[') || value.starts_with('"') {
            serde_json::from_str(value).unwrap()
        } else {
            value.parse::<u64>().unwrap().into()
        };
        map.insert(key.trim().to_owned(), value);
    }
    serde_json::Value::Object(map)
}

/// Unfolds headers and decodes a quoted-printable or base64 part enough to compare facts.
fn part_text(message: &str, content_type: &str) -> String {
    let start = message
        .find(&format!("Content-Type: {content_type}"))
        .unwrap_or_else(|| panic!("no {content_type} part"));
    let rest = &message[start..];
    let (headers, body) = rest.split_once("\r\n\r\n").unwrap();
    let body = body.split("\r\n--").next().unwrap();
    if headers.contains("Content-Transfer-Encoding: base64") {
        use base64::Engine as _;
        let joined: String = body.split_whitespace().collect();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(joined)
                .unwrap(),
        )
        .unwrap()
    } else if headers.contains("quoted-printable") {
        decode_qp(body)
    } else {
        body.to_owned()
    }
}

fn decode_qp(body: &str) -> String {
    let mut out = Vec::new();
    let bytes = body.replace("=\r\n", "").into_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(
                std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                16,
            ) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn mail_is_received_with_headers_and_matching_bodies() {
    let server = SmtpServer::start(Some(("alerts", "smtp-pa55word")));
    let receiver = receiver(server.port, true);
    let alert = sample_alert();
    let delivery = notify::send(
        &crate::support::local_egress(),
        &receiver,
        &alert,
        deadline(),
    )
    .await
    .unwrap();
    assert_eq!(delivery.status, 250);
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    let (message, meta) = &messages[0];
    assert_eq!(meta["authenticated"], true);
    assert_eq!(meta["mail_from"], "alerts@contoso.com");
    assert_eq!(
        meta["rcpt_tos"],
        serde_json::json!(["oncall@contoso.com", "ops@contoso.com"])
    );
    let head = message.split("\r\n\r\n").next().unwrap();
    assert!(
        head.contains("From: batch-triage <alerts@contoso.com>"),
        "{head}"
    );
    assert!(
        head.contains("To: oncall@contoso.com, Ops <ops@contoso.com>"),
        "{head}"
    );
    assert!(
        head.contains("Subject: [ERROR] task.exit_code: job genomics (4,812 tasks)"),
        "{head}"
    );
    assert!(
        head.contains(&format!(
            "Message-ID: <{}@batch-triage>",
            alert.idempotency_key()
        )),
        "{head}"
    );
    assert!(head.contains("Date: "), "{head}");
    assert!(head.contains("MIME-Version: 1.0"), "{head}");
    assert!(head.contains("multipart/alternative"), "{head}");
    assert!(
        !head.contains("In-Reply-To"),
        "a first notice starts the thread"
    );
    let text = part_text(message, "text/plain");
    let html = part_text(message, "text/html");
    for fact in [
        "genomics",
        "t-17",
        "task.exit_code",
        "137",
        "4,812 tasks, same cause",
        "oom-critical",
        "Killed",
        "stdout.txt",
        "portal.azure.com",
    ] {
        assert!(text.contains(fact), "text lacks {fact}");
        assert!(html.contains(fact), "html lacks {fact}");
    }
    assert!(text.contains("MemoryError <&> \"q\""));
    assert!(
        html.contains("MemoryError &lt;&amp;&gt; &quot;q&quot;"),
        "HTML is escaped"
    );
    assert!(!html.contains("<&>"));
    for secret in ["SASSECRETSIG123", "LINKSECRET", "smtp-pa55word"] {
        assert!(!message.contains(secret), "mail leaks {secret}");
    }
}

#[tokio::test]
async fn repeats_thread_under_the_first_notice() {
    let server = SmtpServer::start(None);
    let mut alert = sample_alert();
    alert.state = AlertState::Resolved;
    alert.sequence = 3;
    notify::send(
        &crate::support::local_egress(),
        &receiver(server.port, false),
        &alert,
        deadline(),
    )
    .await
    .unwrap();
    let (message, _) = server.messages().pop().unwrap();
    let head = message.split("\r\n\r\n").next().unwrap().to_owned();
    let first = format!("<{}@batch-triage>", sample_alert().idempotency_key());
    assert!(head.contains(&format!("In-Reply-To: {first}")), "{head}");
    assert!(head.contains(&format!("References: {first}")), "{head}");
    assert!(head.contains("Subject: [RESOLVED]"), "{head}");
    assert_ne!(alert.idempotency_key(), sample_alert().idempotency_key());
}

#[tokio::test]
async fn wrong_password_is_a_final_error_and_plain_smtp_is_loopback_only() {
    let server = SmtpServer::start(Some(("alerts", "another-password")));
    let error = notify::send(
        &crate::support::local_egress(),
        &receiver(server.port, true),
        &sample_alert(),
        deadline(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            NotifyError::Smtp {
                transient: false,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!error.to_string().contains("smtp-pa55word"));
    assert!(server.messages().is_empty());

    let mut remote = receiver(server.port, false);
    if let Target::Smtp(smtp) = &mut remote.target {
        smtp.host = "mail.example.com".into();
    }
    let error = notify::send(
        &crate::support::local_egress(),
        &remote,
        &sample_alert(),
        deadline(),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, NotifyError::Config(_)), "{error:?}");
}

#[tokio::test]
async fn connection_refused_is_retryable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let error = notify::send(
        &crate::support::local_egress(),
        &receiver(port, false),
        &sample_alert(),
        notify::Deadline::after(std::time::Duration::from_secs(3)),
    )
    .await
    .unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
}

fn tls_receiver(port: u16, tls: &str, ca_file: &std::path::Path) -> notify::Receiver {
    let toml = format!(
        "name = \"mail\"\nkind = \"email\"\nhost = \"localhost\"\nport = {port}\ntls = \"{tls}\"\n\
         from = \"batch-triage <alerts@contoso.com>\"\nto = [\"oncall@contoso.com\"]\n\
         ca_file = \"{}\"\nusername_env = \"SMTP_USER\"\npassword_env = \"SMTP_PASS\"\n",
        ca_file.display()
    );
    let config: ReceiverConfig = serde_json::from_value(toml_to_json(&toml)).unwrap();
    config
        .resolve(|var| match var {
            "SMTP_USER" => Some("alerts".into()),
            "SMTP_PASS" => Some("smtp-pa55word".into()),
            _ => None,
        })
        .unwrap()
}

#[tokio::test]
async fn starttls_and_implicit_tls_with_a_company_ca() {
    let pki = TestPki::new("DNS:localhost,IP:127.0.0.1");
    for mode in ["starttls", "implicit"] {
        let server = SmtpServer::start_with(
            Some(("alerts", "smtp-pa55word")),
            Some((mode, &pki.path("server.pem"), &pki.path("server.key"))),
        );
        let receiver = tls_receiver(server.port, mode, &pki.path("ca.pem"));
        let Target::Smtp(target) = &receiver.target else {
            panic!("an SMTP target")
        };
        notify::email::send_smtp(
            &crate::support::local_egress(),
            target,
            &sample_alert(),
            deadline(),
        )
        .await
        .unwrap_or_else(|e| panic!("{mode}: {e}"));
        let messages = server.messages();
        assert_eq!(messages.len(), 1, "{mode}: one message");
        assert_eq!(
            messages[0].1["authenticated"], true,
            "{mode}: AUTH happened inside TLS"
        );
    }
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_refused() {
    let pki = TestPki::new("DNS:localhost,IP:127.0.0.1");
    let other = TestPki::new("DNS:localhost,IP:127.0.0.1");
    let server = SmtpServer::start_with(
        None,
        Some(("starttls", &pki.path("server.pem"), &pki.path("server.key"))),
    );
    // Trusting another CA: the server's certificate must not verify.
    let receiver = tls_receiver(server.port, "starttls", &other.path("ca.pem"));
    let Target::Smtp(target) = &receiver.target else {
        panic!("an SMTP target")
    };
    let error = notify::email::send_smtp(
        &crate::support::local_egress(),
        target,
        &sample_alert(),
        deadline(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            NotifyError::Smtp { .. } | NotifyError::DeadlineExceeded { .. }
        ),
        "{error}"
    );
    assert!(
        server.messages().is_empty(),
        "nothing was sent over an unverified connection"
    );
}

/// A listening socket on loopback that counts the connections it accepts (and drops them): the
/// proof that a refused destination was never connected to.
struct Tripwire {
    port: u16,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Tripwire {
    async fn start(ip: &str) -> Self {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(socket);
            }
        });
        Self { port, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// An email receiver at `host`, as the policy would say it.
fn receiver_at(host: &str, port: u16, tls: &str) -> ReceiverConfig {
    let toml = format!(
        "name = \"mail\"\nkind = \"email\"\nhost = {host:?}\nport = {port}\ntls = \"{tls}\"\n\
         from = \"a@contoso.com\"\nto = [\"b@contoso.com\"]\n"
    );
    serde_json::from_value(toml_to_json(&toml)).unwrap()
}

#[tokio::test]
async fn refused_smtp_hosts_are_never_connected_to() {
    let v4 = Tripwire::start("127.0.0.1").await;
    let v6 = Tripwire::start("::1").await;
    // The default allowlist: no loopback opt-in, no IP literal listed.
    let allowlist = notify::Allowlist::default();
    let egress = notify::Egress::new(allowlist.clone(), quick_policy()).unwrap();
    let cases = [
        ("127.0.0.1", v4.port, "loopback"),
        ("127.1", v4.port, "loopback"),
        ("2130706433", v4.port, "loopback"),
        ("localhost", v4.port, "not on the allowlist"),
        ("[::1]", v6.port, "loopback"),
        ("::1", v6.port, "loopback"),
        ("169.254.169.254", 25, "private, link-local or reserved"),
        ("10.1.2.3", 25, "private, link-local or reserved"),
        ("[fd00::1]", 25, "private, link-local or reserved"),
        // A public address that is not on the allowlist is refused like a name would be.
        ("20.50.2.1", 25, "IP address is not on the allowlist"),
        ("smtp.evil.example", 25, "not on the allowlist"),
    ];
    for (host, port, reason) in cases {
        for tls in ["starttls", "implicit"] {
            let config = receiver_at(host, port, tls);
            // Refused when the configuration is checked (`policy check`, a handler's start)…
            let error = config.check_destination(&allowlist).unwrap_err();
            assert!(
                matches!(&error, NotifyError::HostNotAllowed { .. })
                    && error.to_string().contains(reason),
                "{host} ({tls}): {error}"
            );
            // …and when sending, before any connection.
            let receiver = config.resolve(|_| None).unwrap();
            let error = notify::send(&egress, &receiver, &sample_alert(), deadline())
                .await
                .unwrap_err();
            assert!(
                matches!(&error, NotifyError::HostNotAllowed { .. }),
                "{host} ({tls}): {error:?}"
            );
            assert!(!error.is_retryable(), "{host}: a refusal is final");
        }
    }
    // Plain SMTP to loopback still needs the opt-in.
    let receiver = receiver_at("127.0.0.1", v4.port, "none")
        .resolve(|_| None)
        .unwrap();
    let error = notify::send(&egress, &receiver, &sample_alert(), deadline())
        .await
        .unwrap_err();
    assert!(
        matches!(error, NotifyError::HostNotAllowed { .. }),
        "{error:?}"
    );
    assert_eq!(v4.accepted(), 0, "no connection to 127.0.0.1");
    assert_eq!(v6.accepted(), 0, "no connection to [::1]");

    // The tripwire does see a connection that is allowed (the loopback opt-in): the zero
    // above is a refusal, not a blind listener.
    let allowed = notify::Egress::new(
        notify::Allowlist::default().allow_loopback(),
        notify::RetryPolicy::none(),
    )
    .unwrap();
    for (host, wire) in [("127.0.0.1", &v4), ("[::1]", &v6)] {
        let receiver = receiver_at(host, wire.port, "none")
            .resolve(|_| None)
            .unwrap();
        let error = notify::send(&allowed, &receiver, &sample_alert(), deadline())
            .await
            .unwrap_err();
        assert!(
            matches!(error, NotifyError::Smtp { .. }),
            "{host}: the tripwire speaks no SMTP: {error:?}"
        );
        assert_eq!(
            wire.accepted(),
            1,
            "{host}: one connection, to the vetted address"
        );
    }
}

#[tokio::test]
async fn a_listed_smtp_host_is_reached_at_its_vetted_address() {
    // `localhost` on the allowlist and loopback allowed: the name resolves to loopback
    // addresses, and the session reaches the real server through them.
    let server = SmtpServer::start(None);
    let config = receiver_at("localhost", server.port, "none");
    let allowlist = notify::Allowlist::new(["localhost"]).allow_loopback();
    config.check_destination(&allowlist).unwrap();
    let egress = notify::Egress::new(allowlist, quick_policy()).unwrap();
    let receiver = config.resolve(|_| None).unwrap();
    let delivery = notify::send(&egress, &receiver, &sample_alert(), deadline())
        .await
        .unwrap();
    assert_eq!(delivery.status, 250);
    assert_eq!(server.messages().len(), 1);
}
