//! The mock's OAuth 1.0a provider (RFC 5849), under `/oauth1/`:
//!
//! - `POST /oauth1/request_token`: temporary credentials (§2.1) for a signed request with
//!   `oauth_callback` (an absolute URL or `oob`); answers `oauth_token`, `oauth_token_secret`,
//!   `oauth_callback_confirmed=true`. Request tokens live 10 minutes.
//! - `GET /oauth1/authorize?oauth_token=…[&user=NAME]`: auto-approves (as the OAuth 2.0 authorize
//!   does) for `user` (default: the first user) and redirects to the callback with `oauth_token`
//!   and `oauth_verifier` (§2.2); with `oob`, shows the verifier. `&deny=1` redirects with
//!   `denied=TOKEN` instead.
//! - `POST /oauth1/access_token`: token credentials (§2.3) for a request signed with the request
//!   token and its secret and carrying its `oauth_verifier`; the request token is then used up.
//!   Answers `oauth_token`, `oauth_token_secret` and `mock_user`.
//! - `ANY /oauth1/protected/…`: the echo (with `X-Mock-User`), only for a request signed with an
//!   access token issued here; otherwise 401 with `WWW-Authenticate: OAuth realm="mock",
//!   oauth_problem="…"` (`signature_invalid`, `nonce_used`, `timestamp_refused`, `token_rejected`,
//!   `consumer_key_unknown`, `signature_method_rejected`, `parameter_absent`). The `resource_401`
//!   fault refuses it too.
//!
//! Consumers are the mock's clients: the consumer key is a `client_id`, the consumer secret its
//! `client_secret` (HMAC-SHA1, HMAC-SHA256, PLAINTEXT), and RSA-SHA1 / RSA-SHA256 verify with the
//! client's `client_keys` (RSA, 2048 bits or more). Every signed request is checked the same way:
//! the signature over the base string (§3.4.1: the method, the URL as received with the `Host`
//! header and the scheme of the mock's issuer (`https` when it is set so, behind a TLS front), the query, a form body and the protocol parameters from the `Authorization` header), a
//! timestamp within 5 minutes, and a nonce never seen before with that timestamp and token (§3.3).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HOST, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::{full, raw_response, read_body, Body, MockState};
use crate::inject::encode::{encode, parse_form};
use crate::secret::ct_eq;
use crate::sign::key::PublicJwk;
use crate::sign::oauth1::{base_string_uri, is_form, signature_base_string, SignatureMethod};

/// RFC 5849 §3.6: everything but unreserved characters is percent-encoded.
const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How far a request's `oauth_timestamp` may be from the mock's clock, seconds.
pub const TIMESTAMP_WINDOW: u64 = 300;
/// How long a request token (and its verifier) is valid.
pub const REQUEST_TOKEN_LIFETIME: Duration = Duration::from_secs(600);

/// A request token: who asked for it, and, once the user approved, the verifier and the user.
struct Pending {
    consumer: String,
    secret: String,
    callback: String,
    approved: Option<(String, String)>,
    expires: Instant,
}

/// An access token: its consumer, secret and user.
struct Granted {
    consumer: String,
    secret: String,
    user: String,
}

/// Tokens and seen nonces (no `Debug`: it holds secrets).
#[derive(Default)]
pub struct OAuth1State {
    pending: Mutex<HashMap<String, Pending>>,
    granted: Mutex<HashMap<String, Granted>>,
    /// `(consumer, token, timestamp, nonce)` → the timestamp (pruned past the window).
    nonces: Mutex<HashMap<(String, String, u64, String), u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn random(prefix: &str) -> String {
    use rand::RngCore;
    let mut b = [0u8; 18];
    rand::thread_rng().fill_bytes(&mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}{hex}")
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}

/// A form-encoded answer (`application/x-www-form-urlencoded`, as RFC 5849 §2 answers are).
fn form_answer(status: StatusCode, pairs: &[(&str, &str)]) -> Response<Body> {
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    let mut r = Response::new(full(body.join("&")));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A refusal: 401 (400 for a malformed request) with `oauth_problem` in the body and in
/// `WWW-Authenticate` (the OAuth Problem Reporting extension's names).
fn problem(status: StatusCode, problem: &'static str) -> Response<Body> {
    let mut r = form_answer(status, &[("oauth_problem", problem)]);
    if let Ok(v) = HeaderValue::from_str(&format!(
        "OAuth realm=\"mock\", oauth_problem=\"{problem}\""
    )) {
        r.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    r
}

/// The `oauth_*` parameters of an `Authorization: OAuth …` header (§3.5.1), decoded; `realm`
/// left out.
fn header_params(value: &str) -> Option<Vec<(String, String)>> {
    let rest = value.trim_start();
    let (scheme, rest) = rest.split_at(rest.find(' ').unwrap_or(rest.len()));
    if !scheme.eq_ignore_ascii_case("OAuth") {
        return None;
    }
    let mut out = Vec::new();
    for part in rest.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (k, v) = part.split_once('=')?;
        let v = v.trim().strip_prefix('"')?.strip_suffix('"')?;
        if k.trim() == "realm" {
            continue;
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .ok()
                .map(|c| c.into_owned())
        };
        out.push((decode(k.trim())?, decode(v)?));
    }
    Some(out)
}

/// A verified request: its protocol parameters.
struct Checked {
    params: Vec<(String, String)>,
}

impl Checked {
    fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl OAuth1State {
    /// Checks a signed request: protocol parameters, consumer, timestamp, nonce and signature.
    /// `token_secret` finds the secret of the request's `oauth_token` (`None` for none:
    /// the request token request signs without one).
    #[allow(clippy::too_many_arguments)]
    fn check(
        &self,
        state: &MockState,
        method: &Method,
        host: &str,
        path: &str,
        query: Option<&str>,
        authorization: Option<&str>,
        form: Option<&[u8]>,
        token_secret: impl Fn(&str, &str) -> Option<String>,
    ) -> Result<Checked, &'static str> {
        // Every parameter, decoded: the query, a form body, then the header's protocol parameters.
        let mut all: Vec<(String, String)> = parse_form(query.unwrap_or("").as_bytes());
        if let Some(body) = form {
            all.extend(parse_form(body));
        }
        let from_header = match authorization {
            Some(h) => header_params(h).ok_or("parameter_rejected")?,
            None => Vec::new(),
        };
        all.extend(from_header);
        let protocol: Vec<(String, String)> = all
            .iter()
            .filter(|(k, _)| k.starts_with("oauth_"))
            .cloned()
            .collect();
        let one = |name: &str| {
            let mut it = protocol.iter().filter(|(k, _)| k == name);
            match (it.next(), it.next()) {
                (Some((_, v)), None) => Some(v.clone()),
                _ => None,
            }
        };
        let (Some(consumer), Some(signature), Some(method_name)) = (
            one("oauth_consumer_key"),
            one("oauth_signature"),
            one("oauth_signature_method"),
        ) else {
            return Err("parameter_absent");
        };
        if one("oauth_version").is_some_and(|v| v != "1.0") {
            return Err("version_rejected");
        }
        let sig_method = SignatureMethod::parse(&method_name).ok_or("signature_method_rejected")?;
        let (consumer_secret, keys) = state.consumer(&consumer).ok_or("consumer_key_unknown")?;
        let token = one("oauth_token").unwrap_or_default();
        let token_secret = if token.is_empty() {
            String::new()
        } else {
            token_secret(&consumer, &token).ok_or("token_rejected")?
        };
        // PLAINTEXT needs no timestamp and nonce (§3.4.4); every other method does.
        if sig_method != SignatureMethod::Plaintext {
            let (Some(ts), Some(nonce)) = (one("oauth_timestamp"), one("oauth_nonce")) else {
                return Err("parameter_absent");
            };
            let ts: u64 = ts.parse().map_err(|_| "timestamp_refused")?;
            let now = crate::sign::unix_now();
            if ts.abs_diff(now) > TIMESTAMP_WINDOW {
                return Err("timestamp_refused");
            }
            let mut seen = lock(&self.nonces);
            seen.retain(|_, t| t.abs_diff(now) <= TIMESTAMP_WINDOW);
            if seen
                .insert((consumer.clone(), token.clone(), ts, nonce), ts)
                .is_some()
            {
                return Err("nonce_used");
            }
        }
        let key = format!("{}&{}", enc(consumer_secret.expose()), enc(&token_secret));
        let ok = match sig_method {
            SignatureMethod::Plaintext => ct_eq(signature.as_bytes(), key.as_bytes()),
            m => {
                // The scheme of the mock's public address (its issuer): `https` behind a TLS
                // front, as a provider behind a TLS-terminating balancer knows its public URL.
                let scheme = if state.issuer().starts_with("https://") {
                    "https"
                } else {
                    "http"
                };
                let uri = base_string_uri(scheme, host, path).map_err(|_| "parameter_rejected")?;
                let pairs: Vec<(String, String)> = all
                    .iter()
                    .filter(|(k, _)| k != "oauth_signature")
                    .map(|(k, v)| (enc(k), enc(v)))
                    .collect();
                let base = signature_base_string(method.as_str(), &uri, pairs);
                let sig = STANDARD.decode(&signature).unwrap_or_default();
                match m {
                    SignatureMethod::HmacSha1 | SignatureMethod::HmacSha256 => {
                        let alg = if m == SignatureMethod::HmacSha1 {
                            ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY
                        } else {
                            ring::hmac::HMAC_SHA256
                        };
                        let k = ring::hmac::Key::new(alg, key.as_bytes());
                        ring::hmac::verify(&k, base.as_bytes(), &sig).is_ok()
                    }
                    _ => {
                        let params = if m == SignatureMethod::RsaSha1 {
                            &ring::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY
                        } else {
                            &ring::signature::RSA_PKCS1_2048_8192_SHA256
                        };
                        keys.iter().flat_map(|k| k.0.iter()).any(|k| match &k.jwk {
                            PublicJwk::Rsa { n, e } => {
                                ring::signature::RsaPublicKeyComponents { n, e }
                                    .verify(params, base.as_bytes(), &sig)
                                    .is_ok()
                            }
                            _ => false,
                        })
                    }
                }
            }
        };
        if !ok {
            return Err("signature_invalid");
        }
        Ok(Checked { params: protocol })
    }
}

/// The pieces of a request the check needs, its body read.
struct Received {
    method: Method,
    host: String,
    path: String,
    query: Option<String>,
    authorization: Option<String>,
    form: Option<Vec<u8>>,
    parts: http::request::Parts,
    body: bytes::Bytes,
}

impl Received {
    /// [`OAuth1State::check`] of this request.
    fn check(
        &self,
        state: &MockState,
        token_secret: impl Fn(&str, &str) -> Option<String>,
    ) -> Result<Checked, &'static str> {
        state.oauth1.check(
            state,
            &self.method,
            &self.host,
            &self.path,
            self.query.as_deref(),
            self.authorization.as_deref(),
            self.form.as_deref(),
            token_secret,
        )
    }
}

async fn receive(req: Request<Incoming>) -> Result<Received, Response<Body>> {
    let (parts, body) = req.into_parts();
    let body = read_body(body).await?;
    let header = |n: http::header::HeaderName| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let form = parts
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|ct| is_form(ct.as_bytes()))
        .then(|| body.to_vec());
    Ok(Received {
        method: parts.method.clone(),
        host: header(HOST).unwrap_or_default(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        authorization: header(AUTHORIZATION),
        form,
        parts,
        body,
    })
}

/// `POST /oauth1/request_token`.
pub(super) async fn request_token(state: &MockState, req: Request<Incoming>) -> Response<Body> {
    state
        .counters
        .oauth1_request_tokens
        .fetch_add(1, Ordering::SeqCst);
    let r = match receive(req).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let checked = r.check(state, |_, _| None);
    let checked = match checked {
        Ok(c) => c,
        Err(p) => return problem(StatusCode::UNAUTHORIZED, p),
    };
    let Some(callback) = checked
        .get("oauth_callback")
        .filter(|c| *c == "oob" || c.starts_with("http://") || c.starts_with("https://"))
    else {
        return problem(StatusCode::BAD_REQUEST, "parameter_absent");
    };
    let (token, secret) = (random("mock-rt-"), random("mock-rts-"));
    lock(&state.oauth1.pending).insert(
        token.clone(),
        Pending {
            consumer: checked.get("oauth_consumer_key").unwrap_or("").to_string(),
            secret: secret.clone(),
            callback: callback.to_string(),
            approved: None,
            expires: Instant::now() + REQUEST_TOKEN_LIFETIME,
        },
    );
    form_answer(
        StatusCode::OK,
        &[
            ("oauth_token", &token),
            ("oauth_token_secret", &secret),
            ("oauth_callback_confirmed", "true"),
        ],
    )
}

/// `GET /oauth1/authorize`: approves at once (or declines with `deny=1`) for `user`.
pub(super) fn authorize(state: &MockState, query: Option<&str>) -> Response<Body> {
    state
        .counters
        .oauth1_authorize
        .fetch_add(1, Ordering::SeqCst);
    let q = parse_form(query.unwrap_or("").as_bytes());
    let param = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let Some(token) = param("oauth_token") else {
        return problem(StatusCode::BAD_REQUEST, "parameter_absent");
    };
    let user = param("user").unwrap_or_else(|| state.first_user());
    let mut pending = lock(&state.oauth1.pending);
    let Some(p) = pending
        .get_mut(&token)
        .filter(|p| Instant::now() < p.expires && p.approved.is_none())
    else {
        return problem(StatusCode::BAD_REQUEST, "token_rejected");
    };
    let callback = p.callback.clone();
    let pairs: Vec<(&str, String)> = if param("deny").as_deref() == Some("1") {
        pending.remove(&token);
        vec![("denied", token.clone())]
    } else {
        let verifier = random("mock-verifier-");
        p.approved = Some((verifier.clone(), user));
        vec![("oauth_token", token.clone()), ("oauth_verifier", verifier)]
    };
    drop(pending);
    if callback == "oob" {
        let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut r = Response::new(full(text.join("\n")));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return r;
    }
    let mut url = callback.clone();
    for (i, (k, v)) in pairs.iter().enumerate() {
        url.push(if i == 0 && !callback.contains('?') {
            '?'
        } else {
            '&'
        });
        url.push_str(&format!("{k}={}", encode(v)));
    }
    let mut r = raw_response(StatusCode::FOUND, "text/plain", "");
    if let Ok(v) = HeaderValue::from_str(&url) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}

/// `POST /oauth1/access_token`.
pub(super) async fn access_token(state: &MockState, req: Request<Incoming>) -> Response<Body> {
    state
        .counters
        .oauth1_access_tokens
        .fetch_add(1, Ordering::SeqCst);
    let r = match receive(req).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let checked = r.check(state, |consumer, token| {
        lock(&state.oauth1.pending)
            .get(token)
            .filter(|p| p.consumer == consumer && Instant::now() < p.expires)
            .map(|p| p.secret.clone())
    });
    let checked = match checked {
        Ok(c) => c,
        Err(p) => return problem(StatusCode::UNAUTHORIZED, p),
    };
    let token = checked.get("oauth_token").unwrap_or("").to_string();
    // The request token is used up by this request, whatever its verifier.
    let Some(p) = lock(&state.oauth1.pending).remove(&token) else {
        return problem(StatusCode::UNAUTHORIZED, "token_used");
    };
    let Some((verifier, user)) = p.approved else {
        return problem(StatusCode::UNAUTHORIZED, "permission_unknown");
    };
    if !checked
        .get("oauth_verifier")
        .is_some_and(|v| ct_eq(v.as_bytes(), verifier.as_bytes()))
    {
        return problem(StatusCode::UNAUTHORIZED, "verifier_invalid");
    }
    let (access, secret) = (random("mock-at-"), random("mock-ats-"));
    lock(&state.oauth1.granted).insert(
        access.clone(),
        Granted {
            consumer: p.consumer,
            secret: secret.clone(),
            user: user.clone(),
        },
    );
    form_answer(
        StatusCode::OK,
        &[
            ("oauth_token", &access),
            ("oauth_token_secret", &secret),
            ("mock_user", &user),
        ],
    )
}

/// `ANY /oauth1/protected/…`: the echo for a request signed with an access token issued here.
pub(super) async fn protected(state: &MockState, req: Request<Incoming>) -> Response<Body> {
    let r = match receive(req).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let checked = r.check(state, |consumer, token| {
        lock(&state.oauth1.granted)
            .get(token)
            .filter(|g| g.consumer == consumer)
            .map(|g| g.secret.clone())
    });
    let refused = |p: &'static str| {
        state
            .counters
            .oauth1_resource_rejected
            .fetch_add(1, Ordering::SeqCst);
        problem(StatusCode::UNAUTHORIZED, p)
    };
    let checked = match checked {
        Ok(c) => c,
        Err(p) => return refused(p),
    };
    let Some(user) = checked
        .get("oauth_token")
        .and_then(|t| lock(&state.oauth1.granted).get(t).map(|g| g.user.clone()))
    else {
        return refused("token_rejected");
    };
    if state.resource_fault() {
        return refused("token_rejected");
    }
    state
        .counters
        .oauth1_resource_ok
        .fetch_add(1, Ordering::SeqCst);
    state.counters.echo.fetch_add(1, Ordering::SeqCst);
    let req = Request::from_parts(r.parts, r.body);
    let mut resp = super::echo_parts(req).await;
    if let Ok(v) = HeaderValue::from_str(&user) {
        resp.headers_mut().insert("x-mock-user", v);
    }
    resp
}

impl MockState {
    /// OAuth 1.0a access tokens issued so far (tests).
    pub fn oauth1_tokens(&self) -> Vec<String> {
        lock(&self.oauth1.granted).keys().cloned().collect()
    }

    /// Revokes every OAuth 1.0a access token issued for `user`; returns how many.
    pub fn oauth1_revoke_user(&self, user: &str) -> usize {
        let mut g = lock(&self.oauth1.granted);
        let before = g.len();
        g.retain(|_, t| t.user != user);
        before - g.len()
    }
}
