//! The matchmaker service end to end on the local deployment (three relays,
//! two origins, the embedded control plane): players queue through the SDK,
//! worlds are placed where the estimates say, players connect with the
//! matchmaker's tokens through the relays it names and play; results update
//! ratings; bad tickets get typed errors; tickets survive a failover.

mod mm_support;

use std::collections::BTreeMap;
use std::time::Duration;

use skylane_client::{Client, ClientEvent, MatchError, Matchmaker};
use skylane_control::ClusterView;
use skylane_match::records::{decode, tickets_prefix, TicketRecord};
use skylane_proto::matchmaking::{ErrorKind, MatchFound, QueueRequest};
use skylane_proto::{Role, WorldPhase};
use skylane_tools::local::{LocalNet, LocalOptions};
use skylane_tools::matchmaking::{demo_games, start};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn local(origins: usize) -> LocalNet {
    let net = LocalNet::start(LocalOptions {
        origins,
        lease_ttl: Duration::from_secs(2),
        removal_grace: Duration::from_secs(2),
        ..LocalOptions::default()
    })
    .await
    .expect("local net");
    mm_support::published(&net, origins).await;
    net
}

async fn until_phase(c: &mut Client, phase: WorldPhase) {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match c.next_event().await {
                Some(ClientEvent::World(ws)) if ws.phase == phase => return,
                Some(ClientEvent::Error(e)) => panic!("{e}"),
                Some(_) => {}
                None => panic!("closed"),
            }
        }
    })
    .await
    .expect("in time");
}

/// The smallest worst-case RTT over origins for these players' tickets.
fn best_worst(view: &ClusterView, players: &[String]) -> u32 {
    let tickets: Vec<TicketRecord> = view
        .records_under(&tickets_prefix("default"))
        .filter_map(|(_, b)| decode::<TicketRecord>(b))
        .filter(|r| r.ticket.members.iter().any(|m| players.contains(&m.player)))
        .collect();
    let origins: Vec<&String> = tickets[0].ticket.rtt_ms.keys().collect();
    origins
        .iter()
        .map(|o| tickets.iter().map(|t| t.ticket.rtt_ms[*o]).max().unwrap())
        .min()
        .unwrap()
}

#[test]
fn players_queue_through_the_sdk_and_play_where_the_estimate_says() {
    runtime().block_on(async {
        let net = local(2).await;
        let dir = tempfile::tempdir().unwrap();
        let mm = start(
            &net,
            "mm-1",
            demo_games(),
            Duration::from_secs(2),
            Some(dir.path().join("ratings.redb")),
        )
        .await
        .expect("matchmaker");
        let url = format!("http://{}", mm.addr());
        let client = Matchmaker::new([url.clone()]).ca_pem(net.pki.ca_pem.clone());

        // Eight duellists queue at once: four matches.
        let mut set = tokio::task::JoinSet::new();
        for i in 0..8 {
            let (client, token) = (
                client.clone(),
                mm_support::token(&net, &format!("duel-{i}")),
            );
            set.spawn(async move {
                let mut t = client.queue(&token, "tictactoe", Vec::new()).await?;
                assert!(!t.status().ticket.is_empty());
                t.wait().await.map(|m| (format!("duel-{i}"), m))
            });
        }
        let mut found: BTreeMap<String, MatchFound> = BTreeMap::new();
        while let Some(r) = set.join_next().await {
            let (who, m) = r.unwrap().expect("matched");
            found.insert(who, m);
        }
        let view = net.control.view().await.unwrap();
        let mut worlds: BTreeMap<_, Vec<String>> = BTreeMap::new();
        for (who, m) in &found {
            worlds.entry(m.world).or_default().push(who.clone());
            let rec = &view.worlds[&m.world];
            assert_eq!(
                rec.placed_on, m.origin,
                "placed on the origin the match chose"
            );
            assert!(
                rec.owner.is_some(),
                "ready: owned before the players hear of it"
            );
            assert!(!m.relays.is_empty() && m.relays[0].estimated_rtt_ms.is_some());
            assert_eq!(m.teams.len(), 2);
            assert!(m.teams[m.team].contains(who));
        }
        assert_eq!(worlds.len(), 4, "{worlds:?}");
        for (w, players) in &worlds {
            assert_eq!(players.len(), 2);
            let m = &found[&players[0]];
            // The origin with the smallest worst-case RTT, or one within a
            // placement step of it (near-equal origins share the load).
            let best = best_worst(&view, players);
            assert!(
                m.worst_rtt_ms >= best
                    && u64::from(m.worst_rtt_ms) * 1000 / skylane_control::RTT_STEP_US
                        == u64::from(best) * 1000 / skylane_control::RTT_STEP_US,
                "{w}: worst RTT {} ms on {}, best {best} ms",
                m.worst_rtt_ms,
                m.origin
            );
        }

        // The two players of one match connect with its tokens and play.
        let players = worlds.values().next().unwrap().clone();
        let mut clients = Vec::new();
        for p in &players {
            let c = Client::builder()
                .matched(&found[p])
                .ca_pem(net.pki.ca_pem.clone())
                .connect()
                .await
                .expect("the matchmaker's token is accepted by the relay");
            clients.push(c);
        }
        for c in &mut clients {
            until_phase(c, WorldPhase::Playing).await;
        }
        // An operator ends it: a draw; both players' ratings are updated
        // once (their uncertainty shrinks).
        let world = found[&players[0]].world;
        let before = mm.rating(&players[0]).unwrap();
        net.control.end_world(world).await.unwrap();
        for c in &mut clients {
            until_phase(c, WorldPhase::Ended).await;
        }
        tokio::time::timeout(Duration::from_secs(10), async {
            while mm.rating(&players[0]).unwrap().sigma >= before.sigma {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the result updates the rating book");
        assert!(mm.rating(&players[1]).unwrap().sigma < before.sigma);
        assert_eq!(mm.stats().placed, 4);
    });
}

#[test]
fn parties_stay_together_and_bad_tickets_get_typed_errors() {
    runtime().block_on(async {
        let net = local(1).await;
        let mm = start(&net, "mm-1", demo_games(), Duration::from_secs(2), None)
            .await
            .unwrap();
        let client =
            Matchmaker::new([format!("http://{}", mm.addr())]).ca_pem(net.pki.ca_pem.clone());
        let kind = |r: Result<skylane_client::Queued, MatchError>| match r {
            Err(e) => e.kind(),
            Ok(t) => panic!("queued: {:?}", t.status()),
        };
        let ann = mm_support::token(&net, "ann");
        // Unknown game; a party larger than a team; a duplicate party member.
        assert_eq!(
            kind(client.queue(&ann, "chess", vec![]).await),
            Some(ErrorKind::UnknownGame)
        );
        assert_eq!(
            kind(
                client
                    .queue(&ann, "tictactoe", vec![mm_support::token(&net, "bob")])
                    .await
            ),
            Some(ErrorKind::PartyTooLarge)
        );
        assert_eq!(
            kind(
                client
                    .queue(&ann, "arena", vec![mm_support::token(&net, "ann")])
                    .await
            ),
            Some(ErrorKind::Duplicate)
        );
        // An expired token, a forged one, and none.
        let expired = net.token_for("old", Role::Player, vec![], Duration::ZERO);
        tokio::time::sleep(Duration::from_secs(7)).await; // past the 5 s leeway
        assert_eq!(
            kind(client.queue(&expired, "arena", vec![]).await),
            Some(ErrorKind::ExpiredToken)
        );
        let forged = net
            .matchmaker_tokens
            .issue(&skylane_proto::token::Claims::new(
                "eve",
                Role::Player,
                vec![],
                "skylane",
                0,
                u64::MAX / 2,
            ));
        assert_eq!(
            kind(client.queue(&forged.unwrap(), "arena", vec![]).await),
            Some(ErrorKind::BadToken),
            "world tokens the matchmaker issued are not queue tokens"
        );
        // No measurements: coordinates (or GeoIP) stand in; with neither
        // (an address GeoIP does not know) nothing estimates.
        let plain = Matchmaker::new([format!("http://{}", mm.addr())]);
        let by_coords = plain
            .queue_request(
                &mm_support::token(&net, "far"),
                QueueRequest {
                    game: "tictactoe".into(),
                    coords: Some((35.68, 139.69)),
                    ..QueueRequest::default()
                },
            )
            .await
            .expect("queued on coordinates");
        let mut by_coords = by_coords;
        by_coords.cancel().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let t = plain
                    .ticket(&mm_support::token(&net, "far"), by_coords.id())
                    .await
                    .unwrap();
                if t.status().state == skylane_proto::matchmaking::TicketState::Cancelled {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("cancelled by the leader");
        // GeoIP stands in for a client that sends neither: from Tokyo's
        // loopback network it is known, from 127.0.0.1 it is not.
        if net.regional_loopback {
            let body = r#"{"game":"tictactoe"}"#;
            let (code, text) = raw_post(
                mm.addr(),
                [127, 0, 3, 9],
                &mm_support::token(&net, "geo"),
                body,
            )
            .await;
            assert_eq!(code, 201, "{text}");
            let (code, text) = raw_post(
                mm.addr(),
                [127, 0, 0, 1],
                &mm_support::token(&net, "nowhere"),
                body,
            )
            .await;
            assert_eq!(code, 400, "{text}");
            assert!(text.contains("no_estimate"), "{text}");
        }
        // A party of two and two singles in arena (two teams of two): the
        // party shares a team.
        let party = client
            .queue(&ann, "arena", vec![mm_support::token(&net, "bob")])
            .await
            .unwrap();
        let party_id = party.id().to_owned();
        assert_eq!(
            kind(
                client
                    .queue(&mm_support::token(&net, "bob"), "arena", vec![])
                    .await
            ),
            Some(ErrorKind::Duplicate),
            "bob is queued in ann's party"
        );
        let mut waits = tokio::task::JoinSet::new();
        for (name, mut t) in [
            ("ann", party),
            (
                "cat",
                client
                    .queue(&mm_support::token(&net, "cat"), "arena", vec![])
                    .await
                    .unwrap(),
            ),
            (
                "dan",
                client
                    .queue(&mm_support::token(&net, "dan"), "arena", vec![])
                    .await
                    .unwrap(),
            ),
        ] {
            waits.spawn(async move { (name, t.wait().await.unwrap()) });
        }
        let mut seen = BTreeMap::new();
        while let Some(r) = waits.join_next().await {
            let (name, m) = r.unwrap();
            seen.insert(name, m);
        }
        let m = &seen["ann"];
        assert!(
            m.teams[m.team].contains(&"bob".to_string()),
            "{:?}",
            m.teams
        );
        assert_eq!(seen["cat"].world, m.world);
        // Bob follows the ticket ann queued and gets his own world token;
        // someone outside the party may not read it.
        let mut bob = client
            .ticket(&mm_support::token(&net, "bob"), &party_id)
            .await
            .unwrap();
        let found = bob.wait().await.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = net
            .matchmaker_tokens
            .verifier("skylane")
            .verify(&found.token, now)
            .unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.worlds.clone()),
            ("bob", vec![m.world])
        );
        assert_eq!(
            client
                .ticket(&mm_support::token(&net, "cat"), &party_id)
                .await
                .unwrap_err()
                .kind(),
            Some(ErrorKind::Forbidden)
        );
        assert_eq!(
            client
                .ticket(&ann, "0000000000000001")
                .await
                .unwrap_err()
                .kind(),
            Some(ErrorKind::NotFound)
        );
    });
}

#[test]
fn tickets_survive_a_matchmaker_failover() {
    runtime().block_on(async {
        let net = local(1).await;
        mm_support::tickets_survive_failover(&net).await;
    });
}

#[test]
fn the_cli_queues_two_players_into_one_duel() {
    runtime().block_on(async {
        let net = local(1).await;
        let mm = start(&net, "mm-1", demo_games(), Duration::from_secs(2), None)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &net.pki.ca_pem).unwrap();
        let mut runs = tokio::task::JoinSet::new();
        for who in ["cli-a", "cli-b"] {
            let args = vec![
                "match".to_string(),
                "queue".into(),
                "--matchmaker".into(),
                format!("http://{}", mm.addr()),
                "--token".into(),
                mm_support::token(&net, who),
                "--game".into(),
                "tictactoe".into(),
                "--ca".into(),
                ca.display().to_string(),
                "--play".into(),
                "--for".into(),
                "3s".into(),
            ];
            runs.spawn_blocking(move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_skylane"))
                    .args(&args)
                    .output()
                    .unwrap()
            });
        }
        let mut worlds = Vec::new();
        while let Some(out) = runs.join_next().await {
            let out = out.unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(
                out.status.success(),
                "{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let line = stdout
                .lines()
                .find(|l| l.starts_with("matched: world"))
                .unwrap();
            worlds.push(line.split_whitespace().nth(2).unwrap().to_owned());
            assert!(stdout.contains("Playing"), "{stdout}");
        }
        assert_eq!(worlds[0], worlds[1], "one duel");
    });
}

/// A raw HTTP/1.1 POST of `body` to `/tickets` from `from` (a loopback
/// address: what GeoIP sees), with `token`: status and body.
async fn raw_post(
    to: std::net::SocketAddr,
    from: [u8; 4],
    token: &str,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind((std::net::Ipv4Addr::from(from), 0).into())
        .unwrap();
    let mut s = sock.connect(to).await.unwrap();
    let req = format!(
        "POST /tickets HTTP/1.1\r\nHost: {to}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}
