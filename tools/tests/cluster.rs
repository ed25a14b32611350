//! The cluster tier: the whole local deployment (origin, three relays) on a real
//! etcd (feature `etcd`; needs the `etcd` binary from Debian's `etcd-server`).
//! Rooms are placed through etcd, relays learn them by watching, bots play them
//! to the end; then etcd goes away while a room runs, and the room keeps
//! running until the origin's lease could have lapsed, pauses, and resumes when
//! etcd is back. And a room fails over: its primary crashes, its standby takes
//! it over under a higher epoch. Last, with real `skylane-origin` processes
//! (built first: `cargo build -p skylane-origin --features etcd`), a primary
//! stopped with SIGSTOP past its lease is replaced, and on SIGCONT writes
//! nothing more and steps down. The rooms queue through a matchmaker whose
//! tickets and leadership live in etcd, and its tickets survive a failover.

#![cfg(feature = "etcd")]

mod mm_support;

use std::sync::Arc;
use std::time::Duration;

use skylane_client::ClientEvent;
use skylane_control::{Etcd, LocalEtcd, PlacementHints, SharedControl, WorldSpec};
use skylane_proto::{Role, WorldPhase};
use skylane_tools::local::{LocalNet, LocalOptions};
use skylane_tools::rooms::{self, RoomsPlan};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn net_on(etcd: &LocalEtcd, prefix: &str, ttl: Duration) -> (LocalNet, SharedControl) {
    let control: SharedControl = Arc::new(Etcd::connect(etcd.config(prefix)).await.unwrap());
    let opts = LocalOptions {
        control: Some(control.clone()),
        lease_ttl: ttl,
        ..LocalOptions::default()
    };
    let net = LocalNet::start(opts).await.expect("local net");
    (net, control)
}

#[test]
fn rooms_are_placed_learnt_played_and_recorded_through_etcd() {
    runtime().block_on(async {
        let etcd = LocalEtcd::start().await.expect("etcd");
        let (net, control) = net_on(&etcd, "/skylane/rooms", Duration::from_secs(5)).await;
        let regions = net.relays.len();
        let plan = RoomsPlan {
            tictactoe: 4,
            arena: 1,
            every: Duration::from_millis(100),
            duration: Duration::from_secs(3),
        };
        let ttl = Duration::from_secs(600);
        // The rooms' bots queue through a matchmaker whose tickets and
        // leadership live in etcd.
        mm_support::published(&net, 1).await;
        let mm = skylane_tools::matchmaking::start(
            &net,
            "mm-etcd",
            skylane_tools::matchmaking::demo_games(),
            Duration::from_secs(5),
            None,
        )
        .await
        .expect("matchmaker");
        let client = skylane_client::Matchmaker::new([format!("http://{}", mm.addr())])
            .ca_pem(net.pki.ca_pem.clone());
        let report = rooms::run(control.clone(), client, plan, |room, k| {
            let j = room * 4 + k;
            let name = format!("r{room}-{k}");
            let builder = net
                .player_builder(j % regions, j / regions)
                .map_err(|e| e.to_string())?
                .probe(1);
            Ok(rooms::RoomBot {
                token: net.token(&name, Role::Player, ttl),
                name,
                builder,
                coords: None,
            })
        })
        .await;
        assert_eq!(report.matchmaking.matched, 12, "{report:?}");
        assert!(v_leader(&control).await.is_some());
        assert!(report.errors.is_empty(), "{report:?}");
        assert_eq!(report.created.values().sum::<u64>(), 5, "{report:?}");
        assert_eq!(report.started, 5, "{report:?}");
        assert_eq!(report.ended, 5, "{report:?}");
        assert_eq!(report.unfinished, 0, "{report:?}");
        assert_eq!(report.moves_refused, 0, "{report:?}");
        assert_eq!(report.results.get("operator"), Some(&1), "{report:?}");
        // The owner published every result to etcd, fenced by its epoch.
        assert_eq!(report.results_recorded, 5, "{report:?}");
        let v = control.view().await.unwrap();
        assert!(v
            .worlds
            .values()
            .all(|w| w.owner.as_ref().is_some_and(|o| o.epoch > 0)));
        assert_eq!(v.relays().count(), 3, "every relay registered");
        net.shutdown().await;
    });
}

async fn v_leader(control: &SharedControl) -> Option<String> {
    control
        .view()
        .await
        .unwrap()
        .leaders
        .get("matchmaker/default")
        .cloned()
}

#[test]
fn matchmaking_tickets_survive_a_failover_on_etcd() {
    runtime().block_on(async {
        let etcd = LocalEtcd::start().await.expect("etcd");
        let (net, _control) = net_on(&etcd, "/skylane/mm", Duration::from_secs(2)).await;
        mm_support::published(&net, 1).await;
        mm_support::tickets_survive_failover(&net).await;
        net.shutdown().await;
    });
}

#[test]
fn an_etcd_outage_leaves_running_worlds_running_until_the_lease_could_lapse() {
    runtime().block_on(async {
        let mut etcd = LocalEtcd::start().await.expect("etcd");
        let ttl = Duration::from_secs(3);
        let (net, control) = net_on(&etcd, "/skylane/outage", ttl).await;
        let w = control
            .create_world(
                WorldSpec {
                    min_players: 1,
                    start_after_ms: 100,
                    ..WorldSpec::new("arena", 20, 4)
                },
                &PlacementHints::default(),
            )
            .await
            .unwrap()
            .id;
        let mut c = net
            .player_builder(0, 0)
            .unwrap()
            .token(net.token_for("p", Role::Player, vec![w], Duration::from_secs(600)))
            .probe(1)
            .world(w)
            .connect()
            .await
            .expect("joins the room");
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(ClientEvent::World(ws)) = c.next_event().await {
                    if ws.phase == WorldPhase::Playing {
                        return;
                    }
                }
            }
        })
        .await
        .expect("the room starts");
        let ticks = || net.origin_metrics.ticks.get();
        let writable = || net.origin_metrics.lease_writable.get();

        etcd.kill().await;
        let down = tokio::time::Instant::now();
        // Within the lease, the data path does not notice.
        let t0 = ticks();
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert_eq!(writable(), 1, "still writable within the lease");
        assert!(ticks() > t0 + 10, "worlds keep ticking while etcd is away");
        // Once the lease could have lapsed, the owner stops writing.
        while writable() == 1 {
            assert!(
                down.elapsed() < ttl + Duration::from_secs(2),
                "never paused"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            down.elapsed() < ttl,
            "paused before the lease could lapse ({:?})",
            down.elapsed()
        );
        let paused_at = ticks();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(ticks() <= paused_at + 2, "no ticks while paused");

        // etcd returns: the lease is renewed (or re-granted and the world
        // re-claimed) and the world ticks again.
        etcd.resume().await.unwrap();
        tokio::time::timeout(Duration::from_secs(20), async {
            while writable() == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("writable again");
        let t1 = ticks();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(ticks() > t1 + 5, "the world resumed");
        let v = control.view().await.unwrap();
        assert!(
            v.worlds.get(&w).and_then(|r| r.owner.as_ref()).is_some(),
            "owned again"
        );
        net.shutdown().await;
    });
}

/// What a player saw: its events' sequence numbers per channel and the
/// highest owner epoch of the world states it was sent.
#[derive(Default)]
struct Seen {
    seqs: std::collections::HashMap<skylane_proto::ChannelId, Vec<u64>>,
    epoch: u64,
}

impl Seen {
    /// Every channel's sequence has no gap and no duplicate.
    fn assert_continuous(&self) {
        for (c, s) in &self.seqs {
            assert!(
                s.windows(2).all(|p| p[1] == p[0] + 1),
                "{c}: continuous {s:?}"
            );
        }
    }
}

/// A tic-tac-toe room with one standby, placed through the control plane.
async fn room_with_a_standby(control: &SharedControl) -> skylane_control::WorldRecord {
    let rec = control
        .create_world(
            WorldSpec {
                standbys: Some(1),
                ..WorldSpec::new("tictactoe", 10, 2)
            },
            &PlacementHints::default(),
        )
        .await
        .unwrap();
    assert_eq!(rec.standbys.len(), 1, "{rec:?}");
    rec
}

/// Waits up to 20 s for `c`'s next world state matching `f`, recording what it
/// saw meanwhile; a world state from an owner older than one already seen (a
/// deposed primary's) fails the test.
async fn await_state(
    c: &mut skylane_client::Client,
    seen: &mut Seen,
    f: impl Fn(&skylane_proto::WorldState) -> bool,
) -> skylane_proto::WorldState {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match c.next_event().await {
                Some(ClientEvent::World(ws)) => {
                    assert!(
                        ws.epoch >= seen.epoch,
                        "a state from epoch {} after epoch {}",
                        ws.epoch,
                        seen.epoch
                    );
                    seen.epoch = ws.epoch;
                    if f(&ws) {
                        return ws;
                    }
                }
                Some(ClientEvent::Event(e)) => seen.seqs.entry(e.channel).or_default().push(e.seq),
                Some(ClientEvent::ResumeIncomplete { .. }) => panic!("told of a loss"),
                Some(ClientEvent::Error(e)) => panic!("client failed: {e}"),
                Some(_) => {}
                None => panic!("client closed"),
            }
        }
    })
    .await
    .expect("the state in time")
}

/// Waits up to 20 s until `status` (the primary's view of world replication)
/// shows a standby following: a world's outputs wait for a standby's
/// acknowledgement only once one follows (until then it runs unreplicated, as
/// docs/architecture.md says), so a failover scenario starts from there.
async fn await_following<F, Fut>(status: F, diag: impl Fn() -> String)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<serde_json::Value>>,
{
    let r = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let st = status().await;
            if st
                .as_ref()
                .and_then(|s| s["standbys"].as_array())
                .is_some_and(|a| !a.is_empty())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(r.is_ok(), "no standby follows the world\n{}", diag());
}

/// Places `cell` for `c`; its outcome within 20 s.
async fn place(c: &skylane_client::Client, cell: u8) -> skylane_proto::Outcome {
    let payload = postcard::to_stdvec(&skylane_origin::TttAction::Place { cell }).unwrap();
    let act = c.act(skylane_proto::EventClass::State, vec![], payload.into());
    tokio::time::timeout(Duration::from_secs(20), act)
        .await
        .expect("answered")
        .expect("answer")
}

/// The failover scenario on a real etcd: two origins, a tic-tac-toe room with
/// a standby; its primary crashes mid-game; the standby takes the room over
/// under a higher epoch (etcd's owner-key revision) and the game finishes from
/// the same board, every channel continuous.
#[test]
fn a_room_fails_over_to_its_standby_through_etcd() {
    runtime().block_on(async {
        let etcd = LocalEtcd::start().await.expect("etcd");
        let control: SharedControl = Arc::new(
            Etcd::connect(etcd.config("/skylane/failover"))
                .await
                .unwrap(),
        );
        let ttl = Duration::from_secs(3);
        let net = LocalNet::start(LocalOptions {
            control: Some(control.clone()),
            lease_ttl: ttl,
            origins: 2,
            ..LocalOptions::default()
        })
        .await
        .expect("local net");
        let rec = room_with_a_standby(&control).await;
        let w = rec.id;
        let token_ttl = Duration::from_secs(600);
        let join = |name: &'static str, k: usize| {
            let b = net
                .player_builder(k % net.relays.len(), k)
                .unwrap()
                .token(net.token_for(name, Role::Player, vec![w], token_ttl))
                .probe(1)
                .world(w);
            async move { b.connect().await.expect("joins") }
        };
        let mut x = join("xavier", 0).await;
        let mut o = join("olga", 1).await;
        let (mut sx, mut so) = (Seen::default(), Seen::default());
        let playing = |ws: &skylane_proto::WorldState| ws.phase == WorldPhase::Playing;
        let first = await_state(&mut x, &mut sx, playing).await;
        await_state(&mut o, &mut so, playing).await;
        let primary = net
            .origin_server(&rec.placed_on)
            .expect("placed on a local origin");
        await_following(
            || async {
                let st = primary.handle().world_status(w).await;
                st.and_then(|s| serde_json::to_value(s).ok())
            },
            String::new,
        )
        .await;
        // Two moves, acknowledged by the standby before they are answered.
        for (c, cell) in [(&x, 0), (&o, 3)] {
            let r = place(c, cell).await;
            assert!(matches!(r, skylane_proto::Outcome::Applied { .. }), "{r:?}");
        }

        assert!(net.crash_origin(&rec.placed_on), "the primary crashes");
        let crashed = tokio::time::Instant::now();
        let moved = |ws: &skylane_proto::WorldState| ws.epoch > first.epoch;
        await_state(&mut x, &mut sx, moved).await;
        let took = crashed.elapsed();
        await_state(&mut o, &mut so, moved).await;
        assert!(took < ttl + Duration::from_secs(2), "took {took:?}");
        for (c, cell) in [(&x, 1), (&o, 4), (&x, 2)] {
            let r = place(c, cell).await;
            assert!(matches!(r, skylane_proto::Outcome::Applied { .. }), "{r:?}");
        }
        let ended = |ws: &skylane_proto::WorldState| ws.phase == WorldPhase::Ended;
        let end = await_state(&mut x, &mut sx, ended).await;
        await_state(&mut o, &mut so, ended).await;
        assert_eq!(
            end.result.and_then(|r| r.winner).as_deref(),
            Some("xavier"),
            "both moves before the crash survived"
        );
        for seen in [&sx, &so] {
            seen.assert_continuous();
        }
        println!(
            "etcd failover: crash -> new owner at the players in {took:?} (lease TTL {ttl:?})"
        );
        net.shutdown().await;
    });
}

/// A loopback UDP port nothing is bound to (for servers that advertise the
/// address they listen on).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .unwrap()
        .port()
}

/// A running `skylane-origin` process (killed when dropped, so a failed test
/// leaves nothing behind).
struct OriginProcess {
    id: String,
    child: std::process::Child,
    admin: std::net::SocketAddr,
    journals: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl OriginProcess {
    /// The origin binary built beside this package's `skylane` (the cluster
    /// tier builds it first: `cargo build -p skylane-origin --features etcd`).
    fn binary() -> std::path::PathBuf {
        let bin = std::path::Path::new(env!("CARGO_BIN_EXE_skylane"))
            .with_file_name(format!("skylane-origin{}", std::env::consts::EXE_SUFFIX));
        assert!(
            bin.exists(),
            "{} is missing: run `cargo build -p skylane-origin --features etcd --locked` first (the README's Cluster section)",
            bin.display()
        );
        bin
    }

    /// Starts origin `id` on etcd (lease TTL `ttl_secs`), sharing the
    /// development PKI in `pki`; returns once it listens.
    fn spawn(id: &str, dir: &std::path::Path, etcd: &str, prefix: &str, ttl_secs: u64) -> Self {
        use std::io::BufRead;
        // The address relays and standbys reach it at is advertised, so it
        // is chosen here rather than by the kernel at bind time.
        let port = free_udp_port();
        let journals = dir.join(format!("{id}-journals"));
        let log = dir.join(format!("{id}.log"));
        let mut child = std::process::Command::new(Self::binary())
            .env("RUST_LOG", "info")
            .args(["--dev-certs", dir.join("pki").to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin", "127.0.0.1:0", "--node-id", id])
            .args([
                "--control",
                "etcd",
                "--etcd",
                etcd,
                "--cluster-prefix",
                prefix,
            ])
            .args(["--lease-ttl-secs", &ttl_secs.to_string()])
            .args(["--world-journals", journals.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            panic!(
                "{id} did not start: {line:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        // Nothing else is printed on stdout; keep the pipe drained anyway.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        Self {
            id: id.into(),
            child,
            admin: v["admin"].as_str().unwrap().parse().unwrap(),
            journals,
            log,
        }
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {}", self.id);
    }

    /// `GET path` on its admin endpoint: the JSON body.
    async fn get(&self, path: &str) -> serde_json::Value {
        let url = format!("http://{}{path}", self.admin);
        tokio::task::spawn_blocking(move || {
            ureq::get(&url)
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default()
        })
        .await
        .unwrap()
    }

    /// Stops it gracefully (its journals flushed) and waits for it.
    fn terminate(mut self) {
        self.signal("-TERM");
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "{} exited with {status:?}\n{}",
            self.id,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

/// The origins' logs, for a failure message.
fn logs(origins: &[OriginProcess]) -> String {
    origins
        .iter()
        .map(|o| {
            let log = std::fs::read_to_string(&o.log).unwrap_or_default();
            format!("--- {} ---\n{log}", o.id)
        })
        .collect()
}

impl Drop for OriginProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pause scenario with real processes: two `skylane-origin` processes on
/// etcd, a relay following etcd, two players. The room's primary is stopped
/// (`SIGSTOP`) for longer than its lease; its standby takes the room over and
/// the game goes on. Then the old primary resumes (`SIGCONT`) with its timers
/// overdue and its tick due: it writes nothing more (its journal ends where the
/// pause began, no player sees an event or a state from it), and it steps
/// down (the control plane names the other origin as owner).
#[test]
fn a_paused_primary_process_steps_down_and_its_late_writes_reach_nobody() {
    runtime().block_on(async {
        let etcd = LocalEtcd::start().await.expect("etcd");
        let prefix = "/skylane/pause";
        let ttl = 2u64;
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        skylane_certs::DevCa::write_dev_pki(&pki, &[]).unwrap();
        let mut origins = vec![
            OriginProcess::spawn("pa", dir.path(), &etcd.endpoint(), prefix, ttl),
            OriginProcess::spawn("pb", dir.path(), &etcd.endpoint(), prefix, ttl),
        ];

        let relay_cfg = skylane_relay::RelayConfig {
            // Clients are directed to the address the relay advertises.
            listen: ([127, 0, 0, 1], free_udp_port()).into(),
            admin: ([127, 0, 0, 1], 0).into(),
            dev_certs: Some(pki.clone()),
            control: skylane_control::ControlKind::Etcd,
            etcd: vec![etcd.endpoint()],
            cluster_prefix: prefix.into(),
            lease_ttl_secs: ttl,
            ..skylane_relay::RelayConfig::default()
        };
        relay_cfg.validate().unwrap();
        let metrics = skylane_relay::RelayMetrics::new(&mut Default::default());
        let relay = skylane_relay::Relay::load(&relay_cfg, metrics).unwrap();
        let control: SharedControl = Arc::new(Etcd::connect(etcd.config(prefix)).await.unwrap());
        relay
            .follow(
                control.clone(),
                relay_cfg.cluster_node(),
                Duration::from_secs(ttl),
            )
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(20), async {
            while control.view().await.unwrap().nodes.len() < 3 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("both origins and the relay registered");

        let rec = room_with_a_standby(&control).await;
        let w = rec.id;
        let owned = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let v = control.view().await.unwrap();
                if v.worlds.get(&w).is_some_and(|r| r.owner.is_some()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(owned.is_ok(), "the room is claimed\n{}", logs(&origins));
        // The servers' attestation keys are published: each origin's own
        // (made in the development PKI per node), so players can check that
        // two servers attested their events.
        let status = origins[0].get(&format!("/worlds/{}/status", w.0)).await;
        let keys: Vec<skylane_proto::ed25519_dalek::VerifyingKey> = ["pa", "pb"]
            .iter()
            .map(|n| {
                let hex = status["attestation_keys"][n].as_str().unwrap_or_else(|| panic!("{status}"));
                let bytes: Vec<u8> = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                    .collect();
                skylane_proto::ed25519_dalek::VerifyingKey::from_bytes(&bytes.try_into().unwrap())
                    .unwrap()
            })
            .collect();
        assert_ne!(keys[0], keys[1]);
        assert!(pki.join("attest-pa.key").exists() && pki.join("attest-pb.key").exists());
        let tokens = skylane_proto::TokenSigner::from_pem(
            &std::fs::read_to_string(pki.join("token.key")).unwrap(),
        )
        .unwrap();
        let ca = std::fs::read_to_string(pki.join("ca.pem")).unwrap();
        let origin_key = {
            use skylane_proto::ed25519_dalek::pkcs8::DecodePublicKey as _;
            let pem = std::fs::read_to_string(pki.join("origin-signing.pub")).unwrap();
            skylane_proto::ed25519_dalek::VerifyingKey::from_public_key_pem(&pem).unwrap()
        };
        let join = |name: &'static str| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let token = tokens
                .issue(&skylane_proto::Claims::new(
                    name,
                    Role::Player,
                    vec![w],
                    &relay_cfg.audience,
                    now,
                    600,
                ))
                .unwrap();
            let b = skylane_client::Client::builder()
                .world(w)
                .ca_pem(ca.clone())
                .directory(relay.local_addr())
                .token(token)
                .probe(1)
                .origin_key(origin_key)
                .cosigner_key(keys[0])
                .cosigner_key(keys[1]);
            let logs = logs(&origins);
            async move {
                b.connect()
                    .await
                    .unwrap_or_else(|e| panic!("{name} joins: {e}\n{logs}"))
            }
        };
        let mut x = join("xavier").await;
        let mut o = join("olga").await;
        let (mut sx, mut so) = (Seen::default(), Seen::default());
        let playing = |ws: &skylane_proto::WorldState| ws.phase == WorldPhase::Playing;
        let first = await_state(&mut x, &mut sx, playing).await;
        await_state(&mut o, &mut so, playing).await;
        let k = origins
            .iter()
            .position(|p| p.id == rec.placed_on)
            .expect("placed on one of the two");
        let primary = &origins[k];
        let path = format!("/worlds/{}/status", w.0);
        await_following(
            || async { Some(primary.get(&path).await["replication"].clone()) },
            || logs(&origins),
        )
        .await;
        for (c, cell) in [(&x, 0), (&o, 3)] {
            let r = place(c, cell).await;
            assert!(matches!(r, skylane_proto::Outcome::Applied { .. }), "{r:?}");
        }

        let old = origins.remove(k);
        let new = origins.pop().unwrap();
        let before = old.get(&format!("/worlds/{}/status", w.0)).await;
        let paused_at_tick = before["replication"]["tick"].as_u64().expect("hosted");
        old.signal("-STOP");
        let stopped = tokio::time::Instant::now();
        let moved = |ws: &skylane_proto::WorldState| ws.epoch > first.epoch;
        await_state(&mut x, &mut sx, moved).await;
        let took = stopped.elapsed();
        await_state(&mut o, &mut so, moved).await;

        // Resume it well after its lease lapsed, mid-game.
        tokio::time::sleep_until(stopped + Duration::from_secs(ttl + 2)).await;
        old.signal("-CONT");
        for (c, cell) in [(&x, 1), (&o, 4), (&x, 2)] {
            let r = place(c, cell).await;
            assert!(matches!(r, skylane_proto::Outcome::Applied { .. }), "{r:?}");
        }
        let ended = |ws: &skylane_proto::WorldState| ws.phase == WorldPhase::Ended;
        let end = await_state(&mut x, &mut sx, ended).await;
        await_state(&mut o, &mut so, ended).await;
        assert_eq!(
            end.result.and_then(|r| r.winner).as_deref(),
            Some("xavier"),
            "both moves before the pause survived"
        );
        for seen in [&sx, &so] {
            seen.assert_continuous();
        }
        for c in [&x, &o] {
            let st = c.stats();
            assert!(
                st.attested_checkpoints >= 1,
                "co-signed by a standby whose key the control plane published: {} attested, {} not",
                st.attested_checkpoints,
                st.unattested_checkpoints
            );
        }

        // It stepped down: the other origin owns the room, under a higher epoch.
        let v = control.view().await.unwrap();
        let owner = v.worlds[&w].owner.clone().expect("owned");
        assert_eq!(owner.node, new.id, "{owner:?}");
        assert!(owner.epoch > first.epoch);
        let after = old.get(&format!("/worlds/{}/status", w.0)).await;
        assert_eq!(
            after["record"]["owner"]["node"].as_str(),
            Some(new.id.as_str()),
            "the resumed origin sees the new owner: {after}"
        );
        assert!(
            after["replication"]["epoch"].as_u64().is_none_or(|e| e < owner.epoch
                && after["replication"]["tick"].as_u64() <= Some(paused_at_tick + 1)),
            "the resumed origin runs no stale copy: {after}"
        );

        // Its journal ends where the pause began: no tick written after it.
        let journal = old.journals.join(format!("world-{}.redb", w.0));
        // The new owner journaled what it re-executed as a standby and what
        // it ran since: one log from the snapshot it started from.
        let taken = new
            .journals
            .join(format!("world-{}-from-{}.redb", w.0, first.epoch));
        let old_log = old.log.clone();
        old.terminate();
        new.terminate();
        let (j, _) = skylane_origin::Journal::open(&journal).unwrap();
        let last = j
            .inputs(0)
            .unwrap()
            .into_iter()
            .filter_map(|(_, i)| match i {
                skylane_proto::Input::Tick { tick, .. } => Some(tick),
                _ => None,
            })
            .max()
            .expect("ticks journaled before the pause");
        assert!(
            last <= paused_at_tick + 1,
            "journaled tick {last} after the pause began at tick {paused_at_tick}\n{}",
            std::fs::read_to_string(old_log).unwrap_or_default()
        );
        let (j, meta) = skylane_origin::Journal::open(&taken).unwrap();
        let report = skylane_origin::replay::<skylane_origin::TicTacToe>(&j, &meta).unwrap();
        assert!(report.divergence.is_none(), "{report:?}");
        assert!(report.ticks > 20, "ticks before and after the takeover: {report:?}");
        let moves = j
            .inputs(0)
            .unwrap()
            .into_iter()
            .filter(|(_, i)| matches!(i, skylane_proto::Input::Action { .. }))
            .count();
        // (Those before it too when the standby followed before they were made.)
        assert!(moves >= 3, "the moves made after the takeover, journaled: {moves}");
        println!(
            "process pause: SIGSTOP -> new owner at the players in {took:?} (lease TTL {ttl} s); the resumed primary's journal ends at tick {last} (paused at {paused_at_tick})"
        );
        relay.drain();
    });
}
