//! `manifest.json`: what a preserved folder holds (layout in `docs/preserved-layout.md`).
//! Written last, create-only.

use serde::{Deserialize, Serialize};

use crate::folder::Folder;
use crate::{FileOutcome, FileReport};

/// The manifest of one preserved folder. Its presence means the folder is complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Format version, so readers can evolve.
    pub version: u32,
    /// `task`, `jobprep`, `jobrelease` or `starttask`.
    pub kind: String,
    /// The Batch account.
    pub account: String,
    /// The job (empty for a start task, which belongs to a pool).
    pub job_id: String,
    /// The task (task folders only).
    pub task_id: Option<String>,
    /// The attempt (`executionInfo.retryCount`; task folders only).
    pub attempt: Option<i32>,
    /// The node (prep/release folders, and task folders when known).
    pub node_id: Option<String>,
    /// When the manifest was written (RFC 3339, UTC).
    pub created_at: String,
    /// The files copied.
    pub files: Vec<ManifestFile>,
    /// Files that could not be read, with the Batch error code that said why.
    pub missing: Vec<MissingFile>,
    /// Files found but not copied (size caps).
    #[serde(default)]
    pub skipped: Vec<SkippedFile>,
    /// Files read but not stored: the store could not hold them under any key (absent when
    /// there are none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_stored: Vec<NotStoredFile>,
}

impl Manifest {
    /// The manifest of `folder` from the per-file results of its run, written at `created_at`
    /// (RFC 3339). Files that failed for now have no place in it: a folder with one has no
    /// manifest yet.
    pub(crate) fn from_reports(
        folder: &Folder<'_>,
        files: &[FileReport],
        created_at: String,
    ) -> Self {
        let mut manifest = Manifest {
            version: 1,
            kind: folder.kind.to_owned(),
            account: folder.account.to_owned(),
            job_id: folder.job_id.to_owned(),
            task_id: folder.task_id.map(str::to_owned),
            attempt: folder.attempt,
            node_id: folder.node_id.map(str::to_owned),
            created_at,
            files: Vec::new(),
            missing: Vec::new(),
            skipped: Vec::new(),
            not_stored: Vec::new(),
        };
        for f in files {
            let (name, source) = (f.name.clone(), f.source.clone());
            match &f.outcome {
                FileOutcome::Copied { bytes, sha256 }
                | FileOutcome::AlreadyCopied { bytes, sha256 } => {
                    manifest.files.push(ManifestFile {
                        name,
                        bytes: *bytes,
                        sha256: sha256.clone(),
                        source,
                    })
                }
                FileOutcome::Missing { code } => manifest.missing.push(MissingFile {
                    name,
                    source,
                    code: code.clone(),
                }),
                FileOutcome::Skipped { bytes, reason } => manifest.skipped.push(SkippedFile {
                    name,
                    source,
                    bytes: *bytes,
                    reason: reason.clone(),
                }),
                FileOutcome::NotStored { reason } => manifest.not_stored.push(NotStoredFile {
                    name,
                    source,
                    reason: reason.clone(),
                }),
                FileOutcome::Failed { .. } => {}
            }
        }
        manifest
    }

    /// The per-file results a manifest records, as a run that finds it reports them.
    pub(crate) fn file_reports(&self) -> Vec<FileReport> {
        let report = |name: &String, source: &String, outcome| FileReport {
            name: name.clone(),
            source: source.clone(),
            outcome,
        };
        let copied = self.files.iter().map(|f| {
            report(
                &f.name,
                &f.source,
                FileOutcome::AlreadyCopied {
                    bytes: f.bytes,
                    sha256: f.sha256.clone(),
                },
            )
        });
        let missing = self.missing.iter().map(|m| {
            report(
                &m.name,
                &m.source,
                FileOutcome::Missing {
                    code: m.code.clone(),
                },
            )
        });
        let skipped = self.skipped.iter().map(|s| {
            report(
                &s.name,
                &s.source,
                FileOutcome::Skipped {
                    bytes: s.bytes,
                    reason: s.reason.clone(),
                },
            )
        });
        let not_stored = self.not_stored.iter().map(|n| {
            report(
                &n.name,
                &n.source,
                FileOutcome::NotStored {
                    reason: n.reason.clone(),
                },
            )
        });
        copied
            .chain(missing)
            .chain(skipped)
            .chain(not_stored)
            .collect()
    }
}

/// One copied file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestFile {
    /// Name inside the folder (sanitised).
    pub name: String,
    /// Bytes copied (the whole file).
    pub bytes: u64,
    /// SHA-256 of the bytes, hex, computed while streaming.
    pub sha256: String,
    /// Path on the node the bytes came from (task-relative or node-relative).
    pub source: String,
}

/// A file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MissingFile {
    /// Name it would have had.
    pub name: String,
    /// Path on the node.
    pub source: String,
    /// Batch error code (`NodeNotFound`, `TaskFilesUnavailable`, `FileNotFound`, …).
    pub code: String,
}

/// A file not copied on purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SkippedFile {
    /// Name it would have had.
    pub name: String,
    /// Path on the node.
    pub source: String,
    /// Its size.
    pub bytes: u64,
    /// Why (`maxFileBytes`, `maxTaskBytes`).
    pub reason: String,
}

/// A file read but not stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotStoredFile {
    /// The name it was to have (or would have had, when no key could be given).
    pub name: String,
    /// Path on the node.
    pub source: String,
    /// Why the store could not hold it.
    pub reason: String,
}

/// The per-file record written as soon as a file is completely copied, so a rerun after a crash
/// can trust the object without downloading it again (see the crate docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Progress {
    pub(crate) bytes: u64,
    pub(crate) sha256: String,
    pub(crate) source: String,
    /// `Last-Modified` of the source when it was copied.
    pub(crate) last_modified: Option<String>,
}
