//! Several sidecar processes sharing one real Redis: one refresh for the fleet, logins that cross
//! replicas, revocations that reach every replica, and Redis going away and coming back.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use authsidecar::mock::{MockProvider, MockSettings, TokenFault};

use crate::support::fleet::{Redis, RedisCluster, Replica};
use crate::support::*;

struct Fleet {
    mock: MockProvider,
    redis: Option<Redis>,
    cluster: Option<RedisCluster>,
    replicas: Vec<Replica>,
    /// Last: removed after the processes that write in it are gone.
    _dir: TempDir,
}

/// The same URL on another replica's auth listener.
fn on(replica: &Replica, url: &str) -> String {
    let path = &url[url.find("/oauth/").unwrap()..];
    format!("http://{}{path}", replica.auth)
}

impl Fleet {
    async fn start(n: usize, lifetime: Duration) -> Fleet {
        Self::start_on(n, lifetime, false).await
    }

    /// `cluster`: a three-node Redis Cluster instead of one Redis.
    async fn start_on(n: usize, lifetime: Duration, cluster: bool) -> Fleet {
        let dir = TempDir::new("fleet");
        let mock = MockProvider::start_with(
            ([127, 0, 0, 1], 0).into(),
            MockSettings {
                token_lifetime: lifetime,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let (redis, redis_cluster, target) = if cluster {
            let c = RedisCluster::start(&dir.join("cluster"), 3).await;
            let seeds = format!("cluster = [{}]", c.seeds());
            (None, Some(c), seeds)
        } else {
            let r = Redis::start(&dir.join("redis")).await;
            let url = format!("url = \"{}\"", r.url());
            (Some(r), None, url)
        };
        let key = authsidecar::store::crypto::generate_key();
        let m = mock.addr;
        let body = format!(
            r#"
[store]
kind = "redis"
{target}
key = "{key}"
timeout = "500ms"

[[routes]]
prefix = "/u/"
upstream = "http://{m}/protected/"
profiles = ["user"]

[[routes]]
prefix = "/m/"
upstream = "http://{m}/protected/"
profiles = ["machine"]

[profiles.machine]
type = "oauth2_client_credentials"
token_url = "http://{m}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"

[profiles.user]
type = "oauth2_authorization_code"
authorization_url = "http://{m}/oauth/authorize"
token_url = "http://{m}/oauth/token"
revocation_url = "http://{m}/oauth/revoke"
client_id = "demo-client"
client_secret = "demo-secret"
"#
        );
        // Every replica puts the same public URL in its links (one name behind a balancer): the
        // first replica's auth listener, whose port is known once it has started.
        let first = Replica::start(&dir, "r0", &body, None).await;
        let public = format!("http://{}", first.auth);
        let mut replicas = vec![first];
        for i in 1..n {
            replicas.push(Replica::start(&dir, &format!("r{i}"), &body, Some(&public)).await);
        }
        Fleet {
            mock,
            redis,
            cluster: redis_cluster,
            replicas,
            _dir: dir,
        }
    }

    fn counter(
        &self,
        f: impl Fn(&authsidecar::mock::Counters) -> &std::sync::atomic::AtomicU64,
    ) -> u64 {
        f(self.mock.counters()).load(Ordering::SeqCst)
    }

    /// `user` signs in: the link comes from replica `via`, every step runs on replica `via`.
    async fn log_in(&self, user: &str, via: usize) {
        let r = &self.replicas[via];
        let resp = get(&r.url("/u/x"), &[("X-Authsidecar-User", user)]).await;
        assert_eq!(resp.error_code(), "authorization_required");
        let login = resp.json()["error"]["login_url"]
            .as_str()
            .unwrap()
            .to_string();
        let to_idp = get(&on(r, &login), &[]).await;
        let callback = location(&get(&location(&to_idp), &[]).await);
        let done = get(&on(r, &callback), &[]).await;
        assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.replicas.clear();
        if let Some(r) = self.redis.as_mut() {
            r.stop();
        }
        self.cluster.take();
    }
}

#[tokio::test]
async fn six_hundred_requests_on_three_replicas_make_one_refresh() {
    let f = Fleet::start(3, Duration::from_secs(5)).await;
    f.log_in("alice", 0).await;
    // Every replica uses alice's token once (their caches now hold it), then it expires.
    for r in &f.replicas {
        assert_eq!(
            get(&r.url("/u/x"), &[("X-Authsidecar-User", "alice")])
                .await
                .status,
            200
        );
    }
    // Time passing is the point: the 5-second token expires.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let before = f.counter(|c| &c.refresh_token);
    let mut tasks = Vec::new();
    for i in 0..600 {
        let url = f.replicas[i % 3].url("/u/x");
        tasks.push(tokio::spawn(async move {
            get(&url, &[("X-Authsidecar-User", "alice")])
                .await
                .status
                .as_u16()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 600, "every request succeeds");
    assert_eq!(
        f.counter(|c| &c.refresh_token) - before,
        1,
        "one refresh for the fleet"
    );
    assert_eq!(f.counter(|c| &c.token_errors), 0, "no invalid_grant");
}

#[tokio::test]
async fn a_login_crosses_replicas_and_a_replayed_callback_redeems_the_code_once() {
    let f = Fleet::start(2, Duration::from_secs(3600)).await;
    let (a, b) = (&f.replicas[0], &f.replicas[1]);
    let resp = get(&a.url("/u/x"), &[("X-Authsidecar-User", "bob")]).await;
    let login = resp.json()["error"]["login_url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(login.starts_with(&format!("http://{}/oauth/start/", a.auth)));
    // The link from A is opened on B.
    let to_idp = get(&on(b, &login), &[]).await;
    assert_eq!(to_idp.status, 302);
    let callback = location(&get(&location(&to_idp), &[]).await);
    // The callback arrives twice at once, on both replicas: one redeems the code.
    let (on_a, on_b) = (on(a, &callback), on(b, &callback));
    let (x, y) = tokio::join!(get(&on_a, &[]), get(&on_b, &[]));
    let mut statuses = [x.status.as_u16(), y.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 400]);
    assert_eq!(f.counter(|c| &c.authorization_code), 1, "one token request");
    for r in &f.replicas {
        assert_eq!(
            get(&r.url("/u/x"), &[("X-Authsidecar-User", "bob")])
                .await
                .status,
            200
        );
    }
}

#[tokio::test]
async fn a_revocation_on_one_replica_reaches_the_others_within_a_second() {
    let f = Fleet::start(2, Duration::from_secs(3600)).await;
    let (a, b) = (&f.replicas[0], &f.replicas[1]);
    f.log_in("carol", 0).await;
    // B caches carol's token.
    assert_eq!(
        get(&b.url("/u/x"), &[("X-Authsidecar-User", "carol")])
            .await
            .status,
        200
    );
    let r = send(
        http::Method::DELETE,
        &format!("http://{}/admin/tokens/user?user=carol", a.admin),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    wait_for(
        "B to stop serving carol's revoked token (within a second)",
        Duration::from_secs(1),
        || async {
            let r = get(&b.url("/u/x"), &[("X-Authsidecar-User", "carol")]).await;
            if r.status == 401 {
                assert_eq!(r.error_code(), "authorization_required");
                return Ok(());
            }
            Err(format!("B still answers {}", r.status))
        },
    )
    .await;
}

#[tokio::test]
async fn redis_going_away_and_coming_back() {
    let mut f = Fleet::start(2, Duration::from_secs(3600)).await;
    f.log_in("dave", 0).await;
    let (a, b) = (f.replicas[0].url("/u/x"), f.replicas[1].url("/u/x"));
    let readyz = format!("http://{}/readyz", f.replicas[0].admin);
    assert_eq!(get(&a, &[("X-Authsidecar-User", "dave")]).await.status, 200);

    f.redis.as_mut().unwrap().stop();
    // Cached: still served. Needing the store: 503 token_store_unavailable, never
    // authorization_required.
    assert_eq!(get(&a, &[("X-Authsidecar-User", "dave")]).await.status, 200);
    for (url, user) in [(&b, "dave"), (&a, "erin")] {
        let r = get(url, &[("X-Authsidecar-User", user)]).await;
        assert_eq!(r.status, 503, "{user}");
        assert_eq!(r.error_code(), "token_store_unavailable");
        assert!(r.headers.get("retry-after").is_some());
    }
    let r = get(&readyz, &[]).await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("store: unavailable"));
    // B10 (a): a machine token does not need the store: with Redis down a replica that has none
    // cached fetches one from the IdP and serves, once, then from its memory cache.
    let before = f.mock.token_requests();
    for _ in 0..5 {
        let r = get(&f.replicas[1].url("/m/x"), &[]).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    assert_eq!(f.mock.token_requests() - before, 1);

    f.redis.as_mut().unwrap().restart().await;
    // Full recovery: dave's grant survived (append-only file), erin can be sent a login link.
    wait_for(
        "B to serve dave again once Redis is back",
        Duration::from_secs(5),
        || async {
            let r = get(&b, &[("X-Authsidecar-User", "dave")]).await;
            if r.status == 200 {
                Ok(())
            } else {
                Err(format!("no recovery: {}", r.status))
            }
        },
    )
    .await;
    assert_eq!(
        get(&a, &[("X-Authsidecar-User", "erin")])
            .await
            .error_code(),
        "authorization_required"
    );
    assert!(String::from_utf8_lossy(&get(&readyz, &[]).await.body).contains("store: ok"));
}

#[tokio::test]
async fn the_lock_holder_killed_mid_refresh_another_replica_finishes_it() {
    let mut f = Fleet::start(2, Duration::from_secs(5)).await;
    f.log_in("frank", 0).await;
    // Time passing is the point: the 5-second token expires.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    // A's refresh hangs at the IdP; A is killed while it holds the lock.
    let refreshes = f.counter(|c| &c.refresh_token);
    let arrived = f.counter(|c| &c.token_requests);
    f.mock
        .state
        .set_token_fault(Some(TokenFault::Slow(Duration::from_secs(2))), Some(1));
    let a_url = f.replicas[0].url("/u/x");
    let hanging = tokio::spawn(async move {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            get(&a_url, &[("X-Authsidecar-User", "frank")]),
        )
        .await;
    });
    // A asks the IdP only while it holds the refresh lock.
    wait_until(
        "A's refresh request to reach the IdP",
        Duration::from_secs(5),
        || async { f.counter(|c| &c.token_requests) > arrived },
    )
    .await;
    f.replicas[0].kill();
    hanging.abort();
    // B waits for A's lease to end, then refreshes with the grant's refresh token: nothing lost.
    let started = Instant::now();
    let r = get(
        &f.replicas[1].url("/u/x"),
        &[("X-Authsidecar-User", "frank")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let waited = started.elapsed();
    // A took the lock just before it died and never renewed it: B waited for the rest of the
    // 3-second lease rather than refreshing beside A.
    assert!(
        waited >= authsidecar::oauth::grants::REFRESH_LEASE - Duration::from_millis(1000),
        "B did not wait for A's lease: {waited:?}"
    );
    assert!(waited < Duration::from_secs(10));
    assert_eq!(
        f.counter(|c| &c.refresh_token) - refreshes,
        1,
        "one refresh completed at the IdP (B's); A's was cut off before the IdP answered"
    );
    assert_eq!(f.counter(|c| &c.token_errors), 0, "no invalid_grant");
    assert_eq!(
        get(
            &f.replicas[1].url("/u/x"),
            &[("X-Authsidecar-User", "frank")]
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn a_redis_cluster_serves_the_fleet() {
    let f = Fleet::start_on(2, Duration::from_secs(5), true).await;
    f.log_in("gina", 0).await;
    for r in &f.replicas {
        assert_eq!(
            get(&r.url("/u/x"), &[("X-Authsidecar-User", "gina")])
                .await
                .status,
            200
        );
    }
    // The grant is listed (keys are spread over the cluster's nodes).
    let r = get(
        &format!("http://{}/admin/tokens", f.replicas[1].admin),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
    )
    .await;
    assert!(
        String::from_utf8_lossy(&r.body).contains("gina"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    // One refresh for the fleet, once the 5-second token has expired (time passing is the point).
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let before = f.counter(|c| &c.refresh_token);
    let mut tasks = Vec::new();
    for i in 0..300 {
        let url = f.replicas[i % 2].url("/u/x");
        tasks.push(tokio::spawn(async move {
            get(&url, &[("X-Authsidecar-User", "gina")])
                .await
                .status
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(f.counter(|c| &c.refresh_token) - before, 1);
    // A revocation reaches the other replica.
    let r = send(
        http::Method::DELETE,
        &format!("http://{}/admin/tokens/user?user=gina", f.replicas[0].admin),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    wait_until(
        "the other replica to refuse gina's revoked token (within a second)",
        Duration::from_secs(1),
        || async {
            get(
                &f.replicas[1].url("/u/x"),
                &[("X-Authsidecar-User", "gina")],
            )
            .await
            .status
                == 401
        },
    )
    .await;
}

#[tokio::test]
async fn a_refresh_whose_write_fails_is_kept_and_written_when_redis_is_back() {
    let mut f = Fleet::start(2, Duration::from_secs(5)).await;
    f.log_in("hana", 0).await;
    // Time passing is the point: the 5-second token expires.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let arrived = f.counter(|c| &c.token_requests);
    // A's refresh is slow at the IdP; Redis goes away while it runs, so the rotated grant cannot be
    // written when the answer comes.
    f.mock
        .state
        .set_token_fault(Some(TokenFault::Slow(Duration::from_millis(1500))), Some(1));
    let a_url = f.replicas[0].url("/u/x");
    let refreshing =
        tokio::spawn(async move { get(&a_url, &[("X-Authsidecar-User", "hana")]).await.status });
    wait_until(
        "A's refresh request to reach the IdP",
        Duration::from_secs(5),
        || async { f.counter(|c| &c.token_requests) > arrived },
    )
    .await;
    f.redis.as_mut().unwrap().stop();
    assert_eq!(
        refreshing.await.unwrap(),
        200,
        "the new token is used at once"
    );
    f.redis.as_mut().unwrap().restart().await;
    // The kept grant reaches Redis: B (which never saw hana) uses the rotated grant, with no second
    // refresh and no invalid_grant.
    wait_for(
        "B to serve hana with the kept grant once Redis is back",
        Duration::from_secs(8),
        || async {
            let r = get(
                &f.replicas[1].url("/u/x"),
                &[("X-Authsidecar-User", "hana")],
            )
            .await;
            if r.status == 200 {
                Ok(())
            } else {
                Err(format!("{} {}", r.status, String::from_utf8_lossy(&r.body)))
            }
        },
    )
    .await;
    assert_eq!(f.counter(|c| &c.refresh_token), 1);
    assert_eq!(f.counter(|c| &c.token_errors), 0);
}

#[tokio::test]
async fn a_holder_whose_lease_ran_out_cannot_overwrite_the_next_holders_grant() {
    let dir = TempDir::new("fence");
    let redis = crate::support::fleet::Redis::start(&dir).await;
    let key =
        authsidecar::store::crypto::parse_key(&authsidecar::store::crypto::generate_key()).unwrap();
    let url = redis.url();
    let open = || {
        authsidecar::store::Store::open_redis(
            &[&url],
            false,
            "fence:",
            &key,
            None,
            Duration::from_secs(2),
        )
        .unwrap()
    };
    let (a, b) = (open(), open());
    use authsidecar::store::frame_plain;
    let (ra, rb) = (a.shared().unwrap(), b.shared().unwrap());
    let lease = Duration::from_millis(300);
    assert!(ra.try_lock("lock:g", "token-a", lease).unwrap());
    // While A holds the lock nobody else gets it.
    assert!(!rb.try_lock("lock:g", "token-b", lease).unwrap());
    assert!(ra
        .put_fenced(
            "lock:g",
            "token-a",
            "grant:g",
            &frame_plain(b"from A, in time")
        )
        .unwrap());
    // A stalls past its lease (time passing is the point); B takes the lock and writes the newer
    // grant.
    std::thread::sleep(lease + Duration::from_millis(200));
    assert!(
        !ra.renew("lock:g", "token-a", lease).unwrap(),
        "a lost lease is not renewed"
    );
    // B's own lease is long, so the checks below cannot outlast it on a busy machine.
    assert!(rb
        .try_lock("lock:g", "token-b", Duration::from_secs(10))
        .unwrap());
    assert!(rb
        .put_fenced("lock:g", "token-b", "grant:g", &frame_plain(b"from B"))
        .unwrap());
    // A wakes up: its write is refused, B's grant stays; A's unlock leaves B's lock alone.
    assert!(!ra
        .put_fenced(
            "lock:g",
            "token-a",
            "grant:g",
            &frame_plain(b"stale, from A")
        )
        .unwrap());
    ra.unlock("lock:g", "token-a").unwrap();
    assert!(
        !ra.try_lock("lock:g", "token-c", lease).unwrap(),
        "B still holds the lock"
    );
    assert_eq!(b.get("grant:g").unwrap().as_deref(), Some(&b"from B"[..]));
    assert_eq!(a.get("grant:g").unwrap().as_deref(), Some(&b"from B"[..]));
    drop(redis);
}
