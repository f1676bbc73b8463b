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

/// How the HTTP client is built, kept until the first request builds it.
pub(crate) struct HttpSettings {
    connect_timeout: Duration,
    read_timeout: Duration,
    /// Ignore proxies from the environment (a loopback endpoint).
    no_proxy: bool,
}

impl HttpSettings {
    fn build(&self) -> Result<reqwest::Client, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_gzip()
            .no_brotli()
            .no_deflate()
            .no_zstd()
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.read_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("batch-triage/", env!("CARGO_PKG_VERSION")));
        if self.no_proxy {
            // A proxy from the environment must not swallow the loopback emulator's traffic.
            builder = builder.no_proxy();
        }
        builder.build()
    }
}

/// Shared state behind the cheap-to-clone client.
pub(crate) struct Inner {
    /// The HTTP client (rustls, no redirects, no decompression), built by the first request:
    /// building it loads the system's TLS roots, most of a handler's start-up time, and the
    /// Functions host waits for the handler's start before the first invocation.
    pub(crate) http: std::sync::OnceLock<reqwest::Client>,
    /// What the HTTP client is built from.
    pub(crate) http_settings: HttpSettings,
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
        let http_settings = HttpSettings {
            connect_timeout: config.attempt_timeout.min(Duration::from_secs(30)),
            read_timeout: config.read_timeout,
            no_proxy: endpoint.host_str().is_some_and(is_loopback_host),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                http: std::sync::OnceLock::new(),
                http_settings,
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

    /// The HTTP client, built on first use. A build failure (no TLS roots on the machine) is
    /// not transient: retrying cannot install certificates.
    pub(crate) fn http(&self, op: &'static str) -> Result<&reqwest::Client, BatchError> {
        if let Some(client) = self.inner.http.get() {
            return Ok(client);
        }
        let client = self
            .inner
            .http_settings
            .build()
            .map_err(|e| BatchError::other(op, format!("cannot build the HTTP client: {e}")))?;
        // Two first requests at once may both build one; either is fine, one is kept.
        Ok(self.inner.http.get_or_init(|| client))
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
    if id_problem(value).is_some() {
        return Err(BatchError::bad_argument(op, format!("invalid {what}")));
    }
    Ok(())
}

/// The longest id or file path this client puts in a URL (Batch's own ids are at most 64
/// characters; this bounds what a forged payload can make it send).
pub const MAX_ID_BYTES: usize = 4096;

/// Why this client will never send `id` as a path parameter, or `None` when it will: an empty id,
/// `.` or `..` (read as "this" or "up" in a path) or one longer than [`MAX_ID_BYTES`]. Every call
/// naming such an id is refused before any request, so a caller can ask up front and refuse the
/// subject once instead of failing on every run.
pub fn id_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        Some("an id may not be empty")
    } else if id == "." || id == ".." {
        Some("an id may not be `.` or `..` (a path would read it as a directory step)")
    } else if id.len() > MAX_ID_BYTES {
        Some("an id may be at most 4096 bytes")
    } else {
        None
    }
}

/// Whether a host string names the loopback interface.
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BatchApi, GetOptions};
    use crate::config::BatchConfig;
    use foundation::{Deadline, Secret};

    /// Building the client reads no TLS roots; the first request builds the HTTP client once.
    #[tokio::test]
    async fn the_http_client_is_built_by_the_first_request_not_at_start() {
        // Nothing listens on port 9 of the loopback (discard): the request fails fast.
        let config = BatchConfig::shared_key(
            "http://127.0.0.1:9",
            "acct",
            Secret::new("c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ=="),
        )
        .unwrap();
        let client = BatchClient::new(config).unwrap();
        assert!(client.inner.http.get().is_none(), "no HTTP client at start");

        let error = client
            .get_job(
                "job",
                &GetOptions::default(),
                Deadline::after(Duration::from_secs(2)),
            )
            .await
            .expect_err("nothing listens");
        assert!(!error.is_not_found(), "a transport failure: {error}");
        let first = client.inner.http.get().expect("built by the first request") as *const _;
        let _ = client
            .get_job(
                "job",
                &GetOptions::default(),
                Deadline::after(Duration::from_secs(2)),
            )
            .await;
        assert_eq!(
            client.inner.http.get().map(|c| c as *const _),
            Some(first),
            "built once, then reused"
        );
    }
}
