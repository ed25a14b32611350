//! Building a running relay from its configuration: the material it reads from
//! files (TLS identity and CA, token key, ticket secret, GeoIP database; made
//! in a development directory when asked), the endpoint it binds, and the
//! settings from [`RelaySettings::from_config`]. The binary is this and an
//! admin endpoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use skylane_certs::rustls::RootCertStore;
use skylane_certs::{
    client_config, load_roots, peer_client_config, relay_server_config, tls_files, CertError,
    Identity,
};
use skylane_ops::ConfigError;
use skylane_proto::{TokenError, TokenKeyPair, TokenVerifier};

use crate::config::RelayConfig;
use crate::geo::{GeoDb, GeoError};
use crate::metrics::RelayMetrics;
use crate::revocation::Revocations;
use crate::session::TicketKey;
use crate::settings::{client_transport, link_transport, RelayMaterial, RelaySettings};

use super::Relay;

/// Why a relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// TLS material could not be read or used.
    #[error("TLS: {0}")]
    Tls(#[from] CertError),
    /// The token key could not be read or used.
    #[error("token key {path}: {source}")]
    TokenKey {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: TokenError,
    },
    /// The GeoIP database could not be used.
    #[error(transparent)]
    Geo(#[from] GeoError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The ticket secret is too short.
    #[error("ticket secret {0} must hold at least 32 bytes")]
    ShortSecret(PathBuf),
    /// The system has no randomness for a development secret.
    #[error("no system randomness")]
    NoRandomness,
    /// The listening address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LoadError + '_ {
    move |source| LoadError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The relay's certificate and key, and the CA its peers' and origins'
/// certificates must chain to.
fn tls_identity(cfg: &RelayConfig) -> Result<(Identity, RootCertStore), LoadError> {
    let (cert, key, ca) = tls_files(
        cfg.dev_certs.as_deref(),
        "relay",
        cfg.cert.as_deref(),
        cfg.key.as_deref(),
        cfg.ca.as_deref(),
    )?;
    Ok((Identity::load(&cert, &key)?, load_roots(&ca)?))
}

impl RelayMaterial {
    /// Reads the material `cfg` names (or makes it in `dev_certs`).
    pub fn load(cfg: &RelayConfig) -> Result<Self, LoadError> {
        let (identity, roots) = tls_identity(cfg)?;
        Self::with_identity(cfg, &identity, roots)
    }

    /// The rest of the material, for an identity already loaded.
    fn with_identity(
        cfg: &RelayConfig,
        identity: &Identity,
        roots: RootCertStore,
    ) -> Result<Self, LoadError> {
        let mut link_tls = client_config(roots.clone(), Some(identity))?;
        link_tls.transport_config(Arc::new(link_transport()));
        let mut peer_tls = peer_client_config(roots, identity)?;
        peer_tls.transport_config(Arc::new(link_transport()));
        let (token_path, ticket_path) = secret_files(cfg)?;
        let pem = std::fs::read_to_string(&token_path).map_err(io(&token_path))?;
        let tokens = TokenVerifier::from_pem(&pem, cfg.audience.clone()).map_err(|source| {
            LoadError::TokenKey {
                path: token_path.clone(),
                source,
            }
        })?;
        let secret = std::fs::read(&ticket_path).map_err(io(&ticket_path))?;
        if secret.len() < 32 {
            return Err(LoadError::ShortSecret(ticket_path));
        }
        let geo = match &cfg.geoip {
            Some(p) => Some(Arc::new(GeoDb::open(p)?)),
            None => None,
        };
        let revocations = match &cfg.revocations {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(io(p))?;
                Revocations::parse(&text).map_err(|e| {
                    LoadError::Config(ConfigError::Invalid(format!("{}: {e}", p.display())))
                })?
            }
            None => Revocations::default(),
        };
        Ok(Self {
            link_tls,
            peer_tls: Some(peer_tls),
            tokens,
            revocations,
            tickets: TicketKey::new(&secret),
            geo,
        })
    }
}

/// The token key and ticket secret files; in development mode, made if missing.
fn secret_files(cfg: &RelayConfig) -> Result<(PathBuf, PathBuf), LoadError> {
    let Some(dir) = &cfg.dev_certs else {
        let need = |p: &Option<PathBuf>, what: &str| {
            p.clone()
                .ok_or_else(|| ConfigError::Invalid(format!("{what} is required")))
        };
        return Ok((
            need(&cfg.token_key, "token_key")?,
            need(&cfg.ticket_secret, "ticket_secret")?,
        ));
    };
    let public = dir.join("token.pub");
    if !public.exists() {
        let pair = TokenKeyPair::generate().map_err(|source| LoadError::TokenKey {
            path: public.clone(),
            source,
        })?;
        let private = dir.join("token.key");
        std::fs::write(&private, &pair.private_pem).map_err(io(&private))?;
        std::fs::write(&public, &pair.public_pem).map_err(io(&public))?;
    }
    let ticket = dir.join("ticket.secret");
    if !ticket.exists() {
        let mut secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
            .map_err(|_| LoadError::NoRandomness)?;
        std::fs::write(&ticket, secret).map_err(io(&ticket))?;
    }
    Ok((
        cfg.token_key.clone().unwrap_or(public),
        cfg.ticket_secret.clone().unwrap_or(ticket),
    ))
}

impl Relay {
    /// Starts a relay as its configuration says: reads its material, binds its
    /// endpoint (clients and peer relays) and spawns it. Must be called inside a
    /// tokio runtime.
    pub fn load(cfg: &RelayConfig, metrics: RelayMetrics) -> Result<Self, LoadError> {
        Self::load_with(cfg, metrics, skylane_analytics::Emitter::disabled())
    }

    /// [`Relay::load`], emitting analytics rows through `analytics`.
    pub fn load_with(
        cfg: &RelayConfig,
        metrics: RelayMetrics,
        analytics: skylane_analytics::Emitter,
    ) -> Result<Self, LoadError> {
        cfg.validate()?;
        let (identity, roots) = tls_identity(cfg)?;
        let material = RelayMaterial::with_identity(cfg, &identity, roots.clone())?;
        let mut sc = relay_server_config(&identity, roots)?;
        sc.transport_config(Arc::new(client_transport()));
        let mut settings = RelaySettings::from_config(cfg, material)?;
        settings.analytics = analytics;
        let endpoint =
            quinn::Endpoint::server(sc, cfg.listen).map_err(|source| LoadError::Bind {
                addr: cfg.listen,
                source,
            })?;
        Ok(Self::spawn(endpoint, settings, metrics))
    }
}
