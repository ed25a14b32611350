//! A zoned world's side of the engine: one engine runs one zone of the
//! world, finds the avatars that crossed its border, and applies the
//! handoff records ([`ZoneRecord`]) that move entities in and out.
//!
//! The records, not the handoff messages, change the world (so a replay of
//! the input log, a restart or a standby rebuilds the same zone):
//! * `Out`: the entity leaves the world here (its exported state travels in
//!   the record); its player's session stays, and its actions are answered
//!   [`skylane_proto::RejectCode::Moved`] (nothing applied: the relay sends them on to the
//!   new zone, where the session's replay window, carried along, accepts
//!   each once).
//! * `Commit`: the session leaves this zone ([`Output::SessionMoved`]); no
//!   one "left" the world.
//! * `Abort`: the entity comes back here, as it left.
//! * `In`: the entity joins this zone's world, with its player's session
//!   (channels, replay window) if it is an avatar.
//!
//! Only avatars cross borders (the arena's items lie still or travel held).
//! A crossing is reported with hysteresis ([`ZoneLayout::crossing`]) once
//! per tick until the shell starts the handoff.
//!
//! Cross-zone requests (an action that touches what another zone owns, such
//! as a shot across the border: [`Emit::remote`]) are engine state, made
//! deterministically by the action that asks (so a standby re-executing it
//! holds the same request) and sent once its tick is durable
//! ([`Output::ToZone`]); the owner journals `Served` (applied once through
//! [`World::apply_remote`]; a repeated id is answered from the record), the
//! asker journals `Answered` ([`World::remote_answered`], once). The shell
//! re-sends what is unanswered.
//!
//! Border mirrors ([`Border`]) are presentation, not state: every tick the
//! zone sends each neighbour the newest movement state of its entities
//! within the mirror margin of that neighbour ([`Output::ToZone`]), and a
//! neighbour's copies ([`Engine::handle_mirrors`]) are shown to this zone's
//! players as movement on the zone's own cell nearest to them (one writer per
//! cell; movement frames are not chained, so a standby that never saw a copy
//! continues every channel exactly). Copies are never applied to the world
//! and never journaled; after a restart the neighbours' next refresh fills
//! them in.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use skylane_proto::zones::{
    EntityTransfer, RequestId, RequestKind, ZoneIdx, ZoneLayout, ZoneMsg, ZoneRecord, MAX_FORWARD,
    MAX_REQUEST,
};
use skylane_proto::{
    ActionResult, ChannelId, EntityId, EventClass, FeedEvent, Outcome, Payload, SessionId,
};

use crate::world::{Emit, Emitted, RemoteOp, World};
use crate::zone::{HandoffLedger, MirrorError, MirrorIn, MirrorOut};

use super::{Engine, Output, SessionState};

/// Which zone of which layout an engine runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneSetup {
    /// The world's zones.
    pub layout: ZoneLayout,
    /// This engine's zone.
    pub zone: ZoneIdx,
    /// How far past its zone's border an avatar goes before it is handed
    /// over (map units), so walking along a border never bounces it.
    pub hysteresis: f32,
    /// How near a border an entity is mirrored to the neighbour (map units).
    pub margin: f32,
}

impl ZoneSetup {
    /// The first entity id zone `zone` makes (ids are unique across zones:
    /// each has its own 2^48 range).
    pub fn id_base(zone: ZoneIdx) -> u64 {
        (u64::from(zone.0) + 1) << 48
    }
}

/// A zone's engine state: the setup, and the entities out and unanswered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct ZoneState {
    pub(super) setup: ZoneSetup,
    /// Entities out (removed from the world), by entity: their transfer, to
    /// bring them back on an abort.
    pub(super) leaving: BTreeMap<EntityId, EntityTransfer>,
    /// What the records applied so far add up to: what the zone's handoff
    /// core recovers from after a restart.
    pub(super) ledger: HandoffLedger,
    /// Sessions committed to another zone, with the zone and the tick (at
    /// most `MAX_MOVED`, the oldest forgotten first): a resume or an
    /// action that reaches this zone late is sent after its avatar, never
    /// given a second one here.
    pub(super) moved: BTreeMap<SessionId, (ZoneIdx, u64)>,
    /// This zone's requests awaiting their answer (at most `MAX_ASKED`).
    pub(super) asked: BTreeMap<RequestId, Asked>,
    /// The next request sequence number towards each zone.
    pub(super) next_ask: BTreeMap<ZoneIdx, u64>,
    /// Requests applied here, with their answers, until the asker's
    /// watermark passes them (at most `MAX_SERVED`).
    pub(super) served: BTreeMap<RequestId, Payload>,
    /// Each asker's watermark: its ids below were answered and are forgotten.
    pub(super) served_low: BTreeMap<ZoneIdx, u64>,
}

/// A request of this zone's awaiting its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Asked {
    kind: RequestKind,
    op: Payload,
    /// The tick that made it (re-sent once that tick is durable).
    tick: u64,
    /// The action whose outcome is the answer's: session and sequence.
    answers: Option<(SessionId, u64)>,
}

/// A zone's requests unanswered at once, at most (beyond, a request is
/// answered `None` at once: the game treats it like a miss).
pub(super) const MAX_ASKED: usize = 4_096;

/// Answers a zone remembers, at most (beyond, the oldest are forgotten: an
/// asker re-sending one of those after so many later requests gets nothing).
pub(super) const MAX_SERVED: usize = 65_536;

/// What a zone knows of another zone's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// Applied here: its answer.
    Answer(Payload),
    /// Below the asker's watermark: it has its answer (a stale copy).
    Forgotten,
    /// Not seen: to journal and apply.
    New,
}

/// Sessions a zone remembers as moved away, at most (beyond, the oldest
/// quarter is forgotten; a session detached longer than a relay's grace is
/// gone anyway).
pub(super) const MAX_MOVED: usize = 65_536;

/// Copies of other zones' entities a zone holds, at most.
pub(super) const MAX_MIRRORS: usize = 8_192;

/// Every mirror is sent again this many seconds apart (a lost message is
/// made good; a copy not refreshed within three is dropped).
pub(super) const MIRROR_REFRESH_SECS: u64 = 2;

/// A zone's border: what it mirrors to its neighbours and the copies of
/// theirs it shows (see the module header). Not part of the engine's state.
#[derive(Debug)]
pub(super) struct Border {
    out: MirrorOut,
    held: MirrorIn,
    /// This zone's entities' newest movement state (what neighbours show).
    moves: HashMap<EntityId, ((f32, f32), Payload)>,
    /// At the home zone: other zones' feed events waiting for the next feed
    /// frame (at most `MAX_FEED_PARTS`), and each zone's last feed keyframe.
    parts: Vec<FeedEvent>,
    part_keys: BTreeMap<ZoneIdx, Vec<FeedEvent>>,
}

/// Other zones' feed events the home zone holds for its next frame, at most
/// (beyond, they are dropped and counted: the home's feed is slow).
pub(super) const MAX_FEED_PARTS: usize = 65_536;

impl Border {
    pub(super) fn new(world: skylane_proto::WorldId, setup: &ZoneSetup, tick_hz: u32) -> Self {
        let refresh = MIRROR_REFRESH_SECS * u64::from(tick_hz.max(1));
        Self {
            out: MirrorOut::new(world, setup.zone, setup.margin, refresh),
            held: MirrorIn::new(world, setup.zone, MAX_MIRRORS, 3 * refresh),
            moves: HashMap::new(),
            parts: Vec::new(),
            part_keys: BTreeMap::new(),
        }
    }
}

/// A player's session as it travels with its avatar.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CarriedSession {
    id: SessionId,
    state: SessionState,
}

/// Why an engine cannot run a zone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneSetupError {
    /// The zone is not in the layout.
    #[error("{0} is not in the layout")]
    NoSuchZone(ZoneIdx),
    /// The game refused (it cannot be split, or the world has players).
    #[error("{0}")]
    Refused(String),
}

impl<W: World> Engine<W> {
    /// Makes this new engine one zone of a zoned world: the world keeps what
    /// lies in the zone, and its new entities get this zone's ids.
    pub fn enter_zone(&mut self, setup: ZoneSetup) -> Result<(), ZoneSetupError> {
        if setup.layout.rect(setup.zone).is_none() {
            return Err(ZoneSetupError::NoSuchZone(setup.zone));
        }
        let (layout, me) = (&setup.layout, setup.zone);
        let Some(cells) = layout.rect(me).copied() else {
            return Err(ZoneSetupError::NoSuchZone(me));
        };
        self.world
            .enter_zone(
                &cells,
                &|x, y| layout.zone_at(x, y) == me,
                ZoneSetup::id_base(me),
            )
            .map_err(ZoneSetupError::Refused)?;
        // Sessions receive this zone's cells only (one writer per cell).
        self.grid.clip = Some(cells);
        self.interest = crate::interest::Interest::new(self.grid);
        self.border = Some(Box::new(Border::new(
            self.cfg.world,
            &setup,
            self.cfg.tick_hz,
        )));
        self.zone = Some(Box::new(ZoneState {
            setup,
            leaving: BTreeMap::new(),
            ledger: HandoffLedger::default(),
            moved: BTreeMap::new(),
            asked: BTreeMap::new(),
            next_ask: BTreeMap::new(),
            served: BTreeMap::new(),
            served_low: BTreeMap::new(),
        }));
        Ok(())
    }

    /// The zone this engine runs, if the world is zoned.
    pub fn zone(&self) -> Option<ZoneIdx> {
        self.zone.as_ref().map(|z| z.setup.zone)
    }

    /// What the handoff records applied so far add up to
    /// ([`crate::Handoffs::recover`] starts from it after a restart).
    pub fn handoff_ledger(&self) -> Option<&HandoffLedger> {
        self.zone.as_ref().map(|z| &z.ledger)
    }

    /// The zone `session` was handed to, if it left this zone (and is
    /// still remembered: a zone remembers the last 65,536).
    pub fn moved_to(&self, session: SessionId) -> Option<ZoneIdx> {
        self.zone
            .as_ref()
            .and_then(|z| z.moved.get(&session))
            .map(|(to, _)| *to)
    }

    /// Whether this engine writes `channel` (an unzoned one writes every
    /// channel; a zone its own cells, and the home zone the world and team
    /// channels): a resume never removes a channel written elsewhere.
    pub fn writes_channel(&self, channel: ChannelId) -> bool {
        let Some(zone) = self.zone.as_ref() else {
            return true;
        };
        match channel {
            ChannelId::Cell { x, y } => zone.setup.layout.holds_cell(zone.setup.zone, x, y),
            _ => zone.setup.zone == ZoneIdx::HOME,
        }
    }

    /// Whether `entity` is out of this zone and unanswered.
    pub fn is_leaving(&self, entity: EntityId) -> bool {
        self.zone
            .as_ref()
            .is_some_and(|z| z.leaving.contains_key(&entity))
    }

    /// Whether this zone would take `t` (the handoff's admission check: the
    /// same checks the import makes, so an admitted entity always imports).
    pub fn can_import(&self, t: &EntityTransfer) -> Result<(), String> {
        if self.zone.is_none() {
            return Err("this world is not zoned".into());
        }
        if self.world.version(t.entity).is_some() || self.is_leaving(t.entity) {
            return Err(format!("{:?} exists here already", t.entity));
        }
        if !t.session.is_empty() {
            let c: CarriedSession = postcard::from_bytes(&t.session)
                .map_err(|e| format!("the carried session does not decode: {e}"))?;
            // A session away from the home zone (kept there for the world
            // and team channels) comes back to it.
            if self.sessions.get(&c.id).is_some_and(|s| s.avatar.is_some()) {
                return Err(format!("{} exists here already", c.id));
            }
            if c.state.avatar != Some(t.entity) {
                return Err(format!("{} is not the session of {:?}", c.id, t.entity));
            }
        }
        self.world.check_import(t.entity, &t.state)
    }

    /// Applies a journaled handoff record (see the module header).
    pub fn handle_zone(&mut self, rec: &ZoneRecord) {
        let Some(zone) = self.zone.as_mut() else {
            return;
        };
        zone.ledger.apply(rec);
        match rec {
            ZoneRecord::Out { transfer, .. } => {
                zone.leaving.insert(transfer.entity, transfer.clone());
                self.world.remove_entity(transfer.entity);
                self.interest.handle_leave(transfer.entity);
            }
            ZoneRecord::Commit { id, entity } => {
                zone.leaving.remove(entity);
                if let Some(session) = avatar_session(&self.sessions, *entity) {
                    zone.moved.insert(session, (id.to, self.tick));
                    if zone.moved.len() > MAX_MOVED {
                        forget_oldest(&mut zone.moved);
                    }
                    let home = zone.setup.zone == ZoneIdx::HOME;
                    let mut removed = self.channels_of(session);
                    if home {
                        // The home zone writes the world and team channels:
                        // the session stays here, away (no avatar), for
                        // them; only its cells go.
                        removed.retain(|c| matches!(c, ChannelId::Cell { .. }));
                        if let Some(s) = self.sessions.get_mut(&session) {
                            s.avatar = None;
                        }
                    } else {
                        self.sessions.remove(&session);
                    }
                    self.detector.handle_leave(session);
                    self.subscribe(session, Vec::new(), removed);
                    self.outputs
                        .push_back(Output::SessionMoved { session, to: id.to });
                }
            }
            ZoneRecord::Abort { entity, .. } => {
                if let Some(t) = zone.leaving.remove(entity) {
                    let me = zone.setup.zone;
                    self.import(&t, false);
                    // Its session never left: the relay, holding the
                    // actions answered `Moved`, sends them here again.
                    if let Some(session) = avatar_session(&self.sessions, *entity) {
                        self.outputs
                            .push_back(Output::SessionMoved { session, to: me });
                    }
                }
            }
            ZoneRecord::In { transfer, .. } => {
                if let Ok(c) = postcard::from_bytes::<CarriedSession>(&transfer.session) {
                    zone.moved.remove(&c.id);
                }
                if let Some(b) = self.border.as_mut() {
                    b.held.forget(transfer.entity);
                }
                self.import(transfer, true);
            }
            ZoneRecord::Served { id, low, kind, op } => {
                let low_now = zone.served_low.entry(id.from).or_default();
                *low_now = (*low_now).max(*low);
                let cut = *low_now;
                zone.served.retain(|k, _| k.from != id.from || k.seq >= cut);
                if id.seq < cut || zone.served.contains_key(id) {
                    return;
                }
                let answer = match kind {
                    RequestKind::Game => {
                        let mut emit = Emit::default();
                        let answer = self
                            .world
                            .apply_remote(id.from, op, self.tick + 1, &mut emit);
                        self.stage(emit);
                        answer
                    }
                    RequestKind::Events => {
                        // Another zone's world and team events: published
                        // here, their one writer, with the next tick's.
                        let events: Vec<Emitted> = postcard::from_bytes(op).unwrap_or_default();
                        self.stats.events_forwarded_in += events.len() as u64;
                        self.staged.extend(events.into_iter().filter(|e| {
                            matches!(e.channel, ChannelId::World | ChannelId::Team(_))
                                && e.pos.is_none()
                        }));
                        Payload::default()
                    }
                };
                self.stats.requests_served += 1;
                let Some(zone) = self.zone.as_mut() else {
                    return;
                };
                zone.served.insert(*id, answer);
                while zone.served.len() > MAX_SERVED {
                    zone.served.pop_first();
                }
            }
            ZoneRecord::Answered { id, answer } => {
                let Some(asked) = zone.asked.remove(id) else {
                    return;
                };
                if asked.kind != RequestKind::Game {
                    return;
                }
                let tick = self.tick + 1;
                let mut emit = Emit::default();
                let verdict = self
                    .world
                    .remote_answered(&asked.op, Some(answer), tick, &mut emit);
                self.stage(emit);
                if let Some((session, seq)) = asked.answers {
                    self.answer_action(session, seq, tick, verdict);
                }
            }
            ZoneRecord::Refused { .. } | ZoneRecord::Low { .. } => {}
        }
    }

    /// An action's cross-zone requests: each sent to the zone owning what
    /// lies at its point (a neighbour's copy within its radius, mirrored
    /// here, names the zone when the point is this zone's), or answered
    /// `None` at once when there is none (or too many are unanswered).
    ///
    /// A request for another zone's entity ([`Emit::remote_entity`]) answers
    /// the action `(session, seq)`: `Some(outcome)` when it is answered at
    /// once (refused: nowhere to send it), else the action waits (and
    /// `self.waiting` says so) for [`Self::answer_action`].
    pub(super) fn route_remote(
        &mut self,
        ops: Vec<RemoteOp>,
        tick: u64,
        pending: &mut Vec<Emitted>,
        action: (SessionId, u64),
    ) -> Option<Outcome> {
        let mut outcome = None;
        let mut answering = false;
        for RemoteOp {
            entity,
            point,
            radius,
            op,
        } in ops
        {
            // One request per action answers it.
            let answers = entity.is_some() && !std::mem::replace(&mut answering, true);
            // Routing reads only replicated state (the layout, positions in
            // this zone's world): a standby re-executing the action makes
            // the same request (mirrors are not replicated).
            let to = match entity {
                Some(_) => self.entity_target(action.0),
                None => self.remote_target(point, radius),
            };
            let sent = match to {
                Some(to) if op.len() <= MAX_REQUEST => self.ask(
                    to,
                    RequestKind::Game,
                    op.clone(),
                    tick,
                    answers.then_some(action),
                ),
                _ => false,
            };
            if sent {
                self.waiting |= answers;
                continue;
            }
            self.stats.requests_unrouted += 1;
            let mut emit = Emit::default();
            let verdict = self.world.remote_answered(&op, None, tick, &mut emit);
            pending.append(&mut emit.events);
            if answers {
                if let Err(r) = verdict {
                    outcome = Some(Outcome::Rejected {
                        code: r.code,
                        detail: r.detail,
                    });
                }
            }
        }
        outcome
    }

    /// The answer to an action that waited for another zone: applied (its
    /// result with the tick being built's) or refused (at once).
    fn answer_action(
        &mut self,
        session: SessionId,
        seq: u64,
        tick: u64,
        verdict: Result<(), crate::world::Rejection>,
    ) {
        let outcome = match verdict {
            Ok(()) => Outcome::Applied { tick },
            Err(r) => Outcome::Rejected {
                code: r.code,
                detail: r.detail,
            },
        };
        let result = ActionResult { seq, outcome };
        if matches!(result.outcome, Outcome::Applied { .. }) {
            self.stats.applied += 1;
            self.applied.push((session, result));
        } else {
            self.stats.rejected += 1;
            self.outputs.push_back(Output::Result { session, result });
        }
    }

    /// Makes a request of zone `to` (false: too many are unanswered).
    fn ask(
        &mut self,
        to: ZoneIdx,
        kind: RequestKind,
        op: Payload,
        tick: u64,
        answers: Option<(SessionId, u64)>,
    ) -> bool {
        let Some(zone) = self.zone.as_mut() else {
            return false;
        };
        if zone.asked.len() >= MAX_ASKED {
            return false;
        }
        let me = zone.setup.zone;
        let next = zone.next_ask.entry(to).or_default();
        let id = RequestId {
            from: me,
            to,
            seq: *next,
        };
        *next += 1;
        zone.asked.insert(
            id,
            Asked {
                kind,
                op: op.clone(),
                tick,
                answers,
            },
        );
        let low = ask_low(&zone.asked, &zone.next_ask, to);
        self.stats.requests_sent += 1;
        self.outputs.push_back(Output::ToZone {
            to,
            msg: ZoneMsg::Request {
                world: self.cfg.world,
                id,
                low,
                kind,
                op,
            },
        });
        true
    }

    /// A tick's events of a zone other than the home: those on the world
    /// and team channels (whose one writer is the home zone) go to the home
    /// zone to publish (in requests of at most [`MAX_FORWARD`] bytes); the
    /// rest stay.
    pub(super) fn forward_events(&mut self, pending: &mut Vec<Emitted>) {
        if self.zone().is_none_or(|z| z == ZoneIdx::HOME) {
            return;
        }
        let (world, stay): (Vec<Emitted>, Vec<Emitted>) =
            std::mem::take(pending).into_iter().partition(|e| {
                matches!(e.channel, ChannelId::World | ChannelId::Team(_)) && e.pos.is_none()
            });
        *pending = stay;
        if world.is_empty() {
            return;
        }
        let mut chunk: Vec<Emitted> = Vec::new();
        let mut size = 0;
        let tick = self.tick;
        let n = world.len();
        for e in world {
            let len = e.payload.len() + 64;
            if size + len > MAX_FORWARD && !chunk.is_empty() {
                self.forward_chunk(std::mem::take(&mut chunk), tick);
                size = 0;
            }
            size += len;
            chunk.push(e);
        }
        if !chunk.is_empty() {
            self.forward_chunk(chunk, tick);
        }
        self.stats.events_forwarded_out += n as u64;
    }

    fn forward_chunk(&mut self, events: Vec<Emitted>, tick: u64) {
        let n = events.len() as u64;
        let op = postcard::to_stdvec(&events)
            .map(Payload::from)
            .unwrap_or_default();
        if op.len() > MAX_FORWARD || !self.ask(ZoneIdx::HOME, RequestKind::Events, op, tick, None) {
            // Bounded: an event too large, or the home zone unanswering
            // for thousands of requests.
            self.stats.events_forward_dropped += n;
        }
    }

    /// The zone a request at `point` goes to: the zone holding the point,
    /// or, if that is this one, the zone of the nearest copy held within
    /// `radius` (a neighbour's avatar in the hysteresis band).
    fn remote_target(&self, point: (f32, f32), radius: f32) -> Option<ZoneIdx> {
        let zone = self.zone.as_ref()?;
        let me = zone.setup.zone;
        let at = zone.setup.layout.zone_at(point.0, point.1);
        if at != me {
            return Some(at);
        }
        // A neighbour's avatar may stand this side of the border, in the
        // hysteresis band (still its zone's).
        self.nearest_neighbour(point, radius + zone.setup.hysteresis)
    }

    /// The zone a request about another zone's entity goes to: the
    /// neighbour nearest the acting session's avatar within the mirror
    /// margin (the zone across the border it stands by).
    fn entity_target(&self, session: SessionId) -> Option<ZoneIdx> {
        let zone = self.zone.as_ref()?;
        let avatar = self.sessions.get(&session)?.avatar?;
        let pos = self.world.position(avatar)?;
        self.nearest_neighbour(pos, zone.setup.margin)
    }

    /// The other zone nearest `point` within `within` map units.
    fn nearest_neighbour(&self, point: (f32, f32), within: f32) -> Option<ZoneIdx> {
        let zone = self.zone.as_ref()?;
        let layout = &zone.setup.layout;
        layout
            .near(zone.setup.zone, point.0, point.1, within)
            .into_iter()
            .map(|z| (z, layout.distance(z, point.0, point.1)))
            .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
            .map(|(z, _)| z)
    }

    /// This zone's unanswered requests, each with the tick that made it
    /// (re-sent once that tick is durable).
    pub fn zone_requests(&self) -> Vec<(u64, ZoneIdx, ZoneMsg)> {
        let Some(zone) = self.zone.as_ref() else {
            return Vec::new();
        };
        zone.asked
            .iter()
            .map(|(id, a)| {
                let msg = ZoneMsg::Request {
                    world: self.cfg.world,
                    id: *id,
                    low: ask_low(&zone.asked, &zone.next_ask, id.to),
                    kind: a.kind,
                    op: a.op.clone(),
                };
                (a.tick, id.to, msg)
            })
            .collect()
    }

    /// What this zone knows of another zone's request `id`.
    pub fn zone_served(&self, id: RequestId) -> Served {
        let Some(zone) = self.zone.as_ref() else {
            return Served::Forgotten;
        };
        if let Some(a) = zone.served.get(&id) {
            return Served::Answer(a.clone());
        }
        if id.seq < zone.served_low.get(&id.from).copied().unwrap_or(0) {
            return Served::Forgotten;
        }
        Served::New
    }

    /// Whether request `id` of this zone's awaits its answer.
    pub fn zone_asked(&self, id: RequestId) -> bool {
        self.zone
            .as_ref()
            .is_some_and(|z| z.asked.contains_key(&id))
    }

    /// Adds an entity (and its session, when `with_session`: it arrived).
    fn import(&mut self, t: &EntityTransfer, with_session: bool) {
        let mut emit = Emit::default();
        if let Err(e) = self
            .world
            .import_entity(t.entity, &t.state, self.tick, &mut emit)
        {
            // `can_import` ran the same checks before this was journaled.
            self.stats.zone_import_failures += 1;
            let _ = e;
            return;
        }
        self.stage(emit);
        let mut added = Vec::new();
        if let Some((x, y)) = self.world.position(t.entity) {
            if let Some(change) = self.interest.handle_move(t.entity, x, y) {
                added = change.added;
            }
        }
        if !with_session || t.session.is_empty() {
            return;
        }
        let Ok(c) = postcard::from_bytes::<CarriedSession>(&t.session) else {
            self.stats.zone_import_failures += 1;
            return;
        };
        self.detector.handle_join(c.id, &c.state.player);
        // The world and team channels have one writer, the home zone: a
        // session receives them from there wherever its avatar is (it stays
        // at the home zone, away, while its avatar is in another; the
        // channels of other zones' engines reach no one).
        let away = self.sessions.contains_key(&c.id);
        let mut channels = Vec::new();
        if self.zone() == Some(ZoneIdx::HOME) && !away {
            channels.push(ChannelId::World);
            if let Some(team) = c.state.team {
                channels.push(ChannelId::Team(team));
            }
        }
        channels.extend(added);
        self.sessions.insert(c.id, c.state);
        self.subscribe(c.id, channels, Vec::new());
    }

    /// Avatars that crossed this zone's border (with hysteresis) and can
    /// leave now: one [`Output::Crossing`] each, in session order.
    pub(super) fn crossings(&mut self) {
        let Some(zone) = self.zone.as_ref() else {
            return;
        };
        let (layout, me, h) = (&zone.setup.layout, zone.setup.zone, zone.setup.hysteresis);
        let mut found: Vec<(SessionId, EntityId, ZoneIdx)> = self
            .sessions
            .iter()
            .filter_map(|(id, s)| {
                let a = s.avatar?;
                // (An avatar whose action waits for another zone's answer
                // stays until it comes: the answer is given here.)
                if zone.leaving.contains_key(&a)
                    || zone
                        .asked
                        .values()
                        .any(|q| q.answers.is_some_and(|(w, _)| w == *id))
                {
                    return None;
                }
                let (x, y) = self.world.position(a)?;
                layout.crossing(me, x, y, h).map(|to| (*id, a, to))
            })
            .collect();
        found.sort_unstable_by_key(|(s, ..)| *s);
        for (session, entity, to) in found {
            let Some(state) = self.world.export_entity(entity, self.tick) else {
                continue;
            };
            let Some(s) = self.sessions.get(&session) else {
                continue;
            };
            let carried = CarriedSession {
                id: session,
                state: s.clone(),
            };
            let transfer = EntityTransfer {
                entity,
                player: Some(s.player.clone()),
                pos: self.world.position(entity).unwrap_or_default(),
                state,
                version: self.world.version(entity).unwrap_or_default(),
                session: postcard::to_stdvec(&carried)
                    .map(Payload::from)
                    .unwrap_or_default(),
            };
            self.outputs.push_back(Output::Crossing { transfer, to });
        }
    }
}

impl<W: World> Engine<W> {
    /// A neighbour's mirrors: kept (bounded, newest tick wins) and the new or
    /// changed copies shown to this zone's players as movement on the zone's
    /// cell nearest to each. A copy of an entity this zone owns is ignored.
    pub fn handle_mirrors(&mut self, msg: &ZoneMsg, now_us: u64) -> Result<(), MirrorError> {
        let Some(b) = self.border.as_mut() else {
            return Ok(());
        };
        let kept = b.held.handle(msg);
        let changed = b.held.take_changed();
        let shown = self.mirror_moves(changed);
        self.stats.mirrors_shown += shown.len() as u64;
        self.movement(shown, now_us);
        kept
    }

    /// Another zone's part of the world's spectator feed (taken by the home
    /// zone only): its keyframe replaces the one held, its events go into
    /// the next frame this zone signs (bounded; beyond, dropped and
    /// counted). Other messages are ignored.
    pub fn handle_feed_part(&mut self, msg: &ZoneMsg) {
        let ZoneMsg::FeedPart {
            from,
            keyframe,
            events,
            ..
        } = msg
        else {
            return;
        };
        if self.zone() != Some(ZoneIdx::HOME) || *from == ZoneIdx::HOME || !self.feed {
            return;
        }
        let Some(b) = self.border.as_mut() else {
            return;
        };
        if *keyframe {
            let mut events = events.clone();
            events.truncate(MAX_FEED_PARTS);
            b.part_keys.insert(*from, events);
        } else if b.parts.len() + events.len() <= MAX_FEED_PARTS {
            b.parts.extend(events.iter().cloned());
        } else {
            self.stats.feed_parts_dropped += events.len() as u64;
        }
    }

    /// The other zones' feed for the frame being made: every zone's last
    /// keyframe for a keyframe, else the events that came since.
    pub(super) fn take_feed_parts(&mut self, keyframe: bool) -> Vec<FeedEvent> {
        let Some(b) = self.border.as_mut() else {
            return Vec::new();
        };
        if keyframe {
            b.part_keys.values().flatten().cloned().collect()
        } else {
            std::mem::take(&mut b.parts)
        }
    }

    /// Forgets the other zones' feed (the home's feed stopped).
    pub(super) fn clear_feed_parts(&mut self) {
        if let Some(b) = self.border.as_mut() {
            b.parts.clear();
            b.part_keys.clear();
        }
    }

    /// A zone other than the home sends its feed to the home zone, which
    /// signs the world's.
    pub(super) fn feeds_home(&self) -> bool {
        self.zone().is_some_and(|z| z != ZoneIdx::HOME)
    }

    /// Every zone of this zoned world (empty for an unzoned one).
    pub fn zones(&self) -> Vec<ZoneIdx> {
        self.zone
            .as_ref()
            .map(|z| z.setup.layout.zones().collect())
            .unwrap_or_default()
    }

    /// Copies of other zones' entities this zone holds.
    pub fn mirrors_held(&self) -> usize {
        self.border.as_ref().map_or(0, |b| b.held.len())
    }

    /// The copy of another zone's entity this zone holds: its zone and
    /// where it is.
    pub fn mirror_of(&self, e: EntityId) -> Option<(ZoneIdx, (f32, f32))> {
        let b = self.border.as_ref()?;
        b.held.get(e).map(|(z, m)| (z, m.pos))
    }

    /// The movement states showing `entities`' copies (those this zone
    /// does not own) on this zone's cells.
    fn mirror_moves(&self, entities: Vec<EntityId>) -> Vec<Emitted> {
        let Some(b) = self.border.as_ref() else {
            return Vec::new();
        };
        entities
            .into_iter()
            .filter(|e| self.world.position(*e).is_none() && !self.is_leaving(*e))
            .filter_map(|e| {
                let (_, m) = b.held.get(e)?;
                Some(Emitted {
                    channel: self.grid.channel_of(m.pos.0, m.pos.1),
                    class: EventClass::Movement,
                    entity: Some(e),
                    payload: m.state.clone(),
                    pos: Some(m.pos),
                })
            })
            .collect()
    }

    /// Notes this tick's movement states of this zone's own entities (what
    /// its mirrors carry).
    pub(super) fn note_moves(&mut self, pending: &[Emitted]) {
        let Some(b) = self.border.as_mut() else {
            return;
        };
        for e in pending {
            if let (Some(entity), Some(pos)) = (e.entity, e.pos) {
                b.moves.insert(entity, (pos, e.payload.clone()));
            }
        }
    }

    /// The end of a tick at the border: this zone's entities near a
    /// neighbour go to it ([`Output::ToZone`]); every keyframe period the
    /// copies held are shown again (for players who came near since).
    pub(super) fn border_tick(&mut self, now_us: u64) {
        let (Some(b), Some(zone)) = (self.border.as_mut(), self.zone.as_ref()) else {
            return;
        };
        // Entities gone from the world here (left, or out in a handoff)
        // are no longer this zone's to mirror.
        let world = &self.world;
        b.moves
            .retain(|e, _| world.position(*e).is_some() && !zone.leaving.contains_key(e));
        let sources: Vec<(EntityId, (f32, f32), Payload)> = b
            .moves
            .iter()
            .map(|(e, (pos, state))| (*e, *pos, state.clone()))
            .collect();
        for (to, msg) in b.out.handle_tick(self.tick, &zone.setup.layout, sources) {
            self.stats.mirrors_sent += 1;
            self.outputs.push_back(Output::ToZone { to, msg });
        }
        let every = self.cfg.keyframe_every;
        if every > 0 && self.tick % every == 0 {
            let all: Vec<EntityId> = b.held.iter().map(|(_, m)| m.entity).collect();
            let shown = self.mirror_moves(all);
            self.movement(shown, now_us);
        }
    }
}

/// The lowest sequence towards `to` not answered yet.
fn ask_low(asked: &BTreeMap<RequestId, Asked>, next: &BTreeMap<ZoneIdx, u64>, to: ZoneIdx) -> u64 {
    asked
        .keys()
        .filter(|id| id.to == to)
        .map(|id| id.seq)
        .min()
        .unwrap_or_else(|| next.get(&to).copied().unwrap_or(0))
}

/// Forgets the oldest quarter of the moved sessions.
fn forget_oldest(moved: &mut BTreeMap<SessionId, (ZoneIdx, u64)>) {
    let mut ticks: Vec<u64> = moved.values().map(|(_, t)| *t).collect();
    ticks.sort_unstable();
    let cut = ticks[ticks.len() / 4];
    moved.retain(|_, (_, t)| *t >= cut);
    while moved.len() > MAX_MOVED * 3 / 4 {
        moved.pop_first();
    }
}

/// The session whose avatar `entity` is.
fn avatar_session<'a>(
    sessions: impl IntoIterator<Item = (&'a SessionId, &'a SessionState)>,
    entity: EntityId,
) -> Option<SessionId> {
    sessions
        .into_iter()
        .find(|(_, s)| s.avatar == Some(entity))
        .map(|(k, _)| *k)
}
