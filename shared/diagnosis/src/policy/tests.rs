//! Policy parsing, planning and grouping, with an injected clock.

use std::time::Duration;

use time::OffsetDateTime;
use time::macros::datetime;

use super::*;
use crate::payload::read_slice;
use crate::report::Diagnosis;
use crate::wire::TaskCounts;
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

fn task(job: &str, task: &str, fingerprint: &str) -> Diagnosis {
    let mut d = oom();
    d.subject.job_id = Some(job.to_owned());
    d.subject.task_id = Some(task.to_owned());
    d.fingerprint = fingerprint.to_owned();
    d
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const RECEIVERS: &str = r#"
[[receivers]]
name = "ops"
kind = "teams"
url_env = "OPS_TEAMS_URL"

[[receivers]]
name = "ml"
kind = "email"
to = ["ml@example.com"]
"#;

fn policy(body: &str) -> Policy {
    match Policy::parse(&format!("{RECEIVERS}{body}")) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn errors(text: &str) -> Vec<String> {
    Policy::parse(text)
        .map(|_| Vec::new())
        .unwrap_or_else(|e| e.errors.iter().map(ToString::to_string).collect())
}

// ---- Parsing and validation ----

#[test]
fn no_policy_keeps_logs_notifies_nobody_acts_on_nothing() {
    let p = Policy::default();
    let plan = plan(&oom(), &p, T0, &PlanContext::default());
    assert!(plan.preserve_logs);
    assert!(plan.receivers.is_empty());
    assert!(plan.action.is_none());
    assert!(plan.console);
    assert!(plan.silenced_by.is_none());
    // An empty file is the same as no file.
    let empty = Policy::parse("").unwrap();
    assert_eq!(
        plan,
        super::plan(&oom(), &empty, T0, &PlanContext::default())
    );
}

#[test]
fn syntax_and_unknown_keys_have_positions() {
    assert_eq!(errors("[[rules]\n").len(), 1);
    assert!(
        errors("[[rules]\n")[0].starts_with("1:"),
        "{:?}",
        errors("[[rules]\n")
    );
    let e = errors("[grouping]\ngroup_wait = \"30s\"\n  colour = \"red\"\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("3:3: unknown field `colour`"), "{e:?}");
    let e = errors("[[rules]]\nname = \"a\"\nmatch = { clas = \"task.*\" }\n");
    assert!(e[0].starts_with("3:11: unknown field `clas`"), "{e:?}");
    let e = errors("[[rules]]\nname = \"a\"\n[rules.action]\nkind = \"terminate\"\nforce = true\n");
    assert!(e[0].starts_with("5:1: unknown field `force`"), "{e:?}");
}

#[test]
fn semantic_errors_are_all_reported_with_positions() {
    let text = r#"[[receivers]]
name = "ops"
kind = "webhook"
url = "https://secret.example/hook?sig=abc"

[grouping]
group_wait = "-5m"
repeat_interval = "1m"

[actions]
enabled = true

[[rules]]
name = "r1"
match = { class = "tsk.*", stderr = "(unclosed", job = "a[", exit_meaning = "oom", severity = "loud" }
receivers = ["ops", "nobody"]
preserve = ["../etc/passwd", "wd/**/*.log"]
action = { kind = "disable" }

[[rules]]
name = "r1"
action = { kind = "terminate", min_failed_percent = 150, min_failed_tasks = 0 }

[[silences]]
match = {}
expires = "tomorrow"
comment = ""
"#;
    let e = errors(text);
    let expect = [
        "2:8: receiver \"ops\": `url` is a secret",
        "8:19: repeat_interval (1m) must be at least group_interval (5m)",
        "7:14: group_wait: duration \"-5m\" is negative",
        "10:1: actions are enabled but have no budget",
        "15:19: class \"tsk.*\" matches no failure class",
        "15:37: stderr regex \"(unclosed\" is invalid: unclosed group",
        "15:56: job glob \"a[\": unclosed character class",
        "15:77: unknown exit_meaning \"oom\"",
        "15:95: unknown severity \"loud\"",
        "16:21: rule \"r1\" names unknown receiver \"nobody\"",
        "17:13: preserve glob \"../etc/passwd\" must start with `wd/`",
        "18:19: a disable action needs disable_tasks",
        "21:8: rule \"r1\" is defined twice",
        "22:53: min_failed_percent must be more than 0",
        "22:77: min_failed_tasks must be at least 1",
        "25:9: a silence with no matchers",
        "26:11: expires must be an RFC 3339 time",
        "27:11: a silence needs a comment",
    ];
    for want in expect {
        assert!(
            e.iter().any(|line| line.starts_with(want)),
            "missing {want:?} in {e:#?}"
        );
    }
    assert_eq!(e.len(), expect.len(), "{e:#?}");
}

#[test]
fn full_policy_parses() {
    assert!(!Policy::parse("console = false").unwrap().console);
    let p = policy(
        r#"
[grouping]
group_by = ["account", "job", "class"]
group_wait = "10s"
group_interval = "1m"
repeat_interval = "1h"

[actions]
enabled = true
dry_run = false
max_per_hour = 3

[[rules]]
name = "kill-oom"
match = { class = "task.exit_code", exit_meaning = "oom_or_sigkill", failure_code = "failureexit*", job = "ren*", severity = "error" }
receivers = ["ops"]
preserve = ["wd/*.log"]
preserve_max_bytes = 1000
grouping = { group_wait = "0s" }
[rules.action]
kind = "disable"
disable_tasks = "requeue"
min_failed_tasks = 2

[[silences]]
match = { job = "nightly-*" }
expires = 2026-12-31T00:00:00Z
comment = "alice: known flaky nightly jobs"
"#,
    );
    assert!(p.console);
    assert_eq!(p.actions.max_per_hour, Some(3));
    let rule = &p.rules[0];
    assert_eq!(
        rule.action.kind,
        ActionKind::Disable(crate::wire::DisableTasks::Requeue)
    );
    assert_eq!(rule.grouping.group_wait, Duration::ZERO);
    assert_eq!(rule.grouping.group_interval, secs(60));
    assert_eq!(rule.grouping.group_by, ["account", "job", "class"]);
    assert_eq!(
        rule.preserve,
        [PreserveGlob {
            glob: "wd/*.log".into(),
            max_bytes: 1000
        }]
    );
    assert_eq!(
        p.receiver("ml").unwrap().settings["to"][0].as_str(),
        Some("ml@example.com")
    );
    assert_eq!(p.silences[0].expires, datetime!(2026-12-31 00:00:00 UTC));
}

// ---- Planning ----

#[test]
fn rule_order_and_continue() {
    let p = policy(
        r#"
[[rules]]
name = "oom-to-ml"
match = { exit_meaning = "oom_or_sigkill" }
receivers = ["ml"]
continue = true

[[rules]]
name = "errors-to-ops"
match = { class = "task.*", severity = "error" }
receivers = ["ops"]

[[rules]]
name = "never-reached"
receivers = ["ml"]
"#,
    );
    let plan = plan(&oom(), &p, T0, &PlanContext::default());
    assert_eq!(plan.matched_rules, ["oom-to-ml", "errors-to-ops"]);
    let receivers: Vec<&str> = plan.receivers.iter().map(|r| r.receiver.as_str()).collect();
    assert_eq!(receivers, ["ml", "ops"]);
    assert_eq!(
        plan.receivers[1].group_key,
        format!(
            "rule=errors-to-ops;receiver=ops;account=contoso;job=render;class=task.exit_code;fingerprint={}",
            oom().fingerprint
        )
    );

    // Without continue, the first match wins.
    let p = policy(
        r#"
[[rules]]
name = "first"
match = { class = "task.*" }
receivers = ["ml"]

[[rules]]
name = "second"
receivers = ["ops"]
"#,
    );
    assert_eq!(
        super::plan(&oom(), &p, T0, &PlanContext::default()).matched_rules,
        ["first"]
    );
    // A rule that does not match lets the next one match.
    let mut ok = oom();
    ok.class = crate::FailureClass::JobCompleted;
    ok.severity = crate::Severity::Info;
    let plan = super::plan(&ok, &p, T0, &PlanContext::default());
    assert_eq!(plan.matched_rules, ["second"]);
    assert!(plan.preserve_logs, "a matched rule keeps logs");
}

#[test]
fn stderr_regex_matches_the_redacted_tail_only() {
    let p = policy(
        r#"
[[rules]]
name = "cuda"
match = { stderr = "CUDA out of memory" }
receivers = ["ops"]

[[rules]]
name = "sas"
match = { stderr = "sig=abc" }
receivers = ["ml"]
"#,
    );
    let tail = "RuntimeError: CUDA out of memory. Tried to allocate 2 GiB";
    let ctx = PlanContext {
        stderr_tail: Some(tail),
        ..Default::default()
    };
    assert_eq!(plan(&oom(), &p, T0, &ctx).matched_rules, ["cuda"]);
    assert!(
        plan(&oom(), &p, T0, &PlanContext::default())
            .matched_rules
            .is_empty()
    );
    // Secrets are removed before matching, so a rule cannot route on them.
    let tail = "GET https://a.blob.core.windows.net/c/f?sv=2020&sig=abc failed";
    let ctx = PlanContext {
        stderr_tail: Some(tail),
        ..Default::default()
    };
    assert!(plan(&oom(), &p, T0, &ctx).matched_rules.is_empty());
}

#[test]
fn silences_match_and_expire() {
    let p = policy(
        r#"
[[rules]]
name = "all"
receivers = ["ops"]
action = { kind = "terminate" }

[[silences]]
match = { job = "rend*", class = "task.exit_code" }
expires = "2026-11-20T12:00:00Z"
comment = "bob: render is being fixed"
"#,
    );
    let silenced = plan(&oom(), &p, T0, &PlanContext::default());
    assert_eq!(
        silenced.silenced_by.as_deref(),
        Some("bob: render is being fixed")
    );
    assert!(silenced.receivers.is_empty());
    assert_eq!(silenced.silenced_receivers.len(), 1);
    assert!(
        silenced.preserve_logs && silenced.action.is_some(),
        "silences mute notifications only"
    );
    let later = plan(
        &oom(),
        &p,
        datetime!(2026-11-20 12:00:00 UTC),
        &PlanContext::default(),
    );
    assert!(later.silenced_by.is_none());
    assert_eq!(later.receivers.len(), 1);
    let other_job = plan(&task("etl", "t1", "f"), &p, T0, &PlanContext::default());
    assert!(other_job.silenced_by.is_none());
}

#[test]
fn thresholds_by_count_and_percent() {
    let p = policy(
        r#"
[actions]
enabled = true
dry_run = false
max_per_hour = 5

[[rules]]
name = "kill-oom"
match = { exit_meaning = "oom_or_sigkill" }
action = { kind = "terminate", min_failed_tasks = 10, min_failed_percent = 20 }
"#,
    );
    let counts = TaskCounts {
        active: 50,
        running: 10,
        completed: 40,
        succeeded: 3,
        failed: 37,
    };
    let check = |failed_with_class: Option<u64>, counts: Option<&TaskCounts>| {
        let ctx = PlanContext {
            job_task_counts: counts,
            failed_with_class_count: failed_with_class,
            ..Default::default()
        };
        plan(&oom(), &p, T0, &ctx).action.unwrap()
    };
    let met = check(Some(37), Some(&counts));
    assert!(met.allowed(), "{met:?}");
    assert_eq!(
        met.reason,
        "batch-triage rule \"kill-oom\": 37 tasks failed with task.exit_code"
    );
    assert!(!met.dry_run);
    assert_eq!(
        met.terminate_reason,
        "batch-triage \"kill-oom\": 37 tasks failed with task.exit_code"
    );
    let long = super::terminate_reason(&"r".repeat(80), &oom(), Some(1));
    assert_eq!(long.chars().count(), TERMINATE_REASON_MAX);
    assert_eq!(
        met.threshold.describe(),
        "37 tasks failed with task.exit_code (min 10); 37 of 100 tasks failed with task.exit_code = 37.0% (min 20%)"
    );
    // Too few by count.
    let few = check(Some(9), Some(&counts));
    assert!(matches!(few.threshold, Threshold::NotMet { .. }) && !few.allowed());
    // Enough by count, too few by percent.
    let big = TaskCounts {
        active: 900,
        completed: 100,
        failed: 15,
        ..Default::default()
    };
    assert!(matches!(
        check(Some(15), Some(&big)).threshold,
        Threshold::NotMet { .. }
    ));
    // The job's failed count stands in for the class count.
    assert!(check(None, Some(&counts)).allowed());
    // No counts at all: unknown, so no action.
    let unknown = check(None, None);
    assert!(matches!(unknown.threshold, Threshold::Unknown { .. }) && !unknown.allowed());
    // Percent needs the job's counts even when the class count is known.
    assert!(matches!(
        check(Some(50), None).threshold,
        Threshold::Unknown { .. }
    ));
}

#[test]
fn actions_need_the_global_opt_in_and_default_to_dry_run() {
    let p = policy(
        r#"
[[rules]]
name = "kill"
action = { kind = "terminate" }
"#,
    );
    let action = plan(&oom(), &p, T0, &PlanContext::default())
        .action
        .unwrap();
    assert!(!action.globally_enabled && !action.allowed());
    assert!(action.dry_run);
    assert_eq!(action.threshold, Threshold::NotSet);
    // A rule may be dry-run when the rest are live.
    let p = policy(
        r#"
[actions]
enabled = true
dry_run = false
max_per_hour = 1

[[rules]]
name = "kill"
action = { kind = "terminate", dry_run = true }
"#,
    );
    let action = plan(&oom(), &p, T0, &PlanContext::default())
        .action
        .unwrap();
    assert!(action.allowed() && action.dry_run);
}

// ---- Grouping ----

fn grouping() -> Grouping {
    Grouping {
        group_by: vec!["account".into(), "job".into(), "class".into()],
        group_wait: secs(30),
        group_interval: secs(300),
        repeat_interval: secs(4 * 3600),
        ..Grouping::default()
    }
}

fn facts(d: &Diagnosis) -> AlertFacts {
    AlertFacts::from_diagnosis("g", d)
}

#[test]
fn first_alert_waits_group_wait_then_sends_everything() {
    let g = grouping();
    let (decision, state) = decide(None, &facts(&task("j", "t1", "f1")), &g, T0);
    assert_eq!(
        decision,
        Decision::Wait {
            until: T0 + secs(30)
        }
    );
    let (decision, state) = decide(
        Some(&state),
        &facts(&task("j", "t2", "f1")),
        &g,
        T0 + secs(10),
    );
    assert_eq!(
        decision,
        Decision::Wait {
            until: T0 + secs(30)
        }
    );
    // The sweep before the deadline waits; at it, it sends both.
    assert_eq!(
        tick(&state, &g, T0 + secs(29)).0,
        Decision::Wait {
            until: T0 + secs(30)
        }
    );
    let (Decision::SendNow(n), state) = tick(&state, &g, T0 + secs(30)) else {
        panic!()
    };
    assert_eq!(
        (n.sequence, n.count, n.new_count, n.is_repeat),
        (1, 2, 2, false)
    );
    assert_eq!(n.new_fingerprints, ["f1"]);
    assert_eq!(n.examples.len(), 2);
    // Nothing new: nothing to send.
    assert_eq!(tick(&state, &g, T0 + secs(99_999)).0, Decision::Suppress);
    // With group_wait 0 the first alert goes at once.
    let now = Grouping {
        group_wait: Duration::ZERO,
        ..g
    };
    assert!(matches!(
        decide(None, &facts(&oom()), &now, T0).0,
        Decision::SendNow(_)
    ));
}

#[test]
fn five_thousand_failures_make_one_alert_with_a_count() {
    let g = grouping();
    let mut state: Option<GroupState> = None;
    let mut sends = Vec::new();
    for i in 0..5000u64 {
        let now = T0 + Duration::from_millis(i * 5); // 25 s in all, within group_wait.
        let (decision, next) = decide(
            state.as_ref(),
            &facts(&task("j", &format!("t{i}"), "same")),
            &g,
            now,
        );
        if let Decision::SendNow(n) = decision {
            sends.push(n);
        }
        state = Some(next);
    }
    assert!(sends.is_empty());
    let (Decision::SendNow(n), state) = tick(state.as_ref().unwrap(), &g, T0 + secs(30)) else {
        panic!()
    };
    assert_eq!(n.count, 5000);
    assert_eq!(n.examples.len(), MAX_EXAMPLES);
    assert_eq!(n.fingerprints.len(), 1);
    assert_eq!(n.fingerprints[0].count, 5000);
    assert!(state.recent.len() <= MAX_RECENT);
    // The state stays small when stored.
    assert!(serde_json::to_vec(&state).unwrap().len() < 64 * 1024);
}

#[test]
fn deciding_in_place_is_deciding_with_a_copy() {
    let g = Grouping {
        group_wait: Duration::ZERO,
        ..grouping()
    };
    // Sends, waits, a redelivery, new causes and a quiet repeat_interval that starts a new
    // episode: every branch of the state machine, once by copy and once in place.
    let steps: Vec<(AlertFacts, OffsetDateTime)> = (0..40u64)
        .map(|i| {
            let fingerprint = format!("f{}", i % 3);
            let task_id = format!("t{}", if i == 20 { 3 } else { i });
            let at = if i < 30 {
                T0 + secs(i * 90)
            } else {
                T0 + secs(86_400 + i)
            };
            (facts(&task("j", &task_id, &fingerprint)), at)
        })
        .collect();
    let mut copied: Option<GroupState> = None;
    let mut in_place: Option<GroupState> = None;
    for (f, at) in &steps {
        let (by_copy, next) = decide(copied.as_ref(), f, &g, *at);
        copied = Some(next);
        let by_place = match in_place.as_mut() {
            Some(state) => decide_in_place(state, f, &g, *at),
            None => {
                let (decision, state) = decide(None, f, &g, *at);
                in_place = Some(state);
                decision
            }
        };
        assert_eq!(by_copy, by_place, "at {at}");
        assert_eq!(copied, in_place, "at {at}");
    }
    // A state of another group is replaced, as `decide` replaces it.
    let mut other = copied.clone().unwrap();
    other.group_key = "someone else".into();
    let f = &steps[0].0;
    let (by_copy, fresh) = decide(Some(&other), f, &g, T0);
    assert_eq!(decide_in_place(&mut other, f, &g, T0), by_copy);
    assert_eq!(other, fresh);
    assert_eq!(fresh.count, 1);
}

#[test]
fn redelivered_occurrences_are_not_counted_twice() {
    let g = grouping();
    let f = facts(&task("j", "t1", "f1"));
    let (_, state) = decide(None, &f, &g, T0);
    let (decision, again) = decide(Some(&state), &f, &g, T0 + secs(1));
    assert_eq!(
        decision,
        Decision::Wait {
            until: T0 + secs(30)
        }
    );
    assert_eq!(again.count, 1);
}

#[test]
fn a_new_cause_alerts_again_after_group_interval() {
    // Growth off: only a new cause comes back at group_interval (growth_tests.rs has growth).
    let g = Grouping {
        renotify_on_growth: None,
        ..grouping()
    };
    let (_, state) = decide(None, &facts(&task("j", "t1", "f1")), &g, T0);
    let (Decision::SendNow(_), state) = tick(&state, &g, T0 + secs(30)) else {
        panic!()
    };
    // Same cause: folded in, re-sent only after repeat_interval.
    let (decision, state) = decide(
        Some(&state),
        &facts(&task("j", "t2", "f1")),
        &g,
        T0 + secs(60),
    );
    assert_eq!(
        decision,
        Decision::Wait {
            until: T0 + secs(30) + secs(4 * 3600)
        }
    );
    // A new cause: due group_interval after the last notification.
    let (decision, state) = decide(
        Some(&state),
        &facts(&task("j", "t3", "f2")),
        &g,
        T0 + secs(90),
    );
    assert_eq!(
        decision,
        Decision::Wait {
            until: T0 + secs(330)
        }
    );
    let (Decision::SendNow(n), state) = tick(&state, &g, T0 + secs(330)) else {
        panic!()
    };
    assert_eq!((n.sequence, n.count, n.new_count), (2, 3, 2));
    assert_eq!(n.new_fingerprints, ["f2"]);
    assert!(!n.is_repeat);
    // After group_interval has passed, a new cause goes out at once.
    let (decision, _) = decide(
        Some(&state),
        &facts(&task("j", "t4", "f3")),
        &g,
        T0 + secs(1000),
    );
    assert!(matches!(
        decision,
        Decision::SendNow(Notification { sequence: 3, .. })
    ));
}

#[test]
fn an_unchanged_group_repeats_only_after_repeat_interval() {
    // Growth off: 1 → 101 would otherwise be announced at group_interval.
    let g = Grouping {
        renotify_on_growth: None,
        ..grouping()
    };
    let (_, state) = decide(None, &facts(&task("j", "t1", "f1")), &g, T0);
    let (Decision::SendNow(_), mut state) = tick(&state, &g, T0 + secs(30)) else {
        panic!()
    };
    let sent = T0 + secs(30);
    for i in 0..100u64 {
        let (decision, next) = decide(
            Some(&state),
            &facts(&task("j", &format!("u{i}"), "f1")),
            &g,
            sent + secs(60 * i),
        );
        assert_eq!(
            decision,
            Decision::Wait {
                until: sent + g.repeat_interval
            },
            "{i}"
        );
        state = next;
    }
    assert_eq!(
        tick(&state, &g, sent + g.repeat_interval - secs(1)).0,
        Decision::Wait {
            until: sent + g.repeat_interval
        }
    );
    let (Decision::SendNow(n), _) = tick(&state, &g, sent + g.repeat_interval) else {
        panic!()
    };
    assert!(n.is_repeat);
    assert_eq!((n.sequence, n.count, n.new_count), (2, 101, 100));
}

#[test]
fn a_quiet_group_starts_a_new_episode_with_group_wait() {
    let g = grouping();
    let (_, state) = decide(None, &facts(&task("j", "t1", "f1")), &g, T0);
    let (Decision::SendNow(_), state) = tick(&state, &g, T0 + secs(30)) else {
        panic!()
    };
    let later = T0 + secs(5 * 3600);
    let (decision, state) = decide(Some(&state), &facts(&task("j", "t2", "f1")), &g, later);
    assert_eq!(
        decision,
        Decision::Wait {
            until: later + secs(30)
        }
    );
    let (Decision::SendNow(n), _) = tick(&state, &g, later + secs(30)) else {
        panic!()
    };
    assert_eq!((n.sequence, n.count), (2, 1));
}

#[test]
fn a_resolved_group_alerts_again_when_the_same_subject_fails_again() {
    let g = grouping();
    let node = facts(&task("j", "t1", "f1"));
    let (_, state) = decide(None, &node, &g, T0);
    let (Decision::SendNow(_), mut state) = tick(&state, &g, T0 + secs(30)) else {
        panic!()
    };
    // Before the state ended, the same occurrence is a redelivery.
    let (decision, _) = decide(Some(&state), &node, &g, T0 + secs(60));
    assert_eq!(decision, Decision::Suppress);
    state.resolve();
    let json = serde_json::to_string(&state).unwrap();
    assert!(json.contains("\"resolved\":true"), "{json}");
    // Minutes later, well inside repeat_interval, the same subject fails again: a new incident,
    // batched for group_wait and sent with the next sequence number.
    let again = T0 + secs(600);
    let (decision, state) = decide(Some(&state), &node, &g, again);
    assert_eq!(
        decision,
        Decision::Wait {
            until: again + secs(30)
        }
    );
    assert!(!state.resolved);
    let (Decision::SendNow(n), state) = tick(&state, &g, again + secs(30)) else {
        panic!()
    };
    assert_eq!((n.sequence, n.count), (2, 1));
    // A state that never resolved does not carry the field at all.
    assert!(!serde_json::to_string(&state).unwrap().contains("resolved"));
}

#[test]
fn nodes_of_two_pools_and_two_incidents_of_one_node_are_distinct_occurrences() {
    let node = |pool: &str| {
        let mut d = oom();
        d.subject.job_id = None;
        d.subject.task_id = None;
        d.subject.attempt = None;
        d.subject.pool_id = Some(pool.to_owned());
        d.subject.node_id = Some("tvm-1".to_owned());
        d
    };
    let (a, b) = (facts(&node("a")), facts(&node("b")));
    assert_ne!(a.occurrence, b.occurrence, "the same node id in two pools");
    let first = facts(&node("a")).with_incident(Some("20261205T070000Z"));
    let later = facts(&node("a")).with_incident(Some("20261205T080000Z"));
    assert_ne!(first.occurrence, later.occurrence);
    assert_eq!(
        facts(&node("a")).with_incident(None).occurrence,
        a.occurrence
    );
    // A task's occurrence names its job, not its pool, as it always did.
    let mut t = task("j", "t1", "f");
    t.subject.pool_id = Some("p".to_owned());
    assert!(
        facts(&t).occurrence.contains("/j/t1/"),
        "{}",
        facts(&t).occurrence
    );
}

#[test]
fn group_state_round_trips_as_json_and_old_versions_start_afresh() {
    let g = grouping();
    let (_, state) = decide(None, &facts(&oom()), &g, T0);
    let json = serde_json::to_string(&state).unwrap();
    assert!(
        json.contains("\"firstSeen\":\"2026-11-20T10:00:00Z\""),
        "{json}"
    );
    let back: GroupState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, state);
    let mut old = state.clone();
    old.version = 0;
    let (_, fresh) = decide(Some(&old), &facts(&task("j", "t9", "f")), &g, T0 + secs(1));
    assert_eq!((fresh.version, fresh.count), (GROUP_STATE_VERSION, 1));
}

#[test]
fn line_column_is_robust() {
    assert_eq!(parse::line_column("ab\ncd", 4), (2, 2));
    assert_eq!(parse::line_column("é\nx", 1), (1, 1));
    assert_eq!(parse::line_column("a", 99), (1, 2));
}

#[test]
fn pool_and_node_classes_are_known_to_rules() {
    for class in [
        "pool.*",
        "pool.resize_failed",
        "pool.autoscale_failed",
        "pool.delete_stuck",
        "node.*",
        "node.unusable",
        "node.start_task_failed",
    ] {
        let body = format!(
            "\n[[rules]]\nname = \"r\"\nmatch = {{ class = \"{class}\" }}\nreceivers = [\"ops\"]\n"
        );
        let parsed = Policy::parse(&format!("{RECEIVERS}{body}"));
        assert!(
            parsed.is_ok(),
            "{class}: {:?}",
            parsed.err().map(|e| e.to_string())
        );
    }
    let typo = format!(
        "{RECEIVERS}\n[[rules]]\nname = \"r\"\nmatch = {{ class = \"pool.resize_fail\" }}\nreceivers = [\"ops\"]\n"
    );
    assert!(
        errors(&typo)
            .iter()
            .any(|e| e.contains("matches no failure class"))
    );
}
