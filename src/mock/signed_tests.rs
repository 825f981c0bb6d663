//! Tests of the mock's verifying resources (`signed.rs`).

use super::*;

#[test]
fn amz_dates_and_header_times_parse() {
    assert_eq!(amz_unix("20150830T123600Z"), Some(1_440_938_160));
    assert_eq!(amz_unix("20150830T123600"), None);
    assert_eq!(amz_unix("20151330T123600Z"), None);
    assert_eq!(header_time_ms("1440938160"), Some(1_440_938_160_000));
    assert_eq!(header_time_ms("1440938160123"), Some(1_440_938_160_123));
    assert_eq!(
        header_time_ms("Sun, 30 Aug 2015 12:36:00 GMT"),
        Some(1_440_938_160_000)
    );
    assert_eq!(header_time_ms("soon"), None);
}

fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = Request::builder().method(method).uri(uri);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(()).unwrap().into_parts().0
}

/// A request signed by the project's signer is accepted; one byte changed anywhere is refused
/// with the right code.
#[test]
fn sigv4_accepts_a_signed_request_and_refuses_changes() {
    let cfg = MockSigV4::default();
    let now = 1_700_000_000;
    let signer = sigv4::Signer::new(
        sigv4::Credentials::new(&cfg.access_key_id, cfg.secret_access_key.expose()),
        cfg.region.clone(),
        cfg.service.clone(),
    );
    let hs: Vec<(&str, &[u8])> = vec![("host", b"mock:1"), ("x-custom", b"a  b")];
    let req = crate::sign::Request {
        method: "POST",
        scheme: "http",
        authority: "mock:1",
        path: "/sigv4/x",
        query: Some("b=2&a=1"),
        headers: &hs,
        body: b"{}",
    };
    let signed = signer
        .sign(&req, sigv4::Payload::Signed, now as u64)
        .unwrap();
    let mut headers: Vec<(&str, &str)> = vec![("host", "mock:1"), ("x-custom", "a  b")];
    for (n, v) in signed.headers() {
        headers.push((n, v.as_str()));
    }
    let p = parts("POST", "/sigv4/x?b=2&a=1", &headers);
    assert!(check_sigv4(&cfg, &p, b"{}", now).is_ok());
    let code = |r: Result<(), Refusal>| r.err().map(|r| r.code);
    assert_eq!(
        code(check_sigv4(&cfg, &p, b"{ }", now)),
        Some("XAmzContentSHA256Mismatch")
    );
    assert_eq!(
        code(check_sigv4(&cfg, &p, b"{}", now + 3600)),
        Some("RequestTimeTooSkewed")
    );
    let p2 = parts("POST", "/sigv4/x?b=3&a=1", &headers);
    assert_eq!(
        code(check_sigv4(&cfg, &p2, b"{}", now)),
        Some("SignatureDoesNotMatch")
    );
    let wrong = MockSigV4 {
        secret_access_key: "not-the-secret".into(),
        ..MockSigV4::default()
    };
    assert_eq!(
        code(check_sigv4(&wrong, &p, b"{}", now)),
        Some("SignatureDoesNotMatch")
    );
    let with_token = MockSigV4 {
        session_token: Some("tok".into()),
        ..MockSigV4::default()
    };
    assert_eq!(
        code(check_sigv4(&with_token, &p, b"{}", now)),
        Some("InvalidClientTokenId")
    );
}

#[test]
fn hmac_accepts_a_signed_request_and_refuses_changes() {
    let cfg = MockHmac::default();
    let signer = cfg.signer().unwrap();
    let now = 1_700_000_000_i64;
    let m = hmac::Moment::new(now as u64 * 1000, [7; 16]);
    let hs: Vec<(&str, &[u8])> = vec![("host", b"mock:1")];
    let req = crate::sign::Request {
        method: "GET",
        scheme: "http",
        authority: "mock:1",
        path: "/hmac/x",
        query: Some("a=1"),
        headers: &hs,
        body: b"",
    };
    let sig = signer.sign(&req, &m);
    let ts = m.timestamp().to_string();
    let ok = parts(
        "GET",
        "/hmac/x?a=1",
        &[
            ("host", "mock:1"),
            ("x-signature", &sig),
            ("x-timestamp", &ts),
        ],
    );
    assert!(check_hmac(&cfg, &ok, b"", now).is_ok());
    let code = |r: Result<Option<[u8; 16]>, Refusal>| r.err().map(|r| r.code);
    assert_eq!(
        code(check_hmac(&cfg, &ok, b"x", now)),
        Some("invalid_signature")
    );
    assert_eq!(
        code(check_hmac(&cfg, &ok, b"", now + 301)),
        Some("stale_timestamp")
    );
    let unsigned = parts(
        "GET",
        "/hmac/x?a=1",
        &[("host", "mock:1"), ("x-timestamp", &ts)],
    );
    assert_eq!(
        code(check_hmac(&cfg, &unsigned, b"", now)),
        Some("missing_signature")
    );
}

#[test]
fn an_hmac_nonce_is_accepted_once_within_the_window() {
    let state = MockState::new(super::super::oauth::MockSettings::default());
    let (a, b) = ([1u8; 16], [2u8; 16]);
    assert!(first_use(&state, a, 1_000, 300).is_ok());
    assert_eq!(
        first_use(&state, a, 1_010, 300).err().map(|r| r.code),
        Some("nonce_used")
    );
    assert!(first_use(&state, b, 1_010, 300).is_ok());
    // Past the window the old nonce is forgotten (its timestamp would be refused anyway).
    assert!(first_use(&state, a, 1_400, 300).is_ok());
}
