//! Deliveries the platform gave up on: parked, worked by a later tick, poisoned after too many
//! drains (kept and alerted once), and Event Grid's dead letters taken in. On the emulator, a
//! local store and, for the dead-letter container, Azurite as Event Grid writes it.

use std::sync::Arc;

use artifact_store::{ArtifactStore, Condition, ObjectKey};
use batch_emulator::{Fault, FaultRule};
use bytes::Bytes;
use pipeline::parking::{
    MAX_DRAINS, PARKED_PREFIX, POISONED_PREFIX, ParkKey, Parked, ParkedDelivery,
};
use time::OffsetDateTime;

use crate::triage::{World, deadline, fail_record, world};

fn delivery(payload: String) -> ParkedDelivery {
    ParkedDelivery::new(
        "eventhubs",
        "event hub batch-logs, partition 0, sequence number 17",
        "the last attempt failed",
        payload,
        OffsetDateTime::now_utc(),
    )
}

async fn keys(store: &dyn ArtifactStore, prefix: &str) -> Vec<String> {
    store
        .list(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|info| info.key.as_str().to_owned())
        .collect()
}

async fn record(store: &dyn ArtifactStore, key: &str) -> ParkedDelivery {
    let stored = store.get(&ObjectKey::new(key).unwrap()).await.unwrap();
    serde_json::from_slice(&stored.expect(key).bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parked_delivery_waits_while_batch_fails_and_is_worked_once_it_is_back() {
    let World {
        triage,
        emulator,
        store,
        hook,
        _dir,
        ..
    } = world().await;
    emulator.add_fault(FaultRule::new(Fault::InternalError).path_prefix("/jobs/etl/tasks/oom"));
    let key = ParkKey::event_hubs("batch-logs", "0", 17);
    let parked = delivery(fail_record("devbatch1", "etl", "oom"));
    assert_eq!(triage.park(&key, &parked).await.unwrap(), Parked::New);
    assert_eq!(
        triage.park(&key, &parked).await.unwrap(),
        Parked::AlreadyParked,
        "a replay parks nothing twice"
    );

    let first = triage
        .drain_parked(OffsetDateTime::now_utc(), deadline())
        .await
        .unwrap();
    assert_eq!((first.drained, first.still_parked), (0, 1), "{first:?}");
    let waiting = record(
        store.as_ref(),
        "parked/eventhubs/batch-logs/0/00000000000000000017.json",
    )
    .await;
    assert_eq!(waiting.drains, 1);
    assert!(
        waiting
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("oom")),
        "{waiting:?}"
    );
    assert!(hook.is_empty(), "nothing alerted before the task was read");

    emulator.set_faults(Vec::new());
    let second = triage
        .drain_parked(OffsetDateTime::now_utc(), deadline())
        .await
        .unwrap();
    assert_eq!((second.drained, second.still_parked), (1, 0), "{second:?}");
    assert!(keys(store.as_ref(), PARKED_PREFIX).await.is_empty());
    assert!(
        store
            .head(&ObjectKey::new("devbatch1/etl/oom/attempt-0/manifest.json").unwrap())
            .await
            .unwrap()
            .is_some(),
        "the task's logs are kept"
    );
    assert_eq!(hook.len(), 1);
    assert_eq!(hook.alerts()[0]["diagnosis"]["subject"]["taskId"], "oom");

    // Parked again (a replay after the drain): worked again, and every effect is found done.
    triage.park(&key, &parked).await.unwrap();
    let third = triage
        .drain_parked(OffsetDateTime::now_utc(), deadline())
        .await
        .unwrap();
    assert_eq!(third.drained, 1);
    assert_eq!(hook.len(), 1, "alerted once, however often it is parked");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_that_keeps_failing_is_poisoned_kept_and_alerted_once() {
    let World {
        triage,
        emulator,
        store,
        hook,
        _dir,
        ..
    } = world().await;
    emulator.add_fault(FaultRule::new(Fault::InternalError).path_prefix("/jobs/etl/tasks/oom"));
    // One drain short of the limit, as the earlier drains left it.
    let mut tired = delivery(fail_record("devbatch1", "etl", "oom"));
    tired.drains = MAX_DRAINS - 1;
    let key = ParkKey::event_hubs("batch-logs", "3", 99);
    triage.park(&key, &tired).await.unwrap();

    let report = triage
        .drain_parked(OffsetDateTime::now_utc(), deadline())
        .await
        .unwrap();
    assert_eq!(report.poisoned, 1, "{report:?}");
    let poisoned = &report.subjects[0];
    assert_eq!(
        poisoned.subject,
        format!("devbatch1/_poisoned/{}", key.as_str())
    );
    assert_eq!(
        poisoned.class.map(|c| c.as_str()),
        Some("delivery.unprocessable")
    );
    assert_eq!(poisoned.notified, ["hook"]);
    assert!(
        poisoned.preserved[0]
            .ends_with("poisoned/eventhubs/batch-logs/3/00000000000000000099.json"),
        "{poisoned:?}"
    );
    assert!(keys(store.as_ref(), PARKED_PREFIX).await.is_empty());
    let kept = record(
        store.as_ref(),
        &format!("{POISONED_PREFIX}{}", key.as_str()),
    )
    .await;
    assert_eq!(kept.drains, MAX_DRAINS);
    assert_eq!(kept.payload, tired.payload, "kept byte for byte");
    assert!(kept.last_error.is_some(), "{kept:?}");

    let alerts = hook.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["diagnosis"]["class"], "delivery.unprocessable");
    let hints = alerts[0]["diagnosis"]["hints"].to_string();
    assert!(
        hints.contains("poisoned/eventhubs/batch-logs/3/"),
        "{hints}"
    );

    // Parked again and poisoned again: still one alert.
    triage.park(&key, &tired).await.unwrap();
    let again = triage
        .drain_parked(OffsetDateTime::now_utc(), deadline())
        .await
        .unwrap();
    assert_eq!(again.poisoned, 1);
    assert!(again.subjects[0].notified.is_empty());
    assert_eq!(hook.len(), 1, "a poisoned delivery is alerted once");
    let counts = triage.parking_counts().await.unwrap();
    assert_eq!((counts.parked, counts.poisoned), (0, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn unreadable_or_damaged_parked_records_are_poisoned_at_once_never_dropped() {
    let World {
        triage,
        store,
        hook,
        _dir,
        ..
    } = world().await;
    triage
        .park(
            &ParkKey::by_content("eventhubs", b"junk"),
            &delivery("{\"records\": [".to_owned()),
        )
        .await
        .unwrap();
    store
        .put(
            &ObjectKey::new("parked/eventhubs/damaged.json").unwrap(),
            Bytes::from_static(b"\x00 not a parked record"),
            Condition::IfAbsent,
        )
        .await
        .unwrap();
    let report = triage
        .drain_parked(OffsetDateTime::now_utc(), deadline())
        .await
        .unwrap();
    assert_eq!(report.poisoned, 2, "{report:?}");
    assert!(keys(store.as_ref(), PARKED_PREFIX).await.is_empty());
    let poisoned = keys(store.as_ref(), POISONED_PREFIX).await;
    assert_eq!(poisoned.len(), 2, "{poisoned:?}");
    let damaged = record(store.as_ref(), "poisoned/eventhubs/damaged.json").await;
    assert!(damaged.reason.contains("cannot be read"), "{damaged:?}");
    assert!(damaged.payload.contains("not a parked record"));
    assert_eq!(hook.len(), 2, "each alerted once");
}

/// A dead-letter blob as Event Grid writes it: under `{topic}/{subscription}/{y}/{m}/{d}/{h}/`,
/// one JSON array holding the delivery's events, each with Event Grid's dead-letter fields.
fn dead_letter_blob(events: &[(&str, &str, &str)]) -> Bytes {
    let events: Vec<serde_json::Value> = events
        .iter()
        .map(|(id, job, task)| {
            serde_json::json!({
                "id": id,
                "topic": "/subscriptions/0/resourceGroups/rg/providers/Microsoft.EventGrid/topics/batch-triage",
                "subject": format!("jobs/{job}/tasks/{task}"),
                "eventType": "Contoso.Batch.TaskFailed",
                "eventTime": "2026-12-04T10:00:00Z",
                "data": {"jobId": job, "taskId": task},
                "dataVersion": "1.0",
                "metadataVersion": "1",
                "deadLetterReason": "MaxDeliveryAttemptsExceeded",
                "deliveryAttempts": 30,
                "lastDeliveryOutcome": "Probation",
                "publishTime": "2026-12-04T10:00:01Z",
                "lastDeliveryAttemptTime": "2026-12-05T09:59:00Z"
            })
        })
        .collect();
    Bytes::from(serde_json::to_vec(&events).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn event_grid_dead_letters_on_azurite_are_taken_in_worked_and_removed() {
    let azurite = artifact_store::testing::Azurite::start();
    let dead_letters: Arc<dyn ArtifactStore> = Arc::new(azurite.store("deadletters").await);
    let World {
        triage,
        store,
        hook,
        _dir,
        ..
    } = world().await;
    let triage = triage.with_dead_letter_store(dead_letters.clone());
    let blob = "BATCH-TRIAGE/TASKEVENTGRID/2026/12/5/9/0f5e7a6e-1c1d-4f0e-9a57-5c1e0d7e9b11.json";
    dead_letters
        .put(
            &ObjectKey::new(blob).unwrap(),
            dead_letter_blob(&[("e-oom", "etl", "oom"), ("e-sigkill", "etl", "sigkill")]),
            Condition::IfAbsent,
        )
        .await
        .unwrap();
    // The same event dead-lettered twice (Event Grid delivers at least once).
    dead_letters
        .put(
            &ObjectKey::new("BATCH-TRIAGE/TASKEVENTGRID/2026/12/5/9/second.json").unwrap(),
            dead_letter_blob(&[("e-oom", "etl", "oom")]),
            Condition::IfAbsent,
        )
        .await
        .unwrap();
    dead_letters
        .put(
            &ObjectKey::new("BATCH-TRIAGE/TASKEVENTGRID/2026/12/5/9/odd.json").unwrap(),
            Bytes::from_static(b"{\"not\": \"an array\"}"),
            Condition::IfAbsent,
        )
        .await
        .unwrap();

    let report = triage
        .drain_parked(OffsetDateTime::now_utc(), deadline())
        .await
        .unwrap();
    assert_eq!(report.dead_lettered, 3, "{report:?}");
    assert_eq!(
        report.drained, 2,
        "the same event is parked once: {report:?}"
    );
    assert!(
        dead_letters.list("").await.unwrap().is_empty(),
        "the dead-letter container is emptied"
    );
    assert!(keys(store.as_ref(), PARKED_PREFIX).await.is_empty());
    let mut tasks: Vec<String> = hook
        .alerts()
        .iter()
        .filter_map(|a| {
            a["diagnosis"]["subject"]["taskId"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    tasks.sort();
    assert_eq!(
        tasks,
        ["oom", "sigkill"],
        "each dead-lettered failure alerted once"
    );
    let classes: Vec<String> = hook
        .alerts()
        .iter()
        .map(|a| {
            a["diagnosis"]["class"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(
        classes.contains(&"delivery.unprocessable".to_owned()),
        "the odd blob is kept and alerted: {classes:?}"
    );
    assert_eq!(keys(store.as_ref(), POISONED_PREFIX).await.len(), 1);

    let quiet = triage
        .drain_parked(OffsetDateTime::now_utc(), deadline())
        .await
        .unwrap();
    assert!(quiet.is_empty(), "{quiet:?}");
}

/// More parked deliveries than one tick works: each tick lists one page and works at most its
/// bound, the next tick continues after it (so deliveries that fail again never hold the rest
/// back), and after the end the drain starts over. Nothing is lost, nothing is worked twice in a
/// pass.
#[tokio::test(flavor = "multi_thread")]
async fn a_parking_area_larger_than_a_tick_is_drained_over_ticks_without_loss_or_repeats() {
    let emulator = batch_emulator::Emulator::new(batch_emulator::Scenario::builtin()).unwrap();
    let batch_url = test_kit::serve_emulator(emulator.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn ArtifactStore> =
        Arc::new(artifact_store::LocalDirStore::new(dir.path()).unwrap());
    let flaky = Arc::new(test_kit::flaky_store::FlakyStore::new(local));
    let (triage, hook) = crate::triage::pipeline_on(&batch_url, flaky.clone()).await;
    // The first four fail while Batch fails for their task; 21 more have nothing to do.
    emulator.add_fault(FaultRule::new(Fault::InternalError).path_prefix("/jobs/etl/tasks/oom"));
    let key = |seq: i64| ParkKey::event_hubs("batch-logs", "0", seq);
    for seq in 0..25 {
        let payload = if seq < 4 {
            fail_record("devbatch1", "etl", "oom")
        } else {
            r#"{"records":[]}"#.to_owned()
        };
        triage.park(&key(seq), &delivery(payload)).await.unwrap();
    }
    let tick = || triage.drain_parked_at_most(OffsetDateTime::now_utc(), deadline(), 10);
    let counts = |r: &pipeline::parking::DrainReport| {
        (
            r.still_parked,
            r.drained,
            r.more_waiting,
            r.left_for_next_tick,
        )
    };

    let first = tick().await.unwrap();
    assert_eq!(counts(&first), (4, 6, true, 0), "{first:?}");
    let second = tick().await.unwrap();
    assert_eq!(
        counts(&second),
        (0, 10, true, 0),
        "continues after the first page"
    );
    // Nine left: the whole area fits in one page, so the tick works all of it.
    let third = tick().await.unwrap();
    assert_eq!(counts(&third), (4, 5, false, 0), "{third:?}");
    assert_eq!(keys(flaky.as_ref(), PARKED_PREFIX).await.len(), 4);
    // Batch is back: the four are worked again.
    emulator.set_faults(Vec::new());
    let fourth = tick().await.unwrap();
    assert_eq!(counts(&fourth), (0, 4, false, 0), "{fourth:?}");
    assert!(keys(flaky.as_ref(), PARKED_PREFIX).await.is_empty());
    assert!(tick().await.unwrap().is_empty());
    assert_eq!(
        hook.len(),
        1,
        "the task's alert once, for four deliveries of it"
    );

    // One listing a tick, two when the area is larger than a page (the first page, and the page
    // after the position); each delivery read once a tick that works it.
    let listings = flaky.requested(test_kit::flaky_store::StoreOp::List, PARKED_PREFIX);
    assert_eq!(
        listings.len(),
        1 + 2 + 1 + 1 + 1 + 2,
        "and the two `keys` above"
    );
    let positions = flaky.requested(test_kit::flaky_store::StoreOp::Get, "drains/");
    assert_eq!(
        positions.len(),
        2,
        "read only while the area was larger than a page"
    );
    let mut reads = flaky.requested(test_kit::flaky_store::StoreOp::Get, PARKED_PREFIX);
    reads.sort();
    let mut expected: Vec<String> = (0..25)
        .flat_map(|seq| {
            let object = format!("{PARKED_PREFIX}{}", key(seq).as_str());
            vec![object; if seq < 4 { 3 } else { 1 }]
        })
        .collect();
    expected.sort();
    assert_eq!(reads, expected);
}
