//! Edge penalties (pure): a subject the edge guard cut for violations is
//! refused at hello for a cool-down that doubles with each cut (from
//! `base` up to `max`), and forgotten after `forget_after` without a cut. A
//! flooder that reconnects with the same token so gets no fresh burst through
//! to the origin. Origins' sanctions (a kick's cool-down, a ban) are kept here
//! too, until their end. Bounded: at most `capacity` subjects (records past
//! their end and quiet go first, then the longest quiet).

use std::collections::HashMap;
use std::time::Duration;

/// Cool-down rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PenaltyConfig {
    /// The first cut's cool-down. Default 10 s.
    pub base: Duration,
    /// The longest cool-down. Default 1 h.
    pub max: Duration,
    /// A subject without a cut for this long starts again from `base`.
    /// Default 1 h.
    pub forget_after: Duration,
    /// Most subjects remembered. Default 100,000.
    pub capacity: usize,
}

impl Default for PenaltyConfig {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(10),
            max: Duration::from_secs(3600),
            forget_after: Duration::from_secs(3600),
            capacity: 100_000,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Record {
    cuts: u32,
    last_cut_us: u64,
    /// The edge's own cool-down.
    cut_until_us: u64,
    /// An origin's sanction, and why.
    sanction_until_us: u64,
    reason: String,
}

impl Record {
    fn until_us(&self) -> u64 {
        self.cut_until_us.max(self.sanction_until_us)
    }
}

/// The subjects cooling down on this relay.
#[derive(Debug, Clone)]
pub struct Penalties {
    cfg: PenaltyConfig,
    by_subject: HashMap<String, Record>,
}

impl Penalties {
    /// No one penalised yet.
    pub fn new(cfg: PenaltyConfig) -> Self {
        Self {
            cfg,
            by_subject: HashMap::new(),
        }
    }

    /// `subject` was cut at `now_us`: returns its cool-down.
    pub fn handle_cut(&mut self, now_us: u64, subject: &str) -> Duration {
        let forget = self.cfg.forget_after.as_micros() as u64;
        let cuts = match self.by_subject.get(subject) {
            Some(r) if now_us.saturating_sub(r.last_cut_us) < forget => r.cuts + 1,
            _ => 1,
        };
        let cool = self
            .cfg
            .base
            .saturating_mul(1u32 << (cuts - 1).min(20))
            .min(self.cfg.max);
        if !self.by_subject.contains_key(subject) && self.by_subject.len() >= self.cfg.capacity {
            self.evict(now_us);
        }
        let r = self.by_subject.entry(subject.to_owned()).or_default();
        r.cuts = cuts;
        r.last_cut_us = now_us;
        r.cut_until_us = now_us + cool.as_micros() as u64;
        cool
    }

    /// An origin sanctioned `subject` until `until_us` (a longer one in
    /// force stays). Not a cut: the edge's own cool-down steps are unchanged.
    pub fn impose(&mut self, now_us: u64, subject: &str, until_us: u64, reason: &str) {
        if !self.by_subject.contains_key(subject) && self.by_subject.len() >= self.cfg.capacity {
            self.evict(now_us);
        }
        let r = self
            .by_subject
            .entry(subject.to_owned())
            .or_insert_with(|| Record {
                last_cut_us: now_us,
                ..Record::default()
            });
        if until_us > r.sanction_until_us {
            r.sanction_until_us = until_us;
            r.reason = reason.to_owned();
        }
    }

    /// An operator lifted `subject`'s ban: its origins' sanctions end (the
    /// edge's own cool-down, if any, stays).
    pub fn lift(&mut self, subject: &str) {
        if let Some(r) = self.by_subject.get_mut(subject) {
            r.sanction_until_us = 0;
            r.reason.clear();
        }
    }

    /// Until when `subject` is refused, and why, if it is cooling down at
    /// `now_us`.
    pub fn refused_until(&self, now_us: u64, subject: &str) -> Option<(u64, &str)> {
        let r = self.by_subject.get(subject)?;
        if now_us < r.sanction_until_us && r.sanction_until_us >= r.cut_until_us {
            Some((r.sanction_until_us, r.reason.as_str()))
        } else {
            (now_us < r.cut_until_us).then_some((r.cut_until_us, ""))
        }
    }

    /// Subjects remembered.
    pub fn len(&self) -> usize {
        self.by_subject.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_subject.is_empty()
    }

    /// Makes room for one: forgets the records past their cool-down and the
    /// quiet period, else the one cut longest ago.
    fn evict(&mut self, now_us: u64) {
        let forget = self.cfg.forget_after.as_micros() as u64;
        self.by_subject
            .retain(|_, r| now_us < r.until_us() || now_us.saturating_sub(r.last_cut_us) < forget);
        if self.by_subject.len() >= self.cfg.capacity {
            if let Some(oldest) = self
                .by_subject
                .iter()
                .min_by_key(|(_, r)| r.last_cut_us)
                .map(|(k, _)| k.clone())
            {
                self.by_subject.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    #[test]
    fn each_cut_doubles_the_cool_down_up_to_the_cap_and_quiet_resets_it() {
        let mut p = Penalties::new(PenaltyConfig::default());
        assert_eq!(p.refused_until(0, "f"), None);
        assert_eq!(p.handle_cut(0, "f"), Duration::from_secs(10));
        assert_eq!(p.refused_until(5 * S, "f"), Some((10 * S, "")));
        assert_eq!(p.refused_until(10 * S, "f"), None, "over");
        assert_eq!(p.handle_cut(20 * S, "f"), Duration::from_secs(20));
        assert_eq!(p.handle_cut(50 * S, "f"), Duration::from_secs(40));
        let mut t = 100 * S;
        for _ in 0..20 {
            p.handle_cut(t, "f");
            t += S;
        }
        assert_eq!(p.handle_cut(t, "f"), Duration::from_secs(3600), "capped");
        // An hour without a cut: back to the first step.
        assert_eq!(p.handle_cut(t + 3601 * S, "f"), Duration::from_secs(10));
        assert_eq!(p.refused_until(t + 3601 * S, "other"), None);
    }

    #[test]
    fn memory_is_bounded() {
        let mut p = Penalties::new(PenaltyConfig {
            capacity: 3,
            ..PenaltyConfig::default()
        });
        for (i, s) in ["a", "b", "c", "d"].iter().enumerate() {
            p.handle_cut(i as u64 * S, s);
        }
        assert_eq!(p.len(), 3);
        assert_eq!(p.refused_until(4 * S, "a"), None, "the oldest went");
        assert!(p.refused_until(4 * S, "d").is_some());
    }

    #[test]
    fn an_origin_sanction_holds_until_its_end_and_only_a_longer_one_replaces_it() {
        let mut p = Penalties::new(PenaltyConfig::default());
        p.impose(0, "k", 60 * S, "kick: flood");
        assert_eq!(p.refused_until(30 * S, "k"), Some((60 * S, "kick: flood")));
        p.impose(1, "k", 20 * S, "kick: shorter");
        assert_eq!(p.refused_until(30 * S, "k"), Some((60 * S, "kick: flood")));
        // An edge cut within it does not shorten it, and starts from the first step.
        assert_eq!(p.handle_cut(2 * S, "k"), Duration::from_secs(10));
        assert_eq!(p.refused_until(30 * S, "k").map(|r| r.0), Some(60 * S));
        assert_eq!(p.refused_until(60 * S, "k"), None, "over");
        // Lifted by an operator: the edge's own cool-down stays.
        p.impose(100 * S, "l", 500 * S, "ban");
        assert_eq!(p.handle_cut(101 * S, "l"), Duration::from_secs(10));
        p.lift("l");
        assert_eq!(p.refused_until(102 * S, "l"), Some((111 * S, "")));
        assert_eq!(p.refused_until(112 * S, "l"), None);
        p.impose(0, "b", u64::MAX, "ban");
        assert!(p.refused_until(u64::MAX - 1, "b").is_some(), "permanent");
    }
}
