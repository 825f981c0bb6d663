//! One pipeline: the same request gives the same upstream request and the same answer with
//! `proxy.fast_path` on and off, and through either front end (a bodiless GET takes the HTTP/1
//! fast front end when it is on, and so does a body of declared length up to 64 KiB; a chunked or
//! larger body takes hyper). Each test runs in both
//! settings (`both_settings!`), against a scripted raw upstream whose answers break the rules in
//! the ways a real upstream can.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// Runs an `async fn(fast_path: bool)` as two tests, `fast_path_on` and `fast_path_off`.
macro_rules! both_settings {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn fast_path_on() {
                    super::$name(true).await
                }
                #[tokio::test]
                async fn fast_path_off() {
                    super::$name(false).await
                }
            }
        )*
    };
}

both_settings!(
    answer_heads_with_many_fields_pass_the_same_way,
    content_length_beside_chunked_is_dropped,
    interim_answers_are_bounded,
    an_unasked_protocol_switch_is_a_502,
    a_204_carries_no_content_length,
    a_chunked_body_broken_at_once_is_a_502,
    trailers_reach_only_callers_that_take_them,
    an_undeclared_trailer_does_not_reach_a_caller_that_takes_trailers,
    declared_trailers_pass_grouped_by_name,
    a_get_with_a_chunked_body_keeps_its_body,
    a_half_closed_caller_gets_its_answer,
    a_401_is_replayed_with_a_new_token_once,
    pipelined_mixed_requests_are_answered_in_order,
    an_https_upstream_is_reached_over_pooled_tls,
    bodies_of_any_size_arrive_whole_on_one_connection,
);

/// The answer bytes for a request path.
fn script(path: &str) -> Vec<u8> {
    let name = path.rsplit('/').next().unwrap_or("");
    let fields = |n: usize| -> String { (0..n).map(|i| format!("x-f{i}: v\r\n")).collect() };
    match name {
        // 110 and 127 fields (+ content-length = 128) pass; 129 do not.
        "fields110" => format!("HTTP/1.1 200 OK\r\n{}content-length: 2\r\n\r\nok", fields(110)).into_bytes(),
        "fields127" => format!("HTTP/1.1 200 OK\r\n{}content-length: 2\r\n\r\nok", fields(127)).into_bytes(),
        "fields129" => format!("HTTP/1.1 200 OK\r\n{}content-length: 2\r\n\r\nok", fields(129)).into_bytes(),
        // A 70 KiB head.
        "bighead" => format!(
            "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\nok",
            "a".repeat(70 * 1024)
        )
        .into_bytes(),
        "clte" => b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_vec(),
        "interim" => {
            let mut a = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(10_000);
            a.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
            a
        }
        "fewinterim" => {
            let mut a = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(3);
            a.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
            a
        }
        "switch" => b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n".to_vec(),
        "nocontent" => b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nx-kept: 1\r\n\r\n".to_vec(),
        "broken" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_vec(),
        "undeclared" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: abc\r\n\r\n".to_vec(),
        "trailers" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: abc\r\n\r\n".to_vec(),
        "grouped" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: X-B, x-a\r\ntrailer: content-type,,bad name\r\n\r\n5\r\nhello\r\n0;last=1\r\nX-A: 1\r\nx-b:2\r\nx-a: 3 \r\ncontent-type: t\r\nx-c: 4\r\n\r\n".to_vec(),
        _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
    }
}

/// One request as the upstream read it.
#[derive(Clone, Debug)]
struct Seen {
    /// The upstream connection's number, in accept order.
    conn: usize,
    head: String,
    body: Vec<u8>,
}

/// A raw upstream: answers by `script`, records what it read (bodies by length or chunked), and
/// answers 401 to a request whose `Authorization` is `Bearer` of a token it was told is revoked.
struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    revoked: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    async fn start() -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let revoked = Arc::new(Mutex::new(Vec::new()));
        let (rec, rev) = (seen.clone(), revoked.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(serve(s, n, rec.clone(), rev.clone()));
                n += 1;
            }
        });
        Upstream {
            addr,
            seen,
            revoked,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(
    mut s: TcpStream,
    conn: usize,
    rec: Arc<Mutex<Vec<Seen>>>,
    revoked: Arc<Mutex<Vec<String>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
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
        let lower = head.to_ascii_lowercase();
        let body_end = if lower.contains("transfer-encoding: chunked") {
            loop {
                if let Some(i) = find(&buf[end..], b"0\r\n\r\n") {
                    break end + i + 5;
                }
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        } else {
            let len: usize = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length:")?.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + len {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            end + len
        };
        let body = buf[end..body_end].to_vec();
        buf.drain(..body_end);
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        rec.lock().unwrap().push(Seen {
            conn,
            head: head.clone(),
            body,
        });
        let refused =
            revoked.lock().unwrap().iter().any(|t| {
                lower.contains(&format!("authorization: bearer {}", t.to_ascii_lowercase()))
            });
        let answer = if refused {
            b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 6\r\n\r\nrevoke".to_vec()
        } else {
            script(&path)
        };
        if s.write_all(&answer).await.is_err() {
            return;
        }
        if path.ends_with("/switch") {
            return;
        }
    }
}

fn cfg(upstream: SocketAddr, fast_path: bool) -> String {
    format!(
        r#"
[proxy]
fast_path = {fast_path}
idle_timeout = "2s"

[[routes]]
prefix = "/p/"
upstream = "http://{upstream}/up/"
profiles = ["key"]
timeout = "2s"

[profiles.key]
type = "api_key"
api_key = "pk-123"
[[profiles.key.fields]]
in = "header"
key = "X-Api-Key"
value = "{{{{api_key}}}}"
"#
    )
}

/// A GET (fast front end when on) and a POST with a body (hyper) for `path`.
fn requests(path: &str, extra: &str) -> [String; 2] {
    [
        format!("GET {path} HTTP/1.1\r\nHost: s\r\n{extra}Connection: close\r\n\r\n"),
        format!("POST {path} HTTP/1.1\r\nHost: s\r\n{extra}Content-Length: 3\r\nConnection: close\r\n\r\nabc"),
    ]
}

/// Sends raw bytes and reads until the sidecar closes (within 5 s).
async fn exchange(addr: SocketAddr, req: &str) -> String {
    raw(addr, req.as_bytes(), Duration::from_secs(5)).await
}

fn status(answer: &str) -> &str {
    answer.get(9..12).unwrap_or("")
}

fn head_of(answer: &str) -> String {
    answer
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

async fn answer_heads_with_many_fields_pass_the_same_way(fast: bool) {
    let up = Upstream::start().await;
    let h = Harness::start(&cfg(up.addr, fast)).await;
    for (path, want) in [
        ("/p/fields110", "200"),
        ("/p/fields127", "200"),
        ("/p/fields129", "502"),
        ("/p/bighead", "502"),
    ] {
        for req in requests(path, "") {
            let a = exchange(h.server.proxy_addr, &req).await;
            assert_eq!(
                status(&a),
                want,
                "{path} fast_path={fast}: {}",
                &a[..a.len().min(300)]
            );
            if want == "502" {
                assert!(a.contains("upstream_unavailable"), "{a}");
            } else {
                assert!(head_of(&a).contains("x-f109: v"));
                assert!(a.ends_with("\r\n\r\nok"));
            }
        }
    }
}

async fn content_length_beside_chunked_is_dropped(fast: bool) {
    let up = Upstream::start().await;
    let h = Harness::start(&cfg(up.addr, fast)).await;
    for req in requests("/p/clte", "") {
        let a = exchange(h.server.proxy_addr, &req).await;
        assert_eq!(status(&a), "200", "{a}");
        let head = head_of(&a);
        assert!(!head.contains("content-length"), "{a}");
        assert!(head.contains("transfer-encoding: chunked"), "{a}");
        assert!(a.contains("5\r\nhello\r\n6\r\n world\r\n0\r\n"), "{a}");
    }
}

async fn interim_answers_are_bounded(fast: bool) {
    let up = Upstream::start().await;
    let h = Harness::start(&cfg(up.addr, fast)).await;
    for req in requests("/p/fewinterim", "") {
        let a = exchange(h.server.proxy_addr, &req).await;
        assert_eq!(status(&a), "200", "{a}");
        assert!(!a.contains("100 Continue"), "{a}");
    }
    // 10,000 interim answers: refused, not collected.
    let [get, _] = requests("/p/interim", "");
    let a = exchange(h.server.proxy_addr, &get).await;
    if fast {
        assert_eq!(status(&a), "502", "{a}");
        assert!(a.contains("interim"), "{a}");
    } else {
        // hyper drops each interim head as it reads it: the final answer or a 502, never a 1xx.
        assert!(["200", "502"].contains(&status(&a)), "{a}");
    }
    assert!(!a.contains("100 Continue"), "{a}");
}

async fn an_unasked_protocol_switch_is_a_502(fast: bool) {
    let up = Upstream::start().await;
    let h = Harness::start(&cfg(up.addr, fast)).await;
    for req in requests("/p/switch", "") {
        let a = exchange(h.server.proxy_addr, &req).await;
        assert_eq!(status(&a), "502", "fast_path={fast}: {a}");
        assert!(a.contains("switched protocols"), "{a}");
    }
}

async fn a_204_carries_no_content_length(fast: bool) {
    let up = Upstream::start().await;
    let h = Harness::start(&cfg(up.addr, fast)).await;
    for req in requests("/p/nocontent", "") {
        let a = exchange(h.server.proxy_addr, &req).await;
        assert_eq!(status(&a), "204", "{a}");
        let head = head_of(&a);
        assert!(!head.contains("content-length"), "{a}");
        assert!(head.contains("x-kept: 1"), "{a}");
    }
}

async fn a_chunked_body_broken_at_once_is_a_502(fast: bool) {
    let up = Upstream::start().await;
    let h = Harness::start(&cfg(up.addr, fast)).await;
    let [get, _] = requests("/p/broken", "");
    let a = exchange(h.server.proxy_addr, &get).await;
    if fast {
        assert_eq!(status(&a), "502", "{a}");
        assert!(a.contains("malformed"), "{a}");
    } else {
        // hyper sends the head before the body is read: the caller's connection is cut and the
        // broken body never reaches it.
        assert!(!a.contains("hello"), "{a}");
    }
}

async fn trailers_reach_only_callers_that_take_them(fast: bool) {
    let up = Upstream::start().await;
    let h = Harness::start(&cfg(up.addr, fast)).await;
    for req in requests("/p/trailers", "TE: trailers\r\n") {
        let a = exchange(h.server.proxy_addr, &req).await;
        assert_eq!(status(&a), "200", "{a}");
        assert!(
            a.to_ascii_lowercase()
                .ends_with("5\r\nhello\r\n0\r\nx-checksum: abc\r\n\r\n"),
            "fast_path={fast}: {a:?}"
        );
    }
    for req in requests("/p/trailers", "") {
        let a = exchange(h.server.proxy_addr, &req).await;
        assert_eq!(status(&a), "200", "{a}");
        assert!(
            a.ends_with("5\r\nhello\r\n0\r\n\r\n"),
            "fast_path={fast}: {a:?}"
        );
        assert!(!a.to_ascii_lowercase().contains("x-checksum: abc"), "{a:?}");
    }
}

/// A trailer the upstream sent without naming it in a `Trailer` field (RFC 9110 §6.6.2 makes
/// that field a SHOULD) does not reach a caller that sent `TE: trailers`, on both front ends:
/// hyper passes only declared trailer fields, and the fast front end does the same. (This test
/// used to expect the field to pass, which only the fast front end did.)
async fn an_undeclared_trailer_does_not_reach_a_caller_that_takes_trailers(fast: bool) {
    let up = Upstream::start().await;
    let h = Harness::start(&cfg(up.addr, fast)).await;
    for req in requests("/p/undeclared", "TE: trailers\r\n") {
        let a = exchange(h.server.proxy_addr, &req).await;
        assert_eq!(status(&a), "200", "{a}");
        assert!(
            a.ends_with("5\r\nhello\r\n0\r\n\r\n"),
            "fast_path={fast} {req:?}: {a:?}"
        );
        assert!(!a.to_ascii_lowercase().contains("x-checksum"), "{a:?}");
    }
}

/// Declared trailer fields reach a caller that takes trailers as hyper writes them: lowercase
/// names, grouped by name in the order each name first came, values trimmed; fields that may not
/// be trailers (`content-type`) and undeclared ones are left out, and the last chunk loses its
/// extension.
async fn declared_trailers_pass_grouped_by_name(fast: bool) {
    let up = Upstream::start().await;
    let h = Harness::start(&cfg(up.addr, fast)).await;
    for req in requests("/p/grouped", "TE: trailers\r\n") {
        let a = exchange(h.server.proxy_addr, &req).await;
        assert_eq!(status(&a), "200", "{a}");
        assert!(
            a.contains("\r\ntrailer: X-B, x-a, content-type,,bad name\r\n"),
            "fast_path={fast}: the Trailer fields are one: {a:?}"
        );
        assert!(
            a.ends_with("5\r\nhello\r\n0\r\nx-a: 1\r\nx-a: 3\r\nx-b: 2\r\n\r\n"),
            "fast_path={fast} {req:?}: {a:?}"
        );
    }
}

async fn a_get_with_a_chunked_body_keeps_its_body(fast: bool) {
    let up = Upstream::start().await;
    let h = Harness::start(&cfg(up.addr, fast)).await;
    let req = "GET /p/search HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n7\r\n{\"q\":1}\r\n0\r\n\r\n";
    let a = exchange(h.server.proxy_addr, req).await;
    assert_eq!(status(&a), "200", "{a}");
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    let body = String::from_utf8_lossy(&seen[0].body).into_owned();
    assert!(
        body.contains("{\"q\":1}"),
        "upstream got {:?} / {body:?}",
        seen[0].head
    );
}

async fn a_half_closed_caller_gets_its_answer(fast: bool) {
    let up = Upstream::start().await;
    let h = Harness::start(&cfg(up.addr, fast)).await;
    for req in [
        "GET /p/x HTTP/1.1\r\nHost: s\r\n\r\n",
        "POST /p/x HTTP/1.1\r\nHost: s\r\nContent-Length: 3\r\n\r\nabc",
    ] {
        let mut s = TcpStream::connect(h.server.proxy_addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        let a = String::from_utf8_lossy(&out);
        assert_eq!(status(&a), "200", "fast_path={fast} {req:?}: {a:?}");
        assert!(a.ends_with("ok"), "{a:?}");
    }
}

async fn a_401_is_replayed_with_a_new_token_once(fast: bool) {
    let up = Upstream::start().await;
    let text = format!(
        r#"
[proxy]
fast_path = {fast}

[[routes]]
prefix = "/o/"
upstream = "http://{}/up/"
profiles = ["cc"]

[profiles.cc]
type = "oauth2_client_credentials"
client_id = "svc"
client_secret = "s3cret"
token_url = "http://{{echo}}/oauth/token"
replay_max_body_bytes = 64
reauth_min_token_age = "0s"
"#,
        up.addr
    );
    let settings = authsidecar::mock::MockSettings {
        clients: vec![("svc".into(), "s3cret".into())],
        ..Default::default()
    };
    let h = Harness::start_full(&text, &[], settings).await;
    assert_eq!(get(&h.url("/o/a"), &[]).await.status, 200);
    let first = bearer(&up.seen()[0].head);
    assert!(!first.is_empty());
    up.revoked.lock().unwrap().push(first.clone());
    for req in requests("/o/b", "") {
        let a = exchange(h.server.proxy_addr, &req).await;
        assert_eq!(status(&a), "200", "fast_path={fast}: {a}");
    }
    let seen = up.seen();
    // a, then the GET refused and replayed with a new token, then the POST with that token.
    assert_eq!(seen.len(), 4, "{seen:#?}");
    let tokens: Vec<String> = seen.iter().map(|s| bearer(&s.head)).collect();
    assert_eq!(tokens[1], first);
    assert_ne!(tokens[2], first);
    assert_eq!(tokens[3], tokens[2]);
    assert_eq!(seen[3].body, b"abc");
    for s in &seen {
        let n = s
            .head
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("authorization:"))
            .count();
        assert_eq!(n, 1, "{}", s.head);
    }
}

async fn pipelined_mixed_requests_are_answered_in_order(fast: bool) {
    let up = Upstream::start().await;
    let h = Harness::start(&cfg(up.addr, fast)).await;
    let reqs = concat!(
        "GET /p/one HTTP/1.1\r\nHost: s\r\n\r\n",
        "POST /p/two HTTP/1.1\r\nHost: s\r\nContent-Length: 3\r\n\r\nabc",
        "HEAD /p/three HTTP/1.1\r\nHost: s\r\n\r\n",
        "GET /p/four HTTP/1.0\r\nHost: s\r\n\r\n",
    );
    let a = exchange(h.server.proxy_addr, reqs).await;
    assert_eq!(a.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{a}");
    // The HTTP/1.0 request is answered as HTTP/1.0, and the connection ends after it.
    assert!(
        a.contains("HTTP/1.0 200 OK\r\n") && a.ends_with("\r\n\r\nok"),
        "{a}"
    );
    let paths: Vec<String> = up
        .seen()
        .iter()
        .map(|s| s.head.split(' ').nth(1).unwrap_or("").to_string())
        .collect();
    assert_eq!(paths, ["/up/one", "/up/two", "/up/three", "/up/four"]);
    for s in up.seen() {
        assert!(
            s.head
                .to_ascii_lowercase()
                .contains("x-api-key: pk-123\r\n"),
            "{}",
            s.head
        );
    }
}

fn bearer(head: &str) -> String {
    head.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("authorization")
                .then(|| v.trim().trim_start_matches("Bearer ").to_string())
        })
        .unwrap_or_default()
}

/// An `https` upstream (TLS 1.3 with session tickets, in front of the recording upstream): GET
/// and POST reach it with the key, over connections that are kept and reused, also after the
/// server's post-handshake messages have arrived on an idle pooled connection.
async fn an_https_upstream_is_reached_over_pooled_tls(fast: bool) {
    use crate::support::pki::{server_config, tls_front, Pki};
    let up = Upstream::start().await;
    let pki = Pki::new("pipeline-https");
    let front = tls_front(up.addr, server_config(&pki.server("upstream"), None)).await;
    let text = cfg(up.addr, fast).replace(
        &format!("upstream = \"http://{}/up/\"", up.addr),
        &format!(
            "upstream = \"https://127.0.0.1:{}/up/\"\ntls = {{ ca_file = \"{}\", server_name = \"localhost\" }}",
            front.port(),
            pki.ca().display()
        ),
    );
    let h = Harness::start(&text).await;
    let mut s = TcpStream::connect(h.server.proxy_addr).await.unwrap();
    for (i, req) in [
        "GET /p/a HTTP/1.1\r\nHost: s\r\n\r\n",
        "GET /p/b HTTP/1.1\r\nHost: s\r\n\r\n",
        "GET /p/c HTTP/1.1\r\nHost: s\r\n\r\n",
        "POST /p/d HTTP/1.1\r\nHost: s\r\nContent-Length: 3\r\n\r\nabc",
    ]
    .iter()
    .enumerate()
    {
        if i == 2 {
            // Everything the server sent (its session tickets among it) has reached the pooled
            // connection: nothing unacknowledged on the server's side.
            wait_until(
                "the TLS front's sockets to have nothing left in flight to the sidecar",
                Duration::from_secs(5),
                || async {
                    tcp_sockets()
                        .iter()
                        .filter(|t| t.local_port == front.port() && t.state == TCP_ESTABLISHED)
                        .all(|t| t.tx_queue == 0)
                },
            )
            .await;
        }
        s.write_all(req.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while !got.ends_with(b"\r\n\r\nok") {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
                .await
                .expect("answer within 5 s")
                .unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
        }
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 4, "{seen:#?}");
    for s in &seen {
        let head = s.head.to_ascii_lowercase();
        assert!(head.contains("x-api-key: pk-123\r\n"), "{}", s.head);
        assert!(
            head.contains(&format!("host: 127.0.0.1:{}\r\n", front.port())),
            "{}",
            s.head
        );
    }
    assert_eq!(seen[3].body, b"abc");
    // The three GETs share one TLS connection (the last one after the idle pause).
    assert_eq!(seen[0].conn, seen[1].conn, "{seen:#?}");
    assert_eq!(seen[0].conn, seen[2].conn, "{seen:#?}");
}

/// Bodies split across reads, bodies the fast front end reads whole and one over its 64 KiB limit
/// (streamed by hyper), on one keep-alive connection: each arrives whole and in order, and the
/// connection carries the next request.
async fn bodies_of_any_size_arrive_whole_on_one_connection(fast: bool) {
    let up = Upstream::start().await;
    let h = Harness::start(&cfg(up.addr, fast)).await;
    let body = |n: usize| -> Vec<u8> { (0..n).map(|i| b'a' + (i % 26) as u8).collect() };
    let (small, big) = (body(5000), body(70_000));
    let mut s = TcpStream::connect(h.server.proxy_addr).await.unwrap();
    let mut req = b"POST /p/one HTTP/1.1\r\nHost: s\r\nContent-Length: 5000\r\n\r\n".to_vec();
    req.extend_from_slice(&small);
    // Sent in three pieces with pauses, so the body arrives over several reads (the pauses are
    // the point: a slow sender).
    for piece in [&req[..30], &req[30..2000], &req[2000..]] {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut req = b"PUT /p/two HTTP/1.1\r\nHost: s\r\nContent-Length: 70000\r\n\r\n".to_vec();
    req.extend_from_slice(&big);
    req.extend_from_slice(b"GET /p/three HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n");
    s.write_all(&req).await.unwrap();
    let mut answers = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answers))
        .await
        .expect("the sidecar closes after the last request")
        .unwrap();
    let answers = String::from_utf8_lossy(&answers);
    assert_eq!(
        answers.matches("HTTP/1.1 200 OK\r\n").count(),
        3,
        "{answers}"
    );
    let seen = up.seen();
    let got: Vec<(String, usize)> = seen
        .iter()
        .map(|s| {
            (
                s.head.split(' ').nth(1).unwrap_or("").to_string(),
                s.body.len(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("/up/one".to_string(), 5000),
            ("/up/two".to_string(), 70_000),
            ("/up/three".to_string(), 0)
        ]
    );
    assert_eq!(seen[0].body, small);
    assert_eq!(seen[1].body, big);
    for s in &seen {
        assert!(
            s.head
                .to_ascii_lowercase()
                .contains("x-api-key: pk-123\r\n"),
            "{}",
            s.head
        );
    }
}
