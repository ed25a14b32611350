//! Shared by the matchmaking tests (embedded and etcd control planes).

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use skylane_client::Matchmaker;
use skylane_match::coordinator::GameConfig;
use skylane_match::records::{decode, tickets_prefix, TicketRecord};
use skylane_proto::Role;
use skylane_tools::local::LocalNet;
use skylane_tools::matchmaking::start;

/// A player token of the deployment's issuer.
pub fn token(net: &LocalNet, who: &str) -> String {
    net.token_for(who, Role::Player, vec![], Duration::from_secs(300))
}

/// Waits until every relay published its RTT to each of `origins` origins
/// (what estimates are made of).
pub async fn published(net: &LocalNet, origins: usize) {
    let mut rx = net.control.watch().await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let ready = {
                let v = rx.borrow_and_update();
                v.relays().count() == 3 && v.relays().all(|r| r.origin_rtt_ms.len() == origins)
            };
            if ready {
                return;
            }
            rx.changed().await.unwrap();
        }
    })
    .await;
    let v = net.control.view().await.unwrap();
    let rtts: Vec<_> = v.relays().map(|r| (&r.id, &r.origin_rtt_ms)).collect();
    assert!(
        done.is_ok(),
        "every relay publishes its origin RTTs: {rtts:?}"
    );
}

/// Three tickets wait for a fourth player; the leader dies; the standby
/// takes the queue over and the fourth ticket, queued on it, completes the
/// match with the three earlier ones (their wait kept).
pub async fn tickets_survive_failover(net: &LocalNet) {
    let games = vec![GameConfig::new("arena", 2, 2)];
    let a = start(net, "mm-a", games.clone(), Duration::from_secs(2), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = start(net, "mm-b", games, Duration::from_secs(2), None)
        .await
        .unwrap();
    assert!(a.is_leader() && !b.is_leader());
    let urls = [
        format!("http://{}", a.addr()),
        format!("http://{}", b.addr()),
    ];
    let client = Matchmaker::new(urls.clone()).ca_pem(net.pki.ca_pem.clone());
    let mut waits = tokio::task::JoinSet::new();
    for i in 0..3 {
        let mut t = client
            .queue(&token(net, &format!("p{i}")), "arena", vec![])
            .await
            .unwrap();
        waits.spawn(async move { t.wait().await });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed = tokio::time::Instant::now();
    a.kill();
    // The SDK falls over to b for the fourth.
    let mut last = client
        .queue(&token(net, "p3"), "arena", vec![])
        .await
        .expect("queued through the standby");
    let m = last.wait().await.expect("matched after the failover");
    let after = killed.elapsed();
    assert!(b.is_leader());
    let mut waited = Vec::new();
    while let Some(r) = waits.join_next().await {
        let mm = r.unwrap().expect("the earlier tickets are matched too");
        assert_eq!(mm.world, m.world);
        waited.push(mm);
    }
    assert_eq!(waited.len(), 3);
    assert!(after < Duration::from_secs(10), "{after:?}");
    let view = net.control.view().await.unwrap();
    let waits: Vec<u64> = view
        .records_under(&tickets_prefix("default"))
        .filter_map(|(_, v)| decode::<TicketRecord>(v))
        .filter(|r| r.ticket.members[0].player != "p3")
        .map(|r| match r.state {
            skylane_match::records::Stored::Matched { waited_ms, .. } => waited_ms,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(waits.len(), 3);
    assert!(
        waits
            .iter()
            .all(|w| *w >= 1_000 + after.as_millis() as u64 - 500),
        "the earlier tickets kept their wait: {waits:?}"
    );
    b.stop().await;
}
