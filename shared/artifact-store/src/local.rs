//! The local-directory backend: one file per key under a root directory.
//!
//! Atomicity without a server:
//! - every write goes to a fresh temp file under `<root>/.artifact-store/tmp/` first, so a reader
//!   never sees a half-written object;
//! - `IfAbsent` publishes with `hard_link(temp, dest)`, which fails if `dest` exists (the
//!   file-system equivalent of `O_EXCL`), so exactly one creator wins, across processes too;
//! - `Always`, `IfMatch` and deletes take an exclusive lock on one of 4,096 files
//!   `<root>/.artifact-store/locks/<first hex digits of sha256(key)>` (`std::fs::File::lock`, an
//!   OS advisory lock shared by all processes), check the condition and `rename` the temp file
//!   over the destination. Keys that share a stripe wait for each other for a stat and a
//!   rename; in exchange the lock files are created once and stay bounded however many objects
//!   the store holds (one lock file per key was an extra inode for every object written);
//! - the ETag is derived from the file's metadata (inode, size, modification time in
//!   nanoseconds; not ctime, which changes when the temp link is removed); every publish creates
//!   a new inode with a new mtime, so it changes on every write.
//!
//! Durability, by group commit. A temp file's content must be on disk before it is published,
//! so that a crash leaves either the whole object or none (never a name pointing at a
//! half-flushed file). Doing that with one `fsync` per file is what small objects cost most: a
//! burst of writers each paid a journal commit. Instead, on Linux, writers share a coalescing
//! barrier ([`SyncBarrier`]): each writes its temp file without syncing, then waits until a
//! `syncfs` of the store's file system *that started after its write finished* has completed,
//! and only then publishes. One waiting writer (the leader) runs the `syncfs` for everyone
//! waiting; the others wait for it, and writers that arrive while it runs are covered by the
//! next one. A failed `syncfs` fails every writer it was to cover, and, because a writeback error
//! on one file may be reported to whichever sync runs next, every writer that was writing when
//! it was reported: such a put returns an error and publishes nothing. (Linux reports writeback
//! errors through `syncfs` since 5.8.) Elsewhere, each file is `sync_all`ed as before.
//!
//! The trade-off: `syncfs` flushes everything dirty on the whole file system, not only the
//! store's files, so a store that shares its file system with heavy unrelated writes waits for
//! them too. For the store's own bursts it is much cheaper (on a test VM, about 110 µs of CPU per
//! small file against 880 µs for an `fsync` each).
//!
//! The published *name* is not made durable before a put returns: after a crash, an object
//! written just before may be missing (as if the put never happened), never partial. This is the
//! same guarantee as before group commit (the rename or link was never followed by a directory
//! `fsync`); a caller that needs the name itself durable would need a second barrier after the
//! publish.
//!
//! A writer killed mid-write leaves its temp file behind; [`LocalDirStore::new`] removes those
//! older than an hour (younger ones may belong to a live process sharing the directory).

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::key::RESERVED;
use crate::{
    ArtifactStore, ByteStream, Condition, ETag, ListCursor, ListPage, ObjectInfo, ObjectKey,
    StoreError, Versioned, local_list,
};

/// Hex digits of a key's hash that name its lock file: a store uses at most 16³ = 4,096.
const LOCK_STRIPE_DIGITS: usize = 3;

/// `put_stream` buffers a body in memory while it is smaller than this, and then writes it, makes
/// it durable and publishes it in one blocking call, like `put`. A larger body is written in
/// pieces of about this size as it arrives, so memory never holds more than this plus one chunk
/// of the stream. 256 KiB covers the small logs and records of a burst with few hand-offs.
const SMALL_BODY: usize = 256 * 1024;

/// Temp files older than this are removed when a store is opened: they were left by a writer
/// that was killed. Younger ones may belong to another process writing now. (A stream that
/// stalls this long without a write loses its temp file and fails when it publishes.)
const STALE_TEMP: Duration = Duration::from_secs(60 * 60);

/// Objects as files under a root directory. Safe for many tasks and processes at once.
#[derive(Clone, Debug)]
pub struct LocalDirStore {
    root: PathBuf,
    /// Shared by clones, so they group their syncs.
    durability: Arc<Durability>,
}

impl LocalDirStore {
    /// Opens (and creates if needed) a store rooted at `root`. Removes temp files that writers
    /// killed over an hour ago left behind.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root: PathBuf = root.into();
        let shown = root.display().to_string();
        for dir in [
            root.join(RESERVED).join("tmp"),
            root.join(RESERVED).join("locks"),
        ] {
            fs::create_dir_all(&dir).map_err(|e| StoreError::io(&shown, e))?;
        }
        // Absolute, so links stay meaningful whatever the current directory is later.
        let root = fs::canonicalize(&root).map_err(|e| StoreError::io(&shown, e))?;
        let tmp = root.join(RESERVED).join("tmp");
        remove_stale_temps(&tmp, SystemTime::now());
        let durability = Arc::new(Durability::open(&tmp).map_err(|e| StoreError::io(&shown, e))?);
        Ok(LocalDirStore { root, durability })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file that holds `key`.
    pub fn path_of(&self, key: &ObjectKey) -> PathBuf {
        let mut path = self.root.clone();
        path.extend(key.segments());
        path
    }

    fn temp_path(&self) -> PathBuf {
        self.root
            .join(RESERVED)
            .join("tmp")
            .join(uuid::Uuid::new_v4().simple().to_string())
    }

    fn lock_path(&self, key: &ObjectKey) -> PathBuf {
        let digest = hex::encode(Sha256::digest(key.as_str().as_bytes()));
        self.root
            .join(RESERVED)
            .join("locks")
            .join(&digest[..LOCK_STRIPE_DIGITS])
    }
}

/// Removes the temp files in `tmp` last modified more than [`STALE_TEMP`] before `now`. Best
/// effort: another process may remove them first, and a failure only leaves litter.
fn remove_stale_temps(tmp: &Path, now: SystemTime) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let stale = meta.is_file()
            && meta
                .modified()
                .ok()
                .and_then(|modified| now.duration_since(modified).ok())
                .is_some_and(|age| age > STALE_TEMP);
        if stale {
            match fs::remove_file(entry.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(
                    path = %entry.path().display(),
                    error = %e,
                    "could not remove a stale temp file"
                ),
            }
        }
    }
}

/// How a written temp file is made durable before it is published.
enum Durability {
    /// Wait for a shared `syncfs` of the store's file system (Linux).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Group(SyncBarrier),
    /// `sync_all` each file (elsewhere).
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    PerFile,
}

impl std::fmt::Debug for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Durability::Group(_) => "Group(syncfs)",
            Durability::PerFile => "PerFile(sync_all)",
        })
    }
}

impl Durability {
    /// Group commit with `syncfs` on `tmp`'s file system, where every object is written.
    #[cfg(target_os = "linux")]
    fn open(tmp: &Path) -> std::io::Result<Self> {
        let dir = File::open(tmp)?;
        Ok(Durability::Group(SyncBarrier::new(Box::new(move || {
            rustix::fs::syncfs(&dir).map_err(std::io::Error::from)
        }))))
    }

    #[cfg(not(target_os = "linux"))]
    fn open(_tmp: &Path) -> std::io::Result<Self> {
        Ok(Durability::PerFile)
    }

    /// Taken before a writer writes its first byte.
    fn ticket(&self) -> Ticket {
        match self {
            Durability::Group(barrier) => barrier.ticket(),
            Durability::PerFile => Ticket { failures: 0 },
        }
    }

    /// Returns once everything written to `file` is on disk. Blocks.
    fn make_durable(&self, file: &File, ticket: Ticket) -> std::io::Result<()> {
        match self {
            Durability::Group(barrier) => barrier.wait(ticket),
            Durability::PerFile => file.sync_all(),
        }
    }
}

/// What a sync barrier runs: a `syncfs` of the store's file system (a counter in tests).
type SyncFn = Box<dyn Fn() -> std::io::Result<()> + Send + Sync>;

/// A coalescing durability barrier (group commit), for blocking threads.
///
/// Syncs are numbered (generations). A writer that finished writing waits for generation
/// `started + 1`, the first sync to start after it registered; a sync already running may have
/// started before the writer's last write and does not cover it. Whoever finds no sync running
/// and its generation not started runs it (the leader) for everyone registered so far; the
/// others wait on the condition variable. Writers that register while a sync runs are covered by
/// the next one, which one of them leads when it finishes.
///
/// Failure: a writer fails if any sync failed after it took its [`Ticket`] (before its first
/// write), not only the one that covers it. A writeback error on its data is reported by the
/// first `syncfs` after the error, which may be a sync that another writer's registration
/// started; so failing only the covered waiters could return success for lost data. A failed
/// generation still counts as finished (its waiters must not wait for a success that will not
/// come), but it never satisfies anyone: later writers are covered by later syncs.
struct SyncBarrier {
    state: Mutex<BarrierState>,
    finished: Condvar,
    sync: SyncFn,
}

#[derive(Debug, Default)]
struct BarrierState {
    /// Syncs started (the running one included).
    started: u64,
    /// The last generation that has finished, successfully or not.
    finished: u64,
    /// Whether generation `started` is running now.
    running: bool,
    /// How many syncs have failed, and how the last one did.
    failures: u64,
    last_failure: Option<(std::io::ErrorKind, String)>,
}

/// A writer's place in the barrier's history, taken before it writes.
#[derive(Clone, Copy, Debug)]
struct Ticket {
    failures: u64,
}

// Only the Linux store builds one outside tests.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
impl SyncBarrier {
    fn new(sync: SyncFn) -> Self {
        SyncBarrier {
            state: Mutex::new(BarrierState::default()),
            finished: Condvar::new(),
            sync,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BarrierState> {
        // The state is consistent between statements (the sync runs unlocked), so a panic in
        // another writer does not make it unusable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ticket(&self) -> Ticket {
        Ticket {
            failures: self.lock().failures,
        }
    }

    /// Blocks until a sync that started after this call has succeeded. Fails if that sync, or
    /// any other since `ticket` was taken, failed.
    fn wait(&self, ticket: Ticket) -> std::io::Result<()> {
        let mut state = self.lock();
        let target = state.started + 1;
        loop {
            if state.failures != ticket.failures {
                let (kind, message) = state
                    .last_failure
                    .clone()
                    .unwrap_or((std::io::ErrorKind::Other, "unknown".to_owned()));
                return Err(std::io::Error::new(
                    kind,
                    format!("file system sync failed: {message}"),
                ));
            }
            if state.finished >= target {
                return Ok(());
            }
            if state.running {
                state = self
                    .finished
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // No sync runs and ours has not started (generations run one at a time, in order).
            debug_assert_eq!(state.started + 1, target);
            state.started = target;
            state.running = true;
            drop(state);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.sync)()))
                .unwrap_or_else(|_| Err(std::io::Error::other("the sync panicked")));
            state = self.lock();
            state.running = false;
            state.finished = target;
            if let Err(e) = result {
                state.failures += 1;
                state.last_failure = Some((e.kind(), e.to_string()));
            }
            self.finished.notify_all();
        }
    }

    #[cfg(test)]
    fn counts(&self) -> (u64, u64) {
        let state = self.lock();
        (state.started, state.failures)
    }
}

/// A temp file being written; removed when dropped unless [`TempFile::into_path`] took it over.
struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    fn create(store: &LocalDirStore, key: &ObjectKey) -> Result<Self, StoreError> {
        let path = store.temp_path();
        let file = File::create_new(&path).map_err(|e| StoreError::io(key.as_str(), e))?;
        Ok(TempFile {
            path,
            file: Some(file),
        })
    }

    fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("open until into_path")
    }

    fn write(&mut self, chunks: &[Bytes], key: &ObjectKey) -> Result<(), StoreError> {
        let file = self.file();
        for chunk in chunks {
            file.write_all(chunk)
                .map_err(|e| StoreError::io(key.as_str(), e))?;
        }
        Ok(())
    }

    /// Closes the file and hands its path (and its removal) to the caller.
    fn into_path(mut self) -> PathBuf {
        self.file = None;
        std::mem::take(&mut self.path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // Also runs when a `put_stream` is cancelled; one unlink, cheap even on a runtime thread.
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Writes the rest of an object to its temp file, makes it durable and publishes it, in one
/// blocking call. `ticket` was taken before the temp file's first write.
fn finish(
    store: &LocalDirStore,
    key: &ObjectKey,
    mut temp: TempFile,
    rest: &[Bytes],
    ticket: Ticket,
    condition: &Condition,
) -> Result<fs::Metadata, StoreError> {
    temp.write(rest, key)?;
    store
        .durability
        .make_durable(temp.file(), ticket)
        .map_err(|e| StoreError::io(key.as_str(), e))?;
    let path = temp.into_path();
    publish(store, key, &path, condition)
}

/// The version of a file, from its metadata.
pub(crate) fn etag_of(meta: &fs::Metadata) -> ETag {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        ETag(format!(
            "\"{:x}-{:x}-{:x}.{:x}\"",
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec()
        ))
    }
    #[cfg(not(unix))]
    {
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        ETag(format!("\"{:x}-{modified:x}\"", meta.len()))
    }
}

fn stat(path: &Path, key: &ObjectKey) -> Result<Option<fs::Metadata>, StoreError> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(Some(meta)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        // A file where a directory of the key is expected: the key cannot exist.
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Ok(None),
        Err(e) => Err(StoreError::io(key.as_str(), e)),
    }
}

fn create_parent(path: &Path, key: &ObjectKey) -> Result<(), StoreError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| match e.kind() {
            // A directory of the key exists as a file (EEXIST on the last level, ENOTDIR deeper).
            std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::NotADirectory => {
                key_conflict(key, "a directory of the key is an object")
            }
            _ => StoreError::io(key.as_str(), e),
        })?;
    }
    Ok(())
}

fn key_conflict(key: &ObjectKey, reason: &str) -> StoreError {
    StoreError::KeyConflict {
        key: key.to_string(),
        reason: reason.to_owned(),
    }
}

/// Replaces `dest` with `temp`; a `dest` that is a directory (of other objects) is a conflict.
fn replace(temp: &Path, dest: &Path, key: &ObjectKey) -> Result<(), StoreError> {
    fs::rename(temp, dest).map_err(|e| {
        if dest.is_dir() {
            key_conflict(key, "the key is a directory of other objects")
        } else {
            StoreError::io(key.as_str(), e)
        }
    })
}

/// Holds the per-key lock until dropped (closing the file releases it).
struct KeyLock(#[allow(dead_code)] File);

fn lock(store: &LocalDirStore, key: &ObjectKey) -> Result<KeyLock, StoreError> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(store.lock_path(key))
        .map_err(|e| StoreError::io(key.as_str(), e))?;
    file.lock().map_err(|e| StoreError::io(key.as_str(), e))?;
    Ok(KeyLock(file))
}

/// Publishes a complete temp file at `key` if `condition` holds; removes the temp file either way.
fn publish(
    store: &LocalDirStore,
    key: &ObjectKey,
    temp: &Path,
    condition: &Condition,
) -> Result<fs::Metadata, StoreError> {
    let result = publish_inner(store, key, temp, condition);
    // After a hard link or a failure the temp name is still there; after a rename it is not.
    let _ = fs::remove_file(temp);
    result
}

fn publish_inner(
    store: &LocalDirStore,
    key: &ObjectKey,
    temp: &Path,
    condition: &Condition,
) -> Result<fs::Metadata, StoreError> {
    let dest = store.path_of(key);
    create_parent(&dest, key)?;
    match condition {
        Condition::IfAbsent => match fs::hard_link(temp, &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dest.is_dir() => {
                return Err(key_conflict(key, "the key is a directory of other objects"));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::ConditionFailed {
                    key: key.to_string(),
                });
            }
            Err(e) => return Err(StoreError::io(key.as_str(), e)),
        },
        Condition::Always => {
            let _guard = lock(store, key)?;
            replace(temp, &dest, key)?;
        }
        Condition::IfMatch(expected) => {
            let _guard = lock(store, key)?;
            match stat(&dest, key)? {
                Some(meta) if etag_of(&meta) == *expected => {}
                _ => {
                    return Err(StoreError::ConditionFailed {
                        key: key.to_string(),
                    });
                }
            }
            replace(temp, &dest, key)?;
        }
    }
    fs::metadata(&dest).map_err(|e| StoreError::io(key.as_str(), e))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::other(format!("local store worker failed: {e}")))?
}

#[async_trait]
impl ArtifactStore for LocalDirStore {
    async fn get(&self, key: &ObjectKey) -> Result<Option<Versioned>, StoreError> {
        let path = self.path_of(key);
        let key = key.clone();
        blocking(move || {
            let mut file = match File::open(&path) {
                Ok(file) => file,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(StoreError::io(key.as_str(), e)),
            };
            // The open file is one version: writers replace the name, never the content.
            let meta = file
                .metadata()
                .map_err(|e| StoreError::io(key.as_str(), e))?;
            if !meta.is_file() {
                return Ok(None);
            }
            let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
            file.read_to_end(&mut bytes)
                .map_err(|e| StoreError::io(key.as_str(), e))?;
            Ok(Some(Versioned {
                bytes: Bytes::from(bytes),
                etag: etag_of(&meta),
            }))
        })
        .await
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectInfo>, StoreError> {
        let path = self.path_of(key);
        let key = key.clone();
        blocking(move || {
            Ok(stat(&path, &key)?.map(|meta| ObjectInfo {
                size: meta.len(),
                etag: etag_of(&meta),
                key,
            }))
        })
        .await
    }

    async fn put(
        &self,
        key: &ObjectKey,
        body: Bytes,
        condition: Condition,
    ) -> Result<ETag, StoreError> {
        let store = self.clone();
        let key = key.clone();
        blocking(move || {
            let ticket = store.durability.ticket();
            let temp = TempFile::create(&store, &key)?;
            let meta = finish(&store, &key, temp, &[body], ticket, &condition)?;
            Ok(etag_of(&meta))
        })
        .await
    }

    async fn put_stream(
        &self,
        key: &ObjectKey,
        mut body: ByteStream,
    ) -> Result<ObjectInfo, StoreError> {
        // Before the first write: a sync failure from here on may concern this object's data.
        let ticket = self.durability.ticket();
        // The body not written yet: under SMALL_BODY bytes, plus at most one chunk.
        let mut pending: Vec<Bytes> = Vec::new();
        let mut pending_len = 0usize;
        // Created once the body outgrows SMALL_BODY; removed on drop (error or cancellation).
        let mut temp: Option<TempFile> = None;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| StoreError::io(key.as_str(), e))?;
            pending_len += chunk.len();
            pending.push(chunk);
            if pending_len >= SMALL_BODY {
                let store = self.clone();
                let key = key.clone();
                let chunks = std::mem::take(&mut pending);
                pending_len = 0;
                let started = temp.take();
                temp = Some(
                    blocking(move || {
                        let mut temp = match started {
                            Some(temp) => temp,
                            None => TempFile::create(&store, &key)?,
                        };
                        temp.write(&chunks, &key)?;
                        Ok(temp)
                    })
                    .await?,
                );
            }
        }
        // The end: a small body is written, made durable and published in this one hop.
        let store = self.clone();
        let key = key.clone();
        blocking(move || {
            let temp = match temp {
                Some(temp) => temp,
                None => TempFile::create(&store, &key)?,
            };
            let meta = finish(&store, &key, temp, &pending, ticket, &Condition::Always)?;
            Ok(ObjectInfo {
                size: meta.len(),
                etag: etag_of(&meta),
                key,
            })
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        // One walk, sorted at the end: faster than pages for the small prefixes it is for.
        let Some(dir_rel) = local_list::start_dir(prefix) else {
            return Ok(Vec::new());
        };
        let (root, prefix, dir_rel) = (self.root.clone(), prefix.to_owned(), dir_rel.to_owned());
        blocking(move || {
            let mut dir = root;
            if !dir_rel.is_empty() {
                dir.extend(dir_rel.split('/'));
            }
            let mut out = Vec::new();
            local_list::walk(&dir, &dir_rel, &prefix, &mut out)?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    async fn list_page(
        &self,
        prefix: &str,
        from: Option<&ListCursor>,
        max: usize,
    ) -> Result<ListPage, StoreError> {
        // A prefix that is not a safe path cannot match any key.
        let Some(dir_rel) = local_list::start_dir(prefix) else {
            return Ok(ListPage::default());
        };
        let (root, prefix, dir_rel) = (self.root.clone(), prefix.to_owned(), dir_rel.to_owned());
        // The cursor is the last key of the previous page.
        let after = from.map(|c| c.as_str().to_owned());
        let max = max.clamp(1, crate::MAX_PAGE);
        blocking(move || {
            let (objects, more) =
                local_list::page(&root, &dir_rel, &prefix, after.as_deref(), max)?;
            let next = more
                .then(|| objects.last().map(|o| ListCursor::new(o.key.as_str())))
                .flatten();
            Ok(ListPage { objects, next })
        })
        .await
    }

    async fn delete(&self, key: &ObjectKey, condition: Condition) -> Result<(), StoreError> {
        let store = self.clone();
        let key = key.clone();
        blocking(move || {
            let path = store.path_of(&key);
            let _guard = lock(&store, &key)?;
            let current = stat(&path, &key)?;
            match (&condition, current) {
                (Condition::IfMatch(expected), Some(meta)) if etag_of(&meta) == *expected => {}
                (Condition::IfMatch(_), _) => {
                    return Err(StoreError::ConditionFailed {
                        key: key.to_string(),
                    });
                }
                (Condition::IfAbsent, Some(_)) => {
                    return Err(StoreError::ConditionFailed {
                        key: key.to_string(),
                    });
                }
                (_, None) => return Ok(()),
                (Condition::Always, Some(_)) => {}
            }
            match fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(StoreError::io(key.as_str(), e)),
            }
        })
        .await
    }

    fn link(&self, key: &ObjectKey) -> Option<String> {
        Some(self.path_of(key).display().to_string())
    }

    fn upload_target(
        &self,
        prefix: &ObjectKey,
        _lifetime: std::time::Duration,
    ) -> Result<crate::UploadTarget, StoreError> {
        // A staging directory under the reserved directory, so nothing Batch (the emulator)
        // writes is ever a key before the caller copies it in.
        let mut path = self.root.join(RESERVED).join("uploads");
        path.extend(prefix.segments());
        fs::create_dir_all(&path).map_err(|e| StoreError::io(prefix.as_str(), e))?;
        let url = url::Url::from_directory_path(&path)
            .map_err(|()| StoreError::other("the staging directory is not an absolute path"))?;
        Ok(crate::UploadTarget::Directory {
            url: url.to_string(),
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// A barrier whose sync counts its calls, takes `delay`, and fails while `fail` is set.
    fn counting(delay: Duration) -> (Arc<SyncBarrier>, Arc<AtomicU64>, Arc<AtomicBool>) {
        let calls = Arc::new(AtomicU64::new(0));
        let fail = Arc::new(AtomicBool::new(false));
        let barrier = SyncBarrier::new(Box::new({
            let calls = Arc::clone(&calls);
            let fail = Arc::clone(&fail);
            move || {
                calls.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(delay);
                if fail.load(Ordering::SeqCst) {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        "disk on fire",
                    ))
                } else {
                    Ok(())
                }
            }
        }));
        (Arc::new(barrier), calls, fail)
    }

    /// How long a test waits for a writer before calling the barrier wedged: a regression that
    /// leaves writers waiting fails the test instead of hanging the suite.
    const WEDGED: Duration = Duration::from_secs(30);

    /// Runs `f` on its own thread; its result arrives on the receiver (which is disconnected if
    /// `f` panics).
    fn spawn_with_result<T: Send + 'static>(
        f: impl FnOnce() -> T + Send + 'static,
    ) -> mpsc::Receiver<T> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx
    }

    /// The result of a writer started with [`spawn_with_result`], or a failure after [`WEDGED`].
    fn result_of<T>(writer: &mpsc::Receiver<T>) -> T {
        writer
            .recv_timeout(WEDGED)
            .expect("a writer is still waiting (or panicked): the barrier is wedged")
    }

    /// `n` writers register at about the same time; their results, in no particular order.
    fn waiters(barrier: &Arc<SyncBarrier>, n: usize) -> Vec<std::io::Result<()>> {
        let start = Arc::new(std::sync::Barrier::new(n));
        let writers: Vec<_> = (0..n)
            .map(|_| {
                let barrier = Arc::clone(barrier);
                let start = Arc::clone(&start);
                spawn_with_result(move || {
                    let ticket = barrier.ticket();
                    start.wait();
                    barrier.wait(ticket)
                })
            })
            .collect();
        writers.iter().map(result_of).collect()
    }

    #[test]
    fn concurrent_waiters_share_few_syncs() {
        let (barrier, calls, _) = counting(Duration::from_millis(30));
        let results = waiters(&barrier, 32);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let calls = calls.load(Ordering::SeqCst);
        // One sync for whoever came first, one for everyone who arrived while it ran, and a few
        // for stragglers on a busy machine; never one each.
        assert!((1..=8).contains(&calls), "{calls} syncs for 32 writers");
        assert_eq!(barrier.counts(), (calls, 0));
        // Alone, a writer still gets its own sync.
        barrier.wait(barrier.ticket()).unwrap();
        assert_eq!(barrier.counts().0, calls + 1);
    }

    #[test]
    fn a_sync_that_started_before_a_writer_registered_does_not_cover_it() {
        let calls = Arc::new(AtomicU64::new(0));
        let (entered_tx, entered_rx) = mpsc::channel::<()>();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let barrier = Arc::new(SyncBarrier::new(Box::new({
            let calls = Arc::clone(&calls);
            let entered_tx = Mutex::new(entered_tx);
            move || {
                // The first sync blocks until the test lets it go.
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    entered_tx.lock().unwrap().send(()).unwrap();
                    release_rx.lock().unwrap().recv().unwrap();
                }
                Ok(())
            }
        })));
        let first = spawn_with_result({
            let barrier = Arc::clone(&barrier);
            move || barrier.wait(barrier.ticket())
        });
        entered_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the first writer leads sync 1");
        // Sync 1 is running: a writer registering now needs sync 2.
        let (done_tx, done_rx) = mpsc::channel();
        let second = spawn_with_result({
            let barrier = Arc::clone(&barrier);
            move || {
                let result = barrier.wait(barrier.ticket());
                done_tx.send(calls_now(&barrier)).unwrap();
                result
            }
        });
        // It is still waiting while sync 1 runs.
        assert!(done_rx.recv_timeout(Duration::from_millis(100)).is_err());
        release_tx.send(()).unwrap();
        result_of(&first).unwrap();
        result_of(&second).unwrap();
        // It returned only after a second sync.
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(30)).unwrap(), 2);
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        fn calls_now(barrier: &SyncBarrier) -> u64 {
            barrier.counts().0
        }
    }

    #[test]
    fn a_failed_sync_fails_every_covered_writer_and_a_later_one_succeeds() {
        let (barrier, calls, fail) = counting(Duration::from_millis(20));
        fail.store(true, Ordering::SeqCst);
        let results = waiters(&barrier, 16);
        for result in &results {
            let error = result.as_ref().unwrap_err();
            assert_eq!(error.kind(), std::io::ErrorKind::PermissionDenied);
            assert!(error.to_string().contains("disk on fire"), "{error}");
        }
        let failed = calls.load(Ordering::SeqCst);
        assert!(failed >= 1);
        // Nothing was marked durable: the failures are counted, none succeeded.
        assert_eq!(barrier.counts(), (failed, failed));

        fail.store(false, Ordering::SeqCst);
        let results = waiters(&barrier, 16);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert!(calls.load(Ordering::SeqCst) > failed);
    }

    #[test]
    fn a_writer_writing_when_a_sync_failed_fails_even_if_its_own_sync_succeeds() {
        let (barrier, _, fail) = counting(Duration::ZERO);
        // Writer A starts writing...
        let a = barrier.ticket();
        // ...while another writer's sync reports an error (possibly about A's pages).
        fail.store(true, Ordering::SeqCst);
        assert!(barrier.wait(barrier.ticket()).is_err());
        fail.store(false, Ordering::SeqCst);
        let error = barrier.wait(a).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::PermissionDenied);
        // A writer that starts after the failure is fine.
        barrier.wait(barrier.ticket()).unwrap();
    }

    #[test]
    fn a_panicking_sync_is_an_error_and_does_not_wedge_the_barrier() {
        let calls = Arc::new(AtomicU64::new(0));
        let barrier = SyncBarrier::new(Box::new({
            let calls = Arc::clone(&calls);
            move || {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("sync bug");
                }
                Ok(())
            }
        }));
        let error = barrier.wait(barrier.ticket()).unwrap_err();
        assert!(error.to_string().contains("panicked"), "{error}");
        barrier.wait(barrier.ticket()).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn stale_temp_files_are_removed_young_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        for name in ["old", "young"] {
            fs::write(dir.path().join(name), b"x").unwrap();
        }
        fs::create_dir(dir.path().join("a-directory")).unwrap();
        // An hour and a minute from now, "old" (written just now) is stale; in 59 minutes it is not.
        remove_stale_temps(dir.path(), now + Duration::from_secs(59 * 60));
        assert!(dir.path().join("old").exists());
        File::options()
            .write(true)
            .open(dir.path().join("young"))
            .unwrap()
            .set_modified(now + Duration::from_secs(30 * 60))
            .unwrap();
        remove_stale_temps(dir.path(), now + Duration::from_secs(61 * 60));
        assert!(!dir.path().join("old").exists());
        assert!(dir.path().join("young").exists());
        assert!(dir.path().join("a-directory").is_dir());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_store_groups_with_syncfs_on_linux() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::new(dir.path()).unwrap();
        assert!(matches!(*store.durability, Durability::Group(_)));
        // Clones share one barrier.
        assert!(Arc::ptr_eq(&store.durability, &store.clone().durability));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lock_files_are_striped_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::new(dir.path()).unwrap();
        let keys: Vec<ObjectKey> = (0..300)
            .map(|i| ObjectKey::new(format!("acct/job/t{i}/attempt-0/stderr.txt")).unwrap())
            .collect();
        for key in &keys {
            store
                .put(key, Bytes::from_static(b"x"), Condition::Always)
                .await
                .unwrap();
        }
        let locks: Vec<String> = fs::read_dir(dir.path().join(RESERVED).join("locks"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!locks.is_empty() && locks.len() < keys.len());
        assert!(
            locks.iter().all(|name| name.len() == LOCK_STRIPE_DIGITS
                && name.bytes().all(|b| b.is_ascii_hexdigit())),
            "{locks:?}"
        );
        // Two keys on one stripe still both publish, and a conditional write still checks.
        let (a, b) = keys
            .iter()
            .enumerate()
            .find_map(|(i, a)| {
                keys[i + 1..]
                    .iter()
                    .find(|b| store.lock_path(a) == store.lock_path(b))
                    .map(|b| (a, b))
            })
            .expect("300 keys over 4,096 stripes share one");
        let etag = store.head(a).await.unwrap().unwrap().etag;
        store
            .put(
                b,
                Bytes::from_static(b"y"),
                Condition::IfMatch(etag.clone()),
            )
            .await
            .expect_err("another key's ETag does not match");
        store
            .put(a, Bytes::from_static(b"z"), Condition::IfMatch(etag))
            .await
            .unwrap();
        assert_eq!(&store.get(a).await.unwrap().unwrap().bytes[..], b"z");
    }
}
