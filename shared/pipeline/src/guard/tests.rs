//! The shared mechanism on its own: budgets, the once-marker's lifecycle, the dry-run marker,
//! and the JSON and keys existing deployments' stores hold.

use std::sync::Arc;

use artifact_store::{ArtifactStore, LocalDirStore, ObjectKey};
use diagnosis::Subject;
use serde::Serialize;
use test_kit::flaky_store::{FlakyStore, StoreOp};
use time::OffsetDateTime;
use time::macros::datetime;

use super::{ActionGuard, Budget, GuardError, Spend};
use crate::actions::JobActions;
use crate::audit::{AuditDecision, AuditRecord};
use crate::node_actions::NodeActions;

const T0: OffsetDateTime = datetime!(2026-11-20 10:00:00 UTC);
const ACCOUNT: &str = "devbatch1";

fn local_store() -> (tempfile::TempDir, Arc<dyn ArtifactStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDirStore::new(dir.path()).unwrap());
    (dir, store)
}

fn budget(key: &str, max: u32) -> Budget {
    Budget {
        key: ObjectKey::new(key).unwrap(),
        max,
    }
}

fn record(now: OffsetDateTime) -> AuditRecord {
    let subject = Subject {
        account: Some(ACCOUNT.into()),
        ..Subject::default()
    };
    let mut record = AuditRecord::pending(
        now,
        &subject,
        "oom",
        "terminate".into(),
        "why".into(),
        false,
    );
    record.job_id = "etl".into();
    record
}

/// The stored counter: `(count, audit ids)`, `None` when there is none.
async fn stored(store: &dyn ArtifactStore, key: &str) -> Option<(u32, Vec<String>)> {
    let v = store.get(&ObjectKey::new(key).unwrap()).await.unwrap()?;
    let json: serde_json::Value = serde_json::from_slice(&v.bytes).unwrap();
    let ids = json["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    Some((json["count"].as_u64().unwrap() as u32, ids))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Job<'a> {
    account: &'a str,
    job_id: &'a str,
}

#[tokio::test]
async fn a_used_up_budget_is_exhausted_and_keeps_its_count() {
    let (_dir, store) = local_store();
    let guard = ActionGuard::new(store.clone());
    let hour = [budget("actions/budget/a/h.json", 2)];
    assert_eq!(guard.spend(&hour, "id-1").await.unwrap(), Spend::Spent);
    assert_eq!(guard.spend(&hour, "id-2").await.unwrap(), Spend::Spent);
    assert_eq!(
        guard.spend(&hour, "id-3").await.unwrap(),
        Spend::Exhausted(0)
    );
    assert_eq!(
        stored(store.as_ref(), "actions/budget/a/h.json").await,
        Some((2, vec!["id-1".into(), "id-2".into()]))
    );
    // The stored JSON is the one deployments already hold.
    let v = store
        .get(&ObjectKey::new("actions/budget/a/h.json").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&v.bytes).unwrap(),
        r#"{"count":2,"max":2,"actions":["id-1","id-2"]}"#
    );
}

#[tokio::test]
async fn a_zero_budget_allows_nothing_and_writes_nothing() {
    let (_dir, store) = local_store();
    let guard = ActionGuard::new(store.clone());
    let none = [budget("b/zero.json", 0)];
    assert_eq!(guard.spend(&none, "id").await.unwrap(), Spend::Exhausted(0));
    assert_eq!(stored(store.as_ref(), "b/zero.json").await, None);
}

#[tokio::test]
async fn several_budgets_are_spent_all_or_nothing() {
    let (_dir, store) = local_store();
    let guard = ActionGuard::new(store.clone());
    let both = [budget("b/total.json", 5), budget("b/pool.json", 1)];
    assert_eq!(guard.spend(&both, "first").await.unwrap(), Spend::Spent);
    // The pool's budget is used up: the unit of the total taken first is given back.
    assert_eq!(
        guard.spend(&both, "second").await.unwrap(),
        Spend::Exhausted(1)
    );
    assert_eq!(
        stored(store.as_ref(), "b/total.json").await,
        Some((1, vec!["first".into()]))
    );
    // Giving back the first decision's units frees both; giving back twice changes nothing.
    guard.give_back_budgets(&both, "first").await.unwrap();
    guard.give_back_budgets(&both, "first").await.unwrap();
    assert_eq!(
        stored(store.as_ref(), "b/total.json").await,
        Some((0, vec![]))
    );
    assert_eq!(
        stored(store.as_ref(), "b/pool.json").await,
        Some((0, vec![]))
    );
    assert_eq!(guard.spend(&both, "third").await.unwrap(), Spend::Spent);
}

#[tokio::test]
async fn a_store_failure_on_the_second_budget_gives_the_first_back() {
    let (_dir, inner) = local_store();
    let store = Arc::new(FlakyStore::new(inner));
    let guard = ActionGuard::new(store.clone());
    let both = [budget("b/total.json", 5), budget("b/pool.json", 5)];
    store.fail_once(StoreOp::Put, "b/pool.json");
    let error = guard.spend(&both, "id").await.unwrap_err();
    assert!(matches!(error, GuardError::Store(_)), "{error}");
    assert!(!store.still_armed());
    assert_eq!(
        stored(store.as_ref(), "b/total.json").await,
        Some((0, vec![]))
    );
}

#[tokio::test]
async fn an_unreadable_budget_counts_as_used_up() {
    let (_dir, store) = local_store();
    let key = ObjectKey::new("b/garbled.json").unwrap();
    store
        .put(
            &key,
            bytes::Bytes::from_static(b"{not json"),
            artifact_store::Condition::IfAbsent,
        )
        .await
        .unwrap();
    let guard = ActionGuard::new(store.clone());
    let garbled = [budget("b/garbled.json", 10)];
    assert_eq!(
        guard.spend(&garbled, "id").await.unwrap(),
        Spend::Exhausted(0)
    );
    // Giving back finds nothing of its own in it, and leaves it for a person to read.
    guard.give_back_budgets(&garbled, "id").await.unwrap();
    let v = store.get(&key).await.unwrap().unwrap();
    assert_eq!(&v.bytes[..], b"{not json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_store_spend_exactly_the_budget() {
    let (_dir, store) = local_store();
    // Two instances: their own guard (and store handle) each, one store behind.
    let first = ActionGuard::new(store.clone());
    let second = ActionGuard::new(store.clone());
    let mut spends = Vec::new();
    for i in 0..12 {
        let guard = if i % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        spends.push(tokio::spawn(async move {
            let hour = [budget("actions/budget/a/h.json", 5)];
            guard.spend(&hour, &format!("id-{i}")).await
        }));
    }
    let mut spent = Vec::new();
    for (i, spend) in spends.into_iter().enumerate() {
        if spend.await.unwrap().unwrap() == Spend::Spent {
            spent.push(format!("id-{i}"));
        }
    }
    assert_eq!(spent.len(), 5, "{spent:?}");
    let (count, mut ids) = stored(store.as_ref(), "actions/budget/a/h.json")
        .await
        .unwrap();
    ids.sort();
    spent.sort();
    assert_eq!((count, ids), (5, spent));
}

#[tokio::test]
async fn the_once_marker_is_given_back_after_a_failed_call() {
    let (_dir, store) = local_store();
    let guard = ActionGuard::new(store.clone());
    let once = ObjectKey::new("actions/once/x.json").unwrap();
    let subject = Job {
        account: ACCOUNT,
        job_id: "etl",
    };
    let mut failed = record(T0);
    let claim = guard.take_once(&once, &subject, &failed, T0).await.unwrap();
    // While it is held, another decision cannot take it and sees it held.
    let other = record(T0);
    assert!(
        guard
            .take_once(&once, &subject, &other, T0)
            .await
            .unwrap()
            .is_none()
    );
    assert!(guard.marker_held(&once).await.unwrap());
    // Batch refused the call: the decision is audited, and the marker is given back.
    failed.decision = AuditDecision::Failed;
    failed.reason = "Batch refused".into();
    let audited = guard
        .settle::<GuardError>(claim, Ok(()), failed.clone(), T0)
        .await
        .unwrap();
    assert_eq!(audited, failed);
    assert!(store.head(&once).await.unwrap().is_none());
    assert_eq!(guard.audit_log().all().await.unwrap(), vec![failed]);
    // So a later decision takes it again, and keeps it when the action takes effect.
    let mut applied = record(T0);
    let claim = guard
        .take_once(&once, &subject, &applied, T0)
        .await
        .unwrap();
    assert!(claim.is_some());
    applied.decision = AuditDecision::Applied;
    guard
        .settle::<GuardError>(claim, Ok(()), applied, T0)
        .await
        .unwrap();
    assert!(guard.marker_held(&once).await.unwrap());
}

#[tokio::test]
async fn a_store_failure_gives_the_marker_back_and_is_audited_as_failed() {
    let (_dir, store) = local_store();
    let guard = ActionGuard::new(store.clone());
    let once = ObjectKey::new("actions/once/y.json").unwrap();
    let subject = Job {
        account: ACCOUNT,
        job_id: "etl",
    };
    let decision = record(T0);
    let claim = guard
        .take_once(&once, &subject, &decision, T0)
        .await
        .unwrap();
    let failure = GuardError::BudgetContended { key: "k".into() };
    let error = guard
        .settle(claim, Err(failure), decision, T0)
        .await
        .unwrap_err();
    assert!(matches!(error, GuardError::BudgetContended { .. }));
    assert!(store.head(&once).await.unwrap().is_none());
    let records = guard.audit_log().all().await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].decision, AuditDecision::Failed);
    assert!(records[0].reason.contains("given back"), "{:?}", records[0]);
}

#[tokio::test]
async fn a_marker_that_could_not_be_given_back_is_removed_by_the_next_decision() {
    let (_dir, inner) = local_store();
    let store = Arc::new(FlakyStore::new(inner));
    let guard = ActionGuard::new(store.clone());
    let once = ObjectKey::new("node-actions/once/z.json").unwrap();
    let subject = serde_json::json!({"account": ACCOUNT, "nodeId": "n-1"});
    let mut skipped = record(T0);
    let claim = guard
        .take_once(&once, &subject, &skipped, T0)
        .await
        .unwrap();
    skipped.skip("budget exhausted".into());
    store.fail_once(StoreOp::Delete, "node-actions/once/");
    guard
        .settle::<GuardError>(claim, Ok(()), skipped, T0)
        .await
        .unwrap_err();
    assert!(store.head(&once).await.unwrap().is_some(), "still there");
    // Its decision is audited as not having taken effect: the marker is not held.
    assert!(!guard.marker_held(&once).await.unwrap());
    assert!(store.head(&once).await.unwrap().is_none());
}

#[tokio::test]
async fn a_marker_without_an_audit_key_is_held() {
    let (_dir, store) = local_store();
    let once = ObjectKey::new("node-actions/once/old.json").unwrap();
    store
        .put(
            &once,
            bytes::Bytes::from_static(br#"{"account":"a","auditId":"x"}"#),
            artifact_store::Condition::IfAbsent,
        )
        .await
        .unwrap();
    let guard = ActionGuard::new(store.clone());
    assert!(guard.marker_held(&once).await.unwrap());
    assert!(
        !guard
            .marker_held(&ObjectKey::new("none.json").unwrap())
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_dry_run_is_audited_once_per_marker() {
    let (_dir, store) = local_store();
    let guard = ActionGuard::new(store.clone());
    let once = ObjectKey::new("node-actions/once/d.json").unwrap();
    let mut first = record(T0);
    first.decision = AuditDecision::DryRun;
    let mut again = record(T0 + time::Duration::minutes(5));
    again.decision = AuditDecision::DryRun;
    assert!(guard.audit_dry_run_once(&once, &first, T0).await.unwrap());
    assert!(!guard.audit_dry_run_once(&once, &again, T0).await.unwrap());
    assert_eq!(guard.audit_log().all().await.unwrap(), vec![first.clone()]);
    // Its own marker: the once-marker is still free for going live.
    assert!(!guard.marker_held(&once).await.unwrap());
    let dry = ObjectKey::new("node-actions/dry-run/d.json").unwrap();
    let v = store.get(&dry).await.unwrap().unwrap();
    assert_eq!(&v.bytes[..], first.id.as_bytes());
}

#[tokio::test]
async fn the_once_marker_keeps_its_json() {
    let (_dir, store) = local_store();
    let guard = ActionGuard::new(store.clone());
    let once = ObjectKey::new("actions/once/j.json").unwrap();
    let mut decision = record(T0);
    decision.id = "20261120T100000Z-abc".into();
    guard
        .take_once(&once, &subject_fields(), &decision, T0)
        .await
        .unwrap()
        .unwrap();
    let v = store.get(&once).await.unwrap().unwrap();
    assert_eq!(
        std::str::from_utf8(&v.bytes).unwrap(),
        r#"{"account":"devbatch1","jobId":"etl","auditId":"20261120T100000Z-abc","auditKey":"audit/2026-11-20/20261120T100000Z-abc.json"}"#
    );
}

fn subject_fields() -> Job<'static> {
    Job {
        account: ACCOUNT,
        job_id: "etl",
    }
}

#[test]
fn a_pending_record_is_the_record_both_kinds_of_action_built_before() {
    let subject = Subject {
        account: Some(ACCOUNT.into()),
        pool_id: Some("workers".into()),
        node_id: Some("n-1".into()),
        ..Subject::default()
    };
    let mut node = AuditRecord::pending(
        T0,
        &subject,
        "drain",
        "node.remove".into(),
        "unusable".into(),
        true,
    );
    node.pool_id = subject.pool_id.clone();
    node.node_id = subject.node_id.clone();
    node.id = "20261120T100000Z-abc".into();
    assert_eq!(
        serde_json::to_string(&node).unwrap(),
        concat!(
            r#"{"id":"20261120T100000Z-abc","time":"2026-11-20T10:00:00Z","rule":"drain","#,
            r#""account":"devbatch1","jobId":"","action":"node.remove","disableTasks":null,"#,
            r#""decision":"skipped","reason":"","actionReason":"unusable","#,
            r#""terminateReason":null,"etag":null,"outcome":null,"threshold":"no threshold","#,
            r#""dryRun":true,"poolId":"workers","nodeId":"n-1"}"#
        )
    );
    // No account named: `-`, as before.
    let nameless = AuditRecord::pending(T0, &Subject::default(), "r", "a".into(), "".into(), false);
    assert_eq!(nameless.account, "-");
}

/// The keys existing stores hold, spelled out (a digest is the first 32 hex digits of SHA-256).
#[test]
fn the_store_keys_stay_as_they_were() {
    let key = |k: Result<ObjectKey, artifact_store::StoreError>| k.unwrap().as_str().to_owned();
    assert_eq!(
        key(JobActions::once_key(ACCOUNT, "etl", "terminate")),
        "actions/once/3f86d8d47b2999225856396b1a061cb0.json"
    );
    assert_eq!(
        key(JobActions::budget_key(ACCOUNT, T0)),
        "actions/budget/devbatch1/2026-11-20T10.json"
    );
    assert_eq!(
        key(NodeActions::once_key(
            ACCOUNT,
            "workers",
            "n-1",
            "inc-1",
            "node.remove"
        )),
        "node-actions/once/d1af26931102dfedddf79ec79791d082.json"
    );
    assert_eq!(
        key(NodeActions::budget_key(T0, ACCOUNT, None)),
        "node-actions/budget/devbatch1/2026-11-20T10.json"
    );
    assert_eq!(
        key(NodeActions::budget_key(T0, ACCOUNT, Some("workers"))),
        "node-actions/budget/2026-11-20T10/d755131ab3075228bbd50a8c24cf2ef0.json"
    );
}
