//! `batch-triage policy check` as a person uses it: the real binary on real files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_batch-triage"))
        .env("NO_COLOR", "1")
        .args(["policy", "check"])
        .args(args)
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_example_policy_is_valid_and_its_plans_are_shown() {
    let policy = repo("examples/policy.toml");
    let out = check(&[policy.to_str().unwrap(), "--now", "2026-11-20T10:00:00Z"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("examples/policy.toml: OK — 3 receivers, 5 rules, 1 silences"),
        "{stdout}"
    );
    assert!(
        stdout.contains("sample exit-137-oom: contoso/render/train-17 — task.exit_code (error)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  rules:    everything-to-siem, kill-oom"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "  notify:   ml-mail (rule kill-oom; wait 1m) group rule=kill-oom;receiver=ml-mail;"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("  action:   terminate — "), "{stdout}");
}

#[test]
fn every_error_is_reported_as_file_line_column_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[receivers]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"https://x\"\n\n[[rules]]\nname = \"r\"\nreceivers = [\"nobody\"]\nmatch = { stderr = \"(\" }\n",
    )
    .unwrap();
    let out = check(&[path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let file = path.display().to_string();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("{file}:2:8: receiver \"ops\": `url` is a secret")),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{file}:8:14: rule \"r\" names unknown receiver \"nobody\""
        )),
        "{stderr}"
    );
    assert!(
        lines[2].starts_with(&format!("{file}:9:20: stderr regex \"(\" is invalid")),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    // An unknown key is an error at the key.
    std::fs::write(&path, "[actions]\nenabled = false\nbudget = 3\n").unwrap();
    let out = check(&[path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with(&format!("{file}:3:1: unknown field `budget`")),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn samples_can_come_from_payload_files() {
    let policy = repo("examples/policy.toml");
    let tasks = repo("examples/payloads/render-tasks.json");
    let out = check(&[
        policy.to_str().unwrap(),
        "--sample",
        tasks.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("render-tasks.json: "), "{stdout}");
    assert!(
        !stdout.contains("sample exit-137-oom"),
        "built-in samples are replaced: {stdout}"
    );
    // A missing file is a usage error (2), not an invalid policy (1).
    let out = check(&["/nonexistent/policy.toml"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `batch-triage … | head -2`: the reader goes away. With stdout a pipe whose reading end is
/// already closed, every write fails (EPIPE) from the first byte; each subcommand that prints
/// must end quietly with success, with no panic message.
#[test]
fn a_closed_stdout_ends_every_printing_command_quietly() {
    let policy = repo("examples/policy.toml");
    let payload = repo("examples/payloads/render-tasks.json");
    let policy = policy.to_str().unwrap();
    let payload = payload.to_str().unwrap();
    let commands: [&[&str]; 4] = [
        &["policy", "check", policy, "--now", "2026-11-20T10:00:00Z"],
        &["diagnose", payload],
        &["diagnose", "--output", "json", payload],
        &["policy", "check", "--help"],
    ];
    for args in commands {
        let (reader, writer) = rustix::pipe::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_batch-triage"))
            .env("NO_COLOR", "1")
            .args(args)
            .stdout(std::process::Stdio::from(writer))
            .output()
            .expect("the binary runs");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }
}
