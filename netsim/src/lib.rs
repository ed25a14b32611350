//! `skylane-netsim`: an in-process simulated network for quinn.
//!
//! Skylane's network tests (loss, partitions, latency spikes, thousands of clients,
//! many regions) run in this simulator: unmodified quinn endpoints talk through
//! [`SimSocket`]s (quinn's `AsyncUdpSocket`), packets cross directional links with
//! latency, jitter, loss, bandwidth, MTU, reordering and duplication
//! ([`LinkParams`]), and faults (partitions, latency spikes, loss changes, crashes,
//! address changes) apply now or on a schedule ([`Fault`]). Region-to-region
//! latencies come from a topology calibrated on measured cloud RTTs ([`topology`]).
//!
//! **Contract.** Time is tokio's: on a current-thread runtime with the clock paused
//! ([`run`]), a minute of play takes seconds and timing does not depend on the
//! machine. The same seed gives the same packet trace ([`Sim::trace_hash`]): times,
//! sizes and drops, not bytes (TLS key exchange stays random). The simulator never
//! touches the real network; [`proxy`] is the one part that does, on purpose, for
//! tests across processes.
//!
//! # Layout
//! * [`link`]: the pure per-packet link model shared with the proxy.
//! * [`sim`]: hosts, links, faults and the delivery pump.
//! * [`socket`]: the quinn adapter (the only quinn-version-specific code).
//! * [`topology`]: built-in regions and calibrated RTTs.
//! * [`trace`]: packet trace, stable hash, JSON-lines export.
//! * [`latency`]: hdrhistogram recording with coordinated-omission correction.
//! * [`proxy`]: a real-UDP impairment proxy using the same link model.
//! * [`runtime`]: the paused current-thread runtime helper.

pub mod latency;
pub mod link;
pub mod proxy;
pub mod runtime;
pub mod sim;
pub mod socket;
pub mod topology;
pub mod trace;

pub use latency::{LatencyRecorder, LatencySummary};
pub use link::{DropReason, LinkParams, LinkState, Loss, Verdict};
pub use proxy::{ProxyConfig, ProxyControl, ProxyStats, UdpProxy};
pub use runtime::run;
pub use sim::{Fault, HostId, LinkPatch, Side, Sim, DEFAULT_ONE_WAY, DEFAULT_RECV_BUFFER};
pub use socket::SimSocket;
pub use trace::{Trace, TraceCounts, TraceMode, TraceRecord, TraceVerdict};
