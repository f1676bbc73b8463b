//! Safe egress: the host [`Allowlist`] every channel obeys (HTTP, SMTP and ACS alike), the HTTP
//! client that never follows redirects and never connects to private addresses it was not told
//! about, the vetted resolution SMTP connects through, and the retry loop every channel shares
//! (`Egress::with_retries`, deciding with `foundation`'s [`RetryPolicy::decide`]).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use foundation::{Deadline, RetryDecision, RetryPolicy, Retryable, Secret, parse_retry_after};
use url::{Host, Url};

use crate::error::{NotifyError, is_retryable_status};

/// The default allowlist: Teams Workflows / Logic Apps / Power Platform hosts, legacy Office 365
/// connector hosts, Azure Communication Services endpoints, Microsoft 365's SMTP submission
/// host, PagerDuty's Events API (US and EU service regions) and Slack's incoming webhooks.
pub const DEFAULT_HOSTS: &[&str] = &[
    "*.logic.azure.com",
    "*.powerplatform.com",
    "api.powerautomate.com",
    "*.webhook.office.com",
    "*.communication.azure.com",
    "smtp.office365.com",
    "events.pagerduty.com",
    "events.eu.pagerduty.com",
    "hooks.slack.com",
];

/// Which hosts notifications may be sent to, over any channel: HTTP (Teams, webhooks), SMTP and
/// ACS.
///
/// Patterns are exact hosts (`hooks.example.com`, `10.0.0.5`) or `*.suffix` (any host ending in
/// `.suffix`, not `suffix` itself). Matching is case-insensitive. Every host is matched, names
/// and IP literals alike: an IP literal is allowed only when it is listed exactly (or is loopback
/// and [`Allowlist::allow_loopback`] was called). A name is resolved at connect time and an
/// address that is private, link-local, loopback, unspecified, multicast or otherwise not
/// globally routable is refused unless it is listed exactly (loopback: unless loopback is
/// allowed). Over HTTP only `https` is allowed, except `http` to an allowed loopback (local
/// tests).
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

    /// Whether an IP address is listed exactly.
    fn lists(&self, ip: IpAddr) -> bool {
        self.patterns
            .iter()
            .any(|p| p.trim_matches(['[', ']']).parse::<IpAddr>() == Ok(ip))
    }

    /// Whether connecting to this address (a resolved one) is allowed.
    fn address_allowed(&self, ip: IpAddr) -> Result<(), String> {
        if ip.is_loopback() {
            return if self.loopback {
                Ok(())
            } else {
                Err("loopback address (not allowed outside tests)".into())
            };
        }
        if is_public(ip) || self.lists(ip) {
            Ok(())
        } else {
            Err("private, link-local or reserved address".into())
        }
    }

    /// Whether a host as written in a destination may be contacted, before any lookup: an IP
    /// literal must be listed exactly (or be loopback, with loopback allowed), a name must match
    /// a pattern (or be `localhost`, with loopback allowed).
    fn host_allowed<S: AsRef<str>>(&self, host: &Host<S>) -> Result<(), String> {
        let ip = match host {
            Host::Ipv4(ip) => IpAddr::V4(*ip),
            Host::Ipv6(ip) => IpAddr::V6(*ip),
            Host::Domain(name)
                if self.loopback && name.as_ref().eq_ignore_ascii_case("localhost") =>
            {
                return Ok(());
            }
            Host::Domain(name) if self.matches(name.as_ref()) => return Ok(()),
            Host::Domain(_) => return Err("host is not on the allowlist".into()),
        };
        if ip.is_loopback() {
            return self.address_allowed(ip);
        }
        match (self.lists(ip), is_public(ip)) {
            (true, _) => Ok(()),
            (false, true) => Err("IP address is not on the allowlist".into()),
            (false, false) => {
                Err("private, link-local or reserved address not on the allowlist".into())
            }
        }
    }

    /// Checks an HTTP destination before any connection: scheme, credentials, host.
    pub fn check(&self, url: &Url) -> Result<(), NotifyError> {
        let host_text = url.host_str().unwrap_or_default().to_owned();
        let refuse = |reason: &str| NotifyError::HostNotAllowed {
            host: host_text.clone(),
            reason: reason.to_owned(),
        };
        let host = url.host().ok_or_else(|| refuse("no host"))?;
        let loopback = match host {
            Host::Ipv4(ip) => ip.is_loopback(),
            Host::Ipv6(ip) => ip.is_loopback(),
            Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        };
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
        self.host_allowed(&host).map_err(|reason| refuse(&reason))
    }

    /// Checks a bare host (an SMTP server as written in the policy: a name, an IPv4 literal, or
    /// an IPv6 literal with or without brackets) before any connection.
    pub fn check_host(&self, host: &str) -> Result<(), NotifyError> {
        let host = parse_host(host)?;
        self.host_allowed(&host)
            .map_err(|reason| NotifyError::HostNotAllowed {
                host: host.to_string(),
                reason,
            })
    }

    /// Resolves a host the allowlist accepts and keeps only the addresses it may connect to, so
    /// the caller connects to exactly these (a name cannot be re-resolved to another address
    /// between the check and the connection: no DNS rebinding). A name that resolves only to
    /// refused addresses is refused; a failed lookup is a transport error (retryable).
    pub async fn vetted_addresses(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, NotifyError> {
        self.check_host(host)?;
        let host = parse_host(host)?;
        let refuse = |reason: String| NotifyError::HostNotAllowed {
            host: host.to_string(),
            reason,
        };
        let resolved: Vec<SocketAddr> = match &host {
            Host::Ipv4(ip) => vec![SocketAddr::new(IpAddr::V4(*ip), port)],
            Host::Ipv6(ip) => vec![SocketAddr::new(IpAddr::V6(*ip), port)],
            Host::Domain(name) => tokio::net::lookup_host((name.as_str(), port))
                .await
                .map_err(|e| NotifyError::Transport(format!("cannot resolve {host}: {e}")))?
                .collect(),
        };
        let mut refusal = None;
        let allowed: Vec<SocketAddr> = resolved
            .into_iter()
            .filter(|addr| match self.address_allowed(addr.ip()) {
                Ok(()) => true,
                Err(reason) => {
                    refusal.get_or_insert(reason);
                    false
                }
            })
            .collect();
        if allowed.is_empty() {
            return Err(refuse(match refusal {
                Some(reason) => format!("{BlockedAddress} ({reason})"),
                None => "the host resolves to no address".to_owned(),
            }));
        }
        Ok(allowed)
    }
}

/// A host as written (a name, an IPv4 literal, an IPv6 literal with or without brackets),
/// parsed the way URLs parse hosts, so that what is checked is what is connected to.
pub(crate) fn parse_host(text: &str) -> Result<Host<String>, NotifyError> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(match ip {
            IpAddr::V4(ip) => Host::Ipv4(ip),
            IpAddr::V6(ip) => Host::Ipv6(ip),
        });
    }
    match Host::parse(text) {
        Ok(Host::Domain(name)) => Ok(Host::Domain(name.trim_end_matches('.').to_owned())),
        Ok(host) => Ok(host),
        Err(e) => Err(NotifyError::HostNotAllowed {
            host: crate::text::keep_start(text, 100),
            reason: format!("not a valid host ({e})"),
        }),
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
    /// builder (so per-attempt headers such as dates and signatures are recomputed). A 2xx whose
    /// body says "HTTP error 429" (legacy Teams connectors) counts as throttled.
    pub(crate) async fn post(
        &self,
        url: &Secret,
        build: &(dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder + Send + Sync),
        deadline: Deadline,
    ) -> Result<Delivery, NotifyError> {
        self.post_carrying(url, build, deadline, None).await
    }

    /// [`Egress::post`] for a request whose body carries a secret (PagerDuty's routing key):
    /// every attempt's error is scrubbed of it before it is logged or returned, so a receiver
    /// that echoes the request cannot leak it.
    pub(crate) async fn post_carrying(
        &self,
        url: &Secret,
        build: &(dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder + Send + Sync),
        deadline: Deadline,
        body_secret: Option<&Secret>,
    ) -> Result<Delivery, NotifyError> {
        let url = parse_url(url)?;
        self.allowlist.check(&url)?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let client = self.client()?;
        self.with_retries(&host, deadline, || async {
            let outcome = self.once(build(client.post(url.clone()))).await;
            match body_secret {
                Some(secret) => outcome.map_err(|e| e.scrub(secret.expose())),
                None => outcome,
            }
        })
        .await
    }

    /// POSTs a JSON `body` to a secret URL with retries: [`Egress::post_carrying`] with the
    /// same body on every attempt.
    pub(crate) async fn post_json(
        &self,
        url: &Secret,
        body: Vec<u8>,
        deadline: Deadline,
        body_secret: Option<&Secret>,
    ) -> Result<Delivery, NotifyError> {
        let body = bytes::Bytes::from(body);
        self.post_carrying(
            url,
            &move |request| {
                request
                    .header("content-type", "application/json")
                    .body(body.clone())
            },
            deadline,
            body_secret,
        )
        .await
    }

    /// The one retry loop of every channel: runs `attempt` until it delivers, bounding each
    /// attempt by the deadline and deciding after each failure with the policy (a `Retry-After`
    /// the receiver sent is honoured, never shortened). Gives up with the last error, or with
    /// [`NotifyError::DeadlineExceeded`] when the next wait would end past the deadline.
    pub(crate) async fn with_retries<F, Fut>(
        &self,
        host: &str,
        deadline: Deadline,
        mut attempt: F,
    ) -> Result<Delivery, NotifyError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Delivery, NotifyError>>,
    {
        // A Send RNG: this future is awaited on multi-threaded runtimes (rand::rng() is not Send).
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let outcome = match tokio::time::timeout_at(deadline.instant(), attempt()).await {
                Ok(outcome) => outcome,
                Err(_) => Err(NotifyError::Transport("timed out at the deadline".into())),
            };
            let error = match outcome {
                Ok(mut delivery) => {
                    delivery.attempts = attempts;
                    tracing::info!(
                        host,
                        status = delivery.status,
                        attempt = attempts,
                        "delivered"
                    );
                    return Ok(delivery);
                }
                Err(error) => error,
            };
            let decision = self
                .policy
                .decide(attempts, &error, deadline.remaining(), &mut rng);
            tracing::warn!(
                host,
                attempt = attempts,
                retryable = error.is_retryable(),
                error = %error,
                "delivery attempt failed"
            );
            match decision {
                RetryDecision::RetryAfter(wait) => tokio::time::sleep(wait).await,
                RetryDecision::GiveUp => return Err(error),
                RetryDecision::OutOfTime => {
                    return Err(NotifyError::DeadlineExceeded {
                        attempts,
                        last: Box::new(error),
                    });
                }
            }
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

/// The retry policy reads the same classification the outbox does.
impl Retryable for NotifyError {
    fn is_retryable(&self) -> bool {
        NotifyError::is_retryable(self)
    }

    fn retry_after(&self) -> Option<Duration> {
        NotifyError::retry_after(self)
    }
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
    fn ip_literals_obey_the_allowlist_too() {
        let list = Allowlist::default();
        for literal in [
            "https://20.50.2.1/hook",
            "https://[2001:4860::1]/hook",
            "https://8.8.8.8/",
            // Other spellings of an address are parsed the way they would be connected to.
            "https://0x14.50.2.1/",
            "https://336069121/",
        ] {
            let error = list.check(&url(literal)).unwrap_err();
            assert!(
                matches!(&error, NotifyError::HostNotAllowed { reason, .. } if reason.contains("not on the allowlist")),
                "{literal}: {error}"
            );
        }
        assert!(
            list.clone()
                .with("20.50.2.1")
                .check(&url("https://20.50.2.1/hook"))
                .is_ok()
        );
        assert!(
            list.clone()
                .with("[2001:4860::1]")
                .check(&url("https://[2001:4860::1]/hook"))
                .is_ok()
        );
        // A `*.suffix` pattern never matches an address.
        assert!(
            Allowlist::new(["*.1"])
                .check(&url("https://20.50.2.1/"))
                .is_err()
        );
    }

    #[test]
    fn bare_hosts_obey_the_same_rules() {
        let strict = Allowlist::default().with("smtp.contoso.com");
        for host in [
            "127.0.0.1",
            "127.1",
            "2130706433",
            "0x7f.0.0.1",
            "localhost",
            "169.254.169.254",
            "10.1.2.3",
            "192.168.0.10",
            "[::1]",
            "::1",
            "[fe80::1]",
            "::ffff:10.0.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "20.50.2.1",
            "smtp.evil.com",
            "smtp.contoso.com.evil.net",
            "",
            "smtp.contoso.com:25@evil.net",
            "bad host",
        ] {
            let error = strict.check_host(host).unwrap_err();
            assert!(
                matches!(error, NotifyError::HostNotAllowed { .. }),
                "{host:?}: {error:?}"
            );
            assert!(!error.is_retryable(), "{host:?}");
        }
        assert!(strict.check_host("SMTP.Contoso.com.").is_ok());
        let local = Allowlist::new([]).allow_loopback();
        for host in ["127.0.0.1", "127.1", "localhost", "[::1]", "::1"] {
            assert!(local.check_host(host).is_ok(), "{host}");
        }
        for host in ["10.0.0.5", "169.254.169.254", "20.50.2.1"] {
            assert!(local.check_host(host).is_err(), "{host}");
        }
        assert!(Allowlist::new(["10.0.0.5"]).check_host("10.0.0.5").is_ok());
    }

    #[tokio::test]
    async fn vetted_addresses_are_the_allowed_ones() {
        // A listed name that resolves to loopback is refused without the loopback opt-in.
        let error = Allowlist::new(["localhost"])
            .vetted_addresses("localhost", 25)
            .await
            .unwrap_err();
        assert!(
            matches!(error, NotifyError::HostNotAllowed { .. }),
            "{error:?}"
        );
        let local = Allowlist::new([]).allow_loopback();
        let vetted = local.vetted_addresses("localhost", 2525).await.unwrap();
        assert!(!vetted.is_empty());
        assert!(
            vetted
                .iter()
                .all(|addr| addr.ip().is_loopback() && addr.port() == 2525),
            "{vetted:?}"
        );
        assert_eq!(
            local.vetted_addresses("[::1]", 25).await.unwrap(),
            vec!["[::1]:25".parse::<SocketAddr>().unwrap()]
        );
        assert!(local.vetted_addresses("10.0.0.1", 25).await.is_err());
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
}
