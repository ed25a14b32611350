//! The relays' session rows end to end: a network writing analytics to
//! Parquet, SDK players joining, one leaving with a goodbye and one whose
//! connection just drops (its session held within the grace), then the
//! relays stopping. Every session a relay started has exactly one end row
//! from it, with the reason it ended: `left`, or `stopped` for the one the
//! relay still held when it stopped.

use std::time::Duration;

use skylane_analytics::schema::{SessionEnded, SessionStarted};
use skylane_analytics::{read_table, Analytics, AnalyticsConfig, AnalyticsMetrics};
use skylane_client::Client;
use skylane_proto::Role;
use skylane_tools::local::{LocalNet, LocalOptions, WORLD};

async fn player(net: &LocalNet, name: &str) -> Client {
    Client::builder()
        .world(WORLD)
        .ca_pem(net.pki.ca_pem.clone())
        .endpoint(quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap())
        .relays([net.relays[0].addr])
        .no_reprobe()
        .token(net.token_for(name, Role::Player, vec![WORLD], Duration::from_secs(600)))
        .connect()
        .await
        .expect("player joins")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_session_a_relay_held_ends_in_the_files_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AnalyticsConfig {
        dir: Some(dir.path().to_owned()),
        ..Default::default()
    };
    let a = Analytics::start(&cfg, "test", AnalyticsMetrics::default())
        .unwrap()
        .expect("analytics on");
    let net = LocalNet::start(LocalOptions {
        analytics: Some((a.emitter(), 1)),
        ..LocalOptions::default()
    })
    .await
    .unwrap();
    let leaving = player(&net, "leaving").await;
    let dropped = player(&net, "dropped").await;
    let (left_id, dropped_id) = (
        leaving.session().expect("a session").0,
        dropped.session().expect("a session").0,
    );
    leaving.close().await;
    drop(dropped);
    // The relay sees the dropped connection go (its session stays, in grace).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(net.stop(Duration::from_secs(10)).await, "the relays exit");
    a.shutdown().unwrap();

    let started = read_table::<SessionStarted>(dir.path(), "session_started").unwrap();
    let ended = read_table::<SessionEnded>(dir.path(), "session_ended").unwrap();
    let mut ids: Vec<u64> = started.rows.iter().map(|s| s.session).collect();
    ids.sort_unstable();
    let mut want = vec![left_id, dropped_id];
    want.sort_unstable();
    assert_eq!(ids, want, "{:?}", started.rows);
    let reason = |id: u64| -> Vec<&str> {
        ended
            .rows
            .iter()
            .filter(|e| e.session == id)
            .map(|e| e.reason.as_str())
            .collect()
    };
    assert_eq!(reason(left_id), vec!["left"], "{:?}", ended.rows);
    assert_eq!(reason(dropped_id), vec!["stopped"], "{:?}", ended.rows);
    let row = ended.rows.iter().find(|e| e.session == dropped_id).unwrap();
    assert_eq!(row.player, "dropped");
    assert!(row.duration_ms >= 500, "held through its grace: {row:?}");
}
