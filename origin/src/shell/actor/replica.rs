//! The actor's replication side: the log to its standbys, their arrival,
//! lag and departure, a handover's completion, and reporting suspicion.

use tracing::{info, warn};

use super::super::mailbox::WorldEvent;
use super::super::replication::{repl_frame, StandbyLink};
use super::Actor;
use crate::core::Core;

/// Diverged standbys kept connected to compare states, at most.
const MAX_COMPARING: usize = 4;

/// Replication frames remembered for the lag in bytes, at most (a standby
/// further behind is cut long before: 300 ticks).
pub(super) const MAX_UNACKED: usize = 4096;

impl Actor {
    /// Sends what the engine was fed since the last call to every standby (one
    /// `Entries` per tick) and tells the gate each tick's hash.
    pub(super) fn replicate(&mut self) {
        let Some(inputs) = self.core.drain() else {
            // Inputs were lost to the recorder's bound: standbys restart
            // from a snapshot.
            let ids: Vec<u64> = self.standbys.keys().copied().collect();
            for id in ids {
                self.cut_standby(id, "replication log overflowed");
            }
            return;
        };
        for i in &inputs {
            if let skylane_proto::Input::Tick {
                tick,
                hash: Some(h),
                ..
            } = i
            {
                self.gate.handle_tick(*tick, *h);
            }
        }
        if inputs.is_empty() || self.standbys.is_empty() {
            return;
        }
        let f = repl_frame(&skylane_proto::ReplMsg::Entries {
            world: self.host,
            epoch: self.epoch,
            inputs,
        });
        let Some(f) = f else { return };
        if self.unacked.len() >= MAX_UNACKED {
            self.unacked.pop_front();
        }
        self.unacked.push_back((self.core.tick(), f.len() as u64));
        let slow: Vec<u64> = self
            .standbys
            .iter()
            .filter(|(_, s)| s.tx.try_send(f.clone()).is_err())
            .map(|(id, _)| *id)
            .collect();
        for id in slow {
            self.cut_standby(id, "standby too slow: its queue is full");
        }
    }

    /// A handover waiting for its last tick to be acknowledged: answered once
    /// it is (the world then stays frozen until it is removed here).
    pub(super) fn check_handover(&mut self) {
        let acked = self.gate.followers().into_iter().map(|(_, t)| t).max();
        if let Some((tick, reply)) = &mut self.handover {
            if acked.is_some_and(|a| a >= *tick) {
                if let Some(r) = reply.take() {
                    let _ = r.send(Ok(*tick));
                }
            }
        }
    }

    /// Tells whoever runs the origin (the cluster agent publishes it) that
    /// the world is suspect, once.
    pub(super) fn report_suspect(&mut self) {
        if self.suspect_reported {
            return;
        }
        if let Some((tick, _)) = self.gate.suspect() {
            self.suspect_reported = true;
            let mut state = self.core.world_state();
            state.epoch = self.epoch;
            self.events.send(WorldEvent::Suspect { state, tick: *tick });
        }
    }

    /// A standby's divergence evidence: at first (not compared yet) the world
    /// becomes suspect, the standby stops counting and gets this origin's
    /// state to compare with; completed (with the entities that differ), it is
    /// kept for the status and the standby is let go.
    pub(super) fn standby_diverged(&mut self, id: u64, evidence: Box<skylane_proto::Evidence>) {
        let world = self.host;
        let Some(at) = evidence.compared_at else {
            self.metrics.divergences.inc();
            self.gate
                .handle_divergence(evidence.tick, &evidence.standby);
            warn!(
                %world,
                tick = evidence.tick,
                expected = %evidence.expected,
                found = %evidence.found,
                standby = %evidence.standby,
                inputs = evidence.inputs.len(),
                "divergence evidence from a standby: the world is suspect"
            );
            self.report_suspect();
            // Every entry up to now goes first, so that the standby's copy is
            // at exactly the snapshot's tick when it compares.
            self.replicate();
            let compare = skylane_proto::ReplMsg::Compare {
                world,
                epoch: self.epoch,
                tick: self.core.tick(),
                snapshot: skylane_proto::Payload::from(self.core.snapshot()),
            };
            self.gate.handle_standby_down(id);
            if let Some(link) = self.standbys.remove(&id) {
                self.metrics.standbys.dec();
                let sent = repl_frame(&compare).is_some_and(|f| link.tx.try_send(f).is_ok());
                if sent && self.comparing.len() < MAX_COMPARING {
                    self.comparing.insert(id, link);
                } else {
                    link.conn.close(3u32.into(), b"diverged");
                }
            }
            return;
        };
        let entities: Vec<u64> = evidence.entities.iter().map(|e| e.0).collect();
        warn!(
            %world,
            tick = evidence.tick,
            compared_at = at,
            standby = %evidence.standby,
            ?entities,
            "divergence: the entities whose state differs from the standby's"
        );
        if self.divergence.is_none() {
            self.divergence = Some(evidence);
        }
        if let Some(link) = self.comparing.remove(&id) {
            link.conn.close(3u32.into(), b"diverged");
        }
    }

    pub(super) fn cut_standby(&mut self, id: u64, why: &str) {
        self.gate.handle_standby_down(id);
        if let Some(s) = self.standbys.remove(&id) {
            warn!(world = %self.host, standby = %s.node, why, "standby disconnected");
            s.conn.close(3u32.into(), why.as_bytes());
            self.metrics.standbys.dec();
        }
    }

    pub(super) fn standby_up(&mut self, id: u64, node: String, epoch: u64, link: StandbyLink) {
        let world = self.host;
        if epoch > self.epoch {
            // The standby knows a newer owner: this origin is stale.
            let refused = skylane_proto::ReplMsg::Refused {
                world,
                reason: format!("epoch {epoch} is newer than this owner's {}", self.epoch),
            };
            if let Some(f) = repl_frame(&refused) {
                let _ = link.tx.try_send(f);
            }
            return;
        }
        // Everything fed so far goes to the others; the newcomer starts from
        // a snapshot of exactly that state.
        self.replicate();
        let start = skylane_proto::ReplMsg::Start {
            world,
            epoch: self.epoch,
            game: self.core.game().to_string(),
            tick: self.core.tick(),
            hash: self.core.state_hash(),
            snapshot: skylane_proto::Payload::from(self.core.snapshot()),
        };
        let Some(f) = repl_frame(&start) else {
            warn!(%world, "snapshot too large for a replication frame: standby refused");
            return;
        };
        if link.tx.try_send(f).is_err() {
            return;
        }
        info!(%world, standby = %node, tick = self.core.tick(), "standby following");
        self.gate.handle_standby_up(id, &node, self.core.tick());
        self.standbys.insert(id, link);
        self.metrics.standbys.inc();
    }

    /// Bytes of replication frames not yet acknowledged by every standby.
    pub(super) fn lag_bytes(&self) -> u64 {
        let Some(acked) = self.gate.followers().into_iter().map(|(_, t)| t).min() else {
            return 0;
        };
        self.unacked
            .iter()
            .filter(|(t, _)| *t > acked)
            .map(|(_, b)| b)
            .sum()
    }

    /// Forgets frames every standby acknowledged and moves the process's lag
    /// gauges by this world's change.
    pub(super) fn count_lag(&mut self) {
        if self.gate.poll_lapsed() {
            self.metrics.standby_waits_lapsed.inc();
            warn!(world = %self.host, "the standbys named for this world did not follow within 3 s: it runs with those that do (unreplicated if none)");
        }
        match self.gate.followers().into_iter().map(|(_, t)| t).min() {
            Some(acked) => {
                while self.unacked.front().is_some_and(|(t, _)| *t <= acked) {
                    self.unacked.pop_front();
                }
            }
            None => self.unacked.clear(),
        }
        let now = (self.lag_ticks() as i64, self.lag_bytes() as i64);
        self.metrics
            .replication_lag_ticks
            .inc_by(now.0 - self.lag_counted.0);
        self.metrics
            .replication_lag_bytes
            .inc_by(now.1 - self.lag_counted.1);
        self.lag_counted = now;
    }

    /// Ticks the slowest following standby is behind.
    pub(super) fn lag_ticks(&self) -> u64 {
        self.gate
            .followers()
            .into_iter()
            .map(|(_, t)| self.core.tick().saturating_sub(t))
            .max()
            .unwrap_or(0)
    }
}
