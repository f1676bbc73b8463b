//! The pipeline (ARCHITECTURE.md's bird's-eye view): a trigger payload becomes subjects; each subject is re-read from the
//! configured Batch account (an event is a hint, never the truth, and may be forged), diagnosed,
//! planned with the policy, and executed: logs preserved, alerts grouped and delivered, job
//! actions applied. Every effect is idempotent (see the modules it calls), so a duplicate or
//! redelivered payload changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use artifact_store::ArtifactStore;
use batch_client::{BatchApi, BatchError, Deadline, GetOptions, ListOptions, items};
use diagnosis::payload::{PayloadError, read_slice};
use diagnosis::policy::{Plan, PlanContext, Policy, plan};
use diagnosis::redact::Redactor;
use diagnosis::wire::{BatchJob, BatchTask, PrepReleaseStatus, TaskState};
use diagnosis::{
    Diagnosis, Evidence, FailureClass, Item, diagnose_job, diagnose_prep_release, diagnose_task,
    prep_failed_nodes,
};
use futures::{StreamExt, TryStreamExt};
use notify::{Alert, AlertState, Egress, Group, Links, Outbox, Receiver};
use preserve::{
    JobRef, NodeRef, PreserveOptions, preserve_prep_release, preserve_start_task, preserve_task,
};
use time::OffsetDateTime;

use crate::actions::{ActionRequest, JobActions};
use crate::grouping::{AlertToSend, GroupStore};

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
    receivers: BTreeMap<String, Receiver>,
    egress: Egress,
    groups: GroupStore,
    actions: JobActions,
    outbox: Outbox,
    /// Subjects worked on at once: bounds the concurrent calls to Batch, the store and the
    /// receivers that one payload or one sweep makes.
    pub(crate) subject_concurrency: usize,
    /// Removes the configured secrets (and every shape of secret) from diagnoses and stderr
    /// tails before they are stored, alerted or reported.
    redactor: Redactor,
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
            .field("store", &self.store)
            .field("receivers", &self.receivers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// What became of one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Diagnosed, and the planned effects ran (or were already done).
    Done,
    /// Not processed on purpose (a pool event, a task that no longer exists).
    Skipped(String),
    /// Refused: the payload named an account or URL that is not configured.
    Refused(String),
    /// Failed; `retryable` says whether running the payload again may succeed.
    Failed {
        /// What went wrong (no secrets).
        reason: String,
        /// Whether a retry may succeed (throttling, a network error, a store race).
        retryable: bool,
    },
}

/// The report of one subject.
#[derive(Debug, Clone)]
pub struct SubjectReport {
    /// `account/job[/task]`, `account/job/_jobprep/node`, `account/job/_jobrelease/node` or
    /// `account/_pools/pool/node/_starttask`.
    pub subject: String,
    /// The diagnosis's class, when it got that far.
    pub class: Option<FailureClass>,
    /// Where the logs went (a store link or key prefix).
    pub preserved: Vec<String>,
    /// True when every preserved folder was already complete: a duplicate.
    pub already_preserved: bool,
    /// Receivers an alert was delivered to now.
    pub notified: Vec<String>,
    /// Receivers whose alert failed and went to the outbox.
    pub outboxed: Vec<String>,
    /// Alerts waiting for their group (`group_wait`); the sweep sends them.
    pub waiting: usize,
    /// The job action decision, when a rule asked for one.
    pub action: Option<String>,
    /// What happened.
    pub outcome: Outcome,
}

impl SubjectReport {
    /// Records a folder's preservation: where it went, whether it was a duplicate, and a retry
    /// when a file was left unfinished. Returns the stderr tail that sharpens the diagnosis.
    fn record_preserved(&mut self, preserved: preserve::PreserveReport) -> Option<String> {
        self.already_preserved = preserved.already_preserved;
        self.preserved
            .push(preserved.link.clone().unwrap_or(preserved.prefix.clone()));
        if !preserved.complete {
            self.outcome = incomplete_copy(&preserved);
        }
        preserved.stderr_tail
    }

    /// A report for `subject` with nothing done yet (outcome `Done`, no effects).
    pub fn new(subject: String) -> Self {
        Self {
            subject,
            class: None,
            preserved: Vec::new(),
            already_preserved: false,
            notified: Vec::new(),
            outboxed: Vec::new(),
            waiting: 0,
            action: None,
            outcome: Outcome::Done,
        }
    }
}

/// An alert a subject asks for. It is folded into its group together with the alerts of the
/// other subjects of the same payload or sweep page ([`Triage::alert`]), so a burst of failures
/// costs one group write per group, not one per failure.
pub(crate) struct PendingAlert {
    diagnosis: Diagnosis,
    plan: Plan,
    tail: Option<String>,
    links: Vec<String>,
}

/// A subject worked on: its report, and its alert still to group and deliver.
pub(crate) struct Worked {
    pub(crate) report: SubjectReport,
    alert: Option<PendingAlert>,
}

impl From<SubjectReport> for Worked {
    fn from(report: SubjectReport) -> Self {
        Worked {
            report,
            alert: None,
        }
    }
}

/// The report of one payload.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// One entry per distinct subject, in payload order.
    pub subjects: Vec<SubjectReport>,
    /// Items that are about nothing to triage (pool events, file entries, error bodies).
    pub ignored_items: usize,
}

impl RunReport {
    /// Whether the platform should deliver the payload again: some subject failed in a way a
    /// retry may fix. Everything already done is idempotent, so a retry repeats nothing.
    pub fn should_retry(&self) -> bool {
        self.subjects.iter().any(|s| {
            matches!(
                s.outcome,
                Outcome::Failed {
                    retryable: true,
                    ..
                }
            )
        })
    }
}

/// A payload that cannot be triaged at all.
#[derive(Debug, thiserror::Error)]
pub enum TriageError {
    /// The payload is not readable: a poison message, to log and acknowledge, never to retry.
    #[error("unreadable payload: {0}")]
    Payload(#[from] PayloadError),
}

/// What a payload item asks the pipeline to look at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Target {
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
}

/// The event of a [`Target::StartTask`]. Two events about one node are the same subject, so
/// equality and ordering ignore the body.
#[derive(Debug, Clone)]
struct StartTaskEvent(Arc<diagnosis::wire::SpecialTaskEventBody>);

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
        Self {
            groups: GroupStore::new(store.clone()),
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
            subject_concurrency: DEFAULT_SUBJECT_CONCURRENCY,
            redactor: Redactor::default(),
        }
    }

    /// Redacts the exact values of the secrets this process was configured with (see
    /// [`crate::settings::Settings::redactor`]) from everything it stores or sends, on top of the
    /// shapes of secrets that are always redacted.
    pub fn with_redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }

    /// A diagnosis as it may be stored or sent.
    fn redacted(&self, mut diagnosis: Diagnosis) -> Diagnosis {
        self.redactor.redact_diagnosis(&mut diagnosis);
        diagnosis
    }

    /// Works on at most `n` subjects at once (at least one).
    pub fn with_subject_concurrency(mut self, n: usize) -> Self {
        self.subject_concurrency = n.max(1);
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
    /// unreadable payload is left out and returned with its error; the others are triaged.
    pub async fn handle_payloads<P: AsRef<[u8]>>(
        &self,
        payloads: &[P],
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> (RunReport, Vec<TriageError>) {
        let mut targets = Vec::new();
        let mut ignored = 0;
        let mut unreadable = Vec::new();
        for payload in payloads {
            // A payload counts whole or not at all: items read before its error are dropped.
            let mut these = Vec::new();
            match self.read_targets(payload.as_ref(), &mut these) {
                Ok(n) => {
                    ignored += n;
                    targets.append(&mut these);
                }
                Err(error) => unreadable.push(error),
            }
        }
        let report = self.process_targets(targets, ignored, now, deadline).await;
        (report, unreadable)
    }

    /// Reads a payload's items into targets; returns how many items were about nothing to
    /// triage.
    fn read_targets(
        &self,
        payload: &[u8],
        targets: &mut Vec<Result<Target, (String, Outcome)>>,
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

    async fn process_targets(
        &self,
        targets: Vec<Result<Target, (String, Outcome)>>,
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
        let jobs = JobCache::default();
        let jobs = &jobs;
        let mut processed = futures::stream::iter(targets)
            .map(|target| async move {
                match target {
                    Ok(target) => self.process(&target, jobs, now, deadline).await,
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

    /// Sends the alerts whose group has waited long enough (`group_wait`): the timer's job.
    pub async fn flush_due(
        &self,
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> Result<Vec<String>, crate::grouping::GroupError> {
        let due = self.groups.due(now).await?;
        let mut report = SubjectReport::new("due alerts".to_owned());
        for alert in due {
            self.deliver(&alert, None, &[], &mut report, deadline).await;
        }
        Ok(report.notified)
    }

    /// Retries the alerts whose delivery failed earlier (kept in the outbox): the timer's job too.
    pub async fn drain_outbox(
        &self,
        deadline: Deadline,
    ) -> Result<notify::DrainReport, notify::NotifyError> {
        let receivers: Vec<Receiver> = self.receivers.values().cloned().collect();
        self.outbox.drain(&self.egress, &receivers, deadline).await
    }

    /// Maps an item to what to look at, refusing other accounts. `None` for items that are
    /// about nothing to triage.
    fn target_of(&self, item: &Item) -> Option<Result<Target, (String, Outcome)>> {
        let (account, target) = match item {
            Item::Task(task) => {
                let url = task.url.as_deref();
                let job = url.and_then(diagnosis::diagnose::job_id_from_url)?;
                (
                    url.and_then(diagnosis::wire::account_from_url),
                    Target::Task {
                        job,
                        task: task.id.clone()?,
                    },
                )
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
                if let Some(url) = &reference.account_url
                    && let Err(error) = self.batch.check_url(url)
                {
                    // The URL is untrusted text: no query string (it could carry a SAS) is echoed.
                    let shown = diagnosis::redact::strip_query(url);
                    return Some(Err((
                        format!("{shown}/{}", reference.job_id),
                        Outcome::Refused(error.to_string()),
                    )));
                }
                let target = match &reference.task_id {
                    Some(task) => Target::Task {
                        job: reference.job_id.clone(),
                        task: task.clone(),
                    },
                    None => Target::Job {
                        job: reference.job_id.clone(),
                    },
                };
                (None, target)
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
            Item::Job(job) => (
                job.url
                    .as_deref()
                    .and_then(diagnosis::wire::account_from_url),
                Target::Job {
                    job: job.id.clone()?,
                },
            ),
            Item::PrepReleaseStatus(_)
            | Item::File(_)
            | Item::TaskCounts(_)
            | Item::Error(_)
            | Item::Skipped { .. } => return None,
        };
        match account {
            Some(account) if !account.eq_ignore_ascii_case(&self.config.account) => Some(Err((
                format!("{account}/{}", target_label(&target)),
                Outcome::Refused(format!(
                    "account {account:?} is not the configured account; nothing was fetched"
                )),
            ))),
            _ => Some(Ok(target)),
        }
    }

    async fn process(
        &self,
        target: &Target,
        jobs: &JobCache,
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> Vec<Worked> {
        let label = format!("{}/{}", self.config.account, target_label(target));
        let result = match target {
            Target::Task { job, task } => self
                .process_task(job, task, jobs, now, deadline)
                .await
                .map(|r| vec![r]),
            Target::Job { job } => self.process_job(job, jobs, now, None, deadline).await,
            Target::StartTask { pool, node, event } => self
                .process_start_task(pool, node, &event.0, now, deadline)
                .await
                .map(|r| vec![r]),
        };
        result.unwrap_or_else(|outcome| {
            let mut report = SubjectReport::new(label);
            report.outcome = outcome;
            vec![report.into()]
        })
    }

    async fn process_task(
        &self,
        job_id: &str,
        task_id: &str,
        jobs: &JobCache,
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> Result<Worked, Outcome> {
        let task: BatchTask = match self
            .batch
            .get_task(job_id, task_id, &GetOptions::default(), deadline)
            .await
        {
            Ok(task) => task,
            Err(error) if error.is_not_found() => {
                return Err(Outcome::Skipped(format!(
                    "task {job_id}/{task_id} no longer exists"
                )));
            }
            Err(error) => return Err(batch_failure(&error)),
        };
        self.triage_task(job_id, task, jobs, now, deadline).await
    }

    /// Diagnoses and executes one task already read from Batch (by a GET, or by the sweep's
    /// filtered list).
    pub(crate) async fn triage_task(
        &self,
        job_id: &str,
        task: BatchTask,
        jobs: &JobCache,
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> Result<Worked, Outcome> {
        let task_id = task.id.clone().unwrap_or_default();
        let job = jobs
            .get(self.batch.as_ref(), job_id, deadline)
            .await
            .map_err(|e| batch_failure(&e))?;
        let waiting = matches!(task.state, Some(TaskState::Active | TaskState::Preparing));
        let statuses = if waiting {
            self.prep_statuses(job_id, deadline)
                .await
                .map_err(|e| batch_failure(&e))?
        } else {
            Vec::new()
        };
        let failed_nodes = prep_failed_nodes(&statuses);
        let evidence = Evidence {
            account: Some(&self.config.account),
            job: job.as_ref(),
            job_id: Some(job_id),
            prep_failed_nodes: &failed_nodes,
            ..Evidence::default()
        };
        let first = self.redacted(diagnose_task(&task, &evidence));
        let mut report = SubjectReport::new(format!("{}/{job_id}/{task_id}", self.config.account));
        report.class = Some(first.class);
        if !first.class.is_failure() {
            return Ok(report.into());
        }
        // Preserve first: the stderr tail sharpens the hints, the fingerprint and stderr rules.
        let first_plan = plan(&first, &self.policy, now, &PlanContext::default());
        let mut tail = None;
        if first_plan.preserve_logs {
            let options = PreserveOptions {
                extra_globs: first_plan.preserve.iter().map(|g| g.glob.clone()).collect(),
                ..self.config.preserve.clone()
            };
            match preserve_task(
                self.batch.as_ref(),
                self.store.as_ref(),
                &first,
                &options,
                deadline,
            )
            .await
            {
                Ok(preserved) => {
                    tail = report
                        .record_preserved(preserved)
                        .map(|t| self.redactor.redact(&t))
                }
                Err(error) => {
                    report.outcome = Outcome::Failed {
                        reason: format!("preserving logs: {error}"),
                        retryable: true,
                    };
                }
            }
        }
        let diagnosis = match &tail {
            Some(tail) => {
                let mut sharper = diagnose_task(
                    &task,
                    &Evidence {
                        stderr_tail: Some(tail),
                        ..evidence
                    },
                );
                // The tail exists only in the run that copied the logs; a redelivery finds them
                // already preserved and has none. Grouping must see the same fingerprint on every
                // delivery, so it is the one computed without the tail; the tail still sharpens
                // the hints and the alert.
                sharper.fingerprint = first.fingerprint.clone();
                sharper
            }
            None => first,
        };
        let plan = plan(
            &diagnosis,
            &self.policy,
            now,
            &PlanContext {
                stderr_tail: tail.as_deref(),
                ..PlanContext::default()
            },
        );
        let links = report.preserved.clone();
        Ok(self.act(diagnosis, plan, tail, links, now, report).await)
    }

    pub(crate) async fn process_job(
        &self,
        job_id: &str,
        jobs: &JobCache,
        now: OffsetDateTime,
        stuck_after: Option<Duration>,
        deadline: Deadline,
    ) -> Result<Vec<Worked>, Outcome> {
        let Some(job) = jobs
            .get(self.batch.as_ref(), job_id, deadline)
            .await
            .map_err(|e| batch_failure(&e))?
        else {
            return Err(Outcome::Skipped(format!("job {job_id} no longer exists")));
        };
        let statuses = self
            .prep_statuses(job_id, deadline)
            .await
            .map_err(|e| batch_failure(&e))?;
        let failed_nodes = prep_failed_nodes(&statuses);
        let counts = self
            .batch
            .get_task_counts(job_id, deadline)
            .await
            .ok()
            .map(|c| c.task_counts);
        let evidence = Evidence {
            account: Some(&self.config.account),
            job: Some(&job),
            job_id: Some(job_id),
            prep_failed_nodes: &failed_nodes,
            task_counts: counts,
            now: Some(diagnosis::wire::Timestamp(now)),
            stuck_after,
            ..Evidence::default()
        };
        let mut reports = Vec::new();
        let diagnosis = diagnose_job(&job, &evidence);
        let mut report = SubjectReport::new(format!("{}/{job_id}", self.config.account));
        report.class = Some(diagnosis.class);
        if diagnosis.class.is_failure() {
            let plan = plan(&diagnosis, &self.policy, now, &PlanContext::default());
            reports.push(
                self.act(diagnosis, plan, None, Vec::new(), now, report)
                    .await,
            );
        } else {
            reports.push(report.into());
        }
        for status in &statuses {
            let Some(node_diagnosis) = diagnose_prep_release(status, &evidence) else {
                continue;
            };
            let node_diagnosis = self.redacted(node_diagnosis);
            let node = status.node_id.clone().unwrap_or_default();
            // The label names the folder the logs go to (docs/preserved-layout.md): a release
            // task's output is under `_jobrelease/`, not `_jobprep/`.
            let folder = if node_diagnosis.class == FailureClass::JobReleaseFailed {
                "_jobrelease"
            } else {
                "_jobprep"
            };
            let mut report =
                SubjectReport::new(format!("{}/{job_id}/{folder}/{node}", self.config.account));
            report.class = Some(node_diagnosis.class);
            let plan = plan(&node_diagnosis, &self.policy, now, &PlanContext::default());
            if plan.preserve_logs {
                let job_ref = JobRef {
                    account: &self.config.account,
                    job_id,
                };
                match preserve_prep_release(
                    self.batch.as_ref(),
                    self.store.as_ref(),
                    job_ref,
                    status,
                    Some(&node_diagnosis),
                    &self.config.preserve,
                    deadline,
                )
                .await
                {
                    Ok(preserved) => {
                        report.already_preserved =
                            !preserved.is_empty() && preserved.iter().all(|p| p.already_preserved);
                        report.preserved.extend(
                            preserved
                                .iter()
                                .map(|p| p.link.clone().unwrap_or(p.prefix.clone())),
                        );
                        if let Some(incomplete) = preserved.iter().find(|p| !p.complete) {
                            report.outcome = incomplete_copy(incomplete);
                        }
                    }
                    Err(error) => {
                        report.outcome = Outcome::Failed {
                            reason: format!("preserving prep/release logs: {error}"),
                            retryable: true,
                        }
                    }
                }
            }
            let links = report.preserved.clone();
            reports.push(
                self.act(node_diagnosis, plan, None, links, now, report)
                    .await,
            );
        }
        Ok(reports)
    }

    /// A pool's start task failed on a node: diagnose from the event, preserve what the node
    /// still holds under `startup/`, and alert. There is no job to act on.
    async fn process_start_task(
        &self,
        pool_id: &str,
        node_id: &str,
        event: &diagnosis::wire::SpecialTaskEventBody,
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> Result<Worked, Outcome> {
        let evidence = Evidence {
            account: Some(&self.config.account),
            ..Evidence::default()
        };
        let Some(diagnosis) = diagnosis::diagnose_special_task_event(event, &evidence) else {
            return Err(Outcome::Skipped(format!(
                "the start task on {pool_id}/{node_id} did not fail"
            )));
        };
        let diagnosis = self.redacted(diagnosis);
        let mut report = SubjectReport::new(format!(
            "{}/_pools/{pool_id}/{node_id}/_starttask",
            self.config.account
        ));
        report.class = Some(diagnosis.class);
        let plan = plan(&diagnosis, &self.policy, now, &PlanContext::default());
        let mut tail = None;
        if plan.preserve_logs {
            let node = NodeRef {
                account: &self.config.account,
                pool_id,
                node_id,
            };
            match preserve_start_task(
                self.batch.as_ref(),
                self.store.as_ref(),
                node,
                Some(&diagnosis),
                &self.config.preserve,
                deadline,
            )
            .await
            {
                Ok(preserved) => {
                    tail = report
                        .record_preserved(preserved)
                        .map(|t| self.redactor.redact(&t))
                }
                Err(error) => {
                    report.outcome = Outcome::Failed {
                        reason: format!("preserving start task logs: {error}"),
                        retryable: true,
                    };
                }
            }
        }
        // As for tasks: the stderr tail sharpens the hints, but grouping keeps the fingerprint
        // computed without it, which every redelivery computes the same.
        let diagnosis = match tail.as_deref().and_then(|tail| {
            diagnosis::diagnose_special_task_event(
                event,
                &Evidence {
                    stderr_tail: Some(tail),
                    ..evidence
                },
            )
        }) {
            Some(mut sharper) => {
                sharper.fingerprint = diagnosis.fingerprint.clone();
                sharper
            }
            None => diagnosis,
        };
        let links = report.preserved.clone();
        Ok(self.act(diagnosis, plan, tail, links, now, report).await)
    }

    async fn prep_statuses(
        &self,
        job_id: &str,
        deadline: Deadline,
    ) -> Result<Vec<PrepReleaseStatus>, BatchError> {
        items(
            self.batch
                .list_prep_release_status(job_id, &ListOptions::default(), deadline),
        )
        .try_collect()
        .await
    }

    /// The job action a diagnosis asks for, now; its alert is returned to be grouped with the
    /// other subjects' ([`Triage::alert`]). A failed action is recorded in `report` and does not
    /// stop the alert: one failing effect must not hide another.
    async fn act(
        &self,
        diagnosis: Diagnosis,
        plan: Plan,
        tail: Option<String>,
        links: Vec<String>,
        now: OffsetDateTime,
        mut report: SubjectReport,
    ) -> Worked {
        // Whatever path led here, what is alerted carries no configured secret.
        let diagnosis = self.redacted(diagnosis);
        let tail = tail.map(|t| self.redactor.redact(&t));
        if let Some(action) = &plan.action {
            let request = ActionRequest {
                diagnosis: &diagnosis,
                policy: &self.policy,
                plan: action,
                failed_with_class: None,
            };
            match self.actions.execute(request, now).await {
                Ok(record) => {
                    report.action = Some(format!("{:?}: {}", record.decision, record.reason))
                }
                Err(error) => {
                    report.outcome = Outcome::Failed {
                        reason: format!("job action: {error}"),
                        retryable: true,
                    }
                }
            }
        }
        let alert = (!plan.receivers.is_empty()).then_some(PendingAlert {
            diagnosis,
            plan,
            tail,
            links,
        });
        Worked { report, alert }
    }

    /// Groups the alerts of subjects worked together (one compare-and-swap per group) and
    /// delivers what is due now, each with its own subject's tail and links. A group that cannot
    /// be written fails (retryably) the subjects whose alerts it holds.
    pub(crate) async fn alert(
        &self,
        worked: Vec<Worked>,
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> Vec<SubjectReport> {
        let (mut reports, alerts): (Vec<SubjectReport>, Vec<Option<PendingAlert>>) =
            worked.into_iter().map(|w| (w.report, w.alert)).unzip();
        // (report index, alert) for the subjects that have one.
        let pending: Vec<(usize, &PendingAlert)> = alerts
            .iter()
            .enumerate()
            .filter_map(|(i, alert)| alert.as_ref().map(|alert| (i, alert)))
            .collect();
        if pending.is_empty() {
            return reports;
        }
        let batch: Vec<(&Diagnosis, &Plan)> = pending
            .iter()
            .map(|(_, alert)| (&alert.diagnosis, &alert.plan))
            .collect();
        let recorded = self.groups.record_batch(&batch, now).await;
        for (k, outcome) in recorded.outcomes.iter().enumerate() {
            let (i, alert) = pending[k];
            let report = &mut reports[i];
            report.waiting += outcome.waiting.len();
            for to_send in &outcome.send {
                self.deliver(
                    to_send,
                    alert.tail.as_deref(),
                    &alert.links,
                    report,
                    deadline,
                )
                .await;
            }
        }
        for (failed, error) in &recorded.failed {
            for &k in failed {
                reports[pending[k].0].outcome = Outcome::Failed {
                    reason: format!("alert grouping: {error}"),
                    retryable: true,
                };
            }
        }
        reports
    }

    async fn deliver(
        &self,
        to_send: &AlertToSend,
        tail: Option<&str>,
        links: &[String],
        report: &mut SubjectReport,
        deadline: Deadline,
    ) {
        let Some(receiver) = self.receivers.get(&to_send.receiver) else {
            tracing::warn!(receiver = %to_send.receiver, "alert for a receiver that is not configured; kept in the outbox");
            return;
        };
        let n = &to_send.notification;
        let alert = Alert {
            diagnosis: to_send.example.clone(),
            group: Group {
                key: n.group_key.clone(),
                count: n.count,
                examples: n.examples.iter().map(subject_label).collect(),
            },
            stderr_tail: tail.map(str::to_owned),
            links: Links::new(links.iter().map(String::as_str), None),
            rule: Some(to_send.rule.clone()),
            state: if n.is_repeat {
                AlertState::Repeat
            } else {
                AlertState::Firing
            },
            sequence: u32::try_from(n.sequence.saturating_sub(1)).unwrap_or(u32::MAX),
        };
        match notify::send(&self.egress, receiver, &alert, deadline).await {
            Ok(_) => report.notified.push(to_send.receiver.clone()),
            Err(error) => {
                // Kept, never dropped: the outbox is drained by the sweep.
                tracing::warn!(receiver = %to_send.receiver, error = %error, "alert delivery failed; kept in the outbox");
                match self.outbox.put(&to_send.receiver, &alert, &error).await {
                    Ok(_) => report.outboxed.push(to_send.receiver.clone()),
                    Err(store_error) => {
                        report.outcome = Outcome::Failed {
                            reason: format!(
                                "alert to {} failed and could not be kept: {store_error}",
                                to_send.receiver
                            ),
                            retryable: true,
                        };
                    }
                }
            }
        }
    }
}

fn target_label(target: &Target) -> String {
    match target {
        Target::Task { job, task } => format!("{job}/{task}"),
        Target::Job { job } => job.clone(),
        Target::StartTask { pool, node, .. } => format!("_pools/{pool}/{node}/_starttask"),
    }
}

fn subject_label(subject: &diagnosis::Subject) -> String {
    [
        subject.job_id.as_deref(),
        subject.task_id.as_deref(),
        subject.node_id.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join("/")
}

/// A copy that left a file unfinished (it failed transiently): no manifest was written, and the
/// node may not keep the file for long, so the payload must come again. Alerts and actions still
/// ran (they are idempotent); the retry finishes the copy.
fn incomplete_copy(preserved: &preserve::PreserveReport) -> Outcome {
    let failed: Vec<String> = preserved
        .files
        .iter()
        .filter_map(|f| match &f.outcome {
            preserve::FileOutcome::Failed { error } => Some(format!("{}: {error}", f.name)),
            _ => None,
        })
        .collect();
    Outcome::Failed {
        reason: format!(
            "logs not completely preserved ({}); run again to finish the copy",
            if failed.is_empty() {
                "a file failed".to_owned()
            } else {
                failed.join("; ")
            }
        ),
        retryable: true,
    }
}

pub(crate) fn batch_failure(error: &BatchError) -> Outcome {
    Outcome::Failed {
        reason: error.to_string(),
        retryable: error.is_retryable(),
    }
}

/// Jobs read once per payload: many tasks of one job need its `onTaskFailure` and prep task.
/// Subjects are processed concurrently, so the cache is shared: the first subject to need a job
/// reads it while the others needing the same job wait for that one read.
#[derive(Default)]
pub(crate) struct JobCache {
    slots: std::sync::Mutex<HashMap<String, Arc<JobSlot>>>,
}

/// One job's entry: `None` until read; `Some(None)` when the job does not exist.
type JobSlot = futures::lock::Mutex<Option<Option<BatchJob>>>;

impl JobCache {
    async fn get(
        &self,
        batch: &dyn BatchApi,
        job_id: &str,
        deadline: Deadline,
    ) -> Result<Option<BatchJob>, BatchError> {
        let slot = {
            // A poisoned lock only means another subject panicked mid-insert; the map is still
            // consistent (insert is one step), so carry on with it.
            let mut slots = self
                .slots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            slots.entry(job_id.to_owned()).or_default().clone()
        };
        let mut slot = slot.lock().await;
        if let Some(job) = slot.as_ref() {
            return Ok(job.clone());
        }
        let job = match batch
            .get_job(job_id, &GetOptions::default(), deadline)
            .await
        {
            Ok(job) => Some(job),
            Err(error) if error.is_not_found() => None,
            // Not cached: the next subject of this job tries again.
            Err(error) => return Err(error),
        };
        *slot = Some(job.clone());
        Ok(job)
    }
}
