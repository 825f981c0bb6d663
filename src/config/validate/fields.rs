//! `fields` ("Authorization Fields"): where a credential goes, and which variables a profile of
//! its type can fill.

use http::HeaderName;

use super::*;
use crate::template::{Template, Var};

/// Headers a profile may never set: framing, routing and hop-by-hop headers.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Whether `name` (lower case) is a header no profile may set: a field's or a `token_request`'s.
pub(super) fn forbidden_header(name: &str) -> bool {
    FORBIDDEN_HEADERS.contains(&name)
}

/// Whether a profile of this kind can fill the variable at request time.
fn var_available(
    var: &Var,
    kind: &ProfileKind,
    tenancy: bool,
    user_fields: &[String],
) -> Result<(), String> {
    let ok = match var {
        Var::User | Var::Context(_) => true,
        Var::Tenant => {
            if !tenancy {
                return Err(
                    "uses {{tenant}} but the profile has tenancy = false; set tenancy = true"
                        .into(),
                );
            }
            true
        }
        Var::Username | Var::Password | Var::Basic => {
            matches!(kind, ProfileKind::Basic { .. } | ProfileKind::UserBasic)
        }
        Var::ApiKey => matches!(kind, ProfileKind::ApiKey { .. } | ProfileKind::UserApiKey),
        Var::Token(name) | Var::Grant(name)
            if matches!(
                name.as_str(),
                "access_token" | "refresh_token" | "id_token" | "token_type"
            ) =>
        {
            return Err(format!(
                "{{{{{var}}}}} is not available; use {{{{access_token}}}}, {{{{token_type}}}} or {{{{id_token}}}} (refresh tokens are never injected)"
            ));
        }
        Var::AccessToken
        | Var::TokenType
        | Var::IdToken
        | Var::Token(_)
        | Var::Grant(_)
        | Var::ClientId => {
            matches!(kind, ProfileKind::OAuth(_))
        }
        Var::Signature | Var::Timestamp | Var::TimestampMs | Var::Date | Var::Nonce => {
            matches!(kind, ProfileKind::Sign(s) if matches!(s.method, crate::config::SignMethod::Hmac { .. }))
        }
        Var::IdClaim(_) => matches!(
            kind,
            ProfileKind::OAuth(o) if matches!(o.grant, crate::config::Grant::AuthorizationCode(_))
        ),
        Var::UserField(key) => {
            if !user_fields.contains(key) {
                return Err(format!(
                    "uses {{{{user_field.{key}}}}} but the profile has no user field with key \"{key}\""
                ));
            }
            true
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "variable {{{{{var}}}}} is not available for type \"{}\"",
            kind.type_name()
        ))
    }
}

pub(super) fn field(
    rf: RawField,
    fp: &str,
    kind: Option<&ProfileKind>,
    tenancy: bool,
    user_fields: &[String],
    v: &mut V,
) -> Option<Field> {
    let before = v.errors.len();
    let location = match rf.location.as_str() {
        "header" => Some(Location::Header),
        "query" => Some(Location::Query),
        "payload" => Some(Location::Payload),
        "path" => Some(Location::Path),
        other => {
            v.err(
                &format!("{fp}.in"),
                format!("unknown location \"{other}\"; expected header, query, payload or path"),
            );
            None
        }
    };
    let key_path = format!("{fp}.key");
    if rf.key.is_empty() {
        v.err(&key_path, "empty; expected a name");
    } else if rf.key.contains("{{") || rf.key.contains("${") {
        v.err(&key_path, "keys are never templated; expected a fixed name");
    }
    let mut key = rf.key.clone();
    match location {
        Some(Location::Header) => match HeaderName::from_bytes(rf.key.as_bytes()) {
            Ok(h) => {
                let lower = h.as_str().replace('_', "-");
                if forbidden_header(&lower) || lower.starts_with("x-authsidecar-") {
                    v.err(
                        &key_path,
                        format!("header \"{}\" cannot be set by a profile", rf.key),
                    );
                }
                key = h.as_str().to_string();
            }
            Err(_) => v.err(
                &key_path,
                format!("\"{}\" is not a valid header name", rf.key),
            ),
        },
        Some(Location::Payload) => {
            if let Some(ptr) = rf.key.strip_prefix('/') {
                if ptr.split('/').any(|seg| seg.is_empty()) {
                    v.err(
                        &key_path,
                        "JSON Pointer with an empty segment; expected /a/b",
                    );
                }
                if !valid_pointer_escapes(ptr) {
                    v.err(
                        &key_path,
                        "invalid JSON Pointer escape; only ~0 and ~1 are allowed (RFC 6901)",
                    );
                }
            }
        }
        Some(Location::Path)
            if !rf
                .key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                || rf.key == "tenant" =>
        {
            v.err(
                &key_path,
                "a path key names a {placeholder} of the route's upstream URL; expected letters, digits, '-' or '_' (not \"tenant\")",
            );
        }
        _ => {}
    }
    let payload_format = match (rf.payload_format.as_deref(), location) {
        (None, _) | (Some("json"), Some(Location::Payload)) => PayloadFormat::Json,
        (Some("form"), Some(Location::Payload)) => PayloadFormat::Form,
        (Some(_), Some(Location::Payload)) => {
            v.err(&format!("{fp}.payload_format"), "expected json or form");
            PayloadFormat::Json
        }
        (Some(_), _) => {
            v.err(
                &format!("{fp}.payload_format"),
                "only used with in = \"payload\"",
            );
            PayloadFormat::Json
        }
    };
    let value_path = format!("{fp}.value");
    let value = match rf.value {
        None => {
            v.err(
                &value_path,
                "required key missing; expected a template such as \"Bearer {{access_token}}\"",
            );
            None
        }
        Some(src) => match Template::parse(&src) {
            Ok(t) => Some(t),
            Err(e) => {
                v.err(&value_path, e.to_string());
                None
            }
        },
    };
    if value
        .as_ref()
        .is_some_and(|t| t.vars().any(|v| *v == Var::Signature))
        && matches!(location, Some(Location::Payload | Location::Path))
    {
        v.err(
            &value_path,
            "{{signature}} goes in a header or the query (the body and path are signed)",
        );
    }
    if location == Some(Location::Payload)
        && payload_format == PayloadFormat::Form
        && rf.key.starts_with('/')
    {
        v.err(
            &format!("{fp}.key"),
            "a JSON Pointer needs payload_format = \"json\"; a form body takes a plain name",
        );
    }
    if let (Some(t), Some(k)) = (&value, kind) {
        if location == Some(Location::Path) {
            if let Some(rendered) = crate::credential::render_static(t, k) {
                if !crate::inject::path_param_ok(&rendered) {
                    v.err(
                        &value_path,
                        "renders to a path parameter every request would refuse: it must be 1-4096 bytes, hold no '/' or '\\', and not be \".\" or \"..\" (also once percent-decoded, and cut at ';')",
                    );
                }
            }
        }
        for var in t.vars() {
            if let Err(msg) = var_available(var, k, tenancy, user_fields) {
                v.err(&value_path, msg);
            }
        }
        if location == Some(Location::Header) {
            if let Some(rendered) = crate::credential::render_static(t, k) {
                if http::HeaderValue::from_str(&rendered).is_err() {
                    v.err(
                        &value_path,
                        "renders to a value with a control character (CR, LF, NUL, …); not usable in a header",
                    );
                }
            }
        }
    }
    if v.errors.len() > before {
        return None;
    }
    Some(Field {
        location: location?,
        key,
        value: value?,
        payload_format,
    })
}

fn valid_pointer_escapes(ptr: &str) -> bool {
    let b = ptr.as_bytes();
    b.iter()
        .enumerate()
        .all(|(i, &c)| c != b'~' || matches!(b.get(i + 1), Some(b'0') | Some(b'1')))
}
