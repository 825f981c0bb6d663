//! The mock's discovery documents (RFC 8414, OpenID Connect Discovery 1.0), its JWKS and the
//! `id_token`s it issues when an authorization code was requested with `scope` holding `openid`.
//!
//! - `GET /.well-known/openid-configuration` and `GET /.well-known/oauth-authorization-server`:
//!   the same metadata (issuer `http://ADDR`, the endpoints below, `S256` only,
//!   `authorization_response_iss_parameter_supported`); each can be switched off (404), and the
//!   `issuer` they name can be changed (a mismatch) with [`super::MockState::set_discovery`].
//! - `GET /oauth/jwks`: the public key its `id_token`s are signed with (ES256, a key made at
//!   start, `kid` its RFC 7638 thumbprint; a new one after [`MockState::rotate_id_token_key`]).
//! - `id_token`: `iss`, `sub` (the user), `aud` (the client), `exp`, `iat`, `nonce` (the
//!   authorization request's), `email` (`USER@mock.example`); [`IdTokenFault`] makes it wrong in
//!   one way.

use std::sync::Mutex;
use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};

use super::{json_response, Body, MockState};
use crate::sign::jwt::{Algorithm, Signer};
use crate::sign::PrivateKey;

/// A way to make the `id_token` wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdTokenFault {
    /// Signed with another key under the same `kid`.
    BadSignature,
    /// Another `nonce`.
    WrongNonce,
    /// Another audience.
    WrongAudience,
    /// `exp` an hour ago.
    Expired,
}

/// Which documents are served and what they say.
#[derive(Debug, Clone)]
pub struct DiscoverySettings {
    /// Serve `/.well-known/openid-configuration`.
    pub openid: bool,
    /// Serve `/.well-known/oauth-authorization-server`.
    pub oauth: bool,
    /// The `issuer` the documents name instead of the mock's own.
    pub issuer: Option<String>,
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        DiscoverySettings {
            openid: true,
            oauth: true,
            issuer: None,
        }
    }
}

pub struct OidcState {
    settings: Mutex<DiscoverySettings>,
    fault: Mutex<Option<IdTokenFault>>,
    /// The signing key and its public JWK; the signer is `None` only when ring could not make a
    /// key (the documents then name no `jwks_uri`).
    key: Mutex<(Option<Signer>, Value)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn new_key() -> Option<PrivateKey> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .ok()?;
    PrivateKey::from_pkcs8_der(pkcs8.as_ref()).ok()
}

impl Default for OidcState {
    fn default() -> Self {
        Self::new()
    }
}

/// A new ES256 signer (`kid`: its thumbprint) and its public JWK.
fn new_signing_key() -> (Option<Signer>, Value) {
    let key = new_key();
    let signer = key
        .as_ref()
        .and_then(|k| Signer::new(Algorithm::Es256, k).ok())
        .map(Signer::with_thumbprint_kid);
    let public_jwk = match (&key, &signer) {
        (Some(k), Some(s)) => {
            let mut v: Value =
                serde_json::from_str(&k.public_jwk().canonical_json()).unwrap_or(Value::Null);
            v["kid"] = json!(s.kid());
            v["alg"] = json!("ES256");
            v["use"] = json!("sig");
            v
        }
        _ => Value::Null,
    };
    (signer, public_jwk)
}

impl OidcState {
    pub fn new() -> OidcState {
        OidcState {
            settings: Mutex::default(),
            fault: Mutex::default(),
            key: Mutex::new(new_signing_key()),
        }
    }

    /// A signed `id_token` for `user` of `client`.
    pub fn id_token(
        &self,
        issuer: &str,
        client: &str,
        user: &str,
        nonce: Option<&str>,
        lifetime: Duration,
    ) -> Option<String> {
        let key = lock(&self.key);
        let signer = key.0.as_ref()?;
        let fault = *lock(&self.fault);
        let now = crate::sign::unix_now();
        let mut claims = json!({
            "iss": issuer,
            "sub": user,
            "aud": client,
            "exp": now + lifetime.as_secs().max(60),
            "iat": now,
            "email": format!("{user}@mock.example"),
        });
        if let Some(n) = nonce {
            claims["nonce"] = json!(n);
        }
        match fault {
            Some(IdTokenFault::WrongNonce) => claims["nonce"] = json!("not-the-nonce"),
            Some(IdTokenFault::WrongAudience) => claims["aud"] = json!("another-client"),
            Some(IdTokenFault::Expired) => {
                claims["exp"] = json!(now - 3600);
                claims["iat"] = json!(now - 7200);
            }
            Some(IdTokenFault::BadSignature) | None => {}
        }
        let Value::Object(claims) = claims else {
            return None;
        };
        if fault == Some(IdTokenFault::BadSignature) {
            let other = Signer::new(Algorithm::Es256, &new_key()?).ok()?;
            let other = match signer.kid() {
                Some(kid) => other.with_kid(kid),
                None => other,
            };
            return other.sign(&claims).ok();
        }
        signer.sign(&claims).ok()
    }
}

impl MockState {
    /// Which discovery documents are served, and the issuer they name (`None`: the mock's own).
    pub fn set_discovery(&self, openid: bool, oauth: bool, issuer: Option<String>) {
        *lock(&self.oidc.settings) = DiscoverySettings {
            openid,
            oauth,
            issuer,
        };
    }

    /// Makes every following `id_token` wrong this way (`None`: right again).
    pub fn set_id_token_fault(&self, fault: Option<IdTokenFault>) {
        *lock(&self.oidc.fault) = fault;
    }

    /// Signs the following `id_token`s with a new key (a new `kid`), the only one the JWKS lists
    /// from now on (a provider's key rotation).
    pub fn rotate_id_token_key(&self) {
        *lock(&self.oidc.key) = new_signing_key();
    }
}

/// `GET /.well-known/…`: the metadata document, or 404 when that one is switched off.
pub(super) fn document(state: &MockState, openid: bool) -> http::Response<Body> {
    state
        .counters
        .discovery
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let s = lock(&state.oidc.settings).clone();
    if !(if openid { s.openid } else { s.oauth }) {
        return json_response(StatusCode::NOT_FOUND, &json!({"error": "not_found"}));
    }
    let base = state.issuer();
    let mut doc = json!({
        "issuer": s.issuer.unwrap_or_else(|| base.clone()),
        "authorization_endpoint": format!("{base}/oauth/authorize"),
        "token_endpoint": format!("{base}/oauth/token"),
        "revocation_endpoint": format!("{base}/oauth/revoke"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials", "password"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "client_secret_jwt"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "scopes_supported": ["openid", "email"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    });
    if lock(&state.oidc.key).0.is_some() {
        doc["jwks_uri"] = json!(format!("{base}/oauth/jwks"));
    }
    json_response(StatusCode::OK, &doc)
}

/// `GET /oauth/jwks`.
pub(super) fn jwks(state: &MockState) -> http::Response<Body> {
    state
        .counters
        .jwks
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    json_response(
        StatusCode::OK,
        &json!({"keys": [lock(&state.oidc.key).1.clone()]}),
    )
}
