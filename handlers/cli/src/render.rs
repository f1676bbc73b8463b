//! Text rendering of diagnoses for a person at a terminal.

use std::collections::BTreeMap;
use std::io::{self, Write};

use diagnosis::{Diagnosis, Item, Severity};

/// Whether to colour the output: only on a terminal, and never when `NO_COLOR` is set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Style {
    colour: bool,
}

impl Style {
    pub(crate) fn detect(is_terminal: bool) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            colour: is_terminal && !no_color,
        }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    pub(crate) fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }

    fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }

    fn severity(self, severity: Severity) -> String {
        let label = format!("{:<8}", severity.as_str().to_uppercase());
        match severity {
            Severity::Critical => self.paint("1;31", &label),
            Severity::Error => self.paint("31", &label),
            Severity::Warning => self.paint("33", &label),
            Severity::Info => self.paint("36", &label),
        }
    }
}

pub(crate) fn render_diagnosis<W: Write>(
    out: &mut W,
    d: &Diagnosis,
    style: Style,
) -> io::Result<()> {
    writeln!(
        out,
        "{} {}  {}",
        style.severity(d.severity),
        style.bold(d.class.as_str()),
        d.summary
    )?;
    let s = &d.subject;
    let place: Vec<String> = [
        ("account", s.account.as_deref()),
        ("pool", s.pool_id.as_deref()),
        ("node", s.node_id.as_deref()),
    ]
    .iter()
    .filter_map(|(k, v)| v.map(|v| format!("{k} {v}")))
    .chain(s.attempt.filter(|a| *a > 0).map(|a| format!("attempt {a}")))
    .collect();
    if !place.is_empty() {
        writeln!(out, "         {}", style.dim(&place.join(" · ")))?;
    }
    writeln!(out, "         cause: {}", d.cause)?;
    if let Some(code) = d.exit_code {
        let hex = d
            .exit_code_hex
            .as_deref()
            .map(|h| format!(" {h}"))
            .unwrap_or_default();
        let meaning = d
            .exit_meaning
            .map(|m| format!(" ({m}: {})", m.meaning()))
            .unwrap_or_default();
        writeln!(out, "         exit code: {code}{hex}{meaning}")?;
    }
    if let Some(impact) = &d.impact {
        let honoured = match impact
            .job_action_honoured
            .filter(|_| impact.job_action != "none")
        {
            Some(true) => ", honoured",
            Some(false) => ", not honoured: onTaskFailure is noaction",
            None => "",
        };
        writeln!(
            out,
            "         impact: jobAction {}{honoured} · dependencyAction {}",
            impact.job_action, impact.dependency_action
        )?;
    }
    for hint in &d.hints {
        writeln!(out, "         → {hint}")?;
    }
    writeln!(
        out,
        "         {}",
        style.dim(&format!("fingerprint {}", d.fingerprint))
    )?;
    writeln!(out)
}

/// A line for items that are not diagnosed, so a person sees what was read.
pub(crate) fn render_note<W: Write>(out: &mut W, item: &Item, style: Style) -> io::Result<()> {
    let text = match item {
        Item::TaskReference(r) => format!(
            "reference to {} (fetch it with the Batch API to diagnose it)",
            match &r.task_id {
                Some(t) => format!("task {t} of job {}", r.job_id),
                None => format!("job {}", r.job_id),
            }
        ),
        Item::Error(e) => format!(
            "Batch error {}: {}{}",
            e.code.as_deref().unwrap_or("(no code)"),
            e.message_text()
                .map(diagnosis::redact::redact)
                .unwrap_or_default(),
            e.request_id()
                .map(|id| format!(" (request id {id})"))
                .unwrap_or_default()
        ),
        Item::Skipped { what } => format!("skipped {what}: not about tasks or jobs"),
        Item::TaskCounts(c) => {
            let t = c.task_counts;
            format!(
                "task counts: {} active, {} running, {} completed ({} succeeded, {} failed)",
                t.active, t.running, t.completed, t.succeeded, t.failed
            )
        }
        Item::File(f) => format!(
            "file {}{}",
            f.name.as_deref().unwrap_or("(unnamed)"),
            f.properties
                .as_ref()
                .and_then(|p| p.content_length)
                .map(|n| format!(" ({n} bytes)"))
                .unwrap_or_default()
        ),
        Item::PrepReleaseStatus(s) => format!(
            "job preparation/release succeeded or still running on node {}",
            s.node_id.as_deref().unwrap_or("(unknown)")
        ),
        Item::SpecialTaskEvent { body, .. } => format!(
            "{} task {} succeeded on node {}",
            body.task_type.as_deref().unwrap_or("special"),
            body.task_name.as_deref().unwrap_or("(unnamed)"),
            body.node_info
                .as_ref()
                .and_then(|n| n.node_id.as_deref())
                .unwrap_or("(unknown)")
        ),
        Item::Task(_) | Item::Job(_) | Item::TaskEvent { .. } => return Ok(()),
    };
    writeln!(out, "{}", style.dim(&format!("· {text}")))
}

/// Counts by class and severity, printed at the end.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    by_class: BTreeMap<&'static str, usize>,
    by_severity: BTreeMap<Severity, usize>,
    total: usize,
}

impl Summary {
    pub(crate) fn add(&mut self, d: &Diagnosis) {
        *self.by_class.entry(d.class.as_str()).or_default() += 1;
        *self.by_severity.entry(d.severity).or_default() += 1;
        self.total += 1;
    }

    pub(crate) fn render<W: Write>(&self, out: &mut W, style: Style) -> io::Result<()> {
        if self.total == 0 {
            return writeln!(out, "No tasks, jobs or failed nodes in the input.");
        }
        let severities: Vec<String> = self
            .by_severity
            .iter()
            .rev()
            .map(|(s, n)| format!("{n} {s}"))
            .collect();
        writeln!(
            out,
            "{} {} ({})",
            style.bold(&self.total.to_string()),
            if self.total == 1 {
                "diagnosis"
            } else {
                "diagnoses"
            },
            severities.join(", ")
        )?;
        let classes: Vec<String> = self
            .by_class
            .iter()
            .map(|(c, n)| format!("{c} ×{n}"))
            .collect();
        writeln!(out, "{}", style.dim(&classes.join("  ")))
    }
}
