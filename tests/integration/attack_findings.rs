//! Defects found by attacking a release build on 127.0.0.1 (raw sockets, a raw recording upstream,
//! both front ends), kept as regression tests. Each test states what the product promises; each
//! failed before its fix (request trailers, answer-head and interim limits, malformed and stalled
//! answer bodies, trailer and chunk-extension limits, framing fields, the profile in a fast-path
//! 502, secrets in the test report's other encodings).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authsidecar::config::{Config, Env};
use authsidecar::Server;
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

// ---------------------------------------------------------------------------------------------
// A raw upstream: the last path segment picks the answer bytes; every request is recorded as the
// exact bytes received (head, body, and any chunked trailer section).
// ---------------------------------------------------------------------------------------------

fn answer(segment: &str) -> Vec<u8> {
    match segment {
        // A head of 65_600 bytes, most of it a long reason phrase (limit: 64 KiB on every path).
        "bighead" => {
            let tail = b"content-length: 2\r\n\r\nok";
            let mut a = b"HTTP/1.1 200 ".to_vec();
            let pad = 65_600 - a.len() - 2 - (tail.len() - 2);
            a.resize(a.len() + pad, b'R');
            a.extend_from_slice(b"\r\n");
            a.extend_from_slice(tail);
            a
        }
        // The same, made of one large header field.
        "bigfield" => {
            let mut a = b"HTTP/1.1 200 OK\r\nx-pad: ".to_vec();
            a.resize(65_560, b'a');
            a.extend_from_slice(b"\r\ncontent-length: 2\r\n\r\nok");
            a
        }
        // 17 interim answers, then the final one (limit: 16 on every path).
        "interim17" => {
            let mut a = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(17);
            a.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
            a
        }
        // A chunk whose data is followed by `XX` instead of CRLF.
        "badchunk" => {
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n".to_vec()
        }
        // A valid chunked body whose first chunk has a 5000-byte extension.
        "longext" => {
            let mut a = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;".to_vec();
            a.resize(a.len() + 5000, b'e');
            a.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
            a
        }
        // A valid chunked body with 200 trailer fields.
        "manytrailers" => {
            let mut a = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
                .to_vec();
            for i in 0..200 {
                a.extend_from_slice(format!("x-t{i}: v\r\n").as_bytes());
            }
            a.extend_from_slice(b"\r\n");
            a
        }
        // Chunk extensions of 16 383 / 16 384 bytes in all, over two chunks.
        "ext16383" | "ext16384" => {
            let total: usize = if segment == "ext16383" {
                16_383
            } else {
                16_384
            };
            let mut a = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;".to_vec();
            a.resize(a.len() + 8000, b'e');
            a.extend_from_slice(b"\r\nhello\r\n5;");
            a.resize(a.len() + total - 8000, b'e');
            a.extend_from_slice(b"\r\nworld\r\n0\r\n\r\n");
            a
        }
        // 128 / 129 trailer fields.
        "trailers128" | "trailers129" => {
            let n = if segment == "trailers128" { 128 } else { 129 };
            let mut a = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
                .to_vec();
            for i in 0..n {
                a.extend_from_slice(format!("x-t{i}: v\r\n").as_bytes());
            }
            a.extend_from_slice(b"\r\n");
            a
        }
        // A trailer section of 16 383 / 16 384 bytes (one field, and the final CRLF).
        "trailerbytes16383" | "trailerbytes16384" => {
            let size: usize = if segment == "trailerbytes16383" {
                16_383
            } else {
                16_384
            };
            let mut a =
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-t: "
                    .to_vec();
            a.resize(a.len() + size - "x-t: ".len() - 4, b'v');
            a.extend_from_slice(b"\r\n\r\n");
            a
        }
        "notmodified" => b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n".to_vec(),
        "twolengths" => {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nok".to_vec()
        }
        _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
    }
}

struct RawUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl RawUpstream {
    async fn start() -> RawUpstream {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rec = seen.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(serve_raw(s, rec.clone()));
            }
        });
        RawUpstream { addr, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }
}

/// One request per connection: head, then a `content-length` body, or a chunked body up to the end
/// of its trailer section; then the scripted answer, then close.
async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>, chunk: &mut [u8; 8192]) -> bool {
    match tokio::time::timeout(Duration::from_secs(3), s.read(chunk)).await {
        Ok(Ok(n)) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        _ => false,
    }
}

async fn serve_raw(mut s: TcpStream, rec: Arc<Mutex<Vec<Vec<u8>>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if !read_more(&mut s, &mut buf, &mut chunk).await {
            return;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        // Up to the blank line that ends the trailer section (after the last chunk).
        loop {
            let body = &buf[end..];
            let done = find(body, b"0\r\n")
                .is_some_and(|z| body[z..].ends_with(b"\r\n\r\n") || &body[z..] == b"0\r\n\r\n");
            if done || !read_more(&mut s, &mut buf, &mut chunk).await {
                break;
            }
        }
    } else {
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:")?.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < end + len {
            if !read_more(&mut s, &mut buf, &mut chunk).await {
                break;
            }
        }
    }
    rec.lock().unwrap().push(buf.clone());
    let path = head.split(' ').nth(1).unwrap_or("").to_string();
    let segment = path
        .split('?')
        .next()
        .unwrap_or("")
        .rsplit('/')
        .next()
        .unwrap_or("");
    if segment == "latetrailers" {
        // The head and a chunk, then 129 trailer fields 300 ms later: over the limit after the
        // head went out (the delay is the point: the head is on its way before the trailers).
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut a = b"0\r\n".to_vec();
        for i in 0..129 {
            a.extend_from_slice(format!("x-t{i}: v\r\n").as_bytes());
        }
        a.extend_from_slice(b"\r\n");
        let _ = s.write_all(&a).await;
        let _ = s.shutdown().await;
        return;
    }
    if segment == "stall" {
        // Head and 3 of 100 body bytes, then nothing for 10 s (a stalled upstream is the point).
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc")
            .await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        return;
    }
    let _ = s.write_all(&answer(segment)).await;
    let _ = s.shutdown().await;
}

/// A sidecar in front of `up` on `/f/` with a static API key, the fast path on or off.
async fn sidecar(up: SocketAddr, fast_path: bool) -> Server {
    let text = format!(
        r#"
[proxy]
fast_path = {fast_path}
idle_timeout = "1s"

[[routes]]
prefix = "/f/"
upstream = "http://{up}/f/"
profiles = ["key"]
timeout = "3s"

[profiles.key]
type = "api_key"
api_key = "attack-key-123456"
[[profiles.key.fields]]
in = "header"
key = "X-Api-Key"
value = "{{{{api_key}}}}"
"#
    );
    let config = Config::from_str_with_env(&with_listeners(&text), &Env::default())
        .unwrap_or_else(|e| panic!("config errors:\n{e}"));
    Server::start(config).await.unwrap()
}

/// The answer to a bodiless `GET path` with `Connection: close`, up to close (at most 3 s).
async fn get_close(proxy: SocketAddr, path: &str) -> String {
    raw(
        proxy,
        format!("GET {path} HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n\r\n").as_bytes(),
        Duration::from_secs(3),
    )
    .await
}

/// The status code of a raw answer (`0` when there is none).
fn status(answer: &str) -> u16 {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The answer to `GET /f/{segment}` from a sidecar with the fast path on and one with it off.
async fn both_paths(segment: &str) -> (String, String) {
    let up = RawUpstream::start().await;
    let fast = sidecar(up.addr, true).await;
    let general = sidecar(up.addr, false).await;
    let path = format!("/f/{segment}");
    let a = get_close(fast.proxy_addr, &path).await;
    let b = get_close(general.proxy_addr, &path).await;
    fast.shutdown().await;
    general.shutdown().await;
    (a, b)
}

/// The answer head without the fields that differ per request (date, request id).
fn head_fields(answer: &str) -> Vec<String> {
    let head = answer.split("\r\n\r\n").next().unwrap_or("");
    let mut fields: Vec<String> = head
        .lines()
        .map(str::to_ascii_lowercase)
        .filter(|l| !l.starts_with("date:") && !l.starts_with("x-request-id:"))
        .collect();
    fields.sort();
    fields
}

// ---------------------------------------------------------------------------------------------
// Control headers reach the upstream as chunked request trailers.
// ---------------------------------------------------------------------------------------------

/// Promise: `X-Authsidecar-*` (and hop-by-hop) fields never reach the upstream. A chunked request
/// that announces them in `Trailer` and sends them in its trailer section gets them delivered: the
/// `Trailer` field is forwarded (docs/configuration.md lists it among the removed hop-by-hop
/// headers, the code keeps it), the trailer frames pass through the body untouched, and hyper's
/// client writes every announced trailer field. The caller's own `X-Api-Key` rides along next to
/// the injected one, so an upstream that merges trailers into headers reads the caller's value.
#[tokio::test]
async fn control_headers_in_request_trailers_never_reach_the_upstream() {
    for fast_path in [true, false] {
        let up = RawUpstream::start().await;
        let s = sidecar(up.addr, fast_path).await;
        let req = b"POST /f/trailers HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nTrailer: X-Authsidecar-User, X-Authsidecar-Profile, X-Api-Key\r\n\r\n5\r\nhello\r\n0\r\nX-Authsidecar-User: mallory\r\nX-Authsidecar-Profile: key\r\nX-Api-Key: caller-chosen\r\n\r\n";
        let answer = raw(s.proxy_addr, req, Duration::from_secs(5)).await;
        assert_eq!(status(&answer), 200, "fast_path={fast_path}: {answer}");
        let seen = up.seen();
        assert_eq!(seen.len(), 1, "fast_path={fast_path}: {seen:?}");
        let sent = seen[0].to_ascii_lowercase();
        assert!(
            !sent.contains("x-authsidecar-"),
            "fast_path={fast_path}: a control header reached the upstream:\n{sent}"
        );
        assert!(
            !sent.contains("caller-chosen"),
            "fast_path={fast_path}: the caller's own X-Api-Key reached the upstream beside the injected one:\n{sent}"
        );
        assert!(
            !sent.contains("\r\ntrailer:"),
            "fast_path={fast_path}: the hop-by-hop Trailer field was forwarded:\n{sent}"
        );
        s.shutdown().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Upstream answers treated differently by the two front ends.
// ---------------------------------------------------------------------------------------------

/// Promise: one 64 KiB limit on an upstream answer's head, on every path (`message.rs`
/// `MAX_ANSWER_HEAD`). The fast path counts the head's bytes; the general path estimates it from
/// the header map (`15 + Σ(name + value + 4)`), which leaves out the reason phrase, and hyper's
/// buffer allows 64 KiB + 8 KiB. A 65 600-byte head is a 502 with the fast path on and a 200 with
/// it off (or on a POST).
#[tokio::test]
async fn answer_head_limit_is_the_same_on_both_paths() {
    for segment in ["bighead", "bigfield"] {
        let (fast, general) = both_paths(segment).await;
        assert_eq!(
            status(&fast),
            status(&general),
            "{segment}: fast path {:?} vs general path {:?}",
            &fast[..fast.len().min(200)],
            &general[..general.len().min(200)]
        );
        assert_eq!(status(&fast), 502, "{segment}: over 64 KiB is refused");
    }
}

/// Promise: at most 16 interim (1xx) answers before the final one (`MAX_INTERIM_ANSWERS`), on
/// every path. hyper's client skips any number of them, so 17 (or 1000) are a 502 on the fast path
/// and a 200 on the general path.
#[tokio::test]
async fn interim_answer_limit_is_the_same_on_both_paths() {
    let (fast, general) = both_paths("interim17").await;
    assert_eq!(
        status(&fast),
        status(&general),
        "fast path {fast:?} vs general path {general:?}"
    );
}

/// Promise: a chunked body already broken in the bytes that come with the head is a 502 (h1.rs
/// `ready`), "not a 200 cut short". The general path sends `200 OK` and the start of the body,
/// then drops the connection.
#[tokio::test]
async fn a_malformed_chunked_answer_is_a_502_on_both_paths() {
    let (fast, general) = both_paths("badchunk").await;
    assert_eq!(status(&fast), 502, "fast path: {fast:?}");
    assert_eq!(status(&general), 502, "general path: {general:?}");
}

/// Promise: every error names the profile. The fast path's check of the first body bytes
/// (`ready`) returns its 502 after the pipeline, where `with_profile` is no longer applied:
/// `"profile": null`, while every other upstream error on the same route names `key`.
#[tokio::test]
async fn a_malformed_answer_error_names_the_profile() {
    let up = RawUpstream::start().await;
    let s = sidecar(up.addr, true).await;
    let answer = get_close(s.proxy_addr, "/f/badchunk").await;
    s.shutdown().await;
    assert_eq!(status(&answer), 502, "{answer}");
    assert!(
        answer.contains(r#""profile":"key""#),
        "the error does not name the profile: {answer}"
    );
}

/// A valid chunked answer whose chunk extension is 5000 bytes: the general path (hyper) relays
/// it whole; the fast path's scanner refused lines over 4096 bytes after the 200 head and part of
/// the body went out, so the caller got a 200 cut short. Both now allow 16 KiB of chunk
/// extensions per body.
#[tokio::test]
async fn long_chunk_extensions_are_treated_alike_on_both_paths() {
    let (fast, general) = both_paths("longext").await;
    assert!(general.ends_with("0\r\n\r\n"), "general path: {general:?}");
    assert!(
        fast.ends_with("0\r\n\r\n"),
        "fast path cut the answer short: ...{:?}",
        &fast[fast.len().saturating_sub(80)..]
    );
}

/// Chunk extensions count per body, not per line: 16 383 bytes over two chunks pass on both
/// paths, 16 384 fail the body on both (a 502, or the connection cut after the head).
#[tokio::test]
async fn the_chunk_extension_limit_is_the_same_on_both_paths() {
    for (segment, passes) in [("ext16383", true), ("ext16384", false)] {
        let (fast, general) = both_paths(segment).await;
        for (path, a) in [("fast", &fast), ("general", &general)] {
            let tail = &a[a.len().saturating_sub(80)..];
            assert_eq!(
                a.ends_with("0\r\n\r\n"),
                passes,
                "{segment}, {path} path: ...{tail:?}"
            );
        }
    }
}

/// A valid chunked answer with 200 trailer fields, to a caller that did not ask for trailers. It
/// was found complete on the fast path (which dropped the trailer section unread) and cut short on
/// the general path; the expectation was that both pass it. hyper's limit (128 trailer fields,
/// `MAX_TRAILER_FIELDS`) is the rule kept: the whole answer comes with its head, so on both paths
/// it is a 502 naming the profile (as any body already broken there).
#[tokio::test]
async fn many_trailer_fields_are_treated_alike_on_both_paths() {
    let (fast, general) = both_paths("manytrailers").await;
    for (path, a) in [("fast", &fast), ("general", &general)] {
        assert_eq!(status(a), 502, "{path} path: {a:?}");
        assert!(a.contains(r#""profile":"key""#), "{path} path: {a:?}");
    }
}

/// Over the trailer limit after the head went out, both paths cut the caller's connection after
/// the chunks before, with no last chunk.
#[tokio::test]
async fn trailers_over_the_limit_after_the_head_cut_the_answer_on_both_paths() {
    let (fast, general) = both_paths("latetrailers").await;
    for (path, a) in [("fast", &fast), ("general", &general)] {
        assert_eq!(status(a), 200, "{path} path: {a:?}");
        assert!(a.ends_with("5\r\nhello\r\n"), "{path} path: {a:?}");
    }
}

/// At the trailer limits both paths pass the body; one field or one byte over, both fail it (a
/// 502 when the broken part came with the head, else the connection cut after the chunks before,
/// with no last chunk): 128 fields pass, 129 do not; a trailer section of 16 383 bytes (its final
/// CRLF included) passes, 16 384 do not.
#[tokio::test]
async fn the_trailer_limits_are_the_same_on_both_paths() {
    for (segment, passes) in [
        ("trailers128", true),
        ("trailers129", false),
        ("trailerbytes16383", true),
        ("trailerbytes16384", false),
    ] {
        let (fast, general) = both_paths(segment).await;
        for (path, a) in [("fast", &fast), ("general", &general)] {
            let tail = &a[a.len().saturating_sub(80)..];
            if passes {
                assert_eq!(status(a), 200, "{segment}, {path} path: {tail:?}");
                assert!(
                    a.ends_with("5\r\nhello\r\n0\r\n\r\n"),
                    "{segment}, {path} path: ...{tail:?}"
                );
            } else {
                let cut = status(a) == 200 && a.ends_with("5\r\nhello\r\n");
                assert!(
                    status(a) == 502 || cut,
                    "{segment}, {path} path: ...{tail:?}"
                );
            }
        }
    }
}

/// The same answer head reaches the caller on both paths: a 304 with `Content-Length` keeps it on
/// the fast path and loses it on the general path; two equal `Content-Length` fields stay two on
/// the fast path and become one on the general path.
#[tokio::test]
async fn answer_framing_fields_are_relayed_alike() {
    for segment in ["notmodified", "twolengths"] {
        let (fast, general) = both_paths(segment).await;
        assert_eq!(
            head_fields(&fast),
            head_fields(&general),
            "{segment}: fast path {fast:?} vs general path {general:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The admin test report shows the client secret in encodings the redactor does not know.
// ---------------------------------------------------------------------------------------------

const CLIENT_SECRET: &str = "Zx9&q+W/e=R<t>y";

/// A token endpoint that refuses the request and, as HTML error pages and gateways do, echoes the
/// posted form: HTML-escaped, and percent-encoded once more (the request body put into a URL).
async fn echoing_idp() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let end = loop {
                    if let Some(i) = find(&buf, b"\r\n\r\n") {
                        break i + 4;
                    }
                    match tokio::time::timeout(Duration::from_secs(3), s.read(&mut chunk)).await {
                        Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:")?.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < end + len {
                    match tokio::time::timeout(Duration::from_secs(3), s.read(&mut chunk)).await {
                        Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
                let body = String::from_utf8_lossy(&buf[end..end + len]).into_owned();
                let secret = body
                    .split('&')
                    .find_map(|p| p.strip_prefix("client_secret="))
                    .map(|v| {
                        percent_encoding::percent_decode_str(&v.replace('+', " "))
                            .decode_utf8_lossy()
                            .into_owned()
                    })
                    .unwrap_or_default();
                let html = secret
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;");
                let twice = percent_encoding::utf8_percent_encode(
                    &body,
                    percent_encoding::NON_ALPHANUMERIC,
                )
                .to_string();
                let page = format!(
                    "{{\"error\":\"invalid_client\",\"error_description\":\"bad secret {html}\",\"error_uri\":\"https://idp.example/help?req={twice}\"}}"
                );
                let out = format!(
                    "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = s.write_all(out.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// Promise: the test report never shows a secret, in any encoding. Beside the raw, percent-, form-,
/// JSON- and base64-encoded forms it masks the HTML-escaped secret (`Zx9&amp;q+W/e=R&lt;t&gt;y`)
/// and the percent-encoded-twice one (`Zx9%2526q%252BW%252Fe%253DR%253Ct%253Ey`), both of which
/// an identity provider's error answer may quote. (Fixed: src/redact.rs.)
#[tokio::test]
async fn the_test_report_masks_html_escaped_and_twice_encoded_secrets() {
    let idp = echoing_idp().await;
    let text = format!(
        r#"
[[routes]]
prefix = "/"
upstream = "http://127.0.0.1:1/"
profiles = ["cc"]

[profiles.cc]
type = "oauth2_client_credentials"
token_url = "http://{idp}/token"
client_id = "attack-client"
client_secret = "{CLIENT_SECRET}"
client_auth = "post"
allow_insecure_http = true
"#
    );
    let config = Config::from_str_with_env(&with_listeners(&text), &Env::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let s = Server::start(config).await.unwrap();
    let r = send(
        Method::POST,
        &format!("http://{}/admin/profiles/cc/test", s.admin_addr),
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        "",
    )
    .await;
    s.shutdown().await;
    assert_eq!(r.status, 200);
    let report = String::from_utf8_lossy(&r.body).into_owned();
    // The report quotes the endpoint's answer (so it had the echo to mask).
    assert!(report.contains("invalid_client"), "{report}");
    let html = "Zx9&amp;q+W/e=R&lt;t&gt;y";
    let twice = "Zx9%2526q%252BW%252Fe%253DR%253Ct%253Ey";
    assert!(
        !report.contains(html),
        "HTML-escaped secret in the report:\n{report}"
    );
    assert!(
        !report.contains(twice),
        "secret percent-encoded twice in the report:\n{report}"
    );
}

/// An answer body that stops coming: the fast path closes both connections after `idle_timeout`
/// (1 s here, h1.rs `relay`); the general path has no such bound and holds the caller's connection
/// for as long as the upstream keeps its own open (10 s here; forever for one that never closes).
#[tokio::test]
async fn a_stalled_answer_body_is_cut_alike_on_both_paths() {
    let up = RawUpstream::start().await;
    for fast_path in [true, false] {
        let s = sidecar(up.addr, fast_path).await;
        let started = std::time::Instant::now();
        let answer = raw(
            s.proxy_addr,
            b"GET /f/stall HTTP/1.1\r\nHost: sidecar\r\n\r\n",
            Duration::from_secs(6),
        )
        .await;
        let took = started.elapsed();
        s.shutdown().await;
        assert!(answer.ends_with("abc"), "fast_path={fast_path}: {answer:?}");
        assert!(
            took < Duration::from_secs(4),
            "fast_path={fast_path}: the caller's connection was held {took:?} by a stalled body"
        );
    }
}
