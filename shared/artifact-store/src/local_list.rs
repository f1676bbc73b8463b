//! Listing the local directory store: whole (`list`, for small prefixes) and by page.
//!
//! Keys sort as strings, and a directory's keys all start with its name and `/`, so walking a
//! directory's entries ordered by `name` (a file) or `name/` (a directory) and descending into
//! each directory in turn visits the keys in exactly the string order Blob Storage lists them in.
//!
//! What a page bounds: memory. A directory cannot be read in name order, so each directory on a
//! page's way is read in one pass that keeps only the smallest entries after the cursor, in a
//! heap of at most the room left in the page (read again, from the last entry taken, when the
//! page outgrows what one pass kept). A page of `max` keys therefore holds at most `max + 1`
//! names per directory level, however many entries a directory has. What it does not bound:
//! time. Each page reads every entry of the directories it passes through, so walking a
//! directory of `n` entries in pages of `max` reads about `n² / max` entries: a store with
//! millions of keys in one directory belongs in Blob Storage.

use std::collections::BinaryHeap;
use std::fs;
use std::path::Path;

use crate::key::RESERVED;
use crate::local::etag_of;
use crate::{ObjectInfo, ObjectKey, StoreError};

/// The directory a prefix names (its part before the last `/`), if it can hold keys at all.
pub(crate) fn start_dir(prefix: &str) -> Option<&str> {
    let (dir_rel, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
    (dir_rel.is_empty() || ObjectKey::new(dir_rel).is_ok()).then_some(dir_rel)
}

/// Every object under `prefix` below `dir` (the directory of key prefix `rel`), unsorted.
pub(crate) fn walk(
    dir: &Path,
    rel: &str,
    prefix: &str,
    out: &mut Vec<ObjectInfo>,
) -> Result<(), StoreError> {
    let Some(entries) = read_dir(dir, rel)? else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(rel, e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if rel.is_empty() && name == RESERVED {
            continue;
        }
        let key = child_key(rel, &name);
        // Prune directories that cannot contain a match.
        if !(key.starts_with(prefix) || prefix.starts_with(&key)) {
            continue;
        }
        let file_type = entry.file_type().map_err(|e| StoreError::io(&key, e))?;
        if file_type.is_dir() {
            walk(&entry.path(), &key, prefix, out)?;
        } else if file_type.is_file() && key.starts_with(prefix) {
            out.extend(object(&entry.path(), key)?);
        }
    }
    Ok(())
}

/// Up to `max` objects under `prefix` after the key `after`, sorted, and whether more remain
/// (looked up by reading one key ahead). `root` is the store's root, `dir_rel` from
/// [`start_dir`].
pub(crate) fn page(
    root: &Path,
    dir_rel: &str,
    prefix: &str,
    after: Option<&str>,
    max: usize,
) -> Result<(Vec<ObjectInfo>, bool), StoreError> {
    let mut dir = root.to_path_buf();
    if !dir_rel.is_empty() {
        dir.extend(dir_rel.split('/'));
    }
    let mut pager = Pager {
        prefix,
        after,
        want: max + 1,
        out: Vec::with_capacity(max + 1),
    };
    pager.visit(&dir, dir_rel)?;
    let more = pager.out.len() > max;
    pager.out.truncate(max);
    Ok((pager.out, more))
}

/// A directory entry in key order: a directory's `order` ends with `/`.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    order: String,
    is_dir: bool,
}

impl Entry {
    fn key(&self) -> &str {
        self.order.strip_suffix('/').unwrap_or(&self.order)
    }

    fn name(&self) -> &str {
        let key = self.key();
        key.rsplit_once('/').map_or(key, |(_, name)| name)
    }
}

struct Pager<'a> {
    prefix: &'a str,
    after: Option<&'a str>,
    /// One more than the page, to know whether more remain.
    want: usize,
    out: Vec<ObjectInfo>,
}

impl Pager<'_> {
    fn visit(&mut self, dir: &Path, rel: &str) -> Result<(), StoreError> {
        let mut floor: Option<String> = None;
        loop {
            let room = self.want.saturating_sub(self.out.len());
            if room == 0 {
                return Ok(());
            }
            let (entries, cut) = self.smallest(dir, rel, floor.as_deref(), room)?;
            for entry in &entries {
                if self.out.len() >= self.want {
                    return Ok(());
                }
                let path = dir.join(entry.name());
                if entry.is_dir {
                    self.visit(&path, entry.key())?;
                } else {
                    self.out.extend(object(&path, entry.key().to_owned())?);
                }
            }
            if !cut {
                return Ok(());
            }
            floor = entries.into_iter().last().map(|e| e.order);
        }
    }

    /// The `room` smallest entries of `dir` that may hold keys of the page (above `floor`), and
    /// whether some were left out.
    fn smallest(
        &self,
        dir: &Path,
        rel: &str,
        floor: Option<&str>,
        room: usize,
    ) -> Result<(Vec<Entry>, bool), StoreError> {
        let Some(entries) = read_dir(dir, rel)? else {
            return Ok((Vec::new(), false));
        };
        let mut heap = BinaryHeap::with_capacity(room + 1);
        let mut cut = false;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(rel, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if rel.is_empty() && name == RESERVED {
                continue;
            }
            let file_type = entry.file_type().map_err(|e| StoreError::io(rel, e))?;
            let is_dir = file_type.is_dir();
            if !is_dir && !file_type.is_file() {
                continue;
            }
            let mut order = child_key(rel, &name);
            if is_dir {
                order.push('/');
            }
            if !self.wanted(&order, is_dir) || floor.is_some_and(|floor| *order <= *floor) {
                continue;
            }
            heap.push(Entry { order, is_dir });
            if heap.len() > room {
                heap.pop();
                cut = true;
            }
        }
        Ok((heap.into_sorted_vec(), cut))
    }

    /// Whether an entry can be or hold a key under the prefix and after the cursor.
    fn wanted(&self, order: &str, is_dir: bool) -> bool {
        if is_dir {
            let matches = order.starts_with(self.prefix) || self.prefix.starts_with(order);
            // Every key below sorts after `order`; the cursor may also be inside.
            matches
                && self
                    .after
                    .is_none_or(|after| order > after || after.starts_with(order))
        } else {
            order.starts_with(self.prefix) && self.after.is_none_or(|after| order > after)
        }
    }
}

fn child_key(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_owned()
    } else {
        format!("{rel}/{name}")
    }
}

/// A directory's entries; `None` when it does not exist (or is a file): no keys there.
fn read_dir(dir: &Path, rel: &str) -> Result<Option<fs::ReadDir>, StoreError> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(Some(entries)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(StoreError::io(rel, e)),
    }
}

/// The object a file holds, `None` when it went meanwhile or its name is not a key.
fn object(path: &Path, key: String) -> Result<Option<ObjectInfo>, StoreError> {
    let Ok(object_key) = ObjectKey::new(key) else {
        return Ok(None);
    };
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(Some(ObjectInfo {
            key: object_key,
            size: meta.len(),
            etag: etag_of(&meta),
        })),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(object_key.as_str(), e)),
    }
}
