//! A UDP impairment proxy for tests across real processes.
//!
//! Kernel netem is not available everywhere, so this proxy applies the simulator's
//! link model ([`LinkState`]) to real UDP traffic: clients send to the proxy's
//! listen address; for each client the proxy opens its own upstream socket, so
//! replies find their way back. Each direction has its own link parameters. While it
//! runs, [`ProxyControl`] partitions, heals, spikes or re-parameterises it.
//!
//! Bounds: at most `max_clients` client addresses (further clients are ignored and
//! counted) and at most `max_in_flight` packets waiting for their delivery time
//! (further packets are dropped as a full queue).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::link::{DropReason, LinkParams, LinkState, Verdict};

/// Proxy configuration.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Address clients send to.
    pub listen: SocketAddr,
    /// Address the proxy forwards to.
    pub upstream: SocketAddr,
    /// Link from clients to upstream.
    pub to_upstream: LinkParams,
    /// Link from upstream back to clients.
    pub to_client: LinkParams,
    /// Random seed for loss and jitter.
    pub seed: u64,
    /// Most client addresses served at once. Defaults to 1,024.
    pub max_clients: usize,
    /// Most packets waiting for delivery. Defaults to 65,536.
    pub max_in_flight: usize,
}

impl ProxyConfig {
    /// A proxy with the same link parameters both ways.
    pub fn symmetric(listen: SocketAddr, upstream: SocketAddr, link: LinkParams) -> Self {
        Self {
            listen,
            upstream,
            to_upstream: link,
            to_client: link,
            seed: 0,
            max_clients: 1024,
            max_in_flight: 65_536,
        }
    }
}

/// Counters of a running proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProxyStats {
    /// Packets received from either side.
    pub received: u64,
    /// Packets forwarded.
    pub forwarded: u64,
    /// Dropped by loss.
    pub lost: u64,
    /// Dropped while partitioned.
    pub partitioned: u64,
    /// Dropped by a full queue (bandwidth budget or in-flight bound).
    pub queue: u64,
    /// Dropped for exceeding the MTU.
    pub mtu: u64,
    /// Packets from clients beyond `max_clients`.
    pub refused_clients: u64,
    /// Client addresses served.
    pub clients: u64,
}

struct Links {
    up: LinkState,
    down: LinkState,
    rng: ChaCha8Rng,
    stats: ProxyStats,
}

/// Changes a running proxy.
#[derive(Clone)]
pub struct ProxyControl {
    links: Arc<Mutex<Links>>,
}

impl std::fmt::Debug for ProxyControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyControl")
            .field("stats", &self.stats())
            .finish()
    }
}

impl ProxyControl {
    fn lock(&self) -> MutexGuard<'_, Links> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops everything in both directions until [`heal`](Self::heal).
    pub fn partition(&self) {
        let mut l = self.lock();
        l.up.partitioned = true;
        l.down.partitioned = true;
    }

    /// Ends a partition.
    pub fn heal(&self) {
        let mut l = self.lock();
        l.up.partitioned = false;
        l.down.partitioned = false;
    }

    /// Adds `extra` one-way delay in both directions for `duration`.
    pub fn spike(&self, extra: Duration, duration: Duration) {
        let until = Instant::now() + duration;
        let mut l = self.lock();
        l.up.spike = Some((extra, until));
        l.down.spike = Some((extra, until));
    }

    /// Replaces the link parameters of both directions.
    pub fn set_params(&self, params: LinkParams) {
        let mut l = self.lock();
        l.up.params = params;
        l.down.params = params;
    }

    /// Changes some parameters of both directions.
    pub fn update(&self, f: impl Fn(&mut LinkParams)) {
        let mut l = self.lock();
        f(&mut l.up.params);
        f(&mut l.down.params);
    }

    /// The current parameters (client → upstream direction).
    pub fn params(&self) -> LinkParams {
        self.lock().up.params
    }

    /// Counters so far.
    pub fn stats(&self) -> ProxyStats {
        self.lock().stats
    }
}

/// A running proxy. Dropping it stops it.
#[derive(Debug)]
pub struct UdpProxy {
    local_addr: SocketAddr,
    control: ProxyControl,
    task: JoinHandle<()>,
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Via {
    Upstream(Arc<UdpSocket>),
    Client(SocketAddr),
}

struct Pending {
    via: Via,
    data: Vec<u8>,
}

impl UdpProxy {
    /// Binds the listen address and starts forwarding.
    pub async fn start(config: ProxyConfig) -> io::Result<Self> {
        let listen = Arc::new(UdpSocket::bind(config.listen).await?);
        let local_addr = listen.local_addr()?;
        let control = ProxyControl {
            links: Arc::new(Mutex::new(Links {
                up: LinkState::new(config.to_upstream),
                down: LinkState::new(config.to_client),
                rng: ChaCha8Rng::seed_from_u64(config.seed),
                stats: ProxyStats::default(),
            })),
        };
        let task = tokio::spawn(run(config, listen, control.clone()));
        Ok(Self {
            local_addr,
            control,
            task,
        })
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle to change the proxy while it runs.
    pub fn control(&self) -> ProxyControl {
        self.control.clone()
    }
}

async fn run(config: ProxyConfig, listen: Arc<UdpSocket>, control: ProxyControl) {
    let mut clients: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let (reply_tx, mut reply_rx) = mpsc::channel::<(SocketAddr, Vec<u8>)>(1024);
    let mut heap: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut seq = 0u64;
    let mut buf = vec![0u8; 65_536];

    loop {
        let next = heap.peek().map(|Reverse((at, _))| *at);
        let far = Instant::now() + Duration::from_secs(3600);
        let (data, via, upstream) = tokio::select! {
            biased;
            () = tokio::time::sleep_until(next.unwrap_or(far)), if next.is_some() => {
                let now = Instant::now();
                while let Some(&Reverse((at, id))) = heap.peek() {
                    if at > now {
                        break;
                    }
                    heap.pop();
                    if let Some(p) = pending.remove(&id) {
                        let sent = match p.via {
                            Via::Upstream(sock) => sock.send(&p.data).await,
                            Via::Client(addr) => listen.send_to(&p.data, addr).await,
                        };
                        if sent.is_ok() {
                            control.lock().stats.forwarded += 1;
                        }
                    }
                }
                continue;
            }
            reply = reply_rx.recv() => {
                let Some((client, data)) = reply else { return };
                (data, Via::Client(client), false)
            }
            res = listen.recv_from(&mut buf) => {
                let Ok((n, from)) = res else { continue };
                let sock = match clients.get(&from) {
                    Some(s) => s.clone(),
                    None => {
                        if clients.len() >= config.max_clients {
                            control.lock().stats.refused_clients += 1;
                            continue;
                        }
                        let Ok(sock) = open_upstream(config.upstream, from, reply_tx.clone()).await else {
                            continue;
                        };
                        clients.insert(from, sock.clone());
                        control.lock().stats.clients += 1;
                        sock
                    }
                };
                (buf[..n].to_vec(), Via::Upstream(sock), true)
            }
        };

        let now = Instant::now();
        let verdict = {
            let mut guard = control.lock();
            let l = &mut *guard;
            l.stats.received += 1;
            let link = if upstream { &mut l.up } else { &mut l.down };
            let v = if pending.len() >= config.max_in_flight {
                Verdict::Drop(DropReason::Queue)
            } else {
                link.handle_packet(now, data.len(), &mut l.rng)
            };
            match v {
                Verdict::Drop(DropReason::Loss) => l.stats.lost += 1,
                Verdict::Drop(DropReason::Partition) => l.stats.partitioned += 1,
                Verdict::Drop(DropReason::Mtu) => l.stats.mtu += 1,
                Verdict::Drop(_) => l.stats.queue += 1,
                Verdict::Deliver { .. } => {}
            }
            v
        };
        if let Verdict::Deliver { at, duplicate_at } = verdict {
            if let Some(dup_at) = duplicate_at {
                let copy = Pending {
                    via: match &via {
                        Via::Upstream(s) => Via::Upstream(s.clone()),
                        Via::Client(a) => Via::Client(*a),
                    },
                    data: data.clone(),
                };
                heap.push(Reverse((dup_at, seq)));
                pending.insert(seq, copy);
                seq += 1;
            }
            heap.push(Reverse((at, seq)));
            pending.insert(seq, Pending { via, data });
            seq += 1;
        }
    }
}

/// Opens the upstream socket for one client and forwards its replies to the proxy
/// loop.
async fn open_upstream(
    upstream: SocketAddr,
    client: SocketAddr,
    replies: mpsc::Sender<(SocketAddr, Vec<u8>)>,
) -> io::Result<Arc<UdpSocket>> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        "127.0.0.1:0".parse().map_err(io::Error::other)?
    } else {
        "[::1]:0".parse().map_err(io::Error::other)?
    };
    let sock = Arc::new(UdpSocket::bind(bind).await?);
    sock.connect(upstream).await?;
    let reader = sock.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok(n) = reader.recv(&mut buf).await {
            if replies.send((client, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    });
    Ok(sock)
}
