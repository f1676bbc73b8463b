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

/// `policy check` with no allowlist setting from the environment running the tests.
fn check_clean(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_batch-triage"))
        .env("NO_COLOR", "1")
        .env_remove("BATCH_TRIAGE_ALLOW_HOSTS")
        .env_remove("BATCH_TRIAGE_ALLOW_LOOPBACK")
        .args(["policy", "check", "--quiet"])
        .args(args)
        .output()
        .expect("the binary runs")
}

#[test]
fn email_and_acs_destinations_off_the_allowlist_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    let file = path.display().to_string();
    let email = |host: &str| {
        format!(
            "[[receivers]]\nname = \"mail\"\nkind = \"email\"\nhost = \"{host}\"\n\
             from = \"a@contoso.com\"\nto = [\"b@contoso.com\"]\n"
        )
    };
    for (host, reason) in [
        ("127.0.0.1", "loopback"),
        ("169.254.169.254", "private, link-local or reserved"),
        ("10.1.2.3", "private, link-local or reserved"),
        ("[::1]", "loopback"),
        ("20.50.2.1", "IP address is not on the allowlist"),
        ("smtp.evil.example", "host is not on the allowlist"),
    ] {
        std::fs::write(&path, email(host)).unwrap();
        let out = check_clean(&[&file]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{host}: {stderr}");
        assert!(
            stderr.starts_with(&format!("{file}:4:8: receiver \"mail\": destination ")),
            "{host}: {stderr}"
        );
        assert!(stderr.contains("refused"), "{host}: {stderr}");
        assert!(stderr.contains(reason), "{host}: {stderr}");
        assert!(
            stderr.contains("--allow-host"),
            "{host}: the way out is named"
        );
        assert!(out.stdout.is_empty(), "{host}");
    }
    // The allowed paths: a listed host, a listed address, loopback with the opt-in.
    std::fs::write(&path, email("smtp.contoso.com")).unwrap();
    assert!(
        check_clean(&[&file, "--allow-host", "smtp.contoso.com"])
            .status
            .success()
    );
    std::fs::write(&path, email("20.50.2.1")).unwrap();
    assert!(
        check_clean(&[&file, "--allow-host", "20.50.2.1"])
            .status
            .success()
    );
    std::fs::write(&path, email("127.0.0.1")).unwrap();
    assert!(check_clean(&[&file, "--allow-loopback"]).status.success());
    assert!(
        !check_clean(&[&file, "--allow-host", "127.0.0.1"])
            .status
            .success(),
        "loopback needs the explicit opt-in, listing it is not enough"
    );

    // ACS: the endpoint obeys the same list.
    let acs = |endpoint: &str| {
        format!(
            "[[receivers]]\nname = \"acs\"\nkind = \"acs_email\"\nendpoint = \"{endpoint}\"\n\
             access_key_env = \"ACS_KEY\"\nsender = \"DoNotReply@contoso.net\"\nto = [\"b@contoso.com\"]\n"
        )
    };
    std::fs::write(&path, acs("https://10.0.0.4")).unwrap();
    let out = check_clean(&[&file]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with(&format!(
            "{file}:4:12: receiver \"acs\": destination 10.0.0.4 refused"
        )),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(&path, acs("https://contoso.europe.communication.azure.com")).unwrap();
    let out = check_clean(&[&file]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn pagerduty_and_slack_receivers_are_checked_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    let file = path.display().to_string();
    let pagerduty = |extra: &str| {
        format!(
            "[[receivers]]\nname = \"pd\"\nkind = \"pagerduty\"\n{extra}\n\n\
             [[receivers]]\nname = \"chat\"\nkind = \"slack\"\nurl_env = \"SLACK_URL\"\n"
        )
    };
    // The defaults (events.pagerduty.com, a Slack URL from the environment) pass.
    std::fs::write(&path, pagerduty("routing_key_env = \"PD_KEY\"")).unwrap();
    let out = check_clean(&[&file]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A private enqueue URL is refused where it is written.
    std::fs::write(
        &path,
        pagerduty("routing_key_env = \"PD_KEY\"\nevents_url = \"https://10.0.0.4/v2/enqueue\""),
    )
    .unwrap();
    let stderr = text(&check_clean(&[&file]).stderr);
    assert!(
        stderr.starts_with(&format!(
            "{file}:5:14: receiver \"pd\": destination 10.0.0.4 refused"
        )),
        "{stderr}"
    );
    // A misspelt setting, and the key itself in the file, are named with their line.
    std::fs::write(&path, pagerduty("routing_key_evn = \"PD_KEY\"")).unwrap();
    let stderr = text(&check_clean(&[&file]).stderr);
    assert!(
        stderr.starts_with(&format!("{file}:1:1: receiver \"pd\""))
            && stderr.contains("routing_key_evn"),
        "{stderr}"
    );
    std::fs::write(&path, pagerduty("routing_key = \"R0UT1NGKEY\"")).unwrap();
    let out = check_clean(&[&file]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.starts_with(&format!(
            "{file}:2:8: receiver \"pd\": `routing_key` is a secret"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("R0UT1NGKEY"), "{stderr}");
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
