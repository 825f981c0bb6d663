use super::*;
use crate::config::{Config, Env};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};

/// Compiles the plan of profile `p` from a config snippet.
fn plan(profile_toml: &str) -> Plan {
    let text = format!(
        "[[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:1/{{id}}/\"\nprofiles = [\"p\"]\n[profiles.p]\n{profile_toml}"
    );
    let cfg =
        Config::from_str_with_env(&text, &Env::default()).unwrap_or_else(|e| panic!("config: {e}"));
    Plan::compile(&cfg.profiles["p"])
}

const PATH_FIELD: &str =
    "[[profiles.p.fields]]\nin = \"path\"\nkey = \"id\"\nvalue = \"{{context.id}}\"\n";

fn api_key(field: &str) -> Plan {
    plan(&format!(
        "type = \"api_key\"\napi_key = \"K3y\"\n{PATH_FIELD}{field}"
    ))
}

fn inputs_ctx(pairs: &[(&str, &str)]) -> Inputs {
    Inputs {
        context: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Inputs::default()
    }
}

#[test]
fn header_replaces_every_variant_and_is_sensitive() {
    let p = api_key(
        "[[profiles.p.fields]]\nin = \"header\"\nkey = \"X-Api-Key\"\nvalue = \"{{api_key}}\"\n",
    );
    let mut h = HeaderMap::new();
    h.append("x-api-key", HeaderValue::from_static("evil1"));
    h.append("x-api-key", HeaderValue::from_static("evil2"));
    h.append("x_api_key", HeaderValue::from_static("evil3"));
    h.append("X_API-KEY", HeaderValue::from_static("evil4"));
    h.append("x-api-keys", HeaderValue::from_static("keep"));
    p.apply_headers(&mut h, &Inputs::default()).unwrap();
    let all: Vec<_> = h.get_all("x-api-key").iter().collect();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0], "K3y");
    assert!(all[0].is_sensitive());
    assert!(!h.contains_key("x_api_key"));
    assert_eq!(h["x-api-keys"], "keep");
    assert_eq!(h.len(), 2);
}

#[test]
fn authorization_in_any_case_is_replaced_not_duplicated() {
    let p = plan("type = \"basic\"\nusername = \"u\"\npassword = \"p\"\n[[profiles.p.fields]]\nin = \"path\"\nkey = \"id\"\nvalue = \"x\"\n[[profiles.p.fields]]\nin = \"header\"\nkey = \"Authorization\"\nvalue = \"Basic {{basic}}\"\n");
    let mut h = HeaderMap::new();
    h.append("authorization", HeaderValue::from_static("Bearer client"));
    h.append("Authorization", HeaderValue::from_static("Bearer again"));
    p.apply_headers(&mut h, &Inputs::default()).unwrap();
    assert_eq!(h.get_all("authorization").iter().count(), 1);
    assert_eq!(h["authorization"], "Basic dTpw");
}

#[test]
fn header_value_with_control_characters_is_refused() {
    let p = api_key("[[profiles.p.fields]]\nin = \"header\"\nkey = \"X-Org\"\nvalue = \"org {{context.org}}\"\n");
    for bad in ["a\r\nX-Admin: 1", "a\nb", "a\rb", "a\0b", "a\r"] {
        let mut h = HeaderMap::new();
        let err = p
            .apply_headers(&mut h, &inputs_ctx(&[("org", bad)]))
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::ContextValueInvalid, "{bad:?}");
        assert!(!err.message.contains(bad), "the value is never echoed");
        assert!(h.is_empty());
    }
    // literal percent-escapes and unicode line separators stay as they are
    let mut h = HeaderMap::new();
    p.apply_headers(&mut h, &inputs_ctx(&[("org", "%0d%0a {{api_key}}")]))
        .unwrap();
    assert_eq!(h["x-org"], "org %0d%0a {{api_key}}");
}

#[test]
fn missing_control_values_name_the_header() {
    let p =
        api_key("[[profiles.p.fields]]\nin = \"header\"\nkey = \"X-User\"\nvalue = \"{{user}}\"\n");
    let err = p
        .apply_headers(&mut HeaderMap::new(), &Inputs::default())
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::UserRequired);
    assert!(err.message.contains("X-Authsidecar-User"));
    assert_eq!(err.profile.as_deref(), Some("p"));
}

#[test]
fn query_replaces_the_clients_copies_and_keeps_the_rest_byte_for_byte() {
    let p = api_key(
        "[[profiles.p.fields]]\nin = \"query\"\nkey = \"api_key\"\nvalue = \"{{api_key}}&x=1\"\n",
    );
    let q = p
        .rewrite_query(
            Some("z=%7E&api_key=evil&a=1+2&api_key=evil2&b"),
            &Inputs::default(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(q, "z=%7E&a=1+2&b&api_key=K3y%26x%3D1");
    let q = p.rewrite_query(None, &Inputs::default()).unwrap().unwrap();
    assert_eq!(q, "api_key=K3y%26x%3D1");
}

#[test]
fn path_params_are_one_segment_or_refused() {
    let p = api_key("");
    for (value, encoded) in [
        ("a%3Bb", "a%253Bb"),
        ("?x#y", "%3Fx%23y"),
        (";jsessionid=x", "%3Bjsessionid%3Dx"),
        ("é", "%C3%A9"),
        ("...", "..."),
        ("..a", "..a"),
        ("acct-1", "acct-1"),
    ] {
        let params = p.path_params(&inputs_ctx(&[("id", value)])).unwrap();
        assert_eq!(params, vec![("id", encoded.to_string())], "{value}");
    }
    for bad in [
        "",
        ".",
        "..",
        "a/b",
        "../admin",
        "%2F",
        "a\\b",
        "..%2f",
        "%2e%2e",
        "%252e%252e",
        "..;x",
        ".;",
        "a%5cb",
        &"a".repeat(MAX_PATH_PARAM_BYTES + 1),
    ] {
        let err = p.path_params(&inputs_ctx(&[("id", bad)])).unwrap_err();
        assert_eq!(err.code, ErrorCode::PathParamInvalid, "{bad}");
    }
}

fn json_plan(key: &str) -> Plan {
    api_key(&format!(
        "[[profiles.p.fields]]\nin = \"payload\"\nkey = \"{key}\"\nvalue = \"{{{{api_key}}}}\"\n"
    ))
}

fn rewrite(
    p: &Plan,
    method: Method,
    ct: Option<&str>,
    body: &str,
) -> Result<(String, HeaderMap), ProxyError> {
    let mut h = HeaderMap::new();
    if let Some(ct) = ct {
        h.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
    }
    let out = p.rewrite_payload(
        &method,
        &mut h,
        Bytes::from(body.to_string()),
        &Inputs::default(),
    )?;
    Ok((String::from_utf8(out.to_vec()).unwrap(), h))
}

#[test]
fn json_payload_keeps_order_and_number_precision() {
    let p = json_plan("token");
    let (out, h) = rewrite(
        &p,
        Method::POST,
        Some("application/json; charset=utf-8"),
        r#"{"z":1,"big":123456789012345678901234567890,"f":0.10000000000000000000001,"token":"client","a":[1,2]}"#,
    )
    .unwrap();
    assert_eq!(
        out,
        r#"{"z":1,"big":123456789012345678901234567890,"f":0.10000000000000000000001,"token":"K3y","a":[1,2]}"#
    );
    assert_eq!(h[CONTENT_LENGTH], out.len().to_string());
}

#[test]
fn json_pointer_creates_nested_objects() {
    let p = json_plan("/auth/inner~1x/token");
    let (out, _) = rewrite(&p, Method::POST, Some("application/json"), r#"{"a":1}"#).unwrap();
    assert_eq!(out, r#"{"a":1,"auth":{"inner/x":{"token":"K3y"}}}"#);
    let err = rewrite(&p, Method::POST, Some("application/json"), r#"{"auth":5}"#).unwrap_err();
    assert_eq!(err.code, ErrorCode::BodyNotInjectable);
}

#[test]
fn bad_json_bodies_are_not_injectable() {
    let p = json_plan("token");
    for body in ["{", "[1,2]", "\"s\"", "12", "{\"a\":}", &"[".repeat(10_000)] {
        let err = rewrite(&p, Method::POST, Some("application/json"), body).unwrap_err();
        assert_eq!(err.code, ErrorCode::BodyNotInjectable, "{body:.20}");
    }
    let err = rewrite(&p, Method::GET, Some("application/json"), "{}").unwrap_err();
    assert_eq!(err.code, ErrorCode::BodyNotInjectable);
    let err = rewrite(&p, Method::HEAD, None, "").unwrap_err();
    assert_eq!(err.code, ErrorCode::BodyNotInjectable);
}

#[test]
fn a13_lone_surrogate_escapes_in_raw_values_are_not_injectable() {
    let p = json_plan("token");
    for body in [
        r#"{"a":{"\udAd1":1}}"#,
        r#"{"a":"\uDC00"}"#,
        r#"{"a":["\uD800x"]}"#,
        r#"{"a":"\uD800\u0041"}"#,
        r#"{"a":"\uD800"}"#,
    ] {
        let err = rewrite(&p, Method::POST, Some("application/json"), body).unwrap_err();
        assert_eq!(err.code, ErrorCode::BodyNotInjectable, "{body}");
    }
    // A proper pair, an escaped backslash before `u`, and ordinary escapes pass unchanged.
    let (out, _) = rewrite(
        &p,
        Method::POST,
        Some("application/json"),
        r#"{"a":"\uD83D\uDE00","b":"\\uD800","c":"\u00e9\n"}"#,
    )
    .unwrap();
    assert_eq!(
        out,
        r#"{"a":"\uD83D\uDE00","b":"\\uD800","c":"\u00e9\n","token":"K3y"}"#
    );
    serde_json::from_str::<serde_json::Value>(&out).unwrap();
}

#[test]
fn other_media_types_are_unsupported() {
    let p = json_plan("token");
    for ct in [
        Some("multipart/form-data; boundary=x"),
        Some("text/plain"),
        None,
    ] {
        let err = rewrite(&p, Method::POST, ct, "data").unwrap_err();
        assert_eq!(err.code, ErrorCode::UnsupportedMediaType, "{ct:?}");
    }
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert("content-encoding", HeaderValue::from_static("gzip"));
    let err = p
        .rewrite_payload(
            &Method::POST,
            &mut h,
            Bytes::from_static(b"{}"),
            &Inputs::default(),
        )
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::UnsupportedMediaType);
}

#[test]
fn empty_body_gets_a_new_one_in_payload_format() {
    let (out, h) = rewrite(&json_plan("token"), Method::POST, None, "").unwrap();
    assert_eq!(out, r#"{"token":"K3y"}"#);
    assert_eq!(h[CONTENT_TYPE], "application/json");

    let p = api_key("[[profiles.p.fields]]\nin = \"payload\"\nkey = \"token\"\nvalue = \"{{api_key}}\"\npayload_format = \"form\"\n");
    let (out, h) = rewrite(&p, Method::PUT, None, "").unwrap();
    assert_eq!(out, "token=K3y");
    assert_eq!(h[CONTENT_TYPE], "application/x-www-form-urlencoded");
}

#[test]
fn form_payload_replaces_the_key_and_keeps_the_rest() {
    let p = json_plan("token");
    let (out, _) = rewrite(
        &p,
        Method::POST,
        Some("application/x-www-form-urlencoded"),
        "a=1&token=evil&b=%20x+y&to%6Ben=evil2",
    )
    .unwrap();
    assert_eq!(out, "a=1&b=%20x+y&token=K3y");
    let p = json_plan("/a/b");
    let err = rewrite(
        &p,
        Method::POST,
        Some("application/x-www-form-urlencoded"),
        "a=1",
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::BodyNotInjectable);
}

#[test]
fn duplicate_names_and_deep_nesting_are_refused_without_overflow() {
    let p = json_plan("token");
    let err = rewrite(
        &p,
        Method::POST,
        Some("application/json"),
        r#"{"a":1,"a":2}"#,
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::BodyNotInjectable);
    let deep = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    let err = rewrite(&p, Method::POST, Some("application/json"), &deep).unwrap_err();
    assert_eq!(err.code, ErrorCode::BodyNotInjectable);
    // Nested duplicates on the pointer's path are refused too; elsewhere they are copied as they are.
    let p = json_plan("/auth/token");
    let err = rewrite(
        &p,
        Method::POST,
        Some("application/json"),
        r#"{"auth":{"x":1,"x":2}}"#,
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::BodyNotInjectable);
}

#[test]
fn depth_counting_ignores_brackets_inside_strings() {
    let p = json_plan("token");
    let nested_ok = format!("{{\"a\":{}1{}}}", "[".repeat(120), "]".repeat(120));
    assert!(rewrite(&p, Method::POST, Some("application/json"), &nested_ok).is_ok());
    let in_string = format!("{{\"a\":\"{}\\\"{}\"}}", "[".repeat(500), "{".repeat(500));
    let (out, _) = rewrite(&p, Method::POST, Some("application/json"), &in_string).unwrap();
    assert!(out.ends_with(",\"token\":\"K3y\"}"));
}

#[test]
fn rendered_header_values_follow_the_from_str_rule() {
    use std::borrow::Cow;
    for s in [
        "Bearer abc.def",
        "a\tb",
        "",
        "é",
        "caf\u{e9}",
        "a\nb",
        "a\rb",
        "\u{7f}",
        "\0",
        "~!@#$%^&*()",
    ] {
        let want = HeaderValue::from_str(s).ok();
        let owned = header_value(Cow::Owned(s.to_string())).ok();
        let borrowed = header_value(Cow::Borrowed(s)).ok();
        assert_eq!(owned, want, "{s:?}");
        assert_eq!(borrowed, want, "{s:?}");
    }
}
