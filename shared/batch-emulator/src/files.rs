//! Node file systems: file contents (inline or generated), directory listings and byte ranges.
//!
//! Every node has one flat map from normalized path (`/` separators, no leading slash) to file.
//! Task files live there under the task's `taskRootDirectory`, prep/release files under theirs,
//! so the task file API and the node file API see the same bytes. Generated content is computed
//! from its offset, so a 2 GiB `stdout.txt` costs nothing until someone reads it, and then only
//! a 64 KiB chunk at a time.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use futures::Stream;
use time::OffsetDateTime;

/// Size of the chunks a file body is streamed in.
const CHUNK: u64 = 64 * 1024;

/// Length of one generated line, newline included.
const LINE: u64 = 64;

/// Turns a request or scenario path into the map key: `\` becomes `/`, empty segments go.
/// Returns `None` for `.`/`..` segments or an empty path, which never name a file.
pub(crate) fn normalize_path(path: &str) -> Option<String> {
    let mut segments = Vec::new();
    for segment in path.split(['/', '\\']) {
        match segment {
            "" => {}
            "." | ".." => return None,
            other => segments.push(other),
        }
    }
    if segments.is_empty() {
        None
    } else {
        Some(segments.join("/"))
    }
}

/// Where a file's bytes come from.
#[derive(Debug, Clone)]
pub(crate) enum Content {
    /// Bytes held in memory.
    Inline(Bytes),
    /// Deterministic text lines computed from the offset, then `tail`.
    Generated {
        /// Total size, tail included.
        size: u64,
        /// Seed of the line generator.
        seed: u64,
        /// Bytes the file ends with.
        tail: Bytes,
    },
}

impl Content {
    /// Size in bytes.
    pub(crate) fn len(&self) -> u64 {
        match self {
            Content::Inline(bytes) => bytes.len() as u64,
            Content::Generated { size, .. } => *size,
        }
    }

    /// The bytes in `start..end` as a stream of chunks, computed lazily.
    pub(crate) fn stream(
        &self,
        start: u64,
        end: u64,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let content = self.clone();
        futures::stream::unfold(start, move |pos| {
            let content = content.clone();
            async move {
                if pos >= end {
                    return None;
                }
                let next = end.min(pos + CHUNK);
                Some((Ok(content.slice(pos, next)), next))
            }
        })
    }

    /// The bytes in `start..end` (which must be at most one chunk).
    fn slice(&self, start: u64, end: u64) -> Bytes {
        match self {
            Content::Inline(bytes) => {
                let s = usize::try_from(start)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let e = usize::try_from(end).unwrap_or(usize::MAX).min(bytes.len());
                bytes.slice(s..e.max(s))
            }
            Content::Generated { size, seed, tail } => {
                let prefix = size - tail.len() as u64;
                let mut out = Vec::with_capacity(usize::try_from(end - start).unwrap_or(0));
                let mut pos = start;
                while pos < end && pos < prefix {
                    let line = generated_line(*seed, pos / LINE);
                    let offset = (pos % LINE) as usize;
                    let take = (LINE - pos % LINE).min(end - pos).min(prefix - pos) as usize;
                    out.extend_from_slice(&line[offset..offset + take]);
                    pos += take as u64;
                }
                if pos < end {
                    let from = usize::try_from(pos - prefix).unwrap_or(0);
                    let to = usize::try_from(end - prefix).unwrap_or(0).min(tail.len());
                    out.extend_from_slice(&tail[from.min(to)..to]);
                }
                Bytes::from(out)
            }
        }
    }
}

/// One generated 64-byte line: a line number and pseudo-random lowercase words.
fn generated_line(seed: u64, line: u64) -> [u8; LINE as usize] {
    let mut buf = [b' '; LINE as usize];
    let mut number = line % 1_000_000_000_000;
    for slot in buf[..12].iter_mut().rev() {
        *slot = b'0' + (number % 10) as u8;
        number /= 10;
    }
    let mut state = seed ^ line.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut random = 0u64;
    for (i, slot) in buf[13..63].iter_mut().enumerate() {
        if i % 8 == 0 {
            random = splitmix64(&mut state);
        }
        let byte = (random >> ((i % 8) * 8)) as u8;
        *slot = if byte % 6 == 0 {
            b' '
        } else {
            b'a' + byte % 26
        };
    }
    buf[63] = b'\n';
    buf
}

/// SplitMix64, a tiny well-mixed generator; only determinism matters here.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A file on a node.
#[derive(Debug, Clone)]
pub(crate) struct FileEntry {
    /// The bytes.
    pub(crate) content: Content,
    /// `creationTime` / `ocp-creation-time`.
    pub(crate) creation_time: OffsetDateTime,
    /// `lastModified` / `Last-Modified`.
    pub(crate) last_modified: OffsetDateTime,
    /// `contentType` / `Content-Type`.
    pub(crate) content_type: String,
    /// `fileMode` / `ocp-batch-file-mode`, for Linux nodes.
    pub(crate) file_mode: Option<String>,
}

/// What a path names on a node.
#[derive(Debug)]
pub(crate) enum Lookup<'a> {
    /// A file.
    File(&'a FileEntry),
    /// A directory (some file lives below it).
    Directory,
    /// Nothing.
    Missing,
}

/// One row of a file listing.
#[derive(Debug)]
pub(crate) struct Listed<'a> {
    /// Path relative to the listing root, `/`-separated.
    pub(crate) name: String,
    /// The file, or `None` for a directory.
    pub(crate) file: Option<&'a FileEntry>,
}

/// All files of one node.
#[derive(Debug, Default, Clone)]
pub(crate) struct NodeFiles {
    files: BTreeMap<String, FileEntry>,
}

impl NodeFiles {
    /// Adds or replaces a file at a normalized path.
    pub(crate) fn insert(&mut self, path: String, entry: FileEntry) {
        self.files.insert(path, entry);
    }

    /// What `path` (normalized, relative to the node root) names.
    pub(crate) fn lookup(&self, path: &str) -> Lookup<'_> {
        if let Some(entry) = self.files.get(path) {
            return Lookup::File(entry);
        }
        let dir = format!("{path}/");
        match self.files.range(dir.clone()..).next() {
            Some((key, _)) if key.starts_with(&dir) => Lookup::Directory,
            _ => Lookup::Missing,
        }
    }

    /// Files and directories under `root` ("" for the node root), sorted by name. Without
    /// `recursive`, only the direct children.
    pub(crate) fn list(&self, root: &str, recursive: bool) -> Vec<Listed<'_>> {
        let prefix = if root.is_empty() {
            String::new()
        } else {
            format!("{root}/")
        };
        let mut directories = BTreeSet::new();
        let mut rows = BTreeMap::new();
        for (key, entry) in self.files.range(prefix.clone()..) {
            let Some(relative) = key.strip_prefix(&prefix) else {
                break;
            };
            let segments: Vec<&str> = relative.split('/').collect();
            if recursive {
                for depth in 1..segments.len() {
                    directories.insert(segments[..depth].join("/"));
                }
                rows.insert(relative.to_owned(), Some(entry));
            } else if segments.len() == 1 {
                rows.insert(relative.to_owned(), Some(entry));
            } else {
                directories.insert(segments[0].to_owned());
            }
        }
        for directory in directories {
            rows.entry(directory).or_insert(None);
        }
        rows.into_iter()
            .map(|(name, file)| Listed { name, file })
            .collect()
    }
}

/// Why a range header was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RangeError {
    /// Not `bytes=a-b`, `bytes=a-` or `bytes=-n`: 400 `InvalidHeaderValue`.
    Malformed,
    /// Starts past the end of the file: 416 `InvalidRange`.
    Unsatisfiable,
}

/// Parses `bytes=start-end` (inclusive end, clamped to the file), `bytes=start-` and the suffix
/// form `bytes=-n` into a half-open `start..end`.
pub(crate) fn parse_range(spec: &str, len: u64) -> Result<(u64, u64), RangeError> {
    let spec = spec.trim();
    let Some(ranges) = spec
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case("bytes="))
        .map(|_| &spec[6..])
    else {
        return Err(RangeError::Malformed);
    };
    if ranges.contains(',') {
        return Err(RangeError::Malformed);
    }
    let (first, last) = ranges.split_once('-').ok_or(RangeError::Malformed)?;
    let (first, last) = (first.trim(), last.trim());
    let number = |text: &str| {
        if text.bytes().all(|b| b.is_ascii_digit()) {
            text.parse::<u64>().map_err(|_| RangeError::Malformed)
        } else {
            Err(RangeError::Malformed)
        }
    };
    if first.is_empty() {
        let suffix = number(last)?;
        if suffix == 0 || len == 0 {
            return Err(RangeError::Unsatisfiable);
        }
        return Ok((len.saturating_sub(suffix), len));
    }
    let start = number(first)?;
    let end_inclusive = if last.is_empty() {
        u64::MAX
    } else {
        number(last)?
    };
    if end_inclusive < start {
        return Err(RangeError::Malformed);
    }
    if start >= len {
        return Err(RangeError::Unsatisfiable);
    }
    Ok((start, end_inclusive.min(len - 1) + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn collect(content: &Content, start: u64, end: u64) -> Vec<u8> {
        futures::executor::block_on(async {
            let mut out = Vec::new();
            let mut stream = std::pin::pin!(content.stream(start, end));
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk.unwrap());
            }
            out
        })
    }

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize_path("wd\\out.txt").as_deref(), Some("wd/out.txt"));
        assert_eq!(normalize_path("/a//b/").as_deref(), Some("a/b"));
        assert_eq!(normalize_path("a/../b"), None);
        assert_eq!(normalize_path("//"), None);
    }

    #[test]
    fn generated_content_is_deterministic_and_random_access() {
        let content = Content::Generated {
            size: 1000,
            seed: 7,
            tail: Bytes::from_static(b"Killed\n"),
        };
        let all = collect(&content, 0, 1000);
        assert_eq!(all.len(), 1000);
        assert!(all.ends_with(b"Killed\n"));
        assert_eq!(&all[..13], b"000000000000 ");
        assert_eq!(collect(&content, 130, 999), all[130..999].to_vec());
        assert_eq!(collect(&content, 990, 1000), all[990..].to_vec());
        let again = collect(&content, 0, 1000);
        assert_eq!(all, again);
    }

    #[test]
    fn huge_generated_files_are_cheap() {
        let content = Content::Generated {
            size: 1 << 40,
            seed: 1,
            tail: Bytes::from_static(b"end\n"),
        };
        let last = collect(&content, (1 << 40) - 10, 1 << 40);
        assert_eq!(last.len(), 10);
        assert!(last.ends_with(b"end\n"));
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok((0, 10)));
        assert_eq!(parse_range("bytes=90-", 100), Ok((90, 100)));
        assert_eq!(parse_range("bytes=90-1000", 100), Ok((90, 100)));
        assert_eq!(parse_range("bytes=-10", 100), Ok((90, 100)));
        assert_eq!(parse_range("bytes=-1000", 100), Ok((0, 100)));
        assert_eq!(
            parse_range("bytes=100-", 100),
            Err(RangeError::Unsatisfiable)
        );
        assert_eq!(parse_range("bytes=5-1", 100), Err(RangeError::Malformed));
        assert_eq!(
            parse_range("bytes=0-99999999999999999999999", 100),
            Err(RangeError::Malformed)
        );
        assert_eq!(
            parse_range("bytes=0-1,3-4", 100),
            Err(RangeError::Malformed)
        );
        assert_eq!(parse_range("items=0-1", 100), Err(RangeError::Malformed));
        assert_eq!(parse_range("bytes=+1-2", 100), Err(RangeError::Malformed));
        assert_eq!(parse_range("bytes=é", 100), Err(RangeError::Malformed));
    }

    #[test]
    fn listings() {
        let entry = FileEntry {
            content: Content::Inline(Bytes::new()),
            creation_time: OffsetDateTime::UNIX_EPOCH,
            last_modified: OffsetDateTime::UNIX_EPOCH,
            content_type: "application/octet-stream".into(),
            file_mode: None,
        };
        let mut fs = NodeFiles::default();
        for path in ["t/stdout.txt", "t/wd/a/b.txt", "t/wd/c.txt", "tx/other.txt"] {
            fs.insert(path.into(), entry.clone());
        }
        let names = |rows: Vec<Listed<'_>>| {
            rows.into_iter()
                .map(|r| format!("{}{}", r.name, if r.file.is_none() { "/" } else { "" }))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(fs.list("t", false)), ["stdout.txt", "wd/"]);
        assert_eq!(
            names(fs.list("t", true)),
            ["stdout.txt", "wd/", "wd/a/", "wd/a/b.txt", "wd/c.txt"]
        );
        assert!(matches!(fs.lookup("t/wd"), Lookup::Directory));
        assert!(matches!(fs.lookup("t/wd/c.txt"), Lookup::File(_)));
        assert!(matches!(fs.lookup("t/w"), Lookup::Missing));
    }
}
