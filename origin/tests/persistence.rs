//! Journal and snapshots: restart with the same hash, replay checks, tamper location.

use skylane_origin::*;
use skylane_proto::{Action, ChainSigner, EventClass, Role, SessionId, WorldId};

const KEY: [u8; 32] = [5; 32];

fn meta(arena: &Arena) -> JournalMeta {
    JournalMeta {
        world_kind: "arena".into(),
        world: WorldId(3),
        engine: EngineConfig::new(WorldId(3)),
        grid: arena.grid(),
    }
}

fn fresh_engine() -> (Engine<Arena>, JournalMeta) {
    let arena = Arena::new(ArenaConfig::default());
    let m = meta(&arena);
    (
        Engine::new(arena, m.grid, m.engine, ChainSigner::from_bytes(&KEY), 0),
        m,
    )
}

/// Drives `ticks` ticks of five players moving and shooting.
fn drive(p: &mut Persistent<Arena>, from_tick: u64, ticks: u64) {
    for t in from_tick..from_tick + ticks {
        for s in 1..=5u64 {
            let Some(a) = p.engine().avatar(SessionId(s)) else {
                continue;
            };
            let me = p.engine().world().player(a).unwrap().clone();
            let action = if t % 11 == s {
                ArenaAction::Fire {
                    x: me.x + 2.0,
                    y: me.y,
                }
            } else {
                ArenaAction::Move {
                    x: (me.x + 0.25).min(999.0),
                    y: me.y,
                }
            };
            let seq = t * 10 + s;
            p.handle_action(
                SessionId(s),
                Action {
                    class: EventClass::Movement,
                    seq,
                    client_time_us: seq,
                    reads: vec![],
                    payload: action.encode(),
                },
            );
        }
        let now = p.poll_timeout();
        p.handle_timeout(now).unwrap();
        while p.poll_output().is_some() {}
    }
}

fn start(path: &std::path::Path) -> Persistent<Arena> {
    let (engine, m) = fresh_engine();
    let mut p = Persistent::create(
        path,
        &m,
        engine,
        PersistConfig {
            snapshot_every: 20,
            hash_every: 1,
        },
    )
    .unwrap();
    for s in 1..=5 {
        p.handle_join(SessionId(s), &format!("p{s}"), Role::Player, None)
            .unwrap();
    }
    p
}

#[test]
fn a_world_restarts_from_snapshot_and_log_with_the_same_hash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("world.redb");
    let twin_path = dir.path().join("twin.redb");
    let mut p = start(&path);
    let mut twin = start(&twin_path);
    drive(&mut p, 0, 55); // snapshots at 20 and 40, then 15 ticks of log
    drive(&mut twin, 0, 55);
    let hash = p.engine().state_hash();
    let tick = p.engine().tick();
    p.flush().unwrap();
    drop(p);

    let mut back = Persistent::<Arena>::open(
        &path,
        "arena",
        ChainSigner::from_bytes(&KEY),
        PersistConfig::default(),
    )
    .unwrap();
    assert_eq!(back.engine().tick(), tick);
    assert_eq!(back.engine().state_hash(), hash);
    // And it goes on exactly as a world that never stopped.
    drive(&mut back, 55, 10);
    drive(&mut twin, 55, 10);
    assert_eq!(back.engine().state_hash(), twin.engine().state_hash());
}

#[test]
fn replay_checks_every_tick_and_locates_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("world.redb");
    let mut p = start(&path);
    drive(&mut p, 0, 45);
    p.flush().unwrap();
    let final_hash = p.engine().state_hash();
    let avatar = p.engine().avatar(SessionId(3)).unwrap();
    drop(p);

    let (mut journal, m) = Journal::open(&path).unwrap();
    let report = replay::<Arena>(&journal, &m).unwrap();
    assert_eq!(report.ticks, 45);
    assert_eq!(report.checked, 45);
    assert_eq!(report.divergence, None);
    assert_eq!(report.final_hash, final_hash);

    // Rewrite one logged move of player 3 (applied in tick 12) into a teleport the
    // speed rule rejects: the player no longer moves in tick 12, so the replay
    // diverges there and names the avatar at the next snapshot (tick 20).
    let (index, mut input) = journal
        .inputs(0)
        .unwrap()
        .into_iter()
        .find(|(_, i)| matches!(i, Input::Action { session, action } if *session == SessionId(3) && action.seq == 11 * 10 + 3))
        .unwrap();
    if let Input::Action { action, .. } = &mut input {
        action.payload = ArenaAction::Move { x: 0.0, y: 0.0 }.encode();
    }
    journal.overwrite_input(index, &input).unwrap();
    let report = replay::<Arena>(&journal, &m).unwrap();
    let d = report.divergence.expect("tampering must be detected");
    assert_eq!(
        d.tick, 12,
        "the action logged before tick 12 ran in tick 12"
    );
    assert_eq!(d.compared_at, Some(20));
    assert!(
        d.entities.contains(&avatar),
        "{:?} should name {avatar}",
        d.entities
    );
}

#[test]
fn opening_a_journal_as_another_world_kind_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("world.redb");
    let mut p = start(&path);
    p.flush().unwrap();
    drop(p);
    let err = Persistent::<Arena>::open(
        &path,
        "chess",
        ChainSigner::from_bytes(&KEY),
        PersistConfig::default(),
    )
    .unwrap_err();
    assert!(matches!(err, JournalError::WrongWorld { .. }), "{err}");
}

/// No damaged journal may panic: one byte flipped at positions spread over the
/// whole file, each copy opened and replayed, must give `Ok` or a typed error
/// (before the integrity check, 41 of 600 such copies panicked inside redb).
#[test]
fn a_journal_with_a_flipped_byte_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("world.redb");
    let mut p = start(&path);
    drive(&mut p, 0, 45);
    p.flush().unwrap();
    drop(p);
    let bytes = std::fs::read(&path).unwrap();
    let copy = dir.path().join("copy.redb");
    let (mut panics, mut refused, mut opened) = (0, 0, 0);
    let positions = 300;
    for i in 0..positions {
        let at = (i * 7919 + 13) % bytes.len();
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x5a;
        std::fs::write(&copy, &damaged).unwrap();
        let outcome = std::panic::catch_unwind(|| {
            let (j, meta) = Journal::open(&copy)?;
            replay::<Arena>(&j, &meta).map(|_| ())
        });
        match outcome {
            Err(_) => panics += 1,
            Ok(Err(e)) => {
                refused += 1;
                assert!(!e.to_string().is_empty());
            }
            Ok(Ok(())) => opened += 1,
        }
    }
    assert_eq!(panics, 0, "{refused} refused, {opened} opened");
    assert!(refused > 0, "some flips must be detected: {opened} opened");
}

/// A restart re-executes the inputs after the latest snapshot and compares every
/// tick's recorded hash: a journal that diverges is refused; with the recovery
/// option the world restarts at the last tick that matched, and the inputs
/// after it are dropped, so the journal replays cleanly again.
#[test]
fn a_restart_refuses_a_diverging_journal_or_recovers_at_the_last_consistent_tick() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("world.redb");
    let mut p = start(&path);
    drive(&mut p, 0, 50); // snapshots at 20 and 40; ticks 41..50 in the log
    p.flush().unwrap();
    drop(p);
    // Rewrite a move of player 3 applied in tick 45 into a teleport.
    let (mut journal, _) = Journal::open(&path).unwrap();
    let (index, mut input) = journal
        .inputs(0)
        .unwrap()
        .into_iter()
        .find(|(_, i)| matches!(i, Input::Action { session, action } if *session == SessionId(3) && action.seq == 44 * 10 + 3))
        .unwrap();
    if let Input::Action { action, .. } = &mut input {
        action.payload = ArenaAction::Move { x: 0.0, y: 0.0 }.encode();
    }
    journal.overwrite_input(index, &input).unwrap();
    drop(journal);
    let open = |recover: bool| {
        let f = if recover {
            Persistent::<Arena>::open_recovering
        } else {
            Persistent::<Arena>::open
        };
        f(
            &path,
            "arena",
            ChainSigner::from_bytes(&KEY),
            PersistConfig::default(),
        )
    };
    let err = open(false).unwrap_err();
    assert!(
        matches!(err, JournalError::Diverged { tick: 45, .. }),
        "{err}"
    );
    let back = open(true).unwrap();
    assert_eq!(back.engine().tick(), 44, "the last tick that matched");
    drop(back);
    let (journal, m) = Journal::open(&path).unwrap();
    let report = replay::<Arena>(&journal, &m).unwrap();
    assert_eq!(report.divergence, None, "the untrusted inputs are gone");
    assert_eq!(report.ticks, 44);
    drop(journal);
    // And a plain restart is accepted again.
    assert_eq!(open(false).unwrap().engine().tick(), 44);
}
