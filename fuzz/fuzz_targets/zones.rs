//! Fuzzes the zone decoders and cores: a zone-to-zone message (`ZoneMsg`),
//! a zone layout from JSON, the arena's check of an arriving player, and a
//! handoff core and a mirror store fed whatever decodes, the arena's
//! cross-zone requests and answers. Any panic is a bug.
//!
//! Run: `cargo +nightly fuzz run zones` from `fuzz/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skylane_origin::{Arena, ArenaConfig, Emit, HandoffConfig, Handoffs, MirrorIn, World};
use skylane_proto::bytes::Bytes;
use skylane_proto::zones::{ZoneIdx, ZoneLayout, ZoneMsg};
use skylane_proto::{decode_message, EntityId, WorldId};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = decode_message::<ZoneMsg>(Bytes::copy_from_slice(data)) {
        let mut h = Handoffs::new(WorldId(1), ZoneIdx(1), HandoffConfig::default());
        let _ = h.handle_msg(&msg, |_| Ok(()));
        h.handle_timeout(1_000);
        while h.poll_output().is_some() {}
        let mut m = MirrorIn::new(WorldId(1), ZoneIdx(1), 64, 30);
        let _ = m.handle(&msg);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(layout) = serde_json::from_str::<ZoneLayout>(text) {
            let _ = layout.zone_at(1.0, 1.0);
            let _ = layout.near(ZoneIdx(0), 5.0, 5.0, 3.0);
            let _ = layout.crossing(ZoneIdx(0), 5.0, 5.0, 1.0);
        }
    }
    let mut arena = Arena::new(ArenaConfig {
        items: 2,
        ..ArenaConfig::default()
    });
    let _ = arena.check_import(EntityId(7), data);
    // A cross-zone request and an answer, whatever the bytes.
    let mut out = Emit::default();
    let _ = arena.apply_remote(ZoneIdx(0), data, 1, &mut out);
    let _ = arena.remote_answered(data, Some(data), 1, &mut out);
    let _ = arena.remote_answered(data, None, 1, &mut out);
});
