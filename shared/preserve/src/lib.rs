//! Log preservation: copies a failed task's files (and job prep/release output) from the compute
//! node into an [`ArtifactStore`] before autoscale, preemption or retention removes them.
//!
//! # Layout (`docs/preserved-layout.md`)
//! `{account}/{jobId}/{taskId}/attempt-{retryCount}/` holds the files (`stdout.txt`,
//! `stderr.txt`, `fileuploadout.txt`, `fileuploaderr.txt` when present, rule globs under `wd/`),
//! `diagnosis.json` and, last, `manifest.json`. Job prep/release output goes to
//! `{account}/{jobId}/_jobprep/{nodeId}/` and `_jobrelease/{nodeId}/`; a pool's start task output
//! to `{account}/_pools/{poolId}/{nodeId}/_starttask/`. Every id and file name is
//! sanitised ([`names`]) so hostile names stay inside the prefix, and the files of one folder get
//! their keys together ([`names::folder_keys`]): two names never share a key, and no file's key
//! is a directory of another's, so a directory and a container hold the same layout. A file the
//! store still cannot hold is recorded in the manifest as `notStored`, with the reason, and the
//! rest of the folder goes on.
//!
//! # Modules
//! `sources` (what to copy: probing, the listing, the standard files, the globs), the
//! copy of one file with its meter (`copy`), one folder's run (`folder`), and the
//! [`manifest`].
//!
//! # Requests
//! A task costs one List Task Files and then one GET per file copied. The listing is of the
//! task directory's root (`recursive=false`), or of the whole tree when the rule has
//! [`PreserveOptions::extra_globs`], so one listing serves both the standard files and the
//! globs. It says which files exist and their sizes (`contentLength`), so no file is asked
//! about one by one. An absent `stdout.txt`/`stderr.txt` is recorded missing (`FileNotFound`);
//! absent `fileupload*.txt` (only there with outputFiles) are left out. A listing that Batch
//! refuses because the files are gone (`NodeNotFound`, `TaskFilesUnavailable`, …) records
//! stdout/stderr missing with that code; one that fails transiently (throttling past the
//! client's retries) records them failed, so the folder stays incomplete and is retried.
//! Job prep/release and start task output (node files, two known paths) is HEADed per file
//! instead, then each present file is downloaded. A HEAD answer has no body, so when one fails
//! without saying why a GET asks for the Batch error code.
//!
//! # Streaming
//! Each file is streamed from the Batch file API into [`ArtifactStore::put_stream`] (staged
//! blocks on Blob, a temp file locally): memory does not grow with the file size. SHA-256, the
//! byte count and a bounded tail (stdout/stderr) are computed on the way; a dropped connection is
//! resumed by the client with `ocp-range` from the byte reached.
//!
//! # Idempotency and resume
//! - `manifest.json` is written last with
//!   [`Condition::IfAbsent`](artifact_store::Condition::IfAbsent). If it exists, the folder is
//!   complete: a duplicate request reads it and copies nothing (no file GET at all).
//! - After each file of 1 MiB or more is completely stored, a progress record
//!   `.progress/{hash of the name}.json` (bytes, sha256, source, Last-Modified) is written in the
//!   folder. `put_stream` only makes an object visible once its stream ended cleanly, so an
//!   object plus a progress record whose size matches both the stored object and the Batch file
//!   properties (listing or HEAD), and whose Last-Modified is the same (a listing's
//!   `lastModified` is put in the header's HTTP-date form by
//!   [`FileInfo::from_listing`](batch_client::FileInfo::from_listing)), means "completely
//!   copied": a rerun after a crash skips it and reuses the recorded sha256. Anything else, and
//!   any smaller file, is copied again from byte 0 (an interrupted block upload is never
//!   committed).
//! - A file that fails transiently (resumes exhausted, throttling past the deadline) leaves the
//!   folder without a manifest ([`PreserveReport::complete`] is false) so a later run finishes
//!   it; a file that Batch says is gone (`NodeNotFound`, `TaskFilesUnavailable`, `FileNotFound`,
//!   …) is recorded in the manifest as `missing` with that code.
//! - Progress records are deleted (best effort) once the manifest exists.

pub mod agent_logs;
mod copy;
mod folder;
pub mod manifest;
pub mod names;
mod sources;
mod tail;

use artifact_store::{ArtifactStore, ObjectKey, StoreError};
use batch_client::{BatchApi, BatchError, Deadline};
use bytes::Bytes;
use diagnosis::Diagnosis;
use diagnosis::wire::PrepReleaseStatus;

use folder::{Folder, existing, run};
pub use manifest::{Manifest, ManifestFile, MissingFile, NotStoredFile, SkippedFile};
pub use sources::STANDARD_FILES;
use sources::{list_task, node_output, standard_sources};

/// How much to copy and how.
#[derive(Debug, Clone)]
pub struct PreserveOptions {
    /// Extra files to copy, as globs under the task's `wd/`: as the policy writes them
    /// (`wd/*.log`, `wd/out/**/*.json`), or relative to `wd/` as the CLI's `--glob` takes them
    /// (`*.log`). Both are read by `diagnosis::policy::preserve_glob`, as `policy check` reads them.
    pub extra_globs: Vec<String>,
    /// Files larger than this are recorded as skipped, not copied.
    pub max_file_bytes: u64,
    /// Once this many bytes were chosen for one folder, further files are skipped.
    pub max_task_bytes: u64,
    /// Lines kept in the stdout/stderr tails.
    pub tail_lines: usize,
    /// Bytes kept in the stdout/stderr tails (before line trimming).
    pub tail_bytes: usize,
    /// Files copied at the same time.
    pub concurrency: usize,
    /// Resumes per file after a dropped connection (the client re-requests with `ocp-range`).
    pub max_resumes: u32,
}

impl Default for PreserveOptions {
    fn default() -> Self {
        PreserveOptions {
            extra_globs: Vec::new(),
            max_file_bytes: 4 << 30,
            max_task_bytes: 8 << 30,
            tail_lines: 40,
            tail_bytes: 8 * 1024,
            concurrency: 4,
            max_resumes: 5,
        }
    }
}

/// Why preservation stopped. Per-file problems are not errors: they are in the report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PreserveError {
    /// The diagnosis does not say which task (account, job and task are needed).
    #[error("cannot preserve: the diagnosis does not name {0}")]
    Subject(&'static str),
    /// A bad glob in the options.
    #[error("invalid glob {glob:?}: {message}")]
    Glob {
        /// The glob.
        glob: String,
        /// Why.
        message: String,
    },
    /// The store failed (not a condition race, which is handled).
    #[error("artifact store: {0}")]
    Store(#[from] StoreError),
    /// Batch failed in a way that is not about one file. (A failed listing of a task's files
    /// is not this: it is recorded against stdout/stderr in the report.)
    #[error("batch: {0}")]
    Batch(#[from] BatchError),
    /// A JSON document could not be built.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// The job whose prep/release output is preserved, and the account it belongs to (the first
/// two levels of the layout).
#[derive(Debug, Clone, Copy)]
pub struct JobRef<'a> {
    /// The Batch account name.
    pub account: &'a str,
    /// The job id.
    pub job_id: &'a str,
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileOutcome {
    /// Copied now.
    Copied {
        /// Bytes copied.
        bytes: u64,
        /// SHA-256 (hex).
        sha256: String,
    },
    /// Already copied by an earlier, interrupted run (progress record matched).
    AlreadyCopied {
        /// Bytes.
        bytes: u64,
        /// SHA-256 (hex) recorded then.
        sha256: String,
    },
    /// Batch says it cannot be read; recorded in the manifest.
    Missing {
        /// The Batch error code.
        code: String,
    },
    /// Not copied because of a size cap.
    Skipped {
        /// Its size.
        bytes: u64,
        /// `maxFileBytes` or `maxTaskBytes`.
        reason: String,
    },
    /// Failed for now (transient); the folder stays without a manifest so a rerun finishes it.
    Failed {
        /// What happened (no secrets).
        error: String,
    },
    /// Read, but the store cannot hold it under any key; recorded in the manifest.
    NotStored {
        /// Why (the key and the store's reason; no secrets).
        reason: String,
    },
}

/// One file's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// Name inside the folder.
    pub name: String,
    /// Path on the node.
    pub source: String,
    /// What happened.
    pub outcome: FileOutcome,
}

/// The result of preserving one folder.
#[derive(Debug, Clone)]
pub struct PreserveReport {
    /// The folder's key prefix (`{account}/{jobId}/{taskId}/attempt-N`).
    pub prefix: String,
    /// Where people find it (the store's link for the prefix; never a secret).
    pub link: Option<String>,
    /// The manifest existed before this run: nothing was copied.
    pub already_preserved: bool,
    /// The manifest exists now (false when a file failed transiently: run again).
    pub complete: bool,
    /// Per-file results (from the manifest when already preserved).
    pub files: Vec<FileReport>,
    /// The manifest, when complete.
    pub manifest: Option<Manifest>,
    /// Last lines of stderr, redacted, when it was copied in this run.
    pub stderr_tail: Option<String>,
    /// Last lines of stdout, redacted, when it was copied in this run.
    pub stdout_tail: Option<String>,
    /// Bytes downloaded from Batch in this run.
    pub bytes_copied: u64,
}

/// Preserves one task attempt, named by `diagnosis.subject` (account, job, task, attempt).
/// `diagnosis.json` is written beside the files.
pub async fn preserve_task(
    api: &dyn BatchApi,
    store: &dyn ArtifactStore,
    diagnosis: &Diagnosis,
    options: &PreserveOptions,
    deadline: Deadline,
) -> Result<PreserveReport, PreserveError> {
    let subject = &diagnosis.subject;
    let account = subject
        .account
        .as_deref()
        .ok_or(PreserveError::Subject("the account"))?;
    let job_id = subject
        .job_id
        .as_deref()
        .ok_or(PreserveError::Subject("the job"))?;
    let task_id = subject
        .task_id
        .as_deref()
        .ok_or(PreserveError::Subject("the task"))?;
    let attempt = subject.attempt.unwrap_or(0);
    let prefix = task_prefix(account, job_id, task_id, attempt)?;
    let folder = Folder {
        kind: "task",
        account,
        job_id,
        task_id: Some(task_id),
        attempt: Some(attempt),
        node_id: subject.node_id.as_deref(),
        prefix,
    };
    // A bad glob is an error even when the folder is already preserved.
    let globs = sources::glob_set(&options.extra_globs)?;
    if let Some(report) = existing(store, &folder).await? {
        return Ok(report);
    }
    // One listing says which files exist and how large they are: no HEAD per file.
    let listed = list_task(api, job_id, task_id, globs.as_ref(), deadline).await;
    let mut sources = standard_sources(job_id, task_id, &listed);
    if let Ok(listing) = listed {
        sources.extend(listing.globbed);
    }
    let diagnosis_json = Bytes::from(serde_json::to_vec_pretty(diagnosis)?);
    run(
        api,
        store,
        folder,
        sources,
        Some(diagnosis_json),
        options,
        deadline,
    )
    .await
}

/// Preserves job preparation and release output of one node from its prep/release status
/// (`taskRootDirectory` names the directory on the node). Returns one report per task kind that
/// ran on the node. `diagnosis` (if any) is written as `diagnosis.json` in the prep folder.
pub async fn preserve_prep_release(
    api: &dyn BatchApi,
    store: &dyn ArtifactStore,
    job: JobRef<'_>,
    status: &PrepReleaseStatus,
    diagnosis: Option<&Diagnosis>,
    options: &PreserveOptions,
    deadline: Deadline,
) -> Result<Vec<PreserveReport>, PreserveError> {
    let JobRef { account, job_id } = job;
    let (Some(pool_id), Some(node_id)) = (status.pool_id.as_deref(), status.node_id.as_deref())
    else {
        return Ok(Vec::new());
    };
    let mut reports = Vec::new();
    let kinds = [
        (
            "jobprep",
            status.job_preparation_task_execution_info.as_ref(),
        ),
        (
            "jobrelease",
            status.job_release_task_execution_info.as_ref(),
        ),
    ];
    for (kind, info) in kinds {
        let Some(info) = info else { continue };
        let Some(root) = info.task_root_directory.as_deref() else {
            continue;
        };
        let root = root.trim_end_matches(['/', '\\']);
        let prefix = ObjectKey::new(format!(
            "{}/{}/_{kind}/{}",
            names::segment(account),
            names::segment(job_id),
            names::segment(node_id)
        ))?;
        let folder = Folder {
            kind,
            account,
            job_id,
            task_id: None,
            attempt: None,
            node_id: Some(node_id),
            prefix,
        };
        if let Some(report) = existing(store, &folder).await? {
            reports.push(report);
            continue;
        }
        let sources = node_output(pool_id, node_id, root);
        let diagnosis_json = match diagnosis {
            Some(d) if kind == "jobprep" => Some(Bytes::from(serde_json::to_vec_pretty(d)?)),
            _ => None,
        };
        reports.push(
            run(
                api,
                store,
                folder,
                sources,
                diagnosis_json,
                options,
                deadline,
            )
            .await?,
        );
    }
    Ok(reports)
}

/// The node a pool's start task failed on.
#[derive(Debug, Clone, Copy)]
pub struct NodeRef<'a> {
    /// The Batch account.
    pub account: &'a str,
    /// The pool.
    pub pool_id: &'a str,
    /// The node.
    pub node_id: &'a str,
}

/// Preserves the output of a pool's start task on one node (`startup/stdout.txt` and
/// `startup/stderr.txt`, node-relative) into `{account}/_pools/{poolId}/{nodeId}/_starttask/`,
/// with `diagnosis.json` beside them. A start task belongs to no job, so the manifest's job is
/// empty, as in Batch's own `StartTaskFailedEvent`. A node is often reimaged or removed soon after
/// its start task fails, which is when these logs matter most and last least.
pub async fn preserve_start_task(
    api: &dyn BatchApi,
    store: &dyn ArtifactStore,
    node: NodeRef<'_>,
    diagnosis: Option<&Diagnosis>,
    options: &PreserveOptions,
    deadline: Deadline,
) -> Result<PreserveReport, PreserveError> {
    let NodeRef {
        account,
        pool_id,
        node_id,
    } = node;
    let prefix = ObjectKey::new(format!(
        "{}/_pools/{}/{}/_starttask",
        names::segment(account),
        names::segment(pool_id),
        names::segment(node_id)
    ))?;
    let folder = Folder {
        kind: "starttask",
        account,
        job_id: "",
        task_id: None,
        attempt: None,
        node_id: Some(node_id),
        prefix,
    };
    if let Some(report) = existing(store, &folder).await? {
        return Ok(report);
    }
    let sources = node_output(pool_id, node_id, "startup");
    let diagnosis_json = diagnosis
        .map(|d| serde_json::to_vec_pretty(d).map(Bytes::from))
        .transpose()?;
    run(
        api,
        store,
        folder,
        sources,
        diagnosis_json,
        options,
        deadline,
    )
    .await
}

/// `{account}/{jobId}/{taskId}/attempt-{attempt}`, sanitised.
pub fn task_prefix(
    account: &str,
    job_id: &str,
    task_id: &str,
    attempt: i32,
) -> Result<ObjectKey, StoreError> {
    ObjectKey::new(format!(
        "{}/{}/{}/attempt-{attempt}",
        names::segment(account),
        names::segment(job_id),
        names::segment(task_id)
    ))
}
