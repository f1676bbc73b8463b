//! Secrets never leave the process: the Functions handler binary and the CLI run with
//! recognisable secrets (a Batch account key, a storage key and a SAS, a Teams Workflows URL whose
//! path is the secret, a webhook HMAC secret, an SMTP password), on happy and error paths (wrong
//! key, unreachable receiver, bad store). Every stdout/stderr line, invocation response, card,
//! webhook body and header, and every object in the store (manifests, diagnoses, outbox entries,
//! audit and grouping records) is scanned for each secret and its percent- and base64-encoded
//! forms, and for any `sig=` that is not redacted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use artifact_store::{ArtifactStore, DEVSTORE_ACCOUNT, DEVSTORE_KEY};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use base64::Engine as _;
use batch_emulator::{Scenario, WELL_KNOWN_ACCOUNT_KEY, WELL_KNOWN_ACCOUNT_NAME};
use serde_json::json;

use crate::harness;

const HOOK_SECRET: &str = "whsec-FAKE-hmac-7d1f0c9e2b44";
const SMTP_PASSWORD: &str = "smtp-FAKE-pass-51c2e8a4f0";
const TEAMS_PATH_SECRET: &str = "FAKEteamsPATH0a9b8c7d6e";
const TEAMS_SIG: &str = "FAKEteamsSIG3e4f5a6b7c8d";
const FAKE_SAS_SIG: &str = "FAKEsasSIGNATURE+q1w2e3r4=";
/// A wrong Batch key (valid base64, so the request is signed and refused with 403).
const WRONG_BATCH_KEY: &str = "RkFLRS1iYXRjaC1rZXktOWMzYjJhMWQwZTlmOGE3YjZjNWQ0ZTNmMmExYjBjOWQ=";
const SERVE_KEY: &str = "serve-FAKE-key-88e1d2c3b4a5";
/// A PagerDuty routing key: 32 characters, like a real one.
const PAGERDUTY_KEY: &str = "FAKEpagerdutyROUTING0key00000000";
const SLACK_PATH_SECRET: &str = "FAKEslackHOOK9z8y7x6w";

/// A secret and the forms it could leak in.
fn forms(secret: &str) -> Vec<String> {
    let percent: String = secret
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let base64 = base64::engine::general_purpose::STANDARD.encode(secret);
    let mut forms = vec![secret.to_owned(), percent.clone(), percent.to_lowercase()];
    // A base64 form long enough not to occur by chance.
    if base64.len() >= 16 {
        forms.push(base64.trim_end_matches('=').to_owned());
    }
    forms.sort();
    forms.dedup();
    forms
}

/// What to look for: each secret by name.
struct Scanner {
    secrets: Vec<(&'static str, String)>,
    leaks: Mutex<Vec<String>>,
}

impl Scanner {
    fn new(secrets: Vec<(&'static str, String)>) -> Self {
        Self {
            secrets,
            leaks: Mutex::default(),
        }
    }

    /// Scans `text` (what `origin` produced). `generic` also flags any unredacted `sig=`, for
    /// everything but copies of task logs, which are the user's own bytes.
    fn scan(&self, origin: &str, text: &str, generic: bool) {
        let mut leaks = self.leaks.lock().unwrap();
        for (name, secret) in &self.secrets {
            for form in forms(secret) {
                if text.contains(&form) {
                    leaks.push(format!("{origin}: contains the {name} ({form})"));
                }
            }
        }
        if generic {
            let lower = text.to_ascii_lowercase();
            for (i, _) in lower.match_indices("sig=") {
                // A SAS signature is a query parameter (`?sig=`, `&sig=`) or stands alone;
                // `…sig==` inside base64 (a Content-MD5, an id) is not one.
                let starts_a_parameter = i == 0
                    || matches!(
                        text.as_bytes()[i - 1],
                        b'?' | b'&'
                            | b' '
                            | b'"'
                            | b'\''
                            | b'\n'
                            | b'\t'
                            | b';'
                            | b','
                            | b'('
                            | b'{'
                    );
                if !starts_a_parameter {
                    continue;
                }
                let value: String = text[i + 4..]
                    .chars()
                    .take_while(|c| !matches!(c, '&' | '"' | '\'' | ' ' | '\n' | '<' | ')' | ','))
                    .collect();
                let redacted = value.is_empty()
                    || value.starts_with("[REDACTED]")
                    // azure_core's HTTP logging redacts query values this way.
                    || value.starts_with("REDACTED")
                    || value.starts_with("%5BREDACTED%5D")
                    || value.starts_with("…")
                    || value.starts_with("...");
                if !redacted {
                    // The fake secrets are test values: show where, so a leak can be traced.
                    let context: String = text[i.saturating_sub(80)..].chars().take(120).collect();
                    leaks.push(format!(
                        "{origin}: an unredacted sig={value} in …{context}…"
                    ));
                }
            }
        }
    }

    fn scan_output(&self, origin: &str, output: &Output) {
        self.scan(
            &format!("{origin} stdout"),
            &String::from_utf8_lossy(&output.stdout),
            true,
        );
        self.scan(
            &format!("{origin} stderr"),
            &String::from_utf8_lossy(&output.stderr),
            true,
        );
    }

    /// Every object of `store`; task log copies (`*.txt`, `wd/…`) only for the named secrets.
    async fn scan_store(&self, origin: &str, store: &dyn ArtifactStore) -> usize {
        let objects = store.list("").await.unwrap();
        for object in &objects {
            let bytes = store.get(&object.key).await.unwrap().unwrap().bytes;
            let key = object.key.as_str();
            let is_log_copy = key.ends_with(".txt") || key.contains("/wd/");
            self.scan(
                &format!("{origin} object {key}"),
                &String::from_utf8_lossy(&bytes),
                !is_log_copy,
            );
        }
        objects.len()
    }

    fn assert_clean(&self) {
        let leaks = self.leaks.lock().unwrap();
        assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    }
}

/// A receiver for every path: records path, headers and body; answers 202.
#[derive(Clone, Default)]
struct Sink {
    requests: Arc<Mutex<Vec<(String, String, String)>>>,
}

async fn sink() -> (Sink, String) {
    let sink = Sink::default();
    async fn record(State(sink): State<Sink>, request: Request) -> StatusCode {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let headers = parts
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
            .collect::<Vec<_>>()
            .join("\n");
        sink.requests.lock().unwrap().push((
            parts.uri.to_string(),
            headers,
            String::from_utf8_lossy(&body).into_owned(),
        ));
        StatusCode::ACCEPTED
    }
    let app = axum::Router::new()
        .fallback(record)
        .with_state(sink.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (sink, url)
}

impl Sink {
    /// Scans what arrived (not the request path: the destination is where the secret belongs).
    fn scan(&self, origin: &str, scanner: &Scanner) -> usize {
        let requests = self.requests.lock().unwrap();
        for (path, headers, body) in requests.iter() {
            scanner.scan(&format!("{origin} {path} headers"), headers, true);
            scanner.scan(&format!("{origin} {path} body"), body, true);
        }
        requests.len()
    }
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn policy_file(dir: &Path, smtp_port: u16, pagerduty_url: &str) -> PathBuf {
    let path = dir.join("policy.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[grouping]
group_wait = "0s"

[[receivers]]
name = "teams"
kind = "teams"
url_env = "TEAMS_URL"

[[receivers]]
name = "hook"
kind = "webhook"
url_env = "HOOK_URL"
secret_env = "HOOK_SECRET"

[[receivers]]
name = "mail"
kind = "email"
host = "127.0.0.1"
port = {smtp_port}
tls = "starttls"
username_env = "SMTP_USERNAME"
password_env = "SMTP_PASSWORD"
from = "batch-triage <alerts@example.com>"
to = ["oncall@example.com"]

[[receivers]]
name = "pd"
kind = "pagerduty"
routing_key_env = "PAGERDUTY_ROUTING_KEY"
events_url = "{pagerduty_url}/v2/enqueue"

[[receivers]]
name = "slack"
kind = "slack"
url_env = "SLACK_URL"

# The SMTP server is down: each mail is retried for seconds, so only one failure is mailed.
[[rules]]
name = "expired-sas"
match = {{ class = "task.resource_files" }}
receivers = ["teams", "hook", "mail"]

[[rules]]
name = "everything"
match = {{ class = "*" }}
receivers = ["teams", "hook"]
"#
        ),
    )
    .unwrap();
    path
}

struct Setup {
    batch: harness::Batch,
    azurite: artifact_store::testing::Azurite,
    teams: Sink,
    hook: Sink,
    /// PagerDuty's stand-in: not scanned, since the routing key belongs in what it receives.
    pagerduty: Sink,
    env: BTreeMap<&'static str, String>,
    scanner: Scanner,
    dir: tempfile::TempDir,
    policy: PathBuf,
    sas: String,
}

async fn setup() -> Setup {
    setup_with(Scenario::builtin()).await
}

async fn setup_with(scenario: Scenario) -> Setup {
    let batch = harness::batch(scenario).await;
    let azurite = artifact_store::testing::Azurite::start();
    azurite.store("logs").await;
    let (teams, teams_url) = sink().await;
    let teams_base = teams_url.clone();
    let (hook, hook_url) = sink().await;
    let (pagerduty, pagerduty_url) = sink().await;
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(dir.path(), closed_port(), &pagerduty_url);
    let sas = artifact_store::account_sas(
        DEVSTORE_ACCOUNT,
        DEVSTORE_KEY,
        false,
        Duration::from_secs(3600),
    )
    .unwrap();
    let sas_sig = sas
        .split('&')
        .find_map(|kv| kv.strip_prefix("sig="))
        .unwrap()
        .to_owned();
    let teams_url = format!(
        "{teams_url}/workflows/{TEAMS_PATH_SECRET}/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={TEAMS_SIG}"
    );
    let env: BTreeMap<&'static str, String> = [
        ("AZURE_BATCH_ENDPOINT", batch.url.clone()),
        ("AZURE_BATCH_ACCOUNT", WELL_KNOWN_ACCOUNT_NAME.to_owned()),
        ("AZURE_BATCH_ACCESS_KEY", WELL_KNOWN_ACCOUNT_KEY.to_owned()),
        (
            "BATCH_TRIAGE_STORE",
            format!("{}/logs?{sas}", azurite.blob_endpoint()),
        ),
        ("BATCH_TRIAGE_POLICY", policy.display().to_string()),
        ("BATCH_TRIAGE_ALLOW_LOOPBACK", "true".to_owned()),
        ("BATCH_TRIAGE_MAX_FILE_MIB", "16".to_owned()),
        ("BATCH_TRIAGE_WEBHOOK_KEY", SERVE_KEY.to_owned()),
        ("TEAMS_URL", teams_url),
        ("HOOK_URL", format!("{hook_url}/hook")),
        ("HOOK_SECRET", HOOK_SECRET.to_owned()),
        ("SMTP_USERNAME", "alerts@example.com".to_owned()),
        ("SMTP_PASSWORD", SMTP_PASSWORD.to_owned()),
        ("PAGERDUTY_ROUTING_KEY", PAGERDUTY_KEY.to_owned()),
        (
            "SLACK_URL",
            format!("{teams_base}/services/T0/B0/{SLACK_PATH_SECRET}"),
        ),
    ]
    .into();
    let scanner = Scanner::new(vec![
        ("Batch account key", WELL_KNOWN_ACCOUNT_KEY.to_owned()),
        ("wrong Batch key", WRONG_BATCH_KEY.to_owned()),
        ("storage account key", DEVSTORE_KEY.to_owned()),
        ("store SAS signature", sas_sig),
        ("fake SAS signature", FAKE_SAS_SIG.to_owned()),
        ("Teams URL path", TEAMS_PATH_SECRET.to_owned()),
        ("Teams URL sig", TEAMS_SIG.to_owned()),
        ("webhook HMAC secret", HOOK_SECRET.to_owned()),
        ("SMTP password", SMTP_PASSWORD.to_owned()),
        ("serve key", SERVE_KEY.to_owned()),
        ("PagerDuty routing key", PAGERDUTY_KEY.to_owned()),
        ("Slack URL path", SLACK_PATH_SECRET.to_owned()),
    ]);
    Setup {
        batch,
        azurite,
        teams,
        hook,
        pagerduty,
        env,
        scanner,
        dir,
        policy,
        sas,
    }
}

impl Setup {
    /// The CLI with the setup's environment (and `overrides`, where a value of "" removes it).
    fn cli(&self, args: &[&str], overrides: &[(&str, &str)]) -> Output {
        self.cli_within(args, overrides, Duration::from_secs(120))
    }

    /// [`Setup::cli`], killed after `limit` (what it printed until then is returned).
    fn cli_within(&self, args: &[&str], overrides: &[(&str, &str)], limit: Duration) -> Output {
        let mut command = Command::new(harness::binary("batch-triage"));
        command
            .env_clear()
            .env("NO_COLOR", "1")
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in &self.env {
            command.env(k, v);
        }
        for (k, v) in overrides {
            if v.is_empty() {
                command.env_remove(k);
            } else {
                command.env(k, v);
            }
        }
        let out = self.dir.path().join("cli.stdout");
        let err = self.dir.path().join("cli.stderr");
        let mut child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .current_dir(self.dir.path())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Output {
            status,
            stdout: std::fs::read(&out).unwrap(),
            stderr: std::fs::read(&err).unwrap(),
        }
    }

    /// `batch-triage serve` on a free port: a request with a wrong key, then a records batch, a
    /// diagnosis and a sweep with the right one; then stopped.
    async fn serve(&self) -> Served {
        self.serve_with(&[
            (
                "/api/records",
                harness::fail_record("ingest", "blob-denied"),
            ),
            (
                "/api/diagnose",
                json!({"jobId": "ingest", "taskId": "blob-denied"}).to_string(),
            ),
            ("/api/sweep", String::new()),
        ])
        .await
    }

    /// `batch-triage serve` on a free port: a request with a wrong key, then `requests` (path,
    /// body) with the right one; then stopped.
    async fn serve_with(&self, requests: &[(&str, String)]) -> Served {
        let out = self.dir.path().join("serve.stdout");
        let err = self.dir.path().join("serve.stderr");
        let mut command = Command::new(harness::binary("batch-triage"));
        command.env_clear();
        for (k, v) in &self.env {
            command.env(k, v);
        }
        // Debug logging, as an operator chasing a problem turns it on: still no secret.
        command.env("RUST_LOG", "debug");
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .current_dir(self.dir.path())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        let base = loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if let Some(url) = text
                .lines()
                .next()
                .and_then(|l| l.split("listening on ").nth(1))
            {
                break url.trim().to_owned();
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "serve exited ({status}): {}",
                    std::fs::read_to_string(&err).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "serve never listened"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let client = reqwest::Client::new();
        let mut answers = Vec::new();
        let wrong = client
            .post(format!("{base}/api/events?key=not-the-key"))
            .body(harness::fail_record("etl", "oom"))
            .send()
            .await
            .unwrap();
        answers.push((wrong.status().as_u16(), wrong.text().await.unwrap()));
        assert!(answers[0].0 == 401 || answers[0].0 == 403, "{answers:?}");
        for (path, body) in requests {
            let response = client
                .post(format!("{base}{path}"))
                .header("x-batch-triage-key", SERVE_KEY)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            answers.push((response.status().as_u16(), response.text().await.unwrap()));
        }
        let _ = child.kill();
        let status = child.wait().unwrap();
        Served {
            answers,
            output: Output {
                status,
                stdout: std::fs::read(&out).unwrap(),
                stderr: std::fs::read(&err).unwrap(),
            },
        }
    }

    fn fake_sas(&self) -> String {
        format!(
            "sv=2022-11-02&ss=b&srt=sco&sp=rwdlacup&se=2030-01-01T00%3A00%3A00Z&spr=https%2Chttp&sig={}",
            FAKE_SAS_SIG.replace('+', "%2B").replace('=', "%3D")
        )
    }
}

struct Served {
    answers: Vec<(u16, String)>,
    output: Output,
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_never_prints_or_stores_a_secret() {
    let s = setup().await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let payloads = [
        root.join("shared/diagnosis/test_data/resource-blob-access-denied-sas.json"),
        root.join("examples/payloads/render-tasks.json"),
    ];
    let mut runs: Vec<(String, Output, Option<bool>)> = Vec::new();
    let mut last = std::time::Instant::now();
    let mut run = |name: &str, output: Output, success: Option<bool>| {
        eprintln!("{name}: {:.1} s", last.elapsed().as_secs_f64());
        last = std::time::Instant::now();
        runs.push((name.to_owned(), output, success));
    };

    run(
        "diagnose",
        s.cli(
            &[
                "diagnose",
                "--output",
                "json",
                payloads[0].to_str().unwrap(),
                payloads[1].to_str().unwrap(),
            ],
            &[],
        ),
        Some(true),
    );
    let connection = format!(
        "DefaultEndpointsProtocol=http;AccountName={DEVSTORE_ACCOUNT};AccountKey={DEVSTORE_KEY};BlobEndpoint={};Container=cli",
        s.azurite.blob_endpoint()
    );
    run(
        "preserve to a connection string",
        s.cli(
            &[
                "preserve",
                "--job",
                "ingest",
                "--to-blob",
                &connection,
                "--output",
                "json",
            ],
            &[],
        ),
        Some(true),
    );
    run(
        "preserve to a SAS URL",
        s.cli(
            &[
                "preserve",
                "--job",
                "etl",
                "--task",
                "oom",
                "--to-blob",
                &format!("{}/logs?{}", s.azurite.blob_endpoint(), s.sas),
            ],
            &[],
        ),
        Some(true),
    );
    run(
        "preserve with a wrong Batch key",
        s.cli(
            &["preserve", "--job", "etl", "--task", "oom", "--to", "out"],
            &[("AZURE_BATCH_ACCESS_KEY", WRONG_BATCH_KEY)],
        ),
        Some(false),
    );
    run(
        "preserve to a store that refuses the SAS",
        s.cli(
            &[
                "preserve",
                "--job",
                "etl",
                "--task",
                "oom",
                "--to-blob",
                &format!("{}/logs?{}", s.azurite.blob_endpoint(), s.fake_sas()),
            ],
            &[],
        ),
        Some(false),
    );
    // Connection refused is retried until the copy's deadline (minutes): what it printed in the
    // first seconds is scanned.
    run(
        "preserve to an unreachable store",
        s.cli_within(
            &[
                "preserve",
                "--job",
                "etl",
                "--task",
                "oom",
                "--to-blob",
                &format!(
                    "http://127.0.0.1:{}/{DEVSTORE_ACCOUNT}/logs?{}",
                    closed_port(),
                    s.fake_sas()
                ),
            ],
            &[],
            Duration::from_secs(8),
        ),
        None,
    );
    run(
        "preserve to a malformed connection string",
        s.cli(
            &[
                "preserve",
                "--job",
                "etl",
                "--to-blob",
                &format!("AccountName=x;AccountKey={DEVSTORE_KEY};Container=cli;Oops"),
            ],
            &[],
        ),
        None,
    );
    run(
        "policy check",
        s.cli(&["policy", "check", s.policy.to_str().unwrap()], &[]),
        Some(true),
    );
    let inline = s.dir.path().join("inline.toml");
    std::fs::write(
        &inline,
        format!(
            "[[receivers]]\nname = \"t\"\nkind = \"teams\"\nurl = \"https://prod.westeurope.logic.azure.com/workflows/{TEAMS_PATH_SECRET}/triggers/manual/paths/invoke?sig={TEAMS_SIG}\"\n\n[[receivers]]\nname = \"m\"\nkind = \"email\"\nhost = \"smtp.example.com\"\npassword = \"{SMTP_PASSWORD}\"\nfrom = \"a@example.com\"\nto = [\"b@example.com\"]\n"
        ),
    )
    .unwrap();
    run(
        "policy check of inline secrets",
        s.cli(&["policy", "check", inline.to_str().unwrap()], &[]),
        Some(false),
    );
    for receiver in ["teams", "hook", "pd", "slack"] {
        run(
            &format!("notify --test {receiver}"),
            s.cli(&["notify", "--test", receiver, "--allow-loopback"], &[]),
            Some(true),
        );
    }
    // The routing key reaches PagerDuty, and only PagerDuty: a trigger, then the resolve that
    // closes the test incident.
    let events: Vec<serde_json::Value> = s
        .pagerduty
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|(_, _, body)| serde_json::from_str(body).unwrap())
        .collect();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["event_action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["trigger", "resolve"]);
    assert!(events.iter().all(|e| e["routing_key"] == PAGERDUTY_KEY));
    run(
        "notify --test mail (SMTP unreachable)",
        s.cli(
            &[
                "notify",
                "--test",
                "mail",
                "--allow-loopback",
                "--timeout",
                "5",
            ],
            &[],
        ),
        Some(false),
    );
    let unreachable_teams = s.env["TEAMS_URL"].replace(
        &s.env["TEAMS_URL"][7..s.env["TEAMS_URL"].find("/workflows").unwrap()],
        &format!("127.0.0.1:{}", closed_port()),
    );
    run(
        "notify --test teams (unreachable)",
        s.cli(
            &[
                "notify",
                "--test",
                "teams",
                "--allow-loopback",
                "--timeout",
                "5",
            ],
            &[("TEAMS_URL", &unreachable_teams)],
        ),
        Some(false),
    );
    run(
        "notify --test teams (host not allowed)",
        s.cli(
            &["notify", "--test", "teams", "--timeout", "5"],
            &[(
                "TEAMS_URL",
                &format!(
                    "https://prod-00.westeurope.logic.azure.com:443/workflows/{TEAMS_PATH_SECRET}/triggers/manual/paths/invoke?sig={TEAMS_SIG}"
                ),
            )],
        ),
        None,
    );

    run(
        "demo",
        s.cli(&["demo", "--out", "demo", "--output", "json"], &[]),
        Some(true),
    );
    let served = s.serve().await;
    for (i, (status, body)) in served.answers.iter().enumerate() {
        s.scanner
            .scan(&format!("serve answer {i} ({status})"), body, true);
    }
    run("serve", served.output, None);

    for (name, output, success) in &runs {
        if std::env::var_os("SECRETS_SHOW").is_some() {
            eprintln!(
                "== {name} ({})\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout)
                    .chars()
                    .take(600)
                    .collect::<String>(),
                String::from_utf8_lossy(&output.stderr)
                    .chars()
                    .take(600)
                    .collect::<String>()
            );
        }
        if let Some(success) = success {
            assert_eq!(
                output.status.success(),
                *success,
                "{name}: {}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        s.scanner.scan_output(name, output);
    }
    let teams = s.teams.scan("teams card", &s.scanner);
    let hooks = s.hook.scan("webhook", &s.scanner);
    assert!(teams >= 1 && hooks >= 1, "the test alerts arrived");
    let direct = s.azurite.store("cli").await;
    let objects = s.scanner.scan_store("store", &direct).await;
    let objects = objects
        + s.scanner
            .scan_store("store", &s.azurite.store("logs").await)
            .await;
    assert!(objects >= 4, "something was preserved ({objects} objects)");
    let demo_files = harness::files_under(&s.dir.path().join("demo"));
    assert!(
        demo_files.len() > 10,
        "the demo wrote its report, alerts and store"
    );
    for (path, bytes) in harness::files_under(s.dir.path()) {
        if path.extension().is_some_and(|e| e == "toml") {
            continue; // the policies written above, inline secrets on purpose
        }
        // Copies of task logs are the user's bytes, kept verbatim (a task may print a SAS).
        let log_copy = path.starts_with(s.dir.path().join("demo/store"))
            && path.extension().is_some_and(|e| e == "txt");
        s.scanner.scan(
            &path.display().to_string(),
            &String::from_utf8_lossy(&bytes),
            !log_copy,
        );
    }
    s.scanner.assert_clean();
}

/// The Functions handler as the host runs it, with every receiver kind: the Teams and webhook
/// receivers answer, the SMTP server is down (so the alert goes to the outbox in the store).
#[tokio::test(flavor = "multi_thread")]
async fn the_functions_handler_never_logs_answers_or_stores_a_secret() {
    let s = setup().await;
    let port = closed_port();
    let log = s.dir.path().join("functions.log");
    let spawn = |overrides: &[(&str, &str)], log: &Path| {
        let mut command = Command::new(harness::binary("batch-triage-functions"));
        command
            .env_clear()
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            // Debug logging, as an operator chasing a problem turns it on: still no secret.
            .env("RUST_LOG", "debug");
        for (k, v) in &s.env {
            command.env(k, v);
        }
        for (k, v) in overrides {
            command.env(k, v);
        }
        let file = std::fs::File::create(log).unwrap();
        command
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap()
    };
    let client = reqwest::Client::new();
    let ready = || async {
        for _ in 0..200 {
            if client
                .get(format!("http://127.0.0.1:{port}/"))
                .send()
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the handler never answered GET /");
    };
    let invoke = |function: &'static str, body: serde_json::Value| {
        let client = client.clone();
        async move {
            let response = client
                .post(format!("http://127.0.0.1:{port}/{function}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let records = |tasks: &[(&str, &str)]| {
        let bodies: Vec<String> = tasks
            .iter()
            .map(|(job, task)| harness::fail_record(job, task))
            .collect();
        json!({"Data": {"events": serde_json::to_string(&bodies).unwrap()}, "Metadata": {}})
    };

    let mut child = spawn(&[], &log);
    ready().await;
    let mut answers: Vec<(u16, String)> = Vec::new();
    let t0 = std::time::Instant::now();
    answers.push(
        invoke(
            "TaskEvents",
            records(&[
                ("etl", "oom"),
                ("ingest", "blob-denied"),
                ("ingest", "upload-fail"),
                ("etl", "big-log"),
            ]),
        )
        .await,
    );
    answers.push(
        invoke(
            "TaskEventGrid",
            json!({"Data": {"event": {"id": "1", "eventType": "x", "subject": "s", "eventTime": "2026-11-27T10:00:00Z", "dataVersion": "1",
                "data": {"accountUrl": format!("https://evil.example.com/?sig={FAKE_SAS_SIG}"), "jobId": "etl", "taskId": "oom"}}}}),
        )
        .await,
    );
    answers.push(
        invoke(
            "Diagnose",
            json!({"Data": {"req": {"Url": "http://x/api/Diagnose", "Method": "POST", "Query": {}, "Headers": {},
                "Body": "{\"jobId\":\"ingest\",\"taskId\":\"blob-denied\"}"}}}),
        )
        .await,
    );
    answers.push(
        invoke(
            "Sweep",
            json!({"Data": {"timer": {"IsPastDue": false}}, "Metadata": {}}),
        )
        .await,
    );
    eprintln!("sweep done: {:.1} s", t0.elapsed().as_secs_f64());
    answers.push(
        invoke(
            "TaskEvents",
            json!({"Data": {"events": ["{\"records\": ["]}}),
        )
        .await,
    );
    eprintln!("invocations: {:.1} s", t0.elapsed().as_secs_f64());
    let _ = child.kill();
    let _ = child.wait();

    // Error paths: a wrong Batch key, and a store that refuses its SAS.
    let fake_store = format!("{}/logs?{}", s.azurite.blob_endpoint(), s.fake_sas());
    for (i, overrides) in [
        vec![("AZURE_BATCH_ACCESS_KEY", WRONG_BATCH_KEY)],
        vec![("BATCH_TRIAGE_STORE", fake_store.as_str())],
    ]
    .iter()
    .enumerate()
    {
        let log = s.dir.path().join(format!("functions-error-{i}.log"));
        let mut child = spawn(overrides, &log);
        let started = std::time::Instant::now();
        let mut up = false;
        while started.elapsed() < Duration::from_secs(10) {
            if child.try_wait().unwrap().is_some() {
                break; // refused to start: its message is scanned below
            }
            if client
                .get(format!("http://127.0.0.1:{port}/"))
                .send()
                .await
                .is_ok()
            {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if up {
            answers.push(invoke("TaskEvents", records(&[("etl", "sigkill")])).await);
            answers.push(
                invoke(
                    "Sweep",
                    json!({"Data": {"timer": {"IsPastDue": false}}, "Metadata": {}}),
                )
                .await,
            );
        }
        let _ = child.kill();
        let _ = child.wait();
        s.scanner.scan(
            &format!("functions (error path {i}) output"),
            &std::fs::read_to_string(&log).unwrap(),
            true,
        );
    }

    s.scanner.scan(
        "functions output",
        &std::fs::read_to_string(&log).unwrap(),
        true,
    );
    for (i, (status, body)) in answers.iter().enumerate() {
        s.scanner
            .scan(&format!("invocation {i} answer ({status})"), body, true);
    }
    assert!(
        s.teams.scan("teams card", &s.scanner) >= 1,
        "Teams got the alerts"
    );
    assert!(
        s.hook.scan("webhook", &s.scanner) >= 1,
        "the webhook got the alerts"
    );
    let store = s.azurite.store("logs").await;
    let keys: Vec<String> = store
        .list("")
        .await
        .unwrap()
        .iter()
        .map(|o| o.key.as_str().to_owned())
        .collect();
    assert!(
        keys.iter().any(|k| k.starts_with("outbox/")),
        "the email alert is in the outbox: {keys:#?}"
    );
    assert!(
        keys.iter().any(|k| k.ends_with("manifest.json")),
        "{keys:#?}"
    );
    s.scanner.scan_store("store", &store).await;
    let _ = &s.batch;
    s.scanner.assert_clean();
}

/// The scan itself can fail: each form of a secret, and an unredacted `sig=`, is reported, and a
/// redacted one is not.
#[test]
fn the_scanner_finds_every_form_of_a_secret() {
    let secret = "p@ss+word/42==";
    for (text, leaks) in [
        (format!("connecting with {secret}"), 1),
        ("url?pw=p%40ss%2Bword%2F42%3D%3D".to_owned(), 1),
        ("url?pw=p%40ss%2bword%2f42%3d%3d".to_owned(), 1),
        (
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(secret)
            ),
            1,
        ),
        ("https://a/b?sv=1&sig=abcDEF123".to_owned(), 1),
        ("https://a/b?sv=1&sig=[REDACTED]&se=2".to_owned(), 0),
        ("sig=abcDEF123 alone".to_owned(), 1),
        // Base64 that happens to hold `sig=` (a block's Content-MD5) is not a signature.
        ("content-md5: 1B2M2Y8AsgTpgAmY7PhSig==".to_owned(), 0),
        ("nothing to see".to_owned(), 0),
    ] {
        let scanner = Scanner::new(vec![("password", secret.to_owned())]);
        scanner.scan("text", &text, true);
        assert_eq!(scanner.leaks.lock().unwrap().len(), leaks, "{text}");
    }
}

/// A task's stderr with every shape of secret a task prints, each with its own recognisable
/// fake value, and the values this process was configured with, printed bare.
fn leaky_stderr() -> (String, Vec<(&'static str, String)>) {
    let shapes: Vec<(&'static str, &str, String)> = vec![
        (
            "URL-encoded sig",
            "FAKEencodedSIG5a6b7c8d",
            "fetch https://proxy/get?u=https%3A%2F%2Fa.blob.core.windows.net%2Fc%2Fx%3Fsv%3D2022%26sig%3DFAKEencodedSIG5a6b7c8d%26se%3D1 failed".into(),
        ),
        ("JSON sig", "FAKEjsonSIG1f2e3d4c5b", r#"{"sig": "FAKEjsonSIG1f2e3d4c5b"}"#.into()),
        (
            "JSON accountKey",
            "FAKEjsonACCOUNTKEY9z8y7x",
            r#"config: {"accountName": "a", "accountKey": "FAKEjsonACCOUNTKEY9z8y7x"}"#.into(),
        ),
        ("spaced sig", "FAKEspacedSIG0q9w8e7r", "sig = FAKEspacedSIG0q9w8e7r".into()),
        (
            "basic auth URL",
            "FAKEbasicPASS3k4l5m6n",
            "pull https://deploy:FAKEbasicPASS3k4l5m6n@registry.example.com/v2/ denied".into(),
        ),
        (
            "postgres URL",
            "FAKEpgPASS7u8i9o0p",
            "connect postgres://app:FAKEpgPASS7u8i9o0p@db.internal:5432/app refused".into(),
        ),
        (
            "PEM private key",
            "FAKEpemBODYa1s2d3f4g5h6",
            "-----BEGIN RSA PRIVATE KEY-----\nFAKEpemBODYa1s2d3f4g5h6\n-----END RSA PRIVATE KEY-----".into(),
        ),
        ("api_key", "FAKEapiKEY2w3e4r5t6y", "api_key=FAKEapiKEY2w3e4r5t6y".into()),
        (
            "*_SECRET",
            "FAKEclientSECRET8i9o0p1a",
            "AZURE_CLIENT_SECRET=FAKEclientSECRET8i9o0p1a".into(),
        ),
        ("*_KEY", "FAKEstorageKEY4r5t6y7u", "STORAGE_KEY=FAKEstorageKEY4r5t6y7u".into()),
    ];
    let mut stderr = String::from("starting\n");
    let mut secrets = Vec::new();
    for (name, secret, line) in shapes {
        stderr.push_str(&line);
        stderr.push('\n');
        secrets.push((name, secret.to_owned()));
    }
    // The configured secrets, bare: a task that echoes its environment.
    stderr.push_str(&format!(
        "AZ_KEY {WELL_KNOWN_ACCOUNT_KEY}\nhook {HOOK_SECRET}\nmail {SMTP_PASSWORD}\n"
    ));
    stderr.push_str("/bin/bash: line 1:  4182 Killed  python3 train.py\n");
    (stderr, secrets)
}

/// The built-in scenario with etl/oom's stderr.txt replaced by `stderr`.
fn scenario_with_oom_stderr(stderr: &str) -> Scenario {
    let mut scenario = Scenario::builtin();
    let task = scenario
        .jobs
        .iter_mut()
        .filter(|j| j.job.get("id").and_then(|v| v.as_str()) == Some("etl"))
        .flat_map(|j| j.tasks.iter_mut())
        .find(|t| t.task.get("id").and_then(|v| v.as_str()) == Some("oom"))
        .expect("the built-in scenario has etl/oom");
    task.files.insert(
        "stderr.txt".to_owned(),
        batch_emulator::scenario::FileSpec::text(stderr),
    );
    scenario
}

/// A task that prints every shape of secret, and the configured secrets themselves, into its
/// stderr: none of them reaches the Teams card, the webhook body, the outbox (where the email
/// waits), a stored diagnosis or report, `serve`'s log, or `explain`'s and `diagnose`'s output.
/// Only the verbatim copies of the task's own logs keep them.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_a_task_prints_are_redacted_everywhere_they_leave() {
    let (stderr, shapes) = leaky_stderr();
    let s = setup_with(scenario_with_oom_stderr(&stderr)).await;
    let mut secrets = s.scanner.secrets.clone();
    secrets.extend(shapes);
    let scanner = Scanner::new(secrets);

    let mut outputs = Vec::new();
    for output in ["text", "json"] {
        let out = s.cli(
            &[
                "explain", "--job", "etl", "--task", "oom", "--output", output,
            ],
            &[],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(printed.contains("Killed"), "the tail is shown: {printed}");
        assert!(printed.contains("[REDACTED]"), "{printed}");
        outputs.push((format!("explain --output {output}"), out));
    }
    // `diagnose` of a task whose failure message carries the same text.
    let task = s.dir.path().join("leaky-task.json");
    std::fs::write(
        &task,
        json!({
            "id": "leaky", "url": "https://acct.westeurope.batch.azure.com/jobs/etl/tasks/leaky",
            "state": "completed",
            "executionInfo": {"exitCode": 1, "result": "failure", "retryCount": 0, "requeueCount": 0,
                "failureInfo": {"category": "usererror", "code": "FailureExitCode", "message": stderr,
                    "details": [{"name": "Message", "value": stderr}]}}
        })
        .to_string(),
    )
    .unwrap();
    for output in ["text", "json"] {
        let out = s.cli(
            &["diagnose", "--output", output, task.to_str().unwrap()],
            &[],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push((format!("diagnose --output {output}"), out));
    }
    let served = s
        .serve_with(&[("/api/records", harness::fail_record("etl", "oom"))])
        .await;
    for (i, (status, body)) in served.answers.iter().enumerate() {
        scanner.scan(&format!("serve answer {i} ({status})"), body, true);
    }
    outputs.push(("serve".to_owned(), served.output));
    for (name, output) in &outputs {
        scanner.scan_output(name, output);
    }
    assert!(
        s.teams.scan("teams card", &scanner) >= 1,
        "the card arrived"
    );
    assert!(s.hook.scan("webhook", &scanner) >= 1, "the webhook arrived");
    let card = s.teams.requests.lock().unwrap()[0].2.clone();
    assert!(card.contains("Killed"), "the card shows the tail: {card}");
    // Everything in the store but the verbatim copies of the task's logs: diagnoses,
    // manifests, the outbox (the email waiting for its SMTP server), groups, audit.
    let store = s.azurite.store("logs").await;
    let mut scanned = 0;
    let mut copies = 0;
    for object in store.list("").await.unwrap() {
        let key = object.key.as_str();
        let bytes = store.get(&object.key).await.unwrap().unwrap().bytes;
        let text = String::from_utf8_lossy(&bytes);
        if key.ends_with(".txt") || key.contains("/wd/") {
            copies += usize::from(text.contains("FAKEjsonSIG1f2e3d4c5b"));
            continue;
        }
        scanner.scan(&format!("store object {key}"), &text, true);
        scanned += 1;
    }
    assert!(
        scanned >= 2,
        "a diagnosis and a manifest were stored ({scanned})"
    );
    assert_eq!(copies, 1, "the preserved stderr.txt is a verbatim copy");
    scanner.assert_clean();
}
