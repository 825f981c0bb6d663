//! The admin listener: health, readiness and the token-protected profile view.

use http::Method;

use crate::support::*;

const CFG: &str = r#"
[[routes]]
prefix = "/a/"
upstream = "http://{echo}/echo/"
profiles = ["secretive"]

[profiles.secretive]
type = "basic"
identity_provider = "Example"
username = "svc-user"
password = "${PW}"
"#;

const PW: &str = "canary-password-7f3a9";

#[tokio::test]
async fn health_and_readiness_need_no_token() {
    let h = Harness::start_with_env(CFG, &[("PW", PW)]).await;
    let r = get(&h.admin_url("/healthz"), &[]).await;
    assert_eq!(r.status, 200);
    let r = get(&h.admin_url("/readyz"), &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn profiles_need_the_bearer_token() {
    let h = Harness::start_with_env(CFG, &[("PW", PW)]).await;
    let r = get(&h.admin_url("/admin/profiles"), &[]).await;
    assert_eq!(r.status, 401);
    let r = get(
        &h.admin_url("/admin/profiles"),
        &[("Authorization", "Bearer wrong-token-0123456789")],
    )
    .await;
    assert_eq!(r.status, 401);
    let r = get(
        &h.admin_url("/admin/profiles"),
        &[("Authorization", &format!("bearer {ADMIN_TOKEN}x"))],
    )
    .await;
    assert_eq!(r.status, 401);
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = send(
        Method::POST,
        &h.admin_url("/admin/profiles"),
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn profiles_show_no_secret_value() {
    let h = Harness::start_with_env(CFG, &[("PW", PW)]).await;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = get(&h.admin_url("/admin/profiles"), &[("Authorization", &auth)]).await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(!text.contains(PW), "{text}");
    assert!(!text.contains("svc-user"), "{text}");
    let v = r.json();
    let p = &v["profiles"][0];
    assert_eq!(p["name"], "secretive");
    assert_eq!(p["type"], "basic");
    assert_eq!(p["routes"][0], "/a/");
    assert_eq!(
        p["credentials"]["password"],
        format!("[redacted len={}]", PW.len())
    );

    let r = get(
        &h.admin_url("/admin/profiles/secretive"),
        &[("Authorization", &auth)],
    )
    .await;
    assert_eq!(r.json()["identity_provider"], "Example");
    let r = get(
        &h.admin_url("/admin/profiles/nope"),
        &[("Authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn the_admin_api_is_not_on_the_proxy_listener() {
    let h = Harness::start_with_env(CFG, &[("PW", PW)]).await;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = get(&h.url("/admin/profiles"), &[("Authorization", &auth)]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "no_route");
}

#[tokio::test]
async fn metrics_count_requests_and_token_requests_with_bounded_labels() {
    let text = r#"
[[routes]]
prefix = "/m/"
upstream = "http://{echo}/protected/"
profiles = ["cc", "t"]

[profiles.cc]
type = "oauth2_client_credentials"
token_url = "http://{echo}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"

[profiles.t]
type = "oauth2_client_credentials"
tenancy = true
token_url = "http://{echo}/{tenant}/oauth/token"
client_id = "demo-client"
client_secret = "wrong-secret"
"#;
    let h = Harness::start(text).await;
    for _ in 0..3 {
        assert_eq!(get(&h.url("/m/x?q=canary-query"), &[]).await.status, 200);
    }
    let r = get(
        &h.url("/m/x"),
        &[
            ("X-Authsidecar-Profile", "t"),
            ("X-Authsidecar-Tenant", "canary-tenant"),
            ("X-Authsidecar-User", "canary-user"),
        ],
    )
    .await;
    assert_eq!(r.status, 502);
    assert_eq!(get(&h.url("/nowhere"), &[]).await.status, 404);

    let m = get(&h.admin_url("/metrics"), &[]).await;
    assert_eq!(m.status, 200);
    let body = String::from_utf8_lossy(&m.body).to_string();
    for needle in [
        r#"authsidecar_requests_total{route="/m/",profile="cc",status="2xx"} 3"#,
        r#"authsidecar_requests_total{route="/m/",profile="t",status="5xx"} 1"#,
        r#"authsidecar_requests_total{route="",profile="",status="4xx"} 1"#,
        r#"authsidecar_token_requests_total{profile="cc",grant="client_credentials",outcome="ok",error=""} 1"#,
        r#"authsidecar_token_requests_total{profile="t",grant="client_credentials",outcome="idp_rejected",error="invalid_client"} 1"#,
        r#"authsidecar_request_duration_seconds_bucket{le="+Inf",route="/m/"} 4"#,
        "authsidecar_upstream_duration_seconds_count{route=\"/m/\"} 3",
        "authsidecar_token_cache_hits_total 2",
        "authsidecar_store_errors_total 0",
        "# EOF",
    ] {
        assert!(body.contains(needle), "{needle:?} not in:\n{body}");
    }
    for canary in [
        "canary-tenant",
        "canary-user",
        "canary-query",
        "demo-secret",
        "wrong-secret",
    ] {
        assert!(!body.contains(canary), "{canary} in metrics");
    }
    // Only GET.
    let r = send(Method::POST, &h.admin_url("/metrics"), &[], "").await;
    assert_eq!(r.status, 405);
}
