//! The HTTP/1.1 fast path (`src/proxy/h1.rs`): answers passed through as the upstream framed them,
//! hop-by-hop headers removed, pooled upstream connections reused and replaced, pipelining, and
//! the hand-over to the general path in the middle of a connection.
//!
//! The upstream is a scripted raw TCP server: the request path picks the answer bytes, and every
//! request head is recorded with the number of the upstream connection it came on.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// What the scripted upstream does after answering.
#[derive(PartialEq)]
enum After {
    KeepOpen,
    Close,
}

/// The answer for a request path, and what happens to the connection after it.
fn script(path: &str) -> (Vec<u8>, After) {
    if path.ends_with("/big") {
        let mut answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG}\r\n\r\n").into_bytes();
        answer.resize(answer.len() + BIG, b'x');
        return (answer, After::KeepOpen);
    }
    let (bytes, after): (&[u8], After) = match path.rsplit('/').next().unwrap_or("") {
        "len" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: keep-alive, x-hop\r\nx-hop: 1\r\nkeep-alive: timeout=5\r\nx-kept: yes\r\n\r\nhello",
            After::KeepOpen,
        ),
        "chunked" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;e=1\r\n world\r\n0\r\nx-trailer: t\r\n\r\n",
            After::KeepOpen,
        ),
        "head" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n",
            After::KeepOpen,
        ),
        "nocontent" => (b"HTTP/1.1 204 No Content\r\n\r\n", After::KeepOpen),
        "early" => (
            b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nafter",
            After::KeepOpen,
        ),
        "toclose" => (b"HTTP/1.1 200 OK\r\n\r\nuntil close", After::Close),
        "bye" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nbye",
            After::Close,
        ),
        // Answers, then closes without saying so: the sidecar finds out when it reuses it.
        "silent" => (b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsilent", After::Close),
        "conflict" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
            After::KeepOpen,
        ),
        "garbage" => (b"NOT HTTP AT ALL\r\n\r\n", After::Close),
        _ => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            After::KeepOpen,
        ),
    };
    (bytes.to_vec(), after)
}

/// One request head as the upstream read it, with its connection's number.
#[derive(Clone, Debug)]
struct Seen {
    conn: usize,
    head: String,
    body: Vec<u8>,
}

struct Scripted {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    async fn start() -> Scripted {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rec = seen.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(serve_scripted(s, n, rec.clone()));
                n += 1;
            }
        });
        Scripted { addr, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve_scripted(mut s: TcpStream, conn: usize, rec: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    // After `/once`: the next request on this connection is read and dropped unanswered.
    let mut drop_next = false;
    loop {
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let len = declared_length(&head);
        while buf.len() < end + len {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[end..end + len].to_vec();
        buf.drain(..end + len);
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        rec.lock().unwrap().push(Seen { conn, head, body });
        if drop_next {
            return;
        }
        drop_next = path.ends_with("/once");
        let (answer, after) = script(&path);
        if path.ends_with("/slow") {
            // A slow upstream is the point: it answers after the route's 1 s timeout.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        if path.ends_with("/stall") {
            // Head and 3 of 10 body bytes, then nothing (a stalled upstream is the point).
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
                .await;
            tokio::time::sleep(Duration::from_secs(10)).await;
            return;
        }
        if s.write_all(&answer).await.is_err() || after == After::Close {
            return;
        }
    }
}

fn cfg(upstream: SocketAddr) -> String {
    format!(
        r#"
[proxy]
idle_timeout = "1s"

[[routes]]
prefix = "/f/"
upstream = "http://{upstream}/f/"
profiles = ["key"]
timeout = "1s"

[profiles.key]
type = "api_key"
api_key = "fk-789"
[[profiles.key.fields]]
in = "header"
key = "X-Api-Key"
value = "{{{{api_key}}}}"
"#
    )
}

/// Sends `bytes` on `s` and reads until the sidecar closes the connection or `wait` passes.
async fn answer_until_close(s: &mut TcpStream, bytes: &[u8], wait: Duration) -> (String, bool) {
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(wait, async {
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Reads one answer framed by `Content-Length` (the sidecar's own and these tests' answers).
async fn one_answer(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: ")?.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= i + 4 + len {
                return String::from_utf8_lossy(&buf[..i + 4 + len]).into_owned();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("answer within 5 s")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn get_req(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: sidecar\r\n\r\n")
}

/// Pipelined bodiless requests on one connection: each answer arrives in order, framed as the
/// upstream framed it (length, chunked with trailers, HEAD, 204, 103 then 200, until close),
/// hop-by-hop headers gone, credential injected, all on one upstream connection.
#[tokio::test]
async fn answers_pass_through_framed_as_the_upstream_sent_them() {
    let up = Scripted::start().await;
    let h = Harness::start(&cfg(up.addr)).await;
    let mut s = TcpStream::connect(h.server.proxy_addr).await.unwrap();
    let reqs = [
        get_req("/f/len"),
        "GET /f/chunked HTTP/1.1\r\nHost: sidecar\r\nTE: trailers\r\n\r\n".to_string(),
        "HEAD /f/head HTTP/1.1\r\nHost: sidecar\r\n\r\n".to_string(),
        get_req("/f/nocontent"),
        get_req("/f/early"),
        get_req("/f/toclose"),
    ]
    .concat();
    let (answer, closed) =
        answer_until_close(&mut s, reqs.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        closed,
        "a body that runs to close ends the caller's connection too"
    );
    let starts: Vec<&str> = answer
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &answer[i..i + 12])
        .collect();
    assert_eq!(
        starts,
        [
            "HTTP/1.1 200",
            "HTTP/1.1 200",
            "HTTP/1.1 200",
            "HTTP/1.1 204",
            "HTTP/1.1 200",
            "HTTP/1.1 200"
        ],
        "{answer}"
    );
    let parts: Vec<&str> = answer.split("HTTP/1.1 ").skip(1).collect();
    let lower = |p: &str| p.to_ascii_lowercase();
    // Length-framed: the body, the kept header, no hop-by-hop header.
    assert!(parts[0].ends_with("\r\n\r\nhello"), "{:?}", parts[0]);
    assert!(lower(parts[0]).contains("x-kept: yes\r\n"));
    for gone in ["x-hop", "keep-alive", "connection:"] {
        assert!(!lower(parts[0]).contains(gone), "{gone} in {:?}", parts[0]);
    }
    assert!(lower(parts[0]).contains("date: "));
    // Chunked: the chunks passed through byte for byte; the last chunk and the trailer section
    // are written by the sidecar, with only the trailer fields the upstream declared in `Trailer`
    // (none here), as hyper does. With the fast path off hyper re-frames the body: chunk
    // extensions are framing, dropped.
    if fast_path_on() {
        assert!(
            parts[1].ends_with("\r\n\r\n5\r\nhello\r\n6;e=1\r\n world\r\n0\r\n\r\n"),
            "{:?}",
            parts[1]
        );
    } else {
        assert!(
            parts[1].ends_with("\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "{:?}",
            parts[1]
        );
    }
    assert!(!lower(parts[1]).contains("x-trailer"), "{:?}", parts[1]);
    assert!(lower(parts[1]).contains("transfer-encoding: chunked\r\n"));
    // HEAD and 204: heads only.
    assert!(
        parts[2].ends_with("content-length: 100\r\n\r\n")
            || lower(parts[2]).contains("content-length: 100")
    );
    assert!(parts[2].ends_with("\r\n\r\n"), "{:?}", parts[2]);
    assert!(parts[3].ends_with("\r\n\r\n"), "{:?}", parts[3]);
    // The 103 stays between the sidecar and the upstream.
    assert!(!answer.contains("103") && !answer.contains("s.css"));
    assert!(parts[4].ends_with("\r\n\r\nafter"));
    // Until close: said so, and the body arrives whole. (With the fast path off hyper re-frames
    // it as chunked; that is framing, the caller gets the same body.)
    if fast_path_on() {
        assert!(
            lower(parts[5]).contains("connection: close\r\n"),
            "{:?}",
            parts[5]
        );
        assert!(parts[5].ends_with("\r\n\r\nuntil close"));
    } else {
        assert!(
            parts[5].ends_with("\r\n\r\nB\r\nuntil close\r\n0\r\n\r\n"),
            "{:?}",
            parts[5]
        );
    }

    let seen = up.seen();
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert!(
        seen.iter().all(|r| r.conn == seen[0].conn),
        "one upstream connection: {seen:?}"
    );
    for r in &seen {
        let head = r.head.to_ascii_lowercase();
        assert!(head.contains("x-api-key: fk-789\r\n"), "{}", r.head);
        assert!(
            head.contains(&format!("host: {}\r\n", up.addr)),
            "{}",
            r.head
        );
        assert!(
            head.contains("x-forwarded-for: 127.0.0.1\r\n"),
            "{}",
            r.head
        );
        assert!(r.body.is_empty());
    }
    assert!(seen[2].head.starts_with("HEAD /f/head HTTP/1.1\r\n"));
}

/// Upstream connections go back to the worker's pool after a complete answer and are replaced
/// when the upstream closed them: announced (`Connection: close`) or silently.
#[tokio::test]
async fn pooled_connections_are_reused_and_replaced_when_closed() {
    let up = Scripted::start().await;
    let h = Harness::start(&cfg(up.addr)).await;
    let mut s = TcpStream::connect(h.server.proxy_addr).await.unwrap();
    for path in ["/f/a", "/f/b", "/f/bye", "/f/c", "/f/silent"] {
        s.write_all(get_req(path).as_bytes()).await.unwrap();
        let a = one_answer(&mut s).await;
        assert!(a.starts_with("HTTP/1.1 200"), "{path}: {a}");
    }
    // The silent close reaches the sidecar's worker before the next request: its pooled end is
    // no longer ESTABLISHED (CLOSE_WAIT, or already closed).
    wait_until(
        "the upstream's silent close to reach the sidecar's pooled connection",
        Duration::from_secs(5),
        || async {
            !tcp_sockets()
                .iter()
                .any(|t| t.remote_port == up.addr.port() && t.state == TCP_ESTABLISHED)
        },
    )
    .await;
    for path in ["/f/d", "/f/e"] {
        s.write_all(get_req(path).as_bytes()).await.unwrap();
        let a = one_answer(&mut s).await;
        assert!(a.starts_with("HTTP/1.1 200"), "{path}: {a}");
    }
    let conns: Vec<usize> = up.seen().iter().map(|r| r.conn).collect();
    // a, b, bye on the first connection; c, silent on the second; d, e on a third.
    assert_eq!(conns[0], conns[1]);
    assert_eq!(conns[1], conns[2]);
    assert_ne!(conns[2], conns[3]);
    assert_eq!(conns[3], conns[4]);
    assert_ne!(conns[4], conns[5]);
    assert_eq!(conns[5], conns[6]);
}

/// A broken or slow answer is the sidecar's error, in its JSON form, and the connection goes on.
#[tokio::test]
async fn invalid_answers_are_502_and_slow_ones_504() {
    let up = Scripted::start().await;
    let h = Harness::start(&cfg(up.addr)).await;
    let mut s = TcpStream::connect(h.server.proxy_addr).await.unwrap();
    for (path, status, code) in [
        ("/f/conflict", "502", "upstream_unavailable"),
        ("/f/garbage", "502", "upstream_unavailable"),
        ("/f/slow", "504", "upstream_timeout"),
    ] {
        s.write_all(get_req(path).as_bytes()).await.unwrap();
        let a = one_answer(&mut s).await;
        assert!(a.starts_with(&format!("HTTP/1.1 {status}")), "{path}: {a}");
        assert!(a.contains(&format!("\"code\":\"{code}\"")), "{path}: {a}");
        assert!(a.contains("\"profile\":\"key\""), "{path}: {a}");
        assert!(!a.contains("fk-789"), "{path}: the credential leaked: {a}");
    }
    s.write_all(get_req("/f/ok").as_bytes()).await.unwrap();
    assert!(one_answer(&mut s).await.starts_with("HTTP/1.1 200"));
}

/// A request with a body moves the connection to the general path, which serves it and every
/// request after it; the upstream gets the body.
#[tokio::test]
async fn a_request_with_a_body_hands_the_connection_over() {
    let up = Scripted::start().await;
    let h = Harness::start(&cfg(up.addr)).await;
    let mut s = TcpStream::connect(h.server.proxy_addr).await.unwrap();
    let reqs = [
        get_req("/f/one"),
        "POST /f/two HTTP/1.1\r\nHost: sidecar\r\nContent-Length: 5\r\n\r\nhello".to_string(),
        get_req("/f/three"),
    ];
    for r in &reqs {
        s.write_all(r.as_bytes()).await.unwrap();
        let a = one_answer(&mut s).await;
        assert!(a.starts_with("HTTP/1.1 200"), "{r}: {a}");
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[1].body, b"hello");
    assert!(seen.iter().all(|r| r
        .head
        .to_ascii_lowercase()
        .contains("x-api-key: fk-789\r\n")));
}

/// `Connection: close` from the caller: answered with `connection: close`, then closed. An idle
/// connection is closed after `idle_timeout`.
#[tokio::test]
async fn connection_close_and_the_idle_timeout_end_the_connection() {
    let up = Scripted::start().await;
    let h = Harness::start(&cfg(up.addr)).await;
    let mut s = TcpStream::connect(h.server.proxy_addr).await.unwrap();
    let (a, closed) = answer_until_close(
        &mut s,
        b"GET /f/x HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(closed, "{a}");
    assert!(
        a.starts_with("HTTP/1.1 200") && a.to_ascii_lowercase().contains("connection: close\r\n"),
        "{a}"
    );

    let mut s = TcpStream::connect(h.server.proxy_addr).await.unwrap();
    s.write_all(get_req("/f/y").as_bytes()).await.unwrap();
    assert!(one_answer(&mut s).await.starts_with("HTTP/1.1 200"));
    closes_about_1_s_after(&mut s, std::time::Instant::now()).await;
}

/// The sidecar closes `s` (no more bytes) about the idle timeout (1 s here) after `since`.
async fn closes_about_1_s_after(s: &mut TcpStream, since: std::time::Instant) {
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("closed within 5 s")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let waited = since.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}

/// The idle timeout (1 s here) counts from the end of the last answer, not from accept: a
/// connection busy for 2.5 s (a request every 250 ms) stays open, then closes about 1 s after
/// its last answer.
#[tokio::test]
async fn the_idle_timeout_counts_from_the_last_answer() {
    let up = Scripted::start().await;
    let h = Harness::start(&cfg(up.addr)).await;
    let mut s = TcpStream::connect(h.server.proxy_addr).await.unwrap();
    let mut last = std::time::Instant::now();
    for i in 0..10 {
        if i > 0 {
            // Pacing is the point: a request every 250 ms, each gap under the 1 s idle timeout.
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        s.write_all(get_req(&format!("/f/n{i}")).as_bytes())
            .await
            .unwrap();
        assert!(
            one_answer(&mut s).await.starts_with("HTTP/1.1 200"),
            "request {i}"
        );
        // Measured from the answer, so a late wake-up of the pacing sleep does not count.
        last = std::time::Instant::now();
    }
    closes_about_1_s_after(&mut s, last).await;
    // All ten came on one caller connection.
    assert_eq!(up.seen().len(), 10);
}

/// A pooled connection that the upstream drops when the next request arrives: a GET is sent
/// once more on a new connection (RFC 9110 §9.2.2: idempotent), a POST is not (502, sent once).
#[tokio::test]
async fn only_idempotent_requests_are_retried_on_a_new_connection() {
    // Only the fast path retries an idempotent request whose pooled connection closed before any
    // answer byte; the general path answers 502 (docs/reliability.md B14).
    if skipped_without_fast_path(
        "only_idempotent_requests_are_retried_on_a_new_connection",
        "a fast-path-only behaviour",
    ) {
        return;
    }
    let up = Scripted::start().await;
    let h = Harness::start(&cfg(up.addr)).await;
    let mut s = TcpStream::connect(h.server.proxy_addr).await.unwrap();
    s.write_all(get_req("/f/once").as_bytes()).await.unwrap();
    assert!(one_answer(&mut s).await.starts_with("HTTP/1.1 200"));
    s.write_all(get_req("/f/again").as_bytes()).await.unwrap();
    let a = one_answer(&mut s).await;
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    let seen = up.seen();
    let paths: Vec<(usize, &str)> = seen
        .iter()
        .map(|r| (r.conn, r.head.split(' ').nth(1).unwrap_or("")))
        .collect();
    assert_eq!(paths.len(), 3, "{paths:?}");
    assert_eq!(paths[1].1, "/f/again");
    assert_eq!(paths[2].1, "/f/again");
    assert_eq!(paths[0].0, paths[1].0);
    assert_ne!(paths[1].0, paths[2].0, "the retry uses a new connection");

    s.write_all(get_req("/f/once").as_bytes()).await.unwrap();
    assert!(one_answer(&mut s).await.starts_with("HTTP/1.1 200"));
    s.write_all(b"POST /f/post HTTP/1.1\r\nHost: sidecar\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let a = one_answer(&mut s).await;
    assert!(a.starts_with("HTTP/1.1 502"), "{a}");
    assert!(a.contains("\"code\":\"upstream_unavailable\""), "{a}");
    let posts = up
        .seen()
        .iter()
        .filter(|r| r.head.starts_with("POST /f/post "))
        .count();
    assert_eq!(posts, 1, "the POST was sent more than once");
}

/// The hand-over with requests pipelined in one write: the general path gets the bytes the fast
/// path had read past its own request, the POST body included, and serves them in order.
#[tokio::test]
async fn pipelined_requests_survive_the_hand_over() {
    let up = Scripted::start().await;
    let h = Harness::start(&cfg(up.addr)).await;
    let mut s = TcpStream::connect(h.server.proxy_addr).await.unwrap();
    let reqs = [
        get_req("/f/one"),
        "POST /f/two HTTP/1.1\r\nHost: sidecar\r\nContent-Length: 5\r\n\r\nhello".to_string(),
        "GET /f/three HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n\r\n".to_string(),
    ]
    .concat();
    let (answer, closed) =
        answer_until_close(&mut s, reqs.as_bytes(), Duration::from_secs(5)).await;
    assert!(closed, "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 3, "{answer}");
    let seen = up.seen();
    let paths: Vec<&str> = seen
        .iter()
        .map(|r| r.head.split(' ').nth(1).unwrap_or(""))
        .collect();
    assert_eq!(paths, ["/f/one", "/f/two", "/f/three"]);
    assert_eq!(seen[1].body, b"hello");
}

/// An upstream that stops in the middle of a body: after the idle timeout (1 s here) without a
/// byte, the sidecar closes the caller's connection (the answer cannot be completed) and the
/// upstream's; the next connection is served.
#[tokio::test]
async fn a_body_that_stalls_ends_after_the_idle_timeout() {
    // Only the fast path bounds the waits of an answer's body by `idle_timeout`; the general path
    // has no such bound (docs/configuration.md `idle_timeout`, docs/reliability.md A16).
    if skipped_without_fast_path(
        "a_body_that_stalls_ends_after_the_idle_timeout",
        "a fast-path-only behaviour",
    ) {
        return;
    }
    let up = Scripted::start().await;
    let h = Harness::start(&cfg(up.addr)).await;
    let mut s = TcpStream::connect(h.server.proxy_addr).await.unwrap();
    let started = std::time::Instant::now();
    let (answer, closed) = answer_until_close(
        &mut s,
        get_req("/f/stall").as_bytes(),
        Duration::from_secs(6),
    )
    .await;
    let waited = started.elapsed();
    assert!(closed, "still open after 6 s: {answer}");
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("\r\n\r\nabc"),
        "{answer}"
    );
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let mut s = TcpStream::connect(h.server.proxy_addr).await.unwrap();
    s.write_all(get_req("/f/after").as_bytes()).await.unwrap();
    assert!(one_answer(&mut s).await.starts_with("HTTP/1.1 200"));
}

/// Body size of `/big`: more than every socket buffer between the upstream and the caller holds.
const BIG: usize = 64 << 20;

/// A caller that stops reading a large answer: once the sidecar has waited the idle timeout (1 s
/// here) for the caller to take more bytes, it closes the caller's connection; the caller, reading
/// again later, gets what was buffered and then the end, not the whole body.
#[tokio::test]
async fn a_caller_that_stops_reading_is_closed_after_the_idle_timeout() {
    // Only the fast path bounds the waits of an answer's body by `idle_timeout`; the general path
    // has no such bound (docs/configuration.md `idle_timeout`, docs/reliability.md A16).
    if skipped_without_fast_path(
        "a_caller_that_stops_reading_is_closed_after_the_idle_timeout",
        "a fast-path-only behaviour",
    ) {
        return;
    }
    let up = Scripted::start().await;
    let h = Harness::start(&cfg(up.addr)).await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(h.server.proxy_addr).await.unwrap();
    s.write_all(get_req("/f/big").as_bytes()).await.unwrap();
    // Not reading for 3 s, past the 1 s idle timeout, is the point.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut got = 0usize;
    let mut chunk = vec![0u8; 1 << 16];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
    })
    .await
    .is_ok();
    assert!(
        ended,
        "the connection was still open after 10 s ({got} bytes)"
    );
    assert!(got > 0 && got < BIG, "{got} bytes of a {BIG}-byte body");
}

/// An upstream that closes an idle pooled connection without a word: the sidecar's worker closes
/// its end within its pool sweep (every 2 s), not only when the next request to that host comes.
#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_closed_without_waiting_for_a_request() {
    let up = Scripted::start().await;
    let h = Harness::start(&cfg(up.addr)).await;
    let mut s = TcpStream::connect(h.server.proxy_addr).await.unwrap();
    s.write_all(get_req("/f/silent").as_bytes()).await.unwrap();
    let a = one_answer(&mut s).await;
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    // The upstream closed after answering: at first the sidecar's pooled end is in CLOSE_WAIT
    // ("08") or already gone, and within the sweep it is gone.
    wait_for(
        "the sidecar to close its pooled end the upstream closed (neither ESTABLISHED nor CLOSE_WAIT)",
        Duration::from_secs(6),
        || {
            let towards: Vec<TcpSocket> = tcp_sockets()
                .into_iter()
                .filter(|t| t.remote_port == up.addr.port())
                .collect();
            std::future::ready(if towards
                .iter()
                .any(|t| t.state == TCP_CLOSE_WAIT || t.state == TCP_ESTABLISHED)
            {
                Err(format!("{towards:?}"))
            } else {
                Ok(())
            })
        },
    )
    .await;
    // The next request (on a new client connection: this one idled out after 1 s) opens a new
    // upstream connection and works.
    let mut s = TcpStream::connect(h.server.proxy_addr).await.unwrap();
    s.write_all(get_req("/f/a").as_bytes()).await.unwrap();
    assert!(one_answer(&mut s).await.starts_with("HTTP/1.1 200"));
    let conns: Vec<usize> = up.seen().iter().map(|r| r.conn).collect();
    assert_ne!(conns[0], conns[1]);
}

/// Every request reaches the upstream with an `X-Request-Id`: the caller's when usable, else a new
/// one of 20 lowercase hex digits, different for each request. Forwarding headers from an
/// untrusted caller are dropped (any of them, alone or together) and `X-Forwarded-For` names the
/// caller; headers the caller sent otherwise arrive as sent.
#[tokio::test]
async fn request_ids_and_forwarding_headers_on_the_fast_path() {
    let up = Scripted::start().await;
    let h = Harness::start(&cfg(up.addr)).await;
    let mut s = TcpStream::connect(h.server.proxy_addr).await.unwrap();
    let reqs = [
        get_req("/f/a"),
        get_req("/f/b"),
        "GET /f/c HTTP/1.1\r\nHost: s\r\nX-Request-Id: caller-id-1\r\nX-Real-IP: 6.6.6.6\r\nAccept: */*\r\n\r\n".to_string(),
        "GET /f/d HTTP/1.1\r\nHost: s\r\nForwarded: for=6.6.6.6\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil\r\n\r\n".to_string(),
    ];
    for r in &reqs {
        s.write_all(r.as_bytes()).await.unwrap();
        assert!(one_answer(&mut s).await.starts_with("HTTP/1.1 200"));
    }
    let heads: Vec<String> = up
        .seen()
        .iter()
        .map(|r| r.head.to_ascii_lowercase())
        .collect();
    let id = |head: &str| -> String {
        head.lines()
            .find_map(|l| l.strip_prefix("x-request-id: "))
            .unwrap_or_else(|| panic!("no request id in {head}"))
            .trim()
            .to_string()
    };
    let (a, b) = (id(&heads[0]), id(&heads[1]));
    for v in [&a, &b] {
        assert_eq!(v.len(), 20, "{v}");
        assert!(
            v.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
            "{v}"
        );
    }
    assert_ne!(a, b);
    assert_eq!(a[..8], b[..8], "one prefix per process");
    assert_eq!(id(&heads[2]), "caller-id-1");
    assert!(heads[2].contains("accept: */*"), "{}", heads[2]);
    for head in &heads[2..] {
        assert!(!head.contains("6.6.6.6"), "{head}");
        assert!(!head.contains("evil"), "{head}");
        assert!(head.contains("x-forwarded-for: 127.0.0.1"), "{head}");
    }
}

/// A signed request whose pooled connection the upstream drops after reading it: the retry on a
/// new connection is signed again (a new nonce and signature), never the same bytes twice.
#[tokio::test]
async fn a_signed_request_is_signed_again_for_the_retry_on_a_new_connection() {
    if skipped_without_fast_path(
        "a_signed_request_is_signed_again_for_the_retry_on_a_new_connection",
        "a fast-path-only behaviour",
    ) {
        return;
    }
    let up = Scripted::start().await;
    let text = cfg(up.addr).replace("profiles = [\"key\"]", "profiles = [\"mac\"]")
        + r#"
[profiles.mac]
type = "hmac"
secret = "s3cret"
string_to_sign = "{{method}} {{path}} {{timestamp}} {{nonce}}"
[[profiles.mac.fields]]
in = "header"
key = "X-Signature"
value = "{{signature}}"
[[profiles.mac.fields]]
in = "header"
key = "X-Nonce"
value = "{{nonce}}"
"#;
    let h = Harness::start(&text).await;
    let mut s = TcpStream::connect(h.server.proxy_addr).await.unwrap();
    s.write_all(get_req("/f/once").as_bytes()).await.unwrap();
    assert!(one_answer(&mut s).await.starts_with("HTTP/1.1 200"));
    s.write_all(get_req("/f/again").as_bytes()).await.unwrap();
    let a = one_answer(&mut s).await;
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    let seen = up.seen();
    assert_eq!(seen.len(), 3);
    let header = |head: &str, name: &str| {
        head.lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
            .unwrap()
    };
    assert_ne!(
        seen[1].conn, seen[2].conn,
        "the retry uses a new connection"
    );
    assert!(seen[2].head.starts_with("GET /f/again "));
    assert_ne!(
        header(&seen[1].head, "x-nonce"),
        header(&seen[2].head, "x-nonce")
    );
    assert_ne!(
        header(&seen[1].head, "x-signature"),
        header(&seen[2].head, "x-signature")
    );
}
