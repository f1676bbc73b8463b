//! `batch-triage preserve`: copies the logs of a job's failed tasks (or of one task) and the job's
//! prep/release output into a local directory or a blob container, before the nodes go away.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use artifact_store::{ArtifactStore, BlobStore, LocalDirStore, RetryNotice, RetryObserver};
use batch_client::{BatchApi, BatchClient, BatchConfig, Deadline, GetOptions, ListOptions};
use batch_emulator::{WELL_KNOWN_ACCOUNT_KEY, WELL_KNOWN_ACCOUNT_NAME};
use futures::TryStreamExt;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use preserve::{FileOutcome, JobRef, PreserveOptions, PreserveReport};

use crate::render::Output;

pub(crate) const EXAMPLES: &str = "\
Examples:
  # The failed tasks of a job, and its prep/release output, into a directory:
  batch-triage preserve --account-url https://acct.westeurope.batch.azure.com --job etl --to ./preserved
  # One task, into a blob container (a SAS URL, a bare URL for Entra ID, or a connection string):
  batch-triage preserve --job etl --task oom --to-blob 'https://st.blob.core.windows.net/logs?sv=…&sig=…'
  # Against the local emulator (`batch-triage emulator --port 8089` in another terminal):
  batch-triage preserve --account-url http://127.0.0.1:8089 --job etl --to ./preserved --output json

Credentials: AZURE_BATCH_ENDPOINT (or --account-url), AZURE_BATCH_ACCOUNT and AZURE_BATCH_ACCESS_KEY
(Shared Key); without a key, Entra ID (managed identity, AZURE_CLIENT_SECRET or your az login).
On a loopback endpoint with no key, the emulator's well-known account is used.";

/// Arguments of `preserve`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["to", "to_blob"])))]
pub(crate) struct Args {
    /// The Batch account URL; overrides AZURE_BATCH_ENDPOINT.
    #[arg(long, value_name = "URL")]
    account_url: Option<String>,

    /// The job whose logs to keep.
    #[arg(long, value_name = "JOB")]
    job: String,

    /// Only this task (any state but active); without it, every task whose result is failure.
    #[arg(long, value_name = "TASK")]
    task: Option<String>,

    /// A local directory to copy into (created if needed).
    #[arg(long, value_name = "DIR")]
    to: Option<std::path::PathBuf>,

    /// A blob container: URL with a SAS, bare URL (Entra ID), or a storage connection string
    /// with `;Container=NAME`.
    #[arg(long, value_name = "CONTAINER_URL")]
    to_blob: Option<String>,

    /// Extra files under the task's `wd/` to keep (a glob; repeatable), e.g. `*.log`.
    #[arg(long = "glob", value_name = "GLOB")]
    globs: Vec<String>,

    /// Output format: `text`, one line per preserved folder and per problem; `json`, one JSON
    /// array, one object per folder.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

fn config(args: &Args) -> anyhow::Result<BatchConfig> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let endpoint = args.account_url.clone().or_else(|| env("AZURE_BATCH_ENDPOINT")).context(
        "no Batch account: pass --account-url URL or set AZURE_BATCH_ENDPOINT (and AZURE_BATCH_ACCOUNT, AZURE_BATCH_ACCESS_KEY)",
    )?;
    let loopback = url::Url::parse(&endpoint)
        .ok()
        .is_some_and(|u| matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")));
    let emulator_default = loopback && env("AZURE_BATCH_ACCESS_KEY").is_none();
    BatchConfig::from_env_vars(|name| match name {
        "AZURE_BATCH_ENDPOINT" => Some(endpoint.clone()),
        "AZURE_BATCH_ACCOUNT" if emulator_default => {
            Some(env(name).unwrap_or_else(|| WELL_KNOWN_ACCOUNT_NAME.to_owned()))
        }
        "AZURE_BATCH_ACCESS_KEY" if emulator_default => Some(WELL_KNOWN_ACCOUNT_KEY.to_owned()),
        _ => env(name),
    })
    .context("invalid Batch settings")
}

/// The account name used in the layout: AZURE_BATCH_ACCOUNT, else the first label of the host.
fn account_name(config: &BatchConfig, args: &Args) -> String {
    if let Some(account) = std::env::var("AZURE_BATCH_ACCOUNT")
        .ok()
        .filter(|v| !v.is_empty())
    {
        return account.to_ascii_lowercase();
    }
    let endpoint = args
        .account_url
        .clone()
        .or_else(|| std::env::var("AZURE_BATCH_ENDPOINT").ok());
    let host = endpoint
        .and_then(|e| url::Url::parse(&e).ok())
        .and_then(|u| u.host_str().map(str::to_owned));
    match host {
        Some(h) if h.parse::<std::net::IpAddr>().is_err() && h != "localhost" => {
            h.split('.').next().unwrap_or(&h).to_owned()
        }
        _ => match &config.auth {
            batch_client::BatchAuth::SharedKey { account, .. } => account.clone(),
            _ => "local".to_owned(),
        },
    }
}

async fn open_store(args: &Args, progress: &ProgressBar) -> anyhow::Result<Arc<dyn ArtifactStore>> {
    if let Some(dir) = &args.to {
        let store = LocalDirStore::new(dir).with_context(|| format!("--to {}", dir.display()))?;
        return Ok(Arc::new(store));
    }
    let spec = args
        .to_blob
        .as_deref()
        .context("--to or --to-blob is required")?;
    // Each retry is shown, so a slow store reads as retrying, not as hung.
    let shown = progress.clone();
    let observer: RetryObserver = Arc::new(move |notice: &RetryNotice| {
        let line = retry_line(notice);
        if shown.is_hidden() {
            eprintln!("{line}");
        } else {
            shown.println(line);
        }
    });
    let store = BlobStore::from_spec(spec)
        .and_then(|store| store.with_retry_observer(observer))
        .context("--to-blob")?;
    // Best effort: a SAS limited to one container cannot create it, and need not.
    let _ = store.create_container_if_missing().await;
    Ok(Arc::new(store))
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let config = config(args)?;
    let account = account_name(&config, args);
    let client = BatchClient::new(config).context("invalid Batch settings")?;
    let options = PreserveOptions {
        extra_globs: args.globs.clone(),
        ..Default::default()
    };
    let progress = progress_bar(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let reports = crate::runtime()?.block_on(async {
        let store = open_store(args, &progress).await?;
        preserve_job(&client, &*store, &account, args, &options, &progress).await
    });
    progress.finish_and_clear();
    let reports = reports?;
    let incomplete = reports.iter().filter(|(_, r)| !r.complete).count();
    match args.output {
        Output::Json => {
            let json: Vec<_> = reports
                .iter()
                .map(|(what, r)| report_json(what, r))
                .collect();
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        Output::Text => {
            if reports.is_empty() {
                println!(
                    "Nothing to preserve: job {} has no failed task and no prep/release output.",
                    args.job
                );
            }
            for (what, report) in &reports {
                print_text(what, report);
            }
        }
    }
    if incomplete > 0 {
        eprintln!(
            "batch-triage: {incomplete} folder(s) incomplete (a transient failure); run the same command again to finish them"
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

async fn preserve_job(
    client: &BatchClient,
    store: &dyn ArtifactStore,
    account: &str,
    args: &Args,
    options: &PreserveOptions,
    progress: &ProgressBar,
) -> anyhow::Result<Vec<(String, PreserveReport)>> {
    let deadline = Deadline::after(Duration::from_secs(3600));
    progress.set_message(format!("reading job {}", args.job));
    let job = client
        .get_job(&args.job, &GetOptions::default(), deadline)
        .await
        .with_context(|| format!("cannot read job {:?}", args.job))?;
    let tasks = match &args.task {
        Some(task) => vec![
            client
                .get_task(&args.job, task, &GetOptions::default(), deadline)
                .await
                .with_context(|| format!("cannot read task {task:?} of job {:?}", args.job))?,
        ],
        None => {
            let list = ListOptions {
                filter: Some("executionInfo/result eq 'failure'".to_owned()),
                select: Some(
                    "id,url,eTag,state,commandLine,constraints,exitConditions,executionInfo,nodeInfo"
                        .to_owned(),
                ),
                ..Default::default()
            };
            batch_client::items(client.list_tasks(&args.job, &list, deadline))
                .try_collect()
                .await
                .with_context(|| format!("cannot list the failed tasks of job {:?}", args.job))?
        }
    };
    let evidence = diagnosis::diagnose::Evidence {
        account: Some(account),
        job: Some(&job),
        job_id: Some(&args.job),
        ..Default::default()
    };
    let statuses: Vec<_> = batch_client::items(client.list_prep_release_status(
        &args.job,
        &ListOptions::default(),
        deadline,
    ))
    .try_collect()
    .await
    .with_context(|| format!("cannot list the prep/release status of job {:?}", args.job))?;
    // Both lists are read first, so the bar knows how many folders there are.
    progress.set_length((tasks.len() + statuses.len()) as u64);
    let mut copied = 0;
    let mut reports = Vec::new();
    for task in &tasks {
        let diagnosis = diagnosis::diagnose_task(task, &evidence);
        let what = format!("task {}", task.id.as_deref().unwrap_or("?"));
        progress.set_message(progress_message(&what, copied));
        let report = preserve::preserve_task(client, store, &diagnosis, options, deadline)
            .await
            .with_context(|| format!("preserving {what}"))?;
        copied += report.bytes_copied;
        progress.inc(1);
        reports.push((what, report));
    }
    let job_ref = JobRef {
        account,
        job_id: &args.job,
    };
    for status in &statuses {
        let diagnosis = diagnosis::diagnose_prep_release(status, &evidence);
        let node = status.node_id.as_deref().unwrap_or("?");
        progress.set_message(progress_message(&format!("prep/release on {node}"), copied));
        let node_reports = preserve::preserve_prep_release(
            client,
            store,
            job_ref,
            status,
            diagnosis.as_ref(),
            options,
            deadline,
        )
        .await
        .with_context(|| format!("preserving prep/release output of node {node}"))?;
        progress.inc(1);
        for report in node_reports {
            copied += report.bytes_copied;
            let kind = if report.prefix.contains("/_jobrelease/") {
                "job release"
            } else {
                "job prep"
            };
            reports.push((format!("{kind} on {node}"), report));
        }
    }
    Ok(reports)
}

/// A bar of folders on stderr, only on a terminal: piped output and logs stay clean. The
/// preserve crate reports per folder, not per byte, so bytes are counted as folders finish.
fn progress_bar(terminal: bool) -> ProgressBar {
    if !terminal {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} folders {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// The line a retry of the store shows.
fn retry_line(notice: &RetryNotice) -> String {
    format!("batch-triage: {notice}")
}

/// Text from a node (file names, Batch's messages) made safe for a terminal, on one line: a
/// hostile name cannot move the cursor, recolour the screen or forge a line.
fn printable(text: &str) -> String {
    diagnosis::inert::one_line(text)
}

fn progress_message(what: &str, copied: u64) -> String {
    format!("· {what} · {} copied so far", HumanBytes(copied))
}

fn print_text(what: &str, report: &PreserveReport) {
    let copied = report
        .files
        .iter()
        .filter(|f| {
            matches!(
                f.outcome,
                FileOutcome::Copied { .. } | FileOutcome::AlreadyCopied { .. }
            )
        })
        .count();
    let state = if report.already_preserved {
        "already preserved"
    } else if report.complete {
        "preserved"
    } else {
        "INCOMPLETE"
    };
    let location = report.link.as_deref().unwrap_or(&report.prefix);
    println!(
        "{}: {state}, {copied} file(s) → {}",
        printable(what),
        printable(location)
    );
    for file in &report.files {
        let source = printable(&file.source);
        match &file.outcome {
            FileOutcome::Missing { code } => println!("  missing {source}: {}", printable(code)),
            FileOutcome::Skipped { bytes, reason } => {
                println!("  skipped {source} ({bytes} bytes, {})", printable(reason))
            }
            FileOutcome::Failed { error } => println!("  failed {source}: {}", printable(error)),
            FileOutcome::NotStored { reason } => {
                println!("  not stored {source}: {}", printable(reason))
            }
            _ => {}
        }
    }
}

fn report_json(what: &str, report: &PreserveReport) -> serde_json::Value {
    let files: Vec<_> = report
        .files
        .iter()
        .map(|f| {
            let mut v = serde_json::json!({"name": f.name, "source": f.source});
            let (outcome, extra) = match &f.outcome {
                FileOutcome::Copied { bytes, sha256 } => (
                    "copied",
                    serde_json::json!({"bytes": bytes, "sha256": sha256}),
                ),
                FileOutcome::AlreadyCopied { bytes, sha256 } => (
                    "alreadyCopied",
                    serde_json::json!({"bytes": bytes, "sha256": sha256}),
                ),
                FileOutcome::Missing { code } => ("missing", serde_json::json!({"code": code})),
                FileOutcome::Skipped { bytes, reason } => (
                    "skipped",
                    serde_json::json!({"bytes": bytes, "reason": reason}),
                ),
                FileOutcome::Failed { error } => ("failed", serde_json::json!({"error": error})),
                FileOutcome::NotStored { reason } => {
                    ("notStored", serde_json::json!({"reason": reason}))
                }
                _ => ("other", serde_json::json!({})),
            };
            v["outcome"] = outcome.into();
            if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
                v.extend(extra.clone());
            }
            v
        })
        .collect();
    serde_json::json!({
        "what": what,
        "prefix": report.prefix,
        "link": report.link,
        "complete": report.complete,
        "alreadyPreserved": report.already_preserved,
        "bytesCopied": report.bytes_copied,
        "files": files,
        "stderrTail": report.stderr_tail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_drawn_only_on_a_terminal() {
        assert!(progress_bar(false).is_hidden());
    }

    #[test]
    fn a_retry_of_the_store_is_one_line() {
        let notice = RetryNotice {
            retry: 1,
            max_retries: 6,
            delay: Duration::from_millis(500),
        };
        assert_eq!(
            retry_line(&notice),
            "batch-triage: storage request failed transiently; retry 1 of 6 in 0.5 s"
        );
    }

    #[test]
    fn names_from_a_node_cannot_drive_the_terminal() {
        let shown = printable("wd/\u{1b}[31mred\u{7}\ny\u{202e}");
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(
            !shown.contains('\u{202e}') && shown.contains("red"),
            "{shown:?}"
        );
        assert_eq!(printable("wd/x\\y ünïcode"), "wd/x\\y ünïcode");
    }

    #[test]
    fn progress_names_the_folder_and_the_bytes_so_far() {
        assert_eq!(
            progress_message("task oom", 3 << 20),
            "· task oom · 3.00 MiB copied so far"
        );
    }
}
