//! What analytics cost: a hot path's `emit` (the spool's push), and the rows
//! one core turns into zstd Parquet (the writer thread's work per row).

#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use skylane_analytics::schema::ActionSampled;
use skylane_analytics::{Analytics, AnalyticsMetrics, Event, ParquetSink, Rotation, Sink};

fn row(n: u64) -> Event {
    Event::Action(ActionSampled {
        at_ms: 1_796_601_600_000 + n,
        node: "origin-1".into(),
        world: 1 + n % 16,
        session: n % 5_000,
        class: ["critical", "state", "movement", "chat"][(n % 4) as usize].into(),
        outcome: if n % 50 == 0 { "conflict" } else { "applied" }.into(),
        latency_us: 30_000 + (n * 7_919) % 40_000,
        sample_every: 10,
    })
}

fn emit(c: &mut Criterion) {
    // The spool is large and the writer drains it: the cost a game loop pays.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = skylane_analytics::AnalyticsConfig {
        dir: Some(tmp.path().to_owned()),
        spool_rows: 1 << 20,
        ..Default::default()
    };
    let a = Analytics::start(&cfg, "bench", AnalyticsMetrics::default())
        .unwrap()
        .unwrap();
    let e = a.emitter();
    let mut g = c.benchmark_group("analytics");
    g.throughput(Throughput::Elements(1));
    let mut n = 0;
    g.bench_function("emit_one_row", |b| {
        b.iter(|| {
            n += 1;
            e.emit(black_box(row(n)));
        })
    });
    g.finish();
    drop(a);
}

fn write(c: &mut Criterion) {
    const ROWS: u64 = 20_000;
    let rows: Vec<Event> = (0..ROWS).map(row).collect();
    let mut g = c.benchmark_group("analytics");
    g.throughput(Throughput::Elements(ROWS));
    g.sample_size(10);
    g.bench_function("parquet_write_20k_rows", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |tmp| {
                let mut s = ParquetSink::new(
                    tmp.path(),
                    "bench",
                    Rotation {
                        max_bytes: 64 << 20,
                        max_age_ms: 300_000,
                    },
                    AnalyticsMetrics::default(),
                )
                .unwrap();
                for chunk in rows.chunks(1_000) {
                    s.write(0, chunk).unwrap();
                }
                s.close().unwrap();
                tmp
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, emit, write);
criterion_main!(benches);
