//! The games an origin can run, by name: a factory per registered [`World`]
//! implementation that turns a world spec into a running engine ([`Core`]).
//! `arena` and `tictactoe` are built in; a studio registers its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use skylane_control::WorldSpec;
use skylane_proto::{ChainSigner, WorldId};

use crate::arena::{Arena, ArenaConfig};
use crate::core::Core;
use crate::engine::{Engine, EngineConfig, EngineSnapshot, ZoneSetup};
use crate::interest::Grid;
use crate::journal::JournalMeta;
use crate::lifecycle::LifecycleConfig;
use crate::persist::{PersistConfig, Persistent};
use crate::tictactoe::{TicTacToe, TttConfig};

/// How long a room everyone left waits before it ends as abandoned.
pub const EMPTY_GRACE_SECS: u64 = 10;

/// What a factory gets.
#[derive(Debug)]
pub struct NewWorld<'a> {
    /// The world's id.
    pub id: WorldId,
    /// Its spec.
    pub spec: &'a WorldSpec,
    /// The origin's clock now (microseconds since the Unix epoch).
    pub now_us: u64,
    /// The signer for its batches.
    pub signer: ChainSigner,
    /// Where to keep its journal (one redb file per world: `world-<id>.redb`
    /// in the origin's journal directory); `None`: in memory only.
    pub journal: Option<std::path::PathBuf>,
    /// Start from this engine snapshot ([`Core::snapshot`]) instead of a fresh
    /// world: a standby that joins a running world.
    pub snapshot: Option<&'a [u8]>,
}

impl NewWorld<'_> {
    /// The engine settings the spec asks for: tick rate, and a room lifecycle
    /// (capacity, minimum, start timer, abandonment grace).
    ///
    /// A zone of a zoned world signs as the world it is a zone of (what
    /// clients name) and has no room lifecycle (a zoned world is persistent).
    pub fn engine_config(&self) -> EngineConfig {
        let world = self.spec.zone_of.map_or(self.id, |z| z.world);
        let mut cfg = EngineConfig::new(world);
        let hz = u64::from(self.spec.tick_hz.max(1));
        cfg.tick_hz = self.spec.tick_hz.max(1);
        cfg.keyframe_every = hz;
        cfg.history = cfg.history.min(35 * hz as usize).max(64);
        if self.spec.zone_of.is_some() {
            return cfg;
        }
        cfg.lifecycle = Some(LifecycleConfig {
            capacity: self.spec.capacity,
            min_players: self.spec.min_players.max(1),
            start_after_ticks: self.spec.start_after_ms * hz / 1000,
            empty_grace_ticks: EMPTY_GRACE_SECS * hz,
        });
        cfg
    }

    /// The zone this world record runs, for a zone of a zoned world.
    pub fn zone_setup(&self) -> Option<ZoneSetup> {
        let (zones, of) = (self.spec.zones.as_ref()?, self.spec.zone_of?);
        Some(ZoneSetup {
            layout: zones.layout.clone(),
            zone: of.zone,
            hysteresis: zones.hysteresis,
            margin: zones.margin,
        })
    }
}

/// Runs `engine` in memory, or journaled at `new.journal` (a fresh journal:
/// a world id is never reused). A zone of a zoned world enters its zone
/// first (a game that cannot be split refuses).
pub fn start<W>(
    new: &NewWorld<'_>,
    kind: &str,
    grid: Grid,
    mut engine: Engine<W>,
) -> Result<Box<dyn Core>, String>
where
    W: crate::world::World + Clone + serde::Serialize + serde::de::DeserializeOwned,
{
    if let Some(setup) = new.zone_setup() {
        layout_fits(&setup.layout, kind, &grid)?;
        engine.enter_zone(setup).map_err(|e| e.to_string())?;
    }
    let engine = match new.snapshot {
        None => engine,
        Some(bytes) => {
            let snap: EngineSnapshot<W> = postcard::from_bytes(bytes)
                .map_err(|e| format!("{kind} snapshot of {} is corrupt: {e}", new.id))?;
            Engine::restore(snap, grid, *engine.config(), new.signer.same_key())
        }
    };
    let Some(path) = &new.journal else {
        return Ok(Box::new(engine));
    };
    let meta = JournalMeta {
        world_kind: kind.into(),
        world: new.id,
        engine: *engine.config(),
        grid,
    };
    let persist = PersistConfig {
        snapshot_every: 300,
        hash_every: 1,
    };
    Persistent::create(path, &meta, engine, persist)
        .map(|p| Box::new(p) as Box<dyn Core>)
        .map_err(|e| format!("journal {}: {e}", path.display()))
}

/// Builds a world's engine from its spec.
pub type GameFactory = Arc<dyn Fn(NewWorld<'_>) -> Result<Box<dyn Core>, String> + Send + Sync>;

/// Why a world could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GameError {
    /// No game of that name is registered here.
    #[error("no game {0:?} on this origin (it runs {1:?})")]
    Unknown(String, Vec<String>),
    /// The game refused the spec (a map it does not have...).
    #[error("game {game}: {message}")]
    Refused {
        /// Game.
        game: String,
        /// Why.
        message: String,
    },
}

/// The registered games.
#[derive(Clone, Default)]
pub struct Games {
    map: BTreeMap<String, GameFactory>,
}

impl std::fmt::Debug for Games {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.map.keys()).finish()
    }
}

impl Games {
    /// No games.
    pub fn new() -> Self {
        Self::default()
    }

    /// `arena` and `tictactoe`.
    pub fn builtin() -> Self {
        let mut g = Self::new();
        g.register("arena", Arc::new(arena_world));
        g.register("tictactoe", Arc::new(tictactoe_world));
        g
    }

    /// Registers (or replaces) a game.
    pub fn register(&mut self, name: &str, factory: GameFactory) {
        self.map.insert(name.into(), factory);
    }

    /// The games' names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    /// Builds the world `new.spec` asks for.
    pub fn create(&self, new: NewWorld<'_>) -> Result<Box<dyn Core>, GameError> {
        let game = new.spec.game.clone();
        let f = self
            .map
            .get(&game)
            .ok_or_else(|| GameError::Unknown(game.clone(), self.names()))?;
        f(new).map_err(|message| GameError::Refused { game, message })
    }
}

/// A zone layout must cut its game's own grid (else zones and cells
/// disagree about where a point is).
fn layout_fits(
    layout: &skylane_proto::zones::ZoneLayout,
    kind: &str,
    grid: &Grid,
) -> Result<(), String> {
    let spec = layout.spec();
    if spec.cols != grid.cols() || spec.rows != grid.rows() || spec.cell != grid.cell {
        return Err(format!(
            "the zone layout's grid ({} x {} cells of {}) is not {kind}'s ({} x {} cells of {})",
            spec.cols,
            spec.rows,
            spec.cell,
            grid.cols(),
            grid.rows(),
            grid.cell
        ));
    }
    Ok(())
}

/// Whether a zoned world spec fits the built-in game it names, checked
/// before it is placed (the admin API answers `400` with this; an origin
/// would refuse to build its zones for the same reason): the arena's zones
/// must cut its grid, tic-tac-toe cannot be split. Other games are checked
/// by the origins that run them.
pub fn check_zoning(spec: &WorldSpec) -> Result<(), String> {
    let Some(zones) = spec.zones.as_ref() else {
        return Ok(());
    };
    match spec.game.as_str() {
        "arena" => layout_fits(
            &zones.layout,
            "arena",
            &Arena::new(ArenaConfig::default()).grid(),
        ),
        "tictactoe" => Err("tictactoe cannot be split into zones".into()),
        _ => Ok(()),
    }
}

fn arena_world(new: NewWorld<'_>) -> Result<Box<dyn Core>, String> {
    // A zone announces players on their cells, which it alone writes (the
    // world channel would have a writer per zone).
    let roster = if new.spec.zone_of.is_some() {
        crate::arena::Roster::Cells
    } else {
        ArenaConfig::default().roster
    };
    let arena = Arena::new(ArenaConfig {
        roster,
        ..ArenaConfig::default()
    });
    let grid = arena.grid();
    let cfg = new.engine_config();
    let engine = Engine::new(arena, grid, cfg, new.signer.same_key(), new.now_us);
    start(&new, "arena", grid, engine)
}

fn tictactoe_world(new: NewWorld<'_>) -> Result<Box<dyn Core>, String> {
    if new.spec.capacity != 2 {
        return Err(format!(
            "a tic-tac-toe room holds exactly 2 players, not {}",
            new.spec.capacity
        ));
    }
    let hz = u64::from(new.spec.tick_hz.max(1));
    let game = TicTacToe::new(TttConfig {
        // Ten seconds a turn.
        turn_ticks: 10 * hz,
        max_timeouts: 2,
    });
    let grid = Grid {
        width: 1.0,
        height: 1.0,
        cell: 1.0,
        radius: 0,
        margin: 0.0,
        clip: None,
    };
    let cfg = new.engine_config();
    let engine = Engine::new(game, grid, cfg, new.signer.same_key(), new.now_us);
    start(&new, "tictactoe", grid, engine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use skylane_proto::WorldPhase;

    fn signer() -> ChainSigner {
        ChainSigner::from_bytes(&[7; 32])
    }

    #[test]
    fn builds_registered_games_and_names_unknown_ones() {
        let g = Games::builtin();
        assert_eq!(g.names(), vec!["arena", "tictactoe"]);
        let spec = WorldSpec::new("tictactoe", 10, 2);
        let core = g
            .create(NewWorld {
                id: WorldId(3),
                spec: &spec,
                now_us: 0,
                signer: signer(),
                journal: None,
                snapshot: None,
            })
            .unwrap();
        assert_eq!(core.world_id(), WorldId(3));
        assert_eq!(core.game(), "tictactoe");
        let ws = core.world_state();
        assert_eq!((ws.phase, ws.capacity), (WorldPhase::Waiting, 2));
        let spec = WorldSpec::new("chess", 10, 2);
        let err = g
            .create(NewWorld {
                id: WorldId(4),
                spec: &spec,
                now_us: 0,
                signer: signer(),
                journal: None,
                snapshot: None,
            })
            .err()
            .unwrap();
        assert!(matches!(err, GameError::Unknown(ref n, _) if n == "chess"));
        let spec = WorldSpec::new("tictactoe", 10, 3);
        assert!(matches!(
            g.create(NewWorld {
                id: WorldId(5),
                spec: &spec,
                now_us: 0,
                signer: signer(),
                journal: None,
                snapshot: None,
            }),
            Err(GameError::Refused { .. })
        ));
    }

    #[test]
    fn a_zone_record_builds_a_zone_engine_signing_as_its_world() {
        use skylane_control::{ZoneOf, ZoneSpec};
        use skylane_proto::zones::{ZoneIdx, ZoneLayout};
        let spec = WorldSpec {
            zones: Some(Box::new(ZoneSpec {
                layout: ZoneLayout::even(10, 10, 100.0, 2, 1).unwrap(),
                hysteresis: 10.0,
                margin: 20.0,
            })),
            zone_of: Some(ZoneOf {
                world: WorldId(40),
                zone: ZoneIdx(1),
            }),
            ..WorldSpec::new("arena", 30, 100)
        };
        let new = NewWorld {
            id: WorldId(42),
            spec: &spec,
            now_us: 0,
            signer: signer(),
            journal: None,
            snapshot: None,
        };
        assert!(
            new.engine_config().lifecycle.is_none(),
            "a zoned world is persistent"
        );
        let core = Games::builtin().create(new).unwrap();
        assert_eq!(core.world_id(), WorldId(40), "signs as the world");
        assert_eq!(core.zone(), Some(ZoneIdx(1)));
        // Tic-tac-toe cannot be split.
        let ttt = WorldSpec {
            game: "tictactoe".into(),
            capacity: 2,
            min_players: 2,
            ..spec.clone()
        };
        let err = Games::builtin()
            .create(NewWorld {
                id: WorldId(43),
                spec: &ttt,
                now_us: 0,
                signer: signer(),
                journal: None,
                snapshot: None,
            })
            .err()
            .unwrap();
        assert!(matches!(err, GameError::Refused { .. }), "{err}");
        // A layout that does not cut the arena's grid (4 x 4 cells on its
        // 10 x 10): refused, naming both.
        let mut off = spec.clone();
        if let Some(z) = off.zones.as_mut() {
            z.layout = ZoneLayout::even(4, 4, 100.0, 2, 1).unwrap();
        }
        let err = Games::builtin()
            .create(NewWorld {
                id: WorldId(44),
                spec: &off,
                now_us: 0,
                signer: signer(),
                journal: None,
                snapshot: None,
            })
            .err()
            .unwrap();
        assert!(err.to_string().contains("4 x 4 cells"), "{err}");
    }

    #[test]
    fn the_spec_sets_the_tick_rate_and_the_room_rules() {
        let mut spec = WorldSpec::new("arena", 20, 8);
        spec.min_players = 2;
        spec.start_after_ms = 1_500;
        let cfg = NewWorld {
            id: WorldId(1),
            spec: &spec,
            now_us: 0,
            signer: signer(),
            journal: None,
            snapshot: None,
        }
        .engine_config();
        assert_eq!(cfg.tick_hz, 20);
        let life = cfg.lifecycle.unwrap();
        assert_eq!(life.capacity, 8);
        assert_eq!(life.min_players, 2);
        assert_eq!(life.start_after_ticks, 30);
        assert_eq!(life.empty_grace_ticks, 200);
    }
}
