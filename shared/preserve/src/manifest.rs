//! `manifest.json`: what a preserved folder holds (docs/preserved-layout.md). Written last, create-only.

use serde::{Deserialize, Serialize};

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
