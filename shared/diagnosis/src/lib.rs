//! The pure core of batch-triage: what Azure Batch says, and what it means.
//!
//! **Architecture invariant:** this crate does no I/O and cannot fail at diagnosis time. It reads
//! no clock, no file and no network; [`diagnose_task`], [`diagnose_job`] and friends are total
//! functions (an unrecognised failure becomes a `*.unknown` class, never an error). Parsing a
//! payload can fail, and says where.
//!
//! # Layout
//! - [`wire`]: Batch REST bodies and diagnostic events as typed Rust, parsed leniently.
//! - [`payload`]: detects which payload kind a document is and turns it into [`Item`]s.
//! - [`classes`]: failure classes, severities, exit meanings and the code tables behind them.
//! - [`diagnose`]: facts → [`Diagnosis`]; the exitConditions replay lives here.
//! - [`report`]: the diagnosis JSON (`docs/diagnosis-json.md`).
//! - [`hints`], [`fingerprint`], [`redact`]: advice from command lines and stderr, grouping by
//!   cause, and removing secrets from text.
//! - [`inert`]: control and bidi characters of untrusted text made visible for terminals and
//!   plain-text bodies.
//!
//! ```
//! use batch_triage_diagnosis::{Evidence, diagnose_item, payload::read_slice};
//!
//! let json = br#"{"id": "t1", "url": "https://acct.westeurope.batch.azure.com/jobs/j1/tasks/t1",
//!   "state": "completed", "commandLine": "python train.py",
//!   "executionInfo": {"exitCode": 137, "result": "failure", "retryCount": 0, "requeueCount": 0,
//!     "failureInfo": {"category": "UserError", "code": "FailureExitCode"}}}"#;
//! let mut diagnoses = Vec::new();
//! read_slice(json, &mut |item| diagnoses.extend(diagnose_item(&item, &Evidence::default()))).unwrap();
//! assert_eq!(diagnoses[0].class.as_str(), "task.exit_code");
//! assert_eq!(diagnoses[0].exit_meaning.unwrap().as_str(), "oom_or_sigkill");
//! assert_eq!(diagnoses[0].subject.account.as_deref(), Some("acct"));
//! ```

#![deny(missing_docs)]

pub mod classes;
pub mod diagnose;
pub mod fingerprint;
pub mod hints;
pub mod inert;
pub mod payload;
pub mod policy;
pub mod redact;
pub mod report;
pub mod wire;

pub use classes::{ExitMeaning, FailureClass, Severity};
pub use diagnose::{
    Evidence, diagnose_job, diagnose_node, diagnose_pool, diagnose_pool_event,
    diagnose_prep_release, diagnose_special_task_event, diagnose_task, prep_failed_nodes,
};
pub use payload::{Item, PayloadError, PayloadKind};
pub use report::{Diagnosis, Failure, Impact, Subject};

/// Diagnoses one payload item: at most one diagnosis (succeeded prep/release nodes, healthy pools
/// and nodes, pool events without a failure, node counts, files, error bodies, references and
/// skipped events give none).
pub fn diagnose_item(item: &Item, evidence: &Evidence<'_>) -> Option<Diagnosis> {
    match item {
        Item::Task(task) => Some(diagnose_task(task, evidence)),
        Item::Job(job) => Some(diagnose_job(job, evidence)),
        Item::PrepReleaseStatus(status) => diagnose_prep_release(status, evidence),
        Item::TaskEvent {
            kind,
            body,
            account,
        } => {
            let task = wire::task_from_event(*kind, body);
            let evidence = Evidence {
                account: evidence.account.or(account.as_deref()),
                job_id: body.job_id.as_deref().or(evidence.job_id),
                ..*evidence
            };
            Some(diagnose_task(&task, &evidence))
        }
        Item::SpecialTaskEvent { body, account } => {
            let evidence = Evidence {
                account: evidence.account.or(account.as_deref()),
                ..*evidence
            };
            diagnose_special_task_event(body, &evidence)
        }
        // A pool may have several problems at once; the most urgent stands for it here, and
        // `diagnose_pool` gives them all.
        Item::Pool(pool) => diagnose_pool(pool, evidence).into_iter().next(),
        Item::Node(node) => diagnose_node(node, evidence),
        Item::PoolEvent {
            kind,
            body,
            account,
        } => {
            let evidence = Evidence {
                account: evidence.account.or(account.as_deref()),
                ..*evidence
            };
            diagnose_pool_event(*kind, body, &evidence)
        }
        Item::PoolNodeCounts(_) => None,
        Item::TaskReference(_)
        | Item::File(_)
        | Item::TaskCounts(_)
        | Item::Error(_)
        | Item::Skipped { .. } => None,
    }
}
