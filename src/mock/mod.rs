//! The built-in mock provider: an OAuth 2.0 authorization server and resource server, and an OAuth
//! 1.0a provider, for users' own integration tests, and ours.
//!
//! `authsidecar mock-provider --listen ADDR` runs it alone; `[mock_provider]` runs it inside the
//! sidecar (the demo config does). Endpoints:
//!
//! - `POST /oauth/token` (or any path ending in it, e.g. `/{tenant}/oauth/token`): grants `client_credentials`, `password` and `refresh_token`; client
//!   authentication `client_secret_basic` (RFC 6749 §2.3.1 decoding) or `client_secret_post`, never
//!   both; access tokens live `token_lifetime`; refresh tokens rotate (the old one is refused after
//!   use, `invalid_grant`). Answers carry `Cache-Control: no-store` and an extra member
//!   `mock_grant` (the grant used).
//!   JWT client authentication (RFC 7523 §2.2): `client_assertion_type` + `client_assertion`,
//!   verified with the client's registered public keys (`private_key_jwt`, `client_keys`) or, for
//!   `HS256`, its secret (`client_secret_jwt`): signature, `iss` = `sub` = the client, `aud` this
//!   token endpoint's URL (or the issuer `http://ADDR`), `exp` in the future (at most 1 h), `jti`
//!   present and never seen before; refused → 401 `invalid_client` saying why. The JWT bearer
//!   grant (`urn:ietf:params:oauth:grant-type:jwt-bearer`, RFC 7523 §2.1): `assertion` signed by
//!   a trusted issuer (`bearer_issuers`), the same `aud` and `exp` checks, a `jti` if present not
//!   replayed; the token is issued for `sub` with the assertion's `scope` unless the request has
//!   one; refused → 400 `invalid_grant`.
//! - `GET /oauth/authorize`: auto-approving authorization endpoint (PKCE S256 only, single-use
//!   60-second codes, `iss` in the redirect); `POST /oauth/revoke`: RFC 7009 revocation. With
//!   `scope` holding `openid` the code's token response carries a signed `id_token` with the
//!   request's `nonce`.
//! - `GET /.well-known/openid-configuration`, `GET /.well-known/oauth-authorization-server`: the
//!   discovery documents; `GET /oauth/jwks`: the `id_token` signing key (`discovery.rs`).
//! - `POST …/json-login` (any path ending in it): a provider that logs in with a JSON body and
//!   answers `{"data": {"accessToken", "refreshToken", "expiresAt"}}` (`oauth::json_login`).
//!   `MockState::set_instance_url` gives a user's tokens a Salesforce-like `instance_url`
//!   (`data.instanceUrl` here).
//! - `POST …/oauth.v2.access` and `POST …/login/oauth/access_token`: the token endpoint answering
//!   as Slack (token nested under `authed_user`) and GitHub (form-encoded unless
//!   `Accept: application/json`) do, for testing presets (`quirks.rs`).
//! - `ANY /protected/...`: the echo below, but only with `Authorization: Bearer <token>` for a token
//!   this provider issued and that has not expired; otherwise 401 with
//!   `WWW-Authenticate: Bearer error="invalid_token"`.
//! - `ANY /sigv4/...`: a resource that verifies AWS Signature Version 4 (credentials, region and
//!   service of `MockSettings::sigv4`), 403 with an AWS-like error otherwise; `ANY /hmac/...`: one
//!   that verifies an `hmac` request signature (`MockSettings::hmac`), 401 otherwise. Accepted
//!   requests get the echo's answer. See `signed.rs`.
//! - `ANY /echo/...` (and any other path): answers 200 with the request as JSON:
//!   `{"method","path","query","version","headers":[[name,value],…],"body"}` (`body_base64` when the
//!   body is not UTF-8). `X-Mock-Status`, `X-Mock-Location` and `X-Mock-Delay-Ms` steer the answer.
//! - `GET /__mock/counters`: request counters; `POST /__mock/reset`: zero them and clear faults;
//!   `POST /__mock/faults` with `{"token": "slow:MS" | "500" | "garbage" | "html" |
//!   "invalid_client" | "invalid_grant" | "bare:STATUS" | null, "times": N, "resource_401": N}`:
//!   make the next N token requests fail that way (all, without `times`; `bare:400` is a 400 with
//!   an empty body, no OAuth error), or the next N resource requests answer 401;
//!   `POST /__mock/revoke-user` with `{"user": "alice"}`: revoke every access and refresh token
//!   issued for that user (as when the user removes the app at the IdP).
//! - `/oauth1/request_token`, `/oauth1/authorize`, `/oauth1/access_token`, `/oauth1/protected/…`:
//!   an OAuth 1.0a provider (RFC 5849) whose consumers are the clients above (`oauth1.rs`).

mod discovery;
mod oauth;
mod oauth1;
mod quirks;
mod signed;

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
pub use discovery::IdTokenFault;
pub use oauth::{IdpRequest, MockSettings, MockState, TokenFault};

type Body = http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Largest request body the mock reads.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Longest `X-Mock-Delay-Ms` honoured.
const MAX_DELAY_MS: u64 = 120_000;

/// Request counters.
#[derive(Default, Debug)]
pub struct Counters {
    pub echo: AtomicU64,
    pub token_requests: AtomicU64,
    pub client_credentials: AtomicU64,
    pub password: AtomicU64,
    pub refresh_token: AtomicU64,
    pub authorization_code: AtomicU64,
    /// JWT bearer grant requests (RFC 7523 §2.1).
    pub jwt_bearer: AtomicU64,
    /// Token requests whose client authenticated with a JWT (`private_key_jwt`,
    /// `client_secret_jwt`) that verified.
    pub client_assertions: AtomicU64,
    pub authorize: AtomicU64,
    pub revocations: AtomicU64,
    pub token_errors: AtomicU64,
    pub resource_ok: AtomicU64,
    pub resource_rejected: AtomicU64,
    /// OAuth 1.0a (`/oauth1/…`): temporary-credential requests, authorizations, token-credential
    /// requests, and protected-resource requests accepted and refused.
    pub oauth1_request_tokens: AtomicU64,
    pub oauth1_authorize: AtomicU64,
    pub oauth1_access_tokens: AtomicU64,
    pub oauth1_resource_ok: AtomicU64,
    pub oauth1_resource_rejected: AtomicU64,
    /// Discovery document requests (either well-known path).
    pub discovery: AtomicU64,
    /// JWKS requests (`/oauth/jwks`).
    pub jwks: AtomicU64,
    /// `…/json-login` requests (the JSON-login provider imitation).
    pub json_logins: AtomicU64,
    /// Token requests whose client authenticated with a Basic header (`client_secret_basic`) and
    /// with `client_secret` in the body (`client_secret_post`).
    pub client_basic: AtomicU64,
    pub client_post: AtomicU64,
}

impl Counters {
    fn json(&self) -> Value {
        let g = |a: &AtomicU64| a.load(Ordering::SeqCst);
        json!({
            "echo": g(&self.echo),
            "token_requests": g(&self.token_requests),
            "client_credentials": g(&self.client_credentials),
            "password": g(&self.password),
            "refresh_token": g(&self.refresh_token),
            "authorization_code": g(&self.authorization_code),
            "jwt_bearer": g(&self.jwt_bearer),
            "client_assertions": g(&self.client_assertions),
            "authorize": g(&self.authorize),
            "revocations": g(&self.revocations),
            "token_errors": g(&self.token_errors),
            "resource_ok": g(&self.resource_ok),
            "resource_rejected": g(&self.resource_rejected),
            "oauth1_request_tokens": g(&self.oauth1_request_tokens),
            "oauth1_authorize": g(&self.oauth1_authorize),
            "oauth1_access_tokens": g(&self.oauth1_access_tokens),
            "oauth1_resource_ok": g(&self.oauth1_resource_ok),
            "oauth1_resource_rejected": g(&self.oauth1_resource_rejected),
            "discovery": g(&self.discovery),
            "jwks": g(&self.jwks),
            "json_logins": g(&self.json_logins),
            "client_basic": g(&self.client_basic),
            "client_post": g(&self.client_post),
        })
    }

    fn reset(&self) {
        for c in [
            &self.echo,
            &self.token_requests,
            &self.client_credentials,
            &self.password,
            &self.refresh_token,
            &self.authorization_code,
            &self.jwt_bearer,
            &self.client_assertions,
            &self.authorize,
            &self.revocations,
            &self.token_errors,
            &self.resource_ok,
            &self.resource_rejected,
            &self.oauth1_request_tokens,
            &self.oauth1_authorize,
            &self.oauth1_access_tokens,
            &self.oauth1_resource_ok,
            &self.oauth1_resource_rejected,
            &self.discovery,
            &self.jwks,
            &self.json_logins,
            &self.client_basic,
            &self.client_post,
        ] {
            c.store(0, Ordering::SeqCst);
        }
    }
}

/// A running mock provider.
pub struct MockProvider {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
    shutdown: Option<Shutdown>,
}

impl MockProvider {
    /// Binds `addr` (port 0 for any free port) with the default client and user.
    pub async fn start(addr: SocketAddr) -> std::io::Result<MockProvider> {
        Self::start_with(addr, MockSettings::default()).await
    }

    pub async fn start_with(
        addr: SocketAddr,
        settings: MockSettings,
    ) -> std::io::Result<MockProvider> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(MockState::new(settings));
        state.set_issuer(format!("http://{addr}"));
        let shutdown = Shutdown::new();
        spawn(listener, state.clone(), shutdown.subscribe());
        Ok(MockProvider {
            addr,
            state,
            shutdown: Some(shutdown),
        })
    }

    pub fn counters(&self) -> &Counters {
        &self.state.counters
    }

    /// Requests the echo (plain and protected) has answered so far.
    pub fn echo_count(&self) -> u64 {
        self.state.counters.echo.load(Ordering::SeqCst)
    }

    pub fn token_requests(&self) -> u64 {
        self.state.counters.token_requests.load(Ordering::SeqCst)
    }

    /// `http://ADDR/oauth/token`.
    pub fn token_url(&self) -> String {
        format!("http://{}/oauth/token", self.addr)
    }

    pub async fn shutdown(mut self) {
        if let Some(s) = self.shutdown.take() {
            s.drain(Duration::from_secs(5)).await;
        }
    }
}

/// Serves the mock on an already bound listener.
pub fn spawn(
    listener: TcpListener,
    state: Arc<MockState>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let limits = Limits::timeouts(Duration::from_secs(30), Duration::from_secs(120));
    tokio::spawn(serve::serve(
        listener,
        limits,
        None,
        shutdown,
        move |_c: ConnInfo| MockHandler(state.clone()),
    ));
}

#[derive(Clone)]
struct MockHandler(Arc<MockState>);

impl Handler for MockHandler {
    type Body = Body;

    fn call(
        &self,
        req: Request<Incoming>,
    ) -> impl std::future::Future<Output = Response<Body>> + Send + 'static {
        let state = self.0.clone();
        async move { handle(&state, req).await }
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

pub(crate) fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(full(serde_json::to_vec(v).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub(crate) fn raw_response(
    status: StatusCode,
    content_type: &'static str,
    body: &'static str,
) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

async fn read_body(body: Incoming) -> Result<Bytes, Response<Body>> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => Err(json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": format!("reading the body: {e}")}),
        )),
    }
}

async fn handle(state: &MockState, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/__mock/counters") => json_response(StatusCode::OK, &state.counters.json()),
        (&Method::POST, "/__mock/reset") => {
            state.counters.reset();
            state.clear_faults();
            json_response(StatusCode::OK, &json!({"reset": true}))
        }
        (&Method::POST, "/__mock/faults") => {
            let body = match read_body(req.into_body()).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            match state.set_faults_json(&body) {
                Ok(()) => json_response(StatusCode::OK, &json!({"ok": true})),
                Err(e) => json_response(StatusCode::BAD_REQUEST, &json!({"error": e})),
            }
        }
        (&Method::POST, "/__mock/revoke-user") => {
            let body = match read_body(req.into_body()).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let user = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("user")?.as_str().map(str::to_string));
            match user {
                Some(u) => {
                    json_response(StatusCode::OK, &json!({"revoked": state.revoke_user(&u)}))
                }
                None => json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "expected {\"user\": \"NAME\"}"}),
                ),
            }
        }
        (&Method::POST, "/oauth1/request_token") => oauth1::request_token(state, req).await,
        (&Method::GET, "/oauth1/authorize") => oauth1::authorize(state, req.uri().query()),
        (&Method::POST, "/oauth1/access_token") => oauth1::access_token(state, req).await,
        (_, p) if p.starts_with("/oauth1/protected/") || p == "/oauth1/protected" => {
            oauth1::protected(state, req).await
        }
        (&Method::GET, "/.well-known/openid-configuration") => discovery::document(state, true),
        (&Method::GET, "/.well-known/oauth-authorization-server") => {
            discovery::document(state, false)
        }
        (&Method::GET, "/oauth/jwks") => discovery::jwks(state),
        (&Method::GET, p) if p.ends_with("/oauth/authorize") => {
            let query = req.uri().query();
            state.record(
                "authorize",
                p,
                &crate::inject::encode::parse_form(query.unwrap_or("").as_bytes()),
            );
            oauth::authorize(state, query)
        }
        (&Method::POST, p) if p.ends_with("/oauth/revoke") => oauth::revoke(state, req).await,
        // Any path ending in /oauth/token, so token URLs may carry a tenant: /{tenant}/oauth/token.
        (&Method::POST, p) if p.ends_with("/oauth/token") => oauth::token(state, req).await,
        (&Method::POST, p) if p.ends_with("/json-login") => oauth::json_login(state, req).await,
        (&Method::POST, p) if p.ends_with("/oauth.v2.access") => {
            quirks::slack_access(state, req).await
        }
        (&Method::POST, p) if p.ends_with("/login/oauth/access_token") => {
            quirks::github_access(state, req).await
        }
        (_, p) if p.ends_with("/oauth/token") => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "invalid_request", "error_description": "use POST"}),
        ),
        (_, p) if p.starts_with("/sigv4/") || p == "/sigv4" => signed::sigv4(state, req).await,
        (_, p) if p.starts_with("/hmac/") || p == "/hmac" => signed::hmac(state, req).await,
        (_, p) if p.starts_with("/protected/") || p == "/protected" => {
            if let Err(r) = state.check_bearer(req.headers()) {
                return *r;
            }
            state.counters.echo.fetch_add(1, Ordering::SeqCst);
            echo(req).await
        }
        _ => {
            state.counters.echo.fetch_add(1, Ordering::SeqCst);
            echo(req).await
        }
    }
}

fn header_num<B>(req: &Request<B>, name: &str) -> Option<u64> {
    req.headers().get(name)?.to_str().ok()?.parse().ok()
}

async fn echo(req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    match read_body(body).await {
        Ok(b) => echo_parts(Request::from_parts(parts, b)).await,
        Err(r) => r,
    }
}

/// The echo of a request whose body is read.
pub(crate) async fn echo_parts(req: Request<Bytes>) -> Response<Body> {
    let status = header_num(&req, "x-mock-status")
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let delay = header_num(&req, "x-mock-delay-ms").map(|d| d.min(MAX_DELAY_MS));
    let location = req.headers().get("x-mock-location").cloned();
    let (parts, body) = req.into_parts();
    let v = echo_json(&parts, &body);
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut resp = json_response(status, &v);
    if let Some(loc) = location {
        resp.headers_mut().insert(LOCATION, loc);
    }
    resp
}

/// The request as the echo shows it.
fn echo_json(parts: &http::request::Parts, body: &[u8]) -> Value {
    let headers: Vec<Value> = parts
        .headers
        .iter()
        .map(|(n, v)| json!([n.as_str(), String::from_utf8_lossy(v.as_bytes())]))
        .collect();
    let mut v = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
    });
    match std::str::from_utf8(body) {
        Ok(s) => v["body"] = Value::String(s.to_string()),
        Err(_) => {
            v["body_base64"] = Value::String(base64::engine::general_purpose::STANDARD.encode(body))
        }
    }
    v
}
