//! Border mirrors, pure: read-only copies of entities near a border, sent by
//! their owning zone to each neighbour within the interest margin.
//!
//! [`MirrorOut`] (at the owner) turns each tick's owned entities into
//! [`ZoneMsg::Mirrors`] per neighbour: an upsert when an entity comes within
//! the margin or its state or position changed, a removal when it leaves the
//! margin, leaves the zone, or starts a handoff towards that neighbour (the
//! neighbour is about to own it). [`MirrorIn`] (at the neighbour) keeps the
//! copies, bounded, newest tick wins, and drops a zone's copies when its
//! owner changes (the new owner sends them again).
//!
//! Messages may be lost (the zone link drops on a full queue or a broken
//! connection): every `refresh` ticks the owner sends every copy again, and
//! the neighbour drops a zone's copies that were not refreshed within three
//! refreshes of the newest tick it heard from that zone.
//!
//! A mirror is never authoritative: the zone holding it reads it (line of
//! sight, collisions, what a player near the border sees) and never applies
//! an action to it; an action that touches it goes to the owning zone as a
//! cross-zone message (docs/architecture.md, "Zones").

use std::collections::{BTreeMap, HashMap, HashSet};

use skylane_proto::zones::{MirrorEntry, ZoneIdx, ZoneLayout, ZoneMsg, MAX_MIRRORS_PER_MSG};
use skylane_proto::{EntityId, Payload, WorldId};

/// What the owner last sent a neighbour about one entity.
#[derive(Debug, Clone, PartialEq)]
struct Sent {
    pos: (f32, f32),
    state: Payload,
}

/// The owner's side: what each neighbour holds of this zone's entities.
#[derive(Debug, Clone)]
pub struct MirrorOut {
    world: WorldId,
    me: ZoneIdx,
    margin: f32,
    /// Every copy is sent again every this many ticks (0: never).
    refresh: u64,
    sent: BTreeMap<ZoneIdx, HashMap<EntityId, Sent>>,
    /// Every neighbour ever sent a copy: each refresh reaches them, empty
    /// or not, so copies whose removal was lost expire there.
    told: std::collections::BTreeSet<ZoneIdx>,
}

impl MirrorOut {
    /// Mirrors of zone `me`'s entities within `margin` (map units) of a
    /// neighbour, each sent again every `refresh` ticks (0: only on change).
    pub fn new(world: WorldId, me: ZoneIdx, margin: f32, refresh: u64) -> Self {
        Self {
            world,
            me,
            margin,
            refresh,
            sent: BTreeMap::new(),
            told: std::collections::BTreeSet::new(),
        }
    }

    /// One tick's owned, active entities (`(entity, position, state)`) →
    /// the messages for each neighbour whose copies changed, at most
    /// [`MAX_MIRRORS_PER_MSG`] upserts each. An entity that was mirrored and
    /// is absent now (it left the zone or is frozen in a handoff) is removed.
    pub fn handle_tick(
        &mut self,
        tick: u64,
        layout: &ZoneLayout,
        entities: impl IntoIterator<Item = (EntityId, (f32, f32), Payload)>,
    ) -> Vec<(ZoneIdx, ZoneMsg)> {
        let refresh = self.refresh > 0 && tick % self.refresh == 0;
        let mut upserts: BTreeMap<ZoneIdx, Vec<MirrorEntry>> = BTreeMap::new();
        let mut seen: BTreeMap<ZoneIdx, HashSet<EntityId>> = BTreeMap::new();
        for (entity, pos, state) in entities {
            for z in layout.near(self.me, pos.0, pos.1, self.margin) {
                seen.entry(z).or_default().insert(entity);
                let held = self.sent.entry(z).or_default();
                let now = Sent {
                    pos,
                    state: state.clone(),
                };
                if refresh || held.get(&entity) != Some(&now) {
                    upserts.entry(z).or_default().push(MirrorEntry {
                        entity,
                        tick,
                        pos,
                        state: state.clone(),
                    });
                    held.insert(entity, now);
                }
            }
        }
        let mut out = Vec::new();
        self.told.extend(upserts.keys().copied());
        let zones: Vec<ZoneIdx> = if refresh {
            self.told.iter().copied().collect()
        } else {
            self.sent.keys().copied().collect()
        };
        for z in zones {
            let held = self.sent.entry(z).or_default();
            let keep = seen.get(&z);
            let mut remove: Vec<EntityId> = held
                .keys()
                .filter(|e| !keep.is_some_and(|k| k.contains(e)))
                .copied()
                .collect();
            remove.sort_unstable();
            for e in &remove {
                held.remove(e);
            }
            let mut up = upserts.remove(&z).unwrap_or_default();
            up.sort_unstable_by_key(|m| m.entity);
            if up.is_empty() && remove.is_empty() && !refresh {
                continue;
            }
            let mut chunks = up.chunks(MAX_MIRRORS_PER_MSG).peekable();
            let mut first = true;
            while first || chunks.peek().is_some() {
                out.push((
                    z,
                    ZoneMsg::Mirrors {
                        world: self.world,
                        from: self.me,
                        to: z,
                        tick,
                        upsert: chunks.next().map(<[_]>::to_vec).unwrap_or_default(),
                        remove: if first { remove.clone() } else { Vec::new() },
                    },
                ));
                first = false;
            }
            if held.is_empty() {
                self.sent.remove(&z);
            }
        }
        out
    }

    /// Forgets what zone `z` holds (its owner changed and starts empty): the
    /// next tick sends it every copy again.
    pub fn reset(&mut self, z: ZoneIdx) {
        self.sent.remove(&z);
    }

    /// Copies held by neighbours, in all.
    pub fn mirrored(&self) -> usize {
        self.sent.values().map(HashMap::len).sum()
    }
}

/// Why a mirror message was not taken in whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MirrorError {
    /// The message is for another world.
    #[error("mirrors for {0} reached {1}")]
    WrongWorld(WorldId, WorldId),
    /// The message claims to come from this zone.
    #[error("mirrors from this zone itself ({0})")]
    FromSelf(ZoneIdx),
    /// More upserts than [`MAX_MIRRORS_PER_MSG`].
    #[error("{0} mirrors in one message")]
    TooMany(usize),
    /// [`MirrorIn`]'s bound: some copies were not kept.
    #[error("{0} mirrors refused: the zone holds its most")]
    Full(usize),
}

/// The neighbour's side: read-only copies of other zones' border entities.
#[derive(Debug, Clone)]
pub struct MirrorIn {
    world: WorldId,
    me: ZoneIdx,
    max: usize,
    /// A zone's copy older than its newest tick by more than this is
    /// dropped (it was not refreshed: its removal was lost).
    stale_after: u64,
    copies: BTreeMap<EntityId, (ZoneIdx, MirrorEntry)>,
    /// The newest tick heard from each zone.
    newest: BTreeMap<ZoneIdx, u64>,
    /// Copies added or changed since [`take_changed`](Self::take_changed).
    changed: HashSet<EntityId>,
}

impl MirrorIn {
    /// Copies held by zone `me`, at most `max`; a copy `stale_after` ticks
    /// older than the newest heard from its zone is dropped (0: never).
    pub fn new(world: WorldId, me: ZoneIdx, max: usize, stale_after: u64) -> Self {
        Self {
            world,
            me,
            max,
            stale_after,
            copies: BTreeMap::new(),
            newest: BTreeMap::new(),
            changed: HashSet::new(),
        }
    }

    /// The copies added or changed since the last call, in entity order
    /// (what to show players anew).
    pub fn take_changed(&mut self) -> Vec<EntityId> {
        let mut out: Vec<EntityId> = self
            .changed
            .drain()
            .filter(|e| self.copies.contains_key(e))
            .collect();
        out.sort_unstable();
        out
    }

    /// Applies a [`ZoneMsg::Mirrors`] (other messages are ignored). A copy
    /// older than the one held is ignored; an entity this zone owns must be
    /// [`forget`](Self::forget)-ed by the caller when it is imported.
    pub fn handle(&mut self, msg: &ZoneMsg) -> Result<(), MirrorError> {
        let ZoneMsg::Mirrors {
            world,
            from,
            tick,
            upsert,
            remove,
            ..
        } = msg
        else {
            return Ok(());
        };
        if *world != self.world {
            return Err(MirrorError::WrongWorld(*world, self.world));
        }
        if *from == self.me {
            return Err(MirrorError::FromSelf(*from));
        }
        if upsert.len() > MAX_MIRRORS_PER_MSG {
            return Err(MirrorError::TooMany(upsert.len()));
        }
        for e in remove {
            if self.copies.get(e).is_some_and(|(z, _)| z == from) {
                self.copies.remove(e);
            }
        }
        let mut refused = 0;
        for m in upsert {
            let room = self.copies.len() < self.max;
            match self.copies.get_mut(&m.entity) {
                Some((z, held)) if m.tick >= held.tick || z != from => {
                    if held.pos != m.pos || held.state != m.state {
                        self.changed.insert(m.entity);
                    }
                    *z = *from;
                    *held = m.clone();
                }
                Some(_) => {}
                None if room => {
                    self.copies.insert(m.entity, (*from, m.clone()));
                    self.changed.insert(m.entity);
                }
                None => refused += 1,
            }
        }
        let newest = self.newest.entry(*from).or_default();
        *newest = (*newest).max(*tick);
        if self.stale_after > 0 && *newest > self.stale_after {
            let cut = *newest - self.stale_after;
            self.copies.retain(|_, (z, m)| z != from || m.tick >= cut);
        }
        if refused > 0 {
            return Err(MirrorError::Full(refused));
        }
        Ok(())
    }

    /// Drops every copy from zone `z` (its owner changed).
    pub fn drop_zone(&mut self, z: ZoneIdx) {
        self.copies.retain(|_, (from, _)| *from != z);
        self.newest.remove(&z);
    }

    /// Drops the copy of an entity (this zone owns it now).
    pub fn forget(&mut self, e: EntityId) {
        self.copies.remove(&e);
    }

    /// The copy of `e`, with the zone that owns it.
    pub fn get(&self, e: EntityId) -> Option<(ZoneIdx, &MirrorEntry)> {
        self.copies.get(&e).map(|(z, m)| (*z, m))
    }

    /// Every copy.
    pub fn iter(&self) -> impl Iterator<Item = (ZoneIdx, &MirrorEntry)> {
        self.copies.values().map(|(z, m)| (*z, m))
    }

    /// Copies held.
    pub fn len(&self) -> usize {
        self.copies.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.copies.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: WorldId = WorldId(1);

    fn layout() -> ZoneLayout {
        ZoneLayout::even(8, 8, 10.0, 2, 2).unwrap()
    }

    fn st(b: u8) -> Payload {
        Payload::from(vec![b])
    }

    fn apply(to: &mut [MirrorIn], msgs: &[(ZoneIdx, ZoneMsg)]) {
        for (z, m) in msgs {
            to[usize::from(z.0)].handle(m).unwrap();
        }
    }

    #[test]
    fn entities_near_a_border_are_mirrored_and_removed_when_they_leave_it() {
        let l = layout();
        let mut out = MirrorOut::new(W, ZoneIdx(0), 5.0, 0);
        let mut ins: Vec<MirrorIn> = l.zones().map(|z| MirrorIn::new(W, z, 100, 0)).collect();
        // Entity 1 in the middle of zone 0, entity 2 near the corner.
        let tick1 = out.handle_tick(
            1,
            &l,
            [
                (EntityId(1), (20.0, 20.0), st(1)),
                (EntityId(2), (38.0, 38.0), st(2)),
            ],
        );
        assert_eq!(tick1.len(), 3, "the three neighbours of the corner");
        apply(&mut ins, &tick1);
        for n in &ins[1..] {
            assert_eq!(
                n.get(EntityId(2)).map(|(f, m)| (f, m.tick)),
                Some((ZoneIdx(0), 1))
            );
            assert!(n.get(EntityId(1)).is_none());
        }
        // Nothing changed: nothing sent.
        let same = out.handle_tick(
            2,
            &l,
            [
                (EntityId(1), (20.0, 20.0), st(1)),
                (EntityId(2), (38.0, 38.0), st(2)),
            ],
        );
        assert!(same.is_empty());
        // Entity 2 moves along the x border away from zone 2 and 3.
        let moved = out.handle_tick(3, &l, [(EntityId(2), (38.0, 10.0), st(3))]);
        apply(&mut ins, &moved);
        assert_eq!(ins[1].get(EntityId(2)).unwrap().1.state, st(3));
        assert!(
            ins[2].is_empty() && ins[3].is_empty(),
            "removed where no longer near"
        );
        // It is frozen for a handoff (absent from the owned set): removed.
        let gone = out.handle_tick(4, &l, []);
        apply(&mut ins, &gone);
        assert!(ins.iter().all(MirrorIn::is_empty));
        assert_eq!(out.mirrored(), 0);
    }

    #[test]
    fn copies_are_bounded_ordered_by_tick_and_checked() {
        let l = layout();
        let mut out = MirrorOut::new(W, ZoneIdx(0), 5.0, 0);
        let many: Vec<_> = (0..600)
            .map(|i| (EntityId(i), (38.0, 1.0), st(0)))
            .collect();
        let msgs = out.handle_tick(1, &l, many);
        assert_eq!(msgs.len(), 3, "600 copies in chunks of 256");
        let mut small = MirrorIn::new(W, ZoneIdx(1), 300, 0);
        assert_eq!(small.handle(&msgs[0].1), Ok(()));
        assert_eq!(small.handle(&msgs[1].1), Err(MirrorError::Full(212)));
        assert_eq!(small.len(), 300);
        // An older copy never replaces a newer one.
        let newer = ZoneMsg::Mirrors {
            world: W,
            from: ZoneIdx(0),
            to: ZoneIdx(1),
            tick: 9,
            upsert: vec![MirrorEntry {
                entity: EntityId(0),
                tick: 9,
                pos: (38.0, 1.0),
                state: st(9),
            }],
            remove: vec![],
        };
        small.handle(&newer).unwrap();
        small.handle(&msgs[0].1).unwrap();
        assert_eq!(small.get(EntityId(0)).unwrap().1.tick, 9);
        assert!(matches!(
            small.handle(&ZoneMsg::Mirrors {
                world: WorldId(2),
                from: ZoneIdx(0),
                to: ZoneIdx(1),
                tick: 0,
                upsert: vec![],
                remove: vec![]
            }),
            Err(MirrorError::WrongWorld(..))
        ));
        assert!(matches!(
            small.handle(&ZoneMsg::Mirrors {
                world: W,
                from: ZoneIdx(1),
                to: ZoneIdx(1),
                tick: 0,
                upsert: vec![],
                remove: vec![]
            }),
            Err(MirrorError::FromSelf(_))
        ));
        small.drop_zone(ZoneIdx(0));
        assert!(small.is_empty());
        // A reset neighbour gets every copy again.
        out.reset(ZoneIdx(1));
        let again = out.handle_tick(2, &l, (0..600).map(|i| (EntityId(i), (38.0, 1.0), st(0))));
        assert_eq!(again.iter().filter(|(z, _)| *z == ZoneIdx(1)).count(), 3);
    }

    #[test]
    fn lost_removals_expire_and_refreshes_resend_every_copy() {
        let l = layout();
        let mut out = MirrorOut::new(W, ZoneIdx(0), 5.0, 10);
        let mut inn = MirrorIn::new(W, ZoneIdx(1), 100, 30);
        let near = |e: u64| (EntityId(e), (38.0, 10.0), st(1));
        let first = out.handle_tick(1, &l, [near(1), near(2)]);
        inn.handle(&first[0].1).unwrap();
        assert_eq!(inn.take_changed(), vec![EntityId(1), EntityId(2)]);
        assert!(inn.take_changed().is_empty(), "taken once");
        // Entity 2's removal is lost on the way.
        let lost = out.handle_tick(2, &l, [near(1)]);
        assert_eq!(lost.len(), 1);
        // Unchanged ticks send nothing; a refresh tick sends entity 1 again.
        for t in 3..10 {
            assert!(out.handle_tick(t, &l, [near(1)]).is_empty());
        }
        let mut t = 10;
        while t <= 40 {
            let again = out.handle_tick(t, &l, [near(1)]);
            assert_eq!(again.len(), 1, "refresh at tick {t}");
            inn.handle(&again[0].1).unwrap();
            t += 10;
        }
        assert!(inn.take_changed().is_empty(), "a refresh changes nothing");
        assert!(inn.get(EntityId(1)).is_some());
        assert!(
            inn.get(EntityId(2)).is_none(),
            "not refreshed for 30 ticks: dropped"
        );
        // Entity 1 leaves too and its removal is lost: refreshes with no
        // copies still reach the neighbour, and the copy expires.
        let _lost = out.handle_tick(41, &l, []);
        for t in 42..=80 {
            for (_, m) in out.handle_tick(t, &l, []) {
                assert!(matches!(&m, ZoneMsg::Mirrors { upsert, .. } if upsert.is_empty()));
                inn.handle(&m).unwrap();
            }
        }
        assert!(inn.is_empty(), "expired against empty refreshes");
    }
}
