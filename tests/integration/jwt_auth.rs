//! JWT client authentication at the token endpoint (`private_key_jwt`, `client_secret_jwt`: RFC 7523
//! §2.2, OpenID Connect Core §9) and the JWT bearer grant (`oauth2_jwt_bearer`, RFC 7523 §2.1), end
//! to end through the proxy:
//! - the assertions the sidecar sends to a token endpoint written for the test are checked by PyJWT
//!   and jwcrypto (`tests/verify/check.py`: signature, `alg`, claims, lifetime, `kid`);
//! - the built-in mock provider verifies them at its token endpoint (signature, `iss`, `sub`,
//!   `aud`, `exp`, `jti` replay);
//! - `oidc-provider` (OpenID Certified, `tests/verify/oidc/`) accepts `private_key_jwt` and
//!   `client_secret_jwt` and issues the token the upstream receives;
//! - `check` refuses what cannot work, naming the key path.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use http::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::proc;
use crate::support::*;
use authsidecar::config::{Config, Env};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn data_path(rel: &str) -> String {
    repo()
        .join("tests/data/sign")
        .join(rel)
        .to_string_lossy()
        .into_owned()
}

fn data(rel: &str) -> String {
    std::fs::read_to_string(data_path(rel)).unwrap()
}

/// One token request as the test's token endpoint received it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    authorization: Option<String>,
    form: Vec<(String, String)>,
}

impl Seen {
    fn param(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A token endpoint that records every request and answers a token `tok-N`.
async fn capturing_idp() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                loop {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let end = loop {
                        if let Some(i) = find(&buf, b"\r\n\r\n") {
                            break i + 4;
                        }
                        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await
                        {
                            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let len = declared_length(&head);
                    while buf.len() < end + len {
                        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await
                        {
                            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                    }
                    let body = &buf[end..end + len];
                    let form = authsidecar::inject::encode::parse_form(body);
                    let path = head
                        .lines()
                        .next()
                        .and_then(|l| l.split(' ').nth(1))
                        .unwrap_or_default()
                        .to_string();
                    let authorization = head.lines().find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.eq_ignore_ascii_case("authorization")
                            .then(|| v.trim().to_string())
                    });
                    let n = {
                        let mut log = log.lock().unwrap();
                        log.push(Seen {
                            path,
                            authorization,
                            form,
                        });
                        log.len()
                    };
                    let page = format!(
                        "{{\"access_token\":\"tok-{n}\",\"token_type\":\"Bearer\",\"expires_in\":3600}}"
                    );
                    let out = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{page}",
                        page.len()
                    );
                    if s.write_all(out.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// The Python checkers (PyJWT, jwcrypto): one runner for every signing test.
use crate::signing::verify;

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn header_of(token: &str) -> Value {
    let h = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap()
}

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

async fn admin_test(h: &Harness, profile: &str) -> Resp {
    send(
        Method::POST,
        &h.admin_url(&format!("/admin/profiles/{profile}/test")),
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        "",
    )
    .await
}

#[tokio::test]
async fn private_key_jwt_with_every_algorithm_is_accepted_by_pyjwt() {
    let (idp, seen) = capturing_idp().await;
    let token_url = format!("http://{idp}/oauth2/token");
    let keys = [
        ("rs", "RS256", "rsa-pkcs8.pem", "rsa-public.pem", ""),
        ("ps", "PS256", "rsa-pkcs1.pem", "rsa-public.pem", ""),
        ("es", "ES256", "ec-sec1.pem", "ec-public.pem", ""),
        ("ed", "EdDSA", "ed25519-pkcs8.pem", "ed25519-public.pem", ""),
        // The default algorithm of an RSA key, a configured kid, another audience.
        (
            "kid",
            "",
            "rsa-pkcs1.pem",
            "rsa-public.pem",
            "client_assertion_kid = \"key-2024\"\nclient_assertion_audience = \"https://idp.example.com\"\n",
        ),
        // A certificate: kid and x5t#S256 are its SHA-256 thumbprint (Entra ID).
        (
            "cert",
            "RS256",
            "rsa-pkcs8.pem",
            "rsa-public.pem",
            "client_assertion_cert = \"CERT\"\n",
        ),
    ];
    let mut text = String::new();
    for (name, alg, pem, _, extra) in keys {
        let alg = if alg.is_empty() {
            String::new()
        } else {
            format!("client_assertion_alg = \"{alg}\"\n")
        };
        text.push_str(&format!(
            "[[routes]]\nprefix = \"/{name}/\"\nupstream = \"http://{{echo}}/echo/\"\nprofiles = [\"{name}\"]\n\n\
             [profiles.{name}]\ntype = \"oauth2_client_credentials\"\ntoken_url = \"{token_url}\"\n\
             client_id = \"client-{name}\"\nclient_auth = \"private_key_jwt\"\nclient_assertion_key = \"{}\"\n{alg}{}\
             scope = {{ scope = \"read\" }}\n\n",
            data_path(pem),
            extra.replace("CERT", &data_path("rsa-cert.pem")),
        ));
    }
    let h = Harness::start(&text).await;
    let mut cases = Vec::new();
    for (i, (name, alg, _, public, extra)) in keys.into_iter().enumerate() {
        let r = get(&h.url(&format!("/{name}/x")), &[]).await;
        assert_eq!(
            r.status,
            200,
            "{name}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.echoed("authorization"), [format!("Bearer tok-{}", i + 1)]);
        let s = seen.lock().unwrap()[i].clone();
        assert_eq!(s.path, "/oauth2/token");
        assert_eq!(s.authorization, None, "{name}: no Basic credentials");
        assert_eq!(s.param("grant_type"), Some("client_credentials"));
        assert_eq!(
            s.param("client_id"),
            Some(format!("client-{name}").as_str())
        );
        assert_eq!(s.param("client_assertion_type"), Some(ASSERTION_TYPE));
        assert_eq!(s.param("scope"), Some("read"));
        assert_eq!(s.param("client_secret"), None);
        let token = s.param("client_assertion").unwrap().to_string();
        let claims = claims_of(&token);
        let aud = if extra.contains("audience") {
            "https://idp.example.com".to_string()
        } else {
            token_url.clone()
        };
        let alg = if alg.is_empty() { "RS256" } else { alg };
        let kid = if extra.contains("key-2024") {
            json!("key-2024")
        } else if extra.contains("cert") {
            json!("x5t#S256")
        } else {
            json!("thumbprint")
        };
        cases.push(json!({
            "kind": "jwt", "id": format!("private_key_jwt {name} ({alg}) sent by the proxy"),
            "alg": alg, "token": token, "public_key": data(public), "aud": aud,
            "claims": {"iss": format!("client-{name}"), "sub": format!("client-{name}"), "aud": aud,
                       "jti": claims["jti"]},
            "lifetime": 60, "kid": kid, "cert": data("rsa-cert.pem"),
        }));
    }
    // A fresh assertion (new jti, new signature) for every token request: the admin Test runs
    // the token request again, past the cache.
    let r = admin_test(&h, "es").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let report = String::from_utf8_lossy(&r.body).into_owned();
    let all = seen.lock().unwrap().clone();
    let (first, again) = (&all[2], all.last().unwrap());
    let (a, b) = (
        first.param("client_assertion").unwrap(),
        again.param("client_assertion").unwrap(),
    );
    assert_ne!(claims_of(a)["jti"], claims_of(b)["jti"]);
    assert!(!report.contains(b), "the Test report shows the assertion");
    h.server.shutdown().await;
    verify(cases);
}

#[tokio::test]
async fn client_secret_jwt_is_hs256_with_the_client_secret_and_refreshes_use_it_too() {
    let secret = "a-client-secret-of-more-than-32-bytes-Q7x";
    let (idp, seen) = capturing_idp().await;
    let text = format!(
        r#"
[[routes]]
prefix = "/a/"
upstream = "http://{{echo}}/echo/"
profiles = ["p", "pw"]

[profiles.p]
type = "oauth2_client_credentials"
token_url = "http://{idp}/token"
client_id = "client-hs"
client_secret = "${{SECRET}}"
client_auth = "client_secret_jwt"

[profiles.pw]
type = "oauth2_password"
token_url = "http://{idp}/token"
client_id = "client-hs"
client_secret = "${{SECRET}}"
client_auth = "client_secret_jwt"
username = "svc"
password = "pw"
"#
    );
    let h = Harness::start_with_env(&text, &[("SECRET", secret)]).await;
    let r = get(&h.url("/a/x"), &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.echoed("authorization"), ["Bearer tok-1"]);
    let r = get(&h.url("/a/x"), &[("X-Authsidecar-Profile", "pw")]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // The admin view names the method and hides the key.
    let r = get(
        &h.admin_url("/admin/profiles/p"),
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
    )
    .await;
    let shown = String::from_utf8_lossy(&r.body).into_owned();
    assert!(shown.contains("client_secret_jwt"), "{shown}");
    assert!(!shown.contains(secret), "{shown}");
    h.server.shutdown().await;
    let all = seen.lock().unwrap().clone();
    assert_eq!(all.len(), 2);
    let mut cases = Vec::new();
    for (s, grant) in all.iter().zip(["client_credentials", "password"]) {
        assert_eq!(s.param("grant_type"), Some(grant));
        assert_eq!(
            s.param("client_secret"),
            None,
            "the secret itself is never sent"
        );
        assert_eq!(s.authorization, None);
        assert_eq!(s.param("client_assertion_type"), Some(ASSERTION_TYPE));
        let token = s.param("client_assertion").unwrap();
        assert!(!token.contains(secret));
        assert_eq!(header_of(token).get("kid"), None);
        let aud = format!("http://{idp}/token");
        cases.push(json!({
            "kind": "jwt", "id": format!("client_secret_jwt {grant}"), "alg": "HS256",
            "token": token, "secret_b64": STANDARD.encode(secret), "aud": aud,
            "claims": {"iss": "client-hs", "sub": "client-hs", "aud": aud},
            "lifetime": 60,
        }));
    }
    verify(cases);
}

#[tokio::test]
async fn jwt_bearer_grant_sends_a_signed_assertion_and_caches_the_token() {
    let (idp, seen) = capturing_idp().await;
    let token_url = format!("http://{idp}/services/oauth2/token");
    let text = format!(
        r#"
[[routes]]
prefix = "/sf/"
upstream = "http://{{echo}}/echo/"
profiles = ["sf", "google"]

[[routes]]
prefix = "/t/"
upstream = "http://{{echo}}/echo/"
profiles = ["per-tenant"]

[profiles.sf]
type = "oauth2_jwt_bearer"
token_url = "{token_url}"
assertion_key = "{ec}"
assertion_kid = "sf-key-1"
assertion_lifetime = "5m"
token_params = {{ format = "json" }}
[profiles.sf.assertion_claims]
iss = "3MVG9-connected-app"
sub = "integration@example.com"
custom = {{ nested = [1, "two"] }}

[profiles.google]
type = "oauth2_jwt_bearer"
token_url = "{token_url}"
credentials_file = "{sa}"
[profiles.google.assertion_claims]
scope = "https://www.googleapis.com/auth/drive.readonly"
sub = "user@example.com"

[profiles.per-tenant]
type = "oauth2_jwt_bearer"
tenancy = true
token_url = "{token_url}"
assertion_key = "{ed}"
[profiles.per-tenant.assertion_claims]
iss = "issuer-app"
sub = "svc@{{{{tenant}}}}.example.com"
"#,
        ec = data_path("ec-pkcs8.pem"),
        ed = data_path("ed25519-pkcs8.pem"),
        sa = data_path("service-account.json"),
    );
    let h = Harness::start(&text).await;
    for _ in 0..3 {
        let r = get(&h.url("/sf/x"), &[]).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.echoed("authorization"), ["Bearer tok-1"], "cached");
    }
    let r = get(&h.url("/sf/x"), &[("X-Authsidecar-Profile", "google")]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.echoed("authorization"), ["Bearer tok-2"]);
    let r = get(&h.url("/t/x"), &[("X-Authsidecar-Tenant", "acme")]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.echoed("authorization"), ["Bearer tok-3"]);
    h.server.shutdown().await;
    let all = seen.lock().unwrap().clone();
    assert_eq!(all.len(), 3, "one token request per profile (and tenant)");
    for s in &all {
        assert_eq!(
            s.param("grant_type"),
            Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
        );
        assert_eq!(
            s.param("client_id"),
            None,
            "no client: the assertion is the grant"
        );
        assert_eq!(s.authorization, None);
    }
    assert_eq!(all[0].param("format"), Some("json"));
    let sa: Value = serde_json::from_str(&data("service-account.json")).unwrap();
    let (sf, google, tenant) = (
        all[0].param("assertion").unwrap(),
        all[1].param("assertion").unwrap(),
        all[2].param("assertion").unwrap(),
    );
    assert!(claims_of(sf)["jti"].is_string());
    verify(vec![
        json!({
            "kind": "jwt", "id": "jwt bearer, EC key, configured claims", "alg": "ES256",
            "token": sf, "public_key": data("ec-public.pem"), "aud": token_url,
            "claims": {"iss": "3MVG9-connected-app", "sub": "integration@example.com",
                       "aud": token_url, "custom": {"nested": [1, "two"]}},
            "lifetime": 300, "kid": "sf-key-1",
        }),
        json!({
            "kind": "jwt", "id": "jwt bearer, Google service-account key", "alg": "RS256",
            "token": google, "public_key": data("rsa-public.pem"), "aud": sa["token_uri"],
            "claims": {"iss": sa["client_email"], "aud": sa["token_uri"], "sub": "user@example.com",
                       "scope": "https://www.googleapis.com/auth/drive.readonly"},
            "lifetime": 3600, "kid": sa["private_key_id"],
        }),
        json!({
            "kind": "jwt", "id": "jwt bearer, {{tenant}} in a claim", "alg": "EdDSA",
            "token": tenant, "public_key": data("ed25519-public.pem"), "aud": token_url,
            "claims": {"iss": "issuer-app", "sub": "svc@acme.example.com"},
            "lifetime": 3600, "kid": null,
        }),
    ]);
}

/// Per-user delegation: `sub = "{{user}}"`. Tokens are kept per end user (one token request per
/// user, then the cache), each assertion names its user (checked by PyJWT), and a request without
/// `X-Authsidecar-User` is refused before any token request.
#[tokio::test]
async fn jwt_bearer_with_user_in_a_claim_keeps_one_token_per_user() {
    let (idp, seen) = capturing_idp().await;
    let token_url = format!("http://{idp}/oauth2/token");
    let text = format!(
        r#"
[[routes]]
prefix = "/d/"
upstream = "http://{{echo}}/echo/"
profiles = ["delegated"]

[profiles.delegated]
type = "oauth2_jwt_bearer"
token_url = "{token_url}"
credentials_file = "{sa}"
[profiles.delegated.assertion_claims]
scope = "https://www.googleapis.com/auth/calendar"
sub = "{{{{user}}}}@example.com"
"#,
        sa = data_path("service-account.json"),
    );
    let h = Harness::start(&text).await;
    let r = get(&h.url("/d/x"), &[]).await;
    assert_eq!(r.error_code(), "user_required");
    let mut tokens = Vec::new();
    for user in ["alice", "bob", "alice", "bob"] {
        let r = get(&h.url("/d/x"), &[("X-Authsidecar-User", user)]).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        tokens.push(r.echoed("authorization")[0].clone());
    }
    assert_ne!(tokens[0], tokens[1], "one token per user");
    assert_eq!(tokens[0], tokens[2], "alice's token is cached");
    assert_eq!(tokens[1], tokens[3], "bob's token is cached");
    h.server.shutdown().await;
    let all = seen.lock().unwrap().clone();
    assert_eq!(
        all.len(),
        2,
        "one token request per user, none without a user"
    );
    let sa: Value = serde_json::from_str(&data("service-account.json")).unwrap();
    verify(
        ["alice", "bob"]
            .iter()
            .zip(&all)
            .map(|(user, s)| {
                json!({
                    "kind": "jwt", "id": format!("jwt bearer for {user}"), "alg": "RS256",
                    "token": s.param("assertion").unwrap(), "public_key": data("rsa-public.pem"),
                    "aud": sa["token_uri"],
                    "claims": {"iss": sa["client_email"], "aud": sa["token_uri"],
                               "sub": format!("{user}@example.com"),
                               "scope": "https://www.googleapis.com/auth/calendar"},
                    "lifetime": 3600, "kid": sa["private_key_id"],
                })
            })
            .collect(),
    );
}

// ---------------------------------------------------------------------------------------------
// `check`

fn errors(text: &str) -> Vec<String> {
    let env = Env::from_pairs([("SECRET", "canary-secret-Q1x")])
        .with_base_dir(repo().join("tests/data/sign"));
    match Config::from_str_with_env(text, &env) {
        Ok(_) => panic!("config was accepted:\n{text}"),
        Err(e) => {
            let all: Vec<String> = e.0.iter().map(|e| e.to_string()).collect();
            for line in &all {
                assert!(!line.contains("canary-secret"), "secret in: {line}");
                assert!(!line.contains("MII"), "key material in: {line}");
            }
            all
        }
    }
}

const CC: &str = "[profiles.p]\ntype = \"oauth2_client_credentials\"\ntoken_url = \"https://idp.example.com/token\"\nclient_id = \"c\"\n";

#[test]
fn check_refuses_keys_that_cannot_sign_naming_the_key_path() {
    let all = errors(&format!(
        "{CC}client_auth = \"private_key_jwt\"\nclient_assertion_key = \"ec-sec1.pem\"\nclient_assertion_alg = \"RS256\"\n"
    ));
    has(&all, "profiles.p.client_assertion_key: ");
    has(&all, "cannot sign RS256");
    let all = errors(&format!(
        "{CC}client_auth = \"private_key_jwt\"\nclient_assertion_key = \"rsa1024-pkcs1.pem\"\n"
    ));
    has(&all, "profiles.p.client_assertion_key: ");
    has(&all, "1024");
    let all = errors(&format!(
        "{CC}client_auth = \"private_key_jwt\"\nclient_assertion_key = \"missing.pem\"\n"
    ));
    has(&all, "profiles.p.client_assertion_key: cannot read ");
    let all = errors(&format!(
        "{CC}client_auth = \"private_key_jwt\"\nclient_assertion_key = \"rsa-cert.pem\"\n"
    ));
    has(&all, "profiles.p.client_assertion_key: ");
    let all = errors(&format!(
        "{CC}client_auth = \"private_key_jwt\"\nclient_assertion_key = \"rsa-pkcs8.pem\"\nclient_assertion_alg = \"HS256\"\n"
    ));
    has(
        &all,
        "profiles.p.client_assertion_alg: unknown algorithm \"HS256\"",
    );
    let all = errors(&format!("{CC}client_auth = \"private_key_jwt\"\n"));
    has(
        &all,
        "profiles.p.client_assertion_key: required with client_auth = \"private_key_jwt\"",
    );
    let all = errors(&format!(
        "{CC}client_auth = \"private_key_jwt\"\nclient_assertion_key = \"rsa-pkcs8.pem\"\nclient_secret = \"${{SECRET}}\"\n"
    ));
    has(
        &all,
        "profiles.p.client_secret: set, but client_auth = \"private_key_jwt\" never sends it",
    );
    let all = errors(&format!(
        "{CC}client_secret = \"${{SECRET}}\"\nclient_assertion_key = \"rsa-pkcs8.pem\"\nclient_assertion_audience = \"x\"\n"
    ));
    has(
        &all,
        "profiles.p.client_assertion_key: only used with client_auth = \"private_key_jwt\"",
    );
    has(&all, "profiles.p.client_assertion_audience: only used with");
    let all = errors(&format!("{CC}client_auth = \"client_secret_jwt\"\n"));
    has(
        &all,
        "profiles.p.client_secret: required with client_auth = \"client_secret_jwt\"",
    );
    let all = errors(&format!("{CC}client_auth = \"jwt\"\n"));
    has(
        &all,
        "expected basic, post, none, private_key_jwt or client_secret_jwt",
    );
}

const JB: &str =
    "[profiles.j]\ntype = \"oauth2_jwt_bearer\"\ntoken_url = \"https://idp.example.com/token\"\n";

#[test]
fn check_refuses_jwt_bearer_settings_that_cannot_work() {
    let all = errors(JB);
    has(
        &all,
        "profiles.j.assertion_key: required for type \"oauth2_jwt_bearer\"",
    );
    let all = errors(&format!(
        "{JB}assertion_key = \"rsa-pkcs8.pem\"\nassertion_lifetime = \"2h\"\n[profiles.j.assertion_claims]\nsub = \"{{{{user}}}}\"\niat = 5\n"
    ));
    has(
        &all,
        "profiles.j.assertion_lifetime: expected whole seconds from \"60s\" to \"1h\"",
    );
    assert!(
        !all.iter().any(|e| e.contains("assertion_claims.sub")),
        "{{{{user}}}} is allowed in a claim: {all:?}"
    );
    has(&all, "profiles.j.assertion_claims.iat: set by the sidecar");
    has(&all, "profiles.j.assertion_claims.iss: required");
    let all = errors(&format!(
        "{JB}assertion_key = \"ed25519-pkcs8.pem\"\nassertion_alg = \"ES256\"\n[profiles.j.assertion_claims]\niss = \"a\"\nsub = \"b\"\n"
    ));
    has(&all, "profiles.j.assertion_key: ");
    has(&all, "cannot sign ES256");
    let all = errors(&format!(
        "{JB}credentials_file = \"service-account.json\"\nassertion_kid = \"k\"\n[profiles.j.assertion_claims]\naud = \"x\"\n"
    ));
    has(
        &all,
        "profiles.j.assertion_kid: comes from credentials_file",
    );
    has(
        &all,
        "profiles.j.assertion_claims.aud: comes from credentials_file",
    );
    let all = errors(&format!("{JB}credentials_file = \"rsa-pkcs8.pem\"\n"));
    has(&all, "profiles.j.credentials_file: ");
    has(&all, "not JSON");
    let all = errors(&format!(
        "{JB}assertion_key = \"rsa-pkcs8.pem\"\n[profiles.j.assertion_claims]\niss = \"a\"\nsub = \"{{{{tenant}}}}\"\n"
    ));
    has(
        &all,
        "profiles.j.assertion_claims.sub: uses {{tenant}} but the profile has tenancy = false",
    );
    let all = errors(&format!(
        "{JB}client_id = \"c\"\nclient_auth = \"client_secret_jwt\"\nassertion_key = \"rsa-pkcs8.pem\"\n[profiles.j.assertion_claims]\niss = \"a\"\nsub = \"b\"\n"
    ));
    has(
        &all,
        "profiles.j.client_secret: required with client_auth = \"client_secret_jwt\"",
    );
}

#[test]
fn relative_key_paths_are_read_from_the_config_folder() {
    let env = Env::from_pairs([("SECRET", "s")]).with_base_dir(repo().join("tests/data/sign"));
    let text = "[[routes]]\nprefix = \"/a/\"\nupstream = \"https://api.example.com/\"\nprofiles = [\"j\", \"p\"]\n\n\
                [profiles.j]\ntype = \"oauth2_jwt_bearer\"\ncredentials_file = \"service-account.json\"\n\
                [profiles.j.assertion_claims]\nscope = \"s\"\n\n\
                [profiles.p]\ntype = \"oauth2_client_credentials\"\ntoken_url = \"https://idp.example.com/token\"\n\
                client_id = \"c\"\nclient_auth = \"private_key_jwt\"\nclient_assertion_key = \"ed25519-pkcs8.pem\"\n";
    let config = Config::from_str_with_env(text, &env).unwrap_or_else(|e| panic!("{e}"));
    let j = config.profile("j").unwrap().kind.oauth().unwrap();
    // The token URL defaults to the key file's token_uri.
    assert_eq!(j.token_url, "https://oauth2.googleapis.com/token");
    let shown = format!("{config:?}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    assert!(shown.contains("BearerAssertionKey(RS256"), "{shown}");
    assert!(shown.contains("ClientAssertionKey(EdDSA"), "{shown}");
}

// ---------------------------------------------------------------------------------------------
// A certified OpenID provider

/// The public JWK of a test key with its RFC 7638 thumbprint as `kid` (the sidecar's default).
fn public_jwk(pem: &str) -> Value {
    let key = authsidecar::sign::PrivateKey::from_pem(data(pem).as_bytes()).unwrap();
    let jwk = key.public_jwk();
    let mut v: Value = serde_json::from_str(&jwk.canonical_json()).unwrap();
    v["kid"] = jwk.thumbprint().into();
    v["use"] = "sig".into();
    v
}

#[tokio::test]
async fn oidc_provider_accepts_private_key_jwt_and_client_secret_jwt() {
    let secret = "client-secret-jwt-shared-secret-0123456789-abcdef";
    let keys = [
        ("rs", "RS256", "rsa-pkcs8.pem"),
        ("ps", "PS256", "rsa-pkcs1.pem"),
        ("es", "ES256", "ec-sec1.pem"),
        ("ed", "EdDSA", "ed25519-pkcs8.pem"),
    ];
    let mut clients: Vec<Value> = keys
        .iter()
        .map(|(name, alg, pem)| {
            json!({
                "client_id": format!("pk-{name}"),
                "token_endpoint_auth_method": "private_key_jwt",
                "token_endpoint_auth_signing_alg": alg,
                "jwks": {"keys": [public_jwk(pem)]},
            })
        })
        .collect();
    clients.push(json!({
        "client_id": "cs",
        "client_secret": secret,
        "token_endpoint_auth_method": "client_secret_jwt",
        "token_endpoint_auth_signing_alg": "HS256",
    }));
    // A client whose registered key is not the one the sidecar signs with: refused.
    clients.push(json!({
        "client_id": "pk-wrong",
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [public_jwk("rsa-e3-pkcs8.pem")]},
    }));
    let tmp = TempDir::new("oidc-provider");
    let out = tmp.path().join("out.log");
    let (p, port) = proc::oidc_provider(tmp.path(), &json!(clients), None).await;
    let token_url = format!("http://127.0.0.1:{port}/token");
    let mut text = String::new();
    for (name, alg, pem) in keys {
        // One profile names only the provider's issuer: its token endpoint (and so the
        // assertion's audience) comes from the provider's discovery document.
        let endpoint = if name == "es" {
            format!("issuer = \"http://127.0.0.1:{port}\"")
        } else {
            format!("token_url = \"{token_url}\"")
        };
        text.push_str(&format!(
            "[[routes]]\nprefix = \"/{name}/\"\nupstream = \"http://{{echo}}/echo/\"\nprofiles = [\"{name}\"]\n\n\
             [profiles.{name}]\ntype = \"oauth2_client_credentials\"\n{endpoint}\n\
             client_id = \"pk-{name}\"\nclient_auth = \"private_key_jwt\"\nclient_assertion_key = \"{}\"\n\
             client_assertion_alg = \"{alg}\"\n\n",
            data_path(pem),
        ));
    }
    text.push_str(&format!(
        "[[routes]]\nprefix = \"/cs/\"\nupstream = \"http://{{echo}}/echo/\"\nprofiles = [\"cs\", \"wrong\"]\n\n\
         [profiles.cs]\ntype = \"oauth2_client_credentials\"\ntoken_url = \"{token_url}\"\n\
         client_id = \"cs\"\nclient_secret = \"${{SECRET}}\"\nclient_auth = \"client_secret_jwt\"\n\n\
         [profiles.wrong]\ntype = \"oauth2_client_credentials\"\ntoken_url = \"{token_url}\"\n\
         client_id = \"pk-wrong\"\nclient_auth = \"private_key_jwt\"\nclient_assertion_key = \"{}\"\n",
        data_path("rsa-pkcs8.pem"),
    ));
    let h = Harness::start_with_env(&text, &[("SECRET", secret)]).await;
    let mut bearer = Vec::new();
    for name in ["rs", "ps", "es", "ed", "cs"] {
        let r = get(&h.url(&format!("/{name}/x")), &[]).await;
        assert_eq!(
            r.status,
            200,
            "{name}: {}\n{}",
            String::from_utf8_lossy(&r.body),
            std::fs::read_to_string(&out).unwrap_or_default()
        );
        let auth = r.echoed("authorization");
        assert_eq!(auth.len(), 1);
        bearer.push((name, auth[0].strip_prefix("Bearer ").unwrap().to_string()));
    }
    let r = get(&h.url("/cs/x"), &[("X-Authsidecar-Profile", "wrong")]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.error_code(), "idp_rejected");
    h.server.shutdown().await;
    let log = std::fs::read_to_string(&out).unwrap();
    // Every token the upstream received is one the provider issued to that client.
    for (name, token) in &bearer {
        let client = if *name == "cs" {
            "cs".to_string()
        } else {
            format!("pk-{name}")
        };
        assert!(
            log.lines().any(|l| l == format!("ISSUED {client} {token}")),
            "{name}: the upstream got a token the provider did not issue to {client}:\n{log}"
        );
    }
    assert!(
        log.lines()
            .any(|l| l.starts_with("ERROR pk-wrong invalid_client")),
        "{log}"
    );
    drop(p);
}

// ---------------------------------------------------------------------------------------------
// The mock provider verifies JWT client authentication and the JWT bearer grant

fn keys_of(file: &str) -> authsidecar::sign::verify::PublicKeys {
    authsidecar::sign::verify::PublicKeys::load(data(file).as_bytes()).unwrap()
}

async fn post_form(url: &str, form: &[(&str, &str)]) -> Resp {
    let body: String = form
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&");
    send(
        Method::POST,
        url,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body,
    )
    .await
}

/// The mock provider set up for three JWT profiles: `pk` (`private_key_jwt`, an EC key), `cs`
/// (`client_secret_jwt` with `secret`) and `bearer` (the JWT bearer grant, an Ed25519 key), all on
/// the route `/api/` to the mock's protected resource. The config has `{echo}` for the mock.
pub(crate) fn jwt_profiles_and_mock(secret: &str) -> (authsidecar::mock::MockSettings, String) {
    let mut settings = authsidecar::mock::MockSettings::default();
    settings.clients.push(("cs-client".into(), secret.into()));
    settings
        .client_keys
        .push(("pk-client".into(), keys_of("ec-public.pem")));
    settings
        .bearer_issuers
        .push(("svc-issuer".into(), keys_of("ed25519-public.pem")));
    let text = format!(
        r#"
[[routes]]
prefix = "/api/"
upstream = "http://{{echo}}/protected/"
profiles = ["pk", "cs", "bearer"]

[profiles.pk]
type = "oauth2_client_credentials"
token_url = "http://{{echo}}/oauth/token"
client_id = "pk-client"
client_auth = "private_key_jwt"
client_assertion_key = "{ec}"

[profiles.cs]
type = "oauth2_client_credentials"
token_url = "http://{{echo}}/oauth/token"
client_id = "cs-client"
client_secret = "{secret}"
client_auth = "client_secret_jwt"

[profiles.bearer]
type = "oauth2_jwt_bearer"
token_url = "http://{{echo}}/oauth/token"
assertion_key = "{ed}"
scope = {{ scope = "read" }}
[profiles.bearer.assertion_claims]
iss = "svc-issuer"
sub = "alice"
"#,
        ec = data_path("ec-sec1.pem"),
        ed = data_path("ed25519-pkcs8.pem"),
    );
    (settings, text)
}

#[tokio::test]
async fn the_mock_provider_verifies_client_assertions_and_bearer_assertions() {
    use authsidecar::sign::{jwt, PrivateKey};
    let secret = "mock-client-secret-jwt-0123456789abcdef";
    let (settings, text) = jwt_profiles_and_mock(secret);
    let h = Harness::start_full(&text, &[], settings).await;
    for p in ["pk", "cs", "bearer"] {
        let r = get(&h.url("/api/x"), &[("X-Authsidecar-Profile", p)]).await;
        assert_eq!(r.status, 200, "{p}: {}", String::from_utf8_lossy(&r.body));
    }
    // The admin Test of a JWT bearer profile runs its token request and reports the type.
    let r = admin_test(&h, "bearer").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["type"],
        "oauth2_jwt_bearer",
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.json()["ok"], true);
    let c = h.echo.counters();
    use std::sync::atomic::Ordering::SeqCst;
    assert_eq!(c.client_assertions.load(SeqCst), 2);
    assert_eq!(c.jwt_bearer.load(SeqCst), 2);
    assert_eq!(c.resource_ok.load(SeqCst), 3);

    // What the mock refuses, each with its reason.
    let token_url = h.echo.token_url();
    let ec = PrivateKey::from_pem(data("ec-sec1.pem").as_bytes()).unwrap();
    let signer = jwt::Signer::new(jwt::Algorithm::Es256, &ec).unwrap();
    let now = authsidecar::sign::unix_now();
    let refused = |r: &Resp, why: &str| {
        let body = String::from_utf8_lossy(&r.body).into_owned();
        assert!(body.contains(why), "{body}");
    };
    let client_auth = |assertion: &str| {
        vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", "pk-client".to_string()),
            ("client_assertion_type", ASSERTION_TYPE.to_string()),
            ("client_assertion", assertion.to_string()),
        ]
    };
    let send_auth = |form: Vec<(&'static str, String)>| {
        let url = token_url.clone();
        async move {
            let f: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post_form(&url, &f).await
        }
    };
    let good =
        jwt::client_assertion(&signer, "pk-client", &token_url, now, &jwt::fresh_jti()).unwrap();
    let r = send_auth(client_auth(&good)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = send_auth(client_auth(&good)).await;
    assert_eq!(r.status, 401);
    refused(&r, "jti replayed");
    let other_aud =
        jwt::client_assertion(&signer, "pk-client", "https://elsewhere/token", now, "j1").unwrap();
    refused(&send_auth(client_auth(&other_aud)).await, "aud is not");
    let expired = jwt::client_assertion(&signer, "pk-client", &token_url, now - 600, "j2").unwrap();
    refused(&send_auth(client_auth(&expired)).await, "expired");
    let ed = PrivateKey::from_pem(data("ed25519-pkcs8.pem").as_bytes()).unwrap();
    let wrong_key = jwt::client_assertion(
        &jwt::Signer::new(jwt::Algorithm::EdDsa, &ed).unwrap(),
        "pk-client",
        &token_url,
        now,
        "j3",
    )
    .unwrap();
    refused(
        &send_auth(client_auth(&wrong_key)).await,
        "no registered key verifies alg",
    );
    let wrong_secret = jwt::client_assertion(
        &jwt::Signer::hs256(b"not-the-secret"),
        "cs-client",
        &token_url,
        now,
        "j4",
    )
    .unwrap();
    let mut form = client_auth(&wrong_secret);
    form[1].1 = "cs-client".into();
    refused(&send_auth(form).await, "does not verify");
    // A client secret beside the assertion: two methods.
    let mut form = client_auth(&good);
    form.push(("client_secret", "x".into()));
    refused(
        &send_auth(form).await,
        "more than one client authentication method",
    );

    // The bearer grant: an untrusted issuer, a replayed jti.
    let ed_signer = jwt::Signer::new(jwt::Algorithm::EdDsa, &ed).unwrap();
    let claims = |iss: &str, jti: &str| {
        serde_json::from_value::<serde_json::Map<String, Value>>(
            json!({"iss": iss, "sub": "bob", "aud": token_url, "jti": jti}),
        )
        .unwrap()
    };
    let grant = |a: String| {
        vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:jwt-bearer".to_string(),
            ),
            ("assertion", a),
        ]
    };
    let a = jwt::bearer_assertion(&ed_signer, &claims("svc-issuer", "b1"), now, 300).unwrap();
    let r = send_auth(grant(a.clone())).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["mock_grant"], "jwt_bearer");
    let r = send_auth(grant(a)).await;
    assert_eq!(r.status, 400);
    refused(&r, "jti replayed");
    let a = jwt::bearer_assertion(&ed_signer, &claims("someone-else", "b2"), now, 300).unwrap();
    refused(
        &send_auth(grant(a)).await,
        "issuer someone-else is not trusted",
    );
    h.server.shutdown().await;
}

#[test]
fn mock_provider_keys_are_checked() {
    let env = Env::default().with_base_dir(repo().join("tests/data/sign"));
    let base = "[[routes]]\nprefix = \"/a/\"\nupstream = \"https://api.example.com/\"\nprofiles = [\"n\"]\n\
                [profiles.n]\ntype = \"none\"\n[mock_provider]\nlisten = \"127.0.0.1:0\"\n";
    let ok = format!("{base}client_keys = \"ec-public.pem\"\nbearer_issuer = \"svc\"\nbearer_keys = \"ed25519-pkcs8.pem\"\n");
    let c = Config::from_str_with_env(&ok, &env).unwrap_or_else(|e| panic!("{e}"));
    let m = c.mock_provider.unwrap();
    assert_eq!(m.client_keys, Some(keys_of("ec-public.pem")));
    let bad = format!("{base}client_keys = \"service-account.json\"\nbearer_issuer = \"svc\"\n");
    let e = Config::from_str_with_env(&bad, &env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("mock_provider.client_keys: "), "{e}");
    assert!(
        e.contains("mock_provider.bearer_keys: required with bearer_issuer"),
        "{e}"
    );
}

#[test]
fn a_changed_key_or_claim_is_a_new_token_cache_key() {
    let env = Env::default().with_base_dir(repo().join("tests/data/sign"));
    let fingerprint = |key: &str, sub: &str| {
        let text = format!(
            "[[routes]]\nprefix = \"/a/\"\nupstream = \"https://api.example.com/\"\nprofiles = [\"j\"]\n\
             [profiles.j]\ntype = \"oauth2_jwt_bearer\"\ntenancy = true\ntoken_url = \"https://idp.example.com/token\"\n\
             assertion_key = \"{key}\"\n[profiles.j.assertion_claims]\niss = \"i\"\nsub = \"{sub}\"\n"
        );
        let c = Config::from_str_with_env(&text, &env).unwrap_or_else(|e| panic!("{e}"));
        let f = c.profile("j").unwrap().kind.oauth().unwrap().fingerprint;
        f
    };
    let base = fingerprint("ec-sec1.pem", "svc@{{tenant}}.example.com");
    assert_eq!(
        base,
        fingerprint("ec-pkcs8.pem", "svc@{{tenant}}.example.com"),
        "same key"
    );
    assert_ne!(
        base,
        fingerprint("ed25519-pkcs8.pem", "svc@{{tenant}}.example.com")
    );
    assert_ne!(
        base,
        fingerprint("ec-sec1.pem", "bot@{{tenant}}.example.com")
    );
}
