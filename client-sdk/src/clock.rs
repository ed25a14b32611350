//! Clock synchronisation (pure: no I/O, no clock).
//!
//! NTP-style: each ping/pong gives four timestamps, client send `t1`, server
//! receive `t2`, server reply `t3`, client receive `t4`; the round trip is
//! `(t4 - t1) - (t3 - t2)` and the offset of the server clock against the client's
//! `((t2 - t1) + (t3 - t4)) / 2`. Queueing delay on either leg biases the offset by
//! half the asymmetry, so among recent samples the one with the smallest round trip
//! is trusted (the approach of NTP's clock filter).

use std::collections::VecDeque;

use skylane_proto::Pong;

/// Samples a client takes at one per second before it slows to its configured
/// ping interval.
pub const WARM_UP_SAMPLES: usize = 8;

/// One ping/pong sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Round trip, microseconds.
    pub rtt_us: u64,
    /// Server clock minus client clock, microseconds.
    pub offset_us: i64,
}

/// Keeps the last `window` samples and answers with the minimum-RTT one.
#[derive(Debug, Clone)]
pub struct ClockSync {
    window: usize,
    samples: VecDeque<Sample>,
}

impl Default for ClockSync {
    fn default() -> Self {
        Self::new(16)
    }
}

impl ClockSync {
    /// A filter over the last `window` samples.
    pub fn new(window: usize) -> Self {
        Self {
            window: window.max(1),
            samples: VecDeque::new(),
        }
    }

    /// A pong received at client time `t4_us`.
    pub fn handle_pong(&mut self, pong: &Pong, t4_us: u64) -> Sample {
        let (t1, t2, t3, t4) = (
            pong.sent_us as i128,
            pong.received_us as i128,
            pong.replied_us as i128,
            t4_us as i128,
        );
        let rtt = ((t4 - t1) - (t3 - t2)).max(0);
        let offset = ((t2 - t1) + (t3 - t4)) / 2;
        let s = Sample {
            rtt_us: u64::try_from(rtt).unwrap_or(u64::MAX),
            offset_us: i64::try_from(offset).unwrap_or(0),
        };
        self.samples.push_back(s);
        while self.samples.len() > self.window {
            self.samples.pop_front();
        }
        s
    }

    /// Samples held (at most the window).
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample was taken yet.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The best current estimate (minimum-RTT sample of the window).
    pub fn best(&self) -> Option<Sample> {
        self.samples.iter().min_by_key(|s| s.rtt_us).copied()
    }

    /// Server-clock time for a client-clock time, when an estimate exists.
    pub fn to_server(&self, client_us: u64) -> Option<u64> {
        self.best()
            .map(|s| client_us.saturating_add_signed(s.offset_us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pong(t1: u64, t2: u64, t3: u64) -> Pong {
        Pong {
            nonce: 0,
            sent_us: t1,
            received_us: t2,
            replied_us: t3,
        }
    }

    #[test]
    fn symmetric_paths_give_the_exact_offset() {
        let mut c = ClockSync::default();
        // Server 5 s ahead; 20 ms each way.
        let s = c.handle_pong(&pong(1_000_000, 6_020_000, 6_020_000), 1_040_000);
        assert_eq!(
            s,
            Sample {
                rtt_us: 40_000,
                offset_us: 5_000_000
            }
        );
        assert_eq!(c.to_server(2_000_000), Some(7_000_000));
    }

    #[test]
    fn jitter_is_filtered_by_preferring_the_fastest_sample() {
        // True offset 1 s, 10 ms base one-way delay, +-5 ms jitter per leg.
        let mut c = ClockSync::new(16);
        let mut x: u64 = 12345;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 10_001) as i64 - 5_000
        };
        let mut t = 0u64;
        for _ in 0..16 {
            t += 1_000_000;
            let up = (10_000 + rnd()) as u64;
            let down = (10_000 + rnd()) as u64;
            let t2 = t + up + 1_000_000;
            c.handle_pong(&pong(t, t2, t2), t + up + down);
        }
        let err = (c.best().unwrap().offset_us - 1_000_000).abs();
        assert!(err <= 2_000, "offset error {err} us");
    }
}
