//! `skylane-content`: game content delivered through the relays players
//! already hold a connection to.
//!
//! * [`manifest`]: which version of each pack is current, with its size and
//!   SHA-256, signed with an operator's Ed25519 key (a tampered or rolled
//!   back manifest is refused).
//! * [`store`]: a content source directory and `publish` (what `skylane
//!   content publish DIR --version V` does).
//! * [`cache`]: the relay's pack cache, pure: least recently used by bytes,
//!   one fetch from the source however many clients ask, served only when
//!   the bytes match the manifest.

pub mod cache;
pub mod manifest;
pub mod store;

pub use cache::{CacheStats, ContentError, Fetched, Lookup, PackCache, PackKey};
pub use manifest::{
    sha256_hex, signing_key_from_pem, verifying_key_from_pem, Manifest, ManifestError, PackEntry,
    SignedManifest,
};
pub use store::{FileStamp, SourceDir, StoreError, MANIFEST_FILE, MANIFEST_RECORD};
