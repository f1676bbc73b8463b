//! [`NotifyError`]: why a notification was not delivered, classified by what the caller does
//! next (keep it in the outbox and retry later, or fix the configuration).

use std::time::Duration;

/// A notification that was not delivered. Messages never contain a webhook URL, key or password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The receiver configuration is unusable (missing environment variable, bad address).
    #[error("receiver configuration: {0}")]
    Config(String),
    /// The destination host is not on the allowlist, or resolves to a refused address; no
    /// connection was made.
    #[error("destination {host} refused: {reason}")]
    HostNotAllowed {
        /// The host (never the path or query, which may hold a signature).
        host: String,
        /// Why it was refused.
        reason: String,
    },
    /// The receiver answered with a redirect, which is never followed.
    #[error("receiver answered with redirect {status}; redirects are not followed")]
    Redirected {
        /// The HTTP status.
        status: u16,
    },
    /// The receiver answered with an error status.
    #[error("receiver answered {status}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Status {
        /// The HTTP status.
        status: u16,
        /// The wait the receiver asked for, if any.
        retry_after: Option<Duration>,
        /// A short, redacted excerpt of the response body.
        detail: Option<String>,
    },
    /// The request could not be sent or its answer not read (connection refused, reset, timeout).
    #[error("transport: {0}")]
    Transport(String),
    /// The SMTP server refused the message or the session failed.
    #[error("smtp: {message}")]
    Smtp {
        /// What went wrong (no credentials).
        message: String,
        /// Whether the failure is transient (4xx replies, connection problems).
        transient: bool,
    },
    /// The outbox's store failed.
    #[error("outbox store: {message}")]
    Store {
        /// What went wrong.
        message: String,
        /// Whether retrying the store operation may succeed.
        retryable: bool,
    },
    /// The deadline passed before the message was delivered.
    #[error("deadline passed after {attempts} attempt(s); last error: {last}")]
    DeadlineExceeded {
        /// Attempts made.
        attempts: u32,
        /// The last error seen.
        last: Box<NotifyError>,
    },
}

impl NotifyError {
    /// Whether sending the same alert again later can succeed: throttling, server errors,
    /// connection problems and deadlines are; configuration, allowlist, redirects and other 4xx
    /// answers are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Config(_) | Self::HostNotAllowed { .. } | Self::Redirected { .. } => false,
            Self::Status { status, .. } => is_retryable_status(*status),
            Self::Transport(_) => true,
            Self::Smtp { transient, .. } => *transient,
            Self::Store { retryable, .. } => *retryable,
            Self::DeadlineExceeded { last, .. } => last.is_retryable(),
        }
    }

    /// The error with every copy of `secret` replaced in the texts it carries: a receiver that
    /// echoes the request (PagerDuty quotes invalid fields) cannot leak a key carried in the
    /// body into a log or an error.
    pub fn scrub(self, secret: &str) -> Self {
        if secret.is_empty() {
            return self;
        }
        let clean = |text: String| text.replace(secret, "[REDACTED]");
        match self {
            Self::Status {
                status,
                retry_after,
                detail,
            } => Self::Status {
                status,
                retry_after,
                detail: detail.map(clean),
            },
            Self::Transport(text) => Self::Transport(clean(text)),
            Self::Config(text) => Self::Config(clean(text)),
            Self::HostNotAllowed { host, reason } => Self::HostNotAllowed {
                host: clean(host),
                reason: clean(reason),
            },
            Self::Smtp { message, transient } => Self::Smtp {
                message: clean(message),
                transient,
            },
            Self::Store { message, retryable } => Self::Store {
                message: clean(message),
                retryable,
            },
            Self::DeadlineExceeded { attempts, last } => Self::DeadlineExceeded {
                attempts,
                last: Box::new(last.scrub(secret)),
            },
            other => other,
        }
    }

    /// The wait the receiver asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Statuses worth retrying: request timeout, throttling and server errors.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}
