//! Three-legged OAuth 1.0a per end user (RFC 5849 §2), through the login link: against the
//! built-in mock provider (`/oauth1/…`), and against an independent provider written with
//! oauthlib's server side (`tests/verify/oauth1_provider.py`). The browser is an HTTP client that
//! follows the redirects by hand.

use std::sync::atomic::Ordering;

use http::Method;

use authsidecar::config::{Config, Env};
use authsidecar::mock::MockProvider;
use authsidecar::Server;

use crate::support::*;

/// The profile against a provider whose endpoints are `{base}/request_token`, `/authorize`,
/// `/access_token`, and whose protected resource is `{base}/protected/`.
fn config_text(base: &str, extra_auth: &str, store: &str) -> String {
    format!(
        r#"
[auth]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:0"
{extra_auth}
{store}
[[routes]]
prefix = "/o1/"
upstream = "{base}/protected/"
profiles = ["tw"]

[profiles.tw]
type = "oauth1"
per_user = true
identity_provider = "Mock"
consumer_key = "demo-client"
consumer_secret = "demo-secret"
request_token_url = "{base}/request_token"
authorization_url = "{base}/authorize"
access_token_url = "{base}/access_token"
"#
    )
}

fn count(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(Ordering::SeqCst)
}

/// The login link an `authorization_required` answer carries.
async fn login_link(url: &str, user: &str) -> String {
    let r = get(url, &[("X-Authsidecar-User", user)]).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (401, "authorization_required"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()["error"]["login_url"].as_str().unwrap().to_string()
}

/// Start page → provider's authorize page (approving as `user`) → the callback URL it sends the
/// browser to (not yet followed).
async fn to_callback(login_url: &str, user: &str) -> String {
    let to_provider = get(login_url, &[]).await;
    assert_eq!(
        to_provider.status,
        302,
        "{}",
        String::from_utf8_lossy(&to_provider.body)
    );
    let authorize = location(&to_provider);
    let approved = get(&format!("{authorize}&user={user}"), &[]).await;
    assert_eq!(
        approved.status,
        302,
        "{}",
        String::from_utf8_lossy(&approved.body)
    );
    location(&approved)
}

async fn sign_in(login_url: &str, user: &str) {
    let callback = to_callback(login_url, user).await;
    let done = get(&callback, &[]).await;
    assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));
    assert!(String::from_utf8_lossy(&done.body).contains("You are signed in"));
}

#[tokio::test]
async fn two_users_authorize_through_the_login_link_and_call_with_their_own_tokens() {
    let m = mock().await;
    let dir = TempDir::new("oauth1");
    let store_path = dir.join("grants.db");
    let key = authsidecar::store::crypto::generate_key();
    let store = format!(
        "[store]\nkind = \"file\"\npath = \"{}\"\nkey = \"{key}\"\n",
        store_path.display()
    );
    let text = config_text(&format!("http://{}/oauth1", m.addr), "", &store);
    let server = Server::start(parse(&text)).await.unwrap();
    let url = format!("http://{}/o1/items?limit=5", server.proxy_addr);
    let c = m.counters();

    assert_eq!(get(&url, &[]).await.error_code(), "user_required");
    let alice_link = login_link(&url, "alice").await;
    assert!(alice_link.starts_with(&format!(
        "http://{}/oauth/start/",
        server.auth_addr.unwrap()
    )));
    assert_eq!(
        count(&c.oauth1_request_tokens),
        0,
        "the request token is fetched when the user opens the start page, not at the 401"
    );

    // The redirect to the provider carries the request token only, never its secret.
    let to_provider = get(&alice_link, &[]).await;
    assert_eq!(count(&c.oauth1_request_tokens), 1);
    let authorize = location(&to_provider);
    assert!(
        authorize.starts_with(&format!("http://{}/oauth1/authorize?oauth_token=", m.addr)),
        "{authorize}"
    );
    for text in [
        authorize.clone(),
        String::from_utf8_lossy(&to_provider.body).into_owned(),
    ] {
        assert!(
            !text.contains("mock-rts-"),
            "request token secret sent to the browser"
        );
    }
    let approved = get(&format!("{authorize}&user=alice"), &[]).await;
    let callback = location(&approved);
    assert!(callback.starts_with(&format!(
        "http://{}/oauth/callback?oauth_token=",
        server.auth_addr.unwrap()
    )));
    let done = get(&callback, &[]).await;
    assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));
    assert_eq!(count(&c.oauth1_access_tokens), 1);

    let bob_link = login_link(&url, "bob").await;
    sign_in(&bob_link, "bob").await;

    // Each user's requests are signed with their own token; the provider verifies each signature.
    for user in ["alice", "bob", "alice"] {
        let r = get(&url, &[("X-Authsidecar-User", user)]).await;
        assert_eq!(
            r.status,
            200,
            "{user}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.headers["x-mock-user"], user);
        let auth = r.echoed("authorization");
        assert_eq!(auth.len(), 1);
        assert!(auth[0].starts_with("OAuth "), "{}", auth[0]);
        assert!(auth[0].contains("oauth_consumer_key=\"demo-client\""));
        assert_eq!(r.json()["query"], "limit=5");
    }
    assert_eq!(count(&c.oauth1_resource_ok), 3);
    assert_eq!(count(&c.oauth1_resource_rejected), 0);
    // carol has no grant.
    login_link(&url, "carol").await;

    // The admin API lists the grants and revokes one.
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let admin = format!("http://{}", server.admin_addr);
    let listed = get(
        &format!("{admin}/admin/tokens"),
        &[("authorization", &bearer)],
    )
    .await;
    let tokens = listed.json()["tokens"].clone();
    for user in ["alice", "bob"] {
        assert!(
            tokens
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["profile"] == "tw" && t["user"] == user && t["source"] == "store"),
            "{tokens}"
        );
    }
    let r = send(
        Method::DELETE,
        &format!("{admin}/admin/tokens/tw?user=bob"),
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["grant_deleted"], true);
    login_link(&url, "bob").await;
    let r = get(&url, &[("X-Authsidecar-User", "alice")]).await;
    assert_eq!(r.status, 200);
    assert!(server.shutdown().await);

    // The grants are kept encrypted: no token or token secret in the file.
    let raw = std::fs::read(&store_path).unwrap();
    let tokens = m.state.oauth1_tokens();
    assert!(!tokens.is_empty());
    for t in tokens {
        assert!(
            !raw.windows(t.len()).any(|w| w == t.as_bytes()),
            "token in plaintext"
        );
    }
    assert!(
        !raw.windows(9).any(|w| w == b"mock-ats-"),
        "token secret in plaintext"
    );
}

#[tokio::test]
async fn a_request_token_is_single_use_and_an_unknown_one_asks_the_provider_nothing() {
    let m = mock().await;
    let text = config_text(&format!("http://{}/oauth1", m.addr), "", "");
    let server = Server::start(parse(&text)).await.unwrap();
    let url = format!("http://{}/o1/me", server.proxy_addr);
    let c = m.counters();
    let auth = server.auth_addr.unwrap();

    // A callback naming a request token the sidecar never asked for: the page of a bad state,
    // and no access-token request.
    for query in [
        "oauth_token=forged&oauth_verifier=v",
        "oauth_token=&oauth_verifier=v",
        "denied=forged",
    ] {
        let r = get(&format!("http://{auth}/oauth/callback?{query}"), &[]).await;
        assert_eq!(r.status, 400, "{query}");
        assert!(
            r.headers.contains_key("x-authsidecar-error"),
            "{query}: {:?}",
            r.headers
        );
    }
    assert_eq!(count(&c.oauth1_access_tokens), 0);

    let link = login_link(&url, "dora").await;
    let callback = to_callback(&link, "dora").await;
    // The verifier is checked by the provider: a wrong one fails the sign-in, and uses up the
    // request token (both sides).
    let tampered = callback.replace("oauth_verifier=", "oauth_verifier=x");
    let r = get(&tampered, &[]).await;
    assert_eq!(r.headers["x-authsidecar-error"], "idp_rejected");
    assert_eq!(count(&c.oauth1_access_tokens), 1);
    let r = get(&callback, &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.headers["x-authsidecar-error"], "link_invalid");
    assert!(String::from_utf8_lossy(&r.body).contains("already used"));
    assert_eq!(count(&c.oauth1_access_tokens), 1, "no second exchange");

    // A new link and a complete sign-in; the same callback a second time finds nothing.
    let link = login_link(&url, "dora").await;
    let callback = to_callback(&link, "dora").await;
    assert_eq!(get(&callback, &[]).await.status, 200);
    assert_eq!(count(&c.oauth1_access_tokens), 2);
    let r = get(&callback, &[]).await;
    assert_eq!(r.headers["x-authsidecar-error"], "link_invalid");
    assert_eq!(count(&c.oauth1_access_tokens), 2);
    assert_eq!(
        get(&url, &[("X-Authsidecar-User", "dora")]).await.status,
        200
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_expired_request_token_is_refused_without_an_access_token_request() {
    let m = mock().await;
    let text = config_text(&format!("http://{}/oauth1", m.addr), "", "");
    let mut config = parse(&text);
    if let Some(a) = config.auth.as_mut() {
        a.ticket_ttl = std::time::Duration::from_secs(1);
    }
    let server = Server::start(config).await.unwrap();
    let url = format!("http://{}/o1/me", server.proxy_addr);
    let link = login_link(&url, "erin").await;
    let callback = to_callback(&link, "erin").await;
    // Let the 1-second sign-in expire (time passing is the point).
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = get(&callback, &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.headers["x-authsidecar-error"], "link_invalid");
    assert_eq!(count(&m.counters().oauth1_access_tokens), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn an_upstream_401_replays_the_request_signed_afresh() {
    let m = mock().await;
    let text = config_text(&format!("http://{}/oauth1", m.addr), "", "");
    let server = Server::start(parse(&text)).await.unwrap();
    let url = format!("http://{}/o1/things", server.proxy_addr);
    let link = login_link(&url, "fay").await;
    sign_in(&link, "fay").await;
    let c = m.counters();

    // The provider refuses the first (valid) request once: the sidecar signs the request again
    // (a new nonce and timestamp: the provider refuses a nonce it has seen) and sends it once more.
    m.state.reject_resource(1);
    let r = send(
        Method::POST,
        &url,
        &[
            ("X-Authsidecar-User", "fay"),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        "a=1&b=two+words",
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["body"], "a=1&b=two+words");
    assert_eq!(count(&c.oauth1_resource_rejected), 1);
    assert_eq!(count(&c.oauth1_resource_ok), 1);

    // A provider that keeps refusing: its second 401 passes through.
    m.state.reject_resource(2);
    let r = get(&url, &[("X-Authsidecar-User", "fay")]).await;
    assert_eq!(r.status, 401);
    assert_eq!(count(&c.oauth1_resource_rejected), 3);

    // The user revoked the app at the provider: the 401 passes through (nothing to refresh).
    m.state.oauth1_revoke_user("fay");
    let r = get(&url, &[("X-Authsidecar-User", "fay")]).await;
    assert_eq!(r.status, 401);
    assert!(r.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("token_rejected"));
    server.shutdown().await;
}

/// The whole three-legged flow and one signed resource call against an OAuth 1.0a provider built
/// on oauthlib's server side (RequestTokenEndpoint, AccessTokenEndpoint, ResourceEndpoint), for
/// every signature method.
#[tokio::test]
async fn oauthlib_provider_accepts_the_three_legged_flow_and_the_signed_call() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = repo.join(".venv/bin/python3");
    assert!(
        python.exists(),
        "Python verifiers are not installed (no .venv): run scripts/setup.sh"
    );
    let rsa_key = repo.join("tests/data/sign/rsa-pkcs8.pem");
    let rsa_public = repo.join("tests/data/sign/rsa-public.pem");
    for (method, key_lines) in [
        ("HMAC-SHA1", "consumer_secret = \"demo-secret\"".to_string()),
        (
            "HMAC-SHA256",
            "consumer_secret = \"demo-secret\"".to_string(),
        ),
        ("PLAINTEXT", "consumer_secret = \"demo-secret\"".to_string()),
        (
            "RSA-SHA1",
            format!("private_key = \"{}\"", rsa_key.display()),
        ),
        (
            "RSA-SHA256",
            format!("private_key = \"{}\"", rsa_key.display()),
        ),
    ] {
        let mut child = Proc::spawn(
            "python3",
            std::process::Command::new(&python)
                .arg(repo.join("tests/verify/oauth1_provider.py"))
                .args(["--consumer-key", "demo-client"])
                .args(["--consumer-secret", "demo-secret"])
                .arg("--rsa-public-key")
                .arg(&rsa_public)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::inherit()),
        );
        let port = {
            use std::io::BufRead;
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            line.trim()
                .strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("the provider did not start: {line:?}"))
                .parse::<u16>()
                .unwrap()
        };
        let base = format!("http://127.0.0.1:{port}");
        // The provider does check: an unsigned call is refused.
        let r = get(&format!("{base}/protected/resource"), &[]).await;
        assert_eq!(r.status, 401);
        let text = config_text(&base, "", "").replace(
            "consumer_secret = \"demo-secret\"",
            &format!("signature_method = \"{method}\"\n{key_lines}"),
        );
        let server = Server::start(parse(&text)).await.unwrap();
        let url = format!("http://{}/o1/resource?x=1&y=a%20b", server.proxy_addr);
        let link = login_link(&url, "gil").await;
        let to_provider = get(&link, &[]).await;
        assert_eq!(
            to_provider.status,
            302,
            "{method}: {}",
            String::from_utf8_lossy(&to_provider.body)
        );
        let approved = get(&location(&to_provider), &[]).await;
        assert_eq!(approved.status, 302, "{method}");
        let done = get(&location(&approved), &[]).await;
        assert_eq!(
            done.status,
            200,
            "{method}: {}",
            String::from_utf8_lossy(&done.body)
        );
        let r = get(&url, &[("X-Authsidecar-User", "gil")]).await;
        assert_eq!(
            r.status,
            200,
            "{method}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let v = r.json();
        assert_eq!(v["verified"], true, "{method}: {v}");
        assert_eq!(v["user"], "oauthlib-user", "{method}: {v}");
        assert_eq!(v["signature_method"], method);
        server.shutdown().await;
        child.kill();
    }
}

#[test]
fn a_three_legged_profile_needs_the_auth_listener() {
    let text = config_text("http://127.0.0.1:9/oauth1", "", "");
    let without_auth = text.replace("[auth]\n", "").replace(
        "listen = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1:0\"\n",
        "",
    );
    let errors = Config::from_str_with_env(&with_listeners(&without_auth), &Env::default())
        .expect_err("refused without [auth]")
        .0
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>();
    has(
        &errors,
        "profiles.tw: a per-user profile needs an [auth] section",
    );
    // With it, the admin API and `check` show the callback link to register at the provider.
    let c = parse(&text);
    assert!(c.profile("tw").unwrap().per_user);
}

/// The mock's `/oauth1/` endpoints check every signature method, and refuse a replayed nonce, a
/// stale timestamp and a wrong signature (here at the request-token endpoint, signed by hand).
#[tokio::test]
async fn the_mock_verifies_each_method_and_refuses_replays_stale_timestamps_and_bad_signatures() {
    use authsidecar::sign::oauth1::{Client, Protocol, SignatureMethod};
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let pem = std::fs::read(repo.join("tests/data/sign/rsa-pkcs8.pem")).unwrap();
    let rsa = authsidecar::sign::PrivateKey::from_pem(&pem).unwrap();
    let public = authsidecar::sign::verify::PublicKeys::load(&pem).unwrap();
    let m = MockProvider::start_with(
        ([127, 0, 0, 1], 0).into(),
        authsidecar::mock::MockSettings {
            client_keys: vec![("demo-client".into(), public)],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let authority = m.addr.to_string();
    let url = format!("http://{authority}/oauth1/request_token");
    let request = authsidecar::sign::Request {
        method: "POST",
        scheme: "http",
        authority: &authority,
        path: "/oauth1/request_token",
        query: None,
        headers: authsidecar::sign::FORM_HEADERS,
        body: b"",
    };
    let post = |authorization: String| {
        let url = url.clone();
        async move {
            send(
                Method::POST,
                &url,
                &[
                    ("authorization", authorization.as_str()),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                "",
            )
            .await
        }
    };
    let problem = |r: &Resp| {
        r.headers
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    for method in SignatureMethod::ALL {
        let (secret, key) = if method.is_rsa() {
            (None, Some(&rsa))
        } else {
            (Some("demo-secret"), None)
        };
        let client = Client::new(method, "demo-client", secret, key).unwrap();
        let now = authsidecar::sign::unix_now();
        let nonce = authsidecar::sign::oauth1::fresh_nonce();
        let mut proto = Protocol::new(&nonce, now);
        proto.callback = Some("oob");
        let signed = client.sign(&request, &proto).unwrap();
        let r = post(signed.authorization(None)).await;
        assert_eq!(r.status, 200, "{method:?}: {}", problem(&r));
        assert!(String::from_utf8_lossy(&r.body).contains("oauth_callback_confirmed=true"));
        if method != SignatureMethod::Plaintext {
            // The same nonce and timestamp again: a replay.
            let r = post(signed.authorization(None)).await;
            assert_eq!(r.status, 401, "{method:?}");
            assert!(problem(&r).contains("nonce_used"), "{method:?}");
            // A timestamp from 20 minutes ago.
            let mut stale = Protocol::new("stale-nonce-0123456789abc", now - 1200);
            stale.callback = Some("oob");
            let r = post(client.sign(&request, &stale).unwrap().authorization(None)).await;
            assert!(problem(&r).contains("timestamp_refused"), "{method:?}");
        }
        // Signed with another secret or key: refused.
        let other = if method.is_rsa() {
            let pem = std::fs::read(repo.join("tests/data/sign/rsa-e3-pkcs8.pem")).unwrap();
            let other_key = authsidecar::sign::PrivateKey::from_pem(&pem).unwrap();
            Client::new(method, "demo-client", None, Some(&other_key)).unwrap()
        } else {
            Client::new(method, "demo-client", Some("other-secret"), None).unwrap()
        };
        let nonce = authsidecar::sign::oauth1::fresh_nonce();
        let mut proto = Protocol::new(&nonce, authsidecar::sign::unix_now());
        proto.callback = Some("oob");
        let r = post(other.sign(&request, &proto).unwrap().authorization(None)).await;
        assert_eq!(r.status, 401, "{method:?}");
        assert!(problem(&r).contains("signature_invalid"), "{method:?}");
    }
    assert_eq!(count(&m.counters().oauth1_request_tokens), 18);
}

/// A three-legged profile with a user field: the start page asks for it first (the request token is
/// fetched after the form), and the value is kept with the user's grant and placed before signing.
#[tokio::test]
async fn user_fields_are_asked_before_the_request_token_and_kept_with_the_grant() {
    let m = mock().await;
    let text = config_text(&format!("http://{}/oauth1", m.addr), "", "")
        + r#"
[[profiles.tw.user_fields]]
key = "account"
label = "Account"
pattern = "[a-z]+"

[[profiles.tw.fields]]
in = "header"
key = "X-Account"
value = "{{user_field.account}}"
"#;
    let server = Server::start(parse(&text)).await.unwrap();
    let url = format!("http://{}/o1/me", server.proxy_addr);
    let link = login_link(&url, "hana").await;
    let form = get(&link, &[]).await;
    assert_eq!(form.status, 200);
    assert!(String::from_utf8_lossy(&form.body).contains("name=\"f.account\""));
    assert_eq!(count(&m.counters().oauth1_request_tokens), 0);
    let post = |body: &'static str| {
        let link = link.clone();
        async move {
            send(
                Method::POST,
                &link,
                &[("content-type", "application/x-www-form-urlencoded")],
                body,
            )
            .await
        }
    };
    assert_eq!(post("f.account=NOT+OK").await.status, 400);
    assert_eq!(count(&m.counters().oauth1_request_tokens), 0);
    let r = post("f.account=ops").await;
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(count(&m.counters().oauth1_request_tokens), 1);
    let approved = get(&format!("{}&user=hana", location(&r)), &[]).await;
    assert_eq!(get(&location(&approved), &[]).await.status, 200);
    let r = get(&url, &[("X-Authsidecar-User", "hana")]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.echoed("x-account"), ["ops"]);
    assert_eq!(r.headers["x-mock-user"], "hana");
    server.shutdown().await;
}

/// A provider whose token endpoints are behind TLS with a private CA: the profile's `tls` and
/// `idp_timeout` apply to the request-token and access-token requests; without the CA the start
/// page fails and nothing is signed in.
#[tokio::test]
async fn the_token_requests_use_the_profiles_tls_settings() {
    use crate::support::pki::{server_config, tls_front, Pki};
    let m = mock().await;
    let pki = Pki::new("oauth1-idp");
    let front = tls_front(m.addr, server_config(&pki.server("idp"), None)).await;
    let tls_base = format!("https://127.0.0.1:{}/oauth1", front.port());
    // The mock behind its TLS front knows its public address (the signed URL's scheme).
    m.state
        .set_issuer(format!("https://127.0.0.1:{}", front.port()));
    // The browser-facing authorize page stays on the mock's own address (the test's browser
    // speaks plain HTTP); the sidecar's own requests go through TLS.
    let text = |tls: &str| {
        config_text(&tls_base, "", "")
            .replace(
                &format!("authorization_url = \"{tls_base}/authorize\""),
                &format!(
                    "authorization_url = \"http://{}/oauth1/authorize\"\n{tls}",
                    m.addr
                ),
            )
            .replace(
                &format!("upstream = \"{tls_base}/protected/\""),
                &format!(
                    "upstream = \"{tls_base}/protected/\"\ntls = {{ ca_file = \"{}\", server_name = \"localhost\" }}",
                    pki.ca().display()
                ),
            )
    };
    let trusted = format!(
        "tls = {{ ca_file = \"{}\", server_name = \"localhost\" }}\nidp_timeout = \"5s\"",
        pki.ca().display()
    );
    let server = Server::start(parse(&text(&trusted))).await.unwrap();
    let url = format!("http://{}/o1/me", server.proxy_addr);
    sign_in(&login_link(&url, "tess").await, "tess").await;
    let r = get(&url, &[("X-Authsidecar-User", "tess")]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(count(&m.counters().oauth1_access_tokens), 1);
    server.shutdown().await;

    // The system roots do not know the private CA: the request token cannot be fetched.
    let server = Server::start(parse(&text(""))).await.unwrap();
    let url = format!("http://{}/o1/me", server.proxy_addr);
    let start = get(&login_link(&url, "uma").await, &[]).await;
    assert_ne!(
        start.status,
        302,
        "{}",
        String::from_utf8_lossy(&start.body)
    );
    assert_eq!(count(&m.counters().oauth1_access_tokens), 1);
    server.shutdown().await;

    // Only three-legged profiles take them.
    let one_legged = text(&trusted)
        .replace("per_user = true\n", "token = \"t\"\ntoken_secret = \"s\"\n")
        .replace(
            &format!("request_token_url = \"{tls_base}/request_token\"\n"),
            "",
        )
        .replace(
            &format!("access_token_url = \"{tls_base}/access_token\"\n"),
            "",
        )
        .replace(
            &format!(
                "authorization_url = \"http://{}/oauth1/authorize\"\n",
                m.addr
            ),
            "",
        );
    let errs = Config::from_str_with_env(&with_listeners(&one_legged), &Env::default())
        .unwrap_err()
        .to_string();
    for key in ["tls", "idp_timeout"] {
        assert!(
            errs.contains(&format!(
                "profiles.tw.{key}: only used with per_user = true"
            )),
            "{errs}"
        );
    }
}
