//! Building a running origin from its configuration: TLS and the batch-signing
//! key from files (made in a development directory when asked), the world's
//! engine (new, new with a journal, or restarted from its journal), and the
//! endpoint. The binary is this and an admin endpoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use skylane_certs::{load_roots, origin_server_config, tls_files, CertError, Identity};
use skylane_ops::ConfigError;
use skylane_proto::ed25519_dalek::pkcs8::DecodePrivateKey;
use skylane_proto::ed25519_dalek::SigningKey;
use skylane_proto::{check_pem, ChainSigner, TokenError, TokenKeyPair};
use tracing::info;

use crate::arena::{Arena, ArenaConfig};
use crate::config::OriginConfig;
use crate::engine::Engine;
use crate::journal::{JournalError, JournalMeta};
use crate::metrics::OriginMetrics;
use crate::persist::{PersistConfig, Persistent};

use super::{OriginServer, ServerConfig};

/// Why an origin could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// TLS material could not be read or used.
    #[error("TLS: {0}")]
    Tls(#[from] CertError),
    /// The batch-signing key could not be read, made or parsed.
    #[error("signing key {path}: {message}")]
    SigningKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The journal could not be created or restarted from.
    #[error("journal {path}: {source}")]
    Journal {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: JournalError,
    },
    /// The violation store could not be opened.
    #[error("violation store {path}: {source}")]
    Violations {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: crate::evidence::EvidenceError,
    },
    /// The ledger could not be opened.
    #[error("ledger {path}: {source}")]
    Ledger {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: crate::ledger::LedgerError,
    },
    /// The listening address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

fn key_error(path: &Path) -> impl Fn(String) -> LoadError + '_ {
    move |message| LoadError::SigningKey {
        path: path.to_owned(),
        message,
    }
}

/// The batch-signing key: the configured file, or one made in `dev_certs`.
fn signing_key(cfg: &OriginConfig) -> Result<SigningKey, LoadError> {
    let path = match (&cfg.signing_key, &cfg.dev_certs) {
        (Some(p), _) => p.clone(),
        (None, Some(dir)) => {
            let key = dir.join("origin-signing.key");
            if !key.exists() {
                let fail = key_error(&key);
                let pair = TokenKeyPair::generate().map_err(|e: TokenError| fail(e.to_string()))?;
                std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
                std::fs::write(&key, &pair.private_pem).map_err(|e| fail(e.to_string()))?;
                std::fs::write(dir.join("origin-signing.pub"), &pair.public_pem)
                    .map_err(|e| fail(e.to_string()))?;
            }
            key
        }
        (None, None) => {
            return Err(ConfigError::Invalid("signing_key is required".into()).into());
        }
    };
    read_key(&path)
}

/// An Ed25519 PKCS#8 PEM private key file.
fn read_key(path: &Path) -> Result<SigningKey, LoadError> {
    let fail = key_error(path);
    let pem = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    check_pem(&pem, "PRIVATE KEY").map_err(&fail)?;
    SigningKey::from_pkcs8_pem(&pem)
        .map_err(|e| fail(format!("not an Ed25519 PKCS#8 private key: {e}")))
}

/// The origin's identity and the roots its peers' certificates chain to.
fn identity(
    cfg: &OriginConfig,
) -> Result<(Identity, skylane_certs::rustls::RootCertStore), LoadError> {
    let (cert, key, ca) = tls_files(
        cfg.dev_certs.as_deref(),
        "origin",
        cfg.cert.as_deref(),
        cfg.key.as_deref(),
        cfg.ca.as_deref(),
    )?;
    Ok((Identity::load(&cert, &key)?, load_roots(&ca)?))
}

/// The relay-facing QUIC server configuration (mutual TLS).
fn tls(cfg: &OriginConfig) -> Result<quinn::ServerConfig, LoadError> {
    let (identity, roots) = identity(cfg)?;
    let mut sc = origin_server_config(&identity, roots)?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Duration::from_secs(10).try_into().ok())
        .keep_alive_interval(Some(Duration::from_secs(2)))
        .max_concurrent_uni_streams(64u32.into())
        .max_concurrent_bidi_streams(4u32.into());
    sc.transport_config(Arc::new(transport));
    Ok(sc)
}

impl OriginServer {
    /// How this origin reaches a world's primary as its standby: the same
    /// identity and roots as its relay-facing server, ALPN `skylane-repl/2`.
    pub fn replication_client(cfg: &OriginConfig) -> Result<quinn::ClientConfig, LoadError> {
        let (identity, roots) = identity(cfg)?;
        Ok(skylane_certs::repl_client_config(roots, &identity)?)
    }

    /// The client configuration this origin reaches other zones' owners
    /// with (`skylane-zone/1`, its own identity).
    pub fn zone_client(cfg: &OriginConfig) -> Result<quinn::ClientConfig, LoadError> {
        let (identity, roots) = identity(cfg)?;
        Ok(skylane_certs::zone_client_config(roots, &identity)?)
    }

    /// The attestation key the configuration names: the configured file, or
    /// in development mode `attest-<node id>.key` in `dev_certs` (made if
    /// missing; one per node, since a standby's word must be its own);
    /// `None` otherwise (the cluster agent then makes a fresh one).
    pub fn attestation_key(cfg: &OriginConfig) -> Result<Option<SigningKey>, LoadError> {
        let path = match (&cfg.attestation_key, &cfg.dev_certs) {
            (Some(p), _) => p.clone(),
            (None, Some(dir)) => {
                let node = cfg.cluster_node().id;
                let key = dir.join(format!("attest-{node}.key"));
                if !key.exists() {
                    let fail = key_error(&key);
                    let pair =
                        TokenKeyPair::generate().map_err(|e: TokenError| fail(e.to_string()))?;
                    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
                    std::fs::write(&key, &pair.private_pem).map_err(|e| fail(e.to_string()))?;
                }
                key
            }
            (None, None) => return Ok(None),
        };
        read_key(&path).map(Some)
    }

    /// The batch signer the configuration names (worlds created at run time
    /// sign with it too).
    pub fn signer(cfg: &OriginConfig) -> Result<ChainSigner, LoadError> {
        Ok(ChainSigner::new(signing_key(cfg)?))
    }

    /// Starts an origin as its configuration says: binds, builds the world (or
    /// restarts it from its journal) and spawns it. Must be called inside a
    /// tokio runtime.
    pub fn load(cfg: &OriginConfig, metrics: OriginMetrics) -> Result<Self, LoadError> {
        cfg.validate()?;
        for w in cfg.warnings() {
            tracing::warn!("{w}");
        }
        let base_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let arena = Arena::new(ArenaConfig {
            width: cfg.map_size,
            height: cfg.map_size,
            roster: cfg.roster,
            ..ArenaConfig::default()
        });
        let grid = arena.grid();
        let engine_cfg = cfg.engine();
        let endpoint =
            quinn::Endpoint::server(tls(cfg)?, cfg.listen).map_err(|source| LoadError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let mut server_cfg = ServerConfig::new(base_us);
        server_cfg.session_grace = Duration::from_secs(cfg.session_grace_secs);
        server_cfg.link_queue_bytes = cfg.link_queue_mib << 20;
        server_cfg.min_acks = cfg.min_acks;
        let persist = PersistConfig {
            snapshot_every: cfg.snapshot_every,
            hash_every: 1,
        };
        let journal_error = |path: &Path| {
            let path = path.to_owned();
            move |source| LoadError::Journal { path, source }
        };
        let signer = ChainSigner::new(signing_key(cfg)?);
        let violations = match cfg.violations_path() {
            Some(path) => Some(
                crate::evidence::ViolationStore::open(&path, cfg.violations_max).map_err(
                    |source| LoadError::Violations {
                        path: path.clone(),
                        source,
                    },
                )?,
            ),
            None => None,
        };
        let ledger = match cfg.ledger_path() {
            Some(path) => Some(
                crate::ledger::Ledger::open(&path)
                    .map_err(|source| LoadError::Ledger { path, source })?,
            ),
            None => None,
        };
        let server = match &cfg.journal {
            Some(path) if path.exists() => {
                let open = if cfg.journal_recover {
                    Persistent::<Arena>::open_recovering
                } else {
                    Persistent::<Arena>::open
                };
                let mut p = open(path, "arena", signer, persist).map_err(journal_error(path))?;
                p.rebase(base_us);
                info!(
                    journal = %path.display(),
                    tick = p.engine().tick(),
                    state_hash = %p.engine().state_hash(),
                    "world restarted from its journal"
                );
                Self::spawn(endpoint, p, server_cfg, metrics)
            }
            Some(path) => {
                let meta = JournalMeta {
                    world_kind: "arena".into(),
                    world: engine_cfg.world,
                    engine: engine_cfg,
                    grid,
                };
                let engine = Engine::new(arena, grid, engine_cfg, signer, base_us);
                let p = Persistent::create(path, &meta, engine, persist)
                    .map_err(journal_error(path))?;
                Self::spawn(endpoint, p, server_cfg, metrics)
            }
            None => Self::spawn(
                endpoint,
                Engine::new(arena, grid, engine_cfg, signer, base_us),
                server_cfg,
                metrics,
            ),
        };
        if let Some(l) = ledger {
            server.handle().attach_ledger(l);
        }
        if let Some(store) = violations {
            // Before any session: nothing can have been violated yet.
            server
                .handle()
                .attach_violations(store)
                .map_err(|source| LoadError::Violations {
                    path: cfg.violations_path().unwrap_or_default(),
                    source,
                })?;
        }
        Ok(server)
    }
}
