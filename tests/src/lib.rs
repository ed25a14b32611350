//! `skylane-tests`: workspace-level integration and scenario tests.
//!
//! The tests live in `tests/tests/`; this library holds helpers they share.
//! It is never published and never used by the shipped crates.
