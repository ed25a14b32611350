//! One module per subcommand group.

pub(crate) mod certs;
pub(crate) mod demo;
pub(crate) mod geoip;
pub(crate) mod loadgen;
pub(crate) mod probe;
pub(crate) mod proxy;
pub(crate) mod replay;
pub(crate) mod token;
