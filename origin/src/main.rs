//! `skylane-origin`: runs authoritative worlds for relays: the static world
//! (the arena), and with a control plane (`control = "embedded"` or `"etcd"`)
//! the worlds placed on it at run time (`POST /worlds`).
//!
//! `skylane-origin --config origin.toml` (every key also a flag and an environment
//! variable), `skylane-origin check-config FILE`. Logs go to stderr (`RUST_LOG`);
//! one JSON line on stdout tells where it listens. SIGTERM or Ctrl-C stops it
//! gracefully: relays are disconnected and the journal is flushed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use axum::routing::get;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use prometheus_client::registry::Registry;
use skylane_origin::{
    hosted_router, ledger_router, merge, violations_router, worlds_router, Games, OriginConfig,
    OriginMetrics, OriginServer,
};
use tracing::{info, warn};

/// Skylane origin: hosts one world and serves it to relays.
#[derive(Debug, Parser)]
#[command(name = "skylane-origin", version, about)]
struct Cli {
    /// TOML configuration file; flags and environment variables override it.
    #[arg(long, env = "SKYLANE_ORIGIN_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Log format on stderr: `text` (colour only on a terminal) or `json` (one
    /// object per line, for log shippers).
    #[arg(
        long,
        env = "SKYLANE_ORIGIN_LOG_FORMAT",
        value_enum,
        default_value_t,
        global = true
    )]
    log_format: skylane_ops::LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    origin: OriginConfig,
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
    let matches = Cli::command().try_get_matches_from(["skylane-origin"])?;
    let cli = Cli::from_arg_matches(&matches)?;
    let cfg = merge(&cli.origin, &matches, Some(path))?;
    cfg.validate()?;
    for w in cfg.warnings() {
        println!("warning: {w}");
    }
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
    let cfg = merge(&cli.origin, &matches, cli.config.as_deref())?;
    cfg.validate()?;
    // Multi-threaded: a tick occupies one worker while the links' readers and
    // writers (and the pongs they answer) go on on the others.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(cfg))
}

async fn serve(cfg: OriginConfig) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let metrics = OriginMetrics::new(&mut registry);
    skylane_ops::ProcessMetrics::register(&mut registry);
    let analytics_metrics = skylane_analytics::AnalyticsMetrics::new(&mut registry);
    let mut server = OriginServer::load(&cfg, metrics)?;
    let node = cfg.cluster_node_id();
    let analytics = skylane_analytics::Analytics::start(&cfg.analytics, &node, analytics_metrics)
        .context("starting analytics")?;
    if let Some(a) = &analytics {
        server
            .handle()
            .attach_analytics(a.emitter(), &node, cfg.analytics.sample_actions);
    }
    let listen = server.local_addr();
    let world = cfg.world;
    let control = cfg
        .control_settings()
        .open(std::time::Duration::from_secs(2))
        .await?;
    let mut _agent = None;
    if let Some(c) = &control {
        let signer = OriginServer::signer(&cfg)?;
        let mut told = false;
        _agent = loop {
            match server
                .join_cluster(
                    c.clone(),
                    skylane_origin::ClusterNode {
                        replication: Some(OriginServer::replication_client(&cfg)?),
                        zones: Some(OriginServer::zone_client(&cfg)?),
                        attestation: OriginServer::attestation_key(&cfg)?,
                        ..cfg.cluster_node()
                    },
                    Games::builtin(),
                    signer.same_key(),
                )
                .await
            {
                Ok(a) => break Some(a),
                Err(e) => {
                    if !told {
                        warn!(error = %e, "cannot join the control plane; retrying every 2 s");
                        told = true;
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                }
            }
        };
        info!(node = %cfg.cluster_node().id, "joined the control plane");
    }
    let mut app = skylane_ops::admin_router(Arc::new(registry)).route(
        "/status",
        get({
            let handle = server.handle();
            move || async move {
                let mut v = serde_json::to_value(handle.status().await).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert(
                        "worlds".into(),
                        serde_json::to_value(handle.worlds().await).unwrap_or_default(),
                    );
                }
                axum::Json(v)
            }
        }),
    );
    app = app
        .merge(violations_router(server.handle()))
        .merge(ledger_router(server.handle()));
    if let Some(c) = control {
        app = app
            .merge(worlds_router(c.clone()))
            .merge(hosted_router(c, server.handle()));
    }
    let auth = skylane_ops::AdminAuth::from_file(cfg.admin_token.as_deref())?;
    auth.check(cfg.admin)?;
    let admin_addr = skylane_ops::serve_admin(cfg.admin, auth.protect(app))
        .await
        .with_context(|| format!("binding admin {}", cfg.admin))?;
    println!(
        "{}",
        serde_json::json!({ "event": "listening", "relays": listen.to_string(), "admin": admin_addr.to_string(), "world": world })
    );
    info!(%listen, admin = %admin_addr, world, "origin serving");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("shutting down");
    server.shutdown().await.context("flushing the journal")?;
    if let Some(a) = analytics {
        a.shutdown().context("completing the analytics files")?;
    }
    Ok(())
}
