//! `skylane-origin`: the authoritative world server.
//!
//! A game implements [`World`] (its rules: decode, validate, apply, describe); the
//! [`Engine`] runs one world as a single-writer state machine: actions applied one
//! at a time in arrival order, optimistic concurrency on entity versions, registered
//! rule validators, an anomaly detector ([`Detector`]), interest management over a
//! grid ([`Interest`]), and per-channel event batches that are sequenced, signed,
//! hash-chained and kept in a bounded history for resumes. [`Arena`] is the
//! reference game.
//!
//! **Contract.** The engine and worlds are pure: no I/O, no clock (time comes in as
//! arguments), no ambient randomness, so replaying the same inputs gives the same
//! state hash. Persistence ([`Persistent`]) and the network shell ([`OriginServer`], which
//! reads time only through tokio) are thin layers around them.
//!
//! Modules are private; the public API is the `pub use` list below, one path
//! per type.
//!
//! # Layout
//! * `world`: the `World` trait and what passes through it.
//! * `engine`: the per-world state machine.
//! * `lifecycle`: a room's life (waiting, playing, ended), pure.
//! * `interest`: area-of-interest grid with hysteresis.
//! * `anticheat`: behavioural anomaly detection.
//! * `arena`: the reference game.
//! * `tictactoe`: the second reference game: turn-based rooms of two.
//! * `games`: the registry of games an origin runs, by name ([`Games`]).
//! * `journal`: the redb input log and snapshots; replay and divergence checks.
//! * `persist`: an engine that records its inputs and restarts from its journal.
//! * `core`: the engine contract the shell drives ([`Core`]).
//! * `replica`: replication to standbys, pure: the input [`Recorder`], the
//!   primary's [`Gate`] (durability, verification), the standby's [`Follower`].
//! * `routes`: which relay carries each session and which channels each relay
//!   is sent ([`Routes`], pure).
//! * `shell`: the QUIC shell relays connect to (tokio + quinn, mutual TLS):
//!   [`OriginServer`].
//! * `admin`: the `/worlds` admin routes (create, list, end) on the control plane.
//! * `metrics`: Prometheus metrics.
//! * `config`: operator configuration (file, flags, environment).
//! * `view`: a client's view rebuilt from keyframes and batches, and the consistency checker.
//! * `zone`: zones of one world over several origins: the handoff exchange and
//!   border mirrors, pure ([`Handoffs`], [`MirrorOut`], [`MirrorIn`]).

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod admin;
mod anticheat;
mod arena;
mod config;
mod core;
mod engine;
mod evidence;
mod games;
mod interest;
mod journal;
mod ledger;
mod lifecycle;
mod metrics;
mod persist;
mod redb_file;
mod replica;
mod routes;
mod shell;
mod tictactoe;
mod view;
mod world;
mod zone;

pub use admin::{hosted_router, ledger_router, violations_router, worlds_router, CREATE_WAIT};
pub use anticheat::{
    AnomalyKind, Detector, DetectorConfig, Enforcement, EnforcementPolicy, Violation,
};
pub use arena::{
    Arena, ArenaAction, ArenaAnswer, ArenaConfig, ArenaEvent, ArenaRemote, Item, Offer, OfferEnd,
    Player, Roster, CLOSED_KEPT, MAX_OFFER_TICKS, MAX_OPEN_OFFERS, OFFER_CLOSED, UNKNOWN_OFFER,
};
pub use config::{merge, ConfigError, OriginConfig};
pub use core::Core;
pub use engine::{
    Engine, EngineConfig, EngineSnapshot, EngineStats, JoinError, Output, ResumeError, Served,
    ZoneSetup, ZoneSetupError, IDLE_KEYFRAME_PERIODS,
};
pub use evidence::{
    EvidenceError, Source, ViolationQuery, ViolationRecord, ViolationStore, MAX_QUERY,
};
pub use games::{check_zoning, start, GameError, GameFactory, Games, NewWorld, EMPTY_GRACE_SECS};
pub use interest::{Grid, Interest, InterestChange};
pub use journal::{
    apply_input, replay, situation, Divergence, Input, Journal, JournalError, JournalMeta,
    ReplayReport, Situation,
};
pub use ledger::{
    Ledger, LedgerEntry, LedgerError, LedgerTx, Totals, TxKind, TxRecord, Wallet, MAX_TXLOG,
};
pub use lifecycle::{Closed, Lifecycle, LifecycleConfig};
pub use metrics::{KindLabel, LatencyMs, OriginMetrics};
pub use persist::{PersistConfig, Persistent};
pub use replica::{AckVerdict, FollowError, Follower, Gate, GateConfig, Recorder, Released};
pub use routes::{LinkId, Routes};
pub use shell::{
    ClusterAgent, ClusterNode, HostError, LoadError, OriginHandle, OriginServer, OriginStatus,
    ServerConfig, WorldEvent,
};
pub use tictactoe::{
    TicTacToe, TttAction, TttConfig, TttEvent, TttState, BAD_CELL, BOARD, GAME_OVER, NOT_YOUR_TURN,
};
pub use view::{ArenaView, Mismatch, TttView, ViewError, ViewItem, ViewPlayer};
pub use world::{
    Ctx, Emit, Emitted, MoveTooLarge, Observation, Rejection, RemoteOp, TickCtx, Validator, World,
};
pub use zone::{
    HandoffConfig, HandoffError, HandoffLedger, HandoffStats, Handoffs, MirrorError, MirrorIn,
    MirrorOut, ZoneOutput,
};
