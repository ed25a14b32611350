//! The cluster tier: the whole local deployment (origin, three relays) on a real
//! etcd (feature `etcd`; needs the `etcd` binary from Debian's `etcd-server`).
//! Rooms are placed through etcd, relays learn them by watching, bots play them
//! to the end; then etcd goes away while a room runs, and the room keeps
//! running until the origin's lease could have lapsed, pauses, and resumes when
//! etcd is back. And a room fails over: its primary crashes, its standby takes
//! it over under a higher epoch.

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

/// Waits up to 20 s for `c`'s next world state matching `f`, collecting the
/// sequence numbers of its events per channel into `seqs` meanwhile.
async fn await_state(
    c: &mut skylane_client::Client,
    seqs: &mut std::collections::HashMap<skylane_proto::ChannelId, Vec<u64>>,
    f: impl Fn(&skylane_proto::WorldState) -> bool,
) -> skylane_proto::WorldState {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match c.next_event().await {
                Some(ClientEvent::World(ws)) if f(&ws) => return ws,
                Some(ClientEvent::Event(e)) => seqs.entry(e.channel).or_default().push(e.seq),
                Some(ClientEvent::ResumeIncomplete { .. }) => panic!("told of a loss"),
                Some(ClientEvent::Error(e)) => panic!("client failed: {e}"),
                Some(_) => {}
                None => panic!("client closed"),
            }
        }
    })
    .await
    .expect("the state in time")
}

/// Places `cell` for `c`; its outcome within 20 s.
async fn place(c: &skylane_client::Client, cell: u8) -> skylane_proto::Outcome {
    let payload = postcard::to_stdvec(&skylane_origin::TttAction::Place { cell }).unwrap();
    let act = c.act(skylane_proto::EventClass::State, vec![], payload.into());
    tokio::time::timeout(Duration::from_secs(20), act)
        .await
        .expect("answered")
        .expect("answer")
}

/// The failover scenario on a real etcd: two origins, a tic-tac-toe room with
/// a standby; its primary crashes mid-game; the standby takes the room over
/// under a higher epoch (etcd's owner-key revision) and the game finishes from
/// the same board, every channel continuous.
#[test]
fn a_room_fails_over_to_its_standby_through_etcd() {
    runtime().block_on(async {
        let etcd = LocalEtcd::start().await.expect("etcd");
        let control: SharedControl = Arc::new(
            Etcd::connect(etcd.config("/skylane/failover"))
                .await
                .unwrap(),
        );
        let ttl = Duration::from_secs(3);
        let net = LocalNet::start(LocalOptions {
            control: Some(control.clone()),
            lease_ttl: ttl,
            origins: 2,
            ..LocalOptions::default()
        })
        .await
        .expect("local net");
        let rec = control
            .create_world(
                WorldSpec {
                    standbys: Some(1),
                    ..WorldSpec::new("tictactoe", 10, 2)
                },
                &PlacementHints::default(),
            )
            .await
            .unwrap();
        assert_eq!(rec.standbys.len(), 1, "{rec:?}");
        let w = rec.id;
        let token_ttl = Duration::from_secs(600);
        let join = |name: &'static str, k: usize| {
            let b = net
                .player_builder(k % net.relays.len(), k)
                .unwrap()
                .token(net.token_for(name, Role::Player, vec![w], token_ttl))
                .probe(1)
                .world(w);
            async move { b.connect().await.expect("joins") }
        };
        let mut x = join("xavier", 0).await;
        let mut o = join("olga", 1).await;
        let (mut sx, mut so) = (Default::default(), Default::default());
        let playing = |ws: &skylane_proto::WorldState| ws.phase == WorldPhase::Playing;
        let first = await_state(&mut x, &mut sx, playing).await;
        await_state(&mut o, &mut so, playing).await;
        // The standby follows from the room's creation; two acknowledged moves.
        for (c, cell) in [(&x, 0), (&o, 3)] {
            let r = place(c, cell).await;
            assert!(matches!(r, skylane_proto::Outcome::Applied { .. }), "{r:?}");
        }

        assert!(net.crash_origin(&rec.placed_on), "the primary crashes");
        let crashed = tokio::time::Instant::now();
        let moved = |ws: &skylane_proto::WorldState| ws.epoch > first.epoch;
        await_state(&mut x, &mut sx, moved).await;
        let took = crashed.elapsed();
        await_state(&mut o, &mut so, moved).await;
        assert!(took < ttl + Duration::from_secs(2), "took {took:?}");
        for (c, cell) in [(&x, 1), (&o, 4), (&x, 2)] {
            let r = place(c, cell).await;
            assert!(matches!(r, skylane_proto::Outcome::Applied { .. }), "{r:?}");
        }
        let ended = |ws: &skylane_proto::WorldState| ws.phase == WorldPhase::Ended;
        let end = await_state(&mut x, &mut sx, ended).await;
        await_state(&mut o, &mut so, ended).await;
        assert_eq!(
            end.result.and_then(|r| r.winner).as_deref(),
            Some("xavier"),
            "both moves before the crash survived"
        );
        for seqs in [&sx, &so] {
            for (c, s) in seqs.iter() {
                assert!(
                    s.windows(2).all(|p| p[1] == p[0] + 1),
                    "{c}: continuous {s:?}"
                );
            }
        }
        println!(
            "etcd failover: crash -> new owner at the players in {took:?} (lease TTL {ttl:?})"
        );
        net.shutdown().await;
    });
}
