//! Worlds as rooms over netsim: the control plane places a tic-tac-toe room on
//! the origin, the relay learns it by watching, two players fill it, it starts,
//! one wins, the result reaches the players and the control plane, the room is
//! removed and the relay forgets it.

use std::sync::Arc;
use std::time::Duration;

use skylane_client::{Client, ClientError, ClientEvent};
use skylane_control::{Embedded, NodeInfo, Phase, PlacementHints, SharedControl, WorldSpec};
use skylane_netsim::run;
use skylane_origin::{ClusterNode, Games, TttAction};
use skylane_proto::{ErrorCode, EventClass, Outcome, Role, WorldId, WorldPhase, WorldState};
use skylane_tests::{Net, NetOptions};

fn one_relay() -> NetOptions {
    NetOptions {
        relays: vec![(1, "amsterdam")],
        ..NetOptions::default()
    }
}

/// Joins the origin and the relay to an embedded control plane.
async fn cluster(net: &mut Net) -> SharedControl {
    cluster_with(net, None).await
}

/// [`cluster`] with the rooms' journals kept in `journal_dir`.
async fn cluster_with(net: &mut Net, journal_dir: Option<std::path::PathBuf>) -> SharedControl {
    let control: SharedControl = Arc::new(Embedded::new());
    let node = ClusterNode {
        id: "origin-1".into(),
        addr: net.origin.local_addr().to_string(),
        tls_name: "localhost".into(),
        admin: None,
        region: "eu".into(),
        capacity: 16,
        coords: None,
        lease_ttl: Duration::from_secs(3),
        removal_grace: Duration::from_secs(2),
        journal_dir,
        replication: None,
        zones: None,
        attestation: None,
    };
    let signer = net.origin_signer();
    let agent = net
        .origin
        .join_cluster(control.clone(), node, Games::builtin(), signer)
        .await
        .expect("origin joins");
    std::mem::forget(agent);
    for r in &net.relays {
        let id = r.relay.status().await.expect("relay up").relay;
        r.relay
            .follow(
                control.clone(),
                NodeInfo::relay(id, r.addr, "localhost", "eu"),
                Duration::from_secs(3),
            )
            .await
            .expect("relay follows");
    }
    control
}

async fn player(net: &Net, name: &str, world: WorldId) -> Result<Client, ClientError> {
    let (_, b) = net.client_builder("paris", name);
    b.token(net.token_for(name, Role::Player, vec![world]))
        .world(world)
        .relays([net.relays[0].addr])
        .connect()
        .await
}

/// Waits for the next world state matching `phase`.
async fn phase(c: &mut Client, phase: WorldPhase) -> WorldState {
    state(c, |ws| ws.phase == phase).await
}

/// Waits for the next world state matching `f`.
async fn state(c: &mut Client, f: impl Fn(&WorldState) -> bool) -> WorldState {
    let phase = "a matching state";
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match c.next_event().await {
                Some(ClientEvent::World(ws)) if f(&ws) => return ws,
                Some(ClientEvent::Error(e)) => panic!("client failed: {e}"),
                Some(_) => {}
                None => panic!("client closed waiting for {phase}"),
            }
        }
    })
    .await
    .expect("world state in time")
}

/// A tic-tac-toe room created on `control`, xavier (X) and olga (O) in it,
/// both seeing it play.
async fn playing_room(net: &Net, control: &SharedControl) -> (WorldId, Client, Client) {
    let w = control
        .create_world(
            WorldSpec::new("tictactoe", 10, 2),
            &PlacementHints::default(),
        )
        .await
        .unwrap()
        .id;
    let mut x = player(net, "xavier", w).await.unwrap();
    let mut o = player(net, "olga", w).await.unwrap();
    phase(&mut x, WorldPhase::Playing).await;
    phase(&mut o, WorldPhase::Playing).await;
    (w, x, o)
}

async fn place(c: &Client, cell: u8) -> Outcome {
    let payload = postcard::to_stdvec(&TttAction::Place { cell }).unwrap();
    c.act(EventClass::State, vec![], payload.into())
        .await
        .expect("answer")
}

#[test]
fn a_room_is_placed_filled_played_ended_and_removed() {
    run(|| async {
        let mut net = Net::start(one_relay());
        let control = cluster(&mut net).await;
        let created = control
            .create_world(
                WorldSpec::new("tictactoe", 10, 2),
                &PlacementHints::default(),
            )
            .await
            .expect("placed");
        assert_eq!(created.placed_on, "origin-1");
        let w = created.id;

        // The first player may arrive before the origin has claimed the room: the
        // relay holds its hello until the owner is known.
        let mut x = player(&net, "xavier", w).await.expect("x joins");
        // A lobby: the head count, out of the capacity.
        let waiting = state(&mut x, |ws| {
            ws.phase == WorldPhase::Waiting && ws.players == 1
        })
        .await;
        assert_eq!(waiting.capacity, 2);
        assert!(
            waiting.epoch > 0,
            "the owner's epoch travels with the state"
        );
        assert!(
            matches!(
                place(&x, 4).await,
                Outcome::Rejected {
                    code: skylane_proto::RejectCode::NotPlaying,
                    ..
                }
            ),
            "no move before the room starts"
        );
        let mut o = player(&net, "olga", w).await.expect("o joins");
        phase(&mut x, WorldPhase::Playing).await;
        phase(&mut o, WorldPhase::Playing).await;

        // A third player finds the room full.
        let mut late = player(&net, "late", w).await.expect("welcome first");
        let refused = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match late.next_event().await {
                    Some(ClientEvent::Error(ClientError::Request { code, .. })) => return code,
                    Some(_) => {}
                    None => panic!("closed without a reason"),
                }
            }
        })
        .await
        .expect("refusal in time");
        assert_eq!(refused, ErrorCode::WorldFull);

        // X wins on the top row.
        for (who, cell) in [(&x, 0), (&o, 3), (&x, 1), (&o, 4), (&x, 2)] {
            assert!(
                matches!(place(who, cell).await, Outcome::Applied { .. }),
                "cell {cell}"
            );
        }
        let ended = phase(&mut o, WorldPhase::Ended).await;
        let result = ended.result.expect("a result");
        assert_eq!(result.winner.as_deref(), Some("xavier"));
        assert_eq!(result.reason, "three_in_a_row");
        phase(&mut x, WorldPhase::Ended).await;

        // The control plane has the result, then forgets the room after its grace,
        // and so does the relay.
        let mut seen_result = false;
        let mut removed = false;
        for _ in 0..100 {
            let v = control.view().await.unwrap();
            match v.worlds.get(&w) {
                Some(r) if r.status.phase == Phase::Ended => {
                    assert_eq!(
                        r.status.result.as_ref().and_then(|r| r.winner.as_deref()),
                        Some("xavier")
                    );
                    seen_result = true;
                }
                Some(_) => {}
                None => {
                    removed = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(seen_result, "the result was published");
        assert!(removed, "the ended room was removed");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            net.relays[0].metrics.worlds_known.get(),
            0,
            "the relay forgot it"
        );
        assert!(
            net.origin.handle().world_status(w).await.is_none(),
            "the origin stopped it"
        );
        // The static arena world is untouched.
        assert!(net.origin.status().await.is_some());
    })
}

#[test]
fn unknown_worlds_are_refused_and_bad_specs_never_placed() {
    run(|| async {
        let mut net = Net::start(one_relay());
        let control = cluster(&mut net).await;
        let Err(err) = player(&net, "nobody", WorldId(424_242)).await else {
            panic!("a world nobody hosts must be refused");
        };
        assert!(
            matches!(
                err,
                ClientError::UnknownWorld(_) | ClientError::Refused { .. }
            ),
            "{err:?}"
        );
        let mut bad = WorldSpec::new("tictactoe", 10, 2);
        bad.tick_hz = 5_000;
        assert!(control
            .create_world(bad, &PlacementHints::default())
            .await
            .is_err());
        let err = control
            .create_world(WorldSpec::new("chess", 10, 2), &PlacementHints::default())
            .await
            .unwrap_err();
        assert_eq!(err.label(), "placement");
    })
}

#[test]
fn many_rooms_run_side_by_side_on_one_origin() {
    run(|| async {
        let mut net = Net::start(one_relay());
        let control = cluster(&mut net).await;
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(
                control
                    .create_world(
                        WorldSpec::new("tictactoe", 10, 2),
                        &PlacementHints::default(),
                    )
                    .await
                    .unwrap()
                    .id,
            );
        }
        let mut clients = Vec::new();
        for (i, w) in ids.iter().enumerate() {
            let a = player(&net, &format!("a{i}"), *w).await.unwrap();
            let b = player(&net, &format!("b{i}"), *w).await.unwrap();
            clients.push((a, b));
        }
        for (a, b) in &mut clients {
            phase(a, WorldPhase::Playing).await;
            phase(b, WorldPhase::Playing).await;
        }
        let worlds = net.origin.handle().worlds().await;
        // The arena and five rooms.
        assert_eq!(worlds.len(), 6);
        assert!(worlds
            .iter()
            .filter(|s| s.game == "tictactoe")
            .all(|s| s.phase == "playing" && s.players == 2));
        // An operator ends one: its players see the end with the operator's reason.
        control.end_world(ids[0]).await.unwrap();
        let ended = phase(&mut clients[0].0, WorldPhase::Ended).await;
        assert_eq!(ended.result.unwrap().reason, "operator");
        // The others go on.
        assert!(matches!(
            place(&clients[1].0, 0).await,
            Outcome::Applied { .. }
        ));
    })
}

/// A journaled room: the game is re-executed from its journal by the same
/// replay the arena uses, every tick's state hash checked (the World trait is
/// not arena-shaped).
#[test]
fn a_journaled_room_replays_consistently() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let mut net = Net::start(one_relay());
        let control = cluster_with(&mut net, Some(dir.path().to_owned())).await;
        let (w, mut x, o) = playing_room(&net, &control).await;
        // A draw: X O X / X O O / O X X.
        for (i, cell) in [0u8, 1, 2, 4, 3, 5, 7, 6, 8].iter().enumerate() {
            let who = if i % 2 == 0 { &x } else { &o };
            assert!(matches!(place(who, *cell).await, Outcome::Applied { .. }));
        }
        let ended = phase(&mut x, WorldPhase::Ended).await;
        assert_eq!(ended.result.unwrap().reason, "draw");
        // Removed after its grace: the journal is closed and can be replayed.
        for _ in 0..100 {
            if net.origin.handle().world_status(w).await.is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let path = dir.path().join(format!("world-{}.redb", w.0));
        let (journal, meta) = skylane_origin::Journal::open(&path).expect("journal");
        assert_eq!(meta.world_kind, "tictactoe");
        assert_eq!(meta.world, w);
        let report = skylane_origin::replay::<skylane_origin::TicTacToe>(&journal, &meta).unwrap();
        assert!(report.divergence.is_none(), "{report:?}");
        assert!(report.ticks > 0 && report.checked > 0, "{report:?}");
        assert!(
            report.inputs >= 11,
            "2 joins and 9 moves at least: {report:?}"
        );
    })
}

/// Relays configured with no peers learn each other from the control plane; a
/// relay whose direct path to the room's origin is cut carries its players
/// through the peer it learnt, and the game goes on.
#[test]
fn peers_learnt_from_the_control_plane_carry_a_cut_link() {
    run(|| async {
        let mut net = Net::start(NetOptions {
            relays: vec![(1, "amsterdam"), (2, "virginia")],
            static_peers: false,
            ..NetOptions::default()
        });
        let control = cluster(&mut net).await;
        let (w, x, mut o) = playing_room(&net, &control).await;
        // Peer reports every half second: let amsterdam learn virginia's path.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let ams = &net.relays[0];
        net.sim.partition(ams.host, net.origin_host);
        tokio::time::sleep(Duration::from_secs(4)).await;
        let status = ams.relay.status().await.unwrap();
        let route = status
            .routes
            .iter()
            .find(|r| r.world == w.0)
            .expect("a route for the room");
        assert!(
            route.path.starts_with("via:2"),
            "through the learnt peer: {status:?}"
        );
        for (who, cell) in [(&x, 0), (&o, 3), (&x, 1), (&o, 4), (&x, 2)] {
            assert!(
                matches!(place(who, cell).await, Outcome::Applied { .. }),
                "cell {cell}"
            );
        }
        let ended = phase(&mut o, WorldPhase::Ended).await;
        assert_eq!(ended.result.unwrap().winner.as_deref(), Some("xavier"));
    })
}
