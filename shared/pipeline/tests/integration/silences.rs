//! Silences in the store: add, list, expire on a local directory and on Azurite, and a pipeline
//! that honours a silence another handle on the store wrote.

use std::sync::Arc;
use std::time::Duration;

use artifact_store::ArtifactStore;
use pipeline::silences::{NewSilence, SilenceError, SilenceStore};
use pipeline::triage::Outcome;
use time::OffsetDateTime;
use time::macros::datetime;

use crate::triage::{deadline, fail_record, pipeline_over};

const T0: OffsetDateTime = datetime!(2026-12-05 03:00 UTC);

fn new(matchers: &[&str], hours: u64) -> NewSilence {
    NewSilence {
        matchers: matchers.iter().map(|m| (*m).to_owned()).collect(),
        duration: Duration::from_secs(hours * 3600),
        author: "alice".to_owned(),
        comment: "etl is being fixed".to_owned(),
    }
}

/// add → list → expire → list, on any store.
async fn add_list_expire(store: Arc<dyn ArtifactStore>, other: Arc<dyn ArtifactStore>) {
    let silences = SilenceStore::new(store);
    let added = silences
        .add(new(&["job=etl", "class=task.*"], 2), T0)
        .await
        .unwrap();
    assert!(
        added.id.starts_with("s-") && added.id.len() == 14,
        "{added:?}"
    );
    assert_eq!(added.author, "alice");
    assert_eq!(added.starts, "2026-12-05T03:00:00Z");
    assert_eq!(added.ends, "2026-12-05T05:00:00Z");
    let second = silences.add(new(&["pool=gpu-*"], 1), T0).await.unwrap();
    assert_ne!(added.id, second.id);

    // Another handle on the same store (another machine) sees both.
    let elsewhere = SilenceStore::new(other);
    let listed = elsewhere.list(T0, false, true).await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:#?}");
    assert!(listed.iter().all(|l| l.active && l.muted == 0));
    // One hour later the second one has ended on its own.
    let later = T0 + Duration::from_secs(3600);
    assert_eq!(elsewhere.list(later, false, false).await.unwrap().len(), 1);
    assert_eq!(elsewhere.list(later, true, false).await.unwrap().len(), 2);

    let expired = elsewhere
        .expire(&added.id, "bob", T0 + Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(expired.ends, "2026-12-05T03:01:00Z");
    assert_eq!(expired.expired_by.as_deref(), Some("bob"));
    // Expiring again changes nothing.
    let again = silences
        .expire(&added.id, "carol", T0 + Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(again, expired);
    let now = T0 + Duration::from_secs(90);
    let active = silences.list(now, false, false).await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].silence.id, second.id);
    let all = silences.list(now, true, false).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.iter().any(|l| l.silence.id == added.id && !l.active));
}

#[tokio::test]
async fn add_list_and_expire_on_a_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().to_str().unwrap();
    add_list_expire(
        artifact_store::open(spec).unwrap(),
        artifact_store::open(spec).unwrap(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_list_and_expire_on_azurite() {
    let azurite = artifact_store::testing::Azurite::start();
    add_list_expire(
        Arc::new(azurite.store("silences").await),
        Arc::new(azurite.store("silences").await),
    )
    .await;
}

#[tokio::test]
async fn bad_silences_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = artifact_store::open(dir.path().to_str().unwrap()).unwrap();
    let silences = SilenceStore::new(store.clone());
    for (silence, expected) in [
        (new(&["class=tsk.*"], 1), "matches no failure class"),
        (new(&["nope=1"], 1), "unknown key"),
        (new(&[], 1), "would mute everything"),
        (new(&["job=etl"], 0), "--for"),
        (new(&["job=etl"], 24 * 365), "--for"),
        (
            NewSilence {
                comment: " ".to_owned(),
                ..new(&["job=etl"], 1)
            },
            "--comment",
        ),
    ] {
        let error = silences.add(silence, T0).await.unwrap_err().to_string();
        assert!(error.contains(expected), "{error}");
    }
    assert!(store.list("").await.unwrap().is_empty());
    for id in ["s-000000000000", "../../etc/passwd", "s-ZZZZZZZZZZZZ", ""] {
        let error = silences.expire(id, "bob", T0).await.unwrap_err();
        assert!(matches!(error, SilenceError::NotFound(_)), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silence_written_elsewhere_mutes_the_alert_and_counts_it_but_keeps_the_logs() {
    let emulator = batch_emulator::Emulator::new(batch_emulator::Scenario::builtin()).unwrap();
    let batch_url = test_kit::serve_emulator(emulator.clone()).await;
    let (triage, store, hook, _dir) = pipeline_over(&batch_url).await;
    let now = OffsetDateTime::now_utc();
    let silence = SilenceStore::new(store.clone())
        .add(new(&["job=etl", "class=task.*"], 2), now)
        .await
        .unwrap();
    for _ in 0..2 {
        let report = triage
            .handle_payload(
                fail_record("devbatch1", "etl", "oom").as_bytes(),
                now,
                deadline(),
            )
            .await
            .unwrap();
        let subject = &report.subjects[0];
        assert_eq!(subject.outcome, Outcome::Done, "{subject:#?}");
        assert!(subject.notified.is_empty(), "{subject:#?}");
        assert_eq!(subject.muted_by.as_deref(), Some(silence.id.as_str()));
        assert!(!subject.preserved.is_empty(), "logs are still kept");
    }
    assert!(hook.bodies().is_empty(), "nothing reached the receiver");
    let listed = SilenceStore::new(store)
        .list(now, false, true)
        .await
        .unwrap();
    assert_eq!(listed[0].muted, 1, "one subject muted, counted once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silence_added_while_a_group_waits_mutes_its_flush() {
    let emulator = batch_emulator::Emulator::new(batch_emulator::Scenario::builtin()).unwrap();
    let batch_url = test_kit::serve_emulator(emulator.clone()).await;
    let (triage, store, hook, _dir) = crate::triage::pipeline_with_group_wait(&batch_url).await;
    let triage = triage.with_silence_cache_ttl(Duration::ZERO);
    let now = OffsetDateTime::now_utc();
    let report = triage
        .handle_payload(
            fail_record("devbatch1", "etl", "oom").as_bytes(),
            now,
            deadline(),
        )
        .await
        .unwrap();
    assert_eq!(report.subjects[0].waiting, 1, "{report:#?}");
    let silence = SilenceStore::new(store.clone())
        .add(new(&["job=etl"], 1), now)
        .await
        .unwrap();
    let later = now + Duration::from_secs(120);
    let sent = triage.flush_due(later, deadline()).await.unwrap();
    assert!(sent.is_empty(), "{sent:?}");
    assert!(hook.bodies().is_empty());
    let listed = SilenceStore::new(store)
        .list(later, false, true)
        .await
        .unwrap();
    assert_eq!(listed[0].silence.id, silence.id);
    assert_eq!(listed[0].muted, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_silence_the_waiting_group_is_sent() {
    let emulator = batch_emulator::Emulator::new(batch_emulator::Scenario::builtin()).unwrap();
    let batch_url = test_kit::serve_emulator(emulator.clone()).await;
    let (triage, _store, hook, _dir) = crate::triage::pipeline_with_group_wait(&batch_url).await;
    let now = OffsetDateTime::now_utc();
    triage
        .handle_payload(
            fail_record("devbatch1", "etl", "oom").as_bytes(),
            now,
            deadline(),
        )
        .await
        .unwrap();
    let sent = triage
        .flush_due(now + Duration::from_secs(120), deadline())
        .await
        .unwrap();
    assert_eq!(sent, ["hook"]);
    assert_eq!(hook.bodies().len(), 1);
}
