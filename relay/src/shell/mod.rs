//! The relay's network shell: quinn and tokio around the pure cores.
//!
//! Tasks:
//! * **accept loop**: [`Admission`] (connections per IP, handshakes per second)
//!   before any cryptography; refused peers get a QUIC `CONNECTION_REFUSED`.
//! * **one task per client connection**: reads the first message on the client's
//!   control stream (`Hello`, or `Directory` which needs no token), verifies the
//!   token and resume ticket offline (in parallel across connections), asks the
//!   actor for a session, then reads the client's streams and datagrams through
//!   the session's [`EdgeGuard`] and answers pings itself.
//! * **one writer per client connection** ([`writer`]): the connection's
//!   [`crate::Scheduler`] feeding one QUIC stream per event class (stream priority
//!   from the class), all polled by that one task; a class whose stream is
//!   blocked is skipped, so bulk never holds back critical.
//! * **one link task per origin**: connects with mutual TLS, reconnects with
//!   exponential backoff and jitter, reads the origin's lanes, writes actions on
//!   per-class streams (movement as datagrams), reports RTT to the routing table.
//! * **the actor**: owns the [`SessionTable`], [`Hub`], [`RoutingTable`] and the
//!   connection and link handles; everything stateful happens here, in order.
//!
//! Bounds: a client's outgoing queue is its scheduler (the writer's `Outbox` ([`writer`])),
//! bounded per class; when a reliable class overflows the client is
//! disconnected and resumes (its missed events are replayed), so a slow client
//! costs bounded memory and never slows others down.
//!
//! # Layout
//! * [`mailbox`]: the actor's messages and what every task shares.
//! * [`actor`] (with [`from_origin`]): the one task that owns the cores.
//! * [`client`] (accept loop, a connection's task), [`admit`] (its first
//!   message), [`reader`] (what it sends next), [`writer`] (what it is sent),
//!   [`read`] (reading one whole message from a stream).
//! * [`link`] (one task per origin link), [`lanes`] (the lanes into a link),
//!   [`peer`] (links between relays), [`spectators`] (audiences and their
//!   writers).

mod actor;
mod admit;
mod analytics;
mod content;
pub use content::ContentSettings;
mod client;
mod cluster;
mod from_origin;
mod keys;
mod lanes;
mod link;
mod load;
mod mailbox;
mod peer;
mod read;
mod reader;
mod spectators;
mod writer;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use quinn::Endpoint;
use rustc_hash::FxHashMap as HashMap;
use tokio::sync::{mpsc, oneshot, watch};

use crate::admission::Admission;
use crate::clock::UnixClock;
use crate::hub::Hub;
use crate::metrics::RelayMetrics;
use crate::routing::RoutingTable;
use crate::session::SessionTable;
use crate::settings::RelaySettings;
use crate::status::RelayStatus;
use crate::upstream::Upstream;

pub use load::LoadError;

use actor::{Actor, LinkState};
use client::accept_loop;
use link::link_task;
use mailbox::{Cmd, Shared};
use peer::peer_task;
use spectators::Spectators;

/// Handle to a running relay.
#[derive(Clone)]
pub struct Relay {
    cmd: mpsc::Sender<Cmd>,
    done: watch::Receiver<bool>,
    addr: SocketAddr,
    clock: UnixClock,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// Serves clients on `endpoint` (configured with the relay's client-facing
    /// server config) and links to the configured origins through it. Must be
    /// called inside a tokio runtime.
    pub fn spawn(endpoint: Endpoint, settings: RelaySettings, metrics: RelayMetrics) -> Self {
        let (cmd_tx, cmd_rx) = mpsc::channel(65_536);
        let (done_tx, done) = watch::channel(false);
        let addr = endpoint
            .local_addr()
            .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
        let clock = UnixClock::new();
        if let Some(path) = settings.token_key_file.clone() {
            tokio::spawn(keys::watch_token_keys(
                path,
                settings.tokens.current().audience().to_owned(),
                settings.tokens.clone(),
                keys::TOKEN_KEY_POLL,
                metrics.clone(),
            ));
        }
        if let Some(path) = settings.revocation_file.clone() {
            tokio::spawn(keys::watch_revocations(
                path,
                settings.revocations.clone(),
                keys::TOKEN_KEY_POLL,
                metrics.clone(),
                cmd_tx.clone(),
            ));
        }
        let shared = Arc::new(Shared {
            settings: settings.clone(),
            metrics: metrics.clone(),
            cmd: cmd_tx.clone(),
            admission: Mutex::new(Admission::new(settings.limits.admission)),
            penalties: Mutex::new(crate::penalty::Penalties::new(settings.limits.penalties)),
            clock,
            endpoint: endpoint.clone(),
            direct: Mutex::new(HashMap::default()),
            known: Mutex::new(mailbox::Known::from_settings(&settings)),
            content: settings
                .content
                .as_ref()
                .map(|c| content::ContentService::new(c, metrics.clone())),
            directory: crate::settings::Current::new(settings.directory.clone()),
        });
        metrics
            .directory_relays
            .set(settings.directory.relays().len() as i64);
        if let (Some(svc), Some(c)) = (&shared.content, &settings.content) {
            tokio::spawn(content::refresh_task(svc.clone(), c.refresh, done.clone()));
        }
        let mut routing = RoutingTable::new(settings.routing);
        for o in &settings.origins {
            for w in &o.worlds {
                routing.handle_world(*w, o.id);
            }
        }
        let mut links = HashMap::default();
        for o in &settings.origins {
            let (route, route_rx) = watch::channel(None);
            let task = tokio::spawn(link_task(shared.clone(), o.clone(), route_rx));
            links.insert(
                o.id,
                LinkState {
                    spec: o.clone(),
                    tx: None,
                    path: None,
                    rtt: None,
                    route,
                    task,
                },
            );
        }
        let mut peer_tasks = Vec::new();
        if settings.peer_tls.is_some() {
            for p in &settings.peers {
                if p.id != settings.info.id {
                    peer_tasks.push(tokio::spawn(peer_task(shared.clone(), p.clone())));
                }
            }
        }
        let accept = tokio::spawn(accept_loop(shared.clone(), endpoint.clone()));
        let actor = Actor {
            sessions: SessionTable::new(
                settings.info.id,
                settings.limits.session_grace,
                settings.limits.max_sessions,
            ),
            hub: Hub::new(settings.hub),
            cells: crate::movement::CellStates::default(),
            routing,
            links,
            conns: HashMap::default(),
            upstream: Upstream::new(settings.limits.pending_actions),
            spectators: Spectators::new(settings.limits.spectators, metrics.clone()),
            draining: None,
            error_logs: skylane_ops::LogLimiter::new(std::time::Duration::from_secs(10), 1024),
            peer_tasks,
            directory: crate::directory::WorldDirectory::new(settings.origins.iter().map(|o| {
                crate::directory::OriginEntry {
                    id: o.id,
                    addr: o.addr,
                    tls_name: o.server_name.clone(),
                }
            })),
            parked: Vec::new(),
            clustered: false,
            world_states: HashMap::default(),
            session_log: analytics::SessionLog::new(settings.limits.max_sessions.saturating_mul(2)),
            shared: shared.clone(),
        };
        tokio::spawn(async move {
            actor.run(cmd_rx, endpoint).await;
            accept.abort();
            let _ = done_tx.send(true);
        });
        Self {
            cmd: cmd_tx,
            done,
            addr,
            clock,
            shared,
        }
    }

    /// Registers this relay with a control plane (under a lease of `ttl`) and
    /// follows it from now on: origins and worlds appear, move and go without a
    /// restart. Statically configured origins stay as they are.
    pub async fn follow(
        &self,
        control: skylane_control::SharedControl,
        node: skylane_control::NodeInfo,
        ttl: std::time::Duration,
    ) -> Result<(), skylane_control::ControlError> {
        cluster::follow(self.shared.clone(), control, node, ttl).await
    }

    /// The relay's clock now, microseconds since the Unix epoch: what its pongs
    /// and welcome carry (clients synchronise to it).
    pub fn unix_us(&self) -> u64 {
        self.clock.unix_us()
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts a drain: every client gets a go-away naming other relays; the relay
    /// exits when its clients have left or the drain deadline passes.
    pub fn drain(&self) {
        let _ = self.cmd.try_send(Cmd::Drain);
    }

    /// The relay's state now (`None` once it has exited).
    pub async fn status(&self) -> Option<RelayStatus> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Cmd::Status(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Resolves when the relay has exited (after a drain).
    pub async fn closed(&self) {
        let mut done = self.done.clone();
        let _ = done.wait_for(|d| *d).await;
    }
}
