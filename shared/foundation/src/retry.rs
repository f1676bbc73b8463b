//! Deadlines, the retry decision and `Retry-After` parsing. Pure: the clock and the dice are
//! arguments, so the policy is tested without sleeping.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use rand::Rng;

/// The instant by which a call (all its retries, resumes and sleeps included) must be over.
///
/// Handlers derive it from their invocation budget (the Functions or Lambda timeout minus a
/// margin) and pass it to every call; clients never sleep past it and bound each attempt by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(tokio::time::Instant);

impl Deadline {
    /// A deadline `budget` from now.
    pub fn after(budget: Duration) -> Self {
        Self(tokio::time::Instant::now() + budget)
    }

    /// A deadline at a given instant.
    pub fn at(instant: std::time::Instant) -> Self {
        Self(tokio::time::Instant::from_std(instant))
    }

    /// The instant, for `tokio::time::timeout_at`.
    pub fn instant(&self) -> tokio::time::Instant {
        self.0
    }

    /// Time left (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.0
            .saturating_duration_since(tokio::time::Instant::now())
    }

    /// Whether the deadline has passed.
    pub fn is_past(&self) -> bool {
        self.remaining().is_zero()
    }

    /// The earlier of this deadline and `now + budget`: the bound of one attempt.
    pub fn capped(&self, budget: Duration) -> tokio::time::Instant {
        self.0.min(tokio::time::Instant::now() + budget)
    }
}

/// An error that says whether trying again can help, and how long the other side asked to wait.
pub trait Retryable {
    /// Whether the same request may succeed if sent again (throttling, 5xx, dropped connections).
    fn is_retryable(&self) -> bool;
    /// The wait the other side asked for (`Retry-After` and its relatives), if any.
    fn retry_after(&self) -> Option<Duration>;
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after this wait.
    RetryAfter(Duration),
    /// Stop: the error is not worth retrying, or the attempts are used up.
    GiveUp,
    /// A retry could help, but its wait would end at or past the deadline.
    OutOfTime,
}

/// How a failed call is retried: exponential backoff with jitter, `Retry-After` honoured,
/// bounded by a number of attempts and by the call's [`Deadline`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (1 = never retry).
    pub max_attempts: u32,
    /// Backoff before the first retry; doubled for each further retry.
    pub base_delay: Duration,
    /// Backoff never exceeds this (a `Retry-After` may).
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The default: 5 attempts, 0.5 s doubling up to 30 s.
    pub fn standard() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }

    /// Never retry (one attempt).
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::standard()
        }
    }

    /// The backoff before retry number `retry` (0-based): "equal jitter", half fixed and half
    /// random, so synchronized clients spread out but the wait never collapses to zero.
    pub fn backoff(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(20));
        let ceiling = self.base_delay.saturating_mul(factor).min(self.max_delay);
        let half = ceiling / 2;
        let half_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rng.random_range(0..=half_ms))
    }

    /// What to do after attempt number `attempt` (1-based) failed with `error`, with
    /// `remaining` left before the deadline. Gives up on errors that are not retryable and when
    /// the attempts are used up; is out of time when waiting would end at or past the deadline
    /// (a `Retry-After` is never shortened to fit: retrying earlier than asked is pointless).
    pub fn decide(
        &self,
        attempt: u32,
        error: &impl Retryable,
        remaining: Duration,
        rng: &mut impl Rng,
    ) -> RetryDecision {
        if !error.is_retryable() || attempt >= self.max_attempts {
            return RetryDecision::GiveUp;
        }
        let wait = error
            .retry_after()
            .unwrap_or_else(|| self.backoff(attempt.saturating_sub(1), rng));
        // Leave time for the retry itself, not just for the sleep.
        if wait < remaining {
            RetryDecision::RetryAfter(wait)
        } else {
            RetryDecision::OutOfTime
        }
    }
}

/// The wait a response asks for: `retry-after-ms` / `x-ms-retry-after-ms` (milliseconds), or
/// `Retry-After` as seconds (whole or fractional) or as an HTTP date (relative to `now`; a past
/// date means 0). Values beyond an hour are clamped: the deadline check then decides.
pub fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    const LIMIT: Duration = Duration::from_secs(3600);
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = text(name).and_then(|v| v.trim().parse::<u64>().ok()) {
            return Some(Duration::from_millis(ms).min(LIMIT));
        }
    }
    let value = text("retry-after")?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds).min(LIMIT));
    }
    if let Ok(seconds) = value.parse::<f64>() {
        if seconds.is_finite() && seconds >= 0.0 {
            return Some(Duration::from_secs_f64(seconds.min(LIMIT.as_secs_f64())));
        }
        return None;
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
    use http::HeaderValue;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    /// A failure with a status, classified the way the clients classify theirs.
    struct Failure {
        status: u16,
        retry_after: Option<Duration>,
    }

    impl Retryable for Failure {
        fn is_retryable(&self) -> bool {
            self.status == 429 || self.status >= 500
        }
        fn retry_after(&self) -> Option<Duration> {
            self.retry_after
        }
    }

    fn failure(status: u16, retry_after: Option<Duration>) -> Failure {
        Failure {
            status,
            retry_after,
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let parse = |pairs: &[(&'static str, &str)]| parse_retry_after(&headers(pairs), now);
        assert_eq!(parse(&[("retry-after", "7")]), Some(Duration::from_secs(7)));
        assert_eq!(
            parse(&[("retry-after", " 1.5 ")]),
            Some(Duration::from_millis(1500))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(12));
        assert_eq!(
            parse(&[("retry-after", &later)]),
            Some(Duration::from_secs(12))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(12));
        assert_eq!(parse(&[("retry-after", &past)]), Some(Duration::ZERO));
        assert_eq!(
            parse(&[("retry-after-ms", "250"), ("retry-after", "9")]),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            parse(&[("x-ms-retry-after-ms", "40"), ("retry-after", "9")]),
            Some(Duration::from_millis(40))
        );
        assert_eq!(
            parse(&[("retry-after", "999999999999")]),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            parse(&[("retry-after", "1e300")]),
            Some(Duration::from_secs(3600))
        );
        for hostile in ["soon", "-1", "-0.5", "NaN", "inf", ""] {
            assert_eq!(parse(&[("retry-after", hostile)]), None, "{hostile:?}");
        }
        assert_eq!(parse(&[]), None);
    }

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        let policy = RetryPolicy::standard();
        let mut rng = StdRng::seed_from_u64(7);
        for retry in 0..30 {
            let ceiling =
                (policy.base_delay * 2u32.saturating_pow(retry.min(20))).min(policy.max_delay);
            for _ in 0..20 {
                let wait = policy.backoff(retry, &mut rng);
                assert!(
                    wait >= ceiling / 2 && wait <= ceiling,
                    "retry {retry}: {wait:?}"
                );
            }
        }
    }

    #[test]
    fn decide_honours_retry_after_attempts_and_deadline() {
        let policy = RetryPolicy::standard();
        let mut rng = StdRng::seed_from_u64(1);
        let minute = Duration::from_secs(60);
        let throttled = failure(429, Some(Duration::from_secs(2)));
        assert_eq!(
            policy.decide(1, &throttled, minute, &mut rng),
            RetryDecision::RetryAfter(Duration::from_secs(2))
        );
        // The last attempt is never followed by a retry.
        assert_eq!(
            policy.decide(5, &throttled, minute, &mut rng),
            RetryDecision::GiveUp
        );
        // Never sleep past the deadline, and never shorten a Retry-After to fit.
        assert_eq!(
            policy.decide(1, &throttled, Duration::from_secs(2), &mut rng),
            RetryDecision::OutOfTime
        );
        // Errors that are not retryable are never retried.
        assert_eq!(
            policy.decide(1, &failure(409, None), minute, &mut rng),
            RetryDecision::GiveUp
        );
        // Without a Retry-After, backoff: the second retry waits between 0.5 and 1 s.
        let RetryDecision::RetryAfter(wait) =
            policy.decide(2, &failure(500, None), minute, &mut rng)
        else {
            panic!("a 500 is retried");
        };
        assert!(wait >= Duration::from_millis(500) && wait <= Duration::from_secs(1));
        assert_eq!(
            RetryPolicy::none().decide(1, &throttled, minute, &mut rng),
            RetryDecision::GiveUp
        );
    }

    #[tokio::test]
    async fn deadline_remaining_saturates_and_caps() {
        let deadline = Deadline::after(Duration::ZERO);
        assert!(deadline.is_past());
        assert_eq!(deadline.remaining(), Duration::ZERO);
        let later = Deadline::after(Duration::from_secs(60));
        assert!(!later.is_past());
        assert!(later.capped(Duration::from_secs(1)) < later.instant());
        assert_eq!(later.capped(Duration::from_secs(3600)), later.instant());
    }
}
