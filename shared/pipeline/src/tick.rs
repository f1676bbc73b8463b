//! The timer's whole job in one call, so every handler (the Functions timer, the Lambda schedule,
//! `batch-triage serve`, `batch-triage sweep`) does the same things in the same order: sweep
//! for failures no event announced in jobs and tasks, then in pools and nodes (`pool_sweep.rs`),
//! in every account (`sweep_accounts.rs`), work the deliveries the platforms gave up on (parked
//! ones and Event Grid's dead letters, `crate::parking`), send the alert groups that have
//! waited long enough, tell receivers with `send_resolved` about groups whose failure state
//! ended (pools and nodes from what this tick's pool sweeps saw), and retry the notifications
//! that failed earlier.

use batch_client::Deadline;
use time::OffsetDateTime;

use crate::parking::DrainReport;
use crate::pool_sweep::PoolSweepReport;
use crate::sweep::{SweepError, SweepOptions, SweepReport};
use crate::triage::{RunReport, SubjectReport, Triage};

/// What one tick did.
#[derive(Debug, Default)]
pub struct TickReport {
    /// The sweep.
    pub sweep: SweepReport,
    /// The sweep of pools and nodes.
    pub pools: PoolSweepReport,
    /// The parking area's drain.
    pub parked: DrainReport,
    /// Receivers a grouped alert went to.
    pub flushed: Vec<String>,
    /// Receivers told that a group's failure state ended.
    pub resolved: Vec<String>,
    /// The outbox after the retries.
    pub outbox: notify::DrainReport,
}

/// Why a tick stopped; every variant is worth retrying (the store or Batch was unavailable), and
/// whatever ran before the failure is idempotent.
#[derive(Debug, thiserror::Error)]
pub enum TickError {
    /// The sweep could not run.
    #[error("sweep: {0}")]
    Sweep(#[from] SweepError),
    /// The parking area or the dead-letter container could not be read or written.
    #[error("draining parked deliveries: {0}")]
    Parked(#[from] artifact_store::StoreError),
    /// The alert groups could not be read.
    #[error("flushing alert groups: {0}")]
    Flush(#[from] crate::grouping::GroupError),
    /// The outbox could not be read.
    #[error("draining the outbox: {0}")]
    Outbox(#[from] notify::NotifyError),
}

impl Triage {
    /// Sweeps, flushes due alert groups and drains the outbox, within `deadline`. `now` is the
    /// time of the whole tick: groups that fall due while the sweep runs go out on the next tick.
    pub async fn tick(
        &self,
        now: OffsetDateTime,
        deadline: Deadline,
        options: &SweepOptions,
    ) -> Result<TickReport, TickError> {
        let (sweep, pools) = self.sweep_accounts(now, deadline, options).await?;
        // Before the flush, so the alerts of drained deliveries can go out in this tick.
        let parked = self.drain_parked(now, deadline).await?;
        let flushed = self.flush_due(now, deadline).await?;
        let resolved = self
            .resolve_groups_after(now, deadline, pools.seen.as_ref())
            .await?;
        let outbox = self.drain_outbox(deadline).await?;
        Ok(TickReport {
            sweep,
            pools,
            parked,
            flushed,
            resolved,
            outbox,
        })
    }
}

impl TickReport {
    /// One line per fact, for a platform log.
    pub fn lines(&self) -> Vec<String> {
        let sweep = &self.sweep;
        let mut lines = Vec::new();
        if sweep.skipped_busy {
            lines.push("another sweep holds the lease; skipped".to_owned());
        } else {
            lines.push(format!(
                "swept {} jobs since {} (failed tasks listed for {}): {} subjects{}",
                sweep.jobs_examined,
                sweep.since,
                sweep.failed_task_lists,
                sweep.subjects.len(),
                if sweep.completed {
                    ""
                } else {
                    " (not finished: out of time, or a job's failed tasks left for the next run, which starts from the same cursor)"
                }
            ));
            lines.extend(sweep.subjects.iter().map(SubjectReport::line));
        }
        lines.extend(sweep.accounts.iter().map(|a| match &a.error {
            Some(error) => format!("account {}: sweep failed: {error}", a.account),
            None if a.skipped_busy => {
                format!(
                    "account {}: another sweep holds its lease; skipped",
                    a.account
                )
            }
            None => format!(
                "account {}: {} jobs since {}: {} subjects; {} pools: {} subjects{}",
                a.account,
                a.jobs_examined,
                a.since,
                a.subjects,
                a.pools_examined,
                a.pool_subjects,
                if a.completed {
                    ""
                } else {
                    " (stopped; the next run carries on)"
                }
            ),
        }));
        let pools = &self.pools;
        if !pools.skipped_busy {
            lines.push(format!(
                "swept {} pools ({} node lists): {} subjects{}",
                pools.pools_examined,
                pools.pools_listed,
                pools.subjects.len(),
                if pools.completed {
                    ""
                } else {
                    " (stopped at the deadline; the next run carries on)"
                }
            ));
            lines.extend(pools.subjects.iter().map(SubjectReport::line));
        }
        if !self.parked.is_empty() {
            lines.push(self.parked.line());
            lines.extend(self.parked.subjects.iter().map(SubjectReport::line));
        }
        lines.push(format!("grouped alerts sent: {}", self.flushed.len()));
        lines.push(format!("resolved messages sent: {}", self.resolved.len()));
        lines.push(format!(
            "outbox: {} delivered, {} still pending, {} dead",
            self.outbox.delivered, self.outbox.still_pending, self.outbox.dead
        ));
        lines
    }
}

impl RunReport {
    /// One line per subject, for a platform log.
    pub fn lines(&self) -> Vec<String> {
        self.subjects.iter().map(SubjectReport::line).collect()
    }
}

impl SubjectReport {
    /// The subject, its class and what became of it, on one line (no secrets: reports hold none).
    pub fn line(&self) -> String {
        format!(
            "{}: {} — {:?}{}{}{}{}",
            self.subject,
            self.class.map_or("not diagnosed", |c| c.as_str()),
            self.outcome,
            if self.notified.is_empty() {
                String::new()
            } else {
                format!("; notified {}", self.notified.join(", "))
            },
            self.muted_by
                .as_deref()
                .map(|s| format!("; muted by silence {s}"))
                .unwrap_or_default(),
            if self.already_preserved {
                "; logs already preserved"
            } else {
                ""
            },
            self.action
                .as_deref()
                .map(|a| format!("; action: {a}"))
                .unwrap_or_default(),
        ) + &self
            .agent_logs
            .as_deref()
            .map(|s| format!("; agent logs: {s}"))
            .unwrap_or_default()
    }
}
