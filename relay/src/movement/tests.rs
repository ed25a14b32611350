//! Unit tests of the movement view and the cells' store.

use super::*;

fn frame(world: u64, cell: u16, tick: u64, ents: &[(u64, (f32, f32))]) -> MovementFrame {
    MovementFrame {
        world: WorldId(world),
        channel: ChannelId::Cell { x: cell, y: 0 },
        tick,
        origin_time_us: tick * 50_000,
        entries: ents
            .iter()
            .map(|(e, pos)| MoveEntry {
                entity: EntityId(*e),
                pos: *pos,
                payload: Payload::from(vec![0u8; 16]),
            })
            .collect(),
        sig: Payload::default(),
    }
}

/// One entity's state in its own unsigned frame.
fn st(e: u64, tick: u64, pos: (f32, f32)) -> EntityState {
    EntityState::from_frame(&frame(1, 0, tick, &[(e, pos)])).remove(0)
}

fn ids(d: &MovementDatagram) -> Vec<u64> {
    d.groups
        .iter()
        .flat_map(|g| g.entries.iter().map(|e| e.entity.0))
        .collect()
}

fn ticks(d: &MovementDatagram) -> Vec<u64> {
    d.groups
        .iter()
        .flat_map(|g| g.entries.iter().map(move |_| g.tick))
        .collect()
}

fn wire_len(d: &MovementDatagram) -> usize {
    skylane_proto::encode_datagram(&skylane_proto::ServerMsg::Movement(d.clone()))
        .map(|b| b.len())
        .unwrap_or(usize::MAX)
}

#[test]
fn the_nearest_go_first_and_a_datagram_fits_the_mtu() {
    let mut m = ClientMovement::new(MovementConfig {
        mtu: DATAGRAM_OVERHEAD + 3 * (GROUP_FRAMING + ENTRY_OVERHEAD + 16),
        ..MovementConfig::default()
    });
    m.handle_viewer((0.0, 0.0));
    for e in 0..10u64 {
        m.handle_update(st(e, 1, (10.0 * (10 - e) as f32, 0.0)))
            .unwrap();
    }
    let t = Instant::now();
    let d = m.poll_datagram(t).unwrap();
    assert_eq!(ids(&d), [9, 8, 7], "nearest first");
    assert!(wire_len(&d) <= DATAGRAM_OVERHEAD + 3 * (GROUP_FRAMING + ENTRY_OVERHEAD + 16));
    let d2 = m.poll_datagram(t).unwrap();
    assert_eq!(ids(&d2)[0], 6, "the next nearest, not the same again");
}

#[test]
fn a_lost_datagram_is_superseded_by_the_newest_state() {
    let mut m = ClientMovement::new(MovementConfig::default());
    let t0 = Instant::now();
    m.handle_update(st(1, 1, (1.0, 0.0))).unwrap();
    let d = m.poll_datagram(t0).unwrap();
    assert_eq!(ticks(&d), [1]);
    // Lost; meanwhile two newer states, the first never sent.
    m.handle_update(st(1, 2, (2.0, 0.0))).unwrap();
    m.handle_update(st(1, 3, (3.0, 0.0))).unwrap();
    let d = m.poll_datagram(t0).unwrap();
    assert_eq!(ticks(&d), [3], "only the newest");
    // An older update arriving late changes nothing.
    m.handle_update(st(1, 2, (2.0, 0.0))).unwrap();
    assert_eq!(m.stats().stale, 1);
    m.handle_ack(d.seq);
    assert!(m.poll_datagram(t0).is_none(), "the client has the newest");
    // Unacknowledged past resend_after: sent again at the newest state.
    m.handle_update(st(1, 4, (4.0, 0.0))).unwrap();
    let d = m.poll_datagram(t0).unwrap();
    assert!(m.poll_datagram(t0).is_none(), "in flight: not twice");
    m.handle_timeout(t0 + Duration::from_millis(300));
    assert_eq!(m.stats().lost, 2, "the first datagram and this one");
    let again = m.poll_datagram(t0 + Duration::from_millis(300)).unwrap();
    assert_eq!((ticks(&again), again.seq > d.seq), (vec![4], true));
}

#[test]
fn the_budget_limits_bytes_per_second() {
    let mut m = ClientMovement::new(MovementConfig {
        bytes_per_sec: 10_000,
        burst_bytes: 2_000,
        ..MovementConfig::default()
    });
    for e in 0..500u64 {
        m.handle_update(st(e, 1, (e as f32, 0.0))).unwrap();
    }
    let t0 = Instant::now();
    let mut sent = 0;
    let mut now = t0;
    for _ in 0..100 {
        while let Some(d) = m.poll_datagram(now) {
            sent += wire_len(&d);
            m.handle_ack(d.seq);
        }
        now += Duration::from_millis(10);
    }
    // One second: the burst plus 10,000 bytes, at most.
    assert!(sent <= 2_000 + 10_000 + 1_200, "{sent}");
    // The budget counts each entry's framing at its largest: what goes
    // out is somewhat less.
    assert!(sent >= 5_000, "{sent}");
}

#[test]
fn bounds_hold_and_oversized_states_are_refused() {
    let mut m = ClientMovement::new(MovementConfig::default());
    let mut big = st(1, 1, (0.0, 0.0));
    big.entry.payload = Payload::from(vec![0u8; MAX_MOVE_STATE + 1]);
    assert_eq!(
        m.handle_update(big),
        Err(MovementError::TooLarge(MAX_MOVE_STATE + 1))
    );
    for e in 0..(MAX_ENTITIES as u64 + 10) {
        m.handle_update(st(e, 1, (e as f32, 0.0))).unwrap();
    }
    assert_eq!(m.len(), MAX_ENTITIES);
    assert_eq!(m.stats().dropped, 10);
    assert!(
        !m.latest.contains_key(&EntityId(MAX_ENTITIES as u64 + 9)),
        "the farthest went"
    );
    let t = Instant::now();
    for _ in 0..(MAX_IN_FLIGHT + 5) {
        m.poll_datagram(t);
    }
    assert!(m.in_flight.len() <= MAX_IN_FLIGHT);
    m.handle_remove(EntityId(0));
    assert_eq!(m.len(), MAX_ENTITIES - 1);
}

#[test]
fn a_datagram_carries_what_the_client_needs_to_verify_a_signed_subset() {
    let key = skylane_proto::ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
    let mut f = frame(
        7,
        2,
        5,
        &[(1, (1.0, 0.0)), (2, (50.0, 0.0)), (3, (2.0, 0.0))],
    );
    skylane_proto::movement::sign_frame(&key, &mut f);
    // Room for the group and two entries only: the farthest stays out, its
    // hash goes along.
    let mut m = ClientMovement::new(MovementConfig {
        mtu: DATAGRAM_OVERHEAD + GROUP_OVERHEAD + 2 * (ENTRY_OVERHEAD + 16) + OTHER_HASH,
        ..MovementConfig::default()
    });
    for s in EntityState::from_frame(&f) {
        m.handle_update(s).unwrap();
    }
    let d = m.poll_datagram(Instant::now()).unwrap();
    assert_eq!(ids(&d), [1, 3]);
    assert_eq!(d.groups[0].others.len(), 1);
    assert!(wire_len(&d) <= m.cfg.mtu);
    let vk = key.verifying_key();
    assert_eq!(
        skylane_proto::movement::verify_group(&vk, d.world, &d.groups[0]),
        Ok(())
    );
}

#[test]
fn on_a_lossy_path_the_newest_datagram_goes_twice() {
    let mut m = ClientMovement::new(MovementConfig::default());
    let t0 = Instant::now();
    m.handle_update(st(1, 1, (1.0, 0.0))).unwrap();
    let d = m.poll_datagram(t0).unwrap();
    // A clean path: never repeated.
    assert_eq!(m.poll_repeat(t0 + Duration::from_millis(20)), None);
    m.handle_path_loss(0.05);
    assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_millis(15)));
    assert_eq!(
        m.poll_repeat(t0 + Duration::from_millis(10)),
        None,
        "not yet"
    );
    assert_eq!(m.poll_repeat(t0 + Duration::from_millis(15)), Some(d.seq));
    assert_eq!(m.poll_repeat(t0 + Duration::from_millis(40)), None, "once");
    // A very lossy path: twice.
    m.handle_path_loss(0.2);
    assert_eq!(
        m.poll_repeat(t0 + Duration::from_millis(29)),
        None,
        "not yet"
    );
    assert_eq!(m.poll_repeat(t0 + Duration::from_millis(30)), Some(d.seq));
    m.handle_path_loss(0.05);
    // A newer datagram replaces it; an acknowledged one is not repeated.
    m.handle_update(st(1, 2, (2.0, 0.0))).unwrap();
    let d2 = m.poll_datagram(t0 + Duration::from_millis(50)).unwrap();
    m.handle_ack(d2.seq);
    assert_eq!(m.poll_repeat(t0 + Duration::from_millis(80)), None);
    assert_eq!(m.stats().repeated, 2);
}

#[test]
fn cells_hold_each_entity_once_at_its_newest_state() {
    let mut cells = CellStates::default();
    cells.handle_frame(&frame(1, 0, 1, &[(1, (0.0, 0.0)), (2, (1.0, 0.0))]));
    // Entity 1 walks into cell 1; an older frame of cell 0 arrives late.
    cells.handle_frame(&frame(1, 1, 2, &[(1, (30.0, 0.0))]));
    cells.handle_frame(&frame(1, 0, 1, &[(1, (0.0, 0.0))]));
    let c0: Vec<u64> = cells
        .cell(WorldId(1), ChannelId::Cell { x: 0, y: 0 })
        .iter()
        .map(|s| s.entity().0)
        .collect();
    assert_eq!(c0, [2]);
    assert_eq!(
        cells.cell(WorldId(1), ChannelId::Cell { x: 1, y: 0 })[0].tick(),
        2
    );
    assert_eq!(cells.len(), 2);
    cells.forget_world(WorldId(1));
    assert!(cells.is_empty());
}
