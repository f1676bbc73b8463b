//! The node agent's logs, kept: Batch uploads them on request (`uploadbatchservicelogs`), and
//! they are lost with the node, so an unusable node's are asked for before anyone removes it.
//!
//! One folder per node and incident, `{account}/_pools/{poolId}/{nodeId}/_agentlogs/{incident}/`,
//! holds `manifest.json`, a small state machine advanced by compare-and-swap:
//!
//! ```text
//! requested ──call ok──▶ uploading ──files arrived──▶ complete
//!     │                      └──────too late────────▶ incomplete
//!     ├──node or pool gone (404)──▶ node_gone
//!     └──refused (4xx), or transient failures past the limit──▶ unavailable
//! ```
//!
//! The first write is create-only, so one instance claims the incident; each further call to
//! Batch is made only by the instance whose compare-and-swap of the attempt count won, so two
//! sweeps never both ask. The upload is asynchronous: the files are looked for on the same
//! invocation for a short while, then on later ones, until they are all there or it is too late.
//! The last four states are final; a node action waits for one of them
//! ([`AgentLogsManifest::settled`]).
//!
//! Where the files land depends on the store ([`UploadTarget`]): on Blob Storage Batch writes
//! them under its `virtualDirectoryName` in the store's container and the manifest lists their
//! keys; on a local store they arrive in a staging directory and are copied into `files/` here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use artifact_store::{ArtifactStore, Condition, ETag, ObjectKey, StoreError, UploadTarget};
use async_trait::async_trait;
use batch_client::{BatchError, Deadline, Secret};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{PreserveError, names};

/// What is sent to Batch's Upload Batch Service Logs (its REST shape is in
/// `docs/batch-facts.md`).
#[derive(Debug, Clone)]
pub struct UploadLogsRequest {
    /// `containerUrl`: with a write-only SAS, or bare when `identity_resource_id` is set, or a
    /// `file://` directory (the emulator only).
    pub container_url: Secret,
    /// `startTime`: files with a message from then on are uploaded, whole.
    pub start_time: OffsetDateTime,
    /// `identityReference.resourceId`: the user-assigned identity Batch writes as.
    pub identity_resource_id: Option<String>,
}

/// Batch's answer: where the files go and how many there will be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadLogsAnswer {
    /// `virtualDirectoryName`, under the container.
    pub virtual_directory_name: String,
    /// `numberOfFilesUploaded`: the files that *will* be uploaded.
    pub number_of_files_uploaded: u64,
}

/// The one Batch operation this module needs, so it can be driven by any client.
#[async_trait]
pub trait UploadAgentLogs: Send + Sync {
    /// `POST /pools/{poolId}/nodes/{nodeId}/uploadbatchservicelogs`.
    async fn upload_agent_logs(
        &self,
        pool_id: &str,
        node_id: &str,
        request: &UploadLogsRequest,
        deadline: Deadline,
    ) -> Result<UploadLogsAnswer, BatchError>;
}

/// Where a manifest is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentLogsStatus {
    /// Claimed; Batch has not answered yet (or failed transiently).
    Requested,
    /// Batch answered; the files are on their way.
    Uploading,
    /// Every file announced has arrived.
    Complete,
    /// Too late: the files announced did not all arrive in time; those that did are listed.
    Incomplete,
    /// The node (or its pool) no longer exists.
    NodeGone,
    /// Batch refused, or kept failing; `reason` says why.
    Unavailable,
}

impl AgentLogsStatus {
    /// `requested`, `uploading`, … as in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Uploading => "uploading",
            Self::Complete => "complete",
            Self::Incomplete => "incomplete",
            Self::NodeGone => "node_gone",
            Self::Unavailable => "unavailable",
        }
    }
}

/// One agent log file kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentLogFile {
    /// Its path under the virtual directory, as Batch named it.
    pub name: String,
    /// Its key in the store.
    pub key: String,
    /// Its size.
    pub bytes: u64,
}

/// `_agentlogs/{incident}/manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentLogsManifest {
    /// Format version.
    pub version: u32,
    /// Always `agentlogs`.
    pub kind: String,
    /// The Batch account.
    pub account: String,
    /// The pool.
    pub pool_id: String,
    /// The node.
    pub node_id: String,
    /// The incident (see [`AgentLogsSubject::incident`]).
    pub incident: String,
    /// Where it is in its life.
    pub status: AgentLogsStatus,
    /// How Batch was given the way in: `sas`, `identity` or `directory`.
    pub via: String,
    /// The `startTime` asked for (RFC 3339).
    pub start_time: String,
    /// When the incident was claimed (RFC 3339).
    pub requested_at: String,
    /// Calls made to Batch so far.
    pub attempts: u32,
    /// When the call now being made was claimed (RFC 3339); other instances leave it alone
    /// until [`ATTEMPT_LEASE`] has passed (a crash mid-call), then try again.
    #[serde(default)]
    pub attempt_started_at: Option<String>,
    /// Batch's `virtualDirectoryName`.
    #[serde(default)]
    pub virtual_directory_name: Option<String>,
    /// Batch's `numberOfFilesUploaded`.
    #[serde(default)]
    pub number_of_files_uploaded: Option<u64>,
    /// When the status became final (RFC 3339).
    #[serde(default)]
    pub completed_at: Option<String>,
    /// The files kept.
    #[serde(default)]
    pub files: Vec<AgentLogFile>,
    /// Why the logs are not there (`node_gone`, `unavailable`, `incomplete`): a Batch code or
    /// our own words, never a secret.
    #[serde(default)]
    pub reason: Option<String>,
}

impl AgentLogsManifest {
    /// Whether the status is final: the logs are kept, or known to be unobtainable. A node
    /// action waits for this.
    pub fn settled(&self) -> bool {
        !matches!(
            self.status,
            AgentLogsStatus::Requested | AgentLogsStatus::Uploading
        )
    }
}

/// Which node, and which incident on it.
#[derive(Debug, Clone, Copy)]
pub struct AgentLogsSubject<'a> {
    /// The Batch account.
    pub account: &'a str,
    /// The pool.
    pub pool_id: &'a str,
    /// The node.
    pub node_id: &'a str,
    /// What makes this incident distinct from a later one on the same node: the time the node
    /// entered its state (`stateTransitionTime`), or the failed task's attempt. One upload per
    /// node and incident.
    pub incident: &'a str,
    /// `startTime` of the upload: a little before the incident began.
    pub start_time: OffsetDateTime,
}

/// How long a claimed call to Batch is left to the instance making it.
pub const ATTEMPT_LEASE: Duration = Duration::from_secs(5 * 60);

fn in_flight(manifest: &AgentLogsManifest) -> bool {
    manifest
        .attempt_started_at
        .as_deref()
        .and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok())
        .is_some_and(|at| OffsetDateTime::now_utc() - at < ATTEMPT_LEASE)
}

/// Knobs, with defaults that suit a sweep.
#[derive(Debug, Clone)]
pub struct AgentLogsOptions {
    /// The user-assigned identity (resource id) Batch writes as, when the store has no key to
    /// sign a SAS with (Entra ID / managed identity).
    pub identity_resource_id: Option<String>,
    /// The SAS lifetime, and how long the files are waited for before the manifest says
    /// `incomplete`.
    pub upload_window: Duration,
    /// How long one invocation waits for the files after Batch answered (bounded by the
    /// deadline).
    pub wait_for_files: Duration,
    /// How often it looks while waiting, at most (it starts at a tenth of this and doubles).
    pub poll_every: Duration,
    /// Calls that failed transiently before the manifest says `unavailable`.
    pub max_attempts: u32,
    /// Files larger than this are not copied from a staging directory (local store).
    pub max_file_bytes: u64,
}

impl Default for AgentLogsOptions {
    fn default() -> Self {
        Self {
            identity_resource_id: None,
            upload_window: Duration::from_secs(3600),
            wait_for_files: Duration::from_secs(10),
            poll_every: Duration::from_millis(500),
            max_attempts: 3,
            max_file_bytes: 256 * 1024 * 1024,
        }
    }
}

/// `{account}/_pools/{poolId}/{nodeId}/_agentlogs/{incident}`, sanitised.
pub fn agent_logs_prefix(subject: &AgentLogsSubject<'_>) -> Result<ObjectKey, StoreError> {
    ObjectKey::new(format!(
        "{}/_pools/{}/{}/_agentlogs/{}",
        names::segment(subject.account),
        names::segment(subject.pool_id),
        names::segment(subject.node_id),
        names::segment(subject.incident)
    ))
}

/// The key of the manifest of `subject`'s folder.
pub fn agent_logs_manifest_key(subject: &AgentLogsSubject<'_>) -> Result<ObjectKey, StoreError> {
    agent_logs_prefix(subject)?.join("manifest.json")
}

/// Reads the manifest of `subject`'s folder, if there is one.
pub async fn read_agent_logs_manifest(
    store: &dyn ArtifactStore,
    subject: &AgentLogsSubject<'_>,
) -> Result<Option<AgentLogsManifest>, PreserveError> {
    Ok(read(store, &agent_logs_manifest_key(subject)?)
        .await?
        .map(|(m, _)| m))
}

/// Asks Batch for the node agent's logs of `subject` once per incident and keeps them, or
/// moves an earlier request on (see the module docs). Returns the manifest as it now is.
pub async fn keep_agent_logs(
    api: &dyn UploadAgentLogs,
    store: &dyn ArtifactStore,
    subject: &AgentLogsSubject<'_>,
    options: &AgentLogsOptions,
    deadline: Deadline,
) -> Result<AgentLogsManifest, PreserveError> {
    let prefix = agent_logs_prefix(subject)?;
    let key = prefix.join("manifest.json")?;
    let target = store.upload_target(&prefix, options.upload_window)?;
    let (mut manifest, mut etag) = match read(store, &key).await? {
        Some(found) => found,
        None => claim(store, &key, subject, &target).await?,
    };
    if manifest.status == AgentLogsStatus::Requested {
        (manifest, etag) = request(api, store, &key, subject, &target, options, deadline).await?;
    }
    let waited_since = std::time::Instant::now();
    // Small uploads arrive in well under a second: look soon, then less and less often.
    let mut pause = options.poll_every / 10;
    while manifest.status == AgentLogsStatus::Uploading {
        match look_for_files(
            store,
            &key,
            &etag,
            &prefix,
            &target,
            manifest.clone(),
            options,
        )
        .await?
        {
            Some((next, next_etag)) => (manifest, etag) = (next, next_etag),
            None => {
                // Someone else moved it on; take theirs.
                match read(store, &key).await? {
                    Some((next, next_etag)) => (manifest, etag) = (next, next_etag),
                    None => break,
                }
            }
        }
        let waited = waited_since.elapsed();
        if manifest.status != AgentLogsStatus::Uploading
            || waited + pause > options.wait_for_files
            || deadline.remaining() < options.poll_every * 4
        {
            break;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(options.poll_every);
    }
    Ok(manifest)
}

async fn read(
    store: &dyn ArtifactStore,
    key: &ObjectKey,
) -> Result<Option<(AgentLogsManifest, ETag)>, PreserveError> {
    match store.get(key).await? {
        None => Ok(None),
        Some(v) => Ok(Some((serde_json::from_slice(&v.bytes)?, v.etag))),
    }
}

fn now_text() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn via(target: &UploadTarget) -> &'static str {
    match target {
        UploadTarget::ContainerSas { .. } => "sas",
        UploadTarget::Identity { .. } => "identity",
        UploadTarget::Directory { .. } => "directory",
        UploadTarget::Unsupported { .. } => "none",
    }
}

/// Creates the manifest (create-only): this instance claims the incident, or reads the claim
/// of the one that was first.
async fn claim(
    store: &dyn ArtifactStore,
    key: &ObjectKey,
    subject: &AgentLogsSubject<'_>,
    target: &UploadTarget,
) -> Result<(AgentLogsManifest, ETag), PreserveError> {
    let manifest = AgentLogsManifest {
        version: 1,
        kind: "agentlogs".to_owned(),
        account: subject.account.to_owned(),
        pool_id: subject.pool_id.to_owned(),
        node_id: subject.node_id.to_owned(),
        incident: subject.incident.to_owned(),
        status: AgentLogsStatus::Requested,
        via: via(target).to_owned(),
        start_time: subject.start_time.format(&Rfc3339).unwrap_or_default(),
        requested_at: now_text(),
        attempts: 0,
        attempt_started_at: None,
        virtual_directory_name: None,
        number_of_files_uploaded: None,
        completed_at: None,
        files: Vec::new(),
        reason: None,
    };
    let body = Bytes::from(serde_json::to_vec_pretty(&manifest)?);
    match store.put(key, body, Condition::IfAbsent).await {
        Ok(etag) => Ok((manifest, etag)),
        Err(StoreError::ConditionFailed { .. }) => read(store, key).await?.ok_or_else(|| {
            PreserveError::Store(StoreError::NotFound {
                key: key.to_string(),
            })
        }),
        Err(e) => Err(e.into()),
    }
}

/// Writes `manifest` over the version `etag`; `None` when someone else wrote first.
async fn swap(
    store: &dyn ArtifactStore,
    key: &ObjectKey,
    etag: &ETag,
    manifest: &AgentLogsManifest,
) -> Result<Option<ETag>, PreserveError> {
    let body = Bytes::from(serde_json::to_vec_pretty(manifest)?);
    match store.put(key, body, Condition::IfMatch(etag.clone())).await {
        Ok(etag) => Ok(Some(etag)),
        Err(StoreError::ConditionFailed { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn settle(manifest: &mut AgentLogsManifest, status: AgentLogsStatus, reason: Option<String>) {
    manifest.status = status;
    manifest.reason = reason;
    manifest.completed_at = Some(now_text());
}

/// One call to Batch, made only by the instance whose attempt count won the swap.
async fn request(
    api: &dyn UploadAgentLogs,
    store: &dyn ArtifactStore,
    key: &ObjectKey,
    subject: &AgentLogsSubject<'_>,
    target: &UploadTarget,
    options: &AgentLogsOptions,
    deadline: Deadline,
) -> Result<(AgentLogsManifest, ETag), PreserveError> {
    let (mut manifest, etag) = read(store, key).await?.ok_or_else(|| {
        PreserveError::Store(StoreError::NotFound {
            key: key.to_string(),
        })
    })?;
    if manifest.status != AgentLogsStatus::Requested || in_flight(&manifest) {
        return Ok((manifest, etag));
    }
    let (container_url, identity) = match target {
        UploadTarget::ContainerSas { url } => (url.clone(), None),
        UploadTarget::Identity { container_url } => match &options.identity_resource_id {
            Some(identity) => (Secret::new(container_url.clone()), Some(identity.clone())),
            None => {
                settle(
                    &mut manifest,
                    AgentLogsStatus::Unavailable,
                    Some("the store signs in with Entra ID and no identity for Batch to upload as is configured".to_owned()),
                );
                return finish(store, key, &etag, manifest).await;
            }
        },
        UploadTarget::Directory { url, .. } => (Secret::new(url.clone()), None),
        UploadTarget::Unsupported { reason } => {
            settle(
                &mut manifest,
                AgentLogsStatus::Unavailable,
                Some(reason.clone()),
            );
            return finish(store, key, &etag, manifest).await;
        }
    };
    manifest.attempts += 1;
    manifest.attempt_started_at = Some(now_text());
    let Some(etag) = swap(store, key, &etag, &manifest).await? else {
        // Another instance is making this attempt.
        return read(store, key).await?.ok_or_else(|| {
            PreserveError::Store(StoreError::NotFound {
                key: key.to_string(),
            })
        });
    };
    let request = UploadLogsRequest {
        container_url,
        start_time: subject.start_time,
        identity_resource_id: identity,
    };
    match api
        .upload_agent_logs(subject.pool_id, subject.node_id, &request, deadline)
        .await
    {
        Ok(answer) => {
            // Batch builds the directory from the pool id, the node id and a unique id
            // (`docs/batch-facts.md`); anything else could point us at keys that are not
            // agent logs at all.
            // Batch writes `_` in ids as `-` there.
            let first = answer.virtual_directory_name.split('/').next();
            let under_pool = first.is_some_and(|first| {
                first == subject.pool_id || first == subject.pool_id.replace('_', "-")
            }) && answer.virtual_directory_name.contains('/');
            if ObjectKey::new(&answer.virtual_directory_name).is_err() || !under_pool {
                settle(
                    &mut manifest,
                    AgentLogsStatus::Unavailable,
                    Some(
                        "Batch named a virtual directory that is not a safe path under the pool"
                            .to_owned(),
                    ),
                );
            } else {
                manifest.status = AgentLogsStatus::Uploading;
                manifest.virtual_directory_name = Some(answer.virtual_directory_name);
                manifest.number_of_files_uploaded = Some(answer.number_of_files_uploaded);
            }
        }
        Err(error) if error.is_not_found() => settle(
            &mut manifest,
            AgentLogsStatus::NodeGone,
            Some(error.code().unwrap_or("NotFound").to_owned()),
        ),
        Err(error) if error.is_retryable() && manifest.attempts < options.max_attempts => {
            // Left `requested` and no longer in flight: the next sweep tries again.
            manifest.attempt_started_at = None;
        }
        Err(error) => {
            let code = error.code().unwrap_or("no code").to_owned();
            let reason = if error.is_retryable() {
                format!("gave up after {} attempts: {code}", manifest.attempts)
            } else {
                code
            };
            settle(&mut manifest, AgentLogsStatus::Unavailable, Some(reason));
        }
    }
    manifest.attempt_started_at = None;
    finish(store, key, &etag, manifest).await
}

async fn finish(
    store: &dyn ArtifactStore,
    key: &ObjectKey,
    etag: &ETag,
    manifest: AgentLogsManifest,
) -> Result<(AgentLogsManifest, ETag), PreserveError> {
    match swap(store, key, etag, &manifest).await? {
        Some(etag) => Ok((manifest, etag)),
        None => read(store, key).await?.ok_or_else(|| {
            PreserveError::Store(StoreError::NotFound {
                key: key.to_string(),
            })
        }),
    }
}

/// Looks for the announced files once; completes the manifest when they are all there, or
/// says `incomplete` when the upload window is over. `None` when another instance wrote first.
async fn look_for_files(
    store: &dyn ArtifactStore,
    key: &ObjectKey,
    etag: &ETag,
    prefix: &ObjectKey,
    target: &UploadTarget,
    mut manifest: AgentLogsManifest,
    options: &AgentLogsOptions,
) -> Result<Option<(AgentLogsManifest, ETag)>, PreserveError> {
    let vdir = manifest.virtual_directory_name.clone().unwrap_or_default();
    let wanted = manifest.number_of_files_uploaded.unwrap_or(0);
    let files = match target {
        UploadTarget::Directory { path, .. } => {
            copy_staged(store, prefix, &path.join(&vdir), options).await?
        }
        _ => store
            .list(&format!("{vdir}/"))
            .await?
            .into_iter()
            .map(|info| AgentLogFile {
                name: info
                    .key
                    .as_str()
                    .strip_prefix(&format!("{vdir}/"))
                    .unwrap_or(info.key.as_str())
                    .to_owned(),
                key: info.key.to_string(),
                bytes: info.size,
            })
            .collect(),
    };
    let arrived = u64::try_from(files.len()).unwrap_or(u64::MAX);
    let too_late = OffsetDateTime::parse(&manifest.requested_at, &Rfc3339).is_ok_and(|at| {
        OffsetDateTime::now_utc() - at > options.upload_window + Duration::from_secs(60)
    });
    if arrived >= wanted {
        manifest.files = files;
        settle(&mut manifest, AgentLogsStatus::Complete, None);
    } else if too_late {
        manifest.files = files;
        settle(
            &mut manifest,
            AgentLogsStatus::Incomplete,
            Some(format!("{arrived} of {wanted} files arrived in time")),
        );
    } else {
        return Ok(Some((manifest, etag.clone())));
    }
    Ok(swap(store, key, etag, &manifest)
        .await?
        .map(|etag| (manifest, etag)))
}

/// Copies the files under a local staging directory into `{prefix}/files/…` (idempotent:
/// the same names give the same keys) and lists them.
async fn copy_staged(
    store: &dyn ArtifactStore,
    prefix: &ObjectKey,
    dir: &Path,
    options: &AgentLogsOptions,
) -> Result<Vec<AgentLogFile>, PreserveError> {
    let mut found = Vec::new();
    walk(dir, dir, 0, &mut found);
    found.sort();
    let mut files = Vec::new();
    for (name, path) in found {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.len() > options.max_file_bytes {
            continue;
        }
        let key = prefix.join(&format!("files/{}", names::relative_path(&name)))?;
        let bytes = tokio::fs::read(&path).await.map_err(|e| StoreError::Io {
            key: key.to_string(),
            source: e,
        })?;
        let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        store
            .put(&key, Bytes::from(bytes), Condition::Always)
            .await?;
        files.push(AgentLogFile {
            name,
            key: key.to_string(),
            bytes: size,
        });
    }
    Ok(files)
}

/// Regular files under `dir`, at most 8 levels deep, never following links.
fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<(String, PathBuf)>) {
    if depth > 8 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if kind.is_dir() {
            walk(root, &path, depth + 1, out);
        } else if let (true, Ok(rel)) = (kind.is_file(), path.strip_prefix(root)) {
            out.push((rel.to_string_lossy().replace('\\', "/"), path));
        }
    }
}
