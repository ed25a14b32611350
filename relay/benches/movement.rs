//! The movement path's relay cost (docs/benchmarks.md): a dense cell, 50
//! visible movers at 20 Hz.
//!
//! * per client and tick: every state goes into the client's view, then
//!   datagrams (1,200-byte MTU, nearest first, with the frames' signatures)
//!   come out, are encoded and are acknowledged; divide by 50 for an update;
//! * per cell and tick, once for all its clients: the origin's two signed
//!   frames (at most `MAX_FRAME_ENTRIES` entries each) taken apart, each
//!   entry hashed for the clients' proofs.
//!
//! `cargo bench -p skylane-relay --bench movement`

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use skylane_proto::ed25519_dalek::SigningKey;
use skylane_proto::movement::{sign_frame, MAX_FRAME_ENTRIES};
use skylane_proto::{
    encode_datagram, ChannelId, EntityId, MoveEntry, MovementFrame, Payload, ServerMsg, WorldId,
};
use skylane_relay::{ClientMovement, EntityState, MovementConfig};

fn frames(key: &SigningKey, tick: u64) -> Vec<MovementFrame> {
    let entries: Vec<MoveEntry> = (0..50u64)
        .map(|e| {
            let a = (e as f32) * 0.1 + tick as f32 * 0.01;
            MoveEntry {
                entity: EntityId(e),
                pos: (a.cos() * e as f32, a.sin() * e as f32),
                payload: Payload::from(vec![7u8; 20]),
            }
        })
        .collect();
    entries
        .chunks(MAX_FRAME_ENTRIES)
        .map(|c| {
            let mut f = MovementFrame {
                world: WorldId(1),
                channel: ChannelId::Cell { x: 0, y: 0 },
                tick,
                origin_time_us: tick * 50_000,
                entries: c.to_vec(),
                sig: Payload::default(),
            };
            sign_frame(key, &mut f);
            f
        })
        .collect()
}

fn dense_cell(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[9u8; 32]);
    let mut m = ClientMovement::new(MovementConfig {
        bytes_per_sec: u64::MAX / 4,
        burst_bytes: u64::MAX / 4,
        ..MovementConfig::default()
    });
    m.handle_viewer((0.0, 0.0));
    let t0 = Instant::now();
    // The origin's signing is not the relay's cost: frames are made ahead,
    // and taken apart once per cell (measured below).
    let frames_by_tick: Vec<Vec<MovementFrame>> = (1..=200).map(|t| frames(&key, t)).collect();
    let ticks: Vec<Vec<EntityState>> = frames_by_tick
        .iter()
        .map(|fs| fs.iter().flat_map(EntityState::from_frame).collect())
        .collect();
    let mut tick = 0usize;
    let mut base = 0u64;
    c.bench_function(
        "movement: per client, 50 movers, one tick in and out",
        |b| {
            b.iter(|| {
                if tick == ticks.len() {
                    // Start over with a fresh view (ticks must grow).
                    tick = 0;
                    base += 1;
                    m = ClientMovement::new(MovementConfig {
                        bytes_per_sec: u64::MAX / 4,
                        burst_bytes: u64::MAX / 4,
                        ..MovementConfig::default()
                    });
                }
                for s in &ticks[tick] {
                    m.handle_update(s.clone()).expect("fits");
                }
                tick += 1;
                let now = t0 + Duration::from_millis(50 * (tick as u64 + base * 1000));
                let mut entries = 0;
                while let Some(d) = m.poll_datagram(now) {
                    entries += d.groups.iter().map(|g| g.entries.len()).sum::<usize>();
                    let seq = d.seq;
                    let bytes = encode_datagram(&ServerMsg::Movement(d)).expect("fits");
                    assert!(bytes.len() <= 1200);
                    m.handle_ack(seq);
                }
                assert_eq!(entries, 50);
            })
        },
    );
}

fn per_cell(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[9u8; 32]);
    let fs = frames(&key, 1);
    c.bench_function(
        "movement: per cell, 50 movers, one tick's frames taken apart",
        |b| {
            b.iter(|| {
                let n: usize = fs.iter().map(|f| EntityState::from_frame(f).len()).sum();
                assert_eq!(n, 50);
            })
        },
    );
}

criterion_group!(benches, dense_cell, per_cell);
criterion_main!(benches);
