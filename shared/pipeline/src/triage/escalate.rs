//! Escalation in the pipeline: the job task counts a rule's `escalate.min_job_percent` needs,
//! read once per job and alert batch, and routing an escalated group's message to the receivers
//! its raised severity adds (a page after a chat message), once per group episode.

use std::collections::HashMap;

use artifact_store::{Condition, ObjectKey, StoreError};
use batch_client::Deadline;
use bytes::Bytes;
use diagnosis::Diagnosis;
use diagnosis::policy::{Plan, PlanContext, plan};
use notify::{Alert, AlertState};
use time::OffsetDateTime;

use super::{Outcome, SubjectReport, Triage};
use crate::digest;
use crate::grouping::AlertToSend;

impl Triage {
    /// The number of tasks (active + running + completed) of each job whose alerts go to a rule
    /// that escalates on a share of the job. One Get Job Task Counts per job; a job whose counts
    /// cannot be read is left out (its share is unknown, so it does not escalate on it).
    pub(super) async fn job_tasks_for_escalation(
        &self,
        alerts: &[(&Diagnosis, &Plan)],
        deadline: Deadline,
    ) -> HashMap<String, u64> {
        let mut job_tasks = HashMap::new();
        for (diagnosis, plan) in alerts {
            let wants_share = plan.receivers.iter().any(|r| {
                (r.grouping.escalate.as_ref()).is_some_and(|e| e.min_job_percent.is_some())
            });
            let (Some(job_id), Some(key)) = (
                diagnosis.subject.job_id.as_ref(),
                crate::grouping::job_tasks_key(diagnosis),
            ) else {
                continue;
            };
            if !wants_share || job_tasks.contains_key(&key) {
                continue;
            }
            // The job is read from its own account (the alerts of several accounts are grouped
            // together by the first account's pipeline).
            let account = (diagnosis.subject.account.as_deref())
                .and_then(|name| self.account(name))
                .unwrap_or(self);
            match account.batch.get_task_counts(job_id, deadline).await {
                Ok(result) => {
                    let c = &result.task_counts;
                    let total = [c.active, c.running, c.completed]
                        .into_iter()
                        .map(|n| u64::try_from(n).unwrap_or(0))
                        .sum::<u64>();
                    job_tasks.insert(key, total);
                }
                Err(error) => {
                    tracing::warn!(job = %job_id, error = %error, "task counts unread; escalation by share waits");
                }
            }
        }
        job_tasks
    }

    /// Sends an escalated group's message to the receivers that its raised severity routes to
    /// and its own severity did not (rules matching `severity = "critical"`, say). Each such
    /// receiver's group is claimed with a create-only marker per episode, so two instances, or
    /// two receivers of the escalating rule escalating together, page once.
    pub(super) async fn route_escalation(
        &self,
        to_send: &AlertToSend,
        alert: &Alert,
        tail: Option<&str>,
        report: &mut SubjectReport,
        now: OffsetDateTime,
        deadline: Deadline,
    ) {
        let ctx = PlanContext {
            stderr_tail: tail,
            ..PlanContext::default()
        };
        let before = plan(&to_send.example, &self.policy, now, &ctx);
        let after = plan(&alert.diagnosis, &self.policy, now, &ctx);
        let episode = to_send.notification.first_seen.unix_timestamp();
        let added = after.receivers.iter().filter(|target| {
            target.receiver != to_send.receiver
                && !before
                    .receivers
                    .iter()
                    .any(|b| b.group_key == target.group_key)
        });
        for target in added {
            let marker = format!("escalated/{}-{episode}", digest(&target.group_key));
            match self.claim(&marker, &to_send.notification.group_key).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    report.outcome = Outcome::Failed {
                        reason: format!("escalation to {}: {error}", target.receiver),
                        retryable: true,
                    };
                    continue;
                }
            }
            let mut routed = alert.clone();
            routed.group.key.clone_from(&target.group_key);
            routed.rule = Some(target.rule.clone());
            routed.state = AlertState::Firing;
            routed.sequence = 0;
            self.send_or_keep(&target.receiver, &routed, report, deadline)
                .await;
        }
    }

    /// Creates `key` if absent: `true` when this instance claimed it.
    async fn claim(&self, key: &str, group_key: &str) -> Result<bool, StoreError> {
        let key = ObjectKey::new(key.to_owned())?;
        let body = serde_json::json!({ "escalatedGroup": group_key }).to_string();
        match self
            .store
            .put(&key, Bytes::from(body), Condition::IfAbsent)
            .await
        {
            Ok(_) => Ok(true),
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }
}
