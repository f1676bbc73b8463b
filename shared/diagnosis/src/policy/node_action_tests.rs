//! Node actions and agent logs in the policy: parsing with positions, and planning.

use time::OffsetDateTime;
use time::macros::datetime;

use super::*;
use crate::classes::FailureClass;
use crate::payload::read_slice;
use crate::report::{Diagnosis, Failure};
use crate::{Evidence, diagnose_item};

const T0: OffsetDateTime = datetime!(2026-11-20 10:00:00 UTC);

fn oom() -> Diagnosis {
    let json = include_bytes!("../../test_data/exit-137-oom.json");
    let mut out = Vec::new();
    read_slice(json, &mut |item| {
        out.extend(diagnose_item(&item, &Evidence::default()));
    })
    .unwrap();
    out.remove(0)
}

/// A start task that failed on node `n1` of pool `p1`.
fn start_task_failed() -> Diagnosis {
    let mut d = oom();
    d.class = FailureClass::NodeStartTaskFailed;
    d.subject.job_id = None;
    d.subject.task_id = None;
    d.subject.pool_id = Some("p1".to_owned());
    d.subject.node_id = Some("n1".to_owned());
    d
}

/// A task that failed with category `servererror` on node `n1` of pool `p1`.
fn server_error_task() -> Diagnosis {
    let mut d = oom();
    d.subject.pool_id = Some("p1".to_owned());
    d.subject.node_id = Some("n1".to_owned());
    d.failure = Some(Failure {
        category: Some("ServerError".to_owned()),
        ..Failure::default()
    });
    d
}

fn errors(text: &str) -> Vec<String> {
    Policy::parse(text)
        .map(|_| Vec::new())
        .unwrap_or_else(|e| e.errors.iter().map(ToString::to_string).collect())
}

fn parsed(text: &str) -> Policy {
    match Policy::parse(text) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn node_actions_are_off_and_dry_run_by_default() {
    let p = Policy::default();
    assert_eq!(p.node_actions, NodeActionsConfig::default());
    assert!(!p.node_actions.enabled && p.node_actions.dry_run);
    assert_eq!(p.node_actions.max_per_pool_per_hour, 1);
    let p = parsed(
        r#"
[[rules]]
name = "reimage-start"
match = { class = "node.start_task_failed" }
node_action = { kind = "reimage" }
"#,
    );
    let plan = plan(&start_task_failed(), &p, T0, &PlanContext::default());
    let action = plan.node_action.expect("a node action is planned");
    assert_eq!(action.kind, NodeActionKind::Reimage);
    assert_eq!(action.rule, "reimage-start");
    assert!(action.dry_run && !action.globally_enabled && !action.allowed());
    assert_eq!(
        action.reason,
        "batch-triage rule \"reimage-start\": node.start_task_failed on node n1"
    );
    // Asking for a node action asks for the agent logs it waits for.
    assert!(plan.keep_agent_logs);
    // No job action comes with it.
    assert!(plan.action.is_none());
}

#[test]
fn enabled_node_actions_need_a_budget_and_live_mode_is_explicit() {
    let p = parsed(
        r#"
[node_actions]
enabled = true
dry_run = false
max_per_hour = 4
max_per_pool_per_hour = 2

[[rules]]
name = "reimage-start"
match = { class = "node.start_task_failed" }
node_action = { kind = "reimage", node_deallocation_option = "Requeue" }
"#,
    );
    assert_eq!(
        p.node_actions,
        NodeActionsConfig {
            enabled: true,
            dry_run: false,
            max_per_hour: Some(4),
            max_per_pool_per_hour: 2,
        }
    );
    let action = plan(&start_task_failed(), &p, T0, &PlanContext::default())
        .node_action
        .unwrap();
    assert!(action.allowed() && !action.dry_run);
    assert_eq!(
        (action.max_per_hour, action.max_per_pool_per_hour),
        (Some(4), 2)
    );
    // A rule can still pretend on its own.
    let p = parsed(
        r#"
[node_actions]
enabled = true
dry_run = false
max_per_hour = 4

[[rules]]
name = "reimage-start"
match = { class = "node.start_task_failed" }
node_action = { kind = "reimage", dry_run = true }
"#,
    );
    let action = plan(&start_task_failed(), &p, T0, &PlanContext::default())
        .node_action
        .unwrap();
    assert!(action.allowed() && action.dry_run);
}

#[test]
fn bad_node_action_values_have_line_and_column() {
    let e = errors(
        r#"[node_actions]
enabled = true
max_per_pool_per_hour = 0

[[rules]]
name = "a"
match = { class = "node.start_task_failed" }
node_action = { kind = "remove" }

[[rules]]
name = "b"
match = { class = "node.*" }
node_action = { kind = "reboot" }

[[rules]]
name = "c"
node_action = { kind = "reimage", node_deallocation_option = "terminate" }

[[rules]]
name = "d"
match = { class = "*" }
keep_agent_logs = false
node_action = { kind = "reimage" }
"#,
    );
    let expected = [
        "1:1: node actions are enabled but have no budget",
        "3:25: max_per_pool_per_hour must be a whole number",
        "7:19: class \"node.start_task_failed\" matches [\"node.start_task_failed\"], which a remove node action may not be taken for",
        "13:24: unknown node action \"reboot\" (remove, reimage)",
        "17:15: a reimage node action needs match.class naming node.unusable or node.start_task_failed",
        "17:62: node_deallocation_option \"terminate\": only \"requeue\" is supported",
        "21:19: class \"*\" matches [",
        "22:19: a node action is taken only after the node agent's logs are kept",
    ];
    assert_eq!(e.len(), expected.len(), "{e:#?}");
    for (got, want) in e.iter().zip(expected) {
        assert!(
            got.starts_with(want),
            "{got:?} does not start with {want:?}"
        );
    }
    // Unknown keys are refused by serde, with a position.
    let e = errors("[node_actions]\nenable = true\n");
    assert!(
        e.len() == 1 && e[0].starts_with("2:1: unknown field `enable`"),
        "{e:?}"
    );
    let e = errors("[[rules]]\nname = \"x\"\nkeep_agent_logs = \"yes\"\n");
    assert!(e.len() == 1 && e[0].starts_with("3:19: "), "{e:?}");
}

#[test]
fn a_node_action_only_reaches_the_classes_it_is_for() {
    // A rule matching start tasks by pool, with a reimage, does not touch an OOM task on that
    // pool (the class matcher refuses it anyway), and a node action never lands on a diagnosis
    // without a node.
    let p = parsed(
        r#"
[[rules]]
name = "reimage-start"
match = { class = "node.start_task_failed", pool = "p*" }
node_action = { kind = "reimage" }
"#,
    );
    let mut no_node = start_task_failed();
    no_node.subject.node_id = None;
    let plan = plan(&no_node, &p, T0, &PlanContext::default());
    assert_eq!(plan.matched_rules, ["reimage-start"]);
    assert!(plan.node_action.is_none());
    assert!(!plan.keep_agent_logs, "no node, nothing to ask Batch for");
}

#[test]
fn agent_logs_are_kept_per_rule_and_by_class_default() {
    // No rule: a start task failure and a servererror task keep no agent logs by default.
    let none = Policy::default();
    assert!(!plan(&start_task_failed(), &none, T0, &PlanContext::default()).keep_agent_logs);
    assert!(!plan(&server_error_task(), &none, T0, &PlanContext::default()).keep_agent_logs);
    // A rule turns it on, for a class and for servererror tasks.
    let on = parsed(
        r#"
[[rules]]
name = "keep"
keep_agent_logs = true
"#,
    );
    assert!(plan(&start_task_failed(), &on, T0, &PlanContext::default()).keep_agent_logs);
    assert!(plan(&server_error_task(), &on, T0, &PlanContext::default()).keep_agent_logs);
    // … but never for a user error, which the node agent's logs cannot explain.
    let mut user_error = server_error_task();
    user_error.failure = Some(Failure {
        category: Some("usererror".to_owned()),
        ..Failure::default()
    });
    assert!(!plan(&user_error, &on, T0, &PlanContext::default()).keep_agent_logs);
    // The first taken rule that says something decides.
    let first_says_no = parsed(
        r#"
[[rules]]
name = "quiet"
match = { class = "node.*" }
keep_agent_logs = false
continue = true

[[rules]]
name = "keep"
keep_agent_logs = true
"#,
    );
    let plan = plan(
        &start_task_failed(),
        &first_says_no,
        T0,
        &PlanContext::default(),
    );
    assert_eq!(plan.matched_rules, ["quiet", "keep"]);
    assert!(!plan.keep_agent_logs);
}

#[test]
fn agent_logs_apply_only_to_node_classes_and_server_errors_on_a_node() {
    assert!(agent_logs_apply(&start_task_failed()));
    assert!(agent_logs_apply(&server_error_task()));
    assert!(!agent_logs_apply(&oom()));
    let mut no_pool = server_error_task();
    no_pool.subject.pool_id = None;
    assert!(!agent_logs_apply(&no_pool));
    assert!(!keeps_agent_logs_by_default(
        FailureClass::NodeStartTaskFailed
    ));
}

/// A node that is unusable on pool `p1`.
fn unusable() -> Diagnosis {
    let mut d = start_task_failed();
    d.class = FailureClass::NodeUnusable;
    d
}

#[test]
fn unusable_nodes_keep_agent_logs_by_default_and_may_be_removed_or_reimaged() {
    assert!(keeps_agent_logs_by_default(FailureClass::NodeUnusable));
    assert!(plan(&unusable(), &Policy::default(), T0, &PlanContext::default()).keep_agent_logs);
    // A rule can turn them off for unusable nodes when it asks for no action.
    let off = parsed(
        r#"
[[rules]]
name = "quiet"
match = { class = "node.unusable" }
keep_agent_logs = false
"#,
    );
    assert!(!plan(&unusable(), &off, T0, &PlanContext::default()).keep_agent_logs);
    for kind in ["remove", "reimage"] {
        let p = parsed(&format!(
            r#"
[[rules]]
name = "drain"
match = {{ class = "node.unusable" }}
node_action = {{ kind = "{kind}" }}
"#
        ));
        let action = plan(&unusable(), &p, T0, &PlanContext::default())
            .node_action
            .unwrap();
        assert_eq!(action.kind.as_str(), kind);
        // The same rule never reaches a start task failure (its class does not match).
        assert!(
            plan(&start_task_failed(), &p, T0, &PlanContext::default())
                .node_action
                .is_none()
        );
    }
    // `node.*` reaches node.start_task_failed, which remove is not for.
    let e = errors(
        "[[rules]]\nname = \"x\"\nmatch = { class = \"node.*\" }\nnode_action = { kind = \"remove\" }\n",
    );
    assert!(
        e.len() == 1
            && e[0].starts_with("3:19: class \"node.*\" matches [\"node.start_task_failed\"]"),
        "{e:?}"
    );
}
