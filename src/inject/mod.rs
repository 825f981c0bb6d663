//! The placement engine: writes a profile's fields into a request (DESIGN.md §3).
//!
//! A [`Plan`] is compiled once per profile when the config is loaded: header names are parsed, values
//! that need nothing from the request are rendered to a final `HeaderValue`, payload keys are split
//! into JSON Pointer segments. Per request, [`Plan`] only renders what depends on the request (the
//! user, tenant and context values) and edits the request in place.
//!
//! This module knows nothing of listeners or upstreams: it takes headers, a query, a body, and the
//! request's [`Inputs`].

pub mod encode;
mod payload;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::config::{Location, PayloadFormat, Profile};
use crate::credential::Credential;
use crate::error::{ErrorCode, ProxyError};
use crate::template::{Template, Var};
use crate::token::Token;

pub use payload::BodyKind;

/// Longest value accepted for a path parameter, in bytes.
pub const MAX_PATH_PARAM_BYTES: usize = 4096;

/// Values a request brings: the caller's control headers.
#[derive(Debug, Default)]
pub struct Inputs {
    pub user: Option<String>,
    /// Already validated as one DNS label and lowercased.
    pub tenant: Option<String>,
    /// `X-Authsidecar-Context-<name>` values, name lowercased.
    pub context: Vec<(String, String)>,
    /// The token obtained for this request (OAuth profiles).
    pub token: Option<Arc<Token>>,
    /// `hmac` profiles: this attempt's time and nonce (`{{timestamp}}`, …), made before placement.
    pub moment: Option<crate::sign::hmac::Moment>,
    /// `hmac` profiles: this attempt's `{{signature}}`, set by the sign phase.
    pub signature: Option<String>,
}

impl Inputs {
    fn get<'a>(&'a self, cred: &'a Credential, var: &Var) -> Option<&'a str> {
        match var {
            Var::User => self.user.as_deref(),
            Var::Tenant => self.tenant.as_deref(),
            Var::Context(name) => self
                .context
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str()),
            Var::AccessToken => self.token.as_ref().map(|t| t.access_token.expose()),
            Var::TokenType => self.token.as_ref().map(|t| t.token_type()),
            Var::IdToken => self
                .token
                .as_ref()
                .and_then(|t| t.id_token.as_ref())
                .map(|s| s.expose()),
            Var::Token(name) | Var::Grant(name) => self.token.as_ref().and_then(|t| t.extra(name)),
            Var::UserField(key) => self.token.as_ref().and_then(|t| t.user_field(key)),
            Var::IdClaim(name) => self.token.as_ref().and_then(|t| t.id_claim(name)),
            // Per-user basic and api_key: what the end user entered, kept with their grant.
            Var::ApiKey | Var::Username | Var::Password | Var::Basic => {
                let name = match var {
                    Var::ApiKey => "api_key",
                    Var::Username => "username",
                    Var::Password => "password",
                    _ => "basic",
                };
                self.token
                    .as_ref()
                    .and_then(|t| t.entered(name))
                    .or_else(|| cred.get(var))
            }
            Var::Signature => self.signature.as_deref(),
            Var::Timestamp => self.moment.as_ref().map(|m| m.timestamp()),
            Var::TimestampMs => self.moment.as_ref().map(|m| m.timestamp_ms()),
            Var::Date => self.moment.as_ref().map(|m| m.date()),
            Var::Nonce => self.moment.as_ref().map(|m| m.nonce()),
            other => cred.get(other),
        }
    }
}

enum Value {
    /// Rendered at load: needs nothing from the request (often a credential).
    Static(String),
    Dynamic(Template),
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Static(_) => f.write_str("Static([redacted])"),
            Value::Dynamic(t) => f.debug_tuple("Dynamic").field(t).finish(),
        }
    }
}

#[derive(Debug)]
struct Op {
    field_index: usize,
    key: String,
    value: Value,
}

#[derive(Debug)]
struct HeaderOp {
    op: Op,
    name: HeaderName,
    /// Prebuilt, marked sensitive, when the value is static.
    static_value: Option<HeaderValue>,
}

#[derive(Debug)]
struct PayloadOp {
    op: Op,
    /// Top-level name → one segment; JSON Pointer → its decoded segments.
    pointer: Vec<String>,
    format: PayloadFormat,
}

/// A profile's fields, compiled for the hot path.
#[derive(Debug)]
pub struct Plan {
    profile: Arc<str>,
    credential: Credential,
    headers: Vec<HeaderOp>,
    query: Vec<Op>,
    payload: Vec<PayloadOp>,
    path: Vec<Op>,
    /// Fields that use `{{signature}}`: placed after the sign phase (header and query only).
    signed_headers: Vec<HeaderOp>,
    signed_query: Vec<Op>,
}

fn pointer_segments(key: &str) -> Vec<String> {
    match key.strip_prefix('/') {
        Some(ptr) => ptr
            .split('/')
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect(),
        None => vec![key.to_string()],
    }
}

impl Plan {
    pub fn compile(profile: &Profile) -> Plan {
        let credential = Credential::from_kind(&profile.kind);
        let mut plan = Plan {
            profile: profile.name.clone(),
            credential,
            headers: Vec::new(),
            query: Vec::new(),
            payload: Vec::new(),
            path: Vec::new(),
            signed_headers: Vec::new(),
            signed_query: Vec::new(),
        };
        for (i, f) in profile.fields.iter().enumerate() {
            let value = match f.value.render(|v| plan.credential.get(v)) {
                Ok(s) => Value::Static(s),
                Err(_) => Value::Dynamic(f.value.clone()),
            };
            let op = Op {
                field_index: i,
                key: f.key.clone(),
                value,
            };
            let after_signing = f.value.vars().any(|v| *v == Var::Signature);
            match f.location {
                Location::Header if after_signing => plan.signed_headers.push(HeaderOp {
                    name: HeaderName::from_bytes(f.key.as_bytes())
                        .unwrap_or(http::header::AUTHORIZATION),
                    op,
                    static_value: None,
                }),
                Location::Query if after_signing => plan.signed_query.push(op),
                Location::Header => {
                    // Validated at load: the name parses and a static value is a valid header value.
                    let name = HeaderName::from_bytes(f.key.as_bytes())
                        .unwrap_or(http::header::AUTHORIZATION);
                    let static_value = match &op.value {
                        Value::Static(s) => HeaderValue::from_str(s).ok().map(|mut v| {
                            v.set_sensitive(true);
                            v
                        }),
                        Value::Dynamic(_) => None,
                    };
                    plan.headers.push(HeaderOp {
                        op,
                        name,
                        static_value,
                    });
                }
                Location::Query => plan.query.push(op),
                Location::Payload => plan.payload.push(PayloadOp {
                    pointer: pointer_segments(&f.key),
                    format: f.payload_format,
                    op,
                }),
                Location::Path => plan.path.push(op),
            }
        }
        plan
    }

    pub fn profile(&self) -> &Arc<str> {
        &self.profile
    }

    /// Whether the request body must be buffered and rewritten.
    pub fn has_payload(&self) -> bool {
        !self.payload.is_empty()
    }

    pub fn has_path(&self) -> bool {
        !self.path.is_empty()
    }

    fn render<'a>(
        &'a self,
        op: &'a Op,
        inputs: &'a Inputs,
    ) -> Result<std::borrow::Cow<'a, str>, ProxyError> {
        match &op.value {
            Value::Static(s) => Ok(std::borrow::Cow::Borrowed(s)),
            Value::Dynamic(t) => t
                .render(|v| inputs.get(&self.credential, v))
                .map(std::borrow::Cow::Owned)
                .map_err(|var| self.missing(var, op)),
        }
    }

    fn missing(&self, var: &Var, op: &Op) -> ProxyError {
        let field = op.field_index;
        let (code, msg) = match var {
            Var::User => (
                ErrorCode::UserRequired,
                format!("X-Authsidecar-User is required (fields[{field}] uses {{{{user}}}})"),
            ),
            Var::Tenant => (
                ErrorCode::TenantInvalid,
                format!("X-Authsidecar-Tenant is required (fields[{field}] uses {{{{tenant}}}})"),
            ),
            Var::Context(n) => (
                ErrorCode::ContextValueInvalid,
                format!("X-Authsidecar-Context-{n} is required (fields[{field}] uses {{{{context.{n}}}}})"),
            ),
            Var::IdToken | Var::Token(_) | Var::Grant(_) => (
                ErrorCode::IdpInvalidResponse,
                format!("fields[{field}] uses {{{{{var}}}}}, which the token response did not contain"),
            ),
            Var::IdClaim(_) => (
                ErrorCode::IdpInvalidResponse,
                format!("fields[{field}] uses {{{{{var}}}}}, which the end user's id_token did not contain"),
            ),
            other => (
                ErrorCode::Internal,
                format!("fields[{field}]: no value for {{{{{other}}}}}"),
            ),
        };
        ProxyError::new(code, msg).with_profile(&self.profile)
    }

    /// Path parameters as `(key, encoded value)`, each encoded as exactly one segment.
    pub fn path_params(&self, inputs: &Inputs) -> Result<Vec<(&str, String)>, ProxyError> {
        let mut out = Vec::with_capacity(self.path.len());
        for op in &self.path {
            let v = self.render(op, inputs)?;
            if !path_param_ok(&v) {
                return Err(ProxyError::new(
                    ErrorCode::PathParamInvalid,
                    format!(
                        "path parameter {{{}}} (fields[{}]) must be 1-{MAX_PATH_PARAM_BYTES} bytes, hold no '/' or '\\' and not be \".\" or \"..\" (also once percent-decoded, and cut at ';')",
                        op.key, op.field_index
                    ),
                )
                .with_profile(&self.profile));
            }
            out.push((op.key.as_str(), encode::encode(&v).to_string()));
        }
        Ok(out)
    }

    /// The new query string (without `?`), or `None` when the plan has no query fields.
    pub fn rewrite_query(
        &self,
        query: Option<&str>,
        inputs: &Inputs,
    ) -> Result<Option<String>, ProxyError> {
        if self.query.is_empty() {
            return Ok(None);
        }
        let mut values = Vec::with_capacity(self.query.len());
        for op in &self.query {
            values.push((op.key.as_str(), self.render(op, inputs)?));
        }
        let set: Vec<(&str, &str)> = values.iter().map(|(k, v)| (*k, v.as_ref())).collect();
        let out = encode::rewrite_pairs(query.unwrap_or("").as_bytes(), &set);
        // The input came from a URI (ASCII) and the appended pairs are percent-encoded.
        Ok(Some(String::from_utf8_lossy(&out).into_owned()))
    }

    /// Sets the header fields: every case and `_`/`-` variant the client sent is removed first, so
    /// exactly one copy goes out, marked sensitive.
    pub fn apply_headers(
        &self,
        headers: &mut HeaderMap,
        inputs: &Inputs,
    ) -> Result<(), ProxyError> {
        self.set_headers(&self.headers, headers, inputs)
    }

    /// Whether some field uses `{{signature}}`.
    pub fn has_signature_fields(&self) -> bool {
        !self.signed_headers.is_empty() || !self.signed_query.is_empty()
    }

    /// Places the fields that use `{{signature}}` (after the sign phase set it): headers, and the
    /// new query string (without `?`) when one of them goes in the query.
    pub fn apply_signature_fields(
        &self,
        headers: &mut HeaderMap,
        query: Option<&str>,
        inputs: &Inputs,
    ) -> Result<Option<String>, ProxyError> {
        self.set_headers(&self.signed_headers, headers, inputs)?;
        if self.signed_query.is_empty() {
            return Ok(None);
        }
        let mut values = Vec::with_capacity(self.signed_query.len());
        for op in &self.signed_query {
            values.push((op.key.as_str(), self.render(op, inputs)?));
        }
        let set: Vec<(&str, &str)> = values.iter().map(|(k, v)| (*k, v.as_ref())).collect();
        let out = encode::rewrite_pairs(query.unwrap_or("").as_bytes(), &set);
        Ok(Some(String::from_utf8_lossy(&out).into_owned()))
    }

    fn set_headers(
        &self,
        ops: &[HeaderOp],
        headers: &mut HeaderMap,
        inputs: &Inputs,
    ) -> Result<(), ProxyError> {
        for h in ops {
            let value = match &h.static_value {
                Some(v) => v.clone(),
                None => {
                    let s = self.render(&h.op, inputs)?;
                    let mut v = header_value(s).map_err(|_| {
                        let from_token = match &h.op.value {
                            Value::Dynamic(t) => t.vars().any(|v| {
                                matches!(v, Var::AccessToken | Var::TokenType | Var::IdToken | Var::Token(_) | Var::IdClaim(_) | Var::Grant(_))
                            }),
                            Value::Static(_) => false,
                        };
                        ProxyError::new(
                            if from_token {
                                ErrorCode::IdpInvalidResponse
                            } else {
                                ErrorCode::ContextValueInvalid
                            },
                            format!(
                                "header {} (fields[{}]) would contain CR, LF, NUL or another control character",
                                h.name, h.op.field_index
                            ),
                        )
                        .with_profile(&self.profile)
                    })?;
                    v.set_sensitive(true);
                    v
                }
            };
            remove_variants(headers, &h.name);
            headers.insert(h.name.clone(), value);
        }
        Ok(())
    }

    /// Rewrites the body for the payload fields (the body is fully buffered by the caller).
    pub fn rewrite_payload(
        &self,
        method: &Method,
        headers: &mut HeaderMap,
        body: Bytes,
        inputs: &Inputs,
    ) -> Result<Bytes, ProxyError> {
        let mut values = Vec::with_capacity(self.payload.len());
        for p in &self.payload {
            values.push((p, self.render(&p.op, inputs)?));
        }
        payload::rewrite(method, headers, body, &values, self.payload[0].format)
            .map_err(|e| e.with_profile(&self.profile))
    }
}

/// Removes every header whose name equals `name` once `_` is read as `-` (names are lowercase).
/// A rendered header value, under `HeaderValue::from_str`'s rule; a rendered `String` becomes
/// the value's buffer without a copy.
fn header_value(
    s: std::borrow::Cow<'_, str>,
) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    match s {
        std::borrow::Cow::Borrowed(b) => HeaderValue::from_str(b),
        std::borrow::Cow::Owned(o) => HeaderValue::from_maybe_shared(Bytes::from(o)),
    }
}

pub fn remove_variants(headers: &mut HeaderMap, name: &HeaderName) {
    headers.remove(name);
    let target = name.as_str().as_bytes();
    let same = |k: &HeaderName| {
        let k = k.as_str().as_bytes();
        k.len() == target.len()
            && k.iter().zip(target).all(|(&a, &b)| {
                let a = if a == b'_' { b'-' } else { a };
                let b = if b == b'_' { b'-' } else { b };
                a == b
            })
    };
    if headers.keys().any(same) {
        let names: Vec<HeaderName> = headers.keys().filter(|k| same(k)).cloned().collect();
        for n in names {
            headers.remove(&n);
        }
    }
}

#[cfg(test)]
mod tests;

/// Whether a path parameter's value stays one segment below the base path however the upstream
/// decodes it: 1 to `MAX_PATH_PARAM_BYTES` bytes, and in no form an upstream may decode it to
/// (`route::any_form`) does it hold `/` or `\\`, or is it `.` or `..` once cut at `;`.
pub(crate) fn path_param_ok(v: &str) -> bool {
    use crate::proxy::route::{any_form, is_dot_segment};
    !v.is_empty()
        && v.len() <= MAX_PATH_PARAM_BYTES
        && !any_form(v, |b| {
            b.contains(&b'/') || b.contains(&b'\\') || is_dot_segment(b)
        })
}
