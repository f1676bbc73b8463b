//! The Azure Blob Storage backend (in progress).

use crate::StoreError;

/// How the blob backend authenticates.
#[derive(Clone)]
pub enum BlobAuth {}

/// Objects as block blobs in one container.
#[derive(Debug)]
pub struct BlobStore {}

impl BlobStore {
    /// A store from a container URL or connection string.
    pub fn from_spec(_spec: &str) -> Result<Self, StoreError> {
        Err(StoreError::other("the Azure Blob backend is not built yet"))
    }
}

pub(crate) fn looks_like_blob(spec: &str) -> bool {
    spec.starts_with("http://")
        || spec.starts_with("https://")
        || spec.contains("AccountName=")
        || spec.contains("UseDevelopmentStorage=")
}
