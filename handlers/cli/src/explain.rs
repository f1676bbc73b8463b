//! `batch-triage explain`: the live diagnosis of a job or a task, read from the account now. It
//! is `diagnose` without the JSON files: the job, its prep/release status per node, the task and
//! the end of its stderr come straight from the Batch API, and nothing is written anywhere.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use batch_client::{
    BatchApi, BatchAuth, BatchClient, BatchConfig, BatchError, Deadline, DownloadOptions, FileRef,
    GetOptions, ListOptions,
};
use batch_emulator::{WELL_KNOWN_ACCOUNT_KEY, WELL_KNOWN_ACCOUNT_NAME};
use diagnosis::diagnose::Evidence;
use diagnosis::wire::{PrepReleaseStatus, PrepTaskExecutionInfo};
use diagnosis::{Diagnosis, diagnose_job, diagnose_prep_release, diagnose_task};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use crate::render::{Output, Style, inert, inert_block, render_diagnosis};

pub(crate) const EXAMPLES: &str = "\
Examples:
  # One task, with the end of its stderr, against a real account (Shared Key):
  export AZURE_BATCH_ACCESS_KEY='…'
  batch-triage explain --account-url https://contoso.westeurope.batch.azure.com --job etl --task oom
  # A whole job (its state, prep/release per node, failed tasks), signed in with Entra ID:
  az login
  batch-triage explain --account-url https://contoso.westeurope.batch.azure.com --job etl
  # Against the local emulator (`batch-triage emulator --port 8089` in another terminal):
  batch-triage explain --account-url http://127.0.0.1:8089 --job prep-fail --output json

Credentials: AZURE_BATCH_ACCESS_KEY (Shared Key; the account is --account, AZURE_BATCH_ACCOUNT or
the first label of the URL's host); without a key, Entra ID: the managed identity, a client secret
(AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET) or your `az login`. On a loopback URL with
no key, the emulator's well-known account is used.

Exit status: 0 when the job or task was read and explained (whatever it found), 2 when it could
not be (unknown job or task, credentials refused, account unreachable).";

/// How much of the end of stderr.txt is read: enough for a traceback, small enough to print.
const STDERR_TAIL_BYTES: u64 = 8 * 1024;

/// How many failed tasks a job's explanation lists.
const DEFAULT_MAX_TASKS: usize = 10;

/// Arguments of `explain`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The Batch account URL; overrides AZURE_BATCH_ENDPOINT.
    #[arg(long, value_name = "URL")]
    account_url: Option<String>,

    /// The account name for Shared Key, when it is not the first label of the URL's host;
    /// overrides AZURE_BATCH_ACCOUNT.
    #[arg(long, value_name = "NAME")]
    account: Option<String>,

    /// The job to explain.
    #[arg(long, value_name = "JOB")]
    job: String,

    /// Only this task of the job, with the end of its stderr.
    #[arg(long, value_name = "TASK")]
    task: Option<String>,

    /// For a job: how many of its failed tasks to list.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_TASKS)]
    max_tasks: usize,

    /// Output format: `text`, the diagnosis, the nodes and the end of stderr for a person;
    /// `json`, one JSON object.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

/// The account configuration: the URL from the flag or the environment, Shared Key when a key
/// is set, the emulator's well-known account on loopback without one, Entra ID otherwise.
fn config(args: &Args) -> anyhow::Result<BatchConfig> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let endpoint = args
        .account_url
        .clone()
        .or_else(|| env("AZURE_BATCH_ENDPOINT"))
        .context("no Batch account: pass --account-url URL or set AZURE_BATCH_ENDPOINT")?;
    let host = url::Url::parse(&endpoint)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned));
    let loopback = matches!(host.as_deref(), Some("127.0.0.1" | "localhost" | "[::1]"));
    let key = env("AZURE_BATCH_ACCESS_KEY");
    let emulator = loopback && key.is_none();
    let account = args
        .account
        .clone()
        .or_else(|| env("AZURE_BATCH_ACCOUNT"))
        .or_else(|| emulator.then(|| WELL_KNOWN_ACCOUNT_NAME.to_owned()))
        .or_else(|| diagnosis::wire::account_from_url(&endpoint));
    BatchConfig::from_env_vars(|name| match name {
        "AZURE_BATCH_ENDPOINT" => Some(endpoint.clone()),
        "AZURE_BATCH_ACCOUNT" => account.clone(),
        "AZURE_BATCH_ACCESS_KEY" if emulator => Some(WELL_KNOWN_ACCOUNT_KEY.to_owned()),
        _ => env(name),
    })
    .map_err(|error| match error {
        batch_client::ConfigError::Missing("AZURE_BATCH_ACCOUNT") => anyhow::anyhow!(
            "AZURE_BATCH_ACCESS_KEY is set but the account name is unknown: pass --account NAME or set AZURE_BATCH_ACCOUNT"
        ),
        other => anyhow::Error::new(other).context("invalid Batch settings"),
    })
}

/// The account name shown in the diagnosis.
fn account_name(config: &BatchConfig) -> Option<String> {
    match &config.auth {
        BatchAuth::SharedKey { account, .. } => Some(account.clone()),
        _ => diagnosis::wire::account_from_url(config.endpoint.as_str()),
    }
}

/// Turns a Batch error into what a person should do about it.
fn explain_error(error: BatchError, what: &str, config: &BatchConfig) -> anyhow::Error {
    let endpoint = config.endpoint.as_str().trim_end_matches('/');
    let advice = match (&error, &config.auth) {
        (BatchError::NotFound(_), _) => {
            format!("{what} does not exist in {endpoint}: check the id and --account-url")
        }
        (BatchError::Auth(_), BatchAuth::Entra(_)) => format!(
            "no usable credentials for {endpoint}: set AZURE_BATCH_ACCESS_KEY (Shared Key, with --account or \
             AZURE_BATCH_ACCOUNT), or sign in with `az login`, or set AZURE_TENANT_ID, AZURE_CLIENT_ID and \
             AZURE_CLIENT_SECRET; the identity needs the Azure Batch Account Reader role"
        ),
        (BatchError::Auth(_), _) => format!(
            "{endpoint} refused the Shared Key: check AZURE_BATCH_ACCESS_KEY and the account name (--account or AZURE_BATCH_ACCOUNT)"
        ),
        (error, _) if error.is_retryable() => {
            format!("{endpoint} is unavailable or throttling; try again in a minute")
        }
        _ => format!("cannot read {what}"),
    };
    anyhow::Error::new(error).context(advice)
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let config = config(args)?;
    let account = account_name(&config);
    let client = BatchClient::new(config.clone()).context("invalid Batch settings")?;
    let mut explanation =
        crate::runtime()?.block_on(explain(&client, &config, account.as_deref(), args))?;
    explanation.redact(&crate::render::configured_redactor());
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &explanation.to_json())?;
            writeln!(out)?;
        }
        Output::Text => {
            let style = Style::for_stdout();
            explanation.render(&mut out, style)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Everything read and concluded.
struct Explanation {
    job_id: String,
    task_id: Option<String>,
    /// The task's diagnosis, or the job's then its failed prep/release nodes.
    diagnoses: Vec<Diagnosis>,
    nodes: Vec<PrepReleaseStatus>,
    /// Batch answered the status list with a 409: the job has no prep or release task.
    no_prep_release: bool,
    /// The job defines a preparation or a release task.
    has_prep_or_release: bool,
    /// For a job: its failed tasks (at most `max_tasks`) and whether there were more.
    failed_tasks: Vec<Diagnosis>,
    more_failed_tasks: bool,
    stderr: Option<StderrTail>,
}

impl Explanation {
    /// Removes the configured secrets (the account key a task echoed, say) from everything it
    /// prints; the shapes of secrets were redacted as it was read.
    fn redact(&mut self, redactor: &diagnosis::redact::Redactor) {
        for d in self.diagnoses.iter_mut().chain(&mut self.failed_tasks) {
            redactor.redact_diagnosis(d);
        }
        match &mut self.stderr {
            Some(StderrTail::Read { text, .. }) => *text = redactor.redact(text),
            Some(StderrTail::Unavailable { reason }) => *reason = redactor.redact(reason),
            None => {}
        }
    }
}

/// The end of stderr.txt, or why it could not be read.
enum StderrTail {
    Read {
        text: String,
        file_size: u64,
        from: u64,
    },
    Unavailable {
        reason: String,
    },
}

async fn explain(
    client: &BatchClient,
    config: &BatchConfig,
    account: Option<&str>,
    args: &Args,
) -> anyhow::Result<Explanation> {
    let deadline = Deadline::after(Duration::from_secs(120));
    let job_what = format!("job {:?}", args.job);
    let job = client
        .get_job(&args.job, &GetOptions::default(), deadline)
        .await
        .map_err(|e| explain_error(e, &job_what, config))?;
    let listed: Result<Vec<PrepReleaseStatus>, BatchError> = batch_client::items(
        client.list_prep_release_status(&args.job, &ListOptions::default(), deadline),
    )
    .try_collect()
    .await;
    let (nodes, no_prep_release) = match listed {
        Ok(nodes) => (nodes, false),
        // `JobPreparationTaskOrReleaseTaskNotSpecified`: nothing to show, not an error.
        Err(BatchError::Conflict(_)) => (Vec::new(), true),
        Err(error) => return Err(explain_error(error, &job_what, config)),
    };
    let failed_nodes = diagnosis::diagnose::prep_failed_nodes(&nodes);
    let now = diagnosis::wire::Timestamp(time::OffsetDateTime::now_utc());
    let evidence = Evidence {
        account,
        job: Some(&job),
        job_id: Some(&args.job),
        prep_failed_nodes: &failed_nodes,
        now: Some(now),
        stuck_after: Some(Duration::from_secs(2 * 3600)),
        ..Evidence::default()
    };
    let mut explanation = Explanation {
        job_id: args.job.clone(),
        task_id: args.task.clone(),
        diagnoses: Vec::new(),
        nodes,
        no_prep_release,
        has_prep_or_release: job.job_preparation_task.is_some() || job.job_release_task.is_some(),
        failed_tasks: Vec::new(),
        more_failed_tasks: false,
        stderr: None,
    };
    match &args.task {
        Some(task_id) => {
            let task = client
                .get_task(&args.job, task_id, &GetOptions::default(), deadline)
                .await
                .map_err(|e| {
                    explain_error(
                        e,
                        &format!("task {task_id:?} of job {:?}", args.job),
                        config,
                    )
                })?;
            // A task that never ran on a node has no stderr to read.
            let ran = task.node_info.as_ref().is_some_and(|n| n.node_id.is_some());
            let stderr = if ran {
                stderr_tail(client, &args.job, task_id, deadline).await
            } else {
                StderrTail::Unavailable {
                    reason: "the task has not run on a node, so it has no stderr.txt".to_owned(),
                }
            };
            let tail = match &stderr {
                StderrTail::Read { text, .. } => Some(text.as_str()),
                StderrTail::Unavailable { .. } => None,
            };
            let evidence = Evidence {
                stderr_tail: tail,
                ..evidence
            };
            explanation.diagnoses.push(diagnose_task(&task, &evidence));
            explanation.stderr = Some(stderr);
        }
        None => {
            explanation.diagnoses.push(diagnose_job(&job, &evidence));
            explanation.diagnoses.extend(
                explanation
                    .nodes
                    .iter()
                    .filter_map(|s| diagnose_prep_release(s, &evidence)),
            );
            let list = ListOptions {
                filter: Some("executionInfo/result eq 'failure'".to_owned()),
                select: Some(
                    "id,url,state,commandLine,constraints,exitConditions,executionInfo,nodeInfo"
                        .to_owned(),
                ),
                ..Default::default()
            };
            let mut tasks = batch_client::items(client.list_tasks(&args.job, &list, deadline));
            while let Some(task) = tasks
                .try_next()
                .await
                .map_err(|e| explain_error(e, &format!("the failed tasks of {job_what}"), config))?
            {
                if explanation.failed_tasks.len() == args.max_tasks {
                    explanation.more_failed_tasks = true;
                    break;
                }
                explanation
                    .failed_tasks
                    .push(diagnose_task(&task, &evidence));
            }
        }
    }
    Ok(explanation)
}

/// Reads the last [`STDERR_TAIL_BYTES`] of the task's stderr.txt with a ranged GET; redacted.
async fn stderr_tail(
    client: &BatchClient,
    job_id: &str,
    task_id: &str,
    deadline: Deadline,
) -> StderrTail {
    let file = FileRef::task(job_id, task_id, "stderr.txt");
    let unavailable = |error: BatchError| {
        let code = error.code().unwrap_or("no error code").to_owned();
        let reason = match code.as_str() {
            "NodeNotFound" | "NodeNotReady" | "NodeUnusable" => format!(
                "the node that ran the task is gone ({code}), and its stderr.txt with it; \
                 `batch-triage preserve` keeps logs before that happens"
            ),
            "TaskFilesUnavailable" | "TaskFilesCleanedup" => {
                format!("the task's files were removed at the end of their retention time ({code})")
            }
            "FileNotFound" | "TaskFileNotFound" => format!("the task wrote no stderr.txt ({code})"),
            _ => format!("stderr.txt could not be read: {error}"),
        };
        StderrTail::Unavailable { reason }
    };
    let info = match client.file_properties(&file, deadline).await {
        Ok(info) => info,
        // A HEAD answer has no body, so no error code: a GET says why (NodeNotFound, …).
        Err(error) if error.code().is_none() => {
            return match client
                .download_file(&file, &DownloadOptions::default(), deadline)
                .await
            {
                Err(error) => unavailable(error),
                Ok(_) => unavailable(error),
            };
        }
        Err(error) => return unavailable(error),
    };
    let from = info.size.saturating_sub(STDERR_TAIL_BYTES);
    let options = DownloadOptions {
        offset: from,
        ..DownloadOptions::default()
    };
    let mut download = match client.download_file(&file, &options, deadline).await {
        Ok(download) => download,
        Err(error) => return unavailable(error),
    };
    let mut bytes = Vec::new();
    while let Some(chunk) = download.next().await {
        match chunk {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(error) => return unavailable(error),
        }
        // The file may have grown since the HEAD; the tail is what was asked for.
        if bytes.len() as u64 >= STDERR_TAIL_BYTES {
            break;
        }
    }
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    // A read from the middle of the file starts mid-line: drop the partial line.
    if from > 0 {
        if let Some(newline) = text.find('\n') {
            text.drain(..=newline);
        }
    }
    StderrTail::Read {
        text: diagnosis::redact::redact(&text),
        file_size: info.size,
        from,
    }
}

fn special_json(exec: Option<&PrepTaskExecutionInfo>) -> Value {
    match exec {
        None => Value::Null,
        Some(e) => json!({
            "state": e.state.as_ref().map(|s| s.as_str()),
            "result": e.result.as_ref().map(|r| r.as_str()),
            "exitCode": e.exit_code,
            "retryCount": e.retry_count,
            "failureCode": e.failure_info.as_ref().and_then(|f| f.code.as_deref()),
        }),
    }
}

fn special_text(exec: Option<&PrepTaskExecutionInfo>) -> String {
    let Some(e) = exec else {
        return "not run".to_owned();
    };
    let mut parts = vec![
        e.state
            .as_ref()
            .map_or("unknown state", |s| s.as_str())
            .to_owned(),
    ];
    if let Some(result) = &e.result {
        parts.push(result.as_str().to_owned());
    }
    if let Some(code) = e.exit_code {
        parts.push(format!("exit code {code}"));
    }
    if let Some(failure) = e.failure_info.as_ref().and_then(|f| f.code.as_deref()) {
        parts.push(failure.to_owned());
    }
    if e.retry_count > 0 {
        parts.push(format!("{} retries", e.retry_count));
    }
    parts.join(", ")
}

impl Explanation {
    fn to_json(&self) -> Value {
        let nodes: Vec<Value> = self
            .nodes
            .iter()
            .map(|s| {
                json!({
                    "poolId": s.pool_id,
                    "nodeId": s.node_id,
                    "jobPreparation": special_json(s.job_preparation_task_execution_info.as_ref()),
                    "jobRelease": special_json(s.job_release_task_execution_info.as_ref()),
                })
            })
            .collect();
        let stderr = self.stderr.as_ref().map(|s| match s {
            StderrTail::Read {
                text,
                file_size,
                from,
            } => json!({"available": true, "fileSize": file_size, "from": from, "text": text}),
            StderrTail::Unavailable { reason } => json!({"available": false, "reason": reason}),
        });
        json!({
            "jobId": self.job_id,
            "taskId": self.task_id,
            "diagnoses": self.diagnoses,
            "prepRelease": if self.no_prep_release || !self.has_prep_or_release { Value::Null } else { Value::Array(nodes) },
            "failedTasks": if self.task_id.is_some() { Value::Null } else { json!(self.failed_tasks) },
            "moreFailedTasks": self.more_failed_tasks,
            "stderrTail": stderr,
        })
    }

    fn render(&self, out: &mut impl Write, style: Style) -> std::io::Result<()> {
        for diagnosis in &self.diagnoses {
            render_diagnosis(out, diagnosis, style)?;
        }
        if self.no_prep_release || !self.has_prep_or_release {
            writeln!(
                out,
                "{}",
                style.dim("The job has no preparation or release task.")
            )?;
        } else if self.nodes.is_empty() {
            writeln!(
                out,
                "{}",
                style.dim("No node has run the job's preparation task yet.")
            )?;
        } else {
            writeln!(out, "Preparation and release per node:")?;
            for s in &self.nodes {
                writeln!(
                    out,
                    "  {} {}: prep {} · release {}",
                    inert(s.node_id.as_deref().unwrap_or("(unknown node)")),
                    style.dim(&format!("({})", inert(s.pool_id.as_deref().unwrap_or("?")))),
                    inert(&special_text(
                        s.job_preparation_task_execution_info.as_ref()
                    )),
                    inert(&special_text(s.job_release_task_execution_info.as_ref())),
                )?;
            }
        }
        if self.task_id.is_none() {
            writeln!(out)?;
            if self.failed_tasks.is_empty() {
                writeln!(out, "No failed tasks.")?;
            } else {
                writeln!(
                    out,
                    "Failed tasks{}:",
                    if self.more_failed_tasks {
                        format!(" (the first {})", self.failed_tasks.len())
                    } else {
                        String::new()
                    }
                )?;
                writeln!(out)?;
                for diagnosis in &self.failed_tasks {
                    render_diagnosis(out, diagnosis, style)?;
                }
                if self.more_failed_tasks {
                    writeln!(
                        out,
                        "{}",
                        style.dim("More failed tasks: raise --max-tasks to see them.")
                    )?;
                }
            }
        }
        match &self.stderr {
            None => {}
            Some(StderrTail::Unavailable { reason }) => {
                writeln!(out)?;
                writeln!(out, "stderr.txt: {}", inert(reason))?;
            }
            Some(StderrTail::Read {
                text,
                file_size,
                from,
            }) => {
                writeln!(out)?;
                if text.trim().is_empty() {
                    writeln!(out, "stderr.txt is empty.")?;
                } else {
                    let heading = if *from > 0 {
                        format!(
                            "End of stderr.txt (last {} of {file_size} bytes):",
                            file_size - from
                        )
                    } else {
                        format!("stderr.txt ({file_size} bytes):")
                    };
                    writeln!(out, "{heading}")?;
                    // Line by line, each made inert: the task wrote these bytes, and an ESC
                    // sequence, a bell, a bare CR or a bidi override must not act on the
                    // terminal.
                    for line in inert_block(text).lines() {
                        writeln!(out, "  {}", style.dim(line))?;
                    }
                }
            }
        }
        Ok(())
    }
}
