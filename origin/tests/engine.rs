//! The origin engine with the arena game: optimistic concurrency, bad input,
//! anti-cheat, tamper evidence, resume history, determinism.

use proptest::prelude::*;
use skylane_origin::*;
use skylane_proto::{
    Action, ChainSigner, ChainVerifier, ChannelCursor, ChannelId, EntityId, EntityVersion,
    EventClass, Outcome, Payload, RejectCode, Role, SessionId, WorldId,
};

const KEY: [u8; 32] = [42; 32];

fn engine() -> Engine<Arena> {
    engine_with(ArenaConfig::default())
}

/// The default arena with engine settings changed by `tune`.
fn engine_tuned(tune: impl FnOnce(&mut EngineConfig)) -> Engine<Arena> {
    let arena = Arena::new(ArenaConfig::default());
    let grid = arena.grid();
    let mut cfg = EngineConfig::new(WorldId(1));
    tune(&mut cfg);
    Engine::new(arena, grid, cfg, ChainSigner::from_bytes(&KEY), 0)
}

fn engine_with(cfg: ArenaConfig) -> Engine<Arena> {
    let arena = Arena::new(cfg);
    let grid = arena.grid();
    Engine::new(
        arena,
        grid,
        EngineConfig::new(WorldId(1)),
        ChainSigner::from_bytes(&KEY),
        0,
    )
}

fn join(e: &mut Engine<Arena>, s: u64) -> EntityId {
    e.handle_join(SessionId(s), &format!("p{s}"), Role::Player, None)
        .unwrap()
        .unwrap()
}

fn act(seq: u64, a: &ArenaAction, reads: Vec<EntityVersion>) -> Action {
    Action {
        class: EventClass::Critical,
        seq,
        client_time_us: seq * 1000,
        reads,
        payload: a.encode(),
    }
}

fn read(e: &Engine<Arena>, id: EntityId) -> EntityVersion {
    EntityVersion {
        entity: id,
        version: World::version(e.world(), id).unwrap(),
    }
}

/// Runs a tick and returns the results by session, in order.
fn tick(e: &mut Engine<Arena>) -> Vec<(SessionId, Outcome)> {
    let now = e.poll_timeout();
    e.handle_timeout(now);
    let mut out = Vec::new();
    while let Some(o) = e.poll_output() {
        if let Output::Result { session, result } = o {
            out.push((session, result.outcome));
        }
    }
    out
}

/// The results output so far, without running a tick (conflicts and rejections
/// are answered on arrival; applied actions when their tick ends).
fn answers(e: &mut Engine<Arena>) -> Vec<(SessionId, Outcome)> {
    let mut out = Vec::new();
    while let Some(o) = e.poll_output() {
        if let Output::Result { session, result } = o {
            out.push((session, result.outcome));
        }
    }
    out
}

/// Session 1 sprays: a chained bulk event in its cell (moves are state, not
/// chained).
fn spray(e: &mut Engine<Arena>, seq: u64) {
    let a = ArenaAction::Spray {
        data: vec![seq as u8; 40],
    };
    e.handle_action(SessionId(1), act(seq, &a, vec![]));
}

/// Session 1 (placed at (500, 500)) steps 0.3 units east per sequence number.
fn move_east(e: &mut Engine<Arena>, seq: u64) {
    let step = ArenaAction::Move {
        x: 500.0 + seq as f32 * 0.3,
        y: 500.0,
    };
    e.handle_action(SessionId(1), act(seq, &step, vec![]));
}

#[track_caller]
fn assert_rejected(outcome: &Outcome, code: RejectCode) {
    assert!(
        matches!(outcome, Outcome::Rejected { code: c, .. } if *c == code),
        "expected {code:?}, got {outcome:?}"
    );
}

fn drain(e: &mut Engine<Arena>) -> Vec<Output> {
    std::iter::from_fn(|| e.poll_output()).collect()
}

fn first_item(e: &Engine<Arena>) -> (EntityId, f32, f32) {
    let (id, item) = e.world().items().next().unwrap();
    (*id, item.x, item.y)
}

#[test]
fn two_players_pick_up_one_item_in_one_tick_exactly_one_gets_it() {
    let mut e = engine();
    let (a, b) = (join(&mut e, 1), join(&mut e, 2));
    let (item, x, y) = first_item(&e);
    e.world_mut().place(a, x, y);
    e.world_mut().place(b, x, y);
    tick(&mut e);
    let r = read(&e, item);
    e.handle_action(SessionId(1), act(1, &ArenaAction::PickUp { item }, vec![r]));
    e.handle_action(SessionId(2), act(1, &ArenaAction::PickUp { item }, vec![r]));
    // The loser learns at once, with the state to retry from; the winner when the
    // tick it was applied in ends.
    let now = answers(&mut e);
    assert_eq!(now.len(), 1, "{now:?}");
    match &now[0] {
        (SessionId(2), Outcome::Conflict { current, state }) => {
            assert_eq!(current[0].entity, item);
            assert!(current[0].version > r.version);
            assert!(!state.is_empty(), "conflict carries the current state");
        }
        other => panic!("second pickup should conflict: {other:?}"),
    }
    let results = tick(&mut e);
    assert!(
        matches!(results[..], [(SessionId(1), Outcome::Applied { .. })]),
        "{results:?}"
    );
    assert_eq!(e.world().item(item).unwrap().holder, Some(a));
    // Without declared reads, the ownership rule still refuses the second pickup.
    let (item2, x2, y2) = e
        .world()
        .items()
        .nth(1)
        .map(|(i, it)| (*i, it.x, it.y))
        .unwrap();
    e.world_mut().place(a, x2, y2);
    e.world_mut().place(b, x2, y2);
    e.handle_action(
        SessionId(2),
        act(2, &ArenaAction::PickUp { item: item2 }, vec![]),
    );
    e.handle_action(
        SessionId(1),
        act(2, &ArenaAction::PickUp { item: item2 }, vec![]),
    );
    let now = answers(&mut e);
    assert!(matches!(now[..], [(SessionId(1), _)]), "{now:?}");
    assert_rejected(&now[0].1, RejectCode::NotOwner);
    let results = tick(&mut e);
    assert!(matches!(
        results[..],
        [(SessionId(2), Outcome::Applied { .. })]
    ));
    assert_eq!(e.world().item(item2).unwrap().holder, Some(b));
}

#[test]
fn two_trades_spending_the_same_coins_never_both_apply() {
    let mut e = engine();
    let (a, b, c) = (join(&mut e, 1), join(&mut e, 2), join(&mut e, 3));
    tick(&mut e);
    let total = e.world().total_coins();
    let trade = |to| ArenaAction::Trade {
        partner: to,
        give_coins: 80,
        give_items: vec![],
        get_coins: 0,
        get_items: vec![],
    };
    // With reads: the second is a conflict.
    let ra = read(&e, a);
    e.handle_action(SessionId(1), act(1, &trade(b), vec![ra]));
    e.handle_action(SessionId(1), act(2, &trade(c), vec![ra]));
    let now = answers(&mut e);
    assert!(
        matches!(now[..], [(_, Outcome::Conflict { .. })]),
        "{now:?}"
    );
    let results = tick(&mut e);
    assert!(matches!(results[..], [(_, Outcome::Applied { .. })]));
    // Without reads: the resources rule refuses what would go negative.
    e.handle_action(SessionId(1), act(3, &trade(c), vec![]));
    let results = tick(&mut e);
    assert_rejected(&results[0].1, RejectCode::Resources);
    assert_eq!(e.world().player(a).unwrap().coins, 20);
    assert_eq!(e.world().total_coins(), total);
}

#[test]
fn one_item_cannot_be_traded_twice() {
    let mut e = engine();
    let (a, b, c) = (join(&mut e, 1), join(&mut e, 2), join(&mut e, 3));
    let (item, x, y) = first_item(&e);
    e.world_mut().place(a, x, y);
    e.handle_action(SessionId(1), act(1, &ArenaAction::PickUp { item }, vec![]));
    tick(&mut e);
    let give = |to| ArenaAction::Trade {
        partner: to,
        give_coins: 0,
        give_items: vec![item],
        get_coins: 0,
        get_items: vec![],
    };
    e.handle_action(SessionId(1), act(2, &give(b), vec![]));
    e.handle_action(SessionId(1), act(3, &give(c), vec![]));
    let now = answers(&mut e);
    assert_eq!(now.len(), 1, "{now:?}");
    assert_rejected(&now[0].1, RejectCode::NotOwner);
    let results = tick(&mut e);
    assert!(matches!(results[..], [(_, Outcome::Applied { .. })]));
    let holders: Vec<EntityId> = [a, b, c]
        .into_iter()
        .filter(|p| e.world().player(*p).unwrap().items.contains(&item))
        .collect();
    assert_eq!(holders, vec![b]);
}

#[test]
fn a_move_from_a_stale_position_conflicts() {
    let mut e = engine();
    let a = join(&mut e, 1);
    e.world_mut().place(a, 500.0, 500.0);
    tick(&mut e);
    let stale = read(&e, a);
    e.handle_action(
        SessionId(1),
        act(1, &ArenaAction::Move { x: 500.2, y: 500.0 }, vec![stale]),
    );
    e.handle_action(
        SessionId(1),
        act(2, &ArenaAction::Move { x: 500.4, y: 500.0 }, vec![stale]),
    );
    assert!(matches!(
        answers(&mut e)[..],
        [(_, Outcome::Conflict { .. })]
    ));
    let results = tick(&mut e);
    assert!(matches!(results[..], [(_, Outcome::Applied { .. })]));
    assert_eq!(e.world().player(a).unwrap().x, 500.2);
}

#[test]
fn bad_input_gets_typed_rejections_and_leaves_others_untouched() {
    let mut e = engine();
    let (a, b) = (join(&mut e, 1), join(&mut e, 2));
    e.world_mut().place(a, 100.0, 100.0);
    e.world_mut().place(b, 900.0, 900.0);
    tick(&mut e);
    let b_before = e.world().player(b).unwrap().clone();
    let (item, _, _) = first_item(&e);
    let mv = ArenaAction::Move { x: 100.1, y: 100.0 };
    e.handle_action(SessionId(99), act(1, &mv, vec![])); // unknown session
    e.handle_action(
        SessionId(1),
        Action {
            payload: Payload::from_static(b"\xff\xff\xff"),
            ..act(1, &mv, vec![])
        },
    );
    e.handle_action(SessionId(1), act(1, &mv, vec![])); // replays seq 1
    e.handle_action(
        SessionId(1),
        Action {
            payload: Payload::from(vec![0u8; 5000]),
            ..act(2, &mv, vec![])
        },
    );
    let steal = ArenaAction::Trade {
        partner: b,
        give_coins: 0,
        give_items: vec![],
        get_coins: 0,
        get_items: vec![item],
    };
    e.handle_action(SessionId(1), act(3, &steal, vec![]));
    let results = tick(&mut e);
    let codes: Vec<_> = results
        .iter()
        .map(|(_, o)| match o {
            Outcome::Rejected { code, .. } => *code,
            other => panic!("expected a rejection, got {other:?}"),
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            RejectCode::Forbidden,
            RejectCode::Malformed,
            RejectCode::Replayed,
            RejectCode::TooLarge,
            RejectCode::NotOwner
        ]
    );
    assert_eq!(e.world().player(b).unwrap(), &b_before);
    assert_eq!(e.stats().rejected, 5);
    // A spectator cannot act.
    e.handle_join(SessionId(7), "viewer", Role::Spectator, None)
        .unwrap();
    e.handle_action(SessionId(7), act(1, &mv, vec![]));
    assert!(matches!(
        tick(&mut e)[0].1,
        Outcome::Rejected {
            code: RejectCode::Forbidden,
            ..
        }
    ));
}

#[test]
fn a_speed_hack_is_rejected_and_recorded() {
    let mut e = engine();
    let a = join(&mut e, 1);
    e.world_mut().place(a, 100.0, 100.0);
    tick(&mut e);
    // Max 10 units/s at 30 Hz: one tick allows 0.33 units.
    e.handle_action(
        SessionId(1),
        act(1, &ArenaAction::Move { x: 150.0, y: 100.0 }, vec![]),
    );
    let now = e.poll_timeout();
    e.handle_timeout(now);
    let out = drain(&mut e);
    assert!(out.iter().any(|o| matches!(o, Output::Result { result, .. } if matches!(result.outcome, Outcome::Rejected { code: RejectCode::Speed, .. }))));
    let v = out
        .iter()
        .find_map(|o| match o {
            Output::Violation(v) => Some(v),
            _ => None,
        })
        .expect("violation recorded");
    assert_eq!(v.kind, AnomalyKind::Rule);
    assert!(v.evidence.contains("Speed"), "{}", v.evidence);
    assert_eq!(e.world().player(a).unwrap().x, 100.0);
}

/// Movement is checked against a budget refilled at the top speed: two
/// honest moves that reach the origin in one tick (network jitter) share
/// what the time since the last move allowed and both apply, while many
/// moves in one tick never add up to more than that (no speed gained by
/// sending more often), and a burst after standing still is capped.
#[test]
fn the_speed_budget_absorbs_jitter_and_never_adds_speed() {
    let mut e = engine();
    let a = join(&mut e, 1);
    let joined = e.tick();
    e.world_mut().place(a, 100.0, 100.0);
    // 30 Hz, 10 units/s: 1/3 unit a tick. Six ticks pass.
    for _ in 0..6 {
        tick(&mut e);
    }
    // Two moves of 0.9 (one delayed by the network) land in one tick: both
    // apply (1.8 units, within the 2 units six ticks allow).
    e.handle_action(
        SessionId(1),
        act(1, &ArenaAction::Move { x: 100.9, y: 100.0 }, vec![]),
    );
    e.handle_action(
        SessionId(1),
        act(2, &ArenaAction::Move { x: 101.8, y: 100.0 }, vec![]),
    );
    let out = tick(&mut e);
    assert!(
        out.iter()
            .all(|(_, o)| matches!(o, Outcome::Applied { .. })),
        "{out:?}"
    );
    // Ten moves of 0.2 in the next tick: some apply, the rest are refused
    // once the budget is spent; never more than the time since joining
    // allows at the top speed.
    for k in 0..10u64 {
        let x = 101.8 + 0.2 * (k + 1) as f32;
        e.handle_action(
            SessionId(1),
            act(3 + k, &ArenaAction::Move { x, y: 100.0 }, vec![]),
        );
    }
    let out = tick(&mut e);
    let refused = out
        .iter()
        .filter(|(_, o)| {
            matches!(
                o,
                Outcome::Rejected {
                    code: RejectCode::Speed,
                    ..
                }
            )
        })
        .count();
    assert!((1..10).contains(&refused), "{out:?}");
    let moved = e.world().player(a).unwrap().x - 100.0;
    let allowed = (e.tick() - joined) as f32 / 3.0;
    assert!(
        moved <= allowed * 1.01 + 1e-3,
        "moved {moved} in {} ticks",
        e.tick() - joined
    );
}

/// Honest bots wander and shoot near their targets with aim error after a human
/// reaction delay; one aimbot shoots exactly at a target the tick it arrives.
#[test]
fn an_aimbot_is_caught_and_honest_bots_are_not() {
    // A small map keeps respawned players within range of each other.
    let mut e = engine_with(ArenaConfig {
        width: 120.0,
        height: 120.0,
        cell: 40.0,
        ..ArenaConfig::default()
    });
    let n_honest = 40u64;
    let mut avatars = Vec::new();
    for s in 1..=n_honest + 1 {
        avatars.push(join(&mut e, s));
    }
    // Everyone in one area so targets are in range.
    for (i, a) in avatars.iter().enumerate() {
        e.world_mut()
            .place(*a, 40.0 + (i % 8) as f32 * 5.0, 40.0 + (i / 8) as f32 * 5.0);
    }
    tick(&mut e);
    let aimbot = SessionId(n_honest + 1);
    let mut seqs = vec![0u64; n_honest as usize + 2];
    let mut rng = 12345u64;
    let mut next = |m: u64| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) % m
    };
    let mut kicked = Vec::new();
    let mut violations = Vec::new();
    let mut fires = std::collections::HashSet::new();
    let mut applied_fires = vec![0usize; n_honest as usize + 2];
    for t in 0..2400u64 {
        for s in 1..=n_honest + 1 {
            let session = SessionId(s);
            if kicked.contains(&session) {
                continue;
            }
            let me = avatars[s as usize - 1];
            let Some(p) = e.world().player(me).cloned() else {
                continue;
            };
            let nearest = e
                .world()
                .players()
                .filter(|(id, _)| **id != me)
                .map(|(id, q)| {
                    (
                        *id,
                        q.clone(),
                        ((p.x - q.x).powi(2) + (p.y - q.y).powi(2)).sqrt(),
                    )
                })
                .filter(|(_, _, d)| *d < 55.0)
                .min_by(|a, b| a.2.total_cmp(&b.2));
            let in_range = nearest.is_some();
            let tp = nearest.map(|(_, q, _)| q).unwrap_or_else(|| p.clone());
            let off_cooldown = p.last_fire_tick.is_none_or(|f| e.tick() + 1 >= f + 10);
            let action = if session == aimbot {
                (in_range && off_cooldown).then_some(ArenaAction::Fire { x: tp.x, y: tp.y })
            } else if in_range
                && off_cooldown
                && next(100) < 20
                && e.tick() + 1 - tp.last_move_tick >= 6
            {
                // Aim error of up to ±2.5 units: about a third of shots land.
                let (dx, dy) = (
                    next(500) as f32 / 100.0 - 2.5,
                    next(500) as f32 / 100.0 - 2.5,
                );
                Some(ArenaAction::Fire {
                    x: tp.x + dx,
                    y: tp.y + dy,
                })
            } else if next(100) < 30 {
                let (dx, dy) = (next(60) as f32 / 100.0 - 0.3, next(60) as f32 / 100.0 - 0.3);
                Some(ArenaAction::Move {
                    x: (p.x + dx * 0.5).clamp(0.0, 120.0),
                    y: (p.y + dy * 0.5).clamp(0.0, 120.0),
                })
            } else {
                None
            };
            if let Some(a) = action {
                seqs[s as usize] += 1;
                if matches!(a, ArenaAction::Fire { .. }) {
                    fires.insert((s, seqs[s as usize]));
                }
                e.handle_action(session, act(seqs[s as usize], &a, vec![]));
            }
        }
        let now = e.poll_timeout();
        e.handle_timeout(now);
        for o in drain(&mut e) {
            match o {
                Output::Violation(v) if v.kind != AnomalyKind::Rule => violations.push(v),
                Output::Kick { session, .. } => kicked.push(session),
                Output::Result { session, result }
                    if matches!(result.outcome, Outcome::Applied { .. })
                        && fires.contains(&(session.0, result.seq)) =>
                {
                    applied_fires[session.0 as usize] += 1;
                }
                _ => {}
            }
        }
        let _ = t;
    }
    // The detector judges accuracy after 20 attacks: most honest bots must get there,
    // or "no false positives" would mean nothing.
    let judged = (1..=n_honest as usize)
        .filter(|s| applied_fires[*s] >= 20)
        .count();
    assert!(
        judged >= 30,
        "only {judged} honest bots fired 20 times: {applied_fires:?}"
    );
    let false_positives = violations.iter().filter(|v| v.session != aimbot).count();
    eprintln!(
        "honest bots: {n_honest}, judged (>= 20 attacks): {judged}, false positives: {false_positives}; aimbot: {:?}",
        violations.iter().find(|v| v.session == aimbot).map(|v| &v.evidence)
    );
    assert_eq!(false_positives, 0, "honest bots flagged: {violations:?}");
    assert!(
        violations.iter().any(|v| v.session == aimbot),
        "aimbot not caught"
    );
    assert!(kicked.contains(&aimbot), "the default enforcement kicks");
    assert!(e.stats().applied > 1000);
}

#[test]
fn batches_are_signed_chained_and_sequenced() {
    let mut e = engine();
    let a = join(&mut e, 1);
    e.world_mut().place(a, 500.0, 500.0);
    let mut verifier = ChainVerifier::new(ChainSigner::from_bytes(&KEY).verifying_key());
    let mut batches = 0;
    for seq in 1..=20u64 {
        spray(&mut e, seq);
        let now = e.poll_timeout();
        e.handle_timeout(now);
        for o in drain(&mut e) {
            if let Output::Batch(b) = o {
                verifier.verify(&b).unwrap();
                batches += 1;
            }
        }
    }
    assert!(batches >= 20);
}

#[test]
fn resume_history_returns_missed_batches_until_it_is_evicted() {
    let mut e = engine_tuned(|c| c.history = 300);
    let a = join(&mut e, 1);
    e.world_mut().place(a, 500.0, 500.0);
    let cell = ChannelId::Cell { x: 5, y: 5 };
    for seq in 1..=10u64 {
        spray(&mut e, seq);
        tick(&mut e);
    }
    let missed = e
        .history_since(ChannelCursor {
            channel: cell,
            seq: 6,
        })
        .unwrap();
    let seqs: Vec<u64> = missed
        .iter()
        .flat_map(|b| b.events.iter().map(|ev| ev.seq))
        .collect();
    assert_eq!(seqs, vec![7, 8, 9, 10]);
    assert!(e
        .history_since(ChannelCursor {
            channel: cell,
            seq: 10
        })
        .unwrap()
        .is_empty());
    // After 300+ more batches the oldest are gone.
    for seq in 11..=320u64 {
        spray(&mut e, seq);
        tick(&mut e);
    }
    assert!(matches!(
        e.history_since(ChannelCursor {
            channel: cell,
            seq: 6
        }),
        Err(ResumeError::TooOld { .. })
    ));
}

#[test]
fn the_history_is_bounded_by_bytes_too() {
    let mut e = engine_tuned(|c| c.history_bytes = 4 * 1024);
    let a = join(&mut e, 1);
    e.world_mut().place(a, 500.0, 500.0);
    let cell = ChannelId::Cell { x: 5, y: 5 };
    for seq in 1..=100u64 {
        spray(&mut e, seq);
        tick(&mut e);
    }
    // 100 batches of ~200 bytes do not fit in 4 KiB: the oldest are gone
    // although 100 < the 1,050-batch count bound.
    assert!(matches!(
        e.history_since(ChannelCursor {
            channel: cell,
            seq: 1
        }),
        Err(ResumeError::TooOld { .. })
    ));
}

#[test]
fn moving_across_cells_updates_subscriptions_and_keyframes_follow() {
    let mut e = engine();
    let a = join(&mut e, 1);
    drain(&mut e);
    e.world_mut().place(a, 505.0, 505.0);
    // The first move registers the avatar's real position.
    let mut seq = 0;
    let mut subs = Vec::new();
    let mut keyframes = 0;
    for _ in 0..90 {
        seq += 1;
        let x = 505.0 + seq as f32 * 0.3;
        e.handle_action(
            SessionId(1),
            act(seq, &ArenaAction::Move { x, y: 505.0 }, vec![]),
        );
        let now = e.poll_timeout();
        e.handle_timeout(now);
        for o in drain(&mut e) {
            match o {
                Output::Subscriptions { added, removed, .. } => subs.push((added, removed)),
                Output::Keyframe(_) => keyframes += 1,
                _ => {}
            }
        }
    }
    assert!(!subs.is_empty(), "moving 27 units crosses into a new area");
    assert!(keyframes >= 3, "keyframes every 30 ticks");
    let cells = e.channels_of(SessionId(1));
    assert!(cells.contains(&ChannelId::World));
    assert!(cells.iter().any(|c| matches!(c, ChannelId::Team(_))));
}

#[test]
fn quiet_channels_get_a_keyframe_only_every_tenth_period() {
    let mut e = engine();
    let a = join(&mut e, 1);
    e.world_mut().place(a, 505.0, 505.0);
    let channels = e.channels_of(SessionId(1)).len();
    // Keyframes per channel over 3,000 ticks (100 periods of 30 ticks) while the
    // player stands still (nothing happens on any of its channels).
    let mut per_channel: std::collections::HashMap<ChannelId, u32> = Default::default();
    for _ in 0..3_000 {
        let now = e.poll_timeout();
        e.handle_timeout(now);
        for o in drain(&mut e) {
            if let Output::Keyframe(k) = o {
                *per_channel.entry(k.channel).or_default() += 1;
            }
        }
    }
    assert_eq!(
        per_channel.len(),
        channels,
        "every subscribed channel is kept alive"
    );
    for (c, n) in &per_channel {
        assert!(
            (10..=11).contains(n),
            "{c:?}: {n} keyframes in 100 quiet periods (the first, then every 10th)"
        );
    }
    // Once something happens on the player's cell, its next period has a keyframe.
    let cell = ChannelId::Cell { x: 5, y: 5 };
    e.handle_action(
        SessionId(1),
        act(1, &ArenaAction::Move { x: 506.0, y: 505.0 }, vec![]),
    );
    let mut next = 0;
    for _ in 0..30 {
        let now = e.poll_timeout();
        e.handle_timeout(now);
        next += drain(&mut e)
            .iter()
            .filter(|o| matches!(o, Output::Keyframe(k) if k.channel == cell))
            .count();
    }
    assert_eq!(
        next, 1,
        "a changed channel gets its keyframe at the next period"
    );
}

#[test]
fn a_cell_roster_announces_players_only_around_them() {
    let mut e = engine_with(ArenaConfig {
        width: 5_000.0,
        height: 5_000.0,
        roster: Roster::Cells,
        ..ArenaConfig::default()
    });
    let mut spawned = Vec::new();
    for s in 1..=20 {
        join(&mut e, s);
    }
    let now = e.poll_timeout();
    e.handle_timeout(now);
    for o in drain(&mut e) {
        if let Output::Batch(b) = o {
            for ev in &b.events {
                if let Some(ArenaEvent::Spawned { x, y, .. }) = ArenaEvent::decode(&ev.payload) {
                    spawned.push((b.channel, x, y));
                }
            }
        }
    }
    assert_eq!(spawned.len(), 20, "every arrival is announced once");
    let grid = e.world().grid();
    for (channel, x, y) in spawned {
        assert_eq!(channel, grid.channel_of(x, y), "on the cell it spawned in");
    }
    // The world keyframe lists nobody; a cell keyframe lists who is in it.
    let world = e.keyframe_now(ChannelId::World);
    assert_eq!(world.state.len(), 2, "two empty lists: {:?}", world.state);
}

#[test]
fn same_inputs_give_the_same_state_and_batches() {
    let run = || {
        let mut e = engine();
        let mut out = Vec::new();
        for s in 1..=5 {
            join(&mut e, s);
        }
        for seq in 1..=50u64 {
            for s in 1..=5u64 {
                let a = e.avatar(SessionId(s)).unwrap();
                let p = e.world().player(a).unwrap().clone();
                let action = if seq % 7 == 0 {
                    ArenaAction::Fire {
                        x: p.x + 1.0,
                        y: p.y,
                    }
                } else {
                    ArenaAction::Move {
                        x: (p.x + 0.2).min(1000.0),
                        y: p.y,
                    }
                };
                e.handle_action(SessionId(s), act(seq, &action, vec![]));
            }
            let now = e.poll_timeout();
            e.handle_timeout(now);
            out.extend(drain(&mut e).into_iter().filter_map(|o| match o {
                Output::Batch(b) => Some(b),
                _ => None,
            }));
        }
        (e.state_hash(), out)
    };
    let (h1, b1) = run();
    let (h2, b2) = run();
    assert_eq!(h1, h2);
    assert_eq!(b1, b2);
}

#[derive(Debug, Clone)]
enum Op {
    Trade {
        from: usize,
        to: usize,
        give: u64,
        get: u64,
        give_item: Option<usize>,
        with_reads: bool,
    },
    PickUp {
        who: usize,
        item: usize,
    },
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            0..4usize,
            0..4usize,
            0..150u64,
            0..150u64,
            prop::option::of(0..6usize),
            any::<bool>()
        )
            .prop_map(|(from, to, give, get, give_item, with_reads)| Op::Trade {
                from,
                to,
                give,
                get,
                give_item,
                with_reads
            }),
        (0..4usize, 0..6usize).prop_map(|(who, item)| Op::PickUp { who, item }),
        Just(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever trades and pickups arrive in whatever order, total coins and the set
    /// of items are conserved, no balance goes negative, and every item has at most
    /// one holder that agrees with the holder's inventory.
    #[test]
    fn trades_and_pickups_conserve_coins_and_items(ops in prop::collection::vec(op(), 1..80)) {
        let mut e = engine();
        let players: Vec<EntityId> = (1..=4).map(|s| join(&mut e, s)).collect();
        let items: Vec<EntityId> = e.world().items().take(6).map(|(i, _)| *i).collect();
        let item_count = e.world().items().count();
        tick(&mut e);
        let total = e.world().total_coins();
        let mut seqs = [0u64; 5];
        for o in ops {
            match o {
                Op::Tick => { tick(&mut e); }
                Op::Trade { from, to, give, get, give_item, with_reads } => {
                    let (a, b) = (players[from], players[to]);
                    let reads = if with_reads { vec![read(&e, a), read(&e, b)] } else { vec![] };
                    seqs[from + 1] += 1;
                    let give_items = give_item.map(|i| vec![items[i]]).unwrap_or_default();
                    e.handle_action(SessionId(from as u64 + 1), act(seqs[from + 1], &ArenaAction::Trade {
                        partner: b, give_coins: give, give_items, get_coins: get, get_items: vec![],
                    }, reads));
                }
                Op::PickUp { who, item } => {
                    let it = e.world().item(items[item]).unwrap().clone();
                    e.world_mut().place(players[who], it.x, it.y);
                    seqs[who + 1] += 1;
                    e.handle_action(SessionId(who as u64 + 1), act(seqs[who + 1], &ArenaAction::PickUp { item: items[item] }, vec![]));
                }
            }
        }
        tick(&mut e);
        prop_assert_eq!(e.world().total_coins(), total);
        prop_assert_eq!(e.world().items().count(), item_count);
        for (id, item) in e.world().items() {
            let holders: Vec<_> = players.iter().filter(|p| e.world().player(**p).unwrap().items.contains(id)).collect();
            match item.holder {
                Some(h) => prop_assert_eq!(holders, vec![&h]),
                None => prop_assert!(holders.is_empty()),
            }
        }
    }
}

#[test]
fn a_busy_tick_is_split_into_batches_that_fit_a_frame() {
    // A map of one cell: every spray lands on the same channel.
    let arena = Arena::new(ArenaConfig {
        width: 10.0,
        height: 10.0,
        ..ArenaConfig::default()
    });
    let grid = arena.grid();
    let mut cfg = EngineConfig::new(WorldId(1));
    cfg.max_payload = 16 * 1024;
    let mut e = Engine::new(arena, grid, cfg, ChainSigner::from_bytes(&KEY), 0);
    for s in 1..=10 {
        join(&mut e, s);
    }
    tick(&mut e);
    while e.poll_output().is_some() {}
    // Ten 12 KB sprays and ten markers in one tick.
    for s in 1..=10 {
        let spray = ArenaAction::Spray {
            data: vec![s as u8; 12 * 1024],
        };
        e.handle_action(SessionId(s), act(1, &spray, vec![]));
        let mark = ArenaAction::Mark { x: 1.0, y: 2.0 };
        e.handle_action(SessionId(s), act(2, &mark, vec![]));
    }
    let now = e.poll_timeout();
    e.handle_timeout(now);
    let mut verifier = ChainVerifier::new(ChainSigner::from_bytes(&KEY).verifying_key());
    let mut per_channel: std::collections::HashMap<ChannelId, Vec<u64>> = Default::default();
    let (mut sprays, mut marks, mut batches) = (0, 0, 0);
    while let Some(o) = e.poll_output() {
        let Output::Batch(b) = o else { continue };
        batches += 1;
        let frame = skylane_proto::encode_frame_to_bytes(
            &skylane_proto::LinkMsg::Events((*b).clone()),
            skylane_proto::DEFAULT_MAX_FRAME,
        );
        assert!(frame.is_ok(), "every batch fits a frame");
        verifier.verify(&b).unwrap();
        for ev in &b.events {
            per_channel.entry(b.channel).or_default().push(ev.seq);
            match ArenaEvent::decode(&ev.payload) {
                Some(ArenaEvent::Sprayed { data, .. }) => {
                    assert_eq!(data.len(), 12 * 1024);
                    assert_eq!(ev.class, EventClass::Bulk);
                    sprays += 1;
                }
                Some(ArenaEvent::Marked { .. }) => {
                    assert_eq!(
                        (b.channel, ev.class),
                        (ChannelId::World, EventClass::Critical)
                    );
                    marks += 1;
                }
                _ => {}
            }
        }
    }
    assert_eq!((sprays, marks), (10, 10));
    assert!(batches >= 5, "120 KB of sprays in 32 KB batches: {batches}");
    for seqs in per_channel.values() {
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    }
}

#[test]
fn the_spectator_feed_is_public_tagged_and_only_on_when_asked() {
    let mut e = engine();
    let a = join(&mut e, 1);
    let b = join(&mut e, 2);
    e.world_mut().place(a, 100.0, 100.0);
    e.world_mut().place(b, 300.0, 300.0);
    // A spectator gets no channel at all: no live events can reach it.
    let watcher = e.handle_join(SessionId(9), "watcher", Role::Spectator, None);
    assert_eq!(watcher, Ok(None));
    assert!(e.channels_of(SessionId(9)).is_empty());
    // Off by default: no feed frames.
    e.handle_action(
        SessionId(1),
        act(1, &ArenaAction::Mark { x: 1.0, y: 2.0 }, vec![]),
    );
    let now = e.poll_timeout();
    e.handle_timeout(now);
    assert!(!drain(&mut e).iter().any(|o| matches!(o, Output::Feed(_))));

    // On: a keyframe of every player at once, tagged with team and position.
    e.set_feed(true, now);
    let out = drain(&mut e);
    let Some(Output::Feed(kf)) = out.first() else {
        panic!("no keyframe: {out:?}");
    };
    assert!(kf.keyframe);
    assert_eq!(kf.events.len(), 2);
    let tagged = kf.events.iter().find(|ev| ev.entity == Some(a)).unwrap();
    assert_eq!(tagged.pos, Some((100.0, 100.0)));
    assert_eq!(tagged.team, e.world().player(a).map(|p| p.team));
    assert!(matches!(
        ArenaEvent::decode(&tagged.payload),
        Some(ArenaEvent::Spawned { entity, .. }) if entity == a
    ));

    // A public marker is in the feed; the team's private plan is not, though the
    // team's channel carries it.
    e.handle_action(
        SessionId(1),
        act(2, &ArenaAction::Mark { x: 5.0, y: 6.0 }, vec![]),
    );
    e.handle_action(
        SessionId(2),
        act(1, &ArenaAction::Plan { x: 7.0, y: 8.0 }, vec![]),
    );
    let now = e.poll_timeout();
    e.handle_timeout(now);
    let out = drain(&mut e);
    let feed: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Feed(f) => Some(f.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(feed.len(), 1);
    assert!(!feed[0].keyframe);
    let decoded: Vec<_> = feed[0]
        .events
        .iter()
        .filter_map(|ev| ArenaEvent::decode(&ev.payload))
        .collect();
    assert!(decoded
        .iter()
        .any(|ev| matches!(ev, ArenaEvent::Marked { .. })));
    assert!(!decoded
        .iter()
        .any(|ev| matches!(ev, ArenaEvent::Planned { .. })));
    let planned_on_team = out.iter().any(|o| {
        matches!(o, Output::Batch(batch) if matches!(batch.channel, ChannelId::Team(_))
            && batch.events.iter().any(|ev| matches!(ArenaEvent::decode(&ev.payload), Some(ArenaEvent::Planned { .. }))))
    });
    assert!(planned_on_team, "the plan went to its team");

    // Off again: nothing more.
    e.set_feed(false, now);
    e.handle_action(
        SessionId(1),
        act(3, &ArenaAction::Mark { x: 5.0, y: 6.0 }, vec![]),
    );
    let now = e.poll_timeout();
    e.handle_timeout(now);
    assert!(!drain(&mut e).iter().any(|o| matches!(o, Output::Feed(_))));
}

#[test]
fn a_full_tick_refuses_further_actions_until_it_ends() {
    let arena = Arena::new(ArenaConfig::default());
    let grid = arena.grid();
    let mut cfg = EngineConfig::new(WorldId(1));
    cfg.max_queue = 2;
    let mut e = Engine::new(arena, grid, cfg, ChainSigner::from_bytes(&KEY), 0);
    let a = join(&mut e, 1);
    e.world_mut().place(a, 500.0, 500.0);
    tick(&mut e);
    for seq in 1..=3 {
        move_east(&mut e, seq);
    }
    // The third is refused at once; the two taken are answered when the tick ends.
    let now = answers(&mut e);
    assert_eq!(now.len(), 1, "{now:?}");
    assert_rejected(&now[0].1, RejectCode::RateLimited);
    let results = tick(&mut e);
    assert!(
        matches!(
            results[..],
            [(_, Outcome::Applied { .. }), (_, Outcome::Applied { .. })]
        ),
        "{results:?}"
    );
    assert_eq!(e.stats().overflowed, 1);
    // A new tick takes actions again (the refused one was never consumed).
    move_east(&mut e, 3);
    assert!(matches!(tick(&mut e)[..], [(_, Outcome::Applied { .. })]));
}

/// Datagrams and per-class streams arrive out of send order: an older sequence
/// number is accepted once within the window, an older move is superseded (not
/// applied, not a replay), and only a number used before is a replay.
#[test]
fn reordered_actions_are_accepted_and_stale_moves_superseded_not_replays() {
    let mut e = engine();
    let me = join(&mut e, 1);
    tick(&mut e);
    tick(&mut e);
    let (x0, y0) = {
        let p = e.world().player(me).unwrap();
        (p.x, p.y)
    };
    let moved = |seq: u64, dx: f32| Action {
        class: EventClass::Movement,
        ..act(seq, &ArenaAction::Move { x: x0 + dx, y: y0 }, vec![])
    };
    // Move 3 arrives before move 2; a state action 1 arrives last.
    e.handle_action(SessionId(1), moved(3, 0.2));
    e.handle_action(SessionId(1), moved(2, 0.1));
    e.handle_action(
        SessionId(1),
        act(1, &ArenaAction::Move { x: x0 + 0.3, y: y0 }, vec![]),
    );
    e.handle_action(SessionId(1), moved(3, 0.2));
    let mut outcomes = answers(&mut e);
    outcomes.extend(tick(&mut e));
    let by_code = |code: RejectCode| {
        outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Rejected { code: c, .. } if *c == code))
            .count()
    };
    assert_eq!(by_code(RejectCode::Superseded), 1, "{outcomes:?}");
    assert_eq!(
        by_code(RejectCode::Replayed),
        1,
        "only the reused 3: {outcomes:?}"
    );
    let applied = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Applied { .. }))
        .count();
    assert_eq!(
        applied, 2,
        "move 3 and the late state action 1: {outcomes:?}"
    );
    let p = e.world().player(me).unwrap();
    assert!(
        (p.x - (x0 + 0.3)).abs() < 1e-3,
        "the last applied action wins: {}",
        p.x
    );
}
