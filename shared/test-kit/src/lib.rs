//! What the end-to-end tests of the handlers and the pipeline share, so each test file keeps only
//! what it is about: the Batch emulator served on a loopback port, a webhook receiver that records
//! what it is sent, a temporary store and policy, and the settings a handler binary reads
//! (README, "App settings"), child processes killed when dropped ([`process`]), and a Batch
//! endpoint gone wrong that serves hostile ids ([`hostile_batch`]). A dev-dependency only: nothing here is fit for production (it
//! panics on setup failures, which is what a test wants).

pub mod flaky_store;
pub mod hostile_batch;
pub mod hostile_files;
pub mod process;

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use batch_emulator::{Emulator, WELL_KNOWN_ACCOUNT_KEY, WELL_KNOWN_ACCOUNT_NAME};
use serde_json::Value;

pub use hostile_batch::{HostileBatch, HostileJob, HostilePool};
pub use process::{KillOnDrop, spawn_announced, start_emulator};

/// The webhook secret the policy's receiver signs with.
pub const HOOK_SECRET: &str = "hook-secret-value";

/// A policy that sends every failure, ungrouped, to the `hook` receiver (`HOOK_URL`,
/// `HOOK_SECRET`).
pub const HOOK_POLICY: &str = r#"
[grouping]
group_wait = "0s"

[[receivers]]
name = "hook"
kind = "webhook"
url_env = "HOOK_URL"
secret_env = "HOOK_SECRET"

[[rules]]
name = "everything"
match = { class = "*" }
receivers = ["hook"]
"#;

/// Serves `emulator` on a free loopback port for the rest of the test; returns its base URL.
pub async fn serve_emulator(emulator: Emulator) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port for the emulator");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    tokio::spawn(batch_emulator::serve(
        listener,
        emulator,
        std::future::pending(),
    ));
    url
}

/// A loopback port free at the time of the call, for a child process to listen on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A webhook receiver on loopback that records every body POSTed to `/hook` and answers 204.
#[derive(Clone)]
pub struct Recorder {
    /// Where to POST: `http://127.0.0.1:{port}/hook`.
    pub url: String,
    received: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    /// Starts the receiver for the rest of the test.
    pub async fn start() -> Self {
        let received: Arc<Mutex<Vec<String>>> = Arc::default();
        let app = axum::Router::new()
            .route(
                "/hook",
                post(
                    |State(r): State<Arc<Mutex<Vec<String>>>>, body: String| async move {
                        r.lock().expect("recorder lock").push(body);
                        StatusCode::NO_CONTENT
                    },
                ),
            )
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the receiver");
        let url = format!(
            "http://{}/hook",
            listener.local_addr().expect("its address")
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, received }
    }

    /// The bodies received so far, oldest first.
    pub fn bodies(&self) -> Vec<String> {
        self.received.lock().expect("recorder lock").clone()
    }

    /// The bodies received so far, as JSON (the alerts of a webhook receiver).
    pub fn alerts(&self) -> Vec<Value> {
        self.bodies()
            .iter()
            .map(|b| serde_json::from_str(b).expect("a JSON alert"))
            .collect()
    }

    /// How many bodies arrived.
    pub fn len(&self) -> usize {
        self.received.lock().expect("recorder lock").len()
    }

    /// Whether nothing arrived.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything a handler under test talks to: the emulator (account devbatch1), a recording
/// webhook receiver, an empty local-directory store and [`HOOK_POLICY`] in a file.
pub struct Backends {
    /// The emulator, for inspecting requests and injecting faults.
    pub emulator: Emulator,
    /// The emulator's base URL.
    pub batch_url: String,
    /// The `hook` receiver.
    pub hook: Recorder,
    /// The store directory.
    pub store: tempfile::TempDir,
    /// The policy file.
    pub policy: tempfile::NamedTempFile,
    /// A second account on an emulator of its own ([`Backends::start_two_accounts`]): the
    /// settings then list both accounts with the numbered settings.
    pub second: Option<SecondAccount>,
}

/// The second account of [`Backends::start_two_accounts`]: [`SECOND_ACCOUNT_NAME`] with
/// [`SECOND_ACCOUNT_KEY`], the built-in scenario on an emulator (and a port) of its own.
pub struct SecondAccount {
    /// Its emulator.
    pub emulator: Emulator,
    /// Its base URL.
    pub batch_url: String,
}

/// The second account's name.
pub const SECOND_ACCOUNT_NAME: &str = "devbatch2";
/// The second account's key: another key than the first's, so a request signed for the wrong
/// account is refused by the emulator.
pub const SECOND_ACCOUNT_KEY: &str = "c2Vjb25kLWFjY291bnQta2V5LWZvci10ZXN0cy1vbmx5";

impl Backends {
    /// Backends over the emulator's built-in scenario.
    pub async fn start() -> Self {
        Self::start_with(Emulator::builtin()).await
    }

    /// Backends over `emulator`.
    pub async fn start_with(emulator: Emulator) -> Self {
        let batch_url = serve_emulator(emulator.clone()).await;
        let hook = Recorder::start().await;
        let mut policy = tempfile::NamedTempFile::new().expect("a policy file");
        std::io::Write::write_all(&mut policy, HOOK_POLICY.as_bytes()).expect("the policy");
        Self {
            emulator,
            batch_url,
            hook,
            store: tempfile::tempdir().expect("a store directory"),
            policy,
            second: None,
        }
    }

    /// Backends with two accounts: the built-in scenario as `devbatch1` and again as
    /// [`SECOND_ACCOUNT_NAME`] with its own key, each on its own emulator and port (the emulator
    /// serves one account; a deployment's accounts have an endpoint each).
    pub async fn start_two_accounts() -> Self {
        let mut scenario = batch_emulator::Scenario::builtin();
        scenario.account.name = SECOND_ACCOUNT_NAME.to_owned();
        scenario.account.key = SECOND_ACCOUNT_KEY.to_owned();
        let emulator = Emulator::new(scenario).expect("the second account's emulator");
        let batch_url = serve_emulator(emulator.clone()).await;
        let mut backends = Self::start().await;
        backends.second = Some(SecondAccount {
            emulator,
            batch_url,
        });
        backends
    }

    /// The settings a handler binary reads, pointing at these backends. The built-in scenario
    /// has a 2 GiB stdout: files are capped at 16 MiB, so it is recorded as skipped.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let accounts = match &self.second {
            None => vec![
                ("AZURE_BATCH_ENDPOINT", self.batch_url.clone()),
                ("AZURE_BATCH_ACCOUNT", WELL_KNOWN_ACCOUNT_NAME.to_owned()),
                ("AZURE_BATCH_ACCESS_KEY", WELL_KNOWN_ACCOUNT_KEY.to_owned()),
            ],
            Some(second) => vec![
                (
                    "BATCH_TRIAGE_ACCOUNTS__0__NAME",
                    WELL_KNOWN_ACCOUNT_NAME.to_owned(),
                ),
                ("BATCH_TRIAGE_ACCOUNTS__0__ENDPOINT", self.batch_url.clone()),
                (
                    "BATCH_TRIAGE_ACCOUNTS__0__KEY",
                    WELL_KNOWN_ACCOUNT_KEY.to_owned(),
                ),
                (
                    "BATCH_TRIAGE_ACCOUNTS__1__NAME",
                    SECOND_ACCOUNT_NAME.to_owned(),
                ),
                (
                    "BATCH_TRIAGE_ACCOUNTS__1__ENDPOINT",
                    second.batch_url.clone(),
                ),
                (
                    "BATCH_TRIAGE_ACCOUNTS__1__KEY",
                    SECOND_ACCOUNT_KEY.to_owned(),
                ),
            ],
        };
        accounts
            .into_iter()
            .chain([
                ("BATCH_TRIAGE_STORE", path_text(self.store.path())),
                ("BATCH_TRIAGE_POLICY", path_text(self.policy.path())),
                ("BATCH_TRIAGE_ALLOW_LOOPBACK", "true".to_owned()),
                ("BATCH_TRIAGE_MAX_FILE_MIB", "16".to_owned()),
                ("HOOK_URL", self.hook.url.clone()),
                ("HOOK_SECRET", HOOK_SECRET.to_owned()),
            ])
            .collect()
    }

    /// One of [`Backends::settings`] by name, as an environment lookup does: for building a
    /// handler's settings in process (`Settings::from_env(|name| backends.setting(name))`).
    pub fn setting(&self, name: &str) -> Option<String> {
        self.settings()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, value)| value)
    }

    /// Every file under the store, relative to it, sorted.
    pub fn stored_files(&self) -> Vec<String> {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, root, out);
                } else if let Ok(relative) = path.strip_prefix(root) {
                    out.push(relative.display().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(self.store.path(), self.store.path(), &mut out);
        out.sort();
        out
    }
}

fn path_text(path: &Path) -> String {
    path.to_str().expect("a UTF-8 temp path").to_owned()
}
