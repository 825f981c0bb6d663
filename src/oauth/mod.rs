//! OAuth 2.0 machine grants (client credentials, password, the JWT bearer grant of RFC 7523 §2.1)
//! through the `oauth2` crate, as a [`TokenSource`] for the token cache. Clients authenticate with
//! their secret (`client_secret_basic`, `client_secret_post`), not at all, or with a JWT signed per
//! request (`private_key_jwt`, `client_secret_jwt`: RFC 7523 §2.2, OpenID Connect Core §9).
//!
//! The `oauth2` crate builds the token requests (including RFC 6749 §2.3.1 `client_secret_basic`,
//! which form-urlencodes id and secret before base64) and parses responses into
//! [`response::IdpTokenResponse`]; it is driven over the project's own hyper + rustls client
//! ([`http::IdpHttp`]). Failures become [`TokenError`]s whose messages carry at most the OAuth
//! `error` code and description, never the IdP's body.
//!
//! A profile with `issuer` and a left-out endpoint takes its endpoints from the provider's
//! discovery document ([`discovery`]); OpenID Connect sign-ins are checked by [`id_token`].
//!
//! A profile with `token_request` writes its requests itself, and one with `token_response` says
//! where its answers keep their members ([`custom`]): for identity providers that are not RFC 6749
//! token endpoints.

pub mod custom;
pub mod discovery;
pub mod grants;
pub mod http;
pub mod id_token;
pub mod oauth1;
pub mod response;
pub mod test_auth;
pub mod test_run;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
};
use oauth2::{
    AuthType, ClientId, EndpointNotSet, EndpointSet, RequestTokenError, ResourceOwnerPassword,
    ResourceOwnerUsername, StandardRevocableToken, TokenUrl,
};

use self::http::{IdpHttp, IdpHttpError};
use self::response::IdpTokenResponse;
use crate::config::dynamic::{self, DynVar};
use crate::config::{Claim, ClientAuth, Grant, OAuthSettings, Profile};
use crate::secret::{AccessToken, PkceVerifier, RefreshToken};
use crate::sign::jwt;
use crate::token::{Fetched, Policy, TokenError, TokenErrorKind, TokenKey, TokenSource};
use ClientAuth::{Basic, Post};

/// RFC 7523 §2.2 `client_assertion_type`.
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// RFC 7523 §2.1 `grant_type`.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

type OAuthClient<TR> = oauth2::Client<
    BasicErrorResponse,
    TR,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

type TokenResult<TR = IdpTokenResponse> =
    Result<TR, RequestTokenError<IdpHttpError, BasicErrorResponse>>;

/// Which request to send.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// The profile's own grant (client credentials or password).
    Primary,
    /// The profile's own grant for one end user: a JWT bearer assertion whose claims use
    /// `{{user}}` (per-user delegation).
    PrimaryFor(&'a str),
    Refresh(&'a RefreshToken),
    /// An end user's username and password, entered on the start page (`per_user = true`).
    UserPassword {
        username: &'a str,
        password: &'a str,
    },
    /// Redeem an authorization code (with its PKCE verifier) sent to `redirect_uri`.
    Code {
        code: &'a str,
        verifier: Option<&'a PkceVerifier>,
        redirect_uri: &'a str,
    },
}

/// The dynamic values of one request to the identity provider: `{tenant}`, and the
/// `context.NAME` and `user_field.NAME` values (named so) that the profile's URLs, scope and
/// token parameters use ([`crate::config::dynamic`]). A sign-in keeps them with its flow and grant,
/// so the code exchange and every refresh use the values the sign-in used.
#[derive(Debug, Clone, Copy, Default)]
pub struct DynValues<'a> {
    pub tenant: Option<&'a str>,
    pub pairs: &'a [(String, String)],
}

impl<'a> DynValues<'a> {
    pub fn tenant(tenant: Option<&'a str>) -> DynValues<'a> {
        DynValues { tenant, pairs: &[] }
    }

    pub fn lookup(&self, var: &DynVar) -> Option<&'a str> {
        let pairs = self.pairs;
        match var {
            DynVar::Tenant => self.tenant,
            other => {
                let key = other.key();
                pairs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.as_str())
            }
        }
    }

    /// `template` with the values filled in, each checked and encoded for its position.
    pub fn render(&self, template: &str, url: bool) -> Result<String, TokenError> {
        if !dynamic::has_vars(template) {
            return Ok(template.to_string());
        }
        dynamic::render(template, url, |v| self.lookup(v))
            .map_err(|e| TokenError::new(TokenErrorKind::Rejected, e))
    }

    /// Key/value pairs (`scope`, `token_params`) with their values rendered.
    pub fn render_pairs(
        &self,
        pairs: &[(String, String)],
    ) -> Result<Vec<(String, String)>, TokenError> {
        pairs
            .iter()
            .map(|(k, v)| Ok((k.clone(), self.render(v, false)?)))
            .collect()
    }
}

/// Token source for one OAuth profile.
pub struct OAuthSource {
    profile: Arc<str>,
    settings: OAuthSettings,
    pub(crate) http: IdpHttp,
    /// Where token requests are counted (set when the snapshot is built).
    pub metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
    /// The provider's discovery document (profiles with `issuer` and a left-out endpoint).
    pub discovery: Option<Arc<discovery::Discovered>>,
}

impl OAuthSource {
    pub fn new(profile: &Profile) -> Result<Option<OAuthSource>, String> {
        let Some(settings) = profile.kind.oauth() else {
            return Ok(None);
        };
        let http = IdpHttp::new(
            &settings.tls,
            settings.connector.clone(),
            settings.idp_timeout,
        )?;
        let discovery = match (&settings.issuer, settings.discover) {
            (Some(issuer), true) => Some({
                let needs = discovery::Needs::of(settings);
                let key = format!(
                    "{}\u{0}{issuer}\u{0}{:?}\u{0}{:?}\u{0}{:?}\u{0}{needs:?}",
                    profile.name,
                    settings.tls,
                    settings
                        .connector
                        .as_ref()
                        .map(|c| (&c.name, c.url.to_string())),
                    settings.idp_timeout,
                );
                discovery::Discovered::get_or_start(key, &profile.name, issuer, needs, http.clone())
            }),
            _ => None,
        };
        Ok(Some(OAuthSource {
            profile: profile.name.clone(),
            http,
            settings: settings.clone(),
            metrics: std::sync::OnceLock::new(),
            discovery,
        }))
    }

    /// The discovery document: `Ok(None)` for a profile without discovery, an `idp_unavailable`
    /// error while it has not been read (nothing is sent to the provider then).
    pub fn discovered(&self) -> Result<Option<Arc<discovery::Metadata>>, TokenError> {
        let Some(d) = &self.discovery else {
            return Ok(None);
        };
        match d.metadata() {
            Some(m) => Ok(Some(m)),
            None => {
                let mut e = TokenError::new(
                    TokenErrorKind::Unavailable,
                    format!(
                        "the identity provider's discovery document is not available: {}",
                        d.error().unwrap_or_default()
                    ),
                );
                e.retry_after = Some(1);
                Err(e)
            }
        }
    }

    /// An endpoint: the profile's own when it gives one, else the discovered one.
    fn endpoint(
        &self,
        own: &str,
        pick: impl Fn(&discovery::Metadata) -> Option<&String>,
        name: &str,
    ) -> Result<String, TokenError> {
        if !own.is_empty() {
            return Ok(own.to_string());
        }
        match self.discovered()? {
            Some(m) => pick(m.as_ref()).cloned().ok_or_else(|| {
                TokenError::new(
                    TokenErrorKind::InvalidResponse,
                    format!("the provider's discovery document names no {name}"),
                )
            }),
            None => Err(TokenError::new(
                TokenErrorKind::InvalidResponse,
                format!("the profile has no {name}"),
            )),
        }
    }

    /// The authorization endpoint (`authorization_url`, else the discovered one), before
    /// `{tenant}` and context values are filled in.
    pub fn authorization_url(&self) -> Result<String, TokenError> {
        let own = match &self.settings.grant {
            Grant::AuthorizationCode(c) => c.authorization_url.as_str(),
            _ => "",
        };
        self.endpoint(
            own,
            |m| m.authorization_endpoint.as_ref(),
            "authorization_endpoint",
        )
    }

    /// The revocation endpoint (`revocation_url`, else the discovered one), if any.
    fn revocation_url(&self) -> Option<String> {
        match &self.settings.grant {
            Grant::AuthorizationCode(c) => c.revocation_url.clone().or_else(|| {
                self.discovered()
                    .ok()
                    .flatten()
                    .and_then(|m| m.revocation_endpoint.clone())
            }),
            _ => None,
        }
    }

    /// The `scope` pairs sent with the authorization request: the profile's, or `scope=openid`
    /// when it gives none and its discovery document is an OpenID provider's.
    pub fn scope(&self) -> Vec<(String, String)> {
        if self.settings.scope.is_empty() {
            if let Ok(Some(m)) = self.discovered() {
                if m.openid {
                    return vec![("scope".into(), "openid".into())];
                }
            }
        }
        self.settings.scope.clone()
    }

    pub fn settings(&self) -> &OAuthSettings {
        &self.settings
    }

    pub fn profile(&self) -> &Arc<str> {
        &self.profile
    }

    /// The token cache policy for this profile.
    pub fn policy(&self) -> Policy {
        Policy {
            default_lifetime: self.settings.default_token_lifetime,
            refresh_before: self.settings.refresh_before,
            ..Policy::default()
        }
    }

    /// The token URL with the tenant filled in (already validated as one DNS label).
    pub fn token_url(&self, tenant: Option<&str>) -> Result<String, TokenError> {
        self.token_url_with(DynValues::tenant(tenant))
    }

    /// The token URL with its dynamic values filled in and encoded.
    pub fn token_url_with(&self, dv: DynValues<'_>) -> Result<String, TokenError> {
        if self.settings.token_url.is_empty() {
            return self.endpoint("", |m| m.token_endpoint.as_ref(), "token_endpoint");
        }
        dv.render(&self.settings.token_url, true)
    }

    fn client<TR: oauth2::TokenResponse>(
        &self,
        token_url: String,
    ) -> Result<OAuthClient<TR>, TokenError> {
        let url = TokenUrl::new(token_url).map_err(|e| {
            TokenError::new(TokenErrorKind::InvalidResponse, format!("token URL: {e}"))
        })?;
        let s = &self.settings;
        let mut c = oauth2::Client::new(ClientId::new(s.client_id.clone()))
            .set_token_uri(url)
            .set_auth_type(match s.client_auth {
                ClientAuth::Basic => AuthType::BasicAuth,
                // JWT client authentication: `client_id` in the body, the assertion as extra
                // parameters (see `client_assertion_params`), no secret.
                ClientAuth::Post
                | ClientAuth::None
                | ClientAuth::PrivateKeyJwt
                | ClientAuth::ClientSecretJwt => AuthType::RequestBody,
            });
        if let (Some(secret), Basic | Post) = (&s.client_secret, s.client_auth) {
            c = c.set_client_secret(oauth2::ClientSecret::new(secret.expose().to_string()));
        }
        Ok(c)
    }

    /// Sends one token request over `http` (the shared client, or a capturing copy).
    pub async fn request(
        &self,
        http: &IdpHttp,
        tenant: Option<&str>,
        which: Request<'_>,
    ) -> Result<IdpTokenResponse, TokenError> {
        self.request_with(http, DynValues::tenant(tenant), which)
            .await
    }

    /// [`OAuthSource::request`] with the dynamic values of the profile's URLs, scope and token
    /// parameters (a refused or missing value: no request is made).
    pub async fn request_with(
        &self,
        http: &IdpHttp,
        dv: DynValues<'_>,
        which: Request<'_>,
    ) -> Result<IdpTokenResponse, TokenError> {
        let s = &self.settings;
        let tenant = dv.tenant;
        let url = match (which, &s.grant) {
            (Request::Refresh(_), Grant::AuthorizationCode(c)) if c.refresh_url.is_some() => {
                dv.render(c.refresh_url.as_deref().unwrap_or_default(), true)?
            }
            _ => self.token_url_with(dv)?,
        };
        if let Some(shape) = &s.token_request {
            let result = self
                .custom_request(http, &url, shape, tenant, which)
                .await?;
            return self.finish(which, result);
        }
        match &s.token_response {
            None => {
                let result = self
                    .exchange::<IdpTokenResponse>(http, url, dv, which)
                    .await?;
                self.finish(which, result)
            }
            Some(shape) => {
                let result = self
                    .exchange::<custom::RawAnswer>(http, url, dv, which)
                    .await?
                    .and_then(|raw| {
                        custom::parse(
                            shape,
                            &serde_json::Value::Object(raw.map),
                            custom::unix_now(),
                        )
                        .map_err(RequestTokenError::Other)
                    });
                self.finish(which, result)
            }
        }
    }

    /// A request written by the profile (`token_request`): exactly its headers and body, to the
    /// token (or refresh) URL; the answer read by `token_response` (else as RFC 6749 §5.1 says).
    /// A refresh is made only when the request uses `{{refresh_token}}`: otherwise the refresh
    /// token counts as refused (a machine grant logs in again; an end user authorizes again).
    async fn custom_request(
        &self,
        http: &IdpHttp,
        url: &str,
        shape: &crate::config::TokenRequestShape,
        tenant: Option<&str>,
        which: Request<'_>,
    ) -> Result<TokenResult, TokenError> {
        use crate::config::token_shape::ReqVar;
        use oauth2::AsyncHttpClient;
        let s = &self.settings;
        let mut values = custom::Values {
            client_id: Some(s.client_id.as_str()).filter(|c| !c.is_empty()),
            client_secret: s.client_secret.as_ref().map(|c| c.expose()),
            tenant,
            ..Default::default()
        };
        if let Grant::Password { username, password } = &s.grant {
            values.username = Some(username.expose());
            values.password = Some(password.expose());
        }
        match (which, &s.grant) {
            (Request::Refresh(_), _) if !shape.uses(&ReqVar::RefreshToken) => {
                return Err(TokenError::new(
                    TokenErrorKind::GrantInvalid,
                    "token_request does not use {{refresh_token}}: tokens are not refreshed, the profile signs in again",
                ));
            }
            (Request::Refresh(rt), _) => {
                values.refresh_token = Some(rt.expose());
                values.grant_type = Some("refresh_token");
            }
            (Request::Primary, Grant::ClientCredentials) => {
                values.grant_type = Some("client_credentials");
            }
            (Request::Primary, Grant::Password { .. }) => values.grant_type = Some("password"),
            (Request::UserPassword { username, password }, _) => {
                values.username = Some(username);
                values.password = Some(password);
                values.grant_type = Some("password");
            }
            (
                Request::Code {
                    code,
                    verifier,
                    redirect_uri,
                },
                _,
            ) => {
                values.code = Some(code);
                values.code_verifier = verifier.map(|v| v.expose());
                values.redirect_uri = Some(redirect_uri);
                values.grant_type = Some("authorization_code");
            }
            (Request::Primary, Grant::AuthorizationCode(_) | Grant::UserPassword) => {
                return Err(TokenError::new(
                    TokenErrorKind::GrantInvalid,
                    "this profile's tokens belong to end users: they must authorize first",
                ))
            }
            (Request::Primary | Request::PrimaryFor(_), _) => {
                return Err(TokenError::new(
                    TokenErrorKind::Rejected,
                    "token_request cannot make this profile's token request",
                ))
            }
        }
        let req = custom::build(shape, &values, url)
            .map_err(|e| TokenError::new(TokenErrorKind::Rejected, e))?;
        let resp = match http.call(req).await {
            Ok(r) => r,
            Err(e) => return Ok(Err(RequestTokenError::Request(e))),
        };
        let body = resp.body().as_slice();
        if resp.status() != ::http::StatusCode::OK {
            if body.is_empty() {
                return Ok(Err(RequestTokenError::Other(
                    "server returned empty error response".into(),
                )));
            }
            return Ok(Err(match parse(body) {
                Ok(e) => RequestTokenError::ServerResponse(e),
                Err(e) => RequestTokenError::Parse(e, Vec::new()),
            }));
        }
        let Ok(root) = serde_json::from_slice::<serde_json::Value>(body) else {
            return Ok(Err(RequestTokenError::Other(
                "the response is not JSON".into(),
            )));
        };
        Ok(match &s.token_response {
            Some(shape) => {
                custom::parse(shape, &root, custom::unix_now()).map_err(RequestTokenError::Other)
            }
            None => match root {
                serde_json::Value::Object(m) => {
                    IdpTokenResponse::from_map(m).map_err(RequestTokenError::Other)
                }
                _ => Err(RequestTokenError::Other(
                    "the response is not a JSON object".into(),
                )),
            },
        })
    }

    /// A standard token request (RFC 6749 §4.1.3, §4.3, §4.4, §6; RFC 7523 §2.1), read as `TR`.
    /// The outer error: no request was made.
    async fn exchange<TR>(
        &self,
        http: &IdpHttp,
        url: String,
        dv: DynValues<'_>,
        which: Request<'_>,
    ) -> Result<TokenResult<TR>, TokenError>
    where
        TR: oauth2::TokenResponse,
    {
        let s = &self.settings;
        let tenant = dv.tenant;
        let scope_pairs = dv.render_pairs(&s.scope)?;
        let param_pairs = dv.render_pairs(&s.token_params)?;
        // A fresh client assertion for every token request (`private_key_jwt`,
        // `client_secret_jwt`), addressed to the URL this request goes to unless configured.
        let assertion = self.client_assertion_params(&url)?;
        if let (Request::Primary | Request::PrimaryFor(_), Grant::JwtBearer(_)) = (which, &s.grant)
        {
            let user = match which {
                Request::PrimaryFor(u) => Some(u),
                _ => None,
            };
            let form: Vec<(String, String)> = scope_pairs.into_iter().chain(param_pairs).collect();
            return Ok(self
                .jwt_bearer(http, url, tenant, user, &assertion, &form)
                .await);
        }
        let client = self.client::<TR>(url)?;
        let assertion_params = assertion.iter().map(|(k, v)| (*k, v.as_str()));
        let params = param_pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(assertion_params);
        let scope = scope_pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let result: TokenResult<TR> = match (which, &s.grant) {
            (Request::Refresh(rt), _) => {
                let rt = oauth2::RefreshToken::new(rt.expose().to_string());
                let mut r = client.exchange_refresh_token(&rt);
                for (k, v) in params {
                    r = r.add_extra_param(k, v);
                }
                r.request_async(http).await
            }
            (Request::Primary, Grant::ClientCredentials) => {
                let mut r = client.exchange_client_credentials();
                for (k, v) in scope.chain(params) {
                    r = r.add_extra_param(k, v);
                }
                r.request_async(http).await
            }
            (
                Request::Code {
                    code,
                    verifier,
                    redirect_uri,
                },
                _,
            ) => {
                let redirect = oauth2::RedirectUrl::new(redirect_uri.to_string()).map_err(|e| {
                    TokenError::new(
                        TokenErrorKind::InvalidResponse,
                        format!("redirect URI: {e}"),
                    )
                })?;
                let client = client.set_redirect_uri(redirect);
                let mut r = client.exchange_code(oauth2::AuthorizationCode::new(code.to_string()));
                if let Some(v) = verifier {
                    r = r.set_pkce_verifier(oauth2::PkceCodeVerifier::new(v.expose().to_string()));
                }
                for (k, v) in params {
                    r = r.add_extra_param(k, v);
                }
                r.request_async(http).await
            }
            (Request::UserPassword { username, password }, _) => {
                let u = ResourceOwnerUsername::new(username.to_string());
                let p = ResourceOwnerPassword::new(password.to_string());
                let mut r = client.exchange_password(&u, &p);
                for (k, v) in scope.chain(params) {
                    r = r.add_extra_param(k, v);
                }
                r.request_async(http).await
            }
            (Request::Primary | Request::PrimaryFor(_), Grant::JwtBearer(_)) => {
                unreachable_jwt_bearer()
            }
            (Request::PrimaryFor(_), _) => {
                return Err(TokenError::new(
                    TokenErrorKind::Rejected,
                    "only a JWT bearer profile requests tokens for one end user",
                ))
            }
            (Request::Primary, Grant::AuthorizationCode(_) | Grant::UserPassword) => {
                return Err(TokenError::new(
                    TokenErrorKind::GrantInvalid,
                    "this profile's tokens belong to end users: they must authorize first",
                ))
            }
            (Request::Primary, Grant::Password { username, password }) => {
                let u = ResourceOwnerUsername::new(username.expose().to_string());
                let p = ResourceOwnerPassword::new(password.expose().to_string());
                let mut r = client.exchange_password(&u, &p);
                for (k, v) in scope.chain(params) {
                    r = r.add_extra_param(k, v);
                }
                r.request_async(http).await
            }
        };
        Ok(result)
    }

    /// Counts a token request and turns its failure into a [`TokenError`].
    fn finish(
        &self,
        which: Request<'_>,
        result: TokenResult,
    ) -> Result<IdpTokenResponse, TokenError> {
        let s = &self.settings;
        if let Some(m) = self.metrics.get() {
            let grant = match (which, &s.grant) {
                (Request::Refresh(_), _) => "refresh_token",
                (_, Grant::JwtBearer(_)) => "jwt_bearer",
                (Request::Code { .. }, _) => "authorization_code",
                (Request::UserPassword { .. }, _) | (_, Grant::Password { .. }) => "password",
                _ => "client_credentials",
            };
            let error = match &result {
                Err(RequestTokenError::ServerResponse(e)) => {
                    let code = e.error().as_ref().to_string();
                    // Bounded: the RFC 6749 codes, else "other".
                    const KNOWN: [&str; 6] = [
                        "invalid_request",
                        "invalid_client",
                        "invalid_grant",
                        "unauthorized_client",
                        "unsupported_grant_type",
                        "invalid_scope",
                    ];
                    if KNOWN.contains(&code.as_str()) {
                        code
                    } else {
                        "other".to_string()
                    }
                }
                _ => String::new(),
            };
            let mapped = result.map_err(|e| map_error(e, which));
            let outcome = match &mapped {
                Ok(_) => "ok",
                Err(e) => e.code().as_str(),
            };
            m.token_request(&self.profile, grant, outcome, &error);
            return mapped;
        }
        result.map_err(|e| map_error(e, which))
    }
}

/// The match in `request` handles the JWT bearer grant before building an oauth2 request.
fn unreachable_jwt_bearer<TR>() -> TokenResult<TR> {
    Err(RequestTokenError::Other(
        "internal: the JWT bearer grant is not an oauth2 crate request".into(),
    ))
}

impl OAuthSource {
    /// `client_assertion_type` and a freshly signed `client_assertion` (RFC 7523 §2.2, OpenID
    /// Connect Core §9) when the profile authenticates with a JWT; `aud` is
    /// `client_assertion_audience`, else `url` (the endpoint the request goes to).
    fn client_assertion_params(
        &self,
        url: &str,
    ) -> Result<Vec<(&'static str, String)>, TokenError> {
        let Some(a) = &self.settings.client_assertion else {
            return Ok(Vec::new());
        };
        let aud = a.audience.as_deref().unwrap_or(url);
        let jwt = jwt::fresh_client_assertion(a.key.expose(), &self.settings.client_id, aud)
            .map_err(|e| {
                TokenError::new(
                    TokenErrorKind::Rejected,
                    format!("signing the client assertion failed: {e}"),
                )
            })?;
        Ok(vec![
            ("client_assertion_type", CLIENT_ASSERTION_TYPE.to_string()),
            ("client_assertion", jwt),
        ])
    }

    /// RFC 7523 §2.1: `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` with a freshly
    /// signed `assertion`, the profile's `scope` and `token_params`, and its client authentication
    /// when it has one. Written here (the oauth2 crate has no extension grants); the answer is read
    /// as the crate reads one (status, then an OAuth error or a token response).
    async fn jwt_bearer<TR: serde::de::DeserializeOwned>(
        &self,
        http: &IdpHttp,
        url: String,
        tenant: Option<&str>,
        user: Option<&str>,
        client_assertion: &[(&'static str, String)],
        scope_and_params: &[(String, String)],
    ) -> TokenResult<TR> {
        use crate::inject::encode::encode;
        use oauth2::AsyncHttpClient;
        let s = &self.settings;
        let Grant::JwtBearer(b) = &s.grant else {
            return Err(RequestTokenError::Other(
                "internal: not a JWT bearer profile".into(),
            ));
        };
        let mut claims = serde_json::Map::new();
        for (name, c) in &b.claims {
            let value = match c {
                Claim::Value(v) => v.clone(),
                Claim::TokenUrl => url.as_str().into(),
                Claim::Template(t) => t
                    .render(|var| match var {
                        crate::template::Var::Tenant => tenant,
                        crate::template::Var::User => user,
                        _ => None,
                    })
                    .map_err(|var| {
                        RequestTokenError::Other(format!(
                            "assertion claim {name}: {{{{{var}}}}} has no value (X-Authsidecar-Tenant or X-Authsidecar-User missing?)"
                        ))
                    })?
                    .into(),
            };
            claims.insert(name.clone(), value);
        }
        claims.insert("jti".into(), jwt::fresh_jti().into());
        let assertion =
            jwt::bearer_assertion(b.key.expose(), &claims, crate::sign::unix_now(), b.lifetime)
                .map_err(|e| {
                    RequestTokenError::Other(format!("signing the assertion failed: {e}"))
                })?;
        let mut form = format!(
            "grant_type={}&assertion={assertion}",
            encode(JWT_BEARER_GRANT)
        );
        let mut add = |k: &str, v: &str| {
            form.push('&');
            form.push_str(&encode(k).to_string());
            form.push('=');
            form.push_str(&encode(v).to_string());
        };
        for (k, v) in scope_and_params {
            add(k, v);
        }
        let mut req = ::http::Request::post(url)
            .header(
                ::http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(::http::header::ACCEPT, "application/json");
        match (s.client_auth, &s.client_secret) {
            (Basic, Some(secret)) => {
                use crate::http_util::{basic_credentials, BasicEncoding};
                let b =
                    basic_credentials(&s.client_id, secret.expose(), BasicEncoding::FormUrlencoded);
                req = req.header(::http::header::AUTHORIZATION, format!("Basic {b}"));
            }
            (auth, secret) => {
                if !s.client_id.is_empty() {
                    add("client_id", &s.client_id);
                }
                if let (Post, Some(secret)) = (auth, secret) {
                    add("client_secret", secret.expose());
                }
                for (k, v) in client_assertion {
                    add(k, v);
                }
            }
        }
        let req = req
            .body(form.into_bytes())
            .map_err(|e| RequestTokenError::Other(e.to_string()))?;
        let resp = http.call(req).await.map_err(RequestTokenError::Request)?;
        let body = resp.body().as_slice();
        if resp.status() != ::http::StatusCode::OK {
            if body.is_empty() {
                return Err(RequestTokenError::Other(
                    "server returned empty error response".into(),
                ));
            }
            return Err(match parse(body) {
                Ok(e) => RequestTokenError::ServerResponse(e),
                Err(e) => RequestTokenError::Parse(e, body.to_vec()),
            });
        }
        parse(body).map_err(|e| RequestTokenError::Parse(e, body.to_vec()))
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    body: &[u8],
) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body))
}

impl OAuthSource {
    /// RFC 7009: asks the IdP to revoke a token (the profile's `revocation_url`); errors are
    /// returned as text for the admin answer.
    ///
    /// Written here rather than with the oauth2 crate's `revoke_token`, which refuses every
    /// `http` revocation URL, where the sidecar accepts one wherever it accepts an `http` token URL
    /// (a loopback IdP, the mock provider); the client authentication is the token request's.
    pub async fn revoke(
        &self,
        tenant: Option<&str>,
        token: &RefreshToken,
        hint: &str,
    ) -> Result<(), String> {
        let Some(url) = self.revocation_url() else {
            return Ok(());
        };
        let url = match tenant {
            Some(t) => url.replace("{tenant}", t),
            None => url,
        };
        let s = &self.settings;
        let mut form = format!(
            "token={}&token_type_hint={hint}",
            crate::inject::encode::encode(token.expose())
        );
        let mut req = ::http::Request::post(url).header(
            ::http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        );
        match (s.client_auth, &s.client_secret) {
            (ClientAuth::Basic, Some(secret)) => {
                use crate::http_util::{basic_credentials, BasicEncoding};
                // RFC 6749 §2.3.1: id and secret form-urlencoded before base64.
                let b =
                    basic_credentials(&s.client_id, secret.expose(), BasicEncoding::FormUrlencoded);
                req = req.header(::http::header::AUTHORIZATION, format!("Basic {b}"));
            }
            (_, secret) => {
                form.push_str(&format!(
                    "&client_id={}",
                    crate::inject::encode::encode(&s.client_id)
                ));
                if let (ClientAuth::Post, Some(secret)) = (s.client_auth, secret) {
                    form.push_str(&format!(
                        "&client_secret={}",
                        crate::inject::encode::encode(secret.expose())
                    ));
                }
                // JWT client authentication: addressed to the token endpoint unless configured.
                let token_url = self.token_url(tenant).map_err(|e| e.message)?;
                for (k, v) in self
                    .client_assertion_params(&token_url)
                    .map_err(|e| e.message)?
                {
                    form.push_str(&format!("&{k}={}", crate::inject::encode::encode(&v)));
                }
            }
        }
        let req = req.body(form.into_bytes()).map_err(|e| e.to_string())?;
        use oauth2::AsyncHttpClient;
        match self.http.call(req).await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("the revocation endpoint answered {}", r.status())),
            Err(e) => Err(e.to_string()),
        }
    }
}

pub fn to_fetched(r: IdpTokenResponse) -> Fetched {
    Fetched {
        access_token: AccessToken::new(r.access_token.into_secret()),
        token_type: match r.token_type {
            oauth2::basic::BasicTokenType::Extension(t) => t,
            _ => "Bearer".into(),
        },
        expires_in: r.expires_in,
        refresh_token: r.refresh_token.map(|t| RefreshToken::new(t.into_secret())),
        id_token: r.id_token,
        scope: r.scope_raw,
        extra: r.extra,
        refresh_token_refused: false,
        entered: vec![],
    }
}

/// Keeps an IdP-supplied text printable and short.
pub(crate) fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// A transport failure of a request to the IdP (`what` failed: …) as a [`TokenError`]: slow,
/// unreachable and refused stay apart.
pub(crate) fn http_error(h: &IdpHttpError, what: &str) -> TokenError {
    let kind = match h {
        IdpHttpError::Timeout(_) => TokenErrorKind::Timeout,
        IdpHttpError::Dns(_) => TokenErrorKind::Dns,
        IdpHttpError::Connect(_) | IdpHttpError::Tls(_) | IdpHttpError::Server { .. } => {
            TokenErrorKind::Unavailable
        }
        IdpHttpError::Client(_) => TokenErrorKind::Rejected,
        IdpHttpError::Egress(_) => TokenErrorKind::Egress,
        IdpHttpError::EgressAuth(_) => TokenErrorKind::EgressAuth,
        IdpHttpError::Redirect(_) | IdpHttpError::TooLarge | IdpHttpError::Request(_) => {
            TokenErrorKind::InvalidResponse
        }
    };
    let mut t = TokenError::new(kind, format!("{what}: {h}"));
    if let IdpHttpError::Server { retry_after, .. } = h {
        t.retry_after = *retry_after;
    }
    t
}

/// Turns a failed token request into a [`TokenError`]. A refresh answered 400 or 401 without an
/// OAuth error body counts as `invalid_grant`: some IdPs answer a revoked or reused refresh token
/// that way, and the grant is as dead as with the code (any other request keeps `Rejected`).
fn map_error(
    e: RequestTokenError<IdpHttpError, BasicErrorResponse>,
    which: Request<'_>,
) -> TokenError {
    if let (
        RequestTokenError::Request(IdpHttpError::Client(status @ (400 | 401))),
        Request::Refresh(_),
    ) = (&e, which)
    {
        return TokenError::new(
            TokenErrorKind::GrantInvalid,
            format!(
                "the identity provider refused the refresh token: it answered {status} without an OAuth error (taken as invalid_grant)"
            ),
        );
    }
    match e {
        RequestTokenError::ServerResponse(err) => {
            let code = clean(err.error().as_ref());
            let kind = if code == "invalid_grant" {
                TokenErrorKind::GrantInvalid
            } else {
                TokenErrorKind::Rejected
            };
            let msg = match err.error_description() {
                Some(d) => format!(
                    "the identity provider refused the token request: {code} ({})",
                    clean(d)
                ),
                None => format!("the identity provider refused the token request: {code}"),
            };
            TokenError::new(kind, msg)
        }
        RequestTokenError::Request(h) => http_error(&h, "token request failed"),
        RequestTokenError::Parse(e, _body) => TokenError::new(
            TokenErrorKind::InvalidResponse,
            format!(
                "the identity provider's answer is not a token response: {}",
                clean(&e.inner().to_string())
            ),
        ),
        RequestTokenError::Other(s) => TokenError::new(
            TokenErrorKind::InvalidResponse,
            format!(
                "the identity provider's answer is not a token response: {}",
                clean(&s)
            ),
        ),
    }
}

impl TokenSource for OAuthSource {
    fn fetch<'a>(
        &'a self,
        key: &'a TokenKey,
        refresh_token: Option<RefreshToken>,
    ) -> BoxFuture<'a, Result<Fetched, TokenError>> {
        Box::pin(async move {
            // Context values are part of the key: each set of values has its own token.
            let dv = DynValues {
                tenant: key.tenant.as_deref(),
                pairs: key.context.as_deref().map_or(&[][..], |c| c.as_slice()),
            };
            let mut refused = false;
            if let Some(rt) = &refresh_token {
                match self
                    .request_with(&self.http, dv, Request::Refresh(rt))
                    .await
                {
                    Ok(r) => return Ok(to_fetched(r)),
                    // A machine grant can always start over with its own credentials.
                    Err(e) if e.kind == TokenErrorKind::GrantInvalid => {
                        tracing::debug!(profile = %self.profile, "refresh token refused; using the profile's grant");
                        refused = true;
                    }
                    Err(e) => return Err(e),
                }
            }
            let which = match key.user.as_deref() {
                Some(user) => Request::PrimaryFor(user),
                None => Request::Primary,
            };
            let r = self.request_with(&self.http, dv, which).await;
            if let Err(e) = &r {
                tracing::warn!(profile = %self.profile, kind = ?e.kind, "token request failed: {}", e.message);
            }
            r.map(|r| Fetched {
                refresh_token_refused: refused,
                ..to_fetched(r)
            })
        })
    }
}
