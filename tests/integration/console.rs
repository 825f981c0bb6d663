//! The admin console: driven in a real headless Chromium (sign in, Test on a working and a failing
//! profile, the Headers and Response tabs, revoke, reload, sign out), and its session and CSRF rules
//! checked with plain HTTP (missing or wrong tokens, GET for state changes, cross-site posts).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use authsidecar::config::Config;
use authsidecar::mock::MockProvider;
use authsidecar::Server;
use bytes::Bytes;
use http::Method;

use crate::support::browser::Browser;
use crate::support::*;

/// A client secret that must never appear on a console page.
const BROKEN_SECRET: &str = "console-canary-secret-7f3a";

/// The auth listener on port 0: `public_url` with port 0 takes the port it was given.
fn config_text(mock: std::net::SocketAddr, extra: &str) -> String {
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"

[auth]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:0"

[[routes]]
prefix = "/api/"
upstream = "http://{mock}/protected/"
profiles = ["cc", "broken"]

[[routes]]
prefix = "/me/"
upstream = "http://{mock}/protected/"
profiles = ["user"]

[profiles.cc]
type = "oauth2_client_credentials"
identity_provider = "Mock IdP"
token_url = "http://{mock}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
scope = {{ scope = "demo.read" }}

[profiles.broken]
type = "oauth2_client_credentials"
identity_provider = "Mock IdP"
token_url = "http://{mock}/oauth/token"
client_id = "demo-client"
client_secret = "{BROKEN_SECRET}"

[profiles.user]
type = "oauth2_authorization_code"
identity_provider = "Mock IdP"
authorization_url = "http://{mock}/oauth/authorize"
token_url = "http://{mock}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
{extra}
"#
    )
}

struct Setup {
    mock: MockProvider,
    server: Server,
    path: PathBuf,
    dir: TempDir,
}

async fn setup(name: &str) -> Setup {
    let mock = MockProvider::start(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let dir = TempDir::new(name);
    let path = dir.join("sidecar.toml");
    std::fs::write(&path, config_text(mock.addr, "")).unwrap();
    let server = Server::start_with_path(Config::load(&path).unwrap(), Some(path.clone()))
        .await
        .unwrap();
    Setup {
        mock,
        server,
        path,
        dir,
    }
}

/// Where the test writes its screenshot: `AUTHSIDECAR_CONSOLE_SCREENSHOT` (the console picture in
/// docs/operations.md is made with `AUTHSIDECAR_CONSOLE_SCREENSHOT=docs/console.png`), else the test's
/// own folder.
fn screenshot_path(dir: &Path) -> PathBuf {
    match std::env::var_os("AUTHSIDECAR_CONSOLE_SCREENSHOT") {
        Some(p) => {
            let p = PathBuf::from(p);
            if p.is_absolute() {
                p
            } else {
                Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
            }
        }
        None => dir.join("console.png"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let s = setup("console").await;
    // Traffic first, so the cc profile has a cached token to show and revoke.
    let r = get(&format!("http://{}/api/x", s.server.proxy_addr), &[]).await;
    assert_eq!(r.status, 200);
    let admin = format!("http://{}", s.server.admin_addr);
    let b = Browser::start(&s.dir).await;

    // Sign in: a wrong token is refused on the page, the right one opens the console.
    b.goto(&format!("{admin}/admin/")).await;
    b.type_into("#token", "not-the-admin-token").await;
    b.click("#sign-in").await;
    b.wait_text("#login-error", "Wrong admin token").await;
    b.type_into("#token", ADMIN_TOKEN).await;
    b.click("#sign-in").await;
    b.find("#profiles tbody tr[data-profile='cc']").await;
    let cookies = b.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == "authsidecar_admin")
        .unwrap_or_else(|| panic!("no session cookie: {cookies:?}"));
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["sameSite"], "Strict");
    assert_eq!(session["path"], "/admin");
    assert_ne!(session["value"], ADMIN_TOKEN);
    // Script cannot read the session cookie.
    let js_cookies = b
        .script("arguments[0](document.cookie)")
        .await
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!js_cookies.contains("authsidecar_admin"), "{js_cookies}");

    // The profile list: type, identity provider, routes, callback link, token status.
    let row = b.text("#profiles tbody tr[data-profile='cc']").await;
    for want in [
        "oauth2_client_credentials",
        "Mock IdP",
        "/api/",
        "cached, expires in",
    ] {
        assert!(row.contains(want), "cc row lacks {want:?}: {row}");
    }
    let row = b.text("#profiles tbody tr[data-profile='user']").await;
    let callback = format!("http://{}/oauth/callback", s.server.auth_addr.unwrap());
    assert!(row.contains(&callback), "{row}");
    assert!(row.contains("no user grants"), "{row}");

    // Test on the working profile: success, the Headers tab first, then the Response tab.
    let before = s.mock.counters().client_credentials.load(Ordering::SeqCst);
    b.click("button.test[data-profile='cc']").await;
    b.wait_text("#test-outcome", "Auth Test Succeeded").await;
    assert_eq!(
        s.mock.counters().client_credentials.load(Ordering::SeqCst),
        before + 1,
        "Test made one token request"
    );
    let summary = b.text("#test-summary").await;
    assert!(summary.contains("HTTP 200"), "{summary}");
    let headers = b.text("#test-headers").await;
    assert!(headers.contains("content-type"), "{headers}");
    assert!(b.displayed("#pane-headers").await);
    assert!(!b.displayed("#pane-response").await);
    b.screenshot(&screenshot_path(&s.dir)).await;
    b.click("#tab-response").await;
    assert!(b.displayed("#pane-response").await);
    assert!(!b.displayed("#pane-headers").await);
    let body = b.wait_text("#test-body", "access_token").await;
    assert!(body.contains("[redacted len="), "{body}");
    for t in s.mock.state.issued_tokens() {
        assert!(!body.contains(&t), "a token is on the page");
        assert!(!b.source().await.contains(&t), "a token is in the page");
    }
    b.click("#tab-headers").await;
    assert!(b.displayed("#pane-headers").await);

    // Test on the failing profile: "Auth Test Failed" with the IdP's error, no secret shown.
    b.click("button.test[data-profile='broken']").await;
    b.wait_text("#test-outcome", "Auth Test Failed").await;
    let summary = b.wait_text("#test-summary", "invalid_client").await;
    assert!(summary.contains("HTTP 401"), "{summary}");
    b.click("#tab-response").await;
    let body = b.wait_text("#test-body", "invalid_client").await;
    assert!(!body.contains(BROKEN_SECRET));
    let page = b.source().await;
    assert!(!page.contains(BROKEN_SECRET), "the secret is in the page");
    assert!(
        !page.contains(ADMIN_TOKEN),
        "the admin token is in the page"
    );
    // An authorization-code profile's Test is a sign-in (tests/integration/authcode_test.rs).
    assert!(b.exists("button.test[data-profile='user']").await);
    assert!(!b.exists("button.test[data-profile='user'][disabled]").await);

    // Revoke the cached machine token from the token list.
    b.click("#tokens tbody tr[data-profile='cc'] button.revoke")
        .await;
    b.wait_text("#revoke-result", "Revoked cc").await;
    b.wait_text("#profiles tbody tr[data-profile='cc']", "none yet")
        .await;

    // Reload: an invalid file is refused with its key path; a valid one is applied.
    std::fs::write(&s.path, config_text(s.mock.addr, "colour = \"blue\"")).unwrap();
    b.click("#reload").await;
    b.wait_text("#reload-result", "Config not reloaded").await;
    b.wait_text("#reload-result", "profiles.user.colour: unknown key")
        .await;
    std::fs::write(&s.path, config_text(s.mock.addr, "")).unwrap();
    b.click("#reload").await;
    b.wait_text("#reload-result", "reloaded: 2 routes, 3 profiles")
        .await;

    // The metrics link is there; signing out ends the session.
    assert!(b.exists("a#metrics-link[href='/metrics']").await);
    b.click("#sign-out").await;
    b.find("#token").await;
    b.goto(&format!("{admin}/admin/")).await;
    b.find("#token").await;
    assert!(!b.exists("#profiles").await);
    b.quit().await;
    s.server.shutdown().await;
}

/// Signs in over plain HTTP; returns the cookie header value and the page's CSRF token.
async fn sign_in(admin: &str) -> (String, String) {
    let r = send(
        Method::POST,
        &format!("{admin}/admin/login"),
        &[("content-type", "application/x-www-form-urlencoded")],
        format!("token={ADMIN_TOKEN}"),
    )
    .await;
    assert_eq!(r.status, 303);
    assert_eq!(location(&r), "/admin/");
    let set = r.headers["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let page = get(&format!("{admin}/admin/"), &[("cookie", &cookie)]).await;
    assert_eq!(page.status, 200);
    let html = String::from_utf8_lossy(&page.body).to_string();
    let csrf = html
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no csrf token in {html}"))
        .to_string();
    (cookie, csrf)
}

#[tokio::test]
async fn console_sessions_refuse_missing_tokens_and_cross_site_calls() {
    let s = setup("console-http").await;
    let admin = format!("http://{}", s.server.admin_addr);
    let host = s.server.admin_addr.to_string();

    // Without a session the console shows the sign-in form; the page is locked down.
    let r = get(&format!("{admin}/admin/"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("id=\"token\""));
    let csp = r.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(r.headers["x-frame-options"], "DENY");
    assert_eq!(r.headers["cache-control"], "no-store");

    // Wrong or missing token at sign-in: no cookie.
    for body in ["token=wrong-token-wrong-token", "", "nothing=here"] {
        let r = send(
            Method::POST,
            &format!("{admin}/admin/login"),
            &[("content-type", "application/x-www-form-urlencoded")],
            body.to_string(),
        )
        .await;
        assert_eq!(r.status, 401, "{body}");
        assert!(r.headers.get("set-cookie").is_none());
    }
    // A sign-in posted from another site is refused even with the right token.
    let r = send(
        Method::POST,
        &format!("{admin}/admin/login"),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", "http://evil.example"),
        ],
        format!("token={ADMIN_TOKEN}"),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.headers.get("set-cookie").is_none());

    let (cookie, csrf) = sign_in(&admin).await;
    // A made-up session is no session.
    let r = get(
        &format!("{admin}/admin/profiles"),
        &[("cookie", "authsidecar_admin=0123456789abcdef")],
    )
    .await;
    assert_eq!(r.status, 401);
    // Reads work with the cookie alone.
    let r = get(&format!("{admin}/admin/profiles"), &[("cookie", &cookie)]).await;
    assert_eq!(r.status, 200);

    // State changes with the cookie need the CSRF token and the console's own origin.
    let reload = format!("{admin}/admin/reload");
    let before = s.mock.counters().client_credentials.load(Ordering::SeqCst);
    let cases: [(&[(&str, &str)], u16); 5] = [
        (&[("cookie", &cookie)], 403),
        (&[("cookie", &cookie), ("x-csrf-token", "forged")], 403),
        (
            &[
                ("cookie", &cookie),
                ("x-csrf-token", &csrf),
                ("origin", "http://evil.example"),
            ],
            403,
        ),
        (
            &[
                ("cookie", &cookie),
                ("x-csrf-token", &csrf),
                ("sec-fetch-site", "cross-site"),
            ],
            403,
        ),
        (
            &[
                ("cookie", &cookie),
                ("x-csrf-token", &csrf),
                ("origin", &format!("http://{host}")),
                ("sec-fetch-site", "same-origin"),
            ],
            200,
        ),
    ];
    for (headers, want) in cases {
        let r = send(Method::POST, &reload, headers, Bytes::new()).await;
        assert_eq!(r.status.as_u16(), want, "{headers:?}");
        if want == 403 {
            assert_eq!(r.json()["error"]["code"], "csrf_failed");
        }
    }
    for (headers, want) in [
        (vec![("cookie", cookie.as_str())], 403u16),
        (
            vec![("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())],
            200,
        ),
    ] {
        let r = send(
            Method::POST,
            &format!("{admin}/admin/profiles/cc/test"),
            &headers,
            Bytes::new(),
        )
        .await;
        assert_eq!(r.status.as_u16(), want);
    }
    assert_eq!(
        s.mock.counters().client_credentials.load(Ordering::SeqCst),
        before + 1,
        "only the call with the CSRF token reached the IdP"
    );
    // GET is never a state change.
    let r = get(&reload, &[("cookie", &cookie)]).await;
    assert_eq!(r.status, 405);
    let r = get(&format!("{admin}/admin/logout"), &[("cookie", &cookie)]).await;
    assert_eq!(r.status, 405);
    // Wrong bearer token, even with a good cookie beside it: 401.
    let r = get(
        &format!("{admin}/admin/profiles"),
        &[("cookie", &cookie), ("authorization", "Bearer wrong")],
    )
    .await;
    assert_eq!(r.status, 401);

    // Sign out: the cookie stops working.
    let r = send(
        Method::POST,
        &format!("{admin}/admin/logout"),
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.headers["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let r = get(&format!("{admin}/admin/profiles"), &[("cookie", &cookie)]).await;
    assert_eq!(r.status, 401);
    s.server.shutdown().await;
}
