//! Grouping diagnoses by cause, Sentry-style: the same failure in 5,000 tasks has one
//! fingerprint, whatever their ids, nodes, times and numbers.

use sha2::{Digest, Sha256};

use crate::classes::FailureClass;
use crate::redact::redact;

/// The algorithm version, part of every fingerprint so a change to normalisation starts new
/// groups instead of silently merging or splitting old ones.
const VERSION: &str = "v1";

/// How many trailing non-empty stderr lines take part in the fingerprint.
const STDERR_LINES: usize = 3;

/// The fingerprint of a failure: class, code, exit code, Batch's message and the last lines of
/// stderr, with ids, numbers and times parameterised. 32 hex characters.
pub fn fingerprint(
    class: FailureClass,
    code: Option<&str>,
    exit_code: Option<i32>,
    message: Option<&str>,
    stderr_tail: Option<&str>,
) -> String {
    let mut hasher = Sha256::new();
    let mut field = |value: &str| {
        hasher.update(value.as_bytes());
        hasher.update([0x1f]);
    };
    field(VERSION);
    field(class.as_str());
    field(&code.unwrap_or_default().to_ascii_lowercase());
    field(&exit_code.map(|c| c.to_string()).unwrap_or_default());
    field(&normalise(message.unwrap_or_default()));
    field(&stderr_signature(stderr_tail.unwrap_or_default()));
    let digest = hasher.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The last few non-empty lines of stderr, normalised.
fn stderr_signature(tail: &str) -> String {
    let lines: Vec<&str> = tail
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(STDERR_LINES);
    lines[start..]
        .iter()
        .map(|l| normalise(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Lower-cases, drops Batch's `RequestId:`/`Time:` lines and secrets, replaces every word that
/// holds a digit (ids, counts, times, GUID parts, node names) with `#`, and folds whitespace.
pub fn normalise(text: &str) -> String {
    let text = text
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            !l.starts_with("RequestId:") && !l.starts_with("Time:")
        })
        .collect::<Vec<_>>()
        .join(" ");
    let text = redact(&text).to_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.chars().any(|c| c.is_ascii_digit()) {
            out.push('#');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            if c.is_whitespace() {
                if !out.ends_with(' ') {
                    out.push(' ');
                }
            } else {
                out.push(c);
            }
        }
    }
    flush(&mut word, &mut out);
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_cause_different_ids_same_fingerprint() {
        let a = fingerprint(
            FailureClass::TaskExitCode,
            Some("FailureExitCode"),
            Some(1),
            None,
            Some(
                "processing shard 17 on tvm-1_2-2016\nValueError: bad row 123 in /mnt/x/part-0017.csv",
            ),
        );
        let b = fingerprint(
            FailureClass::TaskExitCode,
            Some("FailureExitCode"),
            Some(1),
            None,
            Some(
                "processing shard 4 on tvm-9_8-2017\nValueError: bad row 9 in /mnt/x/part-0004.csv",
            ),
        );
        assert_eq!(a, b);
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn different_cause_different_fingerprint() {
        let base = fingerprint(
            FailureClass::TaskExitCode,
            None,
            Some(1),
            None,
            Some("ValueError: bad row"),
        );
        assert_ne!(
            base,
            fingerprint(
                FailureClass::TaskExitCode,
                None,
                Some(2),
                None,
                Some("ValueError: bad row")
            )
        );
        assert_ne!(
            base,
            fingerprint(
                FailureClass::TaskExitCode,
                None,
                Some(1),
                None,
                Some("KeyError: 'x'")
            )
        );
        assert_ne!(
            base,
            fingerprint(
                FailureClass::TaskTimeout,
                None,
                Some(1),
                None,
                Some("ValueError: bad row")
            )
        );
    }

    #[test]
    fn normalisation() {
        assert_eq!(
            normalise("The task failed.\nRequestId:c4f5fc32-356d-47c2\nTime:2023-03-09T11:47:41Z"),
            "the task failed."
        );
        assert_eq!(
            normalise("node tvm-257509324_1-20160908t162728z  died"),
            "node tvm-#_#-# died"
        );
    }
}
