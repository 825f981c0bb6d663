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
    /// On a free port; a port taken between choosing and binding (redis-server exits) is
    /// replaced by another.
    pub async fn start(dir: &Path) -> Redis {
        let mut r = Redis {
            port: free_port(),
            dir: dir.to_path_buf(),
            child: None,
        };
        for _ in 0..5 {
            if r.launch().await {
                return r;
            }
            r.stop();
            r.port = free_port();
        }
        panic!("redis-server did not start on any of 5 ports");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it again (same port and data folder) after `stop`.
    pub async fn restart(&mut self) {
        assert!(self.launch().await, "redis-server did not start again");
    }

    /// Runs redis-server on `self.port`; false when it is not listening within 10 s.
    async fn launch(&mut self) -> bool {
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
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let end = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < end {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
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
    /// The proxy and admin listeners bind port 0 and their addresses are read from the started
    /// line of the replica's log, so no other test can take them between choosing and binding;
    /// the auth port is chosen by the caller (it is in the links) and a start that finds it taken
    /// is tried again.
    pub async fn start(
        dir: &Path,
        name: &str,
        body: &str,
        public_url: &str,
        auth_port: u16,
    ) -> Replica {
        let text = format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{}\"\n[auth]\nlisten = \"127.0.0.1:{auth_port}\"\npublic_url = \"{public_url}\"\n{body}",
            crate::support::ADMIN_TOKEN
        );
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        let log_path = dir.join(format!("{name}.log"));
        for attempt in 1..=5 {
            let log = std::fs::File::create(&log_path).unwrap();
            let mut child = Command::new(env!("CARGO_BIN_EXE_authsidecar"))
                .arg("run")
                .arg("-c")
                .arg(&config)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            match started(&mut child, &log_path, Duration::from_secs(15)).await {
                Ok(at) => {
                    return Replica {
                        proxy: at.proxy,
                        admin: at.admin,
                        auth: ([127, 0, 0, 1], auth_port).into(),
                        child: Some(child),
                        config,
                    }
                }
                Err(Exit::Bind(_)) if attempt < 5 => {}
                Err(e) => panic!("replica {name} {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        unreachable!()
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

/// Where a started sidecar process listens, from the `authsidecar started` line of its log.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub auth: Option<SocketAddr>,
}

/// Why a sidecar process did not start; each carries its log.
#[derive(Debug)]
pub enum Exit {
    /// It exited because a listener's port was taken (a port chosen in advance went to
    /// something else meanwhile): worth another try.
    Bind(String),
    Exited(String),
    Timeout(String),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (Exit::Bind(t) | Exit::Exited(t) | Exit::Timeout(t)) = self;
        f.write_str(t)
    }
}

/// Waits until the process `child` (writing its log, at `info` or finer for the `authsidecar`
/// target, to `log`) has started, and reads its listeners' addresses from the log, so a test can
/// give it port 0 everywhere.
pub async fn started(child: &mut Child, log: &Path, within: Duration) -> Result<Started, Exit> {
    let end = tokio::time::Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("authsidecar started")) {
            let auth = logged(line, "auth_addr=");
            return Ok(Started {
                proxy: parse_addr(logged(line, "proxy_addr="), line),
                admin: parse_addr(logged(line, "admin_addr="), line),
                auth: auth
                    .strip_prefix("Some(")
                    .map(|a| parse_addr(a.trim_end_matches(')'), line)),
            });
        }
        if let Ok(Some(status)) = child.try_wait() {
            let text = format!("exited ({status}) before it started:\n{text}");
            return Err(if text.contains("cannot listen on") {
                Exit::Bind(text)
            } else {
                Exit::Exited(text)
            });
        }
        if tokio::time::Instant::now() > end {
            let _ = child.kill();
            return Err(Exit::Timeout(format!(
                "did not start within {within:?}:\n{text}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value after `key` in a log line (up to the next space).
fn logged<'a>(line: &'a str, key: &str) -> &'a str {
    let at = line
        .find(key)
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + key.len();
    line[at..].split_whitespace().next().unwrap_or_default()
}

fn parse_addr(value: &str, line: &str) -> SocketAddr {
    value
        .parse()
        .unwrap_or_else(|e| panic!("{value} in {line}: {e}"))
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
