//! [`ClientBuilder`]: what a game sets before connecting, and the connect
//! itself (directory question, first relay choice, the driver's start).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::Endpoint;
use skylane_proto::ed25519_dalek::VerifyingKey;
use skylane_proto::{
    encode_frame_to_bytes, ChainVerifier, ClientMsg, FrameDecoder, RelayInfo, ServerMsg,
    SpectatorSubscribe, WorldId, DEFAULT_MAX_FRAME,
};
use tokio::sync::mpsc;

use crate::{ChoiceConfig, ClientError, ClockSync, Ordering};

use crate::client::{Client, SharedState, UnixClock};
use crate::driver::Driver;

/// Builds a [`Client`]. Cloning a builder gives another client the same
/// settings (and, with [`ClientBuilder::endpoint`], the same socket).
#[derive(Debug, Default, Clone)]
pub struct ClientBuilder {
    pub(crate) token: Option<String>,
    pub(crate) world: Option<WorldId>,
    pub(crate) relays: Vec<SocketAddr>,
    pub(crate) directory: Option<SocketAddr>,
    pub(crate) server_name: Option<String>,
    pub(crate) ca_pem: Option<String>,
    pub(crate) endpoint: Option<Endpoint>,
    pub(crate) origin_key: Option<VerifyingKey>,
    pub(crate) content_key: Option<VerifyingKey>,
    pub(crate) cosigners: Vec<VerifyingKey>,
    pub(crate) probe: Option<usize>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) ping_interval: Option<Duration>,
    pub(crate) reprobe: Option<Option<ChoiceConfig>>,
    pub(crate) event_buffer: Option<usize>,
    pub(crate) spectate: Option<SpectatorSubscribe>,
    pub(crate) provider: Option<TokenProvider>,
}

/// Fetches a fresh token from the game's auth service (see
/// [`ClientBuilder::token_provider`]). Cheap to clone.
#[derive(Clone)]
pub struct TokenProvider(pub(crate) Arc<dyn Fn() -> TokenFuture + Send + Sync>);

/// What a [`TokenProvider`] returns: a fresh token, or why there is none.
pub type TokenFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>>;

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenProvider")
    }
}

impl Client {
    /// Starts building a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }
}

impl ClientBuilder {
    /// The signed token (from the game's auth service or `skylane token issue`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Where fresh tokens come from: called before a (re)connect whose token
    /// expires within [`TOKEN_REFRESH_MARGIN`](crate::TOKEN_REFRESH_MARGIN)
    /// (or is none yet), and when a
    /// relay refuses the token as expired (then retried), so a session that
    /// outlives its token reconnects and resumes. An error is retried like an
    /// unreachable relay. With it, [`ClientBuilder::token`] is optional.
    pub fn token_provider<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<String, String>> + Send + 'static,
    {
        self.provider = Some(TokenProvider(Arc::new(move || Box::pin(f()))));
        self
    }

    /// The world to join.
    pub fn world(mut self, world: WorldId) -> Self {
        self.world = Some(world);
        self
    }

    /// Everything a match found by the matchmaker gives: its world token,
    /// the world, and the relays nearest this player (their certificate
    /// name too). Set the CA (and anything else) as usual.
    #[must_use]
    pub fn matched(mut self, m: &skylane_proto::matchmaking::MatchFound) -> Self {
        self.token = Some(m.token.clone());
        self.world = Some(m.world);
        self.relays = m
            .relays
            .iter()
            .filter_map(|r| r.addr.parse().ok())
            .collect();
        if let Some(r) = m.relays.first() {
            self.server_name = Some(r.tls_name.clone());
        }
        self
    }

    /// Bootstrap relays to probe.
    pub fn relays(mut self, relays: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.relays = relays.into_iter().collect();
        self
    }

    /// A relay to ask which relays suit this client (GeoIP); its answer is probed.
    pub fn directory(mut self, relay: SocketAddr) -> Self {
        self.directory = Some(relay);
        self
    }

    /// TLS server name of the relays (default `localhost`).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// PEM of the CA the relays' certificates chain to.
    pub fn ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// A quinn endpoint to use (for example a simulated one); by default the client
    /// binds a UDP socket on an ephemeral port.
    pub fn endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoint = Some(endpoint);
        self
    }

    /// The operator's content-signing public key: what
    /// [`Client::fetch_content`] checks the content manifest with (the pack's
    /// bytes are then checked against the manifest's SHA-256).
    pub fn content_key(mut self, key: VerifyingKey) -> Self {
        self.content_key = Some(key);
        self
    }

    /// The origin's batch-signing public key: every batch is then verified.
    pub fn origin_key(mut self, key: VerifyingKey) -> Self {
        self.origin_key = Some(key);
        self
    }

    /// A standby origin's attestation key (repeatable): with
    /// [`ClientBuilder::origin_key`], [`ClientStats`](crate::ClientStats)
    /// counts the checkpoints (signed batches) that one of these standbys
    /// co-signed, so two servers attested them, and those it cannot say that
    /// of (no co-signature, or one by a key not given here).
    pub fn cosigner_key(mut self, key: VerifyingKey) -> Self {
        self.cosigners.push(key);
        self
    }

    /// How many candidate relays to probe in parallel (default 3).
    pub fn probe(mut self, k: usize) -> Self {
        self.probe = Some(k.max(1));
        self
    }

    /// Idle time after which a silent connection counts as lost (default 3 s; a
    /// keep-alive runs at a quarter of it). QUIC uses the smaller of the two
    /// sides' idle timeouts and the relay's is 10 s; the relay sends keep-alives
    /// of its own after 4 s of silence, so above 16 s here they take over.
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = Some(d);
        self
    }

    /// Interval of clock-sync pings (default 1 s; spectators 5 s). The first
    /// few come every second whatever this is, to settle the clock.
    pub fn ping_interval(mut self, d: Duration) -> Self {
        self.ping_interval = Some(d);
        self
    }

    /// How a connected client re-probes the other candidate relays and when it
    /// moves to a faster one (default [`ChoiceConfig::default`]: a round every
    /// 15 s; a relay at least 15 ms and 20% faster for 40 s wins). Moving resumes
    /// the session: nothing is lost or duplicated.
    pub fn reprobe(mut self, cfg: ChoiceConfig) -> Self {
        self.reprobe = Some(Some(cfg));
        self
    }

    /// Stays on the relay it connected to until that relay fails or asks it to
    /// move (no re-probing).
    pub fn no_reprobe(mut self) -> Self {
        self.reprobe = Some(None);
        self
    }

    /// Events buffered for the game before the client stops reading the network
    /// (default 65,536).
    pub fn event_buffer(mut self, n: usize) -> Self {
        self.event_buffer = Some(n.max(1));
        self
    }

    /// Makes the session a spectator's: after every (re)connect it asks for this
    /// feed (see [`Spectator::connect`]).
    pub(crate) fn spectate(mut self, sub: SpectatorSubscribe) -> Self {
        self.spectate = Some(sub);
        self
    }

    /// The world set so far.
    pub(crate) fn world_id(&self) -> Option<WorldId> {
        self.world
    }

    /// Chooses a relay, opens the session and starts the client.
    pub async fn connect(self) -> Result<Client, ClientError> {
        let token = match (self.token, &self.provider) {
            (Some(t), _) => t,
            // Fetched before the first hello.
            (None, Some(_)) => String::new(),
            (None, None) => {
                return Err(ClientError::Config(
                    "a token (or a token provider) is required".into(),
                ))
            }
        };
        let world = self
            .world
            .ok_or_else(|| ClientError::Config("a world is required".into()))?;
        let ca = self
            .ca_pem
            .ok_or_else(|| ClientError::Config("the relays' CA (ca_pem) is required".into()))?;
        let roots = skylane_certs::roots_from_pem(&ca)
            .map_err(|e| ClientError::Config(format!("ca_pem: {e}")))?;
        let mut quic = skylane_certs::client_config(roots, None)
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let idle = self.idle_timeout.unwrap_or(Duration::from_secs(3));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(idle.try_into().ok())
            .keep_alive_interval(Some(idle / 4));
        quic.transport_config(Arc::new(transport));
        let endpoint = match self.endpoint {
            Some(e) => e,
            None => Endpoint::client(([0, 0, 0, 0], 0).into())
                .map_err(|e| ClientError::Config(format!("binding a UDP socket: {e}")))?,
        };
        let server_name = self.server_name.unwrap_or_else(|| "localhost".into());
        let mut candidates = self.relays;
        if let Some(dir) = self.directory {
            let listed = ask_directory(&endpoint, &quic, dir, &server_name).await?;
            candidates = listed
                .iter()
                .filter_map(|r| r.addrs.first().and_then(|a| a.parse().ok()))
                .collect();
            if candidates.is_empty() {
                candidates.push(dir);
            }
        }
        if candidates.is_empty() {
            return Err(ClientError::Config("no relays given".into()));
        }
        let clock = UnixClock::new();
        let shared = Arc::new(Mutex::new(SharedState::default()));
        let mut d = Driver {
            endpoint,
            quic,
            server_name,
            token,
            provider: self.provider,
            refresh_token: false,
            token_fresh: false,
            token_given_up: false,
            world,
            candidates,
            probe: self.probe.unwrap_or(3),
            ping_interval: self.ping_interval.unwrap_or(Duration::from_secs(1)),
            choice_cfg: self.reprobe.unwrap_or(Some(ChoiceConfig::default())),
            choice: None,
            prefer: None,
            clock,
            ticket: None,
            session: None,
            order: Ordering::new(4096),
            feed_key: self.origin_key,
            unsigned_ok: false,
            verifier: self.origin_key.map(|k| {
                let mut v = ChainVerifier::new(k);
                for c in &self.cosigners {
                    v.add_cosigner(*c);
                }
                v
            }),
            sync: ClockSync::default(),
            shared: shared.clone(),
            pending: HashMap::new(),
            origin_pings: HashMap::new(),
            content: None,
            next_origin_ping: 0,
            next_seq: 1,
            streams: HashMap::new(),
            movement_acks: Vec::new(),
            spectate: self.spectate,
        };
        let (events_tx, events_rx) = mpsc::channel(self.event_buffer.unwrap_or(65_536));
        let first = d.connect_best().await?;
        let (cmd_tx, cmd_rx) = mpsc::channel(4096);
        tokio::spawn(d.run(first, cmd_rx, events_tx));
        Ok(Client {
            cmd: cmd_tx,
            events: events_rx,
            shared,
            clock,
            content_key: self.content_key,
            content_lock: Default::default(),
        })
    }
}

async fn ask_directory(
    endpoint: &Endpoint,
    quic: &quinn::ClientConfig,
    relay: SocketAddr,
    server_name: &str,
) -> Result<Vec<RelayInfo>, ClientError> {
    let unreachable = |e: String| ClientError::RelayUnreachable(format!("{relay}: {e}"));
    let conn = endpoint
        .connect_with(quic.clone(), relay, server_name)
        .map_err(|e| unreachable(e.to_string()))?
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let req = ClientMsg::Directory {
        addr: None,
        count: 4,
    };
    send.write_all(&encode_frame_to_bytes(&req, DEFAULT_MAX_FRAME).unwrap_or_default())
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let mut dec = FrameDecoder::default();
    loop {
        match dec.poll_message::<ServerMsg>() {
            Ok(Some(ServerMsg::Directory(list))) => {
                conn.close(0u32.into(), b"thanks");
                return Ok(list);
            }
            Ok(Some(_)) | Err(_) => return Err(unreachable("unexpected directory answer".into())),
            Ok(None) => {}
        }
        match recv.read_chunk(DEFAULT_MAX_FRAME, true).await {
            Ok(Some(c)) => dec.push(&c.bytes),
            _ => return Err(unreachable("closed before answering".into())),
        }
    }
}
