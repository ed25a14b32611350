//! `skylane-origin`: the authoritative world server.
//!
//! **Status:** reserved in the workspace; the world engine, optimistic
//! concurrency, interest management, validators, event log and network shell are
//! tracked by the origin issue and not written yet.
//!
//! **Contract (for when it lands):** a world is a single-writer actor; its engine
//! is pure (no I/O, no clock) so replays are deterministic.
