//! Fuzzes the content manifest's decoders: a `manifest.signed` file, a
//! manifest body under a valid signature (so the parser and its bounds are
//! reached, not only the signature check), and analytics files read back:
//! arbitrary bytes give a typed error, never a panic.
//!
//! Run: `cargo +nightly fuzz run content` from `fuzz/`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use skylane_content::{Manifest, SignedManifest};
use skylane_proto::ed25519_dalek::SigningKey;

fn key() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(|| SigningKey::from_bytes(&[7; 32]))
}

fuzz_target!(|data: &[u8]| {
    use skylane_proto::ed25519_dalek::Signer as _;
    let k = key();
    if let Ok(s) = SignedManifest::from_file(data) {
        let _ = s.verify(&k.verifying_key(), 0);
    }
    // The body signed: parsing and checks run on arbitrary JSON.
    let signed = SignedManifest {
        body: data.to_vec(),
        signature: k.sign(data).to_bytes().to_vec(),
    };
    if let Ok(m) = signed.verify(&k.verifying_key(), 0) {
        let _: &Manifest = &m;
        let _ = m.sign(k);
    }
    // An analytics file of arbitrary bytes is skipped by name.
    if let Ok(dir) = tempfile::tempdir() {
        let t = dir.path().join("ticket");
        if std::fs::create_dir_all(&t).is_ok() && std::fs::write(t.join("x.parquet"), data).is_ok() {
            let r = skylane_analytics::read_table::<skylane_analytics::schema::Ticket>(dir.path(), "ticket");
            let _ = r.map(|r| r.unreadable.len());
        }
    }
});
