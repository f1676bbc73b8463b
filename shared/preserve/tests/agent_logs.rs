//! The node agent's logs kept: once per node and incident, tracked to completion, on a local
//! store and on Azurite, with every way it can end (node gone, refused, transient failures,
//! too late) recorded, never retried forever.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use artifact_store::{ArtifactStore, LocalDirStore};
use async_trait::async_trait;
use batch_client::{BatchError, Deadline, ErrorInfo};
use preserve::agent_logs::{
    AgentLogsOptions, AgentLogsStatus, AgentLogsSubject, UploadAgentLogs, UploadLogsAnswer,
    UploadLogsRequest, keep_agent_logs, read_agent_logs_manifest,
};
use time::macros::datetime;

/// What the fake Batch does when asked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Answers and writes the files at once.
    WriteNow,
    /// Answers; the files are written only when `deliver` is called.
    WriteLater,
    /// 404 NodeNotFound.
    NodeGone,
    /// 409 NodeStateUnusable: Batch cannot reach the agent.
    Refuse,
    /// 503 every time.
    Unavailable,
    /// Answers with a directory outside the pool.
    HostileDirectory,
}

/// A stand-in for Batch's upload: it writes where the request says (a `file://` directory, or
/// a container URL with a SAS) the way Batch does, under `{pool}/{node}/{guid}/`.
struct FakeBatch {
    behaviour: Behaviour,
    calls: Mutex<Vec<UploadLogsRequest>>,
    files: Vec<(&'static str, &'static str)>,
}

impl FakeBatch {
    fn new(behaviour: Behaviour) -> Self {
        Self {
            behaviour,
            calls: Mutex::new(Vec::new()),
            files: vec![
                ("agent-debug.log", "agent started\n"),
                ("logs/agent-1.log", "DiskFull on /mnt\n"),
            ],
        }
    }

    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    const VDIR: &'static str = "p1/n1-x/0795539d";

    async fn deliver(&self) {
        let url = self.calls.lock().unwrap()[0]
            .container_url
            .expose()
            .to_owned();
        for (name, body) in &self.files {
            if let Some(dir) = url.strip_prefix("file://") {
                let path = std::path::Path::new(dir).join(Self::VDIR).join(name);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, body).unwrap();
            } else {
                let (container, sas) = url.split_once('?').unwrap();
                let status = reqwest::Client::new()
                    .put(format!("{container}/{}/{name}?{sas}", Self::VDIR))
                    .header("x-ms-blob-type", "BlockBlob")
                    .body(*body)
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert_eq!(status.as_u16(), 201);
            }
        }
    }
}

fn error(code: &str) -> Box<ErrorInfo> {
    Box::new(ErrorInfo {
        code: Some(code.to_owned()),
        message: format!("{code} from the fake"),
        ..ErrorInfo::default()
    })
}

#[async_trait]
impl UploadAgentLogs for FakeBatch {
    async fn upload_agent_logs(
        &self,
        pool_id: &str,
        node_id: &str,
        request: &UploadLogsRequest,
        _deadline: Deadline,
    ) -> Result<UploadLogsAnswer, BatchError> {
        assert_eq!((pool_id, node_id), ("p1", "n1"));
        self.calls.lock().unwrap().push(request.clone());
        let answer = UploadLogsAnswer {
            virtual_directory_name: Self::VDIR.to_owned(),
            number_of_files_uploaded: 2,
        };
        match self.behaviour {
            Behaviour::WriteNow => {
                self.deliver().await;
                Ok(answer)
            }
            Behaviour::WriteLater => Ok(answer),
            Behaviour::NodeGone => Err(BatchError::NotFound(error("NodeNotFound"))),
            Behaviour::Refuse => Err(BatchError::Conflict(error("NodeStateUnusable"))),
            Behaviour::Unavailable => Err(BatchError::Transient(error("ServerBusy"))),
            Behaviour::HostileDirectory => Ok(UploadLogsAnswer {
                virtual_directory_name: "acct".to_owned(),
                number_of_files_uploaded: 1,
            }),
        }
    }
}

fn subject(incident: &str) -> AgentLogsSubject<'_> {
    AgentLogsSubject {
        account: "acct",
        pool_id: "p1",
        node_id: "n1",
        incident,
        start_time: datetime!(2026-12-05 03:00:00 UTC),
    }
}

fn options() -> AgentLogsOptions {
    AgentLogsOptions {
        wait_for_files: Duration::from_millis(200),
        poll_every: Duration::from_millis(20),
        ..AgentLogsOptions::default()
    }
}

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(30))
}

fn local() -> (tempfile::TempDir, Arc<dyn ArtifactStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ArtifactStore> = Arc::new(LocalDirStore::new(dir.path()).unwrap());
    (dir, store)
}

#[tokio::test]
async fn a_local_store_keeps_the_files_on_the_same_invocation_and_asks_once() {
    let (dir, store) = local();
    let batch = FakeBatch::new(Behaviour::WriteNow);
    let manifest = keep_agent_logs(&batch, &*store, &subject("t1"), &options(), deadline())
        .await
        .unwrap();
    assert_eq!(manifest.status, AgentLogsStatus::Complete);
    assert!(manifest.settled());
    assert_eq!(manifest.via, "directory");
    assert_eq!(
        manifest.virtual_directory_name.as_deref(),
        Some(FakeBatch::VDIR)
    );
    assert_eq!(manifest.number_of_files_uploaded, Some(2));
    assert_eq!(manifest.attempts, 1);
    assert!(manifest.completed_at.is_some());
    let names: Vec<&str> = manifest.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["agent-debug.log", "logs/agent-1.log"]);
    // The files are in the store, under the incident's folder.
    let kept = dir
        .path()
        .join("acct/_pools/p1/n1/_agentlogs/t1/files/logs/agent-1.log");
    assert_eq!(std::fs::read_to_string(kept).unwrap(), "DiskFull on /mnt\n");
    // Batch got a file:// directory and the start time.
    let request = batch.calls.lock().unwrap()[0].clone();
    assert!(request.container_url.expose().starts_with("file:///"));
    assert_eq!(request.start_time, datetime!(2026-12-05 03:00:00 UTC));
    // Again: nothing new is asked of Batch, the manifest is the same.
    let again = keep_agent_logs(&batch, &*store, &subject("t1"), &options(), deadline())
        .await
        .unwrap();
    assert_eq!(again, manifest);
    assert_eq!(batch.calls(), 1);
    // A new incident on the same node is asked for again.
    keep_agent_logs(&batch, &*store, &subject("t2"), &options(), deadline())
        .await
        .unwrap();
    assert_eq!(batch.calls(), 2);
}

#[tokio::test]
async fn files_that_arrive_later_complete_the_manifest_on_the_next_sweep() {
    let (_dir, store) = local();
    let batch = FakeBatch::new(Behaviour::WriteLater);
    let first = keep_agent_logs(&batch, &*store, &subject("t1"), &options(), deadline())
        .await
        .unwrap();
    assert_eq!(first.status, AgentLogsStatus::Uploading);
    assert!(!first.settled());
    assert!(first.files.is_empty());
    batch.deliver().await;
    let second = keep_agent_logs(&batch, &*store, &subject("t1"), &options(), deadline())
        .await
        .unwrap();
    assert_eq!(second.status, AgentLogsStatus::Complete);
    assert_eq!(second.files.len(), 2);
    assert_eq!(batch.calls(), 1, "the upload is asked for once");
    let read = read_agent_logs_manifest(&*store, &subject("t1"))
        .await
        .unwrap();
    assert_eq!(read.as_ref(), Some(&second));
}

#[tokio::test]
async fn files_that_never_arrive_end_incomplete_after_the_window() {
    let (_dir, store) = local();
    let batch = FakeBatch::new(Behaviour::WriteLater);
    let options = AgentLogsOptions {
        upload_window: Duration::ZERO,
        ..options()
    };
    let first = keep_agent_logs(&batch, &*store, &subject("t1"), &options, deadline())
        .await
        .unwrap();
    // The window (plus a minute's grace for clocks) is not over at once.
    assert_eq!(first.status, AgentLogsStatus::Uploading);
    // Pretend the request was made two hours ago.
    let key =
        artifact_store::ObjectKey::new("acct/_pools/p1/n1/_agentlogs/t1/manifest.json").unwrap();
    let mut old = first.clone();
    old.requested_at = "2000-01-01T00:00:00Z".to_owned();
    store
        .put(
            &key,
            serde_json::to_vec(&old).unwrap().into(),
            artifact_store::Condition::Always,
        )
        .await
        .unwrap();
    let late = keep_agent_logs(&batch, &*store, &subject("t1"), &options, deadline())
        .await
        .unwrap();
    assert_eq!(late.status, AgentLogsStatus::Incomplete);
    assert!(late.settled());
    assert_eq!(late.reason.as_deref(), Some("0 of 2 files arrived in time"));
    assert_eq!(batch.calls(), 1);
}

#[tokio::test]
async fn a_node_that_is_gone_is_recorded_and_not_asked_again() {
    let (_dir, store) = local();
    let batch = FakeBatch::new(Behaviour::NodeGone);
    for _ in 0..3 {
        let manifest = keep_agent_logs(&batch, &*store, &subject("t1"), &options(), deadline())
            .await
            .unwrap();
        assert_eq!(manifest.status, AgentLogsStatus::NodeGone);
        assert_eq!(manifest.reason.as_deref(), Some("NodeNotFound"));
        assert!(manifest.settled());
    }
    assert_eq!(batch.calls(), 1);
}

#[tokio::test]
async fn a_refusal_is_final_and_transient_failures_give_up_after_the_limit() {
    let (_dir, store) = local();
    let refused = FakeBatch::new(Behaviour::Refuse);
    let manifest = keep_agent_logs(&refused, &*store, &subject("t1"), &options(), deadline())
        .await
        .unwrap();
    assert_eq!(manifest.status, AgentLogsStatus::Unavailable);
    assert_eq!(manifest.reason.as_deref(), Some("NodeStateUnusable"));

    let busy = FakeBatch::new(Behaviour::Unavailable);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let manifest = keep_agent_logs(&busy, &*store, &subject("t2"), &options(), deadline())
            .await
            .unwrap();
        statuses.push(manifest.status);
        if manifest.settled() {
            assert_eq!(
                manifest.reason.as_deref(),
                Some("gave up after 3 attempts: ServerBusy")
            );
        }
    }
    assert_eq!(
        statuses,
        [
            AgentLogsStatus::Requested,
            AgentLogsStatus::Requested,
            AgentLogsStatus::Unavailable,
            AgentLogsStatus::Unavailable,
            AgentLogsStatus::Unavailable,
        ]
    );
    assert_eq!(busy.calls(), 3, "never retried forever");
}

#[tokio::test]
async fn a_directory_outside_the_pool_is_not_read() {
    let (_dir, store) = local();
    let batch = FakeBatch::new(Behaviour::HostileDirectory);
    let manifest = keep_agent_logs(&batch, &*store, &subject("t1"), &options(), deadline())
        .await
        .unwrap();
    assert_eq!(manifest.status, AgentLogsStatus::Unavailable);
    assert!(manifest.files.is_empty());
    assert!(manifest.virtual_directory_name.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_racing_on_one_incident_ask_batch_once() {
    let (_dir, store) = local();
    let batch = Arc::new(FakeBatch::new(Behaviour::WriteLater));
    let mut racers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (batch, store) = (batch.clone(), store.clone());
        racers.spawn(async move {
            keep_agent_logs(&*batch, &*store, &subject("t1"), &options(), deadline())
                .await
                .unwrap()
        });
    }
    while let Some(result) = racers.join_next().await {
        assert!(matches!(
            result.unwrap().status,
            AgentLogsStatus::Uploading | AgentLogsStatus::Requested
        ));
    }
    assert_eq!(batch.calls(), 1);
}

#[tokio::test]
async fn hostile_ids_stay_inside_the_pools_folder() {
    let (dir, store) = local();
    let batch = FakeBatch::new(Behaviour::NodeGone);
    let hostile = AgentLogsSubject {
        account: "acct",
        pool_id: "p1",
        node_id: "n1",
        incident: "../../etc",
        start_time: datetime!(2026-12-05 03:00:00 UTC),
    };
    keep_agent_logs(&batch, &*store, &hostile, &options(), deadline())
        .await
        .unwrap();
    let keys: Vec<String> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.key.to_string())
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].starts_with("acct/_pools/p1/n1/_agentlogs/"),
        "{keys:?}"
    );
    assert!(!dir.path().join("etc").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_azurite_batch_writes_with_the_sas_and_the_manifest_lists_the_blobs() {
    let azurite = artifact_store::testing::Azurite::start();
    let store: Arc<dyn ArtifactStore> = Arc::new(azurite.store("agentlogs").await);
    let batch = FakeBatch::new(Behaviour::WriteLater);
    let first = keep_agent_logs(&batch, &*store, &subject("t1"), &options(), deadline())
        .await
        .unwrap();
    assert_eq!(
        (first.status, first.via.as_str()),
        (AgentLogsStatus::Uploading, "sas")
    );
    batch.deliver().await;
    let done = keep_agent_logs(&batch, &*store, &subject("t1"), &options(), deadline())
        .await
        .unwrap();
    assert_eq!(done.status, AgentLogsStatus::Complete);
    let keys: Vec<&str> = done.files.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "p1/n1-x/0795539d/agent-debug.log",
            "p1/n1-x/0795539d/logs/agent-1.log"
        ]
    );
    // The SAS went to Batch only: the manifest never holds it.
    let raw = store
        .get(
            &artifact_store::ObjectKey::new("acct/_pools/p1/n1/_agentlogs/t1/manifest.json")
                .unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&raw.bytes);
    assert!(!text.contains("sig="), "{text}");
    let sent = batch.calls.lock().unwrap()[0]
        .container_url
        .expose()
        .to_owned();
    assert!(sent.contains("sp=cw"), "the SAS given is write-only");
}
