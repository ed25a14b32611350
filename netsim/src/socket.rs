//! The quinn adapter: a simulated UDP socket implementing quinn 0.11's
//! `AsyncUdpSocket`.
//!
//! Everything quinn-version-specific lives in this file (quinn's socket traits change
//! in its next release). The socket never blocks on send (the simulated NIC is
//! infinitely fast; links model the bottlenecks) and reads from its inbox, which the
//! simulator's delivery pump fills.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Endpoint, EndpointConfig, ServerConfig, UdpPoller};

use crate::sim::{HostId, Sim};

/// A UDP socket on a simulated host.
pub struct SimSocket {
    sim: Sim,
    id: u64,
}

impl fmt::Debug for SimSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimSocket")
            .field("id", &self.id)
            .field("addr", &self.local_addr().ok())
            .finish()
    }
}

impl Drop for SimSocket {
    fn drop(&mut self) {
        self.sim.unbind(self.id);
    }
}

impl SimSocket {
    /// Binds a socket on `host` at `port` (0 picks a free one).
    pub fn bind(sim: &Sim, host: HostId, port: u16) -> io::Result<Self> {
        let id = sim.bind_slot(host, port)?;
        Ok(Self {
            sim: sim.clone(),
            id,
        })
    }

    /// The bound address (panics if the socket was closed; for tests).
    pub fn local_addr_for_tests(&self) -> SocketAddr {
        AsyncUdpSocket::local_addr(self).expect("socket is bound")
    }

    /// Sends one datagram (for tests that speak raw UDP).
    pub fn send_to(&self, data: &[u8], dst: SocketAddr) {
        self.sim.send(self.id, dst, data);
    }

    /// Receives one datagram (for tests that speak raw UDP).
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        std::future::poll_fn(|cx| {
            let mut meta = [RecvMeta::default()];
            let mut bufs = [IoSliceMut::new(buf)];
            match self.poll_recv(cx, &mut bufs, &mut meta) {
                Poll::Ready(Ok(_)) => Poll::Ready(Ok((meta[0].len, meta[0].addr))),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncUdpSocket for SimSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        match transmit.segment_size {
            Some(seg) if seg > 0 && seg < transmit.contents.len() => {
                for chunk in transmit.contents.chunks(seg) {
                    self.sim.send(self.id, transmit.destination, chunk);
                }
            }
            _ => self
                .sim
                .send(self.id, transmit.destination, transmit.contents),
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut core = self.sim.shared.lock();
        if !core.socket_alive(self.id) {
            // A crashed host's sockets never receive again; the endpoint goes quiet
            // as a dead process would.
            return Poll::Pending;
        }
        let Some(slot) = core.sockets.get_mut(&self.id) else {
            return Poll::Pending;
        };
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let Some(d) = slot.inbox.pop_front() else {
                break;
            };
            let len = d.data.len().min(bufs[n].len());
            bufs[n][..len].copy_from_slice(&d.data[..len]);
            meta[n] = RecvMeta {
                addr: d.src,
                len,
                stride: len,
                ecn: None,
                dst_ip: Some(d.dst.ip()),
            };
            n += 1;
        }
        if n == 0 {
            slot.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(n))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sim
            .shared
            .lock()
            .sockets
            .get(&self.id)
            .map(|s| s.addr)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "socket closed"))
    }

    fn may_fragment(&self) -> bool {
        // Links drop packets above their MTU, as with don't-fragment set, so quinn
        // runs path MTU discovery.
        false
    }
}

impl Sim {
    /// A quinn endpoint on `host` at `port` (0 picks one), seeded from the
    /// simulation, acting as a server if `server` is given.
    pub fn endpoint(
        &self,
        host: HostId,
        port: u16,
        server: Option<ServerConfig>,
    ) -> io::Result<Endpoint> {
        self.endpoint_with(host, port, self.endpoint_config(), server)
    }

    /// Like [`Sim::endpoint`] with an explicit endpoint configuration.
    pub fn endpoint_with(
        &self,
        host: HostId,
        port: u16,
        config: EndpointConfig,
        server: Option<ServerConfig>,
    ) -> io::Result<Endpoint> {
        let socket = Arc::new(SimSocket::bind(self, host, port)?);
        Endpoint::new_with_abstract_socket(config, server, socket, Arc::new(quinn::TokioRuntime))
    }
}
