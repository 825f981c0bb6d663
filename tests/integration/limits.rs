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
