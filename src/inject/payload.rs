//! Payload placement: JSON object bodies and `application/x-www-form-urlencoded` bodies.
//!
//! JSON objects are parsed only along the path to the injected key; every other value is kept as
//! raw text, so key order and every number's exact text survive the rewrite, and a 4 KiB body costs
//! a scan rather than a tree. serde_json's recursion limit (128) rejects deeply nested input with an
//! error instead of overflowing the stack. Duplicate member names are refused.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method};
use indexmap::IndexMap;
use serde::de::{MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

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

/// A JSON object whose member values stay raw text: only the objects on the way to an injected key are
/// parsed, everything else (numbers, strings, nested values) is copied byte for byte. Duplicate
/// member names are refused (RFC 8259 §4: their meaning is unpredictable).
struct RawObject(IndexMap<String, Box<RawValue>>);

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject, A::Error> {
                let mut out = IndexMap::new();
                while let Some(k) = map.next_key::<String>()? {
                    let v: Box<RawValue> = map.next_value()?;
                    if out.insert(k, v).is_some() {
                        return Err(serde::de::Error::custom("duplicate member name"));
                    }
                }
                Ok(RawObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn parse_object(text: &[u8]) -> Result<RawObject, String> {
    serde_json::from_slice::<RawObject>(text).map_err(|e| e.to_string())
}

fn raw(v: &impl serde::Serialize) -> Result<Box<RawValue>, ProxyError> {
    serde_json::to_string(v)
        .and_then(RawValue::from_string)
        .map_err(|e| ProxyError::new(ErrorCode::Internal, format!("JSON encoding: {e}")))
}

/// Deepest nesting accepted in a JSON body (serde_json's own limit for trees).
pub const MAX_JSON_DEPTH: usize = 128;

/// Why a JSON body is refused before it is parsed: raw values are skipped without recursion and
/// copied as they are, so their nesting and their `\u` escapes are checked here, in one pass.
#[derive(Debug, PartialEq, Eq)]
enum Unfit {
    TooDeep,
    LoneSurrogate,
}

fn hex4(b: &[u8]) -> Option<u16> {
    let d = b.get(..4)?;
    if !d.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u16::from_str_radix(std::str::from_utf8(d).ok()?, 16).ok()
}

/// Checks that the nesting of `[`/`{` outside strings stays within `max`, and that every surrogate
/// escape inside a string is a high/low pair: serde_json skips a raw value without decoding its
/// escapes, and a lone surrogate copied into the rewritten body would make it invalid JSON.
fn check_raw(body: &[u8], max: usize) -> Result<(), Unfit> {
    let (mut depth, mut in_str, mut i) = (0usize, false, 0usize);
    while i < body.len() {
        let b = body[i];
        if in_str {
            match b {
                b'"' => in_str = false,
                b'\\' if body.get(i + 1) == Some(&b'u') => {
                    match hex4(&body[i + 2..]) {
                        Some(0xD800..=0xDBFF) => {
                            let low = body
                                .get(i + 6..i + 8)
                                .filter(|p| *p == b"\\u")
                                .and_then(|_| hex4(&body[i + 8..]));
                            if !matches!(low, Some(0xDC00..=0xDFFF)) {
                                return Err(Unfit::LoneSurrogate);
                            }
                            i += 12;
                        }
                        Some(0xDC00..=0xDFFF) => return Err(Unfit::LoneSurrogate),
                        _ => i += 2,
                    }
                    continue;
                }
                b'\\' => {
                    i += 2;
                    continue;
                }
                _ => {}
            }
            i += 1;
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(Unfit::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

fn rewrite_json(body: &[u8], values: &[(&PayloadOp, Cow<'_, str>)]) -> Result<Vec<u8>, ProxyError> {
    match check_raw(body, MAX_JSON_DEPTH) {
        Ok(()) => {}
        Err(Unfit::TooDeep) => {
            return Err(not_injectable(format!(
                "the JSON body nests deeper than {MAX_JSON_DEPTH} levels"
            )))
        }
        Err(Unfit::LoneSurrogate) => {
            return Err(not_injectable(
                "the JSON body holds a \\u escape of a lone surrogate, which is not a character",
            ))
        }
    }
    let mut root = if body.iter().all(u8::is_ascii_whitespace) {
        RawObject(IndexMap::new())
    } else {
        parse_object(body)
            .map_err(|e| not_injectable(format!("the body is not a JSON object: {e}")))?
    };
    for (op, value) in values {
        set_pointer(&mut root, &op.pointer, value, &op.op.key)?;
    }
    serde_json::to_vec(&root.0)
        .map_err(|e| ProxyError::new(ErrorCode::Internal, format!("JSON encoding: {e}")))
}

/// Sets `/a/b/c`, creating missing objects on the way.
fn set_pointer(
    obj: &mut RawObject,
    segs: &[String],
    value: &str,
    key: &str,
) -> Result<(), ProxyError> {
    let Some((first, rest)) = segs.split_first() else {
        return Ok(());
    };
    if rest.is_empty() {
        obj.0.insert(first.clone(), raw(&value)?);
        return Ok(());
    }
    let mut child = match obj.0.get(first) {
        Some(v) => parse_object(v.get().as_bytes())
            .map_err(|_| not_injectable(format!("cannot set {key}: /{first} is not an object")))?,
        None => RawObject(IndexMap::new()),
    };
    set_pointer(&mut child, rest, value, key)?;
    obj.0.insert(first.clone(), raw(&child.0)?);
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
