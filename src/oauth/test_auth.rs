//! "Test authorization": run a profile's token request and report what happened, with every token and
//! secret masked. Used by `authsidecar test-auth` and `POST /admin/profiles/{name}/test`.
//!
//! An `oauth2_authorization_code` profile's Test is the code exchange of an operator's sign-in
//! ([`run_request`] with [`Request::Code`], from the callback; see `oauth::test_run`); a sign-in
//! that ends before the exchange (denied, a bad callback) is reported by [`TestReport::refused`].
//! A three-legged `oauth1` profile's is the token-credentials request of one ([`run_oauth1`]).
//! Every report is made by one builder, with one redactor.
//!
//! A signing profile (`aws_sigv4`, `hmac`, `oauth1`) has no token request: its Test sends one signed
//! `GET` through the proxy's pipeline (`proxy::probe`) and fills the same [`TestReport`], with
//! `request` (the signed request as sent, masked) set and `token_url` and `token` empty.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::http::Exchange;
use super::oauth1::ThreeLegged;
use super::{to_fetched, OAuthSource, Request};
use crate::redact::Redactor;
use crate::secret::OAuth1RequestSecret;
use crate::token::{Fetched, TokenError};

/// Largest body shown in a report.
pub const MAX_REPORT_BODY: usize = 64 * 1024;

/// Header values never shown.
pub(crate) const SECRET_HEADERS: &[&str] = &[
    "set-cookie",
    "authorization",
    "proxy-authorization",
    "www-authenticate",
];

#[derive(Debug, Serialize, Deserialize)]
pub struct TestReport {
    pub profile: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The token endpoint (`None` for a signing profile's Test).
    pub token_url: Option<String>,
    /// A signing profile's Test: the signed request as it was sent, masked (`None` for a token
    /// request).
    pub request: Option<SentRequest>,
    /// Whether the test succeeded: a token was obtained, or the upstream answered 2xx to the
    /// signed request.
    pub ok: bool,
    /// HTTP status of the token endpoint (or, for a signing profile, the upstream), when it
    /// answered.
    pub status: Option<u16>,
    pub elapsed_ms: u64,
    /// Response headers ("Headers" tab).
    pub headers: Vec<(String, String)>,
    /// Response body, masked ("Response" tab).
    pub body: String,
    pub error: Option<ReportError>,
    pub token: Option<TokenSummary>,
    /// Whether the token was put in the cache (admin only, `store=true`).
    pub stored: bool,
}

/// The signed request a signing profile's Test sent: method, URL and header fields, with
/// signatures, tokens and secrets masked.
#[derive(Debug, Serialize, Deserialize)]
pub struct SentRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReportError {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TokenSummary {
    pub token_type: String,
    pub expires_in: Option<u64>,
    pub scope: Option<String>,
    pub has_refresh_token: bool,
    pub has_id_token: bool,
    pub extra_members: Vec<String>,
}

pub(crate) fn redacted(s: &str) -> String {
    format!("[redacted len={}]", s.chars().count())
}

fn is_secret_member(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.ends_with("token") || n.contains("secret") || n.contains("password") || n == "code"
}

fn mask_json(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if is_secret_member(k) {
                    if let Value::String(s) = val {
                        *val = Value::String(redacted(s));
                        continue;
                    }
                }
                mask_json(val);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask_json),
        _ => {}
    }
}

/// Masks a response body: JSON members that hold tokens or secrets, then every form of every known
/// secret wherever it appears (see [`Redactor`]).
pub fn mask_body(body: &[u8], redactor: &Redactor) -> String {
    let body = &body[..body.len().min(MAX_REPORT_BODY)];
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(mut v) => {
            mask_json(&mut v);
            serde_json::to_string_pretty(&v).unwrap_or_default()
        }
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    redactor.mask(&text)
}

/// An answer's headers as a report shows them: credential headers masked whole, every other value
/// with every known secret masked.
pub(crate) fn shown_headers(
    headers: &http::HeaderMap,
    redactor: &Redactor,
) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            let raw = String::from_utf8_lossy(v.as_bytes());
            let shown = if SECRET_HEADERS.contains(&n.as_str()) {
                redacted(&raw)
            } else {
                redactor.mask(&raw)
            };
            (n.as_str().to_string(), shown)
        })
        .collect()
}

/// The report's `type` for a profile's grant.
fn kind(grant: &crate::config::Grant) -> &'static str {
    match grant {
        crate::config::Grant::ClientCredentials => "oauth2_client_credentials",
        crate::config::Grant::Password { .. } | crate::config::Grant::UserPassword => {
            "oauth2_password"
        }
        crate::config::Grant::AuthorizationCode(_) => "oauth2_authorization_code",
        crate::config::Grant::JwtBearer(_) => "oauth2_jwt_bearer",
    }
}

/// Runs the profile's token request once (never through the cache) and reports.
pub async fn run(source: &OAuthSource, tenant: Option<&str>) -> (TestReport, Option<Fetched>) {
    run_request(
        source,
        crate::oauth::DynValues::tenant(tenant),
        Request::Primary,
    )
    .await
}

/// Sends one token request (`which`: the profile's own grant, or the code of a test sign-in) over
/// a recording copy of the profile's client, never through the cache, and reports.
pub async fn run_request(
    source: &OAuthSource,
    dv: crate::oauth::DynValues<'_>,
    which: Request<'_>,
) -> (TestReport, Option<Fetched>) {
    let s = source.settings();
    let (http, capture) = source.http.capturing();
    let started = Instant::now();
    let result = source.request_with(&http, dv, which).await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let exchange = capture.lock().unwrap_or_else(|p| p.into_inner()).take();

    let mut secrets: Vec<&str> = Vec::new();
    if let Some(cs) = &s.client_secret {
        secrets.push(cs.expose());
    }
    if let crate::config::Grant::Password { username, password } = &s.grant {
        secrets.push(username.expose());
        secrets.push(password.expose());
    }
    let (fetched, error) = match result {
        Ok(r) => (Some(to_fetched(r)), None),
        Err(e) => (None, Some(e)),
    };
    let report = build(Built {
        profile: source.profile(),
        kind: kind(&s.grant),
        token_url: Some(
            source
                .token_url_with(dv)
                .unwrap_or_else(|_| s.token_url.clone()),
        ),
        elapsed_ms,
        exchange: exchange.as_ref(),
        result: match &fetched {
            Some(f) => Ok(f),
            None => Err(error.as_ref()),
        },
        secrets,
        client_id: Some(&s.client_id),
    });
    (report, fetched)
}

/// A three-legged `oauth1` profile's Test (`per_user = true`): the token-credentials request of an
/// operator's sign-in ([`ThreeLegged::access_token_recorded`]), reported like a token request. The
/// credentials are dropped.
pub async fn run_oauth1(
    provider: &ThreeLegged,
    profile: &str,
    request_token: &str,
    request_secret: &OAuth1RequestSecret,
    verifier: &str,
) -> TestReport {
    let started = Instant::now();
    let (result, exchange) = provider
        .access_token_recorded(request_token, request_secret, verifier)
        .await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    build(Built {
        profile,
        kind: "oauth1",
        token_url: provider.access_token_url().map(str::to_string),
        elapsed_ms,
        exchange: exchange.as_ref(),
        result: result.as_ref().map_err(Some),
        // The request token's secret; the consumer secret never travels (only a signature).
        secrets: vec![request_secret.expose()],
        client_id: None,
    })
}

/// What a report is made of.
struct Built<'a> {
    profile: &'a str,
    kind: &'a str,
    token_url: Option<String>,
    elapsed_ms: u64,
    /// The IdP's answer as it came, when it answered.
    exchange: Option<&'a Exchange>,
    /// The token obtained, or why not (`None`: no token and no error).
    result: Result<&'a Fetched, Option<&'a TokenError>>,
    /// The profile's own secrets: masked in every encoded form (raw, percent- and form-encoded,
    /// JSON-escaped, base64 and inside `Authorization: Basic`).
    secrets: Vec<&'a str>,
    client_id: Option<&'a str>,
}

/// The one report builder: every text that can quote the IdP goes through one redactor that knows
/// the profile's secrets and every token (and token secret) just received.
fn build(b: Built<'_>) -> TestReport {
    let fetched = b.result.ok();
    let mut tokens: Vec<&str> = Vec::new();
    if let Some(f) = fetched {
        tokens.push(f.access_token.expose());
        if let Some(rt) = &f.refresh_token {
            tokens.push(rt.expose());
        }
        if let Some(it) = &f.id_token {
            tokens.push(it.expose());
        }
        // Values kept with a grant (an OAuth 1.0a token secret).
        tokens.extend(f.entered.iter().map(|(_, v)| v.expose()));
    }
    let redactor = Redactor::new(b.secrets, tokens, b.client_id);
    let (status, headers, body) = match b.exchange {
        Some(x) => (
            Some(x.status),
            shown_headers(&x.headers, &redactor),
            mask_body(&x.body, &redactor),
        ),
        None => (None, Vec::new(), String::new()),
    };
    let token = fetched.map(|f| TokenSummary {
        token_type: f.token_type.clone(),
        expires_in: f.expires_in.map(|d| d.as_secs()),
        scope: f.scope.clone(),
        has_refresh_token: f.refresh_token.is_some(),
        has_id_token: f.id_token.is_some(),
        extra_members: f.extra.iter().map(|(k, _)| k.clone()).collect(),
    });
    let error = b.result.err().flatten();
    TestReport {
        profile: b.profile.to_string(),
        kind: b.kind.to_string(),
        token_url: b.token_url,
        request: None,
        ok: fetched.is_some(),
        status,
        elapsed_ms: b.elapsed_ms,
        headers,
        body,
        error: error.map(|e| ReportError {
            code: e.code().as_str().to_string(),
            message: redactor.mask(&e.message),
        }),
        token,
        stored: false,
    }
}

impl TestReport {
    /// The report of a test sign-in that ended before any token request (the identity provider
    /// sent the operator back with an error, the callback was unusable, the profile is gone):
    /// `code` and `message` say why, masked of the profile's secrets; no IdP answer.
    pub fn refused(
        profile: &str,
        source: Option<&OAuthSource>,
        tenant: Option<&str>,
        code: crate::error::ErrorCode,
        message: &str,
    ) -> TestReport {
        let secrets: Vec<&str> = source
            .and_then(|s| s.settings().client_secret.as_ref())
            .map(|cs| cs.expose())
            .into_iter()
            .collect();
        let redactor = Redactor::new(
            secrets,
            Vec::<&str>::new(),
            source.map(|s| s.settings().client_id.as_str()),
        );
        TestReport {
            profile: profile.to_string(),
            kind: source
                .map_or("oauth2_authorization_code", |s| kind(&s.settings().grant))
                .to_string(),
            token_url: source.map(|s| {
                s.token_url(tenant)
                    .unwrap_or_else(|_| s.settings().token_url.clone())
            }),
            request: None,
            ok: false,
            status: None,
            elapsed_ms: 0,
            headers: Vec::new(),
            body: String::new(),
            error: Some(ReportError {
                code: code.as_str().to_string(),
                message: redactor.mask(message),
            }),
            token: None,
            stored: false,
        }
    }

    /// The human-readable form printed by `authsidecar test-auth`.
    pub fn to_text(&self) -> String {
        let target = match (&self.token_url, &self.request) {
            (Some(url), _) => format!("Token URL: {url}"),
            (None, Some(r)) => format!("Request:   {} {}", r.method, r.url),
            (None, None) => "Request:   -".to_string(),
        };
        let result = match (&self.error, self.ok, self.status) {
            (Some(e), _, _) => format!("Auth Test Failed: {}: {}", e.code, e.message),
            (None, true, _) => "Auth Test Succeeded".to_string(),
            (None, false, Some(status)) => {
                format!("Auth Test Failed: the upstream answered {status}")
            }
            (None, false, None) => "Auth Test Failed".to_string(),
        };
        let mut out = format!(
            "Profile:   {} ({})\n{target}\nResult:    {result}\n",
            self.profile, self.kind,
        );
        out.push_str(&format!(
            "Status:    {}\nElapsed:   {} ms\n",
            self.status.map_or("-".into(), |s| s.to_string()),
            self.elapsed_ms
        ));
        if let Some(t) = &self.token {
            out.push_str(&format!(
                "Token:     {} expires_in={} scope={} refresh_token={} extra={:?}\n",
                t.token_type,
                t.expires_in.map_or("-".into(), |s| s.to_string()),
                t.scope.as_deref().unwrap_or("-"),
                t.has_refresh_token,
                t.extra_members
            ));
        }
        if let Some(r) = &self.request {
            out.push_str("\n== Request headers ==\n");
            for (k, v) in &r.headers {
                out.push_str(&format!("{k}: {v}\n"));
            }
        }
        out.push_str("\n== Headers ==\n");
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\n"));
        }
        out.push_str("\n== Response ==\n");
        out.push_str(&self.body);
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_known_secrets_are_masked() {
        let body = br#"{"access_token":"tok-abc","refresh_token":"rt-xyz","expires_in":60,"note":"secret s3cr3t-value here","nested":{"id_token":"idt"}}"#;
        let out = mask_body(body, &Redactor::new(["s3cr3t-value"], ["tok-abc"], None));
        for s in ["tok-abc", "rt-xyz", "idt\"", "s3cr3t-value"] {
            assert!(!out.contains(s), "{s} in {out}");
        }
        assert!(out.contains("\"expires_in\": 60"));
        assert!(out.contains("[redacted len=7]"));
        let html = b"<html>token tok-abc</html>";
        assert!(!mask_body(html, &Redactor::new([], ["tok-abc"], None)).contains("tok-abc"));
    }
}
