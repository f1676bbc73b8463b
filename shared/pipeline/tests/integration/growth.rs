//! A group that grows is announced again, and one that crosses its rule's threshold escalates:
//! 5,000 same-cause failures on the emulator, swept and ticked by two instances on one store,
//! with the clock an argument of `tick`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use artifact_store::ArtifactStore;
use batch_emulator::{Emulator, Scenario};
use diagnosis::policy::Policy;
use pipeline::sweep::SweepOptions;
use pipeline::triage::Triage;
use preserve::PreserveOptions;
use serde_json::Value;
use test_kit::{Recorder, serve_emulator};
use time::OffsetDateTime;

use crate::triage::deadline;

const FAILURES: u64 = 5000;

/// One job of 5,000 tasks, every one killed the same way (exit 137) five minutes ago.
fn scenario() -> Scenario {
    let json = serde_json::json!({
        "pools": [{"id": "pool-1", "nodes": [{"id": "tvm-1"}]}],
        "jobs": [{
            "job": {"id": "big", "poolInfo": {"poolId": "pool-1"}},
            "generateTasks": [{"count": FAILURES, "idPrefix": "t-", "task": {
                "state": "completed", "commandLine": "python train.py",
                "executionInfo": {"exitCode": 137, "result": "failure", "retryCount": 0,
                    "requeueCount": 0, "startTime": "now-10m", "endTime": "now-5m",
                    "failureInfo": {"category": "usererror", "code": "FailureExitCode",
                        "message": "The task exited with an exit code representing a failure"}}}}]
        }]
    });
    Scenario::from_json_str(&json.to_string()).unwrap()
}

/// The issue's policy: no wait, a 10 s interval; `chat` hears every exit-code failure, `pager`
/// hears what is critical. `escalate` is the oom rule's escalation, if any.
fn policy(escalate: &str) -> Policy {
    Policy::parse(&format!(
        r#"
[grouping]
group_wait = "0s"
group_interval = "10s"

[[receivers]]
name = "chat"
kind = "webhook"
url_env = "CHAT_URL"
secret_env = "HOOK_SECRET"

[[receivers]]
name = "pager"
kind = "webhook"
url_env = "PAGER_URL"
secret_env = "HOOK_SECRET"

[[rules]]
name = "page-critical"
match = {{ severity = "critical" }}
receivers = ["pager"]
continue = true

[[rules]]
name = "oom"
match = {{ class = "task.exit_code" }}
receivers = ["chat"]
{escalate}
"#
    ))
    .unwrap_or_else(|e| panic!("{e}"))
}

struct World {
    a: Triage,
    b: Triage,
    chat: Recorder,
    pager: Recorder,
    _dir: tempfile::TempDir,
}

/// Two instances of the pipeline over one emulator and one store.
async fn world(escalate: &str) -> World {
    let batch_url = serve_emulator(Emulator::new(scenario()).unwrap()).await;
    let (chat, pager) = (Recorder::start().await, Recorder::start().await);
    let dir = tempfile::tempdir().unwrap();
    let store = artifact_store::open(dir.path().to_str().unwrap()).unwrap();
    let instance = |store: Arc<dyn ArtifactStore>| {
        let policy = policy(escalate);
        let env: BTreeMap<&str, String> = [
            ("CHAT_URL", chat.url.clone()),
            ("PAGER_URL", pager.url.clone()),
            ("HOOK_SECRET", "test-secret".to_owned()),
        ]
        .into();
        crate::support::single_account(&batch_url, store, policy, &env, PreserveOptions::default())
    };
    World {
        a: instance(store.clone()),
        b: instance(store),
        chat,
        pager,
        _dir: dir,
    }
}

fn options() -> SweepOptions {
    SweepOptions {
        first_lookback: Duration::from_secs(3600),
        ..SweepOptions::default()
    }
}

/// Both instances tick at `now` at the same time; returns how many grouped alerts each sent.
async fn tick_both(world: &World, now: OffsetDateTime) -> (usize, usize) {
    let (options, at) = (options(), now);
    let (a, b) = tokio::join!(
        world.a.tick(at, deadline(), &options),
        world.b.tick(at, deadline(), &options),
    );
    (a.unwrap().flushed.len(), b.unwrap().flushed.len())
}

fn count(alert: &Value) -> u64 {
    alert["group"]["count"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn five_thousand_failures_one_alert_then_exactly_one_more_with_the_count() {
    let world = world("").await;
    let t0 = OffsetDateTime::now_utc();
    let first = world.a.tick(t0, deadline(), &options()).await.unwrap();
    assert!(first.sweep.completed, "{:?}", first.lines());
    assert_eq!(first.sweep.subjects.len() as u64, FAILURES);
    let alerts = world.chat.alerts();
    assert_eq!(alerts.len(), 1, "one alert for the sweep");
    assert_eq!(alerts[0]["previousCount"], Value::Null);
    assert!(count(&alerts[0]) >= 1);

    // Before group_interval: nothing, from either instance.
    assert_eq!(
        tick_both(&world, t0 + time::Duration::seconds(5)).await,
        (0, 0)
    );
    assert_eq!(world.chat.len(), 1);

    // More than 10 s later, both instances tick together: exactly one more, with 5,000.
    let (a, b) = tick_both(&world, t0 + time::Duration::seconds(11)).await;
    assert_eq!(a + b, 1, "one instance announces the growth, not both");
    let alerts = world.chat.alerts();
    assert_eq!(alerts.len(), 2);
    let grown = &alerts[1];
    assert_eq!(count(grown), FAILURES);
    assert_eq!(grown["previousCount"], alerts[0]["group"]["count"]);
    assert_eq!(grown["group"]["previousCount"], grown["previousCount"]);
    assert_eq!(grown["state"], "firing");
    assert_eq!(grown["sequence"], 1);
    assert!(grown["group"]["firstSeen"].is_string() && grown["group"]["lastSeen"].is_string());
    assert_eq!(grown["group"]["examples"].as_array().unwrap().len(), 10);
    assert_ne!(
        grown["group"]["examples"][0], alerts[0]["group"]["examples"][0],
        "fresh examples"
    );
    assert_eq!(grown["escalation"], Value::Null);
    assert_eq!(grown["diagnosis"]["severity"], "error");

    // No growth: no more, however many ticks.
    for later in [12, 30, 60, 3600] {
        assert_eq!(
            tick_both(&world, t0 + time::Duration::seconds(later)).await,
            (0, 0)
        );
    }
    assert_eq!(world.chat.len(), 2);
    assert!(world.pager.is_empty(), "nothing critical: no page");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_escalation_rule_pages_once_after_the_chat_message() {
    let world = world("escalate = { min_job_percent = 20 }").await;
    let t0 = OffsetDateTime::now_utc();
    world.a.tick(t0, deadline(), &options()).await.unwrap();
    let chat = world.chat.alerts();
    assert_eq!(chat.len(), 1);
    assert_eq!(
        chat[0]["diagnosis"]["severity"], "error",
        "one of 5,000 is no escalation"
    );
    assert!(world.pager.is_empty());

    let (a, b) = tick_both(&world, t0 + time::Duration::seconds(11)).await;
    assert_eq!(
        a + b,
        2,
        "the chat message and the page, from one instance: {a} {b}"
    );
    let chat = world.chat.alerts();
    assert_eq!(chat.len(), 2);
    let escalated = &chat[1];
    assert_eq!(count(escalated), FAILURES);
    assert_eq!(escalated["diagnosis"]["severity"], "critical");
    let why = escalated["escalation"].as_str().unwrap();
    // It escalated when the share crossed 20% (1,001 of 5,000), during the first sweep, and
    // says so with the message that follows group_interval after the first.
    assert!(
        why.contains("1001 of the job's 5000 tasks failed this way (20.02%, more than 20%)"),
        "{why}"
    );
    let pages = world.pager.alerts();
    assert_eq!(pages.len(), 1, "routed to the critical receiver once");
    assert_eq!(pages[0]["rule"], "page-critical");
    assert_eq!(pages[0]["diagnosis"]["severity"], "critical");
    assert_eq!(pages[0]["escalation"], escalated["escalation"]);
    assert_eq!(count(&pages[0]), FAILURES);

    for later in [12, 60, 3600] {
        assert_eq!(
            tick_both(&world, t0 + time::Duration::seconds(later)).await,
            (0, 0)
        );
    }
    assert_eq!((world.chat.len(), world.pager.len()), (2, 1));
}
