//! Growth and escalation of groups: the state machine and the policy options.

use std::time::Duration;

use time::OffsetDateTime;
use time::macros::datetime;

use super::*;
use crate::classes::Severity;
use crate::payload::read_slice;
use crate::report::Diagnosis;
use crate::{Evidence, diagnose_item};

const T0: OffsetDateTime = datetime!(2026-11-20 10:00:00 UTC);

fn task(i: u64) -> Diagnosis {
    let json = include_bytes!("../../test_data/exit-137-oom.json");
    let mut out = Vec::new();
    read_slice(json, &mut |item| {
        out.extend(diagnose_item(&item, &Evidence::default()));
    })
    .unwrap();
    let mut d = out.remove(0);
    d.subject.job_id = Some("j".to_owned());
    d.subject.task_id = Some(format!("t{i}"));
    d.fingerprint = "same".to_owned();
    d
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The issue's policy: no wait, a 10 s interval.
fn fast() -> Grouping {
    Grouping {
        group_wait: Duration::ZERO,
        group_interval: secs(10),
        ..Grouping::default()
    }
}

/// Folds failures `from..to` into `state` at `now`; returns the notifications sent.
fn fold(
    state: &mut Option<GroupState>,
    range: std::ops::Range<u64>,
    grouping: &Grouping,
    job_tasks: Option<u64>,
    now: OffsetDateTime,
) -> Vec<Notification> {
    let mut sent = Vec::new();
    for i in range {
        let facts = AlertFacts::from_diagnosis("g", &task(i)).with_job_tasks(job_tasks);
        let (decision, next) = decide(state.as_ref(), &facts, grouping, now);
        if let Decision::SendNow(n) = decision {
            sent.push(n);
        }
        *state = Some(next);
    }
    sent
}

#[test]
fn five_thousand_at_once_then_one_growth_message_then_silence() {
    let g = fast();
    let mut state = None;
    let first = fold(&mut state, 0..5000, &g, None, T0);
    assert_eq!(first.len(), 1, "one alert for the burst");
    assert_eq!((first[0].count, first[0].previous_count), (1, None));
    let state = state.unwrap();
    assert_eq!(state.flush_at, Some(T0 + secs(10)));
    // Before group_interval: nothing.
    assert!(matches!(
        tick(&state, &g, T0 + secs(9)).0,
        Decision::Wait { .. }
    ));
    let (Decision::SendNow(n), state) = tick(&state, &g, T0 + secs(11)) else {
        panic!("growth is due at group_interval")
    };
    assert_eq!(
        (n.sequence, n.count, n.previous_count, n.new_count),
        (2, 5000, Some(1), 4999)
    );
    assert!(!n.is_repeat && !n.escalated_now);
    assert_eq!((n.first_seen, n.last_seen), (T0, T0));
    // Fresh examples: the first message had t0, this one the failures after it.
    assert_eq!(first[0].examples.len(), 1);
    assert_eq!(n.examples.len(), MAX_EXAMPLES);
    assert_eq!(n.examples[0].task_id.as_deref(), Some("t1"));
    // No growth: no more messages, however late.
    for later in [12, 60, 3600, 10 * 3600] {
        assert_eq!(tick(&state, &g, T0 + secs(later)).0, Decision::Suppress);
    }
}

#[test]
fn small_growth_waits_for_repeat_interval_and_growth_off_is_the_old_behaviour() {
    let g = fast();
    let mut state = None;
    fold(&mut state, 0..10, &g, None, T0);
    let (Decision::SendNow(n), after) = tick(state.as_ref().unwrap(), &g, T0 + secs(10)) else {
        panic!()
    };
    assert_eq!((n.count, n.previous_count), (10, Some(1)));
    // 10 → 15 is neither a doubling nor a power of ten.
    let mut state = Some(after);
    assert!(fold(&mut state, 10..15, &g, None, T0 + secs(20)).is_empty());
    let state = state.unwrap();
    assert_eq!(state.flush_at, Some(T0 + secs(10) + g.repeat_interval));
    let (Decision::SendNow(n), _) = tick(&state, &g, T0 + secs(10) + g.repeat_interval) else {
        panic!()
    };
    assert!(n.is_repeat);
    assert_eq!((n.count, n.previous_count), (15, Some(10)));
    // With growth off, even 1 → 5,000 waits for repeat_interval.
    let off = Grouping {
        renotify_on_growth: None,
        ..fast()
    };
    let mut state = None;
    fold(&mut state, 0..5000, &off, None, T0);
    assert_eq!(
        state.unwrap().flush_at,
        Some(T0 + off.repeat_interval),
        "growth off"
    );
}

#[test]
fn a_group_escalates_once_by_share_of_the_job_and_says_why() {
    let g = Grouping {
        escalate: Some(Escalation {
            severity: Severity::Critical,
            min_count: None,
            min_job_percent: Some(20.0),
        }),
        ..fast()
    };
    let mut state = None;
    // 5,000 of a job of 5,000 tasks: the first alert goes at once, the escalation at
    // group_interval with the growth.
    let first = fold(&mut state, 0..5000, &g, Some(5000), T0);
    assert_eq!(first.len(), 1);
    assert!(first[0].escalation.is_none(), "1 of 5,000 is no escalation");
    let state = state.unwrap();
    let escalated = state.escalation.clone().unwrap();
    assert_eq!(escalated.severity, Severity::Critical);
    assert!(!escalated.announced);
    assert!(
        escalated.reason.contains("of the job's 5000 tasks"),
        "{}",
        escalated.reason
    );
    let (Decision::SendNow(n), state) = tick(&state, &g, T0 + secs(10)) else {
        panic!()
    };
    assert!(n.escalated_now);
    assert_eq!(n.count, 5000);
    // Once: later growth is announced, still critical, but not as a new escalation.
    let mut state = Some(state);
    assert!(fold(&mut state, 5000..12_000, &g, Some(20_000), T0 + secs(15)).is_empty());
    let (Decision::SendNow(n), state) = tick(state.as_ref().unwrap(), &g, T0 + secs(20)) else {
        panic!()
    };
    assert!(!n.escalated_now);
    assert_eq!(
        n.escalation.as_ref().map(|e| e.severity),
        Some(Severity::Critical)
    );
    assert_eq!(tick(&state, &g, T0 + secs(99)).0, Decision::Suppress);
}

#[test]
fn escalation_before_the_first_message_rides_on_it_and_without_task_counts_shares_wait() {
    let g = Grouping {
        group_wait: secs(30),
        escalate: Some(Escalation {
            severity: Severity::Critical,
            min_count: Some(100),
            min_job_percent: Some(50.0),
        }),
        ..fast()
    };
    let mut state = None;
    assert!(fold(&mut state, 0..150, &g, None, T0).is_empty());
    let (Decision::SendNow(n), _) = tick(state.as_ref().unwrap(), &g, T0 + secs(30)) else {
        panic!()
    };
    assert!(n.escalated_now && n.previous_count.is_none());
    assert!(n.escalation.unwrap().reason.contains("min_count = 100"));
    // A share needs the job's task counts; none known, so 99 failures stay an error.
    let mut state = None;
    fold(&mut state, 0..99, &g, None, T0);
    assert!(state.unwrap().escalation.is_none());
}

#[test]
fn a_state_stored_before_growth_existed_still_reads() {
    let mut state = None;
    fold(&mut state, 0..3, &fast(), None, T0);
    let mut json: serde_json::Value = serde_json::to_value(state.unwrap()).unwrap();
    let object = json.as_object_mut().unwrap();
    object.remove("jobTasks");
    object.remove("escalation");
    let old: GroupState = serde_json::from_value(json).unwrap();
    assert_eq!((old.count, old.escalation, old.job_tasks), (3, None, None));
}

#[test]
fn growth_and_escalation_options_parse_and_errors_have_positions() {
    let p = Policy::parse(
        r#"
[grouping]
renotify_on_growth = 10

[[receivers]]
name = "ops"
kind = "webhook"
url_env = "OPS_URL"

[[rules]]
name = "oom"
receivers = ["ops"]
escalate = { min_job_percent = 20 }
grouping = { renotify_on_growth = false }

[[rules]]
name = "other"
receivers = ["ops"]
escalate = { severity = "error", min_count = 1000 }
"#,
    )
    .unwrap();
    assert_eq!(p.grouping.renotify_on_growth, Some(10.0));
    assert_eq!(p.rules[0].grouping.renotify_on_growth, None);
    let e = p.rules[0].grouping.escalate.clone().unwrap();
    assert_eq!(
        (e.severity, e.min_count, e.min_job_percent),
        (Severity::Critical, None, Some(20.0))
    );
    assert_eq!(p.rules[1].grouping.renotify_on_growth, Some(10.0));
    assert_eq!(
        p.rules[1].grouping.escalate.as_ref().map(|e| e.severity),
        Some(Severity::Error)
    );
    assert_eq!(Grouping::default().renotify_on_growth, Some(2.0));

    let errors = Policy::parse(
        "[grouping]\nrenotify_on_growth = 1.0\n[[rules]]\nname = \"a\"\nescalate = { severity = \"info\", min_count = 1 }\n[[rules]]\nname = \"b\"\nescalate = { severity = \"critical\" }\n[[rules]]\nname = \"c\"\nescalate = { min_job_percent = 100.0, min_count = 5 }\n[[rules]]\nname = \"d\"\nescalate = { min_count = 5, later = true }\n",
    )
    .unwrap_err();
    let lines: Vec<String> = errors.errors.iter().map(ToString::to_string).collect();
    // deny_unknown_fields stops at the first shape error, so the last rule is checked alone.
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("14:"), "{lines:?}");
    let errors = Policy::parse(
        "[grouping]\nrenotify_on_growth = 1.0\n[[rules]]\nname = \"a\"\nescalate = { severity = \"info\", min_count = 1 }\n[[rules]]\nname = \"b\"\nescalate = { severity = \"critical\" }\n[[rules]]\nname = \"c\"\nescalate = { min_job_percent = 100.0, min_count = 5 }\n[[rules]]\nname = \"e\"\ngrouping = { renotify_on_growth = \"twice\" }\n",
    )
    .unwrap_err();
    let lines: Vec<String> = errors.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "2:22: renotify_on_growth = 1 must be more than 1 (2.0: the count doubled), or false",
            "5:25: escalate.severity \"info\" must be warning, error or critical",
            "5:45: escalate.min_count must be at least 2 (one failure is the diagnosis's own severity)",
            "8:12: escalate needs a threshold: min_count, min_job_percent or both",
            "11:32: escalate.min_job_percent must be more than 0 and less than 100",
            "14:35: renotify_on_growth must be a factor above 1 (2.0: the count doubled), or false",
        ],
    );
}
