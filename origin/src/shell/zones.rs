//! The zone owners' link (`skylane-zone/1`, mutual TLS): handoff and mirror
//! messages between the origins that own a zoned world's zones.
//!
//! Outgoing: one task per origin ([`spawn_links`]) takes `(zone record,
//! message)` pairs from the zone actors, finds the record's owner in the
//! control plane's view, and writes the message on a unidirectional stream
//! of a connection it keeps per owner (made on first use, dropped on the
//! first error). Nothing is retried here: the handoff core re-sends an
//! unanswered `Out`, and every answer is given again to a re-sent `Out`.
//! The queue is bounded ([`ZONE_QUEUE`]); a full one drops (counted).
//!
//! Incoming ([`serve_zone`]): every unidirectional stream of a connection
//! that negotiated the zone ALPN carries frames of [`ZoneMsg`], each routed
//! to the actor of the zone record it is for.

use std::collections::HashMap;
use std::net::SocketAddr;

use quinn::{Connection, Endpoint, SendStream};
use skylane_control::ClusterView;
use skylane_proto::zones::{zone_record_id, ZoneMsg, ZONE_MAX_FRAME};
use skylane_proto::{encode_frame_to_bytes, FrameDecoder, WorldId};
use tokio::sync::{mpsc, watch};
use tracing::debug;

use crate::metrics::OriginMetrics;

use super::host::SharedDir;
use super::mailbox::Cmd;

/// Messages waiting for the zone link task, at most.
pub(crate) const ZONE_QUEUE: usize = 4096;

/// Where zone actors put their messages.
#[derive(Clone)]
pub(crate) struct ZoneSender {
    tx: mpsc::Sender<(WorldId, ZoneMsg)>,
    metrics: OriginMetrics,
}

impl ZoneSender {
    /// Queues `msg` for the owner of zone record `host`; a full queue drops
    /// it (counted; the handoff core re-sends what matters).
    pub(crate) fn send(&self, host: WorldId, msg: ZoneMsg) {
        if self.tx.try_send((host, msg)).is_err() {
            OriginMetrics::count(&self.metrics.zone_messages, "dropped");
        }
    }
}

/// Starts the outgoing side: connections from `endpoint` with `client` to
/// the owners `view` names.
pub(crate) fn spawn_links(
    endpoint: Endpoint,
    client: quinn::ClientConfig,
    view: watch::Receiver<ClusterView>,
    metrics: OriginMetrics,
) -> ZoneSender {
    let (tx, rx) = mpsc::channel(ZONE_QUEUE);
    tokio::spawn(links(endpoint, client, view, rx, metrics.clone()));
    ZoneSender { tx, metrics }
}

async fn links(
    endpoint: Endpoint,
    client: quinn::ClientConfig,
    view: watch::Receiver<ClusterView>,
    mut rx: mpsc::Receiver<(WorldId, ZoneMsg)>,
    metrics: OriginMetrics,
) {
    let mut open: HashMap<SocketAddr, (Connection, SendStream)> = HashMap::new();
    while let Some((host, msg)) = rx.recv().await {
        let owner = view.borrow().worlds.get(&host).and_then(|r| {
            let o = r.owner.as_ref()?;
            Some((o.addr.parse::<SocketAddr>().ok()?, o.tls_name.clone()))
        });
        let Some((addr, name)) = owner else {
            OriginMetrics::count(&metrics.zone_messages, "no_owner");
            continue;
        };
        let Ok(frame) = encode_frame_to_bytes(&msg, ZONE_MAX_FRAME) else {
            OriginMetrics::count(&metrics.zone_messages, "too_large");
            continue;
        };
        let link = match open.entry(addr) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                match connect(&endpoint, &client, addr, &name).await {
                    Some(c) => e.insert(c),
                    None => {
                        OriginMetrics::count(&metrics.zone_messages, "unreachable");
                        continue;
                    }
                }
            }
        };
        let sent = link.1.write_all(&frame).await.is_ok();
        if sent {
            OriginMetrics::count(&metrics.zone_messages, "sent");
        } else {
            OriginMetrics::count(&metrics.zone_messages, "failed");
            open.remove(&addr);
        }
    }
}

async fn connect(
    endpoint: &Endpoint,
    client: &quinn::ClientConfig,
    addr: SocketAddr,
    name: &str,
) -> Option<(Connection, SendStream)> {
    let conn = endpoint
        .connect_with(client.clone(), addr, name)
        .ok()?
        .await
        .map_err(|e| debug!(%addr, cause = %e, "zone link failed"))
        .ok()?;
    let stream = conn.open_uni().await.ok()?;
    Some((conn, stream))
}

/// Reads a zone owner's connection: every frame to the actor of the zone
/// record it is for.
pub(crate) async fn serve_zone(conn: Connection, dir: SharedDir, metrics: OriginMetrics) {
    while let Ok(mut recv) = conn.accept_uni().await {
        let dir = dir.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut dec = FrameDecoder::new(ZONE_MAX_FRAME);
            loop {
                loop {
                    match dec.poll_message::<ZoneMsg>() {
                        Ok(Some(msg)) => {
                            let host = zone_record_id(msg.world(), msg.receiver());
                            let Some(tx) = dir.world(host) else {
                                OriginMetrics::count(&metrics.zone_messages, "unknown_zone");
                                continue;
                            };
                            OriginMetrics::count(&metrics.zone_messages, "received");
                            if tx.send(Cmd::Zone(Box::new(msg))).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            debug!(cause = %e, "bad zone frame: stream dropped");
                            OriginMetrics::count(&metrics.zone_messages, "malformed");
                            return;
                        }
                    }
                }
                match recv.read_chunk(ZONE_MAX_FRAME, true).await {
                    Ok(Some(chunk)) => dec.push(&chunk.bytes),
                    _ => return,
                }
            }
        });
    }
}
