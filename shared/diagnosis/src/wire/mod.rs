//! What Azure Batch sends, as typed Rust: REST bodies and diagnostic events, parsed leniently
//! (see [`lenient`]) so that every real payload shape is readable.

pub mod events;
pub mod lenient;
pub mod rest;

pub use events::*;
pub use lenient::{IsoDuration, Timestamp};
pub use rest::*;
