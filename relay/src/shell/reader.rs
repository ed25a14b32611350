//! What a client sends after its hello: each message through the session's
//! edge guard, then to the actor, answered at once where the relay can (pings,
//! refusals); one reader per connection, shared by its streams and datagrams.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use quinn::Connection;
use skylane_proto::{
    Action, ActionResult, ClientMsg, ErrorCode, ErrorMsg, EventClass, FrameDecoder, Outcome, Pong,
    RejectCode, Role, ServerMsg, SessionId,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::warn;

use crate::guard::{EdgeGuard, EdgeViolation, Verdict};
use crate::metrics::RelayMetrics;
use crate::scheduler::Outgoing;

use super::mailbox::{Cmd, Shared};
use super::writer::{frame, Outbox};

pub(crate) struct ClientReader {
    pub(crate) shared: Arc<Shared>,
    pub(crate) conn: Connection,
    pub(crate) session: SessionId,
    pub(crate) role: Role,
    pub(crate) spectate: Option<mpsc::Sender<Bytes>>,
    pub(crate) out: Arc<Outbox>,
    pub(crate) guard: Mutex<EdgeGuard>,
    /// Origin pings in the current second (at most [`MAX_ORIGIN_PINGS_PER_SEC`]).
    pub(crate) origin_pings: Mutex<(Instant, u32)>,
    /// Content windows being served to this client now (bounded).
    pub(crate) content_windows: Arc<std::sync::atomic::AtomicUsize>,
}

/// Origin pings a session may send per second; more are dropped (each costs the
/// origin link a message).
pub(crate) const MAX_ORIGIN_PINGS_PER_SEC: u32 = 10;

impl ClientReader {
    /// Handles every complete message in `dec`. An undecodable frame stops the
    /// stream (the client is told why) and is an error.
    pub(crate) async fn drain(
        &self,
        recv: &mut quinn::RecvStream,
        dec: &mut FrameDecoder,
    ) -> Result<(), ()> {
        loop {
            match dec.poll_message::<ClientMsg>() {
                Ok(Some(m)) => self.handle(m).await,
                Ok(None) => return Ok(()),
                Err(e) => {
                    RelayMetrics::count(&self.shared.metrics.decode_errors, e.label());
                    self.reply(
                        EventClass::Critical,
                        &ServerMsg::Error(ErrorMsg {
                            code: ErrorCode::Malformed,
                            message: format!("undecodable frame: {e}"),
                        }),
                    );
                    let _ = recv.stop(1u32.into());
                    return Err(());
                }
            }
        }
    }

    fn reply(&self, class: EventClass, msg: &ServerMsg) {
        // A full outbox stops and its writer closes the connection as too slow.
        let _ = self.out.push(Outgoing {
            class,
            session: self.session,
            entity: None,
            droppable: false,
            bytes: frame(msg),
        });
    }

    pub(crate) async fn handle(&self, msg: ClientMsg) {
        let m = &self.shared.metrics;
        match msg {
            ClientMsg::MovementAck { seq, viewpoint } => {
                m.movement_acks.inc();
                self.out.movement_ack(seq, viewpoint);
            }
            ClientMsg::Ping(p) => {
                let now = self.shared.clock.unix_us();
                self.reply(
                    EventClass::Critical,
                    &ServerMsg::Pong(Pong::answer(&p, now, now)),
                );
            }
            ClientMsg::Action(action) => {
                if self.role != Role::Player {
                    return self.reject(&action, RejectCode::Forbidden, "spectators cannot act");
                }
                let verdict = self.guard.lock().map_or(Verdict::Pass, |mut g| {
                    g.handle_action(self.shared.now(), &action)
                });
                match verdict {
                    Verdict::Pass => {
                        let _ = self
                            .shared
                            .cmd
                            .send(Cmd::Action {
                                session: self.session,
                                action,
                            })
                            .await;
                    }
                    Verdict::Drop(v) => {
                        RelayMetrics::count(&m.edge_violations, v.label());
                        let code = match v {
                            EdgeViolation::RateLimited(_) => RejectCode::RateLimited,
                            EdgeViolation::Replayed { .. } => RejectCode::Replayed,
                            EdgeViolation::TooLarge { .. } => RejectCode::TooLarge,
                            EdgeViolation::BadTimestamp { .. } => RejectCode::BadTimestamp,
                        };
                        self.reject(&action, code, &v.to_string());
                    }
                    Verdict::Disconnect(v) => {
                        RelayMetrics::count(&m.edge_violations, v.label());
                        m.edge_disconnects.inc();
                        warn!(session = %self.session, violation = %v, "edge guard disconnects session");
                        let _ = self
                            .shared
                            .cmd
                            .send(Cmd::EdgeCut {
                                session: self.session,
                                rule: v.label(),
                                evidence: v.to_string(),
                            })
                            .await;
                        self.end(3, b"too many violations").await;
                    }
                    // Already cut: in flight when the cut was decided.
                    Verdict::Cut => {}
                }
            }
            ClientMsg::OriginPing(ping) => {
                let allowed = self.origin_pings.lock().is_ok_and(|mut w| {
                    let now = Instant::now();
                    if now.duration_since(w.0) >= Duration::from_secs(1) {
                        *w = (now, 0);
                    }
                    w.1 += 1;
                    w.1 <= MAX_ORIGIN_PINGS_PER_SEC
                });
                if allowed {
                    let session = self.session;
                    let _ = self
                        .shared
                        .cmd
                        .send(Cmd::OriginPing { session, ping })
                        .await;
                } else {
                    RelayMetrics::count(&m.edge_violations, "origin_ping_rate");
                }
            }
            ClientMsg::Bye => self.end(0, b"bye").await,
            ClientMsg::ContentManifest => self.content_manifest(),
            ClientMsg::ContentGet(get) => self.content_get(get),
            ClientMsg::Hello(_) | ClientMsg::Directory { .. } => self.reply(
                EventClass::Critical,
                &ServerMsg::Error(ErrorMsg {
                    code: ErrorCode::Unexpected,
                    message: "hello and directory are first messages only".into(),
                }),
            ),
            ClientMsg::SpectatorSubscribe(sub) => match &self.spectate {
                Some(tx) => {
                    let cmd = Cmd::Spectate {
                        session: self.session,
                        sub,
                        tx: tx.clone(),
                    };
                    let _ = self.shared.cmd.send(cmd).await;
                }
                None => {
                    RelayMetrics::count(&m.spectators_refused, "not_a_spectator");
                    self.reply(
                        EventClass::Critical,
                        &ServerMsg::Error(ErrorMsg {
                            code: ErrorCode::Forbidden,
                            message: format!(
                                "a {} token cannot watch the spectator feed",
                                self.role
                            ),
                        }),
                    );
                }
            },
            ClientMsg::Subscribe(_) | ClientMsg::Unsubscribe(_) => {
                self.reply(
                    EventClass::Critical,
                    &ServerMsg::Error(ErrorMsg {
                        code: ErrorCode::Unexpected,
                        message: "channel interest is managed by the origin".into(),
                    }),
                );
            }
        }
    }

    /// Ends the session for good and closes the connection.
    async fn end(&self, code: u32, reason: &[u8]) {
        let session = self.session;
        let _ = self.shared.cmd.send(Cmd::Bye { session }).await;
        self.conn.close(code.into(), reason);
    }

    fn reject(&self, action: &Action, code: RejectCode, detail: &str) {
        self.reply(
            EventClass::Critical,
            &ServerMsg::ActionResult(ActionResult {
                seq: action.seq,
                outcome: Outcome::Rejected {
                    code,
                    detail: detail.to_owned(),
                },
            }),
        );
    }
}
