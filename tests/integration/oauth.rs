//! OAuth 2.0 machine grants end to end against the mock provider: one token fetch under load, early
//! refresh, 401 replay, IdP failures, client authentication, the test command.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use authsidecar::mock::{MockSettings, TokenFault};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::*;

const CC: &str = r#"
[[routes]]
prefix = "/api/"
upstream = "http://{echo}/protected/"
profiles = ["cc", "post", "pw"]

[profiles.cc]
type = "oauth2_client_credentials"
token_url = "http://{echo}/oauth/token"
client_id = "demo-client"
client_secret = "${SECRET}"
scope = { scope = "read write" }
token_params = { audience = "https://api.example" }
idp_timeout = "500ms"
replay_max_body_bytes = 64
# The replay tests refuse a token right after it was fetched.
reauth_min_token_age = "0s"
[[profiles.cc.fields]]
in = "header"
key = "Authorization"
value = "Bearer {{access_token}}"
[[profiles.cc.fields]]
in = "header"
key = "X-Grant"
value = "{{token.mock_grant}} {{token_type}} {{token.scope}}"

[profiles.post]
type = "oauth2_client_credentials"
token_url = "http://{echo}/oauth/token"
client_id = "demo-client"
client_secret = "${SECRET}"
client_auth = "post"

[profiles.pw]
type = "oauth2_password"
token_url = "http://{echo}/oauth/token"
client_id = "demo-client"
client_secret = "${SECRET}"
username = "svc"
password = "${PW}"
"#;

/// A secret with every character client_secret_basic must encode.
const SECRET: &str = "s3:cr%e+t w/é";
const PW: &str = "pw-canary-91c2";

fn settings() -> MockSettings {
    MockSettings {
        clients: vec![("demo-client".into(), SECRET.into())],
        users: vec![("svc".into(), PW.into())],
        ..MockSettings::default()
    }
}

async fn start(text: &str, settings: MockSettings) -> Harness {
    Harness::start_full(text, &[("SECRET", SECRET), ("PW", PW)], settings).await
}

fn big_client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
}

/// `n` concurrent GETs; returns their statuses.
async fn burst(url: &str, n: usize) -> Vec<u16> {
    let client = big_client();
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (c, url) = (client.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let req = Request::get(url).body(Full::new(Bytes::new())).unwrap();
            let resp = tokio::time::timeout(Duration::from_secs(30), c.request(req))
                .await
                .expect("timed out")
                .expect("request failed");
            let status = resp.status().as_u16();
            let _ = resp.into_body().collect().await;
            status
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_thousand_concurrent_requests_on_a_cold_cache_make_one_token_request() {
    // 6-second tokens refreshed only in their last second, so a slow burst (the whole suite runs in
    // parallel on two cores) cannot trigger an early refresh.
    // The IdP timeout is raised from the shared 500 ms: on a busy machine 1,000 concurrent callers
    // can delay the single fetch past it, which would test the timeout instead.
    let text = CC
        .replace(
            "replay_max_body_bytes = 64",
            "replay_max_body_bytes = 64\nrefresh_before = \"1s\"",
        )
        .replace("idp_timeout = \"500ms\"", "idp_timeout = \"5s\"");
    let h = start(
        &text,
        MockSettings {
            token_lifetime: Duration::from_secs(6),
            ..settings()
        },
    )
    .await;
    // A slow token endpoint keeps all 1,000 waiting on the same fetch.
    h.echo
        .state
        .set_token_fault(Some(TokenFault::Slow(Duration::from_millis(300))), None);
    let statuses = burst(&h.url("/api/x"), 1000).await;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "{:?}",
        statuses
            .iter()
            .filter(|s| **s != 200)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert_eq!(h.echo.token_requests(), 1);
    assert_eq!(h.echo.counters().resource_ok.load(Ordering::SeqCst), 1000);

    // The same after expiry (time passing is the point: the 6-second token expires).
    tokio::time::sleep(Duration::from_millis(6100)).await;
    let statuses = burst(&h.url("/api/x"), 1000).await;
    assert!(statuses.iter().all(|s| *s == 200));
    assert_eq!(h.echo.token_requests(), 2);
}

#[tokio::test]
async fn five_second_tokens_never_reach_the_upstream_expired_and_refresh_without_stalls() {
    // The token requests below are slow on purpose: the IdP timeout is raised above them.
    let text = CC.replace("idp_timeout = \"500ms\"", "idp_timeout = \"5s\"");
    let h = start(
        &text,
        MockSettings {
            token_lifetime: Duration::from_secs(5),
            ..settings()
        },
    )
    .await;
    // Every token request takes 1.5 s: a request that waited for one would show it, far above what
    // a busy machine adds to a request (the refresh at half-life, 2.5 s, still ends before expiry).
    h.echo
        .state
        .set_token_fault(Some(TokenFault::Slow(Duration::from_millis(1500))), None);
    assert_eq!(get(&h.url("/api/warm"), &[]).await.status, 200);
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(15) {
        let t = Instant::now();
        let r = get(&h.url("/api/x"), &[]).await;
        assert_eq!(r.status, 200);
        worst = worst.max(t.elapsed());
        n += 1;
        // Pacing, not waiting for anything: a request every 20 ms for 15 s.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = h.echo.counters();
    assert_eq!(
        c.resource_rejected.load(Ordering::SeqCst),
        0,
        "an expired token reached the upstream"
    );
    assert!(
        worst < Duration::from_millis(1000),
        "a request stalled for {worst:?}"
    );
    // 15 s of 5-second tokens refreshed at half-life: about 6 fetches, never one per request.
    let fetches = h.echo.token_requests();
    assert!(
        (4..=9).contains(&fetches),
        "{fetches} token requests for {n} requests"
    );
}

#[tokio::test]
async fn one_upstream_401_means_one_refresh_and_one_replay() {
    let h = start(CC, settings()).await;
    h.echo.state.reject_resource(1);
    let r = send(
        Method::POST,
        &h.url("/api/x"),
        &[("content-type", "text/plain")],
        "small body",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["body"],
        "small body",
        "the replay carries the same body"
    );
    assert_eq!(h.echo.token_requests(), 2);
    let c = h.echo.counters();
    assert_eq!(c.resource_rejected.load(Ordering::SeqCst), 1);
    assert_eq!(c.resource_ok.load(Ordering::SeqCst), 1);
    assert_eq!(h.server.proxy_stats().replays.load(Ordering::SeqCst), 1);
}

/// A bodiless GET (the fast path) refused once: the replay carries the new token, once, beside
/// the caller's own headers and query, and no header twice.
#[tokio::test]
async fn a_fast_path_replay_carries_the_new_token_and_the_callers_headers() {
    let h = start(CC, settings()).await;
    // A first token is cached, then refused once by the upstream.
    let first = get(&h.url("/api/warm"), &[]).await;
    assert_eq!(first.status, 200);
    let old = first.echoed("authorization");
    h.echo.state.reject_resource(1);
    let r = get(
        &h.url("/api/x?a=1&b=two"),
        &[("x-keep", "kept"), ("accept", "*/*")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(h.echo.token_requests(), 2);
    let auth = r.echoed("authorization");
    assert_eq!(auth.len(), 1, "{auth:?}");
    assert_ne!(auth, old, "the replay carries the new token");
    assert_eq!(r.echoed("x-keep"), ["kept"]);
    assert_eq!(r.echoed("accept"), ["*/*"]);
    assert_eq!(r.echoed("x-forwarded-for").len(), 1);
    assert_eq!(r.echoed("x-request-id").len(), 1);
    assert_eq!(r.json()["query"], "a=1&b=two");
    assert_eq!(h.server.proxy_stats().replays.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_second_401_passes_through_with_no_third_attempt() {
    let h = start(CC, settings()).await;
    h.echo.state.reject_resource(2);
    let r = get(&h.url("/api/x"), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json()["error"],
        "invalid_token",
        "the upstream's own answer"
    );
    assert!(r.headers.get("x-authsidecar-error").is_none());
    assert_eq!(
        h.echo.counters().resource_rejected.load(Ordering::SeqCst),
        2
    );
    assert_eq!(h.echo.token_requests(), 2);
}

#[tokio::test]
async fn a_body_over_the_replay_limit_is_not_replayed_but_the_token_is_dropped() {
    let h = start(CC, settings()).await;
    h.echo.state.reject_resource(1);
    let big = "x".repeat(100);
    let r = send(
        Method::POST,
        &h.url("/api/x"),
        &[("content-type", "text/plain")],
        big,
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(h.echo.token_requests(), 1);
    assert_eq!(
        h.server
            .proxy_stats()
            .replays_skipped
            .load(Ordering::SeqCst),
        1
    );
    // The refused token is gone: the next request fetches a new one.
    assert_eq!(get(&h.url("/api/x"), &[]).await.status, 200);
    assert_eq!(h.echo.token_requests(), 2);
}

#[tokio::test]
async fn token_members_and_type_fill_templates() {
    let h = start(CC, settings()).await;
    let r = get(&h.url("/api/x"), &[]).await;
    assert_eq!(
        r.echoed("x-grant"),
        vec!["client_credentials Bearer read write"]
    );
    assert_eq!(r.echoed("authorization").len(), 1);
}

#[tokio::test]
async fn client_secret_basic_and_post_both_encode_an_awkward_secret_correctly() {
    let h = start(CC, settings()).await;
    for profile in ["cc", "post", "pw"] {
        let r = get(&h.url("/api/x"), &[("X-Authsidecar-Profile", profile)]).await;
        assert_eq!(
            r.status,
            200,
            "{profile}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let c = h.echo.counters();
    assert_eq!(c.client_credentials.load(Ordering::SeqCst), 2);
    assert_eq!(c.password.load(Ordering::SeqCst), 1);
    assert_eq!(c.token_errors.load(Ordering::SeqCst), 0);
}

async fn expect_idp_error(h: &Harness, status: u16, code: &str) -> Resp {
    let r = get(&h.url("/api/x"), &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (status, code),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    r
}

#[tokio::test]
async fn idp_faults_map_to_their_error_codes_and_reach_nothing_upstream() {
    for (fault, status, code) in [
        (TokenFault::ServerError, 503, "idp_unavailable"),
        (TokenFault::Html, 502, "idp_invalid_response"),
        (TokenFault::Garbage, 502, "idp_invalid_response"),
        (TokenFault::InvalidClient, 502, "idp_rejected"),
        (TokenFault::Slow(Duration::from_secs(3)), 504, "idp_timeout"),
    ] {
        let h = start(CC, settings()).await;
        h.echo.state.set_token_fault(Some(fault), None);
        let started = Instant::now();
        let r = expect_idp_error(&h, status, code).await;
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{fault:?} took {:?}",
            started.elapsed()
        );
        let body = String::from_utf8_lossy(&r.body).to_string();
        assert!(
            !body.contains("Please sign in") && !body.contains("access_tok"),
            "IdP body leaked: {body}"
        );
        if fault == TokenFault::InvalidClient {
            assert!(body.contains("invalid_client"), "{body}");
        }
        if status == 503 {
            assert!(r.headers.contains_key("retry-after"));
        }
        assert_eq!(
            h.echo.echo_count(),
            0,
            "{fault:?}: the upstream received nothing"
        );
    }
}

#[tokio::test]
async fn a_failing_idp_is_not_hammered_and_nothing_is_cached() {
    let h = start(CC, settings()).await;
    h.echo
        .state
        .set_token_fault(Some(TokenFault::ServerError), None);
    let statuses = burst(&h.url("/api/x"), 50).await;
    assert!(statuses.iter().all(|s| *s == 503));
    assert_eq!(
        h.echo.token_requests(),
        1,
        "50 concurrent callers, one token request"
    );
    for _ in 0..20 {
        expect_idp_error(&h, 503, "idp_unavailable").await;
    }
    assert_eq!(
        h.echo.token_requests(),
        1,
        "inside the backoff no new request"
    );
    // Recovery: after the backoff the next request fetches and succeeds.
    h.echo.state.clear_faults();
    // Time passing is the point: the backoff runs out.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(&h.url("/api/x"), &[]).await.status, 200);
    assert_eq!(h.echo.token_requests(), 2);
}

#[tokio::test]
async fn an_unreachable_idp_is_idp_unavailable() {
    let idp = refused();
    let text = CC.replace(
        "http://{echo}/oauth/token",
        &format!("http://{}/oauth/token", idp.addr),
    );
    let h = start(&text, settings()).await;
    let r = expect_idp_error(&h, 503, "idp_unavailable").await;
    assert_eq!(r.json()["error"]["profile"], "cc");
}

const TENANT: &str = r#"
[[routes]]
prefix = "/t/"
upstream = "http://{echo}/protected/{tenant}/"
profiles = ["t"]

[profiles.t]
type = "oauth2_client_credentials"
tenancy = true
token_url = "http://{echo}/{tenant}/oauth/token"
client_id = "demo-client"
client_secret = "${SECRET}"
"#;

#[tokio::test]
async fn tokens_are_kept_per_tenant() {
    let h = start(TENANT, settings()).await;
    let a1 = get(&h.url("/t/x"), &[("X-Authsidecar-Tenant", "alpha")]).await;
    let b1 = get(&h.url("/t/x"), &[("X-Authsidecar-Tenant", "beta")]).await;
    let a2 = get(&h.url("/t/x"), &[("X-Authsidecar-Tenant", "ALPHA")]).await;
    assert_eq!(a1.json()["path"], "/protected/alpha/x");
    assert_ne!(a1.echoed("authorization"), b1.echoed("authorization"));
    assert_eq!(a1.echoed("authorization"), a2.echoed("authorization"));
    assert_eq!(h.echo.token_requests(), 2);
    let r = get(&h.url("/t/x"), &[]).await;
    assert_eq!(r.error_code(), "tenant_invalid");
    // The admin test asks for the tenant too, instead of sending a broken token request.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = send(
        Method::POST,
        &h.admin_url("/admin/profiles/t/test"),
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "tenant_invalid");
    let r = send(
        Method::POST,
        &h.admin_url("/admin/profiles/t/test?tenant=gamma"),
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.json()["ok"], true);
    assert!(r.json()["token_url"]
        .as_str()
        .unwrap()
        .contains("/gamma/oauth/token"));
}

#[tokio::test]
async fn admin_test_reports_without_secrets_and_stores_only_when_asked() {
    let h = start(CC, settings()).await;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = send(
        Method::POST,
        &h.admin_url("/admin/profiles/pw/test"),
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body).to_string();
    let v = r.json();
    assert_eq!(v["ok"], true);
    assert_eq!(v["status"], 200);
    assert_eq!(v["stored"], false);
    assert!(v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h[0] == "cache-control"));
    for secret in h
        .echo
        .state
        .issued_tokens()
        .iter()
        .map(String::as_str)
        .chain([SECRET, PW])
    {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    // The cache was not touched: the proxy fetches its own token.
    get(&h.url("/api/x"), &[("X-Authsidecar-Profile", "pw")]).await;
    assert_eq!(h.echo.token_requests(), 2);

    // store=true: the proxy uses the tested token.
    let r = send(
        Method::POST,
        &h.admin_url("/admin/profiles/cc/test?store=true"),
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.json()["stored"], true);
    get(&h.url("/api/x"), &[]).await;
    assert_eq!(h.echo.token_requests(), 3);

    // A failing test says so, with the OAuth error code.
    h.echo
        .state
        .set_token_fault(Some(TokenFault::InvalidClient), None);
    let r = send(
        Method::POST,
        &h.admin_url("/admin/profiles/cc/test"),
        &[("Authorization", &auth)],
        "",
    )
    .await;
    let v = r.json();
    assert_eq!(v["ok"], false);
    assert_eq!(v["status"], 401);
    assert_eq!(v["error"]["code"], "idp_rejected");
    assert!(v["body"].as_str().unwrap().contains("invalid_client"));

    // GET is refused, and so is a missing token.
    assert_eq!(
        get(
            &h.admin_url("/admin/profiles/cc/test"),
            &[("Authorization", &auth)]
        )
        .await
        .status,
        405
    );
    assert_eq!(
        send(
            Method::POST,
            &h.admin_url("/admin/profiles/cc/test"),
            &[],
            ""
        )
        .await
        .status,
        401
    );
}

#[tokio::test]
async fn test_auth_command_masks_tokens_and_exits_by_result() {
    let h = start(CC, settings()).await;
    let dir = TempDir::new("testauth");
    let file = dir.join("c.toml");
    std::fs::write(
        &file,
        with_listeners(&CC.replace("{echo}", &h.echo.addr.to_string())),
    )
    .unwrap();
    let file1 = file.clone();
    let run = move |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_authsidecar"))
            .arg("-c")
            .arg(&file1)
            .args(args)
            .env("SECRET", SECRET)
            .env("PW", PW)
            .output()
            .unwrap()
    };
    let out = tokio::task::spawn_blocking(move || {
        let ok = run(&["test-auth", "pw"]);
        let json = run(&["test-auth", "cc", "--json"]);
        (ok, json)
    });
    let (ok, json) = out.await.unwrap();
    let text = String::from_utf8_lossy(&ok.stdout).to_string();
    assert!(
        ok.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        text.contains("Auth Test Succeeded")
            && text.contains("== Headers ==")
            && text.contains("== Response ==")
    );
    let json_text = String::from_utf8_lossy(&json.stdout).to_string();
    let v: serde_json::Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(v["ok"], true);
    let all = format!(
        "{text}{json_text}{}{}",
        String::from_utf8_lossy(&ok.stderr),
        String::from_utf8_lossy(&json.stderr)
    );
    for secret in h
        .echo
        .state
        .issued_tokens()
        .iter()
        .map(String::as_str)
        .chain([SECRET, PW])
    {
        assert!(!all.contains(secret), "{secret} leaked");
    }

    h.echo
        .state
        .set_token_fault(Some(TokenFault::InvalidClient), None);
    let file2 = dir.join("c.toml");
    let failed = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_authsidecar"))
            .arg("-c")
            .arg(&file2)
            .args(["test-auth", "cc"])
            .env("SECRET", SECRET)
            .env("PW", PW)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(failed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&failed.stdout).contains("Auth Test Failed: idp_rejected"));
}

/// B17: a token endpoint whose name does not resolve is 502 `idp_dns_error`, named as the auth
/// step, and nothing reaches the upstream. (`.invalid` never resolves, RFC 6761.)
#[tokio::test]
async fn b17_an_idp_name_that_does_not_resolve_is_idp_dns_error() {
    let text = CC.replace(
        "http://{echo}/oauth/token",
        "https://idp.authsidecar-test.invalid/oauth/token",
    );
    let h = start(&text, settings()).await;
    let r = expect_idp_error(&h, 502, "idp_dns_error").await;
    assert_eq!(r.json()["error"]["profile"], "cc");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("did not resolve"), "{msg}");
    assert!(!msg.contains(SECRET), "{msg}");
    assert_eq!(h.echo.echo_count(), 0);
}

/// B7 (b): a 403 (`insufficient_scope`) is not a reason to refresh: it passes through, no new token
/// is fetched and nothing is replayed.
#[tokio::test]
async fn b7_a_403_passes_through_without_refresh_or_replay() {
    let h = start(CC, settings()).await;
    let r = get(&h.url("/api/x"), &[("X-Mock-Status", "403")]).await;
    assert_eq!(r.status, 403);
    assert!(r.headers.get("x-authsidecar-error").is_none());
    assert_eq!(h.echo.token_requests(), 1);
    assert_eq!(h.server.proxy_stats().replays.load(Ordering::SeqCst), 0);
}

/// B7 (e): 50 concurrent requests whose cached token the upstream no longer accepts: exactly one
/// new token is fetched, every request is replayed once and succeeds, and no request reaches the
/// upstream more than twice.
#[tokio::test]
async fn b7_fifty_concurrent_401s_make_one_refresh() {
    let h = start(CC, settings()).await;
    assert_eq!(get(&h.url("/api/warm"), &[]).await.status, 200);
    assert_eq!(h.echo.token_requests(), 1);
    h.echo.state.revoke_tokens(&h.echo.state.issued_tokens());
    let c = h.echo.counters();
    let (rejected0, ok0) = (
        c.resource_rejected.load(Ordering::SeqCst),
        c.resource_ok.load(Ordering::SeqCst),
    );
    let statuses = burst(&h.url("/api/x"), 50).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(h.echo.token_requests(), 2, "one refresh for all 50");
    let (rejected, ok) = (
        c.resource_rejected.load(Ordering::SeqCst) - rejected0,
        c.resource_ok.load(Ordering::SeqCst) - ok0,
    );
    assert_eq!(ok, 50);
    assert!(rejected <= 50, "{rejected} rejections");
    assert_eq!(
        h.server.proxy_stats().replays.load(Ordering::SeqCst),
        rejected
    );
}

/// B1 (a): with a valid cached token, an IdP that fails serves nothing new and changes nothing:
/// requests keep succeeding from the cache and the IdP is not called.
#[tokio::test]
async fn b1_a_cached_token_keeps_working_while_the_idp_is_down() {
    let h = start(CC, settings()).await;
    assert_eq!(get(&h.url("/api/warm"), &[]).await.status, 200);
    h.echo
        .state
        .set_token_fault(Some(TokenFault::ServerError), None);
    for _ in 0..20 {
        assert_eq!(get(&h.url("/api/x"), &[]).await.status, 200);
    }
    assert_eq!(h.echo.token_requests(), 1);
}

/// B5: a rejected client (`invalid_client`, e.g. a rotated secret) is not retried in a loop: 50
/// concurrent callers and 20 more inside the backoff make one token request in all.
#[tokio::test]
async fn b5_a_rejected_client_is_not_retried_in_a_loop() {
    let h = start(CC, settings()).await;
    h.echo
        .state
        .set_token_fault(Some(TokenFault::InvalidClient), None);
    let statuses = burst(&h.url("/api/x"), 50).await;
    assert!(statuses.iter().all(|s| *s == 502), "{statuses:?}");
    for _ in 0..20 {
        let r = expect_idp_error(&h, 502, "idp_rejected").await;
        assert!(String::from_utf8_lossy(&r.body).contains("invalid_client"));
    }
    assert_eq!(h.echo.token_requests(), 1);
    assert_eq!(h.echo.echo_count(), 0);
}
