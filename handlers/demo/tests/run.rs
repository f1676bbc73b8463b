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
    let silence = the_operators_silence_mutes_one_group_and_keeps_its_logs(&outcome, &out);
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
    // report.json and the page show the silence and its count.
    assert_eq!(json["silences"][0]["id"], silence.as_str());
    assert_eq!(json["silences"][0]["muted"], 2);
    assert_eq!(
        json["silences"][0]["mutedSubjects"],
        serde_json::json!(["devbatch2/nightly", "devbatch2/nightly/part-2"])
    );
    assert_eq!(json["store"]["silences"][0]["muted"], 2);
    // The store's report, read from the failure index, counts every failure the demo saw, pools
    // and nodes of the pool sweep and the poisoned delivery included.
    let by_class = json["byClass"].as_object().unwrap();
    for (class, count) in by_class {
        let indexed = json["store"]["classes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["class"] == class.as_str())
            .map_or(serde_json::Value::Null, |c| c["count"].clone());
        assert_eq!(&indexed, count, "{class}");
    }
    let total: u64 = by_class
        .values()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    assert_eq!(json["store"]["totalFailures"], total);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let silences = &html[html.find("<section id=\"silences\"").unwrap()..];
    let silences = &silences[..silences.find("</section>").unwrap()];
    assert!(
        silences.contains(&silence) && silences.contains("<td>2</td>"),
        "{silences}"
    );
}

/// The operator's silence (added to the store before the first sweep, as `batch-triage silence
/// add` does) mutes the second account's nightly job on every receiver; its logs are kept, the
/// same job of the first account is still alerted, and the store counts what it muted.
fn the_operators_silence_mutes_one_group_and_keeps_its_logs(
    outcome: &batch_triage_demo::DemoOutcome,
    out: &std::path::Path,
) -> String {
    use batch_triage_demo::receivers::Channel;
    assert_eq!(outcome.silences.len(), 1);
    let added = &outcome.silences[0];
    assert_eq!(added.before, "sweep");
    assert_eq!(
        added.silence.matchers,
        batch_triage_demo::run::OPERATOR_SILENCE
    );
    let id = added.silence.id.clone();
    // Every message names its account; none is about devbatch2's nightly job, while every
    // receiver heard of devbatch1's (so the check would see one).
    let about = |r: &batch_triage_demo::receivers::Received, account: &str| {
        let body = String::from_utf8_lossy(&r.body);
        body.contains("nightly") && body.contains(account)
    };
    let muted: Vec<_> = outcome
        .received
        .iter()
        .filter(|r| about(r, "devbatch2"))
        .collect();
    assert!(muted.is_empty(), "{muted:?}");
    for channel in [
        Channel::Teams,
        Channel::Webhook,
        Channel::Email,
        Channel::PagerDuty,
        Channel::Slack,
    ] {
        assert!(
            outcome
                .received
                .iter()
                .any(|r| r.channel == channel && about(r, "devbatch1")),
            "{channel:?} heard of devbatch1's nightly job"
        );
    }
    let reports: Vec<_> = outcome
        .runs
        .iter()
        .flat_map(|r| &r.subjects)
        .filter(|s| s.subject.starts_with("devbatch2/nightly"))
        .collect();
    assert!(!reports.is_empty());
    for report in &reports {
        assert_eq!(report.muted_by.as_deref(), Some(id.as_str()), "{report:?}");
        assert!(report.notified.is_empty(), "{report:?}");
    }
    assert!(
        out.join("store/devbatch2/nightly/part-2/attempt-0/manifest.json")
            .is_file(),
        "its logs are kept"
    );
    let listed = &outcome.store.silences;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].silence.id.as_str(), listed[0].muted),
        (id.as_str(), 2)
    );
    let mut subjects: Vec<&str> = outcome
        .store
        .muted
        .iter()
        .map(|m| m.subject.as_str())
        .collect();
    subjects.sort_unstable();
    assert_eq!(subjects, ["devbatch2/nightly", "devbatch2/nightly/part-2"]);
    id
}

/// The stuck job `backfill`, terminated between the sweeps, is resolved once on each receiver
/// with `send_resolved` (Teams, the SIEM webhook, PagerDuty, Slack) and on no other; e-mail
/// (no `send_resolved`) hears nothing of it. The pool `quota-pool`, which reached its target
/// between the sweeps, is resolved once on each receiver with `send_resolved` that heard of it
/// (Teams, the SIEM, Slack: an error does not page). Nothing else resolves.
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
    let about = |what: &str| -> Vec<Channel> {
        resolved
            .iter()
            .filter(|(_, body)| body.to_string().contains(what))
            .map(|(c, _)| *c)
            .collect()
    };
    let mut backfill = about("backfill");
    backfill.sort_by_key(|c| c.receiver_name());
    let mut pool = about(batch_triage_demo::run::RESOLVED_POOL);
    pool.sort_by_key(|c| c.receiver_name());
    assert_eq!(
        backfill,
        [
            Channel::PagerDuty,
            Channel::Slack,
            Channel::Teams,
            Channel::Webhook
        ],
        "{resolved:?}"
    );
    // An error, so chat never heard of it: only the receivers that did are told it is over.
    assert_eq!(pool, [Channel::Teams, Channel::Webhook], "{resolved:?}");
    assert_eq!(resolved.len(), 6, "nothing else resolves: {resolved:?}");
    let webhook = resolved
        .iter()
        .find(|(c, body)| *c == Channel::Webhook && body.to_string().contains("quota-pool"))
        .map(|(_, body)| body)
        .unwrap();
    assert_eq!(
        webhook["diagnosis"]["class"], "pool.resize_failed",
        "{webhook}"
    );
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
