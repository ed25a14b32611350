//! A client connection's task: the accept loop hands each connection to one
//! task that admits it ([`super::admit`]), then reads its control stream, the
//! streams it opens and its datagrams into its [`super::reader::ClientReader`], and polls a
//! player's writer, until the connection ends.

use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use quinn::{Connection, Endpoint};
use skylane_proto::{decode_datagram, ClientMsg, FrameDecoder, Role, DEFAULT_MAX_FRAME};
use tokio::time::Instant;
use tracing::debug;

use crate::metrics::RelayMetrics;
use crate::session::ConnId;

use super::admit::{admit, Opened};
use super::mailbox::{Cmd, Shared};
use super::peer::serve_peer;
use super::writer::Writer;

pub(crate) async fn accept_loop(shared: Arc<Shared>, endpoint: Endpoint) {
    let mut next: u64 = 1;
    while let Some(incoming) = endpoint.accept().await {
        let ip = incoming.remote_address().ip();
        let verdict = shared
            .admission
            .lock()
            .map_or(Ok(()), |mut a| a.handle_incoming(shared.now(), ip));
        if let Err(why) = verdict {
            RelayMetrics::count(&shared.metrics.admission_refused, why.label());
            incoming.refuse();
            continue;
        }
        let conn_id: ConnId = next;
        next += 1;
        let shared = shared.clone();
        tokio::spawn(async move {
            shared.metrics.connections.inc();
            match incoming.await {
                // Boxed: a task's future is sized for its largest state, and
                // thousands of these live as long as their connections.
                Ok(conn) if is_peer(&conn) => Box::pin(serve_peer(shared.clone(), conn)).await,
                Ok(conn) => serve_client(&shared, conn, conn_id).await,
                Err(e) => debug!(cause = %e, "client handshake failed"),
            }
            shared.metrics.connections.dec();
            if let Ok(mut a) = shared.admission.lock() {
                a.handle_closed(ip);
            }
        });
    }
}

/// Whether a connection negotiated the peer-relay ALPN.
fn is_peer(conn: &Connection) -> bool {
    conn.handshake_data()
        .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|h| h.protocol)
        .is_some_and(|p| p == skylane_proto::PEER_ALPN)
}

/// Serves one client connection: admission, then its reads until it closes.
async fn serve_client(shared: &Arc<Shared>, conn: Connection, conn_id: ConnId) {
    // Admission's many locals live in their own (freed) allocation, not in the
    // connection task's future for the connection's whole life.
    let Some(Opened {
        send,
        recv,
        dec,
        reader,
    }) = Box::pin(admit(shared, &conn, conn_id)).await
    else {
        return;
    };
    // This task reads the control stream, datagrams and the streams the client
    // opens (at most one per class, bounded by the transport's stream limit) and
    // drives a player's writer: one task per connection. `send` stays open for the
    // connection's life.
    let mut writer = (reader.role == Role::Player).then(|| {
        Writer::new(
            conn.clone(),
            reader.out.clone(),
            &shared.metrics,
            reader.session,
        )
    });
    let mut timer = pin!(tokio::time::sleep_until(Instant::now()));
    let max = shared.settings.limits.max_client_frame;
    let (mut recv, mut dec) = (recv, dec);
    // Whatever followed the hello in the same chunk first.
    let mut control = Box::pin(reader.drain(&mut recv, &mut dec))
        .await
        .ok()
        .map(|()| (recv, dec));
    let mut streams = ClientStreams::default();
    loop {
        // Only the waits are raced (each is cancel safe); messages are handled
        // outside the race so none is dropped half-handled. Handling is boxed: it
        // is short-lived, and its futures would otherwise size this task (which
        // lives as long as the connection) for their largest state.
        let input = tokio::select! {
            c = async {
                match control.as_mut() {
                    Some((recv, _)) => recv.read_chunk(DEFAULT_MAX_FRAME, true).await,
                    None => std::future::pending().await,
                }
            } => Input::Control(c.ok().flatten().map(|c| c.bytes)),
            r = conn.accept_uni() => Input::Stream(r),
            i = poll_fn(|cx| streams.poll_read(cx)) => Input::StreamData(i),
            d = conn.read_datagram() => Input::Datagram(d),
            () = poll_fn(|cx| match writer.as_mut() {
                Some(w) => w.poll(cx, timer.as_mut()),
                None => Poll::Pending,
            }) => Input::WriterDone,
        };
        match input {
            Input::Control(Some(bytes)) => {
                if let Some((recv, dec)) = control.as_mut() {
                    dec.push(&bytes);
                    if Box::pin(reader.drain(recv, dec)).await.is_err() {
                        control = None;
                    }
                }
            }
            Input::Control(None) => control = None,
            Input::Stream(Ok(r)) => streams.add(r, FrameDecoder::new(max)),
            Input::StreamData(Ok(i)) => {
                let (recv, dec) = &mut streams.open[i];
                if Box::pin(reader.drain(recv, dec)).await.is_err() {
                    streams.open.swap_remove(i);
                }
            }
            Input::StreamData(Err(i)) => {
                streams.open.swap_remove(i);
            }
            Input::Datagram(Ok(d)) => match decode_datagram::<ClientMsg>(d) {
                Ok(m) => Box::pin(reader.handle(m)).await,
                Err(e) => RelayMetrics::count(&shared.metrics.decode_errors, e.label()),
            },
            Input::Stream(Err(_)) | Input::Datagram(Err(_)) | Input::WriterDone => break,
        }
    }
    reader.out.close();
    drop(send);
    let _ = Box::pin(shared.cmd.send(Cmd::Gone { conn_id })).await;
}

/// What woke a player connection's task.
enum Input {
    Control(Option<Bytes>),
    Stream(Result<quinn::RecvStream, quinn::ConnectionError>),
    Datagram(Result<Bytes, quinn::ConnectionError>),
    /// The writer stopped: the connection broke or the client was too slow.
    WriterDone,
    /// New bytes in the client stream at this index (`Err`: it ended or failed).
    StreamData(Result<usize, usize>),
}

/// The streams a client opened, read by its connection's task.
#[derive(Default)]
struct ClientStreams {
    open: Vec<(quinn::RecvStream, FrameDecoder)>,
    /// Where the next poll starts, so a busy stream cannot starve the others.
    next: usize,
}

impl ClientStreams {
    fn add(&mut self, recv: quinn::RecvStream, dec: FrameDecoder) {
        self.open.push((recv, dec));
    }

    /// Reads what one stream has into its decoder; `Ok(index)` when that stream
    /// has new bytes, `Err(index)` when it ended or failed.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, usize>> {
        let n = self.open.len();
        let mut buf = [0u8; 4096];
        for k in 0..n {
            let i = (self.next + k) % n;
            let (recv, dec) = &mut self.open[i];
            match recv.poll_read(cx, &mut buf) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Err(i)),
                Poll::Ready(Ok(len)) => {
                    dec.push(&buf[..len]);
                    self.next = i + 1;
                    return Poll::Ready(Ok(i));
                }
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }
}
