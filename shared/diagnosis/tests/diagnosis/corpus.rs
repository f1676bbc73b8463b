//! Every payload of the repository's Batch corpus (`tests/corpus/batch/`, sources in its
//! `PROVENANCE.md`) parses, loaded as it is, and its diagnoses are snapshot-tested. The one
//! invalid JSON file gets a clear error that points at the offending character.

use std::path::{Path, PathBuf};

use batch_triage_diagnosis::payload::read_slice;
use batch_triage_diagnosis::{Evidence, PayloadError, diagnose_item};

/// The corpus root (`tests/corpus/` at the top of the repository). File names below it, with
/// `/` turned into `__`, name the snapshots.
pub(crate) fn corpus_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus");
    assert!(
        dir.join("batch").is_dir(),
        "the corpus is not at {} (it is part of the repository: is the checkout complete?)",
        dir.display()
    );
    dir
}

fn corpus_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&corpus_dir().join("batch"), &mut files);
    files.sort();
    files
}

#[test]
fn every_corpus_file_parses_and_is_snapshot_tested() {
    let root = corpus_dir();
    let files = corpus_files();
    assert!(
        files.len() >= 38,
        "expected the whole corpus, found {} files",
        files.len()
    );
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        let name = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace(['/', '\\'], "__");
        let mut diagnoses = Vec::new();
        let result = read_slice(&bytes, &mut |item| {
            diagnoses.extend(diagnose_item(&item, &Evidence::default()))
        });
        if name.contains("INVALID") {
            match result {
                Err(PayloadError::Syntax {
                    line,
                    column,
                    message,
                }) => {
                    assert_eq!((line, column), (22, 26), "{name}");
                    assert!(message.contains("U+FF0C"), "{name}: {message}");
                }
                other => panic!("{name}: expected a syntax error, got {other:?}"),
            }
            continue;
        }
        result.unwrap_or_else(|e| panic!("{name} does not parse: {e}"));
        insta::with_settings!({ snapshot_suffix => name.clone(), prepend_module_to_snapshot => false }, {
            insta::assert_json_snapshot!("corpus", diagnoses);
        });
    }
}

#[test]
fn corpus_events_are_diagnosed_as_batch_means_them() {
    let diagnose = |rel: &str| {
        let bytes = std::fs::read(corpus_dir().join(rel)).unwrap();
        let mut out = Vec::new();
        read_slice(&bytes, &mut |item| {
            out.extend(diagnose_item(&item, &Evidence::default()))
        })
        .unwrap();
        out
    };
    let fail = diagnose("batch/events/TaskFailEvent.2026-02-05.json");
    assert_eq!(fail[0].class.as_str(), "task.exit_code");
    assert_eq!(
        fail[0].failure.as_ref().and_then(|f| f.code.as_deref()),
        Some("FailureExitCode")
    );
    let old_fail = diagnose("batch/events/TaskFailEvent.2019-08-15.json");
    assert_eq!(old_fail[0].class.as_str(), "task.exit_code");
    assert_eq!(
        old_fail[0].failure, None,
        "the 2019 event has no failure info and none is invented"
    );
    assert_eq!(
        diagnose("batch/events/TaskScheduleFailEvent.2025-07-01.json")[0]
            .class
            .as_str(),
        "task.prep_blocked"
    );
    // A bare body has no operationName, and a requeue body looks like a failure (it holds the
    // pre-requeue state); inside its record it is a requeue (see eventhub-records-batch).
    assert_eq!(
        diagnose("batch/events/TaskRequeueEvent.2026-08-05.json")[0]
            .class
            .as_str(),
        "task.command_launch"
    );
    assert_eq!(
        diagnose("batch/events/TaskStartEvent.2017-04-20.json")[0]
            .class
            .as_str(),
        "task.in_progress"
    );
    assert_eq!(
        diagnose("batch/events/TaskCompleteEvent.2017-04-20.json")[0]
            .class
            .as_str(),
        "task.succeeded"
    );
    assert!(
        diagnose("batch/events/SpecialTaskEvent.2026-08-05.json").is_empty(),
        "a succeeded prep task gives none"
    );
    assert!(
        diagnose("batch/events/ResourceLogEnvelope.PoolResizeCompleteEvent.PT1H-line.json")
            .is_empty()
    );
    assert_eq!(
        diagnose("batch/errors/SchedulingError.BlobNotFound.legacy-docs.json")[0]
            .class
            .as_str(),
        "task.resource_files"
    );
    let job = diagnose("batch/2026-10-01/Jobs_GetJob.json");
    assert_eq!(job[0].class.as_str(), "job.terminated");
    assert_eq!(job[0].subject.account.as_deref(), Some("account"));
    assert!(
        diagnose("batch/2026-10-01/Jobs_ListJobPreparationAndReleaseTaskStatus.json").is_empty(),
        "prep and release succeeded"
    );
    assert_eq!(diagnose("batch/2026-10-01/Tasks_ListTasks.json").len(), 2);
}

/// Which corpus events are worth re-reading the task for: starts and successful completions
/// are not; failures, requeues and schedule failures are.
#[test]
fn only_events_that_may_report_a_failure_are_worth_a_task_read() {
    use batch_triage_diagnosis::Item;
    let worth = |file: &str| {
        let bytes = std::fs::read(corpus_dir().join(file)).unwrap();
        let mut verdicts = Vec::new();
        read_slice(&bytes, &mut |item| {
            if let Item::TaskEvent { kind, body, .. } = item {
                verdicts.push(body.may_report_failure(kind));
            }
        })
        .unwrap();
        assert_eq!(verdicts.len(), 1, "{file}: one task event");
        verdicts[0]
    };
    assert!(!worth("batch/events/TaskStartEvent.2017-04-20.json"));
    assert!(!worth("batch/events/TaskCompleteEvent.2017-04-20.json"));
    assert!(worth("batch/events/TaskFailEvent.2019-08-15.json"));
    assert!(worth("batch/events/TaskFailEvent.2026-02-05.json"));
    assert!(worth("batch/events/TaskRequeueEvent.2026-08-05.json"));
    assert!(worth("batch/events/TaskScheduleFailEvent.2025-07-01.json"));

    // A completion is looked at unless it plainly succeeded.
    let complete = |execution: serde_json::Value| {
        let body = serde_json::json!({"jobId": "j", "id": "t", "executionInfo": execution});
        let body: batch_triage_diagnosis::wire::TaskEventBody =
            serde_json::from_value(body).unwrap();
        body.may_report_failure(batch_triage_diagnosis::wire::TaskEventKind::Complete)
    };
    assert!(!complete(
        serde_json::json!({"exitCode": 0, "result": "Success"})
    ));
    assert!(complete(
        serde_json::json!({"exitCode": 3, "result": "Failure"})
    ));
    assert!(
        complete(serde_json::json!({"exitCode": 0, "result": "Success", "retryCount": 2})),
        "a success after retries is flaky"
    );
    assert!(complete(
        serde_json::json!({"exitCode": 0, "result": "Failure"})
    ));
    assert!(complete(
        serde_json::json!({"exitCode": null, "result": "Failure"})
    ));
    assert!(complete(serde_json::json!({"exitCode": "-1073741510"})));
    assert!(complete(
        serde_json::json!({"exitCode": 0, "result": "Success",
        "schedulingError": {"category": "UserError", "code": "FileUploadFailed", "message": "x"}})
    ));
    assert!(complete(serde_json::Value::Null), "no execution info: look");
}
