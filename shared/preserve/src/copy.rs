//! The copy of one file: streamed from the Batch file API into the store, measured on the way
//! (SHA-256, bytes, the tail), with the resume record of a large file.

use std::sync::{Arc, Mutex, PoisonError};

use artifact_store::{ArtifactStore, Condition, ObjectInfo, ObjectKey, StoreError};
use batch_client::{BatchApi, BatchError, Deadline, DownloadOptions, FileDownload, FileInfo};
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::manifest::Progress;
use crate::sources::{Source, gone_code};
use crate::{FileOutcome, FileReport, PreserveError, PreserveOptions, tail};

/// Files smaller than this get no resume record: after a crash they are simply copied again,
/// which costs less than the record's two writes, read and delete on every copy (most task logs
/// are small, and a burst of failures copies thousands of them).
pub(crate) const RESUME_RECORD_MIN_BYTES: u64 = 1 << 20;

/// What copying one file gave.
pub(crate) struct Copy {
    pub(crate) report: FileReport,
    pub(crate) downloaded: u64,
    /// `stdout.txt` or `stderr.txt` when its tail was kept.
    pub(crate) tail_of: Option<String>,
    pub(crate) tail: Option<String>,
}

impl Copy {
    /// A copy that ended without a tail.
    fn ended(source: &Source, outcome: FileOutcome, downloaded: u64) -> Self {
        Copy {
            report: FileReport {
                name: source.name.clone(),
                source: source.source.clone(),
                outcome,
            },
            downloaded,
            tail_of: None,
            tail: None,
        }
    }
}

/// The resume record of the file at `name` in the folder at `prefix`. Named by a hash of the
/// name, so records sit side by side in one directory whatever the names (a record named after
/// `wd/x` could not sit beside one named after `wd/x.json/y`).
pub(crate) fn progress_key(prefix: &ObjectKey, name: &str) -> Result<ObjectKey, StoreError> {
    let digest = hex::encode(Sha256::digest(name.as_bytes()));
    prefix.join(&format!(".progress/{}.json", &digest[..32]))
}

/// Copies one present file (its properties in `info`) to `prefix`/`source.name`.
pub(crate) async fn copy_one(
    api: &dyn BatchApi,
    store: &dyn ArtifactStore,
    prefix: &ObjectKey,
    source: Source,
    info: FileInfo,
    options: &PreserveOptions,
    deadline: Deadline,
) -> Result<Copy, PreserveError> {
    let (dest, progress_key) = match (
        prefix.join(&source.name),
        progress_key(prefix, &source.name),
    ) {
        (Ok(dest), Ok(progress)) => (dest, progress),
        (Err(e), _) | (_, Err(e)) => return Ok(Copy::ended(&source, not_stored(&e), 0)),
    };
    if info.size >= RESUME_RECORD_MIN_BYTES
        && let Some(done) = already_copied(store, &dest, &progress_key, &info).await?
    {
        return Ok(Copy::ended(&source, done, 0));
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
        Err(e) => return Ok(Copy::ended(&source, unreadable(&e), 0)),
    };
    let last_modified = download.info.last_modified.clone();
    let tail = source.tail.then(|| tail::Tail::new(options.tail_bytes));
    let (stored, measured) = stream_into_store(store, &dest, download, tail).await;
    if let Some(e) = &measured.error {
        return Ok(Copy::ended(&source, unreadable(e), measured.bytes));
    }
    let stored = match stored {
        Ok(stored) => stored,
        Err(e) if e.is_retryable() => {
            let outcome = FileOutcome::Failed {
                error: e.to_string(),
            };
            return Ok(Copy::ended(&source, outcome, measured.bytes));
        }
        Err(e @ (StoreError::KeyConflict { .. } | StoreError::InvalidKey { .. })) => {
            return Ok(Copy::ended(&source, not_stored(&e), measured.bytes));
        }
        Err(e) => return Err(e.into()),
    };
    let sha256 = hex::encode(measured.hasher.finalize());
    if stored.size >= RESUME_RECORD_MIN_BYTES {
        let progress = Progress {
            bytes: stored.size,
            sha256: sha256.clone(),
            source: source.source.clone(),
            last_modified,
        };
        let record = Bytes::from(serde_json::to_vec(&progress)?);
        store.put(&progress_key, record, Condition::Always).await?;
    }
    let mut copy = Copy::ended(
        &source,
        FileOutcome::Copied {
            bytes: stored.size,
            sha256,
        },
        measured.bytes,
    );
    copy.tail_of = source.tail.then(|| source.name.clone());
    copy.tail = measured.tail.map(|t| t.finish(options.tail_lines));
    Ok(copy)
}

/// A file that Batch could not serve: gone for good (missing, with the code) or for now (failed,
/// so the folder stays incomplete).
fn unreadable(error: &BatchError) -> FileOutcome {
    match gone_code(error) {
        Some(code) => FileOutcome::Missing { code },
        None => FileOutcome::Failed {
            error: error.to_string(),
        },
    }
}

/// A file the store cannot hold under its key; the message names the key, never a secret.
fn not_stored(error: &StoreError) -> FileOutcome {
    FileOutcome::NotStored {
        reason: error.to_string(),
    }
}

/// The outcome recorded by an earlier run that copied the whole file: its progress record
/// matches both the file on the node (size, Last-Modified) and the stored object (size).
async fn already_copied(
    store: &dyn ArtifactStore,
    dest: &ObjectKey,
    progress_key: &ObjectKey,
    info: &FileInfo,
) -> Result<Option<FileOutcome>, StoreError> {
    let Some(record) = store.get(progress_key).await? else {
        return Ok(None);
    };
    let Ok(progress) = serde_json::from_slice::<Progress>(&record.bytes) else {
        return Ok(None);
    };
    let unchanged = progress.bytes == info.size
        && (progress.last_modified.is_none() || progress.last_modified == info.last_modified);
    if !unchanged
        || store
            .head(dest)
            .await?
            .is_none_or(|stored| stored.size != progress.bytes)
    {
        return Ok(None);
    }
    Ok(Some(FileOutcome::AlreadyCopied {
        bytes: progress.bytes,
        sha256: progress.sha256,
    }))
}

/// What the stream handed to the store measured on the way.
pub(crate) struct Meter {
    hasher: Sha256,
    bytes: u64,
    tail: Option<tail::Tail>,
    /// The download's own error, kept apart from the store's view of it (an I/O error).
    error: Option<BatchError>,
}

/// Streams `download` into the store at `dest`, hashing, counting and keeping the tail on the
/// way. The meter is shared between the stream the store reads and this function, which takes it
/// back once the store is done.
async fn stream_into_store(
    store: &dyn ArtifactStore,
    dest: &ObjectKey,
    download: FileDownload,
    tail: Option<tail::Tail>,
) -> (Result<ObjectInfo, StoreError>, Meter) {
    let meter = Arc::new(Mutex::new(Meter {
        hasher: Sha256::new(),
        bytes: 0,
        tail,
        error: None,
    }));
    let tap = meter.clone();
    let body = download
        .map(move |chunk| {
            let mut m = tap.lock().unwrap_or_else(PoisonError::into_inner);
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
    let stored = store.put_stream(dest, body).await;
    // The store dropped the stream (and with it the tap) before returning; take what it measured.
    let mut m = meter.lock().unwrap_or_else(PoisonError::into_inner);
    let measured = Meter {
        hasher: std::mem::take(&mut m.hasher),
        bytes: m.bytes,
        tail: m.tail.take(),
        error: m.error.take(),
    };
    (stored, measured)
}
