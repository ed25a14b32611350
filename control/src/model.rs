//! What the control plane stores: nodes, world specs, owners, world status, and
//! the cluster view a watch hands out. Plain data, serialised as JSON (operators
//! read these records with `etcdctl get --prefix`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use skylane_proto::zones::{ZoneIdx, ZoneLayout};
use skylane_proto::WorldId;

/// Largest tick rate a world spec may ask for.
pub const MAX_TICK_HZ: u32 = 240;
/// Largest number of players one world may hold.
pub const MAX_WORLD_CAPACITY: u32 = 100_000;
/// Longest game, map or region name.
pub const MAX_NAME_LEN: usize = 64;

/// What a node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// Hosts worlds.
    Origin,
    /// Terminates clients.
    Relay,
    /// Turns tickets into worlds.
    Matchmaker,
}

impl NodeKind {
    /// The lowercase name used in keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Origin => "origin",
            Self::Relay => "relay",
            Self::Matchmaker => "matchmaker",
        }
    }
}

/// A node as it registers itself (under its lease: it disappears when the node
/// stops renewing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Unique name in the cluster (`origin-eu-1`).
    pub id: String,
    /// Role.
    pub kind: NodeKind,
    /// Where peers reach it over QUIC (`ip:port`).
    pub addr: String,
    /// The name its certificate carries (what a connecting peer checks).
    pub tls_name: String,
    /// Its admin HTTP address, if it serves one.
    #[serde(default)]
    pub admin: Option<String>,
    /// Region (`eu`, `us-east`).
    pub region: String,
    /// Latitude and longitude, when known (placement prefers nearby origins).
    #[serde(default)]
    pub coords: Option<(f64, f64)>,
    /// Origins: how many worlds it will host.
    pub capacity: u32,
    /// Origins: the games it can run (registered `World` implementations).
    #[serde(default)]
    pub games: Vec<String>,
    /// What the node reports as its current load (worlds hosted, sessions...);
    /// informational: placement counts the worlds placed on it itself.
    #[serde(default)]
    pub load: u32,
    /// Origins: the Ed25519 public key (hex) it signs standby attestations and
    /// checkpoint co-signatures with, for whoever hands players the keys of a
    /// world's servers (`ClientBuilder::cosigner_key`).
    #[serde(default)]
    pub attestation_key: Option<String>,
    /// Relays: the measured round trip of each direct origin link, by the
    /// origin's node id, milliseconds (re-published as it changes): with a
    /// client's RTT to the relay, a matchmaker's estimate of its RTT to each
    /// origin.
    #[serde(default)]
    pub origin_rtt_ms: BTreeMap<String, u32>,
}

impl NodeInfo {
    /// A relay `relay-<id>` reachable at `addr` with a certificate for
    /// `tls_name`, in `region` (no admin address, no coordinates: set them
    /// with struct update syntax).
    pub fn relay(id: u32, addr: impl ToString, tls_name: &str, region: &str) -> Self {
        Self {
            id: format!("relay-{id}"),
            kind: NodeKind::Relay,
            addr: addr.to_string(),
            tls_name: tls_name.into(),
            admin: None,
            region: region.into(),
            coords: None,
            capacity: 0,
            games: Vec::new(),
            load: 0,
            attestation_key: None,
            origin_rtt_ms: BTreeMap::new(),
        }
    }
}

/// What a world is: which game, how fast it ticks, on which map, for how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorldSpec {
    /// The game (a `World` implementation registered on origins by this name).
    pub game: String,
    /// Ticks per second.
    pub tick_hz: u32,
    /// The map (game-specific; empty for the game's default).
    #[serde(default)]
    pub map: String,
    /// Most players at once; a full world refuses joins.
    pub capacity: u32,
    /// Fewest players to start with after the start timer.
    #[serde(default = "one")]
    pub min_players: u32,
    /// How long a world waits for more players once it has the minimum, in
    /// milliseconds (0: start only when full).
    #[serde(default)]
    pub start_after_ms: u64,
    /// Preferred region for placement (`None`: anywhere).
    #[serde(default)]
    pub region: Option<String>,
    /// Standby origins that follow the world and take it over if its owner
    /// fails (`None`: one when another origin runs the game, else none).
    #[serde(default)]
    pub standbys: Option<u32>,
    /// Who asked for it (`matchmaker/{queue}` for a matchmaker's worlds;
    /// `None`: an operator): how a matchmaker recognises a world it placed
    /// but never handed to players (its leader died mid-placement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// A zoned world: its map split into static zones, each a world record
    /// of its own (owned, replicated and failed over like a world). `None`:
    /// one world on one origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zones: Option<Box<ZoneSpec>>,
    /// Set by the control plane on a zone's record: the world and zone it
    /// runs. Refused in a spec a client creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_of: Option<ZoneOf>,
}

/// How a zoned world is split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneSpec {
    /// The zones (rectangles of whole cells covering the grid once).
    pub layout: ZoneLayout,
    /// How far past its zone's border an avatar goes before it is handed
    /// over, in map units (0 to one cell).
    #[serde(default = "default_hysteresis")]
    pub hysteresis: f32,
    /// How near a border an entity is mirrored to the neighbouring zone, in
    /// map units (0 to four cells).
    #[serde(default = "default_margin")]
    pub margin: f32,
}

// `validate` refuses non-finite numbers, so equality is an equivalence.
impl Eq for ZoneSpec {}

fn default_hysteresis() -> f32 {
    10.0
}

fn default_margin() -> f32 {
    20.0
}

/// Which zone of which world a world record runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneOf {
    /// The zoned world (what clients name).
    pub world: WorldId,
    /// The zone.
    pub zone: ZoneIdx,
}

fn one() -> u32 {
    1
}

impl WorldSpec {
    /// A spec for `game` with `capacity` players at `tick_hz`, starting when full.
    pub fn new(game: impl Into<String>, tick_hz: u32, capacity: u32) -> Self {
        Self {
            game: game.into(),
            tick_hz,
            map: String::new(),
            capacity,
            min_players: capacity.max(1),
            start_after_ms: 0,
            region: None,
            standbys: None,
            created_by: None,
            zones: None,
            zone_of: None,
        }
    }

    /// Whether this is a zoned world's own record (what clients name; never
    /// claimed: its zones' records are).
    pub fn is_zoned(&self) -> bool {
        self.zones.is_some() && self.zone_of.is_none()
    }

    /// Checks the spec's own bounds (not whether any origin runs the game).
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.game.is_empty() || self.game.len() > MAX_NAME_LEN {
            return Err(SpecError::GameName);
        }
        if self.map.len() > MAX_NAME_LEN {
            return Err(SpecError::MapName);
        }
        if self.tick_hz == 0 || self.tick_hz > MAX_TICK_HZ {
            return Err(SpecError::TickRate(self.tick_hz));
        }
        if self.capacity == 0 || self.capacity > MAX_WORLD_CAPACITY {
            return Err(SpecError::Capacity(self.capacity));
        }
        if self.min_players == 0 || self.min_players > self.capacity {
            return Err(SpecError::MinPlayers {
                min: self.min_players,
                capacity: self.capacity,
            });
        }
        if self.region.as_ref().is_some_and(|r| r.len() > MAX_NAME_LEN) {
            return Err(SpecError::Region);
        }
        if self
            .created_by
            .as_ref()
            .is_some_and(|c| c.len() > MAX_RECORD_KEY_LEN)
        {
            return Err(SpecError::CreatedBy);
        }
        if self.zone_of.is_some() {
            return Err(SpecError::ZoneOf);
        }
        if let Some(z) = &self.zones {
            let cell = z.layout.spec().cell;
            if !(z.hysteresis.is_finite() && (0.0..=cell).contains(&z.hysteresis)) {
                return Err(SpecError::Hysteresis(z.hysteresis.to_string()));
            }
            if !(z.margin.is_finite() && (0.0..=4.0 * cell).contains(&z.margin)) {
                return Err(SpecError::Margin(z.margin.to_string()));
            }
        }
        Ok(())
    }
}

/// Why a world spec is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Empty or overlong game name.
    #[error("the game name must be 1..={MAX_NAME_LEN} bytes")]
    GameName,
    /// Overlong map name.
    #[error("the map name must be at most {MAX_NAME_LEN} bytes")]
    MapName,
    /// Overlong region name.
    #[error("the region name must be at most {MAX_NAME_LEN} bytes")]
    Region,
    /// Overlong `created_by`.
    #[error("created_by must be at most {} bytes", crate::MAX_RECORD_KEY_LEN)]
    CreatedBy,
    /// A client set `zone_of` (only the control plane does, on zone records).
    #[error("zone_of is set by the control plane, not in a spec")]
    ZoneOf,
    /// Hysteresis outside 0 to one cell.
    #[error("zone hysteresis {0} is outside 0 to one cell")]
    Hysteresis(String),
    /// Mirror margin outside 0 to four cells.
    #[error("zone mirror margin {0} is outside 0 to four cells")]
    Margin(String),
    /// Tick rate out of range.
    #[error("tick rate {0} Hz is outside 1..={MAX_TICK_HZ}")]
    TickRate(u32),
    /// Capacity out of range.
    #[error("capacity {0} is outside 1..={MAX_WORLD_CAPACITY}")]
    Capacity(u32),
    /// Minimum players out of range.
    #[error("min_players {min} must be 1..=capacity ({capacity})")]
    MinPlayers {
        /// Asked.
        min: u32,
        /// Capacity.
        capacity: u32,
    },
}

/// The origin that owns a world now, and its fencing epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The owning node's id.
    pub node: String,
    /// Its QUIC address.
    pub addr: String,
    /// Its certificate name.
    pub tls_name: String,
    /// The fencing epoch: the owner record's creation revision. Only grows: a
    /// later owner of the same world always has a higher one.
    pub epoch: u64,
}

/// A standby's bid to take a world over once its owner's lease lapsed: how
/// far it re-executed the owner it followed. Kept under the standby's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The epoch of the owner it followed (offers for other epochs are stale).
    pub epoch: u64,
    /// The last tick it re-executed and agreed with.
    pub tick: u64,
}

/// Which standby should take a world over: the best [`Offer`]s for the lapsed
/// owner `epoch` among the record's standbys that are still registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Takeover {
    /// The one that re-executed furthest (ties: the smallest node id).
    pub best: Option<(String, Offer)>,
    /// Every registered standby has offered (otherwise wait, bounded, for the
    /// others: one of them may be further along).
    pub complete: bool,
}

impl WorldRecord {
    /// The takeover decision for the owner at `epoch`, which lapsed (pure:
    /// every standby computes the same from the same view).
    pub fn takeover(&self, view: &ClusterView, epoch: u64) -> Takeover {
        let live: Vec<&String> = self
            .standbys
            .iter()
            .filter(|n| view.nodes.contains_key(*n))
            .collect();
        let offers: Vec<(&String, &Offer)> = live
            .iter()
            .filter_map(|n| self.offers.get(*n).map(|o| (*n, o)))
            .filter(|(_, o)| o.epoch == epoch)
            .collect();
        let best = offers
            .iter()
            .max_by(|a, b| a.1.tick.cmp(&b.1.tick).then_with(|| b.0.cmp(a.0)))
            .map(|(n, o)| ((*n).clone(), **o));
        Takeover {
            best,
            complete: offers.len() == live.len(),
        }
    }
}

/// Where a world is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Created, waiting for an owner to start it.
    #[default]
    Placed,
    /// Waiting for players.
    Waiting,
    /// Playing.
    Playing,
    /// Over (with a result); removed after a grace period.
    Ended,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Placed => "placed",
            Self::Waiting => "waiting",
            Self::Playing => "playing",
            Self::Ended => "ended",
        })
    }
}

/// How a game ended (the protocol's type: players see the same result).
pub type GameResult = skylane_proto::WorldResult;

/// A world's status, written by its owner (fenced by its epoch).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WorldStatus {
    /// Phase.
    pub phase: Phase,
    /// Players in the world.
    pub players: u32,
    /// The result, once ended.
    pub result: Option<GameResult>,
    /// The epoch of the owner that wrote this status.
    pub epoch: u64,
    /// A standby's re-execution disagreed with the owner at this tick: the
    /// world's outcomes are no longer confirmed (evidence in the owner's log).
    #[serde(default)]
    pub suspect: Option<u64>,
}

/// Everything the control plane knows about one world.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorldRecord {
    /// Id.
    pub id: WorldId,
    /// Spec.
    pub spec: WorldSpec,
    /// The origin placement chose.
    pub placed_on: String,
    /// The origins placement chose to follow it as standbys (never the
    /// primary): one of them takes the world over if its owner fails.
    #[serde(default)]
    pub standbys: Vec<String>,
    /// Set by an operator or the owner: the world is to end (owners end it and
    /// publish a result; relays stop admitting).
    #[serde(default)]
    pub ending: bool,
    /// The current owner (absent while nobody holds it).
    pub owner: Option<Owner>,
    /// The last status its owner published.
    pub status: WorldStatus,
    /// Standbys' offers to take it over, by node (see [`WorldRecord::takeover`]).
    #[serde(default)]
    pub offers: BTreeMap<String, Offer>,
}

/// The cluster as a watcher sees it. Rebuilt from the store on every change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    /// The store revision this view reflects.
    pub revision: u64,
    /// Registered nodes, by id.
    pub nodes: BTreeMap<String, NodeInfo>,
    /// Worlds, by id.
    pub worlds: BTreeMap<WorldId, WorldRecord>,
    /// Subjects banned from every relay, by subject.
    pub bans: BTreeMap<String, Ban>,
    /// Who leads each role (`matchmaker/default`...), by role: a node holds
    /// it under its lease ([`crate::ControlPlane::campaign`]).
    pub leaders: BTreeMap<String, String>,
    /// Records services keep in the control plane (the matchmaker's tickets
    /// and matches), by key ([`crate::ControlPlane::write_records`]). Opaque
    /// bytes to the control plane. Shared between clones of a view (every
    /// relay and origin clones the views it follows; most never read these):
    /// a clone costs nothing, a write copies the map once if a clone holds it
    /// ([`ClusterView::records_mut`]).
    pub records: std::sync::Arc<BTreeMap<String, bytes::Bytes>>,
}

/// A subject banned from the whole cluster: every relay refuses its hellos and
/// closes its sessions until `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    /// Until when, seconds since the Unix epoch.
    pub until: u64,
    /// Why (shown to the refused client).
    pub reason: String,
}

/// Longest subject a ban may name.
pub const MAX_SUBJECT_LEN: usize = 256;
/// Longest record key (and role name).
pub const MAX_RECORD_KEY_LEN: usize = 200;
/// Largest record value.
pub const MAX_RECORD_LEN: usize = 16 * 1024;
/// Most puts and deletes in one [`crate::RecordWrite`] (etcd's transaction
/// limit is 128 operations).
pub const MAX_RECORD_OPS: usize = 100;

impl ClusterView {
    /// Origins, in id order.
    pub fn origins(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values().filter(|n| n.kind == NodeKind::Origin)
    }

    /// Relays, in id order.
    pub fn relays(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values().filter(|n| n.kind == NodeKind::Relay)
    }

    /// The records, to change (copied first if a clone of the view shares them).
    pub fn records_mut(&mut self) -> &mut BTreeMap<String, bytes::Bytes> {
        std::sync::Arc::make_mut(&mut self.records)
    }

    /// The records whose keys start with `prefix`, in key order.
    pub fn records_under<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a bytes::Bytes)> + 'a {
        self.records
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), v))
    }

    /// Worlds placed on `node` that still count against its capacity (not yet
    /// removed).
    pub fn worlds_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a WorldRecord> + 'a {
        self.worlds.values().filter(move |w| w.placed_on == node)
    }

    /// A zoned world's zone records, in zone order (empty for an unzoned or
    /// unknown world).
    pub fn zones_of(&self, world: WorldId) -> Vec<&WorldRecord> {
        let mut z: Vec<&WorldRecord> = self
            .worlds
            .values()
            .filter(|r| r.spec.zone_of.is_some_and(|z| z.world == world))
            .collect();
        z.sort_by_key(|r| r.spec.zone_of.map(|z| z.zone));
        z
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_bounds_are_checked_by_name() {
        let ok = WorldSpec::new("tictactoe", 10, 2);
        assert_eq!(ok.validate(), Ok(()));
        let mut s = ok.clone();
        s.capacity = 0;
        assert_eq!(s.validate(), Err(SpecError::Capacity(0)));
        let mut s = ok.clone();
        s.tick_hz = 10_000;
        assert_eq!(s.validate(), Err(SpecError::TickRate(10_000)));
        let mut s = ok.clone();
        s.tick_hz = 0;
        assert_eq!(s.validate(), Err(SpecError::TickRate(0)));
        let mut s = ok.clone();
        s.game = String::new();
        assert_eq!(s.validate(), Err(SpecError::GameName));
        let mut s = ok.clone();
        s.min_players = 3;
        assert!(matches!(s.validate(), Err(SpecError::MinPlayers { .. })));
        let mut s = ok;
        s.map = "m".repeat(65);
        assert_eq!(s.validate(), Err(SpecError::MapName));
    }

    #[test]
    fn records_round_trip_as_json() {
        let r = WorldRecord {
            id: WorldId(7),
            spec: WorldSpec::new("arena", 30, 64),
            placed_on: "origin-1".into(),
            standbys: vec!["origin-2".into()],
            ending: false,
            owner: Some(Owner {
                node: "origin-1".into(),
                addr: "127.0.0.1:4433".into(),
                tls_name: "localhost".into(),
                epoch: 12,
            }),
            status: WorldStatus {
                phase: Phase::Ended,
                players: 2,
                result: Some(GameResult {
                    winner: Some("alice".into()),
                    scores: vec![("alice".into(), 1), ("bob".into(), 0)],
                    reason: "won".into(),
                }),
                epoch: 12,
                suspect: None,
            },
            offers: BTreeMap::from([(
                "origin-2".into(),
                Offer {
                    epoch: 12,
                    tick: 40,
                },
            )]),
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<WorldRecord>(&s).unwrap(), r);
    }

    #[test]
    fn the_standby_that_re_executed_furthest_takes_over() {
        let node = |id: &str| NodeInfo {
            id: id.into(),
            kind: NodeKind::Origin,
            addr: "127.0.0.1:1".into(),
            tls_name: "localhost".into(),
            admin: None,
            region: "eu".into(),
            coords: None,
            capacity: 1,
            games: Vec::new(),
            load: 0,
            attestation_key: None,
            origin_rtt_ms: Default::default(),
        };
        let mut view = ClusterView::default();
        for n in ["b", "c", "d"] {
            view.nodes.insert(n.into(), node(n));
        }
        let mut r = WorldRecord {
            id: WorldId(1),
            spec: WorldSpec::new("arena", 30, 8),
            placed_on: "a".into(),
            standbys: vec!["b".into(), "c".into(), "d".into()],
            ending: false,
            owner: None,
            status: WorldStatus::default(),
            offers: BTreeMap::new(),
        };
        let offer = |epoch, tick| Offer { epoch, tick };
        assert_eq!(
            r.takeover(&view, 5),
            Takeover {
                best: None,
                complete: false
            }
        );
        r.offers.insert("c".into(), offer(5, 90));
        r.offers.insert("b".into(), offer(5, 100));
        let t = r.takeover(&view, 5);
        assert_eq!(t.best, Some(("b".into(), offer(5, 100))));
        assert!(!t.complete, "d has not offered");
        // A stale offer (an earlier owner's) does not count; d is complete
        // once gone from the cluster; ties go to the smallest id.
        r.offers.insert("d".into(), offer(4, 500));
        assert!(!r.takeover(&view, 5).complete);
        view.nodes.remove("d");
        r.offers.insert("c".into(), offer(5, 100));
        assert_eq!(
            r.takeover(&view, 5),
            Takeover {
                best: Some(("b".into(), offer(5, 100))),
                complete: true
            }
        );
        // A departed standby's offer is ignored.
        view.nodes.remove("b");
        assert_eq!(r.takeover(&view, 5).best, Some(("c".into(), offer(5, 100))));
    }
}
