//! What a client needs to know: the account endpoint, how to authenticate, the api-version and
//! the retry policy. Reading the environment is the handlers' job; [`BatchConfig::from_env_vars`]
//! takes a lookup function so that it is testable and the library never touches `std::env`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use foundation::{RetryPolicy, Secret};
use url::Url;

use crate::error::ConfigError;

/// The api-version sent by default: the newest stable one, without the `.NN.0` suffix that the
/// examples and SDKs use (docs/batch-facts.md).
pub const DEFAULT_API_VERSION: &str = "2025-06-01";

/// The Entra scope for Batch. The double slash is deliberate: it yields the resource
/// `https://batch.core.windows.net/`, the form the official SDKs use.
pub const BATCH_SCOPE: &str = "https://batch.core.windows.net//.default";

/// How requests are authenticated.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum BatchAuth {
    /// Shared Key: the account name and one of its access keys (base64).
    SharedKey {
        /// The Batch account name (lower case; the first label of the endpoint host).
        account: String,
        /// The access key.
        key: Secret,
    },
    /// A Microsoft Entra token for [`BATCH_SCOPE`].
    Entra(EntraAuth),
}

/// Where Entra tokens come from.
#[derive(Clone)]
#[non_exhaustive]
pub enum EntraAuth {
    /// Managed identity: App Service / Functions (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`, read
    /// by `azure_identity` itself) or IMDS. `client_id` picks a user-assigned identity.
    ManagedIdentity {
        /// Client id of a user-assigned identity; `None` for the system-assigned one.
        client_id: Option<String>,
    },
    /// A service principal with a client secret.
    ClientSecret {
        /// Directory (tenant) id.
        tenant_id: String,
        /// Application (client) id.
        client_id: String,
        /// The client secret.
        secret: Secret,
    },
    /// The Azure CLI or Azure Developer CLI login, for a developer's machine.
    DeveloperTools,
    /// Any other `azure_core` credential (tests inject a fake one here).
    Credential(Arc<dyn TokenCredential>),
}

impl fmt::Debug for EntraAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ManagedIdentity { client_id } => f
                .debug_struct("ManagedIdentity")
                .field("client_id", client_id)
                .finish(),
            Self::ClientSecret {
                tenant_id,
                client_id,
                secret,
            } => f
                .debug_struct("ClientSecret")
                .field("tenant_id", tenant_id)
                .field("client_id", client_id)
                .field("secret", secret)
                .finish(),
            Self::DeveloperTools => f.write_str("DeveloperTools"),
            Self::Credential(_) => f.write_str("Credential(..)"),
        }
    }
}

/// Everything a [`crate::BatchClient`] is built from. Deliberately no `Default`: an endpoint and
/// an auth method must be chosen.
#[derive(Clone, Debug)]
pub struct BatchConfig {
    /// The account endpoint, e.g. `https://acct.westeurope.batch.azure.com`. The only origin the
    /// client ever contacts. `http` is accepted only for loopback hosts (the emulator).
    pub endpoint: Url,
    /// How requests are authenticated.
    pub auth: BatchAuth,
    /// The `api-version` query parameter.
    pub api_version: String,
    /// How failed calls are retried.
    pub retry: RetryPolicy,
    /// Longest one attempt may take (connect, send, read a JSON body); the call's deadline may
    /// cut it shorter. Downloads are bounded by the deadline and `read_timeout` instead.
    pub attempt_timeout: Duration,
    /// Longest a download may stall without receiving a byte before it is resumed.
    pub read_timeout: Duration,
    /// Largest JSON body (a list page, an error) read into memory; a larger one is an error.
    pub max_json_bytes: usize,
}

impl BatchConfig {
    /// A config with the defaults: api-version [`DEFAULT_API_VERSION`], standard retries,
    /// 60 s attempts, 30 s read stall, 64 MiB JSON bodies. A bare host gets `https://`.
    pub fn new(endpoint: &str, auth: BatchAuth) -> Result<Self, ConfigError> {
        Ok(Self {
            endpoint: parse_endpoint(endpoint)?,
            auth,
            api_version: DEFAULT_API_VERSION.to_owned(),
            retry: RetryPolicy::standard(),
            attempt_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(30),
            max_json_bytes: 64 * 1024 * 1024,
        })
    }

    /// A Shared Key config.
    pub fn shared_key(endpoint: &str, account: &str, key: Secret) -> Result<Self, ConfigError> {
        Self::new(
            endpoint,
            BatchAuth::SharedKey {
                account: account.to_ascii_lowercase(),
                key,
            },
        )
    }

    /// A config from the variables the Azure CLI uses, looked up through `get` (handlers pass
    /// `|name| std::env::var(name).ok()`):
    /// - `AZURE_BATCH_ENDPOINT` (required; `https://` is added to a bare host),
    /// - `AZURE_BATCH_ACCOUNT` (required with a key; otherwise the first label of the host),
    /// - `AZURE_BATCH_ACCESS_KEY`: Shared Key if set, else Entra:
    ///   managed identity when `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` are set (user-assigned
    ///   with `AZURE_CLIENT_ID`), a client secret when `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and
    ///   `AZURE_CLIENT_SECRET` are set, and the developer tools (Azure CLI login) otherwise.
    ///
    /// Empty values count as unset.
    pub fn from_env_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let endpoint =
            var("AZURE_BATCH_ENDPOINT").ok_or(ConfigError::Missing("AZURE_BATCH_ENDPOINT"))?;
        parse_endpoint(&endpoint)?;
        let auth = match var("AZURE_BATCH_ACCESS_KEY") {
            Some(key) => BatchAuth::SharedKey {
                account: var("AZURE_BATCH_ACCOUNT")
                    .ok_or(ConfigError::Missing("AZURE_BATCH_ACCOUNT"))?
                    .to_ascii_lowercase(),
                key: Secret::new(key),
            },
            None => {
                let entra =
                    if var("IDENTITY_ENDPOINT").is_some() && var("IDENTITY_HEADER").is_some() {
                        EntraAuth::ManagedIdentity {
                            client_id: var("AZURE_CLIENT_ID"),
                        }
                    } else if let (Some(tenant_id), Some(client_id), Some(secret)) = (
                        var("AZURE_TENANT_ID"),
                        var("AZURE_CLIENT_ID"),
                        var("AZURE_CLIENT_SECRET"),
                    ) {
                        EntraAuth::ClientSecret {
                            tenant_id,
                            client_id,
                            secret: Secret::new(secret),
                        }
                    } else {
                        EntraAuth::DeveloperTools
                    };
                BatchAuth::Entra(entra)
            }
        };
        Self::new(&endpoint, auth)
    }
}

/// Parses and checks an account endpoint: http(s) only, `http` only on loopback (a key-signed or
/// token-bearing request never crosses a network in clear text), no credentials, query or
/// fragment. A trailing `/` is dropped so that paths join cleanly.
pub(crate) fn parse_endpoint(text: &str) -> Result<Url, ConfigError> {
    let text = text.trim();
    let with_scheme = if text.contains("://") {
        text.to_owned()
    } else {
        format!("https://{text}")
    };
    let invalid = |reason: &str| ConfigError::InvalidEndpoint(format!("{reason}: {with_scheme}"));
    let mut url = Url::parse(&with_scheme).map_err(|e| invalid(&e.to_string()))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(invalid(
                "plain http is only allowed for a loopback emulator",
            ));
        }
        _ => return Err(invalid("the scheme must be https")),
    }
    if url.host().is_none() {
        return Err(invalid("no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials in the URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a query or fragment"));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Ok(url)
}

/// Whether a URL's host is a loopback address or `localhost`.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn env_with_key_gives_shared_key() {
        let config = BatchConfig::from_env_vars(env(&[
            ("AZURE_BATCH_ENDPOINT", "acct.westeurope.batch.azure.com"),
            ("AZURE_BATCH_ACCOUNT", "Acct"),
            ("AZURE_BATCH_ACCESS_KEY", "c2VjcmV0LWtleQ=="),
        ]))
        .unwrap();
        assert_eq!(
            config.endpoint.as_str(),
            "https://acct.westeurope.batch.azure.com/"
        );
        assert_eq!(config.api_version, DEFAULT_API_VERSION);
        match &config.auth {
            BatchAuth::SharedKey { account, key } => {
                assert_eq!(account, "acct");
                assert_eq!(key.expose(), "c2VjcmV0LWtleQ==");
            }
            other => panic!("expected shared key, got {other:?}"),
        }
        let debug = format!("{config:?}");
        assert!(!debug.contains("c2VjcmV0LWtleQ=="), "{debug}");
    }

    #[test]
    fn env_without_key_picks_an_entra_source() {
        let base = [("AZURE_BATCH_ENDPOINT", "https://acct.x.batch.azure.com/")];
        let mi = BatchConfig::from_env_vars(env(&[
            base[0],
            ("IDENTITY_ENDPOINT", "http://localhost:8081/msi/token"),
            ("IDENTITY_HEADER", "h"),
            ("AZURE_CLIENT_ID", "cid"),
        ]))
        .unwrap();
        assert!(matches!(
            mi.auth,
            BatchAuth::Entra(EntraAuth::ManagedIdentity { client_id: Some(ref id) }) if id == "cid"
        ));
        let sp = BatchConfig::from_env_vars(env(&[
            base[0],
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "very-secret-value"),
        ]))
        .unwrap();
        assert!(matches!(
            sp.auth,
            BatchAuth::Entra(EntraAuth::ClientSecret { .. })
        ));
        assert!(!format!("{sp:?}").contains("very-secret-value"));
        let dev =
            BatchConfig::from_env_vars(env(&[base[0], ("AZURE_BATCH_ACCESS_KEY", " ")])).unwrap();
        assert!(matches!(
            dev.auth,
            BatchAuth::Entra(EntraAuth::DeveloperTools)
        ));
    }

    #[test]
    fn env_errors_name_the_variable() {
        assert_eq!(
            BatchConfig::from_env_vars(env(&[])).unwrap_err(),
            ConfigError::Missing("AZURE_BATCH_ENDPOINT")
        );
        assert_eq!(
            BatchConfig::from_env_vars(env(&[
                ("AZURE_BATCH_ENDPOINT", "https://a.b.batch.azure.com"),
                ("AZURE_BATCH_ACCESS_KEY", "k"),
            ]))
            .unwrap_err(),
            ConfigError::Missing("AZURE_BATCH_ACCOUNT")
        );
    }

    #[test]
    fn endpoints_are_checked() {
        assert!(parse_endpoint("http://127.0.0.1:8080").is_ok());
        assert!(parse_endpoint("http://localhost:8080/").is_ok());
        assert!(parse_endpoint("http://[::1]:8080/").is_ok());
        assert!(parse_endpoint("http://acct.westeurope.batch.azure.com").is_err());
        assert!(parse_endpoint("ftp://acct.westeurope.batch.azure.com").is_err());
        assert!(parse_endpoint("https://user:pw@acct.westeurope.batch.azure.com").is_err());
        assert!(parse_endpoint("https://acct.westeurope.batch.azure.com/?sig=x").is_err());
        assert_eq!(
            parse_endpoint("http://127.0.0.1:9/base/").unwrap().path(),
            "/base"
        );
    }
}
