//! The movement view under random updates, viewer moves, datagram loss, lost
//! acknowledgements and time: a datagram never exceeds the MTU, lists its
//! entities nearest first, never carries a state older than one the client
//! acknowledged nor newer than the newest; and once the loss stops,
//! the client converges to every entity's newest state.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use skylane_proto::EntityId;
use skylane_relay::{ClientMovement, EntityState, MovementConfig};

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
                    m.handle_update(EntityState {
                        entity: EntityId(e),
                        tick,
                        origin_time_us: tick,
                        pos: (x, y),
                        body: Bytes::from(vec![0u8; len]),
                    }).unwrap();
                }
                Op::Viewer(x, y) => {
                    viewer = (x, y);
                    m.handle_viewer(viewer);
                }
                Op::Poll { delivered, acked } => {
                    m.handle_timeout(now);
                    if let Some(d) = m.poll_datagram(now) {
                        prop_assert!(d.wire_len() <= cfg.mtu);
                        for w in d.entries.windows(2) {
                            prop_assert!(d2(w[0].pos, viewer) <= d2(w[1].pos, viewer));
                        }
                        for s in &d.entries {
                            let a = relay_acked.get(&s.entity.0).copied().unwrap_or(0);
                            prop_assert!(s.tick > a, "sent tick {} of {:?} after ack of {}", s.tick, s.entity, a);
                            prop_assert!(s.tick <= latest[&s.entity.0]);
                        }
                        if delivered {
                            for s in &d.entries {
                                let c = client.entry(s.entity.0).or_insert(0);
                                *c = (*c).max(s.tick);
                            }
                            if acked {
                                m.handle_ack(d.seq);
                                for s in &d.entries {
                                    let a = relay_acked.entry(s.entity.0).or_insert(0);
                                    *a = (*a).max(s.tick);
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
                for s in &d.entries {
                    let c = client.entry(s.entity.0).or_insert(0);
                    *c = (*c).max(s.tick);
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
