//! The behaviour suite against each backend.

mod suite;

use std::sync::Arc;

use artifact_store::{ArtifactStore, LocalDirStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_directory_backend() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ArtifactStore> = Arc::new(LocalDirStore::new(dir.path()).unwrap());
    suite::all(store, "acct", &[]).await;
    // Nothing escaped the root, and no temp file is left behind.
    let tmp = dir.path().join(".artifact-store/tmp");
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
}

#[tokio::test]
async fn open_local_spec() {
    let dir = tempfile::tempdir().unwrap();
    let store = artifact_store::open(dir.path().to_str().unwrap()).unwrap();
    let k = artifact_store::ObjectKey::new("a/b").unwrap();
    store
        .put(
            &k,
            bytes::Bytes::from_static(b"x"),
            artifact_store::Condition::IfAbsent,
        )
        .await
        .unwrap();
    assert!(dir.path().join("a/b").is_file());
    assert!(artifact_store::open("  ").is_err());
}
