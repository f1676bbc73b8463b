//! The subjects the pipeline reports, typed. The pipeline labels each subject with the path its
//! logs are preserved under (docs/preserved-layout.md): `account/job`, `account/job/task`,
//! `account/job/_jobprep/node`, `account/job/_jobrelease/node`,
//! `account/_pools/pool/node/_starttask`, or, from the pool sweep, `account/_pools/pool` and
//! `account/_pools/pool/node`; a delivery kept as poison is labelled
//! `account/_poisoned/{key under poisoned/}`. The demo parses each label once, into a
//! [`SubjectKey`], and works with that.

use std::fmt;
use std::str::FromStr;

/// One failed subject, as the pipeline names it. Batch ids cannot hold `/`, so a label splits
/// unambiguously; [`fmt::Display`] gives the label back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SubjectKey {
    /// A job (ended, stuck, or with a scheduling error).
    Job {
        /// The Batch account.
        account: String,
        /// The job.
        job: String,
    },
    /// A task of a job.
    Task {
        /// The Batch account.
        account: String,
        /// The job.
        job: String,
        /// The task.
        task: String,
    },
    /// A node of a job whose preparation task failed there.
    PrepNode {
        /// The Batch account.
        account: String,
        /// The job.
        job: String,
        /// The compute node.
        node: String,
    },
    /// A node of a job whose release task failed there.
    ReleaseNode {
        /// The Batch account.
        account: String,
        /// The job.
        job: String,
        /// The compute node.
        node: String,
    },
    /// A pool in trouble (its resize or autoscale failed, or its deletion is stuck), found by
    /// the pool sweep. It belongs to no job.
    Pool {
        /// The Batch account.
        account: String,
        /// The pool.
        pool: String,
    },
    /// A node in trouble (`unusable`, or its start task failed), found by the pool sweep.
    Node {
        /// The Batch account.
        account: String,
        /// The pool.
        pool: String,
        /// The compute node.
        node: String,
    },
    /// A node of a pool whose start task failed there. It belongs to no job.
    StartTask {
        /// The Batch account.
        account: String,
        /// The pool.
        pool: String,
        /// The compute node.
        node: String,
    },
    /// A delivery that could not be processed, kept under `poisoned/` in the store.
    Delivery {
        /// The Batch account.
        account: String,
        /// Its key under `poisoned/`.
        key: String,
    },
}

/// A label of no shape the pipeline gives a failed subject (its sweep also reports lines such
/// as `account/job (failed tasks)`, which name no single subject).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a subject label")]
pub struct NotASubject(pub String);

impl FromStr for SubjectKey {
    type Err = NotASubject;

    fn from_str(label: &str) -> Result<Self, Self::Err> {
        let owned = |s: &str| s.to_owned();
        let parts: Vec<&str> = label.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(NotASubject(label.to_owned()));
        }
        let key = match parts.as_slice() {
            [account, "_poisoned", key @ ..] if !key.is_empty() => Self::Delivery {
                account: owned(account),
                key: key.join("/"),
            },
            [account, "_pools", pool, node, "_starttask"] => Self::StartTask {
                account: owned(account),
                pool: owned(pool),
                node: owned(node),
            },
            [account, "_pools", pool, node] => Self::Node {
                account: owned(account),
                pool: owned(pool),
                node: owned(node),
            },
            [account, "_pools", pool] => Self::Pool {
                account: owned(account),
                pool: owned(pool),
            },
            [account, job, "_jobprep", node] => Self::PrepNode {
                account: owned(account),
                job: owned(job),
                node: owned(node),
            },
            [account, job, "_jobrelease", node] => Self::ReleaseNode {
                account: owned(account),
                job: owned(job),
                node: owned(node),
            },
            [account, job, task] => Self::Task {
                account: owned(account),
                job: owned(job),
                task: owned(task),
            },
            [account, job] => Self::Job {
                account: owned(account),
                job: owned(job),
            },
            _ => return Err(NotASubject(label.to_owned())),
        };
        Ok(key)
    }
}

impl fmt::Display for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Job { account, job } => write!(f, "{account}/{job}"),
            Self::Task { account, job, task } => write!(f, "{account}/{job}/{task}"),
            Self::PrepNode { account, job, node } => write!(f, "{account}/{job}/_jobprep/{node}"),
            Self::ReleaseNode { account, job, node } => {
                write!(f, "{account}/{job}/_jobrelease/{node}")
            }
            Self::StartTask {
                account,
                pool,
                node,
            } => write!(f, "{account}/_pools/{pool}/{node}/_starttask"),
            Self::Pool { account, pool } => write!(f, "{account}/_pools/{pool}"),
            Self::Node {
                account,
                pool,
                node,
            } => write!(f, "{account}/_pools/{pool}/{node}"),
            Self::Delivery { account, key } => write!(f, "{account}/_poisoned/{key}"),
        }
    }
}

/// What a finding belongs to, for "by job": its job or, for a start task, its pool, each
/// within its account (two accounts may both have a job `etl`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Owner {
    /// A job: account and job id.
    Job(String, String),
    /// A pool (a start task belongs to no job): account and pool id.
    Pool(String, String),
    /// The platform's deliveries (a delivery kept as poison belongs to no job).
    Deliveries,
}

impl fmt::Display for Owner {
    /// `devbatch1/etl`, `pool devbatch1/linux`: Batch ids have no spaces or `/`, so none of
    /// these can be confused.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Job(account, job) => write!(f, "{account}/{job}"),
            Self::Pool(account, pool) => write!(f, "pool {account}/{pool}"),
            Self::Deliveries => f.write_str("deliveries"),
        }
    }
}

impl SubjectKey {
    /// The Batch account the subject belongs to.
    pub fn account(&self) -> &str {
        match self {
            Self::Job { account, .. }
            | Self::Task { account, .. }
            | Self::PrepNode { account, .. }
            | Self::ReleaseNode { account, .. }
            | Self::StartTask { account, .. }
            | Self::Pool { account, .. }
            | Self::Node { account, .. }
            | Self::Delivery { account, .. } => account,
        }
    }

    /// The job the subject belongs to; `None` for a start task.
    pub fn job(&self) -> Option<&str> {
        match self {
            Self::Job { job, .. }
            | Self::Task { job, .. }
            | Self::PrepNode { job, .. }
            | Self::ReleaseNode { job, .. } => Some(job),
            Self::StartTask { .. }
            | Self::Pool { .. }
            | Self::Node { .. }
            | Self::Delivery { .. } => None,
        }
    }

    /// The job, or the pool of a start task.
    pub fn owner(&self) -> Owner {
        match self {
            Self::StartTask { account, pool, .. }
            | Self::Pool { account, pool }
            | Self::Node { account, pool, .. } => Owner::Pool(account.clone(), pool.clone()),
            Self::Delivery { .. } => Owner::Deliveries,
            Self::Job { account, job }
            | Self::Task { account, job, .. }
            | Self::PrepNode { account, job, .. }
            | Self::ReleaseNode { account, job, .. } => Owner::Job(account.clone(), job.clone()),
        }
    }

    /// Whether a diagnosis is about this subject (its class is checked by the caller).
    pub fn matches(&self, diagnosis: &diagnosis::Diagnosis) -> bool {
        let s = &diagnosis.subject;
        if s.job_id.as_deref() != self.job()
            || s.account
                .as_deref()
                .is_some_and(|a| !a.eq_ignore_ascii_case(self.account()))
        {
            return false;
        }
        match self {
            Self::Job { .. } => s.task_id.is_none() && s.node_id.is_none(),
            Self::Task { task, .. } => s.task_id.as_deref() == Some(task),
            Self::PrepNode { node, .. } | Self::ReleaseNode { node, .. } => {
                s.task_id.is_none() && s.node_id.as_deref() == Some(node)
            }
            Self::StartTask { pool, node, .. } | Self::Node { pool, node, .. } => {
                s.task_id.is_none()
                    && s.pool_id.as_deref() == Some(pool)
                    && s.node_id.as_deref() == Some(node)
            }
            Self::Pool { pool, .. } => {
                s.task_id.is_none() && s.node_id.is_none() && s.pool_id.as_deref() == Some(pool)
            }
            Self::Delivery { .. } => {
                s.task_id.is_none() && s.pool_id.is_none() && s.node_id.is_none()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(label: &str) -> SubjectKey {
        label.parse().unwrap()
    }

    #[test]
    fn labels_parse_into_jobs_tasks_nodes_and_start_tasks_and_print_back() {
        for (label, expected) in [
            (
                "devbatch1/etl",
                SubjectKey::Job {
                    account: "devbatch1".into(),
                    job: "etl".into(),
                },
            ),
            (
                "devbatch1/etl/oom",
                SubjectKey::Task {
                    account: "devbatch1".into(),
                    job: "etl".into(),
                    task: "oom".into(),
                },
            ),
            (
                "devbatch1/prep/_jobprep/tvm-02",
                SubjectKey::PrepNode {
                    account: "devbatch1".into(),
                    job: "prep".into(),
                    node: "tvm-02".into(),
                },
            ),
            (
                "devbatch1/prep/_jobrelease/tvm-02",
                SubjectKey::ReleaseNode {
                    account: "devbatch1".into(),
                    job: "prep".into(),
                    node: "tvm-02".into(),
                },
            ),
            (
                "devbatch1/_pools/linux/tvm-05/_starttask",
                SubjectKey::StartTask {
                    account: "devbatch1".into(),
                    pool: "linux".into(),
                    node: "tvm-05".into(),
                },
            ),
            (
                "devbatch1/_pools/quota-pool",
                SubjectKey::Pool {
                    account: "devbatch1".into(),
                    pool: "quota-pool".into(),
                },
            ),
            (
                "devbatch1/_pools/workers/tvm-1",
                SubjectKey::Node {
                    account: "devbatch1".into(),
                    pool: "workers".into(),
                    node: "tvm-1".into(),
                },
            ),
        ] {
            let parsed = key(label);
            assert_eq!(parsed, expected);
            assert_eq!(parsed.to_string(), label, "Display gives the label back");
        }
        let start_task = key("devbatch1/_pools/linux/tvm-05/_starttask");
        assert_eq!(start_task.job(), None);
        assert_eq!(start_task.owner().to_string(), "pool devbatch1/linux");
        assert_eq!(
            key("devbatch1/etl/oom").owner(),
            Owner::Job("devbatch1".into(), "etl".into())
        );
        // The same job id in two accounts is two owners.
        assert_ne!(
            key("devbatch1/etl/oom").owner(),
            key("devbatch2/etl/oom").owner()
        );
        assert_eq!(key("devbatch2/etl/oom").account(), "devbatch2");
        assert_eq!(key("devbatch1/j/_jobrelease/n").job(), Some("j"));
        assert_eq!(
            key("devbatch1/_pools/p").owner().to_string(),
            "pool devbatch1/p"
        );
        assert_eq!(key("devbatch1/_pools/p/n").job(), None);
    }

    #[test]
    fn other_shapes_are_not_subjects() {
        for label in [
            "devbatch1",
            "devbatch1/a/b/c",
            "devbatch1/_pools/linux/tvm-05/x",
            "devbatch1//oom",
            "/etl",
            "due alerts",
            "devbatch1/etl/x/y/z/w",
        ] {
            assert_eq!(
                label.parse::<SubjectKey>(),
                Err(NotASubject(label.to_owned())),
                "{label}"
            );
        }
    }

    fn diagnosis(job: Option<&str>, pool: &str, node: &str) -> diagnosis::Diagnosis {
        let mut d: diagnosis::Diagnosis = serde_json::from_value(serde_json::json!({
            "class": "node.start_task_failed", "severity": "error", "summary": "s",
            "cause": "c", "hints": [], "fingerprint": "f", "logs": [],
            "subject": {"account": "devbatch1"},
        }))
        .unwrap();
        d.subject.job_id = job.map(str::to_owned);
        d.subject.pool_id = Some(pool.to_owned());
        d.subject.node_id = Some(node.to_owned());
        d
    }

    #[test]
    fn a_start_task_diagnosis_matches_its_node_only() {
        let subject = key("devbatch1/_pools/linux/tvm-05/_starttask");
        assert!(subject.matches(&diagnosis(None, "linux", "tvm-05")));
        assert!(!subject.matches(&diagnosis(None, "linux", "tvm-01")));
        assert!(!subject.matches(&diagnosis(None, "windows", "tvm-05")));
        // A job preparation failure on the same node is another subject.
        assert!(!subject.matches(&diagnosis(Some("prep"), "linux", "tvm-05")));
        let prep = key("devbatch1/prep/_jobprep/tvm-05");
        assert!(!prep.matches(&diagnosis(None, "linux", "tvm-05")));
        assert!(prep.matches(&diagnosis(Some("prep"), "linux", "tvm-05")));
        // A node found by the pool sweep matches its node; its pool matches no node.
        assert!(key("devbatch1/_pools/linux/tvm-05").matches(&diagnosis(None, "linux", "tvm-05")));
        assert!(!key("devbatch1/_pools/linux").matches(&diagnosis(None, "linux", "tvm-05")));
        let release = key("devbatch1/prep/_jobrelease/tvm-05");
        assert!(release.matches(&diagnosis(Some("prep"), "linux", "tvm-05")));
        assert!(!release.matches(&diagnosis(Some("other"), "linux", "tvm-05")));
    }
}
