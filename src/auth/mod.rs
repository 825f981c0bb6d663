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

use crate::config::{AuthSettings, Grant, UserField};
use crate::inject::encode::{encode, parse_form};
use crate::oauth::grants::{self, Flow};
use crate::oauth::{to_fetched, Request as TokenRequest};
use crate::proxy::Snapshot;
use crate::serve::{ConnInfo, Handler};
use crate::template::{Template, Var};

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
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

/// Largest start-page form accepted.
const MAX_FORM_BYTES: usize = 16 * 1024;

fn not_allowed() -> Response<Body> {
    page(
        StatusCode::METHOD_NOT_ALLOWED,
        "Not allowed",
        "Use the link you were given.",
    )
}

fn profile_title(identity_provider: Option<&str>) -> String {
    match identity_provider {
        Some(idp) => format!("Sign in with {idp}"),
        None => "Sign in".to_string(),
    }
}

/// The start page's form: the tenant (when the request named none) and the profile's user fields.
struct Form<'a> {
    title: String,
    ask_tenant: bool,
    fields: &'a [UserField],
}

impl Form<'_> {
    fn is_empty(&self) -> bool {
        !self.ask_tenant && self.fields.is_empty()
    }

    /// Checks the answers; returns the chosen tenant and the user fields' values, or a message that
    /// names the field (never its value).
    #[allow(clippy::type_complexity)]
    fn check(
        &self,
        answers: &[(String, String)],
    ) -> Result<(Option<String>, Vec<(String, String)>), String> {
        let get = |name: &str| {
            answers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let tenant = if self.ask_tenant {
            match crate::proxy::validate_tenant(get("tenant").trim().as_bytes()) {
                Ok(t) => Some(t),
                Err(_) => {
                    return Err("Tenant: expected one DNS label (letters, digits and '-', up to 63, not starting or ending with '-').".into())
                }
            }
        } else {
            None
        };
        let mut values = Vec::with_capacity(self.fields.len());
        for f in self.fields {
            let v = get(&format!("f.{}", f.key));
            if v.is_empty() {
                return Err(format!("{}: required.", f.label));
            }
            if v.chars().count() > f.max_length {
                return Err(format!("{}: at most {} characters.", f.label, f.max_length));
            }
            if v.chars().any(char::is_control) {
                return Err(format!(
                    "{}: must not contain line breaks or other control characters.",
                    f.label
                ));
            }
            if f.pattern.as_ref().is_some_and(|re| !re.is_match(v)) {
                return Err(format!("{}: does not have the expected form.", f.label));
            }
            values.push((f.key.clone(), v.to_string()));
        }
        Ok((tenant, values))
    }

    /// The form page; non-secret answers are filled in again after an error.
    fn render(
        &self,
        status: StatusCode,
        answers: &[(String, String)],
        error: Option<&str>,
    ) -> Response<Body> {
        let previous = |name: &str| {
            answers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| escape(v))
                .unwrap_or_default()
        };
        let mut inputs = String::new();
        if self.ask_tenant {
            inputs.push_str(&format!(
                "<p><label>Tenant <input name=\"tenant\" required maxlength=\"63\" autocomplete=\"organization\" value=\"{}\"></label></p>",
                previous("tenant")
            ));
        }
        for f in self.fields {
            let name = format!("f.{}", f.key);
            let (kind, value) = if f.secret {
                ("password", String::new())
            } else {
                ("text", previous(&name))
            };
            inputs.push_str(&format!(
                "<p><label>{} <input type=\"{kind}\" name=\"{}\" required maxlength=\"{}\" autocomplete=\"off\" value=\"{value}\"></label></p>",
                escape(&f.label),
                escape(&name),
                f.max_length
            ));
        }
        let error = error
            .map(|e| format!("<p role=\"alert\"><strong>{}</strong></p>", escape(e)))
            .unwrap_or_default();
        let html = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head><body><h1>{t}</h1>{error}<form method=\"post\">{inputs}<p><button type=\"submit\">Continue</button></p></form></body></html>",
            t = escape(&self.title),
        );
        let mut r = page(status, "", "");
        *r.body_mut() = Full::new(Bytes::from(html)).map_err(|n| match n {}).boxed();
        r.headers_mut().insert(
            "content-security-policy",
            HeaderValue::from_static(
                "default-src 'none'; form-action 'self'; frame-ancestors 'none'",
            ),
        );
        r
    }
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
        let path = req.uri().path().to_string();
        if let Some(ticket) = path.strip_prefix("/oauth/start/") {
            let ticket = ticket.to_string();
            return match *req.method() {
                Method::GET => self.start(&ticket, None).await,
                Method::POST => {
                    // The start page's form: small, form-urlencoded.
                    let body = http_body_util::Limited::new(req.into_body(), MAX_FORM_BYTES);
                    match body.collect().await {
                        Ok(b) => self.start(&ticket, Some(parse_form(&b.to_bytes()))).await,
                        Err(_) => page(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "Sign-in failed",
                            "The form was too large.",
                        ),
                    }
                }
                _ => not_allowed(),
            };
        }
        if req.method() != Method::GET {
            return not_allowed();
        }
        if path == "/oauth/callback" {
            return self.callback(req.uri().query()).await;
        }
        page(StatusCode::NOT_FOUND, "Not found", "There is nothing here.")
    }

    /// The start page: shows the form when the profile asks the user for anything (a tenant, user
    /// fields); with the form's answers (`answers`), checks them and goes on to the IdP.
    async fn start(
        &self,
        ticket_id: &str,
        answers: Option<Vec<(String, String)>>,
    ) -> Response<Body> {
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
        let config_profile = self.snapshot.config.profile(&ticket.profile);
        let user_fields: &[UserField] = config_profile.map_or(&[], |p| p.user_fields.as_slice());
        let ask_tenant = o.tenancy && ticket.tenant.is_none();
        let form = Form {
            title: profile_title(config_profile.and_then(|p| p.identity_provider.as_deref())),
            ask_tenant,
            fields: user_fields,
        };
        let (chosen_tenant, entered) = if ask_tenant || !user_fields.is_empty() {
            let Some(answers) = answers else {
                return form.render(StatusCode::OK, &[], None);
            };
            match form.check(&answers) {
                Ok(v) => v,
                Err(msg) => return form.render(StatusCode::BAD_REQUEST, &answers, Some(&msg)),
            }
        } else {
            (None, Vec::new())
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
            chosen_tenant,
            entered,
            verifier,
        };
        let mut url = match flow.idp_tenant() {
            Some(t) => code.authorization_url.replace("{tenant}", t),
            None => code.authorization_url.clone(),
        };
        if !code.authorization_context.is_empty() {
            // `{{context.<name>}}` from the ticket, percent-encoded (checked at load: nothing else).
            let encoded: Vec<(&str, String)> = ticket
                .context
                .iter()
                .map(|(k, v)| (k.as_str(), encode(v).to_string()))
                .collect();
            let rendered = Template::parse(&url).ok().and_then(|t| {
                t.render(|var| match var {
                    Var::Context(n) => encoded
                        .iter()
                        .find(|(k, _)| k == n)
                        .map(|(_, v)| v.as_str()),
                    _ => None,
                })
                .ok()
            });
            match rendered {
                Some(u) => url = u,
                None => {
                    return page(
                        StatusCode::BAD_REQUEST,
                        "This link is no longer valid",
                        "Ask for a new sign-in link.",
                    )
                }
            }
        }
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
        // After a form POST, 303 makes the browser GET the IdP.
        let status = if form.is_empty() {
            StatusCode::FOUND
        } else {
            StatusCode::SEE_OTHER
        };
        let mut r = page(status, "Signing in", "Continue at your identity provider.");
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
                flow.idp_tenant(),
                TokenRequest::Code {
                    code: &code,
                    verifier: flow.verifier.as_deref(),
                    redirect_uri: &redirect,
                },
            )
            .await;
        let fetched = match result {
            Ok(r) => crate::token::Fetched {
                entered: flow.entered(),
                ..to_fetched(r)
            },
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
                if let Grant::AuthorizationCode(c) = &o.source.settings().grant {
                    if let Some(url) = &c.on_authorized {
                        notify(o.source.clone(), url.clone(), &flow);
                    }
                }
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

/// `on_authorized`: POSTs `{"profile", "user", "tenant"}` so a bot can resume the conversation. In
/// the background, once, bounded by the profile's IdP timeout; failures are logged (status only).
fn notify(source: Arc<crate::oauth::OAuthSource>, url: String, flow: &Flow) {
    let body = serde_json::json!({
        "profile": flow.profile,
        "user": flow.user,
        "tenant": flow.idp_tenant(),
    })
    .to_string();
    let profile = flow.profile.clone();
    tokio::spawn(async move {
        let req = http::Request::post(url.as_str())
            .header(CONTENT_TYPE, "application/json")
            .body(body.into_bytes());
        let Ok(req) = req else {
            tracing::warn!(profile = %profile, "on_authorized: invalid URL");
            return;
        };
        use oauth2::AsyncHttpClient;
        match source.http.call(req).await {
            Ok(r) if r.status().is_success() => {
                tracing::debug!(profile = %profile, "on_authorized notified")
            }
            Ok(r) => {
                tracing::warn!(profile = %profile, status = r.status().as_u16(), "on_authorized answered with an error status")
            }
            Err(e) => tracing::warn!(profile = %profile, "on_authorized failed: {e}"),
        }
    });
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
