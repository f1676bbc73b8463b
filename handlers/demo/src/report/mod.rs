//! What the demo shows: the pipeline's reports folded into one finding per failed subject, the
//! alerts the receivers got, the operator's silence and what it muted, and the checks that it
//! all converged (each failure preserved once and alerted once, however many triggers saw it).
//! Written as `report.json`, as `report.html` (the store's report page from
//! `batch-triage-report`, with the demo's sections drawn by its helpers: self-contained, every
//! value escaped), as files under `alerts/`, and as the console summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use diagnosis::{Diagnosis, FailureClass};
use pipeline::triage::Outcome;
use preserve::Manifest;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

use crate::receivers::{Channel, Received};
use crate::run::OperatorSilence;
use crate::subject::{Owner, SubjectKey};
use crate::{DEMO_MAX_FILE_BYTES, DemoError, DemoOutcome, Run};

mod html;

/// Bytes of stderr shown per failure: the end of the file says the most.
const TAIL_BYTES: u64 = 4096;

/// One failed subject and everything that happened to it.
#[derive(Debug)]
pub(crate) struct Finding {
    /// The subject, from the pipeline's label.
    subject: SubjectKey,
    class: FailureClass,
    /// The pipeline's diagnosis: the one it alerted with when there is one (it knows the
    /// stderr tail), else the read-back, else the `diagnosis.json` it preserved (a start task
    /// has nothing to read back).
    diagnosis: Option<Diagnosis>,
    /// Runs that saw it, in order.
    seen_by: Vec<&'static str>,
    /// Preserved folders, relative to the demo directory.
    preserved: Vec<String>,
    /// Runs that copied its logs (not "already preserved"): 1 when it converged.
    copies: usize,
    /// Receivers notified, one entry per delivery.
    notified: Vec<String>,
    /// Receivers whose delivery went to the outbox.
    outboxed: Vec<String>,
    /// The job or node action decision.
    action: Option<String>,
    /// The silence that muted its alerts.
    muted_by: Option<String>,
    /// Where the node agent's logs stand (`complete`, `node_gone`, …), when asked for.
    pub(crate) agent_logs: Option<String>,
    /// Failed or refused outcomes.
    problems: Vec<String>,
    /// The end of the preserved stderr, redacted.
    stderr_tail: Option<String>,
    /// The preserved folders that are complete.
    manifests: Vec<PreservedFolder>,
    /// Start and end (RFC 3339).
    start: Option<String>,
    end: Option<String>,
}

/// A complete preserved folder.
#[derive(Debug)]
struct PreservedFolder {
    /// Relative to the demo directory.
    folder: String,
    manifest: Manifest,
    /// Whether the pipeline's `diagnosis.json` sits beside the logs (task and prep folders).
    has_diagnosis: bool,
}

/// One message a receiver got, saved under `alerts/`.
#[derive(Debug)]
pub(crate) struct AlertFile {
    channel: Channel,
    /// Relative to the demo directory.
    file: String,
    headline: String,
    /// The webhook's signature header (never a secret: it is an HMAC of the body).
    signed: bool,
    body: Vec<u8>,
}

/// Everything the report shows.
pub struct Report {
    findings: Vec<Finding>,
    /// Labels of failed subjects of no known shape: each is a failure the report cannot place,
    /// so the run does not count as converged.
    unrecognised: Vec<String>,
    alerts: Vec<AlertFile>,
    runs: Vec<Run>,
    scenario: String,
    /// The accounts the pipeline watched.
    accounts: Vec<String>,
    /// The silences the operator added between the runs.
    silences: Vec<OperatorSilence>,
    /// The store's report, the page's first part.
    store: report::StoreReport,
    generated: String,
}

impl Report {
    /// Folds the runs into findings and reads the preserved files.
    pub fn build(out: &Path, outcome: DemoOutcome) -> Self {
        let alerts = alert_files(&outcome.received);
        let alerted: Vec<Diagnosis> = outcome
            .received
            .iter()
            .filter(|r| r.channel == Channel::Webhook)
            .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .filter_map(|v| serde_json::from_value(v["diagnosis"].clone()).ok())
            .collect();
        let (mut findings, unrecognised) = fold_runs(out, &outcome.runs);
        for finding in &mut findings {
            finding.read_back(out, &alerted, &outcome);
        }
        // Most urgent first, then by subject, so the page reads like a triage list.
        findings
            .sort_by_cached_key(|f| (std::cmp::Reverse(f.class.severity()), f.subject.to_string()));
        Self {
            findings,
            unrecognised,
            alerts,
            runs: outcome.runs,
            scenario: outcome.scenario,
            accounts: outcome.accounts,
            silences: outcome.silences,
            store: outcome.store,
            generated: time::OffsetDateTime::now_utc()
                .format(&Rfc3339)
                .unwrap_or_default(),
        }
    }

    /// Whether every failure was preserved at most once, alerted at most once per receiver, and
    /// handled without a failed outcome.
    pub fn converged(&self) -> bool {
        self.unrecognised.is_empty()
            && self.findings.iter().all(|f| {
                f.copies <= 1
                    && f.problems.is_empty()
                    && f.outboxed.is_empty()
                    && !has_duplicates(&f.notified)
            })
    }

    fn by_class(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for finding in &self.findings {
            *counts.entry(finding.class.as_str()).or_insert(0) += 1;
        }
        counts
    }

    /// How many findings each job (or pool: `pool linux`) has, jobs first; a start task
    /// belongs to no job, so it is under its pool.
    fn by_job_counts(&self) -> Vec<(String, usize)> {
        let mut jobs: BTreeMap<Owner, usize> = BTreeMap::new();
        for finding in &self.findings {
            *jobs.entry(finding.subject.owner()).or_default() += 1;
        }
        jobs.into_iter()
            .map(|(owner, count)| (owner.to_string(), count))
            .collect()
    }

    /// How many alerts the silence `id` muted, as the store counts them.
    fn muted_count(&self, id: &str) -> usize {
        self.store
            .silences
            .iter()
            .find(|l| l.silence.id == id)
            .map_or(0, |l| l.muted)
    }

    /// The operator's silences with their counts and the subjects they muted.
    fn silences_json(&self) -> Vec<Value> {
        self.silences
            .iter()
            .map(|added| {
                let s = &added.silence;
                let muted: Vec<String> = self
                    .findings
                    .iter()
                    .filter(|f| f.muted_by.as_deref() == Some(s.id.as_str()))
                    .map(|f| f.subject.to_string())
                    .collect();
                json!({
                    "id": s.id,
                    "matchers": s.matchers,
                    "author": s.author,
                    "comment": s.comment,
                    "starts": s.starts,
                    "ends": s.ends,
                    "addedBefore": added.before,
                    "command": html::silence_command(added),
                    "muted": self.muted_count(&s.id),
                    "mutedSubjects": muted,
                })
            })
            .collect()
    }

    fn alert_counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for alert in &self.alerts {
            *counts.entry(alert.channel.receiver_name()).or_insert(0) += 1;
        }
        counts
    }

    /// Subjects seen by more than one trigger: the duplicates the pipeline absorbed.
    fn repeat_sightings(&self) -> usize {
        self.findings
            .iter()
            .map(|f| f.seen_by.len().saturating_sub(1))
            .sum()
    }

    /// Writes `report.json`, `report.html` and `alerts/`.
    pub fn write(&self, out: &Path) -> Result<(), DemoError> {
        let alerts_dir = out.join("alerts");
        std::fs::create_dir_all(&alerts_dir)
            .map_err(DemoError::io(format!("creating {}", alerts_dir.display())))?;
        for alert in &self.alerts {
            let pretty = serde_json::from_slice::<Value>(&alert.body)
                .ok()
                .map(|mut v| {
                    // PagerDuty's routing key travels in the body; the report never keeps it.
                    if alert.channel == Channel::PagerDuty && v.get("routing_key").is_some() {
                        v["routing_key"] = Value::String("(routing key, not kept)".to_owned());
                    }
                    v
                })
                .and_then(|v| serde_json::to_vec_pretty(&v).ok());
            let bytes = match (alert.channel, pretty) {
                (
                    Channel::Teams | Channel::Webhook | Channel::PagerDuty | Channel::Slack,
                    Some(pretty),
                ) => pretty,
                _ => alert.body.clone(),
            };
            std::fs::write(out.join(&alert.file), bytes)
                .map_err(DemoError::io(format!("writing {}", alert.file)))?;
        }
        let json = serde_json::to_vec_pretty(&self.to_json())?;
        std::fs::write(out.join("report.json"), json)
            .map_err(DemoError::io("writing report.json"))?;
        std::fs::write(out.join("report.html"), self.to_html())
            .map_err(DemoError::io("writing report.html"))?;
        Ok(())
    }

    fn to_json(&self) -> Value {
        let failures: Vec<Value> = self
            .findings
            .iter()
            .map(|f| {
                json!({
                    "subject": f.subject.to_string(),
                    "class": f.class.as_str(),
                    "severity": f.class.severity().as_str(),
                    "diagnosis": f.diagnosis,
                    "seenBy": f.seen_by,
                    "preserved": f.preserved,
                    "copies": f.copies,
                    "notified": f.notified,
                    "outboxed": f.outboxed,
                    "action": f.action,
                    "mutedBy": f.muted_by,
                    "agentLogs": f.agent_logs,
                    "problems": f.problems,
                    "stderrTail": f.stderr_tail,
                    "manifests": f.manifests.iter().map(|p| json!({"folder": p.folder, "manifest": p.manifest})).collect::<Vec<_>>(),
                    "startTime": f.start,
                    "endTime": f.end,
                })
            })
            .collect();
        let runs: Vec<Value> = self
            .runs
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "trigger": r.trigger,
                    "payload": r.payload_file,
                    "at": r.at.format(&Rfc3339).unwrap_or_default(),
                    "ignoredItems": r.ignored,
                    "flushed": r.flushed,
                    "resolved": r.resolved,
                    "subjects": r.subjects.iter().map(|s| json!({
                        "subject": s.subject,
                        "class": s.class.map(|c| c.as_str()),
                        "outcome": outcome_text(&s.outcome),
                        "alreadyPreserved": s.already_preserved,
                        "notified": s.notified,
                        "action": s.action,
                        "mutedBy": s.muted_by,
                        "agentLogs": s.agent_logs,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let alerts: Vec<Value> = self
            .alerts
            .iter()
            .map(|a| {
                json!({
                    "receiver": a.channel.receiver_name(),
                    "file": a.file,
                    "headline": a.headline,
                    "signed": a.signed,
                })
            })
            .collect();
        json!({
            "version": 1,
            "generatedAt": self.generated,
            "accounts": self.accounts,
            "scenario": self.scenario,
            "converged": self.converged(),
            "byClass": self.by_class(),
            "byJob": self.by_job_counts().into_iter().collect::<BTreeMap<_, _>>(),
            "failures": failures,
            "unrecognisedSubjects": self.unrecognised,
            "runs": runs,
            "alerts": alerts,
            "silences": self.silences_json(),
            // What `batch-triage report --output json` says of the demo's store.
            "store": self.store,
        })
    }

    /// What a reader of the console should know about the logs: files not copied on purpose
    /// (size caps) and logs Batch no longer has (the node went away, retention expired).
    fn log_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for finding in &self.findings {
            for folder in &finding.manifests {
                for skipped in &folder.manifest.skipped {
                    notes.push(format!(
                        "{}: {} ({}) was recorded as skipped, not copied: the demo copies files up to {} (the handlers' BATCH_TRIAGE_MAX_FILE_MIB), so it runs in seconds",
                        finding.subject,
                        skipped.name,
                        human_bytes(skipped.bytes),
                        human_bytes(DEMO_MAX_FILE_BYTES)
                    ));
                }
                // Files that never existed (a task that never started) are not news; files
                // that are gone are why batch-triage copies logs early.
                let gone: Vec<&str> = folder
                    .manifest
                    .missing
                    .iter()
                    .filter(|m| GONE_FOR_GOOD.contains(&m.code.as_str()))
                    .map(|m| m.code.as_str())
                    .collect();
                if let Some(code) = gone.first() {
                    notes.push(format!(
                        "{}: its logs were already gone ({code}); the manifest records them as missing",
                        finding.subject
                    ));
                }
            }
        }
        notes
    }

    /// The `--output json` summary.
    pub fn summary_json(&self, out: &Path) -> Value {
        json!({
            "out": out.display().to_string(),
            "report": out.join("report.html").display().to_string(),
            "reportJson": out.join("report.json").display().to_string(),
            "failures": self.findings.len(),
            "byClass": self.by_class(),
            "byJob": self.by_job_counts().into_iter().collect::<BTreeMap<_, _>>(),
            "alerts": self.alert_counts(),
            "silences": self.silences_json(),
            "repeatSightings": self.repeat_sightings(),
            "converged": self.converged(),
            "notes": self.log_notes(),
        })
    }

    /// The console summary: one line per alert, counts by class, where the report is.
    pub fn summary_text(&self, out: &Path, elapsed: Duration) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "batch-triage demo: emulated Batch accounts {} (no Azure account), one pipeline, loopback receivers\n",
            self.accounts.join(", ")
        );
        let _ = writeln!(text, "Triggers");
        for run in &self.runs {
            let failures = run
                .subjects
                .iter()
                .filter(|s| s.class.is_some_and(|c| c.is_failure()))
                .count();
            // Nothing copied and nobody told: every failure in this run had been handled.
            let absorbed = failures > 0
                && run.flushed.is_empty()
                && run
                    .subjects
                    .iter()
                    .filter(|s| s.class.is_some_and(|c| c.is_failure()))
                    .all(|s| {
                        s.notified.is_empty() && (s.preserved.is_empty() || s.already_preserved)
                    });
            let resolved = if run.resolved.is_empty() {
                String::new()
            } else {
                format!(", {} resolved messages", run.resolved.len())
            };
            let _ = writeln!(
                text,
                "  {:<22} {failures:>2} failures, {:>2} alerts sent{resolved}  {}",
                run.name,
                run.subjects.iter().map(|s| s.notified.len()).sum::<usize>() + run.flushed.len(),
                if absorbed {
                    "(all already handled: nothing copied or sent again)"
                } else {
                    ""
                }
            );
        }
        for added in &self.silences {
            let _ = writeln!(
                text,
                "\nSilence, added by the operator before the {} (the store's, as from the CLI):\n  {}\n  {}: muted {} alerts (logs kept): {}",
                added.before,
                html::silence_command(added),
                added.silence.id,
                self.muted_count(&added.silence.id),
                self.findings
                    .iter()
                    .filter(|f| f.muted_by.as_deref() == Some(added.silence.id.as_str()))
                    .map(|f| f.subject.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let _ = writeln!(
            text,
            "\nAlerts (copies in {})",
            out.join("alerts").display()
        );
        for alert in &self.alerts {
            let _ = writeln!(
                text,
                "  {:<9} {:<70} {}",
                alert.channel.receiver_name(),
                clip(&alert.headline, 70),
                alert.file
            );
        }
        let _ = writeln!(
            text,
            "\nFailures by class: {} failures, {} repeat sightings absorbed, {} alerts",
            self.findings.len(),
            self.repeat_sightings(),
            self.alerts.len()
        );
        for (class, count) in self.by_class() {
            let _ = writeln!(text, "  {class:<24} {count}");
        }
        // A start task belongs to no job, so it is counted under its pool.
        let by_job: Vec<String> = self
            .by_job_counts()
            .into_iter()
            .map(|(owner, count)| format!("{owner} {count}"))
            .collect();
        let _ = writeln!(text, "By job (or pool): {}", by_job.join(", "));
        let notes = self.log_notes();
        if !notes.is_empty() {
            let _ = writeln!(text, "\nLogs");
            for note in notes {
                let _ = writeln!(text, "  {note}");
            }
        }
        let _ = writeln!(
            text,
            "\n{}",
            if self.converged() {
                "Converged: every failure's logs were copied once and each receiver was told once."
            } else {
                "NOT converged: some failure was copied or alerted twice, or failed; see the report."
            }
        );
        let report = out.join("report.html");
        let _ = writeln!(
            text,
            "\nReport:   {}\n          open it in a browser, e.g. `xdg-open {}` (Linux) or `open {}` (macOS)\nJSON:     {}\nLogs:     {}\nDone in {:.1}s.",
            report.display(),
            report.display(),
            report.display(),
            out.join("report.json").display(),
            out.join("store").display(),
            elapsed.as_secs_f64()
        );
        text
    }
}

/// The runs folded into one finding per failed subject, in the order first seen, and the
/// labels of failed subjects that name no subject.
fn fold_runs(out: &Path, runs: &[Run]) -> (Vec<Finding>, Vec<String>) {
    let mut findings: BTreeMap<SubjectKey, Finding> = BTreeMap::new();
    let mut unrecognised = Vec::new();
    for run in runs {
        for subject in &run.subjects {
            let Some(class) = subject.class.filter(|c| c.is_failure()) else {
                continue;
            };
            let Ok(key) = subject.subject.parse::<SubjectKey>() else {
                if !unrecognised.contains(&subject.subject) {
                    unrecognised.push(subject.subject.clone());
                }
                continue;
            };
            let finding = findings
                .entry(key.clone())
                .or_insert_with(|| Finding::new(key, class));
            finding.seen_by.push(run.name);
            for link in &subject.preserved {
                let relative = relative_to(out, link);
                if !finding.preserved.contains(&relative) {
                    finding.preserved.push(relative);
                }
            }
            if !subject.preserved.is_empty() && !subject.already_preserved {
                finding.copies += 1;
            }
            finding.notified.extend(subject.notified.iter().cloned());
            finding.outboxed.extend(subject.outboxed.iter().cloned());
            if subject.action.is_some() {
                finding.action.clone_from(&subject.action);
            }
            if subject.agent_logs.is_some() {
                finding.agent_logs.clone_from(&subject.agent_logs);
            }
            if subject.muted_by.is_some() {
                finding.muted_by.clone_from(&subject.muted_by);
            }
            match &subject.outcome {
                Outcome::Done | Outcome::Skipped(_) => {}
                Outcome::Refused(reason) => finding.problems.push(format!("refused: {reason}")),
                Outcome::Failed { reason, .. } => finding.problems.push(reason.clone()),
            }
        }
    }
    (findings.into_values().collect(), unrecognised)
}

impl Finding {
    fn new(subject: SubjectKey, class: FailureClass) -> Self {
        Self {
            subject,
            class,
            diagnosis: None,
            seen_by: Vec::new(),
            preserved: Vec::new(),
            copies: 0,
            notified: Vec::new(),
            outboxed: Vec::new(),
            action: None,
            muted_by: None,
            agent_logs: None,
            problems: Vec::new(),
            stderr_tail: None,
            manifests: Vec::new(),
            start: None,
            end: None,
        }
    }

    /// Fills in the diagnosis (the alerted one, else the read-back, else the preserved
    /// `diagnosis.json`), the preserved folders' manifests, the stderr tail and the times.
    fn read_back(&mut self, out: &Path, alerted: &[Diagnosis], outcome: &DemoOutcome) {
        let about = |d: &&Diagnosis| d.class == self.class && self.subject.matches(d);
        let diagnosis = alerted
            .iter()
            .find(about)
            .or_else(|| outcome.diagnoses.iter().find(about))
            .cloned()
            .or_else(|| {
                self.preserved.iter().find_map(|folder| {
                    let bytes = std::fs::read(out.join(folder).join("diagnosis.json")).ok()?;
                    serde_json::from_slice::<Diagnosis>(&bytes)
                        .ok()
                        .filter(|d| about(&d))
                })
            });
        self.diagnosis = diagnosis;
        for folder in &self.preserved {
            let path = out.join(folder);
            if let Ok(bytes) = std::fs::read(path.join("manifest.json"))
                && let Ok(manifest) = serde_json::from_slice::<Manifest>(&bytes)
            {
                self.manifests.push(PreservedFolder {
                    folder: folder.clone(),
                    manifest,
                    has_diagnosis: path.join("diagnosis.json").is_file(),
                });
            }
            if self.stderr_tail.is_none() {
                self.stderr_tail = read_tail(&path.join("stderr.txt"));
            }
        }
        if let Some((start, end)) = outcome.times.get(&self.subject) {
            self.start.clone_from(start);
            self.end.clone_from(end);
        }
    }
}

/// The store's link (a path under `out`) made relative to `out`, with `/` separators. The
/// store may report its root resolved (`/tmp` is `/private/tmp` on macOS), so the resolved
/// `out` is tried too.
fn relative_to(out: &Path, link: &str) -> String {
    let link = Path::new(link);
    let stripped = link.strip_prefix(out).or_else(|error| {
        out.canonicalize()
            .ok()
            .and_then(|resolved| link.strip_prefix(resolved).ok())
            .ok_or(error)
    });
    match stripped {
        Ok(relative) => relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/"),
        Err(_) => link.display().to_string(),
    }
}

/// The last [`TAIL_BYTES`] of a file, redacted; `None` when absent or empty.
fn read_tail(path: &Path) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))
        .ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim_end();
    (!text.is_empty()).then(|| diagnosis::redact::redact(text))
}

/// Missing-file codes that mean the logs existed and are gone: the node was removed or the
/// task's retention expired.
const GONE_FOR_GOOD: &[&str] = &["NodeNotFound", "TaskFilesUnavailable", "TaskFilesCleanedup"];

/// `2.0 GiB`, `16.0 MiB`, `210 bytes`.
pub(super) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Done => "done".to_owned(),
        Outcome::Skipped(why) => format!("skipped: {why}"),
        Outcome::Refused(why) => format!("refused: {why}"),
        Outcome::Failed { reason, retryable } => {
            format!(
                "failed ({}): {reason}",
                if *retryable { "retryable" } else { "final" }
            )
        }
    }
}

fn has_duplicates(items: &[String]) -> bool {
    let mut seen = std::collections::BTreeSet::new();
    !items.iter().all(|i| seen.insert(i))
}

fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut clipped: String = text.chars().take(max.saturating_sub(1)).collect();
    clipped.push('…');
    clipped
}

/// Numbers each channel's messages and names them, with a one-line headline.
fn alert_files(received: &[Received]) -> Vec<AlertFile> {
    let mut numbers: BTreeMap<&str, usize> = BTreeMap::new();
    received
        .iter()
        .map(|r| {
            let number = numbers.entry(r.channel.receiver_name()).or_insert(0);
            *number += 1;
            AlertFile {
                channel: r.channel,
                file: format!("alerts/{}", r.channel.file_name(*number)),
                headline: headline(r),
                signed: r.signature.is_some(),
                body: r.body.clone(),
            }
        })
        .collect()
}

fn headline(received: &Received) -> String {
    match received.channel {
        Channel::Teams => serde_json::from_slice::<Value>(&received.body)
            .ok()
            .and_then(|v| {
                // The card's plain-text title (its body holds untrusted text in text runs).
                v["attachments"][0]["content"]["fallbackText"]
                    .as_str()
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "(not an Adaptive Card)".to_owned()),
        Channel::Webhook => serde_json::from_slice::<Value>(&received.body)
            .ok()
            .map(|v| {
                let d = &v["diagnosis"];
                format!(
                    "{} · {} · {}",
                    d["severity"].as_str().unwrap_or_default().to_uppercase(),
                    d["class"].as_str().unwrap_or_default(),
                    d["summary"].as_str().unwrap_or_default()
                )
            })
            .unwrap_or_else(|| "(not JSON)".to_owned()),
        Channel::Email => mail_subject(&received.body).unwrap_or_else(|| "(no subject)".to_owned()),
        Channel::PagerDuty => serde_json::from_slice::<Value>(&received.body)
            .ok()
            .map(|v| match v["event_action"].as_str() {
                Some("trigger") => format!(
                    "trigger · {}",
                    v["payload"]["summary"].as_str().unwrap_or_default()
                ),
                action => format!(
                    "{} · incident {}",
                    action.unwrap_or("(no action)"),
                    v["dedup_key"].as_str().unwrap_or_default()
                ),
            })
            .unwrap_or_else(|| "(not JSON)".to_owned()),
        Channel::Slack => serde_json::from_slice::<Value>(&received.body)
            .ok()
            .and_then(|v| v["text"].as_str().map(unescape_slack))
            .unwrap_or_else(|| "(not a Slack message)".to_owned()),
    }
}

/// A Slack message's notification text as a person reads it (Slack shows `&lt;` as `<`); the
/// report escapes it again where it is HTML.
fn unescape_slack(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The `Subject:` header of a MIME message, unfolded.
fn mail_subject(mail: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(mail);
    let headers = text.split("\r\n\r\n").next()?;
    let mut subject: Option<String> = None;
    for line in headers.split("\r\n") {
        match &mut subject {
            // Unfolding removes the line break and keeps the whitespace (RFC 5322 §2.2.3).
            Some(s) if line.starts_with([' ', '\t']) => s.push_str(line),
            Some(_) => break,
            None => {
                if let Some(rest) = line.strip_prefix("Subject:") {
                    subject = Some(rest.trim().to_owned());
                }
            }
        }
    }
    subject
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_links_become_relative_to_the_demo_directory_and_others_stay_as_they_are() {
        let out = Path::new("/somewhere/demo");
        assert_eq!(
            relative_to(out, "/somewhere/demo/store/devbatch1/etl/oom/attempt-0"),
            "store/devbatch1/etl/oom/attempt-0"
        );
        assert_eq!(relative_to(out, "/elsewhere/store/x"), "/elsewhere/store/x");
    }

    #[test]
    fn sizes_are_shown_in_binary_units() {
        assert_eq!(human_bytes(210), "210 bytes");
        assert_eq!(human_bytes(16 << 20), "16.0 MiB");
        assert_eq!(human_bytes(2_147_483_648), "2.0 GiB");
    }

    #[test]
    fn the_mail_subject_is_unfolded() {
        let mail =
            b"From: a@b\r\nSubject: [CRITICAL] job.stuck:\r\n job prep-fail\r\nTo: c@d\r\n\r\nbody";
        assert_eq!(
            mail_subject(mail).as_deref(),
            Some("[CRITICAL] job.stuck: job prep-fail")
        );
        assert_eq!(mail_subject(b"From: a@b\r\n\r\nbody"), None);
    }
}
