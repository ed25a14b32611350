//! `skylane token`: Ed25519 key pairs and JWT session tokens.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::Subcommand;
use skylane_proto::{Claims, Role, TokenKeyPair, TokenSigner, TokenVerifier, WorldId};

/// Default audience of tokens issued and checked by the tools and the demo network.
pub(crate) const DEFAULT_AUDIENCE: &str = "skylane";

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCmd {
    /// Generate an Ed25519 key pair for signing tokens.
    ///
    /// Writes token.key (PKCS#8 private key, mode 0600; keep it with the auth service)
    /// and token.pub (public key; give it to relays and origins) into DIR.
    Keygen {
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Overwrite existing key files.
        #[arg(long)]
        force: bool,
    },
    /// Issue a signed token and print it.
    Issue {
        /// Private key file (from `skylane token keygen`).
        #[arg(long, env = "SKYLANE_TOKEN_KEY")]
        key: PathBuf,
        /// Subject: the player id.
        #[arg(long)]
        sub: String,
        /// Role: player, spectator or operator.
        #[arg(long, default_value = "player")]
        role: Role,
        /// World the bearer may join (repeatable; none means any world).
        #[arg(long = "world", value_name = "ID")]
        worlds: Vec<u64>,
        /// Lifetime, e.g. 15m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Audience: the deployment the token is for.
        #[arg(long, env = "SKYLANE_TOKEN_AUDIENCE", default_value = DEFAULT_AUDIENCE)]
        audience: String,
        /// Spectators: the shortest delay the bearer may watch with (a tier:
        /// `0s` for casters, `90s` for the public). Relays raise a shorter
        /// request to it. Default: the relay's `spectator_min_delay_secs`.
        #[arg(long, value_parser = humantime::parse_duration)]
        min_delay: Option<Duration>,
    },
    /// Verify a token with a public key and print its claims as JSON.
    Verify {
        /// Public key file (token.pub).
        #[arg(long = "pub", value_name = "FILE", env = "SKYLANE_TOKEN_PUB")]
        public: PathBuf,
        /// Audience to accept.
        #[arg(long, env = "SKYLANE_TOKEN_AUDIENCE", default_value = DEFAULT_AUDIENCE)]
        audience: String,
        /// The token.
        token: String,
    },
}

fn unix_now() -> anyhow::Result<u64> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("system clock is before 1970")?
        .as_secs())
}

impl TokenCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Keygen { out, force } => {
                let key_path = out.join("token.key");
                let pub_path = out.join("token.pub");
                if !force && (key_path.exists() || pub_path.exists()) {
                    bail!(
                        "{} or {} already exists (use --force to overwrite)",
                        key_path.display(),
                        pub_path.display()
                    );
                }
                fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
                let pair = TokenKeyPair::generate()?;
                fs::write(&key_path, &pair.private_pem)
                    .with_context(|| format!("writing {}", key_path.display()))?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600))?;
                }
                fs::write(&pub_path, &pair.public_pem)
                    .with_context(|| format!("writing {}", pub_path.display()))?;
                println!("wrote {}", key_path.display());
                println!("wrote {}", pub_path.display());
                Ok(())
            }
            Self::Issue {
                key,
                sub,
                role,
                worlds,
                ttl,
                audience,
                min_delay,
            } => {
                if min_delay.is_some() && role != Role::Spectator {
                    anyhow::bail!("--min-delay is for spectator tokens (--role spectator)");
                }
                let pem = fs::read_to_string(&key)
                    .with_context(|| format!("reading {}", key.display()))?;
                let signer = TokenSigner::from_pem(&pem)
                    .with_context(|| format!("loading key {}", key.display()))?;
                let claims = Claims::new(
                    sub,
                    role,
                    worlds.into_iter().map(WorldId).collect(),
                    audience,
                    unix_now()?,
                    ttl.as_secs(),
                );
                // An id, so that this one token can be revoked.
                let id: [u8; 8] = rand::random();
                let claims =
                    claims.with_id(id.iter().map(|b| format!("{b:02x}")).collect::<String>());
                let claims = match min_delay {
                    Some(d) => claims.with_min_delay(
                        u32::try_from(d.as_secs()).context("--min-delay is too long")?,
                    ),
                    None => claims,
                };
                println!("{}", signer.issue(&claims)?);
                Ok(())
            }
            Self::Verify {
                public,
                audience,
                token,
            } => {
                let pem = fs::read_to_string(&public)
                    .with_context(|| format!("reading {}", public.display()))?;
                let verifier = TokenVerifier::from_pem(&pem, audience)
                    .with_context(|| format!("loading key {}", public.display()))?;
                let claims = verifier.verify(token.trim(), unix_now()?)?;
                println!("{}", serde_json::to_string_pretty(&claims)?);
                Ok(())
            }
        }
    }
}
