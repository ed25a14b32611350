//! The `skylane-relay` binary as an operator runs it: check-config, the admin
//! endpoint (/status, /metrics, POST /drain) and draining to exit.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_skylane-relay"))
}

/// The relay in development mode in `dir`, on free ports, linked to an origin
/// that is not there.
fn dev_relay(dir: &std::path::Path) -> Command {
    let mut c = bin();
    c.args(["--dev-certs", dir.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--origin", "127.0.0.1:9=1"]);
    c
}

fn http(addr: SocketAddr, method: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn check_config_names_bad_keys_and_missing_files() {
    let dir = std::env::temp_dir().join(format!("skylane-relay-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        format!(
            "id = 3\nregion = \"eu-west\"\norigins = [\"127.0.0.1:4500=1\"]\ndev_certs = {:?}\n",
            dir.join("pki")
        ),
    )
    .unwrap();
    let out = bin()
        .args(["check-config", good.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("region = \"eu-west\""));

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "regoin = \"x\"\n").unwrap();
    let out = bin()
        .args(["check-config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("regoin"));

    let geo = dir.join("geo.toml");
    std::fs::write(
        &geo,
        "origins = [\"127.0.0.1:4500=1\"]\ndev_certs = \"/tmp\"\ngeoip = \"/nonexistent/city.mmdb\"\n",
    )
    .unwrap();
    let out = bin()
        .args(["check-config", geo.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/city.mmdb"));

    let help = bin().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--listen",
        "--origin",
        "--peer",
        "--geoip",
        "--token-key",
        "--ticket-secret",
        "--admin",
        "--max-conns-per-ip",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_admin_endpoint_reports_status_and_metrics_and_drains() {
    let dir = std::env::temp_dir().join(format!("skylane-relay-run-{}", std::process::id()));
    let mut child = dev_relay(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).expect(&line);
    let admin: SocketAddr = v["admin"].as_str().unwrap().parse().unwrap();

    let status = http(admin, "GET", "/status");
    assert!(status.contains("\"up\":false"), "{status}");
    assert!(status.contains("\"draining\":false"), "{status}");
    let metrics = http(admin, "GET", "/metrics");
    assert!(metrics.contains("skylane_relay_connections"), "{metrics}");
    assert!(
        dir.join("token.key").exists(),
        "dev mode writes a token key to issue tokens with"
    );

    let drained = http(admin, "POST", "/drain");
    assert!(drained.contains("draining"), "{drained}");
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "relay did not exit after the drain"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Starts a relay in development mode with its stderr piped, waits for its
/// "relay serving" log line and returns every line read up to it.
fn first_log_lines(dir: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut child = dev_relay(dir)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        let done = line.contains("relay serving");
        lines.push(line);
        if done || lines.len() > 100 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[test]
fn logs_into_a_pipe_carry_no_colour_codes_and_json_logs_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let text = first_log_lines(dir.path(), &[]);
    assert!(text.iter().any(|l| l.contains("relay serving")), "{text:?}");
    for l in &text {
        assert!(!l.contains('\u{1b}'), "colour code in a piped log: {l:?}");
    }
    let json = first_log_lines(dir.path(), &["--log-format", "json"]);
    assert!(json.iter().any(|l| l.contains("relay serving")), "{json:?}");
    for l in &json {
        let v: serde_json::Value = serde_json::from_str(l).expect(l);
        assert!(v["level"].is_string(), "{l}");
    }
}
