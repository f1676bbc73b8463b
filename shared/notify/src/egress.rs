//! Safe egress: the host [`Allowlist`], the HTTP client that never follows redirects and never
//! connects to private addresses it was not told about, and the retry loop every HTTP channel
//! shares (`Egress::post`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use batch_client::{Deadline, RetryPolicy, Secret};
use rand::Rng;
use reqwest::header::HeaderMap;
use url::{Host, Url};

use crate::error::{NotifyError, is_retryable_status};

/// The default allowlist: Teams Workflows / Logic Apps / Power Platform hosts, legacy Office 365
/// connector hosts, and Azure Communication Services endpoints.
pub const DEFAULT_HOSTS: &[&str] = &[
    "*.logic.azure.com",
    "*.powerplatform.com",
    "api.powerautomate.com",
    "*.webhook.office.com",
    "*.communication.azure.com",
];

/// Which hosts notifications may be sent to.
///
/// Patterns are exact hosts (`hooks.example.com`, `10.0.0.5`) or `*.suffix` (any host ending in
/// `.suffix`, not `suffix` itself). Matching is case-insensitive. Only `https` is allowed, except
/// `http` to loopback when [`Allowlist::allow_loopback`] was called (local tests). An IP address,
/// literal or resolved, that is private, link-local, loopback, unspecified or otherwise not
/// globally routable is refused unless it is listed exactly (loopback: unless loopback is allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowlist {
    patterns: Vec<String>,
    loopback: bool,
}

impl Default for Allowlist {
    fn default() -> Self {
        Self::new(DEFAULT_HOSTS.iter().copied())
    }
}

impl Allowlist {
    /// An allowlist of exactly these patterns (no defaults).
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            patterns: patterns
                .into_iter()
                .map(|p| p.trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|p| !p.is_empty())
                .collect(),
            loopback: false,
        }
    }

    /// Adds a pattern (an exact host or `*.suffix`).
    pub fn with(mut self, pattern: &str) -> Self {
        self.patterns.extend(Self::new([pattern]).patterns);
        self
    }

    /// Allows loopback addresses (`127.0.0.1`, `::1`, `localhost`) over plain `http`: for
    /// tests and local receivers only.
    pub fn allow_loopback(mut self) -> Self {
        self.loopback = true;
        self
    }

    /// Whether a host name matches a pattern.
    fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.patterns.iter().any(|pattern| {
            if let Some(suffix) = pattern.strip_prefix("*.") {
                host.len() > suffix.len() + 1
                    && host.ends_with(suffix)
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            } else {
                *pattern == host
            }
        })
    }

    /// Whether connecting to this address is allowed.
    fn address_allowed(&self, ip: IpAddr) -> Result<(), String> {
        if ip.is_loopback() {
            return if self.loopback {
                Ok(())
            } else {
                Err("loopback address (not allowed outside tests)".into())
            };
        }
        if is_public(ip) || self.patterns.iter().any(|p| p.parse::<IpAddr>() == Ok(ip)) {
            Ok(())
        } else {
            Err("private, link-local or reserved address".into())
        }
    }

    /// Checks a destination before any connection: scheme, host pattern, literal addresses.
    pub fn check(&self, url: &Url) -> Result<(), NotifyError> {
        let host_text = url.host_str().unwrap_or_default().to_owned();
        let refuse = |reason: &str| NotifyError::HostNotAllowed {
            host: host_text.clone(),
            reason: reason.to_owned(),
        };
        let host = url.host().ok_or_else(|| refuse("no host"))?;
        let ip = match host {
            Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            Host::Domain(name) if self.loopback && name.eq_ignore_ascii_case("localhost") => {
                Some(IpAddr::from([127, 0, 0, 1]))
            }
            Host::Domain(_) => None,
        };
        let loopback = ip.is_some_and(|ip| ip.is_loopback());
        match url.scheme() {
            "https" => {}
            "http" if loopback && self.loopback => {}
            _ => {
                return Err(refuse(
                    "only https is allowed (http only to an allowed loopback)",
                ));
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse("credentials in the URL are not allowed"));
        }
        match ip {
            Some(ip) => self.address_allowed(ip).map_err(|reason| refuse(&reason)),
            None if self.matches(&host_text) => Ok(()),
            None => Err(refuse("host is not on the allowlist")),
        }
    }
}

/// Whether an address is globally routable (not private, loopback, link-local, CGNAT,
/// documentation, multicast or unspecified).
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0)
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

/// A DNS resolver that drops refused addresses, so a permitted name that resolves to a private
/// address (DNS rebinding) cannot reach it.
struct GuardedResolver(Arc<Allowlist>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allowlist = Arc::clone(&self.0);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|addr| allowlist.address_allowed(addr.ip()).is_ok())
                .collect();
            if addrs.is_empty() {
                return Err(Box::new(BlockedAddress) as Box<dyn std::error::Error + Send + Sync>);
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The resolver's refusal, recognised in the error chain.
#[derive(Debug)]
struct BlockedAddress;

impl std::fmt::Display for BlockedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the host resolves only to refused addresses")
    }
}

impl std::error::Error for BlockedAddress {}

/// What a receiver acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The final HTTP status (250 for SMTP).
    pub status: u16,
    /// Attempts made, the successful one included.
    pub attempts: u32,
    /// ACS: the `Operation-Location` to poll for the send's outcome (it carries no secret).
    pub operation_location: Option<String>,
}

/// The outbound HTTP side shared by all channels: one client (rustls, no redirects, no proxy,
/// guarded DNS), an allowlist and a retry policy.
#[derive(Clone)]
pub struct Egress {
    /// Built on the first delivery: loading the TLS roots is most of a handler's start-up
    /// work, and most invocations never notify anyone.
    client: Arc<std::sync::OnceLock<reqwest::Client>>,
    allowlist: Arc<Allowlist>,
    policy: RetryPolicy,
    /// Per host, the earliest instant the next paced request may start.
    pacing: Arc<tokio::sync::Mutex<HashMap<String, tokio::time::Instant>>>,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("allowlist", &self.allowlist)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Egress {
    /// Builds the client. Proxies from the environment are not used: a proxy would resolve names
    /// itself and bypass the address checks.
    ///
    /// The HTTP client itself is built on the first delivery; `new`
    /// keeps its `Result` so a configuration check can move here without changing callers.
    pub fn new(allowlist: Allowlist, policy: RetryPolicy) -> Result<Self, NotifyError> {
        Ok(Self {
            client: Arc::default(),
            allowlist: Arc::new(allowlist),
            policy,
            pacing: Arc::default(),
        })
    }

    /// The client, built once on first use.
    fn client(&self) -> Result<&reqwest::Client, NotifyError> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver(Arc::clone(&self.allowlist))))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("batch-triage/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| NotifyError::Config(format!("HTTP client: {}", e.without_url())))?;
        // Two first deliveries at once may both build one; either is fine, one is kept.
        Ok(self.client.get_or_init(|| client))
    }

    /// The allowlist in force.
    pub fn allowlist(&self) -> &Allowlist {
        &self.allowlist
    }

    /// The retry policy in force.
    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    /// Waits until at least `interval` has passed since the previous paced request to `host`
    /// (from any clone of this `Egress`), so bursts stay under a receiver's rate limit (Teams:
    /// 4 requests per second) instead of being throttled. Never waits past the deadline.
    pub(crate) async fn pace(&self, host: &str, interval: Duration, deadline: Deadline) {
        let start = {
            let mut pacing = self.pacing.lock().await;
            let now = tokio::time::Instant::now();
            let start = pacing.get(host).copied().unwrap_or(now).max(now);
            pacing.insert(host.to_owned(), start + interval);
            start
        };
        tokio::time::sleep_until(start.min(deadline.instant())).await;
    }

    /// POSTs to a secret URL with retries. `build` makes each attempt's request from a fresh
    /// builder (so per-attempt headers such as dates and signatures are recomputed). A 2xx whose body says
    /// "HTTP error 429" (legacy Teams connectors) counts as throttled.
    pub(crate) async fn post(
        &self,
        url: &Secret,
        build: &(dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder + Send + Sync),
        deadline: Deadline,
    ) -> Result<Delivery, NotifyError> {
        let url = parse_url(url)?;
        self.allowlist.check(&url)?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let client = self.client()?;
        // A Send RNG: this future is awaited on multi-threaded runtimes (rand::rng() is not Send).
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let request = build(client.post(url.clone()));
            let outcome =
                match tokio::time::timeout_at(deadline.instant(), self.once(request)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(NotifyError::Transport("timed out at the deadline".into())),
                };
            let error = match outcome {
                Ok(mut delivery) => {
                    delivery.attempts = attempt;
                    tracing::info!(host, status = delivery.status, attempt, "delivered");
                    return Ok(delivery);
                }
                Err(error) => error,
            };
            let retryable = error.is_retryable();
            tracing::warn!(host, attempt, retryable, error = %error, "delivery attempt failed");
            if !retryable || attempt >= self.policy.max_attempts {
                return Err(error);
            }
            let wait = error
                .retry_after()
                .unwrap_or_else(|| backoff(&self.policy, attempt - 1, &mut rng));
            if wait >= deadline.remaining() {
                return Err(NotifyError::DeadlineExceeded {
                    attempts: attempt,
                    last: Box::new(error),
                });
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt: send, classify the answer.
    async fn once(&self, request: reqwest::RequestBuilder) -> Result<Delivery, NotifyError> {
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let operation_location = headers
            .get("operation-location")
            .and_then(|v| v.to_str().ok())
            .map(|v| diagnosis::redact::strip_query(v).to_owned());
        if (300..400).contains(&status) {
            return Err(NotifyError::Redirected { status });
        }
        let body = response.bytes().await.unwrap_or_default();
        let excerpt = || {
            let text = String::from_utf8_lossy(&body);
            let text = crate::text::keep_start(text.trim(), 300);
            (!text.is_empty()).then(|| diagnosis::redact::redact(&text))
        };
        if (200..300).contains(&status) {
            // Legacy Teams connectors answer 200 with "Microsoft Teams endpoint returned HTTP
            // error 429" in the body when throttled.
            let text = String::from_utf8_lossy(&body);
            if text.contains("HTTP error 429") {
                return Err(NotifyError::Status {
                    status: 429,
                    retry_after: None,
                    detail: excerpt(),
                });
            }
            return Ok(Delivery {
                status,
                attempts: 0,
                operation_location,
            });
        }
        Err(NotifyError::Status {
            status,
            retry_after: if is_retryable_status(status) {
                parse_retry_after(&headers, SystemTime::now())
            } else {
                None
            },
            detail: excerpt(),
        })
    }
}

/// Parses a secret URL without letting its text into the error.
pub(crate) fn parse_url(url: &Secret) -> Result<Url, NotifyError> {
    Url::parse(url.expose().trim())
        .map_err(|e| NotifyError::Config(format!("the receiver URL is not a valid URL ({e})")))
}

/// A transport failure, described without the URL; a refused resolution is not retryable.
fn transport_error(error: reqwest::Error) -> NotifyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(cause) = source {
        if cause.is::<BlockedAddress>() {
            return NotifyError::HostNotAllowed {
                host: error
                    .url()
                    .and_then(|u| u.host_str())
                    .unwrap_or_default()
                    .to_owned(),
                reason: BlockedAddress.to_string(),
            };
        }
        source = cause.source();
    }
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    NotifyError::Transport(format!("{kind}: {}", error.without_url()))
}

/// Backoff before retry number `retry` (0-based): equal jitter, capped.
pub(crate) fn backoff(policy: &RetryPolicy, retry: u32, rng: &mut impl Rng) -> Duration {
    let ceiling = policy
        .base_delay
        .saturating_mul(2u32.saturating_pow(retry.min(20)))
        .min(policy.max_delay);
    let half = ceiling / 2;
    let jitter = rng.random_range(0..=u64::try_from(half.as_millis()).unwrap_or(u64::MAX));
    half + Duration::from_millis(jitter)
}

/// The wait a response asks for: `retry-after-ms`, or `Retry-After` as seconds or an HTTP date.
/// Capped at an hour; the deadline decides whether waiting is worth it.
pub(crate) fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    const LIMIT: Duration = Duration::from_secs(3600);
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(Duration::from_millis(ms).min(LIMIT));
    }
    let value = text("retry-after")?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds).min(LIMIT));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(LIMIT),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn allowlist_patterns() {
        let list = Allowlist::default();
        assert!(
            list.check(&url(
                "https://prod-12.westeurope.logic.azure.com/workflows/x?sig=s"
            ))
            .is_ok()
        );
        assert!(
            list.check(&url("https://x.communication.azure.com/emails:send"))
                .is_ok()
        );
        assert!(list.check(&url("https://logic.azure.com/")).is_err());
        assert!(list.check(&url("https://evillogic.azure.com/")).is_err());
        assert!(
            list.check(&url("https://logic.azure.com.evil.net/"))
                .is_err()
        );
        assert!(list.check(&url("http://prod.logic.azure.com/")).is_err());
        assert!(
            list.check(&url("https://user:pw@prod.logic.azure.com/"))
                .is_err()
        );
        assert!(list.check(&url("http://127.0.0.1:8080/")).is_err());
        let local = Allowlist::new([]).allow_loopback();
        assert!(local.check(&url("http://127.0.0.1:8080/")).is_ok());
        assert!(local.check(&url("http://localhost:8080/")).is_ok());
        assert!(local.check(&url("http://10.0.0.5/")).is_err());
        assert!(local.check(&url("https://169.254.169.254/")).is_err());
        assert!(local.check(&url("https://[fe80::1]/")).is_err());
        let private = Allowlist::new(["10.0.0.5"]);
        assert!(private.check(&url("https://10.0.0.5/hook")).is_ok());
        assert!(private.check(&url("https://10.0.0.6/hook")).is_err());
    }

    #[test]
    fn public_addresses() {
        assert!(is_public("20.50.2.1".parse().unwrap()));
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "7".parse().unwrap());
        assert_eq!(
            parse_retry_after(&headers, now),
            Some(Duration::from_secs(7))
        );
        headers.insert(
            "retry-after",
            httpdate::fmt_http_date(now + Duration::from_secs(3))
                .parse()
                .unwrap(),
        );
        assert_eq!(
            parse_retry_after(&headers, now),
            Some(Duration::from_secs(3))
        );
        headers.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(parse_retry_after(&headers, now), None);
    }
}
