//! batch-triage as an Azure Functions custom handler.
//!
//! The Functions host starts the handler binary, waits for `GET /` to answer, and POSTs each
//! invocation to `/<FunctionName>` as `{"Data": {...}, "Metadata": {...}}` (RUNTIME.md §1). This
//! crate speaks that protocol:
//!
//! - [`protocol`]: the request and response envelopes, and the decoding of each trigger's binding
//!   value (the host JSON-encodes string values a second time, and Event Hubs batches arrive as a
//!   string holding an array of strings).
//! - `functions/<Name>/function.json`: the four functions and their binding names (`events` for
//!   `TaskEvents`, `event` for `TaskEventGrid`, `timer` for `Sweep`, `req`/`res` for `Diagnose`).
//!
//! The binary that serves these routes over the pipeline comes with the pipeline (issue 6).

#![deny(missing_docs)]

pub mod protocol;
