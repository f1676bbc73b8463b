//! Repository-wide integration tests, one binary:
//! - `tidy`: the architecture's invariants, checked from `cargo metadata` and the sources, and
//!   that the repository stands alone.
//! - `faults`: throttling storms, Blob 5xx, a receiver down, a copy killed mid-file, duplicate
//!   deliveries: nothing lost, nothing doubled (`harness` holds the shared setup).
//! - `fuzz_props`: CI's fuzzing campaign, the cargo-fuzz targets' properties under proptest.
//! - `secrets`: the CLI and the Functions handler with recognisable secrets, happy and error paths;
//!   no secret in any output, alert or stored object.
//! - `package`: `scripts/package` and the layout of the Functions and Lambda zips.
//! - `sizes`: no non-test source file over 800 lines and no function over 120.

mod faults;
mod fuzz_props;
mod harness;
mod package;
mod secrets;
mod sizes;
mod tidy;
