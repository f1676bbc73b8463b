//! Node actions and the node agent's logs: the policy's `[node_actions]` table, a rule's
//! `node_action` and `keep_agent_logs`, and what [`plan`](super::plan) makes of them.
//!
//! A node action (remove with `requeue`, or reimage) only ever applies to the node classes
//! that can warrant it, and only after the node agent's logs were kept (or recorded as
//! unavailable), so a rule that asks for an action also asks for the logs. Like job actions,
//! node actions are off unless `[node_actions] enabled = true`, pretend unless `dry_run =
//! false`, and are budgeted per hour and per pool.

use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::Pattern;
use super::parse::Errors;
use crate::classes::FailureClass;
use crate::report::Diagnosis;

/// The class whose nodes may be removed or reimaged.
pub const NODE_UNUSABLE: &str = "node.unusable";
/// The class whose nodes may be reimaged.
pub const NODE_START_TASK_FAILED: &str = "node.start_task_failed";
/// The default per-pool budget: one node action per pool per clock hour.
pub const DEFAULT_NODE_ACTIONS_PER_POOL_PER_HOUR: u32 = 1;

/// What to do to a node (REST shapes in `docs/batch-facts.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeActionKind {
    /// Remove Nodes from the pool, `nodeDeallocationOption = requeue`: running tasks go back to
    /// the queue and the pool shrinks by one (a fixed-size pool grows back on its own).
    Remove,
    /// Reimage Node, `nodeDeallocationOption = requeue`: the OS disk is reinstalled and the
    /// start task runs again.
    Reimage,
}

impl NodeActionKind {
    /// `remove` or `reimage`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Remove => "remove",
            Self::Reimage => "reimage",
        }
    }

    /// The classes this action may be taken for.
    pub fn classes(self) -> &'static [&'static str] {
        match self {
            Self::Remove => &[NODE_UNUSABLE],
            Self::Reimage => &[NODE_UNUSABLE, NODE_START_TASK_FAILED],
        }
    }
}

impl fmt::Display for NodeActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (nodeDeallocationOption=requeue)", self.as_str())
    }
}

/// A rule's node action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleNodeAction {
    /// What to do.
    pub kind: NodeActionKind,
    /// This rule only pretends, even when node actions are globally live.
    pub dry_run: bool,
}

/// The global guards of node actions (`[node_actions]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeActionsConfig {
    /// Global opt-in: with `false` (the default) no node is ever removed or reimaged.
    pub enabled: bool,
    /// Pretend only (the default): plan and audit, send nothing to Batch.
    pub dry_run: bool,
    /// At most this many node actions per clock hour in all (required when enabled).
    pub max_per_hour: Option<u32>,
    /// At most this many node actions per pool per clock hour.
    pub max_per_pool_per_hour: u32,
}

impl Default for NodeActionsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            dry_run: true,
            max_per_hour: None,
            max_per_pool_per_hour: DEFAULT_NODE_ACTIONS_PER_POOL_PER_HOUR,
        }
    }
}

/// A node action the policy asks for, with the guards known at planning time; the executor
/// still checks that the agent logs were dealt with, the budgets, the once-marker and that the
/// node is not the pool's last healthy one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeActionPlan {
    /// What to do.
    pub kind: NodeActionKind,
    /// The rule asking for it.
    pub rule: String,
    /// Why, naming the rule, for people and audit records.
    pub reason: String,
    /// Only pretend (globally or for this rule).
    pub dry_run: bool,
    /// Node actions are switched on globally (`[node_actions] enabled`).
    pub globally_enabled: bool,
    /// The hourly budget in all.
    pub max_per_hour: Option<u32>,
    /// The hourly budget per pool.
    pub max_per_pool_per_hour: u32,
}

impl NodeActionPlan {
    /// Whether the guards known at planning time allow the action.
    pub fn allowed(&self) -> bool {
        self.globally_enabled && self.max_per_hour.is_some()
    }
}

/// Whether the node agent's logs are kept for a diagnosis no rule spoke about: yes for
/// `node.unusable` (Azure support asks for them first, and they are lost with the node).
pub fn keeps_agent_logs_by_default(class: FailureClass) -> bool {
    class.as_str() == NODE_UNUSABLE
}

/// Whether a diagnosis is one the node agent's logs can help with at all: a node class, or a
/// task whose failure Batch put down to itself (`servererror`). Only these get an upload.
pub fn agent_logs_apply(d: &Diagnosis) -> bool {
    d.subject.pool_id.is_some()
        && d.subject.node_id.is_some()
        && (matches!(d.class.as_str(), NODE_UNUSABLE | NODE_START_TASK_FAILED)
            || d.failure
                .as_ref()
                .and_then(|f| f.category.as_deref())
                .is_some_and(|c| c.eq_ignore_ascii_case("servererror")))
}

/// Whether a diagnosis is of a class `kind` may be taken for, on a known node.
pub(super) fn node_action_applies(kind: NodeActionKind, d: &Diagnosis) -> bool {
    d.subject.pool_id.is_some()
        && d.subject.node_id.is_some()
        && kind.classes().contains(&d.class.as_str())
}

/// The audit text of a node action: `batch-triage rule "drain": node.unusable on node n1`.
pub fn node_action_reason(rule: &str, d: &Diagnosis) -> String {
    let node = d.subject.node_id.as_deref().unwrap_or("-");
    let mut reason = format!("batch-triage rule \"{rule}\": {} on node {node}", d.class);
    if reason.chars().count() > 200 {
        reason = reason.chars().take(200).collect();
    }
    reason
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNodeActions {
    enabled: Option<bool>,
    dry_run: Option<bool>,
    max_per_hour: Option<Spanned<i64>>,
    max_per_pool_per_hour: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNodeAction {
    kind: Spanned<String>,
    node_deallocation_option: Option<Spanned<String>>,
    dry_run: Option<bool>,
}

fn budget(value: Option<Spanned<i64>>, what: &str, errors: &mut Errors<'_>) -> Option<u32> {
    let value = value?;
    match u32::try_from(*value.get_ref()) {
        Ok(n) if n >= 1 => Some(n),
        _ => {
            errors.at(
                value.span(),
                format!("{what} must be a whole number from 1 to 4294967295"),
            );
            None
        }
    }
}

/// `[node_actions]`: off and dry-run unless said otherwise, never enabled without a budget.
pub(super) fn check_node_actions(
    spanned: Spanned<RawNodeActions>,
    errors: &mut Errors<'_>,
) -> NodeActionsConfig {
    let span = spanned.span();
    let raw = spanned.into_inner();
    let max_per_hour = budget(raw.max_per_hour, "max_per_hour", errors);
    let max_per_pool_per_hour = budget(raw.max_per_pool_per_hour, "max_per_pool_per_hour", errors)
        .unwrap_or(DEFAULT_NODE_ACTIONS_PER_POOL_PER_HOUR);
    let enabled = raw.enabled.unwrap_or(false);
    if enabled && max_per_hour.is_none() {
        errors.at(
            span,
            "node actions are enabled but have no budget: set `max_per_hour` (e.g. 5)",
        );
    }
    NodeActionsConfig {
        enabled,
        dry_run: raw.dry_run.unwrap_or(true),
        max_per_hour,
        max_per_pool_per_hour,
    }
}

/// A rule's `node_action`: a known kind, `requeue` as the only deallocation option (running
/// tasks are never killed by us), and a `match.class` whose every class the kind may be taken
/// for, so `remove` can never reach a node whose start task merely failed.
pub(super) fn check_rule_node_action(
    spanned: Spanned<RawNodeAction>,
    class: Option<(&Pattern, Range<usize>)>,
    keep_agent_logs: Option<&Spanned<bool>>,
    errors: &mut Errors<'_>,
) -> Option<RuleNodeAction> {
    let span = spanned.span();
    let raw = spanned.into_inner();
    if let Some(option) = &raw.node_deallocation_option {
        if !option.get_ref().trim().eq_ignore_ascii_case("requeue") {
            errors.at(
                option.span(),
                format!(
                    "node_deallocation_option {:?}: only \"requeue\" is supported (running tasks go back to the queue)",
                    option.get_ref()
                ),
            );
        }
    }
    let kind = match raw.kind.get_ref().trim() {
        "remove" => NodeActionKind::Remove,
        "reimage" => NodeActionKind::Reimage,
        other => {
            errors.at(
                raw.kind.span(),
                format!("unknown node action {other:?} (remove, reimage)"),
            );
            return None;
        }
    };
    if let Some(keep) = keep_agent_logs {
        if !keep.get_ref() {
            errors.at(
                keep.span(),
                "a node action is taken only after the node agent's logs are kept: remove keep_agent_logs = false",
            );
        }
    }
    let allowed = kind.classes();
    match class {
        None => errors.at(
            span,
            format!(
                "a {} node action needs match.class naming {}",
                kind.as_str(),
                allowed.join(" or ")
            ),
        ),
        Some((pattern, class_span)) => {
            let stray: Vec<&str> = FailureClass::ALL
                .iter()
                .map(|c| c.as_str())
                .filter(|c| pattern.is_match(c) && !allowed.contains(c))
                .collect();
            if !stray.is_empty() {
                errors.at(
                    class_span,
                    format!(
                        "class {:?} matches {stray:?}, which a {} node action may not be taken for (only {})",
                        pattern.source,
                        kind.as_str(),
                        allowed.join(", ")
                    ),
                );
            }
        }
    }
    Some(RuleNodeAction {
        kind,
        dry_run: raw.dry_run.unwrap_or(false),
    })
}
