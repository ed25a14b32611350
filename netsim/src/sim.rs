//! The simulator: hosts in regions, directional links, faults, and a delivery pump.
//!
//! [`Sim`] is a cheap handle (clone it freely). All state lives behind one mutex;
//! the simulation runs on one current-thread tokio runtime, so the lock is never
//! contended, but quinn requires sockets to be `Send + Sync`.
//!
//! Packets in flight wait in a heap ordered by arrival time (then send order); one
//! pump task sleeps until the earliest arrival, moves every due packet into its
//! destination socket, and wakes the socket's reader. With tokio's clock paused the
//! runtime jumps straight to the next timer, so simulated time costs only the work
//! done in it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Waker;
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::link::{DropReason, LinkParams, LinkState, Loss, Verdict};
use crate::topology;
use crate::trace::{Trace, TraceCounts, TraceMode, TraceRecord, TraceVerdict};

/// One-way latency between hosts whose regions the built-in topology does not know
/// and no rule covers.
pub const DEFAULT_ONE_WAY: Duration = Duration::from_millis(1);

/// Datagrams a socket buffers before further arrivals are dropped (about 8 MB of
/// full-size packets, like a tuned kernel socket buffer).
pub const DEFAULT_RECV_BUFFER: usize = 8192;

/// A host in the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(pub(crate) usize);

/// Which traffic a link rule or fault applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Side {
    /// Every host.
    Any,
    /// One host.
    Host(HostId),
    /// Every host in a region.
    Region(String),
}

impl From<HostId> for Side {
    fn from(h: HostId) -> Self {
        Self::Host(h)
    }
}

impl Side {
    /// Every host in `name`.
    pub fn region(name: impl Into<String>) -> Self {
        Self::Region(name.into())
    }

    fn matches(&self, host: HostId, region: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Host(h) => *h == host,
            Self::Region(r) => r == region,
        }
    }
}

/// A change to some of a link's parameters; fields left `None` keep their value.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkPatch {
    /// One-way latency.
    pub latency: Option<Duration>,
    /// Jitter.
    pub jitter: Option<Duration>,
    /// Loss model.
    pub loss: Option<Loss>,
    /// Bandwidth (`Some(None)` makes it unlimited).
    pub bandwidth_bps: Option<Option<u64>>,
    /// Queue delay budget.
    pub queue_budget: Option<Duration>,
    /// MTU.
    pub mtu: Option<usize>,
    /// Reordering.
    pub reorder: Option<bool>,
    /// Duplication probability.
    pub duplicate: Option<f64>,
}

impl LinkPatch {
    /// A patch that sets every parameter to `p`.
    pub fn all(p: LinkParams) -> Self {
        Self {
            latency: Some(p.latency),
            jitter: Some(p.jitter),
            loss: Some(p.loss),
            bandwidth_bps: Some(p.bandwidth_bps),
            queue_budget: Some(p.queue_budget),
            mtu: Some(p.mtu),
            reorder: Some(p.reorder),
            duplicate: Some(p.duplicate),
        }
    }

    fn apply(&self, p: &mut LinkParams) {
        macro_rules! set {
            ($($f:ident),*) => { $(if let Some(v) = self.$f { p.$f = v; })* };
        }
        set!(
            latency,
            jitter,
            loss,
            bandwidth_bps,
            queue_budget,
            mtu,
            reorder,
            duplicate
        );
    }
}

/// A fault to apply now ([`Sim::apply`]) or later ([`Sim::schedule`]).
#[derive(Debug, Clone)]
pub enum Fault {
    /// Drop all traffic from `from` to `to` (and back, if `both_ways`).
    Partition {
        /// Sending side.
        from: Side,
        /// Receiving side.
        to: Side,
        /// Also drop the reverse direction.
        both_ways: bool,
    },
    /// Remove partitions between `a` and `b` (both directions).
    Heal {
        /// One side.
        a: Side,
        /// The other side.
        b: Side,
    },
    /// Add `extra` one-way delay from `from` to `to` for `duration`.
    LatencySpike {
        /// Sending side.
        from: Side,
        /// Receiving side.
        to: Side,
        /// Extra delay.
        extra: Duration,
        /// How long the spike lasts.
        duration: Duration,
    },
    /// Change some link parameters (for example the loss) from `from` to `to`.
    Patch {
        /// Sending side.
        from: Side,
        /// Receiving side.
        to: Side,
        /// The change.
        patch: LinkPatch,
    },
    /// The host stops: its sockets die and all its traffic is dropped.
    Crash(HostId),
    /// A crashed host comes back (with no sockets: bind new ones).
    Restart(HostId),
    /// The host's first address changes (NAT rebinding, network switch); its
    /// sockets move to the new address, keeping their ports.
    ChangeAddress(HostId),
}

#[derive(Debug)]
struct Host {
    name: String,
    region: String,
    addrs: Vec<IpAddr>,
    up: bool,
    incarnation: u64,
}

#[derive(Debug)]
pub(crate) struct Datagram {
    pub(crate) src: SocketAddr,
    pub(crate) dst: SocketAddr,
    pub(crate) data: Bytes,
}

#[derive(Debug)]
pub(crate) struct SocketSlot {
    pub(crate) addr: SocketAddr,
    pub(crate) host: HostId,
    pub(crate) incarnation: u64,
    pub(crate) inbox: VecDeque<Datagram>,
    pub(crate) waker: Option<Waker>,
    capacity: usize,
}

/// A packet on its way, ordered by arrival time then by enqueue order, so packets
/// due at the same instant arrive in the order they were sent (deterministic).
struct InFlight {
    at: Instant,
    seq: u64,
    id: u64,
    sent_us: u64,
    duplicate: bool,
    dgram: Datagram,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

pub(crate) struct Core {
    start: Instant,
    rng: ChaCha8Rng,
    trace: Trace,
    hosts: Vec<Host>,
    addr_to_host: HashMap<IpAddr, HostId>,
    pub(crate) sockets: HashMap<u64, SocketSlot>,
    bindings: HashMap<SocketAddr, u64>,
    next_socket: u64,
    next_ip: u32,
    next_packet: u64,
    links: HashMap<(HostId, HostId), LinkState>,
    patches: Vec<(Side, Side, LinkPatch)>,
    partitions: Vec<(Side, Side)>,
    spikes: Vec<(Side, Side, Duration, Instant)>,
    heap: BinaryHeap<Reverse<InFlight>>,
    next_seq: u64,
    pump_deadline: Option<Instant>,
}

pub(crate) struct Shared {
    pub(crate) core: Mutex<Core>,
    pump: Arc<Notify>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Let the pump notice that the simulation is gone and end.
        self.pump.notify_one();
    }
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock only happens in a failing test; keep going.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Handle to a simulated network.
#[derive(Clone)]
pub struct Sim {
    pub(crate) shared: Arc<Shared>,
    seed: u64,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// A new network seeded with `seed`, keeping the trace hash only.
    ///
    /// Must be called inside a tokio runtime (it spawns the delivery pump); use a
    /// current-thread runtime with paused time ([`crate::runtime`]) for simulated time.
    pub fn new(seed: u64) -> Self {
        Self::with_trace(seed, TraceMode::HashOnly)
    }

    /// A new network with the given trace mode.
    pub fn with_trace(seed: u64, mode: TraceMode) -> Self {
        let shared = Arc::new(Shared {
            core: Mutex::new(Core {
                start: Instant::now(),
                rng: ChaCha8Rng::seed_from_u64(seed),
                trace: Trace::new(mode),
                hosts: Vec::new(),
                addr_to_host: HashMap::new(),
                sockets: HashMap::new(),
                bindings: HashMap::new(),
                next_socket: 0,
                next_ip: 0,
                next_packet: 0,
                links: HashMap::new(),
                patches: Vec::new(),
                partitions: Vec::new(),
                spikes: Vec::new(),
                heap: BinaryHeap::new(),
                next_seq: 0,
                pump_deadline: None,
            }),
            pump: Arc::new(Notify::new()),
        });
        tokio::spawn(pump(Arc::downgrade(&shared), shared.pump.clone()));
        Self { shared, seed }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Simulated time since the network was created.
    pub fn elapsed(&self) -> Duration {
        self.shared.lock().start.elapsed()
    }

    /// Adds a host in `region` with one fresh address. Regions of the built-in
    /// topology ([`topology::REGIONS`]) get calibrated latencies to each other.
    pub fn add_host(&self, name: impl Into<String>, region: impl Into<String>) -> HostId {
        let mut core = self.shared.lock();
        let id = HostId(core.hosts.len());
        let ip = core.fresh_ip();
        core.addr_to_host.insert(ip, id);
        core.hosts.push(Host {
            name: name.into(),
            region: region.into(),
            addrs: vec![ip],
            up: true,
            incarnation: 0,
        });
        id
    }

    /// Gives `host` one more address and returns it.
    pub fn add_address(&self, host: HostId) -> IpAddr {
        let mut core = self.shared.lock();
        let ip = core.fresh_ip();
        core.addr_to_host.insert(ip, host);
        core.hosts[host.0].addrs.push(ip);
        ip
    }

    /// The host's addresses (the first is its primary).
    pub fn addrs(&self, host: HostId) -> Vec<IpAddr> {
        self.shared.lock().hosts[host.0].addrs.clone()
    }

    /// The host's primary address.
    pub fn ip(&self, host: HostId) -> IpAddr {
        self.shared.lock().hosts[host.0].addrs[0]
    }

    /// The host's name.
    pub fn host_name(&self, host: HostId) -> String {
        self.shared.lock().hosts[host.0].name.clone()
    }

    /// Sets every parameter of the links from `from` to `to` (one direction).
    /// Later rules override earlier ones where both apply.
    pub fn set_link(&self, from: impl Into<Side>, to: impl Into<Side>, params: LinkParams) {
        self.patch_link(from, to, LinkPatch::all(params));
    }

    /// Sets the links both ways between `a` and `b`.
    pub fn set_link_both(&self, a: impl Into<Side>, b: impl Into<Side>, params: LinkParams) {
        let (a, b) = (a.into(), b.into());
        self.set_link(a.clone(), b.clone(), params);
        self.set_link(b, a, params);
    }

    /// Changes some parameters of the links from `from` to `to`.
    pub fn patch_link(&self, from: impl Into<Side>, to: impl Into<Side>, patch: LinkPatch) {
        self.apply(Fault::Patch {
            from: from.into(),
            to: to.into(),
            patch,
        });
    }

    /// The parameters now in force from host `from` to host `to`.
    pub fn link_params(&self, from: HostId, to: HostId) -> LinkParams {
        self.shared.lock().link(from, to).params
    }

    /// Applies a fault now.
    pub fn apply(&self, fault: Fault) {
        let mut core = self.shared.lock();
        let now = Instant::now();
        match fault {
            Fault::Partition {
                from,
                to,
                both_ways,
            } => {
                if both_ways {
                    core.partitions.push((to.clone(), from.clone()));
                }
                core.partitions.push((from, to));
            }
            Fault::Heal { a, b } => core
                .partitions
                .retain(|(f, t)| !((*f == a && *t == b) || (*f == b && *t == a))),
            Fault::LatencySpike {
                from,
                to,
                extra,
                duration,
            } => core.spikes.push((from, to, extra, now + duration)),
            Fault::Patch { from, to, patch } => core.patches.push((from, to, patch)),
            Fault::Crash(host) => {
                let h = &mut core.hosts[host.0];
                h.up = false;
                h.incarnation += 1;
                core.close_sockets_of(host);
            }
            Fault::Restart(host) => core.hosts[host.0].up = true,
            Fault::ChangeAddress(host) => {
                let new_ip = core.fresh_ip();
                let old_ip = std::mem::replace(&mut core.hosts[host.0].addrs[0], new_ip);
                core.addr_to_host.remove(&old_ip);
                core.addr_to_host.insert(new_ip, host);
                let moved: Vec<(SocketAddr, u64)> = core
                    .bindings
                    .iter()
                    .filter(|(a, _)| a.ip() == old_ip)
                    .map(|(a, id)| (*a, *id))
                    .collect();
                for (old, id) in moved {
                    let new = SocketAddr::new(new_ip, old.port());
                    core.bindings.remove(&old);
                    core.bindings.insert(new, id);
                    if let Some(slot) = core.sockets.get_mut(&id) {
                        slot.addr = new;
                    }
                }
            }
        }
        core.refresh_links();
    }

    /// Partitions `a` and `b` in both directions.
    pub fn partition(&self, a: impl Into<Side>, b: impl Into<Side>) {
        self.apply(Fault::Partition {
            from: a.into(),
            to: b.into(),
            both_ways: true,
        });
    }

    /// Removes partitions between `a` and `b`.
    pub fn heal(&self, a: impl Into<Side>, b: impl Into<Side>) {
        self.apply(Fault::Heal {
            a: a.into(),
            b: b.into(),
        });
    }

    /// Applies `fault` after `delay` of simulated time.
    pub fn schedule(&self, delay: Duration, fault: Fault) {
        let sim = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            sim.apply(fault);
        });
    }

    /// Whether the host is up.
    pub fn is_up(&self, host: HostId) -> bool {
        self.shared.lock().hosts[host.0].up
    }

    /// The trace's stable hash so far.
    pub fn trace_hash(&self) -> u64 {
        self.shared.lock().trace.hash()
    }

    /// Packet counters so far.
    pub fn counts(&self) -> TraceCounts {
        self.shared.lock().trace.counts()
    }

    /// A copy of the trace (records only with [`TraceMode::Full`]).
    pub fn trace(&self) -> Trace {
        self.shared.lock().trace.clone()
    }

    /// A quinn endpoint configuration whose random seed derives from the simulation's
    /// seed, so connection ids and other quinn randomness repeat run to run.
    pub fn endpoint_config(&self) -> quinn::EndpointConfig {
        let mut seed = [0u8; 32];
        self.shared.lock().rng.fill(&mut seed);
        let mut cfg = quinn::EndpointConfig::default();
        cfg.rng_seed(Some(seed));
        cfg
    }

    /// Binds a UDP socket on `host`'s primary address; port 0 picks a free port.
    pub(crate) fn bind_slot(&self, host: HostId, port: u16) -> io::Result<u64> {
        let mut core = self.shared.lock();
        let h = &core.hosts[host.0];
        if !h.up {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "host is crashed",
            ));
        }
        let ip = h.addrs[0];
        let incarnation = h.incarnation;
        let port = if port == 0 {
            (49152..=u16::MAX)
                .find(|p| !core.bindings.contains_key(&SocketAddr::new(ip, *p)))
                .ok_or_else(|| io::Error::new(io::ErrorKind::AddrInUse, "no free port"))?
        } else {
            port
        };
        let addr = SocketAddr::new(ip, port);
        if core.bindings.contains_key(&addr) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} in use"),
            ));
        }
        let id = core.next_socket;
        core.next_socket += 1;
        core.bindings.insert(addr, id);
        core.sockets.insert(
            id,
            SocketSlot {
                addr,
                host,
                incarnation,
                inbox: VecDeque::new(),
                waker: None,
                capacity: DEFAULT_RECV_BUFFER,
            },
        );
        Ok(id)
    }

    pub(crate) fn unbind(&self, id: u64) {
        let mut core = self.shared.lock();
        if let Some(slot) = core.sockets.remove(&id) {
            if core.bindings.get(&slot.addr) == Some(&id) {
                core.bindings.remove(&slot.addr);
            }
        }
    }

    /// Sends one datagram from socket `id` (already split into single datagrams).
    pub(crate) fn send(&self, id: u64, dst: SocketAddr, data: &[u8]) {
        let mut core = self.shared.lock();
        let Some(slot) = core.sockets.get(&id) else {
            return;
        };
        let (src, src_host, incarnation) = (slot.addr, slot.host, slot.incarnation);
        let now = Instant::now();
        let sent_us = core.micros(now);
        let pid = core.next_packet;
        core.next_packet += 1;
        core.trace.on_send();
        let record = |verdict| TraceRecord {
            id: pid,
            t_us: sent_us,
            src,
            dst,
            size: data.len(),
            verdict,
        };
        let src_alive = {
            let h = &core.hosts[src_host.0];
            h.up && h.incarnation == incarnation
        };
        if !src_alive {
            core.trace.record(record(TraceVerdict::Dropped {
                reason: DropReason::Crash,
            }));
            return;
        }
        let Some(&dst_host) = core.addr_to_host.get(&dst.ip()) else {
            core.trace.record(record(TraceVerdict::Dropped {
                reason: DropReason::NoListener,
            }));
            return;
        };
        core.link(src_host, dst_host);
        let Core { links, rng, .. } = &mut *core;
        let verdict = match links.get_mut(&(src_host, dst_host)) {
            Some(link) => link.handle_packet(now, data.len(), rng),
            None => Verdict::Drop(DropReason::NoListener),
        };
        match verdict {
            Verdict::Drop(reason) => core.trace.record(record(TraceVerdict::Dropped { reason })),
            Verdict::Deliver { at, duplicate_at } => {
                let data = Bytes::copy_from_slice(data);
                if let Some(dup) = duplicate_at {
                    core.enqueue(dup, pid, sent_us, true, src, dst, data.clone());
                }
                core.enqueue(at, pid, sent_us, false, src, dst, data);
                if core
                    .pump_deadline
                    .is_none_or(|d| at < d || duplicate_at.is_some_and(|x| x < d))
                {
                    self.shared.pump.notify_one();
                }
            }
        }
    }
}

impl Core {
    fn fresh_ip(&mut self) -> IpAddr {
        // 198.18.0.0/15 is reserved for network benchmark tests (RFC 2544): these
        // addresses exist only inside the simulator.
        let n = self.next_ip;
        self.next_ip += 1;
        let [_, _, hi, lo] = (n + 1).to_be_bytes();
        IpAddr::V4(Ipv4Addr::new(198, 18 + ((n >> 16) & 1) as u8, hi, lo))
    }

    fn micros(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.start).as_micros()).unwrap_or(u64::MAX)
    }

    /// The link state from `a` to `b`, created from the rules on first use.
    fn link(&mut self, a: HostId, b: HostId) -> &mut LinkState {
        if !self.links.contains_key(&(a, b)) {
            let mut state = LinkState::new(LinkParams::default());
            self.configure(a, b, &mut state);
            self.links.insert((a, b), state);
        }
        self.links.get_mut(&(a, b)).expect("inserted above")
    }

    fn configure(&self, a: HostId, b: HostId, state: &mut LinkState) {
        let (ra, rb) = (&self.hosts[a.0].region, &self.hosts[b.0].region);
        let mut params =
            LinkParams::with_latency(topology::one_way(ra, rb).unwrap_or(DEFAULT_ONE_WAY));
        for (from, to, patch) in &self.patches {
            if from.matches(a, ra) && to.matches(b, rb) {
                patch.apply(&mut params);
            }
        }
        state.params = params;
        state.partitioned = self
            .partitions
            .iter()
            .any(|(f, t)| f.matches(a, ra) && t.matches(b, rb));
        state.spike = self
            .spikes
            .iter()
            .filter(|(f, t, _, _)| f.matches(a, ra) && t.matches(b, rb))
            .map(|(_, _, extra, until)| (*extra, *until))
            .max_by_key(|(_, until)| *until);
    }

    fn refresh_links(&mut self) {
        let now = Instant::now();
        self.spikes.retain(|(_, _, _, until)| *until > now);
        let mut links = std::mem::take(&mut self.links);
        for ((a, b), state) in links.iter_mut() {
            self.configure(*a, *b, state);
        }
        self.links = links;
    }

    fn close_sockets_of(&mut self, host: HostId) {
        // A crashed process's ports are free again after a restart.
        let bindings = &mut self.bindings;
        for (id, slot) in self.sockets.iter_mut().filter(|(_, s)| s.host == host) {
            if bindings.get(&slot.addr) == Some(id) {
                bindings.remove(&slot.addr);
            }
            slot.inbox.clear();
            if let Some(w) = slot.waker.take() {
                w.wake();
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn enqueue(
        &mut self,
        at: Instant,
        id: u64,
        sent_us: u64,
        duplicate: bool,
        src: SocketAddr,
        dst: SocketAddr,
        data: Bytes,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse(InFlight {
            at,
            seq,
            id,
            sent_us,
            duplicate,
            dgram: Datagram { src, dst, data },
        }));
    }

    /// Delivers every packet due at `now`; returns the next arrival time.
    fn deliver_due(&mut self, now: Instant) -> Option<Instant> {
        while let Some(Reverse(next)) = self.heap.peek() {
            if next.at > now {
                return Some(next.at);
            }
            let Some(Reverse(p)) = self.heap.pop() else {
                break;
            };
            let at = p.at;
            let at_us = self.micros(at);
            let mut rec = TraceRecord {
                id: p.id,
                t_us: p.sent_us,
                src: p.dgram.src,
                dst: p.dgram.dst,
                size: p.dgram.data.len(),
                verdict: if p.duplicate {
                    TraceVerdict::Duplicated { at_us }
                } else {
                    TraceVerdict::Delivered { at_us }
                },
            };
            let target = self.bindings.get(&p.dgram.dst).copied();
            let reason = match target.and_then(|id| self.sockets.get_mut(&id)) {
                None => Some(DropReason::NoListener),
                Some(slot) => {
                    let h = &self.hosts[slot.host.0];
                    if !h.up || h.incarnation != slot.incarnation {
                        Some(DropReason::Crash)
                    } else if slot.inbox.len() >= slot.capacity {
                        Some(DropReason::RecvBuffer)
                    } else {
                        slot.inbox.push_back(p.dgram);
                        if let Some(w) = slot.waker.take() {
                            w.wake();
                        }
                        None
                    }
                }
            };
            if let Some(reason) = reason {
                rec.verdict = TraceVerdict::Dropped { reason };
            }
            self.trace.record(rec);
        }
        None
    }

    /// Whether socket `id` belongs to a live incarnation of its host.
    pub(crate) fn socket_alive(&self, id: u64) -> bool {
        self.sockets.get(&id).is_some_and(|s| {
            let h = &self.hosts[s.host.0];
            h.up && h.incarnation == s.incarnation
        })
    }
}

/// The delivery pump: sleeps until the next arrival, delivers, repeats. Ends when the
/// simulation is dropped (it holds only a weak reference between rounds).
async fn pump(shared: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(strong) = shared.upgrade() else {
                return;
            };
            let mut core = strong.lock();
            let next = core.deliver_due(Instant::now());
            core.pump_deadline = next;
            next
        };
        match next {
            Some(at) => {
                tokio::select! {
                    biased;
                    () = wake.notified() => {}
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            None => wake.notified().await,
        }
    }
}
