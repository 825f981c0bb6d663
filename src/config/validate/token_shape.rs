//! `token_request` and `token_response` of an OAuth profile.

use http::HeaderName;

use super::raw::{RawTokenRequest, RawTokenResponse};
use super::*;
use crate::config::token_shape::*;

/// Deepest nesting of a JSON body.
const MAX_BODY_DEPTH: usize = 8;

/// `token_request` of profile `path` (`ty`: its type, deciding which variables have values).
pub(super) fn token_request(
    raw: RawTokenRequest,
    path: &str,
    ty: ProfileType,
    v: &mut V,
) -> Option<TokenRequestShape> {
    let path = format!("{path}.token_request");
    let before = v.errors.len();
    if ty == ProfileType::JwtBearer {
        v.err(
            &path,
            "not available for type \"oauth2_jwt_bearer\" (its request carries a signed assertion)",
        );
        return None;
    }
    let encoding = match raw.encoding.as_deref() {
        None | Some("form") => Encoding::Form,
        Some("json") => Encoding::Json,
        Some(other) => {
            v.err(
                &format!("{path}.encoding"),
                format!("unknown encoding \"{other}\"; expected form or json"),
            );
            Encoding::Form
        }
    };
    let mut headers = Vec::new();
    for (name, value) in raw.headers.unwrap_or_default() {
        let hp = format!("{path}.headers.{name}");
        let Ok(h) = HeaderName::from_bytes(name.as_bytes()) else {
            v.err(&hp, "not a valid header name");
            continue;
        };
        // Those no profile may set, and the body's type, which follows `encoding`.
        if super::fields::forbidden_header(h.as_str()) || h == http::header::CONTENT_TYPE {
            v.err(
                &hp,
                "set by the sidecar itself (content-type follows `encoding`); remove it",
            );
            continue;
        }
        match parse_req_template(&value) {
            Ok(t) => {
                if t.pieces().any(|p| {
                    matches!(p, crate::template::Piece::Lit(l) if l.bytes().any(|b| b.is_ascii_control()))
                }) {
                    v.err(&hp, "contains a control character");
                }
                headers.push((h, t));
            }
            Err(e) => v.err(&hp, e.to_string()),
        }
    }
    let mut body = Vec::new();
    let raw_body = raw.body.unwrap_or_default();
    if raw_body.is_empty() {
        v.err(
            &format!("{path}.body"),
            "required: the members of the token request, e.g. body = { username = \"{{username}}\", password = \"{{password}}\" }",
        );
    }
    for (k, value) in raw_body {
        let bp = format!("{path}.body.{k}");
        if let Some(b) = body_value(value, &bp, encoding, 0, v) {
            body.push((k, b));
        }
    }
    let shape = TokenRequestShape {
        encoding,
        headers,
        body,
    };
    for var in shape.vars() {
        let ok = match var {
            ReqVar::ClientId
            | ReqVar::ClientSecret
            | ReqVar::Tenant
            | ReqVar::GrantType
            | ReqVar::RefreshToken => true,
            ReqVar::Username | ReqVar::Password => ty == ProfileType::Password,
            ReqVar::Code | ReqVar::RedirectUri | ReqVar::CodeVerifier => {
                ty == ProfileType::AuthorizationCode
            }
        };
        if !ok {
            v.err(
                &path,
                format!(
                    "uses {{{{{var}}}}}, which has no value for type \"{}\"",
                    ty.name()
                ),
            );
        }
    }
    if ty == ProfileType::AuthorizationCode && !shape.uses(&ReqVar::Code) {
        v.err(
            &format!("{path}.body"),
            "an authorization-code profile's token request must send the code: add e.g. code = \"{{code}}\" (and redirect_uri = \"{{redirect_uri}}\")",
        );
    }
    (v.errors.len() == before).then_some(shape)
}

fn body_value(
    value: toml::Value,
    path: &str,
    encoding: Encoding,
    depth: usize,
    v: &mut V,
) -> Option<BodyValue> {
    let nested = |v: &mut V| {
        v.err(
            path,
            "a form body takes strings, numbers and booleans only; use encoding = \"json\" for objects and arrays",
        );
    };
    if depth > MAX_BODY_DEPTH {
        v.err(path, format!("nested deeper than {MAX_BODY_DEPTH} levels"));
        return None;
    }
    Some(match value {
        toml::Value::String(s) => match parse_req_template(&s) {
            Ok(t) => BodyValue::Text(t),
            Err(e) => {
                v.err(path, e.to_string());
                return None;
            }
        },
        toml::Value::Integer(i) => BodyValue::Fixed(i.to_string()),
        toml::Value::Float(f) if f.is_finite() => BodyValue::Fixed(f.to_string()),
        toml::Value::Boolean(b) => BodyValue::Fixed(b.to_string()),
        toml::Value::Table(t) if encoding == Encoding::Json => {
            let mut out = Vec::new();
            for (k, x) in t {
                out.push((
                    k.clone(),
                    body_value(x, &format!("{path}.{k}"), encoding, depth + 1, v)?,
                ));
            }
            BodyValue::Object(out)
        }
        toml::Value::Array(a) if encoding == Encoding::Json => {
            let mut out = Vec::new();
            for (i, x) in a.into_iter().enumerate() {
                out.push(body_value(
                    x,
                    &format!("{path}[{i}]"),
                    encoding,
                    depth + 1,
                    v,
                )?);
            }
            BodyValue::Array(out)
        }
        toml::Value::Table(_) | toml::Value::Array(_) => {
            nested(v);
            return None;
        }
        _ => {
            v.err(
                path,
                "expected a string, number, boolean, table or array (dates and NaN are not token request values)",
            );
            return None;
        }
    })
}

/// Whether `p` is a JSON Pointer (RFC 6901): empty, or `/` followed by segments whose `~` escapes
/// are `~0` or `~1`.
fn is_pointer(p: &str) -> bool {
    p.starts_with('/') && {
        let b = p.as_bytes();
        b.iter()
            .enumerate()
            .all(|(i, c)| *c != b'~' || matches!(b.get(i + 1), Some(b'0' | b'1')))
    }
}

/// `token_response` of profile `path`.
pub(super) fn token_response(
    raw: RawTokenResponse,
    path: &str,
    v: &mut V,
) -> Option<TokenResponseShape> {
    let path = format!("{path}.token_response");
    let before = v.errors.len();
    let pointer = |key: &str, value: Option<String>, default: &str, v: &mut V| {
        let p = value.unwrap_or_else(|| default.to_string());
        if !is_pointer(&p) {
            v.err(
                &format!("{path}.{key}"),
                format!("\"{p}\" is not a JSON Pointer; expected e.g. \"/data/accessToken\" (RFC 6901: '/' before each member, ~0 for '~', ~1 for '/')"),
            );
        }
        p
    };
    let access_token = pointer(
        "access_token",
        raw.access_token,
        DEFAULT_ACCESS_TOKEN_POINTER,
        v,
    );
    let refresh_token = pointer(
        "refresh_token",
        raw.refresh_token,
        DEFAULT_REFRESH_TOKEN_POINTER,
        v,
    );
    let expiry = match (raw.expires_in, raw.expires_at) {
        (Some(_), Some(_)) => {
            v.err(
                &format!("{path}.expires_at"),
                "set together with expires_in; set one",
            );
            Expiry::In(DEFAULT_EXPIRES_IN_POINTER.into())
        }
        (None, Some(at)) => Expiry::At(pointer("expires_at", Some(at), "", v)),
        (e, None) => Expiry::In(pointer("expires_in", e, DEFAULT_EXPIRES_IN_POINTER, v)),
    };
    if let Some(t) = &raw.token_type {
        let ok = !t.is_empty()
            && t.len() <= 64
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~+/!#$%&'*^`|".contains(&b));
        if !ok {
            v.err(
                &format!("{path}.token_type"),
                "expected an authentication scheme name such as \"Token\" or \"Bearer\" (letters, digits and -._~+/ only, no spaces)",
            );
        }
    }
    (v.errors.len() == before).then_some(TokenResponseShape {
        access_token,
        refresh_token,
        expiry,
        token_type: raw.token_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers() {
        for good in ["/a", "/data/accessToken", "/a~1b", "/a~0", "/"] {
            assert!(is_pointer(good), "{good}");
        }
        for bad in ["", "a", "data/x", "/a~", "/a~2"] {
            assert!(!is_pointer(bad), "{bad}");
        }
    }
}
