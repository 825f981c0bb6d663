//! The cache itself: slots in a sharded map, single flight per slot.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Policy, Token, TokenError, TokenErrorKind, TokenKey, TokenSource};
use crate::secret::RefreshToken;

type FlightResult = Result<Arc<Token>, TokenError>;

#[derive(Default)]
struct Slot {
    /// The token callers get; read without a lock.
    current: ArcSwapOption<Token>,
    inner: Mutex<SlotInner>,
}

#[derive(Default)]
struct SlotInner {
    /// The fetch in progress, if any: everyone waits on the same one.
    flight: Option<watch::Receiver<Option<FlightResult>>>,
    /// Kept apart from `current`, so a token dropped after a 401 keeps its refresh token.
    refresh_token: Option<RefreshToken>,
    /// Set by a failed fetch, cleared by a good one: boxed, since most slots never fail and
    /// every per-user grant has a slot.
    backoff: Option<Box<Backoff>>,
    /// The store was asked for a saved token (once per slot, on its first fetch).
    store_checked: bool,
}

/// A slot's failures since its last good fetch.
struct Backoff {
    failures: u32,
    retry_at: Instant,
    last_error: TokenError,
}

/// Counters (exported as metrics later).
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub early_refreshes: AtomicU64,
    pub fetches: AtomicU64,
    pub fetch_failures: AtomicU64,
    /// Callers that waited on a fetch another caller started.
    pub waiters: AtomicU64,
    pub backoff_rejections: AtomicU64,
    /// Keys dropped because the cache was full.
    pub evictions: AtomicU64,
}

/// Keys the cache holds by default before it evicts (see [`TokenCache::with_max_entries`]).
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;

/// Shared token cache; see the module docs.
///
/// Bounded: every request with a new user or tenant value makes a key, so past `max_entries` keys
/// the cache first drops keys without a usable token, then the oldest tokens, down to 90 % of the
/// bound. A key with a fetch in flight is never dropped. Dropping costs at most one fetch later
/// (per-user grants stay in the store).
pub struct TokenCache {
    /// foldhash's seeded quality hasher: the keys (profile, tenant, user) are hashed on every
    /// request, where SipHash was ~1.5 % of a worker's instructions.
    slots: DashMap<TokenKey, Arc<Slot>, foldhash::quality::RandomState>,
    persist: Option<Arc<dyn super::Persist>>,
    pub stats: CacheStats,
    max_entries: usize,
    evicting: AtomicBool,
    saves: Arc<Saves>,
}

/// Machine-token saves started and not yet written. A stop waits for them
/// ([`TokenCache::saves_done`]): a token fetched just before a restart is then not fetched again.
#[derive(Default)]
struct Saves {
    running: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// Counts one save while it lives (a cancelled save counts as done too).
struct SaveGuard(Arc<Saves>);

impl SaveGuard {
    fn new(saves: &Arc<Saves>) -> SaveGuard {
        saves.running.fetch_add(1, Ordering::AcqRel);
        SaveGuard(saves.clone())
    }
}

impl Drop for SaveGuard {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache {
            slots: DashMap::with_hasher(foldhash::quality::RandomState::default()),
            persist: None,
            stats: CacheStats::default(),
            max_entries: DEFAULT_MAX_ENTRIES,
            evicting: AtomicBool::new(false),
            saves: Arc::default(),
        }
    }
}

fn lock(m: &Mutex<SlotInner>) -> std::sync::MutexGuard<'_, SlotInner> {
    // A panic while holding this lock cannot leave the slot inconsistent in a way that matters
    // more than losing every later request: keep going with the data as it is.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TokenCache {
    pub fn new() -> Arc<TokenCache> {
        Arc::new(TokenCache::default())
    }

    /// A cache that saves tokens to `persist` and, on a cold start, reads them back instead of
    /// asking the source again.
    pub fn with_persist(persist: Arc<dyn super::Persist>) -> Arc<TokenCache> {
        Arc::new(TokenCache {
            persist: Some(persist),
            ..TokenCache::default()
        })
    }

    /// Waits, at most `timeout`, until every token save started so far is written. Returns whether
    /// they all were. Proxy workers call it before their runtime stops (a save not yet begun would
    /// be dropped with it), and so does [`crate::Server::shutdown`].
    pub async fn saves_done(&self, timeout: std::time::Duration) -> bool {
        let wait = async {
            loop {
                let idle = self.saves.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if self.saves.running.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// The same cache holding at most about `max` keys (at least 1).
    pub fn with_max_entries(self: Arc<Self>, max: usize) -> Arc<TokenCache> {
        match Arc::try_unwrap(self) {
            Ok(mut c) => {
                c.max_entries = max.max(1);
                Arc::new(c)
            }
            Err(shared) => shared,
        }
    }

    fn slot(&self, key: &TokenKey) -> Arc<Slot> {
        if let Some(s) = self.slots.get(key) {
            return s.clone();
        }
        if self.slots.len() >= self.max_entries {
            self.evict();
        }
        self.slots.entry(key.clone()).or_default().clone()
    }

    /// Makes room: keys without a usable token first, then the oldest tokens, down to 90 % of
    /// the bound. One caller evicts at a time; the others go on (the map may pass the bound by a
    /// few keys meanwhile). Slot locks are only tried, never waited for, under the map's lock.
    fn evict(&self) {
        if self.evicting.swap(true, Ordering::Acquire) {
            return;
        }
        let target = self.max_entries - self.max_entries / 10;
        let before = self.slots.len();
        let now = Instant::now();
        let busy = |s: &Slot| s.inner.try_lock().map_or(true, |i| i.flight.is_some());
        self.slots.retain(|_, s| {
            busy(s)
                || s.current
                    .load()
                    .as_ref()
                    .is_some_and(|t| now < t.usable_until())
        });
        if self.slots.len() > target {
            let mut ages: Vec<(Instant, TokenKey)> = self
                .slots
                .iter()
                .filter(|e| !busy(e.value()))
                .filter_map(|e| {
                    Some((
                        e.value().current.load().as_ref()?.received_at,
                        e.key().clone(),
                    ))
                })
                .collect();
            ages.sort_unstable_by_key(|(at, _)| *at);
            let excess = self.slots.len() - target;
            for (_, k) in ages.into_iter().take(excess) {
                self.slots.remove(&k);
            }
        }
        let dropped = before.saturating_sub(self.slots.len());
        self.stats
            .evictions
            .fetch_add(dropped as u64, Ordering::Relaxed);
        self.evicting.store(false, Ordering::Release);
    }

    /// A usable token for `key`: from the cache, or from the one fetch in flight for it.
    pub async fn get(
        self: &Arc<Self>,
        key: &TokenKey,
        source: &Arc<dyn TokenSource>,
        policy: &Policy,
    ) -> Result<Arc<Token>, TokenError> {
        let slot = self.slot(key);
        let now = Instant::now();
        if let Some(tok) = slot.current.load_full() {
            if now < tok.usable_until() {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                if now >= tok.refresh_at() {
                    self.refresh_in_background(&slot, key, source, policy, now);
                }
                return Ok(tok);
            }
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let mut rx = {
            let mut inner = lock(&slot.inner);
            // Another caller may have stored a token while we waited for the lock.
            if let Some(tok) = slot.current.load_full() {
                if now < tok.usable_until() {
                    return Ok(tok);
                }
            }
            match &inner.flight {
                Some(rx) => {
                    self.stats.waiters.fetch_add(1, Ordering::Relaxed);
                    rx.clone()
                }
                None => {
                    if let Some(b) = &inner.backoff {
                        let (at, err) = (b.retry_at, &b.last_error);
                        if now < at {
                            self.stats
                                .backoff_rejections
                                .fetch_add(1, Ordering::Relaxed);
                            let mut e = err.clone();
                            let wait =
                                at.saturating_duration_since(now).as_secs_f64().ceil() as u64;
                            e.retry_after = Some(e.retry_after.unwrap_or(0).max(wait).max(1));
                            return Err(e);
                        }
                    }
                    self.start_flight(&slot, &mut inner, key, source, policy)
                }
            }
        };
        let result = rx.wait_for(|r| r.is_some()).await.map_err(|_| {
            TokenError::new(TokenErrorKind::Unavailable, "token fetch was abandoned")
        })?;
        result
            .clone()
            .unwrap_or_else(|| Err(TokenError::new(TokenErrorKind::Unavailable, "no token")))
    }

    fn refresh_in_background(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        key: &TokenKey,
        source: &Arc<dyn TokenSource>,
        policy: &Policy,
        now: Instant,
    ) {
        let mut inner = lock(&slot.inner);
        if inner.flight.is_some() || inner.backoff.as_ref().is_some_and(|b| now < b.retry_at) {
            return;
        }
        self.stats.early_refreshes.fetch_add(1, Ordering::Relaxed);
        let _ = self.start_flight(slot, &mut inner, key, source, policy);
    }

    /// Starts the one fetch for this slot (caller holds the slot lock and checked there is none).
    fn start_flight(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        inner: &mut SlotInner,
        key: &TokenKey,
        source: &Arc<dyn TokenSource>,
        policy: &Policy,
    ) -> watch::Receiver<Option<FlightResult>> {
        let (tx, rx) = watch::channel(None);
        inner.flight = Some(rx.clone());
        let refresh_token = inner.refresh_token.clone();
        // User grants are kept by their own source; the cache saves machine tokens only.
        let check_store = !inner.store_checked && self.persist.is_some() && key.user.is_none();
        inner.store_checked = true;
        let (cache, slot, key, source, policy) = (
            self.clone(),
            slot.clone(),
            key.clone(),
            source.clone(),
            policy.clone(),
        );
        self.stats.fetches.fetch_add(1, Ordering::Relaxed);
        // A task of its own: the fetch completes (and is cached) even if every waiter goes away.
        tokio::spawn(async move {
            let saved = match (&cache.persist, check_store) {
                (Some(p), true) => {
                    let (p, k) = (p.clone(), key.clone());
                    tokio::task::spawn_blocking(move || p.load(&k))
                        .await
                        .ok()
                        .flatten()
                        // Not worth it when it would have to be refreshed at once.
                        .filter(|(_, left)| *left > policy.expiry_margin * 2)
                }
                _ => None,
            };
            let from_store = saved.is_some();
            let fetched = match saved {
                Some((f, _)) => Ok(f),
                None => source.fetch(&key, refresh_token).await,
            };
            let now = Instant::now();
            let result = {
                let mut inner = lock(&slot.inner);
                inner.flight = None;
                match fetched {
                    Ok(f) => {
                        if let Some(rt) = &f.refresh_token {
                            inner.refresh_token = Some(rt.clone());
                        } else if f.refresh_token_refused {
                            inner.refresh_token = None;
                        }
                        let token = Arc::new(policy.token(f.clone(), now));
                        if let (Some(p), false, None) = (&cache.persist, from_store, &key.user) {
                            let (p, k, lifetime) = (p.clone(), key.clone(), token.lifetime());
                            let guard = SaveGuard::new(&cache.saves);
                            // Off the request path; a failed write only costs a fetch after a restart.
                            tokio::task::spawn_blocking(move || {
                                p.save(&k, &f, lifetime);
                                drop(guard);
                            });
                        }
                        slot.current.store(Some(token.clone()));
                        inner.backoff = None;
                        Ok(token)
                    }
                    Err(e) => {
                        cache.stats.fetch_failures.fetch_add(1, Ordering::Relaxed);
                        if e.kind == TokenErrorKind::GrantInvalid {
                            inner.refresh_token = None;
                        }
                        // A missing user grant is not the source failing: the user may authorize
                        // any moment, so it is not backed off.
                        if !matches!(
                            e.kind,
                            TokenErrorKind::AuthorizationRequired
                                | TokenErrorKind::StoreUnavailable
                        ) {
                            let failures = inner.backoff.as_ref().map_or(0, |b| b.failures) + 1;
                            inner.backoff = Some(Box::new(Backoff {
                                failures,
                                retry_at: now + policy.backoff(failures),
                                last_error: e.clone(),
                            }));
                        }
                        Err(e)
                    }
                }
            };
            let _ = tx.send(Some(result));
        });
        rx
    }

    /// Drops `token` if it is still the cached one for `key` (an upstream refused it). Returns
    /// whether it was.
    pub fn invalidate_if_current(&self, key: &TokenKey, token: &Arc<Token>) -> bool {
        let Some(slot) = self.slots.get(key).map(|s| s.clone()) else {
            return false;
        };
        let prev = slot.current.compare_and_swap(token, None);
        matches!(&*prev, Some(p) if Arc::ptr_eq(p, token))
    }

    /// Puts a token in the cache (used by the admin test with `store=true`).
    pub fn insert(&self, key: &TokenKey, token: Token, refresh_token: Option<RefreshToken>) {
        let slot = self.slot(key);
        let mut inner = lock(&slot.inner);
        if refresh_token.is_some() {
            inner.refresh_token = refresh_token;
        }
        inner.backoff = None;
        slot.current.store(Some(Arc::new(token)));
    }

    /// Every cached token: key, seconds until expiry, whether a refresh token is held.
    pub fn entries(&self) -> Vec<(TokenKey, u64, bool)> {
        let now = Instant::now();
        self.slots
            .iter()
            .filter_map(|e| {
                let t = e.value().current.load_full()?;
                let has_rt = lock(&e.value().inner).refresh_token.is_some();
                Some((
                    e.key().clone(),
                    t.expires_at().saturating_duration_since(now).as_secs(),
                    has_rt,
                ))
            })
            .collect()
    }

    /// Forgets everything about `key` (admin revoke). Returns whether there was a token.
    pub fn remove(&self, key: &TokenKey) -> bool {
        self.slots
            .remove(key)
            .is_some_and(|(_, s)| s.current.load().is_some())
    }

    /// Keeps only the tokens whose key `keep` accepts (a config reload drops the tokens of
    /// profiles whose token settings changed). Returns how many keys were dropped.
    pub fn retain(&self, mut keep: impl FnMut(&TokenKey) -> bool) -> usize {
        let before = self.slots.len();
        self.slots.retain(|k, _| keep(k));
        before.saturating_sub(self.slots.len())
    }

    /// Whether `key` has a slot (with or without a token).
    pub fn contains(&self, key: &TokenKey) -> bool {
        self.slots.contains_key(key)
    }

    /// Number of keys with a slot.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}
