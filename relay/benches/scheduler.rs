//! Scheduler throughput: enqueue + send of a realistic mix for 100 sessions.
//!
//! Run: `cargo bench -p skylane-relay --bench scheduler`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use skylane_proto::{EntityId, EventClass, SessionId};
use skylane_relay::{Outgoing, Scheduler, SchedulerConfig};

fn mix(c: &mut Criterion) {
    let payload = Bytes::from(vec![0u8; 100]);
    // Per tick: 100 sessions × (4 movement updates of 2 entities, 1 state, 0.1 critical,
    // 0.05 chat): 1,000 messages in, ~700 out after coalescing.
    let mut msgs = Vec::new();
    for s in 0..100u64 {
        for k in 0..4u64 {
            msgs.push(Outgoing {
                class: EventClass::Movement,
                session: SessionId(s),
                entity: Some(EntityId(s * 2 + k % 2)),
                droppable: true,
                bytes: payload.clone(),
            });
        }
        msgs.push(Outgoing {
            class: EventClass::State,
            session: SessionId(s),
            entity: None,
            droppable: false,
            bytes: payload.clone(),
        });
        if s % 10 == 0 {
            msgs.push(Outgoing {
                class: EventClass::Critical,
                session: SessionId(s),
                entity: None,
                droppable: false,
                bytes: payload.clone(),
            });
        }
        if s % 20 == 0 {
            msgs.push(Outgoing {
                class: EventClass::Chat,
                session: SessionId(s),
                entity: None,
                droppable: true,
                bytes: payload.clone(),
            });
        }
    }
    let mut g = c.benchmark_group("scheduler");
    g.throughput(Throughput::Elements(msgs.len() as u64));
    let mut s = Scheduler::new(SchedulerConfig::default());
    g.bench_function("tick_mix_100_sessions", |b| {
        b.iter(|| {
            let now = Instant::now();
            for m in &msgs {
                s.handle_enqueue(now, m.clone()).unwrap();
            }
            while let Some(m) = s.poll_next(now) {
                black_box(m);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, mix);
criterion_main!(benches);
