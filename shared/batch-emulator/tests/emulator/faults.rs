//! Injected faults, in-process and through the admin API.

use batch_emulator::{Fault, FaultRule, Scenario};
use serde_json::{Value, json};

use crate::common::{API, Server, expect_error};

#[tokio::test]
async fn throttling_then_success_is_exact() {
    let server = Server::builtin().await;
    server.emulator.set_faults(vec![
        FaultRule::new(Fault::Throttle {
            retry_after_seconds: 2,
        })
        .method("GET")
        .path_prefix("/jobs/etl/tasks")
        .times(3),
    ]);
    for _ in 0..3 {
        let response = server.get(&format!("/jobs/etl/tasks?{API}")).await;
        assert_eq!(response.headers()["retry-after"], "2");
        let body = expect_error(response, 429, "TooManyRequests").await;
        assert!(
            body["message"]["value"]
                .as_str()
                .unwrap()
                .starts_with("Request failed as server encountered too many requests.")
        );
    }
    assert_eq!(
        server.get(&format!("/jobs/etl/tasks?{API}")).await.status(),
        200
    );
    // Other paths were never affected.
    assert_eq!(server.get(&format!("/jobs/etl?{API}")).await.status(), 200);
    let status = &server.emulator.faults()[0];
    assert_eq!((status.matched, status.fired), (4, 3));
    let faulted: Vec<_> = server
        .emulator
        .requests()
        .iter()
        .map(|r| r.fault.clone())
        .collect();
    assert_eq!(
        faulted
            .iter()
            .filter(|f| f.as_deref() == Some("throttle"))
            .count(),
        3
    );
}

#[tokio::test]
async fn busy_timeout_skip_and_rate() {
    let server = Server::builtin().await;
    server.emulator.set_faults(vec![
        FaultRule::new(Fault::ServerBusy {
            retry_after_seconds: Some(5),
        })
        .path_prefix("/jobs/render")
        .skip(1)
        .times(1),
        FaultRule::new(Fault::OperationTimedOut)
            .path_prefix("/jobs/quota")
            .rate(0.5),
    ]);
    let render = format!("/jobs/render?{API}");
    assert_eq!(server.get(&render).await.status(), 200);
    let busy = server.get(&render).await;
    assert_eq!(busy.headers()["retry-after"], "5");
    expect_error(busy, 503, "ServerBusy").await;
    assert_eq!(server.get(&render).await.status(), 200);

    let quota = format!("/jobs/quota?{API}");
    let statuses = [
        server.get(&quota).await.status().as_u16(),
        server.get(&quota).await.status().as_u16(),
        server.get(&quota).await.status().as_u16(),
        server.get(&quota).await.status().as_u16(),
    ];
    assert_eq!(statuses, [200, 500, 200, 500]);
}

#[tokio::test]
async fn dropped_connection_mid_download() {
    let server = Server::builtin().await;
    server.emulator.add_fault(
        FaultRule::new(Fault::DropConnection { after_bytes: 1000 })
            .path_prefix("/jobs/etl/tasks/big-log/files/stdout.txt")
            .times(1),
    );
    let mut response = server
        .get(&format!("/jobs/etl/tasks/big-log/files/stdout.txt?{API}"))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], "2147483648");
    let mut received = 0usize;
    let outcome = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received += chunk.len(),
            Ok(None) => break Ok(()),
            Err(error) => break Err(error),
        }
    };
    assert!(outcome.is_err(), "the body must fail, not end cleanly");
    assert_eq!(received, 1000);
    assert_eq!(
        server.emulator.requests()[0].fault.as_deref(),
        Some("dropConnection")
    );
    // The next download is whole again (a small ranged one, to stay fast).
    let response = server
        .request(
            reqwest::Method::GET,
            &format!("/jobs/etl/tasks/big-log/files/stdout.txt?{API}"),
        )
        .header("ocp-range", "bytes=0-4095")
        .send()
        .await;
    assert_eq!(response.bytes().await.unwrap().len(), 4096);
}

#[tokio::test]
async fn node_and_retention_faults_and_delay() {
    let server = Server::builtin().await;
    server.emulator.set_faults(vec![
        FaultRule::new(Fault::NodeNotFound)
            .path_contains("/files/")
            .times(1),
        FaultRule::new(Fault::NodeNotReady)
            .path_contains("/files/")
            .times(1),
        FaultRule::new(Fault::TaskFilesUnavailable)
            .path_contains("/files/")
            .times(1),
        FaultRule::new(Fault::OperationInvalidForCurrentState)
            .path_contains("/files/")
            .times(1),
        FaultRule::new(Fault::Delay { millis: 1 }).path_prefix("/jobs/prep"),
    ]);
    let path = format!("/jobs/etl/tasks/oom/files/stdout.txt?{API}");
    expect_error(server.get(&path).await, 404, "NodeNotFound").await;
    expect_error(server.get(&path).await, 409, "NodeNotReady").await;
    expect_error(server.get(&path).await, 409, "TaskFilesUnavailable").await;
    expect_error(
        server.get(&path).await,
        409,
        "OperationInvalidForCurrentState",
    )
    .await;
    assert_eq!(server.get(&path).await.status(), 200);
    assert_eq!(server.get(&format!("/jobs/prep?{API}")).await.status(), 200);
    assert_eq!(
        server.emulator.requests().last().unwrap().fault.as_deref(),
        Some("delay")
    );
}

#[tokio::test]
async fn scenario_faults_and_the_admin_api() {
    let mut scenario = Scenario::builtin();
    scenario.faults = vec![
        serde_json::from_value(json!({"pathPrefix": "/jobs", "times": 1,
            "fault": {"kind": "error", "status": 409, "code": "JobBeingDeleted", "message": "Being deleted."}}))
        .unwrap(),
    ];
    let server = Server::start(scenario).await;
    expect_error(
        server.get(&format!("/jobs?{API}")).await,
        409,
        "JobBeingDeleted",
    )
    .await;
    assert_eq!(server.get(&format!("/jobs?{API}")).await.status(), 200);

    let admin = |path: &str| format!("{}/_emulator/{path}", server.base);
    let rules = json!([{"method": "GET", "pathPrefix": "/jobs/etl", "times": 2,
                        "fault": {"kind": "serverBusy", "retryAfterSeconds": 1}}]);
    let response = server
        .client
        .put(admin("faults"))
        .json(&rules)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    expect_error(
        server.get(&format!("/jobs/etl?{API}")).await,
        503,
        "ServerBusy",
    )
    .await;
    let faults: Value = server
        .client
        .get(admin("faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(faults[0]["fired"], 1);
    assert_eq!(faults[0]["fault"]["kind"], "serverBusy");

    let bad = server
        .client
        .post(admin("faults"))
        .json(&json!({"fault": {"kind": "throttle"}, "rate": 7.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let response = server.client.delete(admin("faults")).send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(server.get(&format!("/jobs/etl?{API}")).await.status(), 200);

    let requests: Value = server
        .client
        .get(admin("requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let last = requests.as_array().unwrap().last().unwrap();
    assert_eq!(last["pathAndQuery"], format!("/jobs/etl?{API}"));
    assert_eq!(last["status"], 200);
    assert!(!requests.to_string().contains("SharedKey devbatch1:"));

    let removed = server
        .client
        .post(admin("nodes/linux/tvm-01/remove"))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    expect_error(
        server
            .get(&format!("/jobs/etl/tasks/oom/files/stdout.txt?{API}"))
            .await,
        404,
        "NodeNotFound",
    )
    .await;
    let health: Value = server
        .client
        .get(admin("health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["account"], "devbatch1");
}
