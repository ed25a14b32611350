//! `skylane content publish DIR --version V --source SRC --key FILE`: every
//! file of DIR becomes a pack (named by its file name) at version V in the
//! content source SRC, under a new manifest signed with the operator's key;
//! `skylane content show SRC --pub FILE`: the manifest, verified;
//! `skylane content announce SRC URL`: the source's signed manifest put on
//! the control plane through an origin's admin endpoint, so every relay of
//! the cluster takes it at once (rather than at its next read of the
//! source).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use skylane_content::{signing_key_from_pem, verifying_key_from_pem, SourceDir};

/// `skylane content ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum ContentCmd {
    /// Publishes every file of DIR as a pack at --version into --source.
    Publish(PublishCmd),
    /// Prints a source's manifest after checking its signature.
    Show(ShowCmd),
    /// Puts a source's signed manifest on the control plane (through an
    /// origin's admin endpoint): every relay of the cluster takes it from its
    /// next view.
    Announce(AnnounceCmd),
}

/// Options of `skylane content announce`.
#[derive(Debug, Args)]
pub(crate) struct AnnounceCmd {
    /// The content source directory whose manifest is announced.
    source: PathBuf,
    #[command(flatten)]
    target: super::admin::AdminTarget,
}

/// Options of `skylane content publish` (its `--version` is the packs',
/// not the program's).
#[derive(Debug, Args)]
#[command(disable_version_flag = true)]
pub(crate) struct PublishCmd {
    /// The files to publish (one pack per file, named by the file name).
    dir: PathBuf,
    /// Their version.
    #[arg(long)]
    version: String,
    /// The content source directory (what relays' `content_source` names).
    #[arg(long, env = "SKYLANE_CONTENT_SOURCE")]
    source: PathBuf,
    /// The operator's Ed25519 private key, PKCS#8 PEM (`skylane token keygen`
    /// writes one); relays check the manifest with its public half.
    #[arg(long, env = "SKYLANE_CONTENT_KEY")]
    key: PathBuf,
    /// Print the new manifest as JSON.
    #[arg(long)]
    json: bool,
}

/// Options of `skylane content show`.
#[derive(Debug, Args)]
pub(crate) struct ShowCmd {
    /// The content source directory.
    source: PathBuf,
    /// The operator's public key (PEM).
    #[arg(long = "pub")]
    public: PathBuf,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn print(m: &skylane_content::Manifest) {
    println!("manifest serial {} ({} packs)", m.serial, m.packs.len());
    for (name, p) in &m.packs {
        println!(
            "  {name:<24} {:<12} {:>12} bytes  sha256 {}",
            p.version, p.size, p.sha256
        );
    }
}

impl ContentCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Publish(c) => {
                let pem = std::fs::read_to_string(&c.key)
                    .with_context(|| format!("reading {}", c.key.display()))?;
                let key = signing_key_from_pem(&pem)?;
                let m = SourceDir::new(&c.source).publish(&c.dir, &c.version, &key, now_ms())?;
                if c.json {
                    println!("{}", serde_json::to_string(&m)?);
                } else {
                    print(&m);
                }
                Ok(())
            }
            Self::Announce(c) => {
                let path = c.source.join(skylane_content::MANIFEST_FILE);
                let bytes =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                let body: serde_json::Value = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{} is not a manifest file", path.display()))?;
                let answer = c
                    .target
                    .call_with("POST", "/content/manifest", Some(&body))?;
                println!("{}", answer.trim());
                Ok(())
            }
            Self::Show(c) => {
                let pem = std::fs::read_to_string(&c.public)
                    .with_context(|| format!("reading {}", c.public.display()))?;
                let key = verifying_key_from_pem(&pem)?;
                let m = SourceDir::new(&c.source).manifest()?.verify(&key, 0)?;
                print(&m);
                Ok(())
            }
        }
    }
}
