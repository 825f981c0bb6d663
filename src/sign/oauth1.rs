//! OAuth 1.0a request signatures (RFC 5849 §3).
//!
//! A [`Client`] holds the consumer's part (key, secret or RSA key, signature method) and is built
//! once per profile. Per request, [`Client::sign`] takes the [`Request`] exactly as it goes upstream
//! and the [`Protocol`] values (nonce, timestamp, the token and its secret, `oauth_callback` or
//! `oauth_verifier` in the three-legged flow) and returns [`Signed`]: the `oauth_*` parameters with
//! the signature, ready for the `Authorization` header ([`Signed::authorization`]) or for the query
//! or a form body ([`Signed::form_encoded`]).
//!
//! The signature base string (§3.4.1) is `METHOD&base-string-URI&normalized-parameters`, each part
//! percent-encoded (§3.6):
//! - the base string URI is the scheme and host lowercased, the port only when it is not the
//!   scheme's default, and the path as sent (`/` when empty);
//! - the parameters are the query's pairs, the form body's pairs when the body is
//!   `application/x-www-form-urlencoded` (the caller says so), and the `oauth_*` protocol parameters;
//!   each name and value is form-decoded (`+` is a space), encoded by §3.6, and the pairs are sorted
//!   by name, then value.
//!
//! With query or form placement, `Request::query` / `Request::form_body` are the query and body
//! *without* the `oauth_*` parameters (they are added here), and the caller appends
//! [`Signed::form_encoded`] to them.

use std::fmt;
use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use percent_encoding::percent_encode;
use rsa::signature::{SignatureEncoding as _, Signer as _};

use super::key::{Inner, PrivateKey};
pub use super::Request;
use super::{percent_decode, SecretBytes, SignError, NOT_UNRESERVED};

/// `oauth_signature_method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureMethod {
    HmacSha1,
    HmacSha256,
    RsaSha1,
    RsaSha256,
    Plaintext,
}

impl SignatureMethod {
    pub const ALL: [SignatureMethod; 5] = [
        SignatureMethod::HmacSha1,
        SignatureMethod::HmacSha256,
        SignatureMethod::RsaSha1,
        SignatureMethod::RsaSha256,
        SignatureMethod::Plaintext,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SignatureMethod::HmacSha1 => "HMAC-SHA1",
            SignatureMethod::HmacSha256 => "HMAC-SHA256",
            SignatureMethod::RsaSha1 => "RSA-SHA1",
            SignatureMethod::RsaSha256 => "RSA-SHA256",
            SignatureMethod::Plaintext => "PLAINTEXT",
        }
    }

    /// The method named exactly as in `oauth_signature_method`.
    pub fn parse(name: &str) -> Option<SignatureMethod> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }

    pub fn is_rsa(self) -> bool {
        matches!(self, SignatureMethod::RsaSha1 | SignatureMethod::RsaSha256)
    }
}

enum MethodKey {
    /// HMAC and PLAINTEXT: the consumer secret; the key is completed per request with the token's.
    Shared(SecretBytes),
    RsaSha1(Box<rsa::pkcs1v15::SigningKey<sha1::Sha1>>),
    RsaSha256(Box<rsa::pkcs1v15::SigningKey<rsa::sha2::Sha256>>),
}

/// The consumer's credentials and signature method.
pub struct Client {
    method: SignatureMethod,
    consumer_key: String,
    key: MethodKey,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("method", &self.method.as_str())
            .field("consumer_key", &self.consumer_key)
            .field("key", &"[redacted]")
            .finish()
    }
}

/// A token and its secret (an access token, or a request token while exchanging it).
#[derive(Clone, Copy)]
pub struct Token<'a> {
    pub token: &'a str,
    pub secret: &'a str,
}

impl fmt::Debug for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({:?}, secret: [redacted])", self.token)
    }
}

/// The per-request protocol values.
#[derive(Clone, Debug)]
pub struct Protocol<'a> {
    /// `oauth_nonce`: [`fresh_nonce`] for a real request.
    pub nonce: &'a str,
    /// `oauth_timestamp`, Unix seconds.
    pub timestamp: u64,
    pub token: Option<Token<'a>>,
    /// `oauth_callback` (the temporary-credentials request of the three-legged flow).
    pub callback: Option<&'a str>,
    /// `oauth_verifier` (the token request of the three-legged flow).
    pub verifier: Option<&'a str>,
    /// Send `oauth_version="1.0"` (optional by RFC 5849, expected by NetSuite and most servers).
    pub version: bool,
}

impl<'a> Protocol<'a> {
    pub fn new(nonce: &'a str, timestamp: u64) -> Self {
        Protocol {
            nonce,
            timestamp,
            token: None,
            callback: None,
            verifier: None,
            version: true,
        }
    }

    pub fn with_token(mut self, token: &'a str, secret: &'a str) -> Self {
        self.token = Some(Token { token, secret });
        self
    }
}

/// A fresh `oauth_nonce`: 24 random alphanumeric characters (142 bits; letters and digits only,
/// which every server accepts, and within oauthlib's default 20–30 length).
pub fn fresh_nonce() -> String {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(24);
    while out.len() < 24 {
        for b in super::random_bytes::<32>() {
            // 248 = 4 × 62: rejection sampling keeps every character equally likely.
            if b < 248 && out.len() < 24 {
                out.push(ALPHABET[usize::from(b % 62)] as char);
            }
        }
    }
    out
}

/// Whether a `Content-Type` value is `application/x-www-form-urlencoded` (parameters ignored).
pub fn is_form(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
}

/// A signed request's `oauth_*` parameters. `Debug` leaves out the signature (with PLAINTEXT it is
/// the secrets themselves).
pub struct Signed {
    /// Protocol parameters in name order, `oauth_signature` among them; values not encoded.
    params: Vec<(&'static str, String)>,
    base_string: String,
}

impl fmt::Debug for Signed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (name, value) in &self.params {
            if *name == "oauth_signature" {
                m.entry(name, &"[redacted]");
            } else {
                m.entry(name, value);
            }
        }
        m.finish()
    }
}

impl Signed {
    /// The signature base string that was signed (for tests and diagnostics).
    pub fn base_string(&self) -> &str {
        &self.base_string
    }

    /// The `oauth_signature` value (not encoded).
    pub fn signature(&self) -> &str {
        self.get("oauth_signature").unwrap_or_default()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The protocol parameters, `oauth_signature` included; values not encoded.
    pub fn params(&self) -> &[(&'static str, String)] {
        &self.params
    }

    /// The `Authorization` header value: `OAuth realm="…", oauth_consumer_key="…", …` (§3.5.1).
    /// The `oauth_*` values are percent-encoded (§3.6); `realm` is an RFC 2617 quoted string, as
    /// servers expect it (`realm="1234567_SB1"`, `realm="http://sp.example.com/"`), with `"` and `\`
    /// escaped.
    pub fn authorization(&self, realm: Option<&str>) -> String {
        let mut out = String::with_capacity(64 + self.params.len() * 48);
        out.push_str("OAuth ");
        if let Some(realm) = realm {
            out.push_str("realm=\"");
            for c in realm.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push_str("\", ");
        }
        for (i, (name, value)) in self.params.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{name}=\"{}\"", enc(value.as_bytes()));
        }
        out
    }

    /// `oauth_consumer_key=…&oauth_nonce=…&…`, encoded (§3.6), to append to the query or to a form
    /// body with `&` (§3.5.2, §3.5.3).
    pub fn form_encoded(&self) -> String {
        let mut out = String::with_capacity(self.params.len() * 48);
        for (i, (name, value)) in self.params.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            let _ = write!(out, "{name}={}", enc(value.as_bytes()));
        }
        out
    }
}

fn enc(bytes: &[u8]) -> percent_encoding::PercentEncode<'_> {
    percent_encode(bytes, NOT_UNRESERVED)
}

impl Client {
    /// `consumer_secret` is needed by the HMAC methods and PLAINTEXT (it may be empty); `rsa_key`
    /// by the RSA methods, which need no secret (Jira Server style).
    pub fn new(
        method: SignatureMethod,
        consumer_key: impl Into<String>,
        consumer_secret: Option<&str>,
        rsa_key: Option<&PrivateKey>,
    ) -> Result<Client, SignError> {
        let key = if method.is_rsa() {
            let key = rsa_key.ok_or(SignError::Missing {
                method: method.as_str(),
                what: "an RSA private key",
            })?;
            let Inner::Rsa(rsa) = &*key.0 else {
                return Err(SignError::KeyMismatch {
                    key: key.kind().name(),
                    alg: method.as_str(),
                });
            };
            let k = rsa.rustcrypto.clone();
            match method {
                SignatureMethod::RsaSha1 => {
                    MethodKey::RsaSha1(Box::new(rsa::pkcs1v15::SigningKey::new(k)))
                }
                _ => MethodKey::RsaSha256(Box::new(rsa::pkcs1v15::SigningKey::new(k))),
            }
        } else {
            let secret = consumer_secret.ok_or(SignError::Missing {
                method: method.as_str(),
                what: "a consumer secret",
            })?;
            MethodKey::Shared(SecretBytes::new(secret.as_bytes()))
        };
        Ok(Client {
            method,
            consumer_key: consumer_key.into(),
            key,
        })
    }

    pub fn method(&self) -> SignatureMethod {
        self.method
    }

    /// Signs `request`. Deterministic for the given protocol values, except that the RSA methods
    /// blind the key with fresh randomness (which does not change the signature).
    pub fn sign(&self, request: &Request<'_>, proto: &Protocol<'_>) -> Result<Signed, SignError> {
        let mut params: Vec<(&'static str, String)> = Vec::with_capacity(8);
        if let Some(cb) = proto.callback {
            params.push(("oauth_callback", cb.to_string()));
        }
        params.push(("oauth_consumer_key", self.consumer_key.clone()));
        params.push(("oauth_nonce", proto.nonce.to_string()));
        params.push(("oauth_signature_method", self.method.as_str().to_string()));
        params.push(("oauth_timestamp", proto.timestamp.to_string()));
        if let Some(t) = &proto.token {
            params.push(("oauth_token", t.token.to_string()));
        }
        if let Some(v) = proto.verifier {
            params.push(("oauth_verifier", v.to_string()));
        }
        if proto.version {
            params.push(("oauth_version", "1.0".to_string()));
        }
        let uri = base_string_uri(request.scheme, request.authority, request.path)?;
        let mut pairs = Vec::new();
        for source in [request.query.map(str::as_bytes), request.form_body()]
            .into_iter()
            .flatten()
        {
            collect_form(source, &mut pairs);
        }
        for (n, v) in &params {
            pairs.push((n.to_string(), enc(v.as_bytes()).to_string()));
        }
        let base_string = signature_base_string(request.method, &uri, pairs);
        let token_secret = proto.token.map(|t| t.secret).unwrap_or_default();
        let signature = self.signature(&base_string, token_secret)?;
        let at = params
            .iter()
            .position(|(n, _)| *n > "oauth_signature")
            .unwrap_or(params.len());
        params.insert(at, ("oauth_signature", signature));
        Ok(Signed {
            params,
            base_string,
        })
    }

    fn signature(&self, base_string: &str, token_secret: &str) -> Result<String, SignError> {
        let shared_key = |secret: &SecretBytes| {
            let mut k = enc(secret.expose()).to_string();
            k.push('&');
            let _ = write!(k, "{}", enc(token_secret.as_bytes()));
            SecretBytes::new(k)
        };
        Ok(match (&self.key, self.method) {
            (MethodKey::Shared(secret), SignatureMethod::Plaintext) => {
                String::from_utf8_lossy(shared_key(secret).expose()).into_owned()
            }
            (MethodKey::Shared(secret), m) => {
                let alg = if m == SignatureMethod::HmacSha1 {
                    ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY
                } else {
                    ring::hmac::HMAC_SHA256
                };
                let key = ring::hmac::Key::new(alg, shared_key(secret).expose());
                STANDARD.encode(ring::hmac::sign(&key, base_string.as_bytes()))
            }
            (MethodKey::RsaSha1(k), _) => STANDARD.encode(
                k.try_sign(base_string.as_bytes())
                    .map_err(|_| SignError::Crypto("RSA-SHA1"))?
                    .to_vec(),
            ),
            (MethodKey::RsaSha256(k), _) => STANDARD.encode(
                k.try_sign(base_string.as_bytes())
                    .map_err(|_| SignError::Crypto("RSA-SHA256"))?
                    .to_vec(),
            ),
        })
    }
}

/// Splits a form-urlencoded string into pairs, each name and value decoded and re-encoded (§3.6).
fn collect_form(raw: &[u8], out: &mut Vec<(String, String)>) {
    for pair in raw.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        out.push((
            enc(&percent_decode(name, true)).to_string(),
            enc(&percent_decode(value, true)).to_string(),
        ));
    }
}

/// The base string URI (§3.4.1.2), not yet encoded.
pub fn base_string_uri(scheme: &str, authority: &str, path: &str) -> Result<String, SignError> {
    let scheme = scheme.to_ascii_lowercase();
    let authority = authority.to_ascii_lowercase();
    // Split off the port: after the closing bracket of an IPv6 literal, or after the last colon.
    let host_end = if authority.starts_with('[') {
        authority
            .find(']')
            .map(|i| i + 1)
            .ok_or(SignError::BadUri("authority has an unclosed IPv6 bracket"))?
    } else {
        authority.rfind(':').unwrap_or(authority.len())
    };
    let (host, port) = authority.split_at(host_end);
    if host.is_empty() {
        return Err(SignError::BadUri("has no host"));
    }
    let port = port.strip_prefix(':').unwrap_or(port);
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignError::BadUri("authority has an invalid port"));
    }
    let default = matches!((scheme.as_str(), port), ("http", "80") | ("https", "443"));
    let path = if path.is_empty() { "/" } else { path };
    let mut out = String::with_capacity(scheme.len() + authority.len() + path.len() + 4);
    out.push_str(&scheme);
    out.push_str("://");
    out.push_str(host);
    if !port.is_empty() && !default {
        out.push(':');
        out.push_str(port);
    }
    out.push_str(path);
    Ok(out)
}

/// `METHOD&uri&params` (§3.4.1.1) from already-encoded `(name, value)` pairs, which it sorts.
pub fn signature_base_string(
    method: &str,
    base_uri: &str,
    mut pairs: Vec<(String, String)>,
) -> String {
    pairs.sort_unstable();
    let mut normalized =
        String::with_capacity(pairs.iter().map(|(n, v)| n.len() + v.len() + 2).sum());
    for (i, (n, v)) in pairs.iter().enumerate() {
        if i > 0 {
            normalized.push('&');
        }
        normalized.push_str(n);
        normalized.push('=');
        normalized.push_str(v);
    }
    format!(
        "{}&{}&{}",
        enc(method.to_ascii_uppercase().as_bytes()),
        enc(base_uri.as_bytes()),
        enc(normalized.as_bytes())
    )
}

#[cfg(test)]
#[path = "oauth1_tests.rs"]
mod tests;
