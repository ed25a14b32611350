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
//! * Pure cores: [`admission`] (connections per IP, handshake rate), [`edge`]
//!   (per-session anti-cheat), [`hub`] (fan-out and exactly-once ordering per
//!   session), [`routing`] (paths to origins), [`scheduler`] (per-connection
//!   priority), [`session`] (session table, resume tickets), [`geo`] (GeoIP and
//!   the nearest-relay directory), [`spectate`] (the spectator delay buffer,
//!   filters and bandwidth modes).
//! * Shell: [`server`] (quinn and tokio tasks around the cores), [`peer`]
//!   (relay-to-relay measurement and forwarded origin links), [`config`]
//!   (operator configuration), [`metrics`]; the `skylane-relay` binary.
//!
//! **Contract:** every stateful core (routing table, priority scheduler, session
//! table, edge validators) is a sans-IO state machine that takes `now` as an
//! argument and never reads a clock; tokio and quinn code is a thin shell around
//! them.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod admission;
pub mod config;
pub mod edge;
pub mod geo;
pub mod hub;
pub mod metrics;
pub mod peer;
pub mod routing;
pub mod scheduler;
pub mod server;
pub mod session;
pub mod spectate;
mod writer;

pub use admission::{Admission, AdmissionConfig, Refused};
pub use hub::{BatchFrame, Delivery, Hub, HubConfig, HubStats};
pub use metrics::RelayMetrics;
pub use peer::PeerSpec;
pub use server::{
    client_transport, link_transport, Limits, OriginSpec, OriginStatus, Relay, RelaySettings,
    RelayStatus, RouteStatus, MAX_PROBE_PINGS,
};

pub use edge::{EdgeConfig, EdgeGuard, EdgeViolation, Rate, Verdict};
pub use geo::{Directory, GeoDb, GeoError};
pub use routing::{Link, OriginId, Path, RouteChange, RoutingConfig, RoutingTable};
pub use scheduler::{Outgoing, Overflow, Scheduler, SchedulerConfig, SchedulerStats};
pub use session::{
    AttachError, ConnId, Presence, SessionEntry, SessionTable, TicketClaims, TicketError, TicketKey,
};
pub use spectate::{Audience, AudienceConfig, AudienceStats, SpectateError};
