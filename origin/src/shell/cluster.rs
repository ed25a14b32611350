//! The origin's control-plane agent: registers the origin under a lease, claims
//! the worlds placed on it (the claim's epoch fences them), builds their engines
//! from the game registry, publishes every lifecycle change and result, ends
//! worlds an operator ends, and removes ended worlds after a grace.
//!
//! The data path never waits on it. If the control plane goes away, worlds keep
//! running until the lease *could* have lapsed ([`LeaseClock`]), then pause;
//! a renewal resumes them, a lost lease means re-registering and re-claiming
//! under new epochs (or letting the world go if someone else owns it now).
//! Publications that fail are retried every second until they land.
//!
//! [`LeaseClock`]: skylane_control::LeaseClock

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use skylane_control::{
    Claim, ClusterView, ControlError, LeaseKeeper, NodeInfo, NodeKind, Offer, Phase, SharedControl,
    WorldRecord, WorldStatus,
};
use skylane_proto::ed25519_dalek::SigningKey;
use skylane_proto::{ChainSigner, WorldId, WorldPhase, WorldState};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::games::{Games, NewWorld};
use crate::metrics::OriginMetrics;

use super::mailbox::WorldEvent;
use super::replication::{Standby, StandbySpec};
use super::{OriginHandle, OriginServer};

/// How this origin presents itself to the cluster.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    /// Unique node id (`origin-eu-1`).
    pub id: String,
    /// The address relays reach it at (`ip:port`).
    pub addr: String,
    /// The name its certificate carries.
    pub tls_name: String,
    /// Its admin address, if any.
    pub admin: Option<String>,
    /// Region.
    pub region: String,
    /// Most worlds it hosts.
    pub capacity: u32,
    /// Where it is (latitude, longitude): a matchmaker's estimate for
    /// players that measured nothing.
    pub coords: Option<(f64, f64)>,
    /// Lease TTL: how long the cluster waits before its worlds can move.
    pub lease_ttl: Duration,
    /// How long an ended world stays (players read the result) before removal.
    pub removal_grace: Duration,
    /// Directory for the journals of worlds placed here (one redb file per
    /// world, `world-<id>.redb`; a standby's copy, which it keeps serving if
    /// promoted, `world-<id>-from-<epoch>.redb`); `None`: they run in memory.
    pub journal_dir: Option<std::path::PathBuf>,
    /// How this origin reaches a world's primary as its standby
    /// (`skylane_certs::repl_client_config` with the origin's identity);
    /// `None`: it never follows a world.
    pub replication: Option<quinn::ClientConfig>,
    /// How this origin reaches the owners of a zoned world's other zones
    /// (`skylane_certs::zone_client_config` with the origin's identity);
    /// `None`: its zones never hand entities over (avatars that cross wait
    /// at the border).
    pub zones: Option<quinn::ClientConfig>,
    /// The key it signs standby attestations and checkpoint co-signatures
    /// with (`OriginServer::attestation_key`); `None`: a fresh one.
    pub attestation: Option<SigningKey>,
}

/// The running agent; stops when dropped.
#[derive(Debug)]
pub struct ClusterAgent {
    task: JoinHandle<()>,
    attest: skylane_proto::ed25519_dalek::VerifyingKey,
}

impl ClusterAgent {
    /// The public key this origin signs standby attestations and checkpoint
    /// co-signatures with (clients that trust it check that two servers
    /// attested the events: `ClientBuilder::cosigner_key`).
    pub fn attestation_key(&self) -> skylane_proto::ed25519_dalek::VerifyingKey {
        self.attest
    }
}

impl Drop for ClusterAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OriginServer {
    /// Joins a control plane: registers, then hosts whatever is placed here.
    /// Fails only if the first registration fails (the caller retries); after
    /// that the agent rides out outages by itself.
    pub async fn join_cluster(
        &mut self,
        control: SharedControl,
        node: ClusterNode,
        games: Games,
        signer: ChainSigner,
    ) -> Result<ClusterAgent, ControlError> {
        if self.handle.inner.events.listened() {
            return Err(ControlError::Invalid(
                "this origin already joined a cluster".into(),
            ));
        }
        if let Some(dir) = &node.journal_dir {
            // Made here, once: otherwise every world placed on this origin
            // would fail to start for want of it.
            std::fs::create_dir_all(dir).map_err(|e| {
                ControlError::Invalid(format!("journal directory {}: {e}", dir.display()))
            })?;
        }
        let keeper = LeaseKeeper::start(control.clone(), node.lease_ttl).await?;
        // Fenced from the first lease on, not from its first renewal: a
        // process paused before then must not wake up writing.
        self.handle
            .set_write_deadline(Some(keeper.status().borrow().safe_until));
        let agent = Agent {
            endpoint: self.endpoint.clone(),
            attest: node
                .attestation
                .clone()
                .unwrap_or_else(|| SigningKey::from_bytes(&rand::random::<[u8; 32]>())),
            following: HashMap::new(),
            offered: HashMap::new(),
            suspect: BTreeMap::new(),
            control,
            handle: self.handle(),
            metrics: self.handle.inner.metrics.clone(),
            node,
            games,
            signer,
            hosted: BTreeMap::new(),
            ending: HashSet::new(),
            failed: HashSet::new(),
            removals: HashMap::new(),
            pending_bans: BTreeMap::new(),
            unpublished: BTreeMap::new(),
            keeper,
        };
        agent.register().await?;
        let view = agent.control.watch().await?;
        if let Some(client) = agent.node.zones.clone() {
            let links = super::zones::spawn_links(
                self.endpoint.clone(),
                client,
                view.clone(),
                self.handle.inner.metrics.clone(),
            );
            *self
                .handle
                .inner
                .zones
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(links);
        }
        let events = self
            .take_events()
            .ok_or_else(|| ControlError::Invalid("this origin already joined a cluster".into()))?;
        let attest = agent.attest.verifying_key();
        info!(node = %agent.node.id, key = %hex(attest.as_bytes()), "standby attestation key");
        let task = tokio::spawn(agent.run(view, events));
        Ok(ClusterAgent { task, attest })
    }
}

/// How long a standby whose owner lapsed waits for the other standbys'
/// offers before taking the world over as the best of those it saw.
const OFFER_WAIT: Duration = Duration::from_secs(1);

struct Agent {
    endpoint: quinn::Endpoint,
    /// This process's attestation key (standby acknowledgements, evidence).
    attest: SigningKey,
    /// Worlds followed here as a standby.
    following: HashMap<WorldId, Standby>,
    /// Offers posted to take worlds over whose owner lapsed, and since when.
    offered: HashMap<WorldId, (Offer, Instant)>,
    control: SharedControl,
    handle: OriginHandle,
    metrics: OriginMetrics,
    node: ClusterNode,
    games: Games,
    signer: ChainSigner,
    /// Worlds a standby disagreed with, and the first tick it did.
    suspect: BTreeMap<WorldId, u64>,
    /// Worlds hosted here, with the epoch each was claimed at.
    hosted: BTreeMap<WorldId, u64>,
    /// Worlds already told to end.
    ending: HashSet<WorldId>,
    /// Worlds that could not be built here (not retried).
    failed: HashSet<WorldId>,
    /// Ended worlds and when to remove them.
    removals: HashMap<WorldId, Instant>,
    /// Statuses not yet accepted by the control plane.
    unpublished: BTreeMap<WorldId, WorldStatus>,
    /// Sanctions not yet on the control plane's ban list (the longest per
    /// subject; bounded by [`MAX_PENDING_BANS`]).
    pending_bans: BTreeMap<String, skylane_control::Ban>,
    keeper: LeaseKeeper,
}

/// Sanctions kept for a retry while the control plane is unreachable.
const MAX_PENDING_BANS: usize = 10_000;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn phase(p: WorldPhase) -> Phase {
    match p {
        WorldPhase::Waiting => Phase::Waiting,
        WorldPhase::Playing => Phase::Playing,
        WorldPhase::Ended => Phase::Ended,
    }
}

impl Agent {
    fn info(&self) -> NodeInfo {
        NodeInfo {
            id: self.node.id.clone(),
            kind: NodeKind::Origin,
            addr: self.node.addr.clone(),
            tls_name: self.node.tls_name.clone(),
            admin: self.node.admin.clone(),
            region: self.node.region.clone(),
            coords: self.node.coords,
            capacity: self.node.capacity,
            games: self.games.names(),
            load: self.hosted.len() as u32,
            attestation_key: Some(hex(self.attest.verifying_key().as_bytes())),
            origin_rtt_ms: Default::default(),
        }
    }

    /// How this origin claims worlds.
    fn claim_as(&self) -> Claim {
        Claim {
            node: self.node.id.clone(),
            addr: self.node.addr.clone(),
            tls_name: self.node.tls_name.clone(),
        }
    }

    async fn register(&self) -> Result<(), ControlError> {
        self.control
            .register(&self.info(), self.keeper.lease())
            .await
    }

    fn failed_op(&self, what: &str, e: &ControlError) {
        OriginMetrics::count(&self.metrics.control_errors, e.label());
        warn!(node = %self.node.id, error = %e, "control plane: {what} failed");
    }

    async fn run(
        mut self,
        mut view: tokio::sync::watch::Receiver<ClusterView>,
        mut events: mpsc::UnboundedReceiver<WorldEvent>,
    ) {
        let mut lease = self.keeper.status();
        let mut retry = tokio::time::interval(Duration::from_secs(1));
        let mut generation = lease.borrow().generation;
        loop {
            tokio::select! {
                r = view.changed() => {
                    if r.is_err() { return }
                    let v = view.borrow_and_update().clone();
                    self.follow(&v).await;
                }
                e = events.recv() => match e {
                    Some(WorldEvent::Phase(ws)) => self.phase(ws).await,
                    Some(WorldEvent::Suspect { state, tick }) => {
                        warn!(world = %state.world, tick, "world suspect: a standby disagreed; publishing it");
                        self.suspect.insert(state.world, tick);
                        self.phase(state).await;
                    }
                    Some(WorldEvent::Sanction { subject, ban }) => self.sanction(subject, ban).await,
                    Some(WorldEvent::Stopped { world, error }) => {
                        if let Some(e) = error {
                            warn!(%world, error = %e, "world failed");
                        }
                    }
                    None => return,
                },
                r = lease.changed() => {
                    if r.is_err() { return }
                    let st = *lease.borrow_and_update();
                    if st.generation != generation {
                        // The old lease lapsed: the worlds may be owned
                        // elsewhere by now. They stay fenced until re-claimed;
                        // the ones that cannot be are let go first.
                        generation = st.generation;
                        self.reclaim().await;
                    }
                    self.handle.set_write_deadline(Some(st.safe_until));
                }
                _ = retry.tick() => {
                    self.retry().await;
                    let v = view.borrow().clone();
                    self.follow(&v).await;
                }
            }
        }
    }

    /// Applies the cluster view to this origin.
    async fn follow(&mut self, v: &ClusterView) {
        // A zoned world's own record is never claimed: its zones' are.
        for rec in v.worlds.values().filter(|r| !r.spec.is_zoned()) {
            if rec.placed_on == self.node.id
                && rec.owner.is_none()
                && rec.status.phase == Phase::Placed
                && !self.hosted.contains_key(&rec.id)
                && !self.failed.contains(&rec.id)
            {
                self.start(rec).await;
            }
            // A zone ends with its world (the operator ends the world).
            let world_ending = rec
                .spec
                .zone_of
                .and_then(|z| v.worlds.get(&z.world))
                .is_some_and(|w| w.ending);
            if (rec.ending || world_ending)
                && self.hosted.contains_key(&rec.id)
                && self.ending.insert(rec.id)
            {
                info!(world = %rec.id, "ending world at the control plane's request");
                self.handle.end_world(rec.id, "operator").await;
            }
        }
        self.follow_standbys(v).await;
        self.replace_standbys(v).await;
        let mut gone = Vec::new();
        for (&w, &epoch) in &self.hosted {
            match v.worlds.get(&w) {
                None => gone.push((w, "removed from the control plane")),
                Some(rec) => match &rec.owner {
                    Some(o) if o.node != self.node.id || o.epoch != epoch => {
                        gone.push((w, "owned elsewhere now"));
                    }
                    _ => {}
                },
            }
        }
        for (w, why) in gone {
            info!(world = %w, why, "world leaves this origin");
            self.drop_world(w).await;
        }
    }

    async fn start(&mut self, rec: &WorldRecord) {
        let who = self.claim_as();
        let epoch = match self.control.claim(rec.id, &who, self.keeper.lease()).await {
            Ok(e) => e,
            Err(ControlError::Owned { .. }) => return,
            Err(e) => return self.failed_op("claiming a world", &e),
        };
        let new = NewWorld {
            id: rec.id,
            spec: &rec.spec,
            now_us: self.handle.now_us(),
            signer: self.signer.same_key(),
            journal: self
                .node
                .journal_dir
                .as_ref()
                .map(|d| d.join(format!("world-{}.redb", rec.id.0))),
            snapshot: None,
        };
        let started = self
            .games
            .create(new)
            .map_err(|e| e.to_string())
            .and_then(|core| {
                self.handle
                    .add_world_as(core, epoch, rec.id, rec.standbys.len())
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = started {
            // Ended at once with the reason, so nobody waits for it.
            warn!(world = %rec.id, error = %e, "cannot run the world here");
            self.failed.insert(rec.id);
            let status = WorldStatus {
                phase: Phase::Ended,
                players: 0,
                result: Some(skylane_proto::WorldResult {
                    winner: None,
                    scores: Vec::new(),
                    reason: format!("failed: {e}"),
                }),
                epoch,
                suspect: None,
            };
            self.unpublished.insert(rec.id, status);
            self.retry().await;
            return;
        }
        info!(world = %rec.id, game = %rec.spec.game, epoch, "world started here");
        self.hosted.insert(rec.id, epoch);
        // Its first status: waiting, nobody in yet.
        self.unpublished.insert(
            rec.id,
            WorldStatus {
                phase: Phase::Waiting,
                players: 0,
                result: None,
                epoch,
                suspect: None,
            },
        );
        self.retry().await;
        if let Err(e) = self.register().await {
            self.failed_op("updating the load", &e);
        }
    }

    /// Worlds this origin is a standby of: follow their owner (again, when
    /// the owner changes); take over one whose owner's lease lapsed, if this
    /// standby holds its state; stop following worlds that ended or left.
    async fn follow_standbys(&mut self, v: &ClusterView) {
        let Some(client) = self.node.replication.clone() else {
            return;
        };
        let me = self.node.id.clone();
        let mut stop: Vec<WorldId> = self
            .following
            .keys()
            .filter(|w| {
                v.worlds
                    .get(w)
                    .is_none_or(|r| !r.standbys.contains(&me) || r.status.phase == Phase::Ended)
            })
            .copied()
            .collect();
        for rec in v.worlds.values() {
            if !rec.standbys.contains(&me)
                || rec.spec.is_zoned()
                || rec.status.phase == Phase::Ended
                || self.hosted.contains_key(&rec.id)
            {
                continue;
            }
            match &rec.owner {
                Some(o) if o.node != me => {
                    if self
                        .following
                        .get(&rec.id)
                        .is_some_and(|s| s.epoch == o.epoch)
                    {
                        continue;
                    }
                    let Ok(addr) = o.addr.parse() else { continue };
                    info!(world = %rec.id, primary = %o.node, epoch = o.epoch, "following as a standby");
                    let spec = StandbySpec {
                        world: rec.id,
                        spec: rec.spec.clone(),
                        node: me.clone(),
                        owner_addr: addr,
                        owner_tls_name: o.tls_name.clone(),
                        epoch: o.epoch,
                        endpoint: self.endpoint.clone(),
                        client: client.clone(),
                        games: self.games.clone(),
                        signer: self.signer.same_key(),
                        key: self.attest.clone(),
                        metrics: self.metrics.clone(),
                        journal_dir: self.node.journal_dir.clone(),
                        ledger: self.handle.inner.ledger.clone(),
                    };
                    if self
                        .following
                        .insert(rec.id, Standby::start(spec))
                        .is_none()
                    {
                        self.metrics.following.inc();
                    }
                }
                Some(_) => {}
                None if rec.status.phase == Phase::Placed
                    && !v.nodes.contains_key(&rec.placed_on)
                    && !self.failed.contains(&rec.id) =>
                {
                    // Placed on an origin that died before it started the
                    // world: nothing ran, so a standby starts it fresh.
                    info!(world = %rec.id, placed_on = %rec.placed_on, "the chosen origin is gone before starting the world: starting it here");
                    self.start(rec).await;
                    if self.hosted.contains_key(&rec.id) {
                        self.metrics.failovers.inc();
                    }
                }
                None => {
                    if self.should_take_over(rec, v).await {
                        self.take_over(rec).await;
                        stop.retain(|w| *w != rec.id);
                    }
                }
            }
        }
        for w in stop {
            self.offered.remove(&w);
            if self.following.remove(&w).is_some() {
                self.metrics.following.dec();
            }
        }
    }

    /// The owner of a world followed here is gone: offers to take it over (how
    /// far this standby re-executed) and says whether this one should, by
    /// [`WorldRecord::takeover`]: the standby furthest along, once every live
    /// standby offered or [`OFFER_WAIT`] passed; anyone after three times
    /// that (the best one is not claiming).
    async fn should_take_over(&mut self, rec: &WorldRecord, v: &ClusterView) -> bool {
        let Some(s) = self.following.get(&rec.id) else {
            return false;
        };
        let st = *s.state.borrow();
        if !st.started || st.diverged {
            return false;
        }
        let mine = Offer {
            epoch: s.epoch,
            tick: st.tick,
        };
        let posted = self.offered.get(&rec.id).copied();
        if posted.map(|(o, _)| o) != Some(mine) {
            let lease = self.keeper.lease();
            if let Err(e) = self.control.offer(rec.id, &self.node.id, mine, lease).await {
                self.failed_op("offering to take a world over", &e);
                return false;
            }
            let since = posted.map_or_else(Instant::now, |(_, t)| t);
            self.offered.insert(rec.id, (mine, since));
        }
        let waited = self
            .offered
            .get(&rec.id)
            .map_or(Duration::ZERO, |(_, t)| t.elapsed());
        let t = rec.takeover(v, mine.epoch);
        match &t.best {
            Some((n, _)) if *n == self.node.id => t.complete || waited >= OFFER_WAIT,
            Some((n, best)) if waited >= 3 * OFFER_WAIT => {
                warn!(world = %rec.id, best = %n, best_tick = best.tick, tick = mine.tick, "the standby furthest along is not taking over: claiming");
                true
            }
            _ => false,
        }
    }

    /// Worlds this origin owns whose standbys are gone (their node's lease
    /// lapsed) or include itself (it was the standby that took over): it names
    /// replacements, so the world is replicated again.
    async fn replace_standbys(&mut self, v: &ClusterView) {
        let me = self.node.id.clone();
        let mut changes = Vec::new();
        for (&w, &epoch) in &self.hosted {
            let Some(rec) = v.worlds.get(&w) else {
                continue;
            };
            if rec.status.phase == Phase::Ended
                || !rec
                    .owner
                    .as_ref()
                    .is_some_and(|o| o.node == me && o.epoch == epoch)
            {
                continue;
            }
            let want = rec.spec.standbys.unwrap_or(1) as usize;
            let mut live: Vec<String> = rec
                .standbys
                .iter()
                .filter(|n| **n != me && v.nodes.contains_key(*n))
                .cloned()
                .collect();
            if live.len() < want {
                let hints = skylane_control::PlacementHints {
                    exclude: live.clone(),
                    ..Default::default()
                };
                let mut spec = rec.spec.clone();
                spec.standbys = Some((want - live.len()) as u32);
                live.extend(skylane_control::place_standbys(&spec, v, &hints, &me));
            }
            if live != rec.standbys {
                changes.push((w, epoch, live));
            }
        }
        for (w, epoch, standbys) in changes {
            info!(world = %w, ?standbys, "naming the world's standbys");
            if let Err(e) = self.control.set_standbys(w, epoch, standbys).await {
                self.failed_op("naming standbys", &e);
            }
        }
    }

    /// The owner of a world this origin follows is gone: claim it under a
    /// higher epoch and serve it from the follower's engine (relays re-open
    /// their sessions here from their cursors).
    async fn take_over(&mut self, rec: &WorldRecord) {
        self.offered.remove(&rec.id);
        let who = self.claim_as();
        let epoch = match self.control.claim(rec.id, &who, self.keeper.lease()).await {
            Ok(e) => e,
            Err(ControlError::Owned { .. }) => return,
            Err(e) => return self.failed_op("claiming a world to take it over", &e),
        };
        let Some(standby) = self.following.remove(&rec.id) else {
            return;
        };
        self.metrics.following.dec();
        let Some(follower) = standby.promote().await else {
            warn!(world = %rec.id, "claimed, but the standby holds no state to serve: releasing");
            let _ = self.control.release(rec.id, epoch).await;
            return;
        };
        let tick = follower.tick();
        let mut core = follower.into_core();
        // Ticks continue from now, not from the primary's last one.
        core.rebase(self.handle.now_us());
        // Its standbys are named anew (`replace_standbys`): none awaited.
        if let Err(e) = self.handle.add_world_as(core, epoch, rec.id, 0) {
            warn!(world = %rec.id, error = %e, "cannot serve the world taken over");
            let _ = self.control.release(rec.id, epoch).await;
            return;
        }
        self.metrics.failovers.inc();
        info!(world = %rec.id, epoch, tick, "world taken over from its failed primary");
        self.hosted.insert(rec.id, epoch);
        let ws = rec.status.clone();
        self.unpublished.insert(rec.id, WorldStatus { epoch, ..ws });
        self.retry().await;
        if let Err(e) = self.register().await {
            self.failed_op("updating the load", &e);
        }
    }

    /// Removes a world's record (already gone is fine).
    async fn remove_record(&mut self, w: WorldId) {
        match self.control.remove_world(w).await {
            Ok(()) | Err(ControlError::UnknownWorld(_)) => {}
            Err(e) => self.failed_op("removing a world", &e),
        }
    }

    async fn drop_world(&mut self, w: WorldId) {
        self.hosted.remove(&w);
        self.suspect.remove(&w);
        self.ending.remove(&w);
        self.removals.remove(&w);
        self.unpublished.remove(&w);
        if let Some(Err(e)) = self.handle.remove_world(w).await {
            warn!(world = %w, error = %e, "world stopped with an error");
        }
        if let Err(e) = self.register().await {
            self.failed_op("updating the load", &e);
        }
    }

    async fn phase(&mut self, ws: WorldState) {
        // The record it reports for (a zone's, for a zone of a zoned world).
        let host = ws.host;
        let Some(&epoch) = self.hosted.get(&host) else {
            return;
        };
        let status = WorldStatus {
            phase: phase(ws.phase),
            players: ws.players,
            result: ws.result.clone(),
            epoch,
            suspect: self.suspect.get(&host).copied(),
        };
        if ws.phase == WorldPhase::Ended {
            // From the end, not from the last player's leaving.
            self.removals
                .entry(host)
                .or_insert_with(|| Instant::now() + self.node.removal_grace);
        }
        self.unpublished.insert(host, status);
        self.retry().await;
    }

    /// Publishes what is pending and removes worlds whose grace is over.
    /// Puts a sanction on the control plane's ban list (kept for a retry
    /// when that fails; a longer ban already there is not shortened).
    async fn sanction(&mut self, subject: String, ban: skylane_control::Ban) {
        let longer = |b: &skylane_control::Ban| b.until >= ban.until;
        if self.pending_bans.get(&subject).is_some_and(longer) {
            return;
        }
        match self.control.view().await {
            Ok(v) if v.bans.get(&subject).is_some_and(longer) => return,
            _ => {}
        }
        if let Err(e) = self.control.ban(&subject, &ban).await {
            self.failed_op("ban", &e);
            if self.pending_bans.len() < MAX_PENDING_BANS
                || self.pending_bans.contains_key(&subject)
            {
                self.pending_bans.insert(subject, ban);
            }
        }
    }

    async fn retry(&mut self) {
        let bans = std::mem::take(&mut self.pending_bans);
        for (subject, ban) in bans {
            if let Err(e) = self.control.ban(&subject, &ban).await {
                self.failed_op("ban", &e);
                self.pending_bans.insert(subject, ban);
            }
        }
        let pending: Vec<(WorldId, WorldStatus)> = self
            .unpublished
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (w, st) in pending {
            match self.control.publish(w, st.epoch, &st).await {
                Ok(()) => {
                    self.unpublished.remove(&w);
                }
                Err(e @ (ControlError::Fenced { .. } | ControlError::UnknownWorld(_))) => {
                    // Someone else owns it (or it is gone): this status is moot.
                    self.failed_op("publishing a status", &e);
                    self.unpublished.remove(&w);
                }
                Err(e) => self.failed_op("publishing a status", &e),
            }
        }
        let now = Instant::now();
        let due: Vec<WorldId> = self
            .removals
            .iter()
            .filter(|(w, t)| **t <= now && !self.unpublished.contains_key(w))
            .map(|(w, _)| *w)
            .collect();
        for w in due {
            info!(world = %w, "ended world removed after its grace");
            self.drop_world(w).await;
            // A zone's world goes with its last zone.
            let view = self.control.view().await.ok();
            let parent = view.and_then(|v| Some(v.worlds.get(&w)?.spec.zone_of?.world));
            self.remove_record(w).await;
            if let Some(p) = parent {
                let view = self.control.view().await;
                if view.is_ok_and(|v| v.zones_of(p).is_empty()) {
                    self.remove_record(p).await;
                }
            }
        }
        // Worlds that failed to build are removed at once (their status says why).
        let failed: Vec<WorldId> = self
            .failed
            .iter()
            .filter(|w| !self.unpublished.contains_key(w))
            .copied()
            .collect();
        for w in failed {
            if self.control.remove_world(w).await.is_ok() {
                self.failed.remove(&w);
            }
        }
    }

    /// The lease was lost and a new one granted: register again and claim the
    /// hosted worlds again, under new epochs.
    async fn reclaim(&mut self) {
        if let Err(e) = self.register().await {
            self.failed_op("re-registering", &e);
        }
        let who = self.claim_as();
        let worlds: Vec<WorldId> = self.hosted.keys().copied().collect();
        for w in worlds {
            match self.control.claim(w, &who, self.keeper.lease()).await {
                Ok(epoch) => {
                    info!(world = %w, epoch, "world re-claimed under a new lease");
                    self.hosted.insert(w, epoch);
                    self.handle.set_epoch(w, epoch).await;
                }
                Err(e) => {
                    self.failed_op("re-claiming a world", &e);
                    self.drop_world(w).await;
                }
            }
        }
    }
}
