//! The Batch accounts a deployment watches, from the settings: either the single-account
//! settings (`AZURE_BATCH_ENDPOINT`, `AZURE_BATCH_ACCOUNT`, `AZURE_BATCH_ACCESS_KEY`), unchanged,
//! or a numbered list, the way the Functions host flattens a JSON array into app settings:
//!
//! ```text
//! BATCH_TRIAGE_ACCOUNTS__0__NAME      = prodeu
//! BATCH_TRIAGE_ACCOUNTS__0__ENDPOINT  = https://prodeu.westeurope.batch.azure.com
//! BATCH_TRIAGE_ACCOUNTS__1__NAME      = produs
//! BATCH_TRIAGE_ACCOUNTS__1__ENDPOINT  = https://produs.eastus.batch.azure.com
//! BATCH_TRIAGE_ACCOUNTS__1__KEY       = @Microsoft.KeyVault(SecretUri=...)
//! ```
//!
//! A numbered list rather than one comma-separated setting, because every value of an account
//! (its key above all) is then a setting of its own, which can be a Key Vault reference, and a
//! setting for an account that is not listed is found by looking settings up by name alone.
//! An account with no `KEY` uses the identity shared by all (the managed identity); `CLIENT_ID`,
//! `CLIENT_SECRET` and `TENANT_ID` give it a service principal of its own.

use batch_client::BatchConfig;

use super::SettingsError;

/// The prefix of the numbered account settings.
pub const ACCOUNTS_PREFIX: &str = "BATCH_TRIAGE_ACCOUNTS";

/// The most accounts one deployment lists; settings numbered beyond it are an error too.
pub const MAX_ACCOUNTS: usize = 64;

/// The fields of one numbered account.
const FIELDS: [&str; 6] = [
    "NAME",
    "ENDPOINT",
    "KEY",
    "CLIENT_ID",
    "CLIENT_SECRET",
    "TENANT_ID",
];

/// The fields whose values are secrets.
const SECRET_FIELDS: [&str; 2] = ["KEY", "CLIENT_SECRET"];

/// One account a deployment watches.
#[derive(Debug, Clone)]
pub struct AccountSettings {
    /// Its name, lower case.
    pub name: String,
    /// Its endpoint and credential.
    pub batch: BatchConfig,
}

fn setting(index: usize, field: &str) -> String {
    format!("{ACCOUNTS_PREFIX}__{index}__{field}")
}

fn invalid(setting: String, reason: impl Into<String>) -> SettingsError {
    SettingsError::Account {
        setting,
        reason: reason.into(),
    }
}

/// The values of the account settings that are secrets (keys, client secrets), for the
/// redactor: best effort, never fails.
pub(super) fn account_secrets(get: &impl Fn(&str) -> Option<String>) -> Vec<String> {
    (0..MAX_ACCOUNTS)
        .flat_map(|i| SECRET_FIELDS.map(|field| get(&setting(i, field))))
        .flatten()
        .collect()
}

/// Reads the accounts: the numbered list when `BATCH_TRIAGE_ACCOUNTS__0__NAME` or any numbered
/// setting is set, the single-account settings otherwise. `get` already treats blank values as
/// unset. Errors name the setting, never its value.
pub(super) fn read_accounts(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Vec<AccountSettings>, SettingsError> {
    let numbered: Vec<(usize, &str)> = (0..MAX_ACCOUNTS)
        .flat_map(|i| FIELDS.map(|field| (i, field)))
        .filter(|(i, field)| get(&setting(*i, field)).is_some())
        .collect();
    if numbered.is_empty() {
        return single_account(get).map(|account| vec![account]);
    }
    for single in [
        "AZURE_BATCH_ENDPOINT",
        "AZURE_BATCH_ACCOUNT",
        "AZURE_BATCH_ACCESS_KEY",
    ] {
        if get(single).is_some() {
            return Err(invalid(
                single.to_owned(),
                format!(
                    "set either the single-account settings or {ACCOUNTS_PREFIX}__<n>__*, not both"
                ),
            ));
        }
    }
    let count = (0..MAX_ACCOUNTS)
        .position(|i| get(&setting(i, "NAME")).is_none())
        .unwrap_or(MAX_ACCOUNTS);
    // A value numbered past the last name belongs to no listed account: a key for an account
    // that is not there, or a gap in the numbering.
    if let Some((i, field)) = numbered.iter().find(|(i, _)| *i >= count) {
        return Err(invalid(
            setting(*i, field),
            format!(
                "{} is not set: accounts are numbered from 0 without gaps, each with a NAME",
                setting(count, "NAME")
            ),
        ));
    }
    let mut accounts: Vec<AccountSettings> = Vec::with_capacity(count);
    for i in 0..count {
        let account = numbered_account(get, i)?;
        if let Some(first) = accounts.iter().position(|a| a.name == account.name) {
            return Err(invalid(
                setting(i, "NAME"),
                format!(
                    "names the same account as {} (names compare without case)",
                    setting(first, "NAME")
                ),
            ));
        }
        accounts.push(account);
    }
    Ok(accounts)
}

/// The single-account settings, as they always were read.
fn single_account(get: &impl Fn(&str) -> Option<String>) -> Result<AccountSettings, SettingsError> {
    let batch = BatchConfig::from_env_vars(get)?;
    let name = get("AZURE_BATCH_ACCOUNT")
        .or_else(|| get("AZURE_BATCH_ENDPOINT").and_then(|e| diagnosis::wire::account_from_url(&e)))
        .ok_or(SettingsError::Missing {
            name: "AZURE_BATCH_ACCOUNT",
            hint: "set it to the Batch account's name",
        })?;
    Ok(AccountSettings {
        name: name.to_ascii_lowercase(),
        batch,
    })
}

/// Account `i` of the numbered list: its values stand in for the single-account settings and the
/// shared identity's, so the credential is chosen as it always was.
fn numbered_account(
    get: &impl Fn(&str) -> Option<String>,
    i: usize,
) -> Result<AccountSettings, SettingsError> {
    let value = |field: &str| get(&setting(i, field));
    let name = value("NAME")
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    // Azure's rule for Batch account names; it also keeps the name safe in store keys.
    if !(3..=24).contains(&name.len()) || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(invalid(
            setting(i, "NAME"),
            "a Batch account name is 3 to 24 letters and digits",
        ));
    }
    let endpoint = value("ENDPOINT").ok_or_else(|| {
        invalid(
            setting(i, "ENDPOINT"),
            "is not set: give the account's endpoint, e.g. https://NAME.REGION.batch.azure.com",
        )
    })?;
    let own_secret = value("CLIENT_SECRET").is_some();
    let mapped = |wanted: &str| match wanted {
        "AZURE_BATCH_ENDPOINT" => Some(endpoint.clone()),
        "AZURE_BATCH_ACCOUNT" => Some(name.clone()),
        "AZURE_BATCH_ACCESS_KEY" => value("KEY"),
        "AZURE_CLIENT_SECRET" => value("CLIENT_SECRET").or_else(|| get(wanted)),
        "AZURE_CLIENT_ID" => value("CLIENT_ID").or_else(|| get(wanted)),
        "AZURE_TENANT_ID" => value("TENANT_ID").or_else(|| get(wanted)),
        // An account with a service principal of its own uses it, not the managed identity.
        "IDENTITY_ENDPOINT" | "IDENTITY_HEADER" if own_secret => None,
        other => get(other),
    };
    let batch = BatchConfig::from_env_vars(mapped).map_err(|error| {
        invalid(
            setting(i, "ENDPOINT"),
            // The config error names the single-account setting it stood in for; say which
            // value was wrong without repeating anything secret (the errors hold none).
            error.to_string(),
        )
    })?;
    check_endpoint_names(&batch, &name)
        .map_err(|reason| invalid(setting(i, "ENDPOINT"), reason))?;
    Ok(AccountSettings { name, batch })
}

/// An account's endpoint must be that account's: its host's first label is the account name
/// (`https://NAME.REGION.batch.azure.com`), or it is a loopback emulator, whose host names no
/// account.
fn check_endpoint_names(batch: &BatchConfig, name: &str) -> Result<(), String> {
    let host = batch.endpoint.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let label = batch
        .endpoint
        .host_str()
        .and_then(|host| host.split('.').next())
        .unwrap_or_default();
    if loopback || label.eq_ignore_ascii_case(name) {
        Ok(())
    } else {
        Err(format!(
            "the endpoint's host {label:?} is not the account {name:?}: a Batch endpoint is https://NAME.REGION.batch.azure.com"
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use batch_client::{BatchAuth, EntraAuth};

    use super::super::{Settings, SettingsError};

    const KEY_EU: &str = "ZXUta2V5LWZvci10ZXN0cy1vbmx5LTAwMDA=";
    const KEY_US: &str = "dXMta2V5LWZvci10ZXN0cy1vbmx5LTExMTE=";

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .chain([("BATCH_TRIAGE_STORE".to_owned(), "/tmp/x".to_owned())])
            .collect();
        Settings::from_env(|name| map.get(name).cloned())
    }

    fn two_accounts() -> Vec<(&'static str, &'static str)> {
        vec![
            ("BATCH_TRIAGE_ACCOUNTS__0__NAME", "ProdEU"),
            (
                "BATCH_TRIAGE_ACCOUNTS__0__ENDPOINT",
                "https://prodeu.westeurope.batch.azure.com",
            ),
            ("BATCH_TRIAGE_ACCOUNTS__0__KEY", KEY_EU),
            ("BATCH_TRIAGE_ACCOUNTS__1__NAME", "produs"),
            (
                "BATCH_TRIAGE_ACCOUNTS__1__ENDPOINT",
                "https://produs.eastus.batch.azure.com",
            ),
            ("IDENTITY_ENDPOINT", "http://localhost:8081/msi/token"),
            ("IDENTITY_HEADER", "h"),
        ]
    }

    /// The message and the debug form of an error, which must name `setting` and hold no key.
    fn refusal(pairs: &[(&str, &str)], setting: &str) -> String {
        let error = settings(pairs).err().expect("refused");
        let text = format!("{error} {error:?}");
        assert!(text.contains(setting), "{text}");
        assert!(!text.contains(KEY_EU) && !text.contains(KEY_US), "{text}");
        text
    }

    #[test]
    fn numbered_accounts_each_have_an_endpoint_and_a_credential() {
        let s = settings(&two_accounts()).unwrap();
        let names: Vec<&str> = s.accounts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["prodeu", "produs"]);
        assert!(matches!(
            &s.accounts[0].batch.auth,
            BatchAuth::SharedKey { account, key } if account == "prodeu" && key.expose() == KEY_EU
        ));
        // No key: the managed identity shared by all.
        assert!(matches!(
            &s.accounts[1].batch.auth,
            BatchAuth::Entra(EntraAuth::ManagedIdentity { .. })
        ));
        assert_eq!(
            s.accounts[1].batch.endpoint.as_str(),
            "https://produs.eastus.batch.azure.com/"
        );
        assert_eq!(s.redactor.redact(&format!("k={KEY_EU}")), "k=[REDACTED]");
    }

    #[test]
    fn an_account_with_a_client_secret_of_its_own_uses_it_not_the_managed_identity() {
        let mut pairs = two_accounts();
        pairs.extend([
            (
                "BATCH_TRIAGE_ACCOUNTS__1__CLIENT_SECRET",
                "us-client-secret-1",
            ),
            ("BATCH_TRIAGE_ACCOUNTS__1__CLIENT_ID", "us-app"),
            ("AZURE_TENANT_ID", "tenant"),
        ]);
        let s = settings(&pairs).unwrap();
        assert!(matches!(
            &s.accounts[1].batch.auth,
            BatchAuth::Entra(EntraAuth::ClientSecret { client_id, tenant_id, .. })
                if client_id == "us-app" && tenant_id == "tenant"
        ));
        assert_eq!(s.redactor.redact("us-client-secret-1"), "[REDACTED]");
    }

    #[test]
    fn an_account_named_twice_is_refused_whatever_the_case() {
        let mut pairs = two_accounts();
        pairs[3] = ("BATCH_TRIAGE_ACCOUNTS__1__NAME", "PRODEU");
        pairs[4] = (
            "BATCH_TRIAGE_ACCOUNTS__1__ENDPOINT",
            "https://prodeu.westeurope.batch.azure.com",
        );
        let text = refusal(&pairs, "BATCH_TRIAGE_ACCOUNTS__1__NAME");
        assert!(text.contains("BATCH_TRIAGE_ACCOUNTS__0__NAME"), "{text}");
    }

    #[test]
    fn a_key_for_an_account_that_is_not_listed_is_refused() {
        let mut pairs = two_accounts();
        pairs.push(("BATCH_TRIAGE_ACCOUNTS__2__KEY", KEY_US));
        let text = refusal(&pairs, "BATCH_TRIAGE_ACCOUNTS__2__KEY");
        assert!(
            text.contains("BATCH_TRIAGE_ACCOUNTS__2__NAME is not set"),
            "{text}"
        );
        // A gap in the numbering is the same mistake.
        let mut gap = two_accounts();
        gap.push(("BATCH_TRIAGE_ACCOUNTS__3__NAME", "later"));
        refusal(&gap, "BATCH_TRIAGE_ACCOUNTS__3__NAME");
    }

    #[test]
    fn an_endpoint_of_another_account_is_refused() {
        let mut pairs = two_accounts();
        pairs[4] = (
            "BATCH_TRIAGE_ACCOUNTS__1__ENDPOINT",
            "https://prodeu.westeurope.batch.azure.com",
        );
        refusal(&pairs, "BATCH_TRIAGE_ACCOUNTS__1__ENDPOINT");
        // A loopback emulator's host names no account, and is accepted.
        pairs[4] = (
            "BATCH_TRIAGE_ACCOUNTS__1__ENDPOINT",
            "http://127.0.0.1:8080",
        );
        assert!(settings(&pairs).is_ok());
    }

    #[test]
    fn missing_endpoints_bad_names_and_mixed_styles_are_refused() {
        let mut pairs = two_accounts();
        pairs.remove(4);
        refusal(&pairs, "BATCH_TRIAGE_ACCOUNTS__1__ENDPOINT");
        let mut pairs = two_accounts();
        pairs[3] = ("BATCH_TRIAGE_ACCOUNTS__1__NAME", "prod/../us");
        refusal(&pairs, "BATCH_TRIAGE_ACCOUNTS__1__NAME");
        let mut pairs = two_accounts();
        pairs.push(("AZURE_BATCH_ACCESS_KEY", KEY_US));
        refusal(&pairs, "AZURE_BATCH_ACCESS_KEY");
    }

    #[test]
    fn the_redactor_of_a_partial_command_knows_the_account_keys() {
        let pairs = two_accounts();
        let redactor = super::super::redactor_from_env(|name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        });
        assert_eq!(redactor.redact(KEY_EU), "[REDACTED]");
    }
}
