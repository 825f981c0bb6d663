//! The proxy listener's request path.
//!
//! The journey of a request is written once, in `pipeline.rs`; this module holds what its phases
//! use: the config snapshot (routes, profiles, upstream clients), `resolve` (head checks, route,
//! profile selection, control values), the credential phase with login links, and `build_head`
//! (path parameters, query and header fields). The front ends are hyper (`Proxy::handle`, every
//! protocol) and the HTTP/1 fast front end (`h1.rs`, HTTP/1.1 requests without a body or with a
//! small one of declared length, when `proxy.fast_path` is on); the HTTP/1 message rules both apply are in
//! `message.rs`.
//!
//! What a caller can count on, whichever front end serves it:
//! - a route is the longest prefix of the path, and the path can never climb out of the route's
//!   upstream base path, however the upstream decodes it;
//! - only the route's own profiles can be chosen (`X-Authsidecar-Profile`), so a caller cannot
//!   borrow another route's credential;
//! - control and hop-by-hop headers never reach the upstream;
//! - the upstream authority is the configured one; `Host` comes from it;
//! - errors are the JSON error answer of `error.rs`.

pub mod body;
pub(crate) mod h1;
pub(crate) mod headers;
pub(crate) mod message;
pub(crate) mod pipeline;
mod probe;
pub(crate) mod route;
mod sign;
mod upstream;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, HOST};
use http::{HeaderMap, HeaderName, Method, Request, Response, Uri, Version};
use http_body_util::Either;
use hyper::body::Incoming;

use crate::config::{ClientTls, Config};
use crate::error::{ErrorCode, ProxyError};
use crate::inject::{Inputs, Plan};
use crate::metrics::{Metrics, RequestMetrics};
use crate::oauth::OAuthSource;
use crate::serve::{ConnInfo, Handler};
use crate::store::Store;
use crate::token::{Policy, TokenCache, TokenErrorKind, TokenKey, TokenSource};
use body::RespBody;
use route::RouteRt;
use upstream::Upstream;

pub use headers::{strip_hop_by_hop, tenant_bytes as validate_tenant, tenant_for};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Checks what hyper leaves to the application: the request target's length, one valid `Host` on
/// HTTP/1.1 (at most one elsewhere), and no `Content-Length` next to `Transfer-Encoding` (the body
/// was read as chunked; the length is dropped so it never travels upstream).
fn check_head(parts: &mut http::request::Parts, max_uri_bytes: usize) -> Result<(), ProxyError> {
    let target = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > max_uri_bytes {
        return Err(ProxyError::new(
            ErrorCode::UriTooLong,
            format!(
                "the request target is {target} bytes; proxy.max_uri_bytes allows {max_uri_bytes}"
            ),
        ));
    }
    let mut hosts = parts.headers.get_all(HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::new(
            ErrorCode::BadRequest,
            "the request has more than one Host header",
        ));
    }
    match first {
        None if parts.version == Version::HTTP_11 => {
            return Err(ProxyError::new(
                ErrorCode::BadRequest,
                "an HTTP/1.1 request needs a Host header",
            ))
        }
        Some(h) if http::uri::Authority::try_from(h.as_bytes()).is_err() || h.is_empty() => {
            return Err(ProxyError::new(
                ErrorCode::BadRequest,
                "the Host header is not a valid host[:port]",
            ))
        }
        _ => {}
    }
    let chunked = message::request_chunked(
        parts
            .headers
            .get_all(http::header::TRANSFER_ENCODING)
            .iter()
            .map(HeaderValue::as_bytes),
    )
    .map_err(|m| ProxyError::new(ErrorCode::BadRequest, m))?;
    if chunked {
        parts.headers.remove(CONTENT_LENGTH);
    }
    Ok(())
}

/// How an end user's credentials get into the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Not per user: the profile's own credentials (machine tokens).
    Machine,
    /// Authorization code: the user signs in at the IdP.
    Code,
    /// `oauth2_password` with `per_user`: username and password on the start page, exchanged at
    /// once; only the tokens are kept.
    Password,
    /// `basic` with `per_user`: username and password on the start page, kept encrypted.
    Basic,
    /// `api_key` with `per_user`: the key on the start page, kept encrypted.
    ApiKey,
    /// `oauth1` with `per_user`: three-legged OAuth 1.0a; the user authorizes at the provider,
    /// and their token and token secret sign the requests.
    OAuth1,
}

/// Where a profile's tokens (or per-user credentials) come from, ready for the hot path.
pub struct OAuthRt {
    /// The IdP client (`None` for per-user basic and api_key profiles).
    pub source: Option<Arc<OAuthSource>>,
    /// Three-legged OAuth 1.0a: the provider's token endpoints.
    pub oauth1: Option<Arc<crate::oauth::oauth1::ThreeLegged>>,
    dyn_source: Arc<dyn TokenSource>,
    /// Credentials belong to end users (kept in the store as grants).
    pub per_user: bool,
    /// Machine-fetched tokens kept per end user (a JWT bearer assertion about `{{user}}`).
    pub user_keyed: bool,
    pub entry: Entry,
    policy: Policy,
    fingerprint: u64,
    pub tenancy: bool,
    /// Any IdP URL uses `{tenant}`.
    needs_tenant: bool,
    /// Keys of the profile's `user_fields`.
    user_fields: Vec<String>,
    /// Where the profile's identity-provider requests use `{{context.NAME}}` (checked per
    /// request; a machine token is kept per set of values).
    context_uses: Vec<crate::config::dynamic::DynUse>,
    reauth_on: Vec<u16>,
    /// A token younger than this is not replaced after a `reauth_on` answer.
    min_token_age: std::time::Duration,
    replay_max: u64,
}

impl OAuthRt {
    /// The cache key of this profile's token for a request with `tenant`.
    pub fn key(&self, profile: &Arc<str>, tenant: Option<&str>, user: Option<&str>) -> TokenKey {
        TokenKey {
            profile: profile.clone(),
            fingerprint: self.fingerprint,
            tenant: if self.tenancy {
                tenant.map(Arc::from)
            } else {
                None
            },
            user: if self.per_user || self.user_keyed {
                user.map(Arc::from)
            } else {
                None
            },
            context: None,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

/// A profile ready for the hot path.
pub struct ProfileRt {
    pub plan: Plan,
    pub oauth: Option<OAuthRt>,
    /// Signing profiles (`aws_sigv4`, `hmac`, `oauth1`): the sign phase's signer.
    pub sign: Option<Arc<crate::config::Signing>>,
    /// The profile's `tenant_pattern` (one DNS label when `None`).
    pub tenant_pattern: Option<regex::Regex>,
}

/// Profiles of `snap` whose discovery document is not read, each as `name (why)`.
pub fn discovery_not_ready(snap: &Snapshot) -> Vec<String> {
    let mut out: Vec<String> = snap
        .profiles
        .iter()
        .filter_map(|(name, p)| {
            let d = p.oauth.as_ref()?.source.as_ref()?.discovery.as_ref()?;
            (!d.is_ready()).then(|| format!("{name} ({})", d.error().unwrap_or_default()))
        })
        .collect();
    out.sort();
    out
}

/// Everything the proxy needs from one config, built once per load.
pub struct Snapshot {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// Metrics of requests that match no route (or fail before a profile is chosen).
    unrouted: RequestMetrics,
    access_log: bool,
    /// Query parameters that profiles inject: their values are `REDACTED` in the access log.
    injected_query_names: Vec<String>,
    routes: Vec<RouteRt>,
    pub profiles: HashMap<Arc<str>, Arc<ProfileRt>>,
    /// Grants, tickets and authorization state.
    pub store: Arc<Store>,
}

impl Snapshot {
    /// Whether a cached token under `key` belongs to a profile of this config with the same token
    /// settings (same name and fingerprint).
    pub fn has_token_key(&self, key: &TokenKey) -> bool {
        self.profiles
            .get(&key.profile)
            .and_then(|p| p.oauth.as_ref())
            .is_some_and(|o| o.fingerprint == key.fingerprint)
    }

    pub fn build(
        config: Arc<Config>,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
    ) -> Result<Snapshot, String> {
        let mut profiles: HashMap<Arc<str>, Arc<ProfileRt>> = HashMap::new();
        for (name, p) in &config.profiles {
            let user_fields: Vec<String> = p.user_fields.iter().map(|f| f.key.clone()).collect();
            let three_legged = crate::oauth::oauth1::ThreeLegged::new(p)
                .map_err(|e| format!("profile {name}: {e}"))?;
            let oauth = match OAuthSource::new(p).map_err(|e| format!("profile {name}: {e}"))? {
                // Per-user credentials kept as grants in the store, never refreshed: three-legged
                // OAuth 1.0a (an upstream's 401 re-reads the grant and replays the request, signed
                // afresh), and the basic and API-key credentials end users type in.
                None if three_legged.is_some() || p.per_user => {
                    let (entry, reauth_on, replay_max) = match (&three_legged, &p.kind) {
                        (Some(_), _) => (
                            Entry::OAuth1,
                            vec![401],
                            crate::config::DEFAULT_REPLAY_MAX_BODY_BYTES,
                        ),
                        (None, crate::config::ProfileKind::UserApiKey) => {
                            (Entry::ApiKey, Vec::new(), 0)
                        }
                        (None, _) => (Entry::Basic, Vec::new(), 0),
                    };
                    Some(OAuthRt {
                        source: None,
                        oauth1: three_legged.map(Arc::new),
                        dyn_source: Arc::new(crate::oauth::grants::UserGrants::new(
                            None,
                            store.clone(),
                        )),
                        per_user: true,
                        user_keyed: false,
                        entry,
                        policy: Policy::default(),
                        fingerprint: 0,
                        tenancy: p.tenancy,
                        needs_tenant: false,
                        user_fields,
                        context_uses: Vec::new(),
                        reauth_on,
                        min_token_age: std::time::Duration::ZERO,
                        replay_max,
                    })
                }
                None => None,
                Some(src) => {
                    let s = src.settings();
                    let (fingerprint, reauth_on, replay_max, min_token_age) = (
                        s.fingerprint,
                        s.reauth_on.clone(),
                        s.replay_max_body_bytes,
                        s.reauth_min_token_age,
                    );
                    let policy = src.policy();
                    let needs_tenant = s.needs_tenant();
                    let context_uses: Vec<_> = s
                        .dynamic
                        .iter()
                        .filter(|u| matches!(u.var, crate::config::dynamic::DynVar::Context(_)))
                        .cloned()
                        .collect();
                    let _ = src.metrics.set(metrics.clone());
                    let entry = match s.grant {
                        crate::config::Grant::AuthorizationCode(_) => Entry::Code,
                        crate::config::Grant::UserPassword => Entry::Password,
                        _ => Entry::Machine,
                    };
                    let per_user = entry != Entry::Machine;
                    let user_keyed =
                        matches!(&s.grant, crate::config::Grant::JwtBearer(b) if b.per_user);
                    let source = Arc::new(src);
                    let dyn_source: Arc<dyn TokenSource> = if per_user {
                        Arc::new(crate::oauth::grants::UserGrants::new(
                            Some(source.clone()),
                            store.clone(),
                        ))
                    } else {
                        source.clone()
                    };
                    Some(OAuthRt {
                        oauth1: None,
                        needs_tenant,
                        user_fields,
                        context_uses,
                        dyn_source,
                        per_user,
                        user_keyed,
                        entry,
                        source: Some(source),
                        policy,
                        fingerprint,
                        tenancy: p.tenancy,
                        reauth_on,
                        min_token_age,
                        replay_max,
                    })
                }
            };
            profiles.insert(
                name.clone(),
                Arc::new(ProfileRt {
                    plan: Plan::compile(p),
                    oauth,
                    sign: match &p.kind {
                        crate::config::ProfileKind::Sign(s) => Some(s.clone()),
                        _ => None,
                    },
                    tenant_pattern: p.tenant_pattern.clone(),
                }),
            );
        }
        // One pooled client per distinct TLS setting and connector. A route's connector wins; else
        // the selected profile's; else direct.
        let mut clients: HashMap<(ClientTls, Option<String>), Upstream> = HashMap::new();
        let mut routes = Vec::with_capacity(config.routes.len());
        for r in &config.routes {
            let mut profs = Vec::with_capacity(r.profiles.len());
            for name in &r.profiles {
                let (Some(rt), Some(cfg)) = (profiles.get(name), config.profile(name)) else {
                    continue;
                };
                let connector = r.connector.clone().or_else(|| cfg.connector.clone());
                let key = (r.tls.clone(), connector.as_ref().map(|c| c.name.clone()));
                let client = match clients.get(&key) {
                    Some(c) => c.clone(),
                    None => {
                        let c = Upstream::new(&r.tls, connector, config.proxy.connect_timeout)?;
                        clients.insert(key, c.clone());
                        c
                    }
                };
                profs.push((rt.clone(), client, metrics.for_request(&r.prefix, name)));
            }
            routes.push(RouteRt::new(r, profs));
        }
        Ok(Snapshot {
            unrouted: metrics.for_request("", ""),
            access_log: config.proxy.access_log,
            injected_query_names: config
                .profiles
                .values()
                .flat_map(|p| p.fields.iter())
                .filter(|f| f.location.as_str() == "query")
                .map(|f| f.key.to_string())
                .collect(),
            metrics,
            config,
            routes,
            profiles,
            store,
        })
    }

    /// The prefix of the route that serves `path`, and the rest of the path (benchmarks, admin).
    pub fn route_prefix<'p>(&self, path: &'p str) -> Option<(&str, &'p str)> {
        self.route(path).map(|(r, rest)| (r.prefix.as_str(), rest))
    }

    fn route<'p>(&self, path: &'p str) -> Option<(&RouteRt, &'p str)> {
        // Sorted longest prefix first at load.
        self.routes
            .iter()
            .find_map(|r| r.matches(path).map(|rest| (r, rest)))
    }
}

/// Counters of the request path (exported as metrics later).
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Requests replayed once after a `reauth_on` answer.
    pub replays: AtomicU64,
    /// `reauth_on` answers passed through because the body could not be replayed.
    pub replays_skipped: AtomicU64,
    /// `reauth_on` answers passed through because the token was younger than
    /// `reauth_min_token_age` (no new token was asked for).
    pub reauth_too_young: AtomicU64,
}

/// The proxy service shared by all connections.
pub struct Proxy {
    /// Swapped by a config reload; a request keeps the snapshot it started with.
    snapshot: arc_swap::ArcSwap<Snapshot>,
    cache: Arc<TokenCache>,
    pub stats: Arc<ProxyStats>,
}

pub(crate) fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok())
}

impl Proxy {
    pub fn new(
        snapshot: Arc<Snapshot>,
        cache: Arc<TokenCache>,
        stats: Arc<ProxyStats>,
    ) -> Arc<Proxy> {
        Arc::new(Proxy {
            snapshot: arc_swap::ArcSwap::new(snapshot),
            cache,
            stats,
        })
    }

    /// The handler for one connection.
    pub fn handler(self: &Arc<Self>, conn: ConnInfo) -> ProxyHandler {
        let forwarded_for = HeaderValue::from_str(&conn.peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        let trusted = self
            .snapshot
            .load()
            .config
            .proxy
            .trusted_proxies
            .iter()
            .any(|n| n.contains(conn.peer.ip()));
        ProxyHandler {
            proxy: self.clone(),
            conn: Arc::new(ConnCtx {
                forwarded_for,
                trusted,
            }),
        }
    }

    fn request_id(&self, given: Option<HeaderValue>) -> String {
        crate::error::request_id(given.as_ref())
    }

    /// Puts a new snapshot in place (config reload); requests in flight finish on the old one.
    pub fn swap(&self, snapshot: Arc<Snapshot>) {
        self.snapshot.store(snapshot);
    }

    /// Metrics and the access log line of one finished request.
    fn finish(
        &self,
        snap: &Snapshot,
        metrics: Option<&RequestMetrics>,
        status: u16,
        started: tokio::time::Instant,
        logged: Option<(Method, Uri)>,
        rid: &str,
    ) {
        let took = started.elapsed();
        let m = metrics.unwrap_or(&snap.unrouted);
        m.record(status, took);
        if let Some((method, uri)) = logged {
            // Route prefix and profile come from the config. The path is the caller's; values of
            // query parameters that carry credentials are REDACTED; no header values.
            let query = uri
                .query()
                .map(|q| crate::logging::redact_query(q, &snap.injected_query_names));
            tracing::info!(
                target: "authsidecar::access",
                method = %method,
                path = uri.path(),
                query = query.as_deref().unwrap_or(""),
                route = %m.route,
                profile = %m.profile,
                status,
                ms = (took.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
                request_id = %rid,
            );
        }
    }

    /// The general front end: one request as hyper read it, through the pipeline.
    async fn handle(&self, req: Request<Incoming>, conn: &ConnCtx) -> Response<RespBody> {
        let snap = &self.snapshot.load_full();
        let (mut parts, body) = req.into_parts();
        let begun = self.begin(snap, &mut parts);
        // Content-Length with Transfer-Encoding (hyper reads the body as chunked): the message is
        // served, but the connection is closed after it (RFC 9112 §6.1).
        let framing_conflict = parts.headers.contains_key(http::header::TRANSFER_ENCODING)
            && parts.headers.contains_key(CONTENT_LENGTH);
        let mut metrics = None;
        let result = match resolve(snap, &mut parts, &mut metrics) {
            Ok(r) => {
                let transport = pipeline::HyperTransport(r.client, snap.config.proxy.idle_timeout);
                self.journey(
                    snap,
                    conn,
                    r,
                    &mut parts,
                    pipeline::CallerBody::Incoming(body),
                    &transport,
                )
                .await
            }
            Err(e) => Err(e),
        };
        let mut resp = match result {
            Ok(resp) => {
                self.done(snap, metrics, resp.status().as_u16(), begun);
                resp.map(Either::Left)
            }
            Err(e) => self.fail(snap, e, begun, metrics).map(Either::Right),
        };
        if framing_conflict {
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// What steps 0–3 found for a request: its route, profile and control values.
pub(crate) struct Resolved<'s> {
    route: &'s RouteRt,
    /// Where the part of the path after the route prefix starts.
    rest_start: usize,
    profile: &'s Arc<ProfileRt>,
    client: &'s Upstream,
    metrics: &'s RequestMetrics,
    inputs: Inputs,
}

/// Steps 0–3: checks the head, finds the route, takes the control headers out and selects the
/// profile. Nothing here waits or has side effects, so the HTTP/1 fast path can run it and still
/// hand the request to the general path.
fn resolve<'s>(
    snap: &'s Snapshot,
    parts: &mut http::request::Parts,
    metrics: &mut Option<&'s RequestMetrics>,
) -> Result<Resolved<'s>, ProxyError> {
    // 0. the request head: target length, Host (RFC 9112 §3.2), framing
    check_head(parts, snap.config.proxy.max_uri_bytes)?;

    // 1. route
    if parts.version != Version::HTTP_2 && parts.uri.authority().is_some() {
        return Err(ProxyError::new(
            ErrorCode::PathInvalid,
            "absolute-form request targets are refused: this is not a forward proxy",
        ));
    }
    let path = parts.uri.path();
    route::check_path(path)?;
    let (route, rest) = snap
        .route(path)
        .ok_or_else(|| ProxyError::new(ErrorCode::NoRoute, "no route matches the request path"))?;
    let rest_start = path.len() - rest.len();

    // 3. control values (taken out before anything else looks at the headers)
    let control = headers::take_control(&mut parts.headers);

    // 2. select profile
    let (profile, client, m) = match &control.profile {
        None => &route.profiles[0],
        Some(v) => route
            .profiles
            .iter()
            .find(|(p, _, _)| p.plan.profile().as_bytes() == v.as_bytes())
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
    *metrics = Some(m);
    let with_profile = |e: ProxyError| e.with_profile(profile.plan.profile());

    let mut inputs = Inputs::default();
    if let Some(v) = &control.user {
        inputs.user = Some(headers::user(v).map_err(with_profile)?);
    }
    if let Some(v) = &control.tenant {
        inputs.tenant =
            Some(headers::tenant(v, profile.tenant_pattern.as_ref()).map_err(with_profile)?);
    }
    for (name, v) in &control.context {
        inputs.context.push((
            name.clone(),
            headers::context(name, v).map_err(with_profile)?,
        ));
    }
    Ok(Resolved {
        route,
        rest_start,
        profile,
        client,
        metrics: m,
        inputs,
    })
}

/// Step 7's header part: `Host` comes from the upstream URL, forwarding headers from untrusted
/// peers are dropped, and the caller's address is appended to `X-Forwarded-For`.
fn forwarding(headers: &mut HeaderMap, conn: &ConnCtx) {
    headers.remove(HOST);
    if !conn.trusted {
        headers::remove_all_of(headers, &FORWARDING_HEADERS);
    }
    append_forwarded_for(headers, &conn.forwarded_for);
}

impl Proxy {
    /// Step 5: the profile's token (OAuth profiles), put into `inputs`; returns its cache key.
    async fn credential(
        &self,
        snap: &Snapshot,
        profile: &ProfileRt,
        inputs: &mut Inputs,
    ) -> Result<Option<TokenKey>, ProxyError> {
        let Some(o) = profile.oauth.as_ref() else {
            return Ok(None);
        };
        let plan = &profile.plan;
        let with_profile = |e: ProxyError| e.with_profile(plan.profile());
        // A profile whose discovery document is not read yet is not ready: `idp_unavailable`,
        // and nothing is sent to the provider.
        if let Some(Err(e)) = o.source.as_ref().map(|s| s.discovered()) {
            return Err(e.into_proxy_error(plan.profile()));
        }
        // Per-user profiles without a tenant in the request ask the end user on the start page.
        if inputs.tenant.is_none() && o.needs_tenant && !o.per_user {
            return Err(with_profile(ProxyError::new(
                ErrorCode::TenantInvalid,
                "X-Authsidecar-Tenant is required: the profile's identity provider URLs use {tenant}",
            )));
        }
        if (o.per_user || o.user_keyed) && inputs.user.is_none() {
            return Err(with_profile(ProxyError::new(
                ErrorCode::UserRequired,
                "X-Authsidecar-User is required: this profile's tokens belong to end users",
            )));
        }
        let mut key = o.key(
            plan.profile(),
            inputs.tenant.as_deref(),
            inputs.user.as_deref(),
        );
        if !o.per_user && !o.context_uses.is_empty() {
            // Machine tokens whose requests use context values: checked for where they go, and
            // part of the key (two values never share a token).
            let values = context_values(&o.context_uses, &inputs.context).map_err(with_profile)?;
            key.context = Some(Arc::new(values));
        }
        let token = match self.cache.get(&key, &o.dyn_source, &o.policy).await {
            Ok(t) => t,
            Err(e) if e.kind == TokenErrorKind::AuthorizationRequired => {
                return Err(Box::pin(self.login_required(snap, plan.profile(), inputs)).await)
            }
            Err(e) => return Err(e.into_proxy_error(plan.profile())),
        };
        if o.per_user {
            // A grant from before a user field was added: ask the user again.
            if o.user_fields.iter().any(|k| token.user_field(k).is_none()) {
                return Err(Box::pin(self.login_required(snap, plan.profile(), inputs)).await);
            }
            if inputs.tenant.is_none() {
                inputs.tenant = token.entered("tenant").map(str::to_owned);
            }
        }
        inputs.token = Some(token);
        Ok(Some(key))
    }
}

impl Proxy {
    /// `authorization_required` with a fresh login link for this user.
    async fn login_required(
        &self,
        snapshot: &Snapshot,
        profile: &Arc<str>,
        inputs: &Inputs,
    ) -> ProxyError {
        let user = inputs.user.clone().unwrap_or_default();
        match login_link(
            snapshot,
            profile,
            user,
            inputs.tenant.clone(),
            &inputs.context,
        )
        .await
        {
            Ok(link) => {
                let mut e = ProxyError::new(
                    ErrorCode::AuthorizationRequired,
                    "the end user must authorize this profile: show them login_url",
                )
                .with_profile(profile);
                e.login = Some(link);
                e
            }
            Err(e) => e,
        }
    }
}

/// A fresh login link for `user` of per-user profile `profile` (and `tenant`, when the profile
/// keeps grants per tenant; without one the start page asks for it): the link and its lifetime in
/// seconds. `context` must hold the values the authorization URL uses. The proxy's
/// `authorization_required` and the admin API's login links on demand both make theirs here.
pub(crate) async fn login_link(
    snapshot: &Snapshot,
    profile: &Arc<str>,
    user: String,
    tenant: Option<String>,
    context: &[(String, String)],
) -> Result<(String, u64), ProxyError> {
    let Some(auth) = snapshot.config.auth.clone() else {
        return Err(
            ProxyError::new(ErrorCode::Internal, "no [auth] listener for login links")
                .with_profile(profile),
        );
    };
    let settings = snapshot
        .profiles
        .get(profile)
        .and_then(|p| p.oauth.as_ref())
        .and_then(|o| o.source.as_ref())
        .map(|s| s.settings());
    let uses = settings.map_or(&[][..], |s| s.dynamic.as_slice());
    let kept: Vec<(String, String)> = match context_values(uses, context) {
        Ok(values) => values
            .into_iter()
            .map(|(k, v)| (k.trim_start_matches("context.").to_string(), v))
            .collect(),
        Err(e) => return Err(e.with_profile(profile)),
    };
    let ticket = crate::oauth::grants::Ticket {
        profile: profile.to_string(),
        user,
        // Only profiles with tenancy keep grants per tenant.
        tenant: tenant.filter(|_| {
            snapshot
                .profiles
                .get(profile)
                .and_then(|p| p.oauth.as_ref())
                .is_some_and(|o| o.tenancy)
        }),
        context: kept,
        test: None,
    };
    let store = snapshot.store.clone();
    let ttl = auth.ticket_ttl;
    let made =
        tokio::task::spawn_blocking(move || crate::oauth::grants::new_ticket(&store, ttl, &ticket))
            .await;
    match made {
        Ok(Ok(id)) => Ok((
            format!("{}/oauth/start/{id}", auth.public_url),
            ttl.as_secs(),
        )),
        _ => {
            let mut e = ProxyError::new(
                ErrorCode::TokenStoreUnavailable,
                "the token store is unavailable; try again",
            )
            .with_profile(profile);
            e.retry_after = Some(1);
            Err(e)
        }
    }
}

/// The request's values for the `{{context.NAME}}` uses among `uses`, as (`context.NAME`, value)
/// in the order of first use; a missing value, or one that cannot go where it is used (a host
/// label, a path segment), is 400 `context_value_invalid` and nothing is sent.
fn context_values(
    uses: &[crate::config::dynamic::DynUse],
    context: &[(String, String)],
) -> Result<Vec<(String, String)>, ProxyError> {
    use crate::config::dynamic::{check_value, DynVar};
    let mut out: Vec<(String, String)> = Vec::new();
    for u in uses {
        let DynVar::Context(name) = &u.var else {
            continue;
        };
        let Some((_, value)) = context.iter().find(|(n, _)| n == name) else {
            return Err(ProxyError::new(
                ErrorCode::ContextValueInvalid,
                format!(
                    "X-Authsidecar-Context-{name} is required (the profile's {} uses {{{{context.{name}}}}})",
                    u.key
                ),
            ));
        };
        check_value(&u.var, u.pos, value).map_err(|m| {
            ProxyError::new(
                ErrorCode::ContextValueInvalid,
                format!("X-Authsidecar-Context-{name} is refused in {}: {m}", u.key),
            )
        })?;
        let key = format!("context.{name}");
        if !out.iter().any(|(k, _)| *k == key) {
            out.push((key, value.clone()));
        }
    }
    Ok(out)
}

/// Step 6 for everything but the payload: path parameters and query (they shape the upstream
/// URI, which is returned), then headers.
fn build_head(
    route: &RouteRt,
    plan: &Plan,
    inputs: &Inputs,
    uri: &Uri,
    rest_start: usize,
    headers: &mut HeaderMap,
) -> Result<Uri, ProxyError> {
    let params = if plan.has_path() {
        plan.path_params(inputs)?
    } else {
        Vec::new()
    };
    let new_query = plan.rewrite_query(uri.query(), inputs)?;
    let query = new_query.as_deref().or(uri.query());
    let upstream_uri = route
        .upstream_uri(
            &uri.path()[rest_start..],
            query,
            inputs.tenant.as_deref(),
            &params,
            inputs.token.as_deref(),
        )
        .map_err(|e| e.with_profile(plan.profile()))?;
    plan.apply_headers(headers, inputs)?;
    if new_query.is_some() {
        // RFC 6750 §2.3: a credential in the URI asks caches not to keep the request.
        headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
    }
    Ok(upstream_uri)
}

/// Appends the caller's address to `X-Forwarded-For` (`own` is that address, prebuilt per
/// connection, used as is when the caller sent none).
fn append_forwarded_for(headers: &mut http::HeaderMap, own: &HeaderValue) {
    let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => {
            HeaderValue::from_str(&format!("{prev}, {}", own.to_str().unwrap_or_default())).ok()
        }
        _ => Some(own.clone()),
    };
    if let Some(v) = value {
        headers.insert(X_FORWARDED_FOR, v);
    }
}

/// Headers that describe hops before the sidecar: kept only from `proxy.trusted_proxies`.
const FORWARDING_HEADERS: [&str; 8] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-uri",
    "x-real-ip",
];

/// What the request path needs of its connection, computed once per connection.
pub struct ConnCtx {
    /// The caller's IP as a header value, for `X-Forwarded-For`.
    forwarded_for: HeaderValue,
    /// The caller is in `proxy.trusted_proxies` (checked at accept, against the config then live).
    trusted: bool,
}

/// One connection's view of the proxy.
#[derive(Clone)]
pub struct ProxyHandler {
    proxy: Arc<Proxy>,
    conn: Arc<ConnCtx>,
}

impl Handler for ProxyHandler {
    type Body = RespBody;

    fn take(
        &self,
        stream: tokio::net::TcpStream,
        limits: crate::serve::Limits,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = Option<(tokio::net::TcpStream, Bytes)>> + Send {
        let this = self.clone();
        async move {
            // `proxy.fast_path = false`: hyper serves every request.
            if !this.proxy.snapshot.load().config.proxy.fast_path {
                return Some((stream, Bytes::new()));
            }
            match h1::serve(this.proxy, this.conn, stream, limits, shutdown).await {
                h1::Ended::Closed => None,
                h1::Ended::Handover(s, pre) => Some((s, pre)),
            }
        }
    }

    fn call(
        &self,
        req: Request<Incoming>,
    ) -> impl std::future::Future<Output = Response<RespBody>> + Send + 'static {
        let this = self.clone();
        async move { this.proxy.handle(req, &this.conn).await }
    }
}
