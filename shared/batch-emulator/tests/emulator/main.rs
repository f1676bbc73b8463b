//! End-to-end tests of the emulator over real HTTP on 127.0.0.1.
//!
//! - `common`: server start-up and an independent Shared Key signer.
//! - `api`: jobs, tasks, corpus shapes, paging over 12,000 tasks, filters, `$select`.
//! - `auth`: Shared Key, bearer tokens, and their failure bodies.
//! - `files`: listings, downloads, HEAD, ranges, node files, file errors.
//! - `faults`: throttling, busy, timeouts, delays, dropped connections, the admin API.
//! - `actions`: job terminate/disable/enable state machines, task terminate, `If-Match`.
//! - `pools`: pools, nodes, node counts, node actions and agent logs (local directory, Azurite).
//! - `hostile`: malformed requests that must not break the server.
//! - `sdk`: the official Python SDK (`tests/sdk_check.py`) against the emulator.

mod actions;
mod api;
mod auth;
mod common;
mod faults;
mod files;
mod hostile;
mod pools;
mod sdk;
