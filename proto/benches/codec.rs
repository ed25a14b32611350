//! Codec benchmarks: encode + decode of an event, an event batch and an action.
//!
//! Run: `cargo bench -p skylane-proto --bench codec`. Figures are recorded in
//! docs/benchmarks.md (target: an event with a 100-byte payload in ≤ 200 ns).
#![allow(missing_docs)]

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use skylane_proto::*;

fn event_batch(events: usize) -> ServerMsg {
    ServerMsg::Events(EventBatch {
        world: WorldId(1),
        channel: ChannelId::Cell { x: 12, y: 40 },
        tick: 123_456,
        origin_time_us: 1_800_000_000_000_000,
        events: (0..events as u64)
            .map(|i| BatchEvent {
                seq: 9_000 + i,
                class: EventClass::Movement,
                entity: Some(EntityId(4_000 + i)),
                payload: Payload::from(vec![0xAB; 100]),
            })
            .collect(),
        prev_hash: Hash32([7; 32]),
        signature: Payload::from(vec![1; 64]),
        cosignature: Default::default(),
    })
}

fn action() -> ClientMsg {
    ClientMsg::Action(Action {
        class: EventClass::Critical,
        seq: 77_001,
        client_time_us: 1_800_000_000_123_456,
        reads: vec![
            EntityVersion {
                entity: EntityId(10),
                version: 41,
            },
            EntityVersion {
                entity: EntityId(11),
                version: 3,
            },
        ],
        payload: Payload::from(vec![0x5A; 100]),
    })
}

fn bench_message<M: WireMessage>(c: &mut Criterion, name: &str, msg: &M, events: u64) {
    let mut group = c.benchmark_group(format!("codec/{name}"));
    group.throughput(Throughput::Elements(events));
    let mut buf = BytesMut::with_capacity(64 * 1024);
    group.bench_function("encode", |b| {
        b.iter(|| {
            buf.clear();
            encode_frame(black_box(msg), DEFAULT_MAX_FRAME, &mut buf).unwrap();
        })
    });
    // Decode from a BytesMut-backed buffer, as frames arrive from a stream.
    let mut wire = BytesMut::new();
    encode_frame(msg, DEFAULT_MAX_FRAME, &mut wire).unwrap();
    let mut dec = FrameDecoder::default();
    dec.push(&wire);
    let body = dec.poll_frame().unwrap().unwrap();
    group.bench_function("decode", |b| {
        b.iter(|| black_box(decode_message::<M>(body.clone()).unwrap()))
    });
    group.bench_function("encode+decode", |b| {
        b.iter(|| {
            encode_frame(black_box(msg), DEFAULT_MAX_FRAME, &mut buf).unwrap();
            dec.push(&buf);
            buf.clear();
            let m: M = dec.poll_message().unwrap().unwrap();
            black_box(m);
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_message(c, "event_100B", &event_batch(1), 1);
    bench_message(c, "batch_20x100B", &event_batch(20), 20);
    bench_message(c, "action_100B", &action(), 1);
}

criterion_group!(codec, benches);
criterion_main!(codec);
