//! Token responses, parsed leniently where identity providers differ and strictly where it matters
//! (RFC 6749 §5.1):
//! - `expires_in` as a number or a numeric string (negative or fractional → clamped later);
//! - `token_type` compared case-insensitively; missing means Bearer; anything else is refused;
//! - `access_token` must be a non-empty string; a 200 carrying an `error` member is an error;
//! - unknown members are kept as `token.<name>` variables (strings, numbers and booleans only).
//!
//! Error messages never contain a value from the response.

use std::time::Duration;

use oauth2::basic::BasicTokenType;
use oauth2::{AccessToken, RefreshToken, Scope, TokenResponse};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Longest access token accepted: larger ones would break upstream header limits.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

#[derive(Debug)]
pub struct IdpTokenResponse {
    pub access_token: AccessToken,
    pub token_type: BasicTokenType,
    pub expires_in: Option<Duration>,
    pub refresh_token: Option<RefreshToken>,
    pub scopes: Option<Vec<Scope>>,
    pub scope_raw: Option<String>,
    pub id_token: Option<crate::secret::IdToken>,
    pub extra: Vec<(String, String)>,
}

pub(crate) fn parse_expires_in(v: &Value) -> Result<Option<Duration>, String> {
    let secs: f64 = match v {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_f64().ok_or("expires_in is not a number")?,
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| "expires_in is a string that is not a number".to_string())?,
        _ => return Err("expires_in is neither a number nor a numeric string".into()),
    };
    if !secs.is_finite() {
        return Err("expires_in is not a finite number".into());
    }
    // Negative or zero: the token is already (nearly) expired; the cache clamps to 1 s.
    Ok(Some(Duration::from_secs_f64(secs.clamp(0.0, 1e10))))
}

impl IdpTokenResponse {
    pub fn from_map(mut m: Map<String, Value>) -> Result<Self, String> {
        if m.contains_key("error") {
            return Err("the response carries an OAuth \"error\" member".into());
        }
        let access_token = match m.shift_remove("access_token") {
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(_) => return Err("access_token is not a non-empty string".into()),
            None => return Err("no access_token in the response".into()),
        };
        if access_token.len() > MAX_TOKEN_BYTES {
            return Err(format!(
                "access_token is {} bytes, over the {MAX_TOKEN_BYTES}-byte limit",
                access_token.len()
            ));
        }
        let token_type = match m.shift_remove("token_type") {
            None | Some(Value::Null) => BasicTokenType::Bearer,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("bearer") => BasicTokenType::Bearer,
            Some(_) => return Err("token_type is not Bearer".into()),
        };
        let expires_in = parse_expires_in(&m.shift_remove("expires_in").unwrap_or(Value::Null))?;
        let refresh_token = match m.shift_remove("refresh_token") {
            Some(Value::String(s)) if !s.is_empty() => Some(RefreshToken::new(s)),
            _ => None,
        };
        let scope_raw = match m.shift_remove("scope") {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let scopes = scope_raw.as_ref().map(|s| {
            s.split_whitespace()
                .map(|x| Scope::new(x.to_string()))
                .collect()
        });
        let id_token = match m.shift_remove("id_token") {
            Some(Value::String(s)) => Some(crate::secret::IdToken::new(s)),
            _ => None,
        };
        // `scope` and `expires_in` are also members a template may want as `{{token.scope}}`.
        if let Some(s) = &scope_raw {
            m.insert("scope".into(), Value::String(s.clone()));
        }
        if let Some(e) = expires_in {
            m.insert("expires_in".into(), Value::from(e.as_secs()));
        }
        let extra = m
            .into_iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k, s)),
                Value::Number(n) => Some((k, n.to_string())),
                Value::Bool(b) => Some((k, b.to_string())),
                _ => None,
            })
            .collect();
        Ok(IdpTokenResponse {
            access_token: AccessToken::new(access_token),
            token_type,
            expires_in,
            refresh_token,
            scopes,
            scope_raw,
            id_token,
            extra,
        })
    }
}

impl<'de> Deserialize<'de> for IdpTokenResponse {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = Map::<String, Value>::deserialize(d)
            .map_err(|_| serde::de::Error::custom("the response is not a JSON object"))?;
        IdpTokenResponse::from_map(m).map_err(serde::de::Error::custom)
    }
}

impl Serialize for IdpTokenResponse {
    /// Only metadata: a serialized response never carries the token.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = Map::new();
        m.insert("token_type".into(), Value::String("Bearer".into()));
        if let Some(e) = self.expires_in {
            m.insert("expires_in".into(), Value::from(e.as_secs()));
        }
        m.serialize(s)
    }
}

impl TokenResponse for IdpTokenResponse {
    type TokenType = BasicTokenType;

    fn access_token(&self) -> &AccessToken {
        &self.access_token
    }
    fn token_type(&self) -> &BasicTokenType {
        &self.token_type
    }
    fn expires_in(&self) -> Option<Duration> {
        self.expires_in
    }
    fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }
    fn scopes(&self) -> Option<&Vec<Scope>> {
        self.scopes.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<IdpTokenResponse, String> {
        IdpTokenResponse::from_map(serde_json::from_str(s).unwrap())
    }

    #[test]
    fn lenient_where_idps_differ() {
        let r = parse(r#"{"access_token":"a","token_type":"BEARER","expires_in":"3600","instance_url":"https://x","n":5,"nested":{"x":1}}"#).unwrap();
        assert_eq!(r.expires_in, Some(Duration::from_secs(3600)));
        assert_eq!(
            r.extra,
            vec![
                ("instance_url".into(), "https://x".into()),
                ("n".into(), "5".into()),
                ("expires_in".into(), "3600".into())
            ]
        );
        let r = parse(r#"{"access_token":"a"}"#).unwrap();
        assert_eq!(r.expires_in, None);
        assert_eq!(r.token_type, BasicTokenType::Bearer);
        assert_eq!(
            parse(r#"{"access_token":"a","expires_in":-5}"#)
                .unwrap()
                .expires_in,
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse(r#"{"access_token":"a","expires_in":1.5}"#)
                .unwrap()
                .expires_in,
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn strict_where_it_matters() {
        for bad in [
            r#"{"token_type":"Bearer"}"#,
            r#"{"access_token":""}"#,
            r#"{"access_token":5}"#,
            r#"{"access_token":"a","token_type":"mac"}"#,
            r#"{"access_token":"a","expires_in":"soon"}"#,
            r#"{"access_token":"a","error":"invalid_grant"}"#,
        ] {
            let e = parse(bad).unwrap_err();
            assert!(!e.contains("\"a\""), "{e}");
        }
        let big = format!(
            r#"{{"access_token":"{}"}}"#,
            "x".repeat(MAX_TOKEN_BYTES + 1)
        );
        assert!(parse(&big).unwrap_err().contains("limit"));
    }
}
