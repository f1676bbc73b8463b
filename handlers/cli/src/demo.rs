//! `batch-triage demo`: arguments and the console summary. The demo itself (the emulator, the
//! pipeline, the receivers and the report) is the `batch-triage-demo` library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use demo::{Report, prepare_out_dir, run_demo};

pub(crate) const EXAMPLES: &str = "\
Examples:
  batch-triage demo                          # writes ./batch-triage-demo, then open report.html
  batch-triage demo --out /tmp/bt-demo --output json | jq .byClass

What it does: starts the Batch emulator (account devbatch1) with a scenario holding every
failure class, and a second one (account devbatch2, its own key), runs one pipeline over both
(Event Hubs, Event Grid and CloudEvents deliveries; then, as an operator would with
`batch-triage silence add`, mutes devbatch2's nightly job; then the timer's ticks, where a stuck
job that ended and a pool that reached its target are resolved), keeps the logs in DIR/store,
sends alerts to loopback Teams, webhook, SMTP, PagerDuty and Slack receivers (copies in
DIR/alerts), and writes DIR/report.html (the page `batch-triage report` draws from DIR/store,
with the demo's sections) and DIR/report.json. Nothing leaves 127.0.0.1.

Running it again replaces the previous demo directory. A non-empty directory that is not one
(it has no .batch-triage-demo marker) is refused.

Exit status: 0 when every failure was handled once (logs copied once, each receiver told once),
1 when something was copied or sent twice or failed (the report says what), 2 on an error, such
as a refused --out directory.";

/// Arguments of `demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where the report, the preserved logs and the received alerts go.
    #[arg(long, value_name = "DIR", default_value = "batch-triage-demo")]
    out: PathBuf,

    /// Output format of the summary.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    /// A readable summary, one line per alert.
    Text,
    /// One JSON object: counts by class, alerts, and where the files are.
    Json,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let out = prepare_out_dir(&args.out)?;
    let outcome = crate::runtime()?.block_on(run_demo(&out))?;
    let report = Report::build(&out, outcome);
    report.write(&out)?;
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report.summary_json(&out))?
        ),
        Output::Text => print!("{}", report.summary_text(&out, started.elapsed())),
    }
    Ok(if report.converged() {
        ExitCode::SUCCESS
    } else {
        // The demo is also a check that the pipeline converges; say so in the status too.
        ExitCode::from(1)
    })
}
