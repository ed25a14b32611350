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
mod lanes;
mod link;
mod load;
mod mailbox;

use std::time::Duration;

use quinn::Endpoint;
use skylane_proto::DEFAULT_MAX_FRAME;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::core::Core;
use crate::journal::JournalError;
use crate::metrics::OriginMetrics;

use actor::Actor;
use link::accept_loop;
use mailbox::{Clock, Cmd};

pub use load::LoadError;
pub use mailbox::OriginStatus;

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
        }
    }
}

/// Asks a running origin for its state.
#[derive(Debug, Clone)]
pub struct OriginHandle {
    cmd: mpsc::Sender<Cmd>,
}

impl OriginHandle {
    /// The world's state now (`None` once the world has stopped).
    pub async fn status(&self) -> Option<OriginStatus> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.cmd.send(Cmd::Status(tx)).await.ok()?;
        rx.await.ok()
    }
}

/// A running origin server.
#[derive(Debug)]
pub struct OriginServer {
    shutdown: watch::Sender<bool>,
    actor: JoinHandle<Result<(), JournalError>>,
    accept: JoinHandle<()>,
    cmd: mpsc::Sender<Cmd>,
    addr: std::net::SocketAddr,
}

impl OriginServer {
    /// Serves relays on `endpoint` (configured with the origin's mTLS server config).
    /// Must be called inside a tokio runtime.
    pub fn spawn<C: Core>(
        endpoint: Endpoint,
        core: C,
        cfg: ServerConfig,
        metrics: OriginMetrics,
    ) -> Self {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (tx, rx) = mpsc::channel(65_536);
        let cmd = tx.clone();
        let addr = endpoint
            .local_addr()
            .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
        let clock = Clock {
            base_unix_us: cfg.base_unix_us,
            start: Instant::now(),
        };
        let accept = tokio::spawn(accept_loop(
            endpoint.clone(),
            tx,
            cfg,
            clock,
            shutdown_rx.clone(),
        ));
        let actor = Actor::new(core, cfg, metrics, clock);
        let actor = tokio::spawn(actor.run(rx, shutdown_rx, endpoint));
        Self {
            shutdown,
            actor,
            accept,
            cmd,
            addr,
        }
    }

    /// The address relays connect to.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The world's state now (`None` once the world has stopped).
    pub async fn status(&self) -> Option<OriginStatus> {
        self.handle().status().await
    }

    /// A cloneable handle for the admin endpoint (the server itself is owned by
    /// whoever shuts it down).
    pub fn handle(&self) -> OriginHandle {
        OriginHandle {
            cmd: self.cmd.clone(),
        }
    }

    /// Stops accepting, closes relay connections, flushes the journal, and returns
    /// the world's final error if it failed.
    pub async fn shutdown(self) -> Result<(), JournalError> {
        let _ = self.shutdown.send(true);
        self.accept.abort();
        match self.actor.await {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    }
}
