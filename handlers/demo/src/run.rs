//! One demo run: an empty demo directory, the emulator and the receivers on loopback ports, the
//! pipeline built from [`Settings`] as every handler builds it, and the triggers in the order a
//! day of Batch failures would bring them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use batch_client::{BatchApi, BatchClient, BatchConfig, Deadline, Secret};
use batch_emulator::{Emulator, WELL_KNOWN_ACCOUNT_KEY, WELL_KNOWN_ACCOUNT_NAME};
use diagnosis::policy::Grouping as DiagnosisGrouping;
use diagnosis::policy::Policy;
use notify::{Allowlist, ReceiverConfig};
use pipeline::settings::{AccountSettings, Settings};
use pipeline::silences::{NewSilence, SilenceStore, StoredSilence};
use pipeline::sweep::SweepOptions;
use pipeline::triage::{SubjectReport, Triage};
use time::OffsetDateTime;
use tokio::task::JoinHandle;

use crate::receivers::{self, Received, Receivers};
use crate::scenario::{
    PAGERDUTY_KEY_SETTING, SLACK_URL_SETTING, TEAMS_URL_SETTING, WEBHOOK_KEY_SETTING,
    WEBHOOK_URL_SETTING, demo_policy, demo_scenario,
};
use crate::subject::SubjectKey;
use crate::{DEMO_MAX_FILE_BYTES, DemoError, feed};

/// The file that marks a directory as the demo's own, so a rerun may replace it.
pub const MARKER: &str = ".batch-triage-demo";

/// The demo's second Batch account: the emulator's built-in scenario again, on a port of its
/// own, so the report and the store show one pipeline over two accounts.
pub const SECOND_ACCOUNT_NAME: &str = "devbatch2";
/// Its Shared Key: public, like the first account's well-known key, but another one, so a
/// request signed for the wrong account would be refused.
const SECOND_ACCOUNT_KEY: &str = "ZGVtby1zZWNvbmQtYWNjb3VudC1rZXktbm90LWEtc2VjcmV0";
/// An account the demo's Event Hubs batch names but the deployment does not watch: its record
/// is refused before anything is fetched.
pub const UNWATCHED_ACCOUNT_NAME: &str = "devbatch3";

/// The HMAC key the demo's webhook receiver is configured with. Not a secret: the receiver is a
/// loopback recorder that lives as long as the command.
const DEMO_WEBHOOK_KEY: &str = "batch-triage-demo-signing-key";

/// The routing key the demo's PagerDuty receiver is configured with: 32 characters, like a real
/// one, and as unsecret as the webhook key above.
const DEMO_PAGERDUTY_KEY: &str = "demo0routing0key0000000000000000";

/// The stuck job of the demo's scenario that its owner terminates between the two sweeps.
const RESOLVED_JOB: &str = "backfill";

/// The pool of the first account that could not resize (core quota reached) and reaches its
/// target between the two sweeps, as when the quota is raised.
pub const RESOLVED_POOL: &str = "quota-pool";

/// What the demo's operator mutes before the first sweep, as `batch-triage silence add
/// --match account=devbatch2 --match job=nightly` would: the second account's nightly job,
/// whose failures (a terminated task, the job's timeout) only the sweep finds. Its alerts are
/// muted on every receiver; its logs are still kept.
pub const OPERATOR_SILENCE: &[&str] = &["account=devbatch2", "job=nightly"];

/// For how long, as `--for` says.
pub const OPERATOR_SILENCE_FOR: &str = "2h";

/// Why the operator muted it, as `--comment` says.
const OPERATOR_SILENCE_COMMENT: &str =
    "the nightly job of devbatch2 is being reworked; its failures are known";

/// Who added it, as `--author` says.
pub const OPERATOR: &str = "operator (demo)";

/// A silence the demo added to the store between two runs, as an operator would at the CLI.
#[derive(Debug, Clone)]
pub struct OperatorSilence {
    /// The run it was added before (`sweep`).
    pub before: &'static str,
    /// The silence as stored.
    pub silence: StoredSilence,
}

/// One trigger the pipeline handled, and what it reported.
#[derive(Debug)]
pub struct Run {
    /// How the platform delivered it, for people.
    pub trigger: String,
    /// A short stable name: `event-hubs`, `event-hubs-redelivery`, `event-grid`,
    /// `cloudevents`, `sweep`, `dead-letters`, `sweep-again`, `tick-later`.
    pub name: &'static str,
    /// The input, kept under `triggers/` so people can see the shapes.
    pub payload_file: Option<String>,
    /// The pipeline's report of each subject.
    pub subjects: Vec<SubjectReport>,
    /// Items the pipeline skipped on purpose (pool events).
    pub ignored: usize,
    /// Receivers the timer's grouped alerts went to (groups that waited, grew or escalated).
    pub flushed: Vec<String>,
    /// Receivers the timer told that a group's failure state ended (resolved messages).
    pub resolved: Vec<String>,
    /// When it ran.
    pub at: OffsetDateTime,
}

/// Start and end (RFC 3339) of a subject, when known.
pub type Times = (Option<String>, Option<String>);

/// What the demo run produced, for the report.
#[derive(Debug)]
pub struct DemoOutcome {
    /// Every trigger, in order.
    pub runs: Vec<Run>,
    /// What the receivers got, in arrival order.
    pub received: Vec<Received>,
    /// The pipeline's own view of each failure, read back after the runs.
    pub diagnoses: Vec<diagnosis::Diagnosis>,
    /// Task, job, node and start task times, for the timeline.
    pub times: BTreeMap<SubjectKey, Times>,
    /// The scenario's description.
    pub scenario: String,
    /// The accounts the pipeline watched, in the order of the settings.
    pub accounts: Vec<String>,
    /// The silences the operator added during the run.
    pub silences: Vec<OperatorSilence>,
    /// What `batch-triage report` shows of the demo's store after the runs.
    pub store: report::StoreReport,
}

/// Makes `path` an empty demo directory: created if absent, emptied if it holds an earlier
/// demo (the marker file says so), refused if it holds anything else. Returns it absolute, so
/// the store's links can be made relative to it.
pub fn prepare_out_dir(path: &Path) -> Result<PathBuf, DemoError> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_dir() => {
            return Err(DemoError::Refused(format!(
                "{shown} exists and is not a directory; choose another place with --out DIR"
            )));
        }
        Ok(_) => {
            let empty = std::fs::read_dir(path)
                .map_err(DemoError::io(format!("reading {shown}")))?
                .next()
                .is_none();
            if !empty {
                if !path.join(MARKER).is_file() {
                    return Err(DemoError::Refused(format!(
                        "{shown} is not empty and was not made by `batch-triage demo` (it has no {MARKER} file); \
                         refusing to overwrite it. Choose another place with --out DIR, or remove that directory first"
                    )));
                }
                std::fs::remove_dir_all(path).map_err(DemoError::io(format!(
                    "removing the previous demo in {shown}"
                )))?;
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(DemoError::io(format!("reading {shown}"))(error)),
    }
    std::fs::create_dir_all(path).map_err(DemoError::io(format!("creating {shown}")))?;
    std::fs::write(
        path.join(MARKER),
        "Made by `batch-triage demo`; running it again replaces this directory.\n",
    )
    .map_err(DemoError::io(format!("writing {MARKER} in {shown}")))?;
    std::path::absolute(path).map_err(DemoError::io(format!("resolving {shown}")))
}

/// The emulator and the receivers, on loopback ports, for as long as the demo runs.
struct Services {
    emulator: Emulator,
    emulator_task: JoinHandle<std::io::Result<()>>,
    batch_url: String,
    /// The second account's emulator, task and URL.
    second: Emulator,
    second_task: JoinHandle<std::io::Result<()>>,
    second_url: String,
    receivers: Receivers,
    scenario: String,
}

impl Services {
    async fn start() -> Result<Self, DemoError> {
        let scenario = demo_scenario()?;
        let description = scenario.description.clone().unwrap_or_default();
        let emulator = Emulator::new(scenario)?;
        let listener = batch_emulator::bind_local(0)
            .await
            .map_err(DemoError::io("binding the emulator to 127.0.0.1"))?;
        let address = listener
            .local_addr()
            .map_err(DemoError::io("the emulator's address"))?;
        let emulator_task = tokio::spawn(batch_emulator::serve(
            listener,
            emulator.clone(),
            std::future::pending(),
        ));
        let mut second_scenario = batch_emulator::Scenario::builtin();
        second_scenario.account.name = SECOND_ACCOUNT_NAME.to_owned();
        second_scenario.account.key = SECOND_ACCOUNT_KEY.to_owned();
        let second = Emulator::new(second_scenario)?;
        let listener = batch_emulator::bind_local(0)
            .await
            .map_err(DemoError::io("binding the second emulator to 127.0.0.1"))?;
        let second_address = listener
            .local_addr()
            .map_err(DemoError::io("the second emulator's address"))?;
        let second_task = tokio::spawn(batch_emulator::serve(
            listener,
            second.clone(),
            std::future::pending(),
        ));
        let receivers = receivers::start()
            .await
            .map_err(DemoError::io("starting the loopback receivers"))?;
        Ok(Self {
            emulator,
            emulator_task,
            batch_url: format!("http://{address}"),
            second,
            second_task,
            second_url: format!("http://{second_address}"),
            receivers,
            scenario: description,
        })
    }

    /// The emulator's well-known account, by Shared Key.
    fn batch_config(&self) -> Result<BatchConfig, DemoError> {
        Ok(BatchConfig::shared_key(
            &self.batch_url,
            WELL_KNOWN_ACCOUNT_NAME,
            Secret::new(WELL_KNOWN_ACCOUNT_KEY),
        )?)
    }

    /// The second account, by its own Shared Key.
    fn second_config(&self) -> Result<BatchConfig, DemoError> {
        Ok(BatchConfig::shared_key(
            &self.second_url,
            SECOND_ACCOUNT_NAME,
            Secret::new(SECOND_ACCOUNT_KEY),
        )?)
    }

    /// The values the policy's `url_env` / `secret_env` name, as a deployment's settings hold
    /// them.
    fn receiver_setting(&self, name: &str) -> Option<String> {
        match name {
            TEAMS_URL_SETTING => Some(self.receivers.teams_url.clone()),
            WEBHOOK_URL_SETTING => Some(self.receivers.webhook_url.clone()),
            WEBHOOK_KEY_SETTING => Some(DEMO_WEBHOOK_KEY.to_owned()),
            SLACK_URL_SETTING => Some(self.receivers.slack_url.clone()),
            PAGERDUTY_KEY_SETTING => Some(DEMO_PAGERDUTY_KEY.to_owned()),
            _ => None,
        }
    }
}

/// The pipeline's settings for the demo: what a handler reads from its environment, given
/// directly: the emulator's account, a local store under `out`, the demo policy with its
/// receivers resolved, loopback allowed (the receivers are on 127.0.0.1), and the demo's file
/// size cap.
fn demo_settings(services: &Services, policy: Policy, out: &Path) -> Result<Settings, DemoError> {
    let mut receivers = BTreeMap::new();
    for receiver in &policy.receivers {
        let resolved = ReceiverConfig::from_policy(receiver)
            .and_then(|config| config.resolve(|name| services.receiver_setting(name)))
            .map_err(|reason| pipeline::settings::SettingsError::Receiver {
                name: receiver.name.clone(),
                reason,
            })?;
        receivers.insert(receiver.name.clone(), resolved);
    }
    let store_dir = out.join("store");
    std::fs::create_dir_all(&store_dir)
        .map_err(DemoError::io(format!("creating {}", store_dir.display())))?;
    let store = store_dir.to_str().ok_or_else(|| {
        DemoError::Refused(format!(
            "{} is not valid UTF-8; choose another place with --out DIR",
            out.display()
        ))
    })?;
    Ok(Settings {
        accounts: vec![
            AccountSettings {
                name: WELL_KNOWN_ACCOUNT_NAME.to_owned(),
                batch: services.batch_config()?,
            },
            AccountSettings {
                name: SECOND_ACCOUNT_NAME.to_owned(),
                batch: services.second_config()?,
            },
        ],
        store: store.to_owned(),
        dead_letter_store: Some(dead_letter_dir(out).to_string_lossy().into_owned()),
        // A local store: Batch (the emulator) writes agent logs into a staging directory.
        agent_logs_identity: None,
        policy,
        receivers,
        allowlist: Allowlist::default().allow_loopback(),
        invocation_budget: Duration::from_secs(120),
        max_file_bytes: DEMO_MAX_FILE_BYTES,
        // The emulator's key is public, but it is the configured key: redacted as a real one is.
        redactor: diagnosis::redact::Redactor::new([WELL_KNOWN_ACCOUNT_KEY, SECOND_ACCOUNT_KEY]),
    })
}

/// Where the demo keeps the Event Grid dead-letter container its sweep drains.
fn dead_letter_dir(out: &Path) -> PathBuf {
    out.join("dead-letters")
}

/// Runs the demo in `out` (made by [`prepare_out_dir`]): every trigger, then the read-back.
pub async fn run_demo(out: &Path) -> Result<DemoOutcome, DemoError> {
    let services = Services::start().await?;
    let policy = demo_policy(
        services.receivers.smtp_port,
        &services.receivers.pagerduty_url,
    )?;
    let settings = demo_settings(&services, policy, out)?;
    let budget = settings.invocation_budget;
    // A deployment re-reads the store's silences every 30 s; the demo does not wait, so its
    // pipeline re-reads them for every payload and the operator's silence mutes the next tick.
    let triage = settings.build()?.with_silence_cache_ttl(Duration::ZERO);
    // The demo's own reads (times of prep/release nodes) go through clients of its own.
    let accounts = [
        (
            WELL_KNOWN_ACCOUNT_NAME,
            &services.emulator,
            BatchClient::new(services.batch_config()?)?,
        ),
        (
            SECOND_ACCOUNT_NAME,
            &services.second,
            BatchClient::new(services.second_config()?)?,
        ),
    ];

    let triggers = Triggers {
        triage: &triage,
        dir: out.join("triggers"),
        budget,
    };
    std::fs::create_dir_all(&triggers.dir).map_err(DemoError::io(format!(
        "creating {}",
        triggers.dir.display()
    )))?;
    let events_at = OffsetDateTime::now_utc();
    let mut runs = triggers.deliveries(&services, events_at).await?;
    triggers.dead_letters(out, &services.batch_url, events_at)?;
    // Whole seconds, as the CLI writes them: the times are read by people.
    let added_at = OffsetDateTime::now_utc();
    let silences = vec![OperatorSilence {
        before: "sweep",
        silence: operator_silence(&triage, added_at.replace_nanosecond(0).unwrap_or(added_at))
            .await?,
    }];
    runs.extend(triggers.sweeps(&services, &accounts[0].2).await?);
    let store = store_report(&triage, &runs).await?;

    let diagnoses = read_back_diagnoses(&triage, &runs).await;
    let times = subject_times(&accounts, &runs, events_at).await;
    // Deliveries are awaited by the pipeline, so everything sent has been recorded by now.
    let received = services.receivers.inbox.messages();
    services.emulator_task.abort();
    services.second_task.abort();
    Ok(DemoOutcome {
        runs,
        received,
        diagnoses,
        times,
        scenario: services.scenario,
        accounts: vec![
            WELL_KNOWN_ACCOUNT_NAME.to_owned(),
            SECOND_ACCOUNT_NAME.to_owned(),
        ],
        silences,
        store,
    })
}

/// Adds [`OPERATOR_SILENCE`] to the pipeline's store the way `batch-triage silence add` does
/// (the same `SilenceStore::add`, for [`OPERATOR_SILENCE_FOR`] from `now`).
async fn operator_silence(
    triage: &Triage,
    now: OffsetDateTime,
) -> Result<StoredSilence, DemoError> {
    let silence = SilenceStore::new(triage.store())
        .add(
            NewSilence {
                matchers: OPERATOR_SILENCE.iter().map(|m| (*m).to_owned()).collect(),
                duration: diagnosis::policy::parse_duration(OPERATOR_SILENCE_FOR)
                    .map_err(|e| DemoError::Policy(format!("--for {OPERATOR_SILENCE_FOR}: {e}")))?,
                author: OPERATOR.to_owned(),
                comment: OPERATOR_SILENCE_COMMENT.to_owned(),
            },
            now,
        )
        .await?;
    Ok(silence)
}

/// The report `batch-triage report --store DIR/store` builds, over the last day up to just
/// after the last run (the last tick runs one `group_interval` ahead of the clock).
async fn store_report(triage: &Triage, runs: &[Run]) -> Result<report::StoreReport, DemoError> {
    let now = runs
        .iter()
        .map(|r| r.at)
        .max()
        .unwrap_or_else(OffsetDateTime::now_utc)
        + Duration::from_secs(1);
    let options = report::ReportOptions {
        since: Duration::from_secs(24 * 3600),
        account: None,
        now,
        limits: report::Limits::default(),
    };
    Ok(report::build(triage.store(), &options).await?)
}

/// Feeds the pipeline, and keeps each payload under `triggers/`.
struct Triggers<'a> {
    triage: &'a Triage,
    dir: PathBuf,
    budget: Duration,
}

impl Triggers<'_> {
    fn deadline(&self) -> Deadline {
        Deadline::after(self.budget)
    }

    /// Handles one payload as a platform delivery, after saving it as `triggers/{file}`.
    async fn deliver(
        &self,
        name: &'static str,
        trigger: &str,
        file: &str,
        payload: &[u8],
        at: OffsetDateTime,
    ) -> Result<Run, DemoError> {
        let path = self.dir.join(file);
        std::fs::write(&path, payload)
            .map_err(DemoError::io(format!("writing {}", path.display())))?;
        let report = self
            .triage
            .handle_payload(payload, at, self.deadline())
            .await?;
        Ok(Run {
            trigger: trigger.to_owned(),
            name,
            payload_file: Some(format!("triggers/{file}")),
            subjects: report.subjects,
            ignored: report.ignored_items,
            flushed: Vec::new(),
            resolved: Vec::new(),
            at,
        })
    }

    /// Event Hubs (twice), Event Grid and CloudEvents deliveries.
    async fn deliveries(
        &self,
        services: &Services,
        events_at: OffsetDateTime,
    ) -> Result<Vec<Run>, DemoError> {
        let mut runs = Vec::new();
        // Event Hubs delivers at least once: the same batch twice, as after a lost checkpoint.
        // One batch for the whole deployment: the first account's records, one of the second
        // account's, and one of an account that is not watched.
        let event_hubs = feed::with_other_accounts(
            &feed::event_hubs_body(&services.emulator, WELL_KNOWN_ACCOUNT_NAME, events_at),
            &services.second,
            SECOND_ACCOUNT_NAME,
            UNWATCHED_ACCOUNT_NAME,
            events_at,
        );
        for (name, trigger) in [
            (
                "event-hubs",
                "Event Hubs: a batch of Batch diagnostic-log records (TaskFailEvent, TaskCompleteEvent, a start task's SpecialTaskEvent, a pool event; one record of the second account, one of an account not watched)",
            ),
            (
                "event-hubs-redelivery",
                "Event Hubs: the same batch delivered again (at-least-once delivery)",
            ),
        ] {
            let at = OffsetDateTime::now_utc();
            runs.push(
                self.deliver(name, trigger, "event-hubs.json", &event_hubs, at)
                    .await?,
            );
        }
        let at = OffsetDateTime::now_utc();
        let event_grid = feed::event_grid_body(&services.emulator, &services.batch_url, at);
        runs.push(
            self.deliver(
                "event-grid",
                "Event Grid: a task event body and a {jobId, taskId} reference",
                "event-grid.json",
                &event_grid,
                at,
            )
            .await?,
        );
        let at = OffsetDateTime::now_utc();
        let cloud_events = feed::cloud_events_body(&services.batch_url, at);
        runs.push(
            self.deliver(
                "cloudevents",
                "CloudEvents: a batch of two task references",
                "cloudevents.json",
                &cloud_events,
                at,
            )
            .await?,
        );
        Ok(runs)
    }

    /// Puts Event Grid's dead letters where the sweep finds them, and a copy under `triggers/`.
    fn dead_letters(
        &self,
        out: &Path,
        batch_url: &str,
        at: OffsetDateTime,
    ) -> Result<(), DemoError> {
        for (index, (key, blob)) in feed::dead_letter_blobs(batch_url, at).iter().enumerate() {
            let path = dead_letter_dir(out).join(key);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(DemoError::io(format!("creating {}", parent.display())))?;
            }
            std::fs::write(&path, blob)
                .map_err(DemoError::io(format!("writing {}", path.display())))?;
            let copy = self.dir.join(format!("dead-letter-{}.json", index + 1));
            std::fs::write(&copy, blob)
                .map_err(DemoError::io(format!("writing {}", copy.display())))?;
        }
        Ok(())
    }

    /// The timer's job, twice: the second finds everything handled, and the stuck job its
    /// owner terminated in between resolved, and the pool that reached its target. The first also takes in Event Grid's dead
    /// letters, reported as a run of their own. Then a third tick, one `group_interval` later
    /// (time is an argument of `tick`, so the demo does not wait): the groups that grew since
    /// their first message are announced again, and the one that escalated pages.
    async fn sweeps(
        &self,
        services: &Services,
        batch: &BatchClient,
    ) -> Result<Vec<Run>, DemoError> {
        // The timer's sweep finds what no event announced; a first run looks back a day so
        // every failure of the scenario (the oldest ended hours ago) is in reach.
        let options = SweepOptions {
            first_lookback: Duration::from_secs(24 * 3600),
            ..SweepOptions::default()
        };
        let mut runs = Vec::new();
        for (name, trigger) in [
            (
                "sweep",
                "Timer sweep: failed tasks since the cursor, ended and stuck jobs, prep/release failures, pools and nodes in trouble",
            ),
            (
                "sweep-again",
                "Timer sweep, next tick: everything is already handled; the stuck job backfill was terminated by its owner and devbatch1's quota-pool reached its target (its quota was raised), so their groups are resolved",
            ),
            (
                "tick-later",
                "Timer tick one group_interval later: groups that grew are announced again (now N, was M); an escalated one pages",
            ),
        ] {
            if name == "sweep-again" {
                // What an operator would do about the stuck job; Batch then completes it.
                let options = batch_client::TerminateJobOptions {
                    reason: Some("stuck: terminated by its owner".to_owned()),
                    ..Default::default()
                };
                batch
                    .terminate_job(RESOLVED_JOB, &options, self.deadline())
                    .await?;
                services.emulator.settle();
                // The quota was raised: the pool that could not resize reaches its target, and
                // the next tick's pool sweep sees its trouble is over.
                services.emulator.finish_pool_resize(RESOLVED_POOL);
            }
            let mut at = OffsetDateTime::now_utc();
            if name == "tick-later" {
                at += DiagnosisGrouping::default().group_interval + Duration::from_secs(1);
            }
            let tick = self.triage.tick(at, self.deadline(), &options).await?;
            let mut subjects = tick.sweep.subjects;
            subjects.extend(tick.pools.subjects);
            runs.push(Run {
                trigger: trigger.to_owned(),
                name,
                payload_file: None,
                subjects,
                ignored: 0,
                flushed: tick.flushed,
                resolved: tick.resolved,
                at,
            });
            if !tick.parked.is_empty() {
                runs.push(Run {
                    trigger: "Event Grid dead letters, taken in by the sweep: an event Event Grid gave up on (already handled), and a blob cut short (kept as poison, alerted once)".to_owned(),
                    name: "dead-letters",
                    payload_file: Some("triggers/dead-letter-1.json".to_owned()),
                    subjects: tick.parked.subjects,
                    ignored: 0,
                    flushed: Vec::new(),
                    resolved: Vec::new(),
                    at,
                });
            }
        }
        Ok(runs)
    }
}

/// The failed subjects of the runs, parsed, once each, in order.
fn failed_subjects(runs: &[Run]) -> BTreeSet<SubjectKey> {
    runs.iter()
        .flat_map(|r| &r.subjects)
        .filter(|s| s.class.is_some_and(|c| c.is_failure()))
        .filter_map(|s| s.subject.parse().ok())
        .collect()
}

/// The diagnosis of every failed subject, as the pipeline sees it now: `Triage::diagnose` is
/// the side-effect-free re-read the HTTP `Diagnose` function uses.
async fn read_back_diagnoses(triage: &Triage, runs: &[Run]) -> Vec<diagnosis::Diagnosis> {
    let mut diagnoses = Vec::new();
    let mut jobs_read = BTreeSet::new();
    for subject in failed_subjects(runs) {
        let deadline = Deadline::after(Duration::from_secs(30));
        // Each subject is read back from its own account.
        let Some(triage) = triage.account(subject.account()) else {
            continue;
        };
        let found = match &subject {
            SubjectKey::Task { job, task, .. } => triage.diagnose(job, Some(task), deadline).await,
            // One read per job gives the job and each failed prep/release node.
            SubjectKey::Job { job, .. }
            | SubjectKey::PrepNode { job, .. }
            | SubjectKey::ReleaseNode { job, .. } => {
                if !jobs_read.insert((subject.account().to_owned(), job.clone())) {
                    continue;
                }
                triage.diagnose(job, None, deadline).await
            }
            // Batch keeps no object for a start task to re-read: its diagnosis came from the
            // event, and the report takes it from the alert or the preserved diagnosis.json.
            // A delivery kept as poison is not Batch's: its diagnosis is the alert's; so are
            // those of pools and nodes.
            SubjectKey::StartTask { .. }
            | SubjectKey::Delivery { .. }
            | SubjectKey::Pool { .. }
            | SubjectKey::Node { .. } => continue,
        };
        // A subject that cannot be read back still appears in the report, from the runs.
        diagnoses.extend(found.unwrap_or_default());
    }
    diagnoses
}

fn rfc3339(t: OffsetDateTime) -> Option<String> {
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// Start and end times of each failed subject: tasks and jobs from the emulator's view (the
/// account's truth), prep/release nodes from the job's preparation and release task status,
/// start tasks from the event the demo fed at `events_at` (Batch keeps no object for them).
async fn subject_times(
    accounts: &[(&str, &Emulator, BatchClient)],
    runs: &[Run],
    events_at: OffsetDateTime,
) -> BTreeMap<SubjectKey, Times> {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let mut times = BTreeMap::new();
    for subject in failed_subjects(runs) {
        let Some((_, emulator, batch)) = accounts
            .iter()
            .find(|(name, ..)| name.eq_ignore_ascii_case(subject.account()))
        else {
            continue;
        };
        let batch: &dyn BatchApi = batch;
        let found = match &subject {
            SubjectKey::Task { job, task, .. } => emulator.task(job, task).map(|t| {
                let e = &t["executionInfo"];
                (text(&e["startTime"]), text(&e["endTime"]))
            }),
            SubjectKey::Job { job, .. } => emulator.job(job).map(|j| {
                let e = &j["executionInfo"];
                (
                    text(&e["startTime"]).or_else(|| text(&j["creationTime"])),
                    text(&e["endTime"]),
                )
            }),
            SubjectKey::PrepNode { job, node, .. } => node_times(batch, job, node, false).await,
            SubjectKey::ReleaseNode { job, node, .. } => node_times(batch, job, node, true).await,
            SubjectKey::Pool { pool, .. } => emulator.pool(pool).map(|p| {
                (
                    text(&p["allocationStateTransitionTime"])
                        .or_else(|| text(&p["stateTransitionTime"])),
                    None,
                )
            }),
            SubjectKey::Node { pool, node, .. } => emulator
                .node(pool, node)
                .map(|n| (text(&n["stateTransitionTime"]), None)),
            SubjectKey::StartTask { pool, node, .. } => feed::START_TASK_FAILURES
                .iter()
                .find(|f| f.pool == pool && f.node == node)
                .map(|f| {
                    let (start, end) = f.times(events_at);
                    (rfc3339(start), rfc3339(end))
                }),
            SubjectKey::Delivery { .. } => None,
        };
        if let Some(found) = found {
            times.insert(subject, found);
        }
    }
    times
}

/// When a job's preparation (or release) task ran on `node`.
async fn node_times(batch: &dyn BatchApi, job: &str, node: &str, release: bool) -> Option<Times> {
    use futures::TryStreamExt;
    let stamp = |t: Option<diagnosis::wire::Timestamp>| t.and_then(|t| rfc3339(t.0));
    let statuses: Vec<diagnosis::wire::PrepReleaseStatus> =
        batch_client::items(batch.list_prep_release_status(
            job,
            &batch_client::ListOptions::default(),
            Deadline::after(Duration::from_secs(30)),
        ))
        .try_collect()
        .await
        .unwrap_or_default();
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

#[cfg(test)]
mod tests {
    use super::*;

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
