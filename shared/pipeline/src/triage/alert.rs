//! Alerting: the alerts of subjects worked together are folded into their groups at once, then
//! delivered (or kept in the outbox); the timer sends the groups that have waited.

use batch_client::Deadline;
use diagnosis::Diagnosis;
use diagnosis::policy::{Plan, PlanContext, plan};
use notify::{Alert, AlertState, Group, Links, Receiver};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Outcome, SubjectReport, Triage};
use crate::grouping::{AlertInput, AlertToSend};

/// An alert a subject asks for. It is folded into its group together with the alerts of the
/// other subjects of the same payload or sweep page ([`Triage::alert`]), so a burst of failures
/// costs one group write per group, not one per failure.
pub(crate) struct PendingAlert {
    pub(super) diagnosis: Diagnosis,
    pub(super) plan: Plan,
    pub(super) tail: Option<String>,
    pub(super) links: Vec<String>,
    /// The subject's incident (a node's), so it counts anew when it fails again.
    pub(super) incident: Option<String>,
}

/// A subject worked on: its report, and its alert still to group and deliver.
pub(crate) struct Worked {
    pub(crate) report: SubjectReport,
    pub(super) alert: Option<PendingAlert>,
    /// The groups a pool's or node's failure falls in now, for every receiver a rule routes
    /// it to, silenced or not: how the pool sweep tells a group that still fails from one that
    /// ended (`resolve_pools.rs`). Empty for other subjects.
    pub(crate) firing: Vec<String>,
}

impl From<SubjectReport> for Worked {
    fn from(report: SubjectReport) -> Self {
        Worked {
            report,
            alert: None,
            firing: Vec::new(),
        }
    }
}

impl Triage {
    /// Sends the alerts whose group has waited long enough (`group_wait`): the timer's job.
    pub async fn flush_due(
        &self,
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> Result<Vec<String>, crate::grouping::GroupError> {
        let due = self.groups.due(now).await?;
        let mut report = SubjectReport::new("due alerts".to_owned());
        // A silence added while the group waited mutes it too (as Alertmanager checks silences
        // when it notifies, not only when an alert arrives).
        let policy = self.planning_policy(now).await;
        for alert in due {
            let muted_by = plan(&alert.example, &policy, now, &PlanContext::default()).silence_id;
            if let Some(silence) = muted_by {
                let subject = alert
                    .notification
                    .examples
                    .first()
                    .map(subject_label)
                    .unwrap_or_else(|| alert.notification.group_key.clone());
                if let Err(error) = self
                    .silences
                    .store()
                    .record_muted(
                        &silence,
                        &subject,
                        &alert.example,
                        vec![alert.receiver.clone()],
                        now,
                    )
                    .await
                {
                    tracing::warn!(silence = %silence, error = %error, "muted alert not counted");
                }
                continue;
            }
            self.deliver(&alert, None, &[], &mut report, now, deadline)
                .await;
        }
        Ok(report.notified)
    }

    /// Retries the alerts whose delivery failed earlier (kept in the outbox): the timer's job too.
    pub async fn drain_outbox(
        &self,
        deadline: Deadline,
    ) -> Result<notify::DrainReport, notify::NotifyError> {
        let receivers: Vec<Receiver> = self.receivers.values().cloned().collect();
        self.outbox.drain(&self.egress, &receivers, deadline).await
    }

    /// Groups the alerts of subjects worked together (one compare-and-swap per group) and
    /// delivers what is due now, each with its own subject's tail and links. A group that cannot
    /// be written fails (retryably) the subjects whose alerts it holds.
    pub(crate) async fn alert(
        &self,
        worked: Vec<Worked>,
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> Vec<SubjectReport> {
        let (mut reports, alerts): (Vec<SubjectReport>, Vec<Option<PendingAlert>>) =
            worked.into_iter().map(|w| (w.report, w.alert)).unzip();
        // (report index, alert) for the subjects that have one.
        let pending: Vec<(usize, &PendingAlert)> = alerts
            .iter()
            .enumerate()
            .filter_map(|(i, alert)| alert.as_ref().map(|alert| (i, alert)))
            .collect();
        if pending.is_empty() {
            return reports;
        }
        let batch: Vec<(&Diagnosis, &Plan)> = pending
            .iter()
            .map(|(_, alert)| (&alert.diagnosis, &alert.plan))
            .collect();
        let job_tasks = self.job_tasks_for_escalation(&batch, deadline).await;
        let inputs: Vec<AlertInput<'_>> = pending
            .iter()
            .map(|(_, alert)| AlertInput {
                diagnosis: &alert.diagnosis,
                plan: &alert.plan,
                incident: alert.incident.as_deref(),
            })
            .collect();
        let recorded = self
            .groups
            .record_batch_knowing(&inputs, &job_tasks, now)
            .await;
        for (k, outcome) in recorded.outcomes.iter().enumerate() {
            let (i, alert) = pending[k];
            let report = &mut reports[i];
            report.waiting += outcome.waiting.len();
            for to_send in &outcome.send {
                self.deliver(
                    to_send,
                    alert.tail.as_deref(),
                    &alert.links,
                    report,
                    now,
                    deadline,
                )
                .await;
            }
        }
        for (failed, error) in &recorded.failed {
            for &k in failed {
                reports[pending[k].0].outcome = Outcome::Failed {
                    reason: format!("alert grouping: {error}"),
                    retryable: true,
                };
            }
        }
        reports
    }

    async fn deliver(
        &self,
        to_send: &AlertToSend,
        tail: Option<&str>,
        links: &[String],
        report: &mut SubjectReport,
        now: OffsetDateTime,
        deadline: Deadline,
    ) {
        let alert = alert_of(to_send, tail, links);
        self.send_or_keep(&to_send.receiver, &alert, report, deadline)
            .await;
        if to_send.notification.escalated_now {
            self.route_escalation(to_send, &alert, tail, report, now, deadline)
                .await;
        }
    }

    /// Sends `alert` to the receiver called `name`, or keeps it in the outbox when delivery
    /// fails.
    pub(super) async fn send_or_keep(
        &self,
        name: &str,
        alert: &Alert,
        report: &mut SubjectReport,
        deadline: Deadline,
    ) {
        let Some(receiver) = self.receivers.get(name) else {
            tracing::warn!(receiver = %name, "alert for a receiver that is not configured; not sent");
            return;
        };
        match notify::send(&self.egress, receiver, alert, deadline).await {
            Ok(_) => report.notified.push(name.to_owned()),
            Err(error) => {
                // Kept, never dropped: the outbox is drained by the sweep.
                tracing::warn!(receiver = %name, error = %error, "alert delivery failed; kept in the outbox");
                match self.outbox.put(name, alert, &error).await {
                    Ok(_) => report.outboxed.push(name.to_owned()),
                    Err(store_error) => {
                        report.outcome = Outcome::Failed {
                            reason: format!(
                                "alert to {name} failed and could not be kept: {store_error}"
                            ),
                            retryable: true,
                        };
                    }
                }
            }
        }
    }
}

/// The message of a group's notification: its example diagnosis (at the escalated severity
/// once the group escalated), the count and the one the previous message gave when it grew, the
/// first and latest failures, and fresh examples.
fn alert_of(to_send: &AlertToSend, tail: Option<&str>, links: &[String]) -> Alert {
    let n = &to_send.notification;
    let mut diagnosis = to_send.example.clone();
    if let Some(escalation) = &n.escalation {
        diagnosis.severity = diagnosis.severity.max(escalation.severity);
    }
    // Whole seconds: a person reads these.
    let rfc3339 = |t: OffsetDateTime| t.replace_nanosecond(0).ok()?.format(&Rfc3339).ok();
    Alert {
        diagnosis,
        group: Group {
            key: n.group_key.clone(),
            count: n.count,
            examples: n.examples.iter().map(subject_label).collect(),
            previous_count: n.previous_count.filter(|&was| was < n.count),
            first_seen: rfc3339(n.first_seen),
            last_seen: rfc3339(n.last_seen),
            escalation: n.escalation.as_ref().map(|e| e.reason.clone()),
        },
        stderr_tail: tail.map(str::to_owned),
        links: Links::new(links.iter().map(String::as_str), None),
        rule: Some(to_send.rule.clone()),
        state: if n.is_repeat {
            AlertState::Repeat
        } else {
            AlertState::Firing
        },
        sequence: u32::try_from(n.sequence.saturating_sub(1)).unwrap_or(u32::MAX),
    }
}

pub(super) fn subject_label(subject: &diagnosis::Subject) -> String {
    [
        subject.job_id.as_deref(),
        subject.task_id.as_deref(),
        subject.node_id.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join("/")
}

impl Triage {
    /// One alert to every receiver the policy routes `diagnosis` to, sent now, not grouped: for
    /// what is said once, ever (a refused subject, a delivery declared poison), guarded by the
    /// caller's create-only marker. A failed delivery goes to the outbox like any other alert.
    /// `example` names the subject in the alert. Returns the receivers notified and outboxed.
    pub(crate) async fn alert_now(
        &self,
        diagnosis: &Diagnosis,
        example: &str,
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> (Vec<String>, Vec<String>) {
        let diagnosis = self.redacted(diagnosis.clone());
        let policy = self.planning_policy(now).await;
        let planned = plan(&diagnosis, &policy, now, &PlanContext::default());
        // Said once, so recorded once: the report shows it like any other failure.
        self.record_for_report(
            &mut SubjectReport::new(example.to_owned()),
            &diagnosis,
            &planned,
            now,
        )
        .await;
        let (mut notified, mut outboxed) = (Vec::new(), Vec::new());
        for to in &planned.receivers {
            let Some(receiver) = self.receivers.get(&to.receiver) else {
                continue;
            };
            let alert = Alert {
                diagnosis: diagnosis.clone(),
                group: Group {
                    key: to.group_key.clone(),
                    count: 1,
                    examples: vec![example.to_owned()],
                    ..Group::default()
                },
                stderr_tail: None,
                links: Links::new(std::iter::empty::<&str>(), None),
                rule: Some(to.rule.clone()),
                state: AlertState::Firing,
                sequence: 0,
            };
            match notify::send(&self.egress, receiver, &alert, deadline).await {
                Ok(_) => notified.push(to.receiver.clone()),
                Err(error) => match self.outbox.put(&to.receiver, &alert, &error).await {
                    Ok(_) => outboxed.push(to.receiver.clone()),
                    Err(store_error) => {
                        // The caller's marker stands, so this alert is lost: say so loudly; a
                        // retry would not send it either.
                        tracing::error!(receiver = %to.receiver, error = %store_error, "a once-only alert failed and could not be kept");
                    }
                },
            }
        }
        (notified, outboxed)
    }
}

impl Triage {
    /// What the report reads about a failed subject, whatever its kind: the silence that muted
    /// its alert (counted), and its record in the failure index. Neither is worth failing the
    /// subject over: a lost count or record is logged.
    pub(super) async fn record_for_report(
        &self,
        report: &mut SubjectReport,
        diagnosis: &Diagnosis,
        plan: &Plan,
        now: OffsetDateTime,
    ) {
        if let Some(silence) = &plan.silence_id {
            report.muted_by = Some(silence.clone());
            let receivers = plan
                .silenced_receivers
                .iter()
                .map(|r| r.receiver.clone())
                .collect();
            // Counting is not worth failing the subject over: a lost count is logged.
            if let Err(error) = self
                .silences
                .store()
                .record_muted(silence, &report.subject, diagnosis, receivers, now)
                .await
            {
                tracing::warn!(silence = %silence, error = %error, "muted alert not counted");
            }
        }
        if diagnosis.class.is_failure() {
            let record = crate::history::FailureRecord {
                time: crate::history::rfc3339(now),
                subject: report.subject.clone(),
                preserved: report.preserved.clone(),
                muted_by: report.muted_by.clone(),
                action: report.action.clone(),
                diagnosis: diagnosis.clone(),
            };
            // The index serves the report only: a lost record is logged, never a retry.
            if let Err(error) = crate::history::record_failure(&self.store, &record, now).await {
                tracing::warn!(subject = %report.subject, error = %error, "failure not indexed for the report");
            }
        }
    }
}
