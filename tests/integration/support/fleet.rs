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

/// A Redis Cluster of `n` masters (no replicas) on free ports, created with `redis-cli --cluster`.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Child>,
}

/// A port whose cluster bus port (+10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 55000 && std::net::TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
        // Ask for one in a lower range explicitly.
        for candidate in (20000u16..30000).step_by(97) {
            let c = candidate + (std::process::id() % 97) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", c)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", c + 10000)).is_ok()
            {
                return c;
            }
        }
    }
}

impl RedisCluster {
    pub async fn start(dir: &Path, n: usize) -> RedisCluster {
        std::fs::create_dir_all(dir).unwrap();
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < n {
            let p = cluster_port();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let mut children = Vec::new();
        for p in &ports {
            let child = Command::new("redis-server")
                .args(["--port", &p.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{p}.conf")])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is not installed: run scripts/setup.sh");
            children.push(child);
        }
        for p in &ports {
            assert!(wait_port(([127, 0, 0, 1], *p).into(), Duration::from_secs(10)).await);
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        // Wait until every node agrees the cluster is up.
        for _ in 0..200 {
            let ok = ports.iter().all(|p| {
                Command::new("redis-cli")
                    .args(["-p", &p.to_string(), "cluster", "info"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
                    .unwrap_or(false)
            });
            if ok {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        RedisCluster { ports, children }
    }

    /// The `[store]` cluster list.
    pub fn seeds(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("\"redis://127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
