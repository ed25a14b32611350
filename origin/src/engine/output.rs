//! What the engine asks its shell to do ([`Output`]), and its counters
//! ([`EngineStats`]).

use std::sync::Arc;

use skylane_proto::zones::{EntityTransfer, ZoneIdx, ZoneMsg};
use skylane_proto::{
    ActionResult, ChannelCursor, ChannelId, EventBatch, FeedFrame, Keyframe, SessionId, WorldState,
};

use crate::anticheat::Violation;

/// What the engine asks its shell to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send an action's result to its session.
    Result {
        /// Session.
        session: SessionId,
        /// Result.
        result: ActionResult,
    },
    /// Send a channel's batch to every relay with subscribers of it. Shared with the
    /// resume history, so publishing costs no copy.
    Batch(Arc<EventBatch>),
    /// Send a cell's movement states of a tick (latest-wins, signed, not
    /// chained) to every relay with subscribers of it.
    Movement(Arc<skylane_proto::MovementFrame>),
    /// Send a channel's keyframe.
    Keyframe(Keyframe),
    /// Tell the session's relay that its channels changed.
    Subscriptions {
        /// Session.
        session: SessionId,
        /// Added, each with the channel's last sequence number so far (the session
        /// receives what comes after it).
        added: Vec<ChannelCursor>,
        /// Removed.
        removed: Vec<ChannelId>,
    },
    /// A violation was recorded (and enforced if it says so).
    Violation(Violation),
    /// Disconnect the session; with a sanction, its player is refused on
    /// every relay for the sanction's time (a kick's cool-down, a ban).
    Kick {
        /// Session.
        session: SessionId,
        /// The player (the token's subject).
        player: String,
        /// Why.
        reason: String,
        /// What keeps the player out, and for how many seconds (0: for good).
        sanction: Option<(skylane_proto::SanctionKind, u64)>,
    },
    /// A frame of the world's public spectator feed, for every relay that asked for
    /// it (only produced while [`crate::Engine::set_feed`] is on).
    Feed(Arc<FeedFrame>),
    /// What the world's economy did in a tick, for the origin's ledger.
    Ledger {
        /// The tick.
        tick: u64,
        /// Its transactions (ids made unique per world).
        txs: Vec<crate::ledger::LedgerTx>,
    },
    /// The room's lifecycle state changed (phase, or its head count); the shell
    /// adds the owner's epoch, tells every relay, and publishes it to the
    /// control plane.
    Phase(WorldState),
    /// Zones: an avatar crossed this zone's border: the shell starts its
    /// handoff to zone `to` (reported every tick until it started).
    Crossing {
        /// The entity as it would leave.
        transfer: EntityTransfer,
        /// The zone it entered.
        to: ZoneIdx,
    },
    /// Zones: a session's avatar now belongs to zone `to` (the handoff
    /// committed): its relay moves the session upstream to that zone's owner.
    SessionMoved {
        /// Session.
        session: SessionId,
        /// Its new zone.
        to: ZoneIdx,
    },
    /// Zones: a message for zone `to`'s owner, sent once the tick is
    /// durable: border mirrors (presentation, never journaled) or a
    /// cross-zone request (engine state, re-sent until answered).
    ToZone {
        /// The zone.
        to: ZoneIdx,
        /// The message ([`ZoneMsg::Mirrors`] or [`ZoneMsg::Request`]).
        msg: ZoneMsg,
    },
}

/// Counters since the engine started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Ticks run.
    pub ticks: u64,
    /// Actions applied.
    pub applied: u64,
    /// Actions answered with a conflict.
    pub conflicts: u64,
    /// Actions rejected.
    pub rejected: u64,
    /// Actions refused because the tick already held `max_queue` actions.
    pub overflowed: u64,
    /// Events emitted (movement states included).
    pub events: u64,
    /// Movement states published (in movement frames, not chained).
    pub moves: u64,
    /// Movement states the world tried to emit over
    /// [`skylane_proto::MAX_MOVE_STATE`] (refused by [`crate::Emit::moved`]).
    pub moves_refused: u64,
    /// Violations recorded.
    pub violations: u64,
    /// Zones: entities whose import failed although it was admitted (never
    /// expected: admission runs the same checks).
    pub zone_import_failures: u64,
    /// Zones: mirror messages sent to neighbours.
    pub mirrors_sent: u64,
    /// Zones: neighbours' copies shown to this zone's players (new or
    /// changed ones; the periodic re-showing is not counted).
    pub mirrors_shown: u64,
    /// Zones: cross-zone requests sent, applied here for other zones, and
    /// answered `None` at once (nowhere to send, or too many unanswered).
    pub requests_sent: u64,
    /// See `requests_sent`.
    pub requests_served: u64,
    /// See `requests_sent`.
    pub requests_unrouted: u64,
    /// Zones: world and team events sent to the home zone to publish, those
    /// published here for other zones (at the home zone), and those
    /// dropped (too large, or the home zone unanswering for thousands of
    /// requests).
    pub events_forwarded_out: u64,
    /// See `events_forwarded_out`.
    pub events_forwarded_in: u64,
    /// See `events_forwarded_out`.
    pub events_forward_dropped: u64,
    /// Zones: other zones' feed events the home zone dropped (its next
    /// frame held `MAX_FEED_PARTS` already).
    pub feed_parts_dropped: u64,
}
