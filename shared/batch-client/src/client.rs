//! The reqwest-based [`BatchClient`]: its construction, and the URLs it may contact (built
//! under the endpoint, or checked same-origin). Sending lives in `request` (one private
//! [`BatchClient::request`] owns headers, auth, retries, error mapping and logging); the
//! operations of [`crate::BatchApi`] are in `operations`, thin wrappers that build a
//! [`Call`](crate::request::Call) and decode the reply.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use foundation::RetryPolicy;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use url::Url;

use crate::api::FileRef;
use crate::config::{BatchAuth, BatchConfig, parse_endpoint};
use crate::error::{BatchError, ConfigError};
use crate::shared_key::SharedKeyCredential;
use crate::token::TokenSource;

/// Characters percent-encoded in a path parameter: everything but the RFC 3986 unreserved set,
/// exactly as Python's `quote(value, safe="")` in the official SDK (so `/` and `\` in a file path
/// become `%2F` and `%5C`).
const PATH_PARAM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How requests are authenticated, ready to use.
pub(crate) enum Authenticator {
    /// Shared Key signing.
    SharedKey(SharedKeyCredential),
    /// Entra bearer tokens.
    Token(TokenSource),
}

/// Shared state behind the cheap-to-clone client.
pub(crate) struct Inner {
    /// The HTTP client: rustls, no redirects, no decompression.
    pub(crate) http: reqwest::Client,
    /// The account endpoint: the only origin ever contacted.
    pub(crate) endpoint: Url,
    /// Auth.
    pub(crate) auth: Authenticator,
    /// `api-version`.
    pub(crate) api_version: String,
    /// Retry policy.
    pub(crate) retry: RetryPolicy,
    /// Bound of one non-streaming attempt.
    pub(crate) attempt_timeout: Duration,
    /// Largest JSON body read.
    pub(crate) max_json_bytes: usize,
}

/// The Azure Batch REST client. Cloning is cheap (one `Arc`); build it once per process.
#[derive(Clone)]
pub struct BatchClient {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for BatchClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match &self.inner.auth {
            Authenticator::SharedKey(key) => format!("SharedKey({})", key.account()),
            Authenticator::Token(_) => "Entra".to_owned(),
        };
        f.debug_struct("BatchClient")
            .field("endpoint", &self.inner.endpoint.as_str())
            .field("auth", &auth)
            .field("api_version", &self.inner.api_version)
            .field("retry", &self.inner.retry)
            .finish()
    }
}

impl BatchClient {
    /// Builds a client. Fails on an unacceptable endpoint, a key that is not base64, or an Entra
    /// credential that cannot be created.
    pub fn new(config: BatchConfig) -> Result<Self, ConfigError> {
        let endpoint = parse_endpoint(config.endpoint.as_str())?;
        let auth = match &config.auth {
            BatchAuth::SharedKey { account, key } => {
                Authenticator::SharedKey(SharedKeyCredential::new(account, key)?)
            }
            BatchAuth::Entra(entra) => Authenticator::Token(TokenSource::new(entra)?),
        };
        if config.api_version.trim().is_empty() {
            return Err(ConfigError::Invalid {
                name: "api_version",
                reason: "empty".to_owned(),
            });
        }
        if config.retry.max_attempts == 0 {
            return Err(ConfigError::Invalid {
                name: "retry.max_attempts",
                reason: "must be at least 1".to_owned(),
            });
        }
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_gzip()
            .no_brotli()
            .no_deflate()
            .no_zstd()
            .connect_timeout(config.attempt_timeout.min(Duration::from_secs(30)))
            .read_timeout(config.read_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("batch-triage/", env!("CARGO_PKG_VERSION")));
        if endpoint.host_str().is_some_and(is_loopback_host) {
            // A proxy from the environment must not swallow the loopback emulator's traffic.
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| ConfigError::Http(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                endpoint,
                auth,
                api_version: config.api_version,
                retry: config.retry,
                attempt_timeout: config.attempt_timeout,
                max_json_bytes: config.max_json_bytes,
            }),
        })
    }

    /// The configured endpoint.
    pub fn endpoint(&self) -> &Url {
        &self.inner.endpoint
    }

    /// Builds a URL under the endpoint from path parameters (each percent-encoded as one
    /// segment) and query parameters; `api-version` comes first.
    pub(crate) fn url(
        &self,
        op: &'static str,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Url, BatchError> {
        let mut path = self.inner.endpoint.path().trim_end_matches('/').to_owned();
        for segment in segments {
            path.push('/');
            path.extend(utf8_percent_encode(segment, PATH_PARAM));
        }
        let mut url = self.inner.endpoint.clone();
        url.set_path(&path);
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("api-version", &self.inner.api_version);
            for (name, value) in query {
                pairs.append_pair(name, value);
            }
        }
        // A segment can never climb out of the endpoint: ids are checked, and `/` is encoded.
        if url.origin() != self.inner.endpoint.origin() {
            return Err(BatchError::refused(op, "built URL left the endpoint"));
        }
        Ok(url)
    }

    /// Checks that a URL from a payload is same-origin (scheme, host, port) with the endpoint,
    /// carries no credentials, and adds `api-version` if it lacks one. The error names only the
    /// origins, never the path or query (which may hold a SAS).
    pub(crate) fn checked_url(&self, op: &'static str, text: &str) -> Result<Url, BatchError> {
        let mut url = Url::parse(text.trim())
            .map_err(|e| BatchError::refused(op, format!("not an absolute URL ({e})")))?;
        let expected = self.inner.endpoint.origin();
        if url.origin() != expected || !url.username().is_empty() || url.password().is_some() {
            return Err(BatchError::refused(
                op,
                format!(
                    "{} is not the configured Batch endpoint {}",
                    url.origin().ascii_serialization(),
                    expected.ascii_serialization()
                ),
            ));
        }
        url.set_fragment(None);
        if !url.query_pairs().any(|(name, _)| name == "api-version") {
            url.query_pairs_mut()
                .append_pair("api-version", &self.inner.api_version);
        }
        Ok(url)
    }

    /// The URL of a file reference.
    pub(crate) fn file_url(&self, op: &'static str, file: &FileRef) -> Result<Url, BatchError> {
        match file {
            FileRef::Task {
                job_id,
                task_id,
                path,
            } => {
                check_id(op, "job id", job_id)?;
                check_id(op, "task id", task_id)?;
                check_id(op, "file path", path)?;
                self.url(op, &["jobs", job_id, "tasks", task_id, "files", path], &[])
            }
            FileRef::Node {
                pool_id,
                node_id,
                path,
            } => {
                check_id(op, "pool id", pool_id)?;
                check_id(op, "node id", node_id)?;
                check_id(op, "file path", path)?;
                self.url(
                    op,
                    &["pools", pool_id, "nodes", node_id, "files", path],
                    &[],
                )
            }
            FileRef::Url(text) => self.checked_url(op, text),
        }
    }
}

/// Refuses ids and paths that are empty or would be read as `.`/`..` path segments.
pub(crate) fn check_id(op: &'static str, what: &str, value: &str) -> Result<(), BatchError> {
    if value.is_empty() || value == "." || value == ".." || value.len() > 4096 {
        return Err(BatchError::bad_argument(op, format!("invalid {what}")));
    }
    Ok(())
}

/// Whether a host string names the loopback interface.
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
