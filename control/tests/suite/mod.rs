//! The behavioural suite every control-plane implementation must pass: one body
//! per behaviour, run against the embedded store and against a real etcd.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use skylane_control::{
    Ban, Claim, ControlError, ControlPlane, NodeInfo, NodeKind, Offer, Phase, PlacementError,
    PlacementHints, SharedControl, WorldSpec, WorldStatus,
};
use skylane_proto::WorldId;
use tokio::time::{timeout, Instant};

/// Every behaviour, by name.
pub const CASES: &[&str] = &[
    "leases_lapse",
    "epochs_grow_and_a_second_owner_is_refused",
    "status_writes_are_fenced",
    "watches_fire",
    "placed_only_where_there_is_room",
    "bad_specs_are_refused",
    "worlds_end_and_are_removed",
    "standbys_are_chosen_and_replaced_by_the_owner_only",
    "offers_live_under_their_standbys_lease",
    "bans_are_seen_by_watchers_and_lifted",
    "one_leader_per_role_and_fenced_record_writes",
    "zoned_worlds_get_a_record_per_zone_spread_over_origins",
];

/// Runs one case by name.
pub async fn run(name: &str, c: SharedControl) {
    match name {
        "leases_lapse" => leases_lapse(c).await,
        "epochs_grow_and_a_second_owner_is_refused" => epochs_grow(c).await,
        "status_writes_are_fenced" => fenced(c).await,
        "watches_fire" => watches_fire(c).await,
        "placed_only_where_there_is_room" => room(c).await,
        "bad_specs_are_refused" => bad_specs(c).await,
        "worlds_end_and_are_removed" => end_and_remove(c).await,
        "standbys_are_chosen_and_replaced_by_the_owner_only" => standbys(c).await,
        "offers_live_under_their_standbys_lease" => offers(c).await,
        "bans_are_seen_by_watchers_and_lifted" => bans(c).await,
        "one_leader_per_role_and_fenced_record_writes" => leaders(c).await,
        "zoned_worlds_get_a_record_per_zone_spread_over_origins" => zoned(c).await,
        other => panic!("no case {other}"),
    }
}

pub fn origin(id: &str, capacity: u32) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        kind: NodeKind::Origin,
        addr: format!("127.0.0.1:{}", 4000 + capacity),
        tls_name: "localhost".into(),
        admin: None,
        region: "eu".into(),
        coords: None,
        capacity,
        games: vec!["tictactoe".into(), "arena".into()],
        load: 0,
        attestation_key: None,
        origin_rtt_ms: Default::default(),
    }
}

fn claim(node: &str) -> Claim {
    Claim {
        node: node.into(),
        addr: "127.0.0.1:4433".into(),
        tls_name: "localhost".into(),
    }
}

const TTL: Duration = Duration::from_secs(1);

/// Waits (real time, bounded) until `f` holds on the store's view.
async fn eventually(
    c: &dyn ControlPlane,
    what: &str,
    f: impl Fn(&skylane_control::ClusterView) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = c.view().await.expect("view");
        if f(&v) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn leases_lapse(c: SharedControl) {
    let kept = c.grant(TTL).await.unwrap();
    let lapsing = c.grant(TTL).await.unwrap();
    c.register(&origin("kept", 4), kept).await.unwrap();
    c.register(&origin("lapsing", 4), lapsing).await.unwrap();
    let w = c
        .create_world(
            WorldSpec::new("tictactoe", 10, 2),
            &PlacementHints {
                exclude: vec!["kept".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(w.placed_on, "lapsing");
    c.claim(w.id, &claim("lapsing"), lapsing).await.unwrap();
    // Keep one alive; let the other go.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        c.keep_alive(kept).await.unwrap();
        let v = c.view().await.unwrap();
        if !v.nodes.contains_key("lapsing") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let v = c.view().await.unwrap();
    assert!(v.nodes.contains_key("kept"), "a renewed lease stays");
    assert!(
        !v.nodes.contains_key("lapsing"),
        "a lapsed lease takes its node"
    );
    assert_eq!(v.worlds[&w.id].owner, None, "and its ownerships");
    assert!(matches!(c.keep_alive(lapsing).await, Err(ControlError::LeaseLost(l)) if l == lapsing));
    assert!(matches!(
        c.register(&origin("again", 1), lapsing).await,
        Err(ControlError::LeaseLost(_))
    ));
    // Revoking takes the records at once.
    c.revoke(kept).await.unwrap();
    eventually(&*c, "revoked node gone", |v| !v.nodes.contains_key("kept")).await;
    assert!(
        c.grant(Duration::from_millis(10)).await.is_err(),
        "a TTL below the minimum is refused"
    );
}

async fn epochs_grow(c: SharedControl) {
    let a = c.grant(Duration::from_secs(30)).await.unwrap();
    let b = c.grant(Duration::from_secs(30)).await.unwrap();
    c.register(&origin("a", 8), a).await.unwrap();
    let w = c
        .create_world(WorldSpec::new("arena", 30, 8), &PlacementHints::default())
        .await
        .unwrap();
    let e1 = c.claim(w.id, &claim("a"), a).await.unwrap();
    match c.claim(w.id, &claim("b"), b).await {
        Err(ControlError::Owned { node, epoch, .. }) => {
            assert_eq!(node, "a");
            assert_eq!(epoch, e1);
        }
        other => panic!("a second owner must be refused, got {other:?}"),
    }
    let v = c.view().await.unwrap();
    assert_eq!(v.worlds[&w.id].owner.as_ref().map(|o| o.epoch), Some(e1));
    // The owner goes (its lease ends): the next owner's epoch is higher.
    c.revoke(a).await.unwrap();
    let e2 = loop {
        match c.claim(w.id, &claim("b"), b).await {
            Ok(e) => break e,
            Err(ControlError::Owned { .. }) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{e}"),
        }
    };
    assert!(e2 > e1, "epochs only grow: {e2} after {e1}");
    // Releasing and claiming again grows it again.
    c.release(w.id, e2).await.unwrap();
    let e3 = c.claim(w.id, &claim("b"), b).await.unwrap();
    assert!(e3 > e2);
    // A release with an old epoch is fenced.
    assert!(
        matches!(c.release(w.id, e2).await, Err(ControlError::Fenced { current: Some(cur), .. }) if cur == e3)
    );
    // Claiming a world that does not exist is refused by name.
    assert!(matches!(
        c.claim(WorldId(999_999), &claim("b"), b).await,
        Err(ControlError::UnknownWorld(_))
    ));
}

async fn fenced(c: SharedControl) {
    let a = c.grant(Duration::from_secs(30)).await.unwrap();
    c.register(&origin("a", 8), a).await.unwrap();
    let w = c
        .create_world(WorldSpec::new("arena", 30, 8), &PlacementHints::default())
        .await
        .unwrap();
    let e1 = c.claim(w.id, &claim("a"), a).await.unwrap();
    let playing = WorldStatus {
        phase: Phase::Playing,
        players: 2,
        result: None,
        epoch: 0,
        suspect: None,
    };
    c.publish(w.id, e1, &playing).await.unwrap();
    c.release(w.id, e1).await.unwrap();
    let e2 = c.claim(w.id, &claim("a"), a).await.unwrap();
    let stale = WorldStatus {
        phase: Phase::Ended,
        players: 0,
        result: None,
        epoch: 0,
        suspect: None,
    };
    match c.publish(w.id, e1, &stale).await {
        Err(ControlError::Fenced { epoch, current, .. }) => {
            assert_eq!(epoch, e1);
            assert_eq!(current, Some(e2));
        }
        other => panic!("an old owner's write must be fenced, got {other:?}"),
    }
    let v = c.view().await.unwrap();
    assert_eq!(
        v.worlds[&w.id].status.phase,
        Phase::Playing,
        "the stale write did not land"
    );
    assert_eq!(v.worlds[&w.id].status.epoch, e1);
}

async fn standbys(c: SharedControl) {
    let a = c.grant(Duration::from_secs(30)).await.unwrap();
    for n in ["a", "b", "c"] {
        c.register(&origin(n, 8), a).await.unwrap();
    }
    let w = c
        .create_world(WorldSpec::new("arena", 30, 8), &PlacementHints::default())
        .await
        .unwrap();
    assert_eq!(w.standbys.len(), 1, "one by default: {w:?}");
    assert_ne!(w.standbys[0], w.placed_on, "never the primary");
    let none = c
        .create_world(
            WorldSpec {
                standbys: Some(0),
                ..WorldSpec::new("arena", 30, 8)
            },
            &PlacementHints::default(),
        )
        .await
        .unwrap();
    assert!(none.standbys.is_empty(), "{none:?}");
    let e1 = c.claim(w.id, &claim(&w.placed_on), a).await.unwrap();
    c.set_standbys(w.id, e1, vec!["c".into()]).await.unwrap();
    assert_eq!(c.view().await.unwrap().worlds[&w.id].standbys, vec!["c"]);
    c.release(w.id, e1).await.unwrap();
    let e2 = c.claim(w.id, &claim("c"), a).await.unwrap();
    match c.set_standbys(w.id, e1, vec!["a".into()]).await {
        Err(ControlError::Fenced { current, .. }) => assert_eq!(current, Some(e2)),
        other => panic!("an old owner cannot name standbys: {other:?}"),
    }
    c.set_standbys(w.id, e2, vec!["b".into()]).await.unwrap();
    assert_eq!(c.view().await.unwrap().worlds[&w.id].standbys, vec!["b"]);
}

async fn offers(c: SharedControl) {
    let a = c.grant(Duration::from_secs(30)).await.unwrap();
    let b = c.grant(TTL).await.unwrap();
    c.register(&origin("a", 8), a).await.unwrap();
    c.register(&origin("b", 8), b).await.unwrap();
    let w = c
        .create_world(WorldSpec::new("arena", 30, 8), &PlacementHints::default())
        .await
        .unwrap();
    let standby = w.standbys[0].clone();
    let lease = if standby == "a" { a } else { b };
    let offer = |tick| Offer { epoch: 3, tick };
    c.offer(w.id, &standby, offer(10), lease).await.unwrap();
    c.offer(w.id, &standby, offer(12), lease).await.unwrap();
    eventually(&*c, "the offer, replaced", |v| {
        v.worlds[&w.id].offers.get(&standby) == Some(&offer(12))
    })
    .await;
    let v = c.view().await.unwrap();
    let t = v.worlds[&w.id].takeover(&v, 3);
    assert_eq!(t.best, Some((standby.clone(), offer(12))));
    assert!(t.complete);
    assert!(matches!(
        c.offer(WorldId(999_999), "a", offer(1), a).await,
        Err(ControlError::UnknownWorld(_))
    ));
    // An offer goes with its standby's lease.
    c.revoke(lease).await.unwrap();
    eventually(&*c, "the offer gone with its lease", |v| {
        v.worlds[&w.id].offers.is_empty()
    })
    .await;
    assert!(c.offer(w.id, &standby, offer(13), lease).await.is_err());
}

async fn bans(c: SharedControl) {
    let mut w = c.watch().await.unwrap();
    let ban = Ban {
        until: 2_000_000_000,
        reason: "aimbot".into(),
    };
    c.ban("cheater-1", &ban).await.unwrap();
    timeout(Duration::from_secs(10), async {
        while !w.borrow_and_update().bans.contains_key("cheater-1") {
            w.changed().await.unwrap();
        }
    })
    .await
    .expect("the watch sees the ban");
    assert_eq!(c.view().await.unwrap().bans["cheater-1"], ban);
    let longer = Ban {
        until: 2_100_000_000,
        ..ban
    };
    c.ban("cheater-1", &longer).await.unwrap();
    eventually(&*c, "the ban replaced", |v| {
        v.bans.get("cheater-1") == Some(&longer)
    })
    .await;
    c.unban("cheater-1").await.unwrap();
    eventually(&*c, "the ban lifted", |v| v.bans.is_empty()).await;
    c.unban("nobody").await.unwrap();
    assert!(matches!(
        c.ban("", &longer).await,
        Err(ControlError::Invalid(_))
    ));
    assert!(matches!(
        c.ban("a/b", &longer).await,
        Err(ControlError::Invalid(_))
    ));
}

async fn leaders(c: SharedControl) {
    let role = "matchmaker/default";
    let a = c.grant(TTL).await.unwrap();
    let b = c.grant(Duration::from_secs(30)).await.unwrap();
    assert_eq!(c.campaign(role, "mm-a", a).await.unwrap(), "mm-a");
    assert_eq!(c.campaign(role, "mm-b", b).await.unwrap(), "mm-a");
    // A fenced write by the leader lands, atomically with its deletes.
    let put = |k: &str, v: &str| (k.to_string(), bytes::Bytes::from(v.to_string()));
    let fenced = |node: &str, puts, deletes| skylane_control::RecordWrite {
        puts,
        deletes,
        leader: Some((role.into(), node.into())),
    };
    c.write_records(fenced(
        "mm-a",
        vec![put("mm/q/t/1", "one"), put("mm/q/t/2", "two")],
        vec![],
    ))
    .await
    .unwrap();
    eventually(&*c, "both records", |v| {
        v.records_under("mm/q/").count() == 2
            && v.leaders.get(role).map(String::as_str) == Some("mm-a")
    })
    .await;
    // The follower's fenced write is refused and changes nothing.
    match c
        .write_records(fenced(
            "mm-b",
            vec![put("mm/q/t/3", "three")],
            vec!["mm/q/t/1".into()],
        ))
        .await
    {
        Err(ControlError::NotLeader { leader, .. }) => assert_eq!(leader.as_deref(), Some("mm-a")),
        other => panic!("expected NotLeader, got {other:?}"),
    }
    // An unfenced write (a new ticket from any instance) lands.
    c.write_records(skylane_control::RecordWrite {
        puts: vec![put("mm/q/t/4", "four")],
        ..Default::default()
    })
    .await
    .unwrap();
    // The leader's lease lapses: the role is free, b takes it, a's writes are fenced.
    eventually(&*c, "a's leadership lapsed", |v| {
        !v.leaders.contains_key(role)
    })
    .await;
    assert_eq!(c.campaign(role, "mm-b", b).await.unwrap(), "mm-b");
    assert!(matches!(
        c.write_records(fenced("mm-a", vec![], vec!["mm/q/t/1".into()]))
            .await,
        Err(ControlError::NotLeader { .. })
    ));
    c.write_records(fenced("mm-b", vec![], vec!["mm/q/t/1".into()]))
        .await
        .unwrap();
    let v = c.view().await.unwrap();
    let keys: Vec<&str> = v.records_under("mm/q/").map(|(k, _)| k).collect();
    assert_eq!(keys, ["mm/q/t/2", "mm/q/t/4"]);
    assert_eq!(v.records["mm/q/t/2"], "two");
    // Resigning frees it; bad keys and oversized records are refused.
    c.resign(role, "mm-a").await.unwrap();
    assert_eq!(c.view().await.unwrap().leaders[role], "mm-b");
    c.resign(role, "mm-b").await.unwrap();
    eventually(&*c, "resigned", |v| !v.leaders.contains_key(role)).await;
    for bad in ["", "a//b", "/a", "a b", "a/"] {
        assert!(
            matches!(
                c.write_records(skylane_control::RecordWrite {
                    puts: vec![put(bad, "x")],
                    ..Default::default()
                })
                .await,
                Err(ControlError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    let big = bytes::Bytes::from(vec![0u8; skylane_control::MAX_RECORD_LEN + 1]);
    assert!(matches!(
        c.write_records(skylane_control::RecordWrite {
            puts: vec![("mm/big".into(), big)],
            ..Default::default()
        })
        .await,
        Err(ControlError::Invalid(_))
    ));
    c.write_records(skylane_control::RecordWrite {
        deletes: vec!["mm/q/t/2".into(), "mm/q/t/4".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    eventually(&*c, "records deleted", |v| v.records.is_empty()).await;
}

async fn watches_fire(c: SharedControl) {
    let rx = c.watch().await.unwrap();
    let a = c.grant(Duration::from_secs(30)).await.unwrap();
    c.register(&origin("a", 8), a).await.unwrap();
    assert!(
        seen(&rx, |v| v.nodes.contains_key("a")).await,
        "registration seen"
    );
    let w = c
        .create_world(WorldSpec::new("arena", 30, 8), &PlacementHints::default())
        .await
        .unwrap();
    assert!(
        seen(&rx, |v| v.worlds.contains_key(&w.id)).await,
        "creation seen"
    );
    let e = c.claim(w.id, &claim("a"), a).await.unwrap();
    assert!(
        seen(&rx, |v| v
            .worlds
            .get(&w.id)
            .and_then(|r| r.owner.as_ref())
            .map(|o| o.epoch)
            == Some(e))
        .await,
        "owner and epoch seen"
    );
    c.publish(
        w.id,
        e,
        &WorldStatus {
            phase: Phase::Waiting,
            players: 1,
            result: None,
            epoch: 0,
            suspect: None,
        },
    )
    .await
    .unwrap();
    assert!(
        seen(&rx, |v| v.worlds.get(&w.id).map(|r| r.status.players)
            == Some(1))
        .await,
        "status seen"
    );
    c.end_world(w.id).await.unwrap();
    assert!(
        seen(&rx, |v| v.worlds.get(&w.id).is_some_and(|r| r.ending)).await,
        "ending seen"
    );
    c.remove_world(w.id).await.unwrap();
    assert!(
        seen(&rx, |v| !v.worlds.contains_key(&w.id)).await,
        "removal seen"
    );
    c.revoke(a).await.unwrap();
    assert!(
        seen(&rx, |v| !v.nodes.contains_key("a")).await,
        "lease end seen"
    );
    let rev = rx.borrow().revision;
    assert!(rev > 0, "views carry the store revision");
}

async fn seen(
    rx: &tokio::sync::watch::Receiver<skylane_control::ClusterView>,
    f: impl Fn(&skylane_control::ClusterView) -> bool,
) -> bool {
    let mut rx = rx.clone();
    timeout(Duration::from_secs(10), async {
        loop {
            if f(&rx.borrow_and_update()) {
                return;
            }
            rx.changed().await.expect("watch open");
        }
    })
    .await
    .is_ok()
}

async fn room(c: SharedControl) {
    let l = c.grant(Duration::from_secs(30)).await.unwrap();
    c.register(&origin("small", 1), l).await.unwrap();
    c.register(&origin("big", 2), l).await.unwrap();
    let spec = WorldSpec::new("tictactoe", 10, 2);
    let mut placed = Vec::new();
    for _ in 0..3 {
        placed.push(
            c.create_world(spec.clone(), &PlacementHints::default())
                .await
                .unwrap()
                .placed_on,
        );
    }
    placed.sort();
    assert_eq!(
        placed,
        vec!["big", "big", "small"],
        "each origin up to its capacity"
    );
    match c
        .create_world(spec.clone(), &PlacementHints::default())
        .await
    {
        Err(ControlError::Placement(PlacementError::NoCapacity { origins: 2, .. })) => {}
        other => panic!("a full cluster must refuse, got {other:?}"),
    }
    // Removing a world frees its slot.
    let v = c.view().await.unwrap();
    let on_small = v
        .worlds
        .values()
        .find(|w| w.placed_on == "small")
        .unwrap()
        .id;
    c.remove_world(on_small).await.unwrap();
    assert_eq!(
        c.create_world(spec, &PlacementHints::default())
            .await
            .unwrap()
            .placed_on,
        "small"
    );
    // Distinct ids, above the range left for static worlds.
    let v = c.view().await.unwrap();
    assert_eq!(v.worlds.len(), 3);
    assert!(v
        .worlds
        .keys()
        .all(|w| w.0 >= skylane_control::FIRST_WORLD_ID));
}

async fn bad_specs(c: SharedControl) {
    let l = c.grant(Duration::from_secs(30)).await.unwrap();
    c.register(&origin("a", 8), l).await.unwrap();
    let mut s = WorldSpec::new("tictactoe", 10, 2);
    s.capacity = 0;
    assert!(matches!(
        c.create_world(s, &PlacementHints::default()).await,
        Err(ControlError::Spec(_))
    ));
    let s = WorldSpec::new("tictactoe", 100_000, 2);
    assert!(matches!(
        c.create_world(s, &PlacementHints::default()).await,
        Err(ControlError::Spec(_))
    ));
    let s = WorldSpec::new("chess", 10, 2);
    assert!(matches!(
        c.create_world(s, &PlacementHints::default()).await,
        Err(ControlError::Placement(PlacementError::UnknownGame(g))) if g == "chess"
    ));
    assert!(
        c.view().await.unwrap().worlds.is_empty(),
        "nothing was stored"
    );
}

/// A zoned world is its own record (what clients name) and one record per
/// zone, each owned and fenced like a world; the zones spread over the
/// origins; ids that follow stay unique.
async fn zoned(c: SharedControl) {
    use skylane_control::{SpecError, ZoneOf, ZoneSpec};
    use skylane_proto::zones::{ZoneIdx, ZoneLayout};
    let l = c.grant(Duration::from_secs(30)).await.unwrap();
    for n in ["a", "b"] {
        c.register(&origin(n, 8), l).await.unwrap();
    }
    let spec = WorldSpec {
        zones: Some(Box::new(ZoneSpec {
            layout: ZoneLayout::even(10, 10, 100.0, 2, 2).unwrap(),
            hysteresis: 10.0,
            margin: 20.0,
        })),
        standbys: Some(1),
        ..WorldSpec::new("arena", 30, 1000)
    };
    let w = c
        .create_world(spec.clone(), &PlacementHints::default())
        .await
        .unwrap();
    assert!(w.spec.is_zoned());
    let v = c.view().await.unwrap();
    let zones = v.zones_of(w.id);
    assert_eq!(zones.len(), 4);
    for (i, z) in zones.iter().enumerate() {
        assert_eq!(z.id, WorldId(w.id.0 + 1 + i as u64));
        assert_eq!(
            z.spec.zone_of,
            Some(ZoneOf {
                world: w.id,
                zone: ZoneIdx(i as u8)
            })
        );
        assert_eq!(z.standbys.len(), 1, "replicated like a world");
        assert_ne!(z.standbys[0], z.placed_on);
    }
    let on_a = zones.iter().filter(|z| z.placed_on == "a").count();
    assert_eq!(on_a, 2, "four zones spread over two origins");
    assert_eq!(w.placed_on, zones[0].placed_on, "named by its home zone");
    // Each zone is owned under its own epoch.
    let e0 = c
        .claim(zones[0].id, &claim(&zones[0].placed_on), l)
        .await
        .unwrap();
    let e1 = c
        .claim(zones[1].id, &claim(&zones[1].placed_on), l)
        .await
        .unwrap();
    assert!(e0 > 0 && e1 > 0 && e0 != e1);
    // The next world's id follows the zones'.
    let next = c
        .create_world(WorldSpec::new("arena", 30, 8), &PlacementHints::default())
        .await
        .unwrap();
    assert_eq!(next.id, WorldId(w.id.0 + 5));
    // Bad zone specs are refused; a spec may not claim to be a zone.
    let bad = WorldSpec {
        zones: Some(Box::new(ZoneSpec {
            hysteresis: 500.0,
            ..*spec.zones.clone().unwrap()
        })),
        ..spec.clone()
    };
    assert!(matches!(
        c.create_world(bad, &PlacementHints::default()).await,
        Err(ControlError::Spec(SpecError::Hysteresis(_)))
    ));
    let forged = WorldSpec {
        zone_of: Some(ZoneOf {
            world: w.id,
            zone: ZoneIdx(0),
        }),
        ..WorldSpec::new("arena", 30, 8)
    };
    assert!(matches!(
        c.create_world(forged, &PlacementHints::default()).await,
        Err(ControlError::Spec(SpecError::ZoneOf))
    ));
}

async fn end_and_remove(c: SharedControl) {
    let l = c.grant(Duration::from_secs(30)).await.unwrap();
    c.register(&origin("a", 8), l).await.unwrap();
    let w = c
        .create_world(
            WorldSpec::new("tictactoe", 10, 2),
            &PlacementHints::default(),
        )
        .await
        .unwrap();
    c.end_world(w.id).await.unwrap();
    c.end_world(w.id).await.unwrap();
    assert!(c.view().await.unwrap().worlds[&w.id].ending);
    c.remove_world(w.id).await.unwrap();
    assert!(matches!(
        c.remove_world(w.id).await,
        Err(ControlError::UnknownWorld(_))
    ));
    assert!(matches!(
        c.end_world(w.id).await,
        Err(ControlError::UnknownWorld(_))
    ));
    assert!(matches!(
        c.publish(w.id, 1, &WorldStatus::default()).await,
        Err(ControlError::Fenced { .. } | ControlError::UnknownWorld(_))
    ));
}
