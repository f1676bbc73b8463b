//! What a glob of extra files to keep means, in one place: `policy check` validates a rule's
//! `preserve` globs with [`preserve_glob`], and the copier (`batch-triage-preserve`) matches a
//! task's files with the same function, so a glob the policy accepts is the glob that copies.
//!
//! A glob names files relative to the task directory and starts with `wd/` (`wd/**`,
//! `wd/out/*.log`); it is matched against the task-relative path with `/` separators (a Windows
//! node's `wd\out\a.log` is matched as `wd/out/a.log`), and `*` does not cross a `/`.

use globset::{Glob, GlobBuilder};

/// The task's working directory, the only place extra files are kept from.
pub const WORKING_DIR: &str = "wd/";

/// Compiles a task-relative glob of files to keep: it must start with `wd/` and must not contain
/// a `..` part. The error says what is wrong, for a message after the glob.
pub fn preserve_glob(text: &str) -> Result<Glob, String> {
    let text = text.trim();
    if !text.starts_with(WORKING_DIR) {
        return Err("must start with `wd/` (files under the task's working directory)".to_owned());
    }
    if text.split(['/', '\\']).any(|part| part == "..") {
        return Err("must not contain `..`".to_owned());
    }
    GlobBuilder::new(text)
        .literal_separator(true)
        .build()
        .map_err(|e| e.kind().to_string())
}

/// A glob as the CLI's `--glob` takes it, relative to `wd/` (`*.log`), or as the policy writes
/// it (`wd/*.log`), in the policy's form: `wd/` is added when it is not already there.
pub fn task_relative(text: &str) -> String {
    let text = text.trim();
    if text.starts_with(WORKING_DIR) {
        text.to_owned()
    } else {
        format!("{WORKING_DIR}{}", text.trim_start_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_are_task_relative_under_wd() {
        let matches = |glob: &str, path: &str| {
            preserve_glob(glob)
                .unwrap()
                .compile_matcher()
                .is_match(path)
        };
        assert!(matches("wd/**", "wd/out/a.log"));
        assert!(matches("wd/**/*.log", "wd/c.log"));
        assert!(matches("wd/*.log", "wd/c.log"));
        assert!(!matches("wd/*.log", "wd/out/a.log"));
        assert!(!matches("wd/**", "stdout.txt"));
        assert!(preserve_glob("*.log").is_err());
        assert!(preserve_glob("wd/../x").is_err());
        assert!(preserve_glob("wd/a[").is_err());
        assert_eq!(task_relative("*.log"), "wd/*.log");
        assert_eq!(task_relative("wd/**"), "wd/**");
        assert_eq!(task_relative(" **/*.json "), "wd/**/*.json");
    }
}
