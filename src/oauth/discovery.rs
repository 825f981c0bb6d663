//! Discovery (RFC 8414, OpenID Connect Discovery 1.0): a profile with `issuer` and without
//! `authorization_url` or `token_url` reads the provider's metadata document, and keeps it for the
//! life of its config.
//!
//! - Where: `{issuer}/.well-known/openid-configuration` (OpenID Connect Discovery §4: appended to
//!   the issuer, path and all), else `https://host/.well-known/oauth-authorization-server{path}`
//!   (RFC 8414 §3.1: inserted between the host and the issuer's path).
//! - What is checked: the document's `issuer` equals the configured one exactly (RFC 8414 §3.3,
//!   OpenID Connect Discovery §4.3); endpoints are absolute URLs (https when the issuer is https);
//!   with PKCE on, `code_challenge_methods_supported`, when present, must list `S256` (never
//!   downgraded to `plain`); the endpoints the profile leaves out, and `jwks_uri` when the
//!   `id_token` is to be checked, must be there ([`Needs`]). The document is read through the profile's TLS settings and
//!   connector, within its `idp_timeout` and [`crate::oauth::http::MAX_RESPONSE_BYTES`].
//! - When: in the background from the moment a config is loaded ([`Discovered::get_or_start`]),
//!   retried with backoff ([`FIRST_RETRY`] doubling to [`MAX_RETRY`]) until it succeeds; again
//!   on every reload ([`refresh_all`]). Until a document is held the profile is not ready: its
//!   calls get `idp_unavailable` without any request to the provider, and `/readyz` names it.
//!   A document that was held stays in use when a later read fails.
//! - The provider's JWKS (`jwks_uri`) is read when an `id_token` is first checked, cached, and read
//!   again when a token names an unknown `kid` (at most once per [`JWKS_MIN_REFRESH`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use oauth2::AsyncHttpClient;
use serde_json::Value;
use tokio::sync::Notify;

use super::http::{IdpHttp, IdpHttpError};
use crate::sign::verify::PublicKeys;

/// First wait after a failed read of the document.
pub const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Longest wait between two reads of a document that cannot be read.
pub const MAX_RETRY: Duration = Duration::from_secs(30);
/// A JWKS is read again for an unknown `kid` at most this often.
pub const JWKS_MIN_REFRESH: Duration = Duration::from_secs(30);

/// What a provider's metadata document says (the members the sidecar uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub issuer: String,
    /// Read from `openid-configuration` (an OpenID provider).
    pub openid: bool,
    /// Where it was read.
    pub url: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub revocation_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
    /// `code_challenge_methods_supported`; `None` when the document does not say.
    pub code_challenge_methods: Option<Vec<String>>,
    /// `authorization_response_iss_parameter_supported` (RFC 9207 §3).
    pub iss_parameter_supported: bool,
}

impl Metadata {
    /// One line per member, for `check`.
    pub fn describe(&self) -> Vec<String> {
        let mut out = vec![format!(
            "{} document {}",
            if self.openid {
                "OpenID Connect"
            } else {
                "RFC 8414"
            },
            self.url
        )];
        for (k, v) in [
            ("authorization_endpoint", &self.authorization_endpoint),
            ("token_endpoint", &self.token_endpoint),
            ("revocation_endpoint", &self.revocation_endpoint),
            ("jwks_uri", &self.jwks_uri),
        ] {
            if let Some(v) = v {
                out.push(format!("{k} = {v}"));
            }
        }
        if let Some(m) = &self.code_challenge_methods {
            out.push(format!(
                "code_challenge_methods_supported = {}",
                m.join(", ")
            ));
        }
        out.push(format!(
            "authorization_response_iss_parameter_supported = {}",
            self.iss_parameter_supported
        ));
        out
    }
}

/// The document URLs for `issuer`, in the order they are tried, each with whether it is the
/// OpenID Connect one.
pub fn well_known_urls(issuer: &str) -> Vec<(String, bool)> {
    let trimmed = issuer.trim_end_matches('/');
    let openid = format!("{trimmed}/.well-known/openid-configuration");
    // RFC 8414 §3.1: the well-known segment goes between the host and the path.
    let after_scheme = trimmed.find("://").map_or(0, |i| i + 3);
    let path_at = trimmed[after_scheme..]
        .find('/')
        .map_or(trimmed.len(), |i| after_scheme + i);
    let oauth = format!(
        "{}/.well-known/oauth-authorization-server{}",
        &trimmed[..path_at],
        &trimmed[path_at..]
    );
    vec![(openid, true), (oauth, false)]
}

/// Reads and checks one document's JSON.
pub fn parse(body: &[u8], url: &str, openid: bool, issuer: &str) -> Result<Metadata, String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| format!("{url}: the discovery document is not JSON"))?;
    let Value::Object(m) = v else {
        return Err(format!(
            "{url}: the discovery document is not a JSON object"
        ));
    };
    let got = m.get("issuer").and_then(Value::as_str).unwrap_or("");
    if got != issuer {
        return Err(format!(
            "{url}: issuer mismatch: the document says {:?}, the profile's issuer is {issuer:?} (RFC 8414 §3.3)",
            crate::oauth::clean(got)
        ));
    }
    let https_only = issuer.starts_with("https://");
    let endpoint = |name: &str| -> Result<Option<String>, String> {
        match m.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                let scheme_ok =
                    s.starts_with("https://") || (!https_only && s.starts_with("http://"));
                if !scheme_ok || s.parse::<http::Uri>().is_err() {
                    return Err(format!(
                        "{url}: {name} is not an absolute {} URL",
                        if https_only { "https://" } else { "http(s)://" }
                    ));
                }
                Ok(Some(s.clone()))
            }
            Some(_) => Err(format!("{url}: {name} is not a string")),
        }
    };
    let methods = match m.get("code_challenge_methods_supported") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .filter_map(Value::as_str)
                .map(crate::oauth::clean)
                .collect(),
        ),
        Some(_) => {
            return Err(format!(
                "{url}: code_challenge_methods_supported is not an array"
            ))
        }
    };
    Ok(Metadata {
        issuer: issuer.to_string(),
        openid,
        url: url.to_string(),
        authorization_endpoint: endpoint("authorization_endpoint")?,
        token_endpoint: endpoint("token_endpoint")?,
        revocation_endpoint: endpoint("revocation_endpoint")?,
        jwks_uri: endpoint("jwks_uri")?,
        code_challenge_methods: methods,
        iss_parameter_supported: m
            .get("authorization_response_iss_parameter_supported")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

async fn get_json(http: &IdpHttp, url: &str) -> Result<Vec<u8>, IdpHttpError> {
    let req = http::Request::get(url)
        .header(http::header::ACCEPT, "application/json")
        .body(Vec::new())
        .map_err(|e| IdpHttpError::Request(e.to_string()))?;
    let resp = http.call(req).await?;
    if resp.status() != http::StatusCode::OK {
        return Err(IdpHttpError::Client(resp.status().as_u16()));
    }
    Ok(resp.into_body())
}

/// Reads `issuer`'s metadata: the OpenID document, else the RFC 8414 one (when the first is not
/// there: a 4xx). Transport failures and a document that fails its checks end the search.
pub async fn fetch(http: &IdpHttp, issuer: &str) -> Result<Metadata, String> {
    let mut missing = Vec::new();
    for (url, openid) in well_known_urls(issuer) {
        match get_json(http, &url).await {
            Ok(body) => return parse(&body, &url, openid, issuer),
            Err(IdpHttpError::Client(status)) => missing.push(format!("{url} answered {status}")),
            Err(e) => return Err(format!("{url}: {e}")),
        }
    }
    Err(format!("no discovery document: {}", missing.join("; ")))
}

/// What a profile needs from its document (a document without it leaves the profile not ready).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Needs {
    /// PKCE S256 is sent: a `code_challenge_methods_supported` without it is refused.
    pub pkce: bool,
    /// The profile has no `authorization_url` of its own.
    pub authorization_endpoint: bool,
    /// The profile has no `token_url` of its own.
    pub token_endpoint: bool,
    /// The scope asks for `openid`: the `id_token` is checked with the keys at `jwks_uri`.
    pub openid: bool,
    /// The profile gives no scope: an OpenID document makes it `openid` (and needs `jwks_uri`).
    pub default_scope: bool,
}

impl Needs {
    /// What a profile's settings need from its issuer's document.
    pub fn of(s: &crate::config::OAuthSettings) -> Needs {
        let code = match &s.grant {
            crate::config::Grant::AuthorizationCode(c) => Some(c),
            _ => None,
        };
        Needs {
            pkce: code.is_some_and(|c| c.pkce),
            authorization_endpoint: code.is_some_and(|c| c.authorization_url.is_empty()),
            token_endpoint: s.token_url.is_empty(),
            // The id_token is checked on a sign-in only.
            openid: code.is_some() && super::id_token::wants_openid(&s.scope),
            default_scope: code.is_some() && s.scope.is_empty(),
        }
    }

    /// Whether `m` gives the profile what it needs.
    pub fn check(&self, m: &Metadata) -> Result<(), String> {
        if self.pkce {
            if let Some(methods) = &m.code_challenge_methods {
                if !methods.iter().any(|x| x == "S256") {
                    return Err(format!(
                        "{}: code_challenge_methods_supported does not list S256 (it lists {}); the sidecar never falls back to plain. Set pkce = false to sign in without PKCE",
                        m.url,
                        methods.join(", ")
                    ));
                }
            }
        }
        for (needed, have, name, key) in [
            (
                self.authorization_endpoint,
                m.authorization_endpoint.is_some(),
                "authorization_endpoint",
                "authorization_url",
            ),
            (
                self.token_endpoint,
                m.token_endpoint.is_some(),
                "token_endpoint",
                "token_url",
            ),
        ] {
            if needed && !have {
                return Err(format!(
                    "{}: the document names no {name}, and the profile has no {key}",
                    m.url
                ));
            }
        }
        if (self.openid || (self.default_scope && m.openid)) && m.jwks_uri.is_none() {
            return Err(format!(
                "{}: the document names no jwks_uri, so the id_token cannot be checked",
                m.url
            ));
        }
        Ok(())
    }
}

/// The provider's keys as last read, and when an unknown `kid` last made them be read again.
#[derive(Default)]
struct Jwks {
    keys: Option<PublicKeys>,
    refreshed_for_kid: Option<tokio::time::Instant>,
}

/// What a [`Discovered`] entry is shared under: one per profile, issuer and connection settings,
/// across the snapshots of one config (one per proxy worker) and across reloads that keep them.
pub type Key = String;

/// One profile's discovery, shared by every snapshot that uses it; the background task that reads
/// the document holds only a weak reference and ends when the last snapshot drops it.
pub struct Discovered {
    pub profile: String,
    pub issuer: String,
    http: IdpHttp,
    /// What the profile needs from the document.
    needs: Needs,
    meta: ArcSwapOption<Metadata>,
    /// Why the document is not held (or why the last read failed).
    error: Mutex<Option<String>>,
    /// Wakes the task: read again now (reload).
    wake: Arc<Notify>,
    /// Told after every read.
    read: Notify,
    attempts: std::sync::atomic::AtomicU64,
    jwks: tokio::sync::Mutex<Jwks>,
    /// The background reader was started.
    task: std::sync::atomic::AtomicBool,
}

fn registry() -> &'static Mutex<HashMap<Key, Weak<Discovered>>> {
    static R: OnceLock<Mutex<HashMap<Key, Weak<Discovered>>>> = OnceLock::new();
    R.get_or_init(Mutex::default)
}

impl std::fmt::Debug for Discovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovered")
            .field("profile", &self.profile)
            .field("issuer", &self.issuer)
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

impl Discovered {
    /// The live entry under `key`, or a new one whose document is read in the background (when a
    /// tokio runtime is running; else it stays unread).
    pub fn get_or_start(
        key: Key,
        profile: &str,
        issuer: &str,
        needs: Needs,
        http: IdpHttp,
    ) -> Arc<Discovered> {
        let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
        reg.retain(|_, w| w.strong_count() > 0);
        if let Some(d) = reg.get(&key).and_then(Weak::upgrade) {
            d.ensure_task();
            return d;
        }
        let d = Arc::new(Discovered {
            profile: profile.to_string(),
            issuer: issuer.to_string(),
            http,
            needs,
            meta: ArcSwapOption::empty(),
            error: Mutex::new(Some("the discovery document has not been read yet".into())),
            wake: Arc::new(Notify::new()),
            read: Notify::new(),
            attempts: Default::default(),
            jwks: tokio::sync::Mutex::new(Jwks::default()),
            task: std::sync::atomic::AtomicBool::new(false),
        });
        reg.insert(key, Arc::downgrade(&d));
        d.ensure_task();
        d
    }

    /// Starts the background reader unless it runs (it needs a tokio runtime: an entry made
    /// outside one gets its reader when a snapshot is next built inside one).
    fn ensure_task(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.task.swap(true, Ordering::AcqRel) {
            rt.spawn(run(Arc::downgrade(self), self.wake.clone()));
        }
    }

    /// The document, once read.
    pub fn metadata(&self) -> Option<Arc<Metadata>> {
        self.meta.load_full()
    }

    pub fn is_ready(&self) -> bool {
        self.meta.load().is_some()
    }

    /// Why the profile is not ready (or the last read's failure).
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until at least one read has finished (success or failure), at most `within`.
    pub async fn first_read(&self, within: Duration) {
        let wait = async {
            loop {
                let notified = self.read.notified();
                if self.attempts.load(std::sync::atomic::Ordering::Acquire) > 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(within, wait).await;
    }

    /// One read of the document, checked against the profile.
    async fn read_once(&self) -> Result<Metadata, String> {
        let m = fetch(&self.http, &self.issuer).await?;
        self.needs.check(&m)?;
        Ok(m)
    }

    fn record(&self, r: Result<Metadata, String>) -> bool {
        let ok = r.is_ok();
        let mut err = self.error.lock().unwrap_or_else(|p| p.into_inner());
        match r {
            Ok(m) => {
                if err.is_some() {
                    tracing::info!(profile = %self.profile, url = %m.url, "discovery document read");
                }
                *err = None;
                self.meta.store(Some(Arc::new(m)));
            }
            Err(e) => {
                if err.as_deref() != Some(e.as_str()) {
                    tracing::warn!(profile = %self.profile, ready = self.is_ready(), "discovery failed: {e}");
                }
                *err = Some(e);
            }
        }
        drop(err);
        self.attempts
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        self.read.notify_waiters();
        ok
    }

    /// The provider's public keys: cached; read again when `kid` is not among them (rate-limited).
    pub async fn keys(&self, kid: Option<&str>) -> Result<PublicKeys, String> {
        let Some(uri) = self.metadata().and_then(|m| m.jwks_uri.clone()) else {
            return Err("the provider's discovery document names no jwks_uri".into());
        };
        let mut cache = self.jwks.lock().await;
        if let Some(keys) = &cache.keys {
            let known = kid.is_none_or(|k| keys.0.iter().any(|x| x.kid.as_deref() == Some(k)));
            // An unknown kid (a key rotation) reads the set again, but not more often than
            // JWKS_MIN_REFRESH: tokens naming made-up kids cannot make the sidecar hammer the
            // provider.
            let limited = cache
                .refreshed_for_kid
                .is_some_and(|at| at.elapsed() < JWKS_MIN_REFRESH);
            if known || limited {
                return Ok(keys.clone());
            }
            cache.refreshed_for_kid = Some(tokio::time::Instant::now());
        }
        let body = get_json(&self.http, &uri)
            .await
            .map_err(|e| format!("{uri}: {e}"))?;
        let v: Value = serde_json::from_slice(&body).map_err(|_| format!("{uri}: not JSON"))?;
        let keys = PublicKeys::from_jwks(&v).map_err(|e| format!("{uri}: {e}"))?;
        cache.keys = Some(keys.clone());
        Ok(keys)
    }
}

/// The background reader of one entry: reads until it has the document, backing off from
/// [`FIRST_RETRY`] to [`MAX_RETRY`]; then waits for a reload's wake-up. Ends when the entry is
/// gone.
async fn run(entry: Weak<Discovered>, wake: Arc<Notify>) {
    let mut delay = FIRST_RETRY;
    loop {
        let Some(d) = entry.upgrade() else {
            return;
        };
        let r = d.read_once().await;
        let ok = d.record(r);
        drop(d);
        let wait = if ok {
            delay = FIRST_RETRY;
            // Only to notice that the entry is gone.
            Duration::from_secs(60)
        } else {
            let w = delay;
            delay = (delay * 2).min(MAX_RETRY);
            w
        };
        let woken = tokio::select! {
            _ = wake.notified() => true,
            _ = tokio::time::sleep(wait) => false,
        };
        if ok && !woken {
            // Not woken by a reload: only check that the entry is still used.
            loop {
                if entry.strong_count() == 0 {
                    return;
                }
                tokio::select! {
                    _ = wake.notified() => break,
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
            }
        }
    }
}

/// Reads every live entry's document again (a reload).
pub fn refresh_all() {
    let reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    for d in reg.values().filter_map(Weak::upgrade) {
        d.wake.notify_one();
    }
}

/// Reads each profile's documents now, for `check` (in parallel; each within its `idp_timeout`).
pub async fn check_all(
    entries: Vec<(String, String, Needs, IdpHttp)>,
) -> Vec<(String, Result<Metadata, String>)> {
    let tasks = entries
        .into_iter()
        .map(|(profile, issuer, needs, http)| async move {
            let d = Discovered {
                profile: profile.clone(),
                issuer,
                http,
                needs,
                meta: ArcSwapOption::empty(),
                error: Mutex::new(None),
                wake: Arc::new(Notify::new()),
                read: Notify::new(),
                attempts: Default::default(),
                jwks: tokio::sync::Mutex::new(Jwks::default()),
                task: std::sync::atomic::AtomicBool::new(true),
            };
            (profile, d.read_once().await)
        });
    futures_util::future::join_all(tasks).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_urls_append_for_openid_and_insert_for_rfc8414() {
        assert_eq!(
            well_known_urls("https://idp.example.com"),
            vec![
                (
                    "https://idp.example.com/.well-known/openid-configuration".to_string(),
                    true
                ),
                (
                    "https://idp.example.com/.well-known/oauth-authorization-server".to_string(),
                    false
                ),
            ]
        );
        assert_eq!(
            well_known_urls("https://idp.example.com/tenant1/"),
            vec![
                (
                    "https://idp.example.com/tenant1/.well-known/openid-configuration".to_string(),
                    true
                ),
                (
                    "https://idp.example.com/.well-known/oauth-authorization-server/tenant1"
                        .to_string(),
                    false
                ),
            ]
        );
    }

    #[test]
    fn a_document_must_name_the_configured_issuer_exactly() {
        let doc = br#"{"issuer":"https://idp.example.com/","token_endpoint":"https://idp.example.com/t"}"#;
        let e = parse(doc, "u", true, "https://idp.example.com").unwrap_err();
        assert!(e.contains("issuer mismatch"), "{e}");
        let m = parse(doc, "u", true, "https://idp.example.com/").unwrap();
        assert_eq!(
            m.token_endpoint.as_deref(),
            Some("https://idp.example.com/t")
        );
        assert!(!m.iss_parameter_supported);
    }

    #[test]
    fn a_document_without_what_the_profile_needs_is_refused() {
        let doc = br#"{"issuer":"https://i","authorization_endpoint":"https://i/a","code_challenge_methods_supported":["plain"]}"#;
        let m = parse(doc, "u", true, "https://i").unwrap();
        let pkce = Needs {
            pkce: true,
            ..Needs::default()
        };
        assert!(pkce.check(&m).unwrap_err().contains("S256"));
        let token = Needs {
            token_endpoint: true,
            ..Needs::default()
        };
        assert!(token.check(&m).unwrap_err().contains("token_endpoint"));
        let default_scope = Needs {
            default_scope: true,
            ..Needs::default()
        };
        assert!(default_scope.check(&m).unwrap_err().contains("jwks_uri"));
        // The RFC 8414 document: no openid default, so no keys needed.
        let m = parse(doc, "u", false, "https://i").unwrap();
        assert!(default_scope.check(&m).is_ok());
        assert!(Needs::default().check(&m).is_ok());
    }

    #[test]
    fn an_https_issuer_cannot_send_tokens_over_plain_http() {
        let doc =
            br#"{"issuer":"https://idp.example.com","token_endpoint":"http://idp.example.com/t"}"#;
        let e = parse(doc, "u", false, "https://idp.example.com").unwrap_err();
        assert!(e.contains("token_endpoint"), "{e}");
    }
}
