//! `open`: a store from the `BATCH_TRIAGE_STORE` setting.

use std::sync::Arc;

use crate::{ArtifactStore, LocalDirStore, StoreError};

/// Opens the store a setting names:
/// - a local directory (`/var/lib/batch-triage`, `./preserved`, `file:///var/lib/x`);
/// - a blob container URL (`https://acct.blob.core.windows.net/logs`, optionally with a SAS
///   query; without one the default Azure credential is used: managed identity in production);
/// - a storage connection string (`DefaultEndpointsProtocol=…;AccountName=…;AccountKey=…;
///   BlobEndpoint=…`, or `UseDevelopmentStorage=true` for Azurite) followed by `;Container=NAME`
///   (or `ContainerName=NAME`), default container `batch-triage`.
///
/// Errors never echo the key or the SAS.
pub fn open(spec: &str) -> Result<Arc<dyn ArtifactStore>, StoreError> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err(StoreError::other(
            "empty store setting: give a directory, a blob container URL or a connection string",
        ));
    }
    if crate::blob::looks_like_blob(spec) {
        return Ok(Arc::new(crate::BlobStore::from_spec(spec)?));
    }
    let path = spec.strip_prefix("file://").unwrap_or(spec);
    Ok(Arc::new(LocalDirStore::new(path)?))
}
