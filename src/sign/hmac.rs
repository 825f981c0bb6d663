//! A generic HMAC request signature, for partner APIs that sign "method, path, timestamp, body".
//!
//! The `string_to_sign` is a template ([`crate::template`], the project's one template engine)
//! over these variables, each with one value per request:
//!
//! | variable | value |
//! | --- | --- |
//! | `{{method}}` | the request method |
//! | `{{path}}` | the upstream path as sent, without the query |
//! | `{{query}}` | the raw query as sent, without `?` (empty when none) |
//! | `{{host}}` | the `Host` header as sent |
//! | `{{body}}` | the body's bytes |
//! | `{{body_sha256}}` | lowercase hex SHA-256 of the body |
//! | `{{timestamp}}` | Unix seconds |
//! | `{{timestamp_ms}}` | Unix milliseconds |
//! | `{{date}}` | the same instant as an RFC 7231 date (`Sun, 06 Nov 1994 08:49:37 GMT`) |
//! | `{{nonce}}` | 128 random bits, lowercase hex |
//!
//! A literal `\n` (backslash, n) in the template is a newline, so a template written in a TOML
//! literal string or an environment variable reads like one in a basic string.
//!
//! The time and nonce come in a [`Moment`], which the caller keeps: the same values go into other
//! fields (`X-Timestamp: {{timestamp}}`). The result is the HMAC (SHA-1, SHA-256 or SHA-512) of the
//! rendered string, lowercase hex or standard base64 with padding.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use thiserror::Error;

pub use super::Request;
use super::{hex, unhex};
use crate::template::{Piece, Template, TemplateError};

/// A `string_to_sign` variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Method,
    Path,
    Query,
    Host,
    Body,
    BodySha256,
    Timestamp,
    TimestampMs,
    Date,
    Nonce,
}

const FIELD_NAMES: &str =
    "method, path, query, host, body, body_sha256, timestamp, timestamp_ms, date, nonce";

impl Field {
    fn parse(name: &str) -> Result<Field, TemplateError> {
        Ok(match name {
            "method" => Field::Method,
            "path" => Field::Path,
            "query" => Field::Query,
            "host" => Field::Host,
            "body" => Field::Body,
            "body_sha256" => Field::BodySha256,
            "timestamp" => Field::Timestamp,
            "timestamp_ms" => Field::TimestampMs,
            "date" => Field::Date,
            "nonce" => Field::Nonce,
            other => return Err(TemplateError::UnknownOf(other.to_string(), FIELD_NAMES)),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    /// `sha1`, `sha256` or `sha512`.
    pub fn parse(name: &str) -> Option<Algorithm> {
        match name {
            "sha1" => Some(Algorithm::Sha1),
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    fn ring(self) -> ring::hmac::Algorithm {
        match self {
            Algorithm::Sha1 => ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Algorithm::Sha256 => ring::hmac::HMAC_SHA256,
            Algorithm::Sha512 => ring::hmac::HMAC_SHA512,
        }
    }
}

/// How the signature is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Lowercase hex.
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// How the configured secret becomes key bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretEncoding {
    /// Its UTF-8 bytes.
    Utf8,
    Base64,
    Hex,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HmacError {
    #[error("string_to_sign: {0}")]
    Template(#[from] TemplateError),
    #[error("secret is not valid {0} (secret_encoding = \"{0}\")")]
    Secret(&'static str),
}

/// One request's time and nonce, rendered once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moment {
    timestamp: String,
    timestamp_ms: String,
    date: String,
    nonce: String,
}

impl Moment {
    pub fn new(unix_ms: u64, nonce: [u8; 16]) -> Moment {
        let secs = unix_ms / 1000;
        Moment {
            timestamp: secs.to_string(),
            timestamp_ms: unix_ms.to_string(),
            date: httpdate::fmt_http_date(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
            ),
            nonce: hex(&nonce),
        }
    }

    /// Now, with a fresh nonce.
    pub fn fresh() -> Moment {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Moment::new(ms, super::random_bytes::<16>())
    }

    pub fn timestamp(&self) -> &str {
        &self.timestamp
    }

    pub fn timestamp_ms(&self) -> &str {
        &self.timestamp_ms
    }

    pub fn date(&self) -> &str {
        &self.date
    }

    pub fn nonce(&self) -> &str {
        &self.nonce
    }
}

/// A compiled HMAC signature: template, key, algorithm and output encoding.
pub struct Signer {
    template: Template<Field>,
    key: ring::hmac::Key,
    algorithm: Algorithm,
    encoding: Encoding,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("hmac::Signer")
            .field("template", &self.template)
            .field("algorithm", &self.algorithm)
            .field("encoding", &self.encoding)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl Signer {
    pub fn new(
        string_to_sign: &str,
        secret: &str,
        secret_encoding: SecretEncoding,
        algorithm: Algorithm,
        encoding: Encoding,
    ) -> Result<Signer, HmacError> {
        let template = Template::parse_with(&string_to_sign.replace("\\n", "\n"), Field::parse)?;
        let key = match secret_encoding {
            SecretEncoding::Utf8 => secret.as_bytes().to_vec(),
            SecretEncoding::Base64 => STANDARD
                .decode(secret.trim())
                .map_err(|_| HmacError::Secret("base64"))?,
            SecretEncoding::Hex => unhex(secret.trim()).ok_or(HmacError::Secret("hex"))?,
        };
        Ok(Signer {
            template,
            key: ring::hmac::Key::new(algorithm.ring(), &key),
            algorithm,
            encoding,
        })
    }

    /// Whether the template uses `field` (for example, whether the body must be read).
    pub fn uses(&self, field: Field) -> bool {
        self.template.vars().any(|f| *f == field)
    }

    fn each_piece(&self, req: &Request<'_>, m: &Moment, mut f: impl FnMut(&[u8])) {
        let mut body_sha256 = None;
        for piece in self.template.pieces() {
            match piece {
                Piece::Lit(s) => f(s.as_bytes()),
                Piece::Var(field) => match field {
                    Field::Method => f(req.method.as_bytes()),
                    Field::Path => f(req.path.as_bytes()),
                    Field::Query => f(req.query.unwrap_or_default().as_bytes()),
                    Field::Host => f(req.authority.as_bytes()),
                    Field::Body => f(req.body),
                    Field::BodySha256 => {
                        let h: &String = body_sha256.get_or_insert_with(|| {
                            hex(ring::digest::digest(&ring::digest::SHA256, req.body).as_ref())
                        });
                        f(h.as_bytes())
                    }
                    Field::Timestamp => f(m.timestamp.as_bytes()),
                    Field::TimestampMs => f(m.timestamp_ms.as_bytes()),
                    Field::Date => f(m.date.as_bytes()),
                    Field::Nonce => f(m.nonce.as_bytes()),
                },
            }
        }
    }

    /// The rendered string to sign (bytes: the body need not be UTF-8).
    pub fn string_to_sign(&self, req: &Request<'_>, m: &Moment) -> Vec<u8> {
        let mut out = Vec::new();
        self.each_piece(req, m, |b| out.extend_from_slice(b));
        out
    }

    /// The signature, `{{signature}}`. The string to sign is fed to the HMAC piece by piece, never
    /// copied whole.
    pub fn sign(&self, req: &Request<'_>, m: &Moment) -> String {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        self.each_piece(req, m, |b| ctx.update(b));
        let tag = ctx.sign();
        match self.encoding {
            Encoding::Hex => hex(tag.as_ref()),
            Encoding::Base64 => STANDARD.encode(tag.as_ref()),
        }
    }
}

#[cfg(test)]
#[path = "hmac_tests.rs"]
mod tests;
