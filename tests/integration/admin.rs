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
