//! AWS Signature Version 4 for requests signed in the `Authorization` header.
//!
//! A [`Signer`] holds the credentials, region and service (built once per profile). Per request,
//! [`Signer::sign`] takes the request as sent ([`super::Request`]: method, path, query, headers,
//! body) and whether the body is signed ([`Payload::Unsigned`] for S3's `UNSIGNED-PAYLOAD`) and returns [`Signed`]: the headers to set on the request
//! (`x-amz-date`, `x-amz-content-sha256`, `x-amz-security-token` when there is a session token, and
//! `authorization`), each replacing any copy the request has, plus the intermediate strings.
//!
//! The canonical request, following the AWS specification and its test suite:
//! - **canonical URI**: for S3, the path encoded once (decoded, then every byte but unreserved
//!   characters and `/` percent-encoded: what S3 computes from the object key); for every other
//!   service, dot segments and empty segments removed, then the path *as sent* encoded again (so
//!   `%20` becomes `%2520`, as the AWS SDKs do).
//! - **canonical query**: each name and value percent-decoded and encoded again, pairs sorted by
//!   name, then value. `+` is a literal plus (it becomes `%2B`), as in the AWS C SDK.
//! - **canonical headers**: every header as sent except hop-by-hop and tracing ones (the list
//!   botocore uses, [`UNSIGNED_HEADERS`]) and except the headers this signer sets, names lowercased,
//!   values trimmed with inner whitespace runs collapsed, repeated headers joined with `,`; plus
//!   `x-amz-date`, `x-amz-content-sha256` and `x-amz-security-token`. `host` must be among them.
//! - **payload**: hex SHA-256 of the body, or `UNSIGNED-PAYLOAD`.

use std::fmt;

use percent_encoding::percent_encode;

pub use super::Request;
use super::{hex, percent_decode, SecretBytes, SignError, NOT_UNRESERVED};

/// Headers never signed: hop-by-hop headers and ones that proxies and tracers rewrite (botocore's
/// `SIGNED_HEADERS_BLACKLIST`), and `authorization`, which the signature replaces.
pub const UNSIGNED_HEADERS: [&str; 15] = [
    "authorization",
    "baggage",
    "connection",
    "expect",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "traceparent",
    "tracestate",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "x-amzn-trace-id",
];

/// Headers this signer sets (any copy in the request is replaced).
pub const SET_HEADERS: [&str; 4] = [
    "x-amz-date",
    "x-amz-content-sha256",
    "x-amz-security-token",
    "authorization",
];

/// The `x-amz-content-sha256` value for a body that is not signed.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Long-term or temporary AWS credentials.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    secret_access_key: SecretBytes,
    session_token: Option<SecretBytes>,
}

impl Credentials {
    pub fn new(access_key_id: impl Into<String>, secret_access_key: &str) -> Self {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: SecretBytes::new(secret_access_key.as_bytes()),
            session_token: None,
        }
    }

    pub fn with_session_token(mut self, token: &str) -> Self {
        self.session_token = Some(SecretBytes::new(token.as_bytes()));
        self
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[redacted]")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// How the canonical request is built; [`Settings::for_service`] gives what AWS expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Encode the path as sent once more (every service but S3).
    pub double_encode_path: bool,
    /// Remove `.`/`..` and empty segments (every service but S3).
    pub normalize_path: bool,
    /// Send and sign `x-amz-content-sha256` (always, here; the test suite's unsigned-body cases
    /// leave it out).
    pub content_sha256_header: bool,
    /// Sign `x-amz-security-token` (always, here; a few services want it added after signing).
    pub sign_session_token: bool,
}

impl Settings {
    pub fn for_service(service: &str) -> Settings {
        let s3 = service.eq_ignore_ascii_case("s3");
        Settings {
            double_encode_path: !s3,
            normalize_path: !s3,
            content_sha256_header: true,
            sign_session_token: true,
        }
    }
}

/// Whether the body is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Signed: the hex SHA-256 of the request's body goes into the canonical request.
    Signed,
    /// `UNSIGNED-PAYLOAD` (S3 streaming uploads): the body may be streamed.
    Unsigned,
}

/// Signs for one set of credentials, region and service.
#[derive(Clone, Debug)]
pub struct Signer {
    credentials: Credentials,
    region: String,
    service: String,
    settings: Settings,
}

/// A signed request: the headers to set, and how they were computed. `Debug` shows the header
/// names and the string to sign, not the session token the canonical request and headers carry.
pub struct Signed {
    canonical_request: Vec<u8>,
    string_to_sign: String,
    signature: String,
    headers: Vec<(&'static str, String)>,
}

impl fmt::Debug for Signed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| *n).collect();
        f.debug_struct("sigv4::Signed")
            .field("headers", &names)
            .field("string_to_sign", &self.string_to_sign)
            .finish()
    }
}

impl Signed {
    /// The canonical request (bytes: header values need not be UTF-8). It holds the session token
    /// when there is one: show it only masked.
    pub fn canonical_request(&self) -> &[u8] {
        &self.canonical_request
    }

    pub fn string_to_sign(&self) -> &str {
        &self.string_to_sign
    }

    /// Hex HMAC-SHA256.
    pub fn signature(&self) -> &str {
        &self.signature
    }

    /// The headers to set, in order: `x-amz-date`, `x-amz-content-sha256`,
    /// `x-amz-security-token` (each when used), `authorization`. Each replaces any copy the request
    /// has. Mark `authorization` and `x-amz-security-token` sensitive.
    pub fn headers(&self) -> &[(&'static str, String)] {
        &self.headers
    }

    pub fn authorization(&self) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| *n == "authorization")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    }
}

fn hmac(key: &[u8], msg: &[u8]) -> ring::hmac::Tag {
    ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), msg)
}

/// `YYYYMMDDTHHMMSSZ`.
pub fn amz_date(unix: u64) -> String {
    let (y, mo, d, h, mi, s) = super::civil(unix);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

impl Signer {
    pub fn new(
        credentials: Credentials,
        region: impl Into<String>,
        service: impl Into<String>,
    ) -> Self {
        let service = service.into();
        Signer {
            credentials,
            region: region.into(),
            settings: Settings::for_service(&service),
            service,
        }
    }

    pub fn with_settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// The signing key for a day (`YYYYMMDD`): HMAC chain over date, region, service, `aws4_request`.
    pub fn signing_key(&self, date: &str) -> SecretBytes {
        let mut secret = Vec::with_capacity(4 + self.credentials.secret_access_key.len());
        secret.extend_from_slice(b"AWS4");
        secret.extend_from_slice(self.credentials.secret_access_key.expose());
        let k_date = hmac(&secret, date.as_bytes());
        let k_region = hmac(k_date.as_ref(), self.region.as_bytes());
        let k_service = hmac(k_region.as_ref(), self.service.as_bytes());
        SecretBytes::new(hmac(k_service.as_ref(), b"aws4_request").as_ref())
    }

    /// Signs `request` (its headers as sent, `host` among them) at `unix_time`.
    pub fn sign(
        &self,
        request: &Request<'_>,
        payload: Payload,
        unix_time: u64,
    ) -> Result<Signed, SignError> {
        let amz_date = amz_date(unix_time);
        let date = &amz_date[..8];
        let payload_hash = match payload {
            Payload::Signed => {
                hex(ring::digest::digest(&ring::digest::SHA256, request.body).as_ref())
            }
            Payload::Unsigned => UNSIGNED_PAYLOAD.to_string(),
        };
        let token = self
            .credentials
            .session_token
            .as_ref()
            .map(|t| String::from_utf8_lossy(t.expose()).into_owned());

        let mut canon: Vec<(String, Vec<u8>)> = Vec::new();
        for &(name, value) in request.headers {
            let lower = name.to_ascii_lowercase();
            if UNSIGNED_HEADERS.contains(&lower.as_str()) || SET_HEADERS.contains(&lower.as_str()) {
                continue;
            }
            canon.push((lower, trim_all(value)));
        }
        if !canon.iter().any(|(n, _)| n == "host") {
            return Err(SignError::NoHost);
        }
        canon.push(("x-amz-date".into(), amz_date.clone().into_bytes()));
        if self.settings.content_sha256_header {
            canon.push((
                "x-amz-content-sha256".into(),
                payload_hash.clone().into_bytes(),
            ));
        }
        if let (Some(t), true) = (&token, self.settings.sign_session_token) {
            canon.push(("x-amz-security-token".into(), t.clone().into_bytes()));
        }
        // Stable: repeated headers keep the order they were sent in.
        canon.sort_by(|a, b| a.0.cmp(&b.0));

        let (path, query) = (request.path, request.query.unwrap_or_default());
        let mut cr = Vec::with_capacity(256 + path.len() + query.len());
        cr.extend_from_slice(request.method.as_bytes());
        cr.push(b'\n');
        self.canonical_uri(path, &mut cr);
        cr.push(b'\n');
        canonical_query(query, &mut cr);
        cr.push(b'\n');
        let mut signed_headers = String::new();
        let mut i = 0;
        while i < canon.len() {
            let name = &canon[i].0;
            cr.extend_from_slice(name.as_bytes());
            cr.push(b':');
            let mut j = i;
            while j < canon.len() && canon[j].0 == *name {
                if j > i {
                    cr.push(b',');
                }
                cr.extend_from_slice(&canon[j].1);
                j += 1;
            }
            cr.push(b'\n');
            if !signed_headers.is_empty() {
                signed_headers.push(';');
            }
            signed_headers.push_str(name);
            i = j;
        }
        cr.push(b'\n');
        cr.extend_from_slice(signed_headers.as_bytes());
        cr.push(b'\n');
        cr.extend_from_slice(payload_hash.as_bytes());

        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(ring::digest::digest(&ring::digest::SHA256, &cr).as_ref())
        );
        let signature =
            hex(hmac(self.signing_key(date).expose(), string_to_sign.as_bytes()).as_ref());
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            self.credentials.access_key_id
        );
        let mut out = vec![("x-amz-date", amz_date)];
        if self.settings.content_sha256_header {
            out.push(("x-amz-content-sha256", payload_hash));
        }
        if let Some(t) = token {
            out.push(("x-amz-security-token", t));
        }
        out.push(("authorization", authorization));
        Ok(Signed {
            canonical_request: cr,
            string_to_sign,
            signature,
            headers: out,
        })
    }

    fn canonical_uri(&self, path: &str, out: &mut Vec<u8>) {
        let path = if path.is_empty() { "/" } else { path };
        let normalized;
        let path = if self.settings.normalize_path {
            normalized = normalize(path);
            normalized.as_str()
        } else {
            path
        };
        if self.settings.double_encode_path {
            encode_path(path.as_bytes(), out);
        } else {
            encode_path(&percent_decode(path.as_bytes(), false), out);
        }
    }
}

/// Every byte but unreserved characters and `/` percent-encoded.
fn encode_path(path: &[u8], out: &mut Vec<u8>) {
    for (i, segment) in path.split(|&b| b == b'/').enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        for chunk in percent_encode(segment, NOT_UNRESERVED) {
            out.extend_from_slice(chunk.as_bytes());
        }
    }
}

/// Removes `.`, `..` and empty segments; keeps the leading `/` and a trailing one.
fn normalize(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for s in path.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    out.push('/');
    out.push_str(&segments.join("/"));
    if path.ends_with('/') && !segments.is_empty() {
        out.push('/');
    }
    out
}

fn canonical_query(query: &str, out: &mut Vec<u8>) {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            let e = |s: &str| {
                percent_encode(&percent_decode(s.as_bytes(), false), NOT_UNRESERVED).to_string()
            };
            (e(n), e(v))
        })
        .collect();
    pairs.sort_unstable();
    for (i, (n, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(n.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
    }
}

/// Trims a header value and collapses runs of spaces and tabs into one space (`Trimall`).
fn trim_all(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for word in value
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(b' ');
        }
        out.extend_from_slice(word);
    }
    out
}

#[cfg(test)]
#[path = "sigv4_tests.rs"]
mod tests;
