//! Turning untrusted ids and file names into safe key segments.

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
        let digest = Sha256::digest(raw.as_bytes());
        out.push('~');
        out.push_str(&hex::encode(&digest[..4]));
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

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
