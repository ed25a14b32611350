//! The engine's room side: a world with a lifecycle (waiting, playing, ended)
//! runs the game's tick hooks, admits joins and reports its state through it.

use skylane_proto::{Role, WorldPhase, WorldState};

use crate::lifecycle::{Lifecycle, LifecycleConfig};
use crate::world::{Emit, TickCtx, World};

use super::{Engine, Output};

impl<W: World> Engine<W> {
    /// An empty room waiting for players: nothing can happen until someone
    /// joins, so the shell need not run its ticks (it calls
    /// [`Engine::rebase`] when the next input arrives, so the room does not
    /// catch up on the skipped time). Worlds without a lifecycle are never idle.
    pub fn idle(&self) -> bool {
        self.life
            .as_ref()
            .is_some_and(|l| l.phase() == WorldPhase::Waiting)
            && self.sessions.is_empty()
            && self.staged.is_empty()
            && self.applied.is_empty()
            && self.outputs.is_empty()
    }

    /// Players (not spectators) in the world.
    pub fn players(&self) -> u32 {
        // A zone's player sessions away (kept at the home zone for the world
        // channel, their avatar in another zone) are that zone's players.
        self.sessions
            .values()
            .filter(|s| s.role == Role::Player && (self.zone.is_none() || s.avatar.is_some()))
            .count() as u32
    }

    /// The room's phase (`Playing` for a world without a lifecycle).
    pub fn phase(&self) -> WorldPhase {
        self.life
            .as_ref()
            .map_or(WorldPhase::Playing, Lifecycle::phase)
    }

    /// The room's lifecycle state now (epoch 0 and the world as its host: the shell fills them in).
    pub fn world_state(&self) -> WorldState {
        let life = self.life.as_ref();
        WorldState {
            world: self.cfg.world,
            epoch: 0,
            host: self.cfg.world,
            phase: self.phase(),
            players: self.players(),
            capacity: life.map_or(0, |l| l.config().capacity),
            tick: life.map_or(0, Lifecycle::changed_at),
            result: life.and_then(|l| l.result().cloned()),
        }
    }

    /// An operator ends the room at the next tick boundary (now, in tick terms).
    /// A world without a lifecycle gets one that is already over.
    pub fn handle_end(&mut self, reason: &str) {
        let tick = self.tick;
        let life = self.life.get_or_insert_with(|| {
            Lifecycle::new(LifecycleConfig {
                capacity: u32::MAX,
                min_players: 1,
                start_after_ticks: 0,
                empty_grace_ticks: u64::MAX,
            })
        });
        if life.handle_end(tick, reason).is_some() {
            self.outputs.push_back(Output::Phase(self.world_state()));
        }
    }

    /// The game's tick hook and the room's transitions, before the tick's events
    /// are published (so what the hook emits goes out this tick).
    pub(super) fn tick_hook(&mut self) {
        let players = self.players();
        let mut emit = Emit::default();
        let mut ctx = TickCtx {
            tick: self.tick,
            tick_hz: self.cfg.tick_hz,
            phase: self.phase(),
        };
        if ctx.phase == WorldPhase::Playing {
            self.world.on_tick(&ctx, &mut emit);
        }
        let verdict = (ctx.phase == WorldPhase::Playing)
            .then(|| self.world.result())
            .flatten();
        let changed = self
            .life
            .as_mut()
            .and_then(|l| l.handle_tick(ctx.tick, players, verdict));
        if let Some(phase) = changed {
            if phase == WorldPhase::Playing {
                ctx.phase = phase;
                self.world.on_start(&ctx, &mut emit);
                self.world.on_tick(&ctx, &mut emit);
            }
            self.outputs.push_back(Output::Phase(self.world_state()));
        }
        self.stage(emit);
    }
}
