//! Configuration from app settings only (the Functions host passes them as environment
//! variables). Every setting is documented in the README's deployment section.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use batch_client::{BatchClient, BatchConfig};
use diagnosis::policy::Policy;
use notify::{Allowlist, Egress, ReceiverConfig, RetryPolicy};
use pipeline::triage::{Triage, TriageConfig};
use preserve::PreserveOptions;

/// The settings, read once at start.
pub struct Settings {
    /// `FUNCTIONS_CUSTOMHANDLER_PORT`.
    pub port: u16,
    /// The Batch account (`AZURE_BATCH_ENDPOINT`, `AZURE_BATCH_ACCOUNT`,
    /// `AZURE_BATCH_ACCESS_KEY`; no key means the managed identity).
    pub batch: BatchConfig,
    /// `AZURE_BATCH_ACCOUNT`, or the first label of the endpoint's host.
    pub account: String,
    /// `BATCH_TRIAGE_STORE`: a local directory or a blob container URL.
    pub store: String,
    /// `BATCH_TRIAGE_POLICY`: the policy file; absent means the default policy.
    pub policy: Policy,
    /// Receivers of the policy, resolved with their secrets from the settings.
    pub receivers: BTreeMap<String, notify::Receiver>,
    /// `BATCH_TRIAGE_ALLOW_HOSTS` (comma-separated, extra notification hosts) and
    /// `BATCH_TRIAGE_ALLOW_LOOPBACK` (`true` for local testing only).
    pub allowlist: Allowlist,
    /// `BATCH_TRIAGE_INVOCATION_SECONDS` (default 240): how long one invocation may work; keep
    /// it below the function timeout.
    pub invocation_budget: Duration,
    /// `BATCH_TRIAGE_MAX_FILE_MIB` (default 4096): log files larger than this are recorded as
    /// skipped instead of copied.
    pub max_file_bytes: u64,
}

impl Settings {
    /// Reads the settings through `get` (the process environment in production).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let port = get("FUNCTIONS_CUSTOMHANDLER_PORT")
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "FUNCTIONS_CUSTOMHANDLER_PORT is not set: the Functions host sets it"
                )
            })?
            .parse()
            .map_err(|_| anyhow::anyhow!("FUNCTIONS_CUSTOMHANDLER_PORT is not a port number"))?;
        let batch = BatchConfig::from_env_vars(&get)?;
        let account = get("AZURE_BATCH_ACCOUNT")
            .or_else(|| {
                get("AZURE_BATCH_ENDPOINT").and_then(|e| diagnosis::wire::account_from_url(&e))
            })
            .ok_or_else(|| {
                anyhow::anyhow!("set AZURE_BATCH_ACCOUNT to the Batch account's name")
            })?;
        let store = get("BATCH_TRIAGE_STORE").ok_or_else(|| {
            anyhow::anyhow!("set BATCH_TRIAGE_STORE to a blob container URL or a directory")
        })?;
        let policy = match get("BATCH_TRIAGE_POLICY") {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("BATCH_TRIAGE_POLICY {path}: {e}"))?;
                Policy::parse(&text)
                    .map_err(|errors| anyhow::anyhow!("BATCH_TRIAGE_POLICY {path}: {errors}"))?
            }
            None => Policy::default(),
        };
        let mut receivers = BTreeMap::new();
        for receiver in &policy.receivers {
            let resolved = ReceiverConfig::from_policy(receiver)
                .and_then(|config| config.resolve(&get))
                .map_err(|e| anyhow::anyhow!("receiver {:?}: {e}", receiver.name))?;
            receivers.insert(receiver.name.clone(), resolved);
        }
        let mut allowlist = Allowlist::default();
        for host in get("BATCH_TRIAGE_ALLOW_HOSTS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
        {
            allowlist = allowlist.with(host);
        }
        if get("BATCH_TRIAGE_ALLOW_LOOPBACK").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            allowlist = allowlist.allow_loopback();
        }
        let invocation_budget = Duration::from_secs(
            get("BATCH_TRIAGE_INVOCATION_SECONDS")
                .and_then(|s| s.parse().ok())
                .unwrap_or(240),
        );
        let max_file_bytes = get("BATCH_TRIAGE_MAX_FILE_MIB")
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(4096)
            << 20;
        Ok(Self {
            port,
            batch,
            account,
            store,
            policy,
            receivers,
            allowlist,
            invocation_budget,
            max_file_bytes,
        })
    }

    /// Builds the pipeline.
    pub fn build(self) -> anyhow::Result<Triage> {
        let store = artifact_store::open(&self.store)?;
        let batch = Arc::new(BatchClient::new(self.batch)?);
        let egress = Egress::new(self.allowlist, RetryPolicy::standard())?;
        let config = TriageConfig {
            account: self.account,
            preserve: PreserveOptions {
                max_file_bytes: self.max_file_bytes,
                ..PreserveOptions::default()
            },
            action_call_timeout: Duration::from_secs(30),
        };
        Ok(Triage::new(
            config,
            batch,
            store,
            Arc::new(self.policy),
            self.receivers,
            egress,
        ))
    }
}
