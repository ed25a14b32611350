//! The world engine: one single-writer state machine per world.
//!
//! Sans-IO: inputs are `handle_*` calls with the time as an argument, outputs come
//! out of [`Engine::poll_output`], and [`Engine::poll_timeout`] says when the next
//! tick is due. The network shell (or a test, or a replay) feeds it.
//!
//! Actions are applied one at a time in arrival order (the order of
//! `handle_action` calls; the network shell calls it as frames arrive, so a replay
//! of the log reproduces it exactly), as they arrive, into the tick being built.
//! For each action, in order:
//! 1. the session must exist and be a player;
//! 2. its sequence number must exceed the session's last (replays are rejected);
//! 3. the payload must fit the size limit and decode;
//! 4. every entity version it read must be current, otherwise a
//!    [`Outcome::Conflict`] carries the current versions and state (optimistic
//!    concurrency: the first action to commit wins);
//! 5. every registered validator must pass, otherwise [`Outcome::Rejected`];
//! 6. the world applies it; its events wait for the tick.
//!
//! A conflict or a rejection changes nothing that has to be kept, so it is
//! answered at once: a player learns of a conflict, with the state to retry from,
//! one network round trip after sending, not up to a tick later. An applied
//! action is answered when its tick ends, beside the tick's batches (after the
//! journal has written the tick, for a [`Persistent`](crate::Persistent) engine):
//! "applied" means "kept". Applying on arrival rather than at the tick gives the
//! same state (the same actions in the same order against the same tick number);
//! it only lets a conflict be seen as soon as the first writer has committed.
//!
//! At the end of the tick each channel's events become one signed, hash-chained
//! [`EventBatch`], kept in a bounded per-channel history for resumes.

use rustc_hash::FxHashMap as HashMap;
use std::collections::{HashSet, VecDeque};

use skylane_proto::{
    Action, ActionResult, ChainSigner, ChannelCursor, ChannelId, EntityId, EntityVersion,
    EventClass, Hash32, Outcome, RejectCode, ReplayWindow, Role, SessionId, TeamId, WorldId,
    WorldPhase, REPLAY_WINDOW,
};

use crate::anticheat::{Detector, DetectorConfig, Enforcement, Violation};
use crate::interest::{Grid, Interest};
use crate::lifecycle::{Closed, Lifecycle, LifecycleConfig};
use crate::world::{Ctx, Emit, Emitted, Rejection, Validator, World};

mod border;
mod channels;
mod output;
mod requests;
mod rooms;
mod snapshot;
mod zones;

pub use output::{EngineStats, Output};
pub(crate) use requests::forward_ready;
pub use requests::Served;
pub use zones::{ZoneSetup, ZoneSetupError};

/// Engine settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EngineConfig {
    /// The world's id.
    pub world: WorldId,
    /// Ticks per second. Defaults to 30.
    pub tick_hz: u32,
    /// Ticks between keyframes of each subscribed channel. Defaults to 30 (1 s).
    pub keyframe_every: u64,
    /// Batches kept per channel for resumes. Defaults to 1,050 (35 s at 30 Hz:
    /// the relays' 30 s grace period and a margin, so a resume inside the grace
    /// gets exactly what it missed; it was 300, 10 s, and resumes after 20 s
    /// lost hundreds of events to a keyframe).
    pub history: usize,
    /// Bytes of event payload (plus 64 per event) kept per channel for resumes,
    /// whatever `history` says: the memory bound. Defaults to 16 MiB.
    pub history_bytes: usize,
    /// Largest action payload accepted. Defaults to 1,024 bytes.
    pub max_payload: usize,
    /// A channel's events of one tick are split into batches of at most this many
    /// payload bytes (one event always fits), so every batch frame stays under
    /// the link's frame limit however busy the tick. Default 32 KiB.
    pub max_batch_bytes: usize,
    /// Actions accepted into one tick before further ones are refused (rate
    /// limited) until the tick ends. Defaults to 100,000.
    pub max_queue: usize,
    /// Anomaly detector settings.
    pub detector: DetectorConfig,
    /// A room's life (waiting, playing, ended); `None` for a persistent world
    /// that plays from its first tick and never ends by itself.
    #[serde(default)]
    pub lifecycle: Option<LifecycleConfig>,
}

impl EngineConfig {
    /// Defaults for `world`.
    pub fn new(world: WorldId) -> Self {
        Self {
            world,
            tick_hz: 30,
            keyframe_every: 30,
            history: 1050,
            history_bytes: 16 << 20,
            max_payload: 1024,
            max_batch_bytes: 32 * 1024,
            max_queue: 100_000,
            detector: DetectorConfig::default(),
            lifecycle: None,
        }
    }

    /// Tick length in microseconds.
    pub fn tick_us(&self) -> u64 {
        1_000_000 / u64::from(self.tick_hz.max(1))
    }
}

/// Why a session could not join.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The session id is already in use.
    #[error("{0} already joined")]
    Duplicate(SessionId),
    /// The player is banned from this world.
    #[error("player {0:?} is banned from this world")]
    Banned(String),
    /// The room holds as many players as it may.
    #[error("the world is full")]
    Full,
    /// The room has ended.
    #[error("the world has ended")]
    Ended,
    /// The session's avatar was handed to another zone of this zoned world:
    /// it is open there (the relay follows it).
    #[error("the session moved to {0}")]
    Moved(skylane_proto::zones::ZoneIdx),
}

/// Why a resume could not be served from history.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// The history no longer holds the events after the cursor: start from a keyframe.
    #[error("history of {channel} starts at {oldest}, after the requested {requested}")]
    TooOld {
        /// Channel.
        channel: ChannelId,
        /// Oldest sequence number still held.
        oldest: u64,
        /// Sequence requested.
        requested: u64,
    },
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct SessionState {
    player: String,
    avatar: Option<EntityId>,
    role: Role,
    team: Option<TeamId>,
    /// Sequence numbers used (each accepted once within a window, since
    /// movement datagrams and per-class streams arrive out of send order).
    seen: ReplayWindow,
    /// The newest movement applied: an older one is superseded.
    last_move: u64,
}

/// A channel where nothing happened since its last keyframe gets a new one only
/// every this many keyframe periods (its subscribers already hold that state; the
/// occasional repeat lets a subscriber stuck behind a hole resync even on a
/// channel that went quiet). Quiet channels dominate a sparse world's traffic.
pub const IDLE_KEYFRAME_PERIODS: u64 = 10;

/// Everything needed to restart an engine exactly where it was (persistence).
/// Resume history is not included: after a restart, sessions resume from keyframes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EngineSnapshot<W> {
    /// Ticks completed.
    pub tick: u64,
    /// When the next tick is due.
    pub next_tick_us: u64,
    /// The world.
    pub world: W,
    sessions: Vec<(SessionId, SessionState)>,
    banned: Vec<String>,
    channels: Vec<(ChannelId, u64, Hash32, u32)>,
    interest: Interest,
    detector: Detector,
    /// Applied actions' results waiting for the end of their tick.
    applied: Vec<(SessionId, ActionResult)>,
    staged: Vec<Emitted>,
    #[serde(default)]
    life: Option<Lifecycle>,
    #[serde(default)]
    zone: Option<Box<zones::ZoneState>>,
}

/// One world's authoritative state machine.
pub struct Engine<W: World> {
    world: W,
    cfg: EngineConfig,
    validators: Vec<(&'static str, Validator<W>)>,
    signer: ChainSigner,
    grid: Grid,
    interest: Interest,
    detector: Detector,
    tick: u64,
    next_tick_us: u64,
    sessions: HashMap<SessionId, SessionState>,
    banned: HashSet<String>,
    /// The wallet the next join of this player brings ([`Engine::handle_endow`];
    /// consumed by that join, so never held across a tick).
    endowment: Option<(String, crate::ledger::Wallet)>,
    /// Actions taken into the tick being built.
    accepted: usize,
    /// Applied actions' results, answered when their tick ends.
    applied: Vec<(SessionId, ActionResult)>,
    channels: HashMap<ChannelId, channels::ChannelLog>,
    outputs: VecDeque<Output>,
    staged: Vec<Emitted>,
    stats: EngineStats,
    feed: bool,
    life: Option<Lifecycle>,
    /// The zone this engine runs, for a zoned world.
    zone: Option<Box<zones::ZoneState>>,
    /// A zone's mirrors, sent and held (presentation, not state).
    border: Option<Box<border::Border>>,
    /// The action being applied waits for another zone's answer.
    waiting: bool,
}

impl<W: World> std::fmt::Debug for Engine<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("world", &self.world.name())
            .field("tick", &self.tick)
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl<W: World> Engine<W> {
    /// An engine for `world`, signing batches with `signer`, starting at `now_us`.
    pub fn new(world: W, grid: Grid, cfg: EngineConfig, signer: ChainSigner, now_us: u64) -> Self {
        let validators = world.validators();
        Self {
            world,
            validators,
            signer,
            grid,
            interest: Interest::new(grid),
            detector: Detector::new(cfg.detector),
            cfg,
            tick: 0,
            next_tick_us: now_us + cfg.tick_us(),
            sessions: HashMap::default(),
            banned: HashSet::new(),
            endowment: None,
            accepted: 0,
            applied: Vec::new(),
            channels: HashMap::default(),
            outputs: VecDeque::new(),
            staged: Vec::new(),
            stats: EngineStats::default(),
            feed: false,
            life: cfg.lifecycle.map(Lifecycle::new),
            zone: None,
            border: None,
            waiting: false,
        }
    }

    /// The world (read-only).
    pub fn world(&self) -> &W {
        &self.world
    }

    /// The world, mutably: for scenario set-up outside the action path (not for
    /// game traffic, which must go through [`handle_action`](Self::handle_action)).
    pub fn world_mut(&mut self) -> &mut W {
        &mut self.world
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The current tick (ticks completed).
    pub fn tick(&self) -> u64 {
        self.tick
    }

    /// Counters.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// A session's avatar.
    pub fn avatar(&self, session: SessionId) -> Option<EntityId> {
        self.sessions.get(&session).and_then(|s| s.avatar)
    }

    /// The channels a session receives.
    pub fn channels_of(&self, session: SessionId) -> Vec<ChannelId> {
        let Some(s) = self
            .sessions
            .get(&session)
            .filter(|s| s.role == Role::Player)
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        // A zone other than the home writes no world or team channel.
        if self.writes_channel(ChannelId::World) {
            out.push(ChannelId::World);
            if let Some(t) = s.team {
                out.push(ChannelId::Team(t));
            }
        }
        if let Some(a) = s.avatar {
            out.extend(self.interest.cells(a));
        }
        out
    }

    /// When the next tick is due (microseconds, the shell's clock).
    pub fn poll_timeout(&self) -> u64 {
        self.next_tick_us
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    fn subscribe(&mut self, session: SessionId, added: Vec<ChannelId>, removed: Vec<ChannelId>) {
        for c in &added {
            self.channels.entry(*c).or_default().subscribers += 1;
        }
        for c in &removed {
            if let Some(log) = self.channels.get_mut(c) {
                log.subscribers = log.subscribers.saturating_sub(1);
            }
        }
        if !added.is_empty() || !removed.is_empty() {
            let added = added
                .into_iter()
                .map(|channel| ChannelCursor {
                    channel,
                    seq: self.channel_seq(channel),
                })
                .collect();
            self.outputs.push_back(Output::Subscriptions {
                session,
                added,
                removed,
            });
        }
    }

    /// The next join of `player` brings `wallet` (from the origin's ledger)
    /// instead of a new player's grant. Journaled and replicated as an input,
    /// right before the join.
    pub fn handle_endow(&mut self, player: &str, wallet: crate::ledger::Wallet) {
        self.endowment = Some((player.to_owned(), wallet));
    }

    /// A session joins. Players get an avatar and their channels; spectators get
    /// no channel at all: what they see is the public spectator feed, delayed and
    /// filtered by their relay, never a live channel.
    pub fn handle_join(
        &mut self,
        session: SessionId,
        player: &str,
        role: Role,
        team: Option<TeamId>,
    ) -> Result<Option<EntityId>, JoinError> {
        let wallet = self
            .endowment
            .take()
            .filter(|(p, _)| p == player)
            .map(|(_, w)| w);
        // (A session away from the home zone is still there: moved first.)
        if let Some(to) = self.moved_to(session) {
            return Err(JoinError::Moved(to));
        }
        if self.sessions.contains_key(&session) {
            return Err(JoinError::Duplicate(session));
        }
        if self.banned.contains(player) {
            return Err(JoinError::Banned(player.to_owned()));
        }
        if let Some(life) = &self.life {
            let admitted = if role == Role::Player {
                life.admit(self.players())
            } else if life.phase() == WorldPhase::Ended {
                Err(Closed::Ended)
            } else {
                Ok(())
            };
            match admitted {
                Ok(()) => {}
                Err(Closed::Full) => return Err(JoinError::Full),
                Err(Closed::Ended) => return Err(JoinError::Ended),
            }
        }
        let mut emit = Emit::default();
        let avatar = (role == Role::Player).then(|| {
            self.world
                .join_with(player, team, self.tick, &mut emit, wallet)
        });
        let team = avatar.and_then(|a| self.world.team(a)).or(team);
        self.stage(emit);
        self.sessions.insert(
            session,
            SessionState {
                player: player.to_owned(),
                avatar,
                role,
                team,
                seen: ReplayWindow::new(REPLAY_WINDOW),
                last_move: 0,
            },
        );
        self.detector.handle_join(session, player);
        if role != Role::Player {
            return Ok(None);
        }
        if let Some(life) = &mut self.life {
            life.handle_joined();
            // A room's players see its head count change (a lobby's "1/2").
            self.outputs.push_back(Output::Phase(self.world_state()));
        }
        let mut added = vec![ChannelId::World];
        if let Some(t) = team {
            added.push(ChannelId::Team(t));
        }
        if let Some(a) = avatar {
            if let Some((x, y)) = self.world.position(a) {
                if let Some(change) = self.interest.handle_move(a, x, y) {
                    added.extend(change.added);
                }
            }
        }
        self.subscribe(session, added, Vec::new());
        Ok(avatar)
    }

    /// A session leaves for good.
    pub fn handle_leave(&mut self, session: SessionId) {
        let removed = self.channels_of(session);
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
        if let Some(a) = s.avatar {
            let mut emit = Emit::default();
            self.world.leave(a, self.tick, &mut emit);
            self.stage(emit);
            self.interest.handle_leave(a);
        }
        self.detector.handle_leave(session);
        self.subscribe(session, Vec::new(), removed);
        if self.life.is_some() && s.role == Role::Player {
            self.outputs.push_back(Output::Phase(self.world_state()));
        }
    }

    /// Applies an action into the tick being built (arrival order is application
    /// order). A conflict or a rejection is output at once; an applied action's
    /// result when the tick ends.
    pub fn handle_action(&mut self, session: SessionId, action: Action) {
        self.detector.handle_action(session);
        let seq = action.seq;
        if self.accepted >= self.cfg.max_queue {
            self.stats.overflowed += 1;
            self.stats.rejected += 1;
            self.outputs.push_back(Output::Result {
                session,
                result: ActionResult {
                    seq,
                    outcome: Outcome::Rejected {
                        code: RejectCode::RateLimited,
                        detail: "world tick full".into(),
                    },
                },
            });
            return;
        }
        if self.phase() != WorldPhase::Playing {
            self.stats.rejected += 1;
            self.outputs.push_back(Output::Result {
                session,
                result: ActionResult {
                    seq,
                    outcome: Outcome::Rejected {
                        code: RejectCode::NotPlaying,
                        detail: format!("the world is {:?}", self.phase()).to_lowercase(),
                    },
                },
            });
            return;
        }
        self.accepted += 1;
        let mut staged = std::mem::take(&mut self.staged);
        let outcome = self.process(session, action, &mut staged);
        self.staged = staged;
        if std::mem::take(&mut self.waiting) {
            // Its outcome is another zone's answer (`answer_action`).
            return;
        }
        let result = ActionResult { seq, outcome };
        match &result.outcome {
            Outcome::Applied { .. } => {
                self.stats.applied += 1;
                self.applied.push((session, result));
                return;
            }
            Outcome::Conflict { .. } => self.stats.conflicts += 1,
            Outcome::Rejected { .. } => self.stats.rejected += 1,
            // Only relays answer this way.
            Outcome::Unknown { .. } => {}
        }
        self.outputs.push_back(Output::Result { session, result });
    }

    /// Runs every tick due at `now_us`.
    pub fn handle_timeout(&mut self, now_us: u64) {
        while now_us >= self.next_tick_us {
            let at = self.next_tick_us;
            self.run_tick(at);
            self.next_tick_us += self.cfg.tick_us();
        }
    }

    /// Schedules the next tick one tick after `now_us` (after a restart, so the
    /// world does not try to catch up on the time it was down).
    pub fn rebase(&mut self, now_us: u64) {
        self.next_tick_us = now_us + self.cfg.tick_us();
    }

    /// Runs exactly the next tick at `at_us` (replays feed logged tick times).
    pub fn run_tick_at(&mut self, at_us: u64) {
        self.run_tick(at_us);
        self.next_tick_us = at_us + self.cfg.tick_us();
    }

    /// Runs one tick now, whatever the time (tests).
    pub fn run_tick(&mut self, now_us: u64) {
        self.tick += 1;
        self.stats.ticks += 1;
        self.tick_hook();
        let pending: Vec<Emitted> = std::mem::take(&mut self.staged);
        self.accepted = 0;
        for (session, result) in std::mem::take(&mut self.applied) {
            self.outputs.push_back(Output::Result { session, result });
        }
        let mut pending = pending;
        self.forward_events(&mut pending);
        self.note_moves(&pending);
        self.publish(pending, now_us);
        let txs = self.world.take_ledger();
        if !txs.is_empty() {
            let world = self.cfg.world.0;
            let txs = txs
                .into_iter()
                .map(|mut t| {
                    if !t.id.starts_with("grant:") {
                        t.id = format!("{world}:{}", t.id);
                    }
                    t
                })
                .collect();
            self.outputs.push_back(Output::Ledger {
                tick: self.tick,
                txs,
            });
        }
        if self.cfg.keyframe_every > 0 && self.tick % self.cfg.keyframe_every == 0 {
            self.keyframes();
            if self.feed {
                self.feed_keyframe(now_us);
            }
        }
        if self.tick % u64::from(self.cfg.tick_hz.max(1)) == 0 {
            let found = self.detector.evaluate(self.tick, 1.0);
            for v in found {
                self.enforce(v);
            }
        }
        self.crossings();
        self.border_tick(now_us);
    }

    fn enforce(&mut self, v: Violation) {
        self.stats.violations += 1;
        let session = v.session;
        let reason = format!("{:?}: {}", v.kind, v.evidence);
        let enforcement = v.enforcement;
        let player = v.player.clone();
        self.outputs.push_back(Output::Violation(v));
        let kind = match enforcement {
            Enforcement::Flag => return,
            Enforcement::Kick => skylane_proto::SanctionKind::Kick,
            Enforcement::Ban => {
                self.banned.insert(player.clone());
                skylane_proto::SanctionKind::Ban
            }
        };
        let secs = self.cfg.detector.policy.sanction_secs(enforcement);
        self.outputs.push_back(Output::Kick {
            session,
            player,
            reason,
            sanction: secs.map(|s| (kind, s)),
        });
        self.handle_leave(session);
    }

    fn reject(code: RejectCode, detail: impl Into<String>) -> Outcome {
        Outcome::Rejected {
            code,
            detail: detail.into(),
        }
    }

    fn process(
        &mut self,
        session: SessionId,
        action: Action,
        pending: &mut Vec<Emitted>,
    ) -> Outcome {
        let seq = action.seq;
        let moved = self.moved_to(session).is_some();
        let Some(s) = self.sessions.get_mut(&session) else {
            if moved {
                return Self::reject(
                    RejectCode::Moved,
                    "the avatar moved to another zone: the action goes there",
                );
            }
            return Self::reject(RejectCode::Forbidden, "unknown session");
        };
        let (Role::Player, Some(avatar)) = (s.role, s.avatar) else {
            if s.role == Role::Player && moved {
                // Away from the home zone: its avatar is in another.
                return Self::reject(
                    RejectCode::Moved,
                    "the avatar moved to another zone: the action goes there",
                );
            }
            return Self::reject(
                RejectCode::Forbidden,
                format!("{} sessions cannot act", s.role),
            );
        };
        if self
            .zone
            .as_ref()
            .is_some_and(|z| z.leaving.contains_key(&avatar))
        {
            return Self::reject(
                RejectCode::Moved,
                "the avatar is moving to another zone: the action goes there",
            );
        }
        if !s.seen.is_new(action.seq) {
            return Self::reject(
                RejectCode::Replayed,
                format!(
                    "sequence {} already used or too old (highest {})",
                    action.seq,
                    s.seen.highest()
                ),
            );
        }
        s.seen.accept(action.seq);
        if action.class == EventClass::Movement {
            if action.seq < s.last_move {
                return Self::reject(
                    RejectCode::Superseded,
                    format!("move {} arrived after move {}", action.seq, s.last_move),
                );
            }
            s.last_move = action.seq;
        }
        if action.payload.len() > self.cfg.max_payload {
            return Self::reject(
                RejectCode::TooLarge,
                format!("{} bytes > {}", action.payload.len(), self.cfg.max_payload),
            );
        }
        let decoded = match self.world.decode_action(action.class, &action.payload) {
            Ok(a) => a,
            Err(r) => return Self::reject(r.code, r.detail),
        };
        // Optimistic concurrency: every read must still be current.
        if action
            .reads
            .iter()
            .any(|r| self.world.version(r.entity) != Some(r.version))
        {
            let current = action
                .reads
                .iter()
                .map(|r| EntityVersion {
                    entity: r.entity,
                    version: self.world.version(r.entity).unwrap_or(0),
                })
                .collect();
            let ids: Vec<EntityId> = action.reads.iter().map(|r| r.entity).collect();
            return Outcome::Conflict {
                current,
                state: self.world.describe(&ids),
            };
        }
        // The action belongs to the tick being built.
        let tick = self.tick + 1;
        let ctx = Ctx {
            tick,
            tick_hz: self.cfg.tick_hz,
            avatar,
            client_time_us: action.client_time_us,
        };
        for (_, validate) in &self.validators {
            if let Err(Rejection {
                code,
                detail,
                benign,
            }) = validate(&self.world, &ctx, &decoded)
            {
                if benign {
                    return Outcome::Rejected { code, detail };
                }
                let found = self.detector.rule_violation(
                    session,
                    tick,
                    code,
                    format!("{code:?}: {detail}"),
                );
                let kicked = found
                    .as_ref()
                    .is_some_and(|v| v.enforcement != Enforcement::Flag);
                if let Some(v) = found {
                    self.enforce(v);
                }
                if kicked {
                    return Self::reject(RejectCode::Forbidden, "kicked for rule violations");
                }
                return Outcome::Rejected { code, detail };
            }
        }
        let mut emit = Emit::default();
        let obs = self.world.apply(&ctx, &decoded, &mut emit);
        if obs.attack {
            self.detector
                .handle_attack(session, obs.hit, obs.reaction_us);
        }
        self.stats.moves_refused += emit.refused_moves;
        pending.append(&mut emit.events);
        let remote = std::mem::take(&mut emit.remote);
        if !remote.is_empty() {
            if let Some(o) = self.route_remote(remote, tick, pending, (session, seq)) {
                return o;
            }
        }
        if let Some((x, y)) = self.world.position(avatar) {
            if let Some(change) = self.interest.handle_move(avatar, x, y) {
                self.subscribe(session, change.added, change.removed);
            }
        }
        Outcome::Applied { tick }
    }

    /// Events emitted outside a tick's action processing (joins, leaves) wait for the
    /// next tick's batches.
    fn stage(&mut self, emit: Emit) {
        self.stats.moves_refused += emit.refused_moves;
        self.staged.extend(emit.events);
    }
}
