//! A zone's border, the engine's side (presentation, not state): border
//! mirrors — every tick the zone sends each neighbour the newest movement
//! state of its entities within the mirror margin ([`Output::ToZone`]),
//! and a neighbour's copies ([`Engine::handle_mirrors`]) are shown to this
//! zone's players as movement on the zone's own cell nearest to them (one
//! writer per cell; movement frames are not chained, so a standby that
//! never saw a copy continues every channel exactly); and the spectator
//! feed of a zoned world — the home zone merges every other zone's part
//! ([`Engine::handle_feed_part`]) into the frames it signs. Never applied
//! to the world, never journaled; after a restart the neighbours' next
//! refresh fills the copies in.

use std::collections::{BTreeMap, HashMap};

use skylane_proto::zones::{ZoneIdx, ZoneMsg};
use skylane_proto::{EntityId, EventClass, FeedEvent, Payload};

use crate::world::{Emitted, World};
use crate::zone::{MirrorError, MirrorIn, MirrorOut};

use super::zones::ZoneSetup;
use super::{Engine, Output};

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
    /// Drops the copy of an entity this zone owns now.
    pub(super) fn forget(&mut self, e: EntityId) {
        self.held.forget(e);
    }

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
