//! A real Redis server on a free port, and sidecar processes (the built binary) sharing it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use super::free_port;

pub async fn wait_port(addr: SocketAddr, within: Duration) -> bool {
    let end = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < end {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// redis-server with an append-only file (fsync always), so a restart keeps the data.
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Redis {
    pub async fn start(dir: &Path) -> Redis {
        let mut r = Redis {
            port: free_port(),
            dir: dir.to_path_buf(),
            child: None,
        };
        r.restart().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it again (same port and data folder) after `stop`.
    pub async fn restart(&mut self) {
        let bin = ["/usr/bin/redis-server", "/usr/sbin/redis-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("redis-server is not installed: run scripts/setup.sh");
        std::fs::create_dir_all(&self.dir).unwrap();
        let child = Command::new(bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        assert!(
            wait_port(([127, 0, 0, 1], self.port).into(), Duration::from_secs(10)).await,
            "redis-server did not start"
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One sidecar process.
pub struct Replica {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub auth: SocketAddr,
    child: Option<Child>,
    pub config: PathBuf,
}

impl Replica {
    /// Starts `authsidecar run` with `body` (routes, profiles, store, …) plus its own listeners;
    /// `public_url` is the auth URL every replica puts in its links (one name behind a balancer).
    pub async fn start(
        dir: &Path,
        name: &str,
        body: &str,
        public_url: &str,
        auth_port: u16,
    ) -> Replica {
        let (proxy, admin) = (free_port(), free_port());
        let text = format!(
            "[proxy]\nlisten = \"127.0.0.1:{proxy}\"\nworkers = 1\n[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"{}\"\n[auth]\nlisten = \"127.0.0.1:{auth_port}\"\npublic_url = \"{public_url}\"\n{body}",
            crate::support::ADMIN_TOKEN
        );
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_authsidecar"))
            .arg("run")
            .arg("-c")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let r = Replica {
            proxy: ([127, 0, 0, 1], proxy).into(),
            admin: ([127, 0, 0, 1], admin).into(),
            auth: ([127, 0, 0, 1], auth_port).into(),
            child: Some(child),
            config,
        };
        assert!(
            wait_port(r.proxy, Duration::from_secs(15)).await,
            "replica {name} did not start"
        );
        r
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}
