//! [`LocalEtcd`]: an etcd server process on free loopback ports with a
//! temporary data directory, for tests and benchmarks of the etcd store.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use etcd_client::Client;

use crate::{ControlError, EtcdConfig};

/// An etcd server process on free loopback ports with a temporary data dir, for
/// tests. Stopped (and its data removed) when dropped.
#[derive(Debug)]
pub struct LocalEtcd {
    child: Option<tokio::process::Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LocalEtcd {
    /// Starts `etcd` (found on `PATH`, or at `$ETCD_BIN`) and waits until it answers.
    pub async fn start() -> Result<Self, ControlError> {
        let dir = tempfile::tempdir().map_err(|e| ControlError::Unavailable(e.to_string()))?;
        let io = |e: std::io::Error| ControlError::Unavailable(e.to_string());
        let mut me = Self {
            child: None,
            dir,
            client_port: free_port().map_err(io)?,
            peer_port: free_port().map_err(io)?,
        };
        me.resume().await?;
        Ok(me)
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// A config for this server under `prefix`.
    pub fn config(&self, prefix: &str) -> EtcdConfig {
        EtcdConfig {
            endpoints: vec![self.endpoint()],
            prefix: prefix.into(),
            timeout: Duration::from_secs(2),
        }
    }

    /// Kills the process (the data dir stays, so [`LocalEtcd::resume`] brings
    /// the same cluster back).
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Starts the process again on the same ports and data.
    pub async fn resume(&mut self) -> Result<(), ControlError> {
        let bin = std::env::var_os("ETCD_BIN").map_or_else(|| PathBuf::from("etcd"), PathBuf::from);
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = tokio::process::Command::new(&bin)
            .arg("--name")
            .arg("skylane-test")
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("skylane-test={peer}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                ControlError::Unavailable(format!(
                    "cannot start {} ({e}); install Debian's etcd-server",
                    bin.display()
                ))
            })?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Ok(mut c)) = tokio::time::timeout(
                Duration::from_secs(1),
                Client::connect([client.as_str()], None),
            )
            .await
            {
                if c.status().await.is_ok() {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ControlError::Unavailable(
                    "etcd did not come up in 20 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
