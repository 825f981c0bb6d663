//! Secrets audit: a sidecar process at TRACE level runs the suite's scenarios (machine grants, the
//! password grant, static keys, an end user's login with a secret PIN, per-user keys, replays, IdP
//! faults, test authorization, revocation, the console, `check` and `test-auth`) with unique canary
//! secrets. Then every log line, every answer the sidecar made itself (errors, pages, admin API,
//! metrics) and the CLI output are searched for every canary, every issued token and every
//! authorization code: zero hits.

use std::process::{Command, Stdio};
use std::time::Duration;

use authsidecar::mock::{MockProvider, MockSettings, TokenFault};
use base64::Engine;
use http::Method;

use crate::support::fleet::started;
use crate::support::*;

const CLIENT_ID: &str = "audit-client";
const CLIENT_SECRET: &str = "canary-client-secret-Q1x";
const USERNAME: &str = "audit-user";
const PASSWORD: &str = "canary-password-Q2x";
const PIN: &str = "canaryPIN-Q3x";
const API_KEY: &str = "canary-api-key-Q4x";
const BASIC_PASSWORD: &str = "canary-basic-pass-Q5x";
const USER_KEY: &str = "canary-user-key-Q6x";
const ADMIN: &str = "canary-admin-token-Q7x-0123456789";

/// Every listener on port 0; `public_url` with port 0 takes the auth listener's port.
fn config(mock: std::net::SocketAddr, store: &str, key: &str) -> String {
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
workers = 1

[admin]
listen = "127.0.0.1:0"
token = "{ADMIN}"

[auth]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:0"

[store]
kind = "file"
path = "{store}"
key = "{key}"

[[routes]]
prefix = "/cc/"
upstream = "http://{mock}/protected/"
profiles = ["cc"]

[[routes]]
prefix = "/pw/"
upstream = "http://{mock}/protected/"
profiles = ["pw"]

[[routes]]
prefix = "/static/"
upstream = "http://{mock}/echo/"
profiles = ["key", "basic"]

[[routes]]
prefix = "/u/"
upstream = "http://{mock}/protected/"
profiles = ["user"]

[[routes]]
prefix = "/uk/"
upstream = "http://{mock}/echo/"
profiles = ["ukey"]

[profiles.cc]
type = "oauth2_client_credentials"
token_url = "http://{mock}/oauth/token"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
reauth_min_token_age = "0s"

[profiles.pw]
type = "oauth2_password"
token_url = "http://{mock}/oauth/token"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
client_auth = "post"
username = "{USERNAME}"
password = "{PASSWORD}"

[profiles.key]
type = "api_key"
api_key = "{API_KEY}"
[[profiles.key.fields]]
in = "query"
key = "api_key"
value = "{{{{api_key}}}}"

[profiles.basic]
type = "basic"
username = "{USERNAME}"
password = "{BASIC_PASSWORD}"

[profiles.user]
type = "oauth2_authorization_code"
authorization_url = "http://{mock}/oauth/authorize"
token_url = "http://{mock}/oauth/token"
revocation_url = "http://{mock}/oauth/revoke"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
[[profiles.user.user_fields]]
key = "pin"
label = "PIN"
secret = true
pattern = "^[A-Za-z0-9-]{{4,40}}$"
[[profiles.user.fields]]
in = "header"
key = "Authorization"
value = "Bearer {{{{access_token}}}}"
[[profiles.user.fields]]
in = "header"
key = "X-Pin"
value = "{{{{user_field.pin}}}}"

[profiles.ukey]
type = "api_key"
per_user = true
[[profiles.ukey.fields]]
in = "header"
key = "X-Api-Key"
value = "{{{{api_key}}}}"
"#
    )
}

/// What the sidecar answered itself, collected for the search.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    fn add(&mut self, what: &str, r: &Resp) -> String {
        let mut text = format!("{what}: {}\n", r.status);
        for (k, v) in &r.headers {
            text.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
        }
        text.push_str(&String::from_utf8_lossy(&r.body));
        self.0.push(text.clone());
        text
    }
}

async fn form(url: &str, body: &str, headers: &[(&str, &str)]) -> Resp {
    let mut h = vec![("content-type", "application/x-www-form-urlencoded")];
    h.extend_from_slice(headers);
    send(Method::POST, url, &h, body.to_string()).await
}

/// `name=` from a URL's query.
fn query_param(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    authsidecar::inject::encode::parse_form(q.as_bytes())
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_errors_metrics_or_admin_output() {
    let mock = MockProvider::start_with(
        ([127, 0, 0, 1], 0).into(),
        MockSettings {
            clients: vec![(CLIENT_ID.into(), CLIENT_SECRET.into())],
            users: vec![(USERNAME.into(), PASSWORD.into())],
            ..MockSettings::default()
        },
    )
    .await
    .unwrap();
    let dir = TempDir::new("audit");
    let store_key = authsidecar::store::crypto::generate_key();
    let path = dir.join("audit.toml");
    let log_path = dir.join("sidecar.log");
    std::fs::write(
        &path,
        config(
            mock.addr,
            &dir.join("grants.db").display().to_string(),
            &store_key,
        ),
    )
    .unwrap();
    let mut child = Proc::spawn(
        "authsidecar",
        Command::new(env!("CARGO_BIN_EXE_authsidecar"))
            .args(["run", "-c"])
            .arg(&path)
            .env("RUST_LOG", "trace")
            .stdout(std::fs::File::create(dir.join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(&log_path).unwrap()),
    );
    let at = started(&mut child, &log_path, Duration::from_secs(20)).await;
    let base = format!("http://{}", at.proxy);
    let admin = format!("http://{}", at.admin);
    let bearer = format!("Bearer {ADMIN}");
    let auth = [("authorization", bearer.as_str())];
    let mut seen = Seen::default();
    let mut codes = Vec::new();

    // Machine grants, static credentials (the API key in the query: the access log redacts it).
    for (url, headers) in [
        (format!("{base}/cc/a?x=1"), vec![]),
        (format!("{base}/pw/a"), vec![]),
        (format!("{base}/static/a?api_key=client-sent&b=2"), vec![]),
        (
            format!("{base}/static/a"),
            vec![("x-authsidecar-profile", "basic")],
        ),
    ] {
        let r = get(&url, &headers).await;
        assert_eq!(r.status, 200, "{url}: {}", String::from_utf8_lossy(&r.body));
    }
    // An upstream 401: refresh and replay.
    mock.state.reject_resource(1);
    assert_eq!(get(&format!("{base}/cc/replay"), &[]).await.status, 200);

    // An end user's login with a secret PIN.
    let r = get(&format!("{base}/u/me"), &[("x-authsidecar-user", "alice")]).await;
    seen.add("authorization_required", &r);
    assert_eq!(r.error_code(), "authorization_required");
    let login = r.json()["error"]["login_url"].as_str().unwrap().to_string();
    seen.add("start page", &get(&login, &[]).await);
    let bad = form(&login, "f.pin=bad%20pin", &[]).await;
    assert_eq!(bad.status, 400);
    seen.add("start page, bad PIN", &bad);
    let to_idp = form(&login, &format!("f.pin={PIN}"), &[]).await;
    assert_eq!(
        to_idp.status,
        303,
        "{}",
        String::from_utf8_lossy(&to_idp.body)
    );
    let to_callback = get(&location(&to_idp), &[]).await;
    let callback = location(&to_callback);
    codes.push(query_param(&callback, "code").expect("a code in the callback"));
    let done = get(&callback, &[]).await;
    assert_eq!(done.status, 200);
    seen.add("callback", &done);
    // The callback replayed: refused, and no code, state or token in the page.
    seen.add("replayed callback", &get(&callback, &[]).await);
    let r = get(&format!("{base}/u/me"), &[("x-authsidecar-user", "alice")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echoed("x-pin"), [PIN], "the PIN reached the upstream");

    // A per-user API key entered on the start page.
    let r = get(&format!("{base}/uk/x"), &[("x-authsidecar-user", "bob")]).await;
    let login = r.json()["error"]["login_url"].as_str().unwrap().to_string();
    let r = form(&login, &format!("api_key={USER_KEY}"), &[]).await;
    assert_eq!(r.status, 200);
    seen.add("per-user key stored", &r);
    let r = get(&format!("{base}/uk/x"), &[("x-authsidecar-user", "bob")]).await;
    assert_eq!(r.echoed("x-api-key"), [USER_KEY]);

    // Caller mistakes and IdP faults, each answered by the sidecar.
    for (what, url, headers) in [
        ("no route", format!("{base}/nowhere"), vec![]),
        ("no user", format!("{base}/u/me"), vec![]),
        (
            "bad tenant",
            format!("{base}/cc/x"),
            vec![("x-authsidecar-tenant", "a/b")],
        ),
        (
            "bad profile",
            format!("{base}/cc/x"),
            vec![("x-authsidecar-profile", "pw")],
        ),
    ] {
        let r = get(&url, &headers).await;
        assert!(r.status.as_u16() >= 400, "{what}");
        seen.add(what, &r);
    }
    for fault in [
        TokenFault::InvalidClient,
        TokenFault::Garbage,
        TokenFault::ServerError,
        TokenFault::Html,
    ] {
        mock.state.set_token_fault(Some(fault), Some(1));
        let r = send(
            Method::POST,
            &format!("{admin}/admin/profiles/cc/test"),
            &auth,
            "",
        )
        .await;
        assert_eq!(r.json()["ok"], false);
        seen.add("test-auth with a fault", &r);
    }
    mock.state.clear_faults();
    for (what, method, url) in [
        (
            "test ok",
            Method::POST,
            format!("{admin}/admin/profiles/cc/test?store=true"),
        ),
        (
            "test pw",
            Method::POST,
            format!("{admin}/admin/profiles/pw/test"),
        ),
        ("profiles", Method::GET, format!("{admin}/admin/profiles")),
        (
            "profile",
            Method::GET,
            format!("{admin}/admin/profiles/user"),
        ),
        ("tokens", Method::GET, format!("{admin}/admin/tokens")),
        (
            "revoke",
            Method::DELETE,
            format!("{admin}/admin/tokens/user?user=alice"),
        ),
        ("reload", Method::POST, format!("{admin}/admin/reload")),
    ] {
        let r = send(method, &url, &auth, "").await;
        assert!(
            r.status.is_success(),
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        seen.add(what, &r);
    }
    seen.add(
        "wrong admin token",
        &get(
            &format!("{admin}/admin/tokens"),
            &[("authorization", "Bearer canary-admin-token-Q7x-wrong")],
        )
        .await,
    );
    // Console: sign in with the admin token, the page, a wrong sign-in.
    let r = form(
        &format!("{admin}/admin/login"),
        &format!("token={ADMIN}"),
        &[],
    )
    .await;
    assert_eq!(r.status, 303);
    let cookie = seen
        .add("console sign-in", &r)
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string();
    seen.add(
        "console",
        &get(&format!("{admin}/admin/"), &[("cookie", &cookie)]).await,
    );
    seen.add(
        "console, wrong token",
        &form(&format!("{admin}/admin/login"), "token=wrong", &[]).await,
    );
    let metrics = get(&format!("{admin}/metrics"), &[]).await;
    let metrics_text = seen.add("metrics", &metrics);
    assert!(
        metrics_text.contains("authsidecar_requests_total"),
        "{metrics_text}"
    );
    seen.add("readyz", &get(&format!("{admin}/readyz"), &[]).await);

    // The CLI at TRACE level: check and test-auth.
    for args in [
        vec!["check"],
        vec!["test-auth", "cc"],
        vec!["test-auth", "pw", "--json"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_authsidecar"))
            .args(&args)
            .arg("-c")
            .arg(&path)
            .env("RUST_LOG", "trace")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        seen.0.push(format!(
            "{args:?}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    child.kill();
    let log = std::fs::read_to_string(&log_path).unwrap();

    // The log is the real thing: TRACE lines from the sidecar and its libraries, access lines.
    assert!(log.lines().count() > 100, "too little log: {log}");
    assert!(log.contains("TRACE"), "not at TRACE level");
    assert!(log.contains("authsidecar::access"), "no access lines");
    assert!(
        log.contains("query=\"api_key=REDACTED&b=2\""),
        "the caller's api_key is not redacted in the access log"
    );
    let tokens = mock.state.issued_tokens();
    assert!(tokens.len() >= 5, "{tokens:?}");
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{USERNAME}:{BASIC_PASSWORD}"));
    let mut canaries: Vec<String> = [
        CLIENT_SECRET,
        PASSWORD,
        PIN,
        API_KEY,
        BASIC_PASSWORD,
        USER_KEY,
        ADMIN,
        &store_key,
        &basic,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    canaries.extend(tokens);
    canaries.extend(codes);
    let mut hits = Vec::new();
    for c in &canaries {
        for (i, line) in log.lines().enumerate() {
            if line.contains(c.as_str()) {
                hits.push(format!("log line {}: {line}", i + 1));
            }
        }
        for text in &seen.0 {
            if text.contains(c.as_str()) {
                hits.push(format!("answer: {text}"));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "{} secret(s) leaked:\n{}",
        hits.len(),
        hits.join("\n")
    );
}

/// `{:?}` of what holds secrets (the loaded config with its environment, an authorization in
/// progress, a stored grant and the cached token made from it) shows none of them: every secret
/// role's `Debug` is redacted, and no type that holds one derives a `Debug` that is not.
#[test]
fn debug_output_never_shows_a_secret() {
    use authsidecar::config::{Config, Env};
    use authsidecar::secret::{EnteredValue, PkceVerifier};

    let store_key = authsidecar::store::crypto::generate_key();
    let key_bytes = format!(
        "{:?}",
        authsidecar::store::crypto::parse_key(&store_key)
            .unwrap()
            .expose()
    );
    let canaries: Vec<(&str, String)> = vec![
        ("ADMIN", ADMIN.to_string()),
        ("CLIENT_SECRET", CLIENT_SECRET.to_string()),
        ("PASSWORD", PASSWORD.to_string()),
        ("API_KEY", API_KEY.to_string()),
        ("BASIC_PASSWORD", BASIC_PASSWORD.to_string()),
        ("CONNECTOR_USER", "canary-connector-user-QJx".into()),
        ("CONNECTOR_PASSWORD", "canary-connector-pass-Q8x".into()),
        ("BASIC_USER", "canary-basic-user-QKx".into()),
        ("MOCK_SECRET", "canary-mock-secret-Q9x".into()),
        ("MOCK_PASSWORD", "canary-mock-password-QAx".into()),
        ("FIELD_LITERAL", "canary-field-literal-QBx".into()),
        ("QUERY_LITERAL", "canary-query-literal-QCx".into()),
        ("REDIS_PASSWORD", "canary-redis-pass-QDx".into()),
        ("UNUSED", "canary-unused-variable-QEx".into()),
        ("STORE_KEY", store_key.clone()),
        ("AWS_SECRET", "canary-aws-secret-access-key-QLx".into()),
        ("AWS_SESSION", "canary-aws-session-token-QMx".into()),
        ("HMAC_SECRET", "canary-hmac-secret-QNx".into()),
        ("CONSUMER_SECRET", "canary-consumer-secret-QOx".into()),
        ("OAUTH1_TOKEN", "canary-oauth1-token-QPx".into()),
        (
            "OAUTH1_TOKEN_SECRET",
            "canary-oauth1-token-secret-QRx".into(),
        ),
    ];
    let env = Env::from_pairs(canaries.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let common = r#"
[admin]
listen = "127.0.0.1:0"
token = "${ADMIN}"

[auth]
listen = "127.0.0.1:0"
public_url = "https://auth.example.com"

[mock_provider]
listen = "127.0.0.1:0"
client_secret = "${MOCK_SECRET}"
password = "${MOCK_PASSWORD}"

[connectors.corp]
url = "http://127.0.0.1:3128"
username = "${CONNECTOR_USER}"
password = "${CONNECTOR_PASSWORD}"

[[routes]]
prefix = "/a/"
upstream = "https://api.example.com/x?sig=${QUERY_LITERAL}"
profiles = ["cc", "pw", "key", "basic", "user", "v4", "mac", "o1"]
connector = "corp"

[profiles.v4]
type = "aws_sigv4"
access_key_id = "AKIDAUDIT"
secret_access_key = "${AWS_SECRET}"
session_token = "${AWS_SESSION}"
region = "us-east-1"
service = "s3"

[profiles.mac]
type = "hmac"
secret = "${HMAC_SECRET}"
string_to_sign = "{{method}}\n{{path}}\n{{timestamp}}"
[[profiles.mac.fields]]
in = "header"
key = "X-Signature"
value = "{{signature}}"

[profiles.o1]
type = "oauth1"
consumer_key = "audit-consumer"
consumer_secret = "${CONSUMER_SECRET}"
token = "${OAUTH1_TOKEN}"
token_secret = "${OAUTH1_TOKEN_SECRET}"

[profiles.cc]
type = "oauth2_client_credentials"
token_url = "https://idp.example.com/token"
client_id = "audit-client"
client_secret = "${CLIENT_SECRET}"

[profiles.pw]
type = "oauth2_password"
token_url = "https://idp.example.com/token"
client_id = "audit-client"
client_secret = "${CLIENT_SECRET}"
username = "audit-user"
password = "${PASSWORD}"

[profiles.key]
type = "api_key"
api_key = "${API_KEY}"
[[profiles.key.fields]]
in = "header"
key = "X-Api-Key"
value = "{{api_key}} ${FIELD_LITERAL}"

[profiles.basic]
type = "basic"
username = "${BASIC_USER}"
password = "${BASIC_PASSWORD}"

[profiles.user]
type = "oauth2_authorization_code"
authorization_url = "https://idp.example.com/authorize"
token_url = "https://idp.example.com/token"
client_id = "audit-client"
client_secret = "${CLIENT_SECRET}"
[[profiles.user.user_fields]]
key = "pin"
secret = true
"#;
    // JWT signing keys (issue 19): a private_key_jwt client, a client_secret_jwt client, a JWT
    // bearer grant with a key and one with a service-account key file. Canaries: lines of the PEM
    // bodies, the Ed25519 seed's first bytes as Debug would print them, the HS256 secret.
    let sign_data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sign");
    let pem_of = |f: &str| std::fs::read_to_string(sign_data.join(f)).unwrap();
    let ed_pem = pem_of("ed25519-pkcs8.pem");
    let ed_der = base64::engine::general_purpose::STANDARD
        .decode(
            ed_pem
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
    let seed_debug = format!("{:?}", &ed_der[ed_der.len() - 32..][..6]);
    let mut key_canaries: Vec<String> = vec![
        seed_debug.trim_end_matches(']').to_string(),
        "canary-jwt-client-secret-QJx-0123456789abcdef".to_string(),
        "PRIVATE KEY".to_string(),
    ];
    for f in ["rsa-pkcs8.pem", "ed25519-pkcs8.pem", "ec-sec1.pem"] {
        key_canaries.extend(
            pem_of(f)
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .take(2)
                .map(String::from),
        );
    }
    let sa: serde_json::Value = serde_json::from_str(&pem_of("service-account.json")).unwrap();
    key_canaries.extend(
        sa["private_key"]
            .as_str()
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .take(2)
            .map(String::from),
    );
    let common = format!(
        "{common}
[[routes]]
prefix = \"/jwt/\"
upstream = \"https://api.example.com/\"
profiles = [\"pkjwt\", \"csjwt\", \"bearer\", \"google\"]

[profiles.pkjwt]
type = \"oauth2_client_credentials\"
token_url = \"https://idp.example.com/token\"
client_id = \"audit-client\"
client_auth = \"private_key_jwt\"
client_assertion_key = \"{rsa}\"

[profiles.csjwt]
type = \"oauth2_client_credentials\"
token_url = \"https://idp.example.com/token\"
client_id = \"audit-client\"
client_auth = \"client_secret_jwt\"
client_secret = \"{hs}\"

[profiles.bearer]
type = \"oauth2_jwt_bearer\"
token_url = \"https://idp.example.com/token\"
assertion_key = \"{ed}\"
assertion_claims = {{ iss = \"a\", sub = \"b\" }}

[profiles.google]
type = \"oauth2_jwt_bearer\"
credentials_file = \"{sa}\"
",
        rsa = sign_data.join("rsa-pkcs8.pem").display(),
        hs = key_canaries[1],
        ed = sign_data.join("ed25519-pkcs8.pem").display(),
        sa = sign_data.join("service-account.json").display(),
    );
    let mut shown = String::new();
    for store in [
        "[store]\nkind = \"file\"\npath = \"grants.db\"\nkey = \"${STORE_KEY}\"\nprevious_key = \"${STORE_KEY}\"\n",
        "[store]\nkind = \"redis\"\nurl = \"redis://u:${REDIS_PASSWORD}@127.0.0.1:6379/0\"\nkey = \"${STORE_KEY}\"\n",
    ] {
        let config = Config::from_str_with_env(&format!("{common}{store}"), &env)
            .unwrap_or_else(|e| panic!("{e}"));
        shown.push_str(&format!("{config:?}\n{config:#?}\n"));
    }
    shown.push_str(&format!("{env:?}\n"));

    // An authorization in progress: the PKCE verifier and a secret user field.
    let flow = authsidecar::oauth::grants::Flow {
        ticket: "t".into(),
        profile: "user".into(),
        user: "alice".into(),
        tenant: None,
        chosen_tenant: None,
        context: Vec::new(),
        entered: vec![("pin".into(), EnteredValue::new(PIN))],
        verifier: Some(PkceVerifier::new("canary-pkce-verifier-QFx")),
        request_secret: Some(authsidecar::secret::OAuth1RequestSecret::new(
            "canary-oauth1-request-secret-QSx",
        )),
        nonce: None,
        test: None,
    };
    shown.push_str(&format!("{flow:?}\n{:?}\n", flow.entered()));

    // A stored grant, as the store gives it back, and the cached token made from it.
    let mut fetched = authsidecar::token::Fetched {
        access_token: "canary-access-token-QGx".into(),
        token_type: "Bearer".into(),
        expires_in: Some(Duration::from_secs(600)),
        refresh_token: Some("canary-refresh-token-QHx".into()),
        id_token: Some("canary-id-token-QIx".into()),
        scope: None,
        extra: vec![],
        refresh_token_refused: false,
        entered: flow.entered(),
    };
    fetched
        .entered
        .push(("api_key".into(), EnteredValue::new(USER_KEY)));
    let (record, _) = authsidecar::token::encode_record(&fetched, Duration::from_secs(600));
    let (grant, _) = authsidecar::token::decode_record(&record).unwrap();
    let token =
        authsidecar::token::Policy::default().token(grant.clone(), tokio::time::Instant::now());
    shown.push_str(&format!("{grant:?}\n{token:?}\n"));

    let mut secrets: Vec<String> = canaries.into_iter().map(|(_, v)| v).collect();
    secrets.extend(
        [
            PIN,
            USER_KEY,
            "canary-pkce-verifier-QFx",
            "canary-oauth1-request-secret-QSx",
            "canary-access-token-QGx",
            "canary-refresh-token-QHx",
            "canary-id-token-QIx",
        ]
        .map(String::from),
    );
    secrets.push(key_bytes);
    secrets.extend(key_canaries);
    let leaked: Vec<&String> = secrets
        .iter()
        .filter(|s| shown.contains(s.as_str()))
        .collect();
    assert!(leaked.is_empty(), "leaked {leaked:?} in:\n{shown}");
    // The output is the real thing: the redacted roles are there.
    for role in [
        "AdminToken([redacted])",
        "Username([redacted])",
        "Password([redacted])",
        "ApiKey([redacted])",
        "ClientSecret([redacted])",
        "StoreKey([redacted])",
        "StoreUrl([redacted])",
        "PkceVerifier([redacted])",
        "OAuth1RequestSecret([redacted])",
        "EnteredValue([redacted])",
        "AccessToken([redacted])",
        "RefreshToken([redacted])",
        "IdToken([redacted])",
        "ClientAssertionKey(RS256",
        "ClientAssertionKey(HS256",
        "BearerAssertionKey(EdDSA",
        "BearerAssertionKey(RS256",
    ] {
        assert!(shown.contains(role), "no {role} in:\n{shown}");
    }
}
