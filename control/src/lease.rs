//! Lease liveness from the holder's side.
//!
//! [`LeaseClock`] is the pure rule: a renewal *sent* at `t` and answered keeps the
//! lease alive at the store until at least `t + ttl`, so the holder may write
//! until then less a safety margin (clock-rate drift between machines), and not
//! after, whatever the network does. That is how two owners never overlap: the
//! store hands the world to someone else only after the lease lapsed there, which
//! is after the old owner stopped writing.
//!
//! [`LeaseKeeper`] is the task: it renews every third of the TTL through any
//! [`ControlPlane`], publishes [`LeaseStatus`] on a watch, and when the store says
//! the lease is gone, grants a new one (the holder must then re-register and
//! re-claim, with new epochs).

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::{ControlError, LeaseId, SharedControl};

/// The pure rule: until when may the holder of a lease write?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseClock {
    ttl: Duration,
    margin: Duration,
    safe_until: Instant,
}

impl LeaseClock {
    /// A lease of `ttl` granted by a request sent at `sent`. The margin is a
    /// tenth of the TTL (at least 100 ms).
    pub fn new(ttl: Duration, sent: Instant) -> Self {
        let margin = (ttl / 10).max(Duration::from_millis(100)).min(ttl / 2);
        Self {
            ttl,
            margin,
            safe_until: sent + ttl - margin,
        }
    }

    /// A renewal sent at `sent` was answered.
    pub fn handle_renewed(&mut self, sent: Instant) {
        self.safe_until = self.safe_until.max(sent + self.ttl - self.margin);
    }

    /// May the holder write at `now`?
    pub fn may_write(&self, now: Instant) -> bool {
        now < self.safe_until
    }

    /// When writing stops being safe without another renewal.
    pub fn poll_timeout(&self) -> Instant {
        self.safe_until
    }

    /// How often to renew (a third of the TTL: two renewals can fail before the
    /// holder stops writing).
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }
}

/// What a [`LeaseKeeper`] publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseStatus {
    /// The lease held now.
    pub lease: LeaseId,
    /// Bumped each time the lease was lost and a new one granted: the holder must
    /// re-register and re-claim.
    pub generation: u64,
    /// Whether writing is safe now ([`LeaseClock::may_write`]).
    pub writable: bool,
    /// Until when the holder may write (the lease cannot have lapsed before):
    /// a writer checks it itself, so a process that was paused (SIGSTOP)
    /// stops writing the moment it wakes, before this task has run.
    pub safe_until: Instant,
}

/// Keeps a lease alive in the background.
#[derive(Debug)]
pub struct LeaseKeeper {
    status: watch::Receiver<LeaseStatus>,
    task: JoinHandle<()>,
    control: SharedControl,
}

impl LeaseKeeper {
    /// Grants a lease of `ttl` and keeps it alive until dropped or stopped.
    pub async fn start(control: SharedControl, ttl: Duration) -> Result<Self, ControlError> {
        let sent = Instant::now();
        let lease = control.grant(ttl).await?;
        let clock = LeaseClock::new(ttl, sent);
        let (tx, status) = watch::channel(LeaseStatus {
            lease,
            generation: 0,
            writable: true,
            safe_until: clock.poll_timeout(),
        });
        let task = tokio::spawn(keep(control.clone(), ttl, lease, clock, tx));
        Ok(Self {
            status,
            task,
            control,
        })
    }

    /// The lease held now.
    pub fn lease(&self) -> LeaseId {
        self.status.borrow().lease
    }

    /// The status watch.
    pub fn status(&self) -> watch::Receiver<LeaseStatus> {
        self.status.clone()
    }

    /// Stops renewing and revokes the lease (its records go at once).
    pub async fn stop(self) {
        let lease = self.lease();
        self.task.abort();
        if let Err(e) = self.control.revoke(lease).await {
            warn!(lease, error = %e, "could not revoke the lease; it lapses by itself");
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn keep(
    control: SharedControl,
    ttl: Duration,
    mut lease: LeaseId,
    mut clock: LeaseClock,
    tx: watch::Sender<LeaseStatus>,
) {
    let mut generation = 0;
    let mut next_renew = Instant::now() + clock.renew_every();
    loop {
        let writable = clock.may_write(Instant::now());
        let safe_until = clock.poll_timeout();
        tx.send_if_modified(|s| {
            let changed = s.writable != writable || s.safe_until != safe_until;
            s.writable = writable;
            s.safe_until = safe_until;
            changed
        });
        let wake = if writable {
            next_renew.min(clock.poll_timeout())
        } else {
            next_renew
        };
        tokio::time::sleep_until(wake).await;
        if Instant::now() < next_renew {
            continue;
        }
        let sent = Instant::now();
        // A renewal that hangs must not hold the loop past the point of writing
        // safely: bound it by the renewal period.
        let answer = tokio::time::timeout(clock.renew_every(), control.keep_alive(lease)).await;
        // Failed: retry sooner than the regular period.
        next_renew = sent + (clock.renew_every() / 2).min(Duration::from_millis(500));
        match answer {
            Ok(Ok(_)) => {
                clock.handle_renewed(sent);
                next_renew = sent + clock.renew_every();
            }
            Ok(Err(ControlError::LeaseLost(_))) => {
                warn!(
                    lease,
                    "lease lapsed at the control plane; granting a new one"
                );
                let sent = Instant::now();
                match control.grant(ttl).await {
                    Ok(new) => {
                        lease = new;
                        generation += 1;
                        clock = LeaseClock::new(ttl, sent);
                        next_renew = sent + clock.renew_every();
                        info!(lease, generation, "new lease granted");
                        tx.send_replace(LeaseStatus {
                            lease,
                            generation,
                            writable: true,
                            safe_until: clock.poll_timeout(),
                        });
                    }
                    Err(e) => warn!(error = %e, "could not grant a new lease; retrying"),
                }
            }
            Ok(Err(e)) => warn!(lease, error = %e, "lease renewal failed; retrying"),
            Err(_) => warn!(lease, "lease renewal timed out; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn writing_stops_before_the_lease_can_lapse() {
        let t0 = Instant::now();
        let mut c = LeaseClock::new(Duration::from_secs(3), t0);
        assert!(c.may_write(t0));
        assert!(c.may_write(t0 + Duration::from_millis(2_600)));
        // The margin: a tenth of the TTL before the store could drop it.
        assert!(!c.may_write(t0 + Duration::from_millis(2_700)));
        // A renewal sent at 1 s extends from when it was sent, not answered.
        c.handle_renewed(t0 + Duration::from_secs(1));
        assert!(c.may_write(t0 + Duration::from_millis(3_600)));
        assert!(!c.may_write(t0 + Duration::from_millis(3_700)));
        // An old renewal answered late never shortens the window.
        c.handle_renewed(t0);
        assert!(c.may_write(t0 + Duration::from_millis(3_600)));
        assert_eq!(c.renew_every(), Duration::from_secs(1));
        assert_eq!(c.poll_timeout(), t0 + Duration::from_millis(3_700));
    }

    #[test]
    fn short_leases_keep_half_their_ttl() {
        let t0 = Instant::now();
        let c = LeaseClock::new(Duration::from_millis(150), t0);
        assert!(c.may_write(t0 + Duration::from_millis(74)));
        assert!(!c.may_write(t0 + Duration::from_millis(75)));
    }
}
