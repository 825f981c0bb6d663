//! The one error vocabulary of DESIGN.md §8: every answer the sidecar makes itself, on the proxy,
//! auth and admin listeners and for overload.
//!
//! [`error_codes!`] below is the table: each code's variant, code string, status and whether the
//! connection closes after it. The enum, [`ErrorCode::as_str`], [`ErrorCode::status`] and
//! [`ErrorCode::closes`] all come from it, and `docs/errors.md` is checked against it by a test.
//!
//! Modules return a [`ProxyError`] (a code plus a message that names the profile and the field,
//! never a secret value). [`ProxyError::into_response`] turns one into the JSON answer
//! `{"error":{"code","message","profile","request_id"}}`; HTML pages (the auth listener's, the
//! console's sign-in page) take the same status and headers from [`mark`]. Either way the answer
//! carries `X-Authsidecar-Error: <code>`, `Cache-Control: no-store` and, for a code that closes,
//! `Connection: close`: that rule is written here once, as a column of the table.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::Full;

/// Header carrying the error code on every answer the sidecar makes itself.
pub const ERROR_HEADER: &str = "x-authsidecar-error";

/// Builds [`ErrorCode`] and its accessors from one table: `Variant = "code", status, close|keep;`.
/// `close`: the connection ends after the answer (whatever follows on it cannot be trusted, or the
/// caller's body was not read to its end).
macro_rules! error_codes {
    ($( $(#[doc = $doc:literal])+ $name:ident = $code:literal, $status:literal, $close:ident; )+) => {
        /// Stable, documented error codes (`docs/errors.md`). Extend, never rename.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[doc = $doc])+ $name, )+
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),+];

            /// The code string (`X-Authsidecar-Error` and `error.code`).
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$name => $code),+ }
            }

            /// The HTTP status, as a number.
            pub const fn status_u16(self) -> u16 {
                match self { $(ErrorCode::$name => $status),+ }
            }

            /// Whether the connection closes after this answer.
            pub const fn closes(self) -> bool {
                match self { $(ErrorCode::$name => error_codes!(@close $close)),+ }
            }
        }
    };
    (@close close) => { true };
    (@close keep) => { false };
}

error_codes! {
    // ---- The proxy listener: the request and its control values ----
    /// No route prefix matches the request path.
    NoRoute = "no_route", 404, keep;
    /// `X-Authsidecar-Profile` names a profile that is not in the route's list.
    ProfileNotAllowed = "profile_not_allowed", 403, keep;
    /// The profile needs `X-Authsidecar-User` and the request has none.
    UserRequired = "user_required", 400, keep;
    /// `X-Authsidecar-User` fails its rule (1 to 256 bytes of UTF-8).
    UserInvalid = "user_invalid", 400, keep;
    /// A tenant is missing where needed, or is not one DNS label.
    TenantInvalid = "tenant_invalid", 400, keep;
    /// A needed context header is missing, not UTF-8, or too long.
    ContextValueInvalid = "context_value_invalid", 400, keep;
    /// A path parameter is empty, `.`, `..` or too long.
    PathParamInvalid = "path_param_invalid", 400, keep;
    /// The request path has dot segments, or the request target is not a path.
    PathInvalid = "path_invalid", 400, keep;
    /// Payload placement on a body it cannot rewrite (GET/HEAD, malformed or non-object JSON).
    BodyNotInjectable = "body_not_injectable", 400, keep;
    /// The caller's body ended before its declared length (the caller's fault, not the upstream's).
    BodyIncomplete = "body_incomplete", 400, close;
    /// The request's framing or `Host` cannot be trusted.
    BadRequest = "bad_request", 400, close;
    /// The end user must authorize (carries `login_url` and `expires_in`).
    AuthorizationRequired = "authorization_required", 401, keep;
    /// The caller stopped sending its body, or did not finish it in time.
    RequestTimeout = "request_timeout", 408, close;
    /// The body is over the size allowed.
    PayloadTooLarge = "payload_too_large", 413, close;
    /// The request target is over `proxy.max_uri_bytes`.
    UriTooLong = "uri_too_long", 414, keep;
    /// Payload placement on a media type it cannot rewrite.
    UnsupportedMediaType = "unsupported_media_type", 415, keep;
    // ---- The proxy listener: the identity provider, the store, the upstream ----
    /// The IdP refused the client or the grant.
    IdpRejected = "idp_rejected", 502, keep;
    /// The IdP answered something that is not a token response.
    IdpInvalidResponse = "idp_invalid_response", 502, keep;
    /// The IdP's host name did not resolve.
    IdpDnsError = "idp_dns_error", 502, keep;
    /// The IdP is unreachable or answered 5xx (with `Retry-After`).
    IdpUnavailable = "idp_unavailable", 503, keep;
    /// The token request took too long.
    IdpTimeout = "idp_timeout", 504, keep;
    /// The shared store did not answer (with `Retry-After`).
    TokenStoreUnavailable = "token_store_unavailable", 503, keep;
    /// The upstream refused or dropped the connection, or broke HTTP.
    UpstreamUnavailable = "upstream_unavailable", 502, keep;
    /// TLS to the upstream failed.
    UpstreamTlsError = "upstream_tls_error", 502, keep;
    /// The upstream's origin, taken from the grant, is not a plain origin on a host of the
    /// route's `upstream_hosts` (nothing is sent).
    UpstreamNotAllowed = "upstream_not_allowed", 502, keep;
    /// The connector (egress proxy) is unreachable or refused the tunnel.
    EgressProxyUnavailable = "egress_proxy_unavailable", 502, keep;
    /// The connector refused its credentials.
    EgressProxyAuthFailed = "egress_proxy_auth_failed", 502, keep;
    /// The upstream did not answer within the route's `timeout`.
    UpstreamTimeout = "upstream_timeout", 504, keep;
    // ---- Every listener ----
    /// A connection past the listener's connection cap (answered before any request is read).
    Overloaded = "overloaded", 503, close;
    /// No such page or endpoint (auth and admin listeners).
    NotFound = "not_found", 404, keep;
    /// The endpoint exists, the method does not (auth and admin listeners).
    MethodNotAllowed = "method_not_allowed", 405, keep;
    /// A bug (logged as a warning).
    Internal = "internal", 500, keep;
    // ---- The admin listener ----
    /// `/admin/*` without the admin bearer token or a console session.
    Unauthorized = "unauthorized", 401, keep;
    /// `/admin/*` on a sidecar without `[admin] token`.
    AdminDisabled = "admin_disabled", 403, keep;
    /// A console call that changes state without its CSRF token, or from another site.
    CsrfFailed = "csrf_failed", 403, keep;
    /// No profile with that name.
    ProfileNotFound = "profile_not_found", 404, keep;
    /// `POST /admin/profiles/{name}/test` on a profile that makes no token request of its own.
    NotTestable = "not_testable", 400, keep;
    /// `GET /admin/profiles/{name}/test/{test_id}`: no such test for the profile, or it expired.
    TestNotFound = "test_not_found", 404, keep;
    /// `POST /admin/profiles/{name}/test`: too many sign-in tests pending (with `Retry-After`).
    TooManyTests = "too_many_tests", 429, keep;
    /// `DELETE /admin/tokens/{profile}` on a profile that has no tokens.
    NotRevocable = "not_revocable", 400, keep;
    /// `POST /admin/profiles/{name}/login-links` on a profile whose credentials are not end users',
    /// or `PUT /admin/grants/{profile}` on one that keeps no OAuth grants of end users.
    NotPerUser = "not_per_user", 400, keep;
    /// `PUT /admin/grants/{profile}` or a line of `POST /admin/grants:import`: the grant is not a
    /// JSON object, or a member is missing, unknown or of the wrong form.
    GrantInvalid = "grant_invalid", 400, keep;
    /// An admin query parameter is malformed or out of range (`GET /admin/grants`: `cursor`,
    /// `limit`).
    QueryInvalid = "query_invalid", 400, keep;
    /// `GET /admin/grants`: the cursor came from a Redis server that has restarted or failed over
    /// since (start the listing again).
    CursorExpired = "cursor_expired", 409, keep;
    /// `GET /readyz` before every listener is bound.
    NotReady = "not_ready", 503, keep;
    /// `POST /admin/reload` on a server with no config file to read again.
    ReloadUnavailable = "reload_unavailable", 503, keep;
    /// `POST /admin/reload`: the file is invalid or changes what needs a restart (`errors` lists why).
    ConfigInvalid = "config_invalid", 422, keep;
    /// `POST /admin/certificates/reload`: some certificate could not be read again (`errors`).
    CertificateReloadFailed = "certificate_reload_failed", 500, keep;
    /// The profile form: no config file or no `[admin] profiles_dir` to write profiles to.
    ProfileFormUnavailable = "profile_form_unavailable", 409, keep;
    /// The profile form on a profile of the main config file, or a name it cannot take.
    ProfileNotEditable = "profile_not_editable", 409, keep;
    /// The profile form: the config with the change fails its checks (`errors`); nothing changed.
    ProfileInvalid = "profile_invalid", 422, keep;
    /// The profile form: a typed secret while the store is memory (lost on restart).
    SecretStoreNotDurable = "secret_store_not_durable", 409, keep;
    // ---- The auth listener (HTML pages) ----
    /// The login link, or the sign-in it started, is unknown, used or expired.
    LinkInvalid = "link_invalid", 400, keep;
    /// The login link's credential checks are used up.
    LinkSpent = "link_spent", 403, keep;
    /// Too many credential checks for this user (with `Retry-After`).
    TooManyAttempts = "too_many_attempts", 429, keep;
    /// An answer on the start page's form fails its rule.
    FormInvalid = "form_invalid", 400, keep;
    /// The IdP refused the username and password entered on the start page.
    CredentialsRejected = "credentials_rejected", 400, keep;
    /// The IdP sent the user back with an `error` (`access_denied`, …).
    AuthorizationDenied = "authorization_denied", 400, keep;
    /// The callback lacks `state` or `code`, or its issuer does not match.
    CallbackInvalid = "callback_invalid", 400, keep;
    /// OpenID Connect: the `id_token` of a sign-in is missing or fails its checks (signature,
    /// `iss`, `aud`, `exp`, `iat`, `nonce`); no grant is stored.
    IdTokenInvalid = "id_token_invalid", 400, keep;
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        StatusCode::from_u16(self.status_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Gives an answer the sidecar makes itself, whatever its body (JSON or an HTML page), the status,
/// `X-Authsidecar-Error` and `Cache-Control: no-store` of `code`, `Retry-After` when given, and
/// `Connection: close` when the code closes the connection.
pub fn mark<B>(resp: &mut Response<B>, code: ErrorCode, retry_after: Option<u64>) {
    *resp.status_mut() = code.status();
    let h = resp.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(ERROR_HEADER, HeaderValue::from_static(code.as_str()));
    if let Some(secs) = retry_after {
        h.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    if code.closes() {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
}

/// The request id of an answer: the caller's `X-Request-Id` when it is 1 to 128 visible ASCII
/// characters, else a new one: 8 hex digits for this process and 12 of a counter shared by every
/// listener.
pub fn request_id(given: Option<&HeaderValue>) -> String {
    if let Some(s) = given.and_then(|v| v.to_str().ok()) {
        if !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()) {
            return s.to_string();
        }
    }
    static SEQ: AtomicU64 = AtomicU64::new(0);
    static PREFIX: OnceLock<u32> = OnceLock::new();
    let prefix = *PREFIX.get_or_init(|| {
        std::process::id()
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0))
    });
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    // No formatter on the hot path.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(20);
    for (v, digits) in [(u64::from(prefix), 8), (n, 12)] {
        for i in (0..digits).rev() {
            id.push(char::from(HEX[((v >> (4 * i)) & 0xf) as usize]));
        }
    }
    id
}

/// Whether reading a body failed because the caller's input ended (hyper reports an
/// `UnexpectedEof` I/O error as the cause).
pub fn ended_early(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// An error the sidecar answers itself. The message must never contain a secret value.
#[derive(Debug, Clone)]
pub struct ProxyError {
    pub code: ErrorCode,
    pub message: String,
    pub profile: Option<Arc<str>>,
    pub retry_after: Option<u64>,
    /// `authorization_required`: the link to show the end user, and its lifetime in seconds.
    pub login: Option<(String, u64)>,
    /// `config_invalid`, `certificate_reload_failed`: each thing that went wrong (`error.errors`).
    pub errors: Vec<String>,
}

impl ProxyError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProxyError {
            code,
            message: message.into(),
            profile: None,
            retry_after: None,
            login: None,
            errors: Vec::new(),
        }
    }

    pub fn with_profile(mut self, profile: &Arc<str>) -> Self {
        self.profile = Some(profile.clone());
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn with_errors(mut self, errors: Vec<String>) -> Self {
        self.errors = errors;
        self
    }

    /// Whether the connection closes after this answer.
    pub fn closes(&self) -> bool {
        self.code.closes()
    }

    /// The JSON body. `request_id` is echoed so operators can find the log line.
    fn body(&self, request_id: &str) -> Bytes {
        let mut error = serde_json::Map::new();
        error.insert("code".into(), self.code.as_str().into());
        error.insert("message".into(), self.message.as_str().into());
        error.insert(
            "profile".into(),
            match &self.profile {
                Some(p) => serde_json::Value::String(p.to_string()),
                None => serde_json::Value::Null,
            },
        );
        error.insert("request_id".into(), request_id.into());
        if let Some((url, expires_in)) = &self.login {
            error.insert("login_url".into(), url.clone().into());
            error.insert("expires_in".into(), (*expires_in).into());
        }
        if !self.errors.is_empty() {
            error.insert("errors".into(), self.errors.clone().into());
        }
        let body = serde_json::json!({ "error": error });
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// The JSON answer: the body, and the headers of [`mark`].
    pub fn into_response(self, request_id: &str) -> Response<Full<Bytes>> {
        let mut resp = Response::new(Full::new(self.body(request_id)));
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        mark(&mut resp, self.code, self.retry_after);
        resp
    }

    /// The same answer as HTTP/1.1 bytes, for a connection no HTTP server has taken (the
    /// overload answer, written before any request is read).
    pub fn to_http1(&self, request_id: &str) -> Vec<u8> {
        let body = self.body(request_id);
        let mut head = Response::new(());
        head.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        mark(&mut head, self.code, self.retry_after);
        let status = head.status();
        let mut out = Vec::with_capacity(256 + body.len());
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in head.headers() {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(&body);
        out
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ProxyError {}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn every_code_is_unique_snake_case_and_has_an_error_status() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "{c} twice");
            assert!(c
                .as_str()
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch == '_'));
            assert_eq!(c.status().as_u16(), c.status_u16(), "{c}");
            assert!(c.status_u16() >= 400, "{c}");
        }
    }

    #[test]
    fn the_codes_that_close_are_those_after_which_the_connection_cannot_be_trusted() {
        let closing: Vec<&str> = ErrorCode::ALL
            .iter()
            .filter(|c| c.closes())
            .map(|c| c.as_str())
            .collect();
        assert_eq!(
            closing,
            [
                "body_incomplete",
                "bad_request",
                "request_timeout",
                "payload_too_large",
                "overloaded"
            ]
        );
    }

    #[tokio::test]
    async fn response_has_json_body_code_header_and_no_store() {
        let profile: Arc<str> = Arc::from("demo");
        let resp = ProxyError::new(ErrorCode::ProfileNotAllowed, "nope")
            .with_profile(&profile)
            .into_response("rid-1");
        assert_eq!(resp.status(), 403);
        assert_eq!(resp.headers()[ERROR_HEADER], "profile_not_allowed");
        assert_eq!(resp.headers()[CACHE_CONTROL], "no-store");
        assert!(resp.headers().get(CONNECTION).is_none());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "profile_not_allowed");
        assert_eq!(v["error"]["profile"], "demo");
        assert_eq!(v["error"]["request_id"], "rid-1");
        assert_eq!(v["error"]["message"], "nope");
        assert!(v["error"].get("errors").is_none());
    }

    #[tokio::test]
    async fn a_closing_code_says_so_and_lists_come_along() {
        let resp = ProxyError::new(ErrorCode::BodyIncomplete, "short")
            .into_response("r")
            .map(|b| b);
        assert_eq!(resp.status(), 400);
        assert_eq!(resp.headers()[CONNECTION], "close");
        let e = ProxyError::new(ErrorCode::ConfigInvalid, "not reloaded")
            .with_errors(vec!["a.b: bad".into()]);
        let body = e.into_response("r").into_body().collect().await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body.to_bytes()).unwrap();
        assert_eq!(v["error"]["errors"][0], "a.b: bad");
        assert!(v["error"]["profile"].is_null());
    }

    #[test]
    fn the_overload_answer_is_a_whole_http1_message() {
        let bytes = ProxyError::new(ErrorCode::Overloaded, "busy")
            .with_retry_after(1)
            .to_http1("rid-9");
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        for line in [
            "x-authsidecar-error: overloaded",
            "connection: close",
            "retry-after: 1",
            "cache-control: no-store",
            "content-type: application/json",
        ] {
            assert!(head.contains(line), "{line} not in {head}");
        }
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["request_id"], "rid-9");
    }

    /// `docs/errors.md` is the table for readers: one row per code, with its status and whether
    /// the connection closes, exactly as in `error_codes!`.
    #[test]
    fn docs_errors_md_lists_exactly_the_codes_of_the_table() {
        let doc = include_str!("../docs/errors.md");
        let mut documented: Vec<(String, u16, bool)> = doc
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                assert!(
                    cells.len() >= 6,
                    "a row of code | status | closes | where | when: {l}"
                );
                let status = cells[2].parse().unwrap_or_else(|_| panic!("status of {l}"));
                assert!(
                    matches!(cells[3], "" | "yes"),
                    "closes is yes or empty: {l}"
                );
                (
                    cells[1].trim_matches('`').to_string(),
                    status,
                    cells[3] == "yes",
                )
            })
            .collect();
        let mut table: Vec<(String, u16, bool)> = ErrorCode::ALL
            .iter()
            .map(|c| (c.as_str().to_string(), c.status_u16(), c.closes()))
            .collect();
        let rows = documented.len();
        documented.sort();
        documented.dedup();
        assert_eq!(
            rows,
            documented.len(),
            "a code has two rows in docs/errors.md"
        );
        table.sort();
        for row in &table {
            assert!(
                documented.contains(row),
                "docs/errors.md lacks or misstates {row:?}"
            );
        }
        for row in &documented {
            assert!(
                table.contains(row),
                "docs/errors.md has {row:?}, which is not in the table"
            );
        }
        // The README points there instead of keeping a second copy.
        let readme = include_str!("../README.md");
        assert!(readme.contains("docs/errors.md"));
        assert!(
            !readme.contains("| `no_route` |"),
            "a copy of the table in the README"
        );
    }

    #[test]
    fn request_ids_are_the_callers_when_sane_else_new() {
        let given = HeaderValue::from_static("caller-1");
        assert_eq!(request_id(Some(&given)), "caller-1");
        let bad = HeaderValue::from_static("has space");
        let (a, b) = (request_id(Some(&bad)), request_id(None));
        assert_eq!((a.len(), b.len()), (20, 20));
        assert_ne!(a, b);
        assert_eq!(a[..8], b[..8]);
    }
}
