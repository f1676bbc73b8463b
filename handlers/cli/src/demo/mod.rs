//! `batch-triage demo`: the whole product on one machine, with no Azure account. It starts the
//! Batch emulator with the built-in scenario (plus `scenario.json` beside this file), runs the
//! real pipeline against it with a local-directory store, feeds it events the way Event Hubs,
//! Event Grid and CloudEvents deliver them, runs the timer's sweep twice, and records what
//! loopback Teams, webhook and SMTP receivers got. Then it writes a self-contained HTML report
//! and its JSON twin, and prints a summary.
//!
//! # Layout
//! - `feed`: the trigger payloads.
//! - `receivers`: the loopback Teams/webhook recorder and the SMTP sink.
//! - `report`: collecting what happened into findings, and `report.json` / `report.html`.

mod feed;
mod receivers;
mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use batch_client::{BatchClient, BatchConfig, Deadline, Secret};
use batch_emulator::{Emulator, Scenario, WELL_KNOWN_ACCOUNT_KEY, WELL_KNOWN_ACCOUNT_NAME};
use diagnosis::policy::Policy;
use notify::{Allowlist, Egress, ReceiverConfig, RetryPolicy};
use pipeline::sweep::SweepOptions;
use pipeline::triage::{SubjectReport, Triage, TriageConfig};
use preserve::PreserveOptions;
use time::OffsetDateTime;

use receivers::{Channel, Received};

pub(crate) const EXAMPLES: &str = "\
Examples:
  batch-triage demo                          # writes ./batch-triage-demo, then open report.html
  batch-triage demo --out /tmp/bt-demo --output json | jq .byClass

What it does: starts the Batch emulator (account devbatch1) with a scenario holding every
failure class, runs the real pipeline on it (Event Hubs, Event Grid and CloudEvents deliveries,
then the timer's sweep, twice), keeps the logs in DIR/store, sends alerts to loopback Teams,
webhook and SMTP receivers (copies in DIR/alerts), and writes DIR/report.html and
DIR/report.json. Nothing leaves 127.0.0.1.

Running it again replaces the previous demo directory. A non-empty directory that is not one
(it has no .batch-triage-demo marker) is refused.

Exit status: 0 when every failure was handled once (logs copied once, each receiver told once),
1 when something was copied or sent twice or failed (the report says what), 2 on an error, such
as a refused --out directory.";

/// The file that marks a directory as the demo's own, so a rerun may replace it.
pub(crate) const MARKER: &str = ".batch-triage-demo";

/// Log files larger than this are recorded as skipped, not copied: the scenario's `etl/big-log`
/// has a 2 GiB stdout, and copying it would turn a seconds-long demo into a minute-long one.
pub(crate) const DEMO_MAX_FILE_BYTES: u64 = 16 << 20;

/// The HMAC key the demo's webhook receiver is configured with. Not a secret: the receiver is a
/// loopback recorder that lives as long as the command.
const DEMO_WEBHOOK_KEY: &str = "batch-triage-demo-signing-key";

/// Arguments of `demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where the report, the preserved logs and the received alerts go.
    #[arg(long, value_name = "DIR", default_value = "batch-triage-demo")]
    out: PathBuf,

    /// Output format of the summary.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    /// A readable summary, one line per alert.
    Text,
    /// One JSON object: counts by class, alerts, and where the files are.
    Json,
}

/// One trigger the pipeline handled, and what it reported.
#[derive(Debug)]
pub(crate) struct Run {
    /// How the platform delivered it, for people.
    pub(crate) trigger: String,
    /// A short stable name: `event-hubs`, `event-hubs-redelivery`, `event-grid`,
    /// `cloudevents`, `sweep`, `sweep-again`.
    pub(crate) name: &'static str,
    /// The input, kept under `triggers/` so people can see the shapes.
    pub(crate) payload_file: Option<String>,
    /// The pipeline's report of each subject.
    pub(crate) subjects: Vec<SubjectReport>,
    /// Items the pipeline skipped on purpose (pool events).
    pub(crate) ignored: usize,
    /// When it ran.
    pub(crate) at: OffsetDateTime,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let out = prepare_out_dir(&args.out)?;
    let outcome = crate::runtime()?.block_on(run_demo(&out))?;
    let report = report::Report::build(&out, outcome)?;
    report.write(&out)?;
    let elapsed = started.elapsed();
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report.summary_json(&out))?
        ),
        Output::Text => print!("{}", report.summary_text(&out, elapsed)),
    }
    Ok(if report.converged() {
        ExitCode::SUCCESS
    } else {
        // The demo is also a check that the pipeline converges; say so in the status too.
        ExitCode::from(1)
    })
}

/// Makes `path` an empty demo directory: created if absent, emptied if it holds an earlier
/// demo (the marker file says so), refused if it holds anything else. Returns it absolute, so
/// the store's links can be made relative to it.
fn prepare_out_dir(path: &Path) -> anyhow::Result<PathBuf> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_dir() => bail!(
            "{} exists and is not a directory; choose another place with --out DIR",
            path.display()
        ),
        Ok(_) => {
            let empty = std::fs::read_dir(path)
                .with_context(|| format!("reading {}", path.display()))?
                .next()
                .is_none();
            if !empty {
                if !path.join(MARKER).is_file() {
                    bail!(
                        "{} is not empty and was not made by `batch-triage demo` (it has no {MARKER} file); \
                         refusing to overwrite it. Choose another place with --out DIR, or remove that directory first",
                        path.display()
                    );
                }
                std::fs::remove_dir_all(path)
                    .with_context(|| format!("removing the previous demo in {}", path.display()))?;
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    }
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    std::fs::write(
        path.join(MARKER),
        "Made by `batch-triage demo`; running it again replaces this directory.\n",
    )?;
    let absolute = std::path::absolute(path)?;
    Ok(absolute)
}

/// The built-in scenario plus the demo's additions (`scenario.json`).
fn demo_scenario() -> anyhow::Result<Scenario> {
    let mut scenario = Scenario::builtin();
    let extra = Scenario::from_json_str(include_str!("scenario.json"))
        .context("the demo's scenario additions")?;
    merge_scenario(&mut scenario, extra).context("the demo's scenario additions")?;
    Ok(scenario)
}

/// Adds `extra`'s jobs, pools and nodes to `base`: a pool `base` already has (ids are
/// case-insensitive, as in Batch) gains `extra`'s nodes, a new pool is added whole, and the
/// descriptions are joined. The result is validated, so a job or node both declare is refused
/// rather than silently shadowing the built-in one.
fn merge_scenario(base: &mut Scenario, extra: Scenario) -> anyhow::Result<()> {
    for pool in extra.pools {
        match base
            .pools
            .iter_mut()
            .find(|p| p.id.eq_ignore_ascii_case(&pool.id))
        {
            Some(existing) => existing.nodes.extend(pool.nodes),
            None => base.pools.push(pool),
        }
    }
    base.jobs.extend(extra.jobs);
    base.faults.extend(extra.faults);
    base.description = Some(format!(
        "{} {}",
        base.description.take().unwrap_or_default(),
        extra.description.unwrap_or_default()
    ));
    base.validate()?;
    Ok(())
}

/// The demo's policy: every failure to the SIEM webhook; errors and worse to Teams; critical
/// ones by email as well, and a stuck job disabled (as a dry run, so the job is left alone).
fn demo_policy(smtp_port: u16) -> anyhow::Result<Policy> {
    let text = format!(
        r#"
[grouping]
group_by = ["account", "job", "class", "fingerprint"]
group_wait = "0s"

[actions]
enabled = true
dry_run = true
max_per_hour = 5

[[receivers]]
name = "{teams}"
kind = "teams"
url_env = "DEMO_TEAMS_URL"

[[receivers]]
name = "{mail}"
kind = "email"
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
from = "batch-triage demo <batch-triage@localhost>"
to = ["oncall@example.com"]

[[receivers]]
name = "{siem}"
kind = "webhook"
url_env = "DEMO_WEBHOOK_URL"
secret_env = "DEMO_WEBHOOK_KEY"

[[rules]]
name = "everything-to-siem"
match = {{ severity = "warning" }}
receivers = ["{siem}"]
continue = true

[[rules]]
name = "stuck-jobs"
match = {{ class = "job.prep_failed" }}
receivers = ["{teams}", "{mail}"]
action = {{ kind = "disable", disable_tasks = "wait" }}

[[rules]]
name = "critical"
match = {{ severity = "critical" }}
receivers = ["{teams}", "{mail}"]

[[rules]]
name = "errors"
match = {{ severity = "error" }}
receivers = ["{teams}"]
"#,
        teams = Channel::Teams.receiver_name(),
        mail = Channel::Email.receiver_name(),
        siem = Channel::Webhook.receiver_name(),
    );
    Policy::parse(&text).map_err(|errors| anyhow::anyhow!("the demo policy: {errors}"))
}

/// What the demo run produced, for the report.
pub(crate) struct DemoOutcome {
    /// Every trigger, in order.
    pub(crate) runs: Vec<Run>,
    /// What the receivers got, in arrival order.
    pub(crate) received: Vec<Received>,
    /// The pipeline's own view of each failure, read back after the runs.
    pub(crate) diagnoses: Vec<diagnosis::Diagnosis>,
    /// Task and job times from the emulator (subject → (start, end)), for the timeline.
    pub(crate) times: BTreeMap<String, (Option<String>, Option<String>)>,
    /// The scenario's description.
    pub(crate) scenario: String,
    /// The account.
    pub(crate) account: String,
}

async fn run_demo(out: &Path) -> anyhow::Result<DemoOutcome> {
    let scenario = demo_scenario()?;
    let description = scenario.description.clone().unwrap_or_default();
    let emulator = Emulator::new(scenario)?;
    let listener = batch_emulator::bind_local(0).await?;
    let batch_url = format!("http://{}", listener.local_addr()?);
    let emulator_task = tokio::spawn(batch_emulator::serve(
        listener,
        emulator.clone(),
        std::future::pending(),
    ));
    let receivers = receivers::start().await?;
    let policy = demo_policy(receivers.smtp_port)?;
    let env: BTreeMap<&str, String> = [
        ("DEMO_TEAMS_URL", receivers.teams_url.clone()),
        ("DEMO_WEBHOOK_URL", receivers.webhook_url.clone()),
        ("DEMO_WEBHOOK_KEY", DEMO_WEBHOOK_KEY.to_owned()),
    ]
    .into();
    let mut resolved = BTreeMap::new();
    for receiver in &policy.receivers {
        let config =
            ReceiverConfig::from_policy(receiver)?.resolve(|name| env.get(name).cloned())?;
        resolved.insert(receiver.name.clone(), config);
    }
    let store_dir = out.join("store");
    std::fs::create_dir_all(&store_dir)?;
    let store = artifact_store::open(
        store_dir
            .to_str()
            .context("the --out path is not valid UTF-8")?,
    )?;
    let batch: Arc<dyn batch_client::BatchApi> =
        Arc::new(BatchClient::new(BatchConfig::shared_key(
            &batch_url,
            WELL_KNOWN_ACCOUNT_NAME,
            Secret::new(WELL_KNOWN_ACCOUNT_KEY),
        )?)?);
    let egress = Egress::new(
        Allowlist::default().allow_loopback(),
        RetryPolicy::standard(),
    )?;
    let triage = Triage::new(
        TriageConfig {
            account: WELL_KNOWN_ACCOUNT_NAME.to_owned(),
            preserve: PreserveOptions {
                max_file_bytes: DEMO_MAX_FILE_BYTES,
                ..PreserveOptions::default()
            },
            action_call_timeout: Duration::from_secs(30),
        },
        batch.clone(),
        store,
        Arc::new(policy),
        resolved,
        egress,
    );

    let triggers = out.join("triggers");
    std::fs::create_dir_all(&triggers)?;
    let deadline = || Deadline::after(Duration::from_secs(120));
    let mut runs = Vec::new();

    // Event Hubs delivers at least once: the same batch twice, as after a lost checkpoint.
    let now = OffsetDateTime::now_utc();
    let event_hubs = feed::event_hubs_body(&emulator, WELL_KNOWN_ACCOUNT_NAME, now);
    std::fs::write(triggers.join("event-hubs.json"), &event_hubs)?;
    for (name, trigger) in [
        (
            "event-hubs",
            "Event Hubs: a batch of Batch diagnostic-log records (TaskFailEvent, TaskCompleteEvent, a start task's SpecialTaskEvent, a pool event)",
        ),
        (
            "event-hubs-redelivery",
            "Event Hubs: the same batch delivered again (at-least-once delivery)",
        ),
    ] {
        let at = OffsetDateTime::now_utc();
        let report = triage.handle_payload(&event_hubs, at, deadline()).await?;
        runs.push(Run {
            trigger: trigger.to_owned(),
            name,
            payload_file: Some("triggers/event-hubs.json".to_owned()),
            subjects: report.subjects,
            ignored: report.ignored_items,
            at,
        });
    }

    let at = OffsetDateTime::now_utc();
    let event_grid = feed::event_grid_body(&emulator, &batch_url, at);
    std::fs::write(triggers.join("event-grid.json"), &event_grid)?;
    let report = triage.handle_payload(&event_grid, at, deadline()).await?;
    runs.push(Run {
        trigger: "Event Grid: a task event body and a {jobId, taskId} reference".to_owned(),
        name: "event-grid",
        payload_file: Some("triggers/event-grid.json".to_owned()),
        subjects: report.subjects,
        ignored: report.ignored_items,
        at,
    });

    let at = OffsetDateTime::now_utc();
    let cloud_events = feed::cloud_events_body(&batch_url, at);
    std::fs::write(triggers.join("cloudevents.json"), &cloud_events)?;
    let report = triage.handle_payload(&cloud_events, at, deadline()).await?;
    runs.push(Run {
        trigger: "CloudEvents: a batch of two task references".to_owned(),
        name: "cloudevents",
        payload_file: Some("triggers/cloudevents.json".to_owned()),
        subjects: report.subjects,
        ignored: report.ignored_items,
        at,
    });

    // The timer's sweep finds what no event announced; a first run looks back a day so every
    // failure of the scenario (the oldest ended hours ago) is in reach.
    let options = SweepOptions {
        first_lookback: Duration::from_secs(24 * 3600),
        ..SweepOptions::default()
    };
    for (name, trigger) in [
        (
            "sweep",
            "Timer sweep: failed tasks since the cursor, ended and stuck jobs, prep/release failures",
        ),
        (
            "sweep-again",
            "Timer sweep, next tick: everything is already handled",
        ),
    ] {
        let at = OffsetDateTime::now_utc();
        let tick = triage.tick(at, deadline(), &options).await?;
        runs.push(Run {
            trigger: trigger.to_owned(),
            name,
            payload_file: None,
            subjects: tick.sweep.subjects,
            ignored: 0,
            at,
        });
    }

    let diagnoses = read_back_diagnoses(&triage, &runs).await;
    let times = subject_times(&emulator, batch.as_ref(), &runs, now).await;
    // Deliveries are awaited by the pipeline, so everything sent has been recorded by now.
    let received = receivers.inbox.messages();
    drop(receivers);
    emulator_task.abort();
    Ok(DemoOutcome {
        runs,
        received,
        diagnoses,
        times,
        scenario: description,
        account: WELL_KNOWN_ACCOUNT_NAME.to_owned(),
    })
}

/// A subject label the pipeline reports, split: `account/job`, `account/job/task`,
/// `account/job/_jobprep/node` or `account/_pools/pool/node/_starttask`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SubjectRef {
    /// A job (ended, stuck, or with a scheduling error).
    Job { job: String },
    /// A task of a job.
    Task { job: String, task: String },
    /// A node of a job whose preparation or release task failed there (the pipeline labels
    /// both `_jobprep`).
    Node { job: String, node: String },
    /// A node of a pool whose start task failed there. It belongs to no job.
    StartTask { pool: String, node: String },
}

/// What a finding belongs to, for "by job": its job or, for a start task, its pool.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Owner {
    Job(String),
    Pool(String),
}

impl std::fmt::Display for Owner {
    /// `etl`, `pool linux`: Batch ids have no spaces, so the two cannot be confused.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Job(job) => f.write_str(job),
            Self::Pool(pool) => write!(f, "pool {pool}"),
        }
    }
}

impl SubjectRef {
    /// `None` for a label of another shape.
    pub(crate) fn parse(label: &str) -> Option<Self> {
        let parts: Vec<&str> = label.split('/').collect();
        match parts.as_slice() {
            [_, job] => Some(Self::Job {
                job: (*job).to_owned(),
            }),
            [_, job, task] => Some(Self::Task {
                job: (*job).to_owned(),
                task: (*task).to_owned(),
            }),
            [_, job, "_jobprep", node] => Some(Self::Node {
                job: (*job).to_owned(),
                node: (*node).to_owned(),
            }),
            [_, "_pools", pool, node, "_starttask"] => Some(Self::StartTask {
                pool: (*pool).to_owned(),
                node: (*node).to_owned(),
            }),
            _ => None,
        }
    }

    /// The job the subject belongs to; `None` for a start task.
    pub(crate) fn job(&self) -> Option<&str> {
        match self {
            Self::Job { job } | Self::Task { job, .. } | Self::Node { job, .. } => Some(job),
            Self::StartTask { .. } => None,
        }
    }

    /// The job, or the pool of a start task.
    pub(crate) fn owner(&self) -> Owner {
        match self {
            Self::StartTask { pool, .. } => Owner::Pool(pool.clone()),
            Self::Job { job } | Self::Task { job, .. } | Self::Node { job, .. } => {
                Owner::Job(job.clone())
            }
        }
    }

    /// Whether a diagnosis is about this subject.
    pub(crate) fn matches(&self, diagnosis: &diagnosis::Diagnosis) -> bool {
        let s = &diagnosis.subject;
        if s.job_id.as_deref() != self.job() {
            return false;
        }
        match self {
            Self::Job { .. } => s.task_id.is_none() && s.node_id.is_none(),
            Self::Task { task, .. } => s.task_id.as_deref() == Some(task),
            Self::Node { node, .. } => s.task_id.is_none() && s.node_id.as_deref() == Some(node),
            Self::StartTask { pool, node } => {
                s.task_id.is_none()
                    && s.pool_id.as_deref() == Some(pool)
                    && s.node_id.as_deref() == Some(node)
            }
        }
    }
}

/// The diagnosis of every failed subject, as the pipeline sees it now: `Triage::diagnose` is
/// the side-effect-free re-read the HTTP `Diagnose` function uses.
async fn read_back_diagnoses(triage: &Triage, runs: &[Run]) -> Vec<diagnosis::Diagnosis> {
    let mut subjects: Vec<SubjectRef> = runs
        .iter()
        .flat_map(|r| &r.subjects)
        .filter(|s| s.class.is_some_and(|c| c.is_failure()))
        .filter_map(|s| SubjectRef::parse(&s.subject))
        .collect();
    subjects.sort();
    subjects.dedup();
    let mut diagnoses = Vec::new();
    let mut jobs_read = std::collections::BTreeSet::new();
    for subject in &subjects {
        let deadline = Deadline::after(Duration::from_secs(30));
        let found = match subject {
            SubjectRef::Task { job, task } => triage.diagnose(job, Some(task), deadline).await,
            // One read per job gives the job and each failed prep/release node.
            SubjectRef::Job { job } | SubjectRef::Node { job, .. } => {
                if !jobs_read.insert(job.clone()) {
                    continue;
                }
                triage.diagnose(job, None, deadline).await
            }
            // Batch keeps no object for a start task to re-read: its diagnosis came from the
            // event, and the report takes it from the alert or the preserved diagnosis.json.
            SubjectRef::StartTask { .. } => continue,
        };
        // A subject that cannot be read back still appears in the report, from the runs.
        diagnoses.extend(found.unwrap_or_default());
    }
    diagnoses
}

/// Start and end times of each failed subject: tasks and jobs from the emulator's view (the
/// account's truth), prep/release nodes from the job's preparation and release task status,
/// start tasks from the event the demo fed at `events_at` (Batch keeps no object for them).
async fn subject_times(
    emulator: &Emulator,
    batch: &dyn batch_client::BatchApi,
    runs: &[Run],
    events_at: OffsetDateTime,
) -> BTreeMap<String, (Option<String>, Option<String>)> {
    use futures::TryStreamExt;
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let rfc3339 = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    };
    let stamp = |t: Option<diagnosis::wire::Timestamp>| t.and_then(|t| rfc3339(t.0));
    let mut times = BTreeMap::new();
    for subject in runs.iter().flat_map(|r| &r.subjects) {
        if times.contains_key(&subject.subject) {
            continue;
        }
        let Some(parsed) = SubjectRef::parse(&subject.subject) else {
            continue;
        };
        let found = match &parsed {
            SubjectRef::Task { job, task } => emulator.task(job, task).map(|t| {
                let e = &t["executionInfo"];
                (text(&e["startTime"]), text(&e["endTime"]))
            }),
            SubjectRef::Job { job } => emulator.job(job).map(|j| {
                let e = &j["executionInfo"];
                (
                    text(&e["startTime"]).or_else(|| text(&j["creationTime"])),
                    text(&e["endTime"]),
                )
            }),
            SubjectRef::Node { job, node } => {
                let statuses: Vec<diagnosis::wire::PrepReleaseStatus> =
                    batch_client::items(batch.list_prep_release_status(
                        job,
                        &batch_client::ListOptions::default(),
                        Deadline::after(Duration::from_secs(30)),
                    ))
                    .try_collect()
                    .await
                    .unwrap_or_default();
                let release = subject.class == Some(diagnosis::FailureClass::JobReleaseFailed);
                statuses
                    .into_iter()
                    .find(|s| s.node_id.as_deref() == Some(node))
                    .and_then(|s| {
                        if release {
                            s.job_release_task_execution_info
                        } else {
                            s.job_preparation_task_execution_info
                        }
                    })
                    .map(|e| (stamp(e.start_time), stamp(e.end_time)))
            }
            SubjectRef::StartTask { pool, node } => feed::START_TASK_FAILURES
                .iter()
                .find(|f| f.pool == pool && f.node == node)
                .map(|f| {
                    let (start, end) = f.times(events_at);
                    (rfc3339(start), rfc3339(end))
                }),
        };
        if let Some(found) = found {
            times.insert(subject.subject.clone(), found);
        }
    }
    times
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_labels_parse_into_jobs_tasks_and_nodes() {
        assert_eq!(
            SubjectRef::parse("devbatch1/etl"),
            Some(SubjectRef::Job {
                job: "etl".to_owned()
            })
        );
        assert_eq!(
            SubjectRef::parse("devbatch1/etl/oom"),
            Some(SubjectRef::Task {
                job: "etl".to_owned(),
                task: "oom".to_owned()
            })
        );
        assert_eq!(
            SubjectRef::parse("devbatch1/prep/_jobprep/tvm-02"),
            Some(SubjectRef::Node {
                job: "prep".to_owned(),
                node: "tvm-02".to_owned()
            })
        );
        let start_task = SubjectRef::parse("devbatch1/_pools/linux/tvm-05/_starttask");
        assert_eq!(
            start_task,
            Some(SubjectRef::StartTask {
                pool: "linux".to_owned(),
                node: "tvm-05".to_owned()
            })
        );
        let start_task = start_task.unwrap();
        assert_eq!(start_task.job(), None);
        assert_eq!(start_task.owner().to_string(), "pool linux");
        assert_eq!(
            SubjectRef::parse("devbatch1/etl/oom").unwrap().owner(),
            Owner::Job("etl".to_owned())
        );
        assert_eq!(SubjectRef::parse("devbatch1"), None);
        assert_eq!(SubjectRef::parse("devbatch1/a/b/c"), None);
        assert_eq!(SubjectRef::parse("devbatch1/_pools/linux/tvm-05/x"), None);
    }

    #[test]
    fn a_start_task_diagnosis_matches_its_node_only() {
        let diagnosis = |job: Option<&str>, pool: &str, node: &str| {
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
        };
        let subject = SubjectRef::parse("devbatch1/_pools/linux/tvm-05/_starttask").unwrap();
        assert!(subject.matches(&diagnosis(None, "linux", "tvm-05")));
        assert!(!subject.matches(&diagnosis(None, "linux", "tvm-01")));
        assert!(!subject.matches(&diagnosis(None, "windows", "tvm-05")));
        // A job preparation failure on the same node is another subject.
        assert!(!subject.matches(&diagnosis(Some("prep"), "linux", "tvm-05")));
        let prep = SubjectRef::parse("devbatch1/prep/_jobprep/tvm-05").unwrap();
        assert!(!prep.matches(&diagnosis(None, "linux", "tvm-05")));
    }

    #[test]
    fn the_demo_scenario_adds_nodes_to_builtin_pools_and_new_pools() {
        let builtin = Scenario::builtin();
        let merged = demo_scenario().unwrap();
        let linux = |s: &Scenario| {
            s.pools
                .iter()
                .find(|p| p.id == "linux")
                .map(|p| p.nodes.iter().map(|n| n.id.clone()).collect::<Vec<_>>())
                .unwrap()
        };
        let mut expected = linux(&builtin);
        expected.push("tvm-05".to_owned());
        assert_eq!(
            linux(&merged),
            expected,
            "the built-in nodes stay, tvm-05 joins"
        );
        let node = merged
            .pools
            .iter()
            .flat_map(|p| &p.nodes)
            .find(|n| n.id == "tvm-05")
            .unwrap();
        assert!(node.files.contains_key("startup/stderr.txt"));
        assert_eq!(
            merged.pools.len(),
            builtin.pools.len(),
            "no pool is doubled"
        );
        assert_eq!(merged.jobs.len(), builtin.jobs.len() + 1, "webapp is added");

        // A new pool is added whole; a node both declare is refused.
        let mut base = Scenario::builtin();
        let extra = Scenario::from_json_str(
            r#"{"pools": [{"id": "gpu", "nodes": [{"id": "tvm-g1"}]}, {"id": "LINUX", "nodes": [{"id": "tvm-09"}]}]}"#,
        )
        .unwrap();
        merge_scenario(&mut base, extra).unwrap();
        assert!(
            base.pools
                .iter()
                .any(|p| p.id == "gpu" && p.nodes.len() == 1)
        );
        assert!(
            linux(&base).contains(&"tvm-09".to_owned()),
            "ids are case-insensitive"
        );
        let mut base = Scenario::builtin();
        let clash =
            Scenario::from_json_str(r#"{"pools": [{"id": "linux", "nodes": [{"id": "tvm-01"}]}]}"#)
                .unwrap();
        let error = format!("{:#}", merge_scenario(&mut base, clash).unwrap_err());
        assert!(error.contains("tvm-01"), "{error}");
    }

    #[test]
    fn a_foreign_directory_is_refused_and_an_earlier_demo_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let foreign = dir.path().join("foreign");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::write(foreign.join("keep.txt"), "mine").unwrap();
        let error = prepare_out_dir(&foreign).unwrap_err().to_string();
        assert!(error.contains("refusing to overwrite"), "{error}");
        assert!(foreign.join("keep.txt").is_file());

        let earlier = dir.path().join("earlier");
        prepare_out_dir(&earlier).unwrap();
        std::fs::write(earlier.join("report.html"), "old").unwrap();
        let again = prepare_out_dir(&earlier).unwrap();
        assert!(again.is_absolute());
        assert!(!earlier.join("report.html").exists(), "emptied");
        assert!(earlier.join(MARKER).is_file(), "and marked again");
    }
}
