//! The admin listener (loopback by default).
//!
//! Routes:
//! - `GET /healthz`: 200 while the process runs.
//! - `GET /readyz`: 200 once every listener is bound and every discovery document is read; 503
//!   before, naming the profiles whose document is missing.
//! - `GET /admin/profiles`: every profile, secrets redacted (bearer token).
//! - `GET /admin/profiles/{name}`: one profile (bearer token).
//! - `POST /admin/profiles/{name}/test[?tenant=T&store=true]`: run the profile's token request and
//!   report status, headers and body with every token and secret masked (bearer token). The cached
//!   token is replaced only with `store=true`. A signing profile (`aws_sigv4`, `hmac`, `oauth1`)
//!   sends one signed `GET` through the proxy's pipeline instead, to its first route's upstream or
//!   to the `url` of a JSON body `{"url": "…"}` (or `?url=`), and reports the signed request's
//!   headers and the upstream's answer, masked. An `oauth2_authorization_code` (or three-legged
//!   `oauth1`) profile's Test is a sign-in: 202 `{"test_id", "login_url", "expires_in"}`; the
//!   operator signs in through `login_url` (the auth listener's start page and callback), and the
//!   callback writes the report instead of a grant (`oauth::test_run`). `?tenant=` and
//!   `?context.NAME=` fill the login link as `X-Authsidecar-Tenant` and
//!   `X-Authsidecar-Context-NAME` would.
//! - `GET /admin/profiles/{name}/test/{test_id}`: that Test's `state` (`waiting`, `succeeded`,
//!   `failed`) and, once finished, its `report` (bearer token); unknown or expired → 404
//!   `test_not_found`.
//! - `GET /admin/grants`, `PUT /admin/grants/{profile}`, `POST /admin/grants:import`: end users'
//!   grants listed page by page (metadata only) and imported, one or many (`grants`); each
//!   import, and each deleted grant (`DELETE /admin/tokens/{profile}?user=` or
//!   `DELETE /admin/grants/{profile}?user=`), is a grant event for the profile's webhooks.
//! - `GET /admin/webhooks/deliveries`: the pending and failed webhook deliveries, without their
//!   bodies (`crate::webhooks`).
//! - `/admin/profile-form[/…]`: the profile form (`profile_form.rs`).
//!
//! `/admin/*` needs `Authorization: Bearer <admin.token>`, compared in constant time. Without a
//! configured token those routes answer 403: there is no unauthenticated admin API.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::config::{Profile, ProfileKind};
use crate::error::{ErrorCode, ProxyError};
use crate::proxy::{Entry, Snapshot};
use crate::secret::SecretText;
use crate::serve::{ConnInfo, Handler};
use crate::token::TokenCache;

pub mod client;
mod console;
mod grants;
mod profile_form;
mod router;

use router::{Access, Endpoint};

type Body = http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// An endpoint's answer, or the error to answer with.
type Answer = Result<Response<Body>, ProxyError>;

pub struct Admin {
    /// The current config's snapshot (swapped by a reload).
    live: Arc<arc_swap::ArcSwap<Snapshot>>,
    /// Re-reads the config (`POST /admin/reload`, the profile form).
    reloader: Option<Arc<crate::reload::Reloader>>,
    cache: Arc<TokenCache>,
    ready: Arc<AtomicBool>,
    /// Signed-in console sessions.
    sessions: console::Sessions,
    /// Sign-in Tests (authorization-code and three-legged oauth1 profiles) started here and not
    /// yet expired: (id, expiry).
    tests: Mutex<VecDeque<(String, Instant)>>,
}

/// Sign-in Tests one process keeps at once (each is a record in the store
/// until it expires, with a report of up to 64 KiB of body): more are refused with 429
/// `too_many_tests` until the oldest expires.
pub const MAX_PENDING_TESTS: usize = 32;

impl Admin {
    pub fn new(
        live: Arc<arc_swap::ArcSwap<Snapshot>>,
        cache: Arc<TokenCache>,
        ready: Arc<AtomicBool>,
        reloader: Option<Arc<crate::reload::Reloader>>,
    ) -> Arc<Admin> {
        Arc::new(Admin {
            live,
            reloader,
            cache,
            ready,
            sessions: console::Sessions::default(),
            tests: Mutex::default(),
        })
    }

    /// The snapshot of the config in force now.
    fn snap(&self) -> Arc<Snapshot> {
        self.live.load_full()
    }

    /// `POST /admin/profiles/{name}/test`.
    async fn test(&self, name: &str, req: Request<Incoming>) -> Answer {
        let snap = self.snap();
        let Some(p) = snap.profiles.get(name) else {
            return Err(not_found_profile());
        };
        // Authorization code and three-legged OAuth 1.0a: the Test is a sign-in.
        if p.oauth
            .as_ref()
            .is_some_and(|o| matches!(o.entry, Entry::Code | Entry::OAuth1))
        {
            return self.start_sign_in_test(name, req.uri().query()).await;
        }
        if p.sign.is_some() {
            return self.test_signing(name, req).await;
        }
        let query = req.uri().query();
        let Some((o, source)) = p
            .oauth
            .as_ref()
            .filter(|o| !o.per_user)
            .and_then(|o| o.source.as_ref().map(|s| (o, s)))
        else {
            return Err(ProxyError::new(
                ErrorCode::NotTestable,
                "this profile type makes no token request",
            ));
        };
        let params = crate::inject::encode::parse_form(query.unwrap_or("").as_bytes());
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let tenant = match get("tenant") {
            None | Some("") => None,
            Some(t) => Some(crate::proxy::tenant_for(
                t.as_bytes(),
                p.tenant_pattern.as_ref(),
            )?),
        };
        if tenant.is_none() && source.settings().token_url_has_tenant {
            return Err(ProxyError::new(
                ErrorCode::TenantInvalid,
                "the token URL uses {tenant}: add ?tenant=NAME",
            ));
        }
        let store = get("store") == Some("true");
        let (mut report, fetched) = crate::oauth::test_auth::run(source, tenant.as_deref()).await;
        tracing::info!(profile = %name, ok = report.ok, store, "admin: test authorization");
        if let (true, Some(f)) = (store, fetched) {
            let key = o.key(p.plan.profile(), tenant.as_deref(), None);
            let refresh = f.refresh_token.clone();
            self.cache.insert(
                &key,
                o.policy().token(f, tokio::time::Instant::now()),
                refresh,
            );
            report.stored = true;
        }
        Ok(json_response(
            StatusCode::OK,
            serde_json::to_value(&report).unwrap_or_default(),
        ))
    }

    /// `POST /admin/profiles/{name}/login-links` `{"user", "tenant", "context": {…}}`: a login link
    /// for that end user, made as the proxy makes one for `authorization_required`, so a bot can
    /// ask a user to sign in before the first call. The user and tenant follow the proxy's rules.
    async fn login_link(&self, name: &str, req: Request<Incoming>) -> Answer {
        let snap = self.snap();
        let profile: Arc<str> = Arc::from(name);
        let (Some(p), Some(rt)) = (snap.config.profile(name), snap.profiles.get(name)) else {
            return Err(not_found_profile());
        };
        if !p.per_user {
            return Err(ProxyError::new(
                ErrorCode::NotPerUser,
                "this profile's credentials do not belong to end users: it has no login links",
            )
            .with_profile(&profile));
        }
        let within = snap.config.proxy.body_read_timeout;
        let body = crate::serve::read_small_body(req.into_body(), 16 * 1024, within)
            .await
            .map_err(|e| ProxyError::new(e.code(), "the request body could not be read"))?;
        let bad =
            |m: &str| ProxyError::new(ErrorCode::BadRequest, m.to_string()).with_profile(&profile);
        let v: Value = serde_json::from_slice(&body).map_err(|_| {
            bad("expected a JSON body {\"user\": \"…\", \"tenant\": \"…\", \"context\": {…}}")
        })?;
        let user = match v.get("user") {
            Some(Value::String(u)) => {
                crate::proxy::headers::user_str(u).map_err(|e| e.with_profile(&profile))?
            }
            None | Some(Value::Null) => {
                return Err(ProxyError::new(
                    ErrorCode::UserRequired,
                    "\"user\" is required: a login link is for one end user",
                )
                .with_profile(&profile))
            }
            Some(_) => return Err(bad("\"user\" must be a string")),
        };
        let tenant = match v.get("tenant") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => Some(
                crate::proxy::headers::tenant_for(t.as_bytes(), rt.tenant_pattern.as_ref())
                    .map_err(|e| e.with_profile(&profile))?,
            ),
            Some(_) => return Err(bad("\"tenant\" must be a string")),
        };
        let mut context = Vec::new();
        match v.get("context") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let Value::String(s) = v else {
                        return Err(bad("\"context\" values must be strings"));
                    };
                    let s = crate::proxy::headers::context_str(k, s)
                        .map_err(|e| e.with_profile(&profile))?;
                    context.push((k.clone(), s));
                }
            }
            Some(_) => return Err(bad("\"context\" must be an object of strings")),
        }
        let (login_url, expires_in) =
            crate::proxy::login_link(&snap, &profile, user.clone(), tenant.clone(), &context)
                .await?;
        tracing::info!(profile = %name, "admin: login link made");
        Ok(json_response(
            StatusCode::CREATED,
            json!({
                "profile": name,
                "user": user,
                "tenant": tenant,
                "login_url": login_url,
                "expires_in": expires_in,
            }),
        ))
    }

    /// `POST /admin/profiles/{name}/test` for an authorization-code profile: a test record and its
    /// login link (`oauth::test_run`), answered 202 with the link for the operator to sign in.
    async fn start_sign_in_test(&self, name: &str, query: Option<&str>) -> Answer {
        let snap = self.snap();
        let (Some(auth), Some(o)) = (
            &snap.config.auth,
            snap.profiles.get(name).and_then(|p| p.oauth.as_ref()),
        ) else {
            return Err(ProxyError::new(
                ErrorCode::NotTestable,
                "a sign-in test needs the [auth] listener",
            ));
        };
        let params = crate::inject::encode::parse_form(query.unwrap_or("").as_bytes());
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .filter(|v| !v.is_empty())
        };
        // As `X-Authsidecar-Tenant` would: only profiles with tenancy keep it; without one, the
        // start page asks.
        let tenant = match get("tenant") {
            Some(t) if o.tenancy => Some(crate::proxy::validate_tenant(t.as_bytes())?),
            _ => None,
        };
        let mut context = Vec::new();
        if let Some(crate::config::Grant::AuthorizationCode(c)) =
            o.source.as_ref().map(|s| &s.settings().grant)
        {
            for n in &c.authorization_context {
                match get(&format!("context.{n}")) {
                    Some(v) => context.push((n.clone(), v.to_string())),
                    None => {
                        return Err(ProxyError::new(
                            ErrorCode::ContextValueInvalid,
                            format!("the profile's identity-provider requests use {{{{context.{n}}}}}: add ?context.{n}=VALUE"),
                        ))
                    }
                }
            }
        }
        let ttl = auth.ticket_ttl;
        // A place among the pending tests, before anything is written.
        {
            let mut tests = self.tests.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            tests.retain(|(_, expires)| *expires > now);
            if tests.len() >= MAX_PENDING_TESTS {
                let wait = tests.front().map_or(1, |(_, e)| {
                    e.saturating_duration_since(now).as_secs().max(1)
                });
                let mut e = ProxyError::new(
                    ErrorCode::TooManyTests,
                    format!(
                        "{MAX_PENDING_TESTS} sign-in tests are pending; try again when one expires"
                    ),
                );
                e.retry_after = Some(wait);
                return Err(e);
            }
            tests.push_back((String::new(), now + ttl));
        }
        let ticket = crate::oauth::grants::Ticket {
            profile: name.to_string(),
            user: String::new(),
            tenant,
            context,
            test: None,
        };
        let store = snap.store.clone();
        let started =
            tokio::task::spawn_blocking(move || crate::oauth::test_run::start(&store, ttl, ticket))
                .await;
        let mut tests = self.tests.lock().unwrap_or_else(|p| p.into_inner());
        // The place taken above: named, or given back.
        let slot = tests.iter().position(|(id, _)| id.is_empty());
        match started {
            Ok(Ok((id, ticket_id))) => {
                if let Some(i) = slot {
                    tests[i].0 = id.clone();
                }
                drop(tests);
                tracing::info!(profile = %name, "admin: sign-in test started");
                let mut r = json_response(
                    StatusCode::ACCEPTED,
                    json!({
                        "profile": name,
                        "test_id": id,
                        "login_url": format!("{}/oauth/start/{ticket_id}", auth.public_url),
                        "expires_in": ttl.as_secs(),
                    }),
                );
                if let Ok(v) = HeaderValue::from_str(&format!("/admin/profiles/{name}/test/{id}")) {
                    r.headers_mut().insert(http::header::LOCATION, v);
                }
                Ok(r)
            }
            _ => {
                if let Some(i) = slot {
                    tests.remove(i);
                }
                let mut e = ProxyError::new(
                    ErrorCode::TokenStoreUnavailable,
                    "the token store is unavailable; try again",
                );
                e.retry_after = Some(1);
                Err(e)
            }
        }
    }

    /// `GET /admin/profiles/{name}/test/{test_id}`: the test's state and, once finished, its
    /// report.
    async fn sign_in_test(&self, name: &str, id: &str) -> Answer {
        let store = self.snap().store.clone();
        let id_owned = id.to_string();
        let read =
            tokio::task::spawn_blocking(move || crate::oauth::test_run::read(&store, &id_owned))
                .await;
        let run = match read {
            Ok(Ok(run)) => run,
            _ => {
                let mut e = ProxyError::new(
                    ErrorCode::TokenStoreUnavailable,
                    "the token store is unavailable; try again",
                );
                e.retry_after = Some(1);
                return Err(e);
            }
        };
        let Some(run) = run.filter(|r| r.profile == name) else {
            return Err(ProxyError::new(
                ErrorCode::TestNotFound,
                "no test with that id for this profile: unknown, or expired (a test lasts auth.ticket_ttl)",
            ));
        };
        Ok(json_response(
            StatusCode::OK,
            json!({
                "profile": name,
                "test_id": id,
                "state": run.state.as_str(),
                "expires_in": run.expires_in(),
                "report": run.report,
            }),
        ))
    }

    /// `POST /admin/profiles/{name}/test` for a signing profile: one signed `GET` through the
    /// proxy's pipeline, to `url` (a JSON body `{"url": "…"}` or `?url=`) or the profile's first
    /// route's upstream.
    async fn test_signing(&self, name: &str, req: Request<Incoming>) -> Answer {
        let params = crate::inject::encode::parse_form(req.uri().query().unwrap_or("").as_bytes());
        let get = |k: &str| crate::inject::encode::form_value(&params, k);
        let (tenant, mut url) = (get("tenant"), get("url"));
        let within = self.snap().config.proxy.body_read_timeout;
        let body = crate::serve::read_small_body(req.into_body(), 8192, within)
            .await
            .map_err(|e| ProxyError::new(e.code(), "the request body could not be read"))?;
        if !body.iter().all(u8::is_ascii_whitespace) {
            let v: Value = serde_json::from_slice(&body).map_err(|_| {
                ProxyError::new(
                    ErrorCode::BadRequest,
                    "expected a JSON body {\"url\": \"http…\"} or none",
                )
            })?;
            match v.get("url") {
                None | Some(Value::Null) => {}
                Some(Value::String(u)) => url = Some(u.clone()),
                Some(_) => {
                    return Err(ProxyError::new(
                        ErrorCode::BadRequest,
                        "url: expected a string",
                    ))
                }
            }
        }
        let proxy = crate::proxy::Proxy::new(self.snap(), self.cache.clone(), Default::default());
        let report = proxy
            .probe(name, url.as_deref(), tenant.as_deref())
            .await
            .map_err(|e| e.with_profile(&Arc::from(name)))?;
        tracing::info!(profile = %name, ok = report.ok, "admin: test signed request");
        Ok(json_response(
            StatusCode::OK,
            serde_json::to_value(&report).unwrap_or_default(),
        ))
    }

    pub fn handler(self: &Arc<Self>, _conn: ConnInfo) -> AdminHandler {
        AdminHandler(self.clone())
    }

    /// Whether the call may use an [`Access::Admin`] route: the bearer token, or a console session
    /// (whose calls that change state must carry its CSRF token and come from the console's own
    /// origin). The one authorization check of the admin listener.
    fn authorized(&self, req: &Request<Incoming>) -> Result<(), ProxyError> {
        let Some(token) = &self.snap().config.admin.token else {
            return Err(admin_disabled());
        };
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        if let Some(g) = given {
            if token.ct_eq(g) {
                return Ok(());
            }
        } else if let Some(csrf) = self.sessions.find(req.headers()) {
            if console::csrf_ok(req.method(), req.headers(), &csrf) {
                return Ok(());
            }
            return Err(ProxyError::new(
                ErrorCode::CsrfFailed,
                "a console call that changes state needs the X-CSRF-Token header and the console's own origin",
            ));
        }
        Err(ProxyError::new(
            ErrorCode::Unauthorized,
            "missing or wrong admin bearer token",
        ))
    }

    /// `POST /admin/login`: the console's sign-in form (`token=`), answered with a session cookie.
    async fn login(&self, req: Request<Incoming>, request_id: &str) -> Answer {
        let snap = self.snap();
        let Some(token) = &snap.config.admin.token else {
            return Err(admin_disabled());
        };
        let refused = |code, message| console::login_page(Some((code, message, request_id)));
        if console::cross_site(req.headers()) {
            return Ok(refused(
                ErrorCode::CsrfFailed,
                "Sign-in from another site refused.",
            ));
        }
        // A small form, all of it within `body_read_timeout`; otherwise answered and closed (each
        // of these codes closes the connection).
        let within = snap.config.proxy.body_read_timeout;
        let body = match crate::serve::read_small_body(req.into_body(), 4096, within).await {
            Ok(b) => b,
            Err(e) => {
                let message = match e {
                    crate::serve::SmallBodyError::Timeout => {
                        "The sign-in form did not arrive in time."
                    }
                    _ => "The sign-in form could not be read.",
                };
                return Ok(refused(e.code(), message));
            }
        };
        let form = crate::inject::encode::parse_form(&body);
        let given = form
            .iter()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.as_bytes());
        if !given.is_some_and(|g| token.ct_eq(g)) {
            tracing::warn!(request_id, "admin console: sign-in with a wrong token");
            return Ok(refused(ErrorCode::Unauthorized, "Wrong admin token."));
        }
        let (id, _) = self.sessions.create();
        tracing::info!("admin console: signed in");
        Ok(console::redirect_with_cookie(
            Some(&id),
            snap.config.admin.tls.is_some(),
        ))
    }

    /// One request: the route table (`router.rs`) finds the endpoint, [`Admin::authorized`] checks
    /// the caller where the route asks for it, and every error becomes the one JSON error answer.
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let request_id = crate::error::request_id(req.headers().get("x-request-id"));
        let path = req.uri().path().to_string();
        let Some((route, param)) = router::find(&path) else {
            return fail(
                ProxyError::new(ErrorCode::NotFound, "no such admin endpoint"),
                &request_id,
            );
        };
        if route.access == Access::Admin {
            if let Err(e) = self.authorized(&req) {
                return fail(e, &request_id);
            }
        }
        let Some(endpoint) = route.endpoint(req.method()) else {
            let mut r = fail(
                ProxyError::new(
                    ErrorCode::MethodNotAllowed,
                    format!("{} allows {}", route.path, route.allow()),
                ),
                &request_id,
            );
            if let Ok(v) = HeaderValue::from_str(&route.allow()) {
                r.headers_mut().insert(ALLOW, v);
            }
            return r;
        };
        let params: Vec<String> = param.iter().map(|p| p.to_string()).collect();
        match self.call(endpoint, req, &params, &request_id).await {
            Ok(r) => r,
            Err(e) => fail(e, &request_id),
        }
    }

    /// What each endpoint does. `params` are the segments the route's `{…}` matched, in order.
    async fn call(
        &self,
        endpoint: Endpoint,
        req: Request<Incoming>,
        params: &[String],
        request_id: &str,
    ) -> Answer {
        let param = params.first().map_or("", String::as_str);
        match endpoint {
            Endpoint::Health => Ok(text(StatusCode::OK, "ok\n")),
            Endpoint::Ready => self.ready().await,
            Endpoint::Metrics => {
                let mut r = text(StatusCode::OK, self.snap().metrics.encode());
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                Ok(r)
            }
            Endpoint::Console => {
                if self.snap().config.admin.token.is_none() {
                    return Ok(console::login_page(Some((
                        ErrorCode::AdminDisabled,
                        "The console is off: set [admin] token in the config.",
                        request_id,
                    ))));
                }
                Ok(match self.sessions.find(req.headers()) {
                    Some(csrf) => console::console_page(&csrf),
                    None => console::login_page(None),
                })
            }
            Endpoint::Asset => console::asset(req.uri().path())
                .ok_or_else(|| ProxyError::new(ErrorCode::NotFound, "no such asset")),
            Endpoint::Login => self.login(req, request_id).await,
            Endpoint::Logout => {
                self.sessions.remove(req.headers());
                let mut r = json_response(StatusCode::OK, json!({"signed_out": true}));
                let clear =
                    console::redirect_with_cookie(None, self.snap().config.admin.tls.is_some());
                if let Some(c) = clear.headers().get(http::header::SET_COOKIE) {
                    r.headers_mut().insert(http::header::SET_COOKIE, c.clone());
                }
                Ok(r)
            }
            Endpoint::Profiles => {
                let snap = self.snap();
                let profiles: Vec<Value> = snap
                    .config
                    .profiles
                    .values()
                    .map(|p| self.profile_json(p))
                    .collect();
                Ok(json_response(
                    StatusCode::OK,
                    json!({ "profiles": profiles }),
                ))
            }
            Endpoint::Profile => match self.snap().config.profile(param) {
                Some(p) => Ok(json_response(StatusCode::OK, self.profile_json(p))),
                None => Err(not_found_profile()),
            },
            Endpoint::TestProfile => self.test(param, req).await,
            Endpoint::LoginLink => self.login_link(param, req).await,
            Endpoint::TestResult => {
                self.sign_in_test(param, params.get(1).map_or("", String::as_str))
                    .await
            }
            Endpoint::Tokens => Ok(self.tokens().await),
            Endpoint::Revoke => self.revoke(param, req.uri().query()).await,
            Endpoint::ImportGrant => self.import_grant(param, req).await,
            Endpoint::WebhookDeliveries => Ok(json_response(
                StatusCode::OK,
                crate::webhooks::deliveries(&self.snap().store).await,
            )),
            Endpoint::ImportGrants => self.import_grants(req).await,
            Endpoint::Grants => self.grants(req.uri().query()).await,
            Endpoint::Reload => self.reload().await,
            Endpoint::ProfileForms => self.profile_forms(),
            Endpoint::ProfileForm => self.profile_form(param).await,
            Endpoint::SaveProfileForm => self.save_profile_form(param, req).await,
            Endpoint::DeleteProfileForm => self.delete_profile_form(param).await,
            Endpoint::ValidateProfileForm => self.validate_profile_form(req).await,
            Endpoint::CertificatesReload => {
                let (reloaded, errors) =
                    tokio::task::spawn_blocking(|| crate::tls::reload_all(true))
                        .await
                        .unwrap_or_default();
                tracing::info!(
                    reloaded,
                    failed = errors.len(),
                    "admin: certificates re-read"
                );
                if errors.is_empty() {
                    Ok(json_response(
                        StatusCode::OK,
                        json!({"reloaded": reloaded, "errors": errors}),
                    ))
                } else {
                    Err(ProxyError::new(
                        ErrorCode::CertificateReloadFailed,
                        format!("{reloaded} certificates re-read; the others could not be (the old ones stay in use)"),
                    )
                    .with_errors(errors))
                }
            }
        }
    }

    /// `GET /readyz`.
    async fn ready(&self) -> Answer {
        if !self.ready.load(Ordering::Acquire) {
            return Err(ProxyError::new(
                ErrorCode::NotReady,
                "starting: not every listener is bound yet",
            ));
        }
        // A profile whose discovery document is not read cannot serve: named here, so an
        // orchestrator holds traffic (the other profiles serve meanwhile).
        let waiting = crate::proxy::discovery_not_ready(&self.snap());
        if !waiting.is_empty() {
            return Err(ProxyError::new(
                ErrorCode::NotReady,
                format!("profiles not ready: {}", waiting.join("; ")),
            ));
        }
        // The store's state is reported, not a reason to stop serving: requests whose token is
        // cached keep working while a shared store is away.
        let store = self.snap().store.clone();
        let state = tokio::task::spawn_blocking(move || {
            (store.ping().map_err(|e| e.to_string()), store.errors())
        })
        .await;
        Ok(match state {
            Ok((Ok(()), errors)) => text(
                StatusCode::OK,
                format!("ready\nstore: ok\nstore_errors: {errors}\n"),
            ),
            Ok((Err(e), errors)) => text(
                StatusCode::OK,
                format!("ready\nstore: unavailable ({e})\nstore_errors: {errors}\n"),
            ),
            Err(_) => text(StatusCode::OK, "ready\n"),
        })
    }

    /// `POST /admin/reload`.
    async fn reload(&self) -> Answer {
        let Some(reload) = self.reloader.clone() else {
            return Err(ProxyError::new(
                ErrorCode::ReloadUnavailable,
                "this server has no config file to read again",
            ));
        };
        match tokio::task::spawn_blocking(move || reload.reload_from_file()).await {
            Ok(Ok(summary)) => {
                tracing::info!("admin: {summary}");
                Ok(json_response(
                    StatusCode::OK,
                    json!({"reloaded": true, "summary": summary}),
                ))
            }
            Ok(Err(errors)) => {
                tracing::warn!(errors = errors.len(), "admin: config not reloaded");
                Err(ProxyError::new(
                    ErrorCode::ConfigInvalid,
                    "config not reloaded; the running config stays in force",
                )
                .with_errors(errors))
            }
            Err(_) => Err(ProxyError::new(ErrorCode::Internal, "reload task failed")),
        }
    }

    /// `GET /admin/tokens`: metadata of cached tokens and stored user grants, never a token.
    async fn tokens(&self) -> Response<Body> {
        let mut out: Vec<Value> = self
            .cache
            .entries()
            .into_iter()
            .map(|(k, expires_in, has_rt)| {
                json!({"profile": &*k.profile, "user": k.user.as_deref(), "tenant": k.tenant.as_deref(),
                       "source": "cache", "expires_in": expires_in, "has_refresh_token": has_rt})
            })
            .collect();
        let store = self.snap().store.clone();
        let grants = tokio::task::spawn_blocking(move || {
            let names = store
                .names(crate::store::Kind::Grant.prefix())
                .unwrap_or_default();
            names
                .into_iter()
                .filter_map(|n| Some(grants::metadata(&n, &store.get(&n).ok()??)))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        // Grants that hold tokens (not entered credentials), as `GET /admin/grants` shows them.
        for mut g in grants.into_iter().filter(|g| g.get("expires_in").is_some()) {
            g["source"] = "store".into();
            out.push(g);
        }
        json_response(StatusCode::OK, json!({ "tokens": out }))
    }

    /// `DELETE /admin/tokens/{profile}?user=&tenant=`: forgets the token (and the user's grant), and
    /// asks the IdP to revoke the refresh token when the profile has a `revocation_url`.
    async fn revoke(&self, profile: &str, query: Option<&str>) -> Answer {
        let snap = self.snap();
        let Some(p) = snap.profiles.get(profile) else {
            return Err(not_found_profile());
        };
        let Some(o) = &p.oauth else {
            return Err(ProxyError::new(
                ErrorCode::NotRevocable,
                "this profile type has no tokens",
            ));
        };
        let params = crate::inject::encode::parse_form(query.unwrap_or("").as_bytes());
        let get = |k: &str| crate::inject::encode::form_value(&params, k);
        let (user, tenant) = (get("user"), get("tenant").map(|t| t.to_ascii_lowercase()));
        if o.per_user && user.is_none() {
            return Err(ProxyError::new(ErrorCode::UserRequired, "add ?user=ID"));
        }
        let key = o.key(p.plan.profile(), tenant.as_deref(), user.as_deref());
        let cached = self.cache.remove(&key);
        if !o.per_user {
            let store = self.snap().store.clone();
            let name = crate::token::persisted_name(&key);
            let _ = tokio::task::spawn_blocking(move || store.remove(&name)).await;
        }
        let mut revoked = Value::Null;
        let mut grant_deleted = false;
        if let (true, Some(u)) = (o.per_user, &user) {
            let name = crate::store::Name::grant(profile, key.tenant.as_deref(), u);
            let store = self.snap().store.clone();
            let record = tokio::task::spawn_blocking(move || {
                let r = store.get(&name).ok().flatten();
                let _ = store.remove(&name);
                r
            })
            .await
            .ok()
            .flatten();
            grant_deleted = record.is_some();
            if let Some((f, _)) = record.as_deref().and_then(crate::token::decode_record) {
                let source = o.source.as_ref().filter(|s| {
                    matches!(&s.settings().grant,
                        crate::config::Grant::AuthorizationCode(c) if c.revocation_url.is_some())
                });
                // A tenant chosen on the start page is kept in the grant.
                let chosen = f
                    .entered
                    .iter()
                    .find(|(k, _)| k == "tenant")
                    .map(|(_, v)| v.expose().to_string());
                let tenant = key.tenant.as_deref().or(chosen.as_deref());
                if let (Some(rt), Some(source)) = (&f.refresh_token, source) {
                    revoked = match source.revoke(tenant, rt, "refresh_token").await {
                        Ok(()) => Value::Bool(true),
                        Err(e) => Value::String(e),
                    };
                }
            }
        }
        crate::oauth::grants::publish_invalidation(&self.snap().store, &key).await;
        if let (true, Some(u)) = (grant_deleted, &user) {
            let event =
                crate::webhooks::Event::new("grant.revoked", profile, u, key.tenant.as_deref())
                    .with("reason", "admin");
            crate::webhooks::emit(&self.snap().store, event).await;
        }
        tracing::info!(profile, user = user.is_some(), "admin: token revoked");
        Ok(json_response(
            StatusCode::OK,
            json!({"profile": profile, "cached_token_dropped": cached, "grant_deleted": grant_deleted, "idp_revocation": revoked}),
        ))
    }

    /// A profile as operators see it: no secret value, only which secrets are set and their length.
    fn profile_json(&self, p: &Profile) -> Value {
        let redacted =
            |s: &dyn SecretText| Value::String(format!("[redacted len={}]", s.expose_text().len()));
        let credentials = match &p.kind {
            ProfileKind::None => json!({}),
            ProfileKind::Basic { username, password } => {
                json!({"username": redacted(username), "password": redacted(password)})
            }
            ProfileKind::ApiKey { key } => json!({"api_key": redacted(key)}),
            ProfileKind::UserBasic => {
                json!({"username": "entered by each end user", "password": "entered by each end user"})
            }
            ProfileKind::UserApiKey => json!({"api_key": "entered by each end user"}),
            ProfileKind::OAuth(o) => {
                let mut c = json!({
                    "token_url": o.token_url,
                    "client_id": o.client_id,
                    "client_auth": o.client_auth.as_str(),
                    "client_secret": o.client_secret.as_ref().map(|s| redacted(s)),
                    "scope": o.scope.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
                    // Values may be secrets: names only.
                    "token_params": o.token_params.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
                });
                if let crate::config::Grant::Password { username, password } = &o.grant {
                    c["username"] = redacted(username);
                    c["password"] = redacted(password);
                }
                // A custom token request: its shape, names only (a value may be a secret).
                if let Some(t) = &o.token_request {
                    c["token_request"] = json!({
                        "encoding": match t.encoding {
                            crate::config::token_shape::Encoding::Form => "form",
                            crate::config::token_shape::Encoding::Json => "json",
                        },
                        "headers": t.headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
                        "body": t.body.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
                    });
                }
                if let Some(t) = &o.token_response {
                    let (expiry_key, expiry) = match &t.expiry {
                        crate::config::token_shape::Expiry::In(p) => ("expires_in", p),
                        crate::config::token_shape::Expiry::At(p) => ("expires_at", p),
                    };
                    c["token_response"] = json!({
                        "access_token": t.access_token,
                        "refresh_token": t.refresh_token,
                        expiry_key: expiry,
                        "token_type": t.token_type,
                    });
                }
                // Signing keys: the algorithm and kid (public), never key material.
                if let Some(a) = &o.client_assertion {
                    c["client_assertion"] = json!({
                        "alg": a.key.alg(),
                        "kid": a.key.kid(),
                        "key": "[redacted]",
                        "audience": a.audience.as_deref().unwrap_or("the token URL"),
                    });
                }
                if let crate::config::Grant::JwtBearer(b) = &o.grant {
                    c["assertion"] = json!({
                        "alg": b.key.alg(),
                        "kid": b.key.kid(),
                        "key": "[redacted]",
                        "claims": b.claims.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
                        "lifetime_seconds": b.lifetime,
                    });
                }
                c
            }
            // Signers hold their keys as bytes: which ones are set, never a value or a length.
            ProfileKind::Sign(sg) => match &sg.method {
                crate::config::SignMethod::SigV4 {
                    payload,
                    access_key_id,
                    region,
                    service,
                    ..
                } => json!({
                    "access_key_id": access_key_id,
                    "secret_access_key": "[redacted]",
                    "region": region,
                    "service": service,
                    "payload": if *payload == crate::sign::sigv4::Payload::Signed { "signed" } else { "unsigned" },
                    "max_signed_body_bytes": sg.max_signed_body_bytes,
                }),
                crate::config::SignMethod::Hmac { .. } => json!({
                    "secret": "[redacted]",
                    "max_signed_body_bytes": sg.max_signed_body_bytes,
                }),
                crate::config::SignMethod::OAuth1 {
                    client,
                    token,
                    realm,
                    placement,
                    three_legged,
                } => json!({
                    "signature_method": client.method().as_str(),
                    "consumer_secret_or_key": "[redacted]",
                    "token": token.as_ref().map(|(t, _)| redacted(t)),
                    "token_secret": token.as_ref().map(|(_, s)| redacted(s)),
                    "realm": realm,
                    "placement": placement.as_str(),
                    "max_signed_body_bytes": sg.max_signed_body_bytes,
                    "request_token_url": three_legged.as_ref().map(|e| &e.request_token_url),
                    "authorization_url": three_legged.as_ref().map(|e| &e.authorization_url),
                    "access_token_url": three_legged.as_ref().map(|e| &e.access_token_url),
                }),
            },
        };
        let snap = self.snap();
        let routes: Vec<&str> = snap
            .config
            .routes
            .iter()
            .filter(|r| r.profiles.iter().any(|n| **n == *p.name))
            .map(|r| r.prefix.as_str())
            .collect();
        // Field values are shown as the variables they use: a literal part could be a secret that a
        // ${VAR} reference put there.
        let fields: Vec<Value> = p
            .fields
            .iter()
            .map(|f| {
                json!({
                    "in": f.location.as_str(),
                    "key": f.key,
                    "variables": f.value.vars().map(|v| v.to_string()).collect::<Vec<_>>(),
                })
            })
            .collect();
        let callback = match (&p.kind, &self.snap().config.auth) {
            (ProfileKind::OAuth(o), Some(a))
                if matches!(o.grant, crate::config::Grant::AuthorizationCode(_)) =>
            {
                Some(a.callback_url())
            }
            // Three-legged OAuth 1.0a: the same callback, sent as `oauth_callback`.
            (ProfileKind::Sign(_), Some(a)) if p.per_user => Some(a.callback_url()),
            _ => None,
        };
        let code = match &p.kind {
            ProfileKind::OAuth(o) => match &o.grant {
                crate::config::Grant::AuthorizationCode(c) => Some(c),
                _ => None,
            },
            _ => None,
        };
        // Discovery (an `issuer` without endpoints): what the provider's document said, or why it
        // has not been read; the endpoints in use then come from it.
        let discovery = self
            .snap()
            .profiles
            .get(&*p.name)
            .and_then(|rt| rt.oauth.as_ref())
            .and_then(|o| o.source.as_ref())
            .and_then(|src| src.discovery.as_ref().map(|d| (src, d)))
            .map(|(src, d)| match d.metadata() {
                Some(m) => json!({
                    "state": "read",
                    "url": m.url,
                    "issuer": m.issuer,
                    "openid": m.openid,
                    "authorization_endpoint": src.authorization_url().ok(),
                    "token_endpoint": src.token_url(None).ok(),
                    "revocation_endpoint": m.revocation_endpoint,
                    "jwks_uri": m.jwks_uri,
                }),
                None => json!({"state": "not_read", "error": d.error()}),
            });
        json!({
            "name": &*p.name,
            "type": p.kind.type_name(),
            "callback_url": callback,
            "discovery": discovery,
            "identity_provider": p.identity_provider,
            "tenancy": p.tenancy,
            "per_user": p.per_user,
            "authorization": code.map(|c| json!({
                "authorization_url": c.authorization_url,
                "refresh_url": c.refresh_url,
                "revocation_url": c.revocation_url,
                "issuer": p.kind.oauth().and_then(|o| o.issuer.as_ref()),
                "pkce": c.pkce,
            })),
            "user_fields": p.user_fields.iter().map(|f| json!({
                "key": f.key,
                "label": f.label,
                "secret": f.secret,
                "pattern": f.pattern.as_ref().map(|r| r.as_str()),
                "max_length": f.max_length,
            })).collect::<Vec<_>>(),
            "on_authorized": p.on_authorized,
            // Webhook names only (a webhook's secret is never shown); the on_authorized shorthand
            // is the line above.
            "webhooks": p.webhooks.iter().filter(|w| !w.plain_body).map(|w| &*w.name).collect::<Vec<_>>(),
            "keep_alive_seconds": p.keep_alive.map(|d| d.as_secs()),
            "routes": routes,
            "fields": fields,
            "credentials": credentials,
        })
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

fn text(status: StatusCode, s: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(s));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn json_response(status: StatusCode, v: Value) -> Response<Body> {
    let mut r = Response::new(full(serde_json::to_vec_pretty(&v).unwrap_or_default()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The JSON error answer of the admin listener (the one error table's), and its log line. A 401
/// names the scheme it wants.
fn fail(e: ProxyError, request_id: &str) -> Response<Body> {
    tracing::debug!(code = %e.code, %request_id, "admin: {}", e.message);
    let unauthorized = e.code == ErrorCode::Unauthorized;
    let mut r = e
        .into_response(request_id)
        .map(|b| b.map_err(|never| match never {}).boxed());
    if unauthorized {
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"authsidecar-admin\""),
        );
    }
    r
}

fn admin_disabled() -> ProxyError {
    ProxyError::new(
        ErrorCode::AdminDisabled,
        "set [admin] token to use the admin API",
    )
}

fn not_found_profile() -> ProxyError {
    ProxyError::new(ErrorCode::ProfileNotFound, "no profile with that name")
}

#[derive(Clone)]
pub struct AdminHandler(Arc<Admin>);

impl Handler for AdminHandler {
    type Body = Body;

    fn call(
        &self,
        req: Request<Incoming>,
    ) -> impl std::future::Future<Output = Response<Body>> + Send + 'static {
        let admin = self.0.clone();
        async move { admin.handle(req).await }
    }
}
