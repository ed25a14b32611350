//! Movement as state at the origin: a tick's moves leave as signed movement
//! frames per cell (the newest state per entity, at most `MAX_FRAME_ENTRIES`
//! per frame), never as chained events; an oversized state is refused with a
//! typed error and counted.

use skylane_origin::*;
use skylane_proto::movement::{verify_frame, MAX_FRAME_ENTRIES};
use skylane_proto::{
    Action, ChainSigner, ChannelId, EntityId, EventClass, MovementFrame, Role, SessionId, WorldId,
    MAX_MOVE_STATE,
};

const KEY: [u8; 32] = [42; 32];

fn engine() -> Engine<Arena> {
    let arena = Arena::new(ArenaConfig::default());
    let grid = arena.grid();
    Engine::new(
        arena,
        grid,
        EngineConfig::new(WorldId(1)),
        ChainSigner::from_bytes(&KEY),
        0,
    )
}

fn step(e: &mut Engine<Arena>, s: u64, seq: u64, x: f32, y: f32) {
    e.handle_action(
        SessionId(s),
        Action {
            class: EventClass::Movement,
            seq,
            client_time_us: seq * 1000,
            reads: vec![],
            payload: ArenaAction::Move { x, y }.encode(),
        },
    );
}

/// Runs the tick; the movement frames and whether any chained batch held a move.
fn tick(e: &mut Engine<Arena>) -> (Vec<MovementFrame>, bool) {
    let now = e.poll_timeout();
    e.handle_timeout(now);
    let mut frames = Vec::new();
    let mut chained_moves = false;
    while let Some(o) = e.poll_output() {
        match o {
            Output::Movement(f) => frames.push((*f).clone()),
            Output::Batch(b) => {
                chained_moves |= b.events.iter().any(|ev| {
                    matches!(
                        ArenaEvent::decode(&ev.payload),
                        Some(ArenaEvent::Moved { .. })
                    )
                })
            }
            _ => {}
        }
    }
    (frames, chained_moves)
}

#[test]
fn moves_leave_as_signed_frames_per_cell_newest_state_per_entity() {
    let mut e = engine();
    let n = MAX_FRAME_ENTRIES as u64 + 8;
    for s in 1..=n {
        let a = e
            .handle_join(SessionId(s), &format!("p{s}"), Role::Player, None)
            .unwrap()
            .unwrap();
        e.world_mut().place(a, 500.0, 500.0);
    }
    tick(&mut e);
    // Everyone steps; player 1 steps twice in the tick (the second wins).
    for s in 1..=n {
        step(&mut e, s, 1, 500.1, 500.0);
    }
    step(&mut e, 1, 2, 500.2, 500.0);
    let (frames, chained) = tick(&mut e);
    assert!(!chained, "no move is a chained event");
    assert_eq!(frames.len(), 2, "{} movers in one cell: two frames", n);
    let key = ChainSigner::from_bytes(&KEY).verifying_key();
    let mut entities = Vec::new();
    for f in &frames {
        assert!(f.entries.len() <= MAX_FRAME_ENTRIES);
        assert_eq!(f.channel, frames[0].channel);
        assert!(matches!(f.channel, ChannelId::Cell { .. }));
        verify_frame(&key, f).unwrap();
        entities.extend(f.entries.iter().map(|m| m.entity));
    }
    let mut sorted = entities.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, entities, "sorted by entity, each once");
    assert_eq!(entities.len() as u64, n);
    let first = frames[0]
        .entries
        .iter()
        .find(|m| m.entity == EntityId(entities[0].0))
        .unwrap();
    let me = e.avatar(SessionId(1)).unwrap();
    let mine = frames
        .iter()
        .flat_map(|f| f.entries.iter())
        .find(|m| m.entity == me)
        .unwrap();
    assert_eq!(mine.pos, (500.2, 500.0), "the newest state of the tick");
    assert!(first.payload.len() <= MAX_MOVE_STATE);
    assert_eq!(e.stats().moves, n);
}

#[test]
fn an_oversized_state_is_refused_with_a_typed_error() {
    let mut emit = Emit::default();
    let err = emit
        .moved(
            ChannelId::Cell { x: 0, y: 0 },
            EntityId(7),
            (1.0, 1.0),
            vec![0u8; MAX_MOVE_STATE + 1],
        )
        .unwrap_err();
    assert_eq!(
        err,
        MoveTooLarge {
            entity: EntityId(7),
            size: MAX_MOVE_STATE + 1
        }
    );
    assert!(emit.events().is_empty());
    emit.moved(
        ChannelId::Cell { x: 0, y: 0 },
        EntityId(7),
        (1.0, 1.0),
        vec![0u8; MAX_MOVE_STATE],
    )
    .unwrap();
    assert_eq!(emit.events().len(), 1);
}
