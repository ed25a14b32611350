//! Edge anti-cheat (pure: no I/O, no clock): cheap checks on every action at the
//! relay, before it costs the origin anything.
//!
//! Per session: a token bucket per event class (rate and burst), strictly increasing
//! sequence numbers (replays and reordering refused), a payload size limit per
//! class, and timestamp sanity (the client's clock must advance with the relay's,
//! within a skew). Each refusal is an [`EdgeViolation`]; after
//! `disconnect_after` violations the verdict becomes [`Verdict::Disconnect`].

use std::time::{Duration, Instant};

pub use skylane_proto::REPLAY_WINDOW;
use skylane_proto::{Action, EventClass, ReplayWindow};

/// A token-bucket rate: `per_sec` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Sustained actions per second.
    pub per_sec: f64,
    /// Largest burst.
    pub burst: f64,
}

/// Edge limits. Defaults: critical 30/s (burst 60), state 30/s (60), movement 60/s
/// (120), chat 5/s (10), bulk 10/s (20); payloads up to 1,024 bytes (bulk 16 KiB);
/// client clock within 2 s of the relay's; disconnect after 50 violations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EdgeConfig {
    /// Rate per class, indexed by [`EventClass::rank`].
    pub rates: [Rate; EventClass::COUNT],
    /// Largest payload per class.
    pub max_payload: [usize; EventClass::COUNT],
    /// Largest drift of the client's clock against the relay's since the session
    /// started.
    pub max_skew: Duration,
    /// Violations after which the session is disconnected.
    pub disconnect_after: u32,
    /// Sequence numbers accepted out of order behind the highest one, at most
    /// [`REPLAY_WINDOW`] (larger values are capped). Default 1,024.
    pub replay_window: u64,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        let r = |per_sec, burst| Rate { per_sec, burst };
        Self {
            rates: [
                r(30.0, 60.0),
                r(30.0, 60.0),
                r(60.0, 120.0),
                r(5.0, 10.0),
                r(10.0, 20.0),
            ],
            max_payload: [1024, 1024, 1024, 1024, 16 * 1024],
            max_skew: Duration::from_secs(2),
            disconnect_after: 50,
            replay_window: REPLAY_WINDOW,
        }
    }
}

/// Why an action was refused at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EdgeViolation {
    /// More actions of a class than its rate allows.
    #[error("{0} rate limit exceeded")]
    RateLimited(EventClass),
    /// A sequence number not above the last one.
    #[error("sequence {seq} not above {last}")]
    Replayed {
        /// Sequence received.
        seq: u64,
        /// Highest accepted.
        last: u64,
    },
    /// Payload over the class limit.
    #[error("{class} payload of {size} bytes over {max}")]
    TooLarge {
        /// Class.
        class: EventClass,
        /// Size.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// The client's clock drifted from the relay's beyond the allowed skew.
    #[error("client clock drifted {drift_ms} ms")]
    BadTimestamp {
        /// Drift in milliseconds (signed).
        drift_ms: i64,
    },
}

impl EdgeViolation {
    /// A short, stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::RateLimited(_) => "rate_limited",
            Self::Replayed { .. } => "replayed",
            Self::TooLarge { .. } => "too_large",
            Self::BadTimestamp { .. } => "bad_timestamp",
        }
    }
}

/// What to do with an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it.
    Pass,
    /// Refuse it (answer the client with a rejection).
    Drop(EdgeViolation),
    /// Refuse it and disconnect the session: too many violations. Given once
    /// per session.
    Disconnect(EdgeViolation),
    /// The session was already disconnected: drop it without counting or
    /// answering (actions still in flight when the cut was decided).
    Cut,
}

/// One session's edge state.
#[derive(Debug, Clone)]
pub struct EdgeGuard {
    cfg: EdgeConfig,
    tokens: [f64; EventClass::COUNT],
    refilled: Instant,
    replay: ReplayWindow,
    /// (relay instant, client µs) of the first action: the clock reference.
    clock_ref: Option<(Instant, u64)>,
    violations: u32,
}

impl EdgeGuard {
    /// A guard for a session starting at `now`, buckets full.
    pub fn new(cfg: EdgeConfig, now: Instant) -> Self {
        let tokens = cfg.rates.map(|r| r.burst);
        Self {
            cfg,
            tokens,
            refilled: now,
            replay: ReplayWindow::new(cfg.replay_window),
            clock_ref: None,
            violations: 0,
        }
    }

    /// Violations so far.
    pub fn violations(&self) -> u32 {
        self.violations
    }

    /// The highest accepted sequence number (a resumed session continues from it).
    pub fn last_seq(&self) -> u64 {
        self.replay.highest()
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        for (t, r) in self.tokens.iter_mut().zip(self.cfg.rates) {
            *t = (*t + dt * r.per_sec).min(r.burst);
        }
    }

    fn check(&mut self, now: Instant, a: &Action) -> Result<(), EdgeViolation> {
        let r = a.class.rank();
        let max = self.cfg.max_payload[r];
        if a.payload.len() > max {
            return Err(EdgeViolation::TooLarge {
                class: a.class,
                size: a.payload.len(),
                max,
            });
        }
        if !self.replay.is_new(a.seq) {
            return Err(EdgeViolation::Replayed {
                seq: a.seq,
                last: self.replay.highest(),
            });
        }
        match self.clock_ref {
            None => self.clock_ref = Some((now, a.client_time_us)),
            Some((t0, c0)) => {
                let relay_us = now.saturating_duration_since(t0).as_micros() as i64;
                let client_us = a.client_time_us as i64 - c0 as i64;
                let drift = client_us - relay_us;
                if drift.unsigned_abs() > self.cfg.max_skew.as_micros() as u64 {
                    return Err(EdgeViolation::BadTimestamp {
                        drift_ms: drift / 1000,
                    });
                }
            }
        }
        self.refill(now);
        if self.tokens[r] < 1.0 {
            return Err(EdgeViolation::RateLimited(a.class));
        }
        self.tokens[r] -= 1.0;
        self.replay.accept(a.seq);
        Ok(())
    }

    /// Judges one action arriving at `now`.
    pub fn handle_action(&mut self, now: Instant, a: &Action) -> Verdict {
        if self.violations >= self.cfg.disconnect_after {
            return Verdict::Cut;
        }
        match self.check(now, a) {
            Ok(()) => Verdict::Pass,
            Err(v) => {
                self.violations += 1;
                if self.violations >= self.cfg.disconnect_after {
                    Verdict::Disconnect(v)
                } else {
                    Verdict::Drop(v)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skylane_proto::Payload;

    fn act(class: EventClass, seq: u64, client_ms: u64, size: usize) -> Action {
        Action {
            class,
            seq,
            client_time_us: client_ms * 1000,
            reads: vec![],
            payload: Payload::from(vec![0u8; size]),
        }
    }

    #[test]
    fn an_honest_stream_passes() {
        let t0 = Instant::now();
        let mut g = EdgeGuard::new(EdgeConfig::default(), t0);
        // 20 moves/s for 10 s, client clock 1,000 s ahead of the relay's (offsets are fine).
        for i in 0..200u64 {
            let now = t0 + Duration::from_millis(i * 50);
            assert_eq!(
                g.handle_action(
                    now,
                    &act(EventClass::Movement, i + 1, 1_000_000 + i * 50, 40)
                ),
                Verdict::Pass
            );
        }
        assert_eq!(g.violations(), 0);
    }

    #[test]
    fn a_flood_is_rate_limited_then_disconnected() {
        let t0 = Instant::now();
        let mut g = EdgeGuard::new(EdgeConfig::default(), t0);
        let verdicts: Vec<Verdict> = (1..=200u64)
            .map(|seq| g.handle_action(t0, &act(EventClass::Chat, seq, 0, 10)))
            .collect();
        assert!(
            verdicts[..10].iter().all(|v| *v == Verdict::Pass),
            "burst of 10 allowed"
        );
        assert_eq!(
            verdicts[10],
            Verdict::Drop(EdgeViolation::RateLimited(EventClass::Chat))
        );
        // One disconnect, then every action still arriving is dropped quietly
        // (it was counted 4,340 times for 64 cut sessions before).
        let cuts = verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Disconnect(EdgeViolation::RateLimited(_))))
            .count();
        assert_eq!(cuts, 1);
        assert_eq!(verdicts.last(), Some(&Verdict::Cut));
        // Buckets refill with time.
        let mut g = EdgeGuard::new(EdgeConfig::default(), t0);
        for seq in 1..=10 {
            g.handle_action(t0, &act(EventClass::Chat, seq, 0, 10));
        }
        assert_eq!(
            g.handle_action(
                t0 + Duration::from_millis(250),
                &act(EventClass::Chat, 11, 250, 10)
            ),
            Verdict::Pass
        );
    }

    #[test]
    fn replays_oversize_and_clock_drift_are_refused() {
        let t0 = Instant::now();
        let mut g = EdgeGuard::new(EdgeConfig::default(), t0);
        assert_eq!(
            g.handle_action(t0, &act(EventClass::Critical, 5, 0, 10)),
            Verdict::Pass
        );
        assert_eq!(
            g.handle_action(t0, &act(EventClass::Critical, 5, 0, 10)),
            Verdict::Drop(EdgeViolation::Replayed { seq: 5, last: 5 })
        );
        // Out of order but new (a stream action overtaken by a datagram): accepted
        // once.
        assert_eq!(
            g.handle_action(t0, &act(EventClass::Critical, 4, 0, 10)),
            Verdict::Pass
        );
        assert_eq!(
            g.handle_action(t0, &act(EventClass::Critical, 4, 0, 10)),
            Verdict::Drop(EdgeViolation::Replayed { seq: 4, last: 5 })
        );
        assert!(matches!(
            g.handle_action(t0, &act(EventClass::Critical, 6, 0, 5000)),
            Verdict::Drop(EdgeViolation::TooLarge { size: 5000, .. })
        ));
        // The client claims 10 s passed when 1 s did.
        let v = g.handle_action(
            t0 + Duration::from_secs(1),
            &act(EventClass::Critical, 7, 10_000, 10),
        );
        assert_eq!(
            v,
            Verdict::Drop(EdgeViolation::BadTimestamp { drift_ms: 9000 })
        );
        assert_eq!(g.violations(), 4);
        assert_eq!(
            g.last_seq(),
            5,
            "refused actions do not advance the sequence"
        );
        assert_eq!(
            EdgeViolation::RateLimited(EventClass::Bulk).label(),
            "rate_limited"
        );
    }
}
