//! Token keys over netsim: a relay watches its token key file, so keys rotate
//! without downtime (add the new public key, issue with the new private key,
//! retire the old one) while players keep connecting.

use std::time::Duration;

use skylane_client::ClientError;
use skylane_netsim::run;
use skylane_proto::{Claims, RefusalCode, Role, TokenKeyPair, TokenSigner};
use skylane_tests::{Net, NetOptions, WORLD};

/// Seconds since the Unix epoch, by this machine's clock.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A player `name` (the harness's token) connecting to `relay`.
async fn join(
    net: &Net,
    relay: std::net::SocketAddr,
    name: &str,
) -> Result<skylane_client::Client, ClientError> {
    let (_, b) = net.client_builder("paris", name);
    b.relays([relay]).connect().await
}

fn token(signer: &TokenSigner, who: &str) -> String {
    let now = unix_now();
    signer
        .issue(&Claims::new(
            who,
            Role::Player,
            vec![WORLD],
            "skylane",
            now,
            600,
        ))
        .unwrap()
}

/// Whether the relay ends `c`'s session within 5 s (its events run out, or
/// it reports the error).
async fn closed(c: &mut skylane_client::Client) -> bool {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match c.next_event().await {
                None | Some(skylane_client::ClientEvent::Error(_)) => return,
                Some(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[test]
fn keys_rotate_under_load_without_refusing_anyone() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token.pub");
        let (old, new) = (
            TokenKeyPair::generate().unwrap(),
            TokenKeyPair::generate().unwrap(),
        );
        let old_signer = TokenSigner::from_pem(&old.private_pem).unwrap();
        let new_signer = TokenSigner::from_pem(&new.private_pem).unwrap();
        std::fs::write(&file, &old.public_pem).unwrap();
        let net = Net::start(NetOptions {
            relays: vec![(1, "amsterdam")],
            token_key_file: Some(file.clone()),
            ..NetOptions::default()
        });
        let relay = net.relays[0].addr;
        let reloads = || net.relays[0].metrics.token_key_reloads.get();
        // The relay takes the file's key set (the harness started it with
        // its own key).
        for _ in 0..100 {
            if reloads() >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(reloads(), 1, "the file's key set in use");

        // Players connect all along: one every 100 ms, each with a token from
        // the key the issuer uses at that moment.
        let mut n = 0;
        let mut connect = async |signer: &TokenSigner| {
            n += 1;
            let name = format!("p{n}");
            let (_, b) = net.client_builder("paris", &name);
            b.token(token(signer, &name))
                .relays([relay])
                .connect()
                .await
        };
        let mut clients = Vec::new();
        for _ in 0..10 {
            clients.push(
                connect(&old_signer)
                    .await
                    .expect("old key, before the rotation"),
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Step 1: both keys trusted; the issuer switches once relays have it.
        std::fs::write(&file, format!("{}{}", old.public_pem, new.public_pem)).unwrap();
        while reloads() < 2 {
            clients.push(
                connect(&old_signer)
                    .await
                    .expect("old key, while the file changes"),
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for _ in 0..10 {
            clients.push(
                connect(&new_signer)
                    .await
                    .expect("new key, after it was added"),
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Step 2: the old key retired.
        std::fs::write(&file, &new.public_pem).unwrap();
        while reloads() < 3 {
            clients.push(
                connect(&new_signer)
                    .await
                    .expect("new key, while the old goes"),
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let err = connect(&old_signer).await.unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Refused {
                    code: RefusalCode::BadToken,
                    ..
                }
            ),
            "a retired key's token: {err:?}"
        );
        assert!(clients.len() >= 20);
        assert_eq!(net.relays[0].metrics.token_key_errors.get(), 0);
    });
}

/// An operator revokes a cheater (its subject, for a while) in the relay's
/// revocation file: within one reload its live session is closed and a new
/// hello refused; other players are untouched; when the entry expires the
/// subject gets back in.
#[test]
fn a_revoked_subject_is_cut_and_refused_until_its_time() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("revoked.json");
        std::fs::write(&file, "[]").unwrap();
        let net = Net::start(NetOptions {
            relays: vec![(1, "amsterdam")],
            revocation_file: Some(file.clone()),
            ..NetOptions::default()
        });
        let relay = net.relays[0].addr;
        let join = async |name: &str| join(&net, relay, name).await;
        let mut cheater = join("cheater").await.expect("joins");
        let honest = join("honest").await.expect("joins");
        let now = unix_now();
        let until = now + 30;
        std::fs::write(
            &file,
            format!(r#"[{{"sub": "cheater", "until": {until}, "reason": "aimbot"}}]"#),
        )
        .unwrap();
        let started = tokio::time::Instant::now();
        // Its session ends (closed by the relay); the honest one's does not.
        assert!(closed(&mut cheater).await, "the revoked session was closed");
        assert!(
            started.elapsed() <= Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(net.relays[0].metrics.revoked_sessions.get(), 1);
        let err = join("cheater").await.unwrap_err();
        assert!(
            matches!(&err, ClientError::Refused { code: RefusalCode::Sanctioned, reason } if reason.contains("aimbot")),
            "{err:?}"
        );
        assert!(honest.session().is_some());
        // The entry over (the file names a time already past), it gets back in.
        std::fs::write(
            &file,
            format!(r#"[{{"sub": "cheater", "until": {now}, "reason": "aimbot"}}]"#),
        )
        .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        join("cheater")
            .await
            .expect("back once the revocation is over");
    });
}

/// A session outlives its token (10 s here): the player keeps playing, its
/// path is cut for a while, and on reconnecting the client fetches a fresh
/// token from its provider and resumes the same session, losing nothing.
#[test]
fn a_session_outliving_its_token_resumes_with_a_fresh_one() {
    run(|| async {
        let net = Net::start(NetOptions {
            relays: vec![(1, "amsterdam")],
            ..NetOptions::default()
        });
        let relay = net.relays[0].addr;
        // The network's Unix time (netsim's clock is virtual).
        let real0 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let t0 = tokio::time::Instant::now();
        let signer = std::sync::Arc::new(net.tokens.clone());
        let short = move |signer: &TokenSigner| {
            let now = real0 + t0.elapsed().as_secs();
            signer
                .issue(&Claims::new(
                    "long",
                    Role::Player,
                    vec![WORLD],
                    "skylane",
                    now,
                    10,
                ))
                .unwrap()
        };
        let provided = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (host, b) = net.client_builder("paris", "long");
        let (s, p) = (signer.clone(), provided.clone());
        let client = b
            .token(short(&signer))
            .token_provider(move || {
                p.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let t = short(&s);
                async move { Ok(t) }
            })
            .relays([relay])
            .idle_timeout(Duration::from_millis(800))
            .connect()
            .await
            .unwrap();
        let mut long = skylane_tests::Walker::new(client, "long");
        long.wait_spawn().await;
        let session = long.client.session();
        // 30 s of play: the token lapses (a live session is not re-checked).
        for _ in 0..300 {
            long.step().await;
            long.absorb();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(long.client.stats().reconnects, 0);
        // The path drops for 2 s: the client must reconnect, with a token that
        // expired 20 s ago.
        net.sim.partition(host, net.relays[0].host);
        tokio::time::sleep(Duration::from_secs(2)).await;
        net.sim.heal(host, net.relays[0].host);
        for _ in 0..50 {
            long.step().await;
            long.absorb();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let st = long.client.stats();
        assert!(st.reconnects >= 1, "{st:?}");
        assert_eq!(long.client.session(), session, "the same session resumed");
        assert!(provided.load(std::sync::atomic::Ordering::Relaxed) >= 1);
        assert_eq!(
            st.token_refreshes,
            provided.load(std::sync::atomic::Ordering::Relaxed)
        );
        assert_eq!(st.order.resyncs, 0, "nothing lost");
        skylane_tests::assert_exactly_once(&long.seen);

        // A provider that can only give expired tokens: a clear error, not a
        // retry loop.
        let stale = move |signer: &TokenSigner| {
            let then = real0 + t0.elapsed().as_secs() - 100;
            signer
                .issue(&Claims::new(
                    "stale",
                    Role::Player,
                    vec![WORLD],
                    "skylane",
                    then,
                    10,
                ))
                .unwrap()
        };
        let (_, b) = net.client_builder("paris", "stale");
        let s = signer.clone();
        let err = tokio::time::timeout(
            Duration::from_secs(30),
            b.token(stale(&signer))
                .token_provider(move || {
                    let t = stale(&s);
                    async move { Ok(t) }
                })
                .relays([relay])
                .connect(),
        )
        .await
        .expect("an answer, not a loop")
        .unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Refused {
                    code: RefusalCode::TokenExpired,
                    ..
                }
            ),
            "{err:?}"
        );
    });
}

/// A ban on the control plane reaches a relay following it: the banned
/// player's session is closed and its hellos refused within a view change;
/// lifted, it gets back in.
#[test]
fn a_ban_on_the_control_plane_cuts_and_refuses_the_subject() {
    use skylane_control::{Ban, Embedded, SharedControl};
    run(|| async {
        let net = Net::start(NetOptions {
            relays: vec![(1, "amsterdam")],
            ..NetOptions::default()
        });
        let control: SharedControl = std::sync::Arc::new(Embedded::new());
        net.follow(&control, Duration::from_secs(3)).await;
        let relay = net.relays[0].addr;
        let join = async |name: &str| join(&net, relay, name).await;
        let mut cheater = join("cheater").await.expect("joins");
        let honest = join("honest").await.expect("joins");
        let now = unix_now();
        let banned = tokio::time::Instant::now();
        control
            .ban(
                "cheater",
                &Ban {
                    until: now + 3600,
                    reason: "wallhack".into(),
                },
            )
            .await
            .unwrap();
        assert!(closed(&mut cheater).await, "the banned session is closed");
        assert!(
            banned.elapsed() <= Duration::from_secs(1),
            "{:?}",
            banned.elapsed()
        );
        let err = join("cheater").await.unwrap_err();
        assert!(
            matches!(&err, ClientError::Refused { code: RefusalCode::Sanctioned, reason } if reason.contains("wallhack")),
            "{err:?}"
        );
        assert!(honest.session().is_some());
        control.unban("cheater").await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        join("cheater").await.expect("back once the ban is lifted");
    });
}
