//! An [`ArtifactStore`] that fails chosen operations once with a transient error, so tests can
//! show what happens when the store blinks at each step of a multi-step effect, and counts the
//! requests of each kind, so tests can show what an operation costs.

use std::sync::{Arc, Mutex};

use artifact_store::{
    ArtifactStore, ByteStream, Condition, ETag, ListCursor, ListPage, ObjectInfo, ObjectKey,
    StoreError, Versioned,
};
use bytes::Bytes;

/// A store operation, as [`FlakyStore::fail_once`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// [`ArtifactStore::get`].
    Get,
    /// [`ArtifactStore::head`].
    Head,
    /// [`ArtifactStore::put`] and [`ArtifactStore::put_stream`].
    Put,
    /// [`ArtifactStore::list_page`] (one a page; [`ArtifactStore::list`] reads by pages).
    List,
    /// [`ArtifactStore::delete`].
    Delete,
}

/// Wraps a store; each armed (operation, key prefix) fails the next matching call once with
/// [`StoreError::Transient`], then the call after it goes through.
#[derive(Debug)]
pub struct FlakyStore {
    inner: Arc<dyn ArtifactStore>,
    armed: Mutex<Vec<(StoreOp, String)>>,
    failed: Mutex<Vec<(StoreOp, String)>>,
    requests: Mutex<Vec<(StoreOp, String)>>,
}

impl FlakyStore {
    /// `inner`, with nothing armed.
    pub fn new(inner: Arc<dyn ArtifactStore>) -> Self {
        Self {
            inner,
            armed: Mutex::new(Vec::new()),
            failed: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
        }
    }

    /// Makes the next `op` on a key starting with `prefix` fail once.
    pub fn fail_once(&self, op: StoreOp, prefix: &str) {
        lock(&self.armed).push((op, prefix.to_owned()));
    }

    /// The (operation, key) of every call failed so far, in order.
    pub fn failed(&self) -> Vec<(StoreOp, String)> {
        lock(&self.failed).clone()
    }

    /// Whether an armed failure was never triggered.
    pub fn still_armed(&self) -> bool {
        !lock(&self.armed).is_empty()
    }

    /// How many `op` requests were made so far (failed ones included).
    pub fn requests(&self, op: StoreOp) -> usize {
        lock(&self.requests)
            .iter()
            .filter(|(o, _)| *o == op)
            .count()
    }

    /// The key (for a listing, the prefix) of every `op` request on a key starting with
    /// `prefix` so far, in order.
    pub fn requested(&self, op: StoreOp, prefix: &str) -> Vec<String> {
        lock(&self.requests)
            .iter()
            .filter(|(o, key)| *o == op && key.starts_with(prefix))
            .map(|(_, key)| key.clone())
            .collect()
    }

    fn check(&self, op: StoreOp, key: &str) -> Result<(), StoreError> {
        lock(&self.requests).push((op, key.to_owned()));
        let mut armed = lock(&self.armed);
        if let Some(i) = armed
            .iter()
            .position(|(o, prefix)| *o == op && key.starts_with(prefix.as_str()))
        {
            armed.remove(i);
            lock(&self.failed).push((op, key.to_owned()));
            return Err(StoreError::Transient {
                message: format!("injected {op:?} failure on {key}"),
            });
        }
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[async_trait::async_trait]
impl ArtifactStore for FlakyStore {
    async fn get(&self, key: &ObjectKey) -> Result<Option<Versioned>, StoreError> {
        self.check(StoreOp::Get, key.as_str())?;
        self.inner.get(key).await
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectInfo>, StoreError> {
        self.check(StoreOp::Head, key.as_str())?;
        self.inner.head(key).await
    }

    async fn put(
        &self,
        key: &ObjectKey,
        body: Bytes,
        condition: Condition,
    ) -> Result<ETag, StoreError> {
        self.check(StoreOp::Put, key.as_str())?;
        self.inner.put(key, body, condition).await
    }

    async fn put_stream(
        &self,
        key: &ObjectKey,
        body: ByteStream,
    ) -> Result<ObjectInfo, StoreError> {
        self.check(StoreOp::Put, key.as_str())?;
        self.inner.put_stream(key, body).await
    }

    async fn list_page(
        &self,
        prefix: &str,
        from: Option<&ListCursor>,
        max: usize,
    ) -> Result<ListPage, StoreError> {
        self.check(StoreOp::List, prefix)?;
        self.inner.list_page(prefix, from, max).await
    }

    async fn delete(&self, key: &ObjectKey, condition: Condition) -> Result<(), StoreError> {
        self.check(StoreOp::Delete, key.as_str())?;
        self.inner.delete(key, condition).await
    }

    fn link(&self, key: &ObjectKey) -> Option<String> {
        self.inner.link(key)
    }

    fn upload_target(
        &self,
        prefix: &ObjectKey,
        lifetime: std::time::Duration,
    ) -> Result<artifact_store::UploadTarget, StoreError> {
        self.inner.upload_target(prefix, lifetime)
    }
}
