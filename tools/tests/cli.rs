//! The `skylane` binary as the README uses it: certificates and tokens.

use std::path::Path;
use std::process::{Command, Output};

fn skylane(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skylane"))
        .args(args)
        .output()
        .expect("run skylane")
}

fn ok(args: &[&str]) -> String {
    let out = skylane(args);
    assert!(
        out.status.success(),
        "skylane {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn version_is_printed() {
    assert!(ok(&["--version"]).starts_with("skylane "));
}

#[test]
fn certs_gen_writes_a_loadable_pki() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&[
        "certs",
        "gen",
        "--out",
        p(dir.path()),
        "--name",
        "relay.example",
    ]);
    assert!(out.contains("relay.pem") && out.contains("origin.key"));
    skylane_certs::Identity::load(
        &dir.path().join("origin.pem"),
        &dir.path().join("origin.key"),
    )
    .unwrap();
    skylane_certs::load_roots(&dir.path().join("ca.pem")).unwrap();
}

#[test]
fn token_keygen_issue_verify_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    ok(&["token", "keygen", "--out", p(dir.path())]);
    // A second keygen does not silently replace the keys.
    assert!(!skylane(&["token", "keygen", "--out", p(dir.path())])
        .status
        .success());
    let key = dir.path().join("token.key");
    let public = dir.path().join("token.pub");
    let token = ok(&[
        "token",
        "issue",
        "--key",
        p(&key),
        "--sub",
        "alice",
        "--role",
        "spectator",
        "--world",
        "7",
        "--ttl",
        "10m",
    ]);
    let token = token.trim();

    // The library verifies what the CLI issued.
    let verifier = skylane_proto::TokenVerifier::from_pem(
        &std::fs::read_to_string(&public).unwrap(),
        "skylane",
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = verifier.verify(token, now).unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.role, skylane_proto::Role::Spectator);
    assert_eq!(claims.worlds, vec![skylane_proto::WorldId(7)]);
    assert!((590..=600).contains(&(claims.exp - claims.iat)));

    // And the CLI's own verify agrees, and rejects another audience.
    let json = ok(&["token", "verify", "--pub", p(&public), token]);
    assert!(json.contains("\"sub\": \"alice\""));
    let wrong = skylane(&[
        "token",
        "verify",
        "--pub",
        p(&public),
        "--audience",
        "other",
        token,
    ]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("audience"));
}

#[test]
fn bad_role_is_a_clear_error() {
    let out = skylane(&[
        "token",
        "issue",
        "--key",
        "/nonexistent",
        "--sub",
        "x",
        "--role",
        "admin",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role"));
}
