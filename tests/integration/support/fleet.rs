//! A real Redis server (and a Redis Cluster), and sidecar processes (the built binary) sharing it.
//! Ports: see `support::proc` (Redis on a spare port, started again elsewhere if that port turns
//! out taken; every sidecar listener on port 0, read back from the process's log).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::proc::{spare_port, tool, until_ready, Proc, Ready};
use super::wait::wait_for;

/// How many spare ports a Redis start tries before giving up.
const PORT_TRIES: usize = 10;

/// What redis-server prints once it listens and has loaded its data.
const REDIS_READY: &str = "Ready to accept connections";
/// What redis-server prints before exiting when its port is taken.
const REDIS_PORT_TAKEN: &str = "Address already in use";

/// redis-server with an append-only file (fsync always), so a restart keeps the data.
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Proc>,
    starts: usize,
}

impl Redis {
    /// On a spare port (started again on another one if that port turns out taken).
    pub async fn start(dir: &Path) -> Redis {
        let mut r = Redis {
            port: 0,
            dir: dir.to_path_buf(),
            child: None,
            starts: 0,
        };
        let mut taken = Vec::new();
        for _ in 0..PORT_TRIES {
            r.port = spare_port(0);
            match r.launch().await {
                Ready::Up => return r,
                Ready::PortTaken(_) => taken.push(r.port),
            }
        }
        panic!("redis-server found each of {PORT_TRIES} spare ports taken: {taken:?}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it again (same port and data folder) after `stop`. The port is below the ephemeral
    /// range, so only a process that names it could have taken it meanwhile; that fails here.
    pub async fn restart(&mut self) {
        if let Ready::PortTaken(out) = self.launch().await {
            panic!(
                "redis-server could not start again: port {} was taken meanwhile:\n{out}",
                self.port
            );
        }
    }

    /// Runs redis-server on `self.port` until it prints that it is ready (or exits).
    async fn launch(&mut self) -> Ready {
        let bin = tool("redis-server");
        std::fs::create_dir_all(&self.dir).unwrap();
        self.starts += 1;
        let out = self
            .dir
            .join(format!("redis-{}-{}.log", self.port, self.starts));
        let log = std::fs::File::create(&out).unwrap();
        let mut child = Proc::spawn(
            "redis-server",
            Command::new(bin)
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
                .args(["--daemonize", "no", "--loglevel", "notice"])
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        let ready = until_ready(
            &mut child,
            &[&out],
            REDIS_READY,
            REDIS_PORT_TAKEN,
            Duration::from_secs(15),
        )
        .await;
        if matches!(ready, Ready::Up) {
            self.child = Some(child);
        }
        ready
    }

    pub fn stop(&mut self) {
        self.child.take();
    }
}

/// One sidecar process.
pub struct Replica {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub auth: SocketAddr,
    child: Option<Proc>,
    pub config: PathBuf,
}

impl Replica {
    /// Starts `authsidecar run` with `body` (routes, profiles, store, …) plus its own listeners,
    /// all on port 0 (their addresses are read from the started line of the replica's log).
    /// `public_url` is the auth URL every replica puts in its links (one name behind a balancer);
    /// None: this replica's own auth listener (`http://127.0.0.1:0`, the port it is given).
    pub async fn start(dir: &Path, name: &str, body: &str, public_url: Option<&str>) -> Replica {
        Replica::start_with(dir, name, body, public_url, &[], &[]).await
    }

    /// `start`, with environment overrides (`AUTHSIDECAR__PROXY__…`) for keys of the sections
    /// `start` writes itself, and a launcher the command runs under (`["chrt", "--idle", "0"]`;
    /// it must exec the command, so the process id is the sidecar's).
    pub async fn start_with(
        dir: &Path,
        name: &str,
        body: &str,
        public_url: Option<&str>,
        env: &[(&str, &str)],
        launcher: &[&str],
    ) -> Replica {
        let text = format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{}\"\n[auth]\nlisten = \"127.0.0.1:0\"\npublic_url = \"{}\"\n{body}",
            crate::support::ADMIN_TOKEN,
            public_url.unwrap_or("http://127.0.0.1:0"),
        );
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        let log_path = dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let bin = env!("CARGO_BIN_EXE_authsidecar");
        let mut command = match launcher.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = Proc::spawn(
            &format!("authsidecar replica {name}"),
            command
                .arg("run")
                .arg("-c")
                .arg(&config)
                .env("RUST_LOG", "info")
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(log),
        );
        let at = started(&mut child, &log_path, Duration::from_secs(15)).await;
        Replica {
            proxy: at.proxy,
            admin: at.admin,
            auth: at
                .auth
                .unwrap_or_else(|| panic!("replica {name} started without its auth listener")),
            child: Some(child),
            config,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Its exit status once it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.child.take();
    }
}

/// Where a started sidecar process listens, from the `authsidecar started` line of its log.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub auth: Option<SocketAddr>,
}

/// Waits until the process `child` (writing its log, at `info` or finer for the `authsidecar`
/// target, to `log`) has started, and reads its listeners' addresses from the log, so a test can
/// give it port 0 everywhere. A process that exits first, or does not start within `within`,
/// fails the test with its log.
pub async fn started(child: &mut Proc, log: &Path, within: Duration) -> Started {
    let name = child.name.clone();
    let line = wait_for(
        &format!("the \"authsidecar started\" line of {name}"),
        within,
        || {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("authsidecar started")) {
                return std::future::ready(Ok(line.to_string()));
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{name} exited ({status}) before it started:\n{text}");
            }
            std::future::ready(Err(format!("its log so far:\n{text}")))
        },
    )
    .await;
    let auth = logged(&line, "auth_addr=");
    Started {
        proxy: parse_addr(logged(&line, "proxy_addr="), &line),
        admin: parse_addr(logged(&line, "admin_addr="), &line),
        auth: auth
            .strip_prefix("Some(")
            .map(|a| parse_addr(a.trim_end_matches(')'), &line)),
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

/// A Redis Cluster of `n` masters (no replicas) on spare ports, created with `redis-cli --cluster`.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    nodes: Vec<Proc>,
}

impl RedisCluster {
    pub async fn start(dir: &Path, n: usize) -> RedisCluster {
        std::fs::create_dir_all(dir).unwrap();
        let server = tool("redis-server");
        let cli = tool("redis-cli");
        let mut ports = Vec::new();
        let mut nodes = Vec::new();
        while nodes.len() < n {
            let mut tries = 0;
            let (port, node) = loop {
                tries += 1;
                // The cluster bus listens on port + 10000: both below the ephemeral range.
                let p = spare_port(10_000);
                let out = dir.join(format!("node-{p}.log"));
                let log = std::fs::File::create(&out).unwrap();
                let mut node = Proc::spawn(
                    "redis-server",
                    Command::new(&server)
                        .args(["--port", &p.to_string(), "--bind", "127.0.0.1"])
                        .args(["--cluster-enabled", "yes"])
                        .args(["--cluster-config-file", &format!("nodes-{p}.conf")])
                        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                        .args(["--loglevel", "notice"])
                        .arg("--dir")
                        .arg(dir)
                        .stdout(log.try_clone().unwrap())
                        .stderr(log),
                );
                match until_ready(
                    &mut node,
                    &[&out],
                    REDIS_READY,
                    REDIS_PORT_TAKEN,
                    Duration::from_secs(15),
                )
                .await
                {
                    Ready::Up => break (p, node),
                    Ready::PortTaken(text) if tries >= PORT_TRIES => {
                        panic!("redis-server (cluster node) found {tries} spare ports taken; the last:\n{text}")
                    }
                    Ready::PortTaken(_) => {}
                }
            };
            ports.push(port);
            nodes.push(node);
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new(&cli)
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for p in &ports {
            wait_for(
                &format!("cluster_state:ok on the Redis Cluster node on port {p}"),
                Duration::from_secs(15),
                || {
                    let info = Command::new(&cli)
                        .args(["-p", &p.to_string(), "cluster", "info"])
                        .output()
                        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                        .unwrap_or_else(|e| e.to_string());
                    std::future::ready(if info.contains("cluster_state:ok") {
                        Ok(())
                    } else {
                        Err(info)
                    })
                },
            )
            .await;
        }
        RedisCluster { ports, nodes }
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
