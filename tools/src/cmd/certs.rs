//! `skylane certs`: development PKI.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum CertsCmd {
    /// Generate a development CA and relay/origin certificates as PEM files.
    ///
    /// Writes ca.pem, ca.key, relay.pem, relay.key, origin.pem and origin.key into
    /// DIR. Certificates are valid for localhost, 127.0.0.1, ::1 and every --name.
    /// An existing ca.pem/ca.key in DIR is reused, so re-running adds names without
    /// invalidating what clients already trust.
    Gen {
        /// Output directory (created if missing).
        #[arg(long, env = "SKYLANE_CERTS_DIR")]
        out: PathBuf,
        /// Extra DNS name or IP address for the leaf certificates (repeatable).
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
    },
}

impl CertsCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Gen { out, names } => {
                let written = skylane_certs::DevCa::write_dev_pki(&out, &names)
                    .with_context(|| format!("generating certificates in {}", out.display()))?;
                for path in written {
                    println!("wrote {}", path.display());
                }
                Ok(())
            }
        }
    }
}
