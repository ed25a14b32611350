//! The origin's analytics rows (see `docs/analytics.md`): the process's tap,
//! attached once like the ledger and read by every world's task, and the
//! per-world sampler of action outcomes. Emitting never waits (the spool
//! drops its oldest rows when full); nothing here changes what a world does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use skylane_analytics::schema::{ActionSampled, Economy, Violation, WorldPhase};
use skylane_analytics::Emitter;
use skylane_proto::{ActionResult, EventClass, Outcome, SessionId, WorldState};
use tokio::time::Instant;

use crate::evidence::ViolationRecord;
use crate::ledger::LedgerTx;

/// Sampled actions waiting for their outcome, at most (a sample whose
/// outcome never comes is forgotten when the map is full).
const MAX_WAITING: usize = 4_096;

/// Where rows go and how they are labelled.
#[derive(Debug)]
pub(crate) struct Tap {
    pub(crate) emitter: Emitter,
    /// The `node` column (`origin-1`).
    pub(crate) node: String,
    /// One action outcome in this many is written (0: none).
    pub(crate) sample_every: u32,
}

/// World phase rows held until analytics are attached, at most (a process
/// attaches at start, after its first worlds began).
const MAX_HELD: usize = 1_024;

/// The process's tap, empty until analytics are attached.
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedTap {
    tap: Arc<OnceLock<Tap>>,
    /// Phase rows of worlds that changed before the tap was attached (the
    /// static world starts before the binary attaches analytics); the lock
    /// also orders holding against attaching, so none is stranded.
    held: Arc<Mutex<Vec<WorldPhase>>>,
}

impl SharedTap {
    /// Attaches analytics (and emits the rows held until now); `false` if
    /// they were attached already.
    pub(crate) fn attach(&self, tap: Tap) -> bool {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if self.tap.set(tap).is_err() {
            return false;
        }
        if let Some(tap) = self.tap.get() {
            for mut row in held.drain(..) {
                row.node.clone_from(&tap.node);
                tap.emitter.emit(row);
            }
        }
        true
    }

    pub(crate) fn get(&self) -> Option<&Tap> {
        self.tap.get()
    }

    /// A world's phase row (`node` filled in here), emitted now or held
    /// until analytics are attached.
    pub(crate) fn phase(&self, mut row: WorldPhase) {
        if let Some(tap) = self.tap.get() {
            row.node.clone_from(&tap.node);
            tap.emitter.emit(row);
            return;
        }
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        match self.tap.get() {
            Some(tap) => {
                row.node.clone_from(&tap.node);
                tap.emitter.emit(row);
            }
            None if held.len() < MAX_HELD => held.push(row),
            None => {}
        }
    }
}

/// A world's sampled actions, from arrival to outcome.
#[derive(Debug, Default)]
pub(crate) struct Sampler {
    seen: u64,
    waiting: HashMap<(SessionId, u64), (EventClass, Instant)>,
}

fn class_name(c: EventClass) -> String {
    format!("{c:?}").to_lowercase()
}

/// An outcome as the `action` table and the `actions` metric name it.
pub(crate) fn outcome_name(o: &Outcome) -> String {
    match o {
        Outcome::Applied { .. } => "applied".into(),
        Outcome::Conflict { .. } => "conflict".into(),
        Outcome::Rejected { code, .. } => format!("rejected_{code:?}").to_lowercase(),
        Outcome::Unknown { .. } => "unknown".into(),
    }
}

impl Sampler {
    /// An action arrived: kept if it is the sampled one in `every`.
    pub(crate) fn handle_action(
        &mut self,
        now: Instant,
        every: u32,
        session: SessionId,
        seq: u64,
        class: EventClass,
    ) {
        if every == 0 {
            return;
        }
        self.seen += 1;
        if self.seen % u64::from(every) != 0 {
            return;
        }
        if self.waiting.len() >= MAX_WAITING {
            self.waiting.clear();
        }
        self.waiting.insert((session, seq), (class, now));
    }

    /// An outcome leaves (at `at_ms`, Unix): its row, if its action was
    /// sampled.
    pub(crate) fn handle_result(
        &mut self,
        now: Instant,
        at_ms: u64,
        tap: &Tap,
        world: u64,
        session: SessionId,
        result: &ActionResult,
    ) -> Option<ActionSampled> {
        let (class, at) = self.waiting.remove(&(session, result.seq))?;
        Some(ActionSampled {
            at_ms,
            node: tap.node.clone(),
            world,
            session: session.0,
            class: class_name(class),
            outcome: outcome_name(&result.outcome),
            latency_us: now.saturating_duration_since(at).as_micros() as u64,
            sample_every: tap.sample_every,
        })
    }
}

/// A world's phase row (`created` when it starts on this origin; `node`
/// is filled in by [`SharedTap::phase`]).
pub(crate) fn phase_row(at_ms: u64, game: &str, ws: &WorldState) -> WorldPhase {
    WorldPhase {
        at_ms,
        node: String::new(),
        world: ws.world.0,
        host: ws.host.0,
        game: game.into(),
        phase: format!("{:?}", ws.phase).to_lowercase(),
        players: ws.players,
        tick: ws.tick,
        winner: ws.result.as_ref().and_then(|r| r.winner.clone()),
        result: ws.result.as_ref().map(|r| r.reason.clone()),
    }
}

/// A violation's row, from the record the violation store keeps.
pub(crate) fn violation_row(tap: &Tap, v: &ViolationRecord) -> Violation {
    Violation {
        at_ms: v.at_ms,
        node: tap.node.clone(),
        world: v.world,
        session: v.session,
        player: v.player.clone(),
        source: format!("{:?}", v.source).to_lowercase(),
        kind: v.detector.clone(),
        evidence: v.evidence.clone(),
        value: v.value,
        threshold: v.threshold,
        enforcement: v.action.clone(),
    }
}

/// One row per wallet a transaction changed.
pub(crate) fn economy_rows<'a>(
    at_ms: u64,
    tap: &Tap,
    world: u64,
    tick: u64,
    tx: &'a LedgerTx,
) -> impl Iterator<Item = Economy> + 'a {
    let node = tap.node.clone();
    tx.entries.iter().map(move |e| Economy {
        at_ms,
        node: node.clone(),
        world,
        tick,
        tx: tx.id.clone(),
        kind: match tx.kind {
            crate::ledger::TxKind::Grant => "grant",
            crate::ledger::TxKind::PickUp => "pick_up",
            crate::ledger::TxKind::Trade => "trade",
        }
        .into(),
        player: e.player.clone(),
        coins: e.after.coins as i64 - e.before.coins as i64,
        items: i64::from(e.after.items) - i64::from(e.before.items),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap(every: u32) -> Tap {
        Tap {
            emitter: Emitter::disabled(),
            node: "origin-1".into(),
            sample_every: every,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_in_n_actions_is_sampled_with_its_latency() {
        let t = tap(2);
        let mut s = Sampler::default();
        let t0 = Instant::now();
        for seq in 1..=4 {
            s.handle_action(t0, 2, SessionId(1), seq, EventClass::State);
        }
        let later = t0 + std::time::Duration::from_millis(30);
        let rows: Vec<_> = (1..=4)
            .filter_map(|seq| {
                s.handle_result(
                    later,
                    7,
                    &t,
                    9,
                    SessionId(1),
                    &ActionResult {
                        seq,
                        outcome: Outcome::Conflict {
                            current: vec![],
                            state: Default::default(),
                        },
                    },
                )
            })
            .collect();
        assert_eq!(rows.len(), 2, "every second action");
        assert_eq!(rows[0].latency_us, 30_000);
        assert_eq!(rows[0].outcome, "conflict");
        assert_eq!(rows[0].class, "state");
        assert_eq!(rows[0].sample_every, 2);
        // Off: nothing kept.
        s.handle_action(t0, 0, SessionId(1), 9, EventClass::State);
        assert!(s.waiting.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_waiting_samples_are_bounded() {
        let mut s = Sampler::default();
        for seq in 0..(MAX_WAITING as u64 * 3) {
            s.handle_action(Instant::now(), 1, SessionId(1), seq, EventClass::Movement);
            assert!(s.waiting.len() <= MAX_WAITING);
        }
    }
}

#[cfg(test)]
mod held_tests {
    use std::sync::{Arc, Mutex};

    use skylane_analytics::{Analytics, AnalyticsMetrics, Event, Sink, SinkError};

    use super::*;

    /// Keeps every row it is given.
    struct Collect(Arc<Mutex<Vec<Event>>>);

    impl Sink for Collect {
        fn write(&mut self, _: u64, rows: &[Event]) -> Result<(), SinkError> {
            self.0.lock().unwrap().extend_from_slice(rows);
            Ok(())
        }
        fn tick(&mut self, _: u64) -> Result<(), SinkError> {
            Ok(())
        }
        fn close(&mut self) -> Result<(), SinkError> {
            Ok(())
        }
    }

    fn row(phase: &str) -> WorldPhase {
        WorldPhase {
            at_ms: 1,
            node: String::new(),
            world: 1,
            host: 1,
            game: "arena".into(),
            phase: phase.into(),
            players: 0,
            tick: 0,
            winner: None,
            result: None,
        }
    }

    #[test]
    fn phases_before_the_tap_is_attached_are_held_then_emitted_named() {
        let rows = Arc::new(Mutex::new(Vec::new()));
        let a = Analytics::with_sink(
            Box::new(Collect(rows.clone())),
            64,
            AnalyticsMetrics::default(),
        );
        let shared = SharedTap::default();
        shared.phase(row("created"));
        assert!(shared.attach(Tap {
            emitter: a.emitter(),
            node: "origin-7".into(),
            sample_every: 1,
        }));
        shared.phase(row("playing"));
        assert!(!shared.attach(Tap {
            emitter: a.emitter(),
            node: "again".into(),
            sample_every: 1,
        }));
        a.shutdown().unwrap();
        let rows = rows.lock().unwrap();
        let got: Vec<(String, String)> = rows
            .iter()
            .map(|e| match e {
                Event::WorldPhase(w) => (w.phase.clone(), w.node.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("created".to_owned(), "origin-7".to_owned()),
                ("playing".to_owned(), "origin-7".to_owned())
            ]
        );
    }
}
