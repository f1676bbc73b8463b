//! The whole demo in process: the emulator, the pipeline built from settings, the receivers and
//! the report, with no process spawned.

use batch_triage_demo::{Report, SubjectKey, prepare_out_dir, run_demo};
use diagnosis::FailureClass;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_converges_with_every_class_and_labels_release_nodes_by_their_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = prepare_out_dir(&dir.path().join("demo")).unwrap();
    let outcome = run_demo(&out).await.unwrap();
    assert_eq!(outcome.accounts, ["devbatch1", "devbatch2"]);
    assert_eq!(
        outcome.runs.iter().map(|r| r.name).collect::<Vec<_>>(),
        [
            "event-hubs",
            "event-hubs-redelivery",
            "event-grid",
            "cloudevents",
            "sweep",
            // The first tick also drains Event Grid's dead letters (parking).
            "dead-letters",
            "sweep-again",
            "tick-later"
        ]
    );
    // Every failed subject the pipeline reported is a subject the demo can place.
    let failed: Vec<(&str, FailureClass)> = outcome
        .runs
        .iter()
        .flat_map(|r| &r.subjects)
        .filter_map(|s| Some((s.subject.as_str(), s.class.filter(|c| c.is_failure())?)))
        .collect();
    for (label, _) in &failed {
        let key: SubjectKey = label.parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(key.to_string(), *label);
    }
    // One pipeline, two accounts: the second account's failures are found (by its record in
    // the Event Hubs batch and by the sweep), and the record of an account not watched is
    // refused before anything is fetched.
    assert!(
        failed
            .iter()
            .any(|(label, _)| label.starts_with("devbatch2/etl/")),
        "{failed:?}"
    );
    let event_hubs = &outcome.runs[0];
    let unwatched = event_hubs
        .subjects
        .iter()
        .find(|s| s.subject.starts_with("devbatch3/"))
        .expect("the unwatched account's record is reported");
    assert!(
        matches!(&unwatched.outcome, pipeline::triage::Outcome::Refused(why) if why.contains("not a configured account")),
        "{unwatched:#?}"
    );
    assert!(
        out.join("store/devbatch2/etl/oom/attempt-0/manifest.json")
            .is_file(),
        "the second account's logs are in the store"
    );
    assert!(!out.join("store/devbatch3").exists());
    // A release failure is labelled by the folder its logs go to.
    let release: Vec<SubjectKey> = failed
        .iter()
        .filter(|(_, class)| *class == FailureClass::JobReleaseFailed)
        .map(|(label, _)| label.parse().unwrap())
        .collect();
    assert!(!release.is_empty(), "the scenario has a release failure");
    for key in &release {
        assert!(matches!(key, SubjectKey::ReleaseNode { .. }), "{key}");
        assert!(key.to_string().contains("/_jobrelease/"), "{key}");
        assert!(outcome.times.contains_key(key), "{key} has its times");
    }
    resolved_messages_go_to_every_new_channel(&outcome.received);
    let report = Report::build(&out, outcome);
    assert!(report.converged());
    report.write(&out).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let classes: Vec<&str> = json["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["class"].as_str().unwrap())
        .collect();
    for class in FailureClass::ALL.iter().filter(|c| c.is_failure()) {
        assert!(
            classes.contains(&class.as_str()),
            "{class:?} is in the demo"
        );
    }
    let release = json["failures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["class"] == "job.release_failed")
        .unwrap();
    // The node's preparation output is kept beside the release output; the release folder is
    // there, complete.
    let folders = release["preserved"].as_array().unwrap();
    let folder = folders
        .iter()
        .filter_map(|f| f.as_str())
        .find(|f| f.contains("/_jobrelease/"))
        .unwrap_or_else(|| panic!("{folders:?}"));
    assert!(out.join(folder).join("manifest.json").is_file(), "{folder}");
    assert_eq!(json["unrecognisedSubjects"], serde_json::json!([]));
    assert_eq!(
        json["accounts"],
        serde_json::json!(["devbatch1", "devbatch2"])
    );
    assert!(
        json["byJob"].get("devbatch2/etl").is_some(),
        "{}",
        json["byJob"]
    );
}

/// The stuck job `backfill`, terminated between the sweeps, is resolved once on each receiver
/// with `send_resolved` (Teams, the SIEM webhook, PagerDuty, Slack) and on no other; e-mail
/// (no `send_resolved`) hears nothing of it; nothing else resolves.
fn resolved_messages_go_to_every_new_channel(received: &[batch_triage_demo::receivers::Received]) {
    use batch_triage_demo::receivers::Channel;
    let json = |body: &[u8]| serde_json::from_slice::<serde_json::Value>(body).unwrap();
    let resolved: Vec<(Channel, serde_json::Value)> = received
        .iter()
        .filter_map(|r| {
            let is_resolved = match r.channel {
                Channel::Teams => json(&r.body).to_string().contains("RESOLVED"),
                Channel::Webhook => json(&r.body)["status"] == "resolved",
                Channel::PagerDuty => json(&r.body)["event_action"] == "resolve",
                Channel::Slack => json(&r.body)["text"]
                    .as_str()
                    .unwrap()
                    .starts_with("RESOLVED"),
                _ => String::from_utf8_lossy(&r.body).contains("[RESOLVED]"),
            };
            is_resolved.then(|| (r.channel, json_or_null(&r.body)))
        })
        .collect();
    let channels: Vec<Channel> = resolved.iter().map(|(c, _)| *c).collect();
    assert_eq!(channels.len(), 4, "{channels:?}");
    for channel in [
        Channel::Teams,
        Channel::Webhook,
        Channel::PagerDuty,
        Channel::Slack,
    ] {
        assert_eq!(
            channels.iter().filter(|c| **c == channel).count(),
            1,
            "{channel:?}"
        );
    }
    for (channel, body) in &resolved {
        assert!(body.to_string().contains("backfill"), "{channel:?}: {body}");
    }
    // PagerDuty resolves the incident its trigger opened: the same dedup_key.
    let pagerduty: Vec<serde_json::Value> = received
        .iter()
        .filter(|r| r.channel == Channel::PagerDuty)
        .map(|r| json(&r.body))
        .collect();
    let resolve = pagerduty
        .iter()
        .find(|e| e["event_action"] == "resolve")
        .unwrap();
    assert!(
        pagerduty.iter().any(|e| e["event_action"] == "trigger"
            && e["dedup_key"] == resolve["dedup_key"]
            && e["payload"]["class"] == "job.stuck"),
        "{pagerduty:?}"
    );
}

fn json_or_null(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or(serde_json::Value::Null)
}
