//! Fuzzes the run-time world decoders: tic-tac-toe actions and events, the
//! control plane's records (world specs and records, nodes, statuses, as etcd
//! holds them in JSON) and spec validation. Any panic is a bug.
//!
//! Run: `cargo +nightly fuzz run rooms` from `fuzz/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skylane_control::{NodeInfo, WorldRecord, WorldSpec, WorldStatus};
use skylane_origin::{TicTacToe, TttConfig, TttEvent, TttState, World};
use skylane_proto::EventClass;

fuzz_target!(|data: &[u8]| {
    let game = TicTacToe::new(TttConfig::default());
    let _ = game.decode_action(EventClass::State, data);
    let _ = postcard::from_bytes::<TttEvent>(data);
    let _ = postcard::from_bytes::<TttState>(data);
    if let Ok(spec) = serde_json::from_slice::<WorldSpec>(data) {
        let _ = spec.validate();
    }
    let _ = serde_json::from_slice::<WorldRecord>(data);
    let _ = serde_json::from_slice::<NodeInfo>(data);
    let _ = serde_json::from_slice::<WorldStatus>(data);
});
