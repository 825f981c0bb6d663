//! End-user authorization against the mock provider, driven by an HTTP client that follows the
//! redirects by hand (no browser needed).

use http::Method;

use authsidecar::config::{Config, Env};
use authsidecar::mock::MockProvider;
use authsidecar::Server;

use crate::support::*;

/// Every config here puts the auth listener on port 0 with `public_url = "http://127.0.0.1:0"`:
/// the links carry the port it was given (`server.auth_addr`).
struct Setup {
    echo: MockProvider,
    store: std::path::PathBuf,
    key: String,
    _dir: TempDir,
}

impl Setup {
    async fn new() -> Setup {
        Self::with_lifetime(std::time::Duration::from_secs(3600)).await
    }

    async fn with_lifetime(lifetime: std::time::Duration) -> Setup {
        let dir = TempDir::new("user");
        Setup {
            echo: MockProvider::start_with(
                ([127, 0, 0, 1], 0).into(),
                authsidecar::mock::MockSettings {
                    token_lifetime: lifetime,
                    ..Default::default()
                },
            )
            .await
            .unwrap(),
            store: dir.join("grants.db"),
            key: authsidecar::store::crypto::generate_key(),
            _dir: dir,
        }
    }

    fn config(&self) -> Config {
        Config::from_str_with_env(&with_listeners(&self.config_text()), &Env::default()).unwrap()
    }

    fn config_text(&self) -> String {
        self.config_text_with_store(&format!(
            "kind = \"file\"\npath = \"{}\"\nkey = \"{}\"",
            self.store.display(),
            self.key
        ))
    }

    /// The same config with another `[store]` table's keys.
    fn config_text_with_store(&self, store: &str) -> String {
        let echo = self.echo.addr;
        format!(
            r#"
[auth]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:0"

[store]
{store}

[[routes]]
prefix = "/u/"
upstream = "http://{echo}/protected/"
profiles = ["user"]

[profiles.user]
type = "oauth2_authorization_code"
authorization_url = "http://{echo}/oauth/authorize"
token_url = "http://{echo}/oauth/token"
issuer = "http://{echo}"
revocation_url = "http://{echo}/oauth/revoke"
client_id = "demo-client"
client_secret = "demo-secret"
scope = {{ scope = "read" }}
reauth_min_token_age = "0s"
"#
        )
    }
}

#[tokio::test]
async fn a_user_authorizes_once_and_calls_with_their_own_token() {
    let s = Setup::new().await;
    let server = Server::start(s.config()).await.unwrap();
    let url = format!("http://{}/u/me", server.proxy_addr);

    let r = get(&url, &[]).await;
    assert_eq!(r.error_code(), "user_required");

    let r = get(&url, &[("X-Authsidecar-User", "alice")]).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (401, "authorization_required")
    );
    let v = r.json();
    let login = v["error"]["login_url"].as_str().unwrap().to_string();
    assert!(login.starts_with(&format!(
        "http://{}/oauth/start/",
        server.auth_addr.unwrap()
    )));
    assert_eq!(v["error"]["expires_in"], 600);
    assert_eq!(s.echo.echo_count(), 0);

    let done = sign_in(&login).await;
    assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));
    assert!(String::from_utf8_lossy(&done.body).contains("return to the conversation"));

    let r = get(&url, &[("X-Authsidecar-User", "alice")]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.echoed("authorization").len(), 1);
    // Another user is not authorized by alice's grant.
    let r = get(&url, &[("X-Authsidecar-User", "bob")]).await;
    assert_eq!(r.error_code(), "authorization_required");
    // The grant survives a restart.
    assert!(server.shutdown().await);
    let server = Server::start(s.config()).await.unwrap();
    let r = get(
        &format!("http://{}/u/me", server.proxy_addr),
        &[("X-Authsidecar-User", "alice")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    server.shutdown().await;
    let raw = std::fs::read(&s.store).unwrap();
    for t in s.echo.state.issued_tokens() {
        assert!(
            !raw.windows(t.len()).any(|w| w == t.as_bytes()),
            "token in plaintext"
        );
    }
}

#[tokio::test]
async fn state_is_single_use_and_bad_callbacks_make_no_token_request() {
    let s = Setup::new().await;
    let server = Server::start(s.config()).await.unwrap();
    let url = format!("http://{}/u/me", server.proxy_addr);
    let cb = format!("http://{}/oauth/callback", server.auth_addr.unwrap());
    let counters = || {
        s.echo
            .counters()
            .authorization_code
            .load(std::sync::atomic::Ordering::SeqCst)
    };

    // Missing and forged state.
    assert_eq!(get(&format!("{cb}?code=x"), &[]).await.status, 400);
    assert_eq!(
        get(&format!("{cb}?code=x&state=forged"), &[]).await.status,
        400
    );
    assert_eq!(counters(), 0);

    // A callback replayed after success.
    let login = get(&url, &[("X-Authsidecar-User", "carol")]).await.json()["error"]["login_url"]
        .as_str()
        .unwrap()
        .to_string();
    let to_idp = get(&login, &[]).await;
    let to_callback = get(&location(&to_idp), &[]).await;
    let callback = location(&to_callback);
    assert_eq!(get(&callback, &[]).await.status, 200);
    assert_eq!(counters(), 1);
    let replay = get(&callback, &[]).await;
    assert_eq!(replay.status, 400);
    assert_eq!(counters(), 1, "a replayed callback makes no token request");

    // The IdP says no: a friendly page, the description escaped.
    send(
        Method::POST,
        &format!("http://{}/__mock/faults", s.echo.addr),
        &[],
        r#"{"authorize":"access_denied"}"#,
    )
    .await;
    let login = get(&url, &[("X-Authsidecar-User", "dave")]).await.json()["error"]["login_url"]
        .as_str()
        .unwrap()
        .to_string();
    let denied = sign_in(&login).await;
    assert_eq!(denied.status, 400);
    let body = String::from_utf8_lossy(&denied.body).to_string();
    assert!(
        body.contains("access_denied") && body.contains("&lt;no&gt;") && !body.contains("<no>"),
        "{body}"
    );
    assert_eq!(counters(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn admin_lists_grants_without_tokens_and_revokes_them() {
    let s = Setup::new().await;
    let server = Server::start(s.config()).await.unwrap();
    let url = format!("http://{}/u/me", server.proxy_addr);
    let login = get(&url, &[("X-Authsidecar-User", "erin")]).await.json()["error"]["login_url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(sign_in(&login).await.status, 200);
    assert_eq!(
        get(&url, &[("X-Authsidecar-User", "erin")]).await.status,
        200
    );

    let auth = format!("Bearer {ADMIN_TOKEN}");
    let admin = format!("http://{}", server.admin_addr);
    let r = get(
        &format!("{admin}/admin/tokens"),
        &[("Authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body).to_string();
    for t in s.echo.state.issued_tokens() {
        assert!(!text.contains(&t), "token in admin output");
    }
    let v = r.json();
    assert!(
        v["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["user"] == "erin"
                && t["source"] == "store"
                && t["has_refresh_token"] == true),
        "{v}"
    );
    assert_eq!(get(&format!("{admin}/admin/tokens"), &[]).await.status, 401);

    let r = send(
        Method::DELETE,
        &format!("{admin}/admin/tokens/user?user=erin"),
        &[("Authorization", &auth)],
        "",
    )
    .await;
    let v = r.json();
    assert_eq!(v["grant_deleted"], true, "{v}");
    assert_eq!(v["idp_revocation"], true, "{v}");
    assert_eq!(
        s.echo
            .counters()
            .revocations
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let r = get(&url, &[("X-Authsidecar-User", "erin")]).await;
    assert_eq!(r.error_code(), "authorization_required");
    server.shutdown().await;
}

#[tokio::test]
async fn a_rotated_refresh_token_is_used_once_under_200_concurrent_requests() {
    use std::sync::atomic::Ordering;
    let s = Setup::with_lifetime(std::time::Duration::from_secs(3)).await;
    let server = Server::start(s.config()).await.unwrap();
    let url = format!("http://{}/u/me", server.proxy_addr);
    let login = get(&url, &[("X-Authsidecar-User", "fay")]).await.json()["error"]["login_url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(sign_in(&login).await.status, 200);
    // Let the 3-second access token expire (time passing is the point), then 200 requests at once.
    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            get(&url, &[("X-Authsidecar-User", "fay")])
                .await
                .status
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let c = s.echo.counters();
    assert_eq!(
        c.refresh_token.load(Ordering::SeqCst),
        1,
        "exactly one refresh"
    );
    assert_eq!(c.token_errors.load(Ordering::SeqCst), 0, "no invalid_grant");
    server.shutdown().await;
}

#[tokio::test]
async fn an_expired_login_link_is_refused() {
    let s = Setup::new().await;
    let mut config = s.config();
    if let Some(a) = config.auth.as_mut() {
        a.ticket_ttl = std::time::Duration::from_secs(1);
    }
    let server = Server::start(config).await.unwrap();
    let url = format!("http://{}/u/me", server.proxy_addr);
    let login = get(&url, &[("X-Authsidecar-User", "gus")]).await.json()["error"]["login_url"]
        .as_str()
        .unwrap()
        .to_string();
    // A second login gets as far as the IdP's answer; its state then expires too.
    let other = get(&url, &[("X-Authsidecar-User", "hal")]).await.json()["error"]["login_url"]
        .as_str()
        .unwrap()
        .to_string();
    let to_idp = get(&other, &[]).await;
    let callback = location(&get(&location(&to_idp), &[]).await);
    let authorized = s
        .echo
        .counters()
        .authorize
        .load(std::sync::atomic::Ordering::SeqCst);
    // Let the 1-second ticket and state expire (time passing is the point).
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = get(&login, &[]).await;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("expired"));
    let r = get(&callback, &[]).await;
    assert_eq!(r.status, 400, "an expired state is refused");
    assert_eq!(
        s.echo
            .counters()
            .authorization_code
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no token request for an expired state"
    );
    assert_eq!(
        s.echo
            .counters()
            .authorize
            .load(std::sync::atomic::Ordering::SeqCst),
        authorized,
        "an expired link never reaches the IdP"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_upstream_401_refreshes_the_users_token_and_replays() {
    use std::sync::atomic::Ordering;
    let s = Setup::new().await;
    let server = Server::start(s.config()).await.unwrap();
    let url = format!("http://{}/u/me", server.proxy_addr);
    let login = get(&url, &[("X-Authsidecar-User", "hal")]).await.json()["error"]["login_url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(sign_in(&login).await.status, 200);
    let first = get(&url, &[("X-Authsidecar-User", "hal")]).await;
    assert_eq!(first.status, 200);
    s.echo.state.reject_resource(1);
    let r = get(&url, &[("X-Authsidecar-User", "hal")]).await;
    assert_eq!(r.status, 200, "refreshed and replayed");
    assert_ne!(
        r.echoed("authorization"),
        first.echoed("authorization"),
        "a new token"
    );
    assert_eq!(s.echo.counters().refresh_token.load(Ordering::SeqCst), 1);
    server.shutdown().await;
}

/// A profile that asks the end user for a tenant and two user fields on the start page.
fn form_config(s: &Setup, extra: &str) -> Config {
    let echo = s.echo.addr;
    let text = format!(
        r#"
[auth]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:0"

[[routes]]
prefix = "/p/"
upstream = "http://{echo}/protected/"
profiles = ["pin"]

[profiles.pin]
type = "oauth2_authorization_code"
identity_provider = "Mock <IdP>"
tenancy = true
authorization_url = "http://{echo}/{{tenant}}/oauth/authorize"
token_url = "http://{echo}/{{tenant}}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
{extra}
[[profiles.pin.user_fields]]
key = "pin"
label = "PIN"
secret = true
pattern = "[0-9]{{4,8}}"
[[profiles.pin.user_fields]]
key = "account"
label = "Account"
[[profiles.pin.fields]]
in = "header"
key = "Authorization"
value = "Bearer {{{{access_token}}}}"
[[profiles.pin.fields]]
in = "header"
key = "X-Pin"
value = "{{{{user_field.pin}}}}"
[[profiles.pin.fields]]
in = "header"
key = "X-Account"
value = "{{{{user_field.account}}}}"
[[profiles.pin.fields]]
in = "header"
key = "X-Tenant"
value = "{{{{tenant}}}}"
"#,
    );
    Config::from_str_with_env(&with_listeners(&text), &Env::default()).unwrap()
}

async fn post_form(url: &str, form: &str) -> Resp {
    send(
        Method::POST,
        url,
        &[("content-type", "application/x-www-form-urlencoded")],
        form.to_string(),
    )
    .await
}

#[tokio::test]
async fn the_start_page_asks_for_tenant_and_user_fields_and_checks_them() {
    let s = Setup::new().await;
    let server = Server::start(form_config(&s, "")).await.unwrap();
    let url = format!("http://{}/p/me", server.proxy_addr);
    let alice = [("X-Authsidecar-User", "alice")];
    let authorize = || {
        s.echo
            .state
            .counters
            .authorize
            .load(std::sync::atomic::Ordering::SeqCst)
    };

    // No tenant in the request: the user will be asked for one.
    let r = get(&url, &alice).await;
    assert_eq!(r.error_code(), "authorization_required");
    let login = r.json()["error"]["login_url"].as_str().unwrap().to_string();
    let form = get(&login, &[]).await;
    assert_eq!(form.status, 200);
    let html = String::from_utf8_lossy(&form.body).to_string();
    assert!(html.contains("name=\"tenant\""), "{html}");
    assert!(html.contains("type=\"password\" name=\"f.pin\""), "{html}");
    assert!(html.contains("type=\"text\" name=\"f.account\""), "{html}");
    assert!(html.contains("Sign in with Mock &lt;IdP&gt;"), "{html}");
    assert!(form.headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("form-action 'self'"));

    // Bad answers: a 400 form naming the field, never echoing a secret, nothing sent to the IdP.
    let bad = [
        ("tenant=acme%2Fx&f.pin=1234&f.account=a", "Tenant:"),
        ("tenant=a%40b&f.pin=1234&f.account=a", "Tenant:"),
        ("tenant=acme%0D%0Ax&f.pin=1234&f.account=a", "Tenant:"),
        (
            "tenant=acme&f.pin=12%0D%0A34&f.account=a",
            "PIN: must not contain line breaks",
        ),
        (
            "tenant=acme&f.pin=12ab&f.account=a",
            "PIN: does not have the expected form",
        ),
        (
            "tenant=acme&f.pin=98765&f.account=x%0Ay",
            "Account: must not contain line breaks",
        ),
        ("tenant=acme&f.pin=98765", "Account: required"),
    ];
    let long_pin = format!("tenant=acme&f.pin={}&f.account=a", "1".repeat(1024));
    let bad: Vec<(&str, &str)> = bad
        .into_iter()
        .chain([(long_pin.as_str(), "PIN: at most 256 characters")])
        .collect();
    for (body, msg) in bad {
        let r = post_form(&login, body).await;
        let page = String::from_utf8_lossy(&r.body).to_string();
        assert_eq!(r.status, 400, "{body}: {page}");
        assert!(page.contains(msg), "{body}: {page}");
        assert!(!page.contains("98765"), "secret shown back: {page}");
        assert!(r.headers.get("location").is_none());
    }
    assert_eq!(authorize(), 0);

    // Good answers: '/' and '@' in a plain field are kept literally; the tenant goes into the
    // IdP's URLs, lowercased.
    let r = post_form(
        &login,
        "tenant=Acme&f.pin=4711&f.account=ops%2Fbots%40acme+%22q%22%26x%3D1",
    )
    .await;
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    let to_idp = location(&r);
    assert!(
        to_idp.starts_with(&format!("http://{}/acme/oauth/authorize?", s.echo.addr)),
        "{to_idp}"
    );
    let to_callback = get(&to_idp, &[]).await;
    let done = get(&location(&to_callback), &[]).await;
    assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));

    // From now on alice's calls carry her token, her answers and her tenant.
    let r = get(&url, &alice).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.echoed("x-pin"), ["4711"]);
    assert_eq!(r.echoed("x-account"), ["ops/bots@acme \"q\"&x=1"]);
    assert_eq!(r.echoed("x-tenant"), ["acme"]);
    // The login link is used up once the flow completed.
    let again = get(&login, &[]).await;
    assert_eq!(again.status, 400);
    server.shutdown().await;
}

/// A one-shot HTTP listener: returns its address and the body of the first request it gets.
async fn one_request_listener() -> (std::net::SocketAddr, tokio::sync::oneshot::Receiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut c, _) = l.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = c.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = declared_length(&text[..end]);
                if buf.len() >= end + 4 + len {
                    let head = text[..end].lines().next().unwrap_or("").to_string();
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                    let _ = c
                        .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                        .await;
                    let _ = tx.send(format!("{head}\n{body}"));
                    break;
                }
            }
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn on_authorized_is_posted_and_context_values_reach_the_authorization_url() {
    let s = Setup::new().await;
    let (hook, got) = one_request_listener().await;
    let echo = s.echo.addr;
    let text = format!(
        r#"
[auth]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:0"

[[routes]]
prefix = "/c/"
upstream = "http://{echo}/protected/"
profiles = ["ctx"]

[profiles.ctx]
type = "oauth2_authorization_code"
authorization_url = "http://{echo}/oauth/authorize?org={{{{context.org}}}}"
token_url = "http://{echo}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
on_authorized = "http://{hook}/resume"
"#,
    );
    let config = Config::from_str_with_env(&with_listeners(&text), &Env::default()).unwrap();
    let server = Server::start(config).await.unwrap();
    let url = format!("http://{}/c/me", server.proxy_addr);

    // The context value the authorization URL needs is required before a link is made.
    let r = get(&url, &[("X-Authsidecar-User", "bob")]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "context_value_invalid");

    let r = get(
        &url,
        &[
            ("X-Authsidecar-User", "bob"),
            ("X-Authsidecar-Context-Org", "acme & co/eu"),
        ],
    )
    .await;
    assert_eq!(r.error_code(), "authorization_required");
    let login = r.json()["error"]["login_url"].as_str().unwrap().to_string();
    let to_idp = get(&login, &[]).await;
    assert_eq!(to_idp.status, 302);
    let idp_url = location(&to_idp);
    // Percent-encoded as one value: it cannot add parameters or change the path.
    assert!(
        idp_url.starts_with(&format!(
            "http://{echo}/oauth/authorize?org=acme%20%26%20co%2Feu&response_type=code"
        )),
        "{idp_url}"
    );
    let to_callback = get(&idp_url, &[]).await;
    let done = get(&location(&to_callback), &[]).await;
    assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));

    let hook_request = tokio::time::timeout(std::time::Duration::from_secs(10), got)
        .await
        .expect("on_authorized was not called")
        .unwrap();
    let (head, body) = hook_request.split_once('\n').unwrap();
    assert_eq!(head, "POST /resume HTTP/1.1");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"profile": "ctx", "user": "bob", "tenant": null})
    );
    let r = get(&url, &[("X-Authsidecar-User", "bob")]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    server.shutdown().await;
}

/// Per-user basic, api_key and password profiles: the start page collects the credentials.
fn per_user_config(s: &Setup) -> Config {
    let echo = s.echo.addr;
    let text = format!(
        r#"
[auth]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:0"

[store]
kind = "file"
path = "{store}"
key = "{key}"

[[routes]]
prefix = "/b/"
upstream = "http://{echo}/echo/"
profiles = ["b"]

[[routes]]
prefix = "/k/"
upstream = "http://{echo}/echo/"
profiles = ["k"]

[[routes]]
prefix = "/pw/"
upstream = "http://{echo}/protected/"
profiles = ["pw"]

[profiles.b]
type = "basic"
per_user = true

[profiles.k]
type = "api_key"
per_user = true
[[profiles.k.fields]]
in = "header"
key = "X-Api-Key"
value = "{{{{api_key}}}}"

[profiles.pw]
type = "oauth2_password"
per_user = true
token_url = "http://{echo}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
"#,
        store = s.store.display(),
        key = s.key
    );
    Config::from_str_with_env(&with_listeners(&text), &Env::default()).unwrap()
}

async fn login_link(url: &str, user: &str) -> String {
    let r = get(url, &[("X-Authsidecar-User", user)]).await;
    assert_eq!(r.error_code(), "authorization_required");
    r.json()["error"]["login_url"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn per_user_basic_api_key_and_password_profiles_collect_credentials_on_the_start_page() {
    let s = Setup::new().await;
    let server = Server::start(per_user_config(&s)).await.unwrap();
    let base = format!("http://{}", server.proxy_addr);
    let secret_password = "p@ss word/with:colon";

    // basic: username and password, kept encrypted, sent as the user's Basic credentials.
    let login = login_link(&format!("{base}/b/x"), "alice").await;
    let form = get(&login, &[]).await;
    let html = String::from_utf8_lossy(&form.body).to_string();
    assert!(html.contains("type=\"text\" name=\"username\""), "{html}");
    assert!(
        html.contains("type=\"password\" name=\"password\""),
        "{html}"
    );
    let r = post_form(&login, "username=al%3Aice&password=x").await;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("Username: must not contain &#39;:&#39;"));
    let r = post_form(&login, "username=alice&password=a%0D%0Ab").await;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("Password: must not contain line breaks"));
    let r = post_form(
        &login,
        "username=alice%40corp%2Fops&password=p%40ss+word%2Fwith%3Acolon",
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = get(&format!("{base}/b/x"), &[("X-Authsidecar-User", "alice")]).await;
    assert_eq!(r.status, 200);
    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD
        .encode(format!("alice@corp/ops:{secret_password}"));
    assert_eq!(r.echoed("authorization"), [format!("Basic {expected}")]);
    // Another user has entered nothing.
    let r = get(&format!("{base}/b/x"), &[("X-Authsidecar-User", "bob")]).await;
    assert_eq!(r.error_code(), "authorization_required");

    // api_key: the key goes where the profile says.
    let login = login_link(&format!("{base}/k/x"), "alice").await;
    let html = String::from_utf8_lossy(&get(&login, &[]).await.body).to_string();
    assert!(
        html.contains("type=\"password\" name=\"api_key\""),
        "{html}"
    );
    let r = post_form(&login, "api_key=key-of-alice-0123456789").await;
    assert_eq!(r.status, 200);
    let r = get(&format!("{base}/k/x"), &[("X-Authsidecar-User", "alice")]).await;
    assert_eq!(r.echoed("x-api-key"), ["key-of-alice-0123456789"]);
    // A link asked for by the bot before the user's first call works the same way.
    let r = send(
        Method::POST,
        &format!("http://{}/admin/profiles/k/login-links", server.admin_addr),
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        r#"{"user": "dave"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let login = r.json()["login_url"].as_str().unwrap().to_string();
    let r = post_form(&login, "api_key=key-of-dave-0123456789").await;
    assert_eq!(r.status, 200);
    let r = get(&format!("{base}/k/x"), &[("X-Authsidecar-User", "dave")]).await;
    assert_eq!(r.echoed("x-api-key"), ["key-of-dave-0123456789"]);

    // password: exchanged at once; a refused password shows the form again.
    let login = login_link(&format!("{base}/pw/x"), "carol").await;
    let r = post_form(&login, "username=demo-user&password=wrong").await;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("refused this username and password"));
    assert!(!String::from_utf8_lossy(&r.body).contains("wrong"));
    let r = post_form(&login, "username=demo-user&password=demo-password").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = get(&format!("{base}/pw/x"), &[("X-Authsidecar-User", "carol")]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // Restart: the entered credentials and the tokens survive.
    assert!(server.shutdown().await);
    let server = Server::start(per_user_config(&s)).await.unwrap();
    let base = format!("http://{}", server.proxy_addr);
    let r = get(&format!("{base}/b/x"), &[("X-Authsidecar-User", "alice")]).await;
    assert_eq!(r.echoed("authorization"), [format!("Basic {expected}")]);
    let r = get(&format!("{base}/pw/x"), &[("X-Authsidecar-User", "carol")]).await;
    assert_eq!(r.status, 200);
    assert!(server.shutdown().await);

    // Nothing entered is in the file in plaintext; the password grant kept no password at all.
    let raw = std::fs::read(&s.store).unwrap();
    for secret in [secret_password, "key-of-alice-0123456789", "demo-password"] {
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} in plaintext"
        );
    }
    let key = authsidecar::store::crypto::parse_key(&s.key).unwrap();
    let store = authsidecar::store::Store::open_file(&s.store, &key, None).unwrap();
    let names = store.names("grant:").unwrap();
    assert_eq!(names.len(), 4, "alice twice, dave and carol: {names:?}");
    let carol = store.get("grant:pw:-:carol").unwrap().unwrap();
    assert!(!String::from_utf8_lossy(&carol).contains("demo-password"));
    assert!(String::from_utf8_lossy(&carol).contains("refresh_token"));
}

#[tokio::test]
async fn two_logins_in_flight_both_work_and_a_state_cannot_take_another_profiles_code() {
    let s = Setup::new().await;
    // A second client at the same IdP, for a second profile.
    s.echo.state.add_client("other-client", "other-secret");
    let echo = s.echo.addr;
    let text = format!(
        r#"
[auth]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:0"

[[routes]]
prefix = "/a/"
upstream = "http://{echo}/protected/"
profiles = ["a"]

[[routes]]
prefix = "/b/"
upstream = "http://{echo}/protected/"
profiles = ["b"]

[profiles.a]
type = "oauth2_authorization_code"
authorization_url = "http://{echo}/oauth/authorize"
token_url = "http://{echo}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"

[profiles.b]
type = "oauth2_authorization_code"
authorization_url = "http://{echo}/oauth/authorize"
token_url = "http://{echo}/oauth/token"
client_id = "other-client"
client_secret = "other-secret"
"#,
    );
    let config = Config::from_str_with_env(&with_listeners(&text), &Env::default()).unwrap();
    let server = Server::start(config).await.unwrap();
    let (a, b) = (
        format!("http://{}/a/x", server.proxy_addr),
        format!("http://{}/b/x", server.proxy_addr),
    );
    let callback_of = |login: String| async move {
        let to_idp = get(&login, &[]).await;
        location(&get(&location(&to_idp), &[]).await)
    };
    let params = |url: &str| {
        authsidecar::inject::encode::parse_form(url.split_once('?').unwrap().1.as_bytes())
    };
    let param = |p: &[(String, String)], k: &str| p.iter().find(|(n, _)| n == k).unwrap().1.clone();

    // Two logins in flight for the same user: both complete, in either order.
    let first = callback_of(login_link(&a, "ann").await).await;
    let second = callback_of(login_link(&a, "ann").await).await;
    assert_eq!(get(&second, &[]).await.status, 200);
    assert_eq!(get(&first, &[]).await.status, 200);
    assert_eq!(get(&a, &[("X-Authsidecar-User", "ann")]).await.status, 200);

    // A state from profile a with a code issued to profile b's client: refused by the IdP (the
    // code belongs to another client), and a gets no grant for ben.
    let for_a = callback_of(login_link(&a, "ben").await).await;
    let for_b = callback_of(login_link(&b, "ben").await).await;
    let (pa, pb) = (params(&for_a), params(&for_b));
    let mixed = format!(
        "http://{}/oauth/callback?code={}&state={}",
        server.auth_addr.unwrap(),
        param(&pb, "code"),
        param(&pa, "state")
    );
    let r = get(&mixed, &[]).await;
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        get(&a, &[("X-Authsidecar-User", "ben")]).await.error_code(),
        "authorization_required"
    );
    // The state was used up by that attempt.
    assert_eq!(get(&for_a, &[]).await.status, 400);
    server.shutdown().await;
}

#[tokio::test]
async fn a_callback_from_another_issuer_or_without_one_is_refused_without_a_token_request() {
    use std::sync::atomic::Ordering;
    let s = Setup::new().await;
    let server = Server::start(s.config()).await.unwrap();
    let url = format!("http://{}/u/me", server.proxy_addr);
    let real = s.echo.state.issuer();

    // The IdP's answer names another issuer (a mix-up attack): 400, no token request.
    s.echo.state.set_issuer("http://evil.example".into());
    let login = login_link(&url, "mia").await;
    let to_idp = get(&login, &[]).await;
    let to_callback = get(&location(&to_idp), &[]).await;
    let callback = location(&to_callback);
    assert!(
        callback.contains("iss=http%3A%2F%2Fevil.example"),
        "{callback}"
    );
    let r = get(&callback, &[]).await;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("issuer mismatch"));

    // The answer names no issuer at all: 400 as well.
    s.echo.state.set_issuer(real);
    let login = login_link(&url, "mia").await;
    let to_idp = get(&login, &[]).await;
    let to_callback = get(&location(&to_idp), &[]).await;
    let callback = location(&to_callback);
    let (base, query) = callback.split_once('?').unwrap();
    let without_iss: Vec<&str> = query
        .split('&')
        .filter(|p| !p.starts_with("iss="))
        .collect();
    let r = get(&format!("{base}?{}", without_iss.join("&")), &[]).await;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("issuer missing"));
    assert_eq!(
        s.echo.counters().authorization_code.load(Ordering::SeqCst),
        0,
        "no code was redeemed"
    );
    assert_eq!(
        get(&url, &[("X-Authsidecar-User", "mia")])
            .await
            .error_code(),
        "authorization_required"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_user_grant_survives_idp_trouble_and_is_dropped_on_invalid_grant() {
    use authsidecar::mock::TokenFault;
    use std::time::Duration;
    let s = Setup::with_lifetime(Duration::from_secs(2)).await;
    let server = Server::start(s.config()).await.unwrap();
    let url = format!("http://{}/u/me", server.proxy_addr);
    let nia = [("X-Authsidecar-User", "nia")];
    let login = login_link(&url, "nia").await;
    assert_eq!(sign_in(&login).await.status, 200);
    assert_eq!(get(&url, &nia).await.status, 200);

    // The token expires (time passing is the point); the IdP fails the refresh with a 500: 503
    // idp_unavailable, grant kept.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    s.echo
        .state
        .set_token_fault(Some(TokenFault::ServerError), Some(1));
    let r = get(&url, &nia).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (503, "idp_unavailable")
    );
    // After the backoff the same grant refreshes.
    wait_for(
        "nia's grant to refresh after the backoff",
        Duration::from_secs(10),
        || async {
            let r = get(&url, &nia).await;
            if r.status == 200 {
                return Ok(());
            }
            assert_eq!(r.error_code(), "idp_unavailable");
            Err(format!("{}", r.status))
        },
    )
    .await;

    // The IdP refuses the refresh token (invalid_grant): the grant is deleted, the user must log in.
    // The token expires first (time passing is the point).
    tokio::time::sleep(Duration::from_millis(2200)).await;
    s.echo
        .state
        .set_token_fault(Some(TokenFault::InvalidGrant), Some(1));
    let r = get(&url, &nia).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (401, "authorization_required")
    );
    let before = s.echo.token_requests();
    let r = get(&url, &nia).await;
    assert_eq!(r.error_code(), "authorization_required");
    assert_eq!(
        s.echo.token_requests(),
        before,
        "a deleted grant makes no token request"
    );
    let tokens = get(
        &format!("http://{}/admin/tokens", server.admin_addr),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
    )
    .await
    .json();
    assert!(
        !tokens["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["source"] == "store" && t["user"] == "nia"),
        "{tokens}"
    );
    server.shutdown().await;
}

/// A24: every login gets its own S256 challenge (43 base64url characters: SHA-256 of a verifier
/// from 32 random bytes); the verifier stays server-side and the IdP, which checks its syntax
/// (43-128 unreserved characters) and its hash, accepts it. No `plain` method is ever sent.
#[tokio::test]
async fn a24_each_login_gets_a_fresh_s256_challenge_and_a_valid_verifier() {
    let s = Setup::new().await;
    let server = Server::start(s.config()).await.unwrap();
    let url = format!("http://{}/u/me", server.proxy_addr);
    let mut challenges = Vec::new();
    for user in ["alice", "bob", "carol"] {
        let r = get(&url, &[("X-Authsidecar-User", user)]).await;
        let login = r.json()["error"]["login_url"].as_str().unwrap().to_string();
        let to_idp = get(&login, &[]).await;
        let idp_url = location(&to_idp);
        let q: std::collections::HashMap<&str, &str> = idp_url
            .split_once('?')
            .unwrap()
            .1
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        assert_eq!(q["code_challenge_method"], "S256", "{idp_url}");
        let c = q["code_challenge"].to_string();
        assert_eq!(c.len(), 43, "{c}");
        assert!(
            c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{c}"
        );
        assert!(!idp_url.contains("code_verifier"));
        assert!(!idp_url.contains("plain"));
        challenges.push(c);
        // Finish this login: the IdP verifies the verifier against the challenge.
        let to_callback = get(&idp_url, &[]).await;
        let done = get(&location(&to_callback), &[]).await;
        assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));
    }
    assert_ne!(challenges[0], challenges[1]);
    assert_ne!(challenges[1], challenges[2]);
    assert_ne!(challenges[0], challenges[2]);
    let r = get(&url, &[("X-Authsidecar-User", "bob")]).await;
    assert_eq!(r.status, 200);
    server.shutdown().await;
}

/// A20: no input to the auth listener chooses where a browser is sent. The start page redirects only
/// to the configured authorization URL with the configured `redirect_uri` (exact string), whatever
/// return/redirect parameters are added; the callback never redirects, also not with open-redirect
/// payloads.
#[tokio::test]
async fn a20_no_auth_listener_input_chooses_a_redirect_target() {
    let s = Setup::new().await;
    let server = Server::start(s.config()).await.unwrap();
    let url = format!("http://{}/u/me", server.proxy_addr);
    let r = get(&url, &[("X-Authsidecar-User", "alice")]).await;
    let login = r.json()["error"]["login_url"].as_str().unwrap().to_string();
    let payloads = [
        "//evil.example",
        "/\\evil.example",
        "/%09/evil.example",
        "https:evil.example",
        "javascript:alert(1)",
        "https://ok@evil.example",
        "%2F%2Fevil.example",
    ];
    let callback = format!("http://{}/oauth/callback", server.auth_addr.unwrap());
    let want_redirect_uri: String =
        percent_encoding::utf8_percent_encode(&callback, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let mut redirected = 0;
    for p in payloads {
        let sep = if login.contains('?') { '&' } else { '?' };
        let to_idp = get(
            &format!("{login}{sep}return_to={p}&redirect={p}&next={p}"),
            &[],
        )
        .await;
        if to_idp.status.is_redirection() {
            let loc = location(&to_idp);
            assert!(
                loc.starts_with(&format!("http://{}/oauth/authorize?", s.echo.addr)),
                "{p}: {loc}"
            );
            let redirect_uri = loc
                .split(['?', '&'])
                .find_map(|kv| kv.strip_prefix("redirect_uri="))
                .unwrap();
            assert_eq!(
                percent_encoding::percent_decode_str(redirect_uri).decode_utf8_lossy(),
                percent_encoding::percent_decode_str(&want_redirect_uri).decode_utf8_lossy(),
                "{p}"
            );
            assert!(!loc.contains("evil"), "{p}: {loc}");
            redirected += 1;
        } else {
            assert!(to_idp.status.is_client_error(), "{p}: {}", to_idp.status);
        }
        let cb = get(
            &format!("{callback}?code=c&state=s&redirect={p}&return_to={p}"),
            &[],
        )
        .await;
        assert!(
            cb.headers.get("location").is_none(),
            "{p}: callback redirected"
        );
        assert!(cb.status.is_client_error(), "{p}: {}", cb.status);
    }
    assert_eq!(
        redirected,
        payloads.len(),
        "the start page stopped redirecting to the IdP"
    );
    server.shutdown().await;
}

/// `POST /admin/profiles/{name}/login-links`: a bot asks for a user's link before the user's
/// first call; the sign-in through it makes the user's grant. The user and tenant follow the
/// proxy's rules, and a profile without end users' credentials has no links.
#[tokio::test]
async fn a_login_link_on_demand_lets_a_user_sign_in_before_the_first_call() {
    let s = Setup::new().await;
    let text = with_listeners(&format!(
        "{}\n[profiles.fixed]\ntype = \"api_key\"\napi_key = \"k-0123456789\"\n[[profiles.fixed.fields]]\nin = \"header\"\nkey = \"X-Key\"\nvalue = \"{{{{api_key}}}}\"\n",
        // The Setup's profile, with the fixed one beside it.
        s.config_text()
    ));
    let server = Server::start(Config::from_str_with_env(&text, &Env::default()).unwrap())
        .await
        .unwrap();
    let admin = |name: &str| {
        format!(
            "http://{}/admin/profiles/{name}/login-links",
            server.admin_addr
        )
    };
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let post = |url: String, body: &'static str| {
        let auth = auth.clone();
        async move {
            send(
                Method::POST,
                &url,
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/json"),
                ],
                body,
            )
            .await
        }
    };

    let r = post(admin("user"), r#"{"user": "carol"}"#).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["user"], "carol");
    assert_eq!(v["expires_in"], 600);
    let link = v["login_url"].as_str().unwrap().to_string();
    assert!(link.starts_with(&format!(
        "http://{}/oauth/start/",
        server.auth_addr.unwrap()
    )));
    assert_eq!(s.echo.echo_count(), 0, "nothing called yet");

    let done = sign_in(&link).await;
    assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));
    let url = format!("http://{}/u/me", server.proxy_addr);
    let r = get(&url, &[("X-Authsidecar-User", "carol")]).await;
    assert_eq!(
        r.status,
        200,
        "the first call already has the grant: {}",
        String::from_utf8_lossy(&r.body)
    );
    // The link was for carol only.
    let r = get(&url, &[("X-Authsidecar-User", "dave")]).await;
    assert_eq!(r.error_code(), "authorization_required");

    for (profile, body, status, code) in [
        ("user", r#"{}"#, 400, "user_required"),
        ("user", r#"{"user": ""}"#, 400, "user_invalid"),
        ("user", r#"{"user": 7}"#, 400, "bad_request"),
        ("user", r#"not json"#, 400, "bad_request"),
        (
            "user",
            r#"{"user": "erin", "context": {"a": 1}}"#,
            400,
            "bad_request",
        ),
        ("fixed", r#"{"user": "erin"}"#, 400, "not_per_user"),
        ("nope", r#"{"user": "erin"}"#, 404, "profile_not_found"),
    ] {
        let r = post(admin(profile), body).await;
        assert_eq!(
            (r.status.as_u16(), r.error_code().as_str()),
            (status, code),
            "{profile} {body}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // Without the admin token: refused like every admin endpoint.
    let r = send(Method::POST, &admin("user"), &[], r#"{"user": "carol"}"#).await;
    assert_eq!(r.status, 401);
    server.shutdown().await;
}

/// `PUT /admin/grants/{profile}?user=`: a user's grant from another platform is kept as if they had
/// signed in; an expired one is refreshed on their next call; nothing of it is echoed.
#[tokio::test]
async fn an_imported_grant_serves_the_user_and_an_expired_one_is_refreshed() {
    let s = Setup::new().await;
    let server = Server::start(s.config()).await.unwrap();
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let put = |query: &str, body: String| {
        let url = format!("http://{}/admin/grants/user?{query}", server.admin_addr);
        let auth = auth.clone();
        async move { send(Method::PUT, &url, &[("Authorization", &auth)], body).await }
    };
    let url = format!("http://{}/u/me", server.proxy_addr);

    let (at, rt) = issued_elsewhere(&s.echo).await;
    let r = put(
        "user=gina",
        format!(r#"{{"access_token": "{at}", "refresh_token": "{rt}", "expires_in": 3600, "extra": {{"instance": "eu"}}}}"#),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let shown = String::from_utf8_lossy(&r.body).to_string();
    assert!(!shown.contains(&at) && !shown.contains(&rt), "{shown}");
    let before = s.echo.token_requests();
    let r = get(&url, &[("X-Authsidecar-User", "gina")]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.echoed("authorization"), [format!("Bearer {at}")]);
    assert_eq!(
        s.echo.token_requests(),
        before,
        "the imported token is used as it is"
    );

    // Expired at import: the next call refreshes it with the imported refresh token.
    let (at2, rt2) = issued_elsewhere(&s.echo).await;
    let r = put(
        "user=hal",
        format!(r#"{{"access_token": "{at2}", "refresh_token": "{rt2}", "expires_at": "2020-01-01T00:00:00Z"}}"#),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let before = s.echo.token_requests();
    let r = get(&url, &[("X-Authsidecar-User", "hal")]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_ne!(r.echoed("authorization"), [format!("Bearer {at2}")]);
    assert_eq!(s.echo.token_requests(), before + 1, "one refresh");

    for (query, body, status, code) in [
        (
            "user=ivy",
            r#"{"refresh_token": "x"}"#,
            400,
            "grant_invalid",
        ),
        (
            "user=ivy",
            r#"{"access_token": "a", "expires_in": -1}"#,
            400,
            "grant_invalid",
        ),
        (
            "user=ivy",
            r#"{"access_token": "a", "expires_in": 1, "expires_at": 2}"#,
            400,
            "grant_invalid",
        ),
        (
            "user=ivy",
            r#"{"access_token": "a", "nope": 1}"#,
            400,
            "grant_invalid",
        ),
        ("user=ivy", r#"[]"#, 400, "grant_invalid"),
        ("", r#"{"access_token": "a"}"#, 400, "user_required"),
        (
            "user=ivy&tenant=x",
            r#"{"access_token": "a"}"#,
            400,
            "tenant_invalid",
        ),
    ] {
        let r = put(query, body.to_string()).await;
        assert_eq!(
            (r.status.as_u16(), r.error_code().as_str()),
            (status, code),
            "{query} {body}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // The alias deletes it like DELETE /admin/tokens/{profile}.
    let r = send(
        Method::DELETE,
        &format!("http://{}/admin/grants/user?user=gina", server.admin_addr),
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["grant_deleted"], true);
    let r = get(&url, &[("X-Authsidecar-User", "gina")]).await;
    assert_eq!(r.error_code(), "authorization_required");
    server.shutdown().await;
}

/// Login links on demand and imported grants on each store: memory, file and Redis; on the two
/// that persist, the grants serve again after a restart.
#[tokio::test]
async fn login_links_and_imported_grants_work_on_every_store() {
    let s = Setup::new().await;
    let dir = TempDir::new("every-store");
    let redis = crate::support::fleet::Redis::start(&dir.join("redis")).await;
    let key = authsidecar::store::crypto::generate_key();
    let stores = [
        ("memory", "kind = \"memory\"".to_string(), false),
        (
            "file",
            format!(
                "kind = \"file\"\npath = \"{}\"\nkey = \"{key}\"",
                dir.join("grants.db").display()
            ),
            true,
        ),
        (
            "redis",
            format!(
                "kind = \"redis\"\nurl = \"{}\"\nkey = \"{key}\"",
                redis.url()
            ),
            true,
        ),
    ];
    let auth = format!("Bearer {ADMIN_TOKEN}");
    for (name, store, persists) in stores {
        let text = with_listeners(&s.config_text_with_store(&store));
        let config = || Config::from_str_with_env(&text, &Env::default()).unwrap();
        let server = Server::start(config()).await.unwrap();
        let (kim, lee) = (format!("kim-{name}"), format!("lee-{name}"));
        // A login link before any call, then the sign-in.
        let r = send(
            Method::POST,
            &format!(
                "http://{}/admin/profiles/user/login-links",
                server.admin_addr
            ),
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            format!(r#"{{"user": "{kim}"}}"#),
        )
        .await;
        assert_eq!(
            r.status,
            201,
            "{name}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let done = sign_in(r.json()["login_url"].as_str().unwrap()).await;
        assert_eq!(
            done.status,
            200,
            "{name}: {}",
            String::from_utf8_lossy(&done.body)
        );
        // An imported grant (tokens the provider issued elsewhere).
        let t = post_form(
            &s.echo.token_url(),
            "grant_type=password&username=demo-user&password=demo-password&client_id=demo-client&client_secret=demo-secret",
        )
        .await
        .json();
        let at = t["access_token"].as_str().unwrap().to_string();
        let r = send(
            Method::PUT,
            &format!("http://{}/admin/grants/user?user={lee}", server.admin_addr),
            &[("Authorization", &auth)],
            format!(
                r#"{{"access_token": "{at}", "refresh_token": "{}", "expires_in": 3600}}"#,
                t["refresh_token"].as_str().unwrap()
            ),
        )
        .await;
        assert_eq!(
            r.status,
            201,
            "{name}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let calls = |server: &Server| {
            let url = format!("http://{}/u/me", server.proxy_addr);
            let (kim, lee) = (kim.clone(), lee.clone());
            async move {
                let a = get(&url, &[("X-Authsidecar-User", kim.as_str())]).await;
                let b = get(&url, &[("X-Authsidecar-User", lee.as_str())]).await;
                (a, b)
            }
        };
        let (a, b) = calls(&server).await;
        assert_eq!(
            a.status,
            200,
            "{name}: {}",
            String::from_utf8_lossy(&a.body)
        );
        assert_eq!(
            b.status,
            200,
            "{name}: {}",
            String::from_utf8_lossy(&b.body)
        );
        assert_eq!(
            b.echoed("authorization"),
            [format!("Bearer {at}")],
            "{name}"
        );
        server.shutdown().await;
        if persists {
            let server = Server::start(config()).await.unwrap();
            let (a, b) = calls(&server).await;
            assert_eq!(
                (a.status.as_u16(), b.status.as_u16()),
                (200, 200),
                "{name}: the grants survive a restart: {} {}",
                String::from_utf8_lossy(&a.body),
                String::from_utf8_lossy(&b.body)
            );
            server.shutdown().await;
        }
    }
    drop(redis);
}
