//! Skill ratings: Weng-Lin (the Bayesian approximation behind OpenSkill), from
//! the maintained `skillratings` crate. Chosen over Glicko-2 because it rates
//! teams and parties natively (a team's players are updated together from one
//! result) and carries an uncertainty that shrinks with games played, which
//! the matcher uses for new players; over TrueSkill for the same accuracy at a
//! fraction of the cost and no patent history.

use serde::{Deserialize, Serialize};
use skillratings::weng_lin::{weng_lin_multi_team, WengLinConfig, WengLinRating};
use skillratings::MultiTeamOutcome;

/// A player's rating: `mu` (skill) and `sigma` (uncertainty).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rating {
    /// Estimated skill.
    pub mu: f64,
    /// Uncertainty of it (shrinks with games played).
    pub sigma: f64,
}

impl Default for Rating {
    /// A new player: Weng-Lin's prior (25, 25/3).
    fn default() -> Self {
        let r = WengLinRating::new();
        Self {
            mu: r.rating,
            sigma: r.uncertainty,
        }
    }
}

impl Rating {
    /// A conservative skill for display and seeding: `mu - 3 sigma`.
    pub fn ordinal(&self) -> f64 {
        self.mu - 3.0 * self.sigma
    }
}

impl From<Rating> for WengLinRating {
    fn from(r: Rating) -> Self {
        Self {
            rating: r.mu,
            uncertainty: r.sigma,
        }
    }
}

impl From<WengLinRating> for Rating {
    fn from(r: WengLinRating) -> Self {
        Self {
            mu: r.rating,
            sigma: r.uncertainty,
        }
    }
}

/// New ratings after a match: `teams` with each team's `rank` (1 is first;
/// equal ranks are a draw). Returns the teams' ratings in the same shape.
pub fn update(teams: &[Vec<Rating>], ranks: &[usize]) -> Vec<Vec<Rating>> {
    let converted: Vec<Vec<WengLinRating>> = teams
        .iter()
        .map(|t| t.iter().map(|r| WengLinRating::from(*r)).collect())
        .collect();
    let input: Vec<(&[WengLinRating], MultiTeamOutcome)> = converted
        .iter()
        .zip(ranks)
        .map(|(t, r)| (t.as_slice(), MultiTeamOutcome::new(*r)))
        .collect();
    weng_lin_multi_team(&input, &WengLinConfig::new())
        .into_iter()
        .map(|t| t.into_iter().map(Rating::from).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn winners_go_up_losers_down_and_everyone_grows_surer() {
        let new = Rating::default();
        let out = update(&[vec![new, new], vec![new, new]], &[1, 2]);
        assert!(out[0].iter().all(|r| r.mu > new.mu && r.sigma < new.sigma));
        assert!(out[1].iter().all(|r| r.mu < new.mu && r.sigma < new.sigma));
        let draw = update(&[vec![new], vec![new]], &[1, 1]);
        assert!((draw[0][0].mu - new.mu).abs() < 1e-9, "{draw:?}");
        assert!(new.ordinal() < new.mu);
    }
}
