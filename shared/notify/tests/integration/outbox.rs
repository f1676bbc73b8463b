//! The outbox: a failed delivery is kept in a (local-directory) artifact store, queued once, and
//! delivered and removed by a later drain; permanent failures move aside.

use std::sync::Arc;

use artifact_store::{ArtifactStore, LocalDirStore};
use notify::config::ReceiverConfig;
use notify::{Outbox, outbox::DEAD_PREFIX};

use crate::support::{Receiver, deadline, local_egress, sample_alert};

fn webhook(name: &str, url: &str) -> notify::Receiver {
    let config: ReceiverConfig = serde_json::from_value(serde_json::json!({
        "name": name, "kind": "webhook", "url_env": "U", "secret_env": "S"
    }))
    .unwrap();
    config
        .resolve(|var| {
            Some(if var == "U" {
                url.to_owned()
            } else {
                "hook-key-s3cr3t".to_owned()
            })
        })
        .unwrap()
}

#[tokio::test]
async fn failed_alerts_are_queued_once_and_drained() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ArtifactStore> = Arc::new(LocalDirStore::new(dir.path()).unwrap());
    let outbox = Outbox::new(Arc::clone(&store));
    let alert = sample_alert();

    let down = Receiver::start(vec![(503, vec![]); 10]).await;
    let receiver = webhook("siem hook", &down.url);
    let error = notify::send(&local_egress(), &receiver, &alert, deadline())
        .await
        .unwrap_err();
    assert!(error.is_retryable());
    assert!(outbox.put(&receiver.name, &alert, &error).await.unwrap());
    assert!(
        !outbox.put(&receiver.name, &alert, &error).await.unwrap(),
        "queued once"
    );
    let pending = outbox.pending().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        pending[0].0.as_str(),
        format!("outbox/siem_hook/{}.json", alert.idempotency_key())
    );
    assert_eq!(pending[0].1.alert, alert);
    let stored = std::fs::read_to_string(
        LocalDirStore::new(dir.path())
            .unwrap()
            .path_of(&pending[0].0),
    )
    .unwrap();
    assert!(
        !stored.contains("TOPSECRETSIG") && !stored.contains("hook-key-s3cr3t"),
        "no secrets stored"
    );

    // Still down: stays queued.
    let report = outbox
        .drain(&local_egress(), &[receiver], deadline())
        .await
        .unwrap();
    assert_eq!((report.delivered, report.still_pending), (0, 1));

    // Unknown receiver: left alone.
    let up = Receiver::start(vec![]).await;
    let report = outbox
        .drain(&local_egress(), &[webhook("other", &up.url)], deadline())
        .await
        .unwrap();
    assert_eq!(report.skipped, 1);
    assert!(up.requests().is_empty());

    // Back up: delivered once and removed.
    let report = outbox
        .drain(
            &local_egress(),
            &[webhook("siem hook", &up.url)],
            deadline(),
        )
        .await
        .unwrap();
    assert_eq!(report.delivered, 1);
    assert_eq!(up.requests().len(), 1);
    assert_eq!(
        up.requests()[0].header("x-batch-triage-id"),
        Some(alert.idempotency_key().as_str())
    );
    assert!(outbox.pending().await.unwrap().is_empty());
}

#[tokio::test]
async fn permanent_failures_move_aside() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ArtifactStore> = Arc::new(LocalDirStore::new(dir.path()).unwrap());
    let outbox = Outbox::new(Arc::clone(&store));
    let alert = sample_alert();
    let gone = Receiver::start(vec![(410, vec![])]).await;
    let receiver = webhook("hook", &gone.url);
    let error = notify::NotifyError::Transport("connection failed".into());
    outbox.put("hook", &alert, &error).await.unwrap();
    let report = outbox
        .drain(&local_egress(), &[receiver], deadline())
        .await
        .unwrap();
    assert_eq!(report.dead, 1);
    assert!(outbox.pending().await.unwrap().is_empty());
    let dead = store.list(DEAD_PREFIX).await.unwrap();
    assert_eq!(dead.len(), 1);
    let entry: notify::OutboxEntry =
        serde_json::from_slice(&store.get(&dead[0].key).await.unwrap().unwrap().bytes).unwrap();
    assert!(entry.last_error.contains("410"), "{}", entry.last_error);
}

/// An outbox larger than one drain's bound: each drain tries one page, the next continues after
/// it, so the entries of a receiver that stays down (they sort first) never hold back the others;
/// every entry is delivered once, and after the end the drain starts over.
#[tokio::test]
async fn a_large_outbox_is_drained_a_page_at_a_time_without_starving_or_repeating() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ArtifactStore> = Arc::new(LocalDirStore::new(dir.path()).unwrap());
    let outbox = Outbox::new(Arc::clone(&store));
    let error = notify::NotifyError::Transport("connection failed".into());
    for (name, n) in [("a-down", 4), ("b-up", 12)] {
        for sequence in 0..n {
            let mut alert = sample_alert();
            alert.sequence = sequence;
            assert!(outbox.put(name, &alert, &error).await.unwrap());
        }
    }
    let down = Receiver::start(vec![(503, vec![]); 100]).await;
    let up = Receiver::start(vec![]).await;
    let receivers = [webhook("a-down", &down.url), webhook("b-up", &up.url)];
    let mut drains = Vec::new();
    for _ in 0..5 {
        let report = outbox
            .drain_at_most(&local_egress(), &receivers, deadline(), 5)
            .await
            .unwrap();
        drains.push((report.still_pending, report.delivered, report.more_waiting));
    }
    assert_eq!(
        drains,
        [
            (4, 1, true),
            (0, 5, true),
            (0, 5, true),
            (4, 1, false),
            (4, 0, false)
        ],
        "pages of 5 over 16 entries, then the five left in one page"
    );
    let mut delivered: Vec<String> = up
        .requests()
        .iter()
        .map(|r| r.header("x-batch-triage-id").unwrap().to_owned())
        .collect();
    assert_eq!(delivered.len(), 12);
    delivered.sort();
    delivered.dedup();
    assert_eq!(delivered.len(), 12, "each delivered once");
    assert_eq!(outbox.pending().await.unwrap().len(), 4);
    assert_eq!(
        outbox.pending_first(3).await.unwrap().len(),
        3,
        "at most what is asked"
    );
}
