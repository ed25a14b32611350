//! The origin's QUIC shell over netsim, driven by a scripted relay: mutual TLS,
//! session join, actions and results, signed batches, typed link errors, and resume
//! on another relay with exactly the missed batches.

use std::net::SocketAddr;
use std::time::Duration;

use prometheus_client::registry::Registry;
use quinn::{Connection, Endpoint};
use skylane_certs::{client_config, server_config, ClientAuth, LocalPki};
use skylane_netsim::{run, HostId, Sim};
use skylane_origin::*;
use skylane_proto::*;
use tokio::sync::mpsc;

const KEY: [u8; 32] = [11; 32];
const WORLD: WorldId = WorldId(7);

struct Net {
    sim: Sim,
    pki: LocalPki,
    origin_addr: SocketAddr,
    server: OriginServer,
    metrics: OriginMetrics,
    registry: Registry,
}

fn start_origin() -> Net {
    start_origin_with(|_| {})
}

fn start_origin_with(tune: impl FnOnce(&mut ServerConfig)) -> Net {
    let sim = Sim::new(21);
    let origin_host = sim.add_host("origin", "frankfurt");
    let pki = LocalPki::generate(&[]).unwrap();
    let roots = pki.roots().unwrap();
    let sc = server_config(&pki.origin, ClientAuth::Required(roots)).unwrap();
    let endpoint = sim.endpoint(origin_host, 4500, Some(sc)).unwrap();
    let origin_addr = endpoint.local_addr().unwrap();
    let arena = Arena::new(ArenaConfig::default());
    let grid = arena.grid();
    let engine = Engine::new(
        arena,
        grid,
        EngineConfig::new(WORLD),
        ChainSigner::from_bytes(&KEY),
        0,
    );
    let mut registry = Registry::default();
    let metrics = OriginMetrics::new(&mut registry);
    let mut cfg = ServerConfig::new(0);
    cfg.session_grace = Duration::from_secs(30);
    tune(&mut cfg);
    let server = OriginServer::spawn(endpoint, engine, cfg, metrics.clone());
    Net {
        sim,
        pki,
        origin_addr,
        server,
        metrics,
        registry,
    }
}

struct FakeRelay {
    _endpoint: Endpoint,
    conn: Connection,
    ctl: quinn::SendStream,
    rx: mpsc::UnboundedReceiver<LinkMsg>,
}

async fn pump_stream(mut recv: quinn::RecvStream, tx: mpsc::UnboundedSender<LinkMsg>) {
    let mut dec = FrameDecoder::default();
    loop {
        while let Ok(Some(m)) = dec.poll_message::<LinkMsg>() {
            if tx.send(m).is_err() {
                return;
            }
        }
        match recv.read_chunk(65_536, true).await {
            Ok(Some(c)) => dec.push(&c.bytes),
            _ => return,
        }
    }
}

async fn relay(net: &Net, host: HostId, id: u32) -> FakeRelay {
    let mut endpoint = net.sim.endpoint(host, 0, None).unwrap();
    endpoint.set_default_client_config(
        client_config(net.pki.roots().unwrap(), Some(&net.pki.relay)).unwrap(),
    );
    let conn = endpoint
        .connect(net.origin_addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut ctl, ctl_recv) = conn.open_bi().await.unwrap();
    ctl.write_all(
        &encode_frame_to_bytes(
            &LinkMsg::LinkHello {
                version: PROTOCOL_VERSION,
                relay: RelayId(id),
            },
            DEFAULT_MAX_FRAME,
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(pump_stream(ctl_recv, tx.clone()));
    let c = conn.clone();
    tokio::spawn(async move {
        while let Ok(r) = c.accept_uni().await {
            tokio::spawn(pump_stream(r, tx.clone()));
        }
    });
    let mut r = FakeRelay {
        _endpoint: endpoint,
        conn,
        ctl,
        rx,
    };
    match r.next().await {
        LinkMsg::LinkHello { version, .. } => assert_eq!(version, PROTOCOL_VERSION),
        other => panic!("expected the origin's hello, got {other:?}"),
    }
    r
}

impl FakeRelay {
    async fn send(&mut self, msg: &LinkMsg) {
        self.ctl
            .write_all(&encode_frame_to_bytes(msg, DEFAULT_MAX_FRAME).unwrap())
            .await
            .unwrap();
    }

    async fn next(&mut self) -> LinkMsg {
        tokio::time::timeout(Duration::from_secs(5), self.rx.recv())
            .await
            .expect("origin went quiet")
            .expect("link closed")
    }

    /// Receives until `pred` matches, returning everything seen on the way.
    async fn until(&mut self, mut pred: impl FnMut(&LinkMsg) -> bool) -> Vec<LinkMsg> {
        let mut seen = Vec::new();
        loop {
            let m = self.next().await;
            let done = pred(&m);
            seen.push(m);
            if done {
                return seen;
            }
        }
    }

    async fn open(&mut self, session: u64, world: WorldId, resume_from: Vec<ChannelCursor>) {
        self.send(&LinkMsg::SessionOpen {
            session: SessionId(session),
            player: format!("p{session}"),
            world,
            role: Role::Player,
            team: None,
            resume_from,
        })
        .await;
    }
}

/// Opens `session` on `r`, waits for its subscriptions and the first world-channel
/// batch after them (the session's own spawn), and returns that batch's last seq.
async fn join_and_see_world(r: &mut FakeRelay, session: u64) -> u64 {
    r.open(session, WORLD, vec![]).await;
    r.until(|m| is_subs(m, session)).await;
    let seen = r
        .until(|m| matches!(m, LinkMsg::Events(b) if b.channel == ChannelId::World))
        .await;
    match seen.last() {
        Some(LinkMsg::Events(b)) => b.events.last().map_or(0, |e| e.seq),
        _ => 0,
    }
}

fn is_subs(m: &LinkMsg, s: u64) -> bool {
    matches!(m, LinkMsg::Subscriptions { session, .. } if *session == SessionId(s))
}

#[test]
fn relay_joins_sessions_sends_actions_and_receives_signed_batches() {
    run(|| async {
        let net = start_origin();
        let host = net.sim.add_host("relay-eu", "amsterdam");
        let mut r = relay(&net, host, 1).await;
        r.open(1, WORLD, vec![]).await;
        let seen = r.until(|m| is_subs(m, 1)).await;
        let LinkMsg::Subscriptions { added, .. } = seen.last().unwrap() else {
            unreachable!()
        };
        assert!(added.iter().any(|c| c.channel == ChannelId::World));
        assert!(added
            .iter()
            .any(|c| matches!(c.channel, ChannelId::Cell { .. })));

        // The avatar's spawn point arrives in a world-channel batch.
        let mut verifier = ChainVerifier::new(ChainSigner::from_bytes(&KEY).verifying_key());
        let (x, y) = loop {
            if let LinkMsg::Events(b) = r.next().await {
                verifier.verify(&b).unwrap();
                if let Some((x, y)) =
                    b.events
                        .iter()
                        .find_map(|e| match ArenaEvent::decode(&e.payload) {
                            Some(ArenaEvent::Spawned { x, y, .. }) => Some((x, y)),
                            _ => None,
                        })
                {
                    break (x, y);
                }
            }
        };

        // Actions on a separate uni stream, as a relay shards them: a legal move, a
        // shot (a miss: nobody is there), and a second shot inside the cooldown.
        let mut actions = r.conn.open_uni().await.unwrap();
        let plan = [
            ArenaAction::Move {
                x: (x + 0.2).min(1000.0),
                y,
            },
            ArenaAction::Fire {
                x: (x + 30.0).min(1000.0),
                y,
            },
            ArenaAction::Fire {
                x: (x + 30.0).min(1000.0),
                y,
            },
        ];
        for (i, a) in plan.iter().enumerate() {
            let a = Action {
                class: EventClass::Critical,
                seq: i as u64 + 1,
                client_time_us: 0,
                reads: vec![],
                payload: a.encode(),
            };
            actions
                .write_all(
                    &encode_frame_to_bytes(
                        &LinkMsg::Action {
                            session: SessionId(1),
                            action: a,
                        },
                        DEFAULT_MAX_FRAME,
                    )
                    .unwrap(),
                )
                .await
                .unwrap();
        }
        let mut results = Vec::new();
        let mut events = Vec::new();
        let mut moved = false;
        while results.len() < 3
            || !moved
            || !events
                .iter()
                .any(|e| matches!(e, ArenaEvent::Missed { .. }))
        {
            match r.next().await {
                LinkMsg::ActionResult { session, result } => {
                    assert_eq!(session, SessionId(1));
                    results.push(result);
                }
                LinkMsg::Events(b) => {
                    verifier.verify(&b).unwrap();
                    events.extend(
                        b.events
                            .iter()
                            .filter_map(|e| ArenaEvent::decode(&e.payload)),
                    );
                }
                // Movement is state in signed frames, not chained events.
                LinkMsg::Movement(f) => {
                    let key = ChainSigner::from_bytes(&KEY).verifying_key();
                    movement::verify_frame(&key, &f).unwrap();
                    moved |= f.entries.iter().any(|e| {
                        matches!(
                            ArenaEvent::decode(&e.payload),
                            Some(ArenaEvent::Moved { .. })
                        )
                    });
                }
                _ => {}
            }
        }
        // The refusal is answered on arrival; the applied ones when their tick ends.
        assert_eq!(
            results.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![3, 1, 2]
        );
        results.sort_by_key(|r| r.seq);
        assert!(
            matches!(results[0].outcome, Outcome::Applied { .. }),
            "{:?}",
            results[0]
        );
        assert!(
            matches!(results[1].outcome, Outcome::Applied { .. }),
            "{:?}",
            results[1]
        );
        assert!(
            matches!(
                results[2].outcome,
                Outcome::Rejected {
                    code: RejectCode::Cooldown,
                    ..
                }
            ),
            "{:?}",
            results[2]
        );
        assert!(moved, "the move came as a signed movement frame");
        assert!(!events.iter().any(|e| matches!(e, ArenaEvent::Moved { .. })));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &net.registry).unwrap();
        assert!(text.contains("skylane_origin_relays 1"), "{text}");
        assert!(text.contains("skylane_origin_actions_total"), "{text}");
        net.server.shutdown().await.unwrap();
    });
}

#[test]
fn bad_link_input_gets_typed_errors_and_the_link_survives() {
    run(|| async {
        let net = start_origin();
        let host = net.sim.add_host("relay-eu", "amsterdam");
        let mut r = relay(&net, host, 1).await;
        r.open(1, WorldId(99), vec![]).await;
        let seen = r
            .until(|m| matches!(m, LinkMsg::SessionRefused { .. }))
            .await;
        assert!(matches!(
            seen.last(),
            Some(LinkMsg::SessionRefused {
                session: SessionId(1),
                code: ErrorCode::UnknownWorld,
                ..
            })
        ));

        let a = Action {
            class: EventClass::Chat,
            seq: 1,
            client_time_us: 0,
            reads: vec![],
            payload: Payload::empty(),
        };
        r.send(&LinkMsg::Action {
            session: SessionId(42),
            action: a,
        })
        .await;
        let seen = r.until(|m| matches!(m, LinkMsg::Error(_))).await;
        assert!(matches!(
            seen.last(),
            Some(LinkMsg::Error(ErrorMsg {
                code: ErrorCode::UnknownSession,
                ..
            }))
        ));

        let mut junk = r.conn.open_uni().await.unwrap();
        junk.write_all(&[3, 1, 0xff, 0xff]).await.unwrap();
        let seen = r.until(|m| matches!(m, LinkMsg::Error(_))).await;
        assert!(matches!(
            seen.last(),
            Some(LinkMsg::Error(ErrorMsg {
                code: ErrorCode::Malformed,
                ..
            }))
        ));

        r.send(&LinkMsg::Ping(Ping {
            nonce: 5,
            sent_us: 1,
        }))
        .await;
        let seen = r.until(|m| matches!(m, LinkMsg::Pong(_))).await;
        assert!(matches!(
            seen.last(),
            Some(LinkMsg::Pong(Pong { nonce: 5, .. }))
        ));
        assert_eq!(
            net.metrics
                .link_errors
                .get_or_create(&KindLabel {
                    kind: "unknown_world".into()
                })
                .get(),
            1
        );
        net.server.shutdown().await.unwrap();
    });
}

#[test]
fn a_session_resumes_on_another_relay_with_exactly_the_missed_batches() {
    run(|| async {
        let net = start_origin();
        let a_host = net.sim.add_host("relay-a", "amsterdam");
        let b_host = net.sim.add_host("relay-b", "london");
        let mut a = relay(&net, a_host, 1).await;
        // Last world-channel sequence session 1 saw (its own Spawned event).
        let last_world = join_and_see_world(&mut a, 1).await;
        a.conn.close(0u32.into(), b"relay a goes away");
        drop(a);

        // While session 1 has no relay, two players join through relay B: their
        // Spawned events go to the world channel.
        let mut b = relay(&net, b_host, 2).await;
        for s in [2u64, 3] {
            b.open(s, WORLD, vec![]).await;
            b.until(|m| is_subs(m, s)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;

        // Session 1 resumes on relay B from where it was.
        b.open(
            1,
            WORLD,
            vec![ChannelCursor {
                channel: ChannelId::World,
                seq: last_world,
            }],
        )
        .await;
        let seen = b
            .until(|m| matches!(m, LinkMsg::Replay { session, .. } if *session == SessionId(1)))
            .await;
        assert!(
            seen.iter().any(|m| is_subs(m, 1)),
            "subscriptions come first"
        );
        let LinkMsg::Replay { batches, .. } = seen.last().unwrap() else {
            unreachable!()
        };
        let seqs: Vec<u64> = batches
            .iter()
            .filter(|b| b.channel == ChannelId::World)
            .flat_map(|b| b.events.iter().map(|e| e.seq))
            .collect();
        let expected: Vec<u64> = (last_world + 1..=last_world + seqs.len() as u64).collect();
        assert!(!seqs.is_empty(), "the two joins were missed");
        assert_eq!(
            seqs, expected,
            "exactly the missed world events, in order, no gap, no duplicate"
        );
        let spawned = batches
            .iter()
            .flat_map(|b| b.events.iter())
            .filter(|e| {
                matches!(
                    ArenaEvent::decode(&e.payload),
                    Some(ArenaEvent::Spawned { .. })
                )
            })
            .count();
        assert_eq!(spawned, 2);
        net.server.shutdown().await.unwrap();
    });
}

/// A relay that stops reading its downstream is cut once it is a whole link budget
/// behind (one disconnect, counted once), while another relay's sessions carry on.
#[test]
fn a_relay_that_stops_reading_is_cut_once_and_others_carry_on() {
    run(|| async {
        let net = start_origin_with(|cfg| cfg.link_queue_bytes = 16 << 10);
        let good_host = net.sim.add_host("relay-good", "amsterdam");
        let mut good = relay(&net, good_host, 1).await;
        good.open(1, WORLD, vec![]).await;
        good.until(|m| is_subs(m, 1)).await;

        // The stuck relay: small receive windows, and after the hello it never
        // reads again, so the origin's writes back up into its link queue.
        let host = net.sim.add_host("relay-stuck", "paris");
        let mut endpoint = net.sim.endpoint(host, 0, None).unwrap();
        let mut client = client_config(net.pki.roots().unwrap(), Some(&net.pki.relay)).unwrap();
        let mut transport = quinn::TransportConfig::default();
        transport
            .stream_receive_window(2048u32.into())
            .receive_window(8192u32.into());
        client.transport_config(std::sync::Arc::new(transport));
        endpoint.set_default_client_config(client);
        let conn = endpoint
            .connect(net.origin_addr, "localhost")
            .unwrap()
            .await
            .unwrap();
        let (mut ctl, _ctl_recv) = conn.open_bi().await.unwrap();
        let mut msgs = vec![LinkMsg::LinkHello {
            version: PROTOCOL_VERSION,
            relay: RelayId(2),
        }];
        msgs.extend((100..300).map(|s| LinkMsg::SessionOpen {
            session: SessionId(s),
            player: format!("p{s}"),
            world: WORLD,
            role: Role::Player,
            team: None,
            resume_from: vec![],
        }));
        for m in &msgs {
            ctl.write_all(&encode_frame_to_bytes(m, DEFAULT_MAX_FRAME).unwrap())
                .await
                .unwrap();
        }
        let closed = tokio::time::timeout(Duration::from_secs(30), conn.closed())
            .await
            .expect("the stuck relay was never cut");
        match closed {
            quinn::ConnectionError::ApplicationClosed(c) => {
                assert_eq!(c.reason.as_ref(), b"too slow", "{c:?}")
            }
            other => panic!("expected an application close, got {other:?}"),
        }
        assert_eq!(net.metrics.slow_relays.get(), 1);

        // The good relay's link is untouched: its session still gets the world.
        good.open(2, WORLD, vec![]).await;
        good.until(|m| is_subs(m, 2)).await;
        good.until(|m| matches!(m, LinkMsg::Events(_) | LinkMsg::Keyframe(_)))
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(net.metrics.slow_relays.get(), 1, "cut once, counted once");
        net.server.shutdown().await.unwrap();
    });
}

/// A client that was away can hold a cursor older than its session's current
/// subscription to a channel (it missed a removal and a re-add). It is owed events
/// only from the subscription's start, and channels it tracks but no longer
/// receives are removed: otherwise its relay waits for a hole nothing fills.
#[test]
fn a_resume_with_a_stale_cursor_is_owed_only_from_the_subscription_start() {
    run(|| async {
        let net = start_origin();
        let a_host = net.sim.add_host("relay-a", "amsterdam");
        let b_host = net.sim.add_host("relay-b", "london");
        let mut a = relay(&net, a_host, 1).await;
        join_and_see_world(&mut a, 1).await;
        // Session 2 joins after session 1's spawn: its world subscription starts later.
        a.open(2, WORLD, vec![]).await;
        let seen = a.until(|m| is_subs(m, 2)).await;
        let LinkMsg::Subscriptions { added, .. } = seen.last().unwrap() else {
            unreachable!()
        };
        let start = added
            .iter()
            .find(|c| c.channel == ChannelId::World)
            .unwrap()
            .seq;
        assert!(start > 0, "session 1's spawn came first");
        a.conn.close(0u32.into(), b"relay a goes away");
        drop(a);

        let mut b = relay(&net, b_host, 2).await;
        let far = ChannelId::Cell { x: 999, y: 999 };
        b.open(
            2,
            WORLD,
            vec![
                ChannelCursor {
                    channel: ChannelId::World,
                    seq: 0,
                },
                ChannelCursor {
                    channel: far,
                    seq: 5,
                },
            ],
        )
        .await;
        let seen = b.until(|m| is_subs(m, 2)).await;
        let LinkMsg::Subscriptions { added, removed, .. } = seen.last().unwrap() else {
            unreachable!()
        };
        let world = added.iter().find(|c| c.channel == ChannelId::World);
        assert_eq!(world.map(|c| c.seq), Some(start), "{added:?}");
        assert_eq!(removed, &vec![far]);
        // Nothing at or before the start is replayed.
        tokio::time::sleep(Duration::from_millis(300)).await;
        while let Ok(m) = b.rx.try_recv() {
            if let LinkMsg::Replay { batches, .. } = m {
                for batch in batches.iter().filter(|b| b.channel == ChannelId::World) {
                    assert!(batch.events.iter().all(|e| e.seq > start), "{batch:?}");
                }
            }
        }
        net.server.shutdown().await.unwrap();
    });
}

/// `skylane_origin_sessions` follows sessions down as well as up: closed by
/// their relay, orphaned by a lost link and expired after the grace.
#[test]
fn the_sessions_gauge_falls_when_players_leave() {
    run(|| async {
        let net = start_origin_with(|cfg| cfg.session_grace = Duration::from_secs(2));
        let host = net.sim.add_host("relay-a", "amsterdam");
        let mut a = relay(&net, host, 1).await;
        for s in [1u64, 2, 3] {
            a.open(s, WORLD, vec![]).await;
            a.until(|m| is_subs(m, s)).await;
        }
        assert_eq!(net.metrics.sessions.get(), 3);
        a.send(&LinkMsg::SessionClose {
            session: SessionId(1),
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(net.metrics.sessions.get(), 2, "a closed session is gone");
        a.conn.close(0u32.into(), b"relay goes away");
        drop(a);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(net.metrics.sessions.get(), 2, "orphans wait for a resume");
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(net.metrics.sessions.get(), 0, "expired after the grace");
        net.server.shutdown().await.unwrap();
    });
}
