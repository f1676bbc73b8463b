//! A local Azure Batch REST emulator with failure scenarios, for tests and the demo.
//!
//! It answers the subset of the Batch data plane batch-triage uses (jobs, tasks, task counts,
//! prep/release status, task and node files, job terminate/disable/enable, task terminate,
//! pools, nodes, pool node counts, Remove Nodes, Reimage Node, `uploadbatchservicelogs`)
//! with bodies shaped like the REST spec examples, verifies Shared Key signatures like the
//! service, and injects the failures real accounts produce (throttling, busy servers, dropped
//! downloads, vanished nodes, expired retention). The official Python SDK (`azure-batch`
//! 15.1.0) works against it; `tests/sdk_check.py` proves it.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use batch_emulator::{Emulator, Scenario, bind_local, serve};
//!
//! let emulator = Emulator::new(Scenario::builtin()).expect("the built-in scenario is valid");
//! let listener = bind_local(0).await?;
//! println!("Batch emulator on http://{}", listener.local_addr()?);
//! serve(listener, emulator, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
//!
//! Clients sign with the account [`WELL_KNOWN_ACCOUNT_NAME`] / [`WELL_KNOWN_ACCOUNT_KEY`]
//! unless the scenario names another, and use the emulator's `http://127.0.0.1:<port>` as the
//! Batch endpoint.
//!
//! # Layout
//! - [`scenario`]: the scenario file format ([`Scenario`]), parsing and checks.
//! - `state`: the live account built from a scenario; job/task state machines.
//! - `server` (re-exported [`router`], [`serve`]): the per-request pipeline: api-version,
//!   auth, faults, routing; `route` maps paths to operations.
//! - `api`, `file_api`, `pool_api`, `agent_logs`: the operations; `render`, `paging`, `filter`, `select`: response
//!   bodies, `odata.nextLink`, OData `$filter` and `$select`.
//! - `auth`: Shared Key verification (docs/batch-facts.md) and bearer tokens.
//! - `files`: node file systems, generated content, byte ranges.
//! - [`faults`]: fault rules; `admin`: the `/_emulator/` HTTP admin API.
//! - `emulator` ([`Emulator`]): the shared handle tests use in-process; `log`
//!   ([`RequestRecord`]): the request log.
//!
//! # Scenario file
//! JSON; every field is optional. Times anywhere in job/task/status JSON and file properties
//! may be relative to the emulator's start: `"now"`, `"now-5m"`, `"now-2h30m"`, `"now+1d"`
//! (units `ms s m h d`), so sweeps always find recent failures. `scenarios/builtin.json` (the
//! built-in scenario) is the full example; in brief:
//!
//! ```json
//! {
//!   "description": "what this scenario shows",
//!   "account": {"name": "devbatch1", "key": "<base64>"},
//!   "auth": {"required": true, "sharedKey": true, "bearerTokens": ["dev-token"]},
//!   "transitions": {"afterReads": 1, "afterMillis": 2000},
//!   "baseUrl": "http://127.0.0.1:8080",
//!   "pools": [{"id": "linux", "pool": {"vmSize": "standard_d2s_v3"}, "nodes": [
//!     {"id": "tvm-01", "state": "available", "files": {"startup/stdout.txt": "ok"}},
//!     {"id": "tvm-02", "node": {"state": "unusable",
//!       "errors": [{"code": "DiskFull", "message": "…", "errorDetails": []}]}}]}],
//!   "agentLogs": {"delayMillis": 200},
//!   "jobs": [{
//!     "job": {"id": "etl", "poolInfo": {"poolId": "linux"}, "creationTime": "now-3h"},
//!     "tasks": [{
//!       "task": {"id": "oom", "state": "completed", "commandLine": "python train.py",
//!                "nodeInfo": {"poolId": "linux", "nodeId": "tvm-01"},
//!                "executionInfo": {"startTime": "now-40m", "endTime": "now-10m", "exitCode": 137,
//!                  "result": "failure", "retryCount": 0, "requeueCount": 0,
//!                  "failureInfo": {"category": "usererror", "code": "FailureExitCode"}}},
//!       "files": {"stdout.txt": "epoch 1\n",
//!                 "stderr.txt": {"text": "Killed\n", "lastModified": "now-10m"},
//!                 "wd/big.log": {"generate": {"bytes": 2147483648, "seed": 7, "tail": "Killed\n"}}},
//!       "filesState": "available"
//!     }],
//!     "generateTasks": [{"count": 12000, "idPrefix": "bulk-", "failEvery": 100,
//!                        "task": {"state": "completed", "executionInfo": {"exitCode": 0, "result": "success"}}}],
//!     "preparationAndReleaseStatus": [{
//!       "status": {"poolId": "linux", "nodeId": "tvm-01",
//!                  "jobPreparationTaskExecutionInfo": {"state": "completed", "exitCode": 1, "result": "failure"}},
//!       "preparationFiles": {"stderr.txt": "E: Unable to locate package\n"},
//!       "releaseFiles": {}
//!     }]
//!   }],
//!   "faults": [{"pathPrefix": "/jobs", "times": 2, "fault": {"kind": "throttle", "retryAfterSeconds": 1}}]
//! }
//! ```
//!
//! - `job` / `task` / `status` are the wire JSON (copy shapes from the REST examples). Filled
//!   in when absent: `eTag`, `lastModified`, `creationTime`, `state` (`active`),
//!   `stateTransitionTime`, job `executionInfo.startTime`/`poolId`, `constraints`, task
//!   `executionInfo.retryCount`/`requeueCount`, `nodeInfo.taskRootDirectory`
//!   (`workitems/{job}/job-1/{task}`), prep/release `taskRootDirectory`
//!   (`workitems/{job}/job-1/jobpreparation`, `…/jobrelease`); `url`, `nodeUrl` and
//!   `taskRootDirectoryUrl` always point at the emulator.
//! - Files: a string is the file's text; an object has one of `text`, `base64`,
//!   `generate: {bytes, seed, tail}` (deterministic log-like lines, streamed, any size) plus
//!   optional `creationTime`, `lastModified`, `contentType`, `fileMode`. Task files live on the
//!   task's node under its `taskRootDirectory` (the node file API sees them too); prep/release
//!   files under theirs. `filesState`: `available`, `expired` (409 `TaskFilesUnavailable`),
//!   `cleanedUp` (409 `TaskFilesCleanedup`). Node `state`: `available`, `notReady`
//!   (409 `NodeNotReady`), `removed` (404 `NodeNotFound`).
//! - Task counts are derived from the tasks. A job with neither `jobPreparationTask` nor
//!   `jobReleaseTask` answers the prep/release status with 409 `JobPreparationTaskNotSpecified`.
//! - `pool` / `node` are the wire JSON of a pool and a node (`state`, `allocationState`,
//!   `resizeErrors`, `autoScaleRun`, node `errors`, `startTask`, `startTaskInfo`, `isDedicated`, …).
//!   Filled in when absent: pool `eTag`, `lastModified`, times, `state` (`active`),
//!   `allocationState` (`steady`), `vmSize`, a VM configuration, and the node counts (current from
//!   the live nodes, target equal to current); node `state` (`idle`, or `leavingpool` for a
//!   `notReady` node), times (no `lastBootTime` on an `unusable` node), `ipAddress`, `affinityId`,
//!   `vmSize` and `startTask` from the pool, a succeeded `startTaskInfo` when a start task ran, and
//!   `nodeAgentInfo`. Remove Nodes makes nodes `leavingpool` and the pool `resizing`; Reimage Node
//!   makes a node `reimaging`, then `idle` with no errors and an empty disk. Both complete like job
//!   transitions (below), on reads of the pool or node, and are recorded
//!   ([`Emulator::node_actions`]).
//! - `generateNodes` (per pool): `{"count": 5000, "idPrefix": "tvm-", "node": {…},
//!   "unusableEvery": 250}` adds `count` copies of `node`, every n-th one `unusable` with
//!   `DiskFull`, for sweeps over many nodes.
//! - `agentLogs.delayMillis`: how long after `uploadbatchservicelogs` answers its files arrive
//!   (default 200 ms; [`Emulator::set_agent_log_delay`]). The container URL is a SAS URL (Blob or
//!   Azurite), or, an emulator-only extension, a `file://` directory URL. Uploads are recorded
//!   without the SAS query ([`Emulator::agent_log_uploads`]).
//! - `transitions`: terminate → `terminating` → `completed` (with `executionInfo.endTime` and
//!   `terminateReason`), disable → `disabling` → `disabled`, enable → `enabling` → `active`.
//!   The intermediate state is seen by `afterReads` reads of the job (default 1), or until
//!   `afterMillis` passed; [`Emulator::settle`] completes all at once.
//! - `faults`: see [`FaultRule`].
//!
//! # Built-in scenario
//! [`Scenario::builtin`] (used when no file is given) holds one job or task per failure class
//! of docs/failure-classes.md; `scenarios/builtin.json` lists them with a `description` on each.

mod admin;
mod agent_logs;
mod api;
mod auth;
mod clock;
mod emulator;
mod error;
pub mod faults;
mod file_api;
mod files;
mod filter;
mod log;
mod paging;
mod pool_api;
mod render;
mod route;
pub mod scenario;
mod select;
mod server;
mod state;

pub use emulator::Emulator;
pub use faults::{Fault, FaultRule, FaultStatus};
pub use log::RequestRecord;
pub use scenario::{
    AgentLogsConfig, NodeGenerator, NodeState, Scenario, ScenarioError, WELL_KNOWN_ACCOUNT_KEY,
    WELL_KNOWN_ACCOUNT_NAME,
};
pub use server::{router, serve};
pub use state::{AgentLogUpload, NodeAction, NodeActionKind};

/// The address the emulator binds to by default: loopback only, because the admin API under
/// `/_emulator/` is not authenticated.
pub const DEFAULT_HOST: &str = "127.0.0.1";

/// The built-in scenario's JSON (also the example scenario file).
pub(crate) const BUILTIN_SCENARIO_JSON: &str = include_str!("../scenarios/builtin.json");

/// Binds a listener on `127.0.0.1:port` (0 picks a free port).
pub async fn bind_local(port: u16) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind((DEFAULT_HOST, port)).await
}
