//! The link model: what happens to one packet on one directional link.
//!
//! [`LinkState::handle_packet`] is a pure function of the link's parameters, its
//! state (bandwidth queue, burst-loss state, last delivery time), the time and a
//! random source: it returns when the packet arrives or why it was dropped. The
//! simulator and the real-socket impairment proxy both use it, so a scenario
//! behaves the same in process and across processes.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Packet loss on a link.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Loss {
    /// No loss.
    None,
    /// Each packet is lost independently with this probability (0..=1).
    Independent(f64),
    /// Gilbert–Elliott two-state bursty loss: a good state (loss `loss_good`) and a
    /// bad state (loss `loss_bad`), with per-packet transition probabilities.
    GilbertElliott {
        /// Probability of moving from good to bad, per packet.
        p_good_to_bad: f64,
        /// Probability of moving from bad to good, per packet.
        p_bad_to_good: f64,
        /// Loss probability in the good state.
        loss_good: f64,
        /// Loss probability in the bad state.
        loss_bad: f64,
    },
}

impl Loss {
    /// Bursty loss with an average loss `rate` and bursts of `mean_burst` packets on
    /// average (every packet is lost in the bad state, none in the good one).
    ///
    /// The bad state lasts a geometric number of packets with mean
    /// `1 / p_bad_to_good`; the stationary share of bad packets is
    /// `p_gb / (p_gb + p_bg)`, solved here for `rate`.
    pub fn bursty(rate: f64, mean_burst: f64) -> Self {
        let rate = rate.clamp(0.0, 0.999);
        let p_bad_to_good = 1.0 / mean_burst.max(1.0);
        let p_good_to_bad = rate * p_bad_to_good / (1.0 - rate);
        Self::GilbertElliott {
            p_good_to_bad,
            p_bad_to_good,
            loss_good: 0.0,
            loss_bad: 1.0,
        }
    }

    /// Long-run loss rate.
    pub fn mean_rate(&self) -> f64 {
        match *self {
            Self::None => 0.0,
            Self::Independent(p) => p,
            Self::GilbertElliott {
                p_good_to_bad,
                p_bad_to_good,
                loss_good,
                loss_bad,
            } => {
                let total = p_good_to_bad + p_bad_to_good;
                if total == 0.0 {
                    return loss_good;
                }
                let bad = p_good_to_bad / total;
                bad * loss_bad + (1.0 - bad) * loss_good
            }
        }
    }
}

/// Parameters of one directional link. Defaults: no delay, no loss, unlimited
/// bandwidth, MTU 1,472 bytes (a 1,500-byte Ethernet frame less IP and UDP headers),
/// no reordering, no duplication.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkParams {
    /// One-way propagation delay.
    pub latency: Duration,
    /// Delay varies uniformly within `latency ± jitter`.
    pub jitter: Duration,
    /// Loss model.
    pub loss: Loss,
    /// Bandwidth in bits per second; `None` is unlimited.
    pub bandwidth_bps: Option<u64>,
    /// Longest a packet may wait in the bandwidth queue before it is tail-dropped.
    pub queue_budget: Duration,
    /// Largest UDP payload carried; larger packets are dropped.
    pub mtu: usize,
    /// Whether jitter may reorder packets (if not, a packet never overtakes an
    /// earlier one on the same link).
    pub reorder: bool,
    /// Probability that a packet is delivered twice.
    pub duplicate: f64,
}

impl Default for LinkParams {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: Loss::None,
            bandwidth_bps: None,
            queue_budget: Duration::from_millis(200),
            mtu: 1472,
            reorder: false,
            duplicate: 0.0,
        }
    }
}

impl LinkParams {
    /// A link with this one-way latency and otherwise default parameters.
    pub fn with_latency(latency: Duration) -> Self {
        Self {
            latency,
            ..Self::default()
        }
    }
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Random (or bursty) loss.
    Loss,
    /// The bandwidth queue's delay budget was exceeded.
    Queue,
    /// Larger than the link MTU.
    Mtu,
    /// The path is partitioned.
    Partition,
    /// The sending or receiving host is crashed.
    Crash,
    /// Nothing listens at the destination address.
    NoListener,
    /// The receiving socket's buffer was full.
    RecvBuffer,
}

/// What happens to a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered at `at`; `duplicate_at` is a second copy's arrival, if duplicated.
    Deliver {
        /// Arrival time.
        at: Instant,
        /// Arrival time of a duplicate copy.
        duplicate_at: Option<Instant>,
    },
    /// Dropped.
    Drop(DropReason),
}

/// Mutable state of one directional link.
#[derive(Debug, Clone)]
pub struct LinkState {
    /// Current parameters.
    pub params: LinkParams,
    /// Extra delay of a latency spike, until the given time.
    pub spike: Option<(Duration, Instant)>,
    /// Partitioned (everything dropped) when true.
    pub partitioned: bool,
    busy_until: Option<Instant>,
    bad_state: bool,
    last_arrival: Option<Instant>,
}

impl LinkState {
    /// A fresh link.
    pub fn new(params: LinkParams) -> Self {
        Self {
            params,
            spike: None,
            partitioned: false,
            busy_until: None,
            bad_state: false,
            last_arrival: None,
        }
    }

    /// Decides the fate of a `size`-byte packet sent at `now`.
    pub fn handle_packet(&mut self, now: Instant, size: usize, rng: &mut impl Rng) -> Verdict {
        let p = self.params;
        if self.partitioned {
            return Verdict::Drop(DropReason::Partition);
        }
        if size > p.mtu {
            return Verdict::Drop(DropReason::Mtu);
        }
        // Bandwidth: the packet waits for the link to finish earlier packets.
        let mut depart = now;
        if let Some(bps) = p.bandwidth_bps.filter(|b| *b > 0) {
            let start = self.busy_until.map_or(now, |b| b.max(now));
            if start - now > p.queue_budget {
                return Verdict::Drop(DropReason::Queue);
            }
            let tx = Duration::from_nanos((size as u64 * 8).saturating_mul(1_000_000_000) / bps);
            depart = start + tx;
            self.busy_until = Some(depart);
        }
        // Loss happens on the wire, after the queue: a lost packet still used capacity.
        if self.lose(rng) {
            return Verdict::Drop(DropReason::Loss);
        }
        let at = self.arrival(depart, rng);
        let duplicate_at = (p.duplicate > 0.0 && rng.gen_bool(p.duplicate.clamp(0.0, 1.0)))
            .then(|| self.arrival(depart, rng));
        Verdict::Deliver { at, duplicate_at }
    }

    fn lose(&mut self, rng: &mut impl Rng) -> bool {
        match self.params.loss {
            Loss::None => false,
            Loss::Independent(p) => p > 0.0 && rng.gen_bool(p.clamp(0.0, 1.0)),
            Loss::GilbertElliott {
                p_good_to_bad,
                p_bad_to_good,
                loss_good,
                loss_bad,
            } => {
                let flip = if self.bad_state {
                    p_bad_to_good
                } else {
                    p_good_to_bad
                };
                if flip > 0.0 && rng.gen_bool(flip.clamp(0.0, 1.0)) {
                    self.bad_state = !self.bad_state;
                }
                let loss = if self.bad_state { loss_bad } else { loss_good };
                loss > 0.0 && rng.gen_bool(loss.clamp(0.0, 1.0))
            }
        }
    }

    fn arrival(&mut self, depart: Instant, rng: &mut impl Rng) -> Instant {
        let p = self.params;
        let mut delay = p.latency;
        if !p.jitter.is_zero() {
            let j = p.jitter.as_nanos() as i64;
            let offset = rng.gen_range(-j..=j);
            delay = if offset >= 0 {
                delay + Duration::from_nanos(offset as u64)
            } else {
                delay.saturating_sub(Duration::from_nanos(offset.unsigned_abs()))
            };
        }
        if let Some((extra, until)) = self.spike {
            if depart < until {
                delay += extra;
            } else {
                self.spike = None;
            }
        }
        let mut at = depart + delay;
        if !p.reorder {
            if let Some(last) = self.last_arrival {
                at = at.max(last);
            }
            self.last_arrival = Some(at);
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn rng() -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(7)
    }

    #[test]
    fn latency_and_fifo_under_jitter() {
        let now = Instant::now();
        let mut link = LinkState::new(LinkParams {
            latency: Duration::from_millis(20),
            jitter: Duration::from_millis(5),
            ..LinkParams::default()
        });
        let mut r = rng();
        let mut last = now;
        for i in 0..1000u64 {
            let t = now + Duration::from_micros(i * 100);
            let Verdict::Deliver { at, .. } = link.handle_packet(t, 100, &mut r) else {
                panic!("no loss configured")
            };
            assert!(at >= last, "no reordering when reorder is off");
            assert!(at - t >= Duration::from_millis(15));
            last = at;
        }
    }

    #[test]
    fn reordering_happens_when_enabled() {
        let now = Instant::now();
        let mut link = LinkState::new(LinkParams {
            latency: Duration::from_millis(20),
            jitter: Duration::from_millis(5),
            reorder: true,
            ..LinkParams::default()
        });
        let mut r = rng();
        let arrivals: Vec<_> = (0..200u64)
            .map(
                |i| match link.handle_packet(now + Duration::from_micros(i * 100), 100, &mut r) {
                    Verdict::Deliver { at, .. } => at,
                    Verdict::Drop(_) => unreachable!(),
                },
            )
            .collect();
        assert!(arrivals.windows(2).any(|w| w[1] < w[0]));
    }

    #[test]
    fn mtu_partition_and_spike() {
        let now = Instant::now();
        let mut link = LinkState::new(LinkParams::with_latency(Duration::from_millis(10)));
        let mut r = rng();
        assert_eq!(
            link.handle_packet(now, 1473, &mut r),
            Verdict::Drop(DropReason::Mtu)
        );
        link.partitioned = true;
        assert_eq!(
            link.handle_packet(now, 10, &mut r),
            Verdict::Drop(DropReason::Partition)
        );
        link.partitioned = false;
        link.spike = Some((Duration::from_millis(100), now + Duration::from_secs(1)));
        assert_eq!(
            link.handle_packet(now, 10, &mut r),
            Verdict::Deliver {
                at: now + Duration::from_millis(110),
                duplicate_at: None
            }
        );
        let later = now + Duration::from_secs(2);
        assert_eq!(
            link.handle_packet(later, 10, &mut r),
            Verdict::Deliver {
                at: later + Duration::from_millis(10),
                duplicate_at: None
            }
        );
    }

    #[test]
    fn bandwidth_queue_serialises_and_tail_drops() {
        let now = Instant::now();
        // 1 Mbit/s: a 1,250-byte packet takes 10 ms; a 50 ms budget holds 5 waiting.
        let mut link = LinkState::new(LinkParams {
            bandwidth_bps: Some(1_000_000),
            queue_budget: Duration::from_millis(50),
            mtu: 1500,
            ..LinkParams::default()
        });
        let mut r = rng();
        let verdicts: Vec<_> = (0..10)
            .map(|_| link.handle_packet(now, 1250, &mut r))
            .collect();
        for (i, v) in verdicts.iter().enumerate().take(6) {
            assert_eq!(
                *v,
                Verdict::Deliver {
                    at: now + Duration::from_millis(10 * (i as u64 + 1)),
                    duplicate_at: None
                }
            );
        }
        assert!(verdicts[6..]
            .iter()
            .all(|v| *v == Verdict::Drop(DropReason::Queue)));
    }

    #[test]
    fn duplication() {
        let now = Instant::now();
        let mut link = LinkState::new(LinkParams {
            duplicate: 1.0,
            ..LinkParams::default()
        });
        assert!(matches!(
            link.handle_packet(now, 10, &mut rng()),
            Verdict::Deliver {
                duplicate_at: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn bursty_parameters_match_rate() {
        let l = Loss::bursty(0.05, 4.0);
        assert!((l.mean_rate() - 0.05).abs() < 1e-9);
        assert_eq!(Loss::Independent(0.2).mean_rate(), 0.2);
        assert_eq!(Loss::None.mean_rate(), 0.0);
    }
}
