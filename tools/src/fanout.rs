//! The raw quinn fan-out baseline: what the spectator benchmark compares the
//! relay with.
//!
//! A bare quinn server, with the relay's client transport settings and TLS
//! configuration, accepts `connections` connections, opens one stream to each
//! and writes the same shared frame (one `Bytes`, no copy) to every connection
//! at `frame_hz`: a hand-rolled broadcast with no tokens, sessions, delay
//! buffer, filters or metrics. The result is CPU per delivered frame, the same
//! unit the relay's `process_cpu_seconds_total` over its
//! `skylane_relay_spectator_frames_total` gives.
//!
//! The same server also echoes, for the path floor of the players' latency:
//! raw UDP datagrams on one socket and QUIC datagrams on a second quinn
//! endpoint ([`echo`] measures both round trips while the load runs).
//!
//! Where the server runs ([`Host`]): in a process of its own (`skylane
//! fanout-server`, what `skylane loadgen --baseline` does), on a multi-threaded
//! runtime like the relay's, its process CPU time measured; or, for tests, on a
//! single-threaded runtime on a thread of the caller's process, that thread's
//! CPU time measured. Either way the clients run elsewhere and are not counted.

use std::io::{BufRead as _, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use skylane_certs::{client_config, server_config, ClientAuth, LocalPki};
use tokio::sync::{broadcast, oneshot, Semaphore};
use tokio::task::JoinSet;

/// Where the baseline server runs.
#[derive(Debug, Clone)]
pub enum Host {
    /// A child process: this executable (the `skylane` binary) run as
    /// `skylane fanout-server`; its process CPU time is measured.
    Process(PathBuf),
    /// A thread of this process with a single-threaded runtime; that thread's
    /// CPU time is measured.
    Thread,
}

/// Options of a baseline run.
#[derive(Debug, Clone, Copy)]
pub struct FanoutOptions {
    /// Connections (the spectators' number).
    pub connections: usize,
    /// Frames per second to every connection.
    pub frame_hz: f64,
    /// Bytes per frame.
    pub frame_bytes: usize,
    /// Measured time, once every connection is up.
    pub duration: Duration,
    /// Local address the server and clients bind.
    pub bind: IpAddr,
    /// Client connections sharing one UDP socket.
    pub per_socket: usize,
    /// Handshakes in progress at once.
    pub connect_parallel: usize,
}

/// What the server is told to send.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ServeSpec {
    /// Frames per second to every connection.
    pub frame_hz: f64,
    /// Bytes per frame.
    pub frame_bytes: usize,
    /// Measured time.
    pub duration: Duration,
    /// Address to bind.
    pub bind: SocketAddr,
}

/// The server's first line: where to connect and what to trust.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ready {
    /// The fan-out endpoint.
    pub addr: SocketAddr,
    /// Raw UDP echo.
    pub udp_echo: SocketAddr,
    /// QUIC datagram echo (same CA).
    pub quic_echo: SocketAddr,
    /// CA of the server's certificate.
    pub ca_pem: String,
}

/// What the baseline measured.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct FanoutReport {
    /// Connections that were up during the measurement.
    pub connections: usize,
    /// Frames per second offered to each connection.
    pub frame_hz: f64,
    /// Bytes per frame.
    pub frame_bytes: usize,
    /// Frames written to connections during the measurement.
    pub frames: u64,
    /// Frames the clients read (all of the run, a check that they were carried).
    pub frames_received: u64,
    /// Server CPU time during the measurement, seconds.
    pub cpu_s: f64,
    /// Measured time, seconds.
    pub elapsed_s: f64,
    /// Server CPU per delivered frame, microseconds.
    pub cpu_us_per_frame: f64,
    /// The server's resident memory per connection (loaded − idle) / connections,
    /// bytes; meaningful when the server is its own process.
    pub bytes_per_connection: f64,
}

/// Why the baseline could not run.
#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    /// Certificates or TLS configuration.
    #[error("tls: {0}")]
    Tls(String),
    /// A socket could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The server thread died.
    #[error("the server thread stopped: {0}")]
    Server(String),
    /// Not one connection came up.
    #[error("no connection: {0}")]
    NoConnections(String),
}

/// What the server measured.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Measured {
    /// Frames written to connections.
    pub frames: u64,
    /// CPU time spent.
    pub cpu: Duration,
    /// Wall time measured.
    pub elapsed: Duration,
    /// The server's resident memory before any connection, bytes.
    pub resident_idle: u64,
    /// Its resident memory with every connection up, before sending, bytes.
    pub resident_loaded: u64,
}

/// Which CPU clock the server reads.
#[derive(Debug, Clone, Copy)]
enum CpuClock {
    Process,
    Thread,
}

impl CpuClock {
    fn now(self) -> Duration {
        match self {
            Self::Process => cpu_time::ProcessTime::try_now().map(|t| t.as_duration()),
            Self::Thread => cpu_time::ThreadTime::try_now().map(|t| t.as_duration()),
        }
        .unwrap_or_default()
    }
}

/// The baseline server of `skylane fanout-server`, in its own process: prints
/// one JSON line (`{"addr", "ca_pem"}`), waits for a line on stdin, sends for
/// `duration`, prints the [`Measured`] JSON line and exits.
pub async fn serve_stdio(bind: SocketAddr) -> Result<(), FanoutError> {
    let (ready_tx, ready_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    let server = tokio::spawn(serve(bind, CpuClock::Process, ready_tx, go_rx, done_tx));
    let ready = ready_rx
        .await
        .map_err(|_| FanoutError::Server("no address".into()))??;
    let line = serde_json::to_string(&ready).map_err(|e| FanoutError::Server(e.to_string()))?;
    println!("{line}");
    let _ = std::io::stdout().flush();
    let line = tokio::task::spawn_blocking(|| {
        let mut l = String::new();
        let _ = std::io::stdin().read_line(&mut l);
        l
    })
    .await
    .map_err(|e| FanoutError::Server(e.to_string()))?;
    let spec: ServeSpec =
        serde_json::from_str(&line).map_err(|e| FanoutError::Server(format!("go line: {e}")))?;
    let _ = go_tx.send(spec);
    let m = done_rx
        .await
        .map_err(|_| FanoutError::Server("no measurement".into()))?;
    let line = serde_json::to_string(&m).map_err(|e| FanoutError::Server(e.to_string()))?;
    println!("{line}");
    let _ = std::io::stdout().flush();
    let _ = server.await;
    Ok(())
}

/// A running baseline server, seen from the clients' side: start it, use its
/// echoes while the load runs, then [`fan_out`].
#[derive(Debug)]
pub enum Server {
    /// On a thread of this process.
    #[doc(hidden)]
    Thread {
        go: oneshot::Sender<ServeSpec>,
        done: oneshot::Receiver<Measured>,
        thread: std::thread::JoinHandle<()>,
    },
    /// In a child process.
    #[doc(hidden)]
    Process {
        child: std::process::Child,
        lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    },
}

impl Server {
    /// Starts the server where `host` says.
    pub async fn start(host: &Host, bind: SocketAddr) -> Result<(Self, Ready), FanoutError> {
        match host {
            Host::Thread => {
                let (ready_tx, ready_rx) = oneshot::channel();
                let (go_tx, go_rx) = oneshot::channel();
                let (done_tx, done_rx) = oneshot::channel();
                let thread = std::thread::Builder::new()
                    .name("fanout-baseline".into())
                    .spawn(move || {
                        match tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            Ok(rt) => {
                                rt.block_on(serve(bind, CpuClock::Thread, ready_tx, go_rx, done_tx))
                            }
                            Err(e) => {
                                let _ = ready_tx.send(Err(FanoutError::Server(e.to_string())));
                            }
                        }
                    })
                    .map_err(|e| FanoutError::Server(e.to_string()))?;
                let ready = ready_rx
                    .await
                    .map_err(|_| FanoutError::Server("no address".into()))??;
                Ok((
                    Self::Thread {
                        go: go_tx,
                        done: done_rx,
                        thread,
                    },
                    ready,
                ))
            }
            Host::Process(exe) => {
                let mut child = Command::new(exe)
                    .arg("fanout-server")
                    .arg("--bind")
                    .arg(
                        serde_json::to_string(&bind)
                            .map_err(|e| FanoutError::Server(e.to_string()))?,
                    )
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .map_err(|e| FanoutError::Server(format!("{}: {e}", exe.display())))?;
                let out = child
                    .stdout
                    .take()
                    .ok_or_else(|| FanoutError::Server("no stdout".into()))?;
                let mut lines = std::io::BufReader::new(out).lines();
                let (ready, lines) = tokio::task::spawn_blocking(move || {
                    let l = lines.next();
                    (l, lines)
                })
                .await
                .map_err(|e| FanoutError::Server(e.to_string()))?;
                let ready: Ready = ready
                    .and_then(Result::ok)
                    .and_then(|l| serde_json::from_str(&l).ok())
                    .ok_or_else(|| {
                        FanoutError::Server("the server process did not start".into())
                    })?;
                Ok((Self::Process { child, lines }, ready))
            }
        }
    }

    /// Ends the server without a fan-out measurement.
    pub async fn stop(self) {
        match self {
            Self::Thread { go, thread, .. } => {
                drop(go);
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
            Self::Process { mut child, .. } => {
                let _ = child.kill();
                let _ = tokio::task::spawn_blocking(move || child.wait()).await;
            }
        }
    }

    async fn measure(self, spec: ServeSpec) -> Result<Measured, FanoutError> {
        match self {
            Self::Thread { go, done, thread } => {
                let _ = go.send(spec);
                let m = done
                    .await
                    .map_err(|_| FanoutError::Server("no measurement".into()))?;
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
                Ok(m)
            }
            Self::Process {
                mut child,
                mut lines,
            } => {
                let m = tokio::task::spawn_blocking(move || {
                    let mut stdin = child.stdin.take()?;
                    writeln!(stdin, "{}", serde_json::to_string(&spec).ok()?).ok()?;
                    let m = lines.next()?.ok()?;
                    let _ = child.wait();
                    serde_json::from_str::<Measured>(&m).ok()
                })
                .await
                .map_err(|e| FanoutError::Server(e.to_string()))?;
                m.ok_or_else(|| {
                    FanoutError::Server("no measurement from the server process".into())
                })
            }
        }
    }
}

/// Runs the baseline (several seconds: connections, then `duration` measured).
pub async fn run(opts: FanoutOptions, host: &Host) -> Result<FanoutReport, FanoutError> {
    let (server, ready) = Server::start(host, SocketAddr::new(opts.bind, 0)).await?;
    fan_out(server, &ready, opts).await
}

/// The fan-out measurement on a started server; ends it.
pub async fn fan_out(
    server: Server,
    ready: &Ready,
    opts: FanoutOptions,
) -> Result<FanoutReport, FanoutError> {
    let spec = ServeSpec {
        frame_hz: opts.frame_hz.clamp(0.1, 1000.0),
        frame_bytes: opts.frame_bytes.max(1),
        duration: opts.duration,
        bind: SocketAddr::new(opts.bind, 0),
    };
    let tls = |e: skylane_certs::CertError| FanoutError::Tls(e.to_string());
    let bind = spec.bind;
    let addr = ready.addr;
    let roots = skylane_certs::roots_from_pem(&ready.ca_pem).map_err(tls)?;
    let mut cc = client_config(roots, None).map_err(tls)?;
    let mut ct = quinn::TransportConfig::default();
    ct.max_idle_timeout(Duration::from_secs(30).try_into().ok());
    cc.transport_config(Arc::new(ct));

    // Clients: many per socket, bounded handshakes in flight.
    let received = Arc::new(AtomicU64::new(0));
    let mut endpoints = Vec::new();
    let per_socket = opts.per_socket.max(1);
    for _ in 0..opts.connections.div_ceil(per_socket) {
        let mut e = quinn::Endpoint::client(bind)
            .map_err(|source| FanoutError::Bind { addr: bind, source })?;
        e.set_default_client_config(cc.clone());
        endpoints.push(e);
    }
    let gate = Arc::new(Semaphore::new(opts.connect_parallel.max(1)));
    let mut connecting = JoinSet::new();
    for i in 0..opts.connections {
        let (e, gate) = (endpoints[i / per_socket].clone(), gate.clone());
        connecting.spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            let conn = e.connect(addr, "localhost").ok()?.await.ok()?;
            let opened = async {
                let mut s = conn.accept_uni().await.ok()?;
                let mut hello = [0u8; 1];
                s.read_exact(&mut hello).await.ok()?;
                Some(s)
            };
            let stream = tokio::time::timeout(Duration::from_secs(10), opened)
                .await
                .ok()??;
            Some((conn, stream))
        });
    }
    let mut readers = JoinSet::new();
    let mut conns = Vec::new();
    while let Some(r) = connecting.join_next().await {
        if let Ok(Some((conn, mut stream))) = r {
            conns.push(conn);
            let (received, size) = (received.clone(), spec.frame_bytes as u64);
            readers.spawn(async move {
                let mut bytes = 0u64;
                while let Ok(Some(c)) = stream.read_chunk(usize::MAX, true).await {
                    bytes += c.bytes.len() as u64;
                    received.fetch_add(bytes / size, Ordering::Relaxed);
                    bytes %= size;
                }
            });
        }
    }
    // Measured even with no connection, so the server always ends.
    let m = server.measure(spec).await?;
    if conns.is_empty() {
        return Err(FanoutError::NoConnections(format!(
            "none of {} connections to {addr} came up",
            opts.connections
        )));
    }
    for c in &conns {
        c.close(0u32.into(), b"done");
    }
    for e in &endpoints {
        e.wait_idle().await;
    }
    readers.shutdown().await;
    Ok(FanoutReport {
        connections: conns.len(),
        frame_hz: spec.frame_hz,
        frame_bytes: spec.frame_bytes,
        frames: m.frames,
        frames_received: received.load(Ordering::Relaxed),
        cpu_s: m.cpu.as_secs_f64(),
        elapsed_s: m.elapsed.as_secs_f64(),
        cpu_us_per_frame: m.cpu.as_secs_f64() * 1e6 / m.frames.max(1) as f64,
        bytes_per_connection: m.resident_loaded.saturating_sub(m.resident_idle) as f64
            / conns.len() as f64,
    })
}

/// The server: accepts connections, then on `go` sends for `spec.duration` and
/// reports what it wrote and the CPU it spent doing so.
async fn serve(
    bind: SocketAddr,
    clock: CpuClock,
    ready: oneshot::Sender<Result<Ready, FanoutError>>,
    go: oneshot::Receiver<ServeSpec>,
    done: oneshot::Sender<Measured>,
) {
    let tls = |e: skylane_certs::CertError| FanoutError::Tls(e.to_string());
    let pki = match LocalPki::generate(&[]).map_err(tls) {
        Ok(p) => p,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut sc = match server_config(&pki.relay, ClientAuth::None).map_err(tls) {
        Ok(sc) => sc,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    sc.transport_config(Arc::new(skylane_relay::client_transport()));
    let endpoint = match quinn::Endpoint::server(sc.clone(), bind) {
        Ok(e) => e,
        Err(source) => {
            let _ = ready.send(Err(FanoutError::Bind { addr: bind, source }));
            return;
        }
    };
    let echoes = async {
        let udp = tokio::net::UdpSocket::bind(bind).await?;
        let quic = quinn::Endpoint::server(sc, bind)?;
        Ok::<_, std::io::Error>((udp, quic))
    };
    let (udp, quic) = match echoes.await {
        Ok(x) => x,
        Err(source) => {
            let _ = ready.send(Err(FanoutError::Bind { addr: bind, source }));
            return;
        }
    };
    let (Ok(addr), Ok(udp_echo), Ok(quic_echo)) =
        (endpoint.local_addr(), udp.local_addr(), quic.local_addr())
    else {
        return;
    };
    let resident_idle = skylane_ops::ProcessMetrics::resident_bytes();
    let _ = ready.send(Ok(Ready {
        addr,
        udp_echo,
        quic_echo,
        ca_pem: pki.ca_pem.clone(),
    }));
    let echo_task = tokio::spawn(serve_echoes(udp, quic.clone()));
    // Lagging writers skip frames (the broadcast's bound), like the relay's
    // bounded spectator queues.
    let (tx, _) = broadcast::channel::<Bytes>(64);
    let written = Arc::new(AtomicU64::new(0));
    let accept = {
        let (endpoint, tx, written) = (endpoint.clone(), tx.clone(), written.clone());
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let (mut rx, written) = (tx.subscribe(), written.clone());
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    let Ok(mut s) = conn.open_uni().await else {
                        return;
                    };
                    // The stream reaches the client with its first byte.
                    if s.write_all(b"!").await.is_err() {
                        return;
                    }
                    loop {
                        match rx.recv().await {
                            Ok(f) => {
                                if s.write_chunk(f).await.is_err() {
                                    return;
                                }
                                written.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(broadcast::error::RecvError::Lagged(_)) => {}
                            Err(broadcast::error::RecvError::Closed) => return,
                        }
                    }
                });
            }
        })
    };
    let Ok(spec) = go.await else {
        return;
    };
    let resident_loaded = skylane_ops::ProcessMetrics::resident_bytes();
    let frame = Bytes::from(vec![0x5a; spec.frame_bytes.max(1)]);
    let period = Duration::from_secs_f64(1.0 / spec.frame_hz.clamp(0.1, 1000.0));
    let duration = spec.duration;
    let cpu0 = clock.now();
    let w0 = written.load(Ordering::Relaxed);
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while start.elapsed() < duration {
        tick.tick().await;
        let _ = tx.send(frame.clone());
    }
    let measured = Measured {
        frames: written.load(Ordering::Relaxed) - w0,
        cpu: clock.now().saturating_sub(cpu0),
        elapsed: start.elapsed(),
        resident_idle,
        resident_loaded,
    };
    accept.abort();
    echo_task.abort();
    quic.close(0u32.into(), b"done");
    drop(tx);
    let _ = done.send(measured);
    endpoint.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
}

/// Echoes UDP datagrams and QUIC datagrams back to their sender.
async fn serve_echoes(udp: tokio::net::UdpSocket, quic: quinn::Endpoint) {
    let quic_side = async move {
        while let Some(incoming) = quic.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok(d) = conn.read_datagram().await {
                    let _ = conn.send_datagram(d);
                }
            });
        }
    };
    let udp_side = async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            let _ = udp.send_to(&buf[..n], from).await;
        }
    };
    tokio::join!(quic_side, udp_side);
}

/// Round trips to the echoes, measured while something else runs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EchoReport {
    /// Raw UDP datagram round trip.
    pub raw_udp_rtt: crate::report::Percentiles,
    /// QUIC datagram round trip (quinn, TLS 1.3, same transport settings as the
    /// relay's client side).
    pub raw_quinn_rtt: crate::report::Percentiles,
}

/// Pings both echoes of `ready` every `every` (64-byte payloads) until `stop`
/// resolves; histograms in microseconds.
pub async fn echo(
    ready: &Ready,
    bind: IpAddr,
    every: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> Result<EchoReport, FanoutError> {
    let tls = |e: skylane_certs::CertError| FanoutError::Tls(e.to_string());
    let local = SocketAddr::new(bind, 0);
    let udp = tokio::net::UdpSocket::bind(local)
        .await
        .map_err(|source| FanoutError::Bind {
            addr: local,
            source,
        })?;
    let roots = skylane_certs::roots_from_pem(&ready.ca_pem).map_err(tls)?;
    let mut e = quinn::Endpoint::client(local).map_err(|source| FanoutError::Bind {
        addr: local,
        source,
    })?;
    e.set_default_client_config(client_config(roots, None).map_err(tls)?);
    let conn = e
        .connect(ready.quic_echo, "localhost")
        .map_err(|err| FanoutError::Server(err.to_string()))?
        .await
        .map_err(|err| FanoutError::Server(err.to_string()))?;
    let (mut udp_h, mut quic_h) = (crate::bots::histogram(), crate::bots::histogram());
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 2048];
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => {}
        }
        let payload = [7u8; 64];
        let t = tokio::time::Instant::now();
        if udp.send_to(&payload, ready.udp_echo).await.is_ok()
            && tokio::time::timeout(Duration::from_secs(1), udp.recv_from(&mut buf))
                .await
                .is_ok()
        {
            let _ = udp_h.record((t.elapsed().as_micros() as u64).max(1));
        }
        let t = tokio::time::Instant::now();
        if conn.send_datagram(Bytes::copy_from_slice(&payload)).is_ok()
            && tokio::time::timeout(Duration::from_secs(1), conn.read_datagram())
                .await
                .is_ok_and(|r| r.is_ok())
        {
            let _ = quic_h.record((t.elapsed().as_micros() as u64).max(1));
        }
    }
    conn.close(0u32.into(), b"done");
    e.wait_idle().await;
    Ok(EchoReport {
        raw_udp_rtt: crate::report::Percentiles::of(&udp_h),
        raw_quinn_rtt: crate::report::Percentiles::of(&quic_h),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_baseline_delivers_every_frame_to_every_connection_and_costs_cpu() {
        let opts = FanoutOptions {
            connections: 20,
            frame_hz: 50.0,
            frame_bytes: 300,
            duration: Duration::from_secs(1),
            bind: "127.0.0.1".parse().unwrap(),
            per_socket: 8,
            connect_parallel: 8,
        };
        let (server, ready) = Server::start(&Host::Thread, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let e = echo(
            &ready,
            opts.bind,
            Duration::from_millis(5),
            tokio::time::sleep(Duration::from_millis(300)),
        )
        .await
        .unwrap();
        assert!(
            e.raw_udp_rtt.count > 20 && e.raw_quinn_rtt.count > 20,
            "{e:?}"
        );
        assert!(
            e.raw_udp_rtt.p50_us > 0 && e.raw_quinn_rtt.p50_us > 0,
            "{e:?}"
        );
        let r = fan_out(server, &ready, opts).await.unwrap();
        assert_eq!(r.connections, 20);
        // ~50 frames to each of 20 connections in the second.
        assert!((800..=1100).contains(&r.frames), "{r:?}");
        assert!(r.frames_received >= r.frames * 9 / 10, "{r:?}");
        assert!(r.cpu_s > 0.0 && r.cpu_us_per_frame > 0.0, "{r:?}");
    }
}
