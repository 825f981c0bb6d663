//! Compact JWS signing (RFC 7515) for client authentication and the JWT bearer grant.
//!
//! A [`Signer`] is an algorithm and a key: `RS256`, `PS256` (RSA of 2048 bits or more), `ES256` (EC
//! P-256), `EdDSA` (Ed25519) or `HS256` (a shared secret), with the header's `kid`
//! ([`Signer::with_kid`], [`Signer::with_certificate`] for `x5t#S256`, or
//! [`Signer::with_thumbprint_kid`] for the RFC 7638 thumbprint of the public key). Headers are
//! `{"alg":…,"typ":"JWT","kid":…}`.
//!
//! The assertions:
//! - [`client_assertion`] ([`fresh_client_assertion`] for now and a fresh `jti`): RFC 7523 §2.2 /
//!   OpenID Connect Core §9 (`private_key_jwt`, `client_secret_jwt`): `iss` = `sub` = the client
//!   id, `aud`, `jti`, `iat`, `exp` = `iat` + 60 s.
//! - [`bearer_assertion`]: RFC 7523 §2.1, the configured claims plus `iat` and `exp` (60 s to 1 h).
//! - [`ServiceAccount`]: a Google service-account JSON key (`client_email`, `private_key_id`,
//!   `private_key`, `token_uri`) as a signer and its claims.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{RSA_PKCS1_SHA256, RSA_PSS_SHA256};
use serde_json::{Map, Value};
use thiserror::Error;

use super::key::{x5t_s256, Inner, KeyError, KeyKind, PrivateKey};
use super::SignError;

/// A JWS `alg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Rs256,
    Ps256,
    Es256,
    EdDsa,
    Hs256,
}

impl Algorithm {
    pub const ALL: [Algorithm; 5] = [
        Algorithm::Rs256,
        Algorithm::Ps256,
        Algorithm::Es256,
        Algorithm::EdDsa,
        Algorithm::Hs256,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Ps256 => "PS256",
            Algorithm::Es256 => "ES256",
            Algorithm::EdDsa => "EdDSA",
            Algorithm::Hs256 => "HS256",
        }
    }

    pub fn parse(name: &str) -> Option<Algorithm> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// The algorithm a key signs with unless told otherwise: RS256, ES256 or EdDSA.
    pub fn default_for(kind: KeyKind) -> Algorithm {
        match kind {
            KeyKind::Rsa => Algorithm::Rs256,
            KeyKind::EcP256 => Algorithm::Es256,
            KeyKind::Ed25519 => Algorithm::EdDsa,
        }
    }
}

enum Key {
    Private(PrivateKey),
    Hmac(ring::hmac::Key),
}

/// An algorithm, a key and the header's key identifiers.
pub struct Signer {
    alg: Algorithm,
    key: Key,
    kid: Option<String>,
    x5t_s256: Option<String>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("jwt::Signer")
            .field("alg", &self.alg.as_str())
            .field("kid", &self.kid)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl Signer {
    /// `alg` with a private key; the key must fit the algorithm (RSA ≥ 2048 bits for RS256/PS256).
    pub fn new(alg: Algorithm, key: &PrivateKey) -> Result<Signer, SignError> {
        let fits = match (&*key.0, alg) {
            (Inner::Rsa(k), Algorithm::Rs256 | Algorithm::Ps256) => match &k.ring {
                Ok(_) => true,
                Err(_) if k.bits < 2048 => {
                    return Err(KeyError::RsaTooSmall(k.bits, alg.as_str()).into())
                }
                Err(why) => return Err(KeyError::RsaUnusable(alg.as_str(), why.clone()).into()),
            },
            (Inner::EcP256(_), Algorithm::Es256) | (Inner::Ed25519(_), Algorithm::EdDsa) => true,
            _ => false,
        };
        if !fits {
            return Err(SignError::KeyMismatch {
                key: key.kind().name(),
                alg: alg.as_str(),
            });
        }
        Ok(Signer {
            alg,
            key: Key::Private(key.clone()),
            kid: None,
            x5t_s256: None,
        })
    }

    /// HS256 with a shared secret (`client_secret_jwt`: the client secret's bytes).
    pub fn hs256(secret: &[u8]) -> Signer {
        Signer {
            alg: Algorithm::Hs256,
            key: Key::Hmac(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret)),
            kid: None,
            x5t_s256: None,
        }
    }

    pub fn with_kid(mut self, kid: impl Into<String>) -> Signer {
        self.kid = Some(kid.into());
        self
    }

    /// `kid` = the RFC 7638 thumbprint of the public key (unchanged for HS256).
    pub fn with_thumbprint_kid(mut self) -> Signer {
        if let Key::Private(k) = &self.key {
            self.kid = Some(k.jwk_thumbprint());
        }
        self
    }

    /// Adds the certificate's `x5t#S256` header (which Entra ID reads) and, unless a `kid` was
    /// given, uses the same value as `kid`.
    pub fn with_certificate(mut self, cert_pem: &[u8]) -> Result<Signer, KeyError> {
        let t = x5t_s256(cert_pem)?;
        if self.kid.is_none() {
            self.kid = Some(t.clone());
        }
        self.x5t_s256 = Some(t);
        Ok(self)
    }

    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The RFC 7638 thumbprint of the public key (`None` for HS256).
    pub fn public_thumbprint(&self) -> Option<String> {
        match &self.key {
            Key::Private(k) => Some(k.jwk_thumbprint()),
            Key::Hmac(_) => None,
        }
    }

    /// The JOSE header this signer writes.
    pub fn header(&self) -> Map<String, Value> {
        let mut h = Map::new();
        h.insert("alg".into(), self.alg.as_str().into());
        h.insert("typ".into(), "JWT".into());
        if let Some(kid) = &self.kid {
            h.insert("kid".into(), kid.as_str().into());
        }
        if let Some(t) = &self.x5t_s256 {
            h.insert("x5t#S256".into(), t.as_str().into());
        }
        h
    }

    /// `BASE64URL(header) . BASE64URL(payload) . BASE64URL(signature)` over the given bytes.
    pub fn sign_parts(&self, header: &[u8], payload: &[u8]) -> Result<String, SignError> {
        let mut out = String::with_capacity((header.len() + payload.len()) * 4 / 3 + 360);
        URL_SAFE_NO_PAD.encode_string(header, &mut out);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut out);
        let sig = self.raw_signature(out.as_bytes())?;
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(sig, &mut out);
        Ok(out)
    }

    /// A JWT with this signer's header and `claims`.
    pub fn sign(&self, claims: &Map<String, Value>) -> Result<String, SignError> {
        let header =
            serde_json::to_vec(&self.header()).map_err(|e| SignError::Invalid(e.to_string()))?;
        let payload = serde_json::to_vec(claims).map_err(|e| SignError::Invalid(e.to_string()))?;
        self.sign_parts(&header, &payload)
    }

    fn raw_signature(&self, input: &[u8]) -> Result<Vec<u8>, SignError> {
        let rng = ring::rand::SystemRandom::new();
        let fail = || SignError::Crypto(self.alg.as_str());
        Ok(match &self.key {
            Key::Hmac(k) => ring::hmac::sign(k, input).as_ref().to_vec(),
            Key::Private(k) => match &*k.0 {
                Inner::Rsa(rsa) => {
                    let pair = rsa.ring.as_ref().map_err(|_| fail())?;
                    let padding: &'static dyn ring::signature::RsaEncoding =
                        if self.alg == Algorithm::Ps256 {
                            &RSA_PSS_SHA256
                        } else {
                            &RSA_PKCS1_SHA256
                        };
                    let mut sig = vec![0; pair.public().modulus_len()];
                    pair.sign(padding, &rng, input, &mut sig)
                        .map_err(|_| fail())?;
                    sig
                }
                Inner::EcP256(pair) => pair
                    .sign(&rng, input)
                    .map_err(|_| fail())?
                    .as_ref()
                    .to_vec(),
                Inner::Ed25519(pair) => pair.sign(input).as_ref().to_vec(),
            },
        })
    }
}

/// A fresh `jti`: 128 random bits, base64url.
pub fn fresh_jti() -> String {
    URL_SAFE_NO_PAD.encode(super::random_bytes::<16>())
}

/// Lifetime of a client assertion, seconds (`exp` − `iat`).
pub const CLIENT_ASSERTION_LIFETIME: u64 = 60;
/// Bounds and default of a JWT bearer grant assertion's lifetime, seconds (Google's libraries use
/// one hour, the most Google accepts).
pub const MIN_ASSERTION_LIFETIME: u64 = 60;
pub const MAX_ASSERTION_LIFETIME: u64 = 3600;
pub const DEFAULT_ASSERTION_LIFETIME: u64 = 3600;

/// RFC 7523 §2.2 client assertion (`client_assertion_type` =
/// `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`). `jti`: [`fresh_jti`]; `iat`: now.
pub fn client_assertion(
    signer: &Signer,
    client_id: &str,
    audience: &str,
    iat: u64,
    jti: &str,
) -> Result<String, SignError> {
    let mut c = Map::new();
    c.insert("iss".into(), client_id.into());
    c.insert("sub".into(), client_id.into());
    c.insert("aud".into(), audience.into());
    c.insert("jti".into(), jti.into());
    c.insert("iat".into(), iat.into());
    c.insert("exp".into(), (iat + CLIENT_ASSERTION_LIFETIME).into());
    signer.sign(&c)
}

/// [`client_assertion`] now, with a fresh `jti`.
pub fn fresh_client_assertion(
    signer: &Signer,
    client_id: &str,
    audience: &str,
) -> Result<String, SignError> {
    client_assertion(signer, client_id, audience, super::unix_now(), &fresh_jti())
}

/// RFC 7523 §2.1 assertion: `claims` (iss, sub, aud, scope, … as configured) with `iat` and
/// `exp` = `iat` + `lifetime` set here.
pub fn bearer_assertion(
    signer: &Signer,
    claims: &Map<String, Value>,
    iat: u64,
    lifetime: u64,
) -> Result<String, SignError> {
    if !(MIN_ASSERTION_LIFETIME..=MAX_ASSERTION_LIFETIME).contains(&lifetime) {
        return Err(SignError::Invalid(format!(
            "assertion_lifetime is {lifetime} s; expected {MIN_ASSERTION_LIFETIME} to {MAX_ASSERTION_LIFETIME}"
        )));
    }
    let mut c = claims.clone();
    c.insert("iat".into(), iat.into());
    c.insert("exp".into(), (iat + lifetime).into());
    signer.sign(&c)
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ServiceAccountError {
    #[error("the service-account key is not JSON (line {0}, column {1})")]
    Json(usize, usize),
    #[error("the service-account key has no string \"{0}\"")]
    Missing(&'static str),
    #[error("the service-account key's \"type\" is not \"service_account\"")]
    Type,
    #[error("the service-account key's private_key: {0}")]
    Key(KeyError),
}

/// A Google service-account JSON key.
#[derive(Clone, Debug)]
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key_id: String,
    pub token_uri: String,
    key: PrivateKey,
}

/// Where Google's token endpoint is when a key file does not say.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

impl ServiceAccount {
    /// Reads the JSON. Errors never quote the file (it holds the private key).
    pub fn from_json(json: &[u8]) -> Result<ServiceAccount, ServiceAccountError> {
        let v: Value = serde_json::from_slice(json)
            .map_err(|e| ServiceAccountError::Json(e.line(), e.column()))?;
        let get = |name: &'static str| {
            v.get(name)
                .and_then(Value::as_str)
                .ok_or(ServiceAccountError::Missing(name))
        };
        if let Some(t) = v.get("type") {
            if t.as_str() != Some("service_account") {
                return Err(ServiceAccountError::Type);
            }
        }
        let key = PrivateKey::from_pem(get("private_key")?.as_bytes())
            .map_err(ServiceAccountError::Key)?;
        Ok(ServiceAccount {
            client_email: get("client_email")?.to_string(),
            private_key_id: get("private_key_id")?.to_string(),
            token_uri: get("token_uri").unwrap_or(GOOGLE_TOKEN_URI).to_string(),
            key,
        })
    }

    /// RS256 with `kid` = `private_key_id`.
    pub fn signer(&self) -> Result<Signer, SignError> {
        Ok(Signer::new(Algorithm::Rs256, &self.key)?.with_kid(self.private_key_id.clone()))
    }

    /// `iss` = `client_email`, `aud` = `token_uri`, then `scope` and `sub` when given.
    pub fn claims(&self, scope: Option<&str>, sub: Option<&str>) -> Map<String, Value> {
        let mut c = Map::new();
        c.insert("iss".into(), self.client_email.as_str().into());
        c.insert("aud".into(), self.token_uri.as_str().into());
        if let Some(s) = scope {
            c.insert("scope".into(), s.into());
        }
        if let Some(s) = sub {
            c.insert("sub".into(), s.into());
        }
        c
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
