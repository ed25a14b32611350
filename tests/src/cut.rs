//! [`CutControl`]: a control plane one node can be cut off from (a network
//! partition between that node and etcd, in-process): while cut, every call
//! fails as unavailable and its watch stops moving; healed, both work again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use skylane_control::{
    Ban, Claim, ClusterView, ControlError, ControlPlane, LeaseId, NodeInfo, Offer, PlacementHints,
    SharedControl, WorldRecord, WorldSpec, WorldStatus,
};
use skylane_proto::WorldId;
use tokio::sync::watch;

/// See the module docs.
#[derive(Clone)]
pub struct CutControl {
    inner: SharedControl,
    cut: Arc<AtomicBool>,
}

impl std::fmt::Debug for CutControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CutControl")
            .field("cut", &self.cut.load(Ordering::Relaxed))
            .finish()
    }
}

impl CutControl {
    /// A view of `inner` that can be cut.
    pub fn new(inner: SharedControl) -> Self {
        Self {
            inner,
            cut: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Cuts (`true`) or heals (`false`) the node's access.
    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), ControlError> {
        if self.cut.load(Ordering::SeqCst) {
            Err(ControlError::Unavailable(
                "partitioned from the control plane".into(),
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl ControlPlane for CutControl {
    async fn grant(&self, ttl: Duration) -> Result<LeaseId, ControlError> {
        self.check()?;
        self.inner.grant(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, ControlError> {
        self.check()?;
        self.inner.keep_alive(lease).await
    }
    async fn revoke(&self, lease: LeaseId) -> Result<(), ControlError> {
        self.check()?;
        self.inner.revoke(lease).await
    }
    async fn register(&self, node: &NodeInfo, lease: LeaseId) -> Result<(), ControlError> {
        self.check()?;
        self.inner.register(node, lease).await
    }
    async fn create_world(
        &self,
        spec: WorldSpec,
        hints: &PlacementHints,
    ) -> Result<WorldRecord, ControlError> {
        self.check()?;
        self.inner.create_world(spec, hints).await
    }
    async fn claim(
        &self,
        world: WorldId,
        who: &Claim,
        lease: LeaseId,
    ) -> Result<u64, ControlError> {
        self.check()?;
        self.inner.claim(world, who, lease).await
    }
    async fn release(&self, world: WorldId, epoch: u64) -> Result<(), ControlError> {
        self.check()?;
        self.inner.release(world, epoch).await
    }
    async fn set_standbys(
        &self,
        world: WorldId,
        epoch: u64,
        standbys: Vec<String>,
    ) -> Result<(), ControlError> {
        self.check()?;
        self.inner.set_standbys(world, epoch, standbys).await
    }
    async fn offer(
        &self,
        world: WorldId,
        node: &str,
        offer: Offer,
        lease: LeaseId,
    ) -> Result<(), ControlError> {
        self.check()?;
        self.inner.offer(world, node, offer, lease).await
    }
    async fn ban(&self, subject: &str, ban: &Ban) -> Result<(), ControlError> {
        self.check()?;
        self.inner.ban(subject, ban).await
    }
    async fn unban(&self, subject: &str) -> Result<(), ControlError> {
        self.check()?;
        self.inner.unban(subject).await
    }
    async fn publish(
        &self,
        world: WorldId,
        epoch: u64,
        status: &WorldStatus,
    ) -> Result<(), ControlError> {
        self.check()?;
        self.inner.publish(world, epoch, status).await
    }
    async fn end_world(&self, world: WorldId) -> Result<(), ControlError> {
        self.check()?;
        self.inner.end_world(world).await
    }
    async fn remove_world(&self, world: WorldId) -> Result<(), ControlError> {
        self.check()?;
        self.inner.remove_world(world).await
    }
    async fn campaign(
        &self,
        role: &str,
        node: &str,
        lease: LeaseId,
    ) -> Result<String, ControlError> {
        self.check()?;
        self.inner.campaign(role, node, lease).await
    }
    async fn resign(&self, role: &str, node: &str) -> Result<(), ControlError> {
        self.check()?;
        self.inner.resign(role, node).await
    }
    async fn write_records(&self, w: skylane_control::RecordWrite) -> Result<(), ControlError> {
        self.check()?;
        self.inner.write_records(w).await
    }
    async fn view(&self) -> Result<ClusterView, ControlError> {
        self.check()?;
        self.inner.view().await
    }
    async fn watch(&self) -> Result<watch::Receiver<ClusterView>, ControlError> {
        self.check()?;
        let mut from = self.inner.watch().await?;
        let (tx, rx) = watch::channel(from.borrow().clone());
        let cut = self.cut.clone();
        tokio::spawn(async move {
            // Views reach the node only while it is not cut; the latest one
            // arrives when it heals.
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    r = from.changed() => if r.is_err() { return },
                    _ = tick.tick() => {}
                }
                if tx.is_closed() {
                    return;
                }
                if !cut.load(Ordering::SeqCst) {
                    let v = from.borrow().clone();
                    tx.send_if_modified(|old| {
                        let changed = *old != v;
                        *old = v;
                        changed
                    });
                }
            }
        });
        Ok(rx)
    }
}
