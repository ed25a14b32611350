//! The actor's mailbox ([`Cmd`]) and what every task of the relay shares
//! ([`Shared`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use quinn::{Connection, Endpoint};
use rustc_hash::FxHashMap as HashMap;
use skylane_proto::{Action, Ping, Refusal, RelayInfo, SessionId, SpectatorSubscribe, Welcome};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::debug;

use crate::admission::Admission;
use crate::clock::UnixClock;
use crate::hello::Admitted;
use crate::metrics::RelayMetrics;
use crate::routing::{OriginId, Path};
use crate::session::ConnId;
use crate::settings::{OriginSpec, RelaySettings};
use crate::status::RelayStatus;

use super::lanes::LinkTx;
use super::writer::Outbox;

/// Everything the actor is told, by every other task of the relay.
pub(crate) enum Cmd {
    /// The control plane's view changed.
    Cluster(Box<skylane_control::ClusterView>),
    /// The revocations changed: close the sessions of revoked subjects.
    Revoked,
    /// The edge guard cut a session for violations: its subject cools down
    /// and the session ends (no resume brings it back).
    EdgeCut {
        /// The session.
        session: SessionId,
        /// The rule that tripped (the violation's metric label).
        rule: &'static str,
        /// The violation, in words and numbers.
        evidence: String,
    },
    /// A client passed the offline checks and asks for a session.
    Hello {
        conn_id: ConnId,
        ip: IpAddr,
        hello: Admitted,
        out: Arc<Outbox>,
        conn: Connection,
        reply: oneshot::Sender<Result<Welcome, Refusal>>,
    },
    Action {
        session: SessionId,
        action: Action,
    },
    OriginPing {
        session: SessionId,
        ping: Ping,
    },
    Bye {
        session: SessionId,
    },
    Spectate {
        session: SessionId,
        sub: SpectatorSubscribe,
        tx: mpsc::Sender<Bytes>,
    },
    Gone {
        conn_id: ConnId,
    },
    LinkUp {
        origin: OriginId,
        path: Path,
        link: LinkTx,
    },
    /// A link ended (`failed`) or was closed to follow a route change.
    LinkDown {
        origin: OriginId,
        path: Path,
        failed: bool,
    },
    /// A measurement of the direct path (link RTT, or a probe while forwarded).
    DirectRtt {
        origin: OriginId,
        rtt: Duration,
    },
    PeerReport {
        peer: skylane_proto::RelayId,
        rtt: Duration,
        reports: Vec<(OriginId, Duration)>,
    },
    PeerDown {
        peer: skylane_proto::RelayId,
    },
    FromOrigin {
        origin: OriginId,
        body: Bytes,
    },
    Drain,
    Status(oneshot::Sender<RelayStatus>),
}

/// What every task of a relay reads: settings, metrics, the actor's mailbox, the
/// admission core (locked briefly by the accept loop), the clock and the
/// endpoint.
pub(crate) struct Shared {
    pub(crate) settings: RelaySettings,
    pub(crate) metrics: RelayMetrics,
    pub(crate) cmd: mpsc::Sender<Cmd>,
    pub(crate) admission: Mutex<Admission>,
    /// Subjects the edge guard cut, cooling down (checked at every hello).
    pub(crate) penalties: Mutex<crate::penalty::Penalties>,
    pub(crate) clock: UnixClock,
    pub(crate) endpoint: Endpoint,
    /// RTT of each direct origin link that is up (what peers are told).
    pub(crate) direct: Mutex<HashMap<OriginId, Duration>>,
    /// Origins and peers: the configured ones, and those learnt from the
    /// control plane (the actor updates it; link and peer tasks read it).
    pub(crate) known: Mutex<Known>,
    /// Content packs (`None`: this relay serves none).
    pub(crate) content: Option<Arc<super::content::ContentService>>,
    /// The relays clients are offered (directory answers, go-aways): the
    /// configured ones and those registered with the control plane.
    pub(crate) directory: crate::settings::Current<crate::geo::Directory>,
}

/// Origins and peer relays this relay knows.
#[derive(Debug, Default)]
pub(crate) struct Known {
    pub(crate) origins: HashMap<OriginId, OriginSpec>,
    pub(crate) peers: HashMap<skylane_proto::RelayId, crate::settings::PeerSpec>,
}

impl Known {
    pub(crate) fn from_settings(s: &RelaySettings) -> Self {
        Self {
            origins: s.origins.iter().map(|o| (o.id, o.clone())).collect(),
            peers: s.peers.iter().map(|p| (p.id, p.clone())).collect(),
        }
    }
}

impl Shared {
    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The origin at `addr` (as `ip:port`), if this relay links to it.
    pub(crate) fn origin_at(&self, addr: &str) -> Option<OriginSpec> {
        self.known()
            .origins
            .values()
            .find(|o| o.addr.to_string() == addr)
            .cloned()
    }

    /// A peer relay's spec.
    pub(crate) fn peer(&self, id: skylane_proto::RelayId) -> Option<crate::settings::PeerSpec> {
        self.known().peers.get(&id).cloned()
    }

    /// Records an origin learnt from the control plane (or forgets one).
    pub(crate) fn set_origin(&self, id: OriginId, spec: Option<OriginSpec>) {
        let mut k = self.known();
        match spec {
            Some(s) => k.origins.insert(id, s),
            None => k.origins.remove(&id),
        };
    }

    /// Records a peer learnt from the control plane; `false` if it was known.
    pub(crate) fn add_peer(&self, spec: crate::settings::PeerSpec) -> bool {
        self.known().peers.insert(spec.id, spec).is_none()
    }

    /// Measured direct RTT to each linked origin (the link itself may run
    /// through a peer), by origin address.
    pub(crate) fn direct_rtts(&self) -> Vec<(SocketAddr, Duration)> {
        let Ok(d) = self.direct.lock() else {
            return Vec::new();
        };
        let k = self.known();
        k.origins
            .values()
            .filter_map(|o| d.get(&o.id).map(|rtt| (o.addr, *rtt)))
            .collect()
    }

    pub(crate) fn set_direct(&self, origin: OriginId, rtt: Option<Duration>) {
        if let Ok(mut d) = self.direct.lock() {
            match rtt {
                Some(r) => d.insert(origin, r),
                None => d.remove(&origin),
            };
        }
    }

    /// A QUIC connection from this relay's endpoint (handshake within 5 s).
    pub(crate) async fn dial(
        &self,
        tls: quinn::ClientConfig,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<Connection, String> {
        let connecting = self
            .endpoint
            .connect_with(tls, addr, server_name)
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(Duration::from_secs(5), connecting)
            .await
            .map_err(|_| "handshake timeout".to_string())?
            .map_err(|e| e.to_string())
    }

    /// A mutual-TLS connection straight to an origin (no link protocol yet).
    pub(crate) async fn connect_origin_direct(
        &self,
        spec: &OriginSpec,
    ) -> Result<Connection, String> {
        self.dial(self.settings.link_tls.clone(), spec.addr, &spec.server_name)
            .await
    }

    pub(crate) fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }

    /// The `count` relays nearest to a client at `ip` (GeoIP), or the directory
    /// order when it cannot be placed; an undecodable record is counted.
    pub(crate) fn nearest_relays(&self, ip: IpAddr, count: usize) -> Vec<RelayInfo> {
        let location = match self.settings.geo.as_deref().map(|g| g.lookup(ip)) {
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                self.metrics.geoip_undecodable.inc();
                debug!(cause = %e, "GeoIP lookup failed");
                None
            }
            None => None,
        };
        self.directory.current().for_location(location, count)
    }

    pub(crate) fn alternatives(&self, ip: IpAddr, count: usize) -> Vec<RelayInfo> {
        let me = self.settings.info.id;
        self.nearest_relays(ip, count + 1)
            .into_iter()
            .filter(|r| r.id != me)
            .take(count)
            .collect()
    }
}
