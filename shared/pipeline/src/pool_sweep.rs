//! The timer's look at pools and nodes. Batch emits no event when a node turns `unusable` or a
//! start task fails on it, and a pool that cannot grow leaves no failed task behind, so these
//! are found by polling, at a cost that follows the pools and the nodes in trouble, never all
//! the nodes:
//!
//! 1. List Pool Node Counts (`/nodecounts`, 10 pools a page) says which pools have nodes
//!    `unusable` or `starttaskfailed`;
//! 2. one List Pools (`$select`ed) gives every pool's resize, autoscale and deletion state,
//!    each diagnosed without a further request;
//! 3. one filtered, `$select`ed List Nodes per pool that may hold a node in trouble
//!    (`state eq 'unusable' or state eq 'starttaskfailed' or startTaskInfo/result eq 'failure'`):
//!    a pool with counts in trouble, a pool whose start task does not wait for success (its
//!    failed nodes stay `idle`, which counts cannot tell), or a pool the counts do not mention.
//!
//! Lists are paged streams; nodes are worked [`crate::triage::DEFAULT_SUBJECT_CONCURRENCY`] at a
//! time and their alerts grouped a page at a time, so 200 unusable nodes with one cause make one
//! alert with a count. The run stops at its deadline and leaves the rest to the next one; it has
//! no cursor (it looks at the state of now, and every effect is once per node and incident), and
//! a lease of its own keeps two overlapping runs apart.
//!
//! What a complete run saw (every pool, where it stands, and the groups its pools and nodes in
//! trouble fall in) is kept in its report ([`PoolSweepReport::seen`]), so the tick can tell
//! which pool and node groups are over without asking Batch again (`triage/resolve_pools.rs`).

use std::collections::HashMap;

use artifact_store::{Condition, ETag, ObjectKey, StoreError};
use batch_client::{
    BatchError, Deadline, ListOptions, NODES_IN_TROUBLE_FILTER, NODES_IN_TROUBLE_SELECT, items,
};
use diagnosis::wire::{BatchPool, ComputeNode};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::sweep::{SweepError, SweepOptions};
use crate::triage::{Outcome, PoolsSeen, StoredIds, SubjectReport, Triage, Worked, batch_failure};

/// Held while a pool sweep works (per account: [`Triage::sweep_state_key`]).
const LEASE_KEY: &str = "pools-lease.json";

/// The pool properties the sweep diagnoses.
pub const POOL_SELECT: &str = "id,url,state,stateTransitionTime,allocationState,allocationStateTransitionTime,resizeErrors,resizeTimeout,enableAutoScale,autoScaleRun,currentDedicatedNodes,currentLowPriorityNodes,targetDedicatedNodes,targetLowPriorityNodes,startTask";

/// Nodes whose alerts are grouped together.
const ALERT_PAGE: usize = 256;

/// Time kept in hand for releasing the lease.
const RESERVE: std::time::Duration = std::time::Duration::from_secs(5);

/// What a pool sweep did.
#[derive(Debug, Default)]
pub struct PoolSweepReport {
    /// Another run holds the lease: this one did nothing.
    pub skipped_busy: bool,
    /// Pools listed and diagnosed.
    pub pools_examined: usize,
    /// Pools whose nodes were listed.
    pub pools_listed: usize,
    /// Subjects triaged: pools in trouble and nodes in trouble.
    pub subjects: Vec<SubjectReport>,
    /// The run looked at every pool within its deadline.
    pub completed: bool,
    /// What the run saw, when it saw everything: every pool listed and every node list it
    /// needed read to its end. `None` when it was skipped, stopped or failed.
    pub seen: Option<PoolsSeen>,
}

impl PoolSweepReport {
    /// Notes the groups a pool or node in trouble falls in, taken from `worked`.
    fn note_failing(&mut self, worked: &mut Worked) {
        if let Some(seen) = self.seen.as_mut() {
            seen.still_failing(std::mem::take(&mut worked.firing));
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Lease {
    expires: String,
}

fn deadline_near(deadline: Deadline) -> bool {
    deadline.remaining() < RESERVE
}

/// Whether a pool's nodes are worth a list (see the module docs), from its counts `(in
/// trouble, has nodes)` when the counts mention it.
fn worth_listing(pool: &BatchPool, counted: Option<(bool, bool)>) -> bool {
    let no_wait = pool
        .start_task
        .as_ref()
        .is_some_and(|s| s.wait_for_success == Some(false));
    match counted {
        Some((in_trouble, has_nodes)) => in_trouble || (no_wait && has_nodes),
        // The counts lag behind or left it out: look rather than miss it.
        None => pool.current_nodes().unwrap_or(1) > 0,
    }
}

impl Triage {
    /// Sweeps the pools and nodes of the account at `now`, within `deadline` (the lease lasts
    /// `options.lease`).
    pub async fn sweep_pools(
        &self,
        now: OffsetDateTime,
        deadline: Deadline,
        options: &SweepOptions,
    ) -> Result<PoolSweepReport, SweepError> {
        let lease_key = self.sweep_state_key(LEASE_KEY)?;
        let Some(lease) = self.take_pool_lease(&lease_key, now, options).await? else {
            return Ok(PoolSweepReport {
                skipped_busy: true,
                ..PoolSweepReport::default()
            });
        };
        let mut report = PoolSweepReport {
            seen: Some(PoolsSeen::default()),
            ..PoolSweepReport::default()
        };
        let result = self.sweep_pools_within(now, deadline, &mut report).await;
        if result.is_err() {
            report.seen = None;
        }
        report.completed = result.is_ok() && !deadline_near(deadline);
        let _ = self
            .store
            .delete(&lease_key, Condition::IfMatch(lease))
            .await;
        result.map(|()| report)
    }

    async fn take_pool_lease(
        &self,
        key: &ObjectKey,
        now: OffsetDateTime,
        options: &SweepOptions,
    ) -> Result<Option<ETag>, SweepError> {
        let lease = Lease {
            expires: (now + options.lease).format(&Rfc3339).unwrap_or_default(),
        };
        let body = bytes::Bytes::from(serde_json::to_vec(&lease).unwrap_or_default());
        let condition = match self.store.get(key).await? {
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
        match self.store.put(key, body, condition).await {
            Ok(etag) => Ok(Some(etag)),
            Err(StoreError::ConditionFailed { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    async fn sweep_pools_within(
        &self,
        now: OffsetDateTime,
        deadline: Deadline,
        report: &mut PoolSweepReport,
    ) -> Result<(), SweepError> {
        // Counts first: a few requests say which pools hold nodes in trouble, and which hold
        // nodes at all (pool id → (in trouble, has nodes)).
        let mut counted: HashMap<String, (bool, bool)> = HashMap::new();
        let mut counts = items(
            self.batch
                .list_pool_node_counts(&ListOptions::default(), deadline),
        );
        while let Some(c) = counts.try_next().await? {
            if let Some(pool) = c.pool_id.clone() {
                counted.insert(pool, (c.in_trouble() > 0, c.worth_listing(true)));
            }
        }
        let mut pools = items(self.batch.list_pools(
            &ListOptions {
                select: Some(POOL_SELECT.to_owned()),
                ..ListOptions::default()
            },
            deadline,
        ));
        let mut page: Vec<Worked> = Vec::new();
        while let Some(pool) = pools.try_next().await? {
            if deadline_near(deadline) {
                report.seen = None;
                return Ok(());
            }
            let Some(pool_id) = pool.id.clone() else {
                continue;
            };
            report.pools_examined += 1;
            if let Some(seen) = report.seen.as_mut() {
                seen.saw_pool(&self.config.account, &pool_id, &pool);
            }
            let ids = StoredIds::pool(&self.config.account, &pool_id);
            if let Some(problem) = ids.problem() {
                page.push(
                    self.refuse_unstorable(&ids, problem, None, now, deadline)
                        .await,
                );
                continue;
            }
            let list = worth_listing(&pool, counted.get(&pool_id).copied());
            let mut worked = self.triage_pool(&pool_id, pool, now).await;
            report.note_failing(&mut worked);
            if worked.report.class.is_some_and(|c| c.is_failure()) {
                page.push(worked);
            }
            if list {
                report.pools_listed += 1;
                self.sweep_nodes(&pool_id, now, deadline, &mut page, report)
                    .await;
            }
            if page.len() >= ALERT_PAGE {
                let alerted = self.alert(std::mem::take(&mut page), now, deadline).await;
                report.subjects.extend(alerted);
            }
        }
        report
            .subjects
            .extend(self.alert(page, now, deadline).await);
        Ok(())
    }

    /// The nodes in trouble of one pool: one filtered list, paged, worked a few at a time.
    async fn sweep_nodes(
        &self,
        pool_id: &str,
        now: OffsetDateTime,
        deadline: Deadline,
        page: &mut Vec<Worked>,
        report: &mut PoolSweepReport,
    ) {
        let options = ListOptions {
            filter: Some(NODES_IN_TROUBLE_FILTER.to_owned()),
            select: Some(NODES_IN_TROUBLE_SELECT.to_owned()),
            ..ListOptions::default()
        };
        let label = format!("{}/_pools/{pool_id} (nodes)", self.config.account);
        let mut triaged = items(self.batch.list_nodes(pool_id, &options, deadline))
            .map(|listed: Result<ComputeNode, BatchError>| {
                let label = label.clone();
                async move {
                    match listed {
                        Ok(_) if deadline_near(deadline) => None,
                        Ok(node) => {
                            Some((self.triage_node(pool_id, node, now, deadline).await, false))
                        }
                        Err(error) => {
                            let mut failed = SubjectReport::new(label);
                            failed.outcome = batch_failure(&error);
                            Some((Worked::from(failed), true))
                        }
                    }
                }
            })
            .buffered(self.subject_concurrency);
        while let Some(next) = triaged.next().await {
            // Out of time, or the list failed: this pool's nodes were not all seen.
            let Some((mut worked, broke)) = next else {
                report.seen = None;
                return;
            };
            if broke {
                report.seen = None;
            }
            report.note_failing(&mut worked);
            if worked.report.class.is_some_and(|c| c.is_failure())
                || !matches!(worked.report.outcome, Outcome::Done)
            {
                page.push(worked);
            }
            if page.len() >= ALERT_PAGE {
                let alerted = self.alert(std::mem::take(page), now, deadline).await;
                report.subjects.extend(alerted);
            }
            if broke {
                return;
            }
        }
    }
}
