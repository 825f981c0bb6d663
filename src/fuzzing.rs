//! Entry points for the fuzz targets under `fuzz/` and for their seed corpora, which the normal
//! test suite replays (`tests/integration/fuzz_corpus.rs`). Each takes arbitrary bytes, drives one
//! parser or placement that sees untrusted input, and panics when a property breaks:
//!
//! - placements (header, query, JSON and form payload, path): a value is either refused with the
//!   placement's error code, or arrives decoding back to exactly itself, once;
//! - templates: parsing never panics, rendering is one pass (a value containing `{{…}}` stays
//!   literal);
//! - config, token responses, the callback query and `state`, tenant and context values: never a
//!   panic, and what is accepted has the accepted shape;
//! - the HTTP/1 fast path's parsers (request head, upstream answer head, chunked scanner): never a
//!   panic, only bodiless well-framed requests are kept, an answer head goes out as clean lines
//!   without hop-by-hop headers, and the chunked scanner's verdict does not depend on how the bytes
//!   are cut.
//!
//! Not part of the public API.
#![doc(hidden)]

use std::sync::OnceLock;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Method};

use crate::config::{Config, Env};
use crate::error::ErrorCode;
use crate::inject::{encode, Inputs, Plan};

/// The fuzz targets, by name (the folder names under `fuzz/corpus/`).
/// A fuzz entry point.
pub type Target = fn(&[u8]);

pub const TARGETS: &[(&str, Target)] = &[
    ("http1", http1),
    ("template", template),
    ("header", header),
    ("query", query),
    ("json_payload", json_payload),
    ("form_payload", form_payload),
    ("path_param", path_param),
    ("config", config),
    ("token_response", token_response),
    ("callback", callback),
    ("tenant_context", tenant_context),
];

/// One profile per placement, compiled once.
struct Plans {
    header: Plan,
    query: Plan,
    json: Plan,
    form: Plan,
    path: Plan,
}

fn plans() -> &'static Plans {
    static PLANS: OnceLock<Plans> = OnceLock::new();
    PLANS.get_or_init(|| {
        let profile = |name: &str, field: &str| {
            format!(
                "[profiles.{name}]\ntype = \"api_key\"\napi_key = \"K\"\n[[profiles.{name}.fields]]\n{field}\n"
            )
        };
        let text = [
            "[[routes]]\nprefix = \"/p/\"\nupstream = \"http://127.0.0.1:1/{id}/\"\nprofiles = [\"p\"]\n".to_string(),
            "[[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:1/\"\nprofiles = [\"h\", \"q\", \"j\", \"f\"]\n".to_string(),
            profile("h", "in = \"header\"\nkey = \"X-Org\"\nvalue = \"org {{context.v}}\""),
            profile("q", "in = \"query\"\nkey = \"api_key\"\nvalue = \"{{context.v}}\""),
            profile("j", "in = \"payload\"\nkey = \"/auth/token\"\nvalue = \"{{context.v}}\""),
            profile("f", "in = \"payload\"\nkey = \"token\"\nvalue = \"{{context.v}}\"\npayload_format = \"form\""),
            profile("p", "in = \"path\"\nkey = \"id\"\nvalue = \"{{context.v}}\""),
        ]
        .concat();
        let cfg = Config::from_str_with_env(&text, &Env::default())
            .unwrap_or_else(|e| panic!("fuzz config: {e}"));
        let plan = |n: &str| Plan::compile(&cfg.profiles[n]);
        Plans {
            header: plan("h"),
            query: plan("q"),
            json: plan("j"),
            form: plan("f"),
            path: plan("p"),
        }
    })
}

fn inputs(value: &str) -> Inputs {
    Inputs {
        context: vec![("v".to_string(), value.to_string())],
        ..Inputs::default()
    }
}

/// Splits fuzz input in two at the first `0xff` byte (the second part empty without one).
fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Template parsing and one-pass rendering.
pub fn template(data: &[u8]) {
    let (src, value) = split(data);
    let Ok(t) = crate::template::Template::parse(&text(src)) else {
        return;
    };
    let value = text(value);
    if let Ok(out) = t.render(|_| Some(value.as_str())) {
        // Every variable was replaced by `value`, never expanded again: the output is the
        // template's literal parts and copies of `value`.
        let vars = t.vars().count();
        if vars > 0 && value.contains("{{") {
            assert!(out.contains(&value), "a value was expanded again");
        }
        let stripped = out.replace(&value, "");
        assert!(
            stripped.len() <= out.len(),
            "rendering produced text from nowhere"
        );
    }
}

/// Header placement: refused with `context_value_invalid`, or exactly one header whose bytes are
/// the value.
pub fn header(data: &[u8]) {
    let value = text(data);
    let mut h = HeaderMap::new();
    h.append("x-org", HeaderValue::from_static("client copy"));
    h.append("x_org", HeaderValue::from_static("client variant"));
    match plans().header.apply_headers(&mut h, &inputs(&value)) {
        Ok(()) => {
            let all: Vec<_> = h.get_all("x-org").iter().collect();
            assert_eq!(all.len(), 1, "exactly one header");
            assert_eq!(all[0].as_bytes(), format!("org {value}").as_bytes());
            assert!(all[0].is_sensitive());
            assert!(!h.contains_key("x_org"));
        }
        Err(e) => {
            assert_eq!(e.code, ErrorCode::ContextValueInvalid);
            assert!(
                value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f),
                "a clean value was refused: {value:?}"
            );
        }
    }
}

/// Query placement: one `api_key`, decoding to the value; the caller's other pairs unchanged.
pub fn query(data: &[u8]) {
    let (q, v) = split(data);
    // A query reaches us from a URI: visible ASCII only.
    let client: String = text(q)
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '#')
        .collect();
    let value = text(v);
    let out = plans()
        .query
        .rewrite_query(Some(&client), &inputs(&value))
        .expect("query placement never fails")
        .expect("the plan has a query field");
    assert!(
        out.bytes().all(|b| b.is_ascii_graphic()),
        "the query is not URI-safe: {out:?}"
    );
    let pairs = encode::parse_form(out.as_bytes());
    let keys: Vec<_> = pairs.iter().filter(|(k, _)| k == "api_key").collect();
    assert_eq!(keys.len(), 1, "exactly one api_key in {out:?}");
    assert_eq!(keys[0].1, value, "the value decodes back to itself");
    // What the caller sent, less its api_key pairs, is kept in order.
    let kept: Vec<_> = encode::parse_form(client.as_bytes())
        .into_iter()
        .filter(|(k, _)| k != "api_key")
        .collect();
    let others: Vec<_> = pairs.into_iter().filter(|(k, _)| k != "api_key").collect();
    assert_eq!(others, kept);
}

fn body_headers(content_type: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h
}

/// JSON payload placement: refused as `body_not_injectable`, or valid JSON with `/auth/token`
/// equal to the value and every other member kept.
pub fn json_payload(data: &[u8]) {
    let (body, v) = split(data);
    let value = text(v);
    let mut h = body_headers("application/json");
    let r = plans().json.rewrite_payload(
        &Method::POST,
        &mut h,
        Bytes::copy_from_slice(body),
        &inputs(&value),
    );
    match r {
        Ok(out) => {
            let parsed: serde_json::Value =
                serde_json::from_slice(&out).expect("the rewritten body is JSON");
            assert_eq!(
                parsed.pointer("/auth/token").and_then(|t| t.as_str()),
                Some(value.as_str())
            );
            if let Some(cl) = h.get(http::header::CONTENT_LENGTH) {
                assert_eq!(cl.to_str().unwrap_or(""), out.len().to_string());
            }
        }
        Err(e) => assert_eq!(e.code, ErrorCode::BodyNotInjectable, "{}", e.message),
    }
}

/// Form payload placement: one `token` pair decoding to the value, the rest kept.
pub fn form_payload(data: &[u8]) {
    let (body, v) = split(data);
    let value = text(v);
    let mut h = body_headers("application/x-www-form-urlencoded");
    let r = plans().form.rewrite_payload(
        &Method::POST,
        &mut h,
        Bytes::copy_from_slice(body),
        &inputs(&value),
    );
    match r {
        Ok(out) => {
            let pairs = encode::parse_form(&out);
            let tokens: Vec<_> = pairs.iter().filter(|(k, _)| k == "token").collect();
            assert_eq!(tokens.len(), 1, "exactly one token pair");
            assert_eq!(tokens[0].1, value);
            let kept: Vec<_> = encode::parse_form(body)
                .into_iter()
                .filter(|(k, _)| k != "token")
                .collect();
            let others: Vec<_> = pairs.into_iter().filter(|(k, _)| k != "token").collect();
            assert_eq!(others, kept);
        }
        Err(e) => assert!(
            matches!(
                e.code,
                ErrorCode::BodyNotInjectable | ErrorCode::UnsupportedMediaType
            ),
            "{:?}: {}",
            e.code,
            e.message
        ),
    }
}

/// Path placement: one segment (no `/`, no `.`/`..`) decoding back to the value, whose decoded
/// forms hold no separator and no dot-segment, or `path_param_invalid`.
pub fn path_param(data: &[u8]) {
    let value = text(data);
    match plans().path.path_params(&inputs(&value)) {
        Ok(params) => {
            assert_eq!(params.len(), 1);
            let enc = &params[0].1;
            assert!(
                enc.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)),
                "not one encoded segment: {enc:?}"
            );
            assert_ne!(enc.as_str(), ".");
            assert_ne!(enc.as_str(), "..");
            let decoded = percent_encoding::percent_decode_str(enc).decode_utf8_lossy();
            assert_eq!(decoded, value);
            assert!(!value.contains('/') && !value.contains('\\'));
        }
        Err(e) => {
            assert_eq!(e.code, ErrorCode::PathParamInvalid);
            assert!(!crate::inject::path_param_ok(&value));
        }
    }
}

/// Keys whose values are secrets (or may hold one, like a Redis URL with a password), as path
/// suffixes.
const SECRET_KEYS: &[&str] = &[
    "client_secret",
    "password",
    "api_key",
    "secret",
    "admin.token",
    "store.key",
    "store.previous_key",
    "store.url",
    "store.urls",
];

/// Whether an error's key path names a secret-bearing key (list indexes ignored).
fn is_secret_path(path: &str) -> bool {
    let mut p = path;
    while let Some(open) = p.strip_suffix(']').and_then(|q| q.rfind('[')) {
        p = &p[..open];
    }
    SECRET_KEYS
        .iter()
        .any(|k| p == *k || p.strip_suffix(k).is_some_and(|head| head.ends_with('.')))
}

/// Config parsing and validation: any text gives a config or a list of errors, never a panic; an
/// error about a secret-bearing key never quotes the canary, wherever the fuzzer put it. Errors
/// about other keys may quote the offending key or value (`unknown type "…"`, a bad header name):
/// those are not secrets, and naming them is the point of the error.
pub fn config(data: &[u8]) {
    const CANARY: &str = "fuzz-canary-secret-4f1d";
    let src = text(data).replace("SECRET", CANARY);
    if let Err(errors) = Config::from_str_with_env(&src, &Env::default()) {
        for e in &errors.0 {
            if is_secret_path(&e.path) {
                assert!(!e.message.contains(CANARY), "a secret in an error: {e}");
            }
        }
    }
}

/// Token-response parsing: never a panic; an accepted response has a usable access token.
pub fn token_response(data: &[u8]) {
    let Ok(map) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(data) else {
        return;
    };
    if let Ok(r) = crate::oauth::response::IdpTokenResponse::from_map(map) {
        let f = crate::oauth::to_fetched(r);
        let t = f.access_token.expose();
        assert!(!t.is_empty() && t.len() <= crate::oauth::response::MAX_TOKEN_BYTES);
    }
}

/// The callback's query and its `state`: only the exact state of a stored flow finds it, once.
pub fn callback(data: &[u8]) {
    let store = crate::store::Store::memory();
    let flow = crate::oauth::grants::Flow {
        ticket: "t".into(),
        profile: "p".into(),
        user: "u".into(),
        tenant: None,
        chosen_tenant: None,
        entered: Vec::new(),
        verifier: Some("v".repeat(43)),
    };
    let real = crate::oauth::grants::new_flow(&store, std::time::Duration::from_secs(60), &flow)
        .expect("stored");
    let params = encode::parse_form(data);
    if let Some((_, state)) = params.iter().find(|(k, _)| k == "state") {
        let found = crate::oauth::grants::take_flow(&store, state).expect("memory store");
        assert_eq!(
            found.is_some(),
            *state == real,
            "a state other than the real one matched"
        );
    }
    // The real state works once, whatever was tried before.
    assert!(crate::oauth::grants::take_flow(&store, &real)
        .expect("memory store")
        .is_some_and(|f| f.user == "u"));
    assert!(crate::oauth::grants::take_flow(&store, &real)
        .expect("memory store")
        .is_none());
}

/// Tenant and context values: a tenant is one lowercase DNS label; a context value is the
/// header's bytes, unchanged.
pub fn tenant_context(data: &[u8]) {
    if let Ok(t) = crate::proxy::headers::tenant_bytes(data) {
        assert!(!t.is_empty() && t.len() <= 63);
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        assert!(!t.starts_with('-') && !t.ends_with('-'));
    }
    if let Ok(v) = HeaderValue::from_bytes(data) {
        if let Ok(s) = crate::proxy::headers::context("x", &v) {
            assert_eq!(s.as_bytes(), data);
        }
    }
}

/// The HTTP/1 fast path's parsers. The first byte picks one: request head, answer head (to a GET or
/// a HEAD), or the chunked scanner fed whole and in two pieces.
pub fn http1(data: &[u8]) {
    use crate::proxy::h1::{parse_request, parse_response, Chunks, Parse, RespParse};
    use crate::proxy::message::Framing;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => {
            if let Parse::Done(h) = parse_request(rest, 100) {
                assert!(h.len <= rest.len());
                assert_eq!(h.parts.version, http::Version::HTTP_11);
                let hs = &h.parts.headers;
                assert!(!hs.contains_key(http::header::TRANSFER_ENCODING));
                assert!(!hs.contains_key(http::header::EXPECT));
                assert!(!hs.contains_key(http::header::UPGRADE));
                assert!(hs
                    .get_all(http::header::CONTENT_LENGTH)
                    .iter()
                    .all(|v| v == "0"));
                assert!(h.parts.uri.path().starts_with('/'));
            }
        }
        1 | 2 => {
            let method = if mode % 4 == 1 {
                Method::GET
            } else {
                Method::HEAD
            };
            if let Ok(RespParse::Done(h, n)) = parse_response(rest, &method, false) {
                assert!(n <= rest.len());
                assert!((200..=999).contains(&h.status));
                let text = &h.bytes;
                assert!(text.ends_with(b"\r\n"));
                let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
                assert_eq!(lines.pop(), Some(&b""[..]));
                for (i, line) in lines.iter().enumerate() {
                    let line = line
                        .strip_suffix(b"\r")
                        .unwrap_or_else(|| panic!("bare LF in the answer head"));
                    assert!(!line.is_empty(), "an empty line inside the answer head");
                    assert!(!line.contains(&b'\r'), "bare CR in the answer head");
                    if i == 0 {
                        continue;
                    }
                    let name = line.split(|&b| b == b':').next().unwrap_or_default();
                    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
                    // The framing lines the sidecar writes itself: chunked, or close after a
                    // body that runs until close.
                    let own = (name == "transfer-encoding" && h.framing == Framing::Chunked)
                        || (line == b"connection: close" && h.framing == Framing::Close);
                    assert!(
                        own || !crate::proxy::headers::is_hop_by_hop(&name),
                        "{name} passed"
                    );
                }
                if method == Method::HEAD {
                    assert_eq!(h.framing, Framing::Empty);
                }
            }
        }
        _ => {
            let mut whole = Chunks::default();
            let one = whole.feed(rest);
            let cut = usize::from(rest.first().copied().unwrap_or(0)) % (rest.len() + 1);
            let mut split = Chunks::default();
            let two = split.feed(&rest[..cut]).and_then(|a| {
                if split.done() {
                    Ok(a)
                } else {
                    split.feed(&rest[cut..]).map(|b| a + b)
                }
            });
            match (one, two) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a, b);
                    assert_eq!(whole.done(), split.done());
                }
                (Err(()), Err(())) => {}
                (a, b) => panic!("whole {a:?}, in two pieces {b:?}"),
            }
        }
    }
}

/// Runs `f` on `data`, reporting which target failed (for the corpus replay).
pub fn run(name: &str, data: &[u8]) {
    let f = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("no fuzz target {name}"));
    f(data);
}

#[cfg(test)]
mod tests {
    use super::is_secret_path;

    #[test]
    fn secret_paths_are_told_from_other_keys() {
        for p in [
            "profiles.a.client_secret",
            "profiles.a.password",
            "admin.token",
            "store.key",
            "store.urls[1]",
            "connectors.c.password",
        ] {
            assert!(is_secret_path(p), "{p}");
        }
        for p in [
            "profiles.a.fields[0].key",
            "profiles.a.type",
            "token_url",
            "x_password_hint",
        ] {
            assert!(!is_secret_path(p), "{p}");
        }
    }
}
