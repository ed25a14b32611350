//! Replay protection for per-session sequence numbers (pure).
//!
//! A client's datagrams (movement) and its per-class streams take different
//! paths, so sequence numbers arrive out of send order. Both the relay's edge
//! guard and the origin accept each number once within a window behind the
//! highest, as DTLS and IPsec do, instead of requiring them to increase.

use serde::{Deserialize, Serialize};

/// Sequence numbers accepted out of order behind the highest one, at most.
pub const REPLAY_WINDOW: u64 = 1024;

/// Which of the last [`REPLAY_WINDOW`] sequence numbers were accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayWindow {
    highest: u64,
    /// Accepted distance behind the highest (at most [`REPLAY_WINDOW`]).
    size: u64,
    /// Bit `i` set: `highest - i` was accepted.
    seen: [u64; (REPLAY_WINDOW / 64) as usize],
}

impl ReplayWindow {
    /// A window accepting `size` numbers behind the highest (1..=[`REPLAY_WINDOW`]).
    pub fn new(size: u64) -> Self {
        Self {
            highest: 0,
            size: size.clamp(1, REPLAY_WINDOW),
            seen: [0; (REPLAY_WINDOW / 64) as usize],
        }
    }

    /// The highest number accepted (0 before any).
    pub fn highest(&self) -> u64 {
        self.highest
    }

    fn bit(&self, back: u64) -> bool {
        self.seen[(back / 64) as usize] & (1 << (back % 64)) != 0
    }

    /// Whether `seq` is new: above the highest, or inside the window and unseen.
    /// Sequence 0 is never valid (clients count from 1).
    pub fn is_new(&self, seq: u64) -> bool {
        if seq > self.highest {
            return true;
        }
        let back = self.highest - seq;
        seq > 0 && back < self.size && !self.bit(back)
    }

    /// Records `seq` as used.
    pub fn accept(&mut self, seq: u64) {
        if seq > self.highest {
            let shift = seq - self.highest;
            self.shift(shift);
            self.highest = seq;
        }
        let back = self.highest - seq;
        if back < REPLAY_WINDOW {
            self.seen[(back / 64) as usize] |= 1 << (back % 64);
        }
    }

    /// Moves the window up by `n`: bit `i` becomes bit `i + n`.
    fn shift(&mut self, n: u64) {
        if n >= REPLAY_WINDOW {
            self.seen = [0; (REPLAY_WINDOW / 64) as usize];
            return;
        }
        let words = (n / 64) as usize;
        let bits = (n % 64) as u32;
        let len = self.seen.len();
        for i in (0..len).rev() {
            let lo = if i >= words { self.seen[i - words] } else { 0 };
            let below = if bits > 0 && i > words {
                self.seen[i - words - 1] >> (64 - bits)
            } else {
                0
            };
            self.seen[i] = if bits > 0 { (lo << bits) | below } else { lo };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_smaller_configured_window_refuses_older_numbers() {
        let mut w = ReplayWindow::new(8);
        w.accept(100);
        assert!(w.is_new(93), "7 behind is inside a window of 8");
        assert!(!w.is_new(92), "8 behind is outside");
        assert_eq!(ReplayWindow::new(1 << 20).size, REPLAY_WINDOW, "capped");
    }

    #[test]
    fn the_replay_window_accepts_each_number_once_and_forgets_the_distant_past() {
        let mut w = ReplayWindow::new(REPLAY_WINDOW);
        assert!(!w.is_new(0));
        for seq in [3, 1, 2, 70, 5, 200, 4] {
            assert!(w.is_new(seq), "{seq}");
            w.accept(seq);
            assert!(!w.is_new(seq), "{seq} twice");
        }
        for seq in [1, 2, 3, 4, 5, 70, 200] {
            assert!(!w.is_new(seq));
        }
        assert!(w.is_new(6) && w.is_new(69) && w.is_new(199));
        w.accept(200 + REPLAY_WINDOW);
        assert!(
            !w.is_new(200),
            "the window's length behind: forgotten, refused"
        );
        assert!(w.is_new(201), "just inside the window and never seen");
        assert!(!w.is_new(200 + REPLAY_WINDOW));
    }

    proptest::proptest! {
        /// Against a set: whatever the arrival order, a number is new exactly when
        /// it was never accepted and is within the window of the highest.
        #[test]
        fn the_replay_window_matches_a_set(seqs in proptest::collection::vec(1u64..3000, 1..400)) {
            let mut w = ReplayWindow::new(REPLAY_WINDOW);
            let mut seen = std::collections::BTreeSet::new();
            for s in seqs {
                let highest = seen.iter().next_back().copied().unwrap_or(0);
                let expect = !seen.contains(&s) && (s > highest || highest - s < REPLAY_WINDOW);
                proptest::prop_assert_eq!(w.is_new(s), expect, "seq {}", s);
                if expect {
                    w.accept(s);
                    seen.insert(s);
                }
            }
        }
    }
}
