//! The local-directory backend: one file per key under a root directory.
//!
//! Atomicity without a server:
//! - every write goes to a fresh temp file under `<root>/.artifact-store/tmp/` first, so a reader
//!   never sees a half-written object;
//! - `IfAbsent` publishes with `hard_link(temp, dest)`, which fails if `dest` exists (the
//!   file-system equivalent of `O_EXCL`), so exactly one creator wins, across processes too;
//! - `Always`, `IfMatch` and deletes take an exclusive lock on `<root>/.artifact-store/locks/
//!   <sha256(key)>` (`std::fs::File::lock`, an OS advisory lock shared by all processes), check
//!   the condition and `rename` the temp file over the destination;
//! - the ETag is derived from the file's metadata (inode, size, modification time in
//!   nanoseconds; not ctime, which changes when the temp link is removed); every publish creates a new inode with a new mtime, so it changes on every
//!   write.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::key::RESERVED;
use crate::{
    ArtifactStore, ByteStream, Condition, ETag, ObjectInfo, ObjectKey, StoreError, Versioned,
};

/// Objects as files under a root directory. Safe for many tasks and processes at once.
#[derive(Clone, Debug)]
pub struct LocalDirStore {
    root: PathBuf,
}

impl LocalDirStore {
    /// Opens (and creates if needed) a store rooted at `root`.
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
        Ok(LocalDirStore { root })
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
        let digest = Sha256::digest(key.as_str().as_bytes());
        self.root
            .join(RESERVED)
            .join("locks")
            .join(hex::encode(digest))
    }
}

/// The version of a file, from its metadata.
fn etag_of(meta: &fs::Metadata) -> ETag {
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
        fs::create_dir_all(parent).map_err(|e| StoreError::io(key.as_str(), e))?;
    }
    Ok(())
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
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::ConditionFailed {
                    key: key.to_string(),
                });
            }
            Err(e) => return Err(StoreError::io(key.as_str(), e)),
        },
        Condition::Always => {
            let _guard = lock(store, key)?;
            fs::rename(temp, &dest).map_err(|e| StoreError::io(key.as_str(), e))?;
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
            fs::rename(temp, &dest).map_err(|e| StoreError::io(key.as_str(), e))?;
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

fn walk(dir: &Path, rel: &str, prefix: &str, out: &mut Vec<ObjectInfo>) -> Result<(), StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(());
        }
        Err(e) => return Err(StoreError::io(rel, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(rel, e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if rel.is_empty() && name == RESERVED {
            continue;
        }
        let key = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        // Prune directories that cannot contain a match.
        if !(key.starts_with(prefix) || prefix.starts_with(&key)) {
            continue;
        }
        let file_type = entry.file_type().map_err(|e| StoreError::io(&key, e))?;
        if file_type.is_dir() {
            walk(&entry.path(), &key, prefix, out)?;
        } else if file_type.is_file() && key.starts_with(prefix) {
            let Ok(object_key) = ObjectKey::new(key.clone()) else {
                continue;
            };
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                // Replaced or deleted meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(&key, e)),
            };
            out.push(ObjectInfo {
                key: object_key,
                size: meta.len(),
                etag: etag_of(&meta),
            });
        }
    }
    Ok(())
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
            let temp = store.temp_path();
            let written = (|| {
                let mut file = File::create_new(&temp)?;
                file.write_all(&body)?;
                file.sync_all()
            })();
            if let Err(e) = written {
                let _ = fs::remove_file(&temp);
                return Err(StoreError::io(key.as_str(), e));
            }
            Ok(etag_of(&publish(&store, &key, &temp, &condition)?))
        })
        .await
    }

    async fn put_stream(
        &self,
        key: &ObjectKey,
        mut body: ByteStream,
    ) -> Result<ObjectInfo, StoreError> {
        let temp = self.temp_path();
        let written: std::io::Result<()> = async {
            let mut file = tokio::fs::File::create_new(&temp).await?;
            while let Some(chunk) = body.next().await {
                file.write_all(&chunk?).await?;
            }
            file.sync_all().await
        }
        .await;
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(StoreError::io(key.as_str(), e));
        }
        let store = self.clone();
        let key = key.clone();
        blocking(move || {
            let meta = publish(&store, &key, &temp, &Condition::Always)?;
            Ok(ObjectInfo {
                size: meta.len(),
                etag: etag_of(&meta),
                key,
            })
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        // Start at the deepest directory the prefix names; a prefix that is not a safe path
        // cannot match any key.
        let (dir_rel, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        if !dir_rel.is_empty() && ObjectKey::new(dir_rel).is_err() {
            return Ok(Vec::new());
        }
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        let dir_rel = dir_rel.to_owned();
        blocking(move || {
            let mut dir = root.clone();
            if !dir_rel.is_empty() {
                dir.extend(dir_rel.split('/'));
            }
            let mut out = Vec::new();
            walk(&dir, &dir_rel, &prefix, &mut out)?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
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
}
