//! One fixture per scenario: the full diagnosis is snapshot-tested, and the facts that matter are
//! asserted explicitly so a snapshot update cannot silently change them.

use std::collections::HashSet;

use batch_triage_diagnosis::{ExitMeaning, FailureClass, Severity};

use crate::support::{diagnose_fixture, fixture_names};

#[test]
fn every_fixture_matches_its_snapshot() {
    for name in fixture_names() {
        let diagnoses = diagnose_fixture(&name);
        insta::with_settings!({ snapshot_suffix => name.clone(), prepend_module_to_snapshot => false }, {
            insta::assert_json_snapshot!("scenario", diagnoses);
        });
    }
}

/// (fixture, index of the diagnosis, class, exitMeaning, (jobAction, honoured, dependencyAction)).
type Expectation = (
    &'static str,
    usize,
    &'static str,
    Option<&'static str>,
    Option<(&'static str, Option<bool>, &'static str)>,
);

const EXPECTATIONS: &[Expectation] = &[
    (
        "exit-137-oom",
        0,
        "task.exit_code",
        Some("oom_or_sigkill"),
        Some(("terminate", Some(false), "block")),
    ),
    (
        "exit-minus9-sigkill",
        0,
        "task.exit_code",
        Some("oom_or_sigkill"),
        Some(("terminate", None, "block")),
    ),
    (
        "exit-127-command-not-found",
        0,
        "task.exit_code",
        Some("command_not_found"),
        None,
    ),
    (
        "exit-126-not-executable",
        0,
        "task.exit_code",
        Some("not_executable"),
        None,
    ),
    (
        "exit-139-segfault",
        0,
        "task.exit_code",
        Some("segfault"),
        None,
    ),
    (
        "exit-143-sigterm",
        0,
        "task.exit_code",
        Some("sigterm"),
        None,
    ),
    (
        "exit-1-application",
        0,
        "task.exit_code",
        Some("application"),
        None,
    ),
    (
        "exit-access-violation",
        0,
        "task.exit_code",
        Some("access_violation"),
        None,
    ),
    (
        "exit-dll-not-found",
        0,
        "task.exit_code",
        Some("dll_not_found"),
        None,
    ),
    (
        "exit-stack-buffer-overrun",
        0,
        "task.exit_code",
        Some("stack_buffer_overrun"),
        None,
    ),
    (
        "exit-dotnet-unhandled",
        0,
        "task.exit_code",
        Some("dotnet_unhandled_exception"),
        None,
    ),
    (
        "exit-file-not-found-hresult",
        0,
        "task.exit_code",
        Some("file_not_found"),
        None,
    ),
    (
        "timeout-wall-clock",
        0,
        "task.timeout",
        Some("ctrl_c_exit"),
        None,
    ),
    (
        "terminated-by-user",
        0,
        "task.terminated",
        Some("ctrl_c_exit"),
        None,
    ),
    (
        "command-program-not-found-shell-syntax",
        0,
        "task.command_launch",
        None,
        Some(("terminate", None, "block")),
    ),
    (
        "command-launch-failed",
        0,
        "task.command_launch",
        None,
        None,
    ),
    (
        "resource-blob-access-denied-sas",
        0,
        "task.resource_files",
        None,
        None,
    ),
    ("resource-disk-full", 0, "task.resource_files", None, None),
    (
        "output-upload-misc-error",
        0,
        "task.output_upload",
        None,
        Some(("none", None, "satisfy")),
    ),
    // The exit-code match beats fileUploadError.
    (
        "output-upload-exit-code-wins",
        0,
        "task.output_upload",
        None,
        Some(("disable", Some(true), "block")),
    ),
    ("container-invalid-image", 0, "task.container", None, None),
    ("container-mount-error", 0, "task.container", None, None),
    ("requeued", 0, "task.requeued", None, None),
    ("in-progress-retrying", 0, "task.in_progress", None, None),
    (
        "succeeded",
        0,
        "task.succeeded",
        None,
        Some(("none", None, "satisfy")),
    ),
    (
        "flaky",
        0,
        "task.flaky",
        None,
        Some(("none", None, "satisfy")),
    ),
    ("unknown-code", 0, "task.unknown", None, None),
    // Ranges are inclusive at both ends.
    (
        "exit-conditions-range-inclusive",
        0,
        "task.exit_code",
        Some("application"),
        Some(("terminate", Some(true), "block")),
    ),
    // An unlisted code falls to `default`.
    (
        "exit-conditions-default",
        0,
        "task.exit_code",
        Some("application"),
        Some(("disable", Some(true), "satisfy")),
    ),
    // jobAction is not honoured under onTaskFailure=noaction.
    (
        "exit-conditions-noaction-job",
        0,
        "task.exit_code",
        Some("application"),
        Some(("terminate", Some(false), "block")),
    ),
    (
        "exit-conditions-pre-processing",
        0,
        "task.resource_files",
        None,
        Some(("none", Some(true), "satisfy")),
    ),
    (
        "wire-casing-and-string-ints",
        0,
        "task.exit_code",
        Some("oom_or_sigkill"),
        None,
    ),
    (
        "active-on-prep-failed-node",
        0,
        "task.prep_blocked",
        None,
        None,
    ),
    ("job-timeout", 0, "job.timeout", None, None),
    (
        "job-terminated-by-task",
        0,
        "job.terminated_by_task",
        None,
        None,
    ),
    ("job-terminated-by-user", 0, "job.terminated", None, None),
    ("job-completed", 0, "job.completed", None, None),
    (
        "job-scheduling-error",
        0,
        "job.scheduling_error",
        None,
        None,
    ),
    ("job-active", 0, "job.in_progress", None, None),
    ("job-stuck-prep-failed", 0, "job.stuck", None, None),
    (
        "prep-status-one-node-failed",
        0,
        "job.prep_failed",
        Some("application"),
        None,
    ),
    (
        "release-failed",
        0,
        "job.release_failed",
        Some("application"),
        None,
    ),
    (
        "eventhub-records-batch",
        0,
        "task.exit_code",
        Some("oom_or_sigkill"),
        None,
    ),
    ("eventhub-records-batch", 2, "task.succeeded", None, None),
    ("eventhub-records-batch", 3, "task.in_progress", None, None),
    ("eventhub-records-batch", 4, "task.requeued", None, None),
    (
        "eventhub-records-batch",
        5,
        "job.prep_failed",
        Some("application"),
        None,
    ),
    (
        "eventhub-records-batch",
        6,
        "node.start_task_failed",
        Some("application"),
        None,
    ),
    (
        "eventgrid-events",
        0,
        "task.exit_code",
        Some("oom_or_sigkill"),
        None,
    ),
    (
        "cloudevents-batch",
        0,
        "task.exit_code",
        Some("command_not_found"),
        None,
    ),
    (
        "cloudevents-batch",
        1,
        "task.exit_code",
        Some("application"),
        None,
    ),
    (
        "cloudevent-single",
        0,
        "task.exit_code",
        Some("segfault"),
        None,
    ),
    (
        "pt1h-json-lines",
        1,
        "task.exit_code",
        Some("segfault"),
        None,
    ),
    (
        "task-list-mixed",
        3,
        "task.timeout",
        Some("ctrl_c_exit"),
        None,
    ),
    (
        "pool-resize-lowpri-quota-list",
        0,
        "pool.resize_failed",
        None,
        None,
    ),
    (
        "pool-resize-lowpri-quota-list",
        1,
        "pool.resize_failed",
        None,
        None,
    ),
    (
        "pool-resize-allocation-failed-subnet-delegation",
        0,
        "pool.resize_failed",
        None,
        None,
    ),
    (
        "pool-resize-allocation-failed-key-vault",
        0,
        "pool.resize_failed",
        None,
        None,
    ),
    (
        "pool-resize-provider-json-truncated",
        0,
        "pool.resize_failed",
        None,
        None,
    ),
    (
        "pool-resize-policy-restricted",
        0,
        "pool.resize_failed",
        None,
        None,
    ),
    ("pool-delete-stuck", 0, "pool.delete_stuck", None, None),
    (
        "pool-events-resize-and-autoscale",
        0,
        "pool.resize_failed",
        None,
        None,
    ),
    (
        "pool-events-resize-and-autoscale",
        1,
        "pool.autoscale_failed",
        None,
        None,
    ),
    (
        "node-unusable-diskfull-list",
        0,
        "node.unusable",
        None,
        None,
    ),
    (
        "node-unusable-diskfull-list",
        1,
        "node.unusable",
        None,
        None,
    ),
    ("node-unusable-no-errors", 0, "node.unusable", None, None),
    (
        "node-unusable-container-image",
        0,
        "node.unusable",
        None,
        None,
    ),
    (
        "node-start-task-failed",
        0,
        "node.start_task_failed",
        Some("command_not_found"),
        None,
    ),
    (
        "node-start-task-failed-no-wait",
        0,
        "node.start_task_failed",
        Some("application"),
        None,
    ),
];

#[test]
fn scenarios_have_the_expected_class_meaning_and_impact() {
    for (name, index, class, meaning, impact) in EXPECTATIONS {
        let diagnoses = diagnose_fixture(name);
        let d = diagnoses
            .get(*index)
            .unwrap_or_else(|| panic!("{name}: no diagnosis #{index} (got {})", diagnoses.len()));
        assert_eq!(d.class.as_str(), *class, "{name}[{index}] class");
        assert_eq!(
            d.severity,
            d.class.severity(),
            "{name}[{index}] severity follows the class"
        );
        assert_eq!(
            d.exit_meaning.map(ExitMeaning::as_str),
            *meaning,
            "{name}[{index}] exitMeaning"
        );
        if let Some((action, honoured, dependency)) = impact {
            let got = d
                .impact
                .as_ref()
                .unwrap_or_else(|| panic!("{name}[{index}] has no impact"));
            assert_eq!(got.job_action, *action, "{name}[{index}] jobAction");
            assert_eq!(
                got.job_action_honoured, *honoured,
                "{name}[{index}] jobActionHonoured"
            );
            assert_eq!(
                got.dependency_action, *dependency,
                "{name}[{index}] dependencyAction"
            );
        }
    }
}

#[test]
fn every_class_and_exit_meaning_has_a_fixture() {
    let mut classes = HashSet::new();
    let mut meanings = HashSet::new();
    for name in crate::support::fixture_names() {
        for d in diagnose_fixture(&name) {
            classes.insert(d.class);
            meanings.extend(d.exit_meaning);
        }
    }
    // job.unknown needs a state Batch does not send; it is covered by a unit-style check below.
    // delivery.unprocessable is about a delivery, not a Batch payload: the pipeline's parking
    // tests produce it.
    for class in FailureClass::ALL.iter().filter(|c| {
        !matches!(
            c,
            FailureClass::JobUnknown | FailureClass::DeliveryUnprocessable
        )
    }) {
        assert!(classes.contains(class), "no fixture produces {class}");
    }
    for meaning in ExitMeaning::ALL {
        assert!(
            meanings.contains(meaning),
            "no fixture produces exit meaning {meaning}"
        );
    }
}

/// How many diagnoses each pool and node fixture gives: healthy pools and nodes, successful
/// resizes and start tasks give none.
#[test]
fn pool_and_node_fixtures_give_one_diagnosis_per_problem() {
    for (name, count) in [
        ("pool-resize-lowpri-quota-list", 2),
        ("pool-events-resize-and-autoscale", 2),
        ("node-unusable-diskfull-list", 2),
        ("node-start-task-failed-no-wait", 1),
        ("pool-delete-stuck", 1),
    ] {
        assert_eq!(diagnose_fixture(name).len(), count, "{name}");
    }
}

#[test]
fn a_pool_without_nodes_and_with_jobs_waiting_is_critical() {
    let d = &diagnose_fixture("pool-resize-quota-jobs-waiting")[0];
    assert_eq!(d.class, FailureClass::PoolResizeFailed);
    assert_eq!(d.severity, Severity::Critical);
    assert!(d.cause.contains("dedicated vCPU quota"), "{}", d.cause);
    assert!(d.cause.contains("2 active jobs wait on it"), "{}", d.cause);
    assert!(
        d.hints[0].contains("Request more dedicated vCPUs"),
        "{:?}",
        d.hints
    );
    assert!(
        d.hints
            .iter()
            .any(|h| h.contains("20 nodes of standard_d16s_v5")),
        "{:?}",
        d.hints
    );
}

#[test]
fn an_unknown_job_state_is_job_unknown() {
    let items = crate::support::items(
        br#"{"id": "j", "poolInfo": {"poolId": "p"}, "state": "hibernating"}"#,
    );
    let d = batch_triage_diagnosis::diagnose_item(&items[0], &Default::default()).unwrap();
    assert_eq!(d.class, FailureClass::JobUnknown);
    assert_eq!(d.severity, Severity::Info);
    assert!(d.summary.contains("hibernating"), "{}", d.summary);
}

#[test]
fn hints_are_specific() {
    let hint_of = |name: &str, needle: &str| {
        let d = &diagnose_fixture(name)[0];
        assert!(
            d.hints.iter().any(|h| h.contains(needle)),
            "{name}: no hint mentions {needle:?}: {:#?}",
            d.hints
        );
    };
    hint_of("command-program-not-found-shell-syntax", "shell");
    hint_of("command-program-not-found-shell-syntax", "/bin/sh -c");
    hint_of("exit-137-oom", "VM size");
    hint_of("exit-137-oom", "'Killed'");
    hint_of("exit-minus9-sigkill", "ran out of memory");
    hint_of("exit-1-application", "missing library");
    hint_of("output-upload-misc-error", "fileuploaderr.txt");
    hint_of(
        "prep-status-one-node-failed",
        "workitems/genomics/job-1/fetchrefs/",
    );
    hint_of(
        "prep-status-one-node-failed",
        "_jobprep/tvm-1234567890_2-20261120t095500z/",
    );
    hint_of("job-stuck-prep-failed", "disable the job");
    hint_of("exit-conditions-noaction-job", "onTaskFailure is noaction");
    hint_of("exit-dll-not-found", "redistributable");
    hint_of("timeout-wall-clock", "maxWallClockTime");
    let prep = &diagnose_fixture("prep-status-one-node-failed")[0];
    assert!(
        prep.cause.contains("stuck"),
        "prep failure explains why the job is stuck: {}",
        prep.cause
    );
}

#[test]
fn negative_codes_are_shown_in_hex() {
    for (name, hex) in [
        ("exit-access-violation", "0xC0000005"),
        ("timeout-wall-clock", "0xC000013A"),
        ("exit-dll-not-found", "0xC0000135"),
        ("exit-dotnet-unhandled", "0xE0434352"),
        ("exit-file-not-found-hresult", "0x80070002"),
    ] {
        assert_eq!(
            diagnose_fixture(name)[0].exit_code_hex.as_deref(),
            Some(hex),
            "{name}"
        );
    }
    assert_eq!(diagnose_fixture("exit-137-oom")[0].exit_code_hex, None);
}

#[test]
fn secrets_never_reach_the_diagnosis() {
    for name in crate::support::fixture_names() {
        let json = serde_json::to_string(&diagnose_fixture(&name)).unwrap();
        assert!(
            !json.contains("S3cr3tSig"),
            "{name} leaks a SAS signature: {json}"
        );
    }
    let d = &diagnose_fixture("resource-blob-access-denied-sas")[0];
    let details = &d.failure.as_ref().unwrap().details;
    assert!(details.iter().any(|x| {
        x.value
            .as_deref()
            .is_some_and(|v| v.contains("sig=[REDACTED]"))
    }));
    // The command line may hold secrets: it is inspected, never echoed.
    let d = &diagnose_fixture("command-program-not-found-shell-syntax")[0];
    assert!(!d.hints.iter().any(|h| h.contains("merge.py")));
}

#[test]
fn same_cause_across_tasks_shares_a_fingerprint() {
    let records = diagnose_fixture("eventhub-records-batch");
    // TaskFailEvent and TaskCompleteEvent of the same failure.
    assert_eq!(records[0].fingerprint, records[1].fingerprint);
    let oom_rest = &diagnose_fixture("exit-137-oom")[0];
    let exit1 = &diagnose_fixture("exit-1-application")[0];
    assert_ne!(oom_rest.fingerprint, exit1.fingerprint);
}

#[test]
fn subjects_name_account_job_task_attempt_pool_and_node() {
    let d = &diagnose_fixture("exit-137-oom")[0];
    let s = &d.subject;
    assert_eq!(s.account.as_deref(), Some("contoso"));
    assert_eq!(s.job_id.as_deref(), Some("render"));
    assert_eq!(s.task_id.as_deref(), Some("train-17"));
    assert_eq!(s.attempt, Some(0));
    assert_eq!(s.pool_id.as_deref(), Some("gpu-pool"));
    assert_eq!(
        s.node_id.as_deref(),
        Some("tvm-1234567890_1-20261120t095500z")
    );
    // Events take the account from the record's resourceId.
    let e = &diagnose_fixture("eventhub-records-batch")[0];
    assert_eq!(e.subject.account.as_deref(), Some("contoso"));
    assert_eq!(e.subject.attempt, Some(2));
    // Prep/release subjects are nodes of a job, with no task.
    let p = &diagnose_fixture("prep-status-one-node-failed");
    assert_eq!(
        p.len(),
        1,
        "the node whose prep succeeded gives no diagnosis"
    );
    assert_eq!(p[0].subject.task_id, None);
    assert_eq!(
        p[0].subject.node_id.as_deref(),
        Some("tvm-1234567890_2-20261120t095500z")
    );
}

#[test]
fn successful_pool_events_and_references_give_no_diagnosis() {
    // 8 records: the successful pool resize event gives none; the prep and start-task events give one each.
    assert_eq!(diagnose_fixture("eventhub-records-batch").len(), 7);
    // The second Event Grid event is a bare reference.
    assert_eq!(diagnose_fixture("eventgrid-events").len(), 1);
}
