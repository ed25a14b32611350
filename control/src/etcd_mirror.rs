//! The etcd store's mirror: the [`ClusterView`] rebuilt from key-value
//! events (a load, then the watch), and what each key under the cluster's
//! prefix is. Pure: no client, no I/O.

use std::collections::BTreeMap;

use etcd_client::KeyValue;
use serde::{Deserialize, Serialize};
use skylane_proto::WorldId;
use tracing::warn;

use crate::model::{Ban, ClusterView, NodeInfo, Offer, Owner, WorldRecord, WorldSpec, WorldStatus};

/// The spec key's value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SpecValue {
    pub(crate) spec: WorldSpec,
    pub(crate) placed_on: String,
    #[serde(default)]
    pub(crate) standbys: Vec<String>,
    #[serde(default)]
    pub(crate) ending: bool,
}

/// The owner key's value (the epoch is the key's create revision).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OwnerValue {
    pub(crate) node: String,
    pub(crate) addr: String,
    pub(crate) tls_name: String,
}

/// One world's keys as read so far.
#[derive(Debug, Default, Clone)]
struct Partial {
    spec: Option<SpecValue>,
    owner: Option<Owner>,
    status: Option<WorldStatus>,
    offers: BTreeMap<String, Offer>,
}

impl Partial {
    fn record(&self, id: WorldId) -> Option<WorldRecord> {
        let s = self.spec.as_ref()?;
        Some(WorldRecord {
            id,
            spec: s.spec.clone(),
            placed_on: s.placed_on.clone(),
            standbys: s.standbys.clone(),
            ending: s.ending,
            owner: self.owner.clone(),
            status: self.status.clone().unwrap_or_default(),
            offers: self.offers.clone(),
        })
    }
}

/// What one key under the prefix is.
pub(crate) enum Key {
    Node(String),
    Spec(WorldId),
    Owner(WorldId),
    Status(WorldId),
    Offer(WorldId, String),
    Ban(String),
    Leader(String),
    Record(String),
    Counter,
    Other,
}

/// Builds views from key-value events.
#[derive(Debug, Default)]
pub(crate) struct Mirror {
    partials: BTreeMap<WorldId, Partial>,
    pub(crate) view: ClusterView,
    /// `meta/next-world`: its value and mod revision, if it exists.
    pub(crate) counter: Option<(String, i64)>,
}

impl Mirror {
    pub(crate) fn put(&mut self, prefix: &str, kv: &KeyValue) {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let bad = |e: serde_json::Error| warn!(%key, error = %e, "undecodable control-plane record skipped");
        match parse_key(prefix, &key) {
            Key::Node(id) => match serde_json::from_slice::<NodeInfo>(kv.value()) {
                Ok(n) => {
                    self.view.nodes.insert(id, n);
                }
                Err(e) => bad(e),
            },
            Key::Spec(w) => match serde_json::from_slice::<SpecValue>(kv.value()) {
                Ok(s) => self.update(w, |p| p.spec = Some(s)),
                Err(e) => bad(e),
            },
            Key::Owner(w) => match serde_json::from_slice::<OwnerValue>(kv.value()) {
                Ok(o) => {
                    let owner = Owner {
                        node: o.node,
                        addr: o.addr,
                        tls_name: o.tls_name,
                        epoch: kv.create_revision() as u64,
                    };
                    self.update(w, |p| p.owner = Some(owner));
                }
                Err(e) => bad(e),
            },
            Key::Status(w) => match serde_json::from_slice::<WorldStatus>(kv.value()) {
                Ok(s) => self.update(w, |p| p.status = Some(s)),
                Err(e) => bad(e),
            },
            Key::Offer(w, node) => match serde_json::from_slice::<Offer>(kv.value()) {
                Ok(o) => self.update(w, |p| {
                    p.offers.insert(node, o);
                }),
                Err(e) => bad(e),
            },
            Key::Ban(subject) => match serde_json::from_slice::<Ban>(kv.value()) {
                Ok(b) => {
                    self.view.bans.insert(subject, b);
                }
                Err(e) => bad(e),
            },
            Key::Leader(role) => {
                self.view
                    .leaders
                    .insert(role, String::from_utf8_lossy(kv.value()).into_owned());
            }
            Key::Record(k) => {
                self.view
                    .records_mut()
                    .insert(k, bytes::Bytes::copy_from_slice(kv.value()));
            }
            Key::Counter => {
                self.counter = Some((
                    String::from_utf8_lossy(kv.value()).into_owned(),
                    kv.mod_revision(),
                ));
            }
            Key::Other => {}
        }
    }

    pub(crate) fn delete(&mut self, prefix: &str, kv: &KeyValue) {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        match parse_key(prefix, &key) {
            Key::Node(id) => {
                self.view.nodes.remove(&id);
            }
            Key::Spec(w) => self.update(w, |p| p.spec = None),
            Key::Owner(w) => self.update(w, |p| p.owner = None),
            Key::Status(w) => self.update(w, |p| p.status = None),
            Key::Offer(w, node) => self.update(w, |p| {
                p.offers.remove(&node);
            }),
            Key::Ban(subject) => {
                self.view.bans.remove(&subject);
            }
            Key::Leader(role) => {
                self.view.leaders.remove(&role);
            }
            Key::Record(k) => {
                self.view.records_mut().remove(&k);
            }
            Key::Counter => self.counter = None,
            Key::Other => {}
        }
    }

    fn update(&mut self, w: WorldId, f: impl FnOnce(&mut Partial)) {
        let p = self.partials.entry(w).or_default();
        f(p);
        match p.record(w) {
            Some(r) => {
                self.view.worlds.insert(w, r);
            }
            None => {
                self.view.worlds.remove(&w);
                if p.spec.is_none()
                    && p.owner.is_none()
                    && p.status.is_none()
                    && p.offers.is_empty()
                {
                    self.partials.remove(&w);
                }
            }
        }
    }
}

pub(crate) fn parse_key(prefix: &str, key: &str) -> Key {
    let Some(rest) = key.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
        return Key::Other;
    };
    if let Some(role) = rest.strip_prefix("leaders/") {
        return Key::Leader(role.to_string());
    }
    if let Some(k) = rest.strip_prefix("records/") {
        return Key::Record(k.to_string());
    }
    let mut parts = rest.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("nodes"), Some(id), None, None) => Key::Node(id.to_string()),
        (Some("bans"), Some(subject), None, None) => Key::Ban(subject.to_string()),
        (Some("meta"), Some("next-world"), None, None) => Key::Counter,
        (Some("worlds"), Some(id), Some("offers"), Some(node)) if parts.next().is_none() => {
            match id.parse::<u64>() {
                Ok(id) => Key::Offer(WorldId(id), node.to_string()),
                Err(_) => Key::Other,
            }
        }
        (Some("worlds"), Some(id), Some(what), None) => match id.parse::<u64>() {
            Ok(id) => match what {
                "spec" => Key::Spec(WorldId(id)),
                "owner" => Key::Owner(WorldId(id)),
                "status" => Key::Status(WorldId(id)),
                _ => Key::Other,
            },
            Err(_) => Key::Other,
        },
        _ => Key::Other,
    }
}
