//! `skylane-relay`: an edge relay.
//!
//! `skylane-relay --config relay.toml` (every key also a flag and an environment
//! variable), `skylane-relay check-config FILE`. Logs go to stderr (`RUST_LOG`);
//! one JSON line on stdout tells where it listens. SIGTERM, Ctrl-C or
//! `POST /drain` on the admin endpoint drains it: clients get a go-away naming other
//! relays, and the relay exits when they have left or the drain deadline passes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use axum::routing::{get, post};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use prometheus_client::registry::Registry;
use skylane_relay::{Relay, RelayConfig, RelayMetrics};
use tracing::info;

/// Skylane relay: terminates players' QUIC and carries them to their world's origin.
#[derive(Debug, Parser)]
#[command(name = "skylane-relay", version, about)]
struct Cli {
    /// TOML configuration file; flags and environment variables override it.
    #[arg(long, env = "SKYLANE_RELAY_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Log format on stderr: `text` (colour only on a terminal) or `json` (one
    /// object per line, for log shippers).
    #[arg(
        long,
        env = "SKYLANE_RELAY_LOG_FORMAT",
        value_enum,
        default_value_t,
        global = true
    )]
    log_format: skylane_ops::LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    relay: RelayConfig,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a configuration file and print the effective configuration.
    CheckConfig {
        /// The file.
        file: PathBuf,
    },
}

fn check(path: &Path) -> anyhow::Result<()> {
    let matches = Cli::command().try_get_matches_from(["skylane-relay"])?;
    let cli = Cli::from_arg_matches(&matches)?;
    let cfg = skylane_ops::merge(&cli.relay, &matches, Some(path))?;
    cfg.validate()?;
    println!("{}: ok", path.display());
    println!("{}", toml::to_string(&cfg)?);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    skylane_ops::init_logging_as(cli.log_format);
    if let Some(Command::CheckConfig { file }) = &cli.command {
        return check(file);
    }
    let cfg = skylane_ops::merge(&cli.relay, &matches, cli.config.as_deref())?;
    cfg.validate()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(cfg))
}

async fn serve(cfg: RelayConfig) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let metrics = RelayMetrics::new(&mut registry);
    skylane_ops::ProcessMetrics::register(&mut registry);
    let auth = skylane_ops::AdminAuth::from_file(cfg.admin_token.as_deref())?;
    auth.check(cfg.admin)?;
    let analytics = skylane_analytics::Analytics::start(
        &cfg.analytics,
        &format!("relay-{}", cfg.id),
        skylane_analytics::AnalyticsMetrics::new(&mut registry),
    )
    .context("starting analytics")?;
    let emitter = analytics
        .as_ref()
        .map_or_else(skylane_analytics::Emitter::disabled, |a| a.emitter());
    let relay = Relay::load_with(&cfg, metrics, emitter)?;
    let listen = relay.local_addr();
    if let Some(control) = cfg
        .control_settings()
        .open(std::time::Duration::from_secs(2))
        .await?
    {
        let ttl = std::time::Duration::from_secs(cfg.lease_ttl_secs);
        let mut told = false;
        while let Err(e) = relay.follow(control.clone(), cfg.cluster_node(), ttl).await {
            if !told {
                tracing::warn!(error = %e, "cannot join the control plane; retrying every 2 s");
                told = true;
            }
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
        info!(node = %cfg.cluster_node().id, "following the control plane");
    }

    let router = skylane_ops::admin_router(Arc::new(registry))
        .route(
            "/status",
            get({
                let relay = relay.clone();
                move || async move { axum::Json(relay.status().await) }
            }),
        )
        .route(
            "/drain",
            post({
                let relay = relay.clone();
                move || async move {
                    relay.drain();
                    "draining\n"
                }
            }),
        );
    let admin = skylane_ops::serve_admin(cfg.admin, auth.protect(router))
        .await
        .with_context(|| format!("binding admin {}", cfg.admin))?;
    println!(
        "{}",
        serde_json::json!({ "event": "listening", "clients": listen.to_string(), "admin": admin.to_string(), "relay": cfg.id })
    );
    info!(%listen, %admin, relay = cfg.id, "relay serving");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => relay.drain(),
        _ = term.recv() => relay.drain(),
        () = relay.closed() => {}
    }
    relay.closed().await;
    if let Some(a) = analytics {
        a.shutdown().context("completing the analytics files")?;
    }
    info!("relay exited");
    Ok(())
}
