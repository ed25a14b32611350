//! The packet trace: every packet's fate, with a stable hash.
//!
//! Each packet sent through the simulator gets one record (and one more if it is
//! duplicated, or if its destination vanished while it was in flight). Times are
//! relative to the start of the simulation so two runs can be compared. The hash is
//! FNV-1a over a fixed binary encoding of every record, so it is stable across runs,
//! builds and platforms; keeping the hash without the records
//! ([`TraceMode::HashOnly`]) makes long scenarios cheap.

use std::io::{self, Write};
use std::net::SocketAddr;

use serde::Serialize;

use crate::link::DropReason;

/// How much of the trace the simulator keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TraceMode {
    /// Neither records nor hash.
    Off,
    /// Only the running hash and counters (constant memory).
    #[default]
    HashOnly,
    /// Every record and the hash.
    Full,
}

/// The fate of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum TraceVerdict {
    /// Delivered, at `at_us` microseconds after the start.
    Delivered {
        /// Arrival time.
        at_us: u64,
    },
    /// A duplicate copy delivered at `at_us`.
    Duplicated {
        /// Arrival time of the copy.
        at_us: u64,
    },
    /// Dropped.
    Dropped {
        /// Why.
        reason: DropReason,
    },
}

/// One trace record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TraceRecord {
    /// Packet number, in send order.
    pub id: u64,
    /// Send time, microseconds after the start.
    pub t_us: u64,
    /// Source address.
    pub src: SocketAddr,
    /// Destination address.
    pub dst: SocketAddr,
    /// UDP payload size in bytes.
    pub size: usize,
    /// What happened.
    #[serde(flatten)]
    pub verdict: TraceVerdict,
}

/// Packet counters by outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct TraceCounts {
    /// Packets sent.
    pub sent: u64,
    /// Packets delivered (duplicates included).
    pub delivered: u64,
    /// Dropped by loss.
    pub lost: u64,
    /// Dropped by a full queue.
    pub queue: u64,
    /// Dropped for exceeding the MTU.
    pub mtu: u64,
    /// Dropped by a partition.
    pub partition: u64,
    /// Dropped because a host was crashed.
    pub crash: u64,
    /// Dropped because nothing listened at the destination.
    pub no_listener: u64,
    /// Dropped because the receiving socket's buffer was full.
    pub recv_buffer: u64,
    /// Bytes delivered.
    pub bytes_delivered: u64,
}

/// A trace being recorded.
#[derive(Debug, Clone)]
pub struct Trace {
    mode: TraceMode,
    hash: u64,
    records: Vec<TraceRecord>,
    counts: TraceCounts,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Trace {
    /// An empty trace.
    pub fn new(mode: TraceMode) -> Self {
        Self {
            mode,
            hash: FNV_OFFSET,
            records: Vec::new(),
            counts: TraceCounts::default(),
        }
    }

    fn mix(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.hash ^= u64::from(*b);
            self.hash = self.hash.wrapping_mul(FNV_PRIME);
        }
    }

    fn mix_addr(&mut self, addr: SocketAddr) {
        match addr.ip() {
            std::net::IpAddr::V4(ip) => self.mix(&ip.octets()),
            std::net::IpAddr::V6(ip) => self.mix(&ip.octets()),
        }
        self.mix(&addr.port().to_le_bytes());
    }

    /// Counts a packet handed to the network.
    pub fn on_send(&mut self) {
        self.counts.sent += 1;
    }

    /// Adds a record: drops are recorded when decided (at send time, or at arrival if
    /// the destination vanished meanwhile), deliveries when they happen.
    pub fn record(&mut self, rec: TraceRecord) {
        let c = &mut self.counts;
        match rec.verdict {
            TraceVerdict::Delivered { .. } | TraceVerdict::Duplicated { .. } => {
                c.delivered += 1;
                c.bytes_delivered += rec.size as u64;
            }
            TraceVerdict::Dropped { reason } => match reason {
                DropReason::Loss => c.lost += 1,
                DropReason::Queue => c.queue += 1,
                DropReason::Mtu => c.mtu += 1,
                DropReason::Partition => c.partition += 1,
                DropReason::Crash => c.crash += 1,
                DropReason::NoListener => c.no_listener += 1,
                DropReason::RecvBuffer => c.recv_buffer += 1,
            },
        }
        if self.mode == TraceMode::Off {
            return;
        }
        self.mix(&rec.id.to_le_bytes());
        self.mix(&rec.t_us.to_le_bytes());
        self.mix_addr(rec.src);
        self.mix_addr(rec.dst);
        self.mix(&(rec.size as u64).to_le_bytes());
        match rec.verdict {
            TraceVerdict::Delivered { at_us } => {
                self.mix(&[0]);
                self.mix(&at_us.to_le_bytes());
            }
            TraceVerdict::Duplicated { at_us } => {
                self.mix(&[1]);
                self.mix(&at_us.to_le_bytes());
            }
            TraceVerdict::Dropped { reason } => self.mix(&[2, reason as u8]),
        }
        if self.mode == TraceMode::Full {
            self.records.push(rec);
        }
    }

    /// The stable hash of every record so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// Counters by outcome.
    pub fn counts(&self) -> TraceCounts {
        self.counts
    }

    /// The records (empty unless [`TraceMode::Full`]).
    pub fn records(&self) -> &[TraceRecord] {
        &self.records
    }

    /// Writes the records as JSON lines.
    pub fn write_jsonl(&self, mut out: impl Write) -> io::Result<()> {
        for rec in &self.records {
            serde_json::to_writer(&mut out, rec)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }
}
