//! The auth listener: the only one end users' browsers reach.
//!
//! Routes:
//! - `GET /oauth/start/{ticket}`: from an `authorization_required` link. Starts an authorization:
//!   a new `state` (256 random bits, single use, expiring, bound to the ticket) and a PKCE S256 pair,
//!   kept server-side; then a redirect to the profile's authorization URL. A link has one live
//!   state: a new start deletes the previous one (two logins in flight for one user need two
//!   links). `POST` (the start page's form) checks the link before reading the form, reads it whole
//!   within `body_read_timeout`, and counts password grants per link and per profile and user.
//! - `GET /oauth/callback`: the "Bots Callback Link" registered at the IdP. Consumes the `state`
//!   (unknown, used or expired → 400 page, no token request), shows the IdP's `error` (escaped),
//!   checks `iss` when the profile names an `issuer` (RFC 9207), redeems the code with the verifier,
//!   checks the `id_token` when the sign-in sent an OpenID Connect `nonce` to a provider whose
//!   issuer is known (`crate::oauth::id_token`; a bad one is a 400 `id_token_invalid` page and no
//!   grant), stores the user's grant, and shows a success page. It never redirects anywhere.
//! - Three-legged OAuth 1.0a (`oauth1` with `per_user`, RFC 5849 §2): the start fetches a request
//!   token (`oauth_callback` = the callback link) and keeps its secret server-side with the flow,
//!   under the request token (single use, expiring like `state`), then redirects to the
//!   provider's authorization page. The callback (`oauth_token`, `oauth_verifier`; no `state`)
//!   takes the flow by its request token (unknown, used or expired → the same 400 page, no request
//!   to the provider) and exchanges it for the user's token and secret, stored as their grant.
//! - A login link made for a Test (`POST /admin/profiles/{name}/test`, `oauth::test_run`) runs the
//!   same pages; its callback exchanges the code (or request token) over a recording client and
//!   writes the report into the test, masked, instead of a grant; `on_authorized` is not called.
//!   A sign-in that ends before the exchange (declined, a bad callback) is a failed report saying
//!   why. The page says that the test finished.

mod form;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::config::{AuthSettings, ClientTls, Grant};
use crate::error::ErrorCode;
use crate::inject::encode::parse_form;
use crate::oauth::grants::{self, Flow, Ticket};
use crate::oauth::http::IdpHttp;
use crate::oauth::test_auth::{self, TestReport};
use crate::oauth::test_run;
use crate::oauth::{to_fetched, OAuthSource, Request as TokenRequest};
use crate::proxy::{Entry, Snapshot};
use crate::secret::{AccessToken, EnteredValue, PkceVerifier};
use crate::serve::{read_small_body, ConnInfo, Handler, SmallBodyError};
use crate::store::Name;
use crate::token::{Fetched, TokenErrorKind};
use form::Form;

type Body = http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub struct Auth {
    /// The current config's snapshot (swapped by a reload).
    live: Arc<arc_swap::ArcSwap<Snapshot>>,
    settings: AuthSettings,
    /// Client for `on_authorized` webhooks.
    hooks: Option<IdpHttp>,
}

/// Text for the sign-in pages: its first 500 characters, HTML-escaped.
fn escape(s: &str) -> String {
    let end = s.char_indices().nth(500).map_or(s.len(), |(i, _)| i);
    crate::http_util::html_escape(&s[..end])
}

/// An HTML page of the auth listener: a title, a line of text, the start page's form when there is
/// one, and the request id when the page refuses something.
fn page(
    status: StatusCode,
    title: &str,
    text: &str,
    form: Option<&str>,
    request_id: Option<&str>,
) -> Response<Body> {
    let text = match (text.is_empty(), request_id.is_some()) {
        (true, _) => String::new(),
        (false, true) => format!("<p role=\"alert\"><strong>{}</strong></p>", escape(text)),
        (false, false) => format!("<p>{}</p>", escape(text)),
    };
    let rid = request_id
        .map(|r| {
            format!(
                "<p><small>Request id: <code>{}</code></small></p>",
                escape(r)
            )
        })
        .unwrap_or_default();
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head><body><h1>{t}</h1>{text}{form}{rid}</body></html>",
        t = escape(title),
        form = form.unwrap_or_default(),
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
        HeaderValue::from_static(if form.is_some() {
            "default-src 'none'; form-action 'self'; frame-ancestors 'none'"
        } else {
            "default-src 'none'; frame-ancestors 'none'"
        }),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

/// A page the auth listener refuses with. Its status, `X-Authsidecar-Error`, `Cache-Control` and
/// whether the connection closes come from the one error table (`crate::error`); the page shows
/// the request id.
struct Refusal {
    code: ErrorCode,
    title: String,
    text: String,
    /// The start page's form, shown again under the message.
    form: Option<String>,
    retry_after: Option<u64>,
    /// The request's body was left unread.
    body_unread: bool,
}

impl Refusal {
    fn new(code: ErrorCode, title: impl Into<String>, text: impl Into<String>) -> Refusal {
        Refusal {
            code,
            title: title.into(),
            text: text.into(),
            form: None,
            retry_after: None,
            body_unread: false,
        }
    }

    fn page(self, request_id: &str) -> Response<Body> {
        let mut r = page(
            StatusCode::OK,
            &self.title,
            &self.text,
            self.form.as_deref(),
            Some(request_id),
        );
        crate::error::mark(&mut r, self.code, self.retry_after);
        if self.body_unread {
            r.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

/// An answer of the auth listener, or the page that refuses the request.
type Answer = Result<Response<Body>, Refusal>;

/// Largest start-page form accepted.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// Lifetime of a record of entered credentials (per-user basic and api_key): until deleted.
const ENTERED_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fn not_allowed() -> Refusal {
    Refusal::new(
        ErrorCode::MethodNotAllowed,
        "Not allowed",
        "Use the link you were given.",
    )
}

fn link_invalid() -> Refusal {
    Refusal::new(
        ErrorCode::LinkInvalid,
        "This link is no longer valid",
        "Ask for a new sign-in link.",
    )
}

/// A login link whose credential checks are used up.
fn link_spent() -> Refusal {
    Refusal::new(
        ErrorCode::LinkSpent,
        "This link is used up",
        "Too many sign-in attempts were made with this link. Ask for a new sign-in link.",
    )
}

/// The store did not answer.
fn busy() -> Refusal {
    Refusal::new(
        ErrorCode::TokenStoreUnavailable,
        "Try again",
        "The service is busy.",
    )
}

/// A sign-in the identity provider could not complete (its error code in the text).
fn idp_failed(code: ErrorCode, text: String) -> Refusal {
    Refusal::new(code, "Sign-in failed", text)
}

fn profile_title(identity_provider: Option<&str>) -> String {
    match identity_provider {
        Some(idp) => format!("Sign in with {idp}"),
        None => "Sign in".to_string(),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

impl Auth {
    pub fn new(live: Arc<arc_swap::ArcSwap<Snapshot>>, settings: AuthSettings) -> Arc<Auth> {
        // Webhooks (`on_authorized`): system roots, 10 s for the whole call, no redirects.
        let hooks = IdpHttp::new(&ClientTls::default(), None, Duration::from_secs(10))
            .map_err(|e| tracing::warn!("on_authorized client: {e}"))
            .ok();
        Arc::new(Auth {
            live,
            settings,
            hooks,
        })
    }

    /// The snapshot of the config in force now.
    fn snap(&self) -> Arc<Snapshot> {
        self.live.load_full()
    }

    pub fn handler(self: &Arc<Self>, _conn: ConnInfo) -> AuthHandler {
        AuthHandler(self.clone())
    }

    /// One request: its answer, or the page refusing it (with the request id).
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let request_id = crate::error::request_id(req.headers().get("x-request-id"));
        match self.route(req).await {
            Ok(r) => r,
            Err(refusal) => {
                tracing::debug!(code = %refusal.code, %request_id, "auth listener: {}", refusal.text);
                refusal.page(&request_id)
            }
        }
    }

    async fn route(&self, req: Request<Incoming>) -> Answer {
        let path = req.uri().path().to_string();
        if let Some(ticket_id) = path.strip_prefix("/oauth/start/") {
            let ticket_id = ticket_id.to_string();
            return match *req.method() {
                Method::GET => {
                    let ticket = self.ticket(&ticket_id, false).await?;
                    self.start(&ticket_id, ticket, None).await
                }
                Method::POST => {
                    // The link first: a post to an unknown, expired or spent link is answered
                    // without reading its body, and the connection closed.
                    let ticket = self.ticket(&ticket_id, true).await.map_err(unread_body)?;
                    // The start page's form: small, form-urlencoded, all of it within
                    // `body_read_timeout`. A form not read to its end closes the connection
                    // (each of these codes does).
                    let within = self.snap().config.proxy.body_read_timeout;
                    if crate::proxy::content_length(req.headers())
                        .is_some_and(|n| n > MAX_FORM_BYTES as u64)
                    {
                        return Err(form_unread(SmallBodyError::TooLarge));
                    }
                    let body = read_small_body(req.into_body(), MAX_FORM_BYTES, within)
                        .await
                        .map_err(form_unread)?;
                    self.start(&ticket_id, ticket, Some(parse_form(&body)))
                        .await
                }
                _ => Err(not_allowed()),
            };
        }
        if req.method() != Method::GET {
            return Err(not_allowed());
        }
        if path == "/oauth/callback" {
            return self.callback(req.uri().query()).await;
        }
        Err(Refusal::new(
            ErrorCode::NotFound,
            "Not found",
            "There is nothing here.",
        ))
    }

    /// The login link's ticket, unless it is unknown, expired or spent (the page to show then). A
    /// form posted (`posting`) to a spent link counts as a refused attempt.
    async fn ticket(&self, ticket_id: &str, posting: bool) -> Result<Ticket, Refusal> {
        let store = self.snap().store.clone();
        let id = ticket_id.to_string();
        let read = blocking(move || {
            let Some(t) = grants::read_ticket(&store, &id)? else {
                return Ok(None);
            };
            Ok::<_, crate::token::TokenError>(Some((t, grants::link_attempts(&store, &id)?)))
        })
        .await;
        match read {
            Some(Ok(Some((t, used)))) if used >= self.settings.max_link_attempts => {
                if posting {
                    self.snap()
                        .metrics
                        .sign_in_attempt_refused(&t.profile, "link_spent");
                    tracing::warn!(profile = %t.profile, user = %t.user, reason = "link_spent", "sign-in attempt refused: too many credential checks");
                }
                Err(link_spent())
            }
            Some(Ok(Some((t, _)))) => Ok(t),
            Some(Ok(None)) => Err(Refusal::new(
                ErrorCode::LinkInvalid,
                "This link has expired",
                "Ask for a new sign-in link and try again.",
            )),
            _ => Err(busy()),
        }
    }

    /// Counts one credential check at the IdP against the login link and against the user's
    /// window, before it is made; past either limit nothing is sent to the IdP. Returns the
    /// attempts the link has left after this one.
    async fn admit_attempt(&self, flow: &Flow) -> Result<u64, Refusal> {
        let s = &self.settings;
        let (max_link, max_user) = (s.max_link_attempts, s.max_user_attempts);
        let window = s.user_attempt_window.as_secs().max(1);
        let now = grants::now_unix();
        let start = now - now % window;
        let user_name = Name::user_attempts(&flow.profile, &flow.user, start);
        let link_name = Name::ticket_attempts(&flow.ticket);
        let link_expiry = now + s.ticket_ttl.as_secs();
        let store = self.snap().store.clone();
        let counted = blocking(move || {
            let u = store.incr(&user_name, Some(start + window))?;
            if u > max_user {
                return Ok(Err("user_limit"));
            }
            let l = store.incr(&link_name, Some(link_expiry))?;
            if l > max_link {
                return Ok(Err("link_spent"));
            }
            Ok::<_, crate::store::StoreError>(Ok(max_link - l))
        })
        .await;
        match counted {
            Some(Ok(Ok(left))) => Ok(left),
            Some(Ok(Err(reason))) => {
                self.snap()
                    .metrics
                    .sign_in_attempt_refused(&flow.profile, reason);
                tracing::warn!(profile = %flow.profile, user = %flow.user, reason, "sign-in attempt refused: too many credential checks");
                Err(if reason == "user_limit" {
                    let mut r = Refusal::new(
                        ErrorCode::TooManyAttempts,
                        "Too many sign-in attempts",
                        "There were too many sign-in attempts for this account. Try again later.",
                    );
                    r.retry_after = Some(window);
                    r
                } else {
                    link_spent()
                })
            }
            _ => Err(busy()),
        }
    }

    /// The start page. Shows the form when the profile asks the user for anything (a tenant,
    /// credentials, user fields); with the form's answers (`answers`) checks them, then goes on to
    /// the IdP (authorization code), exchanges the credentials (password) or keeps them (basic,
    /// api_key).
    async fn start(
        &self,
        ticket_id: &str,
        ticket: Ticket,
        answers: Option<Vec<(String, String)>>,
    ) -> Answer {
        let snap = self.snap();
        let Some(o) = snap
            .profiles
            .get(ticket.profile.as_str())
            .and_then(|p| p.oauth.as_ref())
            .filter(|o| o.per_user)
        else {
            return Err(link_invalid());
        };
        let config_profile = snap.config.profile(&ticket.profile);
        let form = Form {
            title: profile_title(config_profile.and_then(|p| p.identity_provider.as_deref())),
            ask_tenant: o.tenancy && ticket.tenant.is_none(),
            tenant_pattern: config_profile.and_then(|p| p.tenant_pattern.as_ref()),
            entry: o.entry,
            fields: config_profile.map_or(&[], |p| p.user_fields.as_slice()),
        };
        // The form again, with what was wrong.
        let again = |code: ErrorCode, raw: &[(String, String)], msg: String| Refusal {
            form: Some(form.html(raw)),
            ..Refusal::new(code, form.title.clone(), msg)
        };
        let checked = if form.is_empty() {
            None
        } else {
            let Some(raw) = answers else {
                return Ok(form.page());
            };
            match form.check(&raw) {
                Ok(a) => Some((a, raw)),
                Err(msg) => return Err(again(ErrorCode::FormInvalid, &raw, msg)),
            }
        };
        let flow = Flow {
            ticket: ticket_id.to_string(),
            profile: ticket.profile.clone(),
            user: ticket.user.clone(),
            tenant: ticket.tenant.clone(),
            chosen_tenant: checked.as_ref().and_then(|(a, _)| a.tenant.clone()),
            context: ticket.context.clone(),
            entered: checked
                .as_ref()
                .map(|(a, _)| {
                    a.fields
                        .iter()
                        .map(|(k, v)| (k.clone(), EnteredValue::new(v.as_str())))
                        .collect()
                })
                .unwrap_or_default(),
            verifier: None,
            request_secret: None,
            nonce: None,
            test: ticket.test.clone(),
        };
        // User fields that go into the identity provider's URLs, scope or token parameters must
        // fit where they go (a host label, a path segment): else the form again, nothing sent.
        if let (Some(source), Some((_, raw))) = (&o.source, &checked) {
            let pairs = flow.dyn_pairs();
            let dv = crate::oauth::DynValues {
                tenant: flow.idp_tenant(),
                pairs: &pairs,
            };
            for u in &source.settings().dynamic {
                if let crate::config::dynamic::DynVar::UserField(_) = &u.var {
                    if let Some(value) = dv.lookup(&u.var) {
                        if let Err(m) = crate::config::dynamic::check_value(&u.var, u.pos, value) {
                            return Err(again(ErrorCode::FormInvalid, raw, format!("{m}.")));
                        }
                    }
                }
            }
        }
        match (o.entry, &o.source, checked) {
            (Entry::Code, Some(source), _) => self.to_idp(flow, source, form.is_empty()).await,
            (Entry::OAuth1, _, _) => match &o.oauth1 {
                Some(provider) => self.to_oauth1(flow, provider, form.is_empty()).await,
                None => Err(link_invalid()),
            },
            (Entry::Password, Some(source), Some((a, raw))) => {
                let left = self.admit_attempt(&flow).await?;
                let pairs = flow.dyn_pairs();
                let dv = crate::oauth::DynValues {
                    tenant: flow.idp_tenant(),
                    pairs: &pairs,
                };
                let result = source
                    .request_with(
                        &source.http,
                        dv,
                        TokenRequest::UserPassword {
                            username: &a.username,
                            password: &a.password,
                        },
                    )
                    .await;
                match result {
                    // Only the tokens are kept, never the password.
                    Ok(r) => {
                        let fetched = Fetched {
                            entered: flow.entered(),
                            ..to_fetched(r)
                        };
                        self.finish(&flow, fetched).await
                    }
                    Err(e) if e.kind == TokenErrorKind::GrantInvalid && left == 0 => {
                        tracing::warn!(profile = %flow.profile, user = %flow.user, "login link spent: the identity provider refused its last credential check");
                        Err(link_spent())
                    }
                    Err(e) if e.kind == TokenErrorKind::GrantInvalid => Err(again(
                        ErrorCode::CredentialsRejected,
                        &raw,
                        format!(
                            "The identity provider refused this username and password ({left} {} left with this link).",
                            if left == 1 { "attempt" } else { "attempts" }
                        ),
                    )),
                    Err(e) => {
                        tracing::warn!(profile = %flow.profile, "password exchange failed: {}", e.message);
                        Err(idp_failed(
                            e.code(),
                            format!(
                                "The identity provider could not sign you in ({}).",
                                e.code()
                            ),
                        ))
                    }
                }
            }
            (Entry::Basic | Entry::ApiKey, _, Some((a, _))) => {
                let mut entered = flow.entered();
                if o.entry == Entry::Basic {
                    use crate::http_util::{basic_credentials, BasicEncoding};
                    let basic = basic_credentials(&a.username, &a.password, BasicEncoding::Plain);
                    entered.push(("username".into(), EnteredValue::new(a.username)));
                    entered.push(("password".into(), EnteredValue::new(a.password)));
                    entered.push(("basic".into(), EnteredValue::new(basic)));
                } else {
                    entered.push(("api_key".into(), EnteredValue::new(a.api_key)));
                }
                let fetched = Fetched {
                    access_token: AccessToken::new(""),
                    token_type: "Bearer".into(),
                    expires_in: Some(ENTERED_LIFETIME),
                    refresh_token: None,
                    id_token: None,
                    scope: None,
                    extra: Vec::new(),
                    refresh_token_refused: false,
                    entered,
                };
                self.finish(&flow, fetched).await
            }
            _ => Err(link_invalid()),
        }
    }

    /// Authorization code: a new `state` and PKCE pair, then the redirect to the IdP.
    async fn to_idp(&self, mut flow: Flow, source: &OAuthSource, direct: bool) -> Answer {
        let s = source.settings();
        let Grant::AuthorizationCode(code) = &s.grant else {
            return Err(link_invalid());
        };
        let challenge = if code.pkce {
            let (c, v) = oauth2::PkceCodeChallenge::new_random_sha256();
            flow.verifier = Some(PkceVerifier::new(v.secret().as_str()));
            Some(c)
        } else {
            None
        };
        let authorization_url = source.authorization_url().map_err(|e| {
            idp_failed(
                e.code(),
                format!(
                    "The identity provider cannot be reached right now ({}). Try again later.",
                    e.code()
                ),
            )
        })?;
        // `{tenant}`, `{{context.NAME}}` and `{{user_field.NAME}}`: the values this sign-in keeps
        // (its flow, then its grant), each encoded for where it goes.
        let pairs = flow.dyn_pairs();
        let tenant = flow.idp_tenant().map(str::to_string);
        let dv = crate::oauth::DynValues {
            tenant: tenant.as_deref(),
            pairs: &pairs,
        };
        let refused = |e: crate::token::TokenError| {
            Refusal::new(
                ErrorCode::FormInvalid,
                "Sign-in failed",
                format!("{}.", e.message),
            )
        };
        let url = dv.render(&authorization_url, true).map_err(refused)?;
        // OpenID Connect: a fresh nonce, kept with the state; the id_token must carry it.
        let scope = source.scope();
        if crate::oauth::id_token::wants_openid(&scope) {
            flow.nonce = Some(crate::oauth::id_token::fresh_nonce());
        }
        let scope = dv.render_pairs(&scope).map_err(refused)?;
        let (store, ttl) = (self.snap().store.clone(), self.settings.ticket_ttl);
        let nonce = flow.nonce.clone();
        let state = match blocking(move || grants::new_flow(&store, ttl, &flow)).await {
            Some(Ok(s)) => s,
            _ => return Err(busy()),
        };
        // The authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3), built by the oauth2 crate
        // on the profile's URL (its own query kept).
        let invalid = || {
            Refusal::new(
                ErrorCode::Internal,
                "Sign-in failed",
                "The authorization URL is invalid.",
            )
        };
        let auth_url = oauth2::AuthUrl::new(url).map_err(|_| invalid())?;
        let redirect =
            oauth2::RedirectUrl::new(self.settings.callback_url()).map_err(|_| invalid())?;
        let client = oauth2::basic::BasicClient::new(oauth2::ClientId::new(s.client_id.clone()))
            .set_auth_uri(auth_url)
            .set_redirect_uri(redirect);
        let mut request = client.authorize_url(|| oauth2::CsrfToken::new(state));
        if let Some(c) = challenge {
            request = request.set_pkce_challenge(c);
        }
        for (k, v) in &scope {
            request = request.add_extra_param(k.as_str(), v.as_str());
        }
        if let Some(n) = &nonce {
            request = request.add_extra_param("nonce", n.as_str());
        }
        let url = request.url().0.to_string();
        to_provider(&url, direct).ok_or_else(invalid)
    }

    /// Three-legged OAuth 1.0a (RFC 5849 §2): temporary credentials for this sign-in, with the
    /// callback link as `oauth_callback`; the flow is kept under the request token (its secret in
    /// the flow, server-side, single use, expiring like `state`); then the redirect to the
    /// provider's authorization page.
    async fn to_oauth1(
        &self,
        mut flow: Flow,
        provider: &crate::oauth::oauth1::ThreeLegged,
        direct: bool,
    ) -> Answer {
        let callback = self.settings.callback_url();
        let rt = match provider.request_token(&callback).await {
            Ok(rt) => rt,
            Err(e) => {
                tracing::warn!(profile = %flow.profile, "request token failed: {}", e.message);
                return Err(idp_failed(
                    e.code(),
                    format!(
                        "The identity provider could not start the sign-in ({}).",
                        e.code()
                    ),
                ));
            }
        };
        let invalid = || {
            Refusal::new(
                ErrorCode::Internal,
                "Sign-in failed",
                "The authorization URL is invalid.",
            )
        };
        let url = provider.authorize_url(&rt.token).map_err(|_| invalid())?;
        flow.request_secret = Some(rt.secret);
        let key = grants::request_token_key(&rt.token);
        let (store, ttl) = (self.snap().store.clone(), self.settings.ticket_ttl);
        match blocking(move || grants::new_flow_under(&store, ttl, &flow, &key)).await {
            Some(Ok(())) => {}
            _ => return Err(busy()),
        }
        to_provider(&url, direct).ok_or_else(invalid)
    }

    /// The callback of a three-legged OAuth 1.0a sign-in (RFC 5849 §2.2): the flow is taken by
    /// its request token (unknown, used or expired: the page of a bad `state`, and no request to
    /// the provider); the request token and `oauth_verifier` are exchanged for the user's token
    /// credentials, which are stored as their grant.
    async fn oauth1_callback(&self, params: &[(String, String)]) -> Answer {
        let get = |k: &str| crate::inject::encode::form_value(params, k);
        // A provider that lets the user decline names the token in `denied` (Twitter's habit).
        let denied = get("denied");
        let Some(token) = get("oauth_token").or_else(|| denied.clone()) else {
            return Err(callback_invalid(
                "The answer from the identity provider has no oauth_token.",
            ));
        };
        let store = self.snap().store.clone();
        let key = grants::request_token_key(&token);
        let flow = match blocking(move || grants::take_flow(&store, &key)).await {
            Some(Ok(Some(f))) => f,
            Some(Ok(None)) => return Err(flow_unknown()),
            _ => return Err(busy()),
        };
        let answer = self
            .oauth1_exchange(&flow, &token, denied.is_some(), params)
            .await;
        match (&flow.test, answer) {
            // As for an authorization code: a test's sign-in that ended before the exchange.
            (Some(test), Err(refusal)) => {
                let report = self.refused_report(&flow, &refusal);
                self.finish_test(&flow, test, report).await
            }
            (_, answer) => answer,
        }
    }

    /// The rest of a three-legged callback whose flow was taken: declined, or the exchange of the
    /// request token; then the user's grant, or a test's report.
    async fn oauth1_exchange(
        &self,
        flow: &Flow,
        token: &str,
        denied: bool,
        params: &[(String, String)],
    ) -> Answer {
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        if denied {
            return Err(Refusal::new(
                ErrorCode::AuthorizationDenied,
                "Sign-in was not completed",
                "The identity provider says the authorization was declined.",
            ));
        }
        let snap = self.snap();
        let (Some(provider), Some(secret)) = (
            snap.profiles
                .get(flow.profile.as_str())
                .and_then(|p| p.oauth.as_ref())
                .filter(|o| o.entry == Entry::OAuth1)
                .and_then(|o| o.oauth1.as_ref()),
            flow.request_secret.as_ref(),
        ) else {
            return Err(Refusal::new(
                ErrorCode::LinkInvalid,
                "Sign-in failed",
                "This sign-in is no longer valid.",
            ));
        };
        let Some(verifier) = get("oauth_verifier") else {
            return Err(callback_invalid(
                "The answer from the identity provider has no oauth_verifier.",
            ));
        };
        if let Some(test) = &flow.test {
            let report =
                test_auth::run_oauth1(provider, &flow.profile, token, secret, &verifier).await;
            return self.finish_test(flow, test, report).await;
        }
        let mut fetched = match provider.access_token(token, secret, &verifier).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(profile = %flow.profile, "access token request failed: {}", e.message);
                return Err(idp_failed(
                    e.code(),
                    format!("The identity provider refused the sign-in ({}).", e.code()),
                ));
            }
        };
        fetched.entered.extend(flow.entered());
        self.finish(flow, fetched).await
    }

    async fn callback(&self, query: Option<&str>) -> Answer {
        let params = parse_form(query.unwrap_or("").as_bytes());
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        // OAuth 1.0a answers carry `oauth_token` (or `denied`) instead of `state`.
        if get("state").is_none() && (get("oauth_token").is_some() || get("denied").is_some()) {
            return self.oauth1_callback(&params).await;
        }
        let Some(state) = get("state").filter(|s| !s.is_empty()) else {
            return Err(callback_invalid(
                "The answer from the identity provider has no state.",
            ));
        };
        let store = self.snap().store.clone();
        let flow = match blocking(move || grants::take_flow(&store, &state)).await {
            Some(Ok(Some(f))) => f,
            Some(Ok(None)) => return Err(flow_unknown()),
            _ => return Err(busy()),
        };
        let answer = self.code_callback(&flow, &params).await;
        match (&flow.test, answer) {
            // A test's sign-in that ended before the code exchange: the report says why. (When
            // writing a test's report was refused itself, the test is expired or already written:
            // this finds it so and gives the same page; or the store failed, and this tries once
            // more, reporting that.)
            (Some(test), Err(refusal)) => {
                let report = self.refused_report(&flow, &refusal);
                self.finish_test(&flow, test, report).await
            }
            (_, answer) => answer,
        }
    }

    /// The report of a test whose sign-in ended before the token request, with the reason.
    fn refused_report(&self, flow: &Flow, refusal: &Refusal) -> TestReport {
        let snap = self.snap();
        let o = snap
            .profiles
            .get(flow.profile.as_str())
            .and_then(|p| p.oauth.as_ref());
        let mut report = TestReport::refused(
            &flow.profile,
            o.and_then(|o| o.source.as_deref()),
            flow.idp_tenant(),
            refusal.code,
            &refusal.text,
        );
        if let Some(provider) = o.and_then(|o| o.oauth1.as_ref()) {
            report.kind = "oauth1".to_string();
            report.token_url = provider.access_token_url().map(str::to_string);
        }
        report
    }

    /// The callback of an authorization-code sign-in whose `flow` was taken: the IdP's error, the
    /// issuer, the code exchange; then the user's grant, or a test's report.
    async fn code_callback(&self, flow: &Flow, params: &[(String, String)]) -> Answer {
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if let Some(err) = get("error") {
            let desc = get("error_description").unwrap_or_default();
            return Err(Refusal::new(
                ErrorCode::AuthorizationDenied,
                "Sign-in was not completed",
                format!("{err}: {desc}"),
            ));
        }
        let snap = self.snap();
        let Some(source) = snap
            .profiles
            .get(flow.profile.as_str())
            .and_then(|p| p.oauth.as_ref())
            .filter(|o| o.entry == Entry::Code)
            .and_then(|o| o.source.as_ref())
        else {
            return Err(Refusal::new(
                ErrorCode::LinkInvalid,
                "Sign-in failed",
                "This sign-in is no longer valid.",
            ));
        };
        if let Grant::AuthorizationCode(_) = &source.settings().grant {
            // RFC 9207: required when the profile names its issuer, except when the issuer's
            // discovery document says it does not send one (then checked when present).
            let s = source.settings();
            let optional = s.discover
                && matches!(source.discovered(), Ok(Some(m)) if !m.iss_parameter_supported);
            if let Some(expected) = &s.issuer {
                match get("iss") {
                    None if optional => {}
                    Some(iss) if &iss == expected => {}
                    Some(_) => {
                        return Err(callback_invalid(
                            "The answer came from another identity provider (issuer mismatch).",
                        ))
                    }
                    None => {
                        return Err(callback_invalid(
                            "The answer does not name its identity provider (issuer missing).",
                        ))
                    }
                }
            }
        }
        let Some(code) = get("code").filter(|c| !c.is_empty()) else {
            return Err(callback_invalid(
                "The answer from the identity provider has no code.",
            ));
        };
        let redirect = self.settings.callback_url();
        let exchange = TokenRequest::Code {
            code: &code,
            verifier: flow.verifier.as_ref(),
            redirect_uri: &redirect,
        };
        let pairs = flow.dyn_pairs();
        let dv = crate::oauth::DynValues {
            tenant: flow.idp_tenant(),
            pairs: &pairs,
        };
        if let Some(test) = &flow.test {
            // A test: the exchange over a recording client, reported; its tokens are dropped.
            let (report, _) = test_auth::run_request(source, dv, exchange).await;
            return self.finish_test(flow, test, report).await;
        }
        let result = source.request_with(&source.http, dv, exchange).await;
        let fetched = match result {
            Ok(r) => Fetched {
                entered: flow.entered(),
                ..to_fetched(r)
            },
            Err(e) => {
                tracing::warn!(profile = %flow.profile, "code exchange failed: {}", e.message);
                return Err(idp_failed(
                    e.code(),
                    format!("The identity provider refused the sign-in ({}).", e.code()),
                ));
            }
        };
        let fetched = self.check_id_token(flow, source, fetched).await?;
        self.finish(flow, fetched).await
    }

    /// The end of a test's sign-in (`POST /admin/profiles/{name}/test`): the report goes to the
    /// test's record and the login link is used up; no grant is stored and `on_authorized` is not
    /// told. The page says the test finished and can be closed.
    async fn finish_test(&self, flow: &Flow, test: &str, report: TestReport) -> Answer {
        let ok = report.ok;
        let failure = report.error.as_ref().map(|e| e.code.clone());
        tracing::info!(profile = %flow.profile, ok, "test sign-in finished");
        let store = self.snap().store.clone();
        let (test, ticket) = (test.to_string(), flow.ticket.clone());
        let saved = blocking(move || {
            let written = test_run::finish(&store, &test, report)?;
            let _ = grants::remove_ticket(&store, &ticket);
            Ok::<bool, crate::token::TokenError>(written)
        })
        .await;
        match saved {
            Some(Ok(true)) => Ok(page(
                StatusCode::OK,
                "Test finished",
                &match (ok, failure) {
                    (true, _) => "The sign-in test succeeded. You can close this window; the result is shown where the test was started.".to_string(),
                    (false, code) => format!(
                        "The sign-in test failed ({}). You can close this window; the result is shown where the test was started.",
                        code.as_deref().unwrap_or("no token")
                    ),
                },
                None,
                None,
            )),
            Some(Ok(false)) => Err(Refusal::new(
                ErrorCode::LinkInvalid,
                "This test has expired",
                "Start the test again.",
            )),
            _ => Err(busy()),
        }
    }

    /// OpenID Connect: a sign-in that sent a `nonce` to a provider whose issuer is known must
    /// bring back a valid `id_token` (see `crate::oauth::id_token`); its claims are kept with the
    /// grant (`{{id_claims.<name>}}`). A bad one is a 400 page, and no grant is stored.
    async fn check_id_token(
        &self,
        flow: &Flow,
        source: &OAuthSource,
        mut fetched: Fetched,
    ) -> Result<Fetched, Refusal> {
        use crate::oauth::id_token;
        let (Some(nonce), Some(d), Grant::AuthorizationCode(_)) =
            (&flow.nonce, &source.discovery, &source.settings().grant)
        else {
            return Ok(fetched);
        };
        let Some(issuer) = &source.settings().issuer else {
            return Ok(fetched);
        };
        let refuse = |why: String| {
            tracing::warn!(profile = %flow.profile, "id_token refused: {why}");
            Refusal::new(
                ErrorCode::IdTokenInvalid,
                "Sign-in failed",
                "The identity provider's answer could not be verified (id_token).",
            )
        };
        let Some(token) = fetched.id_token.as_ref().map(|t| t.expose().to_string()) else {
            return Err(refuse("the token response has no id_token".into()));
        };
        let (alg, kid) = id_token::header_of(&token).map_err(&refuse)?;
        let keys = if alg == "HS256" || alg == "none" || alg.is_empty() {
            None
        } else {
            Some(d.keys(kid.as_deref()).await.map_err(&refuse)?)
        };
        let s = source.settings();
        let want = id_token::Expected {
            issuer,
            client_id: &s.client_id,
            nonce,
            client_secret: s.client_secret.as_ref().map(|x| x.expose().as_bytes()),
            now: crate::sign::unix_now(),
        };
        let claims = id_token::validate(&token, keys.as_ref(), &want).map_err(&refuse)?;
        fetched.entered.extend(
            id_token::kept_claims(&claims)
                .into_iter()
                .map(|(k, v)| (k, EnteredValue::new(v))),
        );
        Ok(fetched)
    }

    /// Stores the user's grant, uses up the login link, tells `on_authorized`, shows success.
    async fn finish(&self, flow: &Flow, fetched: Fetched) -> Answer {
        let name = Name::grant(&flow.profile, flow.tenant.as_deref(), &flow.user);
        let store = self.snap().store.clone();
        let ticket = flow.ticket.clone();
        let saved = blocking(move || {
            grants::save_grant(&store, &name, &fetched)?;
            let _ = grants::remove_ticket(&store, &ticket);
            Ok::<(), crate::token::TokenError>(())
        })
        .await;
        match saved {
            Some(Ok(())) => {
                tracing::info!(profile = %flow.profile, "end user authorized");
                let hook = self
                    .snap()
                    .config
                    .profile(&flow.profile)
                    .and_then(|p| p.on_authorized.clone());
                if let (Some(url), Some(http)) = (hook, &self.hooks) {
                    notify(http.clone(), url, flow);
                }
                Ok(page(
                    StatusCode::OK,
                    "You are signed in",
                    "You can close this page and return to the conversation.",
                    None,
                    None,
                ))
            }
            _ => Err(Refusal::new(
                ErrorCode::TokenStoreUnavailable,
                "Try again",
                "Your sign-in could not be saved.",
            )),
        }
    }
}

/// A callback whose sign-in (`state`, or an OAuth 1.0a request token) is unknown, used or expired.
fn flow_unknown() -> Refusal {
    Refusal::new(
        ErrorCode::LinkInvalid,
        "Sign-in failed",
        "This sign-in is unknown, was already used, or has expired. Ask for a new sign-in link.",
    )
}

/// The redirect to the identity provider's page (after a form POST, 303 makes the browser GET
/// it); `None` when the URL is not a valid header value.
fn to_provider(url: &str, direct: bool) -> Option<Response<Body>> {
    let status = if direct {
        StatusCode::FOUND
    } else {
        StatusCode::SEE_OTHER
    };
    let location = HeaderValue::from_str(url).ok()?;
    let mut r = page(
        status,
        "Signing in",
        "Continue at your identity provider.",
        None,
        None,
    );
    r.headers_mut().insert(LOCATION, location);
    Some(r)
}

/// The callback's answer from the IdP cannot be used.
fn callback_invalid(text: &str) -> Refusal {
    Refusal::new(ErrorCode::CallbackInvalid, "Sign-in failed", text)
}

/// A post to the start page answered without reading its form: the connection closes after the
/// answer, whatever its code (what follows on it could be the rest of the form).
fn unread_body(r: Refusal) -> Refusal {
    Refusal {
        body_unread: true,
        ..r
    }
}

/// A start-page form that could not be read whole.
fn form_unread(e: SmallBodyError) -> Refusal {
    let text = match e {
        SmallBodyError::TooLarge => "The form was too large.",
        SmallBodyError::Timeout => "The form did not arrive in time. Open the link again.",
        SmallBodyError::Incomplete | SmallBodyError::Read => "The form could not be read.",
    };
    Refusal::new(e.code(), "Sign-in failed", text)
}

/// `on_authorized`: POSTs `{"profile", "user", "tenant"}` so a bot can resume the conversation. In
/// the background, once, within 10 s; failures are logged (status only).
fn notify(http: IdpHttp, url: String, flow: &Flow) {
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
        match http.call(req).await {
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
