//! Compact JWS verification (RFC 7515) for the mock provider's token endpoint: the client
//! assertions of `private_key_jwt` / `client_secret_jwt` and the assertions of the JWT bearer grant.
//!
//! [`PublicKeys`] are read from a JWKS (`{"keys": [...]}`), a public key PEM
//! (`BEGIN PUBLIC KEY`) or a private key PEM (its public part). [`verify`] checks the signature
//! only (`RS256`, `PS256`, `ES256`, `EdDSA` with public keys; `HS256` with a shared secret, never
//! with a public key) and returns the header and the claims; the caller checks the claims.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{self as sig, UnparsedPublicKey};
use serde_json::{Map, Value};

use super::key::PublicJwk;
use super::PrivateKey;

/// One public key with its `kid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub kid: Option<String>,
    pub jwk: PublicJwk,
}

/// The public keys a party signs with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublicKeys(pub Vec<PublicKey>);

fn b64(v: &Value, name: &str) -> Result<Vec<u8>, String> {
    let s = v
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("a key has no \"{name}\""))?;
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| format!("a key's \"{name}\" is not base64url"))
}

impl PublicKeys {
    /// A JWKS file's text, a public key PEM or a private key PEM.
    pub fn load(bytes: &[u8]) -> Result<PublicKeys, String> {
        let text = String::from_utf8_lossy(bytes);
        if text.trim_start().starts_with('{') {
            let v: Value = serde_json::from_slice(bytes)
                .map_err(|e| format!("not JSON (line {}, column {})", e.line(), e.column()))?;
            return Self::from_jwks(&v);
        }
        if text.contains("PUBLIC KEY-----") {
            return Self::from_public_pem(bytes);
        }
        let key = PrivateKey::from_pem(bytes).map_err(|e| e.to_string())?;
        Ok(PublicKeys(vec![PublicKey {
            kid: None,
            jwk: key.public_jwk(),
        }]))
    }

    /// `{"keys": [{"kty": "RSA" | "EC" | "OKP", ...}, ...]}` (a single JWK is taken too).
    pub fn from_jwks(v: &Value) -> Result<PublicKeys, String> {
        let keys: Vec<&Value> = match v.get("keys") {
            Some(Value::Array(a)) => a.iter().collect(),
            Some(_) => return Err("\"keys\" is not an array".into()),
            None if v.get("kty").is_some() => vec![v],
            None => return Err("no \"keys\" array (a JWKS) and no \"kty\" (a JWK)".into()),
        };
        let mut out = Vec::new();
        for k in keys {
            let kid = k.get("kid").and_then(Value::as_str).map(String::from);
            let jwk = match k.get("kty").and_then(Value::as_str) {
                Some("RSA") => PublicJwk::Rsa {
                    n: b64(k, "n")?,
                    e: b64(k, "e")?,
                },
                Some("EC") if k.get("crv").and_then(Value::as_str) == Some("P-256") => {
                    PublicJwk::Ec {
                        crv: "P-256",
                        x: b64(k, "x")?,
                        y: b64(k, "y")?,
                    }
                }
                Some("OKP") if k.get("crv").and_then(Value::as_str) == Some("Ed25519") => {
                    PublicJwk::Okp {
                        crv: "Ed25519",
                        x: b64(k, "x")?,
                    }
                }
                _ => return Err("a key is not RSA, EC P-256 or OKP Ed25519 (kty, crv)".to_string()),
            };
            out.push(PublicKey { kid, jwk });
        }
        if out.is_empty() {
            return Err("the key set is empty".into());
        }
        Ok(PublicKeys(out))
    }

    /// `BEGIN PUBLIC KEY` (SubjectPublicKeyInfo): RSA, EC P-256 or Ed25519.
    pub fn from_public_pem(pem: &[u8]) -> Result<PublicKeys, String> {
        use pkcs8::der::Decode;
        let mut out = Vec::new();
        for item in rustls_pemfile::read_all(&mut &pem[..]) {
            let Ok(rustls_pemfile::Item::SubjectPublicKeyInfo(der)) = item else {
                continue;
            };
            let spki = pkcs8::SubjectPublicKeyInfoRef::from_der(der.as_ref())
                .map_err(|e| format!("the public key is malformed ({})", e.kind()))?;
            let raw = spki.subject_public_key.raw_bytes();
            let jwk = match spki.algorithm.oid.to_string().as_str() {
                "1.2.840.113549.1.1.1" => {
                    use rsa::pkcs8::DecodePublicKey;
                    use rsa::traits::PublicKeyParts;
                    let k = rsa::PublicKey::from_public_key_der(der.as_ref())
                        .map_err(|_| "the RSA public key is malformed".to_string())?;
                    PublicJwk::Rsa {
                        n: k.n_bytes().to_vec(),
                        e: k.e_bytes().to_vec(),
                    }
                }
                "1.2.840.10045.2.1" if raw.len() == 65 && raw[0] == 4 => PublicJwk::Ec {
                    crv: "P-256",
                    x: raw[1..33].to_vec(),
                    y: raw[33..].to_vec(),
                },
                "1.3.101.112" if raw.len() == 32 => PublicJwk::Okp {
                    crv: "Ed25519",
                    x: raw.to_vec(),
                },
                other => {
                    return Err(format!(
                        "public key of algorithm {other} is not supported; expected RSA, EC P-256 or Ed25519"
                    ))
                }
            };
            out.push(PublicKey { kid: None, jwk });
        }
        if out.is_empty() {
            return Err("no PEM public key found (\"BEGIN PUBLIC KEY\")".into());
        }
        Ok(PublicKeys(out))
    }
}

/// What a JWS is checked with.
#[derive(Clone, Copy)]
pub enum With<'a> {
    /// `RS256`, `PS256`, `ES256` or `EdDSA`; the header's `kid` picks the key when it names one
    /// of the set (a key without a `kid` is tried too).
    Public(&'a PublicKeys),
    /// `HS256` with this secret.
    Secret(&'a [u8]),
}

fn part(s: &str, what: &str) -> Result<Map<String, Value>, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| format!("the {what} is not base64url"))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(format!("the {what} is not a JSON object")),
    }
}

/// A JWS's JSON object: its header or its claims.
pub type Object = Map<String, Value>;

/// Verifies a compact JWS; returns its header and claims.
pub fn verify(token: &str, with: With<'_>) -> Result<(Object, Object), String> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a compact JWS (three dot-separated parts)".into());
    };
    let header = part(h, "header")?;
    let claims = part(p, "payload")?;
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| "the signature is not base64url".to_string())?;
    let input = &token.as_bytes()[..h.len() + 1 + p.len()];
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    let ok = match with {
        With::Secret(secret) => {
            if alg != "HS256" {
                return Err(format!(
                    "alg {alg}; this client signs with HS256 (client_secret_jwt)"
                ));
            }
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
            ring::hmac::verify(&key, input, &signature).is_ok()
        }
        With::Public(keys) => {
            let kid = header.get("kid").and_then(Value::as_str);
            let candidates = keys
                .0
                .iter()
                .filter(|k| kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid);
            let mut any = false;
            let mut ok = false;
            for k in candidates {
                let verified = match (alg, &k.jwk) {
                    ("RS256", PublicJwk::Rsa { n, e }) => sig::RsaPublicKeyComponents { n, e }
                        .verify(&sig::RSA_PKCS1_2048_8192_SHA256, input, &signature)
                        .is_ok(),
                    ("PS256", PublicJwk::Rsa { n, e }) => sig::RsaPublicKeyComponents { n, e }
                        .verify(&sig::RSA_PSS_2048_8192_SHA256, input, &signature)
                        .is_ok(),
                    ("ES256", PublicJwk::Ec { x, y, .. }) => {
                        let mut point = vec![4u8];
                        point.extend_from_slice(x);
                        point.extend_from_slice(y);
                        UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, point)
                            .verify(input, &signature)
                            .is_ok()
                    }
                    ("EdDSA" | "Ed25519", PublicJwk::Okp { x, .. }) => {
                        UnparsedPublicKey::new(&sig::ED25519, x)
                            .verify(input, &signature)
                            .is_ok()
                    }
                    _ => continue,
                };
                any = true;
                if verified {
                    ok = true;
                    break;
                }
            }
            if !any {
                return Err(match kid {
                    Some(kid) => format!("no {alg} key with kid {kid:?} is registered"),
                    None => format!("no registered key verifies alg {alg:?}"),
                });
            }
            ok
        }
    };
    if !ok {
        return Err("the signature does not verify".into());
    }
    Ok((header, claims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::jwt::{client_assertion, Algorithm, Signer};

    const RSA: &str = include_str!("../../tests/data/sign/rsa-pkcs8.pem");
    const RSA_PUBLIC: &str = include_str!("../../tests/data/sign/rsa-public.pem");
    const EC: &str = include_str!("../../tests/data/sign/ec-sec1.pem");
    const EC_PUBLIC: &str = include_str!("../../tests/data/sign/ec-public.pem");
    const ED: &str = include_str!("../../tests/data/sign/ed25519-pkcs8.pem");
    const ED_PUBLIC: &str = include_str!("../../tests/data/sign/ed25519-public.pem");

    #[test]
    fn our_signatures_verify_and_tampering_does_not() {
        for (alg, private, public) in [
            (Algorithm::Rs256, RSA, RSA_PUBLIC),
            (Algorithm::Ps256, RSA, RSA_PUBLIC),
            (Algorithm::Es256, EC, EC_PUBLIC),
            (Algorithm::EdDsa, ED, ED_PUBLIC),
        ] {
            let key = PrivateKey::from_pem(private.as_bytes()).unwrap();
            let signer = Signer::new(alg, &key).unwrap().with_thumbprint_kid();
            let t = client_assertion(&signer, "c", "https://idp/token", 1000, "j").unwrap();
            let from_public = PublicKeys::load(public.as_bytes()).unwrap();
            let from_private = PublicKeys::load(private.as_bytes()).unwrap();
            assert_eq!(from_public, from_private);
            let (_, claims) = verify(&t, With::Public(&from_public)).unwrap();
            assert_eq!(claims["iss"], "c");
            let jwks = serde_json::json!({"keys": [
                serde_json::from_str::<Value>(&key.public_jwk().canonical_json()).unwrap()
            ]});
            let from_jwks = PublicKeys::from_jwks(&jwks).unwrap();
            verify(&t, With::Public(&from_jwks)).unwrap();
            // Another payload under the same signature.
            let mut parts: Vec<&str> = t.split('.').collect();
            let forged = URL_SAFE_NO_PAD.encode(br#"{"iss":"evil"}"#);
            parts[1] = &forged;
            let e = verify(&parts.join("."), With::Public(&from_public)).unwrap_err();
            assert!(e.contains("does not verify"), "{e}");
            // HS256 is never checked with a public key (alg confusion).
            let hs = client_assertion(&Signer::hs256(public.as_bytes()), "c", "a", 1, "j").unwrap();
            assert!(verify(&hs, With::Public(&from_public)).is_err());
        }
        let t = client_assertion(&Signer::hs256(b"secret"), "c", "a", 1, "j").unwrap();
        verify(&t, With::Secret(b"secret")).unwrap();
        assert!(verify(&t, With::Secret(b"other")).is_err());
    }
}
