#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod api;
mod client;
mod config;
mod download;
mod error;
mod operations;
mod pool_operations;
mod request;
pub mod shared_key;
mod token;

pub use api::{
    ActionOutcome, BatchApi, DownloadOptions, FileDownload, FileInfo, FileListOptions, FileRef,
    GetOptions, ListOptions, NODES_IN_TROUBLE_FILTER, NODES_IN_TROUBLE_SELECT, NodeDeallocation,
    PageStream, RemoveNodesOptions, TerminateJobOptions, UploadLogsOptions, UploadLogsResult,
    items,
};
pub use client::{BatchClient, MAX_ID_BYTES, id_problem};
pub use config::{BATCH_SCOPE, BatchAuth, BatchConfig, DEFAULT_API_VERSION, EntraAuth};
pub use error::{BatchError, ConfigError, ErrorInfo};
/// Re-exported from `batch-triage-foundation`, so callers name them from here as before.
pub use foundation::{Deadline, RetryPolicy, Secret};
/// The URL type of [`BatchApi::check_url`], so an implementation of the trait can name it
/// without depending on `url` itself.
pub use url::Url;
