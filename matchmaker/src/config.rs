//! The `skylane-match` binary's configuration (TOML), and turning it into a
//! [`ServiceConfig`].
//!
//! ```toml
//! node_id = "mm-eu-1"             # unique in the cluster
//! listen = "0.0.0.0:7700"         # the HTTP API (and /metrics)
//! queue = "default"               # instances of one queue elect one leader
//! region = "eu"
//! control = "etcd"                # or "embedded" (a single instance, for trying)
//! etcd = ["http://10.0.0.5:2379"]
//! cluster_prefix = "/skylane/default"
//! lease_ttl_secs = 3              # a standby takes over this long after a crash
//! player_keys = "tokens.pub"      # PEM key set that signs players' tokens
//! signing_key = "matchmaker.key"  # this matchmaker's PEM private key (relays trust its public half)
//! audience = "skylane"
//! token_ttl_secs = 600            # world tokens it issues
//! ratings_db = "ratings.redb"     # default: ratings-<node_id>.redb
//! geoip = "GeoLite2-City.mmdb"    # optional: estimates for tickets without measurements
//!
//! [[games]]
//! name = "tictactoe"
//! teams = 2
//! team_size = 1
//! tick_hz = 10
//!
//! # Optional; default 50/100/200 ms and any at 0/10/20/30 s.
//! [[windows.steps]]
//! after_ms = 0
//! rtt_ms = 60
//! skill = 10.0
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use skylane_control::{ControlKind, ControlSettings};
use skylane_proto::token::{TokenSigner, TokenVerifier};

use crate::coordinator::GameConfig;
use crate::matcher::Windows;
use crate::service::{Locate, ServiceConfig, PLACE_WAIT};

/// The binary's configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// This instance's node id.
    pub node_id: String,
    /// Where the HTTP API listens.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The queue.
    #[serde(default = "default_queue")]
    pub queue: String,
    /// Region (informational).
    #[serde(default)]
    pub region: String,
    /// The control plane.
    pub control: ControlKind,
    /// etcd endpoints.
    #[serde(default)]
    pub etcd: Vec<String>,
    /// Key prefix of the cluster.
    #[serde(default = "default_prefix")]
    pub cluster_prefix: String,
    /// Lease TTL, seconds.
    #[serde(default = "default_ttl")]
    pub lease_ttl_secs: u64,
    /// PEM public key(s) that sign players' tokens.
    pub player_keys: PathBuf,
    /// This matchmaker's PEM private key (signs world tokens).
    pub signing_key: PathBuf,
    /// Tokens' audience.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// Validity of issued world tokens, seconds.
    #[serde(default = "default_token_ttl")]
    pub token_ttl_secs: u64,
    /// The rating book (default `ratings-<node_id>.redb`).
    #[serde(default)]
    pub ratings_db: Option<PathBuf>,
    /// A MaxMind City database for tickets without measurements.
    #[serde(default)]
    pub geoip: Option<PathBuf>,
    /// The games.
    pub games: Vec<GameConfig>,
    /// The windows.
    #[serde(default)]
    pub windows: Option<Windows>,
    /// Analytics rows (tickets settled, matches) to Parquet files: the
    /// `[analytics]` table (see docs/analytics.md). Off without `dir`.
    #[serde(default)]
    pub analytics: skylane_analytics::AnalyticsConfig,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7700))
}
fn default_queue() -> String {
    "default".into()
}
fn default_prefix() -> String {
    "/skylane/default".into()
}
fn default_ttl() -> u64 {
    3
}
fn default_audience() -> String {
    "skylane".into()
}
fn default_token_ttl() -> u64 {
    600
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl MatchConfig {
    /// Parses a TOML file's text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(e.to_string()))
    }

    /// The control plane settings.
    pub fn control(&self) -> ControlSettings {
        ControlSettings {
            kind: self.control,
            etcd: self.etcd.clone(),
            prefix: self.cluster_prefix.clone(),
            lease_ttl: Duration::from_secs(self.lease_ttl_secs),
        }
    }

    /// Checks everything that does not need the files.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.analytics
            .validate()
            .map_err(|e| ConfigError(e.to_string()))?;
        if self.control == ControlKind::None {
            return Err(ConfigError(
                "control must be \"etcd\" (or \"embedded\" for one instance)".into(),
            ));
        }
        self.control().validate().map_err(ConfigError)?;
        if self.games.is_empty() {
            return Err(ConfigError("no [[games]]".into()));
        }
        for g in &self.games {
            g.validate().map_err(ConfigError)?;
        }
        if self.token_ttl_secs == 0 {
            return Err(ConfigError("token_ttl_secs must be > 0".into()));
        }
        if let Some(w) = &self.windows {
            if w.steps.is_empty() || w.steps[0].after_ms != 0 {
                return Err(ConfigError(
                    "windows.steps must start with after_ms = 0".into(),
                ));
            }
        }
        Ok(())
    }

    /// Reads the key files (and the GeoIP database) into a service
    /// configuration; `locate` looks addresses up.
    pub fn service(&self, locate: Option<Locate>) -> Result<ServiceConfig, ConfigError> {
        self.validate()?;
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).map_err(|e| ConfigError(format!("{}: {e}", p.display())))
        };
        let verifier = TokenVerifier::from_pem(&read(&self.player_keys)?, self.audience.clone())
            .map_err(|e| ConfigError(format!("player_keys: {e}")))?;
        let signer = TokenSigner::from_pem(&read(&self.signing_key)?)
            .map_err(|e| ConfigError(format!("signing_key: {e}")))?;
        Ok(ServiceConfig {
            node_id: self.node_id.clone(),
            queue: self.queue.clone(),
            region: self.region.clone(),
            games: self.games.clone(),
            windows: self.windows.clone().unwrap_or_default(),
            verifier,
            signer: Arc::new(signer),
            audience: self.audience.clone(),
            token_ttl: Duration::from_secs(self.token_ttl_secs),
            lease_ttl: Duration::from_secs(self.lease_ttl_secs),
            ratings_db: Some(
                self.ratings_db
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(format!("ratings-{}.redb", self.node_id))),
            ),
            locate,
            place_wait: PLACE_WAIT,
            analytics: skylane_analytics::Emitter::disabled(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
node_id = "mm-1"
control = "embedded"
player_keys = "p.pub"
signing_key = "m.key"
[[games]]
name = "tictactoe"
teams = 2
team_size = 1
tick_hz = 10
"#;

    #[test]
    fn a_sample_parses_and_bad_ones_are_refused() {
        let c = MatchConfig::from_toml(SAMPLE).unwrap();
        assert_eq!(c.listen, default_listen());
        c.validate().unwrap();
        assert!(MatchConfig::from_toml(&format!("{SAMPLE}\nbogus = 1")).is_err());
        let mut none = c.clone();
        none.control = ControlKind::None;
        assert!(none.validate().is_err());
        let mut no_games = c.clone();
        no_games.games.clear();
        assert!(no_games.validate().is_err());
        let mut huge = c;
        huge.games[0].teams = 100;
        assert!(huge.validate().is_err());
        // Missing key files are a clear error.
        let e = MatchConfig::from_toml(SAMPLE)
            .unwrap()
            .service(None)
            .unwrap_err();
        assert!(e.0.contains("p.pub"), "{e}");
    }
}
