//! What a relay is given to run: its origins and peers, limits and timers, the
//! cores' settings and the TLS and transport configurations, assembled once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use skylane_proto::{RelayId, RelayInfo, TokenVerifier, WorldId};

use crate::admission::AdmissionConfig;
use crate::config::RelayConfig;
use crate::geo::{Directory, GeoDb};
use crate::guard::EdgeConfig;
use crate::hub::HubConfig;
use crate::routing::{OriginId, RoutingConfig};
use crate::scheduler::SchedulerConfig;
use crate::session::TicketKey;
use crate::spectate::AudienceConfig;
use crate::targets::{parse_origin, parse_peer};
use skylane_ops::ConfigError;

/// An origin this relay links to.
#[derive(Debug, Clone)]
pub struct OriginSpec {
    /// Its id in this relay's routing table.
    pub id: OriginId,
    /// Address (QUIC, mutual TLS).
    pub addr: SocketAddr,
    /// TLS server name in its certificate.
    pub server_name: String,
    /// Worlds it hosts.
    pub worlds: Vec<WorldId>,
}

/// Limits and timers.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connection admission.
    pub admission: AdmissionConfig,
    /// Cool-downs of subjects the edge guard cut.
    pub penalties: crate::penalty::PenaltyConfig,
    /// Sessions held (connected and detached).
    pub max_sessions: usize,
    /// Largest frame accepted from a client.
    pub max_client_frame: usize,
    /// Actions buffered for a session until the origin acknowledges it.
    pub pending_actions: usize,
    /// How long a disconnected session is kept for a resume.
    pub session_grace: Duration,
    /// How long a resume ticket is valid.
    pub ticket_ttl: Duration,
    /// Time a new connection has to send its first message.
    pub hello_timeout: Duration,
    /// Longest a drain waits for clients to leave.
    pub drain_deadline: Duration,
    /// Longest wait between two attempts to reconnect an origin link.
    pub link_backoff_max: Duration,
    /// Spectator feed bounds (longest delay, buffered bytes, filter size).
    pub spectators: AudienceConfig,
    /// Frames queued for one spectator before it skips to the next keyframe.
    pub spectator_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            admission: AdmissionConfig::default(),
            penalties: crate::penalty::PenaltyConfig::default(),
            max_sessions: 50_000,
            max_client_frame: 16 * 1024,
            pending_actions: 64,
            session_grace: Duration::from_secs(30),
            ticket_ttl: Duration::from_secs(3600),
            hello_timeout: Duration::from_secs(5),
            drain_deadline: Duration::from_secs(30),
            spectators: AudienceConfig::default(),
            spectator_queue: 64,
            link_backoff_max: Duration::from_secs(1),
        }
    }
}

/// Everything a relay needs besides its endpoint.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// This relay.
    pub info: RelayInfo,
    /// Every relay of the deployment (this one included), for GeoIP answers.
    pub directory: Directory,
    /// GeoIP database, if configured.
    pub geo: Option<Arc<GeoDb>>,
    /// Origins and the worlds they host.
    pub origins: Vec<OriginSpec>,
    /// Client configuration for origin links (mutual TLS).
    pub link_tls: quinn::ClientConfig,
    /// Token verification (the trusted key set, audience), replaceable while
    /// the relay runs (key rotation: [`Relay::load`](crate::Relay::load)
    /// watches the key file).
    pub tokens: TokenKeys,
    /// The token key file, watched while the relay runs: a changed key set
    /// replaces `tokens` (`None`: the keys never change).
    pub token_key_file: Option<std::path::PathBuf>,
    /// Revoked subjects and token ids: hellos they cover are refused, sessions
    /// of a revoked subject closed.
    pub revocations: RevocationList,
    /// The revocation file, watched while the relay runs (`None`: none).
    pub revocation_file: Option<std::path::PathBuf>,
    /// The control plane's bans (kept current from its view), checked like
    /// revocations.
    pub bans: RevocationList,
    /// Deployment-wide resume ticket key.
    pub tickets: TicketKey,
    /// Limits and timers.
    pub limits: Limits,
    /// Edge anti-cheat.
    pub edge: EdgeConfig,
    /// Per-connection scheduler bounds.
    pub scheduler: SchedulerConfig,
    /// Per-client movement view (datagram size, byte budget, resend time).
    pub movement: crate::movement::MovementConfig,
    /// Fan-out ring and hole timeout.
    pub hub: HubConfig,
    /// Path selection.
    pub routing: RoutingConfig,
    /// Peer relays to measure and forward through (see the shell's `peer` module).
    pub peers: Vec<PeerSpec>,
    /// Client configuration for peer links (mutual TLS, ALPN `skylane-peer/1`);
    /// `None` disables outgoing peer links.
    pub peer_tls: Option<quinn::ClientConfig>,
    /// Analytics rows (sessions, spectator joins); disabled unless set
    /// (the binary sets it from the `[analytics]` table).
    pub analytics: skylane_analytics::Emitter,
    /// Content packs served to clients (`None`: no content).
    pub content: Option<crate::ContentSettings>,
}

/// Bytes of datagrams quinn may queue per client connection (the relay itself
/// keeps movement to about two datagrams in there: see the writer).
pub(crate) const DATAGRAM_SEND_BUFFER: usize = 64 * 1024;

/// Transport settings for the client-facing endpoint: bounded per-connection
/// memory (stream and connection windows, a few streams per client), idle
/// detection, keep-alive.
pub fn client_transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Duration::from_secs(10).try_into().ok())
        // Only fires when the client has been silent this long (any packet
        // received resets it): the SDK keeps its own connection alive at a
        // quarter of its idle timeout, so with SDK clients the relay sends no
        // keep-alives of its own; at 2 s it doubled the idle chatter of every
        // client configured for longer idle periods.
        .keep_alive_interval(Some(Duration::from_secs(4)))
        .max_concurrent_uni_streams(16u32.into())
        .max_concurrent_bidi_streams(2u32.into())
        .stream_receive_window((64u32 * 1024).into())
        .receive_window((256u32 * 1024).into())
        // Unacknowledged bytes a connection may hold. Large on purpose: when it
        // fills, every stream's writes block, critical included, so bulk must
        // never be able to fill it. What it holds are shared frames (written
        // without a copy) that the scheduler's per-class bounds already limit.
        .send_window(8 * 1024 * 1024)
        .datagram_receive_buffer_size(Some(64 * 1024))
        .datagram_send_buffer_size(DATAGRAM_SEND_BUFFER)
        // No segmentation offload: with it, every connection keeps a transmit
        // buffer sized for a 10-packet burst (~14 KiB) for its whole life; without,
        // one packet (~1.5 KiB). A game client's traffic is small frames, one or two
        // packets per flush, so GSO saves little CPU here and the memory is
        // multiplied by every idle player (docs/benchmarks.md, memory per session).
        .enable_segmentation_offload(false);
    t
}

/// Transport settings for origin and peer links with the default dead-link
/// detection (1.2 s idle timeout, keep-alive every 250 ms).
pub fn link_transport() -> quinn::TransportConfig {
    link_transport_with(LINK_IDLE_TIMEOUT, LINK_KEEP_ALIVE)
}

/// Default time without a packet after which an origin or peer link is dead.
pub const LINK_IDLE_TIMEOUT: Duration = Duration::from_millis(1200);
/// Default keep-alive interval of origin and peer links.
pub const LINK_KEEP_ALIVE: Duration = Duration::from_millis(250);

/// Transport settings for origin links (mutual TLS, many sessions multiplexed):
/// a link is dead after `idle` without a packet, and keep-alives every
/// `keep_alive` make sure a live idle link is never mistaken for a dead one.
/// Sessions wait on a dead link until it reconnects (or routes through a peer),
/// so the idle timeout is how long players stall when an origin dies: it was
/// 5 s, which kept players waiting 5 s for an origin that was back after 3.
pub fn link_transport_with(idle: Duration, keep_alive: Duration) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(idle.try_into().ok())
        .keep_alive_interval(Some(keep_alive.min(idle / 2)))
        .max_concurrent_uni_streams(64u32.into());
    t
}

/// A peer relay this relay measures and may forward through.
#[derive(Debug, Clone)]
pub struct PeerSpec {
    /// Its relay id.
    pub id: RelayId,
    /// Its address (the same endpoint that serves its clients).
    pub addr: SocketAddr,
    /// TLS server name in its certificate.
    pub server_name: String,
}

/// A value every admission reads and a file watcher replaces whole while the
/// relay runs (the token key set, the revocations). Cheap to clone.
#[derive(Debug)]
pub struct Current<T>(Arc<std::sync::RwLock<Arc<T>>>);

impl<T> Clone for Current<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Current<T> {
    /// Starts with `value`.
    pub fn new(value: T) -> Self {
        Self(Arc::new(std::sync::RwLock::new(Arc::new(value))))
    }

    /// The value now (one hello is checked against one value, whole).
    pub fn current(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the value.
    pub fn replace(&self, value: T) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(value);
    }

    /// Whether some other handle still uses it (a watcher stops when it holds
    /// the last one).
    pub fn shared(&self) -> bool {
        Arc::strong_count(&self.0) > 1
    }
}

/// The token verifier in use (rotation: add the new key, issue with it,
/// retire the old one).
pub type TokenKeys = Current<TokenVerifier>;

/// The revocations in force.
pub type RevocationList = Current<crate::revocation::Revocations>;

/// What a relay needs besides its configuration: key material and data that
/// the binary reads from files, and the local network and tests make in memory.
#[derive(Debug, Clone)]
pub struct RelayMaterial {
    /// Client configuration for origin links (mutual TLS).
    pub link_tls: quinn::ClientConfig,
    /// Client configuration for peer links; `None` disables them.
    pub peer_tls: Option<quinn::ClientConfig>,
    /// Token verification (public key, audience).
    pub tokens: TokenVerifier,
    /// The revocations read at start (the configured file's).
    pub revocations: crate::revocation::Revocations,
    /// Deployment-wide resume ticket key.
    pub tickets: TicketKey,
    /// GeoIP database.
    pub geo: Option<Arc<GeoDb>>,
}

impl RelaySettings {
    /// The one way a relay's settings are built: from its configuration (origins
    /// and peers resolved, every tunable checked) and its material.
    pub fn from_config(cfg: &RelayConfig, material: RelayMaterial) -> Result<Self, ConfigError> {
        let mut origins = Vec::new();
        for (i, o) in cfg.origins.iter().enumerate() {
            let target = parse_origin(o)?;
            origins.push(OriginSpec {
                id: OriginId(i as u32 + 1),
                addr: target.resolve()?,
                server_name: target.tls_name,
                worlds: target.worlds,
            });
        }
        let info = cfg.info();
        let mut relays = vec![info.clone()];
        let mut peers = Vec::new();
        for p in &cfg.peers {
            let target = parse_peer(p)?;
            if target.info.id == info.id {
                // One list can serve every relay of a deployment.
                continue;
            }
            peers.push(PeerSpec {
                id: target.info.id,
                addr: target.resolve()?,
                server_name: target.tls_name.clone(),
            });
            relays.push(target.info);
        }
        let limits = Limits {
            admission: AdmissionConfig {
                max_conns_per_ip: cfg.max_conns_per_ip,
                handshakes_per_sec: cfg.handshakes_per_sec,
                max_conns: cfg.max_sessions,
            },
            penalties: crate::penalty::PenaltyConfig {
                base: Duration::from_secs(cfg.edge_cooldown_secs),
                max: Duration::from_secs(cfg.edge_cooldown_max_secs),
                ..crate::penalty::PenaltyConfig::default()
            },
            max_sessions: cfg.max_sessions,
            max_client_frame: cfg.max_client_frame,
            pending_actions: cfg.pending_actions,
            session_grace: Duration::from_secs(cfg.session_grace_secs),
            ticket_ttl: Duration::from_secs(cfg.ticket_ttl_secs),
            hello_timeout: Duration::from_millis(cfg.hello_timeout_ms),
            drain_deadline: Duration::from_secs(cfg.drain_deadline_secs),
            spectators: AudienceConfig {
                max_delay: Duration::from_secs(cfg.spectator_max_delay_secs),
                default_min_delay: Duration::from_secs(cfg.spectator_min_delay_secs),
                max_buffer_bytes: cfg.spectator_buffer_mib << 20,
                ..AudienceConfig::default()
            },
            spectator_queue: cfg.spectator_queue,
            link_backoff_max: Duration::from_millis(cfg.link_backoff_max_ms),
        };
        let link_transport = Arc::new(link_transport_with(
            Duration::from_millis(cfg.link_idle_timeout_ms),
            Duration::from_millis(cfg.link_keep_alive_ms),
        ));
        let mut link_tls = material.link_tls;
        link_tls.transport_config(link_transport.clone());
        let peer_tls = material.peer_tls.map(|mut p| {
            p.transport_config(link_transport);
            p
        });
        Ok(Self {
            info,
            directory: Directory::new(relays),
            geo: material.geo,
            origins,
            link_tls,
            tokens: TokenKeys::new(material.tokens),
            token_key_file: cfg
                .token_key
                .clone()
                .or_else(|| cfg.dev_certs.as_ref().map(|d| d.join("token.pub"))),
            revocations: Current::new(material.revocations),
            revocation_file: cfg.revocations.clone(),
            bans: Current::new(crate::revocation::Revocations::default()),
            tickets: material.tickets,
            limits,
            edge: cfg.edge()?,
            scheduler: cfg.scheduler()?,
            movement: cfg.movement()?,
            hub: cfg.hub(),
            routing: cfg.routing()?,
            peers,
            peer_tls,
            analytics: skylane_analytics::Emitter::disabled(),
            content: cfg.content()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::Rate;
    use skylane_certs::{client_config, LocalPki};
    use skylane_proto::{EventClass, TokenKeyPair};

    fn material() -> RelayMaterial {
        let pki = LocalPki::generate(&[]).unwrap();
        let pair = TokenKeyPair::generate().unwrap();
        RelayMaterial {
            link_tls: client_config(pki.roots().unwrap(), Some(&pki.relay)).unwrap(),
            peer_tls: None,
            tokens: TokenVerifier::from_pem(&pair.public_pem, "skylane").unwrap(),
            revocations: crate::revocation::Revocations::default(),
            tickets: TicketKey::new(&[1; 32]),
            geo: None,
        }
    }

    #[test]
    fn every_tunable_reaches_the_settings_from_the_configuration() {
        let cfg = RelayConfig {
            id: 2,
            origins: vec!["origin.example@127.0.0.1:4500=1+2".into()],
            peers: vec!["1/a/0/0/127.0.0.1:1".into(), "2/b/0/0/127.0.0.1:2".into()],
            edge_rates: "movement=10/20".into(),
            edge_replay_window: 64,
            scheduler_capacity: "bulk=8".into(),
            scheduler_deadline_ms: "movement=40,bulk=none".into(),
            hub_ring: 32,
            routing_hold_ms: 500,
            pending_actions: 7,
            spectator_max_delay_secs: 90,
            ..RelayConfig::default()
        };
        let s = RelaySettings::from_config(&cfg, material()).unwrap();
        let o = &s.origins[0];
        assert_eq!(o.server_name, "origin.example");
        assert_eq!(o.addr, "127.0.0.1:4500".parse().unwrap());
        assert_eq!(o.worlds, vec![WorldId(1), WorldId(2)]);
        assert_eq!(s.peers.len(), 1, "its own entry is skipped");
        assert_eq!(s.directory.relays().len(), 2);
        let m = EventClass::Movement.rank();
        assert_eq!(
            s.edge.rates[m],
            Rate {
                per_sec: 10.0,
                burst: 20.0
            }
        );
        assert_eq!(
            s.edge.rates[EventClass::State.rank()],
            EdgeConfig::default().rates[1]
        );
        assert_eq!(s.edge.replay_window, 64);
        assert_eq!(s.scheduler.capacity[EventClass::Bulk.rank()], 8);
        assert_eq!(s.scheduler.deadline[m], Some(Duration::from_millis(40)));
        assert_eq!(s.scheduler.deadline[EventClass::Bulk.rank()], None);
        assert_eq!(s.hub.ring, 32);
        assert_eq!(s.routing.hold, Duration::from_millis(500));
        assert_eq!(s.limits.pending_actions, 7);
        assert_eq!(s.limits.spectators.max_delay, Duration::from_secs(90));
    }

    #[test]
    fn a_bad_tunable_is_refused_by_name() {
        for (cfg, key) in [
            (
                RelayConfig {
                    edge_rates: "movement=fast".into(),
                    ..RelayConfig::default()
                },
                "edge_rates",
            ),
            (
                RelayConfig {
                    scheduler_capacity: "warp=1".into(),
                    ..RelayConfig::default()
                },
                "scheduler_capacity",
            ),
            (
                RelayConfig {
                    edge_replay_window: 5000,
                    ..RelayConfig::default()
                },
                "edge_replay_window",
            ),
            (
                RelayConfig {
                    routing_margin: 1.5,
                    ..RelayConfig::default()
                },
                "routing_margin",
            ),
        ] {
            let err = RelaySettings::from_config(&cfg, material())
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{err}");
        }
    }
}
