//! The consistency checker: a client's view rebuilt from keyframes and batches
//! matches the origin's state at the same tick, and a lost batch is detected.

use skylane_origin::*;
use skylane_proto::{Action, ChainSigner, EventClass, Role, SessionId, WorldId};

fn small_world() -> Engine<Arena> {
    // 2 × 2 cells: every player's 3 × 3 block covers the whole map, so one client
    // receives every channel.
    let cfg = ArenaConfig {
        width: 200.0,
        height: 200.0,
        cell: 100.0,
        items: 20,
        fire_range: 300.0,
        hit_radius: 3.0,
        ..ArenaConfig::default()
    };
    let arena = Arena::new(cfg);
    let grid = arena.grid();
    Engine::new(
        arena,
        grid,
        EngineConfig::new(WorldId(1)),
        ChainSigner::from_bytes(&[2; 32]),
        0,
    )
}

/// Plays 200 ticks of moves, shots and trades; hands every output to `feed`.
fn play(e: &mut Engine<Arena>, mut feed: impl FnMut(Output)) {
    for s in 1..=4 {
        e.handle_join(SessionId(s), &format!("p{s}"), Role::Player, None)
            .unwrap();
    }
    let mut rng = 99u64;
    let mut next = |m: u64| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) % m
    };
    for t in 1..=200u64 {
        for s in 1..=4u64 {
            let me = e.avatar(SessionId(s)).unwrap();
            let p = e.world().player(me).unwrap().clone();
            let other = e.avatar(SessionId(s % 4 + 1)).unwrap();
            let q = e.world().player(other).unwrap().clone();
            let action = match next(10) {
                0..=5 => ArenaAction::Move {
                    x: (p.x + next(60) as f32 / 100.0 - 0.3).clamp(0.0, 200.0),
                    y: (p.y + next(60) as f32 / 100.0 - 0.3).clamp(0.0, 200.0),
                },
                6..=8 => ArenaAction::Fire { x: q.x, y: q.y },
                _ => ArenaAction::Trade {
                    partner: other,
                    give_coins: next(20),
                    give_items: vec![],
                    get_coins: 0,
                    get_items: vec![],
                },
            };
            let seq = t * 10 + s;
            e.handle_action(
                SessionId(s),
                Action {
                    class: EventClass::Critical,
                    seq,
                    client_time_us: seq,
                    reads: vec![],
                    payload: action.encode(),
                },
            );
        }
        let now = e.poll_timeout();
        e.handle_timeout(now);
        while let Some(o) = e.poll_output() {
            feed(o);
        }
    }
}

#[test]
fn a_view_rebuilt_from_keyframes_and_batches_matches_the_origin() {
    let mut e = small_world();
    let mut view = ArenaView::new();
    let mut keyframes = 0;
    let mut batches = 0;
    let mut frames = 0;
    play(&mut e, |o| match o {
        Output::Keyframe(kf) => {
            view.apply_keyframe(&kf).unwrap();
            keyframes += 1;
        }
        Output::Batch(b) => {
            view.apply_batch(&b).unwrap();
            batches += 1;
        }
        Output::Movement(f) => {
            view.apply_movement(&f);
            frames += 1;
        }
        _ => {}
    });
    // Moves are movement frames, not batches.
    assert!(
        keyframes >= 6 && batches > 100 && frames > 100,
        "keyframes {keyframes}, batches {batches}, movement frames {frames}"
    );
    let stats = e.stats();
    assert!(stats.applied > 300, "{stats:?}");
    let mismatches = view.check(e.world());
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    // Hits and trades happened, so the comparison covered changing hp and coins.
    assert!(e
        .world()
        .players()
        .any(|(_, p)| p.hp < 100 || p.coins != 100));
}

#[test]
fn a_lost_batch_is_detected() {
    let mut e = small_world();
    let mut view = ArenaView::new();
    let mut dropped = false;
    let mut errors = Vec::new();
    play(&mut e, |o| match o {
        Output::Keyframe(kf) => view.apply_keyframe(&kf).unwrap(),
        Output::Batch(b) => {
            // Lose the first batch of a started channel after tick 40.
            if !dropped && b.tick > 40 && view.has_channel(b.channel) {
                dropped = true;
                return;
            }
            if let Err(err) = view.apply_batch(&b) {
                errors.push(err);
            }
        }
        _ => {}
    });
    assert!(dropped);
    assert!(
        matches!(errors.first(), Some(ViewError::Gap { .. })),
        "{errors:?}"
    );
}
