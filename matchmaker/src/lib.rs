//! Skylane matchmaking: players queue tickets (a party of one or more, with
//! ratings and round-trip estimates to every origin), and the matcher forms
//! matches that minimise the group's worst-case estimated RTT to the origin
//! that will host them, within a skill window, with windows that widen as
//! tickets wait.
//!
//! The pure parts:
//! * [`Matcher`] (sans-IO: `handle_ticket`, `handle_cancel`,
//!   `handle_timeout`, `poll_match`, `poll_timeout`, time in milliseconds
//!   from an injected clock);
//! * [`coordinator`]: the queue leader's core (tickets from the control
//!   plane's records in, placements and fenced record writes out);
//! * [`estimate`]: a ticket's RTT to each origin from what the mesh measures
//!   (the client's RTT to each relay plus that relay's RTT to the origin), or
//!   from coordinates when a client has no measurements;
//! * [`ratings`]: Weng-Lin ratings (the `skillratings` crate) and their update
//!   from a finished match; [`book`]: every player's rating in an embedded
//!   database (redb), updated once per match from its world's result;
//! * [`records`]: what the service keeps in the control plane.
//!
//! The shell: [`service`] (lease, campaign for the queue's leadership, the
//! leader loop, placement through the control plane, ratings from results),
//! the HTTP API (`api`, types in `skylane_proto::matchmaking`), [`config`]
//! and the `skylane-match` binary.

mod api;
pub mod book;
pub mod config;
pub mod coordinator;
pub mod estimate;
mod matcher;
pub mod ratings;
pub mod records;
pub mod service;

pub use matcher::{
    GameRules, Match, Matcher, MatcherStats, Member, Step, Ticket, TicketError, TicketId, Windows,
    MAX_QUEUED, ROUND_MS,
};
pub use ratings::Rating;
