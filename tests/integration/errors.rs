//! One error vocabulary (`src/error.rs`): every answer the sidecar makes itself, on the proxy,
//! auth and admin listeners and for overload, has the same shape. JSON answers are
//! `{"error":{"code","message","profile","request_id"}}` with `X-Authsidecar-Error`,
//! `Cache-Control: no-store`, and `Connection: close` exactly when the code's row says the
//! connection closes, which it then does; the auth listener's HTML pages carry the code header and
//! show the request id. Read over raw sockets, so what the caller gets is what is checked, with
//! `proxy.fast_path` on and (in `scripts/test.sh`'s second run) off.

use std::net::SocketAddr;
use std::time::Duration;

use authsidecar::error::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// One answer read off a raw connection.
struct Answer {
    status: u16,
    /// Lowercased `name: value` lines.
    head: Vec<String>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        let prefix = format!("{name}: ");
        self.head
            .iter()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(str::trim)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one answer (head, then its `Content-Length` body).
async fn read_answer(s: &mut TcpStream) -> Answer {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("no answer in time")
            .unwrap();
        assert!(
            n > 0,
            "closed before an answer: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let len = declared_length(&head);
    let mut body = buf[end + 4..].to_vec();
    while body.len() < len {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("body not in time")
            .unwrap();
        assert!(n > 0, "closed inside the body");
        body.extend_from_slice(&chunk[..n]);
    }
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head}"));
    Answer {
        status,
        head: lines.map(|l| l.to_ascii_lowercase()).collect(),
        body,
    }
}

/// Whether the sidecar closes the connection (within 3 s).
async fn closes(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(3), s.read(&mut b)).await,
        Ok(Ok(0) | Err(_))
    )
}

fn row(code: &str) -> ErrorCode {
    *ErrorCode::ALL
        .iter()
        .find(|c| c.as_str() == code)
        .unwrap_or_else(|| panic!("{code} is not in the table"))
}

/// Checks the shape of a JSON error answer against the code's row; returns the request id.
fn json_shape(a: &Answer, code: &str) -> String {
    let c = row(code);
    let what = format!("{code}: {:?} {}", a.head, a.text());
    assert_eq!(a.status, c.status_u16(), "{what}");
    assert_eq!(a.header("x-authsidecar-error"), Some(code), "{what}");
    assert_eq!(a.header("cache-control"), Some("no-store"), "{what}");
    assert_eq!(a.header("content-type"), Some("application/json"), "{what}");
    assert_eq!(
        a.header("connection") == Some("close"),
        c.closes(),
        "Connection: close and the table disagree: {what}"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&a.body).unwrap_or_else(|e| panic!("{e}: {what}"));
    let e = &v["error"];
    assert_eq!(e["code"], code, "{what}");
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}"
    );
    assert!(e.get("profile").is_some(), "{what}");
    let rid = e["request_id"].as_str().unwrap_or_default().to_string();
    assert!(!rid.is_empty(), "{what}");
    rid
}

/// Sends `req` on a new connection, reads the answer, checks its shape, and checks the close
/// flag is honoured: the connection closes, or it serves `next` (a request that succeeds).
async fn check(addr: SocketAddr, req: &[u8], half_close: bool, code: &str, next: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req).await.unwrap();
    if half_close {
        s.shutdown().await.unwrap();
    }
    let a = read_answer(&mut s).await;
    let rid = json_shape(&a, code);
    if row(code).closes() {
        assert!(closes(&mut s).await, "{code}: the connection stayed open");
    } else {
        s.write_all(next.as_bytes()).await.unwrap();
        let b = read_answer(&mut s).await;
        assert!(b.status < 400, "{code}: then {} {}", b.status, b.text());
    }
    rid
}

const PROXY: &str = r#"
[[routes]]
prefix = "/p/"
upstream = "http://{echo}/echo/"
profiles = ["u"]

[profiles.u]
type = "none"
[[profiles.u.fields]]
in = "header"
key = "X-End-User"
value = "{{user}}"

[[routes]]
prefix = "/j/"
upstream = "http://{echo}/echo/"
profiles = ["j"]

[profiles.j]
type = "api_key"
api_key = "jk"
[[profiles.j.fields]]
in = "payload"
key = "/auth/token"
value = "{{api_key}}"
"#;

const OK_NEXT: &str = "GET /p/ok HTTP/1.1\r\nHost: s\r\nX-Authsidecar-User: alice\r\n\r\n";

#[tokio::test]
async fn proxy_errors_have_the_one_shape_and_honour_the_close_flag() {
    let h = Harness::start(PROXY).await;
    let addr = h.server.proxy_addr;
    let long_user = "a".repeat(257);
    let cases: Vec<(String, bool, &str)> = vec![
        ("GET /nowhere HTTP/1.1\r\nHost: s\r\n\r\n".into(), false, "no_route"),
        ("GET /p/x HTTP/1.1\r\nHost: s\r\n\r\n".into(), false, "user_required"),
        (
            format!("GET /p/x HTTP/1.1\r\nHost: s\r\nX-Authsidecar-User: {long_user}\r\n\r\n"),
            false,
            "user_invalid",
        ),
        (
            "GET /p/x HTTP/1.1\r\nHost: s\r\nX-Authsidecar-User: alice\r\nX-Authsidecar-Profile: j\r\n\r\n".into(),
            false,
            "profile_not_allowed",
        ),
        ("GET /p/x HTTP/1.1\r\n\r\n".into(), false, "bad_request"),
        // The caller's body ends before its declared length (a streamed body, and one the
        // payload placement reads whole): the caller's fault, never `upstream_unavailable`.
        (
            "POST /p/x HTTP/1.1\r\nHost: s\r\nX-Authsidecar-User: alice\r\nContent-Length: 100\r\n\r\nshort".into(),
            true,
            "body_incomplete",
        ),
        (
            "POST /j/x HTTP/1.1\r\nHost: s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":".into(),
            true,
            "body_incomplete",
        ),
    ];
    for (req, half_close, code) in cases {
        check(addr, req.as_bytes(), half_close, code, OK_NEXT).await;
    }
    // The caller's request id is the error's.
    let rid = check(
        addr,
        b"GET /nowhere HTTP/1.1\r\nHost: s\r\nX-Request-Id: caller-rid-1\r\n\r\n",
        false,
        "no_route",
        OK_NEXT,
    )
    .await;
    assert_eq!(rid, "caller-rid-1");
    // Nothing of the cut bodies reached the upstream as a request.
    let r = get(&h.url("/p/ok"), &[("X-Authsidecar-User", "alice")]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn admin_errors_have_the_one_shape() {
    let h = Harness::start(PROXY).await;
    let addr = h.server.admin_addr;
    let bearer = format!("Authorization: Bearer {ADMIN_TOKEN}\r\n");
    let next = format!("GET /admin/profiles HTTP/1.1\r\nHost: a\r\n{bearer}\r\n");
    let cases: Vec<(String, &str)> = vec![
        ("GET /admin/nothing HTTP/1.1\r\nHost: a\r\n\r\n".into(), "not_found"),
        ("GET /admin/profiles HTTP/1.1\r\nHost: a\r\n\r\n".into(), "unauthorized"),
        (
            format!("POST /admin/profiles HTTP/1.1\r\nHost: a\r\n{bearer}Content-Length: 0\r\n\r\n"),
            "method_not_allowed",
        ),
        (
            format!("GET /admin/profiles/nope HTTP/1.1\r\nHost: a\r\n{bearer}\r\n"),
            "profile_not_found",
        ),
        (
            format!("DELETE /admin/tokens/u HTTP/1.1\r\nHost: a\r\n{bearer}\r\n"),
            "not_revocable",
        ),
        (
            format!("POST /admin/profiles/u/test HTTP/1.1\r\nHost: a\r\n{bearer}Content-Length: 0\r\n\r\n"),
            "not_testable",
        ),
    ];
    for (req, code) in cases {
        check(addr, req.as_bytes(), false, code, &next).await;
    }
    // The 401 names its scheme; the 405 what is allowed.
    let r = get(
        &h.admin_url("/admin/tokens"),
        &[("X-Request-Id", "admin-rid")],
    )
    .await;
    assert_eq!(r.error_code(), "unauthorized");
    assert_eq!(r.json()["error"]["request_id"], "admin-rid");
    assert!(r.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer "));
    let r = send(http::Method::DELETE, &h.admin_url("/healthz"), &[], "").await;
    assert_eq!(r.error_code(), "method_not_allowed");
    assert_eq!(r.headers["allow"], "GET");
}

#[tokio::test]
async fn auth_listener_pages_carry_the_code_and_the_request_id() {
    // Port 0 in public_url: the port the auth listener is given.
    let text =
        format!("[auth]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1:0\"\n{PROXY}");
    let h = Harness::start(&text).await;
    let addr = h.server.auth_addr.expect("an auth listener");
    for (req, code) in [
        ("GET /oauth/start/no-such-link HTTP/1.1\r\nHost: a\r\nX-Request-Id: auth-rid-1\r\n\r\n", "link_invalid"),
        ("GET /elsewhere HTTP/1.1\r\nHost: a\r\nX-Request-Id: auth-rid-1\r\n\r\n", "not_found"),
        ("DELETE /oauth/callback HTTP/1.1\r\nHost: a\r\nX-Request-Id: auth-rid-1\r\n\r\n", "method_not_allowed"),
        ("GET /oauth/callback?code=x HTTP/1.1\r\nHost: a\r\nX-Request-Id: auth-rid-1\r\n\r\n", "callback_invalid"),
        ("GET /oauth/callback?state=unknown&code=x HTTP/1.1\r\nHost: a\r\nX-Request-Id: auth-rid-1\r\n\r\n", "link_invalid"),
        // A form posted to an unknown link is answered without reading it: the connection closes.
        ("POST /oauth/start/no-such-link HTTP/1.1\r\nHost: a\r\nX-Request-Id: auth-rid-1\r\nContent-Length: 10\r\n\r\n", "link_invalid"),
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let a = read_answer(&mut s).await;
        let c = row(code);
        let what = format!("{req:?}: {:?} {}", a.head, a.text());
        assert_eq!(a.status, c.status_u16(), "{what}");
        assert_eq!(a.header("x-authsidecar-error"), Some(code), "{what}");
        assert_eq!(a.header("cache-control"), Some("no-store"), "{what}");
        assert!(a.header("content-type").unwrap_or_default().starts_with("text/html"), "{what}");
        assert!(a.text().contains("Request id: <code>auth-rid-1</code>"), "{what}");
        let unread = req.starts_with("POST");
        assert_eq!(a.header("connection") == Some("close"), c.closes() || unread, "{what}");
        if c.closes() || unread {
            assert!(closes(&mut s).await, "{what}: the connection stayed open");
        }
    }
}

#[tokio::test]
async fn the_overload_answer_has_the_one_shape() {
    let h = Harness::start(&format!("[proxy]\nmax_connections = 1\n{PROXY}")).await;
    let addr = h.server.proxy_addr;
    // The one slot, held by a served keep-alive connection.
    let mut held = TcpStream::connect(addr).await.unwrap();
    held.write_all(OK_NEXT.as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut held).await.status, 200);
    // The next connection is answered before it sends anything, then closed.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let a = read_answer(&mut s).await;
    json_shape(&a, "overloaded");
    assert_eq!(a.header("retry-after"), Some("1"));
    assert!(closes(&mut s).await, "the refused connection stayed open");
    drop(held);
}
