//! The pipeline's configuration from named settings: the Functions host's app settings, the
//! Lambda function's environment, or `batch-triage serve`'s environment. One reader for all
//! handlers, so a setting means the same everywhere; the README's deployment section lists them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use batch_client::BatchClient;
use diagnosis::policy::Policy;
use diagnosis::redact::Redactor;
use notify::{Allowlist, Egress, ReceiverConfig, RetryPolicy};
use preserve::PreserveOptions;

use crate::triage::{Triage, TriageConfig};

mod accounts;

pub use accounts::{ACCOUNTS_PREFIX, AccountSettings, MAX_ACCOUNTS};

/// The settings, read once at start.
pub struct Settings {
    /// The Batch accounts watched, at least one; items naming no account go to the first. One
    /// account from `AZURE_BATCH_ENDPOINT`, `AZURE_BATCH_ACCOUNT` (or the first label of the
    /// endpoint's host) and `AZURE_BATCH_ACCESS_KEY` (no key means the managed identity); several
    /// from `BATCH_TRIAGE_ACCOUNTS__<n>__NAME`, `__ENDPOINT`, `__KEY` and so on (`settings/accounts.rs`).
    pub accounts: Vec<AccountSettings>,
    /// `BATCH_TRIAGE_STORE`: a local directory or a blob container URL.
    pub store: String,
    /// `BATCH_TRIAGE_DEAD_LETTER_STORE`: Event Grid's dead-letter container (same forms as the
    /// store), drained into the parking area on every tick; absent means none.
    pub dead_letter_store: Option<String>,
    /// `BATCH_TRIAGE_AGENT_LOGS_IDENTITY`: the ARM resource id of a user-assigned identity Batch
    /// uploads node agent logs as (`identityReference`), for a store signed in with Entra ID,
    /// which cannot sign a SAS for Batch; absent means none.
    pub agent_logs_identity: Option<String>,
    /// `BATCH_TRIAGE_POLICY`: the policy file; absent means the default policy.
    pub policy: Policy,
    /// Receivers of the policy, resolved with their secrets from the settings.
    pub receivers: BTreeMap<String, notify::Receiver>,
    /// `BATCH_TRIAGE_ALLOW_HOSTS` (comma-separated, extra notification hosts) and
    /// `BATCH_TRIAGE_ALLOW_LOOPBACK` (`true` for local testing only).
    pub allowlist: Allowlist,
    /// `BATCH_TRIAGE_INVOCATION_SECONDS` (default 240): how long one invocation may work; keep
    /// it below the platform's timeout so a run ends cleanly.
    pub invocation_budget: Duration,
    /// `BATCH_TRIAGE_MAX_FILE_MIB` (default 4096): log files larger than this are recorded as
    /// skipped instead of copied.
    pub max_file_bytes: u64,
    /// The exact values of the secrets read here (the Batch key `AZURE_BATCH_ACCESS_KEY`,
    /// `AZURE_CLIENT_SECRET`, `BATCH_TRIAGE_WEBHOOK_KEY`, and every value a receiver was resolved
    /// with: URLs, HMAC secrets, passwords, keys), redacted from everything the pipeline
    /// stores or sends, in their encoded forms too.
    pub redactor: Redactor,
}

/// A setting is missing or wrong. Messages name the setting and never include its value, which
/// may be a secret.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A required setting is absent.
    #[error("{name} is not set: {hint}")]
    Missing {
        /// The setting.
        name: &'static str,
        /// What to set it to.
        hint: &'static str,
    },
    /// A setting's value cannot be used.
    #[error("{name}: {reason}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// Why (never the value).
        reason: String,
    },
    /// The Batch account settings (the message names the setting already).
    #[error(transparent)]
    Batch(#[from] batch_client::ConfigError),
    /// A numbered account setting (`BATCH_TRIAGE_ACCOUNTS__<n>__*`) cannot be used.
    #[error("{setting}: {reason}")]
    Account {
        /// The setting.
        setting: String,
        /// Why (never the value).
        reason: String,
    },
    /// The accounts cannot be put together (one listed twice).
    #[error("the Batch accounts: {0}")]
    Accounts(#[from] crate::triage::AccountError),
    /// A receiver of the policy cannot be resolved (a missing secret setting, say).
    #[error("receiver {name:?}: {reason}")]
    Receiver {
        /// The receiver's name in the policy.
        name: String,
        /// Why (in the message, not a `source`, so a chain says it once).
        reason: notify::NotifyError,
    },
    /// `BATCH_TRIAGE_STORE` cannot be opened. (Not a `source`: the message already holds it,
    /// and a report walking the chain would say it twice.)
    #[error("BATCH_TRIAGE_STORE: {0}")]
    Store(artifact_store::StoreError),
    /// `BATCH_TRIAGE_DEAD_LETTER_STORE` cannot be opened.
    #[error("BATCH_TRIAGE_DEAD_LETTER_STORE: {0}")]
    DeadLetterStore(artifact_store::StoreError),
    /// The HTTP client for notifications cannot be built.
    #[error("notification egress: {0}")]
    Egress(notify::NotifyError),
}

/// Settings whose values are secrets in themselves (receivers' secrets are named by the policy).
const SECRET_SETTINGS: [&str; 3] = [
    "AZURE_BATCH_ACCESS_KEY",
    "AZURE_CLIENT_SECRET",
    "BATCH_TRIAGE_WEBHOOK_KEY",
];

/// The secrets the environment configures, for a command that reads only some of the settings
/// (the CLI's `explain` and `diagnose`): `AZURE_BATCH_ACCESS_KEY`, `AZURE_CLIENT_SECRET`,
/// `BATCH_TRIAGE_WEBHOOK_KEY` and, when `BATCH_TRIAGE_POLICY` names a readable policy, every
/// value its receivers read. Best effort: what cannot be read is left out, and this never fails.
pub fn redactor_from_env(get: impl Fn(&str) -> Option<String>) -> Redactor {
    let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
    let mut secrets: Vec<String> = SECRET_SETTINGS.into_iter().filter_map(get).collect();
    secrets.extend(accounts::account_secrets(&get));
    let policy = get("BATCH_TRIAGE_POLICY")
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| Policy::parse(&text).ok());
    for receiver in policy.iter().flat_map(|p| &p.receivers) {
        let values = std::cell::RefCell::new(Vec::new());
        let _ = ReceiverConfig::from_policy(receiver).and_then(|config| {
            config.resolve(|name: &str| {
                let value = get(name);
                if let Some(value) = &value {
                    values.borrow_mut().push(value.clone());
                }
                value
            })
        });
        secrets.extend(values.into_inner());
    }
    Redactor::new(secrets)
}

impl Settings {
    /// Reads the settings through `get` (the process environment in production, a map in tests).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let accounts = accounts::read_accounts(&get)?;
        let store = get("BATCH_TRIAGE_STORE").ok_or(SettingsError::Missing {
            name: "BATCH_TRIAGE_STORE",
            hint: "set it to a blob container URL or a directory",
        })?;
        let dead_letter_store = get("BATCH_TRIAGE_DEAD_LETTER_STORE");
        let agent_logs_identity = get("BATCH_TRIAGE_AGENT_LOGS_IDENTITY");
        let policy = match get("BATCH_TRIAGE_POLICY") {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| SettingsError::Invalid {
                    name: "BATCH_TRIAGE_POLICY",
                    reason: format!("cannot read {path}: {e}"),
                })?;
                Policy::parse(&text).map_err(|errors| SettingsError::Invalid {
                    name: "BATCH_TRIAGE_POLICY",
                    reason: format!("{path}: {errors}"),
                })?
            }
            None => Policy::default(),
        };
        let mut secrets: Vec<String> = SECRET_SETTINGS.into_iter().filter_map(get).collect();
        secrets.extend(accounts::account_secrets(&get));
        // Every value a receiver reads from the settings is a secret or next to one (a URL with
        // a signature, a password, a key); a user name among them only costs its redaction.
        let receiver_values = std::cell::RefCell::new(Vec::new());
        let recording_get = |name: &str| {
            let value = get(name);
            if let Some(value) = &value {
                receiver_values.borrow_mut().push(value.clone());
            }
            value
        };
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
        let mut receivers = BTreeMap::new();
        for receiver in &policy.receivers {
            let resolved = ReceiverConfig::from_policy(receiver)
                .and_then(|config| config.resolve(recording_get))
                // Every destination obeys the allowlist (SMTP and ACS too): refused at start,
                // not at the first failure, and again before every send.
                .and_then(|resolved| resolved.check_destination(&allowlist).map(|()| resolved))
                .map_err(|reason| SettingsError::Receiver {
                    name: receiver.name.clone(),
                    reason,
                })?;
            receivers.insert(receiver.name.clone(), resolved);
        }
        let number = |name: &'static str, default: u64| -> Result<u64, SettingsError> {
            match get(name) {
                None => Ok(default),
                Some(text) => text.trim().parse().map_err(|_| SettingsError::Invalid {
                    name,
                    reason: "not a whole number".to_owned(),
                }),
            }
        };
        let invocation_budget =
            Duration::from_secs(number("BATCH_TRIAGE_INVOCATION_SECONDS", 240)?);
        let max_file_bytes = number("BATCH_TRIAGE_MAX_FILE_MIB", 4096)?.saturating_mul(1 << 20);
        secrets.extend(receiver_values.into_inner());
        Ok(Self {
            redactor: Redactor::new(secrets),
            accounts,
            store,
            dead_letter_store,
            agent_logs_identity,
            policy,
            receivers,
            allowlist,
            invocation_budget,
            max_file_bytes,
        })
    }

    /// Builds the pipeline: one per account, sharing the store, policy, receivers and egress.
    pub fn build(self) -> Result<Triage, SettingsError> {
        let store = artifact_store::open(&self.store).map_err(SettingsError::Store)?;
        let dead_letters = self
            .dead_letter_store
            .as_deref()
            .map(artifact_store::open)
            .transpose()
            .map_err(SettingsError::DeadLetterStore)?;
        let egress =
            Egress::new(self.allowlist, RetryPolicy::standard()).map_err(SettingsError::Egress)?;
        let max_file_bytes = self.max_file_bytes;
        let config = |account: String| TriageConfig {
            account,
            preserve: PreserveOptions {
                max_file_bytes,
                ..PreserveOptions::default()
            },
            action_call_timeout: Duration::from_secs(30),
        };
        let mut accounts = self.accounts.into_iter();
        let first = accounts.next().ok_or(SettingsError::Missing {
            name: "AZURE_BATCH_ENDPOINT",
            hint: "configure at least one Batch account",
        })?;
        let mut triage = Triage::new(
            config(first.name),
            Arc::new(BatchClient::new(first.batch)?),
            store,
            Arc::new(self.policy),
            self.receivers,
            egress,
        );
        for account in accounts {
            triage = triage.with_account(
                config(account.name),
                Arc::new(BatchClient::new(account.batch)?),
            )?;
        }
        let triage = triage
            .with_redactor(self.redactor)
            .with_agent_logs_identity(self.agent_logs_identity);
        // Parked and dead-lettered deliveries are payloads, drained once per tick by the first
        // account's pipeline, which routes each item to its account.
        Ok(match dead_letters {
            Some(dead_letters) => triage.with_dead_letter_store(dead_letters),
            None => triage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_env(|name| map.get(name).cloned())
    }

    const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ==";

    #[test]
    fn reads_the_documented_settings_with_their_defaults() {
        let s = settings(&[
            (
                "AZURE_BATCH_ENDPOINT",
                "https://acct.westeurope.batch.azure.com",
            ),
            ("AZURE_BATCH_ACCOUNT", "acct"),
            ("AZURE_BATCH_ACCESS_KEY", KEY),
            ("BATCH_TRIAGE_STORE", "/tmp/x"),
        ])
        .unwrap();
        assert_eq!(s.accounts.len(), 1);
        assert_eq!(s.accounts[0].name, "acct");
        assert_eq!(s.invocation_budget, Duration::from_secs(240));
        assert_eq!(s.max_file_bytes, 4096 << 20);
        assert!(s.receivers.is_empty());
        assert_eq!(s.agent_logs_identity, None);
        let identity = "/subscriptions/0/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/batch-logs";
        let s = settings(&[
            (
                "AZURE_BATCH_ENDPOINT",
                "https://acct.westeurope.batch.azure.com",
            ),
            ("AZURE_BATCH_ACCOUNT", "acct"),
            ("AZURE_BATCH_ACCESS_KEY", KEY),
            ("BATCH_TRIAGE_STORE", "/tmp/x"),
            ("BATCH_TRIAGE_AGENT_LOGS_IDENTITY", identity),
        ])
        .unwrap();
        assert_eq!(s.agent_logs_identity.as_deref(), Some(identity));
    }

    #[test]
    fn a_dead_letter_store_that_cannot_be_opened_names_its_setting_and_not_its_key() {
        let secret = "c2VjcmV0LWRlYWQtbGV0dGVyLWtleQ==";
        let error = settings(&[
            (
                "AZURE_BATCH_ENDPOINT",
                "https://acct.westeurope.batch.azure.com",
            ),
            ("AZURE_BATCH_ACCOUNT", "acct"),
            ("AZURE_BATCH_ACCESS_KEY", KEY),
            ("BATCH_TRIAGE_STORE", "/tmp/x"),
            (
                "BATCH_TRIAGE_DEAD_LETTER_STORE",
                &format!("DefaultEndpointsProtocol=https;AccountName=a;AccountKey={secret};BlobEndpoint=not a url;Container=dl"),
            ),
        ])
        .unwrap()
        .build()
        .expect_err("an unusable dead-letter store is a start-up error");
        let text = error.to_string();
        assert!(text.contains("BATCH_TRIAGE_DEAD_LETTER_STORE"), "{text}");
        assert!(!text.contains(secret), "{text}");
        let unset = settings(&[
            (
                "AZURE_BATCH_ENDPOINT",
                "https://acct.westeurope.batch.azure.com",
            ),
            ("AZURE_BATCH_ACCOUNT", "acct"),
            ("AZURE_BATCH_ACCESS_KEY", KEY),
            ("BATCH_TRIAGE_STORE", "/tmp/x"),
        ])
        .unwrap();
        assert_eq!(unset.dead_letter_store, None);
    }

    #[test]
    fn a_missing_store_names_the_setting() {
        let error = settings(&[
            (
                "AZURE_BATCH_ENDPOINT",
                "https://acct.westeurope.batch.azure.com",
            ),
            ("AZURE_BATCH_ACCOUNT", "acct"),
            ("AZURE_BATCH_ACCESS_KEY", KEY),
        ])
        .err()
        .unwrap();
        assert!(error.to_string().contains("BATCH_TRIAGE_STORE"), "{error}");
    }

    #[test]
    fn a_bad_number_names_the_setting_not_a_default() {
        let error = settings(&[
            (
                "AZURE_BATCH_ENDPOINT",
                "https://acct.westeurope.batch.azure.com",
            ),
            ("AZURE_BATCH_ACCOUNT", "acct"),
            ("AZURE_BATCH_ACCESS_KEY", KEY),
            ("BATCH_TRIAGE_STORE", "/tmp/x"),
            ("BATCH_TRIAGE_INVOCATION_SECONDS", "four minutes"),
        ])
        .err()
        .unwrap();
        assert!(
            error
                .to_string()
                .contains("BATCH_TRIAGE_INVOCATION_SECONDS"),
            "{error}"
        );
    }

    #[test]
    fn the_redactor_knows_the_configured_secrets() {
        let s = settings(&[
            (
                "AZURE_BATCH_ENDPOINT",
                "https://acct.westeurope.batch.azure.com",
            ),
            ("AZURE_BATCH_ACCOUNT", "acct"),
            ("AZURE_BATCH_ACCESS_KEY", KEY),
            ("AZURE_CLIENT_SECRET", "client-secret-value-1"),
            ("BATCH_TRIAGE_STORE", "/tmp/x"),
        ])
        .unwrap();
        let out = s
            .redactor
            .redact(&format!("echo {KEY}; client-secret-value-1 sent"));
        assert_eq!(out, "echo [REDACTED]; [REDACTED] sent");
    }

    #[test]
    fn errors_never_carry_the_key() {
        let error = settings(&[
            ("AZURE_BATCH_ENDPOINT", "not a url"),
            ("AZURE_BATCH_ACCOUNT", "acct"),
            ("AZURE_BATCH_ACCESS_KEY", KEY),
            ("BATCH_TRIAGE_STORE", "/tmp/x"),
        ])
        .err()
        .unwrap();
        assert!(!format!("{error} {error:?}").contains(KEY));
    }
}
