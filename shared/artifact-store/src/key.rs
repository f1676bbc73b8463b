//! Validated object keys: safe as a relative path on disk and as a blob name.

use crate::StoreError;

/// Longest key accepted (Blob's limit is 1,024 characters; paths on disk are shorter still per
/// segment, see [`MAX_SEGMENT`]).
pub const MAX_KEY: usize = 1024;
/// Longest segment accepted, so each segment is a valid file name on common file systems.
pub const MAX_SEGMENT: usize = 255;
/// First segment reserved by the local backend for its temp files and locks.
pub(crate) const RESERVED: &str = ".artifact-store";

/// A `/`-separated relative key, validated once so backends can map it to a path or a blob name
/// without escaping: no `..` or `.` segment, no leading `/`, no `\`, no control characters, no
/// empty segments, at most [`MAX_KEY`] bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Validates `key`; [`StoreError::InvalidKey`] says why it was rejected.
    pub fn new(key: impl Into<String>) -> Result<Self, StoreError> {
        let key = key.into();
        validate(&key)?;
        Ok(ObjectKey(key))
    }

    /// The key as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// This key with `segment` appended after a `/`. `segment` may itself contain `/`; the result
    /// is validated as a whole.
    pub fn join(&self, segment: &str) -> Result<Self, StoreError> {
        ObjectKey::new(format!("{}/{segment}", self.0))
    }

    /// The segments of the key.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn invalid(key: &str, reason: &str) -> StoreError {
    StoreError::InvalidKey {
        key: key.escape_debug().take(200).collect(),
        reason: reason.to_owned(),
    }
}

fn validate(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(invalid(key, "empty key"));
    }
    if key.len() > MAX_KEY {
        return Err(invalid(key, "longer than 1024 bytes"));
    }
    if key.starts_with('/') {
        return Err(invalid(key, "must be relative (leading '/')"));
    }
    if key.contains('\\') {
        return Err(invalid(key, "contains '\\'"));
    }
    if key.chars().any(char::is_control) {
        return Err(invalid(key, "contains a control character"));
    }
    for (i, segment) in key.split('/').enumerate() {
        match segment {
            "" => return Err(invalid(key, "empty segment ('//' or trailing '/')")),
            "." | ".." => return Err(invalid(key, "'.' or '..' segment")),
            s if s.len() > MAX_SEGMENT => {
                return Err(invalid(key, "segment longer than 255 bytes"));
            }
            s if i == 0 && s == RESERVED => {
                return Err(invalid(key, "'.artifact-store' is reserved"));
            }
            // A drive letter would make the key absolute on Windows.
            s if i == 0 && s.len() == 2 && s.ends_with(':') => {
                return Err(invalid(key, "looks like a drive letter"));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        for ok in [
            "a",
            "a/b.txt",
            "acct/job/task/attempt-0/stdout.txt",
            "a..b/c",
            ".hidden",
        ] {
            assert!(ObjectKey::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/a",
            "a/../b",
            "..",
            "a/./b",
            "a//b",
            "a/",
            "a\\b",
            "a\nb",
            "a\u{0}b",
            "C:/x",
            ".artifact-store/x",
        ] {
            assert!(
                matches!(ObjectKey::new(bad), Err(StoreError::InvalidKey { .. })),
                "{bad:?}"
            );
        }
        assert!(ObjectKey::new("x".repeat(1025)).is_err());
        assert!(ObjectKey::new("a").unwrap().join("../b").is_err());
        assert_eq!(
            ObjectKey::new("a").unwrap().join("b/c").unwrap().as_str(),
            "a/b/c"
        );
    }
}
