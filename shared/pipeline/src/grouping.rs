//! Alert groups in the artifact store, correct with several instances at once.
//!
//! Each group (one rule × receiver × `group_by` values) is one object,
//! `groups/{digest(group key)}.json`, holding the pure [`GroupState`] plus what the timer sweep
//! needs (receiver, rule, timings, an example diagnosis). Every change is a compare-and-swap:
//! read with its ETag, fold the alert in with [`diagnosis::policy::decide`], write with
//! `IfMatch(etag)` (or `IfAbsent` for a new group), and start again from the read on
//! `ConditionFailed`. So concurrent alerts are all counted, and exactly one writer sees each
//! "send now" transition. Before handing a notification out, the writer also creates
//! `sent/{digest}-{sequence}` with `IfAbsent`: whatever happens to the group object, a
//! notification id is handed out at most once.
//!
//! Delivery is at most once per notification: a notification whose marker was created is not
//! produced again, even if the caller then fails to deliver it.
//!
//! The read before the compare-and-swap is skipped when it can be: each [`GroupStore`] (one per
//! process) remembers the last version of each group it wrote, and folds the next alert
//! into that version, written with `IfMatch` on its ETag. The ETag changes on every write, so the
//! write wins only if the group is still exactly what was remembered; if another instance wrote
//! meanwhile it fails (412), the group is read and the fold done again, as without the memory.
//! A group another instance keeps writing is read first again for [`CONTENDED_FOR`], so sharing
//! a group costs no more than before; one instance alone saves the read (one request per alert
//! on Blob Storage when alerts come one per invocation). Within a process, the updates of one
//! group take turns (the invocations a host runs at once would otherwise overtake each other's
//! versions).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use artifact_store::{
    ArtifactStore, Condition, DEFAULT_PAGE, ETag, Listing, ObjectKey, StoreError, Versioned,
};
use bytes::Bytes;
use diagnosis::Diagnosis;
use diagnosis::policy::{
    AlertFacts, Decision, Escalation, GroupState, Grouping, Notification, Plan, PlannedReceiver,
    decide, decide_in_place, tick,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::digest;

mod input;
pub use input::AlertInput;

/// Compare-and-swap attempts before giving up on a group that keeps changing under us.
pub const MAX_CAS_ATTEMPTS: u32 = 64;

/// How long a group whose remembered version was overtaken by another writer is read before
/// each compare-and-swap again, instead of trusting the memory (see the module docs).
pub const CONTENDED_FOR: Duration = Duration::from_secs(60);

/// Groups remembered at most; past that the memory starts again empty (a bound, not an LRU:
/// a process sees few groups at once).
const MAX_REMEMBERED: usize = 1024;

/// Locks the updates of a process take turns on, a group's chosen by its key's hash: a fixed
/// number, so nothing grows with the groups, and enough that two groups rarely share one.
const UPDATE_TURNS: usize = 64;

/// Why recording or flushing alerts failed. Every variant is worth retrying the whole operation
/// later except [`GroupError::Store`] with a non-retryable cause.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// The store failed.
    #[error("alert group store: {0}")]
    Store(#[from] StoreError),
    /// Another instance changed the group on every one of [`MAX_CAS_ATTEMPTS`] tries.
    #[error("alert group {key} kept changing; gave up after {attempts} attempts")]
    Contended {
        /// The group object's key.
        key: String,
        /// How many times we tried.
        attempts: u32,
    },
}

/// One notification to deliver, already claimed for this instance.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertToSend {
    /// Unique id of the notification (`{group digest}-{sequence}`); the `sent/` marker's name.
    pub alert_id: String,
    /// The receiver to deliver to.
    pub receiver: String,
    /// The rule that routed it.
    pub rule: String,
    /// What to say: counts, causes, examples.
    pub notification: Notification,
    /// The group's first diagnosis, for rendering the cause and hints.
    pub example: Diagnosis,
}

/// What [`GroupStore::record`] did with one diagnosis.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupOutcome {
    /// Notifications to deliver now (at most one per planned receiver).
    pub send: Vec<AlertToSend>,
    /// Groups with a notification pending, and when the sweep should flush them.
    pub waiting: Vec<(String, OffsetDateTime)>,
    /// Groups where this diagnosis changed nothing to send (a redelivery, or nothing new).
    pub suppressed: Vec<String>,
}

/// What [`GroupStore::record_batch`] did: one outcome per alert, in the order given, and the
/// groups that could not be written with the alerts they failed.
#[derive(Debug, Default)]
pub struct BatchRecord {
    /// Per alert: what to deliver now, what waits, what was suppressed.
    pub outcomes: Vec<GroupOutcome>,
    /// Alerts (their indices) whose group failed, with why; their outcomes are empty.
    pub failed: Vec<(Vec<usize>, GroupError)>,
}

/// The stored form of a group.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupRecord {
    receiver: String,
    rule: String,
    group_by: Vec<String>,
    group_wait_ms: u64,
    group_interval_ms: u64,
    repeat_interval_ms: u64,
    /// Missing in records stored before growth was announced: they take the default.
    #[serde(default = "default_renotify_on_growth")]
    renotify_on_growth: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    escalate: Option<Escalation>,
    example: Diagnosis,
    state: GroupState,
    /// The `state.sends` at which the group's "resolved" message was claimed (by
    /// [`GroupStore::claim_resolved`]); the group is open again once another notification
    /// goes out. Absent in records written before resolved messages existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resolved_at_send: Option<u64>,
}

impl GroupRecord {
    fn grouping(&self) -> Grouping {
        Grouping {
            group_by: self.group_by.clone(),
            group_wait: Duration::from_millis(self.group_wait_ms),
            group_interval: Duration::from_millis(self.group_interval_ms),
            repeat_interval: Duration::from_millis(self.repeat_interval_ms),
            renotify_on_growth: self.renotify_on_growth,
            escalate: self.escalate.clone(),
        }
    }
}

#[allow(clippy::unnecessary_wraps)] // serde's default must return the field's type
fn default_renotify_on_growth() -> Option<f64> {
    Some(diagnosis::policy::DEFAULT_RENOTIFY_ON_GROWTH)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The marker body: who claimed a notification and when, for people reading the store.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SentMarker<'a> {
    group_key: &'a str,
    receiver: &'a str,
    sequence: u64,
    count: u64,
    claimed_at: String,
}

/// A group as a report shows it.
#[derive(Debug, Clone)]
pub struct GroupSummary {
    /// The receiver.
    pub receiver: String,
    /// The rule that routed to it.
    pub rule: String,
    /// The first alert's diagnosis.
    pub example: Diagnosis,
    /// Counts, times and sends.
    pub state: GroupState,
}

/// Alert groups in an [`ArtifactStore`].
#[derive(Debug, Clone)]
pub struct GroupStore {
    store: Arc<dyn ArtifactStore>,
    /// The last version of each group this process wrote (see the module docs); shared
    /// by clones.
    remembered: Arc<Mutex<HashMap<ObjectKey, Remembered>>>,
    /// The turns of this process's updates ([`UPDATE_TURNS`]); shared by clones.
    turns: Arc<[futures::lock::Mutex<()>]>,
}

/// What a [`GroupStore`] remembers of one group.
#[derive(Debug, Clone)]
enum Remembered {
    /// The group as stored at this ETag, parsed from the bytes written.
    Version(Box<GroupRecord>, ETag),
    /// Another instance overtook a remembered version: read before writing until then.
    Contended(Instant),
}

impl GroupStore {
    /// Groups kept in `store` (under `groups/` and `sent/`).
    pub fn new(store: Arc<dyn ArtifactStore>) -> Self {
        Self {
            store,
            remembered: Arc::default(),
            turns: (0..UPDATE_TURNS)
                .map(|_| futures::lock::Mutex::new(()))
                .collect(),
        }
    }

    /// The remembered version of the group at `key`, unless it is contended.
    fn recall(&self, key: &ObjectKey) -> Option<(GroupRecord, ETag)> {
        let remembered = self
            .remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match remembered.get(key)? {
            Remembered::Version(record, etag) => Some(((**record).clone(), etag.clone())),
            Remembered::Contended(_) => None,
        }
    }

    /// Remembers the group at `key` as `bytes` at `etag` (parsed as a read would parse them);
    /// a contended group stays contended until its time is up.
    fn remember(&self, key: &ObjectKey, bytes: &[u8], etag: ETag) {
        let Ok(record) = serde_json::from_slice::<GroupRecord>(bytes) else {
            self.forget(key);
            return;
        };
        let mut remembered = self
            .remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(Remembered::Contended(until)) = remembered.get(key)
            && *until > Instant::now()
        {
            return;
        }
        if remembered.len() >= MAX_REMEMBERED && !remembered.contains_key(key) {
            remembered.clear();
        }
        remembered.insert(key.clone(), Remembered::Version(Box::new(record), etag));
    }

    /// Another instance wrote the group since it was remembered: read it first for a while.
    fn contended(&self, key: &ObjectKey) {
        let mut remembered = self
            .remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        remembered.insert(
            key.clone(),
            Remembered::Contended(Instant::now() + CONTENDED_FOR),
        );
    }

    /// The lock the updates of the group at `key` take turns on.
    fn turn(&self, key: &ObjectKey) -> &futures::lock::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.as_str().hash(&mut hasher);
        let at = usize::try_from(hasher.finish() % UPDATE_TURNS as u64).unwrap_or(0);
        &self.turns[at]
    }

    fn forget(&self, key: &ObjectKey) {
        self.remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    /// The object key of a group.
    pub fn group_object(group_key: &str) -> Result<ObjectKey, StoreError> {
        ObjectKey::new(format!("groups/{}.json", digest(group_key)))
    }

    /// Folds `diagnosis` into the group of each receiver `plan` routes it to (none when
    /// silenced), and returns the notifications this instance must deliver now.
    pub async fn record(
        &self,
        diagnosis: &Diagnosis,
        plan: &Plan,
        now: OffsetDateTime,
    ) -> Result<GroupOutcome, GroupError> {
        let mut batch = self.record_batch(&[(diagnosis, plan)], now).await;
        match batch.failed.pop() {
            Some((_, error)) => Err(error),
            None => Ok(batch.outcomes.pop().unwrap_or_default()),
        }
    }

    /// Folds several alerts into their groups at once: each group is read and written once
    /// (one compare-and-swap) however many of the alerts it gets, in the order given, so the
    /// decisions are those of recording them one by one at `now`. A burst of failures of one
    /// job costs one group write per batch, not one per failure.
    ///
    /// A group that cannot be written fails only the alerts routed to it; the others stand.
    pub async fn record_batch(
        &self,
        alerts: &[(&Diagnosis, &Plan)],
        now: OffsetDateTime,
    ) -> BatchRecord {
        let alerts: Vec<AlertInput<'_>> = alerts
            .iter()
            .map(|(diagnosis, plan)| AlertInput {
                diagnosis,
                plan,
                incident: None,
            })
            .collect();
        self.record_batch_knowing(&alerts, &HashMap::new(), now)
            .await
    }

    /// [`GroupStore::record_batch`], knowing how many tasks some jobs have
    /// ([`job_tasks_key`] → active + running + completed), for rules that escalate on a share of
    /// the job's tasks.
    pub async fn record_batch_knowing(
        &self,
        alerts: &[AlertInput<'_>],
        job_tasks: &HashMap<String, u64>,
        now: OffsetDateTime,
    ) -> BatchRecord {
        // Group key → its receiver and its alerts (index, facts), in first-seen order.
        let mut groups: Vec<(&PlannedReceiver, Vec<(usize, AlertFacts)>)> = Vec::new();
        let mut slot_of: HashMap<&str, usize> = HashMap::new();
        for (i, alert) in alerts.iter().enumerate() {
            for receiver in &alert.plan.receivers {
                let tasks = job_tasks_key(alert.diagnosis).and_then(|k| job_tasks.get(&k));
                let facts = AlertFacts::from_diagnosis(&receiver.group_key, alert.diagnosis)
                    .with_job_tasks(tasks.copied())
                    .with_incident(alert.incident);
                let slot = *slot_of
                    .entry(receiver.group_key.as_str())
                    .or_insert_with(|| {
                        groups.push((receiver, Vec::new()));
                        groups.len() - 1
                    });
                groups[slot].1.push((i, facts));
            }
        }
        let mut batch = BatchRecord {
            outcomes: vec![GroupOutcome::default(); alerts.len()],
            failed: Vec::new(),
        };
        for (receiver, members) in &groups {
            let Some((first, rest)) = members.split_first() else {
                continue;
            };
            let example = alerts[first.0].diagnosis;
            let folded = self
                .update(&receiver.group_key, None, |record| {
                    fold(record, first, rest, receiver, example, now)
                })
                .await;
            let (decisions, record) = match folded {
                Ok(folded) => folded,
                Err(error) => {
                    batch
                        .failed
                        .push((members.iter().map(|(i, _)| *i).collect(), error));
                    continue;
                }
            };
            for (i, decision) in decisions {
                if let Err(error) = self
                    .collect(decision, &record, now, &mut batch.outcomes[i])
                    .await
                {
                    batch.failed.push((vec![i], error));
                }
            }
        }
        batch
    }

    /// The groups seen since `since`, most recently seen first, at most `limit` of them read (a
    /// report's bound), with how many groups the store holds in all.
    pub async fn summaries(
        &self,
        since: OffsetDateTime,
        limit: usize,
    ) -> Result<(Vec<GroupSummary>, usize), GroupError> {
        // Counted a page at a time; only the first `limit` read.
        let mut listing = Listing::new(self.store.as_ref(), "groups/", DEFAULT_PAGE);
        let mut total = 0;
        let mut out = Vec::new();
        while let Some(info) = listing.next().await? {
            total += 1;
            if total > limit {
                continue;
            }
            let Some(current) = self.store.get(&info.key).await? else {
                continue;
            };
            let Ok(record) = serde_json::from_slice::<GroupRecord>(&current.bytes) else {
                continue;
            };
            if record.state.last_seen < since {
                continue;
            }
            out.push(GroupSummary {
                receiver: record.receiver,
                rule: record.rule,
                example: record.example,
                state: record.state,
            });
        }
        out.sort_by_key(|g| std::cmp::Reverse(g.state.last_seen));
        Ok((out, total))
    }

    /// The timer sweep: flushes every group whose pending notification is due at `now`, and
    /// returns the notifications this instance claimed.
    pub async fn due(&self, now: OffsetDateTime) -> Result<Vec<AlertToSend>, GroupError> {
        let mut outcome = GroupOutcome::default();
        let mut listing = Listing::new(self.store.as_ref(), "groups/", DEFAULT_PAGE);
        while let Some(info) = listing.next().await? {
            let Some(current) = self.store.get(&info.key).await? else {
                continue;
            };
            let Ok(record) = serde_json::from_slice::<GroupRecord>(&current.bytes) else {
                tracing::warn!(key = %info.key, "unreadable alert group skipped by the sweep");
                continue;
            };
            if record.state.flush_at.is_none_or(|at| at > now) {
                continue;
            }
            let group_key = record.state.group_key.clone();
            // The version just read is the first attempt's: no second read of the same group
            // (unless the object is not where its key puts it, which `update` reads instead).
            let known = (Self::group_object(&group_key)? == info.key).then_some(current);
            let (decision, record) = self
                .update(&group_key, known, |stored| match stored {
                    Some(r) => {
                        let (decision, state) = tick(&r.state, &r.grouping(), now);
                        (decision, GroupRecord { state, ..r.clone() })
                    }
                    // Deleted since listed: nothing to flush.
                    None => (Decision::Suppress, record.clone()),
                })
                .await?;
            self.collect(decision, &record, now, &mut outcome).await?;
        }
        Ok(outcome.send)
    }

    /// The stored state of a group, if any.
    pub async fn state(&self, group_key: &str) -> Result<Option<GroupState>, GroupError> {
        let key = Self::group_object(group_key)?;
        Ok(self
            .store
            .get(&key)
            .await?
            .and_then(|v| serde_json::from_slice::<GroupRecord>(&v.bytes).ok())
            .map(|r| r.state))
    }

    /// Reads, changes and writes a group with compare-and-swap until the write wins. `change`
    /// may run several times; it must be pure. A change that leaves the state as it was writes
    /// nothing.
    ///
    /// The first attempt reads nothing when it can fold into `known` (the version the caller
    /// has just read) or the version this process remembers: the write is conditional on that
    /// version's ETag either way, so it wins only if the group is still that version. A
    /// remembered version is trusted only by a write that wins: one the change would leave as
    /// it is is read again before deciding so.
    async fn update<D>(
        &self,
        group_key: &str,
        known: Option<Versioned>,
        change: impl Fn(Option<&GroupRecord>) -> (D, GroupRecord),
    ) -> Result<(D, GroupRecord), GroupError> {
        let key = Self::group_object(group_key)?;
        // Held to the end: this process's other updates of the group wait, then start from the
        // version this one wrote.
        let _turn = self.turn(&key).lock().await;
        let mut known = known;
        let mut remembered = if known.is_none() {
            self.recall(&key)
        } else {
            None
        };
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (stored, condition, read) = match remembered.take() {
                Some((record, etag)) => (Some(record), Condition::IfMatch(etag), false),
                None => {
                    let current = match known.take() {
                        Some(current) => Some(current),
                        None => self.store.get(&key).await?,
                    };
                    let (stored, condition) = parse_group(&key, current.as_ref());
                    (stored, condition, true)
                }
            };
            let (decision, next) = change(stored.as_ref());
            if stored.as_ref().is_some_and(|s| s.state == next.state) {
                if read {
                    return Ok((decision, next));
                }
                continue;
            }
            let body = match serde_json::to_vec(&next) {
                Ok(body) => Bytes::from(body),
                Err(error) => {
                    return Err(GroupError::Store(StoreError::Other {
                        message: format!("cannot encode alert group: {error}"),
                    }));
                }
            };
            match self.store.put(&key, body.clone(), condition).await {
                Ok(etag) => {
                    self.remember(&key, &body, etag);
                    return Ok((decision, next));
                }
                Err(StoreError::ConditionFailed { .. }) => {
                    if !read {
                        self.contended(&key);
                    }
                    continue;
                }
                Err(error) => {
                    self.forget(&key);
                    return Err(error.into());
                }
            }
        }
        Err(GroupError::Contended {
            key: key.to_string(),
            attempts: MAX_CAS_ATTEMPTS,
        })
    }

    /// Turns a decision into the outcome, claiming the notification's `sent/` marker first.
    async fn collect(
        &self,
        decision: Decision,
        record: &GroupRecord,
        now: OffsetDateTime,
        outcome: &mut GroupOutcome,
    ) -> Result<(), GroupError> {
        match decision {
            Decision::Wait { until } => outcome
                .waiting
                .push((record.state.group_key.clone(), until)),
            Decision::Suppress => outcome.suppressed.push(record.state.group_key.clone()),
            Decision::SendNow(notification) => {
                let alert_id = format!(
                    "{}-{}",
                    digest(&notification.group_key),
                    notification.sequence
                );
                let marker = SentMarker {
                    group_key: &notification.group_key,
                    receiver: &record.receiver,
                    sequence: notification.sequence,
                    count: notification.count,
                    claimed_at: now
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default(),
                };
                let body = serde_json::to_vec(&marker).unwrap_or_default();
                let key = ObjectKey::new(format!("sent/{alert_id}"))?;
                match self
                    .store
                    .put(&key, Bytes::from(body), Condition::IfAbsent)
                    .await
                {
                    Ok(_) => outcome.send.push(AlertToSend {
                        alert_id,
                        receiver: record.receiver.clone(),
                        rule: record.rule.clone(),
                        notification,
                        example: record.example.clone(),
                    }),
                    Err(StoreError::ConditionFailed { .. }) => {
                        tracing::info!(alert_id = %alert_id, "notification already claimed by another instance");
                        outcome.suppressed.push(record.state.group_key.clone());
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        }
        Ok(())
    }
}

/// A group as read (`None`: absent), and the condition its next write must carry. An unreadable
/// object (a crash mid-format cannot happen, so a foreign or future format) is replaced, but
/// still only by compare-and-swap.
fn parse_group(key: &ObjectKey, current: Option<&Versioned>) -> (Option<GroupRecord>, Condition) {
    match current {
        None => (None, Condition::IfAbsent),
        Some(v) => match serde_json::from_slice::<GroupRecord>(&v.bytes) {
            Ok(record) => (Some(record), Condition::IfMatch(v.etag.clone())),
            Err(error) => {
                tracing::warn!(key = %key, error = %error, "unreadable alert group replaced");
                (None, Condition::IfMatch(v.etag.clone()))
            }
        },
    }
}

/// One group's compare-and-swap step for [`GroupStore::record_batch`]: the decision for each of
/// its alerts (`first`, then `rest`), folded in order, and the record to store. Pure, as
/// `update` requires.
fn fold(
    record: Option<&GroupRecord>,
    first: &(usize, AlertFacts),
    rest: &[(usize, AlertFacts)],
    receiver: &PlannedReceiver,
    example: &Diagnosis,
    now: OffsetDateTime,
) -> (Vec<(usize, Decision)>, GroupRecord) {
    let (decision, mut state) = decide(record.map(|r| &r.state), &first.1, &receiver.grouping, now);
    let mut decisions = Vec::with_capacity(1 + rest.len());
    decisions.push((first.0, decision));
    for (i, facts) in rest {
        decisions.push((
            *i,
            decide_in_place(&mut state, facts, &receiver.grouping, now),
        ));
    }
    let record = match record {
        Some(r) => GroupRecord { state, ..r.clone() },
        None => new_record(receiver, example, state),
    };
    (decisions, record)
}

fn new_record(receiver: &PlannedReceiver, diagnosis: &Diagnosis, state: GroupState) -> GroupRecord {
    GroupRecord {
        receiver: receiver.receiver.clone(),
        rule: receiver.rule.clone(),
        group_by: receiver.grouping.group_by.clone(),
        group_wait_ms: millis(receiver.grouping.group_wait),
        group_interval_ms: millis(receiver.grouping.group_interval),
        repeat_interval_ms: millis(receiver.grouping.repeat_interval),
        renotify_on_growth: receiver.grouping.renotify_on_growth,
        escalate: receiver.grouping.escalate.clone(),
        example: diagnosis.clone(),
        state,
        resolved_at_send: None,
    }
}

/// A notified group whose receiver has not been told it is over: what the resolution check
/// ([`crate::triage::Triage::resolve_groups`]) reads.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenGroup {
    /// The group's key.
    pub group_key: String,
    /// Its receiver.
    pub receiver: String,
    /// The rule that routed it.
    pub rule: String,
    /// Its first diagnosis: what failed, and so what ending to look for.
    pub example: Diagnosis,
    /// Failures counted in the episode.
    pub count: u64,
    /// Example subjects.
    pub examples: Vec<diagnosis::Subject>,
    /// Notifications sent so far: the resolved message is claimed against this number, so a
    /// group notified again meanwhile is looked at afresh.
    pub sends: u64,
}

impl GroupStore {
    /// The groups that were notified and not yet resolved, for the receivers `wanted` says
    /// send resolved messages. Reads every group object once.
    pub async fn open_groups(
        &self,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Vec<OpenGroup>, GroupError> {
        let mut open = Vec::new();
        let mut listing = Listing::new(self.store.as_ref(), "groups/", DEFAULT_PAGE);
        while let Some(info) = listing.next().await? {
            let Some(current) = self.store.get(&info.key).await? else {
                continue;
            };
            let Ok(record) = serde_json::from_slice::<GroupRecord>(&current.bytes) else {
                continue;
            };
            let notified = record.state.sends > 0;
            if !notified
                || record.resolved_at_send == Some(record.state.sends)
                || !wanted(&record.receiver)
            {
                continue;
            }
            open.push(OpenGroup {
                group_key: record.state.group_key.clone(),
                receiver: record.receiver,
                rule: record.rule,
                example: record.example,
                count: record.state.count,
                examples: record.state.examples,
                sends: record.state.sends,
            });
        }
        Ok(open)
    }

    /// Claims the "resolved" message of `group` for this instance: `true` exactly once per
    /// group and notification count, however many instances try. The record is changed by
    /// compare-and-swap (marked resolved at its `sends`, and anything pending folded into what
    /// was said, so no repeat of an ended failure follows the all-clear); then a
    /// `sent/{digest}-resolved-{sends}` marker is created, as for every notification.
    /// A group notified again since it was read is left for the next look.
    pub async fn claim_resolved(
        &self,
        group: &OpenGroup,
        now: OffsetDateTime,
    ) -> Result<bool, GroupError> {
        let key = Self::group_object(&group.group_key)?;
        let mut won = false;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let Some(current) = self.store.get(&key).await? else {
                return Ok(false);
            };
            let Ok(mut record) = serde_json::from_slice::<GroupRecord>(&current.bytes) else {
                return Ok(false);
            };
            let sends = record.state.sends;
            if sends != group.sends || record.resolved_at_send == Some(sends) {
                return Ok(false);
            }
            record.resolved_at_send = Some(sends);
            record.state.resolve();
            let body = serde_json::to_vec(&record).map_err(|error| {
                GroupError::Store(StoreError::Other {
                    message: format!("cannot encode alert group: {error}"),
                })
            })?;
            let body = Bytes::from(body);
            match self
                .store
                .put(&key, body.clone(), Condition::IfMatch(current.etag))
                .await
            {
                Ok(etag) => {
                    self.remember(&key, &body, etag);
                    won = true;
                    break;
                }
                Err(StoreError::ConditionFailed { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        if !won {
            return Err(GroupError::Contended {
                key: key.to_string(),
                attempts: MAX_CAS_ATTEMPTS,
            });
        }
        let alert_id = format!("{}-resolved-{}", digest(&group.group_key), group.sends);
        let marker = SentMarker {
            group_key: &group.group_key,
            receiver: &group.receiver,
            sequence: group.sends,
            count: group.count,
            claimed_at: now
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        };
        let body = serde_json::to_vec(&marker).unwrap_or_default();
        match self
            .store
            .put(
                &ObjectKey::new(format!("sent/{alert_id}"))?,
                Bytes::from(body),
                Condition::IfAbsent,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }
}

/// The key of a job's task count in [`GroupStore::record_batch_knowing`]: the account and the
/// job, since two accounts of a deployment may both have a job of that id.
pub fn job_tasks_key(diagnosis: &Diagnosis) -> Option<String> {
    let job = diagnosis.subject.job_id.as_deref()?;
    let account = diagnosis.subject.account.as_deref().unwrap_or_default();
    Some(format!("{}\n{job}", account.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> serde_json::Value {
        let json = include_bytes!("../../diagnosis/test_data/exit-137-oom.json");
        let mut found = Vec::new();
        diagnosis::payload::read_slice(json, &mut |item| {
            found.extend(diagnosis::diagnose_item(
                &item,
                &diagnosis::Evidence::default(),
            ));
        })
        .unwrap();
        let diagnosis = found.remove(0);
        let receiver = PlannedReceiver {
            receiver: "ops".to_owned(),
            rule: "r".to_owned(),
            group_key: "k".to_owned(),
            grouping: Grouping::default(),
        };
        let facts = AlertFacts::from_diagnosis("k", &diagnosis);
        let (_, state) = decide(None, &facts, &receiver.grouping, OffsetDateTime::UNIX_EPOCH);
        serde_json::to_value(new_record(&receiver, &diagnosis, state)).unwrap()
    }

    #[test]
    fn a_group_stored_before_growth_existed_reads_with_the_default_growth() {
        let mut old = record();
        let object = old.as_object_mut().unwrap();
        object.remove("renotifyOnGrowth");
        object.remove("escalate");
        let read: GroupRecord = serde_json::from_value(old).unwrap();
        assert_eq!(read.grouping().renotify_on_growth, Some(2.0));
        assert_eq!(read.grouping().escalate, None);
        // Growth switched off is stored as null and stays off.
        let mut off = record();
        off["renotifyOnGrowth"] = serde_json::Value::Null;
        let read: GroupRecord = serde_json::from_value(off).unwrap();
        assert_eq!(read.grouping().renotify_on_growth, None);
    }
}
