//! How a binary reaches its control plane: the operator's choice and the one
//! place that turns it into a [`SharedControl`].

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
#[cfg(feature = "etcd")]
use tracing::{info, warn};

use crate::{ControlError, Embedded, SharedControl};

/// Which control plane a process uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlKind {
    /// None: static configuration only.
    #[default]
    None,
    /// An in-process control plane (one-box deployments: the process places
    /// worlds on itself).
    Embedded,
    /// etcd (a build with the `etcd` feature).
    Etcd,
}

/// What a binary's configuration says about its control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlSettings {
    /// Which.
    pub kind: ControlKind,
    /// etcd client URLs.
    pub etcd: Vec<String>,
    /// Key prefix of the cluster.
    pub prefix: String,
    /// The process's lease TTL on it.
    pub lease_ttl: Duration,
}

impl ControlSettings {
    /// Checks what can be checked before connecting.
    pub fn validate(&self) -> Result<(), String> {
        match self.kind {
            ControlKind::Etcd if self.etcd.is_empty() => Err(
                "control = \"etcd\" needs etcd endpoints (etcd = [\"http://host:2379\"])".into(),
            ),
            ControlKind::Etcd if !cfg!(feature = "etcd") => Err(
                "control = \"etcd\": this build has no etcd support (build with --features etcd)"
                    .into(),
            ),
            _ if !self.prefix.starts_with('/') || self.prefix.ends_with('/') => Err(format!(
                "cluster_prefix must start and not end with '/': {:?}",
                self.prefix
            )),
            _ if !(1..=3600).contains(&self.lease_ttl.as_secs())
                || self.lease_ttl.subsec_nanos() != 0 =>
            {
                Err(format!(
                    "lease_ttl_secs must be 1..=3600, not {:?}",
                    self.lease_ttl
                ))
            }
            _ => Ok(()),
        }
    }

    /// The control plane, connecting as long as it takes: an etcd that is down
    /// at start gets one clear error line, then a retry every `retry` (never a
    /// panic). `None` for [`ControlKind::None`].
    pub async fn open(&self, retry: Duration) -> Result<Option<SharedControl>, ControlError> {
        self.validate().map_err(ControlError::Invalid)?;
        match self.kind {
            ControlKind::None => Ok(None),
            ControlKind::Embedded => Ok(Some(Arc::new(Embedded::new()))),
            ControlKind::Etcd => self.open_etcd(retry).await.map(Some),
        }
    }

    #[cfg(feature = "etcd")]
    async fn open_etcd(&self, retry: Duration) -> Result<SharedControl, ControlError> {
        let cfg = crate::EtcdConfig {
            endpoints: self.etcd.clone(),
            prefix: self.prefix.clone(),
            timeout: Duration::from_secs(3),
        };
        let mut told = false;
        loop {
            match crate::Etcd::connect(cfg.clone()).await {
                Ok(c) => {
                    info!(endpoints = ?cfg.endpoints, prefix = %cfg.prefix, "control plane: etcd connected");
                    return Ok(Arc::new(c));
                }
                Err(e) => {
                    if !told {
                        warn!(endpoints = ?cfg.endpoints, error = %e, "control plane: etcd unreachable; retrying every {retry:?}");
                        told = true;
                    }
                    tokio::time::sleep(retry).await;
                }
            }
        }
    }

    #[cfg(not(feature = "etcd"))]
    async fn open_etcd(&self, _retry: Duration) -> Result<SharedControl, ControlError> {
        Err(ControlError::Invalid(
            "this build has no etcd support (build with --features etcd)".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(kind: ControlKind, etcd: &[&str], prefix: &str) -> ControlSettings {
        ControlSettings {
            kind,
            etcd: etcd.iter().map(|e| (*e).to_string()).collect(),
            prefix: prefix.into(),
            lease_ttl: Duration::from_secs(5),
        }
    }

    #[test]
    fn settings_are_checked_by_name() {
        assert!(s(ControlKind::None, &[], "/skylane/default")
            .validate()
            .is_ok());
        assert!(s(ControlKind::Embedded, &[], "/skylane/x")
            .validate()
            .is_ok());
        let e = s(ControlKind::Etcd, &[], "/skylane/x")
            .validate()
            .unwrap_err();
        assert!(e.contains("endpoints"), "{e}");
        let e = s(ControlKind::Embedded, &[], "skylane/")
            .validate()
            .unwrap_err();
        assert!(e.contains("cluster_prefix"), "{e}");
        let mut zero = s(ControlKind::Embedded, &[], "/skylane/x");
        zero.lease_ttl = Duration::ZERO;
        assert!(zero.validate().unwrap_err().contains("lease_ttl_secs"));
    }

    #[tokio::test]
    async fn none_opens_nothing_and_embedded_opens_a_store() {
        let none = s(ControlKind::None, &[], "/skylane/default");
        assert!(none
            .open(Duration::from_millis(10))
            .await
            .unwrap()
            .is_none());
        let emb = s(ControlKind::Embedded, &[], "/skylane/default");
        let c = emb.open(Duration::from_millis(10)).await.unwrap().unwrap();
        assert!(c.view().await.unwrap().worlds.is_empty());
    }
}
