//! The timer's sweep: the safety net for events that never arrived (diagnostic settings off, an
//! Event Hubs batch lost after its retries) and the only way to see a job that is stuck, since a
//! stuck job emits no event.
//!
//! Each run looks at failed tasks completed since a cursor (one filtered, `$select`ed list call
//! per job, never a GET per task), at every active job (prep/release failures, scheduling errors,
//! stuck), and at jobs ended since the cursor (`MaxWallClockTimeExpiry`, `TaskFailed`). The cursor
//! advances only when a run finishes within its deadline; a run that stops early is simply done
//! again, which is safe because every effect is idempotent. A lease keeps two overlapping runs
//! (two instances, or a long run and the next tick) from working at the same time.

use std::time::Duration;

use artifact_store::{Condition, ETag, ObjectKey, StoreError};
use batch_client::{BatchError, Deadline, ListOptions, items};
use diagnosis::wire::{BatchTask, JobState};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::triage::{JobCache, Outcome, StoredIds, SubjectReport, Triage, Worked, batch_failure};

/// The cursor: failures that ended before it were handled by an earlier run. Per account
/// ([`Triage::sweep_state_key`]).
const CURSOR_KEY: &str = "cursor.json";
/// Held while a run works.
const LEASE_KEY: &str = "lease.json";

/// How a sweep runs.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// How far back the first run (no cursor yet) looks.
    pub first_lookback: Duration,
    /// How long a lease lasts: a crashed run blocks others at most this long. Keep it above the
    /// function timeout.
    pub lease: Duration,
    /// A job active this long with tasks waiting and none running counts as stuck.
    pub stuck_after: Option<Duration>,
    /// The cursor is set this much before the run's start, so a failure Batch records late is
    /// not missed (it is seen twice instead, harmlessly).
    pub overlap: Duration,
    /// When set, this run looks back this far whatever the cursor says (an operator's
    /// `--since`). The cursor still advances when the run completes.
    pub look_back: Option<Duration>,
}

impl Default for SweepOptions {
    fn default() -> Self {
        Self {
            first_lookback: Duration::from_secs(3600),
            lease: Duration::from_secs(15 * 60),
            stuck_after: Some(Duration::from_secs(2 * 3600)),
            overlap: Duration::from_secs(120),
            look_back: None,
        }
    }
}

/// What a sweep did.
#[derive(Debug, Default)]
pub struct SweepReport {
    /// The cursor it started from (RFC 3339).
    pub since: String,
    /// Another run holds the lease: this one did nothing.
    pub skipped_busy: bool,
    /// Jobs looked at.
    pub jobs_examined: usize,
    /// In a deployment of several accounts, what each account's sweep did (the fields above
    /// add them up); empty for one account.
    pub accounts: Vec<crate::sweep_accounts::AccountSweep>,
    /// Subjects triaged (failed tasks, jobs, prep/release nodes).
    pub subjects: Vec<SubjectReport>,
    /// The run finished within its deadline and advanced the cursor.
    pub completed: bool,
}

/// Why a sweep could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The store failed (the lease or the cursor).
    #[error("artifact store: {0}")]
    Store(#[from] StoreError),
    /// Listing jobs failed.
    #[error("batch: {0}")]
    Batch(#[from] BatchError),
}

#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    since: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Lease {
    expires: String,
}

/// Failed tasks whose alerts are grouped together in a sweep: a list page's worth.
const ALERT_PAGE: usize = 256;

/// Time kept in hand for releasing the lease and writing the cursor.
const RESERVE: Duration = Duration::from_secs(5);

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

impl Triage {
    /// Runs one sweep at `now`, within `deadline`.
    pub async fn sweep(
        &self,
        now: OffsetDateTime,
        deadline: Deadline,
        options: &SweepOptions,
    ) -> Result<SweepReport, SweepError> {
        let store = self.store.as_ref();
        let lease_key = self.sweep_state_key(LEASE_KEY)?;
        let Some(lease_etag) = self.take_lease(&lease_key, now, options).await? else {
            return Ok(SweepReport {
                skipped_busy: true,
                ..SweepReport::default()
            });
        };
        let cursor_key = self.sweep_state_key(CURSOR_KEY)?;
        let stored = store.get(&cursor_key).await?;
        let cursor = stored
            .as_ref()
            .and_then(|v| serde_json::from_slice::<Cursor>(&v.bytes).ok())
            .and_then(|c| OffsetDateTime::parse(&c.since, &Rfc3339).ok());
        let since = match (options.look_back, cursor) {
            (Some(look_back), _) => now - look_back,
            (None, Some(cursor)) => cursor,
            (None, None) => now - options.first_lookback,
        };
        let mut report = SweepReport {
            since: rfc3339(since),
            ..SweepReport::default()
        };

        let result = self
            .sweep_jobs(since, now, deadline, options, &mut report)
            .await;
        if result.is_ok() && !deadline_near(deadline) {
            report.completed = true;
            let next = Cursor {
                since: rfc3339(now - options.overlap),
            };
            let body = bytes::Bytes::from(serde_json::to_vec(&next).unwrap_or_default());
            let condition = match &stored {
                Some(v) => Condition::IfMatch(v.etag.clone()),
                None => Condition::IfAbsent,
            };
            match store.put(&cursor_key, body, condition).await {
                // Someone moved the cursor meanwhile (a lease that expired under a slow run):
                // theirs stands; this run's effects were idempotent anyway.
                Ok(_) | Err(StoreError::ConditionFailed { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        let _ = store
            .delete(&lease_key, Condition::IfMatch(lease_etag))
            .await;
        result.map(|()| report)
    }

    /// Takes the lease: `None` when another run holds an unexpired one.
    async fn take_lease(
        &self,
        key: &ObjectKey,
        now: OffsetDateTime,
        options: &SweepOptions,
    ) -> Result<Option<ETag>, SweepError> {
        let store = self.store.as_ref();
        let lease = Lease {
            expires: rfc3339(now + options.lease),
        };
        let body = bytes::Bytes::from(serde_json::to_vec(&lease).unwrap_or_default());
        let condition = match store.get(key).await? {
            None => Condition::IfAbsent,
            Some(current) => {
                let expires = serde_json::from_slice::<Lease>(&current.bytes)
                    .ok()
                    .and_then(|l| OffsetDateTime::parse(&l.expires, &Rfc3339).ok());
                if expires.is_some_and(|e| e > now) {
                    return Ok(None);
                }
                Condition::IfMatch(current.etag)
            }
        };
        match store.put(key, body, condition).await {
            Ok(etag) => Ok(Some(etag)),
            Err(StoreError::ConditionFailed { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    async fn sweep_jobs(
        &self,
        since: OffsetDateTime,
        now: OffsetDateTime,
        deadline: Deadline,
        options: &SweepOptions,
        report: &mut SweepReport,
    ) -> Result<(), SweepError> {
        let select = "id,url,state,executionInfo,stateTransitionTime".to_owned();
        let mut jobs = items(self.batch.list_jobs(
            &ListOptions {
                select: Some(select),
                ..ListOptions::default()
            },
            deadline,
        ));
        let cache = JobCache::default();
        while let Some(job) = jobs.try_next().await? {
            if deadline_near(deadline) {
                return Ok(());
            }
            let Some(job_id) = job.id.clone() else {
                continue;
            };
            let ended = job
                .execution_info
                .as_ref()
                .and_then(|e| e.end_time)
                .map(|t| t.0);
            // A job that ended before the cursor cannot hold new failures.
            if job.state == Some(JobState::Completed) && ended.is_some_and(|t| t < since) {
                continue;
            }
            report.jobs_examined += 1;
            // A listed job was not checked before it was read: one whose id can never be sent
            // back to Batch (its tasks cannot be listed) is refused once, not failed every run.
            let ids = StoredIds::job(&self.config.account, &job_id);
            if let Some(problem) = ids.problem() {
                let refused = self
                    .refuse_unstorable(&ids, problem, None, now, deadline)
                    .await;
                report.subjects.push(refused.report);
                continue;
            }
            self.sweep_failed_tasks(&job_id, since, now, deadline, &cache, report)
                .await;
            match self
                .process_job(&job_id, &cache, now, options.stuck_after, deadline)
                .await
            {
                Ok(worked) => report.subjects.extend(
                    self.alert(worked, now, deadline)
                        .await
                        .into_iter()
                        .filter(|s| s.class.is_some_and(|c| c.is_failure())),
                ),
                Err(Outcome::Skipped(_)) => {}
                Err(outcome) => {
                    let mut failed =
                        SubjectReport::new(format!("{}/{job_id}", self.config.account));
                    failed.outcome = outcome;
                    report.subjects.push(failed);
                }
            }
        }
        Ok(())
    }

    /// Failed tasks of one job that ended since the cursor: one filtered list, no per-task GETs.
    async fn sweep_failed_tasks(
        &self,
        job_id: &str,
        since: OffsetDateTime,
        now: OffsetDateTime,
        deadline: Deadline,
        cache: &JobCache,
        report: &mut SweepReport,
    ) {
        let filter = format!(
            "state eq 'completed' and executionInfo/result eq 'failure' and executionInfo/endTime ge datetime'{}'",
            rfc3339(since)
        );
        let select =
            "id,url,state,commandLine,exitConditions,constraints,executionInfo,nodeInfo".to_owned();
        let options = ListOptions {
            filter: Some(filter),
            select: Some(select),
            ..ListOptions::default()
        };
        // The list is read page by page while up to `subject_concurrency` tasks are triaged;
        // `buffered` keeps the list order in the report and bounds what is in memory.
        let label = |suffix: &str| format!("{}/{job_id}{suffix}", self.config.account);
        let mut triaged = items(self.batch.list_tasks(job_id, &options, deadline))
            .map(|listed: Result<BatchTask, BatchError>| async move {
                let task = match listed {
                    Ok(task) => task,
                    Err(error) => {
                        let mut failed = SubjectReport::new(label(" (failed tasks)"));
                        failed.outcome = batch_failure(&error);
                        return Some((Worked::from(failed), true));
                    }
                };
                if deadline_near(deadline) {
                    return None;
                }
                Some(
                    match self.triage_task(job_id, task, cache, now, deadline).await {
                        Ok(worked) => (worked, false),
                        Err(outcome) => {
                            let mut failed = SubjectReport::new(label(""));
                            failed.outcome = outcome;
                            (failed.into(), false)
                        }
                    },
                )
            })
            .buffered(self.subject_concurrency);
        // Alerts are grouped a page at a time: one group write per page, memory bounded however
        // many tasks failed.
        let mut page: Vec<Worked> = Vec::new();
        while let Some(next) = triaged.next().await {
            let stop = match next {
                // The list broke: what came before it stands; the next run lists again.
                Some((worked, broke)) => {
                    page.push(worked);
                    broke
                }
                // Out of time: the rest is left for the next run.
                None => true,
            };
            if stop || page.len() >= ALERT_PAGE {
                let alerted = self.alert(std::mem::take(&mut page), now, deadline).await;
                report.subjects.extend(alerted);
            }
            if stop {
                return;
            }
        }
        report
            .subjects
            .extend(self.alert(page, now, deadline).await);
    }
}

fn deadline_near(deadline: Deadline) -> bool {
    deadline.remaining() < RESERVE
}
