//! A ticket's round trip to each origin, from what the mesh already measures:
//! the client's RTT to each relay it probed plus that relay's RTT to the
//! origin (relays publish theirs in the control plane); the best relay per
//! origin wins. A client without measurements falls back to great-circle
//! distance at fibre speed, which overestimates a good path by little and
//! never matches a player on the far side of the world as "near".

use std::collections::BTreeMap;

/// Kilometres light covers in fibre per millisecond, one way (~2/3 c).
const FIBRE_KM_PER_MS: f64 = 200.0;
/// Routing and last-mile overhead added to a distance estimate, ms.
const GEO_OVERHEAD_MS: f64 = 10.0;

/// Estimated RTT (ms) to each origin through the best relay: for every
/// relay the client measured (`client_to_relay`, ms) and every origin that
/// relay measured (`relay_to_origin[relay][origin]`, ms), the sum; the least
/// per origin.
pub fn through_relays(
    client_to_relay: &BTreeMap<String, u32>,
    relay_to_origin: &BTreeMap<String, BTreeMap<String, u32>>,
) -> BTreeMap<String, u32> {
    let mut best: BTreeMap<String, u32> = BTreeMap::new();
    for (relay, c) in client_to_relay {
        let Some(origins) = relay_to_origin.get(relay) else {
            continue;
        };
        for (origin, r) in origins {
            let total = c.saturating_add(*r);
            best.entry(origin.clone())
                .and_modify(|b| *b = (*b).min(total))
                .or_insert(total);
        }
    }
    best
}

/// Great-circle distance between two points (degrees), km.
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    skylane_proto::geo::distance_km(a.0, a.1, b.0, b.1)
}

/// Estimated RTT (ms) from a client at `client` (GeoIP coordinates) to each
/// origin at its coordinates: there and back at fibre speed, plus overhead.
pub fn from_coordinates(
    client: (f64, f64),
    origins: &BTreeMap<String, (f64, f64)>,
) -> BTreeMap<String, u32> {
    origins
        .iter()
        .map(|(o, at)| {
            let ms = 2.0 * distance_km(client, *at) / FIBRE_KM_PER_MS + GEO_OVERHEAD_MS;
            (o.clone(), ms.round() as u32)
        })
        .collect()
}

/// A ticket's estimates from the control plane's view: through the relays
/// the client measured (`client_to_relay`, by relay node id, ms) and the RTTs
/// those relays publish to each origin; else, from the client's coordinates
/// (GeoIP) and the origins' registered coordinates; `None` when neither
/// gives an origin that runs `game`.
pub fn for_ticket(
    view: &skylane_control::ClusterView,
    game: &str,
    client_to_relay: &BTreeMap<String, u32>,
    client_coords: Option<(f64, f64)>,
) -> Option<BTreeMap<String, u32>> {
    let runs = |o: &str| {
        view.nodes
            .get(o)
            .is_some_and(|n| n.games.iter().any(|g| g == game))
    };
    let origins: BTreeMap<String, (f64, f64)> = view
        .origins()
        .filter(|o| runs(&o.id))
        .filter_map(|o| Some((o.id.clone(), o.coords?)))
        .collect();
    // A relay that has not published its RTT to an origin yet (it just
    // linked) stands in with the distance between them.
    let relays: BTreeMap<String, BTreeMap<String, u32>> = view
        .relays()
        .map(|r| {
            let mut rtts = r.origin_rtt_ms.clone();
            if let Some(at) = r.coords {
                for (o, ms) in from_coordinates(at, &origins) {
                    rtts.entry(o).or_insert(ms);
                }
            }
            (r.id.clone(), rtts)
        })
        .collect();
    let mut est = through_relays(client_to_relay, &relays);
    est.retain(|o, _| runs(o));
    if est.is_empty() {
        est = from_coordinates(client_coords?, &origins);
    }
    (!est.is_empty()).then_some(est)
}

/// The relays a player should use to reach `origin`, best first, at most
/// `k`: those it measured, by its RTT to the relay plus the relay's to the
/// origin (then the other relays it measured, by its RTT to them); without
/// measurements, the relays nearest its coordinates; without those, every
/// relay.
pub fn relays_for(
    view: &skylane_control::ClusterView,
    origin: &str,
    client_to_relay: &BTreeMap<String, u32>,
    client_coords: Option<(f64, f64)>,
    k: usize,
) -> Vec<skylane_proto::matchmaking::RelayEntry> {
    let entry =
        |r: &skylane_control::NodeInfo, est: Option<u32>| skylane_proto::matchmaking::RelayEntry {
            id: r.id.clone(),
            addr: r.addr.clone(),
            tls_name: r.tls_name.clone(),
            region: r.region.clone(),
            estimated_rtt_ms: est,
        };
    let mut ranked: Vec<(u8, u64, skylane_proto::matchmaking::RelayEntry)> = view
        .relays()
        .filter_map(|r| {
            if let Some(c) = client_to_relay.get(&r.id) {
                return Some(match r.origin_rtt_ms.get(origin) {
                    Some(o) => {
                        let est = c.saturating_add(*o);
                        (0, u64::from(est), entry(r, Some(est)))
                    }
                    None => (1, u64::from(*c), entry(r, None)),
                });
            }
            if !client_to_relay.is_empty() {
                return None;
            }
            let km = match (client_coords, r.coords) {
                (Some(c), Some(at)) => distance_km(c, at) as u64,
                _ => u64::MAX,
            };
            Some((2, km, entry(r, None)))
        })
        .collect();
    ranked.sort_by(|a, b| (a.0, a.1, &a.2.id).cmp(&(b.0, b.1, &b.2.id)));
    ranked.into_iter().take(k).map(|(_, _, e)| e).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_is_estimated_from_the_view_or_from_coordinates() {
        use skylane_control::{ClusterView, NodeInfo, NodeKind};
        let mut view = ClusterView::default();
        let mut origin = |id: &str, at: (f64, f64)| {
            let mut o = NodeInfo::relay(0, "10.0.0.1:4500", "localhost", "eu");
            o.id = id.into();
            o.kind = NodeKind::Origin;
            o.coords = Some(at);
            o.games = vec!["arena".into()];
            view.nodes.insert(id.into(), o);
        };
        origin("origin-fra", (50.11, 8.68));
        origin("origin-tyo", (35.68, 139.69));
        let mut relay = NodeInfo::relay(1, "10.0.0.2:4433", "localhost", "eu");
        relay.origin_rtt_ms = map(&[("origin-fra", 8), ("origin-tyo", 230)]);
        view.nodes.insert(relay.id.clone(), relay);
        let measured = map(&[("relay-1", 12)]);
        assert_eq!(
            for_ticket(&view, "arena", &measured, None),
            Some(map(&[("origin-fra", 20), ("origin-tyo", 242)]))
        );
        // No measurement: coordinates (Paris).
        let geo = for_ticket(&view, "arena", &BTreeMap::new(), Some((48.85, 2.35))).unwrap();
        assert!(geo["origin-fra"] < geo["origin-tyo"], "{geo:?}");
        // A relay that published nothing yet stands in with its distance.
        let mut fresh = NodeInfo::relay(2, "10.0.0.3:4433", "localhost", "eu");
        fresh.coords = Some((48.85, 2.35));
        view.nodes.insert(fresh.id.clone(), fresh);
        let est = for_ticket(&view, "arena", &map(&[("relay-2", 5)]), None).unwrap();
        assert!((15..=30).contains(&est["origin-fra"]), "{est:?}");
        // Neither, or a game no origin runs: no estimate.
        assert_eq!(for_ticket(&view, "arena", &BTreeMap::new(), None), None);
        assert_eq!(
            for_ticket(&view, "chess", &measured, Some((48.85, 2.35))),
            None
        );
    }

    #[test]
    fn a_players_relays_are_ranked_by_the_path_to_the_origin() {
        use skylane_control::ClusterView;
        let mut view = ClusterView::default();
        for (id, at, rtts) in [
            (1, (52.37, 4.90), map(&[("o-eu", 10), ("o-us", 80)])),
            (2, (40.71, -74.0), map(&[("o-us", 5)])),
            (3, (50.11, 8.68), map(&[("o-eu", 3)])),
        ] {
            let mut r = skylane_control::NodeInfo::relay(id, "10.0.0.1:1", "localhost", "x");
            r.coords = Some(at);
            r.origin_rtt_ms = rtts;
            view.nodes.insert(r.id.clone(), r);
        }
        let ids = |v: Vec<skylane_proto::matchmaking::RelayEntry>| -> Vec<String> {
            v.into_iter().map(|e| e.id).collect()
        };
        // Measured: 1 (12 + 10) beats 3 (25 + 3 = 28); 2 has no path to o-eu
        // of its own, so it comes last.
        let measured = map(&[("relay-1", 12), ("relay-2", 70), ("relay-3", 25)]);
        let r = relays_for(&view, "o-eu", &measured, None, 3);
        assert_eq!(r[0].estimated_rtt_ms, Some(22));
        assert_eq!(ids(r), ["relay-1", "relay-3", "relay-2"]);
        // Not measured: by distance from the player (New York).
        let r = relays_for(&view, "o-eu", &BTreeMap::new(), Some((40.0, -75.0)), 2);
        assert_eq!(ids(r), ["relay-2", "relay-1"]);
        // Neither: every relay, up to k.
        assert_eq!(
            relays_for(&view, "o-eu", &BTreeMap::new(), None, 5).len(),
            3
        );
    }

    fn map(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn the_best_relay_per_origin_wins() {
        let client = map(&[("ams", 10), ("fra", 25), ("nyc", 90)]);
        let mut relays = BTreeMap::new();
        relays.insert("ams".to_owned(), map(&[("eu", 12), ("us", 85)]));
        relays.insert("fra".to_owned(), map(&[("eu", 2)]));
        relays.insert("nyc".to_owned(), map(&[("us", 3)]));
        let est = through_relays(&client, &relays);
        assert_eq!(est, map(&[("eu", 22), ("us", 93)]));
        assert!(through_relays(&BTreeMap::new(), &relays).is_empty());
    }

    #[test]
    fn coordinates_give_a_plausible_rtt() {
        let paris = (48.85, 2.35);
        let mut origins = BTreeMap::new();
        origins.insert("frankfurt".to_owned(), (50.11, 8.68));
        origins.insert("tokyo".to_owned(), (35.68, 139.69));
        let est = from_coordinates(paris, &origins);
        assert!((14..=20).contains(&est["frankfurt"]), "{est:?}");
        assert!((90..=110).contains(&est["tokyo"]), "{est:?}");
        assert!(distance_km(paris, paris) < 1e-6);
    }
}
