//! Repository-wide tests: see `integration/main.rs` for the list.
