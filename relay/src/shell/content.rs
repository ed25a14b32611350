//! Content packs served to clients over their existing connection (bulk
//! class), from a cache in front of the content source: the tokio shell
//! around [`PackCache`] (least recently used by bytes, one fetch per pack
//! however many clients ask, hash-checked before anyone is served).
//!
//! The source is a content directory (`content_source`, as `skylane content
//! publish` writes it: local or a shared mount). Its signed manifest is read
//! every `content_refresh_ms`; in a cluster the control plane's manifest
//! record (`skylane content announce`) is taken too, as soon as a view
//! carries a new one. Either is checked with the operator's key
//! (`content_key`) and a serial that only grows (the newer of the two is in
//! force); a newer one replaces the versions it superseded. A client pulls a pack window by window
//! ([`ContentGet`], at most 256 KiB each, in 32 KiB pieces), so a download
//! holds at most one window of queue per client, and resumes at any offset.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use skylane_content::{
    ContentError, FileStamp, Lookup, PackCache, PackKey, SignedManifest, SourceDir,
};
use skylane_proto::ed25519_dalek::VerifyingKey;
use skylane_proto::{
    ContentChunk, ContentCode, ContentGet, ContentRefusal, EventClass, ServerMsg, SessionId,
    CONTENT_PIECE, MAX_CONTENT_WINDOW,
};
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::metrics::RelayMetrics;
use crate::scheduler::Outgoing;

use super::writer::{frame, Outbox};

/// Clients waiting for one pack's fetch, at most.
const MAX_WAITERS: usize = 65_536;

/// Packs larger than the cache whose files were checked whole (their
/// stamps kept, so later windows are read as ranges), at most.
const MAX_STREAMED: usize = 64;

/// What a relay serves content from.
#[derive(Debug, Clone)]
pub struct ContentSettings {
    /// The content source directory.
    pub source: std::path::PathBuf,
    /// The operator's key the manifest must be signed with.
    pub key: VerifyingKey,
    /// The cache's bound, bytes.
    pub cache_bytes: u64,
    /// How often the source's manifest is read.
    pub refresh: Duration,
}

type Waiter = oneshot::Sender<Result<Bytes, ContentError>>;

/// The relay's content side, shared by every client reader.
pub(crate) struct ContentService {
    source: SourceDir,
    key: VerifyingKey,
    cache: Mutex<PackCache<Waiter>>,
    /// The manifest in force, as published (what clients are sent).
    signed: Mutex<Option<(u64, SignedManifest)>>,
    /// The control plane's manifest record as last offered.
    record: Mutex<Option<Bytes>>,
    /// The cache's bound (packs above it are streamed, not kept).
    cache_bytes: u64,
    /// Large packs checked whole, with their files' stamps then (oldest
    /// first, at most [`MAX_STREAMED`]).
    streamed: Mutex<VecDeque<(PackKey, FileStamp)>>,
    metrics: RelayMetrics,
}

impl std::fmt::Debug for ContentService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentService").finish_non_exhaustive()
    }
}

fn code(e: &ContentError) -> ContentCode {
    match e {
        ContentError::NoManifest => ContentCode::NoManifest,
        ContentError::UnknownPack(_) => ContentCode::UnknownPack,
        ContentError::UnknownVersion { .. } | ContentError::Superseded(_) => {
            ContentCode::UnknownVersion
        }
        ContentError::HashMismatch(_) => ContentCode::HashMismatch,
        ContentError::Source(_) => ContentCode::Source,
        ContentError::Busy(_) => ContentCode::Busy,
    }
}

impl ContentService {
    pub(crate) fn new(s: &ContentSettings, metrics: RelayMetrics) -> Arc<Self> {
        Arc::new(Self {
            source: SourceDir::new(&s.source),
            key: s.key,
            cache: Mutex::new(PackCache::new(s.cache_bytes, MAX_WAITERS)),
            signed: Mutex::new(None),
            record: Mutex::new(None),
            cache_bytes: s.cache_bytes,
            streamed: Mutex::new(VecDeque::new()),
            metrics,
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, PackCache<Waiter>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the source's manifest; takes it if it verifies and is newer.
    fn refresh(&self) {
        match self.source.manifest() {
            Ok(s) => self.offer(s, "source"),
            Err(e) => {
                RelayMetrics::count(&self.metrics.content_manifests, "unreadable");
                warn!(error = %e, "content manifest unreadable");
            }
        }
    }

    /// The control plane's manifest record (its file form), from a cluster
    /// view: taken like the source's when it changed since the last view.
    pub(crate) fn offer_record(&self, bytes: &Bytes) {
        {
            let mut last = self.record.lock().unwrap_or_else(PoisonError::into_inner);
            if last.as_ref() == Some(bytes) {
                return;
            }
            *last = Some(bytes.clone());
        }
        match SignedManifest::from_file(bytes) {
            Ok(s) => self.offer(s, "control plane"),
            Err(e) => {
                RelayMetrics::count(&self.metrics.content_manifests, "unreadable");
                warn!(error = %e, "content manifest record unreadable");
            }
        }
    }

    /// Takes `signed` (from the source directory or the control plane) if it
    /// verifies with the operator's key and is newer than the one in force.
    fn offer(&self, signed: SignedManifest, from: &'static str) {
        let known = self
            .signed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(0, |(s, _)| *s);
        match signed.verify(&self.key, known) {
            Ok(m) if m.serial > known || known == 0 => {
                info!(
                    serial = m.serial,
                    packs = m.packs.len(),
                    from,
                    "content manifest taken"
                );
                RelayMetrics::count(&self.metrics.content_manifests, "taken");
                let serial = m.serial;
                self.cache().handle_manifest(m);
                *self.signed.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some((serial, signed));
            }
            Ok(_) => {}
            Err(e) => {
                RelayMetrics::count(&self.metrics.content_manifests, "refused");
                warn!(error = %e, from, "content manifest refused");
            }
        }
        self.metrics
            .content_cache_bytes
            .set(self.cache().used_bytes() as i64);
    }

    /// The manifest as clients get it.
    pub(crate) fn manifest_msg(&self) -> ServerMsg {
        match &*self.signed.lock().unwrap_or_else(PoisonError::into_inner) {
            Some((_, s)) => ServerMsg::ContentManifest {
                body: Bytes::from(s.body.clone()),
                signature: Bytes::from(s.signature.clone()),
            },
            None => ServerMsg::ContentRefused(ContentRefusal {
                name: String::new(),
                code: ContentCode::NoManifest,
                message: "no content manifest yet".into(),
            }),
        }
    }

    /// A pack's verified bytes: from the cache, or from the one fetch of it.
    async fn pack(self: &Arc<Self>, key: PackKey) -> Result<Bytes, ContentError> {
        let (tx, rx) = oneshot::channel();
        let lookup = self.cache().handle_request(&key, tx);
        match lookup {
            Lookup::Hit(b) => {
                RelayMetrics::count(&self.metrics.content_requests, "hit");
                return Ok(b);
            }
            Lookup::Refused(e) => {
                RelayMetrics::count(&self.metrics.content_requests, "refused");
                return Err(e);
            }
            Lookup::Wait => RelayMetrics::count(&self.metrics.content_requests, "joined"),
            Lookup::Fetch => {
                RelayMetrics::count(&self.metrics.content_requests, "miss");
                let me = self.clone();
                tokio::spawn(async move { me.fetch(key).await });
            }
        }
        rx.await
            .unwrap_or_else(|_| Err(ContentError::Source("fetch abandoned".into())))
    }

    async fn fetch(self: Arc<Self>, key: PackKey) {
        self.metrics.content_fetches.inc();
        let source = self.source.clone();
        let k = key.clone();
        let read = tokio::task::spawn_blocking(move || source.read_pack(&k.name, &k.version))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map(Bytes::from);
        let f = self.cache().handle_fetched(&key, read);
        if let Err(e) = &f.result {
            let kind = match e {
                ContentError::HashMismatch(_) => "hash_mismatch",
                ContentError::Superseded(_) => "superseded",
                _ => "source",
            };
            RelayMetrics::count(&self.metrics.content_fetch_failed, kind);
            warn!(pack = %key.name, version = %key.version, error = %e, "content fetch failed");
        }
        self.metrics
            .content_cache_bytes
            .set(self.cache().used_bytes() as i64);
        for w in f.waiters {
            let _ = w.send(f.result.clone());
        }
    }

    /// The bytes of `[offset, offset + len)` of a pack (fewer at its end),
    /// and the pack's size. A pack the cache holds (or will) comes whole
    /// from it. One larger than the cache is checked whole once (through
    /// the cache's single fetch, not kept); its file's stamp is remembered,
    /// and later windows are read as ranges while the stamp stays the same
    /// (before, every window re-read and re-hashed the whole pack).
    async fn window(
        self: &Arc<Self>,
        key: PackKey,
        offset: u64,
        len: u32,
    ) -> Result<(Bytes, u64), (ContentCode, String)> {
        let in_range = |total: u64| -> Result<u64, (ContentCode, String)> {
            if len == 0 || len > MAX_CONTENT_WINDOW || offset > total {
                return Err((
                    ContentCode::BadRange,
                    format!(
                        "offset {offset} len {len} of {total} bytes (windows of 1 to {MAX_CONTENT_WINDOW})"
                    ),
                ));
            }
            Ok((offset + u64::from(len)).min(total))
        };
        let large = self.too_large(&key);
        if let Some(total) = large {
            let end = in_range(total)?;
            if let Some(w) = self.ranged(&key, offset, end).await {
                return Ok((w, total));
            }
        }
        let before = match large {
            Some(_) => self.stamp(&key).await,
            None => None,
        };
        let bytes = self
            .pack(key.clone())
            .await
            .map_err(|e| (code(&e), e.to_string()))?;
        let total = bytes.len() as u64;
        let end = in_range(total)?;
        // Checked whole: its file may be read by ranges while unchanged.
        if let Some(stamp) = before {
            if self.stamp(&key).await == Some(stamp) {
                self.remember(key, stamp);
            }
        }
        Ok((bytes.slice(offset as usize..end as usize), total))
    }

    /// The manifest's size of `key` when it is larger than the cache.
    fn too_large(&self, key: &PackKey) -> Option<u64> {
        let cache = self.cache();
        let e = cache.manifest()?.current(&key.name, &key.version)?;
        (e.size > self.cache_bytes).then_some(e.size)
    }

    async fn stamp(&self, key: &PackKey) -> Option<FileStamp> {
        let (source, k) = (self.source.clone(), key.clone());
        tokio::task::spawn_blocking(move || source.pack_stamp(&k.name, &k.version).ok())
            .await
            .ok()
            .flatten()
    }

    fn streamed(&self) -> std::sync::MutexGuard<'_, VecDeque<(PackKey, FileStamp)>> {
        self.streamed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn remember(&self, key: PackKey, stamp: FileStamp) {
        let mut s = self.streamed();
        s.retain(|(k, _)| *k != key);
        if s.len() >= MAX_STREAMED {
            s.pop_front();
        }
        s.push_back((key, stamp));
    }

    /// A window of a large pack checked whole earlier, read as a range if
    /// its file has not changed since (`None`: check it whole again).
    async fn ranged(&self, key: &PackKey, offset: u64, end: u64) -> Option<Bytes> {
        let checked = self
            .streamed()
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, s)| *s)?;
        let (source, k) = (self.source.clone(), key.clone());
        let want = (end - offset) as usize;
        let read = tokio::task::spawn_blocking(move || {
            if source.pack_stamp(&k.name, &k.version).ok()? != checked {
                return None;
            }
            source
                .read_pack_range(&k.name, &k.version, offset, want)
                .ok()
        })
        .await
        .ok()
        .flatten()
        .filter(|r| r.len() == want);
        match read {
            Some(r) => {
                RelayMetrics::count(&self.metrics.content_requests, "ranged");
                Some(Bytes::from(r))
            }
            None => {
                self.streamed().retain(|(k, _)| k != key);
                None
            }
        }
    }

    /// Answers one window request on `out` (pieces in the bulk class).
    pub(crate) async fn serve(
        self: Arc<Self>,
        out: Arc<Outbox>,
        session: SessionId,
        get: ContentGet,
    ) {
        let push = |msg: &ServerMsg| {
            out.push(Outgoing {
                class: EventClass::Bulk,
                session,
                entity: None,
                droppable: false,
                bytes: frame(msg),
            })
            .is_ok()
        };
        let refuse = |code: ContentCode, message: String| {
            RelayMetrics::count(&self.metrics.content_refused, format!("{code:?}"));
            push(&ServerMsg::ContentRefused(ContentRefusal {
                name: get.name.clone(),
                code,
                message,
            }));
        };
        let key = PackKey::new(&get.name, &get.version);
        let (window, total) = match self.window(key, get.offset, get.len).await {
            Ok(w) => w,
            Err((code, message)) => return refuse(code, message),
        };
        let end = get.offset + window.len() as u64;
        let mut at = get.offset;
        loop {
            let to = (at + CONTENT_PIECE as u64).min(end);
            let chunk = ContentChunk {
                name: get.name.clone(),
                version: get.version.clone(),
                offset: at,
                total,
                data: window.slice((at - get.offset) as usize..(to - get.offset) as usize),
            };
            if !push(&ServerMsg::ContentChunk(chunk)) {
                return; // the connection is closing as too slow
            }
            self.metrics.content_bytes_served.inc_by(to - at);
            at = to;
            if at >= end {
                return;
            }
        }
    }
}

/// Content windows served to one client at once; more are refused `Busy`
/// (a client pulls one window after another).
const MAX_WINDOWS_PER_CLIENT: usize = 4;

impl super::reader::ClientReader {
    fn content_refused(&self, name: &str, code: ContentCode, message: &str) {
        RelayMetrics::count(&self.shared.metrics.content_refused, format!("{code:?}"));
        let _ = self.out.push(Outgoing {
            class: EventClass::Bulk,
            session: self.session,
            entity: None,
            droppable: false,
            bytes: frame(&ServerMsg::ContentRefused(ContentRefusal {
                name: name.to_owned(),
                code,
                message: message.to_owned(),
            })),
        });
    }

    /// The client asks for the content manifest.
    pub(crate) fn content_manifest(&self) {
        let Some(c) = &self.shared.content else {
            return self.content_refused("", ContentCode::Disabled, "this relay serves no content");
        };
        let _ = self.out.push(Outgoing {
            class: EventClass::Bulk,
            session: self.session,
            entity: None,
            droppable: false,
            bytes: frame(&c.manifest_msg()),
        });
    }

    /// The client asks for a window of a pack: served by its own task (a
    /// fetch never holds up the client's other messages).
    pub(crate) fn content_get(&self, get: ContentGet) {
        use std::sync::atomic::Ordering;
        let Some(c) = &self.shared.content else {
            return self.content_refused(
                &get.name,
                ContentCode::Disabled,
                "this relay serves no content",
            );
        };
        let n = self.content_windows.fetch_add(1, Ordering::AcqRel);
        if n >= MAX_WINDOWS_PER_CLIENT {
            self.content_windows.fetch_sub(1, Ordering::AcqRel);
            return self.content_refused(
                &get.name,
                ContentCode::Busy,
                "too many content windows at once",
            );
        }
        let (c, out, session, windows) = (
            c.clone(),
            self.out.clone(),
            self.session,
            self.content_windows.clone(),
        );
        tokio::spawn(async move {
            c.serve(out, session, get).await;
            windows.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Reads the source's manifest now and every `every`, until the relay
/// stops (`done`).
pub(crate) async fn refresh_task(
    svc: Arc<ContentService>,
    every: Duration,
    mut done: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = done.wait_for(|d| *d) => return,
        }
        let s = svc.clone();
        let _ = tokio::task::spawn_blocking(move || s.refresh()).await;
    }
}
