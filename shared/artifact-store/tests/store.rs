//! The behaviour suite against each backend.

mod suite;
mod suite_pages;

use std::sync::Arc;

use artifact_store::{ArtifactStore, BlobAuth, BlobStore, Condition, LocalDirStore, ObjectKey};

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

/// A token credential as Entra would hand one out: an unsigned JWT with the claims Azurite's
/// `--oauth basic` mode checks (it decodes, never verifies).
#[derive(Debug)]
struct FakeEntra {
    with_iat: bool,
}

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for FakeEntra {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        use base64::Engine as _;
        assert_eq!(
            scopes,
            ["https://storage.azure.com/.default"],
            "the SDK asks for the storage scope"
        );
        let now = time::OffsetDateTime::now_utc();
        let mut claims = serde_json::json!({
            "nbf": now.unix_timestamp() - 60,
            "exp": now.unix_timestamp() + 3600,
            "iss": "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/",
            "aud": "https://storage.azure.com",
            "oid": "00000000-0000-0000-0000-000000000001",
            "tid": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        });
        if self.with_iat {
            claims["iat"] = (now.unix_timestamp() - 60).into();
        }
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let jwt = format!(
            "{}.{}.c2lnbmF0dXJl",
            b64(&serde_json::json!({"alg": "RS256", "typ": "JWT"})),
            b64(&claims)
        );
        Ok(azure_core::credentials::AccessToken::new(
            jwt,
            now + time::Duration::hours(1),
        ))
    }
}

/// The managed-identity path (a token credential over https), as in production, on Azurite.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_blob_backend_with_a_token_credential_over_https() {
    let pki = artifact_store::testing::TestPki::new("IP:127.0.0.1");
    let azurite = artifact_store::testing::Azurite::start_oauth(
        &pki.path("server.pem"),
        &pki.path("server.key"),
    );
    let ca = std::fs::read(pki.path("ca.pem")).unwrap();
    let url = format!("{}/tokens", azurite.blob_endpoint());
    assert!(url.starts_with("https://"));
    let store = artifact_store::BlobStore::new(
        &url,
        artifact_store::BlobAuth::Token(Arc::new(FakeEntra { with_iat: true })),
    )
    .unwrap()
    .with_root_certificate(&ca)
    .unwrap()
    .with_block_size(1024 * 1024);
    store.create_container_if_missing().await.unwrap();
    let store: Arc<dyn ArtifactStore> = Arc::new(store);
    suite::all(store, "acct", &[]).await;

    // A token Azurite cannot accept is an auth error, not a retry storm.
    let refused = artifact_store::BlobStore::new(
        &url,
        artifact_store::BlobAuth::Token(Arc::new(FakeEntra { with_iat: false })),
    )
    .unwrap()
    .with_root_certificate(&ca)
    .unwrap();
    let error = refused
        .put(
            &artifact_store::ObjectKey::new("x").unwrap(),
            bytes::Bytes::from_static(b"x"),
            artifact_store::Condition::Always,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, artifact_store::StoreError::Auth { .. }) && !error.is_retryable(),
        "{error:?}"
    );
}

fn temp_files(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(root.join(".artifact-store/tmp"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect()
}

/// `len` bytes of a pattern that depends on `seed`, in chunks of `chunk` bytes.
fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + seed * 7) as u8).collect()
}

fn chunked(bytes: &[u8], chunk: usize) -> artifact_store::ByteStream {
    use futures::StreamExt;
    let chunks: Vec<std::io::Result<bytes::Bytes>> = bytes
        .chunks(chunk)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(chunks).boxed()
}

/// Many writers at once (the group commit's case): every put returns, and is visible with its
/// exact content and the ETag it returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_concurrent_puts_are_all_visible_and_intact() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDirStore::new(dir.path()).unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..96usize {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let key = artifact_store::ObjectKey::new(format!("burst/{}/{i}.txt", i % 7)).unwrap();
            // Small and large, `put` and `put_stream`, `IfAbsent` and `Always`.
            let body = pattern(i, 2048 + i * 997 + if i % 16 == 0 { 300 * 1024 } else { 0 });
            let etag = match i % 3 {
                0 => store
                    .put(
                        &key,
                        bytes::Bytes::from(body.clone()),
                        artifact_store::Condition::IfAbsent,
                    )
                    .await
                    .unwrap(),
                1 => store
                    .put(
                        &key,
                        bytes::Bytes::from(body.clone()),
                        artifact_store::Condition::Always,
                    )
                    .await
                    .unwrap(),
                _ => {
                    let info = store.put_stream(&key, chunked(&body, 4096)).await.unwrap();
                    assert_eq!(info.size, body.len() as u64);
                    info.etag
                }
            };
            (key, body, etag)
        });
    }
    let mut written = 0;
    while let Some(done) = tasks.join_next().await {
        let (key, body, etag) = done.unwrap();
        let got = store.get(&key).await.unwrap().unwrap();
        assert!(got.bytes == body, "{key}: wrong content");
        assert_eq!(got.etag, etag, "{key}");
        written += 1;
    }
    assert_eq!(written, 96);
    assert_eq!(store.list("burst/").await.unwrap().len(), 96);
    assert!(temp_files(dir.path()).is_empty());
}

/// Bodies below, at and above the in-memory threshold (256 KiB), in odd chunk sizes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_put_stream_round_trips_small_and_large_bodies() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDirStore::new(dir.path()).unwrap();
    for (n, (len, chunk)) in [
        (0, 1),
        (1, 1),
        (2048, 2048),
        (25 * 1024, 1000),
        (256 * 1024 - 1, 64 * 1024),
        (256 * 1024, 64 * 1024),
        (256 * 1024 + 1, 256 * 1024 + 1),
        (3 * 1024 * 1024 + 7, 64 * 1024 + 7),
    ]
    .into_iter()
    .enumerate()
    {
        let key = artifact_store::ObjectKey::new(format!("logs/{n}.txt")).unwrap();
        let body = pattern(n, len);
        let info = store.put_stream(&key, chunked(&body, chunk)).await.unwrap();
        assert_eq!(info.size, len as u64, "{len}");
        assert_eq!(info.key, key);
        let head = store.head(&key).await.unwrap().unwrap();
        assert_eq!((head.size, &head.etag), (len as u64, &info.etag), "{len}");
        let got = store.get(&key).await.unwrap().unwrap();
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&got.bytes)),
            hex::encode(sha2::Sha256::digest(&body)),
            "{len}"
        );
        // A second write is a new version.
        let again = store.put_stream(&key, chunked(&body, chunk)).await.unwrap();
        assert_ne!(again.etag, info.etag);
    }
    assert!(temp_files(dir.path()).is_empty());
}

/// A source that fails, early (still buffered) or late (already in a temp file), or a put that
/// is abandoned midway: no object, the previous version intact, no temp file left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_put_stream_failures_leave_nothing_behind() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDirStore::new(dir.path()).unwrap();
    let failing_after = |good: usize| {
        futures::stream::iter(
            pattern(1, good)
                .chunks(64 * 1024)
                .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        )
        .chain(futures::stream::iter([Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "source dropped",
        ))]))
        .boxed()
    };
    let existing = artifact_store::ObjectKey::new("logs/existing.txt").unwrap();
    store
        .put(
            &existing,
            bytes::Bytes::from_static(b"v1"),
            artifact_store::Condition::Always,
        )
        .await
        .unwrap();
    for good in [0, 10, 200 * 1024, 300 * 1024, 2 * 1024 * 1024] {
        let fresh = artifact_store::ObjectKey::new(format!("logs/never-{good}.txt")).unwrap();
        let error = store
            .put_stream(&fresh, failing_after(good))
            .await
            .unwrap_err();
        match &error {
            artifact_store::StoreError::Io { key, source } => {
                assert_eq!(key, fresh.as_str());
                assert_eq!(source.kind(), std::io::ErrorKind::ConnectionReset);
            }
            other => panic!("{other:?}"),
        }
        assert!(store.head(&fresh).await.unwrap().is_none(), "{good}");
        assert!(
            store
                .put_stream(&existing, failing_after(good))
                .await
                .is_err()
        );
        assert_eq!(
            &store.get(&existing).await.unwrap().unwrap().bytes[..],
            b"v1"
        );
        assert!(temp_files(dir.path()).is_empty(), "{good}");
    }

    // Abandoned after 512 KiB (so with a temp file on disk) while waiting for more.
    let stalled = futures::stream::iter(
        pattern(2, 512 * 1024)
            .chunks(64 * 1024)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    )
    .chain(futures::stream::pending())
    .boxed();
    let key = artifact_store::ObjectKey::new("logs/abandoned.txt").unwrap();
    let put = store.put_stream(&key, stalled);
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), put)
            .await
            .is_err()
    );
    assert!(store.head(&key).await.unwrap().is_none());
    assert!(temp_files(dir.path()).is_empty());
}

/// Temp files a killed writer left over an hour ago are removed when a store is opened; younger
/// ones (maybe another process's, being written) are kept.
#[tokio::test]
async fn local_store_removes_stale_temp_files_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    drop(LocalDirStore::new(dir.path()).unwrap());
    let tmp = dir.path().join(".artifact-store/tmp");
    let now = std::time::SystemTime::now();
    for (name, age_minutes) in [
        ("killed", 61),
        ("long-ago", 24 * 60),
        ("live", 59),
        ("new", 0),
    ] {
        let file = std::fs::File::create(tmp.join(name)).unwrap();
        file.set_modified(now - std::time::Duration::from_secs(age_minutes * 60))
            .unwrap();
    }
    let store = LocalDirStore::new(dir.path()).unwrap();
    let mut left: Vec<String> = temp_files(dir.path())
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["live", "new"]);
    // The store works, and leaves the live writers' files alone.
    let key = artifact_store::ObjectKey::new("a").unwrap();
    store
        .put(
            &key,
            bytes::Bytes::from_static(b"x"),
            artifact_store::Condition::IfAbsent,
        )
        .await
        .unwrap();
    assert_eq!(temp_files(dir.path()).len(), 2);
}

/// A loopback port with nothing listening on it (bound, then closed).
fn refused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn counting_observer() -> (
    artifact_store::RetryObserver,
    Arc<std::sync::Mutex<Vec<artifact_store::RetryNotice>>>,
) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let observer: artifact_store::RetryObserver =
        Arc::new(move |notice: &artifact_store::RetryNotice| {
            sink.lock().unwrap().push(notice.clone());
        });
    (observer, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_fails_without_retries_and_says_so() {
    let url = format!("http://127.0.0.1:{}/devstoreaccount1/logs", refused_port());
    let (observer, seen) = counting_observer();
    let store = BlobStore::new(
        &url,
        BlobAuth::AccountKey {
            account: artifact_store::DEVSTORE_ACCOUNT.into(),
            key: artifact_store::DEVSTORE_KEY.into(),
        },
    )
    .unwrap()
    .with_retry_observer(observer)
    .unwrap();
    let key = ObjectKey::new("acct/job/task/manifest.json").unwrap();
    let error = store.get(&key).await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("connection refused") && message.contains("acct/job/task/manifest.json"),
        "{message}"
    );
    assert!(!message.contains("sig="), "{message}");
    assert!(
        seen.lock().unwrap().is_empty(),
        "retried: {:?}",
        seen.lock().unwrap()
    );
    assert!(matches!(
        store
            .put(&key, "x".into(), Condition::Always)
            .await
            .unwrap_err(),
        artifact_store::StoreError::Transient { .. }
    ));
}

/// Answers the first request with 503, every later one with 404 BlobNotFound.
async fn unavailable_once() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/devstoreaccount1/logs",
        listener.local_addr().unwrap()
    );
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    // One answer per request head (GETs have no body).
                    while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                        buffer.drain(..end + 4);
                        let answer: &[u8] = if counted
                            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                            == 0
                        {
                            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
                        } else {
                            b"HTTP/1.1 404 The specified blob does not exist.\r\nx-ms-error-code: BlobNotFound\r\ncontent-length: 0\r\n\r\n"
                        };
                        if socket.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_retried_and_each_retry_announced() {
    let (url, requests) = unavailable_once().await;
    let (observer, seen) = counting_observer();
    let store = BlobStore::new(&url, BlobAuth::Anonymous)
        .unwrap()
        .with_retry_observer(observer)
        .unwrap();
    let key = ObjectKey::new("a/b.json").unwrap();
    assert_eq!(store.get(&key).await.unwrap(), None);
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 2);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!((seen[0].retry, seen[0].max_retries), (1, 6));
    assert!(seen[0].to_string().contains("retry 1 of 6"), "{}", seen[0]);
}

#[tokio::test]
async fn a_key_whose_directory_is_an_object_is_a_key_conflict_on_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDirStore::new(dir.path()).unwrap();
    let file = ObjectKey::new("f/wd/x").unwrap();
    let beneath = ObjectKey::new("f/wd/x/y").unwrap();
    let deeper = ObjectKey::new("f/wd/x/y/z").unwrap();
    store
        .put(&file, "x".into(), Condition::Always)
        .await
        .unwrap();
    for key in [&beneath, &deeper] {
        let error = store
            .put(key, "y".into(), Condition::Always)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, artifact_store::StoreError::KeyConflict { key: k, .. } if k == key.as_str()),
            "{error:?}"
        );
        let error = store.put_stream(key, chunked(b"y", 1)).await.unwrap_err();
        assert!(
            matches!(error, artifact_store::StoreError::KeyConflict { .. }),
            "{error:?}"
        );
    }
    // The other way round: a key that is a directory of other objects.
    let dir_key = ObjectKey::new("g/a").unwrap();
    store
        .put(
            &ObjectKey::new("g/a/b").unwrap(),
            "b".into(),
            Condition::Always,
        )
        .await
        .unwrap();
    for condition in [Condition::Always, Condition::IfAbsent] {
        let error = store
            .put(&dir_key, "a".into(), condition)
            .await
            .unwrap_err();
        assert!(
            matches!(error, artifact_store::StoreError::KeyConflict { .. }),
            "{error:?}"
        );
    }
    assert_eq!(std::fs::read(dir.path().join("f/wd/x")).unwrap(), b"x");
}

/// The local store's pages hold a page of names per directory, so a directory with more entries
/// than a page is read in several passes, and directories left empty by deletes are passed over:
/// the pages still give every key once, in order, and say exactly whether more remain.
#[tokio::test]
async fn local_pages_through_large_and_emptied_directories() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDirStore::new(dir.path()).unwrap();
    let mut keys = Vec::new();
    for i in 0..120 {
        // Files and directories side by side, with names that sort around `/`.
        let name = match i % 3 {
            0 => format!("big/{i:03}"),
            1 => format!("big/{i:03}-x/y"),
            _ => format!("big/{i:03}.z"),
        };
        store
            .put(
                &ObjectKey::new(name.as_str()).unwrap(),
                bytes::Bytes::from_static(b"x"),
                Condition::Always,
            )
            .await
            .unwrap();
        keys.push(name);
    }
    keys.sort();
    for max in [1, 7, 40, 119, 120, 500] {
        let mut got = Vec::new();
        let mut from = None;
        let mut pages = 0;
        loop {
            let page = store.list_page("big/", from.as_ref(), max).await.unwrap();
            assert!(!page.objects.is_empty() && page.objects.len() <= max);
            got.extend(page.objects.into_iter().map(|o| o.key.as_str().to_owned()));
            pages += 1;
            match page.next {
                Some(next) => from = Some(next),
                None => break,
            }
        }
        assert_eq!(got, keys, "max {max}");
        assert_eq!(pages, keys.len().div_ceil(max), "exact: no empty last page");
    }
    // Every `-x` directory emptied by deletes but the last: passed over.
    let emptied: Vec<_> = keys.iter().filter(|k| k.ends_with("-x/y")).collect();
    for key in &emptied[..emptied.len() - 1] {
        store
            .delete(&ObjectKey::new(key.as_str()).unwrap(), Condition::Always)
            .await
            .unwrap();
    }
    let page = store.list_page("big/0", None, 3).await.unwrap();
    assert_eq!(page.objects.len(), 3);
    let last = store
        .list_page("big/11", None, 10)
        .await
        .unwrap()
        .objects
        .into_iter()
        .map(|o| o.key.as_str().to_owned())
        .collect::<Vec<_>>();
    assert_eq!(
        last,
        [
            "big/110.z",
            "big/111",
            "big/113.z",
            "big/114",
            "big/116.z",
            "big/117",
            "big/118-x/y",
            "big/119.z"
        ]
    );
}

/// The committed blocks of a blob, read with the SDK directly: a blob made by one Put Blob has
/// none, one committed from staged blocks has one per block.
async fn committed_blocks(
    azurite: &artifact_store::testing::Azurite,
    container: &str,
    key: &str,
) -> usize {
    let sas = artifact_store::account_sas(
        artifact_store::DEVSTORE_ACCOUNT,
        artifact_store::DEVSTORE_KEY,
        false,
        std::time::Duration::from_secs(600),
    )
    .unwrap();
    let url = url::Url::parse(&format!("{}/{container}?{sas}", azurite.blob_endpoint())).unwrap();
    let client = azure_storage_blob::BlobContainerClient::new(url, None, None).unwrap();
    let list = client
        .blob_client(key)
        .block_blob_client()
        .get_block_list(azure_storage_blob::models::BlockListType::Committed, None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    list.committed_blocks.unwrap_or_default().len()
}

/// A stream that ends within its first block (most task logs) is one Put Blob, not a Put Block
/// and a Put Block List: a burst of failures copies two logs each, so this halves their
/// requests. The blob it makes has no committed block; a stream longer than a block is still
/// committed block by block, in bounded memory. Both read back whole, with the right size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_put_stream_of_one_block_is_one_put_blob() {
    let azurite = artifact_store::testing::Azurite::start();
    let store = azurite.store("streams").await.with_block_size(64 * 1024);
    for (name, len, blocks) in [
        ("empty.txt", 0, 0),
        ("small.txt", 2048, 0),
        ("one-block.txt", 64 * 1024 - 1, 0),
        ("three-blocks.txt", 2 * 64 * 1024 + 5, 3),
    ] {
        let key = ObjectKey::new(name).unwrap();
        let body = pattern(len, len);
        let info = store.put_stream(&key, chunked(&body, 1000)).await.unwrap();
        assert_eq!(info.size, len as u64, "{name}");
        let got = store.get(&key).await.unwrap().unwrap();
        assert!(got.bytes == body, "{name}: wrong content");
        assert_eq!(got.etag, info.etag, "{name}");
        assert_eq!(
            committed_blocks(&azurite, "streams", name).await,
            blocks,
            "{name}"
        );
    }
    // A failing small stream still leaves nothing behind.
    let failing: artifact_store::ByteStream = {
        use futures::StreamExt;
        futures::stream::iter(vec![
            Ok(bytes::Bytes::from_static(b"partial")),
            Err(std::io::Error::other("the source broke")),
        ])
        .boxed()
    };
    let broken = ObjectKey::new("broken.txt").unwrap();
    assert!(matches!(
        store.put_stream(&broken, failing).await,
        Err(artifact_store::StoreError::Io { .. })
    ));
    assert!(store.get(&broken).await.unwrap().is_none());
}

/// Two instances copying the same small log at once (a failure's completion and failure events
/// in two Event Hubs batches) both succeed, and the object is one writer's whole content. Staged
/// blocks could not promise it: the first commit discards the other writer's uncommitted blocks,
/// and its commit then fails with `InvalidBlockList`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blob_small_streams_racing_on_one_key_all_succeed() {
    let azurite = artifact_store::testing::Azurite::start();
    let store = Arc::new(azurite.store("race").await);
    let key = ObjectKey::new("t/attempt-0/stdout.txt").unwrap();
    let bodies: Vec<Vec<u8>> = (0..16).map(|seed| pattern(seed, 2048)).collect();
    for _ in 0..4 {
        let mut writers = tokio::task::JoinSet::new();
        for body in bodies.clone() {
            let (store, key) = (store.clone(), key.clone());
            writers.spawn(async move { store.put_stream(&key, chunked(&body, 512)).await });
        }
        while let Some(written) = writers.join_next().await {
            written.unwrap().unwrap();
        }
        let got = store.get(&key).await.unwrap().unwrap();
        assert!(bodies.iter().any(|b| got.bytes == *b), "a mix of writers");
    }
}
