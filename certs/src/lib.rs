//! `skylane-certs`: certificates and TLS configuration for Skylane.
//!
//! * A development PKI ([`DevCa`]): a CA and relay/origin/client leaf certificates
//!   generated with rcgen, written as PEM, for local networks, tests and the demo.
//! * Loading real PEM chains, keys and CA bundles ([`Identity`], [`roots_from_pem`]).
//! * quinn server and client configs over rustls with the ring provider, ALPN
//!   `skylane/1`, TLS 1.3, and mutual TLS for relay↔origin links
//!   ([`server_config`], [`client_config`]).
//!
//! Development keys are Ed25519: fast, and with fixed-size signatures, so handshakes
//! have the same packet sizes on every run (the simulator's traces rely on it).
//!
//! **Contract.** Only the ring crypto provider is used, passed explicitly, so no
//! process-wide default provider is needed. The crate reads files only when asked to
//! load them ([`Identity::load`], [`load_roots`]) and writes only in
//! [`DevCa::write_dev_pki`]. It never disables certificate verification.

// Library code reports errors; tests may unwrap.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

pub use rustls;

/// Why a certificate, key or TLS configuration could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// PEM text held no certificate.
    #[error("{0}: no certificate found in PEM")]
    NoCertificate(String),
    /// PEM text held no private key.
    #[error("{0}: no private key found in PEM")]
    NoPrivateKey(String),
    /// PEM text could not be parsed.
    #[error("{what}: invalid PEM: {source}")]
    Pem {
        /// What was being parsed.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// rustls rejected the configuration (for example a key that does not match the
    /// certificate).
    #[error("TLS configuration rejected: {0}")]
    Tls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built (for example, no roots).
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    /// The rustls configuration cannot carry QUIC.
    #[error("TLS configuration unusable for QUIC: {0}")]
    Quic(String),
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafKind {
    /// A relay: serves clients and is a (mutual TLS) client of origins and peer relays.
    Relay,
    /// An origin: serves relays over mutual TLS.
    Origin,
    /// A TLS client only (tools, tests).
    Client,
}

impl LeafKind {
    /// File stem used by [`DevCa::write_dev_pki`].
    pub const fn file_stem(self) -> &'static str {
        match self {
            Self::Relay => "relay",
            Self::Origin => "origin",
            Self::Client => "client",
        }
    }
}

/// Names every development leaf certificate is valid for, besides given names.
pub const DEFAULT_SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// A certificate and its private key as PEM text.
#[derive(Clone)]
pub struct PemPair {
    /// Certificate chain, leaf first.
    pub cert_pem: String,
    /// PKCS#8 private key. Keep secret.
    pub key_pem: String,
}

impl std::fmt::Debug for PemPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemPair")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// A development certificate authority.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    pem: PemPair,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

impl DevCa {
    /// Generates a new CA named `common_name`.
    pub fn generate(common_name: &str) -> Result<Self, CertError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "Skylane development");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.serial_number = Some(fixed_length_serial());
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        let pem = PemPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(Self {
            issuer: Issuer::new(params, key),
            pem,
        })
    }

    /// Loads an existing CA from its certificate and key PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self {
            issuer,
            pem: PemPair {
                cert_pem: cert_pem.to_owned(),
                key_pem: key_pem.to_owned(),
            },
        })
    }

    /// The CA certificate and key.
    pub fn pem(&self) -> &PemPair {
        &self.pem
    }

    /// Issues a leaf certificate for `kind`, valid for [`DEFAULT_SANS`] and `names`.
    ///
    /// The returned chain holds the leaf then the CA certificate.
    pub fn issue(&self, kind: LeafKind, names: &[String]) -> Result<PemPair, CertError> {
        let mut sans: Vec<String> = DEFAULT_SANS.iter().map(|s| (*s).to_owned()).collect();
        for n in names {
            if !sans.contains(n) {
                sans.push(n.clone());
            }
        }
        self.issue_exact(kind, &sans)
    }

    /// Issues a leaf certificate for `kind` valid for `names` only (no
    /// [`DEFAULT_SANS`]): what a production host's certificate looks like.
    pub fn issue_exact(&self, kind: LeafKind, names: &[String]) -> Result<PemPair, CertError> {
        let sans = names.to_vec();
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let mut params = CertificateParams::new(sans)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("skylane {}", kind.file_stem()));
        params.distinguished_name = dn;
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(fixed_length_serial());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match kind {
            LeafKind::Relay | LeafKind::Origin => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            LeafKind::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(PemPair {
            cert_pem: format!("{}{}", cert.pem(), self.pem.cert_pem),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes a complete development PKI into `dir`: `ca.pem`, `ca.key`, and for the
    /// relay and the origin `<stem>.pem` (chain) and `<stem>.key`.
    ///
    /// An existing `ca.pem`/`ca.key` pair in `dir` is reused, so leaves issued on
    /// different runs share one CA. Returns the paths written.
    pub fn write_dev_pki(dir: &Path, names: &[String]) -> Result<Vec<PathBuf>, CertError> {
        fs::create_dir_all(dir).map_err(|source| CertError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let ca_cert = dir.join("ca.pem");
        let ca_key = dir.join("ca.key");
        let ca = if ca_cert.exists() && ca_key.exists() {
            Self::from_pem(&read(&ca_cert)?, &read(&ca_key)?)?
        } else {
            let ca = Self::generate("Skylane development CA")?;
            write(&ca_cert, &ca.pem.cert_pem, false)?;
            write(&ca_key, &ca.pem.key_pem, true)?;
            ca
        };
        let mut written = vec![ca_cert, ca_key];
        for kind in [LeafKind::Relay, LeafKind::Origin] {
            let pair = ca.issue(kind, names)?;
            let cert = dir.join(format!("{}.pem", kind.file_stem()));
            let key = dir.join(format!("{}.key", kind.file_stem()));
            write(&cert, &pair.cert_pem, false)?;
            write(&key, &pair.key_pem, true)?;
            written.push(cert);
            written.push(key);
        }
        Ok(written)
    }
}

/// Certificate, key and CA files for a binary: in development mode (`dev_dir`) the
/// development PKI is written there (reusing its CA) and `<stem>.pem`/`<stem>.key`
/// with `ca.pem` are used; otherwise the three configured paths, each required.
pub fn tls_files(
    dev_dir: Option<&Path>,
    stem: &str,
    cert: Option<&Path>,
    key: Option<&Path>,
    ca: Option<&Path>,
) -> Result<(PathBuf, PathBuf, PathBuf), CertError> {
    if let Some(dir) = dev_dir {
        DevCa::write_dev_pki(dir, &[])?;
        return Ok((
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
            dir.join("ca.pem"),
        ));
    }
    let need = |p: Option<&Path>, what: &str| {
        p.map(Path::to_path_buf)
            .ok_or_else(|| CertError::Verifier(format!("{what} is required")))
    };
    Ok((need(cert, "cert")?, need(key, "key")?, need(ca, "ca")?))
}

/// A random 16-byte serial whose DER encoding always has the same length (first byte
/// in 0x01..=0x7f: no sign padding, no leading zero), so certificates, and therefore
/// handshakes, have the same size on every run.
fn fixed_length_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand_bytes();
    bytes[0] = (bytes[0] & 0x7f).max(1);
    SerialNumber::from_slice(&bytes)
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // Serial numbers need uniqueness, not secrecy; ring's system RNG provides both.
    let rng = ring::rand::SystemRandom::new();
    if ring::rand::SecureRandom::fill(&rng, &mut out).is_err() {
        // The OS RNG failing is fatal elsewhere too; fall back to the clock so
        // certificate generation still yields distinct serials.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_le_bytes();
        for (o, b) in out.iter_mut().zip(t.iter().cycle()) {
            *o = *b;
        }
    }
    out
}

fn read(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, contents: &str, secret: bool) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    fs::write(path, contents).map_err(io)?;
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    #[cfg(not(unix))]
    let _ = secret;
    Ok(())
}

/// A certificate chain and its private key, ready for rustls.
#[derive(Debug)]
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// Parses a PEM chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let chain = certs_from_pem("certificate chain", chain_pem)?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|source| CertError::Pem {
                what: "private key".into(),
                source,
            })?
            .ok_or_else(|| CertError::NoPrivateKey("private key".into()))?;
        Ok(Self { chain, key })
    }

    /// Loads a PEM chain file and a PEM key file.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, CertError> {
        let chain = certs_from_pem(&cert_path.display().to_string(), &read(cert_path)?)?;
        let key = rustls_pemfile::private_key(&mut read(key_path)?.as_bytes())
            .map_err(|source| CertError::Pem {
                what: key_path.display().to_string(),
                source,
            })?
            .ok_or_else(|| CertError::NoPrivateKey(key_path.display().to_string()))?;
        Ok(Self { chain, key })
    }

    /// From a [`PemPair`].
    pub fn from_pair(pair: &PemPair) -> Result<Self, CertError> {
        Self::from_pem(&pair.cert_pem, &pair.key_pem)
    }

    /// The certificate chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }
}

fn certs_from_pem(what: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CertError::Pem {
            what: what.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate(what.to_owned()));
    }
    Ok(certs)
}

/// A root store holding every certificate in `pem` (a CA bundle).
pub fn roots_from_pem(pem: &str) -> Result<RootCertStore, CertError> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem("CA bundle", pem)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// Loads a CA bundle file into a root store.
pub fn load_roots(path: &Path) -> Result<RootCertStore, CertError> {
    roots_from_pem(&read(path)?).map_err(|e| match e {
        CertError::NoCertificate(_) => CertError::NoCertificate(path.display().to_string()),
        other => other,
    })
}

/// Whether a server asks its peers for certificates.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// No client certificate (game clients authenticate with tokens).
    None,
    /// Mutual TLS: the peer must present a certificate issued by one of these roots.
    Required(RootCertStore),
    /// A relay's endpoint: game clients present no certificate, peer relays present
    /// one issued by these roots (checked when presented; the relay requires it on
    /// peer connections).
    Optional(RootCertStore),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls server configuration (TLS 1.3, ALPN `skylane/1`).
pub fn rustls_server_config(
    identity: &Identity,
    client_auth: ClientAuth,
) -> Result<rustls::ServerConfig, CertError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Required(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| CertError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        ClientAuth::Optional(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| CertError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![skylane_proto::ALPN.to_vec()];
    Ok(config)
}

/// The rustls client configuration (TLS 1.3, ALPN `skylane/1`), trusting `roots`,
/// presenting `identity` for mutual TLS when given.
pub fn rustls_client_config(
    roots: RootCertStore,
    identity: Option<&Identity>,
) -> Result<rustls::ClientConfig, CertError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key())?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![skylane_proto::ALPN.to_vec()];
    Ok(config)
}

/// A quinn server configuration with default transport settings; callers tune
/// transport (timeouts, stream limits) with `ServerConfig::transport_config`.
pub fn server_config(
    identity: &Identity,
    client_auth: ClientAuth,
) -> Result<quinn::ServerConfig, CertError> {
    let tls = rustls_server_config(identity, client_auth)?;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| CertError::Quic(e.to_string()))?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(quic)))
}

/// A relay's server configuration: ALPN `skylane/1` for game clients and
/// `skylane-peer/1` for peer relays, client certificates optional (see
/// [`ClientAuth::Optional`]).
pub fn relay_server_config(
    identity: &Identity,
    peer_roots: RootCertStore,
) -> Result<quinn::ServerConfig, CertError> {
    let mut tls = rustls_server_config(identity, ClientAuth::Optional(peer_roots))?;
    tls.alpn_protocols = vec![
        skylane_proto::ALPN.to_vec(),
        skylane_proto::PEER_ALPN.to_vec(),
    ];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| CertError::Quic(e.to_string()))?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(quic)))
}

/// An origin's server configuration: ALPN `skylane/1` for relay links,
/// `skylane-repl/2` for standby origins and `skylane-zone/1` for the owners
/// of other zones, client certificates required (all chain to `roots`).
pub fn origin_server_config(
    identity: &Identity,
    roots: RootCertStore,
) -> Result<quinn::ServerConfig, CertError> {
    let mut tls = rustls_server_config(identity, ClientAuth::Required(roots))?;
    tls.alpn_protocols = vec![
        skylane_proto::ALPN.to_vec(),
        skylane_proto::REPL_ALPN.to_vec(),
        skylane_proto::zones::ZONE_ALPN.to_vec(),
    ];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| CertError::Quic(e.to_string()))?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(quic)))
}

/// The client configuration a standby origin uses towards a world's primary:
/// ALPN `skylane-repl/2`, presenting the origin's identity.
pub fn repl_client_config(
    roots: RootCertStore,
    identity: &Identity,
) -> Result<quinn::ClientConfig, CertError> {
    let mut tls = rustls_client_config(roots, Some(identity))?;
    tls.alpn_protocols = vec![skylane_proto::REPL_ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| CertError::Quic(e.to_string()))?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

/// The client configuration an origin uses towards the owners of a zoned
/// world's other zones: ALPN `skylane-zone/1`, presenting the origin's
/// identity.
pub fn zone_client_config(
    roots: RootCertStore,
    identity: &Identity,
) -> Result<quinn::ClientConfig, CertError> {
    let mut tls = rustls_client_config(roots, Some(identity))?;
    tls.alpn_protocols = vec![skylane_proto::zones::ZONE_ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| CertError::Quic(e.to_string()))?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

/// The client configuration a relay uses towards peer relays: ALPN
/// `skylane-peer/1`, presenting the relay's identity.
pub fn peer_client_config(
    roots: RootCertStore,
    identity: &Identity,
) -> Result<quinn::ClientConfig, CertError> {
    let mut tls = rustls_client_config(roots, Some(identity))?;
    tls.alpn_protocols = vec![skylane_proto::PEER_ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| CertError::Quic(e.to_string()))?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

/// A quinn client configuration trusting `roots`, with an optional client identity.
pub fn client_config(
    roots: RootCertStore,
    identity: Option<&Identity>,
) -> Result<quinn::ClientConfig, CertError> {
    let tls = rustls_client_config(roots, identity)?;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| CertError::Quic(e.to_string()))?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

/// Everything a local network (demo, tests) needs, generated in memory: one CA and
/// one relay and one origin identity.
#[derive(Debug, Clone)]
pub struct LocalPki {
    /// CA certificate PEM (what clients trust).
    pub ca_pem: String,
    /// The relay's identity.
    pub relay: Identity,
    /// The origin's identity.
    pub origin: Identity,
}

impl LocalPki {
    /// Generates a CA and relay and origin leaves valid for [`DEFAULT_SANS`] and `names`.
    pub fn generate(names: &[String]) -> Result<Self, CertError> {
        let ca = DevCa::generate("Skylane local CA")?;
        Ok(Self {
            ca_pem: ca.pem().cert_pem.clone(),
            relay: Identity::from_pair(&ca.issue(LeafKind::Relay, names)?)?,
            origin: Identity::from_pair(&ca.issue(LeafKind::Origin, names)?)?,
        })
    }

    /// A root store trusting the CA.
    pub fn roots(&self) -> Result<RootCertStore, CertError> {
        roots_from_pem(&self.ca_pem)
    }
}
