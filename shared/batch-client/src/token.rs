//! Entra tokens for Batch: one `azure_identity` credential, one cached token refreshed shortly
//! before it expires, so a burst of calls costs one token request.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_identity::{
    ClientSecretCredential, DeveloperToolsCredential, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId,
};
use foundation::{Deadline, Secret};
use time::OffsetDateTime;

use crate::config::{BATCH_SCOPE, EntraAuth};
use crate::error::{BatchError, ConfigError, ErrorInfo};

/// A token is renewed when it has less than this left, so that it never expires mid-request.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// A token and when it expires.
struct Cached {
    /// The bearer token.
    token: Secret,
    /// When the identity platform says it expires.
    expires_on: OffsetDateTime,
}

/// Hands out bearer tokens for [`BATCH_SCOPE`] from a credential, cached.
pub(crate) struct TokenSource {
    /// Where tokens come from.
    credential: Arc<dyn TokenCredential>,
    /// The current token. An async mutex so that concurrent callers wait for one refresh instead
    /// of each asking the identity endpoint.
    cache: tokio::sync::Mutex<Option<Cached>>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSource(..)")
    }
}

impl TokenSource {
    /// Builds the credential the config names.
    pub(crate) fn new(auth: &EntraAuth) -> Result<Self, ConfigError> {
        let credential: Arc<dyn TokenCredential> = match auth {
            EntraAuth::ManagedIdentity { client_id } => {
                let options = ManagedIdentityCredentialOptions {
                    user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                    // TLS roots load on the first token request, not at start (the lazy-http crate).
                    client_options: azure_core::http::ClientOptions {
                        transport: Some(lazy_http::LazyHttpClient::transport()),
                        ..Default::default()
                    },
                };
                ManagedIdentityCredential::new(Some(options))
                    .map_err(|e| ConfigError::Credential(e.to_string()))?
            }
            EntraAuth::ClientSecret {
                tenant_id,
                client_id,
                secret,
            } => ClientSecretCredential::new(
                tenant_id,
                client_id.clone(),
                azure_core::credentials::Secret::new(secret.expose().to_owned()),
                None,
            )
            .map_err(|e| ConfigError::Credential(e.to_string()))?,
            EntraAuth::DeveloperTools => DeveloperToolsCredential::new(None)
                .map_err(|e| ConfigError::Credential(e.to_string()))?,
            EntraAuth::Credential(credential) => credential.clone(),
        };
        Ok(Self {
            credential,
            cache: tokio::sync::Mutex::new(None),
        })
    }

    /// A token valid for at least [`REFRESH_MARGIN`], fetching a new one if needed, within the
    /// deadline.
    pub(crate) async fn token(
        &self,
        operation: &'static str,
        deadline: Deadline,
    ) -> Result<Secret, BatchError> {
        let mut cache = self.cache.lock().await;
        let fresh_until = OffsetDateTime::now_utc() + REFRESH_MARGIN;
        if let Some(cached) = cache.as_ref().filter(|c| c.expires_on > fresh_until) {
            return Ok(cached.token.clone());
        }
        let fetch = self.credential.get_token(&[BATCH_SCOPE], None);
        let token = match tokio::time::timeout_at(deadline.instant(), fetch).await {
            Ok(Ok(token)) => token,
            Ok(Err(error)) => return Err(token_error(operation, &error)),
            Err(_) => {
                return Err(BatchError::transient(
                    operation,
                    "deadline reached while fetching an Entra token",
                ));
            }
        };
        let secret = Secret::new(token.token.secret().to_owned());
        tracing::debug!(operation, expires_on = %token.expires_on, "fetched an Entra token for Batch");
        *cache = Some(Cached {
            token: secret.clone(),
            expires_on: token.expires_on,
        });
        Ok(secret)
    }
}

/// Classifies a credential failure: network trouble and 5xx/429 from the identity endpoint are
/// transient, the rest (no identity, wrong secret, not logged in) is an auth error.
fn token_error(operation: &'static str, error: &azure_core::Error) -> BatchError {
    use azure_core::error::ErrorKind;
    let info = Box::new(ErrorInfo::local(
        operation,
        format!("cannot get an Entra token: {error}"),
    ));
    match error.kind() {
        ErrorKind::Io => BatchError::Transient(info),
        ErrorKind::HttpResponse { status, .. }
            if u16::from(*status) >= 500 || u16::from(*status) == 429 =>
        {
            BatchError::Transient(info)
        }
        _ => BatchError::Auth(info),
    }
}
