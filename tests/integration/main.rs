//! Repository-wide integration tests, one binary:
//! - `tidy`: the architecture's invariants, checked from `cargo metadata` and the sources.

mod tidy;
