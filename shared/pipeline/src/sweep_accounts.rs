//! The sweep of a deployment that watches several accounts: each account's own sweeps of jobs
//! ([`Triage::sweep`]: its cursor, its lease) and of pools ([`Triage::sweep_pools`]: its lease),
//! run concurrently with a bound, each account within a fair share of the deadline (its job
//! sweep within three quarters of it, so its pools always get a turn), so that a slow or
//! throttled account cannot starve the others. What an account leaves unfinished (its cursor
//! does not advance) is done again on the next tick.

use artifact_store::{ObjectKey, StoreError};
use batch_client::Deadline;
use futures::StreamExt;
use time::OffsetDateTime;

use crate::pool_sweep::PoolSweepReport;
use crate::sweep::{SweepError, SweepOptions, SweepReport};
use crate::triage::Triage;

/// Accounts swept at once. Each account's sweep works up to the pipeline's subject concurrency
/// itself, and Batch throttles per account, so the bound is on the process's load (connections,
/// memory, store requests), not on any one account.
pub const ACCOUNT_CONCURRENCY: usize = 4;

/// What one account's sweep did, in a deployment of several accounts.
#[derive(Debug, Clone, Default)]
pub struct AccountSweep {
    /// The account (lower case).
    pub account: String,
    /// Its cursor when the run started (RFC 3339).
    pub since: String,
    /// Another run held its lease: nothing was done for it.
    pub skipped_busy: bool,
    /// Jobs looked at.
    pub jobs_examined: usize,
    /// Subjects triaged.
    pub subjects: usize,
    /// Pools looked at.
    pub pools_examined: usize,
    /// Pool and node subjects triaged.
    pub pool_subjects: usize,
    /// Its run finished within its share of the deadline and advanced its cursor.
    pub completed: bool,
    /// Why its sweep of jobs or of pools could not run (the store or Batch failed); the others
    /// went on.
    pub error: Option<String>,
}

impl Triage {
    /// The store key of this account's sweep state `name` (`cursor.json`, `lease.json`): under
    /// `sweep/` for a single-account deployment, the keys it always had, so an upgrade keeps its
    /// cursor; under `sweep/accounts/{account}/` once a deployment watches several.
    pub(crate) fn sweep_state_key(&self, name: &str) -> Result<ObjectKey, StoreError> {
        match &self.sweep_namespace {
            None => ObjectKey::new(format!("sweep/{name}")),
            Some(account) => ObjectKey::new(format!(
                "sweep/accounts/{}/{name}",
                crate::account_segment(account)
            )),
        }
    }

    /// Sweeps the jobs, then the pools, of every account of the deployment within `deadline`:
    /// [`Triage::sweep`] and [`Triage::sweep_pools`] themselves for a single account; otherwise
    /// at most [`ACCOUNT_CONCURRENCY`] accounts at a time, each within its share of the time
    /// left when it starts, and one account's failure does not stop the others (it is reported
    /// in [`SweepReport::accounts`]). Fails only when every account's sweep failed.
    pub async fn sweep_accounts(
        &self,
        now: OffsetDateTime,
        deadline: Deadline,
        options: &SweepOptions,
    ) -> Result<(SweepReport, PoolSweepReport), SweepError> {
        let accounts = self.accounts();
        if accounts.len() == 1 {
            let jobs = self
                .sweep(now, job_sweep_deadline(deadline), options)
                .await?;
            let pools = self.sweep_pools(now, deadline, options).await?;
            return Ok((jobs, pools));
        }
        let total = accounts.len();
        let started = std::sync::atomic::AtomicUsize::new(0);
        let started = &started;
        // Futures do nothing until polled, so each account's share is taken when it starts.
        // (Built into a Vec first: a closure in the stream would not be `Send` for every
        // lifetime, which a handler's future must be.)
        let sweeps: Vec<_> = accounts
            .iter()
            .enumerate()
            .map(|(index, account)| async move {
                let nth = started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let share = fair_share(deadline, total - nth);
                let jobs = account.sweep(now, job_sweep_deadline(share), options).await;
                let pools = account.sweep_pools(now, share, options).await;
                (index, jobs, pools)
            })
            .collect();
        let mut results: Vec<_> = futures::stream::iter(sweeps)
            .buffer_unordered(ACCOUNT_CONCURRENCY)
            .collect()
            .await;
        results.sort_by_key(|(index, _, _)| *index);
        let mut merged = SweepReport {
            skipped_busy: true,
            completed: true,
            ..SweepReport::default()
        };
        // What the pool sweeps saw, kept only when every account's was complete.
        let mut pools = PoolSweepReport {
            skipped_busy: true,
            completed: true,
            seen: Some(crate::triage::PoolsSeen::default()),
            ..PoolSweepReport::default()
        };
        let mut first_error = None;
        for (index, jobs, pool_result) in results {
            let mut summary = AccountSweep {
                account: accounts[index].account_name().to_owned(),
                ..AccountSweep::default()
            };
            match jobs {
                Ok(report) => {
                    summary.since = report.since.clone();
                    summary.skipped_busy = report.skipped_busy;
                    summary.jobs_examined = report.jobs_examined;
                    summary.subjects = report.subjects.len();
                    summary.completed = report.completed;
                    merged.skipped_busy &= report.skipped_busy;
                    merged.completed &= report.completed;
                    merged.jobs_examined += report.jobs_examined;
                    merged.failed_task_lists += report.failed_task_lists;
                    // The earliest cursor: the run covered at least from there.
                    if merged.since.is_empty()
                        || (!report.since.is_empty() && report.since < merged.since)
                    {
                        merged.since = report.since;
                    }
                    merged.subjects.extend(report.subjects);
                }
                Err(error) => {
                    summary.error = Some(error.to_string());
                    merged.skipped_busy = false;
                    merged.completed = false;
                    first_error.get_or_insert(error);
                }
            }
            match pool_result {
                Ok(report) => {
                    summary.pools_examined = report.pools_examined;
                    summary.pool_subjects = report.subjects.len();
                    summary.completed &= report.completed || report.skipped_busy;
                    pools.skipped_busy &= report.skipped_busy;
                    pools.completed &= report.completed;
                    pools.pools_examined += report.pools_examined;
                    pools.pools_listed += report.pools_listed;
                    pools.subjects.extend(report.subjects);
                    match (pools.seen.as_mut(), report.seen) {
                        (Some(all), Some(seen)) => all.merge(seen),
                        _ => pools.seen = None,
                    }
                }
                Err(error) => {
                    let error_text = format!("pools: {error}");
                    summary.error = Some(match summary.error.take() {
                        Some(jobs) => format!("{jobs}; {error_text}"),
                        None => error_text,
                    });
                    pools.skipped_busy = false;
                    pools.completed = false;
                    pools.seen = None;
                    first_error.get_or_insert(error);
                }
            }
            merged.accounts.push(summary);
        }
        match first_error {
            Some(error) if merged.accounts.iter().all(|a| a.error.is_some()) => Err(error),
            _ => Ok((merged, pools)),
        }
    }
}

/// How much of an account's time its job sweep may take: the last quarter is kept for its
/// pools, so a job sweep that runs out of time (a busy or throttled account, whose cursor then
/// stays for the next tick) cannot crowd the pool sweep out of every tick. A pool sweep costs a
/// few requests (node counts, one pool list, a node list per pool in trouble).
fn job_sweep_deadline(deadline: Deadline) -> Deadline {
    deadline.min(Deadline::after(deadline.remaining() / 4 * 3))
}

/// The deadline of an account's sweep that starts while `waiting` accounts (itself included)
/// have yet to start: the time left split into the rounds of [`ACCOUNT_CONCURRENCY`] those still
/// need, so the last accounts get their turn even if the first ones use all of theirs.
fn fair_share(deadline: Deadline, waiting: usize) -> Deadline {
    let rounds = waiting.div_ceil(ACCOUNT_CONCURRENCY).max(1);
    let rounds = u32::try_from(rounds).unwrap_or(u32::MAX);
    deadline.min(Deadline::after(deadline.remaining() / rounds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_job_sweep_leaves_a_quarter_of_the_time_to_the_pools() {
        let deadline = Deadline::after(Duration::from_secs(400));
        let jobs = job_sweep_deadline(deadline);
        assert!(jobs < deadline);
        assert!(jobs.remaining() <= Duration::from_secs(300));
        assert!(jobs.remaining() > Duration::from_secs(290));
        // A deadline already past stays past.
        let past = Deadline::after(Duration::ZERO);
        assert!(job_sweep_deadline(past).is_past());
    }

    #[tokio::test]
    async fn the_first_round_gets_the_whole_deadline_and_later_accounts_a_share() {
        let deadline = Deadline::after(Duration::from_secs(400));
        // As many waiting as run at once: one round, the whole deadline.
        assert_eq!(fair_share(deadline, ACCOUNT_CONCURRENCY), deadline);
        assert_eq!(fair_share(deadline, 1), deadline);
        // Two rounds to go: at most half of what is left.
        let half = fair_share(deadline, ACCOUNT_CONCURRENCY + 1);
        assert!(half < deadline);
        assert!(half.remaining() <= Duration::from_secs(200));
        assert!(half.remaining() > Duration::from_secs(150));
    }
}
