//! Payload placement: JSON object bodies and `application/x-www-form-urlencoded` bodies.
//!
//! JSON is parsed with `preserve_order` and `arbitrary_precision`, so key order and every number's
//! exact text survive the rewrite. serde_json's recursion limit (128) rejects deeply nested input
//! with an error instead of overflowing the stack.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method};
use serde_json::{Map, Value};

use super::{encode, PayloadOp};
use crate::config::PayloadFormat;
use crate::error::{ErrorCode, ProxyError};

/// What kind of body a request carries, from its `Content-Type`.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
    Multipart,
    Other,
    Missing,
}

impl BodyKind {
    pub fn of(headers: &HeaderMap) -> BodyKind {
        let Some(ct) = headers.get(CONTENT_TYPE) else {
            return BodyKind::Missing;
        };
        let ct = ct.to_str().unwrap_or("");
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence == "application/json"
            || (essence.starts_with("application/") && essence.ends_with("+json"))
        {
            BodyKind::Json
        } else if essence == "application/x-www-form-urlencoded" {
            BodyKind::Form
        } else if essence.starts_with("multipart/") {
            BodyKind::Multipart
        } else {
            BodyKind::Other
        }
    }
}

fn not_injectable(msg: impl Into<String>) -> ProxyError {
    ProxyError::new(ErrorCode::BodyNotInjectable, msg)
}

fn unsupported(msg: impl Into<String>) -> ProxyError {
    ProxyError::new(ErrorCode::UnsupportedMediaType, msg)
}

pub(super) fn rewrite(
    method: &Method,
    headers: &mut HeaderMap,
    body: Bytes,
    values: &[(&PayloadOp, Cow<'_, str>)],
    default_format: PayloadFormat,
) -> Result<Bytes, ProxyError> {
    if method == Method::GET || method == Method::HEAD {
        return Err(not_injectable(format!(
            "a {method} request has no body to carry the credential; the profile places it in the payload"
        )));
    }
    if let Some(enc) = headers.get(CONTENT_ENCODING) {
        if !enc.as_bytes().eq_ignore_ascii_case(b"identity") {
            return Err(unsupported(
                "a request body with Content-Encoding cannot be rewritten; send it uncompressed",
            ));
        }
    }
    let kind = match BodyKind::of(headers) {
        BodyKind::Missing if body.is_empty() => {
            let (kind, ct) = match default_format {
                PayloadFormat::Json => (BodyKind::Json, "application/json"),
                PayloadFormat::Form => (BodyKind::Form, "application/x-www-form-urlencoded"),
            };
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            kind
        }
        BodyKind::Missing => {
            return Err(unsupported(
                "the request body has no Content-Type; expected application/json or application/x-www-form-urlencoded",
            ))
        }
        BodyKind::Multipart => {
            return Err(unsupported(
                "multipart bodies cannot carry an injected credential; expected application/json or application/x-www-form-urlencoded",
            ))
        }
        BodyKind::Other => {
            return Err(unsupported(
                "this Content-Type cannot carry an injected credential; expected application/json or application/x-www-form-urlencoded",
            ))
        }
        k => k,
    };
    let out = match kind {
        BodyKind::Json => rewrite_json(&body, values)?,
        _ => rewrite_form(&body, values)?,
    };
    headers.insert(CONTENT_LENGTH, HeaderValue::from(out.len()));
    Ok(Bytes::from(out))
}

fn rewrite_json(body: &[u8], values: &[(&PayloadOp, Cow<'_, str>)]) -> Result<Vec<u8>, ProxyError> {
    let mut root = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice::<Value>(body)
            .map_err(|e| not_injectable(format!("malformed JSON body: {e}")))?
    };
    let Value::Object(obj) = &mut root else {
        return Err(not_injectable(format!(
            "the JSON body is {}; expected an object",
            kind_name(&root)
        )));
    };
    for (op, value) in values {
        set_pointer(obj, &op.pointer, value).map_err(|at| {
            not_injectable(format!("cannot set {}: {at} is not an object", op.op.key))
        })?;
    }
    serde_json::to_vec(&root)
        .map_err(|e| ProxyError::new(ErrorCode::Internal, format!("JSON encoding: {e}")))
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Sets `/a/b/c`, creating missing objects on the way; returns the path that is not an object.
fn set_pointer(obj: &mut Map<String, Value>, segs: &[String], value: &str) -> Result<(), String> {
    let (last, parents) = segs.split_last().ok_or_else(String::new)?;
    let mut cur = obj;
    let mut at = String::new();
    for s in parents {
        at.push('/');
        at.push_str(s);
        let next = cur
            .entry(s.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        cur = match next {
            Value::Object(m) => m,
            _ => return Err(at),
        };
    }
    cur.insert(last.clone(), Value::String(value.to_string()));
    Ok(())
}

fn rewrite_form(body: &[u8], values: &[(&PayloadOp, Cow<'_, str>)]) -> Result<Vec<u8>, ProxyError> {
    let mut set = Vec::with_capacity(values.len());
    for (op, v) in values {
        if op.pointer.len() != 1 {
            return Err(not_injectable(format!(
                "cannot set {} in a form body: a JSON Pointer needs a JSON body",
                op.op.key
            )));
        }
        set.push((op.pointer[0].as_str(), v.as_ref()));
    }
    Ok(encode::rewrite_pairs(body, &set))
}
