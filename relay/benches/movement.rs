//! The movement view's cost per delivered update (docs/benchmarks.md): a
//! dense cell, 50 visible movers at 20 Hz: each tick every mover's new state
//! goes in, then datagrams (1,200-byte MTU, nearest first) come out and are
//! acknowledged. Reports the time per tick; divide by 50 for an update.
//!
//! `cargo bench -p skylane-relay --bench movement`

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use skylane_proto::EntityId;
use skylane_relay::{ClientMovement, EntityState, MovementConfig};

fn dense_cell(c: &mut Criterion) {
    let body = Bytes::from_static(&[7u8; 20]);
    let mut m = ClientMovement::new(MovementConfig {
        bytes_per_sec: u64::MAX / 4,
        burst_bytes: u64::MAX / 4,
        ..MovementConfig::default()
    });
    m.handle_viewer((0.0, 0.0));
    let t0 = Instant::now();
    let mut tick = 0u64;
    c.bench_function("movement: 50 movers, one 20 Hz tick in and out", |b| {
        b.iter(|| {
            tick += 1;
            for e in 0..50u64 {
                let a = (e as f32) * 0.1 + tick as f32 * 0.01;
                m.handle_update(EntityState {
                    entity: EntityId(e),
                    tick,
                    origin_time_us: tick * 50_000,
                    pos: (a.cos() * e as f32, a.sin() * e as f32),
                    body: body.clone(),
                })
                .expect("fits");
            }
            let now = t0 + Duration::from_millis(50 * tick);
            let mut entries = 0;
            while let Some(d) = m.poll_datagram(now) {
                entries += d.entries.len();
                m.handle_ack(d.seq);
            }
            assert_eq!(entries, 50);
        })
    });
}

criterion_group!(benches, dense_cell);
criterion_main!(benches);
