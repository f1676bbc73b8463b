//! Jobs, tasks, corpus shapes, paging, filters and `$select`.

use std::collections::BTreeSet;

use batch_emulator::Scenario;
use reqwest::Method;
use serde_json::Value;

use crate::common::{API, Server, expect_error, ids};

#[tokio::test]
async fn job_list_has_the_corpus_shape() {
    let server = Server::builtin().await;
    let response = server
        .request(Method::GET, &format!("/jobs?{API}"))
        .header("client-request-id", "0f6c8a4e-1d1f-4a43-9e0b-2f2f2f2f2f2f")
        .header("return-client-request-id", "true")
        .send()
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["client-request-id"],
        "0f6c8a4e-1d1f-4a43-9e0b-2f2f2f2f2f2f"
    );
    assert!(response.headers().contains_key("request-id"));
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["odata.metadata"],
        format!("{}/$metadata#jobs", server.base)
    );
    assert!(body.get("odata.nextLink").is_none());
    let jobs = ids(&body);
    for expected in [
        "etl",
        "ingest",
        "render",
        "nightly",
        "failfast",
        "quota",
        "prep",
        "prep-fail",
        "lost-node",
    ] {
        assert!(
            jobs.contains(&expected.to_owned()),
            "{expected} in {jobs:?}"
        );
    }
    let etl = body["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == "etl")
        .unwrap();
    assert_eq!(etl["url"], format!("{}/jobs/etl", server.base));
    assert!(etl["eTag"].as_str().unwrap().starts_with("0x8D"));
    assert_eq!(etl["state"], "active");
    assert_eq!(etl["poolInfo"]["poolId"], "linux");
    assert_eq!(etl["executionInfo"]["poolId"], "linux");
    assert_eq!(
        etl["constraints"]["maxWallClockTime"],
        "P10675199DT2H48M5.4775807S"
    );
    assert_eq!(etl["onTaskFailure"], "noaction");

    // Without return-client-request-id the id is not echoed.
    let response = server
        .request(Method::GET, &format!("/jobs?{API}"))
        .header("client-request-id", "0f6c8a4e-1d1f-4a43-9e0b-2f2f2f2f2f2f")
        .send()
        .await;
    assert!(!response.headers().contains_key("client-request-id"));
    let log = server.emulator.requests();
    assert_eq!(
        log[1].client_request_id.as_deref(),
        Some("0f6c8a4e-1d1f-4a43-9e0b-2f2f2f2f2f2f")
    );
    assert_eq!(log[1].auth_scheme.as_deref(), Some("SharedKey"));
}

#[tokio::test]
async fn get_job_and_task_with_headers() {
    let server = Server::builtin().await;
    let response = server.get(&format!("/jobs/nightly?{API}")).await;
    assert_eq!(response.status(), 200);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    assert!(response.headers().contains_key("last-modified"));
    let job: Value = response.json().await.unwrap();
    assert_eq!(job["eTag"], etag.as_str());
    assert_eq!(
        job["odata.metadata"],
        format!("{}/$metadata#jobs/@Element", server.base)
    );
    assert_eq!(
        job["executionInfo"]["terminateReason"],
        "MaxWallClockTimeExpiry"
    );

    let (status, task) = server.get_json(&format!("/jobs/etl/tasks/oom?{API}")).await;
    assert_eq!(status, 200);
    assert_eq!(task["url"], format!("{}/jobs/etl/tasks/oom", server.base));
    assert_eq!(task["executionInfo"]["exitCode"], 137);
    assert_eq!(
        task["executionInfo"]["failureInfo"]["code"],
        "FailureExitCode"
    );
    assert_eq!(task["nodeInfo"]["nodeId"], "tvm-01");
    assert_eq!(
        task["nodeInfo"]["nodeUrl"],
        format!("{}/pools/linux/nodes/tvm-01", server.base)
    );
    assert_eq!(
        task["nodeInfo"]["taskRootDirectoryUrl"],
        format!(
            "{}/pools/linux/nodes/tvm-01/files/workitems/etl/job-1/oom",
            server.base
        )
    );
    // Ids are case-insensitive, as in Batch.
    let (status, _) = server.get_json(&format!("/jobs/ETL/tasks/OOM?{API}")).await;
    assert_eq!(status, 200);

    // If-None-Match with the current ETag gives 304.
    let response = server
        .request(Method::GET, &format!("/jobs/nightly?{API}"))
        .header("If-None-Match", &etag)
        .send()
        .await;
    assert_eq!(response.status(), 304);

    expect_error(
        server.get(&format!("/jobs/nope?{API}")).await,
        404,
        "JobNotFound",
    )
    .await;
    expect_error(
        server.get(&format!("/jobs/etl/tasks/nope?{API}")).await,
        404,
        "TaskNotFound",
    )
    .await;
}

#[tokio::test]
async fn api_version_is_required() {
    let server = Server::builtin().await;
    let body = expect_error(
        server.get("/jobs").await,
        400,
        "MissingRequiredQueryParameter",
    )
    .await;
    assert_eq!(body["values"][0]["key"], "QueryParameterName");
    assert_eq!(body["values"][0]["value"], "api-version");
    expect_error(
        server.get("/jobs?api-version=latest").await,
        400,
        "UnsupportedRequestVersion",
    )
    .await;
    for version in ["2024-07-01.20.0", "2025-06-01", "2026-10-01"] {
        assert_eq!(
            server
                .get(&format!("/jobs?api-version={version}"))
                .await
                .status(),
            200
        );
    }
}

fn bulk_scenario(count: u64) -> Scenario {
    Scenario::from_json_str(&format!(
        r#"{{"jobs": [{{"job": {{"id": "bulk", "poolInfo": {{"poolId": "p"}}}},
            "generateTasks": [{{"count": {count}, "idPrefix": "t-", "failEvery": 100,
              "task": {{"state": "completed", "commandLine": "echo hi",
                "executionInfo": {{"exitCode": 0, "result": "success", "endTime": "now-5m"}}}}}}]}}]}}"#
    ))
    .unwrap()
}

#[tokio::test]
async fn pages_through_twelve_thousand_tasks() {
    let server = Server::start(bulk_scenario(12_000)).await;
    let mut next = Some(format!("{}/jobs/bulk/tasks?{API}", server.base));
    let mut seen = BTreeSet::new();
    let mut pages = 0;
    while let Some(link) = next.take() {
        let path = link
            .strip_prefix(&server.base)
            .expect("nextLink is absolute on our base");
        let (status, body) = server.get_json(path).await;
        assert_eq!(status, 200);
        pages += 1;
        let page = ids(&body);
        assert!(page.len() <= 1000);
        for id in page {
            assert!(seen.insert(id), "no task twice");
        }
        if let Some(link) = body["odata.nextLink"].as_str() {
            assert!(link.contains("$skiptoken="), "{link}");
            assert!(link.contains("api-version=2025-06-01"), "{link}");
            next = Some(link.to_owned());
        }
    }
    assert_eq!(pages, 12);
    assert_eq!(seen.len(), 12_000);

    // A filtered sweep in small pages finds exactly the failures.
    let filter = "state%20eq%20%27completed%27%20and%20executionInfo%2Fresult%20eq%20%27failure%27";
    let mut next = Some(format!(
        "/jobs/bulk/tasks?{API}&maxresults=50&$filter={filter}"
    ));
    let mut failed = 0;
    pages = 0;
    while let Some(path) = next.take() {
        let (status, body) = server.get_json(&path).await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        for task in body["value"].as_array().unwrap() {
            assert_eq!(task["executionInfo"]["result"], "failure");
            failed += 1;
        }
        next = body["odata.nextLink"]
            .as_str()
            .map(|l| l.strip_prefix(&server.base).unwrap().to_owned());
    }
    assert_eq!(failed, 120);
    assert_eq!(pages, 3);

    let (_, counts) = server
        .get_json(&format!("/jobs/bulk/taskcounts?{API}"))
        .await;
    assert_eq!(counts["taskCounts"]["completed"], 12_000);
    assert_eq!(counts["taskCounts"]["failed"], 120);
    assert_eq!(counts["taskCounts"]["succeeded"], 11_880);
    assert_eq!(counts["taskSlotCounts"]["completed"], 12_000);

    for bad in ["0", "1001", "ten"] {
        expect_error(
            server
                .get(&format!("/jobs/bulk/tasks?{API}&maxresults={bad}"))
                .await,
            400,
            "InvalidQueryParameterValue",
        )
        .await;
    }
    expect_error(
        server
            .get(&format!("/jobs/bulk/tasks?{API}&$skiptoken=%25%25"))
            .await,
        400,
        "InvalidQueryParameterValue",
    )
    .await;
}

#[tokio::test]
async fn filters_the_sweep_uses() {
    let server = Server::builtin().await;
    let get_ids = |filter: &str| {
        let path = format!(
            "/jobs/etl/tasks?{API}&$filter={}",
            percent_encoding::utf8_percent_encode(filter, percent_encoding::NON_ALPHANUMERIC)
        );
        let server = &server;
        async move {
            let (status, body) = server.get_json(&path).await;
            assert_eq!(status, 200, "{body}");
            ids(&body)
        }
    };
    assert_eq!(get_ids("executionInfo/exitCode eq 137").await, ["oom"]);
    assert_eq!(get_ids("executionInfo/exitCode eq -9").await, ["sigkill"]);
    let failures = get_ids("state eq 'completed' and executionInfo/result eq 'failure'").await;
    for id in [
        "oom", "sigkill", "py-error", "no-shell", "exit-127", "big-log", "old-fail",
    ] {
        assert!(failures.contains(&id.to_owned()), "{id} in {failures:?}");
    }
    assert!(!failures.contains(&"flaky".to_owned()));
    // Recent failures only: old-fail ended 9 days ago.
    let since = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let since = since
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let recent = get_ids(&format!(
        "executionInfo/result eq 'failure' and executionInfo/endTime ge datetime'{since}'"
    ))
    .await;
    assert!(recent.contains(&"oom".to_owned()));
    assert!(!recent.contains(&"old-fail".to_owned()));
    let plain = get_ids(&format!(
        "stateTransitionTime gt '{since}' and state eq 'active'"
    ))
    .await;
    assert!(plain.contains(&"requeued".to_owned()), "{plain:?}");

    let (_, jobs) = server
        .get_json(&format!("/jobs?{API}&$filter=state%20eq%20%27completed%27"))
        .await;
    assert_eq!(ids(&jobs), ["failfast", "nightly"]);

    let body = expect_error(
        server
            .get(&format!(
                "/jobs/etl/tasks?{API}&$filter=executionInfo%2Fbogus%20eq%201"
            ))
            .await,
        400,
        "InvalidQueryParameterValue",
    )
    .await;
    assert_eq!(body["values"][0]["value"], "$filter");
}

#[tokio::test]
async fn select_trims_objects() {
    let server = Server::builtin().await;
    let (_, body) = server
        .get_json(&format!(
            "/jobs/etl/tasks?{API}&$select=id,state,executionInfo/exitCode"
        ))
        .await;
    for task in body["value"].as_array().unwrap() {
        let keys: Vec<&String> = task.as_object().unwrap().keys().collect();
        assert!(keys.len() <= 3, "{keys:?}");
        assert!(task.get("url").is_none());
        if let Some(info) = task.get("executionInfo") {
            assert!(info.get("result").is_none());
        }
    }
    let (_, task) = server
        .get_json(&format!(
            "/jobs/etl/tasks/oom?{API}&$select=id,executionInfo"
        ))
        .await;
    assert_eq!(task["executionInfo"]["exitCode"], 137);
    assert!(task.get("commandLine").is_none());
}

#[tokio::test]
async fn task_counts_are_derived() {
    let server = Server::builtin().await;
    let (status, counts) = server
        .get_json(&format!("/jobs/etl/taskcounts?{API}"))
        .await;
    assert_eq!(status, 200);
    let c = &counts["taskCounts"];
    assert_eq!(c["active"], 2);
    assert_eq!(c["running"], 1);
    assert_eq!(c["completed"], 10);
    assert_eq!(c["failed"], 7);
    assert_eq!(c["succeeded"], 3);
}

#[tokio::test]
async fn prep_release_status() {
    let server = Server::builtin().await;
    let (status, body) = server
        .get_json(&format!(
            "/jobs/prep/jobpreparationandreleasetaskstatus?{API}"
        ))
        .await;
    assert_eq!(status, 200);
    let rows = body["value"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0]["nodeUrl"],
        format!("{}/pools/linux/nodes/tvm-01", server.base)
    );
    let prep = &rows[1]["jobPreparationTaskExecutionInfo"];
    assert_eq!(
        prep["taskRootDirectory"],
        "workitems/prep/job-1/jobpreparation"
    );
    assert_eq!(rows[1]["jobReleaseTaskExecutionInfo"]["result"], "failure");

    let filter = "jobPreparationTaskExecutionInfo%2Fresult%20eq%20%27failure%27";
    let (_, body) = server
        .get_json(&format!(
            "/jobs/prep-fail/jobpreparationandreleasetaskstatus?{API}&$filter={filter}"
        ))
        .await;
    let rows = body["value"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    let root_url = rows[0]["jobPreparationTaskExecutionInfo"]["taskRootDirectoryUrl"]
        .as_str()
        .unwrap();
    let path = root_url.strip_prefix(&server.base).unwrap();
    let response = server.get(&format!("{path}/stderr.txt?{API}")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        "E: Unable to locate package libgdal-dev\n"
    );

    expect_error(
        server
            .get(&format!(
                "/jobs/etl/jobpreparationandreleasetaskstatus?{API}"
            ))
            .await,
        409,
        "JobPreparationTaskNotSpecified",
    )
    .await;
}

#[tokio::test]
async fn scenario_files_load_with_clear_errors() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/builtin.json");
    let scenario = Scenario::from_json_file(path).unwrap();
    assert!(scenario.jobs.iter().any(|j| j.job["id"] == "lost-node"));
    let error = Scenario::from_json_file("/nonexistent/scenario.json").unwrap_err();
    assert!(error.to_string().contains("/nonexistent/scenario.json"));
    let error = Scenario::from_json_str(r#"{"jobs": [{"job": {"id": 3}}]}"#).unwrap_err();
    assert!(error.to_string().contains("id"), "{error}");
}
