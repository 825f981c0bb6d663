//! The Test of signing profiles (`aws_sigv4`, `hmac`, `oauth1`): `authsidecar test-auth`,
//! `POST /admin/profiles/{name}/test` and the console's Test button send one signed `GET` through
//! the proxy's pipeline, against the mock provider's verifying resources (`/sigv4/`, `/hmac/`):
//! a right secret is answered 2xx (exit 0), a wrong one is refused (exit 1). No secret appears in
//! any output, in any encoding. The Test's request is signed exactly as a proxied one: both are
//! captured and verified by the Python checkers (oauthlib, botocore). The Test of JWT client
//! authentication and the JWT bearer grant still runs their token request.

use std::net::SocketAddr;
use std::time::Duration;

use authsidecar::config::{MockHmac, MockSigV4};
use authsidecar::mock::MockSettings;
use base64::Engine as _;
use bytes::Bytes;
use http::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::sign_phase::amz_unix;
use crate::signing::verify;
use crate::support::browser::Browser;
use crate::support::*;

const AWS_SECRET: &str = "sigv4-secret-canary-3c9d/+=Q";
const AWS_WRONG: &str = "sigv4-wrong-canary-77a1/+=Z";
const SESSION_TOKEN: &str = "session-token-canary-71ae/+=";
const MAC_SECRET: &str = "hmac-secret-canary-b04f&=?";
const MAC_WRONG: &str = "hmac-wrong-canary-e5d2&=?";
const CS: &str = "consumer-secret-canary-2b8e &+";
const TOKEN: &str = "oauth-token-canary-4f0c";
const TS: &str = "token-secret-canary-9d13/=";

/// Every secret value the profiles hold.
const SECRETS: [&str; 8] = [
    AWS_SECRET,
    AWS_WRONG,
    SESSION_TOKEN,
    MAC_SECRET,
    MAC_WRONG,
    CS,
    TOKEN,
    TS,
];

const STRING_TO_SIGN: &str =
    "{{method}}\\n{{path}}\\n{{query}}\\n{{host}}\\n{{timestamp}}\\n{{nonce}}\\n{{body_sha256}}";

/// `{echo}`: the mock provider; `{capture}`: a server that records what it receives.
fn profiles(capture: SocketAddr) -> String {
    r#"
[[routes]]
prefix = "/aws/"
upstream = "http://{echo}/sigv4/stage/"
profiles = ["v4", "v4wrong"]

[[routes]]
prefix = "/mac/"
upstream = "http://{echo}/hmac/api/"
profiles = ["mac", "macwrong"]

[[routes]]
prefix = "/cap/"
upstream = "http://{capture}/res/"
profiles = ["o1", "v4cap", "maccap"]

[profiles.v4]
type = "aws_sigv4"
access_key_id = "AKIDMOCK"
secret_access_key = "${AWS_SECRET}"
session_token = "${SESSION_TOKEN}"
region = "eu-west-1"
service = "execute-api"

[profiles.v4wrong]
type = "aws_sigv4"
access_key_id = "AKIDMOCK"
secret_access_key = "${AWS_WRONG}"
session_token = "${SESSION_TOKEN}"
region = "eu-west-1"
service = "execute-api"

[profiles.v4cap]
type = "aws_sigv4"
access_key_id = "AKIDMOCK"
secret_access_key = "${AWS_SECRET}"
session_token = "${SESSION_TOKEN}"
region = "eu-west-1"
service = "execute-api"

[profiles.mac]
type = "hmac"
secret = "${MAC_SECRET}"
string_to_sign = "STS"
[[profiles.mac.fields]]
in = "header"
key = "X-Signature"
value = "{{signature}}"
[[profiles.mac.fields]]
in = "header"
key = "X-Timestamp"
value = "{{timestamp}}"
[[profiles.mac.fields]]
in = "header"
key = "X-Nonce"
value = "{{nonce}}"

[profiles.macwrong]
type = "hmac"
secret = "${MAC_WRONG}"
string_to_sign = "STS"
[[profiles.macwrong.fields]]
in = "header"
key = "X-Signature"
value = "{{signature}}"
[[profiles.macwrong.fields]]
in = "header"
key = "X-Timestamp"
value = "{{timestamp}}"
[[profiles.macwrong.fields]]
in = "header"
key = "X-Nonce"
value = "{{nonce}}"

[profiles.maccap]
type = "hmac"
secret = "${MAC_SECRET}"
string_to_sign = "STS"
[[profiles.maccap.fields]]
in = "header"
key = "X-Signature"
value = "{{signature}}"
[[profiles.maccap.fields]]
in = "header"
key = "X-Timestamp"
value = "{{timestamp}}"
[[profiles.maccap.fields]]
in = "header"
key = "X-Nonce"
value = "{{nonce}}"

[profiles.o1]
type = "oauth1"
consumer_key = "ck-test"
consumer_secret = "${CS}"
token = "${TOKEN}"
token_secret = "${TS}"
realm = "Test"

[profiles.plain]
type = "none"
"#
    .replace("STS", STRING_TO_SIGN)
    .replace("{capture}", &capture.to_string())
}

const ENV: [(&str, &str); 7] = [
    ("AWS_SECRET", AWS_SECRET),
    ("AWS_WRONG", AWS_WRONG),
    ("SESSION_TOKEN", SESSION_TOKEN),
    ("MAC_SECRET", MAC_SECRET),
    ("MAC_WRONG", MAC_WRONG),
    ("CS", CS),
    ("TOKEN", TOKEN),
];

fn env() -> Vec<(&'static str, &'static str)> {
    let mut e = ENV.to_vec();
    e.push(("TS", TS));
    e
}

/// The mock's verifying resources, set to the right secrets.
fn mock_settings() -> MockSettings {
    MockSettings {
        sigv4: MockSigV4 {
            access_key_id: "AKIDMOCK".into(),
            secret_access_key: AWS_SECRET.into(),
            session_token: Some(SESSION_TOKEN.into()),
            region: "eu-west-1".into(),
            service: "execute-api".into(),
        },
        hmac: MockHmac {
            secret: MAC_SECRET.into(),
            string_to_sign: STRING_TO_SIGN.into(),
            ..MockHmac::default()
        },
        ..MockSettings::default()
    }
}

/// One request as the capture server received it.
#[derive(Debug)]
struct Captured {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Captured {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn url(&self) -> String {
        format!("http://{}{}", self.header("host").unwrap(), self.target)
    }

    fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self
            .headers
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect();
        n.sort();
        n
    }
}

/// A server that answers every bodiless request 200 and sends what it received on the channel.
async fn capture() -> (SocketAddr, mpsc::UnboundedReceiver<Captured>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // One head per connection, at most 64 KiB, each read within 5 s.
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65_536 {
                    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
                        Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let mut lines = head.split("\r\n");
                let mut first = lines.next().unwrap_or_default().split(' ');
                let method = first.next().unwrap_or_default().to_string();
                let target = first.next().unwrap_or_default().to_string();
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.to_string(), v.trim().to_string()))
                    .collect();
                let _ = tx.send(Captured {
                    method,
                    target,
                    headers,
                });
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (addr, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Captured>) -> Captured {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("the capture server received nothing within 20 s")
        .unwrap()
}

/// Every form a secret could be shown in: raw, percent- and form-encoded, base64 (standard and
/// URL-safe, padded or not), JSON-escaped.
fn forms(secret: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let pct = percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    let form: String = url_form(secret);
    let json = serde_json::to_string(secret).unwrap();
    vec![
        secret.to_string(),
        pct.clone(),
        pct.to_lowercase(),
        form,
        STANDARD.encode(secret),
        STANDARD_NO_PAD.encode(secret),
        URL_SAFE.encode(secret),
        URL_SAFE_NO_PAD.encode(secret),
        json.trim_matches('"').to_string(),
    ]
}

/// RFC 3986 percent-encoding with a space as `+` (form encoding).
fn url_form(s: &str) -> String {
    authsidecar::inject::encode::encode(s)
        .to_string()
        .replace("%20", "+")
}

/// Fails naming the secret and where it showed.
fn assert_no_secret(text: &str, what: &str) {
    for secret in SECRETS {
        for f in forms(secret) {
            assert!(
                !text.contains(&f),
                "{what}: a form of a secret ({f:?}) is shown:\n{text}"
            );
        }
    }
}

/// Runs the built binary with the test's environment.
async fn cli(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_authsidecar"));
    cmd.arg("-c").arg(config).args(args);
    for (k, v) in env() {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

async fn admin_test(h: &Harness, profile: &str, body: &str) -> Resp {
    send(
        Method::POST,
        &h.admin_url(&format!("/admin/profiles/{profile}/test")),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        Bytes::from(body.to_string()),
    )
    .await
}

fn request_header<'a>(report: &'a Value, name: &str) -> Option<&'a str> {
    report["request"]["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0] == name)
        .and_then(|h| h[1].as_str())
}

#[tokio::test]
async fn test_auth_command_signs_one_get_and_exits_by_the_answer() {
    let (cap, _rx) = capture().await;
    let mock =
        authsidecar::mock::MockProvider::start_with(([127, 0, 0, 1], 0).into(), mock_settings())
            .await
            .unwrap();
    let dir = TempDir::new("sign-test-cli");
    let file = dir.join("c.toml");
    std::fs::write(
        &file,
        with_listeners(&profiles(cap).replace("{echo}", &mock.addr.to_string())),
    )
    .unwrap();
    let mut all = String::new();
    for (profile, exit, status) in [
        ("o1", 0, 200),
        ("v4", 0, 200),
        ("v4wrong", 1, 403),
        ("mac", 0, 200),
        ("macwrong", 1, 401),
    ] {
        let text = cli(&file, &["test-auth", profile]).await;
        let json = cli(&file, &["test-auth", profile, "--json"]).await;
        let (out, err) = (
            String::from_utf8_lossy(&text.stdout).into_owned(),
            String::from_utf8_lossy(&text.stderr).into_owned(),
        );
        assert_eq!(text.status.code(), Some(exit), "{profile}: {out}{err}");
        assert_eq!(json.status.code(), Some(exit), "{profile}");
        assert!(
            out.contains(&format!("Status:    {status}")),
            "{profile}: {out}"
        );
        assert!(out.contains("== Request headers =="), "{out}");
        assert!(out.contains(if exit == 0 {
            "Auth Test Succeeded"
        } else {
            "Auth Test Failed: the upstream answered"
        }));
        let v: Value = serde_json::from_slice(&json.stdout).unwrap();
        assert_eq!(v["ok"], exit == 0);
        assert_eq!(v["status"], status);
        assert_eq!(v["token_url"], Value::Null);
        assert_eq!(v["request"]["method"], "GET");
        all.push_str(&format!(
            "{out}{err}{}{}",
            String::from_utf8_lossy(&json.stdout),
            String::from_utf8_lossy(&json.stderr)
        ));
        if profile == "o1" {
            let auth = request_header(&v, "authorization").unwrap();
            assert!(auth.starts_with("OAuth realm=\"Test\", "), "{auth}");
            assert!(auth.contains("oauth_signature=\"[redacted len="), "{auth}");
        } else if profile.starts_with("v4") {
            let auth = request_header(&v, "authorization").unwrap();
            assert!(
                auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDMOCK/")
                    && auth.ends_with("Signature=[redacted len=64]"),
                "{auth}"
            );
            assert!(request_header(&v, "x-amz-date").unwrap().ends_with('Z'));
            assert!(request_header(&v, "x-amz-security-token")
                .unwrap()
                .starts_with("[redacted"));
        } else {
            assert_eq!(request_header(&v, "x-signature"), Some("[redacted len=64]"));
            assert_eq!(request_header(&v, "x-timestamp").unwrap().len(), 10);
        }
        if profile == "v4wrong" {
            assert!(v["body"].as_str().unwrap().contains("does not match"));
        }
    }
    // --url: another resource of the same upstream; a URL with a query is signed with it.
    let out = cli(
        &file,
        &[
            "test-auth",
            "v4",
            "--url",
            &format!("http://{}/sigv4/other/a%20b?z=1&a=%2F", mock.addr),
        ],
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("/sigv4/other/a%20b?z=1&a=%2F"), "{text}");
    all.push_str(&text);
    // Errors before anything is sent: exit 1, saying why.
    for (args, says) in [
        (vec!["test-auth", "plain"], "makes no token request"),
        (vec!["test-auth", "v4", "--url", "ftp://x/"], "url"),
        (vec!["test-auth", "nope"], "no profile named"),
    ] {
        let out = cli(&file, &args).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_no_secret(&all, "test-auth output");
    assert_eq!(
        mock.counters()
            .resource_rejected
            .load(std::sync::atomic::Ordering::SeqCst),
        4,
        "v4wrong and macwrong were refused by the mock, twice each"
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn admin_test_reports_the_signed_request_and_the_upstream_answer() {
    let (cap, mut rx) = capture().await;
    let h = Harness::start_full(&profiles(cap), &env(), mock_settings()).await;
    let mut all = String::new();
    for (profile, ok, status, says) in [
        ("v4", true, 200, "\"path\": \"/sigv4/stage/\""),
        ("v4wrong", false, 403, "SignatureDoesNotMatch"),
        ("mac", true, 200, "\"path\": \"/hmac/api/\""),
        ("macwrong", false, 401, "invalid_signature"),
    ] {
        let r = admin_test(&h, profile, "").await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        assert_eq!(v["ok"], ok, "{profile}: {v}");
        assert_eq!(v["status"], status, "{profile}: {v}");
        assert_eq!(
            v["type"],
            if profile.starts_with("v4") {
                "aws_sigv4"
            } else {
                "hmac"
            }
        );
        assert_eq!(v["error"], Value::Null);
        let shown = format!(
            "{}{}",
            v["body"].as_str().unwrap(),
            serde_json::to_string(&v["headers"]).unwrap()
        );
        assert!(shown.contains(says), "{profile}: {shown}");
        all.push_str(&String::from_utf8_lossy(&r.body));
    }
    // A URL in the body; the OAuth 1.0a profile against the capture server.
    let r = admin_test(
        &h,
        "o1",
        &json!({"url": format!("http://{cap}/other?q=1")}).to_string(),
    )
    .await;
    let v = r.json();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["request"]["url"], format!("http://{cap}/other?q=1"));
    let auth = request_header(&v, "authorization").unwrap();
    assert!(auth.starts_with("OAuth realm=\"Test\", "), "{auth}");
    assert!(auth.contains("oauth_consumer_key=\"ck-test\""), "{auth}");
    assert!(auth.contains("oauth_signature=\"[redacted len="), "{auth}");
    let seen = next(&mut rx).await;
    assert_eq!(seen.target, "/other?q=1");
    all.push_str(&String::from_utf8_lossy(&r.body));
    // The upstream not answering is the pipeline's error, in the report.
    let r = admin_test(
        &h,
        "v4",
        &json!({"url": "http://127.0.0.1:1/x"}).to_string(),
    )
    .await;
    let v = r.json();
    assert_eq!(v["ok"], false);
    assert_eq!(v["status"], Value::Null);
    assert_eq!(v["error"]["code"], "upstream_unavailable", "{v}");
    // Refused before anything is sent.
    for (profile, body, status, code) in [
        ("plain", "", 400, "not_testable"),
        ("v4", "{\"url\": \"not a url\"}", 400, "bad_request"),
        ("v4", "{\"url\": 5}", 400, "bad_request"),
        ("v4", "[1", 400, "bad_request"),
        ("nope", "", 404, "profile_not_found"),
    ] {
        let r = admin_test(&h, profile, body).await;
        assert_eq!(
            r.status,
            status,
            "{profile} {body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.error_code(), code);
    }
    assert_no_secret(&all, "admin report");
}

/// The Test's request and a proxied one, both captured: each is accepted by an independent
/// implementation (oauthlib's server side, botocore's SigV4 signer, Python's hmac) and they carry
/// the same header fields.
#[tokio::test]
async fn the_test_request_is_signed_exactly_as_a_proxied_one() {
    let (cap, mut rx) = capture().await;
    let h = Harness::start_full(&profiles(cap), &env(), mock_settings()).await;
    let mut cases = Vec::new();
    for profile in ["o1", "v4cap", "maccap"] {
        let r = get(&h.url("/cap/"), &[("X-Authsidecar-Profile", profile)]).await;
        assert_eq!(r.status, 200);
        let proxied = next(&mut rx).await;
        let r = admin_test(&h, profile, "").await;
        assert_eq!(r.json()["ok"], true, "{}", String::from_utf8_lossy(&r.body));
        let tested = next(&mut rx).await;
        assert_eq!(proxied.method, "GET");
        assert_eq!(tested.method, proxied.method);
        assert_eq!(tested.target, proxied.target, "the first route's upstream");
        assert_eq!(tested.names(), proxied.names(), "{tested:?}\n{proxied:?}");
        for (how, c) in [("proxied", &proxied), ("tested", &tested)] {
            let id = format!("{profile} {how}");
            let auth = c.header("authorization").unwrap_or_default();
            if profile == "maccap" {
                cases.push(hmac_case(&id, c));
            } else if profile == "o1" {
                cases.push(json!({
                    "kind": "oauth1", "id": id, "flow": "resource",
                    "consumer_key": "ck-test", "consumer_secret": CS,
                    "token": TOKEN, "token_secret": TS,
                    "signature_method": "HMAC-SHA1",
                    "uri": c.url(), "http_method": "GET", "body": "",
                    "headers": {"Authorization": auth},
                }));
            } else {
                let names: Vec<&str> = auth
                    .split("SignedHeaders=")
                    .nth(1)
                    .unwrap()
                    .split(',')
                    .next()
                    .unwrap()
                    .split(';')
                    .collect();
                let headers: Vec<Value> = names
                    .iter()
                    .filter(|n| {
                        !matches!(
                            **n,
                            "x-amz-date" | "x-amz-content-sha256" | "x-amz-security-token"
                        )
                    })
                    .map(|n| json!([n, c.header(n).unwrap()]))
                    .collect();
                cases.push(json!({
                    "kind": "sigv4", "id": id,
                    "access_key_id": "AKIDMOCK", "secret_access_key": AWS_SECRET,
                    "session_token": SESSION_TOKEN,
                    "region": "eu-west-1", "service": "execute-api", "payload": "signed",
                    "method": "GET", "url": c.url(), "body_b64": "",
                    "headers": headers, "unix_time": amz_unix(c.header("x-amz-date").unwrap()),
                    "authorization": auth, "canonical_request": "",
                    "content_sha256": c.header("x-amz-content-sha256").unwrap(),
                }));
            }
        }
    }
    verify(cases);
}

/// A captured `hmac` request as a case for Python's hmac: the string to sign rendered from what
/// arrived (Python renders it again on its own), and the signature that came with it.
fn hmac_case(id: &str, c: &Captured) -> Value {
    use authsidecar::sign::hmac;
    let ts: u64 = c.header("x-timestamp").unwrap().parse().unwrap();
    let nonce_hex = c.header("x-nonce").unwrap();
    let nonce: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&nonce_hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let moment = hmac::Moment::new(ts * 1000, nonce.try_into().unwrap());
    let (path, query) = match c.target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (c.target.as_str(), ""),
    };
    let host = c.header("host").unwrap();
    let req = authsidecar::sign::Request {
        method: &c.method,
        scheme: "http",
        authority: host,
        path,
        query: Some(query),
        headers: &[],
        body: b"",
    };
    let signer = hmac::Signer::new(
        STRING_TO_SIGN,
        MAC_SECRET,
        hmac::SecretEncoding::Utf8,
        hmac::Algorithm::Sha256,
        hmac::Encoding::Hex,
    )
    .unwrap();
    json!({
        "kind": "hmac", "id": id,
        "template": STRING_TO_SIGN, "secret": MAC_SECRET, "secret_encoding": "utf8",
        "algorithm": "sha256", "encoding": "hex",
        "parts": {"method": c.method, "path": path, "query": query, "host": host,
                  "body_b64": "", "unix_ms": ts * 1000, "nonce_hex": nonce_hex},
        "rendered_b64": base64::engine::general_purpose::STANDARD
            .encode(signer.string_to_sign(&req, &moment)),
        "signature": c.header("x-signature").unwrap(),
    })
}

/// JWT client authentication and the JWT bearer grant: the Test runs the token request (the mock
/// verifies each assertion), as for any machine grant.
#[tokio::test]
async fn test_of_jwt_client_authentication_and_the_bearer_grant_runs_the_token_request() {
    use std::sync::atomic::Ordering::SeqCst;
    let secret = "jwt-client-secret-canary-0123456789abcdef";
    let (settings, text) = crate::jwt_auth::jwt_profiles_and_mock(secret);
    let h = Harness::start_full(&text, &[], settings).await;
    let dir = TempDir::new("sign-test-jwt");
    let file = dir.join("c.toml");
    std::fs::write(
        &file,
        with_listeners(&text.replace("{echo}", &h.echo.addr.to_string())),
    )
    .unwrap();
    let mut all = String::new();
    for (profile, kind) in [
        ("pk", "oauth2_client_credentials"),
        ("cs", "oauth2_client_credentials"),
        ("bearer", "oauth2_jwt_bearer"),
    ] {
        let out = cli(&file, &["test-auth", profile, "--json"]).await;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{profile}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], kind);
        assert_eq!(v["token_url"], h.echo.token_url());
        assert_eq!(v["request"], Value::Null);
        assert_eq!(v["token"]["token_type"], "Bearer", "{v}");
        let r = admin_test(&h, profile, "").await;
        assert_eq!(r.json()["ok"], true, "{}", String::from_utf8_lossy(&r.body));
        all.push_str(&text);
        all.push_str(&String::from_utf8_lossy(&r.body));
    }
    let c = h.echo.counters();
    assert_eq!(
        c.client_assertions.load(SeqCst),
        4,
        "pk and cs, each by the CLI and the admin API"
    );
    assert_eq!(c.jwt_bearer.load(SeqCst), 2);
    for f in forms(secret) {
        assert!(!all.contains(&f), "{f}");
    }
    for t in h.echo.state.issued_tokens() {
        assert!(!all.contains(&t), "an issued token is shown");
    }
}

/// The console's Test button on signing profiles, in a real browser: the outcome, the upstream's
/// answer and the signed request's headers, with no secret on the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_tests_signing_profiles() {
    let (cap, _rx) = capture().await;
    let h = Harness::start_full(&profiles(cap), &env(), mock_settings()).await;
    let dir = TempDir::new("sign-test-console");
    let b = Browser::start(&dir).await;
    b.goto(&h.admin_url("/admin/")).await;
    b.type_into("#token", ADMIN_TOKEN).await;
    b.click("#sign-in").await;
    b.find("#profiles tbody tr[data-profile='v4']").await;
    let row = b.text("#profiles tbody tr[data-profile='v4']").await;
    assert!(row.contains("signs each request"), "{row}");
    assert!(
        b.exists("button.test[data-profile='plain'][disabled]")
            .await
    );

    let mut pages = String::new();
    for (profile, outcome, says) in [
        ("v4", "Auth Test Succeeded", "HTTP 200"),
        ("v4wrong", "Auth Test Failed", "HTTP 403"),
        ("mac", "Auth Test Succeeded", "HTTP 200"),
        ("macwrong", "Auth Test Failed", "HTTP 401"),
        ("o1", "Auth Test Succeeded", "HTTP 200"),
    ] {
        b.click(&format!("button.test[data-profile='{profile}']"))
            .await;
        b.wait_text("#test-profile", profile).await;
        b.wait_text("#test-outcome", outcome).await;
        let summary = b.wait_text("#test-summary", says).await;
        assert!(summary.contains("GET http://"), "{summary}");
        b.click("#tab-request").await;
        let req = b.wait_text("#test-request", "host").await;
        if profile.starts_with("v4") {
            assert!(req.contains("Signature=[redacted len=64]"), "{req}");
        } else if profile == "o1" {
            assert!(req.contains("oauth_signature=\"[redacted len="), "{req}");
            assert!(req.contains("oauth_token=\"[redacted len="), "{req}");
        } else {
            assert!(req.contains("x-signature"), "{req}");
        }
        b.click("#tab-response").await;
        pages.push_str(&b.source().await);
    }
    assert!(pages.contains("SignatureDoesNotMatch"));
    assert_no_secret(&pages, "console page");
    b.quit().await;
}

/// `[mock_provider.sigv4]` and `[mock_provider.hmac]`: defaults, and every error with its key path,
/// never a secret.
#[test]
fn mock_provider_verifying_resources_are_configured_and_checked() {
    use authsidecar::config::{Config, Env};
    let env = Env::from_pairs([("S", "mock-canary-secret-51f0")]);
    let ok = Config::from_str_with_env(
        r#"
[[routes]]
prefix = "/"
upstream = "http://127.0.0.1:1/"
profiles = ["p"]
[profiles.p]
type = "none"
[mock_provider]
listen = "127.0.0.1:0"
[mock_provider.sigv4]
secret_access_key = "${S}"
session_token = "${S}"
service = "s3"
[mock_provider.hmac]
secret = "${S}"
algorithm = "sha512"
encoding = "base64"
signature_header = "X-Sig"
max_skew = "30s"
"#,
        &env,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let m = ok.mock_provider.unwrap();
    assert_eq!(m.sigv4.access_key_id, "AKIDEXAMPLE");
    assert_eq!(m.sigv4.region, "us-east-1");
    assert_eq!(m.sigv4.service, "s3");
    assert_eq!(
        m.sigv4.secret_access_key.expose(),
        "mock-canary-secret-51f0"
    );
    assert_eq!(m.hmac.signature_header, "x-sig");
    assert_eq!(m.hmac.timestamp_header, "x-timestamp");
    assert_eq!(m.hmac.max_skew, Duration::from_secs(30));
    let default = Config::from_str_with_env(
        &format!("{ROUTE}[mock_provider]\nlisten = \"127.0.0.1:0\"\n"),
        &env,
    )
    .unwrap()
    .mock_provider
    .unwrap();
    assert_eq!(
        default.hmac.string_to_sign,
        MockHmac::default().string_to_sign
    );
    assert!(default.sigv4.session_token.is_none());

    let errors = match Config::from_str_with_env(
        r#"
[[routes]]
prefix = "/"
upstream = "http://127.0.0.1:1/"
profiles = ["p"]
[profiles.p]
type = "none"
[mock_provider]
listen = "127.0.0.1:0"
[mock_provider.sigv4]
secret_access_key = "${S}"
region = "us east"
access_key_id = "AK-ID"
[mock_provider.hmac]
secret = "${S}"
algorithm = "md5"
encoding = "hex"
secret_encoding = "base64"
string_to_sign = "{{method}} {{nope}}"
signature_header = "X Sig"
"#,
        &env,
    ) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    };
    has(&errors, "mock_provider.sigv4.region");
    has(&errors, "mock_provider.sigv4.access_key_id");
    has(
        &errors,
        "mock_provider.hmac.algorithm: unknown value \"md5\"",
    );
    has(&errors, "mock_provider.hmac.signature_header");
    has(&errors, "mock_provider.hmac.string_to_sign");
    for e in &errors {
        assert!(!e.contains("mock-canary-secret"), "{e}");
    }
    let unknown = match Config::from_str_with_env(
        &format!("{ROUTE}[mock_provider]\nlisten = \"127.0.0.1:0\"\n[mock_provider.sigv4]\nsecret = \"x\"\n"),
        &env,
    ) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    };
    assert!(unknown.contains("secret"), "{unknown}");
}

const ROUTE: &str = "[[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:1/\"\nprofiles = [\"p\"]\n[profiles.p]\ntype = \"none\"\n";
