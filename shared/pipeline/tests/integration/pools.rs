//! Pools and nodes through the whole pipeline on the emulator: the sweep finds them (node counts
//! first, one filtered node list per pool in trouble), the node agent's logs are kept once per
//! node and incident (local store and Azurite), node actions are guarded, and pool events are
//! hints that re-read the pool.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use artifact_store::ArtifactStore;
use batch_client::Deadline;
use batch_emulator::{Emulator, NodeActionKind, Scenario};
use diagnosis::policy::Policy;
use pipeline::audit::{AuditDecision, AuditLog};
use pipeline::sweep::SweepOptions;
use pipeline::triage::Triage;
use preserve::PreserveOptions;
use test_kit::{Recorder, serve_emulator};
use time::OffsetDateTime;

const DISK_FULL: &str = "tvm-1695681911_1-20261204t080000z";

/// Every node and pool class to the hook, with `extra` policy text (node actions).
fn policy_text(extra: &str) -> String {
    format!(
        r#"
[grouping]
group_by = ["account", "pool", "class", "fingerprint"]
group_wait = "0s"

[[receivers]]
name = "hook"
kind = "webhook"
url_env = "HOOK_URL"
secret_env = "HOOK_SECRET"

{extra}

[[rules]]
name = "pools-and-nodes"
match = {{ class = "*" }}
receivers = ["hook"]
"#
    )
}

struct World {
    triage: Triage,
    emulator: Emulator,
    store: Arc<dyn ArtifactStore>,
    hook: Recorder,
    _dir: tempfile::TempDir,
}

async fn world_with(
    scenario: Scenario,
    extra: &str,
    store: Option<Arc<dyn ArtifactStore>>,
) -> World {
    let emulator = Emulator::new(scenario).unwrap();
    emulator.set_agent_log_delay(Duration::from_millis(50));
    let batch_url = serve_emulator(emulator.clone()).await;
    let hook = Recorder::start().await;
    let policy = Policy::parse(&policy_text(extra)).unwrap();
    let env: BTreeMap<&str, String> = [
        ("HOOK_URL", hook.url.clone()),
        ("HOOK_SECRET", "test-secret".to_owned()),
    ]
    .into();
    let dir = tempfile::tempdir().unwrap();
    let store =
        store.unwrap_or_else(|| artifact_store::open(dir.path().to_str().unwrap()).unwrap());
    let triage = crate::support::single_account(
        &batch_url,
        store.clone(),
        policy,
        &env,
        PreserveOptions::default(),
    );
    World {
        triage,
        emulator,
        store,
        hook,
        _dir: dir,
    }
}

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(60))
}

fn node_requests(emulator: &Emulator) -> Vec<String> {
    emulator
        .requests()
        .into_iter()
        .map(|r| r.path_and_query)
        .filter(|p| p.contains("/nodes?") || p.contains("/nodes/"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sweep_finds_pools_and_nodes_keeps_agent_logs_once_and_alerts_once() {
    let world = world_with(Scenario::builtin(), "", None).await;
    let now = OffsetDateTime::now_utc();
    let report = world
        .triage
        .sweep_pools(now, deadline(), &SweepOptions::default())
        .await
        .unwrap();
    assert!(report.completed);
    let classes: Vec<(String, &str)> = report
        .subjects
        .iter()
        .map(|s| (s.subject.clone(), s.class.map_or("-", |c| c.as_str())))
        .collect();
    for (subject, class) in [
        ("devbatch1/_pools/quota-pool", "pool.resize_failed"),
        ("devbatch1/_pools/gpu-pool", "pool.resize_failed"),
        ("devbatch1/_pools/scaler", "pool.autoscale_failed"),
        ("devbatch1/_pools/old-pool", "pool.delete_stuck"),
    ] {
        assert!(
            classes.iter().any(|(s, c)| s == subject && *c == class),
            "{subject} {class} in {classes:#?}"
        );
    }
    let unusable = report
        .subjects
        .iter()
        .filter(|s| s.class.is_some_and(|c| c.as_str() == "node.unusable"))
        .count();
    assert_eq!(unusable, 2, "{classes:#?}");
    // Nodes were listed only for the pool the counts say is in trouble.
    let listed: Vec<String> = node_requests(&world.emulator)
        .into_iter()
        .filter(|p| p.contains("/nodes?"))
        .collect();
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert!(listed[0].starts_with("/pools/workers/nodes?"), "{listed:?}");
    // The unusable nodes' agent logs were asked for once each, and kept.
    let uploads = world.emulator.agent_log_uploads();
    assert_eq!(uploads.len(), 2, "{uploads:#?}");
    let disk_full = report
        .subjects
        .iter()
        .find(|s| s.subject.ends_with(DISK_FULL))
        .unwrap();
    assert_eq!(disk_full.agent_logs.as_deref(), Some("complete"));
    assert!(
        disk_full.preserved.iter().any(|l| l.contains("_agentlogs")),
        "{:?}",
        disk_full.preserved
    );
    // Each pool and node in trouble is in the failure index the report reads, like a task.
    let indexed: Vec<String> = world
        .store
        .list(pipeline::history::HISTORY_PREFIX)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key.as_str().to_owned())
        .collect();
    for class in [
        "pool.resize_failed",
        "pool.autoscale_failed",
        "pool.delete_stuck",
        "node.unusable",
    ] {
        assert!(
            indexed.iter().any(|k| k.contains(&format!("/{class}/"))),
            "{class} in {indexed:#?}"
        );
    }
    let alerts_after_first = world.hook.len();
    assert!(alerts_after_first >= 5, "{alerts_after_first}");
    let bodies = world.hook.bodies().join("\n");
    assert!(
        bodies.contains("_agentlogs"),
        "the alert links to the agent logs"
    );

    // A second sweep: nothing new asked of Batch, no new alert.
    let again = world
        .triage
        .sweep_pools(now, deadline(), &SweepOptions::default())
        .await
        .unwrap();
    assert!(again.completed);
    assert_eq!(world.emulator.agent_log_uploads().len(), 2);
    assert_eq!(world.hook.len(), alerts_after_first);
    // No node action without a policy asking for one.
    assert!(world.emulator.node_actions().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_logs_land_in_azurite_through_a_write_only_sas() {
    let azurite = artifact_store::testing::Azurite::start();
    let store: Arc<dyn ArtifactStore> = Arc::new(azurite.store("triage").await);
    let world = world_with(Scenario::builtin(), "", Some(store.clone())).await;
    let now = OffsetDateTime::now_utc();
    let report = world
        .triage
        .sweep_pools(now, deadline(), &SweepOptions::default())
        .await
        .unwrap();
    let uploads = world.emulator.agent_log_uploads();
    assert_eq!(uploads.len(), 2);
    // The emulator records the destination without its query: the SAS stayed in the request.
    assert!(uploads.iter().all(|u| !u.destination.contains("sig=")));
    let node = report
        .subjects
        .iter()
        .find(|s| s.subject.ends_with(DISK_FULL))
        .unwrap();
    let incident_manifests = store
        .list("devbatch1/_pools/workers/")
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.key.as_str().ends_with("manifest.json"))
        .count();
    assert_eq!(incident_manifests, 2);
    // Complete now or on the next sweep (the upload is asynchronous).
    let status = match node.agent_logs.as_deref() {
        Some("complete") => "complete".to_owned(),
        _ => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            world
                .triage
                .sweep_pools(now, deadline(), &SweepOptions::default())
                .await
                .unwrap();
            let upload = uploads.iter().find(|u| u.node_id == DISK_FULL).unwrap();
            let files = store
                .list(&format!("{}/", upload.virtual_directory_name))
                .await
                .unwrap();
            assert_eq!(
                u32::try_from(files.len()).unwrap(),
                upload.number_of_files_uploaded
            );
            "complete".to_owned()
        }
    };
    assert_eq!(status, "complete");
    assert_eq!(world.emulator.agent_log_uploads().len(), 2, "asked once");
}

const NODE_ACTIONS_DRY: &str = r#"
[node_actions]
enabled = true
max_per_hour = 10
max_per_pool_per_hour = 1

[[rules]]
name = "drain-unusable"
match = { class = "node.unusable" }
node_action = { kind = "remove" }
receivers = ["hook"]
continue = true
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_node_action_is_audited_once_and_sends_nothing() {
    let world = world_with(Scenario::builtin(), NODE_ACTIONS_DRY, None).await;
    let now = OffsetDateTime::now_utc();
    for _ in 0..2 {
        world
            .triage
            .sweep_pools(now, deadline(), &SweepOptions::default())
            .await
            .unwrap();
    }
    assert!(world.emulator.node_actions().is_empty());
    let records = AuditLog::new(world.store.clone()).all().await.unwrap();
    let dry: Vec<_> = records
        .iter()
        .filter(|r| r.decision == AuditDecision::DryRun)
        .collect();
    assert_eq!(
        dry.len(),
        2,
        "one per unusable node, not per sweep: {records:#?}"
    );
    assert!(dry.iter().all(|r| r.action == "node.remove"
        && r.pool_id.as_deref() == Some("workers")
        && r.reason.contains("nodeDeallocationOption=requeue")));
}

#[tokio::test(flavor = "multi_thread")]
async fn live_node_actions_wait_for_the_logs_and_respect_the_pool_budget() {
    let live = NODE_ACTIONS_DRY.replace("enabled = true", "enabled = true\ndry_run = false");
    let world = world_with(Scenario::builtin(), &live, None).await;
    let now = OffsetDateTime::now_utc();
    let report = world
        .triage
        .sweep_pools(now, deadline(), &SweepOptions::default())
        .await
        .unwrap();
    let actions = world.emulator.node_actions();
    // One per pool per hour: one of the two unusable nodes is removed, with requeue.
    assert_eq!(actions.len(), 1, "{actions:#?}");
    assert_eq!(actions[0].kind, NodeActionKind::Remove);
    assert_eq!(actions[0].option, "requeue");
    let removed = actions[0].node_id.clone();
    // Its logs were kept first.
    let removed_report = report
        .subjects
        .iter()
        .find(|s| s.subject.ends_with(removed.as_str()))
        .unwrap();
    assert!(matches!(
        removed_report.agent_logs.as_deref(),
        Some("complete" | "incomplete" | "node_gone" | "unavailable")
    ));
    let records = AuditLog::new(world.store.clone()).all().await.unwrap();
    assert!(
        records
            .iter()
            .any(|r| r.decision == AuditDecision::Skipped && r.reason.contains("budget of pool")),
        "{records:#?}"
    );
    assert!(records.iter().any(|r| r.decision == AuditDecision::Applied));
    // A second sweep in the same hour removes nothing more.
    world
        .triage
        .sweep_pools(now, deadline(), &SweepOptions::default())
        .await
        .unwrap();
    assert_eq!(world.emulator.node_actions().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_healthy_node_of_a_working_pool_is_never_reimaged() {
    // Start tasks without waitForSuccess failed on running nodes: in pool `solo` the one node
    // is the pool's only healthy node and runs a task; in pool `pair` there are two.
    let failed_start = r#""startTaskInfo": {"state": "completed", "result": "failure", "exitCode": 1,
        "endTime": "now-11m", "failureInfo": {"category": "usererror", "code": "FailureExitCode"}}"#;
    let node = |id: &str| {
        format!(
            r#"{{"id": "{id}", "node": {{"state": "running", "runningTasksCount": 1, "stateTransitionTime": "now-10m", {failed_start}}}}}"#
        )
    };
    let pool = |id: &str, nodes: &[&str]| {
        let nodes: Vec<String> = nodes.iter().map(|n| node(n)).collect();
        format!(
            r#"{{"id": "{id}", "pool": {{"startTask": {{"commandLine": "x", "waitForSuccess": false}}}}, "nodes": [{}]}}"#,
            nodes.join(",")
        )
    };
    let scenario = Scenario::from_json_str(&format!(
        r#"{{"pools": [{}, {}], "jobs": []}}"#,
        pool("solo", &["n-solo"]),
        pool("pair", &["n-a", "n-b"])
    ))
    .unwrap();
    let policy = r#"
[node_actions]
enabled = true
dry_run = false
max_per_hour = 10
max_per_pool_per_hour = 1

[[rules]]
name = "reimage-start"
match = { class = "node.start_task_failed" }
node_action = { kind = "reimage" }
receivers = ["hook"]
continue = true
"#;
    let world = world_with(scenario, policy, None).await;
    world
        .triage
        .sweep_pools(
            OffsetDateTime::now_utc(),
            deadline(),
            &SweepOptions::default(),
        )
        .await
        .unwrap();
    let actions = world.emulator.node_actions();
    assert!(
        actions.iter().all(|a| a.pool_id != "solo"),
        "the last healthy node was touched: {actions:#?}"
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| a.pool_id == "pair" && a.kind == NodeActionKind::Reimage)
            .count(),
        1,
        "{actions:#?}"
    );
    let records = AuditLog::new(world.store.clone()).all().await.unwrap();
    assert!(
        records
            .iter()
            .any(|r| r.node_id.as_deref() == Some("n-solo")
                && r.decision == AuditDecision::Skipped
                && r.reason.contains("last healthy node")),
        "{records:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resize_event_is_a_hint_that_rereads_the_pool() {
    let world = world_with(Scenario::builtin(), "", None).await;
    let record = |pool: &str, code: &str| {
        serde_json::json!({"records": [{
            "time": "2026-12-05T03:00:00Z",
            "resourceId": "/SUBSCRIPTIONS/0/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.BATCH/BATCHACCOUNTS/DEVBATCH1/",
            "category": "ServiceLog", "operationName": "PoolResizeCompleteEvent",
            "operationVersion": "2017-06-01",
            "properties": {"id": pool, "resultCode": code, "resultMessage": "x",
                "currentDedicatedNodes": 0, "targetDedicatedNodes": 8}
        }]})
        .to_string()
    };
    let now = OffsetDateTime::now_utc();
    // A success costs nothing.
    world.emulator.clear_requests();
    let ok = world
        .triage
        .handle_payload(record("quota-pool", "Success").as_bytes(), now, deadline())
        .await
        .unwrap();
    assert!(ok.subjects.is_empty());
    assert!(world.emulator.requests().is_empty());
    // A failure re-reads the pool, whose own state is diagnosed.
    let failed = world
        .triage
        .handle_payload(
            record("quota-pool", "AccountCoreQuotaReached").as_bytes(),
            now,
            deadline(),
        )
        .await
        .unwrap();
    assert_eq!(failed.subjects.len(), 1);
    assert_eq!(failed.subjects[0].subject, "devbatch1/_pools/quota-pool");
    assert_eq!(
        failed.subjects[0].class.map(|c| c.as_str()),
        Some("pool.resize_failed")
    );
    assert!(
        world
            .emulator
            .requests()
            .iter()
            .any(|r| r.path_and_query.starts_with("/pools/quota-pool?"))
    );
    // An event naming a pool that is gone is skipped, not failed.
    let gone = world
        .triage
        .handle_payload(
            record("no-such-pool", "AllocationFailed").as_bytes(),
            now,
            deadline(),
        )
        .await
        .unwrap();
    assert!(!gone.should_retry());
    // Another account's event fetches nothing.
    let other = record("quota-pool", "AllocationFailed").replace("DEVBATCH1", "OTHER");
    world.emulator.clear_requests();
    let refused = world
        .triage
        .handle_payload(other.as_bytes(), now, deadline())
        .await
        .unwrap();
    assert!(matches!(
        refused.subjects[0].outcome,
        pipeline::triage::Outcome::Refused(_)
    ));
    assert!(world.emulator.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_disk_full_nodes_of_one_pool_make_one_alert_with_a_count() {
    let nodes: Vec<String> = (0..200)
        .map(|n| {
            format!(
                r#"{{"id": "tvm-{n:03}", "node": {{"state": "unusable", "stateTransitionTime": "now-{m}m",
                   "errors": [{{"code": "DiskFull", "message": "There is not enough space on the disk of the node.",
                   "errorDetails": [{{"name": "Message", "value": "The temporary disk /mnt/batch/tasks is 100% used on tvm-{n:03}"}}]}}]}}}}"#,
                m = 10 + n
            )
        })
        .chain(std::iter::once(
            r#"{"id": "tvm-ok", "node": {"state": "running", "runningTasksCount": 1}}"#.to_owned(),
        ))
        .collect();
    let scenario = Scenario::from_json_str(&format!(
        r#"{{"pools": [{{"id": "big", "nodes": [{}]}}], "jobs": []}}"#,
        nodes.join(",")
    ))
    .unwrap();
    // Agent logs off: this is about grouping.
    let extra = r#"
[[rules]]
name = "no-agent-logs"
match = { class = "node.unusable" }
keep_agent_logs = false
receivers = ["hook"]
grouping = { group_wait = "30s" }
"#;
    let world = world_with(scenario, extra, None).await;
    let now = OffsetDateTime::now_utc();
    let report = world
        .triage
        .sweep_pools(now, deadline(), &SweepOptions::default())
        .await
        .unwrap();
    assert!(report.completed);
    assert_eq!(report.pools_listed, 1);
    assert_eq!(
        report
            .subjects
            .iter()
            .filter(|s| s.class.is_some_and(|c| c.as_str() == "node.unusable"))
            .count(),
        200
    );
    // The group waits, then goes out once with every node in it.
    assert!(world.hook.is_empty());
    world
        .triage
        .flush_due(now + time::Duration::seconds(31), deadline())
        .await
        .unwrap();
    let alerts = world.hook.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["group"]["count"], 200, "{:#}", alerts[0]["group"]);
    assert!(world.emulator.agent_log_uploads().is_empty());
}
