//! End to end: the Batch emulator over HTTP → `preserve` → a local directory store.

use std::sync::Arc;
use std::time::Duration;

use artifact_store::{ArtifactStore, LocalDirStore, ObjectKey};
use batch_client::{
    ActionOutcome, BatchApi, BatchClient, BatchConfig, BatchError, Deadline, DownloadOptions,
    FileDownload, FileInfo, FileListOptions, FileRef, GetOptions, ListOptions, PageStream,
    RetryPolicy, Secret, TerminateJobOptions,
};
use batch_emulator::{
    Emulator, Fault, FaultRule, Scenario, WELL_KNOWN_ACCOUNT_KEY, WELL_KNOWN_ACCOUNT_NAME,
};
use diagnosis::wire::{
    BatchJob, BatchTask, DisableTasks, NodeFile, PrepReleaseStatus, TaskCountsResult,
};
use futures::{StreamExt, TryStreamExt};
use preserve::{FileOutcome, Manifest, PreserveOptions, preserve_prep_release, preserve_task};
use sha2::{Digest, Sha256};

const STDERR: &str = "Traceback (most recent call last):\n  File \"train.py\"\nconnecting with AccountKey=c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTIzNDU2Nzg5MA==\nMemoryError\n";

fn scenario() -> Scenario {
    let task = |id: &str, node: &str| {
        serde_json::json!({
            "id": id, "state": "completed", "commandLine": "python train.py",
            "nodeInfo": {"poolId": "linux", "nodeId": node},
            "executionInfo": {"startTime": "now-40m", "endTime": "now-10m", "exitCode": 1,
                "result": "failure", "retryCount": 2, "requeueCount": 0,
                "failureInfo": {"category": "usererror", "code": "FailureExitCode"}}
        })
    };
    let json = serde_json::json!({
        "pools": [{"id": "linux", "nodes": [{"id": "tvm-01"}, {"id": "tvm-02"}, {"id": "tvm-03"}]}],
        "jobs": [{
            "job": {"id": "etl", "poolInfo": {"poolId": "linux"},
                    "jobPreparationTask": {"commandLine": "apt-get install x"}},
            "tasks": [
                {"task": task("t1", "tvm-01"), "files": {
                    "stdout.txt": "epoch 1\nepoch 2\n",
                    "stderr.txt": STDERR,
                    "wd/out/a.log": "log a\n",
                    "wd/b.txt": "not matched\n",
                    "wd/c.log": "log c\n"}},
                {"task": task("big", "tvm-01"), "files": {
                    "stdout.txt": {"generate": {"bytes": 3_000_000, "seed": 7, "tail": "Killed\n"}},
                    "stderr.txt": {"generate": {"bytes": 1_500_000, "seed": 8, "tail": "boom\n"}}}},
                {"task": task("gone", "tvm-02"), "files": {"stdout.txt": "x", "stderr.txt": "y"}},
                {"task": task("evil", "tvm-03"), "files": {
                    "stdout.txt": "hostile\n", "stderr.txt": "e",
                    "wd/we:ird name.log": "odd name\n"}},
                // A task with outputFiles: Batch wrote the upload logs beside stdout/stderr.
                {"task": task("upload", "tvm-01"), "files": {
                    "stdout.txt": "training done\n",
                    "stderr.txt": "upload failed\n",
                    "fileuploadout.txt": "Uploading 2 files\n",
                    "fileuploaderr.txt": "",
                    "wd/stdout.txt": "not the task's stdout\n",
                    "wd/fileuploaderr.txt": "nor its upload log\n"}},
                {"task": task("no-stderr", "tvm-01"), "files": {"stdout.txt": "only stdout\n"}}
            ],
            "preparationAndReleaseStatus": [{
                "status": {"poolId": "linux", "nodeId": "tvm-01",
                           "jobPreparationTaskExecutionInfo": {"state": "completed", "exitCode": 1, "result": "failure", "retryCount": 0}},
                "preparationFiles": {"stderr.txt": "E: Unable to locate package x\n", "stdout.txt": "Reading package lists...\n"},
                "releaseFiles": {}
            }]
        }]
    });
    Scenario::from_json_str(&json.to_string()).expect("the test scenario is valid")
}

struct Run {
    emulator: Emulator,
    client: Arc<BatchClient>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

async fn start() -> Run {
    let emulator = Emulator::new(scenario()).expect("emulator");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let served = emulator.clone();
    tokio::spawn(async move {
        let _ = batch_emulator::serve(listener, served, async move {
            let _ = rx.await;
        })
        .await;
    });
    let mut config = BatchConfig::shared_key(
        &base,
        WELL_KNOWN_ACCOUNT_NAME,
        Secret::new(WELL_KNOWN_ACCOUNT_KEY),
    )
    .unwrap();
    config.retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    };
    Run {
        emulator,
        client: Arc::new(BatchClient::new(config).unwrap()),
        _shutdown: tx,
    }
}

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(120))
}

async fn diagnosis_of(api: &dyn BatchApi, task_id: &str) -> diagnosis::Diagnosis {
    let task = api
        .get_task("etl", task_id, &Default::default(), deadline())
        .await
        .unwrap();
    let evidence = diagnosis::diagnose::Evidence {
        account: Some(WELL_KNOWN_ACCOUNT_NAME),
        job_id: Some("etl"),
        ..Default::default()
    };
    diagnosis::diagnose_task(&task, &evidence)
}

/// SHA-256 of a file as the emulator serves it, read with a separate download.
async fn source_sha(api: &dyn BatchApi, task_id: &str, path: &str) -> (u64, String) {
    let mut download = api
        .download_file(
            &FileRef::task("etl", task_id, path),
            &DownloadOptions::default(),
            deadline(),
        )
        .await
        .unwrap();
    let mut hasher = Sha256::new();
    let mut n = 0;
    while let Some(chunk) = download.next().await {
        let chunk = chunk.unwrap();
        n += chunk.len() as u64;
        hasher.update(&chunk);
    }
    (n, hex::encode(hasher.finalize()))
}

fn sha_file(path: &std::path::Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

fn local_store() -> (tempfile::TempDir, Arc<LocalDirStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDirStore::new(dir.path()).unwrap());
    (dir, store)
}

fn options() -> PreserveOptions {
    PreserveOptions {
        extra_globs: vec!["**/*.log".into()],
        ..Default::default()
    }
}

fn file_gets(emulator: &Emulator) -> Vec<batch_emulator::RequestRecord> {
    emulator
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path_and_query.contains("/files/"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_every_file_with_manifest_and_copies_nothing_twice() {
    let run = start().await;
    let (dir, store) = local_store();
    let diag = diagnosis_of(&*run.client, "t1").await;
    let report = preserve_task(&*run.client, &*store, &diag, &options(), deadline())
        .await
        .unwrap();
    assert!(report.complete && !report.already_preserved, "{report:?}");
    assert_eq!(report.prefix, "devbatch1/etl/t1/attempt-2");
    let folder = dir.path().join("devbatch1/etl/t1/attempt-2");
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).unwrap()).unwrap();
    let names: Vec<_> = manifest.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["stderr.txt", "stdout.txt", "wd/c.log", "wd/out/a.log"]
    );
    assert!(
        manifest.missing.is_empty(),
        "fileupload*.txt are absent, not missing: {manifest:?}"
    );
    for file in &manifest.files {
        let (bytes, sha) = source_sha(&*run.client, "t1", &file.source).await;
        assert_eq!((file.bytes, &file.sha256), (bytes, &sha), "{}", file.name);
        assert_eq!(sha_file(&folder.join(&file.name)), sha, "{}", file.name);
    }
    assert_eq!(manifest.attempt, Some(2));
    let diag_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("diagnosis.json")).unwrap()).unwrap();
    assert_eq!(diag_json["subject"]["taskId"], "t1");
    // The tail is redacted and comes from the same stream.
    let tail = report.stderr_tail.expect("stderr tail");
    assert!(tail.contains("MemoryError"), "{tail}");
    assert!(!tail.contains("c2VjcmV0c2VjcmV0"), "secret in tail: {tail}");
    assert!(
        !std::fs::read_to_string(folder.join("manifest.json"))
            .unwrap()
            .contains("c2VjcmV0c2VjcmV0")
    );
    // No progress records are left once the manifest exists.
    assert!(
        store
            .list("devbatch1/etl/t1/attempt-2/.progress/")
            .await
            .unwrap()
            .is_empty()
    );

    // Duplicate request: the manifest is found and no file is downloaded.
    run.emulator.clear_requests();
    let again = preserve_task(&*run.client, &*store, &diag, &options(), deadline())
        .await
        .unwrap();
    assert!(again.already_preserved && again.complete);
    assert_eq!(again.bytes_copied, 0);
    assert_eq!(again.files.len(), 4);
    assert!(
        file_gets(&run.emulator).is_empty(),
        "{:?}",
        file_gets(&run.emulator)
    );
    assert!(
        run.emulator
            .requests()
            .iter()
            .all(|r| !r.path_and_query.contains("/files"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_resumes_with_ocp_range() {
    let run = start().await;
    let (dir, store) = local_store();
    run.emulator.add_fault(
        FaultRule::new(Fault::DropConnection {
            after_bytes: 1_000_000,
        })
        .path_prefix("/jobs/etl/tasks/big/files/stdout.txt")
        .method("GET")
        .times(1),
    );
    let diag = diagnosis_of(&*run.client, "big").await;
    let report = preserve_task(&*run.client, &*store, &diag, &options(), deadline())
        .await
        .unwrap();
    assert!(report.complete, "{report:?}");
    let resumed: Vec<_> = file_gets(&run.emulator)
        .into_iter()
        .filter(|r| r.path_and_query.contains("stdout.txt") && r.ocp_range.is_some())
        .collect();
    assert_eq!(
        resumed.len(),
        1,
        "one resumed request with ocp-range: {:?}",
        file_gets(&run.emulator)
    );
    assert!(
        resumed[0]
            .ocp_range
            .as_deref()
            .unwrap()
            .starts_with("bytes=1000000-"),
        "{resumed:?}"
    );
    let (bytes, sha) = source_sha(&*run.client, "big", "stdout.txt").await;
    let stdout = report
        .files
        .iter()
        .find(|f| f.name == "stdout.txt")
        .unwrap();
    assert_eq!(
        stdout.outcome,
        FileOutcome::Copied {
            bytes,
            sha256: sha.clone()
        }
    );
    assert_eq!(
        sha_file(&dir.path().join("devbatch1/etl/big/attempt-2/stdout.txt")),
        sha
    );
    assert_eq!(
        report.stdout_tail.as_deref().map(|t| t.ends_with("Killed")),
        Some(true),
        "{:?}",
        report.stdout_tail
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_gone_is_recorded_missing_with_the_code() {
    let run = start().await;
    let (_dir, store) = local_store();
    let diag = diagnosis_of(&*run.client, "gone").await;
    assert!(run.emulator.remove_node("linux", "tvm-02"));
    run.emulator.clear_requests();
    let report = preserve_task(&*run.client, &*store, &diag, &options(), deadline())
        .await
        .unwrap();
    assert!(report.complete, "{report:?}");
    let manifest = report.manifest.unwrap();
    assert!(manifest.files.is_empty());
    let missing: Vec<_> = manifest
        .missing
        .iter()
        .map(|m| (m.name.as_str(), m.code.as_str()))
        .collect();
    assert_eq!(
        missing,
        [
            ("stderr.txt", "NodeNotFound"),
            ("stdout.txt", "NodeNotFound")
        ],
        "fileupload*.txt are absent, not missing"
    );
    // The one listing (recursive, for the globs) said so: nothing else was asked.
    assert_eq!(
        batch_calls(&run.emulator),
        ["GET /jobs/etl/tasks/gone/files?recursive=true 404"]
    );
}

/// Every Batch request since the last `clear_requests`, as `METHOD path status` (a listing keeps
/// `?recursive=true`; the client leaves out `false`, the default),
/// in the order sent.
fn batch_calls(emulator: &Emulator) -> Vec<String> {
    emulator
        .requests()
        .into_iter()
        .map(|r| {
            let (path, query) = r
                .path_and_query
                .split_once('?')
                .unwrap_or((r.path_and_query.as_str(), ""));
            match query.split('&').find(|p| p.starts_with("recursive=")) {
                Some(flag) => format!("{} {path}?{flag} {}", r.method, r.status),
                None => format!("{} {path} {}", r.method, r.status),
            }
        })
        .collect()
}

/// `batch_calls` with the file GETs (sent concurrently) sorted, after what came before them.
fn sorted_calls(emulator: &Emulator) -> Vec<String> {
    let mut calls = batch_calls(emulator);
    let first_file = calls
        .iter()
        .position(|c| c.contains("/files/"))
        .unwrap_or(calls.len());
    calls[first_file..].sort();
    calls
}

fn outcome<'a>(report: &'a preserve::PreserveReport, name: &str) -> Option<&'a FileOutcome> {
    report
        .files
        .iter()
        .find(|f| f.name == name)
        .map(|f| &f.outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typical_task_costs_one_listing_and_a_get_per_present_file() {
    let run = start().await;
    let (dir, store) = local_store();
    run.emulator.clear_requests();
    let diag = diagnosis_of(&*run.client, "t1").await;
    let report = preserve_task(
        &*run.client,
        &*store,
        &diag,
        &PreserveOptions::default(),
        deadline(),
    )
    .await
    .unwrap();
    assert!(report.complete, "{report:?}");
    // Get Task (for the diagnosis), one listing of the task directory's root, two GETs. No HEAD,
    // and nothing asked about fileupload*.txt, which the listing did not show.
    assert_eq!(
        sorted_calls(&run.emulator),
        [
            "GET /jobs/etl/tasks/t1 200",
            "GET /jobs/etl/tasks/t1/files 200",
            "GET /jobs/etl/tasks/t1/files/stderr.txt 200",
            "GET /jobs/etl/tasks/t1/files/stdout.txt 200",
        ]
    );
    let names: Vec<_> = report.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["stderr.txt", "stdout.txt"]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("devbatch1/etl/t1/attempt-2/stdout.txt")).unwrap(),
        "epoch 1\nepoch 2\n"
    );
    let manifest = report.manifest.unwrap();
    assert!(manifest.missing.is_empty() && manifest.skipped.is_empty());

    // With globs, the one listing is recursive and also finds the globbed files.
    let (_dir, store) = local_store();
    run.emulator.clear_requests();
    let report = preserve_task(&*run.client, &*store, &diag, &options(), deadline())
        .await
        .unwrap();
    assert!(report.complete, "{report:?}");
    assert_eq!(
        sorted_calls(&run.emulator),
        [
            "GET /jobs/etl/tasks/t1/files?recursive=true 200",
            "GET /jobs/etl/tasks/t1/files/stderr.txt 200",
            "GET /jobs/etl/tasks/t1/files/stdout.txt 200",
            "GET /jobs/etl/tasks/t1/files/wd%2Fc.log 200",
            "GET /jobs/etl/tasks/t1/files/wd%2Fout%2Fa.log 200",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_logs_in_the_listing_are_copied_and_an_unlisted_stderr_is_missing() {
    let run = start().await;
    let (dir, store) = local_store();
    let diag = diagnosis_of(&*run.client, "upload").await;
    run.emulator.clear_requests();
    let report = preserve_task(
        &*run.client,
        &*store,
        &diag,
        &PreserveOptions::default(),
        deadline(),
    )
    .await
    .unwrap();
    assert!(report.complete, "{report:?}");
    assert_eq!(
        sorted_calls(&run.emulator),
        [
            "GET /jobs/etl/tasks/upload/files 200",
            "GET /jobs/etl/tasks/upload/files/fileuploaderr.txt 200",
            "GET /jobs/etl/tasks/upload/files/fileuploadout.txt 200",
            "GET /jobs/etl/tasks/upload/files/stderr.txt 200",
            "GET /jobs/etl/tasks/upload/files/stdout.txt 200",
        ]
    );
    let folder = dir.path().join("devbatch1/etl/upload/attempt-2");
    let read = |name: &str| std::fs::read_to_string(folder.join(name)).unwrap();
    // The root files, not their namesakes under wd/.
    assert_eq!(read("stdout.txt"), "training done\n");
    assert_eq!(read("fileuploadout.txt"), "Uploading 2 files\n");
    assert_eq!(read("fileuploaderr.txt"), "");
    assert!(!folder.join("wd").exists());
    let manifest = report.manifest.unwrap();
    let copied: Vec<_> = manifest
        .files
        .iter()
        .map(|f| (f.name.as_str(), f.bytes))
        .collect();
    assert_eq!(
        copied,
        [
            ("fileuploaderr.txt", 0),
            ("fileuploadout.txt", 18),
            ("stderr.txt", 14),
            ("stdout.txt", 14)
        ]
    );
    assert!(manifest.missing.is_empty());

    // stderr.txt is not in the listing: missing with the code a GET would have given, at no
    // extra request; the absent upload logs are simply not there.
    let diag = diagnosis_of(&*run.client, "no-stderr").await;
    run.emulator.clear_requests();
    let report = preserve_task(
        &*run.client,
        &*store,
        &diag,
        &PreserveOptions::default(),
        deadline(),
    )
    .await
    .unwrap();
    assert!(report.complete, "{report:?}");
    assert_eq!(
        sorted_calls(&run.emulator),
        [
            "GET /jobs/etl/tasks/no-stderr/files 200",
            "GET /jobs/etl/tasks/no-stderr/files/stdout.txt 200",
        ]
    );
    assert_eq!(report.files.len(), 2, "{report:?}");
    assert_eq!(
        outcome(&report, "stderr.txt"),
        Some(&FileOutcome::Missing {
            code: "FileNotFound".into()
        })
    );
    assert!(matches!(
        outcome(&report, "stdout.txt"),
        Some(FileOutcome::Copied { bytes: 12, .. })
    ));
    let missing = &report.manifest.unwrap().missing;
    assert_eq!(missing.len(), 1);
    assert_eq!(
        (missing[0].name.as_str(), missing[0].code.as_str()),
        ("stderr.txt", "FileNotFound")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_refused_because_the_files_are_gone_records_its_code() {
    let run = start().await;
    let (_dir, store) = local_store();
    let diag = diagnosis_of(&*run.client, "upload").await;
    run.emulator.add_fault(
        FaultRule::new(Fault::TaskFilesUnavailable)
            .path_prefix("/jobs/etl/tasks/upload/files")
            .method("GET"),
    );
    run.emulator.clear_requests();
    let report = preserve_task(
        &*run.client,
        &*store,
        &diag,
        &PreserveOptions::default(),
        deadline(),
    )
    .await
    .unwrap();
    assert!(report.complete, "{report:?}");
    assert_eq!(
        batch_calls(&run.emulator),
        ["GET /jobs/etl/tasks/upload/files 409"]
    );
    let missing: Vec<_> = report
        .manifest
        .unwrap()
        .missing
        .into_iter()
        .map(|m| (m.name, m.code))
        .collect();
    assert_eq!(
        missing,
        [
            ("stderr.txt".to_owned(), "TaskFilesUnavailable".to_owned()),
            ("stdout.txt".to_owned(), "TaskFilesUnavailable".to_owned())
        ],
        "the upload logs are left out, as with a HEAD per file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_fails_transiently_leaves_the_folder_incomplete() {
    for (task, fault) in [
        (
            "upload",
            Fault::Throttle {
                retry_after_seconds: 0,
            },
        ),
        ("t1", Fault::InternalError),
    ] {
        let run = start().await;
        let (_dir, store) = local_store();
        let diag = diagnosis_of(&*run.client, task).await;
        let listing = format!("/jobs/etl/tasks/{task}/files");
        run.emulator
            .add_fault(FaultRule::new(fault.clone()).path_prefix(&listing));
        run.emulator.clear_requests();
        let opts = PreserveOptions {
            extra_globs: vec!["**/*.txt".into()],
            ..Default::default()
        };
        let report = preserve_task(&*run.client, &*store, &diag, &opts, deadline())
            .await
            .unwrap();
        assert!(!report.complete, "{fault:?}: {report:?}");
        assert!(report.manifest.is_none());
        let failed: Vec<_> = report
            .files
            .iter()
            .map(|f| {
                (
                    f.name.as_str(),
                    matches!(f.outcome, FileOutcome::Failed { .. }),
                )
            })
            .collect();
        assert_eq!(
            failed,
            [("stderr.txt", true), ("stdout.txt", true)],
            "{fault:?}: {report:?}"
        );
        // Only the listing was tried (the client's 3 attempts), and nothing was stored.
        let calls = batch_calls(&run.emulator);
        assert!(!calls.is_empty());
        assert!(
            calls
                .iter()
                .all(|c| c.starts_with(&format!("GET {listing}?recursive=true "))),
            "{fault:?}: {calls:?}"
        );
        assert_eq!(calls.len(), 3, "{fault:?}: {calls:?}");
        assert!(store.list("").await.unwrap().is_empty(), "{fault:?}");

        // The redelivery finds the folder incomplete and finishes it.
        run.emulator.clear_faults();
        let again = preserve_task(&*run.client, &*store, &diag, &opts, deadline())
            .await
            .unwrap();
        assert!(again.complete && !again.already_preserved, "{again:?}");
        assert!(
            again
                .files
                .iter()
                .all(|f| matches!(f.outcome, FileOutcome::Copied { .. })),
            "{again:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caps_use_the_sizes_the_listing_gives() {
    let run = start().await;
    let diag = diagnosis_of(&*run.client, "big").await;
    // stdout (3 000 000 bytes) is over the per-file cap: not downloaded at all.
    let (_dir, store) = local_store();
    run.emulator.clear_requests();
    let opts = PreserveOptions {
        max_file_bytes: 2_000_000,
        ..Default::default()
    };
    let report = preserve_task(&*run.client, &*store, &diag, &opts, deadline())
        .await
        .unwrap();
    assert!(report.complete, "{report:?}");
    assert_eq!(
        sorted_calls(&run.emulator),
        [
            "GET /jobs/etl/tasks/big/files 200",
            "GET /jobs/etl/tasks/big/files/stderr.txt 200",
        ]
    );
    assert_eq!(
        outcome(&report, "stdout.txt"),
        Some(&FileOutcome::Skipped {
            bytes: 3_000_000,
            reason: "maxFileBytes".into()
        })
    );
    assert!(matches!(
        outcome(&report, "stderr.txt"),
        Some(FileOutcome::Copied {
            bytes: 1_500_000,
            ..
        })
    ));
    assert_eq!(report.bytes_copied, 1_500_000);

    // The task budget is spent in the standard order: stdout first, then stderr no longer fits.
    let (_dir, store) = local_store();
    run.emulator.clear_requests();
    let opts = PreserveOptions {
        max_task_bytes: 4_000_000,
        ..Default::default()
    };
    let report = preserve_task(&*run.client, &*store, &diag, &opts, deadline())
        .await
        .unwrap();
    assert!(report.complete, "{report:?}");
    assert_eq!(
        sorted_calls(&run.emulator),
        [
            "GET /jobs/etl/tasks/big/files 200",
            "GET /jobs/etl/tasks/big/files/stdout.txt 200",
        ]
    );
    assert_eq!(
        outcome(&report, "stderr.txt"),
        Some(&FileOutcome::Skipped {
            bytes: 1_500_000,
            reason: "maxTaskBytes".into()
        })
    );
    let skipped = &report.manifest.unwrap().skipped;
    assert_eq!(skipped.len(), 1);
    assert_eq!(
        (skipped[0].name.as_str(), skipped[0].bytes),
        ("stderr.txt", 1_500_000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_task_ids_and_file_names_stay_inside_the_prefix() {
    let run = start().await;
    let (dir, store) = local_store();
    let diag = diagnosis_of(&*run.client, "evil").await;
    let report = preserve_task(&*run.client, &*store, &diag, &options(), deadline())
        .await
        .unwrap();
    assert!(report.complete, "{report:?}");
    assert_eq!(report.prefix, "devbatch1/etl/evil/attempt-2");
    let all = store.list("").await.unwrap();
    assert!(!all.is_empty());
    for object in &all {
        assert!(
            object.key.as_str().starts_with(&report.prefix),
            "{} outside {}",
            object.key,
            report.prefix
        );
    }
    let logged = report
        .files
        .iter()
        .find(|f| f.source.contains("we:ird"))
        .expect("the hostile log was globbed");
    assert!(
        matches!(logged.outcome, FileOutcome::Copied { .. }),
        "{logged:?}"
    );
    // Nothing was written outside the store root.
    let parent = dir.path().parent().unwrap();
    assert!(!parent.join("escape.log").exists());
    assert!(!dir.path().join("escape.log").exists());

    // A forged subject (ids Batch would never issue) still lands inside the store, one level
    // per id; Batch answers TaskNotFound, which is recorded.
    let mut forged = diag.clone();
    forged.subject.account = Some("..".into());
    forged.subject.job_id = Some("/etc".into());
    forged.subject.task_id = Some("../../evil\\task\n".into());
    let report = preserve_task(&*run.client, &*store, &forged, &options(), deadline())
        .await
        .unwrap();
    let segments: Vec<_> = report.prefix.split('/').collect();
    assert_eq!(segments.len(), 4, "{}", report.prefix);
    assert!(
        segments
            .iter()
            .all(|s| !s.is_empty() && *s != ".." && *s != "."),
        "{}",
        report.prefix
    );
    assert!(segments[3] == "attempt-2");
    for object in store.list("").await.unwrap() {
        assert!(dir.path().join(object.key.as_str()).starts_with(dir.path()));
    }
    assert!(
        report
            .files
            .iter()
            .all(|f| matches!(&f.outcome, FileOutcome::Missing { .. })),
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_copy_then_a_rerun_copies_only_what_is_missing() {
    let run = start().await;
    let (_dir, store) = local_store();
    // stderr keeps dropping and resumes are exhausted: the run ends without a manifest.
    run.emulator.add_fault(
        FaultRule::new(Fault::DropConnection {
            after_bytes: 200_000,
        })
        .path_prefix("/jobs/etl/tasks/big/files/stderr.txt")
        .method("GET"),
    );
    let diag = diagnosis_of(&*run.client, "big").await;
    let opts = PreserveOptions {
        max_resumes: 1,
        ..options()
    };
    let first = preserve_task(&*run.client, &*store, &diag, &opts, deadline())
        .await
        .unwrap();
    assert!(!first.complete, "{first:?}");
    let stderr = first.files.iter().find(|f| f.name == "stderr.txt").unwrap();
    assert!(
        matches!(stderr.outcome, FileOutcome::Failed { .. }),
        "{stderr:?}"
    );
    let prefix = ObjectKey::new("devbatch1/etl/big/attempt-2").unwrap();
    assert!(
        store
            .head(&prefix.join("manifest.json").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .head(&prefix.join("stderr.txt").unwrap())
            .await
            .unwrap()
            .is_none(),
        "no partial object"
    );

    // stdout's resume record is there, named by a hash of the name.
    let records = store
        .list("devbatch1/etl/big/attempt-2/.progress/")
        .await
        .unwrap();
    assert_eq!(records.len(), 1, "{records:?}");

    // The rerun downloads stderr only.
    run.emulator.clear_faults();
    run.emulator.clear_requests();
    let second = preserve_task(&*run.client, &*store, &diag, &opts, deadline())
        .await
        .unwrap();
    assert!(second.complete, "{second:?}");
    let gets: Vec<_> = file_gets(&run.emulator)
        .into_iter()
        .filter(|r| r.status == 200)
        .map(|r| r.path_and_query)
        .collect();
    assert!(
        gets.iter().all(|p| p.contains("stderr.txt")) && !gets.is_empty(),
        "{gets:?}"
    );
    // stdout.txt was recognised as completely copied from the listing alone (its size, and its
    // RFC 3339 lastModified against the RFC 1123 Last-Modified recorded by the first run's GET).
    assert_eq!(
        sorted_calls(&run.emulator),
        [
            "GET /jobs/etl/tasks/big/files?recursive=true 200",
            "GET /jobs/etl/tasks/big/files/stderr.txt 200",
        ]
    );
    let stdout = second
        .files
        .iter()
        .find(|f| f.name == "stdout.txt")
        .unwrap();
    let (bytes, sha) = source_sha(&*run.client, "big", "stdout.txt").await;
    assert_eq!(
        stdout.outcome,
        FileOutcome::AlreadyCopied { bytes, sha256: sha }
    );
    let manifest = second.manifest.unwrap();
    assert_eq!(manifest.files.len(), 2);
    let (bytes, sha) = source_sha(&*run.client, "big", "stderr.txt").await;
    let stderr = manifest
        .files
        .iter()
        .find(|f| f.name == "stderr.txt")
        .unwrap();
    assert_eq!((stderr.bytes, &stderr.sha256), (bytes, &sha));
    // The records are removed once the manifest exists.
    assert!(
        store
            .list("devbatch1/etl/big/attempt-2/.progress/")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_prep_output_goes_to_jobprep_node_folder() {
    let run = start().await;
    let (dir, store) = local_store();
    let statuses: Vec<_> = batch_client::items(run.client.list_prep_release_status(
        "etl",
        &Default::default(),
        deadline(),
    ))
    .collect::<Vec<_>>()
    .await;
    let status = statuses.into_iter().next().unwrap().unwrap();
    run.emulator.clear_requests();
    let reports = preserve_prep_release(
        &*run.client,
        &*store,
        preserve::JobRef {
            account: WELL_KNOWN_ACCOUNT_NAME,
            job_id: "etl",
        },
        &status,
        None,
        &options(),
        deadline(),
    )
    .await
    .unwrap();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].prefix, "devbatch1/etl/_jobprep/tvm-01");
    // Node files (two known paths, no listing): a HEAD each, then a GET each, as before.
    let mut calls = batch_calls(&run.emulator);
    calls.sort();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("HEAD /pools/linux/nodes/tvm-01/files/"))
            .count(),
        2,
        "{calls:?}"
    );
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("GET /pools/linux/nodes/tvm-01/files/"))
            .count(),
        2,
        "{calls:?}"
    );
    let text = std::fs::read_to_string(dir.path().join("devbatch1/etl/_jobprep/tvm-01/stderr.txt"))
        .unwrap();
    assert_eq!(text, "E: Unable to locate package x\n");
    assert!(
        dir.path()
            .join("devbatch1/etl/_jobprep/tvm-01/manifest.json")
            .is_file()
    );
    assert!(
        reports[0]
            .stderr_tail
            .as_deref()
            .unwrap()
            .contains("Unable to locate")
    );
}

fn python() -> std::path::PathBuf {
    match std::env::var_os("BATCH_TRIAGE_PYTHON") {
        Some(p) if !p.is_empty() => p.into(),
        _ => std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"),
    }
}

/// Lists `prefix` and hashes every blob with the official Python SDK (an independent client).
fn python_listing(
    connection_string: &str,
    container: &str,
    prefix: &str,
) -> Vec<(String, u64, String)> {
    let script = r#"
import hashlib, sys
from azure.storage.blob import ContainerClient
c = ContainerClient.from_connection_string(sys.argv[1], sys.argv[2])
for b in c.list_blobs(name_starts_with=sys.argv[3]):
    h = hashlib.sha256()
    for chunk in c.download_blob(b.name).chunks():
        h.update(chunk)
    print(b.name, b.size, h.hexdigest())
"#;
    let python = python();
    assert!(
        python.exists(),
        "python not found at {}: run scripts/setup-test-deps (or set BATCH_TRIAGE_PYTHON)",
        python.display()
    );
    let out = std::process::Command::new(&python)
        .args(["-c", script, connection_string, container, prefix])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let mut parts = l.rsplitn(3, ' ');
            let sha = parts.next().unwrap().to_owned();
            let size = parts.next().unwrap().parse().unwrap();
            (parts.next().unwrap().to_owned(), size, sha)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azurite_end_to_end_read_back_with_the_python_sdk() {
    let run = start().await;
    let azurite = artifact_store::testing::Azurite::start();
    let store = azurite.store("logs").await.with_block_size(512 * 1024);
    run.emulator.add_fault(
        FaultRule::new(Fault::DropConnection {
            after_bytes: 700_000,
        })
        .path_prefix("/jobs/etl/tasks/big/files/stdout.txt")
        .method("GET")
        .times(1),
    );
    let diag = diagnosis_of(&*run.client, "big").await;
    let report = preserve_task(&*run.client, &store, &diag, &options(), deadline())
        .await
        .unwrap();
    assert!(report.complete, "{report:?}");
    assert!(
        file_gets(&run.emulator)
            .iter()
            .any(|r| r.ocp_range.is_some()),
        "resumed with ocp-range"
    );
    let link = report.link.clone().unwrap();
    assert_eq!(
        link,
        format!(
            "{}/logs/devbatch1/etl/big/attempt-2",
            azurite.blob_endpoint()
        )
    );

    // Python's own connection-string parser, with the account key (not our SAS code).
    let connection_string = format!(
        "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};BlobEndpoint={};",
        artifact_store::DEVSTORE_ACCOUNT,
        artifact_store::DEVSTORE_KEY,
        azurite.blob_endpoint()
    );
    let listed = python_listing(&connection_string, "logs", "devbatch1/etl/big/attempt-2/");
    let names: Vec<_> = listed.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "devbatch1/etl/big/attempt-2/diagnosis.json",
            "devbatch1/etl/big/attempt-2/manifest.json",
            "devbatch1/etl/big/attempt-2/stderr.txt",
            "devbatch1/etl/big/attempt-2/stdout.txt",
        ]
    );
    for name in ["stdout.txt", "stderr.txt"] {
        let (bytes, sha) = source_sha(&*run.client, "big", name).await;
        let (_, size, got) = listed.iter().find(|(n, _, _)| n.ends_with(name)).unwrap();
        assert_eq!((*size, got), (bytes, &sha), "{name}");
        let in_manifest = report
            .manifest
            .as_ref()
            .unwrap()
            .files
            .iter()
            .find(|f| f.name == name)
            .unwrap();
        assert_eq!(in_manifest.sha256, sha);
    }

    // A duplicate against Blob copies nothing either.
    run.emulator.clear_requests();
    let again = preserve_task(&*run.client, &store, &diag, &options(), deadline())
        .await
        .unwrap();
    assert!(again.already_preserved);
    assert!(file_gets(&run.emulator).is_empty());
}

/// The real client, but file listings name paths as a Windows node does (`wd\\out\\a.log`).
struct WindowsListings(Arc<BatchClient>);

#[async_trait::async_trait]
impl BatchApi for WindowsListings {
    async fn get_task(
        &self,
        job_id: &str,
        task_id: &str,
        options: &GetOptions,
        deadline: Deadline,
    ) -> Result<BatchTask, BatchError> {
        self.0.get_task(job_id, task_id, options, deadline).await
    }
    fn list_tasks(
        &self,
        job_id: &str,
        options: &ListOptions,
        deadline: Deadline,
    ) -> PageStream<BatchTask> {
        self.0.list_tasks(job_id, options, deadline)
    }
    async fn get_job(
        &self,
        job_id: &str,
        options: &GetOptions,
        deadline: Deadline,
    ) -> Result<BatchJob, BatchError> {
        self.0.get_job(job_id, options, deadline).await
    }
    fn list_jobs(&self, options: &ListOptions, deadline: Deadline) -> PageStream<BatchJob> {
        self.0.list_jobs(options, deadline)
    }
    fn list_prep_release_status(
        &self,
        job_id: &str,
        options: &ListOptions,
        deadline: Deadline,
    ) -> PageStream<PrepReleaseStatus> {
        self.0.list_prep_release_status(job_id, options, deadline)
    }
    async fn get_task_counts(
        &self,
        job_id: &str,
        deadline: Deadline,
    ) -> Result<TaskCountsResult, BatchError> {
        self.0.get_task_counts(job_id, deadline).await
    }
    fn list_task_files(
        &self,
        job_id: &str,
        task_id: &str,
        options: &FileListOptions,
        deadline: Deadline,
    ) -> PageStream<NodeFile> {
        self.0
            .list_task_files(job_id, task_id, options, deadline)
            .map_ok(|mut page| {
                for file in &mut page.value {
                    file.name = file.name.take().map(|n| n.replace('/', "\\"));
                }
                page
            })
            .boxed()
    }
    fn list_node_files(
        &self,
        pool_id: &str,
        node_id: &str,
        options: &FileListOptions,
        deadline: Deadline,
    ) -> PageStream<NodeFile> {
        self.0.list_node_files(pool_id, node_id, options, deadline)
    }
    async fn file_properties(
        &self,
        file: &FileRef,
        deadline: Deadline,
    ) -> Result<FileInfo, BatchError> {
        self.0.file_properties(file, deadline).await
    }
    async fn download_file(
        &self,
        file: &FileRef,
        options: &DownloadOptions,
        deadline: Deadline,
    ) -> Result<FileDownload, BatchError> {
        self.0.download_file(file, options, deadline).await
    }
    async fn terminate_job(
        &self,
        job_id: &str,
        options: &TerminateJobOptions,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError> {
        self.0.terminate_job(job_id, options, deadline).await
    }
    async fn disable_job(
        &self,
        job_id: &str,
        disable_tasks: DisableTasks,
        if_match: Option<&str>,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError> {
        self.0
            .disable_job(job_id, disable_tasks, if_match, deadline)
            .await
    }
    async fn enable_job(
        &self,
        job_id: &str,
        if_match: Option<&str>,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError> {
        self.0.enable_job(job_id, if_match, deadline).await
    }
    async fn terminate_task(
        &self,
        job_id: &str,
        task_id: &str,
        if_match: Option<&str>,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError> {
        self.0
            .terminate_task(job_id, task_id, if_match, deadline)
            .await
    }
    fn check_url(&self, url: &str) -> Result<batch_client::Url, BatchError> {
        self.0.check_url(url)
    }
    fn list_pools(
        &self,
        options: &ListOptions,
        deadline: Deadline,
    ) -> PageStream<diagnosis::wire::BatchPool> {
        self.0.list_pools(options, deadline)
    }
    async fn get_pool(
        &self,
        pool_id: &str,
        options: &GetOptions,
        deadline: Deadline,
    ) -> Result<diagnosis::wire::BatchPool, BatchError> {
        self.0.get_pool(pool_id, options, deadline).await
    }
    fn list_nodes(
        &self,
        pool_id: &str,
        options: &ListOptions,
        deadline: Deadline,
    ) -> PageStream<diagnosis::wire::ComputeNode> {
        self.0.list_nodes(pool_id, options, deadline)
    }
    async fn get_node(
        &self,
        pool_id: &str,
        node_id: &str,
        options: &GetOptions,
        deadline: Deadline,
    ) -> Result<diagnosis::wire::ComputeNode, BatchError> {
        self.0.get_node(pool_id, node_id, options, deadline).await
    }
    fn list_pool_node_counts(
        &self,
        options: &ListOptions,
        deadline: Deadline,
    ) -> PageStream<diagnosis::wire::PoolNodeCounts> {
        self.0.list_pool_node_counts(options, deadline)
    }
    async fn upload_node_logs(
        &self,
        pool_id: &str,
        node_id: &str,
        options: &batch_client::UploadLogsOptions,
        deadline: Deadline,
    ) -> Result<batch_client::UploadLogsResult, BatchError> {
        self.0
            .upload_node_logs(pool_id, node_id, options, deadline)
            .await
    }
    async fn remove_nodes(
        &self,
        pool_id: &str,
        node_ids: &[String],
        options: &batch_client::RemoveNodesOptions,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError> {
        self.0
            .remove_nodes(pool_id, node_ids, options, deadline)
            .await
    }
    async fn reimage_node(
        &self,
        pool_id: &str,
        node_id: &str,
        option: batch_client::NodeDeallocation,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError> {
        self.0
            .reimage_node(pool_id, node_id, option, deadline)
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windows_listing_with_backslashes_serves_standard_files_and_globs() {
    let run = start().await;
    let (dir, store) = local_store();
    let api = WindowsListings(run.client.clone());
    let diag = diagnosis_of(&api, "upload").await;
    run.emulator.clear_requests();
    let opts = PreserveOptions {
        extra_globs: vec!["*.txt".into()],
        ..Default::default()
    };
    let report = preserve_task(&api, &*store, &diag, &opts, deadline())
        .await
        .unwrap();
    assert!(report.complete, "{report:?}");
    let files: Vec<_> = report
        .files
        .iter()
        .map(|f| {
            (
                f.name.as_str(),
                f.source.as_str(),
                matches!(f.outcome, FileOutcome::Copied { .. }),
            )
        })
        .collect();
    assert_eq!(
        files,
        [
            ("fileuploaderr.txt", "fileuploaderr.txt", true),
            ("fileuploadout.txt", "fileuploadout.txt", true),
            ("stderr.txt", "stderr.txt", true),
            ("stdout.txt", "stdout.txt", true),
            ("wd/fileuploaderr.txt", "wd\\fileuploaderr.txt", true),
            ("wd/stdout.txt", "wd\\stdout.txt", true),
        ]
    );
    let folder = dir.path().join("devbatch1/etl/upload/attempt-2");
    let read = |name: &str| std::fs::read_to_string(folder.join(name)).unwrap();
    assert_eq!(read("stdout.txt"), "training done\n");
    assert_eq!(read("wd/stdout.txt"), "not the task's stdout\n");
    assert_eq!(read("wd/fileuploaderr.txt"), "nor its upload log\n");
    let calls = batch_calls(&run.emulator);
    assert_eq!(
        calls[0],
        "GET /jobs/etl/tasks/upload/files?recursive=true 200"
    );
    assert_eq!(calls.len(), 7, "one listing, six GETs: {calls:?}");
    assert!(
        calls[1..]
            .iter()
            .all(|c| c.starts_with("GET /jobs/etl/tasks/upload/files/") && c.ends_with(" 200")),
        "{calls:?}"
    );
}

/// The glob as a rule writes it (`wd/…`), through `policy check`'s parser and the plan, keeps the
/// matching `wd/` files in the store, and only those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_rules_glob_keeps_its_wd_files_in_the_store() {
    let run = start().await;
    let (dir, store) = local_store();
    let policy = diagnosis::policy::Policy::parse(
        r#"
[[rules]]
name = "keep-logs"
match = { class = "*" }
preserve = ["wd/**/*.log"]
"#,
    )
    .unwrap();
    let diag = diagnosis_of(&*run.client, "t1").await;
    let planned = diagnosis::policy::plan(
        &diag,
        &policy,
        time::OffsetDateTime::now_utc(),
        &Default::default(),
    );
    let globs: Vec<String> = planned.preserve.iter().map(|g| g.glob.clone()).collect();
    assert_eq!(globs, ["wd/**/*.log"]);
    let opts = PreserveOptions {
        extra_globs: globs,
        ..Default::default()
    };
    let report = preserve_task(&*run.client, &*store, &diag, &opts, deadline())
        .await
        .unwrap();
    assert!(report.complete, "{report:?}");
    let folder = dir.path().join("devbatch1/etl/t1/attempt-2");
    assert_eq!(
        std::fs::read_to_string(folder.join("wd/c.log")).unwrap(),
        "log c\n"
    );
    assert_eq!(
        std::fs::read_to_string(folder.join("wd/out/a.log")).unwrap(),
        "log a\n"
    );
    assert!(!folder.join("wd/b.txt").exists());

    // `wd/**` keeps every file under wd/, the unmatched text file too.
    let (dir, store) = local_store();
    let opts = PreserveOptions {
        extra_globs: vec!["wd/**".into()],
        ..Default::default()
    };
    preserve_task(&*run.client, &*store, &diag, &opts, deadline())
        .await
        .unwrap();
    let folder = dir.path().join("devbatch1/etl/t1/attempt-2");
    assert!(folder.join("wd/b.txt").is_file() && folder.join("wd/out/a.log").is_file());

    // A glob that would climb out is refused, as policy check refuses it.
    let opts = PreserveOptions {
        extra_globs: vec!["wd/../etc/*".into()],
        ..Default::default()
    };
    let refused = preserve_task(&*run.client, &*store, &diag, &opts, deadline()).await;
    assert!(
        matches!(refused, Err(preserve::PreserveError::Glob { .. })),
        "{refused:?}"
    );
}
