//! Real failure payloads (`tests/corpus/real-payloads/`): what the Batch service returned to
//! other projects and users, each with its source in that folder's `PROVENANCE.md`. Every case is
//! diagnosed as it is and checked against `expect.json`: the class, the exit code and the failure
//! code a diagnosis must surface. Case 15 is a negative control: nothing failed, so no diagnosis.
//!
//! The pool and node cases (16–22) are pools and nodes; case 16 (`stretch`) is the pre-2017 pool
//! shape, with a singular `resizeError` and `currentDedicated`/`targetDedicated`, read into the
//! current fields.

use std::collections::BTreeMap;
use std::path::PathBuf;

use batch_triage_diagnosis::payload::read_slice;
use batch_triage_diagnosis::wire::{AllocationState, NodeState};
use batch_triage_diagnosis::{Diagnosis, Evidence, Item, PayloadError, PayloadKind, diagnose_item};
use serde::Deserialize;

use crate::corpus::corpus_dir;

/// One entry of `expect.json`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    class: Option<String>,
    exit_code: Option<i32>,
    code: Option<String>,
    /// A case beyond what today's API returns (16, a 2016 pool shape).
    #[serde(default)]
    stretch: bool,
}

fn real_payloads_dir() -> PathBuf {
    corpus_dir().join("real-payloads")
}

fn expectations() -> BTreeMap<String, Expected> {
    let bytes = std::fs::read(real_payloads_dir().join("expect.json")).expect("expect.json");
    serde_json::from_slice(&bytes).expect("expect.json maps file names to expectations")
}

fn diagnose_file(name: &str) -> Result<Vec<Diagnosis>, PayloadError> {
    let bytes = std::fs::read(real_payloads_dir().join(name))
        .unwrap_or_else(|e| panic!("{name}: cannot read: {e}"));
    let mut diagnoses = Vec::new();
    read_slice(&bytes, &mut |item| {
        diagnoses.extend(diagnose_item(&item, &Evidence::default()))
    })?;
    Ok(diagnoses)
}

#[test]
fn every_payload_file_has_an_expectation_and_every_expectation_a_file() {
    let expected = expectations();
    let mut files: Vec<String> = std::fs::read_dir(real_payloads_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") && n != "expect.json")
        .collect();
    files.sort();
    let listed: Vec<String> = expected.keys().cloned().collect();
    assert_eq!(files, listed, "the case files and expect.json disagree");
    assert_eq!(files.len(), 23, "the 23 real payloads");
}

#[test]
fn every_payload_is_diagnosed_as_expected() {
    let mut checked = 0;
    for (name, expected) in expectations() {
        let Some(class) = expected.class.as_deref() else {
            continue;
        };
        let diagnoses = diagnose_file(&name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(diagnoses.len(), 1, "{name}: one subject, one diagnosis");
        let diagnosis = &diagnoses[0];
        assert_eq!(diagnosis.class.as_str(), class, "{name}: class");
        assert_eq!(diagnosis.exit_code, expected.exit_code, "{name}: exit code");
        let code = diagnosis.failure.as_ref().and_then(|f| f.code.as_deref());
        assert_eq!(code, expected.code.as_deref(), "{name}: failure code");
        // Batch's own message always reaches the reader.
        if let Some(message) = diagnosis
            .failure
            .as_ref()
            .and_then(|f| f.message.as_deref())
        {
            assert!(
                diagnosis.cause.contains(message.trim()),
                "{name}: the cause lacks Batch's message {message:?}: {}",
                diagnosis.cause
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 22, "every case but the negative control 15");
}

#[test]
fn the_pre_2017_scheduling_error_of_a_task_is_its_failure() {
    // Case 08: API 2016-07-01.3.1 reports a terminated task in executionInfo.schedulingError.
    let diagnoses = diagnose_file("08-xplat-cli-old-api-terminated-p1d.json").unwrap();
    let diagnosis = &diagnoses[0];
    assert_eq!(diagnosis.class.as_str(), "task.terminated");
    let failure = diagnosis.failure.as_ref().expect("the failure is surfaced");
    assert_eq!(failure.category.as_deref(), Some("usererror"));
    assert_eq!(
        failure.message.as_deref(),
        Some("Task Was Ended by User Request")
    );
    assert!(
        diagnosis
            .cause
            .ends_with(" Batch says: \"Task Was Ended by User Request\""),
        "{}",
        diagnosis.cause
    );
    // The P1D limit was not reached: the task never started.
    assert!(
        diagnosis.summary.contains("terminated"),
        "{}",
        diagnosis.summary
    );
}

#[test]
fn a_running_preparation_task_gives_no_diagnosis() {
    let expected = &expectations()["15-xplat-cli-prep-release-status-prep-running.json"];
    assert_eq!(expected.class, None);
    let diagnoses = diagnose_file("15-xplat-cli-prep-release-status-prep-running.json")
        .expect("a prep/release status list parses");
    assert!(diagnoses.is_empty(), "nothing failed: {diagnoses:#?}");
}

/// The pool and node cases (16–22) parse into pool and node items carrying the expected code:
/// the resize error, the autoscale error or the node error.
#[test]
fn pool_and_node_payloads_parse_into_pool_and_node_items() {
    let expected = expectations();
    let mut checked = 0;
    for (name, e) in &expected {
        let Some(class) = e.class.as_deref() else {
            continue;
        };
        if !(class.starts_with("pool.") || class.starts_with("node.")) {
            continue;
        }
        let bytes = std::fs::read(real_payloads_dir().join(name)).unwrap();
        let mut items = Vec::new();
        let kind = read_slice(&bytes, &mut |item| items.push(item))
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(items.len(), 1, "{name}: one subject");
        let code = match (&items[0], class) {
            (Item::Pool(pool), "pool.resize_failed") => {
                assert_eq!(kind, PayloadKind::Pool, "{name}");
                pool.resize_errors[0].code.clone()
            }
            (Item::Pool(pool), "pool.autoscale_failed") => {
                assert_eq!(kind, PayloadKind::Pool, "{name}");
                pool.auto_scale_error().and_then(|e| e.code.clone())
            }
            (Item::Node(node), "node.unusable") => {
                assert_eq!(kind, PayloadKind::Node, "{name}");
                assert_eq!(node.state, Some(NodeState::Unusable), "{name}");
                node.errors[0].code.clone()
            }
            (other, _) => panic!("{name}: expected a pool or node for {class}, got {other:?}"),
        };
        assert_eq!(code, e.code, "{name}: code");
        checked += 1;
    }
    assert_eq!(checked, 7, "cases 16–22 are the pool and node payloads");
    assert!(expected["16-xplat-cli-old-api-pool-resize-stopped.json"].stretch);
}

#[test]
fn the_2016_pool_shape_reads_into_the_current_fields() {
    let bytes =
        std::fs::read(real_payloads_dir().join("16-xplat-cli-old-api-pool-resize-stopped.json"))
            .unwrap();
    let mut items = Vec::new();
    read_slice(&bytes, &mut |item| items.push(item)).unwrap();
    let Item::Pool(pool) = &items[0] else {
        panic!("a pool: {items:?}")
    };
    assert_eq!(pool.current_dedicated_nodes, Some(3));
    assert_eq!(pool.target_dedicated_nodes, Some(5));
    assert_eq!(pool.resize_errors.len(), 1);
    assert_eq!(pool.allocation_state, Some(AllocationState::Steady));
    assert_eq!(pool.current_nodes(), Some(3));
    assert_eq!(pool.target_nodes(), Some(5));
}

#[test]
fn pool_and_node_causes_say_what_the_payloads_say() {
    let one = |name: &str| {
        let mut diagnoses = diagnose_file(name).unwrap();
        assert_eq!(diagnoses.len(), 1, "{name}");
        diagnoses.remove(0)
    };
    // 16, 17: a user stopped the resize; no quota, no capacity is blamed.
    for name in [
        "16-xplat-cli-old-api-pool-resize-stopped.json",
        "17-az-cli-pool-resize-stopped-lowpri.json",
    ] {
        let d = one(name);
        assert!(d.cause.contains("Stop Resize"), "{name}: {}", d.cause);
        let text = format!("{} {}", d.cause, d.hints.join(" ")).to_lowercase();
        assert!(
            !text.contains("quota") && !text.contains("capacity"),
            "{name}: {text}"
        );
    }
    let d = one("16-xplat-cli-old-api-pool-resize-stopped.json");
    assert_eq!(d.subject.pool_id.as_deref(), Some("xplatTestPool"));
    assert_eq!(d.subject.account.as_deref(), Some("jstesteastus2"));
    assert!(d.summary.contains("3 of 5 nodes"), "{}", d.summary);
    let d = one("17-az-cli-pool-resize-stopped-lowpri.json");
    assert!(d.summary.contains("0 of 3 nodes"), "{}", d.summary);
    // No evidence about waiting jobs: an error, not critical, and the empty pool is pointed out.
    assert_eq!(d.severity.as_str(), "error");
    assert!(
        d.hints.iter().any(|h| h.contains("no node")),
        "{:?}",
        d.hints
    );

    // 18: the relayed provider error is a Hyper-V generation mismatch.
    let d = one("18-msdocs-support-pool-allocation-failed-provider-error-json.json");
    assert!(d.cause.contains("Hyper-V generation"), "{}", d.cause);
    assert!(d.cause.contains("The compute provider says: BadRequest: \"The selected VM size 'STANDARD_A1_V2' cannot boot Hypervisor Generation '2'."), "{}", d.cause);
    assert!(d.hints[0].contains("generation"), "{:?}", d.hints);
    assert!(
        !d.hints.iter().any(|h| h.contains("truncated")),
        "not truncated: {:?}",
        d.hints
    );
    // 19: regional capacity, not a quota.
    let d = one("19-msdocs-support-pool-allocation-failed-capacity.json");
    assert!(d.cause.contains("no capacity left"), "{}", d.cause);
    assert!(
        d.hints[0].contains("another VM size or region"),
        "{:?}",
        d.hints
    );
    assert!(!d.cause.to_lowercase().contains("quota"), "{}", d.cause);
    // 20: the evaluation error and its position reach the reader.
    let d = one("20-js-sdk-autoscale-formula-evaluation-error.json");
    assert!(
        d.cause
            .contains("Line 1, Col 1: Undefined symbol: $something_useless"),
        "{}",
        d.cause
    );
    assert_eq!(d.subject.pool_id.as_deref(), Some("jssdkPool-Basic68e8"));
    // 21: a full disk is not recovered by Batch; 22: neither is a package download failure.
    let d = one("21-msdocs-support-node-unusable-diskfull.json");
    assert!(
        d.cause.contains("disk") && d.cause.contains("does not recover"),
        "{}",
        d.cause
    );
    assert!(d.cause.contains("The VM disk is full."), "{}", d.cause);
    let d = one("22-msdocs-support-node-unusable-app-package-error.json");
    assert!(d.cause.contains("application package"), "{}", d.cause);
    assert!(
        d.cause
            .contains("ApplicationPackageReference: \"asdf:0.0.1\""),
        "{}",
        d.cause
    );
}

fn diagnose_json(json: serde_json::Value) -> Diagnosis {
    let bytes = serde_json::to_vec(&json).unwrap();
    let mut diagnoses = Vec::new();
    read_slice(&bytes, &mut |item| {
        diagnoses.extend(diagnose_item(&item, &Evidence::default()))
    })
    .unwrap();
    assert_eq!(diagnoses.len(), 1);
    diagnoses.remove(0)
}

#[test]
fn failure_info_wins_over_a_scheduling_error_and_an_empty_one_says_nothing() {
    let both = diagnose_json(serde_json::json!({
        "id": "t", "state": "completed",
        "executionInfo": {
            "exitCode": 3, "retryCount": 0, "requeueCount": 0,
            "failureInfo": {"category": "usererror", "code": "FailureExitCode", "message": "new"},
            "schedulingError": {"category": "UserError", "code": "TaskEnded", "message": "old"}
        }
    }));
    assert_eq!(both.class.as_str(), "task.exit_code");
    assert_eq!(
        both.failure.as_ref().and_then(|f| f.message.as_deref()),
        Some("new")
    );
    let empty = diagnose_json(serde_json::json!({
        "id": "t", "state": "completed",
        "executionInfo": {"exitCode": 0, "retryCount": 0, "requeueCount": 0, "schedulingError": {}}
    }));
    assert_eq!(empty.class.as_str(), "task.succeeded");
    assert_eq!(empty.failure, None);
}

#[test]
fn an_unknown_failure_without_a_message_promises_none() {
    let diagnosis = diagnose_json(serde_json::json!({
        "id": "t", "state": "completed",
        "executionInfo": {"result": "failure", "retryCount": 0, "requeueCount": 0,
            "failureInfo": {"category": "servererror", "code": "SomethingNew"}}
    }));
    assert_eq!(diagnosis.class.as_str(), "task.unknown");
    assert_eq!(
        diagnosis.cause,
        "batch-triage does not recognise this failure, and Batch gave no message with it."
    );
}
