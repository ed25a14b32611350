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
        "--min-delay",
        "90s",
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
    assert_eq!(claims.min_delay_secs, Some(90), "the spectator's tier");
    assert_eq!(
        claims.jti.as_deref().map(str::len),
        Some(16),
        "an id to revoke it by"
    );
    // A tier is for spectators only.
    let player = skylane(&[
        "token",
        "issue",
        "--key",
        p(&key),
        "--sub",
        "bob",
        "--min-delay",
        "90s",
    ]);
    assert!(!player.status.success());
    assert!(String::from_utf8_lossy(&player.stderr).contains("spectator"));

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

#[test]
fn netsim_proxy_forwards_with_delay_and_obeys_stdin_commands() {
    use std::io::{BufRead, BufReader, Write};
    use std::net::UdpSocket;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let upstream = echo.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_skylane"))
        .args([
            "netsim-proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream.to_string(),
        ])
        .args(["--latency", "25ms", "--duration", "30s"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    let addr: std::net::SocketAddr = banner
        .split_whitespace()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in banner {banner:?}"));

    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let rtt = |client: &UdpSocket| {
        let t = Instant::now();
        client.send_to(b"hi", addr).unwrap();
        let mut buf = [0u8; 8];
        client.recv_from(&mut buf).map(|_| t.elapsed())
    };
    let first = rtt(&client).unwrap();
    assert!(first >= Duration::from_millis(50), "rtt {first:?}");

    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    writeln!(stdin, "partition").unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "partitioned");
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(rtt(&client).is_err(), "partitioned proxy forwarded");
    writeln!(stdin, "quit").unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    let mut stats = String::new();
    out.read_line(&mut stats).unwrap(); // "partitioned" was consumed; next is the final stats
    assert!(stats.contains("\"partitioned\":1"), "{stats}");
}

#[test]
fn replay_reports_a_consistent_journal_and_refuses_another_world() {
    use skylane_origin::*;
    use skylane_proto::{Action, ChainSigner, EventClass, Role, SessionId, WorldId};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.redb");
    {
        let arena = Arena::new(ArenaConfig::default());
        let meta = JournalMeta {
            world_kind: "arena".into(),
            world: WorldId(9),
            engine: EngineConfig::new(WorldId(9)),
            grid: arena.grid(),
        };
        let engine = Engine::new(
            arena,
            meta.grid,
            meta.engine,
            ChainSigner::from_bytes(&[1; 32]),
            0,
        );
        let mut p = Persistent::create(
            &path,
            &meta,
            engine,
            PersistConfig {
                snapshot_every: 10,
                hash_every: 1,
            },
        )
        .unwrap();
        p.handle_join(SessionId(1), "a", Role::Player, None)
            .unwrap();
        for seq in 1..=25u64 {
            let me = p
                .engine()
                .world()
                .player(p.engine().avatar(SessionId(1)).unwrap())
                .unwrap()
                .clone();
            let mv = ArenaAction::Move {
                x: me.x + 0.2,
                y: me.y,
            };
            p.handle_action(
                SessionId(1),
                Action {
                    class: EventClass::Movement,
                    seq,
                    client_time_us: 0,
                    reads: vec![],
                    payload: mv.encode(),
                },
            );
            let now = p.poll_timeout();
            p.handle_timeout(now).unwrap();
        }
        p.flush().unwrap();
    }
    let text = ok(&["replay", "--log", p(&path)]);
    assert!(
        text.contains("25 ticks") && text.contains("consistent"),
        "{text}"
    );
    let json = ok(&["replay", "--log", p(&path), "--world", "9", "--json"]);
    assert!(json.contains("\"divergence\":null"), "{json}");
    let wrong = skylane(&["replay", "--log", p(&path), "--world", "8"]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("not world-8"));
    // The situation at one tick: its one move, by its player, and the state.
    let at = ok(&["replay", "--log", p(&path), "--at-tick", "12"]);
    assert!(at.contains("at tick 12 (1 inputs during it)"), "{at}");
    assert!(at.contains("a (session-1) action seq 12 Movement"), "{at}");
    assert!(at.contains("state after it:"), "{at}");
    let json = ok(&["replay", "--log", p(&path), "--at-tick", "12", "--json"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["tick"], 12);
    assert_eq!(v["inputs"][0][0], "a");
    assert!(v["state"].is_object(), "{v}");
    let past = skylane(&["replay", "--log", p(&path), "--at-tick", "99"]);
    assert!(!past.status.success());
    assert!(String::from_utf8_lossy(&past.stderr).contains("does not hold tick 99"));
}

#[test]
fn geoip_build_writes_a_database_relays_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("regions.csv");
    std::fs::write(
        &csv,
        "network,city,latitude,longitude\n10.1.0.0/16,lisbon,38.72,-9.14\n",
    )
    .unwrap();
    let out = dir.path().join("regions.mmdb");
    let said = ok(&["geoip", "build", "--csv", p(&csv), "--out", p(&out)]);
    assert!(said.contains("1 networks"), "{said}");
    let db = skylane_relay::GeoDb::open(&out).unwrap();
    assert_eq!(db.locate("10.1.2.3".parse().unwrap()), Some((38.72, -9.14)));
    // A bad row names its line.
    std::fs::write(&csv, "network,city,latitude,longitude\nnope,x,1,2\n").unwrap();
    let bad = skylane(&["geoip", "build", "--csv", p(&csv), "--out", p(&out)]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("line 2"));
}

/// The README's first command, small: a whole network on loopback, bots playing,
/// the report as JSON, nothing lost, cheats caught, conflicts resolved; its
/// analytics written as Parquet hold every session, world and violation.
#[test]
fn demo_prints_a_json_report_with_nothing_lost() {
    let analytics = tempfile::tempdir().unwrap();
    let out = ok(&[
        "demo",
        "--analytics",
        p(analytics.path()),
        "--sample-actions",
        "1",
        "--duration",
        "4s",
        "--players",
        "12",
        "--cheaters",
        "3",
        "--verify-every",
        "2",
        "--spectators",
        "4",
        "--spectator-delay",
        "1s",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(r["mode"], "demo");
    assert_eq!(r["players"], 12);
    // Every player plays to the end, but the cheaters kicked for flooding:
    // those are kept out for their cool-down (refused on reconnecting).
    assert_eq!(
        r["playing"].as_u64().unwrap() + r["cheats"]["kept_out"].as_u64().unwrap(),
        12,
        "{r}"
    );
    assert!(r["errors"].as_array().unwrap().is_empty(), "{r}");
    // The players traded with consent, and the origin's ledger kept every total.
    let e = &r["economy"];
    assert!(e["offers"].as_u64().unwrap() > 0, "{r}");
    assert!(e["accepted"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(e["conserved"], true, "{r}");
    assert_eq!(e["refused"], 0, "{r}");
    assert_eq!(r["events_lost"], 0, "{r}");
    assert!(r["events_received"].as_u64().unwrap() > 1000, "{r}");
    assert!(
        r["latency"]["movement"]["p50_us"].as_u64().unwrap() > 0,
        "{r}"
    );
    assert!(
        r["action_rtt"]["state"]["count"].as_u64().unwrap() > 0,
        "{r}"
    );
    let cheats = &r["cheats"];
    assert!(cheats["attempted"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(cheats["caught"], cheats["attempted"], "{r}");
    assert_eq!(cheats["false_positives"], 0, "{r}");
    assert_eq!(r["conflicts"]["unresolved"], 0, "{r}");
    let relays = r["relays"].as_array().unwrap();
    assert_eq!(relays.len(), 3);
    let placed: u64 = relays.iter().map(|x| x["players"].as_u64().unwrap()).sum();
    assert_eq!(placed, 12, "{r}");
    // Two spectators live, two 1 s behind; none early, all watched.
    let a = &r["audience"];
    assert_eq!(a["spectators"], 4, "{r}");
    assert_eq!(a["failed"], 0, "{r}");
    let delays = a["delays"].as_array().unwrap();
    assert_eq!(
        delays
            .iter()
            .map(|d| d["delay_ms"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![0, 1000]
    );
    for d in delays {
        assert_eq!(d["early"], 0, "{r}");
        assert!(d["frames"].as_u64().unwrap() > 10, "{r}");
    }
    // Rooms formed by the matchmaker (bots queued; every match placed a
    // world on the embedded control plane): every tic-tac-toe room played to
    // its end, the arena rooms ended by the demo.
    let w = &r["worlds"];
    let mm = &w["matchmaking"];
    assert_eq!(mm["tickets"], 10 * 2 + 2 * 4, "{r}");
    assert_eq!(mm["matched"], mm["tickets"], "{r}");
    assert_eq!(mm["failed"], 0, "{r}");
    let created: u64 = w["created"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(created, 12, "{r}");
    assert_eq!(w["started"], 12, "{r}");
    assert_eq!(w["ended"], 12, "{r}");
    assert_eq!(w["unfinished"], 0, "{r}");
    assert_eq!(w["moves_refused"], 0, "{r}");
    assert_eq!(w["results"]["operator"], 2, "{r}");
    assert_eq!(w["results_recorded"], 12, "{r}");
    demo_analytics_match_the_run(analytics.path(), &r);
}

/// The demo's Parquet files, read back here with the `parquet` crate, hold
/// what the run did: a session per player, spectator and room bot, the
/// arena and its 12 rooms, the cheaters' violations, sampled actions.
fn demo_analytics_match_the_run(dir: &Path, r: &serde_json::Value) {
    use skylane_analytics::read_table;
    use skylane_analytics::schema::{
        ActionSampled, Match, SessionStarted, Ticket, Violation, WorldPhase,
    };
    let a = &r["analytics"];
    assert_eq!(a["in_files"], a["counted"], "{a}");
    assert_eq!(a["dropped"], 0, "{a}");
    assert_eq!(a["unreadable"], 0, "{a}");
    assert_eq!(
        a["unended"], 0,
        "every session a relay held has its end: {a}"
    );
    let sessions = read_table::<SessionStarted>(dir, "session_started").unwrap();
    let fresh = sessions.rows.iter().filter(|s| !s.resumed).count() as u64;
    assert_eq!(fresh, a["counted"]["sessions"].as_u64().unwrap());
    // 12 players, 4 spectators, 28 room bots (each queued once).
    let players = sessions
        .rows
        .iter()
        .filter(|s| s.role == "player" && !s.resumed);
    assert!(players.count() >= 12 + 28, "{a}");
    let spectators = sessions
        .rows
        .iter()
        .filter(|s| s.role == "spectator")
        .count();
    assert_eq!(spectators, 4, "{a}");
    let worlds = read_table::<WorldPhase>(dir, "world_phase").unwrap();
    let created = worlds.rows.iter().filter(|w| w.phase == "created").count();
    assert_eq!(created, 1 + 12, "the arena and its rooms: {a}");
    let ended: std::collections::BTreeSet<u64> = worlds
        .rows
        .iter()
        .filter(|w| w.phase == "ended")
        .map(|w| w.world)
        .collect();
    assert_eq!(ended.len(), 12, "every room ended: {a}");
    let violations = read_table::<Violation>(dir, "violation").unwrap();
    assert!(!violations.rows.is_empty(), "the cheaters were caught: {a}");
    assert_eq!(
        violations.rows.len() as u64,
        a["counted"]["violations"].as_u64().unwrap()
    );
    let actions = read_table::<ActionSampled>(dir, "action").unwrap();
    assert!(actions.rows.iter().any(|x| x.outcome == "applied"), "{a}");
    assert!(actions.rows.iter().all(|x| x.sample_every == 1));
    // The matchmaker's: every room bot's ticket matched, a match per room.
    let tickets = read_table::<Ticket>(dir, "ticket").unwrap();
    let matched = tickets
        .rows
        .iter()
        .filter(|t| t.outcome == "matched")
        .count();
    assert_eq!(matched, 10 * 2 + 2 * 4, "{a}");
    assert_eq!(read_table::<Match>(dir, "match").unwrap().rows.len(), 12);
    // The operator's view of the same files.
    let summary = ok(&["analytics", "summary", p(dir)]);
    assert!(summary.contains("sessions by region"), "{summary}");
    assert!(summary.contains("tictactoe 10"), "{summary}");
}

/// `--zones 2x2`: one arena world over four zones on two origins besides the
/// usual one; bots spawn anywhere (handed from the home zone to their
/// spawn's) and walk; the relays move their sessions without a reconnect;
/// every player ends in exactly one zone, every action answered once,
/// nothing lost; the main world's economy is untouched by the zones.
#[test]
fn demo_runs_a_zoned_world_over_two_origins_with_nothing_lost() {
    let out = ok(&[
        "demo",
        "--duration",
        "8s",
        "--players",
        "8",
        "--cheaters",
        "0",
        "--spectators",
        "0",
        "--rooms",
        "0",
        "--arena-rooms",
        "0",
        "--zones",
        "2x2",
        "--zone-players",
        "24",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    let z = &r["zones"];
    assert_eq!(z["zones"], 4, "{r}");
    assert_eq!(z["origins"], 2, "{r}");
    assert_eq!(z["playing"], 24, "{r}");
    assert!(z["handoffs"].as_u64().unwrap() > 0, "{r}");
    assert!(z["sessions_moved"].as_u64().unwrap() > 0, "{r}");
    assert!(z["handoff_ms"]["count"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(z["each_in_one_zone"], true, "{r}");
    let per_zone: u64 = z["players_per_zone"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(per_zone, 24, "{r}");
    assert_eq!(z["events_lost"], 0, "{r}");
    assert_eq!(z["reconnects"], 0, "{r}");
    assert_eq!(z["divergences"], 0, "{r}: every zone's standby agrees");
    assert_eq!(
        z["actions_answered"].as_u64().unwrap() + z["actions_unknown"].as_u64().unwrap(),
        z["actions_sent"].as_u64().unwrap(),
        "{r}"
    );
    assert_eq!(r["economy"]["conserved"], true, "{r}");
    assert_eq!(r["events_lost"], 0, "{r}");
}

/// Honest bots' moves go as datagrams, so no outcome would report one the origin
/// refused; the origin's rule counter must stay at 0 with no cheaters, even when a
/// bot's first step comes soon after its spawn (at 0.1 Hz a step is 10 s of
/// walking).
#[test]
fn honest_bots_break_no_rule_even_at_a_tenth_of_a_hertz() {
    let out = ok(&[
        "demo",
        "--duration",
        "8s",
        "--players",
        "16",
        "--cheaters",
        "0",
        "--rate",
        "0.1",
        "--spectators",
        "0",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(r["playing"], 16, "{r}");
    assert!(r["moves_sent_per_s"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(r["cheats"]["rule_violations"], 0, "{r}");
    assert_eq!(r["events_lost"], 0, "{r}");
}

/// `--kill-primary-at`: two origins, rooms with a standby each; the origin
/// holding a running room is killed mid-run; its rooms are taken over, every
/// room still finishes, and no room player misses or repeats an event.
#[test]
fn demo_kills_a_primary_and_its_rooms_fail_over_with_nothing_lost() {
    let out = ok(&[
        "demo",
        "--duration",
        "20s",
        "--players",
        "8",
        "--cheaters",
        "0",
        "--spectators",
        "0",
        "--rooms",
        "4",
        "--arena-rooms",
        "2",
        "--kill-primary-at",
        "2s",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    let w = &r["worlds"];
    let f = &w["failover"];
    assert_eq!(f["killed"], "origin-2", "{r}");
    assert!(
        f["worlds"].as_u64().unwrap() >= 1,
        "a room was running there: {r}"
    );
    assert_eq!(f["taken_over"], f["worlds"], "{r}");
    let max_ms = f["failover_ms"][1].as_f64().unwrap();
    assert!(max_ms <= 6_000.0, "within the 5 s lease TTL + 1 s: {r}");
    assert_eq!(w["events_lost"], 0, "{r}");
    assert_eq!(w["unfinished"], 0, "{r}");
    assert_eq!(w["moves_refused"], 0, "{r}");
    assert_eq!(r["events_lost"], 0, "{r}");
}

/// `skylane content publish` then `show`: packs from a directory under a
/// signed manifest; a second publication bumps the serial; a tampered
/// manifest or another key is refused.
#[test]
fn content_publish_and_show() {
    let keys = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let source = tempfile::tempdir().unwrap();
    ok(&["token", "keygen", "--out", p(keys.path())]);
    let key = keys.path().join("token.key");
    let public = keys.path().join("token.pub");
    std::fs::write(files.path().join("level1.pak"), b"level one").unwrap();
    std::fs::write(files.path().join("skins.pak"), b"skins").unwrap();
    let out = ok(&[
        "content",
        "publish",
        p(files.path()),
        "--version",
        "1.0",
        "--source",
        p(source.path()),
        "--key",
        p(&key),
        "--json",
    ]);
    let m: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(m["serial"], 1);
    assert_eq!(m["packs"]["level1.pak"]["size"], 9);
    std::fs::write(files.path().join("level1.pak"), b"level one, fixed").unwrap();
    ok(&[
        "content",
        "publish",
        p(files.path()),
        "--version",
        "1.1",
        "--source",
        p(source.path()),
        "--key",
        p(&key),
    ]);
    let shown = ok(&["content", "show", p(source.path()), "--pub", p(&public)]);
    assert!(shown.contains("serial 2"), "{shown}");
    assert!(
        shown.contains("level1.pak") && shown.contains("1.1"),
        "{shown}"
    );
    // Another operator's key does not verify it.
    let other = tempfile::tempdir().unwrap();
    ok(&["token", "keygen", "--out", p(other.path())]);
    let bad = skylane(&[
        "content",
        "show",
        p(source.path()),
        "--pub",
        p(&other.path().join("token.pub")),
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("signature"));
    // Nor does a tampered manifest.
    let mf = source.path().join("manifest.signed");
    let text = std::fs::read_to_string(&mf).unwrap();
    std::fs::write(&mf, text.replace("1.1", "1.2")).unwrap();
    let bad = skylane(&["content", "show", p(source.path()), "--pub", p(&public)]);
    assert!(!bad.status.success());
}
