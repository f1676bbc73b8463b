//! The pipeline's stateful parts against real backends: the local-directory store (and Azurite
//! when available) and the Batch emulator on 127.0.0.1.

mod accounts;
mod actions;
mod grouping;
mod growth;
mod parking;
mod pools;
mod refused;
mod resolved;
mod resolved_pools;
mod silences;
mod support;
mod sweep_cost;
mod triage;
