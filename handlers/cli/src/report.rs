//! `batch-triage report`: what the store holds over a window (failures, alerts sent, muted or
//! queued, job actions, silences), from the real store that the deployed pipeline fills, as a
//! console summary, JSON, or a self-contained HTML page (`--out`).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use report::{Limits, ReportOptions, StoreReport, build};
use time::OffsetDateTime;

use crate::render::{Output, inert};

pub(crate) const EXAMPLES: &str = "\
Examples:
  # The last day, on the console
  batch-triage report --store ./preserved

  # The last 6 hours of one account, as a page to open in a browser (report.html, report.json)
  batch-triage report --store \"$BATCH_TRIAGE_STORE\" --since 6h --account prodbatch --out ./report

  # For a script
  batch-triage report --store ./preserved --since 2d --output json

The report is bounded whatever the store holds: failures are counted from listings, and only
the newest 10 failures per class, the 20 jobs with the most failures, and the newest alerts,
job actions and muted alerts are read. The page needs no network (inline CSS, no script).";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The store: a directory, a blob container URL or a connection string (as for `serve`).
    #[arg(long, env = "BATCH_TRIAGE_STORE", value_name = "STORE")]
    store: Option<String>,
    /// How far back (e.g. 30m, 6h, 1d; at most 31 days).
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    since: String,
    /// Only this Batch account.
    #[arg(long, value_name = "ACCOUNT")]
    account: Option<String>,
    /// Write report.html and report.json into this directory.
    #[arg(long, value_name = "DIR")]
    out: Option<std::path::PathBuf>,
    /// The console output: a summary, or the whole report as JSON.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let spec = args.store.as_deref().context(
        "no store: pass --store or set BATCH_TRIAGE_STORE (a directory or a blob container URL)",
    )?;
    let since = diagnosis::policy::parse_duration(&args.since)
        .map_err(|e| anyhow::anyhow!("--since {:?}: {e}", args.since))?;
    let store = artifact_store::open(spec).context("BATCH_TRIAGE_STORE")?;
    let options = ReportOptions {
        since,
        account: args.account.clone(),
        now: OffsetDateTime::now_utc(),
        limits: Limits::default(),
    };
    let report = crate::runtime()?.block_on(build(store, &options))?;
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let html = dir.join("report.html");
        std::fs::write(&html, report.html())
            .with_context(|| format!("writing {}", html.display()))?;
        let json = dir.join("report.json");
        std::fs::write(&json, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", json.display()))?;
    }
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        Output::Text => summary(&mut out, &report)?,
    }
    if let Some(dir) = &args.out {
        if args.output == Output::Text {
            writeln!(out, "\nreport: {}", dir.join("report.html").display())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn summary(out: &mut impl Write, r: &StoreReport) -> std::io::Result<()> {
    writeln!(
        out,
        "{} failed subjects since {}{}",
        r.total_failures,
        r.since,
        r.account
            .as_deref()
            .map(|a| format!(" (account {})", inert(a)))
            .unwrap_or_default()
    )?;
    for c in &r.classes {
        writeln!(out, "  {:>6}  {} ({})", c.count, c.class, c.severity)?;
    }
    if !r.jobs.is_empty() {
        writeln!(out, "jobs with the most failures:")?;
        for j in r.jobs.iter().take(5) {
            writeln!(
                out,
                "  {:>6}  {}/{}",
                j.count,
                inert(&j.account),
                inert(&j.job)
            )?;
        }
    }
    let muted: usize = r.silences.iter().map(|s| s.muted).sum();
    writeln!(
        out,
        "alerts: {} sent, {muted} muted, {} queued, {} undeliverable",
        r.groups.iter().map(|g| g.sends).sum::<u64>(),
        r.outbox_total,
        r.dead_letters
    )?;
    writeln!(out, "job actions: {}", r.actions.len())?;
    writeln!(
        out,
        "silences: {} ({} active)",
        r.silences.len(),
        r.silences.iter().filter(|s| s.active).count()
    )?;
    for t in &r.truncated {
        writeln!(out, "(bounded: {t})")?;
    }
    Ok(())
}
