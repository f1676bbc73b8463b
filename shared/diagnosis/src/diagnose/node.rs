//! Diagnosing compute nodes from their REST body: an `unusable` node (`node.unusable`), and a
//! start task that failed (`node.start_task_failed`), also on a node whose start task does not
//! wait for success and which therefore stays `idle`.

use super::pool::{bounded, failure_of, more_errors};
use super::special::{SpecialFacts, special_task_diagnosis};
use super::{Evidence, dedup};
use crate::classes::{FailureClass, node_error_advice};
use crate::fingerprint::fingerprint;
use crate::redact::redact;
use crate::report::{Diagnosis, Subject};
use crate::wire::{ComputeNode, NodeError, NodeState, TaskResult, account_from_url};

/// Diagnoses one node: `node.unusable` for an unusable node, `node.start_task_failed` when its
/// start task failed (state `starttaskfailed`, or `startTaskInfo.result` `failure` on a node
/// that did not wait for it); none otherwise.
pub fn diagnose_node(node: &ComputeNode, evidence: &Evidence<'_>) -> Option<Diagnosis> {
    let pool_id = node
        .pool_id()
        .or_else(|| evidence.pool_id.map(str::to_owned));
    let account = evidence
        .account
        .map(str::to_ascii_lowercase)
        .or_else(|| node.url.as_deref().and_then(account_from_url));
    if node.state == Some(NodeState::Unusable) {
        return Some(unusable(node, account, pool_id));
    }
    let info = node.start_task_info.as_ref();
    let start_task_failed = node.state == Some(NodeState::StartTaskFailed)
        || info.is_some_and(|i| i.result == Some(TaskResult::Failure));
    if !start_task_failed {
        return None;
    }
    let failure = info
        .and_then(|i| i.failure_info.as_ref())
        .filter(|f| f.code.is_some() || f.message.is_some());
    let evidence = Evidence {
        account: account.as_deref(),
        ..*evidence
    };
    let mut diagnosis = special_task_diagnosis(
        FailureClass::NodeStartTaskFailed,
        SpecialFacts {
            exit_code: info.and_then(|i| i.exit_code),
            failure,
            attempt: info.map(|i| i.retry_count),
            node_id: node.id.clone(),
            pool_id,
            task_root: None,
        },
        &evidence,
    );
    // A node's start task is not the job's: the evidence's job says nothing about it.
    diagnosis.subject.job_id = None;
    let waits = node.start_task.as_ref().and_then(|s| s.wait_for_success);
    if node.state != Some(NodeState::StartTaskFailed) && waits != Some(true) {
        let state = node.state.as_ref().map_or("unknown", |s| s.as_str());
        diagnosis.cause.push_str(&format!(
            " The start task does not wait for success (waitForSuccess is false), so the node stays {state} and keeps taking tasks, which may fail for want of what the start task should have set up."
        ));
        diagnosis.hints.insert(0, "Set startTask.waitForSuccess to true on the pool so that a node whose start task fails takes no tasks (it shows as starttaskfailed instead), or make the tasks check what the start task sets up.".to_owned());
    }
    if let Some(retries) = info.map(|i| i.retry_count).filter(|r| *r > 0) {
        diagnosis.hints.push(format!(
            "Batch already retried the start task {retries} {} on this node.",
            if retries == 1 { "time" } else { "times" }
        ));
    }
    diagnosis.hints = dedup(diagnosis.hints);
    Some(diagnosis)
}

fn unusable(node: &ComputeNode, account: Option<String>, pool_id: Option<String>) -> Diagnosis {
    let class = FailureClass::NodeUnusable;
    let errors: Vec<&NodeError> = node.errors().collect();
    let node_name = node.id.as_deref().unwrap_or("(unknown node)");
    let of_pool = pool_id
        .as_deref()
        .map_or_else(String::new, |p| format!(" of pool {p}"));
    let mut hints = Vec::new();
    let (summary, cause, code, cause_key, failure) = match errors.first() {
        None => {
            hints.push("Wait: Batch is recovering the node, which can take 15 to 45 minutes or more. If it stays unusable longer, keep its node agent logs (Upload Batch Service Logs) and then reimage or remove it.".to_owned());
            hints.push("If nodes keep losing contact, check the pool's network: the subnet must allow Batch's inbound ports and outbound access to Azure Storage, and DNS on the subnet must resolve Storage; a custom image the Batch agent cannot run does this too.".to_owned());
            (
                format!("Node {node_name}{of_pool} is unusable and reports no error: Batch lost contact with it."),
                "The node is unusable and has no errors, which means Batch cannot communicate with the VM. Batch keeps trying to recover such a node by itself; tasks that were running on it are requeued.".to_owned(),
                None,
                String::new(),
                None,
            )
        }
        Some(first) => {
            let code = first.code.as_deref();
            let (mut cause, recovers) = match code.and_then(node_error_advice) {
                Some((cause, hint, recovers)) => {
                    hints.push(hint.to_owned());
                    (cause.to_owned(), recovers)
                }
                None => (
                    "The node reports an error batch-triage does not recognise.".to_owned(),
                    false,
                ),
            };
            if let Some(message) = &first.message {
                cause.push_str(&format!(
                    " Batch says: \"{}\"",
                    bounded(&redact(message.trim()), 1_000)
                ));
            }
            let details: Vec<String> = first
                .details
                .iter()
                .take(5)
                .filter_map(|d| {
                    let value = d.value.as_deref()?;
                    let name = d.name.as_deref().unwrap_or("detail");
                    Some(format!(
                        "{}: \"{}\"",
                        bounded(&redact(name.trim()), 100),
                        bounded(&redact(value.trim()), 500)
                    ))
                })
                .collect();
            if !details.is_empty() {
                cause.push_str(&format!(" Details: {}.", details.join("; ")));
            }
            if !recovers {
                cause.push_str(" Batch does not recover the node from this by itself.");
            }
            hints.extend(more_errors(&errors));
            let shown = code.map_or_else(
                || "an error without a code".to_owned(),
                |c| bounded(&redact(c), 200),
            );
            // The cause without the node: the same error groups across nodes and pools.
            let cause_key = std::iter::once(first.message.as_deref().unwrap_or_default())
                .chain(first.details.iter().filter_map(|d| d.value.as_deref()))
                .collect::<Vec<_>>()
                .join("\n");
            (
                format!("Node {node_name}{of_pool} is unusable: {shown}."),
                cause,
                code,
                cause_key,
                Some(failure_of(code, first.message.as_deref(), &first.details)),
            )
        }
    };
    hints.push("Keep the node agent logs (Upload Batch Service Logs) before you remove or reimage the node: Azure support asks for them first. An unusable node still counts against quota and costs money.".to_owned());
    Diagnosis {
        subject: Subject {
            account,
            pool_id,
            node_id: node.id.clone(),
            ..Subject::default()
        },
        class,
        severity: class.severity(),
        summary,
        cause,
        hints: dedup(hints),
        exit_code: None,
        exit_code_hex: None,
        exit_meaning: None,
        failure,
        impact: None,
        logs: Vec::new(),
        fingerprint: fingerprint(
            class,
            code,
            None,
            Some(&cause_key)
                .filter(|k| !k.is_empty())
                .map(String::as_str),
            None,
        ),
    }
}
