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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_blob_backend_on_azurite_with_account_key() {
    let azurite = artifact_store::testing::Azurite::start();
    let store: Arc<dyn ArtifactStore> =
        Arc::new(azurite.store("suite").await.with_block_size(1024 * 1024));
    suite::all(
        store,
        "acct",
        &[&artifact_store::DEVSTORE_KEY[..20], "sig="],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_blob_backend_via_connection_string_and_sas_url() {
    let azurite = artifact_store::testing::Azurite::start();
    azurite.store("conn").await;
    // UseDevelopmentStorage=true with the test's endpoint, through `open`.
    let store = artifact_store::open(&azurite.connection_string("conn")).unwrap();
    let k = artifact_store::ObjectKey::new("a/b.txt").unwrap();
    store
        .put(
            &k,
            bytes::Bytes::from_static(b"hi"),
            artifact_store::Condition::IfAbsent,
        )
        .await
        .unwrap();
    // A container URL carrying a SAS: the SAS is used, but never shown.
    let sas = artifact_store::account_sas(
        artifact_store::DEVSTORE_ACCOUNT,
        artifact_store::DEVSTORE_KEY,
        false,
        std::time::Duration::from_secs(600),
    )
    .unwrap();
    let url = format!("{}/conn?{sas}", azurite.blob_endpoint());
    let by_sas = artifact_store::open(&url).unwrap();
    assert_eq!(&by_sas.get(&k).await.unwrap().unwrap().bytes[..], b"hi");
    let link = by_sas.link(&k).unwrap();
    assert_eq!(link, format!("{}/conn/a/b.txt", azurite.blob_endpoint()));
    assert!(!format!("{by_sas:?}").contains("sig="));
    // A wrong key is an Auth error that does not echo the key.
    let wrong = artifact_store::BlobStore::new(
        &format!("{}/conn", azurite.blob_endpoint()),
        artifact_store::BlobAuth::AccountKey {
            account: artifact_store::DEVSTORE_ACCOUNT.into(),
            key: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
        },
    )
    .unwrap();
    let err = wrong.get(&k).await.unwrap_err();
    assert!(
        matches!(err, artifact_store::StoreError::Auth { .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains("sig="), "{err}");
}
