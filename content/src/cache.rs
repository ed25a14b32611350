//! The relay's pack cache (pure: no I/O, no clock).
//!
//! * **Least recently used, by bytes**: packs are kept within `max_bytes`;
//!   a pack that must come in evicts the least recently served ones.
//! * **Single flight**: however many clients ask for a pack that is not
//!   here, one fetch goes to the source; the askers wait on it (at most
//!   `max_waiters` per pack) and are all answered by its one result.
//! * **Checked**: a fetched pack is served only if its size and SHA-256 are
//!   the manifest's; a mismatch is never served (nor cached), every waiter
//!   is told, and the shell counts it.
//! * **Current only**: a request names a pack and a version; a version the
//!   manifest does not hold as current is refused. A new manifest evicts the
//!   versions it superseded.
//! * **Too large to cache**: a pack larger than the whole cache is served
//!   to its waiters from the fetch and not kept (streamed through).

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use crate::manifest::{sha256_hex, Manifest};

/// A pack at one version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackKey {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
}

impl PackKey {
    /// `name` at `version`.
    pub fn new(name: &str, version: &str) -> Self {
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
        }
    }
}

/// Why a request is refused or a fetch failed (what the client is told).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    /// No manifest yet (the relay has not heard from the source).
    #[error("no content manifest yet")]
    NoManifest,
    /// The manifest holds no such pack.
    #[error("unknown pack {0:?}")]
    UnknownPack(String),
    /// The pack exists, at another version.
    #[error("{name} is at version {current}, not {asked}")]
    UnknownVersion {
        /// The pack.
        name: String,
        /// The version asked for.
        asked: String,
        /// The current one.
        current: String,
    },
    /// What the source sent is not what the manifest says (never served).
    #[error("{0}: the source's bytes do not match the manifest's hash or size")]
    HashMismatch(String),
    /// The source could not be read.
    #[error("content source: {0}")]
    Source(String),
    /// Too many clients wait for this pack already.
    #[error("too many clients wait for {0}")]
    Busy(String),
    /// The version was superseded while it was being fetched.
    #[error("{0} was superseded while it was fetched")]
    Superseded(String),
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Here: serve these bytes.
    Hit(Bytes),
    /// Being fetched: the waiter is answered by [`PackCache::handle_fetched`].
    Wait,
    /// Not here: fetch it from the source (once), then call
    /// [`PackCache::handle_fetched`]; the waiter is queued.
    Fetch,
    /// Refused.
    Refused(ContentError),
}

/// A fetch's result, for its waiters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched<W> {
    /// Everyone who asked while it was in flight.
    pub waiters: Vec<W>,
    /// The verified bytes, or why there are none.
    pub result: Result<Bytes, ContentError>,
    /// Kept in the cache (false: too large, refused, or failed).
    pub cached: bool,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Requests served from the cache.
    pub hits: u64,
    /// Requests that started a fetch.
    pub misses: u64,
    /// Requests that joined a fetch in flight.
    pub joined: u64,
    /// Fetches whose bytes did not match the manifest.
    pub mismatches: u64,
    /// Packs evicted to make room (or superseded).
    pub evictions: u64,
    /// Packs served without being cached (larger than the cache).
    pub streamed: u64,
}

#[derive(Debug)]
struct Entry {
    bytes: Bytes,
    used: u64,
}

/// The cache. `W` is whatever the shell needs to answer a waiter.
#[derive(Debug)]
pub struct PackCache<W> {
    max_bytes: u64,
    max_waiters: usize,
    used_bytes: u64,
    clock: u64,
    entries: HashMap<PackKey, Entry>,
    /// Recency index: use counter → pack.
    recency: BTreeMap<u64, PackKey>,
    inflight: HashMap<PackKey, Vec<W>>,
    manifest: Option<Manifest>,
    stats: CacheStats,
}

impl<W> PackCache<W> {
    /// A cache of at most `max_bytes`, at most `max_waiters` waiting per
    /// pack.
    pub fn new(max_bytes: u64, max_waiters: usize) -> Self {
        Self {
            max_bytes,
            max_waiters: max_waiters.max(1),
            used_bytes: 0,
            clock: 0,
            entries: HashMap::new(),
            recency: BTreeMap::new(),
            inflight: HashMap::new(),
            manifest: None,
            stats: CacheStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Bytes held.
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes
    }

    /// Packs held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The manifest in force.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// A newer (verified) manifest: versions it no longer names as current
    /// leave the cache. Fetches in flight for them finish as
    /// [`ContentError::Superseded`].
    pub fn handle_manifest(&mut self, m: Manifest) {
        let stale: Vec<PackKey> = self
            .entries
            .keys()
            .filter(|k| m.current(&k.name, &k.version).is_none())
            .cloned()
            .collect();
        for k in stale {
            self.remove(&k);
            self.stats.evictions += 1;
        }
        self.manifest = Some(m);
    }

    fn remove(&mut self, k: &PackKey) {
        if let Some(e) = self.entries.remove(k) {
            self.recency.remove(&e.used);
            self.used_bytes -= e.bytes.len() as u64;
        }
    }

    fn touch(&mut self, k: &PackKey) -> Option<Bytes> {
        self.clock += 1;
        let now = self.clock;
        let e = self.entries.get_mut(k)?;
        self.recency.remove(&e.used);
        e.used = now;
        self.recency.insert(now, k.clone());
        Some(e.bytes.clone())
    }

    fn check_current(&self, k: &PackKey) -> Result<(), ContentError> {
        let m = self.manifest.as_ref().ok_or(ContentError::NoManifest)?;
        match m.packs.get(&k.name) {
            None => Err(ContentError::UnknownPack(k.name.clone())),
            Some(p) if p.version != k.version => Err(ContentError::UnknownVersion {
                name: k.name.clone(),
                asked: k.version.clone(),
                current: p.version.clone(),
            }),
            Some(_) => Ok(()),
        }
    }

    /// A client asks for `k`.
    pub fn handle_request(&mut self, k: &PackKey, waiter: W) -> Lookup {
        if let Err(e) = self.check_current(k) {
            return Lookup::Refused(e);
        }
        if let Some(b) = self.touch(k) {
            self.stats.hits += 1;
            return Lookup::Hit(b);
        }
        match self.inflight.get_mut(k) {
            Some(w) if w.len() >= self.max_waiters => {
                Lookup::Refused(ContentError::Busy(k.name.clone()))
            }
            Some(w) => {
                w.push(waiter);
                self.stats.joined += 1;
                Lookup::Wait
            }
            None => {
                self.inflight.insert(k.clone(), vec![waiter]);
                self.stats.misses += 1;
                Lookup::Fetch
            }
        }
    }

    /// The source answered the fetch of `k` (`Err`: why it could not be
    /// read). Verified against the manifest before anyone is served.
    pub fn handle_fetched(&mut self, k: &PackKey, fetched: Result<Bytes, String>) -> Fetched<W> {
        let waiters = self.inflight.remove(k).unwrap_or_default();
        let label = format!("{}@{}", k.name, k.version);
        let entry = self
            .manifest
            .as_ref()
            .and_then(|m| m.current(&k.name, &k.version))
            .cloned();
        let result = match (fetched, entry) {
            (Err(e), _) => Err(ContentError::Source(e)),
            (Ok(_), None) => Err(ContentError::Superseded(label)),
            (Ok(b), Some(p)) => {
                if b.len() as u64 == p.size && sha256_hex(&b) == p.sha256 {
                    Ok(b)
                } else {
                    self.stats.mismatches += 1;
                    Err(ContentError::HashMismatch(label))
                }
            }
        };
        let mut cached = false;
        if let Ok(b) = &result {
            let size = b.len() as u64;
            if size > self.max_bytes {
                self.stats.streamed += 1;
            } else {
                // A second answer for a pack held already replaces it.
                self.remove(k);
                while self.used_bytes + size > self.max_bytes {
                    let Some((_, oldest)) = self.recency.pop_first() else {
                        break;
                    };
                    if let Some(e) = self.entries.remove(&oldest) {
                        self.used_bytes -= e.bytes.len() as u64;
                        self.stats.evictions += 1;
                    }
                }
                self.clock += 1;
                self.recency.insert(self.clock, k.clone());
                self.entries.insert(
                    k.clone(),
                    Entry {
                        bytes: b.clone(),
                        used: self.clock,
                    },
                );
                self.used_bytes += size;
                cached = true;
            }
        }
        Fetched {
            waiters,
            result,
            cached,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::PackEntry;

    fn manifest(packs: &[(&str, &str, &[u8])]) -> Manifest {
        Manifest {
            serial: 1,
            issued_ms: 0,
            packs: packs
                .iter()
                .map(|(n, v, b)| {
                    (
                        (*n).to_owned(),
                        PackEntry {
                            version: (*v).to_owned(),
                            size: b.len() as u64,
                            sha256: sha256_hex(b),
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn many_askers_one_fetch_all_answered_then_hits() {
        let mut c = PackCache::new(1 << 20, 1000);
        c.handle_manifest(manifest(&[("map", "1", b"hello")]));
        let k = PackKey::new("map", "1");
        assert_eq!(c.handle_request(&k, 0), Lookup::Fetch);
        for w in 1..500 {
            assert_eq!(c.handle_request(&k, w), Lookup::Wait);
        }
        let f = c.handle_fetched(&k, Ok(Bytes::from_static(b"hello")));
        assert_eq!(f.waiters.len(), 500);
        assert_eq!(f.result, Ok(Bytes::from_static(b"hello")));
        assert!(f.cached);
        assert_eq!(
            c.handle_request(&k, 9),
            Lookup::Hit(Bytes::from_static(b"hello"))
        );
        let s = c.stats();
        assert_eq!((s.misses, s.joined, s.hits), (1, 499, 1));
    }

    #[test]
    fn a_mismatch_is_never_served_nor_cached_and_the_next_ask_fetches_again() {
        let mut c = PackCache::new(1 << 20, 10);
        c.handle_manifest(manifest(&[("map", "1", b"hello")]));
        let k = PackKey::new("map", "1");
        c.handle_request(&k, 1);
        c.handle_request(&k, 2);
        let f = c.handle_fetched(&k, Ok(Bytes::from_static(b"hellO")));
        assert_eq!(f.waiters, vec![1, 2]);
        assert_eq!(f.result, Err(ContentError::HashMismatch("map@1".into())));
        assert!(!f.cached);
        assert_eq!(c.stats().mismatches, 1);
        // A truncated answer too.
        assert_eq!(c.handle_request(&k, 3), Lookup::Fetch);
        let f = c.handle_fetched(&k, Ok(Bytes::from_static(b"hell")));
        assert!(matches!(f.result, Err(ContentError::HashMismatch(_))));
        assert_eq!(c.handle_request(&k, 4), Lookup::Fetch);
        let f = c.handle_fetched(&k, Err("connection refused".into()));
        assert_eq!(
            f.result,
            Err(ContentError::Source("connection refused".into()))
        );
    }

    #[test]
    fn unknown_packs_and_versions_are_refused_by_name() {
        let mut c: PackCache<u32> = PackCache::new(100, 10);
        let k = PackKey::new("map", "1");
        assert_eq!(
            c.handle_request(&k, 1),
            Lookup::Refused(ContentError::NoManifest)
        );
        c.handle_manifest(manifest(&[("map", "2", b"x")]));
        assert_eq!(
            c.handle_request(&k, 1),
            Lookup::Refused(ContentError::UnknownVersion {
                name: "map".into(),
                asked: "1".into(),
                current: "2".into()
            })
        );
        assert_eq!(
            c.handle_request(&PackKey::new("skins", "1"), 1),
            Lookup::Refused(ContentError::UnknownPack("skins".into()))
        );
    }

    #[test]
    fn least_recently_served_packs_make_room_and_a_huge_one_streams_through() {
        let mut c = PackCache::new(10, 10);
        c.handle_manifest(manifest(&[
            ("a", "1", b"aaaa"),
            ("b", "1", b"bbbb"),
            ("c", "1", b"cccc"),
            ("big", "1", b"0123456789abc"),
        ]));
        for n in ["a", "b"] {
            let k = PackKey::new(n, "1");
            c.handle_request(&k, 0);
            let body = if n == "a" { b"aaaa" } else { b"bbbb" };
            c.handle_fetched(&k, Ok(Bytes::copy_from_slice(body)));
        }
        // `a` served again: `b` is now the least recently used.
        assert!(matches!(
            c.handle_request(&PackKey::new("a", "1"), 0),
            Lookup::Hit(_)
        ));
        let k = PackKey::new("c", "1");
        c.handle_request(&k, 0);
        assert!(c.handle_fetched(&k, Ok(Bytes::from_static(b"cccc"))).cached);
        assert_eq!(c.used_bytes(), 8);
        assert!(matches!(
            c.handle_request(&PackKey::new("a", "1"), 0),
            Lookup::Hit(_)
        ));
        assert_eq!(c.handle_request(&PackKey::new("b", "1"), 0), Lookup::Fetch);
        // Larger than the whole cache: served, not kept, nothing evicted.
        let k = PackKey::new("big", "1");
        c.handle_request(&k, 7);
        let f = c.handle_fetched(&k, Ok(Bytes::from_static(b"0123456789abc")));
        assert!(f.result.is_ok() && !f.cached);
        assert_eq!(c.stats().streamed, 1);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn a_new_version_evicts_the_old_and_a_fetch_in_flight_is_superseded() {
        let mut c = PackCache::new(100, 10);
        c.handle_manifest(manifest(&[("map", "1", b"one"), ("skins", "1", b"s1")]));
        let k1 = PackKey::new("map", "1");
        c.handle_request(&k1, 0);
        c.handle_fetched(&k1, Ok(Bytes::from_static(b"one")));
        let s1 = PackKey::new("skins", "1");
        c.handle_request(&s1, 5);
        c.handle_manifest(manifest(&[("map", "2", b"two"), ("skins", "2", b"s2")]));
        assert_eq!(c.len(), 0, "the old version left");
        assert_eq!(c.used_bytes(), 0);
        assert!(matches!(c.handle_request(&k1, 0), Lookup::Refused(_)));
        let f = c.handle_fetched(&s1, Ok(Bytes::from_static(b"s1")));
        assert_eq!(f.waiters, vec![5]);
        assert_eq!(f.result, Err(ContentError::Superseded("skins@1".into())));
    }

    #[test]
    fn waiters_per_pack_are_bounded() {
        let mut c = PackCache::new(100, 2);
        c.handle_manifest(manifest(&[("map", "1", b"x")]));
        let k = PackKey::new("map", "1");
        assert_eq!(c.handle_request(&k, 0), Lookup::Fetch);
        assert_eq!(c.handle_request(&k, 1), Lookup::Wait);
        assert_eq!(
            c.handle_request(&k, 2),
            Lookup::Refused(ContentError::Busy("map".into()))
        );
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;
    use crate::manifest::PackEntry;

    proptest! {
        /// Any sequence of requests and fetch results: the bytes held never
        /// exceed the bound and equal the sum of the packs held; every
        /// waiter is answered exactly once; what is served is always the
        /// manifest's bytes.
        #[test]
        fn bounded_exact_and_every_waiter_answered_once(
            ops in prop::collection::vec((0..6usize, any::<bool>(), any::<bool>()), 1..200),
            max in 1..40u64,
        ) {
            let bodies: Vec<Vec<u8>> = (0..6).map(|i| vec![i as u8; 3 + i * 4]).collect();
            let mut c = PackCache::new(max, 1_000);
            c.handle_manifest(Manifest {
                serial: 1,
                issued_ms: 0,
                packs: bodies.iter().enumerate().map(|(i, b)| (format!("p{i}"), PackEntry {
                    version: "1".into(),
                    size: b.len() as u64,
                    sha256: sha256_hex(b),
                })).collect(),
            });
            let mut next = 0u64;
            let mut waiting: std::collections::HashSet<u64> = Default::default();
            for (i, ask, good) in ops {
                let k = PackKey::new(&format!("p{i}"), "1");
                if ask {
                    next += 1;
                    match c.handle_request(&k, next) {
                        Lookup::Hit(b) => prop_assert_eq!(&b[..], &bodies[i][..]),
                        Lookup::Wait | Lookup::Fetch => { waiting.insert(next); }
                        Lookup::Refused(e) => prop_assert!(false, "{e}"),
                    }
                } else {
                    let body = if good { bodies[i].clone() } else { vec![9; 2] };
                    let f = c.handle_fetched(&k, Ok(Bytes::from(body)));
                    for w in &f.waiters {
                        prop_assert!(waiting.remove(w), "waiter {w} answered twice");
                    }
                    if let Ok(b) = &f.result {
                        prop_assert_eq!(&b[..], &bodies[i][..]);
                    }
                }
                prop_assert!(c.used_bytes() <= max);
                let held: u64 = (0..6)
                    .filter_map(|i| c.entries.get(&PackKey::new(&format!("p{i}"), "1")))
                    .map(|e| e.bytes.len() as u64)
                    .sum();
                prop_assert_eq!(held, c.used_bytes());
                prop_assert_eq!(c.recency.len(), c.entries.len());
            }
            // Every fetch finished: nobody left waiting.
            for (i, body) in bodies.iter().enumerate() {
                let k = PackKey::new(&format!("p{i}"), "1");
                for w in c.handle_fetched(&k, Ok(Bytes::from(body.clone()))).waiters {
                    prop_assert!(waiting.remove(&w));
                }
            }
            prop_assert!(waiting.is_empty());
        }
    }
}
