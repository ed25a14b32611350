//! [`Client::fetch_content`]: a content pack through the relay the client is
//! already connected to, window by window (bulk class: it never delays the
//! game), checked against the operator-signed manifest, resumable.

use bytes::{Bytes, BytesMut};
use skylane_content::{sha256_hex, ManifestError, SignedManifest};
use skylane_proto::{ClientMsg, ContentCode, ContentGet, ServerMsg, MAX_CONTENT_WINDOW};
use tokio::sync::mpsc;

use crate::client::{Client, Cmd};

/// How many cuts (connection lost, relay changed) a download survives,
/// resuming each time from the bytes it has.
const MAX_CUTS: u32 = 20;

/// How long a window may take before it is asked again.
const WINDOW_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Why a download failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentFetchError {
    /// No content key was given to the builder ([`crate::ClientBuilder::content_key`]).
    #[error("no content key: set ClientBuilder::content_key")]
    NoKey,
    /// The manifest did not verify (tampered, another key, rolled back).
    #[error("content manifest: {0}")]
    Manifest(#[from] ManifestError),
    /// The manifest holds no such pack.
    #[error("unknown pack {0:?}")]
    UnknownPack(String),
    /// The pack is at another version.
    #[error("{name} is at version {current}, not {asked}")]
    UnknownVersion {
        /// The pack.
        name: String,
        /// Asked for.
        asked: String,
        /// Current.
        current: String,
    },
    /// The relay refused.
    #[error("refused ({code:?}): {message}")]
    Refused {
        /// Why.
        code: ContentCode,
        /// In words.
        message: String,
    },
    /// The bytes received do not match the manifest's SHA-256 or size.
    #[error("the pack's bytes do not match the manifest")]
    HashMismatch,
    /// The relay answered out of order or out of range.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The download was cut more than it may be.
    #[error("cut {0} times")]
    TooManyCuts(u32),
    /// The client is closed.
    #[error("client closed")]
    Closed,
}

/// A download's state: what it has, and what it still wants.
struct Download<'a> {
    client: &'a Client,
    name: &'a str,
    version: &'a str,
    cuts: u32,
}

impl Download<'_> {
    /// Sends `msg`; its answers come on the returned channel until the
    /// connection changes.
    async fn ask(&self, msg: ClientMsg) -> Result<mpsc::Receiver<ServerMsg>, ContentFetchError> {
        let (tx, rx) = mpsc::channel(64);
        self.client
            .cmd
            .send(Cmd::Content { msg, reply: tx })
            .await
            .map_err(|_| ContentFetchError::Closed)?;
        Ok(rx)
    }

    fn cut(&mut self) -> Result<(), ContentFetchError> {
        self.cuts += 1;
        if self.cuts > MAX_CUTS {
            Err(ContentFetchError::TooManyCuts(self.cuts))
        } else {
            Ok(())
        }
    }

    async fn manifest(&mut self) -> Result<skylane_content::Manifest, ContentFetchError> {
        let key = self.client.content_key.ok_or(ContentFetchError::NoKey)?;
        loop {
            let mut rx = self.ask(ClientMsg::ContentManifest).await?;
            match tokio::time::timeout(WINDOW_TIMEOUT, rx.recv()).await {
                Ok(Some(ServerMsg::ContentManifest { body, signature })) => {
                    let s = SignedManifest {
                        body: body.to_vec(),
                        signature: signature.to_vec(),
                    };
                    return Ok(s.verify(&key, 0)?);
                }
                Ok(Some(ServerMsg::ContentRefused(r))) => {
                    return Err(ContentFetchError::Refused {
                        code: r.code,
                        message: r.message,
                    })
                }
                _ => self.cut()?,
            }
        }
    }

    /// One window from `have.len()`: `Ok(false)` if it was cut (ask again).
    async fn window(&mut self, have: &mut BytesMut, size: u64) -> Result<bool, ContentFetchError> {
        let start = have.len() as u64;
        let end = (start + u64::from(MAX_CONTENT_WINDOW)).min(size);
        let mut rx = self
            .ask(ClientMsg::ContentGet(ContentGet {
                name: self.name.to_owned(),
                version: self.version.to_owned(),
                offset: start,
                len: (end - start) as u32,
            }))
            .await?;
        while (have.len() as u64) < end {
            match tokio::time::timeout(WINDOW_TIMEOUT, rx.recv()).await {
                Ok(Some(ServerMsg::ContentChunk(c))) => {
                    if c.name != self.name || c.version != self.version {
                        continue; // an answer to an earlier download
                    }
                    if c.offset != have.len() as u64 || c.total != size {
                        return Err(ContentFetchError::Protocol(format!(
                            "piece at {} of {}, expected {} of {size}",
                            c.offset,
                            c.total,
                            have.len()
                        )));
                    }
                    have.extend_from_slice(&c.data);
                }
                Ok(Some(ServerMsg::ContentRefused(r))) => {
                    return Err(ContentFetchError::Refused {
                        code: r.code,
                        message: r.message,
                    })
                }
                Ok(Some(_)) => {}
                // The connection changed (or the window stalled): resume.
                Ok(None) | Err(_) => return Ok(false),
            }
        }
        Ok(true)
    }
}

impl Client {
    /// Downloads content pack `name` at `version` through this client's relay
    /// and returns its bytes, verified against the operator-signed manifest
    /// (its signature with [`crate::ClientBuilder::content_key`], then the
    /// pack's size and SHA-256). `progress(received, total)` is called after
    /// every window (256 KiB) and once at the end. A cut connection resumes
    /// where it stopped.
    pub async fn fetch_content(
        &self,
        name: &str,
        version: &str,
        progress: impl FnMut(u64, u64),
    ) -> Result<Bytes, ContentFetchError> {
        self.fetch_content_from(name, version, BytesMut::new(), progress)
            .await
    }

    /// [`Client::fetch_content`] continuing a download that already has
    /// `have` (its first bytes, e.g. kept on disk from an interrupted run).
    pub async fn fetch_content_from(
        &self,
        name: &str,
        version: &str,
        mut have: BytesMut,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<Bytes, ContentFetchError> {
        let _one = self.content_lock.lock().await;
        let mut d = Download {
            client: self,
            name,
            version,
            cuts: 0,
        };
        let manifest = d.manifest().await?;
        let entry = match manifest.packs.get(name) {
            None => return Err(ContentFetchError::UnknownPack(name.to_owned())),
            Some(p) if p.version != version => {
                return Err(ContentFetchError::UnknownVersion {
                    name: name.to_owned(),
                    asked: version.to_owned(),
                    current: p.version.clone(),
                })
            }
            Some(p) => p.clone(),
        };
        if have.len() as u64 > entry.size {
            have.clear();
        }
        while (have.len() as u64) < entry.size {
            if d.window(&mut have, entry.size).await? {
                progress(have.len() as u64, entry.size);
            } else {
                d.cut()?;
            }
        }
        let bytes = have.freeze();
        if sha256_hex(&bytes) != entry.sha256 {
            return Err(ContentFetchError::HashMismatch);
        }
        progress(bytes.len() as u64, entry.size);
        Ok(bytes)
    }
}
