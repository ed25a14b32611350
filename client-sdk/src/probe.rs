//! Tokenless relay probes: round trip and clock, before or beside a session.
//!
//! A probe is a QUIC connection with the client protocol (`skylane/1`) whose
//! first message is a ping; the relay answers it and up to
//! [`MAX_PROBE_PINGS`] more with pongs carrying its clock, then closes. The
//! client uses probes to compare relays while connected elsewhere
//! ([`crate::choice`]); `skylane probe` prints one.

use std::net::SocketAddr;
use std::time::Duration;

use quinn::{ClientConfig, Endpoint};
pub(crate) use skylane_proto::MAX_PROBE_PINGS;
use skylane_proto::{
    encode_frame_to_bytes, ClientMsg, FrameDecoder, Ping, Pong, ServerMsg, DEFAULT_MAX_FRAME,
};
use tokio::time::Instant;

/// Why a probe failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The relay could not be reached or the handshake failed.
    #[error("connecting to {addr}: {message}")]
    Connect {
        /// Relay.
        addr: SocketAddr,
        /// Cause.
        message: String,
    },
    /// The relay closed or answered something else.
    #[error("probe of {addr}: {message}")]
    Protocol {
        /// Relay.
        addr: SocketAddr,
        /// Cause.
        message: String,
    },
}

/// One answered ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSample {
    /// The relay's pong (its clock readings).
    pub pong: Pong,
    /// Local clock when the pong arrived, microseconds (the clock `now_us` gave).
    pub received_us: u64,
    /// Round trip measured locally.
    pub rtt: Duration,
}

/// What a probe measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Relay.
    pub addr: SocketAddr,
    /// QUIC + TLS handshake time.
    pub handshake: Duration,
    /// quinn's smoothed RTT estimate at the end.
    pub quic_rtt: Duration,
    /// The answered pings, in order.
    pub samples: Vec<ProbeSample>,
}

impl Probe {
    /// The smallest round trip of the pings.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.samples.iter().map(|s| s.rtt).min()
    }
}

/// Probes `addr` from `endpoint` with `count` pings `interval` apart (at most
/// [`MAX_PROBE_PINGS`]); `now_us` is the local clock the pings carry. Gives up
/// after `timeout` for the handshake and for each pong.
#[allow(clippy::too_many_arguments)]
pub async fn probe(
    endpoint: &Endpoint,
    quic: ClientConfig,
    addr: SocketAddr,
    server_name: &str,
    count: usize,
    interval: Duration,
    timeout: Duration,
    now_us: impl Fn() -> u64,
) -> Result<Probe, ProbeError> {
    let connect_err = |message: String| ProbeError::Connect { addr, message };
    let proto_err = |message: String| ProbeError::Protocol { addr, message };
    let t = Instant::now();
    let conn = endpoint
        .connect_with(quic, addr, server_name)
        .map_err(|e| connect_err(e.to_string()))?;
    let conn = tokio::time::timeout(timeout, conn)
        .await
        .map_err(|_| connect_err(format!("no answer within {timeout:?}")))?
        .map_err(|e| connect_err(e.to_string()))?;
    let handshake = t.elapsed();
    let result = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| proto_err(e.to_string()))?;
        let count = count.clamp(1, MAX_PROBE_PINGS);
        let mut samples = Vec::with_capacity(count);
        let mut dec = FrameDecoder::default();
        for nonce in 0..count as u64 {
            let ping = ClientMsg::Ping(Ping {
                nonce,
                sent_us: now_us(),
            });
            let bytes = encode_frame_to_bytes(&ping, DEFAULT_MAX_FRAME)
                .map_err(|e| proto_err(e.to_string()))?;
            let sent = Instant::now();
            send.write_all(&bytes)
                .await
                .map_err(|e| proto_err(e.to_string()))?;
            let pong = loop {
                match dec.poll_message::<ServerMsg>() {
                    Ok(Some(ServerMsg::Pong(p))) if p.nonce == nonce => break p,
                    Ok(Some(ServerMsg::Refusal(r))) => {
                        return Err(proto_err(format!("refused: {}", r.reason)))
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) => {}
                    Err(e) => return Err(proto_err(e.to_string())),
                }
                let chunk = tokio::time::timeout(timeout, recv.read_chunk(65_536, true))
                    .await
                    .map_err(|_| proto_err(format!("no pong within {timeout:?}")))?;
                match chunk {
                    Ok(Some(c)) => dec.push(&c.bytes),
                    Ok(None) => return Err(proto_err("the relay closed the probe".into())),
                    Err(e) => return Err(proto_err(e.to_string())),
                }
            };
            samples.push(ProbeSample {
                pong,
                received_us: now_us(),
                rtt: sent.elapsed(),
            });
            if nonce + 1 < count as u64 {
                tokio::time::sleep(interval).await;
            }
        }
        let _ = send.finish();
        Ok(samples)
    }
    .await;
    let quic_rtt = conn.rtt();
    conn.close(0u32.into(), b"probe done");
    Ok(Probe {
        addr,
        handshake,
        quic_rtt,
        samples: result?,
    })
}
