//! The engine contract: what the network shell needs from a world engine (an
//! [`Engine`], or a [`Persistent`] one that journals its inputs). Pure like the
//! engine: time comes in as arguments.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use skylane_proto::{
    Action, ChannelCursor, ChannelId, EntityId, EventBatch, Hash32, Keyframe, Role, SessionId,
    TeamId, WorldId, WorldState,
};

use skylane_proto::zones::{
    EntityTransfer, RequestId, RequestKind, ZoneIdx, ZoneMsg, ZoneRecord, MAX_REQUEST,
};

use crate::zone::{HandoffLedger, MirrorError};

use crate::engine::{forward_ready, Engine, JoinError, Output, ResumeError, Served};
use crate::journal::JournalError;
use crate::persist::Persistent;
use crate::world::World;

/// What the shell needs from a world engine (an [`Engine`], or a [`Persistent`] one).
pub trait Core: Send + 'static {
    /// The world's id.
    fn world_id(&self) -> WorldId;
    /// See [`Engine::handle_join`].
    fn handle_join(
        &mut self,
        s: SessionId,
        player: &str,
        role: Role,
        team: Option<TeamId>,
    ) -> Result<Option<EntityId>, JoinError>;
    /// See [`Engine::handle_endow`].
    fn handle_endow(&mut self, player: &str, wallet: crate::ledger::Wallet);
    /// See [`Engine::handle_leave`].
    fn handle_leave(&mut self, s: SessionId);
    /// See [`Engine::handle_action`].
    fn handle_action(&mut self, s: SessionId, a: Action);
    /// See [`Engine::handle_timeout`].
    fn handle_timeout(&mut self, now_us: u64) -> Result<(), JournalError>;
    /// See [`Engine::poll_output`].
    fn poll_output(&mut self) -> Option<Output>;
    /// See [`Engine::poll_timeout`].
    fn poll_timeout(&self) -> u64;
    /// See [`Engine::channels_of`].
    fn channels_of(&self, s: SessionId) -> Vec<ChannelId>;
    /// See [`Engine::history_since`].
    fn history_since(&self, c: ChannelCursor) -> Result<Vec<Arc<EventBatch>>, ResumeError>;
    /// See [`Engine::keyframe_now`].
    fn keyframe_now(&self, c: ChannelId) -> Keyframe;
    /// See [`Engine::has_session`].
    fn has_session(&self, s: SessionId) -> bool;
    /// See [`Engine::channel_seq`].
    fn channel_seq(&self, c: ChannelId) -> u64;
    /// Writes anything buffered (graceful shutdown).
    fn flush(&mut self) -> Result<(), JournalError>;
    /// See [`Engine::set_feed`].
    fn set_feed(&mut self, on: bool, now_us: u64);
    /// The last completed tick.
    fn tick(&self) -> u64;
    /// The world's state hash now (what the journal records per tick).
    fn state_hash(&self) -> Hash32;
    /// See [`Engine::handle_end`].
    fn handle_end(&mut self, reason: &str);
    /// See [`Engine::handle_zone`]: a handoff record, durable (journaled
    /// at once, for a persistent engine) when this returns.
    fn handle_zone(&mut self, rec: &ZoneRecord) -> Result<(), JournalError>;
    /// See [`Engine::zone`].
    fn zone(&self) -> Option<ZoneIdx>;
    /// See [`Engine::handle_mirrors`] (never journaled).
    fn handle_mirrors(&mut self, msg: &ZoneMsg, now_us: u64) -> Result<(), MirrorError>;
    /// See [`Engine::zone_requests`].
    fn zone_requests(&self) -> Vec<(u64, ZoneIdx, ZoneMsg)>;
    /// See [`Engine::zone_served`].
    fn zone_served(&self, id: RequestId) -> Served;
    /// See [`Engine::zone_asked`].
    fn zone_asked(&self, id: RequestId) -> bool;
    /// See [`Engine::writes_channel`].
    fn writes_channel(&self, channel: ChannelId) -> bool;
    /// See [`Engine::handle_feed_part`] (never journaled).
    fn handle_feed_part(&mut self, msg: &ZoneMsg);
    /// See [`Engine::zones`].
    fn zones(&self) -> Vec<ZoneIdx>;
    /// A cross-zone request or answer from another zone's owner: a new
    /// request is journaled (`Served`, applied once) and answered, a
    /// repeated one answered from its record, a stale one (the asker has
    /// its answer) ignored; an answer to a request of this zone's awaiting
    /// it is journaled (`Answered`), a repeated one ignored. Returns the
    /// message to send back (to send once the tick being built is
    /// durable). Other messages are ignored.
    fn handle_request(
        &mut self,
        msg: &ZoneMsg,
    ) -> Result<Option<(ZoneIdx, ZoneMsg)>, JournalError> {
        match msg {
            ZoneMsg::Request {
                world,
                id,
                low,
                kind,
                op,
            } => {
                if op.len() > kind.max_op() || self.zone() != Some(id.to) {
                    return Ok(None);
                }
                // Forwarded events wait for the batch before them (the
                // home publishes them in their emission order).
                let ready =
                    *kind != RequestKind::Events || forward_ready(op, *id, |r| self.zone_served(r));
                if ready && self.zone_served(*id) == Served::New {
                    self.handle_zone(&ZoneRecord::Served {
                        id: *id,
                        low: *low,
                        kind: *kind,
                        op: op.clone(),
                    })?;
                }
                Ok(match self.zone_served(*id) {
                    Served::Answer(answer) => Some((
                        id.from,
                        ZoneMsg::Answer {
                            world: *world,
                            id: *id,
                            answer,
                        },
                    )),
                    Served::Forgotten | Served::New => None,
                })
            }
            ZoneMsg::Answer { id, answer, .. } => {
                if answer.len() <= MAX_REQUEST && self.zone_asked(*id) {
                    self.handle_zone(&ZoneRecord::Answered {
                        id: *id,
                        answer: answer.clone(),
                    })?;
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }
    /// Ticks per second.
    fn tick_hz(&self) -> u32;
    /// See [`Engine::can_import`].
    fn can_import(&self, t: &EntityTransfer) -> Result<(), String>;
    /// See [`Engine::handoff_ledger`].
    fn handoff_ledger(&self) -> Option<HandoffLedger>;
    /// See [`Engine::moved_to`].
    fn moved_to(&self, session: SessionId) -> Option<ZoneIdx>;
    /// See [`Engine::world_state`].
    fn world_state(&self) -> WorldState;
    /// The game's name.
    fn game(&self) -> &str;
    /// See [`Engine::idle`].
    fn idle(&self) -> bool;
    /// See [`Engine::rebase`].
    fn rebase(&mut self, now_us: u64);
    /// Runs exactly the next tick at `at_us` (see [`Engine::run_tick_at`]): a
    /// standby re-executing its primary's ticks.
    fn run_tick_at(&mut self, at_us: u64) -> Result<(), JournalError>;
    /// The whole engine (world included) as bytes: what a standby that starts
    /// late restores from ([`Games::create`](crate::Games::create) with a
    /// snapshot).
    fn snapshot(&self) -> Vec<u8>;
    /// The entities whose state differs between this engine's world and the
    /// one in `snapshot` (another engine's [`Core::snapshot`] of the same
    /// game): how a standby names what diverged.
    fn diff_snapshot(&self, snapshot: &[u8]) -> Result<Vec<EntityId>, postcard::Error>;
}

/// The engine behind a core (itself, or a persistent one's).
trait ZoneEngine<W: World> {
    fn zone_engine(&self) -> &Engine<W>;
}

impl<W: World> ZoneEngine<W> for Engine<W> {
    fn zone_engine(&self) -> &Self {
        self
    }
}

impl<W: World + Clone + Serialize + DeserializeOwned> ZoneEngine<W> for Persistent<W> {
    fn zone_engine(&self) -> &Engine<W> {
        self.engine()
    }
}

fn snapshot_bytes<W: World + Clone + Serialize>(engine: &Engine<W>) -> Vec<u8> {
    // Serializing plain data into a Vec cannot fail.
    postcard::to_stdvec(&engine.snapshot()).unwrap_or_default()
}

fn diff_with<W: World + DeserializeOwned>(
    engine: &Engine<W>,
    snapshot: &[u8],
) -> Result<Vec<EntityId>, postcard::Error> {
    let other: crate::EngineSnapshot<W> = postcard::from_bytes(snapshot)?;
    let mut entities = engine.world().diff(&other.world);
    entities.sort_unstable();
    entities.dedup();
    Ok(entities)
}

impl<W: World + Clone + Serialize + DeserializeOwned> Core for Engine<W> {
    fn world_id(&self) -> WorldId {
        self.config().world
    }
    fn handle_join(
        &mut self,
        s: SessionId,
        p: &str,
        r: Role,
        t: Option<TeamId>,
    ) -> Result<Option<EntityId>, JoinError> {
        Self::handle_join(self, s, p, r, t)
    }
    fn handle_endow(&mut self, player: &str, wallet: crate::ledger::Wallet) {
        Self::handle_endow(self, player, wallet);
    }
    fn handle_leave(&mut self, s: SessionId) {
        Self::handle_leave(self, s);
    }
    fn handle_zone(&mut self, rec: &ZoneRecord) -> Result<(), JournalError> {
        Self::handle_zone(self, rec);
        Ok(())
    }
    fn zone(&self) -> Option<ZoneIdx> {
        Self::zone(self)
    }
    fn handle_mirrors(&mut self, msg: &ZoneMsg, now_us: u64) -> Result<(), MirrorError> {
        Self::handle_mirrors(self, msg, now_us)
    }
    fn handle_feed_part(&mut self, msg: &ZoneMsg) {
        Self::handle_feed_part(self, msg);
    }
    fn zone_requests(&self) -> Vec<(u64, ZoneIdx, ZoneMsg)> {
        self.zone_engine().zone_requests()
    }
    fn zone_served(&self, id: RequestId) -> Served {
        self.zone_engine().zone_served(id)
    }
    fn zone_asked(&self, id: RequestId) -> bool {
        self.zone_engine().zone_asked(id)
    }
    fn writes_channel(&self, channel: ChannelId) -> bool {
        self.zone_engine().writes_channel(channel)
    }
    fn zones(&self) -> Vec<ZoneIdx> {
        self.zone_engine().zones()
    }
    fn tick_hz(&self) -> u32 {
        self.config().tick_hz
    }
    fn can_import(&self, t: &EntityTransfer) -> Result<(), String> {
        Self::can_import(self, t)
    }
    fn moved_to(&self, session: SessionId) -> Option<ZoneIdx> {
        Self::moved_to(self, session)
    }
    fn handoff_ledger(&self) -> Option<HandoffLedger> {
        Self::handoff_ledger(self).cloned()
    }
    fn handle_action(&mut self, s: SessionId, a: Action) {
        Self::handle_action(self, s, a);
    }
    fn handle_timeout(&mut self, now_us: u64) -> Result<(), JournalError> {
        Self::handle_timeout(self, now_us);
        Ok(())
    }
    fn poll_output(&mut self) -> Option<Output> {
        Self::poll_output(self)
    }
    fn poll_timeout(&self) -> u64 {
        Self::poll_timeout(self)
    }
    fn channels_of(&self, s: SessionId) -> Vec<ChannelId> {
        Self::channels_of(self, s)
    }
    fn history_since(&self, c: ChannelCursor) -> Result<Vec<Arc<EventBatch>>, ResumeError> {
        Self::history_since(self, c)
    }
    fn keyframe_now(&self, c: ChannelId) -> Keyframe {
        Self::keyframe_now(self, c)
    }
    fn has_session(&self, s: SessionId) -> bool {
        Self::has_session(self, s)
    }
    fn channel_seq(&self, c: ChannelId) -> u64 {
        Self::channel_seq(self, c)
    }
    fn flush(&mut self) -> Result<(), JournalError> {
        Ok(())
    }
    fn set_feed(&mut self, on: bool, now_us: u64) {
        Self::set_feed(self, on, now_us);
    }
    fn tick(&self) -> u64 {
        Self::tick(self)
    }
    fn state_hash(&self) -> Hash32 {
        Self::state_hash(self)
    }
    fn handle_end(&mut self, reason: &str) {
        Self::handle_end(self, reason);
    }
    fn world_state(&self) -> WorldState {
        Self::world_state(self)
    }
    fn game(&self) -> &str {
        self.world().name()
    }
    fn idle(&self) -> bool {
        Self::idle(self)
    }
    fn rebase(&mut self, now_us: u64) {
        Self::rebase(self, now_us);
    }
    fn run_tick_at(&mut self, at_us: u64) -> Result<(), JournalError> {
        Self::run_tick_at(self, at_us);
        Ok(())
    }
    fn snapshot(&self) -> Vec<u8> {
        snapshot_bytes(self)
    }
    fn diff_snapshot(&self, snapshot: &[u8]) -> Result<Vec<EntityId>, postcard::Error> {
        diff_with(self, snapshot)
    }
}

impl<W: World + Clone + Serialize + DeserializeOwned> Core for Persistent<W> {
    fn world_id(&self) -> WorldId {
        self.engine().config().world
    }
    fn handle_join(
        &mut self,
        s: SessionId,
        p: &str,
        r: Role,
        t: Option<TeamId>,
    ) -> Result<Option<EntityId>, JoinError> {
        Self::handle_join(self, s, p, r, t)
    }
    fn handle_endow(&mut self, player: &str, wallet: crate::ledger::Wallet) {
        Self::handle_endow(self, player, wallet);
    }
    fn handle_leave(&mut self, s: SessionId) {
        Self::handle_leave(self, s);
    }
    fn handle_zone(&mut self, rec: &ZoneRecord) -> Result<(), JournalError> {
        Self::handle_zone(self, rec)
    }
    fn zone(&self) -> Option<ZoneIdx> {
        self.engine().zone()
    }
    fn handle_mirrors(&mut self, msg: &ZoneMsg, now_us: u64) -> Result<(), MirrorError> {
        Self::handle_mirrors(self, msg, now_us)
    }
    fn handle_feed_part(&mut self, msg: &ZoneMsg) {
        Self::handle_feed_part(self, msg);
    }
    fn zone_requests(&self) -> Vec<(u64, ZoneIdx, ZoneMsg)> {
        self.zone_engine().zone_requests()
    }
    fn zone_served(&self, id: RequestId) -> Served {
        self.zone_engine().zone_served(id)
    }
    fn zone_asked(&self, id: RequestId) -> bool {
        self.zone_engine().zone_asked(id)
    }
    fn writes_channel(&self, channel: ChannelId) -> bool {
        self.zone_engine().writes_channel(channel)
    }
    fn zones(&self) -> Vec<ZoneIdx> {
        self.zone_engine().zones()
    }
    fn tick_hz(&self) -> u32 {
        self.engine().config().tick_hz
    }
    fn can_import(&self, t: &EntityTransfer) -> Result<(), String> {
        self.engine().can_import(t)
    }
    fn moved_to(&self, session: SessionId) -> Option<ZoneIdx> {
        self.engine().moved_to(session)
    }
    fn handoff_ledger(&self) -> Option<HandoffLedger> {
        self.engine().handoff_ledger().cloned()
    }
    fn handle_action(&mut self, s: SessionId, a: Action) {
        Self::handle_action(self, s, a);
    }
    fn handle_timeout(&mut self, now_us: u64) -> Result<(), JournalError> {
        Self::handle_timeout(self, now_us)
    }
    fn poll_output(&mut self) -> Option<Output> {
        Self::poll_output(self)
    }
    fn poll_timeout(&self) -> u64 {
        Self::poll_timeout(self)
    }
    fn channels_of(&self, s: SessionId) -> Vec<ChannelId> {
        self.engine().channels_of(s)
    }
    fn history_since(&self, c: ChannelCursor) -> Result<Vec<Arc<EventBatch>>, ResumeError> {
        self.engine().history_since(c)
    }
    fn keyframe_now(&self, c: ChannelId) -> Keyframe {
        self.engine().keyframe_now(c)
    }
    fn has_session(&self, s: SessionId) -> bool {
        self.engine().has_session(s)
    }
    fn channel_seq(&self, c: ChannelId) -> u64 {
        self.engine().channel_seq(c)
    }
    fn flush(&mut self) -> Result<(), JournalError> {
        Self::flush(self)
    }
    fn set_feed(&mut self, on: bool, now_us: u64) {
        Self::set_feed(self, on, now_us);
    }
    fn tick(&self) -> u64 {
        self.engine().tick()
    }
    fn state_hash(&self) -> Hash32 {
        self.engine().state_hash()
    }
    fn handle_end(&mut self, reason: &str) {
        Self::handle_end(self, reason);
    }
    fn world_state(&self) -> WorldState {
        self.engine().world_state()
    }
    fn game(&self) -> &str {
        self.engine().world().name()
    }
    fn idle(&self) -> bool {
        self.engine().idle()
    }
    fn rebase(&mut self, now_us: u64) {
        Self::rebase(self, now_us);
    }
    fn run_tick_at(&mut self, at_us: u64) -> Result<(), JournalError> {
        Self::run_tick_at(self, at_us)
    }
    fn snapshot(&self) -> Vec<u8> {
        snapshot_bytes(self.engine())
    }
    fn diff_snapshot(&self, snapshot: &[u8]) -> Result<Vec<EntityId>, postcard::Error> {
        diff_with(self.engine(), snapshot)
    }
}
