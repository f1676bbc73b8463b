//! Pools, nodes, pool node counts, Remove Nodes, Reimage Node and `uploadbatchservicelogs`:
//! shapes, filters, paging, state machines, errors, faults and auth on the new routes.

use std::time::Duration;

use batch_emulator::{Fault, FaultRule, NodeActionKind, Scenario};
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{API, Server, expect_error};

const DISK_FULL: &str = "tvm-1695681911_1-20261204t080000z";
const LOST: &str = "tvm-1695681911_2-20261204t080000z";
const HEALTHY: &str = "tvm-1695681911_3-20261204t080000z";
const START_NO_WAIT: &str = "tvm-1695681911_4-20261204t080000z";
const START_FAILED: &str = "tvm-1695681911_5-20261204t080000z";

/// The sweep's filter for nodes in trouble (docs/batch-facts.md).
const TROUBLE: &str =
    "state eq 'unusable' or state eq 'starttaskfailed' or startTaskInfo/result eq 'failure'";

fn q(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn ids(body: &Value) -> Vec<String> {
    body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn pools_carry_resize_autoscale_and_delete_state() {
    let server = Server::builtin().await;
    let (status, body) = server.get_json(&format!("/pools?{API}")).await;
    assert_eq!(status, 200);
    assert!(
        body["odata.metadata"]
            .as_str()
            .unwrap()
            .ends_with("$metadata#pools")
    );
    let listed = ids(&body);
    for id in [
        "linux",
        "quota-pool",
        "gpu-pool",
        "scaler",
        "old-pool",
        "workers",
    ] {
        assert!(listed.iter().any(|l| l == id), "{id} in {listed:?}");
    }

    let response = server.get(&format!("/pools/quota-pool?{API}")).await;
    assert!(response.headers().contains_key("etag"));
    let quota: Value = response.json().await.unwrap();
    assert_eq!(quota["allocationState"], "steady");
    assert_eq!(quota["currentDedicatedNodes"], 0);
    assert_eq!(quota["targetDedicatedNodes"], 8);
    assert_eq!(quota["resizeErrors"][0]["code"], "AccountCoreQuotaReached");
    assert!(quota["resizeErrors"][0]["values"][0]["name"].is_string());
    assert!(
        quota["url"]
            .as_str()
            .unwrap()
            .ends_with("/pools/quota-pool")
    );

    let (_, gpu) = server.get_json(&format!("/pools/GPU-pool?{API}")).await;
    let values = gpu["resizeErrors"][0]["values"].as_array().unwrap();
    let named = |name: &str| values.iter().find(|v| v["name"] == name).unwrap()["value"].clone();
    assert_eq!(gpu["resizeErrors"][0]["code"], "AllocationFailed");
    assert!(
        named("Reason")
            .as_str()
            .unwrap()
            .contains("insufficient capacity")
    );
    let provider: Value =
        serde_json::from_str(named("Provider Error Json").as_str().unwrap()).unwrap();
    assert_eq!(provider["error"]["code"], "AllocationFailed");
    assert_eq!(named("Provider Error Json Truncated"), "False");

    let (_, scaler) = server.get_json(&format!("/pools/scaler?{API}")).await;
    assert_eq!(scaler["enableAutoScale"], true);
    assert_eq!(
        scaler["autoScaleRun"]["error"]["code"],
        "InsufficientSampleData"
    );
    assert!(scaler["autoScaleRun"]["error"]["values"][0]["value"].is_string());

    let (_, old) = server
        .get_json(&format!(
            "/pools/old-pool?{API}&$select=id,state,stateTransitionTime"
        ))
        .await;
    assert_eq!(old["state"], "deleting");
    assert!(old.get("vmSize").is_none(), "$select trims: {old}");

    let (status, deleting) = server
        .get_json(&format!(
            "/pools?{API}&$filter={}",
            q("state eq 'deleting'")
        ))
        .await;
    assert_eq!((status, ids(&deleting)), (200, vec!["old-pool".to_owned()]));
    expect_error(
        server.get(&format!("/pools/nope?{API}")).await,
        404,
        "PoolNotFound",
    )
    .await;
}

#[tokio::test]
async fn nodes_in_trouble_are_one_filtered_list() {
    let server = Server::builtin().await;
    let path = format!(
        "/pools/workers/nodes?{API}&$filter={}&$select={}",
        q(TROUBLE),
        q("id,state,errors,startTaskInfo,lastBootTime")
    );
    let (status, body) = server.get_json(&path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), [DISK_FULL, LOST, START_NO_WAIT, START_FAILED]);
    let nodes = body["value"].as_array().unwrap();
    let disk = &nodes[0];
    assert_eq!(disk["state"], "unusable");
    assert_eq!(disk["errors"][0]["code"], "DiskFull");
    assert_eq!(disk["errors"][0]["errorDetails"][0]["name"], "Message");
    assert!(disk.get("vmSize").is_none(), "selected only: {disk}");
    // Batch lost contact: no errors and no boot time.
    assert!(nodes[1].get("errors").is_none() && nodes[1].get("lastBootTime").is_none());
    // waitForSuccess false: idle, but the start task failed.
    assert_eq!(nodes[2]["state"], "idle");
    assert_eq!(nodes[2]["startTaskInfo"]["result"], "failure");
    assert_eq!(nodes[3]["state"], "starttaskfailed");

    // Paged like every list: two, then the rest via odata.nextLink.
    let (_, first) = server
        .get_json(&format!("/pools/workers/nodes?{API}&maxresults=2"))
        .await;
    assert_eq!(ids(&first).len(), 2);
    let mut all = ids(&first);
    let mut next = first["odata.nextLink"].as_str().map(str::to_owned);
    while let Some(link) = next {
        let (_, page) = server
            .get_json(link.strip_prefix(&server.base).unwrap())
            .await;
        assert!(ids(&page).len() <= 2);
        all.extend(ids(&page));
        next = page["odata.nextLink"].as_str().map(str::to_owned);
    }
    assert_eq!(all, [DISK_FULL, LOST, HEALTHY, START_NO_WAIT, START_FAILED]);

    // Node errors and isDedicated cannot be filtered on.
    for bad in ["errors/code eq 'DiskFull'", "isDedicated eq true"] {
        expect_error(
            server
                .get(&format!("/pools/workers/nodes?{API}&$filter={}", q(bad)))
                .await,
            400,
            "InvalidQueryParameterValue",
        )
        .await;
    }
}

#[tokio::test]
async fn get_node_and_the_errors_of_gone_things() {
    let server = Server::builtin().await;
    let (status, node) = server
        .get_json(&format!("/pools/workers/nodes/{HEALTHY}?{API}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(node["state"], "running");
    assert_eq!(node["vmSize"], "standard_d4s_v5", "from the pool");
    assert_eq!(node["startTask"]["waitForSuccess"], true, "from the pool");
    assert_eq!(node["startTaskInfo"]["result"], "success");
    assert_eq!(node["isDedicated"], true);
    assert!(
        node["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/pools/workers/nodes/{HEALTHY}"))
    );
    // A node removed from the pool, an unknown node, an unknown pool.
    expect_error(
        server
            .get(&format!("/pools/linux/nodes/tvm-04?{API}"))
            .await,
        404,
        "NodeNotFound",
    )
    .await;
    expect_error(
        server.get(&format!("/pools/linux/nodes/nope?{API}")).await,
        404,
        "NodeNotFound",
    )
    .await;
    expect_error(
        server.get(&format!("/pools/nope/nodes?{API}")).await,
        404,
        "PoolNotFound",
    )
    .await;
    let (_, linux) = server.get_json(&format!("/pools/linux/nodes?{API}")).await;
    assert!(!ids(&linux).contains(&"tvm-04".to_owned()));
}

#[tokio::test]
async fn node_counts_are_per_pool_and_paged_by_ten() {
    let server = Server::builtin().await;
    let (status, body) = server
        .get_json(&format!(
            "/nodecounts?{API}&$filter={}",
            q("poolId eq 'workers'")
        ))
        .await;
    assert_eq!(status, 200);
    assert!(
        body["odata.metadata"]
            .as_str()
            .unwrap()
            .ends_with("$metadata#poolnodecounts")
    );
    let row = &body["value"][0];
    assert_eq!(row["poolId"], "workers");
    let dedicated = &row["dedicated"];
    assert_eq!(dedicated["unusable"], 2);
    assert_eq!(dedicated["startTaskFailed"], 1);
    assert_eq!(
        (dedicated["idle"].clone(), dedicated["running"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(dedicated["total"], 5);
    assert_eq!(row["lowPriority"]["total"], 0);
    for key in [
        "leavingPool",
        "waitingForStartTask",
        "upgradingOS",
        "preempted",
    ] {
        assert_eq!(dedicated[key], 0, "{key}");
    }

    let (_, all) = server.get_json(&format!("/nodecounts?{API}")).await;
    let pools = ids_of_counts(&all);
    assert!(pools.len() >= 7 && pools.len() <= 10, "{pools:?}");
    let (_, first) = server
        .get_json(&format!("/nodecounts?{API}&maxresults=3"))
        .await;
    assert_eq!(ids_of_counts(&first).len(), 3);
    assert!(first["odata.nextLink"].is_string());
    expect_error(
        server
            .get(&format!("/nodecounts?{API}&maxresults=11"))
            .await,
        400,
        "InvalidQueryParameterValue",
    )
    .await;
    expect_error(
        server
            .get(&format!(
                "/nodecounts?{API}&$filter={}",
                q("state eq 'idle'")
            ))
            .await,
        400,
        "InvalidQueryParameterValue",
    )
    .await;
}

fn ids_of_counts(body: &Value) -> Vec<String> {
    body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["poolId"].as_str().unwrap().to_owned())
        .collect()
}

/// A pool whose node runs a task, so removal and reimage show what happens to it.
fn busy_scenario() -> Scenario {
    Scenario::from_json_str(
        r#"{"pools": [{"id": "p", "nodes": [{"id": "n1", "node": {"state": "running"}},
                                            {"id": "n2", "node": {"state": "unusable", "errors": [{"code": "DiskFull", "message": "full"}]},
                                             "files": {"startup/stdout.txt": "x"}},
                                            {"id": "n3", "node": {"isDedicated": false}}]}],
            "jobs": [{"job": {"id": "j", "poolInfo": {"poolId": "p"}},
                      "tasks": [{"task": {"id": "t", "state": "running", "nodeInfo": {"poolId": "p", "nodeId": "n1"}}},
                                {"task": {"id": "u", "state": "running", "nodeInfo": {"poolId": "p", "nodeId": "n2"}}}]}]}"#,
    )
    .unwrap()
}

#[tokio::test]
async fn remove_nodes_requeues_leaves_and_is_recorded() {
    let server = Server::start(busy_scenario()).await;
    let response = server
        .post(
            &format!("/pools/p/removenodes?{API}"),
            Some(json!({"nodeList": ["n1", "N3"], "nodeDeallocationOption": "Requeue"})),
        )
        .await;
    assert_eq!(response.status(), 202);
    assert!(
        response.headers()["dataserviceid"]
            .to_str()
            .unwrap()
            .ends_with("/pools/p")
    );
    // Its task went back to the queue at once.
    let task = server.emulator.task("j", "t").unwrap();
    assert_eq!(task["state"], "active");
    assert_eq!(task["executionInfo"]["requeueCount"], 1);
    // Leaving, while the pool resizes; a second removal must wait for steady.
    let (_, node) = server.get_json(&format!("/pools/p/nodes/n1?{API}")).await;
    assert_eq!(node["state"], "leavingpool");
    expect_error(
        server
            .post(
                &format!("/pools/p/removenodes?{API}"),
                Some(json!({"nodeList": ["n2"]})),
            )
            .await,
        409,
        "PoolBeingResized",
    )
    .await;
    let (_, pool) = server.get_json(&format!("/pools/p?{API}")).await;
    assert_eq!(
        pool["allocationState"], "steady",
        "the read completes the removal"
    );
    assert_eq!(pool["currentDedicatedNodes"], 1);
    assert_eq!(pool["targetDedicatedNodes"], 1);
    assert_eq!(pool["currentLowPriorityNodes"], 0);
    expect_error(
        server.get(&format!("/pools/p/nodes/n1?{API}")).await,
        404,
        "NodeNotFound",
    )
    .await;
    // Removing a node that is gone: 404, nothing done.
    expect_error(
        server
            .post(
                &format!("/pools/p/removenodes?{API}"),
                Some(json!({"nodeList": ["n1"]})),
            )
            .await,
        404,
        "NodeNotFound",
    )
    .await;
    let actions = server.emulator.node_actions();
    assert_eq!(actions.len(), 2, "{actions:?}");
    // A separate process reads the same record through the admin API.
    let admin: Value = reqwest::get(format!("{}/_emulator/node-actions", server.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        admin[0],
        json!({"poolId": "p", "nodeId": "n1", "kind": "remove", "option": "requeue"})
    );
    assert_eq!(
        (actions[0].node_id.as_str(), actions[0].kind),
        ("n1", NodeActionKind::Remove)
    );
    assert_eq!(actions[0].option, "requeue");
    assert_eq!(actions[1].node_id, "N3");
}

#[tokio::test]
async fn remove_nodes_refuses_bad_requests_and_deleting_pools() {
    let server = Server::builtin().await;
    for (body, code) in [
        (json!({}), "MissingRequiredProperty"),
        (json!({"nodeList": []}), "InvalidPropertyValue"),
        (
            json!({"nodeList": ["a"], "nodeDeallocationOption": "explode"}),
            "InvalidPropertyValue",
        ),
        (
            json!({"nodeList": (0..101).map(|i| format!("n{i}")).collect::<Vec<_>>()}),
            "InvalidPropertyValue",
        ),
    ] {
        expect_error(
            server
                .post(&format!("/pools/workers/removenodes?{API}"), Some(body))
                .await,
            400,
            code,
        )
        .await;
    }
    expect_error(
        server
            .post(
                &format!("/pools/old-pool/removenodes?{API}"),
                Some(json!({"nodeList": ["x"]})),
            )
            .await,
        409,
        "PoolBeingDeleted",
    )
    .await;
    expect_error(
        server
            .post(
                &format!("/pools/nope/removenodes?{API}"),
                Some(json!({"nodeList": ["x"]})),
            )
            .await,
        404,
        "PoolNotFound",
    )
    .await;
    // GET is not the verb of an action.
    expect_error(
        server
            .get(&format!("/pools/workers/removenodes?{API}"))
            .await,
        405,
        "UnsupportedHttpVerb",
    )
    .await;
    assert!(server.emulator.node_actions().is_empty());
}

#[tokio::test]
async fn reimage_goes_through_reimaging_to_a_clean_idle_node() {
    let server = Server::start(busy_scenario()).await;
    let response = server
        .post(
            &format!("/pools/p/nodes/n2/reimage?{API}"),
            Some(json!({"nodeReimageOption": "terminate"})),
        )
        .await;
    assert_eq!(response.status(), 202);
    let task = server.emulator.task("j", "u").unwrap();
    assert_eq!(task["executionInfo"]["failureInfo"]["code"], "TaskEnded");
    // While reimaging: a second reimage is refused, files cannot be read.
    expect_error(
        server
            .post(&format!("/pools/p/nodes/n2/reimage?{API}"), None)
            .await,
        409,
        "NodeBeingReimaged",
    )
    .await;
    expect_error(
        server.get(&format!("/pools/p/nodes/n2/files?{API}")).await,
        409,
        "NodeNotReady",
    )
    .await;
    let (_, node) = server.get_json(&format!("/pools/p/nodes/n2?{API}")).await;
    assert_eq!(node["state"], "reimaging");
    let (_, node) = server.get_json(&format!("/pools/p/nodes/n2?{API}")).await;
    assert_eq!(node["state"], "idle");
    assert!(node.get("errors").is_none(), "{node}");
    let (status, files) = server
        .get_json(&format!("/pools/p/nodes/n2/files?{API}&recursive=true"))
        .await;
    assert_eq!(
        (status, files["value"].as_array().unwrap().len()),
        (200, 0),
        "a fresh disk"
    );
    let actions = server.emulator.node_actions();
    assert_eq!(actions.len(), 1);
    assert_eq!(
        (actions[0].kind, actions[0].option.as_str()),
        (NodeActionKind::Reimage, "terminate")
    );
    expect_error(
        server
            .post(&format!("/pools/p/nodes/gone/reimage?{API}"), None)
            .await,
        404,
        "NodeNotFound",
    )
    .await;
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir()
            .join(format!("emulator-agent-logs-{}", std::process::id()))
            .join(format!("{:x}", rand_suffix()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `check` every 20 ms for up to 10 s.
async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn agent_logs_arrive_in_a_local_directory_after_the_answer() {
    let server = Server::builtin().await;
    server
        .emulator
        .set_agent_log_delay(Duration::from_millis(300));
    let dir = TempDir::new();
    let url = url::Url::from_directory_path(&dir.0).unwrap();
    let response = server
        .post(
            &format!("/pools/workers/nodes/{DISK_FULL}/uploadbatchservicelogs?{API}"),
            Some(json!({"containerUrl": url.as_str(), "startTime": "2026-12-04T08:00:00Z"})),
        )
        .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let directory = answer["virtualDirectoryName"].as_str().unwrap().to_owned();
    assert!(
        directory.starts_with("workers/tvm-1695681911-1-20261204t080000z/"),
        "`_` is written `-`: {directory}"
    );
    assert_eq!(answer["numberOfFilesUploaded"], 4);
    let agent_log = dir.0.join(&directory).join("batch-agent").join("agent.log");
    // Asynchronous: not there at once.
    assert!(!agent_log.exists());
    assert!(eventually(|| agent_log.exists()).await);
    let count_files = || walk(&dir.0.join(&directory)).len() == 4;
    assert!(eventually(count_files).await);
    let text = std::fs::read_to_string(&agent_log).unwrap();
    assert!(
        text.contains("DiskFull") && text.contains(DISK_FULL),
        "{text}"
    );
    let uploads = server.emulator.agent_log_uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].virtual_directory_name, directory);
    assert_eq!(uploads[0].number_of_files_uploaded, 4);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[tokio::test]
async fn agent_log_requests_are_checked_and_never_echo_the_sas() {
    let server = Server::builtin().await;
    let path = format!("/pools/workers/nodes/{LOST}/uploadbatchservicelogs?{API}");
    let sas = "https://acct.blob.core.windows.net/logs?sv=2025-01-05&sp=w&sig=SECRET-SIG";
    for (body, code) in [
        (
            json!({"startTime": "2026-12-04T08:00:00Z"}),
            "MissingRequiredProperty",
        ),
        (json!({"containerUrl": sas}), "MissingRequiredProperty"),
        (
            json!({"containerUrl": sas, "startTime": "yesterday"}),
            "InvalidPropertyValue",
        ),
        (
            json!({"containerUrl": "ftp://x/y?sig=SECRET-SIG", "startTime": "2026-12-04T08:00:00Z"}),
            "InvalidPropertyValue",
        ),
        (
            json!({"containerUrl": sas, "startTime": "2026-12-04T08:00:00Z", "identityReference": "id"}),
            "InvalidPropertyValue",
        ),
    ] {
        let body = expect_error(server.post(&path, Some(body)).await, 400, code).await;
        assert!(!body.to_string().contains("SECRET-SIG"), "{body}");
    }
    // A node that left the pool answers as Batch does.
    expect_error(
        server
            .post(
                "/pools/linux/nodes/tvm-04/uploadbatchservicelogs?api-version=2025-06-01",
                Some(json!({"containerUrl": sas, "startTime": "2026-12-04T08:00:00Z"})),
            )
            .await,
        404,
        "NodeNotFound",
    )
    .await;
    // With a managed identity: recorded, and the SAS query is not.
    server
        .emulator
        .set_agent_log_delay(Duration::from_secs(3600));
    let response = server
        .post(
            &path,
            Some(
                json!({"containerUrl": sas, "startTime": "2026-12-04T08:00:00Z",
                        "identityReference": {"resourceId": "/subscriptions/s/uami"}}),
            ),
        )
        .await;
    assert_eq!(response.status(), 200);
    let uploads = server.emulator.agent_log_uploads();
    assert_eq!(
        uploads[0].destination,
        "https://acct.blob.core.windows.net/logs"
    );
    assert_eq!(
        uploads[0].identity_reference.as_deref(),
        Some("/subscriptions/s/uami")
    );
    assert!(!format!("{uploads:?}").contains("SECRET"));
    let admin = reqwest::get(format!("{}/_emulator/agent-log-uploads", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        admin.contains("\"destination\":\"https://acct.blob.core.windows.net/logs\""),
        "{admin}"
    );
    assert!(!admin.contains("SECRET"), "{admin}");
    assert!(
        server
            .emulator
            .requests()
            .iter()
            .all(|r| !r.path_and_query.contains("SECRET"))
    );
}

#[tokio::test]
async fn agent_logs_land_in_azurite_through_a_sas() {
    use artifact_store::ArtifactStore as _;
    let azurite = artifact_store::testing::Azurite::start();
    let store = azurite.store("agentlogs").await;
    let sas = artifact_store::account_sas(
        artifact_store::DEVSTORE_ACCOUNT,
        artifact_store::DEVSTORE_KEY,
        false,
        Duration::from_secs(600),
    )
    .unwrap();
    let container = format!("{}/agentlogs?{sas}", azurite.blob_endpoint());
    let server = Server::builtin().await;
    server
        .emulator
        .set_agent_log_delay(Duration::from_millis(50));
    let response = server
        .post(
            &format!("/pools/workers/nodes/{START_FAILED}/uploadbatchservicelogs?{API}"),
            Some(json!({"containerUrl": container, "startTime": "2026-12-04T08:00:00Z"})),
        )
        .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let directory = answer["virtualDirectoryName"].as_str().unwrap().to_owned();
    let mut names = Vec::new();
    for _ in 0..500 {
        names = store
            .list(&format!("{directory}/"))
            .await
            .unwrap()
            .into_iter()
            .map(|info| info.key.to_string())
            .collect();
        if names.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(
        names
            .iter()
            .any(|n| n.ends_with("batch-agent/controller.log")),
        "{names:?}"
    );
    assert_eq!(
        server.emulator.agent_log_uploads()[0].destination,
        format!("{}/agentlogs", azurite.blob_endpoint())
    );
}

#[tokio::test]
async fn faults_and_auth_apply_to_the_new_routes() {
    let server = Server::builtin().await;
    server.emulator.set_faults(vec![
        FaultRule::new(Fault::Throttle {
            retry_after_seconds: 1,
        })
        .path_prefix("/pools")
        .times(1),
        FaultRule::new(Fault::NodeNotFound)
            .path_contains("/uploadbatchservicelogs")
            .times(1),
    ]);
    let response = server.get(&format!("/pools/workers/nodes?{API}")).await;
    assert_eq!(response.headers()["retry-after"], "1");
    expect_error(response, 429, "TooManyRequests").await;
    assert_eq!(
        server
            .get(&format!("/pools/workers/nodes?{API}"))
            .await
            .status(),
        200
    );
    expect_error(
        server
            .post(
                &format!("/pools/workers/nodes/{LOST}/uploadbatchservicelogs?{API}"),
                Some(json!({"containerUrl": "file:///nonexistent", "startTime": "2026-12-04T08:00:00Z"})),
            )
            .await,
        404,
        "NodeNotFound",
    )
    .await;

    let unsigned = [
        (Method::GET, "/pools".to_owned()),
        (Method::GET, "/pools/workers".to_owned()),
        (Method::GET, "/pools/workers/nodes".to_owned()),
        (Method::GET, format!("/pools/workers/nodes/{LOST}")),
        (Method::GET, "/nodecounts".to_owned()),
        (Method::POST, "/pools/workers/removenodes".to_owned()),
        (Method::POST, format!("/pools/workers/nodes/{LOST}/reimage")),
        (
            Method::POST,
            format!("/pools/workers/nodes/{LOST}/uploadbatchservicelogs"),
        ),
    ];
    for (method, path) in unsigned {
        let response = server
            .request(method.clone(), &format!("{path}?{API}"))
            .unsigned()
            .send()
            .await;
        expect_error(response, 403, "AuthenticationFailed").await;
        let response = server
            .request(method, &format!("{path}?{API}"))
            .key("c2VjcmV0LWtleS10aGF0LWlzLW5vdC10aGUtYWNjb3VudC1rZXk=")
            .send()
            .await;
        expect_error(response, 403, "AuthenticationFailed").await;
    }
    assert!(server.emulator.node_actions().is_empty());
    assert!(server.emulator.agent_log_uploads().is_empty());
}

#[tokio::test]
async fn hostile_requests_on_the_new_routes_are_refused_cleanly() {
    let server = Server::builtin().await;
    // An encoded slash stays inside one id. (An encoded `..` segment is resolved by the
    // test's HTTP client before sending, so it is not tried here.)
    for path in [
        "/pools/a%2Fb/nodes",
        "/pools/..%2Fjobs",
        "/pools/a%2F..%2F..%2Fjobs/nodes",
    ] {
        expect_error(
            server.get(&format!("{path}?{API}")).await,
            404,
            "PoolNotFound",
        )
        .await;
    }
    // A deeply nested body, a body that is not an object, a huge body.
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let response = server
        .request(Method::POST, &format!("/pools/workers/removenodes?{API}"))
        .raw_body(nested.into_bytes())
        .header("content-type", "application/json")
        .send()
        .await;
    expect_error(response, 400, "InvalidRequestBody").await;
    let response = server
        .request(
            Method::POST,
            &format!("/pools/workers/nodes/{LOST}/reimage?{API}"),
        )
        .raw_body(b"\"requeue\"".to_vec())
        .header("content-type", "application/json")
        .send()
        .await;
    expect_error(response, 400, "InvalidRequestBody").await;
    let huge = json!({"nodeList": ["x"], "pad": "y".repeat(100_000)});
    let response = server
        .post(&format!("/pools/workers/removenodes?{API}"), Some(huge))
        .await;
    assert_eq!(response.status(), 413);
    // Node ids of every kind in a removal: a number is refused, not coerced.
    expect_error(
        server
            .post(
                &format!("/pools/workers/removenodes?{API}"),
                Some(json!({"nodeList": [7]})),
            )
            .await,
        400,
        "InvalidPropertyValue",
    )
    .await;
    assert!(server.emulator.node_actions().is_empty());
    // The server is still fine.
    assert_eq!(server.get(&format!("/pools?{API}")).await.status(), 200);
}

#[tokio::test]
async fn generated_nodes_hide_a_few_in_trouble_among_thousands() {
    let scenario = Scenario::from_json_str(
        r#"{"pools": [{"id": "big", "generateNodes": [
              {"count": 5000, "idPrefix": "tvm-", "node": {"state": "running"}, "unusableEvery": 250}]}]}"#,
    )
    .unwrap();
    let server = Server::start(scenario).await;
    let (_, counts) = server.get_json(&format!("/nodecounts?{API}")).await;
    assert_eq!(counts["value"][0]["dedicated"]["unusable"], 20);
    assert_eq!(counts["value"][0]["dedicated"]["running"], 4980);
    assert_eq!(counts["value"][0]["dedicated"]["total"], 5000);
    let (status, trouble) = server
        .get_json(&format!(
            "/pools/big/nodes?{API}&$filter={}&$select=id,state,errors",
            q(TROUBLE)
        ))
        .await;
    assert_eq!(status, 200);
    let found = ids(&trouble);
    assert_eq!(found.len(), 20, "one page holds them all");
    assert_eq!(found[0], "tvm-00249");
    assert!(trouble.get("odata.nextLink").is_none());
    let (_, pool) = server.get_json(&format!("/pools/big?{API}")).await;
    assert_eq!(pool["currentDedicatedNodes"], 5000);
    for bad in [
        r#"{"pools": [{"id": "p", "generateNodes": [{"count": 1, "idPrefix": "a/", "node": {}}]}]}"#,
        r#"{"pools": [{"id": "p", "generateNodes": [{"count": 1, "idPrefix": "a", "unusableEvery": 0}]}]}"#,
        r#"{"pools": [{"id": "p", "generateNodes": [{"count": 100001, "idPrefix": "a"}]}]}"#,
    ] {
        assert!(Scenario::from_json_str(bad).is_err(), "{bad}");
    }
}

/// Node counts of one pool: (dedicated unusable, dedicated total).
async fn counted(server: &Server, pool: &str) -> Option<(u64, u64)> {
    let (_, body) = server.get_json(&format!("/nodecounts?{API}")).await;
    body["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["poolId"] == pool)
        .map(|c| {
            let d = &c["dedicated"];
            (
                d["unusable"].as_u64().unwrap(),
                d["total"].as_u64().unwrap(),
            )
        })
}

#[tokio::test]
async fn controls_end_a_pool_or_node_trouble_through_the_admin_api() {
    let server = Server::builtin().await;
    let client = reqwest::Client::new();
    let admin = |method: Method, path: &str| {
        client.request(method, format!("{}/_emulator/{path}", server.base))
    };
    // A pool whose resize failed grows to its target.
    let status = admin(Method::POST, "pools/quota-pool/finish-resize")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
    let (_, pool) = server.get_json(&format!("/pools/quota-pool?{API}")).await;
    assert_eq!(pool["allocationState"], "steady");
    assert!(pool.get("resizeErrors").is_none(), "{pool}");
    assert_eq!(pool["currentDedicatedNodes"], pool["targetDedicatedNodes"]);
    assert_eq!(pool["currentDedicatedNodes"], 8);
    let (_, nodes) = server
        .get_json(&format!("/pools/quota-pool/nodes?{API}"))
        .await;
    assert_eq!(nodes["value"].as_array().unwrap().len(), 8);
    assert!(
        nodes["value"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "idle")
    );
    assert_eq!(counted(&server, "quota-pool").await, Some((0, 8)));

    // An autoscale formula evaluates again.
    let status = admin(Method::POST, "pools/scaler/autoscale-ok")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
    let (_, scaler) = server.get_json(&format!("/pools/scaler?{API}")).await;
    assert!(scaler["autoScaleRun"].get("error").is_none(), "{scaler}");
    assert!(scaler["autoScaleRun"]["timestamp"].is_string());

    // An unusable node recovers: idle, no errors, out of the filtered list and the counts.
    let (unusable_before, _) = counted(&server, "workers").await.unwrap();
    let status = admin(Method::POST, &format!("nodes/workers/{DISK_FULL}/recover"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
    let (_, node) = server
        .get_json(&format!("/pools/workers/nodes/{DISK_FULL}?{API}"))
        .await;
    assert_eq!(node["state"], "idle");
    assert!(node.get("errors").is_none(), "{node}");
    let (_, trouble) = server
        .get_json(&format!(
            "/pools/workers/nodes?{API}&$filter={}",
            q(TROUBLE)
        ))
        .await;
    assert!(!ids(&trouble).contains(&DISK_FULL.to_owned()));
    assert_eq!(
        counted(&server, "workers").await.unwrap().0,
        unusable_before - 1
    );

    // A stuck deletion completes: the pool and its nodes are gone.
    let status = admin(Method::DELETE, "pools/old-pool")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
    expect_error(
        server.get(&format!("/pools/old-pool?{API}")).await,
        404,
        "PoolNotFound",
    )
    .await;
    assert_eq!(counted(&server, "old-pool").await, None);

    // Unknown pools and nodes, and a removed node, are 404s that change nothing.
    for (method, path) in [
        (Method::POST, "pools/no-such-pool/finish-resize".to_owned()),
        (Method::POST, "pools/no-such-pool/autoscale-ok".to_owned()),
        (Method::DELETE, "pools/old-pool".to_owned()),
        (
            Method::POST,
            "nodes/workers/no-such-node/recover".to_owned(),
        ),
    ] {
        let status = admin(method, &path).send().await.unwrap().status();
        assert_eq!(status, 404, "{path}");
    }
    assert!(server.emulator.remove_node("workers", LOST));
    assert!(!server.emulator.recover_node("workers", LOST));
    expect_error(
        server
            .get(&format!("/pools/workers/nodes/{LOST}?{API}"))
            .await,
        404,
        "NodeNotFound",
    )
    .await;
}
