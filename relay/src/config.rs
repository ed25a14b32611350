//! Relay configuration: one struct filled from a TOML file, flags and environment
//! variables (flags and variables win over the file, the file over defaults);
//! unknown keys are rejected by name. `docs/operations.md` has an example.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};
use skylane_ops::{check_file, ConfigError};
use std::time::Duration;

use skylane_proto::{EventClass, RelayId, RelayInfo};

use crate::guard::{EdgeConfig, Rate, REPLAY_WINDOW};
use crate::hub::HubConfig;
use crate::routing::RoutingConfig;
use crate::scheduler::SchedulerConfig;
use crate::targets::{parse_origin, parse_peer};

fn default_edge_cooldown() -> u64 {
    10
}

fn default_edge_cooldown_max() -> u64 {
    3600
}

/// Everything an operator sets on a relay.
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Address clients connect to (QUIC).
    #[arg(long, env = "SKYLANE_RELAY_LISTEN", default_value = "127.0.0.1:4433")]
    pub listen: SocketAddr,
    /// Address advertised to clients in directory answers and go-aways
    /// (default: the listen address).
    #[arg(long, env = "SKYLANE_RELAY_PUBLIC_ADDR")]
    pub public_addr: Option<String>,
    /// This relay's id, unique in the deployment (1..=16,777,215).
    #[arg(long, env = "SKYLANE_RELAY_ID", default_value_t = 1)]
    pub id: u32,
    /// Region name shown to clients and operators.
    #[arg(long, env = "SKYLANE_RELAY_REGION", default_value = "local")]
    pub region: String,
    /// Latitude of the relay, degrees (for nearest-relay answers).
    #[arg(
        long,
        env = "SKYLANE_RELAY_LAT",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub lat: f32,
    /// Longitude of the relay, degrees.
    #[arg(
        long,
        env = "SKYLANE_RELAY_LON",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub lon: f32,
    /// Certificate chain (PEM) presented to clients and, for mutual TLS, to origins.
    #[arg(long, env = "SKYLANE_RELAY_CERT")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of the certificate.
    #[arg(long, env = "SKYLANE_RELAY_KEY")]
    pub key: Option<PathBuf>,
    /// CA bundle (PEM) origin certificates must chain to.
    #[arg(long, env = "SKYLANE_RELAY_CA")]
    pub ca: Option<PathBuf>,
    /// Development mode: use (or create) a development PKI in this directory
    /// (`skylane certs gen` layout), a generated token key and ticket secret.
    #[arg(long, env = "SKYLANE_RELAY_DEV_CERTS")]
    pub dev_certs: Option<PathBuf>,
    /// Public key (PEM) that verifies client tokens (`skylane token keygen`).
    #[arg(long, env = "SKYLANE_RELAY_TOKEN_KEY")]
    pub token_key: Option<PathBuf>,
    /// Revocation file (JSON: `[{"sub": "alice", "until": 1767225600,
    /// "reason": "cheating"}, {"jti": "...", "until": ...}]`), re-read every
    /// 2 s: hellos it covers are refused, sessions of a revoked subject closed.
    #[arg(long, env = "SKYLANE_RELAY_REVOCATIONS")]
    #[serde(default)]
    pub revocations: Option<PathBuf>,
    /// Token audience this deployment accepts.
    #[arg(long, env = "SKYLANE_RELAY_AUDIENCE", default_value = "skylane")]
    pub audience: String,
    /// File holding the deployment-wide resume-ticket secret (at least 32 bytes,
    /// the same on every relay).
    #[arg(long, env = "SKYLANE_RELAY_TICKET_SECRET")]
    pub ticket_secret: Option<PathBuf>,
    /// Origins as `[TLS_NAME@]HOST:PORT=WORLD[+WORLD...]`, for example
    /// `origin-1.example:4500=1+2` (the certificate must name `origin-1.example`)
    /// or `origin-1.example@10.0.0.5:4500=1` (dial the address, check the name).
    /// Repeat the flag, or separate with commas in the environment variable.
    #[arg(long = "origin", env = "SKYLANE_RELAY_ORIGINS", value_delimiter = ',')]
    pub origins: Vec<String>,
    /// Other relays of the deployment as `ID/REGION/LAT/LON/[TLS_NAME@]ADDR`,
    /// offered to clients as alternatives (nearest first) in welcomes, go-aways
    /// and directory answers, and measured as paths to origins. An entry with
    /// this relay's own id is skipped, so every relay can share one list.
    #[arg(long = "peer", env = "SKYLANE_RELAY_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// MaxMind-format GeoIP City database (.mmdb) to place clients.
    #[arg(long, env = "SKYLANE_RELAY_GEOIP")]
    pub geoip: Option<PathBuf>,
    /// Address of the HTTP endpoint serving /metrics, /status and POST /drain.
    #[arg(long, env = "SKYLANE_RELAY_ADMIN", default_value = "127.0.0.1:9433")]
    pub admin: SocketAddr,
    /// File holding the admin endpoint's bearer token (first line, 16+
    /// characters). Without it, `POST /drain` is served only on loopback and a
    /// non-loopback `admin` address is refused.
    #[arg(long, env = "SKYLANE_RELAY_ADMIN_TOKEN")]
    pub admin_token: Option<PathBuf>,
    /// Sessions held at most (connected and detached).
    #[arg(long, env = "SKYLANE_RELAY_MAX_SESSIONS", default_value_t = 50_000)]
    pub max_sessions: usize,
    /// Connections allowed from one IP address.
    #[arg(long, env = "SKYLANE_RELAY_MAX_CONNS_PER_IP", default_value_t = 16)]
    pub max_conns_per_ip: usize,
    /// New handshakes accepted per second.
    #[arg(
        long,
        env = "SKYLANE_RELAY_HANDSHAKES_PER_SEC",
        default_value_t = 2_000
    )]
    pub handshakes_per_sec: u32,
    /// Seconds a disconnected session is kept for a resume.
    #[arg(long, env = "SKYLANE_RELAY_SESSION_GRACE", default_value_t = 30)]
    pub session_grace_secs: u64,
    /// Longest a drain waits for clients to move, seconds.
    #[arg(long, env = "SKYLANE_RELAY_DRAIN_DEADLINE", default_value_t = 30)]
    pub drain_deadline_secs: u64,
    /// Seconds a resume ticket stays valid.
    #[arg(long, env = "SKYLANE_RELAY_TICKET_TTL", default_value_t = 3600)]
    pub ticket_ttl_secs: u64,
    /// Milliseconds a new connection has to send its first message.
    #[arg(long, env = "SKYLANE_RELAY_HELLO_TIMEOUT_MS", default_value_t = 5000)]
    pub hello_timeout_ms: u64,
    /// Largest frame accepted from a client, bytes.
    #[arg(long, env = "SKYLANE_RELAY_MAX_CLIENT_FRAME", default_value_t = 16 * 1024)]
    pub max_client_frame: usize,
    /// Actions buffered per session until its origin acknowledges it (and
    /// reliable actions remembered until their outcome).
    #[arg(long, env = "SKYLANE_RELAY_PENDING_ACTIONS", default_value_t = 64)]
    pub pending_actions: usize,
    /// Edge rate limits per class as `CLASS=PER_SEC/BURST`, comma-separated;
    /// classes not named keep their default.
    #[arg(
        long,
        env = "SKYLANE_RELAY_EDGE_RATES",
        default_value = "critical=30/60,state=30/60,movement=60/120,chat=5/10,bulk=10/20"
    )]
    pub edge_rates: String,
    /// Largest action payload per class at the edge, `CLASS=BYTES`, comma-separated.
    #[arg(
        long,
        env = "SKYLANE_RELAY_EDGE_MAX_PAYLOAD",
        default_value = "critical=1024,state=1024,movement=1024,chat=1024,bulk=16384"
    )]
    pub edge_max_payload: String,
    /// Largest drift of a client's clock against the relay's, milliseconds.
    #[arg(long, env = "SKYLANE_RELAY_EDGE_MAX_SKEW_MS", default_value_t = 2000)]
    pub edge_max_skew_ms: u64,
    /// Edge violations after which a session is disconnected.
    #[arg(
        long,
        env = "SKYLANE_RELAY_EDGE_DISCONNECT_AFTER",
        default_value_t = 50
    )]
    pub edge_disconnect_after: u32,
    /// Sequence numbers accepted out of order behind the highest (1..=1024).
    #[arg(long, env = "SKYLANE_RELAY_EDGE_REPLAY_WINDOW", default_value_t = 1024)]
    pub edge_replay_window: u64,
    /// Seconds a subject the edge guard cut is refused at hello (its first
    /// cut; each further cut within an hour doubles it). 0: never refused.
    #[arg(long, env = "SKYLANE_RELAY_EDGE_COOLDOWN", default_value_t = 10)]
    #[serde(default = "default_edge_cooldown")]
    pub edge_cooldown_secs: u64,
    /// The longest such cool-down, seconds.
    #[arg(long, env = "SKYLANE_RELAY_EDGE_COOLDOWN_MAX", default_value_t = 3600)]
    #[serde(default = "default_edge_cooldown_max")]
    pub edge_cooldown_max_secs: u64,
    /// Messages queued per client connection and class, `CLASS=COUNT`.
    #[arg(
        long,
        env = "SKYLANE_RELAY_SCHEDULER_CAPACITY",
        default_value = "critical=4096,state=4096,movement=1024,chat=512,bulk=256"
    )]
    pub scheduler_capacity: String,
    /// Age after which a droppable message is dropped unsent, `CLASS=MS`
    /// (`CLASS=none`: never; critical and state are never droppable).
    #[arg(
        long,
        env = "SKYLANE_RELAY_SCHEDULER_DEADLINE_MS",
        default_value = "movement=150,chat=10000,bulk=30000"
    )]
    pub scheduler_deadline_ms: String,
    /// Recent batches the fan-out hub keeps per channel to fill a resumed
    /// session's holes.
    #[arg(long, env = "SKYLANE_RELAY_HUB_RING", default_value_t = 256)]
    pub hub_ring: usize,
    /// Milliseconds a session waits for a hole to fill before a keyframe
    /// resyncs it.
    #[arg(long, env = "SKYLANE_RELAY_HUB_GAP_TIMEOUT_MS", default_value_t = 1000)]
    pub hub_gap_timeout_ms: u64,
    /// Movement bytes per second each client may receive (its datagrams'
    /// budget; the nearest entities first when it is short).
    #[arg(
        long,
        env = "SKYLANE_RELAY_MOVEMENT_BYTES_PER_SEC",
        default_value_t = 65536
    )]
    pub movement_bytes_per_sec: u64,
    /// Milliseconds after which an unacknowledged movement datagram counts as
    /// lost (its entities are sent again, at their newest state).
    #[arg(long, env = "SKYLANE_RELAY_MOVEMENT_RESEND_MS", default_value_t = 250)]
    pub movement_resend_ms: u64,
    /// A route changes only to a path costing less than this fraction of the
    /// current one.
    #[arg(long, env = "SKYLANE_RELAY_ROUTING_MARGIN", default_value_t = 0.8)]
    pub routing_margin: f64,
    /// ...and at least this many milliseconds less.
    #[arg(long, env = "SKYLANE_RELAY_ROUTING_MIN_GAIN_MS", default_value_t = 5)]
    pub routing_min_gain_ms: u64,
    /// ...for this many milliseconds without interruption.
    #[arg(long, env = "SKYLANE_RELAY_ROUTING_HOLD_MS", default_value_t = 2000)]
    pub routing_hold_ms: u64,
    /// Milliseconds of cost added per 1% of loss on a path.
    #[arg(
        long,
        env = "SKYLANE_RELAY_ROUTING_LOSS_PENALTY_MS",
        default_value_t = 2
    )]
    pub routing_loss_penalty_ms: u64,
    /// A link without measurements for this many milliseconds counts as down.
    #[arg(
        long,
        env = "SKYLANE_RELAY_ROUTING_STALE_AFTER_MS",
        default_value_t = 10_000
    )]
    pub routing_stale_after_ms: u64,
    /// Milliseconds without a packet after which an origin or peer link is dead
    /// (its sessions wait for the next link): how long players stall when an
    /// origin dies. Too short drops links on a congested path.
    #[arg(
        long,
        env = "SKYLANE_RELAY_LINK_IDLE_TIMEOUT_MS",
        default_value_t = 1200
    )]
    pub link_idle_timeout_ms: u64,
    /// Keep-alive interval of origin and peer links, milliseconds (at most half
    /// the idle timeout).
    #[arg(long, env = "SKYLANE_RELAY_LINK_KEEP_ALIVE_MS", default_value_t = 250)]
    pub link_keep_alive_ms: u64,
    /// Longest wait between two attempts to reconnect an origin link,
    /// milliseconds: a returning origin is reached at most this long after it is
    /// back.
    #[arg(
        long,
        env = "SKYLANE_RELAY_LINK_BACKOFF_MAX_MS",
        default_value_t = 1000
    )]
    pub link_backoff_max_ms: u64,
    /// Longest spectator delay served, seconds.
    #[arg(long, env = "SKYLANE_RELAY_SPECTATOR_MAX_DELAY", default_value_t = 120)]
    pub spectator_max_delay_secs: u64,
    /// Shortest spectator delay, seconds, for spectator tokens that name no
    /// tier (`min_delay_secs`); a request below it is raised to it. 0: such
    /// tokens may watch live.
    #[arg(long, env = "SKYLANE_RELAY_SPECTATOR_MIN_DELAY", default_value_t = 0)]
    #[serde(default)]
    pub spectator_min_delay_secs: u64,
    /// Feed bytes kept per watched world, MiB.
    #[arg(long, env = "SKYLANE_RELAY_SPECTATOR_BUFFER_MIB", default_value_t = 64)]
    pub spectator_buffer_mib: usize,
    /// Frames queued per spectator before it skips to the next keyframe.
    #[arg(long, env = "SKYLANE_RELAY_SPECTATOR_QUEUE", default_value_t = 64)]
    pub spectator_queue: usize,
    /// Control plane: `none` (only the `origins` above), or `etcd` (origins
    /// and worlds learnt by watching the cluster; needs a build with
    /// `--features etcd`). `embedded` makes sense only inside one process.
    #[arg(
        long,
        env = "SKYLANE_RELAY_CONTROL",
        value_enum,
        default_value = "none"
    )]
    #[serde(default)]
    pub control: skylane_control::ControlKind,
    /// etcd client URLs, comma-separated on the command line.
    #[arg(long, env = "SKYLANE_RELAY_ETCD", value_delimiter = ',')]
    #[serde(default)]
    pub etcd: Vec<String>,
    /// The cluster's key prefix in etcd.
    #[arg(
        long,
        env = "SKYLANE_RELAY_CLUSTER_PREFIX",
        default_value = "/skylane/default"
    )]
    #[serde(default = "default_prefix")]
    pub cluster_prefix: String,
    /// Control-plane lease TTL, seconds (the relay's registration lapses this
    /// long after it dies).
    #[arg(long, env = "SKYLANE_RELAY_LEASE_TTL", default_value_t = 5)]
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_secs: u64,
    /// The name this relay's certificate carries, registered with the control
    /// plane so peer relays that learn it there can check it.
    #[arg(long, env = "SKYLANE_RELAY_TLS_NAME", default_value = "localhost")]
    #[serde(default = "default_tls_name")]
    pub tls_name: String,
    /// Content source directory (as `skylane content publish` writes it:
    /// local or a shared mount): packs served to clients from a cache.
    /// Unset: no content.
    #[arg(long, env = "SKYLANE_RELAY_CONTENT_SOURCE")]
    #[serde(default)]
    pub content_source: Option<PathBuf>,
    /// The operator's public key (PEM) the content manifest must be signed
    /// with (required with `content_source`).
    #[arg(long, env = "SKYLANE_RELAY_CONTENT_KEY")]
    #[serde(default)]
    pub content_key: Option<PathBuf>,
    /// The pack cache's bound, MiB (a larger pack is streamed through).
    #[arg(long, env = "SKYLANE_RELAY_CONTENT_CACHE_MIB", default_value_t = 256)]
    #[serde(default = "default_content_cache_mib")]
    pub content_cache_mib: u64,
    /// How often the content manifest is read, ms.
    #[arg(long, env = "SKYLANE_RELAY_CONTENT_REFRESH_MS", default_value_t = 2000)]
    #[serde(default = "default_content_refresh_ms")]
    pub content_refresh_ms: u64,
    /// Analytics rows to Parquet files: the file's `[analytics]` table (see
    /// docs/analytics.md). Off without `dir`.
    #[arg(skip)]
    #[serde(default)]
    pub analytics: skylane_analytics::AnalyticsConfig,
}

fn default_tls_name() -> String {
    "localhost".into()
}
fn default_content_cache_mib() -> u64 {
    256
}
fn default_content_refresh_ms() -> u64 {
    2000
}

fn default_prefix() -> String {
    "/skylane/default".into()
}

fn default_lease_ttl() -> u64 {
    5
}

impl RelayConfig {
    /// The control plane this relay follows.
    pub fn control_settings(&self) -> skylane_control::ControlSettings {
        skylane_control::ControlSettings {
            kind: self.control,
            etcd: self.etcd.clone(),
            prefix: self.cluster_prefix.clone(),
            lease_ttl: Duration::from_secs(self.lease_ttl_secs),
        }
    }

    /// How this relay registers with the control plane.
    pub fn cluster_node(&self) -> skylane_control::NodeInfo {
        let addr = self
            .public_addr
            .clone()
            .unwrap_or_else(|| self.listen.to_string());
        skylane_control::NodeInfo {
            admin: Some(self.admin.to_string()),
            coords: Some((f64::from(self.lat), f64::from(self.lon))),
            ..skylane_control::NodeInfo::relay(self.id, addr, &self.tls_name, &self.region)
        }
    }
}

impl Default for RelayConfig {
    /// The defaults every flag documents (environment variables not applied).
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 4433).into(),
            public_addr: None,
            id: 1,
            region: "local".into(),
            lat: 0.0,
            lon: 0.0,
            cert: None,
            key: None,
            ca: None,
            dev_certs: None,
            token_key: None,
            revocations: None,
            audience: "skylane".into(),
            ticket_secret: None,
            origins: Vec::new(),
            peers: Vec::new(),
            geoip: None,
            admin: ([127, 0, 0, 1], 9433).into(),
            admin_token: None,
            max_sessions: 50_000,
            max_conns_per_ip: 16,
            handshakes_per_sec: 2_000,
            session_grace_secs: 30,
            drain_deadline_secs: 30,
            ticket_ttl_secs: 3600,
            hello_timeout_ms: 5000,
            max_client_frame: 16 * 1024,
            pending_actions: 64,
            edge_rates: "critical=30/60,state=30/60,movement=60/120,chat=5/10,bulk=10/20".into(),
            edge_max_payload: "critical=1024,state=1024,movement=1024,chat=1024,bulk=16384".into(),
            edge_max_skew_ms: 2000,
            edge_disconnect_after: 50,
            edge_replay_window: 1024,
            edge_cooldown_secs: 10,
            edge_cooldown_max_secs: 3600,
            scheduler_capacity: "critical=4096,state=4096,movement=1024,chat=512,bulk=256".into(),
            scheduler_deadline_ms: "movement=150,chat=10000,bulk=30000".into(),
            hub_ring: 256,
            hub_gap_timeout_ms: 1000,
            movement_bytes_per_sec: 65536,
            movement_resend_ms: 250,
            routing_margin: 0.8,
            routing_min_gain_ms: 5,
            routing_hold_ms: 2000,
            routing_loss_penalty_ms: 2,
            routing_stale_after_ms: 10_000,
            link_idle_timeout_ms: 1200,
            link_keep_alive_ms: 250,
            link_backoff_max_ms: 1000,
            spectator_max_delay_secs: 120,
            spectator_min_delay_secs: 0,
            spectator_buffer_mib: 64,
            spectator_queue: 64,
            control: skylane_control::ControlKind::None,
            etcd: Vec::new(),
            cluster_prefix: default_prefix(),
            lease_ttl_secs: default_lease_ttl(),
            tls_name: default_tls_name(),
            content_source: None,
            content_key: None,
            content_cache_mib: default_content_cache_mib(),
            content_refresh_ms: default_content_refresh_ms(),
            analytics: skylane_analytics::AnalyticsConfig::default(),
        }
    }
}

/// Parses `CLASS=VALUE,...` over `base` (classes not named keep theirs).
fn class_map<T: Copy>(
    key: &str,
    text: &str,
    mut base: [T; EventClass::COUNT],
    value: impl Fn(&str) -> Option<T>,
) -> Result<[T; EventClass::COUNT], ConfigError> {
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = |why: &str| ConfigError::Invalid(format!("{key}: `{item}`: {why}"));
        let (class, v) = item
            .split_once('=')
            .ok_or_else(|| bad("expected CLASS=VALUE"))?;
        let class: EventClass = class
            .trim()
            .parse()
            .map_err(|_| bad("unknown class (critical, state, movement, chat, bulk)"))?;
        base[class.rank()] = value(v.trim()).ok_or_else(|| bad("bad value"))?;
    }
    Ok(base)
}

impl RelayConfig {
    /// Checks what clap and serde cannot: TLS material, files, origins, peers.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.control_settings()
            .validate()
            .map_err(ConfigError::Invalid)?;
        self.analytics
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let tls = [&self.cert, &self.key, &self.ca];
        let some = tls.iter().filter(|p| p.is_some()).count();
        if self.dev_certs.is_some() && some > 0 {
            return Err(ConfigError::Invalid(
                "use either dev_certs or cert/key/ca, not both".into(),
            ));
        }
        if self.dev_certs.is_none() {
            if some != 3 {
                return Err(ConfigError::Invalid(
                    "TLS needs cert, key and ca (mutual TLS with origins), or dev_certs for development".into(),
                ));
            }
            if self.token_key.is_none() {
                return Err(ConfigError::Invalid(
                    "token_key is required outside development mode".into(),
                ));
            }
            if self.ticket_secret.is_none() {
                return Err(ConfigError::Invalid(
                    "ticket_secret is required outside development mode".into(),
                ));
            }
        }
        check_file("cert", self.cert.as_ref())?;
        check_file("key", self.key.as_ref())?;
        check_file("ca", self.ca.as_ref())?;
        check_file("token_key", self.token_key.as_ref())?;
        check_file("ticket_secret", self.ticket_secret.as_ref())?;
        check_file("geoip", self.geoip.as_ref())?;
        check_file("revocations", self.revocations.as_ref())?;
        check_file("admin_token", self.admin_token.as_ref())?;
        if self.id == 0 || self.id >= 1 << 24 {
            return Err(ConfigError::Invalid(format!(
                "id must be 1..=16777215, not {}",
                self.id
            )));
        }
        if self.spectator_min_delay_secs > self.spectator_max_delay_secs {
            return Err(ConfigError::Invalid(format!(
                "spectator_min_delay_secs ({}) is longer than spectator_max_delay_secs ({}): no spectator could be served",
                self.spectator_min_delay_secs, self.spectator_max_delay_secs
            )));
        }
        if self.origins.is_empty() && self.control == skylane_control::ControlKind::None {
            return Err(ConfigError::Invalid(
                "at least one origin is required (origin = [\"ADDR=WORLD\"]), or a control plane (control = \"etcd\")".into(),
            ));
        }
        for o in &self.origins {
            parse_origin(o)?;
        }
        for p in &self.peers {
            parse_peer(p)?;
        }
        self.edge()?;
        self.scheduler()?;
        self.routing()?;
        if self.link_idle_timeout_ms < 200 || self.link_keep_alive_ms == 0 {
            return Err(ConfigError::Invalid(format!(
                "link_idle_timeout_ms must be at least 200 and link_keep_alive_ms at least 1 (got {} and {})",
                self.link_idle_timeout_ms, self.link_keep_alive_ms
            )));
        }
        if self.link_backoff_max_ms < 100 {
            return Err(ConfigError::Invalid(format!(
                "link_backoff_max_ms must be at least 100, not {}",
                self.link_backoff_max_ms
            )));
        }
        for (key, value) in [
            ("max_client_frame", self.max_client_frame),
            ("pending_actions", self.pending_actions),
            ("hub_ring", self.hub_ring),
            ("spectator_queue", self.spectator_queue),
            ("spectator_buffer_mib", self.spectator_buffer_mib),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{key} must be at least 1")));
            }
        }
        Ok(())
    }

    /// The edge guard's settings.
    pub fn edge(&self) -> Result<EdgeConfig, ConfigError> {
        let d = EdgeConfig::default();
        let rates = class_map("edge_rates", &self.edge_rates, d.rates, |v| {
            let (per_sec, burst) = v.split_once('/')?;
            let rate = Rate {
                per_sec: per_sec.trim().parse().ok()?,
                burst: burst.trim().parse().ok()?,
            };
            (rate.per_sec > 0.0 && rate.burst >= 1.0).then_some(rate)
        })?;
        let max_payload = class_map(
            "edge_max_payload",
            &self.edge_max_payload,
            d.max_payload,
            |v| v.parse().ok().filter(|n| *n > 0),
        )?;
        if self.edge_replay_window == 0 || self.edge_replay_window > REPLAY_WINDOW {
            return Err(ConfigError::Invalid(format!(
                "edge_replay_window must be 1..={REPLAY_WINDOW}, not {}",
                self.edge_replay_window
            )));
        }
        Ok(EdgeConfig {
            rates,
            max_payload,
            max_skew: Duration::from_millis(self.edge_max_skew_ms),
            disconnect_after: self.edge_disconnect_after.max(1),
            replay_window: self.edge_replay_window,
        })
    }

    /// Each client connection's scheduler bounds and deadlines.
    pub fn scheduler(&self) -> Result<SchedulerConfig, ConfigError> {
        let d = SchedulerConfig::default();
        let capacity = class_map(
            "scheduler_capacity",
            &self.scheduler_capacity,
            d.capacity,
            |v| v.parse().ok().filter(|n| *n > 0),
        )?;
        let deadline = class_map(
            "scheduler_deadline_ms",
            &self.scheduler_deadline_ms,
            d.deadline,
            |v| match v {
                "none" => Some(None),
                ms => ms.parse().ok().map(|ms| Some(Duration::from_millis(ms))),
            },
        )?;
        Ok(SchedulerConfig { capacity, deadline })
    }

    /// The fan-out hub's history and hole timeout.
    /// Each client's movement view.
    pub fn movement(&self) -> Result<crate::movement::MovementConfig, ConfigError> {
        if self.movement_bytes_per_sec < 1200 {
            return Err(ConfigError::Invalid(format!(
                "movement_bytes_per_sec must be at least 1200 (one datagram), not {}",
                self.movement_bytes_per_sec
            )));
        }
        if self.movement_resend_ms == 0 {
            return Err(ConfigError::Invalid(
                "movement_resend_ms must be above 0".into(),
            ));
        }
        Ok(crate::movement::MovementConfig {
            bytes_per_sec: self.movement_bytes_per_sec,
            burst_bytes: (self.movement_bytes_per_sec / 4).max(2400),
            resend_after: Duration::from_millis(self.movement_resend_ms),
            ..Default::default()
        })
    }

    /// Fan-out ring and hole timeout.
    pub fn hub(&self) -> HubConfig {
        HubConfig {
            ring: self.hub_ring,
            gap_timeout: Duration::from_millis(self.hub_gap_timeout_ms),
        }
    }

    /// Content serving, when a source is configured (its key read here).
    pub fn content(&self) -> Result<Option<crate::ContentSettings>, ConfigError> {
        let Some(source) = &self.content_source else {
            return Ok(None);
        };
        let Some(key) = &self.content_key else {
            return Err(ConfigError::Invalid(
                "content_source needs content_key (the operator's public key, PEM)".into(),
            ));
        };
        let pem = std::fs::read_to_string(key)
            .map_err(|e| ConfigError::Invalid(format!("content_key {}: {e}", key.display())))?;
        let key = skylane_content::verifying_key_from_pem(&pem)
            .map_err(|e| ConfigError::Invalid(format!("content_key {}: {e}", key.display())))?;
        if self.content_cache_mib == 0 || self.content_refresh_ms == 0 {
            return Err(ConfigError::Invalid(
                "content_cache_mib and content_refresh_ms must be at least 1".into(),
            ));
        }
        Ok(Some(crate::ContentSettings {
            source: source.clone(),
            key,
            cache_bytes: self.content_cache_mib << 20,
            refresh: Duration::from_millis(self.content_refresh_ms),
        }))
    }

    /// Path selection (hysteresis).
    pub fn routing(&self) -> Result<RoutingConfig, ConfigError> {
        if !(self.routing_margin > 0.0 && self.routing_margin <= 1.0) {
            return Err(ConfigError::Invalid(format!(
                "routing_margin must be in (0, 1], not {}",
                self.routing_margin
            )));
        }
        Ok(RoutingConfig {
            margin: self.routing_margin,
            min_gain: Duration::from_millis(self.routing_min_gain_ms),
            hold: Duration::from_millis(self.routing_hold_ms),
            loss_penalty_per_pct: Duration::from_millis(self.routing_loss_penalty_ms),
            stale_after: Duration::from_millis(self.routing_stale_after_ms),
        })
    }

    /// The configuration of the relay `info` describes (id, region,
    /// coordinates), listening on `listen`; everything else at its default. The
    /// inverse of [`RelayConfig::info`] (with `public_addr` left to the listen
    /// address).
    pub fn for_relay(info: &RelayInfo, listen: SocketAddr) -> Self {
        Self {
            id: info.id.0,
            region: info.region.clone(),
            lat: info.lat,
            lon: info.lon,
            listen,
            ..Self::default()
        }
    }

    /// This relay as advertised to clients.
    pub fn info(&self) -> RelayInfo {
        RelayInfo {
            id: RelayId(self.id),
            region: self.region.clone(),
            addrs: vec![self
                .public_addr
                .clone()
                .unwrap_or_else(|| self.listen.to_string())],
            lat: self.lat,
            lon: self.lon,
        }
    }
}

#[cfg(test)]
mod tests;
