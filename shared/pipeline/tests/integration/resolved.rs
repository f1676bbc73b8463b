//! Resolved messages through the pipeline on the emulator: a stuck job that runs again and a
//! job whose failed task was rerun and succeeded are each resolved once, by one of two
//! instances sharing a store; a job that completed with a failed task never is; a receiver
//! without `send_resolved` hears nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use artifact_store::ArtifactStore;
use batch_emulator::{Emulator, Scenario};
use diagnosis::policy::Policy;
use pipeline::sweep::SweepOptions;
use pipeline::triage::Triage;
use preserve::PreserveOptions;
use serde_json::{Value, json};
use test_kit::{Recorder, serve_emulator};
use time::OffsetDateTime;

use crate::triage::deadline;

const POLICY: &str = r#"
[grouping]
group_by = ["account", "job", "class"]
group_wait = "0s"

[[receivers]]
name = "oncall"
kind = "webhook"
url_env = "ONCALL_URL"
secret_env = "HOOK_SECRET"
send_resolved = true

[[receivers]]
name = "quiet"
kind = "webhook"
url_env = "QUIET_URL"
secret_env = "HOOK_SECRET"

[[rules]]
name = "everything"
receivers = ["oncall", "quiet"]
"#;

fn task(id: &str, state: &str, result: Option<&str>) -> Value {
    let mut task = json!({"task": {"id": id, "state": state, "creationTime": "now-5h",
        "commandLine": "/bin/bash -c 'python3 step.py'",
        "stateTransitionTime": "now-10m"}});
    match result {
        Some(result) => {
            task["task"]["executionInfo"] = json!({"retryCount": 0, "requeueCount": 0,
                "startTime": "now-20m", "endTime": "now-10m", "result": result,
                "exitCode": if result == "success" { 0 } else { 1 }});
            task["task"]["nodeInfo"] = json!({"poolId": "linux", "nodeId": "tvm-01"});
        }
        None if state == "running" => {
            task["task"]["executionInfo"] =
                json!({"retryCount": 0, "requeueCount": 0, "startTime": "now-1m"});
            task["task"]["nodeInfo"] = json!({"poolId": "linux", "nodeId": "tvm-01"});
        }
        None => {}
    }
    task
}

fn job(id: &str, state: &str, tasks: Vec<Value>) -> Value {
    let mut job = json!({"job": {"id": id, "state": state, "poolInfo": {"poolId": "linux"},
        "creationTime": "now-5h", "stateTransitionTime": "now-5h",
        "executionInfo": {"startTime": "now-5h", "poolId": "linux"}}, "tasks": tasks});
    if state == "completed" {
        job["job"]["executionInfo"]["endTime"] = json!("now-1m");
        job["job"]["stateTransitionTime"] = json!("now-1m");
    }
    job
}

/// Before: a stuck job, a job with a failed task, a job with a failed task. After: the stuck
/// job runs a task; the second job completed after its failed task was rerun and succeeded;
/// the third completed with its task still failed.
fn scenario(after: bool) -> Scenario {
    let jobs = if after {
        vec![
            job(
                "stuck",
                "active",
                vec![task("s1", "running", None), task("s2", "active", None)],
            ),
            job(
                "flaky",
                "completed",
                vec![
                    task("f1", "completed", Some("success")),
                    task("f2", "completed", Some("success")),
                ],
            ),
            job(
                "plain",
                "completed",
                vec![
                    task("p1", "completed", Some("failure")),
                    task("p2", "completed", Some("success")),
                ],
            ),
        ]
    } else {
        vec![
            job(
                "stuck",
                "active",
                vec![task("s1", "active", None), task("s2", "active", None)],
            ),
            job(
                "flaky",
                "active",
                vec![
                    task("f1", "completed", Some("failure")),
                    task("f2", "completed", Some("success")),
                ],
            ),
            job(
                "plain",
                "active",
                vec![
                    task("p1", "completed", Some("failure")),
                    task("p2", "running", None),
                ],
            ),
        ]
    };
    let text = json!({"pools": [{"id": "linux", "nodes": [{"id": "tvm-01"}]}], "jobs": jobs});
    Scenario::from_json_str(&text.to_string()).unwrap()
}

/// One instance: the pipeline over `batch_url`, on `store`, alerting the two recorders.
fn instance(
    batch_url: &str,
    store: &Arc<dyn ArtifactStore>,
    oncall: &Recorder,
    quiet: &Recorder,
) -> Triage {
    let policy = Policy::parse(POLICY).unwrap();
    let env: BTreeMap<&str, String> = [
        ("ONCALL_URL", oncall.url.clone()),
        ("QUIET_URL", quiet.url.clone()),
        ("HOOK_SECRET", "test-secret".to_owned()),
    ]
    .into();
    crate::support::single_account(
        batch_url,
        store.clone(),
        policy,
        &env,
        PreserveOptions::default(),
    )
}

/// `(job, state)` of every alert a recorder got.
fn seen(recorder: &Recorder) -> Vec<(String, String)> {
    let mut seen: Vec<(String, String)> = recorder
        .alerts()
        .iter()
        .map(|a| {
            (
                a["diagnosis"]["subject"]["jobId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                a["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    seen.sort();
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn ended_failure_states_are_resolved_once_and_failed_tasks_never() {
    let (oncall, quiet) = (Recorder::start().await, Recorder::start().await);
    let dir = tempfile::tempdir().unwrap();
    let store = artifact_store::open(dir.path().to_str().unwrap()).unwrap();
    let options = SweepOptions {
        first_lookback: Duration::from_secs(3 * 3600),
        stuck_after: Some(Duration::from_secs(3600)),
        ..SweepOptions::default()
    };
    let now = OffsetDateTime::now_utc();

    // Before: every failure is alerted, and nothing has ended yet.
    let before = serve_emulator(Emulator::new(scenario(false)).unwrap()).await;
    let first = instance(&before, &store, &oncall, &quiet)
        .tick(now, deadline(), &options)
        .await
        .unwrap();
    assert!(first.resolved.is_empty(), "{:?}", first.resolved);
    let firing = vec![
        ("flaky".to_owned(), "firing".to_owned()),
        ("plain".to_owned(), "firing".to_owned()),
        ("stuck".to_owned(), "firing".to_owned()),
    ];
    assert_eq!(seen(&oncall), firing);
    assert_eq!(seen(&quiet), firing);

    // After: two instances on one store look at once; each ended group is resolved once.
    let after = serve_emulator(Emulator::new(scenario(true)).unwrap()).await;
    let a = instance(&after, &store, &oncall, &quiet);
    let b = instance(&after, &store, &oncall, &quiet);
    let later = now + time::Duration::minutes(5);
    let (from_a, from_b) = tokio::join!(
        a.resolve_groups(later, deadline()),
        b.resolve_groups(later, deadline())
    );
    let mut told = [from_a.unwrap(), from_b.unwrap()].concat();
    told.sort();
    assert_eq!(told, ["oncall", "oncall"]);
    let resolved: Vec<Value> = oncall
        .alerts()
        .into_iter()
        .filter(|a| a["state"] == "resolved")
        .collect();
    let mut jobs: Vec<&str> = resolved
        .iter()
        .map(|a| a["diagnosis"]["subject"]["jobId"].as_str().unwrap())
        .collect();
    jobs.sort();
    // The job that completed with a failed task is never resolved: its task stays failed.
    assert_eq!(jobs, ["flaky", "stuck"]);
    for alert in &resolved {
        assert_eq!(alert["status"], "resolved");
        let summary = alert["diagnosis"]["summary"].as_str().unwrap();
        assert!(summary.starts_with("Resolved: "), "{summary}");
        // The same group as its first notice, with a new id.
        let job = alert["diagnosis"]["subject"]["jobId"].as_str().unwrap();
        let first = oncall
            .alerts()
            .into_iter()
            .find(|a| a["state"] == "firing" && a["diagnosis"]["subject"]["jobId"] == job)
            .unwrap();
        assert_eq!(alert["group"]["key"], first["group"]["key"]);
        assert_ne!(alert["id"], first["id"]);
    }
    assert_eq!(
        seen(&quiet),
        firing,
        "no send_resolved, no resolved message"
    );

    // Later ticks send nothing more.
    let again = a
        .tick(later + time::Duration::minutes(5), deadline(), &options)
        .await
        .unwrap();
    assert!(again.resolved.is_empty(), "{:?}", again.resolved);
    assert_eq!(oncall.alerts().len(), 5);
}
