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
//! Cross-zone requests live in `requests.rs`, border mirrors and the
//! zoned world's spectator feed in `border.rs`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use skylane_proto::zones::{EntityTransfer, RequestId, ZoneIdx, ZoneLayout, ZoneRecord};
use skylane_proto::{ChannelId, EntityId, Payload, SessionId};

use crate::world::{Emit, World};
use crate::zone::HandoffLedger;

use super::border::Border;
use super::requests::Asked;
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
    /// The sequence number of this zone's last forwarded-events request to
    /// the home zone: the next names it, so the home publishes them in the
    /// order they were emitted.
    #[serde(default)]
    pub(super) events_last: Option<u64>,
}

/// Sessions a zone remembers as moved away, at most (beyond, the oldest
/// quarter is forgotten; a session detached longer than a relay's grace is
/// gone anyway).
pub(super) const MAX_MOVED: usize = 65_536;

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
            events_last: None,
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
                    b.forget(transfer.entity);
                }
                self.import(transfer, true);
            }
            ZoneRecord::Served { id, low, kind, op } => self.serve(*id, *low, *kind, op),
            ZoneRecord::Answered { id, answer } => self.answered(*id, answer),
            ZoneRecord::Refused { .. } | ZoneRecord::Low { .. } => {}
        }
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
                    || zone.asked.values().any(|q| q.answers_session(*id))
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
