//! [`plan`]: what to do about one diagnosis under a policy. Pure: the clock and every fact
//! fetched from Batch come in as arguments.

use time::OffsetDateTime;

use super::{ActionKind, Grouping, Matchers, Policy, PreserveGlob, Rule, RuleAction};
use crate::classes::FailureClass;
use crate::redact::redact;
use crate::report::Diagnosis;
use crate::wire::TaskCounts;

/// Facts beyond the diagnosis that rules can look at. All optional: a missing fact makes the
/// conditions that need it not hold (stderr regexes) or unknown (thresholds).
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanContext<'a> {
    /// The end of the task's stderr; it is redacted again before matching.
    pub stderr_tail: Option<&'a str>,
    /// The job's task counts (Get Job Task Counts), for percentage thresholds.
    pub job_task_counts: Option<&'a TaskCounts>,
    /// How many of the job's tasks failed with this diagnosis's class, when the caller counted.
    pub failed_with_class_count: Option<u64>,
}

/// What to do about one diagnosis.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Names of the rules that matched and were taken, in order.
    pub matched_rules: Vec<String>,
    /// Where to notify, each with the group its alert belongs to. Empty when silenced.
    pub receivers: Vec<PlannedReceiver>,
    /// Receivers a silence muted (shown by `policy check`, never notified).
    pub silenced_receivers: Vec<PlannedReceiver>,
    /// Keep the standard logs (every failure, and anything a rule matched).
    pub preserve_logs: bool,
    /// Extra files the matched rules ask for.
    pub preserve: Vec<PreserveGlob>,
    /// The job action of the first taken rule that has one, with its guards evaluated.
    pub action: Option<ActionPlan>,
    /// The comment of the silence that muted notifications, if one did.
    pub silenced_by: Option<String>,
    /// Print the diagnosis to the console as well.
    pub console: bool,
}

/// One receiver to notify, and how its alerts are grouped.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedReceiver {
    /// The receiver's name.
    pub receiver: String,
    /// The rule that routed here.
    pub rule: String,
    /// The group this alert joins (rule, receiver and the `group_by` labels' values).
    pub group_key: String,
    /// The rule's grouping timings.
    pub grouping: Grouping,
}

/// A job action the policy asks for, with every guard's verdict, so the executor can act or
/// audit why it did not.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionPlan {
    /// What to do.
    pub kind: ActionKind,
    /// The rule asking for it.
    pub rule: String,
    /// Why, naming the rule, for people and audit records.
    pub reason: String,
    /// The `terminateReason` sent with Terminate Job: the reason shortened to Batch's limit of
    /// [`TERMINATE_REASON_MAX`] characters, still naming the rule.
    pub terminate_reason: String,
    /// Only pretend (globally or for this rule).
    pub dry_run: bool,
    /// Actions are switched on globally (`[actions] enabled`).
    pub globally_enabled: bool,
    /// The hourly budget (`[actions] max_per_hour`).
    pub max_per_hour: Option<u32>,
    /// The threshold verdict with the counts known at planning time.
    pub threshold: Threshold,
}

impl ActionPlan {
    /// Whether the guards known at planning time allow the action (the executor still checks
    /// the budget, dedupe and the job's ETag).
    pub fn allowed(&self) -> bool {
        self.globally_enabled && self.threshold.allows()
    }
}

/// The verdict of a rule's `min_failed_tasks` / `min_failed_percent`.
#[derive(Debug, Clone, PartialEq)]
pub enum Threshold {
    /// The rule has no threshold.
    NotSet,
    /// Every threshold is met; says by how much.
    Met {
        /// For people and audit records.
        detail: String,
    },
    /// A threshold is not met.
    NotMet {
        /// For people and audit records.
        detail: String,
    },
    /// The counts needed are not known, so the action must not happen.
    Unknown {
        /// For people and audit records.
        detail: String,
    },
}

impl Threshold {
    /// Whether the action may go ahead as far as thresholds go.
    pub fn allows(&self) -> bool {
        matches!(self, Self::NotSet | Self::Met { .. })
    }

    /// A one-line description.
    pub fn describe(&self) -> &str {
        match self {
            Self::NotSet => "no threshold",
            Self::Met { detail } | Self::NotMet { detail } | Self::Unknown { detail } => detail,
        }
    }
}

/// Evaluates a rule's thresholds. The failure count is `failed_with_class` when the caller
/// counted it, else the job's `failed` count (failures of any class, an upper bound); the
/// percentage is of all the job's tasks (active + running + completed). Both thresholds, when
/// set, must be met.
pub fn evaluate_threshold(
    action: &RuleAction,
    class: FailureClass,
    counts: Option<&TaskCounts>,
    failed_with_class: Option<u64>,
) -> Threshold {
    if action.min_failed_tasks.is_none() && action.min_failed_percent.is_none() {
        return Threshold::NotSet;
    }
    let (failed, what) = match (failed_with_class, counts) {
        (Some(n), _) => (n, format!("failed with {class}")),
        (None, Some(c)) => (
            u64::try_from(c.failed).unwrap_or(0),
            "failed (any class)".to_owned(),
        ),
        (None, None) => {
            return Threshold::Unknown {
                detail: "no failure count is known, so the threshold cannot be checked".to_owned(),
            };
        }
    };
    let mut met = Vec::new();
    if let Some(min) = action.min_failed_tasks {
        if failed < min {
            return Threshold::NotMet {
                detail: format!("{failed} tasks {what}, fewer than min_failed_tasks = {min}"),
            };
        }
        met.push(format!("{failed} tasks {what} (min {min})"));
    }
    if let Some(min) = action.min_failed_percent {
        let Some(total) = counts.map(|c| {
            [c.active, c.running, c.completed]
                .into_iter()
                .map(|n| u64::try_from(n).unwrap_or(0))
                .sum::<u64>()
        }) else {
            return Threshold::Unknown {
                detail:
                    "the job's task counts are not known, so min_failed_percent cannot be checked"
                        .to_owned(),
            };
        };
        if total == 0 {
            return Threshold::Unknown {
                detail: "the job reports no tasks, so min_failed_percent cannot be checked"
                    .to_owned(),
            };
        }
        #[allow(clippy::cast_precision_loss)]
        let percent = failed as f64 * 100.0 / total as f64;
        if percent < min {
            return Threshold::NotMet {
                detail: format!(
                    "{failed} of {total} tasks {what} = {percent:.1}%, below min_failed_percent = {min}"
                ),
            };
        }
        met.push(format!(
            "{failed} of {total} tasks {what} = {percent:.1}% (min {min}%)"
        ));
    }
    Threshold::Met {
        detail: met.join("; "),
    }
}

/// Whether every set condition of `m` holds for `d` (and the stderr tail, when a condition needs
/// it).
pub(crate) fn matches(m: &Matchers, d: &Diagnosis, stderr: Option<&str>) -> bool {
    let opt = |pattern: &Option<super::Pattern>, value: Option<&str>| match pattern {
        None => true,
        Some(p) => value.is_some_and(|v| p.is_match(v)),
    };
    opt(&m.class, Some(d.class.as_str()))
        && m.min_severity.is_none_or(|min| d.severity >= min)
        && m.exit_meaning
            .is_none_or(|want| d.exit_meaning == Some(want))
        && opt(
            &m.failure_code,
            d.failure.as_ref().and_then(|f| f.code.as_deref()),
        )
        && opt(&m.account, d.subject.account.as_deref())
        && opt(&m.job, d.subject.job_id.as_deref())
        && opt(&m.pool, d.subject.pool_id.as_deref())
        && match &m.stderr {
            None => true,
            Some(regex) => stderr.is_some_and(|s| regex.is_match(s)),
        }
}

/// Decides what to do about `diagnosis`: rules in order (first match wins unless the rule says
/// `continue = true`), silences active at `now`, each receiver's group key, extra files and the
/// job action with its threshold verdict. A policy with no rules keeps the logs of every
/// failure, notifies nobody and acts on nothing.
pub fn plan(
    diagnosis: &Diagnosis,
    policy: &Policy,
    now: OffsetDateTime,
    ctx: &PlanContext<'_>,
) -> Plan {
    let stderr = ctx.stderr_tail.map(redact);
    let stderr = stderr.as_deref();
    let mut taken: Vec<&Rule> = Vec::new();
    for rule in &policy.rules {
        if matches(&rule.matchers, diagnosis, stderr) {
            taken.push(rule);
            if !rule.continue_matching {
                break;
            }
        }
    }
    let mut receivers = Vec::new();
    for rule in &taken {
        for receiver in &rule.receivers {
            let key = group_key(rule, receiver, diagnosis);
            if !receivers
                .iter()
                .any(|r: &PlannedReceiver| r.group_key == key)
            {
                receivers.push(PlannedReceiver {
                    receiver: receiver.clone(),
                    rule: rule.name.clone(),
                    group_key: key,
                    grouping: rule.grouping.clone(),
                });
            }
        }
    }
    let silence = policy
        .silences
        .iter()
        .find(|s| s.is_active(now) && matches(&s.matchers, diagnosis, stderr));
    let (receivers, silenced_receivers) = match silence {
        Some(_) => (Vec::new(), receivers),
        None => (receivers, Vec::new()),
    };
    let mut preserve: Vec<PreserveGlob> = Vec::new();
    for glob in taken.iter().flat_map(|r| &r.preserve) {
        if !preserve.contains(glob) {
            preserve.push(glob.clone());
        }
    }
    let action = taken
        .iter()
        .find(|r| r.action.kind != ActionKind::None)
        .map(|rule| {
            let threshold = evaluate_threshold(
                &rule.action,
                diagnosis.class,
                ctx.job_task_counts,
                ctx.failed_with_class_count,
            );
            ActionPlan {
                kind: rule.action.kind.clone(),
                rule: rule.name.clone(),
                reason: action_reason(&rule.name, diagnosis, ctx.failed_with_class_count),
                terminate_reason: terminate_reason(
                    &rule.name,
                    diagnosis,
                    ctx.failed_with_class_count,
                ),
                dry_run: policy.actions.dry_run || rule.action.dry_run,
                globally_enabled: policy.actions.enabled,
                max_per_hour: policy.actions.max_per_hour,
                threshold,
            }
        });
    Plan {
        matched_rules: taken.iter().map(|r| r.name.clone()).collect(),
        receivers,
        silenced_receivers,
        preserve_logs: diagnosis.class.is_failure() || !taken.is_empty(),
        preserve,
        action,
        silenced_by: silence.map(|s| s.comment.clone()),
        console: policy.console,
    }
}

/// The Terminate Job reason / audit text: `batch-triage rule "kill-oom": 37 tasks failed with
/// task.exit_code`. Kept short, since Batch stores it as the job's terminateReason.
pub fn action_reason(rule: &str, diagnosis: &Diagnosis, failed_with_class: Option<u64>) -> String {
    let what = match failed_with_class {
        Some(n) => format!("{n} tasks failed with {}", diagnosis.class),
        None => match &diagnosis.subject.task_id {
            Some(task) => format!("task {task} failed with {}", diagnosis.class),
            None => format!("{}", diagnosis.class),
        },
    };
    let mut reason = format!("batch-triage rule \"{rule}\": {what}");
    if reason.chars().count() > 200 {
        reason = reason.chars().take(200).collect();
    }
    reason
}

/// The longest `terminateReason` Batch accepts.
pub const TERMINATE_REASON_MAX: usize = 64;

/// The `terminateReason` for Terminate Job: [`action_reason`] if it fits in
/// [`TERMINATE_REASON_MAX`] characters, else shorter forms that still name the rule.
pub fn terminate_reason(
    rule: &str,
    diagnosis: &Diagnosis,
    failed_with_class: Option<u64>,
) -> String {
    let full = action_reason(rule, diagnosis, failed_with_class);
    let what = full
        .split_once("\": ")
        .map_or(String::new(), |(_, what)| what.to_owned());
    let candidates = [
        full.clone(),
        format!("batch-triage \"{rule}\": {what}"),
        format!("batch-triage rule \"{rule}\""),
    ];
    for candidate in candidates {
        if candidate.chars().count() <= TERMINATE_REASON_MAX {
            return candidate;
        }
    }
    let mut short: String = full.chars().take(TERMINATE_REASON_MAX - 1).collect();
    short.push('…');
    short
}

/// The group an alert joins: the rule, the receiver and the values of the rule's `group_by`
/// labels, as `rule=…;receiver=…;job=…`. Missing values are `-`; `;`, `=` and `%` in values are
/// percent-escaped so keys never collide.
pub fn group_key(rule: &Rule, receiver: &str, d: &Diagnosis) -> String {
    let mut key = format!("rule={};receiver={}", escape(&rule.name), escape(receiver));
    for label in &rule.grouping.group_by {
        let value = match label.as_str() {
            "account" => d.subject.account.clone(),
            "job" => d.subject.job_id.clone(),
            "pool" => d.subject.pool_id.clone(),
            "class" => Some(d.class.as_str().to_owned()),
            "fingerprint" => Some(d.fingerprint.clone()),
            "exit_meaning" => d.exit_meaning.map(|m| m.as_str().to_owned()),
            "failure_code" => d.failure.as_ref().and_then(|f| f.code.clone()),
            "severity" => Some(d.severity.as_str().to_owned()),
            _ => None,
        };
        key.push_str(&format!(
            ";{label}={}",
            value.as_deref().map_or_else(|| "-".to_owned(), escape)
        ));
    }
    key
}

fn escape(value: &str) -> String {
    value
        .replace('%', "%25")
        .replace(';', "%3B")
        .replace('=', "%3D")
}
