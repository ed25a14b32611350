//! How an operator names the relay's origins and peers in its configuration
//! (`[TLS_NAME@]HOST:PORT=WORLD[+WORLD...]`, `ID/REGION/LAT/LON/[TLS_NAME@]ADDR`),
//! parsed and checked by name.

use std::net::SocketAddr;

use skylane_ops::ConfigError;
use skylane_proto::{RelayId, RelayInfo, WorldId};

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
        resolve("origin", &self.target)
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

/// A peer relay as an operator names it: `ID/REGION/LAT/LON/[TLS_NAME@]ADDR`.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerTarget {
    /// The relay as clients are told of it (`ADDR` is what they dial).
    pub info: RelayInfo,
    /// The name checked against its certificate (default: `ADDR`'s host).
    pub tls_name: String,
}

impl PeerTarget {
    /// Resolves the peer's address (DNS or a literal); the first address wins.
    pub fn resolve(&self) -> Result<SocketAddr, ConfigError> {
        resolve("peer", self.info.addrs.first().map_or("", String::as_str))
    }

    /// The `peers` entry naming `info`, checked against `tls_name`.
    pub fn entry(info: &RelayInfo, tls_name: &str) -> String {
        let addr = info.addrs.first().map_or("", String::as_str);
        format!(
            "{}/{}/{}/{}/{tls_name}@{addr}",
            info.id.0, info.region, info.lat, info.lon
        )
    }
}

/// `host:port` to its first address (DNS or a literal).
fn resolve(what: &str, target: &str) -> Result<SocketAddr, ConfigError> {
    std::net::ToSocketAddrs::to_socket_addrs(target)
        .map_err(|e| ConfigError::Invalid(format!("{what} `{target}`: {e}")))?
        .next()
        .ok_or_else(|| ConfigError::Invalid(format!("{what} `{target}` has no address")))
}

/// Parses `ID/REGION/LAT/LON/[TLS_NAME@]ADDR` (see [`PeerTarget`]).
pub fn parse_peer(s: &str) -> Result<PeerTarget, ConfigError> {
    let bad = |why: &str| {
        ConfigError::Invalid(format!(
            "peer `{s}`: {why} (expected ID/REGION/LAT/LON/[TLS_NAME@]ADDR)"
        ))
    };
    let parts: Vec<&str> = s.split('/').collect();
    let [id, region, lat, lon, addr] = parts.as_slice() else {
        return Err(bad("need five fields"));
    };
    let (tls_name, addr) = match addr.split_once('@') {
        Some((name, addr)) => (Some(name), addr),
        None => (None, *addr),
    };
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let tls_name = tls_name.unwrap_or(host.trim_matches(['[', ']']));
    Ok(PeerTarget {
        info: RelayInfo {
            id: RelayId(id.parse().map_err(|_| bad("bad id"))?),
            region: (*region).to_owned(),
            lat: lat.parse().map_err(|_| bad("bad latitude"))?,
            lon: lon.parse().map_err(|_| bad("bad longitude"))?,
            addrs: vec![addr.to_owned()],
        },
        tls_name: tls_name.to_owned(),
    })
}
