//! `skylane analytics summary DIR`: what an analytics directory's Parquet
//! files say (sessions per region, median session length, actions per
//! class, conflicts and violations per hour, ...), as text or JSON.

use anyhow::Context as _;
use clap::{Args, Subcommand};

/// `skylane analytics ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum AnalyticsCmd {
    /// Aggregates of the files under DIR (written by origins, relays, the
    /// matchmaker or the demo's `--analytics DIR`).
    Summary(SummaryCmd),
}

/// Options of `skylane analytics summary`.
#[derive(Debug, Args)]
pub(crate) struct SummaryCmd {
    /// The analytics directory (its `[analytics] dir`).
    dir: std::path::PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

impl AnalyticsCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Summary(c) => {
                let s = skylane_analytics::Summary::of_dir(&c.dir)
                    .with_context(|| format!("reading {}", c.dir.display()))?;
                if c.json {
                    println!("{}", serde_json::to_string(&s)?);
                } else {
                    print!("{s}");
                }
                Ok(())
            }
        }
    }
}
