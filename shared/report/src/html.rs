//! The report as one self-contained HTML page: inline CSS, no script, no font, image or style
//! from anywhere, so it opens offline. `maud` escapes every interpolated value; ids, messages
//! and hints come from Batch and tasks and are never markup. Only `https://` links to preserved
//! files become anchors (without their query, which could hold a SAS); every other link is
//! inside the page.

use maud::{DOCTYPE, Markup, html};

use crate::{ClassSection, StoreReport};

const STYLE: &str = "
body{font-family:system-ui,Segoe UI,Arial,sans-serif;margin:2rem;color:#222;max-width:80rem}
h1{font-size:1.5rem}h2{margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
.critical{color:#a00}.error{color:#c40}.warning{color:#a70}.muted{color:#666}
.bar{background:#c40;height:.8rem;display:inline-block}
pre{background:#f6f6f6;padding:.5rem;white-space:pre-wrap;word-break:break-all}
nav a{margin-right:1rem}
";

impl StoreReport {
    /// The page.
    pub fn html(&self) -> String {
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    title { "batch-triage report" }
                    style { (STYLE) }
                }
                body {
                    h1 { "batch-triage report" }
                    p class="muted" {
                        "From " (self.since) " to " (self.generated)
                        @if let Some(account) = &self.account { " · account " (account) }
                        " · " (self.total_failures) " failed subjects"
                    }
                    nav {
                        a href="#classes" { "By class" }
                        a href="#jobs" { "By job" }
                        a href="#timeline" { "Timeline" }
                        a href="#failures" { "Failures" }
                        a href="#alerts" { "Alerts" }
                        a href="#actions" { "Job actions" }
                        a href="#silences" { "Silences" }
                    }
                    @if !self.truncated.is_empty() {
                        p class="muted" { "Bounded: " (self.truncated.join("; ")) "." }
                    }
                    (self.by_class())
                    (self.by_job())
                    (self.timeline())
                    h2 id="failures" { "Failures" }
                    @for section in &self.classes { (failures(section)) }
                    (self.alerts())
                    (self.actions())
                    (self.silences())
                }
            }
        }
        .into_string()
    }

    fn by_class(&self) -> Markup {
        html! {
            h2 id="classes" { "By class" }
            @if self.classes.is_empty() { p { "No failures in the window." } }
            @else {
                table {
                    tr { th { "class" } th { "severity" } th { "failed subjects" } }
                    @for c in &self.classes {
                        tr {
                            td { a href={ "#" (anchor(&c.class)) } { (c.class) } }
                            td class=(c.severity) { (c.severity) }
                            td { (c.count) }
                        }
                    }
                }
            }
        }
    }

    fn by_job(&self) -> Markup {
        html! {
            h2 id="jobs" { "By job" }
            table {
                tr { th { "account" } th { "job" } th { "failed subjects" } }
                @for j in &self.jobs { tr { td { (j.account) } td { (j.job) } td { (j.count) } } }
            }
        }
    }

    fn timeline(&self) -> Markup {
        let most = self
            .timeline
            .iter()
            .map(|h| h.count)
            .max()
            .unwrap_or(0)
            .max(1);
        html! {
            h2 id="timeline" { "Timeline" }
            table {
                tr { th { "hour (UTC)" } th { "failed subjects" } }
                @for h in self.timeline.iter().filter(|h| h.count > 0) {
                    tr {
                        td { (h.hour) ":00" }
                        td {
                            span class="bar" style={ "width:" (h.count * 300 / most) "px" } {}
                            " " (h.count)
                        }
                    }
                }
            }
        }
    }

    fn alerts(&self) -> Markup {
        let muted: usize = self.silences.iter().map(|s| s.muted).sum();
        html! {
            h2 id="alerts" { "Alerts" }
            p {
                (self.groups.iter().map(|g| g.sends).sum::<u64>()) " sent · "
                (muted) " muted · " (self.outbox_total) " queued for a retry · "
                (self.dead_letters) " undeliverable"
            }
            p {
                "Deliveries the platforms gave up on: " (self.parked) " parked for the next sweep · "
                (self.poisoned) " kept as poison (under " code { "poisoned/" } ")"
            }
            table {
                tr { th { "receiver" } th { "rule" } th { "group" } th { "alerts" } th { "sent" } th { "last seen" } th { "waiting until" } }
                @for g in &self.groups {
                    tr {
                        td { (g.receiver) } td { (g.rule) } td { (g.group_key) }
                        td { (g.count) } td { (g.sends) } td { (g.last_seen) }
                        td { (g.waiting_until.as_deref().unwrap_or("")) }
                    }
                }
            }
            @if !self.outbox.is_empty() {
                h3 { "Queued (outbox)" }
                table {
                    tr { th { "receiver" } th { "alert" } th { "last error" } }
                    @for o in &self.outbox { tr { td { (o.receiver) } td { (o.headline) } td { (o.last_error) } } }
                }
            }
            @if !self.muted.is_empty() {
                h3 { "Muted" }
                table {
                    tr { th { "time" } th { "subject" } th { "class" } th { "silence" } th { "receivers not notified" } }
                    @for m in &self.muted {
                        tr {
                            td { (m.time) } td { (m.subject) } td { (m.class) }
                            td { a href={ "#" (anchor(&m.silence)) } { (m.silence) } }
                            td { (m.receivers.join(", ")) }
                        }
                    }
                }
            }
        }
    }

    fn actions(&self) -> Markup {
        html! {
            h2 id="actions" { "Job actions" }
            @if self.actions.is_empty() { p { "None in the window." } }
            @else {
                table {
                    tr { th { "time" } th { "account" } th { "job" } th { "action" } th { "decision" } th { "why" } }
                    @for a in &self.actions {
                        tr {
                            td { (a.time) } td { (a.account) } td { (a.job_id) } td { (a.action) }
                            td { (format!("{:?}", a.decision)) } td { (a.reason) }
                        }
                    }
                }
            }
        }
    }

    fn silences(&self) -> Markup {
        html! {
            h2 id="silences" { "Silences" }
            @if self.silences.is_empty() { p { "None." } }
            @else {
                table {
                    tr { th { "id" } th { "matchers" } th { "from" } th { "until" } th { "by" } th { "why" } th { "muted" } }
                    @for l in &self.silences {
                        @let s = &l.silence;
                        tr id=(anchor(&s.id)) class=[(!l.active).then_some("muted")] {
                            td { (s.id) } td { (s.matchers.join(" ")) } td { (s.starts) } td { (s.ends) }
                            td { (s.author) } td { (s.comment) } td { (l.muted) }
                        }
                    }
                }
            }
        }
    }
}

/// One class's shown failures.
fn failures(section: &ClassSection) -> Markup {
    html! {
        h3 id=(anchor(&section.class)) class=(section.severity) {
            (section.class) " · " (section.count) " failed subjects"
            @if section.failures.len() < usize::try_from(section.count).unwrap_or(usize::MAX) {
                " (the newest " (section.failures.len()) " shown)"
            }
        }
        @for f in &section.failures {
            @let d = &f.diagnosis;
            div {
                p { strong { (f.subject) } " · " (f.time)
                    @if let Some(silence) = &f.muted_by { " · muted by " a href={ "#" (anchor(silence)) } { (silence) } }
                    @if let Some(action) = &f.action { " · action: " (action) }
                }
                p { (d.summary) }
                @if !d.cause.is_empty() { p { "Cause: " (d.cause) } }
                @if !d.hints.is_empty() { ul { @for hint in &d.hints { li { (hint) } } } }
                @if !f.preserved.is_empty() {
                    p { "Preserved logs: "
                        @for link in &f.preserved {
                            @let link = diagnosis::redact::strip_query(link);
                            @if link.starts_with("https://") { a href=(link) { (link) } " " }
                            @else { code { (link) } " " }
                        }
                    }
                }
            }
        }
    }
}

/// An element id for a name from the store: only `[a-z0-9-]`, so it is always a valid fragment.
fn anchor(name: &str) -> String {
    let mut out = String::from("x-");
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else {
            out.push_str(&format!("-{:x}-", u32::from(c)));
        }
    }
    out
}
