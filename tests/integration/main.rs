//! Repository-wide integration tests, one binary:
//! - `tidy`: the architecture's invariants, checked from `cargo metadata` and the sources.
//! - `package`: `scripts/package` and the layout of the Functions and Lambda zips.

mod package;
mod tidy;
