//! The economy over netsim, through the public interface: an offer moves
//! nothing until its partner accepts, an accept resent applies once, the
//! origin's ledger holds both wallets with their before and after balances,
//! and a player who leaves and comes back brings its wallet.

use std::time::Duration;

use skylane_client::ClientEvent;
use skylane_netsim::run;
use skylane_origin::{ArenaAction, ArenaEvent, Wallet};
use skylane_proto::{EventClass, Outcome, RejectCode};
use skylane_tests::{Net, NetOptions, Walker};

async fn walker(net: &Net, name: &str) -> Walker {
    let (_, b) = net.client_builder("paris", name);
    let c = b
        .relays([net.relays[0].addr])
        .connect()
        .await
        .expect("let in");
    let mut w = Walker::new(c, name);
    w.wait_spawn().await;
    w
}

async fn act(w: &Walker, a: &ArenaAction) -> Outcome {
    w.client
        .act(EventClass::State, vec![], a.encode())
        .await
        .expect("answered")
}

async fn wallet(net: &Net, player: &str) -> Option<Wallet> {
    // The ledger commits once the tick is released: a few ticks later.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (w, _) = net
        .origin
        .handle()
        .ledger_history(Some(player.into()), 10)
        .await
        .expect("a ledger")
        .expect("readable");
    w
}

#[test]
fn trades_need_consent_apply_once_and_wallets_come_back_with_their_players() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let net = Net::start(NetOptions {
            relays: vec![(1, "amsterdam")],
            ledger: Some(dir.path().join("ledger.redb")),
            ..NetOptions::default()
        });
        let alice = walker(&net, "alice").await;
        let bob = walker(&net, "bob").await;
        let (a, b) = (alice.avatar.unwrap(), bob.avatar.unwrap());
        let new = Wallet {
            coins: 100,
            items: 0,
        };
        assert_eq!(wallet(&net, "alice").await, Some(new), "granted");
        let offer = ArenaAction::Offer {
            id: 1,
            partner: b,
            give_coins: 30,
            give_items: vec![],
            get_coins: 0,
            get_items: vec![],
            ttl_ticks: 300,
        };
        assert!(matches!(act(&alice, &offer).await, Outcome::Applied { .. }));
        // Offered, not accepted: nothing moved.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(wallet(&net, "alice").await, Some(new));
        assert_eq!(wallet(&net, "bob").await, Some(new));
        let accept = ArenaAction::Accept { from: a, id: 1 };
        assert!(matches!(act(&bob, &accept).await, Outcome::Applied { .. }));
        for _ in 0..2 {
            assert!(matches!(
                act(&bob, &accept).await,
                Outcome::Rejected {
                    code: RejectCode::AlreadyApplied,
                    ..
                }
            ));
        }
        assert_eq!(wallet(&net, "alice").await.unwrap().coins, 70);
        assert_eq!(wallet(&net, "bob").await.unwrap().coins, 130);
        let (_, txs) = net
            .origin
            .handle()
            .ledger_history(Some("bob".into()), 10)
            .await
            .unwrap()
            .unwrap();
        let trade = txs.last().expect("the trade");
        assert_eq!(trade.tx.entries[1].before.coins, 100);
        assert_eq!(trade.tx.entries[1].after.coins, 130);
        let totals = net.origin.handle().ledger_totals().await.unwrap();
        assert!(totals.conserved(), "{totals:?}");
        assert_eq!((totals.coins_held, totals.transactions), (200, 3));
        // Alice leaves and comes back: a new session, her wallet with her.
        alice.client.close().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, builder) = net.client_builder("paris", "alice");
        let mut again = builder
            .relays([net.relays[0].addr])
            .connect()
            .await
            .unwrap();
        let coins = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(ClientEvent::Event(e)) = again.next_event().await {
                    if let Some(ArenaEvent::Spawned { player, coins, .. }) =
                        ArenaEvent::decode(&e.payload)
                    {
                        if player == "alice" {
                            return coins;
                        }
                    }
                }
            }
        })
        .await
        .expect("respawned");
        assert_eq!(coins, 70, "not a new player's 100");
        let totals = net.origin.handle().ledger_totals().await.unwrap();
        assert_eq!(totals.coins_minted, 200, "no second grant");
    });
}

/// An arena room with a standby on another origin, each origin with its own
/// ledger: the standby's ledger follows the trades it re-executes, so when the
/// primary dies the new owner holds the players' wallets and its later trades
/// go on from them (nothing refused, totals conserved).
#[test]
fn a_standby_s_ledger_follows_the_room_and_carries_on_after_a_takeover() {
    use std::sync::Arc;

    use skylane_control::{Embedded, PlacementHints, SharedControl, WorldSpec};
    use skylane_origin::{Games, Ledger};
    use skylane_proto::Role;

    const TTL: Duration = Duration::from_secs(3);
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let mut net = Net::start(NetOptions {
            relays: vec![(1, "amsterdam")],
            ledger: Some(dir.path().join("a.redb")),
            ..NetOptions::default()
        });
        let control: SharedControl = Arc::new(Embedded::new());
        let a_node = net.cluster_node("origin-1", net.origin.local_addr(), TTL);
        let mut agents = vec![net
            .origin
            .join_cluster(
                control.clone(),
                a_node,
                Games::builtin(),
                net.origin_signer(),
            )
            .await
            .unwrap()];
        let mut b = net.add_origin("origin-b", "frankfurt");
        b.server
            .handle()
            .attach_ledger(Ledger::open(&dir.path().join("b.redb")).unwrap());
        let b_node = net.cluster_node("origin-2", b.addr, TTL);
        agents.push(
            b.server
                .join_cluster(
                    control.clone(),
                    b_node,
                    Games::builtin(),
                    net.origin_signer(),
                )
                .await
                .unwrap(),
        );
        net.follow(&control, TTL).await;
        let rec = control
            .create_world(
                WorldSpec {
                    standbys: Some(1),
                    ..WorldSpec::new("arena", 10, 2)
                },
                &PlacementHints::default(),
            )
            .await
            .unwrap();
        let w = rec.id;
        let (primary, standby, primary_host, agent) = if rec.placed_on == "origin-1" {
            (net.origin.handle(), b.server.handle(), net.origin_host, 0)
        } else {
            (b.server.handle(), net.origin.handle(), b.host, 1)
        };
        let join = async |name: &str| {
            let (_, builder) = net.client_builder("paris", name);
            let c = builder
                .token(net.token_for(name, Role::Player, vec![w]))
                .world(w)
                .relays([net.relays[0].addr])
                .connect()
                .await
                .unwrap();
            let mut walker = Walker::new(c, name);
            walker.wait_spawn().await;
            walker
        };
        let alice = join("alice").await;
        let bob = join("bob").await;
        for _ in 0..100 {
            if primary
                .world_status(w)
                .await
                .is_some_and(|s| s.phase == "playing" && s.standbys.len() == 1)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The relay publishes its RTT to each origin it links to (what a
        // matchmaker adds to a client's RTT to the relay).
        tokio::time::sleep(Duration::from_secs(6)).await;
        let view = control.view().await.unwrap();
        let published = &view.nodes["relay-1"].origin_rtt_ms;
        assert!(published.contains_key(&rec.placed_on), "{published:?}");
        assert!(
            published.values().all(|ms| (1..100).contains(ms)),
            "{published:?}"
        );
        let (a, b_av) = (alice.avatar.unwrap(), bob.avatar.unwrap());
        let offer = |id, partner| ArenaAction::Offer {
            id,
            partner,
            give_coins: 30,
            give_items: vec![],
            get_coins: 0,
            get_items: vec![],
            ttl_ticks: 300,
        };
        assert!(matches!(
            act(&alice, &offer(1, b_av)).await,
            Outcome::Applied { .. }
        ));
        let accept = ArenaAction::Accept { from: a, id: 1 };
        assert!(matches!(act(&bob, &accept).await, Outcome::Applied { .. }));
        // Applied means re-executed by the standby: its ledger has the trade.
        let wallet_on = async |h: &skylane_origin::OriginHandle, p: &str| {
            tokio::time::sleep(Duration::from_millis(300)).await;
            h.ledger_history(Some(p.into()), 10)
                .await
                .unwrap()
                .unwrap()
                .0
                .map(|w| w.coins)
        };
        assert_eq!(wallet_on(&standby, "alice").await, Some(70));
        assert_eq!(wallet_on(&standby, "bob").await, Some(130));
        assert_eq!(wallet_on(&primary, "bob").await, Some(130));
        // The primary dies; the standby takes the room over.
        let old = primary.world_status(w).await.unwrap().epoch;
        net.sim.partition(primary_host, skylane_netsim::Side::Any);
        drop(agents.remove(agent));
        for _ in 0..200 {
            if standby.world_status(w).await.is_some_and(|s| s.epoch > old) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            standby.world_status(w).await.is_some_and(|s| s.epoch > old),
            "taken over"
        );
        // A trade under the new owner goes on from the wallets it holds.
        let mut outcome = None;
        for _ in 0..100 {
            match act(&bob, &offer(2, a)).await {
                Outcome::Applied { .. } => {
                    outcome = Some(());
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        assert!(outcome.is_some(), "bob's offer under the new owner");
        let accept2 = ArenaAction::Accept { from: b_av, id: 2 };
        assert!(matches!(
            act(&alice, &accept2).await,
            Outcome::Applied { .. }
        ));
        assert_eq!(wallet_on(&standby, "alice").await, Some(100));
        assert_eq!(wallet_on(&standby, "bob").await, Some(100));
        let t = standby.ledger_totals().await.unwrap();
        assert!(t.conserved(), "{t:?}");
        assert_eq!(t.refused, 0, "{t:?}");
        drop(b);
    });
}
