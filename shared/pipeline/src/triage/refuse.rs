//! Subjects whose ids can never be read from Batch (`.`, `..`, an empty id, an id longer than
//! the client sends, see [`batch_client::id_problem`]): their task, files and logs can never be
//! fetched, so running the payload again can never succeed. (Any id can be *stored*: preserve
//! turns it into a safe key segment, cut and hashed when needed.) They are refused once: decided
//! up front, before anything is fetched, with one audit record and one alert saying why, guarded
//! by a create-only marker so a redelivery or a second run neither alerts again nor asks for a
//! retry. The other subjects of the payload go on normally.

use artifact_store::{Condition, ObjectKey, StoreError};
use batch_client::{Deadline, id_problem};
use bytes::Bytes;
use diagnosis::{Diagnosis, FailureClass, Subject};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::targets::Target;
use super::{Outcome, SubjectReport, Triage, Worked};
use crate::audit::{AuditDecision, AuditLog, AuditRecord};

/// Where the markers of refused subjects are kept: `refused/{sha256 of the subject}.json`.
const MARKERS: &str = "refused";

/// The longest part of an id shown in a report, an audit record or an alert.
const SHOWN_CHARS: usize = 40;

/// The ids of a subject, named: the account (configured, so never checked) and the ids that go
/// into the Batch URLs its task, node and files are read from.
pub(crate) struct StoredIds<'a> {
    kind: Kind,
    ids: Vec<(&'static str, &'a str)>,
}

#[derive(Clone, Copy)]
enum Kind {
    Task,
    Job,
    PrepRelease,
    StartTask,
}

impl<'a> StoredIds<'a> {
    /// The ids of `target` under `account`: account, job and task; account and job (a job's
    /// prep/release nodes are checked when listed); or account, pool and node for a start task.
    pub(super) fn of_target(account: &'a str, target: &'a Target) -> Self {
        match target {
            Target::Task { job, task } => Self::task(account, job, task),
            Target::Job { job } => Self::job(account, job),
            Target::StartTask { pool, node, .. } => StoredIds {
                kind: Kind::StartTask,
                ids: vec![("account", account), ("pool id", pool), ("node id", node)],
            },
        }
    }

    /// The ids of a job.
    pub(crate) fn job(account: &'a str, job: &'a str) -> Self {
        StoredIds {
            kind: Kind::Job,
            ids: vec![("account", account), ("job id", job)],
        }
    }

    /// The ids of a job's prep/release task on one node (its folders are per node).
    pub(super) fn prep_release(account: &'a str, job: &'a str, node: &'a str) -> Self {
        StoredIds {
            kind: Kind::PrepRelease,
            ids: vec![("account", account), ("job id", job), ("node id", node)],
        }
    }

    /// The ids of a task.
    pub(crate) fn task(account: &'a str, job: &'a str, task: &'a str) -> Self {
        StoredIds {
            kind: Kind::Task,
            ids: vec![("account", account), ("job id", job), ("task id", task)],
        }
    }

    /// Why these ids can never be read from Batch, or `None` when they can. Pure: the rules are
    /// the client's own ([`id_problem`]).
    pub(crate) fn problem(&self) -> Option<String> {
        self.ids
            .iter()
            .filter(|(name, _)| *name != "account")
            .find_map(|(name, id)| {
                id_problem(id)
                    .map(|why| format!("{name} {} can never be read from Batch: {why}", shown(id)))
            })
    }

    /// The subject as shown in a report: every id inert and bounded.
    pub(super) fn label(&self) -> String {
        let ids: Vec<String> = self.ids.iter().map(|(_, id)| shown(id)).collect();
        match self.kind {
            Kind::StartTask => format!("{}/_pools/{}/{}/_starttask", ids[0], ids[1], ids[2]),
            Kind::PrepRelease => format!("{}/{}/_jobprep/{}", ids[0], ids[1], ids[2]),
            _ => ids.join("/"),
        }
    }

    /// The marker's key: a hash of the subject (its ids may be anything; a hash is always a key).
    fn marker(&self) -> Result<ObjectKey, StoreError> {
        let mut hash = Sha256::new();
        hash.update(match self.kind {
            Kind::Task => "task",
            Kind::Job => "job",
            Kind::PrepRelease => "preprelease",
            Kind::StartTask => "starttask",
        });
        for (_, id) in &self.ids {
            // Length-prefixed, so ("a", "bc") and ("ab", "c") differ.
            hash.update((id.len() as u64).to_le_bytes());
            hash.update(id.as_bytes());
        }
        ObjectKey::new(format!("{MARKERS}/{}.json", hex::encode(hash.finalize())))
    }

    fn id(&self, name: &str) -> Option<String> {
        self.ids
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, id)| shown(id))
    }
}

/// An untrusted id as it may be shown anywhere: quoted with its control characters, quotes and
/// backslashes escaped (so it is never markup, a path or a new log line), at most
/// [`SHOWN_CHARS`] characters, with the length of what was cut.
fn shown(id: &str) -> String {
    let escaped: String = id.escape_debug().take(SHOWN_CHARS).collect();
    if id.escape_debug().count() > SHOWN_CHARS {
        format!("\"{escaped}…\" ({} bytes)", id.len())
    } else {
        format!("\"{escaped}\"")
    }
}

impl Triage {
    /// Refuses a subject whose ids can never be read from Batch (`problem` says why): the first time, one
    /// audit record and one alert; every later time, nothing. Never asks for a retry unless the
    /// store itself failed before the refusal was recorded.
    ///
    /// `seen` is the diagnosis of what Batch already said about the subject (a task the sweep
    /// listed), when there is one: the failure is real and is shown; only its logs cannot be kept.
    pub(crate) async fn refuse_unstorable(
        &self,
        ids: &StoredIds<'_>,
        problem: String,
        seen: Option<Diagnosis>,
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> Worked {
        let mut report = SubjectReport::new(ids.label());
        report.class = seen.as_ref().map(|d| d.class);
        let reason = format!("{problem}; its logs can never be preserved, so it is not retried");
        let failed = |what: &str, error: StoreError| Outcome::Failed {
            reason: format!("recording the refusal ({what}): {error}"),
            retryable: true,
        };
        let marker = match ids.marker() {
            Ok(marker) => marker,
            Err(error) => {
                report.outcome = failed("marker key", error);
                return report.into();
            }
        };
        let body = serde_json::json!({
            "subject": ids.label(),
            "reason": reason,
            "time": AuditLog::timestamp(now),
        });
        // The marker is claimed first and create-only: of two deliveries at once, one alerts.
        match self
            .store
            .put(&marker, Bytes::from(body.to_string()), Condition::IfAbsent)
            .await
        {
            Ok(_) => {}
            Err(StoreError::ConditionFailed { .. }) => {
                report.outcome = Outcome::Refused(format!("{reason} (already reported)"));
                return report.into();
            }
            Err(error) => {
                report.outcome = failed("marker", error);
                return report.into();
            }
        }
        if let Err(error) = self.audit_refusal(ids, &reason, now).await {
            // Without its audit record the refusal is not done: give the claim back so the
            // retry records it (a failed delete leaves the refusal unaudited, which is logged).
            if let Err(undo) = self.store.delete(&marker, Condition::Always).await {
                tracing::warn!(error = %undo, "refusal marker kept although its audit record failed");
            }
            report.outcome = failed("audit record", error);
            return report.into();
        }
        self.alert_refusal(ids, &reason, seen, &mut report, now, deadline)
            .await;
        if report.outcome == Outcome::Done {
            report.outcome = Outcome::Refused(reason);
        }
        report.into()
    }

    async fn audit_refusal(
        &self,
        ids: &StoredIds<'_>,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<ObjectKey, StoreError> {
        let record = AuditRecord {
            id: AuditLog::new_id(now),
            time: AuditLog::timestamp(now),
            rule: String::new(),
            account: self.config.account.clone(),
            job_id: ids.id("job id").unwrap_or_default(),
            action: "preserve".to_owned(),
            disable_tasks: None,
            decision: AuditDecision::Refused,
            reason: format!("{}: {reason}", ids.label()),
            action_reason: String::new(),
            terminate_reason: None,
            etag: None,
            outcome: None,
            threshold: String::new(),
            dry_run: false,
        };
        AuditLog::new(self.store.clone()).write(now, &record).await
    }

    /// One alert to every receiver the policy routes the subject's kind of failure to, sent now
    /// (not grouped: it is sent once, ever, and says something no other alert says). A failed
    /// delivery goes to the outbox like any other alert.
    async fn alert_refusal(
        &self,
        ids: &StoredIds<'_>,
        reason: &str,
        seen: Option<Diagnosis>,
        report: &mut SubjectReport,
        now: OffsetDateTime,
        deadline: Deadline,
    ) {
        let subject = Subject {
            account: Some(self.config.account.clone()),
            job_id: ids.id("job id"),
            task_id: ids.id("task id"),
            attempt: None,
            pool_id: ids.id("pool id"),
            node_id: ids.id("node id"),
        };
        let hint = "Look at it in Batch directly (portal or CLI); give tasks and jobs ids of \
                    letters, digits, '-' and '_' (at most 64 characters, as Batch itself allows)."
            .to_owned();
        let diagnosis = match seen {
            // What Batch said is shown; the ids are the inert forms, and the note says why
            // nothing was kept.
            Some(seen) => Diagnosis {
                subject: Subject {
                    attempt: seen.subject.attempt,
                    ..subject
                },
                summary: format!("Refused: its logs could not be kept. {}", seen.summary),
                cause: format!("{} {reason}.", seen.cause),
                hints: seen.hints.into_iter().chain([hint]).collect(),
                fingerprint: format!("refused-{}", seen.fingerprint),
                ..seen
            },
            // Nothing was read, so the class is the kind's "unknown" failure; what is known is
            // that its logs cannot be kept.
            None => {
                let class = match ids.kind {
                    Kind::Task => FailureClass::TaskUnknown,
                    Kind::Job => FailureClass::JobUnknown,
                    Kind::PrepRelease => FailureClass::JobPrepFailed,
                    Kind::StartTask => FailureClass::NodeStartTaskFailed,
                };
                Diagnosis {
                    subject,
                    class,
                    severity: class.severity(),
                    summary: "Refused: its logs could not be kept".to_owned(),
                    cause: format!(
                        "{reason}. batch-triage did not read it from Batch and will not try again."
                    ),
                    hints: vec![hint],
                    exit_code: None,
                    exit_code_hex: None,
                    exit_meaning: None,
                    failure: None,
                    impact: None,
                    logs: Vec::new(),
                    fingerprint: format!("refused-{}", class.as_str()),
                }
            }
        };
        let (notified, outboxed) = self
            .alert_now(&diagnosis, &report.subject, now, deadline)
            .await;
        report.notified.extend(notified);
        report.outboxed.extend(outboxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_shown_escaped_and_bounded() {
        assert_eq!(shown(".."), "\"..\"");
        assert_eq!(shown("a\nb\u{1b}[31m"), "\"a\\nb\\u{1b}[31m\"");
        let long = shown(&"é".repeat(300));
        assert!(long.ends_with("…\" (600 bytes)"), "{long}");
        assert_eq!(long.chars().filter(|c| *c == 'é').count(), SHOWN_CHARS);
    }

    #[test]
    fn the_first_id_that_cannot_be_stored_is_named() {
        let fine = StoredIds::task("devbatch1", "etl", "oom");
        assert_eq!(fine.problem(), None);
        // Long ids are stored cut and hashed; only what the client will not send is refused.
        let long = "x".repeat(300);
        assert_eq!(StoredIds::task("devbatch1", "etl", &long).problem(), None);
        let longer = "x".repeat(4097);
        assert!(
            StoredIds::task("devbatch1", "etl", &longer)
                .problem()
                .is_some_and(|p| p.contains("(4097 bytes)") && p.contains("at most 4096"))
        );
        let bad = StoredIds::task("devbatch1", "etl", "..");
        assert_eq!(
            bad.problem().as_deref(),
            Some(
                "task id \"..\" can never be read from Batch: an id may not be `.` or `..` \
                 (a path would read it as a directory step)"
            )
        );
        let both = StoredIds::task("devbatch1", "", ".");
        assert!(both.problem().is_some_and(|p| p.starts_with("job id \"\"")));
        // One subject, one marker; different subjects, different markers (even when their ids
        // concatenate alike).
        let a = StoredIds::task("devbatch1", "ab", "..").marker().unwrap();
        let b = StoredIds::task("devbatch1", "a", "b..").marker().unwrap();
        assert_ne!(a, b);
        assert_eq!(
            a,
            StoredIds::task("devbatch1", "ab", "..").marker().unwrap()
        );
        assert_ne!(a, StoredIds::job("devbatch1", "ab").marker().unwrap());
    }
}
