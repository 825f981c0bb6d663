//! The token cache: one token per key, fetched once under any concurrency, refreshed early, backed off
//! while the source fails.
//!
//! This module knows nothing of OAuth: it calls a [`TokenSource`] and keeps what it returns. Shape
//! (after pingora's read-through cache): the hot path is one map lookup plus a lock-free load of the
//! current token; only a miss, an early refresh or a failure takes the slot's small mutex.
//!
//! Lifecycle of a token with lifetime `L` received at `t0` (see [`Policy`]):
//! - `t0 .. refresh_at`: served from the cache;
//! - `refresh_at .. usable_until`: still served, while **one** background refresh runs;
//! - from `usable_until` (a margin before the real expiry): never injected; callers wait for the
//!   single flight instead.
//!
//! While the source fails, the key backs off (1 s, doubling up to `backoff_max`): callers that need a
//! new token get the last error at once, without a new request to the source.

mod cache;
mod persist;

pub use cache::{TokenCache, DEFAULT_MAX_ENTRIES};
pub use persist::{
    decode_record, encode_record, name as persisted_name, record_expires_at, Persist, StorePersist,
};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use crate::error::{ErrorCode, ProxyError};
use crate::secret::{AccessToken, EnteredValue, IdToken, RefreshToken};

/// Identifies one cached token.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TokenKey {
    pub profile: Arc<str>,
    /// Hash of the profile's token settings: a changed secret or scope is a different key.
    pub fingerprint: u64,
    pub tenant: Option<Arc<str>>,
    pub user: Option<Arc<str>>,
    /// Machine tokens of a profile whose identity-provider requests use `{{context.NAME}}`: the
    /// request's values (`context.NAME`, value), in the profile's order. Two sets of values never
    /// share a token.
    pub context: Option<Arc<Vec<(String, String)>>>,
}

/// What a source returns.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub access_token: AccessToken,
    pub token_type: String,
    /// `None` when the source did not say; the policy's default lifetime applies.
    pub expires_in: Option<Duration>,
    pub refresh_token: Option<RefreshToken>,
    pub id_token: Option<IdToken>,
    pub scope: Option<String>,
    /// Other string, number or boolean members of the response (`{{token.<name>}}`).
    pub extra: Vec<(String, String)>,
    /// The refresh token the cache held was refused: forget it even if this answer has none.
    pub refresh_token_refused: bool,
    /// What the end user entered on the start page (per-user profiles): `user_field.<key>` values
    /// and the tenant they chose (`tenant`). Kept with the grant, encrypted like the tokens.
    pub entered: Vec<(String, EnteredValue)>,
}

/// Name/value pairs in one allocation (`u32 name length | name | u32 value length | value`, …):
/// a cached token keeps its response's other members and an end user's entered values this way,
/// one allocation instead of one per string. `Debug` shows the names only, never a value.
#[derive(Clone, Default)]
pub struct Pairs(Box<[u8]>);

impl Pairs {
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Pairs {
        let mut buf = Vec::new();
        for (k, v) in pairs {
            for part in [k, v] {
                let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
                buf.extend_from_slice(&len.to_le_bytes());
                buf.extend_from_slice(&part.as_bytes()[..len as usize]);
            }
        }
        Pairs(buf.into_boxed_slice())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut rest: &[u8] = &self.0;
        let mut next = move || -> Option<&str> {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let (part, tail) = tail.split_at_checked(u32::from_le_bytes(*len) as usize)?;
            rest = tail;
            std::str::from_utf8(part).ok()
        };
        std::iter::from_fn(move || Some((next()?, next()?)))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Pairs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter().map(|(k, _)| k)).finish()
    }
}

/// A cached token with its timeline. Kept small: every end user with a grant has one.
#[derive(Debug)]
pub struct Token {
    pub access_token: AccessToken,
    /// `None` for "Bearer" (the usual value): see [`Token::token_type`].
    token_type: Option<Box<str>>,
    pub id_token: Option<IdToken>,
    /// The response's other members (`{{token.<name>}}`).
    pub extra: Pairs,
    /// See [`Fetched::entered`].
    pub entered: Pairs,
    pub has_refresh_token: bool,
    pub received_at: Instant,
    /// The timeline as milliseconds after `received_at` (a lifetime is at most a day):
    /// expiry, when to refresh early, and the end of use.
    lifetime_ms: u32,
    refresh_ms: u32,
    usable_ms: u32,
}

impl Token {
    pub fn token_type(&self) -> &str {
        self.token_type.as_deref().unwrap_or("Bearer")
    }

    pub fn lifetime(&self) -> Duration {
        Duration::from_millis(self.lifetime_ms.into())
    }

    pub fn expires_at(&self) -> Instant {
        self.received_at + self.lifetime()
    }

    /// From here on a request starts a refresh in the background.
    pub fn refresh_at(&self) -> Instant {
        self.received_at + Duration::from_millis(self.refresh_ms.into())
    }

    /// Never injected from here on (the expiry margin).
    pub fn usable_until(&self) -> Instant {
        self.received_at + Duration::from_millis(self.usable_ms.into())
    }

    /// A value the end user entered (`user_field.<key>` or `tenant`).
    pub fn entered(&self, name: &str) -> Option<&str> {
        self.entered.get(name)
    }

    /// A user field's value.
    pub fn user_field(&self, key: &str) -> Option<&str> {
        self.entered
            .iter()
            .find(|(k, _)| k.strip_prefix("user_field.") == Some(key))
            .map(|(_, v)| v)
    }

    /// A claim of the end user's validated `id_token` (`{{id_claims.<name>}}`).
    pub fn id_claim(&self, name: &str) -> Option<&str> {
        self.entered
            .iter()
            .find(|(k, _)| k.strip_prefix("id_claims.") == Some(name))
            .map(|(_, v)| v)
    }

    pub fn extra(&self, name: &str) -> Option<&str> {
        self.extra.get(name)
    }
}

fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// How a key's tokens age and how failures back off.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Lifetime when the source gives none.
    pub default_lifetime: Duration,
    /// Longest lifetime believed (a source saying "10^12 seconds" gets this).
    pub max_lifetime: Duration,
    /// Refresh this long before expiry, at most half the lifetime.
    pub refresh_before: Duration,
    /// Never inject a token in its last `expiry_margin`, at most a tenth of the lifetime.
    pub expiry_margin: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(60);
pub const DEFAULT_EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// How old a token must be before an upstream's refusal (`reauth_on`) may replace it.
pub const DEFAULT_REAUTH_MIN_TOKEN_AGE: Duration = Duration::from_secs(5);
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

impl Default for Policy {
    fn default() -> Self {
        Policy {
            default_lifetime: DEFAULT_TOKEN_LIFETIME,
            max_lifetime: MAX_TOKEN_LIFETIME,
            refresh_before: DEFAULT_REFRESH_BEFORE,
            expiry_margin: DEFAULT_EXPIRY_MARGIN,
            backoff_min: BACKOFF_MIN,
            backoff_max: BACKOFF_MAX,
        }
    }
}

impl Policy {
    /// Turns a fetched token into a cached one received `now`.
    pub fn token(&self, f: Fetched, now: Instant) -> Token {
        let lifetime = f
            .expires_in
            .unwrap_or(self.default_lifetime)
            .clamp(Duration::from_secs(1), self.max_lifetime);
        let refresh_before = self.refresh_before.min(lifetime / 2);
        let margin = self.expiry_margin.min(lifetime / 10);
        Token {
            access_token: f.access_token,
            token_type: (f.token_type != "Bearer").then(|| f.token_type.into()),
            id_token: f.id_token,
            extra: Pairs::new(f.extra.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            entered: Pairs::new(f.entered.iter().map(|(k, v)| (k.as_str(), v.expose()))),
            has_refresh_token: f.refresh_token.is_some(),
            received_at: now,
            lifetime_ms: ms(lifetime),
            refresh_ms: ms(lifetime - refresh_before),
            usable_ms: ms(lifetime - margin),
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(16);
        (self.backoff_min * 2u32.pow(exp)).min(self.backoff_max)
    }
}

/// Why a source could not give a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenErrorKind {
    /// The source refused the client or the grant (e.g. OAuth `invalid_client`).
    Rejected,
    /// The refresh token (or user grant) is no longer valid: the grant is gone.
    GrantInvalid,
    /// The source answered something that is not a token.
    InvalidResponse,
    /// The source could not be reached or failed (5xx).
    Unavailable,
    /// The source did not answer in time.
    Timeout,
    /// The source's host name did not resolve.
    Dns,
    /// There is no grant for this key (an end user must authorize first); not backed off.
    AuthorizationRequired,
    /// The connector (egress proxy) on the way to the source failed or refused.
    Egress,
    /// The connector refused its credentials (407/401).
    EgressAuth,
    /// The token store (Redis) could not be reached; the grant is not known to be gone.
    StoreUnavailable,
}

#[derive(Debug, Clone)]
pub struct TokenError {
    pub kind: TokenErrorKind,
    /// Never contains a token or secret; may contain the source's error code and description.
    pub message: String,
    /// Seconds a caller should wait (from the source's `Retry-After` or the backoff).
    pub retry_after: Option<u64>,
}

impl TokenError {
    pub fn new(kind: TokenErrorKind, message: impl Into<String>) -> Self {
        TokenError {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self.kind {
            TokenErrorKind::Rejected | TokenErrorKind::GrantInvalid => ErrorCode::IdpRejected,
            TokenErrorKind::InvalidResponse => ErrorCode::IdpInvalidResponse,
            TokenErrorKind::Unavailable => ErrorCode::IdpUnavailable,
            TokenErrorKind::Timeout => ErrorCode::IdpTimeout,
            TokenErrorKind::Dns => ErrorCode::IdpDnsError,
            TokenErrorKind::AuthorizationRequired => ErrorCode::AuthorizationRequired,
            TokenErrorKind::Egress => ErrorCode::EgressProxyUnavailable,
            TokenErrorKind::EgressAuth => ErrorCode::EgressProxyAuthFailed,
            TokenErrorKind::StoreUnavailable => ErrorCode::TokenStoreUnavailable,
        }
    }

    pub fn into_proxy_error(self, profile: &Arc<str>) -> ProxyError {
        let mut e = ProxyError::new(self.code(), self.message).with_profile(profile);
        if matches!(
            e.code,
            ErrorCode::IdpUnavailable | ErrorCode::TokenStoreUnavailable
        ) {
            e.retry_after = Some(self.retry_after.unwrap_or(1).max(1));
        }
        e
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TokenError {}

/// Where tokens come from (the OAuth client, or a test double).
pub trait TokenSource: Send + Sync + 'static {
    /// Fetches a token for `key`. With `refresh_token`, the source should use it (and may fall back
    /// to its own grant when the refresh token is refused).
    fn fetch<'a>(
        &'a self,
        key: &'a TokenKey,
        refresh_token: Option<RefreshToken>,
    ) -> BoxFuture<'a, Result<Fetched, TokenError>>;
}

#[cfg(test)]
mod tests;
