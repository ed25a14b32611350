//! Zone cores: a whole handoff (out, in + ack, commit) through two handoff
//! cores, and one tick of border mirrors for 10,000 entities of which the
//! ones near a border are mirrored.
//!
//! Run: `cargo bench -p skylane-origin --bench zones`.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use skylane_origin::*;
use skylane_proto::zones::{EntityTransfer, ZoneIdx, ZoneLayout};
use skylane_proto::{EntityId, Payload, WorldId};

fn transfer(e: u64) -> EntityTransfer {
    EntityTransfer {
        entity: EntityId(e),
        player: Some(format!("p{e}")),
        pos: (500.0, 500.0),
        state: Payload::from(vec![7u8; 200]),
        version: 1,
        session: Payload::from(vec![1u8; 64]),
    }
}

/// Acts on every output of `from`, delivering its messages to `to`.
fn relay(from: &mut Handoffs, to: &mut Handoffs) {
    while let Some(o) = from.poll_output() {
        if let ZoneOutput::Send { msg, .. } = o {
            to.handle_msg(&msg, |_| Ok(())).unwrap();
        }
    }
}

fn handoff(c: &mut Criterion) {
    let mut g = c.benchmark_group("zones");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("handoff_1000_entities_out_in_commit", |b| {
        b.iter_batched(
            || {
                (
                    Handoffs::new(WorldId(1), ZoneIdx(0), HandoffConfig::default()),
                    Handoffs::new(WorldId(1), ZoneIdx(1), HandoffConfig::default()),
                )
            },
            |(mut a, mut z)| {
                for e in 0..1000 {
                    a.begin(0, transfer(e), ZoneIdx(1)).unwrap();
                }
                relay(&mut a, &mut z);
                relay(&mut z, &mut a);
                relay(&mut a, &mut z);
                black_box((a.stats(), z.stats()))
            },
            BatchSize::SmallInput,
        )
    });
    let layout = ZoneLayout::even(100, 100, 10.0, 2, 2).unwrap();
    // 10,000 entities spread over zone 0 (a 500 x 500 quadrant); those within
    // 20 units of its borders (about 16%) are mirrored.
    let ents: Vec<(EntityId, (f32, f32), Payload)> = (0..10_000u64)
        .map(|i| {
            let x = (i % 100) as f32 * 5.0 + 2.5;
            let y = (i / 100) as f32 * 5.0 + 2.5;
            (EntityId(i), (x, y), Payload::from(vec![0u8; 32]))
        })
        .collect();
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("mirror_tick_10000_entities_unchanged", |b| {
        let mut out = MirrorOut::new(WorldId(1), ZoneIdx(0), 20.0, 0);
        out.handle_tick(0, &layout, ents.iter().cloned());
        let mut t = 1;
        b.iter(|| {
            t += 1;
            black_box(out.handle_tick(t, &layout, ents.iter().cloned()))
        })
    });
    g.finish();
}

criterion_group!(benches, handoff);
criterion_main!(benches);
