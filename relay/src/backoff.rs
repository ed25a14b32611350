//! Reconnect backoff (pure: no I/O, no clock; the caller sleeps).

use std::time::Duration;

/// Reconnect backoff: 100 ms doubling to 5 s, each wait scaled by a
/// deterministic jitter factor in [0.5, 1.5) (xorshift, seeded per link so relays
/// do not reconnect in lockstep).
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    rng: u64,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    pub(crate) fn new(seed: u64) -> Self {
        Self::with_max(seed, Self::MAX)
    }

    /// Waits doubling up to `max` instead of 5 s.
    pub(crate) fn with_max(seed: u64, max: Duration) -> Self {
        // splitmix64's finaliser: seeds that differ only in low bits (origin 1
        // and origin 2 of one relay) would otherwise draw the same first waits
        // to the nanosecond, since xorshift moves low bits up slowly.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self {
            base: Self::FIRST,
            max: max.max(Self::FIRST),
            rng: (z ^ (z >> 31)) | 1,
        }
    }

    /// After a success: start again from the first wait.
    pub(crate) fn reset(&mut self) {
        self.base = Self::FIRST;
    }

    /// The next wait (jittered); the one after is twice as long, up to the cap.
    pub(crate) fn next_wait(&mut self) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let factor = 0.5 + (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        let wait = self.base.mul_f64(factor);
        self.base = (self.base * 2).min(self.max);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_with_jitter_and_reset() {
        let mut b = Backoff::new(42);
        let mut last_base = Duration::ZERO;
        for i in 0..12 {
            let w = b.next_wait();
            let base = Backoff::FIRST
                .saturating_mul(1 << i.min(6))
                .min(Backoff::MAX);
            assert!(
                w >= base.mul_f64(0.5) && w < base.mul_f64(1.5),
                "{i}: {w:?}"
            );
            last_base = base;
        }
        assert_eq!(last_base, Backoff::MAX);
        b.reset();
        assert!(b.next_wait() < Backoff::FIRST.mul_f64(1.5));
        // Two links with different seeds (origin id ^ relay id << 32, as the
        // link tasks make them) do not wait in lockstep.
        let (mut x, mut y) = (Backoff::new(1 ^ 1 << 32), Backoff::new(2 ^ 1 << 32));
        let (a, b) = (x.next_wait(), y.next_wait());
        let mut capped = Backoff::with_max(7, Duration::from_secs(1));
        for _ in 0..10 {
            assert!(capped.next_wait() < Duration::from_millis(1500));
        }
        let apart = a.abs_diff(b);
        assert!(apart > Duration::from_millis(1), "{a:?} {b:?}");
    }
}
