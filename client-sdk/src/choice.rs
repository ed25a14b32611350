//! Which relay to stay on (pure: no I/O, no clock; time is passed in).
//!
//! A connected client keeps measuring: its own relay through the clock-sync
//! pings it sends anyway, the other candidates through a short probe round every
//! [`ChoiceConfig::every`]. A challenger is *clearly better* when its round-trip
//! beats the current relay's by [`ChoiceConfig::margin`] and by
//! [`ChoiceConfig::ratio`] of it; the client moves only when one has been
//! clearly better in every round for [`ChoiceConfig::sustain`] (hysteresis, as
//! Steam Datagram Relay and iroh do it). A spike shorter than that, a
//! challenger that is better in one round and not the next, or one that does not
//! answer, moves nothing.
//!
//! Each round compares like with like: the smallest of a few samples on each
//! side (the current relay's pings since the last round, the challenger's probe
//! pings), so jitter does not decide.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

/// When a client re-probes and how much better a relay must be to move to it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChoiceConfig {
    /// Time between probe rounds.
    pub every: Duration,
    /// A challenger must beat the current round trip by at least this much...
    pub margin: Duration,
    /// ...and by at least this fraction of it.
    pub ratio: f64,
    /// ...in every round for at least this long.
    pub sustain: Duration,
}

impl Default for ChoiceConfig {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(15),
            margin: Duration::from_millis(15),
            ratio: 0.2,
            sustain: Duration::from_secs(40),
        }
    }
}

/// The relay choice of one client.
#[derive(Debug, Clone)]
pub struct RelayChoice {
    cfg: ChoiceConfig,
    current: SocketAddr,
    /// Smallest round trip of the current relay since the last round.
    current_rtt: Option<Duration>,
    /// Challengers clearly better in every round since this time.
    better_since: HashMap<SocketAddr, Instant>,
    next_round: Instant,
}

impl RelayChoice {
    /// Connected to `current` at `now`; the first round is one period away.
    pub fn new(cfg: ChoiceConfig, now: Instant, current: SocketAddr) -> Self {
        Self {
            cfg,
            current,
            current_rtt: None,
            better_since: HashMap::new(),
            next_round: now + cfg.every,
        }
    }

    /// The relay the client is on.
    pub fn current(&self) -> SocketAddr {
        self.current
    }

    /// A round-trip sample of the current relay (a clock-sync ping).
    pub fn handle_current_rtt(&mut self, rtt: Duration) {
        self.current_rtt = Some(self.current_rtt.map_or(rtt, |r| r.min(rtt)));
    }

    /// When the next probe round is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_round
    }

    /// Whether a probe round should start now (and schedules the next one).
    pub fn poll_round(&mut self, now: Instant) -> bool {
        if now < self.next_round {
            return false;
        }
        self.next_round = now + self.cfg.every;
        true
    }

    /// A probe round's results: each challenger's smallest round trip, `None`
    /// when it did not answer. Returns the relay to move to, if one has been
    /// clearly better for the sustain period.
    pub fn handle_round(
        &mut self,
        now: Instant,
        results: &[(SocketAddr, Option<Duration>)],
    ) -> Option<SocketAddr> {
        let Some(current) = self.current_rtt.take() else {
            // No sample of our own relay this round: nothing to compare with.
            return None;
        };
        for (addr, rtt) in results {
            if *addr == self.current {
                continue;
            }
            if rtt.is_some_and(|r| self.clearly_better(r, current)) {
                self.better_since.entry(*addr).or_insert(now);
            } else {
                self.better_since.remove(addr);
            }
        }
        // A challenger that was not probed this round starts over too.
        self.better_since
            .retain(|a, _| results.iter().any(|(r, _)| r == a));
        let sustained = |since: &Instant| now.duration_since(*since) >= self.cfg.sustain;
        let to = results
            .iter()
            .filter_map(|(a, r)| Some((*a, (*r)?)))
            .filter(|(a, _)| self.better_since.get(a).is_some_and(sustained))
            .min_by_key(|(_, r)| *r)
            .map(|(a, _)| a)?;
        self.better_since.clear();
        Some(to)
    }

    /// The client is now on `relay` (a move, a reconnect or a go-away): rounds
    /// start over.
    pub fn handle_connected(&mut self, now: Instant, relay: SocketAddr) {
        if relay != self.current {
            self.better_since.clear();
        }
        self.current = relay;
        self.current_rtt = None;
        self.next_round = now + self.cfg.every;
    }

    fn clearly_better(&self, challenger: Duration, current: Duration) -> bool {
        challenger + self.cfg.margin <= current
            && challenger.as_secs_f64() <= current.as_secs_f64() * (1.0 - self.cfg.ratio)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);
    const B: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 2);
    const C: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 3);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn cfg() -> ChoiceConfig {
        ChoiceConfig {
            every: Duration::from_secs(1),
            margin: ms(10),
            ratio: 0.2,
            sustain: Duration::from_secs(3),
        }
    }

    /// Runs rounds each second with the current relay at `current[i]` and B at
    /// `b[i]`; returns the round at which the choice moved, if it did.
    fn rounds(current: &[u64], b: &[Option<u64>]) -> Option<(usize, SocketAddr)> {
        let t0 = Instant::now();
        let mut c = RelayChoice::new(cfg(), t0, A);
        for (i, (cur, b)) in current.iter().zip(b).enumerate() {
            let now = t0 + Duration::from_secs(i as u64 + 1);
            assert!(c.poll_round(now));
            c.handle_current_rtt(ms(*cur + 7));
            c.handle_current_rtt(ms(*cur));
            if let Some(to) = c.handle_round(now, &[(B, b.map(ms)), (C, Some(ms(500)))]) {
                return Some((i, to));
            }
        }
        None
    }

    #[test]
    fn a_sustained_degradation_moves_to_the_better_relay() {
        // Current 20 ms, then 120 ms from round 2 on; B stays at 30 ms.
        let cur = [20, 20, 120, 120, 120, 120, 120, 120];
        let moved = rounds(&cur, &[Some(30); 8]);
        // Clearly better from round 2; 3 s later (round 5) it moves.
        assert_eq!(moved, Some((5, B)));
    }

    #[test]
    fn a_short_spike_moves_nothing() {
        let cur = [20, 120, 120, 20, 20, 120, 20, 20, 20];
        assert_eq!(rounds(&cur, &[Some(30); 9]), None);
    }

    #[test]
    fn a_small_advantage_is_not_enough() {
        // 8 ms better: under the 10 ms margin. 30 vs 40: 25% but only 10 ms... ok
        // at exactly the margin; 45 vs 50: 5 ms and 10%.
        assert_eq!(rounds(&[50; 8], &[Some(45); 8]), None);
        // 100 vs 85: 15 ms but only 15% (ratio 20%).
        assert_eq!(rounds(&[100; 8], &[Some(85); 8]), None);
        // 100 vs 75: both margins met: moves after the sustain period.
        assert_eq!(rounds(&[100; 8], &[Some(75); 8]), Some((3, B)));
    }

    #[test]
    fn a_challenger_that_stops_answering_or_flaps_starts_over() {
        let b = [
            Some(30),
            Some(30),
            None,
            Some(30),
            Some(30),
            Some(200),
            Some(30),
            Some(30),
        ];
        assert_eq!(rounds(&[120; 8], &b), None);
    }

    #[test]
    fn without_a_sample_of_its_own_relay_a_round_compares_nothing() {
        let t0 = Instant::now();
        let mut c = RelayChoice::new(cfg(), t0, A);
        for i in 1..10 {
            let now = t0 + Duration::from_secs(i);
            assert!(c.poll_round(now));
            assert!(!c.poll_round(now), "one round per period");
            assert_eq!(c.handle_round(now, &[(B, Some(ms(1)))]), None);
        }
        assert_eq!(c.poll_timeout(), t0 + Duration::from_secs(10));
    }

    #[test]
    fn a_reconnect_elsewhere_starts_the_rounds_over() {
        let t0 = Instant::now();
        let mut c = RelayChoice::new(cfg(), t0, A);
        for i in 1..=2 {
            let now = t0 + Duration::from_secs(i);
            c.poll_round(now);
            c.handle_current_rtt(ms(100));
            assert_eq!(c.handle_round(now, &[(B, Some(ms(20)))]), None);
        }
        let now = t0 + Duration::from_secs(3);
        c.handle_connected(now, C);
        assert_eq!(c.current(), C);
        assert_eq!(c.poll_timeout(), now + Duration::from_secs(1));
        // B must be better for a full sustain period again.
        for i in 4..=6 {
            let now = t0 + Duration::from_secs(i);
            c.poll_round(now);
            c.handle_current_rtt(ms(100));
            assert_eq!(c.handle_round(now, &[(B, Some(ms(20)))]), None, "{i}");
        }
        let now = t0 + Duration::from_secs(7);
        c.poll_round(now);
        c.handle_current_rtt(ms(100));
        assert_eq!(c.handle_round(now, &[(B, Some(ms(20)))]), Some(B));
    }
}
