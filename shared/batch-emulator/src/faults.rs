//! Injected faults: which requests they hit, how often, and what goes wrong.
//!
//! A [`FaultRule`] pairs a request matcher (method, path prefix, path substring) with a budget
//! (`skip` the first matches, then fire `times` times or at a deterministic `rate`) and a
//! [`Fault`]. Rules come from the scenario file, from [`crate::Emulator::set_faults`] and from the
//! admin route `/_emulator/faults`. The first rule that fires for a request wins.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// One fault rule: "the next 3 GETs under `/jobs/etl/tasks` answer 429", "every other request
/// is slow", "the download of stdout.txt drops after 1 KiB".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultRule {
    /// HTTP method to match (case-insensitive); any method when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Path prefix to match, compared with both the raw and the percent-decoded request path
    /// (e.g. `/jobs/etl/tasks/oom/files/stdout.txt`); any path when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Substring the (raw or decoded) path must contain, e.g. `/files/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_contains: Option<String>,
    /// How many matching requests to let through untouched before the rule starts firing, so a
    /// test can fail "the second request" precisely.
    #[serde(default)]
    pub skip: u64,
    /// Fire at most this many times; unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u64>,
    /// Fire on this fraction of matching requests (0.0..=1.0), spread evenly and
    /// deterministically (rate 0.5 fires on the 2nd, 4th, … match) so tests stay exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// What happens to a request the rule fires on.
    pub fault: Fault,
}

impl FaultRule {
    /// A rule that hits every request with `fault` (narrow it with the builder methods).
    pub fn new(fault: Fault) -> Self {
        Self {
            method: None,
            path_prefix: None,
            path_contains: None,
            skip: 0,
            times: None,
            rate: None,
            fault,
        }
    }

    /// Only requests with this method.
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_owned());
        self
    }

    /// Only requests whose path starts with `prefix`.
    pub fn path_prefix(mut self, prefix: &str) -> Self {
        self.path_prefix = Some(prefix.to_owned());
        self
    }

    /// Only requests whose path contains `needle`.
    pub fn path_contains(mut self, needle: &str) -> Self {
        self.path_contains = Some(needle.to_owned());
        self
    }

    /// Fire at most `times` times.
    pub fn times(mut self, times: u64) -> Self {
        self.times = Some(times);
        self
    }

    /// Let the first `skip` matches through.
    pub fn skip(mut self, skip: u64) -> Self {
        self.skip = skip;
        self
    }

    /// Fire on this fraction of matches.
    pub fn rate(mut self, rate: f64) -> Self {
        self.rate = Some(rate);
        self
    }

    /// Checks the rule's numbers, so a bad admin request is refused instead of misbehaving.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if let Some(rate) = self.rate {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("fault rate {rate} is not within 0.0..=1.0"));
            }
        }
        if let Fault::Error { status, .. } = &self.fault {
            if !(400..=599).contains(status) {
                return Err(format!("fault status {status} is not an error status"));
            }
        }
        Ok(())
    }

    fn matches(&self, method: &str, raw_path: &str, decoded_path: &str) -> bool {
        let method_ok = self
            .method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method));
        let prefix_ok = self
            .path_prefix
            .as_deref()
            .is_none_or(|p| raw_path.starts_with(p) || decoded_path.starts_with(p));
        let contains_ok = self
            .path_contains
            .as_deref()
            .is_none_or(|c| raw_path.contains(c) || decoded_path.contains(c));
        method_ok && prefix_ok && contains_ok
    }
}

/// What goes wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Fault {
    /// 429 `TooManyRequests` with `Retry-After`.
    #[serde(rename_all = "camelCase")]
    Throttle {
        /// Seconds for the `Retry-After` header.
        #[serde(default = "one_second")]
        retry_after_seconds: u64,
    },
    /// 503 `ServerBusy`, with `Retry-After` when given.
    #[serde(rename_all = "camelCase")]
    ServerBusy {
        /// Seconds for the `Retry-After` header.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_seconds: Option<u64>,
    },
    /// 500 `OperationTimedOut`.
    OperationTimedOut,
    /// 500 `InternalError`.
    InternalError,
    /// 404 `NodeNotFound`, as when the node was removed under the request.
    NodeNotFound,
    /// 409 `NodeNotReady`, as when the node is being deallocated.
    NodeNotReady,
    /// 409 `TaskFilesUnavailable`, as when retention expired.
    TaskFilesUnavailable,
    /// 409 `OperationInvalidForCurrentState`, as for the files of an active task.
    OperationInvalidForCurrentState,
    /// Any Batch error body with the given status and code.
    #[serde(rename_all = "camelCase")]
    Error {
        /// HTTP status (400..=599).
        status: u16,
        /// Batch error code.
        code: String,
        /// Message (the RequestId/Time suffix is added).
        message: String,
        /// Seconds for a `Retry-After` header, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_seconds: Option<u64>,
    },
    /// Answer normally, but only after this delay.
    Delay {
        /// Delay in milliseconds.
        millis: u64,
    },
    /// Answer normally (headers, full `Content-Length`), send `afterBytes` bytes of the body,
    /// then abort the connection, like a node that goes away mid-download.
    #[serde(rename_all = "camelCase")]
    DropConnection {
        /// Body bytes to send before the abort.
        after_bytes: u64,
    },
}

fn one_second() -> u64 {
    1
}

impl Fault {
    /// A short name for the request log.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Fault::Throttle { .. } => "throttle",
            Fault::ServerBusy { .. } => "serverBusy",
            Fault::OperationTimedOut => "operationTimedOut",
            Fault::InternalError => "internalError",
            Fault::NodeNotFound => "nodeNotFound",
            Fault::NodeNotReady => "nodeNotReady",
            Fault::TaskFilesUnavailable => "taskFilesUnavailable",
            Fault::OperationInvalidForCurrentState => "operationInvalidForCurrentState",
            Fault::Error { .. } => "error",
            Fault::Delay { .. } => "delay",
            Fault::DropConnection { .. } => "dropConnection",
        }
    }

    /// The error response this fault answers with, if it is an error fault.
    pub(crate) fn as_error(&self) -> Option<ApiError> {
        use axum::http::StatusCode;
        Some(match self {
            Fault::Throttle {
                retry_after_seconds,
            } => ApiError::too_many_requests(*retry_after_seconds),
            Fault::ServerBusy {
                retry_after_seconds,
            } => ApiError::server_busy(*retry_after_seconds),
            Fault::OperationTimedOut => ApiError::operation_timed_out(),
            Fault::InternalError => ApiError::internal_error(),
            Fault::NodeNotFound => ApiError::node_not_found(),
            Fault::NodeNotReady => ApiError::node_not_ready(),
            Fault::TaskFilesUnavailable => ApiError::task_files_unavailable(),
            Fault::OperationInvalidForCurrentState => ApiError::files_of_active_task(),
            Fault::Error {
                status,
                code,
                message,
                retry_after_seconds,
            } => ApiError::new(
                StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                code,
                message,
            )
            .with_retry_after(*retry_after_seconds),
            Fault::Delay { .. } | Fault::DropConnection { .. } => return None,
        })
    }
}

/// A rule plus how often it has matched and fired so far.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultStatus {
    /// The rule.
    #[serde(flatten)]
    pub rule: FaultRule,
    /// Requests that matched the rule's method and path.
    pub matched: u64,
    /// Requests the rule fired on.
    pub fired: u64,
}

/// The live rules, in order.
#[derive(Debug, Default)]
pub(crate) struct FaultSet {
    rules: Vec<FaultStatus>,
}

impl FaultSet {
    /// Replaces all rules.
    pub(crate) fn replace(&mut self, rules: Vec<FaultRule>) {
        self.rules = rules
            .into_iter()
            .map(|rule| FaultStatus {
                rule,
                matched: 0,
                fired: 0,
            })
            .collect();
    }

    /// Appends rules after the existing ones.
    pub(crate) fn extend(&mut self, rules: Vec<FaultRule>) {
        self.rules.extend(rules.into_iter().map(|rule| FaultStatus {
            rule,
            matched: 0,
            fired: 0,
        }));
    }

    /// The rules with their counters.
    pub(crate) fn statuses(&self) -> Vec<FaultStatus> {
        self.rules.clone()
    }

    /// Counts the request against every matching rule and returns the fault of the first rule
    /// that fires, if any.
    pub(crate) fn check(
        &mut self,
        method: &str,
        raw_path: &str,
        decoded_path: &str,
    ) -> Option<Fault> {
        let mut chosen = None;
        for status in &mut self.rules {
            if !status.rule.matches(method, raw_path, decoded_path) {
                continue;
            }
            let index = status.matched;
            status.matched += 1;
            if chosen.is_some() || index < status.rule.skip {
                continue;
            }
            if status.rule.times.is_some_and(|t| status.fired >= t) {
                continue;
            }
            let eligible = index - status.rule.skip;
            let fires = match status.rule.rate {
                None => true,
                Some(rate) => rate_fires(rate, eligible),
            };
            if fires {
                status.fired += 1;
                chosen = Some(status.rule.fault.clone());
            }
        }
        chosen
    }
}

/// Deterministic rate: fires on match `n` when `floor((n+1)·rate) > floor(n·rate)`.
fn rate_fires(rate: f64, n: u64) -> bool {
    #[allow(clippy::cast_precision_loss)]
    let n = n as f64;
    ((n + 1.0) * rate).floor() > (n * rate).floor()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_skip_are_exact() {
        let mut set = FaultSet::default();
        set.replace(vec![
            FaultRule::new(Fault::OperationTimedOut)
                .path_prefix("/jobs/a")
                .skip(1)
                .times(2),
        ]);
        let fired: Vec<bool> = (0..5)
            .map(|_| set.check("GET", "/jobs/a/tasks", "/jobs/a/tasks").is_some())
            .collect();
        assert_eq!(fired, [false, true, true, false, false]);
        assert!(set.check("GET", "/jobs/b", "/jobs/b").is_none());
        assert_eq!(set.statuses()[0].matched, 5);
    }

    #[test]
    fn rate_is_even() {
        let fired = (0..10).filter(|n| rate_fires(0.3, *n)).count();
        assert_eq!(fired, 3);
        assert!((0..10).all(|n| rate_fires(1.0, n)));
        assert!(!(0..10).any(|n| rate_fires(0.0, n)));
    }

    #[test]
    fn parses_json_rules() {
        let rule: FaultRule = serde_json::from_str(
            r#"{"method": "get", "pathPrefix": "/jobs", "times": 3,
                "fault": {"kind": "throttle", "retryAfterSeconds": 2}}"#,
        )
        .unwrap();
        assert_eq!(
            rule.fault,
            Fault::Throttle {
                retry_after_seconds: 2
            }
        );
        let drop: FaultRule =
            serde_json::from_str(r#"{"fault": {"kind": "dropConnection", "afterBytes": 10}}"#)
                .unwrap();
        assert_eq!(drop.fault, Fault::DropConnection { after_bytes: 10 });
    }
}
