//! Relay-to-relay links (shell), ALPN `skylane-peer/1` over mutual TLS.
//!
//! * **Measurement links.** Each relay keeps one connection to every configured
//!   peer. The peer sends a [`PeerMsg::Report`] of its *direct* origin RTTs every
//!   half second; with quinn's RTT estimate of the connection itself, that is what
//!   the [`RoutingTable`](crate::RoutingTable) needs to price a path through the
//!   peer (`rtt(me→peer) + rtt(peer→origin)`).
//! * **Forwarded origin links.** When the routing table picks `Via(peer, origin)`,
//!   the origin link task connects to the peer instead of the origin and asks for
//!   [`PeerMsg::Via`]. The peer connects to that origin directly (only an origin it
//!   is configured for, never through a third relay, so paths cannot loop), answers
//!   [`PeerMsg::ViaReady`], and from then on copies every stream and datagram of the
//!   connection unchanged in both directions. The origin sees an ordinary link
//!   (the first relay's `LinkHello`), so sessions resume on it exactly as after
//!   any link reconnect: the relay reopens them with its fan-out cursors and the
//!   origin replays what is missing.
//!
//! Bounds: a forwarded link costs the forwarding relay two connections and one
//! copy task per stream, with quinn's flow-control windows as the only buffers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::Connection;
use skylane_proto::{encode_frame_to_bytes, FrameDecoder, OriginReport, PeerMsg, PROTOCOL_VERSION};
use tokio::task::JoinSet;
use tracing::{debug, info};

use crate::backoff::Backoff;
use crate::metrics::RelayMetrics;
use crate::routing::OriginId;
use crate::settings::PeerSpec;

use super::mailbox::{Cmd, Shared};
use super::read::read_message;

/// How long a peer has to answer a forwarded-link request (it connects to the
/// origin meanwhile).
const VIA_TIMEOUT: Duration = Duration::from_secs(5);
/// Report interval on measurement links.
const REPORT_EVERY: Duration = Duration::from_millis(500);
/// Largest peer control message.
const MAX_PEER_FRAME: usize = 64 * 1024;

fn peer_frame(msg: &PeerMsg) -> Result<Bytes, String> {
    encode_frame_to_bytes(msg, MAX_PEER_FRAME).map_err(|e| e.to_string())
}

async fn read_peer_msg(
    recv: &mut quinn::RecvStream,
    dec: &mut FrameDecoder,
) -> Result<PeerMsg, String> {
    read_message(recv, dec, MAX_PEER_FRAME)
        .await
        .map_err(|e| e.to_string())
}

async fn connect_peer(shared: &Shared, peer: &PeerSpec) -> Result<Connection, String> {
    let tls = shared
        .settings
        .peer_tls
        .clone()
        .ok_or_else(|| "no peer TLS configuration".to_string())?;
    shared.dial(tls, peer.addr, &peer.server_name).await
}

/// Keeps a measurement link to `peer` (reconnecting with backoff and jitter) and
/// feeds its RTT and reports to the actor.
pub(crate) async fn peer_task(shared: Arc<Shared>, peer: PeerSpec) {
    let mut backoff =
        Backoff::new(u64::from(peer.id.0) << 16 ^ u64::from(shared.settings.info.id.0));
    loop {
        match measure(&shared, &peer).await {
            Ok(()) => backoff.reset(),
            Err(e) => debug!(peer = %peer.id, cause = %e, "peer link failed"),
        }
        if shared
            .cmd
            .send(Cmd::PeerDown { peer: peer.id })
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(backoff.next_wait()).await;
    }
}

/// One measurement connection, until it fails.
async fn measure(shared: &Arc<Shared>, peer: &PeerSpec) -> Result<(), String> {
    let conn = connect_peer(shared, peer).await?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let hello = PeerMsg::Hello {
        version: PROTOCOL_VERSION,
        relay: shared.settings.info.id,
    };
    send.write_all(&peer_frame(&hello)?)
        .await
        .map_err(|e| e.to_string())?;
    debug!(peer = %peer.id, "peer link up");
    let mut dec = FrameDecoder::new(MAX_PEER_FRAME);
    loop {
        let msg = read_peer_msg(&mut recv, &mut dec).await?;
        let PeerMsg::Report { origins, .. } = msg else {
            return Err("unexpected peer message".into());
        };
        // Map the peer's origins onto ours by address; ignore origins we do not link to.
        let reports: Vec<(OriginId, Duration)> = origins
            .iter()
            .filter_map(|r| {
                let o = shared.origin_at(&r.addr)?;
                Some((o.id, Duration::from_micros(u64::from(r.rtt_us))))
            })
            .collect();
        let cmd = Cmd::PeerReport {
            peer: peer.id,
            rtt: conn.rtt(),
            reports,
        };
        if shared.cmd.send(cmd).await.is_err() {
            return Ok(());
        }
    }
}

/// Opens a forwarded origin link to `origin` through `peer`. The returned
/// connection speaks the origin link protocol.
pub(crate) async fn connect_via(
    shared: &Shared,
    peer: &PeerSpec,
    origin: SocketAddr,
) -> Result<Connection, String> {
    let conn = connect_peer(shared, peer).await?;
    let ask = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let via = PeerMsg::Via {
            version: PROTOCOL_VERSION,
            relay: shared.settings.info.id,
            origin: origin.to_string(),
        };
        send.write_all(&peer_frame(&via)?)
            .await
            .map_err(|e| e.to_string())?;
        let mut dec = FrameDecoder::new(MAX_PEER_FRAME);
        match read_peer_msg(&mut recv, &mut dec).await? {
            PeerMsg::ViaReady => Ok(()),
            PeerMsg::ViaRefused { reason } => Err(format!("peer refused: {reason}")),
            other => Err(format!("unexpected answer {other:?}")),
        }
    };
    match tokio::time::timeout(VIA_TIMEOUT, ask).await {
        Ok(Ok(())) => Ok(conn),
        Ok(Err(e)) => {
            conn.close(0u32.into(), b"via refused");
            Err(e)
        }
        Err(_) => {
            conn.close(0u32.into(), b"via timeout");
            Err("via timeout".into())
        }
    }
}

/// Serves a connection from a peer relay (ALPN `skylane-peer/1`).
pub(crate) async fn serve_peer(shared: Arc<Shared>, conn: Connection) {
    if conn.peer_identity().is_none() {
        // Peer links require mutual TLS; the certificate was verified in the handshake.
        RelayMetrics::count(&shared.metrics.refusals, "peer_without_certificate");
        conn.close(1u32.into(), b"peer certificate required");
        return;
    }
    let Ok(Ok((mut send, mut recv))) =
        tokio::time::timeout(shared.settings.limits.hello_timeout, conn.accept_bi()).await
    else {
        conn.close(1u32.into(), b"no control stream");
        return;
    };
    let mut dec = FrameDecoder::new(MAX_PEER_FRAME);
    let first = tokio::time::timeout(
        shared.settings.limits.hello_timeout,
        read_peer_msg(&mut recv, &mut dec),
    )
    .await;
    match first {
        Ok(Ok(PeerMsg::Hello { version, relay })) if version == PROTOCOL_VERSION => {
            debug!(peer = %relay, "peer measuring us");
            let mut tick = tokio::time::interval(REPORT_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = conn.closed() => return,
                }
                let report = PeerMsg::Report {
                    relay: shared.settings.info.id,
                    origins: shared
                        .direct_rtts()
                        .into_iter()
                        .map(|(addr, rtt)| OriginReport {
                            addr: addr.to_string(),
                            rtt_us: u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX),
                        })
                        .collect(),
                };
                let Ok(bytes) = peer_frame(&report) else {
                    return;
                };
                if send.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        }
        Ok(Ok(PeerMsg::Via {
            version,
            relay,
            origin,
        })) if version == PROTOCOL_VERSION => {
            let spec = shared.origin_at(&origin);
            let Some(spec) = spec else {
                RelayMetrics::count(&shared.metrics.refusals, "via_unknown_origin");
                answer(
                    &mut send,
                    &PeerMsg::ViaRefused {
                        reason: format!("origin {origin} is not one of this relay's"),
                    },
                )
                .await;
                return;
            };
            let up = match shared.connect_origin_direct(&spec).await {
                Ok(c) => c,
                Err(e) => {
                    RelayMetrics::count(&shared.metrics.refusals, "via_origin_unreachable");
                    answer(
                        &mut send,
                        &PeerMsg::ViaRefused {
                            reason: format!("origin {origin} unreachable: {e}"),
                        },
                    )
                    .await;
                    return;
                }
            };
            answer(&mut send, &PeerMsg::ViaReady).await;
            info!(peer = %relay, origin = %spec.id, "forwarding an origin link");
            shared.metrics.forwarded_links.inc();
            splice(conn, up).await;
            shared.metrics.forwarded_links.dec();
            info!(peer = %relay, origin = %spec.id, "forwarded origin link closed");
        }
        Ok(Ok(_)) | Ok(Err(_)) | Err(_) => {
            RelayMetrics::count(&shared.metrics.decode_errors, "peer_first_message");
            conn.close(1u32.into(), b"bad first peer message");
        }
    }
}

async fn answer(send: &mut quinn::SendStream, msg: &PeerMsg) {
    if let Ok(b) = peer_frame(msg) {
        let _ = send.write_all(&b).await;
    }
}

/// Copies every stream and datagram between `down` and `up` until either closes.
async fn splice(down: Connection, up: Connection) {
    let mut tasks = JoinSet::new();
    for (a, b) in [(down.clone(), up.clone()), (up.clone(), down.clone())] {
        {
            let (a, b) = (a.clone(), b.clone());
            tasks.spawn(async move {
                let mut copies = JoinSet::new();
                while let Ok((a_send, a_recv)) = a.accept_bi().await {
                    let Ok((b_send, b_recv)) = b.open_bi().await else {
                        return;
                    };
                    copies.spawn(copy(a_recv, b_send));
                    copies.spawn(copy(b_recv, a_send));
                }
            });
        }
        {
            let (a, b) = (a.clone(), b.clone());
            tasks.spawn(async move {
                let mut copies = JoinSet::new();
                while let Ok(a_recv) = a.accept_uni().await {
                    let Ok(b_send) = b.open_uni().await else {
                        return;
                    };
                    copies.spawn(copy(a_recv, b_send));
                }
            });
        }
        tasks.spawn(async move {
            while let Ok(d) = a.read_datagram().await {
                // Datagrams are unreliable: one that no longer fits is dropped.
                let _ = b.send_datagram(d);
            }
        });
    }
    let reason = tokio::select! {
        r = down.closed() => r,
        r = up.closed() => r,
    };
    debug!(cause = %reason, "splice ended");
    down.close(0u32.into(), b"forwarded link closed");
    up.close(0u32.into(), b"forwarded link closed");
    tasks.shutdown().await;
}

async fn copy(mut from: quinn::RecvStream, mut to: quinn::SendStream) {
    match tokio::io::copy(&mut from, &mut to).await {
        Ok(_) => {
            let _ = to.finish();
        }
        Err(e) => {
            debug!(cause = %e, "forwarded stream failed");
            let _ = to.reset(0u32.into());
            let _ = from.stop(0u32.into());
        }
    }
}
