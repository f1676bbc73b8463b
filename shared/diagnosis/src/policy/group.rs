//! Alert grouping as a pure state machine, with Prometheus Alertmanager's semantics
//! (`group_wait`, `group_interval`, `repeat_interval`) and Sentry's lesson: many failures with one cause make one alert with a count.
//!
//! - The first alert of a group waits `group_wait`, then everything collected goes out at once.
//! - A new cause (fingerprint) in a group that was already notified goes out `group_interval`
//!   after the last notification.
//! - A group that has grown enough since its last notification (`renotify_on_growth`: doubled,
//!   or crossed 10, 100, 1,000, …) goes out again `group_interval` after it, with the new count
//!   and the one it had; so does a group that escalated (a rule's `escalate`, once per group).
//! - Other growth with known causes is re-sent only `repeat_interval` after the last one.
//! - A group quiet for `repeat_interval` starts over: its next failure waits `group_wait` again.
//!
//! [`decide`] folds one alert into the state; [`tick`] is the timer sweep's check of a group.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::Grouping;
use super::escalate::{Escalated, grew_enough};
use crate::report::{Diagnosis, Subject};

/// The version of [`GroupState`]'s JSON; a stored state of another version is started afresh.
pub const GROUP_STATE_VERSION: u32 = 1;
/// Example subjects kept per group (the alert lists them; the count says how many there were).
pub const MAX_EXAMPLES: usize = 10;
/// Distinct causes tracked per group; more are counted in `fingerprints_overflow`.
pub const MAX_FINGERPRINTS: usize = 100;
/// Recently counted occurrences remembered per group, so a redelivered event is not counted twice.
pub const MAX_RECENT: usize = 512;

/// One alert to fold into a group: an occurrence of a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertFacts {
    /// The group it joins (from [`super::plan`]).
    pub group_key: String,
    /// Identifies the occurrence (account/job/task/attempt/class), to ignore redeliveries.
    pub occurrence: String,
    /// Its cause.
    pub fingerprint: String,
    /// What failed.
    pub subject: Subject,
    /// How many tasks the job has (active + running + completed), when the caller read its task
    /// counts: a rule's `escalate.min_job_percent` is a share of it.
    pub job_tasks: Option<u64>,
}

impl AlertFacts {
    /// The facts of a diagnosis joining the group `group_key`.
    pub fn from_diagnosis(group_key: &str, d: &Diagnosis) -> Self {
        let s = &d.subject;
        let part = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
        // Pools, their nodes and start tasks belong to no job: the pool tells two apart.
        let owner = match (&s.job_id, &s.pool_id) {
            (None, Some(pool)) => format!("_pools/{pool}"),
            (job, _) => part(job),
        };
        Self {
            group_key: group_key.to_owned(),
            occurrence: format!(
                "{}/{}/{}/{}/{}/{}",
                part(&s.account),
                owner,
                part(&s.task_id),
                s.attempt.map_or_else(|| "-".to_owned(), |a| a.to_string()),
                part(&s.node_id),
                d.class
            ),
            fingerprint: d.fingerprint.clone(),
            subject: s.clone(),
            job_tasks: None,
        }
    }

    /// The same facts, for one incident of a subject that can fail, recover and fail again (a
    /// node: when it entered its state): a later incident is a new occurrence, not a
    /// redelivery of the first.
    #[must_use]
    pub fn with_incident(mut self, incident: Option<&str>) -> Self {
        if let Some(incident) = incident {
            self.occurrence.push('@');
            self.occurrence.push_str(incident);
        }
        self
    }

    /// The same facts, knowing the job's number of tasks.
    #[must_use]
    pub fn with_job_tasks(self, job_tasks: Option<u64>) -> Self {
        Self { job_tasks, ..self }
    }
}

/// What to do now about a group.
// A decision lives for one alert and is matched at once; boxing the notification would only
// add an allocation per send.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send this notification now.
    SendNow(Notification),
    /// Something is pending; the timer sweep sends it at `until`.
    Wait {
        /// When it is due.
        until: OffsetDateTime,
    },
    /// Nothing to send (a redelivered occurrence, or nothing new since the last notification).
    Suppress,
}

/// The content of one notification of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The group.
    pub group_key: String,
    /// 1 for the group's first notification, then 2, 3, …; with the key it identifies the
    /// notification, so two instances can agree never to send it twice.
    pub sequence: u64,
    /// Failures in the group so far.
    pub count: u64,
    /// The count the previous notification announced (`None` for the first one), so a growing
    /// group can say "now 5,000 (was 1)".
    pub previous_count: Option<u64>,
    /// Failures since the previous notification.
    pub new_count: u64,
    /// Causes not notified before.
    pub new_fingerprints: Vec<String>,
    /// All causes seen (bounded) with their counts.
    pub fingerprints: Vec<FingerprintSeen>,
    /// Example subjects (bounded): those since the previous notification, so each message
    /// shows fresh ones.
    pub examples: Vec<Subject>,
    /// When the group's first failure was recorded.
    pub first_seen: OffsetDateTime,
    /// When its latest failure was recorded.
    pub last_seen: OffsetDateTime,
    /// This repeats an unchanged group (no new cause, no growth that counts, no escalation).
    pub is_repeat: bool,
    /// The group's escalation, if it escalated (later notifications keep its severity).
    pub escalation: Option<Escalated>,
    /// This notification is the one that announces the escalation (once per group).
    pub escalated_now: bool,
}

/// A cause seen in a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FingerprintSeen {
    /// The fingerprint.
    pub fingerprint: String,
    /// Failures with it.
    pub count: u64,
    /// When it was first seen.
    #[serde(with = "rfc3339")]
    pub first_seen: OffsetDateTime,
    /// A subject that had it (for the alert's "new cause" line).
    pub example: Subject,
    /// A notification already mentioned it.
    pub notified: bool,
}

/// What is remembered about a group between alerts (stored as JSON, hence versioned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupState {
    /// [`GROUP_STATE_VERSION`].
    pub version: u32,
    /// The group.
    pub group_key: String,
    /// The first failure of the current episode.
    #[serde(with = "rfc3339")]
    pub first_seen: OffsetDateTime,
    /// The latest failure.
    #[serde(with = "rfc3339")]
    pub last_seen: OffsetDateTime,
    /// The latest notification, if any.
    #[serde(with = "rfc3339::option")]
    pub last_sent: Option<OffsetDateTime>,
    /// When the pending notification is due, if one is pending.
    #[serde(with = "rfc3339::option")]
    pub flush_at: Option<OffsetDateTime>,
    /// Failures counted in this episode.
    pub count: u64,
    /// `count` when the latest notification went out.
    pub count_at_last_send: u64,
    /// Notifications sent so far (the last one's sequence number).
    pub sends: u64,
    /// Example subjects, at most [`MAX_EXAMPLES`].
    pub examples: Vec<Subject>,
    /// Causes seen, at most [`MAX_FINGERPRINTS`].
    pub fingerprints: Vec<FingerprintSeen>,
    /// Distinct causes beyond the cap.
    pub fingerprints_overflow: u64,
    /// A cause beyond the cap arrived since the last notification.
    pub overflow_unnotified: bool,
    /// Occurrences counted recently (at most [`MAX_RECENT`], oldest first).
    pub recent: Vec<String>,
    /// The job's number of tasks, as last read (for `escalate.min_job_percent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_tasks: Option<u64>,
    /// The group's escalation, once it happened (at most once per episode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<Escalated>,
    /// The failure state the group was about ended and its receivers were told (a resolved
    /// message): its next failure is a new incident, even of the same subject, and starts a new
    /// episode. Set by [`GroupState::resolve`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resolved: bool,
}

impl GroupState {
    /// Records that the group's failure state ended: nothing is pending any more, and the next
    /// failure starts a new episode (see [`GroupState::resolved`]).
    pub fn resolve(&mut self) {
        self.count_at_last_send = self.count;
        self.flush_at = None;
        self.resolved = true;
    }

    fn new(group_key: &str, now: OffsetDateTime) -> Self {
        Self {
            version: GROUP_STATE_VERSION,
            group_key: group_key.to_owned(),
            first_seen: now,
            last_seen: now,
            last_sent: None,
            flush_at: None,
            count: 0,
            count_at_last_send: 0,
            sends: 0,
            examples: Vec::new(),
            fingerprints: Vec::new(),
            fingerprints_overflow: 0,
            overflow_unnotified: false,
            recent: Vec::new(),
            job_tasks: None,
            escalation: None,
            resolved: false,
        }
    }

    /// The group escalated and no notification has said so yet.
    pub fn escalation_pending(&self) -> bool {
        self.escalation.as_ref().is_some_and(|e| !e.announced)
    }

    /// The group has grown enough since its last notification to announce it again at
    /// `group_interval` (never before a first notification).
    pub fn has_grown(&self, grouping: &Grouping) -> bool {
        self.last_sent.is_some()
            && grouping
                .renotify_on_growth
                .is_some_and(|factor| grew_enough(self.count, self.count_at_last_send, factor))
    }

    /// Escalates the group (once) when its rule's threshold is crossed.
    fn check_escalation(&mut self, grouping: &Grouping, now: OffsetDateTime) {
        if self.escalation.is_some() {
            return;
        }
        let Some(rule) = &grouping.escalate else {
            return;
        };
        if let Some(reason) = rule.reason(self.count, self.job_tasks) {
            self.escalation = Some(Escalated {
                severity: rule.severity,
                reason,
                at: now,
                announced: false,
            });
        }
    }

    /// A cause arrived that no notification mentioned yet.
    pub fn has_new_cause(&self) -> bool {
        self.overflow_unnotified || self.fingerprints.iter().any(|f| !f.notified)
    }

    fn absorb(&mut self, facts: &AlertFacts, now: OffsetDateTime) {
        self.count += 1;
        self.last_seen = now;
        if facts.job_tasks.is_some() {
            self.job_tasks = facts.job_tasks;
        }
        if self.examples.len() < MAX_EXAMPLES && !self.examples.contains(&facts.subject) {
            self.examples.push(facts.subject.clone());
        }
        if self.recent.len() >= MAX_RECENT {
            self.recent.remove(0);
        }
        self.recent.push(facts.occurrence.clone());
        if let Some(seen) = self
            .fingerprints
            .iter_mut()
            .find(|f| f.fingerprint == facts.fingerprint)
        {
            seen.count += 1;
        } else if self.fingerprints.len() < MAX_FINGERPRINTS {
            self.fingerprints.push(FingerprintSeen {
                fingerprint: facts.fingerprint.clone(),
                count: 1,
                first_seen: now,
                example: facts.subject.clone(),
                notified: false,
            });
        } else {
            self.fingerprints_overflow += 1;
            self.overflow_unnotified = true;
        }
    }

    /// When the pending notification is due, or `None` if nothing is pending.
    fn due(&self, grouping: &Grouping) -> Option<OffsetDateTime> {
        match self.last_sent {
            None => Some(self.first_seen + grouping.group_wait),
            Some(sent)
                if self.has_new_cause()
                    || self.escalation_pending()
                    || self.has_grown(grouping) =>
            {
                Some(sent + grouping.group_interval)
            }
            Some(sent) if self.count > self.count_at_last_send => {
                Some(sent + grouping.repeat_interval)
            }
            Some(_) => None,
        }
    }

    /// Decides with the state already updated, marking it sent when sending.
    fn schedule(&mut self, grouping: &Grouping, now: OffsetDateTime) -> Decision {
        self.flush_at = self.due(grouping);
        match self.flush_at {
            None => Decision::Suppress,
            Some(until) if now < until => Decision::Wait { until },
            Some(_) => Decision::SendNow(self.mark_sent(grouping, now)),
        }
    }

    fn mark_sent(&mut self, grouping: &Grouping, now: OffsetDateTime) -> Notification {
        let new_fingerprints: Vec<String> = self
            .fingerprints
            .iter()
            .filter(|f| !f.notified)
            .map(|f| f.fingerprint.clone())
            .collect();
        let escalated_now = self.escalation_pending();
        let is_repeat = self.last_sent.is_some()
            && !self.has_new_cause()
            && !escalated_now
            && !self.has_grown(grouping);
        self.sends += 1;
        let notification = Notification {
            group_key: self.group_key.clone(),
            sequence: self.sends,
            count: self.count,
            previous_count: self.last_sent.map(|_| self.count_at_last_send),
            new_count: self.count - self.count_at_last_send,
            new_fingerprints,
            fingerprints: self.fingerprints.clone(),
            // The next notification shows the examples that arrive after this one.
            examples: std::mem::take(&mut self.examples),
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            is_repeat,
            escalation: self.escalation.clone(),
            escalated_now,
        };
        if let Some(escalation) = &mut self.escalation {
            escalation.announced = true;
        }
        for f in &mut self.fingerprints {
            f.notified = true;
        }
        self.overflow_unnotified = false;
        self.last_sent = Some(now);
        self.count_at_last_send = self.count;
        self.flush_at = None;
        notification
    }
}

/// Folds one alert into its group's state (`None` for a group not seen before, or one stored in
/// another version) and decides whether to notify now, later, or not at all. Returns the new
/// state to store; when the decision is [`Decision::SendNow`] the state already counts the
/// notification as sent.
pub fn decide(
    state: Option<&GroupState>,
    facts: &AlertFacts,
    grouping: &Grouping,
    now: OffsetDateTime,
) -> (Decision, GroupState) {
    let mut state = match state {
        Some(s) => s.clone(),
        None => GroupState::new(&facts.group_key, now),
    };
    let decision = decide_in_place(&mut state, facts, grouping, now);
    (decision, state)
}

/// [`decide`] on a state held by the caller, changed in place: folding a batch of alerts into
/// one group costs no copy of the state (its recent occurrences) per alert. A state of another
/// version or group is replaced by a new one, as [`decide`] does.
pub fn decide_in_place(
    state: &mut GroupState,
    facts: &AlertFacts,
    grouping: &Grouping,
    now: OffsetDateTime,
) -> Decision {
    if state.version != GROUP_STATE_VERSION || state.group_key != facts.group_key {
        *state = GroupState::new(&facts.group_key, now);
    }
    // The state this group was about ended (a node recovered, a pool reached its target): a
    // failure now is a new incident, though its occurrence (the same node, the same class) may
    // be one the group remembers, so the remembered occurrences go with the old episode.
    if state.resolved {
        let sends = state.sends;
        *state = GroupState::new(&facts.group_key, now);
        state.sends = sends;
    }
    if state.recent.contains(&facts.occurrence) {
        return match state.flush_at {
            Some(until) => Decision::Wait { until },
            None => Decision::Suppress,
        };
    }
    // A group that was notified and then stayed quiet for a whole repeat_interval starts a new
    // episode, so a job failing again tomorrow batches its first failures for group_wait again.
    if let Some(sent) = state.last_sent {
        let quiet = state.count == state.count_at_last_send && !state.has_new_cause();
        if quiet && now >= sent + grouping.repeat_interval {
            let sends = state.sends;
            let recent = std::mem::take(&mut state.recent);
            *state = GroupState::new(&facts.group_key, now);
            state.sends = sends;
            state.recent = recent;
        }
    }
    state.absorb(facts, now);
    state.check_escalation(grouping, now);
    state.schedule(grouping, now)
}

/// The timer sweep's check of a stored group: sends what is due, else says when it will be.
pub fn tick(
    state: &GroupState,
    grouping: &Grouping,
    now: OffsetDateTime,
) -> (Decision, GroupState) {
    let mut state = state.clone();
    let decision = state.schedule(grouping, now);
    (decision, state)
}

/// RFC 3339 timestamps in stored JSON (the `time` crate's serde support is not enabled
/// workspace-wide).
pub(super) mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    pub(in crate::policy) fn serialize<S: Serializer>(
        t: &OffsetDateTime,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let text = t.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub(in crate::policy) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(d)?;
        OffsetDateTime::parse(&text, &Rfc3339).map_err(serde::de::Error::custom)
    }

    pub(super) mod option {
        use super::*;

        pub(in super::super) fn serialize<S: Serializer>(
            t: &Option<OffsetDateTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub(in super::super) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<OffsetDateTime>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|text| {
                    OffsetDateTime::parse(&text, &Rfc3339).map_err(serde::de::Error::custom)
                })
                .transpose()
        }
    }
}
