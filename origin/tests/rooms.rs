//! Rooms in the engine: the lifecycle through the engine's public interface
//! (joins admitted up to the capacity, actions refused until the room plays, the
//! tick hook's timers, the game's result ending the room, lifecycle outputs),
//! idleness, and the same inputs giving the same room.

use skylane_origin::*;
use skylane_proto::{
    Action, ChainSigner, EventClass, Outcome, RejectCode, Role, SessionId, WorldId, WorldPhase,
};

fn room(turn_ticks: u64) -> Engine<TicTacToe> {
    let mut cfg = EngineConfig::new(WorldId(1000));
    cfg.tick_hz = 10;
    cfg.keyframe_every = 2;
    cfg.lifecycle = Some(LifecycleConfig {
        capacity: 2,
        min_players: 2,
        start_after_ticks: 0,
        empty_grace_ticks: 20,
    });
    let grid = Grid {
        width: 1.0,
        height: 1.0,
        cell: 1.0,
        radius: 0,
        margin: 0.0,
        clip: None,
    };
    let game = TicTacToe::new(TttConfig {
        turn_ticks,
        max_timeouts: 2,
    });
    Engine::new(game, grid, cfg, ChainSigner::from_bytes(&[1; 32]), 0)
}

fn place(seq: u64, cell: u8) -> Action {
    Action {
        class: EventClass::State,
        seq,
        client_time_us: 0,
        reads: vec![],
        payload: postcard::to_stdvec(&TttAction::Place { cell })
            .unwrap()
            .into(),
    }
}

/// The phase changes output (head-count updates while waiting left out).
fn phases(e: &mut Engine<TicTacToe>) -> Vec<WorldPhase> {
    let mut out = Vec::new();
    while let Some(o) = e.poll_output() {
        if let Output::Phase(ws) = o {
            if ws.phase != WorldPhase::Waiting && out.last() != Some(&ws.phase) {
                out.push(ws.phase);
            }
        }
    }
    out
}

fn outcome(e: &mut Engine<TicTacToe>, s: u64) -> Option<Outcome> {
    let mut found = None;
    while let Some(o) = e.poll_output() {
        if let Output::Result { session, result } = o {
            if session == SessionId(s) {
                found = Some(result.outcome);
            }
        }
    }
    found
}

#[test]
fn a_room_waits_fills_plays_and_ends_with_the_games_result() {
    let mut e = room(50);
    assert!(e.idle(), "an empty waiting room is idle");
    assert_eq!(e.phase(), WorldPhase::Waiting);
    e.handle_join(SessionId(1), "x", Role::Player, None)
        .unwrap();
    assert!(!e.idle());
    // Moves before the start are refused by name.
    e.handle_action(SessionId(1), place(1, 4));
    assert!(matches!(
        outcome(&mut e, 1),
        Some(Outcome::Rejected {
            code: RejectCode::NotPlaying,
            ..
        })
    ));
    e.handle_join(SessionId(2), "o", Role::Player, None)
        .unwrap();
    // Full: a third player is refused, a spectator is not.
    assert_eq!(
        e.handle_join(SessionId(3), "late", Role::Player, None),
        Err(JoinError::Full)
    );
    assert!(e
        .handle_join(SessionId(4), "fan", Role::Spectator, None)
        .is_ok());
    e.run_tick(100_000);
    assert_eq!(phases(&mut e), vec![WorldPhase::Playing]);
    for (i, (s, cell)) in [(1, 0), (2, 3), (1, 1), (2, 4), (1, 2)].iter().enumerate() {
        e.handle_action(SessionId(*s), place(10 + i as u64, *cell));
    }
    e.run_tick(200_000);
    assert_eq!(phases(&mut e), vec![WorldPhase::Ended]);
    let ws = e.world_state();
    let r = ws.result.unwrap();
    assert_eq!(
        (r.winner.as_deref(), r.reason.as_str()),
        (Some("x"), "three_in_a_row")
    );
    // Ended: nobody is admitted.
    assert_eq!(
        e.handle_join(SessionId(5), "again", Role::Player, None),
        Err(JoinError::Ended)
    );
}

#[test]
fn the_tick_hook_times_slow_turns_out_and_ends_the_room() {
    let mut e = room(5);
    e.handle_join(SessionId(1), "x", Role::Player, None)
        .unwrap();
    e.handle_join(SessionId(2), "o", Role::Player, None)
        .unwrap();
    let mut t = 0;
    let mut seen = Vec::new();
    for _ in 0..40 {
        t += 100_000;
        e.run_tick(t);
        seen.extend(phases(&mut e));
    }
    assert_eq!(seen, vec![WorldPhase::Playing, WorldPhase::Ended]);
    assert_eq!(e.world_state().result.unwrap().reason, "timeouts");
}

#[test]
fn an_operator_ends_any_world_and_the_last_one_out_ends_a_room() {
    let mut e = room(50);
    e.handle_join(SessionId(1), "x", Role::Player, None)
        .unwrap();
    e.handle_leave(SessionId(1));
    let mut t = 0;
    let mut seen = Vec::new();
    for _ in 0..25 {
        t += 100_000;
        e.run_tick(t);
        seen.extend(phases(&mut e));
    }
    assert_eq!(seen.last(), Some(&WorldPhase::Ended));
    assert_eq!(e.world_state().result.unwrap().reason, "abandoned");
    let mut e = room(50);
    e.handle_end("operator");
    assert_eq!(phases(&mut e), vec![WorldPhase::Ended]);
    assert_eq!(e.world_state().result.unwrap().reason, "operator");
}

#[test]
fn the_same_inputs_give_the_same_room() {
    let run = || {
        let mut e = room(5);
        e.handle_join(SessionId(1), "x", Role::Player, None)
            .unwrap();
        e.handle_join(SessionId(2), "o", Role::Player, None)
            .unwrap();
        let mut hashes = Vec::new();
        for i in 0..20u64 {
            if i == 3 {
                e.handle_action(SessionId(1), place(1, 4));
            }
            e.run_tick((i + 1) * 100_000);
            while e.poll_output().is_some() {}
            hashes.push(e.state_hash());
        }
        hashes
    };
    assert_eq!(run(), run());
}

/// Plays a room to its end, handing every batch and keyframe to `feed`.
fn play_room(mut feed: impl FnMut(&Output)) -> Engine<TicTacToe> {
    let mut e = room(50);
    e.handle_join(SessionId(1), "x", Role::Player, None)
        .unwrap();
    e.handle_join(SessionId(2), "o", Role::Player, None)
        .unwrap();
    let moves = [(1, 4), (2, 0), (1, 8), (2, 1), (1, 2), (2, 6), (1, 5)];
    let mut t = 0;
    for (i, (s, cell)) in moves.iter().enumerate() {
        for _ in 0..3 {
            t += 100_000;
            e.run_tick(t);
            while let Some(o) = e.poll_output() {
                feed(&o);
            }
        }
        e.handle_action(SessionId(*s), place(100 + i as u64, *cell));
    }
    for _ in 0..12 {
        t += 100_000;
        e.run_tick(t);
        while let Some(o) = e.poll_output() {
            feed(&o);
        }
    }
    e
}

#[test]
fn the_consistency_checker_follows_a_room_and_catches_a_lost_batch() {
    let mut view = TttView::new();
    let mut errors = Vec::new();
    let e = play_room(|o| {
        let r = match o {
            Output::Keyframe(kf) => view.apply_keyframe(kf),
            Output::Batch(b) => view.apply_batch(b),
            _ => Ok(()),
        };
        if let Err(err) = r {
            errors.push(err);
        }
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert!(e.world().result().is_some(), "the game ended");
    assert_eq!(view.check(e.world()), vec![], "the view matches the origin");

    // Lose the batch holding one move: the next batch is a gap.
    let mut view = TttView::new();
    let mut dropped = false;
    let mut gap = None;
    let mut started = false;
    play_room(|o| match o {
        // A client starts from one keyframe (later ones are for resyncs).
        Output::Keyframe(kf) if !started => {
            started = true;
            let _ = view.apply_keyframe(kf);
        }
        Output::Batch(b) => {
            let has_move = b.events.iter().any(|ev| {
                matches!(
                    postcard::from_bytes::<TttEvent>(&ev.payload),
                    Ok(TttEvent::Placed { .. })
                )
            });
            if has_move && !dropped && view.board().iter().any(|c| *c != 0) {
                dropped = true;
                return;
            }
            if let Err(err) = view.apply_batch(b) {
                gap.get_or_insert(err);
            }
        }
        _ => {}
    });
    assert!(dropped);
    assert!(matches!(gap, Some(ViewError::Gap { .. })), "{gap:?}");
}
