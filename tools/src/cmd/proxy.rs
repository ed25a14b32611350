//! `skylane netsim-proxy`: the UDP impairment proxy as a command.
//!
//! While it runs it reads commands from standard input, one per line:
//! `partition`, `heal`, `spike EXTRA DURATION` (e.g. `spike 200ms 5s`),
//! `loss RATE` (e.g. `loss 5%`), `latency DURATION`, `jitter DURATION`, `stats`,
//! `quit`. It stops on `quit`, Ctrl-C or after `--duration`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use skylane_netsim::{LinkParams, Loss, ProxyConfig, ProxyControl, UdpProxy};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Options of `skylane netsim-proxy`.
#[derive(Debug, Args)]
pub(crate) struct ProxyCmd {
    /// Address clients send to.
    #[arg(long, default_value = "127.0.0.1:4434")]
    listen: SocketAddr,
    /// Address to forward to (a relay or origin).
    #[arg(long)]
    upstream: SocketAddr,
    /// One-way delay added in each direction.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// Delay varies uniformly within latency ± jitter.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    jitter: Duration,
    /// Loss rate in each direction, as a percentage (`2%`) or a fraction (`0.02`).
    #[arg(long, default_value = "0%", value_parser = parse_rate)]
    loss: f64,
    /// Mean loss burst length in packets (1 = independent loss).
    #[arg(long, default_value_t = 1.0)]
    burst: f64,
    /// Bandwidth per direction, e.g. `10mbit`, `512kbit` (unlimited when absent).
    #[arg(long, value_parser = parse_bandwidth)]
    bandwidth: Option<u64>,
    /// Allow jitter to reorder packets.
    #[arg(long)]
    reorder: bool,
    /// Seed for loss and jitter.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop after this long (runs until Ctrl-C or `quit` when absent).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
}

/// Parses `2%`, `0.5 %` or `0.02` into a fraction in 0..=1.
pub(crate) fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|x| x / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("{s:?} is not a rate (e.g. 2% or 0.02)"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{s:?} is outside 0%..100%"));
    }
    Ok(v)
}

/// Parses `10mbit`, `512kbit`, `1gbit` or a plain number of bits per second.
pub(crate) fn parse_bandwidth(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.trim_end_matches("/s").trim_end_matches("ps");
    let (num, mult) = if let Some(n) = t.strip_suffix("gbit") {
        (n, 1_000_000_000.0)
    } else if let Some(n) = t.strip_suffix("mbit") {
        (n, 1_000_000.0)
    } else if let Some(n) = t.strip_suffix("kbit") {
        (n, 1_000.0)
    } else {
        (t.strip_suffix("bit").unwrap_or(t), 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a bandwidth (e.g. 10mbit)"))?;
    if v <= 0.0 {
        return Err(format!("{s:?}: bandwidth must be positive"));
    }
    Ok((v * mult) as u64)
}

impl ProxyCmd {
    fn link(&self) -> LinkParams {
        LinkParams {
            latency: self.latency,
            jitter: self.jitter,
            loss: if self.loss == 0.0 {
                Loss::None
            } else if self.burst > 1.0 {
                Loss::bursty(self.loss, self.burst)
            } else {
                Loss::Independent(self.loss)
            },
            bandwidth_bps: self.bandwidth,
            reorder: self.reorder,
            ..LinkParams::default()
        }
    }

    pub(crate) fn run(self) -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?;
        rt.block_on(self.serve())
    }

    async fn serve(self) -> anyhow::Result<()> {
        let mut config = ProxyConfig::symmetric(self.listen, self.upstream, self.link());
        config.seed = self.seed;
        let proxy = UdpProxy::start(config)
            .await
            .with_context(|| format!("binding {}", self.listen))?;
        let control = proxy.control();
        eprintln!(
            "netsim-proxy: {} -> {} ({:?} ± {:?}, loss {:.2}%); commands: partition, heal, spike EXTRA DUR, loss RATE, latency DUR, jitter DUR, stats, quit",
            proxy.local_addr(),
            self.upstream,
            self.latency,
            self.jitter,
            self.loss * 100.0
        );
        let deadline = async {
            match self.duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let commands = async {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match apply_command(&control, &line) {
                    Ok(Some(reply)) => println!("{reply}"),
                    Ok(None) => return,
                    Err(e) => eprintln!("error: {e}"),
                }
            }
            // Standard input closed (for example, run in the background): keep serving.
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = deadline => {}
            () = commands => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        println!("{}", serde_json::to_string(&control.stats())?);
        Ok(())
    }
}

/// Applies one control command; `Ok(None)` means quit.
pub(crate) fn apply_command(control: &ProxyControl, line: &str) -> anyhow::Result<Option<String>> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let dur = |s: &str| humantime::parse_duration(s).with_context(|| format!("bad duration {s:?}"));
    match words.as_slice() {
        [] => Ok(Some(String::new())),
        ["quit"] | ["exit"] => Ok(None),
        ["partition"] => {
            control.partition();
            Ok(Some("partitioned".into()))
        }
        ["heal"] => {
            control.heal();
            Ok(Some("healed".into()))
        }
        ["spike", extra, duration] => {
            control.spike(dur(extra)?, dur(duration)?);
            Ok(Some(format!("spike +{extra} for {duration}")))
        }
        ["loss", rate] => {
            let r = parse_rate(rate).map_err(anyhow::Error::msg)?;
            control.update(|p| {
                p.loss = if r == 0.0 {
                    Loss::None
                } else {
                    Loss::Independent(r)
                }
            });
            Ok(Some(format!("loss {:.2}%", r * 100.0)))
        }
        ["latency", d] => {
            let d = dur(d)?;
            control.update(|p| p.latency = d);
            Ok(Some(format!("latency {d:?}")))
        }
        ["jitter", d] => {
            let d = dur(d)?;
            control.update(|p| p.jitter = d);
            Ok(Some(format!("jitter {d:?}")))
        }
        ["stats"] => Ok(Some(serde_json::to_string(&control.stats())?)),
        _ => bail!("unknown command {line:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_bandwidths_parse() {
        assert_eq!(parse_rate("2%"), Ok(0.02));
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        assert!(parse_rate("150%").is_err());
        assert!(parse_rate("lots").is_err());
        assert_eq!(parse_bandwidth("10mbit"), Ok(10_000_000));
        assert_eq!(parse_bandwidth("512kbit/s"), Ok(512_000));
        assert_eq!(parse_bandwidth("1Gbit"), Ok(1_000_000_000));
        assert_eq!(parse_bandwidth("9600"), Ok(9600));
        assert!(parse_bandwidth("fast").is_err());
        assert!(parse_bandwidth("0mbit").is_err());
    }

    #[tokio::test]
    async fn commands_change_the_running_proxy() {
        let proxy = UdpProxy::start(ProxyConfig::symmetric(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:9".parse().unwrap(),
            LinkParams::default(),
        ))
        .await
        .unwrap();
        let c = proxy.control();
        assert_eq!(
            apply_command(&c, "latency 30ms").unwrap().unwrap(),
            "latency 30ms"
        );
        assert_eq!(c.params().latency, Duration::from_millis(30));
        apply_command(&c, "loss 5%").unwrap();
        assert_eq!(c.params().loss, Loss::Independent(0.05));
        apply_command(&c, "partition").unwrap();
        apply_command(&c, "spike 100ms 1s").unwrap();
        assert!(apply_command(&c, "stats")
            .unwrap()
            .unwrap()
            .contains("\"received\""));
        assert!(apply_command(&c, "quit").unwrap().is_none());
        assert!(apply_command(&c, "explode").is_err());
        assert!(apply_command(&c, "spike soon").is_err());
    }
}
