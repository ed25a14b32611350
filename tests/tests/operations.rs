//! The binaries as docs/operations.md and the README run them: an origin and a
//! relay started in development mode, then `skylane loadgen` against them with
//! players, spectators, both admin endpoints and the raw quinn baseline (its
//! counts must match the origin's, its JSON report must carry the relay's cost
//! and the baseline beside it), and the client SDK's examples (a bot player and
//! a spectator).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The directory the workspace's binaries are built into (next to this test's
/// `deps/`), after building them if they are not there yet.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_owned();
    let names = [
        "skylane",
        "skylane-origin",
        "skylane-relay",
        "examples/bot",
        "examples/spectator",
    ];
    if names.iter().any(|n| !dir.join(exe_name(n)).exists()) {
        let mut cmd = Command::new(env!("CARGO"));
        // Every binary and example of the four packages (`--bin` with `-p` would
        // look the binaries up in the named package only).
        cmd.args(["build", "--bins", "--examples"]).args([
            "-p",
            "skylane-tools",
            "-p",
            "skylane-origin",
            "-p",
            "skylane-relay",
            "-p",
            "skylane-client",
        ]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("cargo build");
        assert!(st.success(), "building the binaries failed");
    }
    dir
}

fn exe_name(n: &str) -> String {
    format!("{n}{}", std::env::consts::EXE_SUFFIX)
}

/// Kills the child when dropped (a failing test leaves no process behind).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a binary and reads its `listening` JSON line.
fn start(bin: &Path, args: &[&str]) -> (Running, serde_json::Value) {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).expect(&line);
    (Running(child), v)
}

/// An origin and a relay in development mode (`--dev-certs pki`), on free ports.
struct Local {
    _origin: Running,
    _relay: Running,
    pki: String,
    origin: serde_json::Value,
    relay: serde_json::Value,
}

fn local(bins: &Path, dir: &Path) -> Local {
    local_with(bins, dir, &[])
}

/// [`local`] with extra flags for the origin.
fn local_with(bins: &Path, dir: &Path, origin_extra: &[&str]) -> Local {
    let pki = dir.join("pki").to_str().unwrap().to_owned();
    // Development mode on free ports, as docs/operations.md runs them.
    let dev = [
        "--dev-certs",
        &pki,
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ];
    let (origin_proc, origin) = start(
        &bins.join(exe_name("skylane-origin")),
        &[&dev[..], origin_extra].concat(),
    );
    let origin_at = format!("{}=1", origin["relays"].as_str().unwrap());
    let relay_args = [
        &dev[..],
        &["--origin", &origin_at, "--max-conns-per-ip", "1000"],
    ]
    .concat();
    let (relay_proc, relay) = start(&bins.join(exe_name("skylane-relay")), &relay_args);
    Local {
        _origin: origin_proc,
        _relay: relay_proc,
        pki,
        origin,
        relay,
    }
}

#[test]
fn loadgen_against_an_origin_and_relay_started_as_the_docs_say() {
    let bins = bin_dir();
    let dir = tempfile::tempdir().unwrap();
    let net = local(&bins, dir.path());
    let (pki, o, r) = (net.pki.as_str(), &net.origin, &net.relay);
    let http = |v: &serde_json::Value| format!("http://{}", v["admin"].as_str().unwrap());
    let out = Command::new(bins.join(exe_name("skylane")))
        .args(["loadgen", "--relay", r["clients"].as_str().unwrap()])
        .args(["--ca", &format!("{pki}/ca.pem")])
        .args(["--token-key", &format!("{pki}/token.key")])
        .args(["--origin-key", &format!("{pki}/origin-signing.pub")])
        .args(["--origin-admin", &http(o), "--relay-admin", &http(r)])
        .args(["--players", "6", "--spectators", "8", "--baseline"])
        .args(["--ramp", "300ms", "--duration", "3s", "--bind", "127.0.0.1"])
        .args(["--mix", "movement=10,state=1,critical=1", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect(&stdout);
    assert_eq!(v["playing"], 6, "{v}");
    assert_eq!(v["events_lost"], 0, "{v}");
    assert_eq!(v["verified_players"], 6, "{v}");
    // The origin counted every answer the players got.
    assert_eq!(v["origin"]["consistent"], true, "{v}");
    assert!(v["origin"]["players_answered"].as_u64().unwrap() > 0, "{v}");
    // The audience watched; the relay's cost and the raw quinn server's are
    // both there, measured in this run.
    assert!(
        v["origin_rtt"]["count"].as_u64().unwrap() > 0,
        "origin pings: {v}"
    );
    assert_eq!(v["audience"]["spectators"], 8, "{v}");
    assert_eq!(v["audience"]["failed"], 0, "{v}");
    assert!(
        v["relay_cost"]["spectator_frames"].as_u64().unwrap() > 0,
        "{v}"
    );
    assert!(v["relay_cost"]["cpu_s"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["fanout"]["raw_quinn"]["connections"], 8, "{v}");
    assert!(
        v["fanout"]["raw_quinn"]["frames"].as_u64().unwrap() > 0,
        "{v}"
    );
    assert!(v["fanout"]["ratio"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["fanout"]["memory_ratio"].as_f64().unwrap() > 0.0, "{v}");
    assert!(
        v["fanout"]["raw_quinn"]["bytes_per_connection"]
            .as_f64()
            .unwrap()
            > 0.0,
        "{v}"
    );
}

#[test]
fn the_sdk_examples_run_against_a_local_origin_and_relay() {
    let bins = bin_dir();
    let dir = tempfile::tempdir().unwrap();
    let net = local(&bins, dir.path());
    let relay = net.relay["clients"].as_str().unwrap().to_owned();
    let ca = format!("{}/ca.pem", net.pki);
    // Tokens as the README issues them.
    let token = |sub: &str, role: &str| {
        let out = Command::new(bins.join(exe_name("skylane")))
            .args(["token", "issue", "--key", &format!("{}/token.key", net.pki)])
            .args(["--sub", sub, "--role", role, "--world", "1"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (alice, fan) = (token("alice", "player"), token("fan", "spectator"));
    // The spectator watches (1 s behind) while the bot plays.
    let spectator = Command::new(bins.join(exe_name("examples/spectator")))
        .args(["--relay", &relay, "--ca", &ca, "--token", &fan])
        .args(["--delay-ms", "1000", "--seconds", "6"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bot = Command::new(bins.join(exe_name("examples/bot")))
        .args([
            "--relay", &relay, "--ca", &ca, "--token", &alice, "--name", "alice",
        ])
        .args(["--origin-key", &format!("{}/origin-signing.pub", net.pki)])
        .args(["--seconds", "4"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&bot.stdout);
    assert!(
        bot.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&bot.stderr)
    );
    assert!(text.contains("connected to Some("), "{text}");
    // It walked: some state actions were applied, and it saw events.
    let line = text.lines().find(|l| l.contains("events,")).expect(&text);
    let n = |word: &str| -> u64 {
        let at = line.find(word).unwrap();
        line[..at]
            .split_whitespace()
            .last()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(
        n(" events") + n(" movement") > 10 && n(" applied") >= 2,
        "{line}"
    );
    assert!(text.contains("resyncs 0"), "{text}");
    let out = spectator.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("watching world 1 1000 ms behind"), "{text}");
    let line = text.lines().find(|l| l.contains(" frames (")).expect(&text);
    let frames: u64 = line.split_whitespace().next().unwrap().parse().unwrap();
    assert!(frames > 5, "{line}");
    assert!(line.ends_with(", 0 early"), "{line}");
}

/// Reads the relay's `/status` until `origins[0].up` is `want` or 10 s pass;
/// returns the last status text.
fn wait_origin_up(admin: &str, want: bool) -> String {
    let t = std::time::Instant::now();
    loop {
        let text = http_get(admin, "/status");
        let up = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["origins"][0]["up"].as_bool());
        if up == Some(want) || t.elapsed() > std::time::Duration::from_secs(10) {
            return text;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
}

#[test]
fn a_relay_reaches_an_origin_by_the_name_in_its_certificate() {
    use skylane_certs::{DevCa, LeafKind};
    let bins = bin_dir();
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    // A production-like PKI: the origin's certificate names only
    // `origin.skylane.test`, not `localhost` or an address.
    let ca = DevCa::generate("test CA").unwrap();
    std::fs::write(p("ca.pem"), &ca.pem().cert_pem).unwrap();
    let origin = ca
        .issue_exact(LeafKind::Origin, &["origin.skylane.test".into()])
        .unwrap();
    std::fs::write(p("origin.pem"), &origin.cert_pem).unwrap();
    std::fs::write(p("origin.key"), &origin.key_pem).unwrap();
    let relay = ca
        .issue_exact(LeafKind::Relay, &["relay.skylane.test".into()])
        .unwrap();
    std::fs::write(p("relay.pem"), &relay.cert_pem).unwrap();
    std::fs::write(p("relay.key"), &relay.key_pem).unwrap();
    let signing = skylane_proto::TokenKeyPair::generate().unwrap();
    std::fs::write(p("signing.key"), &signing.private_pem).unwrap();
    let tokens = skylane_proto::TokenKeyPair::generate().unwrap();
    std::fs::write(p("token.pub"), &tokens.public_pem).unwrap();
    std::fs::write(p("ticket.secret"), [7u8; 32]).unwrap();

    let (_origin, o) = start(
        &bins.join(exe_name("skylane-origin")),
        &[
            "--cert",
            &p("origin.pem"),
            "--key",
            &p("origin.key"),
            "--ca",
            &p("ca.pem"),
            "--signing-key",
            &p("signing.key"),
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ],
    );
    let port = o["relays"]
        .as_str()
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .1
        .to_owned();
    let relay_with = |origin: String| {
        start(
            &bins.join(exe_name("skylane-relay")),
            &[
                "--cert",
                &p("relay.pem"),
                "--key",
                &p("relay.key"),
                "--ca",
                &p("ca.pem"),
                "--token-key",
                &p("token.pub"),
                "--ticket-secret",
                &p("ticket.secret"),
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--origin",
                &origin,
            ],
        )
    };
    // Named: the link comes up and the name was checked against the certificate.
    let (_named, r) = relay_with(format!("origin.skylane.test@127.0.0.1:{port}=1"));
    let status = wait_origin_up(r["admin"].as_str().unwrap(), true);
    assert!(status.contains("\"up\":true"), "{status}");
    // By address only: the certificate does not name 127.0.0.1, so the link
    // must never come up.
    let (_unnamed, r) = relay_with(format!("127.0.0.1:{port}=1"));
    std::thread::sleep(std::time::Duration::from_secs(2));
    let status = wait_origin_up(r["admin"].as_str().unwrap(), false);
    assert!(status.contains("\"up\":false"), "{status}");
}

#[test]
fn operators_read_status_and_drain_with_the_admin_token() {
    let bins = bin_dir();
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki").to_str().unwrap().to_owned();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "a-long-operator-secret\n").unwrap();
    let token = token.to_str().unwrap();
    let relay = bins.join(exe_name("skylane-relay"));
    let common = [
        "--dev-certs",
        &pki,
        "--listen",
        "127.0.0.1:0",
        "--origin",
        "127.0.0.1:9=1",
    ];
    // Without a token, a non-loopback admin address is refused before binding.
    let out = Command::new(&relay)
        .args(common)
        .args(["--admin", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin_token"), "{err}");

    let (mut running, r) = start(
        &relay,
        &[
            &common[..],
            &["--admin", "127.0.0.1:0", "--admin-token", token],
        ]
        .concat(),
    );
    let url = format!("http://{}", r["admin"].as_str().unwrap());
    let skylane = |args: &[&str]| {
        Command::new(bins.join(exe_name("skylane")))
            .args(args)
            .output()
            .unwrap()
    };
    let out = skylane(&["status", &url, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["draining"], false, "{v}");
    let out = skylane(&["drain", &url]);
    assert!(!out.status.success(), "drained without the token");
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin token"));
    let out = skylane(&["drain", &url, "--admin-token", token]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("draining"));
    let t = std::time::Instant::now();
    while running.0.try_wait().unwrap().is_none() {
        assert!(
            t.elapsed().as_secs() < 10,
            "relay did not exit after the drain"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn loadgen_fails_when_a_class_or_the_spectators_were_all_refused() {
    let bins = bin_dir();
    let dir = tempfile::tempdir().unwrap();
    // An origin that refuses every bulk spray (2 KiB) as too large.
    let net = local_with(&bins, dir.path(), &["--max-payload", "1024"]);
    let (pki, r) = (net.pki.as_str(), &net.relay);
    let loadgen = |extra: &[&str]| {
        Command::new(bins.join(exe_name("skylane")))
            .args(["loadgen", "--relay", r["clients"].as_str().unwrap()])
            .args(["--ca", &format!("{pki}/ca.pem")])
            .args(["--token-key", &format!("{pki}/token.key")])
            .args(["--players", "3", "--ramp", "200ms", "--duration", "2s"])
            .args(["--bind", "127.0.0.1"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = loadgen(&["--mix", "movement=2,bulk=2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("every bulk action was refused"), "{err}");
    // Spectators asking for more delay than the relay serves are refused.
    let out = loadgen(&[
        "--mix",
        "movement=2",
        "--spectators",
        "2",
        "--spectator-delay",
        "300s",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("spectators were refused"), "{err}");
}

#[test]
fn loadgen_floods_on_request_and_the_edge_refuses_it() {
    let bins = bin_dir();
    let dir = tempfile::tempdir().unwrap();
    let net = local(&bins, dir.path());
    let relay_admin = net.relay["admin"].as_str().unwrap().to_owned();
    let out = Command::new(bins.join(exe_name("skylane")))
        .args(["loadgen", "--relay", net.relay["clients"].as_str().unwrap()])
        .args(["--ca", &format!("{}/ca.pem", net.pki)])
        .args(["--token-key", &format!("{}/token.key", net.pki)])
        .args(["--players", "3", "--cheaters", "1", "--flood", "chat=400"])
        .args(["--mix", "movement=5", "--ramp", "200ms", "--duration", "2s"])
        .args(["--bind", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics = http_get(&relay_admin, "/metrics");
    let refused = metric_sample(
        &metrics,
        "skylane_relay_edge_violations_total{kind=\"rate_limited\"}",
    );
    // Refused until the guard cut it (50 violations), then its subject is
    // refused at hello for its cool-down: its reconnect got no fresh burst.
    assert!(refused >= 50.0, "{refused} refused\n{metrics}");
    let cut = metric_sample(&metrics, "skylane_relay_edge_disconnects_total");
    let cooling = metric_sample(&metrics, "skylane_relay_edge_cooldown_refusals_total");
    assert!(
        cut >= 1.0 && cooling >= 1.0,
        "{cut} cut, {cooling} refused cooling down"
    );
}

/// One sample's value from Prometheus text.
fn metric_sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// `skylane world create|list|end` against an origin running an embedded
/// control plane (a one-box deployment): the world is placed on the origin,
/// owned at an epoch, listed, and ended; bad specs get a clear error.
#[test]
fn world_commands_create_list_and_end_rooms_on_an_embedded_control_plane() {
    let bins = bin_dir();
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki").to_str().unwrap().to_owned();
    let (_origin, o) = start(
        &bins.join(exe_name("skylane-origin")),
        &[
            "--dev-certs",
            &pki,
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--control",
            "embedded",
            "--node-id",
            "one-box",
            "--removal-grace-secs",
            "60",
        ],
    );
    let admin = o["admin"].as_str().unwrap().to_owned();
    let skylane = |args: &[&str]| {
        Command::new(bins.join(exe_name("skylane")))
            .args(args)
            .output()
            .unwrap()
    };
    let out = skylane(&[
        "world",
        "create",
        &admin,
        "--game",
        "tictactoe",
        "--capacity",
        "2",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("placed on one-box"), "{text}");
    assert!(text.contains("at epoch"), "{text}");
    // The owner publishes the room's first status right after claiming it.
    let mut listed = String::new();
    for _ in 0..50 {
        let out = skylane(&["world", "list", &admin]);
        assert!(out.status.success());
        listed = String::from_utf8_lossy(&out.stdout).into_owned();
        if listed.contains("tictactoe") && listed.contains("waiting") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(listed.contains("waiting"), "{listed}");
    let out = skylane(&["world", "end", &admin, "1000"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The room ends with the operator's reason.
    let mut ended = false;
    for _ in 0..50 {
        let out = skylane(&["world", "list", &admin]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("ended") && text.contains("operator") {
            ended = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(ended, "the world ended");
    // Bad input: an unknown game, a zero capacity, an unknown world.
    let out = skylane(&[
        "world",
        "create",
        &admin,
        "--game",
        "chess",
        "--capacity",
        "2",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("409") && err.contains("chess"), "{err}");
    let out = skylane(&[
        "world",
        "create",
        &admin,
        "--game",
        "tictactoe",
        "--capacity",
        "0",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("400"));
    let out = skylane(&["world", "end", &admin, "424242"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    // The origin's /status lists its worlds: the static arena and the room.
    let out = skylane(&["status", &admin, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["worlds"].as_array().map(Vec::len), Some(2), "{v}");
}
