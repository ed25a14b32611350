//! `skylane status URL` and `skylane drain URL`: an operator's view of a relay
//! or an origin through its admin endpoint.

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

    fn call(&self, method: &str, path: &str) -> anyhow::Result<String> {
        let url = self.url(path);
        let auth = self.token()?.map(|t| format!("Bearer {t}"));
        let response = match method {
            "POST" => {
                let mut req = ureq::post(&url);
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.send_empty()
            }
            _ => {
                let mut req = ureq::get(&url);
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.call()
            }
        };
        match response {
            Ok(mut r) => r
                .body_mut()
                .read_to_string()
                .with_context(|| format!("reading the answer of {url}")),
            Err(ureq::Error::StatusCode(401)) => {
                anyhow::bail!("{url}: refused, the admin token is missing or wrong (--admin-token)")
            }
            Err(e) => Err(anyhow::anyhow!("{method} {url}: {e}")),
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
