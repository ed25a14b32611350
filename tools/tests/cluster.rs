//! The cluster tier: the whole local deployment (origin, three relays) on a real
//! etcd (feature `etcd`; needs the `etcd` binary from Debian's `etcd-server`).
//! Rooms are placed through etcd, relays learn them by watching, bots play them
//! to the end; then etcd goes away while a room runs, and the room keeps
//! running until the origin's lease could have lapsed, pauses, and resumes when
//! etcd is back.

#![cfg(feature = "etcd")]

use std::sync::Arc;
use std::time::Duration;

use skylane_client::ClientEvent;
use skylane_control::{Etcd, LocalEtcd, PlacementHints, SharedControl, WorldSpec};
use skylane_proto::{Role, WorldPhase};
use skylane_tools::local::{LocalNet, LocalOptions};
use skylane_tools::rooms::{self, RoomsPlan};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn net_on(etcd: &LocalEtcd, prefix: &str, ttl: Duration) -> (LocalNet, SharedControl) {
    let control: SharedControl = Arc::new(Etcd::connect(etcd.config(prefix)).await.unwrap());
    let opts = LocalOptions {
        control: Some(control.clone()),
        lease_ttl: ttl,
        ..LocalOptions::default()
    };
    let net = LocalNet::start(opts).await.expect("local net");
    (net, control)
}

#[test]
fn rooms_are_placed_learnt_played_and_recorded_through_etcd() {
    runtime().block_on(async {
        let etcd = LocalEtcd::start().await.expect("etcd");
        let (net, control) = net_on(&etcd, "/skylane/rooms", Duration::from_secs(5)).await;
        let regions = net.relays.len();
        let plan = RoomsPlan {
            tictactoe: 4,
            arena: 1,
            every: Duration::from_millis(100),
            duration: Duration::from_secs(3),
        };
        let ttl = Duration::from_secs(600);
        let report = rooms::run(control.clone(), plan, |world, room, k| {
            let j = room * 4 + k;
            let name = format!("r{room}-{k}");
            let b = net
                .player_builder(j % regions, j / regions)
                .map_err(|e| e.to_string())?
                .token(net.token_for(&name, Role::Player, vec![world], ttl))
                .probe(1);
            Ok((name, b))
        })
        .await;
        assert!(report.errors.is_empty(), "{report:?}");
        assert_eq!(report.created.values().sum::<u64>(), 5, "{report:?}");
        assert_eq!(report.started, 5, "{report:?}");
        assert_eq!(report.ended, 5, "{report:?}");
        assert_eq!(report.unfinished, 0, "{report:?}");
        assert_eq!(report.moves_refused, 0, "{report:?}");
        assert_eq!(report.results.get("operator"), Some(&1), "{report:?}");
        // The owner published every result to etcd, fenced by its epoch.
        assert_eq!(report.results_recorded, 5, "{report:?}");
        let v = control.view().await.unwrap();
        assert!(v
            .worlds
            .values()
            .all(|w| w.owner.as_ref().is_some_and(|o| o.epoch > 0)));
        assert_eq!(v.relays().count(), 3, "every relay registered");
        net.shutdown().await;
    });
}

#[test]
fn an_etcd_outage_leaves_running_worlds_running_until_the_lease_could_lapse() {
    runtime().block_on(async {
        let mut etcd = LocalEtcd::start().await.expect("etcd");
        let ttl = Duration::from_secs(3);
        let (net, control) = net_on(&etcd, "/skylane/outage", ttl).await;
        let w = control
            .create_world(
                WorldSpec {
                    min_players: 1,
                    start_after_ms: 100,
                    ..WorldSpec::new("arena", 20, 4)
                },
                &PlacementHints::default(),
            )
            .await
            .unwrap()
            .id;
        let mut c = net
            .player_builder(0, 0)
            .unwrap()
            .token(net.token_for("p", Role::Player, vec![w], Duration::from_secs(600)))
            .probe(1)
            .world(w)
            .connect()
            .await
            .expect("joins the room");
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(ClientEvent::World(ws)) = c.next_event().await {
                    if ws.phase == WorldPhase::Playing {
                        return;
                    }
                }
            }
        })
        .await
        .expect("the room starts");
        let ticks = || net.origin_metrics.ticks.get();
        let writable = || net.origin_metrics.lease_writable.get();

        etcd.kill().await;
        let down = tokio::time::Instant::now();
        // Within the lease, the data path does not notice.
        let t0 = ticks();
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert_eq!(writable(), 1, "still writable within the lease");
        assert!(ticks() > t0 + 10, "worlds keep ticking while etcd is away");
        // Once the lease could have lapsed, the owner stops writing.
        while writable() == 1 {
            assert!(
                down.elapsed() < ttl + Duration::from_secs(2),
                "never paused"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            down.elapsed() < ttl,
            "paused before the lease could lapse ({:?})",
            down.elapsed()
        );
        let paused_at = ticks();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(ticks() <= paused_at + 2, "no ticks while paused");

        // etcd returns: the lease is renewed (or re-granted and the world
        // re-claimed) and the world ticks again.
        etcd.resume().await.unwrap();
        tokio::time::timeout(Duration::from_secs(20), async {
            while writable() == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("writable again");
        let t1 = ticks();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(ticks() > t1 + 5, "the world resumed");
        let v = control.view().await.unwrap();
        assert!(
            v.worlds.get(&w).and_then(|r| r.owner.as_ref()).is_some(),
            "owned again"
        );
        net.shutdown().await;
    });
}
