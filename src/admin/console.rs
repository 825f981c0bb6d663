//! The admin console: `GET /admin/` on the admin listener.
//!
//! A server-rendered shell plus one small script and one style sheet, all embedded in the binary (no
//! external assets). Signing in takes the admin token once (`POST /admin/login`) and gives a session
//! cookie (`HttpOnly`, `SameSite=Strict`, `Path=/admin`, `Secure` when the admin listener has TLS); the
//! token itself is never kept in the browser. The page then calls the same JSON API as `curl` does,
//! with the cookie instead of the bearer token. A call that changes state with a cookie must carry the
//! session's CSRF token in `X-CSRF-Token` and must not come from another site (`Origin`,
//! `Sec-Fetch-Site`); bearer-token calls need neither, since a browser never adds them by itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, HOST, LOCATION, ORIGIN, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::{full, Body};
use crate::error::ErrorCode;
use crate::http_util::html_escape;

/// Name of the session cookie.
pub const COOKIE_NAME: &str = "authsidecar_admin";
/// A session ends this long after sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Sessions kept at once; the oldest goes first beyond this.
const MAX_SESSIONS: usize = 256;

const HTML: &str = include_str!("console.html");
const LOGIN_HTML: &str = include_str!("login.html");
const JS: &str = include_str!("console.js");
const CSS: &str = include_str!("console.css");

/// Content-Security-Policy of every console page: nothing but this listener's own script, style
/// and API, never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

struct Session {
    csrf: String,
    created: Instant,
}

/// Signed-in console sessions (in memory: a restart signs everyone out).
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session: its id (the cookie value) and CSRF token.
    pub fn create(&self) -> (String, String) {
        let (id, csrf) = (
            crate::oauth::grants::random_id(),
            crate::oauth::grants::random_id(),
        );
        let mut m = self.lock();
        m.retain(|_, s| s.created.elapsed() < SESSION_TTL);
        if m.len() >= MAX_SESSIONS {
            if let Some(oldest) = m
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
            {
                m.remove(&oldest);
            }
        }
        m.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                created: Instant::now(),
            },
        );
        (id, csrf)
    }

    /// The CSRF token of the live session named by the request's cookie.
    pub fn find(&self, headers: &HeaderMap) -> Option<String> {
        let id = cookie(headers)?;
        let m = self.lock();
        m.get(id)
            .filter(|s| s.created.elapsed() < SESSION_TTL)
            .map(|s| s.csrf.clone())
    }

    pub fn remove(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers) {
            self.lock().remove(id);
        }
    }
}

/// The session cookie's value, if the request has one.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v)
}

/// Whether a browser sent this request from another site. `Sec-Fetch-Site` decides when present
/// (only `same-origin` and `none`, a typed address, are this site); without it an `Origin` whose
/// host is not the `Host` the request was sent to (or `null`) is another site. A request with
/// neither comes from no browser (curl, scripts) and is not cross-site.
pub fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or_default();
        return site != "same-origin" && site != "none";
    }
    match headers.get(ORIGIN) {
        None => false,
        Some(o) => {
            let host = headers.get(HOST).and_then(|h| h.to_str().ok());
            let origin_host = o
                .to_str()
                .ok()
                .and_then(|o| o.split_once("://"))
                .map(|(_, h)| h);
            origin_host.is_none() || origin_host != host
        }
    }
}

/// Whether a call with a session may go on: reads are free; anything else needs the CSRF token
/// and a same-site origin.
pub fn csrf_ok(method: &Method, headers: &HeaderMap, csrf: &str) -> bool {
    if method == Method::GET || method == Method::HEAD {
        return true;
    }
    let given = headers
        .get("x-csrf-token")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    !cross_site(headers) && crate::secret::ct_eq(csrf.as_bytes(), given)
}

fn page(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(CSP.trim()),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    r
}

/// `GET /admin/console.js` and `/admin/console.css` (no secrets: served to anyone).
pub fn asset(path: &str) -> Option<Response<Body>> {
    match path {
        "/admin/console.js" => Some(page(
            StatusCode::OK,
            "text/javascript; charset=utf-8",
            JS.to_string(),
        )),
        "/admin/console.css" => Some(page(
            StatusCode::OK,
            "text/css; charset=utf-8",
            CSS.to_string(),
        )),
        _ => None,
    }
}

/// The sign-in page; after a refused try, with its message, and its code and request id (the
/// status and headers of the one error table).
pub fn login_page(refused: Option<(ErrorCode, &str, &str)>) -> Response<Body> {
    let msg = match refused {
        None => String::new(),
        Some((_, message, request_id)) => format!(
            "<p class=\"error\" id=\"login-error\">{} <small>Request id: <code>{}</code></small></p>",
            html_escape(message),
            html_escape(request_id)
        ),
    };
    let mut r = page(
        StatusCode::OK,
        "text/html; charset=utf-8",
        LOGIN_HTML.replace("{{message}}", &msg),
    );
    if let Some((code, _, _)) = refused {
        crate::error::mark(&mut r, code, None);
    }
    r
}

/// The console for a signed-in session.
pub fn console_page(csrf: &str) -> Response<Body> {
    page(
        StatusCode::OK,
        "text/html; charset=utf-8",
        HTML.replace("{{csrf}}", &html_escape(csrf)),
    )
}

/// A 303 to the console, setting (or clearing, with `None`) the session cookie.
pub fn redirect_with_cookie(session: Option<&str>, secure: bool) -> Response<Body> {
    let mut r = page(StatusCode::SEE_OTHER, "text/plain", String::new());
    let secure = if secure { "; Secure" } else { "" };
    let c = match session {
        Some(id) => format!(
            "{COOKIE_NAME}={id}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            SESSION_TTL.as_secs()
        ),
        None => {
            format!("{COOKIE_NAME}=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
        }
    };
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().insert(SET_COOKIE, v);
    }
    r.headers_mut()
        .insert(LOCATION, HeaderValue::from_static("/admin/"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn sessions_are_found_by_cookie_and_removed() {
        let s = Sessions::default();
        let (id, csrf) = s.create();
        assert_ne!(id, csrf);
        let h = headers(&[("cookie", &format!("a=b; {COOKIE_NAME}={id}; c=d"))]);
        assert_eq!(s.find(&h).as_deref(), Some(csrf.as_str()));
        assert_eq!(
            s.find(&headers(&[("cookie", "authsidecar_admin=nope")])),
            None
        );
        s.remove(&h);
        assert_eq!(s.find(&h), None);
    }

    #[test]
    fn sessions_are_capped() {
        let s = Sessions::default();
        let (first, _) = s.create();
        for _ in 0..MAX_SESSIONS {
            s.create();
        }
        let h = headers(&[("cookie", &format!("{COOKIE_NAME}={first}"))]);
        assert_eq!(s.find(&h), None, "the oldest session made room");
        assert_eq!(s.lock().len(), MAX_SESSIONS);
    }

    #[test]
    fn cross_site_requests_are_recognised() {
        assert!(!cross_site(&headers(&[])));
        assert!(!cross_site(&headers(&[
            ("host", "127.0.0.1:9901"),
            ("origin", "http://127.0.0.1:9901")
        ])));
        assert!(cross_site(&headers(&[
            ("host", "127.0.0.1:9901"),
            ("origin", "http://evil.example")
        ])));
        assert!(cross_site(&headers(&[("host", "a"), ("origin", "null")])));
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(cross_site(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(!cross_site(&headers(&[("sec-fetch-site", "same-origin")])));
        // Sec-Fetch-Site decides over an opaque Origin.
        assert!(!cross_site(&headers(&[
            ("sec-fetch-site", "same-origin"),
            ("origin", "null")
        ])));
        assert!(cross_site(&headers(&[
            ("sec-fetch-site", "cross-site"),
            ("host", "127.0.0.1:9901"),
            ("origin", "http://127.0.0.1:9901")
        ])));
    }

    #[test]
    fn state_changes_need_the_csrf_token() {
        assert!(csrf_ok(&Method::GET, &headers(&[]), "t0k"));
        assert!(!csrf_ok(&Method::POST, &headers(&[]), "t0k"));
        assert!(!csrf_ok(
            &Method::POST,
            &headers(&[("x-csrf-token", "other")]),
            "t0k"
        ));
        assert!(csrf_ok(
            &Method::DELETE,
            &headers(&[("x-csrf-token", "t0k")]),
            "t0k"
        ));
        assert!(!csrf_ok(
            &Method::POST,
            &headers(&[("x-csrf-token", "t0k"), ("sec-fetch-site", "cross-site")]),
            "t0k"
        ));
    }
}
