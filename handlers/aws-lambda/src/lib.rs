//! batch-triage as an AWS Lambda function, on `lambda_runtime`. The binary
//! (`batch-triage-lambda`, packaged as `bootstrap`) builds the pipeline once and hands every
//! invocation to [`handler::Handler`]; everything that decides anything lives here, testable
//! without the runtime.
//!
//! # Layout
//! - [`event`]: what an invocation is, told apart by the event's shape (EventBridge schedule,
//!   Function URL / API Gateway request, direct `{"jobId", "taskId"}` invocation).
//! - [`handler`]: one invocation: the pipeline within Lambda's deadline; HTTP requests pass the
//!   webhook gate (`pipeline::webhook`: the shared key, Event Grid's handshakes) first.
//! - [`verdict`]: results become an HTTP response object (status = verdict) or an error whose
//!   `errorType` is `Retryable` or `NonRetryable`.
//! - [`settings`]: the pipeline's settings plus `BATCH_TRIAGE_WEBHOOK_KEY`.
//! - [`init_error`]: a failed start reported on the Runtime API's `/runtime/init/error`.

pub mod event;
pub mod handler;
pub mod init_error;
pub mod settings;
pub mod verdict;

use std::time::{Duration, SystemTime};

/// Lambda's deadline for the invocation, from the context (`None` when the context has none,
/// as a hand-made `Context::default()` in a test).
pub fn lambda_deadline(context: &lambda_runtime::Context) -> Option<SystemTime> {
    (context.deadline > 0).then(|| SystemTime::UNIX_EPOCH + Duration::from_millis(context.deadline))
}
