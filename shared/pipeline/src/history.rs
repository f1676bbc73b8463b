//! The failure index: one small record per failed subject, so `batch-triage report` can count
//! failures by hour, account, class and job from a key listing alone, and read only the few
//! records it shows (bounded work however many failures the store holds).
//!
//! Key: `history/{yyyy-mm-ddThh}/{account}/{class}/{digest(job)}-{digest(subject)}.json`, written
//! create-only when the pipeline has diagnosed and planned a subject: a redelivery in the same
//! hour finds it and writes nothing (the report also counts a subject once across hours).

/// The segment of a store key for an account name (shared by every key that names one).
pub use crate::account_segment;
use std::sync::Arc;

use artifact_store::{ArtifactStore, Condition, ObjectKey, StoreError};
use bytes::Bytes;
use diagnosis::Diagnosis;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::digest;

/// Where the index lives.
pub const HISTORY_PREFIX: &str = "history/";

/// One failed subject, as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureRecord {
    /// When the pipeline worked it (RFC 3339).
    pub time: String,
    /// `account/job/task`, as in the pipeline's reports.
    pub subject: String,
    /// Where its logs went (store links or key prefixes).
    pub preserved: Vec<String>,
    /// The silence that muted its alert.
    pub muted_by: Option<String>,
    /// The job action decision.
    pub action: Option<String>,
    /// The diagnosis (redacted, as stored and sent).
    pub diagnosis: Diagnosis,
}

/// The hour segment of a key: `2026-12-05T03`.
pub fn hour_segment(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour()
    )
}

/// Writes the record of a failed subject (create-only; an existing one is left alone).
pub async fn record_failure(
    store: &Arc<dyn ArtifactStore>,
    record: &FailureRecord,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let d = &record.diagnosis;
    let account = account_segment(d.subject.account.as_deref().unwrap_or_default());
    let job = d.subject.job_id.as_deref().unwrap_or_default();
    let key = ObjectKey::new(format!(
        "{HISTORY_PREFIX}{}/{account}/{}/{}-{}.json",
        hour_segment(now),
        d.class.as_str(),
        &digest(job)[..16],
        &digest(&record.subject)[..16],
    ))?;
    let body = serde_json::to_vec(record).unwrap_or_default();
    match store
        .put(&key, Bytes::from(body), Condition::IfAbsent)
        .await
    {
        Ok(_) | Err(StoreError::ConditionFailed { .. }) => Ok(()),
        Err(error) => Err(error),
    }
}

/// A key of the index, read back: its parts, without reading the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryKey {
    /// `2026-12-05T03`.
    pub hour: String,
    /// The account segment.
    pub account: String,
    /// The class name.
    pub class: String,
    /// The digest of the job id.
    pub job: String,
    /// The digest of the subject.
    pub subject: String,
}

impl HistoryKey {
    /// Reads a key written by [`record_failure`]; `None` for anything else.
    pub fn parse(key: &str) -> Option<Self> {
        let rest = key.strip_prefix(HISTORY_PREFIX)?;
        let mut parts = rest.split('/');
        let hour = parts.next()?;
        let account = parts.next()?;
        let class = parts.next()?;
        let name = parts.next()?.strip_suffix(".json")?;
        if parts.next().is_some() {
            return None;
        }
        let (job, subject) = name.split_once('-')?;
        Some(Self {
            hour: hour.to_owned(),
            account: account.to_owned(),
            class: class.to_owned(),
            job: job.to_owned(),
            subject: subject.to_owned(),
        })
    }
}

/// RFC 3339, or empty for a time that cannot be written.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn keys_read_back() {
        assert_eq!(
            hour_segment(datetime!(2026-12-05 03:59:59 UTC)),
            "2026-12-05T03"
        );
        let key = HistoryKey::parse(
            "history/2026-12-05T03/devbatch1/task.exit_code/0123456789abcdef-fedcba9876543210.json",
        )
        .unwrap();
        assert_eq!(key.class, "task.exit_code");
        assert_eq!(key.account, "devbatch1");
        assert!(HistoryKey::parse("history/x/y.json").is_none());
        assert!(HistoryKey::parse("groups/x.json").is_none());
        assert_eq!(account_segment("DevBatch1"), "devbatch1");
        let hostile = account_segment("Acct/../x");
        assert!(
            hostile.len() == 32 && hostile.bytes().all(|b| b.is_ascii_hexdigit()),
            "{hostile}"
        );
    }
}
