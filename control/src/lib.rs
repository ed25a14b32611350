//! `skylane-control`: the control plane. Membership (origins, relays,
//! matchmakers) under leases, world specs and their placement, one owner per world
//! with a fencing **epoch**, world status and results, and watches that hand every
//! change to relays and origins.
//!
//! One trait, [`ControlPlane`], two implementations:
//! * [`Embedded`]: in-process, same semantics (leases that lapse, epochs that only
//!   grow, watches). The default: `skylane demo`, tests that are not about the
//!   store, one-box deployments.
//! * `Etcd` (cargo feature `etcd`): etcd's v3 API through `etcd-client`. Leases
//!   carry liveness, ownership is a transaction on the owner key's create revision
//!   (the epoch), placement is serialised by a transaction on one placement key.
//!   Key layout in `docs/operations.md`.
//!
//! The decisions are pure: [`place`] (which origin gets a world) and
//! [`LeaseClock`] (may an owner still write, given when its last renewal was
//! sent). [`LeaseKeeper`] is the thin task that renews a lease through any
//! implementation and publishes whether writing is still safe.
//!
//! # Layout
//! * `model`: the records and the [`ClusterView`].
//!
//! Services beside the data path (the matchmaker) keep small records here
//! ([`ControlPlane::write_records`], visible in the view) and elect one
//! active instance per role under a lease ([`ControlPlane::campaign`]); their
//! writes can be fenced on still leading.
//! * `placement`: the placement core.
//! * `lease`: the lease clock (pure) and keeper (task).
//! * `embedded`: the in-process store.
//! * `settings`: an operator's choice of control plane, and opening it.
//! * `etcd`: the etcd store (feature `etcd`); `etcd_mirror`: its view
//!   rebuilt from key-value events.
//! * `local_etcd`: an etcd process for tests (feature `etcd`).

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod embedded;
#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "etcd")]
mod etcd_mirror;
mod lease;
#[cfg(feature = "etcd")]
mod local_etcd;
mod model;
mod placement;
mod settings;

use std::sync::Arc;
use std::time::Duration;

use skylane_proto::WorldId;
use tokio::sync::watch;

pub use embedded::Embedded;
#[cfg(feature = "etcd")]
pub use etcd::{Etcd, EtcdConfig};
pub use lease::{LeaseClock, LeaseKeeper, LeaseStatus};
#[cfg(feature = "etcd")]
pub use local_etcd::LocalEtcd;
pub use model::{
    Ban, ClusterView, GameResult, NodeInfo, NodeKind, Offer, Owner, Phase, SpecError, Takeover,
    WorldRecord, WorldSpec, WorldStatus, ZoneOf, ZoneSpec, MAX_NAME_LEN, MAX_RECORD_KEY_LEN,
    MAX_RECORD_LEN, MAX_RECORD_OPS, MAX_SUBJECT_LEN, MAX_TICK_HZ, MAX_WORLD_CAPACITY,
};
pub use placement::{
    place, place_standbys, place_world, PlacementError, PlacementHints, RTT_STEP_US,
};
pub use settings::{ControlKind, ControlSettings};

/// A lease's id.
pub type LeaseId = i64;

/// The first world id the control plane hands out: ids below it are left for
/// worlds configured statically on origins and relays, so both kinds can run
/// side by side.
pub const FIRST_WORLD_ID: u64 = 1000;

/// Shortest lease the control plane grants.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(1);

/// Refuses a lease TTL below [`MIN_LEASE_TTL`]; every store uses it.
/// A subject a ban may name: 1..=`MAX_SUBJECT_LEN` bytes, no `/`.
pub(crate) fn check_subject(subject: &str) -> Result<(), ControlError> {
    if subject.is_empty() || subject.len() > MAX_SUBJECT_LEN || subject.contains('/') {
        return Err(ControlError::Invalid(format!("bad subject {subject:?}")));
    }
    Ok(())
}

/// A record key or role name: 1..=`MAX_RECORD_KEY_LEN` bytes of
/// `[A-Za-z0-9._-]` in `/`-separated non-empty segments.
pub(crate) fn check_record_key(key: &str) -> Result<(), ControlError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_RECORD_KEY_LEN
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(ControlError::Invalid(format!("bad record key {key:?}")))
    }
}

/// Checks a [`RecordWrite`]'s bounds.
pub(crate) fn check_write(w: &RecordWrite) -> Result<(), ControlError> {
    if w.puts.len() + w.deletes.len() > MAX_RECORD_OPS {
        return Err(ControlError::Invalid(format!(
            "{} operations in one record write (at most {})",
            w.puts.len() + w.deletes.len(),
            MAX_RECORD_OPS
        )));
    }
    for (k, v) in &w.puts {
        check_record_key(k)?;
        if v.len() > MAX_RECORD_LEN {
            return Err(ControlError::Invalid(format!(
                "record {k} is {} bytes (at most {})",
                v.len(),
                MAX_RECORD_LEN
            )));
        }
    }
    for k in &w.deletes {
        check_record_key(k)?;
    }
    if let Some((role, node)) = &w.leader {
        check_record_key(role)?;
        check_record_key(node)?;
    }
    Ok(())
}

/// Puts and deletes of service records, applied together or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordWrite {
    /// Records to write (key, value).
    pub puts: Vec<(String, bytes::Bytes)>,
    /// Records to delete (absent ones are fine).
    pub deletes: Vec<String>,
    /// Fenced: only while this node leads this role (`(role, node)`);
    /// refused with [`ControlError::NotLeader`] otherwise.
    pub leader: Option<(String, String)>,
}

pub(crate) fn check_ttl(ttl: Duration) -> Result<(), ControlError> {
    if ttl < MIN_LEASE_TTL {
        return Err(ControlError::Invalid(format!(
            "lease TTL {ttl:?} is below the minimum {MIN_LEASE_TTL:?}"
        )));
    }
    Ok(())
}

/// Who claims a world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The claiming node's id.
    pub node: String,
    /// Its QUIC address.
    pub addr: String,
    /// Its certificate name.
    pub tls_name: String,
}

/// Why a control-plane operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The store cannot be reached (or answered with a transport error).
    #[error("control plane unavailable: {0}")]
    Unavailable(String),
    /// The lease has lapsed (or was never granted).
    #[error("lease {0:x} has lapsed")]
    LeaseLost(LeaseId),
    /// Another owner holds the world.
    #[error("{world} is owned by {node} at epoch {epoch}")]
    Owned {
        /// World.
        world: WorldId,
        /// Owner's node.
        node: String,
        /// Owner's epoch.
        epoch: u64,
    },
    /// A write with an epoch that is no longer the world's owner epoch.
    #[error("{world}: epoch {epoch} is fenced off (current {current:?})")]
    Fenced {
        /// World.
        world: WorldId,
        /// The epoch written with.
        epoch: u64,
        /// The owner epoch now, if any.
        current: Option<u64>,
    },
    /// No such world.
    #[error("no world {0}")]
    UnknownWorld(WorldId),
    /// The spec is out of bounds.
    #[error("bad world spec: {0}")]
    Spec(#[from] SpecError),
    /// No origin can take the world.
    #[error("cannot place the world: {0}")]
    Placement(#[from] PlacementError),
    /// A stored record could not be decoded (written by something else).
    #[error("undecodable record at {key}: {error}")]
    Corrupt {
        /// Key.
        key: String,
        /// Decoder's complaint.
        error: String,
    },
    /// Concurrent writers kept winning; try again.
    #[error("too much contention on {0}; try again")]
    Contention(&'static str),
    /// A bad argument (a TTL below the minimum, an empty node id).
    #[error("{0}")]
    Invalid(String),
    /// A write fenced on leading a role, by a node that no longer leads it.
    #[error("{node} does not lead {role} (leader: {leader:?})")]
    NotLeader {
        /// The role.
        role: String,
        /// The node that wrote.
        node: String,
        /// Who leads it now, if anyone.
        leader: Option<String>,
    },
}

impl ControlError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::LeaseLost(_) => "lease_lost",
            Self::Owned { .. } => "owned",
            Self::Fenced { .. } => "fenced",
            Self::UnknownWorld(_) => "unknown_world",
            Self::Spec(_) => "bad_spec",
            Self::Placement(_) => "placement",
            Self::Corrupt { .. } => "corrupt",
            Self::Contention(_) => "contention",
            Self::Invalid(_) => "invalid",
            Self::NotLeader { .. } => "not_leader",
        }
    }
}

/// The control plane's operations. Every implementation gives the same
/// semantics: leases lapse when not renewed and take the records under them
/// along; a world has at most one owner, whose epoch is higher than every earlier
/// owner's; status writes are fenced by the epoch; watches see every change.
#[async_trait::async_trait]
pub trait ControlPlane: Send + Sync + std::fmt::Debug + 'static {
    /// Grants a lease that lapses `ttl` after its last renewal.
    async fn grant(&self, ttl: Duration) -> Result<LeaseId, ControlError>;
    /// Renews a lease; returns the TTL it was renewed for.
    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, ControlError>;
    /// Ends a lease now (its records go with it).
    async fn revoke(&self, lease: LeaseId) -> Result<(), ControlError>;
    /// Registers (or updates) a node under a lease.
    async fn register(&self, node: &NodeInfo, lease: LeaseId) -> Result<(), ControlError>;
    /// Validates, places and stores a new world; returns its record (no owner yet:
    /// the chosen origin claims it when it sees it).
    async fn create_world(
        &self,
        spec: WorldSpec,
        hints: &PlacementHints,
    ) -> Result<WorldRecord, ControlError>;
    /// Takes ownership of a world that has no owner, under `lease`; returns the epoch.
    async fn claim(&self, world: WorldId, who: &Claim, lease: LeaseId)
        -> Result<u64, ControlError>;
    /// Gives up ownership (only if `epoch` is still the owner's).
    async fn release(&self, world: WorldId, epoch: u64) -> Result<(), ControlError>;
    /// Replaces the world's standbys (fenced: only the owner at `epoch` may;
    /// a new owner after a failover names a replacement for itself).
    async fn set_standbys(
        &self,
        world: WorldId,
        epoch: u64,
        standbys: Vec<String>,
    ) -> Result<(), ControlError>;
    /// Posts (or replaces) `node`'s offer to take `world` over, under its
    /// lease (it goes when the node does). Refused for an unknown world.
    async fn offer(
        &self,
        world: WorldId,
        node: &str,
        offer: Offer,
        lease: LeaseId,
    ) -> Result<(), ControlError>;
    /// Bans `subject` from every relay until `ban.until` (replacing an
    /// earlier ban of it).
    async fn ban(&self, subject: &str, ban: &Ban) -> Result<(), ControlError>;
    /// Lifts `subject`'s ban (nothing if there is none).
    async fn unban(&self, subject: &str) -> Result<(), ControlError>;
    /// Publishes a world's status (fenced: refused unless `epoch` owns the world).
    async fn publish(
        &self,
        world: WorldId,
        epoch: u64,
        status: &WorldStatus,
    ) -> Result<(), ControlError>;
    /// Asks a world to end (its owner ends the game and publishes a result).
    async fn end_world(&self, world: WorldId) -> Result<(), ControlError>;
    /// Removes a world's records (spec, owner, status).
    async fn remove_world(&self, world: WorldId) -> Result<(), ControlError>;
    /// Campaigns for `role` (`matchmaker/default`): `node` becomes its leader
    /// under `lease` if nobody leads it. Returns the leader afterwards (this
    /// node, or the one that already leads). Leadership lapses with the lease.
    async fn campaign(
        &self,
        role: &str,
        node: &str,
        lease: LeaseId,
    ) -> Result<String, ControlError>;
    /// Gives up `role` if `node` leads it (nothing otherwise).
    async fn resign(&self, role: &str, node: &str) -> Result<(), ControlError>;
    /// Writes and deletes service records, all or none; fenced on
    /// leadership when `w.leader` is set.
    async fn write_records(&self, w: RecordWrite) -> Result<(), ControlError>;
    /// The cluster now.
    async fn view(&self) -> Result<ClusterView, ControlError>;
    /// A watch on the cluster: the receiver holds the latest view and wakes on
    /// every change. Stays current while the implementation can reach its store.
    async fn watch(&self) -> Result<watch::Receiver<ClusterView>, ControlError>;
}

/// A shared control plane.
pub type SharedControl = Arc<dyn ControlPlane>;
