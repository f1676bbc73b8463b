//! An HTTP client for the Azure SDK's pipelines that builds its reqwest client on the first
//! request. The SDK's default builds one when a client or credential is created, and building
//! one loads the system's TLS roots: most of a handler's start-up time, paid before the
//! Functions host's first invocation even when the invocation needs no Entra token.
//!
//! One crate for it because the Batch client (its Entra credential) and the artifact store (Blob
//! Storage) both need it and sit on the same layer.

use std::sync::OnceLock;

use azure_core::http::{AsyncRawResponse, HttpClient, Request};

/// Connect and read timeouts of the SDK's own default client.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// See the module documentation.
#[derive(Debug, Default)]
pub struct LazyHttpClient(OnceLock<reqwest::Client>);

impl LazyHttpClient {
    /// A transport for `ClientOptions::transport`.
    pub fn transport() -> azure_core::http::Transport {
        azure_core::http::Transport::new(std::sync::Arc::new(Self::default()))
    }

    fn client(&self) -> azure_core::Result<&reqwest::Client> {
        if let Some(client) = self.0.get() {
            return Ok(client);
        }
        // As the SDK builds its default: no redirects (the REST guidelines use none).
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Other,
                    format!("cannot build the HTTP client: {e}"),
                )
            })?;
        // Two first requests at once may both build one; either is fine, one is kept.
        Ok(self.0.get_or_init(|| client))
    }

    /// Whether the first request has built the client yet.
    pub fn is_built(&self) -> bool {
        self.0.get().is_some()
    }
}

#[async_trait::async_trait]
impl HttpClient for LazyHttpClient {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        self.client()?.execute_request(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_client_is_built_by_the_first_request() {
        let lazy = LazyHttpClient::default();
        assert!(!lazy.is_built(), "nothing built up front");
        // Nothing listens on the loopback's discard port: the request fails, the client exists.
        let url = azure_core::http::Url::parse("http://127.0.0.1:9/").unwrap();
        let request = Request::new(url, azure_core::http::Method::Get);
        assert!(lazy.execute_request(&request).await.is_err());
        assert!(lazy.is_built(), "built by the first request");
    }
}
