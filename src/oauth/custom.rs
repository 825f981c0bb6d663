//! Custom token requests (`token_request`) and responses (`token_response`): for identity
//! providers that log in with a JSON body, keep the token at an odd place of their answer, give an
//! expiry time instead of a lifetime, or name another token type.
//!
//! A request carries exactly what the profile wrote: nothing is added (no `grant_type`, no client
//! authentication). Template values are data: they are JSON strings or form-urlencoded values,
//! never syntax. Errors name the key and never hold a value from the request or the response.

use std::time::Duration;

use http::HeaderValue;
use oauth2::basic::BasicTokenType;
use oauth2::{AccessToken, RefreshToken, Scope, TokenResponse};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::response::{IdpTokenResponse, MAX_TOKEN_BYTES};
use crate::config::token_shape::{
    BodyValue, Encoding, Expiry, ReqVar, TokenRequestShape, TokenResponseShape,
};

/// Unix times at or above this are milliseconds (as seconds it is the year 5138; as
/// milliseconds, March 1973).
pub const UNIX_MS_THRESHOLD: f64 = 1e11;

/// The values one token request's templates may use; `None`: this request has none.
#[derive(Default)]
pub struct Values<'a> {
    pub client_id: Option<&'a str>,
    pub client_secret: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub grant_type: Option<&'a str>,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub refresh_token: Option<&'a str>,
    pub code: Option<&'a str>,
    pub redirect_uri: Option<&'a str>,
    pub code_verifier: Option<&'a str>,
}

impl Values<'_> {
    fn get(&self, v: &ReqVar) -> Option<&str> {
        match v {
            ReqVar::ClientId => self.client_id,
            ReqVar::ClientSecret => self.client_secret,
            ReqVar::Tenant => self.tenant,
            ReqVar::GrantType => self.grant_type,
            ReqVar::Username => self.username,
            ReqVar::Password => self.password,
            ReqVar::RefreshToken => self.refresh_token,
            ReqVar::Code => self.code,
            ReqVar::RedirectUri => self.redirect_uri,
            ReqVar::CodeVerifier => self.code_verifier,
        }
        .filter(|s| !s.is_empty() || matches!(v, ReqVar::ClientId | ReqVar::ClientSecret))
    }

    /// Renders one template: `Ok(None)` when it uses a variable that belongs to another kind of
    /// request (the member is left out of this one).
    fn render(
        &self,
        t: &crate::template::Template<ReqVar>,
        key: &str,
    ) -> Result<Option<String>, String> {
        match t.render(|v| self.get(v)) {
            Ok(s) => Ok(Some(s)),
            Err(v) if v.request_bound() => Ok(None),
            Err(v) => Err(format!(
                "token_request.{key}: {{{{{v}}}}} has no value for this request"
            )),
        }
    }
}

/// Builds the request: POST to `url`, the profile's header fields, the body as written.
pub fn build(
    shape: &TokenRequestShape,
    values: &Values<'_>,
    url: &str,
) -> Result<http::Request<Vec<u8>>, String> {
    let mut req = http::Request::post(url).header(http::header::ACCEPT, "application/json");
    let body = match shape.encoding {
        Encoding::Json => {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
            let mut m = Map::new();
            for (k, v) in &shape.body {
                if let Some(x) = json_value(v, values, &format!("body.{k}"))? {
                    m.insert(k.clone(), x);
                }
            }
            serde_json::to_vec(&Value::Object(m)).map_err(|e| e.to_string())?
        }
        Encoding::Form => {
            req = req.header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
            use crate::inject::encode::encode;
            let mut form = String::new();
            for (k, v) in &shape.body {
                let value = match v {
                    BodyValue::Text(t) => values.render(t, &format!("body.{k}"))?,
                    BodyValue::Fixed(s) => Some(s.clone()),
                    // Refused at load.
                    BodyValue::Object(_) | BodyValue::Array(_) => None,
                };
                if let Some(value) = value {
                    if !form.is_empty() {
                        form.push('&');
                    }
                    form.push_str(&format!("{}={}", encode(k), encode(&value)));
                }
            }
            form.into_bytes()
        }
    };
    let mut req = req.body(body).map_err(|e| e.to_string())?;
    for (name, t) in &shape.headers {
        let key = format!("headers.{name}");
        if let Some(s) = values.render(t, &key)? {
            let mut v = HeaderValue::from_str(&s).map_err(|_| {
                format!("token_request.{key}: the value would contain a control character")
            })?;
            v.set_sensitive(true);
            req.headers_mut().insert(name.clone(), v);
        }
    }
    Ok(req)
}

/// One JSON body value; `None`: left out of this request (see [`Values::render`]).
fn json_value(v: &BodyValue, values: &Values<'_>, key: &str) -> Result<Option<Value>, String> {
    Ok(match v {
        BodyValue::Text(t) => values.render(t, key)?.map(Value::String),
        BodyValue::Fixed(s) => Some(serde_json::from_str(s).unwrap_or(Value::String(s.clone()))),
        BodyValue::Object(m) => {
            let mut out = Map::new();
            for (k, x) in m {
                if let Some(x) = json_value(x, values, &format!("{key}.{k}"))? {
                    out.insert(k.clone(), x);
                }
            }
            Some(Value::Object(out))
        }
        BodyValue::Array(a) => {
            let mut out = Vec::new();
            for (i, x) in a.iter().enumerate() {
                if let Some(x) = json_value(x, values, &format!("{key}[{i}]"))? {
                    out.push(x);
                }
            }
            Some(Value::Array(out))
        }
    })
}

/// A token response as the `oauth2` crate hands it over for a profile with `token_response`:
/// the JSON object, read by [`parse`] afterwards. `Debug` and `Serialize` show nothing of it.
pub struct RawAnswer {
    pub map: Map<String, Value>,
    none: AccessToken,
    bearer: BasicTokenType,
}

impl std::fmt::Debug for RawAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawAnswer")
            .field("members", &self.map.len())
            .finish()
    }
}

impl<'de> Deserialize<'de> for RawAnswer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = Map::<String, Value>::deserialize(d)
            .map_err(|_| serde::de::Error::custom("the response is not a JSON object"))?;
        Ok(RawAnswer {
            map,
            none: AccessToken::new(String::new()),
            bearer: BasicTokenType::Bearer,
        })
    }
}

impl Serialize for RawAnswer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Map::new().serialize(s)
    }
}

impl TokenResponse for RawAnswer {
    type TokenType = BasicTokenType;

    fn access_token(&self) -> &AccessToken {
        &self.none
    }
    fn token_type(&self) -> &BasicTokenType {
        &self.bearer
    }
    fn expires_in(&self) -> Option<Duration> {
        None
    }
    fn refresh_token(&self) -> Option<&RefreshToken> {
        None
    }
    fn scopes(&self) -> Option<&Vec<Scope>> {
        None
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Reads a token response by `shape`, `now` being Unix seconds. Members kept with the grant
/// (`{{grant.NAME}}`): the strings, numbers and booleans of the top level and of the object
/// holding the access token (its own members win), except the tokens themselves.
pub fn parse(
    shape: &TokenResponseShape,
    root: &Value,
    now: f64,
) -> Result<IdpTokenResponse, String> {
    let Value::Object(top) = root else {
        return Err("the response is not a JSON object".into());
    };
    if top.get("error").is_some_and(Value::is_string) {
        return Err("the response carries an OAuth \"error\" member".into());
    }
    let p = &shape.access_token;
    let access_token = match root.pointer(p) {
        None => {
            return Err(format!(
                "token_response.access_token: {p} not found in the token response"
            ))
        }
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => {
            return Err(format!(
                "token_response.access_token: {p} is not a non-empty string"
            ))
        }
    };
    if access_token.len() > MAX_TOKEN_BYTES {
        return Err(format!(
            "token_response.access_token: {p} is {} bytes, over the {MAX_TOKEN_BYTES}-byte limit",
            access_token.len()
        ));
    }
    let refresh_token = match root.pointer(&shape.refresh_token) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        None | Some(Value::Null) => None,
        Some(Value::String(_)) => None,
        Some(_) => {
            return Err(format!(
                "token_response.refresh_token: {} is not a string",
                shape.refresh_token
            ))
        }
    };
    let expires_in = match &shape.expiry {
        Expiry::In(p) => match root.pointer(p) {
            None => None,
            Some(v) => super::response::parse_expires_in(v)
                .map_err(|e| format!("token_response.expires_in: {p}: {e}"))?,
        },
        Expiry::At(p) => match root.pointer(p) {
            None | Some(Value::Null) => None,
            Some(v) => {
                let at =
                    expires_at(v).map_err(|e| format!("token_response.expires_at: {p}: {e}"))?;
                Some(Duration::from_secs_f64((at - now).clamp(0.0, 1e10)))
            }
        },
    };
    let token_type = match &shape.token_type {
        Some(t) if t.eq_ignore_ascii_case("bearer") => BasicTokenType::Bearer,
        Some(t) => BasicTokenType::Extension(t.clone()),
        None => match top.get("token_type") {
            None | Some(Value::Null) => BasicTokenType::Bearer,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("bearer") => BasicTokenType::Bearer,
            Some(_) => return Err(
                "token_type is not Bearer; set token_response.token_type to the type the upstream expects"
                    .into(),
            ),
        },
    };
    let scope_raw = top.get("scope").and_then(Value::as_str).map(str::to_string);
    let id_token = top
        .get("id_token")
        .and_then(Value::as_str)
        .map(crate::secret::IdToken::new);
    // The object holding the access token, when it is not the top level.
    let holder = p
        .rfind('/')
        .filter(|i| *i > 0)
        .and_then(|i| root.pointer(&p[..i]))
        .and_then(Value::as_object);
    let secret = |s: &str| s == access_token || refresh_token.as_deref() == Some(s);
    let mut extra: Vec<(String, String)> = Vec::new();
    for m in holder.into_iter().chain(std::iter::once(top)) {
        for (k, v) in m {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            let taken = matches!(k.as_str(), "access_token" | "refresh_token" | "id_token");
            if taken || secret(&s) || extra.iter().any(|(n, _)| n == k) {
                continue;
            }
            extra.push((k.clone(), s));
        }
    }
    let scopes = scope_raw.as_ref().map(|s| {
        s.split_whitespace()
            .map(|x| Scope::new(x.to_string()))
            .collect()
    });
    Ok(IdpTokenResponse {
        access_token: AccessToken::new(access_token),
        token_type,
        expires_in,
        refresh_token: refresh_token.map(RefreshToken::new),
        scopes,
        scope_raw,
        id_token,
        extra,
    })
}

/// An expiry time as Unix seconds: RFC 3339 text (`2026-01-01T00:00:00Z`, with an offset or
/// fractional seconds), or a Unix time in seconds or milliseconds (a number or numeric string;
/// [`UNIX_MS_THRESHOLD`] tells them apart).
pub fn expires_at(v: &Value) -> Result<f64, String> {
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s.trim().bytes().all(|b| b.is_ascii_digit() || b == b'.') => {
            s.trim().parse::<f64>().ok()
        }
        Value::String(s) => {
            return rfc3339(s.trim()).ok_or_else(|| {
                "not an RFC 3339 time (e.g. 2026-01-01T12:00:00Z) nor a Unix time".to_string()
            })
        }
        _ => None,
    };
    match n {
        Some(n) if n.is_finite() && n >= 0.0 => Ok(if n >= UNIX_MS_THRESHOLD {
            n / 1000.0
        } else {
            n
        }),
        _ => Err("neither an RFC 3339 time nor a Unix time".into()),
    }
}

/// Days from 1970-01-01 to a civil date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// RFC 3339 `date-time` → Unix seconds.
pub fn rfc3339(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        if part.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo)
        || d == 0
        || d > days_in[mo as usize - 1]
        || h > 23
        || mi > 59
        || sec > 60
    {
        return None;
    }
    let mut i = 19;
    let mut frac = 0.0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        frac = format!("0.{}", &s[start..i]).parse().ok()?;
    }
    let offset: i64 = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = i64::from(oh * 3600 + om * 60);
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + sec.min(59)) - offset;
    Some(secs as f64 + frac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::token_shape::parse_req_template;
    use serde_json::json;

    fn shape(at: &str, expiry: Expiry, ty: Option<&str>) -> TokenResponseShape {
        TokenResponseShape {
            access_token: at.into(),
            refresh_token: "/data/refreshToken".into(),
            expiry,
            token_type: ty.map(str::to_string),
        }
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(rfc3339("2026-01-01T00:00:00Z"), Some(1_767_225_600.0));
        assert_eq!(rfc3339("2026-01-01T01:00:00+01:00"), Some(1_767_225_600.0));
        assert_eq!(rfc3339("2025-12-31T23:00:00-01:00"), Some(1_767_225_600.0));
        assert_eq!(rfc3339("2026-01-01t00:00:00.250z"), Some(1_767_225_600.25));
        assert_eq!(rfc3339("2024-02-29T00:00:00Z"), Some(1_709_164_800.0));
        for bad in [
            "2026-01-01",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00+0100",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00Zjunk",
            "soon",
        ] {
            assert_eq!(rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn unix_seconds_and_milliseconds_are_told_apart() {
        assert_eq!(expires_at(&json!(1_767_225_600)).unwrap(), 1_767_225_600.0);
        assert_eq!(
            expires_at(&json!(1_767_225_600_000u64)).unwrap(),
            1_767_225_600.0
        );
        assert_eq!(
            expires_at(&json!("1767225600500")).unwrap(),
            1_767_225_600.5
        );
        assert_eq!(
            expires_at(&json!("2026-01-01T00:00:00Z")).unwrap(),
            1_767_225_600.0
        );
        assert!(expires_at(&json!(-5)).is_err());
        assert!(expires_at(&json!(true)).is_err());
    }

    #[test]
    fn a_response_is_read_at_its_pointers() {
        let body = json!({"ok": true, "data": {"accessToken": "AT-1", "refreshToken": "RT-1",
            "expiresAt": "2026-01-01T01:00:00Z", "instanceUrl": "https://x.example.com", "n": 5}});
        let now = 1_767_225_600.0;
        let s = shape(
            "/data/accessToken",
            Expiry::At("/data/expiresAt".into()),
            Some("Token"),
        );
        let r = parse(&s, &body, now).unwrap();
        assert_eq!(r.access_token.secret(), "AT-1");
        assert_eq!(r.refresh_token.unwrap().secret(), "RT-1");
        assert_eq!(r.expires_in, Some(Duration::from_secs(3600)));
        assert_eq!(r.token_type, BasicTokenType::Extension("Token".into()));
        assert_eq!(
            r.extra,
            vec![
                ("expiresAt".to_string(), "2026-01-01T01:00:00Z".to_string()),
                (
                    "instanceUrl".to_string(),
                    "https://x.example.com".to_string()
                ),
                ("n".into(), "5".into()),
                ("ok".into(), "true".into())
            ]
        );
        // Past expiry: zero (the cache clamps to its minimum).
        let r = parse(&s, &body, now + 7200.0).unwrap();
        assert_eq!(r.expires_in, Some(Duration::ZERO));
    }

    #[test]
    fn errors_name_the_key_and_never_a_value() {
        let s = shape("/data/accessToken", Expiry::In("/data/ttl".into()), None);
        let e = parse(&s, &json!({"data": {"token": "SECRET"}}), 0.0).unwrap_err();
        assert_eq!(
            e,
            "token_response.access_token: /data/accessToken not found in the token response"
        );
        for body in [
            json!({"data": {"accessToken": 5}}),
            json!({"data": {"accessToken": "SECRET", "ttl": "soon"}}),
            json!({"data": {"accessToken": "SECRET"}, "token_type": "mac"}),
            json!({"data": {"accessToken": "SECRET", "refreshToken": 7}}),
            json!(["SECRET"]),
        ] {
            let e = parse(&s, &body, 0.0).unwrap_err();
            assert!(!e.contains("SECRET"), "{e}");
        }
    }

    #[test]
    fn requests_hold_values_as_data_and_leave_out_other_kinds_members() {
        let t = |s: &str| BodyValue::Text(parse_req_template(s).unwrap());
        let shape = TokenRequestShape {
            encoding: Encoding::Json,
            headers: vec![(
                http::HeaderName::from_static("x-api-key"),
                parse_req_template("{{client_secret}}").unwrap(),
            )],
            body: vec![
                (
                    "login".into(),
                    BodyValue::Object(vec![
                        ("user".into(), t("{{username}}")),
                        ("pass".into(), t("{{password}}")),
                    ]),
                ),
                ("refreshToken".into(), t("{{refresh_token}}")),
                ("n".into(), BodyValue::Fixed("2".into())),
            ],
        };
        let values = Values {
            client_secret: Some("cs"),
            username: Some("a\"b"),
            password: Some("p&w=1\n"),
            ..Values::default()
        };
        let req = build(&shape, &values, "http://idp/login").unwrap();
        let body: Value = serde_json::from_slice(req.body()).unwrap();
        assert_eq!(
            body,
            json!({"login": {"user": "a\"b", "pass": "p&w=1\n"}, "n": 2})
        );
        assert_eq!(req.headers()["content-type"], "application/json");
        assert!(req.headers()["x-api-key"].is_sensitive());
        let form = TokenRequestShape {
            encoding: Encoding::Form,
            body: vec![
                ("user".into(), t("{{username}}")),
                ("pw".into(), t("{{password}}")),
            ],
            ..shape
        };
        let req = build(&form, &values, "http://idp/login").unwrap();
        assert_eq!(req.body().as_slice(), b"user=a%22b&pw=p%26w%3D1%0A");
        // A header value from a template never carries a line break.
        let bad = TokenRequestShape {
            headers: vec![(
                http::HeaderName::from_static("x-pass"),
                parse_req_template("{{password}}").unwrap(),
            )],
            ..form
        };
        let e = build(&bad, &values, "http://idp/login").unwrap_err();
        assert!(!e.contains("p&w"), "{e}");
    }
}
