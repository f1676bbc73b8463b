//! Log preservation: copies a failed task's files (and job prep/release output) from the compute
//! node into an [`ArtifactStore`] before autoscale, preemption or retention removes them.
//!
//! # Layout (docs/preserved-layout.md)
//! `{account}/{jobId}/{taskId}/attempt-{retryCount}/` holds the files (`stdout.txt`,
//! `stderr.txt`, `fileuploadout.txt`, `fileuploaderr.txt` when present, rule globs under `wd/`),
//! `diagnosis.json` and, last, `manifest.json`. Job prep/release output goes to
//! `{account}/{jobId}/_jobprep/{nodeId}/` and `_jobrelease/{nodeId}/`; a pool's start task output
//! to `{account}/_pools/{poolId}/{nodeId}/_starttask/`. Every id and file name is
//! sanitised ([`names`]) so hostile names stay inside the prefix.
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
//! - `manifest.json` is written last with [`Condition::IfAbsent`]. If it exists, the folder is
//!   complete: a duplicate request reads it and copies nothing (no file GET at all).
//! - After each file of 1 MiB or more is completely stored, a progress record
//!   `.progress/{name}.json` (bytes, sha256, source, Last-Modified) is written next to it.
//!   `put_stream` only makes an object visible once its stream ended cleanly, so an object plus
//!   a progress record whose size matches both the stored object and the Batch file properties
//!   (listing or HEAD), and whose Last-Modified is the same (a listing's `lastModified` is put in
//!   the header's HTTP-date form by [`FileInfo::from_listing`]), means "completely copied": a
//!   rerun after a crash skips it and reuses the recorded
//!   sha256. Anything else, and any smaller file, is copied again from byte 0 (an interrupted
//!   block upload is never committed).
//! - A file that fails transiently (resumes exhausted, throttling past the deadline) leaves the
//!   folder without a manifest ([`PreserveReport::complete`] is false) so a later run finishes
//!   it; a file that Batch says is gone (`NodeNotFound`, `TaskFilesUnavailable`, `FileNotFound`,
//!   …) is recorded in the manifest as `missing` with that code.
//! - Progress records are deleted (best effort) once the manifest exists.

pub mod manifest;
pub mod names;
mod tail;

use std::sync::{Arc, Mutex};

use artifact_store::{ArtifactStore, Condition, ObjectKey, StoreError};
use batch_client::{
    BatchApi, BatchError, Deadline, DownloadOptions, FileInfo, FileListOptions, FileRef,
};
use bytes::Bytes;
use diagnosis::Diagnosis;
use diagnosis::wire::PrepReleaseStatus;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use manifest::Progress;
pub use manifest::{Manifest, ManifestFile, MissingFile, SkippedFile};

/// The standard task files, copied when present.
pub const STANDARD_FILES: [&str; 4] = [
    "stdout.txt",
    "stderr.txt",
    "fileuploadout.txt",
    "fileuploaderr.txt",
];

/// How much to copy and how.
#[derive(Debug, Clone)]
pub struct PreserveOptions {
    /// Extra files to copy, as globs relative to the task's `wd/` (`*.log`, `out/**/*.json`),
    /// from the policy rule that matched.
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

/// Files smaller than this get no resume record: after a crash they are simply copied again,
/// which costs less than the record's two writes, read and delete on every copy (most task logs
/// are small, and a burst of failures copies thousands of them).
const RESUME_RECORD_MIN_BYTES: u64 = 1 << 20;

/// Batch error codes that mean "this file cannot be read, now or later".
const GONE_CODES: &[&str] = &[
    "NodeNotFound",
    "NodeNotReady",
    "TaskFilesUnavailable",
    "TaskFilesCleanedup",
    "OperationInvalidForCurrentState",
    "FileNotFound",
    "TaskNotFound",
    "JobNotFound",
    "PoolNotFound",
    "NodeStateUnusable",
];

fn gone_code(error: &BatchError) -> Option<String> {
    match error.code() {
        Some(code) if GONE_CODES.contains(&code) => Some(code.to_owned()),
        _ if matches!(error, BatchError::NotFound(_)) => {
            Some(error.code().unwrap_or("NotFound").to_owned())
        }
        _ => None,
    }
}

/// One file to copy.
#[derive(Debug, Clone)]
struct Source {
    name: String,
    file: FileRef,
    source: String,
    /// Absent is fine (fileupload*.txt, which exist only with outputFiles).
    optional: bool,
    tail: bool,
    /// What a listing of the task directory already said about the file (its properties, or why
    /// it cannot be read), so no HEAD is sent for it. `None`: [`probe`] it.
    known: Option<Probe>,
}

/// What a folder is for.
struct Folder<'a> {
    kind: &'static str,
    account: &'a str,
    job_id: &'a str,
    task_id: Option<&'a str>,
    attempt: Option<i32>,
    node_id: Option<&'a str>,
    prefix: ObjectKey,
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
    if let Some(report) = existing(store, &folder).await? {
        return Ok(report);
    }
    let globs = glob_set(&options.extra_globs)?;
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

/// The `stdout.txt` and `stderr.txt` a special task (job prep/release, start task) leaves in
/// `dir` on a node, with their tails kept.
fn node_output(pool_id: &str, node_id: &str, dir: &str) -> Vec<Source> {
    ["stdout.txt", "stderr.txt"]
        .iter()
        .map(|name| {
            let path = format!("{dir}/{name}");
            Source {
                name: (*name).to_owned(),
                file: FileRef::node(pool_id, node_id, &path),
                source: path,
                optional: false,
                tail: true,
                known: None,
            }
        })
        .collect()
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

fn report_base(store: &dyn ArtifactStore, folder: &Folder<'_>) -> PreserveReport {
    PreserveReport {
        prefix: folder.prefix.to_string(),
        link: store.link(&folder.prefix),
        already_preserved: false,
        complete: false,
        files: Vec::new(),
        manifest: None,
        stderr_tail: None,
        stdout_tail: None,
        bytes_copied: 0,
    }
}

fn files_of(manifest: &Manifest) -> Vec<FileReport> {
    let mut files: Vec<FileReport> = manifest
        .files
        .iter()
        .map(|f| FileReport {
            name: f.name.clone(),
            source: f.source.clone(),
            outcome: FileOutcome::AlreadyCopied {
                bytes: f.bytes,
                sha256: f.sha256.clone(),
            },
        })
        .collect();
    files.extend(manifest.missing.iter().map(|m| FileReport {
        name: m.name.clone(),
        source: m.source.clone(),
        outcome: FileOutcome::Missing {
            code: m.code.clone(),
        },
    }));
    files.extend(manifest.skipped.iter().map(|s| FileReport {
        name: s.name.clone(),
        source: s.source.clone(),
        outcome: FileOutcome::Skipped {
            bytes: s.bytes,
            reason: s.reason.clone(),
        },
    }));
    files
}

/// The report of a folder whose manifest already exists.
async fn existing(
    store: &dyn ArtifactStore,
    folder: &Folder<'_>,
) -> Result<Option<PreserveReport>, PreserveError> {
    let key = folder.prefix.join("manifest.json")?;
    let Some(found) = store.get(&key).await? else {
        return Ok(None);
    };
    let manifest: Manifest = serde_json::from_slice(&found.bytes)?;
    let mut report = report_base(store, folder);
    report.already_preserved = true;
    report.complete = true;
    report.files = files_of(&manifest);
    report.manifest = Some(manifest);
    Ok(Some(report))
}

/// The globs of [`PreserveOptions::extra_globs`], matched against paths under `wd/`; `None`
/// when there are none.
fn glob_set(globs: &[String]) -> Result<Option<globset::GlobSet>, PreserveError> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut builder = globset::GlobSetBuilder::new();
    for glob in globs {
        let parsed = globset::GlobBuilder::new(glob)
            .literal_separator(true)
            .build()
            .map_err(|e| PreserveError::Glob {
                glob: glob.clone(),
                message: e.to_string(),
            })?;
        builder.add(parsed);
    }
    let set = builder.build().map_err(|e| PreserveError::Glob {
        glob: globs.join(","),
        message: e.to_string(),
    })?;
    Ok(Some(set))
}

/// What one listing of a task directory found.
#[derive(Debug, Default)]
struct TaskListing {
    /// The standard files at the root of the task directory, with their properties (`None` when
    /// the entry lacks a size, so a HEAD must tell).
    standard: Vec<(&'static str, Option<FileInfo>)>,
    /// The files under `wd/` that a glob matched, sorted by name.
    globbed: Vec<Source>,
}

/// Lists the task directory once: only its root (`recursive=false`) unless there are globs, in
/// which case the whole tree, which then serves both the standard files and the globs. The
/// entries are read as a stream and only the wanted ones kept. Any failure of the listing (on
/// any page) is returned: the caller records it against stdout/stderr.
async fn list_task(
    api: &dyn BatchApi,
    job_id: &str,
    task_id: &str,
    globs: Option<&globset::GlobSet>,
    deadline: Deadline,
) -> Result<TaskListing, BatchError> {
    let options = FileListOptions {
        recursive: globs.is_some(),
        filter: None,
        max_results: None,
    };
    let mut files = batch_client::items(api.list_task_files(job_id, task_id, &options, deadline));
    let mut listing = TaskListing::default();
    while let Some(file) = files.next().await {
        let file = file?;
        if file.is_directory == Some(true) {
            continue;
        }
        let Some(name) = file.name.as_deref() else {
            continue;
        };
        // Windows nodes list `wd\out.log`.
        let normal = name.replace('\\', "/");
        if let Some(standard) = STANDARD_FILES.iter().find(|s| **s == normal) {
            if listing.standard.iter().all(|(n, _)| n != standard) {
                listing
                    .standard
                    .push((standard, FileInfo::from_listing(&file)));
            }
            continue;
        }
        let Some(set) = globs else { continue };
        let Some(rel) = normal.strip_prefix("wd/") else {
            continue;
        };
        if set.is_match(rel) {
            listing.globbed.push(Source {
                name: names::relative_path(&normal),
                file: FileRef::task(job_id, task_id, name),
                source: name.to_owned(),
                optional: true,
                tail: false,
                known: FileInfo::from_listing(&file).map(Probe::Present),
            });
        }
    }
    listing.globbed.sort_by(|a, b| a.name.cmp(&b.name));
    listing.globbed.dedup_by(|a, b| a.name == b.name);
    Ok(listing)
}

/// The standard task files to copy, with what the listing said about each, in
/// [`STANDARD_FILES`] order (the order the caps are decided in). The outcomes are those a HEAD
/// per file gave: a listed file is present; an unlisted `stdout.txt`/`stderr.txt` is missing
/// (`FileNotFound`) and an unlisted `fileupload*.txt` absent; a listing that Batch refused
/// because the files are gone makes stdout/stderr missing with its code, and one that failed
/// transiently makes them failed, so the folder stays incomplete and a rerun tries again.
fn standard_sources(
    job_id: &str,
    task_id: &str,
    listed: &Result<TaskListing, BatchError>,
) -> Vec<Source> {
    let mut sources = Vec::new();
    for name in STANDARD_FILES {
        let optional = name.starts_with("fileupload");
        let known = match listed {
            Ok(listing) => match listing.standard.iter().find(|(n, _)| *n == name) {
                Some((_, Some(info))) => Some(Probe::Present(info.clone())),
                // Listed without a size: ask with a HEAD.
                Some((_, None)) => None,
                None if optional => continue,
                None => Some(Probe::Gone("FileNotFound".to_owned())),
            },
            // fileupload*.txt exist only with outputFiles: when the directory cannot be read
            // there is nothing to say about them (stdout/stderr carry the error).
            Err(_) if optional => continue,
            Err(error) => Some(match gone_code(error) {
                Some(code) => Probe::Gone(code),
                None => Probe::Failed(error.to_string()),
            }),
        };
        sources.push(Source {
            name: name.to_owned(),
            file: FileRef::task(job_id, task_id, name),
            source: name.to_owned(),
            optional,
            tail: matches!(name, "stdout.txt" | "stderr.txt"),
            known,
        });
    }
    sources
}

/// What a HEAD (or a listing) said about one source.
#[derive(Debug, Clone)]
enum Probe {
    Present(FileInfo),
    Absent,
    Gone(String),
    Failed(String),
}

async fn probe(api: &dyn BatchApi, source: &Source, deadline: Deadline) -> Probe {
    let error = match api.file_properties(&source.file, deadline).await {
        Ok(info) if info.is_directory => return Probe::Absent,
        Ok(info) => return Probe::Present(info),
        // An optional file (fileupload*.txt, only there with outputFiles) that is not found is
        // simply absent; asking a GET for the reason would double the requests of every task
        // without outputFiles.
        Err(BatchError::NotFound(_)) if source.optional => return Probe::Absent,
        // A HEAD error has no body, so no Batch error code: ask with a GET, whose error body
        // says why (`NodeNotFound`, `FileNotFound`, …). Only failing files pay for this.
        Err(e) if e.code().is_none() => {
            match api
                .download_file(&source.file, &DownloadOptions::default(), deadline)
                .await
            {
                Ok(download) => return Probe::Present(download.info.clone()),
                Err(e) => e,
            }
        }
        Err(e) => e,
    };
    match gone_code(&error) {
        // fileupload*.txt exist only with outputFiles: when they cannot be read there is
        // nothing to say about them (stdout/stderr carry the node's error code).
        Some(_) if source.optional => Probe::Absent,
        Some(code) => Probe::Gone(code),
        None => Probe::Failed(error.to_string()),
    }
}

async fn run(
    api: &dyn BatchApi,
    store: &dyn ArtifactStore,
    folder: Folder<'_>,
    sources: Vec<Source>,
    diagnosis_json: Option<Bytes>,
    options: &PreserveOptions,
    deadline: Deadline,
) -> Result<PreserveReport, PreserveError> {
    let mut report = report_base(store, &folder);
    // Learn every source's size first (from the listing, or a HEAD for the sources it did not
    // cover), so the caps are decided in a stable order.
    // Each future is boxed as Send at a concrete lifetime: without it, callers that must be
    // Send (axum handlers) hit rustc's "`Send` is not general enough" (rust-lang/rust#102211).
    // The futures are collected first (they are lazy, so this is cheap): a closure borrowing
    // `&Source` inside the stream's type is what trips the lifetime check.
    let probe_futures: Vec<_> = sources
        .iter()
        .map(|s| match &s.known {
            Some(known) => futures::FutureExt::boxed(futures::future::ready(known.clone())),
            None => futures::FutureExt::boxed(probe(api, s, deadline)),
        })
        .collect();
    let probes: Vec<Probe> = futures::stream::iter(probe_futures)
        .buffered(options.concurrency.max(1))
        .collect()
        .await;
    let mut budget = options.max_task_bytes;
    let mut plan = Vec::new();
    // Only files this large ever get resume records, so only then is there anything to clean.
    let mut resumable = false;
    for (source, probe) in sources.into_iter().zip(probes) {
        let outcome = match probe {
            Probe::Absent => continue,
            Probe::Gone(code) => FileOutcome::Missing { code },
            Probe::Failed(error) => FileOutcome::Failed { error },
            Probe::Present(info) if info.size > options.max_file_bytes => FileOutcome::Skipped {
                bytes: info.size,
                reason: "maxFileBytes".into(),
            },
            Probe::Present(info) if info.size > budget => FileOutcome::Skipped {
                bytes: info.size,
                reason: "maxTaskBytes".into(),
            },
            Probe::Present(info) => {
                budget -= info.size;
                resumable |= info.size >= RESUME_RECORD_MIN_BYTES;
                plan.push((source, info));
                continue;
            }
        };
        report.files.push(FileReport {
            name: source.name,
            source: source.source,
            outcome,
        });
    }

    let copies = futures::stream::iter(plan.into_iter().map(|(source, info)| {
        futures::FutureExt::boxed(copy_one(
            api,
            store,
            &folder.prefix,
            source,
            info,
            options,
            deadline,
        ))
    }))
    .buffer_unordered(options.concurrency.max(1))
    .collect::<Vec<_>>()
    .await;
    for copy in copies {
        let copy = copy?;
        report.bytes_copied += copy.downloaded;
        match copy.tail_of.as_deref() {
            Some("stderr.txt") => report.stderr_tail = copy.tail,
            Some("stdout.txt") => report.stdout_tail = copy.tail,
            _ => {}
        }
        report.files.push(copy.report);
    }
    report.files.sort_by(|a, b| a.name.cmp(&b.name));

    if report
        .files
        .iter()
        .any(|f| matches!(f.outcome, FileOutcome::Failed { .. }))
    {
        return Ok(report);
    }
    if let Some(json) = diagnosis_json {
        store
            .put(
                &folder.prefix.join("diagnosis.json")?,
                json,
                Condition::Always,
            )
            .await?;
    }
    let manifest = Manifest {
        version: 1,
        kind: folder.kind.to_owned(),
        account: folder.account.to_owned(),
        job_id: folder.job_id.to_owned(),
        task_id: folder.task_id.map(str::to_owned),
        attempt: folder.attempt,
        node_id: folder.node_id.map(str::to_owned),
        created_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        files: report
            .files
            .iter()
            .filter_map(|f| match &f.outcome {
                FileOutcome::Copied { bytes, sha256 }
                | FileOutcome::AlreadyCopied { bytes, sha256 } => Some(ManifestFile {
                    name: f.name.clone(),
                    bytes: *bytes,
                    sha256: sha256.clone(),
                    source: f.source.clone(),
                }),
                _ => None,
            })
            .collect(),
        missing: report
            .files
            .iter()
            .filter_map(|f| match &f.outcome {
                FileOutcome::Missing { code } => Some(MissingFile {
                    name: f.name.clone(),
                    source: f.source.clone(),
                    code: code.clone(),
                }),
                _ => None,
            })
            .collect(),
        skipped: report
            .files
            .iter()
            .filter_map(|f| match &f.outcome {
                FileOutcome::Skipped { bytes, reason } => Some(SkippedFile {
                    name: f.name.clone(),
                    source: f.source.clone(),
                    bytes: *bytes,
                    reason: reason.clone(),
                }),
                _ => None,
            })
            .collect(),
    };
    let manifest_key = folder.prefix.join("manifest.json")?;
    match store
        .put(
            &manifest_key,
            Bytes::from(serde_json::to_vec_pretty(&manifest)?),
            Condition::IfAbsent,
        )
        .await
    {
        Ok(_) => {
            report.complete = true;
            report.manifest = Some(manifest);
        }
        // Another instance finished the same folder meanwhile: its manifest wins.
        Err(StoreError::ConditionFailed { .. }) => {
            if let Some(mut other) = existing(store, &folder).await? {
                other.stderr_tail = report.stderr_tail.take();
                other.stdout_tail = report.stdout_tail.take();
                other.bytes_copied = report.bytes_copied;
                return Ok(other);
            }
        }
        Err(e) => return Err(e.into()),
    }
    // Progress records are only needed until the manifest exists.
    if resumable && let Ok(records) = store.list(&format!("{}/.progress/", folder.prefix)).await {
        for record in records {
            let _ = store.delete(&record.key, Condition::Always).await;
        }
    }
    Ok(report)
}

struct Copy {
    report: FileReport,
    downloaded: u64,
    tail_of: Option<String>,
    tail: Option<String>,
}

/// Shared between the byte stream handed to the store and the copy that awaits it.
struct Meter {
    hasher: Sha256,
    bytes: u64,
    tail: Option<tail::Tail>,
    error: Option<BatchError>,
}

async fn copy_one(
    api: &dyn BatchApi,
    store: &dyn ArtifactStore,
    prefix: &ObjectKey,
    source: Source,
    info: FileInfo,
    options: &PreserveOptions,
    deadline: Deadline,
) -> Result<Copy, PreserveError> {
    let dest = prefix.join(&source.name)?;
    let progress_key = prefix.join(&format!(".progress/{}.json", source.name))?;
    let done = |outcome| FileReport {
        name: source.name.clone(),
        source: source.source.clone(),
        outcome,
    };

    // Completely copied by an earlier run?
    if info.size >= RESUME_RECORD_MIN_BYTES
        && let Some(record) = store.get(&progress_key).await?
        && let Ok(progress) = serde_json::from_slice::<Progress>(&record.bytes)
        && progress.bytes == info.size
        && (progress.last_modified.is_none() || progress.last_modified == info.last_modified)
        && store
            .head(&dest)
            .await?
            .is_some_and(|s| s.size == progress.bytes)
    {
        return Ok(Copy {
            report: done(FileOutcome::AlreadyCopied {
                bytes: progress.bytes,
                sha256: progress.sha256,
            }),
            downloaded: 0,
            tail_of: None,
            tail: None,
        });
    }

    let download_options = DownloadOptions {
        offset: 0,
        max_resumes: options.max_resumes,
    };
    let download = match api
        .download_file(&source.file, &download_options, deadline)
        .await
    {
        Ok(download) => download,
        Err(e) => {
            let outcome = match gone_code(&e) {
                Some(code) => FileOutcome::Missing { code },
                None => FileOutcome::Failed {
                    error: e.to_string(),
                },
            };
            return Ok(Copy {
                report: done(outcome),
                downloaded: 0,
                tail_of: None,
                tail: None,
            });
        }
    };
    let last_modified = download.info.last_modified.clone();
    let meter = Arc::new(Mutex::new(Meter {
        hasher: Sha256::new(),
        bytes: 0,
        tail: source.tail.then(|| tail::Tail::new(options.tail_bytes)),
        error: None,
    }));
    let tap = meter.clone();
    let body = download
        .map(move |chunk| {
            let mut m = tap
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match chunk {
                Ok(bytes) => {
                    m.hasher.update(&bytes);
                    m.bytes += bytes.len() as u64;
                    if let Some(tail) = m.tail.as_mut() {
                        tail.push(&bytes);
                    }
                    Ok(bytes)
                }
                Err(e) => {
                    let io = std::io::Error::other(e.to_string());
                    m.error = Some(e);
                    Err(io)
                }
            }
        })
        .boxed();
    let stored = store.put_stream(&dest, body).await;
    // Take what the tap measured, releasing the lock before any further await.
    let (downloaded, error, hasher, tail) = {
        let mut m = meter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (
            m.bytes,
            m.error.take(),
            std::mem::take(&mut m.hasher),
            m.tail.take(),
        )
    };
    if let Some(e) = error {
        let outcome = match gone_code(&e) {
            Some(code) => FileOutcome::Missing { code },
            None => FileOutcome::Failed {
                error: e.to_string(),
            },
        };
        return Ok(Copy {
            report: done(outcome),
            downloaded,
            tail_of: None,
            tail: None,
        });
    }
    let stored = stored?;
    let sha256 = hex::encode(hasher.finalize());
    let tail = tail.map(|t| t.finish(options.tail_lines));
    if stored.size >= RESUME_RECORD_MIN_BYTES {
        let progress = Progress {
            bytes: stored.size,
            sha256: sha256.clone(),
            source: source.source.clone(),
            last_modified,
        };
        store
            .put(
                &progress_key,
                Bytes::from(serde_json::to_vec(&progress)?),
                Condition::Always,
            )
            .await?;
    }
    Ok(Copy {
        report: done(FileOutcome::Copied {
            bytes: stored.size,
            sha256,
        }),
        downloaded,
        tail_of: source.tail.then(|| source.name.clone()),
        tail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcomes(sources: &[Source]) -> Vec<(String, String)> {
        sources
            .iter()
            .map(|s| {
                let known = match &s.known {
                    None => "head".to_owned(),
                    Some(Probe::Present(info)) => format!("present {}", info.size),
                    Some(Probe::Absent) => "absent".to_owned(),
                    Some(Probe::Gone(code)) => format!("gone {code}"),
                    Some(Probe::Failed(_)) => "failed".to_owned(),
                };
                (s.name.clone(), known)
            })
            .collect()
    }

    fn info(size: u64) -> Option<FileInfo> {
        Some(FileInfo {
            size,
            ..FileInfo::default()
        })
    }

    #[test]
    fn standard_files_from_a_listing() {
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect()
        };
        // stdout listed, stderr not, fileuploadout listed without a size, fileuploaderr not.
        let listed = Ok(TaskListing {
            standard: vec![("stdout.txt", info(5)), ("fileuploadout.txt", None)],
            globbed: Vec::new(),
        });
        assert_eq!(
            outcomes(&standard_sources("j", "t", &listed)),
            pairs(&[
                ("stdout.txt", "present 5"),
                ("stderr.txt", "gone FileNotFound"),
                ("fileuploadout.txt", "head"),
            ])
        );
        let info = |status, code: &str| {
            Box::new(batch_client::ErrorInfo {
                status: Some(status),
                code: Some(code.to_owned()),
                ..Default::default()
            })
        };
        let gone: Result<TaskListing, BatchError> =
            Err(BatchError::NotFound(info(404, "NodeNotFound")));
        assert_eq!(
            outcomes(&standard_sources("j", "t", &gone)),
            pairs(&[
                ("stdout.txt", "gone NodeNotFound"),
                ("stderr.txt", "gone NodeNotFound")
            ])
        );
        let expired: Result<TaskListing, BatchError> =
            Err(BatchError::Conflict(info(409, "TaskFilesUnavailable")));
        assert_eq!(
            outcomes(&standard_sources("j", "t", &expired)),
            pairs(&[
                ("stdout.txt", "gone TaskFilesUnavailable"),
                ("stderr.txt", "gone TaskFilesUnavailable")
            ])
        );
        let throttled: Result<TaskListing, BatchError> = Err(BatchError::Throttled {
            info: info(429, "TooManyRequests"),
            retry_after: None,
        });
        assert_eq!(
            outcomes(&standard_sources("j", "t", &throttled)),
            pairs(&[("stdout.txt", "failed"), ("stderr.txt", "failed")])
        );
    }
}
