//! Which origin gets a new world: pure, deterministic, no I/O.
//!
//! Candidates are origins that run the world's game and have room (fewer worlds
//! placed on them than their capacity; placement counts worlds itself rather than
//! trusting reported load, so two creations in a row see each other). Among them
//! it prefers, in order: the spec's region, the lowest round-trip estimate when
//! the caller has one (the matchmaker's; in 5 ms steps, so near-equal origins
//! share the load), the lowest fill ratio, then the id (so the same view
//! always gives the same answer).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use skylane_proto::zones::ZoneIdx;
use skylane_proto::WorldId;

use crate::model::{ClusterView, NodeInfo, WorldRecord, WorldSpec, WorldStatus, ZoneOf};

/// Why no origin could take a world.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// No registered origin runs the game.
    #[error("no origin runs the game {0:?}")]
    UnknownGame(String),
    /// Every origin that runs the game is full.
    #[error("every origin that runs {game:?} is at capacity ({origins} origins)")]
    NoCapacity {
        /// The game.
        game: String,
        /// How many origins run it.
        origins: usize,
    },
}

/// RTT hints rank origins in steps of this (5 ms): within a step, the
/// emptier origin wins.
pub const RTT_STEP_US: u64 = 5_000;

/// Hints a caller may add to a placement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementHints {
    /// Estimated worst-case round trip from the world's players to each origin
    /// (node id → microseconds); origins absent from the map rank after those in it.
    pub rtt_us: BTreeMap<String, u64>,
    /// Origins not to use (a failed attempt, a draining node).
    pub exclude: Vec<String>,
}

/// Picks the origin for `spec` in `view`.
pub fn place(
    spec: &WorldSpec,
    view: &ClusterView,
    hints: &PlacementHints,
) -> Result<String, PlacementError> {
    let runs: Vec<&NodeInfo> = view
        .origins()
        .filter(|n| n.games.contains(&spec.game))
        .filter(|n| !hints.exclude.contains(&n.id))
        .collect();
    if runs.is_empty() {
        return Err(PlacementError::UnknownGame(spec.game.clone()));
    }
    let with_room: Vec<(&NodeInfo, u64)> = runs
        .iter()
        .map(|n| (*n, view.worlds_on(&n.id).count() as u64))
        .filter(|(n, placed)| *placed < u64::from(n.capacity))
        .collect();
    with_room
        .into_iter()
        .min_by(|a, b| rank(spec, hints, *a, *b))
        .map(|(n, _)| n.id.clone())
        .ok_or_else(|| PlacementError::NoCapacity {
            game: spec.game.clone(),
            origins: runs.len(),
        })
}

/// The standbys for a world placed on `primary`: `spec.standbys` (default:
/// one) other origins that run the game, best ranked first (standbys are not
/// held to capacity: a standby costs re-execution, not players). Fewer when
/// fewer exist.
pub fn place_standbys(
    spec: &WorldSpec,
    view: &ClusterView,
    hints: &PlacementHints,
    primary: &str,
) -> Vec<String> {
    let want = spec.standbys.unwrap_or(1) as usize;
    let mut others: Vec<(&NodeInfo, u64)> = view
        .origins()
        .filter(|n| n.id != primary && n.games.contains(&spec.game))
        .filter(|n| !hints.exclude.contains(&n.id))
        .map(|n| {
            let load = view
                .worlds
                .values()
                .filter(|w| w.placed_on == n.id || w.standbys.contains(&n.id))
                .count() as u64;
            (n, load)
        })
        .collect();
    others.sort_by(|a, b| rank(spec, hints, *a, *b));
    others
        .into_iter()
        .take(want)
        .map(|(n, _)| n.id.clone())
        .collect()
}

/// The records a new world gets, ids from `first`: one for an unzoned
/// world; for a zoned one, its own record (what clients name, never claimed;
/// `placed_on` its home zone's origin) and then one per zone (id
/// `first + 1 + zone`, `zone_of` set), each placed and given standbys like a
/// world, every placement seeing the zones placed before it, so the zones
/// spread over the origins that run the game.
pub fn place_world(
    spec: &WorldSpec,
    view: &ClusterView,
    hints: &PlacementHints,
    first: WorldId,
) -> Result<Vec<WorldRecord>, PlacementError> {
    let record = |id: WorldId, spec: WorldSpec, node: String, standbys: Vec<String>| WorldRecord {
        id,
        spec,
        placed_on: node,
        standbys,
        ending: false,
        owner: None,
        status: WorldStatus::default(),
        offers: BTreeMap::new(),
    };
    let Some(zones) = &spec.zones else {
        let node = place(spec, view, hints)?;
        let standbys = place_standbys(spec, view, hints, &node);
        return Ok(vec![record(first, spec.clone(), node, standbys)]);
    };
    let mut scratch = view.clone();
    let mut out = Vec::with_capacity(zones.layout.len() + 1);
    for z in zones.layout.zones() {
        let id = WorldId(first.0 + 1 + u64::from(z.0));
        let zspec = WorldSpec {
            zone_of: Some(ZoneOf {
                world: first,
                zone: z,
            }),
            ..spec.clone()
        };
        let node = place(&zspec, &scratch, hints)?;
        let standbys = place_standbys(&zspec, &scratch, hints, &node);
        let rec = record(id, zspec, node, standbys);
        scratch.worlds.insert(id, rec.clone());
        out.push(rec);
    }
    let home = out.first().map(|r| r.placed_on.clone()).unwrap_or_default();
    out.insert(0, record(first, spec.clone(), home, Vec::new()));
    debug_assert_eq!(out[1].spec.zone_of.map(|z| z.zone), Some(ZoneIdx(0)));
    Ok(out)
}

fn rank(
    spec: &WorldSpec,
    hints: &PlacementHints,
    (a, a_placed): (&NodeInfo, u64),
    (b, b_placed): (&NodeInfo, u64),
) -> Ordering {
    let off_region = |n: &NodeInfo| spec.region.as_ref().is_some_and(|r| *r != n.region);
    // In steps of RTT_STEP_US: origins within a step are equally near, and
    // fill decides (a 1 ms difference must not pile every world on one).
    let rtt = |n: &NodeInfo| {
        hints
            .rtt_us
            .get(&n.id)
            .map_or(u64::MAX, |us| us / RTT_STEP_US)
    };
    off_region(a)
        .cmp(&off_region(b))
        .then_with(|| rtt(a).cmp(&rtt(b)))
        // a_placed / a.capacity against b_placed / b.capacity, in integers.
        .then_with(|| (a_placed * u64::from(b.capacity)).cmp(&(b_placed * u64::from(a.capacity))))
        .then_with(|| a.id.cmp(&b.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NodeKind, WorldRecord, WorldStatus};
    use proptest::prelude::*;
    use skylane_proto::WorldId;

    fn origin(id: &str, region: &str, capacity: u32, games: &[&str]) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            kind: NodeKind::Origin,
            addr: "127.0.0.1:1".into(),
            tls_name: "localhost".into(),
            admin: None,
            region: region.into(),
            coords: None,
            capacity,
            games: games.iter().map(|g| (*g).to_string()).collect(),
            load: 0,
            attestation_key: None,
            origin_rtt_ms: Default::default(),
        }
    }

    fn view(nodes: Vec<NodeInfo>, placed: &[(&str, u64)]) -> ClusterView {
        let mut v = ClusterView::default();
        for n in nodes {
            v.nodes.insert(n.id.clone(), n);
        }
        let mut id = 0;
        for (node, count) in placed {
            for _ in 0..*count {
                id += 1;
                v.worlds.insert(
                    WorldId(id),
                    WorldRecord {
                        id: WorldId(id),
                        spec: WorldSpec::new("arena", 30, 8),
                        placed_on: (*node).into(),
                        standbys: Vec::new(),
                        ending: false,
                        owner: None,
                        status: WorldStatus::default(),
                        offers: Default::default(),
                    },
                );
            }
        }
        v
    }

    #[test]
    fn unknown_game_is_refused_by_name() {
        let v = view(vec![origin("a", "eu", 4, &["arena"])], &[]);
        let spec = WorldSpec::new("chess", 10, 2);
        assert_eq!(
            place(&spec, &v, &PlacementHints::default()),
            Err(PlacementError::UnknownGame("chess".into()))
        );
    }

    #[test]
    fn a_full_origin_is_never_chosen() {
        let v = view(
            vec![
                origin("a", "eu", 2, &["arena"]),
                origin("b", "eu", 10, &["arena"]),
            ],
            &[("a", 2), ("b", 9)],
        );
        let spec = WorldSpec::new("arena", 30, 8);
        assert_eq!(place(&spec, &v, &PlacementHints::default()), Ok("b".into()));
        let v = view(
            vec![
                origin("a", "eu", 2, &["arena"]),
                origin("b", "eu", 10, &["arena"]),
            ],
            &[("a", 2), ("b", 10)],
        );
        assert_eq!(
            place(&spec, &v, &PlacementHints::default()),
            Err(PlacementError::NoCapacity {
                game: "arena".into(),
                origins: 2
            })
        );
    }

    #[test]
    fn region_then_rtt_then_fill_then_id() {
        let nodes = vec![
            origin("a", "us", 10, &["arena"]),
            origin("b", "eu", 10, &["arena"]),
            origin("c", "eu", 10, &["arena"]),
        ];
        let mut spec = WorldSpec::new("arena", 30, 8);
        spec.region = Some("eu".into());
        // Region first, then fill ratio: c is emptier.
        let v = view(nodes.clone(), &[("b", 3), ("c", 1)]);
        assert_eq!(place(&spec, &v, &PlacementHints::default()), Ok("c".into()));
        // An RTT hint beats fill...
        let mut hints = PlacementHints::default();
        hints.rtt_us.insert("b".into(), 20_000);
        hints.rtt_us.insert("c".into(), 90_000);
        assert_eq!(place(&spec, &v, &hints), Ok("b".into()));
        // ...unless the two are within a step: then fill decides.
        let mut close = PlacementHints::default();
        close.rtt_us.insert("b".into(), 20_000);
        close.rtt_us.insert("c".into(), 21_000);
        assert_eq!(place(&spec, &v, &close), Ok("c".into()));
        // Excluded nodes are skipped.
        hints.exclude.push("b".into());
        assert_eq!(place(&spec, &v, &hints), Ok("c".into()));
        // Equal everything: the id decides.
        let v = view(nodes.clone(), &[]);
        assert_eq!(place(&spec, &v, &PlacementHints::default()), Ok("b".into()));
        // Off-region is a fallback when the region is full.
        let v = view(nodes, &[("b", 10), ("c", 10)]);
        assert_eq!(place(&spec, &v, &PlacementHints::default()), Ok("a".into()));
    }

    #[test]
    fn relays_and_other_games_are_not_candidates() {
        let mut relay = origin("r", "eu", 100, &["arena"]);
        relay.kind = NodeKind::Relay;
        let v = view(vec![relay, origin("o", "eu", 1, &["tictactoe"])], &[]);
        assert!(matches!(
            place(
                &WorldSpec::new("arena", 30, 8),
                &v,
                &PlacementHints::default()
            ),
            Err(PlacementError::UnknownGame(_))
        ));
    }

    proptest! {
        /// Whatever the view, the chosen origin runs the game and has room, and
        /// placement fails only when no such origin exists.
        #[test]
        fn chosen_origin_has_room(
            caps in proptest::collection::vec(0u32..5, 1..6),
            fills in proptest::collection::vec(0u64..6, 6),
            game_mask in proptest::collection::vec(any::<bool>(), 6),
        ) {
            let nodes: Vec<NodeInfo> = caps
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let games: &[&str] = if game_mask[i] { &["arena"] } else { &["other"] };
                    origin(&format!("o{i}"), "eu", *c, games)
                })
                .collect();
            let names: Vec<String> = (0..caps.len()).map(|i| format!("o{i}")).collect();
            let placed: Vec<(&str, u64)> = names.iter().zip(&fills).map(|(n, f)| (n.as_str(), *f)).collect();
            let v = view(nodes.clone(), &placed);
            let spec = WorldSpec::new("arena", 30, 8);
            let any_room = nodes.iter().zip(&fills).any(|(n, f)| n.games[0] == "arena" && *f < u64::from(n.capacity));
            match place(&spec, &v, &PlacementHints::default()) {
                Ok(id) => {
                    let i: usize = id[1..].parse().unwrap();
                    prop_assert_eq!(nodes[i].games[0].as_str(), "arena");
                    prop_assert!(fills[i] < u64::from(nodes[i].capacity));
                }
                Err(_) => prop_assert!(!any_room),
            }
        }
    }
}
