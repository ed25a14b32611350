//! "tictactoe": the second reference game, small and turn-based, to prove the
//! [`World`] trait is not arena-shaped.
//!
//! Rooms of two. The first player to join plays X and moves first once the room
//! starts. A turn lasts `turn_ticks`; the tick hook ([`World::on_tick`]) passes a
//! slow player's turn, and a player who lets `max_timeouts` turns pass loses. The
//! game ends with a winner (three in a row, timeouts, or the opponent leaving)
//! or a draw, reported through [`World::result`].
//!
//! Actions and events are postcard-encoded [`TttAction`] and [`TttEvent`]. The
//! board is entity 1 (its version bumps on every mark); players are entities 2
//! and 3.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use skylane_proto::{
    ChannelId, EntityId, EventClass, Hash32, Payload, RejectCode, TeamId, WorldResult,
};

use crate::interest::Grid;
use crate::world::{Ctx, Emit, Observation, Rejection, TickCtx, Validator, World};

/// The board's entity.
pub const BOARD: EntityId = EntityId(1);

/// Game-specific rejection: not the player's turn.
pub const NOT_YOUR_TURN: u16 = 1;
/// Game-specific rejection: the cell is taken or off the board.
pub const BAD_CELL: u16 = 2;
/// Game-specific rejection: the game is over.
pub const GAME_OVER: u16 = 3;

/// A move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TttAction {
    /// Mark cell 0..9 (row-major).
    Place {
        /// Cell.
        cell: u8,
    },
}

/// What players see happen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TttEvent {
    /// A player sat down with a mark (1 = X, 2 = O).
    Joined {
        /// Player id.
        player: String,
        /// Mark.
        mark: u8,
    },
    /// A player left.
    Left {
        /// Player id.
        player: String,
    },
    /// The game started; `first` moves.
    Started {
        /// Player to move.
        first: String,
    },
    /// A mark was placed; `next` moves (if the game goes on).
    Placed {
        /// Who.
        player: String,
        /// Where.
        cell: u8,
        /// Which mark.
        mark: u8,
        /// Who moves next.
        next: Option<String>,
    },
    /// A turn ran out.
    TimedOut {
        /// The slow player.
        player: String,
        /// Who moves next.
        next: String,
    },
    /// The game is over.
    Over {
        /// Winner, if any.
        winner: Option<String>,
        /// `three_in_a_row`, `draw`, `timeouts`, `forfeit`.
        reason: String,
    },
}

/// The room's full state (keyframes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TttState {
    /// Cells: 0 empty, 1 X, 2 O.
    pub board: [u8; 9],
    /// Players in seat order with their marks.
    pub players: Vec<(String, u8)>,
    /// Who moves, if playing.
    pub turn: Option<String>,
    /// How the game ended, once over.
    pub result: Option<WorldResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Seat {
    player: String,
    entity: EntityId,
    mark: u8,
    timeouts: u32,
    present: bool,
}

/// Settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TttConfig {
    /// Ticks a player has for a move.
    pub turn_ticks: u64,
    /// Turns a player may let pass before losing.
    pub max_timeouts: u32,
}

impl Default for TttConfig {
    fn default() -> Self {
        Self {
            turn_ticks: 100,
            max_timeouts: 2,
        }
    }
}

/// A tic-tac-toe room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicTacToe {
    cfg: TttConfig,
    board: [u8; 9],
    board_version: u64,
    seats: Vec<Seat>,
    /// Seat to move, once started.
    turn: Option<usize>,
    turn_started: u64,
    over: Option<WorldResult>,
}

const LINES: [[usize; 3]; 8] = [
    [0, 1, 2],
    [3, 4, 5],
    [6, 7, 8],
    [0, 3, 6],
    [1, 4, 7],
    [2, 5, 8],
    [0, 4, 8],
    [2, 4, 6],
];

impl TicTacToe {
    /// An empty room.
    pub fn new(cfg: TttConfig) -> Self {
        Self {
            cfg,
            board: [0; 9],
            board_version: 1,
            seats: Vec::new(),
            turn: None,
            turn_started: 0,
            over: None,
        }
    }

    /// The board (0 empty, 1 X, 2 O).
    pub fn board(&self) -> [u8; 9] {
        self.board
    }

    /// Players in seat order with their marks.
    pub fn players(&self) -> Vec<(String, u8)> {
        self.seats
            .iter()
            .map(|s| (s.player.clone(), s.mark))
            .collect()
    }

    fn seat_of(&self, entity: EntityId) -> Option<usize> {
        self.seats.iter().position(|s| s.entity == entity)
    }

    fn other(&self, seat: usize) -> usize {
        (seat + 1) % self.seats.len().max(1)
    }

    fn state(&self) -> TttState {
        TttState {
            board: self.board,
            players: self
                .seats
                .iter()
                .map(|s| (s.player.clone(), s.mark))
                .collect(),
            turn: self.turn.map(|t| self.seats[t].player.clone()),
            result: self.over.clone(),
        }
    }

    fn emit(out: &mut Emit, class: EventClass, entity: Option<EntityId>, e: &TttEvent) {
        out.push(
            ChannelId::World,
            class,
            entity,
            postcard::to_stdvec(e).unwrap_or_default(),
        );
    }

    fn finish(&mut self, out: &mut Emit, winner: Option<usize>, reason: &str) {
        let winner = winner.map(|w| self.seats[w].player.clone());
        let scores = self
            .seats
            .iter()
            .map(|s| {
                let score = match &winner {
                    Some(w) if *w == s.player => 1,
                    Some(_) => -1,
                    None => 0,
                };
                (s.player.clone(), score)
            })
            .collect();
        self.over = Some(WorldResult {
            winner: winner.clone(),
            scores,
            reason: reason.into(),
        });
        self.turn = None;
        Self::emit(
            out,
            EventClass::Critical,
            Some(BOARD),
            &TttEvent::Over {
                winner,
                reason: reason.into(),
            },
        );
    }
}

fn check_open(w: &TicTacToe, _: &Ctx, _: &TttAction) -> Result<(), Rejection> {
    if w.over.is_some() {
        return Err(Rejection::new(
            RejectCode::Game(GAME_OVER),
            "the game is over",
        ));
    }
    Ok(())
}

fn check_turn(w: &TicTacToe, ctx: &Ctx, _: &TttAction) -> Result<(), Rejection> {
    match w.turn {
        Some(t) if w.seats[t].entity == ctx.avatar => Ok(()),
        _ => Err(Rejection::new(
            RejectCode::Game(NOT_YOUR_TURN),
            "not your turn",
        )),
    }
}

fn check_cell(w: &TicTacToe, _: &Ctx, a: &TttAction) -> Result<(), Rejection> {
    let TttAction::Place { cell } = a;
    match w.board.get(usize::from(*cell)) {
        Some(0) => Ok(()),
        Some(_) => Err(Rejection::new(RejectCode::Game(BAD_CELL), "cell taken")),
        None => Err(Rejection::new(RejectCode::Game(BAD_CELL), "no such cell")),
    }
}

impl World for TicTacToe {
    type Action = TttAction;

    fn name(&self) -> &str {
        "tictactoe"
    }

    fn decode_action(&self, _class: EventClass, payload: &[u8]) -> Result<TttAction, Rejection> {
        postcard::from_bytes(payload)
            .map_err(|e| Rejection::new(RejectCode::Malformed, e.to_string()))
    }

    fn validators(&self) -> Vec<(&'static str, Validator<Self>)> {
        vec![
            ("open", check_open),
            ("turn", check_turn),
            ("cell", check_cell),
        ]
    }

    fn version(&self, entity: EntityId) -> Option<u64> {
        if entity == BOARD {
            return Some(self.board_version);
        }
        self.seat_of(entity).map(|_| 1)
    }

    fn join(
        &mut self,
        player: &str,
        _team: Option<TeamId>,
        _tick: u64,
        out: &mut Emit,
    ) -> EntityId {
        // A player who left and comes back takes their seat again.
        if let Some(s) = self.seats.iter_mut().find(|s| s.player == player) {
            s.present = true;
            return s.entity;
        }
        let mark = self.seats.len() as u8 + 1;
        let entity = EntityId(u64::from(mark) + 1);
        self.seats.push(Seat {
            player: player.into(),
            entity,
            mark,
            timeouts: 0,
            present: true,
        });
        Self::emit(
            out,
            EventClass::State,
            Some(entity),
            &TttEvent::Joined {
                player: player.into(),
                mark,
            },
        );
        entity
    }

    fn leave(&mut self, avatar: EntityId, _tick: u64, out: &mut Emit) {
        let Some(seat) = self.seat_of(avatar) else {
            return;
        };
        self.seats[seat].present = false;
        Self::emit(
            out,
            EventClass::State,
            Some(avatar),
            &TttEvent::Left {
                player: self.seats[seat].player.clone(),
            },
        );
        if self.turn.is_some() && self.over.is_none() && self.seats.len() == 2 {
            let other = self.other(seat);
            self.finish(out, Some(other), "forfeit");
        }
    }

    fn apply(&mut self, ctx: &Ctx, action: &TttAction, out: &mut Emit) -> Observation {
        let TttAction::Place { cell } = *action;
        let Some(seat) = self.seat_of(ctx.avatar) else {
            return Observation::default();
        };
        let mark = self.seats[seat].mark;
        self.board[usize::from(cell)] = mark;
        self.board_version += 1;
        let won = LINES
            .iter()
            .any(|l| l.iter().all(|&i| self.board[i] == mark));
        let full = self.board.iter().all(|&c| c != 0);
        let next = (!won && !full).then(|| self.other(seat));
        Self::emit(
            out,
            EventClass::State,
            Some(BOARD),
            &TttEvent::Placed {
                player: self.seats[seat].player.clone(),
                cell,
                mark,
                next: next.map(|n| self.seats[n].player.clone()),
            },
        );
        if won {
            self.finish(out, Some(seat), "three_in_a_row");
        } else if full {
            self.finish(out, None, "draw");
        } else {
            self.turn = next;
            self.turn_started = ctx.tick;
        }
        Observation::default()
    }

    fn on_start(&mut self, ctx: &TickCtx, out: &mut Emit) {
        if self.seats.is_empty() {
            return;
        }
        self.turn = Some(0);
        self.turn_started = ctx.tick;
        Self::emit(
            out,
            EventClass::Critical,
            Some(BOARD),
            &TttEvent::Started {
                first: self.seats[0].player.clone(),
            },
        );
    }

    fn on_tick(&mut self, ctx: &TickCtx, out: &mut Emit) {
        let Some(t) = self.turn else { return };
        if self.over.is_some() || ctx.tick.saturating_sub(self.turn_started) < self.cfg.turn_ticks {
            return;
        }
        self.seats[t].timeouts += 1;
        let next = self.other(t);
        Self::emit(
            out,
            EventClass::State,
            Some(self.seats[t].entity),
            &TttEvent::TimedOut {
                player: self.seats[t].player.clone(),
                next: self.seats[next].player.clone(),
            },
        );
        if self.seats[t].timeouts >= self.cfg.max_timeouts {
            self.finish(out, Some(next), "timeouts");
        } else {
            self.turn = Some(next);
            self.turn_started = ctx.tick;
        }
    }

    fn result(&self) -> Option<WorldResult> {
        self.over.clone()
    }

    fn describe(&self, _entities: &[EntityId]) -> Payload {
        postcard::to_stdvec(&self.state())
            .unwrap_or_default()
            .into()
    }

    fn position(&self, _entity: EntityId) -> Option<(f32, f32)> {
        None
    }

    fn team(&self, _entity: EntityId) -> Option<TeamId> {
        None
    }

    fn channel_state(&self, _channel: ChannelId, _grid: &Grid) -> Payload {
        postcard::to_stdvec(&self.state())
            .unwrap_or_default()
            .into()
    }

    fn state_hash(&self) -> Hash32 {
        let mut h = Sha256::new();
        h.update(b"skylane/tictactoe/1");
        h.update(postcard::to_stdvec(self).unwrap_or_default());
        Hash32(h.finalize().into())
    }

    fn diff(&self, other: &Self) -> Vec<EntityId> {
        let mut out = Vec::new();
        if self.board != other.board
            || self.board_version != other.board_version
            || self.turn != other.turn
            || self.over != other.over
        {
            out.push(BOARD);
        }
        for (a, b) in self.seats.iter().zip(&other.seats) {
            if a != b {
                out.push(a.entity);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skylane_proto::WorldPhase;

    fn ctx(avatar: EntityId, tick: u64) -> Ctx {
        Ctx {
            tick,
            tick_hz: 10,
            avatar,
            client_time_us: 0,
        }
    }

    fn tick(t: u64) -> TickCtx {
        TickCtx {
            tick: t,
            tick_hz: 10,
            phase: WorldPhase::Playing,
        }
    }

    fn started() -> (TicTacToe, EntityId, EntityId) {
        let mut g = TicTacToe::new(TttConfig {
            turn_ticks: 5,
            max_timeouts: 2,
        });
        let mut out = Emit::default();
        let x = g.join("xavier", None, 0, &mut out);
        let o = g.join("olga", None, 0, &mut out);
        g.on_start(&tick(1), &mut out);
        (g, x, o)
    }

    fn play(g: &mut TicTacToe, who: EntityId, cell: u8, t: u64) -> Result<(), Rejection> {
        let a = TttAction::Place { cell };
        for (_, v) in g.validators() {
            v(g, &ctx(who, t), &a)?;
        }
        g.apply(&ctx(who, t), &a, &mut Emit::default());
        Ok(())
    }

    #[test]
    fn three_in_a_row_wins() {
        let (mut g, x, o) = started();
        play(&mut g, x, 0, 2).unwrap();
        assert_eq!(
            play(&mut g, x, 1, 2).unwrap_err().code,
            RejectCode::Game(NOT_YOUR_TURN)
        );
        play(&mut g, o, 3, 3).unwrap();
        assert_eq!(
            play(&mut g, x, 3, 3).unwrap_err().code,
            RejectCode::Game(BAD_CELL)
        );
        assert_eq!(
            play(&mut g, x, 9, 3).unwrap_err().code,
            RejectCode::Game(BAD_CELL)
        );
        play(&mut g, x, 1, 4).unwrap();
        play(&mut g, o, 4, 5).unwrap();
        assert_eq!(g.result(), None);
        play(&mut g, x, 2, 6).unwrap();
        let r = g.result().unwrap();
        assert_eq!(r.winner.as_deref(), Some("xavier"));
        assert_eq!(r.reason, "three_in_a_row");
        assert_eq!(r.scores, vec![("xavier".into(), 1), ("olga".into(), -1)]);
        assert_eq!(
            play(&mut g, o, 5, 7).unwrap_err().code,
            RejectCode::Game(GAME_OVER)
        );
    }

    #[test]
    fn a_full_board_without_a_line_is_a_draw() {
        let (mut g, x, o) = started();
        // X O X / X O O / O X X
        for (i, cell) in [0u8, 1, 2, 4, 3, 5, 7, 6, 8].iter().enumerate() {
            let who = if i % 2 == 0 { x } else { o };
            play(&mut g, who, *cell, 2 + i as u64).unwrap();
        }
        let r = g.result().unwrap();
        assert_eq!(r.winner, None);
        assert_eq!(r.reason, "draw");
    }

    #[test]
    fn slow_turns_pass_and_then_lose() {
        let (mut g, x, _o) = started();
        let mut out = Emit::default();
        g.on_tick(&tick(5), &mut out);
        assert_eq!(g.turn, Some(0), "turn not over yet");
        g.on_tick(&tick(6), &mut out);
        assert_eq!(g.turn, Some(1), "x's turn timed out");
        g.on_tick(&tick(11), &mut out);
        assert_eq!(g.turn, Some(0), "o's turn timed out");
        play(&mut g, x, 4, 12).unwrap();
        g.on_tick(&tick(17), &mut out);
        g.on_tick(&tick(22), &mut out);
        let r = g.result().unwrap();
        assert_eq!(r.reason, "timeouts");
        assert_eq!(
            r.winner.as_deref(),
            Some("xavier"),
            "olga let two turns pass"
        );
    }

    #[test]
    fn leaving_mid_game_forfeits_and_rejoining_keeps_the_seat() {
        let (mut g, x, o) = started();
        let mut out = Emit::default();
        g.leave(o, 3, &mut out);
        assert_eq!(g.result().unwrap().reason, "forfeit");
        assert_eq!(g.join("olga", None, 4, &mut out), o);
        assert_ne!(x, o);
        // Hashes differ when states do, and diff names the board.
        let fresh = started().0;
        assert_ne!(g.state_hash(), fresh.state_hash());
        assert!(g.diff(&fresh).contains(&BOARD));
    }
}
