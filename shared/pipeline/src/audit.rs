//! Audit records: one object per job-action decision, taken or skipped, so a person can always
//! answer "why did (or didn't) batch-triage touch my job?", and one per subject refused because
//! its ids can never be read from Batch ([`AuditDecision::Refused`]).
//!
//! Records are written create-only to `audit/{yyyy-mm-dd}/{id}.json`, where the id starts with
//! the time, so a listing of a day is in time order.

use std::sync::Arc;

use artifact_store::{ArtifactStore, Condition, ObjectKey, StoreError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// What happened to a planned job action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditDecision {
    /// Sent to Batch and accepted.
    Applied,
    /// Sent to Batch, which said the job was already in (or past) that state.
    AlreadyInState,
    /// Dry run: everything was checked and nothing was sent to Batch.
    DryRun,
    /// Not done; `reason` says which guard stopped it.
    Skipped,
    /// Sent to Batch, which refused or failed; `outcome` says how.
    Failed,
    /// Not a job action: a subject whose ids can never be read from Batch was refused (its logs
    /// cannot be preserved); `reason` names the id and why. Written once per subject.
    Refused,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Unique id (time first, then a random suffix).
    pub id: String,
    /// When the decision was made (RFC 3339).
    pub time: String,
    /// The rule that asked for the action.
    pub rule: String,
    /// The Batch account.
    pub account: String,
    /// The job.
    pub job_id: String,
    /// `disable` or `terminate`; `node.remove` or `node.reimage` for a node action.
    pub action: String,
    /// `disableTasks` for a disable.
    pub disable_tasks: Option<String>,
    /// What happened.
    pub decision: AuditDecision,
    /// Why, in words.
    pub reason: String,
    /// Why the rule asked for the action, in full.
    pub action_reason: String,
    /// The `terminateReason` sent to Batch (or that would have been), for a terminate.
    pub terminate_reason: Option<String>,
    /// The job ETag used for `If-Match` (or that would have been used).
    pub etag: Option<String>,
    /// Batch's answer (`accepted`, a 409 code, an error), when a request was sent.
    pub outcome: Option<String>,
    /// The threshold verdict.
    pub threshold: String,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// The pool, for a node action (`action` is then `node.remove` or `node.reimage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_id: Option<String>,
    /// The node, for a node action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
}

/// Writes audit records to the store.
#[derive(Debug, Clone)]
pub struct AuditLog {
    store: Arc<dyn ArtifactStore>,
}

impl AuditLog {
    /// Audit records kept in `store` under `audit/`.
    pub fn new(store: Arc<dyn ArtifactStore>) -> Self {
        Self { store }
    }

    /// A fresh record id for `now`: `20261120T100000Z-<uuid>`.
    pub fn new_id(now: OffsetDateTime) -> String {
        let now = now.to_offset(time::UtcOffset::UTC);
        format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            uuid::Uuid::new_v4().simple()
        )
    }

    /// The object key of a record made at `now`.
    pub fn key(now: OffsetDateTime, id: &str) -> Result<ObjectKey, StoreError> {
        let now = now.to_offset(time::UtcOffset::UTC);
        ObjectKey::new(format!(
            "audit/{:04}-{:02}-{:02}/{id}.json",
            now.year(),
            u8::from(now.month()),
            now.day()
        ))
    }

    /// The RFC 3339 form of `now` used in records.
    pub fn timestamp(now: OffsetDateTime) -> String {
        now.format(&Rfc3339).unwrap_or_default()
    }

    /// Stores `record` (create-only) and returns its key.
    pub async fn write(
        &self,
        now: OffsetDateTime,
        record: &AuditRecord,
    ) -> Result<ObjectKey, StoreError> {
        let key = Self::key(now, &record.id)?;
        let body = serde_json::to_vec_pretty(record).map_err(|e| StoreError::Other {
            message: format!("cannot encode audit record: {e}"),
        })?;
        self.store
            .put(&key, Bytes::from(body), Condition::IfAbsent)
            .await?;
        tracing::info!(
            rule = %record.rule,
            // Ids as Debug: a CR, LF or ESC in one is escaped, so it cannot forge a log line.
            job_id = ?record.job_id,
            action = %record.action,
            decision = ?record.decision,
            dry_run = record.dry_run,
            "job action audited"
        );
        Ok(key)
    }

    /// Every record stored under `audit/` (all days), oldest first.
    pub async fn all(&self) -> Result<Vec<AuditRecord>, StoreError> {
        let mut records = Vec::new();
        for info in self.store.list("audit/").await? {
            if let Some(v) = self.store.get(&info.key).await?
                && let Ok(record) = serde_json::from_slice(&v.bytes)
            {
                records.push(record);
            }
        }
        Ok(records)
    }
}
