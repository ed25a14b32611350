//! Interest management: which area-of-interest cells each player receives.
//!
//! The map is a grid of square cells; each cell is a channel
//! ([`ChannelId::Cell`]). A player receives the cells within `radius` of its
//! *centre cell*. The centre moves only when the player leaves the centre cell by
//! more than `margin` (hysteresis), so a player pacing along a border does not flip
//! subscriptions every tick. Pure and O(1) per move unless the centre changes.

use rustc_hash::FxHashMap as HashMap;

use serde::{Deserialize, Serialize};

use skylane_proto::zones::ZoneRect;
use skylane_proto::{ChannelId, EntityId};

/// The grid over a world's map.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    /// Map width.
    pub width: f32,
    /// Map height.
    pub height: f32,
    /// Side of a cell.
    pub cell: f32,
    /// Cells around the centre a player receives (1 = a 3×3 block).
    pub radius: u16,
    /// How far past its centre cell's border a player must go before the centre moves.
    pub margin: f32,
    /// The cells a zone of a zoned world owns (`None`: the whole map). A
    /// point outside them belongs to the nearest of them and a player
    /// receives only them: every cell channel has one writer, its zone.
    #[serde(default)]
    pub clip: Option<ZoneRect>,
}

impl Grid {
    /// Number of columns.
    pub fn cols(&self) -> u16 {
        ((self.width / self.cell).ceil() as u16).max(1)
    }

    /// Number of rows.
    pub fn rows(&self) -> u16 {
        ((self.height / self.cell).ceil() as u16).max(1)
    }

    /// The cell containing a point (clamped to the map).
    pub fn cell_of(&self, x: f32, y: f32) -> (u16, u16) {
        let c = |v: f32, n: u16| {
            if v.is_finite() {
                ((v / self.cell).floor().max(0.0) as u16).min(n - 1)
            } else {
                0
            }
        };
        let (cx, cy) = (c(x, self.cols()), c(y, self.rows()));
        match &self.clip {
            Some(r) => (
                cx.clamp(r.x0, r.x1.saturating_sub(1).max(r.x0)),
                cy.clamp(r.y0, r.y1.saturating_sub(1).max(r.y0)),
            ),
            None => (cx, cy),
        }
    }

    /// Whether cell `(x, y)` is one of this grid's (see `clip`).
    fn owns(&self, x: i32, y: i32) -> bool {
        let (w, h) = (i32::from(self.cols()), i32::from(self.rows()));
        let on_map = x >= 0 && y >= 0 && x < w && y < h;
        on_map
            && self.clip.as_ref().is_none_or(|r| {
                x >= i32::from(r.x0)
                    && x < i32::from(r.x1)
                    && y >= i32::from(r.y0)
                    && y < i32::from(r.y1)
            })
    }

    /// The channel of the cell containing a point.
    pub fn channel_of(&self, x: f32, y: f32) -> ChannelId {
        let (x, y) = self.cell_of(x, y);
        ChannelId::Cell { x, y }
    }

    /// Whether `(x, y)` lies within cell `c` widened by the margin.
    fn near(&self, c: (u16, u16), x: f32, y: f32) -> bool {
        let (x0, y0) = (f32::from(c.0) * self.cell, f32::from(c.1) * self.cell);
        x >= x0 - self.margin
            && x < x0 + self.cell + self.margin
            && y >= y0 - self.margin
            && y < y0 + self.cell + self.margin
    }

    /// Cells within `radius` of `centre`, clipped to the map (and the zone),
    /// in a fixed order.
    pub fn block(&self, centre: (u16, u16)) -> Vec<ChannelId> {
        let r = i32::from(self.radius);
        let mut out = Vec::with_capacity(((2 * r + 1) * (2 * r + 1)) as usize);
        for dy in -r..=r {
            for dx in -r..=r {
                let (x, y) = (i32::from(centre.0) + dx, i32::from(centre.1) + dy);
                if self.owns(x, y) {
                    out.push(ChannelId::Cell {
                        x: x as u16,
                        y: y as u16,
                    });
                }
            }
        }
        out
    }
}

/// A change of a player's cell subscriptions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InterestChange {
    /// Cells to add.
    pub added: Vec<ChannelId>,
    /// Cells to remove.
    pub removed: Vec<ChannelId>,
}

/// Tracks every player's centre cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Interest {
    grid: Grid,
    centres: HashMap<EntityId, (u16, u16)>,
}

impl Interest {
    /// Interest management over `grid`.
    pub fn new(grid: Grid) -> Self {
        Self {
            grid,
            centres: HashMap::default(),
        }
    }

    /// The grid.
    pub fn grid(&self) -> &Grid {
        &self.grid
    }

    /// The cells `entity` receives now.
    pub fn cells(&self, entity: EntityId) -> Vec<ChannelId> {
        self.centres
            .get(&entity)
            .map(|c| self.grid.block(*c))
            .unwrap_or_default()
    }

    /// Records the position of `entity`; returns the change of its cells, if any.
    pub fn handle_move(&mut self, entity: EntityId, x: f32, y: f32) -> Option<InterestChange> {
        let grid = self.grid;
        match self.centres.get(&entity).copied() {
            Some(c) if grid.near(c, x, y) => None,
            old => {
                let new = grid.cell_of(x, y);
                self.centres.insert(entity, new);
                let before = old.map(|c| grid.block(c)).unwrap_or_default();
                let after = grid.block(new);
                let added: Vec<_> = after
                    .iter()
                    .filter(|c| !before.contains(c))
                    .copied()
                    .collect();
                let removed: Vec<_> = before
                    .iter()
                    .filter(|c| !after.contains(c))
                    .copied()
                    .collect();
                (!added.is_empty() || !removed.is_empty())
                    .then_some(InterestChange { added, removed })
            }
        }
    }

    /// Forgets `entity`; returns the cells it no longer receives.
    pub fn handle_leave(&mut self, entity: EntityId) -> Vec<ChannelId> {
        self.centres
            .remove(&entity)
            .map(|c| self.grid.block(c))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Grid {
        Grid {
            width: 1000.0,
            height: 1000.0,
            cell: 100.0,
            radius: 1,
            margin: 10.0,
            clip: None,
        }
    }

    #[test]
    fn a_zone_grid_owns_its_cells_only() {
        // Columns 5..10 of a 10 x 10 map.
        let g = Grid {
            clip: Some(ZoneRect {
                x0: 5,
                y0: 0,
                x1: 10,
                y1: 10,
            }),
            ..grid()
        };
        // A point across the border belongs to the nearest owned cell.
        assert_eq!(g.channel_of(495.0, 250.0), ChannelId::Cell { x: 5, y: 2 });
        assert_eq!(g.channel_of(705.0, 250.0), ChannelId::Cell { x: 7, y: 2 });
        // A player at the border receives its own side only.
        let mut i = Interest::new(g);
        let ch = i.handle_move(EntityId(1), 505.0, 450.0).unwrap();
        assert_eq!(ch.added.len(), 6, "{:?}", ch.added);
        assert!(ch
            .added
            .iter()
            .all(|c| matches!(c, ChannelId::Cell { x, .. } if *x >= 5)));
    }

    #[test]
    fn first_position_subscribes_a_clipped_block() {
        let mut i = Interest::new(grid());
        let ch = i.handle_move(EntityId(1), 5.0, 5.0).unwrap();
        assert_eq!(ch.added.len(), 4, "corner: 2x2 inside the map");
        assert!(ch.removed.is_empty());
        let ch = i.handle_move(EntityId(2), 450.0, 450.0).unwrap();
        assert_eq!(ch.added.len(), 9);
        assert_eq!(i.cells(EntityId(2)).len(), 9);
    }

    #[test]
    fn hysteresis_at_cell_borders() {
        let mut i = Interest::new(grid());
        i.handle_move(EntityId(1), 450.0, 450.0);
        // Cross into the next cell but stay within the margin: no change.
        assert_eq!(i.handle_move(EntityId(1), 505.0, 450.0), None);
        assert_eq!(i.handle_move(EntityId(1), 495.0, 450.0), None);
        assert_eq!(i.handle_move(EntityId(1), 509.0, 450.0), None);
        // Past the margin: the centre moves one column, three cells change.
        let ch = i.handle_move(EntityId(1), 511.0, 450.0).unwrap();
        assert_eq!(ch.added.len(), 3);
        assert_eq!(ch.removed.len(), 3);
        assert!(ch.added.contains(&ChannelId::Cell { x: 6, y: 4 }));
        assert!(ch.removed.contains(&ChannelId::Cell { x: 3, y: 4 }));
        // Back inside the old cell by less than the margin: stays.
        assert_eq!(i.handle_move(EntityId(1), 495.0, 450.0), None);
    }

    #[test]
    fn odd_positions_are_clamped() {
        let g = grid();
        assert_eq!(g.cell_of(-5.0, 2000.0), (0, 9));
        assert_eq!(g.cell_of(f32::NAN, f32::INFINITY), (0, 0));
        let mut i = Interest::new(g);
        i.handle_move(EntityId(3), 1.0, 1.0);
        assert_eq!(i.handle_leave(EntityId(3)).len(), 4);
        assert!(i.cells(EntityId(3)).is_empty());
    }

    #[test]
    fn ten_thousand_players() {
        let mut i = Interest::new(Grid {
            width: 10_000.0,
            height: 10_000.0,
            cell: 250.0,
            radius: 1,
            margin: 20.0,
            clip: None,
        });
        for n in 0..10_000u64 {
            let (x, y) = ((n % 100) as f32 * 100.0, (n / 100) as f32 * 100.0);
            assert!(i.handle_move(EntityId(n), x, y).is_some());
        }
        let moved = (0..10_000u64)
            .filter(|n| {
                let (x, y) = ((n % 100) as f32 * 100.0 + 80.0, (n / 100) as f32 * 100.0);
                i.handle_move(EntityId(*n), x, y).is_some()
            })
            .count();
        assert!(
            moved > 0 && moved < 10_000,
            "only players crossing a border past the margin change: {moved}"
        );
    }
}
