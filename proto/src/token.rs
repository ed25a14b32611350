//! Session tokens: signed, expiring JWTs (EdDSA / Ed25519).
//!
//! A game's auth service issues a token per player or spectator with
//! [`TokenSigner`]; relays and origins check it offline with [`TokenVerifier`], which
//! holds only the public key. Time is passed in (`now`, seconds since the Unix
//! epoch) so verification is deterministic under test and under simulated time.
//!
//! Each way a token can be wrong has its own [`TokenError`] variant, so a relay can
//! tell a client exactly why it was refused and count each cause separately. The
//! header's `kid` (a fingerprint of the public key) separates a token signed by
//! another key ([`TokenError::UnknownKey`]) from one whose signature does not match
//! its contents ([`TokenError::BadSignature`]).

use std::collections::HashSet;
use std::fmt;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::WorldId;

/// What the bearer of a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Plays: sends actions, receives its own feed.
    Player,
    /// Watches a delayed, filtered feed; cannot act.
    Spectator,
    /// Operates relays and origins (admin endpoints).
    Operator,
}

impl Role {
    /// Lower-case name as in the token.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Player => "player",
            Self::Spectator => "spectator",
            Self::Operator => "operator",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Role {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "player" => Ok(Self::Player),
            "spectator" => Ok(Self::Spectator),
            "operator" => Ok(Self::Operator),
            _ => Err(TokenError::UnknownRole(s.to_owned())),
        }
    }
}

/// The claims inside a Skylane token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: the player (or spectator, or operator) id.
    pub sub: String,
    /// Role.
    pub role: Role,
    /// Worlds the bearer may join; empty means any world.
    pub worlds: Vec<WorldId>,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Not valid before, seconds since the Unix epoch.
    pub nbf: u64,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Audience: the deployment the token is for (for example `skylane`).
    pub aud: String,
    /// Spectators: the shortest delay behind live play the bearer may watch
    /// with, seconds (casters 0, the public 90). Relays raise a request below
    /// it to it. Absent: the relay's configured default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_delay_secs: Option<u32>,
    /// The token's id, if its issuer gave it one (a revocation can name it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

impl Claims {
    /// Claims valid from `now` for `ttl_secs` seconds.
    pub fn new(
        sub: impl Into<String>,
        role: Role,
        worlds: Vec<WorldId>,
        audience: impl Into<String>,
        now: u64,
        ttl_secs: u64,
    ) -> Self {
        Self {
            sub: sub.into(),
            role,
            worlds,
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl_secs),
            aud: audience.into(),
            min_delay_secs: None,
            jti: None,
        }
    }

    /// The same claims with a token id (so that this one token can be revoked).
    #[must_use]
    pub fn with_id(mut self, jti: impl Into<String>) -> Self {
        self.jti = Some(jti.into());
        self
    }

    /// The same claims with a spectator tier: the shortest delay the bearer
    /// may watch with.
    #[must_use]
    pub fn with_min_delay(mut self, secs: u32) -> Self {
        self.min_delay_secs = Some(secs);
        self
    }

    /// Whether the bearer may join `world`.
    pub fn allows_world(&self, world: WorldId) -> bool {
        self.worlds.is_empty() || self.worlds.contains(&world)
    }
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, or its claims are not Skylane claims.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The token uses an algorithm other than EdDSA.
    #[error("token algorithm {0} is not accepted (EdDSA only)")]
    WrongAlgorithm(String),
    /// Signed by a key this verifier does not know.
    #[error("token signed by unknown key {found:?} (expected {expected:?})")]
    UnknownKey {
        /// Key ids this verifier trusts (comma-separated).
        expected: String,
        /// Key id in the token (`None` when absent).
        found: Option<String>,
    },
    /// The signature does not match the contents: the token was altered or forged.
    #[error("token signature is invalid (forged or altered)")]
    BadSignature,
    /// Past its expiry.
    #[error("token expired at {exp} (now {now})")]
    Expired {
        /// Expiry.
        exp: u64,
        /// Time of the check.
        now: u64,
    },
    /// Before its not-before time.
    #[error("token not valid before {nbf} (now {now})")]
    NotYetValid {
        /// Not-before.
        nbf: u64,
        /// Time of the check.
        now: u64,
    },
    /// Issued for another deployment.
    #[error("token audience {found:?} does not match {expected:?}")]
    WrongAudience {
        /// Audience this verifier accepts.
        expected: String,
        /// Audience in the token.
        found: String,
    },
    /// The role may not do what was asked.
    #[error("token role {found} is not allowed here (allowed: {allowed})")]
    WrongRole {
        /// Allowed roles, comma-separated.
        allowed: String,
        /// Role in the token.
        found: Role,
    },
    /// The token does not name the requested world.
    #[error("token does not allow {0}")]
    WorldNotAllowed(WorldId),
    /// A role name that is not player, spectator or operator.
    #[error("unknown role {0:?} (expected player, spectator or operator)")]
    UnknownRole(String),
    /// A key file could not be parsed.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// Signing failed.
    #[error("cannot sign token: {0}")]
    Signing(String),
}

impl TokenError {
    /// A short, stable label for metrics.
    pub const fn label(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::WrongAlgorithm(_) => "wrong_algorithm",
            Self::UnknownKey { .. } => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::WrongAudience { .. } => "wrong_audience",
            Self::WrongRole { .. } => "wrong_role",
            Self::WorldNotAllowed(_) => "world_not_allowed",
            Self::UnknownRole(_) => "unknown_role",
            Self::InvalidKey(_) => "invalid_key",
            Self::Signing(_) => "signing",
        }
    }
}

/// Key id: the first 8 bytes of SHA-256 of the raw public key, hex.
fn key_id(public: &VerifyingKey) -> String {
    let digest = Sha256::digest(public.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// An Ed25519 key pair for signing tokens, as PEM text.
#[derive(Clone)]
pub struct TokenKeyPair {
    /// PKCS#8 private key (`-----BEGIN PRIVATE KEY-----`). Keep secret.
    pub private_pem: String,
    /// SubjectPublicKeyInfo public key (`-----BEGIN PUBLIC KEY-----`). Give to relays.
    pub public_pem: String,
}

impl fmt::Debug for TokenKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKeyPair")
            .field("public_pem", &self.public_pem)
            .finish_non_exhaustive()
    }
}

impl TokenKeyPair {
    /// Generates a new key pair from the operating system's random source.
    pub fn generate() -> Result<Self, TokenError> {
        let signing = SigningKey::generate(&mut rand::rngs::OsRng);
        Self::from_signing_key(&signing)
    }

    fn from_signing_key(signing: &SigningKey) -> Result<Self, TokenError> {
        let private_pem = signing
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| TokenError::InvalidKey(e.to_string()))?
            .to_string();
        let public_pem = signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| TokenError::InvalidKey(e.to_string()))?;
        Ok(Self {
            private_pem,
            public_pem,
        })
    }
}

/// Issues tokens. Holds the private key (a clone holds it too).
#[derive(Clone)]
pub struct TokenSigner {
    key: EncodingKey,
    kid: String,
    public: VerifyingKey,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Checks that `text` is PEM with a `label` block before a PEM parser sees it:
/// parsers describe a file that is not PEM at all in their own terms ("PEM
/// preamble contains invalid data (NUL byte)" for a binary file without a NUL).
pub fn check_pem(text: &str, label: &str) -> Result<(), String> {
    let begin = format!("-----BEGIN {label}-----");
    if text.contains(&begin) {
        return Ok(());
    }
    let found = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"));
    Err(match found {
        Some(other) => format!("a PEM {other} where a {label} was expected"),
        None => format!("not a PEM file (expected {begin})"),
    })
}

impl TokenSigner {
    /// A signer from a PKCS#8 PEM private key.
    pub fn from_pem(private_pem: &str) -> Result<Self, TokenError> {
        check_pem(private_pem, "PRIVATE KEY").map_err(TokenError::InvalidKey)?;
        let signing = SigningKey::from_pkcs8_pem(private_pem)
            .map_err(|e| TokenError::InvalidKey(e.to_string()))?;
        let der = signing
            .to_pkcs8_der()
            .map_err(|e| TokenError::InvalidKey(e.to_string()))?;
        let public = signing.verifying_key();
        Ok(Self {
            key: EncodingKey::from_ed_der(der.as_bytes()),
            kid: key_id(&public),
            public,
        })
    }

    /// Key id placed in every token's header.
    pub fn key_id(&self) -> &str {
        &self.kid
    }

    /// A verifier for this signer's tokens (same key), for `audience`.
    pub fn verifier(&self, audience: impl Into<String>) -> TokenVerifier {
        TokenVerifier::from_verifying_key(self.public, audience.into())
    }

    /// Signs `claims` into a compact JWT.
    pub fn issue(&self, claims: &Claims) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key)
            .map_err(|e| TokenError::Signing(e.to_string()))
    }
}

/// A token's expiry (`exp`, seconds since the Unix epoch) read without
/// verifying it: how a client holding a token decides to fetch a fresh one
/// before it lapses. `None` when it does not parse. Never use it to trust a
/// token.
pub fn unverified_expiry(token: &str) -> Option<u64> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()?
        .get("exp")?
        .as_u64()
}

/// Verifies tokens offline with the issuer's public key.
#[derive(Clone)]
pub struct TokenVerifier {
    /// The trusted keys, by key id (a few: the current one and, while keys
    /// rotate, the next or the previous).
    keys: Vec<(String, DecodingKey)>,
    audience: String,
    leeway_secs: u64,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("kids", &self.key_ids())
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

impl TokenVerifier {
    /// Default tolerance for clock skew between issuer and verifier: 5 seconds.
    pub const DEFAULT_LEEWAY_SECS: u64 = 5;

    /// A verifier trusting every SubjectPublicKeyInfo PEM public key in
    /// `public_pem` (one, or several concatenated: a key set, so that keys
    /// rotate without downtime), accepting `audience`. At most
    /// [`TokenVerifier::MAX_KEYS`] keys.
    pub fn from_pem(public_pem: &str, audience: impl Into<String>) -> Result<Self, TokenError> {
        check_pem(public_pem, "PUBLIC KEY").map_err(TokenError::InvalidKey)?;
        const END: &str = "-----END PUBLIC KEY-----";
        let mut keys = Vec::new();
        let mut rest = public_pem;
        while let Some(start) = rest.find("-----BEGIN PUBLIC KEY-----") {
            let Some(end) = rest[start..].find(END).map(|e| start + e + END.len()) else {
                return Err(TokenError::InvalidKey(
                    "an unterminated PUBLIC KEY block".into(),
                ));
            };
            let public = VerifyingKey::from_public_key_pem(&rest[start..end])
                .map_err(|e| TokenError::InvalidKey(e.to_string()))?;
            if keys.len() == Self::MAX_KEYS {
                return Err(TokenError::InvalidKey(format!(
                    "more than {} keys in one key set",
                    Self::MAX_KEYS
                )));
            }
            keys.push(public);
            rest = &rest[end..];
        }
        let mut v = Self::from_verifying_key(keys[0], audience.into());
        for k in &keys[1..] {
            let kid = key_id(k);
            if !v.keys.iter().any(|(id, _)| *id == kid) {
                v.keys.push((kid, DecodingKey::from_ed_der(k.as_bytes())));
            }
        }
        Ok(v)
    }

    /// Most keys one verifier trusts at once.
    pub const MAX_KEYS: usize = 16;

    fn from_verifying_key(public: VerifyingKey, audience: String) -> Self {
        Self {
            keys: vec![(key_id(&public), DecodingKey::from_ed_der(public.as_bytes()))],
            audience,
            leeway_secs: Self::DEFAULT_LEEWAY_SECS,
        }
    }

    /// Sets the clock-skew tolerance applied to `exp` and `nbf`. Defaults to 5 seconds.
    pub fn set_leeway_secs(&mut self, secs: u64) -> &mut Self {
        self.leeway_secs = secs;
        self
    }

    /// Key ids of the trusted keys, in the order given.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// Audience accepted.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Checks signature, key, audience and validity period at `now` (seconds since the
    /// Unix epoch) and returns the claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::WrongAlgorithm(format!("{:?}", header.alg)));
        }
        let Some((_, key)) = self
            .keys
            .iter()
            .find(|(kid, _)| header.kid.as_deref() == Some(kid.as_str()))
        else {
            return Err(TokenError::UnknownKey {
                expected: self.key_ids().join(","),
                found: header.kid,
            });
        };
        // Time and audience are checked below against the injected clock, with typed
        // errors; jsonwebtoken only checks the signature and parses the claims.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims = HashSet::new();
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
            _ => TokenError::Malformed(e.to_string()),
        })?;
        let claims = data.claims;
        if claims.aud != self.audience {
            return Err(TokenError::WrongAudience {
                expected: self.audience.clone(),
                found: claims.aud,
            });
        }
        if now > claims.exp.saturating_add(self.leeway_secs) {
            return Err(TokenError::Expired {
                exp: claims.exp,
                now,
            });
        }
        if now.saturating_add(self.leeway_secs) < claims.nbf {
            return Err(TokenError::NotYetValid {
                nbf: claims.nbf,
                now,
            });
        }
        Ok(claims)
    }

    /// [`verify`](Self::verify), then require one of `allowed` roles.
    pub fn verify_role(
        &self,
        token: &str,
        now: u64,
        allowed: &[Role],
    ) -> Result<Claims, TokenError> {
        let claims = self.verify(token, now)?;
        if !allowed.contains(&claims.role) {
            return Err(TokenError::WrongRole {
                allowed: allowed
                    .iter()
                    .map(|r| r.name())
                    .collect::<Vec<_>>()
                    .join(","),
                found: claims.role,
            });
        }
        Ok(claims)
    }

    /// [`verify_role`](Self::verify_role), then require that the token allows `world`.
    pub fn verify_for_world(
        &self,
        token: &str,
        now: u64,
        allowed: &[Role],
        world: WorldId,
    ) -> Result<Claims, TokenError> {
        let claims = self.verify_role(token, now, allowed)?;
        if !claims.allows_world(world) {
            return Err(TokenError::WorldNotAllowed(world));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;
    const AUD: &str = "skylane-test";

    fn setup() -> (TokenSigner, TokenVerifier) {
        let pair = TokenKeyPair::generate().unwrap();
        let signer = TokenSigner::from_pem(&pair.private_pem).unwrap();
        let verifier = TokenVerifier::from_pem(&pair.public_pem, AUD).unwrap();
        (signer, verifier)
    }

    #[test]
    fn a_key_file_that_is_not_pem_says_so() {
        let binary = "\u{1}\u{2}garbage\u{7f} bytes";
        let err = TokenVerifier::from_pem(binary, AUD)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a PEM file"), "{err}");
        assert!(err.contains("BEGIN PUBLIC KEY"), "{err}");
        let pair = TokenKeyPair::generate().unwrap();
        let err = TokenVerifier::from_pem(&pair.private_pem, AUD)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a PEM PRIVATE KEY where a PUBLIC KEY was expected"),
            "{err}"
        );
        let err = TokenSigner::from_pem(&pair.public_pem)
            .unwrap_err()
            .to_string();
        assert!(err.contains("where a PRIVATE KEY was expected"), "{err}");
    }

    fn claims(role: Role) -> Claims {
        Claims::new("alice", role, vec![WorldId(7)], AUD, NOW, 600)
    }

    #[test]
    fn a_key_set_trusts_each_of_its_keys_and_only_those() {
        let pairs: Vec<TokenKeyPair> = (0..3).map(|_| TokenKeyPair::generate().unwrap()).collect();
        let signers: Vec<TokenSigner> = pairs
            .iter()
            .map(|p| TokenSigner::from_pem(&p.private_pem).unwrap())
            .collect();
        // Old and new key during a rotation.
        let set = format!("{}\n{}", pairs[0].public_pem, pairs[1].public_pem);
        let v = TokenVerifier::from_pem(&set, AUD).unwrap();
        assert_eq!(v.key_ids(), vec![signers[0].key_id(), signers[1].key_id()]);
        for s in &signers[..2] {
            let t = s.issue(&claims(Role::Player)).unwrap();
            assert_eq!(v.verify(&t, NOW).unwrap(), claims(Role::Player));
        }
        let other = signers[2].issue(&claims(Role::Player)).unwrap();
        match v.verify(&other, NOW) {
            Err(TokenError::UnknownKey { expected, found }) => {
                assert_eq!(found.as_deref(), Some(signers[2].key_id()));
                assert!(
                    expected.contains(signers[0].key_id())
                        && expected.contains(signers[1].key_id())
                );
            }
            r => panic!("another key's token: {r:?}"),
        }
        // A forged token under a trusted kid still fails on its signature.
        let (_, rest) = other.split_once('.').unwrap();
        let forged = format!("{}.{rest}", b64_header(signers[0].key_id()));
        assert!(
            matches!(v.verify(&forged, NOW), Err(TokenError::BadSignature)),
            "{:?}",
            v.verify(&forged, NOW)
        );
        // Bounded, and a broken block is refused.
        let many = std::iter::repeat_n(pairs[0].public_pem.as_str(), TokenVerifier::MAX_KEYS + 1)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(TokenVerifier::from_pem(&many, AUD).is_err());
        let cut = &set[..set.len() - 20];
        assert!(TokenVerifier::from_pem(cut, AUD).is_err());
    }

    /// The base64url header of an EdDSA token with key id `kid`.
    fn b64_header(kid: &str) -> String {
        use base64::Engine as _;
        let json = format!("{{\"typ\":\"JWT\",\"alg\":\"EdDSA\",\"kid\":\"{kid}\"}}");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn a_holder_reads_the_expiry_without_the_key() {
        let (signer, _) = setup();
        let t = signer.issue(&claims(Role::Player)).unwrap();
        assert_eq!(unverified_expiry(&t), Some(NOW + 600));
        assert_eq!(unverified_expiry("not.a-token"), None);
        assert_eq!(unverified_expiry(""), None);
    }

    #[test]
    fn valid_token_round_trips() {
        let (signer, verifier) = setup();
        assert_eq!(vec![signer.key_id()], verifier.key_ids());
        let token = signer.issue(&claims(Role::Player)).unwrap();
        let got = verifier
            .verify_for_world(&token, NOW + 10, &[Role::Player], WorldId(7))
            .unwrap();
        assert_eq!(got, claims(Role::Player));
        // The signer's own verifier agrees with one built from the PEM.
        assert_eq!(signer.verifier(AUD).verify(&token, NOW).unwrap(), got);
    }

    #[test]
    fn expired_token_is_rejected() {
        let (signer, verifier) = setup();
        let token = signer.issue(&claims(Role::Player)).unwrap();
        let late = NOW + 600 + TokenVerifier::DEFAULT_LEEWAY_SECS + 1;
        assert_eq!(
            verifier.verify(&token, late),
            Err(TokenError::Expired {
                exp: NOW + 600,
                now: late
            })
        );
        // Within the leeway it is still accepted.
        assert!(verifier.verify(&token, NOW + 603).is_ok());
    }

    #[test]
    fn not_yet_valid_token_is_rejected() {
        let (signer, verifier) = setup();
        let mut c = claims(Role::Player);
        c.nbf = NOW + 100;
        let token = signer.issue(&c).unwrap();
        assert_eq!(
            verifier.verify(&token, NOW),
            Err(TokenError::NotYetValid {
                nbf: NOW + 100,
                now: NOW
            })
        );
    }

    #[test]
    fn forged_token_is_rejected() {
        let (signer, verifier) = setup();
        let token = signer.issue(&claims(Role::Spectator)).unwrap();
        // Replace the claims with an operator's, keeping header and signature.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged_claims = {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::to_vec(&claims(Role::Operator)).unwrap())
        };
        parts[1] = &forged_claims;
        let forged = parts.join(".");
        assert_eq!(verifier.verify(&forged, NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn token_from_another_key_is_rejected() {
        let (_, verifier) = setup();
        let (other_signer, _) = setup();
        let token = other_signer.issue(&claims(Role::Player)).unwrap();
        assert!(matches!(
            verifier.verify(&token, NOW),
            Err(TokenError::UnknownKey { found: Some(_), .. })
        ));
    }

    #[test]
    fn wrong_audience_is_rejected() {
        let (signer, verifier) = setup();
        let mut c = claims(Role::Player);
        c.aud = "another-game".into();
        let token = signer.issue(&c).unwrap();
        assert_eq!(
            verifier.verify(&token, NOW),
            Err(TokenError::WrongAudience {
                expected: AUD.into(),
                found: "another-game".into()
            })
        );
    }

    #[test]
    fn wrong_role_is_rejected() {
        let (signer, verifier) = setup();
        let token = signer.issue(&claims(Role::Spectator)).unwrap();
        assert_eq!(
            verifier.verify_role(&token, NOW, &[Role::Player]),
            Err(TokenError::WrongRole {
                allowed: "player".into(),
                found: Role::Spectator
            })
        );
    }

    #[test]
    fn world_not_in_token_is_rejected() {
        let (signer, verifier) = setup();
        let token = signer.issue(&claims(Role::Player)).unwrap();
        assert_eq!(
            verifier.verify_for_world(&token, NOW, &[Role::Player], WorldId(8)),
            Err(TokenError::WorldNotAllowed(WorldId(8)))
        );
        let any = Claims::new("bob", Role::Player, vec![], AUD, NOW, 60);
        assert!(any.allows_world(WorldId(123)));
    }

    #[test]
    fn garbage_and_bad_keys_are_typed() {
        let (_, verifier) = setup();
        assert!(matches!(
            verifier.verify("not a token", NOW),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            TokenVerifier::from_pem("nope", AUD),
            Err(TokenError::InvalidKey(_))
        ));
        assert!(matches!(
            TokenSigner::from_pem("nope"),
            Err(TokenError::InvalidKey(_))
        ));
        assert!(matches!(
            "admin".parse::<Role>(),
            Err(TokenError::UnknownRole(_))
        ));
        assert_eq!("Spectator".parse::<Role>(), Ok(Role::Spectator));
    }

    #[test]
    fn hmac_token_is_refused_by_algorithm() {
        let (_, verifier) = setup();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(Role::Operator),
            &EncodingKey::from_secret(b"guess"),
        )
        .unwrap();
        assert!(matches!(
            verifier.verify(&token, NOW),
            Err(TokenError::WrongAlgorithm(_))
        ));
    }
}
