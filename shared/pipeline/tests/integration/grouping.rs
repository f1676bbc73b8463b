//! Alert groups shared by several instances through one store: every alert counted, no
//! notification handed out twice.

use std::sync::Arc;
use std::time::Duration;

use artifact_store::{ArtifactStore, LocalDirStore};
use diagnosis::payload::read_slice;
use diagnosis::policy::{Plan, PlanContext, Policy, plan};
use diagnosis::{Diagnosis, Evidence, diagnose_item};
use pipeline::grouping::{AlertToSend, GroupStore};
use time::OffsetDateTime;
use time::macros::datetime;

const T0: OffsetDateTime = datetime!(2026-11-20 10:00:00 UTC);

pub(crate) fn oom(job: &str, task: &str, fingerprint: &str) -> Diagnosis {
    let json = include_bytes!("../../../diagnosis/test_data/exit-137-oom.json");
    let mut out = Vec::new();
    read_slice(json, &mut |item| {
        out.extend(diagnose_item(&item, &Evidence::default()))
    })
    .unwrap();
    let mut d = out.remove(0);
    d.subject.job_id = Some(job.to_owned());
    d.subject.task_id = Some(task.to_owned());
    d.fingerprint = fingerprint.to_owned();
    d
}

fn policy(group_wait: &str) -> Policy {
    Policy::parse(&format!(
        r#"
[grouping]
group_by = ["account", "job", "class"]
group_wait = "{group_wait}"
group_interval = "5m"
repeat_interval = "4h"

[[receivers]]
name = "ops"
kind = "webhook"
url_env = "OPS_URL"

[[receivers]]
name = "ml"
kind = "email"
to = ["ml@example.com"]

[[rules]]
name = "oom"
match = {{ exit_meaning = "oom_or_sigkill" }}
receivers = ["ops", "ml"]
"#
    ))
    .unwrap()
}

fn planned(d: &Diagnosis, p: &Policy) -> Plan {
    plan(d, p, T0, &PlanContext::default())
}

/// Two handles on one local directory: two function instances sharing a store.
fn two_local_stores() -> (tempfile::TempDir, GroupStore, GroupStore) {
    let dir = tempfile::tempdir().unwrap();
    let a: Arc<dyn ArtifactStore> = Arc::new(LocalDirStore::new(dir.path()).unwrap());
    let b: Arc<dyn ArtifactStore> = Arc::new(LocalDirStore::new(dir.path()).unwrap());
    (dir, GroupStore::new(a), GroupStore::new(b))
}

/// Both instances record every diagnosis (a duplicated delivery), concurrently; returns all sends.
async fn record_everywhere(
    a: &GroupStore,
    b: &GroupStore,
    diagnoses: &[Diagnosis],
    policy: &Policy,
    now: OffsetDateTime,
) -> Vec<AlertToSend> {
    let run = |store: GroupStore, reverse: bool| {
        let mut diagnoses = diagnoses.to_vec();
        if reverse {
            diagnoses.reverse();
        }
        let policy = policy.clone();
        tokio::spawn(async move {
            let mut sends = Vec::new();
            for d in &diagnoses {
                let outcome = store.record(d, &planned(d, &policy), now).await.unwrap();
                sends.extend(outcome.send);
            }
            sends
        })
    };
    let (x, y) = tokio::join!(run(a.clone(), false), run(b.clone(), true));
    let mut sends = x.unwrap();
    sends.extend(y.unwrap());
    sends
}

/// Two handles on one Azurite container: two function instances sharing a Blob store.
async fn two_azurite_stores(
    azurite: &artifact_store::testing::Azurite,
) -> (GroupStore, GroupStore) {
    let a: Arc<dyn ArtifactStore> = Arc::new(azurite.store("triage").await);
    let b: Arc<dyn ArtifactStore> = Arc::new(azurite.store("triage").await);
    (GroupStore::new(a), GroupStore::new(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_count_every_alert_and_send_each_once() {
    let (_dir, a, b) = two_local_stores();
    count_every_alert_and_send_each_once(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_azurite_count_every_alert_and_send_each_once() {
    let azurite = artifact_store::testing::Azurite::start();
    let (a, b) = two_azurite_stores(&azurite).await;
    count_every_alert_and_send_each_once(&a, &b).await;
}

async fn count_every_alert_and_send_each_once(a: &GroupStore, b: &GroupStore) {
    let p = policy("30s");
    let diagnoses: Vec<Diagnosis> = (0..150)
        .map(|i| oom("render", &format!("t{i}"), "same"))
        .collect();
    let sends = record_everywhere(a, b, &diagnoses, &p, T0).await;
    assert!(sends.is_empty(), "the first alert waits group_wait");

    // Both sweeps run at the deadline: one notification per receiver, in total.
    let (x, y) = tokio::join!(
        a.due(T0 + Duration::from_secs(30)),
        b.due(T0 + Duration::from_secs(30))
    );
    let mut sends = x.unwrap();
    sends.extend(y.unwrap());
    let mut receivers: Vec<&str> = sends.iter().map(|s| s.receiver.as_str()).collect();
    receivers.sort_unstable();
    assert_eq!(receivers, ["ml", "ops"], "{sends:#?}");
    for send in &sends {
        assert_eq!(
            send.notification.count, 150,
            "duplicates are not counted twice"
        );
        assert_eq!(send.notification.sequence, 1);
        assert_eq!(
            send.notification.examples.len(),
            diagnosis::policy::MAX_EXAMPLES
        );
        assert_eq!(send.rule, "oom");
    }
    // A later sweep has nothing to send.
    assert!(
        a.due(T0 + Duration::from_secs(3600))
            .await
            .unwrap()
            .is_empty()
    );

    // A new cause in the same job: once more per receiver, after group_interval.
    let new_cause = vec![oom("render", "t999", "different")];
    let later = T0 + Duration::from_secs(30 + 300);
    let sends = record_everywhere(a, b, &new_cause, &p, later).await;
    assert_eq!(sends.len(), 2, "{sends:#?}");
    assert!(
        sends
            .iter()
            .all(|s| s.notification.new_fingerprints == ["different"])
    );
    assert!(sends.iter().all(|s| s.notification.count == 151));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_groups_send_once_across_instances() {
    let (_dir, a, b) = two_local_stores();
    immediate_groups_send_once(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_groups_send_once_across_instances_on_azurite() {
    let azurite = artifact_store::testing::Azurite::start();
    let (a, b) = two_azurite_stores(&azurite).await;
    immediate_groups_send_once(&a, &b).await;
}

async fn immediate_groups_send_once(a: &GroupStore, b: &GroupStore) {
    let p = policy("0s");
    let diagnoses: Vec<Diagnosis> = (0..100)
        .map(|i| oom("etl", &format!("t{i}"), "same"))
        .collect();
    let sends = record_everywhere(a, b, &diagnoses, &p, T0).await;
    // One per receiver, whoever recorded first; the other 99 wait for repeat_interval.
    assert_eq!(sends.len(), 2, "{sends:#?}");
    let mut ids: Vec<&str> = sends.iter().map(|s| s.alert_id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 2);
    let key = &planned(&diagnoses[0], &p).receivers[0].group_key;
    let state = a.state(key).await.unwrap().unwrap();
    assert_eq!(state.count, 100);
    assert_eq!(state.sends, 1);
    assert_eq!(state.flush_at, Some(T0 + Duration::from_secs(4 * 3600)));
    // The repeat goes out once, from whichever sweep gets there.
    let at = T0 + Duration::from_secs(4 * 3600);
    let (x, y) = tokio::join!(a.due(at), b.due(at));
    let repeats: Vec<AlertToSend> = x.unwrap().into_iter().chain(y.unwrap()).collect();
    assert_eq!(repeats.len(), 2);
    assert!(
        repeats
            .iter()
            .all(|r| r.notification.is_repeat && r.notification.new_count == 99)
    );
}

#[tokio::test]
async fn a_notification_id_is_claimed_once_even_if_the_group_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ArtifactStore> = Arc::new(LocalDirStore::new(dir.path()).unwrap());
    let groups = GroupStore::new(store.clone());
    let p = policy("0s");
    let d = oom("etl", "t1", "f");
    let first = groups.record(&d, &planned(&d, &p), T0).await.unwrap();
    assert_eq!(first.send.len(), 2);
    // Someone deletes the group objects; the same notification ids come round again and are
    // refused by their markers.
    for info in store.list("groups/").await.unwrap() {
        store
            .delete(&info.key, artifact_store::Condition::Always)
            .await
            .unwrap();
    }
    let again = groups.record(&d, &planned(&d, &p), T0).await.unwrap();
    assert!(again.send.is_empty(), "{again:#?}");
    assert_eq!(again.suppressed.len(), 2);
}

#[tokio::test]
async fn silenced_diagnoses_join_no_group() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ArtifactStore> = Arc::new(LocalDirStore::new(dir.path()).unwrap());
    let groups = GroupStore::new(store.clone());
    let p = Policy::parse(
        r#"
[[receivers]]
name = "ops"
kind = "webhook"
url_env = "OPS_URL"

[[rules]]
name = "all"
receivers = ["ops"]

[[silences]]
match = { job = "etl" }
expires = "2027-01-01T00:00:00Z"
comment = "carol: migrating etl"
"#,
    )
    .unwrap();
    let d = oom("etl", "t1", "f");
    let outcome = groups.record(&d, &planned(&d, &p), T0).await.unwrap();
    assert_eq!(outcome, Default::default());
    assert!(store.list("groups/").await.unwrap().is_empty());
}
