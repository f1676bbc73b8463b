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
