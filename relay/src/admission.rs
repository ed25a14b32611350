//! Connection admission (pure: no I/O, no clock): connections per IP address and
//! handshakes per second, checked before any cryptography is spent on a peer.

use std::net::IpAddr;
use std::time::Instant;

use rustc_hash::FxHashMap as HashMap;

/// Admission limits.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionConfig {
    /// Open connections allowed from one IP address.
    pub max_conns_per_ip: usize,
    /// New handshakes accepted per second (token bucket, burst of the same size).
    pub handshakes_per_sec: u32,
    /// Open connections allowed in total.
    pub max_conns: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            max_conns_per_ip: 16,
            handshakes_per_sec: 2_000,
            max_conns: 50_000,
        }
    }
}

/// Why a connection attempt was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Too many connections from this address.
    #[error("too many connections from this address")]
    PerIp,
    /// Handshake rate exceeded.
    #[error("handshake rate exceeded")]
    Rate,
    /// The relay holds its maximum number of connections.
    #[error("relay at its connection limit")]
    Full,
}

impl Refused {
    /// Stable metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Self::PerIp => "per_ip",
            Self::Rate => "rate",
            Self::Full => "full",
        }
    }
}

/// Counts connections per address and meters handshakes.
#[derive(Debug)]
pub struct Admission {
    cfg: AdmissionConfig,
    per_ip: HashMap<IpAddr, usize>,
    open: usize,
    tokens: f64,
    last: Option<Instant>,
}

impl Admission {
    /// Nothing admitted yet; the bucket starts full.
    pub fn new(cfg: AdmissionConfig) -> Self {
        Self {
            cfg,
            per_ip: HashMap::default(),
            open: 0,
            tokens: f64::from(cfg.handshakes_per_sec),
            last: None,
        }
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.open
    }

    /// A peer at `ip` starts a handshake at `now`; on `Ok` it counts as open until
    /// [`handle_closed`](Self::handle_closed).
    pub fn handle_incoming(&mut self, now: Instant, ip: IpAddr) -> Result<(), Refused> {
        let rate = f64::from(self.cfg.handshakes_per_sec);
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * rate).min(rate);
        }
        self.last = Some(now);
        if self.open >= self.cfg.max_conns {
            return Err(Refused::Full);
        }
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= self.cfg.max_conns_per_ip {
            return Err(Refused::PerIp);
        }
        if self.tokens < 1.0 {
            return Err(Refused::Rate);
        }
        self.tokens -= 1.0;
        *self.per_ip.entry(ip).or_insert(0) += 1;
        self.open += 1;
        Ok(())
    }

    /// An admitted connection from `ip` ended.
    pub fn handle_closed(&mut self, ip: IpAddr) {
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            self.open = self.open.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn limits_per_ip_rate_and_total() {
        let t = Instant::now();
        let mut a = Admission::new(AdmissionConfig {
            max_conns_per_ip: 2,
            handshakes_per_sec: 3,
            max_conns: 4,
        });
        let ip1: IpAddr = "10.0.0.1".parse().unwrap();
        let ip2: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(a.handle_incoming(t, ip1), Ok(()));
        assert_eq!(a.handle_incoming(t, ip1), Ok(()));
        assert_eq!(a.handle_incoming(t, ip1), Err(Refused::PerIp));
        assert_eq!(a.handle_incoming(t, ip2), Ok(()));
        assert_eq!(a.handle_incoming(t, ip2), Err(Refused::Rate), "3/s spent");
        let t1 = t + Duration::from_secs(1);
        assert_eq!(a.handle_incoming(t1, ip2), Ok(()));
        let ip3: IpAddr = "10.0.0.3".parse().unwrap();
        assert_eq!(a.handle_incoming(t1, ip3), Err(Refused::Full));
        a.handle_closed(ip1);
        assert_eq!(a.open(), 3);
        assert_eq!(a.handle_incoming(t1, ip1), Ok(()));
        a.handle_closed(ip3); // never admitted: ignored
        assert_eq!(a.open(), 4);
    }
}
