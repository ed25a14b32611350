//! The UDP impairment proxy between two real sockets on loopback.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use skylane_netsim::{LinkParams, ProxyConfig, UdpProxy};
use tokio::net::UdpSocket;

async fn echo_server() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let _ = sock.send_to(&buf[..n], from).await;
        }
    });
    addr
}

async fn round_trip(sock: &UdpSocket, to: SocketAddr, wait: Duration) -> Option<Duration> {
    let start = Instant::now();
    sock.send_to(b"ping", to).await.unwrap();
    let mut buf = [0u8; 16];
    tokio::time::timeout(wait, sock.recv_from(&mut buf))
        .await
        .ok()
        .map(|r| {
            r.unwrap();
            start.elapsed()
        })
}

#[tokio::test]
async fn proxy_adds_the_configured_delay_and_obeys_partition_heal_and_spike() {
    let upstream = echo_server().await;
    let proxy = UdpProxy::start(ProxyConfig::symmetric(
        "127.0.0.1:0".parse().unwrap(),
        upstream,
        LinkParams::with_latency(Duration::from_millis(40)),
    ))
    .await
    .unwrap();
    let control = proxy.control();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let via = proxy.local_addr();

    // Direct round trip on loopback is well under a millisecond; through the proxy it
    // is 2 × 40 ms plus scheduling.
    let mut rtts = Vec::new();
    for _ in 0..10 {
        rtts.push(
            round_trip(&client, via, Duration::from_secs(2))
                .await
                .expect("echo through proxy"),
        );
    }
    rtts.sort();
    let median = rtts[rtts.len() / 2];
    assert!(median >= Duration::from_millis(80), "median {median:?}");
    assert!(median < Duration::from_millis(120), "median {median:?}");

    control.partition();
    assert!(round_trip(&client, via, Duration::from_millis(300))
        .await
        .is_none());
    control.heal();
    assert!(round_trip(&client, via, Duration::from_secs(2))
        .await
        .is_some());

    control.spike(Duration::from_millis(100), Duration::from_secs(5));
    let spiked = round_trip(&client, via, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(
        spiked >= Duration::from_millis(280),
        "spiked rtt {spiked:?}"
    );

    let stats = control.stats();
    assert_eq!(stats.clients, 1);
    assert!(stats.partitioned >= 1);
    assert!(stats.forwarded >= 2 * 12);
}
