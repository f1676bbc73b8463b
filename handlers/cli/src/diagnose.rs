//! `batch-triage diagnose`: reads payloads from files or stdin and prints one diagnosis per task,
//! job or failed node, and one per problem of a pool (resize, autoscale, a stuck delete), as text
//! for a person or as a JSON array for scripts.
//!
//! Inputs are streamed: a List Tasks response of any size is read one task at a time and each
//! diagnosis is printed as soon as it is made.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use diagnosis::payload::{PayloadKind, read_payload};
use diagnosis::redact::Redactor;
use diagnosis::wire::{BatchJob, Timestamp};
use diagnosis::{Diagnosis, Evidence, Item, diagnose_item, diagnose_pool};

use crate::render::{Output, Style, Summary, inert, inert_block, render_diagnosis, render_note};

pub(crate) const EXAMPLES: &str = "\
Examples:
  batch-triage diagnose examples/payloads/task-oom.json
  batch-triage diagnose --job job.json --output json tasks.json > diagnoses.json
  az batch task show --job-id j1 --task-id t1 | batch-triage diagnose -
  batch-triage diagnose --prep-status prep.json tasks.json
  az batch pool show --pool-id render | batch-triage diagnose -
  az batch node list --pool-id render | batch-triage diagnose -

Exit status: 0 when every input was diagnosed (whatever it found), 1 when some input could not
be read (the others are still diagnosed), 2 on a usage error.";

/// Arguments of `diagnose`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Payload files to diagnose; `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,

    /// The tasks' job (Get Job JSON): its onTaskFailure decides whether exitConditions'
    /// jobAction is honoured.
    #[arg(long, value_name = "JOB.json")]
    job: Option<PathBuf>,

    /// The job's preparation/release task status (List Job Preparation and Release Task Status
    /// JSON): tasks waiting on a node whose preparation failed are reported as prep-blocked.
    #[arg(long, value_name = "STATUS.json")]
    prep_status: Option<PathBuf>,

    /// The Batch account name to report, when the payload does not say.
    #[arg(long)]
    account: Option<String>,

    /// Output format: `text`, a readable summary (coloured on a terminal); `json`, a JSON array
    /// of diagnoses (docs/diagnosis-json.md).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let job = match &args.job {
        Some(path) => Some(read_job(path)?),
        None => None,
    };
    let prep_failed_nodes = match &args.prep_status {
        Some(path) => read_prep_failed_nodes(path)?,
        None => Vec::new(),
    };
    let evidence = Evidence {
        account: args.account.as_deref(),
        job: job.as_ref(),
        job_id: job.as_ref().and_then(|j| j.id.as_deref()),
        prep_failed_nodes: &prep_failed_nodes,
        // How long a pool has been deleting is measured against now (the core reads no clock).
        now: Some(Timestamp(time::OffsetDateTime::now_utc())),
        ..Evidence::default()
    };

    let redactor = crate::render::configured_redactor();
    let stdout = io::stdout();
    let style = Style::for_stdout();
    let mut out = BufWriter::with_capacity(64 << 10, stdout.lock());
    let mut sink = match args.output {
        Output::Json => Sink::Json {
            out: &mut out,
            first: true,
        },
        Output::Text => Sink::Text {
            out: &mut out,
            style,
            summary: Summary::default(),
        },
    };
    sink.begin()?;
    let mut failed_inputs = 0;
    let mut read_inputs = 0;
    for path in &args.files {
        let name = display_name(path);
        let mut write_error = None;
        let result = open(path).and_then(|reader| {
            read_payload(reader, &mut |item| {
                if write_error.is_none() {
                    if let Err(e) = sink.item(&item, &evidence, &redactor) {
                        write_error = Some(e);
                    }
                }
            })
            .with_context(|| name.clone())
        });
        if let Some(e) = write_error {
            // stdout went away (a closed pipe): nothing more can be printed.
            if e.kind() == io::ErrorKind::BrokenPipe {
                return Ok(ExitCode::SUCCESS);
            }
            return Err(e).context("writing the output");
        }
        match result {
            Ok(kind) => {
                read_inputs += 1;
                sink.input_done(&name, kind)?;
            }
            Err(error) => {
                failed_inputs += 1;
                // Keep going: one bad file must not hide the diagnoses of the others.
                sink.flush()?;
                eprintln!("batch-triage: {}", inert_block(&format!("{error:#}")));
            }
        }
    }
    sink.end(read_inputs > 0)?;
    Ok(if failed_inputs == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn display_name(path: &Path) -> String {
    if path == Path::new("-") {
        "<stdin>".to_owned()
    } else {
        path.display().to_string()
    }
}

fn open(path: &Path) -> anyhow::Result<Box<dyn Read>> {
    if path == Path::new("-") {
        return Ok(Box::new(io::stdin().lock()));
    }
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        bail!("{}: is a directory, not a payload file", path.display());
    }
    Ok(Box::new(file))
}

fn read_job(path: &Path) -> anyhow::Result<BatchJob> {
    let mut job = None;
    read_payload(open(path)?, &mut |item| {
        if let (None, Item::Job(j)) = (&job, item) {
            job = Some(*j);
        }
    })
    .with_context(|| format!("--job {}", path.display()))?;
    job.with_context(|| {
        format!(
            "--job {}: holds no job (expected Get Job JSON)",
            path.display()
        )
    })
}

fn read_prep_failed_nodes(path: &Path) -> anyhow::Result<Vec<String>> {
    let mut statuses = Vec::new();
    read_payload(open(path)?, &mut |item| {
        if let Item::PrepReleaseStatus(status) = item {
            statuses.push(*status);
        }
    })
    .with_context(|| format!("--prep-status {}", path.display()))?;
    if statuses.is_empty() {
        bail!(
            "--prep-status {}: holds no job preparation/release status",
            path.display()
        );
    }
    Ok(diagnosis::prep_failed_nodes(&statuses))
}

/// Where diagnoses go: a JSON array, or text for a person.
enum Sink<'a, W: Write> {
    Json {
        out: &'a mut W,
        first: bool,
    },
    Text {
        out: &'a mut W,
        style: Style,
        summary: Summary,
    },
}

impl<W: Write> Sink<'_, W> {
    fn begin(&mut self) -> io::Result<()> {
        match self {
            Sink::Json { out, .. } => out.write_all(b"["),
            Sink::Text { .. } => Ok(()),
        }
    }

    fn item(
        &mut self,
        item: &Item,
        evidence: &Evidence<'_>,
        redactor: &Redactor,
    ) -> io::Result<()> {
        // A pool can have several problems at once (a stuck delete, resize errors, a failing
        // autoscale formula): each is shown.
        let mut diagnoses = match item {
            Item::Pool(pool) => diagnose_pool(pool, evidence),
            _ => diagnose_item(item, evidence).into_iter().collect(),
        };
        for d in &mut diagnoses {
            redactor.redact_diagnosis(d);
        }
        match self {
            Sink::Json { out, first } => {
                for d in &diagnoses {
                    out.write_all(if *first { b"\n" } else { b",\n" })?;
                    *first = false;
                    write_json(out, d)?;
                }
                Ok(())
            }
            Sink::Text {
                out,
                style,
                summary,
            } => {
                if diagnoses.is_empty() {
                    return render_note(out, item, *style);
                }
                for d in &diagnoses {
                    summary.add(d);
                    render_diagnosis(out, d, *style)?;
                }
                Ok(())
            }
        }
    }

    fn input_done(&mut self, name: &str, kind: PayloadKind) -> io::Result<()> {
        match self {
            Sink::Json { .. } => Ok(()),
            Sink::Text { out, style, .. } => writeln!(
                out,
                "{}",
                style.dim(&format!("— {}: {}", inert(name), kind.describe()))
            ),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Json { out, .. } | Sink::Text { out, .. } => out.flush(),
        }
    }

    /// Closes the output; the text summary only when at least one input was read.
    fn end(&mut self, any_input_read: bool) -> io::Result<()> {
        match self {
            Sink::Json { out, first } => {
                out.write_all(if *first { b"]\n" } else { b"\n]\n" })?;
            }
            Sink::Text {
                out,
                style,
                summary,
            } if any_input_read => summary.render(out, *style)?,
            Sink::Text { .. } => {}
        }
        self.flush()
    }
}

fn write_json<W: Write>(out: &mut W, diagnosis: &Diagnosis) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, diagnosis).map_err(io::Error::other)
}
