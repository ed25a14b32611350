//! Replication over QUIC (`skylane-repl/2`, mutual TLS): the primary's side
//! of a standby's connection ([`serve_standby`]: its stream's reader and
//! writer, feeding the world's actor), and the standby's side ([`Standby`]: a
//! task that follows one world's primary with a [`Follower`] and hands the
//! follower's engine over when the agent promotes it).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use quinn::{Connection, Endpoint};
use skylane_control::WorldSpec;
use skylane_proto::ed25519_dalek::SigningKey;
use skylane_proto::{
    encode_frame_to_bytes, ChainSigner, FrameDecoder, ReplMsg, WorldId, REPL_MAX_FRAME,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::games::{Games, NewWorld};
use crate::metrics::OriginMetrics;
use crate::replica::Follower;

use super::host::SharedDir;
use super::mailbox::Cmd;

/// Frames queued towards one standby before it counts as too slow (it is
/// disconnected and comes back from a snapshot).
pub(crate) const STANDBY_QUEUE: usize = 1024;

pub(crate) fn repl_frame(msg: &ReplMsg) -> Option<Bytes> {
    encode_frame_to_bytes(msg, REPL_MAX_FRAME).ok()
}

/// A standby as the primary's actor sees it.
pub(crate) struct StandbyLink {
    pub(crate) node: String,
    pub(crate) tx: mpsc::Sender<Bytes>,
    pub(crate) conn: Connection,
}

/// The primary's side of one standby connection.
pub(crate) async fn serve_standby(conn: Connection, dir: SharedDir, metrics: OriginMetrics) {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let Ok((mut send, mut recv)) = conn.accept_bi().await else {
        return;
    };
    let mut dec = FrameDecoder::new(REPL_MAX_FRAME);
    let first = loop {
        match dec.poll_message::<ReplMsg>() {
            Ok(Some(m)) => break m,
            Ok(None) => match recv.read_chunk(64 * 1024, true).await {
                Ok(Some(c)) => dec.push(&c.bytes),
                _ => return,
            },
            Err(_) => return conn.close(1u32.into(), b"bad replication frame"),
        }
    };
    let ReplMsg::Follow { world, node, epoch } = first else {
        return conn.close(1u32.into(), b"expected follow");
    };
    let Some(mailbox) = dir.world(world) else {
        let refused = ReplMsg::Refused {
            world,
            reason: format!("{world} does not run here"),
        };
        if let Some(f) = repl_frame(&refused) {
            let _ = send.write_all(&f).await;
        }
        let _ = send.finish();
        return;
    };
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<Bytes>(STANDBY_QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            if send.write_chunk(f).await.is_err() {
                break;
            }
        }
        let _ = send.finish();
    });
    info!(%world, standby = %node, "standby connected");
    let up = Cmd::StandbyUp {
        id,
        node: node.clone(),
        epoch,
        link: StandbyLink {
            node,
            tx,
            conn: conn.clone(),
        },
    };
    if mailbox.send(up).await.is_err() {
        writer.abort();
        return;
    }
    loop {
        match dec.poll_message::<ReplMsg>() {
            Ok(Some(ReplMsg::Ack {
                tick,
                hash,
                epoch,
                cosigs,
                ..
            })) => {
                let _ = mailbox
                    .send(Cmd::StandbyAck {
                        id,
                        tick,
                        hash,
                        epoch,
                        cosigs,
                    })
                    .await;
            }
            Ok(Some(ReplMsg::Diverged(evidence))) => {
                let _ = mailbox
                    .send(Cmd::StandbyDiverged {
                        id,
                        evidence: Box::new(evidence),
                    })
                    .await;
            }
            Ok(Some(_)) => {
                OriginMetrics::count(&metrics.link_errors, "replication_unexpected");
            }
            Ok(None) => match recv.read_chunk(64 * 1024, true).await {
                Ok(Some(c)) => dec.push(&c.bytes),
                _ => break,
            },
            Err(_) => {
                OriginMetrics::count(&metrics.link_errors, "replication_malformed");
                conn.close(1u32.into(), b"bad replication frame");
                break;
            }
        }
    }
    let _ = mailbox.send(Cmd::StandbyDown { id }).await;
    writer.abort();
}

/// What a standby follows and how it reaches its primary.
pub(crate) struct StandbySpec {
    pub(crate) world: WorldId,
    pub(crate) spec: WorldSpec,
    pub(crate) node: String,
    pub(crate) owner_addr: SocketAddr,
    pub(crate) owner_tls_name: String,
    pub(crate) epoch: u64,
    pub(crate) endpoint: Endpoint,
    pub(crate) client: quinn::ClientConfig,
    pub(crate) games: Games,
    pub(crate) signer: ChainSigner,
    pub(crate) key: SigningKey,
    pub(crate) metrics: OriginMetrics,
    /// Where this origin keeps world journals: the standby journals what it
    /// re-executes in `world-<id>-from-<epoch>.redb` there (the log of the
    /// owner at that epoch), which goes on as its own journal if promoted.
    pub(crate) journal_dir: Option<std::path::PathBuf>,
    /// This process's ledger: the followed world's economy goes into it as
    /// it is re-executed, so a takeover finds its players' wallets here.
    pub(crate) ledger: std::sync::Arc<super::ledger::Ledgers>,
}

/// What a standby reports while it follows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StandbyState {
    /// Holds the world's state (a snapshot arrived).
    pub(crate) started: bool,
    /// The last re-executed tick.
    pub(crate) tick: u64,
    /// Connected to the primary right now.
    pub(crate) connected: bool,
    /// Diverged (never promoted).
    pub(crate) diverged: bool,
}

type Promote = oneshot::Sender<Option<Follower>>;

/// A running standby of one world.
pub(crate) struct Standby {
    pub(crate) epoch: u64,
    promote: mpsc::Sender<Promote>,
    pub(crate) state: watch::Receiver<StandbyState>,
    task: JoinHandle<()>,
}

impl Drop for Standby {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Standby {
    /// Starts following.
    pub(crate) fn start(spec: StandbySpec) -> Self {
        let (promote, rx) = mpsc::channel(1);
        let (state_tx, state) = watch::channel(StandbyState::default());
        let epoch = spec.epoch;
        let task = tokio::spawn(follow(spec, rx, state_tx));
        Self {
            epoch,
            promote,
            state,
            task,
        }
    }

    /// Stops following and hands over the follower (`None`: it has nothing
    /// to serve, or diverged).
    pub(crate) async fn promote(&self) -> Option<Follower> {
        let (tx, rx) = oneshot::channel();
        self.promote.send(tx).await.ok()?;
        rx.await.ok().flatten()
    }
}

async fn follow(
    spec: StandbySpec,
    mut promote: mpsc::Receiver<Promote>,
    state: watch::Sender<StandbyState>,
) {
    let mut follower: Option<Follower> = None;
    loop {
        let session = tokio::select! {
            r = promote.recv() => {
                if let Some(reply) = r {
                    let f = follower.take().filter(|f| f.diverged().is_none());
                    let _ = reply.send(f);
                }
                return;
            }
            r = follow_once(&spec, &mut follower, &state) => r,
        };
        state.send_modify(|s| s.connected = false);
        if let Err(e) = session {
            debug!(world = %spec.world, error = %e, "following the primary failed; retrying");
        }
        // Hold the follower as it is (the primary may be gone: it is what a
        // promotion serves) and try again shortly, unless promoted meanwhile.
        tokio::select! {
            r = promote.recv() => {
                if let Some(reply) = r {
                    let f = follower.take().filter(|f| f.diverged().is_none());
                    let _ = reply.send(f);
                }
                return;
            }
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

async fn follow_once(
    spec: &StandbySpec,
    follower: &mut Option<Follower>,
    state: &watch::Sender<StandbyState>,
) -> Result<(), String> {
    let conn = spec
        .endpoint
        .connect_with(spec.client.clone(), spec.owner_addr, &spec.owner_tls_name)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let hello = ReplMsg::Follow {
        world: spec.world,
        node: spec.node.clone(),
        epoch: follower.as_ref().map_or(spec.epoch, Follower::epoch),
    };
    let f = repl_frame(&hello).ok_or("encode")?;
    send.write_all(&f).await.map_err(|e| e.to_string())?;
    state.send_modify(|s| s.connected = true);
    let mut dec = FrameDecoder::new(REPL_MAX_FRAME);
    loop {
        let msg = match dec.poll_message::<ReplMsg>() {
            Ok(Some(m)) => m,
            Ok(None) => match recv.read_chunk(1 << 20, true).await {
                Ok(Some(c)) => {
                    dec.push(&c.bytes);
                    continue;
                }
                Ok(None) => return Err("the primary ended the stream".into()),
                Err(e) => return Err(e.to_string()),
            },
            Err(e) => return Err(e.to_string()),
        };
        let replies = match msg {
            ReplMsg::Start {
                epoch,
                snapshot,
                tick,
                ..
            } => {
                // A fresh copy: the one before (if any) is superseded, and so
                // is its journal.
                *follower = None;
                let journal = spec
                    .journal_dir
                    .as_ref()
                    .map(|d| d.join(format!("world-{}-from-{epoch}.redb", spec.world.0)));
                if let Some(path) = &journal {
                    if path.exists() {
                        std::fs::remove_file(path)
                            .map_err(|e| format!("{}: {e}", path.display()))?;
                    }
                }
                let new = NewWorld {
                    id: spec.world,
                    spec: &spec.spec,
                    now_us: 0,
                    signer: spec.signer.same_key(),
                    journal,
                    snapshot: Some(&snapshot),
                };
                let core = spec.games.create(new).map_err(|e| e.to_string())?;
                info!(world = %spec.world, tick, epoch, "standby started from the primary's snapshot");
                *follower = Some(Follower::new(&spec.node, epoch, core, spec.key.clone()));
                state.send_modify(|s| {
                    s.started = true;
                    s.tick = tick;
                });
                Vec::new()
            }
            ReplMsg::Entries { epoch, inputs, .. } => {
                let Some(f) = follower.as_mut() else {
                    return Err("entries before a snapshot".into());
                };
                let t = std::time::Instant::now();
                let ticks = inputs
                    .iter()
                    .filter(|i| matches!(i, skylane_proto::Input::Tick { .. }))
                    .count();
                let out = f.handle_entries(epoch, inputs).map_err(|e| e.to_string())?;
                let at_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                for (tick, txs) in f.take_ledger() {
                    if let Err(e) = spec.ledger.commit(spec.world.0, tick, at_ms, &txs) {
                        OriginMetrics::count(&spec.metrics.ledger_errors, "commit");
                        warn!(world = %spec.world, tick, error = %e, "standby ledger: commit failed");
                    }
                }
                spec.metrics
                    .standby_busy_us
                    .inc_by(t.elapsed().as_micros() as u64);
                if ticks > 0 {
                    let per = t.elapsed().as_secs_f64() / ticks as f64;
                    for _ in 0..ticks {
                        spec.metrics.standby_tick_seconds.observe(per);
                    }
                }
                let tick = f.tick();
                let diverged = f.diverged().is_some();
                let newly = diverged && !state.borrow().diverged;
                state.send_modify(|s| {
                    s.tick = tick;
                    s.diverged = diverged;
                });
                if newly {
                    spec.metrics.divergences.inc();
                    warn!(world = %spec.world, tick, "standby diverged from its primary: evidence sent; it verifies nothing more");
                }
                out
            }
            ReplMsg::Compare {
                epoch,
                tick,
                snapshot,
                ..
            } => {
                let Some(f) = follower.as_mut() else {
                    return Err("a comparison before a snapshot".into());
                };
                // A failed comparison ends the session: the standby then
                // follows afresh from a snapshot.
                f.handle_compare(epoch, tick, &snapshot)
                    .map_err(|e| format!("cannot compare with the primary's state: {e}"))?
            }
            ReplMsg::Refused { reason, .. } => return Err(reason),
            _ => return Err("unexpected message from the primary".into()),
        };
        for r in replies {
            let f = repl_frame(&r).ok_or("encode")?;
            send.write_all(&f).await.map_err(|e| e.to_string())?;
        }
        if follower.as_ref().is_some_and(Follower::compared) {
            // Evidence complete: this standby follows no more (and never
            // serves).
            std::future::pending::<()>().await;
        }
    }
}
