//! `skylane-origin`: runs one authoritative world (the arena game) for relays.
//!
//! `skylane-origin --config origin.toml` (every key also a flag and an environment
//! variable), `skylane-origin check-config FILE`. Logs go to stderr (`RUST_LOG`);
//! one JSON line on stdout tells where it listens. SIGTERM or Ctrl-C stops it
//! gracefully: relays are disconnected and the journal is flushed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::routing::get;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use prometheus_client::registry::Registry;
use skylane_certs::{load_roots, server_config, tls_files, ClientAuth, Identity};
use skylane_origin::{
    merge, Arena, ArenaConfig, Engine, JournalMeta, OriginConfig, OriginMetrics, OriginServer,
    PersistConfig, Persistent, ServerConfig,
};
use skylane_proto::ed25519_dalek::pkcs8::DecodePrivateKey;
use skylane_proto::ed25519_dalek::SigningKey;
use skylane_proto::{ChainSigner, TokenKeyPair};
use tracing::info;

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

fn load_signing_key(cfg: &OriginConfig) -> anyhow::Result<SigningKey> {
    let path = match (&cfg.signing_key, &cfg.dev_certs) {
        (Some(p), _) => p.clone(),
        (None, Some(dir)) => {
            let key = dir.join("origin-signing.key");
            if !key.exists() {
                let pair = TokenKeyPair::generate()?;
                std::fs::create_dir_all(dir)?;
                std::fs::write(&key, &pair.private_pem)?;
                std::fs::write(dir.join("origin-signing.pub"), &pair.public_pem)?;
            }
            key
        }
        (None, None) => anyhow::bail!("signing_key is required"),
    };
    let pem =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    SigningKey::from_pkcs8_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{}: not an Ed25519 PKCS#8 key: {e}", path.display()))
}

fn tls(cfg: &OriginConfig) -> anyhow::Result<quinn::ServerConfig> {
    let (cert, key, ca) = tls_files(
        cfg.dev_certs.as_deref(),
        "origin",
        cfg.cert.as_deref(),
        cfg.key.as_deref(),
        cfg.ca.as_deref(),
    )
    .context("TLS files")?;
    let identity = Identity::load(&cert, &key)?;
    let roots = load_roots(&ca)?;
    let mut sc = server_config(&identity, ClientAuth::Required(roots))?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(Duration::from_secs(10).try_into()?))
        .keep_alive_interval(Some(Duration::from_secs(2)))
        .max_concurrent_uni_streams(64u32.into())
        .max_concurrent_bidi_streams(4u32.into());
    sc.transport_config(Arc::new(transport));
    Ok(sc)
}

fn check(path: &Path) -> anyhow::Result<()> {
    let matches = Cli::command().try_get_matches_from(["skylane-origin"])?;
    let cli = Cli::from_arg_matches(&matches)?;
    let cfg = merge(&cli.origin, &matches, Some(path))?;
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
    let base_us = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as u64;
    let signer =
        || -> anyhow::Result<ChainSigner> { Ok(ChainSigner::new(load_signing_key(&cfg)?)) };
    let arena = Arena::new(ArenaConfig {
        width: cfg.map_size,
        height: cfg.map_size,
        roster: cfg.roster,
        ..ArenaConfig::default()
    });
    let grid = arena.grid();
    let engine_cfg = cfg.engine();
    let endpoint = quinn::Endpoint::server(tls(&cfg)?, cfg.listen)
        .with_context(|| format!("binding {}", cfg.listen))?;
    let mut registry = Registry::default();
    let metrics = OriginMetrics::new(&mut registry);
    skylane_ops::ProcessMetrics::register(&mut registry);
    let mut server_cfg = ServerConfig::new(base_us);
    server_cfg.session_grace = Duration::from_secs(cfg.session_grace_secs);
    server_cfg.link_queue_bytes = cfg.link_queue_mib << 20;
    let world = cfg.world;
    let persist = PersistConfig {
        snapshot_every: cfg.snapshot_every,
        hash_every: 1,
    };
    let listen = endpoint.local_addr()?;
    let server = match &cfg.journal {
        Some(path) if path.exists() => {
            let mut p = Persistent::<Arena>::open(path, "arena", signer()?, persist)
                .with_context(|| format!("restarting from {}", path.display()))?;
            p.rebase(base_us);
            info!(journal = %path.display(), tick = p.engine().tick(), "world restarted from its journal");
            OriginServer::spawn(endpoint, p, server_cfg, metrics)
        }
        Some(path) => {
            let meta = JournalMeta {
                world_kind: "arena".into(),
                world: engine_cfg.world,
                engine: engine_cfg,
                grid,
            };
            let engine = Engine::new(arena, grid, engine_cfg, signer()?, base_us);
            let p = Persistent::create(path, &meta, engine, persist)
                .with_context(|| format!("creating {}", path.display()))?;
            OriginServer::spawn(endpoint, p, server_cfg, metrics)
        }
        None => OriginServer::spawn(
            endpoint,
            Engine::new(arena, grid, engine_cfg, signer()?, base_us),
            server_cfg,
            metrics,
        ),
    };

    let app = skylane_ops::admin_router(Arc::new(registry)).route(
        "/status",
        get(move || async move {
            axum::Json(serde_json::json!({ "world": world, "listen": listen.to_string() }))
        }),
    );
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
    Ok(())
}
