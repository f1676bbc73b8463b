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
    // One per receiver, whoever recorded first; the other 99 wait: 1 → 100 is growth that
    // counts (renotify_on_growth), so for group_interval, not repeat_interval.
    assert_eq!(sends.len(), 2, "{sends:#?}");
    let mut ids: Vec<&str> = sends.iter().map(|s| s.alert_id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 2);
    let key = &planned(&diagnoses[0], &p).receivers[0].group_key;
    let state = a.state(key).await.unwrap().unwrap();
    assert_eq!(state.count, 100);
    assert_eq!(state.sends, 1);
    assert_eq!(state.flush_at, Some(T0 + Duration::from_secs(300)));
    // The growth goes out once per receiver, from whichever sweep gets there.
    let at = T0 + Duration::from_secs(300);
    let (x, y) = tokio::join!(a.due(at), b.due(at));
    let grown: Vec<AlertToSend> = x.unwrap().into_iter().chain(y.unwrap()).collect();
    assert_eq!(grown.len(), 2);
    assert!(grown.iter().all(|r| {
        let n = &r.notification;
        !n.is_repeat && n.new_count == 99 && (n.count, n.previous_count) == (100, Some(1))
    }));
    // Nothing grew since: nothing more, from either.
    let later = T0 + Duration::from_secs(5 * 3600);
    let (x, y) = tokio::join!(a.due(later), b.due(later));
    assert!(x.unwrap().is_empty() && y.unwrap().is_empty());
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

/// A local store that counts group reads and writes and refuses writes to chosen keys.
#[derive(Debug)]
struct WatchedStore {
    inner: LocalDirStore,
    group_puts: std::sync::atomic::AtomicUsize,
    group_gets: std::sync::atomic::AtomicUsize,
    refuse: Vec<String>,
}

#[async_trait::async_trait]
impl ArtifactStore for WatchedStore {
    async fn get(
        &self,
        key: &artifact_store::ObjectKey,
    ) -> Result<Option<artifact_store::Versioned>, artifact_store::StoreError> {
        if key.as_str().starts_with("groups/") {
            self.group_gets
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.get(key).await
    }
    async fn head(
        &self,
        key: &artifact_store::ObjectKey,
    ) -> Result<Option<artifact_store::ObjectInfo>, artifact_store::StoreError> {
        self.inner.head(key).await
    }
    async fn put(
        &self,
        key: &artifact_store::ObjectKey,
        body: bytes::Bytes,
        condition: artifact_store::Condition,
    ) -> Result<artifact_store::ETag, artifact_store::StoreError> {
        if key.as_str().starts_with("groups/") {
            self.group_puts
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        if self.refuse.iter().any(|k| k == key.as_str()) {
            return Err(artifact_store::StoreError::Transient {
                message: "injected: the store is unavailable".into(),
            });
        }
        self.inner.put(key, body, condition).await
    }
    async fn put_stream(
        &self,
        key: &artifact_store::ObjectKey,
        body: artifact_store::ByteStream,
    ) -> Result<artifact_store::ObjectInfo, artifact_store::StoreError> {
        self.inner.put_stream(key, body).await
    }
    async fn list_page(
        &self,
        prefix: &str,
        from: Option<&artifact_store::ListCursor>,
        max: usize,
    ) -> Result<artifact_store::ListPage, artifact_store::StoreError> {
        self.inner.list_page(prefix, from, max).await
    }
    async fn delete(
        &self,
        key: &artifact_store::ObjectKey,
        condition: artifact_store::Condition,
    ) -> Result<(), artifact_store::StoreError> {
        self.inner.delete(key, condition).await
    }
    fn link(&self, key: &artifact_store::ObjectKey) -> Option<String> {
        self.inner.link(key)
    }
}

fn watched(dir: &tempfile::TempDir, refuse: Vec<String>) -> Arc<WatchedStore> {
    Arc::new(WatchedStore {
        inner: LocalDirStore::new(dir.path()).unwrap(),
        group_puts: Default::default(),
        group_gets: Default::default(),
        refuse,
    })
}

#[tokio::test]
async fn a_batch_decides_as_one_by_one_and_writes_each_group_once() {
    for group_wait in ["0s", "30s"] {
        let p = policy(group_wait);
        // Two jobs, interleaved as a busy account's log stream is, with a redelivery inside.
        let mut diagnoses: Vec<Diagnosis> = (0..60)
            .map(|i| {
                let job = if i % 2 == 0 { "render" } else { "etl" };
                oom(job, &format!("t{i}"), "same")
            })
            .collect();
        diagnoses.push(diagnoses[7].clone());
        let plans: Vec<Plan> = diagnoses.iter().map(|d| planned(d, &p)).collect();

        let dir_one = tempfile::tempdir().unwrap();
        let one_store = watched(&dir_one, Vec::new());
        let one = GroupStore::new(one_store.clone());
        let mut one_by_one = Vec::new();
        for (d, plan) in diagnoses.iter().zip(&plans) {
            one_by_one.push(one.record(d, plan, T0).await.unwrap());
        }

        let dir_batch = tempfile::tempdir().unwrap();
        let batch_store = watched(&dir_batch, Vec::new());
        let batch = GroupStore::new(batch_store.clone());
        let alerts: Vec<(&Diagnosis, &Plan)> = diagnoses.iter().zip(&plans).collect();
        let recorded = batch.record_batch(&alerts, T0).await;

        assert!(recorded.failed.is_empty(), "{:?}", recorded.failed);
        assert_eq!(recorded.outcomes, one_by_one, "group_wait {group_wait}");
        // 2 jobs × 2 receivers.
        let groups = std::sync::atomic::Ordering::SeqCst;
        assert_eq!(batch_store.group_puts.load(groups), 4);
        assert_eq!(one_store.group_puts.load(groups), 120);
        for receiver in &plans[0].receivers {
            let key = &receiver.group_key;
            let a = one.state(key).await.unwrap().unwrap();
            let b = batch.state(key).await.unwrap().unwrap();
            assert_eq!(a, b);
            assert_eq!(b.count, 30, "the redelivery is not counted twice");
        }
    }
}

#[tokio::test]
async fn a_group_that_cannot_be_written_fails_only_its_alerts() {
    let p = policy("30s");
    let render = oom("render", "t1", "f");
    let etl = oom("etl", "t2", "f");
    let (render_plan, etl_plan) = (planned(&render, &p), planned(&etl, &p));
    // The render job's group for the first receiver cannot be written.
    let refused = GroupStore::group_object(&render_plan.receivers[0].group_key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = watched(&dir, vec![refused.as_str().to_owned()]);
    let groups = GroupStore::new(store.clone());

    let recorded = groups
        .record_batch(&[(&render, &render_plan), (&etl, &etl_plan)], T0)
        .await;

    assert_eq!(recorded.failed.len(), 1);
    let (alerts, error) = &recorded.failed[0];
    assert_eq!(alerts, &vec![0]);
    assert!(error.to_string().contains("unavailable"), "{error}");
    // The render alert still joined its other receiver's group; etl joined both.
    assert_eq!(recorded.outcomes[0].waiting.len(), 1);
    assert_eq!(recorded.outcomes[1].waiting.len(), 2);
    let etl_state = groups
        .state(&etl_plan.receivers[0].group_key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(etl_state.count, 1);
    assert!(
        groups
            .state(&render_plan.receivers[0].group_key)
            .await
            .unwrap()
            .is_none()
    );
    // `record` of one alert reports the same failure as an error.
    let error = groups.record(&render, &render_plan, T0).await.unwrap_err();
    assert!(error.to_string().contains("unavailable"), "{error}");
}

fn counts(store: &WatchedStore) -> (usize, usize) {
    let order = std::sync::atomic::Ordering::SeqCst;
    (store.group_gets.load(order), store.group_puts.load(order))
}

/// One instance alone folds each alert into the version of the group it wrote last: one write
/// per group and alert, and no read after the first (on Blob Storage, a request fewer per alert
/// when alerts come one per invocation).
#[tokio::test]
async fn one_instance_writes_over_the_version_it_remembers_without_reading_it() {
    let p = policy("30s");
    let dir = tempfile::tempdir().unwrap();
    let store = watched(&dir, Vec::new());
    let groups = GroupStore::new(store.clone());
    for i in 0..5 {
        let d = oom("render", &format!("t{i}"), "same");
        groups.record(&d, &planned(&d, &p), T0).await.unwrap();
    }
    // Two receivers, so two groups: each read once (absent), then written five times.
    assert_eq!(counts(&store), (2, 10));
    let key = &planned(&oom("render", "t0", "same"), &p).receivers[0].group_key;
    assert_eq!(groups.state(key).await.unwrap().unwrap().count, 5);
}

/// Two instances taking turns on one group: a remembered version another instance overtook is
/// refused (412), the group read and the alert folded again, so every alert is counted; the
/// group is then read before each write, as it was before versions were remembered.
#[tokio::test]
async fn a_remembered_version_another_instance_overtook_is_read_again() {
    let p = policy("30s");
    let dir = tempfile::tempdir().unwrap();
    let store = watched(&dir, Vec::new());
    let a = GroupStore::new(store.clone());
    let b = GroupStore::new(store.clone());
    let record = |groups: GroupStore, task: &str| {
        let d = oom("render", task, "same");
        let plan = planned(&d, &p);
        async move { groups.record(&d, &plan, T0).await.unwrap() }
    };
    record(a.clone(), "t1").await;
    record(b.clone(), "t2").await;
    assert_eq!(counts(&store), (4, 4), "each instance read each group once");
    // A's versions are B's past: two refused writes, two reads, two writes.
    record(a.clone(), "t3").await;
    assert_eq!(counts(&store), (6, 8));
    // Contended now: A reads first, and its write wins at once.
    record(a.clone(), "t4").await;
    assert_eq!(counts(&store), (8, 10));
    let key = &planned(&oom("render", "t1", "same"), &p).receivers[0].group_key;
    assert_eq!(a.state(key).await.unwrap().unwrap().count, 4);
    // A redelivery changes nothing: with a remembered version, that is checked on a fresh read.
    record(b.clone(), "t2").await;
    assert_eq!(b.state(key).await.unwrap().unwrap().count, 4);
}

/// The timer's sweep reads each group once: the version it read to see whether it is due is
/// the one its compare-and-swap is conditional on.
#[tokio::test]
async fn the_sweep_reads_each_due_group_once() {
    let p = policy("30s");
    let dir = tempfile::tempdir().unwrap();
    let store = watched(&dir, Vec::new());
    let writer = GroupStore::new(store.clone());
    let d = oom("etl", "t1", "f");
    writer.record(&d, &planned(&d, &p), T0).await.unwrap();
    let before = counts(&store);
    // Another instance's sweep (nothing remembered there).
    let sweeper = GroupStore::new(store.clone());
    let sends = sweeper.due(T0 + Duration::from_secs(30)).await.unwrap();
    assert_eq!(sends.len(), 2);
    assert_eq!(counts(&store), (before.0 + 2, before.1 + 2));
}

/// The invocations a host runs at once in one process take turns on a group: none overtakes
/// another's version, so only the first reads it, and every alert is counted.
#[tokio::test]
async fn concurrent_alerts_of_one_process_take_turns_on_a_group() {
    let p = policy("30s");
    let dir = tempfile::tempdir().unwrap();
    let store = watched(&dir, Vec::new());
    let groups = GroupStore::new(store.clone());
    let diagnoses: Vec<Diagnosis> = (0..8)
        .map(|i| oom("render", &format!("t{i}"), "same"))
        .collect();
    let plans: Vec<Plan> = diagnoses.iter().map(|d| planned(d, &p)).collect();
    let outcomes = futures::future::join_all(
        diagnoses
            .iter()
            .zip(&plans)
            .map(|(d, plan)| groups.record(d, plan, T0)),
    )
    .await;
    assert!(outcomes.iter().all(Result::is_ok));
    // Two groups (two receivers): one read each, then eight writes each, none refused.
    assert_eq!(counts(&store), (2, 16));
    let key = &plans[0].receivers[0].group_key;
    assert_eq!(groups.state(key).await.unwrap().unwrap().count, 8);
}
