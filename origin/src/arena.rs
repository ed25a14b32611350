//! "arena": the reference game used by the demo, the load generator and the tests.
//!
//! Players move on a 2-D map under a maximum speed, pick up items, trade items and
//! coins with each other, and fire at points on the map (a shot hits the nearest
//! living player within a small radius of the aim point, if in range and off
//! cooldown). Dying respawns the player at a position derived from the tick, with
//! full hit points. Every entity carries a version bumped on each change.
//!
//! Actions and events are postcard-encoded [`ArenaAction`] and [`ArenaEvent`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use skylane_proto::{ChannelId, EntityId, EventClass, Hash32, Payload, RejectCode, TeamId};

use crate::interest::Grid;
use crate::world::{Ctx, Emit, Observation, Rejection, Validator, World};

/// Rules of an arena.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ArenaConfig {
    /// Map width (units).
    pub width: f32,
    /// Map height (units).
    pub height: f32,
    /// Area-of-interest cell side.
    pub cell: f32,
    /// Maximum speed, units per second.
    pub max_speed: f32,
    /// Ticks between two shots of one player.
    pub fire_cooldown_ticks: u64,
    /// Longest shot.
    pub fire_range: f32,
    /// How close to a player an aim point must be to hit.
    pub hit_radius: f32,
    /// Damage per hit.
    pub damage: u32,
    /// Hit points at spawn.
    pub start_hp: u32,
    /// Coins at spawn.
    pub start_coins: u64,
    /// Items placed on the map at creation.
    pub items: u32,
    /// Longest reach for a pickup.
    pub pickup_range: f32,
    /// Number of teams players are spread over when they have none.
    pub teams: u16,
    /// Who hears about players arriving, leaving and dying.
    pub roster: Roster,
}

/// Where the arena announces players (spawns, departures, deaths) and keeps its
/// roster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Roster {
    /// On the world channel: everyone hears of everyone, and the world and team
    /// keyframes list every player. Suits an arena of a few hundred players; its
    /// cost grows with the square of the players.
    #[default]
    World,
    /// On the cell where it happens: a player learns of others through the cells
    /// around it, and the world and team keyframes carry no players. For worlds of
    /// thousands of players.
    Cells,
}

impl Default for ArenaConfig {
    fn default() -> Self {
        Self {
            width: 1000.0,
            height: 1000.0,
            cell: 100.0,
            max_speed: 10.0,
            fire_cooldown_ticks: 10,
            fire_range: 60.0,
            hit_radius: 1.5,
            damage: 25,
            start_hp: 100,
            start_coins: 100,
            items: 200,
            pickup_range: 3.0,
            teams: 2,
            roster: Roster::World,
        }
    }
}

/// What a player asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ArenaAction {
    /// Move the avatar to a point.
    Move {
        /// Target x.
        x: f32,
        /// Target y.
        y: f32,
    },
    /// Pick an item up from the ground.
    PickUp {
        /// The item.
        item: EntityId,
    },
    /// Exchange coins and items with another player, atomically.
    Trade {
        /// The other player's avatar.
        partner: EntityId,
        /// Coins given to the partner.
        give_coins: u64,
        /// Items given to the partner.
        give_items: Vec<EntityId>,
        /// Coins received from the partner.
        get_coins: u64,
        /// Items received from the partner.
        get_items: Vec<EntityId>,
    },
    /// Fire at a point.
    Fire {
        /// Aim x.
        x: f32,
        /// Aim y.
        y: f32,
    },
    /// Paint a spray (decal image bytes) where the avatar stands: bulk traffic to
    /// everyone who sees that cell. Size is bounded by the engine's payload limit.
    Spray {
        /// Image bytes (opaque to the server).
        data: Vec<u8>,
    },
    /// Put a map marker for everyone in the world: critical, must arrive fast.
    Mark {
        /// Marker x.
        x: f32,
        /// Marker y.
        y: f32,
    },
    /// Share a plan with the team only (a rally point): goes on the team channel,
    /// so neither the other team nor spectators ever see it.
    Plan {
        /// Rally x.
        x: f32,
        /// Rally y.
        y: f32,
    },
}

impl ArenaAction {
    /// Encodes the action as an action payload.
    pub fn encode(&self) -> Payload {
        Payload::from(postcard::to_stdvec(self).unwrap_or_default())
    }
}

/// What happened, as carried in events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ArenaEvent {
    /// A player joined.
    Spawned {
        /// Avatar.
        entity: EntityId,
        /// Player id (the token's subject), so a client can find its own avatar.
        player: String,
        /// Position.
        x: f32,
        /// Position.
        y: f32,
        /// Team.
        team: TeamId,
        /// Hit points.
        hp: u32,
        /// Coins.
        coins: u64,
        /// Entity version after the change (receivers keep the newest).
        version: u64,
    },
    /// A player left.
    Left {
        /// Avatar.
        entity: EntityId,
    },
    /// A player moved.
    Moved {
        /// Avatar.
        entity: EntityId,
        /// Position.
        x: f32,
        /// Position.
        y: f32,
        /// Entity version after the change.
        version: u64,
    },
    /// An item was picked up.
    PickedUp {
        /// Item.
        item: EntityId,
        /// Avatar.
        by: EntityId,
        /// Item version after the change.
        version: u64,
    },
    /// A trade completed.
    Traded {
        /// Initiator.
        a: EntityId,
        /// Partner.
        b: EntityId,
        /// Coins a → b.
        coins_a_to_b: u64,
        /// Coins b → a.
        coins_b_to_a: u64,
        /// Items a → b.
        items_a_to_b: Vec<EntityId>,
        /// Items b → a.
        items_b_to_a: Vec<EntityId>,
        /// Coins of a after the trade.
        a_coins: u64,
        /// Coins of b after the trade.
        b_coins: u64,
        /// Version of a after the trade.
        a_version: u64,
        /// Version of b after the trade.
        b_version: u64,
    },
    /// A shot hit.
    Hit {
        /// Shooter.
        shooter: EntityId,
        /// Target.
        target: EntityId,
        /// Target's hit points after the hit.
        hp: u32,
        /// Target's version after the hit.
        version: u64,
    },
    /// A shot missed.
    Missed {
        /// Shooter.
        shooter: EntityId,
    },
    /// A spray was painted (bulk, on the sprayer's cell channel).
    Sprayed {
        /// Sprayer.
        by: EntityId,
        /// Where.
        x: f32,
        /// Where.
        y: f32,
        /// Image bytes.
        data: Vec<u8>,
    },
    /// A map marker was placed (critical, on the world channel).
    Marked {
        /// Who placed it.
        by: EntityId,
        /// Marker x.
        x: f32,
        /// Marker y.
        y: f32,
    },
    /// A team-private plan (on the team's channel only).
    Planned {
        /// Who shared it.
        by: EntityId,
        /// Rally x.
        x: f32,
        /// Rally y.
        y: f32,
    },
    /// A player died and respawned.
    Died {
        /// Victim.
        entity: EntityId,
        /// Killer.
        by: EntityId,
        /// Respawn position.
        x: f32,
        /// Respawn position.
        y: f32,
        /// Hit points after respawning.
        hp: u32,
        /// Victim's version after respawning.
        version: u64,
    },
}

impl ArenaEvent {
    /// Decodes an event payload.
    pub fn decode(payload: &[u8]) -> Option<Self> {
        postcard::from_bytes(payload).ok()
    }

    fn payload(&self) -> Payload {
        Payload::from(postcard::to_stdvec(self).unwrap_or_default())
    }
}

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
    /// Tick of the last shot (cooldown check).
    pub last_fire_tick: Option<u64>,
}

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
    cfg: ArenaConfig,
    players: BTreeMap<EntityId, Player>,
    items: BTreeMap<EntityId, Item>,
    next_entity: u64,
}

/// A deterministic point on the map from a seed (splitmix64).
fn scatter(seed: u64, w: f32, h: f32) -> (f32, f32) {
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

fn dist(a: (f32, f32), b: (f32, f32)) -> f32 {
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
        }
    }

    /// The channel announcing a player event at `(x, y)` (see [`Roster`]).
    fn announce_on(&self, x: f32, y: f32) -> ChannelId {
        match self.cfg.roster {
            Roster::World => ChannelId::World,
            Roster::Cells => self.grid().channel_of(x, y),
        }
    }

    fn fresh_id(&mut self) -> EntityId {
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

    fn me(&self, ctx: &Ctx) -> Result<&Player, Rejection> {
        self.players
            .get(&ctx.avatar)
            .ok_or_else(|| Rejection::new(RejectCode::NotOwner, "no avatar in this world"))
    }

    fn nearest_target(&self, shooter: EntityId, x: f32, y: f32) -> Option<EntityId> {
        self.players
            .iter()
            .filter(|(id, _)| **id != shooter)
            .map(|(id, p)| (id, dist((p.x, p.y), (x, y))))
            .filter(|(_, d)| *d <= self.cfg.hit_radius)
            .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(b.0)))
            .map(|(id, _)| *id)
    }
}

fn check_ownership(w: &Arena, ctx: &Ctx, a: &ArenaAction) -> Result<(), Rejection> {
    let me = w.me(ctx)?;
    match a {
        ArenaAction::PickUp { item } => match w.items.get(item) {
            None => Err(Rejection::new(
                RejectCode::NotOwner,
                format!("{item} does not exist"),
            )),
            Some(i) if i.holder.is_some() => Err(Rejection::new(
                RejectCode::NotOwner,
                format!("{item} is already held"),
            )),
            Some(_) => Ok(()),
        },
        ArenaAction::Trade {
            partner,
            give_items,
            get_items,
            ..
        } => {
            if *partner == ctx.avatar {
                return Err(Rejection::new(
                    RejectCode::NotOwner,
                    "cannot trade with yourself",
                ));
            }
            let Some(other) = w.players.get(partner) else {
                return Err(Rejection::new(
                    RejectCode::NotOwner,
                    format!("{partner} is not a player"),
                ));
            };
            if let Some(i) = give_items.iter().find(|i| !me.items.contains(i)) {
                return Err(Rejection::new(
                    RejectCode::NotOwner,
                    format!("you do not hold {i}"),
                ));
            }
            if let Some(i) = get_items.iter().find(|i| !other.items.contains(i)) {
                return Err(Rejection::new(
                    RejectCode::NotOwner,
                    format!("{partner} does not hold {i}"),
                ));
            }
            let mut seen = BTreeSet::new();
            if give_items.iter().chain(get_items).any(|i| !seen.insert(*i)) {
                return Err(Rejection::new(
                    RejectCode::Malformed,
                    "an item is listed twice",
                ));
            }
            Ok(())
        }
        ArenaAction::Move { .. }
        | ArenaAction::Fire { .. }
        | ArenaAction::Spray { .. }
        | ArenaAction::Mark { .. }
        | ArenaAction::Plan { .. } => Ok(()),
    }
}

fn check_speed(w: &Arena, ctx: &Ctx, a: &ArenaAction) -> Result<(), Rejection> {
    let (ArenaAction::Move { x, y } | ArenaAction::Mark { x, y } | ArenaAction::Plan { x, y }) = a
    else {
        return Ok(());
    };
    if !x.is_finite()
        || !y.is_finite()
        || *x < 0.0
        || *y < 0.0
        || *x > w.cfg.width
        || *y > w.cfg.height
    {
        return Err(Rejection::new(
            RejectCode::Malformed,
            "position outside the map",
        ));
    }
    if matches!(a, ArenaAction::Mark { .. } | ArenaAction::Plan { .. }) {
        return Ok(());
    }
    let me = w.me(ctx)?;
    let ticks = ctx.tick.saturating_sub(me.last_move_tick).max(1);
    let allowed = w.cfg.max_speed * ticks as f32 / ctx.tick_hz.max(1) as f32;
    let d = dist((me.x, me.y), (*x, *y));
    // 1% slack for float rounding in honest clients.
    if d > allowed * 1.01 + 1e-3 {
        return Err(Rejection::new(
            RejectCode::Speed,
            format!("moved {d:.2} units in {ticks} ticks (max {allowed:.2})"),
        ));
    }
    Ok(())
}

fn check_cooldown(w: &Arena, ctx: &Ctx, a: &ArenaAction) -> Result<(), Rejection> {
    let ArenaAction::Fire { .. } = a else {
        return Ok(());
    };
    let me = w.me(ctx)?;
    match me.last_fire_tick {
        Some(t) if ctx.tick < t + w.cfg.fire_cooldown_ticks => Err(Rejection::new(
            RejectCode::Cooldown,
            format!(
                "fired {} ticks after the last shot (cooldown {})",
                ctx.tick - t,
                w.cfg.fire_cooldown_ticks
            ),
        )),
        _ => Ok(()),
    }
}

fn check_range(w: &Arena, ctx: &Ctx, a: &ArenaAction) -> Result<(), Rejection> {
    let me = w.me(ctx)?;
    let (target, limit, what) = match a {
        ArenaAction::Fire { x, y } => ((*x, *y), w.cfg.fire_range, "shot"),
        ArenaAction::PickUp { item } => match w.items.get(item) {
            Some(i) => ((i.x, i.y), w.cfg.pickup_range, "pickup"),
            None => return Ok(()),
        },
        _ => return Ok(()),
    };
    let d = dist((me.x, me.y), target);
    if d.is_nan() || d > limit {
        return Err(Rejection::new(
            RejectCode::Range,
            format!("{what} at {d:.1} units (max {limit})"),
        ));
    }
    Ok(())
}

fn check_resources(w: &Arena, ctx: &Ctx, a: &ArenaAction) -> Result<(), Rejection> {
    let ArenaAction::Trade {
        partner,
        give_coins,
        get_coins,
        ..
    } = a
    else {
        return Ok(());
    };
    let me = w.me(ctx)?;
    if me.coins < *give_coins {
        return Err(Rejection::new(
            RejectCode::Resources,
            format!("{} coins < {give_coins}", me.coins),
        ));
    }
    if let Some(other) = w.players.get(partner) {
        if other.coins < *get_coins {
            return Err(Rejection::new(
                RejectCode::Resources,
                format!("{partner} has {} coins < {get_coins}", other.coins),
            ));
        }
    }
    Ok(())
}

impl World for Arena {
    type Action = ArenaAction;

    fn name(&self) -> &str {
        "arena"
    }

    fn decode_action(&self, _class: EventClass, payload: &[u8]) -> Result<ArenaAction, Rejection> {
        postcard::from_bytes(payload)
            .map_err(|e| Rejection::new(RejectCode::Malformed, e.to_string()))
    }

    fn validators(&self) -> Vec<(&'static str, Validator<Self>)> {
        vec![
            ("ownership", check_ownership),
            ("speed", check_speed),
            ("cooldown", check_cooldown),
            ("range", check_range),
            ("resources", check_resources),
        ]
    }

    fn version(&self, entity: EntityId) -> Option<u64> {
        self.players
            .get(&entity)
            .map(|p| p.version)
            .or_else(|| self.items.get(&entity).map(|i| i.version))
    }

    fn join(&mut self, player: &str, team: Option<TeamId>, tick: u64, out: &mut Emit) -> EntityId {
        let id = self.fresh_id();
        let (x, y) = scatter(id.0 ^ tick.rotate_left(17), self.cfg.width, self.cfg.height);
        let team = team.unwrap_or(TeamId((id.0 % u64::from(self.cfg.teams.max(1))) as u16));
        self.players.insert(
            id,
            Player {
                version: 1,
                name: player.to_owned(),
                team,
                x,
                y,
                hp: self.cfg.start_hp,
                coins: self.cfg.start_coins,
                items: BTreeSet::new(),
                last_move_tick: tick,
                last_fire_tick: None,
            },
        );
        let channel = self.announce_on(x, y);
        out.push(
            channel,
            EventClass::State,
            Some(id),
            ArenaEvent::Spawned {
                entity: id,
                player: player.to_owned(),
                x,
                y,
                team,
                hp: self.cfg.start_hp,
                coins: self.cfg.start_coins,
                version: 1,
            }
            .payload(),
        );
        id
    }

    fn leave(&mut self, avatar: EntityId, _tick: u64, out: &mut Emit) {
        if let Some(p) = self.players.remove(&avatar) {
            // Held items drop where the player stood.
            for item in p.items {
                if let Some(i) = self.items.get_mut(&item) {
                    i.holder = None;
                    i.x = p.x;
                    i.y = p.y;
                    i.version += 1;
                }
            }
            let channel = self.announce_on(p.x, p.y);
            out.push(
                channel,
                EventClass::State,
                Some(avatar),
                ArenaEvent::Left { entity: avatar }.payload(),
            );
        }
    }

    fn apply(&mut self, ctx: &Ctx, action: &ArenaAction, out: &mut Emit) -> Observation {
        let grid = self.grid();
        let me = ctx.avatar;
        match action {
            ArenaAction::Move { x, y } => {
                if let Some(p) = self.players.get_mut(&me) {
                    p.x = *x;
                    p.y = *y;
                    p.last_move_tick = ctx.tick;
                    p.version += 1;
                    out.push(
                        grid.channel_of(*x, *y),
                        EventClass::Movement,
                        Some(me),
                        ArenaEvent::Moved {
                            entity: me,
                            x: *x,
                            y: *y,
                            version: p.version,
                        }
                        .payload(),
                    );
                }
                Observation::default()
            }
            ArenaAction::PickUp { item } => {
                if let (Some(i), Some(p)) = (self.items.get_mut(item), self.players.get_mut(&me)) {
                    i.holder = Some(me);
                    i.version += 1;
                    p.items.insert(*item);
                    p.version += 1;
                    out.push(
                        grid.channel_of(i.x, i.y),
                        EventClass::Critical,
                        Some(*item),
                        ArenaEvent::PickedUp {
                            item: *item,
                            by: me,
                            version: i.version,
                        }
                        .payload(),
                    );
                }
                Observation::default()
            }
            ArenaAction::Trade {
                partner,
                give_coins,
                give_items,
                get_coins,
                get_items,
            } => {
                // Validation checked both sides; move everything at once.
                let (Some(mut a), Some(mut b)) =
                    (self.players.remove(&me), self.players.remove(partner))
                else {
                    return Observation::default();
                };
                a.coins = a.coins - give_coins + get_coins;
                b.coins = b.coins - get_coins + give_coins;
                for i in give_items {
                    a.items.remove(i);
                    b.items.insert(*i);
                }
                for i in get_items {
                    b.items.remove(i);
                    a.items.insert(*i);
                }
                for i in give_items.iter().chain(get_items) {
                    if let Some(item) = self.items.get_mut(i) {
                        item.holder = Some(if give_items.contains(i) { *partner } else { me });
                        item.version += 1;
                    }
                }
                a.version += 1;
                b.version += 1;
                let (a_coins, b_coins, a_version, b_version) =
                    (a.coins, b.coins, a.version, b.version);
                self.players.insert(me, a);
                self.players.insert(*partner, b);
                out.push(
                    ChannelId::World,
                    EventClass::State,
                    Some(me),
                    ArenaEvent::Traded {
                        a: me,
                        b: *partner,
                        coins_a_to_b: *give_coins,
                        coins_b_to_a: *get_coins,
                        items_a_to_b: give_items.clone(),
                        items_b_to_a: get_items.clone(),
                        a_coins,
                        b_coins,
                        a_version,
                        b_version,
                    }
                    .payload(),
                );
                Observation::default()
            }
            ArenaAction::Spray { data } => {
                if let Some(p) = self.players.get(&me) {
                    let (x, y) = (p.x, p.y);
                    out.push(
                        grid.channel_of(x, y),
                        EventClass::Bulk,
                        Some(me),
                        ArenaEvent::Sprayed {
                            by: me,
                            x,
                            y,
                            data: data.clone(),
                        }
                        .payload(),
                    );
                }
                Observation::default()
            }
            ArenaAction::Mark { x, y } => {
                out.push(
                    ChannelId::World,
                    EventClass::Critical,
                    Some(me),
                    ArenaEvent::Marked {
                        by: me,
                        x: *x,
                        y: *y,
                    }
                    .payload(),
                );
                Observation::default()
            }
            ArenaAction::Plan { x, y } => {
                if let Some(team) = self.players.get(&me).map(|p| p.team) {
                    out.push(
                        ChannelId::Team(team),
                        EventClass::Critical,
                        Some(me),
                        ArenaEvent::Planned {
                            by: me,
                            x: *x,
                            y: *y,
                        }
                        .payload(),
                    );
                }
                Observation::default()
            }
            ArenaAction::Fire { x, y } => {
                let target = self.nearest_target(me, *x, *y);
                if let Some(p) = self.players.get_mut(&me) {
                    p.last_fire_tick = Some(ctx.tick);
                    p.version += 1;
                }
                let Some(target) = target else {
                    out.push(
                        grid.channel_of(*x, *y),
                        EventClass::Critical,
                        Some(me),
                        ArenaEvent::Missed { shooter: me }.payload(),
                    );
                    return Observation {
                        attack: true,
                        hit: false,
                        reaction_us: None,
                    };
                };
                let (roster, w, h, start_hp, dmg) = (
                    self.cfg.roster,
                    self.cfg.width,
                    self.cfg.height,
                    self.cfg.start_hp,
                    self.cfg.damage,
                );
                if let Some(t) = self.players.get_mut(&target) {
                    t.hp = t.hp.saturating_sub(dmg);
                    t.version += 1;
                    out.push(
                        grid.channel_of(t.x, t.y),
                        EventClass::Critical,
                        Some(target),
                        ArenaEvent::Hit {
                            shooter: me,
                            target,
                            hp: t.hp,
                            version: t.version,
                        }
                        .payload(),
                    );
                    if t.hp == 0 {
                        let died_in = grid.channel_of(t.x, t.y);
                        let (nx, ny) = scatter(target.0 ^ ctx.tick.rotate_left(29), w, h);
                        t.x = nx;
                        t.y = ny;
                        t.hp = start_hp;
                        t.last_move_tick = ctx.tick;
                        // A second change (the respawn): a second version, so receivers
                        // that see the hit after the death keep the respawn.
                        t.version += 1;
                        let died = ArenaEvent::Died {
                            entity: target,
                            by: me,
                            x: nx,
                            y: ny,
                            hp: start_hp,
                            version: t.version,
                        }
                        .payload();
                        // With a spatial roster, both where it died and where it
                        // respawns hear of it.
                        let channels = match roster {
                            Roster::World => vec![ChannelId::World],
                            Roster::Cells => {
                                let respawn = grid.channel_of(nx, ny);
                                let mut c = vec![died_in];
                                if respawn != died_in {
                                    c.push(respawn);
                                }
                                c
                            }
                        };
                        for c in channels {
                            out.push(c, EventClass::Critical, Some(target), died.clone());
                        }
                    }
                }
                // No reaction time: arena has no visibility model, and "time since the
                // target last moved" is near zero for any target that keeps moving,
                // which flagged honest players in tests.
                Observation {
                    attack: true,
                    hit: true,
                    reaction_us: None,
                }
            }
        }
    }

    fn describe(&self, entities: &[EntityId]) -> Payload {
        #[derive(Serialize)]
        enum Described<'a> {
            Player(EntityId, &'a Player),
            Item(EntityId, &'a Item),
            Gone(EntityId),
        }
        let list: Vec<Described<'_>> = entities
            .iter()
            .map(|e| match (self.players.get(e), self.items.get(e)) {
                (Some(p), _) => Described::Player(*e, p),
                (None, Some(i)) => Described::Item(*e, i),
                (None, None) => Described::Gone(*e),
            })
            .collect();
        Payload::from(postcard::to_stdvec(&list).unwrap_or_default())
    }

    fn position(&self, entity: EntityId) -> Option<(f32, f32)> {
        self.players.get(&entity).map(|p| (p.x, p.y))
    }

    fn team(&self, entity: EntityId) -> Option<TeamId> {
        self.players.get(&entity).map(|p| p.team)
    }

    /// Spectators start from every player as a `Spawned` event (items are not part
    /// of the public view; pick-ups arrive as events).
    fn spectator_keyframe(&self) -> Vec<(EntityId, Payload)> {
        self.players
            .iter()
            .map(|(id, p)| {
                let e = ArenaEvent::Spawned {
                    entity: *id,
                    player: p.name.clone(),
                    x: p.x,
                    y: p.y,
                    team: p.team,
                    hp: p.hp,
                    coins: p.coins,
                    version: p.version,
                };
                (*id, e.payload())
            })
            .collect()
    }

    fn channel_state(&self, channel: ChannelId, grid: &Grid) -> Payload {
        // A spatial roster keeps the world and team keyframes free of players (and
        // items): each would otherwise list the whole world to everyone.
        let spatial = self.cfg.roster == Roster::Cells;
        let in_channel = |x: f32, y: f32| match channel {
            ChannelId::World => !spatial,
            ChannelId::Cell { .. } => grid.channel_of(x, y) == channel,
            ChannelId::Team(_) => false,
        };
        let players: Vec<(&EntityId, &Player)> = self
            .players
            .iter()
            .filter(|(_, p)| match channel {
                ChannelId::Team(t) => !spatial && p.team == t,
                _ => in_channel(p.x, p.y),
            })
            .collect();
        let items: Vec<(&EntityId, &Item)> = self
            .items
            .iter()
            .filter(|(_, i)| i.holder.is_none() && in_channel(i.x, i.y))
            .collect();
        Payload::from(postcard::to_stdvec(&(players, items)).unwrap_or_default())
    }

    fn diff(&self, other: &Self) -> Vec<EntityId> {
        let mut out: BTreeSet<EntityId> = BTreeSet::new();
        for (id, p) in &self.players {
            if other.players.get(id) != Some(p) {
                out.insert(*id);
            }
        }
        out.extend(
            other
                .players
                .keys()
                .filter(|id| !self.players.contains_key(id)),
        );
        for (id, i) in &self.items {
            if other.items.get(id) != Some(i) {
                out.insert(*id);
            }
        }
        out.extend(other.items.keys().filter(|id| !self.items.contains_key(id)));
        out.into_iter().collect()
    }

    fn state_hash(&self) -> Hash32 {
        let mut h = Sha256::new();
        h.update(b"skylane/arena/1");
        h.update(postcard::to_stdvec(self).unwrap_or_default());
        Hash32(h.finalize().into())
    }
}
