//! The request log tests assert on: what was asked, what was answered, which fault fired.
//!
//! Credentials never enter the log: only the scheme of the `Authorization` header is kept.

use std::collections::VecDeque;

use serde::Serialize;

/// How many records are kept; older ones are dropped first.
const MAX_RECORDS: usize = 100_000;

/// One Batch API request as the emulator saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Path and query exactly as sent.
    pub path_and_query: String,
    /// Status of the response (for a dropped download, the status that was sent before the drop).
    pub status: u16,
    /// The `request-id` the emulator answered with.
    pub request_id: String,
    /// `client-request-id` header, if sent.
    pub client_request_id: Option<String>,
    /// `ocp-range` header, if sent.
    pub ocp_range: Option<String>,
    /// `Range` header, if sent.
    pub range: Option<String>,
    /// `If-Match` header, if sent.
    pub if_match: Option<String>,
    /// `If-None-Match` header, if sent.
    pub if_none_match: Option<String>,
    /// Auth scheme that was accepted (`SharedKey`, `Bearer`, `none`), absent when auth failed or
    /// was not reached.
    pub auth_scheme: Option<String>,
    /// Name of the fault that fired (`throttle`, `dropConnection`, …), if any.
    pub fault: Option<String>,
}

/// Bounded in-memory log.
#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    records: VecDeque<RequestRecord>,
}

impl RequestLog {
    /// Appends a record, dropping the oldest beyond the limit.
    pub(crate) fn push(&mut self, record: RequestRecord) {
        if self.records.len() == MAX_RECORDS {
            self.records.pop_front();
        }
        self.records.push_back(record);
    }

    /// All records, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<RequestRecord> {
        self.records.iter().cloned().collect()
    }

    /// Forgets everything.
    pub(crate) fn clear(&mut self) {
        self.records.clear();
    }
}
