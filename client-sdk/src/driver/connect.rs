//! Choosing a relay (probing candidates, re-probing while connected) and opening
//! the session on it (hello, welcome or refusal, resume).

use std::net::SocketAddr;
use std::time::Duration;

use quinn::Connection;
use skylane_proto::{
    decode_datagram, encode_frame_to_bytes, ClientMsg, FrameDecoder, Hello, ServerMsg,
    DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};
use tokio::sync::{mpsc, oneshot};
use tracing::info;

use crate::ClientError;

use crate::probe;

use super::{pump, Driver, Live, RoundResults};

impl Driver {
    /// Probes candidates in parallel and opens the session on the fastest (on
    /// the preferred relay first, after a switch).
    pub(crate) async fn connect_best(&mut self) -> Result<Live, ClientError> {
        if let Some(addr) = self.prefer.take() {
            let connecting = self
                .endpoint
                .connect_with(self.quic.clone(), addr, &self.server_name);
            if let Ok(connecting) = connecting {
                if let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(5), connecting).await
                {
                    match self.open_session(addr, conn).await {
                        Ok(live) => return Ok(live),
                        Err(e) if self.retryable(&e) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        let k = self.probe.min(self.candidates.len()).max(1);
        let mut probes = tokio::task::JoinSet::new();
        for addr in self.candidates.iter().take(k).copied() {
            let connecting = self
                .endpoint
                .connect_with(self.quic.clone(), addr, &self.server_name);
            probes.spawn(async move {
                let conn = tokio::time::timeout(Duration::from_secs(5), connecting.ok()?)
                    .await
                    .ok()?
                    .ok()?;
                Some((addr, conn))
            });
        }
        let mut reached: Vec<(SocketAddr, Connection)> = Vec::new();
        while let Some(r) = probes.join_next().await {
            if let Ok(Some(x)) = r {
                reached.push(x);
            }
        }
        reached.sort_by_key(|(_, c)| c.rtt());
        let mut last_err =
            ClientError::RelayUnreachable(format!("none of {:?} answered", &self.candidates[..k]));
        let mut chosen = None;
        for (addr, conn) in reached {
            if chosen.is_some() {
                conn.close(0u32.into(), b"probe");
                continue;
            }
            match self.open_session(addr, conn).await {
                Ok(live) => chosen = Some(live),
                Err(e) if self.retryable(&e) => last_err = e,
                Err(e) => return Err(e),
            }
        }
        chosen.ok_or(last_err)
    }

    /// Probes up to `probe` candidates other than `current` in the background;
    /// the receiver gets each one's smallest ping round trip (`None`: no answer).
    pub(super) fn probe_round(&self, current: SocketAddr) -> oneshot::Receiver<RoundResults> {
        let (tx, rx) = oneshot::channel();
        let others: Vec<SocketAddr> = self
            .candidates
            .iter()
            .copied()
            .filter(|a| *a != current)
            .take(self.probe.max(1))
            .collect();
        let (endpoint, quic, name, clock) = (
            self.endpoint.clone(),
            self.quic.clone(),
            self.server_name.clone(),
            self.clock,
        );
        tokio::spawn(async move {
            let mut probes = tokio::task::JoinSet::new();
            for addr in others {
                let (endpoint, quic, name) = (endpoint.clone(), quic.clone(), name.clone());
                probes.spawn(async move {
                    let p = probe(
                        &endpoint,
                        quic,
                        addr,
                        &name,
                        3,
                        Duration::from_millis(20),
                        Duration::from_secs(2),
                        move || clock.now_us(),
                    )
                    .await;
                    (addr, p.ok().and_then(|p| p.min_rtt()))
                });
            }
            let mut results = Vec::new();
            while let Some(r) = probes.join_next().await {
                if let Ok(x) = r {
                    results.push(x);
                }
            }
            let _ = tx.send(results);
        });
        rx
    }

    /// Whether to try again: [`ClientError::is_retryable`], or a token refused
    /// as expired when a provider can give a fresh one.
    pub(crate) fn retryable(&self, e: &ClientError) -> bool {
        e.is_retryable()
            || (self.provider.is_some()
                && !self.token_given_up
                && matches!(
                    e,
                    ClientError::Refused {
                        code: skylane_proto::RefusalCode::TokenExpired,
                        ..
                    }
                ))
    }

    /// Fetches a fresh token when the one held expires within
    /// [`TOKEN_REFRESH_MARGIN`](crate::TOKEN_REFRESH_MARGIN), is none yet, or
    /// was refused as expired (and a provider is set).
    async fn ensure_token(&mut self) -> Result<(), ClientError> {
        let Some(provider) = self.provider.clone() else {
            return Ok(());
        };
        let now = self.clock.now_us() / 1_000_000;
        let margin = crate::TOKEN_REFRESH_MARGIN.as_secs();
        let expiring =
            skylane_proto::unverified_expiry(&self.token).is_none_or(|exp| exp <= now + margin);
        self.token_fresh = false;
        if self.refresh_token || expiring {
            self.token = (provider.0)().await.map_err(ClientError::TokenProvider)?;
            self.refresh_token = false;
            self.token_fresh = true;
            if let Ok(mut s) = self.shared.lock() {
                s.stats.token_refreshes += 1;
            }
        }
        Ok(())
    }

    pub(super) async fn open_session(
        &mut self,
        relay: SocketAddr,
        conn: Connection,
    ) -> Result<Live, ClientError> {
        let lost = |e: String| ClientError::RelayUnreachable(format!("{relay}: {e}"));
        self.ensure_token().await?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| lost(e.to_string()))?;
        let hello = ClientMsg::Hello(Hello {
            version: PROTOCOL_VERSION,
            token: self.token.clone(),
            world: self.world,
            resume: self.ticket.clone(),
            last_seen: self.order.cursors(),
        });
        let bytes = encode_frame_to_bytes(&hello, DEFAULT_MAX_FRAME)
            .map_err(|e| ClientError::Config(format!("token too large: {e}")))?;
        send.write_all(&bytes)
            .await
            .map_err(|e| lost(e.to_string()))?;
        let mut dec = FrameDecoder::default();
        let first = loop {
            match dec.poll_message::<ServerMsg>() {
                Ok(Some(m)) => break m,
                Ok(None) => {}
                Err(e) => return Err(lost(e.to_string())),
            }
            let chunk = tokio::time::timeout(
                Duration::from_secs(10),
                recv.read_chunk(DEFAULT_MAX_FRAME, true),
            )
            .await
            .map_err(|_| lost("no answer to hello".into()))?;
            match chunk {
                Ok(Some(c)) => dec.push(&c.bytes),
                Ok(None) => return Err(lost("closed".into())),
                Err(e) => return Err(lost(e.to_string())),
            }
        };
        let welcome = match first {
            ServerMsg::Welcome(w) => w,
            ServerMsg::Refusal(r) => {
                conn.close(0u32.into(), b"refused");
                if r.code == skylane_proto::RefusalCode::TokenExpired {
                    // A token just fetched and refused as expired means the
                    // provider cannot help (or the clocks disagree): give up.
                    self.token_given_up = self.token_fresh;
                    self.refresh_token = true;
                }
                return Err(ClientError::from_refusal(r.code, r.reason));
            }
            other => return Err(lost(format!("expected welcome, got {other:?}"))),
        };
        let resumed = self.session == Some(welcome.session);
        self.session = Some(welcome.session);
        self.ticket = Some(welcome.resume_ticket);
        if let Some(sub) = &self.spectate {
            // A spectator asks for its feed again on every connection; the relay
            // starts it from the latest keyframe its delay allows.
            let msg = ClientMsg::SpectatorSubscribe(sub.clone());
            if let Ok(b) = encode_frame_to_bytes(&msg, DEFAULT_MAX_FRAME) {
                send.write_all(&b).await.map_err(|e| lost(e.to_string()))?;
            }
        }
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(pump(recv, dec, tx.clone()));
        {
            let (conn, tx) = (conn.clone(), tx.clone());
            tokio::spawn(async move {
                while let Ok(r) = conn.accept_uni().await {
                    tokio::spawn(pump(r, FrameDecoder::default(), tx.clone()));
                }
            });
        }
        {
            let conn = conn.clone();
            tokio::spawn(async move {
                while let Ok(d) = conn.read_datagram().await {
                    if let Ok(m) = decode_datagram::<ServerMsg>(d) {
                        if tx.send(m).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
        info!(%relay, session = %welcome.session, resumed, "connected");
        if let Ok(mut s) = self.shared.lock() {
            if s.relay != Some(relay) {
                // Another relay, another clock.
                self.sync.clear();
            }
            s.session = Some(welcome.session);
            s.relay = Some(relay);
        }
        self.streams.clear();
        Ok(Live {
            conn,
            relay,
            rx,
            control: send,
        })
    }
}
