//! Latency recording with hdrhistogram: per client, merged across clients, printed
//! as percentiles.
//!
//! Fixed-rate senders suffer coordinated omission: when the system stalls, a
//! closed-loop sender stops sending, and the stall shows up in one sample instead of
//! in every sample that should have been sent. [`LatencyRecorder::record_at_rate`]
//! back-fills those samples (hdrhistogram's `record_correct`) given the intended
//! interval.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded: 60 s (larger values are clamped).
const MAX_US: u64 = 60_000_000;

/// A latency histogram in microseconds (3 significant digits).
#[derive(Debug, Clone)]
pub struct LatencyRecorder {
    hist: Histogram<u64>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self::new()
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_US)
}

impl LatencyRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, MAX_US, 3).expect("constant bounds are valid");
        Self { hist }
    }

    /// Records one sample.
    pub fn record(&mut self, latency: Duration) {
        self.hist.saturating_record(micros(latency));
    }

    /// Records one sample of a sender that meant to send every `interval`, adding the
    /// samples a stall hid (coordinated-omission correction).
    pub fn record_at_rate(&mut self, latency: Duration, interval: Duration) {
        // Bounds are valid by construction, so this cannot fail for clamped values.
        let _ = self.hist.record_correct(micros(latency), micros(interval));
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Self) {
        // Same bounds on both sides: addition cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// Whether no sample was recorded.
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// The value at `quantile` (0..=1).
    pub fn quantile(&self, quantile: f64) -> Duration {
        Duration::from_micros(self.hist.value_at_quantile(quantile))
    }

    /// Percentile summary.
    pub fn summary(&self) -> LatencySummary {
        let q = |x| self.hist.value_at_quantile(x);
        LatencySummary {
            count: self.hist.len(),
            min_us: if self.hist.is_empty() {
                0
            } else {
                self.hist.min()
            },
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: self.hist.max(),
            mean_us: self.hist.mean(),
        }
    }
}

/// Percentiles of a [`LatencyRecorder`], in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Minimum.
    pub min_us: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Maximum.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
}

impl fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |us: u64| us as f64 / 1000.0;
        write!(
            f,
            "n={} p50={:.2}ms p90={:.2}ms p99={:.2}ms p99.9={:.2}ms max={:.2}ms",
            self.count,
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_merge() {
        let mut a = LatencyRecorder::new();
        let mut b = LatencyRecorder::new();
        for ms in 1..=100u64 {
            a.record(Duration::from_millis(ms));
        }
        b.record(Duration::from_secs(2));
        a.merge(&b);
        let s = a.summary();
        assert_eq!(s.count, 101);
        assert!((49_900..=51_100).contains(&s.p50_us), "{s}");
        assert!(s.max_us >= 1_999_000);
        assert!(s.to_string().starts_with("n=101 p50="));
    }

    #[test]
    fn coordinated_omission_is_corrected() {
        let mut naive = LatencyRecorder::new();
        let mut corrected = LatencyRecorder::new();
        let interval = Duration::from_millis(10);
        for _ in 0..99 {
            naive.record(Duration::from_millis(1));
            corrected.record_at_rate(Duration::from_millis(1), interval);
        }
        // One 1-second stall: a fixed-rate sender would have sent ~100 more samples.
        naive.record(Duration::from_secs(1));
        corrected.record_at_rate(Duration::from_secs(1), interval);
        assert_eq!(naive.len(), 100);
        assert!(corrected.len() > 190);
        assert!(naive.quantile(0.9) < Duration::from_millis(2));
        assert!(corrected.quantile(0.9) > Duration::from_millis(500));
    }

    #[test]
    fn empty_summary_is_zero() {
        let s = LatencyRecorder::new().summary();
        assert_eq!((s.count, s.min_us, s.p99_us), (0, 0, 0));
    }
}
