//! Anomaly detection at the origin: each player's recent behaviour against the
//! population's.
//!
//! Rule validators catch actions that are impossible (too fast, off cooldown, out of
//! range). This detector catches behaviour that is possible once but not
//! sustainably: hit accuracy far above the population's, reaction times below
//! human limits, and action rates above what a client sends. It keeps a small
//! rolling window per session, evaluates once per second of world time (not per
//! action), and reports [`Violation`]s with their evidence. Pure: no clock.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;

use serde::Serialize;
use skylane_proto::SessionId;

/// What the origin does about a violation.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// Record it only.
    #[default]
    Flag,
    /// Record it and disconnect the session.
    Kick,
    /// Record it, disconnect, and refuse the player for the rest of the world's life.
    Ban,
}

/// What the origin does about each kind of violation, and for how long a
/// kick or a ban holds (on every relay the origin is linked to, and cluster-wide
/// through the control plane's ban list when there is one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct EnforcementPolicy {
    /// Hit accuracy far above the population's.
    pub accuracy: Enforcement,
    /// Reactions faster than humanly possible.
    pub reaction_time: Enforcement,
    /// More actions per second than allowed.
    pub action_rate: Enforcement,
    /// Rule validators' refusals, once a session collects `rule_strikes` of
    /// them within one second of world time (the default for every rule).
    pub rule: Enforcement,
    /// The speed rule's (a teleport), when it differs from `rule`.
    pub rule_speed: Option<Enforcement>,
    /// The cooldown rule's (firing too often), when it differs from `rule`.
    pub rule_cooldown: Option<Enforcement>,
    /// The range rule's (out of reach), when it differs from `rule`.
    pub rule_range: Option<Enforcement>,
    /// Rule refusals within one second of world time that make a violation
    /// (at least 1: every refusal is one).
    pub rule_strikes: u32,
    /// How long a kicked subject is refused at hello, a resume included.
    pub kick_cooldown_secs: u64,
    /// How long a ban lasts (0: permanent).
    pub ban_secs: u64,
}

impl Default for EnforcementPolicy {
    fn default() -> Self {
        Self::uniform(Enforcement::Kick)
    }
}

impl EnforcementPolicy {
    /// `action` for every statistical detector; rule refusals flagged one by
    /// one; a 60 s kick cool-down and 24 h bans.
    pub fn uniform(action: Enforcement) -> Self {
        Self {
            accuracy: action,
            reaction_time: action,
            action_rate: action,
            rule: Enforcement::Flag,
            rule_speed: None,
            rule_cooldown: None,
            rule_range: None,
            rule_strikes: 1,
            kick_cooldown_secs: 60,
            ban_secs: 86_400,
        }
    }

    /// What to do about a rule refusal with `code`.
    pub fn rule_action(&self, code: skylane_proto::RejectCode) -> Enforcement {
        use skylane_proto::RejectCode as C;
        let special = match code {
            C::Speed => self.rule_speed,
            C::Cooldown => self.rule_cooldown,
            C::Range => self.rule_range,
            _ => None,
        };
        special.unwrap_or(self.rule)
    }

    /// What to do about `kind`.
    pub fn action(&self, kind: AnomalyKind) -> Enforcement {
        match kind {
            AnomalyKind::Accuracy => self.accuracy,
            AnomalyKind::ReactionTime => self.reaction_time,
            AnomalyKind::ActionRate => self.action_rate,
            AnomalyKind::Rule => self.rule,
        }
    }

    /// How long `action` keeps the subject out (`None`: not at all;
    /// `Some(0)`: permanently).
    pub fn sanction_secs(&self, action: Enforcement) -> Option<u64> {
        match action {
            Enforcement::Flag => None,
            Enforcement::Kick => Some(self.kick_cooldown_secs.max(1)),
            Enforcement::Ban => Some(self.ban_secs),
        }
    }
}

/// Kinds of anomaly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// Hit accuracy far above the population.
    Accuracy,
    /// Reactions faster than humanly possible.
    ReactionTime,
    /// More actions per second than allowed.
    ActionRate,
    /// A rule validator refused an action (speed, cooldown, range...).
    Rule,
}

/// A recorded violation with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    /// Session.
    pub session: SessionId,
    /// Player id.
    pub player: String,
    /// World tick when detected.
    pub tick: u64,
    /// Kind.
    pub kind: AnomalyKind,
    /// What was measured, in words and numbers.
    pub evidence: String,
    /// The measured value the rule judged (accuracy 0..1, median reaction in
    /// ms, actions per second, rule refusals in the second).
    pub value: f64,
    /// The threshold it crossed.
    pub threshold: f64,
    /// What was done.
    pub enforcement: Enforcement,
}

/// Detector thresholds. Defaults are conservative: honest bots and players must
/// never trip them (tests measure the false-positive count at zero).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct DetectorConfig {
    /// Attacks a player must have made in the window before accuracy is judged.
    pub min_attacks: usize,
    /// Accuracy at or above this is always suspicious (given `min_attacks`).
    pub max_accuracy: f64,
    /// Standard deviations above the population mean that are suspicious.
    pub accuracy_sigmas: f64,
    /// A median reaction below this (microseconds) is suspicious.
    pub min_reaction_us: u64,
    /// Reaction samples needed before the median is judged.
    pub min_reactions: usize,
    /// Actions per second above this are suspicious.
    pub max_actions_per_sec: f64,
    /// Window of recent attacks kept per session.
    pub window: usize,
    /// What to do about each kind.
    pub policy: EnforcementPolicy,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            min_attacks: 20,
            max_accuracy: 0.95,
            accuracy_sigmas: 4.0,
            min_reaction_us: 120_000,
            min_reactions: 10,
            max_actions_per_sec: 120.0,
            window: 64,
            policy: EnforcementPolicy::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
struct Recent {
    player: String,
    attacks: VecDeque<bool>,
    reactions: VecDeque<u64>,
    actions_this_period: u32,
    rule_strikes: u32,
    flagged: Option<AnomalyKind>,
}

/// Per-session behaviour windows and the population's statistics.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Detector {
    cfg: DetectorConfig,
    sessions: HashMap<SessionId, Recent>,
}

impl Detector {
    /// A detector with `cfg`.
    pub fn new(cfg: DetectorConfig) -> Self {
        Self {
            cfg,
            sessions: HashMap::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    /// Starts tracking a session.
    pub fn handle_join(&mut self, session: SessionId, player: &str) {
        self.sessions.insert(
            session,
            Recent {
                player: player.to_owned(),
                ..Recent::default()
            },
        );
    }

    /// Stops tracking a session.
    pub fn handle_leave(&mut self, session: SessionId) {
        self.sessions.remove(&session);
    }

    /// Counts an action (applied or not).
    pub fn handle_action(&mut self, session: SessionId) {
        if let Some(r) = self.sessions.get_mut(&session) {
            r.actions_this_period = r.actions_this_period.saturating_add(1);
        }
    }

    /// Records an applied attack.
    pub fn handle_attack(&mut self, session: SessionId, hit: bool, reaction_us: Option<u64>) {
        let window = self.cfg.window;
        if let Some(r) = self.sessions.get_mut(&session) {
            r.attacks.push_back(hit);
            if r.attacks.len() > window {
                r.attacks.pop_front();
            }
            if let Some(us) = reaction_us.filter(|_| hit) {
                r.reactions.push_back(us);
                if r.reactions.len() > window {
                    r.reactions.pop_front();
                }
            }
        }
    }

    /// A rule validator refused an action (`evidence`: the validator's
    /// words): a violation once the session's refusals this second reach the
    /// policy's `rule_strikes` (then none until the next second).
    pub fn rule_violation(
        &mut self,
        session: SessionId,
        tick: u64,
        code: skylane_proto::RejectCode,
        evidence: String,
    ) -> Option<Violation> {
        let policy = self.cfg.policy;
        let r = self.sessions.get_mut(&session)?;
        r.rule_strikes = r.rule_strikes.saturating_add(1);
        let strikes = policy.rule_strikes.max(1);
        if r.rule_strikes != strikes {
            return None;
        }
        let evidence = if strikes == 1 {
            evidence
        } else {
            format!("{strikes} rule refusals within 1 s (the last: {evidence})")
        };
        Some(Violation {
            session,
            player: r.player.clone(),
            tick,
            kind: AnomalyKind::Rule,
            evidence,
            value: f64::from(r.rule_strikes),
            threshold: f64::from(strikes),
            enforcement: policy.rule_action(code),
        })
    }

    /// Judges every session over the period that just ended (`period_secs` of world
    /// time) and returns new anomalies. A session is reported once per kind.
    pub fn evaluate(&mut self, tick: u64, period_secs: f64) -> Vec<Violation> {
        let cfg = self.cfg;
        let accuracy =
            |r: &Recent| r.attacks.iter().filter(|h| **h).count() as f64 / r.attacks.len() as f64;
        // Population accuracy over players with enough attacks.
        let pop: Vec<f64> = self
            .sessions
            .values()
            .filter(|r| r.attacks.len() >= cfg.min_attacks)
            .map(accuracy)
            .collect();
        let (mean, sd) = if pop.len() >= 2 {
            let m = pop.iter().sum::<f64>() / pop.len() as f64;
            let v = pop.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (pop.len() - 1) as f64;
            (m, v.sqrt())
        } else {
            (0.0, 0.0)
        };
        let mut out = Vec::new();
        let mut ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        ids.sort();
        for id in ids {
            let Some(r) = self.sessions.get_mut(&id) else {
                continue;
            };
            let rate = f64::from(r.actions_this_period) / period_secs.max(1e-9);
            r.actions_this_period = 0;
            r.rule_strikes = 0;
            if r.flagged.is_some() {
                continue;
            }
            let mut found = None;
            if rate > cfg.max_actions_per_sec {
                found = Some((
                    AnomalyKind::ActionRate,
                    format!("{rate:.0} actions/s (max {})", cfg.max_actions_per_sec),
                    rate,
                    cfg.max_actions_per_sec,
                ));
            } else if r.attacks.len() >= cfg.min_attacks {
                let acc = accuracy(r);
                let outlier = pop.len() >= 5 && sd > 0.0 && acc > mean + cfg.accuracy_sigmas * sd;
                if acc >= cfg.max_accuracy || outlier {
                    let threshold = if outlier {
                        mean + cfg.accuracy_sigmas * sd
                    } else {
                        cfg.max_accuracy
                    };
                    found = Some((
                        AnomalyKind::Accuracy,
                        format!(
                            "accuracy {:.0}% over {} attacks (population {:.0}% ± {:.0}%, n={})",
                            acc * 100.0,
                            r.attacks.len(),
                            mean * 100.0,
                            sd * 100.0,
                            pop.len()
                        ),
                        acc,
                        threshold.min(cfg.max_accuracy),
                    ));
                }
            }
            if found.is_none() && r.reactions.len() >= cfg.min_reactions {
                let mut sorted: Vec<u64> = r.reactions.iter().copied().collect();
                sorted.sort_unstable();
                let median = sorted[sorted.len() / 2];
                if median < cfg.min_reaction_us {
                    found = Some((
                        AnomalyKind::ReactionTime,
                        format!(
                            "median reaction {} ms over {} hits (min {} ms)",
                            median / 1000,
                            sorted.len(),
                            cfg.min_reaction_us / 1000
                        ),
                        median as f64 / 1000.0,
                        cfg.min_reaction_us as f64 / 1000.0,
                    ));
                }
            }
            if let Some((kind, evidence, value, threshold)) = found {
                r.flagged = Some(kind);
                out.push(Violation {
                    session: id,
                    player: r.player.clone(),
                    tick,
                    kind,
                    evidence,
                    value,
                    threshold,
                    enforcement: cfg.policy.action(kind),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_outlier_is_caught_and_reported_once() {
        let mut d = Detector::new(DetectorConfig::default());
        for s in 0..10u64 {
            d.handle_join(SessionId(s), &format!("p{s}"));
            for i in 0..40 {
                // Honest players hit about a third of their shots.
                d.handle_attack(SessionId(s), (i + s) % 3 == 0, Some(300_000));
            }
        }
        d.handle_join(SessionId(99), "aimbot");
        for _ in 0..40 {
            d.handle_attack(SessionId(99), true, Some(300_000));
        }
        let v = d.evaluate(30, 1.0);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].session, SessionId(99));
        assert_eq!(v[0].kind, AnomalyKind::Accuracy);
        assert!(v[0].evidence.contains("accuracy 100%"));
        assert!(d.evaluate(60, 1.0).is_empty(), "reported once");
    }

    #[test]
    fn inhuman_reactions_and_floods_are_caught() {
        let mut d = Detector::new(DetectorConfig::default());
        d.handle_join(SessionId(1), "fast");
        for i in 0..12 {
            d.handle_attack(SessionId(1), true, Some(33_000));
            d.handle_attack(SessionId(1), i % 2 == 0, None);
        }
        d.handle_join(SessionId(2), "flood");
        for _ in 0..500 {
            d.handle_action(SessionId(2));
        }
        let v = d.evaluate(30, 1.0);
        let kinds: Vec<_> = v.iter().map(|x| (x.session, x.kind)).collect();
        assert!(
            kinds.contains(&(SessionId(1), AnomalyKind::ReactionTime)),
            "{v:?}"
        );
        assert!(
            kinds.contains(&(SessionId(2), AnomalyKind::ActionRate)),
            "{v:?}"
        );
    }

    #[test]
    fn too_few_samples_are_not_judged() {
        let mut d = Detector::new(DetectorConfig::default());
        d.handle_join(SessionId(1), "lucky");
        for _ in 0..5 {
            d.handle_attack(SessionId(1), true, Some(50_000));
        }
        assert!(d.evaluate(30, 1.0).is_empty());
        assert!(d
            .rule_violation(
                SessionId(1),
                3,
                skylane_proto::RejectCode::Speed,
                "speed".into()
            )
            .is_some());
        d.handle_leave(SessionId(1));
        assert!(d
            .rule_violation(
                SessionId(1),
                3,
                skylane_proto::RejectCode::Speed,
                "speed".into()
            )
            .is_none());
    }

    #[test]
    fn rule_strikes_make_one_violation_per_second_with_the_rule_policy() {
        let mut d = Detector::new(DetectorConfig {
            policy: EnforcementPolicy {
                rule: Enforcement::Kick,
                rule_strikes: 3,
                ..EnforcementPolicy::default()
            },
            ..DetectorConfig::default()
        });
        d.handle_join(SessionId(1), "speeder");
        let found: Vec<Violation> = (0..10)
            .filter_map(|_| {
                d.rule_violation(
                    SessionId(1),
                    5,
                    skylane_proto::RejectCode::Speed,
                    "TooFast: 30 m/s".into(),
                )
            })
            .collect();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].enforcement, Enforcement::Kick);
        assert_eq!((found[0].value, found[0].threshold), (3.0, 3.0));
        assert!(found[0].evidence.contains("3 rule refusals"), "{found:?}");
        // A new second counts afresh.
        d.evaluate(30, 1.0);
        assert!(d
            .rule_violation(
                SessionId(1),
                31,
                skylane_proto::RejectCode::Range,
                "x".into()
            )
            .is_none());
        assert!(d
            .rule_violation(
                SessionId(1),
                31,
                skylane_proto::RejectCode::Range,
                "x".into()
            )
            .is_none());
        assert!(d
            .rule_violation(
                SessionId(1),
                31,
                skylane_proto::RejectCode::Range,
                "x".into()
            )
            .is_some());
    }

    #[test]
    fn a_rule_may_have_its_own_action() {
        use skylane_proto::RejectCode as C;
        let p = EnforcementPolicy {
            rule_speed: Some(Enforcement::Ban),
            ..EnforcementPolicy::default()
        };
        assert_eq!(p.rule_action(C::Speed), Enforcement::Ban);
        assert_eq!(p.rule_action(C::Cooldown), Enforcement::Flag, "the default");
        let mut d = Detector::new(DetectorConfig {
            policy: p,
            ..DetectorConfig::default()
        });
        d.handle_join(SessionId(1), "teleporter");
        let v = d
            .rule_violation(SessionId(1), 4, C::Speed, "40 units in a tick".into())
            .unwrap();
        assert_eq!(v.enforcement, Enforcement::Ban);
    }

    #[test]
    fn the_policy_acts_per_kind_and_says_for_how_long() {
        let mut d = Detector::new(DetectorConfig {
            policy: EnforcementPolicy {
                action_rate: Enforcement::Ban,
                reaction_time: Enforcement::Flag,
                ..EnforcementPolicy::default()
            },
            ..DetectorConfig::default()
        });
        d.handle_join(SessionId(1), "fast");
        for i in 0..12 {
            d.handle_attack(SessionId(1), true, Some(33_000));
            d.handle_attack(SessionId(1), i % 2 == 0, None);
        }
        d.handle_join(SessionId(2), "flood");
        for _ in 0..500 {
            d.handle_action(SessionId(2));
        }
        let v = d.evaluate(30, 1.0);
        let by: Vec<_> = v.iter().map(|x| (x.kind, x.enforcement)).collect();
        assert!(
            by.contains(&(AnomalyKind::ActionRate, Enforcement::Ban)),
            "{v:?}"
        );
        assert!(
            by.contains(&(AnomalyKind::ReactionTime, Enforcement::Flag)),
            "{v:?}"
        );
        let rate = v
            .iter()
            .find(|x| x.kind == AnomalyKind::ActionRate)
            .unwrap();
        assert_eq!((rate.value, rate.threshold), (500.0, 120.0));
        let p = d.config().policy;
        assert_eq!(p.sanction_secs(Enforcement::Flag), None);
        assert_eq!(p.sanction_secs(Enforcement::Kick), Some(60));
        assert_eq!(p.sanction_secs(Enforcement::Ban), Some(86_400));
    }
}
