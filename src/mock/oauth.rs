//! The mock's authorization server: token endpoint, issued tokens, faults.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use http::header::{AUTHORIZATION, CACHE_CONTROL, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use rand::RngCore;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{json_response, raw_response, read_body, Body, Counters};
use crate::inject::encode::{decode_form, parse_form};
use crate::secret::{ct_eq, ClientSecret, Password};
use crate::sign::verify::{self, PublicKeys, With};

/// RFC 7523 §2.2 `client_assertion_type`.
const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// RFC 7523 §2.1 `grant_type`.
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Clock skew allowed on `exp`, `nbf` and `iat`, seconds.
const SKEW: u64 = 30;

/// Who the mock knows.
#[derive(Debug, Clone)]
pub struct MockSettings {
    /// `(client_id, client_secret)`; an empty secret is a public client.
    pub clients: Vec<(String, ClientSecret)>,
    /// `(username, password)` for the password grant.
    pub users: Vec<(String, Password)>,
    pub token_lifetime: Duration,
    /// Issue a new refresh token on every refresh and refuse the old one.
    pub rotate_refresh_tokens: bool,
    /// Also issue refresh tokens for client credentials (some IdPs do).
    pub refresh_tokens_for_client_credentials: bool,
    /// `private_key_jwt` clients: client id → the public keys its assertions verify with. A
    /// `client_secret_jwt` client is one of `clients` (HS256 with its secret).
    pub client_keys: Vec<(String, PublicKeys)>,
    /// JWT bearer grant (RFC 7523 §2.1): trusted assertion issuers (`iss`) → their public keys.
    pub bearer_issuers: Vec<(String, PublicKeys)>,
    /// The SigV4-verifying resource (`/sigv4/…`, `signed.rs`).
    pub sigv4: crate::config::MockSigV4,
    /// The HMAC-verifying resource (`/hmac/…`, `signed.rs`).
    pub hmac: crate::config::MockHmac,
}

impl Default for MockSettings {
    fn default() -> Self {
        MockSettings {
            clients: vec![(
                crate::config::DEFAULT_MOCK_CLIENT_ID.into(),
                crate::config::DEFAULT_MOCK_CLIENT_SECRET.into(),
            )],
            users: vec![(
                crate::config::DEFAULT_MOCK_USERNAME.into(),
                crate::config::DEFAULT_MOCK_PASSWORD.into(),
            )],
            token_lifetime: crate::config::DEFAULT_MOCK_TOKEN_LIFETIME,
            rotate_refresh_tokens: true,
            refresh_tokens_for_client_credentials: false,
            client_keys: Vec::new(),
            bearer_issuers: Vec::new(),
            sigv4: Default::default(),
            hmac: Default::default(),
        }
    }
}

/// A way to make token requests fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFault {
    /// Wait this long, then answer normally.
    Slow(Duration),
    /// 500 with `Retry-After: 1`.
    ServerError,
    /// 200 with a body that is not JSON.
    Garbage,
    /// 200 with an HTML login page.
    Html,
    InvalidClient,
    InvalidGrant,
    /// This status (e.g. 400 or 401) with an empty body and no OAuth error, as some IdPs answer a
    /// revoked or reused refresh token.
    Bare(u16),
}

#[derive(Debug, Default)]
struct Faults {
    /// The next authorization requests answer `error=access_denied`.
    authorize_deny: bool,
    token: Option<TokenFault>,
    /// How many more token requests the fault applies to (`None`: all).
    times: Option<u32>,
    resource_401: u32,
}

#[derive(Debug)]
struct Issued {
    expires: Instant,
    /// The end user the token was issued for (password, authorization code and their refreshes).
    user: Option<String>,
}

#[derive(Debug, Clone)]
struct RefreshInfo {
    client: String,
    user: Option<String>,
}

/// An authorization code and what it was issued for (no `Debug`: it holds the tokens it gave).
struct CodeGrant {
    client: String,
    redirect_uri: String,
    challenge: Option<String>,
    user: String,
    scope: Option<String>,
    /// OpenID Connect: the authorization request's `nonce`, copied into the `id_token`.
    nonce: Option<String>,
    expires: Instant,
    /// Set on first use; a second use revokes what the first one issued (RFC 6749 §4.1.2).
    used: bool,
    tokens: Vec<String>,
}

/// How long an authorization code is valid (RFC 6749 §4.1.2: short-lived).
pub const CODE_LIFETIME: Duration = Duration::from_secs(60);

/// The mock's state, shared by its connections and reachable from tests. `Debug` shows the
/// counters only: the rest holds secrets and issued tokens.
pub struct MockState {
    settings: Mutex<MockSettings>,
    issued: Mutex<HashMap<String, Issued>>,
    refresh: Mutex<HashMap<String, RefreshInfo>>,
    codes: Mutex<HashMap<String, CodeGrant>>,
    /// `iss` of authorization responses: `http://ADDR`, set once the listener is bound.
    issuer: Mutex<String>,
    /// The discovery documents and `id_token`s (`discovery.rs`).
    pub(super) oidc: super::discovery::OidcState,
    faults: Mutex<Faults>,
    /// `jti`s of assertions accepted so far, until their `exp` (replays are refused).
    seen_jti: Mutex<HashMap<String, u64>>,
    /// The OAuth 1.0a provider's tokens and nonces (`/oauth1/…`).
    pub(super) oauth1: super::oauth1::OAuth1State,
    /// Nonces of accepted `/hmac/…` requests → their time (Unix s), kept for `max_skew` (replays
    /// are refused).
    pub(super) hmac_nonces: Mutex<HashMap<[u8; 16], i64>>,
    /// Salesforce-like `instance_url` per end user, added to the tokens issued for them.
    instance_urls: Mutex<Vec<(String, String)>>,
    /// The member names of the last JSON login body (never the values).
    last_json_login: Mutex<Vec<String>>,
    /// The last authorization and token requests (path, and query or form pairs without
    /// credentials), for tests that check what reached the provider.
    idp_requests: Mutex<std::collections::VecDeque<IdpRequest>>,
    pub counters: Counters,
}

/// An authorization or token request as the mock saw it ([`MockState::idp_requests`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpRequest {
    /// `authorize` or `token`.
    pub kind: &'static str,
    /// The path as sent (percent-encoding kept).
    pub path: String,
    /// The query (authorize) or form body (token) pairs, decoded; credentials, codes and
    /// tokens left out.
    pub params: Vec<(String, String)>,
}

/// How many [`IdpRequest`]s the mock keeps.
const IDP_REQUESTS_KEPT: usize = 64;

/// Parameters never kept in [`IdpRequest`]s.
const UNRECORDED: &[&str] = &[
    "client_secret",
    "code",
    "code_verifier",
    "refresh_token",
    "password",
    "assertion",
    "client_assertion",
];

impl std::fmt::Debug for MockState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockState")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// A compact JWT's claims, read before its signature is checked (only to find which key checks it).
fn unverified_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn random_token(prefix: &str) -> String {
    let mut b = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}{hex}")
}

fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response<Body> {
    let mut r = json_response(
        status,
        &json!({"error": code, "error_description": description}),
    );
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

impl MockState {
    pub fn new(settings: MockSettings) -> Self {
        MockState {
            settings: Mutex::new(settings),
            issued: Mutex::default(),
            refresh: Mutex::default(),
            codes: Mutex::default(),
            issuer: Mutex::default(),
            oidc: super::discovery::OidcState::new(),
            faults: Mutex::default(),
            seen_jti: Mutex::default(),
            hmac_nonces: Mutex::default(),
            oauth1: super::oauth1::OAuth1State::default(),
            instance_urls: Mutex::default(),
            last_json_login: Mutex::default(),
            idp_requests: Mutex::default(),
            counters: Counters::default(),
        }
    }

    /// Tokens issued for `user` from now on carry `"instance_url": url` (as Salesforce's do:
    /// each user's API lives on their own host).
    pub fn set_instance_url(&self, user: &str, url: &str) {
        let mut m = lock(&self.instance_urls);
        m.retain(|(u, _)| u != user);
        m.push((user.to_string(), url.to_string()));
    }

    /// Records an authorization or token request (bounded; credentials left out).
    pub(super) fn record(&self, kind: &'static str, path: &str, params: &[(String, String)]) {
        let mut log = lock(&self.idp_requests);
        if log.len() >= IDP_REQUESTS_KEPT {
            log.pop_front();
        }
        log.push_back(IdpRequest {
            kind,
            path: path.to_string(),
            params: params
                .iter()
                .filter(|(k, _)| !UNRECORDED.contains(&k.as_str()))
                .cloned()
                .collect(),
        });
    }

    /// The last authorization and token requests, oldest first.
    pub fn idp_requests(&self) -> Vec<IdpRequest> {
        lock(&self.idp_requests).iter().cloned().collect()
    }

    /// The top-level member names of the last JSON login request (`…/json-login`).
    pub fn last_json_login(&self) -> Vec<String> {
        lock(&self.last_json_login).clone()
    }

    /// The query parameters of the last authorization request (`GET …/oauth/authorize`), so a
    /// test can see what reached the provider (e.g. `access_type=offline`).
    pub fn last_authorize(&self) -> Vec<(String, String)> {
        lock(&self.idp_requests)
            .iter()
            .rev()
            .find(|r| r.kind == "authorize")
            .map(|r| r.params.clone())
            .unwrap_or_default()
    }

    /// Makes the next `times` token requests (all, with `None`) fail with `fault`.
    pub fn set_token_fault(&self, fault: Option<TokenFault>, times: Option<u32>) {
        let mut f = lock(&self.faults);
        f.token = fault;
        f.times = times;
    }

    /// Makes the next `n` protected-resource requests answer 401 even with a valid token.
    pub fn reject_resource(&self, n: u32) {
        lock(&self.faults).resource_401 = n;
    }

    /// Registers another client (`""` secret: a public client).
    pub fn add_client(&self, id: &str, secret: &str) {
        lock(&self.settings)
            .clients
            .push((id.to_string(), secret.into()));
    }

    /// Registers a `private_key_jwt` client with its public keys.
    pub fn add_client_keys(&self, id: &str, keys: PublicKeys) {
        lock(&self.settings)
            .client_keys
            .push((id.to_string(), keys));
    }

    /// Trusts a JWT bearer assertion issuer.
    pub fn add_bearer_issuer(&self, iss: &str, keys: PublicKeys) {
        lock(&self.settings)
            .bearer_issuers
            .push((iss.to_string(), keys));
    }

    /// Checks an assertion's claims (RFC 7523 §3): `aud` names this token endpoint (`endpoint`)
    /// or the issuer, `exp` is in the future, `nbf` and `iat` are not, and a `jti` is not replayed
    /// (`need_jti`: it must be there).
    fn check_claims(
        &self,
        claims: &serde_json::Map<String, Value>,
        endpoint: &str,
        need_jti: bool,
    ) -> Result<(), String> {
        let now = crate::sign::unix_now();
        let issuer = self.issuer();
        let aud_ok = |a: &Value| a.as_str().is_some_and(|a| a == endpoint || a == issuer);
        match claims.get("aud") {
            Some(Value::Array(a)) if a.iter().any(aud_ok) => {}
            Some(a) if aud_ok(a) => {}
            Some(_) => return Err(format!("aud is not {endpoint} (nor {issuer})")),
            None => return Err("no aud".into()),
        }
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or("no numeric exp")?;
        if exp + SKEW < now {
            return Err("the assertion has expired (exp)".into());
        }
        if exp > now + crate::sign::jwt::MAX_ASSERTION_LIFETIME + SKEW {
            return Err("exp is more than an hour away".into());
        }
        for name in ["nbf", "iat"] {
            if let Some(t) = claims.get(name) {
                match t.as_u64() {
                    Some(t) if t <= now + SKEW => {}
                    _ => return Err(format!("{name} is not a time in the past")),
                }
            }
        }
        match claims.get("jti").and_then(Value::as_str) {
            Some(jti) => {
                let mut seen = lock(&self.seen_jti);
                seen.retain(|_, e| *e + SKEW >= now);
                if seen.insert(jti.to_string(), exp).is_some() {
                    return Err("jti replayed: this assertion was used before".into());
                }
            }
            None if need_jti => return Err("no jti".into()),
            None => {}
        }
        Ok(())
    }

    /// `private_key_jwt` / `client_secret_jwt` (RFC 7523 §2.2, OpenID Connect Core §9): the client
    /// the assertion authenticates.
    fn client_from_assertion(
        &self,
        assertion_type: Option<&str>,
        assertion: Option<&str>,
        client_id: Option<&str>,
        endpoint: &str,
    ) -> Result<String, String> {
        if assertion_type != Some(CLIENT_ASSERTION_TYPE) {
            return Err(format!(
                "client_assertion_type must be {CLIENT_ASSERTION_TYPE}"
            ));
        }
        let token = assertion.ok_or("client_assertion missing")?;
        let iss = unverified_claims(token)
            .and_then(|c| c.get("iss").and_then(Value::as_str).map(String::from))
            .ok_or("the assertion has no iss")?;
        if client_id.is_some_and(|c| c != iss) {
            return Err("client_id is not the assertion's iss".into());
        }
        let (keys, secret) = {
            let s = lock(&self.settings);
            (
                s.client_keys
                    .iter()
                    .find(|(id, _)| *id == iss)
                    .map(|(_, k)| k.clone()),
                s.clients
                    .iter()
                    .find(|(id, sec)| *id == iss && !sec.is_empty())
                    .map(|(_, sec)| sec.clone()),
            )
        };
        let header_alg = token
            .split('.')
            .next()
            .and_then(|p| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .ok()
            })
            .and_then(|p| serde_json::from_slice::<Value>(&p).ok())
            .and_then(|h| h.get("alg").and_then(Value::as_str).map(String::from))
            .unwrap_or_default();
        let (_, claims) = match (header_alg.as_str(), &keys, &secret) {
            ("HS256", _, Some(secret)) => {
                verify::verify(token, With::Secret(secret.expose().as_bytes()))?
            }
            (_, Some(keys), _) if header_alg != "HS256" => {
                verify::verify(token, With::Public(keys))?
            }
            _ => {
                return Err(format!(
                    "no key for client {iss} verifies alg {header_alg:?}"
                ))
            }
        };
        if claims.get("sub").and_then(Value::as_str) != Some(iss.as_str()) {
            return Err("sub is not the client id (iss)".into());
        }
        self.check_claims(&claims, endpoint, true)?;
        Ok(iss)
    }

    /// The JWT bearer grant's assertion: its issuer must be trusted; returns (`iss`, `sub`,
    /// `scope`).
    fn bearer_assertion(
        &self,
        token: &str,
        endpoint: &str,
    ) -> Result<(String, Option<String>, Option<String>), String> {
        let unverified = unverified_claims(token).ok_or("the assertion is not a JWT")?;
        let iss = unverified
            .get("iss")
            .and_then(Value::as_str)
            .ok_or("the assertion has no iss")?
            .to_string();
        let keys = lock(&self.settings)
            .bearer_issuers
            .iter()
            .find(|(i, _)| *i == iss)
            .map(|(_, k)| k.clone())
            .ok_or_else(|| format!("issuer {iss} is not trusted"))?;
        let (_, claims) = verify::verify(token, With::Public(&keys))?;
        self.check_claims(&claims, endpoint, false)?;
        let get = |n: &str| claims.get(n).and_then(Value::as_str).map(String::from);
        Ok((iss, get("sub"), get("scope")))
    }

    /// The verifying resources' settings (`signed.rs`).
    pub(super) fn signed_settings(&self) -> (crate::config::MockSigV4, crate::config::MockHmac) {
        let s = lock(&self.settings);
        (s.sigv4.clone(), s.hmac.clone())
    }

    pub fn set_token_lifetime(&self, d: Duration) {
        lock(&self.settings).token_lifetime = d;
    }

    /// Every access token issued so far (tests grep outputs for them).
    pub fn issued_tokens(&self) -> Vec<String> {
        let mut t: Vec<String> = lock(&self.issued).keys().cloned().collect();
        t.extend(lock(&self.refresh).keys().cloned());
        t
    }

    pub fn clear_faults(&self) {
        *lock(&self.faults) = Faults::default();
    }

    pub(super) fn set_faults_json(&self, body: &[u8]) -> Result<(), String> {
        let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        let fault = match v.get("token") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(match s.as_str() {
                "500" => TokenFault::ServerError,
                "garbage" => TokenFault::Garbage,
                "html" => TokenFault::Html,
                "invalid_client" => TokenFault::InvalidClient,
                "invalid_grant" => TokenFault::InvalidGrant,
                s if s.starts_with("bare:") => TokenFault::Bare(
                    s[5..]
                        .parse()
                        .ok()
                        .filter(|n| (400..=599).contains(n))
                        .ok_or("bare:STATUS expects a status 400-599")?,
                ),
                s if s.starts_with("slow:") => TokenFault::Slow(Duration::from_millis(
                    s[5..].parse().map_err(|_| "slow:MS expects milliseconds")?,
                )),
                other => return Err(format!("unknown token fault {other:?}")),
            }),
            Some(_) => return Err("token must be a string or null".into()),
        };
        let times = v.get("times").and_then(Value::as_u64).map(|n| n as u32);
        lock(&self.faults).authorize_deny =
            v.get("authorize").and_then(Value::as_str) == Some("access_denied");
        self.set_token_fault(fault, times);
        if let Some(n) = v.get("resource_401").and_then(Value::as_u64) {
            self.reject_resource(n as u32);
        }
        Ok(())
    }

    fn take_fault(&self) -> Option<TokenFault> {
        let mut f = lock(&self.faults);
        let fault = f.token?;
        match &mut f.times {
            Some(0) => {
                f.token = None;
                f.times = None;
                return None;
            }
            Some(n) => *n -= 1,
            None => {}
        }
        Some(fault)
    }

    /// Checks a protected-resource request's bearer token.
    pub(super) fn check_bearer(&self, headers: &HeaderMap) -> Result<(), Box<Response<Body>>> {
        let reject = |desc: &str| {
            self.counters
                .resource_rejected
                .fetch_add(1, Ordering::SeqCst);
            let mut r = json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "invalid_token", "error_description": desc}),
            );
            r.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"mock\", error=\"invalid_token\""),
            );
            Box::new(r)
        };
        let token = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let Some(token) = token else {
            return Err(reject("no bearer token"));
        };
        let valid = lock(&self.issued)
            .get(token)
            .is_some_and(|i| Instant::now() < i.expires);
        if !valid {
            return Err(reject("unknown or expired token"));
        }
        {
            let mut f = lock(&self.faults);
            if f.resource_401 > 0 {
                f.resource_401 -= 1;
                drop(f);
                return Err(reject("rejected by a fault switch"));
            }
        }
        self.counters.resource_ok.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Whether a protected-resource request is to be refused by the `resource_401` fault (counts
    /// it down).
    pub(super) fn resource_fault(&self) -> bool {
        let mut f = lock(&self.faults);
        if f.resource_401 > 0 {
            f.resource_401 -= 1;
            return true;
        }
        false
    }

    /// An OAuth 1.0a consumer: a client's secret (by its id, the consumer key) and its public
    /// keys (for the RSA methods).
    pub(super) fn consumer(&self, key: &str) -> Option<(ClientSecret, Option<PublicKeys>)> {
        let s = lock(&self.settings);
        let secret = s
            .clients
            .iter()
            .find(|(id, _)| id == key)
            .map(|(_, c)| c.clone());
        let keys = s
            .client_keys
            .iter()
            .find(|(id, _)| id == key)
            .map(|(_, k)| k.clone());
        match (secret, keys) {
            (None, None) => None,
            (secret, keys) => Some((secret.unwrap_or_else(|| "".into()), keys)),
        }
    }

    /// The user an authorization is approved for when the request names none.
    pub(super) fn first_user(&self) -> String {
        lock(&self.settings)
            .users
            .first()
            .map(|(u, _)| u.clone())
            .unwrap_or_default()
    }

    /// `iss` for authorization responses (`http://ADDR`).
    pub fn set_issuer(&self, issuer: String) {
        *lock(&self.issuer) = issuer;
    }

    pub fn issuer(&self) -> String {
        lock(&self.issuer).clone()
    }

    /// Whether an access or refresh token is still valid here (tests).
    pub fn is_valid(&self, token: &str) -> bool {
        lock(&self.issued)
            .get(token)
            .is_some_and(|i| Instant::now() < i.expires)
            || lock(&self.refresh).contains_key(token)
    }

    pub fn revoke_tokens(&self, tokens: &[String]) {
        let (mut issued, mut refresh) = (lock(&self.issued), lock(&self.refresh));
        for t in tokens {
            issued.remove(t);
            refresh.remove(t);
        }
    }

    /// Revokes every access and refresh token issued for `user` (the user removed the app at the
    /// IdP): the resource refuses the access tokens, a refresh gets `invalid_grant`. Returns how
    /// many tokens were revoked.
    pub fn revoke_user(&self, user: &str) -> usize {
        let (mut issued, mut refresh) = (lock(&self.issued), lock(&self.refresh));
        let before = issued.len() + refresh.len();
        issued.retain(|_, i| i.user.as_deref() != Some(user));
        refresh.retain(|_, i| i.user.as_deref() != Some(user));
        before - issued.len() - refresh.len()
    }

    fn issue(
        &self,
        grant: &str,
        client: &str,
        user: Option<&str>,
        scope: Option<&str>,
        with_refresh: bool,
    ) -> Response<Body> {
        self.issue_tracked(grant, client, user, scope, with_refresh, None)
            .0
    }

    /// Issues tokens; also returns them, so a replayed code can revoke them.
    fn issue_tracked(
        &self,
        grant: &str,
        client: &str,
        user: Option<&str>,
        scope: Option<&str>,
        with_refresh: bool,
        id_token: Option<String>,
    ) -> (Response<Body>, Vec<String>) {
        let lifetime = lock(&self.settings).token_lifetime;
        let access = random_token("mock-at-");
        lock(&self.issued).insert(
            access.clone(),
            Issued {
                expires: Instant::now() + lifetime,
                user: user.map(str::to_string),
            },
        );
        let mut body = json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": lifetime.as_secs().max(1),
            "mock_grant": grant,
        });
        if let Some(s) = scope {
            body["scope"] = Value::String(s.to_string());
        }
        if let Some(t) = id_token {
            body["id_token"] = Value::String(t);
        }
        if let Some((_, url)) = user.and_then(|u| {
            lock(&self.instance_urls)
                .iter()
                .find(|(x, _)| x == u)
                .cloned()
        }) {
            body["instance_url"] = Value::String(url);
        }
        let mut minted = vec![access.clone()];
        if with_refresh {
            let rt = random_token("mock-rt-");
            minted.push(rt.clone());
            lock(&self.refresh).insert(
                rt.clone(),
                RefreshInfo {
                    client: client.to_string(),
                    user: user.map(str::to_string),
                },
            );
            body["refresh_token"] = Value::String(rt);
        }
        let mut r = json_response(StatusCode::OK, &body);
        r.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        (r, minted)
    }
}

/// `GET /oauth/authorize`: auto-approves for the user named by `login_hint` (default: the first
/// user) and redirects to `redirect_uri` with `code`, `state` and `iss` (RFC 9207). PKCE: only `S256`;
/// `plain` is refused.
pub(super) fn authorize(state: &MockState, query: Option<&str>) -> Response<Body> {
    state.counters.authorize.fetch_add(1, Ordering::SeqCst);
    let form = parse_form(query.unwrap_or("").as_bytes());
    let param = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let client_id = param("client_id").unwrap_or("");
    let Some(redirect_uri) = param("redirect_uri").filter(|r| r.starts_with("http")) else {
        // RFC 6749 §4.1.2.1: never redirect to an invalid redirect URI.
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "redirect_uri missing or not absolute",
        );
    };
    if !lock(&state.settings)
        .clients
        .iter()
        .any(|(id, _)| id == client_id)
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "unknown client_id",
        );
    }
    let redirect = |pairs: &[(&str, &str)]| {
        let mut url = redirect_uri.to_string();
        for (i, (k, v)) in pairs.iter().enumerate() {
            url.push(if i == 0 && !redirect_uri.contains('?') {
                '?'
            } else {
                '&'
            });
            url.push_str(&format!("{k}={}", crate::inject::encode::encode(v)));
        }
        let mut r = raw_response(StatusCode::FOUND, "text/plain", "");
        if let Ok(v) = HeaderValue::from_str(&url) {
            r.headers_mut().insert(http::header::LOCATION, v);
        }
        r
    };
    let st = param("state").unwrap_or("");
    let iss = state.issuer();
    if param("response_type") != Some("code") {
        return redirect(&[
            ("error", "unsupported_response_type"),
            ("state", st),
            ("iss", &iss),
        ]);
    }
    let challenge = param("code_challenge").map(str::to_string);
    if challenge.is_some() && param("code_challenge_method") != Some("S256") {
        return redirect(&[
            ("error", "invalid_request"),
            ("error_description", "only S256 is supported"),
            ("state", st),
            ("iss", &iss),
        ]);
    }
    if lock(&state.faults).authorize_deny {
        return redirect(&[
            ("error", "access_denied"),
            ("error_description", "The user said <no>"),
            ("state", st),
            ("iss", &iss),
        ]);
    }
    let user = param("login_hint")
        .map(str::to_string)
        .or_else(|| lock(&state.settings).users.first().map(|(u, _)| u.clone()))
        .unwrap_or_default();
    let code = random_token("mock-code-");
    lock(&state.codes).insert(
        code.clone(),
        CodeGrant {
            client: client_id.to_string(),
            redirect_uri: redirect_uri.to_string(),
            challenge,
            user,
            scope: param("scope").map(str::to_string),
            nonce: param("nonce").map(str::to_string),
            expires: Instant::now() + CODE_LIFETIME,
            used: false,
            tokens: Vec::new(),
        },
    );
    redirect(&[("code", &code), ("state", st), ("iss", &iss)])
}

/// `POST /oauth/revoke` (RFC 7009): always 200.
pub(super) async fn revoke(state: &MockState, req: Request<Incoming>) -> Response<Body> {
    state.counters.revocations.fetch_add(1, Ordering::SeqCst);
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let form = parse_form(&body);
    if let Some((_, t)) = form.iter().find(|(k, _)| k == "token") {
        state.revoke_tokens(std::slice::from_ref(t));
    }
    json_response(StatusCode::OK, &json!({}))
}

/// `POST /oauth/token`.
pub(super) async fn token(state: &MockState, req: Request<Incoming>) -> Response<Body> {
    state.counters.token_requests.fetch_add(1, Ordering::SeqCst);
    let resp = token_inner(state, req).await;
    if !resp.status().is_success() {
        state.counters.token_errors.fetch_add(1, Ordering::SeqCst);
    }
    resp
}

async fn token_inner(state: &MockState, req: Request<Incoming>) -> Response<Body> {
    match state.take_fault() {
        Some(TokenFault::Slow(d)) => tokio::time::sleep(d).await,
        Some(TokenFault::ServerError) => {
            let mut r = oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "mock: failing on purpose",
            );
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
        Some(TokenFault::Garbage) => {
            return raw_response(StatusCode::OK, "application/json", "{\"access_tok")
        }
        Some(TokenFault::Html) => {
            return raw_response(
                StatusCode::OK,
                "text/html",
                "<html><body>Please sign in</body></html>",
            )
        }
        Some(TokenFault::InvalidClient) => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "mock: client rejected",
            )
        }
        Some(TokenFault::InvalidGrant) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "mock: grant rejected",
            )
        }
        Some(TokenFault::Bare(status)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            return raw_response(status, "text/plain", "");
        }
        None => {}
    }
    let endpoint = format!("{}{}", state.issuer(), req.uri().path());
    let path = req.uri().path().to_string();
    let basic = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .map(str::to_string);
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let form = parse_form(&body);
    state.record("token", &path, &form);
    let param = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };

    let assertion_auth =
        param("client_assertion").is_some() || param("client_assertion_type").is_some();
    if assertion_auth && (basic.is_some() || param("client_secret").is_some()) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "more than one client authentication method",
        );
    }
    let bearer_grant = param("grant_type") == Some(JWT_BEARER_GRANT);
    // Client authentication: exactly one method (RFC 6749 §2.3); none for a JWT bearer grant
    // without a client (RFC 7523 §3.1).
    let (client_id, secret) = match (&basic, param("client_secret")) {
        _ if assertion_auth => {
            match state.client_from_assertion(
                param("client_assertion_type"),
                param("client_assertion"),
                param("client_id"),
                &endpoint,
            ) {
                Ok(id) => {
                    state
                        .counters
                        .client_assertions
                        .fetch_add(1, Ordering::SeqCst);
                    (id, String::new())
                }
                Err(why) => {
                    return oauth_error(
                        StatusCode::UNAUTHORIZED,
                        "invalid_client",
                        &format!("client assertion refused: {why}"),
                    )
                }
            }
        }
        (None, None) if bearer_grant && param("client_id").is_none() => {
            (String::new(), String::new())
        }
        (Some(_), Some(_)) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "more than one client authentication method",
            )
        }
        (Some(b), None) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok());
            let Some((id, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "malformed Basic credentials",
                );
            };
            state.counters.client_basic.fetch_add(1, Ordering::SeqCst);
            // RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
            (decode_form(id), decode_form(secret))
        }
        (None, s) => {
            if s.is_some() {
                state.counters.client_post.fetch_add(1, Ordering::SeqCst);
            }
            (
                param("client_id").unwrap_or_default().to_string(),
                s.unwrap_or_default().to_string(),
            )
        }
    };
    let known = assertion_auth
        || (bearer_grant && client_id.is_empty())
        || lock(&state.settings)
            .clients
            .iter()
            .any(|(id, s)| *id == client_id && ct_eq(s.expose().as_bytes(), secret.as_bytes()));
    if !known {
        let mut r = oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client or wrong secret",
        );
        if basic.is_some() {
            r.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"mock\""),
            );
        }
        return r;
    }
    let scope = param("scope");
    let (rotate, cc_refresh) = {
        let s = lock(&state.settings);
        (
            s.rotate_refresh_tokens,
            s.refresh_tokens_for_client_credentials,
        )
    };
    match param("grant_type") {
        Some("client_credentials") => {
            state
                .counters
                .client_credentials
                .fetch_add(1, Ordering::SeqCst);
            state.issue("client_credentials", &client_id, None, scope, cc_refresh)
        }
        Some("password") => {
            state.counters.password.fetch_add(1, Ordering::SeqCst);
            let (u, p) = (
                param("username").unwrap_or(""),
                param("password").unwrap_or(""),
            );
            if !known_user(state, u, p) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "wrong username or password",
                );
            }
            state.issue("password", &client_id, Some(u), scope, true)
        }
        Some("authorization_code") => {
            state
                .counters
                .authorization_code
                .fetch_add(1, Ordering::SeqCst);
            let (code, redirect_uri) = (
                param("code").unwrap_or(""),
                param("redirect_uri").unwrap_or(""),
            );
            let verifier = param("code_verifier");
            let mut codes = lock(&state.codes);
            let Some(grant) = codes.get_mut(code) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "unknown authorization code",
                );
            };
            if grant.used {
                // RFC 6749 §4.1.2: deny, and revoke what the code already gave.
                let tokens = std::mem::take(&mut grant.tokens);
                drop(codes);
                state.revoke_tokens(&tokens);
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "authorization code already used",
                );
            }
            grant.used = true;
            if Instant::now() >= grant.expires {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "authorization code expired",
                );
            }
            if grant.client != client_id || grant.redirect_uri != redirect_uri {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "code issued to another client or redirect_uri",
                );
            }
            if let Some(challenge) = &grant.challenge {
                // RFC 7636 §4.1: 43-128 characters from the unreserved set.
                let ok = verifier.is_some_and(|v| {
                    (43..=128).contains(&v.len())
                        && v.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
                }) && verifier.is_some_and(|v| {
                    oauth2::PkceCodeChallenge::from_code_verifier_sha256(
                        &oauth2::PkceCodeVerifier::new(v.to_string()),
                    )
                    .as_str()
                        == challenge
                });
                if !ok {
                    // RFC 7636 §4.6.
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "PKCE verification failed",
                    );
                }
            }
            let (user, scope) = (grant.user.clone(), grant.scope.clone());
            // OpenID Connect: an id_token when the scope asks for openid.
            let id_token = scope
                .as_deref()
                .is_some_and(|s| s.split(' ').any(|x| x == "openid"))
                .then(|| {
                    state.oidc.id_token(
                        &state.issuer(),
                        &client_id,
                        &user,
                        grant.nonce.as_deref(),
                        lock(&state.settings).token_lifetime,
                    )
                })
                .flatten();
            let (resp, minted) = state.issue_tracked(
                "authorization_code",
                &client_id,
                Some(&user),
                scope.as_deref(),
                true,
                id_token,
            );
            grant.tokens = minted;
            resp
        }
        Some("refresh_token") => {
            state.counters.refresh_token.fetch_add(1, Ordering::SeqCst);
            let rt = param("refresh_token").unwrap_or("");
            let info = {
                let mut map = lock(&state.refresh);
                let info = map.get(rt).cloned();
                if info.is_some() && rotate {
                    map.remove(rt);
                }
                info
            };
            match info {
                // Without rotation the old refresh token stays valid and the answer carries none.
                Some(i) if i.client == client_id => state.issue(
                    "refresh_token",
                    &client_id,
                    i.user.as_deref(),
                    scope,
                    rotate,
                ),
                _ => oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "unknown, used or foreign refresh token",
                ),
            }
        }
        Some(JWT_BEARER_GRANT) => {
            state.counters.jwt_bearer.fetch_add(1, Ordering::SeqCst);
            match state.bearer_assertion(param("assertion").unwrap_or(""), &endpoint) {
                Ok((iss, sub, claim_scope)) => {
                    let who = if client_id.is_empty() { &iss } else { &client_id };
                    let scope = scope.map(String::from).or(claim_scope);
                    state.issue(
                        "jwt_bearer",
                        who,
                        Some(sub.as_deref().unwrap_or(&iss)),
                        scope.as_deref(),
                        false,
                    )
                }
                Err(why) => oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    &format!("assertion refused: {why}"),
                ),
            }
        }
        Some(_) => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "mock supports client_credentials, password, authorization_code, refresh_token and urn:ietf:params:oauth:grant-type:jwt-bearer",
        ),
        None => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type missing",
        ),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for Unix milliseconds.
fn rfc3339_utc(unix_ms: u64) -> String {
    let (secs, ms) = (unix_ms / 1000, unix_ms % 1000);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // H. Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `POST …/json-login`: a provider that is not RFC 6749 at all, as many enterprise APIs are. It
/// takes a JSON body `{"login": {"user", "password"}}` (the mock's users) or
/// `{"refreshToken": …}`, refuses any `grant_type` member, and answers
/// `{"status": "ok", "data": {"accessToken", "refreshToken", "expiresAt": RFC 3339, "tokenKind":
/// "Token"}}` (the tokens are valid at the mock like any other), with `"instanceUrl"` in `data`
/// when [`MockState::set_instance_url`] names one for the user.
pub(super) async fn json_login(state: &MockState, req: Request<Incoming>) -> Response<Body> {
    state.counters.token_requests.fetch_add(1, Ordering::SeqCst);
    state.counters.json_logins.fetch_add(1, Ordering::SeqCst);
    let refuse = |status: StatusCode, code: &str, why: &str| {
        state.counters.token_errors.fetch_add(1, Ordering::SeqCst);
        json_response(
            status,
            &json!({"status": "error", "error": code, "message": why}),
        )
    };
    let json_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(Value::Object(v)) = serde_json::from_slice::<Value>(&body)
        .ok()
        .filter(|_| json_type)
    else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "expected a JSON object",
        );
    };
    *lock(&state.last_json_login) = v.keys().cloned().collect();
    if v.contains_key("grant_type") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "unexpected grant_type",
        );
    }
    let user = if let Some(rt) = v.get("refreshToken").and_then(Value::as_str) {
        let info = lock(&state.refresh).remove(rt);
        match info {
            Some(i) => i.user.unwrap_or_default(),
            None => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "unknown refresh token",
                )
            }
        }
    } else {
        let login = |k: &str| {
            v.get("login")
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        let (u, p) = (login("user"), login("password"));
        if !known_user(state, u, p) {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "invalid_grant",
                "wrong user or password",
            );
        }
        u.to_string()
    };
    let lifetime = lock(&state.settings).token_lifetime;
    let instance_url = lock(&state.instance_urls)
        .iter()
        .find(|(u, _)| *u == user)
        .map(|(_, url)| url.clone());
    let access = random_token("mock-at-");
    let refresh = random_token("mock-rt-");
    lock(&state.issued).insert(
        access.clone(),
        Issued {
            expires: Instant::now() + lifetime,
            user: Some(user.clone()),
        },
    );
    lock(&state.refresh).insert(
        refresh.clone(),
        RefreshInfo {
            client: String::new(),
            user: Some(user),
        },
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let expires_at = rfc3339_utc(now_ms + lifetime.as_millis() as u64);
    let mut answer = json!({"status": "ok", "data": {
        "accessToken": access,
        "refreshToken": refresh,
        "expiresAt": expires_at,
        "tokenKind": "Token",
    }});
    if let Some(url) = instance_url {
        answer["data"]["instanceUrl"] = Value::String(url);
    }
    let mut r = json_response(StatusCode::OK, &answer);
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Whether `user` and `password` are one of the mock's users (the password compared in constant
/// time).
fn known_user(state: &MockState, user: &str, password: &str) -> bool {
    lock(&state.settings)
        .users
        .iter()
        .any(|(u, pw)| u == user && ct_eq(pw.expose().as_bytes(), password.as_bytes()))
}

#[cfg(test)]
mod rfc3339_tests {
    #[test]
    fn formats_utc_times() {
        assert_eq!(super::rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339_utc(1_767_225_600_250),
            "2026-01-01T00:00:00.250Z"
        );
        assert_eq!(
            super::rfc3339_utc(1_709_164_799_000),
            "2024-02-28T23:59:59.000Z"
        );
    }
}
