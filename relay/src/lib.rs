//! `skylane-relay`: the edge relay.
//!
//! A relay terminates QUIC from game clients (ALPN `skylane/1`), checks their
//! tokens offline, carries their sessions to the origin hosting their world over
//! one multiplexed link per origin, fans each channel batch out to every local
//! subscriber without re-encoding, schedules each client's traffic by event class,
//! keeps sessions across reconnects (to this or another relay), and drains on
//! request.
//!
//! # Layout
//! * Pure cores (no I/O, no clock: time is an argument): `admission` (connections
//!   per IP, handshake rate), `hello` (a client's first message: version, token,
//!   role, world, resume ticket), `guard` (per-session edge anti-cheat), `hub`
//!   (fan-out and exactly-once ordering per session), `upstream` (each session's
//!   feed towards its origin: acknowledged or not, buffered and in-flight
//!   actions), `routing` (paths to origins), `scheduler` (per-connection
//!   priority), `session` (session table, resume tickets), `geo` (GeoIP and the
//!   nearest-relay directory), `spectate` (the spectator delay buffer, filters
//!   and bandwidth modes), `backoff` (reconnect waits), `movement` (a
//!   client's latest-wins movement view and its datagrams; not driven by the
//!   shell yet).
//! * Plain data: `settings` (what a relay is given), `status` (what `/status`
//!   shows), `config` (the operator's configuration), `metrics`.
//! * Shell: `shell` (quinn and tokio tasks around the cores; its own header maps
//!   its files), `clock` (the Unix clock that follows tokio's); the
//!   `skylane-relay` binary.
//!
//! Modules are private; the public API is the list below, one path per type.
//!
//! **Contract:** every stateful core (routing table, priority scheduler, session
//! table, edge validators) is a sans-IO state machine that takes `now` as an
//! argument and never reads a clock; tokio and quinn code is a thin shell around
//! them.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod admission;
mod backoff;
mod clock;
mod config;
mod directory;
mod geo;
mod guard;
mod hello;
mod hub;
mod metrics;
mod movement;
mod penalty;
mod revocation;
mod routing;
mod scheduler;
mod session;
mod settings;
mod shell;
mod spectate;
mod status;
mod targets;
mod upstream;

pub use admission::{Admission, AdmissionConfig, Refused};
pub use config::RelayConfig;
pub use directory::{DirectoryChange, OriginEntry, WorldDirectory};
pub use geo::{Directory, GeoDb, GeoError};
pub use guard::{EdgeConfig, EdgeGuard, EdgeViolation, Rate, Verdict, REPLAY_WINDOW};
pub use hub::{BatchFrame, FanoutDelivery, Hub, HubConfig, HubStats};
pub use metrics::RelayMetrics;
pub use movement::{
    CellStates, ClientMovement, EntityState, FrameProof, MovementConfig, MovementError,
    MovementStats, DATAGRAM_OVERHEAD, ENTRY_OVERHEAD, GROUP_FRAMING, GROUP_OVERHEAD, MAX_ENTITIES,
    MAX_IN_FLIGHT, OTHER_HASH,
};
pub use penalty::{Penalties, PenaltyConfig};
pub use revocation::{Revocation, RevocationError, Revocations, MAX_REVOCATIONS};
pub use routing::{Link, OriginId, Path, RouteChange, RoutingConfig, RoutingTable};
pub use scheduler::{Outgoing, Overflow, Scheduler, SchedulerConfig, SchedulerStats};
pub use session::{
    AttachError, ConnId, Presence, SessionEntry, SessionTable, TicketClaims, TicketError, TicketKey,
};
pub use settings::{
    client_transport, link_transport, link_transport_with, Current, Limits, OriginSpec, PeerSpec,
    RelayMaterial, RelaySettings, RevocationList, TokenKeys, LINK_IDLE_TIMEOUT, LINK_KEEP_ALIVE,
};
pub use shell::{ContentSettings, LoadError, Relay};
pub use skylane_proto::MAX_PROBE_PINGS;
pub use spectate::{Audience, AudienceConfig, AudienceStats, SpectateError, SpectatorDelivery};
pub use status::{OriginStatus, RelayStatus, RouteStatus};
pub use targets::{parse_origin, parse_peer, OriginTarget, PeerTarget};
pub use upstream::{ResultFate, Route, Upstream, ZoneMove};
