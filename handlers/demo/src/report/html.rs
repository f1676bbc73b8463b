//! `report.html`: one self-contained page (inline CSS, no script, no outside resource). It is
//! built with `maud`, whose templates escape every interpolated value: ids, messages, stderr and
//! hints come from tasks and from Batch, and must never become markup. Links to preserved files
//! are relative, each path segment percent-encoded, and a path that could leave the demo
//! directory is shown as text, not linked.

use std::collections::BTreeSet;

use diagnosis::FailureClass;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Finding, PreservedFolder, Report, human_bytes};
use crate::subject::{Owner, SubjectKey};
use crate::{DEMO_MAX_FILE_BYTES, MARKER};

/// What stays as it is in a path segment: RFC 3986's unreserved characters. Everything else
/// (`/`, `?`, `#`, `%`, `:`, quotes, spaces) is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A relative link to a file under the demo directory, each segment percent-encoded; `None` for
/// a path that is absolute or holds an empty, `.` or `..` segment (browsers resolve `%2E%2E` as
/// `..` too, so encoding alone would not keep such a link inside the directory).
pub(super) fn href(relative: &str) -> Option<String> {
    // A folder's link ends in `/`: that last empty segment is kept, no other.
    let (path, folder) = match relative.strip_suffix('/') {
        Some(path) => (path, "/"),
        None => (relative, ""),
    };
    let segments: Vec<&str> = path.split('/').collect();
    if segments
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return None;
    }
    let encoded: Vec<String> = segments
        .iter()
        .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
        .collect();
    Some(encoded.join("/") + folder)
}

/// `text` linked to `path`, or just `text` when the path cannot be a safe link.
fn link(path: &str, text: Markup) -> Markup {
    match href(path) {
        Some(target) => html! { a href=(target) { (text) } },
        None => text,
    }
}

/// `HH:MM:SS` of a UTC time.
fn clock(t: OffsetDateTime) -> String {
    let format = time::macros::format_description!("[hour]:[minute]:[second]");
    t.format(&format).unwrap_or_default()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

impl Report {
    /// The page.
    pub(super) fn to_html(&self) -> String {
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    // No script and no outside resource: the page is safe to open from a file,
                    // and the CSP says so even if some untrusted text escaped escaping.
                    meta http-equiv="Content-Security-Policy"
                        content="default-src 'none'; style-src 'unsafe-inline'; img-src 'none'";
                    title { "batch-triage demo report" }
                    style { (PreEscaped(CSS)) }
                }
                body {
                    (self.header_html())
                    (self.classes_html())
                    (self.jobs_html())
                    (self.timeline_html())
                    section id="failures" {
                        h2 { "Failures" }
                        (self.findings_html())
                    }
                    (self.triggers_html())
                    (self.alerts_html())
                    footer.muted {
                        "Made by " code { "batch-triage demo" } "; the " code { (MARKER) }
                        " file marks this directory as the demo's, so a rerun replaces it."
                    }
                }
            }
        }
        .into_string()
    }

    fn header_html(&self) -> Markup {
        html! {
            header {
                h1 { "batch-triage demo" }
                p {
                    "Accounts "
                    @for (i, account) in self.accounts.iter().enumerate() {
                        @if i > 0 { ", " }
                        code { (account) }
                    }
                    " (Batch emulators, one pipeline) · generated "
                    (self.generated) " · " (self.findings.len()) " failures · "
                    (self.alerts.len()) " alerts · "
                    @if self.converged() {
                        span.ok { "converged: each failure preserved once, each receiver told once" }
                    } @else {
                        span.bad { "not converged: see the failures below" }
                    }
                }
            }
            details {
                summary { "The scenario" }
                p.muted { (self.scenario) }
            }
            nav {
                a href="#classes" { "By class" } " · " a href="#jobs" { "By job" } " · "
                a href="#timeline" { "Timeline" } " · " a href="#failures" { "Failures" } " · "
                a href="#triggers" { "Triggers" } " · " a href="#alerts" { "Alerts" } " · "
                a href="report.json" { "report.json" }
            }
            p {
                "The pipeline got " (self.runs.len()) " trigger deliveries: Batch diagnostic-log \
                 records through Event Hubs (delivered twice, as at-least-once delivery does), an \
                 Event Grid delivery, a CloudEvents batch, and two timer sweeps. They found "
                (self.findings.len()) " failures; " (self.repeat_sightings())
                " times a failure was seen again by another trigger and nothing was copied or \
                 sent twice. Logs went to " a href="store/" { "store/" }
                " (one folder per task attempt, per node of a failed job preparation or release, \
                 and per node whose start task failed, under " code { "_pools/" } "; each with "
                code { "manifest.json" } " and " code { "diagnosis.json" } "), alerts to "
                a href="alerts/" { "alerts/" } ", and the trigger payloads are in "
                a href="triggers/" { "triggers/" } "."
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

    fn classes_html(&self) -> Markup {
        html! {
            section id="classes" {
                h2 { "Failures by class" }
                table {
                    tr { th { "class" } th { "severity" } th { "count" } th { "meaning" } }
                    @for (class, count) in self.by_class() {
                        @if let Some(class) = FailureClass::parse(class) {
                            tr {
                                td { a href={ "#class-" (class.as_str()) } { code { (class.as_str()) } } }
                                td { (severity_badge(class)) }
                                td { (count) }
                                td { (class.meaning()) }
                            }
                        }
                    }
                }
            }
        }
    }

    fn jobs_html(&self) -> Markup {
        html! {
            section id="jobs" {
                h2 { "Failures by job" }
                p.muted { "A pool's start task belongs to no job: it is listed under its pool." }
                table {
                    tr { th { "job or pool" } th { "failures" } th { "classes" } }
                    @for (owner, findings) in self.by_job() {
                        tr {
                            td { (owner_html(&owner, &findings)) }
                            td { (findings.len()) }
                            td {
                                @for (i, class) in classes_of(&findings).iter().enumerate() {
                                    @if i > 0 { " " }
                                    code { (class) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn findings_html(&self) -> Markup {
        let mut first_of_class = BTreeSet::new();
        html! {
            @for finding in &self.findings {
                // The class table links to the first finding of each class.
                @let anchor = first_of_class
                    .insert(finding.class)
                    .then(|| format!("class-{}", finding.class.as_str()));
                (finding_html(finding, anchor.as_deref()))
            }
        }
    }

    /// Each failure as a bar between its start and end, on one time axis.
    fn timeline_html(&self) -> Markup {
        let parse = |t: &Option<String>| {
            t.as_deref()
                .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        };
        let generated = OffsetDateTime::parse(&self.generated, &Rfc3339)
            .unwrap_or_else(|_| OffsetDateTime::now_utc());
        let spans: Vec<(&Finding, OffsetDateTime, OffsetDateTime)> = self
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
        let (mut spans, earlier): (Vec<_>, Vec<_>) =
            spans.into_iter().partition(|s| s.2 >= window_start);
        spans.sort_by_key(|s| (s.1, s.2));
        let first = spans.iter().map(|s| s.1).min();
        let last = spans.iter().map(|s| s.2).max();
        html! {
            section id="timeline" {
                h2 { "Timeline" }
                @if let (Some(first), Some(last)) = (first, last) {
                    @let total = (last - first).as_seconds_f64().max(1.0);
                    p.muted {
                        "From " (rfc3339(first)) " to " (rfc3339(last)) " (UTC); each bar runs \
                         from the task's (or job's, or start task's) start to its end."
                    }
                    table.timeline {
                        @for (finding, start, end) in &spans {
                            @let left = (*start - first).as_seconds_f64() / total * 100.0;
                            @let width = ((*end - *start).as_seconds_f64() / total * 100.0).max(0.5);
                            tr {
                                td { code { (finding.subject) } }
                                td.track {
                                    span class={ "bar " (finding.class.severity().as_str()) }
                                        style=(format!("margin-left:{left:.2}%;width:{width:.2}%")) {}
                                }
                                td.muted {
                                    (clock(*start)) " → "
                                    @if finding.end.is_some() { (clock(*end)) } @else { "not ended" }
                                }
                            }
                        }
                    }
                    @for (finding, _, end) in &earlier {
                        p.muted { "Earlier: " code { (finding.subject) } " ended " (rfc3339(*end)) "." }
                    }
                } @else {
                    p { "No times known." }
                }
            }
        }
    }

    fn triggers_html(&self) -> Markup {
        html! {
            section id="triggers" {
                h2 { "Triggers, in order" }
                p {
                    "Every trigger feeds the same pipeline; an event is a hint, and the pipeline \
                     re-reads the task or job from the account before it acts. Subjects seen again \
                     are absorbed: logs already preserved are not copied again, and an alert \
                     already sent is not sent again."
                }
                table {
                    tr { th { "trigger" } th { "payload" } th { "subjects" } }
                    @for run in &self.runs {
                        tr {
                            td { (run.trigger) br; span.muted { (rfc3339(run.at)) } }
                            td {
                                @if let Some(file) = &run.payload_file {
                                    (link(file, html! { (file) }))
                                }
                            }
                            td {
                                @for (i, s) in run.subjects.iter().enumerate() {
                                    @if i > 0 { br; }
                                    code { (s.subject) } " "
                                    (s.class.map_or("not diagnosed", |c| c.as_str()))
                                    @if s.already_preserved { " " span.muted { "(already preserved)" } }
                                    @if !s.notified.is_empty() { " → " (s.notified.join(", ")) }
                                }
                                @if run.ignored > 0 {
                                    br;
                                    span.muted { (run.ignored) " item(s) skipped by design (pool events)" }
                                }
                                @if !run.flushed.is_empty() {
                                    br;
                                    "grouped alerts (grown, escalated or due) → " (run.flushed.join(", "))
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn alerts_html(&self) -> Markup {
        html! {
            section id="alerts" {
                h2 { "Alerts the receivers got" }
                p {
                    "Delivered over the real paths (allowlist, retries, HMAC signing, SMTP) to \
                     recorders on 127.0.0.1."
                }
                table {
                    tr { th { "receiver" } th { "alert" } th { "file" } }
                    @for alert in &self.alerts {
                        tr {
                            td { (alert.channel.receiver_name()) }
                            td {
                                (alert.headline)
                                @if alert.signed { " " span.muted { "(signed)" } }
                            }
                            td { (link(&alert.file, html! { (alert.file) })) }
                        }
                    }
                }
            }
        }
    }
}

fn severity_badge(class: FailureClass) -> Markup {
    let severity = class.severity().as_str();
    html! { span class={ "sev " (severity) } { (severity) } }
}

/// A job's id, or a pool's with the nodes whose start task failed.
fn owner_html(owner: &Owner, findings: &[&Finding]) -> Markup {
    match owner {
        Owner::Job(account, job) => html! { code { (account) "/" (job) } },
        Owner::Deliveries => html! { "deliveries kept as poison" },
        Owner::Pool(account, pool) => {
            let nodes: Vec<&str> = findings
                .iter()
                .filter_map(|f| match &f.subject {
                    SubjectKey::StartTask { node, .. } | SubjectKey::Node { node, .. } => {
                        Some(node.as_str())
                    }
                    _ => None,
                })
                .collect();
            html! {
                "pool " code { (account) "/" (pool) } " "
                span.muted {
                    "(node "
                    @for (i, node) in nodes.iter().enumerate() {
                        @if i > 0 { ", " }
                        code { (node) }
                    }
                    ")"
                }
            }
        }
    }
}

fn classes_of<'a>(findings: &[&'a Finding]) -> Vec<&'a str> {
    let mut classes: Vec<&str> = findings.iter().map(|f| f.class.as_str()).collect();
    classes.sort_unstable();
    classes.dedup();
    classes
}

fn finding_html(f: &Finding, anchor: Option<&str>) -> Markup {
    html! {
        article id=[anchor] {
            h3 {
                (severity_badge(f.class)) " " code { (f.subject) } " "
                code.class { (f.class.as_str()) }
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
            @if let Some(tail) = &f.stderr_tail {
                details {
                    summary { "end of stderr.txt (redacted)" }
                    pre { (tail) }
                }
            }
            @for folder in &f.manifests {
                (preserved_html(folder))
            }
            @if f.manifests.is_empty() && f.preserved.is_empty() {
                p.muted { "No logs to keep for a job-level finding." }
            }
            p.muted {
                "Seen by " (f.seen_by.join(", "))
                @if !f.preserved.is_empty() { "; logs copied " (f.copies) " time(s)" }
                "; alerted: "
                @if f.notified.is_empty() {
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
                (link(&format!("{folder}/{}", file.name), html! { (file.name) }))
                " " span.muted { "(" (human_bytes(file.bytes)) ")" }
            }
        })
        .collect();
    items.push(link(
        &format!("{folder}/manifest.json"),
        html! { "manifest.json" },
    ));
    if *has_diagnosis {
        items.push(link(
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
            b { "Preserved" } " in " (link(&format!("{folder}/"), html! { code { (folder) } })) ": "
            @for (i, item) in items.into_iter().enumerate() {
                @if i > 0 { " · " }
                (item)
            }
        }
    }
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
    fn href_encodes_each_segment_and_keeps_the_slashes() {
        assert_eq!(
            href("store/devbatch1/job #1/t?a=1&b/stderr.txt").as_deref(),
            Some("store/devbatch1/job%20%231/t%3Fa%3D1%26b/stderr.txt")
        );
        assert_eq!(
            href("store/devbatch1/etl/").as_deref(),
            Some("store/devbatch1/etl/")
        );
        assert_eq!(
            href("x/javascript:alert(1)").as_deref(),
            Some("x/javascript%3Aalert%281%29")
        );
    }

    #[test]
    fn a_path_that_could_leave_the_directory_is_no_link() {
        for path in [
            "../x",
            "store/../../x",
            "store/./x",
            "/etc/passwd",
            "store//x",
            "",
        ] {
            assert_eq!(href(path), None, "{path}");
        }
        let text = link("../x", html! { "../x" }).into_string();
        assert_eq!(text, "../x", "shown as text");
    }
}
