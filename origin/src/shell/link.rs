//! One task per relay connection: the link hello, the downstream lanes and
//! their writers, and readers for every stream and datagram the relay sends,
//! feeding the actor. Session pings are answered here, on arrival.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use quinn::{Connection, Endpoint};
use skylane_proto::{DecodeError, FrameDecoder, LinkMsg, Pong, PROTOCOL_VERSION};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info};

use super::actor::frame;
use super::lanes::{write_lane, DownLane};
use super::mailbox::{Clock, Cmd};
use super::ServerConfig;

pub(crate) async fn accept_loop(
    endpoint: Endpoint,
    tx: mpsc::Sender<Cmd>,
    cfg: ServerConfig,
    clock: Clock,
    shutdown: watch::Receiver<bool>,
) {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    while let Some(incoming) = endpoint.accept().await {
        if *shutdown.borrow() {
            incoming.refuse();
            continue;
        }
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let tx = tx.clone();
        tokio::spawn(async move {
            match incoming.await {
                Ok(conn) => serve_relay(id, conn, tx, cfg, clock).await,
                Err(e) => debug!(cause = %e, "relay handshake failed"),
            }
        });
    }
}

/// Reads one connection's streams and feeds the actor; writes its lanes.
async fn serve_relay(
    id: u64,
    conn: Connection,
    tx: mpsc::Sender<Cmd>,
    cfg: ServerConfig,
    clock: Clock,
) {
    let Ok((ctl_send, mut ctl_recv)) = conn.accept_bi().await else {
        return;
    };
    // The first control frame must be the relay's hello.
    let mut dec = FrameDecoder::new(cfg.max_frame);
    let relay = loop {
        match dec.poll_message::<LinkMsg>() {
            Ok(Some(LinkMsg::LinkHello { version, relay })) if version == PROTOCOL_VERSION => {
                break relay
            }
            Ok(Some(_)) | Err(_) => {
                conn.close(1u32.into(), b"expected link hello");
                return;
            }
            Ok(None) => match ctl_recv.read_chunk(cfg.max_frame, true).await {
                Ok(Some(chunk)) => dec.push(&chunk.bytes),
                _ => return,
            },
        }
    };
    info!(relay = %relay, remote = %conn.remote_address(), "relay connected");

    let budget = Arc::new(AtomicUsize::new(0));
    let mut lanes = Vec::with_capacity(cfg.lanes + 1);
    let (control, lane0_rx) = DownLane::new(budget.clone());
    tokio::spawn(write_lane(conn.clone(), 0, Some(ctl_send), lane0_rx));
    let reader = LinkReader {
        id,
        tx: tx.clone(),
        control: control.clone(),
        clock,
        max_frame: cfg.max_frame,
        link_limit: cfg.link_queue_bytes,
        pong_shed: cfg.pong_shed_bytes,
    };
    lanes.push(control);
    for lane in 1..=cfg.lanes {
        let (ltx, lrx) = DownLane::new(budget.clone());
        tokio::spawn(write_lane(conn.clone(), lane, None, lrx));
        lanes.push(ltx);
    }
    if tx
        .send(Cmd::RelayUp {
            id,
            relay,
            conn: conn.clone(),
            lanes,
        })
        .await
        .is_err()
    {
        return;
    }
    // Anything after the hello on the control stream.
    tokio::spawn(reader.clone().read_stream(dec, ctl_recv));
    {
        let (conn, reader) = (conn.clone(), reader.clone());
        tokio::spawn(async move {
            while let Ok(recv) = conn.accept_uni().await {
                let dec = FrameDecoder::new(reader.max_frame);
                tokio::spawn(reader.clone().read_stream(dec, recv));
            }
        });
    }
    {
        let conn = conn.clone();
        tokio::spawn(async move {
            while let Ok(d) = conn.read_datagram().await {
                let msg = skylane_proto::decode_datagram::<LinkMsg>(d);
                if !reader.deliver(msg).await {
                    return;
                }
            }
        });
    }
    let reason = conn.closed().await;
    info!(relay = %relay, cause = %reason, "relay disconnected");
    let _ = tx.send(Cmd::RelayDown { id }).await;
}

/// What a task reading one relay link's streams and datagrams needs.
#[derive(Clone)]
struct LinkReader {
    id: u64,
    tx: mpsc::Sender<Cmd>,
    /// The link's control lane, for pongs answered without the actor.
    control: DownLane,
    clock: Clock,
    max_frame: usize,
    /// [`ServerConfig::link_queue_bytes`].
    link_limit: usize,
    /// [`ServerConfig::pong_shed_bytes`].
    pong_shed: usize,
}

impl LinkReader {
    /// Hands one decoded message (or its decoding error) on; `false` once the actor is gone.
    ///
    /// Session pings are answered here, on arrival: they measure the path, and
    /// the actor may be in the middle of a tick. The relay authenticated itself
    /// with mTLS and answers only its own sessions' pongs, so no session check
    /// is needed (it would need the actor's state).
    async fn deliver(&self, msg: Result<LinkMsg, DecodeError>) -> bool {
        let cmd = match msg {
            Ok(LinkMsg::SessionPing { session, ping }) => {
                let now = self.clock.now_us();
                let pong = LinkMsg::SessionPong {
                    session,
                    pong: Pong::answer(&ping, now, now),
                };
                // Behind a long control queue the pong would measure the queue:
                // it is shed like a lost datagram (the relay pings again).
                if self.control.queued() <= self.pong_shed {
                    if let Some(bytes) = frame(&pong) {
                        let _ = self.control.push(bytes, self.link_limit);
                    }
                }
                return true;
            }
            Ok(msg) => Cmd::Msg { id: self.id, msg },
            Err(e) => Cmd::BadFrame {
                id: self.id,
                label: e.label(),
            },
        };
        self.tx.send(cmd).await.is_ok()
    }

    /// Reads one stream's frames until it ends, fails or goes out of sync.
    async fn read_stream(self, mut dec: FrameDecoder, mut recv: quinn::RecvStream) {
        loop {
            loop {
                match dec.poll_message::<LinkMsg>() {
                    Ok(Some(msg)) => {
                        if !self.deliver(Ok(msg)).await {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // The stream is out of sync: report and stop reading it.
                        self.deliver(Err(e)).await;
                        let _ = recv.stop(1u32.into());
                        return;
                    }
                }
            }
            match recv.read_chunk(self.max_frame, true).await {
                Ok(Some(chunk)) => dec.push(&chunk.bytes),
                _ => return,
            }
        }
    }
}
