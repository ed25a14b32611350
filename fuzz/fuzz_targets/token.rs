//! Fuzzes token parsing and verification: arbitrary strings must give a typed
//! `TokenError`, never a panic.
//!
//! Run: `cargo +nightly fuzz run token` from `fuzz/`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use skylane_proto::{TokenKeyPair, TokenVerifier};

fn verifier() -> &'static TokenVerifier {
    static V: OnceLock<TokenVerifier> = OnceLock::new();
    V.get_or_init(|| {
        let pair = TokenKeyPair::generate().expect("key generation");
        TokenVerifier::from_pem(&pair.public_pem, "skylane").expect("public key")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = verifier().verify(s, 1_800_000_000);
        let _ = TokenVerifier::from_pem(s, "skylane");
    }
});
