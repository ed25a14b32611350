//! `skylane-relay`: the edge relay.
//!
//! **Status:** in progress. Written so far: the per-connection priority
//! [`scheduler`], the [`edge`] anti-cheat guard, the [`routing`] table and
//! the [`session`] table with resume tickets (pure cores), and [`geo`]: GeoIP
//! lookups and the nearest-relay directory. Still to come (relay issue): QUIC termination, token
//! checks, GeoIP and RTT routing, edge anti-cheat, upstream links to origins,
//! fan-out, resume, drain, the `skylane-relay` binary.
//!
//! **Contract:** every stateful core (routing table, priority scheduler, session
//! table, edge validators) is a sans-IO state machine that takes `now` as an
//! argument and never reads a clock; tokio and quinn code is a thin shell around
//! them.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod admission;
pub mod edge;
pub mod geo;
pub mod hub;
pub mod metrics;
pub mod routing;
pub mod scheduler;
pub mod server;
pub mod session;

pub use admission::{Admission, AdmissionConfig, Refused};
pub use hub::{BatchFrame, Delivery, Hub, HubConfig, HubStats};
pub use metrics::RelayMetrics;
pub use server::{
    client_transport, link_transport, Limits, OriginSpec, OriginStatus, Relay, RelaySettings,
    RelayStatus, RouteStatus,
};

pub use edge::{EdgeConfig, EdgeGuard, EdgeViolation, Rate, Verdict};
pub use geo::{Directory, GeoDb, GeoError};
pub use routing::{Link, OriginId, Path, RouteChange, RoutingConfig, RoutingTable};
pub use scheduler::{Outgoing, Overflow, Scheduler, SchedulerConfig, SchedulerStats};
pub use session::{
    AttachError, ConnId, Presence, SessionEntry, SessionTable, TicketClaims, TicketError, TicketKey,
};
