//! Connection-level limits: header-read, body-read and idle timeouts.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const CFG: &str = r#"
[proxy]
header_read_timeout = "300ms"
body_read_timeout = "300ms"
idle_timeout = "600ms"

[[routes]]
prefix = "/"
upstream = "http://{echo}/echo/"
profiles = ["j"]

[profiles.j]
type = "api_key"
api_key = "jk"
[[profiles.j.fields]]
in = "payload"
key = "token"
value = "{{api_key}}"
"#;

/// Reads until EOF; returns what came and how long it took.
async fn until_closed(s: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    let r = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "connection still open after {limit:?}");
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let h = Harness::start(CFG).await;
    let mut s = TcpStream::connect(h.server.proxy_addr).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Keep trickling header bytes: the timeout counts from the first byte, not the last.
    let mut s2 = TcpStream::connect(h.server.proxy_addr).await.unwrap();
    s2.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..20 {
            // Sending slowly is the point: a header line every 50 ms.
            tokio::time::sleep(Duration::from_millis(50)).await;
            if s2.write_all(b"X-A: b\r\n").await.is_err() {
                return true;
            }
        }
        false
    });
    let (_, took) = until_closed(&mut s, Duration::from_secs(3)).await;
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert!(
        trickle.await.unwrap(),
        "the trickling client was cut off too"
    );
    assert_eq!(h.echo.echo_count(), 0);
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let h = Harness::start(CFG).await;
    let mut s = TcpStream::connect(h.server.proxy_addr).await.unwrap();
    let (out, took) = until_closed(&mut s, Duration::from_secs(3)).await;
    assert!(out.is_empty());
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

#[tokio::test]
async fn a_stalled_body_gets_408() {
    let h = Harness::start(CFG).await;
    let mut s = TcpStream::connect(h.server.proxy_addr).await.unwrap();
    s.write_all(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let out = String::from_utf8_lossy(&buf[..n]);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(out.contains("request_timeout"));
    assert_eq!(h.echo.echo_count(), 0);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_and_busy_ones_kept() {
    let h = Harness::start(CFG).await;
    let mut s = TcpStream::connect(h.server.proxy_addr).await.unwrap();
    // Requests 200 ms apart keep the connection alive past the idle timeout.
    for _ in 0..5 {
        s.write_all(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}").await.unwrap();
        let mut buf = vec![0u8; 8192];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        // Pacing is the point: each gap is under the idle timeout.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(h.echo.echo_count(), 5);
    // Then silence: closed after the idle (here: header) timeout.
    let (_, took) = until_closed(&mut s, Duration::from_secs(3)).await;
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

/// One GET on a new connection (`Connection: close`); the answer's status line, or the error.
async fn status_of_new_connection(addr: std::net::SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out))
        .await
        .map_err(|_| "no answer within 2 s".to_string())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out);
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// A sidecar's routes for a process test: everything to the mock, with a client-credentials token.
fn one_route(m: std::net::SocketAddr) -> String {
    format!(
        r#"
[[routes]]
prefix = "/"
upstream = "http://{m}/api/"
profiles = ["cc"]
[profiles.cc]
type = "oauth2_client_credentials"
token_url = "http://{m}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
"#
    )
}

/// Out of file descriptors (EMFILE on accept): the listener logs it, backs off instead of spinning,
/// and serves again once descriptors are free; a shutdown is held up neither by the back-off nor by
/// accepted connections that have sent nothing yet.
#[tokio::test]
async fn out_of_descriptors_the_listener_backs_off_and_recovers() {
    let mock = mock().await;
    let m = mock.addr;
    let dir = TempDir::new("emfile");
    let body = one_route(m);
    let mut sidecar = crate::support::fleet::Replica::start(dir.path(), "s", &body, None).await;
    assert_eq!(
        status_of_new_connection(sidecar.proxy).await.unwrap(),
        "HTTP/1.1 200 OK"
    );
    let pid = sidecar.pid().unwrap();
    // The sidecar's open descriptors, and its soft limit on them (prlimit).
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let set_open_files = |soft: usize| {
        let status = std::process::Command::new("prlimit")
            .arg(format!("--pid={pid}"))
            .arg(format!("--nofile={soft}:"))
            .status()
            .unwrap();
        assert!(status.success(), "prlimit failed");
    };
    let open = fds();
    // A few descriptors to spare, then more connections than that: the kernel completes their
    // handshakes, the sidecar's accept fails.
    set_open_files(open + 4);
    let mut held = Vec::new();
    for _ in 0..32 {
        held.push(TcpStream::connect(sidecar.proxy).await.unwrap());
    }
    let log = dir.path().join("s.log");
    let seen = wait_for(
        "\"accept failed\" in the log",
        Duration::from_secs(10),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            std::future::ready(if text.contains("accept failed") {
                Ok(text)
            } else {
                Err(text)
            })
        },
    )
    .await;
    // Backing off, not spinning: at most one warning per 50 ms back-off over a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let warnings = std::fs::read_to_string(&log)
        .unwrap()
        .matches("accept failed")
        .count();
    assert!(
        warnings <= 30,
        "{warnings} accept failures logged in about 1 s"
    );
    assert!(seen.contains("Too many open files"), "{seen}");

    // Descriptors free again: new connections are served.
    drop(held);
    set_open_files(4096);
    let status = wait_for(
        "a request served after the descriptors are free",
        Duration::from_secs(10),
        || {
            let addr = sidecar.proxy;
            async move {
                match status_of_new_connection(addr).await {
                    Ok(line) if line == "HTTP/1.1 200 OK" => Ok(line),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
    assert_eq!(status, "HTTP/1.1 200 OK");

    // Connections accepted that have sent nothing, then SIGTERM: no request is in flight, so
    // nothing waits for them (their header-read timeout is 10 s).
    let before = fds();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(sidecar.proxy).await.unwrap());
    }
    wait_for(
        "the 4 idle connections accepted",
        Duration::from_secs(5),
        || {
            let now = fds();
            std::future::ready(if now >= before + 4 {
                Ok(())
            } else {
                Err(format!("{now} descriptors, {before} before"))
            })
        },
    )
    .await;
    let started = Instant::now();
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let exited = wait_for(
        "the sidecar to exit after SIGTERM",
        Duration::from_secs(15),
        || {
            std::future::ready(match sidecar.try_wait() {
                Some(status) => Ok(status),
                None => Err("still running".to_string()),
            })
        },
    )
    .await;
    assert!(exited.success(), "{exited}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(held);
}

/// The scheduling policy of each of process `pid`'s threads whose name starts with `prefix`
/// (field 41 of `/proc/PID/task/TID/stat`: 0 `SCHED_OTHER`, 3 `SCHED_BATCH`), by thread id.
fn thread_policies(pid: u32, prefix: &str) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !name.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).unwrap();
        // The fields after the name (which may hold spaces) start with the third, the state.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let policy = after.split(' ').nth(41 - 3).unwrap().parse().unwrap();
        let tid = path.file_name().unwrap().to_str().unwrap().parse().unwrap();
        out.push((tid, policy));
    }
    out
}

#[tokio::test]
async fn proxy_workers_run_under_the_configured_scheduling_policy() {
    const SCHED_OTHER: u32 = 0;
    const SCHED_BATCH: u32 = 3;
    const SCHED_IDLE: u32 = 5;
    let mock = mock().await;
    let m = mock.addr;
    let dir = TempDir::new("sched");
    let body = one_route(m);
    // The setting, the launcher, the workers' policy. A policy the process was started with (here
    // SCHED_IDLE, which needs no privilege) is the operator's and is kept.
    let idle: &[&str] = &["chrt", "--idle", "0"];
    for (setting, launcher, expected) in [
        (None, &[][..], SCHED_BATCH),
        (Some("normal"), &[][..], SCHED_OTHER),
        (Some("batch"), &[][..], SCHED_BATCH),
        (None, idle, SCHED_IDLE),
        (Some("normal"), idle, SCHED_IDLE),
    ] {
        let mut env = vec![("AUTHSIDECAR__PROXY__WORKERS", "2")];
        if let Some(s) = setting {
            env.push(("AUTHSIDECAR__PROXY__WORKER_SCHEDULING", s));
        }
        let name = format!("{}-{}", setting.unwrap_or("default"), launcher.len());
        let mut sidecar = crate::support::fleet::Replica::start_with(
            dir.path(),
            &name,
            &body,
            None,
            &env,
            launcher,
        )
        .await;
        assert_eq!(
            status_of_new_connection(sidecar.proxy).await.unwrap(),
            "HTTP/1.1 200 OK"
        );
        let pid = sidecar.pid().unwrap();
        let workers = thread_policies(pid, "authsidecar-w");
        assert_eq!(workers.len(), 2, "{name}: worker threads {workers:?}");
        for (tid, policy) in &workers {
            assert_eq!(*policy, expected, "{name}: worker thread {tid}");
        }
        // The main thread (admin and auth listeners, token refresh) keeps the policy it started
        // with.
        let main: Vec<_> = thread_policies(pid, "")
            .into_iter()
            .filter(|(tid, _)| *tid == pid)
            .collect();
        let started_with = if launcher.is_empty() {
            SCHED_OTHER
        } else {
            SCHED_IDLE
        };
        assert_eq!(main, vec![(pid, started_with)], "{name}");
        sidecar.kill();
    }
}
