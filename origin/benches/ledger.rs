//! Trades per second through one engine, with the economy ledger committing
//! each tick's transactions (one redb write transaction per tick, durable) and
//! without it, in the same run.
//!
//! Run: `cargo bench -p skylane-origin --bench ledger`. One iteration is one
//! tick of 1,000 trades among 1,000 players (each gives a coin to the next:
//! balances stay put, so iterations are alike).
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use skylane_origin::*;
use skylane_proto::{Action, ChainSigner, EntityId, EventClass, Role, SessionId, WorldId};

const PLAYERS: u64 = 1000;

fn engine() -> (Engine<Arena>, Vec<EntityId>) {
    let arena = Arena::new(ArenaConfig {
        width: 2000.0,
        height: 2000.0,
        ..ArenaConfig::default()
    });
    let grid = arena.grid();
    let mut cfg = EngineConfig::new(WorldId(1));
    cfg.keyframe_every = 0;
    let mut e = Engine::new(arena, grid, cfg, ChainSigner::from_bytes(&[3; 32]), 0);
    let avatars = (1..=PLAYERS)
        .map(|s| {
            e.handle_join(SessionId(s), &format!("p{s}"), Role::Player, None)
                .unwrap()
                .unwrap()
        })
        .collect();
    (e, avatars)
}

/// One tick of `PLAYERS` gifts; the tick's ledger transactions.
fn trade_tick(e: &mut Engine<Arena>, avatars: &[EntityId], seq: &mut u64) -> Vec<LedgerTx> {
    *seq += 1;
    for (i, _) in avatars.iter().enumerate() {
        let gift = ArenaAction::Trade {
            partner: avatars[(i + 1) % avatars.len()],
            give_coins: 1,
            give_items: vec![],
            get_coins: 0,
            get_items: vec![],
        };
        e.handle_action(
            SessionId(i as u64 + 1),
            Action {
                class: EventClass::State,
                seq: *seq,
                client_time_us: *seq,
                reads: vec![],
                payload: gift.encode(),
            },
        );
    }
    let now = e.poll_timeout();
    e.handle_timeout(now);
    let mut txs = Vec::new();
    while let Some(o) = e.poll_output() {
        match o {
            Output::Ledger { txs: t, .. } => txs.extend(t),
            o => {
                black_box(o);
            }
        }
    }
    txs
}

fn trades(c: &mut Criterion) {
    let mut g = c.benchmark_group("ledger");
    g.throughput(Throughput::Elements(PLAYERS));
    g.sample_size(20);
    g.bench_function("trades_1000_per_tick_without_ledger", |b| {
        let (mut e, avatars) = engine();
        let mut seq = 0;
        trade_tick(&mut e, &avatars, &mut seq);
        b.iter(|| black_box(trade_tick(&mut e, &avatars, &mut seq).len()));
    });
    g.bench_function("trades_1000_per_tick_with_ledger", |b| {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&dir.path().join("ledger.redb")).unwrap();
        let (mut e, avatars) = engine();
        let mut seq = 0;
        let grants = trade_tick(&mut e, &avatars, &mut seq);
        ledger.commit(1, 0, 0, &grants).unwrap();
        b.iter(|| {
            let txs = trade_tick(&mut e, &avatars, &mut seq);
            let n = ledger.commit(1, seq, 0, &txs).unwrap();
            assert_eq!(n, PLAYERS, "every trade committed once");
            black_box(n)
        });
        assert!(ledger.totals().conserved());
    });
    g.finish();
}

criterion_group!(benches, trades);
criterion_main!(benches);
