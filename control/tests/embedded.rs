//! The behavioural suite against the embedded control plane.

mod suite;

use std::sync::Arc;

use skylane_control::Embedded;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            suite::run(stringify!($name), Arc::new(Embedded::new())).await;
        }
    )*};
}

cases!(
    leases_lapse,
    epochs_grow_and_a_second_owner_is_refused,
    status_writes_are_fenced,
    watches_fire,
    placed_only_where_there_is_room,
    bad_specs_are_refused,
    worlds_end_and_are_removed,
    standbys_are_chosen_and_replaced_by_the_owner_only,
    offers_live_under_their_standbys_lease,
    bans_are_seen_by_watchers_and_lifted,
    one_leader_per_role_and_fenced_record_writes,
    zoned_worlds_get_a_record_per_zone_spread_over_origins,
);

#[test]
fn every_case_runs_here() {
    assert_eq!(suite::CASES.len(), 12);
}
