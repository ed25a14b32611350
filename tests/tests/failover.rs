//! Replicated worlds over netsim: a tic-tac-toe room's primary streams its
//! log to a standby origin over `skylane-repl/2`. Two faults:
//! * the primary dies (cut off from the network, its lease no longer renewed);
//! * the primary loses the control plane but not the relays: it fences itself
//!   (no tick, no output) before its lease can lapse, and steps down when it
//!   reaches the control plane again.
//!
//! Either way the standby takes the room over under a higher epoch, the relay
//! moves the players' sessions to it, and the game goes on from exactly where it
//! was: no acknowledged move lost, no event missed or repeated on any channel.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use skylane_client::{Client, ClientEvent, Spectator};
use skylane_control::{ControlPlane, Embedded, PlacementHints, SharedControl, WorldSpec};
use skylane_netsim::{run, Side};
use skylane_origin::{
    ClusterAgent, ClusterNode, Games, OriginHandle, OriginServer, TttAction, TttEvent,
};
use skylane_proto::ed25519_dalek::VerifyingKey;
use skylane_proto::{
    BandwidthMode, ChainSigner, ChannelId, EventClass, Outcome, Role, SpectatorFilter, WorldId,
    WorldPhase,
};
use skylane_tests::{CutControl, Net, NetOptions, OriginNode};

const TTL: Duration = Duration::from_secs(3);

fn node(id: &str, addr: std::net::SocketAddr, net: &Net) -> ClusterNode {
    net.cluster_node(id, addr, TTL)
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

/// A player trusting the origins' chain key and their attestation keys.
async fn player(net: &Net, name: &str, world: WorldId, standbys: &[VerifyingKey]) -> Client {
    let (_, b) = net.client_builder("paris", name);
    let b = standbys.iter().fold(b, |b, k| b.cosigner_key(*k));
    b.token(net.token_for(name, Role::Player, vec![world]))
        .world(world)
        .relays([net.relays[0].addr])
        .connect()
        .await
        .expect("player joins")
}

/// A live spectator of the room, through the players' relay, once its first
/// frame arrived (the feed runs on the primary), reading its feed in the
/// background until the game is over: the game's events it saw
/// (frames checked against the origins' key by the SDK, or it stops), and
/// how many frames it got and how many of them were signed.
async fn spectator(net: &Net, w: WorldId) -> tokio::task::JoinHandle<(Vec<TttEvent>, u64, u64)> {
    let (_, b) = net.builder_as("paris", "sam", Role::Spectator);
    let b = b
        .token(net.token_for("sam", Role::Spectator, vec![w]))
        .world(w)
        .relays([net.relays[0].addr]);
    let mut s = Spectator::connect(
        b,
        SpectatorFilter::all(),
        Duration::ZERO,
        BandwidthMode::Full,
    )
    .await
    .expect("spectator joins");
    let (first_tx, first) = tokio::sync::oneshot::channel();
    let mut first_tx = Some(first_tx);
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        while !seen.iter().any(|e| matches!(e, TttEvent::Over { .. })) {
            let f = tokio::time::timeout(Duration::from_secs(60), s.next_frame())
                .await
                .unwrap_or_else(|_| panic!("the feed went quiet; saw {seen:?}"))
                .expect("a feed frame");
            if let Some(tx) = first_tx.take() {
                let _ = tx.send(());
            }
            if !f.keyframe {
                seen.extend(
                    f.events
                        .iter()
                        .filter_map(|e| postcard::from_bytes::<TttEvent>(&e.payload).ok()),
                );
            }
        }
        let st = s.client().stats();
        (seen, st.spectator_frames, st.spectator_frames_verified)
    });
    tokio::time::timeout(Duration::from_secs(20), first)
        .await
        .expect("the feed starts in time")
        .expect("the spectator's first frame");
    task
}

/// The spectator saw the moves made after the room changed owner, and the
/// end, from signed frames.
async fn watched_to_the_end(watch: tokio::task::JoinHandle<(Vec<TttEvent>, u64, u64)>) {
    let (seen, frames, verified) = watch.await.expect("spectator task");
    let cells: Vec<u8> = seen
        .iter()
        .filter_map(|e| match e {
            TttEvent::Placed { cell, .. } => Some(*cell),
            _ => None,
        })
        .collect();
    for cell in [1, 4, 2] {
        assert!(cells.contains(&cell), "cell {cell} not seen: {seen:?}");
    }
    assert!(
        seen.iter()
            .any(|e| matches!(e, TttEvent::Over { winner: Some(w), .. } if w.as_str() == "xavier")),
        "{seen:?}"
    );
    assert_eq!(verified, frames, "every frame signed by an owner");
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
    /// Keyframes that jumped past events this client never saw.
    skips: usize,
    incomplete: usize,
    errors: Vec<String>,
    epochs: Vec<u64>,
    ended: Option<Option<String>>,
    log: Vec<String>,
}

impl Seen {
    fn take(&mut self, c: &mut Client) {
        while let Some(e) = c.try_next_event() {
            self.note(e);
        }
    }

    fn note(&mut self, e: ClientEvent) {
        match e {
            ClientEvent::Event(ev) => {
                self.log.push(format!(
                    "event {} seq {} tick {}",
                    ev.channel, ev.seq, ev.tick
                ));
                self.seqs.entry(ev.channel).or_default().push(ev.seq)
            }
            ClientEvent::Keyframe(k) => {
                self.log.push(format!(
                    "keyframe {} seq {} tick {}",
                    k.channel, k.seq, k.tick
                ));
                // A keyframe past the last event seen skips events: a resync.
                let last = self.seqs.get(&k.channel).and_then(|s| s.last());
                if last.is_some_and(|l| k.seq > *l) {
                    self.skips += 1;
                }
            }
            ClientEvent::ResumeIncomplete { .. } => self.incomplete += 1,
            ClientEvent::Error(e) => self.errors.push(e.to_string()),
            ClientEvent::World(ws) => {
                self.log
                    .push(format!("world {:?} epoch {}", ws.phase, ws.epoch));
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

/// Two origins, a relay, a tic-tac-toe room with one standby, two players
/// in it who each made one move (acknowledged, so re-executed elsewhere).
struct Room {
    net: Net,
    b: OriginNode,
    /// Each origin's own access to the control plane (cut to partition it).
    access: HashMap<String, CutControl>,
    agents: HashMap<String, ClusterAgent>,
    w: WorldId,
    primary: String,
    primary_h: OriginHandle,
    standby_h: OriginHandle,
    primary_host: skylane_netsim::HostId,
    x: Client,
    o: Client,
    sx: Seen,
    so: Seen,
    epoch: u64,
    events_before: usize,
}

async fn room() -> Room {
    let mut net = Net::start(NetOptions {
        relays: vec![(1, "amsterdam")],
        ..NetOptions::default()
    });
    let control: SharedControl = Arc::new(Embedded::new());
    let signer = net.origin_signer();
    let mut access = HashMap::new();
    let mut agents = HashMap::new();
    let a_node = node("origin-1", net.origin.local_addr(), &net);
    let cut = CutControl::new(control.clone());
    let shared: SharedControl = Arc::new(cut.clone());
    agents.insert(
        "origin-1".to_string(),
        join(&mut net.origin, &shared, a_node, signer.same_key()).await,
    );
    access.insert("origin-1".to_string(), cut);
    let mut b = net.add_origin("origin-b", "frankfurt");
    let b_node = node("origin-2", b.addr, &net);
    let cut = CutControl::new(control.clone());
    let shared: SharedControl = Arc::new(cut.clone());
    agents.insert(
        "origin-2".to_string(),
        join(&mut b.server, &shared, b_node, signer).await,
    );
    access.insert("origin-2".to_string(), cut);
    net.follow(&control, TTL).await;

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
    let primary = rec.placed_on.clone();
    assert_eq!(rec.standbys.len(), 1, "one standby chosen");
    assert_ne!(rec.standbys[0], primary, "never the primary itself");
    let (primary_h, standby_h, primary_host) = if primary == "origin-1" {
        (net.origin.handle(), b.server.handle(), net.origin_host)
    } else {
        (b.server.handle(), net.origin.handle(), b.host)
    };

    let keys: Vec<VerifyingKey> = agents.values().map(ClusterAgent::attestation_key).collect();
    let mut x = player(&net, "xavier", w, &keys).await;
    let mut o = player(&net, "olga", w, &keys).await;
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
    sx.take(&mut x);
    so.take(&mut o);
    let events_before: usize = sx.seqs.values().map(Vec::len).sum();
    assert!(events_before >= 2, "both moves seen as events: {sx:?}");
    // Checkpoints left the primary co-signed by the standby that re-executed
    // them, and the players checked both signatures.
    for c in [&x, &o] {
        let st = c.stats();
        assert!(
            st.attested_checkpoints >= 1,
            "two servers attested the events: {} attested, {} not",
            st.attested_checkpoints,
            st.unattested_checkpoints
        );
    }
    Room {
        net,
        b,
        access,
        agents,
        w,
        primary,
        primary_h,
        standby_h,
        primary_host,
        x,
        o,
        sx,
        so,
        epoch: before.epoch,
        events_before,
    }
}

impl Room {
    /// Waits for the standby to own the room and both players to hear of it;
    /// returns the time from `since` to the first player's news.
    async fn taken_over(&mut self, since: tokio::time::Instant) -> Duration {
        let (w, old) = (self.w, self.epoch);
        until("the standby owns the room", async || {
            self.standby_h
                .world_status(w)
                .await
                .is_some_and(|s| s.epoch > old)
        })
        .await;
        let mut first = None;
        until("the players see the new owner", async || {
            self.sx.take(&mut self.x);
            self.so.take(&mut self.o);
            if first.is_none() && self.sx.epochs.last().is_some_and(|e| *e > old) {
                first = Some(since.elapsed());
            }
            first.is_some() && self.so.epochs.last().is_some_and(|e| *e > old)
        })
        .await;
        first.expect("measured")
    }

    /// The game goes on where it was: X completes the top row only if both
    /// moves before the failover survived; nothing was lost, repeated or
    /// resynchronised.
    async fn finish(&mut self) {
        for (who, cell) in [(&self.x, 1), (&self.o, 4), (&self.x, 2)] {
            let r = place(who, cell).await;
            assert!(matches!(r, Outcome::Applied { .. }), "cell {cell}: {r:?}");
        }
        until("the room ends", async || {
            self.sx.take(&mut self.x);
            self.so.take(&mut self.o);
            self.sx.ended.is_some() && self.so.ended.is_some()
        })
        .await;
        let (sx, so) = (&self.sx, &self.so);
        assert_eq!(sx.ended, Some(Some("xavier".into())), "{sx:?}");
        let events_after: usize = sx.seqs.values().map(Vec::len).sum();
        assert!(
            events_after >= self.events_before + 3,
            "the new owner's events arrive: {} -> {events_after}",
            self.events_before
        );
        assert_eq!(sx.epochs.first(), Some(&self.epoch), "{:?}", sx.epochs);
        for (name, s) in [("xavier", sx), ("olga", so)] {
            assert_eq!(s.skips, 0, "{name} was resynchronised: {:?}", s.log);
        }
        for (name, s) in [("xavier", sx), ("olga", so)] {
            assert!(s.errors.is_empty(), "{name}: {:?}", s.errors);
            assert_eq!(s.incomplete, 0, "{name} was told of a loss");
            s.continuous().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

#[test]
fn a_standby_takes_a_room_over_when_its_primary_dies_and_nothing_is_lost() {
    run(|| async {
        let mut r = room().await;
        // The primary dies: cut off from everyone, its lease no longer renewed.
        r.net.sim.partition(r.primary_host, Side::Any);
        drop(r.agents.remove(&r.primary));
        let killed = tokio::time::Instant::now();
        let took = r.taken_over(killed).await;
        r.finish().await;
        println!(
            "failover: kill -> first state from the new owner in {took:?} (lease TTL {TTL:?})"
        );
        assert!(took <= TTL + Duration::from_secs(1), "took {took:?}");
        drop(r.b);
    });
}

#[test]
fn a_primary_cut_off_from_the_control_plane_fences_itself_and_steps_down() {
    run(|| async {
        let mut r = room().await;
        // The primary loses the control plane, not the relays.
        r.access[&r.primary].set_cut(true);
        let cut = tokio::time::Instant::now();
        // Before its lease can lapse it stops ticking: nothing more leaves it.
        tokio::time::sleep(TTL).await;
        let frozen = r
            .primary_h
            .world_status(r.w)
            .await
            .expect("still hosted")
            .tick;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let later = r.primary_h.world_status(r.w).await.map(|s| s.tick);
        assert!(
            later.is_none_or(|t| t == frozen),
            "a primary that cannot renew its lease writes nothing: tick {frozen} -> {later:?}"
        );
        r.taken_over(cut).await;
        // Healed, the old primary finds the room owned elsewhere and lets it go.
        r.access[&r.primary].set_cut(false);
        let (h, w) = (r.primary_h.clone(), r.w);
        until("the old primary steps down", async || {
            h.world_status(w).await.is_none()
        })
        .await;
        // The new owner names it as its replacement standby: replicated again.
        let new_owner = r.standby_h.clone();
        until("the room has a standby again", async || {
            standbys(&new_owner, w).await == 1
        })
        .await;
        r.finish().await;
        drop(r.b);
    });
}

#[test]
fn a_handover_moves_a_room_to_its_standby_without_waiting_for_a_lease() {
    run(|| async {
        let mut r = room().await;
        let watch = spectator(&r.net, r.w).await;
        // An operator drains the primary: ticks stop there, the standby
        // acknowledges the last one, the primary releases the room.
        let started = tokio::time::Instant::now();
        let tick = r.primary_h.handover(r.w).await.expect("handed over");
        assert!(tick > 0);
        r.access[&r.primary]
            .release(r.w, r.epoch)
            .await
            .expect("released");
        let took = r.taken_over(started).await;
        println!("handover: first state from the new owner after {took:?}");
        assert!(took < TTL, "no lease to wait for: {took:?}");
        let (h, w) = (r.primary_h.clone(), r.w);
        until("the old primary lets the room go", async || {
            h.world_status(w).await.is_none()
        })
        .await;
        r.finish().await;
        watched_to_the_end(watch).await;
        drop(r.b);
    });
}

/// A spectator watching the room live keeps watching when its primary dies:
/// the relay moves the room's feed to the new owner once that owner declares
/// itself (before, the audience stayed bound to the dead origin and went
/// quiet for good).
#[test]
fn a_spectator_keeps_watching_a_room_through_its_failover() {
    run(|| async {
        let mut r = room().await;
        let watch = spectator(&r.net, r.w).await;
        r.net.sim.partition(r.primary_host, Side::Any);
        drop(r.agents.remove(&r.primary));
        r.taken_over(tokio::time::Instant::now()).await;
        r.finish().await;
        watched_to_the_end(watch).await;
        drop(r.b);
    });
}

/// Two standbys, one of them behind: cut off from the primary, it stopped
/// re-executing while the other acknowledged two more moves. The primary
/// dies; both offer to take the room over and the one furthest along does,
/// so the moves only it acknowledged survive (the lagging one would have
/// lost them, and X would not complete the top row).
#[test]
fn of_two_standbys_the_one_furthest_along_takes_the_room_over() {
    run(|| async {
        let mut net = Net::start(NetOptions {
            relays: vec![(1, "amsterdam")],
            ..NetOptions::default()
        });
        let control: SharedControl = Arc::new(Embedded::new());
        let signer = net.origin_signer();
        let mut agents = HashMap::new();
        let a = node("origin-1", net.origin.local_addr(), &net);
        agents.insert(
            "origin-1".to_string(),
            join(&mut net.origin, &control, a, signer.same_key()).await,
        );
        let mut others = HashMap::new();
        for (id, host) in [("origin-2", "origin-b"), ("origin-3", "origin-c")] {
            let mut o = net.add_origin(host, "frankfurt");
            let n = node(id, o.addr, &net);
            agents.insert(
                id.into(),
                join(&mut o.server, &control, n, signer.same_key()).await,
            );
            others.insert(id.to_string(), o);
        }
        let handle = |id: &str| match others.get(id) {
            Some(o) => (o.server.handle(), o.host),
            None => (net.origin.handle(), net.origin_host),
        };
        net.follow(&control, TTL).await;
        let rec = control
            .create_world(
                WorldSpec {
                    standbys: Some(2),
                    ..WorldSpec::new("tictactoe", 10, 2)
                },
                &PlacementHints::default(),
            )
            .await
            .expect("placed");
        assert_eq!(rec.standbys.len(), 2, "{rec:?}");
        let w = rec.id;
        let (primary_h, primary_host) = handle(&rec.placed_on);
        // The lagging one: the smaller id, the first to see the owner gone
        // (it claimed first before standbys offered).
        let (behind, ahead) = if rec.standbys[0] < rec.standbys[1] {
            (rec.standbys[0].clone(), rec.standbys[1].clone())
        } else {
            (rec.standbys[1].clone(), rec.standbys[0].clone())
        };
        let (ahead_h, _) = handle(&ahead);
        let (behind_h, behind_host) = handle(&behind);

        let mut x = player(&net, "xavier", w, &[]).await;
        let mut o = player(&net, "olga", w, &[]).await;
        let (mut sx, mut so) = (Seen::default(), Seen::default());
        until("both standbys follow", async || {
            sx.take(&mut x);
            so.take(&mut o);
            standbys(&primary_h, w).await == 2
        })
        .await;
        until("the room plays", async || {
            primary_h
                .world_status(w)
                .await
                .is_some_and(|s| s.phase == "playing")
        })
        .await;
        assert!(matches!(place(&x, 0).await, Outcome::Applied { .. }));
        // One standby loses the primary; the other acknowledges two moves.
        net.sim.partition(behind_host, primary_host);
        let mut lagged = (0, 0);
        until("the primary lets the lagging standby go", async || {
            let s = primary_h.world_status(w).await.expect("status");
            lagged = (lagged.0.max(s.lag_ticks), lagged.1.max(s.lag_bytes));
            s.standbys.len() == 1
        })
        .await;
        assert!(
            lagged.0 > 0 && lagged.1 > 0,
            "the lag was reported: {lagged:?}"
        );
        until("no lag once the lagging standby is gone", async || {
            let s = primary_h.world_status(w).await.expect("status");
            s.lag_ticks == 0 && s.lag_bytes == 0
        })
        .await;
        assert!(matches!(place(&o, 3).await, Outcome::Applied { .. }));
        assert!(matches!(place(&x, 1).await, Outcome::Applied { .. }));
        let epoch = primary_h.world_status(w).await.expect("status").epoch;

        // The primary dies.
        net.sim.partition(primary_host, Side::Any);
        drop(agents.remove(&rec.placed_on));
        until("the standby furthest along owns the room", async || {
            ahead_h
                .world_status(w)
                .await
                .is_some_and(|s| s.epoch > epoch)
        })
        .await;
        let v = control.view().await.expect("view");
        assert_eq!(
            v.worlds[&w].owner.as_ref().map(|o| o.node.as_str()),
            Some(ahead.as_str())
        );
        assert!(
            behind_h.world_status(w).await.is_none(),
            "the lagging one serves nothing"
        );
        let offers = &v.worlds[&w].offers;
        assert!(
            offers[&ahead].tick > offers.get(&behind).map_or(0, |o| o.tick),
            "{offers:?}"
        );
        for (who, cell) in [(&o, 4), (&x, 2)] {
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
        for (name, s) in [("xavier", &sx), ("olga", &so)] {
            assert_eq!(s.incomplete, 0, "{name} was told of a loss");
            s.continuous().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        drop(others);
    });
}
