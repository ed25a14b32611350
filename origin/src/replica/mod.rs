//! Replicated worlds: a primary streams its engine's input log to standby
//! origins, which re-execute every tick and answer with their state hash.
//!
//! Three pure parts, each deterministic and tested without sockets:
//! * [`Recorder`]: a [`Core`](crate::Core) wrapper that records every input the
//!   engine is fed (joins, leaves, actions in arrival order, ends, and each tick
//!   with its time and state hash): the log a standby re-executes.
//! * [`Gate`] (primary side): holds the world's outputs of a tick until
//!   `min_acks` standbys acknowledged that tick with the primary's own state
//!   hash (durability and cross-server verification in one), compares every
//!   acknowledged hash, and names a standby that lags too far.
//! * [`Follower`] (standby side): re-executes the log on its own engine,
//!   checks each tick's hash, and answers an attested acknowledgement or the
//!   evidence of a divergence. Promoted on failover, its engine (world, sessions,
//!   channel sequences, hash chains and resume history) is the new primary's.
//!
//! The QUIC shell around them is `shell/replication.rs`.

mod follower;
mod gate;
mod recorder;

pub use follower::{FollowError, Follower};
pub use gate::{AckVerdict, Gate, GateConfig, Released};
pub use recorder::Recorder;
