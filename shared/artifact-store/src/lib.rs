//! Where preserved logs go: a small object-store trait ([`ArtifactStore`]) with two backends,
//! a local directory ([`LocalDirStore`], the embedded default) and Azure Blob Storage
//! ([`BlobStore`]).
//!
//! The trait is deliberately small: whole small objects with ETags and conditions (state,
//! manifests, idempotency records), and one streaming upload for large logs. Conditions are what
//! make the pipeline idempotent: `IfAbsent` is a create-only write (`If-None-Match: *` on Blob,
//! hard link on a directory), `IfMatch` a compare-and-swap.
//!
//! [`open`] takes the `BATCH_TRIAGE_STORE` setting: a local directory, a blob container URL
//! (optionally with a SAS), or a storage connection string.
#![deny(missing_docs)]

mod blob;
mod blob_list;
mod connection_string;
mod key;
mod list;
mod local;
mod local_list;
mod open;
mod retry;
#[cfg(feature = "testing")]
pub mod testing;
mod upload;

use bytes::Bytes;
use futures::stream::BoxStream;

pub use blob::{
    BlobAuth, BlobStore, DEFAULT_CONTAINER, DEVSTORE_ACCOUNT, DEVSTORE_KEY, account_sas,
};
pub use key::{MAX_KEY, MAX_SEGMENT, ObjectKey};
pub use list::{
    DEFAULT_PAGE, DrainPage, ListCursor, ListPage, Listing, MAX_PAGE, PagedDrain, count,
};
pub use local::LocalDirStore;
pub use open::open;
pub use retry::{RetryNotice, RetryObserver};
pub use upload::{
    MAX_UPLOAD_LIFETIME, MIN_UPLOAD_LIFETIME, UPLOAD_SAS_PERMISSIONS, UploadTarget,
    container_service_sas,
};

/// An opaque version tag. It changes on every write, so it can be used for compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ETag(pub String);

impl std::fmt::Display for ETag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// When a write or delete may happen. Conditions are checked atomically by the backend, so two
/// instances racing on one key cannot both win.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// No precondition.
    Always,
    /// Only if the key does not exist yet (create-only); otherwise [`StoreError::ConditionFailed`].
    IfAbsent,
    /// Only if the current version has this ETag (compare-and-swap); otherwise
    /// [`StoreError::ConditionFailed`] (also when the key does not exist).
    IfMatch(ETag),
}

/// What a store knows about one object, without its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object's key.
    pub key: ObjectKey,
    /// Its length in bytes.
    pub size: u64,
    /// Its current version, for a later `IfMatch`.
    pub etag: ETag,
}

/// A small object read whole, with the version it was read at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The object's content.
    pub bytes: Bytes,
    /// The version of exactly these bytes.
    pub etag: ETag,
}

/// Why a store operation failed. The messages carry the key and a cause, never a secret (no SAS,
/// no account key, no token).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The condition (`IfAbsent`, `IfMatch`) did not hold: someone else wrote first.
    #[error("condition failed for {key}: the object was created or changed by someone else")]
    ConditionFailed {
        /// The key written.
        key: String,
    },
    /// The object does not exist (only from operations that need it to).
    #[error("object not found: {key}")]
    NotFound {
        /// The key asked for.
        key: String,
    },
    /// The key is not a safe relative path; nothing was touched.
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The rejected key (printable escape of the input).
        key: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The key is valid, but the store cannot hold it beside the objects it already has: on a
    /// directory, an object's key is a directory of another's (`a` and `a/b`). Nothing was
    /// written. (Blob Storage holds both; callers that want one layout everywhere avoid such
    /// keys.)
    #[error("object key {key} clashes with another object: {reason}")]
    KeyConflict {
        /// The key written.
        key: String,
        /// Which way it clashes.
        reason: String,
    },
    /// A failure that may succeed when retried (throttling, a dropped connection, a 5xx).
    #[error("transient storage error: {message}")]
    Transient {
        /// What happened, without secrets.
        message: String,
    },
    /// The store refused the credentials or the permissions are missing: retrying will not help.
    #[error("storage authentication/authorization failed: {message}")]
    Auth {
        /// What happened, without secrets.
        message: String,
    },
    /// A local I/O failure (local backend, or reading the source stream).
    #[error("I/O error on {key}: {source}")]
    Io {
        /// The key being read or written (or the store root).
        key: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Anything else: a bad store spec, an unexpected response.
    #[error("{message}")]
    Other {
        /// What happened, without secrets.
        message: String,
    },
}

impl StoreError {
    /// Whether retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Transient { .. } => true,
            StoreError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }

    pub(crate) fn io(key: &str, source: std::io::Error) -> Self {
        StoreError::Io {
            key: key.to_owned(),
            source,
        }
    }

    pub(crate) fn other(message: impl Into<String>) -> Self {
        StoreError::Other {
            message: message.into(),
        }
    }
}

/// A byte stream fed to [`ArtifactStore::put_stream`].
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// An object store with conditional writes. Implementations are cheap to share (`Arc<dyn
/// ArtifactStore>`) and safe to use from many tasks and processes at once.
#[async_trait::async_trait]
pub trait ArtifactStore: Send + Sync + std::fmt::Debug {
    /// Reads a small object whole (state, manifests). `None` if it does not exist.
    async fn get(&self, key: &ObjectKey) -> Result<Option<Versioned>, StoreError>;

    /// Size and version of an object, without its bytes. `None` if it does not exist.
    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectInfo>, StoreError>;

    /// Writes a small object whole, if `condition` holds. Returns the new version.
    async fn put(
        &self,
        key: &ObjectKey,
        body: Bytes,
        condition: Condition,
    ) -> Result<ETag, StoreError>;

    /// Writes a large object from a stream, unconditionally, in bounded memory. The object is
    /// not visible (and an older version stays intact) until the stream has ended cleanly; a
    /// stream error aborts the write and is returned as [`StoreError::Io`].
    async fn put_stream(&self, key: &ObjectKey, body: ByteStream)
    -> Result<ObjectInfo, StoreError>;

    /// Up to `max` objects (clamped to `1..=`[`MAX_PAGE`]) whose key starts with `prefix` (a
    /// plain string prefix, `""` for all), sorted by key, after `from` (the `next` of the
    /// previous page; `None` starts at the beginning), with where the next page starts when more
    /// remain. Memory is bounded by `max`, however many keys the prefix holds: walk a large
    /// prefix with [`Listing`], drain one a page per tick with [`PagedDrain`].
    async fn list_page(
        &self,
        prefix: &str,
        from: Option<&ListCursor>,
        max: usize,
    ) -> Result<ListPage, StoreError>;

    /// Every object whose key starts with `prefix`, sorted by key, collected in memory: a
    /// convenience for prefixes that stay small (a task's files, one incident's progress
    /// records). Anything that grows with the deployment is read with [`Listing`] or
    /// [`ArtifactStore::list_page`] instead.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut out = Vec::new();
        let mut from = None;
        loop {
            let page = self.list_page(prefix, from.as_ref(), DEFAULT_PAGE).await?;
            out.extend(page.objects);
            match page.next {
                Some(next) => from = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// Deletes an object if `condition` holds. Deleting a missing object with
    /// [`Condition::Always`] or [`Condition::IfAbsent`] succeeds (idempotent); with `IfMatch` it is
    /// [`StoreError::ConditionFailed`].
    async fn delete(&self, key: &ObjectKey, condition: Condition) -> Result<(), StoreError>;

    /// Where people can find the object (a path or a URL), never with a SAS or any secret.
    fn link(&self, key: &ObjectKey) -> Option<String>;

    /// How Batch may write files for `prefix` into this store, for `lifetime` (clamped to
    /// [`MIN_UPLOAD_LIFETIME`]..=[`MAX_UPLOAD_LIFETIME`]): see [`UploadTarget`]. A store that
    /// cannot give a write-only way in says so.
    fn upload_target(
        &self,
        prefix: &ObjectKey,
        lifetime: std::time::Duration,
    ) -> Result<UploadTarget, StoreError> {
        let _ = (prefix, lifetime);
        Ok(UploadTarget::Unsupported {
            reason: "this store cannot receive uploads from Batch".to_owned(),
        })
    }
}
