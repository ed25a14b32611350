//! Zones: one world's map split into static rectangles, each owned by one
//! origin, and the messages zone owners exchange (`skylane-zone/1`).
//!
//! A [`ZoneLayout`] covers the world's cell grid exactly once with rectangles
//! of whole cells, so every area-of-interest cell (a world-wide
//! [`ChannelId::Cell`](crate::ChannelId::Cell)) lies in exactly one zone and
//! its channel sequence has one writer. Borders never move (no dynamic
//! rebalancing: authority thrashing at moving borders is what sank the peers
//! that tried).
//!
//! Geometry is in map units (the same as entity positions); rectangles are in
//! cells. Lookups are O(1) (a cell → zone table, bounded by [`MAX_LAYOUT_CELLS`]).
//!
//! Between zone owners travel [`ZoneMsg`]s: the handoff exchange (out, in +
//! ack, commit) with idempotent [`HandoffId`]s, and read-only border mirrors.

use serde::{Deserialize, Serialize};

use crate::ids::{EntityId, WorldId};
use crate::payload::Payload;

/// Most zones in one world.
pub const MAX_ZONES: usize = 64;

/// Most cells a layout covers (its cell → zone table is one byte per cell).
pub const MAX_LAYOUT_CELLS: usize = 1 << 20;

/// Largest entity state carried in a handoff or a mirror (bytes): an entity
/// too large for this is refused at the source with a typed error.
pub const MAX_ZONE_STATE: usize = 16 * 1024;

/// Largest cross-zone request or answer a game may send ([`ZoneMsg::Request`]).
pub const MAX_REQUEST: usize = 1024;

/// Largest batch of world and team events a zone forwards to the home zone
/// in one request ([`RequestKind::Events`]).
pub const MAX_FORWARD: usize = 256 * 1024;

/// What a cross-zone request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestKind {
    /// A game's request ([`MAX_REQUEST`] bytes at most), applied by the
    /// owning zone's game.
    Game,
    /// World and team channel events a zone emitted, for the home zone
    /// (their one writer) to publish ([`MAX_FORWARD`] bytes at most).
    Events,
}

impl RequestKind {
    /// The largest op of this kind.
    pub fn max_op(self) -> usize {
        match self {
            Self::Game => MAX_REQUEST,
            Self::Events => MAX_FORWARD,
        }
    }
}

/// Most entities in one [`ZoneMsg::Mirrors`] message.
pub const MAX_MIRRORS_PER_MSG: usize = 256;

/// QUIC ALPN of the zone owners' link.
pub const ZONE_ALPN: &[u8] = b"skylane-zone/1";

/// Largest frame on the zone link: a full `Mirrors` message.
pub const ZONE_MAX_FRAME: usize = 8 << 20;

/// The world record a zone of a zoned world runs under: the world's id plus
/// one plus the zone's index (the control plane allocates them so).
pub fn zone_record_id(world: WorldId, zone: ZoneIdx) -> WorldId {
    WorldId(world.0 + 1 + u64::from(zone.0))
}

/// A zone's index in its world's layout.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct ZoneIdx(pub u8);

impl ZoneIdx {
    /// The home zone: where a zoned world's sessions open (and are sent on
    /// to their avatar's zone), the writer of its world and team channels.
    pub const HOME: Self = Self(0);
}

impl std::fmt::Display for ZoneIdx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "zone-{}", self.0)
    }
}

/// A rectangle of whole cells: columns `x0..x1`, rows `y0..y1` (half-open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneRect {
    /// First column.
    pub x0: u16,
    /// First row.
    pub y0: u16,
    /// One past the last column.
    pub x1: u16,
    /// One past the last row.
    pub y1: u16,
}

impl ZoneRect {
    fn contains_cell(&self, x: u16, y: u16) -> bool {
        x >= self.x0 && x < self.x1 && y >= self.y0 && y < self.y1
    }
}

/// Why a layout is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    /// No zones, or more than [`MAX_ZONES`].
    #[error("a layout has 1 to {MAX_ZONES} zones, not {0}")]
    ZoneCount(usize),
    /// The grid is empty or larger than [`MAX_LAYOUT_CELLS`].
    #[error("a layout covers 1 to {MAX_LAYOUT_CELLS} cells, not {cols}x{rows}")]
    GridSize {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// The cell side is not a positive finite number.
    #[error("the cell side must be positive and finite")]
    CellSide,
    /// A rectangle is empty or leaves the grid.
    #[error("zone {0} is empty or leaves the grid")]
    BadRect(usize),
    /// Two rectangles overlap.
    #[error("zones {0} and {1} overlap at a cell")]
    Overlap(usize, usize),
    /// A cell belongs to no zone.
    #[error("cell ({0}, {1}) belongs to no zone")]
    Uncovered(u16, u16),
    /// An even split asks for more zones than cells along an axis.
    #[error("cannot split {cells} cells into {parts} zones")]
    Split {
        /// Cells along the axis.
        cells: u16,
        /// Zones asked for.
        parts: u16,
    },
}

/// The static zones of one world: rectangles of whole cells covering the grid
/// exactly once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "LayoutSpec", into = "LayoutSpec")]
pub struct ZoneLayout {
    spec: LayoutSpec,
    /// Cell (row-major) → zone.
    table: Vec<u8>,
}

/// A layout as written in a world spec (validated into a [`ZoneLayout`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayoutSpec {
    /// Columns of the world's grid.
    pub cols: u16,
    /// Rows of the world's grid.
    pub rows: u16,
    /// Side of a cell in map units.
    pub cell: f32,
    /// The zones, by index.
    pub zones: Vec<ZoneRect>,
}

// Validation refuses a non-finite cell side, so equality is an equivalence.
impl Eq for ZoneLayout {}

impl TryFrom<LayoutSpec> for ZoneLayout {
    type Error = ZoneError;
    fn try_from(spec: LayoutSpec) -> Result<Self, ZoneError> {
        Self::new(spec)
    }
}

impl From<ZoneLayout> for LayoutSpec {
    fn from(l: ZoneLayout) -> Self {
        l.spec
    }
}

impl ZoneLayout {
    /// Validates `spec`: 1 to [`MAX_ZONES`] non-empty rectangles inside the
    /// grid, covering every cell exactly once.
    pub fn new(spec: LayoutSpec) -> Result<Self, ZoneError> {
        let n = spec.zones.len();
        if n == 0 || n > MAX_ZONES {
            return Err(ZoneError::ZoneCount(n));
        }
        let cells = usize::from(spec.cols) * usize::from(spec.rows);
        if cells == 0 || cells > MAX_LAYOUT_CELLS {
            return Err(ZoneError::GridSize {
                cols: spec.cols,
                rows: spec.rows,
            });
        }
        if !(spec.cell.is_finite() && spec.cell > 0.0) {
            return Err(ZoneError::CellSide);
        }
        const NONE: u8 = u8::MAX;
        let mut table = vec![NONE; cells];
        for (i, r) in spec.zones.iter().enumerate() {
            if r.x0 >= r.x1 || r.y0 >= r.y1 || r.x1 > spec.cols || r.y1 > spec.rows {
                return Err(ZoneError::BadRect(i));
            }
            for y in r.y0..r.y1 {
                for x in r.x0..r.x1 {
                    let slot = &mut table[usize::from(y) * usize::from(spec.cols) + usize::from(x)];
                    if *slot != NONE {
                        return Err(ZoneError::Overlap(usize::from(*slot), i));
                    }
                    *slot = i as u8;
                }
            }
        }
        if let Some(at) = table.iter().position(|z| *z == NONE) {
            let cols = usize::from(spec.cols);
            return Err(ZoneError::Uncovered((at % cols) as u16, (at / cols) as u16));
        }
        Ok(Self { spec, table })
    }

    /// `nx` × `ny` zones of (nearly) equal size over a `cols` × `rows` grid.
    pub fn even(cols: u16, rows: u16, cell: f32, nx: u16, ny: u16) -> Result<Self, ZoneError> {
        if cols == 0 || rows == 0 {
            return Err(ZoneError::GridSize { cols, rows });
        }
        let cuts = |cells: u16, parts: u16| -> Result<Vec<u16>, ZoneError> {
            if parts == 0 || parts > cells {
                return Err(ZoneError::Split { cells, parts });
            }
            Ok((0..=parts)
                .map(|i| (u32::from(cells) * u32::from(i) / u32::from(parts)) as u16)
                .collect())
        };
        let (xs, ys) = (cuts(cols, nx)?, cuts(rows, ny)?);
        let mut zones = Vec::new();
        for y in ys.windows(2) {
            for x in xs.windows(2) {
                zones.push(ZoneRect {
                    x0: x[0],
                    y0: y[0],
                    x1: x[1],
                    y1: y[1],
                });
            }
        }
        Self::new(LayoutSpec {
            cols,
            rows,
            cell,
            zones,
        })
    }

    /// The spec it was made from.
    pub fn spec(&self) -> &LayoutSpec {
        &self.spec
    }

    /// Number of zones.
    pub fn len(&self) -> usize {
        self.spec.zones.len()
    }

    /// Never true (a layout has at least one zone); for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.spec.zones.is_empty()
    }

    /// Every zone index.
    pub fn zones(&self) -> impl Iterator<Item = ZoneIdx> {
        (0..self.len()).map(|i| ZoneIdx(i as u8))
    }

    /// Zone `z`'s rectangle, `None` for an index outside the layout.
    pub fn rect(&self, z: ZoneIdx) -> Option<&ZoneRect> {
        self.spec.zones.get(usize::from(z.0))
    }

    /// The zone holding cell `(x, y)` (clamped to the grid).
    pub fn zone_of_cell(&self, x: u16, y: u16) -> ZoneIdx {
        let x = x.min(self.spec.cols - 1);
        let y = y.min(self.spec.rows - 1);
        ZoneIdx(self.table[usize::from(y) * usize::from(self.spec.cols) + usize::from(x)])
    }

    /// The cell containing a point (clamped to the grid; non-finite → 0).
    pub fn cell_of(&self, px: f32, py: f32) -> (u16, u16) {
        let c = |v: f32, n: u16| {
            if v.is_finite() {
                ((v / self.spec.cell).floor().max(0.0) as u32).min(u32::from(n) - 1) as u16
            } else {
                0
            }
        };
        (c(px, self.spec.cols), c(py, self.spec.rows))
    }

    /// The zone containing a point.
    pub fn zone_at(&self, px: f32, py: f32) -> ZoneIdx {
        let (x, y) = self.cell_of(px, py);
        self.zone_of_cell(x, y)
    }

    /// Distance in map units from a point to zone `z`'s rectangle (0 inside;
    /// infinite for an index outside the layout or a non-finite point).
    pub fn distance(&self, z: ZoneIdx, px: f32, py: f32) -> f32 {
        let Some(r) = self.rect(z) else {
            return f32::INFINITY;
        };
        if !(px.is_finite() && py.is_finite()) {
            return f32::INFINITY;
        }
        let c = self.spec.cell;
        let (x0, x1) = (f32::from(r.x0) * c, f32::from(r.x1) * c);
        let (y0, y1) = (f32::from(r.y0) * c, f32::from(r.y1) * c);
        let dx = (x0 - px).max(px - x1).max(0.0);
        let dy = (y0 - py).max(py - y1).max(0.0);
        dx.hypot(dy)
    }

    /// The zones other than `owner` within `margin` of a point: where an
    /// entity there is mirrored (read-only), in index order.
    pub fn near(&self, owner: ZoneIdx, px: f32, py: f32, margin: f32) -> Vec<ZoneIdx> {
        self.zones()
            .filter(|z| *z != owner && self.distance(*z, px, py) <= margin)
            .collect()
    }

    /// Whether an entity of zone `owner` at a point crosses into another zone:
    /// the zone the point lies in, once it is at least `hysteresis` past
    /// `owner`'s border (so walking along a border never bounces it between
    /// zones). `None` while it stays.
    pub fn crossing(&self, owner: ZoneIdx, px: f32, py: f32, hysteresis: f32) -> Option<ZoneIdx> {
        let here = self.zone_at(px, py);
        if here == owner || !(px.is_finite() && py.is_finite()) {
            return None;
        }
        (self.distance(owner, px, py) >= hysteresis).then_some(here)
    }

    /// Whether cell `(x, y)` lies in zone `z`.
    pub fn holds_cell(&self, z: ZoneIdx, x: u16, y: u16) -> bool {
        self.rect(z).is_some_and(|r| r.contains_cell(x, y))
    }
}

/// A handoff's idempotent id: the source zone, the target zone and the
/// source's sequence number towards that target (increasing, never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HandoffId {
    /// The zone the entity leaves.
    pub from: ZoneIdx,
    /// The zone it enters.
    pub to: ZoneIdx,
    /// The source's sequence number towards `to`.
    pub seq: u64,
}

impl std::fmt::Display for HandoffId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}->{}#{}", self.from.0, self.to.0, self.seq)
    }
}

/// A cross-zone request's idempotent id: the zone asking, the zone that
/// owns what it touches, and the asker's sequence number towards it
/// (increasing, never reused; a sequence of its own, apart from handoffs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    /// The zone asking.
    pub from: ZoneIdx,
    /// The zone that applies it.
    pub to: ZoneIdx,
    /// The asker's sequence number towards `to`.
    pub seq: u64,
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}=>{}#{}", self.from.0, self.to.0, self.seq)
    }
}

/// An entity as it moves between zones: everything the target needs to own it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityTransfer {
    /// The entity (world-wide id).
    pub entity: EntityId,
    /// The player it is the avatar of, if any (its session moves with it).
    pub player: Option<String>,
    /// Where it is.
    pub pos: (f32, f32),
    /// The game's state of the entity (at most [`MAX_ZONE_STATE`] bytes).
    pub state: Payload,
    /// Its version (optimistic concurrency continues from it).
    pub version: u64,
    /// What the engine carries with an avatar besides the game's state: its
    /// player's session (id, role, team, the replay window of its action
    /// sequence numbers), opaque to the game; empty for other entities.
    #[serde(default)]
    pub session: Payload,
}

/// A read-only copy of an entity near a border, for the neighbouring zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MirrorEntry {
    /// The entity.
    pub entity: EntityId,
    /// The owner's tick the copy is from.
    pub tick: u64,
    /// Where it is.
    pub pos: (f32, f32),
    /// The game's state of the entity.
    pub state: Payload,
}

/// Zone owner ↔ zone owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ZoneMsg {
    /// Step 1 (source → target): the entity left the source's zone; the
    /// source journaled this and froze the entity. Re-sent with the same id
    /// until answered.
    Out {
        /// World.
        world: WorldId,
        /// Idempotent id.
        id: HandoffId,
        /// The lowest sequence towards this target the source has not
        /// committed: the target forgets answered ids below it.
        low: u64,
        /// The entity.
        transfer: EntityTransfer,
    },
    /// Step 2 (target → source): the target journaled the entity and owns it
    /// (a duplicate `Out` is answered the same way, never imported twice).
    In {
        /// World.
        world: WorldId,
        /// The handoff answered.
        id: HandoffId,
    },
    /// Step 2, refused (target → source): the target will never own it (the
    /// zone is full, the state does not decode); the source unfreezes it.
    Refused {
        /// World.
        world: WorldId,
        /// The handoff answered.
        id: HandoffId,
        /// Why, for logs and metrics.
        reason: String,
    },
    /// Step 3 (source → target): the source journaled the commit and removed
    /// the entity; the target may forget ids below `low`.
    Commit {
        /// World.
        world: WorldId,
        /// The handoff committed.
        id: HandoffId,
        /// As in [`ZoneMsg::Out`].
        low: u64,
    },
    /// Border mirrors (owner → neighbour), read-only copies of entities within
    /// the interest margin of the neighbour's border.
    Mirrors {
        /// World.
        world: WorldId,
        /// The owning zone.
        from: ZoneIdx,
        /// The neighbour it is for.
        to: ZoneIdx,
        /// The owner's tick it is from (a refresh with no copies still
        /// says how far the owner is: older copies expire against it).
        tick: u64,
        /// Copies, at most [`MAX_MIRRORS_PER_MSG`].
        upsert: Vec<MirrorEntry>,
        /// Entities no longer mirrored to the receiver.
        remove: Vec<EntityId>,
    },
    /// A cross-zone request (asker → owner): something an action in the
    /// asking zone does to what the owning zone holds (a shot across the
    /// border). Re-sent with the same id until answered; the owner applies
    /// it once (journaled) and answers every copy from that record.
    Request {
        /// World.
        world: WorldId,
        /// Idempotent id.
        id: RequestId,
        /// The lowest sequence towards this owner the asker has not had
        /// answered: the owner forgets answers below it.
        low: u64,
        /// What it carries.
        kind: RequestKind,
        /// The request (at most [`RequestKind::max_op`] bytes).
        op: Payload,
    },
    /// The home zone's spectator feed is wanted (home → every other zone;
    /// re-sent every 2 s while it is): the zone sends its part of the feed
    /// ([`ZoneMsg::FeedPart`]); a zone not told again within 6 s stops.
    FeedWanted {
        /// World.
        world: WorldId,
        /// The zone told.
        to: ZoneIdx,
        /// Wanted (`false`: stop now).
        on: bool,
    },
    /// A zone's part of the world's spectator feed (zone → home): a tick's
    /// public events, or its keyframe; the home zone merges them into the
    /// frames it signs as the world.
    FeedPart {
        /// World.
        world: WorldId,
        /// The zone it comes from.
        from: ZoneIdx,
        /// A keyframe (every entity of that zone), not a tick's events.
        keyframe: bool,
        /// The events.
        events: Vec<crate::message::FeedEvent>,
    },
    /// The owner's answer to a [`ZoneMsg::Request`] (owner → asker).
    Answer {
        /// World.
        world: WorldId,
        /// The request answered.
        id: RequestId,
        /// The game's encoding of what came of it (at most [`MAX_REQUEST`]).
        answer: Payload,
    },
}

/// A journaled step of a handoff: the durable record both sides keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ZoneRecord {
    /// Source: the entity leaves towards `id.to`, frozen from now on.
    Out {
        /// The handoff.
        id: HandoffId,
        /// The entity as it leaves.
        transfer: EntityTransfer,
    },
    /// Source: the target owns it; it is removed here.
    Commit {
        /// The handoff.
        id: HandoffId,
        /// The entity that left.
        entity: EntityId,
    },
    /// Source: the target refused it; it is active here again.
    Abort {
        /// The handoff.
        id: HandoffId,
        /// The entity that stays.
        entity: EntityId,
    },
    /// Target: the entity is imported and owned here.
    In {
        /// The handoff.
        id: HandoffId,
        /// The entity as it arrived.
        transfer: EntityTransfer,
    },
    /// Target: refused.
    Refused {
        /// The handoff.
        id: HandoffId,
        /// Why.
        reason: String,
    },
    /// Owner: a cross-zone request applied (once: a repeated id is not
    /// applied again); ids from `id.from` below `low` are forgotten.
    Served {
        /// The request.
        id: RequestId,
        /// The asker's watermark.
        low: u64,
        /// What it carries.
        kind: RequestKind,
        /// What to apply.
        op: Payload,
    },
    /// Asker: the answer to a request of its own (the game learns what came
    /// of it; a repeated answer changes nothing).
    Answered {
        /// The request.
        id: RequestId,
        /// What came of it.
        answer: Payload,
    },
    /// Target: the source will never re-send ids from `from` below `low`.
    Low {
        /// The source zone.
        from: ZoneIdx,
        /// Its watermark.
        low: u64,
    },
}

/// What applying a [`ZoneRecord`] does to the zone's world.
#[derive(Debug, Clone, PartialEq)]
pub enum ZoneEffect<'a> {
    /// Freeze the entity: no action applies to it.
    Freeze(EntityId),
    /// Add the entity (state, position, version, and its player's session).
    Import(&'a EntityTransfer),
    /// Remove the entity (its frozen copy).
    Remove(EntityId),
    /// Unfreeze the entity: it stays.
    Unfreeze(EntityId),
    /// Nothing in the world changes.
    None,
}

impl ZoneRecord {
    /// What the engine does to its world when it applies this record.
    pub fn effect(&self) -> ZoneEffect<'_> {
        match self {
            Self::Out { transfer, .. } => ZoneEffect::Freeze(transfer.entity),
            Self::In { transfer, .. } => ZoneEffect::Import(transfer),
            Self::Commit { entity, .. } => ZoneEffect::Remove(*entity),
            Self::Abort { entity, .. } => ZoneEffect::Unfreeze(*entity),
            Self::Refused { .. }
            | Self::Low { .. }
            | Self::Served { .. }
            | Self::Answered { .. } => ZoneEffect::None,
        }
    }
}

impl ZoneMsg {
    /// The world it is about.
    pub fn world(&self) -> WorldId {
        match self {
            Self::Out { world, .. }
            | Self::In { world, .. }
            | Self::Refused { world, .. }
            | Self::Commit { world, .. }
            | Self::Mirrors { world, .. }
            | Self::Request { world, .. }
            | Self::Answer { world, .. }
            | Self::FeedWanted { world, .. }
            | Self::FeedPart { world, .. } => *world,
        }
    }

    /// The zone it is for.
    pub fn receiver(&self) -> ZoneIdx {
        match self {
            Self::Out { id, .. } | Self::Commit { id, .. } => id.to,
            Self::In { id, .. } | Self::Refused { id, .. } => id.from,
            Self::Mirrors { to, .. } => *to,
            Self::Request { id, .. } => id.to,
            Self::Answer { id, .. } => id.from,
            Self::FeedWanted { to, .. } => *to,
            Self::FeedPart { .. } => ZoneIdx::HOME,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn four() -> ZoneLayout {
        // 8 x 8 cells of 10 units: four 4 x 4 quadrants.
        ZoneLayout::even(8, 8, 10.0, 2, 2).unwrap()
    }

    #[test]
    fn an_even_split_covers_the_grid_once() {
        let l = four();
        assert_eq!(l.len(), 4);
        assert_eq!(l.zone_at(5.0, 5.0), ZoneIdx(0));
        assert_eq!(l.zone_at(45.0, 5.0), ZoneIdx(1));
        assert_eq!(l.zone_at(5.0, 45.0), ZoneIdx(2));
        assert_eq!(l.zone_at(79.0, 79.0), ZoneIdx(3));
        // Clamped outside the map; a NaN lands somewhere, never panics.
        assert_eq!(l.zone_at(-5.0, 500.0), ZoneIdx(2));
        let _ = l.zone_at(f32::NAN, f32::INFINITY);
        assert!(l.holds_cell(ZoneIdx(3), 7, 7));
        assert!(!l.holds_cell(ZoneIdx(3), 3, 7));
    }

    #[test]
    fn bad_layouts_are_typed_errors() {
        let spec = |zones| LayoutSpec {
            cols: 4,
            rows: 4,
            cell: 1.0,
            zones,
        };
        let r = |x0, y0, x1, y1| ZoneRect { x0, y0, x1, y1 };
        assert_eq!(ZoneLayout::new(spec(vec![])), Err(ZoneError::ZoneCount(0)));
        assert_eq!(
            ZoneLayout::new(spec(vec![r(0, 0, 2, 4)])),
            Err(ZoneError::Uncovered(2, 0))
        );
        assert_eq!(
            ZoneLayout::new(spec(vec![r(0, 0, 3, 4), r(2, 0, 4, 4)])),
            Err(ZoneError::Overlap(0, 1))
        );
        assert_eq!(
            ZoneLayout::new(spec(vec![r(0, 0, 5, 4)])),
            Err(ZoneError::BadRect(0))
        );
        assert_eq!(
            ZoneLayout::new(spec(vec![r(1, 0, 1, 4)])),
            Err(ZoneError::BadRect(0))
        );
        assert!(matches!(
            ZoneLayout::even(0, 4, 1.0, 1, 1),
            Err(ZoneError::GridSize { .. })
        ));
        assert!(matches!(
            ZoneLayout::even(4, 4, f32::NAN, 1, 1),
            Err(ZoneError::CellSide)
        ));
        assert!(matches!(
            ZoneLayout::even(4, 4, 1.0, 5, 1),
            Err(ZoneError::Split { .. })
        ));
        // A spec that does not validate does not deserialize either.
        let json = r#"{"cols":4,"rows":4,"cell":1.0,"zones":[{"x0":0,"y0":0,"x1":2,"y1":4}]}"#;
        assert!(serde_json::from_str::<ZoneLayout>(json).is_err());
        let ok = ZoneLayout::even(4, 4, 1.0, 2, 1).unwrap();
        let back: ZoneLayout = serde_json::from_str(&serde_json::to_string(&ok).unwrap()).unwrap();
        assert_eq!(back, ok);
    }

    #[test]
    fn crossing_needs_the_hysteresis_past_the_border() {
        let l = four();
        // The border between zones 0 and 1 is x = 40.
        assert_eq!(l.crossing(ZoneIdx(0), 39.0, 5.0, 2.0), None);
        assert_eq!(
            l.crossing(ZoneIdx(0), 41.0, 5.0, 2.0),
            None,
            "inside the band"
        );
        assert_eq!(l.crossing(ZoneIdx(0), 42.0, 5.0, 2.0), Some(ZoneIdx(1)));
        // Back again: zone 1 keeps it until it is 2 past the border.
        assert_eq!(l.crossing(ZoneIdx(1), 39.0, 5.0, 2.0), None);
        assert_eq!(l.crossing(ZoneIdx(1), 37.5, 5.0, 2.0), Some(ZoneIdx(0)));
        assert_eq!(l.crossing(ZoneIdx(0), f32::NAN, 5.0, 2.0), None);
    }

    #[test]
    fn mirrors_go_to_zones_within_the_margin() {
        let l = four();
        assert_eq!(l.near(ZoneIdx(0), 20.0, 20.0, 5.0), vec![]);
        assert_eq!(l.near(ZoneIdx(0), 37.0, 20.0, 5.0), vec![ZoneIdx(1)]);
        // Near the corner: all three neighbours.
        assert_eq!(
            l.near(ZoneIdx(0), 38.0, 38.0, 5.0),
            vec![ZoneIdx(1), ZoneIdx(2), ZoneIdx(3)]
        );
    }

    proptest! {
        /// Every point lies in exactly one zone, at distance 0 from it, and a
        /// crossing is only ever into the zone the point lies in.
        #[test]
        fn every_point_has_one_zone(
            nx in 1u16..5, ny in 1u16..5, px in -10f32..90.0, py in -10f32..90.0,
            owner in 0u8..16, h in 0f32..8.0,
        ) {
            let l = ZoneLayout::even(8, 8, 10.0, nx, ny).unwrap();
            let (cx, cy) = (px.clamp(0.0, 79.99), py.clamp(0.0, 79.99));
            let z = l.zone_at(cx, cy);
            let inside = l.zones().filter(|q| l.distance(*q, cx, cy) == 0.0).count();
            prop_assert!(inside >= 1 && l.distance(z, cx, cy) == 0.0);
            let owner = ZoneIdx(owner % l.len() as u8);
            if let Some(t) = l.crossing(owner, cx, cy, h) {
                prop_assert_eq!(t, z);
                prop_assert!(t != owner);
            }
        }
    }
}
