//! End users' grants (authorization-code profiles): kept in the store, refreshed through the token
//! cache's single flight.
//!
//! A grant record holds the user's latest tokens under `grant:{profile}:{tenant}:{user}`. On a cold
//! cache the access token in it is used while valid; otherwise its refresh token is. A rotated
//! refresh token replaces the old one in one write before the new access token is handed out; an
//! answer without a refresh token keeps the old one; `invalid_grant` deletes the grant, so the next
//! call gets `authorization_required`; other IdP errors keep it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{to_fetched, OAuthSource, Request};
use crate::secret::Secret;
use crate::store::Store;
use crate::token::{
    decode_record, encode_record, Fetched, TokenError, TokenErrorKind, TokenKey, TokenSource,
};

/// Store name of a user's grant.
pub fn grant_name(profile: &str, tenant: Option<&str>, user: &str) -> String {
    format!("grant:{profile}:{}:{user}", tenant.unwrap_or("-"))
}

fn store_error(e: impl std::fmt::Display) -> TokenError {
    TokenError::new(TokenErrorKind::Unavailable, format!("token store: {e}"))
}

/// Saves a user's grant (blocking: call from `spawn_blocking`).
pub fn save_grant(store: &Store, name: &str, f: &Fetched) -> Result<(), TokenError> {
    let lifetime = f.expires_in.unwrap_or(crate::token::DEFAULT_TOKEN_LIFETIME);
    let (bytes, _) = encode_record(f, lifetime);
    // No store expiry: the refresh token usually outlives the access token.
    store.put(name, &bytes, None).map_err(store_error)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, TokenError> {
    tokio::task::spawn_blocking(f).await.map_err(store_error)
}

/// Token source for an authorization-code profile.
pub struct UserGrants {
    /// The IdP (`None` for per-user basic and api_key: their records never refresh).
    pub source: Option<Arc<OAuthSource>>,
    pub store: Arc<Store>,
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
        cached_refresh: Option<Secret>,
    ) -> BoxFuture<'a, Result<Fetched, TokenError>> {
        Box::pin(async move {
            let Some(user) = key.user.as_deref() else {
                return Err(authorization_required());
            };
            let tenant = key.tenant.as_deref();
            let name = grant_name(&key.profile, tenant, user);
            let store = self.store.clone();
            let n = name.clone();
            let record = blocking(move || store.get(&n))
                .await?
                .map_err(store_error)?;
            let Some((saved, left)) = record.as_deref().and_then(decode_record) else {
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
            // "refresh": expiry, or an upstream refused the token.
            if cached_refresh.is_none() && left >= Duration::from_secs(2) {
                return Ok(saved);
            }
            if self.source.is_none() && left >= Duration::from_secs(2) {
                // Entered credentials (basic, api_key): nothing to refresh.
                return Ok(saved);
            }
            let (Some(rt), Some(source)) = (saved.refresh_token.clone(), &self.source) else {
                return Err(authorization_required());
            };
            match source
                .request(&source.http, tenant, Request::Refresh(&rt))
                .await
            {
                Ok(r) => {
                    let mut f = to_fetched(r);
                    if f.refresh_token.is_none() {
                        f.refresh_token = Some(rt);
                    }
                    f.entered = saved.entered;
                    let (store, n, g) = (self.store.clone(), name, f.clone());
                    blocking(move || save_grant(&store, &n, &g)).await??;
                    Ok(f)
                }
                Err(e) if e.kind == TokenErrorKind::GrantInvalid => {
                    tracing::info!(profile = %key.profile, "refresh token refused: grant deleted");
                    let store = self.store.clone();
                    blocking(move || store.remove(&name))
                        .await?
                        .map_err(store_error)?;
                    Err(authorization_required())
                }
                Err(e) => Err(e),
            }
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
}

/// A random, URL-safe identifier with 256 bits of entropy.
pub fn random_id() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn now_unix() -> u64 {
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
        .put(
            &format!("ticket:{id}"),
            &bytes,
            Some(now_unix() + ttl.as_secs()),
        )
        .map_err(store_error)?;
    Ok(id)
}

/// Reads a ticket (blocking); `None` when unknown, used or expired.
pub fn read_ticket(store: &Store, id: &str) -> Result<Option<Ticket>, TokenError> {
    let bytes = store.get(&format!("ticket:{id}")).map_err(store_error)?;
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
    /// `user_field.<key>` values entered on the start page.
    #[serde(default)]
    pub entered: Vec<(String, String)>,
    pub verifier: Option<String>,
}

impl Flow {
    /// The tenant for the IdP's URLs.
    pub fn idp_tenant(&self) -> Option<&str> {
        self.tenant.as_deref().or(self.chosen_tenant.as_deref())
    }

    /// What the grant keeps of the start page's answers.
    pub fn entered(&self) -> Vec<(String, Secret)> {
        let mut out: Vec<(String, Secret)> = self
            .entered
            .iter()
            .map(|(k, v)| (format!("user_field.{k}"), Secret::new(v.as_str())))
            .collect();
        if let Some(t) = &self.chosen_tenant {
            out.push(("tenant".to_string(), Secret::new(t.as_str())));
        }
        out
    }
}

/// Stores a flow under a new random `state`; returns the state (blocking).
pub fn new_flow(store: &Store, ttl: Duration, flow: &Flow) -> Result<String, TokenError> {
    let state = random_id();
    let bytes = serde_json::to_vec(flow).map_err(store_error)?;
    store
        .put(
            &format!("state:{state}"),
            &bytes,
            Some(now_unix() + ttl.as_secs()),
        )
        .map_err(store_error)?;
    Ok(state)
}

/// Takes (consumes) the flow of a `state`: a second callback with it finds nothing (blocking).
pub fn take_flow(store: &Store, state: &str) -> Result<Option<Flow>, TokenError> {
    let bytes = store.take(&format!("state:{state}")).map_err(store_error)?;
    Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
}
