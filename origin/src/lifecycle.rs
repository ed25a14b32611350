//! A room's life: waiting for players → playing → ended with a result. Pure: the
//! engine calls it with tick numbers, so replays reproduce every transition.
//!
//! * **Waiting**: joins are admitted up to the capacity. The world starts when it
//!   is full, or `start_after_ticks` after it first held `min_players` (if that is
//!   not 0), as long as it still holds them then.
//! * **Playing**: joins are admitted up to the capacity (a late joiner or a
//!   reconnecting player). It ends when the game says so (a result), when no
//!   player has been in it for `empty_grace_ticks`, or when an operator ends it.
//! * **Ended**: nobody is admitted; the shell removes the world after its grace.

use serde::{Deserialize, Serialize};
use skylane_proto::{WorldPhase, WorldResult};

/// A room's rules of life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleConfig {
    /// Most players at once.
    pub capacity: u32,
    /// Fewest players to start with after the timer.
    pub min_players: u32,
    /// Ticks to wait once `min_players` are in before starting without being
    /// full (0: start only when full).
    pub start_after_ticks: u64,
    /// Ticks with no player, once the world had players, before it ends as
    /// abandoned.
    pub empty_grace_ticks: u64,
}

/// Why a join is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// At capacity.
    Full,
    /// Over.
    Ended,
}

/// The state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    cfg: LifecycleConfig,
    phase: WorldPhase,
    /// Tick since which the world has held at least `min_players` while waiting.
    min_since: Option<u64>,
    /// Tick since which the world has held no player (after it had some).
    empty_since: Option<u64>,
    had_players: bool,
    result: Option<WorldResult>,
    /// Tick of the last transition.
    changed_at: u64,
}

impl Lifecycle {
    /// A new room, waiting.
    pub fn new(cfg: LifecycleConfig) -> Self {
        Self {
            cfg,
            phase: WorldPhase::Waiting,
            min_since: None,
            empty_since: None,
            had_players: false,
            result: None,
            changed_at: 0,
        }
    }

    /// The rules.
    pub fn config(&self) -> &LifecycleConfig {
        &self.cfg
    }

    /// The phase now.
    pub fn phase(&self) -> WorldPhase {
        self.phase
    }

    /// The result, once ended.
    pub fn result(&self) -> Option<&WorldResult> {
        self.result.as_ref()
    }

    /// Tick of the last transition.
    pub fn changed_at(&self) -> u64 {
        self.changed_at
    }

    /// May one more player join a world that holds `players`?
    pub fn admit(&self, players: u32) -> Result<(), Closed> {
        match self.phase {
            WorldPhase::Ended => Err(Closed::Ended),
            _ if players >= self.cfg.capacity => Err(Closed::Full),
            _ => Ok(()),
        }
    }

    /// A player joined (even one who leaves before the next tick counts: the
    /// room had players, so emptying it starts the abandonment grace).
    pub fn handle_joined(&mut self) {
        self.had_players = true;
    }

    /// The end of a tick: `players` are in, and the game's verdict is
    /// `game_over`. Returns the new phase when it changed.
    pub fn handle_tick(
        &mut self,
        tick: u64,
        players: u32,
        game_over: Option<WorldResult>,
    ) -> Option<WorldPhase> {
        if players > 0 {
            self.had_players = true;
            self.empty_since = None;
        } else if self.had_players && self.empty_since.is_none() {
            self.empty_since = Some(tick);
        }
        match self.phase {
            WorldPhase::Waiting => {
                if players >= self.cfg.min_players {
                    self.min_since.get_or_insert(tick);
                } else {
                    self.min_since = None;
                }
                let timer_done = self.cfg.start_after_ticks > 0
                    && self
                        .min_since
                        .is_some_and(|t| tick.saturating_sub(t) >= self.cfg.start_after_ticks);
                if players >= self.cfg.capacity || timer_done {
                    return self.to(tick, WorldPhase::Playing);
                }
                if self.abandoned(tick) {
                    return self.end(tick, abandoned());
                }
                None
            }
            WorldPhase::Playing => {
                if let Some(r) = game_over {
                    return self.end(tick, r);
                }
                if self.abandoned(tick) {
                    return self.end(tick, abandoned());
                }
                None
            }
            WorldPhase::Ended => None,
        }
    }

    /// An operator (or the control plane) ends the world now.
    pub fn handle_end(&mut self, tick: u64, reason: &str) -> Option<WorldPhase> {
        self.end(
            tick,
            WorldResult {
                winner: None,
                scores: Vec::new(),
                reason: reason.into(),
            },
        )
    }

    fn abandoned(&self, tick: u64) -> bool {
        self.empty_since
            .is_some_and(|t| tick.saturating_sub(t) >= self.cfg.empty_grace_ticks)
    }

    fn end(&mut self, tick: u64, result: WorldResult) -> Option<WorldPhase> {
        if self.phase == WorldPhase::Ended {
            return None;
        }
        self.result = Some(result);
        self.to(tick, WorldPhase::Ended)
    }

    fn to(&mut self, tick: u64, phase: WorldPhase) -> Option<WorldPhase> {
        self.phase = phase;
        self.changed_at = tick;
        Some(phase)
    }
}

fn abandoned() -> WorldResult {
    WorldResult {
        winner: None,
        scores: Vec::new(),
        reason: "abandoned".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(start_after: u64) -> Lifecycle {
        Lifecycle::new(LifecycleConfig {
            capacity: 4,
            min_players: 2,
            start_after_ticks: start_after,
            empty_grace_ticks: 10,
        })
    }

    #[test]
    fn starts_when_full() {
        let mut l = room(0);
        assert_eq!(l.handle_tick(1, 3, None), None);
        assert_eq!(l.admit(3), Ok(()));
        assert_eq!(l.handle_tick(2, 4, None), Some(WorldPhase::Playing));
        assert_eq!(l.admit(4), Err(Closed::Full));
        assert_eq!(l.changed_at(), 2);
    }

    #[test]
    fn starts_after_the_timer_with_the_minimum_only() {
        let mut l = room(5);
        assert_eq!(l.handle_tick(1, 1, None), None);
        assert_eq!(l.handle_tick(2, 2, None), None, "minimum reached at 2");
        assert_eq!(l.handle_tick(6, 2, None), None);
        // Dropping under the minimum resets the timer.
        assert_eq!(l.handle_tick(7, 1, None), None);
        assert_eq!(l.handle_tick(8, 2, None), None);
        assert_eq!(l.handle_tick(12, 2, None), None);
        assert_eq!(l.handle_tick(13, 2, None), Some(WorldPhase::Playing));
    }

    #[test]
    fn ends_with_the_games_result_and_admits_nobody() {
        let mut l = room(0);
        l.handle_tick(1, 4, None);
        let r = WorldResult {
            winner: Some("alice".into()),
            scores: vec![("alice".into(), 1)],
            reason: "won".into(),
        };
        assert_eq!(
            l.handle_tick(2, 4, Some(r.clone())),
            Some(WorldPhase::Ended)
        );
        assert_eq!(l.result(), Some(&r));
        assert_eq!(l.admit(0), Err(Closed::Ended));
        assert_eq!(l.handle_tick(3, 4, None), None, "ended stays ended");
        assert_eq!(l.handle_end(4, "operator"), None);
    }

    #[test]
    fn ends_when_the_last_player_left_for_the_grace() {
        let mut l = room(0);
        l.handle_tick(1, 4, None);
        assert_eq!(l.handle_tick(2, 0, None), None, "empty since 2");
        assert_eq!(l.handle_tick(11, 0, None), None);
        // Someone came back: the grace restarts.
        assert_eq!(l.handle_tick(12, 1, None), None);
        assert_eq!(l.handle_tick(13, 0, None), None);
        assert_eq!(l.handle_tick(23, 0, None), Some(WorldPhase::Ended));
        assert_eq!(l.result().map(|r| r.reason.as_str()), Some("abandoned"));
    }

    #[test]
    fn a_waiting_room_nobody_joined_does_not_end_by_itself() {
        let mut l = room(0);
        for t in 1..100 {
            assert_eq!(l.handle_tick(t, 0, None), None);
        }
        // But a waiting room everyone left does.
        l.handle_tick(100, 1, None);
        assert_eq!(l.handle_tick(101, 0, None), None);
        assert_eq!(l.handle_tick(111, 0, None), Some(WorldPhase::Ended));
    }

    #[test]
    fn an_operator_ends_it_at_any_phase() {
        let mut l = room(0);
        assert_eq!(l.handle_end(3, "operator"), Some(WorldPhase::Ended));
        assert_eq!(l.result().map(|r| r.reason.as_str()), Some("operator"));
        assert_eq!(l.phase(), WorldPhase::Ended);
    }
}
