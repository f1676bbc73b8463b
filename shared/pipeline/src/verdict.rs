//! What a pipeline result means to the platform that delivered the work, said once: every
//! handler renders a [`Verdict`] in its own protocol (an HTTP status for Event Grid webhooks,
//! an invocation failure for the Functions host, an `errorType` for Lambda).

use batch_client::BatchError;

use crate::triage::{RunReport, TriageError};

/// The platform-neutral verdict on one piece of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Done (or nothing to do): acknowledge.
    Ok,
    /// A transient failure: deliver again. Everything already done is idempotent, so the
    /// redelivery repeats nothing.
    Retry {
        /// What failed, without secrets.
        reason: String,
    },
    /// Input no retry can fix (an unreadable payload, a malformed request): acknowledge it as
    /// poison, never deliver it again.
    Poison {
        /// Why it was refused, without secrets.
        reason: String,
    },
    /// What was asked about does not exist.
    NotFound {
        /// What was not found.
        reason: String,
    },
    /// A dependency (Batch) refused or failed in a way a retry will not fix.
    Upstream {
        /// What it said, without secrets.
        reason: String,
    },
}

impl Verdict {
    /// The verdict on a triaged delivery: retry when some subject failed in a way a retry may
    /// fix, otherwise acknowledge (a refused or permanently failed subject is in the report).
    pub fn of_run(report: &RunReport) -> Self {
        if report.should_retry() {
            Verdict::Retry {
                reason: "a subject failed transiently".to_owned(),
            }
        } else {
            Verdict::Ok
        }
    }

    /// The verdict on one payload: poison when it cannot be read (retrying cannot make it
    /// readable), else as [`Verdict::of_run`].
    pub fn of_payload(result: &Result<RunReport, TriageError>) -> Self {
        match result {
            Ok(report) => Self::of_run(report),
            Err(error) => Verdict::Poison {
                reason: error.to_string(),
            },
        }
    }

    /// The verdict on a failed Batch call (an on-demand diagnosis): not found, retry when Batch
    /// throttled or failed transiently, otherwise an upstream failure.
    pub fn of_batch_error(error: &BatchError) -> Self {
        let reason = error.to_string();
        if error.is_not_found() {
            Verdict::NotFound { reason }
        } else if error.is_retryable() {
            Verdict::Retry { reason }
        } else {
            Verdict::Upstream { reason }
        }
    }

    /// The HTTP status that carries this verdict to a webhook caller, following Event Grid's
    /// retry rules: 2xx acknowledges, 400 and 404 are never retried, 503 asks for a redelivery,
    /// 502 says Batch refused.
    pub fn http_status(&self) -> u16 {
        match self {
            Verdict::Ok => 200,
            Verdict::Retry { .. } => 503,
            Verdict::Poison { .. } => 400,
            Verdict::NotFound { .. } => 404,
            Verdict::Upstream { .. } => 502,
        }
    }

    /// What a caller over HTTP is told: the kind of failure and whether to retry, and nothing
    /// more. The reason names the Batch endpoint and the request id, which belong in the log,
    /// not in an answer to whoever asked.
    pub fn public_body(&self) -> serde_json::Value {
        let error = match self {
            Verdict::Ok => return serde_json::json!({}),
            Verdict::Retry { .. } => "Batch or the store is unavailable or throttling; retry later",
            Verdict::Poison { .. } => "the request cannot be read",
            Verdict::NotFound { .. } => "no such job or task in the configured Batch account",
            Verdict::Upstream { .. } => {
                "Batch refused the request; the function's log has the details"
            }
        };
        serde_json::json!({"error": error, "retryable": self.is_retry()})
    }

    /// Whether delivering the same work again may succeed.
    pub fn is_retry(&self) -> bool {
        matches!(self, Verdict::Retry { .. })
    }

    /// The reason, for a verdict that is not [`Verdict::Ok`].
    pub fn reason(&self) -> Option<&str> {
        match self {
            Verdict::Ok => None,
            Verdict::Retry { reason }
            | Verdict::Poison { reason }
            | Verdict::NotFound { reason }
            | Verdict::Upstream { reason } => Some(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triage::{Outcome, SubjectReport};

    fn report(outcome: Outcome) -> RunReport {
        let mut subject = SubjectReport::new("devbatch1/etl/oom".to_owned());
        subject.outcome = outcome;
        RunReport {
            subjects: vec![subject],
            ignored_items: 0,
        }
    }

    #[test]
    fn a_transient_subject_failure_is_a_retry_and_503() {
        let verdict = Verdict::of_run(&report(Outcome::Failed {
            reason: "throttled".to_owned(),
            retryable: true,
        }));
        assert!(verdict.is_retry());
        assert_eq!(verdict.http_status(), 503);
    }

    #[test]
    fn done_skipped_refused_and_permanent_failures_are_acknowledged() {
        for outcome in [
            Outcome::Done,
            Outcome::Skipped("gone".to_owned()),
            Outcome::Refused("other account".to_owned()),
            Outcome::Failed {
                reason: "bad request".to_owned(),
                retryable: false,
            },
        ] {
            let verdict = Verdict::of_run(&report(outcome.clone()));
            assert_eq!(verdict, Verdict::Ok, "{outcome:?}");
            assert_eq!(verdict.http_status(), 200);
            assert_eq!(verdict.reason(), None);
        }
    }

    #[test]
    fn an_unreadable_payload_is_poison_and_400() {
        let mut sink = |_item: diagnosis::Item| {};
        let error = diagnosis::payload::read_slice(b"{\"records\": [", &mut sink)
            .expect_err("a truncated document is unreadable");
        let verdict = Verdict::of_payload(&Err(TriageError::Payload(error)));
        assert!(matches!(verdict, Verdict::Poison { .. }), "{verdict:?}");
        assert_eq!(verdict.http_status(), 400);
        assert!(verdict.reason().is_some_and(|r| r.contains("unreadable")));
        assert!(!verdict.is_retry());
    }

    fn info(status: u16) -> Box<batch_client::ErrorInfo> {
        Box::new(batch_client::ErrorInfo {
            status: Some(status),
            message: "from the test".to_owned(),
            operation: "get job",
            ..batch_client::ErrorInfo::default()
        })
    }

    #[test]
    fn public_bodies_say_the_kind_and_never_the_reason() {
        let secret_reason = "GET https://devbatch1.westeurope.batch.azure.com/jobs/etl \
                             (client-request-id 1f0c…)";
        for verdict in [
            Verdict::Retry {
                reason: secret_reason.to_owned(),
            },
            Verdict::NotFound {
                reason: secret_reason.to_owned(),
            },
            Verdict::Upstream {
                reason: secret_reason.to_owned(),
            },
            Verdict::Poison {
                reason: secret_reason.to_owned(),
            },
        ] {
            let body = verdict.public_body().to_string();
            assert!(!body.contains("batch.azure.com"), "{body}");
            assert!(!body.contains("client-request-id"), "{body}");
            assert_eq!(
                verdict.public_body()["retryable"],
                serde_json::json!(verdict.is_retry())
            );
        }
        assert!(
            Verdict::Retry {
                reason: String::new()
            }
            .public_body()["error"]
                .as_str()
                .is_some_and(|e| e.contains("retry later"))
        );
    }

    #[test]
    fn batch_errors_map_to_not_found_retry_or_upstream() {
        let not_found = Verdict::of_batch_error(&BatchError::NotFound(info(404)));
        assert!(
            matches!(not_found, Verdict::NotFound { .. }),
            "{not_found:?}"
        );
        assert_eq!(not_found.http_status(), 404);
        let transient = Verdict::of_batch_error(&BatchError::Transient(info(500)));
        assert!(transient.is_retry());
        assert_eq!(transient.http_status(), 503);
        let refused = Verdict::of_batch_error(&BatchError::Auth(info(403)));
        assert!(matches!(refused, Verdict::Upstream { .. }), "{refused:?}");
        assert_eq!(refused.http_status(), 502);
        assert!(
            refused
                .reason()
                .is_some_and(|r| r.contains("from the test"))
        );
    }
}
