//! One task per origin: keeps the origin link connected over the path the
//! routing table chose (direct, or forwarded by a peer relay), reads the origin's
//! lanes into the actor's mailbox, measures the direct path, and hands the
//! link's lanes to the actor when it comes up.

use std::sync::Arc;
use std::time::Duration;

use quinn::Connection;
use skylane_proto::{
    encode_frame_to_bytes, EventClass, FrameDecoder, LinkMsg, DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::metrics::RelayMetrics;
use crate::routing::{OriginId, Path};
use crate::settings::OriginSpec;

use super::lanes::{link_writer, LinkTx, LINK_CONTROL_QUEUE};
use super::mailbox::{Cmd, Shared};
use super::peer::connect_via;

async fn link_reader(
    shared: Arc<Shared>,
    origin: OriginId,
    mut recv: quinn::RecvStream,
    mut dec: FrameDecoder,
) {
    loop {
        loop {
            match dec.poll_frame() {
                Ok(Some(body)) => {
                    if shared
                        .cmd
                        .send(Cmd::FromOrigin { origin, body })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    RelayMetrics::count(&shared.metrics.decode_errors, e.label());
                    let _ = recv.stop(1u32.into());
                    return;
                }
            }
        }
        match recv.read_chunk(DEFAULT_MAX_FRAME, true).await {
            Ok(Some(c)) => dec.push(&c.bytes),
            _ => return,
        }
    }
}

/// Keeps one origin link connected over the path the routing table chose:
/// straight to the origin, or forwarded by a peer relay. Reconnects with
/// exponential backoff and jitter; follows route changes by closing the link and
/// reconnecting (the actor reopens its sessions with their cursors, so nothing is
/// lost or repeated). While forwarded, it probes the direct path every two
/// seconds so the route can come back when the direct path heals.
pub(crate) async fn link_task(
    shared: Arc<Shared>,
    spec: OriginSpec,
    mut route: watch::Receiver<Option<Path>>,
) {
    let mut backoff = Backoff::with_max(
        u64::from(spec.id.0) ^ u64::from(shared.settings.info.id.0) << 32,
        shared.settings.limits.link_backoff_max,
    );
    loop {
        let path = route.borrow_and_update().unwrap_or(Path::Direct(spec.id));
        let conn = match path {
            Path::Direct(_) => shared.connect_origin_direct(&spec).await,
            Path::Via(peer, _) => match shared.peer(peer) {
                Some(p) => connect_via(&shared, &p, spec.addr).await,
                None => Err(format!("unknown peer {peer}")),
            },
        };
        let conn = match conn {
            Ok(c) => start_link(&shared, &spec, path, c).await,
            Err(e) => Err(e),
        };
        match conn {
            Ok(conn) => {
                backoff.reset();
                let failed = tokio::select! {
                    reason = conn.closed() => {
                        warn!(origin = %spec.id, ?path, cause = %reason, "origin link down");
                        true
                    }
                    () = route_moves_away(&mut route, path) => {
                        info!(origin = %spec.id, from = ?path, "origin link following a route change");
                        conn.close(0u32.into(), b"re-routed");
                        false
                    }
                    () = probe_direct(&shared, &spec, path) => false,
                };
                let _ = shared
                    .cmd
                    .send(Cmd::LinkDown {
                        origin: spec.id,
                        path,
                        failed,
                    })
                    .await;
                if !failed {
                    continue;
                }
            }
            Err(e) => {
                debug!(origin = %spec.id, ?path, cause = %e, "origin link connect failed");
                let _ = shared
                    .cmd
                    .send(Cmd::LinkDown {
                        origin: spec.id,
                        path,
                        failed: true,
                    })
                    .await;
            }
        }
        // Wait out the backoff, unless the route changes meanwhile.
        tokio::select! {
            () = tokio::time::sleep(backoff.next_wait()) => {}
            () = route_moves_away(&mut route, path) => {}
        }
    }
}

/// Resolves when the chosen route is a usable path other than `path`.
async fn route_moves_away(route: &mut watch::Receiver<Option<Path>>, path: Path) {
    loop {
        if route.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        if route.borrow_and_update().is_some_and(|p| p != path) {
            return;
        }
    }
}

/// While `path` is forwarded, measures the direct path every two seconds with a
/// bare handshake and reports it; never resolves.
async fn probe_direct(shared: &Shared, spec: &OriginSpec, path: Path) {
    if matches!(path, Path::Direct(_)) {
        return std::future::pending().await;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Ok(c) = shared.connect_origin_direct(spec).await {
            let rtt = c.rtt();
            c.close(0u32.into(), b"probe");
            let _ = shared
                .cmd
                .send(Cmd::DirectRtt {
                    origin: spec.id,
                    rtt,
                })
                .await;
        }
    }
}

/// Starts the origin link protocol on a connection (direct or forwarded) and
/// hands the link to the actor.
async fn start_link(
    shared: &Arc<Shared>,
    spec: &OriginSpec,
    path: Path,
    conn: Connection,
) -> Result<Connection, String> {
    let (mut ctl_send, ctl_recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let hello = LinkMsg::LinkHello {
        version: PROTOCOL_VERSION,
        relay: shared.settings.info.id,
    };
    let bytes = encode_frame_to_bytes(&hello, DEFAULT_MAX_FRAME).map_err(|e| e.to_string())?;
    ctl_send
        .write_all(&bytes)
        .await
        .map_err(|e| e.to_string())?;
    let _ = ctl_send.set_priority(10);
    let origin = spec.id;
    tokio::spawn(link_reader(
        shared.clone(),
        origin,
        ctl_recv,
        FrameDecoder::default(),
    ));
    {
        let (conn, shared) = (conn.clone(), shared.clone());
        tokio::spawn(async move {
            while let Ok(r) = conn.accept_uni().await {
                tokio::spawn(link_reader(
                    shared.clone(),
                    origin,
                    r,
                    FrameDecoder::default(),
                ));
            }
        });
    }
    let (control, crx) = mpsc::channel(LINK_CONTROL_QUEUE);
    tokio::spawn(link_writer(conn.clone(), Some(ctl_send), 10, crx));
    let mut actions = Vec::new();
    for class in EventClass::ALL {
        let (tx, rx) = mpsc::channel(16_384);
        tokio::spawn(link_writer(conn.clone(), None, class.quic_priority(), rx));
        actions.push(tx);
    }
    if matches!(path, Path::Direct(_)) {
        // quinn's smoothed RTT of a direct link is the direct path's cost.
        let (conn, shared) = (conn.clone(), shared.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                // Checked after the wait: a report from a link that died meanwhile
                // would tell the routing table the dead direct path is fine (the
                // route flapped back to it once the link's death was noticed fast).
                if conn.close_reason().is_some() {
                    return;
                }
                let rtt = conn.rtt();
                if shared
                    .cmd
                    .send(Cmd::DirectRtt { origin, rtt })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
    shared.metrics.link_connects.inc();
    info!(origin = %origin, addr = %spec.addr, ?path, "origin link up");
    let link = LinkTx {
        conn: conn.clone(),
        control,
        actions,
        shed: shared.metrics.link_control_dropped.clone(),
        cuts: shared.metrics.link_backlog_cuts.clone(),
    };
    shared
        .cmd
        .send(Cmd::LinkUp { origin, path, link })
        .await
        .map_err(|_| "relay stopped".to_string())?;
    Ok(conn)
}
