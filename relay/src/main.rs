//! `skylane-relay`: an edge relay.
//!
//! `skylane-relay --config relay.toml` (every key also a flag and an environment
//! variable), `skylane-relay check-config FILE`. Logs go to stderr (`RUST_LOG`);
//! one JSON line on stdout tells where it listens. SIGTERM, Ctrl-C or
//! `POST /drain` on the admin endpoint drains it: clients get a go-away naming other
//! relays, and the relay exits when they have left or the drain deadline passes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::routing::{get, post};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use prometheus_client::registry::Registry;
use skylane_certs::{
    client_config, load_roots, peer_client_config, relay_server_config, tls_files, Identity,
};
use skylane_proto::{TokenKeyPair, TokenVerifier};
use skylane_relay::{
    client_transport, link_transport, AdmissionConfig, Directory, GeoDb, Limits, OriginId,
    OriginSpec, PeerSpec, Relay, RelayMetrics, RelaySettings, TicketKey,
};
use skylane_relay::{parse_origin, parse_peer, RelayConfig};
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

/// Token verifier and ticket secret: from files, or generated in the development
/// directory.
fn secrets(cfg: &RelayConfig) -> anyhow::Result<(TokenVerifier, Vec<u8>)> {
    let (token_path, ticket_path) = match &cfg.dev_certs {
        Some(dir) => {
            let public = dir.join("token.pub");
            if !public.exists() {
                let pair = TokenKeyPair::generate()?;
                std::fs::write(dir.join("token.key"), &pair.private_pem)?;
                std::fs::write(&public, &pair.public_pem)?;
            }
            let ticket = dir.join("ticket.secret");
            if !ticket.exists() {
                let mut secret = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
                    .map_err(|_| anyhow::anyhow!("no system randomness"))?;
                std::fs::write(&ticket, secret)?;
            }
            (
                cfg.token_key.clone().unwrap_or(public),
                cfg.ticket_secret.clone().unwrap_or(ticket),
            )
        }
        None => (
            cfg.token_key.clone().context("token_key is required")?,
            cfg.ticket_secret
                .clone()
                .context("ticket_secret is required")?,
        ),
    };
    let pem = std::fs::read_to_string(&token_path)
        .with_context(|| format!("reading token key {}", token_path.display()))?;
    let verifier = TokenVerifier::from_pem(&pem, cfg.audience.clone())
        .with_context(|| format!("token key {}", token_path.display()))?;
    let secret = std::fs::read(&ticket_path)
        .with_context(|| format!("reading ticket secret {}", ticket_path.display()))?;
    anyhow::ensure!(
        secret.len() >= 32,
        "ticket secret {} must hold at least 32 bytes",
        ticket_path.display()
    );
    Ok((verifier, secret))
}

async fn serve(cfg: RelayConfig) -> anyhow::Result<()> {
    let (cert, key, ca) = tls_files(
        cfg.dev_certs.as_deref(),
        "relay",
        cfg.cert.as_deref(),
        cfg.key.as_deref(),
        cfg.ca.as_deref(),
    )
    .context("TLS files")?;
    let identity = Identity::load(&cert, &key)?;
    let roots = load_roots(&ca)?;
    // One endpoint: game clients (skylane/1) and peer relays (skylane-peer/1, mTLS).
    let mut sc = relay_server_config(&identity, roots.clone())?;
    sc.transport_config(Arc::new(client_transport()));
    let mut link_tls = client_config(roots.clone(), Some(&identity))?;
    link_tls.transport_config(Arc::new(link_transport()));
    let mut peer_tls = peer_client_config(roots, &identity)?;
    peer_tls.transport_config(Arc::new(link_transport()));
    let (tokens, secret) = secrets(&cfg)?;
    let geo = match &cfg.geoip {
        Some(p) => Some(Arc::new(GeoDb::open(p)?)),
        None => None,
    };
    let mut origins = Vec::new();
    for (i, o) in cfg.origins.iter().enumerate() {
        let target = parse_origin(o)?;
        origins.push(OriginSpec {
            id: OriginId(i as u32 + 1),
            addr: target.resolve()?,
            server_name: target.tls_name,
            worlds: target.worlds,
        });
    }
    let mut relays = vec![cfg.info()];
    let mut peers = Vec::new();
    for p in &cfg.peers {
        let info = parse_peer(p)?;
        let target = info.addrs.first().cloned().unwrap_or_default();
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&target)
            .with_context(|| format!("resolving peer {target}"))?
            .next()
            .with_context(|| format!("peer {target} has no address"))?;
        let host = target.rsplit_once(':').map_or(target.as_str(), |(h, _)| h);
        peers.push(PeerSpec {
            id: info.id,
            addr,
            server_name: host.trim_matches(['[', ']']).to_owned(),
        });
        relays.push(info);
    }
    let limits = Limits {
        admission: AdmissionConfig {
            max_conns_per_ip: cfg.max_conns_per_ip,
            handshakes_per_sec: cfg.handshakes_per_sec,
            max_conns: cfg.max_sessions,
        },
        max_sessions: cfg.max_sessions,
        session_grace: Duration::from_secs(cfg.session_grace_secs),
        drain_deadline: Duration::from_secs(cfg.drain_deadline_secs),
        ..Limits::default()
    };
    let settings = RelaySettings {
        info: cfg.info(),
        directory: Directory::new(relays),
        geo,
        origins,
        link_tls,
        tokens,
        tickets: TicketKey::new(&secret),
        limits,
        edge: Default::default(),
        scheduler: Default::default(),
        hub: Default::default(),
        routing: Default::default(),
        peers,
        peer_tls: Some(peer_tls),
    };
    let endpoint = quinn::Endpoint::server(sc, cfg.listen)
        .with_context(|| format!("binding {}", cfg.listen))?;
    let listen = endpoint.local_addr()?;
    let mut registry = Registry::default();
    let metrics = RelayMetrics::new(&mut registry);
    skylane_ops::ProcessMetrics::register(&mut registry);
    let relay = Relay::spawn(endpoint, settings, metrics);

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
    let admin = skylane_ops::serve_admin(cfg.admin, router)
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
    info!("relay exited");
    Ok(())
}
