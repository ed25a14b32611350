//! A new client connection's first message: a `Hello` (admitted through the
//! pure checks in [`crate::hello`], then given a session by the actor), a
//! `Directory` question or a probe `Ping` (both answered without a token and
//! closed). Every refusal is answered and closed in one place.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::Connection;
use skylane_proto::{
    ClientMsg, FrameDecoder, Ping, Pong, Refusal, RefusalCode, Role, ServerMsg, DEFAULT_MAX_FRAME,
    MAX_PROBE_PINGS,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::debug;

use crate::guard::EdgeGuard;
use crate::hello::check_hello;
use crate::metrics::RelayMetrics;
use crate::session::ConnId;

use super::mailbox::{Cmd, Shared};
use super::read::read_message;
use super::reader::ClientReader;
use super::spectators::write_spectator;
use super::writer::{frame, Outbox};

/// An admitted connection: its control stream and its reader.
pub(crate) struct Opened {
    pub(crate) send: quinn::SendStream,
    pub(crate) recv: quinn::RecvStream,
    pub(crate) dec: FrameDecoder,
    pub(crate) reader: Arc<ClientReader>,
}

/// Why a connection ends during admission.
enum Ending {
    /// Closed already, or nothing to say (the client left, the relay stopped).
    Quiet,
    /// Answer this on the control stream, then close.
    Answer(ServerMsg),
}

/// Reads the first message, checks the hello, gets a session from the actor,
/// sends the welcome and starts a spectator's writer. `None` when the client was
/// refused, was answered without a session, or left.
pub(crate) async fn admit(
    shared: &Arc<Shared>,
    conn: &Connection,
    conn_id: ConnId,
) -> Option<Opened> {
    let limits = &shared.settings.limits;
    let Ok(Ok((send, mut recv))) =
        tokio::time::timeout(limits.hello_timeout, conn.accept_bi()).await
    else {
        conn.close(1u32.into(), b"no control stream");
        return None;
    };
    let mut dec = FrameDecoder::new(limits.max_client_frame);
    let first = match tokio::time::timeout(
        limits.hello_timeout,
        read_message::<ClientMsg>(&mut recv, &mut dec, DEFAULT_MAX_FRAME),
    )
    .await
    {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            RelayMetrics::count(&shared.metrics.decode_errors, e.label());
            conn.close(1u32.into(), b"bad first message");
            return None;
        }
        Err(_) => {
            conn.close(1u32.into(), b"hello timeout");
            return None;
        }
    };
    let ip = conn.remote_address().ip();
    let hello = match first {
        ClientMsg::Hello(h) => h,
        ClientMsg::Directory { addr, count } => {
            let target = addr.and_then(|a| a.parse::<IpAddr>().ok()).unwrap_or(ip);
            let relays = shared.nearest_relays(target, usize::from(count.clamp(1, 16)));
            answer_and_close(conn, send, &ServerMsg::Directory(relays)).await;
            return None;
        }
        ClientMsg::Ping(p) => {
            serve_probe(shared, conn, send, recv, dec, p).await;
            return None;
        }
        _ => {
            let r = Refusal {
                code: RefusalCode::ProtocolViolation,
                reason: "expected hello".into(),
            };
            return end(conn, send, Ending::Answer(refused(shared, r))).await;
        }
    };
    let mut send = send;
    let (session, role, outbox) = match open_session(shared, conn, conn_id, ip, hello).await {
        Ok((welcome, role, outbox)) => {
            let session = welcome.session;
            if send
                .write_all(&frame(&ServerMsg::Welcome(welcome)))
                .await
                .is_err()
            {
                let _ = shared.cmd.send(Cmd::Gone { conn_id }).await;
                return None;
            }
            (session, role, outbox)
        }
        Err(ending) => return end(conn, send, ending).await,
    };
    // A spectator's feed: one ordered stream fed from a short queue; when the queue
    // is full the audience makes it skip to the next keyframe. The few replies a
    // spectator gets (pongs, errors, go-away) come from its outbox and share that
    // stream, ahead of the feed.
    let spectate = (role == Role::Spectator).then(|| {
        let (tx, rx) = mpsc::channel(limits.spectator_queue.max(1));
        tokio::spawn(write_spectator(
            conn.clone(),
            rx,
            outbox.clone(),
            shared.metrics.clone(),
            session,
        ));
        tx
    });
    // A player's writer is polled by its connection's task (see `serve_client`).
    let reader = Arc::new(ClientReader {
        shared: shared.clone(),
        conn: conn.clone(),
        session,
        role,
        spectate,
        out: outbox,
        guard: Mutex::new(EdgeGuard::new(shared.settings.edge, shared.now())),
        origin_pings: Mutex::new((Instant::now(), 0)),
        content_windows: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
    });
    Some(Opened {
        send,
        recv,
        dec,
        reader,
    })
}

/// The offline checks, then a session from the actor.
async fn open_session(
    shared: &Arc<Shared>,
    conn: &Connection,
    conn_id: ConnId,
    ip: IpAddr,
    hello: skylane_proto::Hello,
) -> Result<(skylane_proto::Welcome, Role, Arc<Outbox>), Ending> {
    let s = &shared.settings;
    let admitted = check_hello(
        hello,
        &s.tokens.current(),
        &[&s.revocations.current(), &s.bans.current()],
        &s.tickets,
        shared.clock.unix_secs(),
    )
    .map_err(|r| Ending::Answer(refused(shared, r)))?;
    let now_us = shared.clock.unix_us();
    let cooling = shared.penalties.lock().ok().and_then(|p| {
        p.refused_until(now_us, &admitted.player)
            .map(|(u, why)| (u, why.to_owned()))
    });
    if let Some((until, why)) = cooling {
        shared.metrics.edge_cooldown_refusals.inc();
        let why = if why.is_empty() {
            "cut for violations".to_owned()
        } else {
            why
        };
        let left = if until == u64::MAX {
            "for good".to_owned()
        } else {
            format!(
                "for another {} s",
                until.saturating_sub(now_us).div_ceil(1_000_000)
            )
        };
        return Err(Ending::Answer(refused(
            shared,
            Refusal {
                code: RefusalCode::Sanctioned,
                reason: format!("{why}: refused {left}"),
            },
        )));
    }
    let role = admitted.role;
    let outbox = Outbox::new(s.scheduler, s.movement);
    let (reply, answer) = oneshot::channel();
    let cmd = Cmd::Hello {
        conn_id,
        ip,
        hello: admitted,
        out: outbox.clone(),
        conn: conn.clone(),
        reply,
    };
    shared.cmd.send(cmd).await.map_err(|_| Ending::Quiet)?;
    match answer.await {
        Ok(Ok(welcome)) => Ok((welcome, role, outbox)),
        Ok(Err(r)) => Err(Ending::Answer(refused(shared, r))),
        Err(_) => Err(Ending::Quiet),
    }
}

/// Counts and logs a refusal; the message that tells the client.
fn refused(shared: &Shared, r: Refusal) -> ServerMsg {
    RelayMetrics::count(
        &shared.metrics.refusals,
        format!("{:?}", r.code).to_lowercase(),
    );
    debug!(code = ?r.code, reason = %r.reason, "refusing client");
    ServerMsg::Refusal(r)
}

/// The one place admission ends a connection.
async fn end(conn: &Connection, send: quinn::SendStream, ending: Ending) -> Option<Opened> {
    if let Ending::Answer(msg) = ending {
        answer_and_close(conn, send, &msg).await;
    }
    None
}

/// Writes one message on the control stream, finishes it, waits (briefly) for the
/// peer to have it, and closes the connection.
async fn answer_and_close(conn: &Connection, mut send: quinn::SendStream, msg: &ServerMsg) {
    let _ = send.write_all(&frame(msg)).await;
    let _ = send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
    conn.close(0u32.into(), b"done");
}

/// A tokenless RTT and clock probe (`skylane probe`): a connection whose first
/// message is a ping gets a pong for it and for every further ping, up to
/// [`MAX_PROBE_PINGS`], each within the hello timeout; then it is closed. No
/// session, no world, nothing kept.
async fn serve_probe(
    shared: &Arc<Shared>,
    conn: &Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    mut dec: FrameDecoder,
    first: Ping,
) {
    let mut ping = first;
    let mut received_us = shared.clock.unix_us();
    for _ in 0..MAX_PROBE_PINGS {
        let pong = ServerMsg::Pong(Pong::answer(&ping, received_us, shared.clock.unix_us()));
        if send.write_all(&frame(&pong)).await.is_err() {
            return;
        }
        let next = tokio::time::timeout(
            shared.settings.limits.hello_timeout,
            read_message::<ClientMsg>(&mut recv, &mut dec, DEFAULT_MAX_FRAME),
        )
        .await;
        received_us = shared.clock.unix_us();
        match next {
            Ok(Ok(ClientMsg::Ping(p))) => ping = p,
            _ => break,
        }
    }
    let _ = send.finish();
    conn.close(0u32.into(), b"probe done");
}
