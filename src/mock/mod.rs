//! The built-in mock provider: a test double for users' own integration tests, and ours.
//!
//! `authsidecar mock-provider --listen ADDR` runs it alone; `[mock_provider] listen` runs it inside the
//! sidecar (the demo config does). Endpoints:
//!
//! - `ANY /echo/...` (and any other path not below): answers 200 with the request as JSON:
//!   `{"method","path","query","version","headers":[[name,value],…],"body"}` (`body` is the text, or
//!   `body_base64` when it is not UTF-8). Request headers steer it: `X-Mock-Status: 302` sets the
//!   status, `X-Mock-Location` a `Location` header, `X-Mock-Delay-Ms` waits before answering.
//! - `GET /__mock/counters`: `{"echo": N}` requests seen.
//! - `POST /__mock/reset`: zeroes the counters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::serve::{self, ConnInfo, Handler, Limits, Shutdown};

type Body = http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Largest request body the echo reads.
const MAX_ECHO_BODY: usize = 16 * 1024 * 1024;
/// Longest `X-Mock-Delay-Ms` honoured.
const MAX_DELAY_MS: u64 = 120_000;

#[derive(Default, Debug)]
pub struct Counters {
    pub echo: AtomicU64,
}

/// A running mock provider.
pub struct MockProvider {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
    shutdown: Option<Shutdown>,
}

impl MockProvider {
    /// Binds `addr` (port 0 for any free port) and serves until dropped or shut down.
    pub async fn start(addr: SocketAddr) -> std::io::Result<MockProvider> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let shutdown = Shutdown::new();
        spawn(listener, counters.clone(), shutdown.subscribe());
        Ok(MockProvider {
            addr,
            counters,
            shutdown: Some(shutdown),
        })
    }

    /// Requests the echo has seen so far.
    pub fn echo_count(&self) -> u64 {
        self.counters.echo.load(Ordering::SeqCst)
    }

    pub async fn shutdown(mut self) {
        if let Some(s) = self.shutdown.take() {
            s.drain(Duration::from_secs(5)).await;
        }
    }
}

/// Serves the mock on an already bound listener (used by the sidecar for `[mock_provider]`).
pub fn spawn(
    listener: TcpListener,
    counters: Arc<Counters>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let limits = Limits {
        header_read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(120),
    };
    tokio::spawn(serve::serve(
        listener,
        limits,
        shutdown,
        move |_c: ConnInfo| MockHandler(counters.clone()),
    ));
}

#[derive(Clone)]
struct MockHandler(Arc<Counters>);

impl Handler for MockHandler {
    type Body = Body;

    fn call(
        &self,
        req: Request<Incoming>,
    ) -> impl std::future::Future<Output = Response<Body>> + Send + 'static {
        let counters = self.0.clone();
        async move { handle(&counters, req).await }
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(full(serde_json::to_vec(v).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

async fn handle(counters: &Counters, req: Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/__mock/counters") => json_response(
            StatusCode::OK,
            &json!({"echo": counters.echo.load(Ordering::SeqCst)}),
        ),
        (&Method::POST, "/__mock/reset") => {
            counters.echo.store(0, Ordering::SeqCst);
            json_response(StatusCode::OK, &json!({"reset": true}))
        }
        _ => {
            counters.echo.fetch_add(1, Ordering::SeqCst);
            echo(req).await
        }
    }
}

fn header_num(req: &Request<Incoming>, name: &str) -> Option<u64> {
    req.headers().get(name)?.to_str().ok()?.parse().ok()
}

async fn echo(req: Request<Incoming>) -> Response<Body> {
    let status = header_num(&req, "x-mock-status")
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let delay = header_num(&req, "x-mock-delay-ms").map(|d| d.min(MAX_DELAY_MS));
    let location = req.headers().get("x-mock-location").cloned();
    let (parts, body) = req.into_parts();
    let headers: Vec<Value> = parts
        .headers
        .iter()
        .map(|(n, v)| json!([n.as_str(), String::from_utf8_lossy(v.as_bytes())]))
        .collect();
    let body = match Limited::new(body, MAX_ECHO_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": format!("reading the body: {e}")}),
            )
        }
    };
    let mut v = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
    });
    match std::str::from_utf8(&body) {
        Ok(s) => v["body"] = Value::String(s.to_string()),
        Err(_) => {
            v["body_base64"] =
                Value::String(base64::engine::general_purpose::STANDARD.encode(&body))
        }
    }
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut resp = json_response(status, &v);
    if let Some(loc) = location {
        resp.headers_mut().insert(LOCATION, loc);
    }
    resp
}
