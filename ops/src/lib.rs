//! `skylane-ops`: what every Skylane binary does the same way for its operator.
//!
//! * [`merge`]: one configuration struct filled from a TOML file, flags and
//!   environment variables (flags and variables win over the file, the file over
//!   defaults), unknown keys rejected by name.
//! * [`admin_router`] / [`serve_admin`]: the admin HTTP endpoint with `/metrics` in
//!   the Prometheus/OpenMetrics text format; binaries add their own routes
//!   (`/status`, `/drain`).
//! * [`init_logging_as`]: `tracing` to stderr, filtered by `RUST_LOG`, as text
//!   (colour only on a terminal) or JSON lines ([`LogFormat`]).
//! * [`LogLimiter`]: one log line per key and interval, with a count.
//! * [`ProcessMetrics`]: the standard `process_cpu_seconds_total` and
//!   `process_resident_memory_bytes`, read at each scrape (the load generator
//!   reads them to put a relay's CPU per delivered event and memory per session
//!   in its report).
//!
//! The origin and the relay share this crate so their operators get identical
//! behaviour (see `docs/operations.md`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::parser::ValueSource;
use clap::ArgMatches;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

/// Why a configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this struct (unknown keys are named here).
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// What is wrong, with the key's name.
        message: String,
    },
    /// Settings that cannot work together.
    #[error("{0}")]
    Invalid(String),
}

/// Merges layers: every argument given on the command line or in the environment
/// wins; otherwise the file's value; otherwise the default.
///
/// `cli` is the struct clap produced (defaults filled in); `matches` tells which of
/// its values were given explicitly.
pub fn merge<T>(cli: &T, matches: &ArgMatches, file: Option<&Path>) -> Result<T, ConfigError>
where
    T: Serialize + for<'de> Deserialize<'de> + Clone,
{
    let Some(path) = file else {
        return Ok(cli.clone());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let file_value: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let mut merged = serde_json::to_value(cli).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let defaults = merged.clone();
    let obj = merged
        .as_object_mut()
        .ok_or_else(|| ConfigError::Invalid("config is not a table".into()))?;
    let mut from_file = Vec::new();
    for (key, value) in file_value {
        // Checked first: asking clap about an id it does not know panics.
        if !obj.contains_key(&key) {
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                message: format!("unknown key `{key}`"),
            });
        }
        // A key that is no flag (a table such as `[analytics]`, set in
        // the file only) is never explicit; clap is not asked about it.
        let flag = matches.ids().any(|id| id.as_str() == key);
        let explicit = flag
            && matches!(
                matches.value_source(&key),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
        if !explicit {
            let value =
                serde_json::to_value(value).map_err(|e| ConfigError::Invalid(e.to_string()))?;
            obj.insert(key.clone(), value.clone());
            from_file.push((key, value));
        }
    }
    serde_json::from_value(merged).map_err(|e| {
        // serde names neither the key nor the line ("invalid type: string
        // \"lots\", expected usize"): find the file's key that fails alone.
        let culprit = from_file.iter().find(|(key, value)| {
            let mut one = defaults.clone();
            if let Some(o) = one.as_object_mut() {
                o.insert(key.clone(), value.clone());
            }
            serde_json::from_value::<T>(one).is_err()
        });
        let message = match culprit {
            Some((key, _)) => match line_of(&text, key) {
                Some(line) => format!("line {line}: key `{key}`: {e}"),
                None => format!("key `{key}`: {e}"),
            },
            None => e.to_string(),
        };
        ConfigError::Parse {
            path: path.to_owned(),
            message,
        }
    })
}

/// The 1-based line where `key` is set in a TOML text.
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

/// Metric label: an outcome, error or violation kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct KindLabel {
    /// The kind.
    pub kind: String,
}

/// Counts one `kind` in `family`.
pub fn count(
    family: &prometheus_client::metrics::family::Family<
        KindLabel,
        prometheus_client::metrics::counter::Counter,
    >,
    kind: impl Into<String>,
) {
    family.get_or_create(&KindLabel { kind: kind.into() }).inc();
}

/// The value of one `kind` in `family` (0 if never counted).
pub fn counted(
    family: &prometheus_client::metrics::family::Family<
        KindLabel,
        prometheus_client::metrics::counter::Counter,
    >,
    kind: &str,
) -> u64 {
    family
        .get(&KindLabel { kind: kind.into() })
        .map_or(0, |c| c.get())
}

/// The process's CPU time and resident memory, read at each scrape under the
/// names Prometheus' own client libraries use.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessMetrics;

impl ProcessMetrics {
    /// Registers the collector in `registry` (at its root: the names are standard).
    pub fn register(registry: &mut Registry) {
        registry.register_collector(Box::new(Self));
    }

    /// CPU time (user + system, all threads) the process has used, seconds.
    pub fn cpu_seconds() -> f64 {
        cpu_time::ProcessTime::try_now().map_or(0.0, |t| t.as_duration().as_secs_f64())
    }

    /// Resident memory of the process, bytes (0 where the platform cannot say).
    pub fn resident_bytes() -> u64 {
        memory_stats::memory_stats().map_or(0, |m| m.physical_mem as u64)
    }
}

impl prometheus_client::collector::Collector for ProcessMetrics {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let cpu = ConstCounter::new(Self::cpu_seconds());
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "CPU time used by the process (user and system), seconds.",
            None,
            cpu.metric_type(),
        )?)?;
        let rss = ConstGauge::new(Self::resident_bytes() as i64);
        rss.encode(encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory of the process, bytes.",
            None,
            rss.metric_type(),
        )?)?;
        Ok(())
    }
}

/// Reads one sample's value from Prometheus/OpenMetrics text: the first line
/// whose metric name and labels are exactly `series` (e.g.
/// `process_cpu_seconds_total` or `x_total{kind="a"}`).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        if !rest.starts_with(' ') {
            return None;
        }
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// A router serving `/metrics` from `registry`; add routes with `.route(..)`.
pub fn admin_router(registry: Arc<Registry>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                let mut text = String::new();
                let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                )
            }
        }),
    )
}

/// Who may use the admin endpoint's state-changing routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAuth {
    /// Every request needs `Authorization: Bearer <token>` except `GET /metrics`
    /// and `GET /status` (read-only).
    Token(Arc<str>),
    /// No token configured: state-changing routes are served only on a loopback
    /// address (the binaries refuse to start otherwise).
    LoopbackOnly,
}

impl AdminAuth {
    /// From the `admin_token` setting: the first line of the file, trimmed.
    pub fn from_file(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(Self::LoopbackOnly);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let token = text.lines().next().unwrap_or_default().trim();
        if token.len() < 16 {
            return Err(ConfigError::Invalid(format!(
                "admin_token: {} must hold a token of at least 16 characters",
                path.display()
            )));
        }
        Ok(Self::Token(token.into()))
    }

    /// Checks that the endpoint may be served at `addr` this way.
    pub fn check(&self, addr: SocketAddr) -> Result<(), ConfigError> {
        match self {
            Self::LoopbackOnly if !addr.ip().is_loopback() => Err(ConfigError::Invalid(format!(
                "admin endpoint {addr} is not on loopback: set admin_token to protect its POST routes"
            ))),
            _ => Ok(()),
        }
    }

    /// Wraps `router` so requests other than reads carry the token.
    pub fn protect(&self, router: axum::Router) -> axum::Router {
        let Self::Token(token) = self else {
            return router;
        };
        let expected: Arc<str> = format!("Bearer {token}").into();
        router.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let expected = expected.clone();
                async move {
                    let read = req.method() == axum::http::Method::GET
                        && matches!(req.uri().path(), "/metrics" | "/status");
                    let given = req
                        .headers()
                        .get(axum::http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok());
                    if read || given == Some(&*expected) {
                        next.run(req).await
                    } else {
                        axum::response::IntoResponse::into_response((
                            axum::http::StatusCode::UNAUTHORIZED,
                            "admin token required\n",
                        ))
                    }
                }
            },
        ))
    }
}

/// Binds `addr` and serves `router` in a background task; returns the bound address.
pub async fn serve_admin(addr: SocketAddr, router: axum::Router) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(bound)
}

/// How a binary writes its logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines; colours only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields), for log
    /// shippers.
    Json,
}

/// Logs to stderr as text with `RUST_LOG` (default `info`). Safe to call twice.
pub fn init_logging() {
    init_logging_as(LogFormat::Text);
}

/// Logs to stderr in `format` with `RUST_LOG` (default `info`). Colour codes are
/// written only when stderr is a terminal, never into a file or a pipe. Safe to
/// call twice (the first call wins).
pub fn init_logging_as(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// Rate limit for repeated log lines (pure: time is an argument): at most one
/// line per key (a session and a cause, say) per interval, carrying how many
/// were suppressed since the last one. One flooding client wrote ~10,700 WARN
/// lines a minute before. Keys are bounded: past `max_keys`, keys whose
/// interval has passed are forgotten, and if none has, the event is logged
/// without being tracked (a log line is never lost to the bound).
#[derive(Debug)]
pub struct LogLimiter<K> {
    interval: std::time::Duration,
    max_keys: usize,
    last: std::collections::HashMap<K, (std::time::Instant, u64)>,
}

impl<K: std::hash::Hash + Eq + Clone> LogLimiter<K> {
    /// One line per key per `interval`, tracking at most `max_keys` keys.
    pub fn new(interval: std::time::Duration, max_keys: usize) -> Self {
        Self {
            interval,
            max_keys: max_keys.max(1),
            last: std::collections::HashMap::new(),
        }
    }

    /// An event for `key` at `now`: `Some(suppressed)` when it should be logged
    /// (with the number of events of this key not logged since the last line),
    /// `None` when it is suppressed.
    pub fn handle_event(&mut self, now: std::time::Instant, key: &K) -> Option<u64> {
        if let Some((at, suppressed)) = self.last.get_mut(key) {
            if now.saturating_duration_since(*at) < self.interval {
                *suppressed += 1;
                return None;
            }
            let n = *suppressed;
            *at = now;
            *suppressed = 0;
            return Some(n);
        }
        if self.last.len() >= self.max_keys {
            let interval = self.interval;
            self.last
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < interval);
        }
        if self.last.len() < self.max_keys {
            self.last.insert(key.clone(), (now, 0));
        }
        Some(0)
    }
}

/// Checks that an optional file setting names a readable file.
pub fn check_file(name: &str, path: Option<&PathBuf>) -> Result<(), ConfigError> {
    if let Some(p) = path {
        std::fs::metadata(p).map_err(|e| {
            ConfigError::Invalid(format!("{name}: cannot read {}: {e}", p.display()))
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, CommandFactory, FromArgMatches, Parser};

    #[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        #[arg(long, env = "SKYLANE_OPS_TEST_A", default_value_t = 1)]
        a: u32,
        #[arg(long, default_value_t = 2)]
        b: u32,
    }

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        demo: Demo,
    }

    #[test]
    fn process_metrics_are_scraped_under_their_standard_names() {
        let mut r = Registry::default();
        ProcessMetrics::register(&mut r);
        // Burn a little CPU so the counter cannot be zero.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        let cpu = sample(&text, "process_cpu_seconds_total").expect(&text);
        assert!(cpu > 0.0, "{text}");
        let rss = sample(&text, "process_resident_memory_bytes").expect(&text);
        assert!(rss > 1e5, "{text}");
        assert_eq!(
            sample("a_total{kind=\"x\"} 3\n", "a_total{kind=\"x\"}"),
            Some(3.0)
        );
        assert_eq!(sample("a_total_more 3\n", "a_total"), None);
    }

    fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn state_changing_admin_routes_need_the_token_reads_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("admin.token");
        std::fs::write(&f, "0123456789abcdef-secret\n").unwrap();
        let auth = AdminAuth::from_file(Some(&f)).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let addr = rt.block_on(async {
            let router = admin_router(Arc::new(Registry::default()))
                .route("/status", axum::routing::get(|| async { "up" }))
                .route("/drain", axum::routing::post(|| async { "draining" }));
            serve_admin("127.0.0.1:0".parse().unwrap(), auth.protect(router))
                .await
                .unwrap()
        });
        let handle = std::thread::spawn(move || {
            rt.block_on(async { tokio::time::sleep(std::time::Duration::from_secs(5)).await })
        });
        assert!(http(addr, "GET", "/metrics", None).starts_with("HTTP/1.1 200"));
        assert!(http(addr, "GET", "/status", None).starts_with("HTTP/1.1 200"));
        let refused = http(addr, "POST", "/drain", None);
        assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
        let wrong = http(addr, "POST", "/drain", Some("guess"));
        assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
        let ok = http(addr, "POST", "/drain", Some("0123456789abcdef-secret"));
        assert!(
            ok.starts_with("HTTP/1.1 200") && ok.ends_with("draining"),
            "{ok}"
        );
        drop(handle);

        // Without a token, only loopback.
        let open = AdminAuth::from_file(None).unwrap();
        assert!(open.check("127.0.0.1:9433".parse().unwrap()).is_ok());
        let err = open.check("0.0.0.0:9433".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("admin_token"), "{err}");
        std::fs::write(&f, "short\n").unwrap();
        assert!(AdminAuth::from_file(Some(&f)).is_err());
    }

    #[test]
    fn repeated_log_lines_are_limited_per_key_and_counted() {
        let t0 = std::time::Instant::now();
        let s = std::time::Duration::from_secs(1);
        let mut l = LogLimiter::new(10 * s, 2);
        assert_eq!(l.handle_event(t0, &"a"), Some(0));
        for i in 1..=50 {
            assert_eq!(l.handle_event(t0 + s * i / 10, &"a"), None);
        }
        assert_eq!(l.handle_event(t0, &"b"), Some(0), "another key is its own");
        assert_eq!(
            l.handle_event(t0 + 10 * s, &"a"),
            Some(50),
            "with the count"
        );
        // Full: a third key is logged untracked until old keys expire.
        assert_eq!(l.handle_event(t0 + s, &"c"), Some(0));
        assert_eq!(l.handle_event(t0 + s, &"c"), Some(0));
        assert_eq!(l.handle_event(t0 + 30 * s, &"c"), Some(0));
        assert_eq!(
            l.handle_event(t0 + 31 * s, &"c"),
            None,
            "tracked once room was made"
        );
    }

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.toml");
        std::fs::write(&f, "a = 5\nb = 6\n").unwrap();
        let m = Cli::command()
            .try_get_matches_from(["x", "--b", "9"])
            .unwrap();
        let cli = Cli::from_arg_matches(&m).unwrap();
        let c = merge(&cli.demo, &m, Some(&f)).unwrap();
        assert_eq!(c, Demo { a: 5, b: 9 });
        std::fs::write(&f, "c = 1\n").unwrap();
        let err = merge(&cli.demo, &m, Some(&f)).unwrap_err().to_string();
        assert!(err.contains("unknown key `c`"), "{err}");
        // A wrong type names the file, the line and the key.
        std::fs::write(&f, "# comment\nb = 1\na = \"lots\"\n").unwrap();
        let m = Cli::command().try_get_matches_from(["x"]).unwrap();
        let err = merge(&cli.demo, &m, Some(&f)).unwrap_err().to_string();
        assert!(
            err.contains("x.toml: line 3: key `a`: invalid type"),
            "{err}"
        );
        assert!(check_file("geoip", Some(&dir.path().join("nope"))).is_err());
        assert!(check_file("geoip", Some(&f)).is_ok());
    }
}
