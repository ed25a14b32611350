//! `skylane-match`: the matchmaker service. `skylane-match --config
//! match.toml` (see `skylane_match::config` for the keys), `skylane-match
//! check-config FILE`. Several instances with the same `queue` elect one
//! leader through the control plane; every instance serves the API. Logs go
//! to stderr (`RUST_LOG`); one JSON line on stdout tells where it listens.
//! SIGTERM or Ctrl-C resigns (a standby takes over at once).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use prometheus_client::registry::Registry;
use skylane_match::config::MatchConfig;
use skylane_match::service::MatchService;

/// Skylane matchmaker: skill and measured-latency matching.
#[derive(Debug, Parser)]
#[command(name = "skylane-match", version, about)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "SKYLANE_MATCH_CONFIG")]
    config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, env = "SKYLANE_MATCH_LOG_FORMAT", value_enum, default_value_t)]
    log_format: skylane_ops::LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a configuration file (and its key files) and print it.
    CheckConfig {
        /// The file.
        file: PathBuf,
    },
}

fn load(path: &PathBuf) -> anyhow::Result<MatchConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let cfg = MatchConfig::from_toml(&text).with_context(|| format!("{}", path.display()))?;
    cfg.validate()?;
    Ok(cfg)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    skylane_ops::init_logging_as(cli.log_format);
    if let Some(Command::CheckConfig { file }) = &cli.command {
        let cfg = load(file)?;
        cfg.service(None)?;
        println!("{}: ok", file.display());
        println!("{}", toml::to_string(&cfg)?);
        return Ok(());
    }
    let path = cli
        .config
        .context("--config FILE is required (see `skylane-match --help`)")?;
    let cfg = load(&path)?;
    let locate: Option<skylane_match::service::Locate> = match &cfg.geoip {
        Some(p) => {
            let db = skylane_relay::GeoDb::open(p).with_context(|| format!("{}", p.display()))?;
            Some(Arc::new(move |ip| db.locate(ip)))
        }
        None => None,
    };
    let mut service = cfg.service(locate)?;
    let mut registry = Registry::default();
    let analytics = skylane_analytics::Analytics::start(
        &cfg.analytics,
        &cfg.node_id,
        skylane_analytics::AnalyticsMetrics::new(&mut registry),
    )
    .context("starting analytics")?;
    if let Some(a) = &analytics {
        service.analytics = a.emitter();
    }
    let control = cfg
        .control()
        .open(Duration::from_secs(30))
        .await
        .context("opening the control plane")?
        .context("no control plane configured")?;
    let mm = MatchService::start(service, control, cfg.listen, registry)
        .await
        .context("starting the matchmaker")?;
    println!(
        "{}",
        serde_json::json!({ "node": cfg.node_id, "listen": mm.addr().to_string(), "queue": cfg.queue })
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    mm.stop().await;
    if let Some(a) = analytics {
        a.shutdown().context("completing the analytics files")?;
    }
    Ok(())
}
