//! Sanctions over netsim: an origin's kick holds on every relay for its
//! cool-down (a resume included), and every violation lands in the origin's
//! violation store with its evidence, the edge's included.

use std::time::Duration;

use skylane_client::{ClientError, ClientEvent};
use skylane_netsim::run;
use skylane_origin::{DetectorConfig, Enforcement, EnforcementPolicy, Source, ViolationQuery};
use skylane_proto::{EventClass, RefusalCode};
use skylane_tests::{Net, NetOptions};

/// `name` connecting to `relay`: `Ok(None)` when let in, the reason when
/// refused as sanctioned.
async fn sanctioned(net: &Net, relay: std::net::SocketAddr, name: &str) -> Option<String> {
    let (_, b) = net.client_builder("paris", name);
    match b.relays([relay]).connect().await {
        Ok(_) => None,
        Err(ClientError::Refused {
            code: RefusalCode::Sanctioned,
            reason,
        }) => Some(reason),
        Err(e) => panic!("{name}: {e:?}"),
    }
}

/// The store's records of `player`.
async fn records(net: &Net, player: &str) -> Vec<skylane_origin::ViolationRecord> {
    // The store writes on its own thread: give it a moment of real time.
    for _ in 0..50 {
        let q = ViolationQuery {
            player: Some(player.into()),
            since_ms: 0,
            limit: 100,
        };
        let found = net
            .origin
            .handle()
            .violations(q)
            .await
            .expect("a store")
            .expect("readable");
        if !found.is_empty() {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Vec::new()
}

#[test]
fn a_kicked_cheater_is_refused_on_every_relay_until_its_cool_down_ends() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let net = Net::start(NetOptions {
            relays: vec![(1, "amsterdam"), (2, "virginia")],
            detector: DetectorConfig {
                max_actions_per_sec: 20.0,
                policy: EnforcementPolicy {
                    kick_cooldown_secs: 30,
                    ..EnforcementPolicy::uniform(Enforcement::Kick)
                },
                ..DetectorConfig::default()
            },
            violations: Some(dir.path().join("violations.redb")),
            ..NetOptions::default()
        });
        let (a, b) = (net.relays[0].addr, net.relays[1].addr);
        let (_, hb) = net.client_builder("paris", "honest");
        let honest = hb.relays([a]).connect().await.expect("honest let in");
        let (_, cb) = net.client_builder("paris", "cheat");
        let mut cheat = cb.relays([a]).connect().await.expect("cheat let in");
        // 40 actions a second: twice the origin's limit, under the edge's.
        let kicks = || skylane_ops::counted(&net.origin_metrics.sanctions, "kick");
        for _ in 0..200 {
            if kicks() > 0 {
                break;
            }
            let _ = cheat.send(EventClass::Movement, vec![1u8; 16].into());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let kicked_at = tokio::time::Instant::now();
        assert_eq!(kicks(), 1, "kicked once");
        // Its session ends, and its SDK's resume is refused.
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match cheat.next_event().await {
                    None | Some(ClientEvent::Error(_)) => return,
                    Some(_) => {}
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "the cheater's session ended");
        drop(cheat);
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Refused on both relays, the one it never used included.
        for relay in [a, b] {
            let reason = sanctioned(&net, relay, "cheat")
                .await
                .expect("refused while cooling down");
            assert!(reason.contains("kick"), "{reason}");
            assert!(reason.contains("ActionRate"), "{reason}");
        }
        for r in &net.relays {
            assert_eq!(skylane_ops::counted(&r.metrics.sanctions, "kick"), 1);
            assert!(r.metrics.edge_cooldown_refusals.get() >= 1);
        }
        // The honest player is not affected.
        honest
            .send(EventClass::Chat, vec![2u8; 8].into())
            .expect("honest acts");
        assert!(sanctioned(&net, b, "bystander").await.is_none());
        // Still out at 25 s; let in again after 30 s, on either relay.
        tokio::time::sleep_until(kicked_at + Duration::from_secs(25)).await;
        assert!(sanctioned(&net, b, "cheat").await.is_some(), "25 s in");
        tokio::time::sleep_until(kicked_at + Duration::from_secs(31)).await;
        assert!(sanctioned(&net, b, "cheat").await.is_none(), "after 30 s");
        // The evidence was kept: the detector, the measure, the action.
        let kept = records(&net, "cheat").await;
        let v = kept
            .iter()
            .find(|r| r.detector == "action_rate")
            .unwrap_or_else(|| panic!("{kept:?}"));
        assert_eq!((v.source, v.action.as_str()), (Source::Origin, "kick"));
        assert_eq!(v.threshold, Some(20.0));
        assert!(v.value.unwrap() > 20.0, "{v:?}");
        assert!(v.tick > 0);
        assert!(records(&net, "honest").await.is_empty());
    });
}

#[test]
fn the_edge_reports_its_cuts_to_the_origins_store() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let net = Net::start(NetOptions {
            relays: vec![(1, "amsterdam")],
            violations: Some(dir.path().join("violations.redb")),
            ..NetOptions::default()
        });
        let relay = net.relays[0].addr;
        let m = &net.relays[0].metrics;
        let (_, b) = net.client_builder("paris", "flooder");
        let c = b.relays([relay]).connect().await.expect("let in");
        for _ in 0..200 {
            if m.edge_disconnects.get() >= 1 {
                break;
            }
            for _ in 0..50 {
                let _ = c.send(EventClass::Chat, vec![0u8; 200].into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(m.edge_disconnects.get(), 1, "cut");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let kept = records(&net, "flooder").await;
        let edge: Vec<_> = kept.iter().filter(|r| r.source == Source::Edge).collect();
        assert_eq!(edge.len(), 1, "{kept:?}");
        assert_eq!(edge[0].detector, "rate_limited");
        assert_eq!(edge[0].action, "cut");
        assert_eq!(edge[0].relay.as_deref(), Some("relay-1"));
        assert!(edge[0].evidence.contains("rate"), "{:?}", edge[0]);
    });
}
