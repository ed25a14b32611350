//! A zoned world on the local deployment's control plane and two origins:
//! its zones are records of their own, spread over both origins, each
//! claimed, run as an engine confined to its rectangle (hosted under the
//! zone's record id, signing as the world), followed by a standby on the
//! other origin, and failed over like a world when its origin crashes. The
//! world's own record is never claimed. Players handed between zone owners
//! (over the zone link), through a scripted relay and through the real relay
//! with SDK clients: the session follows its avatar without a reconnect.

use std::sync::Arc;
use std::time::Duration;

use skylane_control::{ClusterView, Embedded, PlacementHints, SharedControl, WorldSpec, ZoneSpec};
use skylane_proto::zones::{zone_record_id, ZoneIdx, ZoneLayout};
use skylane_proto::{
    encode_frame_to_bytes, Action, ChannelId, EventClass, FrameDecoder, LinkMsg, Outcome, Role,
    SessionId, WorldId, DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};
use skylane_tools::local::{LocalNet, LocalOptions};

/// Waits up to 20 s for `f` to hold on the control plane's view.
async fn until(
    control: &SharedControl,
    what: &str,
    f: impl Fn(&ClusterView) -> bool,
) -> ClusterView {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let v = control.view().await.unwrap();
            if f(&v) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} in time"))
}

/// Two origins on the local deployment (embedded control plane, 2 s
/// leases) and an arena world split `nx` × `ny` over its 10 × 10 cells with
/// one standby per zone, every zone claimed: the net, the control plane,
/// the world and the view that shows its zones owned.
async fn zoned_net(nx: u16, ny: u16) -> (LocalNet, SharedControl, WorldId, ClusterView) {
    let control: SharedControl = Arc::new(Embedded::new());
    let net = LocalNet::start(LocalOptions {
        control: Some(control.clone()),
        lease_ttl: Duration::from_secs(2),
        origins: 2,
        ..LocalOptions::default()
    })
    .await
    .expect("local net");
    let spec = WorldSpec {
        zones: Some(Box::new(ZoneSpec {
            layout: ZoneLayout::even(10, 10, 100.0, nx, ny).unwrap(),
            hysteresis: 10.0,
            margin: 20.0,
        })),
        standbys: Some(1),
        ..WorldSpec::new("arena", 30, 1000)
    };
    let w = control
        .create_world(spec, &PlacementHints::default())
        .await
        .expect("placed")
        .id;
    let n = usize::from(nx * ny);
    let v = until(&control, "every zone claimed", |v| {
        let z = v.zones_of(w);
        z.len() == n && z.iter().all(|r| r.owner.is_some())
    })
    .await;
    (net, control, w, v)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_zoned_worlds_zones_are_owned_replicated_and_fail_over_like_worlds() {
    runtime().block_on(async {
        let ttl = Duration::from_secs(2);
        let (net, control, w, v) = zoned_net(2, 2).await;
        assert!(
            v.worlds[&w].owner.is_none(),
            "the world's own record is never claimed"
        );
        let zones = v.zones_of(w);
        let owners: Vec<String> = zones
            .iter()
            .map(|r| r.owner.as_ref().unwrap().node.clone())
            .collect();
        assert_eq!(
            owners.iter().filter(|o| **o == owners[0]).count(),
            2,
            "four zones over two origins: {owners:?}"
        );
        // Each zone runs here under its record's id, with a standby following.
        for r in &zones {
            let node = &r.owner.as_ref().unwrap().node;
            let h = net.origin_server(node).expect("a local origin").handle();
            let followed = tokio::time::timeout(Duration::from_secs(20), async {
                loop {
                    if let Some(st) = h.world_status(r.id).await {
                        if !st.standbys.is_empty() && st.tick > 0 {
                            return st;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await
            .expect("the zone runs and a standby follows it");
            assert_eq!(followed.world, r.id.0);
            assert_eq!(followed.game, "arena");
        }
        // One origin crashes: its zones fail over to the other, under higher
        // epochs; the others stay where they were.
        let victim = owners[0].clone();
        let before: Vec<(WorldId, u64)> = zones
            .iter()
            .map(|r| (r.id, r.owner.as_ref().unwrap().epoch))
            .collect();
        assert!(net.crash_origin(&victim), "the origin crashes");
        let crashed = tokio::time::Instant::now();
        let v = until(&control, "every zone owned by the survivor", |v| {
            let z = v.zones_of(w);
            z.len() == 4
                && z.iter()
                    .all(|r| r.owner.as_ref().is_some_and(|o| o.node != victim))
        })
        .await;
        println!(
            "zones of {victim} taken over {:?} after its crash (lease {ttl:?})",
            crashed.elapsed()
        );
        for (r, (id, epoch)) in v.zones_of(w).iter().zip(&before) {
            assert_eq!(r.id, *id);
            let now = r.owner.as_ref().unwrap().epoch;
            if owners[usize::try_from(id.0 - w.0 - 1).unwrap()] == victim {
                assert!(now > *epoch, "taken over under a higher epoch");
            } else {
                assert_eq!(now, *epoch, "untouched");
            }
        }
        net.shutdown().await;
    });
}

/// A scripted relay on a real QUIC link to one origin (what the relay shell
/// does, reduced to what the test needs: open sessions, act, read).
struct FakeRelay {
    _endpoint: quinn::Endpoint,
    ctl: quinn::SendStream,
    rx: tokio::sync::mpsc::UnboundedReceiver<LinkMsg>,
}

async fn pump(mut recv: quinn::RecvStream, tx: tokio::sync::mpsc::UnboundedSender<LinkMsg>) {
    let mut dec = FrameDecoder::default();
    loop {
        while let Ok(Some(m)) = dec.poll_message::<LinkMsg>() {
            if tx.send(m).is_err() {
                return;
            }
        }
        match recv.read_chunk(1 << 20, true).await {
            Ok(Some(c)) => dec.push(&c.bytes),
            _ => return,
        }
    }
}

impl FakeRelay {
    async fn connect(net: &LocalNet, addr: std::net::SocketAddr, id: u32) -> Self {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(
            skylane_certs::client_config(net.pki.roots().unwrap(), Some(&net.pki.relay)).unwrap(),
        );
        let conn = endpoint.connect(addr, "localhost").unwrap().await.unwrap();
        let (ctl, ctl_recv) = conn.open_bi().await.unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(pump(ctl_recv, tx.clone()));
        tokio::spawn(async move {
            while let Ok(r) = conn.accept_uni().await {
                tokio::spawn(pump(r, tx.clone()));
            }
        });
        let mut r = Self {
            _endpoint: endpoint,
            ctl,
            rx,
        };
        r.send(&LinkMsg::LinkHello {
            version: PROTOCOL_VERSION,
            relay: skylane_proto::RelayId(id),
        })
        .await;
        r.until(|m| matches!(m, LinkMsg::LinkHello { .. })).await;
        r
    }

    async fn send(&mut self, msg: &LinkMsg) {
        let f = encode_frame_to_bytes(msg, DEFAULT_MAX_FRAME).unwrap();
        self.ctl.write_all(&f).await.unwrap();
    }

    /// Reads until `pred` matches (10 s at most), returning what matched.
    async fn until(&mut self, mut pred: impl FnMut(&LinkMsg) -> bool) -> LinkMsg {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let m = self.rx.recv().await.expect("link open");
                if pred(&m) {
                    return m;
                }
            }
        })
        .await
        .expect("in time")
    }

    async fn open(&mut self, session: u64, world: WorldId) {
        self.send(&LinkMsg::SessionOpen {
            session: SessionId(session),
            player: format!("p{session}"),
            world,
            role: Role::Player,
            team: None,
            resume_from: Vec::new(),
        })
        .await;
    }

    async fn act(&mut self, session: u64, seq: u64, x: f32, y: f32) -> Outcome {
        self.send(&LinkMsg::Action {
            session: SessionId(session),
            action: Action {
                class: EventClass::State,
                seq,
                client_time_us: 0,
                reads: vec![],
                payload: skylane_origin::ArenaAction::Mark { x, y }.encode(),
            },
        })
        .await;
        match self
            .until(|m| matches!(m, LinkMsg::ActionResult { session: s, result } if *s == SessionId(session) && result.seq == seq))
            .await
        {
            LinkMsg::ActionResult { result, .. } => result.outcome,
            _ => unreachable!(),
        }
    }
}

/// Players join a zoned world at its home zone, spawn anywhere, and those
/// who spawned in the other zone are handed to it over the zone link
/// between the two origin processes: the home zone's origin tells the relay
/// the session moved, the session re-opens on the other zone's owner with
/// its replay window, and acts there.
#[test]
fn players_are_handed_between_zone_owners_over_the_zone_link() {
    runtime().block_on(async {
        let (net, _control, w, v) = zoned_net(2, 1).await;
        let owner_addr = |i: usize| -> std::net::SocketAddr {
            v.zones_of(w)[i]
                .owner
                .as_ref()
                .unwrap()
                .addr
                .parse()
                .unwrap()
        };
        let (z0, z1) = (zone_record_id(w, ZoneIdx(0)), zone_record_id(w, ZoneIdx(1)));
        assert_ne!(owner_addr(0), owner_addr(1), "two zones on two origins");
        let mut home = FakeRelay::connect(&net, owner_addr(0), 1).await;
        let mut other = FakeRelay::connect(&net, owner_addr(1), 1).await;
        // Twenty players: about half spawn in zone 1 (all of them stay home
        // with probability 2^-20).
        let opened = tokio::time::Instant::now();
        for s in 1..=20 {
            home.open(s, z0).await;
        }
        let mut moved = Vec::new();
        let mut took = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline && moved.len() < 20 {
            let m = tokio::time::timeout(Duration::from_secs(2), home.rx.recv()).await;
            match m {
                Ok(Some(LinkMsg::SessionMoved { session, world })) => {
                    assert_eq!(world, z1);
                    moved.push(session);
                    took.push(opened.elapsed());
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        assert!(
            !moved.is_empty(),
            "someone spawned in zone 1 and was handed over"
        );
        let stayed = 20 - moved.len() as u64;
        took.sort();
        println!(
            "{} of 20 handed to zone 1 ({stayed} stayed home): join at the home zone -> SessionMoved p50 {:?}, max {:?}",
            moved.len(),
            took[took.len() / 2],
            took[took.len() - 1]
        );
        // Every moved session re-opens on zone 1's owner and acts there; its
        // replay window came along.
        for s in &moved {
            other.open(s.0, z1).await;
            let o = other.act(s.0, 1, 600.0, 500.0).await;
            assert!(matches!(o, Outcome::Applied { .. }), "{s}: {o:?}");
            let again = other.act(s.0, 1, 600.0, 500.0).await;
            assert!(
                matches!(
                    again,
                    Outcome::Rejected {
                        code: skylane_proto::RejectCode::Replayed,
                        ..
                    }
                ),
                "{s}: {again:?}"
            );
        }
        // The origins counted it: started at home, imported at zone 1.
        let h0 = net
            .origin_server(&v.zones_of(w)[0].owner.as_ref().unwrap().node)
            .unwrap();
        let st = h0.handle().world_status(z0).await.expect("zone 0 runs");
        assert_eq!(st.players as u64, stayed, "{st:?}");
        let h1 = net
            .origin_server(&v.zones_of(w)[1].owner.as_ref().unwrap().node)
            .unwrap();
        let st = h1.handle().world_status(z1).await.expect("zone 1 runs");
        assert_eq!(st.players as usize, moved.len(), "{st:?}");
        net.shutdown().await;
    });
}

/// SDK players join a zoned world (two zones on two origins) through a
/// real relay; those who spawn in the other zone are handed to it while
/// they act. No reconnect: the relay re-opens each moved session on the
/// other zone's owner; every action gets exactly one outcome, each applied
/// (the ones answered `Moved` by the zone the avatar left were held and sent
/// after it); the players see one world with every player in it.
#[test]
fn sdk_players_follow_their_avatars_between_zone_owners_through_the_relay() {
    if std::env::var("ZONE_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("ZONE_LOG").unwrap())
            .try_init();
    }
    runtime().block_on(async {
        let (net, _control, w, v) = zoned_net(2, 1).await;
        // Players land on any of the deployment's relays: their counts add.
        let relays = || net.relays.iter().map(|r| &r.metrics);
        let moves = || relays().map(|m| m.zone_moves.get()).sum::<u64>();
        const PLAYERS: usize = 12;
        const ACTIONS: u64 = 8;
        let mut clients = Vec::new();
        for i in 0..PLAYERS {
            let c = net
                .player_builder(0, i)
                .unwrap()
                .token(net.token_for(
                    &format!("zp{i}"),
                    Role::Player,
                    vec![w],
                    Duration::from_secs(600),
                ))
                .world(w)
                .connect()
                .await
                .expect("joins the zoned world");
            clients.push(c);
        }
        // Each acts at once, while the spawn handoffs are under way.
        let mut tasks = Vec::new();
        for (i, c) in clients.into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for k in 0..ACTIONS {
                    let o = tokio::time::timeout(
                        Duration::from_secs(10),
                        c.act(
                            EventClass::State,
                            vec![],
                            skylane_origin::ArenaAction::Mark {
                                x: 10.0 * i as f32,
                                y: 10.0 * k as f32,
                            }
                            .encode(),
                        ),
                    )
                    .await
                    .expect("an outcome in time")
                    .expect("the connection stays");
                    outcomes.push(o);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let st = c.stats();
                (c, outcomes, (st.reconnects, st.order.skipped_events, st.order.duplicates))
            }));
        }
        let mut clients = Vec::new();
        for t in tasks {
            let (c, outcomes, reconnects) = t.await.unwrap();
            for o in &outcomes {
                assert!(matches!(o, Outcome::Applied { .. }), "{o:?}");
            }
            assert_eq!(reconnects, (0, 0, 0), "no reconnect, no gap, no duplicate");
            clients.push(c);
        }
        println!(
            "{PLAYERS} players, {} sessions moved to the other zone's owner so far; actions held {} / resent {}",
            moves(),
            relays().map(|m| held(m, "held")).sum::<u64>(),
            relays().map(|m| held(m, "resent")).sum::<u64>(),
        );
        let refused: u64 = relays()
            .map(|m| {
                m.origin_errors
                    .get_or_create(&skylane_ops::KindLabel {
                        kind: "session_moved".into(),
                    })
                    .get()
            })
            .sum();
        assert_eq!(refused, 0, "no move refused");
        // One world to the players (never a zone), and every player in
        // exactly one of its zones.
        let ws = clients[0].world_state().expect("a world state");
        assert_eq!((ws.world, ws.host), (w, w), "{ws:?}");
        // (Handoffs that started late may still be committing: settle.)
        let mut players = Vec::new();
        for _ in 0..100 {
            players.clear();
            for r in v.zones_of(w) {
                let o = net
                    .origin_server(&r.owner.as_ref().unwrap().node)
                    .unwrap();
                let st = o.handle().world_status(r.id).await.expect("the zone runs");
                players.push(st.players as u64);
            }
            if players[1] == moves() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(players.iter().sum::<u64>(), PLAYERS as u64, "{players:?}");
        assert_eq!(players[1], moves(), "{players:?}: zone 1 holds those moved");
        assert!(players[1] >= 1, "someone spawned in zone 1 and moved");
        // A spectator of the zoned world: its feed is the home zone's,
        // which merges every zone's part (asked for while it is watched).
        let sb = net
            .player_builder(0, PLAYERS + 1)
            .unwrap()
            .token(net.token_for(
                "zw-watcher",
                Role::Spectator,
                vec![w],
                Duration::from_secs(600),
            ))
            .world(w);
        let mut watcher = skylane_client::Spectator::connect(
            sb,
            skylane_proto::SpectatorFilter::all(),
            Duration::ZERO,
            skylane_proto::BandwidthMode::Full,
        )
        .await
        .expect("watches");
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The world channel reaches every player, whichever zone its avatar
        // is in: the home zone writes it (other zones forward their world
        // events there) and keeps sessions away from it for it. Every
        // player marks once; every player is told of every mark.
        for (i, c) in clients.iter().enumerate() {
            let o = c
                .act(
                    EventClass::State,
                    vec![],
                    skylane_origin::ArenaAction::Mark {
                        x: 1.0,
                        y: 900.0 + i as f32,
                    }
                    .encode(),
                )
                .await
                .expect("answered");
            assert!(matches!(o, Outcome::Applied { .. }), "{o:?}");
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let mut seen = std::collections::BTreeSet::new();
            tokio::time::timeout(Duration::from_secs(10), async {
                while seen.len() < PLAYERS {
                    let Some(ev) = c.next_event().await else {
                        panic!("player {i}'s events ended");
                    };
                    if let skylane_client::ClientEvent::Event(e) = ev {
                        if let Some(skylane_origin::ArenaEvent::Marked { y, .. }) =
                            skylane_origin::ArenaEvent::decode(&e.payload)
                        {
                            if e.channel == ChannelId::World && y >= 900.0 {
                                seen.insert(y as u32);
                            }
                        }
                    }
                }
            })
            .await
            .unwrap_or_else(|_| {
                panic!("player {i} (zones {players:?}) was told of {} marks of {PLAYERS}", seen.len())
            });
            let st = c.stats();
            assert_eq!(
                (st.reconnects, st.order.skipped_events, st.order.duplicates),
                (0, 0, 0)
            );
        }
        // The spectator saw every mark once (those of zone 1's players
        // forwarded to the home zone, which publishes the world channel),
        // and the other zone's players in a keyframe (zone 1's part).
        let mut marks: Vec<u32> = Vec::new();
        let mut zone1_in_keyframe = false;
        tokio::time::timeout(Duration::from_secs(15), async {
            while marks.len() < PLAYERS || !zone1_in_keyframe {
                let f = watcher.next_frame().await.expect("a frame");
                for e in &f.events {
                    if f.keyframe && e.pos.is_some_and(|(x, _)| x > 510.0) {
                        zone1_in_keyframe = true;
                    }
                    if let Some(skylane_origin::ArenaEvent::Marked { y, .. }) =
                        skylane_origin::ArenaEvent::decode(&e.payload)
                    {
                        if !f.keyframe && y >= 900.0 {
                            marks.push(y as u32);
                        }
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!("the spectator saw {} marks of {PLAYERS}; zone 1 in a keyframe: {zone1_in_keyframe}", marks.len())
        });
        marks.sort_unstable();
        let distinct: std::collections::BTreeSet<u32> = marks.iter().copied().collect();
        assert_eq!(marks.len(), distinct.len(), "each mark once: {marks:?}");
        watcher.close().await;
        for c in clients {
            c.close().await;
        }
        net.shutdown().await;
    });
}

fn held(m: &skylane_relay::RelayMetrics, kind: &str) -> u64 {
    m.zone_actions
        .get_or_create(&skylane_ops::KindLabel { kind: kind.into() })
        .get()
}
