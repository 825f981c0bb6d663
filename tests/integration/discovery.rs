//! Discovery (RFC 8414, OpenID Connect Discovery) and OpenID Connect sign-in: against the mock
//! provider (both documents, an issuer mismatch, an unreachable provider, wrong `id_token`s,
//! `check`), and a new user's whole sign-in at a certified OpenID provider (oidc-provider,
//! `tests/verify/oidc/`) with a profile that names only `issuer`, `client_id` and `client_secret`.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use authsidecar::config::{Config, Env};
use authsidecar::mock::IdTokenFault;
use authsidecar::Server;
use serde_json::json;

use crate::support::*;

/// A sidecar config with a discovery profile `disc` (route `/d/`) against `issuer`, and a machine
/// profile `cc` (route `/cc/`) against the mock at `mock`.
fn config_text(issuer: &str, mock: std::net::SocketAddr, disc_extra: &str) -> String {
    format!(
        r#"
[auth]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:0"

[[routes]]
prefix = "/d/"
upstream = "http://{mock}/protected/"
profiles = ["disc"]

[[routes]]
prefix = "/cc/"
upstream = "http://{mock}/protected/"
profiles = ["cc"]

[profiles.disc]
type = "oauth2_authorization_code"
issuer = "{issuer}"
client_id = "demo-client"
client_secret = "demo-secret"
{disc_extra}

[profiles.cc]
type = "oauth2_client_credentials"
token_url = "http://{mock}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
"#
    )
}

const USER: (&str, &str) = ("X-Authsidecar-User", "alice");

async fn login_url(server: &Server) -> String {
    let r = get(&format!("http://{}/d/me", server.proxy_addr), &[USER]).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (401, "authorization_required"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()["error"]["login_url"].as_str().unwrap().to_string()
}

/// Start page → the IdP's authorize (the mock's, auto-approving) → the callback. Returns the
/// authorization request URL and the callback's answer.
async fn sign_in(login: &str) -> (String, Resp) {
    let to_idp = get(login, &[]).await;
    assert_eq!(
        to_idp.status,
        302,
        "{}",
        String::from_utf8_lossy(&to_idp.body)
    );
    let authorize = location(&to_idp);
    let to_callback = get(&authorize, &[]).await;
    assert_eq!(to_callback.status, 302);
    (authorize.clone(), get(&location(&to_callback), &[]).await)
}

async fn readyz(server: &Server) -> Resp {
    get(&format!("http://{}/readyz", server.admin_addr), &[]).await
}

/// Waits until `/readyz` answers 200, at most `secs` seconds.
async fn until_ready(server: &Server, what: &str, secs: u64) {
    wait_for(what, Duration::from_secs(secs), || async {
        let r = readyz(server).await;
        if r.status == 200 {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&r.body).into_owned())
        }
    })
    .await;
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .replace('+', " ")
        })
    })
}

#[tokio::test]
async fn a_profile_with_only_an_issuer_reads_the_openid_document_and_signs_a_user_in() {
    let m = mock().await;
    let issuer = format!("http://{}", m.addr);
    // No scope: the OpenID document makes it `openid`. A field uses the id_token's email.
    let extra = r#"[[profiles.disc.fields]]
in = "header"
key = "Authorization"
value = "Bearer {{access_token}}"
[[profiles.disc.fields]]
in = "header"
key = "X-User-Email"
value = "{{id_claims.email}}"
"#;
    let extra = format!("reauth_min_token_age = \"0s\"\n{extra}");
    let server = Server::start(parse(&config_text(&issuer, m.addr, &extra)))
        .await
        .unwrap();
    let r = readyz(&server).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        m.counters()
            .discovery
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 1
    );

    // The admin API shows what the document said and the endpoints in use.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = get(
        &format!("http://{}/admin/profiles/disc", server.admin_addr),
        &[("Authorization", &auth)],
    )
    .await;
    let v = r.json();
    assert_eq!(v["discovery"]["state"], "read", "{v}");
    assert_eq!(v["discovery"]["issuer"], issuer.as_str());
    assert_eq!(v["discovery"]["openid"], true);
    assert_eq!(
        v["discovery"]["token_endpoint"],
        format!("{issuer}/oauth/token").as_str()
    );
    assert_eq!(
        v["discovery"]["authorization_endpoint"],
        format!("{issuer}/oauth/authorize").as_str()
    );

    let (authorize, done) = sign_in(&login_url(&server).await).await;
    assert!(
        authorize.starts_with(&format!("{issuer}/oauth/authorize?")),
        "{authorize}"
    );
    assert_eq!(query_param(&authorize, "scope").as_deref(), Some("openid"));
    assert_eq!(
        query_param(&authorize, "code_challenge_method").as_deref(),
        Some("S256")
    );
    let nonce = query_param(&authorize, "nonce").expect("a nonce");
    assert!(nonce.len() >= 22, "{nonce}");
    assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));

    let r = get(&format!("http://{}/d/me", server.proxy_addr), &[USER]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.echoed("x-user-email"), vec!["demo-user@mock.example"]);
    assert_eq!(r.echoed("authorization").len(), 1);
    // The claims stay with the grant through a refresh (the upstream refuses the token once: the
    // grant is refreshed at the discovered token endpoint and the call replayed).
    m.state.reject_resource(1);
    let r = get(&format!("http://{}/d/me", server.proxy_addr), &[USER]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        m.counters()
            .refresh_token
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(r.echoed("x-user-email"), vec!["demo-user@mock.example"]);
    // A second sign-in gets a new nonce.
    let r = get(
        &format!("http://{}/d/me", server.proxy_addr),
        &[("X-Authsidecar-User", "bob")],
    )
    .await;
    let login = r.json()["error"]["login_url"].as_str().unwrap().to_string();
    let (authorize, _) = sign_in(&login).await;
    assert_ne!(query_param(&authorize, "nonce").unwrap(), nonce);
    server.shutdown().await;
}

#[tokio::test]
async fn urls_written_in_the_profile_win_over_discovered_ones() {
    let m = mock().await;
    let issuer = format!("http://{}", m.addr);
    // The mock's authorize endpoint answers under any path that ends in /oauth/authorize.
    let own = format!("http://{}/own/oauth/authorize", m.addr);
    let extra = format!("authorization_url = \"{own}\"\n");
    let server = Server::start(parse(&config_text(&issuer, m.addr, &extra)))
        .await
        .unwrap();
    assert_eq!(readyz(&server).await.status, 200);
    let (authorize, done) = sign_in(&login_url(&server).await).await;
    assert!(authorize.starts_with(&format!("{own}?")), "{authorize}");
    // The token endpoint and the keys came from the document.
    assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));
    assert_eq!(query_param(&authorize, "scope").as_deref(), Some("openid"));
    assert_eq!(m.token_requests(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn without_an_openid_document_the_rfc8414_one_is_read() {
    let m = mock().await;
    m.state.set_discovery(false, true, None);
    let issuer = format!("http://{}", m.addr);
    let extra = "scope = { scope = \"read\" }\n";
    let server = Server::start(parse(&config_text(&issuer, m.addr, extra)))
        .await
        .unwrap();
    assert_eq!(readyz(&server).await.status, 200);
    let (authorize, done) = sign_in(&login_url(&server).await).await;
    assert_eq!(query_param(&authorize, "scope").as_deref(), Some("read"));
    assert_eq!(query_param(&authorize, "nonce"), None);
    assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));
    let r = get(&format!("http://{}/d/me", server.proxy_addr), &[USER]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    server.shutdown().await;
}

/// A machine grant names only its provider's issuer: the token endpoint comes from the document
/// (here the RFC 8414 one), and a document with another issuer keeps that profile not ready with no
/// token request.
#[tokio::test]
async fn a_client_credentials_profile_with_only_an_issuer_takes_the_discovered_token_endpoint() {
    let good = mock().await;
    good.state.set_discovery(false, true, None);
    let bad = mock().await;
    bad.state
        .set_discovery(true, true, Some("http://evil.example".into()));
    let text = |m: &authsidecar::mock::MockProvider, name: &str| {
        format!(
            r#"
[[routes]]
prefix = "/{name}/"
upstream = "http://{addr}/protected/"
profiles = ["{name}"]

[profiles.{name}]
type = "oauth2_client_credentials"
issuer = "http://{addr}"
client_id = "demo-client"
client_secret = "demo-secret"
"#,
            addr = m.addr
        )
    };
    let config = format!("{}{}", text(&good, "good"), text(&bad, "bad"));
    let server = Server::start(parse(&config)).await.unwrap();
    let r = get(&format!("http://{}/good/x", server.proxy_addr), &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(good.token_requests(), 1);

    let r = get(&format!("http://{}/bad/x", server.proxy_addr), &[]).await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.error_code(), "idp_unavailable");
    assert_eq!(bad.token_requests(), 0, "no token request while not ready");
    let r = readyz(&server).await;
    assert_eq!(r.status, 503);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("bad") && msg.contains("issuer mismatch") && !msg.contains("good"),
        "{msg}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_issuer_mismatch_makes_only_that_profile_not_ready_until_it_is_fixed() {
    let m = mock().await;
    m.state
        .set_discovery(true, true, Some("http://evil.example".into()));
    let issuer = format!("http://{}", m.addr);
    let server = Server::start(parse(&config_text(&issuer, m.addr, "")))
        .await
        .unwrap();
    let r = readyz(&server).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.error_code(), "not_ready");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("disc") && msg.contains("issuer mismatch"),
        "{msg}"
    );
    assert!(!msg.contains("cc"), "{msg}");
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let v = get(
        &format!("http://{}/admin/profiles/disc", server.admin_addr),
        &[("Authorization", &auth)],
    )
    .await
    .json();
    assert_eq!(v["discovery"]["state"], "not_read", "{v}");
    assert!(
        v["discovery"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("issuer mismatch")),
        "{v}"
    );

    let r = get(&format!("http://{}/d/me", server.proxy_addr), &[USER]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.error_code(), "idp_unavailable");
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(m.token_requests(), 0, "no token request while not ready");
    // The other profile serves meanwhile.
    let r = get(&format!("http://{}/cc/x", server.proxy_addr), &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // Fixed at the provider: the retry (backoff, at most 30 s apart) finds it.
    m.state.set_discovery(true, true, None);
    until_ready(&server, "the profile to become ready", 40).await;
    let r = get(&format!("http://{}/d/me", server.proxy_addr), &[USER]).await;
    assert_eq!(r.error_code(), "authorization_required");
    server.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_provider_does_not_hold_the_start_and_a_reload_reads_the_new_issuer() {
    let m = mock().await;
    let down = refused();
    let started = Instant::now();
    let server = Server::start(parse(&config_text(
        &format!("http://{}", down.addr),
        m.addr,
        "",
    )))
    .await
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "start took {:?}",
        started.elapsed()
    );
    let r = readyz(&server).await;
    assert_eq!(r.status, 503);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("disc"));
    let r = get(&format!("http://{}/d/me", server.proxy_addr), &[USER]).await;
    assert_eq!(r.error_code(), "idp_unavailable");
    // A reload to the reachable issuer reads its document.
    let good = parse(&config_text(&format!("http://{}", m.addr), m.addr, ""));
    server.reload(good).unwrap();
    until_ready(&server, "ready after the reload", 10).await;
    let r = get(&format!("http://{}/d/me", server.proxy_addr), &[USER]).await;
    assert_eq!(r.error_code(), "authorization_required");
    server.shutdown().await;
}

#[tokio::test]
async fn a_bad_id_token_is_a_400_page_and_no_grant() {
    let m = mock().await;
    let issuer = format!("http://{}", m.addr);
    let server = Server::start(parse(&config_text(
        &issuer,
        m.addr,
        "scope = { scope = \"openid email\" }\n",
    )))
    .await
    .unwrap();
    for fault in [
        IdTokenFault::BadSignature,
        IdTokenFault::WrongNonce,
        IdTokenFault::WrongAudience,
        IdTokenFault::Expired,
    ] {
        m.state.set_id_token_fault(Some(fault));
        let (_, done) = sign_in(&login_url(&server).await).await;
        assert_eq!(done.status, 400, "{fault:?}");
        assert_eq!(
            done.headers["x-authsidecar-error"], "id_token_invalid",
            "{fault:?}"
        );
        // No grant: the next call asks the user again.
        let r = get(&format!("http://{}/d/me", server.proxy_addr), &[USER]).await;
        assert_eq!(r.error_code(), "authorization_required", "{fault:?}");
    }
    m.state.set_id_token_fault(None);
    let (_, done) = sign_in(&login_url(&server).await).await;
    assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));
    let r = get(&format!("http://{}/d/me", server.proxy_addr), &[USER]).await;
    assert_eq!(r.status, 200);
    server.shutdown().await;
}

/// A sign-in for `user`: the callback's answer.
async fn sign_in_as(server: &Server, user: &str) -> Resp {
    let r = get(
        &format!("http://{}/d/me", server.proxy_addr),
        &[("X-Authsidecar-User", user)],
    )
    .await;
    let login = r.json()["error"]["login_url"].as_str().unwrap().to_string();
    sign_in(&login).await.1
}

#[tokio::test]
async fn a_rotated_key_is_read_once_and_unknown_kids_do_not_hammer_the_provider() {
    let m = mock().await;
    let issuer = format!("http://{}", m.addr);
    let server = Server::start(parse(&config_text(
        &issuer,
        m.addr,
        "scope = { scope = \"openid\" }\n",
    )))
    .await
    .unwrap();
    let jwks = || m.counters().jwks.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(sign_in_as(&server, "alice").await.status, 200);
    assert_eq!(sign_in_as(&server, "bob").await.status, 200);
    assert_eq!(jwks(), 1, "the key set is cached");
    // The provider rotates its key: the unknown kid reads the set again, once.
    m.state.rotate_id_token_key();
    assert_eq!(sign_in_as(&server, "carol").await.status, 200);
    assert_eq!(jwks(), 2);
    // Another unknown kid right after: not read again within 30 s, so the token is refused.
    m.state.rotate_id_token_key();
    let done = sign_in_as(&server, "dave").await;
    assert_eq!(done.status, 400);
    assert_eq!(done.headers["x-authsidecar-error"], "id_token_invalid");
    assert_eq!(jwks(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn check_shows_the_discovered_endpoints_and_offline_skips_the_network() {
    let m = mock().await;
    let dir = TempDir::new("discovery-check");
    let file = dir.join("c.toml");
    let text = config_text(&format!("http://{}", m.addr), m.addr, "");
    std::fs::write(&file, &text).unwrap();
    let bin = env!("CARGO_BIN_EXE_authsidecar");
    let run = move |args: &[&str]| {
        let out = Command::new(bin)
            .args(args)
            .arg("-c")
            .arg(&file)
            .env_remove("AUTHSIDECAR_CONFIG")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, out) = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(&["check"])
    })
    .await
    .unwrap();
    assert!(ok, "{out}");
    assert!(out.contains("discovery: profiles.disc:"), "{out}");
    assert!(
        out.contains(&format!("token_endpoint = http://{}/oauth/token", m.addr)),
        "{out}"
    );
    assert!(out.contains("openid-configuration"), "{out}");

    m.state
        .set_discovery(true, true, Some("http://evil.example".into()));
    let (ok, out) = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(&["check"])
    })
    .await
    .unwrap();
    assert!(!ok, "{out}");
    assert!(out.contains("issuer mismatch"), "{out}");
    let before = m
        .counters()
        .discovery
        .load(std::sync::atomic::Ordering::SeqCst);
    let (ok, out) = tokio::task::spawn_blocking(move || run(&["check", "--offline"]))
        .await
        .unwrap();
    assert!(ok, "{out}");
    assert!(!out.contains("discovery:"), "{out}");
    assert_eq!(
        m.counters()
            .discovery
            .load(std::sync::atomic::Ordering::SeqCst),
        before
    );
}

// ---------------------------------------------------------------------------------------------
// A new user at a certified OpenID provider

/// Follows redirects from `url` with a cookie jar per host (the provider keeps its interaction in
/// cookies), until one leads to `stop_host`; returns that answer (not followed).
async fn follow(mut url: String, stop_host: &str) -> String {
    let mut jar: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for _ in 0..20 {
        let host = url
            .split("://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or("")
            .to_string();
        if host == stop_host {
            return url;
        }
        let cookies: String = jar
            .get(&host)
            .map(|c| {
                c.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        let headers: Vec<(&str, &str)> = if cookies.is_empty() {
            vec![]
        } else {
            vec![("cookie", cookies.as_str())]
        };
        let r = get(&url, &headers).await;
        for sc in r.headers.get_all("set-cookie") {
            let sc = sc.to_str().unwrap();
            let pair = sc.split(';').next().unwrap();
            if let Some((k, v)) = pair.split_once('=') {
                let c = jar.entry(host.clone()).or_default();
                if v.is_empty() || sc.to_ascii_lowercase().contains("expires=thu, 01 jan 1970") {
                    c.remove(k.trim());
                } else {
                    c.insert(k.trim().to_string(), v.to_string());
                }
            }
        }
        assert!(
            r.status.is_redirection(),
            "{url}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        let next = location(&r);
        url = if next.starts_with('/') {
            format!("http://{host}{next}")
        } else {
            next
        };
    }
    panic!("more than 20 redirects");
}

#[tokio::test]
async fn a_new_user_signs_in_at_a_certified_openid_provider_with_only_issuer_client_id_and_secret()
{
    let secret = "a-client-secret-of-the-sidecar-0123456789";
    // A native client: its loopback redirect URI matches the auth listener's port, whatever it is
    // (RFC 8252 §7.3), so the provider can start before the sidecar.
    let clients = json!([{
        "client_id": "sidecar",
        "client_secret": secret,
        "application_type": "native",
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "redirect_uris": ["http://127.0.0.1/oauth/callback"],
        "token_endpoint_auth_method": "client_secret_basic",
    }]);
    let tmp = TempDir::new("oidc-sign-in");
    let out = tmp.path().join("out.log");
    let (p, port) = proc::oidc_provider(tmp.path(), &clients, Some("alice")).await;
    let issuer = format!("http://127.0.0.1:{port}");
    // The profile a new user writes: issuer, client_id, client_secret. The upstream is the
    // provider's own userinfo endpoint, which accepts only the access token it issued.
    let text = format!(
        r#"
[auth]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:0"

[[routes]]
prefix = "/me/"
upstream = "{issuer}/"
profiles = ["oidc"]

[profiles.oidc]
type = "oauth2_authorization_code"
issuer = "{issuer}"
client_id = "sidecar"
client_secret = "${{SECRET}}"
"#
    );
    let config = Config::from_str_with_env(
        &with_listeners(&text),
        &Env::from_pairs([("SECRET", secret)]),
    )
    .unwrap_or_else(|e| panic!("config errors:\n{e}"));
    let server = Server::start(config).await.unwrap();
    let r = readyz(&server).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let me = format!("http://{}/me/me", server.proxy_addr);
    let r = get(&me, &[USER]).await;
    assert_eq!(r.error_code(), "authorization_required");
    let login = r.json()["error"]["login_url"].as_str().unwrap().to_string();
    let auth_host = server.auth_addr.unwrap().to_string();
    // The start page sends the browser to the provider; its login and consent pages send it back.
    let to_idp = get(&login, &[]).await;
    let authorize = location(&to_idp);
    assert!(
        authorize.starts_with(&format!("{issuer}/auth?")),
        "{authorize}"
    );
    assert_eq!(query_param(&authorize, "scope").as_deref(), Some("openid"));
    assert!(query_param(&authorize, "nonce").is_some());
    let callback = follow(authorize, &auth_host).await;
    assert!(
        query_param(&callback, "iss").as_deref() == Some(issuer.as_str()),
        "{callback}"
    );
    let done = get(&callback, &[]).await;
    assert_eq!(
        done.status,
        200,
        "{}\n{}",
        String::from_utf8_lossy(&done.body),
        std::fs::read_to_string(&out).unwrap_or_default()
    );
    // The user's token reaches the upstream: the provider's userinfo answers for alice.
    let r = get(&me, &[USER]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["sub"], "alice");
    server.shutdown().await;
    drop(p);
}
