//! batch-triage as an Azure Functions custom handler.
//!
//! The Functions host starts the handler binary, waits for `GET /` to answer, and POSTs each
//! invocation to `/<FunctionName>` as `{"Data": {...}, "Metadata": {...}}` (docs/delivery.md). This
//! crate speaks that protocol:
//!
//! - [`protocol`]: the request and response envelopes, and the decoding of each trigger's binding
//!   value (the host JSON-encodes string values a second time, and Event Hubs batches arrive as a
//!   string holding an array of strings).
//! - `functions/<Name>/function.json`: the four functions and their binding names (`events` for
//!   `TaskEvents`, `event` for `TaskEventGrid`, `timer` for `Sweep`, `req`/`res` for `Diagnose`).
//!
//! - [`app`]: the routes (`GET /` for readiness, `POST /<FunctionName>`), and the one place where
//!   a pipeline result becomes a platform verdict (500 = retry; unreadable input acknowledged).
//! - [`settings`]: configuration from app settings only.
//!
//! The binary (`batch-triage-functions`) reads the settings, builds the pipeline once and serves.

#![deny(missing_docs)]

pub mod app;
pub mod protocol;
pub mod settings;
