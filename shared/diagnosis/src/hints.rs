//! Hints read from the task's own text: its command line and the tail of its stderr.

/// Prefixes that mean the command line already runs under a shell.
const SHELL_WRAPPERS: &[&str] = &[
    "/bin/sh -c",
    "/bin/bash -c",
    "/usr/bin/bash -c",
    "/usr/bin/env bash -c",
    "/usr/bin/env sh -c",
    "sh -c",
    "bash -c",
    "/bin/sh -lc",
    "/bin/bash -lc",
    "bash -lc",
    "/bin/zsh -c",
    "cmd /c",
    "cmd.exe /c",
    "cmd /s /c",
    "cmd.exe /s /c",
    "cmd /k",
    "powershell",
    "pwsh",
];

/// Shell syntax that only works under a shell, with how to name it in a hint.
fn shell_feature(command_line: &str) -> Option<&'static str> {
    let bytes = command_line.as_bytes();
    let mut in_single_quotes = false;
    for (i, &b) in bytes.iter().enumerate() {
        let next = bytes.get(i + 1).copied();
        match b {
            b'\'' => in_single_quotes = !in_single_quotes,
            _ if in_single_quotes => {}
            b'&' if next == Some(b'&') => return Some("`&&`"),
            b'|' if next == Some(b'|') => return Some("`||`"),
            b'|' => return Some("a pipe `|`"),
            b'>' | b'<' => return Some("a redirection (`>` / `<`)"),
            b'`' => return Some("backticks"),
            b'$' if next.is_some_and(|n| {
                n.is_ascii_alphabetic() || n == b'_' || n == b'{' || n == b'('
            }) =>
            {
                return Some("a variable reference like `$VAR`");
            }
            b'%' => {
                // %NAME% (Windows environment variable).
                let rest = &command_line[i + 1..];
                if let Some(end) = rest.find('%') {
                    let name = &rest[..end];
                    if !name.is_empty()
                        && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
                    {
                        return Some("a variable reference like `%VAR%`");
                    }
                }
            }
            _ => {}
        }
    }
    None
}

/// The "command lines don't run under a shell" hint, when the command line uses shell syntax
/// without a shell. The command line itself is never quoted: it may hold secrets.
pub fn command_line_shell_hint(command_line: &str) -> Option<String> {
    let trimmed = command_line.trim_start();
    let lower = trimmed.to_ascii_lowercase();
    if SHELL_WRAPPERS.iter().any(|w| lower.starts_with(w)) {
        return None;
    }
    let feature = shell_feature(trimmed)?;
    Some(format!(
        "The command line uses {feature}, which is shell syntax, but Batch does not run command lines under a shell: it starts the first word as a program and passes the rest as arguments. Wrap it: /bin/sh -c \"…\" on Linux, cmd /c \"…\" on Windows."
    ))
}

/// Patterns in stderr and what they mean. Matched case-insensitively on the tail of stderr.
const STDERR_PATTERNS: &[(&[&str], &str)] = &[
    (
        &[
            "out of memory",
            "memoryerror",
            "java.lang.outofmemoryerror",
            "std::bad_alloc",
            "cannot allocate memory",
            "oomkilled",
        ],
        "stderr shows the process ran out of memory: give it more (a larger VM size, fewer tasks per node, a higher container or JVM -Xmx limit) or process the input in smaller pieces.",
    ),
    (
        &["no space left on device", "disk quota exceeded"],
        "stderr shows the node's disk filled up: write to $AZ_BATCH_TASK_WORKING_DIR on the temporary disk, shorten retentionTime so old task directories are cleaned, or choose a VM size with a larger temporary disk.",
    ),
    (
        &[
            "modulenotfounderror",
            "importerror: no module named",
            "cannot find module",
        ],
        "stderr shows a missing library: install the dependencies in the pool's start task or the container image, for the same user and Python/Node environment the task uses.",
    ),
    (
        &["exec format error"],
        "stderr shows 'exec format error': the binary or script was built for another architecture, or a script lacks its #! line.",
    ),
    (
        &[
            "\r: command not found",
            "/bin/bash^m",
            "/bin/sh^m",
            "\\r': command not found",
        ],
        "stderr shows Windows line endings in a shell script (\\r): convert the script to LF line endings.",
    ),
    (
        &["permission denied"],
        "stderr shows 'Permission denied': check the file mode (fileMode of resource files), and whether the task's user identity (non-admin auto-user by default) may write where it writes.",
    ),
    (
        &[
            "authorizationpermissionmismatch",
            "authenticationfailed",
            "403 (forbidden)",
            "this request is not authorized",
        ],
        "stderr shows a storage or service authorisation failure: an expired SAS token or a missing role assignment for the identity the task uses.",
    ),
    (
        &[
            "temporary failure in name resolution",
            "could not resolve host",
            "connection refused",
            "connection timed out",
            "network is unreachable",
        ],
        "stderr shows a network failure: check the pool's virtual network (DNS, NSG and firewall rules, outbound access) and retry transient errors in the task.",
    ),
    (
        &[
            "unable to locate package",
            "has no installation candidate",
            "could not get lock /var/lib/dpkg",
            "could not get lock /var/lib/apt",
            "no package ",
            "no matching distribution found",
        ],
        "stderr shows a package install failed: check the package name and version for the node's OS image, run `apt-get update` (or the image's equivalent) first in the same command line, and wait for or retry around the image's own unattended upgrades holding the dpkg lock.",
    ),
    (
        &["killed"],
        "stderr ends with 'Killed': the kernel killed the process, almost always for running out of memory.",
    ),
];

/// Hints for what the tail of stderr shows. The tail must already be redacted by the caller if it
/// is to be echoed; hints never quote it.
pub fn stderr_hints(stderr_tail: &str) -> Vec<String> {
    let lower = stderr_tail.to_ascii_lowercase();
    let mut hints = Vec::new();
    let mut memory_hint = false;
    for (needles, hint) in STDERR_PATTERNS {
        let is_killed_line = needles == &["killed"].as_slice();
        let found = if is_killed_line {
            // Only a line that is exactly "Killed", as the shell prints it; the word alone is too common.
            lower.lines().any(|l| l.trim() == "killed")
        } else {
            needles.iter().any(|n| lower.contains(n))
        };
        if !found || (is_killed_line && memory_hint) {
            continue;
        }
        memory_hint |= hint.contains("memory");
        hints.push((*hint).to_owned());
    }
    hints
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_install_failures_are_named() {
        for tail in [
            "E: Unable to locate package cuda-toolkit-12-4\n",
            "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 1234\n",
            "ERROR: No matching distribution found for torch==9.9\n",
        ] {
            let hints = stderr_hints(tail);
            assert!(
                hints.iter().any(|h| h.contains("package install failed")),
                "{tail}: {hints:?}"
            );
        }
        assert!(
            !stderr_hints("processed 12 packages\n")
                .iter()
                .any(|h| h.contains("package install failed"))
        );
    }

    #[test]
    fn shell_syntax_without_a_shell_is_flagged() {
        for cmd in [
            "python run.py && echo done",
            "python run.py > out.txt",
            "cat input | sort",
            "echo $AZ_BATCH_TASK_WORKING_DIR",
            "echo ${HOME}",
            "copy %AZ_BATCH_NODE_SHARED_DIR%\\x.dll .",
            "a || b",
        ] {
            assert!(command_line_shell_hint(cmd).is_some(), "{cmd}");
        }
    }

    #[test]
    fn wrapped_or_plain_commands_are_not_flagged() {
        for cmd in [
            "/bin/sh -c 'python run.py && echo done'",
            "/bin/bash -c \"cat input | sort\"",
            "cmd /c echo %PATH%",
            "python run.py --rate 50%",
            "python3 main.py --input data.csv",
            "echo 'a && b'",
            "dotnet app.dll $",
        ] {
            assert!(command_line_shell_hint(cmd).is_none(), "{cmd}");
        }
    }

    #[test]
    fn stderr_patterns() {
        assert!(stderr_hints("Traceback...\nMemoryError\n")[0].contains("memory"));
        assert!(stderr_hints("write failed: No space left on device")[0].contains("disk"));
        let killed = stderr_hints("step 3\nKilled\n");
        assert_eq!(killed.len(), 1);
        assert!(killed[0].contains("Killed"));
        // "Killed" plus an explicit OOM line gives one memory hint, not two.
        assert_eq!(
            stderr_hints("Out of memory: Killed process 12\nKilled").len(),
            1
        );
        assert!(stderr_hints("the job killed it softly").is_empty());
        assert!(stderr_hints("all good").is_empty());
    }
}
