//! How the blob client retries, and when it does not.
//!
//! - A refused connection fails at once ([`FailFastOnRefused`]): nothing listens at the
//!   endpoint (a wrong port, Azurite not started), which retrying for a minute per request does
//!   not change. The SDK's default policy retries it like a dropped connection, so an
//!   unreachable store used to say nothing for minutes and then fail.
//! - Transient failures (throttling, 5xx, a reset or a timeout) are retried with a bounded
//!   exponential back-off ([`StoreRetry`]), and each retry is announced: logged as a warning and
//!   passed to the store's [`RetryObserver`] (the CLI shows it on the terminal).

use std::sync::Arc;

use async_trait::async_trait;
use azure_core::error::ErrorKind;
use azure_core::http::headers::{RETRY_AFTER, RETRY_AFTER_MS, X_MS_RETRY_AFTER_MS};
use azure_core::http::policies::{Policy, PolicyResult, RetryHeaders, RetryPolicy};
use azure_core::http::{Context, Request, StatusCode};
use azure_core::time::Duration;

/// Retries of one request after its first attempt.
pub(crate) const MAX_RETRIES: u32 = 6;
/// The first back-off; it doubles on each retry up to [`MAX_DELAY_SECONDS`].
const INITIAL_DELAY_MILLIS: i64 = 500;
const MAX_DELAY_SECONDS: i64 = 8;
/// No new retry starts once this long has passed since the first attempt.
const MAX_ELAPSED_SECONDS: i64 = 30;

/// One retry about to happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryNotice {
    /// Which retry this is (1 for the first).
    pub retry: u32,
    /// The most retries a request gets.
    pub max_retries: u32,
    /// How long the client waits before it.
    pub delay: std::time::Duration,
}

impl std::fmt::Display for RetryNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "storage request failed transiently; retry {} of {} in {:.1} s",
            self.retry,
            self.max_retries,
            self.delay.as_secs_f64()
        )
    }
}

/// Told of every retry of a blob request (see [`crate::BlobStore::with_retry_observer`]).
pub type RetryObserver = Arc<dyn Fn(&RetryNotice) + Send + Sync>;

/// Bounded exponential back-off that announces each retry.
pub(crate) struct StoreRetry {
    headers: RetryHeaders,
    observer: Option<RetryObserver>,
}

impl StoreRetry {
    pub(crate) fn new(observer: Option<RetryObserver>) -> Self {
        StoreRetry {
            headers: RetryHeaders {
                retry_headers: vec![X_MS_RETRY_AFTER_MS, RETRY_AFTER_MS, RETRY_AFTER],
            },
            observer,
        }
    }
}

impl std::fmt::Debug for StoreRetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreRetry")
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

#[async_trait]
impl RetryPolicy for StoreRetry {
    fn is_expired(&self, duration_since_start: Duration, retry_count: u32) -> bool {
        retry_count >= MAX_RETRIES || duration_since_start >= Duration::seconds(MAX_ELAPSED_SECONDS)
    }

    fn retry_headers(&self) -> Option<&RetryHeaders> {
        Some(&self.headers)
    }

    fn retry_status_codes(&self) -> &[StatusCode] {
        // The SDK's defaults: 408, 429, 500, 502, 503, 504.
        &[]
    }

    fn sleep_duration(&self, retry_count: u32) -> Duration {
        let doubled =
            INITIAL_DELAY_MILLIS.saturating_mul(1 << retry_count.saturating_sub(1).min(16));
        Duration::milliseconds(doubled).min(Duration::seconds(MAX_DELAY_SECONDS))
    }

    async fn wait(&self, retry_count: u32, retry_after: Option<Duration>) {
        let policy = self.sleep_duration(retry_count);
        // The service's Retry-After wins when it asks for longer, within the bound.
        let delay = retry_after
            .map_or(policy, |asked| asked.max(policy))
            .min(Duration::seconds(MAX_ELAPSED_SECONDS));
        let delay = std::time::Duration::try_from(delay).unwrap_or_default();
        let notice = RetryNotice {
            retry: retry_count,
            max_retries: MAX_RETRIES,
            delay,
        };
        tracing::warn!(
            retry = retry_count,
            delay_ms = delay.as_millis() as u64,
            "{notice}"
        );
        if let Some(observer) = &self.observer {
            observer(&notice);
        }
        tokio::time::sleep(delay).await;
    }
}

/// Turns a refused connection into an error the retry policy does not retry. It runs on every
/// try, right before the transport.
#[derive(Debug)]
pub(crate) struct FailFastOnRefused;

/// The marker a refused connection carries to [`crate::blob`]'s error mapping.
#[derive(Debug, thiserror::Error)]
#[error("connection refused: nothing is listening at the storage endpoint")]
pub(crate) struct ConnectionRefused;

// The trait's own signature elides `Context`'s lifetime; naming it breaks the async-trait match.
#[allow(elided_lifetimes_in_paths)]
#[async_trait]
impl Policy for FailFastOnRefused {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let Some((first, rest)) = next.split_first() else {
            return Err(azure_core::Error::with_message(
                ErrorKind::Other,
                "no transport after the refused-connection policy",
            ));
        };
        match first.send(ctx, request, rest).await {
            Err(e) if is_refused(&e) => {
                Err(azure_core::Error::new(ErrorKind::Other, ConnectionRefused))
            }
            other => other,
        }
    }
}

/// Whether a transport error is, somewhere in its chain, a refused TCP connection.
fn is_refused(error: &azure_core::Error) -> bool {
    matches!(error.kind(), ErrorKind::Io | ErrorKind::Connection)
        && in_chain::<std::io::Error>(error)
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// Whether `error` failed because [`FailFastOnRefused`] found the connection refused (the retry
/// policy may have wrapped it in more context).
pub(crate) fn was_refused(error: &azure_core::Error) -> bool {
    in_chain::<ConnectionRefused>(error).is_some()
}

/// The first `T` in `error`'s chain of causes, looking inside the SDK's errors too.
fn in_chain<T: std::error::Error + 'static>(error: &azure_core::Error) -> Option<&T> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(found) = e
            .downcast_ref::<azure_core::Error>()
            .and_then(|sdk| sdk.downcast_ref::<T>())
        {
            return Some(found);
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_within_its_bounds() {
        let retry = StoreRetry::new(None);
        let millis = |n| retry.sleep_duration(n).whole_milliseconds();
        assert_eq!(
            [millis(1), millis(2), millis(3), millis(5), millis(9)],
            [500, 1000, 2000, 8000, 8000]
        );
        assert!(!retry.is_expired(Duration::seconds(1), 1));
        assert!(retry.is_expired(Duration::seconds(1), MAX_RETRIES));
        assert!(retry.is_expired(Duration::seconds(MAX_ELAPSED_SECONDS), 1));
    }

    #[test]
    fn a_notice_says_which_retry_and_when() {
        let notice = RetryNotice {
            retry: 2,
            max_retries: 6,
            delay: std::time::Duration::from_millis(1500),
        };
        assert_eq!(
            notice.to_string(),
            "storage request failed transiently; retry 2 of 6 in 1.5 s"
        );
    }
}
