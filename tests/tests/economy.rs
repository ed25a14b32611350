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
