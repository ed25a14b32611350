//! The movement view under random updates, viewer moves, datagram loss, lost
//! acknowledgements and time: a datagram never exceeds the MTU, lists its
//! entities nearest first, never carries a state older than one the client
//! acknowledged nor newer than the newest; and once the loss stops,
//! the client converges to every entity's newest state.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use skylane_proto::{
    ChannelId, EntityId, MoveEntry, MovementDatagram, MovementFrame, Payload, WorldId,
};
use skylane_relay::{ClientMovement, EntityState, MovementConfig};

/// One entity's state in its own unsigned origin frame.
fn state(e: u64, tick: u64, pos: (f32, f32), len: usize) -> EntityState {
    EntityState::from_frame(&MovementFrame {
        world: WorldId(1),
        channel: ChannelId::Cell { x: 0, y: 0 },
        tick,
        origin_time_us: tick,
        entries: vec![MoveEntry {
            entity: EntityId(e),
            pos,
            payload: Payload::from(vec![0u8; len]),
        }],
        sig: Payload::default(),
    })
    .remove(0)
}

/// What a datagram carries, in order: entity, tick, position.
fn carried(d: &MovementDatagram) -> Vec<(u64, u64, (f32, f32))> {
    d.groups
        .iter()
        .flat_map(|g| g.entries.iter().map(move |e| (e.entity.0, g.tick, e.pos)))
        .collect()
}

fn wire_len(d: &MovementDatagram) -> usize {
    skylane_proto::encode_datagram(&skylane_proto::ServerMsg::Movement(d.clone()))
        .map(|b| b.len())
        .unwrap_or(usize::MAX)
}

#[derive(Debug, Clone)]
enum Op {
    Update {
        e: u64,
        dt: u64,
        x: f32,
        y: f32,
        len: usize,
    },
    Viewer(f32, f32),
    /// Poll one datagram; deliver it (and its ack) or lose either.
    Poll {
        delivered: bool,
        acked: bool,
    },
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u64..30, 1u64..4, -100f32..100.0, -100f32..100.0, 0usize..120)
            .prop_map(|(e, dt, x, y, len)| Op::Update { e, dt, x, y, len }),
        1 => (-100f32..100.0, -100f32..100.0).prop_map(|(x, y)| Op::Viewer(x, y)),
        5 => (any::<bool>(), any::<bool>()).prop_map(|(delivered, acked)| Op::Poll { delivered, acked }),
        2 => (1u64..400).prop_map(Op::Wait),
    ]
}

fn d2(a: (f32, f32), b: (f32, f32)) -> f32 {
    (a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn datagrams_are_bounded_ordered_fresh_and_converge(ops in prop::collection::vec(op(), 1..300)) {
        let cfg = MovementConfig { mtu: 600, ..MovementConfig::default() };
        let mut m = ClientMovement::new(cfg);
        let t0 = Instant::now();
        let mut now = t0;
        let mut viewer = (0.0f32, 0.0f32);
        let mut latest: HashMap<u64, u64> = HashMap::new();
        let mut relay_acked: HashMap<u64, u64> = HashMap::new();
        let mut client: HashMap<u64, u64> = HashMap::new();
        for op in ops {
            match op {
                Op::Update { e, dt, x, y, len } => {
                    let tick = latest.get(&e).copied().unwrap_or(0) + dt;
                    latest.insert(e, tick);
                    m.handle_update(state(e, tick, (x, y), len)).unwrap();
                }
                Op::Viewer(x, y) => {
                    viewer = (x, y);
                    m.handle_viewer(viewer);
                }
                Op::Poll { delivered, acked } => {
                    m.handle_timeout(now);
                    if let Some(d) = m.poll_datagram(now) {
                        prop_assert!(wire_len(&d) <= cfg.mtu);
                        let sent = carried(&d);
                        for w in sent.windows(2) {
                            prop_assert!(d2(w[0].2, viewer) <= d2(w[1].2, viewer));
                        }
                        for (e, tick, _) in &sent {
                            let a = relay_acked.get(e).copied().unwrap_or(0);
                            prop_assert!(*tick > a, "sent tick {} of {} after ack of {}", tick, e, a);
                            prop_assert!(*tick <= latest[e]);
                        }
                        if delivered {
                            for (e, tick, _) in &sent {
                                let c = client.entry(*e).or_insert(0);
                                *c = (*c).max(*tick);
                            }
                            if acked {
                                m.handle_ack(d.seq);
                                for (e, tick, _) in &sent {
                                    let a = relay_acked.entry(*e).or_insert(0);
                                    *a = (*a).max(*tick);
                                }
                            }
                        }
                    }
                }
                Op::Wait(ms) => now += Duration::from_millis(ms),
            }
        }
        // The loss stops: the client converges to every newest state.
        for _ in 0..2_000 {
            now += Duration::from_millis(50);
            m.handle_timeout(now);
            while let Some(d) = m.poll_datagram(now) {
                for (e, tick, _) in carried(&d) {
                    let c = client.entry(e).or_insert(0);
                    *c = (*c).max(tick);
                }
                m.handle_ack(d.seq);
            }
            if latest.iter().all(|(e, t)| client.get(e) == Some(t)) {
                break;
            }
        }
        for (e, t) in &latest {
            prop_assert_eq!(client.get(e), Some(t), "entity {} not converged", e);
        }
    }
}
