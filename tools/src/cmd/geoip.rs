//! `skylane geoip`: GeoIP fixtures.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum GeoipCmd {
    /// Build a MaxMind-format City database (.mmdb) from a CSV of networks and
    /// locations (`network,city,latitude,longitude`; `#` comments). Without --csv,
    /// the demo's regions are written.
    Build {
        /// The CSV (default: the embedded demo regions).
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
}

impl GeoipCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Build { csv, out } => {
                let built = match &csv {
                    Some(path) => {
                        let f = std::fs::File::open(path)
                            .with_context(|| format!("opening {}", path.display()))?;
                        skylane_tools::geoip::build_mmdb(f)
                            .with_context(|| format!("building from {}", path.display()))?
                    }
                    None => skylane_tools::geoip::demo_mmdb()?,
                };
                std::fs::write(&out, &built.bytes)
                    .with_context(|| format!("writing {}", out.display()))?;
                println!(
                    "wrote {} ({} networks, {} bytes)",
                    out.display(),
                    built.networks,
                    built.bytes.len()
                );
                Ok(())
            }
        }
    }
}
