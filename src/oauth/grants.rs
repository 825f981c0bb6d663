//! End users' grants (authorization-code profiles): kept in the store, refreshed through the token
//! cache's single flight.
//!
//! A grant record holds the user's latest tokens (under [`Name::grant`]). On a cold
//! cache the access token in it is used while valid; otherwise its refresh token is. A rotated
//! refresh token replaces the old one in one write before the new access token is handed out; an
//! answer without a refresh token keeps the old one; `invalid_grant` deletes the grant, so the next
//! call gets `authorization_required`; other IdP errors keep it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{to_fetched, OAuthSource, Request};
use crate::secret::{self, EnteredValue, OAuth1RequestSecret, PkceVerifier, RefreshToken};
use crate::store::{Name, Store};
use crate::token::{
    decode_record, encode_grant, Fetched, TokenError, TokenErrorKind, TokenKey, TokenSource,
};

fn store_error(e: impl std::fmt::Display) -> TokenError {
    TokenError::new(
        TokenErrorKind::StoreUnavailable,
        format!("the token store is unavailable: {e}"),
    )
}

/// Saves a user's grant (blocking: call from `spawn_blocking`).
pub fn save_grant(store: &Store, name: &Name, f: &Fetched) -> Result<(), TokenError> {
    let lifetime = f.expires_in.unwrap_or(crate::token::DEFAULT_TOKEN_LIFETIME);
    let (bytes, _) = encode_grant(f, lifetime);
    // No store expiry: the refresh token usually outlives the access token.
    store.put(name, &bytes, None).map_err(store_error)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, TokenError> {
    tokio::task::spawn_blocking(f).await.map_err(store_error)
}

/// How long a replica holds the fleet-wide refresh lock without renewing it; renewed every third of
/// it while the IdP call runs, so only a holder that died or stalled loses it.
pub const REFRESH_LEASE: Duration = Duration::from_secs(3);
/// How often a replica waiting for another's refresh looks at the grant again.
const REFRESH_POLL: Duration = Duration::from_millis(50);

/// Token source for an authorization-code profile.
pub struct UserGrants {
    /// The IdP (`None` for per-user basic and api_key: their records never refresh).
    pub source: Option<Arc<OAuthSource>>,
    pub store: Arc<Store>,
    /// Grants refreshed at the IdP whose store write failed: used instead of the store's copy and
    /// written as soon as the store answers again (a rotated refresh token is never dropped).
    pub pending: Arc<Mutex<HashMap<Name, (Fetched, std::time::Instant)>>>,
}

impl UserGrants {
    pub fn new(source: Option<Arc<OAuthSource>>, store: Arc<Store>) -> UserGrants {
        UserGrants {
            source,
            store,
            pending: Arc::default(),
        }
    }

    /// A grant waiting to be written, with the time its access token has left.
    fn pending(&self, name: &Name) -> Option<(Fetched, Duration)> {
        let p = self.pending.lock().ok()?;
        let (f, at) = p.get(name)?;
        let left = f
            .expires_in
            .unwrap_or_default()
            .saturating_sub(at.elapsed());
        Some((f.clone(), left))
    }

    /// Keeps `f` for a later write and starts the writer if it is not running.
    fn keep_for_later(&self, name: &Name, f: &Fetched) {
        let Ok(mut p) = self.pending.lock() else {
            return;
        };
        let first = p.is_empty();
        p.insert(name.clone(), (f.clone(), std::time::Instant::now()));
        drop(p);
        tracing::warn!("token store write failed: the refreshed grant is kept in memory and written when the store is back");
        if first {
            let (pending, store) = (self.pending.clone(), self.store.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let batch: Vec<(Name, Fetched)> = match pending.lock() {
                        Ok(p) => p.iter().map(|(k, (f, _))| (k.clone(), f.clone())).collect(),
                        Err(_) => return,
                    };
                    if batch.is_empty() {
                        return;
                    }
                    let store = store.clone();
                    let written = tokio::task::spawn_blocking(move || {
                        batch
                            .into_iter()
                            .filter(|(n, f)| save_grant(&store, n, f).is_ok())
                            .map(|(n, _)| n)
                            .collect::<Vec<_>>()
                    })
                    .await
                    .unwrap_or_default();
                    if let Ok(mut p) = pending.lock() {
                        for n in written {
                            p.remove(&n);
                        }
                        if p.is_empty() {
                            tracing::info!("pending grants written to the token store");
                            return;
                        }
                    }
                }
            });
        }
    }

    async fn read(&self, name: &Name) -> Result<Option<(Fetched, Duration)>, TokenError> {
        if let Some(p) = self.pending(name) {
            return Ok(Some(p));
        }
        let (store, n) = (self.store.clone(), name.clone());
        let record = blocking(move || store.get(&n))
            .await?
            .map_err(store_error)?;
        Ok(record.as_deref().and_then(decode_record))
    }

    /// Saves a refreshed grant: fenced by the lock when shared; kept for later when the store fails.
    async fn save(&self, name: &Name, f: &Fetched, lock: Option<(&Name, &str)>) {
        let (store, n, g) = (self.store.clone(), name.clone(), f.clone());
        let lock = lock.map(|(l, t)| (l.clone(), t.to_string()));
        let saved = blocking(move || match (&lock, store.shared()) {
            (Some((l, t)), Some(r)) => {
                let lifetime = g.expires_in.unwrap_or(crate::token::DEFAULT_TOKEN_LIFETIME);
                let (bytes, _) = encode_grant(&g, lifetime);
                r.put_fenced(l, t, &n, &crate::store::frame_plain(&bytes))
                    .map(|wrote| {
                        if !wrote {
                            tracing::warn!("refresh lock lost before the write: another replica holds it; not overwriting");
                        }
                    })
                    .map_err(store_error)
            }
            _ => save_grant(&store, &n, &g),
        })
        .await;
        if !matches!(saved, Ok(Ok(()))) {
            self.keep_for_later(name, f);
        }
    }

    /// Refresh at the IdP with the grant's refresh token; `None` source: nothing to refresh.
    async fn refresh(
        &self,
        key: &TokenKey,
        name: &Name,
        tenant: Option<&str>,
        saved: Fetched,
        lock: Option<(&Name, &str)>,
    ) -> Result<Fetched, TokenError> {
        let (Some(rt), Some(source)) = (saved.refresh_token.clone(), &self.source) else {
            return Err(authorization_required());
        };
        // The values the sign-in used (kept with the grant).
        let pairs = dyn_pairs(&saved.entered);
        let dv = crate::oauth::DynValues {
            tenant,
            pairs: &pairs,
        };
        let result = source
            .request_with(&source.http, dv, Request::Refresh(&rt))
            .await;
        if let Err(e) = &result {
            // One line per failed refresh, for the operator: whose grant, and why (the message
            // never holds a token; at most the IdP's OAuth error code and description).
            tracing::warn!(
                profile = %key.profile,
                user = %key.user.as_deref().unwrap_or("-"),
                tenant = %tenant.unwrap_or("-"),
                reason = %e.message,
                "an end user's token refresh failed{}",
                if e.kind == TokenErrorKind::GrantInvalid {
                    ": the grant is deleted and the user must sign in again"
                } else {
                    "; the grant is kept"
                }
            );
        }
        match result {
            Ok(r) => {
                let mut f = to_fetched(r);
                if f.refresh_token.is_none() {
                    f.refresh_token = Some(rt);
                }
                f.entered = saved.entered;
                self.save(name, &f, lock).await;
                Ok(f)
            }
            Err(e) if e.kind == TokenErrorKind::GrantInvalid => {
                if let Ok(mut p) = self.pending.lock() {
                    p.remove(name);
                }
                let (store, n) = (self.store.clone(), name.clone());
                blocking(move || store.remove(&n))
                    .await?
                    .map_err(store_error)?;
                publish_invalidation(&self.store, key).await;
                grant_lost(&self.store, key, tenant, &pairs).await;
                Err(authorization_required())
            }
            Err(e) => Err(e),
        }
    }

    /// The fleet-wide single flight (shared store): one replica refreshes under a lease-based lock
    /// (renewed while the IdP call runs, fenced writes); the others poll the grant until it changes
    /// or the lock is free (a holder that died loses it when the lease ends).
    async fn refresh_shared(
        &self,
        key: &TokenKey,
        name: &Name,
        tenant: Option<&str>,
        observed: &Fetched,
    ) -> Result<Fetched, TokenError> {
        let lock = name.lock();
        let idp_timeout = self
            .source
            .as_ref()
            .map_or(Duration::from_secs(10), |s| s.settings().idp_timeout);
        let deadline = tokio::time::Instant::now() + idp_timeout + REFRESH_LEASE * 2;
        let changed = |f: &Fetched, left: Duration| {
            left >= Duration::from_secs(2)
                && (!f
                    .access_token
                    .ct_eq(observed.access_token.expose().as_bytes())
                    || !same_refresh_token(
                        f.refresh_token.as_ref(),
                        observed.refresh_token.as_ref(),
                    ))
        };
        loop {
            let token = random_id();
            let (store, l, t) = (self.store.clone(), lock.clone(), token.clone());
            let got = blocking(move || match store.shared() {
                Some(r) => r.try_lock(&l, &t, REFRESH_LEASE),
                None => Ok(true),
            })
            .await?
            .map_err(store_error)?;
            if got {
                // Renew the lease while this replica works.
                let renew = {
                    let (store, l, t) = (self.store.clone(), lock.clone(), token.clone());
                    tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(REFRESH_LEASE / 3).await;
                            let (store, l, t) = (store.clone(), l.clone(), t.clone());
                            let _ = tokio::task::spawn_blocking(move || {
                                store.shared().map(|r| r.renew(&l, &t, REFRESH_LEASE))
                            })
                            .await;
                        }
                    })
                };
                // Another replica may have refreshed between our read and the lock.
                let result = match self.read(name).await {
                    Ok(None) => Err(authorization_required()),
                    Ok(Some((fresh, left))) if changed(&fresh, left) => Ok(fresh),
                    Ok(Some((fresh, _))) => {
                        self.refresh(key, name, tenant, fresh, Some((&lock, &token)))
                            .await
                    }
                    Err(e) => Err(e),
                };
                renew.abort();
                let (store, l, t) = (self.store.clone(), lock.clone(), token.clone());
                let _ =
                    tokio::task::spawn_blocking(move || store.shared().map(|r| r.unlock(&l, &t)))
                        .await;
                return result;
            }
            tokio::time::sleep(REFRESH_POLL).await;
            match self.read(name).await? {
                None => return Err(authorization_required()),
                Some((fresh, left)) if changed(&fresh, left) => return Ok(fresh),
                Some(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(TokenError::new(
                    TokenErrorKind::Unavailable,
                    "another replica's refresh of this grant did not finish in time",
                ));
            }
        }
    }
}

/// A grant the identity provider refused for good (`invalid_grant`): `grant.revoked` and
/// `grant.refresh_failed` (with a fresh login link, made with the sign-in's context values).
async fn grant_lost(
    store: &Arc<Store>,
    key: &TokenKey,
    tenant: Option<&str>,
    pairs: &[(String, String)],
) {
    use crate::webhooks::{emit, Event};
    let Some(user) = key.user.as_deref() else {
        return;
    };
    let revoked =
        Event::new("grant.revoked", &key.profile, user, tenant).with("reason", "invalid_grant");
    emit(store, revoked).await;
    let mut failed = Event::new("grant.refresh_failed", &key.profile, user, tenant)
        .with("error", "invalid_grant");
    failed.context = pairs
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("context.")?.to_string(), v.clone())))
        .collect();
    emit(store, failed).await;
}

/// Tells every replica to forget a user's cached token (`DELETE /admin/tokens`, a refused refresh).
pub async fn publish_invalidation(store: &Arc<Store>, key: &TokenKey) {
    if store.shared().is_none() {
        return;
    }
    let msg = invalidation_message(&key.profile, key.tenant.as_deref(), key.user.as_deref());
    let store = store.clone();
    let _ = tokio::task::spawn_blocking(move || store.shared().map(|r| r.publish(&msg))).await;
}

/// `inv\n{profile}\n{tenant}\n{user}` (empty for none).
pub fn invalidation_message(profile: &str, tenant: Option<&str>, user: Option<&str>) -> String {
    format!(
        "inv\n{profile}\n{}\n{}",
        tenant.unwrap_or(""),
        user.unwrap_or("")
    )
}

/// Parses an invalidation message: `(profile, tenant, user)`.
pub fn parse_invalidation(msg: &str) -> Option<(&str, Option<&str>, Option<&str>)> {
    let mut parts = msg.splitn(4, '\n');
    if parts.next()? != "inv" {
        return None;
    }
    let profile = parts.next()?;
    fn opt(s: &str) -> Option<&str> {
        (!s.is_empty()).then_some(s)
    }
    let tenant = opt(parts.next()?);
    let user = parts.next().and_then(opt);
    Some((profile, tenant, user))
}

/// Whether two refresh tokens are the same (constant time), or both absent.
fn same_refresh_token(a: Option<&RefreshToken>, b: Option<&RefreshToken>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.ct_eq(b.expose().as_bytes()),
        (None, None) => true,
        _ => false,
    }
}

fn authorization_required() -> TokenError {
    TokenError::new(
        TokenErrorKind::AuthorizationRequired,
        "the end user has not authorized this profile (or the grant was revoked)",
    )
}

impl TokenSource for UserGrants {
    fn fetch<'a>(
        &'a self,
        key: &'a TokenKey,
        cached_refresh: Option<RefreshToken>,
    ) -> BoxFuture<'a, Result<Fetched, TokenError>> {
        Box::pin(async move {
            let Some(user) = key.user.as_deref() else {
                return Err(authorization_required());
            };
            let tenant = key.tenant.as_deref();
            let name = Name::grant(&key.profile, tenant, user);
            let Some((saved, left)) = self.read(&name).await? else {
                return Err(authorization_required());
            };
            // A tenant chosen on the start page (the request named none) is kept with the grant.
            let chosen = saved
                .entered
                .iter()
                .find(|(k, _)| k == "tenant")
                .map(|(_, v)| v.expose().to_string());
            let tenant = tenant.or(chosen.as_deref());
            // On a cold cache (a restart) the stored access token is used while it is good. Once
            // the cache has had a token for this user (it holds the refresh token), a fetch means
            // "refresh": expiry, or an upstream refused the token; unless another replica has
            // already refreshed (the stored refresh token is not the one the cache holds).
            let rotated_elsewhere = cached_refresh
                .as_ref()
                .is_some_and(|c| !same_refresh_token(saved.refresh_token.as_ref(), Some(c)));
            if (cached_refresh.is_none() || rotated_elsewhere) && left >= Duration::from_secs(2) {
                return Ok(saved);
            }
            if self.source.is_none() && left >= Duration::from_secs(2) {
                // Entered credentials (basic, api_key): nothing to refresh.
                return Ok(saved);
            }
            if self.store.shared().is_some() && self.source.is_some() {
                return self.refresh_shared(key, &name, tenant, &saved).await;
            }
            self.refresh(key, &name, tenant, saved, None).await
        })
    }
}

/// A login ticket: what an `authorization_required` link starts.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Ticket {
    pub profile: String,
    pub user: String,
    pub tenant: Option<String>,
    /// Values of the `{{context.<name>}}` fields of the profile's authorization URL.
    #[serde(default)]
    pub context: Vec<(String, String)>,
    /// The Test this link was made for (`POST /admin/profiles/{name}/test`): its sign-in ends in a
    /// report, never in a grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
}

/// A random, URL-safe identifier with 256 bits of entropy.
pub fn random_id() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Creates a ticket valid for `ttl`; returns its id (blocking).
pub fn new_ticket(store: &Store, ttl: Duration, ticket: &Ticket) -> Result<String, TokenError> {
    let id = random_id();
    let bytes = serde_json::to_vec(ticket).map_err(store_error)?;
    store
        .put(&Name::ticket(&id), &bytes, Some(now_unix() + ttl.as_secs()))
        .map_err(store_error)?;
    Ok(id)
}

/// Reads a ticket (blocking); `None` when unknown, used or expired.
pub fn read_ticket(store: &Store, id: &str) -> Result<Option<Ticket>, TokenError> {
    let bytes = store.get(&Name::ticket(id)).map_err(store_error)?;
    Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
}

/// An authorization in progress, stored under its `state`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Flow {
    pub ticket: String,
    pub profile: String,
    pub user: String,
    /// The tenant the request named: part of the grant's name.
    pub tenant: Option<String>,
    /// The tenant the user chose on the start page (when the request named none).
    #[serde(default)]
    pub chosen_tenant: Option<String>,
    /// `{{context.<name>}}` values from the ticket (name without `context.`): the identity
    /// provider's URLs, scope or token parameters use them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<(String, String)>,
    /// `user_field.<key>` values entered on the start page.
    #[serde(
        default,
        serialize_with = "secret::store_form::pairs",
        deserialize_with = "secret::store_form::de_pairs"
    )]
    pub entered: Vec<(String, EnteredValue)>,
    #[serde(
        default,
        serialize_with = "secret::store_form::option",
        deserialize_with = "secret::store_form::de_option"
    )]
    pub verifier: Option<PkceVerifier>,
    /// Three-legged OAuth 1.0a: the request token's secret (its token is the flow's key).
    #[serde(
        default,
        serialize_with = "secret::store_form::option",
        deserialize_with = "secret::store_form::de_option"
    )]
    pub request_secret: Option<OAuth1RequestSecret>,
    /// OpenID Connect: the `nonce` sent with the authorization request; the `id_token` must
    /// carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The Test the sign-in belongs to (from its ticket): the callback writes a report and keeps no
    /// grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
}

impl Flow {
    /// The tenant for the IdP's URLs.
    pub fn idp_tenant(&self) -> Option<&str> {
        self.tenant.as_deref().or(self.chosen_tenant.as_deref())
    }

    /// What the grant keeps of the start page's answers.
    pub fn entered(&self) -> Vec<(String, EnteredValue)> {
        let mut out: Vec<(String, EnteredValue)> = self
            .entered
            .iter()
            .map(|(k, v)| (format!("user_field.{k}"), v.clone()))
            .collect();
        if let Some(t) = &self.chosen_tenant {
            out.push(("tenant".to_string(), EnteredValue::new(t.as_str())));
        }
        // Kept with the grant: a refresh uses the values the sign-in used.
        for (k, v) in &self.context {
            out.push((format!("context.{k}"), EnteredValue::new(v.as_str())));
        }
        out
    }

    /// The `user_field.<key>` and `context.<name>` values for the identity provider's requests
    /// ([`crate::oauth::DynValues`]).
    pub fn dyn_pairs(&self) -> Vec<(String, String)> {
        dyn_pairs(&self.entered())
    }
}

/// The `user_field.<key>` and `context.<name>` values among what a grant keeps.
pub fn dyn_pairs(entered: &[(String, EnteredValue)]) -> Vec<(String, String)> {
    entered
        .iter()
        .filter(|(k, _)| k.starts_with("user_field.") || k.starts_with("context."))
        .map(|(k, v)| (k.clone(), v.expose().to_string()))
        .collect()
}

/// Credential checks made so far with a ticket (blocking).
pub fn link_attempts(store: &Store, ticket: &str) -> Result<u64, TokenError> {
    store
        .count(&Name::ticket_attempts(ticket))
        .map_err(store_error)
}

/// Stores a flow under a new random `state`; returns the state (blocking). A ticket has one live
/// state: the previous one (an earlier submission of the start page) is deleted, so its callback
/// finds nothing, and one link holder cannot pile up records.
pub fn new_flow(store: &Store, ttl: Duration, flow: &Flow) -> Result<String, TokenError> {
    let state = random_id();
    new_flow_under(store, ttl, flow, &state)?;
    Ok(state)
}

/// The key a three-legged OAuth 1.0a sign-in is kept under: its request token, hashed (the
/// provider chooses the token's form and length), in the namespace of `state`s.
pub fn request_token_key(request_token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, request_token.as_bytes());
    format!("oauth1:{}", crate::sign::hex(digest.as_ref()))
}

/// Stores a flow under `state` (a random `state`, or [`request_token_key`]) as [`new_flow`] does:
/// the ticket's previous flow is deleted (blocking).
pub fn new_flow_under(
    store: &Store,
    ttl: Duration,
    flow: &Flow,
    state: &str,
) -> Result<(), TokenError> {
    let bytes = serde_json::to_vec(flow).map_err(store_error)?;
    let expires = Some(now_unix() + ttl.as_secs());
    store
        .put(&Name::state(state), &bytes, expires)
        .map_err(store_error)?;
    let previous = store
        .replace(&Name::ticket_state(&flow.ticket), state.as_bytes(), expires)
        .map_err(store_error)?;
    if let Some(p) = previous.and_then(|p| String::from_utf8(p).ok()) {
        if p != state {
            store.remove(&Name::state(&p)).map_err(store_error)?;
        }
    }
    Ok(())
}

/// Removes a ticket and the records beside it (a finished sign-in).
pub fn remove_ticket(store: &Store, ticket: &str) -> Result<(), TokenError> {
    for name in [
        Name::ticket(ticket),
        Name::ticket_state(ticket),
        Name::ticket_attempts(ticket),
    ] {
        store.remove(&name).map_err(store_error)?;
    }
    Ok(())
}

/// Takes (consumes) the flow of a `state`: a second callback with it finds nothing (blocking).
pub fn take_flow(store: &Store, state: &str) -> Result<Option<Flow>, TokenError> {
    let bytes = store.take(&Name::state(state)).map_err(store_error)?;
    Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
}
