//! Repository-wide tests live in `tests/`; see `tests/tidy.rs`.
