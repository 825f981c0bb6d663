use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::*;

/// A source that counts calls, waits `delay`, then answers from `plan`.
struct Fake {
    calls: AtomicUsize,
    delay: Duration,
    lifetime: Option<Duration>,
    fail: Mutex<Option<TokenErrorKind>>,
    refresh_tokens_seen: Mutex<Vec<Option<String>>>,
    issue_refresh_token: bool,
}

impl Fake {
    fn new(lifetime: Option<Duration>) -> Arc<Fake> {
        Arc::new(Fake {
            calls: AtomicUsize::new(0),
            delay: Duration::from_millis(100),
            lifetime,
            fail: Mutex::new(None),
            refresh_tokens_seen: Mutex::new(Vec::new()),
            issue_refresh_token: false,
        })
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl TokenSource for Fake {
    fn fetch<'a>(
        &'a self,
        _key: &'a TokenKey,
        refresh_token: Option<RefreshToken>,
    ) -> BoxFuture<'a, Result<Fetched, TokenError>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            self.refresh_tokens_seen
                .lock()
                .unwrap()
                .push(refresh_token.map(|s| s.expose().to_string()));
            tokio::time::sleep(self.delay).await;
            if let Some(kind) = *self.fail.lock().unwrap() {
                return Err(TokenError::new(kind, "nope"));
            }
            Ok(Fetched {
                access_token: AccessToken::new(format!("tok-{n}")),
                token_type: "Bearer".into(),
                expires_in: self.lifetime,
                refresh_token: self
                    .issue_refresh_token
                    .then(|| RefreshToken::new(format!("rt-{n}"))),
                id_token: None,
                scope: None,
                extra: vec![],
                refresh_token_refused: false,
                entered: vec![],
            })
        })
    }
}

fn key() -> TokenKey {
    TokenKey {
        profile: Arc::from("p"),
        fingerprint: 1,
        tenant: None,
        user: None,
        context: None,
    }
}

fn src(f: &Arc<Fake>) -> Arc<dyn TokenSource> {
    f.clone()
}

#[tokio::test(start_paused = true)]
async fn a_thousand_concurrent_misses_cause_one_fetch() {
    let cache = TokenCache::new();
    let fake = Fake::new(Some(Duration::from_secs(60)));
    let source = src(&fake);
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (c, s) = (cache.clone(), source.clone());
        tasks.push(tokio::spawn(async move {
            c.get(&key(), &s, &Policy::default())
                .await
                .map(|t| t.access_token.expose().to_string())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "tok-1");
    }
    assert_eq!(fake.calls(), 1);
    assert_eq!(cache.stats.fetches.load(Ordering::Relaxed), 1);

    // The same after expiry.
    tokio::time::advance(Duration::from_secs(61)).await;
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (c, s) = (cache.clone(), source.clone());
        tasks.push(tokio::spawn(async move {
            c.get(&key(), &s, &Policy::default())
                .await
                .map(|t| t.access_token.expose().to_string())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "tok-2");
    }
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_token_in_its_last_margin_is_never_injected() {
    let cache = TokenCache::new();
    let fake = Fake::new(Some(Duration::from_secs(5)));
    let source = src(&fake);
    let p = Policy::default();
    let t1 = cache.get(&key(), &source, &p).await.unwrap();
    // 5 s token: refresh from 2.5 s, never used from 4.5 s.
    assert_eq!(
        t1.refresh_at() - t1.received_at,
        Duration::from_millis(2500)
    );
    assert_eq!(
        t1.usable_until() - t1.received_at,
        Duration::from_millis(4500)
    );
    tokio::time::advance(Duration::from_millis(4600)).await;
    let t2 = cache.get(&key(), &source, &p).await.unwrap();
    assert_eq!(t2.access_token.expose(), "tok-2");
    assert!(Instant::now() < t2.usable_until());
}

#[tokio::test(start_paused = true)]
async fn near_expiry_the_old_token_is_served_while_one_refresh_runs() {
    let cache = TokenCache::new();
    let fake = Fake::new(Some(Duration::from_secs(5)));
    let source = src(&fake);
    let p = Policy::default();
    cache.get(&key(), &source, &p).await.unwrap();
    tokio::time::advance(Duration::from_secs(3)).await;
    for _ in 0..50 {
        // Served at once (no await on the fetch): the old token.
        let t = cache.get(&key(), &source, &p).await.unwrap();
        assert_eq!(t.access_token.expose(), "tok-1");
    }
    assert_eq!(
        cache.stats.fetches.load(Ordering::Relaxed),
        2,
        "one background refresh"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = cache.get(&key(), &source, &p).await.unwrap();
    assert_eq!(t.access_token.expose(), "tok-2");
    assert_eq!(cache.stats.early_refreshes.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_without_new_fetches_and_reset_on_success() {
    let cache = TokenCache::new();
    let fake = Fake::new(Some(Duration::from_secs(60)));
    *fake.fail.lock().unwrap() = Some(TokenErrorKind::Unavailable);
    let source = src(&fake);
    let p = Policy::default();

    // 100 concurrent callers share the one failing fetch.
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (c, s, p) = (cache.clone(), source.clone(), p.clone());
        tasks.push(tokio::spawn(async move {
            c.get(&key(), &s, &p).await.map(|_| ())
        }));
    }
    for t in tasks {
        assert_eq!(
            t.await.unwrap().unwrap_err().kind,
            TokenErrorKind::Unavailable
        );
    }
    assert_eq!(fake.calls(), 1);
    // Within the backoff: the error at once, with Retry-After, no fetch.
    let e = cache.get(&key(), &source, &p).await.unwrap_err();
    assert_eq!(e.retry_after, Some(1));
    assert_eq!(fake.calls(), 1);
    // After 1 s: one more try, which fails; now 2 s.
    tokio::time::advance(Duration::from_millis(1100)).await;
    assert!(cache.get(&key(), &source, &p).await.is_err());
    assert_eq!(fake.calls(), 2);
    tokio::time::advance(Duration::from_millis(1100)).await;
    assert!(cache.get(&key(), &source, &p).await.is_err());
    assert_eq!(fake.calls(), 2, "second backoff is 2 s");
    tokio::time::advance(Duration::from_millis(1000)).await;
    *fake.fail.lock().unwrap() = None;
    assert!(cache.get(&key(), &source, &p).await.is_ok());
    assert_eq!(fake.calls(), 3);
    // Success reset the backoff.
    tokio::time::advance(Duration::from_secs(61)).await;
    *fake.fail.lock().unwrap() = Some(TokenErrorKind::Timeout);
    assert!(cache.get(&key(), &source, &p).await.is_err());
    tokio::time::advance(Duration::from_millis(1100)).await;
    assert!(cache.get(&key(), &source, &p).await.is_err());
    assert_eq!(fake.calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn invalidation_only_drops_the_token_it_names() {
    let cache = TokenCache::new();
    let fake = Fake::new(Some(Duration::from_secs(60)));
    let source = src(&fake);
    let p = Policy::default();
    let t1 = cache.get(&key(), &source, &p).await.unwrap();
    assert!(cache.invalidate_if_current(&key(), &t1));
    let t2 = cache.get(&key(), &source, &p).await.unwrap();
    assert_eq!(t2.access_token.expose(), "tok-2");
    // A late 401 for the old token must not drop the new one.
    assert!(!cache.invalidate_if_current(&key(), &t1));
    let t3 = cache.get(&key(), &source, &p).await.unwrap();
    assert!(Arc::ptr_eq(&t2, &t3));
}

#[tokio::test(start_paused = true)]
async fn refresh_tokens_are_used_kept_and_dropped_when_invalid() {
    let cache = TokenCache::new();
    let fake = Arc::new(Fake {
        issue_refresh_token: true,
        ..Arc::into_inner(Fake::new(Some(Duration::from_secs(10)))).unwrap()
    });
    let source = src(&fake);
    let p = Policy::default();
    cache.get(&key(), &source, &p).await.unwrap();
    tokio::time::advance(Duration::from_secs(11)).await;
    cache.get(&key(), &source, &p).await.unwrap();
    *fake.fail.lock().unwrap() = Some(TokenErrorKind::GrantInvalid);
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(cache.get(&key(), &source, &p).await.is_err());
    *fake.fail.lock().unwrap() = None;
    tokio::time::advance(Duration::from_secs(2)).await;
    cache.get(&key(), &source, &p).await.unwrap();
    let seen = fake.refresh_tokens_seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![None, Some("rt-1".into()), Some("rt-2".into()), None],
        "refresh token used, then dropped after it was refused"
    );
}

#[test]
fn lifetimes_default_and_clamp() {
    let p = Policy::default();
    let f = |e: Option<Duration>| Fetched {
        access_token: AccessToken::new("a"),
        token_type: "Bearer".into(),
        expires_in: e,
        refresh_token: None,
        id_token: None,
        scope: None,
        extra: vec![],
        refresh_token_refused: false,
        entered: vec![],
    };
    let now = Instant::now();
    assert_eq!(p.token(f(None), now).lifetime(), DEFAULT_TOKEN_LIFETIME);
    assert_eq!(
        p.token(f(Some(Duration::ZERO)), now).lifetime(),
        Duration::from_secs(1)
    );
    assert_eq!(
        p.token(f(Some(Duration::from_secs(1 << 40))), now)
            .lifetime(),
        MAX_TOKEN_LIFETIME
    );
    let t = p.token(f(Some(Duration::from_secs(3600))), now);
    assert_eq!(t.expires_at() - t.refresh_at(), DEFAULT_REFRESH_BEFORE);
    assert_eq!(t.expires_at() - t.usable_until(), DEFAULT_EXPIRY_MARGIN);
}

#[tokio::test(start_paused = true)]
async fn a_refused_refresh_token_is_forgotten_even_without_a_new_one() {
    struct Refusing(AtomicUsize, Mutex<Vec<Option<String>>>);
    impl TokenSource for Refusing {
        fn fetch<'a>(
            &'a self,
            _: &'a TokenKey,
            rt: Option<RefreshToken>,
        ) -> BoxFuture<'a, Result<Fetched, TokenError>> {
            Box::pin(async move {
                let n = self.0.fetch_add(1, Ordering::SeqCst);
                self.1
                    .lock()
                    .unwrap()
                    .push(rt.as_ref().map(|s| s.expose().to_string()));
                Ok(Fetched {
                    access_token: AccessToken::new(format!("t{n}")),
                    token_type: "Bearer".into(),
                    expires_in: Some(Duration::from_secs(10)),
                    // Only the first answer carries a refresh token; the second says it was refused.
                    refresh_token: (n == 0).then(|| RefreshToken::new("rt-0")),
                    id_token: None,
                    scope: None,
                    extra: vec![],
                    refresh_token_refused: n == 1,
                    entered: vec![],
                })
            })
        }
    }
    let cache = TokenCache::new();
    let src = Arc::new(Refusing(AtomicUsize::new(0), Mutex::new(vec![])));
    let source: Arc<dyn TokenSource> = src.clone();
    let p = Policy::default();
    for _ in 0..3 {
        cache.get(&key(), &source, &p).await.unwrap();
        tokio::time::advance(Duration::from_secs(11)).await;
    }
    assert_eq!(
        *src.1.lock().unwrap(),
        vec![None, Some("rt-0".into()), None]
    );
}

/// B16: a flood of distinct keys (one per made-up user) keeps the cache within its bound; keys
/// without a token go first, and a key whose fetch is in flight is never dropped.
#[tokio::test(start_paused = true)]
async fn b16_the_cache_stays_within_its_bound() {
    let cache = TokenCache::new().with_max_entries(100);
    let fake = Fake::new(Some(Duration::from_secs(600)));
    let source = src(&fake);
    let user_key = |u: usize| TokenKey {
        user: Some(Arc::from(format!("u{u}").as_str())),
        ..key()
    };
    // One fetch in flight the whole time (its source answers after an hour).
    let slow_source: Arc<dyn TokenSource> = Arc::new(Fake {
        calls: AtomicUsize::new(0),
        delay: Duration::from_secs(3600),
        lifetime: None,
        fail: Mutex::new(None),
        refresh_tokens_seen: Mutex::new(Vec::new()),
        issue_refresh_token: false,
    });
    let slow = {
        let c = cache.clone();
        tokio::spawn(async move { c.get(&key(), &slow_source, &Policy::default()).await })
    };
    tokio::task::yield_now().await;
    *fake.fail.lock().unwrap() = Some(TokenErrorKind::AuthorizationRequired);
    for u in 0..1000 {
        let _ = cache.get(&user_key(u), &source, &Policy::default()).await;
        assert!(cache.len() <= 101, "{} keys", cache.len());
        assert!(cache.contains(&key()), "the key in flight was dropped");
    }
    *fake.fail.lock().unwrap() = None;
    for u in 1000..1300 {
        cache
            .get(&user_key(u), &source, &Policy::default())
            .await
            .unwrap();
        assert!(cache.len() <= 101, "{} keys", cache.len());
    }
    assert!(cache.stats.evictions.load(Ordering::Relaxed) >= 1000);
    // The newest tokens are kept, the oldest went first.
    assert!(cache.entries().iter().any(|(k, _, _)| k == &user_key(1299)));
    assert!(!cache.entries().iter().any(|(k, _, _)| k == &user_key(1000)));
    assert!(cache.contains(&key()));
    slow.abort();
}

#[test]
fn pairs_keep_names_and_values_in_order_and_show_no_value() {
    let p = Pairs::new([
        ("a", "1"),
        ("", ""),
        ("user_field.pin", "4242"),
        ("ü", "ẞ\0x"),
    ]);
    let all: Vec<_> = p.iter().collect();
    assert_eq!(
        all,
        [
            ("a", "1"),
            ("", ""),
            ("user_field.pin", "4242"),
            ("ü", "ẞ\0x")
        ]
    );
    assert_eq!(p.get("user_field.pin"), Some("4242"));
    assert_eq!(p.get("missing"), None);
    assert!(!format!("{p:?}").contains("4242"));
    assert!(Pairs::default().is_empty());
    assert_eq!(Pairs::default().iter().count(), 0);
}

#[test]
fn a_record_leaves_out_empty_members_and_reads_back_whole() {
    let mut f = Fetched {
        access_token: AccessToken::new("at"),
        token_type: "Bearer".into(),
        expires_in: Some(Duration::from_secs(600)),
        refresh_token: None,
        id_token: None,
        scope: None,
        extra: vec![],
        refresh_token_refused: false,
        entered: vec![],
    };
    let (bytes, _) = encode_record(&f, Duration::from_secs(600));
    let text = String::from_utf8(bytes.clone()).unwrap();
    for absent in [
        "token_type",
        "refresh_token",
        "id_token",
        "scope",
        "extra",
        "entered",
        "null",
    ] {
        assert!(!text.contains(absent), "{text}");
    }
    let (back, left) = decode_record(&bytes).unwrap();
    assert_eq!(back.token_type, "Bearer");
    assert!(back.refresh_token.is_none() && back.extra.is_empty() && back.entered.is_empty());
    assert!(left > Duration::from_secs(590));

    f.token_type = "MAC".into();
    f.refresh_token = Some(RefreshToken::new("rt"));
    f.id_token = Some(IdToken::new("it"));
    f.scope = Some("a b".into());
    f.extra = vec![("instance_url".into(), "https://x".into())];
    f.entered = vec![("tenant".into(), EnteredValue::new("acme"))];
    let (bytes, _) = encode_record(&f, Duration::from_secs(600));
    let (back, _) = decode_record(&bytes).unwrap();
    assert_eq!(back.token_type, "MAC");
    assert_eq!(back.refresh_token.as_ref().unwrap().expose(), "rt");
    assert_eq!(back.id_token.as_ref().unwrap().expose(), "it");
    assert_eq!(back.scope.as_deref(), Some("a b"));
    assert_eq!(back.extra, f.extra);
    assert_eq!(back.entered[0].1.expose(), "acme");
    let t = Policy::default().token(back, Instant::now());
    assert_eq!(t.extra("instance_url"), Some("https://x"));
    assert_eq!(t.entered("tenant"), Some("acme"));
    assert_eq!(t.token_type(), "MAC");
}

proptest::proptest! {
    /// Any names and values (empty, NUL, multi-byte, long) come back as they went in, in order.
    #[test]
    fn pairs_give_back_what_they_were_given(
        items in proptest::collection::vec((".{0,40}", ".{0,300}"), 0..12),
    ) {
        let p = Pairs::new(items.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let back: Vec<(String, String)> =
            p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        proptest::prop_assert_eq!(&back, &items);
        for (k, _) in &items {
            let first = items.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            proptest::prop_assert_eq!(p.get(k), first);
        }
    }
}

#[test]
fn a_record_written_with_null_and_empty_members_still_reads() {
    // The form records had before empty members were left out.
    let old = br#"{"entered":{},"access_token":"at","token_type":"Bearer","refresh_token":"rt","id_token":null,"scope":null,"extra":{},"expires_at":99999999999}"#;
    let (f, left) = decode_record(old).unwrap();
    assert_eq!(f.access_token.expose(), "at");
    assert_eq!(f.token_type, "Bearer");
    assert_eq!(f.refresh_token.as_ref().map(|s| s.expose()), Some("rt"));
    assert!(
        f.id_token.is_none() && f.scope.is_none() && f.extra.is_empty() && f.entered.is_empty()
    );
    assert!(left > Duration::from_secs(3600));
}

/// A store that takes its time to write.
struct SlowPersist {
    saved: Mutex<Vec<String>>,
}

impl Persist for SlowPersist {
    fn load(&self, _key: &TokenKey) -> Option<(Fetched, Duration)> {
        None
    }
    fn save(&self, _key: &TokenKey, fetched: &Fetched, _lifetime: Duration) {
        std::thread::sleep(Duration::from_millis(300));
        self.saved
            .lock()
            .unwrap()
            .push(fetched.access_token.expose().to_string());
    }
}

/// A stop must not lose a token fetched just before it: the save runs off the request path, and
/// `saves_done` is what a proxy worker awaits before its runtime (and any save queued on it) goes.
#[test]
fn a_token_fetched_just_before_a_stop_is_saved() {
    let persist = Arc::new(SlowPersist {
        saved: Mutex::new(Vec::new()),
    });
    let cache = TokenCache::with_persist(persist.clone());
    let fake = Fake::new(Some(Duration::from_secs(600)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let t = cache.get(&key(), &src(&fake), &Policy::default()).await;
        assert_eq!(t.unwrap().access_token.expose(), "tok-1");
        assert!(persist.saved.lock().unwrap().is_empty(), "the save is slow");
        assert!(cache.saves_done(Duration::from_secs(10)).await);
    });
    drop(rt);
    assert_eq!(*persist.saved.lock().unwrap(), vec!["tok-1".to_string()]);
    // Nothing pending: it answers at once.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(rt.block_on(cache.saves_done(Duration::from_millis(1))));
}
