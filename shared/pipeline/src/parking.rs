//! Deliveries the platform is about to give up on, kept in the store and worked again later.
//!
//! Two platforms drop what keeps failing. The Functions Event Hubs extension checkpoints a batch
//! after the last attempt of its retry policy whether or not the function succeeded, so the
//! batch is never delivered again; Event Grid stops after its retries and writes the event to a
//! dead-letter container, if one is configured. Neither is allowed to lose a record here:
//!
//! - on the last attempt, the handler *parks* the batch's bodies under `parked/`, create-only
//!   and keyed by where the platform had them (Event Hubs partition and sequence number), so a
//!   replay parks nothing twice, and then acknowledges;
//! - each tick moves dead-lettered Event Grid events into the same parking area, then *drains*
//!   it: every parked body goes through the same pipeline as a live delivery (idempotent: what
//!   was already done is found done), and is removed once nothing in it asks for a retry;
//! - a body that still fails after [`MAX_DRAINS`] drains, or that cannot be read at all, moves
//!   to `poisoned/` with its reason and is alerted once (class `delivery.unprocessable`). It is
//!   kept, never dropped: moving it back under `parked/` has the next tick try it again.
//!
//! A tick works at most [`PARKED_PER_TICK`] parked deliveries (one listing page) and takes in at
//! most as many dead-letter blobs, so its memory and work stay bounded however many wait. The
//! drain keeps its place in the store ([`PARKED_POSITION`]): the next tick continues after the
//! page this one worked, and starts again at the beginning after the end, so deliveries that
//! fail again and stay parked never keep the ones behind them waiting.

use std::sync::Arc;

pub use artifact_store::StoreError;
use artifact_store::{ArtifactStore, Condition, ETag, Listing, ObjectKey, PagedDrain};
use batch_client::Deadline;
use bytes::Bytes;
use diagnosis::{Diagnosis, FailureClass, Subject};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Verdict;
use crate::triage::{SubjectReport, Triage};

/// Where parked deliveries wait for the next drain.
pub const PARKED_PREFIX: &str = "parked/";
/// Where deliveries that could not be processed are kept, with their reason.
pub const POISONED_PREFIX: &str = "poisoned/";
/// The most parked deliveries one tick works (one listing page); the rest wait for the next
/// tick, which continues after them.
pub const PARKED_PER_TICK: usize = 100;
/// Where the drain keeps its place in the parking area between ticks (outside `parked/`).
pub const PARKED_POSITION: &str = "drains/parked.position";
/// How many drains a parked delivery gets before it is declared poison: at the default sweep
/// schedule (every 5 minutes) about an hour of Batch or the store being unavailable. Being
/// poison only stops the automatic retries and tells a person; the delivery is kept.
pub const MAX_DRAINS: u32 = 12;
/// The largest dead-letter blob read: Event Grid caps an event at 1 MB, and a blob holds the
/// events of one delivery. Anything larger is not Event Grid's and is left where it is.
pub const MAX_DEAD_LETTER_BYTES: u64 = 4 << 20;

/// A delivery kept in the store: the platform's bytes and why they were kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParkedDelivery {
    /// Format version.
    pub version: u32,
    /// Where it came from: `eventhubs`, `eventgrid-deadletter` or `lambda`.
    pub source: String,
    /// Where the platform had it, for people (hub, partition, sequence number; the dead-letter
    /// blob; the Lambda request id).
    pub origin: String,
    /// Why it was kept.
    pub reason: String,
    /// When it was kept (RFC 3339, UTC).
    pub parked_at: String,
    /// How many drains have tried it.
    #[serde(default)]
    pub drains: u32,
    /// What the last drain said, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The delivery's body, as the platform delivered it.
    pub payload: String,
}

impl ParkedDelivery {
    /// A delivery kept now from `source`, with `reason`.
    pub fn new(
        source: &str,
        origin: impl Into<String>,
        reason: impl Into<String>,
        payload: impl Into<String>,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            version: 1,
            source: source.to_owned(),
            origin: origin.into(),
            reason: reason.into(),
            parked_at: now.format(&Rfc3339).unwrap_or_default(),
            drains: 0,
            last_error: None,
            payload: payload.into(),
        }
    }
}

/// The key of a parked delivery below [`PARKED_PREFIX`] (or, once poison, [`POISONED_PREFIX`]).
/// The same delivery always gets the same key, so parking it twice keeps one copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkKey(String);

impl ParkKey {
    /// An Event Hubs event: its hub, partition and sequence number, which name it uniquely.
    pub fn event_hubs(hub: &str, partition: &str, sequence: i64) -> Self {
        Self(format!(
            "eventhubs/{}/{}/{sequence:020}.json",
            segment(hub),
            segment(partition)
        ))
    }

    /// A delivery without a platform position (no Event Hubs metadata, a dead-lettered event, a
    /// Lambda event): named by `source` and the hash of `identity` (its bytes, or its event id).
    pub fn by_content(source: &str, identity: &[u8]) -> Self {
        Self(format!(
            "{}/{}.json",
            segment(source),
            hex::encode(Sha256::digest(identity))
        ))
    }

    /// The key relative to the parking area.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn parked(&self) -> Result<ObjectKey, StoreError> {
        ObjectKey::new(format!("{PARKED_PREFIX}{}", self.0))
    }

    fn poisoned(&self) -> Result<ObjectKey, StoreError> {
        ObjectKey::new(format!("{POISONED_PREFIX}{}", self.0))
    }
}

/// A name from a platform as one key segment: kept when it is short and plain, else hashed, so
/// a hostile hub or partition name can neither escape its folder nor collide with another.
fn segment(name: &str) -> String {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if plain {
        name.to_owned()
    } else {
        format!("h-{}", &hex::encode(Sha256::digest(name.as_bytes()))[..16])
    }
}

/// Whether a delivery was kept by this call or already was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parked {
    /// Written now.
    New,
    /// Already parked (a replay of the same delivery).
    AlreadyParked,
}

/// What one drain of the parking area did, for the tick's log line and the report.
#[derive(Debug, Default, Clone)]
pub struct DrainReport {
    /// Dead-lettered Event Grid events moved into the parking area.
    pub dead_lettered: usize,
    /// Parked deliveries worked and removed.
    pub drained: usize,
    /// Parked deliveries that failed again and wait for the next drain.
    pub still_parked: usize,
    /// Deliveries declared poison now (kept under `poisoned/`, alerted once).
    pub poisoned: usize,
    /// Parked deliveries left for the next tick because the deadline came.
    pub left_for_next_tick: usize,
    /// Whether more deliveries wait beyond this tick's page (the next tick continues).
    pub more_waiting: bool,
    /// The subjects the drained deliveries were about, and one per delivery declared poison
    /// (labelled `{account}/_poisoned/{key}`, class `delivery.unprocessable`, its record as the
    /// preserved link).
    pub subjects: Vec<SubjectReport>,
}

impl DrainReport {
    /// Whether there is anything to say.
    pub fn is_empty(&self) -> bool {
        self.dead_lettered == 0
            && self.drained == 0
            && self.still_parked == 0
            && self.poisoned == 0
            && self.left_for_next_tick == 0
            && !self.more_waiting
    }

    /// One line for a platform log.
    pub fn line(&self) -> String {
        format!(
            "parked deliveries: {} drained, {} still parked, {} poisoned, {} left for the next \
             tick{}; {} dead-lettered events taken in",
            self.drained,
            self.still_parked,
            self.poisoned,
            self.left_for_next_tick,
            if self.more_waiting {
                ", more waiting beyond this tick's page"
            } else {
                ""
            },
            self.dead_lettered
        )
    }
}

/// How many deliveries wait in the parking area and how many were declared poison, for a report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParkingCounts {
    /// Deliveries waiting under `parked/`.
    pub parked: usize,
    /// Deliveries kept under `poisoned/`.
    pub poisoned: usize,
}

/// What became of one parked delivery, with the subjects it was about.
enum Drained {
    Done(Vec<SubjectReport>),
    Again(Vec<SubjectReport>),
    Poisoned(SubjectReport),
    Skipped,
}

/// The store reads and writes of the parking area.
pub(crate) struct Parking {
    store: Arc<dyn ArtifactStore>,
}

impl Parking {
    pub(crate) fn new(store: Arc<dyn ArtifactStore>) -> Self {
        Self { store }
    }

    async fn park(&self, key: &ParkKey, delivery: &ParkedDelivery) -> Result<Parked, StoreError> {
        let object = key.parked()?;
        match self
            .store
            .put(&object, encode(delivery), Condition::IfAbsent)
            .await
        {
            Ok(_) => Ok(Parked::New),
            Err(StoreError::ConditionFailed { .. }) => Ok(Parked::AlreadyParked),
            Err(error) => Err(error),
        }
    }

    /// Keeps `delivery` under `poisoned/`, create-only; `true` when this call wrote it (so its
    /// one alert is sent by exactly one caller).
    async fn poison(&self, key: &ParkKey, delivery: &ParkedDelivery) -> Result<bool, StoreError> {
        match self
            .store
            .put(&key.poisoned()?, encode(delivery), Condition::IfAbsent)
            .await
        {
            Ok(_) => Ok(true),
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    async fn counts(&self) -> Result<ParkingCounts, StoreError> {
        Ok(ParkingCounts {
            parked: artifact_store::count(self.store.as_ref(), PARKED_PREFIX).await?,
            poisoned: artifact_store::count(self.store.as_ref(), POISONED_PREFIX).await?,
        })
    }
}

fn encode(delivery: &ParkedDelivery) -> Bytes {
    // A struct of strings and numbers always serialises.
    Bytes::from(serde_json::to_vec_pretty(delivery).unwrap_or_default())
}

impl Triage {
    /// Parks `payload` (see the module docs): kept under `parked/` until a tick has worked it.
    /// Parking the same key again keeps the first copy.
    pub async fn park(
        &self,
        key: &ParkKey,
        delivery: &ParkedDelivery,
    ) -> Result<Parked, StoreError> {
        Parking::new(self.store.clone()).park(key, delivery).await
    }

    /// Keeps a delivery no retry can help (a Lambda `NonRetryable` payload) under `poisoned/`,
    /// with its reason, before the platform is told, so nothing depends on a dead-letter queue
    /// the user may not have set up. Not alerted: the platform's error already says it.
    pub async fn keep_unprocessable(
        &self,
        key: &ParkKey,
        delivery: &ParkedDelivery,
    ) -> Result<(), StoreError> {
        Parking::new(self.store.clone())
            .poison(key, delivery)
            .await
            .map(|_| ())
    }

    /// How many deliveries are parked and poisoned now.
    pub async fn parking_counts(&self) -> Result<ParkingCounts, StoreError> {
        Parking::new(self.store.clone()).counts().await
    }

    /// Takes dead-lettered Event Grid events in, then works the parking area, within
    /// `deadline`, at most [`PARKED_PER_TICK`] of each. A store failure is returned: what was
    /// done before it stays done.
    pub async fn drain_parked(
        &self,
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> Result<DrainReport, StoreError> {
        self.drain_parked_at_most(now, deadline, PARKED_PER_TICK)
            .await
    }

    /// [`Triage::drain_parked`] with a bound of `max` deliveries (and dead-letter blobs) for
    /// this tick.
    pub async fn drain_parked_at_most(
        &self,
        now: OffsetDateTime,
        deadline: Deadline,
        max: usize,
    ) -> Result<DrainReport, StoreError> {
        let (dead_lettered, mut subjects) = self.take_dead_letters(now, deadline, max).await?;
        let mut report = DrainReport {
            dead_lettered,
            ..DrainReport::default()
        };
        let parking = Parking::new(self.store.clone());
        let drain = PagedDrain::new(PARKED_PREFIX, ObjectKey::new(PARKED_POSITION)?);
        let page = drain.page(self.store.as_ref(), max).await?;
        report.more_waiting = page.more;
        for (done, info) in page.objects.iter().enumerate() {
            if deadline.is_past() {
                report.left_for_next_tick = page.objects.len() - done;
                break;
            }
            let Some(key) = info.key.as_str().strip_prefix(PARKED_PREFIX) else {
                continue;
            };
            let key = ParkKey(key.to_owned());
            match self.drain_one(&parking, &key, now, deadline).await? {
                Drained::Done(worked) => {
                    report.drained += 1;
                    subjects.extend(worked);
                }
                Drained::Again(worked) => {
                    report.still_parked += 1;
                    subjects.extend(worked);
                }
                Drained::Poisoned(poisoned) => {
                    report.poisoned += 1;
                    subjects.push(poisoned);
                }
                Drained::Skipped => {}
            }
        }
        // Stopped by the deadline: the next tick works the same page again.
        if report.left_for_next_tick == 0 {
            drain.finish(self.store.as_ref(), &page).await?;
        }
        report.subjects = subjects;
        Ok(report)
    }

    async fn drain_one(
        &self,
        parking: &Parking,
        key: &ParkKey,
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> Result<Drained, StoreError> {
        let object = key.parked()?;
        // Gone meanwhile: another instance drained it.
        let Some(stored) = self.store.get(&object).await? else {
            return Ok(Drained::Skipped);
        };
        let mut delivery: ParkedDelivery = match serde_json::from_slice(&stored.bytes) {
            Ok(delivery) => delivery,
            Err(error) => {
                // Not written by us (or damaged): kept as poison with its bytes, never dropped.
                let delivery = ParkedDelivery::new(
                    "unknown",
                    key.as_str(),
                    format!("the parked record cannot be read: {error}"),
                    String::from_utf8_lossy(&stored.bytes),
                    now,
                );
                return self
                    .declare_poison(parking, key, &delivery, stored.etag, now, deadline)
                    .await;
            }
        };
        let (run, unreadable) = self
            .handle_payloads(&[delivery.payload.as_bytes()], now, deadline)
            .await;
        if let Some((_, error)) = unreadable.first() {
            delivery.last_error = Some(format!("unreadable: {error}"));
            return self
                .declare_poison(parking, key, &delivery, stored.etag, now, deadline)
                .await;
        }
        match Verdict::of_run(&run) {
            Verdict::Retry { .. } => {
                delivery.drains += 1;
                delivery.last_error = Some(retry_reasons(&run));
                if delivery.drains >= MAX_DRAINS {
                    return self
                        .declare_poison(parking, key, &delivery, stored.etag, now, deadline)
                        .await;
                }
                // A lost race means another instance counted this drain: either way it waits.
                match self
                    .store
                    .put(&object, encode(&delivery), Condition::IfMatch(stored.etag))
                    .await
                {
                    Ok(_) | Err(StoreError::ConditionFailed { .. }) => {
                        Ok(Drained::Again(run.subjects))
                    }
                    Err(error) => Err(error),
                }
            }
            _ => {
                forget(self.store.as_ref(), &object, stored.etag).await?;
                Ok(Drained::Done(run.subjects))
            }
        }
    }

    async fn declare_poison(
        &self,
        parking: &Parking,
        key: &ParkKey,
        delivery: &ParkedDelivery,
        etag: ETag,
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> Result<Drained, StoreError> {
        let subject = self.poison(parking, key, delivery, now, deadline).await?;
        forget(self.store.as_ref(), &key.parked()?, etag).await?;
        Ok(Drained::Poisoned(subject))
    }

    /// Keeps `delivery` under `poisoned/` and, the first time, alerts once.
    async fn poison(
        &self,
        parking: &Parking,
        key: &ParkKey,
        delivery: &ParkedDelivery,
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> Result<SubjectReport, StoreError> {
        let mut subject = SubjectReport::new(format!(
            "{}/_poisoned/{}",
            self.config.account,
            key.as_str()
        ));
        subject.class = Some(FailureClass::DeliveryUnprocessable);
        subject.preserved.extend(self.store.link(&key.poisoned()?));
        if parking.poison(key, delivery).await? {
            tracing::error!(key = %key.as_str(), reason = %delivery.reason, last_error = ?delivery.last_error, "delivery declared poison; kept under poisoned/");
            let diagnosis = poison_diagnosis(key, delivery, &self.config.account);
            let (notified, outboxed) = self
                .alert_now(&diagnosis, &subject.subject, now, deadline)
                .await;
            subject.notified = notified;
            subject.outboxed = outboxed;
        } else {
            subject.already_preserved = true;
        }
        Ok(subject)
    }

    /// Moves the events of at most `max` dead-letter blobs into the parking area, deleting each
    /// blob after: read a page at a time, so the container's size costs no memory, and from the
    /// beginning each tick, since what was taken in is gone.
    async fn take_dead_letters(
        &self,
        now: OffsetDateTime,
        deadline: Deadline,
        max: usize,
    ) -> Result<(usize, Vec<SubjectReport>), StoreError> {
        let Some(dead_letters) = &self.dead_letters else {
            return Ok((0, Vec::new()));
        };
        let parking = Parking::new(self.store.clone());
        let mut taken = 0;
        let mut poisoned = Vec::new();
        let mut listing = Listing::new(dead_letters.as_ref(), "", max);
        let mut blobs = 0;
        while let Some(blob) = listing.next().await? {
            if deadline.is_past() || blobs == max {
                break;
            }
            if blob.size > MAX_DEAD_LETTER_BYTES {
                tracing::warn!(blob = %blob.key.as_str(), bytes = blob.size, "dead-letter blob too large for an Event Grid delivery; left where it is");
                continue;
            }
            let Some(stored) = dead_letters.get(&blob.key).await? else {
                continue;
            };
            blobs += 1;
            let events = dead_lettered_events(&stored.bytes);
            if events.is_empty() {
                // Not an array of events: kept as one poison body, so a person sees it.
                let delivery = ParkedDelivery::new(
                    "eventgrid-deadletter",
                    blob.key.as_str(),
                    "a dead-letter blob that is not a JSON array of events",
                    String::from_utf8_lossy(&stored.bytes),
                    now,
                );
                let key = ParkKey::by_content("eventgrid-deadletter", &stored.bytes);
                poisoned.push(
                    self.poison(&parking, &key, &delivery, now, deadline)
                        .await?,
                );
            }
            for event in &events {
                let delivery = ParkedDelivery::new(
                    "eventgrid-deadletter",
                    format!("dead-letter blob {}", blob.key.as_str()),
                    event.reason.clone(),
                    event.body.clone(),
                    now,
                );
                let key = ParkKey::by_content("eventgrid", event.identity.as_bytes());
                parking.park(&key, &delivery).await?;
                taken += 1;
            }
            // Everything in it is parked: the blob may go (a lost race is someone else's delete).
            match dead_letters
                .delete(&blob.key, Condition::IfMatch(stored.etag))
                .await
            {
                Ok(()) | Err(StoreError::ConditionFailed { .. } | StoreError::NotFound { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok((taken, poisoned))
    }
}

/// Removes a parked record if it is still the version read (a lost race is fine: whoever
/// changed it is working it).
async fn forget(store: &dyn ArtifactStore, key: &ObjectKey, etag: ETag) -> Result<(), StoreError> {
    match store.delete(key, Condition::IfMatch(etag)).await {
        Ok(()) | Err(StoreError::ConditionFailed { .. } | StoreError::NotFound { .. }) => Ok(()),
        Err(error) => Err(error),
    }
}

/// The reasons a run asked for a retry (at most three subjects), for a parked record: reports
/// hold no secrets.
pub fn retry_reasons(run: &crate::triage::RunReport) -> String {
    let reasons: Vec<String> = run
        .subjects
        .iter()
        .filter(|s| {
            matches!(
                s.outcome,
                crate::triage::Outcome::Failed {
                    retryable: true,
                    ..
                }
            )
        })
        .take(3)
        .map(|s| s.line())
        .collect();
    reasons.join("; ")
}

/// One event of a dead-letter blob: its body for the pipeline, its identity, and what Event
/// Grid said about it.
struct DeadLettered {
    body: String,
    identity: String,
    reason: String,
}

/// The events of a dead-letter blob: Event Grid writes one JSON array of the events of a
/// delivery, each with `deadLetterReason`, `deliveryAttempts` and `lastDeliveryOutcome` added
/// beside the event's own fields. Those fields stay in the body: the pipeline reads events by
/// their known fields and ignores the rest.
fn dead_lettered_events(bytes: &[u8]) -> Vec<DeadLettered> {
    let Ok(serde_json::Value::Array(events)) = serde_json::from_slice::<serde_json::Value>(bytes)
    else {
        return Vec::new();
    };
    events
        .into_iter()
        .filter(serde_json::Value::is_object)
        .map(|event| {
            let field = |name: &str| {
                event
                    .get(name)
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            };
            let reason = format!(
                "Event Grid dead-lettered it: {} after {} delivery attempts (last outcome: {})",
                field("deadLetterReason").unwrap_or_else(|| "no reason given".to_owned()),
                field("deliveryAttempts").unwrap_or_else(|| "?".to_owned()),
                field("lastDeliveryOutcome").unwrap_or_else(|| "unknown".to_owned()),
            );
            let body = event.to_string();
            let identity = field("id").unwrap_or_else(|| body.clone());
            DeadLettered {
                body,
                identity,
                reason: diagnosis::redact::redact(&reason),
            }
        })
        .collect()
}

/// A delivery's source as people say it.
fn source_label(source: &str) -> &'static str {
    match source {
        "eventhubs" => "An Event Hubs delivery",
        "eventgrid-deadletter" => "An Event Grid dead letter",
        "lambda" => "A Lambda invocation",
        _ => "A delivery",
    }
}

/// The alert for a delivery declared poison: what it was, why, and where it is kept.
fn poison_diagnosis(key: &ParkKey, delivery: &ParkedDelivery, account: &str) -> Diagnosis {
    let class = FailureClass::DeliveryUnprocessable;
    let kept = format!("{POISONED_PREFIX}{}", key.as_str());
    Diagnosis {
        subject: Subject {
            account: Some(account.to_owned()),
            job_id: None,
            task_id: None,
            attempt: None,
            pool_id: None,
            node_id: None,
        },
        class,
        severity: class.severity(),
        summary: format!(
            "{} could not be processed after {} drains; it is kept in the store",
            source_label(&delivery.source),
            delivery.drains
        ),
        cause: format!(
            "{} Last error: {}.",
            delivery.reason,
            delivery.last_error.as_deref().unwrap_or("none recorded")
        ),
        hints: vec![
            format!("The delivery is kept at `{kept}` in the store, with its reason."),
            format!(
                "Once the cause is fixed, move it back to `{PARKED_PREFIX}{}`: the next sweep \
                 works it again.",
                key.as_str()
            ),
        ],
        exit_code: None,
        exit_code_hex: None,
        exit_meaning: None,
        failure: None,
        impact: None,
        logs: Vec::new(),
        fingerprint: format!("delivery-unprocessable-{}", delivery.source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_hubs_keys_sort_by_sequence_and_hostile_names_are_hashed() {
        let a = ParkKey::event_hubs("batch-logs", "0", 17);
        let b = ParkKey::event_hubs("batch-logs", "0", 170);
        assert_eq!(
            a.as_str(),
            "eventhubs/batch-logs/0/00000000000000000017.json"
        );
        assert!(a.as_str() < b.as_str());
        let hostile = ParkKey::event_hubs("../../etc", "a/b", 1);
        assert!(!hostile.as_str().contains(".."), "{}", hostile.as_str());
        assert_eq!(hostile.as_str().matches('/').count(), 3);
        assert_ne!(
            ParkKey::event_hubs("x/y", "0", 1),
            ParkKey::event_hubs("x_y", "0", 1)
        );
        assert!(hostile.parked().is_ok());
    }

    #[test]
    fn content_keys_are_stable_and_distinct() {
        assert_eq!(
            ParkKey::by_content("eventgrid", b"id-1"),
            ParkKey::by_content("eventgrid", b"id-1")
        );
        assert_ne!(
            ParkKey::by_content("eventgrid", b"id-1"),
            ParkKey::by_content("eventgrid", b"id-2")
        );
    }

    #[test]
    fn dead_letter_blobs_give_their_events_with_event_grids_reason() {
        let blob = br#"[{"id":"e1","eventType":"Batch.TaskFailed","subject":"jobs/etl/tasks/t1",
            "data":{"jobId":"etl","taskId":"t1"},"deadLetterReason":"MaxDeliveryAttemptsExceeded",
            "deliveryAttempts":30,"lastDeliveryOutcome":"Probation"}, 7]"#;
        let events = dead_lettered_events(blob);
        assert_eq!(events.len(), 1, "non-objects are not events");
        assert_eq!(events[0].identity, "e1");
        assert!(events[0].reason.contains("MaxDeliveryAttemptsExceeded"));
        assert!(events[0].reason.contains("30 delivery attempts"));
        assert!(events[0].body.contains("\"jobId\":\"etl\""));
        assert!(dead_lettered_events(b"{\"not\":\"an array\"}").is_empty());
        assert!(dead_lettered_events(b"\xff\xfe").is_empty());
    }

    #[test]
    fn a_parked_record_round_trips_and_reads_without_optional_fields() {
        let delivery = ParkedDelivery::new(
            "eventhubs",
            "hub/0/17",
            "last retry",
            "{\"records\":[]}",
            OffsetDateTime::UNIX_EPOCH,
        );
        let back: ParkedDelivery = serde_json::from_slice(&encode(&delivery)).unwrap();
        assert_eq!(back, delivery);
        let minimal: ParkedDelivery = serde_json::from_str(
            r#"{"version":1,"source":"s","origin":"o","reason":"r","parkedAt":"t","payload":"p"}"#,
        )
        .unwrap();
        assert_eq!(minimal.drains, 0);
    }
}
