//! `keep_alive`: end users' grants not refreshed for that long are refreshed in the background,
//! before a provider drops a refresh token that has not been used (Google: six months unused).
//!
//! - Each grant record keeps when it was obtained or last refreshed (`refreshed_at`).
//! - A scan every `keep_alive / 2` (between 1 s and 10 min) walks the grants a page at a time
//!   ([`crate::store::Store::page`]: `SCAN` on Redis), each page on a blocking thread, never on the server's
//!   event loops.
//! - A due grant is refreshed after a random delay of up to a quarter of `keep_alive` (at most one
//!   hour), so a restart with many idle grants spreads its refreshes instead of sending them at
//!   once; at most [`MAX_CONCURRENT`] run at a time.
//! - The refresh goes through the profile's token source, so with a Redis store it takes the
//!   fleet-wide refresh lock; a replica whose grant was refreshed by another since its scan skips
//!   it. A refresh the provider refuses for good (`invalid_grant`) deletes the grant and emits
//!   `grant.revoked` and `grant.refresh_failed` (with a login link) like any refresh; other
//!   failures keep the grant and are tried again at the next scan.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::proxy::Snapshot;
use crate::store::{names::parse_grant, Kind, Name};

/// Refreshes running at once in one process.
const MAX_CONCURRENT: usize = 4;
/// Grants read per page of a scan.
const PAGE: usize = 256;

fn now_unix() -> u64 {
    crate::oauth::grants::now_unix()
}

/// How often grants are scanned for profiles with these `keep_alive` values.
fn scan_interval(keep_alives: &[Duration]) -> Duration {
    keep_alives
        .iter()
        .map(|k| *k / 2)
        .min()
        .unwrap_or(Duration::from_secs(30))
        .clamp(Duration::from_secs(1), Duration::from_secs(600))
}

/// The largest random delay before a due grant is refreshed.
fn spread(keep_alive: Duration) -> Duration {
    (keep_alive / 4).min(Duration::from_secs(3600))
}

/// Whether a grant last refreshed at `refreshed_at` (`None`: before the time was kept) is due.
fn due(refreshed_at: Option<u64>, keep_alive: Duration, now: u64) -> bool {
    now.saturating_sub(refreshed_at.unwrap_or(0)) >= keep_alive.as_secs()
}

/// The refresher's loop (started with the webhook sender).
pub async fn run(
    live: Arc<arc_swap::ArcSwap<Snapshot>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let scheduled: Arc<Mutex<HashSet<Name>>> = Arc::default();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT));
    loop {
        let snap = live.load_full();
        let profiles: Vec<(Arc<str>, Duration)> = snap
            .config
            .profiles
            .iter()
            .filter_map(|(n, p)| Some((n.clone(), p.keep_alive?)))
            .collect();
        let interval = scan_interval(&profiles.iter().map(|p| p.1).collect::<Vec<_>>());
        if !profiles.is_empty() {
            for (name, keep_alive) in scan(&snap, profiles).await {
                let fresh = scheduled
                    .lock()
                    .map(|mut s| s.insert(name.clone()))
                    .unwrap_or(false);
                if !fresh {
                    continue;
                }
                let (live, scheduled, slots) = (live.clone(), scheduled.clone(), slots.clone());
                // A shutdown ends the wait; a refresh under way finishes (and is saved) first: the
                // drain waits for it.
                let mut stop = stop.clone();
                tokio::spawn(async move {
                    use rand::Rng;
                    let max = spread(keep_alive).as_millis() as u64;
                    let delay = rand::thread_rng().gen_range(0..=max);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(delay)) => {}
                        _ = stop.changed() => return,
                    }
                    let _slot = slots.acquire_owned().await;
                    refresh(&live.load_full(), &name, keep_alive).await;
                    if let Ok(mut s) = scheduled.lock() {
                        s.remove(&name);
                    }
                });
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// The grants of `profiles` that are due: one page of names at a time ([`crate::store::Store::page`]: `SCAN` on
/// Redis), each page read on a blocking thread.
async fn scan(snap: &Snapshot, profiles: Vec<(Arc<str>, Duration)>) -> Vec<(Name, Duration)> {
    let profiles = Arc::new(profiles);
    let mut cursor: Option<crate::store::page::Cursor> = None;
    let mut out = Vec::new();
    loop {
        let (store, profiles, at) = (snap.store.clone(), profiles.clone(), cursor.take());
        let page = tokio::task::spawn_blocking(move || {
            let keep_alive_of = |name: &str| -> Option<Duration> {
                let (profile, _, _) = parse_grant(name)?;
                profiles.iter().find(|(p, _)| &**p == profile).map(|p| p.1)
            };
            let page = store.page(
                Kind::Grant.prefix(),
                &|n| keep_alive_of(n).is_some(),
                at.as_ref(),
                PAGE,
            )?;
            let now = now_unix();
            let mut due_here = Vec::new();
            for n in &page.names {
                let (Some(keep_alive), Ok(Some(bytes))) = (keep_alive_of(n), store.get(n)) else {
                    continue;
                };
                let has_refresh = crate::token::decode_record(&bytes)
                    .is_some_and(|(f, _)| f.refresh_token.is_some());
                if has_refresh && due(crate::token::refreshed_at(&bytes), keep_alive, now) {
                    if let Some((p, t, u)) = parse_grant(n) {
                        due_here.push((Name::grant(p, t, u), keep_alive));
                    }
                }
            }
            Ok::<_, crate::store::StoreError>((due_here, page.next))
        })
        .await;
        match page {
            Ok(Ok((due_here, next))) => {
                out.extend(due_here);
                match next {
                    Some(c) => cursor = Some(c),
                    None => return out,
                }
            }
            Ok(Err(e)) => {
                // The next scan starts over (a Redis restart expires the cursor).
                tracing::warn!("keep_alive: cannot list grants: {e}");
                return out;
            }
            Err(_) => return out,
        }
    }
}

/// Refreshes one grant through its profile's token source, unless it was refreshed since the scan.
async fn refresh(snap: &Snapshot, name: &Name, keep_alive: Duration) {
    let Some((profile, tenant, user)) = parse_grant(name) else {
        return;
    };
    let Some((profile_name, oauth)) = snap
        .profiles
        .get_key_value(profile)
        .and_then(|(n, p)| Some((n, p.oauth.as_ref()?)))
    else {
        return;
    };
    let (store, n) = (snap.store.clone(), name.clone());
    let Ok(Ok(Some(bytes))) = tokio::task::spawn_blocking(move || store.get(&n)).await else {
        return;
    };
    if !due(crate::token::refreshed_at(&bytes), keep_alive, now_unix()) {
        // Another replica kept it alive since the scan.
        return;
    }
    let Some((saved, _)) = crate::token::decode_record(&bytes) else {
        return;
    };
    let key = oauth.key(profile_name, tenant, Some(user));
    // Handing the stored refresh token over asks for a refresh (not the stored access token).
    match oauth.dyn_source.fetch(&key, saved.refresh_token).await {
        Ok(_) => tracing::info!(profile, "keep_alive: an idle grant was refreshed"),
        Err(e) => tracing::warn!(profile, reason = %e.message, "keep_alive: refresh failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_grants_and_spread() {
        let day = Duration::from_secs(86_400);
        assert!(due(Some(1_000), day, 1_000 + 86_400));
        assert!(!due(Some(1_000), day, 1_000 + 86_399));
        assert!(
            due(None, day, 1_700_000_000),
            "a grant from before refreshed_at was kept is due"
        );
        assert_eq!(spread(Duration::from_secs(2)), Duration::from_millis(500));
        assert_eq!(spread(30 * day), Duration::from_secs(3600));
        assert_eq!(
            scan_interval(&[Duration::from_secs(2)]),
            Duration::from_secs(1)
        );
        assert_eq!(scan_interval(&[30 * day]), Duration::from_secs(600));
    }
}
