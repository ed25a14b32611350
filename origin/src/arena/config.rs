//! How an arena is set up: map, items, rules.

use serde::{Deserialize, Serialize};

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
