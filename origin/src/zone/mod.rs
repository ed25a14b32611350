//! Zones: one world over several origins, pure cores.
//!
//! A zoned world's map is split into static rectangles
//! ([`skylane_proto::zones::ZoneLayout`]); each zone is owned by one origin
//! and replicated like a world. This module holds the decisions, sans-IO:
//!
//! * `handoff`: the journaled two-phase exchange that moves an entity that
//!   crossed a border (with hysteresis) to the neighbouring zone's owner
//!   ([`Handoffs`]), exactly once across crashes of either side.
//! * `mirror`: read-only copies of entities near a border for the
//!   neighbouring zone ([`MirrorOut`], [`MirrorIn`]).

mod handoff;
mod mirror;

pub use handoff::{HandoffConfig, HandoffError, HandoffLedger, HandoffStats, Handoffs, ZoneOutput};
pub use mirror::{MirrorError, MirrorIn, MirrorOut};
