//! The mock provider's authorization endpoint: code flow with PKCE S256, single-use short-lived
//! codes, `iss` in the response, refusal of `plain`, `access_denied`, and revocation.

use http::Method;
use oauth2::{PkceCodeChallenge, PkceCodeVerifier};

use authsidecar::mock::MockProvider;

use crate::support::*;

const REDIRECT: &str = "http://127.0.0.1:1/oauth/callback";

fn location_params(r: &Resp) -> Vec<(String, String)> {
    let loc = r.headers["location"].to_str().unwrap();
    let query = loc.split_once('?').map(|(_, q)| q).unwrap_or("");
    authsidecar::inject::encode::parse_form(query.as_bytes())
}

fn param<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
    p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

async fn authorize(mock: &MockProvider, challenge: Option<(&str, &str)>) -> Resp {
    let mut url = format!(
        "http://{}/oauth/authorize?response_type=code&client_id=demo-client&state=st-1&scope=read&redirect_uri={}",
        mock.addr,
        authsidecar::inject::encode::encode(REDIRECT)
    );
    if let Some((c, m)) = challenge {
        url.push_str(&format!("&code_challenge={c}&code_challenge_method={m}"));
    }
    get(&url, &[]).await
}

async fn exchange(mock: &MockProvider, code: &str, verifier: &str) -> Resp {
    let body = format!(
        "grant_type=authorization_code&code={code}&redirect_uri={}&code_verifier={verifier}",
        authsidecar::inject::encode::encode(REDIRECT)
    );
    send(
        Method::POST,
        &mock.token_url(),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("authorization", "Basic ZGVtby1jbGllbnQ6ZGVtby1zZWNyZXQ="),
        ],
        body,
    )
    .await
}

#[tokio::test]
async fn code_flow_with_pkce_single_use_codes_and_revocation() {
    let mock = MockProvider::start(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let r = authorize(&mock, Some((challenge.as_str(), "S256"))).await;
    assert_eq!(r.status, 302);
    let p = location_params(&r);
    assert!(r.headers["location"]
        .to_str()
        .unwrap()
        .starts_with(REDIRECT));
    assert_eq!(param(&p, "state"), Some("st-1"));
    assert_eq!(
        param(&p, "iss"),
        Some(format!("http://{}", mock.addr).as_str())
    );
    let code = param(&p, "code").unwrap().to_string();

    // A wrong verifier is refused (and uses up the code).
    let other = PkceCodeVerifier::new("x".repeat(43));
    let bad = exchange(&mock, &code, other.secret()).await;
    assert_eq!(bad.json()["error"], "invalid_grant");

    // A fresh flow: the right verifier works once.
    let r = authorize(&mock, Some((challenge.as_str(), "S256"))).await;
    let code = param(&location_params(&r), "code").unwrap().to_string();
    let ok = exchange(&mock, &code, verifier.secret()).await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    let access = ok.json()["access_token"].as_str().unwrap().to_string();
    let refresh = ok.json()["refresh_token"].as_str().unwrap().to_string();
    assert!(mock.state.is_valid(&access));

    // Replaying the code is refused and revokes what it gave.
    let replay = exchange(&mock, &code, verifier.secret()).await;
    assert_eq!(replay.json()["error"], "invalid_grant");
    assert!(!mock.state.is_valid(&access) && !mock.state.is_valid(&refresh));

    // Revocation endpoint.
    let r = authorize(&mock, Some((challenge.as_str(), "S256"))).await;
    let code = param(&location_params(&r), "code").unwrap().to_string();
    let access = exchange(&mock, &code, verifier.secret()).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let rv = send(
        Method::POST,
        &format!("http://{}/oauth/revoke", mock.addr),
        &[("content-type", "application/x-www-form-urlencoded")],
        format!("token={access}"),
    )
    .await;
    assert_eq!(rv.status, 200);
    assert!(!mock.state.is_valid(&access));
}

#[tokio::test]
async fn plain_pkce_bad_redirects_and_denials_are_refused() {
    let mock = MockProvider::start(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let r = authorize(&mock, Some(("abc", "plain"))).await;
    assert_eq!(
        param(&location_params(&r), "error"),
        Some("invalid_request")
    );

    let r = get(&format!("http://{}/oauth/authorize?response_type=code&client_id=demo-client&redirect_uri=javascript:alert(1)", mock.addr), &[]).await;
    assert_eq!(r.status, 400, "never redirects to an invalid redirect_uri");
    assert!(!r.headers.contains_key("location"));

    send(
        Method::POST,
        &format!("http://{}/__mock/faults", mock.addr),
        &[],
        r#"{"authorize":"access_denied"}"#,
    )
    .await;
    let r = authorize(&mock, None).await;
    let p = location_params(&r);
    assert_eq!(param(&p, "error"), Some("access_denied"));
    assert_eq!(param(&p, "state"), Some("st-1"));
}
