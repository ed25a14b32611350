//! Replicated worlds over netsim: a tic-tac-toe room's primary streams its
//! log to a standby origin over `skylane-repl/1`; the primary is cut off from
//! the network and its lease lapses; the standby takes the room over under a
//! higher epoch; the relay moves the players' sessions to it, and the game
//! goes on from exactly where it was: no acknowledged move lost, no event
//! missed or repeated on any channel.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use skylane_client::{Client, ClientEvent};
use skylane_control::{Embedded, NodeInfo, NodeKind, PlacementHints, SharedControl, WorldSpec};
use skylane_netsim::{run, Side};
use skylane_origin::{ClusterAgent, ClusterNode, Games, OriginHandle, OriginServer, TttAction};
use skylane_proto::{ChainSigner, ChannelId, EventClass, Outcome, Role, WorldId, WorldPhase};
use skylane_tests::{Net, NetOptions};

const TTL: Duration = Duration::from_secs(3);

fn node(id: &str, addr: std::net::SocketAddr, net: &Net) -> ClusterNode {
    ClusterNode {
        id: id.into(),
        addr: addr.to_string(),
        tls_name: "localhost".into(),
        admin: None,
        region: "eu".into(),
        capacity: 16,
        lease_ttl: TTL,
        removal_grace: Duration::from_secs(2),
        journal_dir: None,
        replication: Some(net.replication_client()),
    }
}

async fn join(
    server: &mut OriginServer,
    control: &SharedControl,
    node: ClusterNode,
    signer: ChainSigner,
) -> ClusterAgent {
    server
        .join_cluster(control.clone(), node, Games::builtin(), signer)
        .await
        .expect("origin joins")
}

async fn player(net: &Net, name: &str, world: WorldId) -> Client {
    let (_, b) = net.client_builder("paris", name);
    b.token(net.token_for(name, Role::Player, vec![world]))
        .world(world)
        .relays([net.relays[0].addr])
        .connect()
        .await
        .expect("player joins")
}

async fn place(c: &Client, cell: u8) -> Outcome {
    let payload = postcard::to_stdvec(&TttAction::Place { cell }).unwrap();
    tokio::time::timeout(
        Duration::from_secs(20),
        c.act(EventClass::State, vec![], payload.into()),
    )
    .await
    .expect("an answer in time")
    .expect("answer")
}

/// What a client saw: per channel, the sequence numbers of its events, in
/// order; and anything that would mean a loss.
#[derive(Default, Debug)]
struct Seen {
    seqs: HashMap<ChannelId, Vec<u64>>,
    keyframes: usize,
    incomplete: usize,
    errors: Vec<String>,
    epochs: Vec<u64>,
    ended: Option<Option<String>>,
}

impl Seen {
    fn take(&mut self, c: &mut Client) {
        while let Some(e) = c.try_next_event() {
            self.note(e);
        }
    }

    fn note(&mut self, e: ClientEvent) {
        match e {
            ClientEvent::Event(ev) => self.seqs.entry(ev.channel).or_default().push(ev.seq),
            ClientEvent::Keyframe(_) => self.keyframes += 1,
            ClientEvent::ResumeIncomplete { .. } => self.incomplete += 1,
            ClientEvent::Error(e) => self.errors.push(e.to_string()),
            ClientEvent::World(ws) => {
                if self.epochs.last() != Some(&ws.epoch) {
                    self.epochs.push(ws.epoch);
                }
                if ws.phase == WorldPhase::Ended {
                    self.ended = Some(ws.result.and_then(|r| r.winner));
                }
            }
            _ => {}
        }
    }

    /// Every channel's sequence is continuous from its first event: nothing
    /// missed, nothing twice.
    fn continuous(&self) -> Result<(), String> {
        for (c, s) in &self.seqs {
            for w in s.windows(2) {
                if w[1] != w[0] + 1 {
                    return Err(format!("{c}: {} then {}", w[0], w[1]));
                }
            }
        }
        Ok(())
    }
}

async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(60), async {
        while !f().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} in time"));
}

async fn standbys(h: &OriginHandle, w: WorldId) -> usize {
    h.world_status(w).await.map_or(0, |s| s.standbys.len())
}

#[test]
fn a_standby_takes_a_room_over_when_its_primary_dies_and_nothing_is_lost() {
    run(|| async {
        let mut net = Net::start(NetOptions {
            relays: vec![(1, "amsterdam")],
            ..NetOptions::default()
        });
        let control: SharedControl = Arc::new(Embedded::new());
        let a_node = node("origin-1", net.origin.local_addr(), &net);
        let signer = net.origin_signer();
        let mut agents = HashMap::new();
        agents.insert(
            "origin-1".to_string(),
            join(&mut net.origin, &control, a_node, signer.same_key()).await,
        );
        let mut b = net.add_origin("origin-b", "frankfurt");
        let b_node = node("origin-2", b.addr, &net);
        agents.insert(
            "origin-2".to_string(),
            join(&mut b.server, &control, b_node, signer).await,
        );
        let id = net.relays[0].relay.status().await.expect("relay up").relay;
        net.relays[0]
            .relay
            .follow(
                control.clone(),
                NodeInfo {
                    id: format!("relay-{id}"),
                    kind: NodeKind::Relay,
                    addr: net.relays[0].addr.to_string(),
                    tls_name: "localhost".into(),
                    admin: None,
                    region: "eu".into(),
                    coords: None,
                    capacity: 0,
                    games: Vec::new(),
                    load: 0,
                },
                TTL,
            )
            .await
            .expect("relay follows");

        let rec = control
            .create_world(
                WorldSpec {
                    standbys: Some(1),
                    ..WorldSpec::new("tictactoe", 10, 2)
                },
                &PlacementHints::default(),
            )
            .await
            .expect("placed");
        let w = rec.id;
        let (primary, standby) = (rec.placed_on.clone(), rec.standbys.clone());
        assert_eq!(standby.len(), 1, "one standby chosen");
        assert_ne!(standby[0], primary, "never the primary itself");
        let (primary_h, standby_h, primary_host) = if primary == "origin-1" {
            (net.origin.handle(), b.server.handle(), net.origin_host)
        } else {
            (b.server.handle(), net.origin.handle(), b.host)
        };

        let mut x = player(&net, "xavier", w).await;
        let mut o = player(&net, "olga", w).await;
        let (mut sx, mut so) = (Seen::default(), Seen::default());
        until("the room plays", async || {
            sx.take(&mut x);
            so.take(&mut o);
            primary_h
                .world_status(w)
                .await
                .is_some_and(|s| s.phase == "playing")
        })
        .await;
        until("the standby follows", async || {
            standbys(&primary_h, w).await == 1
        })
        .await;

        // Two moves, each acknowledged only once the standby re-executed it.
        assert!(matches!(place(&x, 0).await, Outcome::Applied { .. }));
        assert!(matches!(place(&o, 3).await, Outcome::Applied { .. }));
        let before = primary_h.world_status(w).await.expect("status");
        assert!(
            before.verified_tick > 0,
            "the standby verified ticks: {before:?}"
        );
        assert_eq!(before.diverged_at, None);

        // The primary dies: cut off from everyone, its lease no longer renewed.
        let old_epoch = before.epoch;
        sx.take(&mut x);
        let events_before: usize = sx.seqs.values().map(Vec::len).sum();
        assert!(events_before >= 2, "both moves seen as events: {sx:?}");
        let keyframes_before = (sx.keyframes, so.keyframes);
        net.sim.partition(primary_host, Side::Any);
        drop(agents.remove(&primary));
        let killed = tokio::time::Instant::now();

        until("the standby owns the room", async || {
            standby_h
                .world_status(w)
                .await
                .is_some_and(|s| s.epoch > old_epoch)
        })
        .await;
        // The game continues where it was: X completes the top row only if
        // both moves before the failover survived.
        let mut first_after = None;
        until("the players see the new owner", async || {
            sx.take(&mut x);
            so.take(&mut o);
            if first_after.is_none() && sx.epochs.last().is_some_and(|e| *e > old_epoch) {
                first_after = Some(killed.elapsed());
            }
            first_after.is_some() && so.epochs.last().is_some_and(|e| *e > old_epoch)
        })
        .await;
        for (who, cell) in [(&x, 1), (&o, 4), (&x, 2)] {
            let r = place(who, cell).await;
            assert!(matches!(r, Outcome::Applied { .. }), "cell {cell}: {r:?}");
        }
        until("the room ends", async || {
            sx.take(&mut x);
            so.take(&mut o);
            sx.ended.is_some() && so.ended.is_some()
        })
        .await;
        assert_eq!(sx.ended, Some(Some("xavier".into())), "{sx:?}");
        let events_after: usize = sx.seqs.values().map(Vec::len).sum();
        assert!(
            events_after >= events_before + 3,
            "the new owner's events arrive: {events_before} -> {events_after}"
        );
        assert_eq!(sx.epochs.first(), Some(&old_epoch), "{:?}", sx.epochs);
        assert_eq!(
            (sx.keyframes, so.keyframes),
            keyframes_before,
            "no resync after the failover: the new owner served what was missed from history"
        );
        for (name, s) in [("xavier", &sx), ("olga", &so)] {
            assert!(s.errors.is_empty(), "{name}: {:?}", s.errors);
            assert_eq!(s.incomplete, 0, "{name} was told of a loss");
            s.continuous().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let took = first_after.expect("measured");
        println!(
            "failover: kill -> first state from the new owner in {took:?} (lease TTL {TTL:?})"
        );
        assert!(took <= TTL + Duration::from_secs(2), "took {took:?}");
        drop(b);
    });
}
