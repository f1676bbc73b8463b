//! Resolved messages: the timer looks at every notified, unresolved group whose receiver has
//! `send_resolved = true`, asks Batch whether the failure state it was about has ended, and
//! sends that receiver one "resolved" message per group (a green Teams card, an email in the
//! group's thread, a PagerDuty `resolve`, a webhook with `status: "resolved"`, a Slack
//! message), claimed by compare-and-swap so two instances never both send it.
//!
//! Only states that can end are looked at ([`Resolvable`]). A task that failed stays failed: a
//! group of task failures ends only when its job completed with every task succeeded (the
//! failures were attempts that a retry or a rerun made good), never while a failed task stands.
//! Pools and nodes are told from the pool sweep of the same tick (`resolve_pools.rs`).

use batch_client::{BatchError, Deadline};
use diagnosis::wire::{JobState, TaskCounts};
use diagnosis::{Diagnosis, FailureClass};
use notify::{Alert, AlertState, Group, Links};
use time::OffsetDateTime;

use super::resolve_pools::PoolsSeen;
use super::{SubjectReport, Triage};
use crate::grouping::{GroupError, OpenGroup};

/// A failure state that can end, named by the group's example diagnosis.
///
/// A new kind is a variant here, a line in [`Resolvable::of`] and an arm in
/// `Triage::has_ended`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resolvable {
    /// `job.stuck`: over when the job runs a task again, has nothing left waiting, or is no
    /// longer active (completed, terminating, deleted).
    StuckJob {
        /// The job.
        job: String,
    },
    /// Failures of a job's tasks: over only when the job completed and Batch counts no failed
    /// task in it.
    JobTasks {
        /// The job.
        job: String,
    },
    /// `pool.resize_failed`, `pool.autoscale_failed`, `pool.delete_stuck`: over when the pool
    /// holds its target (and, for autoscale, evaluates again), or is gone
    /// ([`super::resolve_pools::pool_ended`]).
    Pool {
        /// The pool.
        pool: String,
        /// Which of the three.
        class: FailureClass,
    },
    /// `node.unusable`, `node.start_task_failed`: over when the node recovers or leaves the
    /// pool ([`super::resolve_pools::node_ended`]).
    Node {
        /// The node's pool.
        pool: String,
        /// The node.
        node: String,
        /// Which of the two.
        class: FailureClass,
    },
}

impl Resolvable {
    /// The ending to look for after `diagnosis`, or `None` for a state that never ends with a
    /// message (a job that ended badly, a failed preparation task: what happened stays so).
    pub fn of(diagnosis: &Diagnosis) -> Option<Self> {
        // An id Batch can never be asked about (its subject was refused) cannot be looked at.
        let askable = |id: &Option<String>| {
            id.clone()
                .filter(|id| batch_client::id_problem(id).is_none())
        };
        let subject = &diagnosis.subject;
        match diagnosis.class {
            FailureClass::JobStuck => Some(Self::StuckJob {
                job: askable(&subject.job_id)?,
            }),
            class @ (FailureClass::PoolResizeFailed
            | FailureClass::PoolAutoScaleFailed
            | FailureClass::PoolDeleteStuck) => Some(Self::Pool {
                pool: askable(&subject.pool_id)?,
                class,
            }),
            class @ (FailureClass::NodeUnusable | FailureClass::NodeStartTaskFailed) => {
                Some(Self::Node {
                    pool: askable(&subject.pool_id)?,
                    node: askable(&subject.node_id)?,
                    class,
                })
            }
            class if subject.task_id.is_some() && class.as_str().starts_with("task.") => {
                Some(Self::JobTasks {
                    job: askable(&subject.job_id)?,
                })
            }
            _ => None,
        }
    }
}

/// Why a stuck job is no longer stuck, from its state and counts; `None` while it still is.
pub fn stuck_job_ended(state: Option<&JobState>, counts: Option<&TaskCounts>) -> Option<String> {
    match state {
        Some(JobState::Active) => match counts {
            Some(c) if c.running > 0 => Some("the job is running tasks again".to_owned()),
            Some(c) if c.active == 0 => Some("no task of the job is waiting any more".to_owned()),
            _ => None,
        },
        Some(state @ (JobState::Completed | JobState::Terminating | JobState::Deleting)) => {
            Some(format!("the job is {}", state.as_str()))
        }
        _ => None,
    }
}

/// Why a job's task failures are over: the job completed with no failed task. `None` while a
/// failed task stands or the job runs.
pub fn job_tasks_ended(state: Option<&JobState>, counts: Option<&TaskCounts>) -> Option<String> {
    match (state, counts) {
        (Some(JobState::Completed), Some(c)) if c.failed == 0 => Some(format!(
            "the job completed and all its {} tasks succeeded",
            c.succeeded
        )),
        _ => None,
    }
}

impl Triage {
    /// Sends the resolved messages that are due for jobs: one per notified group whose failure
    /// state ended, to receivers with `send_resolved`, each asked of the group's own account.
    /// Returns the receivers told. Groups of an account not configured, of a state that never
    /// ends, or still failing are left as they are; a Batch error leaves a group for the next
    /// tick. Pool and node groups need the pool
    /// sweep's sight: see [`Triage::resolve_groups_after`].
    pub async fn resolve_groups(
        &self,
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> Result<Vec<String>, GroupError> {
        self.resolve_groups_after(now, deadline, None).await
    }

    /// [`Triage::resolve_groups`], and the pool and node groups too when `pools` holds what a
    /// complete pool sweep just saw (the tick passes its own); without it they are left as
    /// they are.
    pub async fn resolve_groups_after(
        &self,
        now: OffsetDateTime,
        deadline: Deadline,
        pools: Option<&PoolsSeen>,
    ) -> Result<Vec<String>, GroupError> {
        let wanted = |name: &str| self.receivers.get(name).is_some_and(|r| r.send_resolved);
        if !self.receivers.values().any(|r| r.send_resolved) {
            return Ok(Vec::new());
        }
        let open = self.groups.open_groups(wanted).await?;
        let mut report = SubjectReport::new("resolved alerts".to_owned());
        // One read of each job (and its counts), or node, however many groups name it.
        let mut jobs: std::collections::HashMap<String, Option<String>> = Default::default();
        for group in open {
            if deadline.remaining() < std::time::Duration::from_secs(5) {
                break;
            }
            // Asked of the group's own account (a subject naming none belongs to the first);
            // a group of an account this deployment does not watch is left alone.
            let owner = match group.example.subject.account.as_deref() {
                Some(account) => match self.account(account) {
                    Some(owner) => owner,
                    None => continue,
                },
                None => self,
            };
            let Some(resolvable) = Resolvable::of(&group.example) else {
                continue;
            };
            // A pool or node group is judged only after a complete pool sweep, and not while
            // a pool or node in trouble still falls in it.
            if resolvable.needs_pool_sweep()
                && pools.is_none_or(|seen| seen.is_failing(&group.group_key))
            {
                continue;
            }
            let key = format!("{}/{resolvable:?}", owner.account_name());
            let ended = match jobs.get(&key) {
                Some(ended) => ended.clone(),
                None => match owner.has_ended(&resolvable, pools, deadline).await {
                    Ok(ended) => {
                        jobs.insert(key, ended.clone());
                        ended
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "could not tell whether a group resolved; left for the next tick");
                        continue;
                    }
                },
            };
            let Some(reason) = ended else {
                continue;
            };
            if !self.groups.claim_resolved(&group, now).await? {
                continue;
            }
            let alert = resolved_alert(&group, &reason);
            self.send_or_keep(&group.receiver, &alert, &mut report, deadline)
                .await;
        }
        Ok(report.notified)
    }

    /// Whether the state has ended, and why; `None` while it lasts.
    async fn has_ended(
        &self,
        resolvable: &Resolvable,
        pools: Option<&PoolsSeen>,
        deadline: Deadline,
    ) -> Result<Option<String>, BatchError> {
        let (Resolvable::StuckJob { job } | Resolvable::JobTasks { job }) = resolvable else {
            return match pools {
                Some(seen) => self.pool_or_node_ended(resolvable, seen, deadline).await,
                None => Ok(None),
            };
        };
        let found = match self
            .batch
            .get_job(job, &batch_client::GetOptions::default(), deadline)
            .await
        {
            Ok(found) => Some(found),
            Err(error) if error.is_not_found() => None,
            Err(error) => return Err(error),
        };
        let Some(found) = found else {
            // A deleted job cannot be stuck; whether its tasks succeeded can no longer be told.
            return Ok(match resolvable {
                Resolvable::StuckJob { .. } => Some("the job no longer exists".to_owned()),
                _ => None,
            });
        };
        let counts = self.batch.get_task_counts(job, deadline).await?.task_counts;
        Ok(match resolvable {
            Resolvable::StuckJob { .. } => stuck_job_ended(found.state.as_ref(), Some(&counts)),
            _ => job_tasks_ended(found.state.as_ref(), Some(&counts)),
        })
    }
}

/// The group's resolved message: its first diagnosis, the reason it is over in front of the
/// summary, the count it reached, and a sequence after every notice sent (so its id is new,
/// and an email threads under the first notice).
fn resolved_alert(group: &OpenGroup, reason: &str) -> Alert {
    let mut diagnosis = group.example.clone();
    diagnosis.summary = format!("Resolved: {reason}. It was: {}", diagnosis.summary);
    Alert {
        diagnosis,
        group: Group {
            key: group.group_key.clone(),
            count: group.count,
            examples: group
                .examples
                .iter()
                .map(super::alert::subject_label)
                .collect(),
            ..Group::default()
        },
        stderr_tail: None,
        links: Links::default(),
        rule: Some(group.rule.clone()),
        state: AlertState::Resolved,
        sequence: u32::try_from(group.sends).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(active: i32, running: i32, succeeded: i32, failed: i32) -> TaskCounts {
        TaskCounts {
            active,
            running,
            completed: succeeded + failed,
            succeeded,
            failed,
        }
    }

    #[test]
    fn only_states_that_can_end_are_looked_at() {
        let mut d = Diagnosis {
            subject: diagnosis::Subject {
                job_id: Some("etl".into()),
                task_id: Some("t1".into()),
                ..Default::default()
            },
            class: FailureClass::parse("task.exit_code").unwrap(),
            severity: diagnosis::Severity::Error,
            summary: String::new(),
            cause: String::new(),
            hints: vec![],
            exit_code: Some(1),
            exit_code_hex: None,
            exit_meaning: None,
            failure: None,
            impact: None,
            logs: vec![],
            fingerprint: "fp".into(),
        };
        assert_eq!(
            Resolvable::of(&d),
            Some(Resolvable::JobTasks { job: "etl".into() })
        );
        d.class = FailureClass::JobStuck;
        d.subject.task_id = None;
        assert_eq!(
            Resolvable::of(&d),
            Some(Resolvable::StuckJob { job: "etl".into() })
        );
        for class in ["job.timeout", "job.prep_failed", "job.terminated_by_task"] {
            d.class = FailureClass::parse(class).unwrap();
            assert_eq!(Resolvable::of(&d), None, "{class}");
        }
        d.class = FailureClass::JobStuck;
        d.subject.job_id = Some("..".into());
        assert_eq!(Resolvable::of(&d), None, "an id Batch is never asked about");

        // Pools and nodes, by the pool and node their diagnosis names.
        d.subject.job_id = None;
        d.subject.pool_id = Some("workers".into());
        for class in [
            FailureClass::PoolResizeFailed,
            FailureClass::PoolAutoScaleFailed,
            FailureClass::PoolDeleteStuck,
        ] {
            d.class = class;
            assert_eq!(
                Resolvable::of(&d),
                Some(Resolvable::Pool {
                    pool: "workers".into(),
                    class
                })
            );
        }
        d.subject.node_id = Some("tvm-1".into());
        for class in [
            FailureClass::NodeUnusable,
            FailureClass::NodeStartTaskFailed,
        ] {
            d.class = class;
            assert_eq!(
                Resolvable::of(&d),
                Some(Resolvable::Node {
                    pool: "workers".into(),
                    node: "tvm-1".into(),
                    class
                })
            );
        }
        d.subject.node_id = None;
        assert_eq!(
            Resolvable::of(&d),
            None,
            "a node diagnosis without its node"
        );
        d.subject.node_id = Some(String::new());
        assert_eq!(Resolvable::of(&d), None, "an empty node id");
        d.class = FailureClass::PoolResizeFailed;
        d.subject.pool_id = Some(".".into());
        assert_eq!(
            Resolvable::of(&d),
            None,
            "a pool id Batch is never asked about"
        );
    }

    #[test]
    fn a_stuck_job_ends_when_it_runs_empties_or_stops() {
        let active = Some(&JobState::Active);
        assert_eq!(stuck_job_ended(active, Some(&counts(5, 0, 0, 0))), None);
        assert!(stuck_job_ended(active, Some(&counts(5, 1, 0, 0))).is_some());
        assert!(stuck_job_ended(active, Some(&counts(0, 0, 3, 0))).is_some());
        assert_eq!(stuck_job_ended(active, None), None);
        assert_eq!(
            stuck_job_ended(Some(&JobState::Disabled), Some(&counts(5, 0, 0, 0))),
            None
        );
        assert!(stuck_job_ended(Some(&JobState::Completed), None).is_some());
    }

    #[test]
    fn task_failures_end_only_with_a_completed_job_and_no_failed_task() {
        let completed = Some(&JobState::Completed);
        assert!(job_tasks_ended(completed, Some(&counts(0, 0, 10, 0))).is_some());
        // A task that failed stays failed.
        assert_eq!(job_tasks_ended(completed, Some(&counts(0, 0, 9, 1))), None);
        assert_eq!(
            job_tasks_ended(Some(&JobState::Active), Some(&counts(0, 0, 10, 0))),
            None
        );
        assert_eq!(job_tasks_ended(completed, None), None);
    }
}
