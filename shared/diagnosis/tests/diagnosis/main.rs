//! Integration tests of the diagnosis core, one binary:
//! - `scenarios`: one fixture file per failure scenario (test_data/), snapshot plus explicit
//!   expectations; coverage of every class and exit meaning.
//! - `corpus`: every payload of the repository's Batch corpus (`tests/corpus/batch/`).
//! - `real_payloads`: real failure payloads (`tests/corpus/real-payloads/`) against `expect.json`.
//! - `errors`: what bad input gets told.
//! - `streaming`: documents larger than the in-memory limit.
//! - `pools`: pool, node, node-count and pool-event payloads read into their items.
//! - `properties`: diagnose never panics on arbitrary task-shaped JSON.

mod corpus;
mod errors;
mod pools;
mod properties;
mod real_payloads;
mod scenarios;
mod streaming;
mod support;
