//! Fuzz targets for every parser batch-triage exposes to untrusted input; see `checks` for what
//! each one asserts, and `scripts/fuzz` to run them.

/// The Functions handler's protocol decoding, compiled from its source file so the fuzz build
/// does not pull in the whole pipeline (the Azure SDK, TLS) under a sanitizer.
#[allow(dead_code, unreachable_pub, missing_docs)]
#[path = "../../handlers/azure-functions/src/protocol.rs"]
pub mod protocol;

mod checks;

pub use checks::*;
