//! The mock's verifying resources, for users testing their own signing integrations:
//!
//! - `ANY /sigv4/...`: verifies an AWS Signature Version 4 the way AWS does. It reads the
//!   `Authorization` header's credential scope, signed header names and signature, checks the
//!   access key id, region and service against its own, `x-amz-date` within `max_skew` of its
//!   clock, `x-amz-content-sha256` (the body's SHA-256 or `UNSIGNED-PAYLOAD`), the session token
//!   when it has one, then recomputes the canonical request from what it received (method, path,
//!   query, the signed header fields, the body) and compares signatures. A refusal is 403 with an
//!   AWS-like error: S3's XML (`<Error><Code>SignatureDoesNotMatch</Code>…`, with the canonical
//!   request and string to sign it computed) for service `s3`, API Gateway's JSON
//!   (`{"message": …}` and `x-amzn-ErrorType`) for the others.
//! - `ANY /hmac/...`: verifies an `hmac`-style signature: the `string_to_sign` template rendered
//!   from what it received, with the time from the timestamp header (Unix seconds, milliseconds or
//!   an HTTP date; within `max_skew`) and the nonce from the nonce header, signed with its secret,
//!   algorithm and encoding, compared with the signature header. A refusal is 401 with
//!   `{"error": CODE, "message": …}` (and the `string_to_sign` it computed on a mismatch).
//!
//! An accepted request gets the echo's answer. Their settings are `[mock_provider.sigv4]` and
//! `[mock_provider.hmac]` (`config::MockSigV4`, `config::MockHmac`).
//!
//! These use the project's own signers to recompute (an independent check of the signers is the
//! Python checkers' job, `tests/verify/`): they are here so that a user's integration can be tested
//! end to end against a server that refuses a wrong signature.

use std::sync::atomic::Ordering;

use base64::Engine;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::{echo_parts, json_response, read_body, Body, MockState};
use crate::config::{MockHmac, MockSigV4};
use crate::secret::ct_eq;
use crate::sign::{hmac, sigv4};

/// A refusal: its code (AWS's, or the HMAC resource's) and message.
struct Refusal {
    code: &'static str,
    message: String,
    /// What the resource computed, to compare with the client's (no secret in either).
    computed: Option<(String, String)>,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
        computed: None,
    }
}

fn now_unix() -> i64 {
    crate::sign::unix_now() as i64
}

/// `ANY /sigv4/...`.
pub(super) async fn sigv4(state: &MockState, req: Request<Incoming>) -> Response<Body> {
    let cfg = state.signed_settings().0;
    let (parts, body) = req.into_parts();
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match check_sigv4(&cfg, &parts, &body, now_unix()) {
        Ok(()) => accepted(state, parts, body).await,
        Err(r) => {
            state
                .counters
                .resource_rejected
                .fetch_add(1, Ordering::SeqCst);
            aws_error(&cfg.service, r)
        }
    }
}

/// `ANY /hmac/...`.
pub(super) async fn hmac(state: &MockState, req: Request<Incoming>) -> Response<Body> {
    let cfg = state.signed_settings().1;
    let (parts, body) = req.into_parts();
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let now = now_unix();
    let checked = check_hmac(&cfg, &parts, &body, now).and_then(|nonce| match nonce {
        Some(n) => first_use(state, n, now, cfg.max_skew.as_secs() as i64),
        None => Ok(()),
    });
    match checked {
        Ok(()) => accepted(state, parts, body).await,
        Err(r) => {
            state
                .counters
                .resource_rejected
                .fetch_add(1, Ordering::SeqCst);
            let mut v = json!({"error": r.code, "message": r.message});
            if let Some((_, sts)) = r.computed {
                v["string_to_sign"] = sts.into();
            }
            json_response(StatusCode::UNAUTHORIZED, &v)
        }
    }
}

async fn accepted(state: &MockState, parts: http::request::Parts, body: Bytes) -> Response<Body> {
    state.counters.resource_ok.fetch_add(1, Ordering::SeqCst);
    state.counters.echo.fetch_add(1, Ordering::SeqCst);
    echo_parts(http::Request::from_parts(parts, body)).await
}

/// 403 as AWS writes it: S3's XML error, or API Gateway's JSON.
fn aws_error(service: &str, r: Refusal) -> Response<Body> {
    if service.eq_ignore_ascii_case("s3") {
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        };
        let mut xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message>",
            r.code,
            esc(&r.message)
        );
        if let Some((canonical, sts)) = &r.computed {
            xml.push_str(&format!(
                "<StringToSign>{}</StringToSign><CanonicalRequest>{}</CanonicalRequest>",
                esc(sts),
                esc(canonical)
            ));
        }
        xml.push_str("<RequestId>mock</RequestId></Error>");
        let mut resp = Response::new(super::full(xml));
        *resp.status_mut() = StatusCode::FORBIDDEN;
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
        return resp;
    }
    let mut message = r.message;
    if let Some((canonical, sts)) = &r.computed {
        message.push_str(&format!(
            "\n\nThe Canonical String for this request should have been\n'{canonical}'\n\nThe String-to-Sign should have been\n'{sts}'\n"
        ));
    }
    let mut resp = json_response(StatusCode::FORBIDDEN, &json!({ "message": message }));
    if let Ok(v) = HeaderValue::from_str(r.code) {
        resp.headers_mut().insert("x-amzn-errortype", v);
    }
    resp
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex of whole bytes (either case), or `None`.
fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Unix seconds of an `x-amz-date` (`YYYYMMDDTHHMMSSZ`).
fn amz_unix(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let n = |a: usize, z: usize| s.get(a..z)?.parse::<i64>().ok();
    let (y, m, d) = (n(0, 4)?, n(4, 6)?, n(6, 8)?);
    let (hh, mm, ss) = (n(9, 11)?, n(11, 13)?, n(13, 15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

fn check_sigv4(
    cfg: &MockSigV4,
    parts: &http::request::Parts,
    body: &[u8],
    now: i64,
) -> Result<(), Refusal> {
    let h = &parts.headers;
    let Some(auth) = header(h, AUTHORIZATION.as_str()) else {
        return Err(refuse(
            "MissingAuthenticationToken",
            "Missing Authentication Token: no Authorization header",
        ));
    };
    let Some(fields) = auth.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return Err(refuse(
            "IncompleteSignature",
            "Authorization header requires the AWS4-HMAC-SHA256 algorithm",
        ));
    };
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for f in fields.split(',') {
        match f.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed_headers = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => {}
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) =
        (credential, signed_headers, signature)
    else {
        return Err(refuse(
            "IncompleteSignature",
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'",
        ));
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, service, terminator] = scope[..] else {
        return Err(refuse(
            "IncompleteSignature",
            "Credential must have the form KEYID/YYYYMMDD/REGION/SERVICE/aws4_request",
        ));
    };
    if !ct_eq(key_id.as_bytes(), cfg.access_key_id.as_bytes()) {
        return Err(refuse(
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
        ));
    }
    if region != cfg.region || service != cfg.service || terminator != "aws4_request" {
        return Err(refuse(
            "SignatureDoesNotMatch",
            format!(
                "Credential should be scoped to a valid region and service: expected {}/{}/aws4_request, got {region}/{service}/{terminator}",
                cfg.region, cfg.service
            ),
        ));
    }
    let Some(amz_date) = header(h, "x-amz-date") else {
        return Err(refuse(
            "IncompleteSignature",
            "the request has no X-Amz-Date header",
        ));
    };
    let Some(at) = amz_unix(amz_date) else {
        return Err(refuse(
            "IncompleteSignature",
            "X-Amz-Date must be YYYYMMDDTHHMMSSZ",
        ));
    };
    if !amz_date.starts_with(date) {
        return Err(refuse(
            "SignatureDoesNotMatch",
            format!("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{date}' != '{}'", &amz_date[..8]),
        ));
    }
    let skew = crate::config::DEFAULT_MOCK_SIGNED_MAX_SKEW.as_secs() as i64;
    if (now - at).abs() > skew {
        return Err(refuse(
            "RequestTimeTooSkewed",
            format!("Signature expired or not yet current: {amz_date} is more than {skew} s from the server's time"),
        ));
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    if !names.contains(&"host") {
        return Err(refuse(
            "SignatureDoesNotMatch",
            "SignedHeaders must include host",
        ));
    }
    let content_sha256 = header(h, "x-amz-content-sha256");
    let payload = match content_sha256 {
        Some(sigv4::UNSIGNED_PAYLOAD) => sigv4::Payload::Unsigned,
        Some(given) => {
            let actual = hex(ring::digest::digest(&ring::digest::SHA256, body).as_ref());
            if given != actual {
                return Err(refuse(
                    "XAmzContentSHA256Mismatch",
                    format!("The provided 'x-amz-content-sha256' header does not match what was computed: {actual}"),
                ));
            }
            sigv4::Payload::Signed
        }
        None => sigv4::Payload::Signed,
    };
    let token = header(h, "x-amz-security-token");
    match (&cfg.session_token, token) {
        (Some(want), Some(got)) if ct_eq(want.expose().as_bytes(), got.as_bytes()) => {}
        (None, None) => {}
        (Some(_), None) => {
            return Err(refuse(
                "InvalidClientTokenId",
                "The security token included in the request is invalid: none was sent (X-Amz-Security-Token)",
            ))
        }
        _ => {
            return Err(refuse(
                "InvalidClientTokenId",
                "The security token included in the request is invalid.",
            ))
        }
    }

    // The canonical request from what arrived: the signed header fields, in the order received.
    let set_by_signer = ["x-amz-date", "x-amz-content-sha256", "x-amz-security-token"];
    let list: Vec<(&str, &[u8])> = h
        .iter()
        .filter(|(n, _)| names.contains(&n.as_str()) && !set_by_signer.contains(&n.as_str()))
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    let host = header(h, HOST.as_str()).unwrap_or_default();
    let request = crate::sign::Request {
        method: parts.method.as_str(),
        scheme: "http",
        authority: host,
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &list,
        body,
    };
    let mut creds =
        sigv4::Credentials::new(cfg.access_key_id.clone(), cfg.secret_access_key.expose());
    if let Some(t) = &cfg.session_token {
        creds = creds.with_session_token(t.expose());
    }
    let settings = sigv4::Settings {
        content_sha256_header: names.contains(&"x-amz-content-sha256"),
        sign_session_token: names.contains(&"x-amz-security-token"),
        ..sigv4::Settings::for_service(&cfg.service)
    };
    let signer =
        sigv4::Signer::new(creds, cfg.region.clone(), cfg.service.clone()).with_settings(settings);
    let signed = signer
        .sign(&request, payload, at as u64)
        .map_err(|e| refuse("IncompleteSignature", e.to_string()))?;
    let computed = (
        String::from_utf8_lossy(signed.canonical_request()).into_owned(),
        signed.string_to_sign().to_string(),
    );
    let expected_names = signed
        .authorization()
        .split("SignedHeaders=")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_default();
    if expected_names != signed_headers
        || !ct_eq(signed.signature().as_bytes(), signature.as_bytes())
    {
        return Err(Refusal {
            code: "SignatureDoesNotMatch",
            message: "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.".into(),
            computed: Some(computed),
        });
    }
    Ok(())
}

/// The time a timestamp header gives, in Unix milliseconds: seconds, milliseconds (13 digits or
/// more) or an HTTP date.
fn header_time_ms(value: &str) -> Option<u64> {
    match value.trim().parse::<u64>() {
        Ok(n) if n >= 100_000_000_000 => Some(n),
        Ok(n) => n.checked_mul(1000),
        Err(_) => httpdate::parse_http_date(value.trim())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() * 1000),
    }
}

/// Records a signed request's nonce; one seen within the time window is a replay.
fn first_use(state: &MockState, nonce: [u8; 16], now: i64, window: i64) -> Result<(), Refusal> {
    let mut seen = state.hmac_nonces.lock().unwrap_or_else(|p| p.into_inner());
    seen.retain(|_, t| (now - *t).abs() <= window);
    match seen.insert(nonce, now) {
        None => Ok(()),
        Some(_) => Err(refuse(
            "nonce_used",
            "this nonce was already used (a replayed request)".to_string(),
        )),
    }
}

/// Checks a signed request; returns its nonce when `string_to_sign` uses one.
fn check_hmac(
    cfg: &MockHmac,
    parts: &http::request::Parts,
    body: &[u8],
    now: i64,
) -> Result<Option<[u8; 16]>, Refusal> {
    let signer = cfg
        .signer()
        .map_err(|e| refuse("misconfigured", format!("the mock's own settings: {e}")))?;
    let h = &parts.headers;
    let Some(given) = header(h, &cfg.signature_header) else {
        return Err(refuse(
            "missing_signature",
            format!("no {} header", cfg.signature_header),
        ));
    };
    let timed = [
        hmac::Field::Timestamp,
        hmac::Field::TimestampMs,
        hmac::Field::Date,
    ]
    .into_iter()
    .any(|f| signer.uses(f));
    let ms = match header(h, &cfg.timestamp_header) {
        Some(v) => Some(header_time_ms(v).ok_or_else(|| {
            refuse(
                "invalid_timestamp",
                format!(
                    "{} is not Unix seconds, milliseconds or an HTTP date",
                    cfg.timestamp_header
                ),
            )
        })?),
        None if timed => {
            return Err(refuse(
                "missing_timestamp",
                format!(
                    "no {} header (string_to_sign uses the time)",
                    cfg.timestamp_header
                ),
            ))
        }
        None => None,
    };
    if let Some(ms) = ms {
        let skew = cfg.max_skew.as_secs() as i64;
        if (now - (ms / 1000) as i64).abs() > skew {
            return Err(refuse(
                "stale_timestamp",
                format!(
                    "{} is more than {skew} s from the server's time",
                    cfg.timestamp_header
                ),
            ));
        }
    }
    let nonce = if signer.uses(hmac::Field::Nonce) {
        let raw = header(h, &cfg.nonce_header).ok_or_else(|| {
            refuse(
                "missing_nonce",
                format!(
                    "no {} header (string_to_sign uses the nonce)",
                    cfg.nonce_header
                ),
            )
        })?;
        let bytes = unhex(raw)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .ok_or_else(|| {
                refuse(
                    "invalid_nonce",
                    format!("{} must be 32 hex digits (128 bits)", cfg.nonce_header),
                )
            })?;
        Some(bytes)
    } else {
        None
    };
    let moment = hmac::Moment::new(ms.unwrap_or(0), nonce.unwrap_or([0; 16]));
    let list: Vec<(&str, &[u8])> = h.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
    let request = crate::sign::Request {
        method: parts.method.as_str(),
        scheme: "http",
        authority: header(h, HOST.as_str()).unwrap_or_default(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &list,
        body,
    };
    let expected = signer.sign(&request, &moment);
    if !ct_eq(expected.as_bytes(), given.trim().as_bytes()) {
        let sts = signer.string_to_sign(&request, &moment);
        let sts = match std::str::from_utf8(&sts) {
            Ok(s) => s.to_string(),
            Err(_) => format!(
                "(base64) {}",
                base64::engine::general_purpose::STANDARD.encode(&sts)
            ),
        };
        return Err(Refusal {
            code: "invalid_signature",
            message: format!(
                "the {} header does not match the signature computed over string_to_sign",
                cfg.signature_header
            ),
            computed: Some((String::new(), sts)),
        });
    }
    Ok(nonce)
}

#[cfg(test)]
#[path = "signed_tests.rs"]
mod tests;
