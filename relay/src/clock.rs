//! The relay's Unix clock: microseconds since the Unix epoch, read once from the
//! system at start and advanced with tokio's clock after that, so a paused
//! simulation sees consistent times.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Microseconds since the Unix epoch, advancing with tokio's clock (so paused
/// simulations see consistent times).
#[derive(Debug, Clone, Copy)]
pub(crate) struct UnixClock {
    base_unix_us: u64,
    base: Instant,
}

impl UnixClock {
    pub(crate) fn new() -> Self {
        let base_unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Self {
            base_unix_us,
            base: Instant::now(),
        }
    }
    pub(crate) fn unix_us(&self) -> u64 {
        self.base_unix_us + self.base.elapsed().as_micros() as u64
    }
    pub(crate) fn unix_secs(&self) -> u64 {
        self.unix_us() / 1_000_000
    }
}
