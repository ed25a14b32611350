//! Fuzzes the matchmaker's decoders: the API's JSON (queue requests, ticket
//! statuses, errors), the records it keeps in the control plane (tickets,
//! matches: a damaged one must be skipped), its TOML configuration, and the
//! leader's core fed a view holding the bytes as a ticket and a cancel.
//! Any panic is a bug.
//!
//! Run: `cargo +nightly fuzz run matchmaking` from `fuzz/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skylane_control::ClusterView;
use skylane_match::coordinator::{Coordinator, GameConfig};
use skylane_match::records::{decode, MatchRecord, TicketRecord};
use skylane_match::Windows;
use skylane_proto::matchmaking::{ApiError, QueueRequest, TicketStatus};

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<QueueRequest>(data);
    let _ = serde_json::from_slice::<TicketStatus>(data);
    let _ = serde_json::from_slice::<ApiError>(data);
    let _ = decode::<TicketRecord>(data);
    let _ = decode::<MatchRecord>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(c) = skylane_match::config::MatchConfig::from_toml(text) {
            let _ = c.validate();
        }
    }
    let mut view = ClusterView::default();
    let bytes = bytes::Bytes::copy_from_slice(data);
    view.records_mut()
        .insert("mm/q/tickets/0000000000000001".into(), bytes.clone());
    view.records_mut()
        .insert("mm/q/cancels/0000000000000001".into(), bytes.clone());
    view.records_mut().insert("mm/q/matches/1000".into(), bytes);
    let mut c = Coordinator::new("q", &[GameConfig::new("duel", 2, 1)], Windows::default());
    c.handle_view(1_000, &view);
    c.handle_timeout(1_000);
    while c.poll_action().is_some() {}
});
