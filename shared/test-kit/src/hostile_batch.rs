//! A Batch endpoint gone wrong, for attack-minded tests: it answers with whatever ids the test
//! gives it (`.`, `..`, an empty id, ids longer than any store allows), which the emulator refuses
//! to hold. It serves the shapes the Batch client reads (the emulator's: an `odata.metadata`, a
//! `value` list, Batch's error body, `application/json;odata=minimalmetadata`), with `url`s on its
//! own origin, so the client's same-origin checks pass. It accepts any signature: the client signs
//! every request with Shared Key, and checking it is the emulator's job, not this double's.
//!
//! Answered: list jobs, get job, list a job's tasks (the `$filter` is ignored: every task given is
//! listed), get task, list a task's files (none), the job's prep/release status (none), and a
//! 404 in Batch's error shape for everything else (task counts, a file). Every request path is
//! recorded, so a test can assert that nothing was fetched for a refused subject.
//!
//! Pools ([`HostileBatch::with_pools`]): list pools, get pool, list a pool's nodes (the `$filter`
//! is ignored: every node given is listed, `unusable` with a `DiskFull` error), get node, pool
//! node counts (every node counted `unusable`), Remove Nodes and Reimage Node (202, nothing
//! changes), and `uploadbatchservicelogs`, whose `virtualDirectoryName` is built from the raw
//! ids (`{pool}/{node}/{guid}`), so a pool id `..` hands the caller a directory that climbs.
//! A test takes a node out with [`HostileBatch::remove_node`].

use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

const ODATA_JSON: &str = "application/json;odata=minimalmetadata";

/// One job and the tasks the double lists for it.
#[derive(Clone, Debug)]
pub struct HostileJob {
    /// The job's id, as hostile as the test likes.
    pub id: String,
    /// Its tasks' ids; each is listed as a failed task (exit code 1, ended now).
    pub tasks: Vec<String>,
}

/// One pool and the nodes the double lists for it.
#[derive(Clone, Debug)]
pub struct HostilePool {
    /// The pool's id, as hostile as the test likes.
    pub id: String,
    /// Its nodes' ids; each is listed `unusable` with a `DiskFull` error.
    pub nodes: Vec<String>,
}

#[derive(Default)]
struct Shared {
    base: String,
    jobs: Vec<HostileJob>,
    pools: Vec<HostilePool>,
    paths: Vec<String>,
}

/// The double, served on a loopback port for the rest of the test.
#[derive(Clone)]
pub struct HostileBatch {
    /// Its base URL, for `BatchConfig::shared_key`.
    pub url: String,
    shared: Arc<Mutex<Shared>>,
}

impl HostileBatch {
    /// Serves `jobs` (all active) on a free loopback port, with no pools.
    pub async fn start(jobs: Vec<HostileJob>) -> Self {
        Self::with_pools(jobs, Vec::new()).await
    }

    /// Serves `jobs` (all active) and `pools` on a free loopback port.
    pub async fn with_pools(jobs: Vec<HostileJob>, pools: Vec<HostilePool>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the hostile Batch double");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let shared = Arc::new(Mutex::new(Shared {
            base: url.clone(),
            jobs,
            pools,
            paths: Vec::new(),
        }));
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        HostileBatch { url, shared }
    }

    /// Takes a node out of its pool: from now on it is not listed nor counted, and a read of
    /// it answers 404 `NodeNotFound`. False when the double serves no such node.
    pub fn remove_node(&self, pool_id: &str, node_id: &str) -> bool {
        let mut shared = self.shared.lock().expect("double lock");
        let Some(pool) = shared.pools.iter_mut().find(|p| p.id == pool_id) else {
            return false;
        };
        let before = pool.nodes.len();
        pool.nodes.retain(|n| n != node_id);
        pool.nodes.len() < before
    }

    /// The paths (with their query) requested so far, in order, percent-encoded as sent.
    pub fn paths(&self) -> Vec<String> {
        self.shared.lock().expect("double lock").paths.clone()
    }
}

async fn answer(State(shared): State<Arc<Mutex<Shared>>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let mut shared = shared.lock().expect("double lock");
    shared.paths.push(
        request
            .uri()
            .path_and_query()
            .map_or(path.clone(), |p| p.to_string()),
    );
    // Segments as the client sent them, decoded, so ids compare as given.
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let base = shared.base.clone();
    if matches!(segments.first(), Some(&"pools" | &"nodecounts")) {
        return pool_answer(&base, &shared.pools, &segments);
    }
    let find = |id: &str| shared.jobs.iter().find(|j| j.id == id);
    let body = match segments.as_slice() {
        ["jobs"] => list(
            &base,
            "jobs",
            shared.jobs.iter().map(|j| job(&base, &j.id)).collect(),
        ),
        ["jobs", id] => match find(id) {
            Some(j) => job(&base, &j.id),
            None => return not_found(&base, "JobNotFound"),
        },
        ["jobs", id, "tasks"] => match find(id) {
            Some(j) => list(
                &base,
                "tasks",
                j.tasks.iter().map(|t| task(&base, &j.id, t)).collect(),
            ),
            None => return not_found(&base, "JobNotFound"),
        },
        ["jobs", id, "tasks", task_id] => match find(id) {
            Some(j) if j.tasks.iter().any(|t| t == task_id) => task(&base, &j.id, task_id),
            _ => return not_found(&base, "TaskNotFound"),
        },
        ["jobs", _, "tasks", _, "files"] => list(&base, "files", Vec::new()),
        ["jobs", _, "jobpreparationandreleasetaskstatus"] => {
            list(&base, "jobpreparationandreleasetaskstatuslist", Vec::new())
        }
        _ => return not_found(&base, "ResourceNotFound"),
    };
    json_ok(StatusCode::OK, &body)
}

fn json_ok(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ODATA_JSON));
    response
}

/// The pool, node and node-count routes.
fn pool_answer(base: &str, pools: &[HostilePool], segments: &[&str]) -> Response {
    let find = |id: &str| pools.iter().find(|p| p.id == id);
    let has_node =
        |pool: &str, node: &str| find(pool).is_some_and(|p| p.nodes.iter().any(|n| n == node));
    let body = match segments {
        ["nodecounts"] => list(
            base,
            "poolnodecounts",
            pools
                .iter()
                .map(|p| {
                    let n = p.nodes.len();
                    json!({"poolId": p.id,
                           "dedicated": {"unusable": n, "idle": 0, "total": n},
                           "lowPriority": {"unusable": 0, "total": 0}})
                })
                .collect(),
        ),
        ["pools"] => list(
            base,
            "pools",
            pools.iter().map(|p| pool(base, &p.id)).collect(),
        ),
        ["pools", id] => match find(id) {
            Some(p) => pool(base, &p.id),
            None => return not_found(base, "PoolNotFound"),
        },
        ["pools", id, "nodes"] => match find(id) {
            Some(p) => list(
                base,
                "nodes",
                p.nodes.iter().map(|n| node(base, &p.id, n)).collect(),
            ),
            None => return not_found(base, "PoolNotFound"),
        },
        ["pools", id, "nodes", node_id] if has_node(id, node_id) => node(base, id, node_id),
        ["pools", id, "removenodes"] if find(id).is_some() => {
            return json_ok(StatusCode::ACCEPTED, &Value::Null);
        }
        ["pools", id, "nodes", node_id, "reimage"] if has_node(id, node_id) => {
            return json_ok(StatusCode::ACCEPTED, &Value::Null);
        }
        ["pools", id, "nodes", node_id, "uploadbatchservicelogs"] if has_node(id, node_id) => {
            json!({
                "virtualDirectoryName": format!("{id}/{node_id}/0795539d-82fe-48e3-bbff-2964905b6de0"),
                "numberOfFilesUploaded": 3,
            })
        }
        ["pools", _, "nodes", ..] => return not_found(base, "NodeNotFound"),
        _ => return not_found(base, "ResourceNotFound"),
    };
    json_ok(StatusCode::OK, &body)
}

fn pool(base: &str, id: &str) -> Value {
    json!({
        "id": id,
        "url": format!("{base}/pools/{id}"),
        "eTag": "0x8D0000000000003",
        "state": "active",
        "stateTransitionTime": now(),
        "allocationState": "steady",
        "allocationStateTransitionTime": now(),
        "vmSize": "standard_d2s_v3",
        "currentDedicatedNodes": 1,
        "targetDedicatedNodes": 1,
    })
}

fn node(base: &str, pool_id: &str, id: &str) -> Value {
    json!({
        "id": id,
        "url": format!("{base}/pools/{pool_id}/nodes/{id}"),
        "state": "unusable",
        "stateTransitionTime": now(),
        "isDedicated": true,
        "errors": [{"code": "DiskFull", "message": "There is not enough space on the disk of the node.",
                    "errorDetails": [{"name": "Message", "value": id}]}],
    })
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn list(base: &str, metadata: &str, value: Vec<Value>) -> Value {
    json!({"odata.metadata": format!("{base}/$metadata#{metadata}"), "value": value})
}

fn now() -> String {
    "2026-11-27T10:05:01.1234567Z".to_owned()
}

fn job(base: &str, id: &str) -> Value {
    json!({
        "id": id,
        "url": format!("{base}/jobs/{id}"),
        "eTag": "0x8D0000000000001",
        "state": "active",
        "stateTransitionTime": now(),
        "creationTime": now(),
        "poolInfo": {"poolId": "pool"},
        "executionInfo": {"startTime": now(), "poolId": "pool"},
    })
}

fn task(base: &str, job_id: &str, id: &str) -> Value {
    json!({
        "id": id,
        "url": format!("{base}/jobs/{job_id}/tasks/{id}"),
        "eTag": "0x8D0000000000002",
        "state": "completed",
        "stateTransitionTime": now(),
        "creationTime": now(),
        "commandLine": "/bin/sh -c 'exit 1'",
        "executionInfo": {
            "startTime": now(),
            "endTime": now(),
            "exitCode": 1,
            "retryCount": 0,
            "requeueCount": 0,
            "result": "failure",
        },
        "nodeInfo": {"poolId": "pool", "nodeId": "tvm-1", "nodeUrl": format!("{base}/pools/pool/nodes/tvm-1")},
    })
}

fn not_found(base: &str, code: &str) -> Response {
    let body = json!({
        "odata.metadata": format!("{base}/$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element"),
        "code": code,
        "message": {"lang": "en-US", "value": "The specified resource does not exist (hostile Batch double)."},
    });
    let mut response = (StatusCode::NOT_FOUND, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ODATA_JSON));
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use batch_client::{
        BatchApi, BatchClient, BatchConfig, Deadline, ListOptions, NodeDeallocation, Secret,
        UploadLogsOptions, items,
    };
    use futures::TryStreamExt;

    use super::{HostileBatch, HostilePool};

    const KEY: &str = "c2VjcmV0LWtleS10aGF0LWlzLW5vdC10aGUtYWNjb3VudC1rZXk=";

    #[tokio::test]
    async fn hostile_pool_and_node_ids_reach_the_caller_as_data() {
        let climbing_node = "x/../../../etc";
        let double = HostileBatch::with_pools(
            Vec::new(),
            vec![HostilePool {
                id: "p\u{202e}..".into(),
                nodes: vec![climbing_node.into()],
            }],
        )
        .await;
        let config = BatchConfig::shared_key(&double.url, "acct", Secret::new(KEY)).unwrap();
        let client = BatchClient::new(config).unwrap();
        let deadline = Deadline::after(Duration::from_secs(30));
        let pools: Vec<_> = items(client.list_pools(&ListOptions::default(), deadline))
            .try_collect()
            .await
            .unwrap();
        let pool_id = pools[0].id.clone().unwrap();
        assert_eq!(pool_id, "p\u{202e}..");
        let nodes: Vec<_> = items(client.list_nodes(&pool_id, &ListOptions::default(), deadline))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(nodes[0].id.as_deref(), Some(climbing_node));
        assert_eq!(
            nodes[0].errors().next().unwrap().code.as_deref(),
            Some("DiskFull")
        );
        let counts: Vec<_> = items(client.list_pool_node_counts(&ListOptions::default(), deadline))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(counts[0].in_trouble(), 1);
        // Batch hands back a directory built from the ids: it climbs, and the caller must not
        // trust it as a path.
        let upload = client
            .upload_node_logs(
                &pool_id,
                climbing_node,
                &UploadLogsOptions {
                    container_url: Secret::new("https://a.blob.core.windows.net/c?sig=s"),
                    start_time: time::OffsetDateTime::UNIX_EPOCH,
                    end_time: None,
                    identity_resource_id: None,
                },
                deadline,
            )
            .await
            .unwrap();
        assert!(upload.virtual_directory_name.contains("/../../../"));
        let outcome = client
            .reimage_node(&pool_id, climbing_node, NodeDeallocation::Requeue, deadline)
            .await
            .unwrap();
        assert_eq!(outcome, batch_client::ActionOutcome::Accepted);
        // Each id travelled as one encoded path segment.
        let paths = double.paths();
        assert!(
            paths
                .iter()
                .any(|p| p.contains("/nodes/x%2F..%2F..%2F..%2Fetc/reimage")),
            "{paths:?}"
        );
    }
}
