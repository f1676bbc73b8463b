//! The Azure Blob Storage backend, on the official `azure_storage_blob` 1.x crate.
//!
//! - Small objects: one Put Blob (`upload`), with `If-None-Match: *` for [`Condition::IfAbsent`]
//!   and `If-Match` for [`Condition::IfMatch`]; the service checks the condition atomically.
//! - Streams: `stage_block` per block of [`BlobStore::block_size`] bytes, at most
//!   [`BlobStore::concurrency`] blocks in flight, then `commit_block_list`. Memory is
//!   `block_size × (concurrency + 1)` whatever the object size; nothing is visible until the
//!   commit, and uncommitted blocks of an aborted upload are discarded by the service. Block ids
//!   carry a per-upload random prefix so two writers of one key never mix blocks (but a commit
//!   discards the other writer's uncommitted blocks, so of two large writers racing on one key
//!   the later commit may fail, with `InvalidBlockList`).
//! - A stream that ends within its first block (most task logs) is one Put Blob instead of a
//!   Put Block and a Put Block List: half the requests, equally invisible until complete, and
//!   two writers racing on one key both succeed (the last one wins whole). Its MD5 is stored as
//!   the blob's `Content-MD5` (the SDK's single-shot upload takes no transactional MD5).
//! - Auth ([`BlobAuth`]): a token credential (managed identity in production; the SDK requires
//!   https), a SAS in the URL, or an account key. The SDK has no Shared Key auth, so an account
//!   key is turned into an account SAS here (HMAC-SHA256, valid for a day, renewed after half of
//!   it).
//!
//! - Retries ([`crate::retry`]): transient failures get a bounded exponential back-off, each
//!   retry announced to the store's [`RetryObserver`]; a refused connection fails at once.
//!
//! The SAS and the key never appear in `Debug`, errors or links.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::Etag;
use azure_storage_blob::BlobContainerClient;
use azure_storage_blob::models::{
    BlobClientDeleteOptions, BlobClientGetPropertiesResultHeaders,
    BlockBlobClientCommitBlockListOptions, BlockBlobClientCommitBlockListResultHeaders,
    BlockBlobClientStageBlockOptions, BlockBlobClientUploadOptions, BlockLookupList,
};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use url::Url;

use crate::retry::{ConnectionRefused, FailFastOnRefused, RetryObserver, StoreRetry, was_refused};
use crate::{
    ArtifactStore, ByteStream, Condition, ETag, ListCursor, ListPage, ObjectInfo, ObjectKey,
    StoreError, Versioned,
};

/// Azurite's well-known development account.
pub const DEVSTORE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development key (public; it only opens the emulator).
pub const DEVSTORE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The container used when a connection string names none.
pub const DEFAULT_CONTAINER: &str = "batch-triage";
/// Service version put in generated SAS tokens.
const SAS_VERSION: &str = "2024-11-04";
/// How long a generated account SAS is valid; it is renewed after half of it.
const SAS_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// How the blob backend authenticates.
#[derive(Clone)]
pub enum BlobAuth {
    /// An Entra ID token credential (managed identity, workload identity, developer tools). The
    /// container URL must be https.
    Token(Arc<dyn TokenCredential>),
    /// A SAS token (the query string, without `?`), appended to every request URL.
    Sas(String),
    /// A storage account name and key: an account SAS is computed from it.
    AccountKey {
        /// The storage account name.
        account: String,
        /// The base64 account key.
        key: String,
    },
    /// No auth (public containers, or a SAS already in the container URL).
    Anonymous,
}

impl std::fmt::Debug for BlobAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BlobAuth::Token(_) => "Token",
            BlobAuth::Sas(_) => "Sas(<redacted>)",
            BlobAuth::AccountKey { .. } => "AccountKey(<redacted>)",
            BlobAuth::Anonymous => "Anonymous",
        })
    }
}

/// Objects as block blobs in one container.
pub struct BlobStore {
    /// The container URL without any query: what links and `Debug` show.
    container_url: Url,
    auth: BlobAuth,
    client: Mutex<(Arc<BlobContainerClient>, Instant)>,
    block_size: usize,
    concurrency: usize,
    /// A transport that trusts an extra root CA (see [`BlobStore::with_root_certificate`]).
    transport: Option<azure_core::http::Transport>,
    /// Told of each retry (see [`BlobStore::with_retry_observer`]).
    observer: Option<RetryObserver>,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore")
            .field("container_url", &self.container_url.as_str())
            .field("auth", &self.auth)
            .field("block_size", &self.block_size)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

pub(crate) fn bad_spec(message: impl Into<String>) -> StoreError {
    StoreError::Other {
        message: message.into(),
    }
}

impl BlobStore {
    /// A store for the container at `container_url` (`https://acct.blob.core.windows.net/logs`,
    /// `http://127.0.0.1:10000/devstoreaccount1/logs`). A SAS in the URL's query is taken out
    /// and used as [`BlobAuth::Sas`] when `auth` is [`BlobAuth::Anonymous`].
    pub fn new(container_url: &str, auth: BlobAuth) -> Result<Self, StoreError> {
        let mut url = Url::parse(container_url.trim())
            .map_err(|e| bad_spec(format!("invalid blob container URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad_spec("a blob container URL must be http(s)"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad_spec("a blob container URL must not hold credentials"));
        }
        let sas = url.query().filter(|q| !q.is_empty()).map(str::to_owned);
        url.set_query(None);
        url.set_fragment(None);
        // A trailing '/' would make `…/container//blob`, a different blob name.
        let path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&path);
        if url.path_segments().is_none_or(|mut s| s.all(str::is_empty)) {
            return Err(bad_spec("the blob URL must name a container (…/CONTAINER)"));
        }
        let auth = match (auth, sas) {
            (BlobAuth::Anonymous, Some(sas)) => BlobAuth::Sas(sas),
            (auth, _) => auth,
        };
        if let BlobAuth::AccountKey { key, .. } = &auth {
            base64::engine::general_purpose::STANDARD
                .decode(key.trim())
                .map_err(|_| bad_spec("the storage account key is not valid base64"))?;
        }
        let client = build_client(&url, &auth, None, None)?;
        Ok(BlobStore {
            container_url: url,
            auth,
            client: Mutex::new((Arc::new(client), Instant::now())),
            block_size: 4 * 1024 * 1024,
            concurrency: 4,
            transport: None,
            observer: None,
        })
    }

    /// Calls `observer` before each retry of a request (after a throttle, a 5xx, a dropped
    /// connection), so a person watching knows the store is being retried, not hung.
    pub fn with_retry_observer(mut self, observer: RetryObserver) -> Result<Self, StoreError> {
        self.observer = Some(observer);
        let client = build_client(
            &self.container_url,
            &self.auth,
            self.transport.as_ref(),
            self.observer.clone(),
        )?;
        self.client = Mutex::new((Arc::new(client), Instant::now()));
        Ok(self)
    }

    /// Also trusts the root CA in `pem` for the storage endpoint's certificate, besides the
    /// system roots: a private endpoint behind a company CA, or Azurite over https in tests.
    pub fn with_root_certificate(mut self, pem: &[u8]) -> Result<Self, StoreError> {
        let certificate = reqwest::Certificate::from_pem(pem)
            .map_err(|e| bad_spec(format!("invalid root certificate: {e}")))?;
        let http = reqwest::Client::builder()
            .add_root_certificate(certificate)
            .build()
            .map_err(|e| bad_spec(format!("could not build the HTTP client: {e}")))?;
        let transport = azure_core::http::Transport::new(Arc::new(http));
        let client = build_client(
            &self.container_url,
            &self.auth,
            Some(&transport),
            self.observer.clone(),
        )?;
        self.client = Mutex::new((Arc::new(client), Instant::now()));
        self.transport = Some(transport);
        Ok(self)
    }

    /// A store from a `BATCH_TRIAGE_STORE`-style spec: a container URL (with a SAS, or bare for
    /// an Entra credential) or a connection string plus `;Container=NAME`.
    pub fn from_spec(spec: &str) -> Result<Self, StoreError> {
        let spec = spec.trim();
        if spec.starts_with("http://") || spec.starts_with("https://") {
            let has_query = spec.contains('?');
            let auth = if has_query {
                BlobAuth::Anonymous
            } else {
                BlobAuth::Token(default_credential()?)
            };
            return BlobStore::new(spec, auth);
        }
        let cs = crate::connection_string::ConnectionString::parse(spec)?;
        BlobStore::new(&cs.container_url, cs.auth)
    }

    /// Bytes per staged block (default 4 MiB: in the benchmark it was both faster and half the
    /// peak memory of 8 MiB; the service allows 50,000 blocks, so 4 MiB blocks allow 195 GiB
    /// objects).
    pub fn with_block_size(mut self, bytes: usize) -> Self {
        self.block_size = bytes.clamp(64 * 1024, 512 * 1024 * 1024);
        self
    }

    /// Blocks staged at once (default 4).
    pub fn with_concurrency(mut self, blocks: usize) -> Self {
        self.concurrency = blocks.clamp(1, 64);
        self
    }

    /// Bytes per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks in flight.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// The container URL without any secret.
    pub fn container_url(&self) -> &Url {
        &self.container_url
    }

    /// Creates the container if it does not exist (needs the right to; a 409 is success).
    pub async fn create_container_if_missing(&self) -> Result<(), StoreError> {
        match self.client()?.create(None).await {
            Ok(_) => Ok(()),
            Err(e) if e.http_status().map(u16::from) == Some(409) => Ok(()),
            Err(e) => Err(map_err("(container)", &e)),
        }
    }

    fn client(&self) -> Result<Arc<BlobContainerClient>, StoreError> {
        let mut guard = self
            .client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if matches!(self.auth, BlobAuth::AccountKey { .. }) && guard.1.elapsed() > SAS_LIFETIME / 2
        {
            *guard = (
                Arc::new(build_client(
                    &self.container_url,
                    &self.auth,
                    self.transport.as_ref(),
                    self.observer.clone(),
                )?),
                Instant::now(),
            );
        }
        Ok(guard.0.clone())
    }
}

fn default_credential() -> Result<Arc<dyn TokenCredential>, StoreError> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if var("IDENTITY_ENDPOINT").is_some() || var("MSI_ENDPOINT").is_some() {
        let options = azure_identity::ManagedIdentityCredentialOptions {
            user_assigned_id: var("AZURE_CLIENT_ID").map(azure_identity::UserAssignedId::ClientId),
            client_options: azure_core::http::ClientOptions {
                transport: Some(lazy_http::LazyHttpClient::transport()),
                ..Default::default()
            },
        };
        let credential: Arc<dyn TokenCredential> =
            azure_identity::ManagedIdentityCredential::new(Some(options)).map_err(|e| {
                StoreError::Auth {
                    message: format!("managed identity: {e}"),
                }
            })?;
        return Ok(credential);
    }
    let credential: Arc<dyn TokenCredential> = azure_identity::DeveloperToolsCredential::new(None)
        .map_err(|e| StoreError::Auth {
            message: format!("developer credential: {e}"),
        })?;
    Ok(credential)
}

fn build_client(
    url: &Url,
    auth: &BlobAuth,
    transport: Option<&azure_core::http::Transport>,
    observer: Option<RetryObserver>,
) -> Result<BlobContainerClient, StoreError> {
    let mut url = url.clone();
    let credential = match auth {
        BlobAuth::Token(credential) => Some(credential.clone()),
        BlobAuth::Sas(sas) => {
            url.set_query(Some(sas.trim_start_matches('?')));
            None
        }
        BlobAuth::AccountKey { account, key } => {
            let https_only = url.scheme() == "https";
            url.set_query(Some(&account_sas(account, key, https_only, SAS_LIFETIME)?));
            None
        }
        BlobAuth::Anonymous => None,
    };
    // Without a transport of its own, the client gets one that loads the TLS roots on the
    // first request, not now (the lazy-http crate).
    let transport = transport
        .cloned()
        .unwrap_or_else(lazy_http::LazyHttpClient::transport);
    let options = azure_storage_blob::BlobContainerClientOptions {
        client_options: azure_core::http::ClientOptions {
            transport: Some(transport),
            retry: azure_core::http::RetryOptions::custom(Arc::new(StoreRetry::new(observer))),
            per_try_policies: vec![Arc::new(FailFastOnRefused)],
            ..Default::default()
        },
        ..Default::default()
    };
    // The SDK's message would echo the URL (and so the SAS): say it without.
    BlobContainerClient::new(url, credential, Some(options)).map_err(|e| {
        let message = match e.kind() {
            ErrorKind::Other if e.to_string().contains("must use https") => {
                "a token credential needs an https container URL".to_owned()
            }
            _ => "could not create the blob client".to_owned(),
        };
        bad_spec(message)
    })
}

/// An account SAS (service blob, resource types service/container/object, permissions
/// read/write/delete/list/add/create) valid for `lifetime`, as a query string.
pub fn account_sas(
    account: &str,
    key: &str,
    https_only: bool,
    lifetime: Duration,
) -> Result<String, StoreError> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .map_err(|_| bad_spec("the storage account key is not valid base64"))?;
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    let now = time::OffsetDateTime::now_utc();
    let start = (now - time::Duration::minutes(5))
        .format(&format)
        .map_err(|e| bad_spec(e.to_string()))?;
    let expiry = (now + lifetime)
        .format(&format)
        .map_err(|e| bad_spec(e.to_string()))?;
    let (permissions, services, resource_types) = ("rwdlac", "b", "sco");
    let protocol = if https_only { "https" } else { "https,http" };
    let string_to_sign = format!(
        "{account}\n{permissions}\n{services}\n{resource_types}\n{start}\n{expiry}\n\n{protocol}\n{SAS_VERSION}\n\n"
    );
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&key).map_err(|_| bad_spec("invalid account key"))?;
    mac.update(string_to_sign.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("sv", SAS_VERSION)
        .append_pair("ss", services)
        .append_pair("srt", resource_types)
        .append_pair("sp", permissions)
        .append_pair("st", &start)
        .append_pair("se", &expiry)
        .append_pair("spr", protocol)
        .append_pair("sig", &signature);
    Ok(query.finish())
}

/// Maps an SDK error to a [`StoreError`] from its status and error code only: the SDK's own
/// message can hold the request URL and so the SAS.
pub(crate) fn map_err(key: &str, e: &azure_core::Error) -> StoreError {
    let status = e.http_status().map(u16::from);
    let code = match e.kind() {
        ErrorKind::HttpResponse { error_code, .. } => error_code.clone(),
        _ => None,
    };
    // A refused connection: said plainly, and transient (the store may come back), but the
    // client did not retry it.
    if was_refused(e) {
        return StoreError::Transient {
            message: format!("{key}: {ConnectionRefused}"),
        };
    }
    let what = match (status, &code) {
        (Some(s), Some(c)) => format!("{key}: HTTP {s} {c}"),
        (Some(s), None) => format!("{key}: HTTP {s}"),
        (None, _) => format!("{key}: {}", kind_name(e.kind())),
    };
    match status {
        Some(401 | 403) => StoreError::Auth { message: what },
        Some(408 | 429 | 500 | 502 | 503 | 504) => StoreError::Transient { message: what },
        None if matches!(e.kind(), ErrorKind::Io | ErrorKind::Connection) => {
            StoreError::Transient { message: what }
        }
        _ => StoreError::Other { message: what },
    }
}

fn kind_name(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Io => "I/O error",
        ErrorKind::Connection => "connection error",
        ErrorKind::Credential => "credential error",
        ErrorKind::DataConversion => "unexpected response",
        _ => "request failed",
    }
}

fn status_of(e: &azure_core::Error) -> Option<u16> {
    e.http_status().map(u16::from)
}

pub(crate) fn etag_of(etag: Option<Etag>) -> ETag {
    ETag(etag.map(|e| e.to_string()).unwrap_or_default())
}

#[async_trait]
impl ArtifactStore for BlobStore {
    async fn get(&self, key: &ObjectKey) -> Result<Option<Versioned>, StoreError> {
        let blob = self.client()?.blob_client(key.as_str());
        let result = match blob.download(None).await {
            Ok(result) => result,
            Err(e) if status_of(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(map_err(key.as_str(), &e)),
        };
        let etag = etag_of(result.properties.etag.clone());
        let bytes = result
            .body
            .collect()
            .await
            .map_err(|e| map_err(key.as_str(), &e))?;
        Ok(Some(Versioned { bytes, etag }))
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectInfo>, StoreError> {
        let blob = self.client()?.blob_client(key.as_str());
        let response = match blob.get_properties(None).await {
            Ok(response) => response,
            Err(e) if status_of(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(map_err(key.as_str(), &e)),
        };
        let size = response
            .content_length()
            .map_err(|e| map_err(key.as_str(), &e))?
            .unwrap_or(0);
        let etag = etag_of(response.etag().map_err(|e| map_err(key.as_str(), &e))?);
        Ok(Some(ObjectInfo {
            key: key.clone(),
            size,
            etag,
        }))
    }

    async fn put(
        &self,
        key: &ObjectKey,
        body: Bytes,
        condition: Condition,
    ) -> Result<ETag, StoreError> {
        let blob = self.client()?.blob_client(key.as_str());
        let mut options = BlockBlobClientUploadOptions::default();
        match &condition {
            Condition::Always => {}
            Condition::IfAbsent => options = options.if_not_exists(),
            Condition::IfMatch(etag) => options.if_match = Some(Etag::from(etag.0.clone())),
        }
        match blob.upload(body.into(), Some(options)).await {
            Ok(result) => Ok(etag_of(result.etag)),
            Err(e) => Err(condition_err(key, &condition, &e)),
        }
    }

    async fn put_stream(
        &self,
        key: &ObjectKey,
        mut body: ByteStream,
    ) -> Result<ObjectInfo, StoreError> {
        let client = Arc::new(self.client()?.blob_client(key.as_str()).block_blob_client());
        let upload_id = uuid::Uuid::new_v4();
        let block_size = self.block_size;
        let mut ids: Vec<Vec<u8>> = Vec::new();
        // Staging runs in spawned tasks so uploads progress while the source is read; dropping
        // the set (an early return) aborts them. Each task hands its block back for reuse, so
        // the process holds at most `concurrency + 1` block buffers, allocated once.
        let mut staging: tokio::task::JoinSet<(azure_core::Result<()>, Bytes)> =
            tokio::task::JoinSet::new();
        let mut pool: Vec<BytesMut> = Vec::new();
        let mut current = BytesMut::with_capacity(block_size);
        let mut total: u64 = 0;
        loop {
            let (mut chunk, ended) = match body.next().await {
                Some(Ok(chunk)) => (chunk, false),
                Some(Err(e)) => return Err(StoreError::io(key.as_str(), e)),
                None => (Bytes::new(), true),
            };
            while !chunk.is_empty() || (ended && !current.is_empty()) {
                let room = block_size - current.len();
                let piece = chunk.split_to(room.min(chunk.len()));
                current.extend_from_slice(&piece);
                if current.len() < block_size && !ended {
                    continue;
                }
                if ended && ids.is_empty() {
                    // The whole object is this one block: one Put Blob (below).
                    break;
                }
                // A full block (or the last one): wait for a slot, then stage it.
                while staging.len() >= self.concurrency {
                    reclaim(&mut staging, &mut pool, key).await?;
                }
                let next = pool
                    .pop()
                    .unwrap_or_else(|| BytesMut::with_capacity(block_size));
                let block = std::mem::replace(&mut current, next).freeze();
                total += block.len() as u64;
                let mut id = upload_id.as_bytes().to_vec();
                id.extend_from_slice(&(ids.len() as u64).to_be_bytes());
                ids.push(id.clone());
                let client = client.clone();
                staging.spawn(async move {
                    let len = block.len() as u64;
                    // The block's MD5 as Content-MD5: the service checks each block arrived
                    // intact before staging it (a transactional check beside the manifest's
                    // end-to-end sha256), and it spares the service its own CRC64 pass.
                    let options = BlockBlobClientStageBlockOptions {
                        transactional_content_md5: Some(md5_of(&block)),
                        ..Default::default()
                    };
                    let result = client
                        .stage_block(&id, len, block.clone().into(), Some(options))
                        .await;
                    (result.map(|_| ()), block)
                });
                if ended && chunk.is_empty() {
                    break;
                }
            }
            if ended {
                break;
            }
        }
        if ids.is_empty() {
            return put_whole(&client, key, current.freeze()).await;
        }
        while !staging.is_empty() {
            reclaim(&mut staging, &mut pool, key).await?;
        }
        let list = BlockLookupList {
            latest: Some(ids),
            ..Default::default()
        };
        let content = list
            .try_into()
            .map_err(|e: azure_core::Error| map_err(key.as_str(), &e))?;
        let response = client
            .commit_block_list(
                content,
                Some(BlockBlobClientCommitBlockListOptions::default()),
            )
            .await
            .map_err(|e| map_err(key.as_str(), &e))?;
        let etag = etag_of(response.etag().map_err(|e| map_err(key.as_str(), &e))?);
        Ok(ObjectInfo {
            key: key.clone(),
            size: total,
            etag,
        })
    }

    async fn list_page(
        &self,
        prefix: &str,
        from: Option<&ListCursor>,
        max: usize,
    ) -> Result<ListPage, StoreError> {
        crate::blob_list::page(&*self.client()?, prefix, from, max).await
    }

    async fn delete(&self, key: &ObjectKey, condition: Condition) -> Result<(), StoreError> {
        let blob = self.client()?.blob_client(key.as_str());
        let mut options = BlobClientDeleteOptions::default();
        match &condition {
            Condition::Always => {}
            Condition::IfAbsent => {
                return match self.head(key).await? {
                    Some(_) => Err(StoreError::ConditionFailed {
                        key: key.to_string(),
                    }),
                    None => Ok(()),
                };
            }
            Condition::IfMatch(etag) => options.if_match = Some(Etag::from(etag.0.clone())),
        }
        match blob.delete(Some(options)).await {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(404) && condition == Condition::Always => Ok(()),
            Err(e) => Err(condition_err(key, &condition, &e)),
        }
    }

    fn link(&self, key: &ObjectKey) -> Option<String> {
        let mut url = self.container_url.clone();
        url.path_segments_mut().ok()?.extend(key.segments());
        Some(url.to_string())
    }

    fn upload_target(
        &self,
        _prefix: &ObjectKey,
        lifetime: Duration,
    ) -> Result<crate::UploadTarget, StoreError> {
        // Batch writes under its own `virtualDirectoryName`, so the prefix does not change the
        // URL; the SAS can only create and write (see `upload.rs`).
        let container = self
            .container_url
            .path_segments()
            .and_then(|mut s| s.rfind(|s| !s.is_empty()))
            .unwrap_or_default()
            .to_owned();
        match &self.auth {
            BlobAuth::AccountKey { account, key } => {
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                let sas = crate::container_service_sas(
                    account,
                    key,
                    &container,
                    crate::UPLOAD_SAS_PERMISSIONS,
                    now,
                    lifetime,
                    self.container_url.scheme() == "http",
                )?;
                Ok(crate::UploadTarget::ContainerSas {
                    url: foundation::Secret::new(format!(
                        "{}?{}",
                        self.container_url,
                        sas.expose()
                    )),
                })
            }
            BlobAuth::Token(_) => Ok(crate::UploadTarget::Identity {
                container_url: self.container_url.to_string(),
            }),
            BlobAuth::Sas(_) | BlobAuth::Anonymous => Ok(crate::UploadTarget::Unsupported {
                reason: "a store opened with a SAS cannot sign a narrower one for Batch, and never hands its own out".to_owned(),
            }),
        }
    }
}

/// A stream's whole content, shorter than a block (or empty), as one Put Blob: the SDK's
/// single-shot upload, whatever its own partition size, with the MD5 stored as `Content-MD5`.
async fn put_whole(
    client: &azure_storage_blob::BlockBlobClient,
    key: &ObjectKey,
    content: Bytes,
) -> Result<ObjectInfo, StoreError> {
    let size = content.len() as u64;
    let options = BlockBlobClientUploadOptions {
        blob_content_md5: Some(md5_of(&content)),
        partition_size: std::num::NonZero::new(size.max(1)),
        ..Default::default()
    };
    let result = client
        .upload(content.into(), Some(options))
        .await
        .map_err(|e| map_err(key.as_str(), &e))?;
    Ok(ObjectInfo {
        key: key.clone(),
        size,
        etag: etag_of(result.etag),
    })
}

/// Waits for one staging task: its error, or its buffer back into the pool.
async fn reclaim(
    staging: &mut tokio::task::JoinSet<(azure_core::Result<()>, Bytes)>,
    pool: &mut Vec<BytesMut>,
    key: &ObjectKey,
) -> Result<(), StoreError> {
    let Some(joined) = staging.join_next().await else {
        return Ok(());
    };
    let (result, block) =
        joined.map_err(|e| StoreError::other(format!("{key}: staging task failed: {e}")))?;
    result.map_err(|e| map_err(key.as_str(), &e))?;
    // Unique again once the request is done: reuse the allocation.
    if let Ok(mut buffer) = block.try_into_mut() {
        buffer.clear();
        pool.push(buffer);
    }
    Ok(())
}

/// A failed conditional request: 409 (exists) and 412 (changed) mean someone else won; a 404
/// under `IfMatch` means the object is gone, which also fails the condition.
fn condition_err(key: &ObjectKey, condition: &Condition, e: &azure_core::Error) -> StoreError {
    match (condition, status_of(e)) {
        (Condition::IfAbsent, Some(409 | 412)) | (Condition::IfMatch(_), Some(404 | 409 | 412)) => {
            StoreError::ConditionFailed {
                key: key.to_string(),
            }
        }
        _ => map_err(key.as_str(), e),
    }
}

pub(crate) fn looks_like_blob(spec: &str) -> bool {
    let lower = spec.to_ascii_lowercase();
    lower.starts_with("http://")
        || lower.starts_with("https://")
        || lower.contains("accountname=")
        || lower.contains("usedevelopmentstorage=")
        || lower.contains("blobendpoint=")
}

/// The MD5 of a block, for the `Content-MD5` header of Put Block.
fn md5_of(block: &[u8]) -> Vec<u8> {
    use md5::{Digest, Md5};
    Md5::digest(block).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug_links_and_errors() {
        let store = BlobStore::new(
            "https://acct.blob.core.windows.net/logs?sv=2024-11-04&sig=SECRETSIG",
            BlobAuth::Anonymous,
        )
        .unwrap();
        let debug = format!("{store:?}");
        assert!(!debug.contains("SECRETSIG"), "{debug}");
        let link = store.link(&ObjectKey::new("a/b c.txt").unwrap()).unwrap();
        assert_eq!(link, "https://acct.blob.core.windows.net/logs/a/b%20c.txt");
        let store = BlobStore::new(
            "http://127.0.0.1:1/devstoreaccount1/c",
            BlobAuth::AccountKey {
                account: DEVSTORE_ACCOUNT.into(),
                key: DEVSTORE_KEY.into(),
            },
        )
        .unwrap();
        assert!(!format!("{store:?}").contains(&DEVSTORE_KEY[..20]));
        let err = BlobStore::new(
            "http://x/c",
            BlobAuth::AccountKey {
                account: "a".into(),
                key: "not base64!".into(),
            },
        )
        .unwrap_err();
        assert!(!err.to_string().contains("not base64!"), "{err}");
        assert!(BlobStore::new("http://127.0.0.1:1/", BlobAuth::Anonymous).is_err());
    }

    #[test]
    fn account_sas_shape() {
        let sas = account_sas(
            DEVSTORE_ACCOUNT,
            DEVSTORE_KEY,
            false,
            Duration::from_secs(60),
        )
        .unwrap();
        for part in [
            "sv=2024-11-04",
            "ss=b",
            "srt=sco",
            "sp=rwdlac",
            "spr=https%2Chttp",
            "sig=",
        ] {
            assert!(sas.contains(part), "{sas}");
        }
    }
}
