//! Text rendering of diagnoses for a person at a terminal.

use std::collections::BTreeMap;
use std::io::{self, Write};

use diagnosis::{Diagnosis, Item, Severity};

/// How a command prints its results: one choice for every subcommand's `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Output {
    /// For a person: readable lines, coloured on a terminal, untrusted text made inert.
    Text,
    /// Machine-readable JSON (the command's help says its shape).
    Json,
}

/// Untrusted text (ids, Batch messages, stderr) on one terminal line: control and bidi
/// characters become visible marks, so it cannot move the cursor, ring, recolour, reorder or
/// forge another line.
pub(crate) fn inert(text: &str) -> String {
    diagnosis::inert::one_line(text)
}

/// Untrusted multi-line text (a stderr tail): as [`inert`], keeping its line breaks.
pub(crate) fn inert_block(text: &str) -> String {
    diagnosis::inert::multi_line(text)
}

/// The secrets this process was configured with through its environment, for redacting them
/// from whatever it prints (a task can echo its own account key into stderr).
pub(crate) fn configured_redactor() -> diagnosis::redact::Redactor {
    pipeline::settings::redactor_from_env(|name| std::env::var(name).ok())
}

/// Whether to colour the output. `anstream` decides as the terminal conventions say: only on a
/// terminal, never with `NO_COLOR`, always with `CLICOLOR_FORCE`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Style {
    colour: bool,
}

impl Style {
    /// The choice for stdout.
    pub(crate) fn for_stdout() -> Self {
        Self::from_choice(anstream::AutoStream::choice(&io::stdout()))
    }

    fn from_choice(choice: anstream::ColorChoice) -> Self {
        Self {
            colour: !matches!(choice, anstream::ColorChoice::Never),
        }
    }

    /// Never coloured (for tests and files).
    #[cfg(test)]
    pub(crate) fn plain() -> Self {
        Self { colour: false }
    }

    fn paint(self, style: anstyle::Style, text: &str) -> String {
        if self.colour {
            format!("{style}{text}{style:#}")
        } else {
            text.to_owned()
        }
    }

    pub(crate) fn dim(self, text: &str) -> String {
        self.paint(anstyle::Style::new().dimmed(), text)
    }

    fn bold(self, text: &str) -> String {
        self.paint(anstyle::Style::new().bold(), text)
    }

    fn severity(self, severity: Severity) -> String {
        use anstyle::AnsiColor;
        let label = format!("{:<8}", severity.as_str().to_uppercase());
        let colour = |c: AnsiColor| anstyle::Style::new().fg_color(Some(c.into()));
        let style = match severity {
            Severity::Critical => colour(AnsiColor::Red).bold(),
            Severity::Error => colour(AnsiColor::Red),
            Severity::Warning => colour(AnsiColor::Yellow),
            Severity::Info => colour(AnsiColor::Cyan),
        };
        self.paint(style, &label)
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
        inert(&d.summary)
    )?;
    let s = &d.subject;
    let place: Vec<String> = [
        ("account", s.account.as_deref()),
        ("pool", s.pool_id.as_deref()),
        ("node", s.node_id.as_deref()),
    ]
    .iter()
    .filter_map(|(k, v)| v.map(|v| format!("{k} {}", inert(v))))
    .chain(s.attempt.filter(|a| *a > 0).map(|a| format!("attempt {a}")))
    .collect();
    if !place.is_empty() {
        writeln!(out, "         {}", style.dim(&place.join(" · ")))?;
    }
    writeln!(out, "         cause: {}", inert(&d.cause))?;
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
            inert(&impact.job_action),
            inert(&impact.dependency_action)
        )?;
    }
    for hint in &d.hints {
        writeln!(out, "         → {}", inert(hint))?;
    }
    writeln!(
        out,
        "         {}",
        style.dim(&format!("fingerprint {}", inert(&d.fingerprint)))
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
        Item::Pool(p) => format!(
            "pool {}: no resize, autoscale or delete failure",
            p.id.as_deref().unwrap_or("(unnamed)")
        ),
        Item::Node(n) => format!(
            "node {}: {}, no failure",
            n.id.as_deref().unwrap_or("(unnamed)"),
            n.state.as_ref().map_or("state unknown", |s| s.as_str())
        ),
        Item::PoolEvent { kind, body, .. } => format!(
            "{} of pool {}: no failure",
            kind.operation_name(),
            body.id.as_deref().unwrap_or("(unnamed)")
        ),
        Item::PoolNodeCounts(c) => format!(
            "node counts of pool {}: {} unusable or start task failed",
            c.pool_id.as_deref().unwrap_or("(unnamed)"),
            c.in_trouble()
        ),
        Item::Task(_) | Item::Job(_) | Item::TaskEvent { .. } => return Ok(()),
    };
    writeln!(out, "{}", style.dim(&format!("· {}", inert(&text))))
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
            .map(|(c, n)| format!("{} ×{n}", inert(c)))
            .collect();
        writeln!(out, "{}", style.dim(&classes.join("  ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a hostile task id, message or stderr line carries: an ESC sequence that clears the
    /// screen, a bell, a bare CR to overwrite the line, a forged second line and a bidi override.
    const HOSTILE: &str = "job\u{1b}[2J\u{7}\rFAKE\nINFO forged line \u{202e}exe.txt";

    fn hostile_diagnosis() -> Diagnosis {
        Diagnosis {
            subject: diagnosis::Subject {
                account: Some(HOSTILE.into()),
                job_id: Some(HOSTILE.into()),
                task_id: Some(HOSTILE.into()),
                attempt: Some(1),
                pool_id: Some(HOSTILE.into()),
                node_id: Some(HOSTILE.into()),
            },
            class: diagnosis::FailureClass::parse("task.exit_code").unwrap(),
            severity: Severity::Error,
            summary: HOSTILE.into(),
            cause: HOSTILE.into(),
            hints: vec![HOSTILE.into()],
            exit_code: Some(1),
            exit_code_hex: None,
            exit_meaning: None,
            failure: None,
            impact: None,
            logs: vec![],
            fingerprint: HOSTILE.into(),
        }
    }

    #[test]
    fn untrusted_text_cannot_act_on_the_terminal() {
        let mut out = Vec::new();
        render_diagnosis(&mut out, &hostile_diagnosis(), Style::plain()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(!text.contains('\u{202e}'), "{text:?}");
        assert!(text.contains("job␛[2J␇␍FAKE␊INFO forged line <U+202E>exe.txt"));
        // No line starts with the forged text: the LF became a visible mark.
        assert!(
            !text.lines().any(|l| l.starts_with("INFO forged")),
            "{text}"
        );
    }

    #[test]
    fn colour_comes_from_anstyle_only_when_chosen() {
        let coloured = Style::from_choice(anstream::ColorChoice::Always);
        assert_eq!(coloured.bold("x"), "\u{1b}[1mx\u{1b}[0m");
        let plain = Style::from_choice(anstream::ColorChoice::Never);
        assert_eq!(plain.severity(Severity::Error).trim_end(), "ERROR");
    }

    /// The serve log's formatter, as `serve` sets it up: an id logged as a Debug field (`?id`,
    /// how the libraries log ids) cannot forge a line, ring or recolour.
    #[test]
    fn ids_in_log_fields_cannot_forge_lines() {
        #[derive(Clone, Default)]
        struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let job_id = "etl\r\nINFO forged\u{1b}[2J\u{7}\u{202e}";
            tracing::info!(job_id = ?job_id, "job changed");
        });
        let logged = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(logged.lines().count(), 1, "{logged:?}");
        let line = logged.trim_end_matches('\n');
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        assert!(!line.contains('\u{202e}'), "{line:?}");
    }
}
