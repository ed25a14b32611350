//! A world created through the origin's admin API (`POST /worlds`, as
//! `skylane world create` sends it) on the local deployment's embedded control
//! plane: a relay learns it by watching, two players fill it and play it to the
//! end, the result is published, the world is removed after its grace, and the
//! relays and the admin API forget it.

use std::time::Duration;

use skylane_client::{Client, ClientEvent};
use skylane_origin::{worlds_router, TttAction};
use skylane_proto::{EventClass, Outcome, RefusalCode, Role, WorldId, WorldPhase, WorldState};
use skylane_tools::local::{LocalNet, LocalOptions};

async fn http(method: &'static str, url: String, body: Option<String>) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build(),
        );
        let r = match (method, body) {
            ("POST", Some(b)) => agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(b),
            ("DELETE", _) => agent.delete(&url).call(),
            _ => agent.get(&url).call(),
        };
        let mut r = r.expect("the admin endpoint answers");
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().unwrap_or_default())
    })
    .await
    .unwrap()
}

async fn until_phase(c: &mut Client, phase: WorldPhase) -> WorldState {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match c.next_event().await {
                Some(ClientEvent::World(ws)) if ws.phase == phase => return ws,
                Some(ClientEvent::Error(e)) => panic!("{e}"),
                Some(_) => {}
                None => panic!("closed"),
            }
        }
    })
    .await
    .expect("in time")
}

#[test]
fn a_world_created_through_the_admin_api_is_learnt_played_ended_and_forgotten() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let opts = LocalOptions {
            removal_grace: Duration::from_secs(1),
            ..LocalOptions::default()
        };
        let net = LocalNet::start(opts).await.expect("local net");
        let admin = skylane_ops::serve_admin(
            "127.0.0.1:0".parse().unwrap(),
            worlds_router(net.control.clone()),
        )
        .await
        .unwrap();
        let base = format!("http://{admin}/worlds");
        let (status, body) = http(
            "POST",
            base.clone(),
            Some(r#"{"game":"tictactoe","tick_hz":10,"capacity":2}"#.into()),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let rec: serde_json::Value = serde_json::from_str(&body).unwrap();
        let w = WorldId(rec["id"].as_u64().unwrap());
        // A zoned world: created once every zone has an owner (the world's
        // own record never has one); a player joins it like any world.
        let zoned = r#"{"game":"arena","tick_hz":30,"capacity":100,"zones":{"layout":{"cols":10,"rows":10,"cell":100.0,"zones":[{"x0":0,"y0":0,"x1":5,"y1":10},{"x0":5,"y0":0,"x1":10,"y1":10}]},"hysteresis":10.0,"margin":20.0}}"#;
        // A layout that does not cut the arena's grid (8 × 8 cells of 100
        // against its 10 × 10) is refused before anything is placed.
        let bad = zoned.replace(r#""cols":10,"rows":10"#, r#""cols":8,"rows":8"#);
        let bad = bad.replace(r#""x1":10"#, r#""x1":8"#).replace(r#""y1":10"#, r#""y1":8"#);
        let (status, body) = http("POST", base.clone(), Some(bad)).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("is not arena's"), "{body}");
        let (status, body) = http("POST", base.clone(), Some(zoned.into())).await;
        assert_eq!(status, 201, "{body}");
        let zrec: serde_json::Value = serde_json::from_str(&body).unwrap();
        let zw = WorldId(zrec["id"].as_u64().unwrap());
        let v = net.control.view().await.unwrap();
        assert_eq!(v.worlds.len(), 4, "the world and its two zones besides the room");
        assert!(v.zones_of(zw).iter().all(|z| z.owner.is_some()));
        let zp = net
            .player_builder(0, 9)
            .unwrap()
            .token(net.token_for("zed", Role::Player, vec![zw], Duration::from_secs(600)))
            .world(zw)
            .connect()
            .await
            .expect("joins the zoned world");
        let o = zp
            .act(
                EventClass::State,
                vec![],
                skylane_origin::ArenaAction::Mark { x: 1.0, y: 1.0 }.encode(),
            )
            .await
            .expect("an outcome");
        assert!(matches!(o, Outcome::Applied { .. }), "{o:?}");
        zp.close().await;
        // Ending it ends every zone; after the grace its zones' records go,
        // and the world's own with the last of them.
        let (status, body) = http("DELETE", format!("{base}/{}", zw.0), None).await;
        assert_eq!(status, 202, "{body}");
        let mut zones_gone = false;
        for _ in 0..100 {
            let v = net.control.view().await.unwrap();
            if v.zones_of(zw).is_empty() && !v.worlds.contains_key(&zw) {
                zones_gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let v = net.control.view().await.unwrap();
        assert!(
            zones_gone,
            "the zoned world and its zones were removed: {:?}",
            v.worlds
                .values()
                .map(|r| (r.id, r.ending, r.status.phase, r.spec.zone_of))
                .collect::<Vec<_>>()
        );
        assert!(rec["owner"]["epoch"].as_u64().unwrap() > 0, "{rec}");
        assert_eq!(rec["placed_on"], "origin-1");

        let join = |i: usize, name: &str| {
            net.player_builder(i, i)
                .unwrap()
                .token(net.token_for(name, Role::Player, vec![w], Duration::from_secs(600)))
                .probe(1)
                .world(w)
                .connect()
        };
        let mut x = join(0, "xavier").await.expect("x joins through amsterdam");
        let mut o = join(1, "olga").await.expect("o joins through virginia");
        until_phase(&mut x, WorldPhase::Playing).await;
        until_phase(&mut o, WorldPhase::Playing).await;
        for (who, cell) in [(&x, 0u8), (&o, 3), (&x, 1), (&o, 4), (&x, 2)] {
            let payload = postcard::to_stdvec(&TttAction::Place { cell }).unwrap();
            let out = who
                .act(EventClass::State, vec![], payload.into())
                .await
                .unwrap();
            assert!(
                matches!(out, Outcome::Applied { .. }),
                "cell {cell}: {out:?}"
            );
        }
        let ended = until_phase(&mut o, WorldPhase::Ended).await;
        assert_eq!(ended.result.unwrap().winner.as_deref(), Some("xavier"));

        // Published, then removed after the grace; the relays forget it.
        let mut published = false;
        let mut gone = false;
        for _ in 0..100 {
            let (status, body) = http("GET", format!("{base}/{}", w.0), None).await;
            match status {
                200 => {
                    let r: serde_json::Value = serde_json::from_str(&body).unwrap();
                    if r["status"]["phase"] == "ended" {
                        assert_eq!(r["status"]["result"]["winner"], "xavier", "{r}");
                        published = true;
                    }
                }
                404 => {
                    gone = true;
                    break;
                }
                other => panic!("{other}: {body}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(published, "the result was published");
        assert!(gone, "the world was removed");
        tokio::time::sleep(Duration::from_millis(300)).await;
        for r in &net.relays {
            assert_eq!(
                r.metrics.worlds_known.get(),
                0,
                "relay {} forgot them all",
                r.info.id
            );
        }
        // Ending it again is a clear 404.
        let (status, body) = http("DELETE", format!("{base}/{}", w.0), None).await;
        assert_eq!(status, 404, "{body}");
        x.close().await;
        o.close().await;
        net.shutdown().await;
    });
}

/// `skylane ban add|list|remove` against an origin's admin API on the local
/// deployment's control plane: the banned player is refused by the relays
/// (with the reason) until the ban is lifted.
#[test]
fn a_ban_through_the_cli_refuses_the_player_on_the_relays_until_lifted() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let net = LocalNet::start(LocalOptions::default())
            .await
            .expect("local net");
        let admin = skylane_ops::serve_admin(
            "127.0.0.1:0".parse().unwrap(),
            worlds_router(net.control.clone()),
        )
        .await
        .unwrap();
        let url = format!("http://{admin}");
        let join = || {
            let b = net.player_builder(0, 0).unwrap().token(net.token_for(
                "griefer",
                Role::Player,
                vec![],
                Duration::from_secs(600),
            ));
            async move { b.connect().await }
        };
        join().await.expect("let in before the ban");
        let u = url.clone();
        let out = tokio::task::spawn_blocking(move || {
            let cli = |args: &[&str]| {
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_skylane"))
                    .arg("ban")
                    .args(args)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            let added = cli(&[
                "add", &u, "--sub", "griefer", "--for", "1h", "--reason", "griefing",
            ]);
            (added, cli(&["list", &u]))
        })
        .await
        .unwrap();
        assert!(out.0.contains("griefer"), "{}", out.0);
        assert!(out.1.contains("griefing"), "{}", out.1);
        tokio::time::sleep(Duration::from_millis(500)).await;
        match join().await {
            Err(skylane_client::ClientError::Refused { reason, .. }) => {
                assert!(reason.contains("griefing"), "{reason}")
            }
            other => panic!("banned: {:?}", other.map(|_| ())),
        }
        let u = url.clone();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_skylane"))
                .args(["ban", "remove", &u, "griefer"])
                .output()
                .unwrap();
            assert!(out.status.success());
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        join().await.expect("let in once lifted");
        net.shutdown().await;
    });
}

/// An origin's kick sticks across the cluster: the flooder's subject goes on
/// the control plane's ban list (every relay refuses it, the one it never
/// used included, with `Sanctioned`), the evidence is in the origin's
/// violation store (`skylane violations`), and `skylane ban remove` lets it
/// back at once.
#[test]
fn a_kick_goes_on_the_cluster_ban_list_with_its_evidence_until_lifted() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let net = LocalNet::start(LocalOptions::default())
            .await
            .expect("local net");
        net.origin
            .handle()
            .attach_violations(
                skylane_origin::ViolationStore::open(&dir.path().join("v.redb"), 1000).unwrap(),
            )
            .unwrap();
        let admin = skylane_ops::serve_admin(
            "127.0.0.1:0".parse().unwrap(),
            worlds_router(net.control.clone())
                .merge(skylane_origin::violations_router(net.origin.handle())),
        )
        .await
        .unwrap();
        let url = format!("http://{admin}");
        let join = |relay: usize| {
            let b = net
                .player_builder(0, 0)
                .unwrap()
                .relays([net.relays[relay].addr])
                .token(net.token_for("flooder", Role::Player, vec![], Duration::from_secs(600)));
            async move { b.connect().await }
        };
        let c = join(0).await.expect("let in before the kick");
        // 230 actions at once, within every class's edge burst: the edge
        // passes them all, the origin's detector (120 a second) kicks.
        let kicks = || skylane_ops::counted(&net.origin_metrics.sanctions, "kick");
        for _ in 0..10 {
            for (class, n) in [
                (EventClass::Critical, 60),
                (EventClass::State, 60),
                (EventClass::Movement, 110),
            ] {
                for _ in 0..n {
                    let _ = c.send(class, vec![7u8; 8].into());
                }
            }
            tokio::time::sleep(Duration::from_millis(1500)).await;
            if kicks() > 0 {
                break;
            }
        }
        assert_eq!(kicks(), 1, "kicked");
        let kicked = tokio::time::Instant::now();
        let listed = loop {
            let v = net.control.view().await.unwrap();
            if let Some(b) = v.bans.get("flooder") {
                break b.clone();
            }
            assert!(
                kicked.elapsed() < Duration::from_secs(1),
                "on the list within 1 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(listed.reason.contains("kick"), "{listed:?}");
        let last = net.relays.len() - 1;
        for relay in [0, last] {
            match join(relay).await {
                Err(skylane_client::ClientError::Refused {
                    code: RefusalCode::Sanctioned,
                    reason,
                }) => assert!(reason.contains("ActionRate"), "{reason}"),
                other => panic!("kicked: {:?}", other.map(|_| ())),
            }
        }
        let u = url.clone();
        let (violations, list) = tokio::task::spawn_blocking(move || {
            let cli = |args: &[&str]| {
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_skylane"))
                    .args(args)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            let mut v = String::new();
            for _ in 0..50 {
                v = cli(&["violations", &u, "--player", "flooder", "--since", "1h"]);
                if v.contains("action_rate") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let list = cli(&["ban", "list", &u]);
            cli(&["ban", "remove", &u, "flooder"]);
            (v, list)
        })
        .await
        .unwrap();
        assert!(
            violations.contains("flooder") && violations.contains("action_rate"),
            "{violations}"
        );
        assert!(violations.contains("-> kick"), "{violations}");
        assert!(list.contains("flooder"), "{list}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        join(last).await.expect("let in once lifted");
        net.shutdown().await;
    });
}
