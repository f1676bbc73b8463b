//! What the demo shows: the pipeline's reports folded into one finding per failed subject, the
//! alerts the receivers got, and the checks that it all converged (each failure preserved once
//! and alerted once, however many triggers saw it). Written as `report.json`, as a
//! self-contained `report.html` (inline CSS, no script, every value escaped: task output and ids
//! are untrusted), as files under `alerts/`, and as the console summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use diagnosis::{Diagnosis, FailureClass};
use pipeline::triage::Outcome;
use preserve::Manifest;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

// HTML escaping is the email channel's: one definition of what is safe in a page.
pub(crate) use notify::html_escape as escape;

use super::receivers::{Channel, Received};
use super::{DEMO_MAX_FILE_BYTES, DemoOutcome, MARKER, Owner, Run, SubjectRef};

/// Bytes of stderr shown per failure: the end of the file says the most.
const TAIL_BYTES: u64 = 4096;

/// One failed subject and everything that happened to it.
#[derive(Debug)]
pub(crate) struct Finding {
    /// The pipeline's label: `account/job[/task]`, `account/job/_jobprep/node`,
    /// `account/_pools/pool/node/_starttask`.
    subject: String,
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
    /// The job action decision.
    action: Option<String>,
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
pub(crate) struct Report {
    findings: Vec<Finding>,
    alerts: Vec<AlertFile>,
    runs: Vec<Run>,
    scenario: String,
    account: String,
    generated: String,
}

impl Report {
    /// Folds the runs into findings and reads the preserved files.
    pub(crate) fn build(out: &Path, outcome: DemoOutcome) -> anyhow::Result<Self> {
        let alerts = alert_files(&outcome.received);
        let alerted: Vec<Diagnosis> = outcome
            .received
            .iter()
            .filter(|r| r.channel == Channel::Webhook)
            .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .filter_map(|v| serde_json::from_value(v["diagnosis"].clone()).ok())
            .collect();
        let mut findings: BTreeMap<String, Finding> = BTreeMap::new();
        for run in &outcome.runs {
            for subject in &run.subjects {
                let Some(class) = subject.class.filter(|c| c.is_failure()) else {
                    continue;
                };
                let finding = findings
                    .entry(subject.subject.clone())
                    .or_insert_with(|| Finding {
                        subject: subject.subject.clone(),
                        class,
                        diagnosis: None,
                        seen_by: Vec::new(),
                        preserved: Vec::new(),
                        copies: 0,
                        notified: Vec::new(),
                        outboxed: Vec::new(),
                        action: None,
                        problems: Vec::new(),
                        stderr_tail: None,
                        manifests: Vec::new(),
                        start: None,
                        end: None,
                    });
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
                match &subject.outcome {
                    Outcome::Done | Outcome::Skipped(_) => {}
                    Outcome::Refused(reason) => finding.problems.push(format!("refused: {reason}")),
                    Outcome::Failed { reason, .. } => finding.problems.push(reason.clone()),
                }
            }
        }
        let mut findings: Vec<Finding> = findings.into_values().collect();
        for finding in &mut findings {
            let parsed = SubjectRef::parse(&finding.subject);
            let about = |d: &&Diagnosis| {
                d.class == finding.class && parsed.as_ref().is_some_and(|p| p.matches(d))
            };
            finding.diagnosis = alerted
                .iter()
                .find(about)
                .or_else(|| outcome.diagnoses.iter().find(about))
                .cloned();
            if finding.diagnosis.is_none() {
                finding.diagnosis = finding.preserved.iter().find_map(|folder| {
                    let bytes = std::fs::read(out.join(folder).join("diagnosis.json")).ok()?;
                    serde_json::from_slice::<Diagnosis>(&bytes)
                        .ok()
                        .filter(|d| about(&d))
                });
            }
            for folder in &finding.preserved {
                let path = out.join(folder);
                if let Ok(bytes) = std::fs::read(path.join("manifest.json"))
                    && let Ok(manifest) = serde_json::from_slice::<Manifest>(&bytes)
                {
                    finding.manifests.push(PreservedFolder {
                        folder: folder.clone(),
                        manifest,
                        has_diagnosis: path.join("diagnosis.json").is_file(),
                    });
                }
                if finding.stderr_tail.is_none() {
                    finding.stderr_tail = read_tail(&path.join("stderr.txt"));
                }
            }
            if let Some((start, end)) = outcome.times.get(&finding.subject) {
                finding.start.clone_from(start);
                finding.end.clone_from(end);
            }
        }
        // Most urgent first, then by subject, so the page reads like a triage list.
        findings.sort_by(|a, b| {
            severity_rank(b.class)
                .cmp(&severity_rank(a.class))
                .then_with(|| a.subject.cmp(&b.subject))
        });
        Ok(Self {
            findings,
            alerts,
            runs: outcome.runs,
            scenario: outcome.scenario,
            account: outcome.account,
            generated: time::OffsetDateTime::now_utc()
                .format(&Rfc3339)
                .unwrap_or_default(),
        })
    }

    /// Whether every failure was preserved at most once, alerted at most once per receiver, and
    /// handled without a failed outcome.
    pub(crate) fn converged(&self) -> bool {
        self.findings.iter().all(|f| {
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

    /// Findings by job; a start task belongs to no job, so it is under its pool.
    fn by_job(&self) -> BTreeMap<Owner, Vec<&Finding>> {
        let mut jobs: BTreeMap<Owner, Vec<&Finding>> = BTreeMap::new();
        for finding in &self.findings {
            let owner = SubjectRef::parse(&finding.subject)
                .map_or_else(|| Owner::Job(finding.subject.clone()), |s| s.owner());
            jobs.entry(owner).or_default().push(finding);
        }
        jobs
    }

    /// How many findings each job (or pool: `pool linux`) has, jobs first.
    fn by_job_counts(&self) -> Vec<(String, usize)> {
        self.by_job()
            .into_iter()
            .map(|(owner, findings)| (owner.to_string(), findings.len()))
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
    pub(crate) fn write(&self, out: &Path) -> anyhow::Result<()> {
        let alerts_dir = out.join("alerts");
        std::fs::create_dir_all(&alerts_dir)?;
        for alert in &self.alerts {
            let pretty = serde_json::from_slice::<Value>(&alert.body)
                .ok()
                .and_then(|v| serde_json::to_vec_pretty(&v).ok());
            let bytes = match (alert.channel, pretty) {
                (Channel::Teams | Channel::Webhook, Some(pretty)) => pretty,
                _ => alert.body.clone(),
            };
            std::fs::write(out.join(&alert.file), bytes)
                .with_context(|| format!("writing {}", alert.file))?;
        }
        let json = serde_json::to_vec_pretty(&self.to_json())?;
        std::fs::write(out.join("report.json"), json)?;
        std::fs::write(out.join("report.html"), self.to_html())?;
        Ok(())
    }

    fn to_json(&self) -> Value {
        let failures: Vec<Value> = self
            .findings
            .iter()
            .map(|f| {
                json!({
                    "subject": f.subject,
                    "class": f.class.as_str(),
                    "severity": f.class.severity().as_str(),
                    "diagnosis": f.diagnosis,
                    "seenBy": f.seen_by,
                    "preserved": f.preserved,
                    "copies": f.copies,
                    "notified": f.notified,
                    "outboxed": f.outboxed,
                    "action": f.action,
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
                    "subjects": r.subjects.iter().map(|s| json!({
                        "subject": s.subject,
                        "class": s.class.map(|c| c.as_str()),
                        "outcome": outcome_text(&s.outcome),
                        "alreadyPreserved": s.already_preserved,
                        "notified": s.notified,
                        "action": s.action,
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
            "account": self.account,
            "scenario": self.scenario,
            "converged": self.converged(),
            "byClass": self.by_class(),
            "byJob": self.by_job_counts().into_iter().collect::<BTreeMap<_, _>>(),
            "failures": failures,
            "runs": runs,
            "alerts": alerts,
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
    pub(crate) fn summary_json(&self, out: &Path) -> Value {
        json!({
            "out": out.display().to_string(),
            "report": out.join("report.html").display().to_string(),
            "reportJson": out.join("report.json").display().to_string(),
            "failures": self.findings.len(),
            "byClass": self.by_class(),
            "byJob": self.by_job_counts().into_iter().collect::<BTreeMap<_, _>>(),
            "alerts": self.alert_counts(),
            "repeatSightings": self.repeat_sightings(),
            "converged": self.converged(),
            "notes": self.log_notes(),
        })
    }

    /// The console summary: one line per alert, counts by class, where the report is.
    pub(crate) fn summary_text(&self, out: &Path, elapsed: Duration) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "batch-triage demo: emulated Batch account {} (no Azure account), the real pipeline, loopback receivers\n",
            self.account
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
                && run
                    .subjects
                    .iter()
                    .filter(|s| s.class.is_some_and(|c| c.is_failure()))
                    .all(|s| {
                        s.notified.is_empty() && (s.preserved.is_empty() || s.already_preserved)
                    });
            let _ = writeln!(
                text,
                "  {:<22} {failures:>2} failures, {:>2} alerts sent  {}",
                run.name,
                run.subjects.iter().map(|s| s.notified.len()).sum::<usize>(),
                if absorbed {
                    "(all already handled: nothing copied or sent again)"
                } else {
                    ""
                }
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

    fn to_html(&self) -> String {
        let mut h = String::with_capacity(64 * 1024);
        h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
        h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
        // No script and no outside resource: the page is safe to open from a file, and the CSP
        // says so even if some untrusted text escaped escaping.
        h.push_str("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src 'none'\">\n");
        h.push_str("<title>batch-triage demo report</title>\n<style>\n");
        h.push_str(CSS);
        h.push_str("</style></head><body>\n");
        let _ = writeln!(
            h,
            "<header><h1>batch-triage demo</h1><p>Account <code>{}</code> (the Batch emulator) · generated {} · {} failures · {} alerts · {}</p></header>",
            escape(&self.account),
            escape(&self.generated),
            self.findings.len(),
            self.alerts.len(),
            if self.converged() {
                "<span class=\"ok\">converged: each failure preserved once, each receiver told once</span>"
            } else {
                "<span class=\"bad\">not converged: see the failures below</span>"
            }
        );
        let _ = writeln!(
            h,
            "<details><summary>The scenario</summary><p class=\"muted\">{}</p></details>\n<nav><a href=\"#classes\">By class</a> · <a href=\"#jobs\">By job</a> · <a href=\"#timeline\">Timeline</a> · <a href=\"#failures\">Failures</a> · <a href=\"#triggers\">Triggers</a> · <a href=\"#alerts\">Alerts</a> · <a href=\"report.json\">report.json</a></nav>",
            escape(&self.scenario)
        );

        let _ = writeln!(
            h,
            "<p>The pipeline got {} trigger deliveries: Batch diagnostic-log records through Event Hubs (delivered twice, as at-least-once delivery does), an Event Grid delivery, a CloudEvents batch, and two timer sweeps. They found {} failures; {} times a failure was seen again by another trigger and nothing was copied or sent twice. Logs went to <a href=\"store/\">store/</a> (one folder per task attempt, per node of a failed job preparation or release, and per node whose start task failed, under <code>_pools/</code>; each with <code>manifest.json</code> and <code>diagnosis.json</code>), alerts to <a href=\"alerts/\">alerts/</a>, and the trigger payloads are in <a href=\"triggers/\">triggers/</a>.</p>",
            self.runs.len(),
            self.findings.len(),
            self.repeat_sightings()
        );
        h.push_str("<section id=\"classes\"><h2>Failures by class</h2><table><tr><th>class</th><th>severity</th><th>count</th><th>meaning</th></tr>\n");
        for (class, count) in self.by_class() {
            let Some(class) = FailureClass::parse(class) else {
                continue;
            };
            let _ = writeln!(
                h,
                "<tr><td><a href=\"#class-{0}\"><code>{0}</code></a></td><td><span class=\"sev {1}\">{1}</span></td><td>{count}</td><td>{2}</td></tr>",
                escape(class.as_str()),
                escape(class.severity().as_str()),
                escape(class.meaning())
            );
        }
        h.push_str("</table></section>\n");

        h.push_str("<section id=\"jobs\"><h2>Failures by job</h2><p class=\"muted\">A pool's start task belongs to no job: it is listed under its pool.</p><table><tr><th>job or pool</th><th>failures</th><th>classes</th></tr>\n");
        for (owner, findings) in self.by_job() {
            let mut classes: Vec<&str> = findings.iter().map(|f| f.class.as_str()).collect();
            classes.sort_unstable();
            classes.dedup();
            let owner = match &owner {
                Owner::Job(job) => format!("<code>{}</code>", escape(job)),
                Owner::Pool(pool) => {
                    let nodes: Vec<String> = findings
                        .iter()
                        .filter_map(|f| match SubjectRef::parse(&f.subject) {
                            Some(SubjectRef::StartTask { node, .. }) => {
                                Some(format!("<code>{}</code>", escape(&node)))
                            }
                            _ => None,
                        })
                        .collect();
                    format!(
                        "pool <code>{}</code> <span class=\"muted\">(node {})</span>",
                        escape(pool),
                        nodes.join(", ")
                    )
                }
            };
            let _ = writeln!(
                h,
                "<tr><td>{owner}</td><td>{}</td><td>{}</td></tr>",
                findings.len(),
                classes
                    .iter()
                    .map(|c| format!("<code>{}</code>", escape(c)))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        h.push_str("</table></section>\n");

        self.timeline_html(&mut h);

        h.push_str("<section id=\"failures\"><h2>Failures</h2>\n");
        let mut first_of_class = std::collections::BTreeSet::new();
        for finding in &self.findings {
            let anchor = if first_of_class.insert(finding.class) {
                format!(" id=\"class-{}\"", escape(finding.class.as_str()))
            } else {
                String::new()
            };
            finding_html(&mut h, finding, &anchor);
        }
        h.push_str("</section>\n");

        h.push_str("<section id=\"triggers\"><h2>Triggers, in order</h2><p>Every trigger feeds the same pipeline; an event is a hint, and the pipeline re-reads the task or job from the account before it acts. Subjects seen again are absorbed: logs already preserved are not copied again, and an alert already sent is not sent again.</p><table><tr><th>trigger</th><th>payload</th><th>subjects</th></tr>\n");
        for run in &self.runs {
            let subjects: Vec<String> = run
                .subjects
                .iter()
                .map(|s| {
                    format!(
                        "<code>{}</code> {}{}{}",
                        escape(&s.subject),
                        escape(s.class.map_or("not diagnosed", |c| c.as_str())),
                        if s.already_preserved {
                            " <span class=\"muted\">(already preserved)</span>"
                        } else {
                            ""
                        },
                        if s.notified.is_empty() {
                            String::new()
                        } else {
                            format!(" → {}", escape(&s.notified.join(", ")))
                        }
                    )
                })
                .collect();
            let _ = writeln!(
                h,
                "<tr><td>{}<br><span class=\"muted\">{}</span></td><td>{}</td><td>{}{}</td></tr>",
                escape(&run.trigger),
                escape(&run.at.format(&Rfc3339).unwrap_or_default()),
                run.payload_file
                    .as_deref()
                    .map(|f| format!("<a href=\"{}\">{}</a>", href(f), escape(f)))
                    .unwrap_or_default(),
                subjects.join("<br>"),
                if run.ignored > 0 {
                    format!(
                        "<br><span class=\"muted\">{} item(s) skipped by design (pool events)</span>",
                        run.ignored
                    )
                } else {
                    String::new()
                }
            );
        }
        h.push_str("</table></section>\n");

        h.push_str("<section id=\"alerts\"><h2>Alerts the receivers got</h2><p>Delivered over the real paths (allowlist, retries, HMAC signing, SMTP) to recorders on 127.0.0.1.</p><table><tr><th>receiver</th><th>alert</th><th>file</th></tr>\n");
        for alert in &self.alerts {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}{}</td><td><a href=\"{}\">{}</a></td></tr>",
                escape(alert.channel.receiver_name()),
                escape(&alert.headline),
                if alert.signed {
                    " <span class=\"muted\">(signed)</span>"
                } else {
                    ""
                },
                href(&alert.file),
                escape(&alert.file)
            );
        }
        h.push_str("</table></section>\n");
        let _ = writeln!(
            h,
            "<footer class=\"muted\">Made by <code>batch-triage demo</code>; the <code>{}</code> file marks this directory as the demo's, so a rerun replaces it.</footer>\n</body></html>",
            escape(MARKER)
        );
        h
    }

    /// Each failure as a bar between its start and end, on one time axis.
    fn timeline_html(&self, h: &mut String) {
        let parse = |t: &Option<String>| {
            t.as_deref()
                .and_then(|t| time::OffsetDateTime::parse(t, &Rfc3339).ok())
        };
        let generated = time::OffsetDateTime::parse(&self.generated, &Rfc3339)
            .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
        let spans: Vec<(&Finding, time::OffsetDateTime, time::OffsetDateTime)> = self
            .findings
            .iter()
            .filter_map(|f| {
                let start = parse(&f.start).or(parse(&f.end))?;
                // Still running (a stuck job): the bar reaches the time of the report.
                let end = parse(&f.end).unwrap_or(generated).max(start);
                Some((f, start, end))
            })
            .collect();
        // Failures from days ago (a replayed old event) would squash the chart into a sliver;
        // they are listed under it instead.
        let window_start = generated - time::Duration::days(1);
        let (spans, earlier): (Vec<_>, Vec<_>) =
            spans.into_iter().partition(|s| s.2 >= window_start);
        h.push_str("<section id=\"timeline\"><h2>Timeline</h2>\n");
        let (Some(first), Some(last)) = (
            spans.iter().map(|s| s.1).min(),
            spans.iter().map(|s| s.2).max(),
        ) else {
            h.push_str("<p>No times known.</p></section>\n");
            return;
        };
        let total = (last - first).as_seconds_f64().max(1.0);
        let _ = writeln!(
            h,
            "<p class=\"muted\">From {} to {} (UTC); each bar runs from the task's (or job's, or start task's) start to its end.</p><table class=\"timeline\">",
            escape(&first.format(&Rfc3339).unwrap_or_default()),
            escape(&last.format(&Rfc3339).unwrap_or_default())
        );
        let mut sorted = spans;
        sorted.sort_by_key(|s| (s.1, s.2));
        for (finding, start, end) in sorted {
            let left = (start - first).as_seconds_f64() / total * 100.0;
            let width = ((end - start).as_seconds_f64() / total * 100.0).max(0.5);
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td class=\"track\"><span class=\"bar {}\" style=\"margin-left:{left:.2}%;width:{width:.2}%\"></span></td><td class=\"muted\">{} → {}</td></tr>",
                escape(&finding.subject),
                escape(finding.class.severity().as_str()),
                clock(start),
                if finding.end.is_some() {
                    clock(end)
                } else {
                    "not ended".to_owned()
                },
            );
        }
        h.push_str("</table>\n");
        for (finding, _, end) in earlier {
            let _ = writeln!(
                h,
                "<p class=\"muted\">Earlier: <code>{}</code> ended {}.</p>",
                escape(&finding.subject),
                escape(&end.format(&Rfc3339).unwrap_or_default())
            );
        }
        h.push_str("</section>\n");
    }
}

fn finding_html(h: &mut String, f: &Finding, anchor: &str) {
    let severity = f.class.severity().as_str();
    let _ = writeln!(
        h,
        "<article{anchor}><h3><span class=\"sev {0}\">{0}</span> <code>{1}</code> <code class=\"class\">{2}</code></h3>",
        escape(severity),
        escape(&f.subject),
        escape(f.class.as_str())
    );
    if let Some(SubjectRef::StartTask { pool, node }) = SubjectRef::parse(&f.subject) {
        let _ = writeln!(
            h,
            "<p><b>Where</b> pool <code>{}</code>, node <code>{}</code>: the pool's start task, which belongs to no job.</p>",
            escape(&pool),
            escape(&node)
        );
    }
    if let Some(d) = &f.diagnosis {
        let _ = writeln!(h, "<p class=\"summary\">{}</p>", escape(&d.summary));
        if !d.cause.is_empty() {
            let _ = writeln!(h, "<p><b>Cause.</b> {}</p>", escape(&d.cause));
        }
        if let Some(code) = d.exit_code {
            // Exit code 0 (a flaky task's last attempt) has no meaning to explain.
            let meaning = d
                .exit_meaning
                .map(|m| format!(": {}", escape(m.meaning())))
                .unwrap_or_default();
            let _ = writeln!(
                h,
                "<p><b>Exit code</b> <code>{}</code>{}{meaning}</p>",
                code,
                d.exit_code_hex
                    .as_deref()
                    .map(|x| format!(" (<code>{}</code>)", escape(x)))
                    .unwrap_or_default(),
            );
        }
        if let Some(failure) = &d.failure {
            let _ = writeln!(
                h,
                "<p><b>Batch says</b> <code>{}</code>: {}</p>",
                escape(failure.code.as_deref().unwrap_or("")),
                escape(failure.message.as_deref().unwrap_or(""))
            );
        }
        if !d.hints.is_empty() {
            h.push_str("<p><b>What to do</b></p><ul>");
            for hint in &d.hints {
                let _ = write!(h, "<li>{}</li>", escape(hint));
            }
            h.push_str("</ul>\n");
        }
    } else {
        let _ = writeln!(h, "<p>{}</p>", escape(f.class.meaning()));
    }
    if let Some(tail) = &f.stderr_tail {
        let _ = writeln!(
            h,
            "<details><summary>end of stderr.txt (redacted)</summary><pre>{}</pre></details>",
            escape(tail)
        );
    }
    for PreservedFolder {
        folder,
        manifest,
        has_diagnosis,
    } in &f.manifests
    {
        let _ = write!(
            h,
            "<p><b>Preserved</b> in <a href=\"{}/\"><code>{}</code></a>: ",
            href(folder),
            escape(folder)
        );
        let mut items: Vec<String> = manifest
            .files
            .iter()
            .map(|file| {
                format!(
                    "<a href=\"{}\">{}</a> <span class=\"muted\">({})</span>",
                    href(&format!("{folder}/{}", file.name)),
                    escape(&file.name),
                    human_bytes(file.bytes)
                )
            })
            .collect();
        items.push(format!(
            "<a href=\"{}\">manifest.json</a>",
            href(&format!("{folder}/manifest.json"))
        ));
        if *has_diagnosis {
            items.push(format!(
                "<a href=\"{}\">diagnosis.json</a>",
                href(&format!("{folder}/diagnosis.json"))
            ));
        }
        items.extend(manifest.missing.iter().map(|m| {
            format!(
                "<span class=\"bad\">{} missing ({})</span>",
                escape(&m.name),
                escape(&m.code)
            )
        }));
        items.extend(manifest.skipped.iter().map(|s| {
            format!(
                "<span class=\"warn\">{} not copied: {}, over the demo's {} of {}</span>",
                escape(&s.name),
                human_bytes(s.bytes),
                escape(&s.reason),
                human_bytes(DEMO_MAX_FILE_BYTES)
            )
        }));
        let _ = writeln!(h, "{}</p>", items.join(" · "));
    }
    if f.manifests.is_empty() && f.preserved.is_empty() {
        h.push_str("<p class=\"muted\">No logs to keep for a job-level finding.</p>\n");
    }
    let _ = writeln!(
        h,
        "<p class=\"muted\">Seen by {}{}; alerted: {}{}{}</p></article>",
        escape(&f.seen_by.join(", ")),
        if f.preserved.is_empty() {
            String::new()
        } else {
            format!("; logs copied {} time(s)", f.copies)
        },
        if f.notified.is_empty() {
            "nobody (grouped with an earlier alert, or no rule asks)".to_owned()
        } else {
            escape(&f.notified.join(", "))
        },
        f.action
            .as_deref()
            .map(|a| format!("; job action: {}", escape(a)))
            .unwrap_or_default(),
        if f.problems.is_empty() {
            String::new()
        } else {
            format!(
                "; <span class=\"bad\">problems: {}</span>",
                escape(&f.problems.join("; "))
            )
        }
    );
}

/// A relative link to a file under the demo directory: each path segment percent-encoded (ids
/// may hold `#`, `?` or `%`), then escaped for the attribute.
fn href(relative: &str) -> String {
    let encoded: Vec<String> = relative
        .split('/')
        .map(|segment| {
            let mut out = String::new();
            for byte in segment.bytes() {
                if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                    out.push(byte as char);
                } else {
                    let _ = write!(out, "%{byte:02X}");
                }
            }
            out
        })
        .collect();
    escape(&encoded.join("/"))
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

/// `HH:MM:SS` of a UTC time.
fn clock(t: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!("[hour]:[minute]:[second]");
    t.format(&format).unwrap_or_default()
}

/// Missing-file codes that mean the logs existed and are gone: the node was removed or the
/// task's retention expired.
const GONE_FOR_GOOD: &[&str] = &["NodeNotFound", "TaskFilesUnavailable", "TaskFilesCleanedup"];

/// `2.0 GiB`, `16.0 MiB`, `210 bytes`.
fn human_bytes(bytes: u64) -> String {
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

fn severity_rank(class: FailureClass) -> u8 {
    match class.severity().as_str() {
        "critical" => 3,
        "error" => 2,
        "warning" => 1,
        _ => 0,
    }
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
                v["attachments"][0]["content"]["body"][0]["text"]
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
    }
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

const CSS: &str = "
body{font-family:system-ui,-apple-system,Segoe UI,Arial,sans-serif;margin:0 auto;max-width:1100px;padding:1rem 1.5rem;color:#1b1f24;line-height:1.45}
header h1{margin-bottom:.2rem}
code{font-family:ui-monospace,SFMono-Regular,Consolas,monospace;font-size:.92em;background:#f2f4f7;padding:0 .25em;border-radius:3px}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #e3e6ea;vertical-align:top}
article{border:1px solid #e3e6ea;border-radius:6px;padding:.2rem 1rem;margin:.8rem 0}
article h3{font-size:1.05rem}
pre{background:#0f1419;color:#e6e1cf;padding:.7rem;overflow:auto;white-space:pre-wrap;border-radius:4px}
.sev{display:inline-block;padding:0 .4em;border-radius:3px;font-size:.8em;text-transform:uppercase;color:#fff;background:#6b7280}
.sev.critical{background:#b42318}.sev.error{background:#d9480f}.sev.warning{background:#b7791f}.sev.info{background:#2563eb}
.muted{color:#667085}.ok{color:#067647;font-weight:600}.bad{color:#b42318}.warn{color:#b7791f}
.summary{font-weight:600}
.timeline td.track{width:55%;background:#f8f9fb}
.bar{display:block;height:.8rem;border-radius:2px;background:#6b7280}
.bar.critical{background:#b42318}.bar.error{background:#d9480f}.bar.warning{background:#b7791f}
nav{margin-bottom:1rem}
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup_and_attribute_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn href_encodes_each_segment_and_keeps_the_slashes() {
        assert_eq!(
            href("store/devbatch1/job #1/t?a=1&b/stderr.txt"),
            "store/devbatch1/job%20%231/t%3Fa%3D1%26b/stderr.txt"
        );
    }

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
