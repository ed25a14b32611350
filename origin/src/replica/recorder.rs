//! [`Recorder`]: records what an engine is fed, for its standbys.

use std::sync::Arc;

use skylane_proto::{
    Action, ChannelCursor, ChannelId, EntityId, EventBatch, Hash32, Input, Keyframe, Role,
    SessionId, TeamId, WorldId, WorldState,
};

use crate::core::Core;
use crate::engine::{JoinError, Output, ResumeError};
use crate::journal::JournalError;

/// Most inputs kept between two drains before recording stops and the log is
/// marked broken (standbys then restart from a snapshot): a bound, never reached
/// while the shell drains every tick.
pub(crate) const MAX_RECORDED: usize = 1 << 20;

/// A [`Core`] that records every input (see the module docs). Ticks run one at
/// a time so that each gets its own [`Input::Tick`] marker with its state hash.
pub struct Recorder {
    inner: Box<dyn Core>,
    log: Vec<Input>,
    /// Inputs were lost to the bound since the last drain.
    broken: bool,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("world", &self.inner.world_id())
            .field("recorded", &self.log.len())
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// Records what `inner` is fed from now on.
    pub fn new(inner: Box<dyn Core>) -> Self {
        Self {
            inner,
            log: Vec::new(),
            broken: false,
        }
    }

    fn record(&mut self, input: Input) {
        if self.log.len() >= MAX_RECORDED {
            self.broken = true;
            self.log.clear();
        }
        if !self.broken {
            self.log.push(input);
        }
    }

    /// The inputs recorded since the last call, or `None` if some were lost to
    /// the bound (followers must restart from a snapshot).
    pub fn drain(&mut self) -> Option<Vec<Input>> {
        if std::mem::take(&mut self.broken) {
            self.log.clear();
            return None;
        }
        Some(std::mem::take(&mut self.log))
    }

    /// Whether inputs are waiting to be drained.
    pub fn has_recorded(&self) -> bool {
        !self.log.is_empty() || self.broken
    }

    /// The wrapped engine.
    pub fn into_inner(self) -> Box<dyn Core> {
        self.inner
    }
}

impl Core for Recorder {
    fn world_id(&self) -> WorldId {
        self.inner.world_id()
    }
    fn handle_join(
        &mut self,
        session: SessionId,
        player: &str,
        role: Role,
        team: Option<TeamId>,
    ) -> Result<Option<EntityId>, JoinError> {
        self.record(Input::Join {
            session,
            player: player.to_owned(),
            role,
            team,
        });
        self.inner.handle_join(session, player, role, team)
    }
    fn handle_endow(&mut self, player: &str, wallet: crate::ledger::Wallet) {
        self.record(Input::Endow {
            player: player.to_owned(),
            coins: wallet.coins,
            items: wallet.items,
        });
        self.inner.handle_endow(player, wallet);
    }
    fn handle_leave(&mut self, session: SessionId) {
        self.record(Input::Leave { session });
        self.inner.handle_leave(session);
    }
    fn handle_zone(&mut self, rec: &skylane_proto::zones::ZoneRecord) -> Result<(), JournalError> {
        self.record(Input::Zone(rec.clone()));
        self.inner.handle_zone(rec)
    }
    fn zone(&self) -> Option<skylane_proto::zones::ZoneIdx> {
        self.inner.zone()
    }
    fn handle_mirrors(
        &mut self,
        msg: &skylane_proto::zones::ZoneMsg,
        now_us: u64,
    ) -> Result<(), crate::zone::MirrorError> {
        // Presentation, not an input: standbys never need it.
        self.inner.handle_mirrors(msg, now_us)
    }
    fn zone_requests(
        &self,
    ) -> Vec<(
        u64,
        skylane_proto::zones::ZoneIdx,
        skylane_proto::zones::ZoneMsg,
    )> {
        self.inner.zone_requests()
    }
    fn zone_served(&self, id: skylane_proto::zones::RequestId) -> crate::engine::Served {
        self.inner.zone_served(id)
    }
    fn zone_asked(&self, id: skylane_proto::zones::RequestId) -> bool {
        self.inner.zone_asked(id)
    }
    fn writes_channel(&self, channel: ChannelId) -> bool {
        self.inner.writes_channel(channel)
    }
    fn handle_feed_part(&mut self, msg: &skylane_proto::zones::ZoneMsg) {
        // Presentation, not an input.
        self.inner.handle_feed_part(msg);
    }
    fn zones(&self) -> Vec<skylane_proto::zones::ZoneIdx> {
        self.inner.zones()
    }
    fn tick_hz(&self) -> u32 {
        self.inner.tick_hz()
    }
    fn can_import(&self, t: &skylane_proto::zones::EntityTransfer) -> Result<(), String> {
        self.inner.can_import(t)
    }
    fn moved_to(&self, session: SessionId) -> Option<skylane_proto::zones::ZoneIdx> {
        self.inner.moved_to(session)
    }
    fn handoff_ledger(&self) -> Option<crate::zone::HandoffLedger> {
        self.inner.handoff_ledger()
    }
    fn handle_action(&mut self, session: SessionId, action: Action) {
        self.record(Input::Action {
            session,
            action: action.clone(),
        });
        self.inner.handle_action(session, action);
    }
    fn handle_timeout(&mut self, now_us: u64) -> Result<(), JournalError> {
        while now_us >= self.inner.poll_timeout() {
            let at = self.inner.poll_timeout();
            self.run_tick_at(at)?;
        }
        Ok(())
    }
    fn run_tick_at(&mut self, at_us: u64) -> Result<(), JournalError> {
        self.inner.run_tick_at(at_us)?;
        let tick = self.inner.tick();
        let hash = Some(self.inner.state_hash());
        self.record(Input::Tick { tick, at_us, hash });
        Ok(())
    }
    fn poll_output(&mut self) -> Option<Output> {
        self.inner.poll_output()
    }
    fn poll_timeout(&self) -> u64 {
        self.inner.poll_timeout()
    }
    fn channels_of(&self, s: SessionId) -> Vec<ChannelId> {
        self.inner.channels_of(s)
    }
    fn history_since(&self, c: ChannelCursor) -> Result<Vec<Arc<EventBatch>>, ResumeError> {
        self.inner.history_since(c)
    }
    fn keyframe_now(&self, c: ChannelId) -> Keyframe {
        self.inner.keyframe_now(c)
    }
    fn has_session(&self, s: SessionId) -> bool {
        self.inner.has_session(s)
    }
    fn channel_seq(&self, c: ChannelId) -> u64 {
        self.inner.channel_seq(c)
    }
    fn flush(&mut self) -> Result<(), JournalError> {
        self.inner.flush()
    }
    fn set_feed(&mut self, on: bool, now_us: u64) {
        self.inner.set_feed(on, now_us);
    }
    fn tick(&self) -> u64 {
        self.inner.tick()
    }
    fn state_hash(&self) -> Hash32 {
        self.inner.state_hash()
    }
    fn handle_end(&mut self, reason: &str) {
        self.record(Input::End {
            reason: reason.to_owned(),
        });
        self.inner.handle_end(reason);
    }
    fn world_state(&self) -> WorldState {
        self.inner.world_state()
    }
    fn game(&self) -> &str {
        self.inner.game()
    }
    fn idle(&self) -> bool {
        self.inner.idle()
    }
    fn rebase(&mut self, now_us: u64) {
        self.inner.rebase(now_us);
    }
    fn snapshot(&self) -> Vec<u8> {
        self.inner.snapshot()
    }
    fn diff_snapshot(&self, snapshot: &[u8]) -> Result<Vec<EntityId>, postcard::Error> {
        self.inner.diff_snapshot(snapshot)
    }
}
