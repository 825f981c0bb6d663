//! Private keys from PEM, certificate thumbprints and RFC 7638 JWK thumbprints.
//!
//! [`PrivateKey::from_pem`] takes the first private key block of a PEM file:
//!
//! | PEM label | format | key types |
//! | --- | --- | --- |
//! | `BEGIN RSA PRIVATE KEY` | PKCS#1 | RSA |
//! | `BEGIN PRIVATE KEY` | PKCS#8 (v1 or v2) | RSA, EC P-256, Ed25519 |
//! | `BEGIN EC PRIVATE KEY` | SEC1 (with its public key, as OpenSSL writes it) | EC P-256 |
//!
//! Encrypted keys (`BEGIN ENCRYPTED PRIVATE KEY`) are refused with a message saying so. Errors name
//! the format and what is wrong with it, never key bytes.

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use rustls_pemfile::Item;
use thiserror::Error;

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_ED25519: &str = "1.3.101.112";

/// A key could not be used. The message names the format and the problem, never key material.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("no PEM private key found; expected a block \"BEGIN RSA PRIVATE KEY\" (PKCS#1), \"BEGIN PRIVATE KEY\" (PKCS#8) or \"BEGIN EC PRIVATE KEY\" (SEC1)")]
    NoKey,
    #[error("the private key is encrypted (\"BEGIN ENCRYPTED PRIVATE KEY\"); store it unencrypted with restricted file permissions")]
    Encrypted,
    #[error("malformed PEM ({0})")]
    Pem(&'static str),
    #[error("the {format} key is malformed ({reason})")]
    Malformed {
        format: &'static str,
        reason: String,
    },
    #[error("PKCS#8 key of algorithm {0} is not supported; expected RSA, EC P-256 or Ed25519")]
    Algorithm(String),
    #[error("EC key on curve {0} is not supported; expected P-256 (prime256v1)")]
    Curve(String),
    #[error("the SEC1 EC key has no public key; convert it with `openssl pkcs8 -topk8 -nocrypt` or write it with OpenSSL")]
    NoPublicKey,
    #[error("the RSA key has {0} bits; {1} needs at least 2048")]
    RsaTooSmall(usize, &'static str),
    #[error("the RSA key cannot sign {0} ({1})")]
    RsaUnusable(&'static str, String),
    #[error("no PEM certificate found; expected a block \"BEGIN CERTIFICATE\"")]
    NoCertificate,
}

/// What a [`PrivateKey`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    EcP256,
    Ed25519,
}

impl KeyKind {
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Rsa => "RSA",
            KeyKind::EcP256 => "EC P-256",
            KeyKind::Ed25519 => "Ed25519",
        }
    }
}

/// An RSA private key: `ring`'s key pair (2048 bits and more) for JWS, RustCrypto's for OAuth 1.0a
/// `RSA-SHA1`/`RSA-SHA256`, which still meets 1024-bit keys (Jira's old setup guides make them).
pub(crate) struct RsaKey {
    /// `ring`'s key pair, or why `ring` refused the key (too small, an unusual exponent).
    pub(crate) ring: Result<RsaKeyPair, String>,
    pub(crate) rustcrypto: rsa::PrivateKey,
    pub(crate) bits: usize,
}

pub(crate) enum Inner {
    Rsa(Box<RsaKey>),
    EcP256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A parsed private key, shared cheaply (`Clone` is a reference count).
#[derive(Clone)]
pub struct PrivateKey(pub(crate) Arc<Inner>);

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({}, [redacted])", self.kind().name())
    }
}

fn malformed(format: &'static str, reason: impl fmt::Display) -> KeyError {
    KeyError::Malformed {
        format,
        reason: reason.to_string(),
    }
}

impl PrivateKey {
    /// Parses the first private key in a PEM file (see the module docs for the formats).
    pub fn from_pem(pem: &[u8]) -> Result<PrivateKey, KeyError> {
        let mut rest = pem;
        loop {
            let next = rustls_pemfile::read_one_from_slice(rest).map_err(|e| {
                KeyError::Pem(match e {
                    rustls_pemfile::Error::MissingSectionEnd { .. } => "a section has no END line",
                    rustls_pemfile::Error::IllegalSectionStart { .. } => "a BEGIN line is invalid",
                    rustls_pemfile::Error::Base64Decode(_) => "a block is not valid base64",
                })
            })?;
            let Some((item, after)) = next else {
                let text = String::from_utf8_lossy(pem);
                return Err(if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
                    KeyError::Encrypted
                } else {
                    KeyError::NoKey
                });
            };
            rest = after;
            match item {
                Item::Pkcs1Key(k) => return Self::from_pkcs1_der(k.secret_pkcs1_der()),
                Item::Pkcs8Key(k) => return Self::from_pkcs8_der(k.secret_pkcs8_der()),
                Item::Sec1Key(k) => return Self::from_sec1_der(k.secret_sec1_der()),
                _ => continue,
            }
        }
    }

    /// A PKCS#1 `RSAPrivateKey`.
    pub fn from_pkcs1_der(der: &[u8]) -> Result<PrivateKey, KeyError> {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::traits::PublicKeyParts;
        let rustcrypto = rsa::PrivateKey::from_pkcs1_der(der)
            .map_err(|e| malformed("PKCS#1 RSA", rsa_reason(&e.to_string())))?;
        let bits = rustcrypto.size() * 8;
        Ok(Self::rsa(RsaKey {
            ring: RsaKeyPair::from_der(der).map_err(|e| e.to_string()),
            rustcrypto,
            bits,
        }))
    }

    /// A PKCS#8 `PrivateKeyInfo` (RSA, EC P-256 or Ed25519).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<PrivateKey, KeyError> {
        use pkcs8::der::Decode;
        let info =
            pkcs8::PrivateKeyInfoRef::from_der(der).map_err(|e| malformed("PKCS#8", e.kind()))?;
        let (alg, params) = info
            .algorithm
            .oids()
            .map_err(|e| malformed("PKCS#8", e.kind()))?;
        match alg.to_string().as_str() {
            OID_RSA => {
                use rsa::pkcs8::DecodePrivateKey;
                use rsa::traits::PublicKeyParts;
                let rustcrypto = rsa::PrivateKey::from_pkcs8_der(der)
                    .map_err(|e| malformed("PKCS#8 RSA", rsa_reason(&e.to_string())))?;
                let bits = rustcrypto.size() * 8;
                Ok(Self::rsa(RsaKey {
                    ring: RsaKeyPair::from_pkcs8(der).map_err(|e| e.to_string()),
                    rustcrypto,
                    bits,
                }))
            }
            OID_EC => {
                let curve = params.map(|p| p.to_string()).unwrap_or_default();
                if curve != OID_P256 {
                    return Err(KeyError::Curve(curve));
                }
                let pair = EcdsaKeyPair::from_pkcs8(
                    &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    der,
                    &ring::rand::SystemRandom::new(),
                )
                .map_err(|e| malformed("PKCS#8 EC", e))?;
                Ok(PrivateKey(Arc::new(Inner::EcP256(pair))))
            }
            OID_ED25519 => {
                let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map_err(|e| malformed("PKCS#8 Ed25519", e))?;
                Ok(PrivateKey(Arc::new(Inner::Ed25519(pair))))
            }
            other => Err(KeyError::Algorithm(other.to_string())),
        }
    }

    /// A SEC1 `ECPrivateKey` (RFC 5915), P-256, with its public key.
    pub fn from_sec1_der(der: &[u8]) -> Result<PrivateKey, KeyError> {
        use sec1::der::Decode;
        let key = sec1::EcPrivateKey::from_der(der).map_err(|e| malformed("SEC1 EC", e.kind()))?;
        match &key.parameters {
            Some(sec1::EcParameters::NamedCurve(oid)) if oid.to_string() == OID_P256 => {}
            Some(sec1::EcParameters::NamedCurve(oid)) => {
                return Err(KeyError::Curve(oid.to_string()))
            }
            None => return Err(malformed("SEC1 EC", "no curve named")),
        }
        let public = key.public_key.ok_or(KeyError::NoPublicKey)?;
        let pair = EcdsaKeyPair::from_private_key_and_public_key(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            key.private_key,
            public,
            &ring::rand::SystemRandom::new(),
        )
        .map_err(|e| malformed("SEC1 EC", e))?;
        Ok(PrivateKey(Arc::new(Inner::EcP256(pair))))
    }

    fn rsa(key: RsaKey) -> PrivateKey {
        PrivateKey(Arc::new(Inner::Rsa(Box::new(key))))
    }

    pub fn kind(&self) -> KeyKind {
        match &*self.0 {
            Inner::Rsa(_) => KeyKind::Rsa,
            Inner::EcP256(_) => KeyKind::EcP256,
            Inner::Ed25519(_) => KeyKind::Ed25519,
        }
    }

    /// The modulus size of an RSA key, in bits.
    pub fn rsa_bits(&self) -> Option<usize> {
        match &*self.0 {
            Inner::Rsa(k) => Some(k.bits),
            _ => None,
        }
    }

    /// The public key as a JWK's required members.
    pub fn public_jwk(&self) -> PublicJwk {
        match &*self.0 {
            Inner::Rsa(k) => {
                use rsa::traits::PublicKeyParts;
                PublicJwk::Rsa {
                    n: k.rustcrypto.n_bytes().to_vec(),
                    e: k.rustcrypto.e_bytes().to_vec(),
                }
            }
            Inner::EcP256(p) => {
                // Uncompressed point: 0x04 || x || y.
                let point = p.public_key().as_ref();
                PublicJwk::Ec {
                    crv: "P-256",
                    x: point[1..33].to_vec(),
                    y: point[33..65].to_vec(),
                }
            }
            Inner::Ed25519(p) => PublicJwk::Okp {
                crv: "Ed25519",
                x: p.public_key().as_ref().to_vec(),
            },
        }
    }

    /// The RFC 7638 JWK SHA-256 thumbprint of the public key, base64url: the default `kid`.
    pub fn jwk_thumbprint(&self) -> String {
        self.public_jwk().thumbprint()
    }
}

/// `rsa`'s messages are fixed strings ("key malformed", "invalid coefficient"…); keep them, but
/// nothing longer (no DER positions).
fn rsa_reason(msg: &str) -> String {
    msg.chars().take(80).collect()
}

/// A public key's JWK members that RFC 7638 hashes (byte values, before base64url).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicJwk {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ec {
        crv: &'static str,
        x: Vec<u8>,
        y: Vec<u8>,
    },
    Okp {
        crv: &'static str,
        x: Vec<u8>,
    },
}

impl PublicJwk {
    /// The required members in lexicographic order, no whitespace (RFC 7638 §3.2).
    pub fn canonical_json(&self) -> String {
        let b = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        match self {
            PublicJwk::Rsa { n, e } => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b(e), b(n)),
            PublicJwk::Ec { crv, x, y } => format!(
                r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#,
                b(x),
                b(y)
            ),
            PublicJwk::Okp { crv, x } => format!(r#"{{"crv":"{crv}","kty":"OKP","x":"{}"}}"#, b(x)),
        }
    }

    /// base64url(SHA-256(canonical JSON)).
    pub fn thumbprint(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.canonical_json().as_bytes());
        URL_SAFE_NO_PAD.encode(digest.as_ref())
    }
}

/// The `x5t#S256` of the first certificate in a PEM file: base64url(SHA-256(DER)).
pub fn x5t_s256(cert_pem: &[u8]) -> Result<String, KeyError> {
    let der = rustls_pemfile::certs(&mut &cert_pem[..])
        .next()
        .ok_or(KeyError::NoCertificate)?
        .map_err(|_| KeyError::Pem("the certificate block is unreadable"))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
    Ok(URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const RSA_PKCS1: &str = include_str!("../../tests/data/sign/rsa-pkcs1.pem");
    pub(crate) const RSA_PKCS8: &str = include_str!("../../tests/data/sign/rsa-pkcs8.pem");
    pub(crate) const EC_SEC1: &str = include_str!("../../tests/data/sign/ec-sec1.pem");
    pub(crate) const EC_PKCS8: &str = include_str!("../../tests/data/sign/ec-pkcs8.pem");
    pub(crate) const ED25519: &str = include_str!("../../tests/data/sign/ed25519-pkcs8.pem");
    const EC_P384: &str = include_str!("../../tests/data/sign/ec-p384-sec1.pem");
    const CERT: &str = include_str!("../../tests/data/sign/rsa-cert.pem");

    #[test]
    fn every_supported_format_parses() {
        let rsa1 = PrivateKey::from_pem(RSA_PKCS1.as_bytes()).unwrap();
        let rsa8 = PrivateKey::from_pem(RSA_PKCS8.as_bytes()).unwrap();
        assert_eq!(rsa1.kind(), KeyKind::Rsa);
        assert_eq!(rsa1.rsa_bits(), Some(2048));
        assert_eq!(rsa1.jwk_thumbprint(), rsa8.jwk_thumbprint());
        let ec1 = PrivateKey::from_pem(EC_SEC1.as_bytes()).unwrap();
        let ec8 = PrivateKey::from_pem(EC_PKCS8.as_bytes()).unwrap();
        assert_eq!(ec1.kind(), KeyKind::EcP256);
        assert_eq!(ec1.public_jwk(), ec8.public_jwk());
        let ed = PrivateKey::from_pem(ED25519.as_bytes()).unwrap();
        assert_eq!(ed.kind(), KeyKind::Ed25519);
    }

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 §3.1.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let jwk = PublicJwk::Rsa {
            n: URL_SAFE_NO_PAD.decode(n).unwrap(),
            e: vec![1, 0, 1],
        };
        assert_eq!(
            jwk.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn errors_name_the_problem_never_the_key() {
        assert_eq!(PrivateKey::from_pem(b"hello").unwrap_err(), KeyError::NoKey);
        assert_eq!(
            PrivateKey::from_pem(CERT.as_bytes()).unwrap_err(),
            KeyError::NoKey
        );
        assert!(matches!(
            PrivateKey::from_pem(EC_P384.as_bytes()).unwrap_err(),
            KeyError::Curve(c) if c == "1.3.132.0.34"
        ));
        let enc =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert_eq!(
            PrivateKey::from_pem(enc.as_bytes()).unwrap_err(),
            KeyError::Encrypted
        );
        // A PKCS#1 block whose body is the start of a real key, cut short.
        let body: String = RSA_PKCS1
            .lines()
            .skip(1)
            .take(6)
            .collect::<Vec<_>>()
            .join("\n");
        let cut =
            format!("-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----\n");
        let err = PrivateKey::from_pem(cut.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("the PKCS#1 RSA key is malformed"), "{err}");
        for line in RSA_PKCS1.lines().skip(1).take(6) {
            assert!(!err.contains(&line[..16]), "{err}");
        }
        let key = PrivateKey::from_pem(RSA_PKCS1.as_bytes()).unwrap();
        assert_eq!(format!("{key:?}"), "PrivateKey(RSA, [redacted])");
    }

    #[test]
    fn certificate_thumbprint_is_sha256_of_der() {
        let t = x5t_s256(CERT.as_bytes()).unwrap();
        assert_eq!(t.len(), 43);
        assert_eq!(
            x5t_s256(RSA_PKCS1.as_bytes()).unwrap_err(),
            KeyError::NoCertificate
        );
    }
}
