//! One module per subcommand group.

pub(crate) mod admin;
pub(crate) mod analytics;
pub(crate) mod certs;
pub(crate) mod content;
pub(crate) mod demo;
pub(crate) mod geoip;
pub(crate) mod loadgen;
pub(crate) mod matchmaking;
pub(crate) mod probe;
pub(crate) mod proxy;
pub(crate) mod replay;
pub(crate) mod token;
pub(crate) mod violations;

/// Resolves `host:port` to its first socket address.
pub(crate) fn resolve(addr: &str) -> anyhow::Result<std::net::SocketAddr> {
    use anyhow::Context as _;
    use std::net::ToSocketAddrs as _;
    addr.to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))
}
