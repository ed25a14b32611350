//! Content packs through the relays, end to end: published with `skylane
//! content publish`'s code into a source directory, served by the relays
//! from their cache, fetched by SDK clients and checked against the signed
//! manifest. The first scenario is the issue's: 500 clients fetch one 5 MiB
//! pack through one relay at once (about 40 s of a debug build here).

use std::sync::Arc;
use std::time::Duration;

use rand::RngCore as _;
use skylane_client::{Client, ContentFetchError};
use skylane_content::SourceDir;
use skylane_proto::ed25519_dalek::SigningKey;
use skylane_proto::{ContentCode, Role};
use skylane_relay::ContentSettings;
use skylane_tools::local::{LocalNet, LocalOptions};

struct Setup {
    net: LocalNet,
    source: tempfile::TempDir,
    key: SigningKey,
    pack: Vec<u8>,
}

async fn setup(pack_len: usize, cache_bytes: u64) -> Setup {
    setup_with(pack_len, cache_bytes, Duration::from_millis(100)).await
}

/// A network whose relays read the source's manifest every `refresh`.
async fn setup_with(pack_len: usize, cache_bytes: u64, refresh: Duration) -> Setup {
    let source = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let mut pack = vec![0u8; pack_len];
    rand::thread_rng().fill_bytes(&mut pack);
    std::fs::write(files.path().join("level1.pak"), &pack).unwrap();
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    SourceDir::new(source.path())
        .publish(files.path(), "1.0", &key, 0)
        .unwrap();
    let net = LocalNet::start(LocalOptions {
        content: Some(ContentSettings {
            source: source.path().to_owned(),
            key: key.verifying_key(),
            cache_bytes,
            refresh,
        }),
        ..LocalOptions::default()
    })
    .await
    .unwrap();
    // The relays read the manifest.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Setup {
        net,
        source,
        key,
        pack,
    }
}

/// A player on relay 0 only (no directory, no re-probing), sixteen to a
/// UDP socket.
async fn player(s: &Setup, n: usize) -> Client {
    use std::sync::Mutex;
    static SOCKETS: Mutex<Vec<quinn::Endpoint>> = Mutex::new(Vec::new());
    let endpoint = {
        let mut sockets = SOCKETS.lock().unwrap();
        if n % 16 == 0 || sockets.is_empty() {
            sockets.push(quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap());
        }
        sockets.last().unwrap().clone()
    };
    Client::builder()
        .world(skylane_tools::local::WORLD)
        .ca_pem(s.net.pki.ca_pem.clone())
        .endpoint(endpoint)
        .relays([s.net.relays[0].addr])
        .no_reprobe()
        .token(s.net.token_for(
            &format!("c{n}"),
            Role::Player,
            vec![skylane_tools::local::WORLD],
            Duration::from_secs(600),
        ))
        .content_key(s.key.verifying_key())
        .connect()
        .await
        .unwrap()
}

/// Rewrites version 1.0 of the pack in the source with one byte (at `at`)
/// changed, same size, and checks the client is refused `HashMismatch`.
/// Returns the file's path (to restore it).
async fn tamper_refused(s: &Setup, c: &Client, at: usize) -> std::path::PathBuf {
    let path = SourceDir::new(s.source.path())
        .pack_path("level1.pak", "1.0")
        .unwrap();
    let mut bad = s.pack.clone();
    bad[at] ^= 0xff;
    std::fs::write(&path, &bad).unwrap();
    match c.fetch_content("level1.pak", "1.0", |_, _| {}).await {
        Err(ContentFetchError::Refused { code, .. }) => assert_eq!(code, ContentCode::HashMismatch),
        other => panic!("a changed pack was served: {other:?}"),
    }
    path
}

fn fetches(s: &Setup) -> u64 {
    s.net
        .relays
        .iter()
        .map(|r| r.metrics.content_fetches.get())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_one_source_fetch_identical_verified_bytes() {
    const CLIENTS: usize = 500;
    let s = Arc::new(setup(5 << 20, 64 << 20).await);
    let mut clients = Vec::new();
    for n in 0..CLIENTS {
        clients.push(player(&s, n).await);
    }
    let mut tasks = Vec::new();
    for c in clients {
        tasks.push(tokio::spawn(async move {
            let mut last = (0, 0);
            let b = c
                .fetch_content("level1.pak", "1.0", |got, total| last = (got, total))
                .await;
            (b, last)
        }));
    }
    for t in tasks {
        let (b, last) = t.await.unwrap();
        let b = b.unwrap();
        assert!(b[..] == s.pack[..], "identical bytes");
        assert_eq!(last, (s.pack.len() as u64, s.pack.len() as u64));
    }
    assert_eq!(fetches(&s), 1, "one fetch from the source for every client");
    let m = &s.net.relays[0].metrics;
    assert!(m.content_bytes_served.get() >= (CLIENTS * s.pack.len()) as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_resumes_from_its_offset_and_across_a_relay_drain() {
    let s = setup(3 << 20, 64 << 20).await;
    let c = player(&s, 0).await;
    // From bytes kept by an interrupted earlier run.
    let have = bytes::BytesMut::from(&s.pack[..700_000]);
    let mut first = None;
    let b = c
        .fetch_content_from("level1.pak", "1.0", have, |got, _| {
            first.get_or_insert(got);
        })
        .await
        .unwrap();
    assert!(b[..] == s.pack[..]);
    assert_eq!(
        first,
        Some(700_000 + 256 * 1024),
        "it asked from its offset"
    );
    // A cut in the middle: the relay drains (the client is sent to another
    // relay) once the first window arrived; the download goes on there.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut tx = Some(tx);
    let c2 = s
        .net
        .player_builder(0, 1)
        .unwrap()
        .no_reprobe()
        .token(s.net.token_for(
            "c1",
            Role::Player,
            vec![skylane_tools::local::WORLD],
            Duration::from_secs(600),
        ))
        .content_key(s.key.verifying_key())
        .connect()
        .await
        .unwrap();
    let on = c2.relay().unwrap();
    let relay = s
        .net
        .relays
        .iter()
        .find(|r| r.addr == on)
        .unwrap()
        .relay
        .clone();
    let drain = tokio::spawn(async move {
        if rx.await.is_ok() {
            relay.drain();
        }
    });
    let b = c2
        .fetch_content("level1.pak", "1.0", |_, _| {
            if let Some(t) = tx.take() {
                let _ = t.send(());
                // Hold this download (not the client's driver) while the
                // relay tells the client to move: the next window goes to
                // the relay it moves to.
                std::thread::sleep(Duration::from_millis(700));
            }
        })
        .await
        .unwrap();
    drain.await.unwrap();
    assert!(b[..] == s.pack[..], "identical after the cut");
    assert_ne!(c2.relay(), Some(on), "it was moved mid-download");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_content_is_never_served() {
    let s = setup(100_000, 64 << 20).await;
    let c = player(&s, 0).await;
    // Unknown pack and version, by name.
    assert_eq!(
        c.fetch_content("nope.pak", "1.0", |_, _| {}).await,
        Err(ContentFetchError::UnknownPack("nope.pak".into()))
    );
    assert!(matches!(
        c.fetch_content("level1.pak", "0.9", |_, _| {}).await,
        Err(ContentFetchError::UnknownVersion { .. })
    ));
    // The source's file changed behind the manifest's back: same size,
    // other bytes. Never served; the client and the metric say so.
    let path = tamper_refused(&s, &c, 5).await;
    let failed: u64 = s
        .net
        .relays
        .iter()
        .map(|r| skylane_ops::counted(&r.metrics.content_fetch_failed, "hash_mismatch"))
        .sum();
    assert_eq!(failed, 1);
    // Restored: served again (the bad bytes were not cached).
    std::fs::write(&path, &s.pack).unwrap();
    let b = c
        .fetch_content("level1.pak", "1.0", |_, _| {})
        .await
        .unwrap();
    assert!(b[..] == s.pack[..]);
    // A tampered manifest is refused by the relay (it keeps serving the one
    // it had) and a client with the wrong key refuses the relay's.
    let mf = s.source.path().join(skylane_content::MANIFEST_FILE);
    let text = std::fs::read_to_string(&mf).unwrap();
    std::fs::write(&mf, text.replace("\\\"serial\\\": 1", "\\\"serial\\\": 9")).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused: u64 = s
        .net
        .relays
        .iter()
        .map(|r| skylane_ops::counted(&r.metrics.content_manifests, "refused"))
        .sum();
    assert!(refused > 0);
    let b = c
        .fetch_content("level1.pak", "1.0", |_, _| {})
        .await
        .unwrap();
    assert!(b[..] == s.pack[..], "the verified manifest still serves");
    let other = SigningKey::from_bytes(&[3; 32]);
    let c2 = s
        .net
        .player_builder(0, 9)
        .unwrap()
        .token(s.net.token_for(
            "c9",
            Role::Player,
            vec![skylane_tools::local::WORLD],
            Duration::from_secs(600),
        ))
        .content_key(other.verifying_key())
        .connect()
        .await
        .unwrap();
    assert!(matches!(
        c2.fetch_content("level1.pak", "1.0", |_, _| {}).await,
        Err(ContentFetchError::Manifest(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_larger_than_the_cache_streams_through_by_ranges_and_a_new_version_replaces_the_old()
{
    let s = setup(600_000, 100_000).await;
    let c = player(&s, 0).await;
    let b = c
        .fetch_content("level1.pak", "1.0", |_, _| {})
        .await
        .unwrap();
    assert!(b[..] == s.pack[..]);
    assert_eq!(
        s.net.relays[0].metrics.content_cache_bytes.get(),
        0,
        "not kept"
    );
    // Three windows: the first checked the whole pack once, the other two
    // were read as ranges of the unchanged file; a second download too.
    let ranged = || skylane_ops::counted(&s.net.relays[0].metrics.content_requests, "ranged");
    assert_eq!(fetches(&s), 1, "checked whole once");
    assert_eq!(ranged(), 2);
    let b = c
        .fetch_content("level1.pak", "1.0", |_, _| {})
        .await
        .unwrap();
    assert!(b[..] == s.pack[..]);
    assert_eq!((fetches(&s), ranged()), (1, 5));
    // The file rewritten behind the manifest (same size): its stamp
    // changed, so it is checked whole again, and refused.
    tamper_refused(&s, &c, 400_000).await;
    assert_eq!(fetches(&s), 2);
    // Version 2 published: the relays take the new manifest, the old
    // version is refused, the new one served.
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("level1.pak"), b"v2").unwrap();
    SourceDir::new(s.source.path())
        .publish(files.path(), "2.0", &s.key, 1)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(matches!(
        c.fetch_content("level1.pak", "1.0", |_, _| {}).await,
        Err(ContentFetchError::UnknownVersion { .. })
    ));
    let b = c
        .fetch_content("level1.pak", "2.0", |_, _| {})
        .await
        .unwrap();
    assert_eq!(&b[..], b"v2");
}

/// `POST` (with a body) or `GET` on an admin endpoint: status and body.
async fn http(url: String, body: Option<Vec<u8>>) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build(),
        );
        let r = match body {
            Some(b) => agent.post(&url).send(&b[..]),
            None => agent.get(&url).call(),
        };
        let mut r = r.expect("the admin endpoint answers");
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().unwrap_or_default())
    })
    .await
    .unwrap()
}

fn manifests(s: &Setup, kind: &str) -> u64 {
    skylane_ops::counted(&s.net.relays[0].metrics.content_manifests, kind)
}

/// A new version announced on the control plane (`skylane content
/// announce`, through an origin's admin endpoint) reaches the relays from
/// their next cluster view, long before their next read of the source
/// (an hour here); the announce refuses what does not parse, a record too
/// large or a serial that goes back; a manifest signed with another key
/// passes the origin (it holds no operator key) and is refused by the
/// relays, which keep serving the last good one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_announced_on_the_control_plane_reaches_the_relays_at_once() {
    let s = setup_with(1000, 1 << 20, Duration::from_secs(3600)).await;
    let admin = skylane_ops::serve_admin(
        "127.0.0.1:0".parse().unwrap(),
        skylane_origin::worlds_router(s.net.control.clone()),
    )
    .await
    .unwrap();
    let url = format!("http://{admin}/content/manifest");
    assert_eq!(http(url.clone(), None).await.0, 404, "none announced yet");
    let c = player(&s, 0).await;
    assert_eq!(
        c.fetch_content("level1.pak", "1.0", |_, _| {})
            .await
            .unwrap()[..],
        s.pack[..]
    );
    // Version 2 in the source: the relays would not read it for an hour.
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("level1.pak"), b"v2").unwrap();
    SourceDir::new(s.source.path())
        .publish(files.path(), "2.0", &s.key, 1)
        .unwrap();
    assert!(matches!(
        c.fetch_content("level1.pak", "2.0", |_, _| {}).await,
        Err(ContentFetchError::UnknownVersion { .. })
    ));
    // Announced with the CLI, as an operator would.
    let source = s.source.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_skylane"))
            .args(["content", "announce"])
            .arg(&source)
            .arg(admin.to_string())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("\"serial\""), "{said}");
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match c.fetch_content("level1.pak", "2.0", |_, _| {}).await {
                Ok(b) => return b,
                Err(ContentFetchError::UnknownVersion { .. }) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("the relay took the announced manifest");
    assert_eq!(&got[..], b"v2");
    assert_eq!(fetches(&s), 2, "each version fetched once from the source");
    // The record holds what was announced.
    let file = std::fs::read(s.source.path().join(skylane_content::MANIFEST_FILE)).unwrap();
    let (status, body) = http(url.clone(), None).await;
    assert_eq!(status, 200);
    let stored = skylane_content::SignedManifest::from_file(body.as_bytes()).unwrap();
    assert_eq!(
        stored,
        skylane_content::SignedManifest::from_file(&file).unwrap()
    );
    // Refusals: the same serial again, garbage, a record too large.
    assert_eq!(http(url.clone(), Some(file.clone())).await.0, 409);
    assert_eq!(http(url.clone(), Some(b"{not json".to_vec())).await.0, 400);
    assert_eq!(http(url.clone(), Some(vec![b' '; 20_000])).await.0, 413);
    // Another key's manifest (serial 3, naming a version 3): stored, but
    // refused by the relay, which keeps serving version 2.
    let other = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let forged = skylane_content::Manifest {
        serial: 3,
        issued_ms: 3,
        packs: [(
            "level1.pak".to_owned(),
            skylane_content::PackEntry {
                version: "3.0".into(),
                size: 2,
                sha256: skylane_content::sha256_hex(b"v3"),
            },
        )]
        .into(),
    }
    .sign(&other)
    .unwrap();
    let refused_before = manifests(&s, "refused");
    assert_eq!(http(url.clone(), Some(forged.to_file())).await.0, 201);
    tokio::time::timeout(Duration::from_secs(10), async {
        while manifests(&s, "refused") == refused_before {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the relay saw and refused the forged manifest");
    assert_eq!(
        &c.fetch_content("level1.pak", "2.0", |_, _| {})
            .await
            .unwrap()[..],
        b"v2"
    );
}
