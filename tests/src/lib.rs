//! `skylane-tests`: workspace-level integration and scenario tests.
//!
//! The tests live in `tests/tests/`; this library holds what they share: [`Net`],
//! a whole deployment (one origin hosting the arena, relays in several regions,
//! players) inside a netsim simulation, over real quinn connections with
//! generated certificates and tokens. It is never published and never used by the
//! shipped crates.

mod cut;

pub use cut::CutControl;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use skylane_certs::{client_config, peer_client_config, relay_server_config, LocalPki};
use skylane_client::{Client, ClientEvent};
use skylane_netsim::{HostId, Sim};
use skylane_origin::{
    Arena, ArenaAction, ArenaConfig, ArenaEvent, Engine, EngineConfig, OriginMetrics, OriginServer,
    ServerConfig,
};
use skylane_proto::ed25519_dalek::VerifyingKey;
use skylane_proto::{
    ChainSigner, Claims, EventClass, Outcome, RelayId, RelayInfo, Role, TokenKeyPair, TokenSigner,
    WorldId,
};
use skylane_relay::{
    client_transport, link_transport, Limits, PeerTarget, Relay, RelayConfig, RelayMaterial,
    RelayMetrics, RelaySettings, TicketKey,
};

/// The world every scenario plays.
pub const WORLD: WorldId = WorldId(1);
/// Side of the scenarios' square map.
pub const MAP: f32 = 150.0;
const SIGNING: [u8; 32] = [42; 32];

/// A relay in the simulation.
#[derive(Debug, Clone)]
pub struct RelayNode {
    /// Its host.
    pub host: HostId,
    /// Its handle.
    pub relay: Relay,
    /// Client-facing address.
    pub addr: SocketAddr,
    /// Its metrics.
    pub metrics: RelayMetrics,
}

/// An extra origin in the simulation (worlds placed on it at run time).
#[derive(Debug)]
pub struct OriginNode {
    /// Its host.
    pub host: HostId,
    /// The server.
    pub server: OriginServer,
    /// The address relays and standbys reach it at.
    pub addr: SocketAddr,
    /// Its metrics.
    pub metrics: OriginMetrics,
}

/// A deployment in a simulation.
pub struct Net {
    /// The simulation.
    pub sim: Sim,
    /// Certificates.
    pub pki: LocalPki,
    /// Token signer.
    pub tokens: TokenSigner,
    /// The origin's host.
    pub origin_host: HostId,
    /// The origin.
    pub origin: OriginServer,
    /// The origin's metrics.
    pub origin_metrics: OriginMetrics,
    /// Relays, in the order given.
    pub relays: Vec<RelayNode>,
}

/// Options of [`Net::start`].
#[derive(Debug, Clone)]
pub struct NetOptions {
    /// Simulation seed.
    pub seed: u64,
    /// Region of the origin.
    pub origin_region: &'static str,
    /// Relays: (id, region).
    pub relays: Vec<(u32, &'static str)>,
    /// Relay limits.
    pub limits: Limits,
    /// Edge settings.
    pub edge: skylane_relay::EdgeConfig,
    /// Whether every relay is configured with every other as a peer (`false`:
    /// they can only learn each other from a control plane).
    pub static_peers: bool,
    /// A token key file the relays watch (key rotation); `None`: they keep
    /// the harness's key.
    pub token_key_file: Option<std::path::PathBuf>,
    /// A revocation file the relays watch; `None`: none.
    pub revocation_file: Option<std::path::PathBuf>,
    /// The origin's anomaly detector and enforcement policy.
    pub detector: skylane_origin::DetectorConfig,
    /// The origin's violation store; `None`: none.
    pub violations: Option<std::path::PathBuf>,
    /// The origin's economy ledger; `None`: none.
    pub ledger: Option<std::path::PathBuf>,
    /// Record every packet (`Sim::trace`), for per-host byte counts.
    pub trace: bool,
    /// Content packs the relays serve; `None`: none.
    pub content: Option<skylane_relay::ContentSettings>,
}

impl Default for NetOptions {
    fn default() -> Self {
        Self {
            seed: 1,
            origin_region: "frankfurt",
            relays: vec![(1, "amsterdam"), (2, "virginia"), (3, "tokyo")],
            limits: Limits::default(),
            edge: skylane_relay::EdgeConfig::default(),
            static_peers: true,
            token_key_file: None,
            revocation_file: None,
            detector: skylane_origin::DetectorConfig::default(),
            violations: None,
            ledger: None,
            trace: false,
            content: None,
        }
    }
}

impl Net {
    /// Starts an origin and the relays (inside a netsim runtime).
    pub fn start(opts: NetOptions) -> Self {
        let sim = if opts.trace {
            Sim::with_trace(opts.seed, skylane_netsim::TraceMode::Full)
        } else {
            Sim::new(opts.seed)
        };
        let pki = LocalPki::generate(&[]).expect("pki");
        let pair = TokenKeyPair::generate().expect("token key");
        let tokens = TokenSigner::from_pem(&pair.private_pem).expect("signer");
        let origin_host = sim.add_host("origin", opts.origin_region);
        let mut sc = skylane_certs::origin_server_config(&pki.origin, pki.roots().expect("roots"))
            .expect("origin tls");
        sc.transport_config(Arc::new(link_transport()));
        let endpoint = sim
            .endpoint(origin_host, 4500, Some(sc))
            .expect("origin endpoint");
        let origin_addr = endpoint.local_addr().expect("addr");
        // A small map (4 cells): every player is interested in every cell, so each
        // sees everyone's moves.
        let arena = Arena::new(ArenaConfig {
            width: MAP,
            height: MAP,
            items: 20,
            ..ArenaConfig::default()
        });
        let grid = arena.grid();
        let mut ecfg = EngineConfig::new(WORLD);
        ecfg.max_payload = 16 * 1024;
        ecfg.detector = opts.detector;
        // The origin's clock is Unix time, like the relays' and clients', so event
        // latencies measured through the synchronised clock are meaningful.
        let base_unix_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_micros() as u64;
        let engine = Engine::new(
            arena,
            grid,
            ecfg,
            ChainSigner::from_bytes(&SIGNING),
            base_unix_us,
        );
        let origin_metrics = OriginMetrics::new(&mut Registry::default());
        let origin = OriginServer::spawn(
            endpoint,
            engine,
            ServerConfig::new(base_unix_us),
            origin_metrics.clone(),
        );
        if let Some(path) = &opts.ledger {
            let ledger = skylane_origin::Ledger::open(path).expect("ledger");
            origin.handle().attach_ledger(ledger);
        }
        if let Some(path) = &opts.violations {
            let store =
                skylane_origin::ViolationStore::open(path, 100_000).expect("violation store");
            origin
                .handle()
                .attach_violations(store)
                .expect("violation store attached");
        }

        let mut hosts = Vec::new();
        let mut infos = Vec::new();
        for (id, region) in &opts.relays {
            let host = sim.add_host(format!("relay-{id}"), *region);
            let r = skylane_netsim::topology::region(region).expect("known region");
            infos.push(RelayInfo {
                id: RelayId(*id),
                region: (*region).to_string(),
                addrs: vec![SocketAddr::new(sim.ip(host), 4433).to_string()],
                lat: r.lat as f32,
                lon: r.lon as f32,
            });
            hosts.push(host);
        }
        let link_tls =
            client_config(pki.roots().expect("roots"), Some(&pki.relay)).expect("link tls");
        let mut peer_tls =
            peer_client_config(pki.roots().expect("roots"), &pki.relay).expect("peer tls");
        peer_tls.transport_config(Arc::new(link_transport()));
        let material = RelayMaterial {
            link_tls,
            peer_tls: Some(peer_tls),
            tokens: tokens.verifier("skylane"),
            revocations: Default::default(),
            tickets: TicketKey::new(&[9; 32]),
            geo: None,
        };
        // Every relay lists every relay, itself included, as its peers (it
        // skips itself); every certificate here names `localhost`.
        let peers: Vec<String> = infos
            .iter()
            .map(|i| PeerTarget::entry(i, "localhost"))
            .collect();
        let mut relays = Vec::new();
        for (host, info) in hosts.into_iter().zip(infos) {
            let mut sc =
                relay_server_config(&pki.relay, pki.roots().expect("roots")).expect("relay tls");
            sc.transport_config(Arc::new(client_transport()));
            let endpoint = sim.endpoint(host, 4433, Some(sc)).expect("relay endpoint");
            let addr = endpoint.local_addr().expect("addr");
            let metrics = RelayMetrics::new(&mut Registry::default());
            let cfg = RelayConfig {
                origins: vec![format!("localhost@{origin_addr}={}", WORLD.0)],
                peers: if opts.static_peers {
                    peers.clone()
                } else {
                    Vec::new()
                },
                ..RelayConfig::for_relay(&info, addr)
            };
            let mut settings =
                RelaySettings::from_config(&cfg, material.clone()).expect("relay settings");
            settings.limits = opts.limits;
            settings.edge = opts.edge;
            settings.token_key_file.clone_from(&opts.token_key_file);
            settings.revocation_file.clone_from(&opts.revocation_file);
            settings.content.clone_from(&opts.content);
            let relay = Relay::spawn(endpoint, settings, metrics.clone());
            relays.push(RelayNode {
                host,
                relay,
                addr,
                metrics,
            });
        }
        Self {
            sim,
            pki,
            tokens,
            origin_host,
            origin,
            origin_metrics,
            relays,
        }
    }

    /// The first relay follows `control` (registered as `relay-<id>` in
    /// `eu`, lease `ttl`): it learns worlds, owners and bans from it.
    pub async fn follow(&self, control: &skylane_control::SharedControl, ttl: Duration) {
        let r = &self.relays[0];
        let id = r.relay.status().await.expect("relay up").relay;
        r.relay
            .follow(
                control.clone(),
                skylane_control::NodeInfo::relay(id, r.addr, "localhost", "eu"),
                ttl,
            )
            .await
            .expect("relay follows");
    }

    /// Starts another origin (no world yet) on a new host in `region`, with
    /// the same identity and signing key as the first.
    pub fn add_origin(&self, name: &str, region: &str) -> OriginNode {
        let host = self.sim.add_host(name, region);
        let mut sc =
            skylane_certs::origin_server_config(&self.pki.origin, self.pki.roots().expect("roots"))
                .expect("origin tls");
        sc.transport_config(Arc::new(link_transport()));
        let endpoint = self
            .sim
            .endpoint(host, 4500, Some(sc))
            .expect("origin endpoint");
        let addr = endpoint.local_addr().expect("addr");
        let base_unix_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_micros() as u64;
        let metrics = OriginMetrics::new(&mut Registry::default());
        let server = OriginServer::host(endpoint, ServerConfig::new(base_unix_us), metrics.clone());
        OriginNode {
            host,
            server,
            addr,
            metrics,
        }
    }

    /// How an origin of this network presents itself to a control plane:
    /// `id` at `addr`, in `eu`, room for 16 worlds, lease `ttl`, a 2 s
    /// removal grace, replicating with this network's certificates.
    pub fn cluster_node(
        &self,
        id: &str,
        addr: SocketAddr,
        ttl: Duration,
    ) -> skylane_origin::ClusterNode {
        skylane_origin::ClusterNode {
            id: id.into(),
            addr: addr.to_string(),
            tls_name: "localhost".into(),
            admin: None,
            region: "eu".into(),
            capacity: 16,
            coords: None,
            lease_ttl: ttl,
            removal_grace: Duration::from_secs(2),
            journal_dir: None,
            replication: Some(self.replication_client()),
            zones: Some(self.zone_client()),
            attestation: None,
        }
    }

    /// How an origin here reaches the owners of a zoned world's other zones.
    pub fn zone_client(&self) -> quinn::ClientConfig {
        let mut c =
            skylane_certs::zone_client_config(self.pki.roots().expect("roots"), &self.pki.origin)
                .expect("zone tls");
        c.transport_config(Arc::new(link_transport()));
        c
    }

    /// How an origin here reaches a world's primary as its standby.
    pub fn replication_client(&self) -> quinn::ClientConfig {
        let mut c =
            skylane_certs::repl_client_config(self.pki.roots().expect("roots"), &self.pki.origin)
                .expect("replication tls");
        c.transport_config(Arc::new(link_transport()));
        c
    }

    /// The origin's batch-signing public key.
    pub fn origin_key(&self) -> VerifyingKey {
        ChainSigner::from_bytes(&SIGNING).verifying_key()
    }

    /// The origin's batch signer (a world built at run time signs with it).
    pub fn origin_signer(&self) -> ChainSigner {
        ChainSigner::from_bytes(&SIGNING)
    }

    /// A token for `player` allowing `worlds`.
    pub fn token_for(&self, player: &str, role: Role, worlds: Vec<WorldId>) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        self.tokens
            .issue(&Claims::new(player, role, worlds, "skylane", now, 3600))
            .expect("token")
    }

    /// A token for `player`.
    pub fn token(&self, player: &str, role: Role) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        self.tokens
            .issue(&Claims::new(
                player,
                role,
                vec![WORLD],
                "skylane",
                now,
                3600,
            ))
            .expect("token")
    }

    /// A client builder for a new host in `region`, trusting the deployment and
    /// verifying batches; returns the host too.
    pub fn client_builder(
        &self,
        region: &str,
        player: &str,
    ) -> (HostId, skylane_client::ClientBuilder) {
        self.builder_as(region, player, Role::Player)
    }

    /// A client builder for a new host in `region` with a `role` token.
    pub fn builder_as(
        &self,
        region: &str,
        player: &str,
        role: Role,
    ) -> (HostId, skylane_client::ClientBuilder) {
        let host = self.sim.add_host(format!("client-{player}"), region);
        let endpoint = self.sim.endpoint(host, 0, None).expect("client endpoint");
        (host, self.builder_on(endpoint, player, role))
    }

    /// A client builder on an existing endpoint (many clients can share one).
    pub fn builder_on(
        &self,
        endpoint: quinn::Endpoint,
        player: &str,
        role: Role,
    ) -> skylane_client::ClientBuilder {
        Client::builder()
            .token(self.token(player, role))
            .world(WORLD)
            .ca_pem(self.pki.ca_pem.clone())
            .endpoint(endpoint)
            .origin_key(self.origin_key())
    }
}

/// A player who knows where its avatar is and walks it.
pub struct Walker {
    /// The client.
    pub client: Client,
    /// Player name.
    pub name: String,
    /// Avatar, once seen.
    pub avatar: Option<skylane_proto::EntityId>,
    /// Position.
    pub pos: (f32, f32),
    /// Every event received as (channel, seq), and every subscription start as
    /// (channel, seq before the first event).
    pub seen: Vec<Seen>,
    /// Movement states received (latest-wins datagrams, not events).
    pub moves_seen: u64,
    dir: f32,
}

impl Walker {
    /// Wraps a connected client.
    pub fn new(client: Client, name: &str) -> Self {
        Self {
            client,
            name: name.to_owned(),
            avatar: None,
            pos: (0.0, 0.0),
            seen: Vec::new(),
            moves_seen: 0,
            dir: 1.0,
        }
    }

    /// Takes every waiting event; learns the avatar and position.
    pub fn absorb(&mut self) -> Vec<ClientEvent> {
        let mut out = Vec::new();
        while let Some(ev) = self.client.try_next_event() {
            if let ClientEvent::Subscriptions { added, .. } = &ev {
                for a in added {
                    self.seen.push(Seen::Start(a.channel, a.seq));
                }
            }
            if let ClientEvent::Movement(_) = &ev {
                self.moves_seen += 1;
            }
            if let ClientEvent::Event(e) = &ev {
                self.seen.push(Seen::Event(e.channel, e.seq));
                match ArenaEvent::decode(&e.payload) {
                    Some(ArenaEvent::Spawned {
                        entity,
                        player,
                        x,
                        y,
                        ..
                    }) if player == self.name => {
                        self.avatar = Some(entity);
                        self.pos = (x, y);
                    }
                    // Its own moves are state now (latest-wins datagrams): the
                    // walker keeps the position it stepped to.
                    _ => {}
                }
            }
            out.push(ev);
        }
        out
    }

    /// Waits until the avatar is known (absorbing events).
    pub async fn wait_spawn(&mut self) {
        for _ in 0..200 {
            self.absorb();
            if self.avatar.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{} never saw its avatar spawn", self.name);
    }

    /// One legal step (0.25 units, under the speed limit at 30 Hz), bouncing at the edges.
    pub fn step_action(&mut self) -> ArenaAction {
        let (x, y) = self.pos;
        if !(5.0..=MAP - 5.0).contains(&(x + self.dir * 0.25)) {
            self.dir = -self.dir;
        }
        let nx = x + self.dir * 0.25;
        self.pos = (nx, y);
        ArenaAction::Move { x: nx, y }
    }

    /// Sends one step as a state action and waits for its outcome.
    pub async fn step(&mut self) -> Outcome {
        let a = self.step_action();
        match self.client.act(EventClass::State, vec![], a.encode()).await {
            Ok(o) => o,
            Err(e) => Outcome::Rejected {
                code: skylane_proto::RejectCode::Game(0),
                detail: e.to_string(),
            },
        }
    }
}

/// What a [`Walker`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// An event.
    Event(skylane_proto::ChannelId, u64),
    /// A subscription (re)starting after this sequence number.
    Start(skylane_proto::ChannelId, u64),
}

/// Checks that per channel the sequence numbers are consecutive from each
/// subscription start (nothing lost, nothing repeated); returns the number of
/// events checked.
pub fn assert_exactly_once(seen: &[Seen]) -> usize {
    let mut last: std::collections::HashMap<skylane_proto::ChannelId, u64> = Default::default();
    let mut n = 0;
    for s in seen {
        match *s {
            Seen::Start(c, seq) => {
                // A resume re-announces tracked channels: keep the tracked cursor.
                last.entry(c).or_insert(seq);
            }
            Seen::Event(c, seq) => {
                n += 1;
                if let Some(l) = last.get(&c) {
                    assert_eq!(seq, l + 1, "channel {c}: after {l} came {seq}");
                }
                last.insert(c, seq);
            }
        }
    }
    n
}

/// The world channel's sequence numbers a walker saw, in order.
pub fn world_seqs(w: &Walker) -> Vec<u64> {
    w.seen
        .iter()
        .filter_map(|s| match s {
            Seen::Event(skylane_proto::ChannelId::World, seq) => Some(*seq),
            _ => None,
        })
        .collect()
}

/// Over the range both saw, `a` saw exactly the world events `b` saw (`b` is a
/// walker whose path was never disturbed).
pub fn assert_same_world_events(a: &Walker, b: &Walker) {
    let (a, b) = (world_seqs(a), world_seqs(b));
    assert!(!a.is_empty() && !b.is_empty(), "no world events");
    let lo = a[0].max(b[0]);
    let hi = a[a.len() - 1].min(b[b.len() - 1]);
    let clip = |v: &[u64]| {
        v.iter()
            .copied()
            .filter(|s| (lo..=hi).contains(s))
            .collect::<Vec<_>>()
    };
    assert_eq!(clip(&a), clip(&b));
}

/// A bare client connection (no SDK): what a test needs to speak the protocol
/// directly, for behaviour the SDK never shows (two connections holding one
/// ticket, a spectator token trying to act).
pub struct RawConn {
    /// The connection.
    pub conn: quinn::Connection,
    /// Its control stream's send half.
    pub send: quinn::SendStream,
    recv: quinn::RecvStream,
    dec: skylane_proto::FrameDecoder,
}

impl RawConn {
    /// Connects from a new host in `region` to `relay`.
    pub async fn connect(net: &Net, region: &str, name: &str, relay: SocketAddr) -> Self {
        let host = net.sim.add_host(format!("raw-{name}"), region);
        let mut endpoint = net.sim.endpoint(host, 0, None).expect("raw endpoint");
        let roots = skylane_certs::roots_from_pem(&net.pki.ca_pem).expect("roots");
        let mut cfg = client_config(roots, None).expect("client config");
        cfg.transport_config(Arc::new(client_transport()));
        endpoint.set_default_client_config(cfg);
        let conn = endpoint
            .connect(relay, "localhost")
            .expect("connect")
            .await
            .expect("handshake");
        let (send, recv) = conn.open_bi().await.expect("control stream");
        Self {
            conn,
            send,
            recv,
            dec: skylane_proto::FrameDecoder::default(),
        }
    }

    /// Sends one message on the control stream.
    pub async fn send(&mut self, msg: &skylane_proto::ClientMsg) {
        let bytes = skylane_proto::encode_frame_to_bytes(msg, skylane_proto::DEFAULT_MAX_FRAME)
            .expect("encode");
        self.send.write_all(&bytes).await.expect("write");
    }

    /// The next message on the control stream (`None` when it ends).
    pub async fn recv(&mut self) -> Option<skylane_proto::ServerMsg> {
        loop {
            if let Ok(Some(m)) = self.dec.poll_message() {
                return Some(m);
            }
            match self
                .recv
                .read_chunk(skylane_proto::DEFAULT_MAX_FRAME, true)
                .await
            {
                Ok(Some(c)) => self.dec.push(&c.bytes),
                _ => return None,
            }
        }
    }
}

/// What a viewer of the priority scenarios measured (see [`watch_marks`]).
#[derive(Debug, Default)]
pub struct Viewed {
    /// Every event and subscription start seen.
    pub seen: Vec<Seen>,
    /// Latency (µs, origin tick to receipt) of each arena mark, by phase (the
    /// mark's x coordinate).
    pub marks: Vec<(u32, u64)>,
    /// Sprays received (bulk).
    pub sprays: usize,
    /// Their bytes.
    pub spray_bytes: usize,
}

/// Reads `viewer`'s events into a shared [`Viewed`] (marks timed through the
/// synchronised clock) until the client ends; the task gives the client back.
pub fn watch_marks(
    mut viewer: Client,
) -> (
    Arc<std::sync::Mutex<Viewed>>,
    tokio::task::JoinHandle<Client>,
) {
    let viewed = Arc::new(std::sync::Mutex::new(Viewed::default()));
    let shared = viewed.clone();
    let reader = tokio::spawn(async move {
        while let Some(ev) = viewer.next_event().await {
            let Ok(mut v) = shared.lock() else { break };
            match ev {
                ClientEvent::Subscriptions { added, .. } => {
                    v.seen
                        .extend(added.iter().map(|a| Seen::Start(a.channel, a.seq)));
                }
                ClientEvent::Event(e) => {
                    v.seen.push(Seen::Event(e.channel, e.seq));
                    match ArenaEvent::decode(&e.payload) {
                        Some(ArenaEvent::Marked { x, .. }) => {
                            let now = viewer.server_time_us().unwrap_or(0);
                            v.marks
                                .push((x as u32, now.saturating_sub(e.origin_time_us)));
                        }
                        Some(ArenaEvent::Sprayed { data, .. }) => {
                            v.sprays += 1;
                            v.spray_bytes += data.len();
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        viewer
    });
    (viewed, reader)
}
