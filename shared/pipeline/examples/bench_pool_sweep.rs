//! Benchmark: what a sweep of pools and nodes costs in Batch requests, from the emulator's
//! request log, as the account grows in pools, in nodes and in nodes in trouble.
//!
//! Run: `cargo run --release -p batch-triage-pipeline --example bench_pool_sweep`.
//!
//! Each case is a fresh emulator with `pools` pools of `nodes / pools` nodes each, `troubled`
//! of them `unusable` (one per pool, in the first pools), swept once with a policy that keeps
//! no agent logs (so the count is the sweep's own reading). The claim checked: requests grow
//! with the pools (node counts, 10 a page) and the pools in trouble (one node list each), not
//! with the nodes. The last case keeps agent logs, which adds one request per troubled node.
//! Knob: `BENCH_CASES=pools:nodes:troubled,…` replaces the cases.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use batch_client::{BatchClient, BatchConfig, Deadline, Secret};
use batch_emulator::{Emulator, Scenario, WELL_KNOWN_ACCOUNT_KEY, WELL_KNOWN_ACCOUNT_NAME};
use diagnosis::policy::Policy;
use notify::{Allowlist, Egress, RetryPolicy};
use pipeline::sweep::SweepOptions;
use pipeline::triage::{Triage, TriageConfig};
use preserve::PreserveOptions;
use time::OffsetDateTime;

const DEFAULT_CASES: &str = "50:5000:20,50:10000:20,100:5000:20,50:5000:40";

fn scenario(pools: usize, nodes: usize, troubled: usize) -> Scenario {
    let per_pool = (nodes / pools).max(1);
    let pools: Vec<serde_json::Value> = (0..pools)
        .map(|p| {
            let nodes: Vec<serde_json::Value> = (0..per_pool)
                .map(|n| {
                    let node = if n == 0 && p < troubled {
                        serde_json::json!({"state": "unusable", "stateTransitionTime": "now-20m",
                            "errors": [{"code": "DiskFull", "message": "There is not enough space on the disk of the node."}]})
                    } else if n % 2 == 0 {
                        serde_json::json!({"state": "running", "runningTasksCount": 1})
                    } else {
                        serde_json::json!({"state": "idle"})
                    };
                    serde_json::json!({"id": format!("tvm-{p}-{n}"), "node": node})
                })
                .collect();
            serde_json::json!({"id": format!("pool-{p:03}"), "pool": {"vmSize": "standard_d4s_v5",
                "currentDedicatedNodes": per_pool, "targetDedicatedNodes": per_pool}, "nodes": nodes})
        })
        .collect();
    Scenario::from_json_str(&serde_json::json!({"pools": pools, "jobs": []}).to_string())
        .expect("scenario")
}

async fn case(pools: usize, nodes: usize, troubled: usize, keep_logs: bool) {
    let emulator = Emulator::new(scenario(pools, nodes, troubled)).expect("emulator");
    emulator.set_agent_log_delay(Duration::from_millis(10));
    let url = test_kit::serve_emulator(emulator.clone()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = artifact_store::open(dir.path().to_str().expect("utf-8 path")).expect("store");
    let rule = if keep_logs { "true" } else { "false" };
    let policy = Policy::parse(&format!(
        "[[rules]]\nname = \"nodes\"\nmatch = {{ class = \"node.*\" }}\nkeep_agent_logs = {rule}\n"
    ))
    .expect("policy");
    let batch = BatchClient::new(
        BatchConfig::shared_key(
            &url,
            WELL_KNOWN_ACCOUNT_NAME,
            Secret::new(WELL_KNOWN_ACCOUNT_KEY),
        )
        .expect("config"),
    )
    .expect("client");
    let triage = Triage::new(
        TriageConfig {
            account: WELL_KNOWN_ACCOUNT_NAME.to_owned(),
            preserve: PreserveOptions::default(),
            action_call_timeout: Duration::from_secs(30),
        },
        Arc::new(batch),
        store,
        Arc::new(policy),
        BTreeMap::new(),
        Egress::new(
            Allowlist::default().allow_loopback(),
            RetryPolicy::standard(),
        )
        .expect("egress"),
    );
    emulator.clear_requests();
    let started = Instant::now();
    let report = triage
        .sweep_pools(
            OffsetDateTime::now_utc(),
            Deadline::after(Duration::from_secs(300)),
            &SweepOptions::default(),
        )
        .await
        .expect("sweep");
    let elapsed = started.elapsed();
    let requests = emulator.requests();
    let count = |what: &dyn Fn(&str) -> bool| {
        requests
            .iter()
            .filter(|r| what(r.path_and_query.as_str()))
            .count()
    };
    let counts = count(&|p| p.starts_with("/nodecounts"));
    let pool_lists = count(&|p| p.starts_with("/pools?"));
    let node_lists = count(&|p| p.contains("/nodes?"));
    let uploads = count(&|p| p.contains("/uploadbatchservicelogs"));
    let nodes_found = report
        .subjects
        .iter()
        .filter(|s| s.class.is_some_and(|c| c.as_str() == "node.unusable"))
        .count();
    let mut logs: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &report.subjects {
        if let Some(status) = s.agent_logs.as_deref() {
            *logs.entry(status).or_default() += 1;
        }
    }
    let logs = if logs.is_empty() {
        String::new()
    } else {
        format!("; agent logs {logs:?}")
    };
    println!(
        "{pools:>5} pools {nodes:>6} nodes {troubled:>3} in trouble{}: {:>4} requests \
         (nodecounts {counts}, list pools {pool_lists}, list nodes {node_lists}, upload logs {uploads}); \
         {nodes_found} unusable nodes found{logs}; {:.0} ms",
        if keep_logs { " (agent logs kept)" } else { "" },
        requests.len(),
        elapsed.as_secs_f64() * 1000.0,
    );
    assert_eq!(nodes_found, troubled, "every node in trouble is found");
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cases = std::env::var("BENCH_CASES").unwrap_or_else(|_| DEFAULT_CASES.to_owned());
    runtime.block_on(async {
        for spec in cases.split(',') {
            let parts: Vec<usize> = spec
                .split(':')
                .map(|n| n.trim().parse().expect("pools:nodes:troubled"))
                .collect();
            let [pools, nodes, troubled] = parts[..] else {
                panic!("BENCH_CASES wants pools:nodes:troubled, got {spec:?}");
            };
            case(pools, nodes, troubled, false).await;
        }
        case(50, 5000, 20, true).await;
    });
}
