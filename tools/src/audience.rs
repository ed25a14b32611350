//! Spectators for the demo and the load generator: each watches the world through
//! the SDK's [`Spectator`] and measures what a spectator cares about.
//!
//! For every frame: its *lateness*, the time it arrived (through the SDK's
//! synchronised clock) minus its due time (world time + the spectator's delay).
//! A negative lateness is an early release; the delay is enforced when there
//! are none. Frames and bytes count per spectator for the bandwidth figures.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use skylane_client::{ClientBuilder, Spectator};
use skylane_proto::{BandwidthMode, SpectatorFilter};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bots::histogram;
use crate::report::Percentiles;

/// Parses a bandwidth mode: `full`, `keyframes` or `reduced=HZ` (1..=60).
pub fn parse_mode(s: &str) -> Result<BandwidthMode, String> {
    match s.trim() {
        "full" => Ok(BandwidthMode::Full),
        "keyframes" => Ok(BandwidthMode::KeyframesOnly),
        other => other
            .strip_prefix("reduced=")
            .and_then(|hz| hz.parse::<u16>().ok())
            .filter(|hz| (1..=60).contains(hz))
            .map(|hz| BandwidthMode::Reduced { hz })
            .ok_or_else(|| format!("mode {s:?}: expected full, keyframes or reduced=HZ (1..=60)")),
    }
}

/// What one spectator measured.
#[derive(Debug, Clone)]
pub struct Watched {
    /// Its delay.
    pub delay: Duration,
    /// Frames received.
    pub frames: u64,
    /// Keyframes among them.
    pub keyframes: u64,
    /// Frame bytes received (events' payloads plus their tags, as encoded).
    pub bytes: u64,
    /// Frames that arrived before world time + delay by more than the
    /// measuring clock's error bound (the SDK's `clock_error_us`).
    pub early: u64,
    /// Frames that arrived before world time + delay, but within that bound:
    /// the measurement cannot tell them from on-time frames.
    pub early_within_error: u64,
    /// Frames of the catch-up a subscribe starts with (due before it).
    pub catch_up: u64,
    /// Lateness of on-time frames (µs).
    pub lateness: Histogram<u64>,
    /// Why it stopped early, if it did.
    pub error: Option<String>,
}

/// A spectator watching in the background until stopped.
#[derive(Debug)]
pub struct Watcher {
    task: JoinHandle<Watched>,
}

impl Watcher {
    /// Connects `builder` (a spectator token) and watches with `delay` and `mode`
    /// until `stop` turns true.
    pub async fn start(
        builder: ClientBuilder,
        delay: Duration,
        mode: BandwidthMode,
        mut stop: watch::Receiver<bool>,
    ) -> Result<Self, skylane_client::ClientError> {
        let mut s = Spectator::connect(builder, SpectatorFilter::all(), delay, mode).await?;
        let connected = tokio::time::Instant::now();
        let task = tokio::spawn(async move {
            let mut w = Watched {
                delay,
                frames: 0,
                keyframes: 0,
                bytes: 0,
                early: 0,
                early_within_error: 0,
                catch_up: 0,
                lateness: histogram(),
                error: None,
            };
            loop {
                tokio::select! {
                    f = s.next_frame() => match f {
                        Ok(f) => {
                            w.frames += 1;
                            w.keyframes += u64::from(f.keyframe);
                            w.bytes += f.events.iter().map(|e| e.payload.len() as u64 + 16).sum::<u64>() + 24;
                            // The catch-up a subscribe starts with (the last keyframe
                            // and what followed) was due before the spectator came:
                            // not a measure of the delay.
                            let due = f.origin_time_us + delay.as_micros() as u64;
                            let came = s.client().server_time_us().map(|now| {
                                now.saturating_sub(connected.elapsed().as_micros() as u64)
                            });
                            if came.is_some_and(|c| due < c) {
                                w.catch_up += 1;
                                continue;
                            }
                            let bound = s.client().stats().clock_error_us.map_or(0, |e| e as i64);
                            match s.lateness_us(&f) {
                                Some(l) if l < -bound => w.early += 1,
                                Some(l) if l < 0 => w.early_within_error += 1,
                                Some(l) => {
                                    let _ = w.lateness.record((l as u64).clamp(1, crate::bots::MAX_US));
                                }
                                None => {}
                            }
                        }
                        Err(e) => {
                            w.error = Some(e.to_string());
                            break;
                        }
                    },
                    _ = stop.changed() => break,
                }
            }
            s.close().await;
            w
        });
        Ok(Self { task })
    }

    /// Waits for the spectator to stop and returns its figures.
    pub async fn finish(self) -> Option<Watched> {
        self.task.await.ok()
    }
}

/// Spectator figures of a run, per delay.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AudienceReport {
    /// Spectators that watched.
    pub spectators: usize,
    /// Spectators that stopped with an error.
    pub failed: usize,
    /// Per delay (milliseconds): figures of the spectators at that delay.
    pub delays: Vec<DelayLine>,
}

/// Spectator figures of one delay.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DelayLine {
    /// The delay, milliseconds.
    pub delay_ms: u64,
    /// Spectators at this delay.
    pub spectators: usize,
    /// Frames received, all of them.
    pub frames: u64,
    /// Frames received before world time + delay by more than the measuring
    /// clock's error bound (must be 0).
    pub early: u64,
    /// Frames received before world time + delay within the clock's error
    /// bound (a measurement limit, not an early release).
    pub early_within_error: u64,
    /// Lateness against world time + delay (arrival through the synchronised
    /// clock): for a 0 s delay this is the propagation time, for longer delays
    /// the accuracy of the delay.
    pub lateness: Percentiles,
    /// Mean bytes per second per spectator.
    pub bytes_per_s: f64,
}

/// Merges what the spectators measured over `elapsed`.
pub fn merge(watched: &[Watched], elapsed: Duration) -> AudienceReport {
    let mut delays: Vec<Duration> = watched.iter().map(|w| w.delay).collect();
    delays.sort();
    delays.dedup();
    let lines = delays
        .into_iter()
        .map(|d| {
            let at: Vec<&Watched> = watched.iter().filter(|w| w.delay == d).collect();
            let mut h = histogram();
            for w in &at {
                let _ = h.add(&w.lateness);
            }
            let bytes: u64 = at.iter().map(|w| w.bytes).sum();
            DelayLine {
                delay_ms: d.as_millis() as u64,
                spectators: at.len(),
                frames: at.iter().map(|w| w.frames).sum(),
                early: at.iter().map(|w| w.early).sum(),
                early_within_error: at.iter().map(|w| w.early_within_error).sum(),
                lateness: Percentiles::of(&h),
                bytes_per_s: bytes as f64
                    / elapsed.as_secs_f64().max(1e-3)
                    / at.len().max(1) as f64,
            }
        })
        .collect();
    AudienceReport {
        spectators: watched.len(),
        failed: watched.iter().filter(|w| w.error.is_some()).count(),
        delays: lines,
    }
}

impl AudienceReport {
    /// Frames released early, over all delays.
    pub fn early(&self) -> u64 {
        self.delays.iter().map(|d| d.early).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_refuse_nonsense() {
        assert_eq!(parse_mode("full"), Ok(BandwidthMode::Full));
        assert_eq!(parse_mode("keyframes"), Ok(BandwidthMode::KeyframesOnly));
        assert_eq!(
            parse_mode("reduced=10"),
            Ok(BandwidthMode::Reduced { hz: 10 })
        );
        for bad in ["reduced=0", "reduced=61", "reduced", "fast", "reduced=x"] {
            assert!(parse_mode(bad).is_err(), "{bad}");
        }
    }
}
