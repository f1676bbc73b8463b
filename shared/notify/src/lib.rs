//! Alerts to people: turns an [`Alert`] into the right message for each channel and delivers it
//! reliably.
//!
//! **Architecture invariants:**
//! - Rendering is pure: [`teams::render`], [`email::render`] and [`webhook::body`] take an
//!   [`Alert`] and return bytes or text; only the `send` functions do I/O.
//! - Every outbound HTTP URL (Teams, webhook, ACS, PagerDuty, Slack) passes an [`Allowlist`] before any
//!   connection: exact hosts or `*.suffix` patterns, redirects are never followed, and private,
//!   link-local and loopback addresses are refused unless explicitly allowed. The SMTP server is
//!   not checked against it: it comes from the policy file, not from a secret URL, and plain
//!   (non-TLS) SMTP is only allowed to loopback.
//! - Webhook URLs, keys and passwords are [`Secret`]s: they never appear in `Debug` output,
//!   errors, logs or rendered messages.
//!
//! # Layout
//! - [`alert`]: the [`Alert`] model (diagnosis, group, links, state) and its idempotency key.
//! - [`config`]: [`ReceiverConfig`], the receiver section of the policy TOML, resolved into a
//!   [`Receiver`] with secrets read through a caller-given lookup.
//! - [`teams`]: the Workflows message envelope with an Adaptive Card 1.4, byte-budgeted to 28 KB.
//! - [`email`]: subject, plain-text and HTML bodies; SMTP (lettre) and the ACS email REST API.
//! - [`webhook`]: the signed generic JSON webhook and its verification recipe.
//! - [`pagerduty`]: PagerDuty Events API v2: `trigger` and `resolve` on one `dedup_key` per group.
//! - [`slack`]: a Slack incoming webhook, Block Kit, with the Teams card's facts and byte budget.
//! - [`egress`]: the host allowlist, the no-redirect HTTP client and the retry loop.
//! - [`outbox`]: undelivered alerts kept in an artifact store and retried by [`Outbox::drain`].
//! - [`error`]: [`NotifyError`], which says whether a retry later can help.

#![deny(missing_docs)]

pub mod alert;
pub mod config;
pub mod egress;
pub mod email;
pub mod error;
pub mod outbox;
pub mod pagerduty;
pub mod slack;
pub mod teams;
pub mod webhook;

mod text;

pub use alert::{Alert, AlertState, Group, Links};
pub use config::{Receiver, ReceiverConfig, ReceiverKind};
pub use egress::{Allowlist, Delivery, Egress};
pub use error::NotifyError;
pub use foundation::{Deadline, RetryPolicy, Secret};
pub use outbox::{DrainReport, Outbox, OutboxEntry};
pub use text::html_escape;

/// Sends one alert to one resolved receiver, retrying within `deadline`.
///
/// Returns what the receiver acknowledged ([`Delivery`]) or a [`NotifyError`] whose
/// [`NotifyError::is_retryable`] tells the caller whether to keep the alert in its outbox.
pub async fn send(
    egress: &Egress,
    receiver: &Receiver,
    alert: &Alert,
    deadline: Deadline,
) -> Result<Delivery, NotifyError> {
    let span = tracing::info_span!(
        "notify",
        receiver = %receiver.name,
        kind = receiver.kind().as_str(),
        alert = %alert.idempotency_key(),
    );
    let work = async {
        match &receiver.target {
            config::Target::Teams { url } => teams::send(egress, url, alert, deadline).await,
            config::Target::Webhook { url, secret } => {
                webhook::send(egress, url, secret, alert, deadline).await
            }
            config::Target::Smtp(smtp) => email::send_smtp(egress, smtp, alert, deadline).await,
            config::Target::Acs(acs) => email::send_acs(egress, acs, alert, deadline).await,
            config::Target::PagerDuty {
                routing_key,
                events_url,
            } => pagerduty::send(egress, routing_key, events_url, alert, deadline).await,
            config::Target::Slack { url } => slack::send(egress, url, alert, deadline).await,
        }
    };
    tracing::Instrument::instrument(work, span).await
}
