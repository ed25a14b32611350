//! A whole Skylane deployment in one process on loopback: one origin hosting the
//! arena world and relays in several "regions", over real UDP, QUIC and TLS, with
//! generated certificates, token keys and GeoIP database.
//!
//! `skylane demo` runs on it; benchmarks and examples use it as the real-network
//! counterpart of the netsim harness. Regions are told apart by loopback networks:
//! relay `i` listens on `127.0.i.1` and the generated GeoIP database
//! ([`crate::geoip::DEMO_CSV`]) places `127.0.i.0/24` in that region, so a bot
//! bound to `127.0.i.x` is sent to the nearest relay exactly as a player on the
//! Internet would be. Where the system only routes `127.0.0.1` (macOS), everything
//! falls back to it and the directory order replaces the GeoIP answer.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::registry::Registry;
use skylane_certs::{client_config, peer_client_config, relay_server_config, LocalPki};
use skylane_client::{Client, ClientBuilder};
use skylane_origin::{
    Arena, ArenaConfig, Engine, EngineConfig, OriginHandle, OriginMetrics, OriginServer,
    ServerConfig,
};
use skylane_proto::ed25519_dalek::VerifyingKey;
use skylane_proto::{
    ChainSigner, Claims, RelayId, RelayInfo, Role, TokenKeyPair, TokenSigner, WorldId,
};
use skylane_relay::{
    client_transport, link_transport, GeoDb, Limits, PeerTarget, Relay, RelayConfig, RelayMaterial,
    RelayMetrics, RelaySettings, TicketKey,
};

/// The world the local deployment hosts.
pub const WORLD: WorldId = WorldId(1);
/// Token audience of the local deployment.
pub const AUDIENCE: &str = "skylane";

/// A region of the local deployment: where its relay sits and which loopback
/// network its players use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    /// Relay id.
    pub id: u32,
    /// Region name (as in the GeoIP CSV).
    pub name: &'static str,
    /// Third octet of its loopback network `127.0.n.0/24`.
    pub net: u8,
    /// Latitude of the relay.
    pub lat: f32,
    /// Longitude of the relay.
    pub lon: f32,
}

/// The demo's three regions, matching [`crate::geoip::DEMO_CSV`].
pub const DEMO_REGIONS: [Region; 3] = [
    Region {
        id: 1,
        name: "amsterdam",
        net: 1,
        lat: 52.37,
        lon: 4.90,
    },
    Region {
        id: 2,
        name: "virginia",
        net: 2,
        lat: 38.95,
        lon: -77.45,
    },
    Region {
        id: 3,
        name: "tokyo",
        net: 3,
        lat: 35.68,
        lon: 139.69,
    },
];

/// Why the deployment could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// Certificates or TLS configuration.
    #[error("certificates: {0}")]
    Certs(String),
    /// Token keys.
    #[error("token keys: {0}")]
    Tokens(#[from] skylane_proto::TokenError),
    /// The GeoIP database.
    #[error("GeoIP database: {0}")]
    Geo(String),
    /// A relay's configuration.
    #[error("relay configuration: {0}")]
    Config(String),
    /// A socket could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// Options of [`LocalNet::start`].
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Relay regions.
    pub regions: Vec<Region>,
    /// Origin tick rate.
    pub tick_hz: u32,
    /// Arena rules (map size, items, speed limit...).
    pub arena: ArenaConfig,
    /// Largest action payload the origin accepts.
    pub max_payload: usize,
    /// Relay limits (connections per IP, sessions...).
    pub limits: Limits,
    /// Serve each relay's and the origin's `/metrics` (with the process's CPU
    /// and memory, shared by everything in this process) on a loopback port.
    pub admin: bool,
    /// Most worlds the control plane may place on the origin.
    pub max_worlds: u32,
    /// The control plane to join (`None`: a fresh embedded one).
    pub control: Option<skylane_control::SharedControl>,
    /// The origin's and relays' lease TTL on it.
    pub lease_ttl: Duration,
    /// How long an ended world stays before the origin removes it.
    pub removal_grace: Duration,
    /// Origins (at least 1). The first also hosts the static arena world;
    /// with more, rooms get a standby on another origin that takes them over
    /// if their primary dies.
    pub origins: usize,
    /// The first origin's economy ledger (a redb file): wallets across
    /// worlds, every trade with its balances, conservation (`GET /ledger`).
    /// `None`: no ledger.
    pub ledger: Option<std::path::PathBuf>,
    /// Analytics rows from every origin and relay, and one action outcome
    /// in this many sampled (`None`: analytics off).
    pub analytics: Option<(skylane_analytics::Emitter, u32)>,
    /// Content packs every relay serves (`None`: none).
    pub content: Option<skylane_relay::ContentSettings>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        let mut limits = Limits::default();
        // Every player of a region shares a /24 on one machine.
        limits.admission.max_conns_per_ip = 4096;
        limits.admission.handshakes_per_sec = 20_000;
        Self {
            regions: DEMO_REGIONS.to_vec(),
            tick_hz: 30,
            arena: ArenaConfig {
                width: 400.0,
                height: 400.0,
                items: 100,
                ..ArenaConfig::default()
            },
            max_payload: 16 * 1024,
            limits,
            admin: false,
            max_worlds: 1000,
            control: None,
            lease_ttl: Duration::from_secs(5),
            removal_grace: Duration::from_secs(120),
            origins: 1,
            ledger: None,
            analytics: None,
            content: None,
        }
    }
}

/// An origin beyond the first.
#[derive(Debug)]
pub struct LocalOrigin {
    /// Its node id (`origin-2`).
    pub id: String,
    /// The server.
    pub server: OriginServer,
    /// Its relay-facing address.
    pub addr: SocketAddr,
    /// Its metrics.
    pub metrics: OriginMetrics,
    agent: std::sync::Mutex<Option<skylane_origin::ClusterAgent>>,
}

/// One relay of the deployment.
#[derive(Debug, Clone)]
pub struct LocalRelay {
    /// Its directory entry.
    pub info: RelayInfo,
    /// Its handle.
    pub relay: Relay,
    /// Client-facing address.
    pub addr: SocketAddr,
    /// Its metrics.
    pub metrics: RelayMetrics,
    /// Where its players bind (`127.0.n.0/24`), or `127.0.0.1` on fallback.
    pub player_net: Ipv4Addr,
    /// Its `/metrics` endpoint (with [`LocalOptions::admin`]).
    pub admin: Option<SocketAddr>,
}

/// A running local deployment.
pub struct LocalNet {
    /// Certificates.
    pub pki: LocalPki,
    /// Token signer (issues players' and spectators' tokens).
    pub tokens: Arc<TokenSigner>,
    /// The demo's GeoIP database (the relays' directory uses it).
    pub geo: Arc<GeoDb>,
    /// The matchmaker's token signer (its world tokens; the relays trust it
    /// beside `tokens`).
    pub matchmaker_tokens: Arc<TokenSigner>,
    /// The origin.
    pub origin: OriginServer,
    /// The origin's relay-facing address.
    pub origin_addr: SocketAddr,
    /// The origin's metrics.
    pub origin_metrics: OriginMetrics,
    /// The origin's `/metrics` endpoint (with [`LocalOptions::admin`]).
    pub origin_admin: Option<SocketAddr>,
    /// The origin's batch-signing key (clients verify with it).
    pub origin_key: VerifyingKey,
    /// Relays, in region order.
    pub relays: Vec<LocalRelay>,
    /// Whether per-region loopback networks are in use (false: all on 127.0.0.1).
    pub regional_loopback: bool,
    /// The embedded control plane the origin and the relays are joined to.
    pub control: skylane_control::SharedControl,
    agent: std::sync::Mutex<Option<skylane_origin::ClusterAgent>>,
    /// Origins beyond the first (`origin-2`, ...): rooms only.
    pub more_origins: Vec<LocalOrigin>,
    /// Where the deployment's analytics rows go (disabled without).
    pub analytics: skylane_analytics::Emitter,
    /// Players' UDP sockets, shared by [`PLAYERS_PER_SOCKET`] players each.
    sockets: std::sync::Mutex<std::collections::HashMap<IpAddr, quinn::Endpoint>>,
}

/// Players sharing one UDP socket (quinn endpoint): an endpoint's receive buffers
/// cost about 2 MB, so a socket per player would dominate the demo's memory.
pub const PLAYERS_PER_SOCKET: usize = 16;

impl std::fmt::Debug for LocalNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNet")
            .field("origin_addr", &self.origin_addr)
            .field("relays", &self.relays.len())
            .finish_non_exhaustive()
    }
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Serves `registry` (plus the process metrics) on a loopback port when `on`.
async fn admin(
    on: bool,
    mut registry: Registry,
    origin: Option<OriginHandle>,
) -> Result<Option<SocketAddr>, LocalError> {
    if !on {
        return Ok(None);
    }
    skylane_ops::ProcessMetrics::register(&mut registry);
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut router = skylane_ops::admin_router(Arc::new(registry));
    if let Some(handle) = origin {
        router = router
            .merge(skylane_origin::ledger_router(handle.clone()))
            .merge(skylane_origin::violations_router(handle.clone()));
        // The origin's `/status`, as the binary serves it.
        router = router.route(
            "/status",
            axum::routing::get(move || {
                let handle = handle.clone();
                async move { axum::Json(handle.status().await) }
            }),
        );
    }
    skylane_ops::serve_admin(addr, router)
        .await
        .map(Some)
        .map_err(|source| LocalError::Bind { addr, source })
}

/// Binds a UDP socket on `ip` (port 0) to learn whether the address is usable.
fn can_bind(ip: Ipv4Addr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

impl LocalNet {
    /// Starts the origin and the relays. Must be called inside a tokio runtime.
    pub async fn start(opts: LocalOptions) -> Result<Self, LocalError> {
        let certs = |e: skylane_certs::CertError| LocalError::Certs(e.to_string());
        let pki = LocalPki::generate(&[]).map_err(certs)?;
        let roots = || pki.roots().map_err(certs);
        let pair = TokenKeyPair::generate()?;
        let tokens = Arc::new(TokenSigner::from_pem(&pair.private_pem)?);
        // The matchmaker's own key: relays trust both (a key set).
        let mm_pair = TokenKeyPair::generate()?;
        let matchmaker_tokens = Arc::new(TokenSigner::from_pem(&mm_pair.private_pem)?);
        let relay_tokens = skylane_proto::token::TokenVerifier::from_pem(
            &format!("{}{}", pair.public_pem, mm_pair.public_pem),
            AUDIENCE,
        )?;
        let geo = crate::geoip::demo_mmdb()
            .map_err(|e| LocalError::Geo(e.to_string()))
            .and_then(|b| GeoDb::from_bytes(b.bytes).map_err(|e| LocalError::Geo(e.to_string())))?;
        let geo = Arc::new(geo);
        let regional_loopback = opts
            .regions
            .iter()
            .all(|r| can_bind(Ipv4Addr::new(127, 0, r.net, 1)));

        // Origin.
        let base_unix_us = unix_us();
        let mut sc = skylane_certs::origin_server_config(&pki.origin, roots()?).map_err(certs)?;
        sc.transport_config(Arc::new(link_transport()));
        let bind = SocketAddr::from(([127, 0, 0, 1], 0));
        let origin_ep = quinn::Endpoint::server(sc, bind)
            .map_err(|source| LocalError::Bind { addr: bind, source })?;
        let origin_addr = origin_ep
            .local_addr()
            .map_err(|source| LocalError::Bind { addr: bind, source })?;
        let arena = Arena::new(opts.arena);
        let grid = arena.grid();
        let mut ecfg = EngineConfig::new(WORLD);
        ecfg.tick_hz = opts.tick_hz;
        ecfg.keyframe_every = u64::from(opts.tick_hz);
        ecfg.max_payload = opts.max_payload;
        let signer = ChainSigner::from_bytes(&rand::random::<[u8; 32]>());
        let origin_key = signer.verifying_key();
        let origin_signer = signer.same_key();
        let engine = Engine::new(arena, grid, ecfg, signer, base_unix_us);
        let mut registry = Registry::default();
        let origin_metrics = OriginMetrics::new(&mut registry);
        let mut origin = OriginServer::spawn(
            origin_ep,
            engine,
            ServerConfig::new(base_unix_us),
            origin_metrics.clone(),
        );
        if let Some((e, every)) = &opts.analytics {
            origin
                .handle()
                .attach_analytics(e.clone(), "origin-1", *every);
        }
        if let Some(path) = &opts.ledger {
            let ledger = skylane_origin::Ledger::open(path)
                .map_err(|e| LocalError::Config(format!("ledger {}: {e}", path.display())))?;
            origin.handle().attach_ledger(ledger);
        }
        // The embedded control plane: worlds created at run time are placed on
        // this origin, and the relays learn them by watching.
        let control: skylane_control::SharedControl = match &opts.control {
            Some(c) => c.clone(),
            None => Arc::new(skylane_control::Embedded::new()),
        };
        let mut repl = skylane_certs::repl_client_config(roots()?, &pki.origin).map_err(certs)?;
        repl.transport_config(Arc::new(link_transport()));
        let mut zone_link =
            skylane_certs::zone_client_config(roots()?, &pki.origin).map_err(certs)?;
        zone_link.transport_config(Arc::new(link_transport()));
        // Origin k sits in region k (round robin): a matchmaker's estimate for
        // players that measured nothing.
        let node = |id: String, addr: SocketAddr, k: usize| skylane_origin::ClusterNode {
            id,
            addr: addr.to_string(),
            tls_name: "localhost".into(),
            admin: None,
            region: "local".into(),
            capacity: opts.max_worlds,
            coords: opts
                .regions
                .get(k % opts.regions.len().max(1))
                .map(|r| (f64::from(r.lat), f64::from(r.lon))),
            lease_ttl: opts.lease_ttl,
            journal_dir: None,
            replication: Some(repl.clone()),
            zones: Some(zone_link.clone()),
            attestation: None,
            removal_grace: opts.removal_grace,
        };
        let agent = origin
            .join_cluster(
                control.clone(),
                node("origin-1".into(), origin_addr, 0),
                skylane_origin::Games::builtin(),
                origin_signer.same_key(),
            )
            .await
            .map_err(|e| LocalError::Config(e.to_string()))?;
        let mut more_origins = Vec::new();
        for n in 2..=opts.origins.max(1) {
            let mut sc =
                skylane_certs::origin_server_config(&pki.origin, roots()?).map_err(certs)?;
            sc.transport_config(Arc::new(link_transport()));
            let ep = quinn::Endpoint::server(sc, bind)
                .map_err(|source| LocalError::Bind { addr: bind, source })?;
            let addr = ep
                .local_addr()
                .map_err(|source| LocalError::Bind { addr: bind, source })?;
            let metrics = OriginMetrics::new(&mut Registry::default());
            let mut server = OriginServer::host(ep, ServerConfig::new(unix_us()), metrics.clone());
            let id = format!("origin-{n}");
            if let Some((e, every)) = &opts.analytics {
                server.handle().attach_analytics(e.clone(), &id, *every);
            }
            let agent = server
                .join_cluster(
                    control.clone(),
                    node(id.clone(), addr, n - 1),
                    skylane_origin::Games::builtin(),
                    origin_signer.same_key(),
                )
                .await
                .map_err(|e| LocalError::Config(e.to_string()))?;
            more_origins.push(LocalOrigin {
                id,
                server,
                addr,
                metrics,
                agent: std::sync::Mutex::new(Some(agent)),
            });
        }
        let origin_admin = admin(opts.admin, registry, Some(origin.handle())).await?;

        // Relays: bind every endpoint first, so the directory and peer lists are
        // complete before any relay starts.
        let mut endpoints = Vec::new();
        let mut infos = Vec::new();
        for r in &opts.regions {
            let ip = if regional_loopback {
                Ipv4Addr::new(127, 0, r.net, 1)
            } else {
                Ipv4Addr::LOCALHOST
            };
            let mut sc = relay_server_config(&pki.relay, roots()?).map_err(certs)?;
            sc.transport_config(Arc::new(client_transport()));
            let bind = SocketAddr::from((ip, 0));
            let ep = quinn::Endpoint::server(sc, bind)
                .map_err(|source| LocalError::Bind { addr: bind, source })?;
            let addr = ep
                .local_addr()
                .map_err(|source| LocalError::Bind { addr: bind, source })?;
            infos.push(RelayInfo {
                id: RelayId(r.id),
                region: r.name.to_owned(),
                addrs: vec![addr.to_string()],
                lat: r.lat,
                lon: r.lon,
            });
            endpoints.push((ep, addr, ip));
        }
        let mut link_tls = client_config(roots()?, Some(&pki.relay)).map_err(certs)?;
        link_tls.transport_config(Arc::new(link_transport()));
        let mut peer_tls = peer_client_config(roots()?, &pki.relay).map_err(certs)?;
        peer_tls.transport_config(Arc::new(link_transport()));
        let material = RelayMaterial {
            link_tls,
            peer_tls: Some(peer_tls),
            tokens: relay_tokens,
            revocations: Default::default(),
            tickets: TicketKey::new(&rand::random::<[u8; 32]>()),
            geo: Some(geo.clone()),
        };
        // Peers as an operator writes them; every certificate here names `localhost`.
        let peer = |i: &RelayInfo| PeerTarget::entry(i, "localhost");
        let mut relays = Vec::new();
        for (info, (ep, addr, ip)) in infos.iter().zip(endpoints) {
            let mut registry = Registry::default();
            let metrics = RelayMetrics::new(&mut registry);
            let admin = admin(opts.admin, registry, None).await?;
            let cfg = RelayConfig {
                origins: vec![format!("localhost@{origin_addr}={}", WORLD.0)],
                peers: infos.iter().filter(|p| p.id != info.id).map(peer).collect(),
                ..RelayConfig::for_relay(info, addr)
            };
            let mut settings = RelaySettings::from_config(&cfg, material.clone())
                .map_err(|e| LocalError::Config(e.to_string()))?;
            settings.limits = opts.limits;
            if let Some((e, _)) = &opts.analytics {
                settings.analytics = e.clone();
            }
            settings.content.clone_from(&opts.content);
            let info = settings.info.clone();
            let relay = Relay::spawn(ep, settings, metrics.clone());
            relay
                .follow(
                    control.clone(),
                    skylane_control::NodeInfo {
                        admin: admin.map(|a| a.to_string()),
                        coords: Some((f64::from(info.lat), f64::from(info.lon))),
                        ..skylane_control::NodeInfo::relay(
                            info.id.0,
                            addr,
                            "localhost",
                            &info.region,
                        )
                    },
                    opts.lease_ttl,
                )
                .await
                .map_err(|e| LocalError::Config(e.to_string()))?;
            relays.push(LocalRelay {
                info,
                relay,
                addr,
                metrics,
                player_net: ip,
                admin,
            });
        }
        Ok(Self {
            pki,
            tokens,
            geo,
            matchmaker_tokens,
            origin,
            origin_addr,
            origin_metrics,
            origin_admin,
            origin_key,
            relays,
            regional_loopback,
            control,
            agent: std::sync::Mutex::new(Some(agent)),
            more_origins,
            analytics: opts
                .analytics
                .as_ref()
                .map_or_else(skylane_analytics::Emitter::disabled, |(e, _)| e.clone()),
            sockets: Default::default(),
        })
    }

    /// A token for `subject` with `role` in the local world, valid for `ttl`.
    pub fn token(&self, subject: &str, role: Role, ttl: Duration) -> String {
        self.token_for(subject, role, vec![WORLD], ttl)
    }

    /// A token for `subject` with `role` in `worlds`, valid for `ttl`.
    pub fn token_for(
        &self,
        subject: &str,
        role: Role,
        worlds: Vec<WorldId>,
        ttl: Duration,
    ) -> String {
        self.tokens
            .issue(&Claims::new(
                subject,
                role,
                worlds,
                AUDIENCE,
                unix_us() / 1_000_000,
                ttl.as_secs().max(1),
            ))
            .unwrap_or_default()
    }

    /// The local address the `n`-th player of region `region` (index into the
    /// relays) binds: `127.0.r.(2 + (n / PLAYERS_PER_SOCKET) % 250)`.
    pub fn player_ip(&self, region: usize, n: usize) -> IpAddr {
        let net = self.relays[region % self.relays.len()].player_net;
        if !self.regional_loopback {
            return IpAddr::V4(net);
        }
        let o = net.octets();
        let host = 2 + ((n / PLAYERS_PER_SOCKET) % 250) as u8;
        IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], host))
    }

    /// A client builder for a player in `region` (index into the relays): bound to
    /// the region's loopback network, asking a relay's directory (the first
    /// relay's, like a client with one bootstrap address) and trusting the
    /// deployment's CA and origin key. The caller sets the token and connects.
    pub fn player_builder(&self, region: usize, n: usize) -> Result<ClientBuilder, LocalError> {
        let ip = self.player_ip(region, n);
        let mut sockets = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        let endpoint = match sockets.get(&ip) {
            Some(e) => e.clone(),
            None => {
                let bind = SocketAddr::new(ip, 0);
                let e = quinn::Endpoint::client(bind)
                    .map_err(|source| LocalError::Bind { addr: bind, source })?;
                sockets.insert(ip, e.clone());
                e
            }
        };
        Ok(Client::builder()
            .world(WORLD)
            .ca_pem(self.pki.ca_pem.clone())
            .endpoint(endpoint)
            .directory(self.relays[0].addr))
    }

    /// Stops the relays (drain) and the origins, without waiting for the
    /// relays to exit.
    pub async fn shutdown(self) {
        let _ = self.stop(Duration::ZERO).await;
    }

    /// Stops the relays (drain) and the origins, waiting up to `wait` for
    /// every relay to exit first, so what a relay writes on exit (the end
    /// rows of the sessions it still holds) is written. A relay exits once
    /// its clients have left (or at its drain deadline); whether it did in
    /// time: `false` if any was still running.
    pub async fn stop(self, wait: Duration) -> bool {
        for r in &self.relays {
            r.relay.drain();
        }
        let exited = tokio::time::timeout(wait, async {
            for r in &self.relays {
                r.relay.closed().await;
            }
        })
        .await
        .is_ok();
        for o in self.more_origins {
            let _ = o.server.shutdown().await;
        }
        let _ = self.origin.shutdown().await;
        exited
    }

    /// The origin server named `id` (`origin-1` is [`LocalNet::origin`]).
    pub fn origin_server(&self, id: &str) -> Option<&OriginServer> {
        if id == "origin-1" {
            return Some(&self.origin);
        }
        self.more_origins
            .iter()
            .find(|o| o.id == id)
            .map(|o| &o.server)
    }

    /// Kills origin `id` as a crashed process would die (its worlds' tasks
    /// aborted, its sockets closed, its lease no longer renewed): its rooms
    /// fail over to their standbys. `false` if no such origin runs.
    pub fn crash_origin(&self, id: &str) -> bool {
        let (server, agent) = if id == "origin-1" {
            (&self.origin, &self.agent)
        } else {
            match self.more_origins.iter().find(|o| o.id == id) {
                Some(o) => (&o.server, &o.agent),
                None => return false,
            }
        };
        let mut agent = agent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if agent.take().is_none() {
            return false;
        }
        server.crash();
        true
    }
}
