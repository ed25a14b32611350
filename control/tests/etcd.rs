//! The behavioural suite against a real etcd (feature `etcd`; needs the `etcd`
//! binary from Debian's `etcd-server`). One etcd process, one key prefix per case.

#![cfg(feature = "etcd")]

mod suite;

use std::sync::Arc;
use std::time::Duration;

use skylane_control::{ControlError, ControlPlane, Etcd, EtcdConfig, LocalEtcd};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_passes_against_etcd() {
    let etcd = LocalEtcd::start().await.expect("etcd starts");
    for (i, case) in suite::CASES.iter().enumerate() {
        let c = Etcd::connect(etcd.config(&format!("/skylane/suite-{i}")))
            .await
            .expect("connect");
        eprintln!("etcd case: {case}");
        suite::run(case, Arc::new(c)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_etcd_is_one_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = EtcdConfig::new(vec![format!("http://127.0.0.1:{port}")]);
    cfg.timeout = Duration::from_millis(500);
    match Etcd::connect(cfg).await {
        Err(ControlError::Unavailable(msg)) => assert!(!msg.is_empty()),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_survives_an_etcd_restart() {
    let mut etcd = LocalEtcd::start().await.expect("etcd starts");
    let c = Etcd::connect(etcd.config("/skylane/restart"))
        .await
        .unwrap();
    let mut rx = c.watch().await.unwrap();
    let l = c.grant(Duration::from_secs(60)).await.unwrap();
    c.register(&suite::origin("a", 4), l).await.unwrap();
    // The watch has seen the registration before the store goes away.
    tokio::time::timeout(Duration::from_secs(10), async {
        while !rx.borrow_and_update().nodes.contains_key("a") {
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("the watch sees the registration");
    etcd.kill().await;
    assert!(matches!(c.view().await, Err(ControlError::Unavailable(_))));
    // The last view stays in force while the store is away.
    assert!(rx.borrow().nodes.contains_key("a"));
    etcd.resume().await.unwrap();
    let l2 = loop {
        match c.grant(Duration::from_secs(60)).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    c.register(&suite::origin("b", 4), l2).await.unwrap();
    tokio::time::timeout(Duration::from_secs(15), async {
        while !rx.borrow_and_update().nodes.contains_key("b") {
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("the watch reconnects and sees writes after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_waits_for_an_etcd_that_is_down_at_start() {
    // Reserve the ports, then stop the server: "down at start".
    let mut etcd = LocalEtcd::start().await.expect("etcd starts");
    etcd.kill().await;
    let settings = skylane_control::ControlSettings {
        kind: skylane_control::ControlKind::Etcd,
        etcd: vec![etcd.endpoint()],
        prefix: "/skylane/late".into(),
        lease_ttl: Duration::from_secs(5),
    };
    let opening = tokio::spawn(async move { settings.open(Duration::from_millis(200)).await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !opening.is_finished(),
        "it keeps retrying, it does not fail or panic"
    );
    etcd.resume().await.unwrap();
    let control = tokio::time::timeout(Duration::from_secs(20), opening)
        .await
        .expect("connects once etcd is up")
        .unwrap()
        .expect("no error")
        .expect("an etcd control plane");
    assert!(control.view().await.unwrap().worlds.is_empty());
}
