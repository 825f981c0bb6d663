//! Request signing and signed client assertions (issue 19): the primitives the pipeline's "sign" step
//! and the token endpoint's client authentication call.
//!
//! Every function here is pure: no I/O, no config parsing, no clock or randomness unless asked for
//! (each has a variant that takes the timestamp and nonce, so tests are deterministic, and a helper
//! that makes fresh ones). Keys are parsed once (at config load) and used per request.
//!
//! | module | what it makes | checked against |
//! | --- | --- | --- |
//! | [`oauth1`] | RFC 5849 signature base string, `HMAC-SHA1`, `HMAC-SHA256`, `RSA-SHA1`, `RSA-SHA256`, `PLAINTEXT`; the `Authorization: OAuth …` value, or the parameters for query / form placement | oauthlib's server side (`tests/verify/`) |
//! | [`sigv4`] | AWS Signature Version 4: canonical request, string to sign, signing key, `Authorization` and the `X-Amz-*` headers | the AWS SigV4 test suite (`tests/data/sigv4/`) and botocore |
//! | [`hmac`] | a partner-API HMAC over a `string_to_sign` template (`{{method}}`, `{{path}}`, …) | Python's `hmac` |
//! | [`jwt`] | compact JWS (`RS256`, `PS256`, `ES256`, `EdDSA`, `HS256`), RFC 7523 client assertions and JWT bearer grant assertions, Google service-account keys | PyJWT, jwcrypto |
//! | [`key`] | private keys from PEM (PKCS#1, PKCS#8, SEC1), certificates' `x5t#S256`, RFC 7638 thumbprints | |
//!
//! Secrets: key material and shared secrets live in types whose `Debug` prints `[redacted]` and that
//! have no `Display`; errors name what failed (the format, the algorithm, the field), never a key
//! byte. Crypto is `ring` (HMAC, digests, RSA PKCS#1 v1.5 SHA-256 and PSS, ECDSA P-256, Ed25519),
//! except OAuth 1.0a's RSA methods: `ring` does not sign `RSA-SHA1` and refuses keys under 2048
//! bits, which Jira-style setups still have, so those are RustCrypto's `rsa` (constant-time since
//! 0.10).
//!
//! How a caller uses each (keys and signers are built at config load, the rest per request, on the
//! request exactly as it goes upstream; a request sent again is signed again):
//! - OAuth 1.0a: `oauth1::Client::new(method, key, secret, rsa_key)`; per request
//!   `client.sign(&sign::Request { .. }, &Protocol::new(&fresh_nonce(), unix_now()).with_token(t, s))`,
//!   then `Authorization: signed.authorization(realm)`, or `signed.form_encoded()` appended to the
//!   query or the form body.
//! - SigV4: `sigv4::Signer::new(Credentials::new(id, secret), region, service)`; per request
//!   `signer.sign(&sign::Request { .. }, Payload::Signed, unix_now())`, then every header of
//!   `signed.headers()` set, replacing any copy.
//! - HMAC: `hmac::Signer::new(string_to_sign, secret, ..)`; per request `let m = Moment::fresh();`
//!   `{{signature}}` = `signer.sign(&sign::Request { .. }, &m)`, and `m.timestamp()` etc. for the
//!   other fields.
//! - JWT: `jwt::Signer::new(alg, &PrivateKey::from_pem(pem)?)?.with_thumbprint_kid()`, then
//!   `jwt::fresh_client_assertion(..)` or `jwt::bearer_assertion(..)`.

pub mod hmac;
pub mod jwt;
pub mod key;
pub mod oauth1;
pub mod sigv4;
pub mod verify;

#[cfg(test)]
mod proptests;

use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use ring::rand::SecureRandom;
use thiserror::Error;

pub use key::{KeyError, PrivateKey};

/// The request as it goes upstream: what every signer ([`oauth1`], [`sigv4`], [`hmac`]) signs.
///
/// The pipeline's sign phase builds it after placement, from the request exactly as the transport
/// writes it: the upstream URI, the `Host` header value it sends, the final header fields (with
/// `host` and `content-length` among them) and the body.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// `host` or `host:port`: the `Host` header as sent.
    pub authority: &'a str,
    /// The path as sent, without the query.
    pub path: &'a str,
    /// The raw query as sent, without `?`.
    pub query: Option<&'a str>,
    /// The header fields as sent, in order (names in any case).
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The body as sent (empty when none, or when it is streamed unsigned).
    pub body: &'a [u8],
}

/// The header fields of a form-encoded body, for tests and callers that build a [`Request`].
pub const FORM_HEADERS: &[(&str, &[u8])] =
    &[("content-type", b"application/x-www-form-urlencoded")];

impl Request<'_> {
    /// The first value of a header field (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// The body, when it is `application/x-www-form-urlencoded` (OAuth 1.0a signs its
    /// parameters, RFC 5849 §3.4.1.3.1).
    pub fn form_body(&self) -> Option<&[u8]> {
        self.header("content-type")
            .filter(|ct| oauth1::is_form(ct))
            .map(|_| self.body)
    }
}

/// Everything but RFC 3986 unreserved characters (ALPHA / DIGIT / `-` / `.` / `_` / `~`) is
/// percent-encoded, with uppercase hex: RFC 5849 §3.6 and AWS's `UriEncode` agree on this set.
pub(crate) const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Bytes that must never be printed: a shared secret or a key's encoding.
///
/// `Debug` prints `[redacted]`; there is no `Display` and no equality.
#[derive(Clone)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        SecretBytes(bytes.into())
    }

    /// The secret bytes.
    ///
    /// Security: for a MAC key or a signature input only; never format them into a message.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A signing step failed. Messages name the step, never a key or secret.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SignError {
    #[error("the signature method {method} needs {what}")]
    Missing {
        method: &'static str,
        what: &'static str,
    },
    #[error("the {key} key cannot sign {alg}")]
    KeyMismatch {
        key: &'static str,
        alg: &'static str,
    },
    #[error("the request has no Host header")]
    NoHost,
    #[error("the request URI {0}")]
    BadUri(&'static str),
    #[error("{0} signing failed")]
    Crypto(&'static str),
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("{0}")]
    Invalid(String),
}

/// Fills `out` from the operating system's CSPRNG.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // SystemRandom fails only where the OS has no random source at all; a signing nonce must not be
    // weak, so that is a panic rather than a fallback.
    #[allow(clippy::expect_used)]
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .expect("the operating system's random source failed");
    out
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Decodes hex (either case); `None` when it is not hex of whole bytes.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// Percent-decodes `%XX` sequences (a `%` not followed by two hex digits stays as it is); with
/// `plus_is_space`, `+` decodes to a space (`application/x-www-form-urlencoded`).
pub(crate) fn percent_decode(raw: &[u8], plus_is_space: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let hexval = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'%' if i + 2 < raw.len() => match (hexval(raw[i + 1]), hexval(raw[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// Civil date and time (UTC) of a Unix timestamp: (year, month, day, hour, minute, second).
pub(crate) fn civil(unix: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (unix / 86_400) as i64;
    let secs = (unix % 86_400) as u32;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_bytes_never_print() {
        let s = SecretBytes::new(b"hunter2".to_vec());
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(s.expose(), b"hunter2");
    }

    #[test]
    fn civil_dates_match_httpdate() {
        for t in [
            0u64,
            951_782_400,
            1_440_938_160,
            4_107_542_399,
            1_709_164_800,
        ] {
            let (y, mo, d, h, mi, s) = civil(t);
            let http =
                httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t));
            let months = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ];
            let mine = format!(
                "{d:02} {} {y} {h:02}:{mi:02}:{s:02} GMT",
                months[(mo - 1) as usize]
            );
            assert!(http.ends_with(&mine), "{http} vs {mine}");
        }
    }

    #[test]
    fn percent_decoding_keeps_stray_percent_signs() {
        assert_eq!(percent_decode(b"a%20b+c%", false), b"a b+c%");
        assert_eq!(percent_decode(b"a%20b+c%4", true), b"a b c%4");
        assert_eq!(percent_decode(b"%e1%88%B4%zz", false), "ሴ%zz".as_bytes());
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
        assert_eq!(unhex("000FfF"), Some(vec![0, 15, 255]));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
    }
}
