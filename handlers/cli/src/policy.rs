//! `batch-triage policy check`: validates a policy file (every error as `FILE:LINE:COL:
//! message`) and shows what it would do with sample failures: matched rules, receivers and group
//! keys, extra files kept, the job action with its guards, and silences.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use diagnosis::payload::{read_payload, read_slice};
use diagnosis::policy::{ActionPlan, Plan, PlanContext, Policy, Threshold, format_duration, plan};
use diagnosis::{Diagnosis, Evidence, diagnose_item};
use notify::{Allowlist, NotifyError, ReceiverConfig};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub(crate) const EXAMPLES: &str = "\
Examples:
  batch-triage policy check examples/policy.toml
  batch-triage policy check policy.toml --sample tasks.json --stderr stderr.txt
  batch-triage policy check policy.toml --now 2026-12-01T09:00:00Z
  batch-triage policy check policy.toml --allow-host smtp.contoso.com

Receivers' destinations written in the policy (an email receiver's SMTP host, an ACS endpoint)
must be on the notification allowlist, as they must be when the handlers send: the default
hosts, plus --allow-host / BATCH_TRIAGE_ALLOW_HOSTS. IP literals must be listed exactly;
loopback needs --allow-loopback / BATCH_TRIAGE_ALLOW_LOOPBACK=true (local tests only).

Exit status: 0 when the policy is valid, 1 when it is not (each problem is printed as
FILE:LINE:COL: message), 2 when a file cannot be read.";

/// Arguments of `policy`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Debug, clap::Subcommand)]
enum PolicyCommand {
    /// Validate a policy file and show what it would do with sample failures.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// The policy TOML file.
    #[arg(value_name = "FILE")]
    file: PathBuf,

    /// Payload files to use as samples instead of the built-in ones (any payload `diagnose`
    /// reads).
    #[arg(long, value_name = "FILE")]
    sample: Vec<PathBuf>,

    /// A stderr tail to match `stderr` regexes against, for every sample.
    #[arg(long, value_name = "FILE")]
    stderr: Option<PathBuf>,

    /// The time at which silences are evaluated (RFC 3339); now by default.
    #[arg(long, value_name = "TIME")]
    now: Option<String>,

    /// Only validate; print no samples.
    #[arg(long)]
    quiet: bool,

    /// Also allow this notification host (exact, or `*.suffix`); repeatable. The handlers read
    /// the same list from BATCH_TRIAGE_ALLOW_HOSTS (comma-separated).
    #[arg(
        long = "allow-host",
        value_name = "PATTERN",
        env = "BATCH_TRIAGE_ALLOW_HOSTS",
        value_delimiter = ','
    )]
    allow_hosts: Vec<String>,

    /// Allow loopback destinations (local test receivers only), as
    /// BATCH_TRIAGE_ALLOW_LOOPBACK=true does for the handlers.
    #[arg(long)]
    allow_loopback: bool,
}

/// Built-in samples: one failure of each common kind, with a stderr tail where we have one.
const SAMPLES: &[(&str, &str, Option<&str>)] = &[
    (
        "exit-137-oom",
        include_str!("../../../shared/diagnosis/test_data/exit-137-oom.json"),
        Some(include_str!(
            "../../../shared/diagnosis/test_data/exit-137-oom.stderr.txt"
        )),
    ),
    (
        "exit-127-command-not-found",
        include_str!("../../../shared/diagnosis/test_data/exit-127-command-not-found.json"),
        None,
    ),
    (
        "resource-blob-access-denied-sas",
        include_str!("../../../shared/diagnosis/test_data/resource-blob-access-denied-sas.json"),
        None,
    ),
    (
        "container-invalid-image",
        include_str!("../../../shared/diagnosis/test_data/container-invalid-image.json"),
        None,
    ),
    (
        "timeout-wall-clock",
        include_str!("../../../shared/diagnosis/test_data/timeout-wall-clock.json"),
        None,
    ),
    (
        "flaky",
        include_str!("../../../shared/diagnosis/test_data/flaky.json"),
        None,
    ),
    (
        "prep-status-one-node-failed",
        include_str!("../../../shared/diagnosis/test_data/prep-status-one-node-failed.json"),
        None,
    ),
    (
        "job-terminated-by-task",
        include_str!("../../../shared/diagnosis/test_data/job-terminated-by-task.json"),
        None,
    ),
];

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    match &args.command {
        PolicyCommand::Check(check) => run_check(check),
    }
}

fn run_check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let policy = match Policy::parse(&text) {
        Ok(policy) => policy,
        Err(errors) => {
            for line in error_lines(&args.file.display().to_string(), &errors) {
                eprintln!("{line}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    let allowlist = allowlist(args);
    let problems = receiver_problems(&policy, &allowlist, &text);
    if !problems.is_empty() {
        let file = args.file.display().to_string();
        for (line, column, message) in problems {
            eprintln!("{file}:{line}:{column}: {message}");
        }
        return Ok(ExitCode::from(1));
    }
    let now = match &args.now {
        Some(text) => OffsetDateTime::parse(text, &Rfc3339)
            .with_context(|| format!("--now {text:?} is not an RFC 3339 time"))?,
        None => OffsetDateTime::now_utc(),
    };
    println!("{}: OK — {}", args.file.display(), summary(&policy));
    if args.quiet {
        return Ok(ExitCode::SUCCESS);
    }
    let stderr = match &args.stderr {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        ),
        None => None,
    };
    let samples = if args.sample.is_empty() {
        builtin_samples()?
    } else {
        let mut samples = Vec::new();
        for path in &args.sample {
            let file =
                File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
            let mut found = Vec::new();
            read_payload(BufReader::new(file), &mut |item| {
                found.extend(diagnose_item(&item, &Evidence::default()));
            })
            .with_context(|| format!("cannot read a payload from {}", path.display()))?;
            if found.is_empty() {
                bail!("{} holds nothing to diagnose", path.display());
            }
            samples.extend(
                found
                    .into_iter()
                    .map(|d| (path.display().to_string(), d, None)),
            );
        }
        samples
    };
    for (name, diagnosis, sample_stderr) in &samples {
        let tail = stderr.as_deref().or(*sample_stderr);
        let ctx = PlanContext {
            stderr_tail: tail,
            ..PlanContext::default()
        };
        let planned = plan(diagnosis, &policy, now, &ctx);
        println!();
        print!("{}", describe(name, diagnosis, &planned, &policy));
    }
    Ok(ExitCode::SUCCESS)
}

/// The notification allowlist the handlers would use with the same settings.
fn allowlist(args: &CheckArgs) -> Allowlist {
    let mut allowlist = Allowlist::default();
    for host in args
        .allow_hosts
        .iter()
        .map(|h| h.trim())
        .filter(|h| !h.is_empty())
    {
        allowlist = allowlist.with(host);
    }
    let loopback_setting = std::env::var("BATCH_TRIAGE_ALLOW_LOOPBACK")
        .is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if args.allow_loopback || loopback_setting {
        allowlist = allowlist.allow_loopback();
    }
    allowlist
}

/// Receivers whose settings are unusable or whose destination the allowlist refuses, as
/// `(line, column, message)`, in file order.
fn receiver_problems(
    policy: &Policy,
    allowlist: &Allowlist,
    text: &str,
) -> Vec<(usize, usize, String)> {
    let mut problems = Vec::new();
    for (index, receiver) in policy.receivers.iter().enumerate() {
        let checked = ReceiverConfig::from_policy(receiver)
            .and_then(|config| config.check_destination(allowlist));
        if let Err(error) = checked {
            let (line, column) = destination_position(text, index);
            let hint = match error {
                NotifyError::HostNotAllowed { .. } => {
                    " (allow a host with --allow-host or BATCH_TRIAGE_ALLOW_HOSTS; loopback only with --allow-loopback, for local tests)"
                }
                _ => "",
            };
            problems.push((
                line,
                column,
                format!("receiver {:?}: {error}{hint}", receiver.name),
            ));
        }
    }
    problems
}

/// Where the `index`-th `[[receivers]]` entry names its destination (the value of `host` or
/// `endpoint`), else its header line; 1-based. The policy model keeps no positions for
/// receiver settings, so this reads the text: entries written as `[[receivers]]` tables, the
/// form the docs use (anything else is reported at 1:1).
fn destination_position(text: &str, index: usize) -> (usize, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let Some(header) = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| line.trim() == "[[receivers]]")
        .map(|(number, _)| number)
        .nth(index)
    else {
        return (1, 1);
    };
    for (number, line) in lines.iter().enumerate().skip(header + 1) {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            break;
        }
        let Some((key, _)) = trimmed.split_once('=') else {
            continue;
        };
        if matches!(key.trim(), "host" | "endpoint") {
            let value = line.find('=').map_or(0, |eq| {
                eq + 1 + line[eq + 1..].len() - line[eq + 1..].trim_start().len()
            });
            return (number + 1, value + 1);
        }
    }
    (header + 1, 1)
}

fn builtin_samples() -> anyhow::Result<Vec<(String, Diagnosis, Option<&'static str>)>> {
    let mut samples = Vec::new();
    for (name, json, stderr) in SAMPLES {
        let mut found = Vec::new();
        read_slice(json.as_bytes(), &mut |item| {
            found.extend(diagnose_item(&item, &Evidence::default()));
        })
        .with_context(|| format!("built-in sample {name}"))?;
        samples.extend(
            found
                .into_iter()
                .map(|d| (format!("sample {name}"), d, *stderr)),
        );
    }
    Ok(samples)
}

/// `FILE:LINE:COL: message`, one per problem.
fn error_lines(file: &str, errors: &diagnosis::policy::PolicyErrors) -> Vec<String> {
    errors
        .errors
        .iter()
        .map(|e| format!("{file}:{}:{}: {}", e.line, e.column, e.message))
        .collect()
}

fn summary(policy: &Policy) -> String {
    let actions = if !policy.actions.enabled {
        "job actions off".to_owned()
    } else {
        format!(
            "job actions on{}, at most {}/hour",
            if policy.actions.dry_run {
                " (dry run)"
            } else {
                " (LIVE)"
            },
            policy.actions.max_per_hour.unwrap_or(0)
        )
    };
    format!(
        "{} receivers, {} rules, {} silences; {actions}; default grouping by [{}], wait {}, interval {}, repeat {}; {}",
        policy.receivers.len(),
        policy.rules.len(),
        policy.silences.len(),
        policy.grouping.group_by.join(", "),
        format_duration(policy.grouping.group_wait),
        format_duration(policy.grouping.group_interval),
        format_duration(policy.grouping.repeat_interval),
        growth(&policy.grouping),
    )
}

/// How a notified group's growth is announced, for people.
fn growth(grouping: &diagnosis::policy::Grouping) -> String {
    match grouping.renotify_on_growth {
        Some(factor) => format!(
            "a notified group that grew ×{factor} (or past 10, 100, 1,000…) is announced again after the interval"
        ),
        None => "growth is announced only at repeat".to_owned(),
    }
}

/// What a rule's escalation does for a diagnosis: the threshold, and where the raised severity
/// routes it besides where it already goes.
fn escalation(
    d: &Diagnosis,
    receiver: &diagnosis::policy::PlannedReceiver,
    planned: &Plan,
    policy: &Policy,
) -> Option<String> {
    let rule = receiver.grouping.escalate.as_ref()?;
    let mut when = Vec::new();
    if let Some(n) = rule.min_count {
        when.push(format!("{n} failures"));
    }
    if let Some(p) = rule.min_job_percent {
        when.push(format!(
            "more than {p}% of the job's tasks (from live task counts)"
        ));
    }
    let mut raised = d.clone();
    raised.severity = raised.severity.max(rule.severity);
    let now = time::OffsetDateTime::now_utc();
    let then = plan(&raised, policy, now, &PlanContext::default());
    let added: Vec<&str> = then
        .receivers
        .iter()
        .filter(|r| {
            r.receiver != receiver.receiver
                && !planned.receivers.iter().any(|p| p.group_key == r.group_key)
        })
        .map(|r| r.receiver.as_str())
        .collect();
    Some(format!(
        "  escalate: group {} → {} once it reaches {}; then also {}\n",
        receiver.receiver,
        rule.severity,
        when.join(" or "),
        if added.is_empty() {
            "nobody new".to_owned()
        } else {
            added.join(", ")
        }
    ))
}

fn describe(name: &str, d: &Diagnosis, planned: &Plan, policy: &Policy) -> String {
    let s = &d.subject;
    let subject = [
        s.account.as_deref(),
        s.job_id.as_deref(),
        s.task_id.as_deref().or(s.node_id.as_deref()),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join("/");
    let mut out = format!("{name}: {subject} — {} ({})\n", d.class, d.severity);
    let rules = if planned.matched_rules.is_empty() {
        "(none)".to_owned()
    } else {
        planned.matched_rules.join(", ")
    };
    out.push_str(&format!("  rules:    {rules}\n"));
    if planned.receivers.is_empty() && planned.silenced_receivers.is_empty() {
        out.push_str("  notify:   nobody\n");
    }
    for r in &planned.receivers {
        out.push_str(&format!(
            "  notify:   {} (rule {}; wait {}) group {}\n",
            r.receiver,
            r.rule,
            format_duration(r.grouping.group_wait),
            r.group_key
        ));
        out.push_str(&escalation(d, r, planned, policy).unwrap_or_default());
    }
    if let Some(comment) = &planned.silenced_by {
        let muted: Vec<&str> = planned
            .silenced_receivers
            .iter()
            .map(|r| r.receiver.as_str())
            .collect();
        out.push_str(&format!(
            "  silenced: {comment:?} (mutes {})\n",
            if muted.is_empty() {
                "nothing routed".to_owned()
            } else {
                muted.join(", ")
            }
        ));
    }
    let mut keep = if planned.preserve_logs {
        "standard logs".to_owned()
    } else {
        "nothing".to_owned()
    };
    for glob in &planned.preserve {
        keep.push_str(&format!(
            " + {} (≤{} bytes each)",
            glob.glob, glob.max_bytes
        ));
    }
    out.push_str(&format!("  preserve: {keep}\n"));
    out.push_str(&format!(
        "  action:   {}\n",
        action_line(planned.action.as_ref(), policy)
    ));
    if planned.console {
        out.push_str("  console:  printed\n");
    }
    out
}

fn action_line(action: Option<&ActionPlan>, policy: &Policy) -> String {
    let Some(a) = action else {
        return "none".to_owned();
    };
    let mut notes = Vec::new();
    if !a.globally_enabled {
        notes.push("SKIPPED: [actions] enabled = false".to_owned());
    } else if a.dry_run {
        notes.push("dry run: audited, nothing sent to Batch".to_owned());
    } else {
        notes.push("LIVE, with If-Match on the job's ETag".to_owned());
    }
    match &a.threshold {
        Threshold::NotSet => notes.push("no threshold".to_owned()),
        Threshold::Unknown { .. } => {
            let rule = policy.rules.iter().find(|r| r.name == a.rule);
            let mut wants = Vec::new();
            if let Some(n) = rule.and_then(|r| r.action.min_failed_tasks) {
                wants.push(format!("≥{n} failed tasks"));
            }
            if let Some(p) = rule.and_then(|r| r.action.min_failed_percent) {
                wants.push(format!("≥{p}% of the job"));
            }
            notes.push(format!(
                "threshold {} checked against live task counts",
                wants.join(" and ")
            ));
        }
        other => notes.push(format!("threshold: {}", other.describe())),
    }
    if let Some(n) = a.max_per_hour {
        notes.push(format!("budget {n}/hour"));
    }
    format!("{} — {:?} — {}", a.kind, a.reason, notes.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_policy_is_accepted_and_acts_as_documented() {
        let text = include_str!("../../../examples/policy.toml");
        let policy = match Policy::parse(text) {
            Ok(policy) => policy,
            Err(errors) => panic!(
                "{}",
                error_lines("examples/policy.toml", &errors).join("\n")
            ),
        };
        assert!(policy.actions.enabled && policy.actions.dry_run);
        let now = OffsetDateTime::parse("2026-11-20T10:00:00Z", &Rfc3339).unwrap();
        for (name, d, stderr) in builtin_samples().unwrap() {
            let ctx = PlanContext {
                stderr_tail: stderr,
                ..PlanContext::default()
            };
            let planned = plan(&d, &policy, now, &ctx);
            let text = describe(&name, &d, &planned, &policy);
            assert!(text.contains("rules:"), "{text}");
            if name.ends_with("prep-status-one-node-failed") {
                assert_eq!(
                    planned.matched_rules,
                    ["everything-to-siem", "stuck-jobs"],
                    "{text}"
                );
                assert!(text.contains("disable (disableTasks=wait)"), "{text}");
                assert!(text.contains("dry run"), "{text}");
            }
            if name.ends_with("exit-137-oom") {
                assert_eq!(
                    planned.matched_rules,
                    ["everything-to-siem", "kill-oom"],
                    "{text}"
                );
                assert!(text.contains("terminate — "), "{text}");
                assert!(text.contains("threshold ≥20 failed tasks and ≥10% of the job checked against live task counts"), "{text}");
                assert!(text.contains("wd/logs/*.log"), "{text}");
                assert!(
                    text.contains("escalate: group ml-mail → critical once it reaches 1000 failures or more than 20% of the job's tasks"),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn errors_are_printed_as_file_line_column() {
        let errors =
            Policy::parse("[[rules]]\nname = \"r\"\nreceivers = [\"nobody\"]\n").unwrap_err();
        assert_eq!(
            error_lines("p.toml", &errors),
            ["p.toml:3:14: rule \"r\" names unknown receiver \"nobody\" (defined: [])"]
        );
    }
}
