//! `batch-triage silence add | list | expire`: silences kept in the store, so every instance of
//! the pipeline (Functions, Lambda, `serve`, `sweep`) honours them within a minute, with no
//! redeploy. The matchers are the policy's (`pipeline::silences`).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use pipeline::silences::{ListedSilence, NewSilence, SilenceStore};
use time::OffsetDateTime;

use crate::render::{Output, inert};

pub(crate) const EXAMPLES: &str = "\
Examples:
  # Mute the etl job's task failures for two hours (every instance, within a minute)
  export BATCH_TRIAGE_STORE=./preserved        # or a blob container URL, as for serve
  batch-triage silence add --match 'job=etl' --match 'class=task.*' --for 2h \\
      --comment 'etl input is being re-uploaded'

  # What is muted now, and how many alerts each silence muted; --all adds the ended ones
  batch-triage silence list
  batch-triage silence list --all --output json

  # End one now
  batch-triage silence expire s-0123456789ab

Matchers (all must hold; globs as in the policy's match tables):
  class=task.*  severity=error (at least)  exit_meaning=oom_or_sigkill  code=*Timeout*
  account=prod*  job=etl-*  pool=gpu-*  stderr=REGEX

Silences mute notifications only: logs are still kept and job actions follow their rules.
Every alert a silence mutes is counted (silence list, report).";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The store: a directory, a blob container URL or a connection string (as for `serve`).
    #[arg(long, env = "BATCH_TRIAGE_STORE", value_name = "STORE", global = true)]
    store: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Mute matching alerts for a while.
    Add {
        /// A matcher `key=value`; repeat for more (all must hold).
        #[arg(long = "match", value_name = "KEY=VALUE", required = true)]
        matchers: Vec<String>,
        /// How long (e.g. 30m, 2h, 1d; at most 90 days).
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Why (shown with the silence and in the report).
        #[arg(long)]
        comment: String,
        /// Who (default: the user name).
        #[arg(long)]
        author: Option<String>,
        /// How to print the silence written.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// The silences in force, with how many alerts each muted.
    List {
        /// Ended silences too.
        #[arg(long)]
        all: bool,
        /// Text for a person, JSON (an array of silences) for a script.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// End a silence now.
    Expire {
        /// The silence's id (`s-` and 12 hex digits, from `silence list`).
        id: String,
        /// Who (default: the user name).
        #[arg(long)]
        author: Option<String>,
    },
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let spec = args.store.as_deref().context(
        "no store: pass --store or set BATCH_TRIAGE_STORE (a directory or a blob container URL)",
    )?;
    let store = artifact_store::open(spec).context("BATCH_TRIAGE_STORE")?;
    let silences = SilenceStore::new(store);
    // Whole seconds: the times are read by people.
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
    let mut out = std::io::stdout().lock();
    crate::runtime()?.block_on(async {
        match &args.command {
            Command::Add {
                matchers,
                duration,
                comment,
                author,
                output,
            } => {
                let duration = diagnosis::policy::parse_duration(duration)
                    .map_err(|e| anyhow::anyhow!("--for {duration:?}: {e}"))?;
                let added = silences
                    .add(
                        NewSilence {
                            matchers: matchers.clone(),
                            duration,
                            author: author.clone().unwrap_or_else(user_name),
                            comment: comment.clone(),
                        },
                        now,
                    )
                    .await?;
                match output {
                    Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&added)?)?,
                    Output::Text => writeln!(
                        out,
                        "silence {} added: mutes {} until {}",
                        added.id,
                        inert(&added.matchers.join(", ")),
                        added.ends
                    )?,
                }
            }
            Command::List { all, output } => {
                let listed = silences.list(now, *all, true).await?;
                match output {
                    Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&listed)?)?,
                    Output::Text => print_list(&mut out, &listed)?,
                }
            }
            Command::Expire { id, author } => {
                let by = author.clone().unwrap_or_else(user_name);
                let expired = silences.expire(id, &by, now).await?;
                writeln!(out, "silence {} ended at {}", expired.id, expired.ends)?;
            }
        }
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

fn print_list(out: &mut impl Write, listed: &[ListedSilence]) -> std::io::Result<()> {
    if listed.is_empty() {
        return writeln!(out, "no silences");
    }
    for l in listed {
        let s = &l.silence;
        writeln!(
            out,
            "{}  {}  {} → {}  muted {}  by {}\n    match: {}\n    {}",
            s.id,
            if l.active { "active " } else { "expired" },
            s.starts,
            s.ends,
            l.muted,
            inert(&s.author),
            inert(&s.matchers.join("  ")),
            inert(&s.comment),
        )?;
    }
    Ok(())
}

/// The user name from the environment (`USER`, `USERNAME`), else `unknown`.
fn user_name() -> String {
    ["USER", "USERNAME", "LOGNAME"]
        .into_iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
