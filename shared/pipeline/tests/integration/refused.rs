//! Subjects whose ids can never be read from Batch (`.`, `..`, an empty id, an id longer than
//! the client sends) are refused once: one audit record, one alert saying why, never a retry; a
//! second run of the same payload (or a second sweep) adds nothing. A good subject beside them is
//! preserved normally, and so is a 300-byte id (stored under a cut, hashed key segment).

use std::time::Duration;

use batch_emulator::{Emulator, Scenario};
use pipeline::Verdict;
use pipeline::audit::{AuditDecision, AuditLog};
use pipeline::sweep::SweepOptions;
use pipeline::triage::Outcome;
use test_kit::{HostileBatch, HostileJob, serve_emulator};
use time::OffsetDateTime;

use crate::triage::{deadline, fail_record, pipeline_over};

/// One payload of several TaskFailEvents, in order.
fn fail_records(subjects: &[(&str, &str)]) -> String {
    let records: Vec<serde_json::Value> = subjects
        .iter()
        .map(|(job, task)| {
            let one: serde_json::Value =
                serde_json::from_str(&fail_record("devbatch1", job, task)).unwrap();
            one["records"][0].clone()
        })
        .collect();
    serde_json::json!({ "records": records }).to_string()
}

fn refusal_alerts(alerts: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    alerts
        .iter()
        .filter(|a| {
            a["diagnosis"]["summary"]
                .as_str()
                .is_some_and(|s| s.contains("could not be kept"))
        })
        .collect()
}

async fn refusals(store: &std::sync::Arc<dyn artifact_store::ArtifactStore>) -> usize {
    AuditLog::new(store.clone())
        .all()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.decision == AuditDecision::Refused)
        .count()
}

/// The hostile (job, task) pairs, with what the refusal must say.
fn hostile() -> Vec<(String, String, &'static str)> {
    vec![
        (
            "etl".into(),
            ".".into(),
            "task id \".\" can never be read from Batch: an id may not be `.` or `..`",
        ),
        (
            "etl".into(),
            "..".into(),
            "task id \"..\" can never be read from Batch: an id may not be `.` or `..`",
        ),
        (
            "etl".into(),
            String::new(),
            "task id \"\" can never be read from Batch: an id may not be empty",
        ),
        (
            "etl".into(),
            "x".repeat(5000),
            "(5000 bytes) can never be read from Batch: an id may be at most 4096 bytes",
        ),
        (
            "..".into(),
            "oom".into(),
            "job id \"..\" can never be read from Batch: an id may not be `.` or `..`",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn an_id_that_can_never_be_read_is_refused_once_and_never_retried() {
    for (job, task, says) in hostile() {
        let emulator = Emulator::new(Scenario::builtin()).unwrap();
        let batch_url = serve_emulator(emulator.clone()).await;
        let (triage, store, hook, _dir) = pipeline_over(&batch_url).await;
        let payload = fail_records(&[("etl", "oom"), (&job, &task)]);
        let now = OffsetDateTime::now_utc();

        let first = triage
            .handle_payload(payload.as_bytes(), now, deadline())
            .await
            .unwrap();
        assert_eq!(first.subjects.len(), 2, "{first:#?}");
        let (good, bad) = (&first.subjects[0], &first.subjects[1]);
        assert_eq!(good.outcome, Outcome::Done, "{good:#?}");
        assert!(!good.preserved.is_empty(), "the good subject is preserved");
        match &bad.outcome {
            Outcome::Refused(reason) => {
                assert!(reason.contains(says), "{reason}");
                assert!(!reason.contains("already reported"), "{reason}");
            }
            other => panic!("{task:?} not refused: {other:?}"),
        }
        assert_eq!(bad.notified, vec!["hook"], "one alert says why");
        assert!(bad.preserved.is_empty());
        assert!(!first.should_retry(), "{first:#?}");
        assert_eq!(Verdict::of_run(&first), Verdict::Ok);
        assert!(
            !bad.subject.contains(&"x".repeat(41)),
            "the subject shows a bounded id: {}",
            bad.subject
        );
        let alerts = hook.alerts();
        let refused = refusal_alerts(&alerts);
        assert_eq!(refused.len(), 1, "{alerts:#?}");
        let cause = refused[0]["diagnosis"]["cause"].as_str().unwrap();
        assert!(cause.contains(says), "{cause}");
        assert!(
            !refused[0].to_string().contains(&"x".repeat(41)),
            "the alert shows a bounded id"
        );
        assert_eq!(refusals(&store).await, 1, "one audit record");
        // Nothing was fetched for the refused subject (its id never reached Batch).
        if job == "etl" && !task.is_empty() && task != "." && task != ".." {
            assert!(
                !emulator
                    .requests()
                    .iter()
                    .any(|r| r.path_and_query.contains(&task)),
                "the refused task was fetched"
            );
        }

        let alerts_before = hook.len();
        let second = triage
            .handle_payload(payload.as_bytes(), now, deadline())
            .await
            .unwrap();
        match &second.subjects[1].outcome {
            Outcome::Refused(reason) => assert!(reason.contains("already reported"), "{reason}"),
            other => panic!("{task:?} second run: {other:?}"),
        }
        assert!(second.subjects[1].notified.is_empty());
        assert!(!second.should_retry(), "{second:#?}");
        assert_eq!(hook.len(), alerts_before, "no alert on the second run");
        assert_eq!(refusals(&store).await, 1, "no second audit record");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sweep_refuses_a_listed_task_whose_id_can_never_be_read_once() {
    let long = "y".repeat(300);
    let double = HostileBatch::start(vec![HostileJob {
        id: "etl".to_owned(),
        tasks: vec![
            "..".to_owned(),
            "x".repeat(5000),
            long.clone(),
            "good".to_owned(),
        ],
    }])
    .await;
    let (triage, store, hook, _dir) = pipeline_over(&double.url).await;
    let options = SweepOptions {
        look_back: Some(Duration::from_secs(400 * 24 * 3600)),
        ..SweepOptions::default()
    };
    let now = OffsetDateTime::now_utc();

    let first = triage.sweep(now, deadline(), &options).await.unwrap();
    let refused: Vec<_> = first
        .subjects
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Refused(_)))
        .collect();
    assert_eq!(refused.len(), 2, "{first:#?}");
    assert!(
        first
            .subjects
            .iter()
            .all(|s| !matches!(s.outcome, Outcome::Failed { .. })),
        "{first:#?}"
    );
    for name in ["good", long.as_str()] {
        let good = first
            .subjects
            .iter()
            .find(|s| s.subject.ends_with(&format!("/etl/{name}")))
            .expect("the good and the long task are triaged");
        assert_eq!(good.outcome, Outcome::Done, "{good:#?}");
        assert_eq!(good.class.map(|c| c.as_str()), Some("task.exit_code"));
        assert!(!good.preserved.is_empty(), "{good:#?}");
    }
    // The 300-byte id is kept under a cut segment with a hash of the whole id.
    let kept = store.list("devbatch1/etl/").await.unwrap();
    assert!(
        kept.iter()
            .any(|o| o.key.as_str().contains(&format!("/{}~", "y".repeat(120)))),
        "{kept:#?}"
    );
    // The listing said the tasks failed: that diagnosis is shown, only the logs are not kept.
    for subject in &refused {
        assert_eq!(
            subject.class.map(|c| c.as_str()),
            Some("task.exit_code"),
            "{subject:#?}"
        );
    }
    let alerts = hook.alerts();
    let refused_alerts = refusal_alerts(&alerts);
    assert_eq!(refused_alerts.len(), 2, "{alerts:#?}");
    for alert in &refused_alerts {
        assert_eq!(alert["diagnosis"]["class"], "task.exit_code", "{alert}");
        assert_eq!(alert["diagnosis"]["exitCode"], 1, "{alert}");
        assert!(
            alert["diagnosis"]["cause"]
                .as_str()
                .is_some_and(|c| c.contains("can never be read from Batch")),
            "{alert}"
        );
    }
    assert_eq!(refusals(&store).await, 2);
    assert!(
        !double
            .paths()
            .iter()
            .any(|p| p.contains("/tasks/..") || p.contains(&"x".repeat(300))),
        "nothing was fetched for the refused tasks: {:#?}",
        double.paths()
    );

    let second = triage
        .sweep(now + Duration::from_secs(60), deadline(), &options)
        .await
        .unwrap();
    for subject in second
        .subjects
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Refused(_)))
    {
        assert!(subject.notified.is_empty(), "{subject:#?}");
    }
    assert_eq!(
        refusal_alerts(&hook.alerts()).len(),
        2,
        "no alert on the second sweep"
    );
    assert_eq!(refusals(&store).await, 2, "no second audit record");
}
