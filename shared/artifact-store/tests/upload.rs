//! The way in given to Batch for the node agent's logs: write-only on Blob, a staging directory
//! outside the keys on a local store, nothing for a store opened with its own SAS.

use std::time::Duration;

use artifact_store::{
    ArtifactStore, BlobAuth, BlobStore, Condition, LocalDirStore, ObjectKey, UploadTarget,
};

fn prefix() -> ObjectKey {
    ObjectKey::new("acct/_pools/p1/n1/_agentlogs").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blob_sas_given_to_batch_writes_but_cannot_read_list_or_delete() {
    let azurite = artifact_store::testing::Azurite::start();
    let store = azurite.store("uploads").await;
    // Something already in the store that Batch must not be able to read.
    let secret_key = ObjectKey::new("acct/job/task/stdout.txt").unwrap();
    store
        .put(
            &secret_key,
            bytes::Bytes::from_static(b"private"),
            Condition::IfAbsent,
        )
        .await
        .unwrap();
    let target = store
        .upload_target(&prefix(), Duration::from_secs(3600))
        .unwrap();
    let UploadTarget::ContainerSas { url } = target else {
        panic!("an account-key store signs a SAS, got {target:?}");
    };
    // The Debug of the target hides the SAS.
    let shown = format!("{:?}", UploadTarget::ContainerSas { url: url.clone() });
    assert!(!shown.contains("sig="), "{shown}");
    let (container, sas) = url.expose().split_once('?').unwrap();
    assert!(sas.contains("sp=cw") && !sas.contains("st="), "{sas}");
    let http = reqwest::Client::new();
    // Batch writes a file under its virtual directory: allowed.
    let written = http
        .put(format!("{container}/p1/n1/0795539d/agent.log?{sas}"))
        .header("x-ms-blob-type", "BlockBlob")
        .body("agent log line")
        .send()
        .await
        .unwrap();
    assert_eq!(written.status().as_u16(), 201, "{:?}", written.text().await);
    let kept = store
        .get(&ObjectKey::new("p1/n1/0795539d/agent.log").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&kept.bytes[..], b"agent log line");
    // Reading, listing and deleting are refused.
    let read = http
        .get(format!("{container}/acct/job/task/stdout.txt?{sas}"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status().as_u16(), 403);
    let list = http
        .get(format!("{container}?restype=container&comp=list&{sas}"))
        .send()
        .await
        .unwrap();
    assert_eq!(list.status().as_u16(), 403);
    let delete = http
        .delete(format!("{container}/acct/job/task/stdout.txt?{sas}"))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status().as_u16(), 403);
    assert!(store.head(&secret_key).await.unwrap().is_some());
    // A SAS signed with another key is refused: the signature is checked.
    let forged = sas.replace("sp=cw", "sp=rcw");
    let read = http
        .get(format!("{container}/acct/job/task/stdout.txt?{forged}"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status().as_u16(), 403);
}

#[tokio::test]
async fn a_store_opened_with_a_sas_never_hands_it_to_batch() {
    let store = BlobStore::new(
        "https://acct.blob.core.windows.net/logs",
        BlobAuth::Sas("sv=2024-11-04&sp=rwdl&sig=SECRET".to_owned()),
    )
    .unwrap();
    let target = store
        .upload_target(&prefix(), Duration::from_secs(3600))
        .unwrap();
    match target {
        UploadTarget::Unsupported { reason } => assert!(!reason.contains("SECRET"), "{reason}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[tokio::test]
async fn a_local_store_gives_a_staging_directory_outside_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDirStore::new(dir.path()).unwrap();
    let target = store
        .upload_target(&prefix(), Duration::from_secs(60))
        .unwrap();
    let UploadTarget::Directory { url, path } = target else {
        panic!("a local store gives a directory, got {target:?}");
    };
    assert!(
        url.starts_with("file:///") && url.ends_with("/_agentlogs/"),
        "{url}"
    );
    assert!(path.is_dir());
    assert!(path.starts_with(store.root().join(".artifact-store")));
    // What lands there is not a key until it is copied in.
    std::fs::write(path.join("agent.log"), "x").unwrap();
    assert!(store.list("").await.unwrap().is_empty());
}
