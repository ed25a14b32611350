//! Origin configuration: one struct filled from a TOML file, flags and environment
//! variables (flags and variables win over the file, the file over defaults).
//! Unknown keys in the file are rejected by name.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};

/// Everything an operator sets on an origin.
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginConfig {
    /// Address relays connect to (QUIC, mutual TLS).
    #[arg(long, env = "SKYLANE_ORIGIN_LISTEN", default_value = "127.0.0.1:4500")]
    pub listen: SocketAddr,
    /// The world this origin hosts.
    #[arg(long, env = "SKYLANE_ORIGIN_WORLD", default_value_t = 1)]
    pub world: u64,
    /// Ticks per second.
    #[arg(long, env = "SKYLANE_ORIGIN_TICK_HZ", default_value_t = 30)]
    pub tick_hz: u32,
    /// Journal file (redb): actions log and snapshots. Without it the world is not
    /// persisted.
    #[arg(long, env = "SKYLANE_ORIGIN_JOURNAL")]
    pub journal: Option<PathBuf>,
    /// Ticks between snapshots.
    #[arg(long, env = "SKYLANE_ORIGIN_SNAPSHOT_EVERY", default_value_t = 300)]
    pub snapshot_every: u64,
    /// Certificate chain (PEM) presented to relays.
    #[arg(long, env = "SKYLANE_ORIGIN_CERT")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of the certificate.
    #[arg(long, env = "SKYLANE_ORIGIN_KEY")]
    pub key: Option<PathBuf>,
    /// CA bundle (PEM) that relay certificates must chain to.
    #[arg(long, env = "SKYLANE_ORIGIN_CA")]
    pub ca: Option<PathBuf>,
    /// Development mode: use (or create) a development PKI in this directory
    /// (`skylane certs gen` layout) instead of --cert/--key/--ca.
    #[arg(long, env = "SKYLANE_ORIGIN_DEV_CERTS")]
    pub dev_certs: Option<PathBuf>,
    /// Ed25519 key (PKCS#8 PEM, as written by `skylane token keygen`) that signs
    /// event batches. Relays and clients verify with its public key.
    #[arg(long, env = "SKYLANE_ORIGIN_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,
    /// Ed25519 key (PKCS#8 PEM, `skylane token keygen`) this origin signs
    /// standby attestations and checkpoint co-signatures with: its own, not
    /// the batch-signing key (a co-signature is a second server's word). Its
    /// public key is published in the control plane. Without it: made in
    /// `dev_certs` (`attest-<node id>.key`), or a fresh one per start.
    #[arg(long, env = "SKYLANE_ORIGIN_ATTESTATION_KEY")]
    #[serde(default)]
    pub attestation_key: Option<PathBuf>,
    /// Address of the HTTP endpoint serving /metrics and /status.
    #[arg(long, env = "SKYLANE_ORIGIN_ADMIN", default_value = "127.0.0.1:9500")]
    pub admin: SocketAddr,
    /// File holding the admin endpoint's bearer token (first line, 16+
    /// characters), required for every route but `GET /metrics` and
    /// `GET /status`. Without it, a non-loopback `admin` address is refused.
    #[arg(long, env = "SKYLANE_ORIGIN_ADMIN_TOKEN")]
    pub admin_token: Option<PathBuf>,
    /// Largest action payload accepted, in bytes, whatever the class. The
    /// relays' edge limits each class (1 KiB, bulk 16 KiB by default); with 1 KiB
    /// here every bulk action the edge let through was refused at the origin.
    #[arg(long, env = "SKYLANE_ORIGIN_MAX_PAYLOAD", default_value_t = 16 * 1024)]
    pub max_payload: usize,
    /// Seconds a session whose relay vanished waits to resume elsewhere.
    #[arg(long, env = "SKYLANE_ORIGIN_SESSION_GRACE", default_value_t = 30)]
    pub session_grace_secs: u64,
    /// MiB queued towards one relay (all its streams) before that relay counts as
    /// too slow and its link is closed. Bursts within it (thousands of sessions
    /// opening at once, a relay's CPU stall) are carried through.
    #[arg(long, env = "SKYLANE_ORIGIN_LINK_QUEUE_MIB", default_value_t = 32)]
    pub link_queue_mib: usize,
    /// Side of the arena's square map, in units. Cells are 100 units and a player
    /// receives the 3×3 cells around it, so the map size sets how many players
    /// each one sees: 1,000 suits a few hundred players; a 10,000-player world
    /// wants ~10,000 (one player per cell on average).
    #[arg(long, env = "SKYLANE_ORIGIN_MAP_SIZE", default_value_t = 1000.0)]
    pub map_size: f32,
    /// Where players' arrivals, departures and deaths are announced: `world`
    /// (everyone hears of everyone; a few hundred players) or `cells` (only the
    /// players around it; thousands of players).
    #[arg(
        long,
        env = "SKYLANE_ORIGIN_ROSTER",
        value_enum,
        default_value = "world"
    )]
    pub roster: crate::Roster,
    /// On restart, if re-executing the journal diverges from the hashes it
    /// recorded, start from the last tick that matched and delete the journal's
    /// inputs after it (without it, the origin refuses to serve the world).
    #[arg(long, env = "SKYLANE_ORIGIN_JOURNAL_RECOVER")]
    #[serde(default)]
    pub journal_recover: bool,
    /// Batches kept per channel for resumes (a resume older than this gets a
    /// keyframe instead of the missed events). 0: sized from the grace period,
    /// `(session_grace_secs + 5) × tick_hz`, so a resume inside the grace gets
    /// exactly what it missed.
    #[arg(long, env = "SKYLANE_ORIGIN_HISTORY_BATCHES", default_value_t = 0)]
    pub history_batches: usize,
    /// MiB of events kept per channel for resumes, whatever `history_batches`
    /// says: the memory bound (a channel busier than this over the grace period
    /// cannot be resumed exactly; `check-config` cannot know, the origin's
    /// resumes then send a keyframe and the client counts the skipped events).
    #[arg(long, env = "SKYLANE_ORIGIN_HISTORY_MIB", default_value_t = 16)]
    pub history_mib: usize,
    /// Ticks between keyframes of a busy channel: shorter resyncs faster, longer
    /// costs less bandwidth.
    #[arg(long, env = "SKYLANE_ORIGIN_KEYFRAME_EVERY", default_value_t = 30)]
    pub keyframe_every: u64,
    /// Actions accepted into one tick before further ones are refused (rate
    /// limited) until the tick ends.
    #[arg(
        long,
        env = "SKYLANE_ORIGIN_MAX_TICK_ACTIONS",
        default_value_t = 100_000
    )]
    pub max_tick_actions: usize,
    /// What the anomaly detector does about a suspicious player: `flag`
    /// (record only), `kick` (record, disconnect) or `ban` (also refuse the
    /// player for the world's life).
    #[arg(
        long,
        env = "SKYLANE_ORIGIN_ENFORCEMENT",
        value_enum,
        default_value = "kick"
    )]
    pub enforcement: crate::Enforcement,
    /// Accuracy at or above this is always suspicious.
    #[arg(
        long,
        env = "SKYLANE_ORIGIN_DETECT_MAX_ACCURACY",
        default_value_t = 0.95
    )]
    pub detect_max_accuracy: f64,
    /// Standard deviations of accuracy above the population mean that are
    /// suspicious: lower catches more aimbots and flags more good players.
    #[arg(
        long,
        env = "SKYLANE_ORIGIN_DETECT_ACCURACY_SIGMAS",
        default_value_t = 4.0
    )]
    pub detect_accuracy_sigmas: f64,
    /// Attacks in the window before a player's accuracy is judged.
    #[arg(long, env = "SKYLANE_ORIGIN_DETECT_MIN_ATTACKS", default_value_t = 20)]
    pub detect_min_attacks: usize,
    /// A median reaction below this many milliseconds is suspicious.
    #[arg(
        long,
        env = "SKYLANE_ORIGIN_DETECT_MIN_REACTION_MS",
        default_value_t = 120
    )]
    pub detect_min_reaction_ms: u64,
    /// Actions per second above this are suspicious.
    #[arg(
        long,
        env = "SKYLANE_ORIGIN_DETECT_MAX_ACTIONS_PER_SEC",
        default_value_t = 120.0
    )]
    pub detect_max_actions_per_sec: f64,
    /// What an accuracy anomaly gets (default: `enforcement`).
    #[arg(long, env = "SKYLANE_ORIGIN_ENFORCE_ACCURACY", value_enum)]
    #[serde(default)]
    pub enforce_accuracy: Option<crate::Enforcement>,
    /// What inhuman reaction times get (default: `enforcement`).
    #[arg(long, env = "SKYLANE_ORIGIN_ENFORCE_REACTION_TIME", value_enum)]
    #[serde(default)]
    pub enforce_reaction_time: Option<crate::Enforcement>,
    /// What an action rate above the maximum gets (default: `enforcement`).
    #[arg(long, env = "SKYLANE_ORIGIN_ENFORCE_ACTION_RATE", value_enum)]
    #[serde(default)]
    pub enforce_action_rate: Option<crate::Enforcement>,
    /// What `rule_strikes` rule refusals (speed, cooldown, range) within one
    /// second get.
    #[arg(
        long,
        env = "SKYLANE_ORIGIN_ENFORCE_RULE",
        value_enum,
        default_value = "flag"
    )]
    #[serde(default)]
    pub enforce_rule: crate::Enforcement,
    /// What the speed rule's violations get (default: `enforce_rule`).
    #[arg(long, env = "SKYLANE_ORIGIN_ENFORCE_RULE_SPEED", value_enum)]
    #[serde(default)]
    pub enforce_rule_speed: Option<crate::Enforcement>,
    /// What the cooldown rule's violations get (default: `enforce_rule`).
    #[arg(long, env = "SKYLANE_ORIGIN_ENFORCE_RULE_COOLDOWN", value_enum)]
    #[serde(default)]
    pub enforce_rule_cooldown: Option<crate::Enforcement>,
    /// What the range rule's violations get (default: `enforce_rule`).
    #[arg(long, env = "SKYLANE_ORIGIN_ENFORCE_RULE_RANGE", value_enum)]
    #[serde(default)]
    pub enforce_rule_range: Option<crate::Enforcement>,
    /// Rule refusals within one second of world time that make one violation.
    #[arg(long, env = "SKYLANE_ORIGIN_RULE_STRIKES", default_value_t = 1)]
    pub rule_strikes: u32,
    /// How long a kicked player is refused on every relay, a resume included.
    #[arg(long, env = "SKYLANE_ORIGIN_KICK_COOLDOWN_SECS", default_value_t = 60)]
    pub kick_cooldown_secs: u64,
    /// How long a ban by the detectors lasts (0: permanent).
    #[arg(long, env = "SKYLANE_ORIGIN_BAN_SECS", default_value_t = 86_400)]
    pub ban_secs: u64,
    /// The violation store (redb): every violation, the origin's and the edge's,
    /// with its evidence, queryable by player and time (`GET /violations`,
    /// `skylane violations`). Default: `violations-<node id>.redb` in
    /// `dev_certs` when that is set, else none (violations are then only
    /// logged and counted).
    #[arg(long, env = "SKYLANE_ORIGIN_VIOLATIONS_DB")]
    #[serde(default)]
    pub violations_db: Option<PathBuf>,
    /// The economy ledger (redb): every player's wallet across sessions and
    /// worlds, every transaction with its before and after balances (`GET
    /// /ledger`). Default: `ledger-<node id>.redb` in `dev_certs` when that is
    /// set, else none (wallets then live and die with each world).
    #[arg(long, env = "SKYLANE_ORIGIN_LEDGER_DB")]
    #[serde(default)]
    pub ledger_db: Option<PathBuf>,
    /// Most violations the store keeps (the oldest go first).
    #[arg(
        long,
        env = "SKYLANE_ORIGIN_VIOLATIONS_MAX",
        default_value_t = 1_000_000
    )]
    pub violations_max: u64,
    /// Control plane: `none` (only the static world above), `embedded` (an
    /// in-process one: worlds created with `POST /worlds` run here; one-box
    /// deployments), or `etcd` (a cluster; needs a build with `--features etcd`
    /// and `etcd` endpoints).
    #[arg(
        long,
        env = "SKYLANE_ORIGIN_CONTROL",
        value_enum,
        default_value = "none"
    )]
    #[serde(default)]
    pub control: skylane_control::ControlKind,
    /// etcd client URLs (`http://10.0.0.5:2379`), comma-separated on the command line.
    #[arg(long, env = "SKYLANE_ORIGIN_ETCD", value_delimiter = ',')]
    #[serde(default)]
    pub etcd: Vec<String>,
    /// The cluster's key prefix in etcd (one per cluster).
    #[arg(
        long,
        env = "SKYLANE_ORIGIN_CLUSTER_PREFIX",
        default_value = "/skylane/default"
    )]
    pub cluster_prefix: String,
    /// This origin's id in the cluster (default `origin-<listen port>`).
    #[arg(long, env = "SKYLANE_ORIGIN_NODE_ID")]
    #[serde(default)]
    pub node_id: Option<String>,
    /// Region, for placement (`eu`, `us-east`).
    #[arg(long, env = "SKYLANE_ORIGIN_REGION", default_value = "default")]
    pub region: String,
    /// Where this origin is, `LAT,LON` (TOML: `coords = [50.1, 8.7]`):
    /// matchmakers estimate the RTT of players that measured nothing from it.
    #[arg(long, env = "SKYLANE_ORIGIN_COORDS", value_parser = parse_coords)]
    #[serde(default)]
    pub coords: Option<(f64, f64)>,
    /// Most worlds placed on this origin at once (the static world not counted).
    #[arg(long, env = "SKYLANE_ORIGIN_MAX_WORLDS", default_value_t = 1000)]
    pub max_worlds: u32,
    /// Standbys that must acknowledge (re-execute and agree on) a tick before
    /// its outputs leave this origin, for the worlds it is primary of; capped by
    /// the standbys following. 0: answer without waiting (a failover may then
    /// lose the last acknowledged outcomes).
    #[arg(long, env = "SKYLANE_ORIGIN_MIN_ACKS", default_value_t = 1)]
    pub min_acks: usize,
    /// The address relays reach this origin at (default: `listen`).
    #[arg(long, env = "SKYLANE_ORIGIN_ADVERTISE")]
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// The name this origin's certificate carries (relays check it).
    #[arg(long, env = "SKYLANE_ORIGIN_TLS_NAME", default_value = "localhost")]
    pub tls_name: String,
    /// Control-plane lease TTL, seconds: how long after this origin dies its
    /// worlds can move, and how long it keeps running worlds without reaching
    /// the control plane.
    #[arg(long, env = "SKYLANE_ORIGIN_LEASE_TTL", default_value_t = 5)]
    pub lease_ttl_secs: u64,
    /// Seconds an ended world stays (its players read the result) before it is
    /// removed.
    #[arg(long, env = "SKYLANE_ORIGIN_REMOVAL_GRACE", default_value_t = 30)]
    pub removal_grace_secs: u64,
    /// Directory for the journals of worlds placed on this origin at run time
    /// (one redb file per world, `world-<id>.redb`, replayable with
    /// `skylane replay`). Without it they run in memory.
    #[arg(long, env = "SKYLANE_ORIGIN_WORLD_JOURNALS")]
    #[serde(default)]
    pub world_journals: Option<PathBuf>,
    /// Analytics rows to Parquet files: the file's `[analytics]` table
    /// (`dir`, `spool_rows`, `rotate_mb`, `rotate_secs`, `sample_actions`;
    /// see docs/analytics.md). Off without `dir`.
    #[arg(skip)]
    #[serde(default)]
    pub analytics: skylane_analytics::AnalyticsConfig,
}

impl OriginConfig {
    /// Batches kept per channel: `history_batches`, or sized from the grace.
    pub fn history_len(&self) -> usize {
        match self.history_batches {
            0 => (self.session_grace_secs as usize + 5) * self.tick_hz as usize,
            n => n,
        }
    }

    /// What works but breaks a promise: printed by `check-config` and logged at
    /// start.
    pub fn warnings(&self) -> Vec<String> {
        let grace_ticks = self.session_grace_secs as usize * self.tick_hz as usize;
        let mut w = Vec::new();
        if self.history_len() < grace_ticks {
            w.push(format!(
                "history_batches = {} holds {:.1} s at {} Hz, less than the {} s grace: a session resumed after that loses events to a keyframe",
                self.history_len(),
                self.history_len() as f64 / f64::from(self.tick_hz.max(1)),
                self.tick_hz,
                self.session_grace_secs
            ));
        }
        w
    }

    /// The violation store's file, if any (see `violations_db`).
    pub fn violations_path(&self) -> Option<PathBuf> {
        self.violations_db.clone().or_else(|| {
            let dir = self.dev_certs.as_ref()?;
            Some(dir.join(format!("violations-{}.redb", self.cluster_node_id())))
        })
    }

    /// The ledger's file, if any (see `ledger_db`).
    pub fn ledger_path(&self) -> Option<PathBuf> {
        self.ledger_db.clone().or_else(|| {
            let dir = self.dev_certs.as_ref()?;
            Some(dir.join(format!("ledger-{}.redb", self.cluster_node_id())))
        })
    }

    /// The engine's settings for this configuration.
    pub fn engine(&self) -> crate::EngineConfig {
        let mut e = crate::EngineConfig::new(skylane_proto::WorldId(self.world));
        e.tick_hz = self.tick_hz;
        e.max_payload = self.max_payload;
        e.history = self.history_len();
        e.history_bytes = self.history_mib << 20;
        e.keyframe_every = self.keyframe_every;
        e.max_queue = self.max_tick_actions;
        e.detector = crate::DetectorConfig {
            min_attacks: self.detect_min_attacks,
            max_accuracy: self.detect_max_accuracy,
            accuracy_sigmas: self.detect_accuracy_sigmas,
            min_reaction_us: self.detect_min_reaction_ms * 1000,
            max_actions_per_sec: self.detect_max_actions_per_sec,
            policy: crate::EnforcementPolicy {
                accuracy: self.enforce_accuracy.unwrap_or(self.enforcement),
                reaction_time: self.enforce_reaction_time.unwrap_or(self.enforcement),
                action_rate: self.enforce_action_rate.unwrap_or(self.enforcement),
                rule: self.enforce_rule,
                rule_speed: self.enforce_rule_speed,
                rule_cooldown: self.enforce_rule_cooldown,
                rule_range: self.enforce_rule_range,
                rule_strikes: self.rule_strikes.max(1),
                kick_cooldown_secs: self.kick_cooldown_secs.max(1),
                ban_secs: self.ban_secs,
            },
            ..e.detector
        };
        e
    }
}

pub use skylane_ops::{merge, ConfigError};

impl OriginConfig {
    /// The control plane this origin uses.
    pub fn control_settings(&self) -> skylane_control::ControlSettings {
        skylane_control::ControlSettings {
            kind: self.control,
            etcd: self.etcd.clone(),
            prefix: self.cluster_prefix.clone(),
            lease_ttl: std::time::Duration::from_secs(self.lease_ttl_secs),
        }
    }

    /// This origin's node id (`node_id`, or `origin-<listen port>`).
    pub fn cluster_node_id(&self) -> String {
        self.node_id
            .clone()
            .unwrap_or_else(|| format!("origin-{}", self.listen.port()))
    }

    /// How this origin presents itself to the cluster.
    pub fn cluster_node(&self) -> crate::ClusterNode {
        crate::ClusterNode {
            replication: None,
            zones: None,
            attestation: None,
            id: self.cluster_node_id(),
            addr: self.advertise.unwrap_or(self.listen).to_string(),
            tls_name: self.tls_name.clone(),
            admin: Some(self.admin.to_string()),
            region: self.region.clone(),
            capacity: self.max_worlds,
            coords: self.coords,
            lease_ttl: std::time::Duration::from_secs(self.lease_ttl_secs),
            removal_grace: std::time::Duration::from_secs(self.removal_grace_secs),
            journal_dir: self.world_journals.clone(),
        }
    }
}

impl OriginConfig {
    /// Checks settings that clap and serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let tls = [&self.cert, &self.key, &self.ca];
        let some = tls.iter().filter(|p| p.is_some()).count();
        if self.dev_certs.is_some() && some > 0 {
            return Err(ConfigError::Invalid(
                "use either dev_certs or cert/key/ca, not both".into(),
            ));
        }
        if self.dev_certs.is_none() && some != 3 {
            return Err(ConfigError::Invalid(
                "TLS needs cert, key and ca (mutual TLS with relays), or dev_certs for development"
                    .into(),
            ));
        }
        for (name, path) in [
            ("cert", &self.cert),
            ("key", &self.key),
            ("ca", &self.ca),
            ("signing_key", &self.signing_key),
            ("attestation_key", &self.attestation_key),
            ("admin_token", &self.admin_token),
        ] {
            if let Some(p) = path {
                if !p.exists() {
                    return Err(ConfigError::Invalid(format!(
                        "{name}: {} does not exist",
                        p.display()
                    )));
                }
            }
        }
        self.analytics
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if self.tick_hz == 0 || self.tick_hz > 1000 {
            return Err(ConfigError::Invalid(format!(
                "tick_hz must be 1..=1000, not {}",
                self.tick_hz
            )));
        }
        if !(100.0..=100_000.0).contains(&self.map_size) {
            return Err(ConfigError::Invalid(format!(
                "map_size must be 100..=100000 units, not {}",
                self.map_size
            )));
        }
        for (key, value) in [
            ("history_mib", self.history_mib as u64),
            ("keyframe_every", self.keyframe_every),
            ("max_tick_actions", self.max_tick_actions as u64),
            ("detect_min_attacks", self.detect_min_attacks as u64),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{key} must be at least 1")));
            }
        }
        if !(self.detect_max_accuracy > 0.0 && self.detect_max_accuracy <= 1.0) {
            return Err(ConfigError::Invalid(format!(
                "detect_max_accuracy must be in (0, 1], not {}",
                self.detect_max_accuracy
            )));
        }
        if !(self.detect_accuracy_sigmas > 0.0 && self.detect_max_actions_per_sec > 0.0) {
            return Err(ConfigError::Invalid(
                "detect_accuracy_sigmas and detect_max_actions_per_sec must be positive".into(),
            ));
        }
        if !(1..=4096).contains(&self.link_queue_mib) {
            return Err(ConfigError::Invalid(format!(
                "link_queue_mib must be 1..=4096, not {}",
                self.link_queue_mib
            )));
        }
        self.control_settings()
            .validate()
            .map_err(ConfigError::Invalid)?;
        if self.max_worlds == 0 {
            return Err(ConfigError::Invalid("max_worlds must be at least 1".into()));
        }
        if self.signing_key.is_none() && self.dev_certs.is_none() {
            return Err(ConfigError::Invalid(
                "signing_key is required outside development mode".into(),
            ));
        }
        Ok(())
    }
}

/// `LAT,LON` in degrees.
fn parse_coords(s: &str) -> Result<(f64, f64), String> {
    let (lat, lon) = s
        .split_once(',')
        .ok_or_else(|| format!("{s:?}: expected LAT,LON"))?;
    let lat: f64 = lat
        .trim()
        .parse()
        .map_err(|e| format!("latitude {lat:?}: {e}"))?;
    let lon: f64 = lon
        .trim()
        .parse()
        .map_err(|e| format!("longitude {lon:?}: {e}"))?;
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err(format!(
            "{s:?}: latitude must be -90..=90, longitude -180..=180"
        ));
    }
    Ok((lat, lon))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_parse_within_bounds() {
        assert_eq!(parse_coords("50.1, 8.7"), Ok((50.1, 8.7)));
        assert!(parse_coords("50.1").is_err());
        assert!(parse_coords("95,0").is_err());
        assert!(parse_coords("0,x").is_err());
    }
    use clap::{CommandFactory, FromArgMatches, Parser};
    use std::path::Path;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        origin: OriginConfig,
    }

    fn parse(args: &[&str], file: Option<&Path>) -> Result<OriginConfig, ConfigError> {
        let matches = Cli::command().try_get_matches_from(args).unwrap();
        let cli = Cli::from_arg_matches(&matches).unwrap();
        merge(&cli.origin, &matches, file)
    }

    #[test]
    fn file_overrides_defaults_and_flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("origin.toml");
        std::fs::write(&f, "world = 9\ntick_hz = 60\nlisten = \"127.0.0.1:4600\"\n").unwrap();
        let c = parse(&["x", "--tick-hz", "20"], Some(&f)).unwrap();
        assert_eq!(c.world, 9, "file over default");
        assert_eq!(c.tick_hz, 20, "flag over file");
        assert_eq!(c.listen, "127.0.0.1:4600".parse().unwrap());
        assert_eq!(c.snapshot_every, 300, "default");
    }

    #[test]
    fn the_engine_tunables_reach_the_engine() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("origin.toml");
        std::fs::write(
            &f,
            "history_batches = 900\nenforcement = \"ban\"\ndetect_accuracy_sigmas = 3.5\n\
             enforce_reaction_time = \"flag\"\nenforce_rule = \"kick\"\nrule_strikes = 5\n\
             enforce_rule_speed = \"ban\"\n\
             kick_cooldown_secs = 300\n",
        )
        .unwrap();
        let c = parse(
            &["x", "--dev-certs", "/tmp/x", "--keyframe-every", "60"],
            Some(&f),
        )
        .unwrap();
        c.validate().unwrap();
        let e = c.engine();
        assert_eq!(e.history, 900);
        assert_eq!(e.keyframe_every, 60);
        let p = e.detector.policy;
        assert_eq!(
            p.accuracy,
            crate::Enforcement::Ban,
            "the default for every detector"
        );
        assert_eq!(p.action_rate, crate::Enforcement::Ban);
        assert_eq!(p.reaction_time, crate::Enforcement::Flag, "per detector");
        assert_eq!((p.rule, p.rule_strikes), (crate::Enforcement::Kick, 5));
        assert_eq!(
            p.rule_action(skylane_proto::RejectCode::Speed),
            crate::Enforcement::Ban
        );
        assert_eq!(
            p.rule_action(skylane_proto::RejectCode::Range),
            crate::Enforcement::Kick
        );
        assert_eq!((p.kick_cooldown_secs, p.ban_secs), (300, 86_400));
        assert_eq!(e.detector.accuracy_sigmas, 3.5);
        assert_eq!(e.detector.min_reaction_us, 120_000);
        let c = parse(&["x", "--dev-certs", "/tmp/x", "--history-mib", "0"], None).unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("history_mib"));
        // Sized from the grace by default; a shorter history is warned about.
        let c = parse(&["x", "--dev-certs", "/tmp/x"], None).unwrap();
        assert_eq!(c.engine().history, 35 * 30);
        assert!(c.warnings().is_empty());
        let c = parse(
            &["x", "--dev-certs", "/tmp/x", "--history-batches", "300"],
            None,
        )
        .unwrap();
        let w = c.warnings().join("\n");
        assert!(w.contains("less than the 30 s grace"), "{w}");
        let c = parse(
            &["x", "--dev-certs", "/tmp/x", "--detect-max-accuracy", "2"],
            None,
        )
        .unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("detect_max_accuracy"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("origin.toml");
        std::fs::write(&f, "wrold = 9\n").unwrap();
        let err = parse(&["x"], Some(&f)).unwrap_err().to_string();
        assert!(err.contains("wrold"), "{err}");
        std::fs::write(&f, "listen = \"nowhere\"\n").unwrap();
        let err = parse(&["x"], Some(&f)).unwrap_err().to_string();
        assert!(err.contains("origin.toml"), "{err}");
        let err = parse(&["x"], Some(&dir.path().join("missing.toml"))).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
    }

    #[test]
    fn validation_explains_missing_tls() {
        let c = parse(&["x"], None).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("cert, key and ca"), "{err}");
        let c = parse(&["x", "--dev-certs", "/tmp/x", "--tick-hz", "0"], None).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("tick_hz"));
        let c = parse(
            &[
                "x",
                "--cert",
                "/nonexistent.pem",
                "--key",
                "/k",
                "--ca",
                "/c",
                "--signing-key",
                "/s",
            ],
            None,
        )
        .unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("/nonexistent.pem"));
    }
}
