//! The policy: which failures notify whom, which extra files to keep, which job
//! actions to take, how alerts are grouped, and which are silenced.
//!
//! Everything here is pure: [`Policy::parse`] turns TOML text into a checked [`Policy`] (or a list
//! of errors, each with a line and column), [`plan`] decides what to do about one [`Diagnosis`],
//! and [`decide`] is the grouping state machine. The clock is always an argument.
//!
//! ```
//! use batch_triage_diagnosis::policy::Policy;
//!
//! let policy = Policy::parse(r#"
//! [[receivers]]
//! name = "ops"
//! kind = "webhook"
//! url_env = "OPS_WEBHOOK_URL"
//!
//! [[rules]]
//! name = "oom"
//! match = { class = "task.exit_code", exit_meaning = "oom_or_sigkill" }
//! receivers = ["ops"]
//! "#).unwrap();
//! assert_eq!(policy.rules[0].name, "oom");
//!
//! let errors = Policy::parse("[[rules]]\nname = \"x\"\nreceivers = [\"nobody\"]\n").unwrap_err();
//! assert_eq!(errors.errors[0].line, 3);
//! ```
//!
//! [`Diagnosis`]: crate::Diagnosis

mod duration;
mod escalate;
mod group;
#[cfg(test)]
mod growth_tests;
#[cfg(test)]
mod node_action_tests;
mod node_actions;
mod parse;
mod parse_escalate;
mod plan;
mod preserve_glob;
mod silence;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use globset::GlobMatcher;
use regex::Regex;
use time::OffsetDateTime;

use crate::classes::{ExitMeaning, FailureClass, Severity};
use crate::wire::DisableTasks;

pub use duration::{MAX_DURATION, format_duration, parse_duration};
pub use escalate::{DEFAULT_RENOTIFY_ON_GROWTH, Escalated, Escalation, grew_enough};
pub use group::{
    AlertFacts, Decision, FingerprintSeen, GROUP_STATE_VERSION, GroupState, MAX_EXAMPLES,
    MAX_FINGERPRINTS, MAX_RECENT, Notification, decide, decide_in_place, tick,
};
pub use node_actions::{
    DEFAULT_NODE_ACTIONS_PER_POOL_PER_HOUR, NODE_START_TASK_FAILED, NODE_UNUSABLE, NodeActionKind,
    NodeActionPlan, NodeActionsConfig, RuleNodeAction, agent_logs_apply,
    keeps_agent_logs_by_default, node_action_reason,
};
pub use plan::{
    ActionPlan, Plan, PlanContext, PlannedReceiver, TERMINATE_REASON_MAX, Threshold, action_reason,
    evaluate_threshold, group_key, plan, terminate_reason,
};
pub use preserve_glob::{WORKING_DIR, preserve_glob, task_relative};
pub use silence::{MATCHER_KEYS, MatcherErrors, parse_matchers, silence_command};

/// A checked policy. Build one with [`Policy::parse`], or take [`Policy::default`] (no file): keep
/// the logs of every failure, notify nobody, act on nothing, print to the console.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Where notifications can go; rules name them.
    pub receivers: Vec<Receiver>,
    /// Routing rules, in file order (first match wins unless `continue = true`).
    pub rules: Vec<Rule>,
    /// Grouping used by rules that do not override it.
    pub grouping: Grouping,
    /// Time-boxed mutes of notifications.
    pub silences: Vec<Silence>,
    /// The global switch, dry-run and budget of job actions.
    pub actions: ActionsConfig,
    /// The global switch, dry-run and budgets of node actions.
    pub node_actions: NodeActionsConfig,
    /// Print every diagnosis to the console (stdout/log) as well; the default with no policy.
    pub console: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            receivers: Vec::new(),
            rules: Vec::new(),
            grouping: Grouping::default(),
            silences: Vec::new(),
            actions: ActionsConfig::default(),
            node_actions: NodeActionsConfig::default(),
            console: true,
        }
    }
}

impl Policy {
    /// Parses and checks a policy file's text. Every problem found is reported, each with the
    /// line and column it is at, so one run of `policy check` shows them all.
    pub fn parse(text: &str) -> Result<Self, PolicyErrors> {
        parse::parse(text)
    }

    /// The receiver called `name`.
    pub fn receiver(&self, name: &str) -> Option<&Receiver> {
        self.receivers.iter().find(|r| r.name == name)
    }
}

/// A notification target. The core keeps its settings raw: the `notify` crate interprets them
/// for its `kind`, so this crate does not depend on it. Secrets are never inline: settings name
/// environment variables (`url_env = "TEAMS_URL"`), and [`Policy::parse`] refuses inline ones.
#[derive(Debug, Clone, PartialEq)]
pub struct Receiver {
    /// The name rules use.
    pub name: String,
    /// `teams`, `email`, `webhook`, … (the notify crate says which exist).
    pub kind: String,
    /// Every other key of the `[[receivers]]` entry, verbatim.
    pub settings: toml::Table,
}

/// One routing rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// A unique name, quoted in audit records and job terminate reasons.
    pub name: String,
    /// What the rule applies to.
    pub matchers: Matchers,
    /// Receiver names (checked to exist).
    pub receivers: Vec<String>,
    /// Extra files to keep, beyond stdout/stderr.
    pub preserve: Vec<PreserveGlob>,
    /// What to do to the job.
    pub action: RuleAction,
    /// Keep matching later rules after this one (Alertmanager's `continue`).
    pub continue_matching: bool,
    /// Grouping for this rule's alerts (the defaults with this rule's overrides applied).
    pub grouping: Grouping,
    /// What to do to the node (node classes only; see [`NodeActionKind::classes`]).
    pub node_action: Option<RuleNodeAction>,
    /// Keep the node agent's logs (`uploadbatchservicelogs`); `None` leaves it to the class
    /// default ([`keeps_agent_logs_by_default`]).
    pub keep_agent_logs: Option<bool>,
}

/// Conditions on a diagnosis; all that are set must hold. Shared by rules and silences.
#[derive(Debug, Clone, Default)]
pub struct Matchers {
    /// The class, exactly or as a glob (`task.*`).
    pub class: Option<Pattern>,
    /// The severity is at least this.
    pub min_severity: Option<Severity>,
    /// The exit meaning is this one.
    pub exit_meaning: Option<ExitMeaning>,
    /// The failure code (`failureInfo.code`), as a glob, ASCII case ignored.
    pub failure_code: Option<Pattern>,
    /// The account name, as a glob.
    pub account: Option<Pattern>,
    /// The job id, as a glob.
    pub job: Option<Pattern>,
    /// The pool id, as a glob.
    pub pool: Option<Pattern>,
    /// A regex searched in the redacted stderr tail; with no tail it does not match, since the
    /// condition cannot be confirmed.
    pub stderr: Option<Regex>,
}

/// A compiled glob with its source text (for messages and the CLI).
#[derive(Debug, Clone)]
pub struct Pattern {
    /// As written in the policy.
    pub source: String,
    /// Compiled.
    pub matcher: GlobMatcher,
}

impl Pattern {
    /// Whether `text` matches.
    pub fn is_match(&self, text: &str) -> bool {
        self.matcher.is_match(text)
    }
}

/// A glob of files under the task's `wd/` to keep, with a per-file size cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreserveGlob {
    /// The glob, relative to the task directory, starting with `wd/`.
    pub glob: String,
    /// Files larger than this are kept only up to this many bytes (the tail end is what usually
    /// explains a failure, so the preserver keeps the last bytes).
    pub max_bytes: u64,
}

/// The default per-file cap of extra preserved files: 100 MiB.
pub const DEFAULT_PRESERVE_MAX_BYTES: u64 = 100 * 1024 * 1024;

/// A rule's job action and its guards.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuleAction {
    /// What to do.
    pub kind: ActionKind,
    /// This rule only pretends, even when actions are globally live.
    pub dry_run: bool,
    /// Act only when at least this many of the job's tasks failed with the class.
    pub min_failed_tasks: Option<u64>,
    /// Act only when at least this percentage of the job's tasks failed with the class.
    pub min_failed_percent: Option<f64>,
}

/// A job action (its REST shape is in `docs/batch-facts.md`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ActionKind {
    /// Leave the job alone.
    #[default]
    None,
    /// Disable Job: no new tasks are scheduled; `disableTasks` says what happens to running ones.
    Disable(DisableTasks),
    /// Terminate Job with a reason naming the rule.
    Terminate,
}

impl ActionKind {
    /// `none`, `disable` or `terminate`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Disable(_) => "disable",
            Self::Terminate => "terminate",
        }
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Disable(tasks) => write!(f, "disable (disableTasks={})", tasks.as_str()),
            other => f.write_str(other.as_str()),
        }
    }
}

/// Alertmanager-style grouping, with growth and escalation.
#[derive(Debug, Clone, PartialEq)]
pub struct Grouping {
    /// Labels that make a group: `account`, `job`, `pool`, `class`, `fingerprint`,
    /// `exit_meaning`, `failure_code`, `severity`. Empty means one group per rule and receiver.
    pub group_by: Vec<String>,
    /// How long the first alert of a group waits for others before it is sent.
    pub group_wait: Duration,
    /// How long after a notification a group with a new cause may notify again.
    pub group_interval: Duration,
    /// How long after a notification an unchanged group that keeps failing is re-sent.
    pub repeat_interval: Duration,
    /// A notified group whose count grew by this factor (or crossed 10, 100, 1,000, …) is
    /// notified again at `group_interval`; `None` leaves growth to `repeat_interval`.
    pub renotify_on_growth: Option<f64>,
    /// The rule's escalation (rules only; `None` in the policy-wide grouping).
    pub escalate: Option<Escalation>,
}

/// The labels `group_by` may use.
pub const GROUP_LABELS: &[&str] = &[
    "account",
    "job",
    "pool",
    "class",
    "fingerprint",
    "exit_meaning",
    "failure_code",
    "severity",
];

impl Default for Grouping {
    fn default() -> Self {
        Self {
            group_by: ["account", "job", "class", "fingerprint"]
                .map(str::to_owned)
                .to_vec(),
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(4 * 3600),
            renotify_on_growth: Some(DEFAULT_RENOTIFY_ON_GROWTH),
            escalate: None,
        }
    }
}

/// A time-boxed mute of notifications for matching diagnoses. Silences mute notifications only
/// (as in Alertmanager): logs are still kept and job actions still planned.
#[derive(Debug, Clone)]
pub struct Silence {
    /// Names the silence in plans, counts and the report: `policy:N` for the N-th silence of the
    /// policy file, the store's id for one added with `batch-triage silence add`.
    pub id: String,
    /// What it mutes.
    pub matchers: Matchers,
    /// When it starts muting (`None`: it always has).
    pub starts: Option<OffsetDateTime>,
    /// When it stops muting.
    pub expires: OffsetDateTime,
    /// Who and why; shown in plans.
    pub comment: String,
}

impl Silence {
    /// Whether the silence is in force at `now`.
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        self.starts.is_none_or(|starts| starts <= now) && now < self.expires
    }
}

/// The global guards of job actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionsConfig {
    /// Global opt-in: with `false` (the default) no rule's action is ever applied.
    pub enabled: bool,
    /// Pretend only (the default): plan and audit, send nothing to Batch.
    pub dry_run: bool,
    /// At most this many actions per clock hour and Batch account (required when enabled).
    pub max_per_hour: Option<u32>,
}

impl Default for ActionsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            dry_run: true,
            max_per_hour: None,
        }
    }
}

/// One problem in a policy file, with its position (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The line.
    pub line: usize,
    /// The column, in characters.
    pub column: usize,
    /// What is wrong, for a person.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// Every problem found in a policy file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors {
    /// The problems (at least one).
    pub errors: Vec<PolicyError>,
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Whether the class matches `pattern` for any known class (used to reject typos like `tsk.*`).
pub(crate) fn pattern_matches_some_class(pattern: &Pattern) -> bool {
    FailureClass::ALL
        .iter()
        .any(|c| pattern.is_match(c.as_str()))
}
