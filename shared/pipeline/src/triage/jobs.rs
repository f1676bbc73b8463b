//! The jobs one payload or sweep page reads, read once and shared by its subjects.

use std::collections::HashMap;
use std::sync::Arc;

use batch_client::{BatchApi, BatchError, Deadline, GetOptions};
use diagnosis::wire::BatchJob;

/// Jobs read once per payload: many tasks of one job need its `onTaskFailure` and prep task.
/// Subjects are processed concurrently, so the cache is shared: the first subject to need a job
/// reads it while the others needing the same job wait for that one read.
#[derive(Default)]
pub(crate) struct JobCache {
    slots: std::sync::Mutex<HashMap<String, Arc<JobSlot>>>,
}

/// One job's entry: `None` until read; `Some(None)` when the job does not exist.
type JobSlot = futures::lock::Mutex<Option<Option<BatchJob>>>;

impl JobCache {
    /// Holds a job already read (a sweep's job listing), so its subjects do not read it again.
    pub(crate) fn insert(&self, job_id: &str, job: BatchJob) {
        let slot = Arc::new(futures::lock::Mutex::new(Some(Some(job))));
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(job_id.to_owned(), slot);
    }

    pub(crate) async fn get(
        &self,
        batch: &dyn BatchApi,
        job_id: &str,
        deadline: Deadline,
    ) -> Result<Option<BatchJob>, BatchError> {
        let slot = {
            // A poisoned lock only means another subject panicked mid-insert; the map is still
            // consistent (insert is one step), so carry on with it.
            let mut slots = self
                .slots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            slots.entry(job_id.to_owned()).or_default().clone()
        };
        let mut slot = slot.lock().await;
        if let Some(job) = slot.as_ref() {
            return Ok(job.clone());
        }
        let job = match batch
            .get_job(job_id, &GetOptions::default(), deadline)
            .await
        {
            Ok(job) => Some(job),
            Err(error) if error.is_not_found() => None,
            // Not cached: the next subject of this job tries again.
            Err(error) => return Err(error),
        };
        *slot = Some(job.clone());
        Ok(job)
    }
}
