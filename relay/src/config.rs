//! Relay configuration: one struct filled from a TOML file, flags and environment
//! variables (flags and variables win over the file, the file over defaults);
//! unknown keys are rejected by name. `docs/operations.md` has an example.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};
use skylane_ops::{check_file, ConfigError};
use skylane_proto::{RelayId, RelayInfo, WorldId};

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
    /// Other relays of the deployment as `ID/REGION/LAT/LON/ADDR`, offered to
    /// clients as alternatives (nearest first) in welcomes, go-aways and
    /// directory answers.
    #[arg(long = "peer", env = "SKYLANE_RELAY_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// MaxMind-format GeoIP City database (.mmdb) to place clients.
    #[arg(long, env = "SKYLANE_RELAY_GEOIP")]
    pub geoip: Option<PathBuf>,
    /// Address of the HTTP endpoint serving /metrics, /status and POST /drain.
    #[arg(long, env = "SKYLANE_RELAY_ADMIN", default_value = "127.0.0.1:9433")]
    pub admin: SocketAddr,
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
}

/// An origin as an operator names it: `[TLS_NAME@]HOST:PORT=WORLD[+WORLD...]`.
///
/// `HOST` is a host name or an IP address; the relay resolves it at start. The
/// origin's certificate must name `TLS_NAME`, which defaults to `HOST` (a host
/// name, or an IP address in an IP SAN). Example: `origin-1.internal:4500=1+2`,
/// or `origin-1.internal@10.0.0.5:4500=1+2` to dial an address but check a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginTarget {
    /// `HOST:PORT` as given.
    pub target: String,
    /// The name checked against the origin's certificate.
    pub tls_name: String,
    /// Worlds it hosts.
    pub worlds: Vec<WorldId>,
}

impl OriginTarget {
    /// Resolves the host (DNS or a literal address); the first address wins.
    pub fn resolve(&self) -> Result<SocketAddr, ConfigError> {
        std::net::ToSocketAddrs::to_socket_addrs(&self.target)
            .map_err(|e| ConfigError::Invalid(format!("origin `{}`: {e}", self.target)))?
            .next()
            .ok_or_else(|| ConfigError::Invalid(format!("origin `{}` has no address", self.target)))
    }
}

/// Parses `[TLS_NAME@]HOST:PORT=WORLD[+WORLD...]` (see [`OriginTarget`]).
pub fn parse_origin(s: &str) -> Result<OriginTarget, ConfigError> {
    let bad = |why: &str| {
        ConfigError::Invalid(format!(
            "origin `{s}`: {why} (expected [TLS_NAME@]HOST:PORT=WORLD[+WORLD...])"
        ))
    };
    let (addr, worlds) = s.split_once('=').ok_or_else(|| bad("no `=`"))?;
    let (tls_name, target) = match addr.trim().split_once('@') {
        Some((name, target)) => (Some(name.trim()), target.trim()),
        None => (None, addr.trim()),
    };
    let (host, port) = target.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    port.parse::<u16>().map_err(|_| bad("bad port"))?;
    let host = host.trim_matches(['[', ']']);
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let tls_name = tls_name.unwrap_or(host);
    if quinn::rustls::pki_types::ServerName::try_from(tls_name).is_err() {
        return Err(bad("TLS name is neither a DNS name nor an IP address"));
    }
    let worlds = worlds
        .split('+')
        .map(|w| {
            w.trim()
                .parse::<u64>()
                .map(WorldId)
                .map_err(|_| bad("bad world id"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(OriginTarget {
        target: target.to_owned(),
        tls_name: tls_name.to_owned(),
        worlds,
    })
}

/// A peer relay parsed from `ID/REGION/LAT/LON/ADDR`.
pub fn parse_peer(s: &str) -> Result<RelayInfo, ConfigError> {
    let bad = |why: &str| {
        ConfigError::Invalid(format!(
            "peer `{s}`: {why} (expected ID/REGION/LAT/LON/ADDR)"
        ))
    };
    let parts: Vec<&str> = s.split('/').collect();
    let [id, region, lat, lon, addr] = parts.as_slice() else {
        return Err(bad("need five fields"));
    };
    Ok(RelayInfo {
        id: RelayId(id.parse().map_err(|_| bad("bad id"))?),
        region: (*region).to_owned(),
        lat: lat.parse().map_err(|_| bad("bad latitude"))?,
        lon: lon.parse().map_err(|_| bad("bad longitude"))?,
        addrs: vec![(*addr).to_owned()],
    })
}

impl RelayConfig {
    /// Checks what clap and serde cannot: TLS material, files, origins, peers.
    pub fn validate(&self) -> Result<(), ConfigError> {
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
        if self.id == 0 || self.id >= 1 << 24 {
            return Err(ConfigError::Invalid(format!(
                "id must be 1..=16777215, not {}",
                self.id
            )));
        }
        if self.origins.is_empty() {
            return Err(ConfigError::Invalid(
                "at least one origin is required (origin = [\"ADDR=WORLD\"])".into(),
            ));
        }
        for o in &self.origins {
            parse_origin(o)?;
        }
        for p in &self.peers {
            parse_peer(p)?;
        }
        Ok(())
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
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};
    use std::path::Path;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        relay: RelayConfig,
    }

    fn parse(args: &[&str], file: Option<&Path>) -> Result<RelayConfig, ConfigError> {
        let matches = Cli::command().try_get_matches_from(args).unwrap();
        let cli = Cli::from_arg_matches(&matches).unwrap();
        skylane_ops::merge(&cli.relay, &matches, file)
    }

    #[test]
    fn origins_are_named_by_host_with_an_optional_tls_name() {
        let o = parse_origin("origin-1.example:4500=1+2").unwrap();
        assert_eq!(o.target, "origin-1.example:4500");
        assert_eq!(o.tls_name, "origin-1.example");
        assert_eq!(o.worlds, vec![WorldId(1), WorldId(2)]);
        let o = parse_origin("origin-1.internal@10.0.0.5:4500=7").unwrap();
        assert_eq!(o.target, "10.0.0.5:4500");
        assert_eq!(o.tls_name, "origin-1.internal");
        let o = parse_origin("[::1]:4500=1").unwrap();
        assert_eq!(o.tls_name, "::1");
        assert_eq!(o.resolve().unwrap(), "[::1]:4500".parse().unwrap());
        for bad in [
            "x:1",
            "x=1",
            ":4500=1",
            "x:port=1",
            "x:1=w",
            "bad name!@x:1=1",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn file_flags_and_validation() {
        let dir = std::env::temp_dir().join(format!("skylane-relay-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("relay.toml");
        std::fs::write(
            &f,
            "id = 7\nregion = \"eu-west\"\norigins = [\"127.0.0.1:4500=1+2\"]\npeers = [\"8/us-east/38.9/-77.0/relay8.example:4433\"]\ndev_certs = \"/tmp/x\"\n",
        )
        .unwrap();
        let c = parse(&["x", "--region", "eu-central"], Some(&f)).unwrap();
        assert_eq!(c.id, 7);
        assert_eq!(c.region, "eu-central", "flag over file");
        c.validate().unwrap();
        let o = parse_origin(&c.origins[0]).unwrap();
        assert_eq!(o.worlds, vec![WorldId(1), WorldId(2)]);
        assert_eq!(
            o.tls_name, "127.0.0.1",
            "the host is the TLS name by default"
        );
        assert_eq!(parse_peer(&c.peers[0]).unwrap().id, RelayId(8));

        std::fs::write(&f, "orgins = []\n").unwrap();
        let err = parse(&["x"], Some(&f)).unwrap_err().to_string();
        assert!(err.contains("orgins"), "{err}");

        let c = parse(
            &["x", "--dev-certs", "/tmp/x", "--origin", "nowhere=1"],
            None,
        )
        .unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("no port"), "{err}");
        let c = parse(
            &[
                "x",
                "--dev-certs",
                "/tmp/x",
                "--origin",
                "127.0.0.1:1=1",
                "--geoip",
                "/nonexistent.mmdb",
            ],
            None,
        )
        .unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("/nonexistent.mmdb"), "{err}");
        let c = parse(&["x", "--origin", "127.0.0.1:1=1"], None).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("cert, key and ca"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
