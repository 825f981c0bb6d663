//! The auth listener: the only one end users' browsers reach.
//!
//! Routes:
//! - `GET /oauth/start/{ticket}`: from an `authorization_required` link. Starts an authorization:
//!   a new `state` (256 random bits, single use, expiring, bound to the ticket) and a PKCE S256 pair,
//!   kept server-side; then a redirect to the profile's authorization URL. Two logins in flight for
//!   one user both work (one state each).
//! - `GET /oauth/callback`: the "Bots Callback Link" registered at the IdP. Consumes the `state`
//!   (unknown, used or expired → 400 page, no token request), shows the IdP's `error` (escaped),
//!   checks `iss` when the profile names an `issuer` (RFC 9207), redeems the code with the verifier,
//!   stores the user's grant, and shows a success page. It never redirects anywhere.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::config::{AuthSettings, Grant};
use crate::inject::encode::{encode, parse_form};
use crate::oauth::grants::{self, Flow};
use crate::oauth::{to_fetched, Request as TokenRequest};
use crate::proxy::Snapshot;
use crate::serve::{ConnInfo, Handler};

type Body = http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub struct Auth {
    snapshot: Arc<Snapshot>,
    settings: AuthSettings,
}

fn escape(s: &str) -> String {
    s.chars()
        .take(500)
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c if c.is_control() => " ".to_string(),
            c => c.to_string(),
        })
        .collect()
}

fn page(status: StatusCode, title: &str, text: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head><body><h1>{t}</h1><p>{x}</p></body></html>",
        t = escape(title),
        x = escape(text)
    );
    let mut r = Response::new(Full::new(Bytes::from(html)).map_err(|n| match n {}).boxed());
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

impl Auth {
    pub fn new(snapshot: Arc<Snapshot>, settings: AuthSettings) -> Arc<Auth> {
        Arc::new(Auth { snapshot, settings })
    }

    pub fn handler(self: &Arc<Self>, _conn: ConnInfo) -> AuthHandler {
        AuthHandler(self.clone())
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        if req.method() != Method::GET {
            return page(
                StatusCode::METHOD_NOT_ALLOWED,
                "Not allowed",
                "Use the link you were given.",
            );
        }
        let path = req.uri().path().to_string();
        if let Some(ticket) = path.strip_prefix("/oauth/start/") {
            return self.start(ticket).await;
        }
        if path == "/oauth/callback" {
            return self.callback(req.uri().query()).await;
        }
        page(StatusCode::NOT_FOUND, "Not found", "There is nothing here.")
    }

    async fn start(&self, ticket_id: &str) -> Response<Body> {
        let store = self.snapshot.store.clone();
        let id = ticket_id.to_string();
        let ticket = match blocking(move || grants::read_ticket(&store, &id)).await {
            Some(Ok(Some(t))) => t,
            Some(Ok(None)) => {
                return page(
                    StatusCode::BAD_REQUEST,
                    "This link has expired",
                    "Ask for a new sign-in link and try again.",
                )
            }
            _ => {
                return page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Try again",
                    "The service is busy.",
                )
            }
        };
        let Some(o) = self
            .snapshot
            .profiles
            .get(ticket.profile.as_str())
            .and_then(|p| p.oauth.as_ref())
            .filter(|o| o.per_user)
        else {
            return page(
                StatusCode::BAD_REQUEST,
                "This link is no longer valid",
                "Ask for a new sign-in link.",
            );
        };
        let s = o.source.settings();
        let Grant::AuthorizationCode(code) = &s.grant else {
            return page(
                StatusCode::BAD_REQUEST,
                "This link is no longer valid",
                "Ask for a new sign-in link.",
            );
        };
        let (challenge, verifier) = if code.pkce {
            let (c, v) = oauth2::PkceCodeChallenge::new_random_sha256();
            (Some(c.as_str().to_string()), Some(v.secret().clone()))
        } else {
            (None, None)
        };
        let flow = Flow {
            ticket: ticket_id.to_string(),
            profile: ticket.profile.clone(),
            user: ticket.user.clone(),
            tenant: ticket.tenant.clone(),
            verifier,
        };
        let (store, ttl) = (self.snapshot.store.clone(), self.settings.ticket_ttl);
        let state = match blocking(move || grants::new_flow(&store, ttl, &flow)).await {
            Some(Ok(s)) => s,
            _ => {
                return page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Try again",
                    "The service is busy.",
                )
            }
        };
        let mut url = match &ticket.tenant {
            Some(t) => code.authorization_url.replace("{tenant}", t),
            None => code.authorization_url.clone(),
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!(
            "response_type=code&client_id={}&redirect_uri={}&state={}",
            encode(&s.client_id),
            encode(&self.settings.callback_url()),
            encode(&state)
        ));
        if let Some(c) = challenge {
            url.push_str(&format!("&code_challenge={c}&code_challenge_method=S256"));
        }
        for (k, v) in &s.scope {
            url.push_str(&format!("&{}={}", encode(k), encode(v)));
        }
        let mut r = page(
            StatusCode::FOUND,
            "Signing in",
            "Continue at your identity provider.",
        );
        match HeaderValue::from_str(&url) {
            Ok(v) => {
                r.headers_mut().insert(LOCATION, v);
                r
            }
            Err(_) => page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in failed",
                "The authorization URL is invalid.",
            ),
        }
    }

    async fn callback(&self, query: Option<&str>) -> Response<Body> {
        let params = parse_form(query.unwrap_or("").as_bytes());
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let Some(state) = get("state").filter(|s| !s.is_empty()) else {
            return page(
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                "The answer from the identity provider has no state.",
            );
        };
        let store = self.snapshot.store.clone();
        let flow = match blocking(move || grants::take_flow(&store, &state)).await {
            Some(Ok(Some(f))) => f,
            Some(Ok(None)) => {
                return page(
                    StatusCode::BAD_REQUEST,
                    "Sign-in failed",
                    "This sign-in is unknown, was already used, or has expired. Ask for a new sign-in link.",
                )
            }
            _ => return page(StatusCode::SERVICE_UNAVAILABLE, "Try again", "The service is busy."),
        };
        if let Some(err) = get("error") {
            let desc = get("error_description").unwrap_or_default();
            return page(
                StatusCode::BAD_REQUEST,
                "Sign-in was not completed",
                &format!("{err}: {desc}"),
            );
        }
        let Some(o) = self
            .snapshot
            .profiles
            .get(flow.profile.as_str())
            .and_then(|p| p.oauth.as_ref())
            .filter(|o| o.per_user)
        else {
            return page(
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                "This sign-in is no longer valid.",
            );
        };
        if let Grant::AuthorizationCode(c) = &o.source.settings().grant {
            if let Some(expected) = &c.issuer {
                match get("iss") {
                    Some(iss) if &iss == expected => {}
                    Some(_) => {
                        return page(
                            StatusCode::BAD_REQUEST,
                            "Sign-in failed",
                            "The answer came from another identity provider (issuer mismatch).",
                        )
                    }
                    None => {
                        return page(
                            StatusCode::BAD_REQUEST,
                            "Sign-in failed",
                            "The answer does not name its identity provider (issuer missing).",
                        )
                    }
                }
            }
        }
        let Some(code) = get("code").filter(|c| !c.is_empty()) else {
            return page(
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                "The answer from the identity provider has no code.",
            );
        };
        let redirect = self.settings.callback_url();
        let result = o
            .source
            .request(
                &o.source.http,
                flow.tenant.as_deref(),
                TokenRequest::Code {
                    code: &code,
                    verifier: flow.verifier.as_deref(),
                    redirect_uri: &redirect,
                },
            )
            .await;
        let fetched = match result {
            Ok(r) => to_fetched(r),
            Err(e) => {
                tracing::warn!(profile = %flow.profile, "code exchange failed: {}", e.message);
                return page(
                    StatusCode::BAD_GATEWAY,
                    "Sign-in failed",
                    &format!("The identity provider refused the sign-in ({}).", e.code()),
                );
            }
        };
        let name = grants::grant_name(&flow.profile, flow.tenant.as_deref(), &flow.user);
        let store = self.snapshot.store.clone();
        let ticket = flow.ticket.clone();
        let saved = blocking(move || {
            grants::save_grant(&store, &name, &fetched)?;
            let _ = store.remove(&format!("ticket:{ticket}"));
            Ok::<(), crate::token::TokenError>(())
        })
        .await;
        match saved {
            Some(Ok(())) => {
                tracing::info!(profile = %flow.profile, "end user authorized");
                page(
                    StatusCode::OK,
                    "You are signed in",
                    "You can close this page and return to the conversation.",
                )
            }
            _ => page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                "Your sign-in could not be saved.",
            ),
        }
    }
}

#[derive(Clone)]
pub struct AuthHandler(Arc<Auth>);

impl Handler for AuthHandler {
    type Body = Body;

    fn call(
        &self,
        req: Request<Incoming>,
    ) -> impl std::future::Future<Output = Response<Body>> + Send + 'static {
        let auth = self.0.clone();
        async move { auth.handle(req).await }
    }
}
