//! `batch-triage sweep`: the timer's job from a terminal or a cron job: sweep for failures no
//! event announced, send the alert groups that waited long enough, retry the outbox; once, or
//! every `--every` until Ctrl-C. Same settings as `serve` (the environment), same store, same
//! cursor and lease, so it can run beside a deployed handler without doing anything twice.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use batch_client::Deadline;
use indicatif::{ProgressBar, ProgressStyle};
use pipeline::settings::Settings;

use crate::render::{Output, inert};
use pipeline::sweep::SweepOptions;
use pipeline::tick::TickReport;
use pipeline::triage::{Outcome, SubjectReport, Triage};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub(crate) const EXAMPLES: &str = "\
Examples:
  # One sweep of the last 2 hours, whatever earlier sweeps covered:
  batch-triage sweep --once --since 2h
  # Every 5 minutes until Ctrl-C, one JSON object per sweep on stdout:
  batch-triage sweep --every 5m --output json
  # Against the local emulator (`batch-triage emulator --port 8089` in another terminal):
  AZURE_BATCH_ENDPOINT=http://127.0.0.1:8089 AZURE_BATCH_ACCOUNT=devbatch1 \\
  AZURE_BATCH_ACCESS_KEY='<the emulator's well-known key>' BATCH_TRIAGE_STORE=./preserved \\
  batch-triage sweep --once --since 1d

Where a sweep starts: from the cursor in the store (BATCH_TRIAGE_STORE), which every finished
sweep moves to its start time, so repeated sweeps never look at the same hour twice; a store's
first sweep looks back 1 hour. --since makes the first sweep of this command look back that far
whatever the cursor says (later rounds of --every carry on from the cursor). Failures already
handled are not handled again. Each sweep holds a lease in the store, so a sweep here and one
in a deployed handler never run at once. Every effect is idempotent.

Settings (environment): AZURE_BATCH_ENDPOINT, AZURE_BATCH_ACCOUNT, AZURE_BATCH_ACCESS_KEY (or
Entra ID without it), BATCH_TRIAGE_STORE, BATCH_TRIAGE_POLICY, BATCH_TRIAGE_ALLOW_HOSTS,
BATCH_TRIAGE_INVOCATION_SECONDS (how long one sweep may take), BATCH_TRIAGE_MAX_FILE_MIB.

Exit status: 0 when every sweep ran; 1 when the last one failed (the store or Batch was
unavailable; run it again, nothing is done twice); 2 for a usage or settings error.";

/// Arguments of `sweep`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Sweep once and exit, instead of every --every until Ctrl-C.
    #[arg(long)]
    once: bool,

    /// How far back the store's first sweep looks (e.g. 30m, 2h, 1d, 1h30m); later sweeps
    /// carry on from the store's cursor.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    since: Option<Duration>,

    /// Time between sweeps, without --once.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s")]
    every: Duration,

    /// Output format: `text`, one line per finding; `json`, one JSON object per sweep, one
    /// per line (JSON Lines).
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

/// `90s`, `5m`, `2h`, `1d`, or a sum of them (`1h30m`), as a policy writes durations (the same
/// parser); zero is refused, since neither "look back nothing" nor "repeat without pause" is
/// meant.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    const EXAMPLES: &str = "e.g. 90s, 5m, 2h, 1d or 1h30m";
    match diagnosis::policy::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err(format!(
            "{text:?} is not a positive duration; use {EXAMPLES}"
        )),
        Ok(duration) => Ok(duration),
        Err(why) => Err(format!("{why}; use {EXAMPLES}")),
    }
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let settings =
        Settings::from_env(|name| std::env::var(name).ok()).context("reading the settings")?;
    let budget = settings.invocation_budget;
    let triage = settings.build().context("building the pipeline")?;
    let options = SweepOptions::default();
    let progress = Progress::new(std::io::stderr().is_terminal());
    crate::runtime()?.block_on(async {
        let mut first = true;
        loop {
            // --since is about the first sweep; later rounds always carry on from the cursor.
            let since = args.since.filter(|_| first);
            first = false;
            let (ran, stop) = sweep_once(&triage, budget, &options, since, args, &progress).await?;
            if args.once || stop {
                return anyhow::Ok(exit_code(ran));
            }
            progress.waiting(args.every);
            let stopped = tokio::select! {
                () = tokio::time::sleep(args.every) => false,
                () = crate::serve::shutdown_signal() => true,
            };
            progress.clear();
            if stopped {
                return Ok(exit_code(ran));
            }
        }
    })
}

fn exit_code(last_sweep_ran: bool) -> ExitCode {
    if last_sweep_ran {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// One tick: whether it ran (a failure worth running again is reported, not returned), and
/// whether Ctrl-C or SIGTERM asked to stop after it.
async fn sweep_once(
    triage: &Triage,
    budget: Duration,
    options: &SweepOptions,
    since: Option<Duration>,
    args: &Args,
    progress: &Progress,
) -> anyhow::Result<(bool, bool)> {
    let now = OffsetDateTime::now_utc();
    progress.sweeping();
    let options = SweepOptions {
        look_back: since,
        ..options.clone()
    };
    let tick = triage.tick(now, Deadline::after(budget), &options);
    tokio::pin!(tick);
    let mut stop = false;
    let result = tokio::select! {
        result = &mut tick => result,
        () = crate::serve::shutdown_signal() => {
            // The sweep is finished rather than abandoned: an abandoned one would keep its
            // lease in the store, and block every sweep (here or deployed) until it expires.
            stop = true;
            progress.clear();
            eprintln!("batch-triage: stopping after this sweep (Ctrl-C again to abandon it)");
            progress.sweeping();
            tokio::select! {
                result = &mut tick => result,
                () = crate::serve::shutdown_signal() => {
                    progress.clear();
                    eprintln!(
                        "batch-triage: sweep abandoned; its lease in the store expires within {} minutes, and the next sweep starts from the same cursor",
                        options.lease.as_secs() / 60
                    );
                    return Ok((false, true));
                }
            }
        }
    };
    progress.clear();
    let mut out = std::io::stdout().lock();
    match result {
        Ok(report) => {
            match args.output {
                Output::Json => writeln!(out, "{}", tick_json(&report, now))?,
                Output::Text => {
                    writeln!(out, "{}", format_time(now))?;
                    // Subject ids come from the account: one line each, made inert, so an id
                    // with a CR, LF or ESC cannot forge or recolour a line.
                    for line in report.lines() {
                        writeln!(out, "  {}", inert(&line))?;
                    }
                }
            }
            out.flush()?;
            Ok((true, stop))
        }
        Err(error) => {
            match args.output {
                Output::Json => {
                    writeln!(
                        out,
                        "{}",
                        json!({"at": format_time(now), "error": error.to_string()})
                    )?;
                    out.flush()?;
                }
                Output::Text => {}
            }
            eprintln!(
                "batch-triage: sweep failed (nothing is lost; the next sweep tries again): {}",
                inert(&error.to_string())
            );
            Ok((false, stop))
        }
    }
}

fn format_time(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn outcome_json(outcome: &Outcome) -> Value {
    match outcome {
        Outcome::Done => json!({"status": "done"}),
        Outcome::Skipped(reason) => json!({"status": "skipped", "reason": reason}),
        Outcome::Refused(reason) => json!({"status": "refused", "reason": reason}),
        Outcome::Failed { reason, retryable } => {
            json!({"status": "failed", "reason": reason, "retryable": retryable})
        }
    }
}

fn subject_json(s: &SubjectReport) -> Value {
    json!({
        "subject": s.subject,
        "class": s.class.map(|c| c.as_str()),
        "outcome": outcome_json(&s.outcome),
        "preserved": s.preserved,
        "alreadyPreserved": s.already_preserved,
        "notified": s.notified,
        "mutedBy": s.muted_by,
        "outboxed": s.outboxed,
        "waiting": s.waiting,
        "action": s.action,
    })
}

/// The machine-readable summary of one tick.
fn tick_json(report: &TickReport, at: OffsetDateTime) -> Value {
    let sweep = &report.sweep;
    json!({
        "at": format_time(at),
        "since": if sweep.skipped_busy { Value::Null } else { json!(sweep.since) },
        "skippedBusy": sweep.skipped_busy,
        "completed": sweep.completed,
        "jobsExamined": sweep.jobs_examined,
        // Several accounts: what each one's sweep did (empty for one account).
        "accounts": sweep.accounts.iter().map(|a| json!({
            "account": a.account,
            "since": a.since,
            "skippedBusy": a.skipped_busy,
            "completed": a.completed,
            "jobsExamined": a.jobs_examined,
            "subjects": a.subjects,
            "error": a.error,
        })).collect::<Vec<_>>(),
        "subjects": sweep.subjects.iter().map(subject_json).collect::<Vec<_>>(),
        "groupedAlertsSent": report.flushed.len(),
        "resolvedMessagesSent": report.resolved.len(),
        "outbox": {
            "delivered": report.outbox.delivered,
            "stillPending": report.outbox.still_pending,
            "dead": report.outbox.dead,
        },
    })
}

/// A spinner on stderr while a sweep runs and between sweeps, only on a terminal, so piped or
/// logged output stays clean. Each phase gets a new spinner: a reused one redraws its old message
/// over the report printed in between.
struct Progress {
    terminal: bool,
    current: std::sync::Mutex<Option<ProgressBar>>,
}

impl Progress {
    fn new(terminal: bool) -> Self {
        Self {
            terminal,
            current: std::sync::Mutex::new(None),
        }
    }

    fn show(&self, message: String, tick: Duration) {
        if !self.terminal {
            return;
        }
        let bar = ProgressBar::new_spinner()
            .with_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            )
            .with_message(message);
        bar.enable_steady_tick(tick);
        if let Some(old) = self.replace(Some(bar)) {
            old.finish_and_clear();
        }
    }

    fn replace(&self, bar: Option<ProgressBar>) -> Option<ProgressBar> {
        match self.current.lock() {
            Ok(mut current) => std::mem::replace(&mut *current, bar),
            Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), bar),
        }
    }

    fn sweeping(&self) {
        self.show(
            "sweeping: failed tasks, ended and stuck jobs, prep failures".to_owned(),
            Duration::from_millis(120),
        );
    }

    fn waiting(&self, every: Duration) {
        let next = OffsetDateTime::now_utc() + every;
        self.show(
            format!(
                "next sweep at {} (Ctrl-C stops); waiting",
                format_time(next)
            ),
            Duration::from_millis(500),
        );
    }

    fn clear(&self) {
        if let Some(bar) = self.replace(None) {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_the_forms_people_type() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration(" 2h "), Ok(Duration::from_secs(7200)));
    }

    #[test]
    fn ambiguous_or_empty_durations_are_refused_with_examples() {
        for bad in [
            "",
            "2",
            "h",
            "2 hours",
            "0s",
            "-1h",
            "1.5h",
            "99999999999999999999d",
        ] {
            let error = parse_duration(bad).unwrap_err();
            assert!(error.contains("e.g. 90s"), "{bad:?}: {error}");
        }
    }
}
