//! Reading a payload's items into targets: what to look at, with other accounts refused
//! before anything is fetched.

use std::sync::Arc;

use diagnosis::Item;
use diagnosis::payload::read_slice;

use super::{Outcome, Triage, TriageError};

/// What a payload item asks the pipeline to look at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Target {
    Task {
        job: String,
        task: String,
    },
    Job {
        job: String,
    },
    /// A pool's start task failed on a node. It belongs to no job, and Batch keeps no task
    /// object for it, so the event is the diagnosis's source; what the node still holds
    /// (`startup/`) is read back and preserved.
    StartTask {
        pool: String,
        node: String,
        event: StartTaskEvent,
    },
    /// A pool: a REST body, or a resize or autoscale event that reports a failure. The pool is
    /// re-read before anything is decided.
    Pool {
        pool: String,
    },
    /// A node (a REST body): re-read before anything is decided.
    Node {
        pool: String,
        node: String,
    },
}

/// The event of a [`Target::StartTask`]. Two events about one node are the same subject, so
/// equality and ordering ignore the body.
#[derive(Debug, Clone)]
pub(super) struct StartTaskEvent(pub(super) Arc<diagnosis::wire::SpecialTaskEventBody>);

impl PartialEq for StartTaskEvent {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for StartTaskEvent {}
impl std::hash::Hash for StartTaskEvent {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}
impl PartialOrd for StartTaskEvent {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for StartTaskEvent {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

/// A target and the index of its account in [`Triage::accounts`], or the label and outcome of
/// an item refused before anything was fetched.
pub(super) type Routed = Result<(usize, Target), (String, Outcome)>;

impl Triage {
    /// Reads a payload's items into targets; returns how many items were about nothing to
    /// triage.
    pub(super) fn read_targets(
        &self,
        payload: &[u8],
        targets: &mut Vec<Routed>,
    ) -> Result<usize, TriageError> {
        let mut ignored = 0;
        // Duplicates are dropped as they are read, not after: a batch repeating one subject a
        // million times holds it once (memory follows the distinct subjects, not the records).
        let mut seen = std::collections::HashSet::new();
        let mut refused = std::collections::HashSet::new();
        read_slice(payload, &mut |item| match self.target_of(&item) {
            Some(Ok(target)) => {
                if seen.insert(target.clone()) {
                    targets.push(Ok(target));
                }
            }
            Some(Err((subject, outcome))) => {
                if refused.insert(subject.clone()) {
                    targets.push(Err((subject, outcome)));
                }
            }
            None => ignored += 1,
        })?;
        Ok(ignored)
    }

    /// Maps an item to what to look at and the account (its index in [`Triage::accounts`]) it
    /// belongs to, refusing accounts that are not configured. `None` for items that are about
    /// nothing to triage.
    fn target_of(&self, item: &Item) -> Option<Routed> {
        // The URL that names the account, when the item carries one: matched against each
        // account's endpoint first (an emulator's loopback URL names no account by its host).
        let mut origin: Option<&str> = None;
        let (account, target) = match item {
            Item::Task(task) => {
                origin = task.url.as_deref();
                let job = origin.and_then(diagnosis::diagnose::job_id_from_url)?;
                let task = task.id.clone()?;
                (account_of(origin), Target::Task { job, task })
            }
            // Starts and successful completions, most of an account's events, cost nothing.
            Item::TaskEvent { kind, body, .. } if !body.may_report_failure(*kind) => return None,
            Item::TaskEvent { body, account, .. } => (
                account.clone(),
                Target::Task {
                    job: body.job_id.clone()?,
                    task: body.id.clone()?,
                },
            ),
            Item::TaskReference(reference) => {
                if let Err(refused) = self.check_reference(reference) {
                    return Some(Err(refused));
                }
                origin = reference.account_url.as_deref();
                (None, reference_target(reference))
            }
            Item::SpecialTaskEvent { body, account }
                if body.special_type() == diagnosis::wire::SpecialTaskType::StartTask =>
            {
                let node = body.node_info.as_ref()?;
                (
                    account.clone(),
                    Target::StartTask {
                        pool: node.pool_id.clone()?,
                        node: node.node_id.clone()?,
                        event: StartTaskEvent(Arc::new((**body).clone())),
                    },
                )
            }
            Item::SpecialTaskEvent { body, account } => (
                account.clone(),
                Target::Job {
                    job: body.job_id.clone()?,
                },
            ),
            Item::Job(job) => {
                origin = job.url.as_deref();
                let job = job.id.clone()?;
                (account_of(origin), Target::Job { job })
            }
            // A pool event that reports no failure costs nothing, like a task start.
            Item::PoolEvent { body, .. }
                if body.resize_failure().is_none() && body.auto_scale_failure().is_none() =>
            {
                return None;
            }
            Item::PoolEvent { body, account, .. } => (
                account.clone(),
                Target::Pool {
                    pool: body.id.clone()?,
                },
            ),
            Item::Pool(pool) => {
                origin = pool.url.as_deref();
                let pool = pool.id.clone()?;
                (account_of(origin), Target::Pool { pool })
            }
            Item::Node(node) => {
                origin = node.url.as_deref();
                let (pool, node) = (node.pool_id()?, node.id.clone()?);
                (account_of(origin), Target::Node { pool, node })
            }
            Item::PoolNodeCounts(_) => return None,
            Item::PrepReleaseStatus(_)
            | Item::File(_)
            | Item::TaskCounts(_)
            | Item::Error(_)
            | Item::Skipped { .. } => return None,
        };
        match self.route(account.as_deref(), origin) {
            Some(index) => Some(Ok((index, target))),
            None => {
                // The URL is untrusted text: no query string (it could carry a SAS) is echoed.
                let account = account
                    .or_else(|| origin.map(|url| diagnosis::redact::strip_query(url).to_string()))
                    .unwrap_or_default();
                Some(Err((
                    format!("{account}/{}", target_label(&target)),
                    Outcome::Refused(format!(
                        "account {account:?} is not a configured account; nothing was fetched"
                    )),
                )))
            }
        }
    }
}

impl Triage {
    /// A reference's `accountUrl`, when it has one, must be one of the accounts' endpoints.
    fn check_reference(
        &self,
        reference: &diagnosis::wire::TaskReference,
    ) -> Result<(), (String, Outcome)> {
        if let Some(url) = &reference.account_url
            && let Err(error) = self.batch.check_url(url)
            && !self.others.iter().any(|o| o.batch.check_url(url).is_ok())
        {
            // The URL is untrusted text: no query string (it could carry a SAS) is echoed.
            let shown = diagnosis::redact::strip_query(url);
            return Err((
                format!("{shown}/{}", reference.job_id),
                Outcome::Refused(error.to_string()),
            ));
        }
        Ok(())
    }
}

/// What a `{jobId, taskId}` reference asks for: the task, or the job when it names no task.
fn reference_target(reference: &diagnosis::wire::TaskReference) -> Target {
    let job = reference.job_id.clone();
    match &reference.task_id {
        Some(task) => Target::Task {
            job,
            task: task.clone(),
        },
        None => Target::Job { job },
    }
}

/// The account a REST body's `url` names by its host, if any.
fn account_of(url: Option<&str>) -> Option<String> {
    url.and_then(diagnosis::wire::account_from_url)
}

pub(super) fn target_label(target: &Target) -> String {
    match target {
        Target::Task { job, task } => format!("{job}/{task}"),
        Target::Job { job } => job.clone(),
        Target::StartTask { pool, node, .. } => format!("_pools/{pool}/{node}/_starttask"),
        Target::Pool { pool } => format!("_pools/{pool}"),
        Target::Node { pool, node } => format!("_pools/{pool}/{node}"),
    }
}
