//! Test harness: an in-process echo upstream, a sidecar started from a config string with every
//! listener on port 0, small HTTP clients, temporary folders that go away however a test ends, and
//! (in `wait` and `proc`) waits for events and external processes.

#![allow(dead_code)]

pub mod browser;
pub mod fleet;
pub mod pki;
pub mod proc;
pub mod wait;

pub use proc::{tool, Proc};
pub use wait::{wait_for, wait_until};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use authsidecar::config::{Config, Env};
use authsidecar::mock::{MockProvider, MockSettings};
use authsidecar::Server;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A running sidecar with its own echo upstream.
pub struct Harness {
    pub echo: MockProvider,
    pub server: Server,
}

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The environment variable that turns `proxy.fast_path` off in every harness config that does not
/// set it itself: `scripts/test.sh` runs the request-path suites a second time with it set to
/// `false`, so each of their tests runs in both settings.
pub const FAST_PATH_ENV: &str = "AUTHSIDECAR_TEST_FAST_PATH";

/// Whether the harness leaves `proxy.fast_path` at its default (on): false when
/// [`FAST_PATH_ENV`] is `false`, `off` or `0`.
pub fn fast_path_on() -> bool {
    !matches!(
        std::env::var(FAST_PATH_ENV).as_deref(),
        Ok("false" | "off" | "0")
    )
}

/// For a test of a behaviour only the fast path has: true (and a line on stderr saying so) when the
/// run has the fast path off, so the test returns early instead of passing unnoticed.
pub fn skipped_without_fast_path(test: &str, why: &str) -> bool {
    if fast_path_on() {
        return false;
    }
    eprintln!("SKIPPED with {FAST_PATH_ENV}=false: {test}: {why}");
    true
}

/// An access and a refresh token the mock provider issued outside the sidecar (its password
/// grant), as a grant imported from another platform would hold.
pub async fn issued_elsewhere(mock: &MockProvider) -> (String, String) {
    let r = send(
        Method::POST,
        &mock.token_url(),
        &[("content-type", "application/x-www-form-urlencoded")],
        "grant_type=password&username=demo-user&password=demo-password&client_id=demo-client&client_secret=demo-secret",
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    (
        v["access_token"].as_str().unwrap().to_string(),
        v["refresh_token"].as_str().unwrap().to_string(),
    )
}

/// Puts the proxy and admin listeners on free ports (keeping any `[proxy]` settings of `text`),
/// and `fast_path = false` when [`fast_path_on`] is false and `text` does not choose itself.
/// `text` with the test listeners ([`with_listeners`]), parsed; a config error fails the test.
pub fn parse(text: &str) -> Config {
    Config::from_str_with_env(&with_listeners(text), &Env::default())
        .unwrap_or_else(|e| panic!("config errors:\n{e}"))
}

/// The mock provider with its default settings on a port of the OS's choosing.
pub async fn mock() -> MockProvider {
    MockProvider::start_with(([127, 0, 0, 1], 0).into(), MockSettings::default())
        .await
        .unwrap()
}

pub fn with_listeners(text: &str) -> String {
    let admin = format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{ADMIN_TOKEN}\"\n");
    let mut proxy = "[proxy]\nlisten = \"127.0.0.1:0\"\n".to_string();
    if !fast_path_on()
        && !text
            .lines()
            .any(|l| l.trim_start().starts_with("fast_path"))
    {
        proxy.push_str("fast_path = false\n");
    }
    if text.contains("[proxy]\n") {
        format!("{admin}{}", text.replacen("[proxy]\n", &proxy, 1))
    } else {
        format!("{proxy}{admin}{text}")
    }
}

/// Parses a config; `{echo}` is replaced by the echo upstream's address.
pub fn config(text: &str, echo: SocketAddr, env: &[(&str, &str)]) -> Config {
    let text = with_listeners(&text.replace("{echo}", &echo.to_string()));
    Config::from_str_with_env(&text, &Env::from_pairs(env.iter().copied()))
        .unwrap_or_else(|e| panic!("config errors:\n{e}"))
}

impl Harness {
    /// Starts an echo upstream and a sidecar whose config is `LISTENERS` + `text`.
    pub async fn start(text: &str) -> Harness {
        Self::start_with_env(text, &[]).await
    }

    pub async fn start_with_env(text: &str, env: &[(&str, &str)]) -> Harness {
        Self::start_full(text, env, MockSettings::default()).await
    }

    /// With a mock provider configured by `settings`.
    pub async fn start_full(text: &str, env: &[(&str, &str)], settings: MockSettings) -> Harness {
        let echo = MockProvider::start_with(([127, 0, 0, 1], 0).into(), settings)
            .await
            .unwrap();
        let server = Server::start(config(text, echo.addr, env)).await.unwrap();
        Harness { echo, server }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.server.proxy_addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.server.admin_addr, path)
    }
}

/// A response, fully read.
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The error code of a sidecar error response (checks header and body agree).
    pub fn error_code(&self) -> String {
        let v = self.json();
        let code = v["error"]["code"].as_str().unwrap_or_default().to_string();
        assert_eq!(
            self.headers
                .get("x-authsidecar-error")
                .map(|h| h.to_str().unwrap()),
            Some(code.as_str()),
            "header and body codes differ"
        );
        assert_eq!(self.headers["cache-control"], "no-store");
        assert!(v["error"]["request_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty()));
        code
    }

    /// Values of header `name` as the echo upstream saw them.
    pub fn echoed(&self, name: &str) -> Vec<String> {
        self.json()["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
            .map(|h| h[1].as_str().unwrap().to_string())
            .collect()
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Resp {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(body.into())).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client().request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let (parts, body) = resp.into_parts();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// Follows a login link that needs no form: the sidecar's start page → the IdP (the mock, which
/// approves at once) → the sidecar's callback, whose answer it returns.
pub async fn sign_in(login_url: &str) -> Resp {
    let to_idp = get(login_url, &[]).await;
    assert_eq!(
        to_idp.status,
        302,
        "{}",
        String::from_utf8_lossy(&to_idp.body)
    );
    let to_callback = get(&location(&to_idp), &[]).await;
    assert_eq!(to_callback.status, 302);
    get(&location(&to_callback), &[]).await
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Resp {
    send(Method::GET, url, headers, Bytes::new()).await
}

/// Sends raw bytes and reads until the server closes or `wait` passes.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The `Location` of a redirect (panics with the answer when there is none).
pub fn location(r: &Resp) -> String {
    r.headers
        .get("location")
        .unwrap_or_else(|| {
            panic!(
                "no redirect: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            )
        })
        .to_str()
        .unwrap()
        .to_string()
}

/// A temporary folder (`$TMPDIR/authsidecar-<name>-<pid>-<n>`), removed with everything in it
/// when this is dropped: at the end of the test, or when a failing test unwinds. With
/// `AUTHSIDECAR_KEEP_TEST_DIRS=1` a failing test keeps it and says where it is.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "authsidecar-{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        // A folder of the same name left by an earlier process with this pid.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() && std::env::var_os("AUTHSIDECAR_KEEP_TEST_DIRS").is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An address where connections are refused: a socket bound to a port-0 address and never
/// listening. Nothing else can bind that port while this is alive (unlike a port that was free a
/// moment ago).
pub struct Refused {
    pub addr: SocketAddr,
    _socket: tokio::net::TcpSocket,
}

pub fn refused() -> Refused {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
    let addr = socket.local_addr().unwrap();
    Refused {
        addr,
        _socket: socket,
    }
}

/// Where `needle` first stands in `hay` (raw-socket tests looking for the end of a head).
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The `Content-Length` a raw message head declares (any case), 0 when it has none or it is not a
/// number.
pub fn declared_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// One IPv4 TCP socket of this host as `/proc/net/tcp` shows it (an observable for waits: a
/// socket's state, or bytes not yet taken by the other end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    pub local_port: u16,
    pub remote_port: u16,
    /// The kernel's state number: 1 ESTABLISHED, 6 TIME_WAIT, 8 CLOSE_WAIT, 10 LISTEN, …
    pub state: u8,
    /// Bytes sent and not yet acknowledged by the peer.
    pub tx_queue: u32,
    /// Bytes received and not yet read.
    pub rx_queue: u32,
}

pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_CLOSE_WAIT: u8 = 8;

/// The IPv4 TCP sockets of this host on 127.0.0.1 at both ends.
pub fn tcp_sockets() -> Vec<TcpSocket> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = |field: &str| -> Option<u16> {
        let (ip, port) = field.split_once(':')?;
        (ip == "0100007F").then(|| u16::from_str_radix(port, 16).ok())?
    };
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (tx, rx) = f.get(4)?.split_once(':')?;
            Some(TcpSocket {
                local_port: port(f.get(1)?)?,
                remote_port: port(f.get(2)?)?,
                state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                tx_queue: u32::from_str_radix(tx, 16).ok()?,
                rx_queue: u32::from_str_radix(rx, 16).ok()?,
            })
        })
        .collect()
}

/// A stable address in front of a listener that moves, as the balancer in front of a real
/// deployment: a sidecar restarted in a test gets a new auth port (port 0), while its links and its
/// callback must keep one public URL. The relay binds port 0 once, keeps it for its life, and
/// passes each connection to whatever [`Relay::point_to`] last named.
pub struct Relay {
    pub addr: SocketAddr,
    target: std::sync::Arc<std::sync::Mutex<Option<SocketAddr>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start() -> Relay {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let target = std::sync::Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
        let to = target.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = l.accept().await {
                let Some(dest) = *to.lock().unwrap() else {
                    continue;
                };
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(dest).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Relay {
            addr,
            target,
            accept,
        }
    }

    /// Where new connections go from now on.
    pub fn point_to(&self, dest: SocketAddr) {
        *self.target.lock().unwrap() = Some(dest);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Asserts that one of `all` (config errors, log lines) contains `needle`, showing them all if not.
pub fn has(all: &[String], needle: &str) {
    assert!(
        all.iter().any(|e| e.contains(needle)),
        "no error containing {needle:?} in:\n{}",
        all.join("\n")
    );
}
