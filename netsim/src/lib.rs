//! `skylane-netsim`: an in-process simulated network for quinn.
//!
//! **Status:** the crate is reserved in the workspace; its simulator (virtual UDP
//! sockets implementing quinn's `AsyncUdpSocket`, links with latency, jitter,
//! loss, bandwidth and MTU, partitions, seeds and packet traces) is tracked by the
//! netsim issue and not written yet. Nothing here pretends to simulate anything.
//!
//! **Contract (for when it lands):** code under simulation reads time only through
//! tokio, so a paused current-thread runtime drives every timer; the same seed
//! gives the same packet trace.
