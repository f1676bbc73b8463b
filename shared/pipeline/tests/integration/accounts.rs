//! One deployment, two accounts: settings read as a handler reads them, two emulators with two
//! keys, items routed to their account's client, a third account refused, a cursor and a lease
//! per account, alerts grouped per account unless the rule drops the account.

use std::time::Duration;

use artifact_store::ObjectKey;
use batch_client::Deadline;
use batch_emulator::{Emulator, WELL_KNOWN_ACCOUNT_NAME};
use pipeline::settings::Settings;
use pipeline::sweep::SweepOptions;
use pipeline::triage::{Outcome, Triage};
use test_kit::{Backends, SECOND_ACCOUNT_NAME};
use time::OffsetDateTime;

use crate::triage::fail_record;

fn pipeline(backends: &Backends) -> Triage {
    Settings::from_env(|name| backends.setting(name))
        .unwrap()
        .build()
        .unwrap()
}

fn second(backends: &Backends) -> &Emulator {
    &backends.second.as_ref().unwrap().emulator
}

/// The records of one Event Hubs body: one failure in each of the two accounts and one in a
/// third that is not configured.
fn three_accounts_batch() -> String {
    let records: Vec<serde_json::Value> =
        [WELL_KNOWN_ACCOUNT_NAME, SECOND_ACCOUNT_NAME, "devbatch3"]
            .iter()
            .flat_map(|account| {
                let body: serde_json::Value =
                    serde_json::from_str(&fail_record(account, "etl", "oom")).unwrap();
                body["records"].as_array().cloned().unwrap_or_default()
            })
            .collect();
    serde_json::json!({ "records": records }).to_string()
}

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread")]
async fn each_record_is_read_from_its_own_account_and_a_third_account_is_refused() {
    let backends = Backends::start_two_accounts().await;
    let triage = pipeline(&backends);
    let report = triage
        .handle_payload(
            three_accounts_batch().as_bytes(),
            OffsetDateTime::now_utc(),
            deadline(),
        )
        .await
        .unwrap();
    let by_subject = |subject: &str| {
        report
            .subjects
            .iter()
            .find(|s| s.subject == subject)
            .unwrap_or_else(|| panic!("no {subject} in {report:#?}"))
    };
    for account in [WELL_KNOWN_ACCOUNT_NAME, SECOND_ACCOUNT_NAME] {
        let subject = by_subject(&format!("{account}/etl/oom"));
        assert_eq!(subject.outcome, Outcome::Done, "{subject:#?}");
        assert_eq!(subject.class.map(|c| c.as_str()), Some("task.exit_code"));
        assert_eq!(subject.notified, ["hook"]);
    }
    let refused = by_subject("devbatch3/etl/oom");
    assert!(
        matches!(&refused.outcome, Outcome::Refused(why) if why.contains("not a configured account")),
        "{refused:#?}"
    );
    // Each emulator checks its own key: every request was signed for the account it reached,
    // and each account's task was read from that account only.
    for (emulator, name) in [
        (&backends.emulator, WELL_KNOWN_ACCOUNT_NAME),
        (second(&backends), SECOND_ACCOUNT_NAME),
    ] {
        let requests = emulator.requests();
        assert!(
            requests.iter().all(|r| r.status < 400),
            "{name}: {requests:#?}"
        );
        assert_eq!(
            requests
                .iter()
                .filter(
                    |r| r.method == "GET" && r.path_and_query.starts_with("/jobs/etl/tasks/oom?")
                )
                .count(),
            1,
            "{name}: {requests:#?}"
        );
    }
    // Logs are kept per account, and the default grouping keeps the accounts apart.
    let stored = backends.stored_files();
    for account in [WELL_KNOWN_ACCOUNT_NAME, SECOND_ACCOUNT_NAME] {
        let manifest = format!("{account}/etl/oom/attempt-0/manifest.json");
        assert!(stored.contains(&manifest), "{stored:#?}");
    }
    assert!(
        !stored.iter().any(|f| f.contains("devbatch3")),
        "{stored:#?}"
    );
    let accounts: Vec<String> = backends
        .hook
        .alerts()
        .iter()
        .map(|alert| alert["diagnosis"]["subject"]["account"].to_string())
        .collect();
    assert_eq!(accounts.len(), 2, "one alert per account: {accounts:?}");
    assert!(
        accounts.iter().any(|a| a.contains(SECOND_ACCOUNT_NAME)),
        "{accounts:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reference_is_routed_by_its_account_url_and_an_unknown_url_is_refused() {
    let backends = Backends::start_two_accounts().await;
    let triage = pipeline(&backends);
    let second_url = &backends.second.as_ref().unwrap().batch_url;
    let reference = serde_json::json!({
        "accountUrl": second_url, "jobId": "etl", "taskId": "oom"
    });
    let report = triage
        .handle_payload(
            reference.to_string().as_bytes(),
            OffsetDateTime::now_utc(),
            deadline(),
        )
        .await
        .unwrap();
    assert_eq!(report.subjects.len(), 1, "{report:#?}");
    assert_eq!(
        report.subjects[0].subject,
        format!("{SECOND_ACCOUNT_NAME}/etl/oom")
    );
    assert!(
        backends.emulator.requests().is_empty(),
        "the first account was not asked"
    );
    assert!(!second(&backends).requests().is_empty());

    // An account URL that is no configured account's is refused before any request.
    second(&backends).clear_requests();
    let stranger = serde_json::json!({
        "accountUrl": "https://devbatch3.westeurope.batch.azure.com", "jobId": "etl", "taskId": "oom"
    });
    let report = triage
        .handle_payload(
            stranger.to_string().as_bytes(),
            OffsetDateTime::now_utc(),
            deadline(),
        )
        .await
        .unwrap();
    assert!(
        matches!(report.subjects[0].outcome, Outcome::Refused(_)),
        "{report:#?}"
    );
    assert!(backends.emulator.requests().is_empty());
    assert!(second(&backends).requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn each_account_is_swept_with_its_own_cursor_and_lease() {
    let backends = Backends::start_two_accounts().await;
    let triage = pipeline(&backends);
    let now = OffsetDateTime::now_utc();
    let tick = triage
        .tick(now, deadline(), &SweepOptions::default())
        .await
        .unwrap();
    let accounts: Vec<(&str, bool)> = tick
        .sweep
        .accounts
        .iter()
        .map(|a| (a.account.as_str(), a.completed))
        .collect();
    assert_eq!(
        accounts,
        [(WELL_KNOWN_ACCOUNT_NAME, true), (SECOND_ACCOUNT_NAME, true)],
        "{:#?}",
        tick.sweep
    );
    assert!(tick.sweep.completed);
    for (emulator, name) in [
        (&backends.emulator, WELL_KNOWN_ACCOUNT_NAME),
        (second(&backends), SECOND_ACCOUNT_NAME),
    ] {
        assert!(
            emulator
                .requests()
                .iter()
                .any(|r| r.path_and_query.starts_with("/jobs?")),
            "{name} was swept"
        );
        // Its pools and nodes too, by its own client: node counts first.
        assert!(
            emulator
                .requests()
                .iter()
                .any(|r| r.path_and_query.starts_with("/nodecounts")),
            "{name}'s pools were swept"
        );
        assert!(
            tick.sweep
                .subjects
                .iter()
                .any(|s| s.subject.starts_with(&format!("{name}/"))),
            "{name}'s failures are in the report: {:#?}",
            tick.sweep.subjects
        );
    }
    let stored = backends.stored_files();
    for account in [WELL_KNOWN_ACCOUNT_NAME, SECOND_ACCOUNT_NAME] {
        let cursor = format!("sweep/accounts/{account}/cursor.json");
        assert!(stored.contains(&cursor), "{stored:#?}");
    }
    assert!(
        !stored.contains(&"sweep/cursor.json".to_owned()),
        "{stored:#?}"
    );
    assert!(
        !stored.iter().any(|f| f.ends_with("lease.json")),
        "leases (jobs and pools) given back"
    );
    assert!(
        tick.lines().iter().any(
            |l| l.starts_with(&format!("account {SECOND_ACCOUNT_NAME}: "))
                && l.contains(" pools: ")
        ),
        "{:#?}",
        tick.lines()
    );

    // One account's lease held by another run: that account is skipped, the other is swept.
    let store = artifact_store::open(backends.store.path().to_str().unwrap()).unwrap();
    let lease = serde_json::json!({"expires": "2999-01-01T00:00:00Z"}).to_string();
    store
        .put(
            &ObjectKey::new(format!("sweep/accounts/{SECOND_ACCOUNT_NAME}/lease.json")).unwrap(),
            lease.into(),
            artifact_store::Condition::IfAbsent,
        )
        .await
        .unwrap();
    let tick = triage
        .tick(
            now + Duration::from_secs(600),
            deadline(),
            &SweepOptions::default(),
        )
        .await
        .unwrap();
    let busy: Vec<(&str, bool)> = tick
        .sweep
        .accounts
        .iter()
        .map(|a| (a.account.as_str(), a.skipped_busy))
        .collect();
    assert_eq!(
        busy,
        [
            (WELL_KNOWN_ACCOUNT_NAME, false),
            (SECOND_ACCOUNT_NAME, true)
        ]
    );
    assert!(!tick.sweep.skipped_busy, "one account was swept");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_account_that_fails_does_not_stop_the_other() {
    let backends = Backends::start_two_accounts().await;
    let triage = pipeline(&backends);
    // Every request to the second account fails for good (a role not granted there, say).
    let refused = || {
        vec![batch_emulator::FaultRule::new(
            batch_emulator::Fault::Error {
                status: 403,
                code: "AuthorizationFailure".to_owned(),
                message: "This request is not authorized to perform this operation.".to_owned(),
                retry_after_seconds: None,
            },
        )]
    };
    second(&backends).set_faults(refused());
    let tick = triage
        .tick(
            OffsetDateTime::now_utc(),
            deadline(),
            &SweepOptions::default(),
        )
        .await
        .unwrap();
    let first = &tick.sweep.accounts[0];
    assert!(first.completed && first.error.is_none(), "{first:#?}");
    let other = &tick.sweep.accounts[1];
    assert!(!other.completed && other.error.is_some(), "{other:#?}");
    assert!(
        tick.lines()
            .iter()
            .any(|l| l.starts_with("account devbatch2: sweep failed")),
        "{:#?}",
        tick.lines()
    );
    assert!(
        !tick.sweep.completed,
        "the tick says an account is unfinished"
    );
    let stored = backends.stored_files();
    assert!(
        stored.contains(&format!(
            "sweep/accounts/{WELL_KNOWN_ACCOUNT_NAME}/cursor.json"
        )),
        "{stored:#?}"
    );
    assert!(
        !stored.contains(&format!("sweep/accounts/{SECOND_ACCOUNT_NAME}/cursor.json")),
        "the failed account's cursor did not move: {stored:#?}"
    );
    // Every account failing is the tick failing, so the platform retries it.
    backends.emulator.set_faults(refused());
    let error = triage
        .tick(
            OffsetDateTime::now_utc(),
            deadline(),
            &SweepOptions::default(),
        )
        .await
        .expect_err("no account could be swept");
    assert!(error.to_string().contains("sweep"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_whose_group_by_drops_the_account_groups_the_accounts_together() {
    let backends = Backends::start_two_accounts().await;
    std::fs::write(
        backends.policy.path(),
        test_kit::HOOK_POLICY.replace(
            "[grouping]\n",
            "[grouping]\ngroup_by = [\"job\", \"class\", \"fingerprint\"]\n",
        ),
    )
    .unwrap();
    let triage = pipeline(&backends);
    let report = triage
        .handle_payload(
            three_accounts_batch().as_bytes(),
            OffsetDateTime::now_utc(),
            deadline(),
        )
        .await
        .unwrap();
    let done = report
        .subjects
        .iter()
        .filter(|s| s.outcome == Outcome::Done)
        .count();
    assert_eq!(done, 2, "{report:#?}");
    assert_eq!(
        backends.hook.alerts().len(),
        1,
        "the same failure in two accounts is one group: {:#?}",
        backends.hook.alerts()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn escalation_by_share_reads_each_job_from_its_own_account() {
    let backends = Backends::start_two_accounts().await;
    std::fs::write(
        backends.policy.path(),
        test_kit::HOOK_POLICY.replace(
            "receivers = [\"hook\"]\n",
            "receivers = [\"hook\"]\nescalate = { min_job_percent = 20 }\n",
        ),
    )
    .unwrap();
    let triage = pipeline(&backends);
    triage
        .handle_payload(
            three_accounts_batch().as_bytes(),
            OffsetDateTime::now_utc(),
            deadline(),
        )
        .await
        .unwrap();
    for (emulator, name) in [
        (&backends.emulator, WELL_KNOWN_ACCOUNT_NAME),
        (second(&backends), SECOND_ACCOUNT_NAME),
    ] {
        let counts = emulator
            .requests()
            .iter()
            .filter(|r| r.path_and_query.starts_with("/jobs/etl/taskcounts"))
            .count();
        assert!(counts >= 1, "{name}'s job etl counted in {name}");
    }
}
