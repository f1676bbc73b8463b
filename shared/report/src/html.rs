//! The report as one self-contained HTML page: inline CSS, no script, no font, image or style
//! from anywhere, so it opens offline. `maud` escapes every interpolated value; ids, messages
//! and hints come from Batch and tasks and are never markup. Only `https://` links to preserved
//! files become anchors (without their query, which could hold a SAS); every other link is
//! inside the page.

use maud::{Markup, html};

use crate::page::{Extras, Section, anchor, frame};
use crate::{ClassSection, StoreReport};

impl StoreReport {
    /// The page.
    pub fn html(&self) -> String {
        self.html_with(&Extras::default())
    }

    /// The page with `extras` around the store's sections: another title, a header, sections
    /// of its own after the store's (drawn with [`crate::page`]'s helpers), links to files
    /// beside the page, a footer.
    pub fn html_with(&self, extras: &Extras) -> String {
        let mut sections = self.sections();
        sections.extend(extras.sections.iter().cloned());
        let header = html! {
            @if let Some(header) = &extras.header { (header) }
            p class="muted" {
                "From " (self.since) " to " (self.generated)
                @if let Some(account) = &self.account { " · account " (account) }
                " · " (self.total_failures) " failed subjects"
            }
            @if !self.truncated.is_empty() {
                p class="muted" { "Bounded: " (self.truncated.join("; ")) "." }
            }
        };
        frame(
            extras.title.as_deref().unwrap_or("batch-triage report"),
            header,
            &sections,
            &extras.files,
            extras.footer.as_ref(),
        )
    }

    /// The store's sections, in the page's order.
    fn sections(&self) -> Vec<Section> {
        let section = |id, title: &str, body| Section {
            id,
            title: title.to_owned(),
            body,
        };
        vec![
            section("classes", "By class", self.by_class()),
            section("jobs", "By job", self.by_job()),
            section("timeline", "Timeline", self.timeline()),
            section(
                "failures",
                "Failures",
                html! { @for class in &self.classes { (failures(class)) } },
            ),
            section("alerts", "Alerts", self.alerts()),
            section("actions", "Job actions", self.actions()),
            section("silences", "Silences", self.silences()),
        ]
    }

    fn by_class(&self) -> Markup {
        html! {
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
            table {
                tr { th { "account" } th { "job" } th { "failed subjects" } }
                @for j in &self.jobs {
                    tr {
                        td { (j.account) }
                        // Pools' and nodes' failures belong to no job.
                        td { @if j.job.is_empty() { span class="muted" { "(no job)" } } @else { (j.job) } }
                        td { (j.count) }
                    }
                }
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
