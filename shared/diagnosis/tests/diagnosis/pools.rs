//! Pools and nodes: every REST and event shape reads into pool and node items, whatever the
//! casing and the API version; their diagnoses group by cause, not by node or pool, and stay
//! bounded and redacted on hostile input.

use std::collections::HashSet;
use std::time::Duration;

use batch_triage_diagnosis::payload::read_slice;
use batch_triage_diagnosis::wire::{
    BatchPool, NodeState, PoolEventKind, PoolState, TaskResult, Timestamp,
};
use batch_triage_diagnosis::{
    Diagnosis, Evidence, Item, PayloadKind, diagnose_item, diagnose_node, diagnose_pool,
};

use crate::corpus::corpus_dir;

fn items(json: &str) -> (PayloadKind, Vec<Item>) {
    let mut items = Vec::new();
    let kind = read_slice(json.as_bytes(), &mut |item| items.push(item))
        .unwrap_or_else(|e| panic!("{e}: {json}"));
    (kind, items)
}

#[test]
fn the_corpus_pool_resize_record_is_a_pool_event_with_its_account() {
    let bytes = std::fs::read(
        corpus_dir()
            .join("batch/events/ResourceLogEnvelope.PoolResizeCompleteEvent.PT1H-line.json"),
    )
    .unwrap();
    let mut items = Vec::new();
    read_slice(&bytes, &mut |item| items.push(item)).unwrap();
    let [
        Item::PoolEvent {
            kind,
            body,
            account,
        },
    ] = items.as_slice()
    else {
        panic!("one pool event: {items:?}")
    };
    assert_eq!(*kind, PoolEventKind::ResizeComplete);
    assert_eq!(account.as_deref(), Some("mybatchaccount"));
    assert_eq!(body.id.as_deref(), Some("MYPOOLID"));
    assert_eq!(body.target_dedicated_nodes, Some(100));
    assert_eq!(body.result_code.as_deref(), Some("Success"));
    assert!(body.start_time.is_some() && body.end_time.is_some());
    assert_eq!(body.resize_failure(), None, "Success is no failure");
}

#[test]
fn pool_event_bodies_alone_and_in_records_in_any_casing() {
    let (kind, found) = items(
        r#"{"records": [
          {"operationName": "poolautoscaleevent", "resourceId": "/x/BATCHACCOUNTS/Acct/",
           "properties": {"id": "p1", "timestamp": "2019-08-22 20:50:59.522", "formula": "...",
             "results": "$TargetDedicatedNodes=2",
             "error": {"code": "InsufficientSampleData", "message": "Autoscale evaluation failed",
               "values": [{"name": "Message", "value": "Line 15, Col 44: Insufficient data"}]}}},
          {"operationName": "PoolCreateEvent", "properties": {"id": "p2"}},
          {"operationName": "PoolResizeCompleteEvent", "properties": {"id": "p3",
             "currentDedicated": 0, "targetDedicated": 4, "result": "AllocationTimedout",
             "resizeError": {"code": "AllocationTimedout", "message": "timed out"}}}
        ]}"#,
    );
    assert_eq!(kind, PayloadKind::DiagnosticRecords);
    assert_eq!(found.len(), 3);
    let Item::PoolEvent {
        kind,
        body,
        account,
    } = &found[0]
    else {
        panic!("{found:?}")
    };
    assert_eq!(*kind, PoolEventKind::AutoScale);
    assert_eq!(account.as_deref(), Some("acct"));
    assert!(body.has_formula);
    let error = body.auto_scale_failure().expect("the autoscale error");
    assert_eq!(error.code.as_deref(), Some("InsufficientSampleData"));
    assert_eq!(
        error.detail("message"),
        Some("Line 15, Col 44: Insufficient data")
    );
    assert!(matches!(&found[1], Item::Skipped { what } if what == "PoolCreateEvent"));
    let Item::PoolEvent { body, .. } = &found[2] else {
        panic!("{found:?}")
    };
    assert_eq!(body.current_dedicated_nodes, Some(0));
    assert_eq!(
        body.resize_failure().and_then(|e| e.code),
        Some("AllocationTimedout".to_owned())
    );

    let (kind, found) = items(
        r#"{"id": "p", "nodeDeallocationOption": "invalid", "resultCode": "AccountCoreQuotaReached",
            "resultMessage": "quota", "startTime": "2016-09-09T22:13:06.573Z"}"#,
    );
    assert_eq!(kind, PayloadKind::PoolEvent);
    let [
        Item::PoolEvent {
            kind,
            body,
            account: None,
        },
    ] = found.as_slice()
    else {
        panic!("{found:?}")
    };
    assert_eq!(*kind, PoolEventKind::ResizeComplete);
    let failure = body.resize_failure().unwrap();
    assert_eq!(failure.code.as_deref(), Some("AccountCoreQuotaReached"));
    assert_eq!(failure.message.as_deref(), Some("quota"));

    let (_, found) = items(r#"{"id": "p", "nodeDeallocationOption": "invalid"}"#);
    assert!(matches!(found.as_slice(), [Item::Skipped { what }] if what == "PoolResizeStartEvent"));
}

#[test]
fn pool_lists_node_lists_and_node_counts() {
    let (kind, found) = items(
        r#"{"value": [
          {"id": "p1", "url": "https://a.b.batch.azure.com/pools/p1", "state": "Deleting",
           "stateTransitionTime": "2026-01-01T00:00:00Z", "currentDedicatedNodes": "0",
           "targetDedicatedNodes": 2, "enableAutoScale": true, "autoScaleFormula": "$x=1;",
           "autoScaleRun": {"timestamp": "2026-01-01T00:00:00Z", "results": "$x=1"}},
          {"id": "p2", "url": "https://a.b.batch.azure.com/pools/p2", "madeUpField": [1, 2]}
        ]}"#,
    );
    assert_eq!(kind, PayloadKind::PoolList);
    let [Item::Pool(p1), Item::Pool(p2)] = found.as_slice() else {
        panic!("{found:?}")
    };
    assert_eq!(p1.state, Some(PoolState::Deleting));
    assert_eq!(p1.current_dedicated_nodes, Some(0));
    assert!(p1.has_auto_scale_formula && p1.auto_scale_error().is_none());
    assert_eq!(p2.id.as_deref(), Some("p2"));
    assert!(!p2.has_auto_scale_formula);

    let (kind, found) = items(
        r#"{"value": [
          {"id": "tvm-1", "url": "https://a.b.batch.azure.com/pools/p1/nodes/tvm-1",
           "state": "Idle", "isDedicated": false, "startTask": {"waitForSuccess": false},
           "startTaskInfo": {"state": "completed", "result": "Failure", "exitCode": "1",
             "retryCount": 0, "failureInfo": {"category": "UserError", "code": "FailureExitCode"}}},
          {"id": "tvm-2", "state": "unusable", "errors": {"code": "DiskFull", "message": "full",
             "errorDetails": {"name": "Message", "value": "The VM disk is full."}}}
        ]}"#,
    );
    assert_eq!(kind, PayloadKind::NodeList);
    let [Item::Node(n1), Item::Node(n2)] = found.as_slice() else {
        panic!("{found:?}")
    };
    assert_eq!(n1.state, Some(NodeState::Idle));
    assert_eq!(n1.pool_id().as_deref(), Some("p1"));
    assert_eq!(n1.is_dedicated, Some(false));
    assert_eq!(
        n1.start_task.as_ref().unwrap().wait_for_success,
        Some(false)
    );
    let info = n1.start_task_info.as_ref().unwrap();
    assert_eq!(info.result, Some(TaskResult::Failure));
    assert_eq!(info.exit_code, Some(1));
    assert_eq!(
        n2.errors.len(),
        1,
        "a single error object is read as a list of one"
    );
    assert_eq!(n2.errors[0].detail("MESSAGE"), Some("The VM disk is full."));

    let (kind, found) = items(
        r#"{"value": [{"poolId": "p1",
            "dedicated": {"idle": 3, "unusable": "2", "startTaskFailed": 1, "upgradingOS": 0,
                          "total": 6},
            "lowPriority": {"total": 0}}]}"#,
    );
    assert_eq!(kind, PayloadKind::PoolNodeCountsList);
    let [Item::PoolNodeCounts(counts)] = found.as_slice() else {
        panic!("{found:?}")
    };
    assert_eq!(counts.in_trouble(), 3);
    assert!(counts.worth_listing(false));
    let (_, found) =
        items(r#"{"value": [{"poolId": "p2", "dedicated": {"idle": 4, "total": 4}}]}"#);
    let [Item::PoolNodeCounts(quiet)] = found.as_slice() else {
        panic!("{found:?}")
    };
    assert!(!quiet.worth_listing(false), "nothing in trouble");
    assert!(
        quiet.worth_listing(true),
        "an idle node may hide a failed start task"
    );
}

#[test]
fn a_pool_field_of_the_wrong_type_is_named() {
    let mut sink = |_| {};
    let error = read_slice(
        br#"{"id": "p", "url": "https://a.b.batch.azure.com/pools/p", "targetDedicatedNodes": "lots"}"#,
        &mut sink,
    )
    .unwrap_err();
    assert!(
        error.to_string().starts_with("targetDedicatedNodes: "),
        "{error}"
    );
}

fn diagnoses(json: &str) -> Vec<Diagnosis> {
    let mut found = Vec::new();
    read_slice(json.as_bytes(), &mut |item| {
        found.extend(diagnose_item(&item, &Evidence::default()))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    found
}

fn unusable_node(pool: &str, node: &str, error: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "id": node,
        "url": format!("https://acct.westeurope.batch.azure.com/pools/{pool}/nodes/{node}"),
        "state": "unusable",
        "errors": error,
    })
}

/// 200 nodes with `DiskFull` in one pool are one group, and the same cause in another pool joins
/// it; another cause is another group.
#[test]
fn two_hundred_disk_full_nodes_make_one_group() {
    let disk_full = serde_json::json!([{
        "code": "DiskFull", "message": "There is not enough disk space on the node",
        "errorDetails": [{"name": "Message", "value": "The VM disk is full. Delete job, tasks, or file on the node to free up spaces and then restart the node."}]
    }]);
    let nodes: Vec<serde_json::Value> = (0..200)
        .map(|i| {
            unusable_node(
                "etl",
                &format!("tvm-{}_{i}-20261204t{i:06}z", 1000 + i),
                disk_full.clone(),
            )
        })
        .collect();
    let list = serde_json::json!({"value": nodes}).to_string();
    let found = diagnoses(&list);
    assert_eq!(found.len(), 200);
    let groups: HashSet<&str> = found.iter().map(|d| d.fingerprint.as_str()).collect();
    assert_eq!(groups.len(), 1, "200 DiskFull nodes, one group");
    let node_ids: HashSet<&str> = found
        .iter()
        .map(|d| d.subject.node_id.as_deref().unwrap())
        .collect();
    assert_eq!(node_ids.len(), 200, "each node is still its own subject");

    let elsewhere = diagnoses(&unusable_node("other-pool", "tvm-9", disk_full).to_string());
    assert_eq!(elsewhere[0].subject.pool_id.as_deref(), Some("other-pool"));
    assert_eq!(
        elsewhere[0].fingerprint, found[0].fingerprint,
        "same cause across pools"
    );

    let lost = diagnoses(&unusable_node("etl", "tvm-1", serde_json::json!([])).to_string());
    let lost_too = diagnoses(&unusable_node("etl2", "tvm-2", serde_json::Value::Null).to_string());
    assert_ne!(lost[0].fingerprint, found[0].fingerprint, "another cause");
    assert_eq!(lost[0].fingerprint, lost_too[0].fingerprint);
    let package = diagnoses(
        &unusable_node(
            "etl",
            "tvm-3",
            serde_json::json!([{"code": "ApplicationPackageError", "message": "One or more application packages specified for the pool are invalid"}]),
        )
        .to_string(),
    );
    assert_ne!(package[0].fingerprint, found[0].fingerprint);
}

#[test]
fn the_same_resize_cause_groups_across_pools_and_another_cause_does_not() {
    let pool = |id: &str, code: &str, reason: &str| {
        serde_json::json!({
            "id": id, "url": format!("https://acct.westeurope.batch.azure.com/pools/{id}"),
            "allocationState": "steady", "currentDedicatedNodes": 0, "targetDedicatedNodes": 7,
            "resizeErrors": [{"code": code, "message": "Desired number of dedicated nodes could not be allocated",
                "values": [{"name": "Reason", "value": reason}]}]
        })
        .to_string()
    };
    let capacity = "Deployment allocation failed due to insufficient capacity for the requested VM size in the region.";
    let a = &diagnoses(&pool("pool-a", "AllocationFailed", capacity))[0];
    let b = &diagnoses(&pool("pool-b", "allocationfailed", capacity))[0];
    let c = &diagnoses(&pool(
        "pool-a",
        "AllocationFailed",
        "Allocation failed as subnet has delegation to external resources.",
    ))[0];
    assert_eq!(
        a.fingerprint, b.fingerprint,
        "code casing and pool do not split"
    );
    assert_ne!(
        a.fingerprint, c.fingerprint,
        "another relayed reason is another group"
    );
}

#[test]
fn allocation_timed_out_in_either_casing_and_policy_codes() {
    for code in ["AllocationTimedout", "AllocationTimedOut"] {
        let json = format!(
            r#"{{"id": "p", "allocationState": "steady", "resizeErrors": [{{"code": "{code}", "message": "m"}}]}}"#
        );
        let d = &diagnoses(&json)[0];
        assert_eq!(d.class.as_str(), "pool.resize_failed");
        assert!(d.cause.contains("resizeTimeout"), "{code}: {}", d.cause);
    }
    let d = &diagnoses(
        r#"{"id": "p", "resizeErrors": [{"code": "OperationsOnNetworkSecurityGroupRestrictedByPolicy", "message": "denied"}]}"#,
    )[0];
    assert!(d.cause.contains("Azure Policy"), "{}", d.cause);
    assert!(d.hints[0].contains("policy assignment"), "{:?}", d.hints);
}

#[test]
fn a_healthy_pool_and_a_healthy_node_give_no_diagnosis() {
    assert!(diagnoses(r#"{"id": "p", "url": "https://a.b.batch.azure.com/pools/p", "state": "active", "allocationState": "steady", "resizeErrors": []}"#).is_empty());
    assert!(
        diagnoses(
            r#"{"id": "n", "state": "idle", "startTaskInfo": {"result": "success", "exitCode": 0}}"#
        )
        .is_empty()
    );
    // Deleting, but without the time it takes it is not known to be stuck.
    assert!(diagnoses(r#"{"id": "p", "url": "https://a.b.batch.azure.com/pools/p", "state": "deleting", "stateTransitionTime": "2020-01-01T00:00:00Z"}"#).is_empty());
}

#[test]
fn a_delete_is_stuck_only_past_the_threshold() {
    let pool: BatchPool = serde_json::from_str(
        r#"{"id": "p", "state": "deleting", "stateTransitionTime": "2026-12-05T01:00:00Z"}"#,
    )
    .unwrap();
    let at = |now: &str, after: Option<u64>| {
        diagnose_pool(
            &pool,
            &Evidence {
                now: Timestamp::parse(now),
                delete_stuck_after: after.map(Duration::from_secs),
                ..Evidence::default()
            },
        )
    };
    assert!(
        at("2026-12-05T01:59:00Z", None).is_empty(),
        "the default is an hour"
    );
    let stuck = at("2026-12-05T02:01:00Z", None);
    assert_eq!(stuck[0].class.as_str(), "pool.delete_stuck");
    assert_eq!(stuck[0].severity.as_str(), "warning");
    assert!(stuck[0].summary.contains("1h1m"), "{}", stuck[0].summary);
    assert!(
        at("2026-12-05T01:20:00Z", Some(600)).len() == 1,
        "a shorter threshold"
    );
    assert!(
        at("2026-12-05T00:00:00Z", None).is_empty(),
        "a clock behind the pool"
    );
}

#[test]
fn critical_only_when_the_pool_is_empty_and_jobs_wait() {
    let pool = |current: i32| -> BatchPool {
        serde_json::from_value(serde_json::json!({
            "id": "p", "currentDedicatedNodes": current, "targetDedicatedNodes": 4,
            "resizeErrors": [{"code": "AccountCoreQuotaReached", "message": "quota"}]
        }))
        .unwrap()
    };
    let severity = |current: i32, jobs: Option<u32>| {
        diagnose_pool(
            &pool(current),
            &Evidence {
                pool_active_jobs: jobs,
                ..Evidence::default()
            },
        )[0]
        .severity
        .as_str()
    };
    assert_eq!(severity(0, Some(3)), "critical");
    assert_eq!(severity(0, Some(0)), "error");
    assert_eq!(severity(0, None), "error", "unknown is not critical");
    assert_eq!(severity(2, Some(3)), "error", "nodes are running");
}

#[test]
fn a_pool_with_several_problems_gives_each() {
    let pool: BatchPool = serde_json::from_value(serde_json::json!({
        "id": "p", "state": "deleting", "stateTransitionTime": "2026-12-01T00:00:00Z",
        "resizeErrors": [{"code": "RemoveNodesFailed", "message": "m"}],
        "enableAutoScale": true,
        "autoScaleRun": {"error": {"code": "AutoScalingFormulaEvaluationError", "message": "e"}}
    }))
    .unwrap();
    let found = diagnose_pool(
        &pool,
        &Evidence {
            now: Timestamp::parse("2026-12-05T00:00:00Z"),
            ..Evidence::default()
        },
    );
    let classes: Vec<&str> = found.iter().map(|d| d.class.as_str()).collect();
    assert_eq!(
        classes,
        [
            "pool.delete_stuck",
            "pool.resize_failed",
            "pool.autoscale_failed"
        ]
    );
}

/// Hostile pool and node errors: huge `values`, provider JSON nested past any parser's limit,
/// secrets, control characters and markup. Nothing panics, everything is bounded, secrets are
/// gone; control characters and markup stay data, made inert by whoever renders them.
#[test]
fn hostile_errors_are_bounded_redacted_and_never_panic() {
    let huge = "A".repeat(1 << 20);
    let long = "B".repeat(4 << 10);
    // 10,000 values, the first few of a mebibyte each.
    let values: Vec<serde_json::Value> = (0..10_000)
        .map(|i| {
            let value = if i < 4 { &huge } else { &long };
            serde_json::json!({"name": format!("n{i}"), "value": value})
        })
        .collect();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_objects = format!(
        "{}\"code\": \"Deep\"{}",
        "{\"error\": ".repeat(50_000),
        "}".repeat(50_000)
    );
    let markup = "<script>alert(1)</script>\u{1b}[2J\u{202e}\r\nforged line https://x.blob.core.windows.net/c?sv=2020&sig=S3cr3tSig";
    for provider in [deep.as_str(), deep_objects.as_str(), huge.as_str(), markup] {
        let mut all_values = values.clone();
        all_values.push(serde_json::json!({"name": "Provider Error Json", "value": provider}));
        all_values.push(serde_json::json!({"name": "Reason", "value": markup}));
        let pool = serde_json::json!({
            "id": "p", "url": "https://acct.westeurope.batch.azure.com/pools/p",
            "resizeErrors": [{"code": "AllocationFailed", "message": format!("{markup}{huge}"), "values": all_values}],
            "autoScaleRun": {"error": {"code": markup, "message": markup, "values": [{"name": "Message", "value": huge.clone()}]}}
        });
        let found = diagnose_pool(&serde_json::from_value(pool).unwrap(), &Evidence::default());
        assert_eq!(found.len(), 2);
        for d in &found {
            let json = serde_json::to_string(d).unwrap();
            assert!(json.len() < 64 << 10, "bounded: {} bytes", json.len());
            assert!(!json.contains("S3cr3tSig"), "redacted");
            assert!(d.failure.as_ref().unwrap().details.len() <= 20);
            assert!(d.cause.len() < 8 << 10, "{}", d.cause.len());
        }
    }
    let node = serde_json::json!({
        "id": "n\u{1b}[31m<b>", "state": "unusable",
        "errors": (0..1000).map(|i| {
            let text = if i < 2 { &huge } else { &long };
            serde_json::json!({"code": markup, "message": text,
                "errorDetails": [{"name": markup, "value": text}]})
        }).collect::<Vec<_>>()
    });
    let d = diagnose_node(&serde_json::from_value(node).unwrap(), &Evidence::default()).unwrap();
    let json = serde_json::to_string(&d).unwrap();
    assert!(json.len() < 64 << 10, "bounded: {} bytes", json.len());
    assert!(!json.contains("S3cr3tSig"));
    assert!(d.hints.len() <= 8, "{}", d.hints.len());
}
