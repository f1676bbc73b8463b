//! TOML → [`Policy`]: serde with spans for the shape, then a semantic pass that collects every
//! problem with its line and column.

use std::ops::Range;

use globset::GlobBuilder;
use regex::RegexBuilder;
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use toml::Spanned;

use super::{
    ActionKind, ActionsConfig, DEFAULT_PRESERVE_MAX_BYTES, GROUP_LABELS, Grouping, Matchers,
    Pattern, Policy, PolicyError, PolicyErrors, PreserveGlob, Receiver, Rule, RuleAction, Silence,
    parse_duration, pattern_matches_some_class,
};
use crate::classes::{ExitMeaning, Severity};
use crate::wire::DisableTasks;

/// Receiver setting names whose values are secrets and so must come from the environment.
const SECRET_SETTINGS: &[&str] = &[
    "url",
    "webhook_url",
    "password",
    "token",
    "secret",
    "key",
    "api_key",
    "access_key",
    "connection_string",
    "sas",
];

/// The longest regex source accepted; bigger ones are not what a rule needs.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    console: Option<bool>,
    #[serde(default)]
    receivers: Vec<Spanned<RawReceiver>>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
    #[serde(default)]
    grouping: Option<Spanned<RawGrouping>>,
    #[serde(default)]
    silences: Vec<Spanned<RawSilence>>,
    #[serde(default)]
    actions: Option<Spanned<RawActions>>,
}

#[derive(Deserialize)]
struct RawReceiver {
    name: Spanned<String>,
    kind: Spanned<String>,
    #[serde(flatten)]
    settings: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    #[serde(rename = "match", default)]
    matchers: Option<Spanned<RawMatchers>>,
    #[serde(default)]
    receivers: Vec<Spanned<String>>,
    #[serde(default)]
    preserve: Vec<Spanned<String>>,
    #[serde(default)]
    preserve_max_bytes: Option<Spanned<i64>>,
    #[serde(default)]
    action: Option<Spanned<RawAction>>,
    #[serde(rename = "continue", default)]
    continue_matching: bool,
    #[serde(default)]
    grouping: Option<Spanned<RawGrouping>>,
    #[serde(default)]
    escalate: Option<Spanned<super::parse_escalate::RawEscalate>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMatchers {
    class: Option<Spanned<String>>,
    severity: Option<Spanned<String>>,
    exit_meaning: Option<Spanned<String>>,
    failure_code: Option<Spanned<String>>,
    account: Option<Spanned<String>>,
    job: Option<Spanned<String>>,
    pool: Option<Spanned<String>>,
    stderr: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    kind: Spanned<String>,
    disable_tasks: Option<Spanned<String>>,
    dry_run: Option<bool>,
    min_failed_tasks: Option<Spanned<i64>>,
    min_failed_percent: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrouping {
    group_by: Option<Vec<Spanned<String>>>,
    group_wait: Option<Spanned<String>>,
    group_interval: Option<Spanned<String>>,
    repeat_interval: Option<Spanned<String>>,
    renotify_on_growth: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSilence {
    #[serde(rename = "match")]
    matchers: Spanned<RawMatchers>,
    expires: Spanned<toml::Value>,
    comment: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActions {
    enabled: Option<bool>,
    dry_run: Option<bool>,
    max_per_hour: Option<Spanned<i64>>,
}

/// Collects errors with positions computed from byte offsets into the text.
pub(super) struct Errors<'a> {
    text: &'a str,
    errors: Vec<PolicyError>,
}

impl Errors<'_> {
    pub(super) fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = line_column(self.text, span.start);
        self.errors.push(PolicyError {
            line,
            column,
            message: message.into(),
        });
    }
}

/// 1-based line and column (in characters) of a byte offset; offsets past the end or inside a
/// character are clamped, so a bad span never panics.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

pub(super) fn parse(text: &str) -> Result<Policy, PolicyErrors> {
    let raw: RawPolicy = toml::from_str(text).map_err(|error| {
        let (line, column) = error
            .span()
            .map_or((1, 1), |span| line_column(text, span.start));
        PolicyErrors {
            errors: vec![PolicyError {
                line,
                column,
                message: error.message().trim().to_owned(),
            }],
        }
    })?;
    let mut errors = Errors {
        text,
        errors: Vec::new(),
    };
    let policy = check(raw, &mut errors);
    if errors.errors.is_empty() {
        Ok(policy)
    } else {
        errors.errors.sort_by_key(|e| (e.line, e.column));
        Err(PolicyErrors {
            errors: errors.errors,
        })
    }
}

fn check(raw: RawPolicy, errors: &mut Errors<'_>) -> Policy {
    let receivers = check_receivers(raw.receivers, errors);
    let grouping = match raw.grouping {
        Some(raw) => grouping_over(&Grouping::default(), raw, errors),
        None => Grouping::default(),
    };
    let actions = match raw.actions {
        None => ActionsConfig::default(),
        Some(spanned) => check_actions(spanned, errors),
    };
    let mut rules: Vec<Rule> = Vec::new();
    for spanned in raw.rules {
        let rule = check_rule(spanned.into_inner(), &rules, &receivers, &grouping, errors);
        rules.push(rule);
    }
    let silences = raw
        .silences
        .into_iter()
        .map(|spanned| check_silence(spanned.into_inner(), errors))
        .collect();
    Policy {
        receivers,
        rules,
        grouping,
        silences,
        actions,
        console: raw.console.unwrap_or(true),
    }
}

/// Receivers: unique names, lowercase kinds, and no secret written in the file.
fn check_receivers(raw: Vec<Spanned<RawReceiver>>, errors: &mut Errors<'_>) -> Vec<Receiver> {
    let mut receivers: Vec<Receiver> = Vec::new();
    for spanned in raw {
        let receiver = spanned.into_inner();
        let name = receiver.name.get_ref().trim().to_owned();
        if name.is_empty() {
            errors.at(receiver.name.span(), "receiver name is empty");
        } else if receivers.iter().any(|r| r.name == name) {
            errors.at(
                receiver.name.span(),
                format!("receiver {name:?} is defined twice"),
            );
        }
        let kind = receiver.kind.get_ref().trim().to_owned();
        if kind.is_empty()
            || !kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'-')
        {
            errors.at(
                receiver.kind.span(),
                format!("receiver kind {kind:?} is not a lowercase name like \"teams\", \"email\" or \"webhook\""),
            );
        }
        for (key, value) in &receiver.settings {
            if SECRET_SETTINGS.contains(&key.as_str()) && value.is_str() {
                errors.at(
                    receiver.name.span(),
                    format!(
                        "receiver {name:?}: `{key}` is a secret and must not be written in the policy; put it in an environment variable and write `{key}_env = \"VARIABLE\"`"
                    ),
                );
            }
            if key.ends_with("_env") {
                let valid = value.as_str().is_some_and(|v| {
                    !v.is_empty()
                        && !v.starts_with(|c: char| c.is_ascii_digit())
                        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                });
                if !valid {
                    errors.at(
                        receiver.name.span(),
                        format!("receiver {name:?}: `{key}` must name an environment variable (letters, digits and _)"),
                    );
                }
            }
        }
        receivers.push(Receiver {
            name,
            kind,
            settings: receiver.settings,
        });
    }
    receivers
}

/// `[actions]`: off and dry-run unless said otherwise, and never enabled without a budget.
fn check_actions(spanned: Spanned<RawActions>, errors: &mut Errors<'_>) -> ActionsConfig {
    let span = spanned.span();
    let raw = spanned.into_inner();
    let max_per_hour = match raw.max_per_hour {
        None => None,
        Some(value) => match u32::try_from(*value.get_ref()) {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                errors.at(
                    value.span(),
                    "max_per_hour must be a whole number from 1 to 4294967295",
                );
                None
            }
        },
    };
    let enabled = raw.enabled.unwrap_or(false);
    if enabled && max_per_hour.is_none() {
        errors.at(
            span,
            "actions are enabled but have no budget: set `max_per_hour` (e.g. 5)",
        );
    }
    ActionsConfig {
        enabled,
        dry_run: raw.dry_run.unwrap_or(true),
        max_per_hour,
    }
}

/// One rule, checked against the rules before it (for duplicate names), the receivers and the
/// policy's grouping (which the rule's own `grouping` overrides).
fn check_rule(
    rule: RawRule,
    rules: &[Rule],
    receivers: &[Receiver],
    grouping: &Grouping,
    errors: &mut Errors<'_>,
) -> Rule {
    let name = rule.name.get_ref().trim().to_owned();
    if name.is_empty() {
        errors.at(rule.name.span(), "rule name is empty");
    } else if rules.iter().any(|r| r.name == name) {
        errors.at(rule.name.span(), format!("rule {name:?} is defined twice"));
    } else if name.contains('"') || name.chars().any(char::is_control) {
        errors.at(
            rule.name.span(),
            format!("rule name {name:?} must not contain quotes or control characters"),
        );
    }
    let matchers = match rule.matchers {
        Some(m) => matchers(m.into_inner(), errors),
        None => Matchers::default(),
    };
    let mut rule_receivers = Vec::new();
    for receiver in rule.receivers {
        let wanted = receiver.get_ref().trim();
        if !receivers.iter().any(|r| r.name == wanted) {
            let known: Vec<&str> = receivers.iter().map(|r| r.name.as_str()).collect();
            errors.at(
                receiver.span(),
                format!("rule {name:?} names unknown receiver {wanted:?} (defined: {known:?})"),
            );
        } else if !rule_receivers.iter().any(|r| r == wanted) {
            rule_receivers.push(wanted.to_owned());
        }
    }
    let max_bytes = match rule.preserve_max_bytes {
        None => DEFAULT_PRESERVE_MAX_BYTES,
        Some(value) => match u64::try_from(*value.get_ref()) {
            Ok(n) if n >= 1 => n,
            _ => {
                errors.at(
                    value.span(),
                    "preserve_max_bytes must be a positive number of bytes",
                );
                DEFAULT_PRESERVE_MAX_BYTES
            }
        },
    };
    let preserve = preserve_globs(rule.preserve, max_bytes, errors);
    let action = match rule.action {
        None => RuleAction::default(),
        Some(action) => rule_action(action, errors),
    };
    let mut grouping = match rule.grouping {
        Some(raw) => grouping_over(grouping, raw, errors),
        None => grouping.clone(),
    };
    grouping.escalate = rule
        .escalate
        .and_then(|raw| super::parse_escalate::escalation(raw, errors));
    Rule {
        name,
        matchers,
        receivers: rule_receivers,
        preserve,
        action,
        continue_matching: rule.continue_matching,
        grouping,
    }
}

/// A rule's preserve globs: under `wd/`, without `..`, and valid globs.
fn preserve_globs(
    globs: Vec<Spanned<String>>,
    max_bytes: u64,
    errors: &mut Errors<'_>,
) -> Vec<PreserveGlob> {
    let mut preserve = Vec::new();
    for glob in globs {
        let text = glob.get_ref().trim();
        // The copier compiles the glob with the same function: one interpretation.
        let problem = super::preserve_glob(text).err();
        match problem {
            Some(problem) => errors.at(glob.span(), format!("preserve glob {text:?} {problem}")),
            None => preserve.push(PreserveGlob {
                glob: text.to_owned(),
                max_bytes,
            }),
        }
    }
    preserve
}

/// A silence: some matcher, an RFC 3339 expiry and a comment.
fn check_silence(silence: RawSilence, errors: &mut Errors<'_>) -> Silence {
    let matchers_span = silence.matchers.span();
    let matchers = matchers(silence.matchers.into_inner(), errors);
    if is_empty(&matchers) {
        errors.at(
            matchers_span,
            "a silence with no matchers would mute everything; name a class, job, … to mute",
        );
    }
    let expires = match silence.expires.get_ref() {
        toml::Value::String(text) => OffsetDateTime::parse(text, &Rfc3339).ok(),
        toml::Value::Datetime(datetime) => {
            OffsetDateTime::parse(&datetime.to_string(), &Rfc3339).ok()
        }
        _ => None,
    };
    if expires.is_none() {
        errors.at(
            silence.expires.span(),
            "expires must be an RFC 3339 time with an offset, e.g. 2026-12-31T18:00:00Z",
        );
    }
    if silence.comment.get_ref().trim().is_empty() {
        errors.at(
            silence.comment.span(),
            "a silence needs a comment saying who and why",
        );
    }
    Silence {
        matchers,
        expires: expires.unwrap_or(OffsetDateTime::UNIX_EPOCH),
        comment: silence.comment.into_inner(),
    }
}

fn is_empty(m: &Matchers) -> bool {
    m.class.is_none()
        && m.min_severity.is_none()
        && m.exit_meaning.is_none()
        && m.failure_code.is_none()
        && m.account.is_none()
        && m.job.is_none()
        && m.pool.is_none()
        && m.stderr.is_none()
}

fn glob(
    raw: Option<Spanned<String>>,
    case_insensitive: bool,
    what: &str,
    errors: &mut Errors<'_>,
) -> Option<Pattern> {
    let raw = raw?;
    let source = raw.get_ref().trim().to_owned();
    match GlobBuilder::new(&source)
        .literal_separator(false)
        .case_insensitive(case_insensitive)
        .build()
    {
        Ok(glob) => Some(Pattern {
            source,
            matcher: glob.compile_matcher(),
        }),
        Err(error) => {
            errors.at(
                raw.span(),
                format!("{what} glob {source:?}: {}", error.kind()),
            );
            None
        }
    }
}

fn matchers(raw: RawMatchers, errors: &mut Errors<'_>) -> Matchers {
    let class_span = raw.class.as_ref().map(Spanned::span);
    let class = glob(raw.class, false, "class", errors);
    if let (Some(pattern), Some(span)) = (&class, class_span) {
        if !pattern_matches_some_class(pattern) {
            errors.at(
                span,
                format!("class {:?} matches no failure class (e.g. \"task.exit_code\", \"task.*\", \"job.*\")", pattern.source),
            );
        }
    }
    let min_severity = raw.severity.and_then(|s| {
        let parsed = Severity::parse(s.get_ref().trim());
        if parsed.is_none() {
            errors.at(
                s.span(),
                format!(
                    "unknown severity {:?} (info, warning, error, critical)",
                    s.get_ref()
                ),
            );
        }
        parsed
    });
    let exit_meaning = raw.exit_meaning.and_then(|s| {
        let parsed = ExitMeaning::parse(s.get_ref().trim());
        if parsed.is_none() {
            let known: Vec<&str> = ExitMeaning::ALL.iter().map(|m| m.as_str()).collect();
            errors.at(
                s.span(),
                format!("unknown exit_meaning {:?} (one of {known:?})", s.get_ref()),
            );
        }
        parsed
    });
    let stderr = raw.stderr.and_then(|s| {
        match RegexBuilder::new(s.get_ref())
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
        {
            Ok(regex) => Some(regex),
            Err(error) => {
                let last_line = error.to_string();
                let last_line = last_line.lines().last().unwrap_or_default().trim();
                let last_line = last_line
                    .strip_prefix("error: ")
                    .unwrap_or(last_line)
                    .to_owned();
                errors.at(
                    s.span(),
                    format!("stderr regex {:?} is invalid: {last_line}", s.get_ref()),
                );
                None
            }
        }
    });
    Matchers {
        class,
        min_severity,
        exit_meaning,
        failure_code: glob(raw.failure_code, true, "failure_code", errors),
        account: glob(raw.account, false, "account", errors),
        job: glob(raw.job, false, "job", errors),
        pool: glob(raw.pool, false, "pool", errors),
        stderr,
    }
}

fn rule_action(spanned: Spanned<RawAction>, errors: &mut Errors<'_>) -> RuleAction {
    let action_span = spanned.span();
    let raw = spanned.into_inner();
    let disable_tasks = raw.disable_tasks.as_ref().and_then(|d| {
        match DisableTasks::from_wire(d.get_ref().trim()) {
            DisableTasks::Other(other) => {
                errors.at(
                    d.span(),
                    format!(
                        "disable_tasks {other:?} must be \"requeue\", \"terminate\" or \"wait\""
                    ),
                );
                None
            }
            known => Some(known),
        }
    });
    let kind = match raw.kind.get_ref().trim() {
        "none" => ActionKind::None,
        "terminate" => ActionKind::Terminate,
        "disable" => match (disable_tasks.clone(), &raw.disable_tasks) {
            (Some(tasks), _) => ActionKind::Disable(tasks),
            (None, Some(_)) => ActionKind::None,
            (None, None) => {
                errors.at(
                    raw.kind.span(),
                    "a disable action needs disable_tasks = \"requeue\", \"terminate\" or \"wait\" (what happens to running tasks)",
                );
                ActionKind::None
            }
        },
        other => {
            errors.at(
                raw.kind.span(),
                format!("unknown action {other:?} (none, disable, terminate)"),
            );
            ActionKind::None
        }
    };
    if let Some(d) = &raw.disable_tasks {
        if raw.kind.get_ref().trim() != "disable" {
            errors.at(d.span(), "disable_tasks only applies to kind = \"disable\"");
        }
    }
    let min_failed_tasks = raw
        .min_failed_tasks
        .and_then(|n| match u64::try_from(*n.get_ref()) {
            Ok(value) if value >= 1 => Some(value),
            _ => {
                errors.at(n.span(), "min_failed_tasks must be at least 1");
                None
            }
        });
    let min_failed_percent = raw.min_failed_percent.and_then(|p| {
        let value = *p.get_ref();
        if value > 0.0 && value <= 100.0 {
            Some(value)
        } else {
            errors.at(
                p.span(),
                "min_failed_percent must be more than 0 and at most 100",
            );
            None
        }
    });
    if kind == ActionKind::None
        && raw.kind.get_ref().trim() == "none"
        && (min_failed_tasks.is_some() || min_failed_percent.is_some())
    {
        errors.at(
            action_span,
            "thresholds are set on an action of kind \"none\"",
        );
    }
    RuleAction {
        kind,
        dry_run: raw.dry_run.unwrap_or(false),
        min_failed_tasks,
        min_failed_percent,
    }
}

fn grouping_over(
    base: &Grouping,
    spanned: Spanned<RawGrouping>,
    errors: &mut Errors<'_>,
) -> Grouping {
    let table_span = spanned.span();
    let raw = spanned.into_inner();
    let interval_span = raw
        .group_interval
        .as_ref()
        .map_or(table_span.clone(), Spanned::span);
    let repeat_span = raw
        .repeat_interval
        .as_ref()
        .map_or(table_span.clone(), Spanned::span);
    let mut grouping = base.clone();
    if let Some(labels) = raw.group_by {
        grouping.group_by.clear();
        for label in labels {
            let text = label.get_ref().trim();
            if !GROUP_LABELS.contains(&text) {
                errors.at(
                    label.span(),
                    format!("unknown group_by label {text:?} (one of {GROUP_LABELS:?})"),
                );
            } else if !grouping.group_by.iter().any(|l| l == text) {
                grouping.group_by.push(text.to_owned());
            }
        }
    }
    for (raw, slot, what) in [
        (raw.group_wait, &mut grouping.group_wait, "group_wait"),
        (
            raw.group_interval,
            &mut grouping.group_interval,
            "group_interval",
        ),
        (
            raw.repeat_interval,
            &mut grouping.repeat_interval,
            "repeat_interval",
        ),
    ] {
        if let Some(text) = raw {
            match parse_duration(text.get_ref()) {
                Ok(duration) => *slot = duration,
                Err(message) => errors.at(text.span(), format!("{what}: {message}")),
            }
        }
    }
    if let Some(value) = raw.renotify_on_growth {
        grouping.renotify_on_growth = super::parse_escalate::renotify_on_growth(value, errors);
    }
    if grouping.group_interval.is_zero() {
        errors.at(interval_span, "group_interval must be more than 0s");
    }
    if grouping.repeat_interval < grouping.group_interval {
        errors.at(
            repeat_span,
            format!(
                "repeat_interval ({}) must be at least group_interval ({})",
                super::format_duration(grouping.repeat_interval),
                super::format_duration(grouping.group_interval)
            ),
        );
    }
    grouping
}
