//! The relay configuration's tests: files, flags, checks.

use super::*;
use clap::{CommandFactory, FromArgMatches, Parser};
use skylane_proto::WorldId;
use std::path::Path;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    relay: RelayConfig,
}

fn parse(args: &[&str], file: Option<&Path>) -> Result<RelayConfig, ConfigError> {
    let matches = Cli::command().try_get_matches_from(args).unwrap();
    let cli = Cli::from_arg_matches(&matches).unwrap();
    skylane_ops::merge(&cli.relay, &matches, file)
}

#[test]
fn the_analytics_table_comes_from_the_file_and_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("relay.toml");
    std::fs::write(
        &f,
        "dev_certs = \"/tmp/x\"\n[analytics]\ndir = \"/var/skylane\"\nrotate_secs = 60\n",
    )
    .unwrap();
    let c = parse(&["x"], Some(&f)).unwrap();
    assert_eq!(c.analytics.dir, Some("/var/skylane".into()));
    assert_eq!(c.analytics.rotate_secs, 60);
    assert_eq!(c.analytics.spool_rows, 65_536, "the rest defaulted");
    c.analytics.validate().unwrap();
    std::fs::write(&f, "[analytics]\nrotate_secs = 0\n").unwrap();
    let c = parse(&["x"], Some(&f)).unwrap();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("analytics.rotate_secs"), "{e}");
    std::fs::write(&f, "[analytics]\nbogus = 1\n").unwrap();
    let e = parse(&["x"], Some(&f)).unwrap_err().to_string();
    assert!(e.contains("bogus"), "unknown keys are named: {e}");
}

#[test]
fn origins_are_named_by_host_with_an_optional_tls_name() {
    let o = parse_origin("origin-1.example:4500=1+2").unwrap();
    assert_eq!(o.target, "origin-1.example:4500");
    assert_eq!(o.tls_name, "origin-1.example");
    assert_eq!(o.worlds, vec![WorldId(1), WorldId(2)]);
    let o = parse_origin("origin-1.internal@10.0.0.5:4500=7").unwrap();
    assert_eq!(o.target, "10.0.0.5:4500");
    assert_eq!(o.tls_name, "origin-1.internal");
    let o = parse_origin("[::1]:4500=1").unwrap();
    assert_eq!(o.tls_name, "::1");
    assert_eq!(o.resolve().unwrap(), "[::1]:4500".parse().unwrap());
    for bad in [
        "x:1",
        "x=1",
        ":4500=1",
        "x:port=1",
        "x:1=w",
        "bad name!@x:1=1",
    ] {
        assert!(parse_origin(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn the_default_is_what_the_flags_document() {
    let matches = Cli::command().try_get_matches_from(["x"]).unwrap();
    let parsed = Cli::from_arg_matches(&matches).unwrap().relay;
    // Environment variables would differ; none is set in tests.
    if std::env::vars().all(|(k, _)| !k.starts_with("SKYLANE_RELAY_")) {
        assert_eq!(parsed, RelayConfig::default());
    }
}

#[test]
fn file_flags_and_validation() {
    let dir = std::env::temp_dir().join(format!("skylane-relay-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("relay.toml");
    std::fs::write(
        &f,
        "id = 7\nregion = \"eu-west\"\norigins = [\"127.0.0.1:4500=1+2\"]\npeers = [\"8/us-east/38.9/-77.0/relay8.example:4433\"]\ndev_certs = \"/tmp/x\"\n",
    )
    .unwrap();
    let c = parse(&["x", "--region", "eu-central"], Some(&f)).unwrap();
    assert_eq!(c.id, 7);
    assert_eq!(c.region, "eu-central", "flag over file");
    c.validate().unwrap();
    let o = parse_origin(&c.origins[0]).unwrap();
    assert_eq!(o.worlds, vec![WorldId(1), WorldId(2)]);
    assert_eq!(
        o.tls_name, "127.0.0.1",
        "the host is the TLS name by default"
    );
    let peer = parse_peer(&c.peers[0]).unwrap();
    assert_eq!(peer.info.id, RelayId(8));
    assert_eq!(peer.tls_name, "relay8.example");
    let peer = parse_peer("9/x/0/0/localhost@127.0.0.9:4433").unwrap();
    assert_eq!(peer.info.addrs, vec!["127.0.0.9:4433".to_owned()]);
    assert_eq!(peer.tls_name, "localhost");

    std::fs::write(&f, "orgins = []\n").unwrap();
    let err = parse(&["x"], Some(&f)).unwrap_err().to_string();
    assert!(err.contains("orgins"), "{err}");

    let c = parse(
        &["x", "--dev-certs", "/tmp/x", "--origin", "nowhere=1"],
        None,
    )
    .unwrap();
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("no port"), "{err}");
    let c = parse(
        &[
            "x",
            "--dev-certs",
            "/tmp/x",
            "--origin",
            "127.0.0.1:1=1",
            "--geoip",
            "/nonexistent.mmdb",
        ],
        None,
    )
    .unwrap();
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("/nonexistent.mmdb"), "{err}");
    let c = parse(&["x", "--origin", "127.0.0.1:1=1"], None).unwrap();
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("cert, key and ca"), "{err}");
    // A spectator tier no delay buffer can serve.
    let c = parse(
        &[
            "x",
            "--dev-certs",
            "/tmp/x",
            "--origin",
            "127.0.0.1:1=1",
            "--spectator-min-delay-secs",
            "200",
        ],
        None,
    )
    .unwrap();
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("spectator_min_delay_secs"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
