//! The small pieces every adapter shares, in one place so they cannot drift apart:
//!
//! - [`Deadline`]: the instant by which a call, retries and sleeps included, must be over;
//! - [`RetryPolicy`]: exponential backoff with equal jitter, and [`RetryPolicy::decide`], the one
//!   retry decision (give up, or wait how long) for any [`Retryable`] error;
//! - [`parse_retry_after`]: the wait a response asks for (`retry-after-ms`,
//!   `x-ms-retry-after-ms`, `Retry-After` in seconds, fractional seconds or an HTTP date);
//! - [`Secret`]: a string whose `Debug` is redacted and which has no `Display`.
//!
//! **Invariant: no I/O.** No network, file or environment access: the clock and the dice that
//! decisions depend on are arguments (only [`Deadline::after`] reads the monotonic clock, which
//! is what a deadline is). `tests/integration/tidy.rs` checks the dependency closure and the
//! sources.

#![deny(missing_docs)]

mod retry;
mod secret;

pub use retry::{Deadline, RetryDecision, RetryPolicy, Retryable, parse_retry_after};
pub use secret::Secret;
