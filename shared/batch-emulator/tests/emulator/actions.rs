//! Job and task actions: state transitions, ETags and `If-Match`.

use batch_emulator::Scenario;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{API, Server, expect_error};

async fn job(server: &Server, id: &str) -> Value {
    let (status, body) = server.get_json(&format!("/jobs/{id}?{API}")).await;
    assert_eq!(status, 200);
    body
}

#[tokio::test]
async fn terminate_goes_through_terminating_with_if_match() {
    let server = Server::builtin().await;
    let before = job(&server, "etl").await;
    let etag = before["eTag"].as_str().unwrap().to_owned();

    let response = server
        .request(
            Method::POST,
            &format!("/jobs/etl/terminate?{API}&force=true"),
        )
        .header("If-Match", "0x8D0000000000000")
        .json(&json!({"terminateReason": "bad inputs"}))
        .send()
        .await;
    expect_error(response, 412, "ConditionNotMet").await;
    assert_eq!(
        server.emulator.requests()[1].if_match.as_deref(),
        Some("0x8D0000000000000")
    );

    let response = server
        .request(
            Method::POST,
            &format!("/jobs/etl/terminate?{API}&force=true"),
        )
        .header("If-Match", &etag)
        .json(&json!({"terminateReason": "bad inputs"}))
        .send()
        .await;
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.headers()["dataserviceid"],
        format!("{}/jobs/etl", server.base).as_str()
    );

    // The first read sees the intermediate state, the next one the end state.
    let terminating = job(&server, "etl").await;
    assert_eq!(terminating["state"], "terminating");
    assert_eq!(terminating["previousState"], "active");
    assert_ne!(terminating["eTag"], etag.as_str());
    let completed = job(&server, "etl").await;
    assert_eq!(completed["state"], "completed");
    assert_eq!(completed["executionInfo"]["terminateReason"], "bad inputs");
    assert!(completed["executionInfo"]["endTime"].is_string());
    assert_ne!(completed["eTag"], terminating["eTag"]);

    // The running task was ended with it; active tasks stay active.
    let (_, running) = server
        .get_json(&format!("/jobs/etl/tasks/running?{API}"))
        .await;
    assert_eq!(running["state"], "completed");
    assert_eq!(running["executionInfo"]["failureInfo"]["code"], "TaskEnded");
    let (_, queued) = server
        .get_json(&format!("/jobs/etl/tasks/queued?{API}"))
        .await;
    assert_eq!(queued["state"], "active");

    expect_error(
        server
            .post(&format!("/jobs/etl/terminate?{API}"), None)
            .await,
        409,
        "JobCompleted",
    )
    .await;
    expect_error(
        server
            .post(&format!("/jobs/nope/terminate?{API}"), None)
            .await,
        404,
        "JobNotFound",
    )
    .await;
}

#[tokio::test]
async fn terminate_without_body_uses_user_terminate() {
    let server = Server::builtin().await;
    assert_eq!(
        server
            .post(&format!("/jobs/quota/terminate?{API}"), None)
            .await
            .status(),
        202
    );
    expect_error(
        server
            .post(&format!("/jobs/quota/terminate?{API}"), None)
            .await,
        409,
        "JobBeingTerminated",
    )
    .await;
    server.emulator.settle();
    let done = server.emulator.job("quota").unwrap();
    assert_eq!(done["state"], "completed");
    assert_eq!(done["executionInfo"]["terminateReason"], "UserTerminate");
}

#[tokio::test]
async fn disable_and_enable() {
    let server = Server::builtin().await;
    let body = expect_error(
        server.post(&format!("/jobs/etl/disable?{API}"), None).await,
        400,
        "MissingRequiredProperty",
    )
    .await;
    assert_eq!(body["values"][0]["value"], "disableTasks");
    expect_error(
        server
            .post(
                &format!("/jobs/etl/disable?{API}"),
                Some(json!({"disableTasks": "later"})),
            )
            .await,
        400,
        "InvalidPropertyValue",
    )
    .await;
    let response = server
        .request(Method::POST, &format!("/jobs/etl/disable?{API}"))
        .json(&json!({"disableTasks": "requeue"}))
        .send()
        .await;
    assert_eq!(response.status(), 202);
    assert_eq!(job(&server, "etl").await["state"], "disabling");
    assert_eq!(job(&server, "etl").await["state"], "disabled");
    let (_, running) = server
        .get_json(&format!("/jobs/etl/tasks/running?{API}"))
        .await;
    assert_eq!(running["state"], "active");
    assert_eq!(running["executionInfo"]["requeueCount"], 1);

    assert_eq!(
        server
            .post(&format!("/jobs/etl/enable?{API}"), None)
            .await
            .status(),
        202
    );
    assert_eq!(job(&server, "etl").await["state"], "enabling");
    let active = job(&server, "etl").await;
    assert_eq!(active["state"], "active");
    assert_eq!(active["previousState"], "enabling");

    expect_error(
        server
            .post(
                &format!("/jobs/nightly/disable?{API}"),
                Some(json!({"disableTasks": "wait"})),
            )
            .await,
        409,
        "JobCompleted",
    )
    .await;
    expect_error(
        server
            .post(&format!("/jobs/nightly/enable?{API}"), None)
            .await,
        409,
        "JobCompleted",
    )
    .await;
    expect_error(
        server
            .request(Method::POST, &format!("/jobs/etl/disable?{API}"))
            .header("content-type", "application/json")
            .raw_body(b"{not json".to_vec())
            .send()
            .await,
        400,
        "InvalidRequestBody",
    )
    .await;
}

#[tokio::test]
async fn transitions_can_wait_for_several_reads() {
    let mut scenario = Scenario::builtin();
    scenario.transitions.after_reads = Some(3);
    let server = Server::start(scenario).await;
    server
        .post(&format!("/jobs/ingest/terminate?{API}"), None)
        .await;
    let mut states = Vec::new();
    for _ in 0..5 {
        let (_, body) = server
            .get_json(&format!("/jobs?{API}&$filter=id%20eq%20%27ingest%27"))
            .await;
        states.push(body["value"][0]["state"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        states,
        [
            "terminating",
            "terminating",
            "terminating",
            "completed",
            "completed"
        ]
    );
}

#[tokio::test]
async fn terminate_task() {
    let server = Server::builtin().await;
    let response = server
        .post(&format!("/jobs/etl/tasks/running/terminate?{API}"), None)
        .await;
    assert_eq!(response.status(), 204);
    assert_eq!(
        response.headers()["dataserviceid"],
        format!("{}/jobs/etl/tasks/running", server.base).as_str()
    );
    let (_, task) = server
        .get_json(&format!("/jobs/etl/tasks/running?{API}"))
        .await;
    assert_eq!(task["state"], "completed");
    assert_eq!(task["executionInfo"]["result"], "failure");
    expect_error(
        server
            .post(&format!("/jobs/etl/tasks/running/terminate?{API}"), None)
            .await,
        409,
        "TaskCompleted",
    )
    .await;
    let (_, counts) = server
        .get_json(&format!("/jobs/etl/taskcounts?{API}"))
        .await;
    assert_eq!(counts["taskCounts"]["running"], 0);
    assert_eq!(counts["taskCounts"]["failed"], 8);
}

#[tokio::test]
async fn transitions_can_be_time_based() {
    // afterMillis 0: due at once, so the first read sees the end state.
    let mut scenario = Scenario::builtin();
    scenario.transitions.after_millis = Some(0);
    let server = Server::start(scenario).await;
    server
        .post(&format!("/jobs/ingest/terminate?{API}"), None)
        .await;
    assert_eq!(job(&server, "ingest").await["state"], "completed");

    // afterMillis of an hour: reads do not complete it, settle() does.
    let mut scenario = Scenario::builtin();
    scenario.transitions.after_millis = Some(3_600_000);
    let server = Server::start(scenario).await;
    server
        .post(
            &format!("/jobs/ingest/disable?{API}"),
            Some(json!({"disableTasks": "terminate"})),
        )
        .await;
    for _ in 0..5 {
        assert_eq!(job(&server, "ingest").await["state"], "disabling");
    }
    server.emulator.settle();
    assert_eq!(job(&server, "ingest").await["state"], "disabled");
}

#[tokio::test]
async fn scenario_features_round_trip() {
    let scenario = Scenario::from_json_str(
        r#"{"account": {"name": "otheracct", "key": "c2VjcmV0LWtleS10aGF0LWlzLW5vdC10aGUtYWNjb3VudC1rZXk="},
            "auth": {"required": false},
            "pools": [{"id": "p", "nodes": [{"id": "n2", "state": "notReady"}]}],
            "jobs": [{"job": {"id": "j", "poolInfo": {"poolId": "p"}},
              "tasks": [{"task": {"id": "t", "state": "completed", "nodeInfo": {"poolId": "p", "nodeId": "n1"},
                                  "executionInfo": {"endTime": "now-1m", "result": "success", "exitCode": 0}},
                         "files": {"bin.dat": {"base64": "AAEC", "fileMode": "0o100644", "contentType": "application/x-test",
                                               "lastModified": "2025-01-02T03:04:05Z"}}}]}]}"#,
    )
    .unwrap();
    let server = Server::start(scenario).await;
    assert_eq!(server.emulator.account_name(), "otheracct");
    // Auth is off, so an unsigned request passes.
    let response = server
        .request(Method::GET, &format!("/jobs/j/tasks/t/files/bin.dat?{API}"))
        .unsigned()
        .send()
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["ocp-batch-file-mode"], "0o100644");
    assert_eq!(response.headers()["content-type"], "application/x-test");
    assert_eq!(
        response.headers()["last-modified"],
        "Thu, 02 Jan 2025 03:04:05 GMT"
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), [0u8, 1, 2]);
    let task = server.emulator.task("j", "t").unwrap();
    assert!(
        task["executionInfo"]["endTime"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(task["nodeInfo"]["taskRootDirectory"], "workitems/j/job-1/t");
    expect_error(
        server
            .request(Method::GET, &format!("/pools/p/nodes/n2/files?{API}"))
            .unsigned()
            .send()
            .await,
        409,
        "NodeNotReady",
    )
    .await;
}
