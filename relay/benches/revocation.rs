//! The cost of the revocation check every hello pays, with a large list
//! (100,000 revoked subjects, the most a file may hold).

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use skylane_proto::{Claims, Role, WorldId};
use skylane_relay::Revocations;

fn revocations(c: &mut Criterion) {
    let entries: Vec<String> = (0..100_000)
        .map(|i| format!(r#"{{"sub": "cheater-{i}", "until": 2000000000, "reason": "x"}}"#))
        .collect();
    let list = Revocations::parse(&format!("[{}]", entries.join(","))).unwrap();
    let claims = |sub: &str| Claims::new(sub, Role::Player, vec![WorldId(1)], "skylane", 1, 600);
    let (hit, miss) = (claims("cheater-99999"), claims("honest").with_id("t-1"));
    c.bench_function("revocation check, 100k entries, revoked", |b| {
        b.iter(|| std::hint::black_box(list.find(&hit, 1_900_000_000).is_some()))
    });
    c.bench_function("revocation check, 100k entries, not revoked", |b| {
        b.iter(|| std::hint::black_box(list.find(&miss, 1_900_000_000).is_some()))
    });
}

criterion_group!(benches, revocations);
criterion_main!(benches);
