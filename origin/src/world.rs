//! The contract between the engine and a game: the [`World`] trait.
//!
//! A game implements `World` with its rules; the [`crate::Engine`] does everything
//! else: ordering, replay protection, optimistic concurrency, running the
//! registered validators, event sequencing and signing, interest management.
//!
//! A world is pure: no I/O, no clock (the tick and times come in [`Ctx`]), no
//! randomness except what it derives from its state, so a replay of the same
//! actions gives the same state hash.

use std::fmt;

use skylane_proto::{
    ChannelId, EntityId, EventClass, Hash32, Payload, RejectCode, TeamId, WorldPhase, WorldResult,
};

/// Why a game refused an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Machine-readable cause.
    pub code: RejectCode,
    /// Human-readable detail (recorded as evidence, sent to the client).
    pub detail: String,
    /// Not a rule broken, an answer (an offer that closed meanwhile, an
    /// accept already applied): not recorded as a violation.
    pub benign: bool,
}

impl Rejection {
    /// A rejection with `code` and `detail`: a rule broken, recorded as a
    /// violation.
    pub fn new(code: RejectCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            benign: false,
        }
    }

    /// A refusal that breaks no rule (the state moved on: an offer closed, an
    /// accept already applied): answered, never recorded as a violation.
    pub fn benign(code: RejectCode, detail: impl Into<String>) -> Self {
        Self {
            benign: true,
            ..Self::new(code, detail)
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.detail)
    }
}

/// Who acts, and when.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ctx {
    /// The world tick being computed.
    pub tick: u64,
    /// Ticks per second of the world.
    pub tick_hz: u32,
    /// The acting player's avatar entity.
    pub avatar: EntityId,
    /// The action's client timestamp (microseconds, client clock).
    pub client_time_us: u64,
}

/// What the tick hook sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickCtx {
    /// The tick being completed.
    pub tick: u64,
    /// Ticks per second of the world.
    pub tick_hz: u32,
    /// The world's phase (always `Playing` for a world without a lifecycle).
    pub phase: WorldPhase,
}

/// One event a world emits while applying an action.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Emitted {
    /// Channel it goes to.
    pub channel: ChannelId,
    /// Class.
    pub class: EventClass,
    /// Entity it is about.
    pub entity: Option<EntityId>,
    /// Game-encoded body.
    pub payload: Payload,
    /// `Some` (where the entity is) for a movement *state* ([`Emit::moved`]):
    /// latest-wins, sent as a signed movement frame, never chained.
    pub pos: Option<(f32, f32)>,
}

/// An entity's movement state larger than [`skylane_proto::MAX_MOVE_STATE`]:
/// it could never fit a movement datagram, so the origin refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("movement state of {size} bytes for entity {entity} is over {max}", max = skylane_proto::MAX_MOVE_STATE)]
pub struct MoveTooLarge {
    /// The entity.
    pub entity: EntityId,
    /// Its state's size.
    pub size: usize,
}

/// Zones: something an action does to what another zone holds (see
/// [`Emit::remote`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteOp {
    /// The other zone's entity it is for ([`Emit::remote_entity`]), if any:
    /// the zone across the border the actor stands by gets it, and the
    /// action's outcome is the answer's.
    pub entity: Option<EntityId>,
    /// Where it lands.
    pub point: (f32, f32),
    /// How far from `point` what it touches may stand: when `point` lies in
    /// this zone, a neighbour within this (plus the handoff hysteresis: its
    /// avatars may stand this side of the border) is asked.
    pub radius: f32,
    /// The game's encoding (at most [`skylane_proto::zones::MAX_REQUEST`]).
    pub op: Payload,
}

/// Collects the events a world emits.
#[derive(Debug, Default)]
pub struct Emit {
    pub(crate) events: Vec<Emitted>,
    /// Movement states refused as too large (the engine counts them).
    pub(crate) refused_moves: u64,
    /// Cross-zone requests of the action being applied.
    pub(crate) remote: Vec<RemoteOp>,
}

impl Emit {
    /// Emits an event.
    pub fn push(
        &mut self,
        channel: ChannelId,
        class: EventClass,
        entity: Option<EntityId>,
        payload: impl Into<Payload>,
    ) {
        self.events.push(Emitted {
            channel,
            class,
            entity,
            payload: payload.into(),
            pos: None,
        });
    }

    /// Emits an entity's movement **state** on a cell channel: where it is
    /// (`pos`, for nearest-first delivery) and the game's encoding of it
    /// (position, velocity...). Not an event: relays keep only the newest
    /// state per entity and send it to each client unreliably, superseding a
    /// lost one with the next (see `skylane_proto::movement`); a second state
    /// of the same entity in one tick replaces the first. A state larger than
    /// [`skylane_proto::MAX_MOVE_STATE`] is refused.
    pub fn moved(
        &mut self,
        channel: ChannelId,
        entity: EntityId,
        pos: (f32, f32),
        payload: impl Into<Payload>,
    ) -> Result<(), MoveTooLarge> {
        let payload = payload.into();
        if payload.len() > skylane_proto::MAX_MOVE_STATE {
            self.refused_moves += 1;
            return Err(MoveTooLarge {
                entity,
                size: payload.len(),
            });
        }
        self.events.push(Emitted {
            channel,
            class: EventClass::Movement,
            entity: Some(entity),
            payload,
            pos: Some(pos),
        });
        Ok(())
    }

    /// Zones: asks the zone that owns what lies at `point` (within
    /// `radius`) to apply `op` ([`World::apply_remote`] there), once, and
    /// tells this world what came of it ([`World::remote_answered`]) when
    /// the answer is back. Only an action's requests are sent (from
    /// [`World::apply`]); in an unzoned world, or with nowhere to send it,
    /// the answer is `None` at once. An `op` over
    /// [`skylane_proto::zones::MAX_REQUEST`] is answered `None` too.
    pub fn remote(&mut self, point: (f32, f32), radius: f32, op: impl Into<Payload>) {
        self.remote.push(RemoteOp {
            entity: None,
            point,
            radius,
            op: op.into(),
        });
    }

    /// Zones: asks the zone across the border the acting player stands by
    /// (the neighbour nearest its avatar, within the mirror margin) to
    /// apply `op` to `entity`, once; **the action's outcome waits for the
    /// answer** and is what [`World::remote_answered`] says (applied, or a
    /// refusal: the game undoes its side). With no neighbour that near (or
    /// too many requests unanswered) it is answered `None` at once. Routing
    /// reads only replicated state, so a standby makes the same request.
    /// At most one per action.
    pub fn remote_entity(&mut self, entity: EntityId, op: impl Into<Payload>) {
        self.remote.push(RemoteOp {
            entity: Some(entity),
            point: (0.0, 0.0),
            radius: 0.0,
            op: op.into(),
        });
    }

    /// The events emitted so far.
    pub fn events(&self) -> &[Emitted] {
        &self.events
    }
}

/// What the anomaly detector learns from one applied action.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Observation {
    /// The action was an attack.
    pub attack: bool,
    /// The attack hit.
    pub hit: bool,
    /// Time from the target becoming visible (in range) to the attack, if the game
    /// tracks it (microseconds).
    pub reaction_us: Option<u64>,
}

/// A rule check registered on a world (speed, cooldown, range, ownership...).
pub type Validator<W> = fn(&W, &Ctx, &<W as World>::Action) -> Result<(), Rejection>;

/// A game's rules.
pub trait World: Send + 'static {
    /// A decoded action.
    type Action: fmt::Debug + Send;

    /// The world's name (logs, metrics).
    fn name(&self) -> &str;

    /// Decodes an action's payload, or refuses it as malformed.
    fn decode_action(&self, class: EventClass, payload: &[u8]) -> Result<Self::Action, Rejection>;

    /// The rule validators the engine runs before applying an action, with names for
    /// metrics. Each must be cheap and must not mutate.
    fn validators(&self) -> Vec<(&'static str, Validator<Self>)>
    where
        Self: Sized;

    /// Current version of an entity; `None` if it does not exist.
    fn version(&self, entity: EntityId) -> Option<u64>;

    /// Creates the avatar of a joining player and returns its entity.
    fn join(&mut self, player: &str, team: Option<TeamId>, tick: u64, out: &mut Emit) -> EntityId;

    /// Removes a player's avatar.
    fn leave(&mut self, avatar: EntityId, tick: u64, out: &mut Emit);

    /// Adds a player who brings `wallet` from the origin's ledger (coins and
    /// items it held when it last left a world): the world starts it with that
    /// instead of a new player's grant. The default ignores the wallet (a
    /// game without an economy).
    fn join_with(
        &mut self,
        player: &str,
        team: Option<TeamId>,
        tick: u64,
        out: &mut Emit,
        wallet: Option<crate::ledger::Wallet>,
    ) -> EntityId {
        let _ = wallet;
        self.join(player, team, tick, out)
    }

    /// The economy's transactions since the last call (grants, pick-ups,
    /// trades), for the origin's ledger; the engine drains them every tick.
    /// Not part of the state: deterministic like the rest, but never
    /// snapshotted. The default has none.
    fn take_ledger(&mut self) -> Vec<crate::ledger::LedgerTx> {
        Vec::new()
    }

    /// Applies a validated action whose reads are current. Must bump the version of
    /// every entity it changes.
    fn apply(&mut self, ctx: &Ctx, action: &Self::Action, out: &mut Emit) -> Observation;

    /// Encodes the current state of `entities`, sent with a conflict so the client
    /// can reconcile.
    fn describe(&self, entities: &[EntityId]) -> Payload;

    /// Position of an entity on the map, for interest management.
    fn position(&self, entity: EntityId) -> Option<(f32, f32)>;

    /// Team of an entity.
    fn team(&self, entity: EntityId) -> Option<TeamId>;

    /// The full state of a channel, for keyframes.
    fn channel_state(&self, channel: ChannelId, grid: &crate::interest::Grid) -> Payload;

    /// What spectators may see of an emitted event: `Some(payload)` publishes it on
    /// the world's spectator feed (the game may return a redacted payload), `None`
    /// keeps it private. The default keeps team channels private (a team's hidden
    /// state, plans and pings) and publishes everything else unchanged.
    fn spectator_event(&self, event: &Emitted) -> Option<Payload> {
        match event.channel {
            ChannelId::Team(_) => None,
            ChannelId::World | ChannelId::Cell { .. } => Some(event.payload.clone()),
        }
    }

    /// The public state spectators start from: one game-encoded entry per entity
    /// (the engine tags each with the entity's team and position so relays can
    /// filter). The default is empty: spectators then see only events.
    fn spectator_keyframe(&self) -> Vec<(EntityId, Payload)> {
        Vec::new()
    }

    /// Called once per tick, after the tick's actions and before its events are
    /// published: timers, server-side characters, physics steps, win conditions.
    /// Deterministic like the rest (replays run it too). The default does nothing.
    fn on_tick(&mut self, ctx: &TickCtx, out: &mut Emit) {
        let _ = (ctx, out);
    }

    /// Called once when a room starts playing (full, or the start timer ran out),
    /// before that tick's [`World::on_tick`]. The default does nothing.
    fn on_start(&mut self, ctx: &TickCtx, out: &mut Emit) {
        let _ = (ctx, out);
    }

    /// The game's verdict: `Some` once the game is over (a winner, a draw). The
    /// engine ends the room at the end of the tick that first returns it. The
    /// default never ends.
    fn result(&self) -> Option<WorldResult> {
        None
    }

    /// A hash of the whole state (replays compare it tick by tick).
    fn state_hash(&self) -> Hash32;

    /// Zones: confines a new world to one zone of a zoned world, the grid
    /// cells `cells`. It drops what lies outside the zone (`keep(x, y)` is
    /// false there: that zone's own copy of the world holds it), makes new
    /// entity ids from `id_base` on, so ids stay unique across the world's
    /// zones, and from now on puts its cell events on the zone's cells only
    /// (a [`Grid`](crate::interest::Grid) whose `clip` is `cells`: an avatar past the border, not
    /// yet handed over, is reported on the nearest of them), so every cell
    /// channel has one writer. The default refuses: a game that cannot be
    /// split runs unzoned.
    fn enter_zone(
        &mut self,
        cells: &skylane_proto::zones::ZoneRect,
        keep: &dyn Fn(f32, f32) -> bool,
        id_base: u64,
    ) -> Result<(), String> {
        let _ = (cells, keep, id_base);
        Err(format!("{} cannot be split into zones", self.name()))
    }

    /// Zones: an entity's whole state as it leaves for another zone at
    /// this zone's `tick` (whatever goes with it, such as the items an avatar
    /// holds; times kept in ticks should travel relative to `tick`, since
    /// each zone counts its own). `None`: it cannot leave now (the handoff is
    /// retried next tick). The default never lets an entity leave.
    fn export_entity(&self, entity: EntityId, tick: u64) -> Option<Payload> {
        let _ = (entity, tick);
        None
    }

    /// Zones: whether [`World::import_entity`] would take this state (the
    /// same checks, without the change): a handoff is only admitted, and
    /// journaled, when it would. The default refuses.
    fn check_import(&self, entity: EntityId, state: &[u8]) -> Result<(), String> {
        let _ = (entity, state);
        Err(format!("{} cannot be split into zones", self.name()))
    }

    /// Zones: adds an entity exported by another zone of the same world
    /// ([`World::export_entity`]) at this zone's `tick`. Must refuse (never
    /// half-apply) state it cannot take: a refusal sends the entity back to
    /// its zone. Emits what the zone's players need to see of it.
    fn import_entity(
        &mut self,
        entity: EntityId,
        state: &[u8],
        tick: u64,
        out: &mut Emit,
    ) -> Result<(), String> {
        let _ = (entity, state, tick, out);
        Err(format!("{} cannot be split into zones", self.name()))
    }

    /// Zones: applies another zone's request ([`Emit::remote`] there) to
    /// this zone's world at `tick`, and says what came of it (sent back to
    /// the asking zone's [`World::remote_answered`]). Applied once per
    /// request, journaled, replayed like an action. The default does nothing.
    fn apply_remote(
        &mut self,
        from: skylane_proto::zones::ZoneIdx,
        op: &[u8],
        tick: u64,
        out: &mut Emit,
    ) -> Payload {
        let _ = (from, op, tick, out);
        Payload::default()
    }

    /// Zones: what came of a request of this zone's ([`Emit::remote`]):
    /// the owning zone's answer, or `None` when no zone took it (nothing
    /// there, or too many requests unanswered). Called once per request.
    /// For a request made with [`Emit::remote_entity`], the result is the
    /// action's outcome (`Err`: refused, say why); otherwise it is unused.
    fn remote_answered(
        &mut self,
        op: &[u8],
        answer: Option<&[u8]>,
        tick: u64,
        out: &mut Emit,
    ) -> Result<(), Rejection> {
        let _ = (op, answer, tick, out);
        Ok(())
    }

    /// Zones: removes an entity that is leaving for another zone (its state
    /// travels; nothing is dropped and nobody "left" the world).
    fn remove_entity(&mut self, entity: EntityId) {
        let _ = entity;
    }

    /// Entities whose state differs between `self` and `other` (a replay names them
    /// when it finds a divergence).
    fn diff(&self, other: &Self) -> Vec<EntityId>
    where
        Self: Sized;
}
