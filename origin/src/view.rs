//! A client's view of a world, rebuilt from keyframes and event batches, and the
//! consistency checker that compares it with the origin's state: [`ArenaView`]
//! for the arena, [`TttView`] for tic-tac-toe.
//!
//! This is what a game client does with the feed: start each channel from a
//! keyframe, then apply the channel's batches in sequence. [`ArenaView::check`]
//! compares the result with the authoritative world at the same tick, field by
//! field, and lists every difference. A gap in a channel's sequence numbers is an
//! error, never silently skipped.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;
use serde::Serialize;
use skylane_proto::{ChannelId, EntityId, EventBatch, Keyframe};

use crate::arena::{Arena, ArenaEvent, Item, Player};
use crate::tictactoe::{TicTacToe, TttEvent, TttState, BOARD};
use crate::world::World;

/// What the view knows of a player, with the version each field is from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewPlayer {
    /// Position.
    pub x: f32,
    /// Position.
    pub y: f32,
    /// Hit points.
    pub hp: u32,
    /// Coins.
    pub coins: u64,
    pos_v: u64,
    hp_v: u64,
    coins_v: u64,
}

impl ViewPlayer {
    fn new(x: f32, y: f32, hp: u32, coins: u64, v: u64) -> Self {
        Self {
            x,
            y,
            hp,
            coins,
            pos_v: v,
            hp_v: v,
            coins_v: v,
        }
    }

    fn newer(&self, other: &Self) -> bool {
        other.pos_v.max(other.hp_v).max(other.coins_v) > self.pos_v.max(self.hp_v).max(self.coins_v)
    }
}

/// What the view knows of an item.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewItem {
    /// Position while on the ground.
    pub x: f32,
    /// Position while on the ground.
    pub y: f32,
    /// Holder.
    pub holder: Option<EntityId>,
    version: u64,
}

/// Why the feed could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    /// A keyframe's state could not be decoded.
    #[error("keyframe of {0} is undecodable")]
    BadKeyframe(ChannelId),
    /// A batch skipped sequence numbers.
    #[error("gap on {channel}: expected {expected}, got {found}")]
    Gap {
        /// Channel.
        channel: ChannelId,
        /// Next expected.
        expected: u64,
        /// Found.
        found: u64,
    },
}

/// One difference between the view and the origin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mismatch {
    /// Entity.
    pub entity: EntityId,
    /// What differs.
    pub what: String,
}

/// A client's rebuilt view of an arena.
#[derive(Debug, Default, Clone)]
pub struct ArenaView {
    players: BTreeMap<EntityId, ViewPlayer>,
    items: BTreeMap<EntityId, ViewItem>,
    /// Last sequence applied per channel (keyframe or event).
    seq: HashMap<ChannelId, u64>,
}

impl ArenaView {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the channel has started (a keyframe was applied).
    pub fn has_channel(&self, channel: ChannelId) -> bool {
        self.seq.contains_key(&channel)
    }

    /// Applies a keyframe: its entities replace what the view had for them, and the
    /// channel continues after the keyframe's sequence number.
    pub fn apply_keyframe(&mut self, kf: &Keyframe) -> Result<(), ViewError> {
        type State = (Vec<(EntityId, Player)>, Vec<(EntityId, Item)>);
        let (players, items): State =
            postcard::from_bytes(&kf.state).map_err(|_| ViewError::BadKeyframe(kf.channel))?;
        for (id, p) in players {
            let fresh = ViewPlayer::new(p.x, p.y, p.hp, p.coins, p.version);
            match self.players.get(&id) {
                Some(old) if !old.newer(&fresh) => {}
                _ => {
                    self.players.insert(id, fresh);
                }
            }
        }
        for (id, i) in items {
            if self
                .items
                .get(&id)
                .is_none_or(|old| old.version < i.version)
            {
                self.items.insert(
                    id,
                    ViewItem {
                        x: i.x,
                        y: i.y,
                        holder: i.holder,
                        version: i.version,
                    },
                );
            }
        }
        self.seq.insert(kf.channel, kf.seq);
        Ok(())
    }

    /// Applies a batch of a started channel (events already covered by its keyframe
    /// are skipped). Batches of channels without a keyframe yet are ignored.
    pub fn apply_batch(&mut self, b: &EventBatch) -> Result<(), ViewError> {
        let Some(&last) = self.seq.get(&b.channel) else {
            return Ok(());
        };
        let (fresh, now) = in_order(b, last)?;
        for e in fresh {
            if let Some(ev) = ArenaEvent::decode(&e.payload) {
                self.apply_event(&ev);
            }
        }
        self.seq.insert(b.channel, now);
        Ok(())
    }

    /// Applies a movement frame's states (latest wins by each player's version;
    /// movement is state, not chained, so nothing here can be lost or out of
    /// order in a way the view could detect).
    pub fn apply_movement(&mut self, f: &skylane_proto::MovementFrame) {
        for m in &f.entries {
            if let Some(ev @ ArenaEvent::Moved { .. }) = ArenaEvent::decode(&m.payload) {
                self.apply_event(&ev);
            }
        }
    }

    fn apply_event(&mut self, ev: &ArenaEvent) {
        match ev {
            ArenaEvent::Spawned {
                entity,
                x,
                y,
                hp,
                coins,
                version,
                items,
                ..
            } => {
                self.players
                    .entry(*entity)
                    .or_insert_with(|| ViewPlayer::new(*x, *y, *hp, *coins, *version));
                // A returning player's items are made as it joins, held.
                for i in items {
                    self.items.entry(*i).or_insert(ViewItem {
                        x: *x,
                        y: *y,
                        holder: Some(*entity),
                        version: 1,
                    });
                }
            }
            ArenaEvent::Left { entity } => {
                // Its items leave with it (they stay in its wallet).
                if self.players.remove(entity).is_some() {
                    self.items.retain(|_, i| i.holder != Some(*entity));
                }
            }
            // Offers change nothing until accepted (then `Traded` says what).
            ArenaEvent::Offered { .. } | ArenaEvent::OfferClosed { .. } => {}
            ArenaEvent::Moved {
                entity,
                x,
                y,
                version,
            } => {
                if let Some(p) = self.players.get_mut(entity).filter(|p| p.pos_v < *version) {
                    (p.x, p.y, p.pos_v) = (*x, *y, *version);
                }
            }
            ArenaEvent::PickedUp { item, by, version } => {
                if let Some(i) = self.items.get_mut(item).filter(|i| i.version < *version) {
                    (i.holder, i.version) = (Some(*by), *version);
                }
            }
            ArenaEvent::Traded {
                a,
                b,
                items_a_to_b,
                items_b_to_a,
                a_coins,
                b_coins,
                a_version,
                b_version,
                ..
            } => {
                for (who, coins, v) in [(a, a_coins, a_version), (b, b_coins, b_version)] {
                    if let Some(p) = self.players.get_mut(who).filter(|p| p.coins_v < *v) {
                        (p.coins, p.coins_v) = (*coins, *v);
                    }
                }
                for (list, to) in [(items_a_to_b, *b), (items_b_to_a, *a)] {
                    for i in list {
                        if let Some(item) = self.items.get_mut(i) {
                            item.holder = Some(to);
                        }
                    }
                }
            }
            ArenaEvent::Hit {
                target,
                hp,
                version,
                ..
            } => {
                if let Some(p) = self.players.get_mut(target).filter(|p| p.hp_v < *version) {
                    (p.hp, p.hp_v) = (*hp, *version);
                }
            }
            ArenaEvent::Died {
                entity,
                x,
                y,
                hp,
                version,
                ..
            } => {
                if let Some(p) = self.players.get_mut(entity) {
                    if p.pos_v < *version {
                        (p.x, p.y, p.pos_v) = (*x, *y, *version);
                    }
                    if p.hp_v < *version {
                        (p.hp, p.hp_v) = (*hp, *version);
                    }
                }
            }
            ArenaEvent::Missed { .. }
            | ArenaEvent::Sprayed { .. }
            | ArenaEvent::Marked { .. }
            | ArenaEvent::Planned { .. } => {}
        }
    }

    /// Compares the view with the origin's world, field by field. Empty means
    /// consistent.
    pub fn check(&self, world: &Arena) -> Vec<Mismatch> {
        let mut out = Vec::new();
        let mut diff = |entity: EntityId, what: String| out.push(Mismatch { entity, what });
        for (id, p) in world.players() {
            match self.players.get(id) {
                None => diff(*id, "player missing from the view".into()),
                Some(v) => {
                    if (v.x, v.y) != (p.x, p.y) {
                        diff(
                            *id,
                            format!("position ({}, {}) vs origin ({}, {})", v.x, v.y, p.x, p.y),
                        );
                    }
                    if v.hp != p.hp {
                        diff(*id, format!("hp {} vs origin {}", v.hp, p.hp));
                    }
                    if v.coins != p.coins {
                        diff(*id, format!("coins {} vs origin {}", v.coins, p.coins));
                    }
                }
            }
        }
        for id in self
            .players
            .keys()
            .filter(|id| world.player(**id).is_none())
        {
            diff(*id, "player in the view no longer exists".into());
        }
        for (id, i) in world.items() {
            match self.items.get(id) {
                None => diff(*id, "item missing from the view".into()),
                Some(v) if v.holder != i.holder => diff(
                    *id,
                    format!("holder {:?} vs origin {:?}", v.holder, i.holder),
                ),
                Some(v) if i.holder.is_none() && (v.x, v.y) != (i.x, i.y) => diff(
                    *id,
                    format!("item at ({}, {}) vs origin ({}, {})", v.x, v.y, i.x, i.y),
                ),
                Some(_) => {}
            }
        }
        out
    }
}

/// The events of `b` after `last`, checked to follow on without a gap, and the
/// channel's last sequence number after them.
fn in_order(
    b: &EventBatch,
    last: u64,
) -> Result<(Vec<&skylane_proto::BatchEvent>, u64), ViewError> {
    let mut next = last + 1;
    let mut fresh = Vec::new();
    for e in b.events.iter().filter(|e| e.seq > last) {
        if e.seq != next {
            return Err(ViewError::Gap {
                channel: b.channel,
                expected: next,
                found: e.seq,
            });
        }
        next += 1;
        fresh.push(e);
    }
    Ok((fresh, next - 1))
}

/// A client's rebuilt view of a tic-tac-toe room (its one world channel).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TttView {
    board: [u8; 9],
    players: Vec<(String, u8)>,
    result: Option<(Option<String>, String)>,
    /// Last sequence applied (keyframe or event).
    seq: Option<u64>,
}

impl TttView {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    /// The board as the view has it.
    pub fn board(&self) -> [u8; 9] {
        self.board
    }

    /// Starts (or restarts) from a keyframe of the world channel.
    pub fn apply_keyframe(&mut self, kf: &Keyframe) -> Result<(), ViewError> {
        if kf.channel != ChannelId::World {
            return Ok(());
        }
        let st: TttState =
            postcard::from_bytes(&kf.state).map_err(|_| ViewError::BadKeyframe(kf.channel))?;
        self.board = st.board;
        self.players = st.players;
        self.result = st.result.map(|r| (r.winner, r.reason));
        self.seq = Some(kf.seq);
        Ok(())
    }

    /// Applies a batch after the keyframe (events it covers are skipped; a gap
    /// is an error).
    pub fn apply_batch(&mut self, b: &EventBatch) -> Result<(), ViewError> {
        let Some(last) = self.seq.filter(|_| b.channel == ChannelId::World) else {
            return Ok(());
        };
        let (fresh, now) = in_order(b, last)?;
        for e in fresh {
            match postcard::from_bytes::<TttEvent>(&e.payload) {
                Ok(TttEvent::Joined { player, mark })
                    if !self.players.iter().any(|(p, _)| *p == player) =>
                {
                    self.players.push((player, mark));
                }
                Ok(TttEvent::Placed { cell, mark, .. }) => {
                    if let Some(c) = self.board.get_mut(usize::from(cell)) {
                        *c = mark;
                    }
                }
                Ok(TttEvent::Over { winner, reason }) => self.result = Some((winner, reason)),
                _ => {}
            }
        }
        self.seq = Some(now);
        Ok(())
    }

    /// Every difference from the room's authoritative state.
    pub fn check(&self, world: &TicTacToe) -> Vec<Mismatch> {
        let mut out = Vec::new();
        for (i, (v, o)) in self.board.iter().zip(world.board()).enumerate() {
            if *v != o {
                out.push(Mismatch {
                    entity: BOARD,
                    what: format!("cell {i}: view {v}, origin {o}"),
                });
            }
        }
        if self.players != world.players() {
            out.push(Mismatch {
                entity: BOARD,
                what: format!(
                    "players: view {:?}, origin {:?}",
                    self.players,
                    world.players()
                ),
            });
        }
        let origin = world.result().map(|r| (r.winner, r.reason));
        if self.result != origin {
            out.push(Mismatch {
                entity: BOARD,
                what: format!("result: view {:?}, origin {:?}", self.result, origin),
            });
        }
        out
    }
}
