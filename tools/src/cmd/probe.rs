//! `skylane probe`: RTT and clock offset to a relay.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use super::resolve;

#[derive(Debug, Args)]
pub(crate) struct ProbeCmd {
    /// The relay's client address (host:port).
    addr: String,
    /// CA certificate that signed the relay's certificate (PEM).
    #[arg(long, env = "SKYLANE_CA")]
    ca: PathBuf,
    /// Name the relay's certificate is checked against.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Pings (at most 64).
    #[arg(long, default_value_t = 10)]
    count: usize,
    /// Time between pings.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

impl ProbeCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let addr = resolve(&self.addr)?;
        let roots = skylane_certs::load_roots(&self.ca)
            .with_context(|| format!("loading {}", self.ca.display()))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let r = rt.block_on(skylane_tools::probe::probe(
            addr,
            &self.server_name,
            roots,
            self.count,
            self.interval,
        ))?;
        if self.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            let ms = |us: u64| us as f64 / 1000.0;
            println!("relay       {}", r.addr);
            println!("handshake   {:.2} ms", ms(r.handshake_us));
            println!(
                "rtt         min {:.2} ms  p50 {:.2} ms  max {:.2} ms  ({} pings; quic estimate {:.2} ms)",
                ms(r.rtt_min_us),
                ms(r.rtt_p50_us),
                ms(r.rtt_max_us),
                r.samples,
                ms(r.quic_rtt_us)
            );
            println!(
                "clock       relay is {:+.2} ms from this machine (± {:.2} ms)",
                r.offset_us as f64 / 1000.0,
                ms(r.offset_bound_us)
            );
        }
        Ok(())
    }
}
