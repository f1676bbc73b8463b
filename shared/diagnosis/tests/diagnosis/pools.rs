//! Pools and nodes: every REST and event shape reads into pool and node items, one list element at
//! a time, whatever the casing and the API version.

use batch_triage_diagnosis::payload::read_slice;
use batch_triage_diagnosis::wire::{NodeState, PoolEventKind, PoolState, TaskResult};
use batch_triage_diagnosis::{Item, PayloadKind};

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
        error.value("message"),
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
