//! The Test of `oauth2_authorization_code` profiles: `POST /admin/profiles/{name}/test` answers a
//! login link; the operator's sign-in (the end users' start page and callback) ends in a report,
//! polled at `GET /admin/profiles/{name}/test/{test_id}`, and never in a grant. Driven through the
//! admin API with an HTTP client that follows the redirects by hand, through
//! `authsidecar test-auth`, and through the console in a real headless Chromium.

use std::sync::atomic::Ordering;
use std::time::Duration;

use authsidecar::config::Config;
use authsidecar::mock::MockProvider;
use authsidecar::Server;
use bytes::Bytes;
use http::Method;
use serde_json::Value;

use crate::support::browser::Browser;
use crate::support::proc::printed_after;
use crate::support::*;

/// A client secret that must never appear in a report, a page or the CLI's output.
const SECRET: &str = "authcode-test-secret-5Yq";

/// Listeners on port 0 (`public_url` with port 0 takes the auth listener's port; the proxy and
/// admin listeners from `with_listeners`, with the fast path as the run asks); grants in memory.
fn config_text(mock: std::net::SocketAddr) -> String {
    with_listeners(&format!(
        r#"
[auth]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:0"

[[routes]]
prefix = "/u/"
upstream = "http://{mock}/protected/"
profiles = ["user", "plain"]

[[routes]]
prefix = "/p/"
upstream = "http://{mock}/protected/"
profiles = ["pin"]

[[routes]]
prefix = "/c/"
upstream = "http://{mock}/protected/"
profiles = ["ctx"]

[profiles.user]
type = "oauth2_authorization_code"
identity_provider = "Mock IdP"
authorization_url = "http://{mock}/oauth/authorize"
token_url = "http://{mock}/oauth/token"
issuer = "http://{mock}"
client_id = "demo-client"
client_secret = "{SECRET}"
scope = {{ scope = "read" }}
on_authorized = "http://{mock}/echo/on-authorized"

[profiles.pin]
type = "oauth2_authorization_code"
tenancy = true
authorization_url = "http://{mock}/{{tenant}}/oauth/authorize"
token_url = "http://{mock}/{{tenant}}/oauth/token"
client_id = "demo-client"
client_secret = "{SECRET}"
[[profiles.pin.user_fields]]
key = "account"
label = "Account"

[profiles.ctx]
type = "oauth2_authorization_code"
authorization_url = "http://{mock}/oauth/authorize?region={{{{context.region}}}}"
token_url = "http://{mock}/oauth/token"
client_id = "demo-client"
client_secret = "{SECRET}"

[profiles.plain]
type = "none"

[[routes]]
prefix = "/o1/"
upstream = "http://{mock}/oauth1/protected/"
profiles = ["tw"]

[profiles.tw]
type = "oauth1"
per_user = true
consumer_key = "demo-client"
consumer_secret = "{SECRET}"
request_token_url = "http://{mock}/oauth1/request_token"
authorization_url = "http://{mock}/oauth1/authorize"
access_token_url = "http://{mock}/oauth1/access_token"
"#
    ))
}

struct Setup {
    mock: MockProvider,
    server: Server,
    dir: TempDir,
    /// The config as a file (for the CLI).
    path: std::path::PathBuf,
}

async fn setup(name: &str) -> Setup {
    let mock = MockProvider::start_with(
        ([127, 0, 0, 1], 0).into(),
        authsidecar::mock::MockSettings {
            clients: vec![("demo-client".into(), SECRET.into())],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let dir = TempDir::new(name);
    let path = dir.join("sidecar.toml");
    std::fs::write(&path, config_text(mock.addr)).unwrap();
    let server = Server::start(Config::load(&path).unwrap()).await.unwrap();
    Setup {
        mock,
        server,
        dir,
        path,
    }
}

impl Setup {
    fn admin(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.admin_addr)
    }

    /// `POST /admin/profiles/{profile}/test{query}` with the admin token.
    async fn start_test(&self, profile: &str, query: &str) -> Resp {
        send(
            Method::POST,
            &self.admin(&format!("/admin/profiles/{profile}/test{query}")),
            &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            Bytes::new(),
        )
        .await
    }

    /// A started test: its id and login link.
    async fn started(&self, profile: &str) -> (String, String) {
        let r = self.start_test(profile, "").await;
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        (
            v["test_id"].as_str().unwrap().to_string(),
            v["login_url"].as_str().unwrap().to_string(),
        )
    }

    /// `GET /admin/profiles/{profile}/test/{id}` with the admin token.
    async fn poll(&self, profile: &str, id: &str) -> Resp {
        get(
            &self.admin(&format!("/admin/profiles/{profile}/test/{id}")),
            &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        )
        .await
    }

    /// Every token or grant the admin API lists.
    async fn tokens(&self) -> Vec<Value> {
        let r = get(
            &self.admin("/admin/tokens"),
            &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        )
        .await;
        assert_eq!(r.status, 200);
        r.json()["tokens"].as_array().unwrap().clone()
    }

    fn code_exchanges(&self) -> u64 {
        self.mock
            .counters()
            .authorization_code
            .load(Ordering::SeqCst)
    }

    /// Nothing any token the mock issued, nor the client secret, is in `text`.
    fn assert_no_secret(&self, text: &str, what: &str) {
        for t in self.mock.state.issued_tokens() {
            assert!(!text.contains(&t), "a token is in {what}: {text}");
        }
        assert!(!text.contains(SECRET), "the client secret is in {what}");
    }
}

fn page(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[tokio::test]
async fn a_sign_in_test_reports_the_token_response_masked_and_keeps_no_grant() {
    let s = setup("authcode-ok").await;
    let r = s.start_test("user", "").await;
    assert_eq!(r.status, 202, "{}", page(&r));
    let v = r.json();
    let (id, login) = (
        v["test_id"].as_str().unwrap().to_string(),
        v["login_url"].as_str().unwrap().to_string(),
    );
    assert!(
        login.starts_with(&format!(
            "http://{}/oauth/start/",
            s.server.auth_addr.unwrap()
        )),
        "{login}"
    );
    assert_eq!(v["expires_in"], 600);
    assert_eq!(
        r.headers["location"].to_str().unwrap(),
        format!("/admin/profiles/user/test/{id}")
    );
    assert_eq!(r.headers["cache-control"], "no-store");

    // Admin auth as for every admin endpoint.
    let poll_url = s.admin(&format!("/admin/profiles/user/test/{id}"));
    assert_eq!(get(&poll_url, &[]).await.error_code(), "unauthorized");
    let r = send(
        Method::POST,
        &s.admin("/admin/profiles/user/test"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.error_code(), "unauthorized");

    let r = s.poll("user", &id).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(
        (v["state"].as_str(), &v["report"]),
        (Some("waiting"), &Value::Null)
    );

    // The operator signs in like an end user (PKCE and all); the page says the test finished.
    let to_idp = get(&login, &[]).await;
    assert_eq!(to_idp.status, 302);
    let idp = location(&to_idp);
    assert!(idp.contains("code_challenge_method=S256"), "{idp}");
    let to_callback = get(&idp, &[]).await;
    let callback = location(&to_callback);
    let done = get(&callback, &[]).await;
    assert_eq!(done.status, 200, "{}", page(&done));
    assert!(page(&done).contains("Test finished"), "{}", page(&done));
    assert!(page(&done).contains("succeeded"), "{}", page(&done));
    s.assert_no_secret(&page(&done), "the callback page");
    assert_eq!(s.code_exchanges(), 1);

    // The report: the machine grants' shape, every token masked.
    let r = s.poll("user", &id).await;
    let v = r.json();
    assert_eq!(v["state"], "succeeded", "{v}");
    let rep = &v["report"];
    assert_eq!(rep["ok"], true, "{rep}");
    assert_eq!(rep["profile"], "user");
    assert_eq!(rep["type"], "oauth2_authorization_code");
    assert_eq!(
        rep["token_url"],
        format!("http://{}/oauth/token", s.mock.addr)
    );
    assert_eq!(rep["status"], 200);
    assert!(rep["elapsed_ms"].is_u64());
    assert!(rep["error"].is_null());
    assert_eq!(rep["token"]["has_refresh_token"], true);
    let headers = rep["headers"].as_array().unwrap();
    assert!(
        headers.iter().any(|h| h[0] == "content-type"),
        "{headers:?}"
    );
    let body = rep["body"].as_str().unwrap();
    assert!(
        body.contains("\"access_token\": \"[redacted len="),
        "{body}"
    );
    assert!(
        body.contains("\"refresh_token\": \"[redacted len="),
        "{body}"
    );
    s.assert_no_secret(&page(&r), "the report");

    // No grant for anyone: nothing listed, the proxy still asks for authorization, and the
    // link and the callback are used up.
    assert_eq!(s.tokens().await, Vec::<Value>::new());
    let call = format!("http://{}/u/me", s.server.proxy_addr);
    let r = get(&call, &[("X-Authsidecar-User", "alice")]).await;
    assert_eq!(r.error_code(), "authorization_required");
    let r = get(&call, &[("X-Authsidecar-User", "")]).await;
    assert_ne!(r.status, 200);
    assert_eq!(get(&callback, &[]).await.status, 400);
    assert_eq!(get(&login, &[]).await.status, 400);
    assert_eq!(s.code_exchanges(), 1);
    assert_eq!(s.poll("user", &id).await.json()["state"], "succeeded");

    // A real user's sign-in still stores their grant and tells on_authorized, once: the test's
    // sign-in did not (its hook would have been sent first).
    let login = get(&call, &[("X-Authsidecar-User", "alice")]).await.json()["error"]["login_url"]
        .as_str()
        .unwrap()
        .to_string();
    let done = sign_in(&login).await;
    assert!(page(&done).contains("You are signed in"), "{}", page(&done));
    wait_until(
        "the on_authorized call",
        Duration::from_secs(10),
        || async { s.mock.echo_count() >= 1 },
    )
    .await;
    assert_eq!(s.mock.echo_count(), 1, "on_authorized was told of the test");
    let tokens = s.tokens().await;
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(tokens[0]["user"], "alice");
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_denied_or_failing_sign_in_test_fails_and_says_why() {
    let s = setup("authcode-fail").await;
    let faults = format!("http://{}/__mock/faults", s.mock.addr);
    let reset = format!("http://{}/__mock/reset", s.mock.addr);

    // The provider sends the operator back with an error: failed, no token request.
    send(
        Method::POST,
        &faults,
        &[],
        r#"{"authorize":"access_denied"}"#,
    )
    .await;
    let (id, login) = s.started("user").await;
    let done = sign_in(&login).await;
    assert_eq!(done.status, 200, "{}", page(&done));
    assert!(
        page(&done).contains("failed (authorization_denied)"),
        "{}",
        page(&done)
    );
    let v = s.poll("user", &id).await.json();
    assert_eq!(v["state"], "failed", "{v}");
    let rep = &v["report"];
    assert_eq!(rep["ok"], false);
    assert_eq!(rep["error"]["code"], "authorization_denied");
    assert!(
        rep["error"]["message"]
            .as_str()
            .unwrap()
            .contains("access_denied"),
        "{rep}"
    );
    assert!(rep["status"].is_null() && rep["body"] == "");
    assert_eq!(s.code_exchanges(), 0);
    send(Method::POST, &reset, &[], "").await;

    // An answer that names another issuer (RFC 9207): failed, and the code is not redeemed.
    let (id, login) = s.started("user").await;
    let to_idp = get(&login, &[]).await;
    let callback = location(&get(&location(&to_idp), &[]).await);
    assert!(
        callback.contains("&iss=") || callback.contains("?iss="),
        "{callback}"
    );
    let forged: String = callback
        .split('&')
        .map(|p| {
            if p.starts_with("iss=") {
                "iss=http%3A%2F%2Fidp.evil.example".to_string()
            } else {
                p.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("&");
    assert_ne!(forged, callback);
    let done = get(&forged, &[]).await;
    assert!(
        page(&done).contains("failed (callback_invalid)"),
        "{}",
        page(&done)
    );
    let v = s.poll("user", &id).await.json();
    assert_eq!(v["report"]["error"]["code"], "callback_invalid", "{v}");
    assert!(
        v["report"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("issuer mismatch"),
        "{v}"
    );
    assert_eq!(s.code_exchanges(), 0);

    // The token endpoint refuses the code, or answers garbage: failed with its answer, masked.
    for (fault, code, status, shown) in [
        ("invalid_grant", "idp_rejected", 400, "invalid_grant"),
        ("garbage", "idp_invalid_response", 200, ""),
    ] {
        send(
            Method::POST,
            &faults,
            &[],
            format!(r#"{{"token":"{fault}","times":1}}"#),
        )
        .await;
        let (id, login) = s.started("user").await;
        let done = sign_in(&login).await;
        assert!(page(&done).contains("Test finished"), "{}", page(&done));
        let r = s.poll("user", &id).await;
        let v = r.json();
        assert_eq!(v["state"], "failed", "{fault}: {v}");
        let rep = &v["report"];
        assert_eq!(rep["error"]["code"], code, "{fault}: {rep}");
        assert_eq!(rep["status"], status, "{fault}: {rep}");
        assert!(rep["body"].as_str().unwrap().contains(shown), "{rep}");
        s.assert_no_secret(&page(&r), "a failed report");
    }
    assert_eq!(s.tokens().await, Vec::<Value>::new(), "no grant stored");
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_sign_in_test_asks_for_the_tenant_and_user_fields_and_takes_context() {
    let s = setup("authcode-form").await;
    let (id, login) = s.started("pin").await;
    let form = get(&login, &[]).await;
    assert_eq!(form.status, 200);
    let html = page(&form);
    assert!(html.contains("name=\"tenant\""), "{html}");
    assert!(html.contains("name=\"f.account\""), "{html}");
    let r = send(
        Method::POST,
        &login,
        &[("content-type", "application/x-www-form-urlencoded")],
        "tenant=acme&f.account=ops",
    )
    .await;
    assert_eq!(r.status, 303, "{}", page(&r));
    let to_idp = location(&r);
    assert!(
        to_idp.starts_with(&format!("http://{}/acme/oauth/authorize?", s.mock.addr)),
        "{to_idp}"
    );
    let to_callback = get(&to_idp, &[]).await;
    let done = get(&location(&to_callback), &[]).await;
    assert!(page(&done).contains("succeeded"), "{}", page(&done));
    let rep = s.poll("pin", &id).await.json()["report"].clone();
    assert_eq!(rep["ok"], true, "{rep}");
    assert_eq!(
        rep["token_url"],
        format!("http://{}/acme/oauth/token", s.mock.addr)
    );
    // A tenant given to the admin call is not asked for; a bad one is refused.
    let r = s.start_test("pin", "?tenant=acme").await;
    assert_eq!(r.status, 202);
    let form = get(r.json()["login_url"].as_str().unwrap(), &[]).await;
    assert!(!page(&form).contains("name=\"tenant\""), "{}", page(&form));
    let r = s.start_test("pin", "?tenant=a%2Fb").await;
    assert_eq!(r.error_code(), "tenant_invalid");

    // `{{context.region}}` in the authorization URL: given as ?context.region=.
    let r = s.start_test("ctx", "").await;
    assert_eq!(r.error_code(), "context_value_invalid");
    let r = s.start_test("ctx", "?context.region=eu-1").await;
    assert_eq!(r.status, 202);
    let to_idp = get(r.json()["login_url"].as_str().unwrap(), &[]).await;
    assert!(
        location(&to_idp).contains("region=eu-1"),
        "{}",
        location(&to_idp)
    );
    assert_eq!(s.tokens().await, Vec::<Value>::new(), "no grant stored");
    s.server.shutdown().await;
}

#[tokio::test]
async fn unknown_tests_are_404_and_pending_tests_are_bounded() {
    let s = setup("authcode-refused").await;
    let r = s.poll("user", "no-such-test").await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (404, "test_not_found")
    );
    // A test is found only under its own profile.
    let (id, _) = s.started("user").await;
    assert_eq!(s.poll("ctx", &id).await.error_code(), "test_not_found");
    assert_eq!(s.poll("user", &id).await.status, 200);
    // Other profile types keep their Test, or have none.
    assert_eq!(s.start_test("plain", "").await.error_code(), "not_testable");
    assert_eq!(
        s.start_test("nope", "").await.error_code(),
        "profile_not_found"
    );
    // At most MAX_PENDING_TESTS at once (one is running already).
    let max = authsidecar::admin::MAX_PENDING_TESTS;
    for n in 1..max {
        let r = s.start_test("user", "").await;
        assert_eq!(r.status, 202, "test {n}: {}", page(&r));
    }
    let r = s.start_test("user", "").await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (429, "too_many_tests")
    );
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=600).contains(&retry), "{retry}");
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_three_legged_oauth1_profile_is_tested_by_a_sign_in_too() {
    let s = setup("authcode-oauth1").await;
    let exchanges = || {
        s.mock
            .counters()
            .oauth1_access_tokens
            .load(Ordering::SeqCst)
    };
    // Start page → the provider's authorize page (approving as alice, or declining) → callback.
    let callback = |login: String, answer: &'static str| async move {
        let to_provider = get(&login, &[]).await;
        assert_eq!(to_provider.status, 302, "{}", page(&to_provider));
        let approved = get(&format!("{}{answer}", location(&to_provider)), &[]).await;
        assert_eq!(approved.status, 302, "{}", page(&approved));
        get(&location(&approved), &[]).await
    };

    let (id, login) = s.started("tw").await;
    let done = callback(login, "&user=alice").await;
    assert!(page(&done).contains("succeeded"), "{}", page(&done));
    let r = s.poll("tw", &id).await;
    let v = r.json();
    assert_eq!(v["state"], "succeeded", "{v}");
    let rep = &v["report"];
    assert_eq!(rep["type"], "oauth1");
    assert_eq!(
        rep["token_url"],
        format!("http://{}/oauth1/access_token", s.mock.addr)
    );
    assert_eq!(rep["status"], 200);
    assert_eq!(rep["token"]["token_type"], "OAuth");
    // The token and its secret are masked in the provider's form answer.
    let body = rep["body"].as_str().unwrap();
    assert!(body.contains("oauth_token=[redacted len="), "{body}");
    assert!(body.contains("oauth_token_secret=[redacted len="), "{body}");
    s.assert_no_secret(&page(&r), "the report");
    assert_eq!(exchanges(), 1);

    // Declined at the provider: failed, and no exchange.
    let (id, login) = s.started("tw").await;
    let done = callback(login, "&user=alice&deny=1").await;
    assert!(
        page(&done).contains("failed (authorization_denied)"),
        "{}",
        page(&done)
    );
    let v = s.poll("tw", &id).await.json();
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["report"]["error"]["code"], "authorization_denied");
    assert_eq!(v["report"]["type"], "oauth1");
    assert_eq!(exchanges(), 1);
    assert_eq!(s.tokens().await, Vec::<Value>::new(), "no grant stored");
    s.server.shutdown().await;
}

/// Runs the built binary with `args` after `-c CONFIG`; stdout and stderr go to files in `dir`.
fn cli(s: &Setup, name: &str, args: &[&str]) -> (Proc, std::path::PathBuf, std::path::PathBuf) {
    let (out, err) = (
        s.dir.join(format!("{name}.out")),
        s.dir.join(format!("{name}.err")),
    );
    let p = Proc::spawn(
        "authsidecar",
        std::process::Command::new(env!("CARGO_BIN_EXE_authsidecar"))
            .arg("-c")
            .arg(&s.path)
            .args(args)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap()),
    );
    (p, out, err)
}

/// Waits (bounded) for the process to exit; its exit code.
async fn exit_code(p: &mut Proc, within: Duration) -> Option<i32> {
    wait_for("the command to exit", within, || {
        let status = p.try_wait().unwrap();
        async move { status.ok_or_else(|| "still running".to_string()) }
    })
    .await
    .code()
}

#[tokio::test]
async fn test_auth_command_prints_the_link_and_reports_the_sign_in() {
    let s = setup("authcode-cli").await;
    let admin = format!("http://{}", s.server.admin_addr);

    // Success: the link is printed, the operator signs in, the report follows; exit 0.
    let (mut p, out, err) = cli(&s, "ok", &["test-auth", "user", "--admin-url", &admin]);
    let link = printed_after(&mut p, &out, "  http://", Duration::from_secs(20)).await;
    let link = format!("http://{}", link.trim());
    assert!(link.contains("/oauth/start/"), "{link}");
    let done = sign_in(&link).await;
    assert!(page(&done).contains("succeeded"), "{}", page(&done));
    let code = exit_code(&mut p, Duration::from_secs(20)).await;
    let text = std::fs::read_to_string(&out).unwrap();
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert_eq!(code, Some(0), "{text}{stderr}");
    for want in [
        "Sign in to run the test",
        "Profile:   user (oauth2_authorization_code)",
        "Result:    Auth Test Succeeded",
        "== Headers ==",
        "== Response ==",
        "[redacted len=",
    ] {
        assert!(text.contains(want), "{want:?} not in {text}");
    }
    s.assert_no_secret(&format!("{text}{stderr}"), "test-auth output");

    // --json: the report alone on stdout (the link on stderr); a refused code exits 1.
    s.mock
        .state
        .set_token_fault(Some(authsidecar::mock::TokenFault::InvalidGrant), Some(1));
    let (mut p, out, err) = cli(
        &s,
        "json",
        &["test-auth", "user", "--admin-url", &admin, "--json"],
    );
    let link = printed_after(&mut p, &err, "  http://", Duration::from_secs(20)).await;
    sign_in(&format!("http://{}", link.trim())).await;
    assert_eq!(exit_code(&mut p, Duration::from_secs(20)).await, Some(1));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["status"].as_u64()),
        (Some(false), Some(400))
    );
    assert_eq!(v["error"]["code"], "idp_rejected", "{v}");

    // Nobody signs in within --wait: exit 1 saying so. (Time passing is the point here.)
    let (mut p, _, err) = cli(
        &s,
        "wait",
        &["test-auth", "user", "--admin-url", &admin, "--wait", "1"],
    );
    assert_eq!(exit_code(&mut p, Duration::from_secs(20)).await, Some(1));
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(stderr.contains("no sign-in within 1 s"), "{stderr}");

    // No sidecar there: exit 1 saying what it tried.
    let (mut p, _, err) = cli(
        &s,
        "down",
        &["test-auth", "user", "--admin-url", "http://127.0.0.1:1"],
    );
    assert_eq!(exit_code(&mut p, Duration::from_secs(20)).await, Some(1));
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(stderr.contains("did not answer"), "{stderr}");
    assert_eq!(s.tokens().await, Vec::<Value>::new(), "no grant stored");
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_tests_a_sign_in_profile_in_a_new_window() {
    let s = setup("authcode-console").await;
    let b = Browser::start(&s.dir).await;
    b.goto(&s.admin("/admin/")).await;
    b.type_into("#token", ADMIN_TOKEN).await;
    b.click("#sign-in").await;
    b.find("#profiles tbody tr[data-profile='user']").await;
    let console = b.window().await;
    // A three-legged oauth1 profile's Test is a sign-in too: enabled.
    assert!(b.exists("button.test[data-profile='tw']").await);
    assert!(!b.exists("button.test[data-profile='tw'][disabled]").await);

    // Test opens the sign-in in a new window; the mock approves at once, and the console shows
    // the result on the Headers and Response tabs.
    b.click("button.test[data-profile='user']").await;
    b.wait_text("#test-outcome", "Auth Test Succeeded").await;
    assert_eq!(s.code_exchanges(), 1);
    let summary = b.text("#test-summary").await;
    assert!(summary.contains("HTTP 200"), "{summary}");
    assert!(b.displayed("#pane-headers").await);
    let headers = b.text("#test-headers").await;
    assert!(headers.contains("content-type"), "{headers}");
    b.click("#tab-response").await;
    let body = b.wait_text("#test-body", "access_token").await;
    assert!(body.contains("[redacted len="), "{body}");
    s.assert_no_secret(&b.source().await, "the console");
    b.wait_text("#profiles tbody tr[data-profile='user']", "no user grants")
        .await;

    // The sign-in window says the test finished.
    let windows = b.windows().await;
    assert_eq!(windows.len(), 2, "{windows:?}");
    let popup = windows.iter().find(|w| **w != console).unwrap().clone();
    b.switch_to(&popup).await;
    b.wait_text("h1", "Test finished").await;
    s.assert_no_secret(&b.source().await, "the sign-in window");
    b.switch_to(&console).await;

    // A denied sign-in: the console says the test failed, and why.
    send(
        Method::POST,
        &format!("http://{}/__mock/faults", s.mock.addr),
        &[],
        r#"{"authorize":"access_denied"}"#,
    )
    .await;
    b.click("button.test[data-profile='user']").await;
    b.wait_text("#test-outcome", "Auth Test Failed").await;
    b.wait_text("#test-summary", "authorization_denied").await;
    assert_eq!(s.tokens().await, Vec::<Value>::new(), "no grant stored");
    b.quit().await;
    s.server.shutdown().await;
}
