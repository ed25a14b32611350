//! `skylane probe`: round-trip time and clock offset to a relay, without a token.
//!
//! Opens a QUIC connection with the client protocol (`skylane/1`), whose first
//! message is a ping; the relay answers that and every further ping (up to
//! `MAX_PROBE_PINGS`) with a pong carrying its clock. Offset estimation is the
//! SDK's own [`ClockSync`] (NTP-style, minimum-RTT sample), so the figure is what a
//! game client would get.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quinn::rustls::RootCertStore;
use serde::Serialize;
use skylane_client::ClockSync;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// TLS set-up.
    #[error("TLS: {0}")]
    Tls(String),
    /// The relay could not be reached, or closed or answered something else.
    #[error(transparent)]
    Probe(#[from] skylane_client::ProbeError),
}

/// What a probe measured.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// Relay.
    pub addr: SocketAddr,
    /// QUIC + TLS handshake time, microseconds.
    pub handshake_us: u64,
    /// Pongs received.
    pub samples: usize,
    /// Smallest ping round trip, microseconds.
    pub rtt_min_us: u64,
    /// Median ping round trip, microseconds.
    pub rtt_p50_us: u64,
    /// Largest ping round trip, microseconds.
    pub rtt_max_us: u64,
    /// quinn's smoothed RTT estimate at the end, microseconds.
    pub quic_rtt_us: u64,
    /// Relay clock minus this machine's clock (minimum-RTT sample), microseconds.
    pub offset_us: i64,
    /// Half the round trip of the sample the offset comes from: the offset's error
    /// bound, microseconds.
    pub offset_bound_us: u64,
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Probes `addr` with `count` pings `interval` apart (count is capped by the
/// relay's limit of 64).
pub async fn probe(
    addr: SocketAddr,
    server_name: &str,
    roots: RootCertStore,
    count: usize,
    interval: Duration,
) -> Result<ProbeReport, ProbeError> {
    let quic =
        skylane_certs::client_config(roots, None).map_err(|e| ProbeError::Tls(e.to_string()))?;
    let bind: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let endpoint = quinn::Endpoint::client(bind).map_err(|e| {
        ProbeError::Probe(skylane_client::ProbeError::Connect {
            addr,
            message: e.to_string(),
        })
    })?;
    let p = skylane_client::probe(
        &endpoint,
        quic,
        addr,
        server_name,
        count,
        interval,
        Duration::from_secs(5),
        unix_us,
    )
    .await;
    endpoint.close(0u32.into(), b"");
    let p = p?;
    let mut sync = ClockSync::new(p.samples.len());
    let mut rtts: Vec<u64> = p
        .samples
        .iter()
        .map(|s| sync.handle_pong(&s.pong, s.received_us).rtt_us)
        .collect();
    rtts.sort_unstable();
    let best = sync.best().ok_or_else(|| {
        ProbeError::Probe(skylane_client::ProbeError::Protocol {
            addr,
            message: "no pong received".into(),
        })
    })?;
    Ok(ProbeReport {
        addr,
        handshake_us: p.handshake.as_micros() as u64,
        samples: rtts.len(),
        rtt_min_us: rtts[0],
        rtt_p50_us: rtts[rtts.len() / 2],
        rtt_max_us: rtts[rtts.len() - 1],
        quic_rtt_us: p.quic_rtt.as_micros() as u64,
        offset_us: best.offset_us,
        offset_bound_us: best.rtt_us / 2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::{LocalNet, LocalOptions};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn probing_a_local_relay_measures_rtt_and_a_near_zero_offset() {
        let net = LocalNet::start(LocalOptions::default()).await.unwrap();
        let roots = skylane_certs::roots_from_pem(&net.pki.ca_pem).unwrap();
        let r = probe(
            net.relays[1].addr,
            "localhost",
            roots,
            10,
            Duration::from_millis(5),
        )
        .await
        .unwrap();
        assert_eq!(r.samples, 10);
        assert!(r.rtt_min_us > 0 && r.rtt_min_us <= r.rtt_p50_us && r.rtt_p50_us <= r.rtt_max_us);
        // Same machine, same clock: the offset is within the error bound (+ 1 ms of
        // scheduling slack).
        assert!(
            r.offset_us.unsigned_abs() <= r.offset_bound_us + 1_000,
            "{r:?}"
        );
        // An untrusted certificate is a clear error, not a hang.
        let other = skylane_certs::LocalPki::generate(&[]).unwrap();
        let err = probe(
            net.relays[0].addr,
            "localhost",
            other.roots().unwrap(),
            1,
            Duration::ZERO,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                ProbeError::Probe(skylane_client::ProbeError::Connect { .. })
            ),
            "{err}"
        );
        net.shutdown().await;
    }
}
