//! Engine benchmarks: moves per second at 10,000 players, conflict and validation
//! latency (with p99), interest-management updates.
//!
//! Run: `cargo bench -p skylane-origin --bench engine`. Besides criterion's medians,
//! each latency case prints p50/p99 over 20,000 individually timed runs.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use hdrhistogram::Histogram;
use skylane_origin::*;
use skylane_proto::{
    Action, ChainSigner, EntityId, EntityVersion, EventClass, Role, SessionId, WorldId,
};

fn engine(players: u64, size: f32) -> Engine<Arena> {
    engine_cells(players, size, 100.0)
}

fn engine_cells(players: u64, size: f32, cell: f32) -> Engine<Arena> {
    let arena = Arena::new(ArenaConfig {
        width: size,
        height: size,
        cell,
        ..ArenaConfig::default()
    });
    let grid = arena.grid();
    let mut cfg = EngineConfig::new(WorldId(1));
    cfg.keyframe_every = 0;
    let mut e = Engine::new(arena, grid, cfg, ChainSigner::from_bytes(&[3; 32]), 0);
    for s in 1..=players {
        e.handle_join(SessionId(s), &format!("p{s}"), Role::Player, None)
            .unwrap();
    }
    let now = e.poll_timeout();
    e.handle_timeout(now);
    while e.poll_output().is_some() {}
    e
}

fn action(seq: u64, a: &ArenaAction, reads: Vec<EntityVersion>) -> Action {
    Action {
        class: EventClass::Movement,
        seq,
        client_time_us: seq,
        reads,
        payload: a.encode(),
    }
}

fn tick(e: &mut Engine<Arena>) {
    let now = e.poll_timeout();
    e.handle_timeout(now);
    while let Some(o) = e.poll_output() {
        black_box(o);
    }
}

fn percentiles(label: &str, runs: usize, mut f: impl FnMut()) {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    for _ in 0..runs {
        let t = Instant::now();
        f();
        h.record(t.elapsed().as_nanos().max(1) as u64).unwrap();
    }
    eprintln!(
        "{label}: p50 {:.2} µs, p99 {:.2} µs, max {:.2} µs over {runs} runs",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
}

fn moves_10k(c: &mut Criterion) {
    // Worst case for per-channel costs: 100-unit cells, ~6,300 channels with events
    // every tick. Then 250-unit cells (1,600 cells), a usual density for 10,000
    // players on this map.
    moves_10k_cells(c, 100.0, "moves_per_tick_10k_players");
    moves_10k_cells(c, 250.0, "moves_per_tick_10k_players_250_cells");
}

fn moves_10k_cells(c: &mut Criterion, cell: f32, name: &str) {
    let n = 10_000u64;
    let mut e = engine_cells(n, 10_000.0, cell);
    // Each player alternates between its spawn point and 0.2 units east of it.
    let starts: Vec<(f32, f32)> = (1..=n)
        .map(|s| {
            let p = e.world().player(e.avatar(SessionId(s)).unwrap()).unwrap();
            (p.x.min(9_999.0), p.y)
        })
        .collect();
    let mut seq = 0u64;
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(n));
    g.sample_size(20);
    g.bench_function(name, |b| {
        b.iter_batched(
            || {
                seq += 1;
                let dx = if seq % 2 == 1 { 0.2 } else { 0.0 };
                (1..=n)
                    .map(|s| {
                        let (x, y) = starts[s as usize - 1];
                        (
                            SessionId(s),
                            action(seq, &ArenaAction::Move { x: x + dx, y }, vec![]),
                        )
                    })
                    .collect::<Vec<_>>()
            },
            |actions| {
                for (s, a) in actions {
                    e.handle_action(s, a);
                }
                tick(&mut e);
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
    assert_eq!(
        e.stats().rejected,
        0,
        "every benchmarked move must be legal: {:?}",
        e.stats()
    );
}

fn conflict_and_validation(c: &mut Criterion) {
    // Conflict: a pickup whose read of the item is stale; nothing is applied.
    let mut e = engine(2, 1000.0);
    let (item, stale) = {
        let (id, it) = e.world().items().next().unwrap();
        (
            *id,
            EntityVersion {
                entity: *id,
                version: it.version - 1,
            },
        )
    };
    let mut seq = 0;
    let mut conflict_once = || {
        seq += 1;
        e.handle_action(
            SessionId(1),
            action(seq, &ArenaAction::PickUp { item }, vec![stale]),
        );
        tick(&mut e);
    };
    percentiles(
        "conflict (detect + resolve, one action per tick)",
        20_000,
        &mut conflict_once,
    );
    c.bench_function("engine/conflict_one_action_tick", |b| {
        b.iter(&mut conflict_once)
    });

    // Validation: a shot refused by the cooldown rule after ownership, speed and
    // cooldown checks, plus the anomaly detector's per-action accounting.
    let mut e = engine(2, 1000.0);
    let me = e.avatar(SessionId(1)).unwrap();
    let p = e.world().player(me).unwrap().clone();
    e.handle_action(
        SessionId(1),
        action(
            1,
            &ArenaAction::Fire {
                x: p.x + 1.0,
                y: p.y,
            },
            vec![],
        ),
    );
    tick(&mut e);
    let mut seq = 1;
    let mut validate_once = || {
        seq += 1;
        e.handle_action(
            SessionId(1),
            action(
                seq,
                &ArenaAction::Fire {
                    x: p.x + 1.0,
                    y: p.y,
                },
                vec![],
            ),
        );
        tick(&mut e);
    };
    percentiles(
        "validation (rejected by a rule, one action per tick)",
        20_000,
        &mut validate_once,
    );
    c.bench_function("engine/validate_reject_one_action_tick", |b| {
        b.iter(&mut validate_once)
    });
}

fn interest(c: &mut Criterion) {
    let grid = Grid {
        width: 10_000.0,
        height: 10_000.0,
        cell: 100.0,
        radius: 1,
        margin: 10.0,
        clip: None,
    };
    let mut i = Interest::new(grid);
    for n in 0..10_000u64 {
        i.handle_move(
            EntityId(n),
            (n % 100) as f32 * 100.0 + 50.0,
            (n / 100) as f32 * 100.0 + 50.0,
        );
    }
    let mut n = 0u64;
    let mut step = 0u64;
    let mut g = c.benchmark_group("interest");
    // Most moves stay inside the centre cell (no change): 0.3 units per tick.
    g.bench_function("update_small_move_10k", |b| {
        b.iter(|| {
            n = (n + 1) % 10_000;
            step += 1;
            let x = (n % 100) as f32 * 100.0 + 50.0 + ((step / 10_000) % 3) as f32 * 0.3;
            black_box(i.handle_move(EntityId(n), x, (n / 100) as f32 * 100.0 + 50.0))
        })
    });
    // Every move crosses a border past the margin: a 3-cell change.
    g.bench_function("update_border_cross_10k", |b| {
        b.iter(|| {
            n = (n + 1) % 10_000;
            step += 1;
            // Each entity is visited once per 10,000 steps; alternate per visit.
            let x = (n % 100) as f32 * 100.0
                + if (step / 10_000) % 2 == 0 {
                    50.0
                } else {
                    170.0
                };
            black_box(i.handle_move(EntityId(n), x.min(9_999.0), (n / 100) as f32 * 100.0 + 50.0))
        })
    });
    g.finish();
    // Check the border case really changes subscriptions on every visit.
    let changes = (0..20_000u64)
        .filter(|k| {
            let n = k % 10_000;
            let x = (n % 100) as f32 * 100.0 + if (k / 10_000) % 2 == 0 { 170.0 } else { 50.0 };
            i.handle_move(EntityId(n), x.min(9_999.0), (n / 100) as f32 * 100.0 + 50.0)
                .is_some()
        })
        .count();
    eprintln!("interest: {changes} of 20000 border moves changed subscriptions");
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = moves_10k, conflict_and_validation, interest
}
criterion_main!(benches);
