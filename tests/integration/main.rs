//! Repository-wide integration tests, one binary:
//! - `tidy`: the architecture's invariants, checked from `cargo metadata` and the sources.
//! - `fuzz_props`: CI's fuzzing campaign, the cargo-fuzz targets' properties under proptest.
//! - `package`: `scripts/package` and the layout of the Functions and Lambda zips.

mod fuzz_props;
mod package;
mod tidy;
