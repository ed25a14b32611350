//! The content manifest: which version of each pack is current, with its
//! size and SHA-256, signed with an operator's Ed25519 key.
//!
//! The signature covers the manifest's exact bytes (JSON, as published);
//! a reader verifies the bytes first and parses them only then, so a
//! tampered manifest is refused before anything in it is believed. The
//! `serial` only grows: a relay or client that knows serial `n` refuses an
//! older manifest (a replayed one would roll packs back).

use std::collections::BTreeMap;

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest manifest accepted, bytes.
pub const MAX_MANIFEST: usize = 1 << 20;
/// Most packs in one manifest.
pub const MAX_PACKS: usize = 4_096;
/// Longest pack name or version, bytes.
pub const MAX_NAME: usize = 128;

/// Why a manifest or a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The signature does not verify with the operator's key (tampered, or
    /// signed by another key).
    #[error("the manifest's signature does not verify")]
    BadSignature,
    /// Not a manifest (bad JSON, too large, a field out of bounds).
    #[error("malformed manifest: {0}")]
    Malformed(String),
    /// Older than one already trusted.
    #[error("manifest serial {got} is older than {known}")]
    Rollback {
        /// Its serial.
        got: u64,
        /// The newest known.
        known: u64,
    },
    /// A key could not be read.
    #[error("key: {0}")]
    Key(String),
}

/// A pack's current version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEntry {
    /// Its version (any string; `1.2.0`, `2026-12-07`).
    pub version: String,
    /// Size, bytes.
    pub size: u64,
    /// SHA-256 of its bytes, lowercase hex.
    pub sha256: String,
}

/// The manifest's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Grows with every publication.
    pub serial: u64,
    /// When published, ms since the Unix epoch.
    pub issued_ms: u64,
    /// Pack name → its current version.
    pub packs: BTreeMap<String, PackEntry>,
}

/// A manifest as published: its bytes and their signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    /// The manifest's JSON bytes (what the signature covers).
    pub body: Vec<u8>,
    /// Ed25519 signature of `body`.
    pub signature: Vec<u8>,
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s != "."
        && s != ".."
}

/// A pack name or version usable as a file name and on the wire: 1 to 128
/// of `A-Z a-z 0-9 - _ .`, not `.` or `..`.
pub fn check_name(what: &str, s: &str) -> Result<(), ManifestError> {
    if valid_name(s) {
        Ok(())
    } else {
        Err(ManifestError::Malformed(format!(
            "{what} {s:?}: 1 to {MAX_NAME} of A-Z a-z 0-9 - _ ."
        )))
    }
}

impl Manifest {
    /// Checks every bound.
    pub fn check(&self) -> Result<(), ManifestError> {
        if self.packs.len() > MAX_PACKS {
            return Err(ManifestError::Malformed(format!(
                "{} packs, at most {MAX_PACKS}",
                self.packs.len()
            )));
        }
        for (name, p) in &self.packs {
            check_name("pack name", name)?;
            check_name("version", &p.version)?;
            if p.sha256.len() != 64 || !p.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ManifestError::Malformed(format!(
                    "{name}: sha256 is not 64 hex digits"
                )));
            }
        }
        Ok(())
    }

    /// Signs it with `key`.
    pub fn sign(&self, key: &SigningKey) -> Result<SignedManifest, ManifestError> {
        self.check()?;
        let body =
            serde_json::to_vec_pretty(self).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        if body.len() > MAX_MANIFEST {
            return Err(ManifestError::Malformed(format!(
                "{} bytes, at most {MAX_MANIFEST}",
                body.len()
            )));
        }
        let signature = key.sign(&body).to_bytes().to_vec();
        Ok(SignedManifest { body, signature })
    }

    /// The current entry of `name` at `version`, if that is current.
    pub fn current(&self, name: &str, version: &str) -> Option<&PackEntry> {
        self.packs.get(name).filter(|p| p.version == version)
    }
}

impl SignedManifest {
    /// Parses and checks the body **without** checking the signature: for
    /// a party that only stores and forwards the manifest (an origin's admin
    /// endpoint putting it on the control plane holds no operator key). What
    /// it returns must not be trusted; [`SignedManifest::verify`] is for that.
    pub fn unverified(&self) -> Result<Manifest, ManifestError> {
        if self.body.len() > MAX_MANIFEST {
            return Err(ManifestError::Malformed("too large".into()));
        }
        let m: Manifest = serde_json::from_slice(&self.body)
            .map_err(|e| ManifestError::Malformed(e.to_string()))?;
        m.check()?;
        Ok(m)
    }

    /// Verifies the signature with `key`, then parses and checks the body;
    /// refuses a serial below `known` (0: none known yet).
    pub fn verify(&self, key: &VerifyingKey, known: u64) -> Result<Manifest, ManifestError> {
        if self.body.len() > MAX_MANIFEST {
            return Err(ManifestError::Malformed("too large".into()));
        }
        let sig =
            Signature::from_slice(&self.signature).map_err(|_| ManifestError::BadSignature)?;
        key.verify(&self.body, &sig)
            .map_err(|_| ManifestError::BadSignature)?;
        let m = self.unverified()?;
        if m.serial < known {
            return Err(ManifestError::Rollback {
                got: m.serial,
                known,
            });
        }
        Ok(m)
    }
}

/// An operator's signing key from PKCS#8 PEM (`skylane token keygen`
/// writes one).
pub fn signing_key_from_pem(pem: &str) -> Result<SigningKey, ManifestError> {
    SigningKey::from_pkcs8_pem(pem).map_err(|e| ManifestError::Key(e.to_string()))
}

/// The operator's public key from SubjectPublicKeyInfo PEM.
pub fn verifying_key_from_pem(pem: &str) -> Result<VerifyingKey, ManifestError> {
    VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| ManifestError::Key(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn manifest(serial: u64) -> Manifest {
        let mut packs = BTreeMap::new();
        packs.insert(
            "level1".to_owned(),
            PackEntry {
                version: "1.0".into(),
                size: 3,
                sha256: sha256_hex(b"abc"),
            },
        );
        Manifest {
            serial,
            issued_ms: 1,
            packs,
        }
    }

    #[test]
    fn a_signed_manifest_verifies_and_a_tampered_one_is_refused() {
        let k = key(1);
        let s = manifest(3).sign(&k).unwrap();
        let m = s.verify(&k.verifying_key(), 0).unwrap();
        assert_eq!(m, manifest(3));
        assert_eq!(m.current("level1", "1.0").unwrap().size, 3);
        assert!(m.current("level1", "0.9").is_none());
        // One byte of the body changed.
        let mut t = s.clone();
        let i = t.body.iter().position(|b| *b == b'3').unwrap();
        t.body[i] = b'4';
        assert_eq!(
            t.verify(&k.verifying_key(), 0),
            Err(ManifestError::BadSignature)
        );
        // Another key's signature.
        assert_eq!(
            manifest(3)
                .sign(&key(2))
                .unwrap()
                .verify(&k.verifying_key(), 0),
            Err(ManifestError::BadSignature)
        );
        // A cut signature.
        let mut t = s.clone();
        t.signature.truncate(10);
        assert_eq!(
            t.verify(&k.verifying_key(), 0),
            Err(ManifestError::BadSignature)
        );
        // An older serial than one trusted.
        assert_eq!(
            s.verify(&k.verifying_key(), 4),
            Err(ManifestError::Rollback { got: 3, known: 4 })
        );
    }

    #[test]
    fn unverified_parses_any_signer_and_still_refuses_a_bad_body() {
        let s = manifest(5).sign(&key(9)).unwrap();
        assert_eq!(s.unverified().unwrap(), manifest(5), "whoever signed");
        let mut bad = s.clone();
        bad.body = b"{\"serial\":1}".to_vec();
        assert!(matches!(bad.unverified(), Err(ManifestError::Malformed(_))));
        let mut escape = manifest(5);
        let e = escape.packs.remove("level1").unwrap();
        escape.packs.insert("../etc".into(), e);
        let mut body = s.clone();
        body.body = serde_json::to_vec(&escape).unwrap();
        assert!(body.unverified().is_err(), "names are still checked");
    }

    #[test]
    fn names_and_hashes_are_bounded() {
        let k = key(1);
        let mut m = manifest(1);
        m.packs.insert(
            "../etc".into(),
            PackEntry {
                version: "1".into(),
                size: 0,
                sha256: sha256_hex(b""),
            },
        );
        assert!(matches!(m.sign(&k), Err(ManifestError::Malformed(_))));
        let mut m = manifest(1);
        m.packs.get_mut("level1").unwrap().sha256 = "zz".into();
        assert!(matches!(m.sign(&k), Err(ManifestError::Malformed(_))));
        assert!(check_name("v", "1.2.0-rc_1").is_ok());
        assert!(check_name("v", "..").is_err());
        assert!(check_name("v", "a/b").is_err());
        assert!(check_name("v", "").is_err());
    }

    #[test]
    fn sha256_is_the_standard_one() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
