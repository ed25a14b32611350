//! The origin's network shell: relays connect over QUIC with mutual TLS and carry
//! all their sessions over one connection.
//!
//! Link layout (relay ↔ origin, protocol `skylane/1`, [`LinkMsg`] frames):
//! * The relay opens one bidirectional **control** stream and sends `LinkHello`.
//!   Upstream it carries session lifecycle (`SessionOpen`, `SessionClose`) and
//!   pings; downstream it is lane 0: hello, subscription changes, action results,
//!   resume replays, errors (highest stream priority).
//! * The relay sends actions on unidirectional streams of its choosing (it shards
//!   them by class and session to limit head-of-line blocking) or as datagrams.
//!   Every incoming stream is read the same way. The origin acknowledges a session
//!   by its first `Subscriptions` message; the relay forwards the session's actions
//!   only after that acknowledgement.
//! * Downstream batches and keyframes go on `lanes` unidirectional streams sharded
//!   by channel, so one channel's batches stay in order (its hash chain needs that)
//!   while a stalled stream holds up only the channels that hash to it. Each batch is
//!   encoded once and sent once per relay that has subscribers of the channel.
//!
//! The world itself runs in one actor task that owns the engine ([`Core`](crate::Core)) and
//! the routes ([`Routes`](crate::Routes)): the
//! single writer. Readers and writers are separate tasks joined by queues.
//!
//! Files: `mailbox.rs` (messages, clock), `link.rs` (a relay connection's
//! tasks), `lanes.rs` (its downstream lanes), `actor.rs` (the world's task). A link's
//! lanes share one byte budget ([`ServerConfig::link_queue_bytes`]): a relay that
//! falls briefly behind (a burst of thousands of session opens, a CPU stall) is
//! carried through it, session pongs are shed once the control lane holds more than
//! [`ServerConfig::pong_shed_bytes`], and only a relay that falls the whole budget
//! behind is disconnected (once, with one warning; its sessions wait for it or for

mod actor;
mod analytics;
mod cluster;
mod evidence;
mod host;
mod lanes;
mod ledger;
mod link;
mod load;
mod mailbox;
mod replication;
mod zones;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::Endpoint;
use skylane_proto::{WorldId, DEFAULT_MAX_FRAME};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::core::Core;
use crate::journal::JournalError;
use crate::metrics::OriginMetrics;

use actor::{Actor, WorldEnv};
use host::SharedDir;
use link::{accept_loop, LinkEnv};
use mailbox::{Clock, Cmd};

pub use cluster::{ClusterAgent, ClusterNode};
pub use load::LoadError;
pub use mailbox::{OriginStatus, WorldEvent};

/// Shell settings.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    /// Downstream batch streams per relay (sharded by channel). Defaults to 8.
    pub lanes: usize,
    /// Bytes queued for one relay link (all its lanes together) before the relay
    /// counts as too slow and its link is closed. Defaults to 32 MiB.
    pub link_queue_bytes: usize,
    /// Bytes queued on a link's control lane above which session pongs are dropped
    /// (a pong stuck behind a queue measures the queue). Defaults to 256 KiB.
    pub pong_shed_bytes: usize,
    /// How long a session whose relay disconnected waits to be resumed elsewhere.
    /// Defaults to 30 s.
    pub session_grace: Duration,
    /// Largest frame accepted from a relay. Defaults to 64 KiB.
    pub max_frame: usize,
    /// The clock's epoch: microseconds since the Unix epoch at the moment the server
    /// starts (the engine must have been created with the same `now_us`).
    pub base_unix_us: u64,
    /// Mailbox slots per world (messages from relays waiting for the world's
    /// task). Defaults to 65,536.
    pub mailbox: usize,
    /// Standbys that must acknowledge a tick before its outputs (events,
    /// applied results) leave the origin; capped by the standbys following.
    /// Defaults to 1.
    pub min_acks: usize,
}

impl ServerConfig {
    /// Defaults with the given epoch.
    pub fn new(base_unix_us: u64) -> Self {
        Self {
            lanes: 8,
            link_queue_bytes: 32 << 20,
            pong_shed_bytes: 256 << 10,
            session_grace: Duration::from_secs(30),
            max_frame: DEFAULT_MAX_FRAME,
            base_unix_us,
            mailbox: 65_536,
            min_acks: 1,
        }
    }
}

/// Until when worlds may write (`None`: without limit).
pub(crate) type WriteUntil = Option<Instant>;

/// Why a world could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// A world with that id already runs here.
    #[error("{0} already runs on this origin")]
    Duplicate(WorldId),
    /// The origin is shutting down.
    #[error("the origin is shutting down")]
    ShuttingDown,
}

struct HostInner {
    dir: SharedDir,
    cfg: ServerConfig,
    metrics: OriginMetrics,
    clock: Clock,
    events: mailbox::Events,
    writable: watch::Sender<WriteUntil>,
    shutdown: watch::Receiver<bool>,
    actors: Mutex<HashMap<WorldId, JoinHandle<Result<(), JournalError>>>>,
    first: Mutex<Option<WorldId>>,
    evidence: Arc<evidence::Evidence>,
    ledger: Arc<ledger::Ledgers>,
    /// The zone link (set when the origin joins a cluster with one).
    zones: Mutex<Option<zones::ZoneSender>>,
    /// Analytics rows (attached once).
    analytics: analytics::SharedTap,
}

/// Manages a running origin's worlds; cheap to clone (the admin endpoint and
/// the cluster agent each hold one).
#[derive(Clone)]
pub struct OriginHandle {
    inner: Arc<HostInner>,
}

impl std::fmt::Debug for OriginHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginHandle").finish_non_exhaustive()
    }
}

async fn ask(tx: mpsc::Sender<Cmd>) -> Option<OriginStatus> {
    let (reply, rx) = tokio::sync::oneshot::channel();
    tx.send(Cmd::Status(reply)).await.ok()?;
    rx.await.ok()
}

impl OriginHandle {
    /// Keeps every violation of every world hosted here (and the edge's, as
    /// relays report them) in `store` from now on. Once per process: a second
    /// store is ignored.
    pub fn attach_violations(
        &self,
        store: crate::evidence::ViolationStore,
    ) -> Result<(), crate::evidence::EvidenceError> {
        self.inner
            .evidence
            .attach(store, self.inner.metrics.clone())
    }

    /// Keeps every world's economy hosted here in `ledger` from now on:
    /// returning players bring their wallets, each tick's transactions are
    /// committed. Once per process: a second ledger is ignored.
    pub fn attach_ledger(&self, ledger: crate::ledger::Ledger) {
        self.inner.ledger.attach(ledger);
    }

    /// Emits analytics rows (world phases, sampled action outcomes,
    /// violations, economy; see `docs/analytics.md`) for every world hosted
    /// here from now on, as `node`, one action outcome in `sample_every`
    /// (0: none). Once per process: `false` if analytics were attached
    /// already.
    pub fn attach_analytics(
        &self,
        emitter: skylane_analytics::Emitter,
        node: &str,
        sample_every: u32,
    ) -> bool {
        self.inner.analytics.attach(analytics::Tap {
            emitter,
            node: node.to_owned(),
            sample_every,
        })
    }

    /// The ledger's totals (`None` without a ledger).
    pub async fn ledger_totals(&self) -> Option<crate::ledger::Totals> {
        self.inner.ledger.totals()
    }

    /// The ledger's most recent `limit` transactions touching `player` (or
    /// anyone's), and `player`'s wallet (`None` without a ledger).
    pub async fn ledger_history(
        &self,
        player: Option<String>,
        limit: usize,
    ) -> Option<
        Result<
            (Option<crate::ledger::Wallet>, Vec<crate::ledger::TxRecord>),
            crate::ledger::LedgerError,
        >,
    > {
        self.inner.ledger.history(player, limit).await
    }

    /// The violations matching `q` (`None` when no store is attached).
    pub async fn violations(
        &self,
        q: crate::evidence::ViolationQuery,
    ) -> Option<Result<Vec<crate::evidence::ViolationRecord>, crate::evidence::EvidenceError>> {
        self.inner.evidence.query(q).await
    }

    /// The first world's state (the world a single-world origin was started
    /// with); `None` once it has stopped.
    pub async fn status(&self) -> Option<OriginStatus> {
        let first = (*self.lock_first())?;
        self.world_status(first).await
    }

    fn lock_first(&self) -> std::sync::MutexGuard<'_, Option<WorldId>> {
        self.inner
            .first
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_actors(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<WorldId, JoinHandle<Result<(), JournalError>>>> {
        self.inner
            .actors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One world's state.
    pub async fn world_status(&self, world: WorldId) -> Option<OriginStatus> {
        ask(self.inner.dir.world(world)?).await
    }

    /// Every world's state, in id order.
    pub async fn worlds(&self) -> Vec<OriginStatus> {
        let mut out = Vec::new();
        for (_, tx) in self.inner.dir.all_worlds() {
            if let Some(s) = ask(tx).await {
                out.push(s);
            }
        }
        out
    }

    /// The origin's clock now (microseconds since the Unix epoch): what a new
    /// engine must be created with.
    pub fn now_us(&self) -> u64 {
        self.inner.clock.now_us()
    }

    /// Starts a world on its own task, owned at `epoch` (0 outside a control
    /// plane), and introduces it to every relay link that is up.
    pub fn add_world(&self, core: Box<dyn Core>, epoch: u64) -> Result<(), HostError> {
        let world = core.world_id();
        self.add_world_as(core, epoch, world, 0)
    }

    /// Starts a world hosted under `host` (a zone of a zoned world: its
    /// record's id; the engine signs as the world it is a zone of), with
    /// `standbys` named for it: its first ticks wait for them to follow (at
    /// most 3 s) rather than leave unreplicated.
    pub fn add_world_as(
        &self,
        core: Box<dyn Core>,
        epoch: u64,
        host: WorldId,
        standbys: usize,
    ) -> Result<(), HostError> {
        if *self.inner.shutdown.borrow() {
            return Err(HostError::ShuttingDown);
        }
        let world = host;
        let (tx, rx) = mpsc::channel(self.inner.cfg.mailbox);
        let links = self
            .inner
            .dir
            .add_world(world, tx.clone())
            .ok_or(HostError::Duplicate(world))?;
        let env = WorldEnv {
            cfg: self.inner.cfg,
            metrics: self.inner.metrics.clone(),
            clock: self.inner.clock,
            dir: self.inner.dir.clone(),
            host: world,
            epoch,
            events: self.inner.events.clone(),
            writable: self.inner.writable.subscribe(),
            evidence: self.inner.evidence.clone(),
            ledger: self.inner.ledger.clone(),
            zones: self
                .inner
                .zones
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            standbys,
            analytics: self.inner.analytics.clone(),
        };
        {
            let ws = skylane_proto::WorldState {
                world: core.world_id(),
                epoch,
                host: world,
                phase: skylane_proto::WorldPhase::Waiting,
                players: 0,
                capacity: 0,
                tick: core.tick(),
                result: None,
            };
            let mut row = analytics::phase_row(self.inner.clock.now_us() / 1000, core.game(), &ws);
            row.phase = "created".into();
            self.inner.analytics.phase(row);
        }
        let actor = Actor::new(core, env);
        let task = tokio::spawn(actor.run(rx, self.inner.shutdown.clone()));
        self.lock_actors().insert(world, task);
        self.lock_first().get_or_insert(world);
        self.inner.metrics.worlds_started.inc();
        self.inner.metrics.worlds.inc();
        for (id, entry) in links {
            // A fresh mailbox has room for one message per link.
            let _ = tx.try_send(entry.up(id));
        }
        Ok(())
    }

    /// Ends a world's game now (it reports the result); `false` if it does not
    /// run here.
    pub async fn end_world(&self, world: WorldId, reason: &str) -> bool {
        match self.inner.dir.world(world) {
            Some(tx) => tx.send(Cmd::End(reason.into())).await.is_ok(),
            None => false,
        }
    }

    /// Prepares a planned move of `world` to its standby: the world stops
    /// ticking, and this answers with its last tick once a standby has
    /// acknowledged it (the caller then releases the world in the control
    /// plane and the standby takes it over without waiting for a lease to
    /// lapse). An error if the world does not run here or no standby follows.
    pub async fn handover(&self, world: WorldId) -> Result<u64, String> {
        let tx = self
            .inner
            .dir
            .world(world)
            .ok_or_else(|| format!("{world} does not run here"))?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        tx.send(Cmd::Handover(reply))
            .await
            .map_err(|_| format!("{world} stopped"))?;
        rx.await.map_err(|_| format!("{world} stopped"))?
    }

    /// The world's owner epoch changed: it tells every relay.
    pub async fn set_epoch(&self, world: WorldId, epoch: u64) -> bool {
        match self.inner.dir.world(world) {
            Some(tx) => tx.send(Cmd::Epoch(epoch)).await.is_ok(),
            None => false,
        }
    }

    /// Stops a world and forgets it; returns its task's final error. `None` if
    /// it does not run here.
    pub async fn remove_world(&self, world: WorldId) -> Option<Result<(), JournalError>> {
        let tx = self.inner.dir.remove_world(world)?;
        let _ = tx.send(Cmd::Stop).await;
        let task = self.lock_actors().remove(&world)?;
        self.inner.metrics.worlds.dec();
        Some(task.await.unwrap_or(Ok(())))
    }

    /// Whether worlds may write: `false` pauses every world (no ticks, no
    /// answers) until it is `true` again. The cluster agent follows its lease.
    pub fn set_writable(&self, on: bool) {
        self.set_write_deadline(if on { None } else { Some(Instant::now()) });
    }

    /// Worlds may write until `until` (`None`: without limit). Each world
    /// checks it itself before every tick, so an origin that was paused past
    /// it (SIGSTOP) writes nothing when it wakes, whatever task runs first.
    /// The cluster agent follows its lease ([`skylane_control::LeaseStatus`]).
    pub fn set_write_deadline(&self, until: Option<Instant>) {
        self.inner.writable.send_if_modified(|w| {
            let changed = *w != until;
            *w = until;
            changed
        });
        let on = until.is_none_or(|u| Instant::now() < u);
        self.inner.metrics.lease_writable.set(i64::from(on));
    }

    /// Ids of the worlds running here.
    pub fn world_ids(&self) -> Vec<WorldId> {
        self.inner
            .dir
            .all_worlds()
            .into_iter()
            .map(|(w, _)| w)
            .collect()
    }
}

/// A running origin server: any number of worlds behind one QUIC endpoint.
#[derive(Debug)]
pub struct OriginServer {
    shutdown: watch::Sender<bool>,
    accept: JoinHandle<()>,
    endpoint: Endpoint,
    handle: OriginHandle,
    addr: std::net::SocketAddr,
}

impl OriginServer {
    /// Serves relays on `endpoint` (configured with the origin's mTLS server
    /// config) with no world yet: add them with [`OriginHandle::add_world`]. Must
    /// be called inside a tokio runtime.
    pub fn host(endpoint: Endpoint, cfg: ServerConfig, metrics: OriginMetrics) -> Self {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let addr = endpoint
            .local_addr()
            .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
        let clock = Clock {
            base_unix_us: cfg.base_unix_us,
            start: Instant::now(),
        };
        let dir = SharedDir::default();
        let (writable, _) = watch::channel(None);
        metrics.lease_writable.set(1);
        let env = LinkEnv {
            dir: dir.clone(),
            cfg,
            clock,
            metrics: metrics.clone(),
        };
        let accept = tokio::spawn(accept_loop(endpoint.clone(), env, shutdown_rx.clone()));
        let handle = OriginHandle {
            inner: Arc::new(HostInner {
                dir,
                cfg,
                metrics,
                clock,
                events: mailbox::Events::default(),
                writable,
                shutdown: shutdown_rx,
                analytics: analytics::SharedTap::default(),
                actors: Mutex::new(HashMap::new()),
                first: Mutex::new(None),
                evidence: Arc::default(),
                ledger: Arc::default(),
                zones: Mutex::new(None),
            }),
        };
        Self {
            shutdown,
            accept,
            endpoint,
            handle,
            addr,
        }
    }

    /// Serves one world (see [`OriginServer::host`]).
    pub fn spawn<C: Core>(
        endpoint: Endpoint,
        core: C,
        cfg: ServerConfig,
        metrics: OriginMetrics,
    ) -> Self {
        let server = Self::host(endpoint, cfg, metrics);
        // A fresh host has no world yet, so the id cannot be taken.
        let _ = server.handle.add_world(Box::new(core), 0);
        server
    }

    /// The address relays connect to.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The first world's state (`None` once it has stopped).
    pub async fn status(&self) -> Option<OriginStatus> {
        self.handle.status().await
    }

    /// A cloneable handle for the admin endpoint and the cluster agent (the
    /// server itself is owned by whoever shuts it down).
    pub fn handle(&self) -> OriginHandle {
        self.handle.clone()
    }

    /// The worlds' lifecycle reports (once: whoever runs the origin takes them).
    pub fn take_events(&mut self) -> Option<mpsc::UnboundedReceiver<WorldEvent>> {
        self.handle.inner.events.listen()
    }

    /// Dies on the spot, as a killed process would (tests, benchmarks, the
    /// demo's fault injection): every world's task is aborted without flushing
    /// anything, and every connection is dropped without a goodbye. Whatever
    /// the control plane holds for this origin lapses with its lease (drop the
    /// cluster agent too).
    pub fn crash(&self) {
        self.accept.abort();
        for (_, task) in self.handle.lock_actors().drain() {
            task.abort();
        }
        self.endpoint.close(0u32.into(), b"");
    }

    /// Stops accepting, stops every world (flushing journals), closes relay
    /// connections, and returns the first world error.
    pub async fn shutdown(self) -> Result<(), JournalError> {
        let _ = self.shutdown.send(true);
        self.accept.abort();
        let tasks: Vec<_> = self.handle.lock_actors().drain().collect();
        let mut result = Ok(());
        for (_, task) in tasks {
            if let Ok(Err(e)) = task.await {
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        self.endpoint.close(0u32.into(), b"origin shutting down");
        result
    }
}
