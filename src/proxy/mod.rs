//! The proxy listener's request path.
//!
//! Every request goes through these phases, in this order ([`Proxy::process`]):
//!
//! 1. **route**: longest prefix of the path; the request path must not climb out with `..`.
//! 2. **select profile**: `X-Authsidecar-Profile` or the route's first profile; only the route's
//!    list is allowed, so a caller cannot borrow another route's credential.
//! 3. **control values**: user, tenant and context are read from `X-Authsidecar-*` headers, which are
//!    then removed with every hop-by-hop header, so none of them reaches the upstream.
//! 4. **obtain credential**: static credentials are part of the compiled plan.
//! 5. **inject**: path parameters and query first (they shape the URI), then headers, then the
//!    payload, which is the only step that buffers the body.
//! 6. **forward**: to the configured authority only, `Host` from the upstream URL, `X-Forwarded-For`
//!    appended, body streamed with a size cap and read timeout, answer bounded by the route timeout.
//! 7. **respond**: the upstream's answer passes through (redirects included, never followed), minus
//!    hop-by-hop headers; errors become the JSON error response of `error.rs`.

pub mod body;
mod headers;
mod route;
mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, HOST};
use http::{HeaderName, Request, Response, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::config::{ClientTls, Config};
use crate::error::{ErrorCode, ProxyError};
use crate::inject::{Inputs, Plan};
use crate::serve::{ConnInfo, Handler};
use body::{GuardedBody, RespBody};
use route::RouteRt;
use upstream::Upstream;

pub use headers::strip_hop_by_hop;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A profile ready for the hot path.
pub struct ProfileRt {
    pub plan: Plan,
}

/// Everything the proxy needs from one config, built once per load.
pub struct Snapshot {
    pub config: Arc<Config>,
    routes: Vec<RouteRt>,
}

impl Snapshot {
    pub fn build(config: Arc<Config>) -> Result<Snapshot, String> {
        let profiles: HashMap<Arc<str>, Arc<ProfileRt>> = config
            .profiles
            .iter()
            .map(|(name, p)| {
                (
                    name.clone(),
                    Arc::new(ProfileRt {
                        plan: Plan::compile(p),
                    }),
                )
            })
            .collect();
        // One pooled client per distinct TLS setting.
        let mut clients: HashMap<ClientTls, Upstream> = HashMap::new();
        let mut routes = Vec::with_capacity(config.routes.len());
        for r in &config.routes {
            let client = match clients.get(&r.tls) {
                Some(c) => c.clone(),
                None => {
                    let c = Upstream::new(&r.tls, config.proxy.connect_timeout)?;
                    clients.insert(r.tls.clone(), c.clone());
                    c
                }
            };
            let profs = r
                .profiles
                .iter()
                .filter_map(|n| profiles.get(n).cloned())
                .collect();
            routes.push(RouteRt::new(r, profs, client));
        }
        Ok(Snapshot { config, routes })
    }

    fn route<'p>(&self, path: &'p str) -> Option<(&RouteRt, &'p str)> {
        // Sorted longest prefix first at load.
        self.routes
            .iter()
            .find_map(|r| r.matches(path).map(|rest| (r, rest)))
    }
}

/// The proxy service shared by all connections.
pub struct Proxy {
    snapshot: Arc<Snapshot>,
    request_seq: AtomicU64,
    id_prefix: u32,
}

impl Proxy {
    pub fn new(snapshot: Arc<Snapshot>) -> Arc<Proxy> {
        let id_prefix = std::process::id()
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0));
        Arc::new(Proxy {
            snapshot,
            request_seq: AtomicU64::new(0),
            id_prefix,
        })
    }

    /// The handler for one connection.
    pub fn handler(self: &Arc<Self>, conn: ConnInfo) -> ProxyHandler {
        ProxyHandler {
            proxy: self.clone(),
            conn,
        }
    }

    fn request_id(&self, given: Option<HeaderValue>) -> String {
        if let Some(v) = given {
            if let Ok(s) = v.to_str() {
                if !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()) {
                    return s.to_string();
                }
            }
        }
        let n = self.request_seq.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}{:012x}", self.id_prefix, n)
    }

    async fn handle(&self, req: Request<Incoming>, conn: &ConnInfo) -> Response<RespBody> {
        let given_id = req.headers().get(X_REQUEST_ID).cloned();
        match self.process(req, conn).await {
            Ok(resp) => resp,
            Err(e) => {
                let rid = self.request_id(given_id);
                if e.code == ErrorCode::Internal {
                    tracing::warn!(code = %e.code, request_id = %rid, "{}", e.message);
                } else {
                    tracing::debug!(code = %e.code, request_id = %rid, "{}", e.message);
                }
                e.into_response(&rid).map(Either::Right)
            }
        }
    }

    async fn process(
        &self,
        req: Request<Incoming>,
        conn: &ConnInfo,
    ) -> Result<Response<RespBody>, ProxyError> {
        let snap = &self.snapshot;
        let (mut parts, body) = req.into_parts();

        // 1. route
        if parts.version != Version::HTTP_2 && parts.uri.authority().is_some() {
            return Err(ProxyError::new(
                ErrorCode::PathInvalid,
                "absolute-form request targets are refused: this is not a forward proxy",
            ));
        }
        let path = parts.uri.path();
        route::check_path(path)?;
        let (route, rest) = snap.route(path).ok_or_else(|| {
            ProxyError::new(ErrorCode::NoRoute, "no route matches the request path")
        })?;

        // 3. control values (taken out before anything else looks at the headers)
        let control = headers::take_control(&mut parts.headers);

        // 2. select profile
        let profile = match &control.profile {
            None => &route.profiles[0],
            Some(v) => route
                .profiles
                .iter()
                .find(|p| p.plan.profile().as_bytes() == v.as_bytes())
                .ok_or_else(|| {
                    ProxyError::new(
                        ErrorCode::ProfileNotAllowed,
                        format!(
                            "the profile named by X-Authsidecar-Profile is not allowed on route {}",
                            route.prefix
                        ),
                    )
                })?,
        };
        let plan = &profile.plan;
        let with_profile = |e: ProxyError| e.with_profile(plan.profile());

        let mut inputs = Inputs::default();
        if let Some(v) = &control.user {
            inputs.user = Some(headers::user(v).map_err(with_profile)?);
        }
        if let Some(v) = &control.tenant {
            inputs.tenant = Some(headers::tenant(v).map_err(with_profile)?);
        }
        for (name, v) in &control.context {
            inputs.context.push((
                name.clone(),
                headers::context(name, v).map_err(with_profile)?,
            ));
        }

        // 4–5. credential and injection: URI first
        let params = if plan.has_path() {
            plan.path_params(&inputs)?
        } else {
            Vec::new()
        };
        let new_query = plan.rewrite_query(parts.uri.query(), &inputs)?;
        let query = new_query.as_deref().or(parts.uri.query());
        parts.uri = route
            .upstream_uri(rest, query, inputs.tenant.as_deref(), &params)
            .map_err(with_profile)?;
        plan.apply_headers(&mut parts.headers, &inputs)?;

        // Body: cap first (a declared length over the cap is refused before reading anything).
        let max = snap.config.proxy.max_body_bytes;
        if let Some(len) = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<u64>().ok())
        {
            if len > max {
                return Err(with_profile(ProxyError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("request body of {len} bytes is over max_body_bytes ({max})"),
                )));
            }
        }
        let guarded = GuardedBody::new(body, max, snap.config.proxy.body_read_timeout);
        let out_body = if plan.has_payload() {
            let bytes = body::read_all(guarded)
                .await
                .map_err(|e| with_profile(e.into_proxy_error()))?;
            let bytes: Bytes =
                plan.rewrite_payload(&parts.method, &mut parts.headers, bytes, &inputs)?;
            Either::Right(Full::new(bytes))
        } else {
            Either::Left(guarded)
        };

        // 6. forward
        parts.headers.remove(HOST);
        append_forwarded_for(&mut parts.headers, conn.peer);
        parts.version = Version::HTTP_11;
        let req = Request::from_parts(parts, out_body);
        let mut resp = route
            .client
            .send(req, route.timeout)
            .await
            .map_err(with_profile)?;

        // 7. respond
        strip_hop_by_hop(resp.headers_mut());
        Ok(resp.map(Either::Left))
    }
}

fn append_forwarded_for(headers: &mut http::HeaderMap, peer: SocketAddr) {
    let ip = peer.ip().to_string();
    let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => format!("{prev}, {ip}"),
        _ => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR, v);
    }
}

/// One connection's view of the proxy.
#[derive(Clone)]
pub struct ProxyHandler {
    proxy: Arc<Proxy>,
    conn: ConnInfo,
}

impl Handler for ProxyHandler {
    type Body = RespBody;

    fn call(
        &self,
        req: Request<Incoming>,
    ) -> impl std::future::Future<Output = Response<RespBody>> + Send + 'static {
        let this = self.clone();
        async move {
            let _in_flight = this
                .conn
                .state
                .start_request(req.version() == Version::HTTP_2);
            this.proxy.handle(req, &this.conn).await
        }
    }
}
