//! The sign phase end to end: the sidecar signs, the echo upstream shows what it received, and an
//! independent implementation verifies the received request (oauthlib's server side, botocore's
//! SigV4 signer, Python's hmac). Runs with both `fast_path` settings.

use std::process::Command;

use http::Method;
use serde_json::{json, Value};

use crate::signing::verify;
use crate::support::*;

const PROFILES: &str = r#"
[[routes]]
prefix = "/o/"
upstream = "http://{echo}/echo/"
profiles = ["o1", "o1q", "o1f", "v4", "mac", "v4small", "v4u"]

[profiles.o1]
type = "oauth1"
consumer_key = "ck-1"
consumer_secret = "${CS}"
token = "tok-1"
token_secret = "${TS}"
realm = "123_SB1"

[profiles.o1q]
type = "oauth1"
consumer_key = "ck-1"
consumer_secret = "${CS}"
signature_method = "HMAC-SHA256"
placement = "query"

[profiles.o1f]
type = "oauth1"
consumer_key = "ck-1"
consumer_secret = "${CS}"
token = "tok-1"
token_secret = "${TS}"
placement = "form"

[profiles.v4u]
type = "aws_sigv4"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "${AWS_SECRET}"
region = "eu-west-1"
service = "s3"
payload = "unsigned"
max_signed_body_bytes = 16

[profiles.v4]
type = "aws_sigv4"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "${AWS_SECRET}"
session_token = "sess/token+1"
region = "eu-west-1"
service = "execute-api"

[profiles.v4small]
type = "aws_sigv4"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "${AWS_SECRET}"
region = "eu-west-1"
service = "execute-api"
max_signed_body_bytes = 16

[profiles.mac]
type = "hmac"
secret = "${MAC_SECRET}"
string_to_sign = "{{method}}\n{{path}}\n{{query}}\n{{host}}\n{{timestamp}}\n{{nonce}}\n{{body_sha256}}"
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
"#;

const CS: &str = "consumer-secret-canary-7f3a";
const TS: &str = "token-secret-canary-91bd";
const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const MAC_SECRET: &str = "hmac-secret-canary-55e2";

async fn harness() -> Harness {
    Harness::start_with_env(
        PROFILES,
        &[
            ("CS", CS),
            ("TS", TS),
            ("AWS_SECRET", AWS_SECRET),
            ("MAC_SECRET", MAC_SECRET),
        ],
    )
    .await
}

fn header<'a>(echo: &'a Value, name: &str) -> Option<&'a str> {
    echo["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .and_then(|h| h[1].as_str())
}

fn received_url(echo: &Value) -> String {
    let host = header(echo, "host").unwrap();
    let path = echo["path"].as_str().unwrap();
    match echo["query"].as_str() {
        Some(q) => format!("http://{host}{path}?{q}"),
        None => format!("http://{host}{path}"),
    }
}

/// Unix seconds of an `x-amz-date` (`YYYYMMDDTHHMMSSZ`).
pub(crate) fn amz_unix(s: &str) -> i64 {
    let n = |a: usize, b: usize| s[a..b].parse::<i64>().unwrap();
    let (y, m, d) = (n(0, 4), n(4, 6), n(6, 8));
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + n(9, 11) * 3600 + n(11, 13) * 60 + n(13, 15)
}

fn oauth1_case(id: &str, echo: &Value, method: &str, consumer: bool) -> Value {
    let mut headers = serde_json::Map::new();
    for name in ["Authorization", "Content-Type"] {
        if let Some(v) = header(echo, name) {
            headers.insert(name.into(), v.into());
        }
    }
    let mut case = json!({
        "kind": "oauth1", "id": id, "flow": if consumer { "two_legged" } else { "resource" },
        "consumer_key": "ck-1", "consumer_secret": CS,
        "signature_method": method,
        "uri": received_url(echo), "http_method": echo["method"],
        "body": echo["body"].as_str().unwrap_or_default(),
        "headers": headers,
    });
    if !consumer {
        case["token"] = json!("tok-1");
        case["token_secret"] = json!(TS);
    }
    case
}

#[tokio::test]
async fn oauth1_signatures_are_accepted_by_oauthlib() {
    let h = harness().await;
    let mut cases = Vec::new();
    let mut nonces = Vec::new();
    for (i, (profile, method)) in [("o1", "HMAC-SHA1"), ("o1q", "HMAC-SHA256")]
        .into_iter()
        .enumerate()
    {
        // A form body and a query: both are signed (RFC 5849 §3.4.1.3).
        let r = send(
            Method::POST,
            &h.url("/o/items/a%20b?x=1&y=two+words"),
            &[
                ("X-Authsidecar-Profile", profile),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            "c=3&d=%7Efour",
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let echo = r.json();
        if profile == "o1" {
            let auth = header(&echo, "authorization").unwrap();
            assert!(auth.starts_with("OAuth realm=\"123_SB1\", "), "{auth}");
        } else {
            assert!(echo["query"].as_str().unwrap().contains("oauth_signature="));
            assert!(header(&echo, "authorization").is_none());
        }
        cases.push(oauth1_case(
            &format!("e2e oauth1 {i}"),
            &echo,
            method,
            profile == "o1q",
        ));
        // The same request again: a new nonce.
        let again = send(
            Method::GET,
            &h.url("/o/items"),
            &[("X-Authsidecar-Profile", profile)],
            "",
        )
        .await
        .json();
        cases.push(oauth1_case(
            &format!("e2e oauth1 {i} get"),
            &again,
            method,
            profile == "o1q",
        ));
        let raw = serde_json::to_string(&again).unwrap();
        assert!(!raw.contains(CS) && !raw.contains(TS));
        let nonce = raw.split("oauth_nonce").nth(1).unwrap()[..40].to_string();
        assert!(!nonces.contains(&nonce));
        nonces.push(nonce);
    }
    verify(cases);
}

#[tokio::test]
async fn sigv4_signatures_equal_botocore_for_the_received_request() {
    let h = harness().await;
    let mut cases = Vec::new();
    for (i, (method, body)) in [(Method::GET, ""), (Method::PUT, "{\"a\": [1, 2]}")]
        .into_iter()
        .enumerate()
    {
        let r = send(
            method,
            &h.url("/o/stage/res%20x/?b=2&a=1&a=0"),
            &[
                ("X-Authsidecar-Profile", "v4"),
                ("Content-Type", "application/json"),
                ("X-Custom", "  v  w "),
            ],
            body,
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let echo = r.json();
        let auth = header(&echo, "authorization").unwrap().to_string();
        let signed_names: Vec<String> = auth
            .split("SignedHeaders=")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .split(';')
            .map(str::to_string)
            .collect();
        assert!(signed_names.contains(&"host".to_string()));
        let headers: Vec<Value> = signed_names
            .iter()
            .filter(|n| {
                !matches!(
                    n.as_str(),
                    "x-amz-date" | "x-amz-content-sha256" | "x-amz-security-token"
                )
            })
            .map(|n| json!([n, header(&echo, n).unwrap()]))
            .collect();
        let date = header(&echo, "x-amz-date").unwrap();
        cases.push(json!({
            "kind": "sigv4", "id": format!("e2e sigv4 {i}"),
            "access_key_id": "AKIDEXAMPLE", "secret_access_key": AWS_SECRET,
            "session_token": "sess/token+1",
            "region": "eu-west-1", "service": "execute-api", "payload": "signed",
            "method": echo["method"], "url": received_url(&echo),
            "body_b64": base64_std(echo["body"].as_str().unwrap_or_default().as_bytes()),
            "headers": headers, "unix_time": amz_unix(date),
            "authorization": auth, "canonical_request": "",
            "content_sha256": header(&echo, "x-amz-content-sha256").unwrap(),
        }));
        assert_eq!(header(&echo, "x-amz-security-token"), Some("sess/token+1"));
    }
    verify(cases);
}

fn base64_std(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test]
async fn hmac_signatures_are_recomputed_by_python() {
    let h = harness().await;
    let r = send(
        Method::POST,
        &h.url("/o/pay?z=1&a=2"),
        &[
            ("X-Authsidecar-Profile", "mac"),
            ("Content-Type", "application/json"),
        ],
        "{\"amount\": 10}",
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let echo = r.json();
    let sig = header(&echo, "x-signature").unwrap();
    let ts = header(&echo, "x-timestamp").unwrap();
    let nonce = header(&echo, "x-nonce").unwrap();
    let script = r#"
import hashlib, hmac, json, sys
e = json.loads(sys.argv[1])
h = {k.lower(): v for k, v in e["headers"]}
body = e["body"].encode()
s = "\n".join([e["method"], e["path"], e["query"] or "", h["host"], h["x-timestamp"], h["x-nonce"], hashlib.sha256(body).hexdigest()])
print(hmac.new(sys.argv[2].encode(), s.encode(), hashlib.sha256).hexdigest())
"#;
    let out = Command::new("python3")
        .args([
            "-c",
            script,
            &serde_json::to_string(&echo).unwrap(),
            MAC_SECRET,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), sig);
    assert_eq!(ts.len(), 10);
    assert_eq!(nonce.len(), 32);
    // One request, one time and nonce: the next request has others.
    let again = send(
        Method::POST,
        &h.url("/o/pay?z=1&a=2"),
        &[("X-Authsidecar-Profile", "mac")],
        "{\"amount\": 10}",
    )
    .await
    .json();
    assert_ne!(header(&again, "x-nonce"), Some(nonce));
    assert_ne!(header(&again, "x-signature"), Some(sig));
}

#[tokio::test]
async fn a_body_over_max_signed_body_bytes_is_refused_and_nothing_is_sent() {
    let h = harness().await;
    let before = h.echo.echo_count();
    let r = send(
        Method::POST,
        &h.url("/o/big"),
        &[("X-Authsidecar-Profile", "v4small")],
        "x".repeat(17),
    )
    .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.error_code(), "payload_too_large");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_signed_body_bytes"));
    assert_eq!(h.echo.echo_count(), before, "nothing reached the upstream");
    let ok = send(
        Method::POST,
        &h.url("/o/big"),
        &[("X-Authsidecar-Profile", "v4small")],
        "x".repeat(16),
    )
    .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn admin_profiles_never_show_a_signing_secret() {
    let h = harness().await;
    let r = get(
        &h.admin_url("/admin/profiles"),
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
    )
    .await;
    assert_eq!(r.status, 200);
    let shown = String::from_utf8_lossy(&r.body);
    for secret in [CS, TS, AWS_SECRET, MAC_SECRET, "sess/token+1"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert!(shown.contains("aws_sigv4") && shown.contains("oauth1") && shown.contains("hmac"));
}

#[tokio::test]
async fn oauth1_form_placement_is_accepted_by_oauthlib() {
    let h = harness().await;
    let mut cases = Vec::new();
    for (i, body) in ["a=1&b=two+words", ""].into_iter().enumerate() {
        let mut headers = vec![("X-Authsidecar-Profile", "o1f")];
        if !body.is_empty() {
            headers.push(("Content-Type", "application/x-www-form-urlencoded"));
        }
        let r = send(Method::POST, &h.url("/o/form?x=1"), &headers, body).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let echo = r.json();
        let got = echo["body"].as_str().unwrap();
        assert!(
            got.starts_with(body) && got.contains("oauth_signature="),
            "{got}"
        );
        assert_eq!(
            header(&echo, "content-length").unwrap(),
            got.len().to_string()
        );
        let case = oauth1_case(&format!("e2e oauth1 form {i}"), &echo, "HMAC-SHA1", false);
        cases.push(case);
    }
    // A GET has no body to put them in.
    let r = get(&h.url("/o/form"), &[("X-Authsidecar-Profile", "o1f")]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "body_not_injectable");
    verify(cases);
}

#[tokio::test]
async fn an_unsigned_sigv4_payload_is_streamed_past_max_signed_body_bytes() {
    let h = harness().await;
    let body = "y".repeat(100);
    let r = send(
        Method::PUT,
        &h.url("/o/bucket/key"),
        &[("X-Authsidecar-Profile", "v4u")],
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let echo = r.json();
    assert_eq!(echo["body"].as_str(), Some(body.as_str()));
    assert_eq!(
        header(&echo, "x-amz-content-sha256"),
        Some("UNSIGNED-PAYLOAD")
    );
}
