//! The `skylane-origin` binary as an operator runs it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use skylane_proto::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_skylane-origin"))
}

#[test]
fn check_config_accepts_a_good_file_and_names_a_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!("world = 4\ndev_certs = {:?}\n", dir.path().join("pki")),
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
    assert!(String::from_utf8_lossy(&out.stdout).contains("world = 4"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "wrld = 4\n").unwrap();
    let out = bin()
        .args(["check-config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wrld"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let missing_tls = dir.path().join("notls.toml");
    std::fs::write(&missing_tls, "world = 4\n").unwrap();
    let out = bin()
        .args(["check-config", missing_tls.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("cert, key and ca"));
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

#[tokio::test(flavor = "current_thread")]
async fn serves_a_relay_exposes_metrics_and_flushes_its_journal_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let journal = dir.path().join("world.redb");
    let mut child = bin()
        .args([
            "--dev-certs",
            pki.to_str().unwrap(),
            "--journal",
            journal.to_str().unwrap(),
        ])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--world",
            "5",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let relays: SocketAddr = v["relays"].as_str().unwrap().parse().unwrap();
    let admin: SocketAddr = v["admin"].as_str().unwrap().parse().unwrap();

    // A relay with the dev PKI's relay certificate connects and opens a session.
    let id = skylane_certs::Identity::load(&pki.join("relay.pem"), &pki.join("relay.key")).unwrap();
    let roots = skylane_certs::load_roots(&pki.join("ca.pem")).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(skylane_certs::client_config(roots, Some(&id)).unwrap());
    let conn = ep.connect(relays, "localhost").unwrap().await.unwrap();
    let (mut ctl, mut ctl_recv) = conn.open_bi().await.unwrap();
    for msg in [
        LinkMsg::LinkHello {
            version: PROTOCOL_VERSION,
            relay: RelayId(1),
        },
        LinkMsg::SessionOpen {
            session: SessionId(1),
            player: "a".into(),
            world: WorldId(5),
            role: Role::Player,
            team: None,
            resume_from: vec![],
        },
    ] {
        ctl.write_all(&encode_frame_to_bytes(&msg, DEFAULT_MAX_FRAME).unwrap())
            .await
            .unwrap();
    }
    let mut dec = FrameDecoder::default();
    let subscribed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            while let Ok(Some(m)) = dec.poll_message::<LinkMsg>() {
                if matches!(m, LinkMsg::Subscriptions { .. }) {
                    return true;
                }
            }
            match ctl_recv.read_chunk(65_536, true).await {
                Ok(Some(c)) => dec.push(&c.bytes),
                _ => return false,
            }
        }
    })
    .await
    .unwrap();
    assert!(subscribed);

    let metrics = tokio::task::spawn_blocking(move || http_get(admin, "/metrics"))
        .await
        .unwrap();
    assert!(metrics.contains("skylane_origin_relays 1"), "{metrics}");
    let status = tokio::task::spawn_blocking(move || http_get(admin, "/status"))
        .await
        .unwrap();
    assert!(status.contains("\"world\":5"), "{status}");
    // The operator sees the world's progress: tick, state hash, sessions, relays.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = tokio::task::spawn_blocking(move || http_get(admin, "/status"))
        .await
        .unwrap();
    let body = status.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(body).expect(body);
    assert!(v["tick"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["state_hash"].as_str().unwrap().len(), 64, "{v}");
    assert_eq!(v["sessions"], 1, "{v}");
    assert_eq!(v["relays"], 1, "{v}");
    assert!(
        v["started_unix_us"].as_u64().unwrap() > 1_600_000_000_000_000,
        "{v}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful exit: {status:?}");
    drop(conn);

    // The journal holds the join and the ticks, and replays consistently.
    let (j, meta) = skylane_origin::Journal::open(&journal).unwrap();
    let report = skylane_origin::replay::<skylane_origin::Arena>(&j, &meta).unwrap();
    assert!(report.ticks >= 3, "{report:?}");
    assert!(report.divergence.is_none());
    assert!(j
        .inputs(0)
        .unwrap()
        .iter()
        .any(|(_, i)| matches!(i, Input::Join { .. })));
}
