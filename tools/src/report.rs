//! The report of a demo or load-generator run: what the bots measured, merged,
//! beside what the origin and relays counted. Printed as text or as one JSON
//! object (schema in docs/operations.md, "Reading a run's report").

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;
use skylane_proto::EventClass;

use crate::bots::{histogram, BotCounts, BotOutcome};

/// Percentiles of a latency histogram, microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Maximum.
    pub max_us: u64,
}

impl Percentiles {
    /// Of a histogram.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// Class names in priority order, as used in reports.
pub fn class_name(class: EventClass) -> &'static str {
    match class {
        EventClass::Critical => "critical",
        EventClass::State => "state",
        EventClass::Movement => "movement",
        EventClass::Chat => "chat",
        EventClass::Bulk => "bulk",
    }
}

/// Players per relay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RelayLine {
    /// Relay id.
    pub id: u32,
    /// Region.
    pub region: String,
    /// Client address.
    pub addr: String,
    /// Players connected to it at the end.
    pub players: usize,
}

/// Anti-cheat figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CheatReport {
    /// Cheat attempts at the origin (teleports, shots inside the cooldown).
    pub attempted: u64,
    /// Of those, refused by the origin's validators.
    pub caught: u64,
    /// Flood messages sent past the edge's rate limit.
    pub flood_sent: u64,
    /// Cheaters kicked and then refused on reconnecting for their cool-down
    /// (their run ended there).
    pub kept_out: u64,
    /// Messages the relays refused for exceeding a rate limit (`None`: the
    /// relays' counters were not available to this run).
    pub edge_rate_limited: Option<u64>,
    /// Honest actions refused by an anti-cheat check (false positives).
    pub false_positives: u64,
    /// Behavioural anomalies the origin's detector reported (`None`: not available).
    pub anomalies: Option<u64>,
    /// Actions and moves the origin's game rules refused as cheating (speed,
    /// cooldown, range), whoever sent them: the cheaters' attempts plus any honest
    /// move refused, which no outcome reports (movement goes as datagrams). With no
    /// cheaters it must be 0 (`None`: the origin's counters were not available).
    pub rule_violations: Option<u64>,
}

/// Conflict figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ConflictReport {
    /// Conflict answers (an action read a version that changed before it applied).
    pub answered: u64,
    /// Trades applied after retrying with the versions the conflict reported.
    pub resolved: u64,
    /// Trades given up after five attempts.
    pub unresolved: u64,
    /// Send → conflict answer (the origin detecting it and telling the player).
    pub detect: Percentiles,
    /// First send → applied, for trades that conflicted first.
    pub resolve: Percentiles,
}

/// A run's report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What ran (`demo` or `loadgen`).
    pub mode: String,
    /// Measured duration, seconds.
    pub duration_s: f64,
    /// Players started.
    pub players: usize,
    /// Players that spawned and played.
    pub playing: usize,
    /// Of the players, cheaters.
    pub cheaters: usize,
    /// Movement updates per second per player.
    pub rate_hz: f64,
    /// Spectators started.
    pub spectators: usize,
    /// What the spectators measured (when there were any).
    pub audience: Option<crate::audience::AudienceReport>,
    /// Players per relay (demo only).
    pub relays: Vec<RelayLine>,
    /// Players placed on their own region's relay by GeoIP (demo only).
    pub geo_placed: Option<usize>,
    /// Event propagation origin → player per event class (through the SDK's
    /// synchronised clock).
    pub latency: BTreeMap<String, Percentiles>,
    /// Action round trip player → relay → origin → relay → player per action class,
    /// corrected for coordinated omission at each bot's pace.
    pub action_rtt: BTreeMap<String, Percentiles>,
    /// Origin ping round trip player → relay → origin → relay → player, answered
    /// on arrival (the path without the origin's tick); corrected for coordinated
    /// omission at the ping rate.
    pub origin_rtt: Option<Percentiles>,
    /// Actions the origin applied per second (movement and reliable actions).
    pub origin_updates_per_s: Option<f64>,
    /// Movement updates the players sent per second.
    pub moves_sent_per_s: f64,
    /// Events delivered to players per second.
    pub events_per_s: f64,
    /// Conflicts.
    pub conflicts: ConflictReport,
    /// Anti-cheat.
    pub cheats: CheatReport,
    /// Reliable events lost or duplicated (must be 0): sequence gaps + duplicates
    /// + events skipped by resyncs.
    pub events_lost: u64,
    /// Events received.
    pub events_received: u64,
    /// Players whose every batch's signature and hash chain were verified.
    pub verified_players: usize,
    /// Reconnections.
    pub reconnects: u64,
    /// Frames the relays dropped by design, by reason and class (`expired_movement`:
    /// past its class deadline; `evicted_bulk`: queue bound), summed over relays.
    pub relay_dropped: BTreeMap<String, u64>,
    /// Clients the relays disconnected as too slow (they resume).
    pub slow_clients: u64,
    /// Summed counters of every player.
    pub counts: BotCounts,
    /// Players that stopped with an error (first few reasons).
    pub errors: Vec<String>,
    /// Worlds created while the run went on (demo only).
    pub worlds: Option<crate::rooms::RoomsReport>,
    /// Trades with consent and the origin's ledger (when it keeps one).
    pub economy: Option<EconomyReport>,
    /// The zoned world (demo with `--zones`).
    pub zones: Option<crate::zoned::ZoneReport>,
    /// The analytics files, read back (demo with `--analytics`).
    pub analytics: Option<crate::analytics::AnalyticsReport>,
}

/// The players' trades and what the origin's ledger made of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EconomyReport {
    /// Offers made (opened by the origin).
    pub offers: u64,
    /// Offers accepted: exchanges that happened.
    pub accepted: u64,
    /// Offers declined.
    pub declined: u64,
    /// Ledger transactions committed during the run (grants, pick-ups,
    /// gifts, accepted offers).
    pub transactions: u64,
    /// Coins in every wallet at the end (the ledger's).
    pub coins_held: u64,
    /// Coins ever minted (grants to new players).
    pub coins_minted: u64,
    /// Transactions the ledger refused (a before balance it did not hold).
    pub refused: u64,
    /// Nothing created or destroyed but by the declared sources.
    pub conserved: bool,
}

impl EconomyReport {
    /// From the bots' counts and a ledger check.
    pub fn of(c: &BotCounts, l: &crate::loadgen::LedgerCheck) -> Self {
        Self {
            offers: c.offers_made,
            accepted: c.offers_accepted,
            declined: c.offers_declined,
            transactions: l.transactions,
            coins_held: l.after.coins_held,
            coins_minted: l.after.coins_minted,
            refused: l.after.refused - l.before.refused,
            conserved: l.conserved,
        }
    }
}

/// What the bots measured, merged.
#[derive(Debug)]
pub struct Merged {
    /// Summed counters.
    pub counts: BotCounts,
    /// Propagation per class.
    pub propagation: Vec<Histogram<u64>>,
    /// Action round trip per class.
    pub action_rtt: Vec<Histogram<u64>>,
    /// Origin ping round trip.
    pub origin_rtt: Histogram<u64>,
    /// Conflict detection.
    pub conflict_rtt: Histogram<u64>,
    /// Conflict resolution.
    pub resolution: Histogram<u64>,
    /// Players that played (no error).
    pub playing: usize,
    /// Errors (at most 10 kept).
    pub errors: Vec<String>,
    /// Total errors.
    pub error_count: usize,
}

impl Merged {
    /// The conflict figures.
    pub fn conflicts(&self) -> ConflictReport {
        let c = &self.counts;
        ConflictReport {
            answered: c.conflicts,
            resolved: c.conflicts_resolved,
            unresolved: c.conflicts_unresolved,
            detect: Percentiles::of(&self.conflict_rtt),
            resolve: Percentiles::of(&self.resolution),
        }
    }

    /// The anti-cheat figures, with what the relays and origin counted if known.
    pub fn cheats(
        &self,
        edge_rate_limited: Option<u64>,
        anomalies: Option<u64>,
        rule_violations: Option<u64>,
    ) -> CheatReport {
        let c = &self.counts;
        CheatReport {
            attempted: c.cheats_attempted,
            caught: c.cheats_caught,
            flood_sent: c.flood_sent,
            kept_out: c.kept_out,
            edge_rate_limited,
            false_positives: c.false_positives,
            anomalies,
            rule_violations,
        }
    }

    /// Events lost: sequence gaps, duplicates, events skipped by resyncs, and
    /// events the origin said an expired session will never receive.
    pub fn events_lost(&self) -> u64 {
        self.counts.gaps + self.counts.skipped + self.counts.duplicates + self.counts.lost_on_resume
    }
}

/// Merges bot outcomes.
pub fn merge<'a>(outcomes: impl IntoIterator<Item = &'a BotOutcome>) -> Merged {
    let mut m = Merged {
        counts: BotCounts::default(),
        propagation: (0..EventClass::COUNT).map(|_| histogram()).collect(),
        action_rtt: (0..EventClass::COUNT).map(|_| histogram()).collect(),
        origin_rtt: histogram(),
        conflict_rtt: histogram(),
        resolution: histogram(),
        playing: 0,
        errors: Vec::new(),
        error_count: 0,
    };
    for o in outcomes {
        m.counts += o.counts;
        for (a, b) in m.propagation.iter_mut().zip(&o.propagation) {
            if let Some(b) = b {
                let _ = a.add(b);
            }
        }
        for (a, b) in m.action_rtt.iter_mut().zip(&o.action_rtt) {
            if let Some(b) = b {
                let _ = a.add(b);
            }
        }
        if let Some(h) = &o.conflict_rtt {
            let _ = m.conflict_rtt.add(h);
        }
        if let Some(h) = &o.origin_rtt {
            let _ = m.origin_rtt.add(h);
        }
        if let Some(h) = &o.resolution {
            let _ = m.resolution.add(h);
        }
        match &o.error {
            // A cheater kept out after its kick ended without an error, but
            // did not play on.
            None if o.counts.kept_out > 0 => {}
            None => m.playing += 1,
            Some(e) => {
                m.error_count += 1;
                if m.errors.len() < 10 {
                    m.errors.push(e.clone());
                }
            }
        }
    }
    m
}

/// Per-class percentiles of the classes that have samples.
pub fn by_class(hs: &[Histogram<u64>]) -> BTreeMap<String, Percentiles> {
    EventClass::ALL
        .iter()
        .filter_map(|c| {
            let h = hs.get(c.rank())?;
            (!h.is_empty()).then(|| (class_name(*c).to_owned(), Percentiles::of(h)))
        })
        .collect()
}

fn ms(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.0} ms", us as f64 / 1000.0)
    } else {
        format!("{:.1} ms", us as f64 / 1000.0)
    }
}

fn class_lines(out: &mut String, title: &str, rows: &BTreeMap<String, Percentiles>) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "{title}");
    for c in EventClass::ALL {
        if let Some(p) = rows.get(class_name(c)) {
            let _ = writeln!(
                out,
                "  {:<9} {:>9}  {:>8} / {:>8} / {:>8}  (max {})",
                class_name(c),
                p.count,
                ms(p.p50_us),
                ms(p.p99_us),
                ms(p.p999_us),
                ms(p.max_us)
            );
        }
    }
}

impl Report {
    /// Human-readable report.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "{} for {:.1} s: {} players ({} playing, {} cheaters) at {} Hz movement",
            self.mode, self.duration_s, self.players, self.playing, self.cheaters, self.rate_hz
        );
        if !self.relays.is_empty() {
            let list: Vec<String> = self
                .relays
                .iter()
                .map(|r| format!("{} {} ({})", r.region, r.players, r.addr))
                .collect();
            let _ = write!(o, "relays        {}", list.join(" · "));
            if let Some(g) = self.geo_placed {
                let _ = write!(o, "; GeoIP placed {g}/{} in their region", self.players);
            }
            o.push('\n');
        }
        class_lines(
            &mut o,
            "event latency origin → player     events     p50 /      p99 /    p99.9",
            &self.latency,
        );
        class_lines(
            &mut o,
            "action round trip player → origin → player  p50 /      p99 /    p99.9",
            &self.action_rtt,
        );
        if let Some(p) = &self.origin_rtt {
            let ms = |us: u64| us as f64 / 1000.0;
            let _ = writeln!(
                o,
                "origin ping   player → relay → origin → relay → player: {} pings, p50 {:.2} / p99 {:.2} / p99.9 {:.2} ms",
                p.count,
                ms(p.p50_us),
                ms(p.p99_us),
                ms(p.p999_us)
            );
        }
        let _ = write!(o, "updates/s     ");
        if let Some(u) = self.origin_updates_per_s {
            let _ = write!(o, "origin applied {u:.0}/s; ");
        }
        let _ = writeln!(
            o,
            "players sent {:.0} moves/s; events delivered {:.0}/s",
            self.moves_sent_per_s, self.events_per_s
        );
        let c = &self.conflicts;
        let _ = writeln!(
            o,
            "conflicts     {} answered (detected in p50 {} / p99 {}), {} resolved by retry (p50 {} / p99 {}), {} unresolved",
            c.answered,
            ms(c.detect.p50_us),
            ms(c.detect.p99_us),
            c.resolved,
            ms(c.resolve.p50_us),
            ms(c.resolve.p99_us),
            c.unresolved
        );
        let ch = &self.cheats;
        let _ = write!(
            o,
            "cheats        {}/{} caught at the origin; ",
            ch.caught, ch.attempted
        );
        match ch.edge_rate_limited {
            Some(n) => {
                let _ = write!(
                    o,
                    "{n} of {} flood messages refused at the edge; ",
                    ch.flood_sent
                );
            }
            None => {
                let _ = write!(o, "{} flood messages sent; ", ch.flood_sent);
            }
        }
        if let Some(a) = ch.anomalies {
            let _ = write!(o, "{a} anomalies flagged; ");
        }
        if ch.kept_out > 0 {
            let _ = write!(o, "{} kicked cheaters kept out; ", ch.kept_out);
        }
        if let Some(v) = ch.rule_violations {
            let _ = write!(o, "{v} refused by the rules at the origin; ");
        }
        let _ = writeln!(o, "{} false positives", ch.false_positives);
        let _ = writeln!(
            o,
            "events lost   {} of {} received ({} reconnects; {} players verified every batch's signature and hash chain)",
            self.events_lost, self.events_received, self.reconnects, self.verified_players
        );
        let c = &self.counts;
        if c.resumes_incomplete > 0 {
            let _ = writeln!(
                o,
                "              {} sessions came back after the origin dropped them: {} events lost by honest players (counted above), {} missed by kicked cheaters while kicked (not owed)",
                c.resumes_incomplete, c.lost_on_resume, c.kicked_rejoined
            );
        }
        if !self.relay_dropped.is_empty() || self.slow_clients > 0 {
            let list: Vec<String> = self
                .relay_dropped
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(
                o,
                "relay drops   {} ({} slow clients disconnected)",
                if list.is_empty() {
                    "none".to_owned()
                } else {
                    list.join(", ")
                },
                self.slow_clients
            );
        }
        if let Some(a) = &self.audience {
            let _ = writeln!(
                o,
                "spectators    {} watching ({} failed); lateness = arrival − (world time + delay)",
                a.spectators, a.failed
            );
            for d in &a.delays {
                let _ = writeln!(
                    o,
                    "  delay {:>6}  {:>4} spectators  {:>8} frames  early {} (+{} within clock error)  lateness p50 {} p99 {} p99.9 {}  {:.1} KB/s each",
                    format!("{:.1}s", d.delay_ms as f64 / 1000.0),
                    d.spectators,
                    d.frames,
                    d.early,
                    d.early_within_error,
                    ms(d.lateness.p50_us),
                    ms(d.lateness.p99_us),
                    ms(d.lateness.p999_us),
                    d.bytes_per_s / 1000.0
                );
            }
        }
        if let Some(w) = &self.worlds {
            o.push_str(&w.text());
        }
        if let Some(e) = &self.economy {
            let _ = writeln!(
                o,
                "economy       {} offers: {} accepted, {} declined; ledger {} transactions, {} coins held of {} minted, {} refused: {}",
                e.offers,
                e.accepted,
                e.declined,
                e.transactions,
                e.coins_held,
                e.coins_minted,
                e.refused,
                if e.conserved { "conserved" } else { "NOT CONSERVED" }
            );
        }
        if let Some(z) = &self.zones {
            o.push_str(&z.text());
        }
        if let Some(a) = &self.analytics {
            o.push_str(&a.text());
        }
        for e in &self.errors {
            let _ = writeln!(o, "error         {e}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_an_empty_histogram_are_zero() {
        assert_eq!(Percentiles::of(&histogram()), Percentiles::default());
        let mut h = histogram();
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        // Two significant digits.
        assert!((495..=505).contains(&p.p50_us), "{p:?}");
        assert!((990..=1010).contains(&p.max_us), "{p:?}");
    }

    #[test]
    fn by_class_skips_silent_classes() {
        let mut hs: Vec<_> = (0..EventClass::COUNT).map(|_| histogram()).collect();
        hs[EventClass::Movement.rank()].record(7).unwrap();
        let m = by_class(&hs);
        assert_eq!(m.keys().collect::<Vec<_>>(), vec!["movement"]);
    }
}
