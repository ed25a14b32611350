//! Fuzzes the game-level decoders: arena actions, arena events, and a client view
//! fed arbitrary keyframe states and batches. Any panic is a bug.
//!
//! Run: `cargo +nightly fuzz run arena` from `fuzz/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skylane_origin::{Arena, ArenaConfig, ArenaEvent, ArenaView, World};
use skylane_proto::bytes::Bytes;
use skylane_proto::{
    decode_message, BatchEvent, ChannelId, EventBatch, EventClass, Keyframe, Payload, WorldId,
};

fuzz_target!(|data: &[u8]| {
    let arena = Arena::new(ArenaConfig {
        items: 4,
        ..ArenaConfig::default()
    });
    let _ = arena.decode_action(EventClass::Critical, data);
    let _ = ArenaEvent::decode(data);
    let mut view = ArenaView::new();
    let kf = Keyframe {
        world: WorldId(1),
        channel: ChannelId::World,
        tick: 1,
        seq: 0,
        state: Payload::from(data.to_vec()),
    };
    let _ = view.apply_keyframe(&kf);
    let batch = EventBatch {
        world: WorldId(1),
        channel: ChannelId::World,
        tick: 2,
        origin_time_us: 0,
        events: vec![BatchEvent {
            seq: 1,
            class: EventClass::State,
            entity: None,
            payload: Payload::from(data.to_vec()),
        }],
        prev_hash: Default::default(),
        signature: Payload::empty(),
        cosignature: Default::default(),
    };
    let _ = view.apply_batch(&batch);
    let _ = view.check(&arena);
    let _ = decode_message::<skylane_proto::LinkMsg>(Bytes::copy_from_slice(data));
});
