//! The pipeline (ARCHITECTURE.md, "Bird's-eye view"): a trigger payload becomes subjects; each
//! subject is re-read from the configured Batch account (an event is a hint, never the truth, and may be forged), diagnosed,
//! planned with the policy, and executed: logs preserved, alerts grouped and delivered, job
//! actions applied. Every effect is idempotent (see the modules it calls), so a duplicate or
//! redelivered payload changes nothing.
//!
//! One module per job: the reports (`report`), reading subjects from payloads (`targets`),
//! working one subject, whatever its kind (`subject`: the one preserve → sharpen → plan → act
//! sequence), grouping and delivering alerts (`alert`), resolved messages for failure states that
//! ended (`resolve`; pools and nodes, told from the pool sweep, in `resolve_pools`), the
//! per-payload job cache (`jobs`), refusing, once, subjects whose ids can never be read from
//! Batch (`refuse`), and pools and nodes with the node agent's logs and node actions (`pools`).

mod accounts;
mod alert;
mod escalate;
mod jobs;
mod pools;
mod refuse;
mod report;
mod resolve;
mod resolve_pools;
mod subject;
mod targets;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use artifact_store::ArtifactStore;
use batch_client::{BatchApi, BatchError, Deadline, GetOptions};
use diagnosis::policy::Policy;
use diagnosis::redact::Redactor;
use diagnosis::{
    Diagnosis, Evidence, diagnose_job, diagnose_prep_release, diagnose_task, prep_failed_nodes,
};
use futures::StreamExt;
use notify::{Egress, Outbox, Receiver};
use preserve::PreserveOptions;
use time::OffsetDateTime;

use crate::actions::JobActions;
use crate::grouping::GroupStore;
use crate::node_actions::NodeActions;
use crate::silences::{SILENCE_CACHE_TTL, SilenceCache, SilenceStore};

pub use accounts::AccountError;
pub(crate) use alert::Worked;
pub(crate) use jobs::JobCache;
pub(crate) use refuse::StoredIds;
pub(crate) use report::batch_failure;
pub use report::{Outcome, RunReport, SubjectReport, TriageError};
pub use resolve::{Resolvable, job_tasks_ended, stuck_job_ended};
pub use resolve_pools::{NODE_RECOVERY_SELECT, PoolNow, PoolsSeen, node_ended, pool_ended};

/// What the pipeline needs besides its collaborators.
#[derive(Debug, Clone)]
pub struct TriageConfig {
    /// The configured Batch account's name (lower case). Payloads naming another account are
    /// refused: nothing is fetched for them.
    pub account: String,
    /// How logs are copied.
    pub preserve: PreserveOptions,
    /// The longest any single Batch call of a job action may take.
    pub action_call_timeout: Duration,
}

/// One pipeline over one account, built once per process and shared by invocations.
pub struct Triage {
    pub(crate) config: TriageConfig,
    pub(crate) batch: Arc<dyn BatchApi>,
    pub(crate) store: Arc<dyn ArtifactStore>,
    policy: Arc<Policy>,
    /// The policy with the store's silences, re-read at most every [`SILENCE_CACHE_TTL`].
    silences: SilenceCache,
    receivers: BTreeMap<String, Receiver>,
    egress: Egress,
    groups: GroupStore,
    actions: JobActions,
    node_actions: NodeActions,
    /// The user-assigned identity (resource id) Batch uploads node agent logs as, for a store
    /// signed in with Entra ID (see [`Triage::with_agent_logs_identity`]).
    agent_logs_identity: Option<String>,
    outbox: Outbox,
    /// Subjects worked on at once: bounds the concurrent calls to Batch, the store and the
    /// receivers that one payload or one sweep makes.
    pub(crate) subject_concurrency: usize,
    /// Removes the configured secrets (and every shape of secret) from diagnoses and stderr
    /// tails before they are stored, alerted or reported.
    redactor: Redactor,
    /// The deployment's other accounts (none when it watches one): a pipeline each, sharing this
    /// one's store, policy, receivers and egress. Payloads are routed to them by the account
    /// they name, and the timer sweeps every one (`triage/accounts.rs`).
    others: Vec<Triage>,
    /// Where this account's sweep state lives in the store: `None` keeps the single-account
    /// keys (`sweep/cursor.json`), `Some(account)` puts them under `sweep/accounts/{account}/`.
    pub(crate) sweep_namespace: Option<String>,
    /// Where Event Grid writes the events it gave up on (`BATCH_TRIAGE_DEAD_LETTER_STORE`), if
    /// configured: each tick moves them into the parking area (`crate::parking`).
    pub(crate) dead_letters: Option<Arc<dyn ArtifactStore>>,
}

/// Subjects a payload or a sweep works on at once unless [`Triage::with_subject_concurrency`]
/// says otherwise: enough to overlap Batch and Blob round trips, few enough to stay far below
/// Batch's throttling limits and to keep memory bounded (each copy holds a few blocks).
pub const DEFAULT_SUBJECT_CONCURRENCY: usize = 8;

impl std::fmt::Debug for Triage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Receivers hold secrets; only their names are shown.
        f.debug_struct("Triage")
            .field("account", &self.config.account)
            .field(
                "other_accounts",
                &self
                    .others
                    .iter()
                    .map(|o| &o.config.account)
                    .collect::<Vec<_>>(),
            )
            .field("store", &self.store)
            .field("receivers", &self.receivers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Triage {
    /// A pipeline over `batch` (the configured account), `store` (logs and state) and `policy`.
    /// `receivers` are the policy's receivers resolved with their secrets.
    pub fn new(
        config: TriageConfig,
        batch: Arc<dyn BatchApi>,
        store: Arc<dyn ArtifactStore>,
        policy: Arc<Policy>,
        receivers: BTreeMap<String, Receiver>,
        egress: Egress,
    ) -> Self {
        let actions = JobActions::new(store.clone(), batch.clone(), config.action_call_timeout);
        let node_actions =
            NodeActions::new(store.clone(), batch.clone(), config.action_call_timeout);
        Self {
            groups: GroupStore::new(store.clone()),
            silences: SilenceCache::new(
                SilenceStore::new(store.clone()),
                policy.clone(),
                SILENCE_CACHE_TTL,
            ),
            outbox: Outbox::new(store.clone()),
            config: TriageConfig {
                account: config.account.to_ascii_lowercase(),
                ..config
            },
            batch,
            store,
            policy,
            receivers,
            egress,
            actions,
            node_actions,
            agent_logs_identity: None,
            subject_concurrency: DEFAULT_SUBJECT_CONCURRENCY,
            redactor: Redactor::default(),
            others: Vec::new(),
            sweep_namespace: None,
            dead_letters: None,
        }
    }

    /// Drains Event Grid's dead-letter container (a store opened on it) on every tick.
    pub fn with_dead_letter_store(mut self, dead_letters: Arc<dyn ArtifactStore>) -> Self {
        self.dead_letters = Some(dead_letters);
        self
    }

    /// Redacts the exact values of the secrets this process was configured with (see
    /// [`crate::settings::Settings::redactor`]) from everything it stores or sends, on top of the
    /// shapes of secrets that are always redacted.
    pub fn with_redactor(mut self, redactor: Redactor) -> Self {
        for other in &mut self.others {
            other.redactor = redactor.clone();
        }
        self.redactor = redactor;
        self
    }

    /// The policy to plan with at `now`: the policy's silences and the store's (read at most
    /// once per [`SILENCE_CACHE_TTL`], so one added at the CLI mutes every instance soon).
    pub(super) async fn planning_policy(&self, now: OffsetDateTime) -> Arc<Policy> {
        self.silences.policy(now).await
    }

    /// A diagnosis as it may be stored or sent.
    pub(super) fn redacted(&self, mut diagnosis: Diagnosis) -> Diagnosis {
        self.redactor.redact_diagnosis(&mut diagnosis);
        diagnosis
    }

    /// A stderr tail as it may be stored or sent.
    pub(super) fn redacted_tail(&self, tail: &str) -> String {
        self.redactor.redact(tail)
    }

    /// Batch uploads node agent logs as this user-assigned identity (its ARM resource id),
    /// given as `identityReference`, when the store signs in with Entra ID and so cannot sign
    /// a SAS for Batch (`docs/preserved-layout.md`).
    pub fn with_agent_logs_identity(mut self, resource_id: Option<String>) -> Self {
        self.agent_logs_identity = resource_id.filter(|id| !id.trim().is_empty());
        for other in &mut self.others {
            other.agent_logs_identity = self.agent_logs_identity.clone();
        }
        self
    }

    /// The store this pipeline keeps logs and state in (what a report reads).
    pub fn store(&self) -> Arc<dyn ArtifactStore> {
        self.store.clone()
    }

    /// Re-reads the store's silences at most every `ttl` (default [`SILENCE_CACHE_TTL`]; a test
    /// that adds a silence between two payloads takes zero).
    pub fn with_silence_cache_ttl(mut self, ttl: Duration) -> Self {
        self.silences = SilenceCache::new(self.silences.store().clone(), self.policy.clone(), ttl);
        for other in &mut self.others {
            other.silences =
                SilenceCache::new(other.silences.store().clone(), other.policy.clone(), ttl);
        }
        self
    }

    /// Works on at most `n` subjects at once (at least one).
    pub fn with_subject_concurrency(mut self, n: usize) -> Self {
        self.subject_concurrency = n.max(1);
        for other in &mut self.others {
            other.subject_concurrency = n.max(1);
        }
        self
    }

    /// Triages one trigger payload (an Event Hubs body, an Event Grid event, a CloudEvent, REST
    /// JSON). Distinct subjects are processed once each.
    pub async fn handle_payload(
        &self,
        payload: &[u8],
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> Result<RunReport, TriageError> {
        let mut targets = Vec::new();
        let ignored = self.read_targets(payload, &mut targets)?;
        Ok(self.process_targets(targets, ignored, now, deadline).await)
    }

    /// Triages the payloads of one invocation together (an Event Hubs batch: one body per
    /// event), so their distinct subjects are worked concurrently and share job reads. An
    /// unreadable payload is left out and returned with its index and error; the others are
    /// triaged.
    pub async fn handle_payloads<P: AsRef<[u8]>>(
        &self,
        payloads: &[P],
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> (RunReport, Vec<(usize, TriageError)>) {
        let mut targets = Vec::new();
        let mut ignored = 0;
        let mut unreadable = Vec::new();
        for (index, payload) in payloads.iter().enumerate() {
            // A payload counts whole or not at all: items read before its error are dropped.
            let mut these = Vec::new();
            match self.read_targets(payload.as_ref(), &mut these) {
                Ok(n) => {
                    ignored += n;
                    targets.append(&mut these);
                }
                Err(error) => unreadable.push((index, error)),
            }
        }
        let report = self.process_targets(targets, ignored, now, deadline).await;
        (report, unreadable)
    }

    async fn process_targets(
        &self,
        targets: Vec<targets::Routed>,
        ignored: usize,
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> RunReport {
        let mut report = RunReport {
            ignored_items: ignored,
            ..RunReport::default()
        };
        // Distinct subjects, in payload order; refusals keep their place.
        let mut seen = std::collections::HashSet::new();
        let targets: Vec<_> = targets
            .into_iter()
            .filter(|target| match target {
                Ok(target) => seen.insert(target.clone()),
                Err(_) => true,
            })
            .collect();
        // One job cache per account: job ids are unique only within an account.
        let accounts = self.accounts();
        let caches: Vec<JobCache> = accounts.iter().map(|_| JobCache::default()).collect();
        let (accounts, caches) = (&accounts, &caches);
        let mut processed = futures::stream::iter(targets)
            .map(|target| async move {
                match target {
                    Ok((account, target)) => {
                        accounts[account]
                            .process(&target, &caches[account], now, deadline)
                            .await
                    }
                    Err((subject, outcome)) => {
                        let mut refused = SubjectReport::new(subject);
                        refused.outcome = outcome;
                        vec![refused.into()]
                    }
                }
            })
            .buffered(self.subject_concurrency);
        let mut worked = Vec::new();
        while let Some(subjects) = processed.next().await {
            worked.extend(subjects);
        }
        // A payload's subjects are few (an Event Hubs batch holds at most a few hundred events),
        // so their alerts are grouped together once all of them were worked.
        report.subjects = self.alert(worked, now, deadline).await;
        report
    }

    /// Diagnoses a job or task on demand, with no effects (the HTTP `Diagnose` function).
    pub async fn diagnose(
        &self,
        job_id: &str,
        task_id: Option<&str>,
        deadline: Deadline,
    ) -> Result<Vec<Diagnosis>, BatchError> {
        let jobs = JobCache::default();
        let job = jobs.get(self.batch.as_ref(), job_id, deadline).await?;
        let statuses = self.prep_statuses(job_id, deadline).await?;
        let failed_nodes = prep_failed_nodes(&statuses);
        let evidence = Evidence {
            account: Some(&self.config.account),
            job: job.as_ref(),
            job_id: Some(job_id),
            prep_failed_nodes: &failed_nodes,
            ..Evidence::default()
        };
        match task_id {
            Some(task_id) => {
                let task = self
                    .batch
                    .get_task(job_id, task_id, &GetOptions::default(), deadline)
                    .await?;
                Ok(vec![self.redacted(diagnose_task(&task, &evidence))])
            }
            None => {
                let mut out: Vec<Diagnosis> =
                    job.iter().map(|j| diagnose_job(j, &evidence)).collect();
                out.extend(
                    statuses
                        .iter()
                        .filter_map(|s| diagnose_prep_release(s, &evidence)),
                );
                Ok(out.into_iter().map(|d| self.redacted(d)).collect())
            }
        }
    }
}
