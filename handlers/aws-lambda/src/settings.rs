//! Configuration from the function's environment variables: the pipeline's settings, shared by
//! every handler (`pipeline::settings`), plus the webhook's shared secret.

use pipeline::settings::{Settings as PipelineSettings, SettingsError as PipelineSettingsError};
use pipeline::webhook::{WebhookKey, WebhookKeyError};

/// The settings, read once at start.
pub struct Settings {
    /// Everything the pipeline reads (README, "Settings").
    pub pipeline: PipelineSettings,
    /// `BATCH_TRIAGE_WEBHOOK_KEY`. Optional, so a function that only runs the schedule or
    /// diagnoses on demand needs none; without it every HTTP request is refused.
    pub webhook_key: Option<WebhookKey>,
}

/// A setting is missing or wrong; the message names the setting, never its value.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The pipeline's settings.
    #[error(transparent)]
    Pipeline(#[from] PipelineSettingsError),
    /// `BATCH_TRIAGE_WEBHOOK_KEY` is set but unusable (too short, characters a URL would mangle).
    #[error(transparent)]
    WebhookKey(#[from] WebhookKeyError),
}

impl Settings {
    /// Reads the settings through `get` (the process environment in production).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let webhook_key = match WebhookKey::from_env(&get) {
            Ok(key) => Some(key),
            Err(WebhookKeyError::Missing) => None,
            Err(unusable) => return Err(unusable.into()),
        };
        Ok(Self {
            pipeline: PipelineSettings::from_env(get)?,
            webhook_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn settings(extra: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let mut map: BTreeMap<&str, &str> = BTreeMap::from([
            (
                "AZURE_BATCH_ENDPOINT",
                "https://acct.westeurope.batch.azure.com",
            ),
            ("AZURE_BATCH_ACCOUNT", "acct"),
            (
                "AZURE_BATCH_ACCESS_KEY",
                "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ==",
            ),
            ("BATCH_TRIAGE_STORE", "/tmp/x"),
        ]);
        map.extend(extra.iter().copied());
        Settings::from_env(|name| map.get(name).map(|v| (*v).to_owned()))
    }

    #[test]
    fn the_webhook_key_is_optional() {
        assert!(settings(&[]).unwrap().webhook_key.is_none());
        let with_key = settings(&[("BATCH_TRIAGE_WEBHOOK_KEY", "0123456789abcdef0123")]).unwrap();
        assert!(with_key.webhook_key.is_some());
    }

    #[test]
    fn an_unusable_key_is_a_configuration_error_that_does_not_echo_it() {
        let error = settings(&[("BATCH_TRIAGE_WEBHOOK_KEY", "short-key")])
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("BATCH_TRIAGE_WEBHOOK_KEY"), "{error}");
        assert!(!error.contains("short-key"), "{error}");
    }

    #[test]
    fn the_pipeline_settings_are_checked_too() {
        let error = settings(&[("BATCH_TRIAGE_INVOCATION_SECONDS", "soon")])
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("BATCH_TRIAGE_INVOCATION_SECONDS"), "{error}");
    }

    #[test]
    fn several_accounts_are_read_and_a_key_for_an_unlisted_one_is_refused() {
        let accounts = |extra: &[(&'static str, &'static str)]| {
            let mut map: BTreeMap<&str, &str> = BTreeMap::from([
                ("BATCH_TRIAGE_ACCOUNTS__0__NAME", "prodeu"),
                (
                    "BATCH_TRIAGE_ACCOUNTS__0__ENDPOINT",
                    "https://prodeu.westeurope.batch.azure.com",
                ),
                ("BATCH_TRIAGE_ACCOUNTS__0__KEY", "ZXUta2V5LWZvci10ZXN0cw=="),
                ("BATCH_TRIAGE_ACCOUNTS__1__NAME", "produs"),
                (
                    "BATCH_TRIAGE_ACCOUNTS__1__ENDPOINT",
                    "https://produs.eastus.batch.azure.com",
                ),
                ("BATCH_TRIAGE_ACCOUNTS__1__KEY", "dXMta2V5LWZvci10ZXN0cw=="),
                ("BATCH_TRIAGE_STORE", "/tmp/x"),
            ]);
            map.extend(extra.iter().copied());
            Settings::from_env(|name| map.get(name).map(|v| (*v).to_owned()))
        };
        let names: Vec<String> = accounts(&[])
            .unwrap()
            .pipeline
            .accounts
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(names, ["prodeu", "produs"]);
        let error = accounts(&[("BATCH_TRIAGE_ACCOUNTS__2__KEY", "b3RoZXIta2V5")])
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("BATCH_TRIAGE_ACCOUNTS__2__KEY"), "{error}");
        assert!(!error.contains("b3RoZXIta2V5"), "{error}");
    }
}
