//! The control plane on etcd (v3 API, `etcd-client`).
//!
//! Keys (all under one prefix per cluster, default `/skylane/default`; values are
//! JSON):
//!
//! | key | value | lease |
//! |---|---|---|
//! | `{p}/nodes/{node}` | [`NodeInfo`] | the node's |
//! | `{p}/worlds/{id:020}/spec` | spec, `placed_on`, `ending` | none |
//! | `{p}/worlds/{id:020}/owner` | [`Owner`] without the epoch: the epoch is this key's create revision | the owner's |
//! | `{p}/worlds/{id:020}/status` | [`WorldStatus`] | none |
//! | `{p}/worlds/{id:020}/offers/{node}` | [`Offer`] | the standby's |
//! | `{p}/bans/{subject}` | [`Ban`] | none (it names its end) |
//! | `{p}/meta/next-world` | the next world id (decimal) | none |
//! | `{p}/leaders/{role}` | the leading node's id (plain text) | the leader's |
//! | `{p}/records/{key}` | a service's record (the matchmaker's: JSON) | none |
//!
//! Ownership is a transaction: "owner key absent → put it under my lease". The
//! key's create revision is the epoch; a later owner's key is created later, so
//! its epoch is higher. Status writes and releases are transactions on "owner
//! create revision = my epoch", so a fenced-off owner cannot overwrite its
//! successor. World creation reads the cluster, runs [`place`], and commits only
//! if `meta/next-world` is unchanged since the read: creations are serialised, so
//! two never both take an origin's last slot. Leading a role is the same
//! "absent → put under my lease" transaction on its leader key; a fenced
//! record write is a transaction on "leader key's value = me".

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use serde::Serialize;
use skylane_proto::WorldId;
use tokio::sync::{watch, Mutex};
use tracing::{info, warn};

use crate::etcd_mirror::{parse_key, Key, Mirror, OwnerValue, SpecValue};
use crate::model::{Ban, ClusterView, NodeInfo, Offer, Owner, WorldRecord, WorldSpec, WorldStatus};
use crate::placement::{place_world, PlacementHints};
use crate::{Claim, ControlError, ControlPlane, LeaseId, RecordWrite};

/// How many times a read-check-write loop retries before giving up.
const RETRIES: usize = 32;

/// Where the etcd cluster is and which prefix this Skylane cluster uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs (`http://127.0.0.1:2379`).
    pub endpoints: Vec<String>,
    /// Key prefix of this cluster (`/skylane/default`).
    pub prefix: String,
    /// Bound on connecting and on each request.
    pub timeout: Duration,
}

impl EtcdConfig {
    /// `endpoints` with the default prefix and a 3 s timeout.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            prefix: "/skylane/default".into(),
            timeout: Duration::from_secs(3),
        }
    }
}

fn unavailable(e: etcd_client::Error) -> ControlError {
    let s = e.to_string();
    if s.contains("lease not found") {
        // The id is not in the message; callers replace it.
        ControlError::LeaseLost(0)
    } else {
        ControlError::Unavailable(s)
    }
}

fn lease_err(lease: LeaseId) -> impl Fn(etcd_client::Error) -> ControlError {
    move |e| match unavailable(e) {
        ControlError::LeaseLost(_) => ControlError::LeaseLost(lease),
        other => other,
    }
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain data with string keys: serialising cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// The etcd-backed control plane. Cheap to clone.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    cfg: EtcdConfig,
    view: Arc<Mutex<Option<watch::Receiver<ClusterView>>>>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd").field("cfg", &self.cfg).finish()
    }
}

impl Etcd {
    /// Connects and checks that the cluster answers (one status request).
    pub async fn connect(cfg: EtcdConfig) -> Result<Self, ControlError> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(cfg.timeout)
            .with_timeout(cfg.timeout)
            .with_keep_alive(Duration::from_secs(2), cfg.timeout);
        let mut client =
            tokio::time::timeout(cfg.timeout, Client::connect(&cfg.endpoints, Some(opts)))
                .await
                .map_err(|_| {
                    ControlError::Unavailable(format!(
                        "connecting to {:?} timed out",
                        cfg.endpoints
                    ))
                })?
                .map_err(unavailable)?;
        client.status().await.map_err(unavailable)?;
        Ok(Self {
            client,
            cfg,
            view: Arc::new(Mutex::new(None)),
        })
    }

    fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.cfg.prefix)
    }

    fn world_key(&self, w: WorldId, what: &str) -> String {
        self.key(&format!("worlds/{:020}/{what}", w.0))
    }

    async fn load(&self) -> Result<(Mirror, i64), ControlError> {
        let mut c = self.client.clone();
        let resp = c
            .get(self.key(""), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(unavailable)?;
        let rev = resp.header().map_or(0, |h| h.revision());
        let mut m = Mirror::default();
        // Specs first: an owner or status key sorts before its spec.
        for kv in resp.kvs() {
            if matches!(
                parse_key(&self.cfg.prefix, &String::from_utf8_lossy(kv.key())),
                Key::Spec(_)
            ) {
                m.put(&self.cfg.prefix, kv);
            }
        }
        for kv in resp.kvs() {
            m.put(&self.cfg.prefix, kv);
        }
        m.view.revision = rev as u64;
        Ok((m, rev))
    }

    async fn current_owner(&self, world: WorldId) -> Result<Option<Owner>, ControlError> {
        let mut c = self.client.clone();
        let resp = c
            .get(self.world_key(world, "owner"), None)
            .await
            .map_err(unavailable)?;
        Ok(resp.kvs().first().and_then(|kv| {
            serde_json::from_slice::<OwnerValue>(kv.value())
                .ok()
                .map(|o| Owner {
                    node: o.node,
                    addr: o.addr,
                    tls_name: o.tls_name,
                    epoch: kv.create_revision() as u64,
                })
        }))
    }

    /// A world's spec value and the spec key's revision (for a
    /// compare-and-swap of it).
    async fn spec(&self, world: WorldId) -> Result<(SpecValue, i64), ControlError> {
        let key = self.world_key(world, "spec");
        let mut c = self.client.clone();
        let resp = c.get(key.clone(), None).await.map_err(unavailable)?;
        let kv = resp
            .kvs()
            .first()
            .ok_or(ControlError::UnknownWorld(world))?;
        let v = serde_json::from_slice(kv.value()).map_err(|e| ControlError::Corrupt {
            key,
            error: e.to_string(),
        })?;
        Ok((v, kv.mod_revision()))
    }

    async fn fenced_txn(&self, world: WorldId, epoch: u64, op: TxnOp) -> Result<(), ControlError> {
        let owner = self.world_key(world, "owner");
        let txn = Txn::new()
            .when([Compare::create_revision(
                owner,
                CompareOp::Equal,
                epoch as i64,
            )])
            .and_then([op]);
        let mut c = self.client.clone();
        let resp = c.txn(txn).await.map_err(unavailable)?;
        if resp.succeeded() {
            return Ok(());
        }
        let current = self.current_owner(world).await?.map(|o| o.epoch);
        Err(ControlError::Fenced {
            world,
            epoch,
            current,
        })
    }
}

async fn mirror_task(etcd: Etcd, tx: watch::Sender<ClusterView>) {
    let prefix = etcd.cfg.prefix.clone();
    let mut logged = false;
    loop {
        if tx.is_closed() {
            return;
        }
        let (mut mirror, rev) = match etcd.load().await {
            Ok(x) => x,
            Err(e) => {
                if !logged {
                    warn!(error = %e, "control plane unreachable; the last view stays in force, retrying");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if logged {
            info!("control plane reachable again");
            logged = false;
        }
        tx.send_replace(mirror.view.clone());
        let mut c = etcd.client.clone();
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(rev + 1)
            .with_prev_key();
        let mut stream = match c.watch(etcd.key(""), Some(opts)).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "control-plane watch failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        warn!(
                            reason = resp.cancel_reason(),
                            "control-plane watch cancelled; reloading"
                        );
                        break;
                    }
                    if resp.events().is_empty() {
                        continue;
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        match ev.event_type() {
                            EventType::Put => mirror.put(&prefix, kv),
                            EventType::Delete => mirror.delete(&prefix, kv),
                        }
                    }
                    mirror.view.revision = resp
                        .header()
                        .map_or(mirror.view.revision, |h| h.revision() as u64);
                    if tx.send(mirror.view.clone()).is_err() {
                        return;
                    }
                }
                Ok(None) | Err(_) => {
                    warn!("control-plane watch ended; reloading");
                    break;
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl ControlPlane for Etcd {
    async fn grant(&self, ttl: Duration) -> Result<LeaseId, ControlError> {
        crate::check_ttl(ttl)?;
        let secs = ttl.as_secs_f64().ceil() as i64;
        let mut c = self.client.clone();
        let r = c.lease_grant(secs, None).await.map_err(unavailable)?;
        Ok(r.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, ControlError> {
        let mut c = self.client.clone();
        let (mut keeper, mut stream) = c.lease_keep_alive(lease).await.map_err(lease_err(lease))?;
        keeper.keep_alive().await.map_err(lease_err(lease))?;
        match stream.message().await.map_err(lease_err(lease))? {
            Some(r) if r.ttl() > 0 => Ok(Duration::from_secs(r.ttl() as u64)),
            Some(_) => Err(ControlError::LeaseLost(lease)),
            None => Err(ControlError::Unavailable("keep-alive stream closed".into())),
        }
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), ControlError> {
        let mut c = self.client.clone();
        match c.lease_revoke(lease).await.map_err(lease_err(lease)) {
            Ok(_) | Err(ControlError::LeaseLost(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn register(&self, node: &NodeInfo, lease: LeaseId) -> Result<(), ControlError> {
        if node.id.is_empty() || node.id.contains('/') {
            return Err(ControlError::Invalid(format!("bad node id {:?}", node.id)));
        }
        let mut c = self.client.clone();
        c.put(
            self.key(&format!("nodes/{}", node.id)),
            json(node),
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .map_err(lease_err(lease))?;
        Ok(())
    }

    async fn create_world(
        &self,
        spec: WorldSpec,
        hints: &PlacementHints,
    ) -> Result<WorldRecord, ControlError> {
        spec.validate()?;
        let counter = self.key("meta/next-world");
        for _ in 0..RETRIES {
            // One read gives both the cluster placement looks at and the counter
            // the commit is guarded by: nothing can be created in between.
            let (mirror, _) = self.load().await?;
            let (next, guard) = match &mirror.counter {
                Some((value, rev)) => (
                    value.parse::<u64>().map_err(|e| ControlError::Corrupt {
                        key: counter.clone(),
                        error: e.to_string(),
                    })?,
                    Compare::mod_revision(counter.clone(), CompareOp::Equal, *rev),
                ),
                None => (
                    crate::FIRST_WORLD_ID,
                    Compare::create_revision(counter.clone(), CompareOp::Equal, 0),
                ),
            };
            // A zoned world is several records (its own, then one per
            // zone), written in the same transaction.
            let recs = place_world(&spec, &mirror.view, hints, WorldId(next))?;
            let mut ops = vec![TxnOp::put(
                counter.clone(),
                (next + recs.len() as u64).to_string(),
                None,
            )];
            for r in &recs {
                let value = SpecValue {
                    spec: r.spec.clone(),
                    placed_on: r.placed_on.clone(),
                    standbys: r.standbys.clone(),
                    ending: false,
                };
                ops.push(TxnOp::put(self.world_key(r.id, "spec"), json(&value), None));
            }
            let txn = Txn::new().when([guard]).and_then(ops);
            let mut c = self.client.clone();
            let resp = c.txn(txn).await.map_err(unavailable)?;
            // (`place_world` gives at least one record.)
            if let Some(rec) = recs.into_iter().next().filter(|_| resp.succeeded()) {
                return Ok(rec);
            }
        }
        Err(ControlError::Contention("world creation"))
    }

    async fn claim(
        &self,
        world: WorldId,
        who: &Claim,
        lease: LeaseId,
    ) -> Result<u64, ControlError> {
        let owner = self.world_key(world, "owner");
        let spec = self.world_key(world, "spec");
        let value = OwnerValue {
            node: who.node.clone(),
            addr: who.addr.clone(),
            tls_name: who.tls_name.clone(),
        };
        let txn = Txn::new()
            .when([
                Compare::create_revision(owner.clone(), CompareOp::Equal, 0),
                Compare::version(spec, CompareOp::Greater, 0),
            ])
            .and_then([TxnOp::put(
                owner,
                json(&value),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let mut c = self.client.clone();
        let resp = c.txn(txn).await.map_err(lease_err(lease))?;
        if resp.succeeded() {
            for op in resp.op_responses() {
                if let TxnOpResponse::Put(p) = op {
                    if let Some(h) = p.header() {
                        return Ok(h.revision() as u64);
                    }
                }
            }
            return Ok(resp.header().map_or(0, |h| h.revision() as u64));
        }
        match self.current_owner(world).await? {
            Some(o) => Err(ControlError::Owned {
                world,
                node: o.node,
                epoch: o.epoch,
            }),
            None => Err(ControlError::UnknownWorld(world)),
        }
    }

    async fn release(&self, world: WorldId, epoch: u64) -> Result<(), ControlError> {
        let op = TxnOp::delete(self.world_key(world, "owner"), None);
        self.fenced_txn(world, epoch, op).await
    }

    async fn publish(
        &self,
        world: WorldId,
        epoch: u64,
        status: &WorldStatus,
    ) -> Result<(), ControlError> {
        let status = WorldStatus {
            epoch,
            ..status.clone()
        };
        let op = TxnOp::put(self.world_key(world, "status"), json(&status), None);
        self.fenced_txn(world, epoch, op).await
    }

    async fn set_standbys(
        &self,
        world: WorldId,
        epoch: u64,
        standbys: Vec<String>,
    ) -> Result<(), ControlError> {
        let key = self.world_key(world, "spec");
        for _ in 0..RETRIES {
            let mut c = self.client.clone();
            let (mut v, spec_rev) = self.spec(world).await?;
            if v.standbys == standbys {
                return Ok(());
            }
            v.standbys.clone_from(&standbys);
            let txn = Txn::new()
                .when([
                    Compare::create_revision(
                        self.world_key(world, "owner"),
                        CompareOp::Equal,
                        epoch as i64,
                    ),
                    Compare::mod_revision(key.clone(), CompareOp::Equal, spec_rev),
                ])
                .and_then([TxnOp::put(key.clone(), json(&v), None)]);
            if c.txn(txn).await.map_err(unavailable)?.succeeded() {
                return Ok(());
            }
            let current = self.current_owner(world).await?.map(|o| o.epoch);
            if current != Some(epoch) {
                return Err(ControlError::Fenced {
                    world,
                    epoch,
                    current,
                });
            }
        }
        Err(ControlError::Contention("setting standbys"))
    }

    async fn offer(
        &self,
        world: WorldId,
        node: &str,
        offer: Offer,
        lease: LeaseId,
    ) -> Result<(), ControlError> {
        if node.is_empty() || node.contains('/') {
            return Err(ControlError::Invalid(format!("bad node id {node:?}")));
        }
        let mut c = self.client.clone();
        let spec = self.world_key(world, "spec");
        let key = self.world_key(world, &format!("offers/{node}"));
        let put = PutOptions::new().with_lease(lease);
        let txn = Txn::new()
            .when([Compare::version(spec, CompareOp::Greater, 0)])
            .and_then([TxnOp::put(key, json(&offer), Some(put))]);
        if c.txn(txn).await.map_err(lease_err(lease))?.succeeded() {
            Ok(())
        } else {
            Err(ControlError::UnknownWorld(world))
        }
    }

    async fn ban(&self, subject: &str, ban: &Ban) -> Result<(), ControlError> {
        crate::check_subject(subject)?;
        let mut c = self.client.clone();
        c.put(self.key(&format!("bans/{subject}")), json(ban), None)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn unban(&self, subject: &str) -> Result<(), ControlError> {
        crate::check_subject(subject)?;
        let mut c = self.client.clone();
        c.delete(self.key(&format!("bans/{subject}")), None)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn end_world(&self, world: WorldId) -> Result<(), ControlError> {
        let key = self.world_key(world, "spec");
        for _ in 0..RETRIES {
            let mut c = self.client.clone();
            let (mut v, spec_rev) = self.spec(world).await?;
            if v.ending {
                return Ok(());
            }
            v.ending = true;
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    spec_rev,
                )])
                .and_then([TxnOp::put(key.clone(), json(&v), None)]);
            if c.txn(txn).await.map_err(unavailable)?.succeeded() {
                return Ok(());
            }
        }
        Err(ControlError::Contention("ending a world"))
    }

    async fn remove_world(&self, world: WorldId) -> Result<(), ControlError> {
        let mut c = self.client.clone();
        let prefix = format!("{}/", self.key(&format!("worlds/{:020}", world.0)));
        let resp = c
            .delete(
                prefix,
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            )
            .await
            .map_err(unavailable)?;
        if resp.deleted() == 0 {
            return Err(ControlError::UnknownWorld(world));
        }
        Ok(())
    }

    async fn campaign(
        &self,
        role: &str,
        node: &str,
        lease: LeaseId,
    ) -> Result<String, ControlError> {
        crate::check_record_key(role)?;
        crate::check_record_key(node)?;
        let key = self.key(&format!("leaders/{role}"));
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                node.as_bytes().to_vec(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key, None)]);
        let mut c = self.client.clone();
        let resp = c.txn(txn).await.map_err(lease_err(lease))?;
        if resp.succeeded() {
            return Ok(node.to_owned());
        }
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(g) = op {
                if let Some(kv) = g.kvs().first() {
                    return Ok(String::from_utf8_lossy(kv.value()).into_owned());
                }
            }
        }
        // Gone between the compare and the get: the next campaign decides.
        Err(ControlError::Contention("campaigning"))
    }

    async fn resign(&self, role: &str, node: &str) -> Result<(), ControlError> {
        crate::check_record_key(role)?;
        let key = self.key(&format!("leaders/{role}"));
        let txn = Txn::new()
            .when([Compare::value(
                key.clone(),
                CompareOp::Equal,
                node.as_bytes().to_vec(),
            )])
            .and_then([TxnOp::delete(key, None)]);
        let mut c = self.client.clone();
        c.txn(txn).await.map_err(unavailable)?;
        Ok(())
    }

    async fn write_records(&self, w: RecordWrite) -> Result<(), ControlError> {
        crate::check_write(&w)?;
        let mut ops: Vec<TxnOp> = w
            .puts
            .iter()
            .map(|(k, v)| TxnOp::put(self.key(&format!("records/{k}")), v.to_vec(), None))
            .collect();
        ops.extend(
            w.deletes
                .iter()
                .map(|k| TxnOp::delete(self.key(&format!("records/{k}")), None)),
        );
        let mut txn = Txn::new();
        if let Some((role, node)) = &w.leader {
            let key = self.key(&format!("leaders/{role}"));
            txn = txn
                .when([Compare::value(
                    key.clone(),
                    CompareOp::Equal,
                    node.as_bytes().to_vec(),
                )])
                .and_then(ops)
                .or_else([TxnOp::get(key, None)]);
        } else {
            txn = txn.and_then(ops);
        }
        let mut c = self.client.clone();
        let resp = c.txn(txn).await.map_err(unavailable)?;
        if resp.succeeded() {
            return Ok(());
        }
        let leader = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
            _ => None,
        });
        let (role, node) = w.leader.unwrap_or_default();
        Err(ControlError::NotLeader { role, node, leader })
    }

    async fn view(&self) -> Result<ClusterView, ControlError> {
        Ok(self.load().await?.0.view)
    }

    async fn watch(&self) -> Result<watch::Receiver<ClusterView>, ControlError> {
        let mut slot = self.view.lock().await;
        if let Some(rx) = slot.as_ref() {
            return Ok(rx.clone());
        }
        let (mirror, _) = self.load().await?;
        let (tx, rx) = watch::channel(mirror.view);
        tokio::spawn(mirror_task(self.clone(), tx));
        *slot = Some(rx.clone());
        Ok(rx)
    }
}
