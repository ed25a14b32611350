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
/// Earth's mean radius, km.
const EARTH_KM: f64 = 6371.0;

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
    let (la1, lo1) = (a.0.to_radians(), a.1.to_radians());
    let (la2, lo2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * EARTH_KM * h.sqrt().min(1.0).asin()
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
    let relays: BTreeMap<String, BTreeMap<String, u32>> = view
        .relays()
        .map(|r| (r.id.clone(), r.origin_rtt_ms.clone()))
        .collect();
    let mut est = through_relays(client_to_relay, &relays);
    est.retain(|o, _| runs(o));
    if est.is_empty() {
        let origins: BTreeMap<String, (f64, f64)> = view
            .origins()
            .filter(|o| runs(&o.id))
            .filter_map(|o| Some((o.id.clone(), o.coords?)))
            .collect();
        est = from_coordinates(client_coords?, &origins);
    }
    (!est.is_empty()).then_some(est)
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
        // Neither, or a game no origin runs: no estimate.
        assert_eq!(for_ticket(&view, "arena", &BTreeMap::new(), None), None);
        assert_eq!(
            for_ticket(&view, "chess", &measured, Some((48.85, 2.35))),
            None
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
