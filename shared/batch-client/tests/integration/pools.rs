//! The pool and node operations against the Batch emulator's built-in scenario: typed bodies,
//! paging, the filtered list of nodes in trouble, node counts, agent logs, node actions, and
//! their error paths (gone nodes, conflicts, throttling). Assertions read the emulator's request
//! log and its record of node actions, never the wall clock.

use std::time::Duration;

use batch_client::{
    ActionOutcome, BatchApi, BatchError, Deadline, GetOptions, ListOptions,
    NODES_IN_TROUBLE_FILTER, NODES_IN_TROUBLE_SELECT, NodeDeallocation, RemoveNodesOptions, Secret,
    UploadLogsOptions, items,
};
use batch_emulator::{Fault, FaultRule, NodeActionKind, Scenario};
use diagnosis::wire::{AllocationState, ComputeNode, NodeState, PoolState, TaskResult};
use futures::TryStreamExt;

use crate::emulator::Running;

const DISK_FULL: &str = "tvm-1695681911_1-20261204t080000z";
const LOST: &str = "tvm-1695681911_2-20261204t080000z";
const HEALTHY: &str = "tvm-1695681911_3-20261204t080000z";
const START_NO_WAIT: &str = "tvm-1695681911_4-20261204t080000z";
const START_FAILED: &str = "tvm-1695681911_5-20261204t080000z";

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(120))
}

fn paged(max: u32) -> ListOptions {
    ListOptions {
        max_results: Some(max),
        ..ListOptions::default()
    }
}

#[tokio::test]
async fn pools_are_listed_in_pages_and_read_typed() {
    let run = Running::start(Scenario::builtin()).await;
    let client = run.client();
    let pools: Vec<_> = items(client.list_pools(&paged(2), deadline()))
        .try_collect()
        .await
        .unwrap();
    let ids: Vec<_> = pools.iter().filter_map(|p| p.id.as_deref()).collect();
    for id in [
        "quota-pool",
        "gpu-pool",
        "scaler",
        "old-pool",
        "workers",
        "linux",
    ] {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }
    let gets = run.emulator.requests().len();
    assert!(gets >= pools.len() / 2, "two pools a page: {gets} requests");

    let quota = client
        .get_pool("quota-pool", &GetOptions::default(), deadline())
        .await
        .unwrap();
    assert_eq!(quota.allocation_state, Some(AllocationState::Steady));
    assert_eq!(quota.current_nodes(), Some(0));
    let error = quota.resize_errors().next().unwrap();
    assert_eq!(error.code.as_deref(), Some("AccountCoreQuotaReached"));
    let gpu = client
        .get_pool("gpu-pool", &GetOptions::default(), deadline())
        .await
        .unwrap();
    let failed = gpu.resize_errors().next().unwrap();
    assert!(
        failed
            .detail("Reason")
            .unwrap()
            .contains("insufficient capacity")
    );
    assert_eq!(
        failed.detail("Provider Error Json Truncated"),
        Some("False")
    );
    let scaler = client
        .get_pool("scaler", &GetOptions::default(), deadline())
        .await
        .unwrap();
    assert_eq!(
        scaler.auto_scale_error().and_then(|e| e.code.as_deref()),
        Some("InsufficientSampleData")
    );
    let old = client
        .get_pool(
            "old-pool",
            &GetOptions {
                select: Some("id,state,stateTransitionTime".into()),
                expand: None,
            },
            deadline(),
        )
        .await
        .unwrap();
    assert_eq!(old.state, Some(PoolState::Deleting));
    assert!(old.state_transition_time.is_some() && old.vm_size.is_none());

    let error = client
        .get_pool("nope", &GetOptions::default(), deadline())
        .await
        .unwrap_err();
    assert!(
        error.is_not_found() && error.code() == Some("PoolNotFound"),
        "{error:?}"
    );
    // A hostile id stays one path segment; `..` is refused before any request.
    let error = client
        .get_pool("../jobs", &GetOptions::default(), deadline())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("PoolNotFound"), "{error:?}");
    run.emulator.clear_requests();
    let error = client
        .get_pool("..", &GetOptions::default(), deadline())
        .await
        .unwrap_err();
    assert!(matches!(error, BatchError::BadRequest(_)), "{error:?}");
    assert!(run.emulator.requests().is_empty());
}

#[tokio::test]
async fn nodes_in_trouble_are_one_filtered_paged_list() {
    let run = Running::start(Scenario::builtin()).await;
    let client = run.client();
    let options = ListOptions {
        filter: Some(NODES_IN_TROUBLE_FILTER.into()),
        select: Some(NODES_IN_TROUBLE_SELECT.into()),
        max_results: Some(2),
        expand: None,
    };
    let nodes: Vec<ComputeNode> = items(client.list_nodes("workers", &options, deadline()))
        .try_collect()
        .await
        .unwrap();
    let ids: Vec<_> = nodes.iter().filter_map(|n| n.id.as_deref()).collect();
    assert_eq!(ids, [DISK_FULL, LOST, START_NO_WAIT, START_FAILED]);
    assert_eq!(run.emulator.requests().len(), 2, "two pages of two");
    assert_eq!(nodes[0].state, Some(NodeState::Unusable));
    let disk = nodes[0].errors().next().unwrap();
    assert_eq!(disk.code.as_deref(), Some("DiskFull"));
    assert!(disk.detail("Message").is_some());
    assert_eq!(nodes[0].pool_id().as_deref(), Some("workers"));
    assert_eq!(nodes[1].errors().count(), 0);
    assert_eq!(nodes[2].state, Some(NodeState::Idle));
    assert_eq!(
        nodes[2]
            .start_task_info
            .as_ref()
            .and_then(|i| i.result.clone()),
        Some(TaskResult::Failure)
    );
    assert_eq!(nodes[3].state, Some(NodeState::StartTaskFailed));

    let healthy = client
        .get_node("workers", HEALTHY, &GetOptions::default(), deadline())
        .await
        .unwrap();
    assert_eq!(healthy.state, Some(NodeState::Running));
    let gone = client
        .get_node("linux", "tvm-04", &GetOptions::default(), deadline())
        .await
        .unwrap_err();
    assert!(
        gone.is_not_found() && gone.code() == Some("NodeNotFound"),
        "{gone:?}"
    );
    let no_pool: Result<Vec<_>, _> =
        items(client.list_nodes("nope", &ListOptions::default(), deadline()))
            .try_collect()
            .await;
    assert_eq!(no_pool.unwrap_err().code(), Some("PoolNotFound"));
}

#[tokio::test]
async fn node_counts_are_paged_by_ten_and_filtered_by_pool() {
    let run = Running::start(Scenario::builtin()).await;
    let client = run.client();
    let all: Vec<_> = items(client.list_pool_node_counts(&paged(3), deadline()))
        .try_collect()
        .await
        .unwrap();
    assert!(all.len() >= 7, "{all:?}");
    assert_eq!(run.emulator.requests().len(), all.len().div_ceil(3));
    let workers = all
        .iter()
        .find(|c| c.pool_id.as_deref() == Some("workers"))
        .unwrap();
    assert_eq!(workers.in_trouble(), 3, "two unusable, one starttaskfailed");
    assert!(workers.worth_listing(false));
    let quota = all
        .iter()
        .find(|c| c.pool_id.as_deref() == Some("quota-pool"))
        .unwrap();
    assert!(!quota.worth_listing(true), "no nodes, nothing to list");

    let one = ListOptions {
        filter: Some("poolId eq 'workers'".into()),
        ..ListOptions::default()
    };
    let only: Vec<_> = items(client.list_pool_node_counts(&one, deadline()))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(only.len(), 1);
    let too_many: Result<Vec<_>, _> = items(client.list_pool_node_counts(&paged(11), deadline()))
        .try_collect()
        .await;
    let error = too_many.unwrap_err();
    assert!(matches!(error, BatchError::BadRequest(_)), "{error:?}");
}

fn logs_to(url: &str) -> UploadLogsOptions {
    UploadLogsOptions {
        container_url: Secret::new(url),
        start_time: time::macros::datetime!(2026-12-04 08:00 UTC),
        end_time: None,
        identity_resource_id: None,
    }
}

#[tokio::test]
async fn agent_logs_are_requested_and_arrive_later() {
    let run = Running::start(Scenario::builtin()).await;
    run.emulator.set_agent_log_delay(Duration::from_millis(100));
    let client = run.client();
    let dir = tempfile::tempdir().unwrap();
    let url = url::Url::from_directory_path(dir.path()).unwrap();
    let result = client
        .upload_node_logs("workers", DISK_FULL, &logs_to(url.as_str()), deadline())
        .await
        .unwrap();
    assert_eq!(result.number_of_files_uploaded, 4);
    assert!(
        result
            .virtual_directory_name
            .starts_with("workers/tvm-1695681911-1-20261204t080000z/")
    );
    let landed = dir.path().join(&result.virtual_directory_name);
    let mut found = 0;
    for _ in 0..500 {
        found = count_files(&landed);
        if found == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(found, 4);

    // A node that is gone: NotFound, not retried.
    run.emulator.clear_requests();
    let error = client
        .upload_node_logs("linux", "tvm-04", &logs_to(url.as_str()), deadline())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("NodeNotFound"));
    assert_eq!(run.emulator.requests().len(), 1);

    // The container URL is a secret: not in the error, whatever the service says.
    let sas = "ftp://acct.example/logs?sv=2025-01-05&sp=w&sig=TOP-SECRET-SIG";
    let error = client
        .upload_node_logs("workers", LOST, &logs_to(sas), deadline())
        .await
        .unwrap_err();
    assert!(matches!(error, BatchError::BadRequest(_)), "{error:?}");
    let text = format!("{error} {error:?}");
    assert!(!text.contains("TOP-SECRET"), "{text}");
    assert!(!format!("{:?}", logs_to(sas)).contains("TOP-SECRET"));
    // With an identity instead of a SAS.
    run.emulator.set_agent_log_delay(Duration::from_secs(3600));
    let mut with_identity = logs_to("https://acct.blob.core.windows.net/logs");
    with_identity.identity_resource_id = Some("/subscriptions/s/uami".into());
    client
        .upload_node_logs("workers", LOST, &with_identity, deadline())
        .await
        .unwrap();
    let uploads = run.emulator.agent_log_uploads();
    assert_eq!(
        uploads.last().unwrap().identity_reference.as_deref(),
        Some("/subscriptions/s/uami")
    );
}

fn count_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() { count_files(&path) } else { 1 }
        })
        .sum()
}

#[tokio::test]
async fn remove_nodes_is_idempotent_and_says_when_to_wait() {
    let run = Running::start(Scenario::builtin()).await;
    let client = run.client();
    let requeue = RemoveNodesOptions::default();
    let outcome = client
        .remove_nodes("workers", &[DISK_FULL.to_owned()], &requeue, deadline())
        .await
        .unwrap();
    assert_eq!(outcome, ActionOutcome::Accepted);
    // The same removal again (a retry whose answer was lost): the node is already leaving.
    run.emulator.clear_requests();
    let repeat = client
        .remove_nodes("workers", &[DISK_FULL.to_owned()], &requeue, deadline())
        .await
        .unwrap();
    assert_eq!(
        repeat,
        ActionOutcome::AlreadyInState {
            code: "PoolBeingResized".into()
        }
    );
    assert_eq!(run.emulator.node_actions().len(), 1, "not removed twice");
    // The pool resizes: a second removal of another node must wait (a conflict, not retried).
    run.emulator.clear_requests();
    let busy = client
        .remove_nodes("workers", &[LOST.to_owned()], &requeue, deadline())
        .await
        .unwrap_err();
    assert!(matches!(busy, BatchError::Conflict(_)) && busy.code() == Some("PoolBeingResized"));
    // The POST, then one read of the node: not leaving, so a conflict.
    let methods: Vec<_> = run
        .emulator
        .requests()
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(methods, ["POST", "GET"]);
    run.emulator.settle();
    // Gone now: removing it again is done already.
    let again = client
        .remove_nodes("workers", &[DISK_FULL.to_owned()], &requeue, deadline())
        .await
        .unwrap();
    assert_eq!(
        again,
        ActionOutcome::AlreadyInState {
            code: "NodeNotFound".into()
        }
    );
    // A deleting pool takes its nodes with it.
    let deleting = client
        .remove_nodes("old-pool", &["tvm-x".to_owned()], &requeue, deadline())
        .await
        .unwrap();
    assert_eq!(
        deleting,
        ActionOutcome::AlreadyInState {
            code: "PoolBeingDeleted".into()
        }
    );
    // Refused before any request.
    run.emulator.clear_requests();
    for bad in [
        Vec::new(),
        (0..101).map(|i| format!("n{i}")).collect(),
        vec!["..".to_owned()],
    ] {
        let error = client
            .remove_nodes("workers", &bad, &requeue, deadline())
            .await
            .unwrap_err();
        assert!(matches!(error, BatchError::BadRequest(_)), "{error:?}");
    }
    assert!(run.emulator.requests().is_empty());
    let actions = run.emulator.node_actions();
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(
        (actions[0].kind, actions[0].option.as_str()),
        (NodeActionKind::Remove, "requeue")
    );
}

#[tokio::test]
async fn reimage_is_idempotent_and_a_gone_node_is_not_found() {
    let run = Running::start(Scenario::builtin()).await;
    let client = run.client();
    let first = client
        .reimage_node(
            "workers",
            START_FAILED,
            NodeDeallocation::TaskCompletion,
            deadline(),
        )
        .await
        .unwrap();
    assert_eq!(first, ActionOutcome::Accepted);
    let second = client
        .reimage_node(
            "workers",
            START_FAILED,
            NodeDeallocation::Requeue,
            deadline(),
        )
        .await
        .unwrap();
    assert_eq!(
        second,
        ActionOutcome::AlreadyInState {
            code: "NodeBeingReimaged".into()
        }
    );
    run.emulator.settle();
    let node = client
        .get_node("workers", START_FAILED, &GetOptions::default(), deadline())
        .await
        .unwrap();
    assert_eq!(node.state, Some(NodeState::Idle));
    let gone = client
        .reimage_node("linux", "tvm-04", NodeDeallocation::Requeue, deadline())
        .await
        .unwrap_err();
    assert!(gone.is_not_found(), "{gone:?}");
    let actions = run.emulator.node_actions();
    assert_eq!(actions.len(), 1);
    assert_eq!(
        (actions[0].kind, actions[0].option.as_str()),
        (NodeActionKind::Reimage, "taskcompletion")
    );
}

#[tokio::test]
async fn throttled_pool_reads_are_retried_after_retry_after() {
    let run = Running::start(Scenario::builtin()).await;
    let client = run.client();
    run.emulator.set_faults(vec![
        FaultRule::new(Fault::Throttle {
            retry_after_seconds: 1,
        })
        .path_prefix("/pools/workers/nodes")
        .times(1),
        FaultRule::new(Fault::ServerBusy {
            retry_after_seconds: None,
        })
        .path_prefix("/nodecounts")
        .times(1),
    ]);
    let nodes: Vec<_> = items(client.list_nodes("workers", &ListOptions::default(), deadline()))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(nodes.len(), 5);
    let counts: Vec<_> = items(client.list_pool_node_counts(&ListOptions::default(), deadline()))
        .try_collect()
        .await
        .unwrap();
    assert!(!counts.is_empty());
    let statuses: Vec<_> = run.emulator.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200, 503, 200]);
    // A Retry-After beyond the deadline is not waited for.
    run.emulator.set_faults(vec![
        FaultRule::new(Fault::Throttle {
            retry_after_seconds: 600,
        })
        .times(1),
    ]);
    let error = client
        .get_pool(
            "workers",
            &GetOptions::default(),
            Deadline::after(Duration::from_secs(20)),
        )
        .await
        .unwrap_err();
    assert_eq!(error.retry_after(), Some(Duration::from_secs(600)));
}
