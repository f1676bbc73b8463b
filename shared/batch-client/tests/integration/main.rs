//! Integration tests of batch-client: one binary, one module per concern.

// Other crates name this package `batch_client` through the workspace rename; so do the tests.
extern crate batch_triage_batch_client as batch_client;

// A recording local HTTP stub with scripted replies.
mod stub;
// Our Shared Key signatures against the official Python SDK's policy, on real requests.
mod shared_key_python;
// Retries, error mapping, SSRF refusals, redirects, downloads and auth against the stub.
mod behaviour;
// Every operation against the Batch emulator over HTTP.
mod emulator;
// The pool and node operations against the emulator's built-in scenario.
mod pools;
// Managed identity (IDENTITY_ENDPOINT/IDENTITY_HEADER) end to end, in a child process.
mod managed_identity;
