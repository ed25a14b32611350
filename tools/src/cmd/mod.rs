//! One module per subcommand group.

pub(crate) mod certs;
pub(crate) mod proxy;
pub(crate) mod replay;
pub(crate) mod token;
