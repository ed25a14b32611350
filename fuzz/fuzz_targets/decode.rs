//! Fuzzes every decoder: frames (with arbitrary chunking and limits), datagrams and
//! message bodies of each direction. Any panic is a bug.
//!
//! Run: `cargo +nightly fuzz run decode` from `fuzz/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skylane_proto::bytes::Bytes;
use skylane_proto::ed25519_dalek::SigningKey;
use skylane_proto::movement::verify_group;
use skylane_proto::{
    decode_datagram, decode_message, ClientMsg, FrameDecoder, LinkMsg, PeerMsg, ReplMsg, ServerMsg,
};

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let b = Bytes::copy_from_slice(rest);
    let _ = decode_message::<ClientMsg>(b.clone());
    let _ = decode_message::<ServerMsg>(b.clone());
    let _ = decode_message::<LinkMsg>(b.clone());
    let _ = decode_message::<PeerMsg>(b.clone());
    // Replication (standby <-> primary) messages, snapshots and logs included.
    let _ = decode_message::<ReplMsg>(b.clone());
    // Movement datagrams: whatever they hold, checking them against a key
    // answers, never panics (signatures of any length, any hash lists).
    if let Ok(ServerMsg::Movement(d)) = decode_datagram::<ServerMsg>(b.clone()) {
        let key = SigningKey::from_bytes(&[5u8; 32]).verifying_key();
        for g in &d.groups {
            let _ = verify_group(&key, d.world, g);
        }
    }

    // Feed the stream decoder in chunks whose size the first byte picks.
    let chunk = usize::from(ctl % 17) + 1;
    let mut dec = FrameDecoder::new(usize::from(ctl) * 64 + 1);
    for part in rest.chunks(chunk) {
        dec.push(part);
        loop {
            match dec.poll_message::<LinkMsg>() {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = dec.finish();
});
