//! The one error mapping of DESIGN.md §8: every response the sidecar makes itself.
//!
//! Modules return a [`ProxyError`] (a stable [`ErrorCode`] plus a message that names the profile and the
//! field, never a secret value). [`ProxyError::into_response`] is the only place that turns one into an
//! HTTP response: JSON `{"error":{"code","message","profile","request_id"}}`, the status from the table,
//! `X-Authsidecar-Error: <code>` and `Cache-Control: no-store`.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::Full;

/// Header carrying the error code on every response the sidecar makes itself.
pub const ERROR_HEADER: &str = "x-authsidecar-error";

/// Stable, documented error codes (README "Errors"). Extend, never rename.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    NoRoute,
    ProfileNotAllowed,
    UserRequired,
    TenantInvalid,
    ContextValueInvalid,
    PathParamInvalid,
    PathInvalid,
    BodyNotInjectable,
    AuthorizationRequired,
    PayloadTooLarge,
    UnsupportedMediaType,
    RequestTimeout,
    IdpRejected,
    IdpInvalidResponse,
    IdpUnavailable,
    IdpTimeout,
    UpstreamUnavailable,
    UpstreamTlsError,
    UpstreamTimeout,
    EgressProxyUnavailable,
    EgressProxyAuthFailed,
    TokenStoreUnavailable,
    Internal,
    BadRequest,
    UriTooLong,
    IdpDnsError,
}

impl ErrorCode {
    /// All codes, in table order (used by tests and the docs check).
    pub const ALL: [ErrorCode; 26] = [
        ErrorCode::NoRoute,
        ErrorCode::ProfileNotAllowed,
        ErrorCode::UserRequired,
        ErrorCode::TenantInvalid,
        ErrorCode::ContextValueInvalid,
        ErrorCode::PathParamInvalid,
        ErrorCode::PathInvalid,
        ErrorCode::BodyNotInjectable,
        ErrorCode::AuthorizationRequired,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::RequestTimeout,
        ErrorCode::IdpRejected,
        ErrorCode::IdpInvalidResponse,
        ErrorCode::IdpUnavailable,
        ErrorCode::IdpTimeout,
        ErrorCode::UpstreamUnavailable,
        ErrorCode::UpstreamTlsError,
        ErrorCode::UpstreamTimeout,
        ErrorCode::EgressProxyUnavailable,
        ErrorCode::EgressProxyAuthFailed,
        ErrorCode::TokenStoreUnavailable,
        ErrorCode::Internal,
        ErrorCode::BadRequest,
        ErrorCode::UriTooLong,
        ErrorCode::IdpDnsError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NoRoute => "no_route",
            ErrorCode::ProfileNotAllowed => "profile_not_allowed",
            ErrorCode::UserRequired => "user_required",
            ErrorCode::TenantInvalid => "tenant_invalid",
            ErrorCode::ContextValueInvalid => "context_value_invalid",
            ErrorCode::PathParamInvalid => "path_param_invalid",
            ErrorCode::PathInvalid => "path_invalid",
            ErrorCode::BodyNotInjectable => "body_not_injectable",
            ErrorCode::AuthorizationRequired => "authorization_required",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::IdpRejected => "idp_rejected",
            ErrorCode::IdpInvalidResponse => "idp_invalid_response",
            ErrorCode::IdpUnavailable => "idp_unavailable",
            ErrorCode::IdpTimeout => "idp_timeout",
            ErrorCode::UpstreamUnavailable => "upstream_unavailable",
            ErrorCode::UpstreamTlsError => "upstream_tls_error",
            ErrorCode::UpstreamTimeout => "upstream_timeout",
            ErrorCode::EgressProxyUnavailable => "egress_proxy_unavailable",
            ErrorCode::EgressProxyAuthFailed => "egress_proxy_auth_failed",
            ErrorCode::TokenStoreUnavailable => "token_store_unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UriTooLong => "uri_too_long",
            ErrorCode::IdpDnsError => "idp_dns_error",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::NoRoute => StatusCode::NOT_FOUND,
            ErrorCode::ProfileNotAllowed => StatusCode::FORBIDDEN,
            ErrorCode::UserRequired
            | ErrorCode::TenantInvalid
            | ErrorCode::ContextValueInvalid
            | ErrorCode::PathParamInvalid
            | ErrorCode::PathInvalid
            | ErrorCode::BodyNotInjectable => StatusCode::BAD_REQUEST,
            ErrorCode::AuthorizationRequired => StatusCode::UNAUTHORIZED,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::IdpRejected | ErrorCode::IdpInvalidResponse => StatusCode::BAD_GATEWAY,
            ErrorCode::IdpUnavailable | ErrorCode::TokenStoreUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorCode::IdpTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::UpstreamUnavailable
            | ErrorCode::UpstreamTlsError
            | ErrorCode::EgressProxyUnavailable
            | ErrorCode::EgressProxyAuthFailed => StatusCode::BAD_GATEWAY,
            ErrorCode::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::UriTooLong => StatusCode::URI_TOO_LONG,
            ErrorCode::IdpDnsError => StatusCode::BAD_GATEWAY,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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
}

impl ProxyError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProxyError {
            code,
            message: message.into(),
            profile: None,
            retry_after: None,
            login: None,
        }
    }

    pub fn with_profile(mut self, profile: &Arc<str>) -> Self {
        self.profile = Some(profile.clone());
        self
    }

    /// Builds the response. `request_id` is echoed so operators can find the log line.
    pub fn into_response(self, request_id: &str) -> Response<Full<Bytes>> {
        let mut error = serde_json::Map::new();
        error.insert("code".into(), self.code.as_str().into());
        error.insert("message".into(), self.message.into());
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
        let body = serde_json::json!({ "error": error });
        let bytes = serde_json::to_vec(&body).unwrap_or_default();

        let mut resp = Response::new(Full::new(Bytes::from(bytes)));
        *resp.status_mut() = self.code.status();
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(ERROR_HEADER, HeaderValue::from_static(self.code.as_str()));
        if let Some(secs) = self.retry_after {
            h.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        // A request whose framing or Host could not be trusted ends its connection: whatever
        // follows it on the same connection cannot be trusted either.
        if self.code == ErrorCode::BadRequest {
            h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
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
    fn every_code_is_unique_and_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()));
            assert!(c
                .as_str()
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch == '_'));
        }
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
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "profile_not_allowed");
        assert_eq!(v["error"]["profile"], "demo");
        assert_eq!(v["error"]["request_id"], "rid-1");
        assert_eq!(v["error"]["message"], "nope");
    }
}
