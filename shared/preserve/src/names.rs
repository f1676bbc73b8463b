//! Turning untrusted ids and file names into safe keys.
//!
//! Ids become one segment each ([`segment`]). The files of one folder get their keys together
//! ([`folder_keys`]), so that the mapping is injective within the folder and every key can be
//! held by a directory as well as by a container: no two files share a key, and no file's key is
//! a directory of another's (a directory cannot hold `wd/x` as a file and `wd/x/y` beneath it).

use std::collections::BTreeSet;

use artifact_store::ObjectKey;
use sha2::{Digest, Sha256};

/// Longest segment produced (bytes), well under the store's 255.
const MAX_SEGMENT: usize = 120;

/// One key segment from an untrusted string (account, job id, task id, node id, a file name
/// part). Separators, control characters and `.`/`..` are replaced; long names are cut. When
/// anything changed, a short hash of the original is appended so two different hostile names
/// cannot land on the same key.
pub fn segment(raw: &str) -> String {
    let mut out: String = raw
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() || c == ':' {
                '_'
            } else {
                c
            }
        })
        .collect();
    if out.is_empty() || out.chars().all(|c| c == '.') {
        out = out.replace('.', "_");
        out.insert(0, '_');
    }
    if out.len() > MAX_SEGMENT {
        let mut cut = MAX_SEGMENT;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    if out != raw {
        push_hash(&mut out, raw, 8);
    }
    out
}

/// Appends `~` and the first `digits` hex digits of the SHA-256 of `raw`.
fn push_hash(out: &mut String, raw: &str, digits: usize) {
    let digest = hex::encode(Sha256::digest(raw.as_bytes()));
    out.push('~');
    out.push_str(&digest[..digits.min(digest.len())]);
}

/// A relative path from an untrusted file name (`wd\out\x.log`, `../../etc/passwd`): split on
/// `/` and `\`, empty and `.` parts dropped, every other part made a safe [`segment`], at most 8
/// levels deep (deeper parts are joined into the last one).
pub fn relative_path(raw: &str) -> String {
    let parts: Vec<String> = raw
        .split(['/', '\\'])
        .filter(|p| !p.is_empty() && *p != ".")
        .map(segment)
        .collect();
    if parts.is_empty() {
        return segment(raw);
    }
    if parts.len() > 8 {
        let mut head = parts[..7].to_vec();
        head.push(segment(&parts[7..].join("_")));
        return head.join("/");
    }
    parts.join("/")
}

/// Names a folder keeps for itself; no file may take them or a key beneath them.
pub(crate) const RESERVED_IN_FOLDER: [&str; 3] = ["manifest.json", "diagnosis.json", ".progress"];

/// Keys (relative to `prefix`) for the files of one folder, in the order of `raw` (the names on
/// the node, task- or node-relative, `/` or `\` separated). `None`: no key could be given, and
/// the caller records the file as not stored.
///
/// Each file first gets its natural key, [`relative_path`] (`wd\out\a.log` is `wd/out/a.log`).
/// When that clashes with a key already given (the same key, a key that is a directory of it, or
/// one beneath it), the file gets a stable suffix from the SHA-256 of its name: first on its
/// last segment (`wd/x/y~1a2b3c4d`), then flattened into one segment beside its first directory
/// (`wd/x_y~1a2b3c4d`, which no other key can pass through), then with a longer hash. Names
/// that needed no mapping at all go first, so a name kept as it is on the node is never the one
/// renamed; ties go by the name's bytes. Only the set of names decides, so the local directory
/// and Blob Storage get the same layout, and a rerun over the same listing the same keys.
pub fn folder_keys(prefix: &ObjectKey, raw: &[&str]) -> Vec<Option<String>> {
    let natural: Vec<String> = raw.iter().map(|r| relative_path(r)).collect();
    let mut order: Vec<usize> = (0..raw.len()).collect();
    order.sort_by(|&a, &b| {
        (natural[a] != raw[a], raw[a].as_bytes()).cmp(&(natural[b] != raw[b], raw[b].as_bytes()))
    });
    let mut taken = Taken::default();
    for reserved in RESERVED_IN_FOLDER {
        taken.insert(reserved);
    }
    let mut keys = vec![None; raw.len()];
    for i in order {
        let candidates = [
            natural[i].clone(),
            suffixed(&natural[i], raw[i], 8),
            flattened(raw[i], 8),
            flattened(raw[i], 32),
        ];
        keys[i] = candidates.into_iter().find(|key| {
            let fits = !taken.clashes(key) && prefix.join(key).is_ok();
            if fits {
                taken.insert(key);
            }
            fits
        });
    }
    keys
}

/// `key` with a hash of `raw` on its last segment.
fn suffixed(key: &str, raw: &str, digits: usize) -> String {
    let mut out = key.to_owned();
    push_hash(&mut out, raw, digits);
    out
}

/// `raw` as one segment (always hashed) under its first directory when that is `wd`, else at the
/// folder's root.
fn flattened(raw: &str, digits: usize) -> String {
    let normal = raw.replace('\\', "/");
    let (dir, rest) = match normal.strip_prefix("wd/") {
        Some(rest) => ("wd/", rest),
        None => ("", normal.as_str()),
    };
    let mut flat = segment(rest);
    if flat == rest {
        push_hash(&mut flat, raw, digits);
    } else if digits > 8 {
        // `segment` already added 8 digits; make it the longer hash.
        flat.truncate(flat.rfind('~').unwrap_or(flat.len()));
        push_hash(&mut flat, raw, digits);
    }
    format!("{dir}{flat}")
}

/// The keys given so far, and every directory they pass through.
#[derive(Default)]
struct Taken {
    files: BTreeSet<String>,
    dirs: BTreeSet<String>,
}

impl Taken {
    fn clashes(&self, key: &str) -> bool {
        self.files.contains(key)
            || self.dirs.contains(key)
            || directories(key).any(|dir| self.files.contains(dir))
    }

    fn insert(&mut self, key: &str) {
        self.files.insert(key.to_owned());
        for dir in directories(key) {
            self.dirs.insert(dir.to_owned());
        }
    }
}

/// The directories a key passes through: `a`, `a/b` for `a/b/c`.
fn directories(key: &str) -> impl Iterator<Item = &str> {
    key.match_indices('/').map(move |(at, _)| &key[..at])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(raw: &[&str]) -> Vec<Option<String>> {
        folder_keys(&ObjectKey::new("acct/job/task/attempt-0").unwrap(), raw)
    }

    /// No two keys equal, none a directory of another, none reserved.
    fn assert_holdable(keys: &[Option<String>]) {
        let given: Vec<&String> = keys.iter().flatten().collect();
        for (i, a) in given.iter().enumerate() {
            for b in &given[i + 1..] {
                assert_ne!(a, b);
                assert!(!b.starts_with(&format!("{a}/")), "{a} holds {b}");
                assert!(!a.starts_with(&format!("{b}/")), "{b} holds {a}");
            }
            for reserved in RESERVED_IN_FOLDER {
                assert!(
                    *a != reserved && !a.starts_with(&format!("{reserved}/")),
                    "{a}"
                );
            }
        }
    }

    #[test]
    fn a_file_and_a_name_with_a_backslash_beneath_it_both_get_keys() {
        let got = keys(&["wd/x\\y", "wd/x", "stdout.txt"]);
        assert_holdable(&got);
        assert_eq!(
            got[1].as_deref(),
            Some("wd/x"),
            "the name as on the node stays"
        );
        assert_eq!(got[2].as_deref(), Some("stdout.txt"));
        let moved = got[0].as_deref().unwrap();
        assert!(moved.starts_with("wd/x_y~"), "{moved}");
        // Stable: the same listing in another order gives the same keys.
        let again = keys(&["stdout.txt", "wd/x", "wd/x\\y"]);
        assert_eq!(again[2], got[0]);
    }

    #[test]
    fn two_names_with_one_natural_key_get_two_keys() {
        let got = keys(&["wd/x\\y", "wd/x/y"]);
        assert_holdable(&got);
        assert_eq!(got[1].as_deref(), Some("wd/x/y"));
        assert!(got[0].as_deref().unwrap().starts_with("wd/x/y~"), "{got:?}");
        // A Windows listing: every name is mapped, and they do not clash.
        let windows = keys(&["wd\\out\\a.log", "wd\\b.log"]);
        assert_eq!(
            windows,
            [Some("wd/out/a.log".to_owned()), Some("wd/b.log".to_owned())]
        );
    }

    #[test]
    fn dot_names_crafted_hashes_and_reserved_names_all_get_distinct_keys() {
        let crafted = relative_path("wd/a:b");
        let raw = [
            "wd/..",
            "wd/.",
            "wd/",
            "wd/a:b",
            crafted.as_str(),
            "wd/a_b",
            "manifest.json",
            ".progress/x",
            "wd/x",
            "wd/x/y",
            "wd/x\\y",
            "wd/x_y",
        ];
        let got = keys(&raw);
        assert_holdable(&got);
        assert!(got.iter().all(Option::is_some), "{got:?}");
    }

    #[test]
    fn deep_long_names_that_no_key_can_hold_are_flattened() {
        // Eight levels of long names under a long prefix: more than a key's 1,024 bytes.
        let deep = format!("wd/{}", vec!["y".repeat(200); 8].join("/"));
        let long = vec!["p".repeat(120); 4].join("/");
        let got = folder_keys(&ObjectKey::new(long).unwrap(), &[&deep]);
        let key = got[0].as_deref().unwrap();
        assert!(
            key.starts_with("wd/") && key.matches('/').count() == 1,
            "{key}"
        );
    }

    #[test]
    fn hostile_names_stay_inside() {
        for raw in [
            "..",
            ".",
            "",
            "a/../../b",
            "/etc/passwd",
            "C:\\x",
            "a\nb",
            "\u{0}",
        ] {
            let s = segment(raw);
            assert!(
                !s.contains('/') && !s.contains('\\') && s != ".." && s != "." && !s.is_empty()
            );
            assert!(
                artifact_store::ObjectKey::new(format!("p/{s}")).is_ok(),
                "{raw:?} -> {s}"
            );
            let p = relative_path(raw);
            assert!(
                artifact_store::ObjectKey::new(format!("p/{p}")).is_ok(),
                "{raw:?} -> {p}"
            );
        }
        assert_eq!(segment("task-1"), "task-1");
        assert_eq!(relative_path("wd\\out\\x.log"), "wd/out/x.log");
        assert_ne!(segment("a/b"), segment("a_b"));
        assert!(segment(&"x".repeat(1000)).len() <= MAX_SEGMENT + 9);
        assert_eq!(
            relative_path("../../etc/passwd").split('/').next(),
            Some(segment("..").as_str())
        );
    }
}
