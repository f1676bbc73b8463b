//! The timer's sweep: the safety net for events that never arrived (diagnostic settings off, an
//! Event Hubs batch lost after its retries) and the only way to see a job that is stuck, since a
//! stuck job emits no event.
//!
//! A run costs what changed, not what exists (README, "Benchmarks"):
//!
//! - **One filtered job listing**: jobs that can still change (active, disabling, disabled,
//!   enabling, terminating) and jobs that ended since the cursor, with every field the job's
//!   diagnosis reads (`$select`), so no job is read again.
//! - **Task counts per job** (`/jobs/{id}/taskcounts`), compared with what the last run saw,
//!   kept in the store as one small record per job (`sweep/seen/<hash>.json`, written only
//!   when the counts changed, compare-and-swap on its version). The failed tasks completed
//!   since the cursor are listed (one filtered, `$select`ed list, never a GET per task) only
//!   for a job whose failed count rose, a job never seen, or a job whose counts or record
//!   cannot be read.
//! - **Preparation/release status** only for a job that has such a task.
//! - **Stuck jobs** are judged every run from the listing and the counts, which the run has
//!   already read: a slower schedule for them would save no request.
//!
//! The cursor advances only when a run finishes within its deadline and every job's failed
//! tasks were listed and worked (a list cut by throttling, a task whose work may succeed on a
//! retry). Otherwise it stays, and the next run lists those jobs again from the same cursor; a
//! job's record is written only once its failures were handled, so its count still looks risen.
//! Both are safe because every effect is idempotent. A lease keeps two overlapping runs (two
//! instances, or a long run and the next tick) from working at the same time.
//!
//! The counts miss one case the event path does not: a task reactivated (its failure undone)
//! and another failing between two runs leave the failed count where it was. A record of a
//! job deleted while active is not removed (a few bytes each); one of a job that completed is
//! removed on its last listing.

use std::time::Duration;

use artifact_store::{Condition, ETag, ObjectKey, StoreError};
use batch_client::{BatchError, Deadline, ListOptions, items};
use diagnosis::wire::{BatchJob, BatchTask, JobState, TaskCounts};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::triage::{JobCache, Outcome, StoredIds, SubjectReport, Triage, Worked, batch_failure};

/// The cursor: failures that ended before it were handled by an earlier run. Per account
/// ([`Triage::sweep_state_key`]).
const CURSOR_KEY: &str = "cursor.json";
/// Held while a run works.
const LEASE_KEY: &str = "lease.json";
/// What the last run saw of each job: `seen/<hash>.json` under the account's sweep state
/// ([`Triage::sweep_state_key`]), one small record per job.
const SEEN_PREFIX: &str = "seen/";

/// What the job listing returns: every field the job's diagnosis reads, so no job is read again.
const JOB_SELECT: &str = "id,displayName,url,eTag,creationTime,state,stateTransitionTime,\
previousState,constraints,jobPreparationTask,jobReleaseTask,poolInfo,onAllTasksComplete,\
onTaskFailure,executionInfo";

/// Jobs worked at once: their requests overlap, and memory holds this many jobs' work.
const JOB_CONCURRENCY: usize = 8;

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
    /// `--since`), and lists the failed tasks of every job, whatever their counts. The cursor
    /// still advances when the run completes.
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
    /// Jobs whose failed tasks were listed (their failed count rose, or they were new, or
    /// their counts could not be read).
    pub failed_task_lists: usize,
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
        if matches!(result, Ok(true)) && !deadline_near(deadline) {
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
        result.map(|_| report)
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

    /// Sweeps every job the filtered listing returns, a few at once; `Ok(false)` when a job's
    /// failed tasks could not all be handled (the cursor must then stay where it is).
    async fn sweep_jobs(
        &self,
        since: OffsetDateTime,
        now: OffsetDateTime,
        deadline: Deadline,
        options: &SweepOptions,
        report: &mut SweepReport,
    ) -> Result<bool, SweepError> {
        let jobs = items(self.batch.list_jobs(
            &ListOptions {
                filter: Some(jobs_filter(since)),
                select: Some(JOB_SELECT.to_owned()),
                ..ListOptions::default()
            },
            deadline,
        ));
        // `buffered` keeps the listing's order in the report and holds at most
        // `JOB_CONCURRENCY` jobs' work in memory, whatever the number of jobs.
        let mut swept = jobs
            .map(|listed: Result<BatchJob, BatchError>| async move {
                Ok::<_, BatchError>(self.sweep_job(listed?, since, now, deadline, options).await)
            })
            .buffered(JOB_CONCURRENCY);
        let mut clean = true;
        while let Some(job) = swept.next().await {
            let job = job?;
            report.jobs_examined += usize::from(job.examined);
            report.failed_task_lists += usize::from(job.listed_failed_tasks);
            report.subjects.extend(job.subjects);
            clean &= job.clean;
        }
        Ok(clean)
    }

    /// One job of the listing: its task counts decide whether its failed tasks are listed; then
    /// the job itself is diagnosed (stuck, scheduling error, timeout, prep/release failures)
    /// from the listing and the counts.
    async fn sweep_job(
        &self,
        job: BatchJob,
        since: OffsetDateTime,
        now: OffsetDateTime,
        deadline: Deadline,
        options: &SweepOptions,
    ) -> SweptJob {
        let mut swept = SweptJob::default();
        if deadline_near(deadline) {
            // Out of time: the cursor stays, and the next run sees this job.
            swept.clean = false;
            return swept;
        }
        let Some(job_id) = job.id.clone() else {
            return swept;
        };
        let ended = job
            .execution_info
            .as_ref()
            .and_then(|e| e.end_time)
            .map(|t| t.0);
        // A job that ended before the cursor cannot hold new failures (the filter already says
        // so; this guards against a server that ignored it).
        if job.state == Some(JobState::Completed) && ended.is_some_and(|t| t < since) {
            return swept;
        }
        swept.examined = true;
        // A listed job was not checked before it was read: one whose id can never be sent
        // back to Batch (its tasks cannot be listed) is refused once, not failed every run.
        let ids = StoredIds::job(&self.config.account, &job_id);
        if let Some(problem) = ids.problem() {
            let refused = self
                .refuse_unstorable(&ids, problem, None, now, deadline)
                .await;
            swept.subjects.push(refused.report);
            return swept;
        }
        let seen_key = self.seen_key(&job_id);
        let (counts, seen) = futures::join!(
            self.batch.get_task_counts(&job_id, deadline),
            self.read_seen(seen_key.as_ref()),
        );
        let counts = counts.ok().map(|c| c.task_counts);
        // Listed when the failed count rose since the last run saw it, when the job was never
        // seen, or when either the counts or what was seen cannot be read: a failure is never
        // skipped on a guess. An operator's look-back (`--since`) lists every job: it asks for
        // what the records say was already seen.
        let must_list = match (&counts, &seen) {
            _ if options.look_back.is_some() => true,
            (Some(counts), Ok(Some((seen, _)))) => counts.failed > seen.failed,
            _ => true,
        };
        let cache = JobCache::default();
        cache.insert(&job_id, job.clone());
        if must_list {
            swept.listed_failed_tasks = true;
            let handled = self
                .sweep_failed_tasks(&job_id, since, now, deadline, &cache)
                .await;
            swept.clean = handled.clean;
            swept.subjects.extend(handled.subjects);
        }
        match self
            .work_job(&job_id, &job, counts, now, options.stuck_after, deadline)
            .await
        {
            Ok(worked) => swept.subjects.extend(
                self.alert(worked, now, deadline)
                    .await
                    .into_iter()
                    .filter(|s| s.class.is_some_and(|c| c.is_failure())),
            ),
            Err(Outcome::Skipped(_)) => {}
            // The job and its prep/release status are read again every run, whatever the
            // cursor says: nothing is lost, so the cursor need not wait for them.
            Err(outcome) => {
                let mut failed = SubjectReport::new(format!("{}/{job_id}", self.config.account));
                failed.outcome = outcome;
                swept.subjects.push(failed);
            }
        }
        if swept.clean
            && let (Some(counts), Some(key)) = (counts, seen_key)
        {
            // The last run this job is listed in (it ended before the next cursor) forgets it.
            let last_listing = job.state == Some(JobState::Completed)
                && ended.is_some_and(|t| t < now - options.overlap);
            self.write_seen(&key, seen.ok().flatten(), counts, last_listing)
                .await;
        }
        swept
    }

    /// What the last run saw of a job, with its version for compare-and-swap.
    async fn read_seen(&self, key: Option<&ObjectKey>) -> Result<Option<(Seen, ETag)>, StoreError> {
        let Some(key) = key else {
            return Ok(None);
        };
        Ok(self.store.get(key).await?.and_then(|stored| {
            // A record that does not parse is as good as none: the job is listed again.
            serde_json::from_slice::<Seen>(&stored.bytes)
                .ok()
                .map(|seen| (seen, stored.etag))
        }))
    }

    /// Keeps the counts this run saw, when they differ from the record (a quiet job costs no
    /// write), or forgets the job on its last listing. Conditional on the version read, so two
    /// runs that overlapped cannot take a record back in time; a write that fails only means
    /// the next run lists the job's failed tasks once more.
    async fn write_seen(
        &self,
        key: &ObjectKey,
        previous: Option<(Seen, ETag)>,
        counts: TaskCounts,
        forget: bool,
    ) {
        let store = self.store.as_ref();
        let next = Seen {
            failed: counts.failed,
        };
        let result = match (previous, forget) {
            (Some((_, etag)), true) => store.delete(key, Condition::IfMatch(etag)).await,
            (None, true) => Ok(()),
            (Some((seen, _)), false) if seen == next => Ok(()),
            (previous, false) => {
                let condition =
                    previous.map_or(Condition::IfAbsent, |(_, etag)| Condition::IfMatch(etag));
                let body = bytes::Bytes::from(serde_json::to_vec(&next).unwrap_or_default());
                store.put(key, body, condition).await.map(|_| ())
            }
        };
        if let Err(error) = result {
            tracing::debug!(%error, "the sweep's record of a job was not written");
        }
    }

    /// Failed tasks of one job that ended since the cursor: one filtered list, no per-task GETs.
    async fn sweep_failed_tasks(
        &self,
        job_id: &str,
        since: OffsetDateTime,
        now: OffsetDateTime,
        deadline: Deadline,
        cache: &JobCache,
    ) -> Handled {
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
        let mut handled = Handled {
            clean: true,
            subjects: Vec::new(),
        };
        let mut page: Vec<Worked> = Vec::new();
        while let Some(next) = triaged.next().await {
            let stop = match next {
                // The list broke: what came before it stands; the next run lists again from
                // the same cursor.
                Some((worked, broke)) => {
                    page.push(worked);
                    broke
                }
                // Out of time: the rest is left for the next run.
                None => true,
            };
            if stop || page.len() >= ALERT_PAGE {
                let alerted = self.alert(std::mem::take(&mut page), now, deadline).await;
                handled.add(alerted);
            }
            if stop {
                handled.clean = false;
                return handled;
            }
        }
        let alerted = self.alert(page, now, deadline).await;
        handled.add(alerted);
        handled
    }
}

/// The failed tasks of one job, as far as they went.
struct Handled {
    /// Every failed task since the cursor was listed and worked, none with an error a retry
    /// may cure.
    clean: bool,
    subjects: Vec<SubjectReport>,
}

impl Handled {
    fn add(&mut self, subjects: Vec<SubjectReport>) {
        // A task whose work failed in a way a retry may cure (throttled past its deadline, the
        // store unavailable) keeps the cursor where it is, so the next run works it again.
        if subjects.iter().any(|s| {
            matches!(
                s.outcome,
                Outcome::Failed {
                    retryable: true,
                    ..
                }
            )
        }) {
            self.clean = false;
        }
        self.subjects.extend(subjects);
    }
}

/// One job's part of a run.
struct SweptJob {
    /// It was looked at (not ended before the cursor, not cut by the deadline).
    examined: bool,
    /// Its failed tasks were listed.
    listed_failed_tasks: bool,
    /// Nothing of it is left for a later run from the same cursor.
    clean: bool,
    subjects: Vec<SubjectReport>,
}

impl Default for SweptJob {
    fn default() -> Self {
        Self {
            examined: false,
            listed_failed_tasks: false,
            clean: true,
            subjects: Vec::new(),
        }
    }
}

/// What a run saw of a job, kept for the next run: one small record per job, so memory and the
/// store grow with nothing but the number of jobs Batch lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    /// Tasks completed with result `failure`.
    failed: i32,
}

impl Triage {
    /// Where a job's record lives, under the account's sweep state: a hash of the account and
    /// job id, so any id (case, length, characters a key cannot hold) makes a valid key, and two
    /// accounts never share one.
    fn seen_key(&self, job_id: &str) -> Option<ObjectKey> {
        let mut hasher = Sha256::new();
        hasher.update(self.config.account.as_bytes());
        hasher.update([0]);
        hasher.update(job_id.as_bytes());
        self.sweep_state_key(&format!(
            "{SEEN_PREFIX}{}.json",
            hex::encode(hasher.finalize())
        ))
        .ok()
    }
}

/// The job listing's filter: jobs that can still change (active, or between states), and jobs
/// that ended since the cursor. Batch filters `state` with `eq` only, hence the list of states.
fn jobs_filter(since: OffsetDateTime) -> String {
    format!(
        "state eq 'active' or state eq 'disabling' or state eq 'disabled' or state eq 'enabling' \
         or state eq 'terminating' or executionInfo/endTime ge datetime'{}'",
        rfc3339(since)
    )
}

fn deadline_near(deadline: Deadline) -> bool {
    deadline.remaining() < RESERVE
}
