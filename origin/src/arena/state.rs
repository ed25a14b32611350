//! The arena's state: players, items, and what the rules and the game loop ask
//! of it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use skylane_proto::{ChannelId, EntityId, RejectCode, TeamId};

use crate::interest::Grid;
use crate::world::{Ctx, Rejection};

use super::config::{ArenaConfig, Roster};

/// A player's avatar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Player {
    /// Version, bumped on every change.
    pub version: u64,
    /// Player id (token subject).
    pub name: String,
    /// Team.
    pub team: TeamId,
    /// Position.
    pub x: f32,
    /// Position.
    pub y: f32,
    /// Hit points.
    pub hp: u32,
    /// Coins.
    pub coins: u64,
    /// Items held.
    pub items: BTreeSet<EntityId>,
    /// Tick of the last move (speed check).
    pub last_move_tick: u64,
    /// Distance the player may still cover at `last_move_tick` without
    /// waiting (the unused part of its movement budget: see
    /// the speed rule).
    #[serde(default)]
    pub move_credit: f32,
    /// Tick of the last shot (cooldown check).
    pub last_fire_tick: Option<u64>,
}

/// Ticks of top-speed movement a move's unused budget carries to the next
/// move, at most.
pub(super) const MOVE_BURST_TICKS: u64 = 15;

/// A player arriving from another zone: it, the items it holds, and the
/// source zone's tick when it left.
pub(super) type Arriving = (Player, Vec<(EntityId, Item)>, u64);

/// An item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Version, bumped on every change.
    pub version: u64,
    /// Position while on the ground.
    pub x: f32,
    /// Position while on the ground.
    pub y: f32,
    /// Holder, if picked up.
    pub holder: Option<EntityId>,
}

/// The arena world.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arena {
    pub(super) cfg: ArenaConfig,
    pub(super) players: BTreeMap<EntityId, Player>,
    pub(super) items: BTreeMap<EntityId, Item>,
    pub(super) next_entity: u64,
    /// Open offers by (offerer, id).
    #[serde(with = "as_pairs")]
    pub(super) offers: BTreeMap<(EntityId, u64), super::Offer>,
    /// Closed offers (the last `CLOSED_KEPT`): when and how.
    #[serde(with = "as_pairs")]
    pub(super) closed: BTreeMap<(EntityId, u64), (u64, super::OfferEnd)>,
    pub(super) closed_order: std::collections::VecDeque<(EntityId, u64)>,
    /// Gifts made so far (their transaction ids).
    pub(super) gifts: u64,
    /// The cells this arena's zone owns, when it is one zone of a zoned
    /// world (its events go on those cells only).
    #[serde(default)]
    pub(super) zone: Option<skylane_proto::zones::ZoneRect>,
    /// Ledger transactions since the engine last drained them (not state:
    /// drained every tick).
    #[serde(skip)]
    pub(super) ledger: Vec<crate::ledger::LedgerTx>,
}

/// A map with non-string keys as a sequence of pairs (JSON has string keys
/// only; postcard does not care).
mod as_pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        m: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub(super) fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

/// A deterministic point on the map from a seed (splitmix64).
pub(super) fn scatter(seed: u64, w: f32, h: f32) -> (f32, f32) {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let a = mix(seed);
    let b = mix(a);
    (
        (a % 10_000) as f32 / 10_000.0 * w,
        (b % 10_000) as f32 / 10_000.0 * h,
    )
}

pub(super) fn dist(a: (f32, f32), b: (f32, f32)) -> f32 {
    ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
}

impl Arena {
    /// A new arena with items scattered deterministically.
    pub fn new(cfg: ArenaConfig) -> Self {
        let mut arena = Self {
            cfg,
            players: BTreeMap::new(),
            items: BTreeMap::new(),
            next_entity: 1,
            offers: BTreeMap::new(),
            closed: BTreeMap::new(),
            closed_order: std::collections::VecDeque::new(),
            gifts: 0,
            zone: None,
            ledger: Vec::new(),
        };
        for i in 0..cfg.items {
            let id = arena.fresh_id();
            let (x, y) = scatter(u64::from(i) ^ 0xA5A5, cfg.width, cfg.height);
            arena.items.insert(
                id,
                Item {
                    version: 1,
                    x,
                    y,
                    holder: None,
                },
            );
        }
        arena
    }

    /// The rules.
    pub fn config(&self) -> &ArenaConfig {
        &self.cfg
    }

    /// The interest grid this arena's events use.
    pub fn grid(&self) -> Grid {
        Grid {
            width: self.cfg.width,
            height: self.cfg.height,
            cell: self.cfg.cell,
            radius: 1,
            margin: self.cfg.cell * 0.1,
            clip: self.zone,
        }
    }

    /// The channel announcing a player event at `(x, y)` (see [`Roster`]).
    pub(super) fn announce_on(&self, x: f32, y: f32) -> ChannelId {
        match self.cfg.roster {
            Roster::World => ChannelId::World,
            Roster::Cells => self.grid().channel_of(x, y),
        }
    }

    /// The refusal of an action naming `who`, which is not here: a rule
    /// broken in a whole world; in a zone of a zoned world, most likely a
    /// player in another zone (of actions, only shots and gifts reach across),
    /// so refused without counting against the actor.
    pub(super) fn absent(&self, who: EntityId, what: &str) -> Rejection {
        if self.zone.is_some() {
            return Rejection::benign(
                RejectCode::NotOwner,
                format!("{who} is not in this zone (only shots and gifts reach across zones, to players near the border; offers and pickups do not)"),
            );
        }
        Rejection::new(RejectCode::NotOwner, format!("{who} {what}"))
    }

    pub(super) fn fresh_id(&mut self) -> EntityId {
        let id = EntityId(self.next_entity);
        self.next_entity += 1;
        id
    }

    /// A player's avatar.
    pub fn player(&self, id: EntityId) -> Option<&Player> {
        self.players.get(&id)
    }

    /// An item.
    pub fn item(&self, id: EntityId) -> Option<&Item> {
        self.items.get(&id)
    }

    /// Every item.
    pub fn items(&self) -> impl Iterator<Item = (&EntityId, &Item)> {
        self.items.iter()
    }

    /// Every player.
    pub fn players(&self) -> impl Iterator<Item = (&EntityId, &Player)> {
        self.players.iter()
    }

    /// A player arriving from another zone, checked: it decodes, neither it
    /// nor its items exist here, and it brings exactly the items it holds.
    pub(super) fn decode_import(&self, entity: EntityId, state: &[u8]) -> Result<Arriving, String> {
        let (p, items, tick): Arriving =
            postcard::from_bytes(state).map_err(|e| format!("not an arena player: {e}"))?;
        if self.players.contains_key(&entity)
            || items.iter().any(|(i, _)| self.items.contains_key(i))
        {
            return Err(format!("{entity:?} or its items exist here already"));
        }
        let whole = items.len() == p.items.len()
            && items
                .iter()
                .all(|(i, it)| p.items.contains(i) && it.holder == Some(entity));
        if !whole {
            return Err(format!("{entity:?} arrived without the items it holds"));
        }
        Ok((p, items, tick))
    }

    /// Total coins of all players (conserved by trades).
    pub fn total_coins(&self) -> u64 {
        self.players.values().map(|p| p.coins).sum()
    }

    /// Places a player exactly (tests and scenario set-up).
    pub fn place(&mut self, id: EntityId, x: f32, y: f32) {
        if let Some(p) = self.players.get_mut(&id) {
            p.x = x;
            p.y = y;
            p.version += 1;
        }
    }

    /// How far `p` may move at `tick`: the top speed times the ticks since
    /// its last move, plus what that move left unused (at most
    /// [`MOVE_BURST_TICKS`]' worth). Two moves that reach the origin in one
    /// tick (datagram jitter) share what the time allowed, so an honest
    /// client is not refused for its network, many moves in one tick never
    /// add up to more, and no one moves faster than the top speed on
    /// average.
    pub(super) fn move_budget(&self, p: &Player, tick: u64, tick_hz: u32) -> f32 {
        let per_tick = self.cfg.max_speed / tick_hz.max(1) as f32;
        let ticks = tick.saturating_sub(p.last_move_tick);
        let carried = p.move_credit.min(per_tick * MOVE_BURST_TICKS as f32);
        carried + per_tick * ticks as f32
    }

    pub(super) fn me(&self, ctx: &Ctx) -> Result<&Player, Rejection> {
        self.players
            .get(&ctx.avatar)
            .ok_or_else(|| Rejection::new(RejectCode::NotOwner, "no avatar in this world"))
    }

    pub(super) fn nearest_target(&self, shooter: EntityId, x: f32, y: f32) -> Option<EntityId> {
        self.players
            .iter()
            .filter(|(id, _)| **id != shooter)
            .map(|(id, p)| (id, dist((p.x, p.y), (x, y))))
            .filter(|(_, d)| *d <= self.cfg.hit_radius)
            .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(b.0)))
            .map(|(id, _)| *id)
    }
}
