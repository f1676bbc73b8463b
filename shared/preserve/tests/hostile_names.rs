//! Hostile file names against preservation: a task whose working directory holds `wd/x` and
//! `wd/x\y` (legal on Linux), `wd/..`, names that differ only by a separator. Every file is kept
//! under its own key, in a local directory and in Blob Storage alike, with the same layout; a
//! file the store still refuses is recorded in the manifest, and the folder and the job go on.
//! The files come from a loopback double (`test_kit::hostile_files`): the emulator refuses such
//! names.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use artifact_store::{ArtifactStore, LocalDirStore, ObjectKey};
use batch_client::{BatchClient, BatchConfig, Deadline, RetryPolicy, Secret};
use batch_emulator::{WELL_KNOWN_ACCOUNT_KEY, WELL_KNOWN_ACCOUNT_NAME};
use preserve::{FileOutcome, Manifest, PreserveOptions, PreserveReport, preserve_task};
use sha2::{Digest, Sha256};
use test_kit::hostile_files::{HostileFiles, serve_hostile_files};

/// Name on the node, content.
const FILES: &[(&str, &[u8])] = &[
    ("stdout.txt", b"out\n"),
    ("stderr.txt", b"err\n"),
    ("wd/x", b"the file x\n"),
    ("wd/x\\y", b"a name with a backslash, under x's name\n"),
    ("wd/a/b", b"a real nested file\n"),
    ("wd/a\\b", b"the same natural key as wd/a/b\n"),
    ("wd/..", b"dot dot\n"),
    ("wd/.", b"dot\n"),
    ("wd/manifest.json", b"not the manifest\n"),
    ("wd/ok.log", b"an ordinary log\n"),
];

fn client(files: &HostileFiles) -> BatchClient {
    let mut config = BatchConfig::shared_key(
        &files.url,
        WELL_KNOWN_ACCOUNT_NAME,
        Secret::new(WELL_KNOWN_ACCOUNT_KEY),
    )
    .unwrap();
    config.retry = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    };
    BatchClient::new(config).unwrap()
}

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(120))
}

/// A failed task of job `etl` (attempt 0) as the pipeline diagnoses it.
fn diagnosis(task_id: &str) -> diagnosis::Diagnosis {
    let task: diagnosis::wire::BatchTask = serde_json::from_value(serde_json::json!({
        "id": task_id, "state": "completed", "commandLine": "python train.py",
        "executionInfo": {"exitCode": 1, "result": "failure", "retryCount": 0,
            "failureInfo": {"category": "usererror", "code": "FailureExitCode"}}
    }))
    .unwrap();
    let evidence = diagnosis::diagnose::Evidence {
        account: Some(WELL_KNOWN_ACCOUNT_NAME),
        job_id: Some("etl"),
        ..Default::default()
    };
    diagnosis::diagnose_task(&task, &evidence)
}

/// The rule's glob as the policy writes it.
fn options() -> PreserveOptions {
    PreserveOptions {
        extra_globs: vec!["wd/**".into()],
        ..Default::default()
    }
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Every file of [`FILES`] is in the manifest once, under its own key, with its own bytes in the
/// store; returns source → key.
async fn assert_every_file_kept(
    store: &dyn ArtifactStore,
    report: &PreserveReport,
) -> BTreeMap<String, String> {
    assert!(report.complete, "{report:?}");
    let manifest = report.manifest.as_ref().expect("a manifest");
    let stored: Manifest = serde_json::from_slice(
        &store
            .get(&ObjectKey::new(format!("{}/manifest.json", report.prefix)).unwrap())
            .await
            .unwrap()
            .expect("manifest.json in the store")
            .bytes,
    )
    .unwrap();
    assert_eq!(&stored, manifest);
    assert!(
        manifest.missing.is_empty() && manifest.not_stored.is_empty(),
        "{manifest:?}"
    );
    let mut keys = BTreeMap::new();
    for (name, content) in FILES {
        let entry = manifest
            .files
            .iter()
            .find(|f| f.source == *name)
            .unwrap_or_else(|| panic!("{name:?} not in {manifest:#?}"));
        assert_eq!(
            (entry.bytes, entry.sha256.as_str()),
            (content.len() as u64, sha(content).as_str()),
            "{name:?}"
        );
        let key = ObjectKey::new(format!("{}/{}", report.prefix, entry.name)).unwrap();
        let object = store.get(&key).await.unwrap().expect("the object");
        assert_eq!(&object.bytes[..], *content, "{name:?} at {key}");
        assert!(
            keys.insert((*name).to_owned(), entry.name.clone())
                .is_none(),
            "{name:?} twice"
        );
    }
    let distinct: std::collections::BTreeSet<_> = keys.values().collect();
    assert_eq!(
        distinct.len(),
        FILES.len(),
        "two files share a key: {keys:?}"
    );
    // The folder's own names are not taken by a task's file.
    assert_eq!(keys["wd/manifest.json"], "wd/manifest.json");
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_name_gets_its_own_key_in_a_directory_and_the_job_goes_on() {
    let files = serve_hostile_files(FILES).await;
    let client = client(&files);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDirStore::new(dir.path()).unwrap());

    let report = preserve_task(&client, &*store, &diagnosis("t1"), &options(), deadline())
        .await
        .unwrap();
    let keys = assert_every_file_kept(&*store, &report).await;
    // Names as they are on the node keep their keys; the mapped ones move aside.
    assert_eq!(keys["wd/x"], "wd/x");
    assert_eq!(keys["wd/a/b"], "wd/a/b");
    assert_eq!(keys["wd/ok.log"], "wd/ok.log");
    assert!(keys["wd/x\\y"].starts_with("wd/x_y~"), "{keys:?}");
    // Nothing outside the folder.
    for object in store.list("").await.unwrap() {
        assert!(
            object.key.as_str().starts_with(&report.prefix),
            "{}",
            object.key
        );
    }

    // The rest of the job: another task of the same job is preserved too.
    let other = preserve_task(&client, &*store, &diagnosis("t2"), &options(), deadline())
        .await
        .unwrap();
    assert_eq!(assert_every_file_kept(&*store, &other).await, keys);

    // A rerun finds the manifest and downloads nothing.
    let before = files.file_requests().len();
    let again = preserve_task(&client, &*store, &diagnosis("t1"), &options(), deadline())
        .await
        .unwrap();
    assert!(again.already_preserved && again.complete);
    assert_eq!(files.file_requests().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_storage_gets_the_same_layout_as_a_directory() {
    let files = serve_hostile_files(FILES).await;
    let client = client(&files);
    let dir = tempfile::tempdir().unwrap();
    let local = LocalDirStore::new(dir.path()).unwrap();
    let azurite = artifact_store::testing::Azurite::start();
    let blob = azurite.store("hostile").await;

    let in_dir = preserve_task(&client, &local, &diagnosis("t1"), &options(), deadline())
        .await
        .unwrap();
    let in_blob = preserve_task(&client, &blob, &diagnosis("t1"), &options(), deadline())
        .await
        .unwrap();
    let dir_keys = assert_every_file_kept(&local, &in_dir).await;
    let blob_keys = assert_every_file_kept(&blob, &in_blob).await;
    assert_eq!(dir_keys, blob_keys);
    let listed = |objects: Vec<artifact_store::ObjectInfo>| -> Vec<String> {
        objects.into_iter().map(|o| o.key.to_string()).collect()
    };
    assert_eq!(
        listed(local.list("").await.unwrap()),
        listed(blob.list("").await.unwrap())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_the_store_refuses_is_recorded_with_its_reason_and_the_rest_is_kept() {
    let files = serve_hostile_files(FILES).await;
    let client = client(&files);
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDirStore::new(dir.path()).unwrap();
    // Something else already made `wd/ok.log` a directory in this folder: the directory cannot
    // hold the file there.
    let prefix = "devbatch1/etl/t1/attempt-0";
    store
        .put(
            &ObjectKey::new(format!("{prefix}/wd/ok.log/left-behind")).unwrap(),
            "x".into(),
            artifact_store::Condition::Always,
        )
        .await
        .unwrap();

    let report = preserve_task(&client, &store, &diagnosis("t1"), &options(), deadline())
        .await
        .unwrap();
    assert!(report.complete, "{report:?}");
    let manifest = report.manifest.as_ref().unwrap();
    assert_eq!(manifest.not_stored.len(), 1, "{manifest:#?}");
    let refused = &manifest.not_stored[0];
    assert_eq!(
        (refused.name.as_str(), refused.source.as_str()),
        ("wd/ok.log", "wd/ok.log")
    );
    assert!(
        refused.reason.contains("clashes") && refused.reason.contains("wd/ok.log"),
        "{refused:?}"
    );
    assert!(
        report
            .files
            .iter()
            .any(|f| matches!(&f.outcome, FileOutcome::NotStored { .. }))
    );
    // Every other file is kept.
    assert_eq!(manifest.files.len(), FILES.len() - 1, "{manifest:#?}");
    let on_disk = std::fs::read_to_string(dir.path().join(prefix).join("manifest.json")).unwrap();
    assert!(on_disk.contains("\"notStored\""), "{on_disk}");
}
