//! Relay scenarios over netsim: players in several regions through relays to one
//! origin, resume across a path cut, drain, migration, flood isolation, routing
//! through a peer relay, priority on a saturated link.

use std::time::Duration;

use skylane_client::ClientEvent;
use skylane_netsim::{run, Fault};
use skylane_proto::{
    ClientMsg, EventClass, Hello, Outcome, RefusalCode, Role, ServerMsg, PROTOCOL_VERSION,
};
use skylane_tests::{
    assert_exactly_once, assert_same_world_events, watch_marks, Net, NetOptions, RawConn, Seen,
    Walker, WORLD,
};

/// A player in `region` on `relay` that notices a cut quickly (800 ms idle
/// timeout), spawned; and its host, to cut.
async fn quick_walker(
    net: &Net,
    relay: std::net::SocketAddr,
    name: &str,
) -> (skylane_netsim::HostId, Walker) {
    let (host, b) = net.client_builder("paris", name);
    let client = b
        .relays([relay])
        .idle_timeout(Duration::from_millis(800))
        .connect()
        .await
        .unwrap();
    let mut w = Walker::new(client, name);
    w.wait_spawn().await;
    (host, w)
}

/// A player in Paris on `relay`, spawned.
async fn walker(net: &Net, relay: std::net::SocketAddr, name: &str) -> Walker {
    let (_, b) = net.client_builder("paris", name);
    let mut w = Walker::new(b.relays([relay]).connect().await.unwrap(), name);
    w.wait_spawn().await;
    w
}

#[test]
fn players_in_three_regions_play_through_their_nearest_relay() {
    run(|| async {
        let net = Net::start(NetOptions::default());
        let all: Vec<_> = net.relays.iter().map(|r| r.addr).collect();
        let mut walkers = Vec::new();
        for (i, region) in ["paris", "california", "singapore"].iter().enumerate() {
            let name = format!("p{i}");
            let (_, b) = net.client_builder(region, &name);
            let client = b.relays(all.clone()).connect().await.expect("connect");
            walkers.push(Walker::new(client, &name));
        }
        // Probing picked the lowest-RTT relay: amsterdam, virginia, tokyo.
        for (w, r) in walkers.iter().zip(&net.relays) {
            assert_eq!(w.client.relay(), Some(r.addr), "{}", w.name);
        }
        for w in &mut walkers {
            w.wait_spawn().await;
        }
        for _ in 0..30 {
            for w in &mut walkers {
                let o = w.step().await;
                assert!(matches!(o, Outcome::Applied { .. }), "{}: {o:?}", w.name);
                w.absorb();
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        for w in &mut walkers {
            w.absorb();
            assert_exactly_once(&w.seen);
            // Each sees the others' steps (movement state, not events).
            assert!(w.moves_seen > 30, "{} saw {} moves", w.name, w.moves_seen);
            let st = w.client.stats();
            assert!(st.clock_offset_us.is_some());
            assert!(st.latency.iter().map(|l| l.count).sum::<u64>() > 0);
        }
        let status = net.relays[0].relay.status().await.unwrap();
        assert_eq!(status.sessions_connected, 1);
        assert!(status.origins[0].up);
        assert_eq!(status.routes[0].path, "direct:1");
    });
}

#[test]
fn an_origin_ping_measures_the_whole_path_through_the_relay() {
    run(|| async {
        let net = Net::start(NetOptions::default());
        let all: Vec<_> = net.relays.iter().map(|r| r.addr).collect();
        for (region, relay) in ["paris", "california", "singapore"].iter().zip(&net.relays) {
            let name = format!("ping-{region}");
            let (_, b) = net.client_builder(region, &name);
            let client = b.relays(all.clone()).connect().await.expect("connect");
            assert_eq!(client.relay(), Some(relay.addr));
            // Let the clock pings and the relay's link pings settle.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let mut best = Duration::MAX;
            for _ in 0..5 {
                best = best.min(client.ping_origin().await.expect("origin pong"));
            }
            let to_relay = Duration::from_micros(client.stats().rtt_us.expect("relay rtt"));
            let status = relay.relay.status().await.unwrap();
            let link = Duration::from_secs_f64(status.origins[0].rtt_ms.expect("link rtt") / 1e3);
            // Client → relay → origin → relay → client: both round trips, answered at
            // once (the origin's 30 Hz tick would add up to 33 ms).
            let path = to_relay + link;
            assert!(
                best + Duration::from_millis(1) >= path && best <= path + Duration::from_millis(3),
                "{region}: origin ping {best:?}, relay {to_relay:?} + link {link:?}"
            );
        }
    });
}

#[test]
fn the_directory_answers_nearest_relays_and_bad_tokens_are_refused() {
    run(|| async {
        let net = Net::start(NetOptions::default());
        // Without GeoIP the directory answers in configured order; the client
        // probes those candidates and keeps the fastest.
        let (_, b) = net.client_builder("tokyo", "dir");
        let c = b
            .directory(net.relays[0].addr)
            .connect()
            .await
            .expect("connect");
        assert_eq!(
            c.relay(),
            Some(net.relays[2].addr),
            "tokyo relay is nearest"
        );

        let (_, b) = net.client_builder("paris", "forger");
        let err = b
            .token("not-a-token")
            .relays([net.relays[0].addr])
            .connect()
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                skylane_client::ClientError::Refused {
                    code: RefusalCode::BadToken,
                    ..
                }
            ),
            "{err:?}"
        );
    });
}

/// Relays configured with no other relay learn each other from the control
/// plane: a client in Tokyo asking the Amsterdam relay's directory is offered
/// the Tokyo relay once it registered, and connects there; a relay whose
/// lease lapses (cut off from the control plane) leaves the directory.
#[test]
fn relays_registered_with_the_control_plane_are_offered_to_clients() {
    run(|| async {
        use std::sync::Arc;
        let net = Net::start(NetOptions {
            static_peers: false,
            ..NetOptions::default()
        });
        let control: skylane_control::SharedControl = Arc::new(skylane_control::Embedded::new());
        let ttl = Duration::from_secs(3);
        let mut access = Vec::new();
        for (r, (id, region)) in net.relays.iter().zip(NetOptions::default().relays) {
            let at = skylane_netsim::topology::region(region).expect("region");
            let cut = skylane_tests::CutControl::new(control.clone());
            r.relay
                .follow(
                    Arc::new(cut.clone()),
                    skylane_control::NodeInfo {
                        coords: Some((at.lat, at.lon)),
                        ..skylane_control::NodeInfo::relay(id, r.addr, "localhost", region)
                    },
                    ttl,
                )
                .await
                .expect("relay follows");
            access.push(cut);
        }
        let known = |n: i64| {
            let m = net.relays[0].metrics.directory_relays.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(20), async {
                    while m.get() != n {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                })
                .await
                .unwrap_or_else(|_| panic!("{n} relays in the directory"));
            }
        };
        known(3).await;
        let (_, b) = net.client_builder("tokyo", "far");
        let c = b
            .directory(net.relays[0].addr)
            .connect()
            .await
            .expect("connect");
        assert_eq!(c.relay(), Some(net.relays[2].addr), "offered, and nearest");
        // Tokyo's relay loses the control plane: its lease lapses and it
        // leaves the others' directories.
        access[2].set_cut(true);
        known(2).await;
    });
}

#[test]
fn a_two_second_cut_loses_and_duplicates_nothing() {
    run(|| async {
        let net = Net::start(NetOptions::default());
        let relay = net.relays[0].addr;
        let (host, mut cut) = quick_walker(&net, relay, "cut").await;
        let mut mover = walker(&net, relay, "mover").await;
        let session = cut.client.session();

        // The mover keeps the world busy while the cut client's path is down 2 s.
        for i in 0..150 {
            if i == 30 {
                net.sim.partition(host, net.relays[0].host);
                net.sim.schedule(
                    Duration::from_secs(2),
                    Fault::Heal {
                        a: host.into(),
                        b: net.relays[0].host.into(),
                    },
                );
            }
            mover.step().await;
            mover.absorb();
            cut.absorb();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let events = cut.absorb();
        mover.absorb();
        let st = cut.client.stats();
        assert!(st.reconnects >= 1, "the cut forced a reconnect: {st:?}");
        assert_eq!(cut.client.session(), session, "same session resumed");
        assert_eq!(st.order.resyncs, 0, "no gap needed a keyframe");
        assert!(!events.iter().any(|e| matches!(e, ClientEvent::Error(_))));
        // Exactly once and in order per channel, and on the world channel the cut
        // client saw exactly what the uncut one saw over the same range.
        assert_exactly_once(&cut.seen);
        assert_same_world_events(&cut, &mover);
        // The mover's steps arrive (movement state of the cells both share).
        assert!(cut.moves_seen > 60, "{}", cut.moves_seen);
    });
}

#[test]
fn a_drained_relay_moves_its_clients_without_loss() {
    run(|| async {
        let net = Net::start(NetOptions::default());
        let (_, b) = net.client_builder("paris", "d1");
        let mut w = Walker::new(
            b.relays([net.relays[0].addr]).connect().await.unwrap(),
            "d1",
        );
        w.wait_spawn().await;
        for _ in 0..10 {
            w.step().await;
        }
        net.relays[0].relay.drain();
        for _ in 0..60 {
            w.step().await;
            w.absorb();
        }
        tokio::time::timeout(Duration::from_secs(35), net.relays[0].relay.closed())
            .await
            .expect("drained relay exits");
        tokio::time::sleep(Duration::from_millis(300)).await;
        w.absorb();
        let st = w.client.stats();
        assert_eq!(st.moves, 1, "{st:?}");
        assert_ne!(w.client.relay(), Some(net.relays[0].addr));
        assert_eq!(st.order.resyncs, 0);
        assert_exactly_once(&w.seen);
        assert_eq!(net.relays[0].metrics.go_aways.get(), 1);
    });
}

#[test]
fn a_client_whose_address_changes_keeps_its_session() {
    run(|| async {
        let net = Net::start(NetOptions::default());
        let (host, b) = net.client_builder("paris", "m1");
        let mut w = Walker::new(
            b.relays([net.relays[0].addr]).connect().await.unwrap(),
            "m1",
        );
        w.wait_spawn().await;
        let before = net.sim.ip(host);
        net.sim.apply(Fault::ChangeAddress(host));
        assert_ne!(net.sim.ip(host), before);
        for _ in 0..40 {
            let o = w.step().await;
            assert!(matches!(o, Outcome::Applied { .. }), "{o:?}");
        }
        w.absorb();
        let st = w.client.stats();
        assert_eq!(st.reconnects, 0, "migration, not a reconnect");
        assert_exactly_once(&w.seen);
    });
}

#[test]
fn a_flooding_session_is_cut_off_while_others_keep_their_latency() {
    run(|| async {
        let net = Net::start(NetOptions::default());
        let relay = net.relays[0].addr;
        let (_, b) = net.client_builder("paris", "honest");
        let mut honest = Walker::new(b.relays([relay]).connect().await.unwrap(), "honest");
        honest.wait_spawn().await;
        let rtts = |v: &mut Vec<Duration>| {
            v.sort();
            v[v.len() * 99 / 100]
        };
        let mut quiet = Vec::new();
        for _ in 0..60 {
            let t = tokio::time::Instant::now();
            assert!(matches!(honest.step().await, Outcome::Applied { .. }));
            quiet.push(t.elapsed());
        }
        let (_, b) = net.client_builder("paris", "flooder");
        let flooder = b.relays([relay]).connect().await.unwrap();
        let mut loud = Vec::new();
        for i in 0..60 {
            // 50 chat messages per honest step: 1,500/s against a limit of 5/s.
            for _ in 0..50 {
                let _ = flooder.send(EventClass::Chat, vec![0u8; 200].into());
            }
            let t = tokio::time::Instant::now();
            let o = honest.step().await;
            assert!(matches!(o, Outcome::Applied { .. }), "step {i}: {o:?}");
            loud.push(t.elapsed());
        }
        let m = &net.relays[0].metrics;
        assert!(m.edge_disconnects.get() >= 1, "the flooder was cut off");
        let (q, l) = (rtts(&mut quiet), rtts(&mut loud));
        assert!(
            l <= q + q / 2 + Duration::from_millis(5),
            "honest p99 action round trip {q:?} quiet, {l:?} during the flood"
        );
        honest.absorb();
        assert_exactly_once(&honest.seen);
    });
}

#[test]
fn a_partitioned_direct_path_is_routed_through_a_peer_relay() {
    run(|| async {
        let net = Net::start(NetOptions::default());
        let ams = &net.relays[0];
        let (_, b) = net.client_builder("paris", "routed");
        let mut routed = Walker::new(b.relays([ams.addr]).connect().await.unwrap(), "routed");
        let (_, b) = net.client_builder("virginia", "other");
        let mut other = Walker::new(
            b.relays([net.relays[1].addr]).connect().await.unwrap(),
            "other",
        );
        routed.wait_spawn().await;
        other.wait_spawn().await;
        // Peer reports arrive every half second; let the table learn them.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let status = ams.relay.status().await.unwrap();
        assert_eq!(status.routes[0].path, "direct:1", "{status:?}");

        // Cut amsterdam ↔ frankfurt. Clients keep their connections to the relay.
        net.sim.partition(ams.host, net.origin_host);
        let mut applied = 0;
        let mut unknown = 0;
        for _ in 0..120 {
            match routed.step().await {
                Outcome::Applied { .. } => applied += 1,
                Outcome::Unknown { .. } => unknown += 1,
                o => panic!("unexpected outcome {o:?}"),
            }
            other.step().await;
            routed.absorb();
            other.absorb();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status = ams.relay.status().await.unwrap();
        assert!(
            status.routes[0].path.starts_with("via:"),
            "re-routed through a peer: {status:?}"
        );
        assert!(status.origins[0].up, "link up through the peer");
        let st = routed.client.stats();
        assert_eq!(st.reconnects, 0, "the client never noticed: {st:?}");
        assert_eq!(st.order.resyncs, 0, "no gap needed a keyframe");
        assert!(
            unknown <= 1,
            "at most the action in flight at the cut: {unknown}"
        );
        assert!(applied >= 100, "{applied} applied");
        assert_exactly_once(&routed.seen);
        assert!(routed.moves_seen > 100, "saw {} moves", routed.moves_seen);
        // The world channel went on without a hole: the routed player saw the
        // other player's moves made during the partition.
        let forwarded: i64 = net
            .relays
            .iter()
            .skip(1)
            .map(|r| r.metrics.forwarded_links.get())
            .sum();
        assert_eq!(forwarded, 1, "one peer forwards amsterdam's link");

        // Heal: the direct path comes back after the hysteresis hold.
        net.sim.heal(ams.host, net.origin_host);
        tokio::time::sleep(Duration::from_secs(8)).await;
        for _ in 0..20 {
            assert!(matches!(routed.step().await, Outcome::Applied { .. }));
            routed.absorb();
        }
        let status = ams.relay.status().await.unwrap();
        assert_eq!(status.routes[0].path, "direct:1", "{status:?}");
        assert_exactly_once(&routed.seen);
        assert_eq!(routed.client.stats().reconnects, 0);
    });
}

#[test]
fn critical_events_keep_their_latency_while_bulk_saturates_the_link() {
    use skylane_netsim::LinkPatch;
    use skylane_origin::ArenaAction;

    run(|| async {
        let net = Net::start(NetOptions::default());
        let ams = net.relays[0].clone();
        let (vhost, b) = net.client_builder("paris", "viewer");
        let viewer = b.relays([ams.addr]).connect().await.unwrap();
        let (_, b) = net.client_builder("paris", "marker");
        let mut marker = Walker::new(b.relays([ams.addr]).connect().await.unwrap(), "marker");
        let mut sprayers = Vec::new();
        for i in 0..8 {
            let name = format!("sprayer{i}");
            let (_, b) = net.client_builder("paris", &name);
            sprayers.push(Walker::new(
                b.relays([ams.addr]).connect().await.unwrap(),
                &name,
            ));
        }
        marker.wait_spawn().await;
        for s in &mut sprayers {
            s.wait_spawn().await;
        }
        // The viewer reads its events as they arrive and times each marker.
        let (viewed, reader) = watch_marks(viewer);
        // The relay → viewer path: 5 Mbit/s with a shallow queue (6 ms at line rate,
        // about three full packets).
        net.sim.patch_link(
            ams.host,
            vhost,
            LinkPatch {
                bandwidth_bps: Some(Some(5_000_000)),
                queue_budget: Some(Duration::from_millis(6)),
                ..LinkPatch::default()
            },
        );
        let mark = |phase: f32| ArenaAction::Mark { x: phase, y: 1.0 }.encode();
        // Phase 1: markers alone, 10 per second for 4 s.
        for _ in 0..40 {
            marker.client.send(EventClass::Critical, mark(1.0)).unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Phase 2: eight sprayers each send 12 KB ten times a second (about 8 Mbit/s
        // towards the viewer, 1.6 times the link) for 6 s, markers continuing.
        let spray = ArenaAction::Spray {
            data: vec![7; 12 * 1024],
        }
        .encode();
        for _ in 0..60 {
            marker.client.send(EventClass::Critical, mark(2.0)).unwrap();
            for s in &sprayers {
                s.client.send(EventClass::Bulk, spray.clone()).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let during = viewed.lock().unwrap().spray_bytes;
        // Let the bulk backlog drain.
        tokio::time::sleep(Duration::from_secs(15)).await;
        let v = std::mem::take(&mut *viewed.lock().unwrap());
        reader.abort();

        let p99 = |phase: u32| {
            let mut l: Vec<u64> = v
                .marks
                .iter()
                .filter(|(p, _)| *p == phase)
                .map(|(_, l)| *l)
                .collect();
            l.sort_unstable();
            (l.len(), l[(l.len() * 99).div_ceil(100) - 1])
        };
        let (n1, quiet) = p99(1);
        let (n2, loaded) = p99(2);
        eprintln!(
            "critical p99: unloaded {quiet} us, under bulk {loaded} us; sprays {} ({} bytes, {during} during the load)",
            v.sprays, v.spray_bytes
        );
        assert_eq!((n1, n2), (40, 60), "every critical marker arrived");
        assert_eq!(
            v.sprays, 480,
            "every spray arrived in the end (bulk is reliable)"
        );
        assert!(
            during < 480 * 12 * 1024 * 3 / 4,
            "the link was saturated: only {during} bytes of sprays got through during the load"
        );
        assert!(
            loaded <= 2 * quiet,
            "critical p99 under bulk {loaded} us vs {quiet} us unloaded"
        );
        assert_exactly_once(&v.seen);
        assert_eq!(ams.metrics.slow_clients.get(), 0, "nobody was cut off");
    });
}

/// Movement to a client whose link cannot keep up is latest-wins state: stale
/// positions are superseded at the relay instead of queueing, so what the
/// viewer gets stays fresh (never a backlog of old positions), the chained
/// events stay exactly-once with no channel skipped, nobody is cut off, and
/// once the link recovers the viewer holds every mover's newest position.
#[test]
fn movement_behind_a_slow_link_stays_fresh_and_converges_to_the_newest() {
    use skylane_client::MovementUpdate;
    use skylane_netsim::LinkPatch;
    use std::sync::{Arc, Mutex};

    run(|| async {
        let net = Net::start(NetOptions::default());
        let ams = net.relays[0].clone();
        let (vhost, b) = net.client_builder("paris", "viewer");
        let mut viewer = b.relays([ams.addr]).connect().await.unwrap();
        let mut movers = Vec::new();
        for i in 0..8 {
            let name = format!("mover{i}");
            let (_, b) = net.client_builder("paris", &name);
            let mut w = Walker::new(b.relays([ams.addr]).connect().await.unwrap(), &name);
            w.wait_spawn().await;
            movers.push(w);
        }
        // Every movement update with its age at receipt (deployment clock).
        let seen = Arc::new(Mutex::new((
            Vec::new(),
            Vec::<(MovementUpdate, u64)>::new(),
        )));
        let stop = Arc::new(tokio::sync::Notify::new());
        let reader = {
            let (seen, stop) = (seen.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    let ev = tokio::select! {
                        () = stop.notified() => break,
                        ev = viewer.next_event() => ev,
                    };
                    let Some(ev) = ev else { break };
                    let now = viewer.server_time_us().unwrap_or(0);
                    let mut s = seen.lock().unwrap();
                    match ev {
                        ClientEvent::Subscriptions { added, .. } => {
                            s.0.extend(added.iter().map(|a| Seen::Start(a.channel, a.seq)));
                        }
                        ClientEvent::Event(e) => s.0.push(Seen::Event(e.channel, e.seq)),
                        ClientEvent::Movement(u) => {
                            let age = now.saturating_sub(u.origin_time_us);
                            s.1.push((u, age));
                        }
                        _ => {}
                    }
                }
                viewer
            })
        };
        // The relay -> viewer path drops to 40 kbit/s: less than the movement the
        // viewer would be sent if every state went.
        let link = |bandwidth_bps| LinkPatch {
            bandwidth_bps: Some(bandwidth_bps),
            queue_budget: Some(Duration::from_millis(50)),
            ..LinkPatch::default()
        };
        net.sim.patch_link(ams.host, vhost, link(Some(40_000)));
        // Eight movers step at 30 Hz for 3 s.
        let mut sent = 0;
        for _ in 0..90 {
            for m in &mut movers {
                m.absorb();
                let a = m.step_action();
                m.client.send(EventClass::Movement, a.encode()).unwrap();
                sent += 1;
            }
            tokio::time::sleep(Duration::from_millis(33)).await;
        }
        let (during, ages) = {
            let s = seen.lock().unwrap();
            let mut ages: Vec<u64> = s.1.iter().map(|(_, a)| *a).collect();
            ages.sort_unstable();
            (s.1.len(), ages)
        };
        // The link recovers; the newest states go out.
        net.sim.patch_link(ams.host, vhost, link(None));
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.notify_one();
        let viewer = reader.await.unwrap();
        let (seen, _) = std::mem::take(&mut *seen.lock().unwrap());

        let st = viewer.stats();
        let p99 = ages.get(ages.len() * 99 / 100).copied().unwrap_or(0);
        eprintln!(
            "viewer: {during} of {sent} movement states during the squeeze (age p50 {} us, p99 {p99} us), order {:?}",
            ages.get(ages.len() / 2).copied().unwrap_or(0),
            st.order
        );
        assert_exactly_once(&seen);
        assert_eq!(st.order.resyncs, 0, "no channel was skipped over");
        assert_eq!(st.order.skipped_events, 0);
        assert!(
            during > 50,
            "movement kept flowing through the squeeze: {during}"
        );
        assert!(
            during < sent,
            "stale states were superseded, not all queued"
        );
        // Fresh: no backlog of old positions (the link's queue holds 50 ms; a
        // state is never more than a few ticks old when it arrives).
        assert!(p99 < 600_000, "movement age p99 {p99} us under congestion");
        for m in &movers {
            let t = viewer
                .entity(m.avatar.unwrap())
                .expect("every mover is tracked");
            let (x, y) = match skylane_origin::ArenaEvent::decode(&t.latest.body) {
                Some(skylane_origin::ArenaEvent::Moved { x, y, .. }) => (x, y),
                other => panic!("not a move: {other:?}"),
            };
            assert_eq!((x, y), m.pos, "{} converged to its newest position", m.name);
        }
        assert_eq!(ams.metrics.slow_clients.get(), 0, "nobody was cut off");
    });
}

#[test]
fn a_resume_while_the_old_connection_lingers_takes_the_session_over() {
    run(|| async {
        let net = Net::start(NetOptions::default());
        let relay = net.relays[0].addr;
        let hello = |resume| {
            ClientMsg::Hello(Hello {
                version: PROTOCOL_VERSION,
                token: net.token("twice", Role::Player),
                world: WORLD,
                resume,
                last_seen: Vec::new(),
            })
        };
        let mut old = RawConn::connect(&net, "paris", "old", relay).await;
        old.send(&hello(None)).await;
        let Some(ServerMsg::Welcome(first)) = old.recv().await else {
            panic!("no welcome");
        };
        // The client gave up on `old` (say its path stalled) but the relay still
        // holds it: the resume must win, not be refused.
        let mut new = RawConn::connect(&net, "paris", "new", relay).await;
        new.send(&hello(Some(first.resume_ticket.clone()))).await;
        let Some(ServerMsg::Welcome(second)) = new.recv().await else {
            panic!("resume refused");
        };
        assert_eq!(second.session, first.session);
        let closed = tokio::time::timeout(Duration::from_secs(2), old.conn.closed())
            .await
            .expect("the stale connection is closed");
        assert!(
            matches!(closed, quinn::ConnectionError::ApplicationClosed(ref c) if c.error_code == 5u32.into()),
            "{closed:?}"
        );
        assert_eq!(net.relays[0].metrics.takeovers.get(), 1);
        // The session lives on the new connection only.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let status = net.relays[0].relay.status().await.unwrap();
        assert_eq!(status.sessions_connected, 1);
        assert_eq!(
            status.sessions_detached, 0,
            "one session, not a detached copy"
        );
    });
}

/// A dead origin link is noticed in about a second (idle timeout 1.2 s with
/// 250 ms keep-alives; it was 5 s), and the link is back within about a
/// second of the origin's return (reconnect waits capped at 1 s).
#[test]
fn a_dead_origin_link_is_noticed_and_restored_within_seconds() {
    run(|| async {
        let net = Net::start(NetOptions {
            relays: vec![(1, "amsterdam")],
            ..NetOptions::default()
        });
        let relay = &net.relays[0];
        let up = || async { relay.relay.status().await.unwrap().origins[0].up };
        let t = tokio::time::Instant::now();
        while !up().await {
            assert!(t.elapsed() < Duration::from_secs(5), "link never came up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        net.sim.partition(relay.host, net.origin_host);
        let cut = tokio::time::Instant::now();
        while up().await {
            assert!(
                cut.elapsed() < Duration::from_secs(2),
                "the dead link was not noticed within 2 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let noticed = cut.elapsed();
        tokio::time::sleep(Duration::from_secs(3) - noticed).await;
        net.sim.heal(relay.host, net.origin_host);
        let healed = tokio::time::Instant::now();
        while !up().await {
            assert!(
                healed.elapsed() < Duration::from_secs(2),
                "the link was not back within 2 s of the origin's return"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(noticed >= Duration::from_millis(800), "{noticed:?}");
    });
}

/// A client away longer than the grace period comes back to a session the
/// origin had dropped: it is joined afresh, and the client is told exactly
/// which events it lost (before, the channels silently restarted and every
/// report said nothing was lost).
#[test]
fn a_resume_after_the_grace_period_reports_what_was_lost() {
    run(|| async {
        let net = Net::start(NetOptions::default());
        let relay = &net.relays[0];
        let (host, mut away) = quick_walker(&net, relay.addr, "away").await;
        let session = away.client.session();
        net.sim.partition(host, relay.host);
        tokio::time::sleep(Duration::from_secs(5)).await;
        // Someone joins while it is away: a Spawned event on the world channel.
        let mut late = walker(&net, relay.addr, "late").await;
        // Past the relay's and the origin's 30 s grace.
        tokio::time::sleep(Duration::from_secs(40)).await;
        net.sim.heal(host, relay.host);
        let mut skipped = None;
        for _ in 0..200 {
            for ev in away.absorb() {
                if let ClientEvent::ResumeIncomplete { skipped: s } = ev {
                    skipped = Some(s);
                }
            }
            if skipped.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            late.absorb();
        }
        let skipped = skipped.expect("the client was told its resume was incomplete");
        assert_eq!(
            away.client.session(),
            session,
            "same session id, joined afresh"
        );
        let world = skipped
            .iter()
            .find(|r| r.channel == skylane_proto::ChannelId::World)
            .expect("the world channel moved on while it was away");
        assert!(!world.is_empty(), "{world:?}");
        let st = away.client.stats();
        assert_eq!(st.resumes_incomplete, 1, "{st:?}");
        assert!(st.events_lost_on_resume >= world.len(), "{st:?}");
        assert_eq!(relay.metrics.resumes_incomplete.get(), 1);
    });
}

/// A client away 20 s (inside the 30 s grace) gets exactly what it missed: the
/// origin's history is sized from the grace (it held 10 s, and a 20 s absence
/// resumed through a keyframe that skipped hundreds of events).
#[test]
fn a_twenty_second_absence_inside_the_grace_resumes_exactly() {
    run(|| async {
        let net = Net::start(NetOptions::default());
        let relay = net.relays[0].addr;
        let (host, mut away) = quick_walker(&net, relay, "away").await;
        let mut mover = walker(&net, relay, "mover").await;
        net.sim.partition(host, net.relays[0].host);
        net.sim.schedule(
            Duration::from_secs(20),
            Fault::Heal {
                a: host.into(),
                b: net.relays[0].host.into(),
            },
        );
        // The mover keeps the world busy for the whole absence and after it.
        for _ in 0..(24_000 / 40) {
            mover.step().await;
            mover.absorb();
            away.absorb();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        away.absorb();
        mover.absorb();
        let st = away.client.stats();
        assert!(st.reconnects >= 1, "{st:?}");
        assert_eq!(st.order.resyncs, 0, "no keyframe was needed: {st:?}");
        assert_eq!(st.resumes_incomplete, 0, "{st:?}");
        assert_exactly_once(&away.seen);
        assert_same_world_events(&away, &mover);
    });
}

/// A flooder cut by the edge guard cannot come straight back for a fresh
/// burst: its subject is refused at hello (its SDK's resume included) for a
/// cool-down (10 s), then let in, and cut again it cools down twice as long.
#[test]
fn a_subject_cut_at_the_edge_cools_down_longer_each_time() {
    run(|| async {
        let net = Net::start(NetOptions {
            relays: vec![(1, "amsterdam")],
            ..NetOptions::default()
        });
        let relay = net.relays[0].addr;
        let m = &net.relays[0].metrics;
        let flood = async |cuts: u64| {
            let (_, b) = net.client_builder("paris", "flooder");
            let c = b.relays([relay]).connect().await.expect("let in");
            for _ in 0..200 {
                if m.edge_disconnects.get() >= cuts {
                    break;
                }
                for _ in 0..50 {
                    let _ = c.send(EventClass::Chat, vec![0u8; 200].into());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(m.edge_disconnects.get(), cuts, "cut");
            c
        };
        let refused = async || {
            let (_, b) = net.client_builder("paris", "flooder");
            match b.relays([relay]).connect().await {
                Err(skylane_client::ClientError::Refused {
                    code: RefusalCode::Sanctioned,
                    reason,
                }) => Some(reason),
                Err(e) => panic!("{e:?}"),
                Ok(_) => None,
            }
        };
        let cut_at = tokio::time::Instant::now();
        let first = flood(1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let reason = refused().await.expect("refused while cooling down");
        assert!(reason.contains("violations"), "{reason}");
        // Its own SDK's reconnects are refused too: no fresh burst.
        assert!(m.edge_cooldown_refusals.get() >= 1);
        drop(first);
        // Another player is not affected.
        let (_, b) = net.client_builder("paris", "bystander");
        b.relays([relay])
            .connect()
            .await
            .expect("others are let in");
        tokio::time::sleep_until(cut_at + Duration::from_secs(11)).await;
        // Cooled down: let in; cut again: 20 s this time.
        let _second = flood(2).await;
        let cut_again = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_secs(15)).await;
        assert!(refused().await.is_some(), "still cooling down after 15 s");
        tokio::time::sleep_until(cut_again + Duration::from_secs(21)).await;
        assert!(refused().await.is_none(), "let in after 20 s");
    });
}
