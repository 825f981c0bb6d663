//! Three-legged OAuth 1.0a (RFC 5849 §2): the sidecar's side of the provider's two token
//! endpoints. The auth listener drives the flow (`auth`), this module makes the requests:
//!
//! 1. [`ThreeLegged::request_token`]: temporary credentials (§2.1). A signed `POST` to
//!    `request_token_url` with `oauth_callback` (the auth listener's callback link); the answer must
//!    hold `oauth_token`, `oauth_token_secret` and `oauth_callback_confirmed=true`.
//! 2. The end user's browser goes to `authorization_url?oauth_token=…` ([`ThreeLegged::authorize_url`]).
//! 3. [`ThreeLegged::access_token`]: token credentials (§2.3). A `POST` to `access_token_url`
//!    signed with the request token and its secret, with `oauth_verifier`; the answer's
//!    `oauth_token` and `oauth_token_secret` become the user's grant ([`Fetched`]: the token as
//!    `access_token`, its secret among the encrypted `entered` values under
//!    [`TOKEN_SECRET`]).
//!
//! The protocol parameters go in the `Authorization` header (§3.5.1, which every provider
//! accepts), signed with the profile's method and realm, a fresh nonce and timestamp each time.
//! Failures are [`TokenError`]s: the provider's `oauth_problem` at most, never a token or secret.

use std::sync::Arc;
use std::time::Duration;

use http::header::{AUTHORIZATION, CONTENT_TYPE};

use super::http::{Exchange, IdpHttp, IdpHttpError};
use crate::config::{OAuth1Endpoints, Profile, SignMethod, Signing};
use crate::inject::encode::{encode, parse_form};
use crate::secret::{AccessToken, EnteredValue, OAuth1RequestSecret};
use crate::sign::oauth1::{fresh_nonce, Protocol};
use crate::token::{Fetched, TokenError, TokenErrorKind};

/// Where a user grant of a three-legged profile keeps the token secret (in `entered`, encrypted
/// with the rest of the grant; never a template variable).
pub const TOKEN_SECRET: &str = "oauth_token_secret";

/// How long a user's token credentials are kept: until deleted (OAuth 1.0a tokens do not expire
/// by themselves; the provider revokes them).
pub const GRANT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Temporary credentials (§2.1): the request token and its secret.
pub struct RequestToken {
    pub token: String,
    pub secret: OAuth1RequestSecret,
}

impl std::fmt::Debug for RequestToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestToken")
            .field("token", &"[redacted]")
            .field("secret", &self.secret)
            .finish()
    }
}

/// The client of one three-legged `oauth1` profile.
pub struct ThreeLegged {
    signing: Arc<Signing>,
    pub(crate) http: IdpHttp,
}

impl ThreeLegged {
    /// `None` unless the profile is `oauth1` with `per_user = true`.
    pub fn new(profile: &Profile) -> Result<Option<ThreeLegged>, String> {
        let crate::config::ProfileKind::Sign(signing) = &profile.kind else {
            return Ok(None);
        };
        let SignMethod::OAuth1 {
            three_legged: Some(e),
            ..
        } = &signing.method
        else {
            return Ok(None);
        };
        Ok(Some(ThreeLegged {
            signing: signing.clone(),
            http: IdpHttp::new(&e.tls, profile.connector.clone(), e.idp_timeout)?,
        }))
    }

    /// The signer, endpoints and realm (`new` admits only three-legged oauth1 profiles).
    fn parts(
        &self,
    ) -> Result<(&crate::sign::oauth1::Client, &OAuth1Endpoints, Option<&str>), TokenError> {
        match &self.signing.method {
            SignMethod::OAuth1 {
                client,
                realm,
                three_legged: Some(e),
                ..
            } => Ok((client, e, realm.as_deref())),
            _ => Err(TokenError::new(
                TokenErrorKind::InvalidResponse,
                "not a three-legged oauth1 profile",
            )),
        }
    }

    /// `authorization_url` with `oauth_token` added to its query (§2.2).
    pub fn authorize_url(&self, request_token: &str) -> Result<String, TokenError> {
        let (_, e, _) = self.parts()?;
        let url = &e.authorization_url;
        let sep = if url.contains('?') { '&' } else { '?' };
        Ok(format!("{url}{sep}oauth_token={}", encode(request_token)))
    }

    /// Step 1: temporary credentials, with `callback` as `oauth_callback`.
    pub async fn request_token(&self, callback: &str) -> Result<RequestToken, TokenError> {
        let (_, e, _) = self.parts()?;
        let nonce = fresh_nonce();
        let mut proto = Protocol::new(&nonce, crate::sign::unix_now());
        proto.callback = Some(callback);
        let answer = self
            .post(
                &e.request_token_url,
                &proto,
                "request token",
                "request_token_url",
            )
            .await
            .0?;
        let get = |k: &str| answer.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if get("oauth_callback_confirmed") != Some("true") {
            return Err(TokenError::new(
                TokenErrorKind::InvalidResponse,
                "the provider's request token answer has no oauth_callback_confirmed=true (request_token_url; an OAuth 1.0 provider, not 1.0a?)",
            ));
        }
        let (token, secret) = credentials(&answer, "request token", "request_token_url")?;
        Ok(RequestToken {
            token,
            secret: OAuth1RequestSecret::new(secret),
        })
    }

    /// Step 3: the user's token credentials for a request token and the callback's verifier.
    pub async fn access_token(
        &self,
        request_token: &str,
        request_secret: &OAuth1RequestSecret,
        verifier: &str,
    ) -> Result<Fetched, TokenError> {
        self.access_token_recorded(request_token, request_secret, verifier)
            .await
            .0
    }

    /// [`ThreeLegged::access_token`], with the provider's answer as it came (for a Test's report).
    pub async fn access_token_recorded(
        &self,
        request_token: &str,
        request_secret: &OAuth1RequestSecret,
        verifier: &str,
    ) -> (Result<Fetched, TokenError>, Option<Exchange>) {
        let e = match self.parts() {
            Ok((_, e, _)) => e,
            Err(err) => return (Err(err), None),
        };
        let nonce = fresh_nonce();
        let mut proto = Protocol::new(&nonce, crate::sign::unix_now())
            .with_token(request_token, request_secret.expose());
        proto.verifier = Some(verifier);
        let (answer, exchange) = self
            .post(
                &e.access_token_url,
                &proto,
                "access token",
                "access_token_url",
            )
            .await;
        (answer.and_then(token_credentials), exchange)
    }

    /// The endpoint of step 3 (for a Test's report).
    pub fn access_token_url(&self) -> Option<&str> {
        self.parts()
            .ok()
            .map(|(_, e, _)| e.access_token_url.as_str())
    }

    /// A signed, bodiless `POST` to one of the token endpoints (the profile's key `key`); the
    /// answer's form parameters, and the exchange as it came.
    async fn post(
        &self,
        url: &str,
        proto: &Protocol<'_>,
        what: &str,
        key: &str,
    ) -> (Result<Vec<(String, String)>, TokenError>, Option<Exchange>) {
        let (http, exchange) = self.http.capturing();
        let answer = self
            .post_over(&http, &exchange, url, proto, what, key)
            .await;
        let exchange = exchange.lock().ok().and_then(|mut e| e.take());
        (answer, exchange)
    }

    async fn post_over(
        &self,
        http: &IdpHttp,
        exchange: &std::sync::Mutex<Option<Exchange>>,
        url: &str,
        proto: &Protocol<'_>,
        what: &str,
        key: &str,
    ) -> Result<Vec<(String, String)>, TokenError> {
        let (client, _, realm) = self.parts()?;
        let invalid = || {
            TokenError::new(
                TokenErrorKind::InvalidResponse,
                format!("the {what} URL ({key}) is invalid"),
            )
        };
        let uri: http::Uri = url.parse().map_err(|_| invalid())?;
        let authority = uri.authority().ok_or_else(invalid)?.as_str().to_string();
        let headers: &[(&str, &[u8])] = crate::sign::FORM_HEADERS;
        let request = crate::sign::Request {
            method: "POST",
            scheme: uri.scheme_str().unwrap_or("https"),
            authority: &authority,
            path: uri.path(),
            query: uri.query(),
            headers,
            body: b"",
        };
        let signed = client.sign(&request, proto).map_err(|e| {
            TokenError::new(
                TokenErrorKind::InvalidResponse,
                format!("signing the {what} request ({key}) failed: {e}"),
            )
        })?;
        let req = http::Request::post(uri)
            .header(AUTHORIZATION, signed.authorization(realm))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Vec::new())
            .map_err(|_| invalid())?;
        use oauth2::AsyncHttpClient;
        let what_failed = format!("the {what} request ({key}) failed");
        let resp = match http.call(req).await {
            Ok(r) => r,
            Err(IdpHttpError::Client(status)) => {
                // The provider's reason, when it gives one in the usual form (`oauth_problem`).
                let body = exchange
                    .lock()
                    .ok()
                    .and_then(|e| e.as_ref().map(|e| e.body.clone()))
                    .unwrap_or_default();
                return Err(refused(what, key, status, &body));
            }
            Err(e) => return Err(super::http_error(&e, &what_failed)),
        };
        if resp.status() != http::StatusCode::OK {
            return Err(refused(what, key, resp.status().as_u16(), resp.body()));
        }
        Ok(parse_form(resp.body()))
    }
}

/// The user's grant from the answer of step 3.
fn token_credentials(answer: Vec<(String, String)>) -> Result<Fetched, TokenError> {
    let (token, secret) = credentials(&answer, "access token", "access_token_url")?;
    Ok(Fetched {
        access_token: AccessToken::new(token),
        token_type: "OAuth".into(),
        expires_in: Some(GRANT_LIFETIME),
        refresh_token: None,
        id_token: None,
        scope: None,
        // Other members (a user id, a screen name) for `{{token.<name>}}`.
        extra: answer
            .into_iter()
            .filter(|(k, _)| k != "oauth_token" && k != "oauth_token_secret")
            .collect(),
        refresh_token_refused: false,
        entered: vec![(TOKEN_SECRET.to_string(), EnteredValue::new(secret))],
    })
}

/// The provider refused a token request: its status and `oauth_problem`, never its body.
fn refused(what: &str, key: &str, status: u16, body: &[u8]) -> TokenError {
    let form = parse_form(body);
    let problem = form
        .iter()
        .find(|(k, _)| k == "oauth_problem")
        .map(|(_, v)| format!(" (oauth_problem={})", super::clean(v)))
        .unwrap_or_default();
    TokenError::new(
        TokenErrorKind::Rejected,
        format!("the provider refused the {what} request ({key}): it answered {status}{problem}"),
    )
}

/// `oauth_token` and `oauth_token_secret` of an answer (§2.1, §2.3), both required.
fn credentials(
    answer: &[(String, String)],
    what: &str,
    key: &str,
) -> Result<(String, String), TokenError> {
    let get = |k: &str| {
        answer
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    match (get("oauth_token"), get("oauth_token_secret")) {
        (Some(t), Some(s)) if !t.chars().any(char::is_control) => Ok((t, s)),
        _ => Err(TokenError::new(
            TokenErrorKind::InvalidResponse,
            format!(
                "the provider's {what} answer ({key}) has no oauth_token and oauth_token_secret"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_key_and_the_oauth_problem_never_the_body() {
        let e = refused(
            "access token",
            "access_token_url",
            401,
            b"oauth_problem=token_rejected&oauth_token_secret=leak",
        );
        assert_eq!(e.kind, TokenErrorKind::Rejected);
        assert_eq!(
            e.message,
            "the provider refused the access token request (access_token_url): it answered 401 (oauth_problem=token_rejected)"
        );
        let e = refused(
            "request token",
            "request_token_url",
            400,
            b"<html>secret</html>",
        );
        assert!(!e.message.contains("secret"), "{}", e.message);
    }

    #[test]
    fn both_token_and_secret_are_required() {
        let pairs = |s: &str| parse_form(s.as_bytes());
        assert!(credentials(&pairs("oauth_token=t&oauth_token_secret=s"), "x", "k").is_ok());
        for bad in [
            "oauth_token=t",
            "oauth_token_secret=s",
            "oauth_token=&oauth_token_secret=s",
            "oauth_token=a%0Ab&oauth_token_secret=s",
            "",
        ] {
            let e = credentials(&pairs(bad), "access token", "access_token_url").unwrap_err();
            assert_eq!(e.kind, TokenErrorKind::InvalidResponse, "{bad}");
            assert!(e.message.contains("access_token_url"));
        }
    }

    #[test]
    fn the_authorization_url_keeps_its_own_query() {
        let config = crate::config::Config::from_str_with_env(
            r#"
[auth]
listen = "127.0.0.1:0"
public_url = "https://auth.example"

[[routes]]
prefix = "/a/"
upstream = "https://api.example/"
profiles = ["p"]

[profiles.p]
type = "oauth1"
per_user = true
consumer_key = "ck"
consumer_secret = "cs"
request_token_url = "https://idp.example/rt"
authorization_url = "https://idp.example/authorize?perms=read"
access_token_url = "https://idp.example/at"
"#,
            &crate::config::Env::from_pairs([("A", "b")]),
        )
        .unwrap();
        let t = ThreeLegged::new(config.profile("p").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(
            t.authorize_url("a b/c").unwrap(),
            "https://idp.example/authorize?perms=read&oauth_token=a%20b%2Fc"
        );
    }
}
