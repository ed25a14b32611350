//! A content source directory: what `skylane content publish` writes and a
//! relay (or `skylane content serve`) reads.
//!
//! ```text
//! SRC/manifest.signed            {"signature": "<hex>", "manifest": "<the signed JSON>"}
//! SRC/packs/<name>/<version>     the pack's bytes
//! ```
//!
//! Every file is written beside its place and renamed into it, so a reader
//! sees the old manifest or the new one, never half of either; pack files
//! are in place before the manifest that names them.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::manifest::{check_name, sha256_hex, Manifest, ManifestError, PackEntry, SignedManifest};

/// The manifest's file name in a source directory.
pub const MANIFEST_FILE: &str = "manifest.signed";

/// The control-plane record holding the signed manifest in its file form
/// (what `skylane content announce` writes through an origin's admin
/// endpoint; relays in a cluster take it from their view as soon as it
/// changes). At most the control plane's record size (16 KiB: some hundred
/// packs); a larger manifest stays in the source directory only.
pub const MANIFEST_RECORD: &str = "content/manifest";

/// Why a source directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The manifest is refused.
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    /// Nothing to publish.
    #[error("{0} holds no files to publish")]
    Empty(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A signed manifest as a file holds it.
#[derive(Debug, Serialize, Deserialize)]
struct ManifestFile {
    signature: String,
    manifest: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl SignedManifest {
    /// The file form (`manifest.signed`).
    pub fn to_file(&self) -> Vec<u8> {
        let f = ManifestFile {
            signature: hex(&self.signature),
            manifest: String::from_utf8_lossy(&self.body).into_owned(),
        };
        serde_json::to_vec_pretty(&f).unwrap_or_default()
    }

    /// From the file form (the signature is not checked here).
    pub fn from_file(bytes: &[u8]) -> Result<Self, ManifestError> {
        let f: ManifestFile =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        Ok(Self {
            body: f.manifest.into_bytes(),
            signature: unhex(&f.signature).ok_or(ManifestError::BadSignature)?,
        })
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// A pack file's identity: length, modification time and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    /// Its length, bytes.
    pub len: u64,
    /// When it was last written (if the file system says).
    pub modified: Option<std::time::SystemTime>,
    /// Its inode (0 where there is none): a file renamed over it is another.
    pub ino: u64,
}

/// A source directory.
#[derive(Debug, Clone)]
pub struct SourceDir {
    root: PathBuf,
}

impl SourceDir {
    /// The directory at `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    /// Its manifest, as published (verify it before believing it).
    pub fn manifest(&self) -> Result<SignedManifest, StoreError> {
        let p = self.root.join(MANIFEST_FILE);
        let bytes = std::fs::read(&p).map_err(io(&p))?;
        Ok(SignedManifest::from_file(&bytes)?)
    }

    /// Where a pack's bytes are.
    pub fn pack_path(&self, name: &str, version: &str) -> Result<PathBuf, StoreError> {
        check_name("pack name", name)?;
        check_name("version", version)?;
        Ok(self.root.join("packs").join(name).join(version))
    }

    /// A pack's bytes.
    pub fn read_pack(&self, name: &str, version: &str) -> Result<Vec<u8>, StoreError> {
        let p = self.pack_path(name, version)?;
        std::fs::read(&p).map_err(io(&p))
    }

    /// What a pack file is now, without reading it: a reader that checked
    /// the whole file's hash may trust ranges of it while the stamp stays
    /// the same (a rewrite, a rename over it or a truncation changes it).
    pub fn pack_stamp(&self, name: &str, version: &str) -> Result<FileStamp, StoreError> {
        let p = self.pack_path(name, version)?;
        let m = std::fs::metadata(&p).map_err(io(&p))?;
        #[cfg(unix)]
        let ino = std::os::unix::fs::MetadataExt::ino(&m);
        #[cfg(not(unix))]
        let ino = 0;
        Ok(FileStamp {
            len: m.len(),
            modified: m.modified().ok(),
            ino,
        })
    }

    /// `len` bytes of a pack from `offset` (fewer at its end).
    pub fn read_pack_range(
        &self,
        name: &str,
        version: &str,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, StoreError> {
        use std::io::{Read as _, Seek as _, SeekFrom};
        let p = self.pack_path(name, version)?;
        let mut f = std::fs::File::open(&p).map_err(io(&p))?;
        f.seek(SeekFrom::Start(offset)).map_err(io(&p))?;
        let mut out = Vec::with_capacity(len);
        f.take(len as u64).read_to_end(&mut out).map_err(io(&p))?;
        Ok(out)
    }

    /// Publishes every file of `dir` as a pack named by its file name at
    /// `version`, signs the new manifest (its serial one more than the
    /// current one's, which must verify with the same key) and puts it in
    /// place. Returns the new manifest.
    pub fn publish(
        &self,
        dir: &Path,
        version: &str,
        key: &SigningKey,
        now_ms: u64,
    ) -> Result<Manifest, StoreError> {
        check_name("version", version)?;
        let mut manifest = match self.manifest() {
            Ok(s) => s.verify(&key.verifying_key(), 0)?,
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Manifest::default()
            }
            Err(e) => return Err(e),
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(StoreError::Empty(dir.to_owned()));
        }
        for f in files {
            let name = f
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            check_name("pack name", &name)?;
            let bytes = std::fs::read(&f).map_err(io(&f))?;
            let dest = self.pack_path(&name, version)?;
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            write_atomic(&dest, &bytes)?;
            manifest.packs.insert(
                name,
                PackEntry {
                    version: version.to_owned(),
                    size: bytes.len() as u64,
                    sha256: sha256_hex(&bytes),
                },
            );
        }
        manifest.serial += 1;
        manifest.issued_ms = now_ms;
        let signed = manifest.sign(key)?;
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        write_atomic(&self.root.join(MANIFEST_FILE), &signed.to_file())?;
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_twice_grows_the_serial_and_keeps_other_packs() {
        let src = tempfile::tempdir().unwrap();
        let pack = tempfile::tempdir().unwrap();
        std::fs::write(pack.path().join("level1.bin"), b"first").unwrap();
        std::fs::write(pack.path().join("skins.bin"), b"skins").unwrap();
        let key = SigningKey::from_bytes(&[7; 32]);
        let s = SourceDir::new(src.path());
        let m = s.publish(pack.path(), "1.0", &key, 5).unwrap();
        assert_eq!(m.serial, 1);
        assert_eq!(m.packs.len(), 2);
        let pack2 = tempfile::tempdir().unwrap();
        std::fs::write(pack2.path().join("level1.bin"), b"second").unwrap();
        let m = s.publish(pack2.path(), "1.1", &key, 6).unwrap();
        assert_eq!(m.serial, 2);
        assert_eq!(m.packs["level1.bin"].version, "1.1");
        assert_eq!(m.packs["skins.bin"].version, "1.0");
        let read = s
            .manifest()
            .unwrap()
            .verify(&key.verifying_key(), 2)
            .unwrap();
        assert_eq!(read, m);
        assert_eq!(s.read_pack("level1.bin", "1.1").unwrap(), b"second");
        assert_eq!(
            s.read_pack_range("level1.bin", "1.1", 2, 3).unwrap(),
            b"con"
        );
        assert_eq!(
            s.read_pack_range("level1.bin", "1.1", 4, 100).unwrap(),
            b"nd",
            "short at the end"
        );
        let stamp = s.pack_stamp("level1.bin", "1.1").unwrap();
        assert_eq!(stamp.len, 6);
        assert_eq!(s.pack_stamp("level1.bin", "1.1").unwrap(), stamp);
        // Replaced (renamed over, as publishing does): another stamp.
        let p = s.pack_path("level1.bin", "1.1").unwrap();
        std::fs::write(p.with_extension("new"), b"SECOND").unwrap();
        std::fs::rename(p.with_extension("new"), &p).unwrap();
        assert_ne!(s.pack_stamp("level1.bin", "1.1").unwrap(), stamp);
        assert_eq!(
            s.read_pack("level1.bin", "1.0").unwrap(),
            b"first",
            "old versions stay"
        );
        // Another operator's key cannot publish over it.
        let other = SigningKey::from_bytes(&[8; 32]);
        assert!(matches!(
            s.publish(pack2.path(), "1.2", &other, 7),
            Err(StoreError::Manifest(ManifestError::BadSignature))
        ));
        // Names that would leave the directory are refused.
        assert!(s.read_pack("..", "1").is_err());
        assert!(s.read_pack("a", "../../x").is_err());
    }

    #[test]
    fn a_tampered_file_is_refused() {
        let src = tempfile::tempdir().unwrap();
        let pack = tempfile::tempdir().unwrap();
        std::fs::write(pack.path().join("map"), b"x").unwrap();
        let key = SigningKey::from_bytes(&[7; 32]);
        let s = SourceDir::new(src.path());
        s.publish(pack.path(), "1", &key, 0).unwrap();
        let p = src.path().join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replace("\\\"size\\\": 1", "\\\"size\\\": 2")).unwrap();
        assert_eq!(
            s.manifest().unwrap().verify(&key.verifying_key(), 0),
            Err(ManifestError::BadSignature)
        );
        std::fs::write(&p, b"{not json").unwrap();
        assert!(matches!(
            s.manifest(),
            Err(StoreError::Manifest(ManifestError::Malformed(_)))
        ));
        assert!(matches!(
            s.publish(tempfile::tempdir().unwrap().path(), "2", &key, 0),
            Err(StoreError::Manifest(_)) | Err(StoreError::Empty(_))
        ));
    }
}
