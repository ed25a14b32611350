//! `skylane-origin`: the authoritative world server.
//!
//! A game implements [`World`] (its rules: decode, validate, apply, describe); the
//! [`Engine`] runs one world as a single-writer state machine: actions applied one
//! at a time in arrival order, optimistic concurrency on entity versions, registered
//! rule validators, an anomaly detector ([`anticheat`]), interest management over a
//! grid ([`interest`]), and per-channel event batches that are sequenced, signed,
//! hash-chained and kept in a bounded history for resumes. [`arena`] is the
//! reference game.
//!
//! **Contract.** The engine and worlds are pure: no I/O, no clock (time comes in as
//! arguments), no ambient randomness, so replaying the same inputs gives the same
//! state hash. Persistence ([`persist`]) and the network shell ([`OriginServer`], which
//! reads time only through tokio) are thin layers around them.
//!
//! # Layout
//! * [`world`]: the `World` trait and what passes through it.
//! * [`engine`]: the per-world state machine.
//! * [`interest`]: area-of-interest grid with hysteresis.
//! * [`anticheat`]: behavioural anomaly detection.
//! * [`arena`]: the reference game.
//! * [`journal`]: the redb input log and snapshots; replay and divergence checks.
//! * [`persist`]: an engine that records its inputs and restarts from its journal.
//! * `core`: the engine contract the shell drives ([`Core`]).
//! * `routes`: which relay carries each session and which channels each relay
//!   is sent ([`Routes`], pure).
//! * `shell`: the QUIC shell relays connect to (tokio + quinn, mutual TLS):
//!   [`OriginServer`].
//! * [`metrics`]: Prometheus metrics.
//! * [`config`]: operator configuration (file, flags, environment).
//! * [`view`]: a client's view rebuilt from keyframes and batches, and the consistency checker.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod anticheat;
pub mod arena;
pub mod config;
mod core;
pub mod engine;
pub mod interest;
pub mod journal;
pub mod metrics;
pub mod persist;
mod routes;
mod shell;
pub mod view;
pub mod world;

pub use anticheat::{AnomalyKind, Detector, DetectorConfig, Enforcement, Violation};
pub use arena::{Arena, ArenaAction, ArenaConfig, ArenaEvent, Roster};
pub use core::Core;
pub use engine::{
    Engine, EngineConfig, EngineSnapshot, EngineStats, JoinError, Output, ResumeError,
};
pub use interest::{Grid, Interest, InterestChange};
pub use journal::{replay, Divergence, Input, Journal, JournalError, JournalMeta, ReplayReport};
pub use metrics::OriginMetrics;
pub use persist::Persistent;
pub use routes::{LinkId, Routes};
pub use shell::{OriginServer, ServerConfig};
pub use view::{ArenaView, Mismatch, ViewError};
pub use world::{Ctx, Emit, Emitted, Observation, Rejection, Validator, World};
