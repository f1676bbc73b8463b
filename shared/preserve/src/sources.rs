//! What a folder copies: the standard task files, the files a rule's globs match (both from one
//! listing of the task directory), or a special task's two logs on a node (probed with a HEAD
//! each). See the crate docs for the requests this costs.

use batch_client::{
    BatchApi, BatchError, Deadline, DownloadOptions, FileInfo, FileListOptions, FileRef,
};
use futures::StreamExt;

use crate::PreserveError;

/// The standard task files, copied when present.
pub const STANDARD_FILES: [&str; 4] = [
    "stdout.txt",
    "stderr.txt",
    "fileuploadout.txt",
    "fileuploaderr.txt",
];

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

/// The Batch error code when `error` says the file is gone for good.
pub(crate) fn gone_code(error: &BatchError) -> Option<String> {
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
pub(crate) struct Source {
    /// Its name in the folder: first as the node names it (`wd\out.log`, `stdout.txt`), then,
    /// once the folder's keys are given ([`crate::names::folder_keys`]), its key.
    pub(crate) name: String,
    pub(crate) file: FileRef,
    /// Its path on the node, as recorded in the manifest.
    pub(crate) source: String,
    /// Absent is fine (fileupload*.txt, which exist only with outputFiles).
    pub(crate) optional: bool,
    pub(crate) tail: bool,
    /// What a listing of the task directory already said about the file (its properties, or why
    /// it cannot be read), so no HEAD is sent for it. `None`: [`probe`] it.
    pub(crate) known: Option<Probe>,
}

/// What a HEAD (or a listing) said about one source.
#[derive(Debug, Clone)]
pub(crate) enum Probe {
    Present(FileInfo),
    Absent,
    Gone(String),
    Failed(String),
}

/// Asks Batch about one source with a HEAD (and, when the HEAD fails without a code, a GET).
pub(crate) async fn probe(api: &dyn BatchApi, source: &Source, deadline: Deadline) -> Probe {
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

/// The `stdout.txt` and `stderr.txt` a special task (job prep/release, start task) leaves in
/// `dir` on a node, with their tails kept.
pub(crate) fn node_output(pool_id: &str, node_id: &str, dir: &str) -> Vec<Source> {
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

/// The globs of [`crate::PreserveOptions::extra_globs`], each read as the policy reads it
/// (`diagnosis::policy::preserve_glob`: task-relative, under `wd/`; a glob without `wd/`, as
/// the CLI's `--glob '*.log'`, is taken relative to `wd/`), matched against a file's
/// task-relative path with `/` separators; `None` when there are none.
pub(crate) fn glob_set(globs: &[String]) -> Result<Option<globset::GlobSet>, PreserveError> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut builder = globset::GlobSetBuilder::new();
    for glob in globs {
        let task_relative = diagnosis::policy::task_relative(glob);
        let parsed = diagnosis::policy::preserve_glob(&task_relative).map_err(|message| {
            PreserveError::Glob {
                glob: glob.clone(),
                message,
            }
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
pub(crate) struct TaskListing {
    /// The standard files at the root of the task directory, with their properties (`None` when
    /// the entry lacks a size, so a HEAD must tell).
    pub(crate) standard: Vec<(&'static str, Option<FileInfo>)>,
    /// The files under `wd/` that a glob matched, sorted by name.
    pub(crate) globbed: Vec<Source>,
}

/// Lists the task directory once: only its root (`recursive=false`) unless there are globs, in
/// which case the whole tree, which then serves both the standard files and the globs. The
/// entries are read as a stream and only the wanted ones kept. Any failure of the listing (on
/// any page) is returned: the caller records it against stdout/stderr.
pub(crate) async fn list_task(
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
        if normal.starts_with(diagnosis::policy::WORKING_DIR) && set.is_match(&normal) {
            listing.globbed.push(Source {
                // The name as listed: the folder's keys are given once every source is known.
                name: name.to_owned(),
                file: FileRef::task(job_id, task_id, name),
                source: name.to_owned(),
                optional: true,
                tail: false,
                known: FileInfo::from_listing(&file).map(Probe::Present),
            });
        }
    }
    listing.globbed.sort_by(|a, b| a.name.cmp(&b.name));
    // A name listed twice (on two pages) is one file.
    listing.globbed.dedup_by(|a, b| a.name == b.name);
    Ok(listing)
}

/// The standard task files to copy, with what the listing said about each, in
/// [`STANDARD_FILES`] order (the order the caps are decided in). The outcomes are those a HEAD
/// per file gave: a listed file is present; an unlisted `stdout.txt`/`stderr.txt` is missing
/// (`FileNotFound`) and an unlisted `fileupload*.txt` absent; a listing that Batch refused
/// because the files are gone makes stdout/stderr missing with its code, and one that failed
/// transiently makes them failed, so the folder stays incomplete and a rerun tries again.
pub(crate) fn standard_sources(
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
