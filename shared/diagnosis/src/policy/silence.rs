//! Silences written at the command line (`batch-triage silence add --match job=etl`): their
//! `key=value` matchers, read with the policy's own matcher checks so both mean the same, and the
//! command an alert prints so an operator can mute its group by pasting one line.

use super::Matchers;
use super::parse::matchers_from_toml;
use crate::Diagnosis;

/// What is wrong with `--match` matchers: one message per problem, each naming its matcher.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct MatcherErrors(pub Vec<String>);

/// The keys `--match key=value` accepts, each with the policy's `match` key it stands for.
/// `code` is the short form of `failure_code`.
pub const MATCHER_KEYS: &[(&str, &str)] = &[
    ("class", "class"),
    ("severity", "severity"),
    ("exit_meaning", "exit_meaning"),
    ("code", "failure_code"),
    ("failure_code", "failure_code"),
    ("account", "account"),
    ("job", "job"),
    ("pool", "pool"),
    ("stderr", "stderr"),
];

/// Reads `key=value` matchers (`job=etl*`, `class=task.*`, `severity=error`, `code=*Timeout*`):
/// each key at most once, at least one matcher, and every value checked as the policy checks
/// it (a class glob must match some class, a severity must exist, …). Errors name the matcher
/// (`--match "class=tsk.*": class "tsk.*" matches no failure class …`).
pub fn parse_matchers<S: AsRef<str>>(specs: &[S]) -> Result<Matchers, MatcherErrors> {
    let mut problems = Vec::new();
    let mut table = toml::Table::new();
    let mut sources = Vec::new();
    for spec in specs {
        let spec = spec.as_ref();
        let Some((key, value)) = spec.split_once('=') else {
            problems.push(format!(
                "--match {spec:?}: expected key=value, e.g. job=etl or class=task.*"
            ));
            continue;
        };
        let key = key.trim();
        let Some((_, policy_key)) = MATCHER_KEYS.iter().find(|(k, _)| *k == key) else {
            let known: Vec<&str> = MATCHER_KEYS.iter().map(|(k, _)| *k).collect();
            problems.push(format!(
                "--match {spec:?}: unknown key {key:?} (one of {known:?})"
            ));
            continue;
        };
        if value.trim().is_empty() {
            problems.push(format!("--match {spec:?}: the value is empty"));
            continue;
        }
        if table.contains_key(*policy_key) {
            problems.push(format!(
                "--match {spec:?}: {policy_key} is matched twice; a silence needs all its matchers to hold, so give each key once"
            ));
            continue;
        }
        table.insert(
            (*policy_key).to_owned(),
            toml::Value::String(value.to_owned()),
        );
        sources.push((*policy_key, spec));
    }
    if specs.is_empty() {
        problems.push(
            "a silence with no --match would mute everything; name a class, job, … to mute"
                .to_owned(),
        );
    }
    if problems.is_empty() {
        // One table per matcher, so an error names the `--match` it came from.
        for (policy_key, spec) in &sources {
            let mut one = toml::Table::new();
            if let Some(value) = table.get(*policy_key) {
                one.insert((*policy_key).to_owned(), value.clone());
            }
            if let Err(errors) = matchers_from_toml(&one.to_string()) {
                for error in errors.errors {
                    problems.push(format!("--match {spec:?}: {}", error.message));
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(MatcherErrors(problems));
    }
    matchers_from_toml(&table.to_string())
        .map_err(|errors| MatcherErrors(errors.errors.into_iter().map(|e| e.message).collect()))
}

/// The exact shell command that mutes alerts like `diagnosis`'s group for two hours: its
/// account, job and class (the labels a group is made of by default; a fingerprint cannot be
/// matched). Ids come from Batch and are not trusted: each value keeps only printable ASCII
/// that is not a glob character (anything else becomes `?`, which matches any one character,
/// so the silence still covers the group) and is single-quoted, so nothing in it is shell
/// syntax, markup or a control sequence.
pub fn silence_command(diagnosis: &Diagnosis) -> String {
    let subject = &diagnosis.subject;
    let mut command = "batch-triage silence add".to_owned();
    let labels = [
        ("account", subject.account.as_deref()),
        ("job", subject.job_id.as_deref()),
        // A pool's or node's failure has no job: its pool names the group instead.
        (
            "pool",
            subject
                .pool_id
                .as_deref()
                .filter(|_| subject.job_id.is_none()),
        ),
        ("class", Some(diagnosis.class.as_str())),
    ];
    for (key, value) in labels {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            command.push_str(" --match ");
            command.push_str(&shell_quote(&format!("{key}={}", glob_literal(value))));
        }
    }
    command.push_str(" --for 2h --comment 'muted from an alert'");
    command
}

/// `value` as a glob matching it: letters, digits and `._-:/@+,=` are kept, other ASCII
/// characters (glob characters, quotes, shell and markup characters, controls) become `?` (any
/// one character), other characters `*`. At most 200 characters are kept (then `*`),
/// so a hostile id cannot make the command unbounded.
fn glob_literal(value: &str) -> String {
    let mut out = String::new();
    for (i, c) in value.chars().enumerate() {
        if i == 200 {
            out.push('*');
            break;
        }
        // Batch ids are letters, digits, `-` and `_`; anything else is kept out of the shell and
        // out of any markup, even quoted.
        let plain = c.is_ascii_alphanumeric() || "._-:/@+,=".contains(c);
        if plain {
            out.push(c);
        } else if c.is_ascii() {
            out.push('?');
        } else if !out.ends_with('*') {
            // Globs match bytes: `*` covers a character of any length in UTF-8.
            out.push('*');
        }
    }
    out
}

/// Single-quotes `text` for a POSIX shell; `'` inside is closed, escaped and reopened.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classes::{FailureClass, Severity};
    use crate::policy::{PlanContext, Policy, plan};
    use time::macros::datetime;

    fn failed(job: &str) -> Diagnosis {
        let json = include_bytes!("../../test_data/exit-137-oom.json");
        let mut found = Vec::new();
        crate::payload::read_slice(json, &mut |item| {
            found.extend(crate::diagnose_item(&item, &crate::Evidence::default()));
        })
        .unwrap();
        let mut d = found.remove(0);
        d.subject.account = Some("acct".to_owned());
        d.subject.job_id = Some(job.to_owned());
        d.subject.task_id = Some("t1".to_owned());
        d.class = FailureClass::TaskExitCode;
        d.severity = Severity::Error;
        d
    }

    #[test]
    fn cli_matchers_mean_what_policy_matchers_mean() {
        let m = parse_matchers(&[
            "job=etl*",
            "class=task.*",
            "severity=warning",
            "code=*timeout*",
        ]);
        let m = m.unwrap();
        assert_eq!(m.job.as_ref().map(|p| p.source.as_str()), Some("etl*"));
        assert_eq!(m.class.as_ref().map(|p| p.source.as_str()), Some("task.*"));
        assert_eq!(m.min_severity, Some(Severity::Warning));
        // The code glob ignores ASCII case, as in the policy.
        assert!(m.failure_code.as_ref().unwrap().is_match("TaskTimeout"));
    }

    #[test]
    fn bad_matchers_are_clear_errors() {
        for (specs, expected) in [
            (vec!["class=tsk.*"], "matches no failure class"),
            (vec!["severity=loud"], "unknown severity"),
            (vec!["colour=red"], "unknown key \"colour\""),
            (vec!["job"], "expected key=value"),
            (vec!["job="], "the value is empty"),
            (vec!["job=a", "job=b"], "matched twice"),
            (vec!["exit_meaning=sad"], "unknown exit_meaning"),
            (vec!["stderr=(("], "stderr regex"),
            (vec![], "would mute everything"),
        ] {
            let error = parse_matchers(&specs).unwrap_err().to_string();
            assert!(error.contains(expected), "{specs:?}: {error}");
            assert!(
                specs.is_empty() || specs.iter().any(|s| error.contains(&format!("{s:?}"))),
                "names the matcher: {error}"
            );
        }
    }

    #[test]
    fn the_printed_command_mutes_the_group_it_came_from() {
        let d = failed("etl-nightly");
        let command = silence_command(&d);
        assert_eq!(
            command,
            "batch-triage silence add --match 'account=acct' --match 'job=etl-nightly' \
             --match 'class=task.exit_code' --for 2h --comment 'muted from an alert'"
        );
        let specs = ["account=acct", "job=etl-nightly", "class=task.exit_code"];
        let mut policy = Policy::default();
        policy.silences.push(crate::policy::Silence {
            id: "s1".to_owned(),
            matchers: parse_matchers(&specs).unwrap(),
            starts: None,
            expires: datetime!(2030-01-01 0:00 UTC),
            comment: "x".to_owned(),
        });
        let planned = plan(
            &d,
            &policy,
            datetime!(2026-01-01 0:00 UTC),
            &PlanContext::default(),
        );
        assert_eq!(planned.silence_id.as_deref(), Some("s1"));
    }

    #[test]
    fn hostile_ids_never_become_shell_syntax() {
        for job in [
            "a'; rm -rf / #",
            "$(curl evil)",
            "`id`",
            "x\ny",
            "\u{1b}[31mred",
            "job*[{}]\\?",
            "<b>&amp;</b>",
            "\u{202e}gnp.exe",
        ] {
            let command = silence_command(&failed(job));
            // Every argument after the command is single-quoted and holds no quote of its own.
            let args = command.strip_prefix("batch-triage silence add ").unwrap();
            let quoted: Vec<&str> = args.split('\'').collect();
            assert_eq!(quoted.len() % 2, 1, "{command}");
            for (i, piece) in quoted.iter().enumerate() {
                if i % 2 == 0 {
                    assert!(
                        piece
                            .chars()
                            .all(|c| c == ' ' || c.is_ascii_alphanumeric() || c == '-'),
                        "unquoted text {piece:?} in {command:?}"
                    );
                } else {
                    assert!(
                        piece
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "._-:/@+,=?* ".contains(c)),
                        "{command:?}"
                    );
                }
            }
            // The silence it writes still covers the job it came from.
            let job_spec = quoted[3];
            let m = parse_matchers(&[job_spec]).unwrap();
            assert!(m.job.unwrap().is_match(job), "{job_spec} vs {job:?}");
        }
    }
}
