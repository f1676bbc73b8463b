//! Resolved messages for pools and nodes, through whole ticks on the emulator: a pool whose
//! resize failed reaches its target, an autoscale formula evaluates again, a stuck deletion
//! completes, a group of unusable nodes ends only once none of them is in trouble; each is
//! resolved once to a `send_resolved` receiver, even with two instances on one store, and never
//! to a receiver without it. Deciding costs no request for a pool and one point read of a node.
//! A hostile pool or node id is as inert in the resolved Teams card as in the alert. A node that
//! breaks again after its group resolved is a new incident, alerted again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use artifact_store::ArtifactStore;
use batch_client::{BatchClient, BatchConfig, Secret};
use batch_emulator::{Emulator, Fault, FaultRule, Scenario, WELL_KNOWN_ACCOUNT_NAME};
use diagnosis::policy::Policy;
use pipeline::sweep::SweepOptions;
use pipeline::triage::{Triage, TriageConfig};
use preserve::PreserveOptions;
use serde_json::{Value, json};
use test_kit::{
    HostileBatch, HostilePool, Recorder, SECOND_ACCOUNT_KEY, SECOND_ACCOUNT_NAME, serve_emulator,
};
use time::OffsetDateTime;

use crate::triage::deadline;

/// Every pool and node class to both receivers; nodes grouped per pool and class (not per
/// cause), and no agent logs (this is about groups).
const POLICY: &str = r#"
[grouping]
group_by = ["account", "pool", "class"]
group_wait = "0s"

[[receivers]]
name = "oncall"
kind = "webhook"
url_env = "ONCALL_URL"
secret_env = "HOOK_SECRET"
send_resolved = true

[[receivers]]
name = "quiet"
kind = "webhook"
url_env = "QUIET_URL"
secret_env = "HOOK_SECRET"

[[rules]]
name = "nodes"
match = { class = "node.*" }
keep_agent_logs = false
receivers = ["oncall", "quiet"]

[[rules]]
name = "pools"
match = { class = "pool.*" }
receivers = ["oncall", "quiet"]
"#;

fn unusable(id: &str) -> Value {
    json!({"id": id, "node": {"state": "unusable", "stateTransitionTime": "now-10m",
        "errors": [{"code": "DiskFull", "message": "There is not enough space on the disk of the node."}]}})
}

/// A pool that could not grow, an autoscale formula that fails, a deletion stuck for hours, and
/// a pool with two unusable nodes beside a healthy one.
fn scenario() -> Scenario {
    let text = json!({"jobs": [], "pools": [
        {"id": "quota", "pool": {"allocationState": "steady", "allocationStateTransitionTime": "now-40m",
            "currentDedicatedNodes": 0, "targetDedicatedNodes": 3,
            "currentLowPriorityNodes": 0, "targetLowPriorityNodes": 0,
            "resizeErrors": [{"code": "AccountCoreQuotaReached",
                "message": "The specified account has reached VM core quota for the requested VM size."}]}},
        {"id": "scaler", "pool": {"enableAutoScale": true, "autoScaleFormula": "$TargetDedicatedNodes = 0;",
            "autoScaleEvaluationInterval": "PT5M", "currentDedicatedNodes": 0, "targetDedicatedNodes": 0,
            "autoScaleRun": {"timestamp": "now-4m",
                "error": {"code": "InsufficientSampleData", "message": "Autoscale evaluation failed due to insufficient sample data"}}}},
        {"id": "old", "pool": {"state": "deleting", "stateTransitionTime": "now-3h",
            "allocationState": "resizing", "allocationStateTransitionTime": "now-3h",
            "currentDedicatedNodes": 2, "targetDedicatedNodes": 0}},
        {"id": "workers", "nodes": [unusable("tvm-a"), unusable("tvm-b"),
            {"id": "tvm-ok", "node": {"state": "running", "runningTasksCount": 1}}]}
    ]});
    Scenario::from_json_str(&text.to_string()).unwrap()
}

/// One instance: the pipeline over `batch_url`, on `store`, with `policy`, its receivers' URLs
/// and secrets from `env`.
fn instance(
    batch_url: &str,
    store: &Arc<dyn ArtifactStore>,
    policy: &str,
    env: &BTreeMap<&str, String>,
) -> Triage {
    let policy = Policy::parse(policy).unwrap();
    crate::support::single_account(
        batch_url,
        store.clone(),
        policy,
        env,
        PreserveOptions::default(),
    )
}

/// One emulator serving `scenario`, one store, the `oncall` (`send_resolved`) and `quiet`
/// receivers: what most tests below start from.
struct World {
    oncall: Recorder,
    quiet: Recorder,
    emulator: Emulator,
    batch_url: String,
    store: Arc<dyn ArtifactStore>,
    env: BTreeMap<&'static str, String>,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start(scenario: Scenario) -> Self {
        let (oncall, quiet) = (Recorder::start().await, Recorder::start().await);
        let env = [
            ("ONCALL_URL", oncall.url.clone()),
            ("QUIET_URL", quiet.url.clone()),
            ("HOOK_SECRET", "test-secret".to_owned()),
        ]
        .into();
        let emulator = Emulator::new(scenario).unwrap();
        let batch_url = serve_emulator(emulator.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let store = artifact_store::open(dir.path().to_str().unwrap()).unwrap();
        Self {
            oncall,
            quiet,
            emulator,
            batch_url,
            store,
            env,
            _dir: dir,
        }
    }

    /// An instance of the pipeline with [`POLICY`]; several share the store.
    fn instance(&self) -> Triage {
        instance(&self.batch_url, &self.store, POLICY, &self.env)
    }
}

/// `(pool, class, state)` of every alert a recorder got, sorted.
fn seen(recorder: &Recorder) -> Vec<(String, String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let mut seen: Vec<_> = recorder
        .alerts()
        .iter()
        .map(|a| {
            (
                text(&a["diagnosis"]["subject"]["poolId"]),
                text(&a["diagnosis"]["class"]),
                text(&a["state"]),
            )
        })
        .collect();
    seen.sort();
    seen
}

fn resolved(recorder: &Recorder) -> Vec<Value> {
    recorder
        .alerts()
        .into_iter()
        .filter(|a| a["state"] == "resolved")
        .collect()
}

/// The node requests the emulator answered since it was last cleared: (point reads, lists).
fn node_requests(emulator: &Emulator) -> (Vec<String>, Vec<String>) {
    let paths: Vec<String> = emulator
        .requests()
        .into_iter()
        .map(|r| r.path_and_query)
        .filter(|p| p.contains("/nodes"))
        .collect();
    paths.into_iter().partition(|p| p.contains("/nodes/"))
}

#[tokio::test(flavor = "multi_thread")]
async fn pools_and_nodes_whose_trouble_ended_are_resolved_once() {
    let world = World::start(scenario()).await;
    let (oncall, quiet, emulator) = (&world.oncall, &world.quiet, &world.emulator);
    let a = world.instance();
    let b = world.instance();
    let options = SweepOptions::default();
    let now = OffsetDateTime::now_utc();
    let at = |minutes: i64| now + time::Duration::minutes(minutes);

    // Every failure is alerted: one group per pool, one for the two unusable nodes.
    let first = a.tick(now, deadline(), &options).await.unwrap();
    assert!(first.resolved.is_empty(), "{:?}", first.resolved);
    let firing: Vec<(String, String, String)> = [
        ("old", "pool.delete_stuck"),
        ("quota", "pool.resize_failed"),
        ("scaler", "pool.autoscale_failed"),
        ("workers", "node.unusable"),
    ]
    .iter()
    .map(|(p, c)| ((*p).to_owned(), (*c).to_owned(), "firing".to_owned()))
    .collect();
    assert_eq!(seen(oncall), firing);
    assert_eq!(seen(quiet), firing);

    // Nothing ended: nothing resolved, and no node was read to find that out.
    emulator.clear_requests();
    let still = a.tick(at(1), deadline(), &options).await.unwrap();
    assert!(still.resolved.is_empty(), "{:?}", still.resolved);
    assert!(node_requests(emulator).0.is_empty(), "no point read");

    // The pool reaches its target; two instances look at once: one resolved message.
    assert!(emulator.finish_pool_resize("quota"));
    let seen_a = a.sweep_pools(at(2), deadline(), &options).await.unwrap();
    let seen_b = b.sweep_pools(at(2), deadline(), &options).await.unwrap();
    assert!(seen_a.seen.is_some() && seen_b.seen.is_some());
    let (from_a, from_b) = tokio::join!(
        a.resolve_groups_after(at(2), deadline(), seen_a.seen.as_ref()),
        b.resolve_groups_after(at(2), deadline(), seen_b.seen.as_ref())
    );
    let told = [from_a.unwrap(), from_b.unwrap()].concat();
    assert_eq!(told, ["oncall"]);
    let done = resolved(oncall);
    assert_eq!(done.len(), 1, "{done:#?}");
    assert_eq!(done[0]["status"], "resolved");
    assert_eq!(done[0]["diagnosis"]["subject"]["poolId"], "quota");
    let summary = done[0]["diagnosis"]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with(
            "Resolved: the pool reached its target of 3 dedicated and 0 low-priority nodes."
        ),
        "{summary}"
    );
    let first_notice = oncall
        .alerts()
        .into_iter()
        .find(|n| n["state"] == "firing" && n["diagnosis"]["subject"]["poolId"] == "quota")
        .unwrap();
    assert_eq!(done[0]["group"]["key"], first_notice["group"]["key"]);
    assert_ne!(done[0]["id"], first_notice["id"]);

    // The autoscale formula evaluates again, the stuck deletion completes, and one of the two
    // unusable nodes leaves: the pools are resolved, the nodes' group is not (one still fails).
    assert!(emulator.succeed_autoscale("scaler"));
    assert!(emulator.delete_pool("old"));
    assert!(emulator.remove_node("workers", "tvm-a"));
    let next = a.tick(at(3), deadline(), &options).await.unwrap();
    assert_eq!(next.resolved, ["oncall", "oncall"]);
    let summaries: Vec<(String, String)> = resolved(oncall)
        .iter()
        .map(|r| {
            (
                r["diagnosis"]["subject"]["poolId"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                r["diagnosis"]["summary"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let says = |pool: &str, start: &str| {
        summaries
            .iter()
            .any(|(p, s)| p == pool && s.starts_with(start))
    };
    assert!(
        says("old", "Resolved: the pool no longer exists."),
        "{summaries:#?}"
    );
    assert!(
        says(
            "scaler",
            "Resolved: its autoscale evaluation succeeds again and the pool reached its target"
        ),
        "{summaries:#?}"
    );
    assert!(!summaries.iter().any(|(p, _)| p == "workers"));

    // The other node recovers: the nodes' group is resolved, at the cost of one point read
    // and no node list.
    assert!(emulator.recover_node("workers", "tvm-b"));
    emulator.clear_requests();
    let over = a.tick(at(4), deadline(), &options).await.unwrap();
    assert_eq!(over.resolved, ["oncall"]);
    let (reads, lists) = node_requests(emulator);
    assert_eq!(reads.len(), 1, "{reads:#?}");
    assert!(lists.is_empty(), "{lists:#?}");
    let node = resolved(oncall)
        .into_iter()
        .find(|r| r["diagnosis"]["subject"]["poolId"] == "workers")
        .unwrap();
    assert_eq!(node["diagnosis"]["class"], "node.unusable");
    let summary = node["diagnosis"]["summary"].as_str().unwrap();
    assert!(summary.starts_with("Resolved: the node "), "{summary}");

    // Later ticks of either instance send nothing more; the receiver without send_resolved
    // heard only the alerts.
    for instance in [&a, &b] {
        let again = instance.tick(at(5), deadline(), &options).await.unwrap();
        assert!(again.resolved.is_empty(), "{:?}", again.resolved);
    }
    assert_eq!(oncall.len(), 8, "4 alerts and 4 resolved messages");
    // (The nodes' group, which grew to 2 after its first notice, told `quiet` so once its
    // group_interval passed; the resolved message had closed that for `oncall`.)
    let mut heard = seen(quiet);
    heard.dedup();
    assert_eq!(heard, firing, "no resolved message without send_resolved");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_complete_pool_sweep_pool_and_node_groups_wait() {
    let world = World::start(scenario()).await;
    let (oncall, quiet, emulator) = (&world.oncall, &world.quiet, &world.emulator);
    let a = world.instance();
    let options = SweepOptions::default();
    let now = OffsetDateTime::now_utc();
    a.tick(now, deadline(), &options).await.unwrap();
    assert_eq!(oncall.len(), 4);
    assert!(emulator.finish_pool_resize("quota"));
    let later = now + time::Duration::minutes(1);
    // The job-only look, without the pool sweep's sight, leaves pools and nodes alone.
    assert!(
        a.resolve_groups(later, deadline())
            .await
            .unwrap()
            .is_empty()
    );
    // A node list that fails leaves the sweep's sight incomplete: nothing is told from it.
    emulator.add_fault(
        FaultRule::new(Fault::Error {
            status: 403,
            code: "AuthorizationFailure".to_owned(),
            message: "not this one".to_owned(),
            retry_after_seconds: None,
        })
        .path_prefix("/pools/workers/nodes"),
    );
    let broken = a.tick(later, deadline(), &options).await.unwrap();
    assert!(broken.pools.seen.is_none());
    assert!(broken.resolved.is_empty(), "{:?}", broken.resolved);
    // Read whole again: the pool is resolved; the nodes, still unusable, are not.
    emulator.clear_faults();
    let whole = a
        .tick(later + time::Duration::minutes(1), deadline(), &options)
        .await
        .unwrap();
    assert!(whole.pools.seen.is_some());
    assert_eq!(whole.resolved, ["oncall"]);
    let done = resolved(oncall);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["diagnosis"]["subject"]["poolId"], "quota");
    assert!(quiet.alerts().iter().all(|a| a["state"] == "firing"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_start_task_is_resolved_when_it_succeeds_again() {
    // The start task does not wait for success: the node stays idle, its start task failed.
    let text = json!({"jobs": [], "pools": [{"id": "boot",
        "pool": {"startTask": {"commandLine": "/bin/sh -c 'apt-get install -y tool'", "waitForSuccess": false}},
        "nodes": [{"id": "tvm-s", "node": {"state": "idle", "stateTransitionTime": "now-10m",
            "startTaskInfo": {"state": "completed", "result": "failure", "exitCode": 100,
                "endTime": "now-11m", "failureInfo": {"category": "usererror", "code": "FailureExitCode"}}}}]}]});
    let world = World::start(Scenario::from_json_str(&text.to_string()).unwrap()).await;
    let (oncall, emulator) = (&world.oncall, &world.emulator);
    let a = world.instance();
    let options = SweepOptions::default();
    let now = OffsetDateTime::now_utc();
    a.tick(now, deadline(), &options).await.unwrap();
    assert_eq!(
        seen(oncall),
        [(
            "boot".to_owned(),
            "node.start_task_failed".to_owned(),
            "firing".to_owned()
        )]
    );
    let idle = a
        .tick(now + time::Duration::minutes(1), deadline(), &options)
        .await
        .unwrap();
    assert!(
        idle.resolved.is_empty(),
        "idle is not enough: {:?}",
        idle.resolved
    );
    assert!(emulator.recover_node("boot", "tvm-s"));
    let over = a
        .tick(now + time::Duration::minutes(2), deadline(), &options)
        .await
        .unwrap();
    assert_eq!(over.resolved, ["oncall"]);
    let done = resolved(oncall);
    let summary = done[0]["diagnosis"]["summary"].as_str().unwrap();
    assert!(
        summary
            .starts_with("Resolved: the node's start task succeeded; it is idle with no errors."),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_of_the_second_account_is_resolved_from_that_account() {
    let (oncall, quiet) = (Recorder::start().await, Recorder::start().await);
    let env: BTreeMap<&str, String> = [
        ("ONCALL_URL", oncall.url.clone()),
        ("QUIET_URL", quiet.url.clone()),
        ("HOOK_SECRET", "test-secret".to_owned()),
    ]
    .into();
    // The same pools in two accounts, each on its own emulator with its own key.
    let first = Emulator::new(scenario()).unwrap();
    let first_url = serve_emulator(first.clone()).await;
    let mut other = scenario();
    other.account.name = SECOND_ACCOUNT_NAME.to_owned();
    other.account.key = SECOND_ACCOUNT_KEY.to_owned();
    let second = Emulator::new(other).unwrap();
    let second_url = serve_emulator(second.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = artifact_store::open(dir.path().to_str().unwrap()).unwrap();
    let batch = BatchClient::new(
        BatchConfig::shared_key(
            &second_url,
            SECOND_ACCOUNT_NAME,
            Secret::new(SECOND_ACCOUNT_KEY),
        )
        .unwrap(),
    )
    .unwrap();
    let both = instance(&first_url, &store, POLICY, &env)
        .with_account(
            TriageConfig {
                account: SECOND_ACCOUNT_NAME.to_owned(),
                preserve: PreserveOptions::default(),
                action_call_timeout: Duration::from_secs(30),
            },
            Arc::new(batch),
        )
        .unwrap();
    let options = SweepOptions::default();
    let now = OffsetDateTime::now_utc();
    both.tick(now, deadline(), &options).await.unwrap();
    assert_eq!(oncall.len(), 8, "4 groups in each account");
    // Only the second account's pool reaches its target: one resolved message, for it.
    assert!(second.finish_pool_resize("quota"));
    let later = both
        .tick(now + time::Duration::minutes(1), deadline(), &options)
        .await
        .unwrap();
    assert!(later.pools.seen.is_some());
    assert_eq!(later.resolved, ["oncall"]);
    let done = resolved(&oncall);
    assert_eq!(done.len(), 1);
    assert_eq!(
        done[0]["diagnosis"]["subject"]["account"],
        SECOND_ACCOUNT_NAME
    );
    assert_eq!(done[0]["diagnosis"]["subject"]["poolId"], "quota");
    // Then the first account's.
    assert!(first.finish_pool_resize("quota"));
    let last = both
        .tick(now + time::Duration::minutes(2), deadline(), &options)
        .await
        .unwrap();
    assert_eq!(last.resolved, ["oncall"]);
    let accounts: Vec<Value> = resolved(&oncall)
        .iter()
        .map(|r| r["diagnosis"]["subject"]["account"].clone())
        .collect();
    assert_eq!(accounts, [SECOND_ACCOUNT_NAME, WELL_KNOWN_ACCOUNT_NAME]);
}

const HOSTILE_POOL: &str = "HOSTILE-pool[click](https://evil.example) **bold** <b>x</b> _i_";
const HOSTILE_NODE: &str = "HOSTILE-node<script>alert(1)</script> # [y](https://evil.example)";

/// Every string in `value` that holds `marker`, as (the enclosing object's `type`, its key).
fn strings_with(
    value: &Value,
    marker: &str,
    kind: &str,
    key: &str,
    found: &mut Vec<(String, String)>,
) {
    match value {
        Value::String(text) if text.contains(marker) => {
            found.push((kind.to_owned(), key.to_owned()))
        }
        Value::Array(items) => {
            for item in items {
                strings_with(item, marker, kind, key, found);
            }
        }
        Value::Object(map) => {
            let kind = map.get("type").and_then(Value::as_str).unwrap_or("");
            for (k, v) in map {
                strings_with(v, marker, kind, k, found);
            }
        }
        _ => {}
    }
}

/// Hostile text shows in a card only as a `TextRun`'s text or the plain fallback: never where
/// Teams reads markdown (a `TextBlock`, a `FactSet`) or a URL.
fn assert_inert(card: &Value) {
    let mut found = Vec::new();
    strings_with(card, "HOSTILE", "", "", &mut found);
    assert!(!found.is_empty(), "the hostile ids show: {card}");
    for (kind, key) in &found {
        assert!(
            (kind == "TextRun" && key == "text") || key == "fallbackText",
            "untrusted text in {kind}.{key}: {card}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_pool_and_node_id_is_inert_in_the_resolved_card() {
    let teams = Recorder::start().await;
    let env: BTreeMap<&str, String> = [("TEAMS_URL", teams.url.clone())].into();
    let policy = r#"
[grouping]
group_wait = "0s"

[[receivers]]
name = "chat"
kind = "teams"
url_env = "TEAMS_URL"
send_resolved = true

[[rules]]
name = "nodes"
match = { class = "node.*" }
keep_agent_logs = false
receivers = ["chat"]
"#;
    let double = HostileBatch::with_pools(
        Vec::new(),
        vec![HostilePool {
            id: HOSTILE_POOL.to_owned(),
            nodes: vec![HOSTILE_NODE.to_owned()],
        }],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = artifact_store::open(dir.path().to_str().unwrap()).unwrap();
    let a = instance(&double.url, &store, policy, &env);
    let options = SweepOptions::default();
    let now = OffsetDateTime::now_utc();
    a.tick(now, deadline(), &options).await.unwrap();
    let cards: Vec<Value> = teams.alerts();
    assert_eq!(cards.len(), 1, "{cards:#?}");
    assert_inert(&cards[0]);

    assert!(double.remove_node(HOSTILE_POOL, HOSTILE_NODE));
    let over = a
        .tick(now + time::Duration::minutes(1), deadline(), &options)
        .await
        .unwrap();
    assert_eq!(over.resolved, ["chat"]);
    let cards: Vec<Value> = teams.alerts();
    assert_eq!(cards.len(), 2, "{cards:#?}");
    let card = &cards[1];
    assert!(card.to_string().contains("RESOLVED"), "{card}");
    assert_inert(card);
    assert!(
        double
            .paths()
            .iter()
            .any(|p| p.contains("/nodes/HOSTILE-node")),
        "the node was read once it left the group"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_breaks_again_after_it_resolved_is_alerted_again() {
    let text = json!({"jobs": [], "pools": [{"id": "workers", "nodes": [unusable("tvm-a")]}]});
    let world = World::start(Scenario::from_json_str(&text.to_string()).unwrap()).await;
    let (oncall, quiet, emulator) = (&world.oncall, &world.quiet, &world.emulator);
    let a = world.instance();
    let options = SweepOptions::default();
    let now = OffsetDateTime::now_utc();
    let minutes = |n: i64| now + time::Duration::minutes(n);
    let firing = |recorder: &Recorder| {
        seen(recorder)
            .into_iter()
            .filter(|(_, _, state)| state == "firing")
            .count()
    };
    a.tick(now, deadline(), &options).await.unwrap();
    assert_eq!(firing(oncall), 1);
    assert!(emulator.recover_node("workers", "tvm-a"));
    let over = a.tick(minutes(1), deadline(), &options).await.unwrap();
    assert_eq!(over.resolved, ["oncall"]);
    // Ten minutes later, well within the group's repeat_interval, the same node breaks again.
    assert!(emulator.make_node_unusable("workers", "tvm-a", "DiskFull"));
    let again = a.tick(minutes(10), deadline(), &options).await.unwrap();
    assert_eq!(firing(oncall), 2, "{:?} {:#?}", seen(oncall), again.lines());
    assert_eq!(firing(quiet), 2, "{:?}", seen(quiet));
    // And it is still one incident: the next tick sends nothing more.
    a.tick(minutes(11), deadline(), &options).await.unwrap();
    assert_eq!(firing(oncall), 2);
    assert_eq!(resolved(oncall).len(), 1);
}
