//! `skylane status URL`, `skylane drain URL` and `skylane world
//! create|list|end URL`: an operator's view of a relay or an origin through its
//! admin endpoint.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

/// Where the admin endpoint is and how to authenticate to it.
#[derive(Debug, Args)]
pub(crate) struct AdminTarget {
    /// The admin endpoint, e.g. `http://127.0.0.1:9433` (`http://` may be left out).
    url: String,
    /// File holding the endpoint's bearer token (its `admin_token`).
    #[arg(long, env = "SKYLANE_ADMIN_TOKEN")]
    admin_token: Option<PathBuf>,
}

impl AdminTarget {
    fn url(&self, path: &str) -> String {
        let base = self.url.trim_end_matches('/');
        if base.starts_with("http://") || base.starts_with("https://") {
            format!("{base}{path}")
        } else {
            format!("http://{base}{path}")
        }
    }

    fn token(&self) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.admin_token else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading admin token {}", path.display()))?;
        Ok(Some(
            text.lines().next().unwrap_or_default().trim().to_owned(),
        ))
    }

    pub(crate) fn call(&self, method: &str, path: &str) -> anyhow::Result<String> {
        self.call_with(method, path, None)
    }

    pub(crate) fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<String> {
        let url = self.url(path);
        let auth = self.token()?.map(|t| format!("Bearer {t}"));
        // Error statuses carry a JSON explanation: read it rather than fail blind.
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build();
        let agent = ureq::Agent::new_with_config(config);
        let response = match method {
            "POST" => {
                let mut req = agent.post(&url);
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                match body {
                    Some(b) => req
                        .header("Content-Type", "application/json")
                        .send(b.to_string()),
                    None => req.send_empty(),
                }
            }
            "DELETE" => {
                let mut req = agent.delete(&url);
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.call()
            }
            _ => {
                let mut req = agent.get(&url);
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.call()
            }
        };
        let mut r = response.map_err(|e| anyhow::anyhow!("{method} {url}: {e}"))?;
        let status = r.status().as_u16();
        let text = r
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading the answer of {url}"))?;
        match status {
            200..=299 => Ok(text),
            401 => {
                anyhow::bail!("{url}: refused, the admin token is missing or wrong (--admin-token)")
            }
            404 if text.is_empty() => {
                anyhow::bail!("{method} {url}: not found (is this an origin with a control plane?)")
            }
            _ => anyhow::bail!("{method} {url}: HTTP {status}: {}", text.trim()),
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct StatusCmd {
    #[command(flatten)]
    target: AdminTarget,
    /// Print the endpoint's JSON as it is.
    #[arg(long)]
    json: bool,
}

impl StatusCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let text = self.target.call("GET", "/status")?;
        let v: serde_json::Value = serde_json::from_str(&text).with_context(|| {
            format!("{} did not answer JSON: {text}", self.target.url("/status"))
        })?;
        if self.json {
            println!("{v}");
        } else {
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Ok(())
    }
}

#[derive(Debug, Args)]
pub(crate) struct DrainCmd {
    #[command(flatten)]
    target: AdminTarget,
}

impl DrainCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let text = self.target.call("POST", "/drain")?;
        print!("{text}");
        Ok(())
    }
}

/// Bans on the control plane, through an origin's admin endpoint.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum BanCmd {
    /// Ban a subject from every relay for a while.
    Add(BanAdd),
    /// Every ban, with until when (Unix seconds) and why.
    List(BanTarget),
    /// Lift a subject's ban.
    Remove(BanSubject),
}

#[derive(Debug, Args)]
pub(crate) struct BanAdd {
    #[command(flatten)]
    target: AdminTarget,
    /// The subject (the player id its tokens carry).
    #[arg(long)]
    sub: String,
    /// How long, e.g. 1h, 7d.
    #[arg(long = "for", value_parser = humantime::parse_duration)]
    duration: std::time::Duration,
    /// Why (the refused client is told).
    #[arg(long, default_value = "")]
    reason: String,
}

#[derive(Debug, Args)]
pub(crate) struct BanTarget {
    #[command(flatten)]
    target: AdminTarget,
}

#[derive(Debug, Args)]
pub(crate) struct BanSubject {
    #[command(flatten)]
    target: AdminTarget,
    /// The subject.
    sub: String,
}

impl BanCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let text = match self {
            Self::Add(c) => {
                let body = serde_json::json!({
                    "sub": c.sub,
                    "for_secs": c.duration.as_secs(),
                    "reason": c.reason,
                });
                c.target.call_with("POST", "/bans", Some(&body))?
            }
            Self::List(c) => c.target.call("GET", "/bans")?,
            Self::Remove(c) => c.target.call("DELETE", &format!("/bans/{}", c.sub))?,
        };
        println!("{}", text.trim());
        Ok(())
    }
}

/// Worlds on the control plane, through an origin's admin endpoint.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum WorldCmd {
    /// Create a world: placed on an origin with room, answered once it is owned.
    Create(WorldCreate),
    /// List every world with its owner, epoch, phase and result.
    List(WorldList),
    /// End a world: its owner ends the game, publishes the result and removes it.
    End(WorldArg),
    /// One world: primary, standbys, epoch, replication lag, last verified tick.
    Status(WorldArg),
    /// Move a world to its standby on purpose (drain an origin without a
    /// failover gap); asks the world's owner.
    Handover(WorldArg),
}

#[derive(Debug, Args)]
pub(crate) struct WorldCreate {
    #[command(flatten)]
    target: AdminTarget,
    /// The game (`arena`, `tictactoe`, or one the origins registered).
    #[arg(long)]
    game: String,
    /// Most players.
    #[arg(long)]
    capacity: u32,
    /// Ticks per second.
    #[arg(long, default_value_t = 10)]
    tick_hz: u32,
    /// Fewest players to start with after the start timer (default: the capacity).
    #[arg(long)]
    min_players: Option<u32>,
    /// Milliseconds to wait with the minimum before starting (0: only when full).
    #[arg(long, default_value_t = 0)]
    start_after_ms: u64,
    /// Map (game-specific).
    #[arg(long, default_value = "")]
    map: String,
    /// Preferred region.
    #[arg(long)]
    region: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct WorldList {
    #[command(flatten)]
    target: AdminTarget,
    /// Print the endpoint's JSON as it is.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct WorldArg {
    #[command(flatten)]
    target: AdminTarget,
    /// The world's id.
    id: u64,
}

/// A world's status: the record from any origin's admin, the replication
/// state from its owner's (asked directly when the first origin is not it).
fn world_status(c: &WorldArg) -> anyhow::Result<serde_json::Value> {
    let path = format!("/worlds/{}/status", c.id);
    let text = c.target.call("GET", &path)?;
    let mut v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?;
    if v.get("error").is_some() {
        anyhow::bail!("{}", v["message"].as_str().unwrap_or(&text));
    }
    if v["replication"].is_null() {
        if let Some(admin) = v["owner_admin"].as_str() {
            let owner = AdminTarget {
                url: admin.to_owned(),
                admin_token: c.target.admin_token.clone(),
            };
            if let Ok(t) = owner.call("GET", &path) {
                if let Ok(o) = serde_json::from_str::<serde_json::Value>(&t) {
                    v["replication"] = o["replication"].clone();
                }
            }
        }
    }
    Ok(v)
}

impl WorldCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Create(c) => {
                let spec = serde_json::json!({
                    "game": c.game,
                    "tick_hz": c.tick_hz,
                    "map": c.map,
                    "capacity": c.capacity,
                    "min_players": c.min_players.unwrap_or(c.capacity),
                    "start_after_ms": c.start_after_ms,
                    "region": c.region,
                });
                let text = c.target.call_with("POST", "/worlds", Some(&spec))?;
                let v: serde_json::Value =
                    serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?;
                println!(
                    "world {} ({}) placed on {}; owner {} at epoch {}",
                    v["id"],
                    v["spec"]["game"].as_str().unwrap_or("?"),
                    v["placed_on"].as_str().unwrap_or("?"),
                    v["owner"]["addr"].as_str().unwrap_or("(not yet)"),
                    v["owner"]["epoch"],
                );
                Ok(())
            }
            Self::List(c) => {
                let text = c.target.call("GET", "/worlds")?;
                let v: serde_json::Value =
                    serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?;
                if c.json {
                    println!("{v}");
                    return Ok(());
                }
                println!(
                    "{:>8}  {:<10} {:<14} {:>6}  {:<8} {:>7}  result",
                    "id", "game", "origin", "epoch", "phase", "players"
                );
                for w in v.as_array().map(Vec::as_slice).unwrap_or_default() {
                    let result = match &w["status"]["result"] {
                        serde_json::Value::Null => String::new(),
                        r => format!(
                            "{} ({})",
                            r["winner"].as_str().unwrap_or("no winner"),
                            r["reason"].as_str().unwrap_or("")
                        ),
                    };
                    println!(
                        "{:>8}  {:<10} {:<14} {:>6}  {:<8} {:>3}/{:<3}  {}",
                        w["id"],
                        w["spec"]["game"].as_str().unwrap_or("?"),
                        w["placed_on"].as_str().unwrap_or("?"),
                        w["owner"]["epoch"]
                            .as_u64()
                            .map_or("-".into(), |e| e.to_string()),
                        w["status"]["phase"].as_str().unwrap_or("?"),
                        w["status"]["players"],
                        w["spec"]["capacity"],
                        result
                    );
                }
                Ok(())
            }
            Self::End(c) => {
                let text = c.target.call("DELETE", &format!("/worlds/{}", c.id))?;
                println!("{}", text.trim());
                Ok(())
            }
            Self::Status(c) => {
                let v = world_status(&c)?;
                let rec = &v["record"];
                let rep = &v["replication"];
                println!(
                    "world {} ({}), {} {}/{}",
                    rec["id"],
                    rec["spec"]["game"].as_str().unwrap_or("?"),
                    rec["status"]["phase"].as_str().unwrap_or("?"),
                    rec["status"]["players"],
                    rec["spec"]["capacity"],
                );
                println!(
                    "primary   {} at epoch {} (placed on {})",
                    rec["owner"]["node"]
                        .as_str()
                        .unwrap_or("(none: failing over)"),
                    rec["owner"]["epoch"],
                    rec["placed_on"].as_str().unwrap_or("?"),
                );
                let assigned: Vec<&str> = rec["standbys"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
                    .unwrap_or_default();
                println!("standbys  {}", assigned.join(", "));
                if let Some(t) = rec["status"]["suspect"].as_u64() {
                    println!(
                        "SUSPECT   a standby disagreed at tick {t}: outcomes are not confirmed"
                    );
                }
                if rep.is_null() {
                    println!("replication: not reported (the owner's admin endpoint is unknown or unreachable)");
                    return Ok(());
                }
                let following: Vec<&str> = rep["standbys"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
                    .unwrap_or_default();
                println!(
                    "following {} (node@acknowledged tick)",
                    if following.is_empty() {
                        "none: unreplicated".to_string()
                    } else {
                        following.join(", ")
                    }
                );
                println!(
                    "tick {}, lag {} ticks ({} bytes), min_acks {}, last verified tick {}, diverged at {}",
                    rep["tick"],
                    rep["lag_ticks"],
                    rep["lag_bytes"],
                    rep["min_acks"],
                    rep["verified_tick"],
                    rep["diverged_at"]
                        .as_u64()
                        .map_or("-".into(), |t| t.to_string()),
                );
                Ok(())
            }
            Self::Handover(c) => {
                let v = world_status(&c)?;
                let owner = match v["owner_admin"].as_str() {
                    Some(a) => AdminTarget {
                        url: a.to_owned(),
                        admin_token: c.target.admin_token.clone(),
                    },
                    None => AdminTarget {
                        url: c.target.url.clone(),
                        admin_token: c.target.admin_token.clone(),
                    },
                };
                let text = owner.call("POST", &format!("/worlds/{}/handover", c.id))?;
                println!("{}", text.trim());
                Ok(())
            }
        }
    }
}
