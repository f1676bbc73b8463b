//! `report.html`: the page `batch-triage report` draws from the demo's store (failures by
//! class, job and hour, alerts, job actions, silences), with the demo's own sections after it:
//! what happened to each failure across the triggers, the triggers in order (and the operator's
//! silence between them), and what each receiver got. One renderer: the frame, the style, the
//! escaping and the links are `batch-triage-report`'s ([`report::page`]); this module only
//! says what the demo's sections hold. Ids, messages, stderr and hints come from tasks and from
//! Batch, and `maud` escapes each of them.

use maud::{Markup, html};
use report::page::{Extras, Section, anchor, file_link, severity_badge};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Finding, PreservedFolder, Report, human_bytes};
use crate::run::{OPERATOR_SILENCE_FOR, OperatorSilence};
use crate::subject::SubjectKey;
use crate::{DEMO_MAX_FILE_BYTES, MARKER};

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

impl Report {
    /// The page.
    pub(super) fn to_html(&self) -> String {
        self.store.html_with(&Extras {
            title: Some("batch-triage demo".to_owned()),
            header: Some(self.header_html()),
            sections: vec![
                Section {
                    id: "findings",
                    title: "Each failure, end to end".to_owned(),
                    body: self.findings_html(),
                },
                Section {
                    id: "triggers",
                    title: "Triggers, in order".to_owned(),
                    body: self.triggers_html(),
                },
                Section {
                    id: "received",
                    title: "What the receivers got".to_owned(),
                    body: self.received_html(),
                },
            ],
            files: [
                ("report.json", "report.json"),
                ("store/", "store/"),
                ("alerts/", "alerts/"),
                ("triggers/", "triggers/"),
            ]
            .map(|(path, label)| (path.to_owned(), label.to_owned()))
            .to_vec(),
            footer: Some(html! {
                "Made by " code { "batch-triage demo" } "; the " code { (MARKER) }
                " file marks this directory as the demo's, so a rerun replaces it."
            }),
        })
    }

    fn header_html(&self) -> Markup {
        html! {
            p {
                "Accounts "
                @for (i, account) in self.accounts.iter().enumerate() {
                    @if i > 0 { ", " }
                    code { (account) }
                }
                " (Batch emulators, one pipeline) · " (self.findings.len()) " failures · "
                (self.alerts.len()) " messages to the receivers · "
                @if self.converged() {
                    span.ok { "converged: each failure preserved once, each receiver told once" }
                } @else {
                    span.bad { "not converged: see each failure below" }
                }
            }
            details {
                summary { "The scenario" }
                p.muted { (self.scenario) }
            }
            p {
                "The pipeline got " (self.runs.len()) " trigger deliveries: Batch diagnostic-log \
                 records through Event Hubs (delivered twice, as at-least-once delivery does), an \
                 Event Grid delivery, a CloudEvents batch, and timer ticks. They found "
                (self.findings.len()) " failures; " (self.repeat_sightings())
                " times a failure was seen again by another trigger and nothing was copied or \
                 sent twice. Below is the page " code { "batch-triage report --store DIR/store" }
                " draws from the demo's store, then what the demo saw: each failure, the \
                 triggers, and the receivers' messages. Logs are in " (file_link("store/", html! { "store/" }))
                ", messages in " (file_link("alerts/", html! { "alerts/" })) ", payloads in "
                (file_link("triggers/", html! { "triggers/" })) "."
            }
            @for added in &self.silences {
                p {
                    "Before the " code { (added.before) } ", the operator muted "
                    code { (added.silence.matchers.join(" ")) } " with "
                    code { (silence_command(added)) } ": "
                    a href={ "#" (anchor(&added.silence.id)) } { (added.silence.id) }
                    " muted " (self.muted_count(&added.silence.id)) " alerts; their logs were kept."
                }
            }
            @let unindexed = self.unindexed();
            @if !unindexed.is_empty() {
                p.muted {
                    "The store's part counts the failures the pipeline wrote to its index for \
                     the report; these the demo saw are not in it, and are shown in its \
                     sections only: "
                    @for (i, (class, count)) in unindexed.iter().enumerate() {
                        @if i > 0 { ", " }
                        code { (class) } " " (count)
                    }
                    "."
                }
            }
            @if !self.unrecognised.is_empty() {
                p.bad {
                    "Failed subjects the report cannot place: "
                    @for (i, label) in self.unrecognised.iter().enumerate() {
                        @if i > 0 { ", " }
                        code { (label) }
                    }
                }
            }
        }
    }

    /// Classes of which the demo saw more failures than the store's report counts, and how
    /// many more.
    fn unindexed(&self) -> Vec<(&'static str, u64)> {
        self.by_class()
            .into_iter()
            .filter_map(|(class, count)| {
                let indexed = self
                    .store
                    .classes
                    .iter()
                    .find(|c| c.class == class)
                    .map_or(0, |c| c.count);
                let missing = u64::try_from(count)
                    .unwrap_or(u64::MAX)
                    .saturating_sub(indexed);
                (missing > 0).then_some((class, missing))
            })
            .collect()
    }

    fn findings_html(&self) -> Markup {
        html! {
            p.muted {
                "Most urgent first. Each failure's diagnosis, the logs kept (linked), the end of \
                 its stderr, and what the triggers did: which saw it, how often its logs were \
                 copied, whom it was told, what muted it."
            }
            @for finding in &self.findings { (finding_html(finding)) }
        }
    }

    fn triggers_html(&self) -> Markup {
        html! {
            p {
                "Every trigger feeds the same pipeline; an event is a hint, and the pipeline \
                 re-reads the task or job from the account before it acts. Subjects seen again \
                 are absorbed: logs already preserved are not copied again, and an alert \
                 already sent is not sent again."
            }
            table {
                tr { th { "trigger" } th { "payload" } th { "subjects" } }
                @for run in &self.runs {
                    @for added in self.silences.iter().filter(|s| s.before == run.name) {
                        tr {
                            td { "The operator" }
                            td { code { (silence_command(added)) } }
                            td { "silence " (added.silence.id) ": muted "
                                (self.muted_count(&added.silence.id)) " alerts of the runs after it" }
                        }
                    }
                    tr {
                        td { (run.trigger) br; span.muted { (rfc3339(run.at)) } }
                        td {
                            @if let Some(file) = &run.payload_file {
                                (file_link(file, html! { (file) }))
                            }
                        }
                        td {
                            @for (i, s) in run.subjects.iter().enumerate() {
                                @if i > 0 { br; }
                                code { (s.subject) } " "
                                (s.class.map_or("not diagnosed", |c| c.as_str()))
                                @if s.already_preserved { " " span.muted { "(already preserved)" } }
                                @if !s.notified.is_empty() { " → " (s.notified.join(", ")) }
                                @if let Some(silence) = &s.muted_by { " " span.muted { "(muted by " (silence) ")" } }
                            }
                            @if run.ignored > 0 {
                                br;
                                span.muted { (run.ignored) " item(s) skipped by design (pool events)" }
                            }
                            @if !run.flushed.is_empty() {
                                br;
                                "grouped alerts (grown, escalated or due) → " (run.flushed.join(", "))
                            }
                            @if !run.resolved.is_empty() {
                                br;
                                "resolved messages (a failure state ended) → " (run.resolved.join(", "))
                            }
                        }
                    }
                }
            }
        }
    }

    fn received_html(&self) -> Markup {
        html! {
            p {
                "Delivered over the real paths (allowlist, retries, HMAC signing, SMTP) to \
                 recorders on 127.0.0.1."
            }
            table {
                tr { th { "receiver" } th { "message" } th { "file" } }
                @for alert in &self.alerts {
                    tr {
                        td { (alert.channel.receiver_name()) }
                        td {
                            (alert.headline)
                            @if alert.signed { " " span.muted { "(signed)" } }
                        }
                        td { (file_link(&alert.file, html! { (alert.file) })) }
                    }
                }
            }
        }
    }
}

/// The command that adds the silence, as the operator typed it.
pub(super) fn silence_command(added: &OperatorSilence) -> String {
    let matchers: String = added
        .silence
        .matchers
        .iter()
        .map(|m| format!(" --match '{m}'"))
        .collect();
    format!(
        "batch-triage silence add{matchers} --for {OPERATOR_SILENCE_FOR} --comment '{}'",
        added.silence.comment
    )
}

fn finding_html(f: &Finding) -> Markup {
    html! {
        article id={ "f" (anchor(&f.subject.to_string())) } {
            h3 {
                (severity_badge(f.class.severity().as_str())) " " code { (f.subject) } " "
                code { (f.class.as_str()) }
            }
            @if let SubjectKey::StartTask { pool, node, .. } = &f.subject {
                p {
                    b { "Where" } " pool " code { (pool) } ", node " code { (node) }
                    ": the pool's start task, which belongs to no job."
                }
            }
            @if let SubjectKey::Node { pool, node, .. } = &f.subject {
                p {
                    b { "Where" } " pool " code { (pool) } ", node " code { (node) }
                    ": found by the pool sweep (no event exists for a node)."
                }
            }
            @if let Some(status) = &f.agent_logs {
                p { b { "Node agent's logs" } " " code { (status) } }
            }
            (diagnosis_html(f))
            @if f.start.is_some() || f.end.is_some() {
                p.muted {
                    "Ran " (f.start.as_deref().unwrap_or("(start unknown)")) " → "
                    (f.end.as_deref().unwrap_or("not ended"))
                }
            }
            @if let Some(tail) = &f.stderr_tail {
                details {
                    summary { "end of stderr.txt (redacted)" }
                    pre { (tail) }
                }
            }
            @for folder in &f.manifests { (preserved_html(folder)) }
            @if f.manifests.is_empty() && f.preserved.is_empty() {
                p.muted { "No logs to keep for a job-level finding." }
            }
            p.muted {
                "Seen by " (f.seen_by.join(", "))
                @if !f.preserved.is_empty() { "; logs copied " (f.copies) " time(s)" }
                "; alerted: "
                @if let Some(silence) = &f.muted_by {
                    "nobody: muted by " a href={ "#" (anchor(silence)) } { (silence) }
                } @else if f.notified.is_empty() {
                    "nobody (grouped with an earlier alert, or no rule asks)"
                } @else {
                    (f.notified.join(", "))
                }
                @if let Some(action) = &f.action { "; action: " (action) }
                @if !f.problems.is_empty() {
                    "; " span.bad { "problems: " (f.problems.join("; ")) }
                }
            }
        }
    }
}

/// The diagnosis: summary, cause, exit code, Batch's words and hints; the class's meaning when
/// there is no diagnosis.
fn diagnosis_html(f: &Finding) -> Markup {
    let Some(d) = &f.diagnosis else {
        return html! { p { (f.class.meaning()) } };
    };
    html! {
        p.summary { (d.summary) }
        @if !d.cause.is_empty() {
            p { b { "Cause." } " " (d.cause) }
        }
        @if let Some(code) = d.exit_code {
            p {
                b { "Exit code" } " " code { (code) }
                @if let Some(hex) = &d.exit_code_hex { " (" code { (hex) } ")" }
                // Exit code 0 (a flaky task's last attempt) has no meaning to explain.
                @if let Some(meaning) = d.exit_meaning { ": " (meaning.meaning()) }
            }
        }
        @if let Some(failure) = &d.failure {
            p {
                b { "Batch says" } " " code { (failure.code.as_deref().unwrap_or("")) } ": "
                (failure.message.as_deref().unwrap_or(""))
            }
        }
        @if !d.hints.is_empty() {
            p { b { "What to do" } }
            ul {
                @for hint in &d.hints { li { (hint) } }
            }
        }
    }
}

/// A preserved folder: its files, manifest and diagnosis linked; missing and skipped files said.
fn preserved_html(preserved: &PreservedFolder) -> Markup {
    let PreservedFolder {
        folder,
        manifest,
        has_diagnosis,
    } = preserved;
    let mut items: Vec<Markup> = manifest
        .files
        .iter()
        .map(|file| {
            html! {
                (file_link(&format!("{folder}/{}", file.name), html! { (file.name) }))
                " " span.muted { "(" (human_bytes(file.bytes)) ")" }
            }
        })
        .collect();
    items.push(file_link(
        &format!("{folder}/manifest.json"),
        html! { "manifest.json" },
    ));
    if *has_diagnosis {
        items.push(file_link(
            &format!("{folder}/diagnosis.json"),
            html! { "diagnosis.json" },
        ));
    }
    items.extend(manifest.missing.iter().map(|m| {
        html! { span.bad { (m.name) " missing (" (m.code) ")" } }
    }));
    items.extend(manifest.skipped.iter().map(|s| {
        html! {
            span.warn {
                (s.name) " not copied: " (human_bytes(s.bytes)) ", over the demo's " (s.reason)
                " of " (human_bytes(DEMO_MAX_FILE_BYTES))
            }
        }
    }));
    html! {
        p {
            b { "Preserved" } " in " (file_link(&format!("{folder}/"), html! { code { (folder) } })) ": "
            @for (i, item) in items.into_iter().enumerate() {
                @if i > 0 { " · " }
                (item)
            }
        }
    }
}
