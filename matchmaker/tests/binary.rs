//! The `skylane-match` binary: `check-config` accepts a good file (with its
//! key files) and refuses a bad one with the reason; started on an embedded
//! control plane it prints where it listens, leads its queue alone, and
//! answers its API (a bad token is a typed 401).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use skylane_proto::token::TokenKeyPair;

const BIN: &str = env!("CARGO_BIN_EXE_skylane-match");

fn config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let players = TokenKeyPair::generate().unwrap();
    let mine = TokenKeyPair::generate().unwrap();
    std::fs::write(dir.join("players.pub"), players.public_pem).unwrap();
    std::fs::write(dir.join("mm.key"), mine.private_pem).unwrap();
    let path = dir.join("match.toml");
    std::fs::write(
        &path,
        format!(
            r#"node_id = "mm-test"
listen = "127.0.0.1:0"
control = "embedded"
player_keys = "{}"
signing_key = "{}"
ratings_db = "{}"
{extra}
[[games]]
name = "tictactoe"
teams = 2
team_size = 1
"#,
            dir.join("players.pub").display(),
            dir.join("mm.key").display(),
            dir.join("ratings.redb").display(),
        ),
    )
    .unwrap();
    path
}

fn http(addr: &str, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn check_config_accepts_a_good_file_and_names_what_is_wrong_in_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = config(dir.path(), "");
    let out = Command::new(BIN)
        .args(["check-config", good.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));
    let bad = config(dir.path(), "lease_ttl_secs = 0");
    let out = Command::new(BIN)
        .args(["check-config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lease_ttl_secs"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_binary_leads_alone_and_answers_its_api() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "");
    let mut child = Command::new(BIN)
        .args(["--config", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let started: serde_json::Value = serde_json::from_str(&line).expect("one JSON line");
    let addr = started["listen"].as_str().unwrap().to_owned();
    let mut leading = false;
    for _ in 0..50 {
        let status = http(
            &addr,
            "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        if status.contains("\"leading\":true") {
            leading = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let forged = http(
        &addr,
        "POST /tickets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\nContent-Type: application/json\r\nContent-Length: 20\r\nConnection: close\r\n\r\n{\"game\":\"tictactoe\"}",
    );
    let metrics = http(
        &addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(leading, "a lone instance leads its queue");
    assert!(forged.starts_with("HTTP/1.1 401"), "{forged}");
    assert!(forged.contains("bad_token"), "{forged}");
    assert!(
        metrics.contains("skylane_match_tickets_total{kind=\"BadToken\"} 1"),
        "{metrics}"
    );
}
