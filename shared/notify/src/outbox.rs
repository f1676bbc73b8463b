//! The outbox: alerts that could not be delivered, kept as JSON in an
//! [`ArtifactStore`] under `outbox/{receiver}/{idempotency key}.json` until
//! [`Outbox::drain`] delivers them.
//!
//! Writes are create-only (`IfAbsent`), so queueing the same alert twice (a replayed event, two
//! instances) keeps one entry; deletes are `IfMatch` the version that was sent, so an entry
//! rewritten meanwhile is not lost. An entry whose delivery fails for good (a 4xx, a refused
//! host) moves to `outbox-dead/…` for a person to look at, instead of being retried forever.
//!
//! A drain tries at most [`OUTBOX_PER_TICK`] entries (one listing page), so a large outbox costs
//! neither memory nor an endless tick, and keeps its place in the store ([`OUTBOX_POSITION`]):
//! the next drain continues after the page this one tried, and starts again at the beginning
//! after the end, so entries for a receiver that stays down never hold the others back.

use std::sync::Arc;

use artifact_store::{
    ArtifactStore, Condition, DEFAULT_PAGE, Listing, ObjectKey, PagedDrain, StoreError,
};
use bytes::Bytes;
use foundation::Deadline;
use serde::{Deserialize, Serialize};

use crate::alert::Alert;
use crate::config::Receiver;
use crate::egress::Egress;
use crate::error::NotifyError;

/// Where pending entries live.
pub const OUTBOX_PREFIX: &str = "outbox/";
/// Where entries that can never be delivered are moved.
pub const DEAD_PREFIX: &str = "outbox-dead/";
/// The most entries one drain tries; the rest wait for the next drain, which continues after
/// them.
pub const OUTBOX_PER_TICK: usize = 100;
/// Where the drain keeps its place in the outbox between drains (outside `outbox/`).
pub const OUTBOX_POSITION: &str = "drains/outbox.position";

/// One undelivered alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxEntry {
    /// The receiver's name (resolved again at drain time, so secrets are never stored).
    pub receiver: String,
    /// The alert, as it was to be sent.
    pub alert: Alert,
    /// Why the last attempt failed (no secrets: [`NotifyError`] messages never carry them).
    pub last_error: String,
}

/// What one [`Outbox::drain`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Entries delivered and removed.
    pub delivered: usize,
    /// Entries that failed again with a retryable error and stay queued.
    pub still_pending: usize,
    /// Entries that failed for good and moved to [`DEAD_PREFIX`].
    pub dead: usize,
    /// Entries left alone: their receiver is not configured, or they could not be read.
    pub skipped: usize,
    /// Whether more entries wait beyond this drain's page (the next drain continues).
    pub more_waiting: bool,
}

/// Undelivered alerts in an artifact store.
#[derive(Debug, Clone)]
pub struct Outbox {
    store: Arc<dyn ArtifactStore>,
}

/// A store failure as a [`NotifyError`].
fn store_error(error: StoreError) -> NotifyError {
    NotifyError::Store {
        retryable: error.is_retryable(),
        message: error.to_string(),
    }
}

/// A receiver name made safe as one key segment.
fn segment(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match cleaned.trim_matches('.') {
        "" => "_".to_owned(),
        text => text.to_owned(),
    }
}

impl Outbox {
    /// An outbox in `store`.
    pub fn new(store: Arc<dyn ArtifactStore>) -> Self {
        Self { store }
    }

    /// The key of an alert's entry for a receiver.
    pub fn key(receiver: &str, alert: &Alert) -> Result<ObjectKey, NotifyError> {
        ObjectKey::new(format!(
            "{OUTBOX_PREFIX}{}/{}.json",
            segment(receiver),
            alert.idempotency_key()
        ))
        .map_err(store_error)
    }

    /// Queues an alert that `receiver` did not take. Returns `false` when it was already queued
    /// (the first entry is kept).
    pub async fn put(
        &self,
        receiver: &str,
        alert: &Alert,
        error: &NotifyError,
    ) -> Result<bool, NotifyError> {
        let entry = OutboxEntry {
            receiver: receiver.to_owned(),
            alert: alert.clone(),
            last_error: error.to_string(),
        };
        let body = serde_json::to_vec(&entry).map_err(|e| NotifyError::Store {
            retryable: false,
            message: format!("outbox entry: {e}"),
        })?;
        let key = Self::key(receiver, alert)?;
        match self
            .store
            .put(&key, Bytes::from(body), Condition::IfAbsent)
            .await
        {
            Ok(_) => {
                tracing::info!(key = key.as_str(), "alert queued in the outbox");
                Ok(true)
            }
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(error) => Err(store_error(error)),
        }
    }

    /// Every queued entry, by key, collected: for tests and inspection (a drain reads a page at
    /// a time, [`Outbox::pending_first`] at most what it is asked).
    pub async fn pending(&self) -> Result<Vec<(ObjectKey, OutboxEntry)>, NotifyError> {
        self.pending_first(usize::MAX).await
    }

    /// The first `max` readable entries, by key, read a page at a time.
    pub async fn pending_first(
        &self,
        max: usize,
    ) -> Result<Vec<(ObjectKey, OutboxEntry)>, NotifyError> {
        let mut out = Vec::new();
        let mut listing = Listing::new(self.store.as_ref(), OUTBOX_PREFIX, max.min(DEFAULT_PAGE));
        while out.len() < max
            && let Some(info) = listing.next().await.map_err(store_error)?
        {
            if let Some(versioned) = self.store.get(&info.key).await.map_err(store_error)? {
                if let Ok(entry) = serde_json::from_slice::<OutboxEntry>(&versioned.bytes) {
                    out.push((info.key, entry));
                }
            }
        }
        Ok(out)
    }

    /// Tries up to [`OUTBOX_PER_TICK`] queued entries once against the configured `receivers`
    /// (see the module docs): delivered entries are deleted, retryable failures stay, permanent
    /// failures move to [`DEAD_PREFIX`]. Stops early (leaving the rest queued) when the deadline
    /// passes.
    pub async fn drain(
        &self,
        egress: &Egress,
        receivers: &[Receiver],
        deadline: Deadline,
    ) -> Result<DrainReport, NotifyError> {
        self.drain_at_most(egress, receivers, deadline, OUTBOX_PER_TICK)
            .await
    }

    /// [`Outbox::drain`] with a bound of `max` entries.
    pub async fn drain_at_most(
        &self,
        egress: &Egress,
        receivers: &[Receiver],
        deadline: Deadline,
        max: usize,
    ) -> Result<DrainReport, NotifyError> {
        let drain = PagedDrain::new(
            OUTBOX_PREFIX,
            ObjectKey::new(OUTBOX_POSITION).map_err(store_error)?,
        );
        let page = drain
            .page(self.store.as_ref(), max)
            .await
            .map_err(store_error)?;
        let mut report = DrainReport {
            more_waiting: page.more,
            ..DrainReport::default()
        };
        let mut stopped = false;
        for info in &page.objects {
            if deadline.is_past() {
                report.still_pending += 1;
                stopped = true;
                continue;
            }
            let Some(versioned) = self.store.get(&info.key).await.map_err(store_error)? else {
                continue;
            };
            let Ok(entry) = serde_json::from_slice::<OutboxEntry>(&versioned.bytes) else {
                tracing::warn!(
                    key = info.key.as_str(),
                    "unreadable outbox entry left alone"
                );
                report.skipped += 1;
                continue;
            };
            let Some(receiver) = receivers.iter().find(|r| r.name == entry.receiver) else {
                tracing::warn!(key = info.key.as_str(), receiver = %entry.receiver, "outbox entry for an unknown receiver left alone");
                report.skipped += 1;
                continue;
            };
            match crate::send(egress, receiver, &entry.alert, deadline).await {
                Ok(_) => {
                    self.remove(&info.key, versioned.etag).await?;
                    report.delivered += 1;
                }
                Err(error) if error.is_retryable() => {
                    tracing::info!(key = info.key.as_str(), error = %error, "outbox entry still pending");
                    report.still_pending += 1;
                }
                Err(error) => {
                    let dead =
                        ObjectKey::new(info.key.as_str().replacen(OUTBOX_PREFIX, DEAD_PREFIX, 1))
                            .map_err(store_error)?;
                    let entry = OutboxEntry {
                        last_error: error.to_string(),
                        ..entry
                    };
                    let body =
                        serde_json::to_vec(&entry).unwrap_or_else(|_| versioned.bytes.to_vec());
                    match self
                        .store
                        .put(&dead, Bytes::from(body), Condition::Always)
                        .await
                    {
                        Ok(_) => {}
                        Err(error) => return Err(store_error(error)),
                    }
                    self.remove(&info.key, versioned.etag).await?;
                    tracing::warn!(key = info.key.as_str(), error = %error, "outbox entry cannot be delivered; moved aside");
                    report.dead += 1;
                }
            }
        }
        // Stopped by the deadline: the next drain tries the same page again.
        if !stopped {
            drain
                .finish(self.store.as_ref(), &page)
                .await
                .map_err(store_error)?;
        }
        Ok(report)
    }

    /// Deletes an entry if it is still the version that was handled.
    async fn remove(&self, key: &ObjectKey, etag: artifact_store::ETag) -> Result<(), NotifyError> {
        match self.store.delete(key, Condition::IfMatch(etag)).await {
            Ok(()) | Err(StoreError::ConditionFailed { .. } | StoreError::NotFound { .. }) => {
                Ok(())
            }
            Err(error) => Err(store_error(error)),
        }
    }
}
