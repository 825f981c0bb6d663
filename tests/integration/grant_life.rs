//! The life and death of tokens and end users' grants after the upstream refuses a token: a grant
//! revoked at the IdP gives a login link at once, a token is not replaced while it is young, a
//! refresh refused without an OAuth error body ends the grant, a failed refresh is logged, and the
//! replay counter is the one the metrics show. Each case runs on both request paths: a bodiless GET
//! (the HTTP/1 fast path) and a POST with a body (the general path).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authsidecar::config::{Config, Env};
use authsidecar::mock::{MockProvider, MockSettings, TokenFault};
use authsidecar::Server;
use http::Method;

use crate::support::*;

/// An authorization-code profile against the mock, memory store, `extra` added to the profile;
/// the auth listener on port 0 (the links carry the port it was given).
fn user_config(mock: &MockProvider, extra: &str) -> Config {
    let m = mock.addr;
    let text = format!(
        r#"
[auth]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:0"

[[routes]]
prefix = "/u/"
upstream = "http://{m}/protected/"
profiles = ["user"]

[profiles.user]
type = "oauth2_authorization_code"
authorization_url = "http://{m}/oauth/authorize"
token_url = "http://{m}/oauth/token"
issuer = "http://{m}"
client_id = "demo-client"
client_secret = "demo-secret"
{extra}
"#
    );
    Config::from_str_with_env(&with_listeners(&text), &Env::default()).unwrap()
}

struct Users {
    mock: MockProvider,
    server: Server,
}

impl Users {
    async fn start(extra: &str) -> Users {
        let mock = MockProvider::start_with(([127, 0, 0, 1], 0).into(), MockSettings::default())
            .await
            .unwrap();
        let server = Server::start(user_config(&mock, extra)).await.unwrap();
        Users { mock, server }
    }

    fn url(&self) -> String {
        format!("http://{}/u/me", self.server.proxy_addr)
    }

    /// A call for `user` on the fast path (bodiless GET) or the general path (POST with a body).
    async fn call(&self, user: &str, fast: bool) -> Resp {
        let h = [("X-Authsidecar-User", user), ("content-type", "text/plain")];
        if fast {
            get(&self.url(), &h[..1]).await
        } else {
            send(Method::POST, &self.url(), &h, "a small body").await
        }
    }

    /// `user` signs in through a login link; the mock issues the tokens to an IdP user of the same
    /// name (`login_hint`), so they can be revoked per user.
    async fn sign_in(&self, user: &str) {
        let r = self.call(user, true).await;
        assert_eq!(r.error_code(), "authorization_required");
        let login = r.json()["error"]["login_url"].as_str().unwrap().to_string();
        let to_idp = get(&login, &[]).await;
        assert_eq!(to_idp.status, 302);
        let authorize = format!("{}&login_hint={user}", location(&to_idp));
        let to_callback = get(&authorize, &[]).await;
        assert_eq!(to_callback.status, 302);
        assert_eq!(get(&location(&to_callback), &[]).await.status, 200);
        assert_eq!(self.call(user, true).await.status, 200);
    }

    fn refreshes(&self) -> u64 {
        self.mock.counters().refresh_token.load(Ordering::SeqCst)
    }
}

/// `authorization_required` with a new login link, as the expiry path answers it.
fn assert_login_link(r: &Resp, what: &str) {
    assert_eq!(
        r.status,
        401,
        "{what}: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.error_code(), "authorization_required", "{what}");
    let v = r.json();
    assert_eq!(v["error"]["profile"], "user", "{what}");
    assert!(
        v["error"]["login_url"]
            .as_str()
            .is_some_and(|u| u.contains("/oauth/start/")),
        "{what}: {v}"
    );
    assert_eq!(v["error"]["expires_in"], 600, "{what}");
}

/// Issue 16 (7), B8: the user removes the app, the IdP revokes the access and refresh tokens; the
/// very next call (its 401 makes a refresh that gets `invalid_grant`) answers with a login link,
/// on both paths, and the grant is gone.
#[tokio::test]
async fn a_grant_revoked_at_the_idp_gives_a_login_link_on_the_first_call() {
    let u = Users::start("reauth_min_token_age = \"0s\"").await;
    for (user, fast) in [("alice", true), ("bob", false)] {
        u.sign_in(user).await;
        assert!(u.mock.state.revoke_user(user) >= 2);
        let refreshes = u.refreshes();
        let r = u.call(user, fast).await;
        assert_login_link(&r, user);
        assert_eq!(u.refreshes(), refreshes + 1, "{user}: one refresh, refused");
        // The grant was deleted: the next call gets a link without asking the IdP again.
        assert_login_link(&u.call(user, fast).await, user);
        assert_eq!(u.refreshes(), refreshes + 1, "{user}: no further refresh");
    }
    u.server.shutdown().await;
}

/// Issue 16 (9c): a refresh answered 400 or 401 with no OAuth error body (how some IdPs refuse a
/// revoked or reused refresh token) ends the grant like `invalid_grant`: a login link, not 502
/// `idp_rejected` on every call. Both paths.
#[tokio::test]
async fn a_refresh_refused_without_an_oauth_error_ends_the_grant() {
    let u = Users::start("reauth_min_token_age = \"0s\"").await;
    for (user, fast, status) in [("carol", true, 400), ("dave", false, 401)] {
        u.sign_in(user).await;
        u.mock.state.reject_resource(1);
        u.mock
            .state
            .set_token_fault(Some(TokenFault::Bare(status)), Some(1));
        let r = u.call(user, fast).await;
        assert_login_link(&r, &format!("{user}, bare {status}"));
        assert_login_link(&u.call(user, fast).await, user);
    }
    u.server.shutdown().await;
}

/// Issue 16 (9c), the other side: a bare 400 to a client-credentials request is still the IdP
/// refusing the client, 502 `idp_rejected`.
#[tokio::test]
async fn a_bare_400_to_client_credentials_stays_idp_rejected() {
    let h = Harness::start(
        r#"
[[routes]]
prefix = "/cc/"
upstream = "http://{echo}/protected/"
profiles = ["cc"]

[profiles.cc]
type = "oauth2_client_credentials"
token_url = "http://{echo}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
"#,
    )
    .await;
    h.echo
        .state
        .set_token_fault(Some(TokenFault::Bare(400)), Some(1));
    let r = get(&h.url("/cc/x"), &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (502, "idp_rejected")
    );
}

const CC_ALWAYS_401: &str = r#"
[[routes]]
prefix = "/cc/"
upstream = "http://{echo}/protected/"
profiles = ["cc"]

[profiles.cc]
type = "oauth2_client_credentials"
token_url = "http://{echo}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
reauth_min_token_age = "1s"
"#;

/// Issue 16 (9b): an upstream that refuses every token. Concurrent 401s for one token (old enough
/// to be replaced) make one token request; after that, 30 quick 401s for the new, young token make
/// none: each passes the upstream's 401 through. Both paths.
#[tokio::test]
async fn quick_401s_for_a_young_token_make_no_token_request() {
    let h = Harness::start(CC_ALWAYS_401).await;
    let always_401 = [("X-Mock-Status", "401"), ("content-type", "text/plain")];
    assert_eq!(get(&h.url("/cc/warm"), &[]).await.status, 200);
    assert_eq!(h.echo.token_requests(), 1);
    // Past the minimum age (time passing is the point): the first 401s may replace the token,
    // once for all of them.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut calls = Vec::new();
    for i in 0..20 {
        let url = h.url("/cc/x");
        calls.push(tokio::spawn(async move {
            if i % 2 == 0 {
                get(&url, &always_401[..1]).await.status
            } else {
                send(Method::POST, &url, &always_401, "body").await.status
            }
        }));
    }
    for c in calls {
        assert_eq!(c.await.unwrap(), 401);
    }
    assert_eq!(h.echo.token_requests(), 2, "one new token for all of them");
    let replays = h.server.proxy_stats().replays.load(Ordering::SeqCst);
    assert!((1..=20).contains(&replays), "{replays}");
    // The new token is young: 30 quick refusals pass through without a token request.
    for i in 0..30 {
        let r = if i % 2 == 0 {
            get(&h.url("/cc/x"), &always_401[..1]).await
        } else {
            send(Method::POST, &h.url("/cc/x"), &always_401, "body").await
        };
        assert_eq!(r.status, 401);
        assert!(
            r.headers.get("x-authsidecar-error").is_none(),
            "the upstream's own 401"
        );
    }
    assert_eq!(
        h.echo.token_requests(),
        2,
        "no token request for a young token"
    );
    assert_eq!(
        h.server.proxy_stats().replays.load(Ordering::SeqCst),
        replays
    );
    assert!(
        h.server
            .proxy_stats()
            .reauth_too_young
            .load(Ordering::SeqCst)
            >= 30
    );
}

/// Issue 16 (9a): the replay count is exported once, as `authsidecar_upstream_replays_total`, and
/// counts; no second, dead `replays` counter.
#[tokio::test]
async fn the_metrics_export_one_replay_counter_that_counts() {
    let h = Harness::start(&CC_ALWAYS_401.replace("\"1s\"", "\"0s\"")).await;
    assert_eq!(get(&h.url("/cc/warm"), &[]).await.status, 200);
    h.echo.state.reject_resource(1);
    assert_eq!(get(&h.url("/cc/x"), &[]).await.status, 200);
    h.echo.state.reject_resource(1);
    let r = send(
        Method::POST,
        &h.url("/cc/x"),
        &[("content-type", "text/plain")],
        "b",
    )
    .await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&get(&h.admin_url("/metrics"), &[]).await.body).to_string();
    let replay_lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("replays"))
        .collect();
    assert!(
        replay_lines.contains(&"authsidecar_upstream_replays_total 2"),
        "{replay_lines:?}"
    );
    assert!(
        !text.contains("authsidecar_replays"),
        "a second replay counter: {replay_lines:?}"
    );
}

/// What the grants module logs at WARN, from every thread (the proxy's workers run their own
/// runtimes): a process-wide subscriber, installed once for this test binary. Tests pick their
/// lines by user names no other test uses.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn global() -> Captured {
        static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Captured::default();
            let writer = logs.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_env_filter(tracing_subscriber::EnvFilter::new(
                    "authsidecar::oauth::grants=warn",
                ))
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global tracing subscriber in the test binary");
            logs
        })
        .clone()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
    }
}

/// Issue 16 (9d): a user's refresh that fails logs one WARN line with the profile, the user and the
/// reason, whatever the reason (an IdP 500 keeps the grant; `invalid_grant` deletes it), and never a
/// token.
#[tokio::test]
async fn a_failed_refresh_logs_one_warning_with_profile_user_and_reason() {
    let logs = Captured::global();
    let u = Users::start("reauth_min_token_age = \"0s\"").await;
    u.sign_in("erin-9d").await;
    u.sign_in("frank-9d").await;
    let tokens = u.mock.state.issued_tokens();
    assert!(tokens.len() >= 4);

    // erin: the IdP fails (500) on the refresh after a 401; the grant is kept.
    u.mock.state.reject_resource(1);
    u.mock
        .state
        .set_token_fault(Some(TokenFault::ServerError), None);
    let r = u.call("erin-9d", true).await;
    assert_eq!(r.status, 401, "the upstream's own answer");
    u.mock.state.set_token_fault(None, None);
    // frank: the user removed the app; the refresh gets invalid_grant.
    u.mock.state.revoke_user("frank-9d");
    assert_login_link(&u.call("frank-9d", false).await, "frank-9d");

    let text = logs.text();
    let warns: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("user=erin-9d") || l.contains("user=frank-9d"))
        .collect();
    assert_eq!(warns.len(), 2, "{warns:#?} in {text}");
    let (erin, frank) = (&warns[0], &warns[1]);
    for (line, user) in [(erin, "erin-9d"), (frank, "frank-9d")] {
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains("profile=user"), "{line}");
        assert!(line.contains(&format!("user={user}")), "{line}");
        assert!(line.contains("reason="), "{line}");
    }
    assert!(
        erin.contains("refresh failed") && erin.contains("500") && erin.contains("kept"),
        "{erin}"
    );
    assert!(
        frank.contains("invalid_grant") && frank.contains("deleted"),
        "{frank}"
    );
    for t in &tokens {
        assert!(!text.contains(t.as_str()), "a token in the log");
    }
    u.server.shutdown().await;
}
