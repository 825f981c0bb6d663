//! Credentials arrive where the profile says, exactly once; bad caller input is refused before
//! anything reaches the upstream.

use std::time::Duration;

use http::Method;
use percent_encoding::percent_decode_str;

use crate::support::*;

const KEY_PROFILES: &str = r#"
[[routes]]
prefix = "/h/"
upstream = "http://{echo}/echo/"
profiles = ["hdr", "basic", "q"]

[profiles.hdr]
type = "api_key"
api_key = "${HDR_KEY}"
[[profiles.hdr.fields]]
in = "header"
key = "X-Api-Key"
value = "{{api_key}}"

[profiles.basic]
type = "basic"
username = "svc"
password = "pa:ss word%+"

[profiles.q]
type = "api_key"
api_key = "k&=+ #%é"
[[profiles.q.fields]]
in = "query"
key = "api_key"
value = "{{api_key}}"
"#;

async fn keys() -> Harness {
    Harness::start_with_env(KEY_PROFILES, &[("HDR_KEY", "hdr-secret-123")]).await
}

#[tokio::test]
async fn api_key_header_replaces_every_client_variant() {
    let h = keys().await;
    let r = get(
        &h.url("/h/x"),
        &[
            ("X-Api-Key", "client1"),
            ("x_api_key", "client2"),
            ("X_Api-Key", "client3"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echoed("x-api-key"), vec!["hdr-secret-123"]);
    assert!(r.echoed("x_api_key").is_empty());
    assert!(r.echoed("x_api-key").is_empty());
}

#[tokio::test]
async fn basic_auth_replaces_the_clients_authorization_in_any_case() {
    let h = keys().await;
    let r = get(
        &h.url("/h/x"),
        &[
            ("X-Authsidecar-Profile", "basic"),
            ("AUTHORIZATION", "Bearer mine"),
            ("Authorization", "Basic other"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    // base64("svc:pa:ss word%+")
    assert_eq!(
        r.echoed("authorization"),
        vec!["Basic c3ZjOnBhOnNzIHdvcmQlKw=="]
    );
}

#[tokio::test]
async fn query_parameter_is_replaced_and_the_rest_kept_byte_for_byte() {
    let h = keys().await;
    let r = get(
        &h.url("/h/x?b=%7e1&api_key=mine&c=a+b&api%5Fkey=mine2&&d"),
        &[("X-Authsidecar-Profile", "q")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["query"],
        "b=%7e1&c=a+b&&d&api_key=k%26%3D%2B%20%23%25%C3%A9"
    );
    // A12 / RFC 6750 §2.3: a credential in the query goes with `Cache-Control: no-store`.
    assert_eq!(r.echoed("cache-control"), vec!["no-store"]);
    // A header-placed credential does not add it.
    let r = get(&h.url("/h/x?a=1"), &[("X-Authsidecar-Profile", "hdr")]).await;
    assert!(r.echoed("cache-control").is_empty());
}

#[tokio::test]
async fn control_headers_are_stripped_and_forwarding_headers_set() {
    let h = keys().await;
    let r = get(
        &h.url("/h/x"),
        &[
            ("X-Authsidecar-Profile", "hdr"),
            ("X-Authsidecar-User", "u1"),
            ("X-Authsidecar-Tenant", "t1"),
            ("X-Authsidecar-Context-Org", "o"),
            ("X-Authsidecar-Anything", "z"),
            ("Connection", "x-hop"),
            ("X-Hop", "1"),
            ("Proxy-Authorization", "Basic cHJveHk6cHc="),
            ("X-Forwarded-For", "10.0.0.1"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    for h in v["headers"].as_array().unwrap() {
        let name = h[0].as_str().unwrap();
        assert!(!name.starts_with("x-authsidecar-"), "{name} leaked");
        assert!(
            !["x-hop", "proxy-authorization", "connection"].contains(&name),
            "{name} leaked"
        );
    }
    // The peer is not in proxy.trusted_proxies: its X-Forwarded-For is replaced by its address.
    assert_eq!(r.echoed("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(r.echoed("host"), vec![h.echo.addr.to_string()]);
}

#[tokio::test]
async fn route_and_profile_errors_reach_nothing_upstream() {
    let h = keys().await;
    let r = get(&h.url("/nope/x"), &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (404, "no_route")
    );
    let r = get(&h.url("/h/x"), &[("X-Authsidecar-Profile", "other")]).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (403, "profile_not_allowed")
    );
    let r = get(&h.url("/h/../admin"), &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (400, "path_invalid")
    );
    let r = get(&h.url("/h/%2e%2E/admin"), &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (400, "path_invalid")
    );
    assert_eq!(h.echo.echo_count(), 0);
}

const PATHS: &str = r#"
[[routes]]
prefix = "/p/"
upstream = "http://{echo}/echo/{tenant}/items/{item}/"
profiles = ["p"]

[profiles.p]
type = "api_key"
api_key = "k"
tenancy = true
[[profiles.p.fields]]
in = "path"
key = "item"
value = "{{context.item}}"
[[profiles.p.fields]]
in = "header"
key = "X-Who"
value = "{{user}}@{{tenant}} {{context.item}}"
"#;

/// A caller's path that an upstream may decode to a dot-segment is refused on both request paths
/// (a bodiless GET takes the HTTP/1 fast path, a POST with a body the general path), so the
/// credential never reaches a path outside the route's base path.
#[tokio::test]
async fn encoded_dot_segments_never_leave_the_base_path() {
    let h = keys().await;
    for path in [
        "/h/..%2fadmin",
        "/h/..%2Fadmin",
        "/h/%2e%2e%2fadmin",
        "/h/%2E%2E/admin",
        "/h/..;/admin",
        "/h/..;jsessionid=1/admin",
        "/h/..\\admin",
        "/h/..%5cadmin",
        "/h/x/..%5C..%5Cadmin",
        "/h/.%2e/admin",
        "/h/%252e%252e%252fadmin",
        "/h/a/..%2f..%2f..%2fadmin",
    ] {
        for (method, body) in [("GET", ""), ("POST", "{}")] {
            let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let answer = raw(h.server.proxy_addr, req.as_bytes(), Duration::from_secs(5)).await;
            assert!(
                answer.starts_with("HTTP/1.1 400") && answer.contains("path_invalid"),
                "{method} {path}: {answer}"
            );
            assert!(!answer.contains("hdr-secret-123"), "{answer}");
        }
    }
    assert_eq!(h.echo.echo_count(), 0);
    // An encoded slash inside a name, and `;` parameters, pass unchanged.
    for path in [
        "/h/projects/group%2Fproject/issues",
        "/h/a;v=1/b",
        "/h/...;/x",
    ] {
        let r = get(&h.url(path), &[]).await;
        assert_eq!(r.status, 200, "{path}");
        let want = path.replacen("/h/", "/echo/", 1);
        assert_eq!(r.json()["path"], want.as_str(), "{path}");
        assert_eq!(r.echoed("x-api-key"), vec!["hdr-secret-123"]);
    }
}

#[tokio::test]
async fn path_parameter_values_stay_in_one_segment() {
    let h = Harness::start(PATHS).await;
    for value in [";jsessionid=x", "?x", "#x", "%00", "...", "é"] {
        let r = get(
            &h.url("/p/rest/of?q=1"),
            &[
                ("X-Authsidecar-Tenant", "Acme"),
                ("X-Authsidecar-User", "u"),
                ("X-Authsidecar-Context-Item", value),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "{value}");
        let v = r.json();
        let path = v["path"].as_str().unwrap();
        let segs: Vec<&str> = path.split('/').collect();
        // "", "echo", tenant, "items", value, "rest", "of"
        assert_eq!(segs.len(), 7, "{value} → {path}");
        assert_eq!(segs[2], "acme");
        assert_eq!(
            percent_decode_str(segs[4]).decode_utf8().unwrap(),
            value,
            "{path}"
        );
        assert!(!path.contains("//"));
        assert_eq!(v["query"], "q=1");
    }
}

#[tokio::test]
async fn bad_path_tenant_and_user_values_are_refused() {
    let h = Harness::start(PATHS).await;
    let ok = [
        ("X-Authsidecar-Tenant", "acme"),
        ("X-Authsidecar-User", "u"),
    ];
    // Empty, a dot-segment, or a value that holds a separator or becomes a dot-segment once the
    // upstream percent-decodes it (once or more) or cuts it at ';'.
    for bad in [
        "",
        ".",
        "..",
        "../admin",
        "a/b",
        "a\\b",
        "%2F",
        "..%2f",
        "%252F",
        "%2e%2e",
        "%252e%252e",
        "..;x",
        "a%5cb",
    ] {
        let mut hdrs = ok.to_vec();
        hdrs.push(("X-Authsidecar-Context-Item", bad));
        let r = get(&h.url("/p/x"), &hdrs).await;
        assert_eq!(
            (r.status.as_u16(), r.error_code().as_str()),
            (400, "path_param_invalid"),
            "{bad:?}"
        );
        assert_eq!(r.json()["error"]["profile"], "p");
    }
    for bad in ["evil.com/", "a@b", "..", "a.b", "-a", "evil.com"] {
        let r = get(
            &h.url("/p/x"),
            &[
                ("X-Authsidecar-Tenant", bad),
                ("X-Authsidecar-User", "u"),
                ("X-Authsidecar-Context-Item", "i"),
            ],
        )
        .await;
        assert_eq!(
            (r.status.as_u16(), r.error_code().as_str()),
            (400, "tenant_invalid"),
            "{bad}"
        );
    }
    let r = get(
        &h.url("/p/x"),
        &[
            ("X-Authsidecar-Tenant", "acme"),
            ("X-Authsidecar-Context-Item", "i"),
        ],
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (400, "user_required")
    );
    // A user value that fails its rule (1-256 bytes of UTF-8) is not a missing one.
    let long_user = "u".repeat(257);
    let r = get(
        &h.url("/p/x"),
        &[
            ("X-Authsidecar-User", long_user.as_str()),
            ("X-Authsidecar-Tenant", "acme"),
            ("X-Authsidecar-Context-Item", "i"),
        ],
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (400, "user_invalid")
    );
    let r = get(
        &h.url("/p/x"),
        &[
            ("X-Authsidecar-User", "u"),
            ("X-Authsidecar-Context-Item", "i"),
        ],
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (400, "tenant_invalid")
    );
    let r = get(&h.url("/p/x"), &ok).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (400, "context_value_invalid")
    );
    assert_eq!(h.echo.echo_count(), 0, "the upstream received nothing");
}

#[tokio::test]
async fn template_values_are_expanded_once() {
    let h = Harness::start(PATHS).await;
    let r = get(
        &h.url("/p/x"),
        &[
            ("X-Authsidecar-Tenant", "acme"),
            ("X-Authsidecar-User", "{{api_key}}"),
            ("X-Authsidecar-Context-Item", "${HOME}%0d%0a"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echoed("x-who"), vec!["{{api_key}}@acme ${HOME}%0d%0a"]);
}

#[tokio::test]
async fn control_characters_in_a_context_header_never_reach_the_upstream() {
    let h = Harness::start(PATHS).await;
    for bad in ["a\rb", "a\0b", "a\r\n b"] {
        let req = format!(
            "GET /p/x HTTP/1.1\r\nHost: x\r\nX-Authsidecar-Tenant: acme\r\nX-Authsidecar-User: u\r\nX-Authsidecar-Context-Item: {bad}\r\n\r\n"
        );
        let out = raw(
            h.server.proxy_addr,
            req.as_bytes(),
            std::time::Duration::from_secs(5),
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 400"), "{bad:?}: {out}");
    }
    assert_eq!(h.echo.echo_count(), 0);
}

const PAYLOAD: &str = r#"
[proxy]
max_body_bytes = 1024

[[routes]]
prefix = "/j/"
upstream = "http://{echo}/echo/"
profiles = ["j", "f"]

[profiles.j]
type = "api_key"
api_key = "jk"
[[profiles.j.fields]]
in = "payload"
key = "/auth/token"
value = "{{api_key}}"

[profiles.f]
type = "api_key"
api_key = "fk"
[[profiles.f.fields]]
in = "payload"
key = "token"
value = "{{api_key}}"
payload_format = "form"
"#;

async fn payload_harness() -> Harness {
    Harness::start(PAYLOAD).await
}

#[tokio::test]
async fn json_payload_gets_a_nested_key_with_order_and_precision_kept() {
    let h = payload_harness().await;
    let body = r#"{"z":1,"n":12345678901234567890.000000000000001,"auth":{"keep":true}}"#;
    let r = send(
        Method::POST,
        &h.url("/j/x"),
        &[("content-type", "application/json")],
        body,
    )
    .await;
    assert_eq!(r.status, 200);
    let expected =
        r#"{"z":1,"n":12345678901234567890.000000000000001,"auth":{"keep":true,"token":"jk"}}"#;
    assert_eq!(r.json()["body"], expected);
    assert_eq!(r.echoed("content-length"), vec![expected.len().to_string()]);
}

#[tokio::test]
async fn form_payload_replaces_the_clients_key() {
    let h = payload_harness().await;
    let r = send(
        Method::POST,
        &h.url("/j/x"),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-authsidecar-profile", "f"),
        ],
        "a=1&token=mine&b=%20",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body"], "a=1&b=%20&token=fk");
}

#[tokio::test]
async fn bodies_that_cannot_carry_the_credential_are_refused() {
    let h = payload_harness().await;
    let json = [("content-type", "application/json")];
    for (method, headers, body, status, code) in [
        (
            Method::POST,
            &json[..],
            "{not json",
            400,
            "body_not_injectable",
        ),
        (Method::POST, &json[..], "[1,2]", 400, "body_not_injectable"),
        (Method::GET, &json[..], "{}", 400, "body_not_injectable"),
        (
            Method::POST,
            &[("content-type", "multipart/form-data; boundary=x")][..],
            "--x--",
            415,
            "unsupported_media_type",
        ),
        (
            Method::POST,
            &[("content-type", "text/plain")][..],
            "hi",
            415,
            "unsupported_media_type",
        ),
    ] {
        let r = send(method, &h.url("/j/x"), headers, body).await;
        assert_eq!(
            (r.status.as_u16(), r.error_code().as_str()),
            (status, code),
            "{body}"
        );
    }
    assert_eq!(h.echo.echo_count(), 0);
}

#[tokio::test]
async fn body_over_the_limit_is_refused_before_it_is_read() {
    let h = payload_harness().await;
    let r = send(
        Method::POST,
        &h.url("/j/x"),
        &[("content-type", "application/json")],
        vec![b' '; 2048],
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (413, "payload_too_large")
    );
    // A declared length over the limit gets 413 at once, although the body never comes.
    let out = raw(
        h.server.proxy_addr,
        b"POST /j/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{",
        std::time::Duration::from_secs(3),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    // Chunked, no length: refused once the limit is crossed.
    let mut chunked = b"POST /j/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"200\r\n");
        chunked.extend_from_slice(&[b' '; 0x200]);
        chunked.extend_from_slice(b"\r\n");
    }
    let out = raw(
        h.server.proxy_addr,
        &chunked,
        std::time::Duration::from_secs(3),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert_eq!(h.echo.echo_count(), 0);
}
