//! One module per subcommand group.

pub(crate) mod certs;
pub(crate) mod token;
