//! Token endpoints that answer the way some real providers do, for testing presets
//! (`config/presets.toml`) end to end. Both run the ordinary token endpoint (`oauth::token`) and
//! reshape a successful answer:
//!
//! - `POST …/oauth.v2.access` (Slack): `{"ok": true, "access_token": "xoxb-…", "token_type": "bot",
//!   "authed_user": {<the issued token's members>, "token_type": "user"}}`. The top-level bot token
//!   is not one this provider issued, so a resource call with it is refused: only a client that
//!   reads `/authed_user/access_token` gets through. Errors: HTTP 200 `{"ok": false, "error": …}`.
//! - `POST …/login/oauth/access_token` (GitHub): form-encoded `access_token=…&token_type=bearer&…`
//!   unless the request says `Accept: application/json`; errors are HTTP 200 with an `error`.

use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

use super::{full, json_response, Body, MockState};

/// The ordinary token endpoint's answer as JSON (status, members).
async fn issue(state: &MockState, req: Request<Incoming>) -> (StatusCode, Map<String, Value>) {
    let resp = super::oauth::token(state, req).await;
    let status = resp.status();
    let bytes = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Default::default(),
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => (status, m),
        _ => (status, Map::new()),
    }
}

/// `POST …/oauth.v2.access`: Slack's OAuth v2 answer shape.
pub(super) async fn slack_access(state: &MockState, req: Request<Incoming>) -> Response<Body> {
    let (status, mut m) = issue(state, req).await;
    if !status.is_success() {
        let error = m.remove("error").unwrap_or_else(|| json!("invalid_code"));
        return json_response(StatusCode::OK, &json!({"ok": false, "error": error}));
    }
    m.insert("token_type".into(), json!("user"));
    json_response(
        StatusCode::OK,
        &json!({
            "ok": true,
            "app_id": "A0MOCK",
            "access_token": "xoxb-mock-bot-token-not-issued",
            "token_type": "bot",
            "scope": "commands",
            "authed_user": Value::Object(m),
        }),
    )
}

/// `POST …/login/oauth/access_token`: GitHub's answer, form-encoded unless JSON was asked for.
pub(super) async fn github_access(state: &MockState, req: Request<Incoming>) -> Response<Body> {
    let wants_json = req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let (status, mut m) = issue(state, req).await;
    if !status.is_success() {
        m.retain(|k, _| k == "error" || k == "error_description");
    }
    if wants_json {
        return json_response(StatusCode::OK, &Value::Object(m));
    }
    let text: Vec<String> = m
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("{k}={}", crate::inject::encode::encode(&v))
        })
        .collect();
    let mut r = Response::new(full(text.join("&")));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
    );
    r
}
