//! The lanes into one origin link: a control lane (session changes, feed
//! subscriptions, pings) whose overflow sheds measurements but closes the link
//! rather than lose a session change, one action lane per event class, and
//! movement as datagrams; each lane written by its own task.

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use quinn::Connection;
use skylane_proto::{
    encode_frame_to_bytes, Action, EventClass, LinkMsg, SessionId, DEFAULT_MAX_FRAME, MAX_DATAGRAM,
};
use tokio::sync::mpsc;
use tracing::warn;

/// Control frames queued towards one origin before the link counts as stuck.
pub(crate) const LINK_CONTROL_QUEUE: usize = 65_536;

/// Application close code of a link the relay gave up on because its control
/// lane was full.
const LINK_BACKLOG_CODE: u32 = 2;

/// Senders into one origin link.
#[derive(Clone)]
pub(crate) struct LinkTx {
    pub(crate) conn: Connection,
    pub(crate) control: mpsc::Sender<Bytes>,
    pub(crate) actions: Vec<mpsc::Sender<Bytes>>,
    /// `link_control_dropped` and `link_backlog_cuts` (the rest of the metrics
    /// would make every `Cmd` as large as this).
    pub(crate) shed: Counter,
    pub(crate) cuts: Counter,
}

/// What becomes of a control message its link's lane has no room for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WhenFull {
    /// A measurement (ping, pong): lost like a datagram, counted.
    Shed,
    /// It changes what the origin knows of sessions or feeds: losing it would
    /// leave the origin wrong (a session never opened, a player never leaving),
    /// so the link is closed instead. The reconnect re-opens every session from
    /// its cursors and every spectator feed, and the origin drops the sessions
    /// nobody re-opens after its grace period.
    CutLink,
}

fn when_full(msg: &LinkMsg) -> WhenFull {
    match msg {
        LinkMsg::Ping(_) | LinkMsg::Pong(_) | LinkMsg::SessionPing { .. } => WhenFull::Shed,
        _ => WhenFull::CutLink,
    }
}

impl LinkTx {
    /// Queues a control message; see [`WhenFull`] for a full lane. A closed lane
    /// (the link is going down) needs nothing: the next link re-opens everything.
    pub(crate) fn send_control(&self, msg: &LinkMsg) {
        let kind = match encode_frame_to_bytes(msg, DEFAULT_MAX_FRAME) {
            Ok(b) => match self.control.try_send(b) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(_)) => when_full(msg),
            },
            Err(e) => {
                // Only an oversized frame fails to encode: a bug, not a load
                // issue, and a reconnect would fail the same way.
                warn!(cause = %e, "link control message not encodable; dropped");
                return;
            }
        };
        match kind {
            WhenFull::Shed => {
                self.shed.inc();
            }
            WhenFull::CutLink => {
                if self.conn.close_reason().is_none() {
                    self.cuts.inc();
                    warn!(
                        queued = LINK_CONTROL_QUEUE,
                        "origin link control lane full: closing the link to re-open its sessions"
                    );
                    self.conn
                        .close(LINK_BACKLOG_CODE.into(), b"relay control backlog");
                }
            }
        }
    }

    pub(crate) fn send_action(&self, session: SessionId, action: Action) -> bool {
        let class = action.class;
        let msg = LinkMsg::Action { session, action };
        if class == EventClass::Movement {
            if let Ok(d) = skylane_proto::encode_datagram(&msg) {
                if d.len() <= MAX_DATAGRAM
                    && self.conn.max_datagram_size().is_some_and(|m| d.len() <= m)
                {
                    return self.conn.send_datagram(d).is_ok();
                }
            }
        }
        match encode_frame_to_bytes(&msg, DEFAULT_MAX_FRAME) {
            Ok(b) => self.actions[class.rank()].try_send(b).is_ok(),
            Err(_) => false,
        }
    }
}

pub(crate) async fn link_writer(
    conn: Connection,
    mut stream: Option<quinn::SendStream>,
    priority: i32,
    mut rx: mpsc::Receiver<Bytes>,
) {
    while let Some(b) = rx.recv().await {
        if stream.is_none() {
            match conn.open_uni().await {
                Ok(s) => stream = Some(s),
                Err(_) => return,
            }
        }
        let Some(s) = stream.as_mut() else { return };
        let _ = s.set_priority(priority);
        if s.write_all(&b).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::RelayMetrics;
    use prometheus_client::registry::Registry;
    use quinn::Endpoint;
    use skylane_certs::{client_config, server_config, ClientAuth, LocalPki};
    use skylane_proto::{Ping, WorldId};

    /// A real QUIC connection over loopback, and the server's end kept open.
    async fn connection() -> (Connection, Connection, Endpoint, Endpoint) {
        let pki = LocalPki::generate(&[]).unwrap();
        let server = Endpoint::server(
            server_config(&pki.origin, ClientAuth::None).unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
        let mut client = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        client.set_default_client_config(client_config(pki.roots().unwrap(), None).unwrap());
        let addr = server.local_addr().unwrap();
        let (c, s) = tokio::join!(
            async { client.connect(addr, "localhost").unwrap().await.unwrap() },
            async { server.accept().await.unwrap().await.unwrap() },
        );
        (c, s, client, server)
    }

    fn link(conn: Connection, queue: usize) -> (LinkTx, mpsc::Receiver<Bytes>, RelayMetrics) {
        let metrics = RelayMetrics::new(&mut Registry::default());
        let (control, rx) = mpsc::channel(queue);
        let tx = LinkTx {
            conn,
            control,
            actions: Vec::new(),
            shed: metrics.link_control_dropped.clone(),
            cuts: metrics.link_backlog_cuts.clone(),
        };
        (tx, rx, metrics)
    }

    #[test]
    fn measurements_are_shed_and_session_changes_are_not() {
        let ping = Ping {
            nonce: 1,
            sent_us: 2,
        };
        assert_eq!(when_full(&LinkMsg::Ping(ping)), WhenFull::Shed);
        assert_eq!(
            when_full(&LinkMsg::SessionPing {
                session: SessionId(1),
                ping
            }),
            WhenFull::Shed
        );
        assert_eq!(
            when_full(&LinkMsg::SessionClose {
                session: SessionId(1)
            }),
            WhenFull::CutLink
        );
        assert_eq!(
            when_full(&LinkMsg::FeedSubscribe { world: WorldId(1) }),
            WhenFull::CutLink
        );
    }

    #[tokio::test]
    async fn a_full_control_lane_sheds_pings_but_closes_the_link_rather_than_lose_a_session_change()
    {
        let (conn, server_side, _c, _s) = connection().await;
        let (tx, mut rx, metrics) = link(conn.clone(), 1);
        let ping = LinkMsg::Ping(Ping {
            nonce: 1,
            sent_us: 2,
        });
        tx.send_control(&ping);
        tx.send_control(&ping);
        assert_eq!(metrics.link_control_dropped.get(), 1);
        assert!(conn.close_reason().is_none(), "a shed ping keeps the link");

        let close = LinkMsg::SessionClose {
            session: SessionId(7),
        };
        tx.send_control(&close);
        tx.send_control(&close);
        assert_eq!(
            metrics.link_backlog_cuts.get(),
            1,
            "one cut, however many follow"
        );
        assert!(conn.close_reason().is_some());
        match server_side.closed().await {
            quinn::ConnectionError::ApplicationClosed(c) => {
                assert_eq!(c.error_code, LINK_BACKLOG_CODE.into());
            }
            other => panic!("origin saw {other}"),
        }
        // What was queued before the lane filled is still there, in order.
        assert!(rx.recv().await.is_some());
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_closed_control_lane_is_not_a_backlog() {
        let (conn, _server_side, _c, _s) = connection().await;
        let (tx, rx, metrics) = link(conn.clone(), 4);
        drop(rx);
        tx.send_control(&LinkMsg::SessionClose {
            session: SessionId(7),
        });
        assert_eq!(metrics.link_backlog_cuts.get(), 0);
        assert!(conn.close_reason().is_none());
    }
}
