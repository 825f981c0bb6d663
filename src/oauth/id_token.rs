//! OpenID Connect: the `nonce` of an authorization request and the checks of the `id_token` the
//! code exchange returns (OpenID Connect Core 1.0 §3.1.3.7), before the grant is stored.
//!
//! The signature is checked with the JWS verification of `crate::sign::verify`: against the
//! provider's JWKS (`RS256`, `PS256`, `ES256`, `EdDSA`), or `HS256` with the client secret when
//! the profile has one; `alg: none` never passes. Then `iss` (the profile's issuer, exactly),
//! `aud` (contains the client id; with several audiences `azp` must be the client id), `exp`,
//! `iat` (not in the future past [`SKEW`]) and `nonce` (the one sent with this sign-in).

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::sign::verify::{self, PublicKeys, With};

/// Clock skew allowed on `exp` and `iat`, seconds.
pub const SKEW: u64 = 60;
/// Claims kept with a grant (`{{id_claims.<name>}}`): at most this many, each value at most
/// [`MAX_CLAIM_BYTES`].
pub const MAX_CLAIMS: usize = 64;
pub const MAX_CLAIM_BYTES: usize = 1024;

/// Whether a profile's `scope` values ask for OpenID Connect (`openid` among the `scope` key's
/// space-separated values).
pub fn wants_openid(scope: &[(String, String)]) -> bool {
    scope
        .iter()
        .any(|(k, v)| k == "scope" && v.split(' ').any(|s| s == "openid"))
}

/// A fresh `nonce`: 128 random bits, base64url.
pub fn fresh_nonce() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// What an `id_token` must say.
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    /// The client secret (HS256 tokens are checked with it; without it they are refused).
    pub client_secret: Option<&'a [u8]>,
    pub now: u64,
}

/// The `alg` and `kid` of a compact JWS's header (read before its signature is checked, to choose
/// the keys).
pub fn header_of(token: &str) -> Result<(String, Option<String>), String> {
    let h = token.split('.').next().unwrap_or("");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| "the id_token's header is not base64url".to_string())?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|_| "the id_token's header is not JSON".to_string())?;
    let alg = v
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let kid = v.get("kid").and_then(Value::as_str).map(String::from);
    Ok((alg, kid))
}

/// Checks `token`; `keys` are the provider's (for every alg but HS256). Returns its claims.
pub fn validate(
    token: &str,
    keys: Option<&PublicKeys>,
    want: &Expected<'_>,
) -> Result<Map<String, Value>, String> {
    let (alg, _) = header_of(token)?;
    let with = match alg.as_str() {
        "" | "none" => return Err("the id_token is not signed (alg none)".into()),
        "HS256" => match want.client_secret {
            Some(s) => With::Secret(s),
            None => {
                return Err("the id_token is signed HS256, and this client has no secret".into())
            }
        },
        _ => match keys {
            Some(k) => With::Public(k),
            None => return Err("the provider's keys (jwks_uri) are not known".into()),
        },
    };
    let (_, claims) = verify::verify(token, with).map_err(|e| format!("id_token: {e}"))?;
    let s = |name: &str| claims.get(name).and_then(Value::as_str);
    if s("iss") != Some(want.issuer) {
        return Err(format!(
            "id_token: iss is {:?}, expected {:?}",
            s("iss").map(super::clean),
            want.issuer
        ));
    }
    let auds: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !auds.contains(&want.client_id) {
        return Err("id_token: aud does not contain this client's id".into());
    }
    match s("azp") {
        Some(azp) if azp != want.client_id => {
            return Err("id_token: azp is another client's id".into())
        }
        None if auds.len() > 1 => return Err("id_token: several audiences and no azp".into()),
        _ => {}
    }
    let num = |name: &str| claims.get(name).and_then(Value::as_u64);
    match num("exp") {
        Some(exp) if exp + SKEW > want.now => {}
        Some(_) => return Err("id_token: expired (exp)".into()),
        None => return Err("id_token: no exp".into()),
    }
    match num("iat") {
        Some(iat) if iat <= want.now + SKEW => {}
        Some(_) => return Err("id_token: issued in the future (iat)".into()),
        None => return Err("id_token: no iat".into()),
    }
    if s("nonce") != Some(want.nonce) {
        return Err("id_token: nonce does not match this sign-in's".into());
    }
    Ok(claims)
}

/// The claims kept with the grant as `id_claims.<name>`: strings, numbers and booleans whose name
/// is a template name (letters, digits, `-`, `_`), bounded.
pub fn kept_claims(claims: &Map<String, Value>) -> Vec<(String, String)> {
    claims
        .iter()
        .filter(|(k, _)| {
            !k.is_empty()
                && k.len() <= 64
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .filter_map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            (v.len() <= MAX_CLAIM_BYTES).then(|| (format!("id_claims.{k}"), v))
        })
        .take(MAX_CLAIMS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::jwt::Signer;

    fn token(signer: &Signer, claims: Value) -> String {
        let Value::Object(m) = claims else { panic!() };
        signer.sign(&m).unwrap()
    }

    fn want(now: u64) -> Expected<'static> {
        Expected {
            issuer: "https://idp",
            client_id: "c",
            nonce: "n",
            client_secret: Some(b"secret".as_slice()),
            now,
        }
    }

    #[test]
    fn each_claim_is_checked() {
        let s = Signer::hs256(b"secret");
        let now = 1_000_000;
        let good = serde_json::json!({"iss": "https://idp", "aud": "c", "exp": now + 60, "iat": now, "nonce": "n", "email": "a@b"});
        let claims = validate(&token(&s, good.clone()), None, &want(now)).unwrap();
        assert_eq!(
            kept_claims(&claims)
                .iter()
                .find(|(k, _)| k == "id_claims.email")
                .map(|(_, v)| v.as_str()),
            Some("a@b")
        );
        for (name, value, expect) in [
            ("iss", serde_json::json!("https://evil"), "iss"),
            ("aud", serde_json::json!("other"), "aud"),
            ("aud", serde_json::json!(["c", "other"]), "azp"),
            ("exp", serde_json::json!(now - 120), "expired"),
            ("iat", serde_json::json!(now + 600), "future"),
            ("nonce", serde_json::json!("m"), "nonce"),
        ] {
            let mut c = good.clone();
            c[name] = value;
            let e = validate(&token(&s, c), None, &want(now)).unwrap_err();
            assert!(e.contains(expect), "{name}: {e}");
        }
        // Another secret, and HS256 without a client secret.
        let e = validate(
            &token(&Signer::hs256(b"other"), good.clone()),
            None,
            &want(now),
        )
        .unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
        let no_secret = Expected {
            client_secret: None,
            ..want(now)
        };
        assert!(validate(&token(&s, good), None, &no_secret).is_err());
    }

    #[test]
    fn alg_none_never_passes() {
        let b = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let t = format!(
            "{}.{}.",
            b(r#"{"alg":"none"}"#),
            b(r#"{"iss":"https://idp","aud":"c","exp":9999999999,"iat":1,"nonce":"n"}"#)
        );
        let e = validate(&t, Some(&PublicKeys::default()), &want(2)).unwrap_err();
        assert!(e.contains("alg none"), "{e}");
    }
}
