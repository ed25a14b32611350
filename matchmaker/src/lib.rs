//! Skylane matchmaking: players queue tickets (a party of one or more, with
//! ratings and round-trip estimates to every origin), and the matcher forms
//! matches that minimise the group's worst-case estimated RTT to the origin
//! that will host them, within a skill window, with windows that widen as
//! tickets wait.
//!
//! This crate is the pure part (issue 26, in progress):
//! * [`Matcher`] (sans-IO: `handle_ticket`, `handle_cancel`,
//!   `handle_timeout`, `poll_match`, `poll_timeout`, time in milliseconds
//!   from an injected clock);
//! * [`estimate`]: a ticket's RTT to each origin from what the mesh measures
//!   (the client's RTT to each relay plus that relay's RTT to the origin), or
//!   from coordinates when a client has no measurements;
//! * [`ratings`]: Weng-Lin ratings (the `skillratings` crate) and their update
//!   from a finished match; [`book`]: every player's rating in an embedded
//!   database (redb), updated once per match from its world's result.
//!
//! The service around it (HTTP API, control-plane placement, leader lease,
//! persistence of tickets and ratings, SDK and CLI) is not built yet.

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
